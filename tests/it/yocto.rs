//! The Yocto mode on a build tree made exactly as meta-virtualization's
//! `image-oci-umoci.inc` makes one with its defaults (`OCI_IMAGE_TAR_OUTPUT`
//! on, `OCI_IMAGE_TAG` latest): umoci layouts named
//! `IMAGE-MACHINE-DATETIME.rootfs-oci`, their `.tar` (`tar -cf ../NAME.tar .`
//! inside) and `-dir.tar` (`tar -cf NAME-dir.tar NAME`), the three
//! `IMAGE-latest-oci*` links, two dated builds per machine, three
//! multiconfigs' `tmp-*` directories (one set by `conf/multiconfig/*.conf`),
//! a machine with only tars left, one with only `-dir.tar`s, qemuarm's
//! config without a variant beside its `testdata.json`, and the
//! `-multiarch-oci` copy `oci-multiarch.bbclass` writes. Pulled with skopeo,
//! podman and ctr.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::serve::{
    OCI_INDEX, Server, ctr_pull_all_platforms, get, podman_pull_arch, s, skopeo_pull_tag,
};

const IMAGE: &str = "app-container";

/// Which of a dated build's outputs are left in the deploy directory.
#[derive(Clone, Copy)]
pub(crate) enum Left {
    /// The layout, its `.tar` and its `-dir.tar`.
    All,
    /// Only the `.tar`.
    Tar,
    /// Only the `-dir.tar`.
    DirTar,
}

/// One dated build of `IMAGE` for `machine` in `dir`, as the class writes
/// it; returns its manifest's digest.
pub(crate) fn dated_build(
    dir: &Path,
    machine: &str,
    stamp: &str,
    arch: &str,
    left: Left,
) -> String {
    fs::create_dir_all(dir).unwrap();
    let work = tempfile::tempdir().unwrap();
    let layout = umoci_layout(work.path(), arch, &format!("{machine} {stamp}"));
    let name = format!("{IMAGE}-{machine}-{stamp}.rootfs-oci");
    let manifest = json_file(&layout.join("index.json"))["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    run(Command::new("cp")
        .arg("-a")
        .arg(&layout)
        .arg(dir.join(&name)));
    // image-oci-umoci.inc: cd NAME; tar -cf ../NAME.tar .; cd ..; tar -cf NAME-dir.tar NAME
    // --force-local: a ':' in a name is not a remote host (the odd-names test).
    run(Command::new("tar")
        .args(["--force-local", "-cf"])
        .arg(format!("../{name}.tar"))
        .arg(".")
        .current_dir(dir.join(&name)));
    run(Command::new("tar")
        .args(["--force-local", "-cf"])
        .arg(format!("{name}-dir.tar"))
        .arg(&name)
        .current_dir(dir));
    let rm = |p: PathBuf| {
        if p.is_dir() {
            fs::remove_dir_all(p).unwrap()
        } else {
            fs::remove_file(p).unwrap()
        }
    };
    match left {
        Left::All => {}
        Left::Tar => {
            rm(dir.join(&name));
            rm(dir.join(format!("{name}-dir.tar")));
        }
        Left::DirTar => {
            rm(dir.join(&name));
            rm(dir.join(format!("{name}.tar")));
        }
    }
    // ln -sf NAME IMAGE-TAG-oci (and .tar, -dir.tar), to what is left.
    for (suffix, link) in [
        ("", "-oci"),
        (".tar", "-oci.tar"),
        ("-dir.tar", "-oci-dir.tar"),
    ] {
        let target = format!("{name}{suffix}");
        let link = dir.join(format!("{IMAGE}-latest{link}"));
        if dir.join(&target).exists() {
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link).unwrap();
        }
    }
    manifest
}

/// The tree, and each dated build's manifest digest by (machine, stamp).
pub(crate) struct Tree {
    pub(crate) build: PathBuf,
    pub(crate) manifests: Vec<(&'static str, &'static str, String)>,
}

pub(crate) fn deploy_dir(build: &Path, tmp: &str, machine: &str) -> PathBuf {
    build.join(tmp).join("deploy/images").join(machine)
}

