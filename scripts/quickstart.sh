#!/usr/bin/env bash
# The README's first command: fetch what sslpipe needs (idempotent), build the release binary and
# run the main pipeline on the bundled sample photos. Extra arguments go to `sslpipe run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/build-env.sh   # nasm on PATH: the JPEG decoder's SIMD
echo "building sslpipe (release; the first build takes several minutes)"
cargo build --release --locked --quiet
sslpipe="${CARGO_TARGET_DIR:-target}/release/sslpipe"
"$sslpipe" run pipelines/colorize.toml "$@"
echo
"$sslpipe" inspect out/colorize --rows 3
echo "training curve: out/colorize/pretrain/curve.png, predictions: out/colorize/pretrain/predictions.png"
