#!/usr/bin/env bash
# sslpipe setup: the first thing to run on a new machine.
#
# 1. Installs the ONNX Runtime C library (version pinned below) taken from the
#    PyPI `onnxruntime` wheel into ${SSLPIPE_HOME:-$HOME/.local/share/sslpipe}/onnxruntime/:
#    libonnxruntime.so.<version>, the symlink libonnxruntime.so, VERSION, and
#    ORT's LICENSE and ThirdPartyNotices.txt.
# 2. Extracts the real photographs bundled in the PyPI `scikit-image` wheel
#    (version pinned below) into data/photos/ with data/photos/LICENSES.txt.
# 3. Unless `nasm` is already on PATH, unpacks the Debian `nasm` package (no
#    install, no root) into .deps/nasm/: the assembler the JPEG decoder's SIMD
#    code needs at build time. scripts/build-env.sh puts it on PATH for the
#    scripts that build. If apt cannot provide it, setup says so and goes on:
#    the decoder is then built in plain C (same pixels, slower).
# 4. Packs data/photos into two tar shards, data/shards/photos-00000{0,1}.tar
#    (read by pipelines/embed-tar.toml).
#
# Guarantees: nothing is installed into any Python environment (wheels are only
# downloaded and unzipped); wheels are checked against pinned sha256 sums; each
# step is skipped when its result is already there, so a second run prints
# "already present" for each step, changes nothing and needs no network.
# Needs: bash, python3 (with pip, or apt-get to install python3-pip), network
# access to the Python package index and the Debian archive on the first run.
set -euo pipefail

SSLPIPE_TAG=setup
# shellcheck source=scripts/_common.sh
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

ORT_VERSION=1.31.1
ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
SKIMAGE_VERSION=0.26.0
SKIMAGE_WHEEL_SHA256=74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af

SSLPIPE_HOME=${SSLPIPE_HOME:-$HOME/.local/share/sslpipe}
ORT_DIR=$SSLPIPE_HOME/onnxruntime
PHOTOS_DIR=$SSLPIPE_REPO/data/photos

# The photographs taken from skimage/data/ (colour first, then grey), with
# what scikit-image's own docstrings (skimage/data/_fetchers.py in the wheel)
# say about each one. Files left out: synthetic images (chessboard_*,
# color.png colour wheel, phantom.png, horse.png silhouette, logo.png),
# text/documents (page.png, text.png), non-photographic or tiny images
# (cell.png phase reconstruction, microaneurysms.png 102x102), and non-images
# (.npy, .npz, .xml, multipage .tif, .gif).
PHOTOS=(
  "astronaut.png|colour|Astronaut Eileen Collins, NASA portrait|public domain: NASA image, 'no known copyright restrictions'"
  "chelsea.png|colour|Chelsea the cat|CC0, photographer Stefan van der Walt"
  "coffee.png|colour|Coffee cup, courtesy of Pikolo Espresso Bar|CC0, photographer Rachel Michetti"
  "rocket.jpg|colour|Falcon 9 launch carrying DSCOVR, SpaceX|public domain, released by SpaceX"
  "hubble_deep_field.jpg|colour|Hubble eXtreme Deep Field, NASA|public domain, NASA"
  "retina.jpg|colour|Fundus photograph of a normal human retina (Wikimedia Commons)|CC0 1.0, Mikael Haggstrom"
  "ihc.png|colour|Immunohistochemistry micrograph of colonic glands (CMMI)|no known copyright restrictions"
  "motorcycle_left.png|colour|Middlebury 2014 stereo pair, left view, downscaled 4x|no separate licence stated; credit Scharstein et al., GCPR 2014; shipped in the BSD-3-Clause package"
  "motorcycle_right.png|colour|Middlebury 2014 stereo pair, right view, downscaled 4x|no separate licence stated; credit Scharstein et al., GCPR 2014; shipped in the BSD-3-Clause package"
  "camera.png|grey|Man with a camera|CC0, photographer Lav Varshney"
  "coins.png|grey|Greek coins from Pompeii (Brooklyn Museum collection)|no known copyright restrictions"
  "moon.png|grey|Surface of the moon, low contrast|no separate licence stated; shipped in the BSD-3-Clause package"
  "clock_motion.png|grey|Motion-blurred wall clock|public domain, photographer Stefan van der Walt"
  "brick.png|grey|Brick wall (CC0Textures), perspective-corrected crop|CC0"
  "grass.png|grey|Grass (DeviantArt, linolafett), cropped|CC0"
  "gravel.png|grey|Gravel (CC0Textures), rescaled and cropped|CC0"
)

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# ---- 1. ONNX Runtime C library -------------------------------------------
ort_present() {
  [ -f "$ORT_DIR/VERSION" ] && [ "$(cat "$ORT_DIR/VERSION")" = "$ORT_VERSION" ] \
    && [ -s "$ORT_DIR/libonnxruntime.so.$ORT_VERSION" ] \
    && [ "$(readlink "$ORT_DIR/libonnxruntime.so" 2>/dev/null)" = "libonnxruntime.so.$ORT_VERSION" ]
}

