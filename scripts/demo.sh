#!/usr/bin/env bash
# The main job end to end, on sample inputs this script makes itself:
# build; make three per-arch layouts the way Yocto does (umoci); mount them as
# one multi-arch layout; show `skopeo inspect --raw`; `skopeo copy --all` out of
# the mount; unmount; then serve the same images over the OCI distribution API
# and pull them with skopeo. Usage: scripts/demo.sh [WORKDIR]   (default /tmp/ocimux-demo)
# WORKDIR is removed and made anew at the start, and left afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/ocimux-demo}
scripts/deps.sh
echo "== building ocimux (release; the first build takes a few minutes)"
cargo build --release
ocimux=$PWD/target/release/ocimux

if mountpoint -q "$work/mnt" 2>/dev/null; then "$ocimux" umount "$work/mnt"; fi
rm -rf "$work" && mkdir -p "$work/mnt"
scripts/make-sample-layouts.sh "$work/deploy" amd64 arm64 arm

echo "== ocimux inspect"
"$ocimux" inspect "$work/deploy/app-amd64-latest-oci" "$work/deploy/app-arm64-latest-oci" \
  "linux/arm/v7=$work/deploy/app-arm-latest-oci"

echo "== ocimux mount $work/mnt"
"$ocimux" mount "$work/mnt" "$work/deploy/app-amd64-latest-oci" "$work/deploy/app-arm64-latest-oci" \
  "linux/arm/v7=$work/deploy/app-arm-latest-oci"
trap '"$ocimux" umount "$work/mnt" 2>/dev/null || true' EXIT
ls -l "$work/mnt" "$work/mnt/blobs/sha256"
cat "$work/mnt/index.json"; echo

echo "== skopeo inspect --raw oci:$work/mnt"
skopeo inspect --raw "oci:$work/mnt" | python3 -m json.tool

echo "== skopeo copy --all oci:$work/mnt oci:$work/copy:latest"
skopeo copy --all "oci:$work/mnt" "oci:$work/copy:latest"
echo "copied: $(ls "$work/copy/blobs/sha256" | wc -l) blobs, $(du -sh "$work/copy" | cut -f1)"

echo "== ocimux umount $work/mnt"
"$ocimux" umount "$work/mnt"
trap - EXIT

echo "== ocimux serve (the same images over the OCI distribution API, loopback, a free port): skopeo pulls them"
"$ocimux" serve --listen 127.0.0.1:0 demo/app "$work/deploy/app-amd64-latest-oci" \
  "$work/deploy/app-arm64-latest-oci" "linux/arm/v7=$work/deploy/app-arm-latest-oci" -- \
  sh -c 'skopeo inspect --raw --tls-verify=false "docker://$OCIMUX_REGISTRY/demo/app:latest" | python3 -m json.tool &&
         skopeo copy --all -q --src-tls-verify=false "docker://$OCIMUX_REGISTRY/demo/app:latest" "oci:$0/pulled:latest" &&
         echo "pulled: $(ls "$0/pulled/blobs/sha256" | wc -l) blobs"' "$work"
echo "demo: OK"
