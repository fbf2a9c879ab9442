//! Real clients pull: skopeo, podman, buildah, containerd; the Yocto mode;
//! the soak's short replay.

use super::*;

#[test]
fn skopeo_pulls_what_the_mount_shows() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, arm64) = two_layouts(tmp.path(), "s1");
    let server = Server::start(&["yocto/app", s(&amd64), s(&arm64)]);
    let pulled = tmp.path().join("pulled");
    skopeo_pull(&server, "yocto/app", &pulled);
    let m = Mount::new(&tmp.path().join("mnt"), &[s(&amd64), s(&arm64)]);
    let copied = tmp.path().join("copied");
    skopeo_copy_all(&m.dir, &copied, "latest");
    let (a, b) = (blobs_of(&pulled), blobs_of(&copied));
    assert!(
        a.len() >= 7,
        "index, 2 manifests, 2 configs, 2+ layers: {:?}",
        a.keys()
    );
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same blobs"
    );
    assert!(a == b, "byte-equal to a copy of the mount");
    for (name, bytes) in &a {
        let hex = name.rsplit('/').next().unwrap();
        assert_eq!(Digest::sha256_of(bytes).encoded(), hex, "{name}");
    }
    // The pulled index is the mount's generated one.
    assert_eq!(
        json_file(&pulled.join("index.json"))["manifests"][0]["digest"],
        json_file(&m.path("index.json"))["manifests"][0]["digest"]
    );
    let (status, log) = server.stop();
    assert!(status.success(), "{status}: {log}");
    assert!(
        log.contains("\"GET /v2/yocto/app/manifests/latest\" 200"),
        "{log}"
    );
}

/// podman, buildah and a private containerd pull from ocimux, each with
/// its storage under the test's directory.
#[test]
fn podman_buildah_and_containerd_pull() {
    for tool in ["podman", "buildah", "containerd", "ctr"] {
        require_tool(tool);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, arm64) = two_layouts(tmp.path(), "s7");
    let arm = umoci_layout(tmp.path(), "arm", "s7");
    let v7 = format!("linux/arm/v7={}", s(&arm));
    let server = Server::start(&["app", s(&amd64), s(&arm64), &v7]);
    let image = format!("{}/app:latest", server.host);
    let index_digest = get(
        &server.url("/v2/app/manifests/latest"),
        &[&format!("Accept: {OCI_INDEX}")],
    )
    .header("docker-content-digest")
    .unwrap()
    .to_owned();

    let d = tmp.path();
    let cases: [(&[&str], &str); 3] = [
        (&["--arch", "arm64"], "arm64"),
        (&["--arch", "arm", "--variant", "v7"], "arm"),
        (&["--platform", "linux/amd64"], "amd64"),
    ];
    for (how, arch) in cases {
        assert_eq!(podman_pull_arch(d, &image, how), arch, "{how:?}");
    }
    run(storage(d, "buildah")
        .args(["pull", "-q", "--tls-verify=false", "--arch", "arm64"])
        .arg(format!("docker://{image}")));
    let got = run(storage(d, "buildah").args([
        "inspect",
        "--type",
        "image",
        "--format",
        "{{.OCIv1.Architecture}}",
        &image,
    ]));
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "arm64");
    let (listed, content) = ctr_pull_all_platforms(d, &image);
    assert!(listed.contains(&index_digest), "{listed}");
    assert!(
        listed.contains("linux/amd64,linux/arm/v7,linux/arm64"),
        "{listed}"
    );
    assert_eq!(
        content.lines().count(),
        10,
        "index, 3 manifests, 3 configs, 3 layers: {content}"
    );
}

#[test]
fn the_yocto_mode_serves_every_image_and_picks_up_new_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let build = tmp.path().join("build");
    let layouts = tmp.path().join("layouts");
    fs::create_dir_all(&layouts).unwrap();
    let (amd64, arm64) = two_layouts(&layouts, "s8");
    // As Yocto lays them out: a dated directory and a -latest-oci link to it.
    let deploy = |machine: &str, image: &str, layout: &Path| {
        let dir = build.join("tmp/deploy/images").join(machine);
        fs::create_dir_all(&dir).unwrap();
        let dated = dir.join(format!("{image}-{machine}-20261203120000.rootfs-oci"));
        run(Command::new("cp").arg("-a").arg(layout).arg(&dated));
        let link = dir.join(format!("{image}-{machine}-latest-oci"));
        std::os::unix::fs::symlink(dated.file_name().unwrap(), &link).unwrap();
        // The build user's, as everything BitBake writes.
        chown_r(&dated, "65534:65534");
        run(Command::new("chown").args(["-h", "65534:65534"]).arg(&link));
        chown(&dir, 65534);
    };
    deploy("qemux86-64", "app-container", &amd64);
    deploy("qemuarm64", "app-container", &arm64);
    // Another image of the build user's, with a root-only file planted in
    // it: refused by name, the others served.
    deploy("qemuarm64", "evil", &arm64);
    chown_r(&build, "65534:65534");
    let planted = first_layer(
        &build.join("tmp/deploy/images/qemuarm64/evil-qemuarm64-20261203120000.rootfs-oci"),
    );
    run(Command::new("chown").arg("0:0").arg(&planted));
    chmod(&planted, 0o600);
    // And one being written (no index.json yet): not taken.
    fs::create_dir_all(build.join("tmp/deploy/images/qemuarm64/half-qemuarm64-latest-oci"))
        .unwrap();
    let server = Server::start(&["--yocto", s(&build)]);
    let refused = format!("{}: uid 65534 (who owns its source", planted.display());
    wait_for(
        "the planted file to be refused by name",
        Duration::from_secs(10),
        || server.log().contains(&refused),
    );
    let catalog = get(&server.url("/v2/_catalog"), &[]).json();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["yocto/app-container"])
    );
    let index = get(
        &server.url("/v2/yocto/app-container/manifests/latest"),
        &[&format!("Accept: {OCI_INDEX}")],
    )
    .json();
    let mut archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    archs.sort();
    assert_eq!(archs, ["amd64", "arm64"]);
    // An image built later is served without a restart.
    deploy("qemuarm64", "base", &arm64);
    wait_for("the new image", Duration::from_secs(20), || {
        get(&server.url("/v2/_catalog"), &[]).json()["repositories"]
            == serde_json::json!(["yocto/app-container", "yocto/base"])
    });
    // Its link's tag, and its dated build as a tag of its own.
    assert_eq!(
        get(&server.url("/v2/yocto/base/tags/list"), &[]).json()["tags"],
        serde_json::json!(["20261203120000", "latest"])
    );
    // A machine built later joins the image it builds.
    let riscv = umoci_layout(&layouts, "riscv64", "s8");
    deploy("qemuriscv64", "app-container", &riscv);
    let index_url = server.url("/v2/yocto/app-container/manifests/latest");
    wait_for("the new machine", Duration::from_secs(20), || {
        let index = get(&index_url, &[&format!("Accept: {OCI_INDEX}")]).json();
        index["manifests"].as_array().map(Vec::len) == Some(3)
    });
}

/// A short replay of scripts/serve_soak.py (its figures from long runs are in
/// BENCHMARKS.md): readers re-hash every blob they pull while the source is
/// rebuilt in place; no wrong byte, the server exits 0.
#[test]
fn soak_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/serve_soak.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .env("OCIMUX", bin())
        .env("SOAK_SECS", "4")
        .env("READERS", "4")
        .env("SOAK_DIR", tmp.path().join("soak"))
        .output()
        .expect("run python3");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("wrong bytes: 0,"), "{report}");
}
