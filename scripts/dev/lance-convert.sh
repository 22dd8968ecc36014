#!/usr/bin/env bash
# Converts a feature output to a Lance dataset with pylance and runs one vector search on it:
#
#   bash scripts/dev/lance-convert.sh FEATURES_DIR OUT.lance
#
# The embedding column must be fixed_size_list<float32>[D] (sslpipe's default embedding_type):
# Lance's vector search needs fixed-size vectors. pylance goes into .deps/venv-lance on the first
# run (a stamp marks a complete install). Why not in the binary: see README, "Feature stores".
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -eq 2 ] || { echo "usage: $0 FEATURES_DIR OUT.lance" >&2; exit 2; }
venv=.deps/venv-lance
bash scripts/dev/venv.sh lance "pylance==14.*" pyarrow
"$venv/bin/python" - "$1" "$2" <<'PY'
import glob, sys
import lance, pyarrow.dataset as ds
features, out = sys.argv[1], sys.argv[2]
parts = ds.dataset(sorted(glob.glob(f"{features}/part-*.parquet")), format="parquet")
lance.write_dataset(parts, out, mode="overwrite")
table = lance.dataset(out)
first = table.take([0], columns=["key", "embedding"])
query = first.column("embedding")[0].values
hits = table.to_table(columns=["key", "_distance"], nearest={"column": "embedding", "q": query, "k": 3})
print(f"{out}: {table.count_rows()} rows, schema embedding: {table.schema.field('embedding').type}")
print(f"nearest to {first.column('key')[0]}: {hits.column('key').to_pylist()}")
PY
