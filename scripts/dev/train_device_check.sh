#!/usr/bin/env bash
# The train-step checks that want a quiet many-core machine with PyTorch (the lent GPU machine,
# used here as a 16-core CPU box): the PyTorch reference of one SGD and one AdamW step, and the
# CPU throughput of sslpipe's train step next to PyTorch's eager step, same machine, same threads.
#
# Prepare here (what travels in .devcarry/, which .git/info/exclude ignores):
#   cargo bench --bench train_step --no-run
#   cargo test --lib train::tests::reference::export_reference_steps -- --ignored
#   scripts/dev/train_device_check.sh --prepare
# Run there:  bash scripts/dev/train_device_check.sh      (writes logs to $OUT or /tmp/train_check)
set -uo pipefail
cd "$(dirname "$0")/../.."
C=.devcarry
if [ "${1:-}" = "--prepare" ]; then
  mkdir -p $C
  bin=$(ls -t target/release/deps/train_step-* | grep -v '\.d$' | head -1)
  cp "$bin" $C/train_step && strip $C/train_step
  lib=$(readlink -f "${ORT_DYLIB_PATH:-$HOME/.local/share/sslpipe/onnxruntime/libonnxruntime.so}")
  xz -T2 -6 -c "$lib" > $C/libonnxruntime.so.xz
  rm -rf $C/train_ref && cp -r target/train_ref $C/train_ref
  du -sh $C
  exit 0
fi
OUT=${OUT:-/tmp/train_check}
mkdir -p "$OUT" /tmp/ort
python3 -c "import lzma,sys; open('/tmp/ort/libonnxruntime.so','wb').write(lzma.open('$C/libonnxruntime.so.xz').read())"
export ORT_DYLIB_PATH=/tmp/ort/libonnxruntime.so
export PYTHONUNBUFFERED=1
{
  echo "== machine"; nproc; grep -m1 "model name" /proc/cpuinfo
  echo "== reference step (numpy float64 and torch float64) vs sslpipe"
  python3 scripts/dev/train_reference.py $C/train_ref
  for th in 16 4; do
    echo "== throughput, $th threads"
    python3 scripts/dev/train_torch_bench.py --threads $th --steps 10 --channels-last
    $C/train_step --threads $th --steps 10 --levels extended,all --rules default,im2col,dilated,alt
  done
  echo "== profile, 16 threads"
  $C/train_step --threads 16 --steps 5 --levels extended --optimizers sgd --profile
} 2>&1 | tee "$OUT/train_check.log"
