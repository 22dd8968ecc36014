#!/usr/bin/env bash
# Makes the Python venv .deps/venv-NAME with PACKAGES, once: the one way the dev scripts and the
# tests get their Python tools (readers, moto, Feast, pylance); nothing is installed elsewhere.
#
#   bash scripts/dev/venv.sh NAME PACKAGE...
#
# Idempotent: a stamp written after a successful install marks the venv complete, so a half-made
# venv (an interrupted install) is made again, never used; concurrent callers (parallel tests)
# wait on a lock while one of them installs.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { echo "usage: $0 NAME PACKAGE..." >&2; exit 2; }
name=$1
shift
venv=.deps/venv-$name
[ -f "$venv/.complete" ] && exit 0
mkdir -p .deps
exec 9>".deps/venv-$name.lock"
flock 9
[ -f "$venv/.complete" ] && exit 0
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "$@"
touch "$venv/.complete"
echo "[setup] $name venv: installed $* into $venv"
