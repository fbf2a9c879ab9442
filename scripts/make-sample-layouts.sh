#!/usr/bin/env bash
# Makes per-architecture OCI image layouts the way Yocto's meta-virtualization
# does (umoci init/new/unpack/repack/config), one per ARCH, in OUTDIR:
#   OUTDIR/app-ARCH-STAMP.rootfs-oci     the layout
#   OUTDIR/app-ARCH-latest-oci           a symlink to it, as Yocto names it
# Each rootfs holds a small text tree plus LAYER_MB MiB of random bytes (default 1).
# Usage: scripts/make-sample-layouts.sh OUTDIR [ARCH...]   (default: amd64 arm64 arm)
set -euo pipefail
out=${1:?usage: $0 OUTDIR [ARCH...]}
shift
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(amd64 arm64 arm)
layer_mb=${LAYER_MB:-1}
command -v umoci >/dev/null || { echo "make-sample-layouts: umoci is missing (apt-get install umoci)" >&2; exit 1; }

# umoci unpacks as root, or --rootless (ownership mapped to the caller) otherwise.
rootless=()
[ "$(id -u)" -eq 0 ] || rootless=(--rootless)

mkdir -p "$out"
stamp=20261128120000
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for arch in "${archs[@]}"; do
  dir="$out/app-$arch-$stamp.rootfs-oci"
  rm -rf "$dir" "$out/app-$arch-latest-oci"
  umoci init --layout "$dir"
  umoci new --image "$dir:latest"
  umoci unpack "${rootless[@]}" --image "$dir:latest" "$work/bundle-$arch" >/dev/null
  rootfs="$work/bundle-$arch/rootfs"
  mkdir -p "$rootfs/etc" "$rootfs/usr/share/app"
  echo "sample image for $arch" >"$rootfs/etc/motd"
  echo "ID=ocimux-sample" >"$rootfs/etc/os-release"
  head -c $((layer_mb * 1024 * 1024)) /dev/urandom >"$rootfs/usr/share/app/data-$arch.bin"
  umoci repack --image "$dir:latest" "$work/bundle-$arch"
  umoci config --image "$dir:latest" --architecture "$arch" --os linux \
    --config.cmd /bin/sh --author "ocimux sample"
  ln -s "$(basename "$dir")" "$out/app-$arch-latest-oci"
  echo "$out/app-$arch-latest-oci -> $dir"
done
