//! Yocto's OCI tarballs as sources, served in place: both shapes made with GNU
//! tar, mixed with a directory; huge members in sparse archives; hostile
//! archives refused by name.

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use ocimux::oci::digest::Digest;
use ocimux::testing::testutil::LayoutBuilder;
use serde_json::json;

/// `NAME.tar` (members `./…`) and `NAME-dir.tar` (layout under one top directory), as Yocto writes them.
fn yocto_tars(layout: &Path) -> (PathBuf, PathBuf) {
    require_tool("tar");
    let parent = layout.parent().unwrap();
    let name = layout.file_name().unwrap().to_str().unwrap();
    let flat = parent.join(format!("{name}.tar"));
    let dir = parent.join(format!("{name}-dir.tar"));
    run(Command::new("tar")
        .arg("-cf")
        .arg(&flat)
        .arg(".")
        .current_dir(layout));
    run(Command::new("tar")
        .arg("-cf")
        .arg(&dir)
        .arg(name)
        .current_dir(parent));
    (flat, dir)
}

#[test]
fn both_yocto_shapes_mixed_with_a_directory_serve_every_blob() {
    require_tool("skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let amd64 = umoci_layout(tmp.path(), "amd64", "t1");
    let arm64 = umoci_layout(tmp.path(), "arm64", "t2");
    let arm = umoci_layout(tmp.path(), "arm", "t3");
    let (amd64_tar, _) = yocto_tars(&amd64);
    let (_, arm64_dir_tar) = yocto_tars(&arm64);
    let want: Vec<(String, Digest)> = {
        let m = Mount::new(
            &tmp.path().join("ref"),
            &[
                amd64.to_str().unwrap(),
                arm64.to_str().unwrap(),
                &format!("linux/arm/v7={}", arm.display()),
            ],
        );
        let mut v = rehash_blobs(&m.dir);
        v.sort();
        v
    };
    // The archives alone, and the layouts removed: nothing is extracted anywhere.
    fs::remove_dir_all(&amd64).unwrap();
    fs::remove_dir_all(&arm64).unwrap();
    let scratch = tmp.path().join("tmpdir");
    fs::create_dir(&scratch).unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let before = tree_state(tmp.path());
    let out = Command::new(bin())
        .arg("mount")
        .arg(&mnt)
        .arg(&amd64_tar)
        .arg(format!("linux/arm64={}", arm64_dir_tar.display()))
        .arg(format!("linux/arm/v7={}", arm.display()))
        .env("TMPDIR", &scratch)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Mount { dir: mnt.clone() };
    let mut got = rehash_blobs(&m.dir);
    got.sort();
    assert_eq!(
        got, want,
        "the same image, blob for blob, as from the directories"
    );
    for (name, digest) in &got {
        assert_eq!(digest.encoded(), name);
    }
    let copy = tmp.path().join("copy");
    let copied = skopeo_copy_all(&mnt, &copy, "latest");
    assert_eq!(copied, served_index(&mnt));

    // The daemon wrote nothing: no temp files, no regular file open for writing.
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);
    let pid = daemon_pid(&mnt);
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let fd = fd.unwrap();
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        let info = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map_or(0, |f| u32::from_str_radix(f.trim(), 8).unwrap());
        let writable = flags & 3 != 0;
        assert!(
            !writable || !target.is_file() || target.starts_with("/dev"),
            "daemon has {} open for writing",
            target.display()
        );
    }
    drop(m);
    let after = tree_state(tmp.path());
    for (path, state) in &before {
        assert_eq!(after.get(path), Some(state), "{} changed", path.display());
    }
    let added: Vec<_> = after
        .keys()
        .filter(|p| !before.contains_key(*p) && !p.starts_with(&copy))
        .collect();
    assert!(added.is_empty(), "files appeared: {added:?}");
}

