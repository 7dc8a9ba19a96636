"""The prescreen: a cheap first pass that marks scene windows which certainly hold no target, so
the detector runs only on the rest. Torch-free (numpy only).

    screen = Prescreen()                              # the default setting
    screen.may_hold(tile, valid, spec)                # False: the window may be skipped

The test, per window and per band, on the window's raw pixels and valid mask:

1. Scale to the model's units, ``x01 = clip((raw - offset) / scale, 0, 1)`` (the spec's rule),
   so 8-bit, 16-bit and N-band imagery are judged in the units the network sees.
2. Reduce resolution: means ``M`` of ``block`` x ``block`` pixel blocks over valid pixels only,
   sampling every ``step``-th pixel (blocks with under ``min_block_valid`` of their samples valid
   are left out). Averaging ``(block / step)**2`` samples divides sensor noise by ``block / step``.
3. Structure ``C``: the largest range of ``log(M + EPS)`` in any 3 x 3 neighbourhood of blocks
   (``3 * block`` pixels across), i.e. the strongest local *relative* contrast in the window.
   A target is a raised structure metres to tens of metres across (mound, berm, roof) lit by
   the sun: shading of its faces and its cast shadow give it a local contrast of tens of per
   cent at this scale, which one block neighbourhood anywhere in the window is enough to show.
   Log contrast does not change with gain (exposure, a 16-bit product's digital-number scale),
   and a gamma changes it by its exponent, which the margin below covers.
4. Noise ``N``: the relative noise of one block mean, ``sigma / (block / step * (mean(M) + EPS))``
   with ``sigma`` the robust pixel noise (median absolute difference of horizontally adjacent
   valid samples / 0.954, which ignores edges and texture). Pure noise makes ``C`` about 7-9 N
   over a window's thousands of blocks, so noise alone is not taken for structure.

The window may hold a target when any band has ``C >= min_contrast + noise_margin * N``; it is
skipped only when every band's strongest local contrast is below that: flat water, snow,
cloud, uniform fields, saturated or nearly constant pixels. All-nodata windows are skipped
before this test (the runner). Textured ground (grass, forest crowns, rocks, fields with
furrows) has local contrast well above ``min_contrast`` and is scored: the test is meant to be
certain, not clever. The default thresholds were set from ``benchmarks/bench_prescreen.py``,
which measures the objects lost against the full pass on scenes of every kind the generator
makes; a window size of any number of pixels works (the block grid follows the window).

Cost: a few array passes over the window's pixels (about a millisecond per 512 x 512 x 3
window), against hundreds of milliseconds for the detector on a CPU.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

EPS = 1e-3  # in model units (0..1): keeps log contrast finite on black pixels
NOISE_ROW_STEP = 8  # every 8th row (of the samples)'s adjacent-pixel differences estimate the noise
_MAD_TO_SIGMA = 1.0 / (0.6745 * np.sqrt(2.0))  # median |a - b| of two N(0, s) samples -> s


@dataclass(frozen=True)
class Prescreen:
    """The settings of the first pass (module docstring).

    Attributes:
        block: side in model pixels of the blocks averaged for the reduced-resolution copy.
        step: pixels between the samples averaged in a block (1: every pixel).
        min_contrast: smallest local log contrast (about a relative contrast: 0.04 = 4 %)
            that counts as structure, in model units.
        noise_margin: multiples of a block mean's relative noise added to ``min_contrast``.
        min_block_valid: share of a block's pixels that must be valid for it to count.
    """

    block: int = 8
    step: int = 2
    min_contrast: float = 0.04
    noise_margin: float = 6.0
    min_block_valid: float = 0.25

    def __post_init__(self) -> None:
        if not (isinstance(self.block, int) and isinstance(self.step, int) and self.step >= 1
                and self.block >= 2 * self.step and self.block % self.step == 0):
            raise ValueError(f"Prescreen: expected integers block >= 2 * step, step >= 1 dividing block, "
                             f"got block={self.block!r}, step={self.step!r}")
        if not (self.min_contrast >= 0 and self.noise_margin >= 0 and 0 < self.min_block_valid <= 1):
            raise ValueError(f"Prescreen: expected min_contrast >= 0, noise_margin >= 0 and 0 < min_block_valid <= 1, "
                             f"got {self}")

    def to_dict(self) -> dict:
        return asdict(self)

    def statistics(self, tile: np.ndarray, valid: np.ndarray, offset, scale) -> tuple[np.ndarray, np.ndarray]:
        """tile ``(T, T, C)`` raw pixels (any dtype), valid ``(T, T)`` bool, offset/scale one
        value per band (the spec's) -> per band the structure ``C`` and the noise ``N`` (module
        docstring), each ``(C,)`` float64. A band with no usable block gives ``C = 0``."""
        # the reduced copy samples every ``step``-th pixel of each block (step x step fewer
        # pixels to touch; objects are tens of pixels across and imagery is blurred, so nothing
        # a target shows is lost), then averages (block / step)**2 samples per block
        st = self.step
        tile, valid = tile[::st, ::st], valid[::st, ::st]
        h, w, nb = tile.shape
        b = self.block // st
        off = np.asarray(offset, np.float64).reshape(-1)
        sc = np.asarray(scale, np.float64).reshape(-1)
        structure, noise = np.zeros(nb), np.zeros(nb)
        full = bool(valid.all())
        vf = valid.astype(np.float32)
        count = _block_sums(vf[..., None], b)[..., 0]
        ok = count >= self.min_block_valid * b * b
        if not ok.any():
            return structure, noise
        x = tile.astype(np.float32)
        # per-pixel clipping as the model's scaling does, unless no raw value can fall outside
        # [offset, offset + scale] (8-bit imagery under an 8-bit spec): then scale the means only
        clip = not _in_range(tile, off, sc)
        if clip:
            x -= off.astype(np.float32)
            x /= sc.astype(np.float32)
            np.clip(x, 0.0, 1.0, out=x)
        if not full:
            x *= vf[..., None]
        m = _block_sums(x, b) / np.maximum(count, 1.0)[..., None]  # (gh, gw, C) block means
        if not clip:
            m = (m - off) / sc
        sub = x[::NOISE_ROW_STEP]
        d = np.abs(sub[:, 1:] - sub[:, :-1])
        if not full:
            d = d[valid[::NOISE_ROW_STEP, :-1] & valid[::NOISE_ROW_STEP, 1:]]
        d = np.ascontiguousarray(d.reshape(-1, nb).T)  # (C, pairs): one partition per band row
        sigma = (np.median(d, axis=1) * _MAD_TO_SIGMA if d.shape[1] else np.zeros(nb)) / (1.0 if clip else sc)
        for c in range(nb):
            mc = m[..., c]
            structure[c] = _max_local_range(np.log(np.maximum(mc, 0.0) + EPS), ok)
            noise[c] = sigma[c] / (b * (float(mc[ok].mean()) + EPS))  # b = sqrt(samples per block)
        return structure, noise

    def may_hold(self, tile: np.ndarray, valid: np.ndarray, spec) -> bool:
        """False when the window certainly holds no target (it may be skipped), else True.
        ``spec``: the model's :class:`~detector.spec.ModelSpec` (its per-band offset and scale)."""
        structure, noise = self.statistics(tile, valid, spec.offset, spec.scale)
        return bool(np.any(structure >= self.min_contrast + self.noise_margin * noise))


