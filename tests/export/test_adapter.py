"""The fixed-output export adapters reproduce torchvision's eval path, and export to ONNX.

Weights are re-drawn with large variance so that scores are distinct (random heads start with
near-equal scores, and ties make NMS and top-k order arbitrary).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from detector.export.adapter import TwoStageAdapter, build_adapter  # noqa: E402
from detector.spec import ModelSpec  # noqa: E402
from detector.train.models import BACKGROUND_OFFSET, build_model  # noqa: E402

TILE = 128


def decisive(arch: str, classes: int = 3, bands: int = 3, seed: int = 0):
    spec = ModelSpec(arch=arch, classes=tuple(f"c{i}" for i in range(classes)),
                     bands=tuple(range(1, bands + 1)), offset=(0.0,) * bands, scale=(255.0,) * bands,
                     mean=(0.5,) * bands, std=(0.25,) * bands, tile_size=TILE, overlap=0, max_detections=50)
    torch.manual_seed(seed)
    model = build_model(spec).eval()
    if hasattr(model, "rpn"):
        model.rpn._pre_nms_top_n = dict(training=200, testing=150)
        model.rpn._post_nms_top_n = dict(training=64, testing=60)
    with torch.no_grad():
        for name, m in model.named_modules():
            last_ssd = "classification_head.module_list." in name and isinstance(m, torch.nn.Conv2d) \
                and m.kernel_size == (1, 1)
            if name.endswith(("cls_score", "cls_logits")) or last_ssd:  # the classifiers: spread the scores
                m.weight.normal_(0, 0.002 if "resnet50" in arch else 0.1)  # its box head runs hotter
    return model, spec


def images(n: int, bands: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, bands, TILE, TILE, generator=g) * 255


def eager(model, spec, x: torch.Tensor):
    """torchvision's own eval output, labels shifted to spec class indices."""
    unit = x / torch.tensor(spec.scale).view(1, -1, 1, 1)
    with torch.no_grad():
        out = model(list(unit))
    off = BACKGROUND_OFFSET[spec.arch]
    return [(o["boxes"].numpy(), o["scores"].numpy(), o["labels"].numpy() - off) for o in out]


def assert_same(adapter_out, ref):
    """Same detections as torchvision (as sets: tied scores may come in either order)."""
    boxes, scores, labels = (t.numpy() for t in adapter_out)
    for i, (rb, rs, rl) in enumerate(ref):
        n = len(rs)
        assert n > 3, "the test needs detections to compare"
        assert (scores[i] > 0).sum() == n, "adapter and torchvision keep different numbers"
        free = np.ones(n, bool)
        for b, s, lab in zip(rb, rs, rl):
            cost = np.abs(boxes[i, :n] - b).max(1) + np.abs(scores[i, :n] - s) * 100 + (labels[i, :n] != lab) * 1e3
            cost[~free] = np.inf
            j = int(np.argmin(cost))
            assert cost[j] < 1e-3, (b, s, lab, boxes[i, j], scores[i, j], labels[i, j])
            free[j] = False


@pytest.mark.parametrize("arch", ["fasterrcnn_mobilenet", pytest.param("fasterrcnn_resnet50_v2", marks=pytest.mark.slow)])
def test_two_stage_adapter_matches_torchvision(arch):
    model, spec = decisive(arch)
    adapter = build_adapter(model, spec)
    assert isinstance(adapter, TwoStageAdapter)
    x = images(2)
    with torch.no_grad():
        out = adapter(x)
    assert out[0].shape == (2, 50, 4) and out[1].shape == (2, 50) and out[2].dtype == torch.int64
    assert_same(out, eager(model, spec, x))


@pytest.mark.parametrize("arch", ["fcos_lite", "ssdlite"])
def test_one_stage_adapter_matches_torchvision(arch):
    model, spec = decisive(arch)
    model.score_thresh = 0.001  # the adapter's floor
    model.topk_candidates = 1000
    x = images(2)
    with torch.no_grad():
        out = build_adapter(model, spec)(x)
    ref = eager(model, spec, x)
    # one-stage eager models keep top-k per level before NMS; compare the detections both keep
    boxes, scores, labels = (t.numpy() for t in out)
    for i, (rb, rs, rl) in enumerate(ref):
        top = np.argsort(-rs)[:10]
        assert len(top) == 10
        for b, s, lab in zip(rb[top], rs[top], rl[top]):
            j = np.argmin(np.abs(scores[i] - s) + np.abs(boxes[i] - b).sum(1))
            assert abs(scores[i, j] - s) < 1e-5 and np.abs(boxes[i, j] - b).max() < 1e-3 and labels[i, j] == lab


def test_two_stage_exports_to_onnx_with_dynamic_batch(tmp_path):
    from detector.backends import OnnxBackend
    from detector.export.onnx_export import export_onnx, parity_check
    from detector.export.torch_backend import TorchBackend

    model, spec = decisive("fasterrcnn_mobilenet")
    adapter = build_adapter(model, spec).eval()
    path = export_onnx(adapter, tmp_path / "frcnn.onnx")
    ob = OnnxBackend(path, device="cpu")
    tiles = [np.moveaxis(t, 0, -1) for t in images(4, seed=9).numpy()]
    for n in (1, 3):  # dynamic batch: the graph was traced at one size
        assert ob.run(np.stack([np.moveaxis(t, -1, 0) for t in tiles[:n]]))[0].shape == (n, 50, 4)
        report = parity_check(TorchBackend(adapter), ob, tiles, batch_size=n)
        assert report["passed"] and report["matched"] > 10, report
