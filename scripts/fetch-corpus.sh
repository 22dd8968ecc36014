#!/usr/bin/env bash
# Build a corpus of real photos and artworks for throughput runs:
#   scripts/fetch-corpus.sh [N]        (default N=2000)
#
# Downloads (apt-get download, never installs) Debian wallpaper packages,
# unpacks them with dpkg-deb -x into .deps/wallpapers/<package>/, and writes N
# JPEG images (longer side 400-640 px, quality 90), each a seeded random crop
# plus downscale of one of those wallpapers, as data/corpus/000000.jpg ...
# together with SOURCES.tsv (source and crop of each file), LICENSES.txt and
# licenses/<package>.copyright. Pillow (pinned) lives in the venv .deps/venv.
#
# Guarantees: the same N, packages and Pillow give byte-identical files, and
# the first M files of a corpus of N >= M are the corpus of M (so growing or
# shrinking N only writes or deletes the difference). When data/corpus/ already
# holds N images of this recipe the script does nothing and needs no network.
# A package that apt cannot provide is skipped with a message. Needs: bash,
# python3 (venv; python3-venv is installed with apt-get if missing), apt-get
# and dpkg-deb, root for `apt-get update`.
set -euo pipefail

SSLPIPE_TAG=corpus
# shellcheck source=scripts/_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

N=${1:-2000}
if ! [[ "$N" =~ ^[0-9]+$ ]] || [ "$N" -lt 1 ]; then
  die "usage: $0 [N]  (N a positive integer)"
fi
RECIPE=1                   # keep equal to RECIPE in scripts/make_corpus.py
PILLOW_VERSION=13.0.0
PACKAGES=(
  gnome-backgrounds mate-backgrounds plasma-workspace-wallpapers ukui-wallpapers
  sway-backgrounds desktop-base lomiri-wallpapers lomiri-wallpapers-16.04
  lomiri-wallpapers-20.04
)

DEPS=$SSLPIPE_REPO/.deps
WALL=$DEPS/wallpapers
VENV=$DEPS/venv
OUT=$SSLPIPE_REPO/data/corpus

corpus_present() {
  local stamp=$OUT/.recipe count
  [ -f "$stamp" ] || return 1
  [[ "$(sed -n 1p "$stamp")" == "recipe=$RECIPE "* ]] || return 1
  [ "$(sed -n 2p "$stamp")" = "n=$N" ] || return 1
  count=$(find "$OUT" -maxdepth 1 -name '[0-9][0-9][0-9][0-9][0-9][0-9].jpg' | wc -l)
  [ "$count" -eq "$N" ]
}

if corpus_present; then
  say "corpus of $N images: already present in $OUT"
  exit 0
fi

# ---- 1. wallpaper packages -----------------------------------------------
mkdir -p "$WALL"
have=0
for pkg in "${PACKAGES[@]}"; do
  if [ -f "$WALL/$pkg/VERSION" ]; then
    say "$pkg: already present ($(cat "$WALL/$pkg/VERSION"))"
    have=$((have + 1))
    continue
  fi
  mkdir -p "$WALL/.debs"
  if ! apt_download "$pkg" "$WALL/.debs"; then
    say "$pkg: not available from apt, skipped"
    continue
  fi
  rm -rf "${WALL:?}/$pkg"
  dpkg-deb -x "$DEB" "$WALL/$pkg"
  dpkg-deb -f "$DEB" Version >"$WALL/$pkg/VERSION"   # written last: "complete"
  rm -f "$DEB"
  say "$pkg: downloaded and unpacked ($(cat "$WALL/$pkg/VERSION"))"
  have=$((have + 1))
done
rmdir "$WALL/.debs" 2>/dev/null || true
[ "$have" -gt 0 ] || die "none of the wallpaper packages could be had"

# ---- 2. Python venv with Pillow ------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      die "python3 -m venv failed; install python3-venv"
    fi
    say "venv: python3 -m venv failed, installing python3-venv with apt-get"
    apt_update_once
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  say "venv: created $VENV"
fi
if "$VENV/bin/python" -c "import PIL, sys; sys.exit(PIL.__version__ != '$PILLOW_VERSION')" 2>/dev/null; then
  say "pillow $PILLOW_VERSION: already present in $VENV"
else
  LOG=$(mktemp)
  run_logged "$LOG" "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
    "pillow==$PILLOW_VERSION" || die "could not install pillow==$PILLOW_VERSION"
  rm -f "$LOG"
  say "pillow $PILLOW_VERSION: installed into $VENV"
fi

# ---- 3. crops ------------------------------------------------------------
start=$(date +%s)
"$VENV/bin/python" "$SSLPIPE_REPO/scripts/make_corpus.py" "$WALL" "$OUT" "$N"
corpus_present || die "corpus check failed after generation"
say "corpus of $N images: written to $OUT in $(( $(date +%s) - start )) s ($(du -sh "$OUT" | cut -f1))"