/// Three machines, two dated builds each, three multiconfigs.
pub(crate) fn meta_virtualization_tree(build: &Path) -> Tree {
    fs::create_dir_all(build.join("conf/multiconfig")).unwrap();
    fs::write(
        build.join("conf/local.conf"),
        "MACHINE ??= \"qemux86-64\"\n",
    )
    .unwrap();
    // One multiconfig's TMPDIR outside the tmp* names the mode globs.
    fs::write(
        build.join("conf/multiconfig/arm.conf"),
        "MACHINE = \"qemuarm\"\nTMPDIR = \"${TOPDIR}/build-arm\"\n",
    )
    .unwrap();
    let builds: [(&str, &str, &str, &str, Left); 6] = [
        ("tmp", "qemux86-64", "20261204120000", "amd64", Left::All),
        ("tmp", "qemux86-64", "20261205120000", "amd64", Left::All),
        (
            "tmp-qemuarm64",
            "qemuarm64",
            "20261204130000",
            "arm64",
            Left::Tar,
        ),
        (
            "tmp-qemuarm64",
            "qemuarm64",
            "20261205130000",
            "arm64",
            Left::Tar,
        ),
        (
            "build-arm",
            "qemuarm",
            "20261204140000",
            "arm",
            Left::DirTar,
        ),
        (
            "build-arm",
            "qemuarm",
            "20261205140000",
            "arm",
            Left::DirTar,
        ),
    ];
    let mut manifests = Vec::new();
    for (tmp, machine, stamp, arch, left) in builds {
        let dir = deploy_dir(build, tmp, machine);
        manifests.push((
            machine,
            stamp,
            dated_build(&dir, machine, stamp, arch, left),
        ));
        if machine == "qemuarm" {
            // rootfs-postcommands' write_image_test_data, beside the image.
            fs::write(
                dir.join(format!("{IMAGE}-{machine}-{stamp}.testdata.json")),
                serde_json::json!({
                    "MACHINE": machine,
                    "TARGET_ARCH": "arm",
                    "TUNE_FEATURES": "arm vfp thumb neon callconvention-hard armv7ve cortexa15",
                    "TUNE_PKGARCH": "cortexa15t2hf-neon",
                })
                .to_string(),
            )
            .unwrap();
        }
    }
    // oci-multiarch.bbclass's merged copy, in the main DEPLOY_DIR_IMAGE.
    let x86 = deploy_dir(build, "tmp", "qemux86-64");
    run(Command::new("cp")
        .arg("-a")
        .arg(x86.join(format!("{IMAGE}-qemux86-64-20261205120000.rootfs-oci")))
        .arg(x86.join(format!("{IMAGE}-multiarch-oci"))));
    Tree {
        build: build.to_owned(),
        manifests,
    }
}

impl Tree {
    fn manifest(&self, machine: &str, stamp: &str) -> &str {
        let found = self
            .manifests
            .iter()
            .find(|(m, s, _)| *m == machine && *s == stamp);
        found.map(|(_, _, d)| d.as_str()).unwrap()
    }
}