#[test]
fn daemon_memory_stays_small_for_a_256_mib_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let mut layer = vec![0u8; 256 * 1024 * 1024];
    for (i, chunk) in layer.chunks_mut(4096).enumerate() {
        chunk[..8].copy_from_slice(&(i as u64).to_le_bytes());
    }
    let (b, l) = LayoutBuilder::one_layer(tmp.path().join("big"), &layer);
    drop(layer);
    let (flat, _) = yocto_tars(&b.root);
    let m = Mount::new(&tmp.path().join("mnt"), &[flat.to_str().unwrap()]);
    let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
    assert_eq!(
        sha256_file(&m.path(&format!("blobs/sha256/{hex}"))).encoded(),
        hex
    );
    let status = fs::read_to_string(format!("/proc/{}/status", daemon_pid(&m.dir))).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    assert!(
        hwm_kib < 64 * 1024,
        "daemon peak RSS {hwm_kib} KiB after reading a 256 MiB archive member"
    );
}

#[test]
fn pax_long_names_and_members_over_8_gib_in_a_sparse_archive() {
    let tmp = tempfile::tempdir().unwrap();
    // A layout whose one layer is 9 GiB of zeros. Layers are never hashed at
    // mount (only sized), so its digest can be any valid one.
    let huge: u64 = 9 * 1024 * 1024 * 1024 + 3;
    let fake = Digest::sha256_of(b"nine gibibytes of zeros");
    let b = LayoutBuilder::new(tmp.path().join("l"));
    let layer = json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": fake.to_string(), "size": huge});
    let config = b.json_blob(
        "application/vnd.oci.image.config.v1+json",
        &json!({"os": "linux", "architecture": "amd64"}),
    );
    let m = b.json_blob(
        ocimux::oci::document::OCI_MANIFEST,
        &json!({"schemaVersion": 2, "config": config, "layers": [layer]}),
    );
    b.index(&[(m, None)]);
    let members = layout_members(&b.root);

    for (case, base256) in [("pax size", false), ("base-256 size", true)] {
        // Long names through pax (> 100 bytes: the layout under a deep top directory).
        let top = format!("{}-oci", "very-long-directory-name-".repeat(5));
        let mut out = Vec::new();
        for (name, data) in &members {
            let long = format!("{top}/{}", name.trim_start_matches("./"));
            tarw::pax(&mut out, &[("path", &long)]);
            tarw::member(&mut out, "short", data, b'0');
        }
        let long = format!("{top}/{}", fake.blob_path());
        if base256 {
            tarw::pax(&mut out, &[("path", &long)]);
            out.extend_from_slice(&tarw::header("short", huge, b'0'));
        } else {
            tarw::pax(&mut out, &[("path", &long), ("size", &huge.to_string())]);
            out.extend_from_slice(&tarw::header("short", 0, b'0'));
        }
        let data_at = out.len() as u64;
        let path = tmp.path().join(format!("huge-{base256}.tar"));
        let mut f = fs::File::create(&path).unwrap();
        f.write_all(&out).unwrap();
        // The data is a hole; the end-of-archive marker follows it.
        let end = data_at + huge.div_ceil(512) * 512;
        f.write_all_at(&[0u8; 1024], end).unwrap();
        drop(f);
        let allocated = std::os::unix::fs::MetadataExt::blocks(&fs::metadata(&path).unwrap()) * 512;
        assert!(
            allocated < 16 * 1024 * 1024,
            "{case}: the archive should be sparse ({allocated} bytes allocated)"
        );

        let m = Mount::new(
            &tmp.path().join(format!("mnt-{base256}")),
            &[path.to_str().unwrap()],
        );
        let blob = m.path(&fake.blob_path());
        assert_eq!(fs::metadata(&blob).unwrap().len(), huge, "{case}");
        let f = fs::File::open(&blob).unwrap();
        let mut buf = [1u8; 4096];
        assert_eq!(f.read_at(&mut buf, huge - 4096).unwrap(), 4096, "{case}");
        assert!(buf.iter().all(|&b| b == 0), "{case}");
        assert_eq!(f.read_at(&mut buf, huge).unwrap(), 0, "{case}");
        assert_eq!(f.read_at(&mut buf, huge - 5).unwrap(), 5, "{case}");
    }
}

