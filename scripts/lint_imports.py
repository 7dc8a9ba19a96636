#!/usr/bin/env python3
"""Check the import contracts (``[tool.importlinter]`` in pyproject.toml) on the installed layout.

pyproject.toml installs the top-level folders ``train/``, ``datasets/`` and ``export/`` as
``detector.train``, ``detector.datasets`` and ``detector.export`` (setuptools ``package-dir``).
import-linter (through grimp) finds a package's modules by walking its folder, so run from the
repository root it sees ``detector/`` alone and none of the mapped subpackages. This script builds
the installed view from symlinks in a temporary folder, ``detector/`` with each mapped folder
inside it, and runs ``lint-imports`` there; the contracts name every layer, so a view without the
mapped folders fails ("missing layer") instead of passing on a partial graph.

Usage: ``python scripts/lint_imports.py [lint-imports options]``; the exit status is lint-imports'.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def build_view(dest: Path, root: Path = ROOT) -> Path:
    """Write the installed package tree under ``dest`` as symlinks into ``root``; returns ``dest``.

    The mapping is read from ``[tool.setuptools] package-dir``, so a folder added there is
    checked without editing this script."""
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top = {name: folder for name, folder in mapping.items() if "." not in name}
    for name, folder in sorted(top.items()):
        pkg = dest / name
        pkg.mkdir(parents=True)
        for entry in (root / folder).iterdir():
            if entry.name != "__pycache__":
                (pkg / entry.name).symlink_to(entry)
    for name, folder in sorted(mapping.items()):
        if "." in name:
            link = dest.joinpath(*name.split("."))
            if link.exists() or link.is_symlink():
                raise SystemExit(f"{link}: {name} is both a folder of its parent and mapped to {folder}")
            link.symlink_to(root / folder)
    return dest


def lint(view: Path, args: list[str] = (), **run) -> subprocess.CompletedProcess:
    """Run ``lint-imports`` on the view ``view`` (:func:`build_view`) with the repository's
    contracts; ``run`` goes to :func:`subprocess.run` (``capture_output=True``, ...)."""
    exe = shutil.which("lint-imports", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                               os.environ.get("PATH", "")]))
    if exe is None:
        raise SystemExit("lint-imports not found: pip install -e '.[dev]' (import-linter)")
    return subprocess.run([exe, "--no-cache", *args, str(ROOT / "pyproject.toml")], cwd=view, **run)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="revet-imports-") as tmp:
        return lint(build_view(Path(tmp)), argv).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
