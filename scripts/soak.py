#!/usr/bin/env python3
"""ocimux soak (not a test): a live mount under load for DURATION seconds
(default 300, at most 600).

- the source is rebuilt every 0.5 s (index.json rewritten, alternating between
  two images that share most layers, and a new layer every 10th rebuild);
- 8 readers list and re-hash every blob through the mount, forever;
- half-way, the daemon is SIGKILLed: its watchdog must unmount, and the mount
  is made again at the same path;
- every 2 s the daemon's RSS, fds and inotify watches are sampled.

Prints one table; "wrong bytes" (a blob read whole whose bytes do not hash to
its name) must be 0. Run through scripts/soak.sh, which builds the release
binary. Needs root (drop_caches is not used; SIGKILL of our own daemon is).
"""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OCIMUX = os.path.join(ROOT, "target", "release", "ocimux")
DURATION = min(int(os.environ.get("DURATION", "300")), 600)
WORK = os.environ.get("SOAK_DIR", "/var/tmp/ocimux-soak")
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def blob(layout, data):
    h = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", h), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + h, "size": len(data)}


def image(layout, arch, layers):
    config = blob(layout, json.dumps({"os": "linux", "architecture": arch}).encode())
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    for l in layers:
        l["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
    m = blob(layout, json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                                 "config": config, "layers": layers}).encode())
    m["mediaType"] = MANIFEST
    return m


def write_index(layout, manifest):
    tmp = os.path.join(layout, "index.json.new")
    with open(tmp, "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [manifest]}, f)
    os.replace(tmp, os.path.join(layout, "index.json"))


def mountinfo_pid(mnt):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split(" ")[4] == mnt and right.split(" ")[1].startswith("ocimux:"):
                return int(right.split(" ")[1].split(":")[1])
    return None


def sample(pid):
    rss = fds = watches = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        for fd in os.listdir(f"/proc/{pid}/fd"):
            fds += 1
            try:
                if "inotify" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                        watches += sum(1 for l in f if l.startswith("inotify wd:"))
            except OSError:
                pass
    except OSError:
        return None
    return rss, fds, watches


def main():
    if os.geteuid() != 0:
        sys.exit("soak: run as root")
    shutil.rmtree(WORK, ignore_errors=True)
    layout = os.path.join(WORK, "src")
    mnt = os.path.join(WORK, "mnt")
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    os.makedirs(mnt)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    rng = random.Random(42)
    shared = [blob(layout, rng.randbytes(256 * 1024)) for _ in range(40)]
    images = [image(layout, a, [dict(l) for l in shared]) for a in ("amd64", "arm64")]
    write_index(layout, images[0])
    log = os.path.join(WORK, "log")

    def mount():
        subprocess.run([OCIMUX, "mount", mnt, layout, "-v", "--log-file", log], check=True)
        return mountinfo_pid(mnt)

    pid = mount()
    stop = threading.Event()
    lock = threading.Lock()
    stats = {"reads": 0, "bytes": 0, "wrong": 0, "EIO": 0, "ENOENT": 0, "ENOTCONN": 0, "other": 0}
    error_times = []

    def reader():
        while not stop.is_set():
            try:
                names = os.listdir(os.path.join(mnt, "blobs", "sha256"))
            except OSError:
                time.sleep(0.05)
                continue
            for name in names:
                try:
                    with open(os.path.join(mnt, "blobs", "sha256", name), "rb") as f:
                        data = f.read()
                    ok = hashlib.sha256(data).hexdigest() == name
                    with lock:
                        stats["reads"] += 1
                        stats["bytes"] += len(data)
                        stats["wrong"] += 0 if ok else 1
                except OSError as e:
                    key = {5: "EIO", 2: "ENOENT", 107: "ENOTCONN", 103: "ENOTCONN"}.get(e.errno, "other")
                    with lock:
                        stats[key] += 1
                        error_times.append(time.monotonic())

    readers = [threading.Thread(target=reader) for _ in range(8)]
    for t in readers:
        t.start()
    samples = []
    rebuilds = 0
    killed_at = None
    unmounted_after = None
    start = time.monotonic()
    next_sample = start
    while time.monotonic() - start < DURATION:
        now = time.monotonic()
        rebuilds += 1
        if rebuilds % 10 == 0:
            layers = [dict(l) for l in shared] + [blob(layout, rng.randbytes(64 * 1024))]
            images[rebuilds % 2] = image(layout, ("amd64", "arm64")[rebuilds % 2], layers)
        write_index(layout, images[rebuilds % 2])
        if killed_at is None and now - start >= DURATION / 2:
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            while mountinfo_pid(mnt) == pid and time.monotonic() - killed_at < 10:
                time.sleep(0.01)
            unmounted_after = time.monotonic() - killed_at
            pid = mount()
        if now >= next_sample:
            s = sample(pid)
            if s:
                samples.append(s)
            next_sample = now + 2
        time.sleep(0.5)
    stop.set()
    for t in readers:
        t.join()
    swaps = 0
    with open(log) as f:
        swaps = sum(1 for l in f if "sources changed" in l)
    subprocess.run([OCIMUX, "umount", mnt], check=True)
    # Errors are expected only while the killed mount goes and the new one comes.
    remounted_at = killed_at + unmounted_after if killed_at else None
    outside = sum(1 for t in error_times
                  if killed_at is None or not (killed_at - 0.1 <= t <= remounted_at + 3))
    rss = [s[0] for s in samples]
    fds = [s[1] for s in samples]
    watches = [s[2] for s in samples]
    print(f"### Soak, {DURATION} s ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print("| measure | value |")
    print("|---|---|")
    for k, v in [
        ("rebuilds written (every 0.5 s) / snapshot swaps logged", f"{rebuilds} / {swaps}"),
        ("blobs re-hashed through the mount by 8 readers", f"{stats['reads']} ({stats['bytes'] / 2**30:.2f} GiB)"),
        ("wrong bytes (read whole, hash differs from name)", stats["wrong"]),
        ("errors: EIO / ENOENT / not connected / other",
         f"{stats['EIO']} / {stats['ENOENT']} / {stats['ENOTCONN']} / {stats['other']}"),
        ("errors outside the SIGKILL-to-remount window (+3 s)", outside),
        ("SIGKILL half-way: mount gone after (s)", f"{unmounted_after:.3f}" if unmounted_after is not None else "n/a"),
        ("daemon RSS KiB min / max (samples every 2 s)", f"{min(rss)} / {max(rss)}"),
        ("daemon fds min / max", f"{min(fds)} / {max(fds)}"),
        ("inotify watches min / max", f"{min(watches)} / {max(watches)}"),
    ]:
        print(f"| {k} | {v} |")
    sys.exit(1 if stats["wrong"] or outside else 0)


if __name__ == "__main__":
    main()
