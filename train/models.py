"""Architecture registry: small keyword-only builders of torchvision detectors.

Every builder returns a torchvision detection model whose input transform never resizes
(images are used at native resolution: objects keep their size in pixels, which is what a
model trained at one ground sample distance needs) and normalizes with the spec's mean/std.
The model takes images scaled to [0, 1] (see ``detector.raster.scale_to_unit``).

Class index convention: the model's label ``i`` means ``spec.classes[i]``. Torchvision's
SSD and Faster R-CNN reserve label 0 for background; the builders hide that offset behind
``num_classes + 1`` and the export adapter removes it.

Builders use random weights; ``PRETRAINED[name]`` says which torchvision COCO detector and
ImageNet classifier fit the architecture, and ``train/weights.py`` loads them. The torchvision
families below the CPU models keep torchvision's module layout so its files load by name.
"""
from __future__ import annotations

from dataclasses import dataclass
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
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from detector.spec import MIN_CANDIDATE_SCORE, ModelSpec


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


@dataclass(frozen=True)
class PretrainedInfo:
    """Where published weights for an architecture come from (used by ``train/weights.py``).

    Attributes:
        coco: torchvision weights enum entry of the COCO detector of the same family, e.g.
            ``"FCOS_ResNet50_FPN_Weights.COCO_V1"``; None: none published.
        imagenet: torchvision weights enum entry of the backbone's ImageNet classifier.
        coco_key: maps a key of the COCO state dict to this model's key (None: drop it), for
            builders whose module layout differs from torchvision's.
        imagenet_key: maps a key of the classifier's state dict to this model's key.
    """

    coco: str | None = None
    imagenet: str | None = None
    coco_key: Callable[[str], str | None] = (lambda k: k)
    imagenet_key: Callable[[str], str | None] = (lambda k: None)


PRETRAINED: dict[str, PretrainedInfo] = {}


def register(name: str, *, background: bool, pretrained: PretrainedInfo | None = None):
    def deco(fn):
        _REGISTRY[name] = fn
        BACKGROUND_OFFSET[name] = 1 if background else 0
        PRETRAINED[name] = pretrained or PretrainedInfo()
        return fn
    return deco


def available() -> list[str]:
    return sorted(_REGISTRY)


def _body_key(k: str) -> str | None:
    """ImageNet classifier key -> key under ``backbone.body`` (torchvision's FPN backbones:
    ResNet ``conv1``, ``layer1``..; MobileNet ``features.N`` -> ``N``). Classifier heads drop."""
    if k.startswith(("fc.", "classifier.")):
        return None
    if k.startswith("features."):
        k = k[len("features."):]
    return "backbone.body." + k


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the (randomly initialised) network named by ``spec.arch`` for ``spec``'s classes."""
    if spec.arch not in _REGISTRY:
        raise ValueError(f"unknown architecture {spec.arch!r}; available: {available()}")
    model = _REGISTRY[spec.arch](num_classes=spec.num_classes, in_channels=spec.num_bands,
                                 tile_size=spec.tile_size)
    model.transform = NativeSizeTransform(spec.mean, spec.std)
    model.detections_per_img = spec.max_detections
    if hasattr(model, "score_thresh"):  # one-stage: validation keeps what the exported graph keeps
        model.score_thresh = MIN_CANDIDATE_SCORE
    if hasattr(model, "nms_thresh"):
        model.nms_thresh = spec.nms_iou
    if hasattr(model, "roi_heads"):
        model.roi_heads.nms_thresh = spec.nms_iou
        model.roi_heads.detections_per_img = spec.max_detections
    return model


def adapt_input_conv(weight: torch.Tensor, bands: int) -> torch.Tensor:
    """First-convolution weight ``(O, S, k, k)`` -> ``(O, bands, k, k)``, keeping the response to
    a flat image (the same value in every band): fewer bands than ``S`` (panchromatic, dual-pol
    SAR) each get the sum of the source filters divided by ``bands`` (one band: the sum, as timm's
    ``adapt_input_conv``); more bands keep the source filters and give the extra bands the mean
    filter, all scaled by ``S / bands``. The one band-adaptation rule: new models
    (:func:`build_model`) and loaded weights (:mod:`detector.train.weights`) both use it."""
    w = weight.float()
    s = w.shape[1]
    if bands < s:
        out = w.sum(dim=1, keepdim=True).repeat(1, bands, 1, 1) / bands
    else:
        out = w.mean(dim=1, keepdim=True).repeat(1, bands, 1, 1)
        out[:, :s] = w
        out = out * (s / bands)
    return out.to(weight.dtype)


