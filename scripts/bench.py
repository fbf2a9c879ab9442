#!/usr/bin/env python3
"""ocimux benchmark: everything side by side in one run, interleaved, medians.

Compares, on the same files: native reads, ocimux with kernel passthrough,
ocimux with daemon reads (--no-passthrough) and bindfs -r (a mature C FUSE
filesystem). Prints machine facts and tables of ratios (this machine is noisy:
only ratios measured in the same run mean anything). Run through
scripts/bench.sh, which builds the release binary and installs the tools.

Environment: REPS (default 5), BENCH_DIR (default /var/tmp/ocimux-bench),
BIG_MIB (default 1024), MANY (default 20000), SECTIONS (default all: "1,2,...,13"),
OLD_OCIMUX (an earlier build to compare with in sections 10 and 12; optional).
"""

import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OCIMUX = os.path.join(ROOT, "target", "release", "ocimux")
REPS = int(os.environ.get("REPS", "5"))
WORK = os.environ.get("BENCH_DIR", "/var/tmp/ocimux-bench")
BIG_MIB = int(os.environ.get("BIG_MIB", "1024"))
MANY = int(os.environ.get("MANY", "20000"))
MIB = 1024 * 1024
SECTIONS = {int(x) for x in os.environ.get("SECTIONS", "1,2,3,4,5,6,7,8,9,10,11,12,13").split(",")}
OLD_OCIMUX = os.environ.get("OLD_OCIMUX")


def want(n):
    return n in SECTIONS

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


def sh(*cmd, check=True, quiet=True):
    out = subprocess.run(cmd, stdout=subprocess.PIPE if quiet else None,
                         stderr=subprocess.PIPE, text=True)
    if check and out.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed: {out.stderr.strip()}")
    return out


def timed(*cmd):
    t = time.perf_counter()
    sh(*cmd)
    return time.perf_counter() - t


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


# ---------------------------------------------------------------- layouts

def write_blob(layout, data=None, path_from=None):
    """Writes a blob (bytes, or a file moved in) and returns (hex, size)."""
    d = os.path.join(layout, "blobs", "sha256")
    os.makedirs(d, exist_ok=True)
    if path_from is not None:
        h = hashlib.sha256()
        with open(path_from, "rb") as f:
            for chunk in iter(lambda: f.read(8 * MIB), b""):
                h.update(chunk)
        hexd, size = h.hexdigest(), os.path.getsize(path_from)
        os.replace(path_from, os.path.join(d, hexd))
        return hexd, size
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(d, hexd), "wb") as f:
        f.write(data)
    return hexd, len(data)


def random_file(path, mib):
    """mib MiB of random (incompressible) bytes."""
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))


def make_layout(layout, arch, layer_files=(), layer_blobs=()):
    """An OCI layout with one image; layers from files (moved in) or bytes."""
    if os.path.exists(os.path.join(layout, "index.json")):
        return layout
    os.makedirs(layout, exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    layers = []
    for p in layer_files:
        hexd, size = write_blob(layout, path_from=p)
        layers.append({"mediaType": LAYER, "digest": "sha256:" + hexd, "size": size})
    for data in layer_blobs:
        hexd, size = write_blob(layout, data)
        layers.append({"mediaType": LAYER, "digest": "sha256:" + hexd, "size": size})
    config = json.dumps({"architecture": arch, "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    chex, csize = write_blob(layout, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": "sha256:" + chex, "size": csize},
                           "layers": layers}).encode()
    mhex, msize = write_blob(layout, manifest)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": "sha256:" + mhex, "size": msize,
             "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
    return layout


def layer_paths(layout):
    with open(os.path.join(layout, "index.json")) as f:
        mhex = json.load(f)["manifests"][0]["digest"].split(":")[1]
    with open(os.path.join(layout, "blobs", "sha256", mhex)) as f:
        return [l["digest"].split(":")[1] for l in json.load(f)["layers"]]


# ---------------------------------------------------------------- mounts

