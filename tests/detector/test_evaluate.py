"""Tile-level evaluation, comparison and the CLI, with an oracle "model" that knows the answers.

The oracle backend recognises each window it is given by its pixels and returns that window's
ground truth, jittered, with misses, class confusions and false alarms (deterministic per
window). It runs through the real :class:`detector.runner.Detector` (windows, merging), so the
tests check the evaluation path, torch-free and fast. Numbers are checked against pycocotools
on the same detections. One slow test uses a real trained model.
"""
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from rasterio.windows import Window

from detector import raster
from detector.labels.coco import read_coco
from detector.evaluate import compare_metrics, evaluate_model, evaluate_tiles, run_evaluation
from detector.runner import Detector
from detector.spec import ModelSpec
from detector.tiling import scene_windows

CLASSES = ("bunker", "revetment", "shelter")


def _key(tile_chw: np.ndarray) -> bytes:
    return hashlib.sha1(np.ascontiguousarray(tile_chw, np.float32).tobytes()).digest()


class OracleBackend:
    """``run(batch)`` -> the ground truth of each known window, perturbed (see module doc)."""

    def __init__(self, spec: ModelSpec, seed: int = 0, miss: float = 0.15, confuse: float = 0.1,
                 false_alarms: float = 1.0) -> None:
        self.spec, self.seed = spec, seed
        self.miss, self.confuse, self.false_alarms = miss, confuse, false_alarms
        self.table: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        self.calls = 0

    def add(self, tile_hwc: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> None:
        self.table[_key(np.moveaxis(tile_hwc, -1, 0))] = (np.asarray(boxes, np.float32).reshape(-1, 4),
                                                          np.asarray(labels, np.int64))

    def add_scene(self, path, boxes: np.ndarray, labels: np.ndarray, min_visible: float = 0.3) -> None:
        """Learn every window of the runner's grid over ``path``; ground truth cut to the window."""
        t = self.spec.tile_size
        with raster.open_raster(path) as ds:
            for col, row in scene_windows(ds.width, ds.height, t, self.spec.overlap):
                tile, _ = raster.read_window(ds, Window(col, row, t, t), list(self.spec.bands))
                b = np.asarray(boxes, np.float64) - [col, row, col, row]
                c = np.clip(b, 0, t)
                area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa
                keep = area(c) >= min_visible * np.maximum(area(b), 1e-9)
                self.add(tile, c[keep], np.asarray(labels)[keep])

    def run(self, batch: np.ndarray):
        self.calls += 1
        d = self.spec.max_detections
        B = len(batch)
        out_b, out_s, out_l = np.zeros((B, d, 4), np.float32), np.zeros((B, d), np.float32), np.zeros((B, d), np.int64)
        t = batch.shape[-1]
        for i, tile in enumerate(batch):
            key = _key(tile)
            if key not in self.table:
                raise AssertionError("oracle: unknown window")
            gt, gl = self.table[key]
            rng = np.random.default_rng([self.seed, int.from_bytes(key[:4], "little")])
            keep = rng.random(len(gt)) >= self.miss
            b = gt[keep] + rng.normal(0, 1.5, (int(keep.sum()), 4)).astype(np.float32)
            lab = gl[keep].copy()
            flip = rng.random(len(lab)) < self.confuse
            lab[flip] = (lab[flip] + 1) % self.spec.num_classes
            s = rng.uniform(0.35, 1.0, len(b))
            n_fa = rng.poisson(self.false_alarms)
            xy = rng.uniform(0, t - 40, (n_fa, 2))
            fa = np.concatenate([xy, xy + rng.uniform(12, 40, (n_fa, 2))], 1)
            b = np.concatenate([b, fa]).astype(np.float32)
            lab = np.concatenate([lab, rng.integers(0, self.spec.num_classes, n_fa)])
            s = np.concatenate([s, rng.uniform(0.01, 0.8, n_fa)]).astype(np.float32)
            b = np.clip(b, 0, t)
            n = min(len(b), d)
            out_b[i, :n], out_s[i, :n], out_l[i, :n] = b[:n], s[:n], lab[:n]
        return out_b, out_s, out_l


def oracle_for_tiles(data, spec: ModelSpec | None = None, **kw) -> Detector:
    spec = spec or ModelSpec(gsd=0.5)
    be = OracleBackend(spec, **kw)
    for rec in read_coco(data).remap(spec.classes).images:
        image, _, _ = raster.read_image(rec.path, spec.bands)
        be.add(image, rec.boxes, rec.labels)
    return Detector(be, spec)


def coco_reference(images, classes, *, max_dets=100, threshold=0.3):
    """pycocotools on the same ground truth and detections: mAP50, mAP, per-class AP50 and
    (tp, fp, n_gt) at ``threshold`` from COCO's own matches."""
    from pycoco_ref import pycoco_eval

    ev = pycoco_eval(images, classes, max_dets)
    pr = ev.eval["precision"][:, :, :, 0, 2]
    per_class, counts = {}, {}
    for k, c in enumerate(classes):
        p = pr[0, :, k]
        per_class[c] = float(np.mean(p[p > -1])) if (p > -1).any() else float("nan")
        tp = fp = n = 0
        for e in ev.evalImgs:
            if e is None or e["category_id"] != k + 1 or e["aRng"] != ev.params.areaRng[0]:
                continue
            s = np.asarray(e["dtScores"])
            m = np.asarray(e["dtMatches"])[0] > 0
            sel = s >= threshold
            tp += int((m & sel).sum())
            fp += int((~m & sel).sum())
            n += int((~np.asarray(e["gtIgnore"]).astype(bool)).sum())
        counts[c] = (tp, fp, n)
    return {"mAP50": float(np.mean(pr[0][pr[0] > -1])), "mAP50_95": float(np.mean(pr[pr > -1])),
            "AP50": per_class, "counts": counts}


def assert_matches_coco(run, max_dets):
    pytest.importorskip("pycocotools")
    m = run.metrics
    ref = coco_reference(run.images, run.classes, max_dets=max_dets, threshold=m["threshold"])
    assert m["mAP50"] == pytest.approx(ref["mAP50"], abs=1e-3)
    assert m["mAP50_95"] == pytest.approx(ref["mAP50_95"], abs=1e-3)
    tot = np.zeros(3, int)
    for c in run.classes:
        pc = m["per_class"][c]
        tp, fp, n = ref["counts"][c]
        assert pc["AP50"] == pytest.approx(ref["AP50"][c], abs=1e-3, nan_ok=True)
        assert (pc["tp"], pc["fp"], pc["num_gt"]) == (tp, fp, n)
        if tp + fp:
            assert pc["precision"] == pytest.approx(tp / (tp + fp), abs=1e-3)
        if n:
            assert pc["recall"] == pytest.approx(tp / n, abs=1e-3)
        tot += (tp, fp, n)
    assert m["operating"]["precision"] == pytest.approx(tot[0] / (tot[0] + tot[1]), abs=1e-3)
    assert m["operating"]["recall"] == pytest.approx(tot[0] / tot[2], abs=1e-3)


@pytest.fixture(scope="session")
def oracle_tiles(synth_small):
    return oracle_for_tiles(synth_small / "test.json")


def test_tiles_match_pycocotools(oracle_tiles, synth_small):
    run = evaluate_tiles(oracle_tiles, synth_small / "test.json")
    m = run.metrics
    assert m["mode"] == "tiles" and m["num_images"] == 8 and m["threshold"] == pytest.approx(0.3)
    assert 0.3 < m["mAP50"] < 1.0  # the oracle misses, confuses and hallucinates some
    assert m["operating"]["fp"] > 0 and m["operating"]["fn"] > 0
    assert_matches_coco(run, 100)
    cm = np.asarray(m["confusion"]["matrix"])
    assert cm.shape == (4, 4) and cm[:3].sum(1).tolist() == [m["per_class"][c]["num_gt"] for c in CLASSES]
    assert np.trace(cm[:3, :3]) == m["operating"]["tp"]
    assert len(m["sweep"]["thresholds"]) == len(m["sweep"]["f1"]) == 101
    assert m["sweep"]["best"]["f1"] >= max(f for f in m["sweep"]["f1"] if f == f) - 1e-12


def test_threshold_override_and_strict_json(oracle_tiles, synth_small, tmp_path):
    hi = evaluate_model(oracle_tiles, synth_small / "test.json", threshold=0.9, out=tmp_path / "m.json")
    lo = evaluate_model(oracle_tiles, synth_small / "test.json")
    assert hi["threshold"] == 0.9 and hi["mAP50"] == pytest.approx(lo["mAP50"])
    assert hi["operating"]["recall"] < lo["operating"]["recall"]

    def no_nan(c):
        raise AssertionError(f"non-standard JSON constant {c}")

    saved = json.loads((tmp_path / "m.json").read_text(), parse_constant=no_nan)
    assert set(saved["per_class"]) == set(CLASSES) and saved["threshold"] == 0.9
    with pytest.raises(ValueError, match="threshold"):
        evaluate_model(oracle_tiles, synth_small / "test.json", threshold=1.5)
    with pytest.raises(ValueError, match="below min_score"):
        evaluate_model(oracle_tiles, synth_small / "test.json", threshold=0.05, min_score=0.1)
    fast = evaluate_model(oracle_tiles, synth_small / "test.json", min_score=0.2)
    assert fast["min_score"] == 0.2 and fast["operating"] == lo["operating"]  # same above 0.2


def test_compare_two_models(oracle_tiles, synth_small, tmp_path):
    worse = oracle_for_tiles(synth_small / "test.json", seed=1, miss=0.5, false_alarms=3.0)
    r = run_evaluation([oracle_tiles, worse], data=synth_small / "test.json", out=tmp_path / "cmp.json")
    a, b = r["models"]
    c = r["comparison"]
    assert c["mAP50"] == {"a": a["mAP50"], "b": b["mAP50"], "diff": pytest.approx(b["mAP50"] - a["mAP50"])}
    assert c["mAP50"]["diff"] < 0 and c["fp"]["diff"] > 0
    assert c["per_class.bunker.AP50"]["a"] == a["per_class"]["bunker"]["AP50"]
    saved = json.loads((tmp_path / "cmp.json").read_text())
    assert len(saved["models"]) == 2 and "mAP50" in saved["comparison"]
    assert compare_metrics(a, a)["recall"]["diff"] == 0


def test_errors_name_the_file(oracle_tiles, synth_small, tmp_path):
    with pytest.raises(ValueError, match="either --data"):
        run_evaluation([oracle_tiles])
    with pytest.raises(ValueError, match="needs --labels"):
        run_evaluation([oracle_tiles], scene=synth_small / "scene.tif")
    with pytest.raises(ValueError, match="one model, or two"):
        run_evaluation([oracle_tiles] * 3, data=synth_small / "test.json")
    doc = json.loads((synth_small / "test.json").read_text())
    doc["categories"].append({"id": 99, "name": "silo"})
    for im in doc["images"]:
        im["file_name"] = str(synth_small / im["file_name"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"bad\.json.*'silo'.*model's classes"):
        evaluate_model(oracle_tiles, bad)


def _cli(argv):
    import argparse

    from detector.evaluate_cli import add_evaluate_command

    p = argparse.ArgumentParser(prog="revet")
    add_evaluate_command(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(argv)
    return a.func(a)


def test_cli_tiles_and_compare(oracle_tiles, synth_small, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Detector, "load", classmethod(lambda cls, path, **kw: oracle_tiles))
    assert _cli(["evaluate", "a.onnx", "--data", str(synth_small / "test.json"), "--threshold", "0.5",
                 "--out", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "mAP@0.5" in out and "at score >= 0.500" in out and "best F1" in out and "shelter" in out
    assert json.loads((tmp_path / "m.json").read_text())["model"] == "a.onnx"
    assert _cli(["evaluate", "a.onnx", "b.onnx", "--data", str(synth_small / "test.json")]) == 0
    out = capsys.readouterr().out
    assert "B - A" in out and "per_class.revetment.AP50" in out


# -- a real model (slow): the .onnx and the .ckpt give the same numbers, the .onnx without torch

@pytest.fixture(scope="session")
def real_model(synth_small, tmp_path_factory):
    pytest.importorskip("torch")
    from detector.export.onnx_export import export_checkpoint
    from detector.train.fit import TrainConfig, train

    run = tmp_path_factory.mktemp("eval_run")
    cfg = TrainConfig(train=str(synth_small / "train.json"), val=str(synth_small / "val.json"), out=str(run),
                      epochs=1, batch_size=8, crop=256, num_workers=0, warmup_steps=2)
    ckpt = train(cfg)
    onnx_path = run / "model.onnx"
    export_checkpoint(ckpt, onnx_path)
    return ckpt, onnx_path


@pytest.mark.slow
def test_real_model_onnx_equals_ckpt_and_cli_is_torch_free(real_model, synth_small, tmp_path):
    ckpt, onnx_path = real_model
    m_onnx = evaluate_model(onnx_path, synth_small / "test.json", threshold=0.05)
    m_ckpt = evaluate_model(ckpt, synth_small / "test.json", threshold=0.05)
    for k in ("mAP50", "mAP50_95"):
        assert m_onnx[k] == pytest.approx(m_ckpt[k], abs=1e-3)
    assert m_onnx["operating"]["tp"] == m_ckpt["operating"]["tp"]
    code = ("import sys, argparse\n"
            "from detector.evaluate_cli import add_evaluate_command\n"
            "p = argparse.ArgumentParser(); add_evaluate_command(p.add_subparsers(dest='c'))\n"
            "a = p.parse_args(sys.argv[1:]); rc = a.func(a)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", code, "evaluate", str(onnx_path), "--scene",
                        str(synth_small / "scene.tif"), "--labels", str(synth_small / "scene.geojson"),
                        "--report", str(tmp_path / "rep"), "--out", str(tmp_path / "s.json")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["mode"] == "scene" and (tmp_path / "rep" / "index.html").exists()


def test_evaluation_modules_import_without_torch():
    code = ("import sys\n"
            "import detector.evaluate, detector.scene_eval, detector.report, detector.evaluate_cli, detector.metrics\n"
            "bad = [m for m in ('torch', 'torchvision', 'lightning', 'matplotlib') if m in sys.modules]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
