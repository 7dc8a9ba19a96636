"""The Ray engine (detector/engine_ray.py): the single process's detections whatever the number
of actors, a Detector actor killed by its PID survived, a killed job finished by --resume,
unreadable scenes named.

Real Ray (one local instance for the module, 2 CPUs), real GeoTIFFs, real ONNX Runtime: the
peak model of scoring_models.py, whose boxes depend on the pixels, so windows disagree and the
merge across overlaps has work to do. The inputs mix square and oblong scenes, a scene with
nodata windows, one resampled to the model's pixel size, a corrupt file and a truncated one.
"""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("onnx")

from scoring_models import write_peak_model, write_scene  # noqa: E402
from test_predict_batch import outputs_of  # noqa: E402

from detector.predict import predict_files, read_journal  # noqa: E402
from detector.predict_cli import main  # noqa: E402

ALL = "geojson,gpkg,csv,coco"
BAD = ["corrupt.tif", "truncated.tif"]


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module (2 CPUs like the CI machine); its GCS address."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="module")
def model(work):
    return write_peak_model(work / "peaks.onnx", gsd=0.5)


@pytest.fixture(scope="module")
def slow_model(work):
    """The same detections, about 40 ms more per window: time to kill something mid-run."""
    return write_peak_model(work / "peaks-slow.onnx", gsd=0.5, work=60)


@pytest.fixture(scope="module")
def scenes(work):
    d = work / "in"
    d.mkdir()
    paths = [write_scene(d / f"s{i}.tif", 768, seed=i) for i in range(4)]
    paths.append(write_scene(d / "wide.tif", 900, height=500, seed=4))
    paths.append(write_scene(d / "nodata.tif", 768, seed=5, nodata_left=0.6))
    paths.append(write_scene(d / "fine.tif", 600, seed=6, res=0.35))  # read resampled to 0.5 m
    (d / "corrupt.tif").write_bytes(np.random.default_rng(0).bytes(5000))
    shutil.copy(paths[0], d / "truncated.tif")
    os.truncate(d / "truncated.tif", os.path.getsize(d / "truncated.tif") // 2)
    return [str(p) for p in paths] + [str(d / n) for n in BAD]


@pytest.fixture(scope="module")
def reference(model, scenes, work):
    """The single process's outputs for the same inputs."""
    out = work / "single"
    summary = predict_files(model, scenes, out, formats=ALL)
    assert summary["scored"] == len(scenes) - len(BAD) and summary["detections"] > 0
    return out, summary


def _same_as_reference(reference, out: Path, summary: dict) -> None:
    ref, ref_summary = reference
    # the kill tests score with a slowed copy of the model: its name and hash differ, not its boxes
    ignore = ("scored_at", "model", "model_file", "model_sha256")
    a, b = outputs_of(ref, ignore), outputs_of(out, ignore)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], f"{name} differs from the single process's"
    assert summary["detections"] == ref_summary["detections"]
    assert sorted(Path(f["path"]).name for f in summary["failed"]) == BAD
    kinds = [{Path(f["path"]).name: f["error"].split(":")[0] for f in s["failed"]} for s in (ref_summary, summary)]
    assert kinds[0] == kinds[1]  # the truncated file fails in a read task: its error keeps its type
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp.")]


