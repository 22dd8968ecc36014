"""Reads an sslpipe feature folder with pyarrow, DuckDB and polars and checks the output contract:
column types, one row per key, finite embeddings, metadata. Dev tooling, not part of the product.

    scripts/dev/check_readers.sh OUT_DIR [EXPECTED_ROWS]
"""
import glob
import math
import sys

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

out = sys.argv[1]
expected = int(sys.argv[2]) if len(sys.argv) > 2 else None
files = sorted(glob.glob(f"{out}/part-*.parquet"))
assert files, f"no part files in {out}"

table = pq.read_table(files)
schema = table.schema
emb = schema.field("embedding").type
assert pa.types.is_fixed_size_list(emb) and emb.value_type == pa.float32(), emb
assert schema.field("key").type == pa.string()
assert schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC"), schema.field("event_timestamp").type
keys = table.column("key").to_pylist()
assert len(keys) == len(set(keys)), "keys are unique"
flat = table.column("embedding").combine_chunks().flatten().to_numpy()
assert all(math.isfinite(x) for x in flat[:100000]), "finite embeddings"
meta = pq.read_metadata(files[0]).metadata
assert b"sslpipe.pipeline" in meta and b"sslpipe.version" in meta
print(f"pyarrow: {table.num_rows} rows, embedding {emb}, {len(files)} file(s)")

con = duckdb.connect()
n, dim, nkeys = con.execute(
    f"select count(*), max(len(embedding)), count(distinct key) from read_parquet('{out}/part-*.parquet')"
).fetchone()
assert n == table.num_rows == nkeys, (n, nkeys)
print(f"duckdb: {n} rows, embedding length {dim}")

df = pl.read_parquet(f"{out}/part-*.parquet")
assert df.height == table.num_rows
print(f"polars: {df.height} rows, dtype {df.schema['embedding']}")
if expected is not None:
    assert table.num_rows == expected, (table.num_rows, expected)
print("ok")
