//! Issue 8, with real mounts: a mount never serves a byte from outside its
//! sources, never a byte that fails its name, and no source can wedge it.
//! (Refusals at mount time are in bad_input.rs.)

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use ocimux::oci::digest::Digest;
use ocimux::oci::document::OCI_MANIFEST;
use ocimux::testing::testutil::LayoutBuilder;
use serde_json::{Value, json};

/// The errno of reading `path` whole, or its bytes.
fn read(path: &Path) -> Result<Vec<u8>, i32> {
    fs::read(path).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// A source with one linux/amd64 image and layers `layers`, in a directory
/// everyone may search; returns the builder and the layer descriptors.
fn source(root: PathBuf, arch: &str, layers: &[&[u8]]) -> (LayoutBuilder, Vec<Value>) {
    let b = LayoutBuilder::new(root);
    let config = b.json_blob(
        "application/vnd.oci.image.config.v1+json",
        &json!({"os": "linux", "architecture": arch}),
    );
    let layers: Vec<Value> = layers
        .iter()
        .map(|l| b.blob("application/vnd.oci.image.layer.v1.tar", l))
        .collect();
    let m = b.json_blob(
        OCI_MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}),
    );
    b.index(&[(m, None)]);
    (b, layers)
}

/// Case 1: a layer swapped for a symlink to /etc/shadow after the mount is
/// never served, to root or to another user, and the rebuild keeps the last
/// good snapshot.
#[test]
fn a_layer_swapped_for_a_symlink_out_of_the_source_is_not_served() {
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let shadow = fs::read("/etc/shadow").unwrap();
    let (b, layers) = source(tmp.path().join("s"), "amd64", &[b"honest layer"]);
    let log = tmp.path().join("log");
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &[
            b.root.to_str().unwrap(),
            "-o",
            "allow_other",
            "--log-file",
            log.to_str().unwrap(),
        ],
    );
    let name = m.path(&format!("blobs/sha256/{}", hex(&layers[0])));
    assert_eq!(read(&name).unwrap(), b"honest layer");
    let src = b.blob_path(&layers[0]);
    fs::remove_file(&src).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", &src).unwrap();
    drop_caches();
    for _ in 0..3 {
        let got = read(&name).map(|b| b.len());
        assert_eq!(got, Err(libc::EIO), "root read");
        let out = nobody("cat").arg(&name).output().unwrap();
        assert!(!out.status.success());
        assert!(
            out.stdout.is_empty(),
            "{} bytes reached nobody",
            out.stdout.len()
        );
        assert_ne!(out.stdout, shadow);
    }
    // The rebuild the swap caused refuses the symlink and says why; reads
    // after it are refused still.
    wait_for(
        "the rebuild to refuse the symlink",
        Duration::from_secs(10),
        || {
            fs::read_to_string(&log)
                .is_ok_and(|t| t.contains("a symbolic link leads outside the source"))
        },
    );
    assert_eq!(
        read(&name).map(|b| b.len()),
        Err(libc::EIO),
        "root read after the rebuild"
    );
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("a symbolic link leads outside the source"),
        "the rebuild says why it keeps the last snapshot: {text}"
    );
    // Everything else is still served, and right.
    for (name, digest) in rehash_blobs_except(&m.dir, &hex(&layers[0])) {
        assert_eq!(digest.encoded(), name);
    }
}

/// Re-hashes every blob but `skip`.
fn rehash_blobs_except(root: &Path, skip: &str) -> Vec<(String, Digest)> {
    fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != skip)
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                sha256_file(&e.path()),
            )
        })
        .collect()
}

