#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: fetches what the tests need (ONNX Runtime,
# the sample photos) through the idempotent setup script, runs every benchmark once as a smoke
# test (criterion's test mode), then every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/build-env.sh   # nasm on PATH: the JPEG decoder's SIMD
bash scripts/dev/readers-venv.sh   # pyarrow, DuckDB, polars: the tests read our files with them
bash scripts/dev/s3-venv.sh   # moto_server: the s3 source's tests run against it on loopback
cargo test --benches --examples
cargo test --lib --bins --tests "$@"
