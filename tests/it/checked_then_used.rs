//! Issue 16, trust round two, with real mounts and real users: what was
//! checked is what is used (log files, mountpoints, source roots and the
//! directories above them, export leftovers), permissions travel (ACLs,
//! symlinked blobs, later changes), and no request thread is held.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::common::*;
use ocimux::testing::testutil::LayoutBuilder;

/// `--log-file`: never through a symlink, only a regular file of the user
/// who mounts, created 0600; a refusal mounts nothing and leaves the target
/// as it was.
#[test]
fn a_log_file_is_opened_only_as_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let s = LayoutBuilder::simple(tmp.path().join("s"), "linux", "amd64", "x");
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let secret = tmp.path().join("root-only");
    fs::write(&secret, b"root's\n").unwrap();
    chmod(&secret, 0o600);
    let logs = tmp.path().join("logs");
    fs::create_dir(&logs).unwrap();
    let link = logs.join("link.log");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let theirs = logs.join("theirs.log");
    fs::write(&theirs, b"").unwrap();
    chown(&theirs, NOBODY);
    for (log, why) in [
        (&link, "is a symbolic link"),
        (&theirs, "owned by uid 65534"),
    ] {
        let out = ocimux(&[
            "mount",
            mnt.to_str().unwrap(),
            s.root.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", log.display());
        assert!(err.contains(why), "{}: {err}", log.display());
        assert!(!is_mounted(&mnt));
    }
    assert_eq!(fs::read(&secret).unwrap(), b"root's\n");
    assert_eq!(fs::metadata(&theirs).unwrap().len(), 0);
    // A new log file is the mounting user's, 0600.
    let fresh = logs.join("fresh.log");
    let m = Mount::new(
        &mnt,
        &[
            s.root.to_str().unwrap(),
            "--log-file",
            fresh.to_str().unwrap(),
        ],
    );
    let meta = fs::symlink_metadata(&fresh).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    drop(m);
}

/// `export` removes a killed export's leftover only with proof that an
/// export of this user made it: a directory another user renamed to that
/// name (holding root's files) stays, and so does a marker-less one of root's.
#[test]
fn export_leftovers_are_removed_only_with_proof() {
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let s = LayoutBuilder::simple(tmp.path().join("s"), "linux", "amd64", "x");
    let deploy = tmp.path().join("deploy");
    fs::create_dir(&deploy).unwrap();
    chown(&deploy, NOBODY);
    let dead = 0x3fff_fff0u32; // above pid_max: never alive
    // Root's directory the build user cannot empty, renamed to a leftover's name.
    let planted = deploy.join(format!(".out.ocimux-export-{dead}"));
    fs::create_dir_all(planted.join("keep")).unwrap();
    fs::write(planted.join("keep/root-file"), b"precious").unwrap();
    // A marker-less one of root's own.
    let bare = deploy.join(format!(".out.ocimux-export-{}", dead + 1));
    fs::create_dir_all(bare.join("x")).unwrap();
    // The build user's own directory with a forged marker.
    let forged = deploy.join(format!(".out.ocimux-export-{}", dead + 2));
    run(nobody("mkdir").arg(&forged));
    run(nobody("sh").arg("-c").arg(format!(
        "printf 'ocimux export {}\\n' > {}/ocimux-export",
        dead + 2,
        forged.display()
    )));
    let out = deploy.join("out");
    let r = ocimux(&["export", out.to_str().unwrap(), s.root.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        fs::read(planted.join("keep/root-file")).unwrap(),
        b"precious"
    );
    assert!(bare.join("x").is_dir());
    assert!(forged.join("ocimux-export").is_file());
    // And nothing else is left: no staging directory of this export.
    let mut left: Vec<_> = fs::read_dir(&deploy)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    left.sort();
    let mut want = vec![out, planted, bare, forged];
    want.sort();
    assert_eq!(left, want);
}

/// `export` copies and archives grant no more than the source: a 0600
/// source's blobs are 0600 copies (and 0600 archives), owned by the source's
/// owner when root exports.
#[test]
fn export_copies_keep_the_sources_read_bits_and_owner() {
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let s = LayoutBuilder::simple(tmp.path().join("s"), "linux", "amd64", "x");
    for entry in walk(&s.root) {
        if entry.is_file() {
            chmod(&entry, 0o600);
        }
        chown(&entry, NOBODY);
    }
    let out = tmp.path().join("copy");
    let r = ocimux(&[
        "export",
        "--link",
        "copy",
        out.to_str().unwrap(),
        s.root.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let mut blobs = 0;
    for src in walk(&s.root.join("blobs/sha256"))
        .into_iter()
        .filter(|p| p.is_file())
    {
        let copy = out.join("blobs/sha256").join(src.file_name().unwrap());
        if let Ok(meta) = fs::metadata(&copy) {
            assert_eq!(meta.mode() & 0o777, 0o600, "{}", copy.display());
            assert_eq!(meta.uid(), NOBODY, "{}", copy.display());
            blobs += 1;
        }
    }
    assert!(blobs >= 2, "{blobs} blobs checked");
    let archive = tmp.path().join("a.tar");
    let r = ocimux(&[
        "export",
        "--format",
        "oci-archive",
        archive.to_str().unwrap(),
        s.root.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let meta = fs::metadata(&archive).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), NOBODY);
}

/// Every path below `root`, directories first.
fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_owned()];
    let mut i = 0;
    while let Some(p) = out.get(i).cloned() {
        if p.is_dir() {
            let mut children: Vec<_> = fs::read_dir(&p)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            children.sort();
            out.extend(children);
        }
        i += 1;
    }
    out
}

/// The mountpoint is checked and the mount attached to the very directory
/// that was checked: a build user who swaps the mountpoint for a symlink to
/// another (non-empty) directory while root mounts never gets root's mount
/// onto it. A bounded race: it reports how many mounts it tried.
#[test]
fn a_mountpoint_swapped_for_a_symlink_never_moves_the_mount() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let s = LayoutBuilder::simple(tmp.path().join("s"), "linux", "amd64", "x");
    // A stand-in for /etc: not empty, so only a swap after the check could
    // put a mount on it.
    let standin = tmp.path().join("etc");
    fs::create_dir(&standin).unwrap();
    fs::write(standin.join("passwd"), b"root:x:0:0\n").unwrap();
    let build = tmp.path().join("build");
    fs::create_dir(&build).unwrap();
    chown(&build, NOBODY);
    let mnt = build.join("mnt");
    run(nobody("mkdir").arg(&mnt));
    run(nobody("ln").arg("-s").arg(&standin).arg(build.join("link")));
    let standin_hit = || is_mounted(&standin) || !standin.join("passwd").exists();
    // Exchanges `mnt` (a directory) and `link` (a symlink to the stand-in)
    // as fast as it can, as the build user.
    let racer_py = "import ctypes, os, sys\n\
                    libc = ctypes.CDLL(None, use_errno=True)\n\
                    os.chdir(sys.argv[1])\n\
                    while True: libc.renameat2(-100, b'mnt', -100, b'link', 2)\n";
    assert!(
        Path::new("/usr/bin/python3").exists(),
        "/usr/bin/python3 is missing: run scripts/test.sh, which installs it"
    );
    let mut racer = nobody("/usr/bin/python3")
        .args(["-c", racer_py])
        .arg(&build)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let racer_pid = racer.id();
    // kill(1) returns before the racer stops: wait until it has (state T),
    // so that where the mount is read from mountinfo is where it stays.
    let signal = |sig: &str| {
        run(std::process::Command::new("kill").args([sig, &racer_pid.to_string()]));
        if sig == "-STOP" {
            wait_for("the racer to stop", Duration::from_secs(5), || {
                fs::read_to_string(format!("/proc/{racer_pid}/stat")).is_ok_and(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('T'))
                })
            });
        }
    };
    let (mut tries, mut mounted) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) && tries < 150 {
        tries += 1;
        let out = ocimux(&["mount", mnt.to_str().unwrap(), s.root.to_str().unwrap()]);
        signal("-STOP");
        let standin_mounted = standin_hit();
        // Unmount wherever the mount is now (the racer may have renamed it).
        let ours: Vec<_> = ocimux::files::mountinfo::all()
            .unwrap()
            .into_iter()
            .filter(|m| m.is_ocimux() && m.mountpoint.starts_with(tmp.path()))
            .collect();
        for m in &ours {
            let r = ocimux(&["umount", m.mountpoint.to_str().unwrap()]);
            assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        }
        signal("-CONT");
        assert!(
            !standin_mounted,
            "try {tries}: root's mount landed on the stand-in"
        );
        if out.status.success() {
            mounted += 1;
            assert_eq!(ours.len(), 1, "try {tries}: {ours:?}");
            assert!(ours[0].mountpoint.starts_with(&build), "{ours:?}");
        }
    }
    assert!(
        racer.try_wait().unwrap().is_none(),
        "the racer died: nothing was raced"
    );
    racer.kill().unwrap();
    racer.wait().unwrap();
    eprintln!("mountpoint race: {tries} tries, {mounted} mounted, none on the stand-in");
    assert!(mounted > 0, "no mount succeeded in {tries} tries");
}

