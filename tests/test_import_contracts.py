"""The import contracts (pyproject.toml ``[tool.importlinter]``, checked by
``scripts/lint_imports.py``) hold, and they are not vacuous: each fails on a planted violation."""
import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("lint_imports", ROOT / "scripts" / "lint_imports.py")
lint_imports = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lint_imports)


def _run(view):
    r = lint_imports.lint(view, capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def test_contracts_hold(tmp_path):
    rc, out = _run(lint_imports.build_view(tmp_path))
    assert rc == 0, out
    assert "3 kept, 0 broken" in out, out


def _plant(view: Path, module: str, extra: str) -> None:
    """Replace the view's link to ``detector/<module>.py`` by a copy with ``extra`` appended."""
    link = view / "detector" / f"{module}.py"
    text = link.read_text()
    link.unlink()
    link.write_text(text + "\n" + extra + "\n")


def test_contracts_catch_violations(tmp_path):
    view = lint_imports.build_view(tmp_path)
    _plant(view, "hashing", "def _probe():\n    import torch\n    from detector.train import checkpoint")
    _plant(view, "spec", "def _probe():\n    import detector.runner")  # runner imports spec: a cycle
    rc, out = _run(view)
    assert rc != 0
    assert "detector.hashing is not allowed to import detector.train" in out, out
    assert "torch" in out and "detector.hashing" in out, out
    assert "0 kept, 3 broken" in out, out


def test_a_view_without_the_mapped_folders_fails(tmp_path):
    """Run from the repository root, grimp would see detector/ alone; the contracts then fail
    instead of passing on a partial graph."""
    view = lint_imports.build_view(tmp_path)
    for name in ("train", "export", "datasets"):
        (view / "detector" / name).unlink()
    rc, out = _run(view)
    assert rc != 0 and "Missing layer" in out, out


def test_checkpoint_backend_is_registered_not_imported():
    """The runtime finds the .ckpt backend through the ``revet.backends`` entry point."""
    from detector.backends import backend_loader

    code = ("import sys; from detector.backends import backend_loader;"
            "assert backend_loader('.onnx') is None; assert 'detector.export' not in sys.modules")
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)
    loader = backend_loader(".ckpt")
    assert loader.__qualname__ == "TorchBackend.from_checkpoint"
