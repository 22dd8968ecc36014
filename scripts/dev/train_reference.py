#!/usr/bin/env python3
"""Independent reference for sslpipe's compiled train step: one SGD and one AdamW step of a small
ResNet, recomputed in float64 numpy from the model description (not from the ONNX graph), and,
where PyTorch is importable, with torch.nn / torch.optim as well.

What it shows: the train-step graph sslpipe emits (forward with batch-statistics BatchNorm, the
backward pass built from per-op rules, the optimizer written into the graph) computes what the
standard definitions compute: same loss, same updated parameters, same BatchNorm running
statistics and optimizer state after one step.

Inputs (written by `cargo test --lib train::tests::reference::export_reference_steps -- --ignored`):
    <dir>/<opt>/before.safetensors   parameters + optimizer state before the step, spec in metadata
    <dir>/<opt>/after.safetensors    the same after one step of sslpipe's train step (ONNX Runtime)
    <dir>/<opt>/images.npy, labels.npy, hyper.json (lr, step)
with <opt> in {sgd, adamw}; default <dir>: target/train_ref.

Setup:  python3 -m venv .deps/venv-dev && .deps/venv-dev/bin/pip install numpy
Run:    .deps/venv-dev/bin/python scripts/dev/train_reference.py [dir] [--tolerance 1e-4]
Exit status 0 when every compared tensor agrees within the tolerance (max abs difference divided
by max(1, max |reference|)).
"""

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def load_safetensors(path):
    """Minimal reader of the safetensors layout (8-byte length, JSON header, raw data)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", info
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(info["shape"]).astype(np.float64)
    return out, meta


# ---------------------------------------------------------------- layers with forward/backward


def conv_forward(x, w, stride, pad):
    n, c, h, wd = x.shape
    co, ci, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # n c oh ow k k
    y = np.einsum("ncHWij,ocij->noHW", win, w, optimize=True)
    return y, (x.shape, xp, win, w, stride, pad)


def conv_backward(dy, cache):
    xshape, xp, win, w, stride, pad = cache
    k = w.shape[2]
    dw = np.einsum("noHW,ncHWij->ocij", dy, win, optimize=True)
    dxp = np.zeros_like(xp)
    oh, ow = dy.shape[2], dy.shape[3]
    contrib = np.einsum("noHW,ocij->ncHWij", dy, w, optimize=True)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride] += contrib[:, :, :, :, i, j]
    dx = dxp[:, :, pad : pad + xshape[2], pad : pad + xshape[3]]
    return dx, dw


def bn_forward(x, gamma, beta, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = [1, x.shape[1]] + [1] * (x.ndim - 2)
    mean = x.mean(axis=axes, keepdims=True)
    xc = x - mean
    var = (xc**2).mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = xc * inv
    y = xhat * gamma.reshape(shape) + beta.reshape(shape)
    m = x.size // x.shape[1]
    return y, (xhat, inv, gamma, axes, shape, m, mean.reshape(-1), var.reshape(-1))


def bn_backward(dy, cache):
    xhat, inv, gamma, axes, shape, m, _, _ = cache
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * xhat).sum(axis=axes)
    g = dy * gamma.reshape(shape)
    dx = inv * (g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True))
    return dx, dgamma, dbeta


def maxpool_forward(x, k=3, stride=2, pad=1):
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    flat = win.reshape(win.shape[:4] + (k * k,))
    arg = flat.argmax(axis=-1)
    y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    return y, (x.shape, xp.shape, arg, k, stride, pad)


def maxpool_backward(dy, cache):
    xshape, xpshape, arg, k, stride, pad = cache
    dxp = np.zeros(xpshape)
    n, c, oh, ow = dy.shape
    for a in range(oh):
        for b in range(ow):
            i, j = np.divmod(arg[:, :, a, b], k)
            nn, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
            np.add.at(dxp, (nn, cc, a * stride + i, b * stride + j), dy[:, :, a, b])
    return dxp[:, :, pad : pad + xshape[2], pad : pad + xshape[3]]


# ---------------------------------------------------------------- the model from its spec


def forward_backward(spec, p, images, labels):
    """Loss, accuracy, gradients and new BatchNorm running statistics of the built-in encoder +
    head (training mode), written out layer by layer; each block keeps a closure for its backward."""
    enc = spec["encoder"]
    stats = {}
    g = {}

    def bn_f(name, x):
        y, c = bn_forward(x, p[name + ".weight"], p[name + ".bias"])
        m = c[5]
        stats[name + ".running_mean"] = 0.9 * p[name + ".running_mean"] + 0.1 * c[6]
        stats[name + ".running_var"] = 0.9 * p[name + ".running_var"] + 0.1 * c[7] * m / (m - 1)
        return y, c

    def bn_b(name, dy, c):
        dx, dg, db = bn_backward(dy, c)
        g[name + ".weight"] = dg
        g[name + ".bias"] = db
        return dx

    def conv_f(name, x, s, pd):
        return conv_forward(x, p[name + ".weight"], s, pd)

    def conv_b(name, dy, c):
        dx, dw = conv_backward(dy, c)
        g[name + ".weight"] = dw
        return dx

    backs = []
    # stem
    y0, c0 = conv_f("stem.conv", images, 2, 1)
    y1, c1 = bn_f("stem.bn", y0)
    m1 = y1 > 0
    y2 = np.maximum(y1, 0)
    x, cp = maxpool_forward(y2)

    def stem_back(d):
        d = maxpool_backward(d, cp) * m1
        d = bn_b("stem.bn", d, c1)
        conv_b("stem.conv", d, c0)

    ch = enc["width"]
    for i, blocks in enumerate(enc["stages"]):
        out = enc["width"] << i
        for j in range(blocks):
            stride = 2 if (i > 0 and j == 0) else 1
            pre = f"stage{i}.block{j}"
            a0, ca0 = conv_f(pre + ".conv1", x, stride, 1)
            a1, ca1 = bn_f(pre + ".bn1", a0)
            ma = a1 > 0
            a2 = np.maximum(a1, 0)
            b0, cb0 = conv_f(pre + ".conv2", a2, 1, 1)
            b1, cb1 = bn_f(pre + ".bn2", b0)
            proj = stride != 1 or ch != out
            if proj:
                s0, cs0 = conv_f(pre + ".shortcut.conv", x, stride, 0)
                s1, cs1 = bn_f(pre + ".shortcut.bn", s0)
            else:
                s1 = x
            pre_out = b1 + s1
            mo = pre_out > 0
            x = np.maximum(pre_out, 0)

            def block_back(d, pre=pre, ca0=ca0, ca1=ca1, ma=ma, cb0=cb0, cb1=cb1, proj=proj, mo=mo,
                           cs0=cs0 if proj else None, cs1=cs1 if proj else None):
                d = d * mo
                db = bn_b(pre + ".bn2", d, cb1)
                db = conv_b(pre + ".conv2", db, cb0) * ma
                db = bn_b(pre + ".bn1", db, ca1)
                dxin = conv_b(pre + ".conv1", db, ca0)
                if proj:
                    ds = bn_b(pre + ".shortcut.bn", d, cs1)
                    ds = conv_b(pre + ".shortcut.conv", ds, cs0)
                else:
                    ds = d
                return dxin + ds

            backs.append(block_back)
            ch = out
    shape = x.shape
    pooled = x.mean(axis=(2, 3))
    feats = [pooled]
    h = pooled @ p["embed.weight"].T + p["embed.bias"]
    layers = [("linear", "embed")]
    for i, layer in enumerate(spec["head"]):
        feats.append(h)
        if layer["kind"] == "linear":
            h = h @ p[f"head.{i}.weight"].T + p[f"head.{i}.bias"]
            layers.append(("linear", f"head.{i}"))
        elif layer["kind"] == "relu":
            layers.append(("relu", h > 0))
            h = np.maximum(h, 0)
        else:
            raise SystemExit(f"head layer {layer['kind']} is not in this reference")
    z = h - h.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = labels.shape[0]
    loss = -logp[np.arange(n), labels].mean()
    acc = (h.argmax(axis=1) == labels).mean()
    d = np.exp(logp)
    d[np.arange(n), labels] -= 1.0
    d /= n
    for (kind, arg), inp in zip(reversed(layers), reversed(feats)):
        if kind == "linear":
            g[arg + ".weight"] = d.T @ inp
            g[arg + ".bias"] = d.sum(axis=0)
            d = d @ p[arg + ".weight"]
        else:
            d = d * arg
    d = np.broadcast_to(d[:, :, None, None] / (shape[2] * shape[3]), shape).copy()
    for back in reversed(backs):
        d = back(d)
    stem_back(d)
    return loss, acc, g, stats


def optimizer_step(opt, p, state, g, lr, step):
    """PyTorch's SGD / AdamW update (amsgrad off); returns new params and state."""
    newp, news = {}, {}
    kind = opt["kind"]
    t = step + 1
    for name, grad in g.items():
        x = p[name]
        if kind == "sgd":
            mu, wd = opt.get("momentum", 0.0), opt.get("weight_decay", 0.0)
            gg = grad + wd * x
            if mu > 0:
                v = mu * state[f"state.momentum.{name}"] + gg
                news[f"state.momentum.{name}"] = v
                d = gg + mu * v if opt.get("nesterov") else v
            else:
                d = gg
            newp[name] = x - lr * d
        else:
            b1, b2 = opt.get("beta1", 0.9), opt.get("beta2", 0.999)
            eps, wd = opt.get("eps", 1e-8), opt.get("weight_decay", 0.01)
            m = b1 * state[f"state.exp_avg.{name}"] + (1 - b1) * grad
            v = b2 * state[f"state.exp_avg_sq.{name}"] + (1 - b2) * grad * grad
            news[f"state.exp_avg.{name}"] = m
            news[f"state.exp_avg_sq.{name}"] = v
            bc1, bc2 = 1 - b1**t, 1 - b2**t
            newp[name] = x * (1 - lr * wd) - (lr / bc1) * m / (np.sqrt(v) / np.sqrt(bc2) + eps)
    return newp, news


