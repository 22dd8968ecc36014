#!/usr/bin/env bash
# sslpipe against Python pipelines doing the same job, on the same machine, in alternation.
#   scripts/bench-compare.sh [ROUNDS] [--daft] [--draft] [--width N] [--sizes "96 224"]
#   scripts/bench-compare.sh [ROUNDS] --scaling [--big]    sslpipe alone: workers 1/2, corpus 2k/20k (/200k),
#                                                          row groups of 4,096 rows
#   scripts/bench-compare.sh [ROUNDS] --grid               sslpipe alone: decode workers × ORT threads
#
# The job: the 2,000-photo corpus (scripts/fetch-corpus.sh) → centred square, bilinear, SIZE px →
# ImageNet normalisation → the same encoder.onnx (sslpipe's built-in encoder, `[model] width = N`,
# default 8, exported once by sslpipe) in batches of 64 → Parquet (key, embedding
# fixed_size_list<float32>). Peers (scripts/dev/compare/): (a) Pillow + onnxruntime + pyarrow in one
# process, (b) the same with decoding in a 2-process pool, with --draft also (a) and (b) with
# Pillow's `draft` (libjpeg DCT scaling, the counterpart of sslpipe's scaled JPEG decode), with
# --daft (c) Daft with a Pillow UDF and an onnxruntime UDF. Every run is timed from process start
# to exit (img/s = images / wall time) with its peak RSS (process tree, psutil); tools take turns
# within each round, the order rotating, so a shared machine's load hits all alike: read medians
# and ratios. Outputs are checked against sslpipe's: same keys, cosine similarity per key.
# SSLPIPE_BIN=PATH measures that sslpipe binary instead of building one; SSLPIPE_BASELINE=PATH adds
# a second sslpipe binary to the rotation (before/after a change).
# Python lives in .deps/venv-compare (made once); everything else is written under out/compare/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/build-env.sh   # nasm on PATH: the JPEG decoder's SIMD

rounds=3 daft=0 draft=0 mode=compare width=8 sizes="96 224" big=0
while [ $# -gt 0 ]; do
  case $1 in
    --daft) daft=1 ;;
    --draft) draft=1 ;;
    --scaling) mode=scaling ;;
    --grid) mode=grid ;;
    --big) big=1 ;;
    --width) width=$2; shift ;;
    --sizes) sizes=$2; shift ;;
    [0-9]*) rounds=$1 ;;
    *) echo "usage: $0 [ROUNDS] [--daft] [--draft] [--width N] [--sizes \"96 224\"] | --scaling [--big] | --grid" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '[compare] %s\n' "$*" >&2; }
export PYTHONDONTWRITEBYTECODE=1   # nothing written into the repository but under out/ and .deps/
bash scripts/fetch-corpus.sh 2000 >&2
bash scripts/dev/compare/venv.sh $([ "$daft" = 1 ] && echo --daft) >&2
py=.deps/venv-compare/bin/python
dev=scripts/dev/compare
corpus=$PWD/data/corpus
root=$PWD/out/compare
res=$root/results
rm -rf "$res" "$root/runs"
mkdir -p "$res" "$root/runs"
# A private copy of the binary: a rebuild during the runs must not change what is measured.
# SSLPIPE_BIN=PATH measures that binary instead (e.g. an older build).
if [ -n "${SSLPIPE_BIN:-}" ]; then
  cp "$SSLPIPE_BIN" "$root/sslpipe"
else
  cargo build --release --quiet --bin sslpipe
  cp "${CARGO_TARGET_DIR:-target}/release/sslpipe" "$root/sslpipe"
fi
bin=$root/sslpipe
# SSLPIPE_BASELINE=PATH adds that binary as one more tool ("sslpipe-baseline"): before/after.
[ -n "${SSLPIPE_BASELINE:-}" ] && cp "$SSLPIPE_BASELINE" "$root/sslpipe-baseline"
say "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start; $rounds round(s), encoder width $width"

