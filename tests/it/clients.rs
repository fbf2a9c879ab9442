//! Issue 12, with real tools: every source shape they make (skopeo's v2s2
//! and manifest lists, a nested layout copied from a mount, a layout with
//! `release` and `debug` tags, several tags for one manifest, a Windows-like
//! config), mixed in one mount and read by skopeo, a registry and umoci.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::registry::Registry;
use ocimux::testing::testutil::LayoutBuilder;
use serde_json::json;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn umoci(args: &[&str]) {
    run(Command::new("umoci").args(args));
}

fn skopeo(args: &[&str]) {
    run(Command::new("skopeo").args(args));
}

/// A mount of `sources` at `dir/name` copied with `skopeo copy --all`
/// (`--format v2s2` when `list`) into a new layout `dir/name-copy`: a nested
/// index, or a Docker manifest list.
fn copied_from_a_mount(dir: &Path, name: &str, sources: &[PathBuf], list: bool) -> PathBuf {
    let args: Vec<&str> = sources.iter().map(|p| s(p)).collect();
    let m = Mount::new(&dir.join(name), &args);
    let out = dir.join(format!("{name}-copy"));
    let mut cmd = vec!["copy", "--all", "-q"];
    if list {
        cmd.extend(["--format", "v2s2"]);
    }
    let from = format!("oci:{}", s(&m.dir));
    let to = format!("oci:{}:latest", s(&out));
    cmd.extend([from.as_str(), to.as_str()]);
    skopeo(&cmd);
    out
}

/// The sources, as `ocimux mount` arguments, and the platforms they bring.
fn every_shape(dir: &Path) -> (Vec<String>, Vec<&'static str>) {
    require_tool("umoci");
    require_tool("skopeo");
    let amd64 = umoci_layout(dir, "amd64", "shapes");
    // skopeo --format v2s2: a Docker image manifest.
    let arm64 = umoci_layout(dir, "arm64", "shapes");
    let v2s2 = dir.join("v2s2");
    skopeo(&[
        "copy",
        "-q",
        "--format",
        "v2s2",
        &format!("oci:{}:latest", s(&arm64)),
        &format!("oci:{}:latest", s(&v2s2)),
    ]);
    // A nested layout: skopeo copy --all of a mount.
    let nested = copied_from_a_mount(
        dir,
        "nested",
        &[
            umoci_layout(dir, "riscv64", "n"),
            umoci_layout(dir, "ppc64le", "n"),
        ],
        false,
    );
    // A Docker manifest list.
    let list = copied_from_a_mount(
        dir,
        "list",
        &[
            umoci_layout(dir, "386", "l"),
            umoci_layout(dir, "mips64le", "l"),
        ],
        true,
    );
    // release and debug tags on different manifests.
    let tagged = umoci_layout(dir, "s390x", "t");
    let t = |tag: &str| format!("{}:{tag}", s(&tagged));
    umoci(&["tag", "--image", &t("latest"), "release"]);
    umoci(&[
        "config",
        "--image",
        &t("release"),
        "--tag",
        "debug",
        "--config.env",
        "DEBUG=1",
    ]);
    umoci(&["rm", "--image", &t("latest")]);
    // Two tags for one manifest, no latest.
    let arm = umoci_layout(dir, "arm", "v");
    let a = |tag: &str| format!("{}:{tag}", s(&arm));
    umoci(&["tag", "--image", &a("latest"), "v1.0"]);
    umoci(&["tag", "--image", &a("latest"), "stable"]);
    umoci(&["rm", "--image", &a("latest")]);
    // A Windows-like config with os.version and os.features.
    let b = LayoutBuilder::new(dir.join("windows"));
    let m = b.image(
        json!({"os": "windows", "architecture": "amd64",
               "os.version": "10.0.20348.2340", "os.features": ["win32k"]}),
        &[b"windows layer"],
    );
    b.index(&[(m, None)]);
    let sources = vec![
        s(&amd64).to_owned(),
        s(&v2s2).to_owned(),
        s(&nested).to_owned(),
        s(&list).to_owned(),
        format!("oci:{}:release", s(&tagged)),
        format!("linux/arm/v7={}", s(&arm)),
        format!("oci:{}", s(&b.root)),
    ];
    let platforms = vec![
        "linux/amd64",
        "linux/arm64",
        "linux/riscv64",
        "linux/ppc64le",
        "linux/386",
        "linux/mips64le",
        "linux/s390x",
        "linux/arm/v7",
        "windows/amd64",
    ];
    (sources, platforms)
}

fn platforms_of(index: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(index).unwrap();
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut name = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            if let Some(v) = p["variant"].as_str() {
                name.push('/');
                name.push_str(v);
            }
            name
        })
        .collect()
}

