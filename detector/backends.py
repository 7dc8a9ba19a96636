"""Inference backends: something that maps a batch of raw tiles to fixed detections.

A backend is any object with ``run(batch) -> (boxes, scores, labels)``, ``batch`` being
``(B, C, T, T)`` float32 raw pixel values, outputs as documented in
``detector.export.adapter`` (``(B, D, 4)``, ``(B, D)``, ``(B, D)``). This module holds the ONNX
Runtime backend (torch-free) and the registry of backends for other model files: a package
registers a loader for a file suffix, with :func:`register_backend` or through the
``revet.backends`` entry point group. Revet's own PyTorch backend for ``.ckpt`` checkpoints
(``detector.export.torch_backend``) is registered that way in pyproject.toml, so the torch-free
runtime never imports the training side: it is loaded only when a ``.ckpt`` is scored.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from detector.spec import SPEC_KEY, ModelSpec


GPU_PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
DEVICES = "auto, cpu, openvino, cuda, cuda:N, tensorrt or tensorrt:N (N: the GPU's index)"
OPENVINO_PRECISION_ENV = "REVET_OPENVINO_PRECISION"  # f32 (default) or bf16 (CPUs with AMX/AVX512-BF16)


def parse_device(device: str) -> tuple[str, int | None]:
    """``"cuda:1"`` -> ``("cuda", 1)``; ``"cpu"`` -> ``("cpu", None)``. ValueError for anything
    but :data:`DEVICES`."""
    kind, sep, index = str(device).strip().lower().partition(":")
    if kind not in ("auto", "cpu", "openvino", *GPU_PROVIDERS) or (sep and (kind not in GPU_PROVIDERS or not index.isdigit())):
        raise ValueError(f"unknown device {device!r}; expected {DEVICES}")
    return kind, int(index) if index else None


def resolve_providers(device: str = "auto") -> list[str]:
    """ONNX Runtime execution providers for ``device`` (:data:`DEVICES`), in order of preference:
    ``auto`` (CUDA then CPU, as installed), ``cuda[:N]`` (CUDA, CPU for the operators CUDA
    lacks), ``tensorrt[:N]`` (TensorRT, CUDA, CPU) or ``cpu``. Raises RuntimeError when a GPU is
    asked for and this ONNX Runtime has no GPU provider (the CPU-only ``onnxruntime`` package)."""
    import onnxruntime as ort

    kind, _ = parse_device(device)
    have = ort.get_available_providers()
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "auto":
        prefs = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return [p for p in prefs if p in have]
    wanted = GPU_PROVIDERS[kind]
    if wanted not in have:
        raise RuntimeError(
            f"device {device!r} needs ONNX Runtime's {wanted}, but this install only has {have}; "
            + _gpu_install_hint())
    chain = [wanted, "CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for i, p in enumerate(chain) if p in have and p not in chain[:i]]


def provider_options(providers: list[str], device: str = "auto", *, trt_cache: str | os.PathLike | None = None) -> list[dict]:
    """One options dict per provider of ``providers``: the GPU index of ``cuda:N``/``tensorrt:N``
    (``device_id``) and, for TensorRT, the engine and timing caches in ``trt_cache`` (a folder,
    created; engines are built once per model, input shape and GPU, then loaded from there)."""
    _, index = parse_device(device)
    out = []
    for p in providers:
        o: dict = {}
        if p in GPU_PROVIDERS.values() and index is not None:
            o["device_id"] = str(index)
        if p == "TensorrtExecutionProvider" and trt_cache is not None:
            Path(trt_cache).mkdir(parents=True, exist_ok=True)
            o.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(trt_cache),
                     trt_timing_cache_enable="True", trt_timing_cache_path=str(trt_cache))
        out.append(o)
    return out


def _gpu_install_hint() -> str:
    from importlib import metadata

    def has(dist: str) -> bool:
        try:
            metadata.version(dist)
            return True
        except metadata.PackageNotFoundError:
            return False

    if has("onnxruntime") and has("onnxruntime-gpu"):
        return ("both onnxruntime and onnxruntime-gpu are installed and they share one module, so "
                "whichever was installed last wins: pip uninstall -y onnxruntime onnxruntime-gpu && "
                "pip install onnxruntime-gpu (docs/predict.md, 'GPU servers')")
    return ("replace the CPU package with the GPU one on a machine with CUDA: pip uninstall -y onnxruntime && "
            "pip install onnxruntime-gpu (docs/predict.md, 'GPU servers')")


class OnnxBackend:
    """ONNX Runtime session over an exported Revet model.

    ``device``: :data:`DEVICES`. A GPU asked for by name must be the provider the session really
    uses: ONNX Runtime falls back to the CPU when the CUDA or TensorRT libraries fail to load
    (it only logs a warning), which here is an error naming the model, the device and the
    providers in use. ``providers`` lists what the session runs on. ``trt_cache``: folder for
    TensorRT engines (:func:`provider_options`).
    """

    def __init__(self, path: str | os.PathLike, *, device: str = "auto", threads: int | None = None,
                 trt_cache: str | os.PathLike | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: model file does not exist")
        kind, _ = parse_device(device)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers = resolve_providers(device)
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers,
                                                provider_options=provider_options(providers, device,
                                                                                  trt_cache=trt_cache))
        except Exception as e:  # onnxruntime raises its own exception types
            if kind in GPU_PROVIDERS:
                raise RuntimeError(f"{self.path}: could not start ONNX Runtime on device {device!r} "
                                   f"(providers {providers}): {e}") from None
            raise ValueError(f"{self.path}: not a loadable ONNX model ({e})") from None
        self.providers = self.session.get_providers()
        if kind in GPU_PROVIDERS and GPU_PROVIDERS[kind] not in self.providers:
            raise RuntimeError(
                f"{self.path}: device {device!r} asked for {GPU_PROVIDERS[kind]}, but ONNX Runtime "
                f"started the session on {self.providers} only (the CUDA/cuDNN{'/TensorRT' if kind == 'tensorrt' else ''} "
                "libraries did not load: check the CUDA version onnxruntime-gpu was built for, and "
                "the ONNX Runtime warnings above); refusing to score on the CPU in its place. "
                "Use --device cpu to score on the CPU, or fix the GPU install: " + _gpu_install_hint())
        meta = self.session.get_modelmeta().custom_metadata_map
        if SPEC_KEY not in meta:
            raise ValueError(
                f"{self.path}: ONNX file has no '{SPEC_KEY}' metadata; export it with 'revet export'"
            )
        self.spec = ModelSpec.from_json(meta[SPEC_KEY], source=str(self.path))
        self.meta = dict(meta)  # the spec and provenance (revet_version, exported, weights_sha256)
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray):
        boxes, scores, labels = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return boxes, scores, labels


class OpenVinoBackend:
    """An exported ``.onnx`` model compiled by OpenVINO for the CPU (``--device openvino``; needs
    ``pip install revet[openvino]``): the same graph, inputs and outputs as :class:`OnnxBackend`.

    Precision: ``f32`` by default, so a float32 model gives ONNX Runtime's detections; set
    ``REVET_OPENVINO_PRECISION=bf16`` to let OpenVINO run float32 graphs in bfloat16 on CPUs
    with AMX / AVX512-BF16 (much faster there, detections change slightly). int8 graphs run on
    OpenVINO's int8 kernels, whose rounding differs from ONNX Runtime's: measure on your data
    (``benchmarks/bench_openvino.py``, ``benchmarks/bench_scene.py``).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None,
                 precision: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: model file does not exist")
        try:
            import openvino as ov
        except ImportError:
            raise RuntimeError("--device openvino needs OpenVINO: pip install 'revet[openvino]' "
                               "(or pip install openvino)") from None
        precision = (precision or os.environ.get(OPENVINO_PRECISION_ENV) or "f32").lower()
        if precision not in ("f32", "bf16"):
            raise ValueError(f"{OPENVINO_PRECISION_ENV}={precision!r}: expected f32 or bf16")
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as e:  # OpenVINO raises its own exception types
            raise ValueError(f"{self.path}: not a model OpenVINO can read ({e})") from None
        if not model.has_rt_info(["framework", SPEC_KEY]):
            raise ValueError(f"{self.path}: ONNX file has no '{SPEC_KEY}' metadata; export it with 'revet export'")
        self.meta = {k: model.get_rt_info(["framework", k]).astype(str)
                     for k in (SPEC_KEY, "revet_version", "exported", "weights_sha256")
                     if model.has_rt_info(["framework", k])}
        self.spec = ModelSpec.from_json(self.meta[SPEC_KEY], source=str(self.path))
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.outputs = [self.compiled.output(i) for i in range(3)]
        self.providers = [f"OpenVINO CPU ({precision})"]

    def run(self, batch: np.ndarray):
        r = self.request.infer({0: np.ascontiguousarray(batch, np.float32)})
        boxes, scores, labels = (np.asarray(r[o]) for o in self.outputs)
        return boxes, scores, labels.astype(np.int64)