DEFAULT = Prescreen()


def _block_sums(a: np.ndarray, b: int) -> np.ndarray:
    """Sums of ``b`` x ``b`` pixel blocks of an ``(H, W, C)`` float32 array ->
    ``(ceil(H / b), ceil(W / b), C)``; the last row and column of blocks are partial when ``b``
    does not divide the size. (Adding ``b`` strided slices is several times faster than
    ``reshape(...).sum(axis)`` for small ``b``.)"""
    h, w, c = a.shape
    gh, gw = -(-h // b), -(-w // b)
    if (gh * b, gw * b) != (h, w):
        a = np.pad(a, ((0, gh * b - h), (0, gw * b - w), (0, 0)))
    r = a.reshape(gh * b, gw, b, c)
    cols = r[:, :, 0].copy()
    for k in range(1, b):
        cols += r[:, :, k]
    r2 = cols.reshape(gh, b, gw, c)
    out = r2[:, 0].copy()
    for k in range(1, b):
        out += r2[:, k]
    return out


def _in_range(tile: np.ndarray, off: np.ndarray, sc: np.ndarray) -> bool:
    """True when every raw value of ``tile`` maps into [0, 1] (no clipping would happen):
    decided from the dtype for integer imagery whose whole range fits, else from the data."""
    lo, hi = np.minimum(off, off + sc), np.maximum(off, off + sc)
    if np.issubdtype(tile.dtype, np.integer):
        info = np.iinfo(tile.dtype)
        if np.all(lo <= info.min) and np.all(hi >= info.max):
            return True
    # all bands at once (per-band reductions over a channels-last array are several times slower)
    return bool(tile.min() >= lo.max() and tile.max() <= hi.min())


def _max_local_range(a: np.ndarray, ok: np.ndarray) -> float:
    """Largest ``max - min`` of ``a`` over the usable (``ok``) cells of any 3 x 3 neighbourhood."""
    hi = np.where(ok, a, -np.inf)
    lo = np.where(ok, a, np.inf)
    hi, lo = _filter3(hi, np.maximum, -np.inf), _filter3(lo, np.minimum, np.inf)
    r = (hi - lo)[ok]
    return float(r.max()) if r.size else 0.0


def _filter3(a: np.ndarray, op, fill: float) -> np.ndarray:
    """3 x 3 running ``op`` (np.maximum / np.minimum) of a 2-D array, padded with ``fill``."""
    p = np.pad(a, 1, constant_values=fill)
    rows = op(op(p[:-2], p[1:-1]), p[2:])
    return op(op(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])
