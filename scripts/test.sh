#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: fetches what the tests need (ONNX Runtime,
# the sample photos) through the idempotent setup script, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --all-targets "$@"
