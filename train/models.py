"""Architecture registry: small keyword-only builders of torchvision detectors.

Every builder returns a torchvision detection model whose input transform never resizes
(images are used at native resolution: objects keep their size in pixels, which is what a
model trained at one ground sample distance needs) and normalizes with the spec's mean/std.
The model takes images scaled to [0, 1] (see ``detector.raster.scale_to_unit``).

Class index convention: the model's label ``i`` means ``spec.classes[i]``. Torchvision's
SSD and Faster R-CNN reserve label 0 for background; the builders hide that offset behind
``num_classes + 1`` and the export adapter removes it.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.ssdlite import SSDLiteHead, _mobilenet_extractor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.models.detection import _utils as det_utils
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from detector.spec import ModelSpec


class NativeSizeTransform(GeneralizedRCNNTransform):
    """Torchvision's detection transform without resizing: normalize and pad to a multiple of 32."""

    def __init__(self, mean, std) -> None:
        super().__init__(min_size=1, max_size=100_000, image_mean=list(mean), image_std=list(std),
                         size_divisible=32)

    def resize(self, image, target=None):  # noqa: D401 - torchvision hook
        return image, target


class PixelBoxGenerator(DefaultBoxGenerator):
    """SSD default boxes with fixed sizes in pixels (``scales`` are fractions of ``ref_size``),
    centred on the feature grid of whatever image size comes in. Torchvision's generator
    scales boxes with the input, which would make a model trained on crops see different
    anchors at full-tile inference."""

    def __init__(self, aspect_ratios, scales, ref_size: int) -> None:
        super().__init__(aspect_ratios, scales=scales, clip=False)
        self.ref_size = ref_size

    def forward(self, image_list, feature_maps):
        grid_sizes = [f.shape[-2:] for f in feature_maps]
        h, w = image_list.tensors.shape[-2:]
        rel = self._grid_default_boxes(grid_sizes, [h, w], dtype=feature_maps[0].dtype).to(feature_maps[0].device)
        ctr = rel[:, :2] * torch.tensor([w, h], dtype=rel.dtype, device=rel.device)
        half = 0.5 * rel[:, 2:] * self.ref_size
        boxes = torch.cat([ctr - half, ctr + half], -1)
        return [boxes for _ in image_list.image_sizes]


# name -> builder; BACKGROUND_OFFSET[name] is 1 where label 0 is background
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
BACKGROUND_OFFSET: dict[str, int] = {}


def register(name: str, *, background: bool):
    def deco(fn):
        _REGISTRY[name] = fn
        BACKGROUND_OFFSET[name] = 1 if background else 0
        return fn
    return deco


def available() -> list[str]:
    return sorted(_REGISTRY)


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the (randomly initialised) network named by ``spec.arch`` for ``spec``'s classes."""
    if spec.arch not in _REGISTRY:
        raise ValueError(f"unknown architecture {spec.arch!r}; available: {available()}")
    model = _REGISTRY[spec.arch](num_classes=spec.num_classes, in_channels=spec.num_bands,
                                 tile_size=spec.tile_size)
    model.transform = NativeSizeTransform(spec.mean, spec.std)
    model.detections_per_img = spec.max_detections
    if hasattr(model, "nms_thresh"):
        model.nms_thresh = spec.nms_iou
    if hasattr(model, "roi_heads"):
        model.roi_heads.nms_thresh = spec.nms_iou
        model.roi_heads.detections_per_img = spec.max_detections
    return model


def _adapt_first_conv(module: nn.Module, in_channels: int) -> None:
    """Give the first convolution ``in_channels`` inputs (multiband imagery). Weights of extra
    bands are the mean of the RGB filters, so pretrained RGB weights stay meaningful."""
    if in_channels == 3:
        return
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d) and child.in_channels == 3:
            new = nn.Conv2d(in_channels, child.out_channels, child.kernel_size, child.stride,
                            child.padding, bias=child.bias is not None)
            with torch.no_grad():
                mean = child.weight.mean(dim=1, keepdim=True)
                new.weight.copy_(mean.repeat(1, in_channels, 1, 1) * 3 / in_channels)
                new.weight[:, : min(3, in_channels)] = child.weight[:, : min(3, in_channels)] * 3 / in_channels
            parent = module
            *path, last = name.split(".")
            for p in path:
                parent = getattr(parent, p)
            setattr(parent, last, new)
            return
    raise ValueError("no 3-channel first convolution found to adapt")