# encoder.onnx for SIZE: the built-in encoder as sslpipe writes it (16 sample photos suffice).
encoder() {
  local size=$1 dir=$root/encoder-w$width-$1
  if [ ! -s "$dir/encoder.onnx" ]; then
    cat > "$root/export-$size.toml" <<TOML
[source]
kind = "dir"
path = "$PWD/data/photos"
[decode]
size = $size
[model]
kind = "builtin"
width = $width
[output]
dir = "$dir"
TOML
    "$bin" run -q "$root/export-$size.toml" >/dev/null 2>&1
  fi
  echo "$dir/encoder.onnx"
}

# sslpipe_toml FILE CORPUS SIZE MODEL OUT [WORKERS] [INTRA] [ROW_GROUP_ROWS]
sslpipe_toml() {
  cat > "$1" <<TOML
[pipeline]
workers = ${6:-0}
[source]
kind = "dir"
path = "$2"
[decode]
size = $3
[model]
kind = "onnx"
path = "$4"
[runtime]
intra_threads = ${7:-0}
[embed]
batch_size = 64
[output]
dir = "$5"
row_group_rows = ${8:-32768}
TOML
}

# measure RESULT_JSON CMD...: one timed run (see scripts/dev/compare/measure.py).
measure() { local out=$1; shift; mkdir -p "$(dirname "$out")"; "$py" "$dev/measure.py" "$out" -- "$@" || true; }

run_tool() { # TOOL SIZE MODEL OUT RESULT
  local tool=$1 size=$2 model=$3 out=$4 result=$5
  rm -rf "$out"
  case $tool in
    sslpipe) sslpipe_toml "$root/runs/sslpipe-$size.toml" "$corpus" "$size" "$model" "$out"
             measure "$result" "$bin" run -q --json "$root/runs/sslpipe-$size.toml" ;;
    sslpipe-baseline) sslpipe_toml "$root/runs/baseline-$size.toml" "$corpus" "$size" "$model" "$out"
             measure "$result" "$root/sslpipe-baseline" run -q --json "$root/runs/baseline-$size.toml" ;;
    pillow) measure "$result" "$py" "$dev/peer.py" "$corpus" "$model" "$size" "$out" ;;
    pillow-pool2) measure "$result" "$py" "$dev/peer.py" "$corpus" "$model" "$size" "$out" --workers 2 ;;
    pillow-draft) measure "$result" "$py" "$dev/peer.py" "$corpus" "$model" "$size" "$out" --draft ;;
    pillow-draft-pool2) measure "$result" "$py" "$dev/peer.py" "$corpus" "$model" "$size" "$out" --workers 2 --draft ;;
    daft) measure "$result" "$py" "$dev/daft_peer.py" "$corpus" "$model" "$size" "$out" ;;
  esac
  "$py" -c 'import json,sys; m=json.load(open(sys.argv[1])); print("[compare]   %-20s %6.0f img/s  %5.0f MB%s" % (sys.argv[2], (m["images"] or 0)/m["wall_s"], m["peak_rss_mb"], "" if m["rc"]==0 else "  FAILED: "+m["stderr_tail"][-300:]))' "$result" "$tool" >&2
}

if [ "$mode" = compare ]; then
  tools=(sslpipe pillow pillow-pool2)
  [ -n "${SSLPIPE_BASELINE:-}" ] && tools+=(sslpipe-baseline)
  [ "$draft" = 1 ] && tools+=(pillow-draft pillow-draft-pool2)
  [ "$daft" = 1 ] && tools+=(daft)
  for size in $sizes; do
    model=$(encoder "$size")
    mkdir -p "$res/$size"
    "$py" - "$model" "$size" > "$res/$size/encoder-alone.json" <<'PY'
import json, sys, time, numpy as np, onnxruntime as ort
so = ort.SessionOptions(); so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
size = int(sys.argv[2]); x = np.random.default_rng(0).random((64, 3, size, size), np.float32)
name = s.get_inputs()[0].name
for _ in range(3): s.run(None, {name: x})
ts = []
for _ in range(15):
    t = time.perf_counter(); s.run(None, {name: x}); ts.append(time.perf_counter() - t)
