# shellcheck shell=bash
# Sourced by the scripts that build sslpipe: puts the nasm that scripts/setup.sh unpacked into
# .deps/nasm/ on PATH, so that mozjpeg-sys assembles libjpeg-turbo's SIMD code. It matters at the
# crate's first build only: its build script does not watch PATH, so a build made without nasm
# stays without SIMD until `cargo clean -p mozjpeg-sys` (the build prints a warning then).
if ! command -v nasm >/dev/null 2>&1; then
  _nasm_bin="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.deps/nasm/bin"
  [ -x "$_nasm_bin/nasm" ] && export PATH="$_nasm_bin:$PATH"
  unset _nasm_bin
fi
