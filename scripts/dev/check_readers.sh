#!/usr/bin/env bash
# Checks a feature folder with pyarrow, DuckDB and polars (their venv is made once by readers-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/dev/readers-venv.sh
.deps/venv-readers/bin/python scripts/dev/check_readers.py "$@"
