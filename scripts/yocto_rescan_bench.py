#!/usr/bin/env python3
"""The Yocto mode's rescan cost, at 100 and 1,000 images x 4 machines, in one run.

Builds a tree laid out as meta-virtualization's image-oci-umoci.inc lays it
out (per image and machine: the dated layout, its .tar and -dir.tar, the three
-latest-oci links; small valid layouts), runs `ocimux -vv serve --yocto TREE`
on 127.0.0.1 (port 0) and reads the time of each look it logs ("yocto: N
images looked at: scan X us, serve Y us"), for a few looks after the first.
The server serves at most 64 repositories: the rest are named once and
skipped, but every look still scans every image. Prints medians and the
ratio of the two sizes.

Usage: scripts/yocto_rescan_bench.py [OCIMUX_BINARY]
"""

import hashlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

MACHINES = [("qemux86-64", "amd64"), ("qemuarm64", "arm64"), ("qemuriscv64", "riscv64"), ("qemuarm", "arm")]
STAMP = "20261205120000"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LOOKS = 4


def blob(root, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(root, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def layout(root, arch, seed):
    os.makedirs(os.path.join(root, "blobs", "sha256"))
    with open(os.path.join(root, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    layer = blob(root, ("layer " + seed).encode())
    config = blob(root, json.dumps({"architecture": arch, "os": "linux",
                                    "rootfs": {"type": "layers", "diff_ids": []}}).encode())
    manifest = blob(root, json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
        "layers": [dict(layer, mediaType="application/vnd.oci.image.layer.v1.tar")],
    }).encode())
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX,
                   "manifests": [dict(manifest, mediaType=OCI_MANIFEST)]}, f)


def tree(top, images):
    for machine, arch in MACHINES:
        d = os.path.join(top, "tmp-" + machine, "deploy", "images", machine)
        os.makedirs(d)
        for i in range(images):
            image = "img%04d" % i
            name = "%s-%s-%s.rootfs-oci" % (image, machine, STAMP)
            layout(os.path.join(d, name), arch, "%s %s" % (image, machine))
            with tarfile.open(os.path.join(d, name + ".tar"), "w", format=tarfile.GNU_FORMAT) as t:
                t.add(os.path.join(d, name), arcname=".")
            with tarfile.open(os.path.join(d, name + "-dir.tar"), "w", format=tarfile.GNU_FORMAT) as t:
                t.add(os.path.join(d, name), arcname=name)
            for suffix, link in (("", "-oci"), (".tar", "-oci.tar"), ("-dir.tar", "-oci-dir.tar")):
                os.symlink(name + suffix, os.path.join(d, "%s-latest%s" % (image, link)))


def looks(binary, top):
    p = subprocess.Popen([binary, "-vv", "serve", "--listen", "127.0.0.1:0", "--yocto", top],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pattern = re.compile(r"yocto: (\d+) images looked at: scan (\d+) us, serve (\d+) us")
    got = []
    deadline = time.monotonic() + 120
    try:
        for line in p.stderr:
            m = pattern.search(line)
            if m:
                got.append((int(m.group(1)), int(m.group(2)), int(m.group(3))))
            if len(got) > LOOKS or time.monotonic() > deadline:
                break
    finally:
        p.terminate()
        p.wait(timeout=30)
    if len(got) <= LOOKS:
        sys.exit("ocimux logged %d looks" % len(got))
    return got


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/ocimux"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for images in (100, 1000):
            top = os.path.join(tmp, "build%d" % images)
            t0 = time.monotonic()
            tree(top, images)
            made = time.monotonic() - t0
            got = looks(binary, top)
            first, later = got[0], got[1:]
            scan = statistics.median(g[1] for g in later) / 1000
            serve = statistics.median(g[2] for g in later) / 1000
            results[images] = (scan, serve)
            print("%4d images x %d machines (%d entries, made in %.0f s): first look scan %.1f ms "
                  "serve %.1f ms; later looks (median of %d) scan %.1f ms, serve %.1f ms"
                  % (images, len(MACHINES), images * len(MACHINES) * 6, made,
                     first[1] / 1000, first[2] / 1000, len(later), scan, serve))
    ratio = (results[1000][0] + results[1000][1]) / max(results[100][0] + results[100][1], 1e-9)
    print("a look at 1,000 images costs %.1fx one at 100" % ratio)


if __name__ == "__main__":
    main()
