//! The README's Yocto guide, run as written: its command block is taken from
//! README.md and run with bash on a build tree laid out as meta-virtualization
//! lays it out (`yocto::meta_virtualization_tree`), pushing to a local
//! plain-HTTP registry: the only change is
//! a `skopeo` shim first on the PATH that adds `--dest-tls-verify=false`
//! (and `--tls-verify=false` to inspect), as a user of such a registry would.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::registry::Registry;
use crate::yocto::meta_virtualization_tree;

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

#[test]
fn the_yocto_guide_runs_as_written() {
    require_tool("bash");
    require_tool("tar");
    require_tool("curl");
    let tmp = tempfile::tempdir().unwrap();
    let build = tmp.path().join("build");
    meta_virtualization_tree(&build);
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
    // What the server served, pushed on: the two machines built by then.
    let served: serde_json::Value = serde_json::from_slice(&raw("20261204130000")).unwrap();
    assert_eq!(
        served["manifests"].as_array().map(Vec::len),
        Some(2),
        "{served}"
    );
    assert!(stdout.contains("\"20261205140000\""), "tags/list: {stdout}");
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