/// A mount (`allow_other`) of a source with one layer, and that layer's
/// name under the mount.
fn one_layer_mount(dir: &Path, layer: &[u8]) -> (LayoutBuilder, std::path::PathBuf, Mount) {
    let (b, desc) = LayoutBuilder::one_layer(dir.join("s"), layer);
    let m = Mount::new(
        &dir.join("mnt"),
        &[b.root.to_str().unwrap(), "-o", "allow_other"],
    );
    let name = m.path(&format!("blobs/sha256/{}", hex(&desc)));
    (b, name, m)
}

fn setfacl(args: &[&str], path: &Path) {
    require_tool("setfacl");
    run(std::process::Command::new("setfacl").args(args).arg(path));
}

/// POSIX ACLs travel: a file ACL denying nobody, a directory ACL denying
/// nobody, and `g::---` under an `r--` mask each show through the mount;
/// an ACL set after the mount reaches it within two seconds.
#[test]
fn acls_travel_through_the_mount() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let (b, name, m) = one_layer_mount(tmp.path(), b"acl layer");
    assert!(nobody_reads(&name), "baseline: nobody reads a 0644 layer");
    let blob_dir = b.root.join("blobs/sha256");
    // A directory ACL denying nobody, set while mounted.
    setfacl(&["-m", "u:nobody:---"], &blob_dir);
    let started = Instant::now();
    wait_for(
        "the directory ACL to reach the mount",
        Duration::from_secs(2),
        || !nobody_reads(&name),
    );
    eprintln!("directory ACL reached the mount in {:?}", started.elapsed());
    assert!(fs::read(&name).is_ok(), "root still reads");
    setfacl(&["-b"], &blob_dir);
    wait_for(
        "the ACL removal to reach the mount",
        Duration::from_secs(2),
        || nobody_reads(&name),
    );
    drop(m);
    // File ACLs, set before mounting.
    let layer = walk(&blob_dir)
        .into_iter()
        .find(|p| p.is_file() && fs::read(p).is_ok_and(|b| b == b"acl layer"))
        .unwrap();
    setfacl(&["-m", "u:nobody:---"], &layer);
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &[b.root.to_str().unwrap(), "-o", "allow_other"],
    );
    assert!(!nobody_reads(&name), "a file ACL denying nobody");
    assert_eq!(fs::metadata(&name).unwrap().mode() & 0o044, 0);
    drop(m);
    setfacl(&["-b"], &layer);
    setfacl(&["-m", "g::---,m::r--,u:daemon:r--"], &layer);
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &[b.root.to_str().unwrap(), "-o", "allow_other"],
    );
    let mode = fs::metadata(&name).unwrap().mode() & 0o777;
    assert_eq!(mode & 0o040, 0, "g::--- shown as group read: {mode:o}");
    assert!(nobody_reads(&name), "others keep r--: {mode:o}");
    drop(m);
}