def _adapt_first_conv(module: nn.Module, in_channels: int) -> None:
    """Give the first 3-input convolution of ``module`` ``in_channels`` inputs (multiband
    imagery). Builders start from random weights, so only the shape matters here; the weights
    are carried over by :func:`adapt_input_conv` all the same."""
    if in_channels == 3:
        return
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d) and child.in_channels == 3:
            new = nn.Conv2d(in_channels, child.out_channels, child.kernel_size, child.stride,
                            child.padding, bias=child.bias is not None)
            with torch.no_grad():
                new.weight.copy_(adapt_input_conv(child.weight, in_channels))
            parent = module
            *path, last = name.split(".")
            for p in path:
                parent = getattr(parent, p)
            setattr(parent, last, new)
            return
    raise ValueError("no 3-channel first convolution found to adapt")


def _ssdlite_imagenet_key(k: str) -> str | None:
    """MobileNetV3-Large classifier key -> key in torchvision's SSDlite extractor, which splits
    ``features`` at block 13 (C4) after its expansion conv: ``features.0`` holds blocks 0-12
    and ``13.block.0``; ``features.1`` holds ``13.block.1:`` and blocks 14-16."""
    if not k.startswith("features."):
        return None
    _, i, rest = k.split(".", 2)
    i = int(i)
    if i < 13:
        return f"backbone.features.0.{i}.{rest}"
    if i == 13:
        _, j, tail = rest.split(".", 2)  # block.J.tail
        return f"backbone.features.0.13.{tail}" if j == "0" else f"backbone.features.1.0.{j}.{tail}"
    return f"backbone.features.1.{i - 13}.{rest}"


@torch.no_grad()
def _out_channels(backbone: nn.Module, in_channels: int, size: int = 64) -> list[int]:
    """Channels of each feature map (torchvision's ``retrieve_out_channels`` feeds 3 bands;
    channels do not depend on the probe's size)."""
    was = backbone.training
    backbone.eval()
    feats = backbone(torch.zeros(1, in_channels, size, size))
    backbone.train(was)
    return [f.shape[1] for f in feats.values()]


@register("ssdlite", background=True, pretrained=PretrainedInfo(
    coco="SSDLite320_MobileNet_V3_Large_Weights.COCO_V1",
    imagenet="MobileNet_V3_Large_Weights.IMAGENET1K_V1", imagenet_key=_ssdlite_imagenet_key))
def ssdlite(*, num_classes: int, in_channels: int = 3, tile_size: int = 512) -> nn.Module:
    """SSDlite, MobileNetV3-Large backbone, at native tile size, default boxes 14-300 px for
    small overhead objects (torchvision's 320-px COCO defaults are far too large)."""
    from torchvision.models import mobilenet_v3_large

    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    backbone = mobilenet_v3_large(weights=None, norm_layer=norm, reduced_tail=True)
    _adapt_first_conv(backbone, in_channels)
    backbone = _mobilenet_extractor(backbone, 6, norm)
    size = (tile_size, tile_size)
    # Scales are fractions of the tile size: 14 px .. 300 px at 512.
    px = [14, 28, 56, 96, 150, 220, 300]
    anchors = PixelBoxGenerator([[2, 3]] * 6, [p / tile_size for p in px], tile_size)
    out_channels = _out_channels(backbone, in_channels)
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


_RESNET18 = PretrainedInfo(imagenet="ResNet18_Weights.IMAGENET1K_V1", imagenet_key=_body_key)


@register("fcos_resnet18", background=False, pretrained=_RESNET18)
def fcos_resnet18(*, num_classes: int, in_channels: int = 3, tile_size: int = 512) -> nn.Module:
    """FCOS, ResNet-18 FPN with 128 channels (P3-P5 + P6, P7), 2-conv head towers:
    about 2.8x fewer FLOPs than torchvision's 256-channel, 4-conv default."""
    from torchvision.models import resnet18

    body = resnet18(weights=None)
    _adapt_first_conv(body, in_channels)
    backbone = BackboneWithFPN(body, {"layer2": "0", "layer3": "1", "layer4": "2"},
                               [128, 256, 512], 128, extra_blocks=LastLevelP6P7(128, 128))
    return _fcos(backbone, num_classes, (8, 16, 32, 64, 128), head_convs=2)


