#!/usr/bin/env bash
# End-to-end throughput and memory of `sslpipe run` on the photo corpus, next to the decode+resize
# stage alone, in alternation (the machine is shared and noisy: read medians and ratios).
#   scripts/bench-embed.sh [REPS] [WIDTH]   (needs scripts/fetch-corpus.sh to have run)
# WIDTH: the built-in encoder's `[model] width` (default 32; 8 is the small encoder that
# scripts/bench-compare.sh uses). Against Python pipelines: scripts/bench-compare.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/build-env.sh   # nasm on PATH: the JPEG decoder's SIMD
reps=${1:-3}
width=${2:-32}
corpus=data/corpus
[ -d "$corpus" ] || { echo "no $corpus: run scripts/fetch-corpus.sh first" >&2; exit 1; }
cargo build --release --quiet --bin sslpipe --example decode_only
bin="${CARGO_TARGET_DIR:-target}/release"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for size in 96 224; do
  cat > "$work/p$size.toml" <<TOML
[source]
kind = "dir"
path = "$PWD/$corpus"
[decode]
size = $size
[model]
kind = "builtin"
width = $width
[embed]
batch_size = 64
[output]
dir = "$work/out$size"
TOML
  : > "$work/e2e$size"; : > "$work/dec$size"; : > "$work/rss$size"
  for _ in $(seq "$reps"); do
    /usr/bin/time -f "%M" -o "$work/time" "$bin/sslpipe" run -q --json "$work/p$size.toml" > "$work/summary.json"
    python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['images_per_s'])" "$work/summary.json" >> "$work/e2e$size"
    echo $(( $(cat "$work/time") / 1024 )) >> "$work/rss$size"
    "$bin/examples/decode_only" "$corpus" "$size" 2 \
      | python3 -c "import json,sys; print(json.load(sys.stdin)['images_per_s'])" >> "$work/dec$size"
  done
  e2e=$(median < "$work/e2e$size"); dec=$(median < "$work/dec$size"); rss=$(median < "$work/rss$size")
  printf '%s px, encoder width %s: end to end %.0f img/s (median of %s), decode+resize alone on 2 threads %.0f img/s, ratio %.2f, peak RSS %s MB\n' \
    "$size" "$width" "$e2e" "$reps" "$dec" "$(python3 -c "print($e2e/$dec)")" "$rss"
  python3 - "$work/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
for st in s["stages"]:
    print(f"   {st['stage']:<7} busy {st['busy_share']*100:5.1f}%  wait-in {st['wait_in_share']*100:5.1f}%  wait-out {st['wait_out_share']*100:5.1f}%  capacity {st['capacity_per_s']:8.1f}/s")
PY
done
