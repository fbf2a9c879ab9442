#!/usr/bin/env python3
"""Soak of `ocimux serve`: readers pull (index, manifest, every layer, each
re-hashed) while the source is rebuilt in place over and over: new layers,
index.json renamed over, old layers deleted a little later, and the same
bytes renamed over a served layer (a new file under an old name). Counts
blobs verified, wrong bytes (a 200 whose body does not hash to its name:
must be 0), refusals, and samples the daemon's RSS, fds and threads.

Usage: scripts/serve_soak.sh (builds the release binary). Environment:
SOAK_SECS (default 60), READERS (default 8), SOAK_DIR (default
/var/tmp/ocimux-serve-soak), OCIMUX (the binary; default the release build).
`cargo test` replays it for a few seconds (serve::soak_replay).
Loopback only.
"""

import hashlib
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OCIMUX = os.environ.get("OCIMUX", os.path.join(ROOT, "target", "release", "ocimux"))
SECS = float(os.environ.get("SOAK_SECS", "60"))
READERS = int(os.environ.get("READERS", "8"))
WORK = os.environ.get("SOAK_DIR", "/var/tmp/ocimux-serve-soak")
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


def write_blob(layout, data):
    hexd = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", hexd)
    if not os.path.exists(path):
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return {"digest": "sha256:" + hexd, "size": len(data)}


def build(layout, generation, rng):
    """One rebuild: 4 layers (2 new each time), a config, a manifest, index.json."""
    layers = []
    for i in range(4):
        seed = generation - (i % 2)  # half the layers carry over from the last build
        data = random.Random(seed * 10 + i).randbytes(rng.randint(256, 2048) * 1024 if i == 0 else 512 * 1024)
        layers.append({"mediaType": LAYER, **write_blob(layout, data)})
    config = write_blob(layout, json.dumps({"architecture": "amd64", "os": "linux",
                                            "generation": generation}).encode())
    manifest = write_blob(layout, json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": layers}).encode())
    index = {"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, **manifest,
             "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    tmp = os.path.join(layout, "index.json.tmp")
    with open(tmp, "w") as f:
        json.dump(index, f)
    os.replace(tmp, os.path.join(layout, "index.json"))
    return [l["digest"] for l in layers]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.verified = self.wrong = self.refused = self.errors = self.bytes = 0

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


def get(conn, path, accept=None):
    conn.request("GET", path, headers={"Accept": accept} if accept else {})
    r = conn.getresponse()
    return r.status, r.read()


def reader(host, port, stats, stop):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    while not stop.is_set():
        try:
            status, body = get(conn, "/v2/app/manifests/latest", OCI_INDEX)
            if status != 200:
                stats.add(refused=1)
                continue
            d = json.loads(body)["manifests"][0]["digest"]
            status, body = get(conn, f"/v2/app/manifests/{d}", OCI_MANIFEST)
            if status != 200:
                stats.add(refused=1)
                continue
            digests = [d] + [l["digest"] for l in json.loads(body)["layers"]]
            checked = [(d, body)]
            for ld in digests[1:]:
                status, blob = get(conn, f"/v2/app/blobs/{ld}")
                if status == 200:
                    checked.append((ld, blob))
                else:
                    stats.add(refused=1)
            for name, data in checked:
                ok = "sha256:" + hashlib.sha256(data).hexdigest() == name
                stats.add(verified=int(ok), wrong=int(not ok), bytes=len(data))
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            stats.add(errors=1)
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=30)


def sample(pid):
    with open(f"/proc/{pid}/status") as f:
        status = dict(l.split(":", 1) for l in f)
    rss = int(status["VmRSS"].split()[0]) // 1024
    threads = int(status["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds, threads


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    layout = os.path.join(WORK, "app-oci")
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    rng = random.Random(20261203)
    generation = 1
    build(layout, generation, rng)
    srv = subprocess.Popen([OCIMUX, "-q", "serve", "--listen", "127.0.0.1:0", "app", layout],
                           stdout=subprocess.PIPE, text=True)
    url = srv.stdout.readline().strip()
    host, port = url[len("http://"):].split(":")
    stats, stop = Stats(), threading.Event()
    threads = [threading.Thread(target=reader, args=(host, int(port), stats, stop)) for _ in range(READERS)]
    for t in threads:
        t.start()
    samples, pending_delete, rewrites = [], [], 0
    end = time.time() + SECS
    next_sample = time.time()
    while time.time() < end:
        generation += 1
        old = build(layout, generation, rng)
        # Layers of two builds ago go, as a garbage collection would.
        pending_delete.append((time.time() + 1.0, old))
        while pending_delete and pending_delete[0][0] < time.time():
            _, gone = pending_delete.pop(0)
            keep = set(build_digests(layout))
            for d in gone:
                if d not in keep:
                    try:
                        os.remove(os.path.join(layout, "blobs", "sha256", d.split(":")[1]))
                    except FileNotFoundError:
                        pass
        # The same bytes renamed over a served layer: a new file, an old name.
        if generation % 3 == 0:
            d = build_digests(layout)[1].split(":")[1]
            p = os.path.join(layout, "blobs", "sha256", d)
            try:
                with open(p, "rb") as f:
                    data = f.read()
                with open(p + ".re", "wb") as f:
                    f.write(data)
                os.replace(p + ".re", p)
                rewrites += 1
            except FileNotFoundError:
                pass
        if time.time() >= next_sample:
            samples.append(sample(srv.pid))
            next_sample = time.time() + 1
        time.sleep(rng.uniform(0.1, 0.4))
    stop.set()
    for t in threads:
        t.join()
    samples.append(sample(srv.pid))
    srv.terminate()
    code = srv.wait()
    rss = [s[0] for s in samples]
    fds = [s[1] for s in samples]
    thr = [s[2] for s in samples]
    print(f"# ocimux serve soak: {SECS:.0f} s, {READERS} readers, {generation - 1} rebuilds, "
          f"{rewrites} same-bytes rewrites")
    print(f"blobs re-hashed: {stats.verified} ({stats.bytes / 2**20:.0f} MiB), wrong bytes: {stats.wrong}, "
          f"refused (404/500 while files went): {stats.refused}, connection errors: {stats.errors}")
    print(f"daemon RSS {min(rss)}-{max(rss)} MiB, fds {min(fds)}-{max(fds)}, threads {min(thr)}-{max(thr)}, "
          f"exit {code}")
    if stats.wrong or code != 0 or stats.verified == 0:
        sys.exit(1)


def build_digests(layout):
    with open(os.path.join(layout, "index.json")) as f:
        m = json.load(f)["manifests"][0]["digest"].split(":")[1]
    with open(os.path.join(layout, "blobs", "sha256", m)) as f:
        return [l["digest"] for l in json.load(f)["layers"]]


if __name__ == "__main__":
    main()
