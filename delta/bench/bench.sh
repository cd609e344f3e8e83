#!/usr/bin/env bash
# Delta benchmark: bytes saved and build time on realistic pairs, against the reference
# tools in the same run.
#
#   bash delta/bench/bench.sh            # from the workspace root
#
# Firmware: two builds of the same program differing by a small change. The program is
# zstd's library (the C source the zstd-sys crate bundles, already in the cargo
# registry) linked into a small main with gcc -Os; build 2 adds one function to a file
# early in the link and bumps the version, so the code after it moves, as a small change
# to real firmware does. The "image" is the linked .text then .rodata (objcopy -O binary).
# The patch is built by `updraft-delta esp` (ours) and by `detools create_patch -c
# heatshrink` (the tool esp_delta_ota's own generator runs); both are applied with
# `detools apply_patch` and compared with build 2.
#
# Images: two squashfs root filesystems differing by one package (Debian packages
# downloaded with apt-get download and unpacked with dpkg-deb -x; image 2 has one more),
# built with mksquashfs -comp xz as LXD images are. The delta is built by `updraft-delta
# vcdiff` and by `xdelta3 -e -9 -S none`, applied with `xdelta3 -d` and compared.
#
# ONLY=firmware or ONLY=images runs one half.
#
# Needs: the tools of `bash e2e/scripts/cluster.sh tools` (detools, xdelta3, mksquashfs).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d /tmp/updraft-delta-bench.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
say() { printf '\033[1m[delta-bench]\033[0m %s\n' "$*" >&2; }
eval "$(bash "$ROOT/e2e/scripts/cluster.sh" env)"
for tool in detools xdelta3 mksquashfs gcc objcopy; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run bash e2e/scripts/cluster.sh tools" >&2; exit 1; }
done

say "building updraft-delta (release)"
(cd "$ROOT" && cargo build --release -q -p updraft-delta)
DELTA="${CARGO_TARGET_DIR:-$ROOT/target}/release/updraft-delta"

size() { stat -c %s "$1"; }
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); awk "BEGIN { print $e - $s }"; }
pct() { awk "BEGIN { printf \"%.2f\", 100 * $1 / $2 }"; }
ratio() { awk "BEGIN { printf \"%.2f\", $1 / $2 }"; }

ONLY="${ONLY:-}"
# ---------------------------------------------------------------- firmware
if [ "$ONLY" != images ]; then
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/zstd-sys-*/zstd/lib 2>/dev/null | sort | tail -n1)
[ -n "$src" ] || { echo "zstd-sys's C source is not in the cargo registry: run cargo fetch first" >&2; exit 1; }
say "firmware pair: zstd's library from $src, built twice with gcc -Os"
for build in 1 2; do
  d="$WORK/fw$build"; mkdir -p "$d"; cp -r "$src" "$d/lib"
  cat >"$d/main.c" <<'C'
#include <stdio.h>
#include "zstd.h"
int main(void) {
  static char in[4096], out[8192], back[4096];
  size_t n = ZSTD_compress(out, sizeof out, in, sizeof in, 19);
  size_t m = ZSTD_decompress(back, sizeof back, out, n);
  printf("%s %zu %zu\n", ZSTD_versionString(), n, m);
  return 0;
}
C
  if [ "$build" = 2 ]; then
    sed -i 's/#define ZSTD_VERSION_RELEASE  *7/#define ZSTD_VERSION_RELEASE  8/' "$d/lib/zstd.h"
    printf '\nint updraft_bench_added(int x) { return x * 31 + (int)ZSTD_versionNumber(); }\n' >>"$d/lib/common/zstd_common.c"
  fi
  (cd "$d" && gcc -Os -DZSTD_DISABLE_ASM -DZSTD_MULTITHREAD=0 -DZSTD_LEGACY_SUPPORT=0 -Ilib -Ilib/common -o fw main.c \
      $(find lib/common lib/compress lib/decompress -name '*.c') 2>"$d/gcc.log") \
    || { cat "$d/gcc.log" >&2; exit 1; }
  # The sections one after the other, as an image's segments are (no page-alignment gap).
  objcopy -O binary -j .text "$d/fw" "$d/text.bin" && objcopy -O binary -j .rodata "$d/fw" "$d/rodata.bin"
  cat "$d/text.bin" "$d/rodata.bin" >"$WORK/firmware-$build.bin"
