"""Writers for detections. Torch-free; pixel -> map happens here, last, in numpy.

Formats (``FORMATS`` maps each to its file suffix):

- ``geojson``: RFC 7946, coordinates EPSG:4326 longitude, latitude. A detection in a plain image
  (no CRS) keeps pixel coordinates and the file says so in a ``crs_note`` member.
- ``gpkg``: GeoPackage, one layer ``detections`` of polygons in the scene's CRS, fields
  ``id, class, score, threshold, source, x1, y1, x2, y2`` (pixel box). Scenes in other CRSs than the first are
  reprojected into the first one's (corner by corner).
- ``csv``: one row per detection: source, image_id, class, score, pixel box, map box in the
  scene CRS (``map_xmin .. map_ymax``, ``crs``), ``lon``/``lat`` of the box centre, ``id``,
  ``threshold``.
- ``coco``: COCO results JSON, a list of ``{image_id, category_id, bbox [x, y, w, h], score}``.

Every detection has a stable ``id`` (:func:`detection_ids`: a hash of the scene's file name, the
class and the pixel box, so scoring the same scene with the same model again gives the same ids)
and, when the job recorded the model's operating points, ``threshold``: the model's calibrated
threshold for its class (a detection below it was kept only because ``--min-score`` asked for
lower scores; ``revet changes`` uses it as the *confident* score).

Scene metadata (:func:`scene_metadata`: windows, windows skipped and the skip fraction, the first
pass's settings, and ``provenance``: model name, file and SHA-256, Revet version, scene, time
scored, the operating thresholds) goes into GeoJSON as the foreign member ``revet`` (``{"scenes": [...]}``) and
into the GeoPackage layer's metadata (``revet_scenes``, JSON); CSV and COCO results carry none
(the batch journal and summary have it for every format).

Every write is atomic (temporary file in the same folder, fsynced, then ``os.replace``, then the
folder fsynced), so a killed job or a lost machine never leaves half a file or an empty one.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import struct
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from rasterio.warp import transform as warp_transform

from detector.runner import Detections

log = logging.getLogger("revet.outputs")

FORMATS = {"geojson": ".geojson", "gpkg": ".gpkg", "csv": ".csv", "coco": ".coco.json"}
GPKG_LAYER = "detections"
CSV_COLUMNS = ["source", "image_id", "class", "score", "x1", "y1", "x2", "y2",
               "map_xmin", "map_ymin", "map_xmax", "map_ymax", "crs", "lon", "lat", "id", "threshold",
               "runner_up", "runner_up_score"]  # the last two empty unless the job kept one class per object


# ------------------------------------------------------------------ atomic writes
def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path next to ``path``, then rename it over ``path``.

    Readers see either the old file or the complete new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same suffix as the target (GDAL picks drivers by it); a leading ".tmp." marks leftovers.
    tmp = path.with_name(temp_name(path.name))
    try:
        write(tmp)
        # data on disk before the rename: after a crash or power loss the name holds the old
        # file or the whole new one, never a renamed but empty (or partly written) one
        fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_path(path.parent, folder=True)  # the rename itself
    return path


def fsync_path(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Flush a file's data (or, ``folder=True``, a folder's entries: renames) to disk. A folder
    that cannot be opened or synced (some platforms and network file systems) is left as is."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if folder:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def check_writable(out: str | os.PathLike, *, folder: bool) -> None:
    """Raise ValueError naming ``out`` when results could not be written there, before any work
    is done: a folder ``out`` that is an existing file, or a place (the folder, or a single
    file's parent) that cannot be created or written (read-only mount, no permission)."""
    out = Path(out)
    where = out if folder else out.parent
    if folder and out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is an existing file; give a folder, or an output file name ending in "
                         f"{', '.join(FORMATS.values())} or .json")
    if not folder and out.is_dir():
        raise ValueError(f"{out}: is a folder")
    try:
        where.mkdir(parents=True, exist_ok=True)
        probe = where / temp_name("write-test")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"{out}: cannot write results here ({e.strerror or e})") from None


LOCK_FILE = ".revet.lock"


