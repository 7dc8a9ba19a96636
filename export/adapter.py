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

Two-stage models (Faster R-CNN) go through :class:`TwoStageAdapter`, same inputs and outputs;
:func:`build_adapter` picks the adapter for a model.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import nms, roi_align
from torchvision.ops.poolers import _setup_scales

from detector.spec import MIN_CANDIDATE_SCORE, ModelSpec


ONE_STAGE = ("SSD", "FCOS", "RetinaNet")
TWO_STAGE = ("FasterRCNN",)


def build_adapter(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """The fixed-output adapter for ``model``: :class:`DetectionAdapter` for SSD, FCOS and
    RetinaNet, :class:`TwoStageAdapter` for Faster R-CNN; ValueError for anything else."""
    kind = type(model).__name__
    if kind in TWO_STAGE:
        return TwoStageAdapter(model, spec)
    return DetectionAdapter(model, spec)


class _Normalized(nn.Module):
    """Raw pixel values -> the network's input: ``((x - offset) / scale).clamp(0, 1)``, then
    ``(unit - mean) / std`` per band, all stored as buffers from the spec."""

    def __init__(self, model: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.model = model.eval()
        self.spec = spec
        c = spec.num_bands
        self.register_buffer("offset", torch.tensor(spec.offset, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("scale", torch.tensor(spec.scale, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, c, 1, 1))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        unit = ((x - self.offset) / self.scale).clamp(0.0, 1.0)
        return (unit - self.mean) / self.std


class DetectionAdapter(_Normalized):
    """One-stage families (SSD, FCOS, RetinaNet): head outputs decoded against fixed anchors."""

    def __init__(self, model: nn.Module, spec: ModelSpec, *, pre_nms_top_k: int | None = None,
                 min_score: float = MIN_CANDIDATE_SCORE) -> None:
        kind = type(model).__name__
        if kind not in ONE_STAGE:
            raise ValueError(
                f"architecture {spec.arch!r} ({kind}) has no fixed-output export adapter; "
                f"supported families: {', '.join(ONE_STAGE + TWO_STAGE)}"
            )
        super().__init__(model, spec)
        self.kind = kind
        self.register_buffer("anchors", self._anchors(), persistent=False)
        self.num_classes = spec.num_classes
        if pre_nms_top_k is None:  # 1000 candidates per 512 x 512 pixels, as torchvision's default
            pre_nms_top_k = 1000 * max(1, math.ceil(spec.tile_size ** 2 / 512 ** 2))
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


class TwoStageAdapter(_Normalized):
    """Faster R-CNN with fixed shapes, step for step as torchvision's eval path.

    RPN: top ``pre_nms_top_n`` anchors per level by objectness, decoded, clipped, NMS per level
    (IoU ``rpn.nms_thresh``), then exactly ``post_nms_top_n`` proposals per image with a validity
    mask (torchvision keeps a variable number: the masked slots stand for the ones it drops).
    RoI stage: each proposal is pooled from its FPN level (the level every proposal would use in
    ``MultiScaleRoIAlign``, chosen with ``torch.where`` over all levels instead of indexing),
    then the box head, per-class box decoding, softmax, and :func:`select_detections` over all
    proposal x class candidates with the model's score threshold and the spec's NMS IoU.
    """

    def __init__(self, model: nn.Module, spec: ModelSpec) -> None:
        kind = type(model).__name__
        if kind not in TWO_STAGE:
            raise ValueError(f"architecture {spec.arch!r} ({kind}) is not a two-stage detector")
        super().__init__(model, spec)
        self.kind = kind
        rpn, heads = model.rpn, model.roi_heads
        t = spec.tile_size
        with torch.no_grad():
            x = torch.zeros(1, spec.num_bands, t, t)
            feats = model.backbone(x)
            flist = list(feats.values())
            anchors = rpn.anchor_generator(ImageList(x, [(t, t)]), flist)[0]
            self.level_sizes = [int(f.shape[-2] * f.shape[-1]) * int(rpn.head.cls_logits.out_channels)
                                for f in flist]
            pool = heads.box_roi_pool
            self.pool_names = [k for k in feats if k in pool.featmap_names]  # as torchvision filters
            self.pool_scales, self.mapper = _setup_scales([feats[k] for k in self.pool_names], [(t, t)],
                                                          pool.canonical_scale, pool.canonical_level)
        self.register_buffer("anchors", anchors, persistent=False)
        self.pool_size = pool.output_size
        self.sampling_ratio = pool.sampling_ratio
        self.pre_nms = int(rpn._pre_nms_top_n["testing"])
        self.post_nms = min(int(rpn._post_nms_top_n["testing"]),
                            sum(min(self.pre_nms, n) for n in self.level_sizes))
        self.rpn_iou = float(rpn.nms_thresh)
        self.rpn_min_size = float(rpn.min_size)
        self.min_score = float(heads.score_thresh)
        self.num_classes = spec.num_classes
        self.max_det = spec.max_detections

    def proposals(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> proposals (B, P, 4) in tile pixels and their validity (B, P) float 0/1."""
        from torchvision.models.detection.rpn import concat_box_prediction_layers

        rpn = self.model.rpn
        b = feats[0].shape[0]
        t = float(self.spec.tile_size)
        objectness, deltas = rpn.head(feats)
        obj, reg = concat_box_prediction_layers(objectness, deltas)
        anchors = self.anchors.unsqueeze(0).expand(b, -1, -1).reshape(-1, 4)
        boxes = rpn.box_coder.decode_single(reg, anchors).reshape(b, -1, 4)
        obj = obj.reshape(b, -1)
        sel_b, sel_s, sel_l = [], [], []
        start = 0
        for lvl, n in enumerate(self.level_sizes):  # top-n per level, as torchvision
            s, i = obj[:, start:start + n].topk(min(self.pre_nms, n), dim=1)
            sel_s.append(s)
            sel_b.append(torch.gather(boxes[:, start:start + n], 1, i.unsqueeze(-1).expand(-1, -1, 4)))
            sel_l.append(torch.full_like(i, lvl))
            start += n
        cand = torch.cat(sel_b, 1).clamp(0.0, t)                       # (B, N, 4)
        score = torch.sigmoid(torch.cat(sel_s, 1))                       # (B, N)
        lvl = torch.cat(sel_l, 1)
        wh = cand[..., 2:] - cand[..., :2]
        big = (wh[..., 0] >= self.rpn_min_size) & (wh[..., 1] >= self.rpn_min_size)
        group = torch.arange(b, device=cand.device).unsqueeze(1) * len(self.level_sizes) + lvl
        shifted = cand + (group.to(cand.dtype) * (t + 1.0)).unsqueeze(-1)
        flat = torch.where(big, score, torch.zeros_like(score)).reshape(-1)
        keep = nms(shifted.reshape(-1, 4), flat, self.rpn_iou)
        kept = torch.zeros_like(flat).scatter(0, keep, torch.ones_like(keep, dtype=flat.dtype))
        kept = (kept.reshape(b, -1) * big.to(flat.dtype))
        # kept proposals first, by score (sigmoid > 0, so kept ones outrank every -1)
        rank = torch.where(kept > 0, score, torch.full_like(score, -1.0))
        _, j = rank.topk(self.post_nms, dim=1)
        props = torch.gather(cand, 1, j.unsqueeze(-1).expand(-1, -1, 4))
        return props, torch.gather(kept, 1, j)

    def pool(self, feats: dict, props: torch.Tensor) -> torch.Tensor:
        """RoIAlign of every proposal at its own level -> (B * P, C, S, S)."""
        b, p = props.shape[:2]
        flat = props.reshape(-1, 4)
        idx = torch.arange(b, device=props.device, dtype=flat.dtype).unsqueeze(1).expand(b, p).reshape(-1, 1)
        rois = torch.cat([idx, flat], 1)
        levels = self.mapper([flat])
        out = None
        for lvl, (name, scale) in enumerate(zip(self.pool_names, self.pool_scales)):
            r = roi_align(feats[name], rois, self.pool_size, spatial_scale=scale,
                          sampling_ratio=self.sampling_ratio)
            pick = (levels == lvl).to(r.dtype).view(-1, 1, 1, 1)
            out = r * pick if out is None else out + r * pick
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heads = self.model.roi_heads
        t = float(self.spec.tile_size)
        feats = self.model.backbone(self.preprocess(x))
        props, valid = self.proposals(list(feats.values()))
        b, p = props.shape[:2]
        logits, reg = heads.box_predictor(heads.box_head(self.pool(feats, props)))
        boxes = heads.box_coder.decode_single(reg, props.reshape(-1, 4)).reshape(b, p, -1, 4)[:, :, 1:]
        boxes = boxes.clamp(0.0, t)                                      # (B, P, K, 4)
        scores = torch.softmax(logits, -1).reshape(b, p, -1)[..., 1:]    # (B, P, K)
        wh = boxes[..., 2:] - boxes[..., :2]
        ok = (wh[..., 0] >= 1e-2) & (wh[..., 1] >= 1e-2)
        scores = scores * valid.unsqueeze(-1) * ok.to(scores.dtype)
        top_k = p * scores.shape[-1]
        return select_detections(boxes, scores, top_k, self.spec.nms_iou, self.max_det,
                                 self.min_score, t)


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, top_k: int, iou: float,
                      max_det: int, min_score: float, extent: float):
    """Per-image, per-class NMS over a batch in one ``nms`` call.

    Args:
        boxes: (B, A, 4) candidate boxes shared by all classes, or (B, A, K, 4) one box per
            class (two-stage models); scores: (B, A, K) per-class scores.
    Returns (boxes (B, D, 4), scores (B, D), labels (B, D) int64), D = max_det, sorted by score;
    empty slots have score 0.
    """
    b, _, k = scores.shape
    top_s, idx = scores.flatten(1).topk(top_k, dim=1)                    # (B, P)
    anchor_idx = torch.div(idx, k, rounding_mode="floor")
    labels = idx % k
    if boxes.dim() == 4:  # per-class boxes: the flat (anchor, class) index picks the box
        cand = torch.gather(boxes.reshape(b, -1, 4), 1, idx.unsqueeze(-1).expand(-1, -1, 4))
    else:
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
