//! The README's Yocto guide, run as written: its command block is taken from
//! README.md and run with bash on a build tree laid out as multiconfig
//! Yocto builds lay it out (umoci layouts behind `-latest-oci` symlinks, and
//! an `-oci.tar`), pushing to a local plain-HTTP registry: the only change is
//! a `skopeo` shim first on the PATH that adds `--dest-tls-verify=false`
//! (and `--tls-verify=false` to inspect), as a user of such a registry would.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::registry::Registry;

/// The command block between the guide's markers in README.md.
fn guide_block() -> String {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("<!-- yocto-guide:begin -->")
        .expect("the guide's begin marker");
    let end = readme
        .find("<!-- yocto-guide:end -->")
        .expect("the guide's end marker");
    let block = readme.get(start..end).expect("markers in order");
    let code = block
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block between the markers");
    code.to_owned()
}

fn deploy(build: &Path, mc: &str, machine: &str) -> std::path::PathBuf {
    let dir = build.join(format!("tmp-{mc}/deploy/images/{machine}"));
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_yocto_guide_runs_as_written() {
    require_tool("bash");
    require_tool("tar");
    let tmp = tempfile::tempdir().unwrap();
    let build = tmp.path().join("build");
    let work = tmp.path().join("work");
    fs::create_dir_all(&work).unwrap();
    for (mc, machine, arch) in [
        ("x86-64", "qemux86-64", "amd64"),
        ("arm64", "qemuarm64", "arm64"),
    ] {
        let dir = deploy(&build, mc, machine);
        let layout = umoci_layout(&dir, arch, "guide");
        let dated = dir.join(format!("app-container-{machine}-20261129.rootfs-oci"));
        fs::rename(&layout, &dated).unwrap();
        std::os::unix::fs::symlink(
            dated.file_name().unwrap(),
            dir.join(format!("app-container-{machine}-latest-oci")),
        )
        .unwrap();
    }
    let arm = umoci_layout(&work, "arm", "guide");
    let dir = deploy(&build, "arm", "qemuarm");
    run(Command::new("tar")
        .arg("-cf")
        .arg(dir.join("app-container-qemuarm-oci.tar"))
        .arg(".")
        .current_dir(&arm));
    let registry = Registry::start();
    let reg = format!("127.0.0.1:{}", registry.port);
    let skopeo =
        String::from_utf8(run(Command::new("sh").args(["-c", "command -v skopeo"])).stdout)
            .unwrap()
            .trim()
            .to_owned();
    let shims = tmp.path().join("shims");
    fs::create_dir(&shims).unwrap();
    let shim = shims.join("skopeo");
    fs::write(
        &shim,
        format!(
            "#!/bin/sh\ncmd=$1; shift\ncase $cmd in\n  \
             copy) exec {skopeo} copy --dest-tls-verify=false \"$@\";;\n  \
             inspect) exec {skopeo} inspect --tls-verify=false \"$@\";;\n  \
             *) exec {skopeo} \"$cmd\" \"$@\";;\nesac\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bin_dir = Path::new(bin()).parent().unwrap();
    let path = format!(
        "{}:{}:{}",
        shims.display(),
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &guide_block()])
        .env("BUILD", &build)
        .env("REGISTRY", &reg)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the guide failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("linux/arm/v7") && stdout.contains("0 bad"),
        "{stdout}"
    );
    // Both pushes hold the same generated index: three platforms, arm/v7 among them.
    let raw = |tag: &str| {
        run(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reg}/app:{tag}"),
        ]))
        .stdout
    };
    let pushed = raw("latest");
    assert_eq!(pushed, raw("export"));
    let index: serde_json::Value = serde_json::from_slice(&pushed).unwrap();
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            format!(
                "{}/{}{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap(),
                p["variant"]
                    .as_str()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64", "linux/arm/v7"]);
    assert!(
        !build.join("deploy-multiarch/index.json").exists(),
        "the preview was unmounted"
    );
}
