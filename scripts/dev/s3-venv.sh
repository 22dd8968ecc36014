#!/usr/bin/env bash
# Makes .deps/venv-s3: moto in server mode (`moto_server`) and boto3, the real S3-compatible
# server the `s3` source's tests start on loopback (tests/it/s3.rs). Idempotent: a stamp written
# after a successful install marks it complete, so a half-made venv (an interrupted install) is
# made again, never used.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.deps/venv-s3
[ -f "$venv/.complete" ] && exit 0
mkdir -p .deps
exec 9>.deps/venv-s3.lock
flock 9   # tests may ask for it concurrently: one makes it, the others wait
[ -f "$venv/.complete" ] && exit 0
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "moto[server]>=5,<6" boto3
touch "$venv/.complete"
echo "[setup] s3 venv: installed moto[server] and boto3 into $venv"
