//! Issue 16, trust round two, with real mounts and real users: what was
//! checked is what is used (log files, mountpoints, source roots and the
//! directories above them, export leftovers), permissions travel (ACLs,
//! symlinked blobs, later changes), and no request thread is held.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::*;
use ocimux::testutil::LayoutBuilder;

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

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