def _host_tag() -> str:
    """This machine's name as it appears in temporary file names: letters, digits, ``-``, ``_``."""
    import re
    import socket

    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "host"


def temp_name(name: str) -> str:
    """Hidden temporary name for ``name`` owned by this process: ``.tmp.<pid>@<host>.<name>``.
    The host is part of the owner: on a folder shared by several machines (job arrays, Ray
    drivers on NFS) a process id alone says nothing about another machine's processes."""
    return f".tmp.{os.getpid()}@{_host_tag()}.{name}"


@contextmanager
def folder_lock(folder: str | os.PathLike, name: str = LOCK_FILE):
    """Hold ``folder/<name>`` (an advisory ``flock``; default ``.revet.lock``) while a job writes
    into ``folder``. A second job into the same folder logs that it waits and starts when the
    first is done, so neither resets the other's journal nor writes over its files (shards of one
    job, ``--shard K/N``, each hold their own lock and write only their own files). No-op where
    ``fcntl`` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(folder) / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            log.warning("%s: another job (pid %s) is writing here; waiting for it to finish", folder, holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def temp_owner(name: str) -> tuple[int, str | None] | None:
    """``(pid, host)`` of a temporary file name (:func:`temp_name`; host None for the older
    ``.tmp.<pid>.<name>`` form, written on this machine); None for any other name."""
    parts = name.split(".", 3)
    if len(parts) < 4 or parts[0] or parts[1] != "tmp":
        return None
    pid, _, host = parts[2].partition("@")
    if not pid.isdigit():
        return None
    return int(pid), host or None


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (:func:`temp_name`) in ``folder`` that are provably stale: made
    on this machine by a process that is no longer running (a killed job). Files of live
    processes (another shard, a second job waiting for the lock) and of other machines (whose
    processes cannot be checked from here) are left alone. Returns what was removed."""
    removed = []
    here = _host_tag()
    for tmp in Path(folder).glob(".tmp.*"):
        owner = temp_owner(tmp.name)
        if owner is None:
            continue
        pid, host = owner
        if (host is None or host == here) and not _alive(pid):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


# ------------------------------------------------------------------ geometry
def _corners(boxes: np.ndarray, transform) -> tuple[np.ndarray, np.ndarray]:
    """Pixel boxes (N, 4) -> map x, y (N, 5) of the closed ring x1y1, x2y1, x2y2, x1y2, x1y1."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    px = b[:, [0, 2, 2, 0, 0]]
    py = b[:, [1, 1, 3, 3, 1]]
    t = transform
    return t.a * px + t.b * py + t.c, t.d * px + t.e * py + t.f


def box_polygons(boxes: np.ndarray, transform) -> list[list[list[float]]]:
    """Pixel boxes (N, 4) -> closed rings in the transform's map coordinates (N rings of 5)."""
    mx, my = _corners(boxes, transform)
    return np.stack([mx, my], -1).tolist()


def _georef(det: Detections) -> bool:
    return det.crs is not None and det.transform is not None


def map_boxes(det: Detections) -> np.ndarray:
    """(N, 4) ``xmin, ymin, xmax, ymax`` of each pixel box in the scene CRS (bounds of the four
    mapped corners, so rotated transforms are handled). NaN when the scene has no CRS."""
    if not _georef(det) or len(det) == 0:
        return np.full((len(det), 4), np.nan)
    mx, my = _corners(det.boxes, det.transform)
    return np.stack([mx.min(1), my.min(1), mx.max(1), my.max(1)], 1)


def centres_lonlat(det: Detections) -> np.ndarray:
    """(N, 2) lon, lat (EPSG:4326) of each box centre; NaN when the scene has no CRS."""
    if not _georef(det) or len(det) == 0:
        return np.full((len(det), 2), np.nan)
    b = np.asarray(det.boxes, np.float64)
    t = det.transform
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    x, y = t.a * cx + t.b * cy + t.c, t.d * cx + t.e * cy + t.f
    lon, lat = warp_transform(det.crs, "EPSG:4326", x.tolist(), y.tolist())
    return np.stack([lon, lat], 1)


