//! Issue 9, cases 6 to 8, with real mounts: what clients and sources can
//! grow in the daemon stays bounded: fds, retired snapshots, inotify watches.

use std::fs;
use std::time::Duration;

use crate::common::*;
use ocimux::testing::testutil::LayoutBuilder;
use serde_json::json;

/// The daemon's open fds.
fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// The daemon's resident memory, KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The number of inotify watches the daemon holds (from fdinfo).
fn watch_count(pid: i32) -> usize {
    let mut n = 0;
    for e in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let e = e.unwrap();
        if fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains("inotify")) {
            let info = fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                e.file_name().to_string_lossy()
            ))
            .unwrap();
            n += info
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count();
        }
    }
    n
}

/// Case 6: 6,000 opens held by one process cost the daemon a bounded number
/// of fds (one shared fd per source file version), on the daemon read path,
/// for a directory and an archive source.
#[test]
fn daemon_fds_do_not_grow_with_client_opens() {
    require_tool("tar");
    let tmp = tempfile::tempdir().unwrap();
    let (b, layer) = LayoutBuilder::one_layer(tmp.path().join("s"), b"shared layer bytes");
    let tar = tmp.path().join("s.tar");
    run(std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .current_dir(&b.root));
    for (name, src) in [("dir", b.root.clone()), ("archive", tar)] {
        let m = Mount::new(
            &tmp.path().join(format!("mnt-{name}")),
            &[src.to_str().unwrap(), "--no-passthrough"],
        );
        let pid = daemon_pid(&m.dir);
        let before = fd_count(pid);
        let path = m.path(&format!("blobs/sha256/{}", hex(&layer)));
        // The opens are held by a child shell, not by this process: the tests
        // share this process, and every child another test forks would
        // inherit (until exec) 6,000 fds on this mount.
        let mut holder = std::process::Command::new("bash")
            .args([
                "-c",
                r#"ulimit -n 8192 && for i in $(seq 6000); do exec {fd}<"$1" || exit 1; done
                   head -c 6 <&$fd && echo && { read -r _ || true; }"#,
                "hold",
            ])
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(
            line, "shared\n",
            "{name}: the last of 6,000 opens reads the blob"
        );
        let during = fd_count(pid);
        drop(holder.stdin.take());
        assert!(holder.wait().unwrap().success());
        eprintln!("{name}: daemon fds {before} before, {during} with 6,000 opens held");
        assert!(during <= before + 2, "{name}: {before} -> {during} fds");
    }
}

/// Case 7: 80 snapshot swaps of a 2,000-layer source keep at most 16 retired
/// snapshots: the daemon's memory after 80 swaps is about what it was after 20.
#[test]
fn retired_snapshots_stay_bounded_over_80_swaps() {
    let tmp = tempfile::tempdir().unwrap();
    let b = LayoutBuilder::new(tmp.path().join("s"));
    let layers: Vec<Vec<u8>> = (0..2000)
        .map(|i| format!("layer {i}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    let images: Vec<_> = ["amd64", "arm64"]
        .iter()
        .map(|a| b.image(json!({"os": "linux", "architecture": a}), &refs))
        .collect();
    b.index(&[(images[0].clone(), None)]);
    let m = Mount::new(&tmp.path().join("mnt"), &[b.root.to_str().unwrap()]);
    let pid = daemon_pid(&m.dir);
    let mut rss_at_20 = 0;
    for round in 1..=80 {
        let before = snapshot_time(&m.dir);
        // Rewritten atomically, alternating between the two images.
        let next = tmp.path().join("index.json.new");
        let img = &images[round % 2];
        fs::write(
            &next,
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [img]})).unwrap(),
        )
        .unwrap();
        fs::rename(&next, b.root.join("index.json")).unwrap();
        wait_for("a swap", Duration::from_secs(10), || {
            snapshot_time(&m.dir) != before
        });
        if round == 20 {
            rss_at_20 = rss_kib(pid);
        }
    }
    let rss_at_80 = rss_kib(pid);
    eprintln!("daemon RSS: {rss_at_20} KiB after 20 swaps, {rss_at_80} KiB after 80");
    assert!(
        rss_at_80 < rss_at_20 + 8 * 1024,
        "{rss_at_20} KiB after 20 swaps, {rss_at_80} KiB after 80"
    );
    for (name, digest) in rehash_blobs(&m.dir) {
        assert_eq!(digest.encoded(), name);
    }
}

/// Case 8: 30 re-pointings of a `…-latest-oci` symlink to new build
/// directories leave watches only on what the current build uses.
#[test]
fn watches_follow_a_re_pointed_symlink_without_piling_up() {
    let tmp = tempfile::tempdir().unwrap();
    let link = tmp.path().join("app-latest-oci");
    let build = |i: usize| {
        let dir = tmp.path().join(format!("app-{i:03}"));
        LayoutBuilder::simple(&dir, "linux", "amd64", &format!("build {i}"));
        dir
    };
    std::os::unix::fs::symlink(build(0), &link).unwrap();
    let m = Mount::new(&tmp.path().join("mnt"), &[link.to_str().unwrap()]);
    let pid = daemon_pid(&m.dir);
    let first = watch_count(pid);
    for i in 1..=30 {
        let before = fs::read(m.path("index.json")).unwrap();
        let tmp_link = tmp.path().join("app-latest-oci.new");
        std::os::unix::fs::symlink(build(i), &tmp_link).unwrap();
        fs::rename(&tmp_link, &link).unwrap();
        wait_for("the new build", Duration::from_secs(5), || {
            fs::read(m.path("index.json")).unwrap() != before
        });
    }
    let last = watch_count(pid);
    eprintln!("inotify watches: {first} at first, {last} after 30 re-pointings");
    // The link's directory, the build and its blobs/ and blobs/sha256, and
    // (issue 16) each directory above the build, for its own attributes.
    let above = fs::canonicalize(tmp.path()).unwrap().ancestors().count();
    let bound = 4 + above;
    assert!(
        first <= bound && last <= bound,
        "{first} -> {last} watches, bound {bound}"
    );
}
