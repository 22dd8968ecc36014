"""Raw-pixel features of a Fashion-MNIST IDX images file, in sslpipe's feature layout (key,
embedding fixed_size_list<float32>[784]) so `sslpipe eval` can probe them as a baseline.
Keys match sslpipe's idx source: `<prefix>/<index:05>`. Usage: fmnist_pixels.py IDX OUT.parquet"""
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

src, out = sys.argv[1], sys.argv[2]
raw = np.fromfile(src, dtype=np.uint8)
count, rows, cols = (int.from_bytes(raw[i:i + 4].tobytes(), "big") for i in (4, 8, 12))
pixels = raw[16:].reshape(count, rows * cols).astype(np.float32) / 255.0
prefix = src.rsplit("/", 1)[-1].split("-", 1)[0]
keys = pa.array([f"{prefix}/{i:05}" for i in range(count)])
emb = pa.FixedSizeListArray.from_arrays(pa.array(pixels.reshape(-1)), rows * cols)
pq.write_table(pa.table({"key": keys, "embedding": emb}), out, compression="zstd")
