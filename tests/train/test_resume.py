"""A run killed mid-way and resumed ends at the same epoch count, with no lost epochs."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")


def _epochs_and_step(path):
    ck = torch.load(path, map_location="cpu", weights_only=True)
    return ck["epoch"], ck["global_step"]


def test_kill_and_resume(synth_small, tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "detector.cli", "train", "--train", str(synth_small / "train.json"),
            "--val", str(synth_small / "val.json"), "--out", str(run), "--epochs", "4", "--batch-size", "8",
            "--crop", "128"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    last = run / "last.ckpt"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and p.poll() is None:
            if last.exists():
                time.sleep(0.5)  # let the write finish
                if _epochs_and_step(last)[1] >= 3:
                    break
            time.sleep(0.2)
        assert p.poll() is None, "training finished before it could be killed"
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    killed_epoch, killed_step = _epochs_and_step(last)
    assert 0 <= killed_epoch < 3  # "epoch" in last.ckpt is the index of the epoch just finished
    r = subprocess.run([sys.executable, "-m", "detector.cli", "train", "--resume", str(run)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    epoch, step = _epochs_and_step(last)
    steps_per_epoch = 24 // 8
    assert epoch == 3 and step == 4 * steps_per_epoch  # what an uninterrupted 4-epoch run ends with
    rows = list(csv.DictReader(open(run / "logs" / "metrics.csv")))
    trained_epochs = sorted({int(r["epoch"]) for r in rows if r.get("train/loss")})
    assert trained_epochs == [0, 1, 2, 3]