def _polygon_wkb(ring: Sequence[Sequence[float]]) -> bytes:
    """Little-endian WKB of a one-ring polygon."""
    return struct.pack("<BIII", 1, 3, 1, len(ring)) + b"".join(struct.pack("<dd", x, y) for x, y in ring)


# ------------------------------------------------------------------ provenance, ids and thresholds
def revet_version() -> str:
    """The installed Revet's version, ``unknown`` in a source checkout that is not installed."""
    try:
        from importlib.metadata import version

        return version("revet")
    except Exception:  # noqa: BLE001 - not installed
        return "unknown"


def provenance(model: str, model_file: str | None, classes: Sequence[str], thresholds: Sequence[float],
               min_score: float | None) -> dict:
    """What a detection file records of the job that made it (``extra["provenance"]``, one per
    scene with ``scene`` and ``scored_at`` added by :func:`scene_provenance`): the model as named
    (``revet-base:int8`` or a path), the file scored and its SHA-256, the Revet version, the
    model's operating threshold per class and the ``--min-score`` asked for (None: the model's)."""
    from detector.hashing import sha256_file

    sha = sha256_file(Path(model_file)) if model_file and Path(model_file).is_file() else None
    return {"model": str(model), "model_file": str(model_file) if model_file else None, "model_sha256": sha,
            "revet_version": revet_version(),
            "class_thresholds": {c: round(float(t), 5) for c, t in zip(classes, thresholds)},
            "min_score": min_score}


def scene_provenance(job: dict, scene) -> dict:
    """``job`` (:func:`provenance`) for one scene: its path and the UTC time it was scored."""
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {**job, "scene": str(scene), "scored_at": now}


def detection_id(scene: str, cls: str, box) -> str:
    """The stable id of one detection: ``d`` + the first 12 hex digits of SHA-1 over ``scene
    file name | class | pixel box rounded to 0.1 px``. The same scene scored again by the same
    model gets the same ids wherever the file lies (the review app computes the same id for
    detections that carry none)."""
    import hashlib

    x1, y1, x2, y2 = (round(float(v), 1) for v in box)
    key = f"{Path(str(scene)).name}|{cls}|{x1:.1f},{y1:.1f},{x2:.1f},{y2:.1f}"
    return "d" + hashlib.sha1(key.encode()).hexdigest()[:12]


def unique_ids(ids: list[str]) -> list[str]:
    """``ids`` with repeats made unique and still stable: the second ``x`` becomes ``x-2``..."""
    seen: dict[str, int] = {}
    out = []
    for d in ids:
        seen[d] = seen.get(d, 0) + 1
        out.append(d if seen[d] == 1 else f"{d}-{seen[d]}")
    return out


def detection_ids(det: Detections) -> list[str]:
    """(N,) :func:`detection_id` of each detection of ``det``, unique within it."""
    name = str(det.path) if det.path else ""
    return unique_ids([detection_id(name, det.classes[int(det.labels[k])], det.boxes[k]) for k in range(len(det))])


def detection_thresholds(det: Detections) -> np.ndarray:
    """(N,) the model's operating threshold of each detection's class (``extra["provenance"]
    ["class_thresholds"]``, a class -> score mapping); NaN where the job recorded none."""
    thr = (det.extra.get("provenance") or {}).get("class_thresholds") or {}
    return np.array([float(thr.get(det.classes[int(c)], np.nan)) for c in det.labels], np.float64)