/// Case 2: a private source stays private through `allow_other`: its blobs
/// show its owner and read bits, and the kernel refuses what the source does.
#[test]
fn a_private_source_stays_private_through_allow_other() {
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let (private, p_layers) = source(tmp.path().join("private"), "amd64", &[b"secret layer"]);
    let (public, q_layers) = source(tmp.path().join("public"), "arm64", &[b"public layer"]);
    for dir in [
        public.root.clone(),
        public.root.join("blobs"),
        public.root.join("blobs/sha256"),
    ] {
        chmod(&dir, 0o755);
    }
    chmod(&private.root, 0o700);
    for e in fs::read_dir(private.root.join("blobs/sha256")).unwrap() {
        chmod(&e.unwrap().path(), 0o600);
    }
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &[
            private.root.to_str().unwrap(),
            public.root.to_str().unwrap(),
            "-o",
            "allow_other",
        ],
    );
    let secret = m.path(&format!("blobs/sha256/{}", hex(&p_layers[0])));
    let open = m.path(&format!("blobs/sha256/{}", hex(&q_layers[0])));
    let meta = fs::metadata(&secret).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o400));
    let meta = fs::metadata(&open).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o444);
    let out = nobody("cat").arg(&secret).output().unwrap();
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = nobody("cat").arg(&open).output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"public layer");
    // The owner (root) reads it; the generated files are readable by all.
    assert_eq!(read(&secret).unwrap(), b"secret layer");
    let out = nobody("cat").arg(m.path("index.json")).output().unwrap();
    assert!(out.status.success());
}

/// The bytes of a tar archive of `members`, `pad` padding members first (to
/// move every offset).
fn archive(members: &[(String, Vec<u8>)], pad: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..pad {
        tarw::member(&mut out, &format!("./pad{i}"), &vec![b'p'; 700], b'0');
    }
    for (name, data) in members {
        tarw::member(&mut out, name, data, b'0');
    }
    tarw::finish(&mut out);
    out
}

/// Case 3a: an archive regenerated in place (same inode, other offsets) is
/// never read at the old offsets: every read either hashes right or fails
/// with EIO, and after the rebuild every blob and a skopeo copy are right.
#[test]
fn an_archive_rewritten_in_place_never_serves_wrong_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let shared: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (b, layers) = source(tmp.path().join("layout"), "amd64", &[&shared, b"first"]);
    let first = layout_members(&b.root);
    let tar = tmp.path().join("app.tar");
    fs::write(&tar, archive(&first, 0)).unwrap();
    let m = Mount::new(&tmp.path().join("mnt"), &[tar.to_str().unwrap()]);
    let shared_name = m.path(&format!("blobs/sha256/{}", hex(&layers[0])));
    assert_eq!(
        Digest::sha256_of(&read(&shared_name).unwrap()).encoded(),
        hex(&layers[0])
    );
    let before = fs::read(m.path("index.json")).unwrap();

    // A rebuild adds an image layer; `tar cf` truncates and rewrites the same
    // inode, with every member elsewhere.
    let (b2, _) = source(tmp.path().join("layout"), "amd64", &[&shared, b"second"]);
    let mut second = layout_members(&b2.root);
    second.reverse();
    let ino = fs::metadata(&tar).unwrap().ino();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&tar)
        .unwrap();
    f.write_all(&archive(&second, 3)).unwrap();
    drop(f);
    assert_eq!(fs::metadata(&tar).unwrap().ino(), ino, "rewritten in place");
    let (mut right, mut refused) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        drop_caches();
        match read(&shared_name) {
            Ok(bytes) => {
                assert_eq!(
                    Digest::sha256_of(&bytes).encoded(),
                    hex(&layers[0]),
                    "wrong bytes under the shared layer's name"
                );
                right += 1;
            }
            Err(e) => {
                assert_eq!(e, libc::EIO);
                refused += 1;
            }
        }
        if fs::read(m.path("index.json")).unwrap() != before && right > 0 {
            break;
        }
    }
    assert_ne!(
        fs::read(m.path("index.json")).unwrap(),
        before,
        "rebuilt within 3 s"
    );
    eprintln!("reads during the rewrite: {right} right, {refused} refused with EIO");
    drop_caches();
    for (name, digest) in rehash_blobs(&m.dir) {
        assert_eq!(digest.encoded(), name);
    }
    skopeo_copy_all(&m.dir, &tmp.path().join("copy"), "latest");
}

