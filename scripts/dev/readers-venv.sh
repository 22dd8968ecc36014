#!/usr/bin/env bash
# Makes .deps/venv-readers: numpy, pyarrow, DuckDB and polars, the third-party readers the tests
# check our Parquet files with (see scripts/dev/venv.sh).
exec bash "$(dirname "$0")/venv.sh" readers numpy pyarrow duckdb polars
