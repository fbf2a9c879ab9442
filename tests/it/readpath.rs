//! Both read paths, for real: kernel passthrough and daemon reads
//! (`--no-passthrough`). Every blob re-hashed with read(2) and with mmap(2),
//! reads past EOF, reads after the source file was replaced; the daemon's own
//! counters (logged at unmount) prove which path served the bytes.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::common::*;
use ocimux::oci::digest::Digest;
use ocimux::testing::testutil::LayoutBuilder;
use serde_json::json;

/// Hashes a file through mmap(2).
fn mmap_hash(path: &Path) -> Digest {
    let file = fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    if len == 0 {
        return Digest::sha256_of(b"");
    }
    // SAFETY: a private read-only mapping of a file we keep open; unmapped below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        ptr,
        libc::MAP_FAILED,
        "mmap {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: the mapping is `len` readable bytes.
    let digest = Digest::sha256_of(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) });
    // SAFETY: unmapping what was mapped above.
    unsafe { libc::munmap(ptr, len) };
    digest
}

/// (read requests, bytes read by the daemon, passthrough opens, daemon opens) from the log.
fn stats(log: &Path) -> (u64, u64, u64, u64) {
    let text = fs::read_to_string(log).unwrap();
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("stats: "))
        .unwrap_or_else(|| panic!("no stats in log:\n{text}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1], n[2], n[3])
}

fn exercise(passthrough: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let b = LayoutBuilder::new(tmp.path().join("s"));
    let big: Vec<u8> = (0..(3 * 1024 * 1024 + 17u32))
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect();
    let layer = b.blob("application/vnd.oci.image.layer.v1.tar", &big);
    let empty = b.blob("application/vnd.oci.image.layer.v1.tar", b"");
    let config = b.json_blob(
        "application/vnd.oci.image.config.v1+json",
        &json!({"os": "linux", "architecture": "amd64"}),
    );
    let m = b.json_blob(
        ocimux::oci::document::OCI_MANIFEST,
        &json!({"schemaVersion": 2, "config": config, "layers": [layer.clone(), empty]}),
    );
    b.index(&[(m, None)]);
    let before = tree_state(&b.root);

    let log = tmp.path().join("log");
    let mut args = vec![
        b.root.to_str().unwrap(),
        "-v",
        "--log-file",
        log.to_str().unwrap(),
    ];
    if !passthrough {
        args.push("--no-passthrough");
    }
    let mnt = tmp.path().join("mnt");
    let m = Mount::new(&mnt, &args);
    let blobs = rehash_blobs(&m.dir);
    assert_eq!(blobs.len(), 5);
    for (name, digest) in &blobs {
        assert_eq!(digest.encoded(), name, "read(2) of {name}");
        assert_eq!(
            mmap_hash(&m.path(&format!("blobs/sha256/{name}"))).encoded(),
            name,
            "mmap of {name}"
        );
    }

    // Past EOF, straddling EOF, and at odd offsets of the big layer.
    let hex = layer["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let path = m.path(&format!("blobs/sha256/{hex}"));
    let f = fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 4096];
    let len = big.len() as u64;
    assert_eq!(f.read_at(&mut buf, len).unwrap(), 0);
    assert_eq!(f.read_at(&mut buf, len + 1_000_000).unwrap(), 0);
    assert_eq!(f.read_at(&mut buf, len - 10).unwrap(), 10);
    assert_eq!(&buf[..10], &big[big.len() - 10..]);
    assert_eq!(f.read_at(&mut buf, 1_000_003).unwrap(), 4096);
    assert_eq!(&buf[..], &big[1_000_003..1_004_099]);

    // The source file is replaced (same bytes, new inode), as a rebuild would:
    // the open handle and new opens both read it whole.
    let src = b.blob_path(&layer);
    let tmp_copy = src.with_extension("new");
    fs::write(&tmp_copy, &big).unwrap();
    fs::rename(&tmp_copy, &src).unwrap();
    let mut again = Vec::new();
    std::io::Read::read_to_end(&mut &f, &mut again).unwrap();
    assert_eq!(
        Digest::sha256_of(&again).encoded(),
        hex,
        "open handle after replace"
    );
    assert_eq!(sha256_file(&path).encoded(), hex, "new open after replace");
    drop(f);
    let replaced = tree_state(&b.root);
    drop(m);

    let (requests, daemon_bytes, pt_opens, daemon_opens) = stats(&log);
    if passthrough {
        assert!(
            pt_opens >= 8,
            "passthrough opens: {pt_opens} (does this kernel offer FUSE_PASSTHROUGH? needs Linux >= 6.9 and root)"
        );
        assert_eq!(daemon_opens, 0);
        assert_eq!(
            daemon_bytes, 0,
            "{requests} read requests reached the daemon for source blobs"
        );
    } else {
        assert_eq!(pt_opens, 0);
        // Re-reads and mmap come from the kept page cache: each byte at least once.
        assert!(daemon_bytes >= len, "daemon read only {daemon_bytes} bytes");
    }
    // Nothing but our own replacement touched the source.
    let changed: Vec<_> = before
        .keys()
        .filter(|k| before.get(*k) != replaced.get(*k))
        .collect();
    assert!(
        changed
            .iter()
            .all(|p| p.ends_with(hex) || p.ends_with("sha256")),
        "{changed:?}"
    );
}

#[test]
fn passthrough_read_path_serves_every_byte() {
    exercise(true);
}

#[test]
fn daemon_read_path_serves_every_byte() {
    exercise(false);
}

/// A daemon without CAP_SYS_ADMIN (a user's own mount) is offered
/// passthrough by the kernel but may not register backing files (EPERM): the
/// first registration fails, the mount says so once, and every blob is served
/// by daemon reads instead. (This used a source on another ocimux mount,
/// which is now refused outright.)
#[test]
fn a_failed_passthrough_registration_falls_back_once() {
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let b = LayoutBuilder::new(tmp.path().join("s"));
    let m1 = b.image(
        json!({"os": "linux", "architecture": "amd64"}),
        &[b"one", b"two"],
    );
    let m2 = b.image(json!({"os": "linux", "architecture": "arm64"}), &[b"three"]);
    let list = b.json_blob(
        ocimux::oci::document::OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": ocimux::oci::document::OCI_INDEX, "manifests": [m1, m2]}),
    );
    b.index(&[(list, None)]);
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    let mnt = home.join("mnt");
    fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::chown(&mnt, Some(NOBODY), Some(NOBODY)).unwrap();
    let log = home.join("log");
    run(nobody(bin())
        .args([
            "mount",
            mnt.to_str().unwrap(),
            b.root.to_str().unwrap(),
            "-v",
        ])
        .arg("--log-file")
        .arg(&log));
    let hashed = run(nobody("sh")
        .args(["-c", "cd \"$1\"/blobs/sha256 && sha256sum *", "sh"])
        .arg(&mnt));
    let text = String::from_utf8_lossy(&hashed.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        1 + 2 * 2 + 3,
        "index + 2 manifests and configs + 3 layers: {text}"
    );
    for line in lines {
        let (sum, name) = line.split_once("  ").unwrap();
        assert_eq!(sum, name, "{line}");
    }
    run(nobody(bin()).args(["umount", mnt.to_str().unwrap()]));
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("passthrough registration failed").count(),
        1,
        "{text}"
    );
    let (_, daemon_bytes, pt_opens, daemon_opens) = stats(&log);
    assert_eq!(pt_opens, 0);
    assert!(
        daemon_opens >= 7 && daemon_bytes > 0,
        "{daemon_opens} opens, {daemon_bytes} bytes"
    );
}
