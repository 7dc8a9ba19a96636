"""The scoring side must never import torch (the dependency rule: README "The four stages";
the import contracts in pyproject.toml check the imports, this checks what is loaded)."""
import subprocess
import sys


def test_runner_imports_without_torch():
    code = ("import sys\n"
            "import detector.runner, detector.predict, detector.outputs, detector.evaluate, detector.backends, detector.cli\n"
            "import detector.labels.coco, detector.metrics, detector.tiling, detector.raster\n"
            "bad = [m for m in ('torch', 'torchvision', 'lightning') if m in sys.modules]\n"
            "assert not bad, bad\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