/// (platform, manifest digest) of a served index, sorted.
fn rows(server: &Server, tag: &str) -> Vec<(String, String)> {
    let url = server.url(&format!("/v2/yocto/{IMAGE}/manifests/{tag}"));
    let index = get(&url, &[&format!("Accept: {OCI_INDEX}")]).json();
    let mut out: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{tag}: {index}"))
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut platform = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            if let Some(v) = p["variant"].as_str() {
                platform = format!("{platform}/{v}");
            }
            (platform, m["digest"].as_str().unwrap().to_owned())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_meta_virtualization_tree_is_served_with_its_history_and_platforms() {
    for tool in ["podman", "containerd", "ctr", "skopeo", "tar"] {
        require_tool(tool);
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = meta_virtualization_tree(&tmp.path().join("build"));
    let before = tree_state(&tree.build);
    let server = Server::start(&["--yocto", s(&tree.build), "--history", "6"]);
    let catalog = get(&server.url("/v2/_catalog"), &[]).json();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!([format!("yocto/{IMAGE}")])
    );
    let tags = get(&server.url(&format!("/v2/yocto/{IMAGE}/tags/list")), &[]).json();
    assert_eq!(
        tags["tags"],
        serde_json::json!([
            "20261204120000",
            "20261204130000",
            "20261204140000",
            "20261205120000",
            "20261205130000",
            "20261205140000",
            "latest"
        ])
    );
    let (x, a, r) = ("qemux86-64", "qemuarm64", "qemuarm");
    let row = |p: &str, m: &str, st: &str| (p.to_owned(), tree.manifest(m, st).to_owned());
    // latest: the x86 link's directory, the arm64 link's tar, the arm
    // link's -dir.tar, arm as v7 from its build's testdata.json.
    let mut want = vec![
        row("linux/amd64", x, "20261205120000"),
        row("linux/arm/v7", r, "20261205140000"),
        row("linux/arm64", a, "20261205130000"),
    ];
    want.sort();
    assert_eq!(rows(&server, "latest"), want);
    // A dated tag: each machine's newest build at or before it.
    let mut want = vec![
        row("linux/amd64", x, "20261205120000"),
        row("linux/arm/v7", r, "20261204140000"),
        row("linux/arm64", a, "20261204130000"),
    ];
    want.sort();
    assert_eq!(rows(&server, "20261205120000"), want);
    assert_eq!(
        rows(&server, "20261204120000"),
        [row("linux/amd64", x, "20261204120000")]
    );
    let log = server.log();
    assert!(log.contains("testdata.json\" (TUNE_FEATURES)"), "{log}");
    assert!(
        log.contains("-multiarch-oci: oci-multiarch.bbclass's merged copy"),
        "{log}"
    );
    assert!(!log.contains("=PATH"), "advice the mode cannot take: {log}");

    // Real clients: skopeo (every digest checked), podman by platform, ctr.
    let d = tmp.path();
    for tag in ["latest", "20261204130000"] {
        skopeo_pull_tag(&server, &format!("yocto/{IMAGE}"), tag, &d.join("pulled"));
    }
    let image = format!("{}/yocto/{IMAGE}:latest", server.host);
    assert_eq!(
        podman_pull_arch(d, &image, &["--platform", "linux/arm/v7"]),
        "arm"
    );
    assert_eq!(
        podman_pull_arch(d, &image, &["--platform", "linux/arm64"]),
        "arm64"
    );
    let (listed, content) = ctr_pull_all_platforms(d, &image);
    assert!(
        listed.contains("linux/amd64,linux/arm/v7,linux/arm64"),
        "{listed}"
    );
    assert_eq!(content.lines().count(), 10, "{content}");
    drop(server);
    assert_eq!(
        tree_state(&tree.build),
        before,
        "the build tree was modified"
    );
}

#[test]
fn half_written_builds_wait_and_old_builds_leave() {
    require_tool("tar");
    let tmp = tempfile::tempdir().unwrap();
    let build = tmp.path().join("build");
    let dir = deploy_dir(&build, "tmp", "qemux86-64");
    dated_build(&dir, "qemux86-64", "20261204120000", "amd64", Left::All);
    dated_build(&dir, "qemux86-64", "20261205120000", "amd64", Left::All);
    // No links: latest is the newest complete dated build.
    for link in ["-oci", "-oci.tar", "-oci-dir.tar"] {
        fs::remove_file(dir.join(format!("{IMAGE}-latest{link}"))).unwrap();
    }
    // A build being written: its directory without index.json yet, and a
    // tar cut short (no end-of-archive marker).
    let next = "20261206120000";
    let name = format!("{IMAGE}-qemux86-64-{next}.rootfs-oci");
    let staged = tmp.path().join("staged");
    let newest = dated_build(&staged, "qemux86-64", next, "amd64", Left::All);
    run(Command::new("cp")
        .arg("-a")
        .arg(staged.join(&name))
        .arg(dir.join(&name)));
    fs::rename(
        dir.join(&name).join("index.json"),
        tmp.path().join("index.json"),
    )
    .unwrap();
    let tar = fs::read(staged.join(format!("{name}.tar"))).unwrap();
    fs::write(dir.join(format!("{name}.tar")), &tar[..tar.len() / 2]).unwrap();
    let server = Server::start(&["--yocto", s(&build), "--history", "1"]);
    let tags_url = server.url(&format!("/v2/yocto/{IMAGE}/tags/list"));
    let tags = || get(&tags_url, &[]).json()["tags"].clone();
    // History 1: the newest complete build only.
    assert_eq!(tags(), serde_json::json!(["20261205120000", "latest"]));
    let log = server.log();
    assert!(
        log.contains(&format!("{name}: no index.json yet; skipped")),
        "{log}"
    );
    assert!(
        log.contains(&format!("{name}.tar: no end-of-archive marker yet")),
        "{log}"
    );
    // Complete: it is served, the older build leaves the history.
    fs::write(dir.join(format!("{name}.tar")), &tar).unwrap();
    fs::rename(
        tmp.path().join("index.json"),
        dir.join(&name).join("index.json"),
    )
    .unwrap();
    wait_for("the finished build", Duration::from_secs(20), || {
        tags() == serde_json::json!([next, "latest"])
    });
    // latest follows the newest dated directory.
    wait_for("latest to follow", Duration::from_secs(20), || {
        rows(&server, "latest").first().map(|r| r.1.clone()) == Some(newest.clone())
    });
    // Said once each, not at every look.
    let log = server.log();
    assert_eq!(log.matches("no index.json yet").count(), 1, "{log}");
}

#[test]
fn where_the_build_is() {
    let tmp = tempfile::tempdir().unwrap();
    let build = tmp.path().join("build");
    let dir = deploy_dir(&build, "tmp", "qemux86-64");
    let digest = dated_build(&dir, "qemux86-64", "20261205120000", "amd64", Left::Tar);
    fs::create_dir_all(tmp.path().join("empty")).unwrap();
    // A TOPDIR, a TMPDIR, deploy/images, one machine's directory.
    for path in [
        build.clone(),
        build.join("tmp"),
        build.join("tmp/deploy/images"),
        dir.clone(),
    ] {
        let server = Server::start(&["--yocto", s(&path), "--history", "0"]);
        let got = rows(&server, "latest");
        assert_eq!(
            got,
            [("linux/amd64".to_owned(), digest.clone())],
            "{}",
            path.display()
        );
    }
    // A build directory before its first image: served, and said so.
    fs::create_dir_all(tmp.path().join("fresh/conf")).unwrap();
    let server = Server::start(&["--yocto", s(&tmp.path().join("fresh"))]);
    wait_for(
        "the empty build to be named",
        Duration::from_secs(10),
        || server.log().contains("no image served yet"),
    );
    drop(server);
    // Anything else: one line, exit 2, nothing served.
    for path in [tmp.path().join("empty"), tmp.path().join("missing")] {
        let out = ocimux(&["serve", "--listen", "127.0.0.1:0", "--yocto", s(&path)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(out.stdout.is_empty(), "no URL printed");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&format!("--yocto {:?}", path)), "{stderr}");
    }
}

/// Issue 23, class 14: two users' builds of one image name are not merged;
/// the first build path's owner keeps the name, the other is named once.
#[test]
fn builds_of_different_users_are_not_merged() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("mine");
    let theirs = tmp.path().join("theirs");
    let amd64 = dated_build(
        &deploy_dir(&mine, "tmp", "qemux86-64"),
        "qemux86-64",
        "20261205120000",
        "amd64",
        Left::Tar,
    );
    dated_build(
        &deploy_dir(&theirs, "tmp", "qemuarm64"),
        "qemuarm64",
        "20261205120000",
        "arm64",
        Left::Tar,
    );
    crate::serve::chown_r(&theirs, "65534:65534");
    let server = Server::start(&["--yocto", s(&mine), "--yocto", s(&theirs), "--history", "0"]);
    assert_eq!(rows(&server, "latest"), [("linux/amd64".to_owned(), amd64)]);
    wait_for(
        "the other user's build to be named",
        Duration::from_secs(10),
        || {
            server
                .log()
                .contains("of uid 65534's build, already uid 0's; skipped")
        },
    );
}

