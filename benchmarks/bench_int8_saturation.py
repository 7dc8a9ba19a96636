"""How often an int8 model's sums would saturate on an x86 CPU without VNNI (AVX2, AVX-512F).

    python benchmarks/bench_int8_saturation.py [--models revet-base:int8 model.int8.onnx ...]
                                               [--tiles 4] [--positions 1024] [--narrow]

ONNX Runtime's U8S8 kernels for such CPUs multiply uint8 activations by int8 weights with
VPMADDUBSW. It adds two neighbouring products into a saturating int16, then adds those sums in
int32. On a VNNI CPU the products are added exactly in int32, so a model measured there can
score differently on an AVX2 laptop.

This script emulates that arithmetic for every quantized convolution. It feeds the layer's
real uint8 input: the model is run by ONNX Runtime on rendered synthetic tiles, with the
QuantizeLinear outputs exposed. At ``--positions`` sampled output pixels per layer it prints:

- the share of pair sums beyond int16 (+-32,767);
- the share of outputs that at least one of them changes;
- the median error of those outputs, relative to the layer's median |accumulator|.

Assumptions. Neighbours along K, taken in im2col order (kernel row, kernel column, input
channel: ONNX Runtime's NHWC convolution layout), form the pairs. Padding holds the input's
zero point.

``--narrow`` also measures each model with its weights held to 7 bits
(``detector.export.quantize.narrow_int8_weights``, applied in memory). That version prints 0
everywhere, since 2 x 255 x 64 <= 32,767. The figures are per layer, not their effect on
detections.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scene import cpu_facts  # noqa: E402

INT16 = 32767


def layer_inputs(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``model`` (an onnx.ModelProto) on ``x``: the uint8 tensor read by each quantized
    Conv's input DequantizeLinear, by Conv node name."""
    import onnx
    import onnxruntime as ort

    from detector.export.quantize import conv_weight_quantizers

    made_by = {o: n for n in model.graph.node for o in n.output}
    wanted = {}
    for conv, _, _ in conv_weight_quantizers(model):
        dq = made_by.get(conv.input[0])
        if dq is not None and dq.op_type == "DequantizeLinear":
            wanted[conv.name] = dq
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for dq in wanted.values():
        if dq.input[0] not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(dq.input[0], onnx.TensorProto.UINT8, None))
            have.add(dq.input[0])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the QDQ graph as written
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x})))
    return {c: (out[dq.input[0]], dq) for c, dq in wanted.items()}


def conv_saturation(a: np.ndarray, a_zero: int, q: np.ndarray, conv, positions: int,
                    rng: np.random.Generator) -> tuple[float, float, float]:
    """``a`` (N, C, H, W) uint8 input, ``q`` (M, C, kh, kw) int8 weights: (share of pair sums
    beyond int16, share of outputs changed, median relative error of the changed outputs)."""
    attr = {t.name: list(t.ints) if t.ints else t.i for t in conv.attribute}
    if attr.get("group", 1) != 1:
        return float("nan"), float("nan"), float("nan")
    kh, kw = q.shape[2:]
    sy, sx = attr.get("strides", [1, 1])
    dy, dx = attr.get("dilations", [1, 1])
    pt, pl, pb, pr = attr.get("pads", [0, 0, 0, 0])
    n, c, h, w = a.shape
    ap = np.pad(a.astype(np.int32), ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=a_zero)
    oh = (h + pt + pb - dy * (kh - 1) - 1) // sy + 1
    ow = (w + pl + pr - dx * (kw - 1) - 1) // sx + 1
    ni = rng.integers(0, n, positions)
    oy = rng.integers(0, oh, positions)
    ox = rng.integers(0, ow, positions)
    ky, kx = np.meshgrid(np.arange(kh) * dy, np.arange(kw) * dx, indexing="ij")
    rows = oy[:, None, None] * sy + ky[None]  # (P, kh, kw)
    cols = ox[:, None, None] * sx + kx[None]
    patch = ap[ni[:, None, None, None], np.arange(c)[None, None, None, :], rows[..., None], cols[..., None]]
    pa = patch.reshape(positions, -1)  # (P, K) in (kernel row, kernel column, channel) order
    wk = np.moveaxis(q.astype(np.int32), 1, -1).reshape(q.shape[0], -1)  # (M, K), same order
    if pa.shape[1] % 2:
        pa = np.pad(pa, ((0, 0), (0, 1)))
        wk = np.pad(wk, ((0, 0), (0, 1)))
    pairs = (pa[:, None, 0::2] * wk[None, :, 0::2] + pa[:, None, 1::2] * wk[None, :, 1::2])  # (P, M, K/2)
    over = np.abs(pairs) > INT16
    exact = pairs.sum(-1)
    sat = np.clip(pairs, -INT16 - 1, INT16).sum(-1)
    changed = sat != exact
    scale = np.median(np.abs(exact)) or 1.0
    err = float(np.median(np.abs(sat - exact)[changed]) / scale) if changed.any() else 0.0
    return float(over.mean()), float(changed.mean()), err


def main() -> None:
    import onnx
    from onnx import numpy_helper

    from bench_openvino import windows
    from detector import zoo
    from detector.export.quantize import conv_weight_quantizers, max_int8_weight, narrow_int8_weights

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["revet-base:int8"])
    ap.add_argument("--tiles", type=int, default=4, help="512-px windows of a rendered scene fed to the model")
    ap.add_argument("--positions", type=int, default=1024, help="output pixels sampled per layer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--narrow", action="store_true", help="also each model with its weights held to 7 bits")
    a = ap.parse_args()
    print(f"{cpu_facts()} (the emulated arithmetic is that of x86 CPUs without VNNI, whatever this one is)")
    x = windows(512, a.tiles, seed=a.seed)
    runs = [(name, False) for name in a.models] + [(name, True) for name in a.models if a.narrow]
    for name, narrow in runs:
        path = zoo.resolve(name)
        model = onnx.load(str(path))
        if narrow:
            changed = narrow_int8_weights(model, source=str(path))
            name = f"{name}, weights held to 7 bits ({changed} channels requantized)"
        init = {i.name: i for i in model.graph.initializer}
        inputs = layer_inputs(model, x)
        rng = np.random.default_rng(a.seed)
        print(f"\n{name} ({path}): largest |int8 weight| {max_int8_weight(model)}; {a.tiles} tiles, "
              f"{a.positions} output pixels per layer")
        print("| conv | K | pair sums beyond int16 | outputs changed | median error of those (x median |acc|) |")
        print("|---|---|---|---|---|")
        totals = []
        for conv, wdq, _ in conv_weight_quantizers(model):
            if conv.name not in inputs:
                continue
            act, dq = inputs[conv.name]
            zp = int(numpy_helper.to_array(init[dq.input[2]])) if len(dq.input) > 2 and dq.input[2] in init else 0
            q = numpy_helper.to_array(init[wdq.input[0]])
            over, changed, err = conv_saturation(act, zp, q, conv, a.positions, rng)
            totals.append(changed)
            print(f"| {conv.name} | {q[0].size} | {100 * over:.3f} % | {100 * changed:.2f} % | {err:.3f} |")
        print(f"layers with changed outputs: {sum(t > 0 for t in totals)} of {len(totals)}; "
              f"mean share of outputs changed {100 * float(np.mean(totals)):.2f} %")


if __name__ == "__main__":
    main()
