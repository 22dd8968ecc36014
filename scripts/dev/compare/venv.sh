#!/usr/bin/env bash
# Makes .deps/venv-compare for scripts/bench-compare.sh: Pillow, onnxruntime (the version
# scripts/setup.sh installs for sslpipe), pyarrow, numpy and psutil; with --daft, Daft too.
#   scripts/dev/compare/venv.sh [--daft]
# Idempotent: a stamp written after a successful install marks each part complete, so a half-made
# venv (an interrupted install) is made again, never used. Concurrent callers wait on a lock.
set -euo pipefail
cd "$(dirname "$0")/../../.."
venv=.deps/venv-compare
ORT_VERSION=$(sed -n 's/^ORT_VERSION=//p' scripts/setup.sh)
PILLOW_VERSION=13.0.0   # the one scripts/fetch-corpus.sh uses
daft=0
[ "${1:-}" = "--daft" ] && daft=1
base_done() { [ -f "$venv/.complete" ] && [ "$(cat "$venv/.complete")" = "ort=$ORT_VERSION pillow=$PILLOW_VERSION" ]; }
daft_done() { [ "$daft" = 0 ] || [ -f "$venv/.complete-daft" ]; }
base_done && daft_done && exit 0
mkdir -p .deps
exec 9>.deps/venv-compare.lock
flock 9
if ! base_done; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "onnxruntime==$ORT_VERSION" "pillow==$PILLOW_VERSION" pyarrow numpy psutil
  echo "ort=$ORT_VERSION pillow=$PILLOW_VERSION" > "$venv/.complete"
  echo "[compare] venv: installed onnxruntime $ORT_VERSION, pillow $PILLOW_VERSION, pyarrow, numpy, psutil into $venv"
fi
if ! daft_done; then
  "$venv/bin/pip" install -q --disable-pip-version-check daft
  touch "$venv/.complete-daft"
  echo "[compare] venv: installed daft into $venv"
fi