if ort_present; then
  say "onnxruntime $ORT_VERSION: already present in $ORT_DIR/libonnxruntime.so"
else
  mkdir -p "$ORT_DIR" "$TMP/ort"
  pip_download_wheel onnxruntime "$ORT_VERSION" "$ORT_WHEEL_SHA256" "$TMP/ort"
  rm -f "$ORT_DIR/VERSION"   # written last: its presence means "complete"
  zip_extract "$WHEEL" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" \
    "$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
  zip_extract "$WHEEL" onnxruntime/LICENSE "$ORT_DIR/LICENSE"
  zip_extract "$WHEEL" onnxruntime/ThirdPartyNotices.txt "$ORT_DIR/ThirdPartyNotices.txt"
  # Drop other versions of the main library (providers libraries, if someone
  # put them here, are left alone).
  find "$ORT_DIR" -maxdepth 1 -name 'libonnxruntime.so.*' ! -name "libonnxruntime.so.$ORT_VERSION" -delete
  ln -sfn "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"
  python3 -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1]).OrtGetApiBase' \
    "$ORT_DIR/libonnxruntime.so" || die "the extracted library does not load"
  echo "$ORT_VERSION" >"$ORT_DIR/VERSION"
  say "onnxruntime $ORT_VERSION: installed $ORT_DIR/libonnxruntime.so (ORT_DYLIB_PATH may point there)"
fi

# ---- 2. Sample photographs from scikit-image ------------------------------
photos_present() {
  local entry
  [ -f "$PHOTOS_DIR/.skimage-version" ] \
    && [ "$(cat "$PHOTOS_DIR/.skimage-version")" = "$SKIMAGE_VERSION" ] \
    && [ -s "$PHOTOS_DIR/LICENSES.txt" ] || return 1
  for entry in "${PHOTOS[@]}"; do
    [ -s "$PHOTOS_DIR/${entry%%|*}" ] || return 1
  done
}

if photos_present; then
  say "sample photos (scikit-image $SKIMAGE_VERSION): already present in $PHOTOS_DIR (${#PHOTOS[@]} files)"
