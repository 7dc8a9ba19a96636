"""One operating threshold per class (``ModelSpec.class_thresholds``): the spec, the runner's
keep rule, ``--min-score``, evaluation's operating point and calibration (issue 17 item 5).

Real ONNX Runtime sessions throughout: a hand-written model with fixed outputs (two
detections of different classes at the same score) for the keep rule, and the shipped
``revet-base`` on the project's synthetic tiles for calibration and for evaluation against
prediction.
"""
import json

import numpy as np
import pytest

from detector.eval_run import calibrated_thresholds
from detector.metrics import evaluate_full
from detector.runner import Detector
from detector.spec import SPEC_KEY, ModelSpec, above_threshold

pytest.importorskip("onnx")

TILE = 64
# detection 0: class 0 (bunker), detection 1: class 1 (revetment), same score; 2: class 2, low
BOXES = np.array([[4, 4, 20, 20], [30, 30, 50, 50], [40, 4, 60, 20]], np.float32)
SCORES = np.array([0.5, 0.5, 0.2], np.float32)
LABELS = np.array([0, 1, 2], np.int64)


def write_fixed_model(path, spec: ModelSpec):
    """An ONNX model that returns BOXES / SCORES / LABELS for every image of the batch (the
    image only sets the batch size: its mean times zero is added)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c = {"b": BOXES[None], "s": SCORES[None], "l": LABELS[None].astype(np.float32),
         "ax": np.array([1, 2, 3], np.int64), "zero": np.array(0.0, np.float32), "col": np.array([-1, 1], np.int64),
         "col3": np.array([-1, 1, 1], np.int64)}
    n = helper.make_node
    nodes = [n("ReduceMean", ["image", "ax"], ["m"], keepdims=0), n("Mul", ["m", "zero"], ["z"]),
             n("Reshape", ["z", "col"], ["z2"]), n("Reshape", ["z", "col3"], ["z3"]),
             n("Add", ["s", "z2"], ["scores"]), n("Add", ["b", "z3"], ["boxes"]),
             n("Add", ["l", "z2"], ["lf"]), n("Cast", ["lf"], ["labels"], to=TensorProto.INT64)]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "fixed", [vi("image", TensorProto.FLOAT, ["batch", 3, TILE, TILE])],
                              [vi("boxes", TensorProto.FLOAT, ["batch", 3, 4]),
                               vi("scores", TensorProto.FLOAT, ["batch", 3]),
                               vi("labels", TensorProto.INT64, ["batch", 3])],
                              [numpy_helper.from_array(v, k) for k, v in c.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    e = model.metadata_props.add()
    e.key, e.value = SPEC_KEY, spec.to_json()
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def fixed_spec(class_thresholds=(0.6, 0.4, 0.4)) -> ModelSpec:
    return ModelSpec(tile_size=TILE, overlap=16, arch="fixed", score_threshold=0.3,
                     class_thresholds=class_thresholds)


# -- the spec -------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [(0.5, 0.5), (0.5, 0.5, 0.5, 0.5), (0.0, 0.5, 0.5), (0.5, 1.2, 0.5),
                                 (0.5, float("nan"), 0.5), (True, 0.5, 0.5), ("0.5", 0.5, 0.5), 0.5])
def test_class_thresholds_are_validated(bad):
    with pytest.raises(ValueError, match="class_thresholds"):
        ModelSpec(class_thresholds=bad)


def test_spec_round_trip_and_old_specs():
    s = ModelSpec(class_thresholds=(0.31, 0.7, 1.0))
    again = ModelSpec.from_json(s.to_json())
    assert again == s and again.class_thresholds == (0.31, 0.7, 1.0)
    assert list(s.thresholds()) == [0.31, 0.7, 1.0]
    assert list(s.thresholds(0.2)) == [0.2, 0.2, 0.2]  # an explicit min_score: one for all
    old = ModelSpec(score_threshold=0.4)
    assert "class_thresholds" not in old.to_dict()  # a spec without them is written as before
    d = old.to_dict()
    assert ModelSpec.from_dict(d).class_thresholds is None and list(old.thresholds()) == [0.4] * 3
    assert ModelSpec.from_dict({**d, "class_thresholds": None}) == old


def test_above_threshold_is_per_class_and_float64():
    s = np.array([0.5, 0.5, 0.7], np.float32)
    assert above_threshold(s, [0, 1, 2], [0.6, 0.4, 0.4]).tolist() == [False, True, True]
    assert above_threshold(s, [0, 1, 2], 0.5).tolist() == [True, True, True]
    # a threshold equal to a float32 score (as calibration stores them) keeps that detection
    assert above_threshold(s, [0, 1, 2], [0.5, 0.5, float(s[2])]).all()
    assert above_threshold(np.zeros(0, np.float32), np.zeros(0, np.int64), [0.1, 0.2, 0.3]).shape == (0,)


# -- the runner -----------------------------------------------------------------------------

@pytest.fixture
def fixed_model(tmp_path):
    return write_fixed_model(tmp_path / "fixed.onnx", fixed_spec())


def test_runner_keeps_by_the_class_threshold(fixed_model, tmp_path):
    det = Detector.load(fixed_model, device="cpu")
    assert det.spec.class_thresholds == (0.6, 0.4, 0.4)  # read from the ONNX metadata
    img = np.full((TILE, TILE, 3), 100, np.uint8)
    (r,) = det.predict_tiles([img])
    # same score 0.5: the bunker (threshold 0.6) is dropped, the revetment (0.4) kept
    assert r.labels.tolist() == [1] and r.scores.tolist() == [0.5]
    # an explicit min_score applies one threshold to every class
    assert sorted(det.predict_tiles([img], min_score=0.3)[0].labels.tolist()) == [0, 1]
    assert sorted(det.predict_tiles([img], min_score=0.1)[0].labels.tolist()) == [0, 1, 2]
    assert len(det.predict_tiles([img], min_score=0.55)[0]) == 0
    # without class thresholds the one score_threshold (0.3) keeps both
    plain = Detector.load(write_fixed_model(tmp_path / "plain.onnx", fixed_spec(None)), device="cpu")
    assert sorted(plain.predict_tiles([img])[0].labels.tolist()) == [0, 1]


def test_scene_windows_and_predict_job_keep_by_class(fixed_model, tmp_path):
    from scoring_models import write_scene

    from detector.predict import predict_files

    # one window (Detector.window_part) of noise, which the first pass would skip: skip=False
    scene = write_scene(tmp_path / "s.tif", TILE, seed=3)
    det = Detector.load(fixed_model, device="cpu")
    assert det.predict_scene(scene, skip=False).labels.tolist() == [1]
    assert sorted(det.predict_scene(scene, min_score=0.3, skip=False).labels.tolist()) == [0, 1]
    out = tmp_path / "job"
    s = predict_files(fixed_model, [scene], out, device="cpu", formats="geojson", skip=False)
    assert s["detections"] == 1 and s["min_score"] == [0.6, 0.4, 0.4]
    assert json.loads((out / "job.json").read_text())["min_score"] == [0.6, 0.4, 0.4]
    feats = json.loads(next(out.glob("*.geojson")).read_text())["features"]
    assert [f["properties"]["class"] for f in feats] == ["revetment"]
    s = predict_files(fixed_model, [scene], tmp_path / "job2", device="cpu", formats="geojson", min_score=0.3,
                      skip=False)
    assert s["detections"] == 2 and s["min_score"] == 0.3


def test_onnx_metadata_rewrite_round_trip(fixed_model, tmp_path):
    import onnx

    from detector.export.calibrate import write_onnx_spec

    new = fixed_spec(None).replace(class_thresholds=(0.25, 0.9, 0.45))
    out = write_onnx_spec(fixed_model, tmp_path / "re.onnx", new, note="test")
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["revet_calibration"] == "test"
    assert Detector.load(out, device="cpu").spec == new
    img = np.full((TILE, TILE, 3), 100, np.uint8)
    assert Detector.load(out, device="cpu").predict_tiles([img])[0].labels.tolist() == [0]


# -- evaluation and calibration with the shipped model ----------------------------------------

@pytest.fixture(scope="module")
def base_run(synth_small):
    """revet-base scored once on the synthetic validation tiles (every score >= 0.001)."""
    from detector import zoo
    from detector.tile_eval import evaluate_tiles

    try:
        zoo.resolve("revet-base")
    except (FileNotFoundError, ValueError):
        pytest.skip("revet-base is not installed")
    return evaluate_tiles("revet-base", synth_small / "val.json", device="cpu")


def test_calibrated_thresholds_beat_the_global_one_per_class(base_run):
    m, spec = base_run.metrics, base_run.spec
    cls = calibrated_thresholds(m["per_class"], spec.classes, spec.score_threshold)
    cal = evaluate_full(base_run.images, spec.classes, threshold=spec.score_threshold, class_thresholds=cls)
    changed = 0
    for name, t in zip(spec.classes, cls):
        g, c = m["per_class"][name], cal["per_class"][name]
        assert c["threshold"] == t
        if g["num_gt"] == 0 or not (m["per_class"][name]["best_f1"]["f1"] > 0):
            assert t == spec.score_threshold  # nothing to calibrate on: the global one kept
            continue
        assert 0 < t <= 1
        assert c["f1"] >= g["f1"] - 1e-12, name
        assert c["f1"] == pytest.approx(g["best_f1"]["f1"])  # the stored (rounded) threshold keeps the best F1
        changed += t != spec.score_threshold
    assert changed >= 1  # the shipped model's classes do want other thresholds on these tiles
    assert cal["class_thresholds"] == dict(zip(spec.classes, cls))


def test_calibrate_cli_writes_a_model_that_evaluate_and_predict_agree_on(base_run, synth_small, tmp_path,
                                                                         capsys):
    from detector import raster
    from detector.cli import main
    from detector.labels.coco import read_coco
    from detector.tile_eval import evaluate_tiles

    out = tmp_path / "cal.onnx"
    assert main(["evaluate", "revet-base", "--data", str(synth_small / "val.json"), "--calibrate", str(out),
                 "--device", "cpu", "--out", str(tmp_path / "cal.json")]) == 0
    assert "calibrated on" in capsys.readouterr().out
    det = Detector.load(out, device="cpu")
    spec = base_run.spec
    want = calibrated_thresholds(base_run.metrics["per_class"], spec.classes, spec.score_threshold)
    assert det.spec.class_thresholds == want
    assert det.spec.replace(class_thresholds=None) == spec  # nothing else changed
    rec = json.loads((tmp_path / "cal.json").read_text())
    assert rec["class_thresholds"] == dict(zip(spec.classes, want))

    # evaluate's operating point (at the model's per-class thresholds) counts exactly the
    # detections prediction keeps, class by class
    run = evaluate_tiles(det, synth_small / "val.json")
    assert run.metrics["class_thresholds"] == dict(zip(spec.classes, want))
    read = [raster.read_image(r.path, spec.bands) for r in read_coco(synth_small / "val.json").images]
    kept = det.predict_tiles([r[0] for r in read], valid=[r[1] for r in read], batch_size=len(read))
    for c, name in enumerate(spec.classes):
        pc = run.metrics["per_class"][name]
        assert pc["tp"] + pc["fp"] == sum(int((k.labels == c).sum()) for k in kept), name
    assert run.metrics["operating"]["tp"] + run.metrics["operating"]["fp"] == sum(len(k) for k in kept)
    # --threshold still reads one threshold for every class, and says so
    one = evaluate_tiles(det, synth_small / "val.json", threshold=0.5).metrics
    assert "class_thresholds" not in one and all(c["threshold"] == 0.5 for c in one["per_class"].values())
    with pytest.raises(ValueError, match="calibrated copy"):
        from detector.export.calibrate import calibrate_model

        calibrate_model(out, synth_small / "val.json", out)