/// A blob that is a symlink to a file in a 0700 directory of the source is
/// narrowed by that directory, not by the directories above the link.
#[test]
fn a_symlinked_blob_is_narrowed_by_the_directories_above_its_target() {
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let (b, desc) = LayoutBuilder::one_layer(tmp.path().join("s"), b"hidden layer");
    let src = b.blob_path(&desc);
    let hidden = b.root.join("hidden");
    fs::create_dir(&hidden).unwrap();
    chmod(&hidden, 0o700);
    fs::rename(&src, hidden.join("layer")).unwrap();
    std::os::unix::fs::symlink("../../hidden/layer", &src).unwrap();
    let log = tmp.path().join("log");
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &[
            b.root.to_str().unwrap(),
            "-o",
            "allow_other",
            "-v",
            "--log-file",
            log.to_str().unwrap(),
        ],
    );
    let name = m.path(&format!("blobs/sha256/{}", hex(&desc)));
    let read = fs::read(&name);
    assert!(
        read.as_deref().is_ok_and(|b| b == b"hidden layer"),
        "{read:?}; daemon log:\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(fs::metadata(&name).unwrap().mode() & 0o777, 0o400);
    assert!(
        !nobody_reads(&name),
        "a layer in a 0700 directory reached nobody"
    );
}

