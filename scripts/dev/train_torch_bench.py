#!/usr/bin/env python3
"""PyTorch's eager CPU training step for the same architecture as `benches/train_step.rs`: the
built-in encoder (ResNet-style, width 32, stages [1,1,1,1], 256-d embedding) + Linear(4) +
cross-entropy, SGD (momentum 0.9, wd 5e-4) and AdamW (wd 0.05), batch 64 of 3x96x96.

Run it on the same machine and with the same thread count as the Rust bench, e.g.
    python3 scripts/dev/train_torch_bench.py --threads 16
    cargo bench --bench train_step -- --threads 16
Prints images/s (median over the timed steps, after warm-up), one line per optimizer.
Needs torch (CPU or CUDA build; only the CPU is used).
"""

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(h + (x if self.proj is None else self.proj(x)))


class Encoder(nn.Module):
    def __init__(self, width=32, stages=(1, 1, 1, 1), dim=256, classes=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, ch = [], width
        for i, n in enumerate(stages):
            for j in range(n):
                out = width << i
                blocks.append(Block(ch, out, 2 if (i > 0 and j == 0) else 1))
                ch = out
        self.blocks = nn.Sequential(*blocks)
        self.embed = nn.Linear(ch, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(self.embed(x.mean(dim=(2, 3))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--channels-last", action="store_true", help="also time the channels_last memory format")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    y = torch.randint(0, 4, (args.batch,))
    formats = [("nchw", torch.contiguous_format)] + ([("channels_last", torch.channels_last)] if args.channels_last else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} of 3x{args.size}x{args.size}")
    for fmt_name, fmt in formats:
        for opt_name in ("sgd", "adamw"):
            net = Encoder().to(memory_format=fmt)
            xf = x.contiguous(memory_format=fmt)
            if opt_name == "sgd":
                opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            else:
                opt = torch.optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.05)
            times, losses = [], []
            for s in range(args.steps + 2):
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net(xf), y)
                loss.backward()
                opt.step()
                dt = time.perf_counter() - t0
                losses.append(float(loss))
                if s >= 2:
                    times.append(dt)
            times.sort()
            med = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
            print(f"  torch {opt_name:<6} {fmt_name:<13} {args.batch / med:7.1f} images/s  ({1e3 * med:.0f} ms/step median, "
                  f"min {1e3 * times[0]:.0f} ms; loss {losses[0]:.3f} -> {losses[-1]:.3f})")


if __name__ == "__main__":
    main()