/// Case 3b: a blob truncated in place (a non-atomic `cp` over it) is never
/// served short on the daemon read path, and once whole again it is served
/// whole with its right size.
#[test]
fn a_truncated_blob_is_refused_then_served_whole_again() {
    let tmp = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let (b, layers) = source(tmp.path().join("s"), "amd64", &[&big]);
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &[b.root.to_str().unwrap(), "--no-passthrough"],
    );
    let name = m.path(&format!("blobs/sha256/{}", hex(&layers[0])));
    assert_eq!(read(&name).unwrap().len(), big.len());
    let src = b.blob_path(&layers[0]);
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&src)
        .unwrap();
    drop_caches();
    assert_eq!(read(&name), Err(libc::EIO));
    fs::write(&src, &big).unwrap();
    wait_for("the whole blob again", Duration::from_secs(3), || {
        drop_caches();
        read(&name).is_ok_and(|b| b == big)
    });
    assert_eq!(fs::metadata(&name).unwrap().len(), big.len() as u64);
}

/// Case 4: a layer whose (unverified) digest shares all but the last hex
/// digit with another source's manifest cannot take over the manifest's
/// name, and `--verify` refuses the forged layer itself.
#[test]
fn a_forged_digest_cannot_take_over_another_sources_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _) = source(tmp.path().join("a"), "amd64", &[b"a layer"]);
    let a_index: Value = json_file(&a.root.join("index.json"));
    let victim = hex(&a_index["manifests"][0]);
    let manifest_bytes = fs::read(a.root.join("blobs/sha256").join(&victim)).unwrap();
    // Source b claims a layer named like the victim but for the last digit.
    let last = if victim.ends_with('0') { "1" } else { "0" };
    let forged = format!("{}{last}", &victim[..63]);
    let b = LayoutBuilder::new(tmp.path().join("b"));
    let junk = vec![b'!'; 333];
    b.write(&format!("blobs/sha256/{forged}"), &junk);
    let layer = json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                       "digest": format!("sha256:{forged}"), "size": junk.len()});
    let config = b.json_blob(
        "application/vnd.oci.image.config.v1+json",
        &json!({"os": "linux", "architecture": "arm64"}),
    );
    let m = b.json_blob(
        OCI_MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}),
    );
    b.index(&[(m, None)]);
    for verify in [false, true] {
        let log = tmp.path().join(format!("log-{verify}"));
        let mut args = vec![
            a.root.to_str().unwrap(),
            b.root.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ];
        if verify {
            args.push("--verify");
        }
        let mnt = Mount::new(&tmp.path().join(format!("mnt-{verify}")), &args);
        let victim_path = mnt.path(&format!("blobs/sha256/{victim}"));
        let forged_path = mnt.path(&format!("blobs/sha256/{forged}"));
        // Look the forged name up first, as the attack needs.
        let _ = fs::metadata(&forged_path).unwrap();
        assert_ne!(
            fs::metadata(&forged_path).unwrap().ino(),
            fs::metadata(&victim_path).unwrap().ino()
        );
        assert_eq!(read(&victim_path).unwrap(), manifest_bytes);
        if verify {
            assert_eq!(read(&forged_path), Err(libc::EIO));
            drop(mnt);
            let text = fs::read_to_string(&log).unwrap();
            assert!(
                text.contains(&format!("sha256:{forged}")) && text.contains("hashes to"),
                "{text}"
            );
        } else {
            // Without --verify a layer is what its source claims; clients verify.
            assert_eq!(read(&forged_path).unwrap(), junk);
        }
    }
}

/// Runs `program args` with a time limit; `None` when it did not finish.
fn bounded(secs: u32, program: &str, args: &[&str]) -> Option<std::process::Output> {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .arg(program)
        .args(args)
        .output()
        .unwrap();
    (out.status.code() != Some(124)).then_some(out)
}