# ------------------------------------------------------------------ GeoJSON
def detection_features(det: Detections) -> list[dict]:
    """GeoJSON features (EPSG:4326 when the source has a CRS, pixels otherwise)."""
    if len(det) == 0:
        return []
    if _georef(det):
        mx, my = _corners(det.boxes, det.transform)
        lon, lat = warp_transform(det.crs, "EPSG:4326", mx.ravel().tolist(), my.ravel().tolist())
        xy = np.round(np.stack([lon, lat], -1), 9).reshape(-1, 5, 2)
        # RFC 7946: exterior rings counterclockwise. North-up rasters give clockwise rings.
        x, y = xy[..., 0], xy[..., 1]
        area2 = (x[:, :-1] * y[:, 1:] - x[:, 1:] * y[:, :-1]).sum(1)
        xy[area2 < 0] = xy[area2 < 0, ::-1]
    else:
        b = np.asarray(det.boxes, np.float64).reshape(-1, 4)
        xy = np.stack([b[:, [0, 2, 2, 0, 0]], b[:, [1, 1, 3, 3, 1]]], -1)
    feats = []
    ids, thr, ru = detection_ids(det), detection_thresholds(det), runner_ups(det)
    for k, ring in enumerate(xy.tolist()):
        x1, y1, x2, y2 = (round(float(v), 2) for v in det.boxes[k])
        props = {
            "id": ids[k],
            "class": det.classes[int(det.labels[k])],
            "score": round(float(det.scores[k]), 5),
            "threshold": round(float(thr[k]), 5) if np.isfinite(thr[k]) else None,
            "source": str(det.path) if det.path else None,
            "pixel_box": [x1, y1, x2, y2],
        }
        if ru is not None:
            props["runner_up"], props["runner_up_score"] = ru[0][k], ru[1][k]
        feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                      "properties": props})
    return feats


def runner_ups(det: Detections) -> tuple[list[str | None], list[float | None]] | None:
    """Per detection, the class (None: none) and score of the runner-up another class gave the
    same ground, when the job kept one class per object (``revet predict --one-class``:
    ``extra["runner_up"]``, :meth:`detector.runner.Detector.one_class_per_object`); else None."""
    if "runner_up" not in det.extra:
        return None
    lab, sc = det.extra["runner_up"], det.extra["runner_up_score"]
    return ([det.classes[int(k)] if k >= 0 else None for k in lab],
            [round(float(v), 5) if np.isfinite(v) else None for v in sc])


SCENE_KEYS = ("windows", "skipped", "skipped_nodata", "skip_fraction", "prescreen", "provenance")


def scene_metadata(dets: list[Detections]) -> list[dict]:
    """Per scored scene (``extra`` holds ``windows``): ``source`` and ``SCENE_KEYS`` of its
    ``extra`` (windows planned, windows not scored, of which all nodata, their fraction, the
    first pass's settings or None: :func:`detector.runner.skip_extra`; ``provenance`` when the
    job recorded it). Images scored whole with no provenance are left out."""
    return [{"source": str(d.path) if d.path else None, **{k: d.extra[k] for k in SCENE_KEYS if k in d.extra}}
            for d in dets if "windows" in d.extra or "provenance" in d.extra]


def geojson_scene_metadata(doc) -> list[dict]:
    """The scene records (:func:`scene_metadata`) of a parsed detection GeoJSON (``revet.scenes``)."""
    meta = (doc.get("revet") or {}).get("scenes") if isinstance(doc, dict) else None
    return [m for m in meta if isinstance(m, dict)] if isinstance(meta, list) else []


