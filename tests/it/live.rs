//! Live sources: a rebuilt per-arch image shows up in the mount, and readers
//! never see a half state.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use ocimux::oci::digest::Digest;
use ocimux::testing::testutil::LayoutBuilder;
use serde_json::{Value, json};

/// The generated index blob the mount's index.json points at.
fn index_of(m: &Mount) -> (String, Value) {
    let entry = &json_file(&m.path("index.json"))["manifests"][0];
    let h = hex(entry);
    let index = json_file(&m.path(&format!("blobs/sha256/{h}")));
    (h, index)
}

/// umoci's rebuild of an image: unpack, add a file, repack (new layer, new config).
fn rebuild(layout: &Path, stamp: &str) {
    let image = format!("{}:latest", layout.display());
    let bundle = layout.with_extension(format!("bundle-{stamp}"));
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    fs::write(bundle.join("rootfs/etc/rebuilt"), stamp).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    fs::remove_dir_all(&bundle).unwrap();
}

#[test]
fn a_rebuilt_source_shows_up_and_old_readers_keep_their_bytes() {
    require_tool("skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, _, m) = two_arch_mount(tmp.path(), "v1");
    let (old_hex, old_index) = index_of(&m);
    let old_amd64 = hex(&old_index["manifests"][0]);
    // A reader that opened the old index blob before the rebuild.
    let old_fd = fs::File::open(m.path(&format!("blobs/sha256/{old_hex}"))).unwrap();

    rebuild(&amd64, "v2");
    let changed = Instant::now();
    let new_amd64 = json_file(&amd64.join("index.json"))["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    assert_ne!(new_amd64, old_amd64);
    wait_for(
        "the rebuilt manifest in the mount's index",
        Duration::from_secs(2),
        || hex(&index_of(&m).1["manifests"][0]) == new_amd64,
    );
    eprintln!("rebuild visible after {:?}", changed.elapsed());
    let (new_hex, new_index) = index_of(&m);
    assert_eq!(
        hex(&new_index["manifests"][1]),
        hex(&old_index["manifests"][1]),
        "arm64 unchanged"
    );

    // The old handle reads the old index whole; the old blob is still there by name.
    let mut old = Vec::new();
    std::io::Read::read_to_end(&mut &old_fd, &mut old).unwrap();
    assert_eq!(Digest::sha256_of(&old).encoded(), old_hex);
    assert_eq!(
        sha256_file(&m.path(&format!("blobs/sha256/{old_hex}"))).encoded(),
        old_hex
    );
    drop(old_fd);
    // Listing shows the new tree only.
    let names: Vec<String> = fs::read_dir(m.path("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.contains(&new_hex) && !names.contains(&old_hex));

    // skopeo copies the new image.
    let copied = skopeo_copy_all(&m.dir, &tmp.path().join("copy"), "latest");
    assert_eq!(Digest::sha256_of(&copied).encoded(), new_hex);
}

#[test]
fn a_non_atomic_rewrite_of_index_json_never_shows_a_half_state() {
    let tmp = tempfile::tempdir().unwrap();
    let b = LayoutBuilder::new(tmp.path().join("s"));
    let m1 = b.image(json!({"os": "linux", "architecture": "amd64"}), &[b"one"]);
    let m2 = b.image(
        json!({"os": "linux", "architecture": "amd64"}),
        &[b"two", b"three"],
    );
    b.index(&[(m1.clone(), Some("latest"))]);
    let doc =
        |m: &Value| serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [m]})).unwrap();
    let (a, z) = (doc(&m1), doc(&m2));
    let m = Mount::new(&tmp.path().join("mnt"), &[b.root.to_str().unwrap()]);

    // A writer truncates index.json and writes it in two slow halves, again and again.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, stop) = (b.root.join("index.json"), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let bytes = if n % 2 == 0 { &z } else { &a };
                // Pauses longer than the watcher's settle time, so that it does
                // try to compose the truncated and the half-written file.
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&path)
                    .unwrap();
                std::thread::sleep(Duration::from_millis(150));
                let half = bytes.len() / 2;
                std::io::Write::write_all(&mut f, &bytes[..half]).unwrap();
                std::thread::sleep(Duration::from_millis(150));
                std::io::Write::write_all(&mut f, &bytes[half..]).unwrap();
                drop(f);
                std::thread::sleep(Duration::from_millis(300));
                n += 1;
            }
            n
        })
    };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let (_, index) = index_of(&m);
        let manifest = &index["manifests"][0];
        seen.insert(hex(manifest));
        // Everything it names exists and hashes right.
        let mf = m.path(&format!("blobs/sha256/{}", hex(manifest)));
        assert_eq!(sha256_file(&mf).encoded(), hex(manifest));
        let doc = json_file(&mf);
        for d in doc["layers"]
            .as_array()
            .unwrap()
            .iter()
            .chain([&doc["config"]])
        {
            assert_eq!(
                sha256_file(&m.path(&format!("blobs/sha256/{}", hex(d)))).encoded(),
                hex(d)
            );
        }
        std::thread::sleep(Duration::from_millis(60));
    }
    stop.store(true, Ordering::Relaxed);
    let rewrites = writer.join().unwrap();
    assert!(rewrites >= 4, "only {rewrites} rewrites happened");
    assert_eq!(
        seen.len(),
        2,
        "both versions should have been served: {seen:?}"
    );
}

