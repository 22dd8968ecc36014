#!/usr/bin/env bash
# Makes .deps/venv-readers: numpy, pyarrow, DuckDB and polars, the third-party readers the tests
# check our Parquet files with. Idempotent: a stamp written after a successful install marks it
# complete, so a half-made venv (an interrupted install) is made again, never used.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.deps/venv-readers
[ -f "$venv/.complete" ] && exit 0
mkdir -p .deps
exec 9>.deps/venv-readers.lock
flock 9   # tests may ask for it concurrently: one makes it, the others wait
[ -f "$venv/.complete" ] && exit 0
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q numpy pyarrow duckdb polars
touch "$venv/.complete"
echo "[setup] readers venv: installed numpy, pyarrow, duckdb, polars into $venv"
