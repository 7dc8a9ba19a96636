"""Shared fixtures: small synthetic datasets made by the project itself."""
import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory):
    """24 train / 8 val / 8 test tiles of 512 px and a 1024-px scene (seed 0)."""
    from detector.datasets.synth import generate_dataset

    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, n_train=24, n_val=8, n_test=8, scene_size=1024, seed=0, workers=1)
    return out
