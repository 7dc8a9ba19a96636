"""The Ray engine of ``revet predict --engine ray``: Ray Data over the cores and GPUs of one
machine or of a cluster. Torch-free; imported only when asked for (needs ``revet[ray]``).

The unit of work is one window of one scene, so one huge scene spreads over many workers as
well as many small scenes do. Data flow (Ray Data, streaming, back-pressured)::

    driver   plan each scene from its header (size, CRS, window grid; ScenePlan); a scene that
             cannot be opened or has the wrong bands/dtype is reported at once, as in one process
      ->     table of windows (scene, window id, col, row, grid size, path, resampling factor),
             in blocks of one model batch (the same chunks of a scene's windows as one process)
      ->     read tasks (Ray tasks, 1 CPU each): the windows' pixels and valid masks with rasterio
             (runner.read_scene_window), GDAL's block cache capped per worker (GDAL_CACHE_MB)
      ->     Detector actors (an actor pool of ``actors``, each one ONNX Runtime session with
             ``gpus_per_actor`` GPUs and ``threads`` threads): preprocess, infer, and the
             per-window rules (Detector.skip_reason: nodata and the first pass, detector.prescreen;
             Detector.prepare_batch, Detector.window_part)
      ->     driver: per scene, once all its windows are in, the same merge as one process
             (Detector.merge_parts, finish_scene); predict_files then writes the same atomic
             per-scene files and journal line, so --resume works the same way.

Nothing is lost to a dead worker: Ray retries a read task whose process died (``max_retries``
-1), restarts a dead actor and retries its batches (``max_restarts``/``max_task_retries`` -1, Ray
Data's defaults), and the driver keeps the first copy of each window's result. The model file
is shipped to the actors through Ray's object store, so nodes need not share a file system for
it; the scenes must be readable from every node (a shared file system, ``/vsis3/``,
``/vsicurl/``). Outputs are written by the driver only.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import shutil
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from detector import raster
from detector.prescreen import Prescreen
from detector.runner import GDAL_CACHE_MB, Detections, Detector, ScenePlan, WindowPart, read_scene_window, skip_extra

log = logging.getLogger("revet.ray")

PLAN_THREADS = 8  # scene headers opened at once on the driver (I/O-bound for /vsis3/, /vsicurl/)
READ_SHARE = 0.1  # of the cluster's CPUs kept free of actors for read tasks (at least one CPU)


class SceneError(Exception):
    """A scene's failure in a Ray worker, carried to the driver: ``kind`` is the original
    exception's type name (``ValueError``, ``RasterioIOError``)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"--engine ray needs Ray Data, which is not installed ({e}); "
                           "pip install 'revet[ray]'") from None
    return ray


def driver_detector(model) -> tuple[Detector, Path]:
    """The driver's Detector (CPU, one thread; it supplies the spec and the merge) and the ``.onnx``
    file the actors load. ValueError for a model the actors cannot load (a ``.ckpt``, or an
    in-memory Detector without an ONNX file). A model with a scene companion
    (:attr:`Detector.scene`, larger windows) is scored with the companion for every scene: the
    actors load one file, and a batch job's scenes are large."""
    _require_ray()
    if isinstance(model, Detector):
        model = model.scene or model
        path = getattr(model.backend, "path", None)
        if path is None or Path(path).suffix.lower() != ".onnx":
            raise ValueError("--engine ray: the Detector given has no .onnx file for the actors to load; "
                             "pass the model's path")
        return model, Path(path)
    from detector import zoo

    path = zoo.resolve(model)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"{path}: --engine ray scores exported .onnx models (revet export CKPT), "
                         f"not {path.suffix or 'extension-less'} files")
    det = Detector.load(path, device="cpu", threads=1)
    det = det.scene or det
    return det, Path(det.backend.path)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