@register("ssdlite", background=True)
def ssdlite(*, num_classes: int, in_channels: int = 3, tile_size: int = 512) -> nn.Module:
    """SSDlite, MobileNetV3-Large backbone, at native tile size, default boxes 12-160 px for
    small overhead objects (torchvision's 320-px COCO defaults are far too large)."""
    from torchvision.models import mobilenet_v3_large

    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    backbone = mobilenet_v3_large(weights=None, norm_layer=norm, reduced_tail=True)
    _adapt_first_conv(backbone, in_channels)
    backbone = _mobilenet_extractor(backbone, 6, norm)
    size = (tile_size, tile_size)
    # Scales are fractions of the tile size: 12 px .. 300 px at 512.
    px = [14, 28, 56, 96, 150, 220, 300]
    anchors = PixelBoxGenerator([[2, 3]] * 6, [p / tile_size for p in px], tile_size)
    out_channels = det_utils.retrieve_out_channels(backbone, size)
    head = SSDLiteHead(out_channels, anchors.num_anchors_per_location(), num_classes + 1, norm)
    return SSD(backbone, anchors, size, num_classes + 1, head=head, score_thresh=0.001,
               nms_thresh=0.5, detections_per_img=100, topk_candidates=300)


def _fcos(backbone: nn.Module, num_classes: int, sizes, head_convs: int) -> nn.Module:
    anchors = AnchorGenerator(sizes=tuple((s,) for s in sizes), aspect_ratios=((1.0,),) * len(sizes))
    model = FCOS(backbone, num_classes, anchor_generator=anchors, score_thresh=0.05,
                 nms_thresh=0.5, detections_per_img=100, topk_candidates=1000)
    if head_convs != 4:
        _shrink_fcos_head(model, head_convs)
    return model


def _shrink_fcos_head(model: FCOS, n: int) -> None:
    """Keep the first ``n`` conv+norm+relu blocks of each FCOS head tower (4 by default):
    the finest level's 4-conv towers cost more than a ResNet-18 backbone."""
    for tower in (model.head.classification_head.conv, model.head.regression_head.conv):
        layers = list(tower.children())[: 3 * n]
        tower._modules.clear()
        for i, layer in enumerate(layers):
            tower.add_module(str(i), layer)


@register("fcos_resnet18", background=False)
def fcos_resnet18(*, num_classes: int, in_channels: int = 3, tile_size: int = 512) -> nn.Module:
    """FCOS, ResNet-18 FPN with 128 channels (P3-P5 + P6, P7), 2-conv head towers:
    about 2.8x fewer FLOPs than torchvision's 256-channel, 4-conv default."""
    from torchvision.models import resnet18

    body = resnet18(weights=None)
    _adapt_first_conv(body, in_channels)
    backbone = BackboneWithFPN(body, {"layer2": "0", "layer3": "1", "layer4": "2"},
                               [128, 256, 512], 128, extra_blocks=LastLevelP6P7(128, 128))
    return _fcos(backbone, num_classes, (8, 16, 32, 64, 128), head_convs=2)


@register("fcos_lite", background=False)
def fcos_lite(*, num_classes: int, in_channels: int = 3, tile_size: int = 512) -> nn.Module:
    """FCOS on a ResNet-18 cut after layer3 with a 96-channel FPN on strides 8, 16 (and 32) and
    2-conv head towers: sized for 10-150 px objects, and cheap, since ResNet convolutions run
    near the CPU's peak (depthwise MobileNet convolutions do not). The CPU default."""
    from torchvision.models import resnet18

    body = resnet18(weights=None)
    _adapt_first_conv(body, in_channels)
    body.layer4 = nn.Identity()
    # FPN levels: P3 (stride 8), P4 (16) and a max-pooled P5 (32) for the largest objects.
    backbone = BackboneWithFPN(body, {"layer2": "0", "layer3": "1"}, [128, 256], 96)
    return _fcos(backbone, num_classes, (8, 16, 32), head_convs=2)