# -- backends for other model files, by suffix -------------------------------------------------

#: entry point group of backend loaders: name = the file suffix without its dot (``ckpt``),
#: value = ``loader(path, *, device, threads) -> backend`` (a ``run`` method and a ``spec``)
ENTRY_POINT_GROUP = "revet.backends"
_LOADERS: dict = {}


def register_backend(suffix: str, loader) -> None:
    """Score model files ending in ``suffix`` (``".ckpt"``) with ``loader(path, *, device,
    threads)``, which returns a backend. A registered loader wins over an entry point's."""
    _LOADERS[suffix.lower()] = loader


def backend_loader(suffix: str):
    """The loader for files ending in ``suffix``: registered, else offered by an installed
    ``revet.backends`` entry point (imported now; ModuleNotFoundError when it needs a missing
    extra, such as torch for ``.ckpt``), else None: the file is read as ONNX."""
    suffix = suffix.lower()
    if suffix in _LOADERS:
        return _LOADERS[suffix]
    if suffix in ("", ".onnx"):
        return None
    from importlib.metadata import distributions

    # every distribution's entry points, not only the first of each name: a stale in-tree
    # revet.egg-info (left by a build) would otherwise hide the installed metadata
    for dist in distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP and "." + ep.name.lower() == suffix:
                _LOADERS[suffix] = ep.load()
                return _LOADERS[suffix]
    return None


def load_backend(path: str | os.PathLike, *, device: str = "auto", threads: int | None = None, **options):
    """The backend for the model file ``path``: the loader registered for its suffix
    (:func:`backend_loader`), else :class:`OnnxBackend` (``options`` go to it)."""
    suffix = Path(path).suffix
    loader = backend_loader(suffix)
    if loader is not None:
        return loader(path, device=device, threads=threads)
    if parse_device(device)[0] == "openvino":
        return OpenVinoBackend(path, threads=threads)
    try:
        return OnnxBackend(path, device=device, threads=threads, **options)
    except ValueError as e:
        if suffix.lower() in ("", ".onnx"):
            raise
        raise ValueError(f"{e}; no backend is registered for {suffix!r} files (installed packages offer "
                         f"them as '{ENTRY_POINT_GROUP}' entry points: reinstall Revet if this should load)") from None
