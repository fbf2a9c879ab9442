#!/usr/bin/env python3
"""ocimux memory benchmark (issue 16, case 6): daemon RSS per blob, and what
retired snapshots cost, side by side for one or more builds in one run.

- many: SOURCES sources of LAYERS small layers each (default 8 x 25,000 =
  200,000 blobs): mount time, daemon RSS, RSS per blob (over an empty-ish
  mount of the same build), then SWAPS_MANY swaps (one source's index.json
  toggled between two manifests that share every layer).
- toggle: one source of TOGGLE_LAYERS layers (default 8,000) toggled
  TOGGLE_SWAPS times (default 80): RSS growth.

Usage: scripts/memory.py BINARY [BINARY...]   (run as root; BENCH_DIR)
"""

import hashlib
import json
import os
import subprocess
import sys
import time

WORK = os.environ.get("BENCH_DIR", "/var/tmp/ocimux-memory")
SOURCES = int(os.environ.get("SOURCES", "8"))
LAYERS = int(os.environ.get("LAYERS", "25000"))
SWAPS_MANY = int(os.environ.get("SWAPS_MANY", "3"))
TOGGLE_LAYERS = int(os.environ.get("TOGGLE_LAYERS", "8000"))
TOGGLE_SWAPS = int(os.environ.get("TOGGLE_SWAPS", "80"))
ARCHES = [("amd64", None), ("arm64", None), ("arm", "v7"), ("386", None),
          ("ppc64le", None), ("riscv64", None), ("s390x", None), ("mips64le", None)]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


def blob(layout, data):
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", hexd), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + hexd, "size": len(data)}


def manifest(layout, arch, variant, layers, note):
    cfg = {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
           "config": {"Labels": {"note": note}}}
    if variant:
        cfg["variant"] = variant
    c = blob(layout, json.dumps(cfg).encode())
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **c},
           "layers": layers}
    return {"mediaType": OCI_MANIFEST, **blob(layout, json.dumps(doc).encode())}


def write_index(layout, entry):
    tmp = os.path.join(layout, "index.json.new")
    with open(tmp, "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [entry]}, f)
    os.replace(tmp, os.path.join(layout, "index.json"))


def make_source(layout, n, arch, variant, seed):
    """A layout of n layers, and two manifests (A, B) sharing them."""
    done = os.path.join(layout, "manifests.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    layers = [{"mediaType": LAYER, **blob(layout, f"{seed} layer {i}\n".encode())}
              for i in range(n)]
    pair = [manifest(layout, arch, variant, layers, note) for note in ("A", "B")]
    write_index(layout, pair[0])
    with open(done, "w") as f:
        json.dump(pair, f)
    return pair


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def daemon_pid(mnt):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            if left.split()[4] == mnt and right.split()[1].startswith("ocimux:"):
                return int(right.split()[1].split(":")[1])
    sys.exit(f"memory: no ocimux mount at {mnt}")


def index_json(mnt):
    with open(os.path.join(mnt, "index.json"), "rb") as f:
        return f.read()


def mount(binary, mnt, sources):
    os.makedirs(mnt, exist_ok=True)
    t = time.perf_counter()
    subprocess.run([binary, "mount", mnt, *sources], check=True)
    return time.perf_counter() - t, daemon_pid(mnt)


def swap(mnt, layout, entry, deadline=60):
    before = index_json(mnt)
    write_index(layout, entry)
    end = time.time() + deadline
    while index_json(mnt) == before:
        if time.time() > end:
            sys.exit("memory: the swap did not show")
        time.sleep(0.02)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def settle(pid):
    """RSS once the daemon is idle: its CPU time unchanged for a second (the
    watcher rebuilds once after mounting, and after every change)."""
    end = time.time() + 120
    last = cpu_ticks(pid)
    while time.time() < end:
        time.sleep(1.0)
        now = cpu_ticks(pid)
        if now == last:
            break
        last = now
    return rss_kib(pid)


def run(binary, many, toggle):
    name = os.path.basename(os.path.dirname(os.path.dirname(binary))) + ":" + binary
    mnt = os.path.join(WORK, "mnt")
    # Baseline: the toggle source with its first layer only is not possible;
    # use a tiny source of the same build.
    tiny = os.path.join(WORK, "tiny")
    make_source(tiny, 1, "amd64", None, "tiny")
    _, pid = mount(binary, mnt, [tiny])
    base = settle(pid)
    subprocess.run([binary, "umount", mnt], check=True)
    for path, pair in many:
        write_index(path, pair[0])
    took, pid = mount(binary, mnt, [p for p, _ in many])
    rss = [settle(pid)]
    first, pair = many[0]
    for i in range(SWAPS_MANY):
        swap(mnt, first, pair[(i + 1) % 2])
        rss.append(settle(pid))
    subprocess.run([binary, "umount", mnt], check=True)
    blobs = SOURCES * (LAYERS + 2)
    per_blob = (rss[0] - base) * 1024 / blobs
    print(f"{name}\n  many: {blobs} blobs, mount {took:.2f} s, RSS {rss[0] / 1024:.0f} MiB "
          f"(tiny mount {base / 1024:.1f} MiB): {per_blob:.0f} bytes per blob; after "
          f"{SWAPS_MANY} swaps: " + ", ".join(f"{r / 1024:.0f}" for r in rss[1:]) + " MiB")
    path, pair = toggle
    write_index(path, pair[0])
    _, pid = mount(binary, mnt, [path])
    start = settle(pid)
    for i in range(TOGGLE_SWAPS):
        swap(mnt, path, pair[(i + 1) % 2])
    end = settle(pid)
    subprocess.run([binary, "umount", mnt], check=True)
    print(f"  toggle: {TOGGLE_LAYERS} layers, {TOGGLE_SWAPS} swaps: RSS {start / 1024:.1f} -> "
          f"{end / 1024:.1f} MiB (+{(end - start) / 1024:.1f} MiB)")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    os.makedirs(WORK, exist_ok=True)
    t = time.perf_counter()
    many = []
    for i in range(SOURCES):
        arch, variant = ARCHES[i % len(ARCHES)]
        path = os.path.join(WORK, f"many-{i}")
        many.append((path, make_source(path, LAYERS, arch, variant, f"s{i}")))
    for path, pair in many:
        write_index(path, pair[0])
    toggle_path = os.path.join(WORK, "toggle")
    toggle = (toggle_path, make_source(toggle_path, TOGGLE_LAYERS, "amd64", None, "toggle"))
    print(f"sources ready in {time.perf_counter() - t:.1f} s")
    for binary in sys.argv[1:]:
        run(binary, many, toggle)


if __name__ == "__main__":
    main()
