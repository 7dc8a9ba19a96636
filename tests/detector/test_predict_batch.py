"""Batch jobs: resumable after a kill, bad inputs skipped and named, COCO ids carried, manifests.

The model is a tiny hand-written ONNX graph with a real Revet spec (fixed boxes per tile, scores
from the tile's mean brightness), so these tests need no training and no torch, and their
outputs are deterministic; the trained-model path is covered by tests/test_end_to_end.py.
"""
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from detector.predict import Progress, collect_scenes, predict_files, read_journal
from detector.predict_cli import add_predict_command, main
from detector.spec import SPEC_KEY, ModelSpec

onnx = pytest.importorskip("onnx")

FAKE_BOXES = ((20, 20, 60, 50), (100, 120, 160, 200), (200, 30, 250, 90))


def write_fake_model(path: Path, *, tile: int = 256) -> Path:
    """(B, 3, T, T) raw pixels -> 3 fixed boxes per tile, labels 0, 1, 2, scores
    ``sigmoid(4 * mean / 255 - 1) * (1, 0.75, 0.5)``."""
    from onnx import TensorProto, helper, numpy_helper

    k = len(FAKE_BOXES)
    consts = {"axes": np.array([1, 2, 3], np.int64), "shp": np.array([-1, 1], np.int64),
              "gain": np.array(4 / 255, np.float32), "one": np.array(1.0, np.float32),
              "w": np.linspace(1.0, 0.5, k).astype(np.float32), "B": np.array(FAKE_BOXES, np.float32)[None],
              "L": (np.arange(k) % 3).astype(np.int64)[None], "s0": np.array([0], np.int64),
              "s1": np.array([1], np.int64), "bk": np.array([k, 4], np.int64), "lk": np.array([k], np.int64)}
    node = helper.make_node
    nodes = [node("ReduceMean", ["image", "axes"], ["m"], keepdims=1), node("Reshape", ["m", "shp"], ["m2"]),
             node("Mul", ["m2", "gain"], ["g"]), node("Sub", ["g", "one"], ["z"]), node("Sigmoid", ["z"], ["sg"]),
             node("Mul", ["sg", "w"], ["scores"]), node("Shape", ["image"], ["sh"]),
             node("Slice", ["sh", "s0", "s1"], ["b"]), node("Concat", ["b", "bk"], ["bs"], axis=0),
             node("Concat", ["b", "lk"], ["ls"], axis=0), node("Expand", ["B", "bs"], ["boxes"]),
             node("Expand", ["L", "ls"], ["labels"])]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "fake", [vi("image", TensorProto.FLOAT, ["batch", 3, tile, tile])],
        [vi("boxes", TensorProto.FLOAT, ["batch", k, 4]), vi("scores", TensorProto.FLOAT, ["batch", k]),
         vi("labels", TensorProto.INT64, ["batch", k])],
        [numpy_helper.from_array(v, n) for n, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    entry = model.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, ModelSpec(tile_size=tile, overlap=32, arch="fake").to_json()
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def fake_model(tmp_path_factory):
    return write_fake_model(tmp_path_factory.mktemp("model") / "fake.onnx")


@pytest.fixture(scope="session")
def scenes(synth_small):
    """Eight 512-px GeoTIFF tiles and one 1024-px scene, as absolute path strings."""
    return sorted(str(p) for p in (synth_small / "test").glob("*.tif")) + [str(synth_small / "scene.tif")]


ALL = "geojson,gpkg,csv,coco"
STATE = {"job.json", "journal.jsonl", "summary.json"}


def outputs_of(folder: Path, ignore=("scored_at",)) -> dict[str, object]:
    """Every output file in ``folder`` -> comparable content (GeoPackages read back; GeoJSON
    without the provenance keys ``ignore``: the time scored, by default)."""
    import pyogrio.raw

    got = {}
    for p in sorted(folder.iterdir()):
        if p.name in STATE:
            continue
        if p.suffix == ".gpkg":
            meta, _, geoms, fields = pyogrio.raw.read(p)
            got[p.name] = (meta["crs"], [bytes(g) for g in geoms], [list(f) for f in fields])
        elif p.suffix == ".geojson":  # the same, but for the time each scene was scored
            doc = json.loads(p.read_text())
            for m in doc.get("revet", {}).get("scenes", []):
                for k in ignore:
                    assert m["provenance"].pop(k)
            got[p.name] = doc
        else:
            got[p.name] = p.read_bytes()
    return got


SLOW_RUN = ("import sys, time\n"
            "import detector.runner as r\n"
            "orig = r.Detector.predict_scene\n"
            "def slow(self, *a, **k):\n"
            "    time.sleep(float(sys.argv[1]))\n"
            "    return orig(self, *a, **k)\n"
            "r.Detector.predict_scene = slow\n"
            "from detector.predict_cli import main\n"
            "rc = main(sys.argv[2:])\n"
            "assert 'torch' not in sys.modules, 'the scoring side imported torch'\n"
            "sys.exit(rc)\n")


def test_killed_job_resumes_to_the_same_outputs(fake_model, scenes, tmp_path):
    ref, job = tmp_path / "ref", tmp_path / "job"
    full = predict_files(fake_model, scenes, ref, formats=ALL, min_score=0.01)
    assert full["scored"] == len(scenes) and not full["failed"] and full["complete"]

    # a fixed moment by default (reproducible); REVET_KILL_SEED=N tries others
    seed = int(os.environ.get("REVET_KILL_SEED", "20261204"))
    rng = random.Random(seed)
    cmd = [sys.executable, "-c", SLOW_RUN, "0.4", "predict", str(fake_model), *scenes, "--out", str(job),
           "--format", ALL, "--min-score", "0.01", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not read_journal(job / "journal.jsonl"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no scene finished in 120 s"
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.6))  # a random moment after the first scene
    finally:
        proc.kill()
        proc.communicate()
    done_before = len(read_journal(job / "journal.jsonl"))
    assert 1 <= done_before < len(scenes), f"seed {seed}: the kill came too late to test anything"
    assert not (job / "summary.json").exists()
    # what the killed run left is whole: every GeoJSON there parses
    for p in job.glob("*.geojson"):
        json.loads(p.read_text())

    rc = main(["predict", str(fake_model), *scenes, "--out", str(job), "--format", ALL, "--min-score", "0.01",
               "--resume", "--no-progress"])
    assert rc == 0
    summary = json.loads((job / "summary.json").read_text())
    assert summary["resumed"] == done_before and summary["scored"] == len(scenes) - done_before
    assert summary["detections"] == full["detections"] and summary["complete"]

    a, b = outputs_of(ref), outputs_of(job)
    assert sorted(a) == sorted(b), f"seed {seed}"
    for name in a:
        assert a[name] == b[name], f"seed {seed}: {name} differs"
    assert not [p for p in job.iterdir() if p.name.startswith(".tmp.")]
    journal = [e for e in (json.loads(line) for line in (job / "journal.jsonl").read_text().splitlines()
                           if line.strip()) if "key" in e]  # less the header line
    assert sorted(e["key"] for e in journal) == sorted(os.path.abspath(s) for s in scenes)  # no duplicates
    res = json.loads((job / "coco_results.json").read_text())
    keys = [(r["image_id"], r["category_id"], tuple(r["bbox"])) for r in res]
    assert len(keys) == len(set(keys)) == full["detections"]
    assert {r["image_id"] for r in res} == set(range(1, len(scenes) + 1))

    # a second resume has nothing left to do
    again = predict_files(fake_model, scenes, job, formats=ALL, min_score=0.01, resume=True)
    assert again["scored"] == 0 and again["resumed"] == len(scenes)


def test_unreadable_inputs_are_skipped_and_named(fake_model, scenes, tmp_path, caplog):
    good = [Path(s) for s in scenes[:2]]
    d = tmp_path / "in"
    d.mkdir()
    for g in good:
        shutil.copy(g, d / g.name)
    (d / "corrupt.tif").write_bytes(os.urandom(5000))
    (d / "empty.tif").write_bytes(b"")
    with rasterio.open(d / "oneband.tif", "w", driver="GTiff", width=300, height=300, count=1, dtype="uint8") as ds:
        ds.write(np.full((1, 300, 300), 90, np.uint8))
    shutil.copy(good[0], d / "truncated.tif")
    os.truncate(d / "truncated.tif", os.path.getsize(d / "truncated.tif") // 2)
    bad = ["corrupt.tif", "empty.tif", "oneband.tif", "truncated.tif"]
    out = tmp_path / "out"

    with caplog.at_level(logging.ERROR, logger="revet.predict"):
        rc = main(["predict", str(fake_model), str(d), str(d / "missing.tif"), "--out", str(out),
                   "--format", "geojson,csv", "--min-score", "0.01", "--no-progress"])
    assert rc == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    for name in bad + ["missing.tif"]:
        assert any(str(d / name) in m for m in errors), f"no error naming {name}: {errors}"
    assert any("band" in m for m in errors if "oneband" in m)
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(Path(f["path"]).name for f in summary["failed"]) == sorted(bad + ["missing.tif"])
    assert summary["scored"] == 2 and summary["complete"]
    for g in good:
        fc = json.loads((out / f"{g.stem}.geojson").read_text())
        assert len(fc["features"]) > 0
    assert {p.stem for p in out.glob("*.geojson")} == {g.stem for g in good}
    assert len(read_journal(out / "journal.jsonl")) == 2

    # resuming retries the failures (still bad) and skips the good ones
    again = predict_files(fake_model, [str(d)], out, formats="geojson,csv", min_score=0.01, resume=True)
    assert again["resumed"] == 2 and again["scored"] == 0 and len(again["failed"]) == 4


def test_coco_dataset_input_carries_its_ids(fake_model, synth_small, tmp_path):
    src = json.loads((synth_small / "test.json").read_text())
    new_cat = {"bunker": 7, "revetment": 3, "shelter": 11}
    old_names = {c["id"]: c["name"] for c in src["categories"]}
    img_ids = {im["id"]: 100 + 7 * i for i, im in enumerate(src["images"])}
    data = {
        "images": [{**im, "id": img_ids[im["id"]], "file_name": str(synth_small / im["file_name"])}
                   for im in src["images"][:4]],
        "annotations": [{**a, "image_id": img_ids[a["image_id"]], "category_id": new_cat[old_names[a["category_id"]]]}
                        for a in src["annotations"] if a["image_id"] in list(img_ids)[:4]],
        "categories": [{"id": 1, "name": "decoy"}] + [{"id": v, "name": k} for k, v in new_cat.items()][::-1],
    }
    coco = tmp_path / "data" / "subset.json"
    coco.parent.mkdir()
    coco.write_text(json.dumps(data))
    out = tmp_path / "out"
    summary = predict_files(fake_model, [str(coco)], out, formats="coco,geojson", min_score=0.01)
    assert summary["category_ids"] == new_cat and not summary["failed"]
    res = json.loads((out / "coco_results.json").read_text())
    assert {r["image_id"] for r in res} == {im["id"] for im in data["images"]}
    assert {r["category_id"] for r in res} == set(new_cat.values())
    for im in data["images"]:
        stem = Path(im["file_name"]).stem
        per = json.loads((out / f"{stem}.coco.json").read_text())
        feats = json.loads((out / f"{stem}.geojson").read_text())["features"]
        assert len(per) == len(feats) > 0 and all(r["image_id"] == im["id"] for r in per)
        for r, f in zip(per, feats):  # same order: the category id is the class's, by name
            assert r["category_id"] == new_cat[f["properties"]["class"]]
            x1, y1, x2, y2 = f["properties"]["pixel_box"]
            np.testing.assert_allclose(r["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=0.02)

    # single-file mode: one COCO results file for the dataset
    one = tmp_path / "results.json"
    predict_files(fake_model, [str(coco)], one, min_score=0.01)
    assert sorted(map(json.dumps, json.loads(one.read_text()))) == sorted(map(json.dumps, res))


def test_manifest_relative_paths_and_unique_names(fake_model, scenes, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / "lists" / sub).mkdir(parents=True)
        shutil.copy(scenes[0], tmp_path / "lists" / sub / "tile.tif")
    manifest = tmp_path / "lists" / "job.txt"
    manifest.write_text("# two files with the same stem, one twice\na/tile.tif\n\nb/tile.tif\n./a/tile.tif\n"
                        f"{scenes[1]}\n")
    found, cats = collect_scenes([str(manifest)])
    assert [s.name for s in found] == ["tile", "tile-2", Path(scenes[1]).stem] and not cats
    assert [s.image_id for s in found] == [1, 2, 3]
    out = tmp_path / "out"
    summary = predict_files(fake_model, [str(manifest)], out, formats="geojson")
    assert summary["scored"] == 3
    assert sorted(p.name for p in out.glob("*.geojson")) == sorted(["tile.geojson", "tile-2.geojson",
                                                                    Path(scenes[1]).stem + ".geojson"])
    a = json.loads((out / "tile.geojson").read_text())["features"]
    b = json.loads((out / "tile-2.geojson").read_text())["features"]
    assert a[0]["properties"]["source"].endswith(os.path.join("a", "tile.tif"))
    assert b[0]["properties"]["source"].endswith(os.path.join("b", "tile.tif"))


def test_single_file_mode_and_its_rules(fake_model, scenes, tmp_path):
    import pyogrio.raw

    out = tmp_path / "all.gpkg"
    summary = predict_files(fake_model, scenes[:2], out, min_score=0.01)
    assert summary["mode"] == "file" and summary["formats"] == ["gpkg"]
    meta, _, geoms, fields = pyogrio.raw.read(out, layer="detections")
    sources = set(fields[list(meta["fields"]).index("source")])
    assert sources == set(scenes[:2]) and len(geoms) == summary["detections"]
    with rasterio.open(scenes[0]) as ds:
        assert rasterio.crs.CRS.from_user_input(meta["crs"]) == ds.crs
    # the output and its QGIS style sidecar, no temporary files left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.gpkg", "all.qml"]
    assert main(["predict", str(fake_model), scenes[0], "--out", str(tmp_path / "x.geojson"), "--resume"]) == 1
    with pytest.raises(ValueError, match="formats"):
        predict_files(fake_model, scenes[:1], tmp_path / "x.csv", formats="geojson")


def test_resume_refuses_a_changed_job(fake_model, scenes, tmp_path):
    out = tmp_path / "out"
    predict_files(fake_model, scenes[:1], out, min_score=0.2)
    with pytest.raises(ValueError, match="min_score"):
        predict_files(fake_model, scenes[:1], out, min_score=0.5, resume=True)
    # asking for a new format on resume rescores only for the missing outputs
    s = predict_files(fake_model, scenes[:1], out, min_score=0.2, resume=True, formats="geojson,csv",
                      quicklook=True)
    assert s["scored"] == 1 and (out / (Path(scenes[0]).stem + ".quicklook.png")).is_file()


def test_progress_line_has_rate_and_eta():
    import io

    buf = io.StringIO()
    p = Progress(10, skipped=4, stream=buf, every=0.0)
    p.t0 -= 2.0
    p.update(2, "x.tif")
    p.update(6, "y.tif")
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("[6/10] 60%") and "ETA 0:00:04" in lines[0] and "x.tif" in lines[0]
    assert lines[1].startswith("[10/10] 100%") and "ETA 0:00:00" in lines[1]


def test_cli_options_and_torch_free_import():
    import argparse

    p = argparse.ArgumentParser()
    add_predict_command(p.add_subparsers(dest="command"))
    a = p.parse_args(["predict", "m.onnx", "a.tif", "b/", "--out", "o", "--format", "gpkg,csv", "--resume",
                      "--threads", "2", "--quicklook", "--device", "cpu", "--min-score", "0.2",
                      "--overlap", "16", "--batch-size", "4"])
    assert (a.formats, a.resume, a.threads, a.quicklook, a.device, a.min_score, a.overlap, a.batch_size) == \
        ("gpkg,csv", True, 2, True, "cpu", 0.2, 16, 4)
    code = ("import sys\n"
            "import detector.predict, detector.predict_cli, detector.outputs, detector.quicklook\n"
            "bad = [m for m in ('torch', 'torchvision', 'lightning') if m in sys.modules]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_two_jobs_into_one_folder_both_finish_intact(fake_model, scenes, tmp_path, caplog):
    """#15.8: a job into a folder another job holds waits for it (instead of resetting its
    journal); a start deletes only temporary files of processes that are gone."""
    import threading

    from detector.outputs import folder_lock

    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale, live = out / f".tmp.{dead}.old.geojson", out / f".tmp.{os.getpid()}.inflight.geojson"
    stale.write_text("{}"), live.write_text("{}")
    first, second = scenes[:4], scenes[4:8]
    results = {}

    def job(name, inputs):
        results[name] = predict_files(fake_model, inputs, out, formats="geojson")

    with caplog.at_level(logging.WARNING, logger="revet.outputs"):
        with folder_lock(out):                          # the first job, mid-run
            b = threading.Thread(target=job, args=("b", second))
            b.start()
            time.sleep(1.0)
            assert "b" not in results and b.is_alive()  # waits, has not touched the folder
            assert live.exists() and stale.exists()
        b.join(120)
        job("a", first)                                 # the next job: b's files stay
    assert results["a"]["complete"] and results["b"]["complete"]
    assert results["a"]["scored"] == 4 and results["b"]["scored"] == 4
    names = {Path(p).stem for p in first + second}
    assert {p.name.removesuffix(".geojson") for p in out.glob("*.geojson")} >= names
    for p in out.glob("*.geojson"):
        json.loads(p.read_text())                       # every output whole
    assert not stale.exists() and live.exists()          # only the dead process's temp removed
    assert any("waiting for it to finish" in r.message for r in caplog.records)


@pytest.mark.parametrize("argv, message", [
    (["--min-score", "2"], "--min-score: expected a number in [0, 1], got 2.0"),
    (["--min-score", "nan"], "--min-score: expected a number in [0, 1], got nan"),
    (["--overlap", "300"], "--overlap: expected 0 <= overlap < 256 pixels"),
    (["--overlap", "-5"], "--overlap: expected 0 <= overlap < 256 pixels"),
    (["--threads", "-1"], "--threads: expected at least 1"),
    (["--batch-size", "0"], "--batch-size: expected at least 1"),
])
def test_out_of_range_options_refused_before_any_scene(fake_model, scenes, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    rc = main(["predict", str(fake_model), scenes[0], "--out", str(out), "--no-progress", *argv])
    assert rc == 1
    assert message in capsys.readouterr().err
    assert not (out / "journal.jsonl").exists()


def test_nothing_to_score_is_an_error_and_literal_names_win(fake_model, scenes, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for inputs in ([str(empty)], [str(tmp_path / "*.tif")]):
        assert main(["predict", str(fake_model), *inputs, "--out", str(tmp_path / "o"), "--no-progress"]) == 1
        assert "no images to score" in capsys.readouterr().err
    literal = tmp_path / "a[1].tif"                   # a real file whose name looks like a glob
    shutil.copy(scenes[0], literal)
    rc = main(["predict", str(fake_model), str(literal), "--out", str(tmp_path / "lit"), "--no-progress"])
    assert rc == 0
    assert json.loads((tmp_path / "lit" / "summary.json").read_text())["scored"] == 1


def test_usage_errors_have_their_own_exit_status(fake_model, tmp_path):
    from detector.cli_args import EXIT_USAGE

    r = subprocess.run([sys.executable, "-m", "detector.cli", "predict", str(fake_model)], capture_output=True, text=True)
    assert r.returncode == EXIT_USAGE != 2 and "the following arguments are required" in r.stderr


def test_unwritable_out_refused_before_scoring(fake_model, scenes, tmp_path, capsys, monkeypatch):
    """#15.11: an --out that cannot be written fails at once, naming it, before any scene is scored
    (/proc refuses new entries even to root, like a read-only mount)."""
    from detector.runner import Detector as D

    scored = []
    real = D.predict_scene
    monkeypatch.setattr(D, "predict_scene", lambda self, *a, **k: scored.append(a) or real(self, *a, **k))
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    for out, message in [(a_file, "is an existing file"), (Path("/proc/revet-test/d.geojson"), "cannot write results here"),
                         (Path("/proc/revet-test/folder"), "cannot write results here")]:
        rc = main(["predict", str(fake_model), *scenes, "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 1 and message in err and str(out) in err, err
    assert scored == []


def test_outputs_carry_qgis_styles(fake_model, scenes, tmp_path):
    """#14.2: every GeoJSON/GeoPackage detection output opens coloured by class in QGIS: a .qml
    sidecar, and the style inside the GeoPackage (layer_styles, default)."""
    import sqlite3

    out = tmp_path / "out"
    predict_files(fake_model, scenes[:1], out, formats="geojson,gpkg", min_score=0.01)
    name = Path(scenes[0]).stem
    qml = (out / f"{name}.qml").read_text()
    assert 'attr="class"' in qml and all(f'value="{c}"' in qml for c in ("bunker", "revetment", "shelter"))
    con = sqlite3.connect(out / f"{name}.gpkg")
    rows = con.execute("SELECT f_table_name, useAsDefault, styleQML FROM layer_styles").fetchall()
    con.close()
    assert len(rows) == 1 and rows[0][0] == "detections" and rows[0][1] == 1 and rows[0][2] == qml
    single = tmp_path / "all.gpkg"
    predict_files(fake_model, scenes[:2], single, min_score=0.01)
    assert (tmp_path / "all.qml").exists()


def test_progress_line_has_megapixels_rate_and_stages():
    """#12: megapixels done and MP/s, seconds per stage, and an ETA from megapixels once the
    job's total is known (the Ray engine knows it after planning)."""
    import io

    buf = io.StringIO()
    p = Progress(4, stream=buf, every=0.0)
    p.t0 -= 10.0
    p.update(1, "a.tif", megapixels=20.0, stages={"read": 1.5, "infer": 7.25, "merge": 0.1})
    p.total_megapixels = 100.0
    p.update(2, "b.tif", megapixels=50.0)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("[1/4] 25%") and " 20.0 MP 2.00 MP/s " in lines[0]
    assert "ETA 0:00:30" in lines[0] and "read 1.5s infer 7.2s merge 0.1s a.tif" in lines[0]
    assert " 5.00 MP/s " in lines[1] and "ETA 0:00:10" in lines[1]  # 50 MP left at 5 MP/s


def _scene(path: Path, value: int, size: int = 256) -> str:
    """A north-up UTM GeoTIFF of one brightness (the fake model's scores follow it)."""
    from affine import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32637", transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)) as d:
        d.write(np.full((3, size, size), value, np.uint8))
    return str(path)


def _sources(geojson: Path) -> set[str]:
    return {f["properties"]["source"] for f in json.loads(geojson.read_text())["features"]}


def test_resume_never_skips_a_scene_whose_output_holds_another_scenes(fake_model, tmp_path, caplog):
    """Output names are handed out by input order: two ``scene.tif`` in different folders swap
    ``scene.geojson`` between runs with other input lists. The journal's output hashes and
    source fingerprints catch it: the scene is re-scored, with a log line saying why. The scenes
    are flat (the fake model's scores follow their brightness), which the first pass rightly
    skips: skip=False."""
    a, b = _scene(tmp_path / "a" / "scene.tif", 60), _scene(tmp_path / "b" / "scene.tif", 200)
    out = tmp_path / "out"
    predict_files(fake_model, [a, b], out, min_score=0.01, skip=False)            # a -> scene, b -> scene-2
    assert _sources(out / "scene.geojson") == {a} and _sources(out / "scene-2.geojson") == {b}
    s = predict_files(fake_model, [b], out, min_score=0.01, resume=True, skip=False)  # b -> scene: overwrites a's file
    assert s["scored"] == 1 and _sources(out / "scene.geojson") == {b}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="revet.predict"):
        s = predict_files(fake_model, [a, b], out, min_score=0.01, resume=True, skip=False)
    # a's journal line names scene.geojson, which now holds b's detections: a is scored again
    assert s["resumed"] == 0 and s["scored"] == 2, s
    assert _sources(out / "scene.geojson") == {a} and _sources(out / "scene-2.geojson") == {b}
    assert any("re-scoring" in r.message and a in r.message and "SHA-256" in r.message for r in caplog.records)
    entry = read_journal(out / "journal.jsonl")[os.path.abspath(a)]
    assert entry["source_id"]["path"] == str(Path(a).resolve()) and set(entry["sha256"]) == {"geojson"}
    # an unchanged job resumes everything; a source rewritten in place is scored again
    assert predict_files(fake_model, [a, b], out, min_score=0.01, resume=True, skip=False)["resumed"] == 2
    _scene(Path(b), 120, size=320)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="revet.predict"):
        s = predict_files(fake_model, [a, b], out, min_score=0.01, resume=True, skip=False)
    assert s["resumed"] == 1 and s["scored"] == 1
    assert any("re-scoring" in r.message and b in r.message and "source changed" in r.message
               for r in caplog.records)


def test_outputs_and_journal_are_fsynced_before_their_rename(fake_model, scenes, tmp_path, monkeypatch):
    """Every output and state file reaches the disk before its name does (fsync of the
    temporary file, then ``os.replace``), and a job whose every scene fails leaves a journal
    that is not a zero-byte file."""
    synced, order = set(), []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.add(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def replace(src, dst):
        order.append((os.fspath(src), os.path.abspath(src) in synced, os.fspath(dst)))
        return real_replace(src, dst)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to name an fsynced descriptor")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "out"
    predict_files(fake_model, scenes[:1], out, formats="geojson,gpkg,csv,coco", min_score=0.01)
    renamed = {Path(dst).name: ok for _, ok, dst in order}
    assert {"job.json", "journal.jsonl", "summary.json", "coco_results.json", "all_detections.csv"} <= set(renamed)
    assert all(renamed.values()), [name for name, ok in renamed.items() if not ok]
    assert str(out.resolve()) in synced  # the folder too: the renames themselves
    monkeypatch.undo()

    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage")
    s = predict_files(fake_model, [str(bad)], tmp_path / "out2", min_score=0.01)
    assert len(s["failed"]) == 1
    journal = tmp_path / "out2" / "journal.jsonl"
    assert journal.stat().st_size > 0 and read_journal(journal) == {}


def _sparse(path: Path, size: int, *, block: int = 4096, data_at=None) -> str:
    """A tiled GeoTIFF of ``size`` x ``size`` px whose blocks are never written (sparse), except
    one block of brightness 150 at ``data_at`` (col, row of its corner, pixels) if given."""
    from affine import Affine
    from rasterio.windows import Window

    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True,
                       blockxsize=block, blockysize=block, sparse_ok=True, crs="EPSG:32637",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)) as d:
        if data_at is not None:
            d.write(np.full((3, block, block), 150, np.uint8), window=Window(*data_at, block, block))
    return str(path)


def test_huge_header_refused_before_any_window(fake_model, tmp_path, capsys):
    """A header claiming 10^6 x 10^6 px (no blocks written) is refused from the header, with its
    size, window count and the flag that raises the limit, instead of facing ~20 M windows."""
    huge = _sparse(tmp_path / "huge.tif", 10**6)
    t0 = time.monotonic()
    rc = main(["predict", str(fake_model), huge, "--out", str(tmp_path / "o"), "--no-progress"])
    assert time.monotonic() - t0 < 60 and rc == 2
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    (err,) = [f["error"] for f in summary["failed"]]
    assert huge in err and "1,000,000 x 1,000,000 pixels (1,000,000 MP, about" in err
    assert "windows) is above the limit of 20,000 MP" in err and "--max-megapixels 1000000" in err
    assert not list((tmp_path / "o").glob("huge*.geojson"))
    # the limit is the flag's: a 9 MP scene is refused under 5 MP and scored under 10
    mid = _sparse(tmp_path / "mid.tif", 3000, block=256, data_at=(512, 512))
    s = predict_files(fake_model, [mid], tmp_path / "o5", min_score=0.01, max_megapixels=5)
    assert "above the limit of 5 MP" in s["failed"][0]["error"]
    rc = main(["predict", str(fake_model), mid, "--out", str(tmp_path / "o10"), "--min-score", "0.01",
               "--max-megapixels", "10", "--no-progress"])
    assert rc == 0
    # windows on blocks never written are skipped unread: only those over the one written block score
    s = json.loads((tmp_path / "o10" / "summary.json").read_text())
    assert 0 < s["detections"] < 3 * s["tiles"]
    assert main(["predict", str(fake_model), mid, "--out", str(tmp_path / "ox"), "--max-megapixels", "-1"]) == 1
    assert "--max-megapixels: expected a positive number" in capsys.readouterr().err
