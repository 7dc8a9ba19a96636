"""Where the synthetic generator's images lie on the map: their CRS, the allowed ground sample
distances and the transform of the large scene (shared by :mod:`~detector.datasets.synth` and
:mod:`~detector.datasets.synth.pairs`)."""
from __future__ import annotations

CRS = "EPSG:32637"  # UTM zone 37N
GSD_RANGE = (0.2, 2.0)  # metres per pixel the generator draws at


def check_gsd(gsd: float) -> None:
    """ValueError unless ``gsd`` (metres per pixel) lies in ``GSD_RANGE``."""
    if not GSD_RANGE[0] <= gsd <= GSD_RANGE[1]:
        raise ValueError(f"gsd must be in {GSD_RANGE} metres per pixel, got {gsd}")


def scene_transform(gsd: float):
    """Affine transform of a generated scene (and of a pair's before image) at ``gsd``."""
    from affine import Affine

    return Affine(gsd, 0.0, 620000.0, 0.0, -gsd, 4250000.0)