# ------------------------------------------------------------------ stage 1: read (Ray tasks)
def read_windows(batch: dict, *, bands: Sequence[int], tile: int) -> dict:
    """Ray Data task: a block of window rows -> the same rows with their pixels.

    In: ``scene, wid, col, row, width, height`` ints, ``factor`` float, ``path`` str (n rows).
    Out: ``scene, wid, col, row, width, height``; ``tile`` (n, T, T, C) raw pixels in the raster's
    dtype; ``valid`` (n, T, T) uint8 mask; ``error`` str ('' or ``Type: message`` of a window that
    could not be read); ``t_read`` seconds per row; ``read_start`` wall-clock time of the read;
    ``read_pid``, ``read_rss`` (peak MB) and ``node`` of the worker.
    """
    import rasterio

    from detector import raster

    n = len(batch["wid"])
    start = time.time()
    tiles = None
    valid = np.zeros((n, tile, tile), np.uint8)
    errors = np.full(n, "", dtype=object)
    t_read = np.zeros(n)
    opened: dict[str, object] = {}
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20):
        try:
            for i in range(n):
                t0 = time.perf_counter()
                path = str(batch["path"][i])
                try:
                    if path not in opened:
                        opened[path] = raster.open_raster(path)
                    img, v = read_scene_window(opened[path], bands, tile, int(batch["col"][i]), int(batch["row"][i]),
                                               float(batch["factor"][i]))
                    if tiles is None:
                        tiles = np.zeros((n, tile, tile, img.shape[2]), img.dtype)
                    elif img.dtype != tiles.dtype:  # scenes of two dtypes in one block (uint8 and float32)
                        tiles = tiles.astype(np.result_type(tiles.dtype, img.dtype))
                    tiles[i] = img
                    valid[i] = v
                except Exception as e:  # the scene fails, not the job
                    errors[i] = f"{type(e).__name__}: {e}"
                t_read[i] = time.perf_counter() - t0
        finally:
            for ds in opened.values():
                ds.close()
    if tiles is None:
        tiles = np.zeros((n, tile, tile, len(bands)), np.uint8)
    out = {k: np.asarray(batch[k]) for k in ("scene", "wid", "col", "row", "width", "height")}
    out.update(tile=tiles, valid=valid, error=errors, t_read=t_read, read_start=np.full(n, start),
               read_pid=np.full(n, os.getpid()), read_rss=np.full(n, _peak_rss_mb()),
               node=np.full(n, socket.gethostname(), dtype=object))
    return out