print(json.dumps({"batch": 64, "images_per_s": 64 / sorted(ts)[len(ts) // 2]}))
PY
    say "$size px: encoder alone $("$py" -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["images_per_s"]))' "$res/$size/encoder-alone.json") img/s"
    for r in $(seq "$rounds"); do
      say "$size px, round $r/$rounds"
      n=${#tools[@]}
      for i in $(seq 0 $((n - 1))); do
        tool=${tools[$(( (i + r - 1) % n ))]}
        run_tool "$tool" "$size" "$model" "$root/runs/$tool-$size" "$res/compare/$size/$tool/$r.json"
      done
    done
    for tool in "${tools[@]}"; do
      [ "$tool" = sslpipe ] && continue
      "$py" "$dev/check.py" "$root/runs/sslpipe-$size" "$root/runs/$tool-$size" > "$res/$size/check-$tool.json" || true
    done
  done
fi

if [ "$mode" = grid ]; then
  size=96 model=$(encoder 96)
  cells=("1 1" "1 2" "2 1" "2 2" "2 0" "3 1" "3 2")
  for r in $(seq "$rounds"); do
    say "grid, round $r/$rounds"
    n=${#cells[@]}
    for i in $(seq 0 $((n - 1))); do
      read -r w t <<< "${cells[$(( (i + r - 1) % n ))]}"
      sslpipe_toml "$root/runs/grid.toml" "$corpus" 96 "$model" "$root/runs/grid-out" "$w" "$t"
      measure "$res/grid/$w-$t/$r.json" "$bin" run -q --json "$root/runs/grid.toml"
      "$py" -c 'import json,sys; m=json.load(open(sys.argv[1])); print("[compare]   workers %s intra %s: %6.0f img/s  %5.0f MB" % (sys.argv[2], sys.argv[3], (m["images"] or 0)/m["wall_s"], m["peak_rss_mb"]))' "$res/grid/$w-$t/$r.json" "$w" "$t" >&2
    done
  done
fi

if [ "$mode" = scaling ]; then
  model=$(encoder 96)
  # Bigger corpora: hard links to the 2,000 photos under numbered folders (distinct keys).
  counts=(2000 20000)
  [ "$big" = 1 ] && counts+=(200000)
  for n in "${counts[@]}"; do
    [ "$n" = 2000 ] && continue
    dir=$root/corpus-$n
    if [ ! -f "$dir/.complete" ]; then
      rm -rf "$dir"
      for i in $(seq 0 $((n / 2000 - 1))); do
        mkdir -p "$dir/$(printf '%03d' "$i")"
        ln "$corpus"/[0-9]*.jpg "$dir/$(printf '%03d' "$i")/"
      done
      touch "$dir/.complete"
    fi
  done
  for r in $(seq "$rounds"); do
    say "scaling, round $r/$rounds"
    for n in "${counts[@]}"; do
      src=$corpus; [ "$n" = 2000 ] || src=$root/corpus-$n
      for w in 1 2; do
        # Row groups of 4,096 rows: the sink holds one open row group, so with the default 32,768
        # its memory grows until the corpus passes 32,768 images and is flat only after that.
        sslpipe_toml "$root/runs/scaling.toml" "$src" 96 "$model" "$root/runs/scaling-out" "$w" 0 4096
        measure "$res/scaling/$n-$w/$r.json" "$bin" run -q --json "$root/runs/scaling.toml"
        "$py" -c 'import json,sys; m=json.load(open(sys.argv[1])); print("[compare]   %s images, workers %s: %6.0f img/s  %5.0f MB" % (sys.argv[2], sys.argv[3], (m["images"] or 0)/m["wall_s"], m["peak_rss_mb"]))' "$res/scaling/$n-$w/$r.json" "$n" "$w" >&2
      done
    done
  done
fi

say "load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
"$py" "$dev/report.py" "$res"
