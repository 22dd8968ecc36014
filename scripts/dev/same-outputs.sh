#!/usr/bin/env bash
# Checks that two sslpipe builds produce the same outputs from every pipeline in pipelines/:
# the same keys and bit-identical embeddings in the feature files, the same pretext tensors in the
# export files, and the same loss curve (every column of pretrain/log.csv but the timings).
# A refactoring that claims "behaviour unchanged" is checked with it:
#
#   bash scripts/dev/same-outputs.sh OLD_BINARY NEW_BINARY [STEPS]
#
# Pretraining pipelines run with `steps = STEPS` (default 8) so the check takes minutes, not
# hours; everything else runs as written, on the bundled photos (scripts/setup.sh fetches them).
# Prints one line per pipeline and exits non-zero if any output differs.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY [STEPS]" >&2; exit 2; }
old=$(realpath "$1"); new=$(realpath "$2"); steps=${3:-8}
bash scripts/dev/readers-venv.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run_all() {   # BINARY ROOT: every pipeline, copied under ROOT/pipes so that ../data and ../out resolve there
  local bin=$1 root=$2
  mkdir -p "$root/pipes" "$root/out"
  ln -s "$PWD/data" "$root/data"
  for p in pipelines/*.toml; do
    sed -E "s/^steps = [0-9]+/steps = $steps/" "$p" > "$root/pipes/$(basename "$p")"
    # Pipelines the old build cannot read (features added since) have nothing to compare.
    if ! "$old" validate "$root/pipes/$(basename "$p")" > /dev/null 2>&1; then
      echo "skip $(basename "$p" .toml): the old build does not know it" >> "$root/out/skipped"
      continue
    fi
    "$bin" run "$root/pipes/$(basename "$p")" < /dev/null > "$root/out/$(basename "$p" .toml).log" 2>&1 \
      || echo "exit $? from $(basename "$p")" >> "$root/out/failures"
  done
}
run_all "$old" "$work/old"
run_all "$new" "$work/new"
.deps/venv-readers/bin/python - "$work/old" "$work/new" <<'PY'
import csv, glob, os, sys
import pyarrow as pa
import pyarrow.parquet as pq
old, new = sys.argv[1], sys.argv[2]
TIMING = {"seconds", "images_per_s", "input_wait"}
bad = 0
if os.path.exists(os.path.join(new, "out", "skipped")):
    print(open(os.path.join(new, "out", "skipped")).read().strip())
for f in ("failures",):
    for root in (old, new):
        p = os.path.join(root, "out", f)
        if os.path.exists(p):
            print(f"FAIL {root}: {open(p).read().strip()}"); bad += 1
def table(d):
    parts = sorted(glob.glob(os.path.join(d, "part-*.parquet")))
    return pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None
def curve(d):
    p = os.path.join(d, "pretrain", "log.csv")
    if not os.path.exists(p):
        return None
    rows = list(csv.DictReader(open(p)))
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
for d in sorted(glob.glob(os.path.join(old, "out", "*/"))):
    name = os.path.basename(d.rstrip("/"))
    n = os.path.join(new, "out", name)
    a, b = table(d), table(n)
    diffs = []
    if (a is None) != (b is None):
        diffs.append("feature/tensor files present in one build only")
    elif a is not None:
        cols = [c for c in a.column_names if c != "event_timestamp"]
        if a.num_rows != b.num_rows:
            diffs.append(f"{a.num_rows} rows vs {b.num_rows}")
        for c in cols:
            if c not in b.column_names or not a.column(c).equals(b.column(c)):
                diffs.append(f"column {c} differs")
    ca, cb = curve(d), curve(n)
    if ca != cb:
        diffs.append("pretrain/log.csv differs outside the timing columns")
    rows = 0 if a is None else a.num_rows
    steps = 0 if ca is None else len(ca)
    print(f"{'DIFF' if diffs else 'same'} {name}: {rows} rows, {steps} log rows" + (": " + "; ".join(diffs) if diffs else ""))
    bad += bool(diffs)
sys.exit(1 if bad else 0)
PY
