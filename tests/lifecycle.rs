//! Mount lifecycle: detaching, signals, `ocimux umount`, the log file.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use ocimux::testutil::LayoutBuilder;

fn alive(pid: i32) -> bool {
    ocimux::mountpoint::process_alive(pid)
}

/// A one-image layout mounted, and its daemon's pid.
fn mounted(tmp: &Path) -> (Mount, i32) {
    let s = LayoutBuilder::simple(tmp.join("s"), "linux", "amd64", "x");
    let m = Mount::new(&tmp.join("mnt"), &[s.root.to_str().unwrap()]);
    let pid = daemon_pid(&m.dir);
    (m, pid)
}

#[test]
fn foreground_daemon_unmounts_and_exits_0_on_sigterm_and_sigint() {
    let tmp = tempfile::tempdir().unwrap();
    let s = LayoutBuilder::simple(tmp.path().join("s"), "linux", "amd64", "x");
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let mnt = tmp.path().join(format!("mnt{signal}"));
        fs::create_dir(&mnt).unwrap();
        let before = fs::metadata(&mnt)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::dev(&m));
        let mut child = Command::new(bin())
            .args(["mount", "-f"])
            .arg(&mnt)
            .arg(&s.root)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_mounted(&mnt, before, &mut child);
        assert_eq!(
            fs::read(mnt.join("oci-layout")).unwrap(),
            br#"{"imageLayoutVersion":"1.0.0"}"#
        );
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "signal {signal}");
        assert!(!is_mounted(&mnt), "signal {signal}: still mounted");
    }
}

#[test]
fn detached_daemon_unmounts_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, pid) = mounted(tmp.path());
    let mnt = m.dir.clone();
    // SAFETY: plain kill(2).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    wait_for(
        "the daemon to unmount and exit",
        Duration::from_secs(10),
        || !is_mounted(&mnt) && !alive(pid),
    );
}

#[test]
fn umount_waits_for_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let s = LayoutBuilder::simple(tmp.path().join("s"), "linux", "amd64", "x");
    let mnt = tmp.path().join("mnt");
    let log = tmp.path().join("daemon.log");
    let m = Mount::new(
        &mnt,
        &[
            s.root.to_str().unwrap(),
            "-v",
            "--log-file",
            log.to_str().unwrap(),
        ],
    );
    let pid = daemon_pid(&m.dir);
    assert!(alive(pid));
    let out = ocimux(&["umount", mnt.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!alive(pid), "umount returned before the daemon exited");
    assert!(!is_mounted(&mnt));
    let log = fs::read_to_string(&log).unwrap();
    assert!(
        log.contains(&format!(
            "mounted {}",
            fs::canonicalize(tmp.path()).unwrap().join("mnt").display()
        )),
        "{log}"
    );

    // Not (or no longer) an ocimux mount: a distinct exit code.
    let out = ocimux(&["umount", mnt.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ocimux(&["umount", "/proc"]);
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn umount_of_a_busy_mount_fails_and_lazy_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, pid) = mounted(tmp.path());
    let mnt = m.dir.clone();
    let open = fs::File::open(m.path("index.json")).unwrap();
    let out = ocimux(&["umount", mnt.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("busy"));
    assert!(is_mounted(&mnt));
    // Lazy: detached at once, the daemon serves the open file until it is closed.
    let out = ocimux(&["umount", "--lazy", mnt.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&mnt));
    assert!(alive(pid));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut &open, &mut text).unwrap();
    assert!(text.contains("index.v1+json"), "{text}");
    drop(open);
    wait_for("the daemon to exit", Duration::from_secs(10), || {
        !alive(pid)
    });
    assert!(!is_mounted(&mnt));
}

#[test]
fn an_unprivileged_user_mounts_and_unmounts_through_fusermount3() {
    require_tool("setpriv");
    require_tool("fusermount3");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata("/dev/fuse").unwrap().permissions());
    assert_eq!(
        mode & 0o006,
        0o006,
        "/dev/fuse is {mode:o}, not usable by other users: run scripts/deps.sh"
    );
    let tmp = tempfile::tempdir().unwrap();
    let open_up = |p: &Path| {
        fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap()
    };
    open_up(tmp.path());
    let s = LayoutBuilder::simple(tmp.path().join("s"), "linux", "amd64", "x");
    for entry in [
        s.root.clone(),
        s.root.join("blobs"),
        s.root.join("blobs/sha256"),
    ] {
        open_up(&entry);
    }
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::chown(&mnt, Some(NOBODY), Some(NOBODY)).unwrap();
    let as_nobody = |args: &[&str]| nobody(bin()).args(args).output().unwrap();
    let out = as_nobody(&["mount", mnt.to_str().unwrap(), s.root.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = daemon_pid(&mnt);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "{status}"
    );
    // Without allow_other, only the mounting user may look inside (not even root).
    let denied = fs::metadata(mnt.join("index.json")).unwrap_err();
    assert_eq!(denied.raw_os_error(), Some(libc::EACCES), "{denied}");
    let stat = nobody("stat")
        .args(["-c", "%u %a"])
        .arg(mnt.join("index.json"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stat.stdout).trim(), "65534 444");
    let out = as_nobody(&["umount", mnt.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&mnt));
    assert!(!alive(pid));
}
