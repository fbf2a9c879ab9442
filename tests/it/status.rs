//! Issue 25: `ocimux status` shows what every mount and server is doing —
//! sources, the index served and when it was built, and a source that no
//! longer composes (the mount keeps its last good snapshot, and says so) —
//! from state files private to the daemon's user, escaping what a source's
//! path holds.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::common::*;
use ocimux::testing::testutil::LayoutBuilder;
use serde_json::Value;

/// `ocimux status --json TARGET`: the one daemon there.
fn status_of(target: &Path) -> Value {
    let out = ocimux(&["status", "--json", target.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
    all[0].clone()
}

#[test]
fn a_broken_source_shows_in_status_while_the_last_snapshot_serves() {
    let tmp = tempfile::tempdir().unwrap();
    // A directory name a source's owner chose, with a newline and an escape.
    let odd = tmp.path().join("build\n\x1b[31mred");
    fs::create_dir(&odd).unwrap();
    let s = LayoutBuilder::simple(odd.join("s"), "linux", "amd64", "x");
    let m = Mount::new(&tmp.path().join("mnt"), &[s.root.to_str().unwrap()]);
    let served = fs::read(m.path("index.json")).unwrap();
    let v = status_of(&m.dir);
    assert_eq!(v["kind"], "mount");
    assert_eq!(v["mountpoint"], m.dir.to_str().unwrap());
    assert_eq!(v["sources"][0], s.root.to_str().unwrap());
    assert_eq!(v["pid"].as_i64().unwrap(), i64::from(daemon_pid(&m.dir)));
    assert!(v["failing"].is_null(), "{v}");
    let index: Value = serde_json::from_slice(&served).unwrap();
    assert_eq!(v["index"], index["manifests"][0]["digest"]);

    // A bad index.json written into the source: the mount keeps serving
    // the last good snapshot, and status says why and since when.
    let good = fs::read(s.root.join("index.json")).unwrap();
    fs::write(s.root.join("index.json"), b"{ not json").unwrap();
    let mut now = Value::Null;
    wait_for(
        "status to show the failure",
        Duration::from_secs(20),
        || {
            now = status_of(&m.dir);
            !now["failing"].is_null()
        },
    );
    let error = now["failing"]["error"].as_str().unwrap();
    assert!(error.contains("index.json"), "{error}");
    assert!(now["failing"]["since"].as_u64().unwrap() >= now["built"].as_u64().unwrap());
    assert_eq!(fs::read(m.path("index.json")).unwrap(), served);
    let text = ocimux(&["status", m.dir.to_str().unwrap()]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("FAILING") && text.contains("index.json"),
        "{text}"
    );
    assert!(
        !text.contains('\x1b') && text.contains("build\\n"),
        "{text}"
    );

    // Fixed: the failure clears.
    fs::write(s.root.join("index.json"), &good).unwrap();
    wait_for("the failure to clear", Duration::from_secs(20), || {
        status_of(&m.dir)["failing"].is_null()
    });
}

#[test]
fn state_is_private_and_other_users_see_only_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, pid) = one_image_mounted(tmp.path(), &[]);
    let file = Path::new("/run/ocimux").join(format!("{pid}.json"));
    let meta = fs::metadata(&file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir = fs::metadata("/run/ocimux").unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
    // Another user: nothing of root's.
    let out = nobody(bin())
        .env_remove("XDG_RUNTIME_DIR")
        .args(["status", "--json"])
        .output()
        .unwrap();
    let theirs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(theirs, Value::Array(vec![]), "{out:?}");
    // Nothing at a path: exit 1, one line.
    let out = ocimux(&["status", tmp.path().join("nowhere").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    // Unmounted: its state is gone.
    drop(m);
    assert!(!file.exists());
}

/// Another user's state file never speaks for a mount: one that names
/// root's mountpoint and a live process of that user (start time and all)
/// does not make a dead mount look served — a new mount there cleans it,
/// `ocimux umount` removes it without waiting for that process.
#[test]
fn another_users_state_file_never_names_the_daemon() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    let tmp = tempfile::tempdir().unwrap();
    let (m, pid) = one_image_mounted(tmp.path(), &[]);
    let mnt = m.dir.clone();
    std::mem::forget(m);
    /// Killed however the test ends.
    struct Sleeper(std::process::Child);
    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let sleeper = Sleeper(nobody("sleep").arg("60").spawn().unwrap());
    let forged_pid = sleeper.0.id();
    let start = ocimux::process::state::start_time(forged_pid as i32).unwrap();
    let dir = Path::new("/tmp/ocimux-65534");
    let _ = fs::create_dir(dir);
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
    let file = dir.join(format!("{forged_pid}.json"));
    let forged = serde_json::json!({
        "kind": "mount", "pid": forged_pid, "start": start,
        "mountpoint": mnt.to_str().unwrap(), "sources": ["/forged"],
    });
    fs::write(&file, forged.to_string()).unwrap();
    for p in [dir, file.as_path()] {
        assert!(
            Command::new("chown")
                .arg("65534:65534")
                .arg(p)
                .status()
                .unwrap()
                .success()
        );
    }
    // Root's status shows the one real daemon there, not the forged claim.
    let shown = ocimux(&["status", "--json", mnt.to_str().unwrap()]);
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown.as_array().map(Vec::len), Some(1), "{shown}");
    assert_eq!(shown[0]["pid"].as_i64(), Some(i64::from(pid)));
    // A dead mount: its daemon and the watchdog that would unmount it killed.
    let watchdog =
        String::from_utf8(run(Command::new("pgrep").args(["-P", &pid.to_string()])).stdout)
            .unwrap()
            .trim()
            .parse::<i32>()
            .unwrap();
    for p in [watchdog, pid] {
        // SAFETY: plain kill(2).
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    wait_for("the daemon to die", Duration::from_secs(5), || {
        !ocimux::process::lifecycle::process_alive(pid)
    });
    let source = tmp.path().join("s");
    let mounted = ocimux(&["mount", mnt.to_str().unwrap(), source.to_str().unwrap()]);
    let removed = ocimux(&["umount", "--timeout", "5", mnt.to_str().unwrap()]);
    drop(sleeper);
    let _ = fs::remove_file(&file);
    assert!(
        mounted.status.success(),
        "the dead mount was cleaned: {mounted:?}"
    );
    assert!(removed.status.success(), "{removed:?}");
    assert!(!is_mounted(&mnt));
}

/// The datagrams on `receiver` until one contains `part` (within 20 s).
fn syslog_until(receiver: &std::os::unix::net::UnixDatagram, part: &str) -> Vec<String> {
    receiver
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16384];
    while !got.iter().any(|d: &String| d.contains(part)) {
        let n = receiver
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no datagram with {part:?} ({e}); got {got:?}"));
        got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    got
}

/// A detached mount without --log-file logs to the system log (here a
/// private receiver named by OCIMUX_SYSLOG_SOCKET): facility daemon, its
/// level as the priority, tagged with the daemon's pid, what a source's
/// path holds escaped; as JSON objects with --log-format json.
#[test]
fn a_detached_mount_without_a_log_file_logs_to_the_system_log() {
    let tmp = tempfile::tempdir().unwrap();
    let odd = tmp.path().join("build\n\x1b[31mred");
    fs::create_dir(&odd).unwrap();
    for (i, format) in ["text", "json"].into_iter().enumerate() {
        let socket = tmp.path().join(format!("log{i}"));
        let receiver = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
        let s = LayoutBuilder::simple(odd.join(format!("s{i}")), "linux", "amd64", "x");
        let mnt = tmp.path().join(format!("mnt{i}"));
        fs::create_dir(&mnt).unwrap();
        let out = std::process::Command::new(bin())
            .args(["-v", "--log-format", format, "mount"])
            .arg(&mnt)
            .arg(&s.root)
            .env(ocimux::process::syslog::SOCKET_ENV, &socket)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let m = Mount { dir: mnt.clone() };
        let pid = daemon_pid(&mnt);
        fs::write(s.root.join("index.json"), b"{ not json").unwrap();
        let got = syslog_until(&receiver, "index.json");
        let failure = got.iter().find(|d| d.contains("index.json")).unwrap();
        let tag = format!("<28>ocimux[{pid}]: ");
        let text = failure
            .strip_prefix(&tag)
            .unwrap_or_else(|| panic!("{failure:?} has no {tag:?}"));
        assert!(!text.contains('\n') && !text.contains('\x1b'), "{text:?}");
        if format == "json" {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(v["level"], "warn");
            assert!(
                v["message"]
                    .as_str()
                    .unwrap()
                    .contains("build\n\x1b[31mred")
            );
        } else {
            assert!(text.contains("build\\n\\u{1b}[31mred"), "{text}");
        }
        drop(m);
    }
}
