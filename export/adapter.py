"""Fixed-output wrapper around a torchvision detector, for ONNX export and batch scoring.

``DetectionAdapter(model, spec)(x)`` takes raw pixel values ``x`` of shape ``(B, C, T, T)``
float32 (bands in ``spec.bands`` order, ``T = spec.tile_size``) and returns fixed tensors:

- ``boxes``  (B, D, 4) float32, ``x1, y1, x2, y2`` in tile pixels, clipped to ``[0, T]``;
- ``scores`` (B, D) float32 in [0, 1], sorted descending; 0 marks an empty slot;
- ``labels`` (B, D) int64 indices into ``spec.classes``;

with ``D = spec.max_detections``. Scaling and normalization are buffers in the module, so
the exported graph takes the raw values the runner reads. Decoding and NMS are written without
data-dependent Python branches (one ``torchvision.ops.nms`` call over boxes offset per image and
class), so the graph has a dynamic batch axis.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import nms

from detector.spec import ModelSpec


class DetectionAdapter(nn.Module):
    def __init__(self, model: nn.Module, spec: ModelSpec, *, pre_nms_top_k: int = 1000,
                 min_score: float = 0.001) -> None:
        super().__init__()
        kind = type(model).__name__
        if kind not in ("SSD", "FCOS", "RetinaNet"):
            raise ValueError(
                f"architecture {spec.arch!r} ({kind}) has no fixed-output export adapter; "
                "supported families: SSD, FCOS, RetinaNet"
            )
        self.kind = kind
        self.model = model.eval()
        self.spec = spec
        c = spec.num_bands
        self.register_buffer("offset", torch.tensor(spec.offset, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("scale", torch.tensor(spec.scale, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("anchors", self._anchors(), persistent=False)
        self.num_classes = spec.num_classes
        self.pre_nms_top_k = min(pre_nms_top_k, self.anchors.shape[0] * self.num_classes)
        self.max_det = spec.max_detections
        self.min_score = min_score

    @torch.no_grad()
    def _anchors(self) -> torch.Tensor:
        """Anchors (A, 4) for one tile of ``spec.tile_size``: constant for a fixed input size."""
        t = self.spec.tile_size
        x = torch.zeros(1, self.spec.num_bands, t, t)
        feats = list(self.model.backbone(x).values())
        anchors = self.model.anchor_generator(ImageList(x, [(t, t)]), feats)
        return anchors[0]

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        unit = ((x - self.offset) / self.scale).clamp(0.0, 1.0)
        return (unit - self.mean) / self.std

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> boxes (B, A, 4) in tile pixels and per-class scores (B, A, K)."""
        b = x.shape[0]
        feats = list(self.model.backbone(x).values())
        out = self.model.head(feats)
        reg = out["bbox_regression"]
        anchors = self.anchors.unsqueeze(0).expand(b, -1, -1).reshape(-1, 4)
        coder = self.model.box_coder
        if hasattr(coder, "decode_single"):
            boxes = coder.decode_single(reg.reshape(-1, 4), anchors)
        else:  # FCOS's BoxLinearCoder decodes any leading shape
            boxes = coder.decode(reg.reshape(-1, 4), anchors)
        boxes = boxes.reshape(b, -1, 4)
        logits = out["cls_logits"]
        if self.kind == "SSD":
            scores = torch.softmax(logits, dim=-1)[..., 1:]
        elif self.kind == "FCOS":
            scores = torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(out["bbox_ctrness"]))
        else:
            scores = torch.sigmoid(logits)
        t = float(self.spec.tile_size)
        return boxes.clamp(0.0, t), scores

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        boxes, scores = self.decode(self.preprocess(x))
        return select_detections(boxes, scores, self.pre_nms_top_k, self.spec.nms_iou,
                                 self.max_det, self.min_score, float(self.spec.tile_size))


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, top_k: int, iou: float,
                      max_det: int, min_score: float, extent: float):
    """Per-image, per-class NMS over a batch in one ``nms`` call.

    Args:
        boxes: (B, A, 4) candidate boxes; scores: (B, A, K) per-class scores.
    Returns (boxes (B, D, 4), scores (B, D), labels (B, D) int64), D = max_det, sorted by score;
    empty slots have score 0.
    """
    b, _, k = scores.shape
    top_s, idx = scores.flatten(1).topk(top_k, dim=1)                    # (B, P)
    anchor_idx = torch.div(idx, k, rounding_mode="floor")
    labels = idx % k
    cand = torch.gather(boxes, 1, anchor_idx.unsqueeze(-1).expand(-1, -1, 4))  # (B, P, 4)
    # Offsetting boxes by (image, class) keeps NMS within each image and class.
    group = torch.arange(b, device=boxes.device).unsqueeze(1) * k + labels
    shifted = cand + (group.to(cand.dtype) * (extent + 1.0)).unsqueeze(-1)
    flat_s = top_s.reshape(-1)
    flat_s = torch.where(flat_s >= min_score, flat_s, torch.zeros_like(flat_s))
    keep = nms(shifted.reshape(-1, 4), flat_s, iou)
    mask = torch.zeros_like(flat_s).scatter(0, keep, torch.ones_like(keep, dtype=flat_s.dtype))
    kept = (flat_s * mask).reshape(b, -1)
    out_s, j = kept.topk(max_det, dim=1)
    out_b = torch.gather(cand, 1, j.unsqueeze(-1).expand(-1, -1, 4))
    out_l = torch.gather(labels, 1, j)
    return out_b, out_s, out_l
