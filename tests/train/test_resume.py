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


def test_time_limited_run_killed_and_resumed_ends_annealed(synth_small, tmp_path):
    """#15.4: the learning-rate clock counts the time of the run before the kill, so a resumed
    time-limited run ends at the schedule's final learning rate (lr x final_lr_frac), not at
    the high rate a restarted clock would leave it on."""
    run = tmp_path / "run"
    minutes, lr = 1.0, 2e-3
    (tmp_path / "opts.yaml").write_text("warmup_steps: 2\n")
    args = [sys.executable, "-m", "detector.cli", "train", "--config", str(tmp_path / "opts.yaml"), "--train", str(synth_small / "train.json"),
            "--val", str(synth_small / "val.json"), "--out", str(run), "--epochs", "1000", "--batch-size", "8",
            "--crop", "64", "--max-time", str(minutes), "--lr", str(lr)]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "last.ckpt"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and p.poll() is None:
            if last.exists():
                time.sleep(0.5)
                ck = torch.load(last, map_location="cpu", weights_only=True)
                if ck["revet_train_seconds"] >= 0.3 * minutes * 60:
                    break
            time.sleep(0.2)
        assert p.poll() is None, "training finished before it could be killed"
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    killed = torch.load(last, map_location="cpu", weights_only=True)
    assert killed["revet_train_seconds"] < 0.85 * minutes * 60  # killed mid-schedule
    r = subprocess.run([sys.executable, "-m", "detector.cli", "train", "--resume", str(run)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    done = torch.load(last, map_location="cpu", weights_only=True)
    assert done["global_step"] > killed["global_step"]
    assert done["revet_train_seconds"] >= 0.95 * minutes * 60
    # cosine to lr x 0.02; below 0.15 lr means progress above 0.76. A clock restarted on resume
    # would end at the progress of the resumed part alone, under 0.7 (above 0.22 lr)
    assert done["optimizer_states"][0]["param_groups"][0]["lr"] < 0.15 * lr