#[test]
fn skopeo_copies_complete_while_the_source_is_rebuilt_10_times() {
    require_tool("skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, _, m) = two_arch_mount(tmp.path(), "c0");
    let done = Arc::new(AtomicBool::new(false));
    let builder = {
        let (amd64, done) = (amd64.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 1..=10 {
                rebuild(&amd64, &format!("c{i}"));
                std::thread::sleep(Duration::from_millis(50));
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    let mut copies = 0;
    let mut indexes = std::collections::BTreeSet::new();
    while !done.load(Ordering::Relaxed) || copies < 3 {
        let out = tmp.path().join(format!("copy{copies}"));
        let raw = try_skopeo_copy_all(&m.dir, &out, "latest")
            .unwrap_or_else(|e| panic!("copy {copies} failed: {e}"));
        indexes.insert(Digest::sha256_of(&raw));
        fs::remove_dir_all(&out).unwrap();
        copies += 1;
    }
    builder.join().unwrap();
    assert!(
        indexes.len() >= 2,
        "{copies} copies saw only {} image(s)",
        indexes.len()
    );
    eprintln!(
        "{copies} copies during 10 rebuilds, {} distinct images",
        indexes.len()
    );
}

#[test]
fn a_vanished_source_keeps_the_last_snapshot_and_static_ignores_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let live = LayoutBuilder::simple(tmp.path().join("live"), "linux", "amd64", "a");
    let fixed = LayoutBuilder::simple(tmp.path().join("fixed"), "linux", "amd64", "b");
    let log = tmp.path().join("m.log");
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &[
            live.root.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ],
    );
    let s = Mount::new(
        &tmp.path().join("mnt-static"),
        &[fixed.root.to_str().unwrap(), "--static"],
    );
    // A live twin of the static mount: when it shows a change, the static one
    // has had every chance to follow it too.
    let twin = Mount::new(
        &tmp.path().join("mnt-twin"),
        &[fixed.root.to_str().unwrap()],
    );
    let (before, index) = index_of(&m);
    let (static_before, _) = index_of(&s);
    let manifest = json_file(&m.path(&format!("blobs/sha256/{}", hex(&index["manifests"][0]))));
    let layer = m.path(&format!("blobs/sha256/{}", hex(&manifest["layers"][0])));
    let config = manifest["config"].clone();
    // The source vanishes: the last snapshot is still served; opening a blob
    // whose file is gone fails cleanly. (The snapshot holds the source's
    // directory open, so the moved directory's files would still be served:
    // these two are deleted.)
    let moved = tmp.path().join("moved");
    fs::rename(&live.root, &moved).unwrap();
    let gone = [hex(&config), hex(&manifest["layers"][0])];
    let saved: Vec<Vec<u8>> = gone
        .iter()
        .map(|h| fs::read(moved.join("blobs/sha256").join(h)).unwrap())
        .collect();
    for h in &gone {
        fs::remove_file(moved.join("blobs/sha256").join(h)).unwrap();
    }
    // Rewrite the static source meanwhile: it must not be followed.
    let m2 = fixed.image(
        json!({"os": "linux", "architecture": "amd64"}),
        &[b"new layer"],
    );
    fixed.index(&[(m2, Some("latest"))]);
    wait_for(
        "the live twin to follow the change",
        Duration::from_secs(10),
        || index_of(&twin).0 != static_before,
    );
    // And the live mount has seen its source vanish (not a guess from the
    // twin's timing: under load its rebuild may come later).
    wait_for("the mount to notice", Duration::from_secs(10), || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("does not compose"))
    });
    assert_eq!(index_of(&m).0, before);
    // A blob never looked up before is refused at lookup, one looked up before at open.
    let lookup = fs::metadata(m.path(&format!("blobs/sha256/{}", hex(&config)))).unwrap_err();
    assert_eq!(lookup.raw_os_error(), Some(libc::ENOENT), "{lookup}");
    let err = fs::File::open(&layer).map(drop).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    assert_eq!(index_of(&s).0, static_before, "--static followed a change");

    // It comes back (rebuilt): the mount follows again.
    for (h, bytes) in gone.iter().zip(&saved) {
        fs::write(moved.join("blobs/sha256").join(h), bytes).unwrap();
    }
    fs::rename(&moved, &live.root).unwrap();
    let m3 = live.image(json!({"os": "linux", "architecture": "amd64"}), &[b"back"]);
    live.index(&[(m3.clone(), Some("latest"))]);
    wait_for("the returned source", Duration::from_secs(3), || {
        hex(&index_of(&m).1["manifests"][0]) == hex(&m3)
    });
}

