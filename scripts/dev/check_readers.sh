#!/usr/bin/env bash
# Checks a feature folder with pyarrow, DuckDB and polars (installed into .deps/venv-readers once).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.deps/venv-readers
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q numpy pyarrow duckdb polars; }
"$venv/bin/python" scripts/dev/check_readers.py "$@"
