"""Batch prediction: many scenes in, detections out, resumable. Torch-free.

``predict_files(model, inputs, out)`` scores every input and returns a summary dict.

Inputs (any mix): image files, folders (their images, sorted), glob patterns, manifests (``.txt``,
one path, folder or glob per line, relative to the manifest; blank lines and ``#`` comments
skipped) and COCO dataset JSON files (their images; COCO results then carry the dataset's image
ids, and its category ids matched to the model's classes by name). The same file listed twice
is scored once.

Where the results go depends on ``out``:

- **a file** (``out`` ends in ``.geojson``, ``.gpkg``, ``.csv`` or ``.json`` = COCO results, and is
  not an existing folder): all scenes go into that one file, written when the job ends. For
  small jobs; not resumable.
- **a folder** (anything else): one output per scene and format, ``OUT/<name>.geojson``,
  ``.gpkg``, ``.csv``, ``.coco.json`` (and ``<name>.quicklook.png``), ``<name>`` being the file's
  stem made unique in the job (``scene``, ``scene-2``, ...). Each file is written atomically;
  after all of a scene's files are written, a line is appended to ``OUT/journal.jsonl`` with the
  scene's source fingerprint (resolved path, size, mtime) and each output's SHA-256. With
  ``resume=True`` a scene in the journal is skipped only when its files all exist, its source
  is unchanged and each output still holds what the journal says (names are handed out by
  input order, so another input list can give ``scene.geojson`` to another ``scene.tif``);
  otherwise it is re-scored, with a log line saying why. So a killed job picks up where it
  stopped. At the end: ``OUT/coco_results.json`` (all scenes, for
  ``coco``), ``OUT/all_detections.csv`` (for ``csv``) and ``OUT/summary.json``. A job holds
  ``OUT/.revet.lock`` while it runs: a second job into the same folder waits for it, and a
  start removes only the temporary files of processes that are gone.

An input that cannot be scored (missing, empty, corrupt, too few bands) is logged with its name
and skipped; the summary lists it under ``failed`` and the command exits non-zero.
"""
from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from detector.hashing import sha256_file
from detector.outputs import (FORMATS, LOCK_FILE, atomic_write_text, check_writable, folder_lock, format_for_path,
                              provenance, scene_provenance,
                              parse_formats, remove_stale_temps, write_detections)
from detector.raster import MAX_MEGAPIXELS, is_gdal_path, path_name
from detector.runner import Detections, Detector
from detector.styles import detection_qml, style_output

log = logging.getLogger("revet.predict")
STYLED = ("geojson", "gpkg")  # formats QGIS opens as layers: given a style

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".vrt", ".img"}
JOURNAL, JOB, SUMMARY = "journal.jsonl", "job.json", "summary.json"
COCO_ALL, CSV_ALL = "coco_results.json", "all_detections.csv"
QUICKLOOK_SUFFIX = ".quicklook.png"
_RESERVED = {"journal", "job", "summary", "coco_results", "all_detections"}


@dataclass
class Scene:
    """One input of a job: ``name`` is its output stem, unique in the job; ``path`` a ``Path``,
    or a ``str`` for GDAL paths (``/vsis3/...``, ``/vsicurl/https://...``, ``raster.is_gdal_path``)."""

    path: Path | str
    image_id: int | None = None
    name: str = ""


def scene_key(path: Path | str) -> str:
    """The journal's key of a scene: its absolute path, or a GDAL path as given."""
    return os.fspath(path) if is_gdal_path(path) else os.path.abspath(path)


