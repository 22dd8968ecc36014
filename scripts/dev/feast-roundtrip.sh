#!/usr/bin/env bash
# The Feast round trip with the real Feast SDK: embeds the bundled photos (both embedding types),
# writes a feature repository with `sslpipe feast`, runs `feast apply`, reads a few keys back with
# get_historical_features (offline, from the Parquet parts) and, after `materialize`, with
# get_online_features (SQLite online store), and checks every vector against the Parquet rows.
#
#   bash scripts/dev/feast-roundtrip.sh [SSLPIPE_BINARY]
#
# Feast and its dependencies (~600 MB) go into .deps/venv-feast on the first run (a stamp marks a
# complete install); nothing else is installed. Not part of the test suite: the install is slow.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh > /dev/null
venv=.deps/venv-feast
bash scripts/dev/venv.sh feast "feast==0.67.*" pyarrow
if [ $# -ge 1 ]; then
  bin=$(realpath "$1")
else
  . scripts/build-env.sh
  cargo build --release --quiet --bin sslpipe
  bin="${CARGO_TARGET_DIR:-$PWD/target}/release/sslpipe"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for type in list fixed_size_list; do
  cat > "$work/$type.toml" <<TOML
[source]
kind = "dir"
path = "$PWD/data/photos"
[decode]
size = 96
[output]
dir = "$work/features-$type"
embedding_type = "$type"
TOML
  "$bin" run -q "$work/$type.toml" > /dev/null
  "$bin" feast "$work/features-$type" --out "$work/repo-$type"
  (cd "$work/repo-$type" && "$OLDPWD/$venv/bin/feast" apply > /dev/null)
  "$venv/bin/python" - "$work/repo-$type" "$work/features-$type" "$type" <<'PY'
import datetime, glob, sys
import pandas as pd, pyarrow as pa, pyarrow.parquet as pq
from feast import FeatureStore
repo, features, kind = sys.argv[1:]
table = pa.concat_tables([pq.read_table(p) for p in sorted(glob.glob(features + "/part-*.parquet"))])
rows = dict(zip(table.column("key").to_pylist(), table.column("embedding").to_pylist()))
keys = sorted(rows)[:5]
store = FeatureStore(repo_path=repo)
now = datetime.datetime.now(datetime.timezone.utc)
entities = pd.DataFrame({"key": keys, "event_timestamp": [now] * len(keys)})
offline = store.get_historical_features(
    entity_df=entities, features=["embeddings:embedding", "embeddings:width", "embeddings:model_id"]
).to_df().set_index("key")
store.materialize(start_date=now - datetime.timedelta(days=3650), end_date=now + datetime.timedelta(minutes=1))
online = store.get_online_features(
    features=["embeddings:embedding"], entity_rows=[{"key": k} for k in keys]
).to_dict()
for i, key in enumerate(keys):
    want = rows[key]
    got_offline = [float(v) for v in offline.loc[key, "embedding"]]
    got_online = [float(v) for v in online["embedding"][i]]
    assert got_offline == want, f"{kind} {key}: offline vector differs"
    assert got_online == want, f"{kind} {key}: online vector differs"
print(f"{kind}: {len(keys)} keys, {len(want)}-d embeddings; offline (get_historical_features) and "
      f"online (materialize + get_online_features) vectors equal the Parquet rows exactly; "
      f"e.g. {keys[0]}: width {offline.loc[keys[0], 'width']}, model_id {offline.loc[keys[0], 'model_id']}")
PY
done
