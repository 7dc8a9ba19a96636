"""The architecture registry: every builder trains and predicts at small sizes, for any number
of classes and bands, at native resolution."""
import math

import pytest

torch = pytest.importorskip("torch")

from detector.spec import ModelSpec  # noqa: E402
from detector.train.models import BACKGROUND_OFFSET, PRETRAINED, NativeSizeTransform, available, build_model  # noqa: E402

TILE = 128


def small_spec(arch: str, classes: int = 3, bands: int = 3, **kw) -> ModelSpec:
    return ModelSpec(arch=arch, classes=tuple(f"c{i}" for i in range(classes)), bands=tuple(range(1, bands + 1)),
                     offset=(0.0,) * bands, scale=(1.0,) * bands, mean=(0.5,) * bands, std=(0.25,) * bands,
                     tile_size=TILE, overlap=0, **kw)


def cheap(model):
    """Fewer proposals and sampled RoIs for two-stage models: their 4-conv box head on
    torchvision's 1000 proposals per image dominates a CPU test."""
    if hasattr(model, "rpn"):
        model.rpn._pre_nms_top_n = dict(training=200, testing=100)
        model.rpn._post_nms_top_n = dict(training=64, testing=32)
        model.roi_heads.fg_bg_sampler.batch_size_per_image = 32
    return model


def batch(arch: str, classes: int, bands: int):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(bands, TILE, TILE, generator=g) for _ in range(2)]
    off = BACKGROUND_OFFSET[arch]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 40.0, 30.0], [60.0, 50.0, 110.0, 120.0]]),
         "labels": torch.tensor([0, classes - 1]) + off},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # empty tiles are common
    ]
    return images, targets


def test_registry_lists_the_families():
    assert set(available()) >= {"ssdlite", "fcos_lite", "fcos_resnet18", "fcos_resnet50",
                                "retinanet_resnet50_v2", "fasterrcnn_resnet50_v2", "fasterrcnn_mobilenet"}
    assert set(PRETRAINED) == set(available()) == set(BACKGROUND_OFFSET)


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(ValueError) as e:
        build_model(small_spec("yolo_v99"))
    for name in available():
        assert name in str(e.value)


HEAVY = {"fcos_resnet50", "retinanet_resnet50_v2", "fasterrcnn_resnet50_v2"}  # ResNet-50: slow on CPU


@pytest.mark.parametrize("classes,bands", [(1, 3), (4, 4)])
@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in HEAVY else a
                                  for a in sorted(available())])
def test_train_step_and_eval_forward(arch, classes, bands):
    torch.manual_seed(0)
    spec = small_spec(arch, classes, bands, max_detections=37, nms_iou=0.4)
    model = cheap(build_model(spec))
    assert isinstance(model.transform, NativeSizeTransform)
    images, targets = batch(arch, classes, bands)
    model.train()
    losses = model(images, targets)
    loss = sum(losses.values())
    assert math.isfinite(loss.item()), losses
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o in out:
        assert o["boxes"].shape[1] == 4 and len(o["boxes"]) <= 37
        assert len(o["scores"]) == len(o["labels"]) == len(o["boxes"])
        if len(o["labels"]):
            off = BACKGROUND_OFFSET[arch]
            assert int(o["labels"].min()) >= off and int(o["labels"].max()) < classes + off
            # native size: boxes in input pixels, no rescaling
            assert float(o["boxes"].max()) <= TILE + 1e-3


@pytest.mark.parametrize("arch", sorted(available()))
def test_class_and_band_counts_shape_the_network(arch):
    """1 class / 4 bands and 4 classes / 3 bands (the other two combinations train above)."""
    first = {}
    for classes, bands in [(1, 4), (4, 3)]:
        model = build_model(small_spec(arch, classes, bands))
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.in_channels == bands
        first[(classes, bands)] = sum(p.numel() for p in model.parameters())
    assert first[(1, 4)] != first[(4, 3)]


def test_spec_sets_detection_limits():
    spec = small_spec("fasterrcnn_mobilenet", max_detections=7, nms_iou=0.3)
    model = build_model(spec)
    assert model.roi_heads.detections_per_img == 7 and model.roi_heads.nms_thresh == 0.3
    model = build_model(small_spec("retinanet_resnet50_v2", max_detections=9, nms_iou=0.3))
    assert model.detections_per_img == 9 and model.nms_thresh == 0.3


def test_small_object_anchors():
    """Anchors start at 16 px (COCO's start at 32) for 10-150 px overhead objects."""
    r = build_model(small_spec("retinanet_resnet50_v2"))
    assert min(min(s) for s in r.anchor_generator.sizes) == 16
    f = build_model(small_spec("fasterrcnn_resnet50_v2"))
    assert [s[0] for s in f.rpn.anchor_generator.sizes] == [16, 32, 64, 128, 256]
    m = build_model(small_spec("fasterrcnn_mobilenet"))
    feats = m.backbone(torch.zeros(1, 3, TILE, TILE))
    assert [v.shape[-1] for v in feats.values()] == [TILE // 8, TILE // 16, TILE // 32, TILE // 64]


@pytest.mark.parametrize("arch", ["fcos_resnet50", "retinanet_resnet50_v2"])
def test_one_stage_families_fit_the_export_adapter(arch):
    from detector.export.adapter import DetectionAdapter

    spec = small_spec(arch, 2, 4)
    adapter = DetectionAdapter(build_model(spec), spec)
    with torch.no_grad():
        boxes, scores, labels = adapter(torch.rand(1, 4, TILE, TILE))
    assert boxes.shape == (1, spec.max_detections, 4) and labels.max() < 2


def test_export_adapter_refuses_unknown_families_by_name():
    from detector.export.adapter import DetectionAdapter, build_adapter

    spec = small_spec("fcos_lite")
    with pytest.raises(ValueError, match=r"'fcos_lite' \(Sequential\) has no fixed-output export adapter.*FasterRCNN"):
        build_adapter(torch.nn.Sequential(), spec)
    with pytest.raises(ValueError, match="no fixed-output export adapter"):
        DetectionAdapter(build_model(small_spec("fasterrcnn_mobilenet")), spec)


@pytest.mark.parametrize("arch", available())
def test_validation_post_processing_keeps_what_the_exported_graph_keeps(arch):
    """Training's validation (the model's own post-processing, which picks best.ckpt) uses the
    export adapter's score floor, NMS IoU and detection cap, so it ranks the candidates
    revet evaluate ranks (torchvision's one-stage default floor is 0.05-0.2)."""
    from detector.export.adapter import build_adapter
    from detector.spec import MIN_CANDIDATE_SCORE

    spec = small_spec(arch, nms_iou=0.45, max_detections=37)
    model = build_model(spec)
    heads = getattr(model, "roi_heads", model)
    assert heads.detections_per_img == 37 and heads.nms_thresh == 0.45
    if not hasattr(model, "roi_heads"):
        assert model.score_thresh == MIN_CANDIDATE_SCORE == build_adapter(model, spec).min_score