# ------------------------------------------------------------------ inputs
def _is_glob(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def _expand_one(item: str, base: Path | None, scenes: list[Scene], cats: dict[str, int]) -> None:
    if is_gdal_path(item):  # /vsis3/..., /vsicurl/https://...: GDAL's to open, not globbed or listed
        scenes.append(Scene(item))
        return
    p = Path(item)
    if base is not None and not p.is_absolute():
        p = base / p
    if p.is_dir():
        found = [Scene(q) for q in sorted(p.iterdir())
                 if q.suffix.lower() in IMAGE_SUFFIXES and not q.name.startswith(".")]
        if not found:
            log.warning("%s: folder holds no image files (%s)", p, ", ".join(sorted(IMAGE_SUFFIXES)))
        scenes += found
    elif _is_glob(item) and not p.exists():  # an existing file named like a glob (a[1].tif) is taken literally
        hits = sorted(Path(q) for q in glob.glob(str(p), recursive=True))
        if not hits:
            log.warning("%s: pattern matches no files", p)
        scenes += [Scene(q) for q in hits if q.is_file()]
    elif p.suffix.lower() == ".txt" and p.is_file():
        for line in p.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                _expand_one(line, p.parent, scenes, cats)
    elif p.suffix.lower() == ".json" and p.is_file():
        _expand_coco(p, scenes, cats)
    else:
        scenes.append(Scene(p))  # may be missing or unreadable: reported when scored


def _expand_coco(path: Path, scenes: list[Scene], cats: dict[str, int]) -> None:
    from detector.labels.coco import read_coco

    labels = read_coco(path)
    ids = labels.category_ids or list(range(1, len(labels.classes) + 1))
    for name, cid in zip(labels.classes, ids):
        if cats.setdefault(name, cid) != cid:
            raise ValueError(f"{path}: category {name!r} has id {cid}, but an earlier input gave it id {cats[name]}")
    scenes += [Scene(Path(rec.path), rec.image_id) for rec in labels.images]


def collect_scenes(inputs: Sequence[str | os.PathLike]) -> tuple[list[Scene], dict[str, int]]:
    """Expand ``inputs`` into scenes (de-duplicated, in order) with unique image ids and names.

    Returns the scenes and the category name -> id map of any COCO dataset inputs (else empty).
    Scenes from COCO datasets keep their image ids; the others get the lowest unused ids from 1.
    """
    raw: list[Scene] = []
    cats: dict[str, int] = {}
    for item in inputs:
        _expand_one(str(item), None, raw, cats)
    if not raw:
        raise ValueError(f"no images to score: {[str(i) for i in inputs]} name no image files "
                         "(empty folders or patterns that match nothing)")
    scenes, seen = [], {}
    for s in raw:
        key = scene_key(s.path)
        if key in seen:
            first = seen[key]
            if s.image_id is not None and first.image_id is not None and s.image_id != first.image_id:
                raise ValueError(f"{s.path}: listed twice with different image ids {first.image_id} and {s.image_id}")
            first.image_id = first.image_id if first.image_id is not None else s.image_id
            continue
        seen[key] = s
        scenes.append(s)
    used: dict[int, Path] = {}
    for s in scenes:
        if s.image_id is not None:
            if s.image_id in used:
                raise ValueError(f"image id {s.image_id} is given to both {used[s.image_id]} and {s.path}")
            used[s.image_id] = s.path
    nxt = 1
    for s in scenes:
        if s.image_id is None:
            while nxt in used:
                nxt += 1
            s.image_id, used[nxt] = nxt, s.path
    names: set[str] = set()
    for s in scenes:
        stem = path_name(s.path).split(".")[0] or "scene"
        name, k = stem, 1
        while name.lower() in names or name.lower() in _RESERVED:
            k += 1
            name = f"{stem}-{k}"
        names.add(name.lower())
        s.name = name
    return scenes, cats


def check_job_options(spec=None, *, min_score=None, overlap=None, batch_size: int = 8, threads=None,
                      max_megapixels=None) -> None:
    """Range-check a job's options once, before any scene: ValueError naming the option
    (``overlap`` is checked against ``spec.tile_size`` when a spec is given)."""
    import math

    if min_score is not None and not (isinstance(min_score, (int, float)) and math.isfinite(min_score)
                                      and 0 <= min_score <= 1):
        raise ValueError(f"--min-score: expected a number in [0, 1], got {min_score}")
    if spec is not None and overlap is not None and not 0 <= overlap < spec.tile_size:
        raise ValueError(f"--overlap: expected 0 <= overlap < {spec.tile_size} pixels (the model's window), "
                         f"got {overlap}")
    if batch_size < 1:
        raise ValueError(f"--batch-size: expected at least 1, got {batch_size}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads: expected at least 1 (omit it to use every core), got {threads}")
    if max_megapixels is not None and not (isinstance(max_megapixels, (int, float)) and max_megapixels > 0):
        raise ValueError(f"--max-megapixels: expected a positive number of megapixels, got {max_megapixels}")


def category_ids_for(classes: Sequence[str], cats: dict[str, int]) -> list[int]:
    """COCO category id of each model class: the dataset's id of the same name; classes the
    dataset lacks get new ids above its largest (with a warning); no dataset: 1..K."""
    if not cats:
        return list(range(1, len(classes) + 1))
    out, nxt = [], max(cats.values()) + 1
    for c in classes:
        if c in cats:
            out.append(cats[c])
        else:
            log.warning("model class %r is not a category of the COCO input; its results get category id %d", c, nxt)
            out.append(nxt)
            nxt += 1
    return out


# ------------------------------------------------------------------ progress
class Progress:
    """One progress line on stderr: scenes done/total, scenes/min, megapixels done and MP/s,
    elapsed, ETA, and seconds spent per stage (read, infer, merge, write; summed over workers,
    so they can exceed the elapsed time). Rewritten in place on a terminal, else printed at most
    every ``every`` seconds (and at the end). The ETA is from megapixels when the job's total is
    known (``total_megapixels``, set once every scene's size is known), else from scenes."""

    def __init__(self, total: int, *, skipped: int = 0, stream=None, every: float = 10.0,
                 enabled: bool = True) -> None:
        self.total, self.skipped, self.every, self.enabled = total, skipped, every, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self.last = -1e9
        self.total_megapixels: float | None = None  # of the scenes this run scores

    def update(self, done: int, name: str = "", *, megapixels: float | None = None,
               stages: dict | None = None) -> None:
        """``done``: scenes finished (scored or failed) in this run, not counting skipped ones;
        ``megapixels``: raster megapixels of the scenes scored so far in this run; ``stages``:
        seconds per stage so far."""
        if not self.enabled:
            return
        now = time.monotonic()
        final = self.skipped + done >= self.total
        if not self.tty and not final and now - self.last < self.every:
            return
        self.last = now
        el = now - self.t0
        rate = done / el if el > 0 else 0.0
        left = self.total - self.skipped - done
        eta = _hms(left / rate) if rate > 0 else "?"
        mp = ""
        if megapixels is not None:
            mps = megapixels / el if el > 0 else 0.0
            mp = f" {megapixels:.1f} MP {mps:.2f} MP/s"
            if self.total_megapixels is not None and mps > 0:
                eta = _hms(max(self.total_megapixels - megapixels, 0.0) / mps) if left else _hms(0)
        st = "".join(f" {k} {v:.1f}s" for k, v in (stages or {}).items())
        line = (f"[{self.skipped + done}/{self.total}] {100 * (self.skipped + done) / max(self.total, 1):.0f}% "
                f"{rate * 60:.1f} scenes/min{mp} elapsed {_hms(el)} ETA {eta}{st} {name}")
        if self.tty:
            self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# ------------------------------------------------------------------ journal
JOURNAL_HEADER = {"revet_journal": 1}  # first line: a new journal is never a zero-byte file


def start_journal(path: Path) -> None:
    """A new, empty journal (its header line only), written atomically and fsynced."""
    atomic_write_text(path, json.dumps(JOURNAL_HEADER) + "\n")


def source_fingerprint(path: Path | str) -> dict:
    """What identifies a scene's source for ``--resume``: ``{"path", "size", "mtime_ns"}`` of the
    resolved local file (symlinks followed); a GDAL path (``raster.is_gdal_path``) as given,
    without size or time (not fetched). A missing file gives ``size`` None."""
    if is_gdal_path(path):
        return {"path": os.fspath(path), "size": None, "mtime_ns": None}
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError:
        return {"path": str(p), "size": None, "mtime_ns": None}
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_journal(path: Path) -> dict[str, dict]:
    """Finished scenes by absolute source path (the last line of a scene wins). The header line
    and a torn last line (a killed write) are ignored."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            done[entry["key"]] = entry
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return done


def _append_line(path: Path, entry: dict) -> None:
    # One write() of one line to an O_APPEND file; fsync so a finished scene stays finished.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        data = ("\n" + json.dumps(entry) + "\n").encode()  # leading newline seals a torn line
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _scene_outputs(scene: Scene, formats: list[str], quicklook: bool) -> dict[str, str]:
    outs = {f: scene.name + FORMATS[f] for f in formats}
    if quicklook:
        outs["quicklook"] = scene.name + QUICKLOOK_SUFFIX
    return outs


def output_hashes(out: Path, outputs: dict[str, str]) -> dict[str, str]:
    """SHA-256 of each output file (``outputs``: kind -> file name in ``out``), as journalled."""
    return {k: sha256_file(out / v) for k, v in outputs.items()}


def stale_reason(entry: dict | None, scene: Scene, wanted: dict[str, str], out: Path) -> str | None:
    """None when the journal ``entry`` proves ``scene`` done: same output names and image id,
    every ``wanted`` output present with the SHA-256 the journal recorded, and the source file
    unchanged (:func:`source_fingerprint`); else why it must be scored again."""
    if not entry:
        return "not in the journal"
    if entry.get("name") != scene.name or entry.get("image_id") != scene.image_id:
        return (f"its output name or image id changed ({entry.get('name')!r}, {entry.get('image_id')} "
                f"-> {scene.name!r}, {scene.image_id})")
    have = entry.get("outputs", {})
    missing = [v for k, v in wanted.items() if have.get(k) != v or not (out / v).is_file()]
    if missing:
        return f"output {', '.join(missing)} missing"
    hashes, src = entry.get("sha256"), entry.get("source_id")
    if not isinstance(hashes, dict) or not isinstance(src, dict):
        return "its journal line has no source fingerprint or output hashes (an older journal)"
    now = source_fingerprint(scene.path)
    if now != src:
        changed = [k for k in ("path", "size", "mtime_ns") if now.get(k) != src.get(k)]
        return f"the source changed since it was scored ({', '.join(changed)} differ)"
    for k, v in wanted.items():
        if hashes.get(k) != sha256_file(out / v):
            return f"{v} no longer holds what this scene wrote there (SHA-256 differs from the journal's)"
    return None


def _is_done(entry: dict | None, scene: Scene, wanted: dict[str, str], out: Path) -> bool:
    return stale_reason(entry, scene, wanted, out) is None


# ------------------------------------------------------------------ engines and shards
ENGINES = ("single", "ray")


def check_engine_options(engine: str, *, address=None, actors=None, gpus_per_actor=None) -> None:
    """Refuse an unknown engine and Ray-only options without ``--engine ray`` (ValueError naming
    the option and what was expected)."""
    import math

    if engine not in ENGINES:
        raise ValueError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if engine != "ray":
        given = [flag for flag, v in (("--address", address), ("--actors", actors),
                                      ("--gpus-per-actor", gpus_per_actor)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only with --engine ray (the engine is {engine!r})")
    if actors is not None and (not isinstance(actors, int) or actors < 1):
        raise ValueError(f"--actors: expected a whole number of at least 1, got {actors}")
    if gpus_per_actor is not None and not (isinstance(gpus_per_actor, (int, float)) and math.isfinite(gpus_per_actor)
                                           and gpus_per_actor >= 0):
        raise ValueError(f"--gpus-per-actor: expected a number >= 0 (fractions share a GPU), got {gpus_per_actor}")


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"K/N"`` or ``(K, N)`` -> ``(K, N)`` with 1 <= K <= N; None stays None."""
    if shard is None:
        return None
    try:
        k, n = (int(v) for v in (shard.split("/") if isinstance(shard, str) else shard))
    except (ValueError, TypeError):
        raise ValueError(f"--shard: expected K/N (this job's number K of N shards, 1 <= K <= N), "
                         f"got {shard!r}") from None
    if not 1 <= k <= n:
        raise ValueError(f"--shard: expected K/N with 1 <= K <= N, got {k}/{n}")
    return k, n


def shard_scenes(scenes: Sequence[Scene], k: int, n: int) -> list[Scene]:
    """Shard ``k`` of ``n``'s share: scene ``i`` (0-based, in input order after expansion) goes to
    shard ``i mod n + 1``. Every shard must be given the same inputs: names and image ids are
    those of the whole job, so the shards' files together are the single run's."""
    return [s for i, s in enumerate(scenes) if i % n == k - 1]


def state_files(shard: tuple[int, int] | None) -> dict[str, str]:
    """Names of a job's own state files in its folder: ``journal``, ``job``, ``summary`` and
    ``lock``; a shard's carry ``.K-of-N`` (``journal.2-of-8.jsonl``) so shards never share one."""
    if shard is None:
        return {"journal": JOURNAL, "job": JOB, "summary": SUMMARY, "lock": LOCK_FILE}
    tag = f"{shard[0]}-of-{shard[1]}"
    return {"journal": f"journal.{tag}.jsonl", "job": f"job.{tag}.json", "summary": f"summary.{tag}.json",
            "lock": f".revet.{tag}.lock"}


def _score_single(det: Detector, scenes: Sequence[Scene], *, min_score: float | None, overlap: int,
                  batch_size: int, max_megapixels: float | None = MAX_MEGAPIXELS, skip: bool = True):
    """The single-process engine: scenes one after another, each read by one background thread
    while one ONNX Runtime session scores it (:meth:`Detector.predict_scene`; ``min_score`` None:
    the spec's thresholds, per class where it has them). Yields
    ``(scene, detections, None, seconds)`` or ``(scene, None, error, seconds)``, in input order."""
    for s in scenes:
        ts = time.monotonic()
        try:
            r = det.predict_scene(s.path, min_score=min_score, overlap=overlap, batch_size=batch_size,
                                  max_megapixels=max_megapixels, skip=skip)
        except Exception as e:  # one bad scene must not end a job of thousands
            yield s, None, e, time.monotonic() - ts
        else:
            yield s, r, None, time.monotonic() - ts


def _error_type(e: BaseException) -> str:
    return getattr(e, "kind", None) or type(e).__name__  # a Ray worker's error keeps its type name


# ------------------------------------------------------------------ the job
def output_mode(out: Path, formats, *, resume: bool, shard) -> tuple[bool, list[str]]:
    """(single, formats): ``out`` named like one output file (``x.geojson``) and not a folder
    is single-file mode (one format, no resume, no shards); else folder mode with ``formats``.
    Raises ValueError for the combinations single-file mode cannot do."""
    single_fmt = format_for_path(out)
    if single_fmt is None or out.is_dir():
        return False, parse_formats(formats)
    if formats is not None and parse_formats(formats) != [single_fmt]:
        raise ValueError(f"{out}: a {single_fmt!r} file name, but formats {parse_formats(formats)} were asked "
                         "for; give a folder as --out to write several formats")
    if resume:
        raise ValueError(f"{out}: --resume needs a folder as --out (one output per scene and a "
                         "journal); a single output file is written only when the job ends")
    if shard:
        raise ValueError(f"{out}: --shard needs a folder as --out (each shard writes its own per-scene "
                         "files and journal there)")
    return True, [single_fmt]


def load_job_detector(model, *, engine: str, device: str, threads, trt_cache) -> tuple[Detector, object, str]:
    """(detector, the Ray driver's model file or None, the model file scored: a shipped
    model's name resolves to its file, for the journal's model hash)."""
    if engine == "ray":
        from detector import engine_ray  # Ray is imported only when asked for

        det, model_file = engine_ray.driver_detector(model)
    else:
        options = {"trt_cache": trt_cache} if trt_cache is not None else {}
        det = model if isinstance(model, Detector) else Detector.load(model, device=device, threads=threads, **options)
        model_file = None
    name = str(getattr(det.backend, "path", "<detector>" if isinstance(model, Detector) else model))
    return det, model_file, name


@dataclass
class Job:
    """One ``predict_files`` job: where and what it writes, with which model."""

    out: Path
    single: bool
    fmts: list[str]
    quicklook: bool
    det: Detector
    names: dict[str, str]      # state file names (:func:`state_files`)
    cat_ids: list[int]
    qml: str                   # the QGIS style of every styled output
    provenance: dict           # :func:`detector.outputs.provenance` of the job


def open_journal(job: Job, record: dict, *, resume: bool) -> dict[str, dict]:
    """Folder mode: write ``record`` as the job file (or, on resume, check that the earlier
    job's model and settings match it) and return the journal of scenes already done."""
    path = job.out / job.names["job"]
    if resume and path.exists():
        old = json.loads(path.read_text())
        old.setdefault("skip", True)  # jobs written before the first pass existed scored as with it
        old.setdefault("one_class", False)  # and before --one-class, without it
        diff = [k for k in ("model_sha256", "min_score", "overlap", "skip", "one_class") if old.get(k) != record[k]]
        if diff:
            raise ValueError(f"{job.out}: cannot resume: {', '.join(diff)} differ from the earlier job "
                             f"({ {k: old.get(k) for k in diff} } vs { {k: record[k] for k in diff} }); "
                             "use a new --out folder or run without --resume")
        return read_journal(job.out / job.names["journal"])
    atomic_write_text(path, json.dumps(record, indent=2))
    start_journal(job.out / job.names["journal"])
    return {}


def plan_scenes(job: Job, scenes: list[Scene], journal: dict[str, dict]) -> tuple[list[dict], list[Scene]]:
    """(records of scenes the journal holds whole and current, scenes to score)."""
    records, todo = [], []
    for s in scenes:
        entry = journal.get(scene_key(s.path))
        why = None if job.single else stale_reason(entry, s, _scene_outputs(s, job.fmts, job.quicklook), job.out)
        if not job.single and why is None:
            records.append({**entry, "resumed": True})
            continue
        if entry is not None and why is not None:
            log.info("re-scoring %s: %s", s.path, why)
        todo.append(s)
    if records:
        log.info("resuming: %d of %d scenes already done in %s", len(records), len(scenes), job.out)
    return records, todo


def write_scene(job: Job, s: Scene, r: Detections, seconds: float, results: list) -> dict:
    """Write one scored scene's outputs (folder mode; single-file mode keeps ``r`` in
    ``results`` for the final file) and return its record, journalled in folder mode.
    Raises whatever the writing raises (the caller lists the scene as failed)."""
    tw = time.monotonic()
    r.extra["provenance"] = scene_provenance(job.provenance, s.path)
    if job.single:
        results.append((s, r))
        if job.quicklook:
            _quicklook(r, job.out.parent / (s.name + QUICKLOOK_SUFFIX), job.det)
    else:
        wanted = _scene_outputs(s, job.fmts, job.quicklook)
        for f in job.fmts:
            write_detections([r], job.out / wanted[f], f, image_ids=[s.image_id], category_ids=job.cat_ids)
            if f in STYLED:
                style_output(job.out / wanted[f], job.qml)
        if job.quicklook:
            _quicklook(r, job.out / wanted["quicklook"], job.det)
    rec = {"key": scene_key(s.path), "source": str(s.path), "name": s.name, "image_id": s.image_id,
           "detections": len(r), "windows": int(r.extra.get("windows", 0)), "width": r.width, "height": r.height,
           "skipped": int(r.extra.get("skipped", 0)), "skip_fraction": float(r.extra.get("skip_fraction", 0.0))}
    if not job.single:
        # after styling (which changes a GeoPackage): the bytes a resume checks
        rec.update(outputs=wanted, source_id=source_fingerprint(s.path), sha256=output_hashes(job.out, wanted))
        rec["seconds"] = round(seconds + time.monotonic() - tw, 3)
        _append_line(job.out / job.names["journal"], rec)
    return rec


def predict_files(model: str | os.PathLike | Detector, inputs: Sequence[str | os.PathLike],
                  out: str | os.PathLike, *, min_score: float | None = None, device: str = "auto",
                  batch_size: int = 8, overlap: int | None = None,
                  formats: str | Sequence[str] | None = None, resume: bool = False,
                  threads: int | None = None, quicklook: bool = False, progress: bool = False,
                  engine: str = "single", shard: str | tuple[int, int] | None = None,
                  address: str | None = None, actors: int | None = None,
                  gpus_per_actor: float | None = None, trt_cache: str | os.PathLike | None = None,
                  max_megapixels: float | None = MAX_MEGAPIXELS, skip: bool = True,
                  one_class: bool = False) -> dict:
    """Score every input and write detections to ``out`` (a file or a folder; see the module
    docstring). Returns the job summary (also written to ``OUT/summary.json`` in folder mode).

    ``engine``: ``"single"`` (this process) or ``"ray"`` (:mod:`detector.engine_ray`: windows
    read by Ray tasks and scored by ``actors`` Detector actors of ``gpus_per_actor`` GPUs and
    ``threads`` threads each, on a new local Ray instance or the cluster at ``address``); both
    give the same detections and write the same files. ``shard``: ``"K/N"``, score only this
    shard's share of the inputs (:func:`shard_scenes`), with its own journal, job, summary and
    lock (:func:`state_files`); the last shard to finish writes the job-wide files.
    ``device``: ``auto``, ``cpu``, ``cuda[:N]``, ``tensorrt[:N]`` (a GPU asked for by name is
    used or the job fails); ``trt_cache``: folder for TensorRT engines. ``max_megapixels``: a
    scene larger than this (raster pixels / 1e6; None: no limit) is refused from its header,
    before any of its windows is read, and listed as failed (:func:`raster.check_size`). ``skip``: scene windows
    the first pass (:mod:`detector.prescreen`) finds certainly empty are not scored (False,
    ``--no-skip``: every window with data is); each scene's record has ``skipped`` and
    ``skip_fraction``, the summary the job's totals and the ``prescreen`` settings.
    ``one_class``: one class per object, the runner-up class recorded
    (:meth:`Detector.one_class_per_object`, ``--one-class``).

    Raises ValueError for job-level problems (unknown format, a format that contradicts the
    file name of ``out``, ``resume`` with a single-file ``out``, a resume whose model or settings
    differ from the journal's), RuntimeError when the device asked for cannot be used.
    Per-scene problems never raise: they are logged and listed.
    """
    from detector.backends import parse_device

    out = Path(out)
    sh = parse_shard(shard)
    check_engine_options(engine, address=address, actors=actors, gpus_per_actor=gpus_per_actor)
    single, fmts = output_mode(out, formats, resume=resume, shard=sh)
    t0 = time.monotonic()
    check_job_options(None, min_score=min_score, batch_size=batch_size, threads=threads,
                      max_megapixels=max_megapixels)
    parse_device(device)  # an unknown --device fails before the model is loaded
    check_writable(out, folder=not single)  # before any scene is scored, not at the final write
    det, model_file, model_name = load_job_detector(model, engine=engine, device=device, threads=threads,
                                                    trt_cache=trt_cache)
    det.one_class = bool(one_class)  # --one-class: the best-scoring class per object, runner-up recorded
    providers = getattr(det.backend, "providers", None) if engine == "single" else None
    if providers:
        log.info("%s: ONNX Runtime providers in use: %s", model_name, ", ".join(providers))
    check_job_options(det.spec, overlap=overlap)
    job_scenes, cats = collect_scenes(inputs)
    scenes = shard_scenes(job_scenes, *sh) if sh else job_scenes
    min_score = None if min_score is None else float(min_score)
    # what the job keeps, as recorded in its files: one score (--min-score, or a model with one
    # threshold), or one per class in the model's class order (the spec's class_thresholds)
    per_class = det.spec.thresholds(min_score)
    thr = float(per_class[0]) if (per_class == per_class[0]).all() else [float(t) for t in per_class]
    ov = det.spec.overlap if overlap is None else int(overlap)
    # recorded in every detection file: the model, its operating point per class (the
    # ``threshold`` property, whatever --min-score kept), the Revet version
    job = Job(out=out, single=single, fmts=fmts, quicklook=quicklook, det=det, names=state_files(sh),
              cat_ids=category_ids_for(det.spec.classes, cats),
              qml=detection_qml(det.spec.classes),  # QGIS style: a .qml sidecar, and inside GeoPackages
              provenance=provenance(model if isinstance(model, (str, os.PathLike)) else model_name, model_name,
                                    det.spec.classes, det.spec.thresholds(), min_score))

    lock = contextlib.ExitStack()
    with lock:
        ray_session = None
        if engine == "ray":
            from detector import engine_ray

            ray_session = lock.enter_context(engine_ray.session(address))
        journal: dict[str, dict] = {}
        record: dict = {}
        if not single:
            out.mkdir(parents=True, exist_ok=True)
            lock.enter_context(folder_lock(out, job.names["lock"]))  # a second job into this folder waits
            remove_stale_temps(out)  # only files of this machine's processes that are gone (a killed run)
            record = {"model": os.path.abspath(model_name), "model_sha256": sha256_file(Path(model_name))
                      if Path(model_name).is_file() else None, "min_score": thr, "overlap": ov, "skip": bool(skip),
                      "one_class": bool(one_class)}
            if sh:
                record["shard"] = f"{sh[0]}/{sh[1]}"
            journal = open_journal(job, record, resume=resume)

        order = {scene_key(s.path): i for i, s in enumerate(scenes)}
        results: list[tuple[Scene, Detections]] = []
        failed: list[dict] = []
        records, todo = plan_scenes(job, scenes, journal)
        prog = Progress(len(scenes), skipped=len(records), enabled=progress)
        tiles = pixels = 0
        stages = {"read": 0.0, "infer": 0.0, "merge": 0.0, "write": 0.0}  # seconds, summed over workers
        engine_stats: dict = {}
        t_score = time.monotonic()
        if engine == "ray":
            scored = engine_ray.score_scenes(
                det, model_file, todo, min_score=min_score, overlap=ov, batch_size=batch_size, device=device,
                threads=threads, actors=actors, gpus_per_actor=gpus_per_actor, trt_cache=trt_cache,
                stats=engine_stats, progress=prog, session_info=ray_session, max_megapixels=max_megapixels,
                skip=skip)
        else:
            scored = _score_single(det, todo, min_score=min_score, overlap=ov, batch_size=batch_size,
                                   max_megapixels=max_megapixels, skip=skip)
        try:
            with contextlib.closing(scored):
                for k, (s, r, err, seconds) in enumerate(scored, 1):
                    tw = time.monotonic()
                    if err is None:
                        try:
                            rec = write_scene(job, s, r, seconds, results)
                        except Exception as e:  # one bad scene (or a full disk) must not end a job of thousands
                            err = e
                    if err is not None:
                        log.error("skipping %s: %s", s.path, err)
                        failed.append({"path": str(s.path), "error": f"{_error_type(err)}: {err}"})
                        prog.update(k, path_name(s.path), megapixels=pixels / 1e6, stages=stages)
                        continue
                    for stage, v in r.extra.get("seconds", {}).items():
                        stages[stage] = stages.get(stage, 0.0) + v
                    stages["write"] += time.monotonic() - tw
                    rec.setdefault("seconds", round(seconds + time.monotonic() - tw, 3))
                    records.append(rec)
                    tiles += rec["windows"]
                    pixels += r.width * r.height
                    log.debug("[%d/%d] %s: %d detections", k, len(todo), s.path, len(r))
                    prog.update(k, path_name(s.path), megapixels=pixels / 1e6, stages=stages)
        finally:
            now = time.monotonic()
            # throughput from the first window read: a Ray instance's start-up is reported apart
            read_s = max(now - engine_stats.get("first_read", t_score), 0.0)
            records.sort(key=lambda r: order.get(r.get("key"), len(order)))
            summary = job_summary(job, records, failed, scenes, engine=engine, shard=sh, thr=thr, model_name=model_name,
                                  tiles=tiles, pixels=pixels, skip=skip, score_s=now - t_score, read_s=read_s,
                                  stages=stages, providers=providers, engine_stats=engine_stats, t0=t0)
            if sh:
                summary["job_inputs"] = len(job_scenes)
            if not single:
                atomic_write_text(out / job.names["summary"], json.dumps(summary, indent=2))

        if single:
            ordered = sorted(results, key=lambda sr: order[scene_key(sr[0].path)])
            write_detections([r for _, r in ordered], out, fmts[0], image_ids=[s.image_id for s, _ in ordered],
                             category_ids=job.cat_ids)
            if fmts[0] in STYLED:
                style_output(out, job.qml)
        elif sh:
            summary["combined"] = _combine_shards(out, job_scenes, fmts, quicklook, sh, record)
        else:
            _write_combined(out, scenes, records, fmts)
        return summary


def job_summary(job: Job, records: list[dict], failed: list[dict], scenes: list[Scene], *, engine: str, shard,
                thr, model_name: str, tiles: int, pixels: int, skip: bool, score_s: float, read_s: float,
                stages: dict, providers, engine_stats: dict, t0: float) -> dict:
    """The job's ``summary.json``: counts, throughput (megapixels per second from the first
    window read), per-stage seconds, the first pass's totals and one record per scene."""
    resumed = sum(1 for r in records if r.get("resumed"))
    skipped = sum(r.get("skipped", 0) for r in records)
    summary = {
        "model": model_name, "out": str(job.out), "mode": "file" if job.single else "folder", "formats": job.fmts,
        "engine": engine, "shard": f"{shard[0]}/{shard[1]}" if shard else None,
        "inputs": len(scenes), "scored": len(records) - resumed, "resumed": resumed, "failed": failed,
        "detections": sum(r["detections"] for r in records), "min_score": thr,
        "category_ids": dict(zip(job.det.spec.classes, job.cat_ids)),
        "tiles": tiles, "megapixels": round(pixels / 1e6, 3),
        "skipped": skipped, "skip_fraction": round(skipped / max(sum(r.get("windows", 0) for r in records), 1), 4),
        "prescreen": job.det.prescreen.to_dict() if skip and job.det.prescreen is not None else None,
        "tiles_per_s": round(tiles / score_s, 2) if score_s > 0 else None,
        "megapixels_per_s": round(pixels / 1e6 / read_s, 3) if read_s > 0 and pixels else None,
        "scoring_seconds": round(read_s, 2),
        "stages": {k: round(v, 2) for k, v in stages.items()},
        "providers": providers if engine == "single" else engine_stats.get("providers"),
        "seconds": round(time.monotonic() - t0, 2),
        "complete": len(records) + len(failed) == len(scenes),
        "scenes": [{k: v for k, v in r.items() if k != "key"} for r in records],
    }
    if engine == "ray":
        summary["ray"] = engine_stats.get("ray")
    return summary


def _combine_shards(out: Path, scenes: list[Scene], fmts: list[str], quicklook: bool, shard: tuple[int, int],
                    job: dict) -> bool:
    """After shard ``K/N`` has finished: when every shard of the job has a complete summary in
    ``out`` with the same model and settings, write the job-wide files (``coco_results.json``,
    ``all_detections.csv``) from all shards' journals, exactly as the single run would, and
    return True; else leave them to the last shard to finish (False). Serialised by a lock."""
    n = shard[1]
    with folder_lock(out, ".revet.combine.lock"):
        entries: dict[str, dict] = {}
        for k in range(1, n + 1):
            names = state_files((k, n))
            try:
                summ = json.loads((out / names["summary"]).read_text())
                other = json.loads((out / names["job"]).read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                log.info("%s: shard %d/%d has not finished; the last shard to finish writes the job-wide files",
                         out, k, n)
                return False
            diff = [key for key in ("model_sha256", "min_score", "overlap", "skip") if other.get(key) != job.get(key)]
            if diff:
                log.warning("%s: shard %d/%d ran with other %s than shard %d/%d; job-wide files not written",
                            out, k, n, ", ".join(diff), shard[0], n)
                return False
            if not summ.get("complete"):
                log.info("%s: shard %d/%d did not finish all its scenes; job-wide files not written", out, k, n)
                return False
            entries.update(read_journal(out / names["journal"]))
        records = []
        for s in scenes:
            e = entries.get(scene_key(s.path))
            if _is_done(e, s, _scene_outputs(s, fmts, quicklook), out):
                records.append(e)
        _write_combined(out, scenes, records, fmts)
        return True


def _quicklook(r: Detections, path: Path, det: Detector) -> None:
    from detector.quicklook import write_quicklook

    write_quicklook(r, path, det.spec.bands)


def _write_combined(out: Path, scenes: list[Scene], records: list[dict], fmts: list[str]) -> None:
    """Job-wide COCO results and CSV, assembled from the per-scene files, in input order."""
    by_name = {r["name"]: r for r in records}
    done = [s for s in scenes if s.name in by_name]
    if "coco" in fmts:
        res = []
        for s in done:
            res += json.loads((out / (s.name + FORMATS["coco"])).read_text())
        atomic_write_text(out / COCO_ALL, json.dumps(res))
    if "csv" in fmts:
        parts = []
        for i, s in enumerate(done):
            lines = (out / (s.name + FORMATS["csv"])).read_text().splitlines(keepends=True)
            parts += lines if i == 0 else lines[1:]
        if not parts:
            from detector.outputs import CSV_COLUMNS

            parts = [",".join(CSV_COLUMNS) + "\n"]
        atomic_write_text(out / CSV_ALL, "".join(parts))
