"""Reference pipeline for scripts/bench-compare.sh --daft: Daft reads the files, a Daft function
preprocesses each image with Pillow exactly like peer.py (EXIF orientation, RGB, centred square
resized bilinearly to SIZE, ImageNet normalisation), a Daft class runs onnxruntime on batches of
BATCH, and Daft writes `key`, `embedding`, `width`, `height` to Parquet.

  python daft_peer.py CORPUS MODEL SIZE OUT_DIR [--batch 64]
Prints one JSON line: images, seconds (in-process, after imports), images_per_s.
"""

import argparse
import io
import json
import os
import sys
import time

import daft
import numpy as np
from daft import DataType, col
from PIL import Image, ImageOps

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer import MEAN, STD, list_images  # noqa: E402


def make_pipeline(corpus, model, size, batch, dim):
    @daft.func(return_dtype=DataType.tensor(DataType.float32(), (3, size, size)))
    def preprocess(data: bytes):
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            w, h = im.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            im = im.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))
            x = (np.asarray(im, dtype=np.float32) / 255.0 - MEAN) / STD
            return np.ascontiguousarray(x.transpose(2, 0, 1))

    @daft.func(return_dtype=DataType.list(DataType.uint32()))
    def source_size(data: bytes):
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
            return [w, h]

    @daft.cls(max_concurrency=1)
    class Embed:
        def __init__(self):
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
            self.inp = self.sess.get_inputs()[0].name

        @daft.method.batch(return_dtype=DataType.list(DataType.float32()), batch_size=batch)
        def __call__(self, pixels):
            x = np.stack(pixels.to_pylist())
            emb = self.sess.run(None, {self.inp: x.astype(np.float32)})[0].reshape(len(x), -1)
            return [row for row in emb]

    keys = list_images(corpus)
    df = daft.from_pydict({"key": keys, "path": [os.path.join(os.path.abspath(corpus), k) for k in keys]})
    df = df.with_column("data", col("path").download())
    df = df.with_column("pixels", preprocess(col("data")))
    df = df.with_column("wh", source_size(col("data")))
    df = df.with_column("embedding", Embed()(col("pixels")))
    return df.select(
        "key",
        col("embedding").cast(DataType.fixed_size_list(DataType.float32(), dim)),
        col("wh").get(0).alias("width"),
        col("wh").get(1).alias("height"),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("model")
    ap.add_argument("size", type=int)
    ap.add_argument("out")
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    started = time.perf_counter()
    import onnxruntime as ort

    dim = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"]).get_outputs()[0].shape[1]
    df = make_pipeline(a.corpus, a.model, a.size, a.batch, int(dim))
    written = df.write_parquet(a.out, write_mode="overwrite").to_pydict()
    import pyarrow.parquet as pq

    n = sum(pq.read_metadata(p).num_rows for p in written["path"])
    secs = time.perf_counter() - started
    print(json.dumps({"images": n, "errors": 0, "seconds": secs, "images_per_s": n / secs}))


if __name__ == "__main__":
    sys.exit(main())