def read_scene_metadata(path: str | os.PathLike) -> list[dict]:
    """What :func:`scene_metadata` wrote into a detection file (GeoJSON ``revet.scenes``,
    GeoPackage layer metadata ``revet_scenes``); [] for other files or files without it."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".geojson", ".json"):
            return geojson_scene_metadata(json.loads(path.read_text()))
        if path.suffix.lower() != ".gpkg":
            return []
        import pyogrio

        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
        layer = GPKG_LAYER if GPKG_LAYER in layers else layers[0] if layers else None
        raw = (pyogrio.read_info(path, layer=layer).get("layer_metadata") or {}).get("revet_scenes")
        meta = json.loads(raw) if raw else None
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return []
    return [m for m in meta if isinstance(m, dict)] if isinstance(meta, list) else []


def scene_model(records: list[dict], scene: str | os.PathLike) -> str | None:
    """The model that scored ``scene`` (matched by file name) as a detection file's scene
    records (:func:`read_scene_metadata`) give it (``provenance.model``, with the first 12 hex
    digits of its SHA-256), else None."""
    name = Path(str(scene)).name
    for m in records:
        prov = m.get("provenance") or {}
        if prov.get("model") and Path(str(m.get("source") or prov.get("scene") or "")).name == name:
            sha = prov.get("model_sha256")
            return f"{prov['model']} (sha256 {sha[:12]})" if sha else str(prov["model"])
    return None


def write_geojson(dets: list[Detections], path: str | os.PathLike) -> Path:
    """One FeatureCollection holding the detections of all ``dets``; scene metadata
    (:func:`scene_metadata`) in the foreign member ``revet``."""
    feats = [f for d in dets for f in detection_features(d)]
    doc: dict = {"type": "FeatureCollection", "features": feats}
    meta = scene_metadata(dets)
    if meta:
        doc["revet"] = {"scenes": meta}
    if any(d.crs is None for d in dets if len(d)):
        doc["crs_note"] = "some sources had no CRS: their geometries are in pixel coordinates"
    return atomic_write_text(path, json.dumps(doc))


# ------------------------------------------------------------------ GeoPackage
def write_gpkg(dets: list[Detections], path: str | os.PathLike) -> Path:
    """One GeoPackage layer ``detections`` of box polygons in the CRS of the first georeferenced
    scene (others are reprojected into it). Scenes without a CRS keep pixel coordinates and the
    layer has no CRS if none of the scenes has one."""
    import pyogrio.raw

    crs = next((d.crs for d in dets if _georef(d)), None)
    geoms, cls, score, src, px, ids, thr = [], [], [], [], [], [], []
    ru_cls, ru_score, any_ru = [], [], False
    for d in dets:
        if _georef(d):
            rings = box_polygons(d.boxes, d.transform)
            if d.crs != crs:
                rings = [np.stack(warp_transform(d.crs, crs, [p[0] for p in r], [p[1] for p in r]), 1).tolist()
                         for r in rings]
        else:
            rings = [[[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]] for x1, y1, x2, y2 in d.boxes.tolist()]
        geoms += [_polygon_wkb(r) for r in rings]
        cls += [d.classes[int(k)] for k in d.labels]
        score.append(np.asarray(d.scores, np.float64))
        src += [str(d.path) if d.path else ""] * len(d)
        ids += detection_ids(d)
        thr.append(detection_thresholds(d))
        px.append(np.asarray(d.boxes, np.float64).reshape(-1, 4))
        ru = runner_ups(d)
        any_ru |= ru is not None
        ru = ru or ([None] * len(d), [None] * len(d))
        ru_cls += ru[0]
        ru_score += [np.nan if v is None else v for v in ru[1]]
    px_all = np.concatenate(px) if px else np.zeros((0, 4))
    fields = ["id", "class", "score", "threshold", "source", "x1", "y1", "x2", "y2"]
    data = [np.array(ids, dtype=object), np.array(cls, dtype=object),
            np.concatenate(score) if score else np.zeros(0), np.concatenate(thr) if thr else np.zeros(0),
            np.array(src, dtype=object)] + [np.ascontiguousarray(px_all[:, i]) for i in range(4)]
    if any_ru:  # --one-class: the runner-up class per object
        fields += ["runner_up", "runner_up_score"]
        data += [np.array(ru_cls, dtype=object), np.array(ru_score, np.float64)]
    geometry = np.empty(len(geoms), dtype=object)
    geometry[:] = geoms
    meta = scene_metadata(dets)
    layer_meta = {"revet_scenes": json.dumps(meta)} if meta else None

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():  # pyogrio warns when a layer has no CRS: intended here
            warnings.simplefilter("ignore", UserWarning)
            pyogrio.raw.write(tmp, geometry, data, fields, layer=GPKG_LAYER, driver="GPKG",
                              geometry_type="Polygon", crs=crs.to_wkt() if crs is not None else None,
                              layer_metadata=layer_meta)

    return atomic_write(path, write)


# ------------------------------------------------------------------ CSV
def _fmt(v: float, nd: int) -> str:
    return "" if not np.isfinite(v) else f"{v:.{nd}f}"


def csv_rows(det: Detections, image_id: int | None = None) -> list[list[str]]:
    """Rows (columns ``CSV_COLUMNS``) for one scene's detections."""
    mb, ll = map_boxes(det), centres_lonlat(det)
    crs = det.crs.to_string() if _georef(det) else ""
    src = str(det.path) if det.path else ""
    iid = "" if image_id is None else str(image_id)
    rows = []
    ids, thr, ru = detection_ids(det), detection_thresholds(det), runner_ups(det)
    for k in range(len(det)):
        runner = ["", ""] if ru is None or ru[0][k] is None else [ru[0][k], f"{ru[1][k]:.5f}"]
        rows.append([src, iid, det.classes[int(det.labels[k])], f"{float(det.scores[k]):.5f}",
                     *(f"{float(v):.2f}" for v in det.boxes[k]), *(_fmt(v, 3) for v in mb[k]), crs,
                     _fmt(ll[k, 0], 8), _fmt(ll[k, 1], 8), ids[k], _fmt(thr[k], 5), *runner])
    return rows