#[test]
fn a_replaced_archive_is_reindexed() {
    require_tool("tar");
    let tmp = tempfile::tempdir().unwrap();
    let layout = umoci_layout(tmp.path(), "amd64", "a1");
    let archive = tmp.path().join("app.tar");
    let pack = |to: &Path| {
        run(Command::new("tar")
            .arg("-cf")
            .arg(to)
            .arg(".")
            .current_dir(&layout))
    };
    pack(&archive);
    let m = Mount::new(&tmp.path().join("mnt"), &[archive.to_str().unwrap()]);
    let before = hex(&index_of(&m).1["manifests"][0]);
    let old_blobs = rehash_blobs(&m.dir);

    // Rebuilt, re-archived, and moved over the old archive as a build would.
    rebuild(&layout, "a2");
    let next = tmp.path().join("app.tar.new");
    pack(&next);
    fs::rename(&next, &archive).unwrap();
    let want = hex(&json_file(&layout.join("index.json"))["manifests"][0]);
    assert_ne!(want, before);
    wait_for("the re-indexed archive", Duration::from_secs(2), || {
        hex(&index_of(&m).1["manifests"][0]) == want
    });
    for (name, digest) in rehash_blobs(&m.dir) {
        assert_eq!(digest.encoded(), name);
    }
    // The old snapshot's blobs, still reachable by name, read from the old
    // archive at its offsets, not from the new one that now has its path
    // (the kernel's cached pages are dropped so that the daemon serves them).
    drop_caches();
    for (name, _) in old_blobs {
        let path = m.path(&format!("blobs/sha256/{name}"));
        assert_eq!(sha256_file(&path).encoded(), name);
    }
}

#[test]
fn a_re_pointed_latest_symlink_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = LayoutBuilder::simple(
        tmp.path().join("app-amd64-1.rootfs-oci"),
        "linux",
        "amd64",
        "one",
    );
    let v2 = LayoutBuilder::simple(
        tmp.path().join("app-amd64-2.rootfs-oci"),
        "linux",
        "amd64",
        "two",
    );
    let link = tmp.path().join("app-amd64-latest-oci");
    std::os::unix::fs::symlink("app-amd64-1.rootfs-oci", &link).unwrap();
    let m = Mount::new(&tmp.path().join("mnt"), &[link.to_str().unwrap()]);
    let want = |b: &LayoutBuilder| hex(&json_file(&b.root.join("index.json"))["manifests"][0]);
    assert_eq!(hex(&index_of(&m).1["manifests"][0]), want(&v1));
    // What `ln -sfn` does: a new link, renamed over the old one.
    let tmp_link = tmp.path().join(".latest.tmp");
    std::os::unix::fs::symlink("app-amd64-2.rootfs-oci", &tmp_link).unwrap();
    fs::rename(&tmp_link, &link).unwrap();
    wait_for("the re-pointed symlink", Duration::from_secs(2), || {
        hex(&index_of(&m).1["manifests"][0]) == want(&v2)
    });
    for (name, digest) in rehash_blobs(&m.dir) {
        assert_eq!(digest.encoded(), name);
    }
}

/// Other bytes renamed over a blob the mount served are a new claim: refused
/// (EIO) before and after the rebuild that records them, while the same
/// bytes in a new file are served again once hashed.
#[test]
fn other_bytes_renamed_over_a_served_blob_are_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let old = vec![7u8; 1 << 20];
    let (b, layer) = LayoutBuilder::one_layer(tmp.path().join("src"), &old);
    let m = Mount::new(&tmp.path().join("mnt"), &[b.root.to_str().unwrap()]);
    let served = m.path(&format!("blobs/sha256/{}", hex(&layer)));
    assert_eq!(fs::read(&served).unwrap(), old);
    let swapped = snapshot_time(&m.dir);
    let forged = tmp.path().join("src/forged");
    fs::write(&forged, vec![8u8; 1 << 20]).unwrap();
    fs::rename(&forged, b.blob_path(&layer)).unwrap();
    wait_for("the rebuild", Duration::from_secs(10), || {
        snapshot_time(&m.dir) != swapped
    });
    drop_caches();
    let err = fs::read(&served).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let swapped = snapshot_time(&m.dir);
    fs::write(&forged, &old).unwrap();
    fs::rename(&forged, b.blob_path(&layer)).unwrap();
    wait_for("the rebuild", Duration::from_secs(10), || {
        snapshot_time(&m.dir) != swapped
    });
    assert_eq!(fs::read(&served).unwrap(), old);
}