@register("fcos_lite", background=False, pretrained=_RESNET18)
def fcos_lite(*, num_classes: int, in_channels: int = 3, tile_size: int = 512) -> nn.Module:
    """FCOS on a ResNet-18 cut after layer3 with a 96-channel FPN on strides 8, 16 (and 32) and
    2-conv head towers: sized for 10-150 px objects, and cheap, since ResNet convolutions run
    near the CPU's peak (depthwise MobileNet convolutions do not). The CPU default."""
    return resnet18_cut_fcos(num_classes, in_channels)


def resnet18_cut_fcos(num_classes: int, in_channels: int = 3, *, channels: int = 96, head_convs: int = 2,
                      blocks: tuple[int, int, int] = (2, 2, 2)) -> nn.Module:
    """``fcos_lite``'s family: FCOS on ResNet-18's stem and layers 1-3 (``blocks``: residual
    blocks kept per layer, 1 or 2 each; the first ones, so ResNet-18 weights still load by
    name), a ``channels``-wide FPN on strides 8, 16 and a max-pooled 32, ``head_convs``-conv
    head towers. ``benchmarks/bench_model_cost.py`` measures the narrower and shallower
    members against the default (96, 2, (2, 2, 2))."""
    from torchvision.models import resnet18

    body = resnet18(weights=None)
    _adapt_first_conv(body, in_channels)
    body.layer4 = nn.Identity()
    for name, n in zip(("layer1", "layer2", "layer3"), blocks):
        if n not in (1, 2):
            raise ValueError(f"blocks: expected 1 or 2 residual blocks per layer, got {blocks}")
        layer = getattr(body, name)
        if n < len(layer):
            setattr(body, name, nn.Sequential(*list(layer.children())[:n]))
    # FPN levels: P3 (stride 8), P4 (16) and a max-pooled P5 (32) for the largest objects.
    backbone = BackboneWithFPN(body, {"layer2": "0", "layer3": "1"}, [128, 256], channels)
    return _fcos(backbone, num_classes, (8, 16, 32), head_convs=head_convs)


# ---------------------------------------------------------------- torchvision families (GPU)
# Same module layout as torchvision's builders, so its COCO weights load by name; only anchor
# sizes (16-256 px rather than COCO's 32-512), score thresholds and the input transform differ.

_RESNET50 = "ResNet50_Weights.IMAGENET1K_V1"  # the backbone torchvision's COCO detectors start from


def _resnet50_fpn(in_channels: int, returned_layers, extra_blocks=None, norm_layer=None) -> nn.Module:
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    body = resnet50(weights=None)
    _adapt_first_conv(body, in_channels)
    # trainable_layers=5: nothing frozen here; freezing is train.weights.freeze's job.
    return _resnet_fpn_extractor(body, 5, returned_layers=returned_layers, extra_blocks=extra_blocks,
                                 norm_layer=norm_layer)


@register("fcos_resnet50", background=False, pretrained=PretrainedInfo(
    coco="FCOS_ResNet50_FPN_Weights.COCO_V1", imagenet=_RESNET50, imagenet_key=_body_key))
def fcos_resnet50(*, num_classes: int, in_channels: int = 3, tile_size: int = 512) -> nn.Module:
    """FCOS, ResNet-50 FPN (P3-P7, 256 channels, 4-conv head towers): torchvision's
    ``fcos_resnet50_fpn``. Level size ranges start at 8 px (P3: objects up to 64 px)."""
    backbone = _resnet50_fpn(in_channels, [2, 3, 4], LastLevelP6P7(256, 256))
    return _fcos(backbone, num_classes, (8, 16, 32, 64, 128), head_convs=4)


def _octaves(sizes) -> tuple[tuple[int, ...], ...]:
    return tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in sizes)


@register("retinanet_resnet50_v2", background=False, pretrained=PretrainedInfo(
    coco="RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1", imagenet=_RESNET50, imagenet_key=_body_key))
