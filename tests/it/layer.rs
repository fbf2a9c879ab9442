//! Issue 26: meta-ocimux under BitBake itself — the `bb` library of the
//! bitbake-setup package, in a virtual environment (scripts/bitbake-venv.sh),
//! driven by tests/layer/harness.py with stand-ins for what the layer takes
//! from OE-core (each says so). The class's task runs on a deploy tree made
//! as image-oci-umoci.inc makes one (umoci, tars, links; three multiconfigs,
//! one a 32-bit arm machine); the registry helper's verbs run against it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::*;
use crate::yocto::{Left, dated_build};

/// The repository's root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The virtual environment's python, made once for every test (a lock
/// keeps concurrent tests from making it twice).
fn python() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bb-venv");
    require_tool("flock");
    run(Command::new("flock")
        .arg(dir.with_extension("lock"))
        .arg(root().join("scripts/bitbake-venv.sh"))
        .arg(&dir));
    dir.join("bin/python3")
}

/// `harness.py ARGS…` with ocimux-native's binary on PATH.
fn harness(args: &[&str]) -> Output {
    let native = Path::new(bin()).parent().unwrap();
    Command::new(python())
        .arg(root().join("tests/layer/harness.py"))
        .args(args)
        .env("OCIMUX_NATIVE_BINDIR", native)
        .output()
        .expect("run the harness")
}