def torch_reference(spec, p, state, images, labels, lr, step):
    """The same step with torch.nn modules and torch.optim (float64, CPU); None without torch."""
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_default_dtype(torch.float64)
    enc = spec["encoder"]

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = None
            if stride != 1 or cin != cout:
                self.shortcut = nn.Module()
                self.shortcut.conv = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
                self.shortcut.bn = nn.BatchNorm2d(cout)

        def forward(self, x):
            h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            s = x if self.shortcut is None else self.shortcut.bn(self.shortcut.conv(x))
            return F.relu(h + s)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            w = enc["width"]
            self.stem = nn.Module()
            self.stem.conv = nn.Conv2d(enc.get("in_channels", 3), w, 3, 2, 1, bias=False)
            self.stem.bn = nn.BatchNorm2d(w)
            ch = w
            for i, blocks in enumerate(enc["stages"]):
                stage = nn.Module()
                for j in range(blocks):
                    out = w << i
                    setattr(stage, f"block{j}", Block(ch, out, 2 if (i > 0 and j == 0) else 1))
                    ch = out
                setattr(self, f"stage{i}", stage)
            self.embed = nn.Linear(ch, enc["embedding_dim"])
            self.head = nn.ModuleList()
            d = enc["embedding_dim"]
            for layer in spec["head"]:
                if layer["kind"] == "linear":
                    self.head.append(nn.Linear(d, layer["out_features"]))
                    d = layer["out_features"]
                else:
                    self.head.append(nn.ReLU())

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.stem.bn(self.stem.conv(x))), 3, 2, 1)
            for i, blocks in enumerate(enc["stages"]):
                for j in range(blocks):
                    x = getattr(getattr(self, f"stage{i}"), f"block{j}")(x)
            x = self.embed(x.mean(dim=(2, 3)))
            for layer in self.head:
                x = layer(x)
            return x

    net = Net()
    sd = net.state_dict()
    for k in sd:
        if k.endswith("num_batches_tracked"):
            continue
        sd[k] = torch.from_numpy(p[k])
    net.load_state_dict(sd)
    net.train()
    opt = spec["optimizer"]
    params = dict(net.named_parameters())
    if opt["kind"] == "sgd":
        o = torch.optim.SGD(params.values(), lr=lr, momentum=opt.get("momentum", 0.0),
                            weight_decay=opt.get("weight_decay", 0.0), nesterov=opt.get("nesterov", False))
    else:
        o = torch.optim.AdamW(params.values(), lr=lr, betas=(opt.get("beta1", 0.9), opt.get("beta2", 0.999)),
                              eps=opt.get("eps", 1e-8), weight_decay=opt.get("weight_decay", 0.01))
    # Load the optimizer state the step started from.
    for name, prm in params.items():
        st = o.state[prm]
        if opt["kind"] == "sgd" and opt.get("momentum", 0.0) > 0:
            st["momentum_buffer"] = torch.from_numpy(state[f"state.momentum.{name}"].copy())
        elif opt["kind"] != "sgd":
            st["step"] = torch.tensor(float(step))
            st["exp_avg"] = torch.from_numpy(state[f"state.exp_avg.{name}"].copy())
            st["exp_avg_sq"] = torch.from_numpy(state[f"state.exp_avg_sq.{name}"].copy())
    o.zero_grad()
    loss = F.cross_entropy(net(torch.from_numpy(images)), torch.from_numpy(labels))
    loss.backward()
    o.step()
    newp = {k: v.detach().numpy().copy() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    news = {}
    for name, prm in params.items():
        st = o.state[prm]
        if "momentum_buffer" in st:
            news[f"state.momentum.{name}"] = st["momentum_buffer"].numpy().copy()
        if "exp_avg" in st:
            news[f"state.exp_avg.{name}"] = st["exp_avg"].numpy().copy()
            news[f"state.exp_avg_sq.{name}"] = st["exp_avg_sq"].numpy().copy()
    return float(loss), newp, news


def compare(label, ours, ref, tol):
    worst = 0.0
    worst_name = ""
    for k, r in ref.items():
        if k not in ours:
            print(f"  {label}: `{k}` missing from sslpipe's output")
            return float("inf")
        d = np.abs(ours[k] - r).max() / max(1.0, np.abs(r).max())
        if d > worst:
            worst, worst_name = d, k
    status = "ok" if worst <= tol else "MISMATCH"
    print(f"  {label:<44} {len(ref):3d} tensors, max |diff| {worst:.2e} ({worst_name})  {status}")
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", nargs="?", default="target/train_ref")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()
    ok = True
    for opt_dir in sorted(Path(args.dir).iterdir()):
        if not (opt_dir / "before.safetensors").exists():
            continue
        before, meta = load_safetensors(opt_dir / "before.safetensors")
        after, _ = load_safetensors(opt_dir / "after.safetensors")
        spec = json.loads(meta["spec"])
        hyper = json.loads((opt_dir / "hyper.json").read_text())
        images = np.load(opt_dir / "images.npy").astype(np.float64)
        labels = np.load(opt_dir / "labels.npy").astype(np.int64)
        params = {k: v for k, v in before.items() if not k.startswith("state.")}
        state = {k: v for k, v in before.items() if k.startswith("state.")}
        lr, step = hyper["lr"], hyper["step"]
        print(f"{opt_dir.name}: {spec['optimizer']}, batch {images.shape}, lr {lr}, step {step}")
        loss, acc, g, stats = forward_backward(spec, params, images, labels)
        newp, news = optimizer_step(spec["optimizer"], params, state, g, lr, step)
        newp.update(stats)
        print(f"  loss: sslpipe {hyper['loss']:.7f}, numpy {loss:.7f}, |diff| {abs(hyper['loss'] - loss):.2e}")
        ok &= abs(hyper["loss"] - loss) <= args.tolerance * max(1.0, abs(loss))
        ours_p = {k: v for k, v in after.items() if not k.startswith("state.")}
        ours_s = {k: v for k, v in after.items() if k.startswith("state.")}
        ok &= compare("numpy: parameters + BN statistics", ours_p, newp, args.tolerance) <= args.tolerance
        if news:
            ok &= compare("numpy: optimizer state", ours_s, news, args.tolerance) <= args.tolerance
        t = torch_reference(spec, params, state, images, labels, lr, step)
        if t is None:
            print("  (torch not importable here: PyTorch comparison skipped)")
        else:
            tloss, tp, ts = t
            print(f"  loss: torch {tloss:.7f}, |diff| to sslpipe {abs(hyper['loss'] - tloss):.2e}")
            ok &= compare("torch: parameters + BN statistics", ours_p, tp, args.tolerance) <= args.tolerance
            if ts:
                ok &= compare("torch: optimizer state", ours_s, ts, args.tolerance) <= args.tolerance
            compare("numpy vs torch (independent check)", newp, {k: v for k, v in tp.items() if k in newp}, args.tolerance)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