class Mount:
    """ocimux (passthrough / daemon reads) or bindfs -r, unmounted on close."""

    def __init__(self, kind, mnt, sources, log=None, extra=(), binary=OCIMUX):
        self.kind, self.mnt, self.log, self.binary = kind, mnt, log, binary
        os.makedirs(mnt, exist_ok=True)
        if kind == "bindfs":
            sh("bindfs", "-r", sources[0], mnt)
        else:
            cmd = [binary, "mount", mnt, *sources, *extra]
            if kind == "daemon":
                cmd.append("--no-passthrough")
            if log:
                cmd += ["-v", "--log-file", log]
            sh(*cmd)

    def pid(self):
        with open("/proc/self/mountinfo") as f:
            for line in f:
                if f" {self.mnt} " in line and " - " in line:
                    src = line.split(" - ")[1].split()[1]
                    if src.startswith("ocimux:"):
                        return int(src.split(":")[1])
        return None

    def close(self):
        if self.kind == "bindfs":
            sh("fusermount3", "-u", self.mnt)
        else:
            sh(self.binary, "umount", self.mnt)


def proc_cpu_rss(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return cpu, rss, hwm


def log_stats(log):
    with open(log) as f:
        line = [l for l in f if "stats: " in l][-1]
    n = [int(x) for x in re.findall(r"\d+", line)]
    return {"read_requests": n[0], "daemon_bytes": n[1], "pt_opens": n[2], "daemon_opens": n[3]}


# ---------------------------------------------------------------- measuring

def interleaved(variants, fn, reps=REPS, rotate=False):
    """Runs fn(variant) for each variant, reps times round-robin; medians.
    With rotate, each round runs the variants in another order (a seeded
    shuffle): rotating kept neighbours together, and the variant that always
    ran right after the fastest one measured up to 20 % slower."""
    import random
    order = random.Random(20261129)
    samples = {v: [] for v in variants}
    for rep in range(reps):
        run = list(variants)
        if rotate:
            order.shuffle(run)
        for v in run:
            samples[v].append(fn(v))
    return {v: statistics.median(s) for v, s in samples.items()}


def seq_read(path, bs, cold):
    if cold:
        drop_caches()
    t = timed("dd", f"if={path}", "of=/dev/null", f"bs={bs}")
    return os.path.getsize(path) / t / (1024 ** 3)  # GiB/s


def fio_randread(path):
    out = sh("fio", "--name=r", f"--filename={path}", "--rw=randread", "--bs=4k",
             "--ioengine=psync", "--runtime=2", "--time_based", "--readonly",
             "--invalidate=0", "--output-format=json")
    return json.loads(out.stdout)["jobs"][0]["read"]["iops"]


def parallel_read(paths, cold):
    if cold:
        drop_caches()
    t = time.perf_counter()
    procs = [subprocess.Popen(["dd", f"if={p}", "of=/dev/null", "bs=1M"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in paths]
    for p in procs:
        p.wait()
    total = sum(os.path.getsize(p) for p in paths)
    return total / (time.perf_counter() - t) / (1024 ** 3)


def table(title, header, rows):
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


def fmt(x, digits=2):
    return f"{x:.{digits}f}"


# ---------------------------------------------------------------- main

def main():
    if os.geteuid() != 0:
        sys.exit("bench: run as root (drop_caches, passthrough)")
    os.makedirs(WORK, exist_ok=True)
    src = os.path.join(WORK, "src")
    mnt = os.path.join(WORK, "mnt")
    os.makedirs(src, exist_ok=True)

    print("## ocimux benchmark", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(f"\nCommand: `scripts/bench.sh` (REPS={REPS}, BIG_MIB={BIG_MIB}, MANY={MANY}); "
          f"medians of {REPS} interleaved runs.")

    # Inputs, made once and kept between runs.
    big = []
    for i, arch in enumerate(["amd64", "arm64"]):
        layout = os.path.join(src, f"big-{arch}")
        if not os.path.exists(os.path.join(layout, "index.json")):
            tmpf = os.path.join(src, f"big-{arch}.tmp")
            random_file(tmpf, BIG_MIB)
            make_layout(layout, arch, layer_files=[tmpf])
        big.append(layout)
    small = []
    for i, arch in enumerate(["amd64", "arm64"]):
        layout = os.path.join(src, f"small-{arch}")
        if not os.path.exists(os.path.join(layout, "index.json")):
            tmpf = os.path.join(src, f"small-{arch}.tmp")
            random_file(tmpf, 16)
            make_layout(layout, arch, layer_files=[tmpf])
        small.append(layout)
    par = os.path.join(src, "par")
    if not os.path.exists(os.path.join(par, "index.json")):
        files = []
        for i in range(16):
            p = os.path.join(src, f"par{i}.tmp")
            random_file(p, 64)
            files.append(p)
        make_layout(par, "amd64", layer_files=files)
    many = os.path.join(src, f"many{MANY}")
    make_layout(many, "amd64", layer_blobs=[f"blob {i}\n".encode() * 8 for i in range(MANY)])

    big_hex = layer_paths(big[0])[0]
    par_hex = layer_paths(par)
    rel = lambda h: os.path.join("blobs", "sha256", h)

    # Machine facts.
    kernel = os.uname().release
    try:
        max_pages = open("/proc/sys/fs/fuse/max_pages_limit").read().strip()
    except OSError:
        max_pages = "n/a"
    variants = ["native", "passthrough", "daemon", "bindfs"]
    mounts = {} if not (want(1) or want(2)) else {
        "passthrough": Mount("passthrough", os.path.join(mnt, "pt"), [big[0]], log=os.path.join(WORK, "pt.log")),
        "daemon": Mount("daemon", os.path.join(mnt, "daemon"), [big[0]], log=os.path.join(WORK, "daemon.log")),
        "bindfs": Mount("bindfs", os.path.join(mnt, "bindfs"), [big[0]]),
    }
    ra = {"passthrough": "n/a", "daemon": "n/a", "bindfs": "n/a"}
    for k, m in mounts.items():
        dev = os.stat(m.mnt).st_dev
        try:
            ra[k] = open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb").read().strip()
        except OSError:
            ra[k] = "n/a"
    src_dev = os.stat(src).st_dev
    try:
        src_ra = open(f"/sys/dev/block/{os.major(src_dev)}:{os.minor(src_dev)}/queue/read_ahead_kb").read().strip()
    except OSError:
        src_ra = "n/a"
    table("Machine", ["fact", "value"], [
        ["kernel", kernel], ["CPUs", os.cpu_count()], ["fuse max_pages_limit", max_pages],
        ["readahead KiB: source disk / passthrough / daemon / bindfs",
         f"{src_ra} / {ra['passthrough']} / {ra['daemon']} / {ra['bindfs']}"],
        ["ocimux threads (default)", min(os.cpu_count() or 2, 8)],
    ])

    def path_of(v, hexd, base=big[0]):
        return os.path.join(base if v == "native" else mounts[v].mnt, rel(hexd))

    # 1. Sequential reads.
    rows = []
    for cold in (False, True) if want(1) else ():
        for bs in ("1M", "4k"):
            if not cold:
                for v in variants:
                    seq_read(path_of(v, big_hex), "1M", False)  # warm every cache once
            r = interleaved(variants, lambda v: seq_read(path_of(v, big_hex), bs, cold))
            rows.append([f"{'cold' if cold else 'warm'} {bs}", *(fmt(r[v]) for v in variants),
                         fmt(r["passthrough"] / r["native"]), fmt(r["daemon"] / r["bindfs"])])
    if want(1):
        table(f"1. Sequential read of a {BIG_MIB} MiB blob (GiB/s)",
              ["case", *variants, "passthrough/native", "daemon/bindfs"], rows)

    # 2. Random 4 KiB reads (warm).
    for v in variants if want(2) else ():
        seq_read(path_of(v, big_hex), "1M", False)
    r = interleaved(variants if want(2) else [], lambda v: fio_randread(path_of(v, big_hex)))
    if want(2):
        table("2. Random 4 KiB reads, warm (fio psync, IOPS)",
              ["native", "passthrough", "daemon", "bindfs", "passthrough/native", "daemon/bindfs"],
              [[*(f"{r[v]:.0f}" for v in variants), fmt(r["passthrough"] / r["native"]),
                fmt(r["daemon"] / r["bindfs"])]])

    for m in mounts.values():
        m.close()
    if want(3):
        parallel_section(variants, path_of, mnt, par, par_hex)
    if want(4) or want(5):
        ready_and_skopeo(mnt, big, small, rel)
    if want(6):
        cost_section(mnt, big, rel)
    if want(7):
        many_section(mnt, many, small)
    if want(8) or want(9):
        archive_section(mnt, src, big, rel, big_hex)
    if want(10):
        open_section(mnt, many, rel)
    if want(11):
        verify_section(mnt, big, rel, big_hex)
    if want(12) and OLD_OCIMUX:
        recheck_section(mnt, big, rel, big_hex)
    if want(13):
        export_section(big)


def recheck_section(mnt, big, rel, big_hex):
    # 12. The daemon read path re-checks the file's identity (one fstat) after
    # every read: this build vs the previous one, both --no-passthrough.
    mounts = {"this build": Mount("daemon", os.path.join(mnt, "rc0"), [big[0]]),
              "previous build": Mount("daemon", os.path.join(mnt, "rc1"), [big[0]], binary=OLD_OCIMUX)}
    kinds = list(mounts)
    path = lambda k: os.path.join(mounts[k].mnt, rel(big_hex))
    for k in kinds:
        seq_read(path(k), "1M", False)
    rows = []
    for bs in ("1M", "4k"):
        r = interleaved(kinds, lambda k: seq_read(path(k), bs, False), rotate=True)
        rows.append([f"warm sequential {bs} (GiB/s)", *(fmt(r[k]) for k in kinds),
                     fmt(r["this build"] / r["previous build"])])
    r = interleaved(kinds, lambda k: seq_read(path(k), "1M", True), rotate=True)
    rows.append(["cold sequential 1M (GiB/s)", *(fmt(r[k]) for k in kinds),
                 fmt(r["this build"] / r["previous build"])])
    for k in kinds:
        seq_read(path(k), "1M", False)  # warm again after the cold runs
    r = interleaved(kinds, lambda k: fio_randread(path(k)), rotate=True)
    rows.append(["warm random 4k (IOPS)", *(f"{r[k]:.0f}" for k in kinds),
                 fmt(r["this build"] / r["previous build"])])
    for m in mounts.values():
        m.close()
    table("12. Daemon read path: identity re-checked after every read (this build) vs not (previous)",
          ["case", *kinds, "this/previous"], rows)


def export_section(big):
    # 13. ocimux export and verify against the tools a script would use
    # instead, on the same two sources (2 x BIG_MIB), warm caches, outputs on
    # the sources' filesystem, removed between runs.
    out = os.path.join(WORK, "export-out")
    blob_files = [os.path.join(b, "blobs", "sha256", h)
                  for b in big for h in os.listdir(os.path.join(b, "blobs", "sha256"))]
    total = sum(os.path.getsize(f) for f in blob_files)
    gib = total / (1024 ** 3)

    def fresh():
        sh("rm", "-rf", out, out + ".tar")
        os.sync()

    def run(cmd):
        fresh()
        t = timed(*cmd)
        return gib / t

    cases = {
        "cp -r (copy)": ["cp", "-r", *big, out + "/"],
        "cp -r; sync -f (durable, as export)": ["sh", "-c", "cp -r \"$@\" \"$0\" && sync -f \"$0\"", out + "/", *big],
        "ocimux export --link copy": [OCIMUX, "export", "-q", "--link", "copy", out, *big],
        "cp -al (hard links)": ["cp", "-al", *big, out + "/"],
        "ocimux export (auto: hard links here)": [OCIMUX, "export", "-q", out, *big],
        "tar -cf": ["tar", "-cf", out + ".tar", *big],
        "tar -cf; sync FILE (durable, as export)": ["sh", "-c", "tar -cf \"$0\" \"$@\" && sync \"$0\"", out + ".tar", *big],
        "ocimux export --format oci-archive": [OCIMUX, "export", "-q", "--format", "oci-archive", out + ".tar", *big],
        "sha256sum (one process)": ["sha256sum", *blob_files],
        "sha256sum, xargs -P2": ["sh", "-c", "printf '%s\\n' \"$@\" | xargs -P2 -n1 sha256sum >/dev/null", "sh", *blob_files],
        "ocimux verify (2 threads)": [OCIMUX, "verify", "-q", *big],
    }
    def case(name):
        cmd = cases[name]
        if cmd[0] == "cp" or "cp -r" in " ".join(cmd):
            fresh()
            os.makedirs(out)
            t = timed(*cmd)
            return gib / t
        return run(cmd)
    for name in cases:  # warm the page cache
        case(name)
    names = list(cases)
    r = interleaved(names, case, rotate=True)
    fresh()
    pairs = [("cp -r (copy)", "ocimux export --link copy"),
             ("cp -r; sync -f (durable, as export)", "ocimux export --link copy"),
             ("cp -al (hard links)", "ocimux export (auto: hard links here)"),
             ("tar -cf", "ocimux export --format oci-archive"),
             ("tar -cf; sync FILE (durable, as export)", "ocimux export --format oci-archive"),
             ("sha256sum (one process)", "ocimux verify (2 threads)"),
             ("sha256sum, xargs -P2", "ocimux verify (2 threads)")]
    rows = [[a, fmt(r[a]), b, fmt(r[b]), fmt(r[b] / r[a])] for a, b in pairs]
    table(f"13. export and verify of 2 sources ({total / MIB:.0f} MiB), warm (GiB/s)",
          ["tool", "GiB/s", "ocimux", "GiB/s", "ocimux/tool"], rows)


def open_read_close(paths):
    """Opens each path, reads 1 byte, closes; microseconds per file."""
    t = time.perf_counter()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.read(fd, 1)
        os.close(fd)
    return (time.perf_counter() - t) / len(paths) * 1e6


def open_section(mnt, many, rel):
    # 10. Open latency: confined, identity-checked opens (this build) vs the
    # previous build (path opens), vs the source itself.
    hexes = sorted(os.listdir(os.path.join(many, "blobs", "sha256")))[:5000]
    kinds = {"this build": (OCIMUX, ()), "this build --verify": (OCIMUX, ("--verify",))}
    if OLD_OCIMUX:
        kinds["previous build"] = (OLD_OCIMUX, ())
        kinds["previous build --verify"] = (OLD_OCIMUX, ("--verify",))
    mounts = {k: Mount("passthrough", os.path.join(mnt, f"open{i}"), [many], extra=extra, binary=b)
              for i, (k, (b, extra)) in enumerate(kinds.items())}
    variants = ["source", *mounts]
    base = lambda v: many if v == "source" else mounts[v].mnt
    paths = lambda v: [os.path.join(base(v), rel(h)) for h in hexes]
    for v in variants:
        open_read_close(paths(v))  # lookups, first hashes
    r = interleaved(variants, lambda v: open_read_close(paths(v)), rotate=True)
    for m in mounts.values():
        m.close()
    ref = "previous build" if OLD_OCIMUX else "source"
    vref = "previous build --verify" if OLD_OCIMUX else "source"
    table(f"10. open + 1-byte read + close of {len(hexes)} small blobs, warm (µs per file)",
          [*variants, f"this build/{ref}", f"--verify/{vref}"],
          [[*(fmt(r[v], 1) for v in variants), fmt(r["this build"] / r[ref]),
            fmt(r["this build --verify"] / r[vref])]])


def verify_section(mnt, big, rel, big_hex):
    # 11. --verify: the first open of a blob version hashes it; later opens do not.
    kinds = ["default", "--verify"]
    results = {}
    for k in kinds:
        rows = []
        for rep in range(REPS):
            m = Mount("passthrough", os.path.join(mnt, "verify"), [big[0]],
                      extra=(("--verify",) if k == "--verify" else ()))
            p = os.path.join(m.mnt, rel(big_hex))
            drop_caches()
            t0 = time.perf_counter()
            fd = os.open(p, os.O_RDONLY)
            t_open = time.perf_counter() - t0
            os.close(fd)
            cold_after_open = seq_read(p, "1M", False)  # the pages the hash read, if any
            t_total_cold = t_open + os.path.getsize(p) / cold_after_open / 1024 ** 3
            warm = seq_read(p, "1M", False)
            m.close()
            rows.append((t_open, t_total_cold, warm))
        results[k] = [statistics.median(x) for x in zip(*rows)]
    d, v = results["default"], results["--verify"]
    size = os.path.getsize(os.path.join(big[0], rel(big_hex))) / 1024 ** 3
    table(f"11. --verify on a {BIG_MIB} MiB blob, cold caches (medians of {REPS} mounts)",
          ["case", "first open (s)", "open + read whole, cold (s)", "warm read (GiB/s)"],
          [["default", fmt(d[0], 4), fmt(d[1], 3), fmt(d[2])],
           ["--verify", fmt(v[0], 3), fmt(v[1], 3), fmt(v[2])],
           ["--verify / default", fmt(v[0] / d[0], 0), fmt(v[1] / d[1]), fmt(v[2] / d[2])],
           ["sha256 GiB/s in the first open", "", fmt(size / v[0]), ""]])


def parallel_section(variants, path_of, mnt, par, par_hex):
    # 3. Parallel readers on distinct blobs (cold).
    mounts = {
        "passthrough": Mount("passthrough", os.path.join(mnt, "pt"), [par]),
        "daemon": Mount("daemon", os.path.join(mnt, "daemon"), [par]),
        "bindfs": Mount("bindfs", os.path.join(mnt, "bindfs"), [par]),
    }
    rows = []
    for n in (4, 16):
        r = interleaved(variants, lambda v: parallel_read([path_of(v, h, par) for h in par_hex[:n]], True))
        rows.append([f"{n} readers", *(fmt(r[v]) for v in variants),
                     fmt(r["passthrough"] / r["native"]), fmt(r["daemon"] / r["bindfs"])])
    table("3. Parallel readers, distinct 64 MiB blobs, cold (GiB/s total)",
          ["case", *variants, "passthrough/native", "daemon/bindfs"], rows)
    for m in mounts.values():
        m.close()


def ready_and_skopeo(mnt, big, small, rel):
    # 4. Ready time: mount vs materialising the layout by copying or hard links.
    ready_mnt = os.path.join(mnt, "ready")
    os.makedirs(ready_mnt, exist_ok=True)
    copy_dir = os.path.join(WORK, "copy")

    def ready(case):
        if case.startswith("mount"):
            srcs = small if case == "mount 2x16MiB" else big
            t = timed(OCIMUX, "mount", ready_mnt, *srcs)
            sh(OCIMUX, "umount", ready_mnt)
            return t
        shutil.rmtree(copy_dir, ignore_errors=True)
        os.makedirs(copy_dir)
        flag = "-a" if case == f"cp -r 2x{BIG_MIB}MiB" else "-al"
        t = time.perf_counter()
        for s in big:
            sh("cp", flag, s, os.path.join(copy_dir, os.path.basename(s)))
        sh("sync", "-f", copy_dir)
        return time.perf_counter() - t

    cases = ["mount 2x16MiB", f"mount 2x{BIG_MIB}MiB", f"cp -r 2x{BIG_MIB}MiB", f"cp -al 2x{BIG_MIB}MiB"]
    r = interleaved(cases, ready)
    table("4. Ready time (s): ocimux mount vs materialising by copy (+sync) or hard links",
          ["case", "seconds", "vs mount 2x16MiB", f"copy / mount 2x{BIG_MIB}MiB"],
          [[c, fmt(r[c], 4), fmt(r[c] / r["mount 2x16MiB"]), fmt(r[f"cp -r 2x{BIG_MIB}MiB"] / r[c], 1)] for c in cases])

    # 5. skopeo copy --all from the mount vs from a copied directory.
    shutil.rmtree(copy_dir, ignore_errors=True)
    merged = os.path.join(WORK, "merged")  # what copying tools produce: one directory
    if not os.path.exists(merged):
        shutil.copytree(big[0], merged)
        for s in big[1:]:
            shutil.copytree(os.path.join(s, "blobs"), os.path.join(merged, "blobs"), dirs_exist_ok=True)
    m = Mount("passthrough", os.path.join(mnt, "sk"), big)
    with open(os.path.join(m.mnt, "index.json")) as f:
        idx = json.load(f)
    shutil.copy(os.path.join(m.mnt, rel(idx["manifests"][0]["digest"].split(":")[1])),
                os.path.join(merged, rel(idx["manifests"][0]["digest"].split(":")[1])))
    with open(os.path.join(merged, "index.json"), "w") as f:
        json.dump(idx, f)
    out = os.path.join(WORK, "skopeo-out")

    def skopeo(case):
        shutil.rmtree(out, ignore_errors=True)
        srcref = f"oci:{m.mnt}" if case == "from mount" else f"oci:{merged}"
        return timed("skopeo", "copy", "--all", "-q", srcref, f"oci:{out}:latest")

    r = interleaved(["from mount", "from directory"], skopeo)
    table(f"5. skopeo copy --all to an oci: dir, 2 x {BIG_MIB} MiB (s)",
          ["from mount", "from directory", "mount/directory"],
          [[fmt(r["from mount"]), fmt(r["from directory"]), fmt(r["from mount"] / r["from directory"], 3)]])
    m.close()
    shutil.rmtree(out, ignore_errors=True)


def cost_section(mnt, big, rel):
    # 6. Daemon cost per GiB read, cold, and READ requests reaching it.
    rows = []
    for kind in ("passthrough", "daemon"):
        log = os.path.join(WORK, f"cost-{kind}.log")
        if os.path.exists(log):
            os.remove(log)
        m = Mount(kind, os.path.join(mnt, "cost"), big, log=log)
        pid = m.pid()
        cpu0, rss0, _ = proc_cpu_rss(pid)
        gib = 0.0
        for s in big:
            p = os.path.join(m.mnt, rel(layer_paths(s)[0]))
            seq_read(p, "1M", True)
            gib += os.path.getsize(p) / 1024 ** 3
        cpu1, rss1, hwm = proc_cpu_rss(pid)
        m.close()
        st = log_stats(log)
        rows.append([kind, fmt(gib), fmt((cpu1 - cpu0) / gib, 3), rss0 // 1024, rss1 // 1024, hwm // 1024,
                     st["read_requests"], st["daemon_bytes"] // MIB])
    table("6. Daemon cost reading every layer of 2 sources once, cold",
          ["read path", "GiB read", "daemon CPU s/GiB", "RSS MiB before", "RSS MiB after", "peak RSS MiB",
           "READ requests", "MiB read by daemon"], rows)


def many_section(mnt, many, small):
    # 7. find + stat over MANY blobs.
    drop_caches()
    t_native = timed("find", many, "-type", "f", "-printf", "%s %i\n")
    m = Mount("passthrough", os.path.join(mnt, "many"), [many])
    pid = m.pid()
    _, rss_before, _ = proc_cpu_rss(pid)
    drop_caches()
    t_mount = timed("find", m.mnt, "-type", "f", "-printf", "%s %i\n")
    _, rss_after, hwm = proc_cpu_rss(pid)
    t_warm = timed("find", m.mnt, "-type", "f", "-printf", "%s %i\n")
    m.close()
    small_m = Mount("passthrough", os.path.join(mnt, "many"), small)
    _, rss_small, _ = proc_cpu_rss(small_m.pid())
    small_m.close()
    table(f"7. find + stat over {MANY} blobs (one pass each, cold caches)",
          ["find on mount (s)", "find on source (s)", "mount/source", "warm find on mount (s)",
           "daemon RSS MiB (2 small sources)", f"daemon RSS MiB ({MANY} blobs) before / after / peak"],
          [[fmt(t_mount, 3), fmt(t_native, 3), fmt(t_mount / t_native), fmt(t_warm, 3),
            fmt(rss_small / 1024, 1), f"{rss_before / 1024:.1f} / {rss_after / 1024:.1f} / {hwm / 1024:.1f}"]])



def archive_section(mnt, src, big, rel, big_hex):
    # 8. A blob read from a tar source (daemon reads of a byte range) vs from a directory.
    archive = os.path.join(src, "big-amd64.tar")
    if not os.path.exists(archive):
        sh("tar", "-cf", archive, "-C", big[0], ".")
    if want(8):
        mounts = {
            "dir passthrough": Mount("passthrough", os.path.join(mnt, "dirpt"), [big[0]]),
            "dir daemon": Mount("daemon", os.path.join(mnt, "dird"), [big[0]]),
            "archive": Mount("passthrough", os.path.join(mnt, "tar"), [archive]),
        }
        kinds = list(mounts)
        rows = []
        for cold in (False, True):
            if not cold:
                for k in kinds:
                    seq_read(os.path.join(mounts[k].mnt, rel(big_hex)), "1M", False)
            r = interleaved(kinds, lambda k: seq_read(os.path.join(mounts[k].mnt, rel(big_hex)), "1M", cold))
            rows.append([f"{'cold' if cold else 'warm'} 1M", *(fmt(r[k]) for k in kinds),
                         fmt(r["archive"] / r["dir daemon"]), fmt(r["archive"] / r["dir passthrough"])])
        for m in mounts.values():
            m.close()
        table(f"8. Sequential read of a {BIG_MIB} MiB blob: tar source vs directory source (GiB/s)",
              ["case", *kinds, "archive/dir daemon", "archive/dir passthrough"], rows)
    if want(9):
        # 9. Ready time for a 2-blob archive vs extracting it.
        both = os.path.join(src, "both.tar")
        if not os.path.exists(both):
            merged = os.path.join(src, "both")
            shutil.rmtree(merged, ignore_errors=True)
            shutil.copytree(big[0], merged)
            for hexd in layer_paths(big[1]):
                shutil.copy(os.path.join(big[1], rel(hexd)), os.path.join(merged, rel(hexd)))
            sh("tar", "-cf", both, "-C", merged, ".")
            shutil.rmtree(merged)
        ready_mnt = os.path.join(mnt, "tar-ready")
        os.makedirs(ready_mnt, exist_ok=True)
        out = os.path.join(WORK, "extract")

        def ready(case):
            if case == "ocimux mount":
                t = timed(OCIMUX, "mount", ready_mnt, both)
                sh(OCIMUX, "umount", ready_mnt)
                return t
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            return timed("tar", "-xf", both, "-C", out)

        r = interleaved(["ocimux mount", "tar -xf"], ready)
        shutil.rmtree(out, ignore_errors=True)
        size = os.path.getsize(both) / 1024 ** 3
        table(f"9. Ready time for a {size:.2f} GiB archive (s)",
              ["ocimux mount", "tar -xf (no sync)", "tar -xf / mount"],
              [[fmt(r["ocimux mount"], 4), fmt(r["tar -xf"], 3), fmt(r["tar -xf"] / r["ocimux mount"], 0)]])


if __name__ == "__main__":
    main()