/// Case 5: nothing wedges the mount: a blob replaced by a FIFO, a log file
/// that is a FIFO, a source inside an ocimux mount, and a live source
/// re-pointed at the mount itself.
#[test]
fn fifos_and_self_reference_never_wedge_a_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, layers) = source(tmp.path().join("build-1"), "amd64", &[b"one", b"two"]);
    let link = tmp.path().join("app-latest-oci");
    std::os::unix::fs::symlink(&b.root, &link).unwrap();
    let log = tmp.path().join("log");
    let mnt = tmp.path().join("mnt");
    let m = Mount::new(
        &mnt,
        &[link.to_str().unwrap(), "--log-file", log.to_str().unwrap()],
    );

    // A blob replaced by a FIFO: its open fails at once, the rest is served.
    let src = b.blob_path(&layers[0]);
    fs::remove_file(&src).unwrap();
    nix::unistd::mkfifo(&src, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let fifo_name = m.path(&format!("blobs/sha256/{}", hex(&layers[0])));
    let started = Instant::now();
    let out = bounded(5, "cat", &[fifo_name.to_str().unwrap()]).expect("cat of a FIFO blob hung");
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let other = m.path(&format!("blobs/sha256/{}", hex(&layers[1])));
    assert_eq!(read(&other).unwrap(), b"two");

    // A log file that is a FIFO: refused at once, exit 2.
    let fifo = tmp.path().join("log-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let other_mnt = tmp.path().join("mnt2");
    fs::create_dir(&other_mnt).unwrap();
    let out = bounded(
        10,
        bin(),
        &[
            "mount",
            other_mnt.to_str().unwrap(),
            link.to_str().unwrap(),
            "--log-file",
            fifo.to_str().unwrap(),
        ],
    )
    .expect("mount with a FIFO log file hung");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
    assert!(!is_mounted(&other_mnt));

    // A source inside an ocimux mount: refused by mount and inspect.
    for cmd in [
        vec!["mount", other_mnt.to_str().unwrap(), mnt.to_str().unwrap()],
        vec!["inspect", mnt.to_str().unwrap()],
    ] {
        let out = bounded(10, bin(), &cmd).expect("a source inside a mount hung");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {stderr}");
        assert!(stderr.contains("is inside an ocimux mount"), "{stderr}");
    }
    assert!(!is_mounted(&other_mnt));

    // The live source re-pointed at the mount itself (ln -sfn's way).
    let tmp_link = tmp.path().join("app-latest-oci.new");
    std::os::unix::fs::symlink(&mnt, &tmp_link).unwrap();
    fs::rename(&tmp_link, &link).unwrap();
    wait_for("the refused rebuild", Duration::from_secs(3), || {
        fs::read_to_string(&log).is_ok_and(|t| t.contains("is inside an ocimux mount"))
    });
    let out =
        bounded(5, "cat", &[m.path("index.json").to_str().unwrap()]).expect("the mount is wedged");
    assert!(out.status.success());
    assert_eq!(read(&other).unwrap(), b"two");
    // And it unmounts.
    let out = bounded(30, bin(), &["umount", mnt.to_str().unwrap()]).expect("umount hung");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A swap that changes where a name's bytes come from invalidates what the
/// kernel cached for it: a layer served wrong (layers are not hashed without
/// --verify) and then fixed by its source is read fresh, not from the pages
/// kept from before (daemon read path, which keeps the page cache).
#[test]
fn a_fixed_blob_is_read_fresh_not_from_the_kernels_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let right = b"the right bytes".to_vec();
    let (b, layers) = source(tmp.path().join("s"), "amd64", &[&right]);
    let src = b.blob_path(&layers[0]);
    let wrong = b"WRONG wrong byt".to_vec();
    assert_eq!(wrong.len(), right.len());
    fs::write(&src, &wrong).unwrap();
    let log = tmp.path().join("log");
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &[
            b.root.to_str().unwrap(),
            "--no-passthrough",
            "-v",
            "--log-file",
            log.to_str().unwrap(),
        ],
    );
    let name = m.path(&format!("blobs/sha256/{}", hex(&layers[0])));
    assert_eq!(
        read(&name).unwrap(),
        wrong,
        "served as claimed, and now cached"
    );
    let before = snapshot_time(&m.dir);
    let fixed = src.with_extension("new");
    fs::write(&fixed, &right).unwrap();
    fs::rename(&fixed, &src).unwrap();
    // Nothing opens the name until the new snapshot is in (an open before
    // would see a replaced file and drop the cache itself), and no
    // drop_caches: the swap must tell the kernel.
    wait_for("the rebuild", Duration::from_secs(3), || {
        snapshot_time(&m.dir) != before
    });
    assert_eq!(read(&name).unwrap(), right);
}
