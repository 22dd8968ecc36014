"""Reference pipeline for scripts/bench-compare.sh: Pillow + onnxruntime + pyarrow.

Does what `sslpipe run` does with an ONNX encoder, the way a Python user would write it:
list the images (recursive, sorted, sslpipe's extensions; key = path relative to the folder),
decode with Pillow (EXIF orientation applied, converted to RGB), resize the centred square of the
shorter side to SIZE x SIZE in one bilinear pass (PIL's `resize(box=...)`, the same antialiased
filter sslpipe uses), normalise with the ImageNet mean/std into CHW float32, run batches of BATCH
through onnxruntime, and write `key`, `embedding` (fixed_size_list<float32>[D]), `width`, `height`
to zstd Parquet in row groups of 32,768 rows.

  python peer.py CORPUS MODEL SIZE OUT_DIR [--batch 64] [--workers N] [--draft]

--workers N  decode in a multiprocessing pool of N processes (0: in the main process);
--draft      let libjpeg decode JPEGs at a reduced scale (Pillow's `Image.draft`), the way
             sslpipe decodes them at 1/4 or 1/8 scale.
Prints one JSON line: images, seconds (in-process, after imports), images_per_s.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageOps

EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
ROW_GROUP = 32768


def list_images(root):
    keys = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in EXTENSIONS:
                keys.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(keys)


def preprocess(job):
    root, key, size, draft = job
    try:
        with Image.open(os.path.join(root, key)) as im:
            w0, h0 = im.size  # the source's size, before any draft reduction
            if draft and im.format == "JPEG":
                im.draft("RGB", (size, size))  # libjpeg picks 1/2, 1/4 or 1/8: both sides stay >= size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w0, h0 = h0, w0  # reported as displayed, like sslpipe
            im = ImageOps.exif_transpose(im).convert("RGB")
            w, h = im.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            im = im.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))
            x = (np.asarray(im, dtype=np.float32) / 255.0 - MEAN) / STD
            return key, np.ascontiguousarray(x.transpose(2, 0, 1)), w0, h0
    except Exception as e:  # a bad file is a record, not a crash
        return key, None, str(e), None


class Sink:
    def __init__(self, path, dim):
        self.schema = pa.schema([
            ("key", pa.string()),
            ("embedding", pa.list_(pa.float32(), dim)),
            ("width", pa.uint32()),
            ("height", pa.uint32()),
        ])
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.dim = dim
        self.rows = []

    def add(self, keys, emb, sizes):
        self.rows.append((keys, emb, sizes))
        if sum(len(k) for k, _, _ in self.rows) >= ROW_GROUP:
            self.flush()

    def flush(self):
        if not self.rows:
            return
        keys = [k for ks, _, _ in self.rows for k in ks]
        emb = np.concatenate([e for _, e, _ in self.rows]).astype(np.float32).reshape(-1)
        sizes = [s for _, _, ss in self.rows for s in ss]
        table = pa.table({
            "key": pa.array(keys, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb), self.dim),
            "width": pa.array([w for w, _ in sizes], pa.uint32()),
            "height": pa.array([h for _, h in sizes], pa.uint32()),
        }, schema=self.schema)
        self.writer.write_table(table, row_group_size=ROW_GROUP)
        self.rows = []

    def close(self):
        self.flush()
        self.writer.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("model")
    ap.add_argument("size", type=int)
    ap.add_argument("out")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--draft", action="store_true")
    a = ap.parse_args()
    started = time.perf_counter()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    inp, out = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    keys = list_images(a.corpus)
    jobs = [(a.corpus, k, a.size, a.draft) for k in keys]
    os.makedirs(a.out, exist_ok=True)
    sink = None
    batch, bkeys, bsizes, errors = [], [], [], 0

    def run_batch():
        nonlocal sink
        emb = sess.run([out], {inp: np.stack(batch)})[0].reshape(len(batch), -1)
        if sink is None:
            sink = Sink(os.path.join(a.out, "part-00000.parquet"), emb.shape[1])
        sink.add(list(bkeys), emb, list(bsizes))
        batch.clear(), bkeys.clear(), bsizes.clear()

    if a.workers > 0:
        import multiprocessing as mp
        pool = mp.get_context("fork").Pool(a.workers)
        results = pool.imap(preprocess, jobs, chunksize=8)
    else:
        pool, results = None, map(preprocess, jobs)
    for key, x, w, h in results:
        if x is None:
            errors += 1
            continue
        batch.append(x), bkeys.append(key), bsizes.append((w, h))
        if len(batch) == a.batch:
            run_batch()
    if batch:
        run_batch()
    if pool is not None:
        pool.close(), pool.join()
    if sink is not None:
        sink.close()
    secs = time.perf_counter() - started
    n = len(keys) - errors
    print(json.dumps({"images": n, "errors": errors, "seconds": secs, "images_per_s": n / secs}))


if __name__ == "__main__":
    sys.exit(main())