#[test]
fn hostile_archives_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, layer) = LayoutBuilder::one_layer(tmp.path().join("l"), b"layer bytes");
    let members = layout_members(&b.root);
    let layer_name = format!(
        "./{}",
        Digest::parse(layer["digest"].as_str().unwrap())
            .unwrap()
            .blob_path()
    );
    // The layout's members, each written by `f`, then `extra`, then the end marker.
    let build = |f: &dyn Fn(&mut Vec<u8>, &str, &[u8]), extra: &dyn Fn(&mut Vec<u8>)| -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in &members {
            f(&mut out, name, data);
        }
        extra(&mut out);
        tarw::finish(&mut out);
        out
    };
    let plain = |out: &mut Vec<u8>, name: &str, data: &[u8]| tarw::member(out, name, data, b'0');
    let nothing = |_: &mut Vec<u8>| {};
    let good = build(&plain, &nothing);

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    cases.push((
        "absolute name",
        build(
            &|o, n, d| tarw::member(o, &n.replacen("./", "/", 1), d, b'0'),
            &nothing,
        ),
        "unsafe member name \"/",
    ));
    cases.push((
        "dot-dot name",
        build(&plain, &|o| {
            tarw::member(o, "./blobs/../../escape", b"x", b'0')
        }),
        "unsafe member name \"./blobs/../../escape\"",
    ));
    cases.push((
        "duplicate member",
        build(&plain, &|o| tarw::member(o, "./index.json", b"{}", b'0')),
        "duplicate member \"index.json\"",
    ));
    cases.push((
        "blob is a symlink",
        build(
            &|o, n, d| {
                if n == layer_name {
                    tarw::symlink(o, n, "/etc/passwd");
                } else {
                    tarw::member(o, n, d, b'0');
                }
            },
            &nothing,
        ),
        "is a link in the archive",
    ));
    cases.push((
        "blob is a directory",
        build(
            &|o, n, d| {
                tarw::member(
                    o,
                    n,
                    if n == layer_name { b"" } else { d },
                    if n == layer_name { b'5' } else { b'0' },
                )
            },
            &nothing,
        ),
        "not a regular file",
    ));
    cases.push((
        "sparse member",
        build(
            &|o, n, d| tarw::member(o, n, d, if n == layer_name { b'S' } else { b'0' }),
            &nothing,
        ),
        "sparse member",
    ));
    cases.push((
        "truncated in a member",
        good[..good.len() - 1024 - 100].to_vec(),
        "truncated archive",
    ));
    cases.push((
        "truncated before the end marker",
        good[..good.len() - 1024].to_vec(),
        "truncated archive",
    ));
    cases.push((
        "bad checksum",
        {
            let mut o = good.clone();
            o[0] ^= 0x20;
            o
        },
        "bad header at offset 0",
    ));
    cases.push((
        "gzip-compressed",
        {
            let path = tmp.path().join("g.tar");
            fs::write(&path, &good).unwrap();
            run(Command::new("gzip").arg("-kf").arg(&path));
            fs::read(tmp.path().join("g.tar.gz")).unwrap()
        },
        "gzip-compressed; decompress it first",
    ));
    cases.push((
        "no layout inside",
        {
            let mut o = Vec::new();
            tarw::member(&mut o, "./a/x", b"x", b'0');
            tarw::member(&mut o, "./b/y", b"y", b'0');
            tarw::finish(&mut o);
            o
        },
        "no oci-layout at its root or under one top directory",
    ));
    cases.push((
        "not a tar at all",
        b"just some text, not an archive".to_vec(),
        "neither a directory nor a tar archive",
    ));

    // The well-formed archive is served: the hostile variants differ only in what they test.
    let ok = tmp.path().join("ok.tar");
    fs::write(&ok, &good).unwrap();
    let out = ocimux(&["inspect", ok.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    for (name, bytes, frag) in cases {
        let path = tmp.path().join(format!("{}.tar", name.replace(' ', "-")));
        fs::write(&path, &bytes).unwrap();
        let out = ocimux(&["mount", mnt.to_str().unwrap(), path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(frag), "{name}: want {frag:?} in: {stderr}");
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "{name}: source not named: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(!is_mounted(&mnt), "{name}");
        assert_eq!(fs::read(&path).unwrap(), bytes, "{name}: source changed");
    }
}
