"""Reading imagery: windows, band selection, nodata masks, scaling. Torch-free.

Shared by training (``detector.datasets``) and inference (``detector.runner``) so that both
read pixels the same way. Arrays are ``H x W x C`` (channels last) as read, in the raster's dtype.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError
from rasterio.windows import Window


@dataclass(frozen=True)
class RasterInfo:
    """What the runner needs to know about a raster before reading it.

    ``transform`` maps pixel (col, row) of the top-left corner to map coordinates; ``crs`` is
    None for plain images (PNG/JPEG), in which case outputs stay in pixel coordinates.
    """

    path: Path | str
    width: int
    height: int
    count: int
    dtype: str
    crs: object
    transform: object
    nodata: float | None
    gsd: float | None


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_gdal_path(path: str | os.PathLike) -> bool:
    """True for a path GDAL resolves itself rather than the local file system: a virtual file
    system path (``/vsicurl/https://...``, ``/vsis3/bucket/key.tif``, ``/vsizip/...``) or a URL
    rasterio maps to one (``https://...``, ``s3://...``). Such paths are kept as strings:
    ``pathlib`` would fold the ``//`` of a URL."""
    s = os.fspath(path)
    return s.startswith("/vsi") or bool(_URL.match(s))


# GDAL file systems and URL schemes that reach the network (file:// and /vsimem/ etc. do not)
_NETWORK = re.compile(r"/vsi(?:curl|s3|gs|az|adls|oss|swift|hdfs|webhdfs)(?:_streaming)?/"
                      r"|(?<![A-Za-z0-9+.-])(?!file://)[A-Za-z][A-Za-z0-9+.-]*://", re.IGNORECASE)
ALLOW_NETWORK_ENV = "REVET_ALLOW_NETWORK"  # "1": local VRTs may name network sources


def is_network_path(path: str | os.PathLike) -> bool:
    """True when a GDAL file name reaches the network: a ``/vsicurl/``, ``/vsis3/``, ... path or
    a URL (``http://``, ``s3://``; not ``file://``), also nested (``/vsizip//vsicurl/...``)."""
    return bool(_NETWORK.search(os.fspath(path)))


def remote_sources(path: str | os.PathLike, *, _depth: int = 0) -> list[str]:
    """Network file names (:func:`is_network_path`) that a local VRT file would make GDAL open:
    any element text or attribute of the XML (``SourceFilename``, ``SourceDataset``, overviews,
    masks), following the local VRTs it names (up to 8 deep). ``[]`` for a file that is not a
    VRT or cannot be parsed (GDAL then reports it)."""
    import xml.etree.ElementTree as ET

    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
            if not head.startswith(b"<VRTDataset") or p.stat().st_size > 64 * 2**20:
                return []
            root = ET.fromstring(head + f.read())
    except (OSError, ET.ParseError):
        return []
    found: list[str] = []
    for el in root.iter():
        for value in [el.text or "", *el.attrib.values()]:
            value = value.strip()
            if is_network_path(value):
                found.append(value)
            elif el.tag == "SourceFilename" and value.lower().endswith(".vrt") and _depth < 8:
                inner = p.parent / value if el.get("relativeToVRT") == "1" else Path(value)
                if inner.is_file():
                    found += remote_sources(inner, _depth=_depth + 1)
    return list(dict.fromkeys(found))  # each source once, in the order named


def check_offline(path: Path) -> None:
    """Refuse a local raster file (a VRT) that names network sources, unless the environment
    variable ``REVET_ALLOW_NETWORK=1`` allows them (``revet predict --allow-network``): Revet
    reaches the network only for an input that is itself a network path."""
    if os.environ.get(ALLOW_NETWORK_ENV) == "1":
        return
    remote = remote_sources(path)
    if remote:
        more = f" (and {len(remote) - 1} more)" if len(remote) > 1 else ""
        raise ValueError(f"{path}: this local VRT reads the network source {remote[0]}{more}; Revet fetches "
                         "data only for inputs that are network paths themselves (/vsicurl/, /vsis3/, "
                         f"https://): give that source as the input, or allow it with --allow-network "
                         f"({ALLOW_NETWORK_ENV}=1)")


def as_path(path: str | os.PathLike) -> Path | str:
    """``Path(path)`` for a local file, the string itself for a GDAL path (:func:`is_gdal_path`)."""
    return os.fspath(path) if is_gdal_path(path) else Path(path)


def path_name(path: str | os.PathLike) -> str:
    """The file name of a local path or a GDAL path/URL (no query string): ``scene.tif``."""
    s = os.fspath(path)
    if is_gdal_path(s):
        return s.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return Path(s).name


def open_raster(path: str | os.PathLike):
    """Open an image with rasterio, raising a clear error naming the file when it cannot.
    GDAL paths (:func:`is_gdal_path`) are opened as given; GDAL fetches only the header and,
    later, the blocks a read needs (HTTP range requests for ``/vsicurl/``). A local file that
    would reach the network (a VRT naming remote sources) is refused (:func:`check_offline`)."""
    path = as_path(path)
    if isinstance(path, Path):
        if not path.exists():
            raise FileNotFoundError(f"{path}: image file does not exist")
        if path.stat().st_size == 0:
            raise ValueError(f"{path}: image file is empty (0 bytes)")
        check_offline(path)
    try:
        return rasterio.open(path)
    except RasterioIOError as e:
        raise ValueError(f"{path}: not a readable raster image ({e})") from None


def raster_info(ds) -> RasterInfo:
    """Summarise an open rasterio dataset. ``gsd`` is the mean pixel size in **metres**
    (:func:`pixel_size_m`: from the CRS's linear unit, or at the raster's centre for a
    geographic CRS); None when the raster has no geotransform. A rotated or sheared
    geotransform is refused with a message naming the file (outputs would be mis-placed)."""
    has_geo = ds.crs is not None and not ds.transform.is_identity
    gsd = None
    if has_geo:
        t = ds.transform
        if t.b != 0 or t.d != 0:
            raise ValueError(f"{ds.name}: rotated or sheared geotransform {tuple(t)[:6]} is not supported; "
                             "warp the image north-up first (e.g. gdalwarp -t_srs <its CRS> in.tif out.tif)")
        gsd = pixel_size_m(ds.crs, t, ds.width, ds.height)
    return RasterInfo(as_path(ds.name), ds.width, ds.height, ds.count, ds.dtypes[0],
                      ds.crs if has_geo else None, ds.transform, ds.nodata, gsd)


# WGS 84 ellipsoid, for metres per degree on geographic CRSs
_A, _E2 = 6378137.0, 0.00669437999014


def pixel_size_m(crs, transform, width: int, height: int) -> float | None:
    """Mean pixel size in metres of a north-up raster: CRS units times the CRS's linear unit
    (feet, US survey feet, metres) for projected CRSs; for geographic CRSs, degrees converted
    at the latitude of the raster's centre on the WGS 84 ellipsoid (accurate to about 0.5 %
    over a scene of tens of km). None when the CRS has no usable unit."""
    px, py = abs(transform.a), abs(transform.e)
    if crs.is_geographic:
        try:
            _, rad_per_unit = crs.units_factor
        except Exception:
            rad_per_unit = np.pi / 180
        _, lat = transform * (width / 2, height / 2)
        phi = float(lat) * rad_per_unit
        if not -np.pi / 2 <= phi <= np.pi / 2:
            return None
        w = np.sqrt(1 - _E2 * np.sin(phi) ** 2)
        m_per_rad_lat = _A * (1 - _E2) / w ** 3      # meridional radius of curvature
        m_per_rad_lon = _A * np.cos(phi) / w          # parallel radius
        return float((px * rad_per_unit * m_per_rad_lon + py * rad_per_unit * m_per_rad_lat) / 2)
    try:
        _, m_per_unit = crs.linear_units_factor
    except Exception:
        return None
    return float((px + py) / 2 * m_per_unit)


MAX_MEGAPIXELS = 20_000.0  # default refusal limit per raster (20 gigapixels, ~141k x 141k px)


def check_size(path, width: int, height: int, max_megapixels: float | None, *, windows: int | None = None,
               flag: str = "--max-megapixels") -> None:
    """Raise ValueError naming the file when a ``width`` x ``height`` raster (pixels) is larger
    than ``max_megapixels`` (None: no limit), saying its size, the ``windows`` it would take (if
    given) and the flag that raises the limit. Called from the header, before any pixel is read:
    a header can claim 10^6 x 10^6 px with no data behind it."""
    mp = width * height / 1e6
    if max_megapixels is not None and mp > max_megapixels:
        win = f", about {windows:,} windows" if windows is not None else ""
        raise ValueError(f"{path}: {width:,} x {height:,} pixels ({mp:,.0f} MP{win}) is above the limit of "
                         f"{max_megapixels:,.0f} MP per raster; check the file, or pass {flag} "
                         f"{int(np.ceil(mp))} to process it anyway")


def sparse_empty(ds, window: Window) -> bool:
    """True when ``window`` (raster pixels) lies wholly on blocks that a sparse GeoTIFF never
    wrote (GDAL's TIFF metadata ``BLOCK_OFFSET_<x>_<y>`` is empty: GDAL reads them as nodata or
    0), so it holds no data and can be skipped without reading. False for other formats, for a
    window outside the raster, and when any block under it holds data. Band-interleaved files
    are checked band by band; costs one metadata lookup per block, no pixel reads."""
    if getattr(ds, "driver", None) != "GTiff":
        return False
    c0, r0 = max(int(np.floor(window.col_off)), 0), max(int(np.floor(window.row_off)), 0)
    c1 = min(int(np.ceil(window.col_off + window.width)), ds.width)
    r1 = min(int(np.ceil(window.row_off + window.height)), ds.height)
    if c1 <= c0 or r1 <= r0:
        return False
    bh, bw = ds.block_shapes[0]
    band_interleaved = ds.count > 1 and ds.interleaving == rasterio.enums.Interleaving.band
    bands = range(1, ds.count + 1) if band_interleaved else (1,)
    for by in range(r0 // bh, (r1 - 1) // bh + 1):
        for bx in range(c0 // bw, (c1 - 1) // bw + 1):
            for b in bands:
                if ds.get_tag_item(f"BLOCK_OFFSET_{bx}_{by}", "TIFF", bidx=b):
                    return False
    return True


def check_bands(path, count: int, bands) -> None:
    """Raise ValueError naming the file when ``bands`` (1-based) are not all present."""
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise ValueError(
            f"{path}: the model reads bands {list(bands)} but the image has {count} band(s); "
            f"missing {bad}"
        )


def check_dtype(path, dtype: str, expected: str) -> None:
    """Raise ValueError naming the file when integer imagery of one type meets a model trained on
    another (uint16 pixels through a uint8 model's scaling saturate every pixel: no detections,
    no error). Float imagery is taken as scaled by the user."""
    a, b = np.dtype(dtype), np.dtype(expected)
    if a != b and a.kind in "ui" and b.kind in "ui":
        raise ValueError(f"{path}: {a.name} pixels, but the model was trained on {b.name} imagery "
                         f"(spec.dtype); convert the image (e.g. gdal_translate -ot {b.name} -scale) "
                         "or use a model trained on this type")


_NAN_WARNED: set[str] = set()


def _finite(ds, data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``mask`` with non-finite pixels (NaN, inf in any band) marked invalid, for float rasters;
    warns once per file when the raster declares no nodata value (NaN taken as nodata)."""
    if data.dtype.kind != "f":
        return mask
    bad = ~np.isfinite(data).all(axis=0)
    if bad.any():
        if ds.nodata is None and ds.name not in _NAN_WARNED:
            _NAN_WARNED.add(ds.name)
            import warnings

            warnings.warn(f"{ds.name}: NaN or infinite pixels and no nodata value; treated as nodata", stacklevel=3)
        data[:, bad] = 0
        mask = np.where(bad, 0, mask)
    return mask


def read_window(ds, window: Window, bands, *, fill: float = 0) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` (may extend past the raster edge) of the given 1-based ``bands``.

    Returns:
        image: (window.height, window.width, len(bands)) array in the raster's dtype; pixels
            outside the raster are ``fill``.
        valid: (window.height, window.width) bool, False outside the raster and where the
            raster's nodata value, mask or alpha band marks no data.
    """
    check_bands(ds.name, ds.count, bands)
    h, w = int(window.height), int(window.width)
    c0, r0 = int(window.col_off), int(window.row_off)
    # Read only the part inside the raster (boundless reads are ~10x slower) and pad.
    ic0, ir0 = max(c0, 0), max(r0, 0)
    ic1, ir1 = min(c0 + w, ds.width), min(r0 + h, ds.height)
    image = np.full((h, w, len(bands)), fill, dtype=ds.dtypes[bands[0] - 1])
    valid = np.zeros((h, w), bool)
    if ic1 <= ic0 or ir1 <= ir0:
        return image, valid
    inner = Window(ic0, ir0, ic1 - ic0, ir1 - ir0)
    data = ds.read(list(bands), window=inner)
    # Per-band masks combine the nodata value, internal masks and an alpha band; 0 = no data.
    masks = ds.read_masks(list(bands), window=inner)
    mask = _finite(ds, data, masks.min(axis=0) if len(bands) > 1 else masks[0])
    alpha = alpha_band(ds)
    if alpha is not None and alpha not in bands:
        mask = np.minimum(mask, ds.read(alpha, window=inner))
    sl = (slice(ir0 - r0, ir1 - r0), slice(ic0 - c0, ic1 - c0))
    image[sl] = np.moveaxis(data, 0, -1)
    valid[sl] = mask > 0
    return image, valid


def read_window_resampled(ds, window: Window, bands, size: int, *, fill: float = 0) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` (raster pixels, may be fractional and extend past the edge) resampled
    to ``size`` x ``size`` pixels: bilinear for values, nearest for the valid mask.
    Returns ``(size, size, C)`` image and ``(size, size)`` valid mask."""
    from rasterio.enums import Resampling

    check_bands(ds.name, ds.count, bands)
    data = ds.read(list(bands), window=window, out_shape=(len(bands), size, size), boundless=True,
                   fill_value=fill, resampling=Resampling.bilinear)
    masks = ds.read_masks(list(bands), window=window, out_shape=(len(bands), size, size), boundless=True,
                          resampling=Resampling.nearest)
    # boundless mask reads mark outside pixels valid: clear them explicitly
    col = window.col_off + (np.arange(size) + 0.5) * window.width / size
    row = window.row_off + (np.arange(size) + 0.5) * window.height / size
    inside = ((row >= 0) & (row < ds.height))[:, None] & ((col >= 0) & (col < ds.width))[None, :]
    valid = (_finite(ds, data, masks.min(axis=0)) > 0) & inside
    alpha = alpha_band(ds)
    if alpha is not None and alpha not in bands:
        a = ds.read(alpha, window=window, out_shape=(size, size), boundless=True, fill_value=0,
                    resampling=Resampling.nearest)
        valid &= a > 0
    return np.ascontiguousarray(np.moveaxis(data, 0, -1)), valid


def alpha_band(ds) -> int | None:
    """1-based index of the alpha band, if the raster has one."""
    for i, ci in enumerate(ds.colorinterp, start=1):
        if ci == rasterio.enums.ColorInterp.alpha:
            return i
    return None


def read_image(path: str | os.PathLike, bands) -> tuple[np.ndarray, np.ndarray, RasterInfo]:
    """Read a whole (tile-sized) image: ``(H, W, C)`` array, ``(H, W)`` valid mask, info."""
    with open_raster(path) as ds:
        info = raster_info(ds)
        image, valid = read_window(ds, Window(0, 0, ds.width, ds.height), bands)
    return image, valid, info


def resample_factor(gsd: float | None, target_gsd: float | None, tolerance: float = 0.02) -> float:
    """Raster pixels per model pixel when a raster of pixel size ``gsd`` (metres) is read at
    ``target_gsd`` (metres); 1.0 when either is unknown or they differ by under ``tolerance``."""
    if gsd and target_gsd and abs(target_gsd / gsd - 1) > tolerance:
        return float(target_gsd / gsd)
    return 1.0


def read_image_at(path: str | os.PathLike, bands, gsd: float | None) -> tuple[np.ndarray, np.ndarray, RasterInfo, float]:
    """Read a whole image resampled to pixel size ``gsd`` (metres; None: as stored), as the
    runner reads scenes (:func:`resample_factor`, bilinear values, nearest mask).

    Returns ``(image (H', W', C), valid (H', W'), info, f)``; ``f`` is raster pixels per
    returned pixel, so a box in returned pixels times ``f`` is a box in the raster's pixels.
    """
    with open_raster(path) as ds:
        info = raster_info(ds)
        f = resample_factor(info.gsd, gsd)
        if f == 1.0:
            image, valid = read_window(ds, Window(0, 0, ds.width, ds.height), bands)
        else:
            h, w = max(1, round(ds.height / f)), max(1, round(ds.width / f))
            image, valid = _read_resampled(ds, bands, h, w)
            f = ds.width / w
    return image, valid, info, f


def _read_resampled(ds, bands, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    from rasterio.enums import Resampling

    check_bands(ds.name, ds.count, bands)
    data = ds.read(list(bands), out_shape=(len(bands), h, w), resampling=Resampling.bilinear)
    masks = ds.read_masks(list(bands), out_shape=(len(bands), h, w), resampling=Resampling.nearest)
    valid = _finite(ds, data, masks.min(axis=0)) > 0
    alpha = alpha_band(ds)
    if alpha is not None and alpha not in bands:
        valid &= ds.read(alpha, out_shape=(h, w), resampling=Resampling.nearest) > 0
    return np.ascontiguousarray(np.moveaxis(data, 0, -1)), valid


def fill_invalid(batch: np.ndarray, valid: np.ndarray, offset) -> np.ndarray:
    """Set no-data pixels of a model batch to each band's ``offset``, in place, so that the
    graph's scaling (:func:`scale_to_unit`) maps them to 0: exactly what training feeds the
    network there (``TileDataset.to_unit`` zeroes invalid pixels after scaling), whatever the
    nodata value (255, 0, -9999) or the padding past a raster edge.

    batch: ``(B, C, H, W)`` float32 raw values; valid: ``(B, H, W)`` bool; offset: scalar or
    one value per band. Returns ``batch``.
    """
    invalid = ~np.asarray(valid, bool)
    if invalid.any():
        off = np.broadcast_to(np.asarray(offset, np.float32).reshape(-1), (batch.shape[1],))
        for c in range(batch.shape[1]):
            batch[:, c][invalid] = off[c]
    return batch


def scale_to_unit(image: np.ndarray, offset, scale) -> np.ndarray:
    """``clip((raw - offset) / scale, 0, 1)`` per band, as float32. ``image`` is (H, W, C).

    The same formula runs inside the exported graph (``detector.export.adapter``, ``preprocess``).
    """
    offset = np.asarray(offset, np.float32)
    scale = np.asarray(scale, np.float32)
    return np.clip((image.astype(np.float32) - offset) / scale, 0.0, 1.0)