/// `chmod 700` of a directory above the layout, after the mount, reaches the
/// mount within two seconds (goal: one).
#[test]
fn a_chmod_above_the_layout_reaches_the_mount() {
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let above = tmp.path().join("home");
    fs::create_dir(&above).unwrap();
    chmod(&above, 0o755);
    let (b, desc) = LayoutBuilder::one_layer(above.join("s"), b"private soon");
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &[b.root.to_str().unwrap(), "-o", "allow_other"],
    );
    let name = m.path(&format!("blobs/sha256/{}", hex(&desc)));
    assert!(nobody_reads(&name));
    chmod(&above, 0o700);
    wait_timed(
        "chmod 700 above the layout to reach the mount",
        Duration::from_secs(2),
        || !nobody_reads(&name),
    );
    assert_eq!(fs::metadata(&name).unwrap().mode() & 0o077, 0);
}

/// A build user flips a `…-latest-oci` symlink between another user's
/// private layout (0644 files in a 0700 home) and a decoy of their own while
/// root serves it with allow_other: the private layer never reaches them.
/// A bounded race: it says how many reads it tried.
#[test]
fn a_flipped_latest_link_never_lends_a_decoys_bits_to_a_private_layout() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let (private, desc) = LayoutBuilder::one_layer(home.join("p"), b"the victim's layer");
    for p in walk(&home) {
        chmod(&p, if p.is_dir() { 0o755 } else { 0o644 });
        chown(&p, 1000);
    }
    chmod(&home, 0o700);
    let deploy = tmp.path().join("deploy");
    fs::create_dir(&deploy).unwrap();
    chown(&deploy, NOBODY);
    let decoy = LayoutBuilder::simple(deploy.join("decoy"), "linux", "amd64", "decoy");
    for p in walk(&decoy.root) {
        chown(&p, NOBODY);
    }
    run(nobody("ln")
        .arg("-s")
        .arg(&private.root)
        .arg(deploy.join("latest")));
    run(nobody("ln")
        .arg("-s")
        .arg(&decoy.root)
        .arg(deploy.join("alt")));
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &[deploy.join("latest").to_str().unwrap(), "-o", "allow_other"],
    );
    let name = m.path(&format!("blobs/sha256/{}", hex(&desc)));
    assert!(!nobody_reads(&name), "before the race");
    let racer_py = "import ctypes, os, sys\n\
                    libc = ctypes.CDLL(None, use_errno=True)\n\
                    os.chdir(sys.argv[1])\n\
                    while True: libc.renameat2(-100, b'latest', -100, b'alt', 2)\n";
    let mut racer = nobody("/usr/bin/python3")
        .args(["-c", racer_py])
        .arg(&deploy)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // As the build user: read the private layer through the mount, again
    // and again, for three seconds.
    let reader = format!(
        "n=0; ok=0; end=$(($(date +%s) + 3)); while [ $(date +%s) -lt $end ]; do \
         n=$((n+1)); if cat '{}' >/dev/null 2>&1; then ok=$((ok+1)); fi; done; echo $n $ok",
        name.display()
    );
    let started = Instant::now();
    let out = run(nobody("sh").args(["-c", &reader]));
    assert!(
        racer.try_wait().unwrap().is_none(),
        "the racer died: nothing was raced"
    );
    racer.kill().unwrap();
    racer.wait().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut counts = text
        .split_whitespace()
        .map(|n| n.parse::<u64>().unwrap_or(u64::MAX));
    let (tries, read) = (
        counts.next().unwrap_or(0),
        counts.next().unwrap_or(u64::MAX),
    );
    eprintln!(
        "latest-link race: {tries} reads in {:?} as the build user, {read} succeeded",
        started.elapsed()
    );
    assert!(tries > 10, "{text}");
    assert_eq!(
        read, 0,
        "the private layer reached the build user {read} times"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// Hashing never holds a request thread: 70 opens of a 3 GiB sparse layer
/// under `--verify` (each must be hashed before it is served) by another
/// user, and root's `cat index.json` still answers at once; and they take one
/// hash and one queue slot, so root's opens of other blobs, which must be
/// hashed too, are never refused for them (issue 23, class 9: before, the
/// queue filled and root's opens failed with EAGAIN for the whole hash).
#[test]
fn hashing_opens_do_not_hold_the_request_threads() {
    use ocimux::oci::document::OCI_MANIFEST;
    use serde_json::json;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let b = LayoutBuilder::new(tmp.path().join("s"));
    let config = b.json_blob(
        "application/vnd.oci.image.config.v1+json",
        &json!({"os": "linux", "architecture": "amd64"}),
    );
    let size: u64 = 3 << 30;
    let hex = "ab".repeat(32);
    let layer = json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": format!("sha256:{hex}"),
        "size": size,
    });
    let sparse = fs::File::create(b.root.join("blobs/sha256").join(&hex)).unwrap();
    sparse.set_len(size).unwrap();
    drop(sparse);
    let config_hex = crate::common::hex(&config);
    let m = b.json_blob(
        OCI_MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}),
    );
    b.index(&[(m, None)]);
    let mnt = Mount::new(
        &tmp.path().join("mnt"),
        &[
            b.root.to_str().unwrap(),
            "--verify",
            "--threads",
            "2",
            "-o",
            "allow_other",
        ],
    );
    let name = mnt.path(&format!("blobs/sha256/{hex}"));
    let mut readers: Vec<_> = (0..70)
        .map(|_| {
            nobody("cat")
                .arg(&name)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Root reads index.json again and again for as long as the layer is
    // being hashed (the readers wait for it), at most a minute.
    let (mut slowest, mut reads) = (Duration::ZERO, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while readers.iter_mut().any(|r| r.try_wait().unwrap().is_none()) {
        assert!(Instant::now() < deadline, "the hashing opens did not end");
        let started = Instant::now();
        let index = fs::read(mnt.path("index.json")).unwrap();
        slowest = slowest.max(started.elapsed());
        reads += 1;
        assert!(!index.is_empty());
        // A blob that must be hashed too (--verify): never refused for theirs.
        let config = fs::read(mnt.path(&format!("blobs/sha256/{config_hex}")));
        assert!(config.is_ok(), "root's open while theirs hash: {config:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "index.json: slowest of {reads} reads {slowest:?} while 70 opens hashed a 3 GiB layer"
    );
    assert!(
        reads >= 5,
        "the hashing ended after {reads} reads: nothing was measured"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "index.json took {slowest:?}"
    );
    // The hashed layer does not match its (made-up) name: refused, not served.
    for r in &mut readers {
        let status = r.wait().unwrap();
        assert!(!status.success());
    }
}

/// A live source re-pointed at a read-only overlay of the mount itself (not
/// a FUSE filesystem, so the start-up check cannot see it): the daemon's
/// own requests are refused at once, the last good snapshot is served, and
/// the mount never wedges (daemon reads, so nothing bypasses it).
#[test]
fn a_source_leading_back_into_the_mount_never_wedges_it() {
    use std::time::Duration;
    require_tool("timeout");
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let (b, desc) = LayoutBuilder::one_layer(tmp.path().join("a"), b"the first build");
    let live = tmp.path().join("live");
    std::os::unix::fs::symlink(&b.root, &live).unwrap();
    let mnt = Mount::new(
        &tmp.path().join("mnt"),
        &[live.to_str().unwrap(), "--no-passthrough", "--threads", "2"],
    );
    let layer = mnt.path(&format!("blobs/sha256/{}", hex(&desc)));
    let before = fs::read(mnt.path("index.json")).unwrap();
    let (empty, ovl) = (tmp.path().join("empty"), tmp.path().join("ovl"));
    fs::create_dir(&empty).unwrap();
    fs::create_dir(&ovl).unwrap();
    run(std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={}:{}",
            mnt.dir.display(),
            empty.display()
        ))
        .arg(&ovl));
    let relink = tmp.path().join("live.new");
    std::os::unix::fs::symlink(&ovl, &relink).unwrap();
    fs::rename(&relink, &live).unwrap();
    // Give the watcher its rebuilds (settle 100 ms, retries every 500 ms),
    // reading through the mount all along; every read must end.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        for path in [&layer, &mnt.path("index.json")] {
            let out = run(std::process::Command::new("timeout")
                .args(["10", "cat"])
                .arg(path));
            assert!(!out.stdout.is_empty(), "{}", path.display());
        }
    }
    assert_eq!(fs::read(mnt.path("index.json")).unwrap(), before);
    assert_eq!(fs::read(&layer).unwrap(), b"the first build");
    // The daemon's retries may hold the overlay for the instant of an open
    // (refused a moment later): point the source home, then the overlay
    // must come free within a few retry rounds.
    std::os::unix::fs::symlink(&b.root, &relink).unwrap();
    fs::rename(&relink, &live).unwrap();
    wait_for("the overlay to unmount", Duration::from_secs(10), || {
        std::process::Command::new("umount")
            .arg(&ovl)
            .status()
            .is_ok_and(|s| s.success())
    });
}

