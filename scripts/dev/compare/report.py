"""Prints the markdown tables of scripts/bench-compare.sh from its measurement files.
  python report.py RESULTS_DIR
RESULTS_DIR holds `<mode>/<size>/<tool>/<round>.json` (measure.py's output plus "images"),
`<size>/check-<tool>.json` (check.py's output) and `<size>/encoder-alone.json`.
"""

import glob
import json
import os
import statistics
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def runs(d):
    out = []
    for f in sorted(glob.glob(os.path.join(d, "*.json"))):
        m = load(f)
        if m.get("rc") == 0 and m.get("images"):
            out.append(m)
    return out


LABELS = {
    "sslpipe": "sslpipe (Rust, 1 process)",
    "sslpipe-baseline": "sslpipe, baseline build",
    "pillow": "Pillow + onnxruntime + pyarrow, 1 process",
    "pillow-pool2": "the same, decode in a 2-process pool",
    "pillow-draft": "Pillow with `draft` (libjpeg DCT scaling), 1 process",
    "pillow-draft-pool2": "Pillow with `draft`, 2-process pool",
    "daft": "Daft + Pillow UDF + onnxruntime UDF",
}


def compare(root):
    for size_dir in sorted(glob.glob(os.path.join(root, "compare", "*")), key=lambda p: int(os.path.basename(p))):
        size = os.path.basename(size_dir)
        rows = {}
        for tool_dir in sorted(glob.glob(os.path.join(size_dir, "*"))):
            ms = runs(tool_dir)
            if ms:
                tool = os.path.basename(tool_dir)
                rows[tool] = (
                    statistics.median(m["images"] / m["wall_s"] for m in ms),
                    statistics.median(m["peak_rss_mb"] for m in ms),
                    len(ms),
                )
        if not rows:
            continue
        peers = {t: v for t, v in rows.items() if not t.startswith("sslpipe")}
        best = max(peers.items(), key=lambda kv: kv[1][0]) if peers else None
        alone = os.path.join(root, size, "encoder-alone.json")
        print(f"\n### {size} px\n")
        if os.path.exists(alone):
            a = load(alone)
            print(f"Encoder alone (onnxruntime, batch {a['batch']}, default threads): {a['images_per_s']:.0f} img/s\n")
        print("| pipeline | img/s (median) | peak RSS MB (median) | runs | vs best peer | cosine vs sslpipe (median / min) |")
        print("| --- | ---: | ---: | ---: | ---: | --- |")
        for tool in ["sslpipe", "sslpipe-baseline", "pillow", "pillow-pool2", "pillow-draft", "pillow-draft-pool2", "daft"]:
            if tool not in rows:
                continue
            ips, rss, n = rows[tool]
            ratio = f"{ips / best[1][0]:.2f}×" if best else "–"
            check = os.path.join(root, size, f"check-{tool}.json")
            cos = "–"
            if os.path.exists(check):
                c = load(check)
                cos = f"{c['cosine_median']:.4f} / {c['cosine_min']:.4f}" + ("" if c["keys_equal"] else " (keys differ!)")
            print(f"| {LABELS[tool]} | {ips:.0f} | {rss:.0f} | {n} | {ratio} | {cos} |")
        if best:
            print(f"\nBest peer: {LABELS[best[0]]}.")


def scaling(root):
    d = os.path.join(root, "scaling")
    if not os.path.isdir(d):
        return
    print("\n### sslpipe scaling (96 px, row groups of 4,096 rows)\n")
    print("| corpus | workers | img/s (median) | peak RSS MB (median) | runs |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for cell in sorted(glob.glob(os.path.join(d, "*")), key=lambda p: tuple(int(x) for x in os.path.basename(p).split("-"))):
        n, w = os.path.basename(cell).split("-")
        ms = runs(cell)
        if ms:
            ips = statistics.median(m["images"] / m["wall_s"] for m in ms)
            rss = statistics.median(m["peak_rss_mb"] for m in ms)
            print(f"| {int(n):,} | {w} | {ips:.0f} | {rss:.0f} | {len(ms)} |")


def grid(root):
    d = os.path.join(root, "grid")
    if not os.path.isdir(d):
        return
    print("\n### sslpipe thread placement (96 px): decode workers × ORT intra-op threads\n")
    print("| workers | intra_threads | img/s (median) | peak RSS MB | runs |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for cell in sorted(glob.glob(os.path.join(d, "*"))):
        w, t = os.path.basename(cell).split("-")
        ms = runs(cell)
        if ms:
            ips = statistics.median(m["images"] / m["wall_s"] for m in ms)
            rss = statistics.median(m["peak_rss_mb"] for m in ms)
            print(f"| {w} | {t} | {ips:.0f} | {rss:.0f} | {len(ms)} |")


if __name__ == "__main__":
    root = sys.argv[1]
    compare(root)
    grid(root)
    scaling(root)