def retinanet_resnet50_v2(*, num_classes: int, in_channels: int = 3, tile_size: int = 512) -> nn.Module:
    """RetinaNet v2, ResNet-50 FPN (P3-P7), GroupNorm head, GIoU loss: torchvision's
    ``retinanet_resnet50_fpn_v2`` with anchors of 16-406 px (3 octaves x 3 ratios per level,
    as COCO's 32-812 px halved), so 10-px objects still match an anchor."""
    from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead

    backbone = _resnet50_fpn(in_channels, [2, 3, 4], LastLevelP6P7(2048, 256))
    anchors = AnchorGenerator(_octaves([16, 32, 64, 128, 256]), ((0.5, 1.0, 2.0),) * 5)
    head = RetinaNetHead(backbone.out_channels, anchors.num_anchors_per_location()[0], num_classes,
                         norm_layer=partial(nn.GroupNorm, 32))
    head.regression_head._loss_type = "giou"
    return RetinaNet(backbone, num_classes, anchor_generator=anchors, head=head, score_thresh=0.05,
                     nms_thresh=0.5, detections_per_img=100, topk_candidates=1000)


def _faster_rcnn(backbone, num_classes: int, anchors, **kw) -> nn.Module:
    from torchvision.models.detection.faster_rcnn import FasterRCNN

    # Denser proposals than torchvision's defaults: scenes hold many small objects per tile.
    return FasterRCNN(backbone, num_classes + 1, rpn_anchor_generator=anchors, box_score_thresh=0.01,
                      box_detections_per_img=100, **kw)


@register("fasterrcnn_resnet50_v2", background=True, pretrained=PretrainedInfo(
    coco="FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1", imagenet=_RESNET50, imagenet_key=_body_key))
def fasterrcnn_resnet50_v2(*, num_classes: int, in_channels: int = 3, tile_size: int = 512) -> nn.Module:
    """Faster R-CNN v2, ResNet-50 FPN (P2-P6, BatchNorm FPN, 2-conv RPN, 4-conv box head):
    torchvision's ``fasterrcnn_resnet50_fpn_v2`` with anchors of 16-256 px (one size per level,
    3 ratios) rather than 32-512. Exports through the two-stage adapter."""
    from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
    from torchvision.models.detection.rpn import RPNHead

    backbone = _resnet50_fpn(in_channels, [1, 2, 3, 4], norm_layer=nn.BatchNorm2d)
    anchors = AnchorGenerator(((16,), (32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 5)
    rpn_head = RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0], conv_depth=2)
    box_head = FastRCNNConvFCHead((backbone.out_channels, 7, 7), [256, 256, 256, 256], [1024],
                                  norm_layer=nn.BatchNorm2d)
    return _faster_rcnn(backbone, num_classes, anchors, rpn_head=rpn_head, box_head=box_head)


# Our MobileNet FPN reads blocks 6, 12, 16 (strides 8, 16, 32); torchvision's reads 13 and 16
# (both stride 32: too coarse for 10-px objects). Its FPN level i is our level i + 1.
_MNV3_RETURN = {"6": "0", "12": "1", "16": "2"}


def _fasterrcnn_mobilenet_coco_key(k: str) -> str | None:
    for part in ("backbone.fpn.inner_blocks.", "backbone.fpn.layer_blocks."):
        if k.startswith(part):
            i, rest = k[len(part):].split(".", 1)
            return f"{part}{int(i) + 1}.{rest}"
    return k


@register("fasterrcnn_mobilenet", background=True, pretrained=PretrainedInfo(
    coco="FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1", coco_key=_fasterrcnn_mobilenet_coco_key,
    imagenet="MobileNet_V3_Large_Weights.IMAGENET1K_V1", imagenet_key=_body_key))
def fasterrcnn_mobilenet(*, num_classes: int, in_channels: int = 3, tile_size: int = 512) -> nn.Module:
    """Faster R-CNN, MobileNetV3-Large FPN on strides 8, 16, 32 (+ max-pooled 64), anchors of
    16-192 px (two sizes per level, 3 ratios). torchvision's ``fasterrcnn_mobilenet_v3_large_fpn``
    uses only stride-32 maps and 32-512 px anchors. Exports through the two-stage adapter."""
    from torchvision.models import mobilenet_v3_large

    net = mobilenet_v3_large(weights=None, norm_layer=nn.BatchNorm2d)
    _adapt_first_conv(net, in_channels)
    channels = [net.features[int(i)].out_channels for i in _MNV3_RETURN]
    backbone = BackboneWithFPN(net.features, _MNV3_RETURN, channels, 256)
    anchors = AnchorGenerator(((16, 24), (32, 48), (64, 96), (128, 192)), ((0.5, 1.0, 2.0),) * 4)
    return _faster_rcnn(backbone, num_classes, anchors)
