//! What is published: only what everyone who had a say in a source's path
//! may read, settings files only others cannot write, bytes only when they
//! hash to their name.

use super::*;

#[test]
fn only_what_the_sources_owner_may_read_is_published() {
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let (amd64, arm64) = two_layouts(tmp.path(), "s6");
    chown_r(&amd64, "65534:65534");
    chown_r(&arm64, "65534:65534");
    // umoci's own 0600 files: the build user's to publish.
    run(Command::new("chmod").args(["-R", "go-rwx"]).arg(&amd64));
    run(Command::new("chmod").args(["u+rwx"]).arg(&amd64));
    let server = Server::start(&["app", s(&amd64), s(&arm64)]);
    let pulled = tmp.path().join("pulled");
    skopeo_pull(&server, "app", &pulled);
    // A root-only file put into the build user's layout while serving (same
    // bytes, renamed over the blob): no longer served, and named in the log.
    let layer = first_layer(&arm64);
    let digest = format!("sha256:{}", layer.file_name().unwrap().to_string_lossy());
    let planted = arm64.join("planted");
    fs::copy(&layer, &planted).unwrap();
    chmod(&planted, 0o600);
    fs::rename(&planted, &layer).unwrap();
    let url = server.url(&format!("/v2/app/blobs/{digest}"));
    wait_for(
        "the root-only blob to be withheld",
        Duration::from_secs(10),
        || get(&url, &[]).status == 404,
    );
    let (_, log) = server.stop();
    assert!(
        log.contains(&format!("{}: not served", layer.display())),
        "{log}"
    );
    // At start: refused by name, exit 2.
    let out = ocimux(&["serve", "--listen", "127.0.0.1:0", "app", s(&arm64)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&layer.display().to_string()) && err.contains("may not read"),
        "{err}"
    );
    // A layout beneath a directory its owner cannot search.
    let private = tmp.path().join("private");
    fs::create_dir(&private).unwrap();
    chmod(&private, 0o700);
    let (hidden, _) =
        ocimux::testing::testutil::LayoutBuilder::one_layer(private.join("l"), b"layer");
    drop(hidden);
    chown_r(&private.join("l"), "65534:65534");
    let out = ocimux(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "app",
        s(&private.join("l")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("may not read"), "{err}");
    // A build user's `-latest-oci` link to a layout of root's that they
    // cannot read: the link's owner had a say, so it is refused (root could
    // read it, but did not choose it).
    let secret = tmp.path().join("secret");
    fs::create_dir(&secret).unwrap();
    chmod(&secret, 0o700);
    drop(ocimux::testing::testutil::LayoutBuilder::one_layer(
        secret.join("l"),
        b"root's",
    ));
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    chown(&home, 65534);
    let link = home.join("app-latest-oci");
    std::os::unix::fs::symlink(secret.join("l"), &link).unwrap();
    run(Command::new("chown").args(["-h", "65534:65534"]).arg(&link));
    let scoped = serve_once;
    let out = scoped(&link);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("may not read"), "{err}");
    // Root's own link to the same layout is root's to publish.
    let root_link = tmp.path().join("root-latest-oci");
    std::os::unix::fs::symlink(secret.join("l"), &root_link).unwrap();
    let out = scoped(&root_link);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 23, class 2: everyone who could have decided what a source path
/// names must be able to read what is published — the owner of and whoever
/// may write each directory on the path, so a build user's rename in a
/// shared deploy directory, or a hard link into their own, publishes
/// nothing they could not read. Checked at start and at every snapshot.
#[test]
fn whoever_chose_the_name_must_be_able_to_read_it() {
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let refused = |source: &Path| {
        let out = serve_once(source);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        match out.status.code() {
            Some(2) if err.contains("may not read") => true,
            Some(0) => false,
            other => panic!("{other:?}: {err}"),
        }
    };
    // Another user's private layout (0700, 0600 files), renamed to the
    // served name in a deploy directory group 4242 may write.
    let deploy = tmp.path().join("deploy");
    fs::create_dir(&deploy).unwrap();
    let (private, _) = ocimux::testing::testutil::LayoutBuilder::one_layer(
        deploy.join("app-latest-oci"),
        b"private",
    );
    chown_r(&private.root, "65534:65534");
    run(Command::new("chmod")
        .args(["-R", "go-rwx"])
        .arg(&private.root));
    run(Command::new("chown").args(["0:4242"]).arg(&deploy));
    chmod(&deploy, 0o755);
    assert!(!refused(&private.root), "its owner's to publish");
    chmod(&deploy, 0o775);
    assert!(
        refused(&private.root),
        "group 4242 could have renamed it there"
    );
    let err = String::from_utf8_lossy(&serve_once(&private.root).stderr).into_owned();
    assert!(
        err.contains("group 4242 may write a directory on its path"),
        "{err}"
    );
    chmod(&deploy, 0o1777);
    assert!(!refused(&private.root), "sticky: only its owner could have");
    chmod(&deploy, 0o757);
    assert!(refused(&private.root), "anyone could have renamed it there");
    chmod(&deploy, 0o755);

    // A root-only archive hard-linked into a build user's own directory.
    let archive = tmp.path().join("root-only.tar");
    let (layout, _) =
        ocimux::testing::testutil::LayoutBuilder::one_layer(tmp.path().join("l"), b"root's");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout.root)
        .arg("."));
    chmod(&archive, 0o600);
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    chown(&home, 65534);
    let linked = home.join("app-oci.tar");
    fs::hard_link(&archive, &linked).unwrap();
    assert!(!refused(&archive), "root's own name for it");
    assert!(refused(&linked), "the build user chose this name");

    // Live: the directory becomes group-writable while served; the next
    // snapshot withholds the blobs.
    chmod(&deploy, 0o755);
    let server = Server::start(&["app", s(&private.root)]);
    let accept = [format!("Accept: {OCI_INDEX}, {OCI_MANIFEST}")];
    let accept: Vec<&str> = accept.iter().map(String::as_str).collect();
    let tag = get(&server.url("/v2/app/manifests/latest"), &accept);
    let manifest = tag.json()["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = server.url(&format!("/v2/app/manifests/{manifest}"));
    assert_eq!(get(&url, &accept).status, 200);
    chmod(&deploy, 0o775);
    wait_for(
        "the manifest to be withheld",
        Duration::from_secs(10),
        || get(&url, &accept).status == 404,
    );
    let (_, log) = server.stop();
    assert!(log.contains("may not read"), "{log}");
}