fn harness_json(args: &[&str]) -> Value {
    let out = harness(args);
    assert!(
        out.status.success(),
        "harness {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The crates.io packages of Cargo.lock: name-version → checksum.
fn locked_crates() -> BTreeMap<String, String> {
    let lock = fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let mut out = BTreeMap::new();
    for package in lock.split("[[package]]").skip(1) {
        let field = |k: &str| {
            package.lines().find_map(|l| {
                let v = l.strip_prefix(k)?.trim().strip_prefix("= ")?;
                Some(v.trim_matches('"').to_owned())
            })
        };
        if let (Some(n), Some(v), Some(c)) = (field("name"), field("version"), field("checksum")) {
            out.insert(format!("{n}-{v}"), c);
        }
    }
    out
}

#[test]
fn the_layer_its_recipe_and_class_parse_under_bitbake() {
    let r = harness_json(&["parse"]);
    assert_eq!(r["layer"]["LAYERDEPENDS_ocimux"], "core");
    assert_eq!(r["layer"]["LAYERSERIES_COMPAT_ocimux"], "wrynose");
    assert_eq!(
        r["layer"]["BBFILE_COLLECTIONS"].as_str().unwrap().trim(),
        "ocimux"
    );

    // The recipe: cargo, its crates from Cargo.lock, built native and nativesdk too.
    let recipes = r["recipe"].as_object().unwrap();
    // BBCLASSEXTEND's variants (how OE-core's native and nativesdk classes
    // rename them is theirs: stand-ins here).
    let variants: BTreeSet<&str> = recipes.keys().map(String::as_str).collect();
    assert_eq!(variants, BTreeSet::from(["target", "native", "nativesdk"]));
    assert_eq!(r["recipe"]["native"]["PN"], "ocimux-native");
    let target = &r["recipe"]["target"];
    let inherits: Vec<&str> = target["inherits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        inherits.contains(&"cargo.bbclass") && inherits.contains(&"externalsrc.bbclass"),
        "{inherits:?}"
    );
    assert_eq!(target["BBCLASSEXTEND"], "native nativesdk");
    assert_eq!(
        target["EXTERNALSRC"],
        root().to_str().unwrap(),
        "the checkout the layer is in"
    );
    let locked = locked_crates();
    let uris: BTreeSet<String> = target["SRC_URI"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| {
            u.as_str()?
                .strip_prefix("crate://crates.io/")
                .map(|c| c.replace('/', "-"))
        })
        .collect();
    assert_eq!(uris, locked.keys().cloned().collect::<BTreeSet<_>>());
    for (crate_, sum) in &locked {
        assert_eq!(
            target["checksums"][format!("{crate_}.sha256sum")],
            sum.as_str(),
            "{crate_}"
        );
    }
    // LIC_FILES_CHKSUM's md5 is of the line it names, as OE-core checks it.
    let lic = target["LIC_FILES_CHKSUM"].as_str().unwrap();
    let line: usize = lic
        .split("beginline=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let md5 = lic.rsplit("md5=").next().unwrap();
    let toml = fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let text = format!("{}\n", toml.lines().nth(line - 1).unwrap());
    assert!(text.starts_with("license = "), "{text}");
    let sum = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        });
    assert!(String::from_utf8_lossy(&sum.unwrap().stdout).starts_with(md5));

    // The class: each platform's image task in its multiconfig, ocimux-native, then deploy.
    let tasks = &r["class"]["tasks"];
    let create = &tasks["do_create_multiarch_index"];
    assert_eq!(
        create["mcdepends"],
        "mc::container-aarch64:app-container:do_image_oci mc::container-x86-64:app-container:do_image_oci \
         mc::container-arm:app-container:do_image_oci"
    );
    assert!(
        create["depends"]
            .as_str()
            .unwrap()
            .contains("ocimux-native:do_populate_sysroot")
    );
    assert_eq!(
        tasks["do_deploy"]["deps"],
        serde_json::json!(["do_create_multiarch_index"])
    );
    let out = r["class"]["OCI_MULTIARCH_OUTPUT"].as_str().unwrap();
    let deploy = r["class"]["DEPLOY_DIR_IMAGE"].as_str().unwrap();
    assert_eq!(
        out,
        format!("{deploy}/app-container-multiarch-multiarch-oci"),
        "oci-multiarch's path"
    );

    // The registry helper's generator and container-registry.sh's defaults.
    let reg = &r["registry"];
    assert!(
        reg["tasks"]["do_generate_registry_script"]["depends"]
            .as_str()
            .unwrap()
            .contains("ocimux-native")
    );
    assert_eq!(reg["settings"]["CONTAINER_REGISTRY_URL"], "localhost:5000");
    assert_eq!(reg["settings"]["CONTAINER_REGISTRY_NAMESPACE"], "yocto");
    assert_eq!(
        reg["settings"]["CONTAINER_REGISTRY_TAG_STRATEGY"],
        "timestamp latest"
    );
}

#[test]
fn ocimux_crates_inc_matches_cargo_lock() {
    run(Command::new("python3")
        .arg(root().join("scripts/yocto-crates.py"))
        .arg("--check"));
}

/// A build's TOPDIR with three multiconfigs' deploy trees of app-container,
/// two dated builds each, as image-oci-umoci.inc writes them.
fn build_tree(top: &Path) {
    fs::create_dir_all(top.join("conf/multiconfig")).unwrap();
    fs::write(
        top.join("conf/local.conf"),
        "BBMULTICONFIG = \"container-aarch64 container-x86-64 container-arm\"\n",
    )
    .unwrap();
    let machines = [
        ("container-aarch64", "qemuarm64", "arm64"),
        ("container-x86-64", "qemux86-64", "amd64"),
        ("container-arm", "qemuarm", "arm"),
    ];
    for (mc, machine, arch) in machines {
        fs::write(
            top.join(format!("conf/multiconfig/{mc}.conf")),
            format!("MACHINE = \"{machine}\"\nTMPDIR = \"${{TOPDIR}}/tmp-{mc}\"\n"),
        )
        .unwrap();
        let dir = top.join(format!("tmp-{mc}/deploy/images/{machine}"));
        for stamp in ["20261204120000", "20261205120000"] {
            dated_build(&dir, machine, stamp, arch, Left::All);
            // OE-core's write_image_test_data, beside each image.
            fs::write(
                dir.join(format!("app-container-{machine}-{stamp}.testdata.json")),
                serde_json::json!({"MACHINE": machine, "PV": format!("2.0.{}", &stamp[7..8])})
                    .to_string(),
            )
            .unwrap();
        }
    }
}

/// What the deploy trees of the machines hold (bytes, mode, mtime).
fn machines_state(top: &Path) -> BTreeMap<PathBuf, (String, u32, i64)> {
    let mut all = BTreeMap::new();
    for mc in ["container-aarch64", "container-x86-64", "container-arm"] {
        all.extend(tree_state(&top.join(format!("tmp-{mc}"))));
    }
    all
}

/// Distinct blob files of the machines' `-latest-oci` layouts and their
/// bytes: what oci-multiarch.bbclass's merge copies (every file of each
/// blobs/sha256, once by name).
fn what_oci_multiarch_copies(top: &Path) -> (usize, u64) {
    let mut seen = BTreeMap::new();
    for (mc, machine) in [
        ("container-aarch64", "qemuarm64"),
        ("container-x86-64", "qemux86-64"),
        ("container-arm", "qemuarm"),
    ] {
        let blobs = top.join(format!(
            "tmp-{mc}/deploy/images/{machine}/app-container-latest-oci/blobs/sha256"
        ));
        for e in fs::read_dir(blobs).unwrap() {
            let e = e.unwrap();
            seen.entry(e.file_name())
                .or_insert(e.metadata().unwrap().len());
        }
    }
    (seen.len(), seen.values().sum())
}

#[test]
fn the_class_links_three_machines_into_one_layout_skopeo_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().join("build");
    build_tree(&top);
    let before = machines_state(&top);
    let r = harness_json(&[
        "run-class",
        top.to_str().unwrap(),
        "OCI_IMAGE_TAR_OUTPUT = \"true\"",
    ]);
    let out = PathBuf::from(r["OCI_MULTIARCH_OUTPUT"].as_str().unwrap());
    assert_eq!(
        out,
        top.join("tmp/deploy/images/qemux86-64/app-container-multiarch-multiarch-oci")
    );
    assert_eq!(
        machines_state(&top),
        before,
        "the machines' deploy trees are not modified"
    );
    let leftovers: Vec<_> = fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut want = vec![
        "app-container-multiarch-multiarch-oci",
        "app-container-multiarch-multiarch-oci.tar",
    ];
    let mut have: Vec<&str> = leftovers.iter().map(String::as_str).collect();
    have.sort();
    want.sort();
    assert_eq!(have, want, "only the class's own outputs");

    // Every blob is a link to a machine's file: 0 bytes copied.
    let source_inodes: BTreeSet<(u64, u64)> = machines_state(&top)
        .keys()
        .filter_map(|p| {
            fs::symlink_metadata(p)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| (m.dev(), m.ino()))
        })
        .collect();
    let mut linked = 0;
    for e in fs::read_dir(out.join("blobs/sha256")).unwrap() {
        let m = e.unwrap().metadata().unwrap();
        if source_inodes.contains(&(m.dev(), m.ino())) {
            linked += 1;
        }
    }
    let index = json_file(&out.join("index.json"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    let served = fs::read_dir(out.join("blobs/sha256")).unwrap().count();
    assert_eq!(
        linked,
        served - 1,
        "every blob but the generated index is linked"
    );
    let (copied_files, copied_bytes) = what_oci_multiarch_copies(&top);
    eprintln!(
        "ocimux-multiarch: {linked} blobs linked, 0 bytes copied; oci-multiarch.bbclass's merge \
         would copy {copied_files} files, {copied_bytes} bytes"
    );

    // What clients read: ocimux verify, then skopeo copy --all, platforms and all.
    run(Command::new(bin()).arg("verify").arg(&out));
    let copy = tmp.path().join("copy");
    let raw = skopeo_copy_all(&out, &copy, "latest");
    let list: Value = serde_json::from_slice(&raw).unwrap();
    let mut platforms = platforms_of(&list);
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm/v7", "linux/arm64"]);
    // The archive (OCI_IMAGE_TAR_OUTPUT) holds the same image.
    let tar = out.with_extension("tar");
    let archive = format!("oci-archive:{}", tar.display());
    run(Command::new(bin()).arg("verify").arg(&archive));
    let inspected =
        run(Command::new("skopeo").args(["inspect", "--raw", &format!("{archive}:latest")]));
    assert_eq!(
        serde_json::from_slice::<Value>(&inspected.stdout).unwrap(),
        list
    );
}

#[test]
fn a_missing_machine_or_a_misconfigured_variable_stops_the_task_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().join("build");
    build_tree(&top);
    let before = machines_state(&top);
    let missing = top.join("tmp-container-arm/deploy/images/qemuarm-nope");
    let cases: [(&str, Vec<String>); 5] = [
        (
            "OCI_MULTIARCH_MACHINE[arm] = \"qemuarm-nope\"",
            vec![
                "OCI image not found for arm (container-arm:app-container)".into(),
                format!("{}/app-container-latest-oci", missing.display()),
                format!(
                    "{}/app-container-qemuarm-nope-latest-oci",
                    missing.display()
                ),
                format!("{}/app-container-oci", missing.display()),
            ],
        ),
        (
            "OCI_MULTIARCH_PLATFORMS = \"\"",
            vec!["OCI_MULTIARCH_PLATFORMS is not set".into()],
        ),
        (
            "OCI_MULTIARCH_RECIPE = \"\"",
            vec!["OCI_MULTIARCH_RECIPE is not set".into()],
        ),
        (
            "OCI_MULTIARCH_MC[arm] = \"\"",
            vec!["OCI_MULTIARCH_MC[arm] is not set".into()],
        ),
        (
            "OCI_ARCH_TO_PLATFORM[arm] = \"arm v7\"",
            vec!["OCI_ARCH_TO_PLATFORM[arm] = 'arm v7'".into()],
        ),
    ];
    for (line, wanted) in cases {
        let out = harness(&["run-class", top.to_str().unwrap(), line]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{line}: {err}");
        for w in &wanted {
            assert!(err.contains(w.as_str()), "{line}: {w:?} in {err}");
        }
        let deploy = top.join("tmp/deploy/images/qemux86-64");
        assert_eq!(
            fs::read_dir(&deploy).map_or(0, |d| d.count()),
            0,
            "{line}: nothing written"
        );
        assert_eq!(machines_state(&top), before, "{line}");
    }
}

/// `SCRIPT VERB ARGS…` of the registry helper.
fn helper(script: &Path, args: &[&str]) -> Output {
    Command::new(script)
        .args(args)
        .output()
        .expect("run ocimux-registry.sh")
}

fn helper_ok(script: &Path, args: &[&str]) -> String {
    let out = helper(script, args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_registry_helper_serves_the_build_and_pushes_to_a_registry() {
    require_tool("curl");
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().join("build");
    build_tree(&top);
    let before = machines_state(&top);
    let r = harness_json(&[
        "generate-registry",
        top.to_str().unwrap(),
        "CONTAINER_REGISTRY_URL=127.0.0.1:0",
    ]);
    let state = PathBuf::from(r["OCIMUX_REGISTRY_DIR"].as_str().unwrap());
    assert_eq!(state, top.join("ocimux-registry"));
    let script = state.join("ocimux-registry.sh");

    // A guard: the server is stopped however the test ends.
    struct Stopped<'a>(&'a Path);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            let _ = helper(self.0, &["stop"]);
        }
    }
    let _stopped = Stopped(&script);
    let started = helper_ok(&script, &["start"]);
    assert!(started.contains("ocimux registry started"), "{started}");
    assert!(helper_ok(&script, &["start"]).contains("already running"));
    let pid: i32 = fs::read_to_string(state.join("ocimux-serve.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = helper_ok(&script, &["status"]);
    assert!(
        status.contains("running") && status.contains(top.to_str().unwrap()),
        "{status}"
    );

    assert_eq!(
        helper_ok(&script, &["catalog"]).trim(),
        "yocto/app-container"
    );
    let tags = helper_ok(&script, &["tags", "app-container"]);
    let tags: BTreeSet<&str> = tags.lines().collect();
    // latest, the dated builds, and the version each recorded (PV).
    assert_eq!(
        tags,
        BTreeSet::from([
            "20261204120000",
            "20261205120000",
            "latest",
            "2.0.4",
            "2.0.5"
        ])
    );
    let list = helper_ok(&script, &["list"]);
    assert!(
        list.starts_with("yocto/app-container: ") && list.contains("latest"),
        "{list}"
    );

    // A client pulls what the build made; the local registry has nothing to push.
    let url = fs::read_to_string(state.join("ocimux-serve.url")).unwrap();
    let host = url.trim().trim_start_matches("http://").to_owned();
    let pulled = tmp.path().join("pulled");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{host}/yocto/app-container:latest"),
        &format!("oci:{}:latest", pulled.display()),
    ]));
    let served_index = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{host}/yocto/app-container:latest"),
    ]))
    .stdout;
    let index_of = |tag: &str| {
        let r = format!("docker://{host}/yocto/app-container:{tag}");
        run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &r])).stdout
    };
    assert_eq!(
        index_of("2.0.5"),
        index_of("20261205120000"),
        "a version names its newest build"
    );
    assert_eq!(index_of("2.0.4"), index_of("20261204120000"));
    assert_ne!(index_of("2.0.4"), index_of("2.0.5"));
    let push = helper_ok(&script, &["push"]);
    assert!(push.contains("nothing to push"), "{push}");

    // push to a registry: every tag the strategy names, the same index.
    let registry = crate::registry::Registry::start();
    let remote = format!("127.0.0.1:{}", registry.port);
    let pushed = helper_ok(&script, &["push", &remote]);
    assert_eq!(
        pushed.matches("pushing yocto/app-container:").count(),
        3,
        "{pushed}"
    );
    let remote_tags = || -> BTreeSet<String> {
        let url = format!("http://{remote}/v2/yocto/app-container/tags/list");
        let list: Value =
            serde_json::from_slice(&run(Command::new("curl").args(["-sf", &url])).stdout).unwrap();
        list["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    };
    let want: BTreeSet<String> = ["latest", "20261204-120000", "20261205-120000"]
        .map(String::from)
        .into();
    assert_eq!(
        remote_tags(),
        want,
        "timestamp latest, as container-registry.sh writes them"
    );
    // container-registry.sh's push options: a version given, nested semver,
    // an arch suffix naming each platform's manifest; PV from testdata.json.
    let pushed = helper_ok(
        &script,
        &[
            "push",
            &remote,
            "--strategy",
            "semver arch",
            "--version",
            "1.2.3",
        ],
    );
    assert_eq!(pushed.matches("pushing ").count(), 12, "{pushed}");
    let pushed = helper_ok(&script, &["push", &remote, "--strategy", "version sha"]);
    assert!(
        pushed.contains("to 127.0.0.1:") && pushed.contains(":2.0.5"),
        "{pushed}"
    );
    let tags = remote_tags();
    for t in [
        "1.2.3",
        "1.2",
        "1",
        "1.2.3-x86_64",
        "1.2-aarch64",
        "1-arm",
        "2.0.5",
    ] {
        assert!(tags.contains(t), "{t} in {tags:?}");
    }
    let digest_of = |r: &str| {
        let raw =
            run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", r])).stdout;
        ocimux::oci::digest::Digest::sha256_of(&raw).to_string()
    };
    let amd64 = serde_json::from_slice::<Value>(&served_index).unwrap()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let x86 = format!("docker://{remote}/yocto/app-container:1.2.3-x86_64");
    assert_eq!(
        digest_of(&x86),
        amd64,
        "the arch tag names that platform's manifest"
    );
    let sha = helper(&script, &["push", &remote, "--strategy", "sha"]);
    assert!(String::from_utf8_lossy(&sha.stderr).contains("needs git metadata"));
    let there = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{remote}/yocto/app-container:latest"),
    ]))
    .stdout;
    assert_eq!(there, served_index, "the same index, byte for byte");

    // import: a third-party image served beside the build's.
    let third = umoci_layout(tmp.path(), "riscv64", "third party");
    let imported = helper_ok(
        &script,
        &["import", &format!("oci:{}:latest", third.display()), "tool"],
    );
    assert!(imported.contains("yocto/tool:latest"), "{imported}");
    wait_for(
        "the import to be served",
        std::time::Duration::from_secs(30),
        || {
            helper_ok(&script, &["catalog"])
                .lines()
                .any(|l| l == "yocto/tool")
        },
    );
    let bad = helper(&script, &["import", "oci:/nonexistent:latest", "Bad Name"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("import name 'Bad Name'"));
    assert_eq!(helper(&script, &["gc"]).status.code(), Some(2));

    // stop: nothing left running.
    assert!(helper_ok(&script, &["stop"]).contains("stopped"));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still runs"
    );
    assert!(!state.join("ocimux-serve.pid").exists());
    assert_eq!(helper(&script, &["status"]).status.code(), Some(1));
    assert_eq!(
        machines_state(&top),
        before,
        "the machines' deploy trees are not modified"
    );
}
