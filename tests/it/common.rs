//! Shared helpers for the integration tests: the built binary, real mounts
//! with deadlines, umoci-made fixtures, tool checks that fail loudly.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ocimux::oci::digest::Digest;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ocimux")
}

/// Fails the test, naming the tool, when a required tool is missing. Never skips.
pub fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "required tool `{tool}` is missing: run scripts/test.sh, which installs it"
    );
}

/// The unprivileged user the tests act as.
pub const NOBODY: u32 = 65534;

/// `program` run as nobody (uid and gid 65534, no other groups).
pub fn nobody(program: impl AsRef<std::ffi::OsStr>) -> Command {
    require_tool("setpriv");
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ]);
    cmd.arg(program);
    cmd
}

/// Makes `dir` searchable and readable by everyone (tempdirs are 0700).
pub fn open_to_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
}

/// Whether nobody (uid 65534) can read `path` (through a mount).
pub fn nobody_reads(path: &Path) -> bool {
    nobody("cat")
        .arg(path)
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

/// `chmod MODE PATH`.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `chown -h UID:UID PATH` (the link itself, not what it names).
pub fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).expect("chown");
}

/// Runs a command and returns its output; panics with stderr if `must_succeed` and it failed.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ocimux ARGS`, output captured, not checked.
pub fn ocimux(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run ocimux")
}

/// Makes a layout like Yocto does with umoci, config architecture `arch`;
/// `extra` bytes land in a layer file so different calls differ.
pub fn umoci_layout(dir: &Path, arch: &str, extra: &str) -> PathBuf {
    require_tool("umoci");
    let layout = dir.join(format!("{arch}-oci"));
    let bundle = dir.join(format!("{arch}-bundle"));
    let image = format!("{}:latest", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    fs::create_dir_all(bundle.join("rootfs/etc")).expect("mkdir");
    fs::write(bundle.join("rootfs/etc/motd"), format!("{arch} {extra}\n")).expect("write");
    let mut data = Vec::new();
    for i in 0..(64 * 1024u32) {
        data.extend_from_slice(&(i.wrapping_mul(2654435761) ^ arch.len() as u32).to_le_bytes());
    }
    fs::write(bundle.join("rootfs/etc/data.bin"), data).expect("write");
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        arch,
    ]));
    fs::remove_dir_all(&bundle).expect("rm bundle");
    layout
}

/// An amd64 and an arm64 layout made with umoci under `dir`, mounted together at `dir/mnt`.
pub fn two_arch_mount(dir: &Path, seed: &str) -> (PathBuf, PathBuf, Mount) {
    let amd64 = umoci_layout(dir, "amd64", seed);
    let arm64 = umoci_layout(dir, "arm64", seed);
    let m = Mount::new(
        &dir.join("mnt"),
        &[
            amd64.to_str().expect("utf-8"),
            arm64.to_str().expect("utf-8"),
        ],
    );
    (amd64, arm64, m)
}

/// `skopeo copy --all oci:FROM oci:TO:TAG` (skopeo verifies every digest), then
/// the raw index the copy holds.
pub fn skopeo_copy_all(from: &Path, to: &Path, tag: &str) -> Vec<u8> {
    try_skopeo_copy_all(from, to, tag).unwrap_or_else(|e| panic!("{e}"))
}

/// [`skopeo_copy_all`], returning skopeo's complaint when the copy fails.
pub fn try_skopeo_copy_all(from: &Path, to: &Path, tag: &str) -> Result<Vec<u8>, String> {
    require_tool("skopeo");
    let dest = format!("oci:{}:{tag}", to.display());
    let copy = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "-q",
            &format!("oci:{}", from.display()),
            &dest,
        ])
        .output()
        .map_err(|e| format!("running skopeo: {e}"))?;
    if !copy.status.success() {
        let why = String::from_utf8_lossy(&copy.stderr);
        return Err(format!("skopeo copy --all {}: {why}", from.display()));
    }
    Ok(run(Command::new("skopeo").args(["inspect", "--raw", &dest])).stdout)
}

/// A JSON file, parsed; panics naming the file.
pub fn json_file(path: &Path) -> serde_json::Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

/// The bytes of the image index a mounted layout's index.json points at.
pub fn served_index(dir: &Path) -> Vec<u8> {
    let index_json = json_file(&dir.join("index.json"));
    let digest = index_json["manifests"][0]["digest"]
        .as_str()
        .expect("digest");
    let digest = Digest::parse(digest).expect("valid digest");
    fs::read(dir.join(digest.blob_path())).expect("read the index blob")
}

/// The hex part of a descriptor's sha256 digest.
pub fn hex(d: &serde_json::Value) -> String {
    d["digest"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("sha256:")
        .to_owned()
}

/// sha256 of a file.
pub fn sha256_file(path: &Path) -> Digest {
    Digest::sha256_of(&fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())))
}

