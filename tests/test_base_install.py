"""The base install (``pip install revet``, no extras, no torch) in a venv of its own.

``.ci/run`` builds that venv and points ``REVET_BASE_VENV`` at it; without it the test is
skipped (building the venv takes minutes). It scores the test scene with the shipped model by
name, and checks that a training command says which extra to install instead of a traceback.
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

VENV = os.environ.get("REVET_BASE_VENV")
pytestmark = pytest.mark.skipif(not VENV, reason="REVET_BASE_VENV (a venv with only `pip install .`) not set")


def _revet(*args, cwd):
    return subprocess.run([str(Path(VENV) / "bin" / "revet"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_base_venv_has_no_torch():
    r = subprocess.run([str(Path(VENV) / "bin" / "python"), "-c",
                        "import importlib.util as u; print([m for m in ('torch', 'lightning', 'cv2') if u.find_spec(m)])"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_base_install_scores_a_scene_with_the_shipped_model(synth_small, tmp_path):
    from detector import zoo

    if "revet-base" not in zoo.available():
        pytest.fail("revet-base is not shipped in detector/zoo (see docs/models.md)")
    r = _revet("predict", "revet-base", str(synth_small / "scene.tif"), "--out", str(tmp_path / "d.geojson"),
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    fc = json.loads((tmp_path / "d.geojson").read_text())
    classes = {f["properties"]["class"] for f in fc["features"]}
    assert len(fc["features"]) >= 3 and classes <= {"bunker", "revetment", "shelter"}


def test_training_commands_name_the_extra(synth_small, tmp_path):
    r = _revet("train", "--train", str(synth_small / "train.json"), "--val", str(synth_small / "val.json"),
               "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "pip install 'revet[train]'" in r.stderr and "revet train" in r.stderr
