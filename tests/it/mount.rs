//! Real mounts of the built binary over umoci-made layouts: what is listed,
//! stat'ed, read and refused, and what skopeo makes of it.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::Value;

/// The blobs a source really references, computed independently of ocimux:
/// manifest, config and layers of the only index.json entry.
fn reachable(layout: &Path) -> BTreeSet<String> {
    let index = json_file(&layout.join("index.json"));
    let mut out = BTreeSet::new();
    for m in index["manifests"].as_array().expect("manifests") {
        let hex = |d: &Value| {
            d["digest"]
                .as_str()
                .expect("digest")
                .trim_start_matches("sha256:")
                .to_owned()
        };
        out.insert(hex(m));
        let manifest = json_file(&layout.join("blobs/sha256").join(hex(m)));
        out.insert(hex(&manifest["config"]));
        for l in manifest["layers"].as_array().expect("layers") {
            out.insert(hex(l));
        }
    }
    out
}

struct Fixture {
    _tmp: tempfile::TempDir,
    sources: Vec<std::path::PathBuf>,
    mnt: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Searchable by all, as a deploy directory is (blobs show the read bits
    // that the directories above them let through).
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let sources = vec![
        umoci_layout(tmp.path(), "amd64", "a"),
        umoci_layout(tmp.path(), "arm64", "b"),
        umoci_layout(tmp.path(), "arm", "c"),
    ];
    let mnt = tmp.path().join("mnt");
    Fixture {
        _tmp: tmp,
        sources,
        mnt,
    }
}

fn source_args(f: &Fixture) -> Vec<String> {
    vec![
        f.sources[0].display().to_string(),
        f.sources[1].display().to_string(),
        format!("linux/arm/v7={}", f.sources[2].display()),
    ]
}

#[test]
fn serves_every_reachable_blob_byte_for_byte_and_nothing_else() {
    let f = fixture();
    let before: Vec<_> = f.sources.iter().map(|s| tree_state(s)).collect();
    let args = source_args(&f);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let m = Mount::new(&f.mnt, &argv);

    // Root listing and the two generated files.
    let mut root: Vec<String> = fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    root.sort();
    assert_eq!(root, ["blobs", "index.json", "oci-layout"]);
    assert_eq!(
        fs::read(m.path("oci-layout")).unwrap(),
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index_json = json_file(&m.path("index.json"));
    let entries = index_json["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index_json}");
    assert_eq!(
        entries[0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        entries[0]["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    let index_hex = entries[0]["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_owned();
    let index_path = m.path(&format!("blobs/sha256/{index_hex}"));
    assert_eq!(
        fs::metadata(&index_path).unwrap().len(),
        entries[0]["size"].as_u64().unwrap()
    );

    // The index lists each source's manifest, in command-line order, with its platform.
    let index = json_file(&index_path);
    let platforms = platforms_of(&index);
    assert_eq!(platforms, ["linux/amd64", "linux/arm64", "linux/arm/v7"]);

    // Exactly the reachable blobs (umoci leaves unreferenced ones behind) plus the index.
    let mut want: BTreeSet<String> = f.sources.iter().flat_map(|s| reachable(s)).collect();
    let leftovers: usize = f
        .sources
        .iter()
        .map(|s| fs::read_dir(s.join("blobs/sha256")).unwrap().count())
        .sum::<usize>()
        - want.len();
    assert!(
        leftovers > 0,
        "umoci fixtures are expected to hold unreferenced blobs"
    );
    want.insert(index_hex.clone());
    let served = rehash_blobs(&m.dir);
    let names: BTreeSet<String> = served.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, want);
    for (name, hash) in &served {
        assert_eq!(
            hash.encoded(),
            name,
            "blob {name} does not hash to its name through the mount"
        );
    }

    // Attributes: exact sizes and blocks, read-only modes: the generated
    // index 0444, blobs their source file's owner and read bits.
    for (name, _) in &served {
        let meta = fs::metadata(m.path(&format!("blobs/sha256/{name}"))).unwrap();
        assert_eq!(meta.blocks(), meta.len().div_ceil(512), "{name}");
        assert!(meta.is_file());
        if name == &index_hex {
            assert_eq!(meta.permissions().mode() & 0o7777, 0o444, "{name}");
        } else {
            let src = f
                .sources
                .iter()
                .map(|s| s.join("blobs/sha256").join(name))
                .find(|p| p.exists())
                .unwrap();
            let src = fs::metadata(src).unwrap();
            assert_eq!(meta.len(), src.len(), "{name}");
            assert_eq!(meta.mode() & 0o7777, src.mode() & 0o444, "{name}");
            assert_eq!((meta.uid(), meta.gid()), (src.uid(), src.gid()), "{name}");
        }
    }
    for dir in ["", "blobs", "blobs/sha256"] {
        let meta = fs::metadata(m.path(dir)).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o555, "{dir}");
    }

    // `inspect --raw` prints exactly the served index.
    let mut inspect = vec!["inspect", "--raw"];
    inspect.extend(argv.iter().copied());
    let raw = run(Command::new(bin()).args(&inspect)).stdout;
    assert_eq!(raw, fs::read(&index_path).unwrap());

    // Reads past the end and at odd offsets.
    let file = fs::File::open(&index_path).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        std::os::unix::fs::FileExt::read_at(&file, &mut buf, raw.len() as u64 + 10).unwrap(),
        0
    );
    assert_eq!(
        std::os::unix::fs::FileExt::read_at(&file, &mut buf, 3).unwrap(),
        16
    );
    assert_eq!(&buf, &raw[3..19]);
    drop(file);

    drop(m);
    assert!(!is_mounted(&f.mnt));
    let after: Vec<_> = f.sources.iter().map(|s| tree_state(s)).collect();
    assert_eq!(before, after, "a source changed while mounted");
}

#[test]
fn inode_numbers_are_stable_across_remounts() {
    let f = fixture();
    let args = source_args(&f);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let inodes = |m: &Mount| -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = fs::read_dir(m.path("blobs/sha256"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    e.metadata().unwrap().ino(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let first = inodes(&Mount::new(&f.mnt, &argv));
    // A different source order changes the index but not the blobs' numbers.
    let reordered = [argv[1], argv[0], argv[2]];
    let second = inodes(&Mount::new(&f.mnt, &reordered));
    let common: Vec<_> = first.iter().filter(|e| second.contains(e)).collect();
    assert_eq!(
        common.len(),
        first.len() - 1,
        "all but the generated index keep their inode:\n{first:?}\n{second:?}"
    );
}

#[test]
fn every_write_fails_with_erofs() {
    let f = fixture();
    let before = tree_state(&f.sources[0]);
    let src = f.sources[0].display().to_string();
    let m = Mount::new(&f.mnt, &[&src]);
    let blob = fs::read_dir(m.path("blobs/sha256"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let erofs = |what: &str, r: std::io::Result<()>| {
        let err = r.expect_err(what);
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{what}: {err}");
    };
    erofs("create", fs::File::create(m.path("new")).map(drop));
    erofs(
        "open for write",
        fs::OpenOptions::new().write(true).open(&blob).map(drop),
    );
    erofs(
        "open for append",
        fs::OpenOptions::new()
            .append(true)
            .open(m.path("index.json"))
            .map(drop),
    );
    erofs(
        "truncate",
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&blob)
            .map(drop),
    );
    erofs("unlink", fs::remove_file(&blob));
    erofs("mkdir", fs::create_dir(m.path("d")));
    erofs("rmdir", fs::remove_dir(m.path("blobs/sha256")));
    erofs("rename", fs::rename(m.path("index.json"), m.path("x.json")));
    erofs(
        "chmod",
        fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)),
    );
    erofs("link", fs::hard_link(&blob, m.path("l")));
    erofs(
        "symlink",
        std::os::unix::fs::symlink("/etc/passwd", m.path("s")),
    );
    erofs("setxattr", setxattr(&blob));
    let c = std::ffi::CString::new(blob.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; truncate(2) only reads it.
    let rc = unsafe { libc::truncate(c.as_ptr(), 0) };
    assert_eq!(
        (rc, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EROFS)),
        "truncate(2)"
    );
    drop(m);
    assert_eq!(before, tree_state(&f.sources[0]), "a source changed");
}

fn setxattr(path: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let name = c"user.test";
    // SAFETY: valid C strings and a 1-byte value that outlive the call.
    let rc = unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn readdir_with_tiny_buffers_and_seeking_back() {
    let f = fixture();
    let args = source_args(&f);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let m = Mount::new(&f.mnt, &argv);
    let dir = m.path("blobs/sha256");
    let mut want: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    want.extend([".".into(), "..".into()]);
    want.sort();
    let fd = fs::File::open(&dir).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    for round in 0..2 {
        // Rewind (seekdir back to the start) and list again, one entry per call.
        // SAFETY: lseek on a valid directory fd.
        assert_eq!(unsafe { libc::lseek(raw, 0, libc::SEEK_SET) }, 0);
        let mut got = Vec::new();
        let mut buf = [0u8; 120]; // fits one entry with a 64-char name, not two
        loop {
            // SAFETY: the buffer is valid for its length; getdents64 writes at most that.
            let n =
                unsafe { libc::syscall(libc::SYS_getdents64, raw, buf.as_mut_ptr(), buf.len()) };
            assert!(n >= 0, "getdents64: {}", std::io::Error::last_os_error());
            if n == 0 {
                break;
            }
            let mut off = 0usize;
            while off < n as usize {
                let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                let name = &buf[off + 19..off + reclen];
                let end = name.iter().position(|&b| b == 0).unwrap();
                got.push(String::from_utf8(name[..end].to_vec()).unwrap());
                off += reclen;
            }
        }
        got.sort();
        assert_eq!(got, want, "round {round}");
    }
}

#[test]
fn skopeo_inspects_and_copies_the_mount() {
    require_tool("skopeo");
    let f = fixture();
    let args = source_args(&f);
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    argv.extend([
        "--tag",
        "v1",
        "--annotation",
        "org.opencontainers.image.version=1.0",
    ]);
    let m = Mount::new(&f.mnt, &argv);
    let oci = format!("oci:{}", m.dir.display());
    let served_index = served_index(&m.dir);

    // Without a ref (index.json has one entry) and with the tag: the same raw index.
    for reference in [oci.clone(), format!("{oci}:v1")] {
        let raw = run(Command::new("skopeo").args(["inspect", "--raw", &reference])).stdout;
        assert_eq!(raw, served_index, "{reference}");
    }
    let index: Value = serde_json::from_slice(&served_index).unwrap();
    assert_eq!(
        index["annotations"]["org.opencontainers.image.version"],
        "1.0"
    );
    assert_eq!(index["manifests"].as_array().unwrap().len(), 3);

    // Platform selection picks the arm64 and arm/v7 images.
    for (arch, variant) in [("arm64", None), ("arm", Some("v7")), ("amd64", None)] {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--override-os", "linux", "--override-arch", arch]);
        if let Some(v) = variant {
            cmd.args(["--override-variant", v]);
        }
        let out: Value = serde_json::from_slice(&run(cmd.arg(&oci)).stdout).unwrap();
        assert_eq!(out["Architecture"], arch);
    }

    // copy --all verifies every blob and manifest digest while copying.
    let out_dir = f.mnt.with_file_name("copy");
    let copied = skopeo_copy_all(&m.dir, &out_dir, "v1");
    assert_eq!(copied, served_index);
    let copied_blobs: BTreeSet<String> = fs::read_dir(out_dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let served_blobs: BTreeSet<String> = rehash_blobs(&m.dir).into_iter().map(|(n, _)| n).collect();
    assert_eq!(copied_blobs, served_blobs);
}