/// The platforms an image index lists, in its order, as
/// `OS/ARCH[/VARIANT]`.
pub fn platforms_of(index: &serde_json::Value) -> Vec<String> {
    let manifests = index["manifests"].as_array().expect("an index");
    manifests
        .iter()
        .map(|d| {
            let p = &d["platform"];
            let v = p["variant"]
                .as_str()
                .map(|v| format!("/{v}"))
                .unwrap_or_default();
            format!(
                "{}/{}{v}",
                p["os"].as_str().unwrap_or("?"),
                p["architecture"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// Every file under `root` with its bytes' hash, mode and mtime: compare before
/// and after to prove a source was not modified.
pub fn tree_state(root: &Path) -> BTreeMap<PathBuf, (String, u32, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let hash = if meta.is_file() {
                sha256_file(&path).to_string()
            } else {
                String::new()
            };
            out.insert(path, (hash, meta.mode(), meta.mtime()));
        }
    }
    out
}

fn dev_of(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.dev())
}

/// A live mount, unmounted (and checked unmounted) on drop.
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    /// `ocimux mount DIR ARGS…`; panics with ocimux's stderr if it fails.
    pub fn new(dir: &Path, args: &[&str]) -> Mount {
        fs::create_dir_all(dir).expect("mkdir mountpoint");
        let before = dev_of(dir);
        let out = Command::new(bin())
            .arg("mount")
            .arg(dir)
            .args(args)
            .output()
            .expect("run ocimux mount");
        assert!(
            out.status.success(),
            "ocimux mount failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // `ocimux mount` returns once the mount is live: no waiting needed here.
        assert_ne!(
            dev_of(dir),
            before,
            "ocimux mount returned but {} is not mounted",
            dir.display()
        );
        Mount {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Busy for a moment is possible: other tests of this process fork
        // children (curl, skopeo …), and a child holds copies of this test's
        // open files until it execs. Busy for 10 s is a failure.
        let end = Instant::now() + Duration::from_secs(10);
        while is_mounted(&self.dir) {
            let out = ocimux(&["umount", &self.dir.to_string_lossy()]);
            let err = String::from_utf8_lossy(&out.stderr);
            let busy = err.contains("Device or resource busy");
            if out.status.success() || std::thread::panicking() {
                break;
            }
            assert!(busy && Instant::now() < end, "umount: {err}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The preamble most mount tests share: a one-image linux/amd64 layout at
/// `tmp/s` that everyone may read, mounted at `tmp/mnt` (its directory made
/// canonical) with the extra arguments `extra`; the mount and its daemon's
/// pid.
pub fn one_image_mounted(tmp: &Path, extra: &[&str]) -> (Mount, i32) {
    let s = ocimux::testing::testutil::LayoutBuilder::simple(tmp.join("s"), "linux", "amd64", "x");
    for dir in ["", "blobs", "blobs/sha256"] {
        chmod(&s.root.join(dir), 0o755);
    }
    let mnt = fs::canonicalize(tmp).expect("tmp").join("mnt");
    let mut args = vec![s.root.to_str().expect("a UTF-8 path")];
    args.extend(extra);
    let m = Mount::new(&mnt, &args);
    let pid = daemon_pid(&m.dir);
    (m, pid)
}

/// The pid of the daemon serving the ocimux mount at `dir`.
pub fn daemon_pid(dir: &Path) -> i32 {
    let canonical = fs::canonicalize(dir).expect("mountpoint");
    let entry = ocimux::files::mountinfo::find(&canonical)
        .expect("mountinfo")
        .expect("mounted");
    assert!(entry.is_ocimux(), "{entry:?}");
    ocimux::mount::ownmount::daemon_of(&entry, None).expect("the daemon's state file")
}

/// Whether `dir` is a mountpoint (from /proc/self/mountinfo).
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(canonical) = fs::canonicalize(dir) else {
        return false;
    };
    ocimux::files::mountinfo::find(&canonical)
        .ok()
        .flatten()
        .is_some()
}

/// Drops the kernel's clean caches, so that reads through a mount reach the daemon.
pub fn drop_caches() {
    fs::write("/proc/sys/vm/drop_caches", "3\n")
        .expect("dropping caches needs root (CI runs as root)");
}

/// When the snapshot the mount at `mnt` serves was built: every swap builds
/// a new one, and its directories show that time (they are never cached).
/// A swap is observed through the mount itself, not through log text.
pub fn snapshot_time(mnt: &Path) -> std::time::SystemTime {
    fs::metadata(mnt.join("blobs/sha256"))
        .and_then(|m| m.modified())
        .expect("stat blobs/sha256")
}

/// [`wait_for`], then says how long it took (a figure for the notes).
pub fn wait_timed(what: &str, deadline: Duration, cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    wait_for(what, deadline, cond);
    let took = started.elapsed();
    eprintln!("{what}: {took:?}");
    took
}

/// Polls `cond` every 10 ms until it holds or `deadline` passes.
pub fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `dir` is a different filesystem than before (a foreground mount came up),
/// failing early if the daemon exits.
pub fn wait_mounted(dir: &Path, before: Option<u64>, child: &mut std::process::Child) {
    wait_for("the mount", Duration::from_secs(10), || {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("daemon exited ({status}) before mounting: {err}");
        }
        dev_of(dir) != before
    });
}

/// Every blob file under a mounted layout, re-hashed: returns (name, hash) pairs.
pub fn rehash_blobs(root: &Path) -> Vec<(String, Digest)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root.join("blobs/sha256")).expect("read blobs dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((name, sha256_file(&entry.path())));
    }
    out
}

pub use ocimux::testing::testutil::tarw;

/// Every file of a layout directory as tar members (`./`-prefixed, as
/// `tar -cf NAME.tar .` writes them), for building hostile variants.
pub fn layout_members(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for rel in ["oci-layout", "index.json"] {
        out.push((format!("./{rel}"), fs::read(root.join(rel)).expect("read")));
    }
    for e in fs::read_dir(root.join("blobs/sha256")).expect("read_dir") {
        let e = e.expect("entry");
        out.push((
            format!("./blobs/sha256/{}", e.file_name().to_string_lossy()),
            fs::read(e.path()).expect("read"),
        ));
    }
    out
}