/// Issue 23, class 12: settings files only root or the server's user could
/// have written or chosen are read (as sshd's StrictModes), and an error
/// never quotes what a settings file holds.
#[test]
fn settings_files_others_could_write_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (layout, _) = two_layouts(d, "strict");
    let good = format!(
        "[[repository]]\nname = \"app\"\nsources = [{:?}]\n",
        s(&layout)
    );
    let serve = |args: &[&str]| {
        let out = ocimux(&[&["serve", "--listen", "127.0.0.1:0"], args].concat());
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let file = |name: &str, text: &str, mode: u32, owner: Option<&str>| {
        let p = d.join(name);
        fs::write(&p, text).unwrap();
        chmod(&p, mode);
        if let Some(o) = owner {
            run(Command::new("chown").arg(o).arg(&p));
        }
        p
    };
    let shared_dir = d.join("shared");
    fs::create_dir(&shared_dir).unwrap();
    run(Command::new("chown").arg("65534:65534").arg(&shared_dir));
    fs::write(shared_dir.join("c.toml"), &good).unwrap();
    let secret = file("secret", "supersecret = [\n", 0o600, None);
    let link = d.join("link.toml");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    run(Command::new("chown").args(["-h", "65534:65534"]).arg(&link));
    let cases: Vec<(PathBuf, &str)> = vec![
        (file("w.toml", &good, 0o666, None), "others may write it"),
        (file("g.toml", &good, 0o620, None), "others may write it"),
        (
            file("n.toml", &good, 0o644, Some("65534:65534")),
            "owned by uid 65534",
        ),
        (shared_dir.join("c.toml"), "a directory above it"),
        (link.clone(), "a symbolic link to it is uid 65534's"),
    ];
    for (path, want) in &cases {
        let (code, stderr) = serve(&["--config", s(path)]);
        assert_eq!(code, Some(2), "{}: {stderr}", path.display());
        assert!(stderr.contains(want), "{}: {stderr}", path.display());
        assert!(!stderr.contains("supersecret"), "{stderr}");
    }
    // Root's own file with a mistake: where, never what.
    let broken = file("broken.toml", "listen = supersecret\n", 0o600, None);
    let (code, stderr) = serve(&["--config", s(&broken)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("line 1, column"), "{stderr}");
    assert!(!stderr.contains("supersecret"), "{stderr}");
    // The same rule for htpasswd and TLS files.
    let pw = file(
        "htpasswd",
        "u:$2y$05$abcdefghijklmnopqrstuu5Jd8e6Xq5rDgk0PqTz4a3D9j3QnQm4m\n",
        0o664,
        None,
    );
    let (code, stderr) = serve(&["--htpasswd", s(&pw), "app", s(&layout)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("others may write it"), "{stderr}");
    let key = file("key.pem", "not a key", 0o666, None);
    let cert = file("cert.pem", "not a cert", 0o644, None);
    let (code, stderr) = serve(&[
        "--tls-cert",
        s(&cert),
        "--tls-key",
        s(&key),
        "app",
        s(&layout),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("others may write it"), "{stderr}");
    // A file as it should be is read.
    let ok = file("ok.toml", &good, 0o644, None);
    let server = Server::start(&["--config", s(&ok)]);
    assert_eq!(
        get(&server.url("/v2/_catalog"), &[]).json()["repositories"],
        serde_json::json!(["app"])
    );
}

/// A blob file replaced by other bytes of the same size is hashed before it
/// is served, and refused, before and after the rebuild that follows (a new
/// file under a name already served is a new claim); with --verify every blob
/// version is hashed. Sources are never written.
#[test]
fn bytes_that_fail_their_digest_are_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("app-oci");
    let (b, layer) =
        ocimux::testing::testutil::LayoutBuilder::one_layer(&root, &pattern(3 << 20, 4));
    assert_ne!(pattern(3 << 20, 4), pattern(3 << 20, 5));
    let digest = layer["digest"].as_str().unwrap().to_owned();
    let path = b.blob_path(&layer);
    for args in [
        vec!["--static", "app", s(&root)],
        vec!["app", s(&root)],
        vec!["--verify", "app", s(&root)],
    ] {
        let before = tree_state(&root);
        let server = Server::start(&args);
        let url = server.url(&format!("/v2/app/blobs/{digest}"));
        assert_eq!(Digest::sha256_of(&get(&url, &[]).body).to_string(), digest);
        assert_eq!(
            tree_state(&root),
            before,
            "{args:?}: the source was not touched"
        );
        // Other bytes of the same size renamed over the blob.
        let forged = root.join("forged");
        fs::write(&forged, pattern(3 << 20, 5)).unwrap();
        fs::rename(&forged, &path).unwrap();
        let r = get(&url, &[]);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (500, "UNKNOWN"),
            "{args:?}"
        );
        // Still refused once the rebuild has recorded the new file.
        let index = server.url("/v2/app/manifests/latest");
        let accept = format!("Accept: {OCI_INDEX}, {OCI_MANIFEST}");
        if !args.contains(&"--static") {
            // The watcher's own report: nothing else shows a rebuild that
            // keeps every digest.
            wait_for("the rebuild", Duration::from_secs(10), || {
                server.log().contains("sources changed")
            });
            assert_eq!(get(&index, &[&accept]).status, 200);
        }
        assert_eq!(get(&url, &[]).status, 500, "{args:?}: after the rebuild");
        // The same bytes back (a new file): served again, once hashed.
        fs::write(&forged, pattern(3 << 20, 4)).unwrap();
        fs::rename(&forged, &path).unwrap();
        wait_for("the restored blob", Duration::from_secs(10), || {
            get(&url, &[]).status == 200
        });
        assert_eq!(Digest::sha256_of(&get(&url, &[]).body).to_string(), digest);
    }
    // Bound beyond loopback without TLS: a warning.
    let out = Command::new(bin())
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "app",
            s(&root),
            "--",
            "true",
        ])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("without TLS"), "{err}");
}
