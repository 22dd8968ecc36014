#!/usr/bin/env bash
# Fetch Fashion-MNIST (60k train + 10k test, 28x28 grey, 10 classes, MIT
# licence) from the Debian package dataset-fashion-mnist into
# data/fashion-mnist/: the four IDX files both gzipped (*-ubyte.gz, as
# shipped) and raw (*-ubyte), plus LICENSE.txt (the package's copyright file).
#
# Guarantees: the package is only downloaded (apt-get download) and unpacked
# (dpkg-deb -x) in a temporary folder, never installed; raw files are checked
# for their exact size and IDX magic number. When all eight files are there
# with the right sizes the script does nothing and needs no network.
# Needs: bash, apt-get, dpkg-deb, gzip, python3; root for `apt-get update`.
set -euo pipefail

SSLPIPE_TAG=fashion-mnist
# shellcheck source=scripts/_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

OUT=$SSLPIPE_REPO/data/fashion-mnist
PKG=dataset-fashion-mnist
# name  raw size in bytes  IDX magic (0x801 labels, 0x803 images)
FILES=(
  "train-images-idx3-ubyte 47040016 2051"
  "train-labels-idx1-ubyte 60008 2049"
  "t10k-images-idx3-ubyte 7840016 2051"
  "t10k-labels-idx1-ubyte 10008 2049"
)

fmnist_present() {
  local entry name size magic
  [ -s "$OUT/LICENSE.txt" ] || return 1
  for entry in "${FILES[@]}"; do
    read -r name size magic <<<"$entry"
    [ -s "$OUT/$name.gz" ] || return 1
    [ -f "$OUT/$name" ] && [ "$(stat -c %s "$OUT/$name")" = "$size" ] || return 1
  done
}

if fmnist_present; then
  say "Fashion-MNIST: already present in $OUT"
  exit 0
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
apt_download "$PKG" "$TMP" || die "apt cannot provide $PKG"
version=$(dpkg-deb -f "$DEB" Version)
dpkg-deb -x "$DEB" "$TMP/root"
SRC=$TMP/root/usr/share/datasets/fashion-mnist
mkdir -p "$OUT"
for entry in "${FILES[@]}"; do
  read -r name size magic <<<"$entry"
  [ -s "$SRC/$name.gz" ] || die "$name.gz missing from $PKG $version"
  cp "$SRC/$name.gz" "$OUT/$name.gz.tmp"
  gzip -dc "$SRC/$name.gz" >"$OUT/$name.tmp"
  got=$(stat -c %s "$OUT/$name.tmp")
  [ "$got" = "$size" ] || die "$name: $got bytes, expected $size"
  got=$(python3 -c 'import struct,sys; print(struct.unpack(">I", open(sys.argv[1],"rb").read(4))[0])' "$OUT/$name.tmp")
  [ "$got" = "$magic" ] || die "$name: IDX magic $got, expected $magic"
  mv "$OUT/$name.gz.tmp" "$OUT/$name.gz"
  mv "$OUT/$name.tmp" "$OUT/$name"
done
{
  echo "Fashion-MNIST, from the Debian package $PKG $version"
  echo "(usr/share/datasets/fashion-mnist/, copied unchanged; *-ubyte are the"
  echo "gunzipped *-ubyte.gz). Dataset by Zalando Research, MIT (Expat) licence."
  echo "IDX format: big-endian magic (0x803 images, 0x801 labels), dimension sizes"
  echo "as big-endian u32, then uint8 data. Not part of the repository."
  echo
  echo "----- /usr/share/doc/$PKG/copyright -----"
  cat "$TMP/root/usr/share/doc/$PKG/copyright"
} >"$OUT/LICENSE.txt"
say "Fashion-MNIST: $PKG $version unpacked into $OUT ($(du -sh "$OUT" | cut -f1))"