def _actor_pids() -> list[int]:
    """PIDs of this machine's Ray Detector actors (Ray names its worker processes ray::<task>)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith("ray::") and "DetectorActor" in cmd:
                pids.append(int(d.name))
    return sorted(pids)


@pytest.mark.parametrize("actors", [1, 2])
def test_ray_gives_the_single_process_outputs(ray_address, model, scenes, reference, tmp_path, capsys, actors):
    out = tmp_path / "out"
    if actors == 1:  # through the command line: flags, summary on stdout, exit 2 for the bad inputs
        rc = main(["predict", str(model), *scenes, "--out", str(out), "--format", ALL, "--engine", "ray",
                   "--actors", "1", "--no-progress"])
        assert rc == 2
        printed = json.loads(capsys.readouterr().out)
        assert printed["engine"] == "ray" and printed["providers"] == ["CPUExecutionProvider"]
        summary = json.loads((out / "summary.json").read_text())
    else:
        summary = predict_files(model, scenes, out, formats=ALL, engine="ray", actors=actors)
    _same_as_reference(reference, out, summary)
    info = summary["ray"]
    assert info["actors"] == actors and info["started_here"] is False  # the module's instance, left running
    pids = {w["role"]: set() for w in info["workers"]}
    for w in info["workers"]:
        pids[w["role"]].add(w["pid"])
        assert w["peak_rss_mb"] > 0
    assert len(pids["detector"]) == actors
    assert not pids["read"] & pids["detector"], "reads must run in Ray tasks, not inside the actors"
    assert summary["megapixels_per_s"] > 0 and set(summary["stages"]) == {"read", "infer", "merge", "write"}


def test_a_killed_actor_is_replaced_and_nothing_is_lost(ray_address, slow_model, scenes, reference, tmp_path):
    out = tmp_path / "job"
    good = len(scenes) - len(BAD)
    killed: dict = {}

    def kill_one_actor_mid_run():
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not killed:
            journal = out / "journal.jsonl"
            done = len(read_journal(journal)) if journal.exists() else 0
            pids = _actor_pids()
            if done >= 1 and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.update(pid=pids[0], done=done)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_actor_mid_run)
    killer.start()
    try:
        summary = predict_files(slow_model, scenes, out, formats=ALL, engine="ray", actors=2)
    finally:
        killer.join()
    assert killed, "no Detector actor was found to kill"
    assert killed["done"] < good, "the kill came after the last scene: nothing was tested"
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    assert summary["complete"] and summary["scored"] == good
    _same_as_reference(reference, out, summary)


def test_a_killed_job_resumes_without_redoing_finished_scenes(ray_address, slow_model, scenes, reference,
                                                              tmp_path):
    """The whole job (its driver, joined to the cluster by --address) killed mid-run; --resume
    finishes it, scoring only the scenes the journal lacks."""
    out = tmp_path / "job"
    good = len(scenes) - len(BAD)
    cmd = [sys.executable, "-m", "detector.predict_cli", "predict", str(slow_model), *scenes, "--out", str(out),
           "--format", ALL, "--engine", "ray", "--address", ray_address, "--actors", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (out / "journal.jsonl").exists() or not read_journal(out / "journal.jsonl"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no scene finished in 180 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    finished = read_journal(out / "journal.jsonl")
    assert 1 <= len(finished) < good, "the kill came after the last scene: nothing was tested"
    assert not (out / "summary.json").exists()
    stamps = {p: p.stat().st_ino for e in finished.values() for p in (out / f for f in e["outputs"].values())}

    summary = predict_files(slow_model, scenes, out, formats=ALL, resume=True, engine="ray", actors=2)
    assert summary["resumed"] == len(finished) and summary["scored"] == good - len(finished)
    assert all(p.stat().st_ino == ino for p, ino in stamps.items()), "a finished scene's files were rewritten"
    journal = [e for e in (json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()
                           if line.strip()) if "key" in e]  # less the header line
    assert len(journal) == len({e["key"] for e in journal}) == good
    _same_as_reference(reference, out, summary)


def test_ray_engine_options_and_lazy_import(model, scenes, tmp_path, capsys):
    from detector.engine_ray import driver_detector, resources_for

    assert resources_for({"CPU": 2}, "cpu", actors=1, threads=None, gpus_per_actor=None) == \
        {"actors": 1, "gpus_per_actor": 0.0, "threads": 2, "cpus_per_actor": 1.0}
    assert resources_for({"CPU": 2}, "auto", actors=2, threads=None, gpus_per_actor=None) == \
        {"actors": 2, "gpus_per_actor": 0.0, "threads": 1, "cpus_per_actor": 0.5}
    gpu = resources_for({"CPU": 16, "GPU": 2}, "cuda", actors=None, threads=None, gpus_per_actor=None)
    assert gpu == {"actors": 2, "gpus_per_actor": 1.0, "threads": 2, "cpus_per_actor": 1.0}
    assert resources_for({"CPU": 16, "GPU": 1}, "auto", actors=None, threads=None, gpus_per_actor=0.5)["actors"] == 2
    with pytest.raises(RuntimeError, match="the Ray cluster has 0 GPUs"):
        resources_for({"CPU": 16}, "cuda", actors=None, threads=None, gpus_per_actor=None)
    with pytest.raises(ValueError, match=r"model\.ckpt: --engine ray scores exported \.onnx models"):
        driver_detector(tmp_path / "model.ckpt")
    # Ray-only options without Ray are refused before anything runs
    assert main(["predict", str(model), scenes[0], "--out", str(tmp_path / "o"), "--actors", "2"]) == 1
    assert "--actors: only with --engine ray" in capsys.readouterr().err
    # the default engine never imports Ray; the Ray engine never imports torch
    code = ("import sys\n"
            f"from detector.predict import predict_files\n"
            f"predict_files({str(model)!r}, [{scenes[0]!r}], {str(tmp_path / 'single')!r})\n"
            "assert 'ray' not in sys.modules and 'detector.engine_ray' not in sys.modules\n"
            "import detector.engine_ray, ray.data\n"
            "bad = [m for m in ('torch', 'torchvision', 'lightning') if m in sys.modules]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_extras_install_ray_and_no_second_onnxruntime():
    """revet[ray] brings Ray Data, the dev extra too (.ci/run installs [train,dev]); revet[gpu]
    must not install onnxruntime-gpu beside the base onnxruntime (they overwrite each other)."""
    import tomllib

    meta = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    assert any(d.replace(" ", "").startswith("ray[data]") for d in extras["ray"])
    assert any(d.replace(" ", "").startswith("ray[data]") for d in extras["dev"])
    assert any(d.startswith("onnxruntime") and not d.startswith("onnxruntime-gpu") for d in meta["dependencies"])
    assert not [d for d in extras.get("gpu", []) if d.startswith("onnxruntime")]
