#!/usr/bin/env bash
# The Fashion-MNIST downstream benchmark (README "Downstream evaluation"): pretrain the built-in
# encoder on the 60k training images without labels for each pretext task, embed train and test
# with it, and probe the frozen features with 100 and 1,000 labels (10 and 100 per class, linear
# probe and kNN, 3 draws each). Baselines in the same table: raw pixels and the same encoder with
# random initial weights.
#
#   [FEATURES=stages|last] [SIZE=64] [GRID=8] [STEM=strided] [VIEW_SIZE=16] [WIDTH=48] \
#     bash scripts/bench-fashion-mnist.sh [MINUTES] [TASKS...]
#
# MINUTES: pretraining budget per task (default 10); TASKS: default "rotation jigsaw inpaint views".
# SIZE: the working size the 28-px images are resized to (jigsaw: at least 64); GRID: cells per
# side of the `stages` pooling; STEM: the encoder's stem; VIEW_SIZE: side of the two views the
# views task trains on (smaller than SIZE: cheaper steps, and objects look as large as in the
# crops seen in training); WIDTH: the encoder's width.
# Everything goes to out/fmnist/; the table is printed at the end and saved as out/fmnist/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-10}
shift || true
TASKS=${*:-rotation jigsaw inpaint views}
OUT=$PWD/out/fmnist
DATA=$PWD/data/fashion-mnist
bash scripts/setup.sh >/dev/null
. scripts/build-env.sh   # nasm on PATH: the JPEG decoder's SIMD
bash scripts/fetch-fashion-mnist.sh
bash scripts/dev/readers-venv.sh
PY=.deps/venv-readers/bin/python
# SSLPIPE_BIN: a binary to use instead of building one.
if [ -z "${SSLPIPE_BIN:-}" ]; then
  cargo build --release -q
fi
BIN=${SSLPIPE_BIN:-${CARGO_TARGET_DIR:-target}/release/sslpipe}
mkdir -p "$OUT"

# Labels: key,label,split from the IDX label files (8-byte header, then one byte per image).
classes=(T-shirt/top Trouser Pullover Dress Coat Sandal Shirt Sneaker Bag Ankle-boot)
{
  echo "key,label,split"
  for part in train t10k; do
    split=train; [ $part = t10k ] && split=test
    od -An -v -tu1 -j8 -w1 "$DATA/$part-labels-idx1-ubyte" |
      awk -v p=$part -v s=$split -v names="${classes[*]}" \
        'BEGIN{split(names, n, " ")} {printf "%s/%05d,%s,%s\n", p, NR-1, n[$1+1], s}'
  done
} >"$OUT/labels.csv"

SIZE=${SIZE:-64}
GRID=${GRID:-8}
STEM=${STEM:-strided}
VIEW_SIZE=${VIEW_SIZE:-16}
WIDTH=${WIDTH:-48}

# pipeline NAME PART MODEL [SIZE]: a pipeline for the train or test file (PART = train|t10k) with
# the [model] body MODEL, images resized to SIZE (default $SIZE).
pipeline() {
  cat <<TOML
[pipeline]
seed = 0
[source]
kind = "idx"
path = "$DATA/$2-images-idx3-ubyte"
[decode]
size = ${4:-$SIZE}
[model]
$3
[embed]
batch_size = 256
[output]
dir = "$OUT/$1/$2"
TOML
}
# FEATURES: the encoder's `features` ("stages": every stage's GRID x GRID average; "last": the
# last stage's global average, 4*WIDTH values).
FEATURES=${FEATURES:-stages}
POOLING="grid = $GRID"
if [ "$FEATURES" = last ]; then POOLING="embedding_dim = $((4 * WIDTH))"; fi
ENCODER="kind = \"builtin\"
width = $WIDTH
stages = [1, 1, 1]
stem = \"$STEM\"
features = \"$FEATURES\"
$POOLING
mean = [0.286, 0.286, 0.286]
std = [0.353, 0.353, 0.353]"

probe() { # name features-dir...
  local name=$1; shift
  local args=()
  for f in "$@"; do args+=(--features "$f"); done
  "$BIN" eval "${args[@]}" --labels "$OUT/labels.csv" --per-class 10,100 --repeats 3 \
    --allow-missing --json --out "$OUT/$name/eval" >"$OUT/$name/eval.json"
}

rows=()
row() { # name eval.json pretrain-seconds
  rows+=("$("$PY" - "$1" "$2" "$3" <<'PY'
import json, sys
name, path, secs = sys.argv[1], sys.argv[2], sys.argv[3]
r = json.load(open(path))
cells = {}
for res in r["results"]:
    cells[(res["probe"], res["per_class"])] = f'{res["accuracy_mean"]:.3f} ± {res["accuracy_std"]:.3f}'
get = lambda p, n: cells.get((p, n), "–")
print(f"| {name} | {secs} | {get('linear', 10)} | {get('knn', 10)} | {get('linear', 100)} | {get('knn', 100)} |")
PY
)")
}

# Raw pixels.
mkdir -p "$OUT/pixels"
"$PY" scripts/dev/fmnist_pixels.py "$DATA/train-images-idx3-ubyte" "$OUT/pixels/train.parquet"
"$PY" scripts/dev/fmnist_pixels.py "$DATA/t10k-images-idx3-ubyte" "$OUT/pixels/test.parquet"
probe pixels "$OUT/pixels/train.parquet" "$OUT/pixels/test.parquet"
row "raw pixels" "$OUT/pixels/eval.json" "–"

# Random initial weights.
for part in train t10k; do
  pipeline random $part "$ENCODER" >"$OUT/random-$part.toml"
  "$BIN" run -q "$OUT/random-$part.toml" >/dev/null
done
probe random "$OUT/random/train" "$OUT/random/t10k"
row "random init" "$OUT/random/eval.json" "–"

for task in $TASKS; do
  pretext="kind = \"$task\""
  size=$SIZE
  case $task in
    jigsaw) # 2x2 tiles of 24 px: work at 64 px at least
      size=$((SIZE > 64 ? SIZE : 64))
      pretext="$pretext
grid = 2
permutations = 24" ;;
    inpaint) pretext="$pretext
hole = $((SIZE * 3 / 8))" ;;
    views) pretext="$pretext
out_size = $VIEW_SIZE" ;;
  esac
  {
    pipeline "$task" train "$ENCODER" $size
    cat <<TOML
[pretext]
$pretext
[pretrain]
minutes = $MINUTES
batch_size = 128
lr = 0.002
holdout = 1000
eval_every = 200
checkpoint_every = 1000
TOML
  } >"$OUT/$task-train.toml"
  echo "[fmnist] pretraining $task for $MINUTES min"
  "$BIN" run -q --json "$OUT/$task-train.toml" >"$OUT/$task-train.json"
  secs=$("$PY" -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["pretrain"]["seconds"]))' "$OUT/$task-train.json")
  pipeline "$task" t10k "kind = \"onnx\"
path = \"$OUT/$task/train/encoder.onnx\"
mean = [0.286, 0.286, 0.286]
std = [0.353, 0.353, 0.353]" $size >"$OUT/$task-test.toml"
  "$BIN" run -q "$OUT/$task-test.toml" >/dev/null
  probe "$task" "$OUT/$task/train" "$OUT/$task/t10k"
  row "$task" "$OUT/$task/eval.json" "$secs"
done

{
  echo "| features | pretraining (s) | linear, 100 labels | kNN, 100 labels | linear, 1,000 labels | kNN, 1,000 labels |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
  printf '%s\n' "${rows[@]}"
} | tee "$OUT/table.md"
