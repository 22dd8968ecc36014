#!/usr/bin/env python3
"""Independent check of sslpipe's emitted encoder: recompute its forward pass with numpy.

What it shows: the ONNX graph sslpipe writes (src/model/) means what we think it means. The
model is read with the `onnx` package (not with our own protobuf code), validated with
`onnx.checker.check_model(full_check=True)` (which also runs ONNX shape inference), and then every
node is evaluated here in float64 from the ONNX operator definitions, independently of both our
Rust code and ONNX Runtime. The result is compared with the output ONNX Runtime produced.

Inputs (written by `cargo test --lib model::ort_tests::export_reference -- --ignored`):
    <dir>/encoder.onnx, <dir>/input.npy, <dir>/output.npy   (default dir: target/encoder_ref)

Setup:  python3 -m venv .deps/venv-dev && .deps/venv-dev/bin/pip install numpy onnx
Run:    .deps/venv-dev/bin/python scripts/dev/check_encoder_reference.py [dir] [--tolerance 1e-4]
Exit status 0 when the checker passes and the max abs difference is within tolerance.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import numpy_helper


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def windows(x, kernel, strides, pads, fill):
    """[N, C, H, W] -> [N, C, OH, OW, kh, kw] views of the padded input (ONNX floor semantics)."""
    top, left, bottom, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    win = sliding_window_view(xp, tuple(kernel), axis=(2, 3))
    return win[:, :, :: strides[0], :: strides[1]]


def conv(x, w, b, a):
    kernel = a.get("kernel_shape", list(w.shape[2:]))
    strides = a.get("strides", [1, 1])
    pads = a.get("pads", [0, 0, 0, 0])
    assert a.get("dilations", [1, 1]) == [1, 1], "dilated conv not supported by this reference"
    group = a.get("group", 1)
    pads4 = [pads[0], pads[1], pads[2], pads[3]]
    win = windows(x, kernel, strides, pads4, 0.0)  # N, C, OH, OW, kh, kw
    cin_g = x.shape[1] // group
    cout_g = w.shape[0] // group
    outs = []
    for g in range(group):
        wg = w[g * cout_g : (g + 1) * cout_g]
        xg = win[:, g * cin_g : (g + 1) * cin_g]
        outs.append(np.einsum("ncijkl,ockl->noij", xg, wg, optimize=True))
    y = np.concatenate(outs, axis=1)
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return y


def maxpool(x, a):
    assert a.get("ceil_mode", 0) == 0 and a.get("dilations", [1, 1]) == [1, 1]
    pads = a.get("pads", [0, 0, 0, 0])
    win = windows(x, a["kernel_shape"], a.get("strides", [1, 1]), pads, -np.inf)
    return win.max(axis=(4, 5))


def batchnorm(x, scale, bias, mean, var, a):
    assert a.get("training_mode", 0) == 0
    eps = a.get("epsilon", 1e-5)
    shape = (1, -1, 1, 1)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * scale.reshape(
        shape
    ) + bias.reshape(shape)


def gemm(a_, b_, c_, a):
    if a.get("transA", 0):
        a_ = a_.T
    if a.get("transB", 0):
        b_ = b_.T
    y = a.get("alpha", 1.0) * (a_ @ b_)
    if c_ is not None:
        y = y + a.get("beta", 1.0) * c_
    return y


def run(model, feeds):
    env = dict(feeds)
    for init in model.graph.initializer:
        env[init.name] = numpy_helper.to_array(init).astype(np.float64)
    for node in model.graph.node:
        a = attrs(node)
        ins = [env[n] if n else None for n in node.input]
        op = node.op_type
        if op == "Conv":
            y = conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, a)
        elif op == "BatchNormalization":
            y = batchnorm(*ins[:5], a)
        elif op == "Relu":
            y = np.maximum(ins[0], 0.0)
        elif op == "MaxPool":
            y = maxpool(ins[0], a)
        elif op == "GlobalAveragePool":
            y = ins[0].mean(axis=(2, 3), keepdims=True)
        elif op == "Flatten":
            axis = a.get("axis", 1)
            y = ins[0].reshape(int(np.prod(ins[0].shape[:axis])), -1)
        elif op == "Gemm":
            y = gemm(ins[0], ins[1], ins[2] if len(ins) > 2 else None, a)
        elif op == "Add":
            y = ins[0] + ins[1]
        elif op == "Identity":
            y = ins[0]
        else:
            raise SystemExit(f"reference has no rule for op {op}")
        env[node.output[0]] = y
    return [env[o.name] for o in model.graph.output]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir", nargs="?", default="target/encoder_ref")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    d = Path(args.dir)
    model = onnx.load(str(d / "encoder.onnx"))
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out_dims = [
        dim.dim_param or dim.dim_value
        for dim in inferred.graph.output[0].type.tensor_type.shape.dim
    ]
    print(f"onnx.checker.check_model(full_check=True): passed (onnx {onnx.__version__})")
    print(f"ir_version {model.ir_version}, opsets {[(o.domain, o.version) for o in model.opset_import]}")
    print(f"graph: {len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers, "
          f"output dims {out_dims}")

    x = np.load(d / "input.npy").astype(np.float64)
    ort_out = np.load(d / "output.npy").astype(np.float64)
    (ref,) = run(model, {model.graph.input[0].name: x})
    if ref.shape != ort_out.shape:
        raise SystemExit(f"shape mismatch: reference {ref.shape}, ONNX Runtime {ort_out.shape}")
    diff = np.abs(ref - ort_out)
    scale = np.abs(ref).max()
    print(f"input {x.shape}, output {ref.shape}; |reference| max {scale:.4g}, mean {np.abs(ref).mean():.4g}")
    print(f"max abs difference ONNX Runtime vs numpy float64 reference: {diff.max():.3e} "
          f"(relative to max |output|: {diff.max() / scale:.3e}); mean abs difference {diff.mean():.3e}")
    ok = diff.max() <= args.tolerance
    print("PASS" if ok else f"FAIL: above tolerance {args.tolerance}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