# ------------------------------------------------------------------ stage 2: infer (Ray actors)
class DetectorActor:
    """Ray Data actor: one ONNX Runtime session over the job's model (written from the object
    store to a private temporary file, loaded, then deleted) and the per-window keep rules.

    ``__call__``: rows of :func:`read_windows` -> per window its kept detections in grid pixels
    as raw bytes (``boxes`` float32 (N, 4), ``scores`` float32 (N,), ``labels`` int64 (N,),
    ``truncated`` bool (N,)), plus timings (``t_infer`` seconds per row, ``actor_ready`` wall-clock
    time the model was loaded), worker ids and the providers in use, and ``skip``: why the
    window was not scored ('' scored; ``nodata``, ``screened``: :meth:`Detector.skip_reason` with
    the first pass ``prescreen``, a :class:`~detector.prescreen.Prescreen` as a dict, or None).
    Rows with an error or a skip reason are passed on without inference.
    """

    def __init__(self, model: list, model_name: str, device: str, threads: int | None,
                 trt_cache: str | None, min_score: float | None, per_batch: int,
                 prescreen: dict | None = None) -> None:
        import ray

        from detector.backends import OnnxBackend, OpenVinoBackend, parse_device

        data = model[0] if isinstance(model[0], bytes) else ray.get(model[0])
        folder = Path(tempfile.mkdtemp(prefix="revet-model-"))
        try:
            path = folder / model_name
            path.write_bytes(data)
            backend = (OpenVinoBackend(path, threads=threads) if parse_device(device)[0] == "openvino"
                       else OnnxBackend(path, device=device, threads=threads, trt_cache=trt_cache))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.det = Detector(backend, backend.spec)
        self.thr = self.det.spec.thresholds(min_score)  # None: the spec's, per class where it has them
        self.per = int(per_batch)
        self.screen = Prescreen(**prescreen) if prescreen is not None else None
        self.providers = ",".join(backend.providers)
        self.ready = time.time()  # model loaded: the end of this actor's start-up

    def __call__(self, batch: dict) -> dict:
        n = len(batch["wid"])
        t0 = time.perf_counter()
        empty = np.zeros(0, np.uint8).tobytes()
        cols = {k: np.full(n, empty, dtype=object) for k in ("boxes", "scores", "labels", "truncated")}
        valid = batch["valid"].astype(bool)
        skip = np.full(n, "", dtype=object)
        # one model call per chunk of a scene's windows (Ray may hand over several blocks at once),
        # less the windows skipped: the same windows in the same call as in one process
        chunks: dict[tuple[int, int], list[int]] = {}
        for i in range(n):
            if batch["error"][i]:
                continue
            skip[i] = self.det.skip_reason(batch["tile"][i], valid[i], self.screen) or ""
            if not skip[i]:
                chunks.setdefault((int(batch["scene"][i]), int(batch["wid"][i]) // self.per), []).append(i)
        for todo in chunks.values():
            boxes, scores, labels = self.det.backend.run(
                self.det.prepare_batch([batch["tile"][i] for i in todo], [valid[i] for i in todo]))
            for j, i in enumerate(todo):
                p = self.det.window_part(int(batch["wid"][i]), int(batch["col"][i]), int(batch["row"][i]),
                                         boxes[j], scores[j], labels[j], valid[i], int(batch["width"][i]),
                                         int(batch["height"][i]), self.thr)
                cols["boxes"][i] = np.ascontiguousarray(p.boxes, np.float32).tobytes()
                cols["scores"][i] = np.ascontiguousarray(p.scores, np.float32).tobytes()
                cols["labels"][i] = np.ascontiguousarray(p.labels, np.int64).tobytes()
                cols["truncated"][i] = np.ascontiguousarray(p.truncated, bool).tobytes()
        t_infer = (time.perf_counter() - t0) / max(n, 1)
        out = {k: batch[k] for k in ("scene", "wid", "error", "t_read", "read_start", "read_pid", "read_rss", "node")}
        out.update(cols, skip=skip, t_infer=np.full(n, t_infer), infer_pid=np.full(n, os.getpid()), actor_ready=np.full(n, self.ready),
                   infer_rss=np.full(n, _peak_rss_mb()), providers=np.full(n, self.providers, dtype=object))
        return out


# ------------------------------------------------------------------ the driver
class _Pending:
    """A scene whose windows are still coming: parts, windows seen, seconds per stage."""

    def __init__(self, scene, plan: ScenePlan) -> None:
        self.scene, self.plan = scene, plan
        self.parts: list[WindowPart] = []
        self.seen: set[int] = set()
        self.skipped: dict[str, int] = {}
        self.read = self.infer = 0.0
        self.start = math.inf


def resources_for(cluster: dict, device: str, *, actors: int | None, threads: int | None,
                  gpus_per_actor: float | None) -> dict:
    """The actor pool for a cluster of ``cluster`` resources (``{"CPU": 16, "GPU": 2}``).

    Returns ``actors`` (default: one per ``gpus_per_actor`` share of the GPUs; on CPUs one per 8
    CPUs), ``gpus_per_actor`` (default 1 when a GPU device is asked for, or ``auto`` on a
    cluster with GPUs; else 0), ``threads`` (ONNX Runtime threads per actor; default 2 on a GPU,
    else the CPUs divided among the actors) and ``cpus_per_actor`` (what each actor reserves:
    at most ``threads``, and never so much that no CPU is left for read tasks: ``READ_SHARE``
    of the CPUs, at least one, stay for them; a reservation is a scheduling token, the
    threads may use more)."""
    from detector.backends import GPU_PROVIDERS, parse_device

    kind, _ = parse_device(device)
    cpus, gpus = float(cluster.get("CPU", 1)), float(cluster.get("GPU", 0))
    gpa = gpus_per_actor
    if gpa is None:
        gpa = 1.0 if (kind in GPU_PROVIDERS or (kind == "auto" and gpus >= 1)) else 0.0
    if gpa > 0 and gpus < gpa:
        raise RuntimeError(f"--gpus-per-actor {gpa:g}: the Ray cluster has {gpus:g} GPUs "
                           f"(resources {dict(cluster)}); use --device cpu or join a cluster with GPUs")
    n = actors or (max(1, int(gpus // gpa)) if gpa > 0 else max(1, int(cpus // 8)))
    t = threads or (2 if gpa > 0 else max(1, int(cpus // n)))
    free = max(1.0, READ_SHARE * cpus)
    per = min(float(t), max((cpus - free) / n, 0.1)) if gpa == 0 else min(1.0, max((cpus - free) / n, 0.1))
    return {"actors": n, "gpus_per_actor": gpa, "threads": t, "cpus_per_actor": round(per, 3)}


@contextlib.contextmanager
def session(address: str | None):
    """Connect to Ray for one job: the caller's instance if one is initialised (left running),
    else the cluster at ``address`` (``host:port`` or ``auto``) or a new local instance
    (``address`` None), disconnected (a local one shut down) at the end. Yields the facts for
    the summary: ``startup_s``, ``address``, ``started_here``. RuntimeError when Ray cannot be
    started or joined, before the job has touched its output folder."""
    ray = _require_ray()
    if ray.is_initialized():
        yield {"startup_s": 0.0, "address": "connected", "started_here": False}
        return
    t0 = time.monotonic()
    try:
        ray.init(address=address or "local", include_dashboard=False, logging_level=logging.WARNING)
    except Exception as e:  # ConnectionError, ValueError... from Ray
        raise RuntimeError(f"--address {address or '(local)'}: could not start or join a Ray instance: {e}") from None
    try:
        yield {"startup_s": round(time.monotonic() - t0, 2), "address": address or "local", "started_here": True}
    finally:
        ray.shutdown()


def score_scenes(det: Detector, model_file: Path, scenes: Sequence, *, min_score: float | None, overlap: int,
                 batch_size: int, device: str = "auto", threads: int | None = None, actors: int | None = None,
                 gpus_per_actor: float | None = None, trt_cache=None, stats: dict | None = None,
                 progress=None, session_info: dict | None = None,
                 max_megapixels: float | None = raster.MAX_MEGAPIXELS, skip: bool = True) -> Iterator[tuple]:
    """Score ``scenes`` (``predict.Scene``) with Ray Data; yields ``(scene, detections, None,
    seconds)`` or ``(scene, None, error, seconds)`` as scenes complete (any order), like the
    single-process engine. ``seconds``: from the scene's first window read to its merge.
    ``skip``: the actors skip the windows ``det.prescreen`` finds certainly empty, as
    :meth:`Detector.predict_scene` does (False: score every window with data).

    ``stats`` (filled in): ``first_read`` (this process's monotonic clock at the first window
    read, for throughput that leaves Ray's start-up out), ``providers`` and ``ray``: start-up
    and planning seconds, how long after the first window read the first actor had its model
    loaded (``actor_start_after_first_read_s``), the actor pool (:func:`resources_for`), and per
    worker process its role, node, pid, peak RSS (MB) and providers. Runs inside
    :func:`session` (``session_info``: what it yielded), which starts and stops Ray.
    """
    import pyarrow as pa

    from detector.backends import GPU_PROVIDERS, parse_device

    ray = _require_ray()
    if not ray.is_initialized():
        raise RuntimeError("engine_ray.score_scenes runs inside engine_ray.session(address)")
    stats = {} if stats is None else stats
    info: dict = dict(session_info or {})
    stats["ray"] = info
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled": on purpose
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours is the one progress line
    pool = resources_for(ray.cluster_resources(), device, actors=actors, threads=threads,
                         gpus_per_actor=gpus_per_actor)
    info.update(pool)
    kind, index = parse_device(device)
    actor_device = device
    if pool["gpus_per_actor"] > 0:
        if index is not None:
            log.warning("--device %s: Ray gives each actor its own GPU(s); the index is not used", device)
        actor_device = kind if kind in GPU_PROVIDERS else "cuda"

    # plan every scene from its header, on the driver (a few threads: headers may be remote)
    t0 = time.monotonic()
    plans: dict[int, _Pending] = {}
    with ThreadPoolExecutor(PLAN_THREADS) as pool_ex:
        futures = [(s, pool_ex.submit(det.plan_scene, s.path, overlap=overlap,
                                                 max_megapixels=max_megapixels)) for s in scenes]
        for s, fut in futures:
            try:
                plans[len(plans)] = _Pending(s, fut.result())
            except Exception as e:  # reported like the single process's per-scene failures
                yield s, None, e, 0.0
    info["plan_s"] = round(time.monotonic() - t0, 2)
    if progress is not None:
        progress.total_megapixels = sum(p.plan.megapixels for p in plans.values())
    if not plans:
        return

    per = det.windows_per_batch(batch_size)
    screen = det.prescreen if skip else None
    cols: dict[str, list] = {k: [] for k in ("scene", "wid", "col", "row", "width", "height", "factor", "path")}
    for si, p in plans.items():
        for wid, (c, r) in enumerate(p.plan.windows):
            cols["scene"].append(si)
            cols["wid"].append(wid)
            cols["col"].append(c)
            cols["row"].append(r)
            cols["width"].append(p.plan.width)
            cols["height"].append(p.plan.height)
            cols["factor"].append(p.plan.factor)
            cols["path"].append(os.fspath(p.plan.path))
    table = pa.table(cols)
    # one block per model batch, never across scenes: chunk k of a scene is its windows
    # k * per .. (k + 1) * per - 1, the windows the single process scores in one call
    blocks, start = [], 0
    for p in plans.values():
        n = len(p.plan.windows)
        blocks += [table.slice(start + i, min(per, n - i)) for i in range(0, n, per)]
        start += n
    model_ref = ray.put(Path(model_file).read_bytes())  # held here, so restarted actors find it
    ds = (ray.data.from_arrow(blocks)
          # max_retries: a read task whose worker died runs again (Ray Data's default, said
          # here); being a task option the actors lack, it also keeps Ray Data from fusing the
          # reads into the actors, which would serialise reading and inference in one process
          .map_batches(read_windows, batch_size=None, batch_format="numpy", num_cpus=1, max_retries=-1,
                       fn_kwargs={"bands": list(det.spec.bands), "tile": det.spec.tile_size})
          .map_batches(DetectorActor, batch_size=None, batch_format="numpy",  # a block = a model call
                       compute=ray.data.ActorPoolStrategy(size=pool["actors"]),
                       num_cpus=pool["cpus_per_actor"], num_gpus=pool["gpus_per_actor"] or None,
                       fn_constructor_kwargs={"model": [model_ref], "model_name": Path(model_file).name,
                                              "device": actor_device, "threads": pool["threads"],
                                              "trt_cache": None if trt_cache is None else str(trt_cache),
                                              "min_score": min_score, "per_batch": per,
                                              "prescreen": screen.to_dict() if screen is not None else None}))
    workers: dict[tuple, dict] = {}
    providers: list[str] = []
    first = ready = math.inf
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
        for j in range(len(batch["wid"])):
            node = str(batch["node"][j])
            for role, pid, rss in (("read", batch["read_pid"][j], batch["read_rss"][j]),
                                   ("detector", batch["infer_pid"][j], batch["infer_rss"][j])):
                w = workers.setdefault((role, node, int(pid)), {"role": role, "node": node, "pid": int(pid),
                                                                 "peak_rss_mb": 0.0})
                w["peak_rss_mb"] = max(w["peak_rss_mb"], round(float(rss), 1))
                if role == "detector":
                    w["providers"] = str(batch["providers"][j]).split(",")
            for prov in str(batch["providers"][j]).split(","):
                if prov and prov not in providers:
                    providers.append(prov)
            first = min(first, float(batch["read_start"][j]))
            ready = min(ready, float(batch["actor_ready"][j]))
            si, wid = int(batch["scene"][j]), int(batch["wid"][j])
            pend = plans.get(si)
            if pend is None or wid in pend.seen:  # scene already done or failed; a retried copy
                continue
            pend.seen.add(wid)
            pend.read += float(batch["t_read"][j])
            pend.infer += float(batch["t_infer"][j])
            pend.start = min(pend.start, float(batch["read_start"][j]))
            if batch["error"][j]:
                del plans[si]
                kind_, _, msg = str(batch["error"][j]).partition(": ")
                yield pend.scene, None, SceneError(kind_, msg), time.time() - pend.start
                continue
            if batch["skip"][j]:
                why = str(batch["skip"][j])
                pend.skipped[why] = pend.skipped.get(why, 0) + 1
            b = np.frombuffer(batch["boxes"][j], np.float32).reshape(-1, 4)
            if len(b):
                pend.parts.append(WindowPart(wid, b, np.frombuffer(batch["scores"][j], np.float32),
                                             np.frombuffer(batch["labels"][j], np.int64),
                                             np.frombuffer(batch["truncated"][j], bool)))
            if len(pend.seen) == len(pend.plan.windows):
                del plans[si]
                yield pend.scene, _merge(det, pend, screen), None, time.time() - pend.start
        if math.isfinite(first):
            was = stats.get("first_read")
            stats["first_read"] = time.monotonic() - (time.time() - first)  # on this process's clock
            if was is None and progress is not None:  # rates from the first window read, as in the summary
                progress.t0 = stats["first_read"]
    for pend in plans.values():  # cannot happen unless Ray lost rows: say so rather than drop them
        yield pend.scene, None, SceneError("RuntimeError", f"{len(pend.seen)} of {len(pend.plan.windows)} "
                                                          "windows came back from the Ray workers"), 0.0
    stats["providers"] = providers
    if math.isfinite(first) and math.isfinite(ready):
        # Ray Data starts reading while the actors still load: how long the first read waited
        info["actor_start_after_first_read_s"] = round(max(ready - first, 0.0), 2)
    info["workers"] = sorted(workers.values(), key=lambda w: (w["role"], w["node"], w["pid"]))
    info["driver_peak_rss_mb"] = round(_peak_rss_mb(), 1)


def _merge(det: Detector, pend: _Pending, screen) -> Detections:
    t0 = time.perf_counter()
    plan = pend.plan
    r = det.finish_scene(det.merge_parts(pend.parts, plan.width, plan.height, len(plan.windows)), plan)
    r.extra["seconds"] = {"read": pend.read, "infer": pend.infer, "merge": time.perf_counter() - t0}
    r.extra.update(skip_extra(len(plan.windows), pend.skipped, screen))
    return r
