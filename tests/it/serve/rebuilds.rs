//! Rebuilds while clients pull: a pull under way finishes, a tag names
//! only documents that can be served.

use super::*;

#[test]
fn a_pull_that_began_before_a_rebuild_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("app-oci");
    let old_bytes = pattern(24 << 20, 1);
    let (_, old_layer) = ocimux::testing::testutil::LayoutBuilder::one_layer(&root, &old_bytes);
    let server = Server::start(&["app", s(&root)]);
    let accept = [format!("Accept: {OCI_INDEX}, {OCI_MANIFEST}")];
    let accept: Vec<&str> = accept.iter().map(String::as_str).collect();
    let index = get(&server.url("/v2/app/manifests/latest"), &accept);
    let old_index = index.header("docker-content-digest").unwrap().to_owned();
    let old_manifest = index.json()["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_digest = old_layer["digest"].as_str().unwrap().to_owned();

    // A slow pull of the old layer is under way …
    let mut c = body_of(&server.host, &format!("/v2/app/blobs/{old_digest}"));
    let mut body = vec![0u8; 4 << 20];
    c.read_exact(&mut body).unwrap();

    // … when the image is rebuilt and the old layer deleted.
    let (_, new_layer) =
        ocimux::testing::testutil::LayoutBuilder::one_layer(&root, &pattern(1 << 20, 2));
    fs::remove_file(root.join("blobs/sha256").join(hex(&old_layer))).unwrap();
    wait_for("the rebuild to be served", Duration::from_secs(10), || {
        get(&server.url("/v2/app/manifests/latest"), &accept).header("docker-content-digest")
            != Some(old_index.as_str())
    });
    let mut rest = Vec::new();
    c.get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut remaining = (24 << 20) - body.len();
    while remaining > 0 {
        let mut buf = vec![0u8; remaining.min(1 << 20)];
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "the body ended early");
        rest.extend_from_slice(&buf[..n]);
        remaining -= n;
    }
    body.extend_from_slice(&rest);
    assert_eq!(
        Digest::sha256_of(&body).to_string(),
        old_digest,
        "the old layer, whole"
    );

    // The old documents stay fetchable by digest (a retained snapshot); the
    // tag names the new image, whose layer is served.
    let old = get(
        &server.url(&format!("/v2/app/manifests/{old_manifest}")),
        &accept,
    );
    assert_eq!(old.status, 200);
    assert_eq!(Digest::sha256_of(&old.body).to_string(), old_manifest);
    let new_digest = new_layer["digest"].as_str().unwrap();
    let new = get(&server.url(&format!("/v2/app/blobs/{new_digest}")), &[]);
    assert_eq!(Digest::sha256_of(&new.body).to_string(), new_digest);
    // The deleted layer is gone for new requests.
    assert_eq!(
        get(&server.url(&format!("/v2/app/blobs/{old_digest}")), &[]).status,
        404
    );
}

/// Issue 23, class 11: a rebuild flips `…-latest-oci` to a new dated
/// directory and deletes the old one at once, again and again, while
/// clients pull. Every tag a client got names documents (the index, its
/// manifests, their configs) that are then served, whole.
#[test]
fn a_tag_names_only_documents_that_can_be_served() {
    use ocimux::testing::testutil::LayoutBuilder;
    let tmp = tempfile::tempdir().unwrap();
    let layer = pattern(4096, 7);
    let build = |n: u32| {
        let dir = tmp
            .path()
            .join(format!("app-qemux86-64-2026120500{n:04}.rootfs-oci"));
        let b = LayoutBuilder::new(&dir);
        let m = b.image(
            serde_json::json!({"os": "linux", "architecture": "amd64", "created": n.to_string()}),
            &[&layer],
        );
        b.index(&[(m, Some("latest"))]);
        dir
    };
    let link = tmp.path().join("app-qemux86-64-latest-oci");
    let mut current = build(0);
    std::os::unix::fs::symlink(&current, &link).unwrap();
    let server = Server::start(&["app", s(&link)]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (pulls, failures) = std::thread::scope(|scope| {
        let puller = scope.spawn(|| {
            let accept = [format!("Accept: {OCI_INDEX}, {OCI_MANIFEST}")];
            let accept: Vec<&str> = accept.iter().map(String::as_str).collect();
            let (mut pulls, mut failures) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                pulls += 1;
                let tag = get(&server.url("/v2/app/manifests/latest"), &accept);
                let Some(index) = tag.header("docker-content-digest").map(str::to_owned) else {
                    failures.push(format!("tag: {}", tag.status));
                    continue;
                };
                let mut docs = vec![format!("manifests/{index}")];
                for m in tag.json()["manifests"].as_array().unwrap() {
                    let digest = m["digest"].as_str().unwrap();
                    let manifest =
                        get(&server.url(&format!("/v2/app/manifests/{digest}")), &accept);
                    if manifest.status != 200 {
                        failures.push(format!("manifest {digest}: {}", manifest.status));
                        continue;
                    }
                    assert_eq!(Digest::sha256_of(&manifest.body).to_string(), digest);
                    let config = manifest.json()["config"]["digest"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    docs.push(format!("blobs/{config}"));
                }
                for doc in docs {
                    let got = get(&server.url(&format!("/v2/app/{doc}")), &accept);
                    if got.status != 200 {
                        failures.push(format!("{doc}: {}", got.status));
                    }
                }
            }
            (pulls, failures)
        });
        for n in 1..=30 {
            let next = build(n);
            let relink = tmp.path().join("relink");
            std::os::unix::fs::symlink(&next, &relink).unwrap();
            fs::rename(&relink, &link).unwrap();
            fs::remove_dir_all(&current).unwrap();
            current = next;
            std::thread::sleep(Duration::from_millis(300));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        puller.join().unwrap()
    });
    eprintln!("{pulls} pulls over 30 rebuilds, {} failed", failures.len());
    assert!(pulls > 30, "only {pulls} pulls");
    assert!(
        failures.is_empty(),
        "{} of {pulls} pulls failed: {failures:?}",
        failures.len()
    );
}
