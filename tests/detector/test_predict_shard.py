"""``revet predict --shard K/N`` (detector/predict.py): job arrays without Ray. Each shard takes a
deterministic share of the inputs, writes only its own files (per-scene outputs, its own
journal, job, summary and lock), never deletes another's temporary files, and two shards run at
once into one folder leave exactly the single run's outputs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from scoring_models import write_peak_model, write_scene  # noqa: E402
from test_predict_batch import outputs_of  # noqa: E402

from detector.outputs import temp_name, temp_owner  # noqa: E402
from detector.predict import (collect_scenes, parse_shard, predict_files, read_journal, shard_scenes,  # noqa: E402
                              state_files)
from detector.predict_cli import main  # noqa: E402

ALL = "geojson,gpkg,csv,coco"


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    d = tmp_path_factory.mktemp("shard")
    model = write_peak_model(d / "peaks.onnx")
    scenes = [str(write_scene(d / f"s{i}.tif", 512 + 64 * i, seed=i)) for i in range(5)]
    (d / "broken.tif").write_bytes(np.random.default_rng(1).bytes(3000))
    scenes.insert(2, str(d / "broken.tif"))
    ref = d / "single"
    summary = predict_files(model, scenes, ref, formats=ALL)
    assert summary["scored"] == 5 and len(summary["failed"]) == 1
    return model, scenes, ref


def _state(name: str) -> bool:
    """A job's own bookkeeping (journal, job, summary, locks), not one of its outputs."""
    return name.startswith(".revet.") or name.split(".")[0] in ("job", "journal", "summary")


def test_two_shards_at_once_write_the_single_runs_outputs(job, tmp_path):
    model, scenes, ref = job
    out = tmp_path / "out"
    out.mkdir()
    # another machine's in-flight file, whose process cannot be checked from here: left alone
    foreign = out / ".tmp.1@elsewhere-node.s0.geojson"
    foreign.write_text("{}")
    cmd = [sys.executable, "-m", "detector.predict_cli", "predict", str(model), *scenes, "--out", str(out),
           "--format", ALL, "--no-progress", "--shard"]
    procs = [subprocess.Popen(cmd + [f"{k}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in (1, 2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    # the broken input is shard 1's (input 3 of 6): it exits 2, shard 2 exits 0
    assert [r[2] for r in results] == [2, 0], results
    foreign.unlink()
    a = {k: v for k, v in outputs_of(ref).items() if not _state(k)}
    b = {k: v for k, v in outputs_of(out).items() if not _state(k)}
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], f"{name} differs from the single run's"
    assert {"coco_results.json", "all_detections.csv"} <= set(b)
    # each shard journalled exactly its share, and has its own state files
    all_scenes = collect_scenes(scenes)[0]
    for k in (1, 2):
        names = state_files((k, 2))
        share = shard_scenes(all_scenes, k, 2)
        assert sorted(read_journal(out / names["journal"])) == sorted(
            os.path.abspath(s.path) for s in share if not s.path.name.startswith("broken"))
        summ = json.loads((out / names["summary"]).read_text())
        assert summ["shard"] == f"{k}/2" and summ["inputs"] == len(share) and summ["job_inputs"] == len(scenes)
        assert json.loads((out / names["job"]).read_text())["shard"] == f"{k}/2"
    assert not (out / "journal.jsonl").exists() and not (out / "summary.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp.")]

    # a shard resumed has nothing to redo and keeps the job-wide files
    again = predict_files(model, scenes, out, formats=ALL, shard="2/2", resume=True)
    assert again["scored"] == 0 and again["resumed"] == len(shard_scenes(all_scenes, 2, 2))
    assert again["combined"] is True


def test_a_shard_leaves_live_and_foreign_temporary_files(job, tmp_path):
    """A shard's start removes only this machine's temporary files of processes that are gone."""
    model, scenes, _ = job
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    shard1 = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # another shard, running
    try:
        here = temp_name("x").split("@", 1)[1].split(".", 1)[0]
        live = out / f".tmp.{shard1.pid}@{here}.s0.geojson"          # its in-flight file
        mine_dead = out / f".tmp.{dead}@{here}.s2.geojson"           # a killed run's, on this machine
        old_form = out / f".tmp.{dead}.s3.geojson"                   # written before hosts were recorded
        foreign = out / f".tmp.{dead}@another-host.s4.geojson"       # a dead pid here may be live there
        for p in (live, mine_dead, old_form, foreign):
            p.write_text("{}")
        s = predict_files(model, scenes[:2], out, formats="geojson", shard="2/2")
        assert s["scored"] == 1 and s["combined"] is False  # shard 1 has not run: no job-wide files yet
        assert live.exists() and foreign.exists()
    finally:
        shard1.kill()
        shard1.wait()
    assert not mine_dead.exists() and not old_form.exists()
    assert not (out / "coco_results.json").exists()
    assert temp_owner(temp_name("a.b.gpkg"))[0] == os.getpid() and temp_owner("scene.tif") is None


def test_shard_arguments(job, tmp_path, capsys):
    model, scenes, _ = job
    assert parse_shard("3/4") == (3, 4) and parse_shard(None) is None and parse_shard((1, 1)) == (1, 1)
    for bad in ("0/2", "3/2", "a/b", "2"):
        with pytest.raises(ValueError, match="--shard: expected K/N"):
            parse_shard(bad)
    shares = [shard_scenes(list(range(10)), k, 3) for k in (1, 2, 3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert main(["predict", str(model), scenes[0], "--out", str(tmp_path / "x.geojson"), "--shard", "1/2"]) == 1
    assert "--shard needs a folder as --out" in capsys.readouterr().err
    from detector.cli_args import EXIT_USAGE

    with pytest.raises(SystemExit) as e:
        main(["predict", str(model), scenes[0], "--out", str(tmp_path / "o"), "--shard", "5/4"])
    assert e.value.code == EXIT_USAGE
    assert "--shard: expected K/N with 1 <= K <= N, got 5/4" in capsys.readouterr().err