done
base="$WORK/firmware-1.bin" target="$WORK/firmware-2.bin"
ours_t=$(secs "$DELTA" esp "$base" "$target" "$WORK/ours.patch")
tail -c +65 "$WORK/ours.patch" >"$WORK/ours.detools"
detools_t=$(secs detools create_patch -c heatshrink "$base" "$target" "$WORK/ref.detools")
for p in ours ref; do
  detools apply_patch "$base" "$WORK/$p.detools" "$WORK/$p.out" >/dev/null
  cmp -s "$WORK/$p.out" "$target" || { echo "the $p patch does not reproduce the target" >&2; exit 1; }
done
full=$(size "$target") ours=$(size "$WORK/ours.patch") ref=$(( $(size "$WORK/ref.detools") + 64 ))
printf '\nfirmware: %s -> %s bytes (two gcc -Os builds of zstd %s)\n' "$(size "$base")" "$full" "$(basename "$(dirname "$(dirname "$src")")")"
printf '  %-34s %10s %8s %8s\n' "" "bytes" "of full" "seconds"
printf '  %-34s %10s %7s%% %8.2f\n' "updraft-delta esp" "$ours" "$(pct "$ours" "$full")" "$ours_t"
printf '  %-34s %10s %7s%% %8.2f\n' "detools create_patch -c heatshrink" "$ref" "$(pct "$ref" "$full")" "$detools_t"
printf '  ours / detools: size %sx, time %sx (both applied by detools apply_patch, byte-identical)\n' \
  "$(ratio "$ours" "$ref")" "$(ratio "$ours_t" "$detools_t")"

fi

# ---------------------------------------------------------------- images
[ "$ONLY" = firmware ] && exit 0
say "image pair: Debian packages unpacked into two root filesystems, one package apart"
pkgs="busybox coreutils perl-base perl-modules-5.36 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib zstd xz-utils bzip2 less file libmagic1 libmagic-mgc sed grep"
added="xdelta3"
mkdir -p "$WORK/debs"
(cd "$WORK/debs" && apt-get download $pkgs $added >/dev/null 2>&1) \
  || { echo "apt-get download failed (run apt-get update?)" >&2; exit 1; }
for image in 1 2; do
  r="$WORK/rootfs$image"; mkdir -p "$r"
  for p in $pkgs; do dpkg-deb -x "$WORK"/debs/"${p}"_*.deb "$r"; done
  [ "$image" = 2 ] && dpkg-deb -x "$WORK"/debs/"${added}"_*.deb "$r"
  mksquashfs "$r" "$WORK/image-$image.squashfs" -comp xz -noappend -quiet -all-time 0 -mkfs-time 0 >/dev/null
done
base="$WORK/image-1.squashfs" target="$WORK/image-2.squashfs"
ours_t=$(secs "$DELTA" vcdiff "$base" "$target" "$WORK/ours.vcdiff")
ref_t=$(secs xdelta3 -e -9 -S none -f -s "$base" "$target" "$WORK/ref.vcdiff")
for p in ours ref; do
  xdelta3 -d -f -s "$base" "$WORK/$p.vcdiff" "$WORK/$p.img"
  cmp -s "$WORK/$p.img" "$target" || { echo "the $p vcdiff does not reproduce the target" >&2; exit 1; }
done
full=$(size "$target") ours=$(size "$WORK/ours.vcdiff") ref=$(size "$WORK/ref.vcdiff")
printf '\nimage: %s -> %s bytes (squashfs xz; %s, then + %s)\n' "$(size "$base")" "$full" "$pkgs" "$added"
printf '  %-34s %10s %8s %8s\n' "" "bytes" "of full" "seconds"
printf '  %-34s %10s %7s%% %8.2f\n' "updraft-delta vcdiff" "$ours" "$(pct "$ours" "$full")" "$ours_t"
printf '  %-34s %10s %7s%% %8.2f\n' "xdelta3 -e -9 -S none" "$ref" "$(pct "$ref" "$full")" "$ref_t"
printf '  ours / xdelta3: size %sx, time %sx (both applied by xdelta3 -d, byte-identical)\n' \
  "$(ratio "$ours" "$ref")" "$(ratio "$ours_t" "$ref_t")"