/// Passthrough only where an in-place rewrite cannot come from someone the
/// mount does not trust: a source owned by a build user, or any source under
/// `--verify`, is read by the daemon, so an open handle never returns bytes
/// rewritten in place after it was opened (it gets EIO).
#[test]
fn in_place_rewrites_under_an_open_handle_are_refused_when_not_trusted() {
    use std::io::{Read, Seek, SeekFrom};
    let layer: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 241) as u8).collect();
    for (owner, extra) in [(NOBODY, None), (0, Some("--verify"))] {
        let tmp = tempfile::tempdir().unwrap();
        open_to_all(tmp.path());
        let (b, desc) = LayoutBuilder::one_layer(tmp.path().join("s"), &layer);
        for p in walk(&b.root) {
            chown(&p, owner);
        }
        let mut args = vec![b.root.to_str().unwrap()];
        args.extend(extra);
        let m = Mount::new(&tmp.path().join("mnt"), &args);
        let name = m.path(&format!("blobs/sha256/{}", hex(&desc)));
        let mut f = fs::File::open(&name).unwrap();
        let mut first = [0u8; 4096];
        f.read_exact(&mut first).unwrap();
        assert_eq!(&first[..], &layer[..4096]);
        // The owner rewrites the file in place: same size, other bytes.
        let src = b.blob_path(&desc);
        let script = format!(
            "printf 'XXXXXXXXXXXXXXXX' | dd of='{}' bs=16 seek=4096 conv=notrunc status=none",
            src.display()
        );
        let rewrite = match owner {
            0 => std::process::Command::new("sh")
                .args(["-c", &script])
                .output(),
            _ => nobody("sh").args(["-c", &script]).output(),
        };
        assert!(rewrite.unwrap().status.success());
        drop_caches();
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut rest = Vec::new();
        let got = f.read_to_end(&mut rest);
        assert!(
            !rest.windows(16).any(|w| w == b"XXXXXXXXXXXXXXXX"),
            "owner {owner} {extra:?}: rewritten bytes reached an open handle"
        );
        assert_eq!(
            got.map_err(|e| e.raw_os_error()),
            Err(Some(libc::EIO)),
            "owner {owner} {extra:?}"
        );
        drop(f);
        drop(m);
    }
}
