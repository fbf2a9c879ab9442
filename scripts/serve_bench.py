#!/usr/bin/env python3
"""`ocimux serve` side by side with Debian's docker-registry 2.8 serving the
same images (pushed with --preserve-digests, then restarted read-only), in
one run, interleaved, medians; prints ratios (this machine is noisy: only
ratios measured in the same run mean anything). Loopback only.

Sections: 1 `skopeo copy --all docker://… oci:` wall time (and skopeo's copy
of the same images from a local layout, the floor); 2 16 parallel GETs of a
512 MiB blob, aggregate throughput; 3 manifest HEADs per second with
keep-alive (ab); 4 daemon RSS with 64 concurrent clients; 5 time from start
to the first answer vs `ocimux mount`'s ready time.

With OLD_OCIMUX (an earlier build), section 6 puts this build's serve
beside that one's, with and without --verify: the cost of new checks on
throughput and HEAD rate.

Run through scripts/serve_bench.sh. Environment: REPS (default 5), BENCH_DIR
(default /var/tmp/ocimux-serve-bench), BIG_MIB (default 512), OLD_OCIMUX,
SECTIONS=6 (only section 6), SERVE_METRICS=1 (this build's servers with
--metrics, scraped every second), SERVE_LOG=file (servers at their default log
level, writing to a file, instead of -q: the access log's cost).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import MIB, OCIMUX, make_layout, random_file, sh, interleaved, proc_cpu_rss, fmt, table  # noqa: E402

REPS = int(os.environ.get("REPS", "5"))
WORK = os.environ.get("BENCH_DIR", "/var/tmp/ocimux-serve-bench")
BIG_MIB = int(os.environ.get("BIG_MIB", "512"))
OLD_OCIMUX = os.environ.get("OLD_OCIMUX")
# SERVE_METRICS=1: this build's servers answer metrics too (--metrics), and
# are scraped every second meanwhile, as Prometheus would.
METRICS = ["--metrics", "127.0.0.1:0"] if os.environ.get("SERVE_METRICS") == "1" else []
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def listening_port(pid, deadline=20):
    """The TCP port process pid listens on, from /proc (the registry picks port 0)."""
    end = time.time() + deadline
    while time.time() < end:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        with open(f"/proc/{pid}/net/tcp") as f:
            for line in f.readlines()[1:]:
                p = line.split()
                if p[3] == "0A" and p[9] in inodes:
                    return int(p[1].rsplit(":", 1)[1], 16)
        time.sleep(0.02)
    sys.exit("bench: the registry did not listen")


class Registry:
    def __init__(self, root, readonly):
        self.dir = root
        cfg = os.path.join(root, "config.yml")
        ro = "  maintenance:\n    readonly:\n      enabled: true\n" if readonly else ""
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                    f"storage:\n  filesystem:\n    rootdirectory: {root}/data\n{ro}"
                    f"http:\n  addr: 127.0.0.1:0\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", cfg],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.host = f"127.0.0.1:{listening_port(self.proc.pid)}"
        wait_answer(self.host)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Serve:
    def __init__(self, *args, binary=OCIMUX):
        self.t0 = time.perf_counter()
        # SERVE_LOG=file: each server at its default level, logging to a
        # file (the access line per request included) instead of -q.
        quiet = [] if os.environ.get("SERVE_LOG") == "file" else ["-q"]
        self.log = tempfile.TemporaryFile() if not quiet else subprocess.DEVNULL
        self.proc = subprocess.Popen([binary, *quiet, "serve", "--listen", "127.0.0.1:0", *args],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://"):
            sys.exit(f"bench: ocimux serve printed {line!r}")
        self.host = line[len("http://"):]
        wait_answer(self.host)
        self.ready = time.perf_counter() - self.t0

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def wait_answer(host, deadline=20):
    end = time.time() + deadline
    while time.time() < end:
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=1).read()
            return
        except OSError:
            time.sleep(0.001)
    sys.exit(f"bench: {host} does not answer")


def get_json(host, path, accept):
    req = urllib.request.Request(f"http://{host}{path}", headers={"Accept": accept})
    with urllib.request.urlopen(req) as r:
        return json.load(r), r.headers.get("Docker-Content-Digest")


def main():
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    os.makedirs(WORK, exist_ok=True)
    print(f"# ocimux serve vs docker-registry {registry_version()}, {os.cpu_count()} CPUs, "
          f"REPS={REPS}, BIG_MIB={BIG_MIB}")
    # Three per-arch images of 3 x 32 MiB random layers, one of a BIG_MIB layer.
    srcs = []
    for arch in ("amd64", "arm64", "riscv64"):
        lay = os.path.join(WORK, f"{arch}-oci")
        if not os.path.exists(os.path.join(lay, "index.json")):
            files = []
            for i in range(3):
                p = os.path.join(WORK, f"{arch}-{i}.bin")
                random_file(p, 32)
                files.append(p)
            make_layout(lay, arch, layer_files=files)
        srcs.append(lay)
    big = os.path.join(WORK, "big-oci")
    if not os.path.exists(os.path.join(big, "index.json")):
        p = os.path.join(WORK, "big.bin")
        random_file(p, BIG_MIB)
        make_layout(big, "amd64", layer_files=[p])

    tmp = tempfile.mkdtemp(prefix="serve-bench-", dir=WORK)
    try:
        run_sections(tmp, srcs, big)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def registry_version():
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "docker-registry"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "?"


def write_config(tmp, srcs, big):
    cfg = os.path.join(tmp, "serve.toml")
    with open(cfg, "w") as f:
        f.write('[[repository]]\nname = "bench/app"\nsources = [%s]\n' % ", ".join(json.dumps(s) for s in srcs))
        f.write('[[repository]]\nname = "bench/big"\nsources = [%s]\n' % json.dumps(big))
    return cfg


def run_sections(tmp, srcs, big):
    if os.environ.get("SECTIONS") == "6":  # only this build vs OLD_OCIMUX
        builds_section(write_config(tmp, srcs, big))
        return
    # The same images in the registry, byte for byte (an export of the
    # composition, pushed with --preserve-digests), then served read-only.
    exported = os.path.join(tmp, "exported")
    sh(OCIMUX, "-q", "export", exported, *srcs)
    reg_root = os.path.join(tmp, "registry")
    os.makedirs(reg_root)
    r = Registry(reg_root, readonly=False)
    sh("skopeo", "copy", "--all", "-q", "--preserve-digests", "--dest-tls-verify=false",
       f"oci:{exported}", f"docker://{r.host}/bench/app:latest")
    sh("skopeo", "copy", "--all", "-q", "--preserve-digests", "--dest-tls-verify=false",
       f"oci:{big}", f"docker://{r.host}/bench/big:latest")
    r.stop()
    reg = Registry(reg_root, readonly=True)
    cfg = write_config(tmp, srcs, big)
    ours = Serve("--config", cfg)
    hosts = {"ocimux serve": ours.host, "docker-registry": reg.host}
    try:
        copy_section(tmp, hosts, exported)
        big_digest = blob_digest(ours.host, "bench/big")
        throughput_section(hosts, big_digest)
        heads_section(hosts)
        rss_section(hosts, {"ocimux serve": ours.proc.pid, "docker-registry": reg.proc.pid}, big_digest)
    finally:
        ours.stop()
        reg.stop()
    ready_section(tmp, srcs, cfg)
    if OLD_OCIMUX:
        builds_section(cfg)


def metrics_url(host):
    """Where the server at host answers metrics, as `ocimux status` says."""
    for _ in range(100):
        out = subprocess.run([OCIMUX, "status", "--json", f"http://{host}"], capture_output=True, text=True)
        found = json.loads(out.stdout or "[]")
        if found and found[0].get("metrics"):
            return found[0]["metrics"]
        time.sleep(0.1)
    sys.exit(f"bench: no metrics URL for {host}")


def scrape_every_second(urls, stop):
    while not stop.wait(1):
        for u in urls:
            urllib.request.urlopen(u, timeout=5).read()


def builds_section(cfg):
    """This build's serve beside OLD_OCIMUX's, plain and --verify (hashed once
    before the runs, so each run reads under a held proof)."""
    servers = {
        "this build": Serve(*METRICS, "--config", cfg),
        "previous build": Serve("--config", cfg, binary=OLD_OCIMUX),
        "this build --verify": Serve(*METRICS, "--verify", "--config", cfg),
        "previous build --verify": Serve("--verify", "--config", cfg, binary=OLD_OCIMUX),
    }
    stop_scraping = threading.Event()
    try:
        hosts = {v: s.host for v, s in servers.items()}
        if METRICS:
            urls = [metrics_url(hosts[v]) for v in hosts if v.startswith("this build")]
            threading.Thread(target=scrape_every_second, args=(urls, stop_scraping), daemon=True).start()
        digest = blob_digest(hosts["this build"], "bench/big")
        for v in hosts:
            parallel_gets(hosts[v], digest, 1)
        m = interleaved(list(hosts), lambda v: parallel_gets(hosts[v], digest, 16), reps=REPS, rotate=True)
        mib_s = {v: 16 * BIG_MIB / t for v, t in m.items()}
        heads = interleaved(list(hosts), lambda v: head_rate(hosts[v]), reps=REPS, rotate=True)
        rows = []
        for mode in ("", " --verify"):
            new, old = f"this build{mode}", f"previous build{mode}"
            rows.append([f"16 GETs, MiB/s{mode}", fmt(mib_s[new], 0), fmt(mib_s[old], 0),
                         fmt(mib_s[new] / mib_s[old])])
            rows.append([f"manifest HEADs/s{mode}", fmt(heads[new], 0), fmt(heads[old], 0),
                         fmt(heads[new] / heads[old])])
        table(f"6. this build vs {OLD_OCIMUX} (median)", ["", "this build", "previous", "ratio"], rows)
    finally:
        stop_scraping.set()
        for s in servers.values():
            s.stop()


def copy_section(tmp, hosts, exported):
    n = [0]

    def copy(v):
        n[0] += 1
        dest = os.path.join(tmp, f"copy-{n[0]}")
        src = f"oci:{exported}" if v == "skopeo from a layout" else f"docker://{hosts[v]}/bench/app:latest"
        t = time.perf_counter()
        sh("skopeo", "copy", "--all", "-q", "--src-tls-verify=false", src, f"oci:{dest}:latest")
        el = time.perf_counter() - t
        shutil.rmtree(dest)
        return el

    variants = ["ocimux serve", "docker-registry", "skopeo from a layout"]
    m = interleaved(variants, copy, reps=REPS, rotate=True)
    table("1. skopeo copy --all docker://… oci: (3 images, 9 x 32 MiB layers), seconds (median)",
          ["ocimux serve", "docker-registry", "local layout", "ocimux / registry", "ocimux / local"],
          [[fmt(m["ocimux serve"], 3), fmt(m["docker-registry"], 3), fmt(m["skopeo from a layout"], 3),
            fmt(m["ocimux serve"] / m["docker-registry"]), fmt(m["ocimux serve"] / m["skopeo from a layout"])]])


def blob_digest(host, repo):
    idx, _ = get_json(host, f"/v2/{repo}/manifests/latest", f"{OCI_INDEX}, {OCI_MANIFEST}")
    if "layers" not in idx:
        idx, _ = get_json(host, f"/v2/{repo}/manifests/{idx['manifests'][0]['digest']}", OCI_MANIFEST)
    return idx["layers"][0]["digest"]


def parallel_gets(host, digest, n, rate=None):
    url = f"http://{host}/v2/bench/big/blobs/{digest}"
    cmd = ["curl", "-s", "-f", "-o", "/dev/null"] + (["--limit-rate", rate] if rate else []) + [url]
    t = time.perf_counter()
    procs = [subprocess.Popen(cmd) for _ in range(n)]
    for p in procs:
        if p.wait() != 0:
            sys.exit(f"bench: curl {url} failed")
    return time.perf_counter() - t


def throughput_section(hosts, digest):
    # Warm: the blob is in the page cache for both.
    for v in hosts:
        parallel_gets(hosts[v], digest, 1)
    m = interleaved(list(hosts), lambda v: parallel_gets(hosts[v], digest, 16), reps=REPS, rotate=True)
    mib_s = {v: 16 * BIG_MIB / t for v, t in m.items()}
    table(f"2. 16 parallel GETs of a {BIG_MIB} MiB blob (warm), aggregate MiB/s (median)",
          ["ocimux serve", "docker-registry", "ratio"],
          [[fmt(mib_s["ocimux serve"], 0), fmt(mib_s["docker-registry"], 0),
            fmt(mib_s["ocimux serve"] / mib_s["docker-registry"])]])


def head_rate(host):
    # ab, not wrk: wrk's parser waits for a HEAD response's Content-Length
    # bytes and measured 0 requests against both servers.
    out = sh("ab", "-q", "-k", "-i", "-c", "8", "-n", "20000", "-H", f"Accept: {OCI_INDEX}",
             f"http://{host}/v2/bench/app/manifests/latest").stdout
    failed = [l for l in out.splitlines() if l.startswith(("Failed requests:", "Non-2xx"))]
    if any(l.split(":")[1].strip() != "0" for l in failed):
        sys.exit(f"bench: {host}: {failed}")
    line = [l for l in out.splitlines() if l.startswith("Requests per second:")][0]
    return float(line.split()[3])


def heads_section(hosts):
    m = interleaved(list(hosts), lambda v: head_rate(hosts[v]), reps=REPS, rotate=True)
    table("3. manifest HEADs by tag per second, keep-alive, ab -k -c8 (median)",
          ["ocimux serve", "docker-registry", "ratio"],
          [[fmt(m["ocimux serve"], 0), fmt(m["docker-registry"], 0),
            fmt(m["ocimux serve"] / m["docker-registry"])]])


def rss_section(hosts, pids, digest):
    rows = []
    for v in hosts:
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], proc_cpu_rss(pids[v])[1])
                time.sleep(0.02)

        before = proc_cpu_rss(pids[v])[1]
        th = threading.Thread(target=sample)
        th.start()
        # 64 clients at 4 MiB/s each, for about 3 s: all 64 in flight at once.
        parallel_gets_partial(hosts[v], digest, 64)
        done.set()
        th.join()
        rows.append([v, fmt(before / 1024, 1), fmt(peak[0] / 1024, 1)])
    table("4. daemon RSS with 64 concurrent clients (each reading at 4 MiB/s), MiB",
          ["server", "before", "peak"], rows)


def parallel_gets_partial(host, digest, n):
    url = f"http://{host}/v2/bench/big/blobs/{digest}"
    cmd = ["curl", "-s", "-o", "/dev/null", "--limit-rate", "4M", "--max-time", "3", url]
    procs = [subprocess.Popen(cmd) for _ in range(n)]
    for p in procs:
        p.wait()


def ready_section(tmp, srcs, cfg):
    mnt = os.path.join(tmp, "mnt")
    os.makedirs(mnt)

    def ready(v):
        if v == "ocimux mount":
            t = time.perf_counter()
            sh(OCIMUX, "-q", "mount", mnt, *srcs)
            el = time.perf_counter() - t
            sh(OCIMUX, "umount", mnt)
            return el
        s = Serve(*srcs_args(srcs))
        el = s.ready
        s.stop()
        return el

    m = interleaved(["ocimux mount", "ocimux serve"], ready, reps=REPS, rotate=True)
    table("5. from start to ready: mount returns / serve answers GET /v2/, ms (median)",
          ["ocimux mount", "ocimux serve", "difference"],
          [[fmt(m["ocimux mount"] * 1000, 1), fmt(m["ocimux serve"] * 1000, 1),
            fmt((m["ocimux serve"] - m["ocimux mount"]) * 1000, 1)]])


def srcs_args(srcs):
    return ["bench/app", *srcs]


if __name__ == "__main__":
    main()
