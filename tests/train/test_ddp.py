"""Two training processes on a CPU (DDP over gloo): validation on every rank's images, gathered,
one set of run files written by rank zero, a schedule counted in global steps."""
import csv
import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")


def test_two_process_ddp_run_gathers_validation_and_writes_once(synth_small, tmp_path):
    val = json.loads((synth_small / "val.json").read_text())
    keep = val["images"][:7]  # odd: DistributedSampler pads rank 1 with a repeat of image 0
    ids = {im["id"] for im in keep}
    val7 = {**val, "images": keep, "annotations": [a for a in val["annotations"] if a["image_id"] in ids]}
    for im in keep:  # file names are relative to the COCO file's folder
        im["file_name"] = str(synth_small / im["file_name"])
    (tmp_path / "val7.json").write_text(json.dumps(val7))
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "detector.cli", "train", "--train", str(synth_small / "train.json"),
                        "--val", str(tmp_path / "val7.json"), "--out", str(run), "--epochs", "2",
                        "--batch-size", "4", "--crop", "128", "--accelerator", "cpu", "--devices", "2"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [row for row in csv.DictReader(open(run / "logs" / "metrics.csv")) if row.get("val/images")]
    assert rows and all(float(row["val/images"]) == 7 for row in rows)  # both ranks' images, padding dropped
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    ck = torch.load(run / "best.ckpt", map_location="cpu", weights_only=True)
    # 24 images, batch 4, 2 processes: 3 global steps per epoch; the schedule spans exactly the run
    assert ck["global_step"] in (3, 6) and ck["hyper_parameters"]["max_steps"] == 6
    budget = json.loads((run / "budget.json").read_text())
    assert budget["steps_done"] == 6
    assert (run / "metrics.json").exists()  # the run report, written once by rank zero