/// Every shape in one mount: skopeo copies it, a registry stores the very
/// index, Docker media types keep their type, Windows fields are served.
#[test]
fn every_source_shape_in_one_mount_reaches_skopeo_and_a_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let (sources, platforms) = every_shape(tmp.path());
    let args: Vec<&str> = sources.iter().map(String::as_str).collect();
    let m = Mount::new(&tmp.path().join("mnt"), &args);
    let served = served_index(&m.dir);
    assert_eq!(platforms_of(&served), platforms);
    let index: serde_json::Value = serde_json::from_slice(&served).unwrap();
    let types: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types.iter().filter(|t| t.contains("docker")).count(),
        3,
        "the v2s2 manifest and the list's two keep their Docker type: {types:?}"
    );
    let windows = &index["manifests"][8]["platform"];
    assert_eq!(windows["os.version"], "10.0.20348.2340");
    assert_eq!(windows["os.features"], json!(["win32k"]));
    for (name, digest) in rehash_blobs(&m.dir) {
        assert_eq!(digest.encoded(), name, "a blob hashes to its name");
    }
    // An oci: destination converts Docker manifests to OCI (skopeo's doing):
    // the same platforms, other digests for those three.
    let copied = skopeo_copy_all(&m.dir, &tmp.path().join("copy"), "latest");
    assert_eq!(platforms_of(&copied), platforms);
    let registry = Registry::start();
    let dest = format!("docker://127.0.0.1:{}/app:latest", registry.port);
    // skopeo would convert the Docker manifests of an OCI index to OCI;
    // --preserve-digests pushes every manifest as it is.
    skopeo(&[
        "copy",
        "--all",
        "-q",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}", s(&m.dir)),
        &dest,
    ]);
    let pushed =
        run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &dest])).stdout;
    assert_eq!(
        pushed, served,
        "the registry holds the very index, so the same digest"
    );
}

/// --platform-tags: umoci unpacks one platform by tag; skopeo then needs
/// oci:MNT:latest (and refuses oci:MNT with several entries).
#[test]
fn platform_tags_let_umoci_unpack_one_platform() {
    require_tool("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let amd64 = umoci_layout(tmp.path(), "amd64", "pt");
    let arm = umoci_layout(tmp.path(), "arm", "pt");
    let arm_src = format!("linux/arm/v7={}", s(&arm));
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &[s(&amd64), &arm_src, "--platform-tags"],
    );
    let bundle = tmp.path().join("bundle");
    umoci(&[
        "unpack",
        "--image",
        &format!("{}:latest-linux-arm-v7", s(&m.dir)),
        s(&bundle),
    ]);
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/etc/motd")).unwrap(),
        "arm pt\n"
    );
    let plain = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "-q",
            &format!("oci:{}", s(&m.dir)),
            &format!("oci:{}", s(&tmp.path().join("c1"))),
        ])
        .output()
        .unwrap();
    assert!(!plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stderr).contains("more than one image"));
    let raw = skopeo_copy_all(
        Path::new(&format!("{}:latest", s(&m.dir))),
        &tmp.path().join("c2"),
        "latest",
    );
    assert_eq!(platforms_of(&raw), ["linux/amd64", "linux/arm/v7"]);
}

/// --platform keeps a subset, across flattened sources; a platform that two
/// sources bring, one of them flattened, is refused naming both.
#[test]
fn platform_filters_and_duplicates_across_flattened_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let riscv = umoci_layout(tmp.path(), "riscv64", "f");
    let nested = copied_from_a_mount(
        tmp.path(),
        "nested",
        &[riscv.clone(), umoci_layout(tmp.path(), "ppc64le", "f")],
        false,
    );
    let list = copied_from_a_mount(
        tmp.path(),
        "list",
        &[umoci_layout(tmp.path(), "386", "f")],
        true,
    );
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &[
            s(&nested),
            s(&list),
            "--platform",
            "linux/ppc64le",
            "--platform",
            "linux/386",
        ],
    );
    assert_eq!(
        platforms_of(&served_index(&m.dir)),
        ["linux/ppc64le", "linux/386"]
    );
    let out = ocimux(&["inspect", s(&nested), s(&riscv)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("both provide platform linux/riscv64") && err.contains(s(&riscv)),
        "{err}"
    );
    let none = ocimux(&["inspect", s(&nested), "--platform", "linux/s390x"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("--platform linux/s390x"));
    // A ref that is not there: the refs found are listed.
    let missing = ocimux(&["inspect", &format!("oci:{}:nope", s(&riscv))]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("ref names found: \"latest\""));
}