/// Issue 23, class 14: a ':' in a machine directory is part of a path (the
/// mode never parses a path as a SOURCE argument); one build given several
/// times, or through a link, is looked at once; build paths are bounded.
#[test]
fn odd_machine_names_and_repeated_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let build = tmp.path().join("build");
    let digest = dated_build(
        &deploy_dir(&build, "tmp", "my:board"),
        "my:board",
        "20261205120000",
        "amd64",
        Left::Tar,
    );
    let link = tmp.path().join("again");
    std::os::unix::fs::symlink(&build, &link).unwrap();
    let b = s(&build);
    let server = Server::start(&[
        "--yocto",
        b,
        "--yocto",
        b,
        "--yocto",
        s(&link),
        "--history",
        "0",
    ]);
    assert_eq!(
        rows(&server, "latest"),
        [("linux/amd64".to_owned(), digest)]
    );
    drop(server);
    let many: Vec<PathBuf> = (0..65)
        .map(|i| {
            let p = tmp.path().join(format!("b{i}/conf"));
            fs::create_dir_all(&p).unwrap();
            p.parent().unwrap().to_owned()
        })
        .collect();
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    for p in &many {
        args.extend(["--yocto", s(p)]);
    }
    let out = ocimux(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("65 --yocto paths: at most 64"), "{stderr}");
}
