#!/usr/bin/env python3
"""ocimux-multiarch.bbclass, run under BitBake's `bb` library by
tests/layer/harness.py, against meta-virtualization's oci-multiarch.bbclass's
merge re-run outside BitBake on the same deploy tree (the baseline: for each
platform's `<recipe>-latest-oci`, every file of blobs/sha256 not yet in the
output is copied with shutil.copy2, then index.json and oci-layout are
written) — not a test: its figures go in BENCHMARKS.md.

The tree: a TOPDIR with three multiconfigs (aarch64, x86_64, arm), each
machine's deploy directory holding app-container's dated layout and its
`-latest-oci` link, each image a config and LAYER_MIB MiB of layers, one
layer shared by all three. Reported per class: time, files and bytes in the
output that are not a machine's file (copied), and the filesystem's use
before and after (after a sync: a reflink or a link takes no data blocks).

Environment: LAYER_MIB (default 256), BENCH_DIR (default /var/tmp/ocimux-layer-bench),
BB_VENV (default target/tmp/bb-venv), OCIMUX (default target/release/ocimux).
"""

import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench import make_layout, table  # noqa: E402

LAYER_MIB = int(os.environ.get("LAYER_MIB", "256"))
WORK = os.environ.get("BENCH_DIR", "/var/tmp/ocimux-layer-bench")
VENV = os.environ.get("BB_VENV", os.path.join(ROOT, "target", "tmp", "bb-venv"))
OCIMUX = os.environ.get("OCIMUX", os.path.join(ROOT, "target", "release", "ocimux"))
MACHINES = [("container-aarch64", "qemuarm64", "arm64"),
            ("container-x86-64", "qemux86-64", "amd64"),
            ("container-arm", "qemuarm", "arm")]
STAMP = "20261205120000"


def tree(top):
    shared = os.urandom(1 << 20) * (LAYER_MIB // 4)
    for mc, machine, arch in MACHINES:
        deploy = os.path.join(top, f"tmp-{mc}", "deploy", "images", machine)
        name = f"app-container-{machine}-{STAMP}.rootfs-oci"
        own = os.urandom(1 << 20) * (LAYER_MIB - LAYER_MIB // 4)
        make_layout(os.path.join(deploy, name), arch, layer_blobs=[shared, own])
        link = os.path.join(deploy, "app-container-latest-oci")
        if not os.path.islink(link):
            os.symlink(name, link)
    os.makedirs(os.path.join(top, "tmp", "deploy", "images", "qemux86-64"), exist_ok=True)


def source_inodes(top):
    out = set()
    for mc, _, _ in MACHINES:
        for dirpath, _, files in os.walk(os.path.join(top, f"tmp-{mc}")):
            for f in files:
                st = os.lstat(os.path.join(dirpath, f))
                out.add((st.st_dev, st.st_ino))
    return out


def run_ocimux_class(top):
    env = dict(os.environ, OCIMUX_NATIVE_BINDIR=os.path.dirname(OCIMUX))
    t0 = time.perf_counter()
    done = subprocess.run([os.path.join(VENV, "bin", "python3"), os.path.join(ROOT, "tests/layer/harness.py"),
                           "run-class", top], env=env, capture_output=True, text=True)
    subprocess.run(["sync"], check=True)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"layer_bench: ocimux-multiarch: {done.stderr}")
    return json.loads(done.stdout)["OCI_MULTIARCH_OUTPUT"], took


def run_copying_merge(top, out):
    """oci-multiarch.bbclass's merge, re-run: copy every blob file of each
    platform's layout once, then write index.json (the platform manifests)
    and oci-layout."""
    t0 = time.perf_counter()
    if os.path.exists(out):
        shutil.rmtree(out)
    dst = os.path.join(out, "blobs", "sha256")
    os.makedirs(dst)
    manifests = []
    for mc, machine, arch in MACHINES:
        layout = os.path.join(top, f"tmp-{mc}", "deploy", "images", machine, "app-container-latest-oci")
        src = os.path.join(layout, "blobs", "sha256")
        for blob in os.listdir(src):
            if not os.path.exists(os.path.join(dst, blob)):
                shutil.copy2(os.path.join(src, blob), os.path.join(dst, blob))
        with open(os.path.join(layout, "index.json")) as f:
            entry = json.load(f)["manifests"][0]
        manifests.append({"mediaType": entry["mediaType"], "digest": entry["digest"], "size": entry["size"],
                          "platform": {"architecture": arch, "os": "linux"}})
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "manifests": manifests}, f, indent=2)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - t0


def used(path):
    """Bytes the filesystem of path has in use, after a sync."""
    subprocess.run(["sync"], check=True)
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def measure(out, sources):
    copied_files = copied_bytes = 0
    for dirpath, _, files in os.walk(out):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            if (st.st_dev, st.st_ino) not in sources:
                copied_files += 1
                copied_bytes += st.st_size
    return copied_files, copied_bytes


def main():
    subprocess.run([os.path.join(HERE, "bitbake-venv.sh"), VENV], check=True)
    top = os.path.join(WORK, "build")
    shutil.rmtree(WORK, ignore_errors=True)
    tree(top)
    sources = source_inodes(top)
    rows = []
    before = used(top)
    out, took = run_ocimux_class(top)
    disk = used(top) - before
    files, copied = measure(out, sources)
    rows.append(["ocimux-multiarch (under bb)", f"{took:.2f}", str(files), f"{copied / (1 << 20):.1f}",
                 f"{disk / (1 << 20):.1f}"])
    shutil.rmtree(out)
    before = used(top)
    took = run_copying_merge(top, out)
    disk = used(top) - before
    files, copied = measure(out, sources)
    rows.append(["oci-multiarch's merge (re-run)", f"{took:.2f}", str(files), f"{copied / (1 << 20):.1f}",
                 f"{disk / (1 << 20):.1f}"])
    shutil.rmtree(out)
    print(f"# 3 machines, {LAYER_MIB} MiB of layers each (a quarter shared), {os.cpu_count()} CPUs")
    table("ocimux-multiarch vs oci-multiarch's copy, one tree",
          ["class", "task s (to sync)", "files copied", "MiB copied", "disk used, MiB"], rows)


if __name__ == "__main__":
    main()
