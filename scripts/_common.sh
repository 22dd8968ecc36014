# shellcheck shell=bash disable=SC2034
# Helpers shared by scripts/setup.sh, scripts/fetch-corpus.sh and
# scripts/fetch-fashion-mnist.sh. Sourced, never run. Nothing here touches the
# network by itself: each helper is only called when a script really has
# something to fetch.

# Repository root, whatever the caller's working directory.
SSLPIPE_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# One line per step: "[tag] what: state".
say() { printf '[%s] %s\n' "${SSLPIPE_TAG:-sslpipe}" "$*"; }
die() { printf '[%s] error: %s\n' "${SSLPIPE_TAG:-sslpipe}" "$*" >&2; exit 1; }

# run_logged LOG CMD...: run CMD with its output in LOG; on failure print the
# tail of LOG and return CMD's status.
run_logged() {
  local log=$1; shift
  local rc=0
  "$@" >>"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    printf '[%s] command failed (%s): %s\n' "${SSLPIPE_TAG:-sslpipe}" "$rc" "$*" >&2
    tail -n 20 "$log" >&2 || true
  fi
  return "$rc"
}

# ---- pip ---------------------------------------------------------------
# Sets PIP to an array holding a working pip command: `pip`, else
# `python3 -m pip`, else (as root, on Debian) installs python3-pip first.
find_pip() {
  if command -v pip >/dev/null 2>&1 && pip --version >/dev/null 2>&1; then
    PIP=(pip)
  elif python3 -m pip --version >/dev/null 2>&1; then
    PIP=(python3 -m pip)
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "pip: not found, installing python3-pip with apt-get"
    apt_update_once
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    PIP=(python3 -m pip)
  else
    die "neither pip nor 'python3 -m pip' works; install python3-pip"
  fi
}

# pip_download_wheel NAME VERSION SHA256 DIR: fetches the cp311 manylinux
# x86_64 wheel of NAME==VERSION into DIR without installing anything, checks
# its sha256 and sets WHEEL to its path.
PIP=()
WHEEL=
pip_download_wheel() {
  local name=$1 version=$2 sha=$3 dir=$4 whl got
  [ "${#PIP[@]}" -gt 0 ] || find_pip
  run_logged "$dir/pip.log" "${PIP[@]}" download --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 \
    --disable-pip-version-check -d "$dir" "$name==$version" \
    || die "pip could not download $name==$version"
  whl=$(find "$dir" -maxdepth 1 -name '*.whl' | head -n 1)
  [ -n "$whl" ] || die "no wheel for $name==$version in $dir"
  got=$(sha256sum "$whl" | cut -d' ' -f1)
  [ "$got" = "$sha" ] || die "sha256 mismatch for $(basename "$whl"): got $got, want $sha"
  WHEEL=$whl
}

# zip_extract ZIP MEMBER DEST: copies one member of a zip (a wheel) to DEST
# (written to DEST.tmp, then renamed). Uses Python, so `unzip` is not needed.
zip_extract() {
  python3 - "$1" "$2" "$3" <<'PY'
import os, shutil, sys, zipfile
zpath, member, dest = sys.argv[1:]
with zipfile.ZipFile(zpath) as z, z.open(member) as src, open(dest + ".tmp", "wb") as out:
    shutil.copyfileobj(src, out)
os.replace(dest + ".tmp", dest)
PY
}

# ---- apt ---------------------------------------------------------------
APT_UPDATED=0
apt_update_once() {
  [ "$APT_UPDATED" = 1 ] && return 0
  APT_UPDATED=1
  if [ "$(id -u)" != 0 ]; then
    say "apt-get update: skipped (not root)"
    return 0
  fi
  say "apt-get update: refreshing package lists"
  apt-get update -qq >/dev/null 2>&1 || say "apt-get update: failed, going on with the lists there are"
}

apt_has_candidate() {
  local c
  c=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
  [ -n "$c" ] && [ "$c" != "(none)" ]
}

# apt_download PKG DIR: downloads PKG's .deb into DIR (no install) and sets
# DEB to its path. Runs `apt-get update` once per script when the lists do
# not know PKG or the download fails (stale lists). Returns 1 if PKG cannot
# be had.
DEB=
apt_download() {
  local pkg=$1 dir=$2 deb
  DEB=
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found (a Debian machine is needed)"
  if ! apt_has_candidate "$pkg"; then
    apt_update_once
    apt_has_candidate "$pkg" || return 1
  fi
  rm -f "$dir/${pkg}_"*.deb
  # The sandbox user option avoids apt's warning (and failure on some setups)
  # when the _apt user cannot write DIR.
  if ! (cd "$dir" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null 2>&1); then
    [ "$APT_UPDATED" = 1 ] && return 1
    apt_update_once
    (cd "$dir" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null 2>&1) || return 1
  fi
  deb=$(find "$dir" -maxdepth 1 -name "${pkg}_*.deb" | head -n 1)
  [ -n "$deb" ] || return 1
  DEB=$deb
}