else
  mkdir -p "$PHOTOS_DIR" "$TMP/skimage"
  rm -f "$PHOTOS_DIR/.skimage-version"
  pip_download_wheel scikit-image "$SKIMAGE_VERSION" "$SKIMAGE_WHEEL_SHA256" "$TMP/skimage"
  for entry in "${PHOTOS[@]}"; do
    zip_extract "$WHEEL" "skimage/data/${entry%%|*}" "$PHOTOS_DIR/${entry%%|*}"
  done
  zip_extract "$WHEEL" "scikit_image-$SKIMAGE_VERSION.dist-info/LICENSE.txt" "$TMP/skimage-LICENSE.txt"
  {
    echo "Sample photographs for sslpipe (not part of the repository; made by scripts/setup.sh)"
    echo
    echo "Source: the PyPI wheel scikit-image==$SKIMAGE_VERSION"
    echo "  ($(basename "$WHEEL"), sha256 $SKIMAGE_WHEEL_SHA256),"
    echo "  folder skimage/data/. Files are copied unchanged."
    echo
    echo "Licences: the wheel's skimage/data/README.txt only says that the folder"
    echo "holds a subset of scikit-image's sample data. The provenance and licence"
    echo "of each image are given in the docstrings of skimage/data/_fetchers.py,"
    echo "summarised per file below. The package as a whole is BSD-3-Clause"
    echo "(copyright the scikit-image team; its licence file follows at the end)."
    echo "Where a docstring names no licence, only the package licence is known."
    echo
    printf '%-22s %-7s %-11s %s\n' file kind size "description -- licence"
    for entry in "${PHOTOS[@]}"; do
      IFS='|' read -r f kind desc lic <<<"$entry"
      size=$(python3 - "$PHOTOS_DIR/$f" <<'PY'
import struct, sys
p = sys.argv[1]
b = open(p, "rb").read()
if b[:8] == b"\x89PNG\r\n\x1a\n":
    w, h = struct.unpack(">II", b[16:24])
else:  # JPEG: walk the markers to the first SOFn
    i = 2
    while i < len(b):
        m = b[i + 1]
        ln = struct.unpack(">H", b[i + 2:i + 4])[0]
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", b[i + 5:i + 9])
            break
        i += 2 + ln
print(f"{w}x{h}")
PY
)
      printf '%-22s %-7s %-11s %s -- %s\n' "$f" "$kind" "$size" "$desc" "$lic"
    done
    echo
    echo "----- scikit-image $SKIMAGE_VERSION dist-info/LICENSE.txt -----"
    cat "$TMP/skimage-LICENSE.txt"
  } >"$PHOTOS_DIR/LICENSES.txt"
  echo "$SKIMAGE_VERSION" >"$PHOTOS_DIR/.skimage-version"
  say "sample photos (scikit-image $SKIMAGE_VERSION): extracted ${#PHOTOS[@]} files into $PHOTOS_DIR"
fi

# ---- 3. nasm, for the JPEG decoder's SIMD code ----------------------------
NASM_DIR=$SSLPIPE_REPO/.deps/nasm
if command -v nasm >/dev/null 2>&1; then
  say "nasm: already on PATH ($(command -v nasm))"
elif [ -x "$NASM_DIR/bin/nasm" ]; then
  say "nasm: already present in $NASM_DIR/bin"
elif command -v apt-get >/dev/null 2>&1 && mkdir -p "$TMP/nasm" && apt_download nasm "$TMP/nasm"; then
  dpkg-deb -x "$DEB" "$TMP/nasm/root"
  "$TMP/nasm/root/usr/bin/nasm" -v >/dev/null || die "the unpacked nasm does not run"
  mkdir -p "$NASM_DIR/bin"
  cp "$TMP/nasm/root/usr/share/doc/nasm/copyright" "$NASM_DIR/copyright"
  cp "$TMP/nasm/root/usr/bin/nasm" "$NASM_DIR/bin/nasm.tmp"
  mv "$NASM_DIR/bin/nasm.tmp" "$NASM_DIR/bin/nasm"   # last: its presence means "complete"
  say "nasm: unpacked $(basename "$DEB") into $NASM_DIR/bin"
else
  say "nasm: not available from apt; the JPEG decoder will be built without SIMD (slower)"
fi

# ---- 4. The sample photos as tar shards (WebDataset layout) ---------------
# pipelines/embed-tar.toml reads them: data/photos packed, in sorted name order, into two shards
# of 8 (photos-000000.tar, photos-000001.tar), members named <photo> with their extension, fixed
# owner and time so that the shards are the same bytes on every machine.
SHARDS_DIR=$SSLPIPE_REPO/data/shards
if [ -s "$SHARDS_DIR/photos-000000.tar" ] && [ -s "$SHARDS_DIR/photos-000001.tar" ]; then
  say "photo shards: already present in $SHARDS_DIR"
else
  mkdir -p "$SHARDS_DIR"
  python3 - "$PHOTOS_DIR" "$SHARDS_DIR" <<'PY'
import os, sys, tarfile
photos, shards = sys.argv[1], sys.argv[2]
names = sorted(n for n in os.listdir(photos) if n.lower().endswith((".png", ".jpg")))
for i in range(2):
    final = os.path.join(shards, f"photos-{i:06d}.tar")
    with tarfile.open(final + ".tmp", "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in names[i * 8:(i + 1) * 8]:
            info = tar.gettarinfo(os.path.join(photos, name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o644
            with open(os.path.join(photos, name), "rb") as f:
                tar.addfile(info, f)
    os.replace(final + ".tmp", final)
PY
  say "photo shards: packed data/photos into $SHARDS_DIR/photos-00000{0,1}.tar"
fi
