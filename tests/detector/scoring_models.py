"""Small hand-written ONNX models with a real Revet spec, for the engine tests (no torch, no
training; needs the ``onnx`` package of revet[train]).

``write_peak_model``: detections that depend on the image, so windows disagree and the merge
across overlaps has real work: the input's band mean is average-pooled over 16 x 16 cells, and
the ``k`` brightest cells become boxes of 32 x 32 pixels centred on them (labels: the cell's
brightness in thirds, so one object gets one class in every window that sees it; scores:
``sigmoid(4 * cell_mean / 255 - 2)``). ``work`` adds that many 256 x 256 matrix
products per band row, whose result is multiplied by zero and added to the scores: the
outputs do not change, the model just takes longer (to kill a worker mid-run).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from detector.spec import SPEC_KEY, ModelSpec

CELL = 16


def write_peak_model(path: Path, *, tile: int = 256, k: int = 6, work: int = 0, overlap: int = 32,
                     bands: tuple[int, ...] = (1, 2, 3), gsd: float | None = None) -> Path:
    """Write the peak model (module docstring) for ``(B, len(bands), tile, tile)`` raw pixels to
    ``path``; outputs boxes (B, k, 4) window pixels, scores (B, k), labels (B, k)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = tile // CELL
    consts = {
        "ax1": np.array([1], np.int64), "flat": np.array([0, -1], np.int64), "K": np.array([k], np.int64),
        "G": np.array(g, np.int64), "thirds": np.array(3 / 256, np.float32), "cell": np.array(CELL, np.float32),
        "half": np.array(CELL / 2, np.float32), "side": np.array(2 * CELL, np.float32),
        "gain": np.array(4 / 255, np.float32), "two": np.array(2.0, np.float32), "ax2": np.array([2], np.int64),
    }
    if work:
        consts.update(zero=np.array(0.0, np.float32), W=np.full((tile, tile), 1.0 / tile, np.float32),
                      axall=np.array([1, 2, 3], np.int64), col=np.array([-1, 1], np.int64))
    node = helper.make_node
    nodes = [
        node("ReduceMean", ["image", "ax1"], ["gray"], keepdims=1),                       # (B, 1, T, T)
        node("AveragePool", ["gray"], ["pool"], kernel_shape=[CELL, CELL], strides=[CELL, CELL]),
        node("Reshape", ["pool", "flat"], ["cells"]),                                       # (B, G*G)
        node("TopK", ["cells", "K"], ["vals", "idx"], axis=1, largest=1, sorted=1),
        node("Div", ["idx", "G"], ["gy"]), node("Mod", ["idx", "G"], ["gx"]),
        node("Cast", ["gx"], ["fx"], to=TensorProto.FLOAT), node("Cast", ["gy"], ["fy"], to=TensorProto.FLOAT),
        node("Mul", ["fx", "cell"], ["px"]), node("Mul", ["fy", "cell"], ["py"]),
        node("Sub", ["px", "half"], ["x1"]), node("Sub", ["py", "half"], ["y1"]),
        node("Add", ["x1", "side"], ["x2"]), node("Add", ["y1", "side"], ["y2"]),
        *[node("Unsqueeze", [c, "ax2"], [c + "u"]) for c in ("x1", "y1", "x2", "y2")],
        node("Concat", ["x1u", "y1u", "x2u", "y2u"], ["boxes"], axis=2),
        node("Mul", ["vals", "gain"], ["z0"]), node("Sub", ["z0", "two"], ["z"]), node("Sigmoid", ["z"], ["s0"]),
        node("Mul", ["vals", "thirds"], ["v3"]), node("Floor", ["v3"], ["v3f"]),
        node("Cast", ["v3f"], ["labels"], to=TensorProto.INT64),
    ]
    last = "gray"
    for i in range(work):  # slow but output-neutral: (B, 1, T, T) @ (T, T), repeated
        nodes.append(node("MatMul", [last, "W"], [f"mm{i}"]))
        last = f"mm{i}"
    if work:
        nodes += [node("ReduceMean", [last, "axall"], ["wm"], keepdims=1), node("Reshape", ["wm", "col"], ["wc"]),
                  node("Mul", ["wc", "zero"], ["w0"]), node("Add", ["s0", "w0"], ["scores"])]
    else:
        nodes.append(node("Identity", ["s0"], ["scores"]))
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "peaks", [vi("image", TensorProto.FLOAT, ["batch", len(bands), tile, tile])],
        [vi("boxes", TensorProto.FLOAT, ["batch", k, 4]), vi("scores", TensorProto.FLOAT, ["batch", k]),
         vi("labels", TensorProto.INT64, ["batch", k])],
        [numpy_helper.from_array(v, n) for n, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    entry = model.metadata_props.add()
    spec = ModelSpec(tile_size=tile, overlap=overlap, arch="peaks", bands=tuple(bands),
                     offset=(0.0,) * len(bands), scale=(255.0,) * len(bands), mean=(0.5,) * len(bands),
                     std=(0.25,) * len(bands), score_threshold=0.05, gsd=gsd)
    entry.key, entry.value = SPEC_KEY, spec.to_json()
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_scene(path: Path, size: int, *, seed: int, bands: int = 3, block: int = 256, height: int | None = None,
                res: float = 0.5, nodata_left: float = 0.0, **profile) -> Path:
    """A ``size`` (wide) x ``height`` (default ``size``) uint8 GeoTIFF (EPSG:32637, ``res`` m
    pixels, tiled ``block``) of noise with a few bright squares: peaks for the peak model, some
    straddling window overlaps. ``nodata_left``: that share of the columns is nodata (0)."""
    import rasterio
    from rasterio.transform import from_origin

    h = size if height is None else height
    rng = np.random.default_rng(seed)
    img = rng.integers(20, 90, (bands, h, size)).astype(np.uint8)
    for _ in range(size * h // 20000):
        x, y = rng.integers(0, size - 40), rng.integers(0, h - 40)
        s = int(rng.integers(10, 40))
        img[:, y:y + s, x:x + s] = rng.integers(150, 256)
    if nodata_left:
        img[:, :, :int(size * nodata_left)] = 0
        profile.setdefault("nodata", 0)
    prof = dict(driver="GTiff", width=size, height=h, count=bands, dtype="uint8", crs="EPSG:32637",
                transform=from_origin(500000 + 1000 * seed, 4000000, res, res), tiled=True,
                blockxsize=block, blockysize=block, compress="deflate")
    prof.update(profile)
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(img)
    return path
