"""Compares two embedding outputs (Parquet folders or files with `key` and `embedding`):
  python check.py REFERENCE OTHER
prints one JSON line: whether the key sets are equal, and the median and minimum cosine
similarity of the two embeddings of each key. Exit 1 when the keys differ or the median < 0.99.
"""

import glob
import json
import os
import sys

import numpy as np
import pyarrow.parquet as pq


def load(path):
    files = sorted(glob.glob(os.path.join(path, "*.parquet"))) if os.path.isdir(path) else [path]
    keys, embs = [], []
    for f in files:
        t = pq.read_table(f, columns=["key", "embedding"])
        keys += t.column("key").to_pylist()
        col = t.column("embedding").combine_chunks()
        embs.append(np.asarray(col.values.to_numpy(zero_copy_only=False), np.float32).reshape(len(t), -1))
    return dict(zip(keys, np.concatenate(embs) if embs else np.zeros((0, 0), np.float32)))


def main():
    a, b = load(sys.argv[1]), load(sys.argv[2])
    common = sorted(set(a) & set(b))
    cos = []
    for k in common:
        x, y = a[k], b[k]
        cos.append(float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12)))
    cos = np.array(cos) if cos else np.array([float("nan")])
    result = {
        "keys_equal": set(a) == set(b),
        "rows": [len(a), len(b)],
        "cosine_median": float(np.median(cos)),
        "cosine_min": float(np.min(cos)),
        "cosine_p01": float(np.percentile(cos, 1)),
    }
    print(json.dumps(result))
    return 0 if result["keys_equal"] and result["cosine_median"] >= 0.99 else 1


if __name__ == "__main__":
    sys.exit(main())