def write_csv(dets: list[Detections], path: str | os.PathLike, *, image_ids: Sequence[int] | None = None) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for i, d in enumerate(dets):
        w.writerows(csv_rows(d, None if image_ids is None else image_ids[i]))
    return atomic_write_text(path, buf.getvalue())


# ------------------------------------------------------------------ COCO results
def coco_results(det: Detections, image_id: int, category_ids: Sequence[int] | None = None) -> list[dict]:
    """COCO results for one image: ``category_ids[label]`` (default ``label + 1``)."""
    ids = list(category_ids) if category_ids is not None else list(range(1, len(det.classes) + 1))
    out = []
    for (x1, y1, x2, y2), s, lab in zip(np.asarray(det.boxes, np.float64).tolist(), det.scores.tolist(),
                                         det.labels.tolist()):
        out.append({"image_id": int(image_id), "category_id": int(ids[int(lab)]),
                    "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                    "score": round(float(s), 5)})
    return out


def write_coco_results(dets: list[Detections], path: str | os.PathLike, *,
                       image_ids: Sequence[int] | None = None,
                       category_ids: Sequence[int] | None = None) -> Path:
    """COCO results JSON for ``dets``; image ids default to 1..N in order."""
    ids = list(image_ids) if image_ids is not None else list(range(1, len(dets) + 1))
    res = [r for d, iid in zip(dets, ids) for r in coco_results(d, iid, category_ids)]
    return atomic_write_text(path, json.dumps(res))


# ------------------------------------------------------------------ dispatch
def parse_formats(text: str | Sequence[str] | None) -> list[str]:
    """``"geojson,csv"`` (or a list) -> validated, de-duplicated format names (default geojson)."""
    if text is None:
        return ["geojson"]
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for f in (s.strip().lower() for s in items):
        if not f:
            continue
        if f not in FORMATS:
            raise ValueError(f"unknown output format {f!r}; expected some of {', '.join(FORMATS)}")
        if f not in out:
            out.append(f)
    if not out:
        raise ValueError("no output format given; expected some of " + ", ".join(FORMATS))
    return out


def format_for_path(path: str | os.PathLike) -> str | None:
    """The format a single output file name asks for (``.json`` = COCO results), else None."""
    name = str(path).lower()
    for fmt, suffix in (("coco", ".coco.json"), ("geojson", ".geojson"), ("gpkg", ".gpkg"),
                        ("csv", ".csv"), ("coco", ".json")):
        if name.endswith(suffix):
            return fmt
    return None


def write_detections(dets: list[Detections], path: str | os.PathLike, fmt: str, *,
                     image_ids: Sequence[int] | None = None,
                     category_ids: Sequence[int] | None = None) -> Path:
    """Write ``dets`` to ``path`` in format ``fmt`` (a key of ``FORMATS``), atomically."""
    if fmt == "geojson":
        return write_geojson(dets, path)
    if fmt == "gpkg":
        return write_gpkg(dets, path)
    if fmt == "csv":
        return write_csv(dets, path, image_ids=image_ids)
    if fmt == "coco":
        return write_coco_results(dets, path, image_ids=image_ids, category_ids=category_ids)
    raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
