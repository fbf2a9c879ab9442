//! The API as the distribution spec and docker-registry answer it: every
//! endpoint, tags, referrers, TLS and authentication, a scoped server, a stop.

use super::*;

#[test]
fn every_endpoint_answers_as_the_spec_says() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, arm64) = two_layouts(tmp.path(), "s2");
    let server = Server::start(&[
        "--platform-tags",
        "--tag",
        "v1",
        "a/b",
        s(&amd64),
        s(&arm64),
    ]);
    let u = |p: &str| server.url(p);
    let oci = format!("Accept: {OCI_INDEX}, {OCI_MANIFEST}");
    let base = get(&u("/v2/"), &[]);
    assert_eq!(base.status, 200);
    assert_eq!(
        base.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    // Tags: sorted, paginated with n, last and Link.
    let tags = get(&u("/v2/a/b/tags/list"), &[]).json();
    assert_eq!(tags["name"], "a/b");
    assert_eq!(
        tags["tags"],
        serde_json::json!(["v1", "v1-linux-amd64", "v1-linux-arm64"])
    );
    let p1 = get(&u("/v2/a/b/tags/list?n=2"), &[]);
    assert_eq!(
        p1.json()["tags"],
        serde_json::json!(["v1", "v1-linux-amd64"])
    );
    assert_eq!(
        p1.header("link"),
        Some("</v2/a/b/tags/list?last=v1-linux-amd64&n=2>; rel=\"next\"")
    );
    let p2 = get(&u("/v2/a/b/tags/list?n=2&last=v1-linux-amd64"), &[]);
    assert_eq!(p2.json()["tags"], serde_json::json!(["v1-linux-arm64"]));
    assert_eq!(p2.header("link"), None);
    assert_eq!(
        get(&u("/v2/a/b/tags/list?n=x"), &[]).error_code(),
        "PAGINATION_NUMBER_INVALID"
    );
    assert_eq!(
        get(&u("/v2/_catalog"), &[]).json()["repositories"],
        serde_json::json!(["a/b"])
    );

    // The index by tag, then by digest, GET and HEAD agree.
    let index = get(&u("/v2/a/b/manifests/v1"), &[&oci]);
    assert_eq!(index.status, 200);
    assert_eq!(index.header("content-type"), Some(OCI_INDEX));
    let digest = index.header("docker-content-digest").unwrap().to_owned();
    assert_eq!(Digest::sha256_of(&index.body).to_string(), digest);
    assert_eq!(
        index.header("content-length"),
        Some(index.body.len().to_string().as_str())
    );
    let head = curl(
        "HEAD",
        &u(&format!("/v2/a/b/manifests/{digest}")),
        &[&oci],
        &[],
    );
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, index.header("content-length"))
    );
    let etag = index.header("etag").unwrap().to_owned();
    let cached = get(
        &u("/v2/a/b/manifests/v1"),
        &[&oci, &format!("If-None-Match: {etag}")],
    );
    assert_eq!(cached.status, 304);
    // Without an Accept that names it, docker-distribution's answer.
    let refused = get(&u("/v2/a/b/manifests/v1"), &[]);
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (404, "MANIFEST_UNKNOWN")
    );

    // Every platform manifest, and every blob it names, by digest.
    for m in index.json()["manifests"].as_array().unwrap() {
        let d = m["digest"].as_str().unwrap();
        let man = get(&u(&format!("/v2/a/b/manifests/{d}")), &[&oci]);
        assert_eq!(man.status, 200);
        assert_eq!(man.header("content-type"), m["mediaType"].as_str());
        assert_eq!(Digest::sha256_of(&man.body).to_string(), d);
        let doc = man.json();
        let layers = doc["layers"].as_array().unwrap().iter();
        for desc in layers.chain([&doc["config"]]) {
            let bd = desc["digest"].as_str().unwrap();
            let blob = get(&u(&format!("/v2/a/b/blobs/{bd}")), &[]);
            assert_eq!(blob.status, 200);
            assert_eq!(Digest::sha256_of(&blob.body).to_string(), bd);
            assert_eq!(blob.header("docker-content-digest"), Some(bd));
            assert_eq!(
                blob.header("content-type"),
                Some("application/octet-stream")
            );
        }
    }
    // Ranges: one is served (206), several or past the end are not (416).
    let layer = index.json()["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let man = get(&u(&format!("/v2/a/b/manifests/{layer}")), &[&oci]).json();
    let ld = man["layers"][0]["digest"].as_str().unwrap().to_owned();
    let size = man["layers"][0]["size"].as_u64().unwrap();
    let whole = get(&u(&format!("/v2/a/b/blobs/{ld}")), &[]).body;
    let part = get(&u(&format!("/v2/a/b/blobs/{ld}")), &["Range: bytes=10-19"]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, whole[10..20]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 10-19/{size}").as_str())
    );
    let tail = get(&u(&format!("/v2/a/b/blobs/{ld}")), &["Range: bytes=-5"]);
    assert_eq!(tail.body, whole[whole.len() - 5..]);
    for bad in ["bytes=0-1,5-6", &format!("bytes={size}-"), "bytes=x-y"] {
        let r = get(
            &u(&format!("/v2/a/b/blobs/{ld}")),
            &[&format!("Range: {bad}")],
        );
        assert_eq!(r.status, 416, "{bad}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{size}").as_str())
        );
    }

    // Referrers: an empty index, never 404; the filter is reported.
    let refs = get(&u(&format!("/v2/a/b/referrers/{digest}")), &[]);
    assert_eq!(refs.status, 200);
    assert_eq!(refs.header("content-type"), Some(OCI_INDEX));
    assert_eq!(refs.json()["manifests"], serde_json::json!([]));
    let filtered = get(
        &u(&format!("/v2/a/b/referrers/{digest}?artifactType=x%2Fy")),
        &[],
    );
    assert_eq!(filtered.header("oci-filters-applied"), Some("artifactType"));

    // Errors: each the spec's JSON with its status.
    let missing = "sha256:".to_owned() + &"0".repeat(64);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("GET", "/v2/nope/tags/list".into(), 404, "NAME_UNKNOWN"),
        (
            "GET",
            "/v2/a/b/manifests/nope".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "GET",
            format!("/v2/a/b/manifests/{missing}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "GET",
            format!("/v2/a/b/manifests/{ld}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "GET",
            format!("/v2/a/b/blobs/{missing}"),
            404,
            "BLOB_UNKNOWN",
        ),
        (
            "GET",
            "/v2/a/b/blobs/sha256:zz".into(),
            400,
            "DIGEST_INVALID",
        ),
        ("GET", "/v2/a/b/blobs/md5:00".into(), 400, "DIGEST_INVALID"),
        ("GET", "/v2/A/tags/list".into(), 400, "NAME_INVALID"),
        ("GET", "/v2/../tags/list".into(), 400, "NAME_INVALID"),
        ("GET", "/v2/%2e%2e/tags/list".into(), 400, "NAME_INVALID"),
        (
            "GET",
            format!("/v2/{}/tags/list", "a".repeat(256)),
            400,
            "NAME_INVALID",
        ),
        ("PUT", "/v2/a/b/manifests/v1".into(), 405, "UNSUPPORTED"),
        ("DELETE", format!("/v2/a/b/blobs/{ld}"), 405, "UNSUPPORTED"),
        ("POST", "/v2/a/b/blobs/uploads/".into(), 405, "UNSUPPORTED"),
        (
            "PATCH",
            "/v2/a/b/blobs/uploads/x".into(),
            405,
            "UNSUPPORTED",
        ),
    ];
    for (method, path, status, code) in cases {
        let r = curl(method, &u(&path), &[], &[]);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (status, code),
            "{method} {path}"
        );
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        // RFC 9110: a 405 says what the resource allows.
        if status == 405 {
            let allow = if path.contains("/uploads") {
                ""
            } else {
                "GET, HEAD"
            };
            assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
        }
    }
    // Methods an endpoint does not have, and paths that name none: as
    // docker-registry's router answers them (the spec defines no code).
    for (method, path, status, allow) in [
        ("HEAD", "/v2/a/b/tags/list", 405, Some("GET")),
        ("OPTIONS", "/v2/_catalog", 405, Some("GET")),
        ("GET", "/v2/a/b/blobs/uploads/x", 405, Some("")),
        ("GET", "/other", 404, None),
        ("GET", "/v2/a/b/nothing", 404, None),
    ] {
        let r = curl(method, &u(path), &[], &[]);
        assert_eq!(r.status, status, "{method} {path}");
        assert_eq!(r.header("allow"), allow, "{method} {path}");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    }
    // Percent-encoded paths are decoded, then validated.
    assert_eq!(get(&u("/v2/a/b/manifests/v%31"), &[&oci]).status, 200);
    assert_eq!(get(&u("/v2/a%2Fb/tags/list"), &[]).json()["name"], "a/b");
    assert_eq!(get(&u("/v2/a/b/manifests/v%00"), &[]).status, 404);
}

/// The same images pushed to docker-registry 2.8 (`--preserve-digests`) and
/// served by ocimux answer the same requests with the same status, bodies,
/// digests and headers.
#[test]
fn answers_as_docker_registry_does() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, arm64) = two_layouts(tmp.path(), "s3");
    let m = Mount::new(&tmp.path().join("mnt"), &[s(&amd64), s(&arm64)]);
    let registry = crate::registry::Registry::start();
    let reg_host = format!("127.0.0.1:{}", registry.port);
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "-q",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}", m.dir.display()),
        &format!("docker://{reg_host}/a/b:latest"),
    ]));
    let server = Server::start(&["a/b", s(&amd64), s(&arm64)]);
    let oci_index = format!("Accept: {OCI_INDEX}");
    let oci_manifest = format!("Accept: {OCI_MANIFEST}");
    let both = format!("Accept: {OCI_MANIFEST}, {OCI_INDEX};q=0.9");
    let index = get(&server.url("/v2/a/b/manifests/latest"), &[&oci_index]);
    let index_digest = index.header("docker-content-digest").unwrap().to_owned();
    let platform = index.json()["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let man = get(
        &server.url(&format!("/v2/a/b/manifests/{platform}")),
        &[&both],
    )
    .json();
    let layer = man["layers"][0]["digest"].as_str().unwrap().to_owned();
    let missing = "sha256:".to_owned() + &"0".repeat(64);
    let layer_etag = format!("If-None-Match: \"{layer}\"");
    let layer_bare = format!("If-None-Match: {layer}");
    let platform_bare = format!("If-None-Match: {platform}");
    let requests: Vec<(&str, String, Vec<&str>)> = vec![
        // Issue 25: methods, paths that name nothing, escapes, validators.
        ("HEAD", "/v2/a/b/tags/list".into(), vec![]),
        ("HEAD", "/v2/_catalog".into(), vec![]),
        ("GET", "/v2/a/b/nothing".into(), vec![]),
        ("GET", "/v2/nothing".into(), vec![]),
        ("GET", "/v2/a/b/blobs/sha256:zz".into(), vec![]),
        ("GET", "/v2/a/b/manifests/lat%65st".into(), vec![&oci_index]),
        ("GET", "/v2/a%2fb/tags/list".into(), vec![]),
        ("GET", format!("/v2/a/b/blobs/{layer}"), vec![&layer_etag]),
        ("GET", format!("/v2/a/b/blobs/{layer}"), vec![&layer_bare]),
        (
            "GET",
            format!("/v2/a/b/manifests/{platform}"),
            vec![&oci_manifest, &platform_bare],
        ),
        ("GET", "/v2/".into(), vec![]),
        ("GET", "/v2/a/b/manifests/latest".into(), vec![&oci_index]),
        ("GET", "/v2/a/b/manifests/latest".into(), vec![&both]),
        ("HEAD", "/v2/a/b/manifests/latest".into(), vec![&oci_index]),
        ("GET", "/v2/a/b/manifests/latest".into(), vec![]),
        (
            "GET",
            "/v2/a/b/manifests/latest".into(),
            vec![&oci_manifest],
        ),
        (
            "GET",
            format!("/v2/a/b/manifests/{index_digest}"),
            vec![&oci_index],
        ),
        ("GET", format!("/v2/a/b/manifests/{index_digest}"), vec![]),
        (
            "GET",
            format!("/v2/a/b/manifests/{platform}"),
            vec![&oci_manifest],
        ),
        (
            "HEAD",
            format!("/v2/a/b/manifests/{platform}"),
            vec![&oci_manifest],
        ),
        (
            "GET",
            format!("/v2/a/b/manifests/{platform}"),
            vec![&oci_index],
        ),
        (
            "GET",
            format!("/v2/a/b/manifests/{platform}"),
            vec!["Accept: */*"],
        ),
        ("GET", format!("/v2/a/b/blobs/{layer}"), vec![]),
        ("HEAD", format!("/v2/a/b/blobs/{layer}"), vec![]),
        (
            "GET",
            format!("/v2/a/b/blobs/{layer}"),
            vec!["Range: bytes=5-99"],
        ),
        ("GET", format!("/v2/a/b/blobs/{missing}"), vec![]),
        (
            "GET",
            format!("/v2/a/b/manifests/{missing}"),
            vec![&oci_index],
        ),
        ("GET", "/v2/a/b/manifests/nope".into(), vec![&oci_index]),
        ("GET", "/v2/a/b/tags/list".into(), vec![]),
        ("GET", "/v2/x/y/tags/list".into(), vec![]),
    ];
    // Headers both must agree on (dates and ETag quoting aside).
    let compared = [
        "content-type",
        "content-length",
        "docker-content-digest",
        "docker-distribution-api-version",
        "content-range",
    ];
    let mut differences = Vec::new();
    for (method, path, headers) in &requests {
        let ours = curl(method, &server.url(path), headers, &[]);
        let theirs = curl(method, &format!("http://{reg_host}{path}"), headers, &[]);
        let what = format!("{method} {path} {headers:?}");
        if ours.status != theirs.status {
            differences.push(format!(
                "{what}: status {} vs {}",
                ours.status, theirs.status
            ));
            continue;
        }
        if ours.status >= 400 {
            // curl -I writes a HEAD's head where a body would go.
            if *method != "HEAD" && ours.error_code() != theirs.error_code() {
                differences.push(format!(
                    "{what}: {} vs {}",
                    ours.error_code(),
                    theirs.error_code()
                ));
            }
            if ours.header("allow") != theirs.header("allow") {
                differences.push(format!(
                    "{what}: Allow {:?} vs {:?}",
                    ours.header("allow"),
                    theirs.header("allow")
                ));
            }
            continue;
        }
        if ours.status == 304 {
            // RFC 9110 §15.4.5: a 304 carries the ETag a 200 would (and
            // the digest); docker-registry 2.8 leaves both out of a
            // manifest's.
            for h in ["etag", "docker-content-digest"] {
                if ours.header(h).is_none() {
                    differences.push(format!("{what}: 304 without {h}"));
                }
            }
            continue;
        }
        for h in compared {
            let (a, b) = (ours.header(h), theirs.header(h));
            if a != b {
                differences.push(format!("{what}: {h} {a:?} vs {b:?}"));
            }
        }
        let body_matters = *method == "GET";
        let same_body = if path.ends_with("tags/list") {
            ours.json() == theirs.json()
        } else {
            ours.body == theirs.body
        };
        if body_matters && !same_body {
            differences.push(format!("{what}: bodies differ"));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[test]
fn a_scoped_command_gets_the_address_and_its_status_is_the_servers() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, _) = two_layouts(tmp.path(), "s4");
    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "app", s(&amd64), "--"])
        .args([
            "sh",
            "-c",
            "curl -sf http://$OCIMUX_REGISTRY/v2/app/tags/list | grep -q latest && exit 7",
        ])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Bad input: a clear line and exit 2; the port is not taken. A FIFO
    // given as a settings file is refused at once, never waited on.
    let fifo = tmp.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let f = s(&fifo);
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--config", f], 2, "not a regular file"),
        (
            vec!["--htpasswd", f, "app", s(&amd64)],
            2,
            "not a regular file",
        ),
        (
            vec!["--tls-cert", f, "--tls-key", f, "app", s(&amd64)],
            2,
            "not a regular file",
        ),
        (vec!["Bad", s(&amd64)], 2, "repository name \"Bad\""),
        (vec!["app"], 2, "expected REPOSITORY SOURCE"),
        (vec!["app", "/nonexistent"], 2, "/nonexistent"),
        (
            vec!["--htpasswd", "/nonexistent", "app", s(&amd64)],
            2,
            "htpasswd file /nonexistent",
        ),
        (
            vec!["--config", "/nonexistent"],
            2,
            "configuration file /nonexistent",
        ),
        (vec![], 2, "no repository to serve"),
    ];
    for (args, code, says) in cases {
        let out = Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&args)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: no URL printed");
    }
    // A port in use: exit 5.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(bin())
        .args(["serve", "--listen", &addr, "app", s(&amd64)])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 23, classes 8 and 15: a referrer its publishers may not publish is
/// left out (the image is served, the listing never names it, also after a
/// rebuild); the referrers reply is built once per snapshot and capped.
#[test]
fn referrers_are_optional_published_and_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("app-oci");
    let b = ocimux::testing::testutil::LayoutBuilder::new(&root);
    let image = b.image(
        serde_json::json!({"os": "linux", "architecture": "amd64"}),
        &[b"l"],
    );
    let refs = with_referrers(&b, &image, 2, 8);
    chown_r(&root, "65534:65534");
    // The first referrer's SBOM is root's alone: before, the server refused to start.
    let sbom_of = |r: &Value| {
        let d = r["digest"].as_str().unwrap();
        let m = json_file(&root.join(Digest::parse(d).unwrap().blob_path()));
        root.join(
            Digest::parse(m["layers"][0]["digest"].as_str().unwrap())
                .unwrap()
                .blob_path(),
        )
    };
    let secret = sbom_of(&refs[0]);
    run(Command::new("chown").arg("0:0").arg(&secret));
    chmod(&secret, 0o600);
    let server = Server::start(&["app", s(&root)]);
    let subject = image["digest"].as_str().unwrap();
    let url = server.url(&format!("/v2/app/referrers/{subject}"));
    let listed = |u: &str| -> Vec<String> {
        let j = get(u, &[]).json();
        j["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed(&url), [refs[1]["digest"].as_str().unwrap()]);
    assert!(
        server
            .log()
            .contains(&format!("referrer {}", refs[0]["digest"].as_str().unwrap())),
        "{}",
        server.log()
    );
    let index = get(
        &server.url("/v2/app/manifests/latest"),
        &[&format!("Accept: {OCI_INDEX}")],
    );
    assert_eq!(index.status, 200);
    // The second becomes root's alone, and the layout is rebuilt: not listed.
    let other = sbom_of(&refs[1]);
    run(Command::new("chown").arg("0:0").arg(&other));
    chmod(&other, 0o600);
    let ij = root.join("index.json");
    let bytes = fs::read(&ij).unwrap();
    fs::write(
        tmp.path().join("index.json.new"),
        [&bytes[..], b"\n"].concat(),
    )
    .unwrap();
    fs::rename(tmp.path().join("index.json.new"), &ij).unwrap();
    wait_for("the rebuilt listing", Duration::from_secs(20), || {
        listed(&url).is_empty()
    });
    drop(server);

    // Large annotations are left out of descriptors; a reply stays under 4 MiB.
    let root = tmp.path().join("big-oci");
    let b = ocimux::testing::testutil::LayoutBuilder::new(&root);
    let image = b.image(
        serde_json::json!({"os": "linux", "architecture": "amd64"}),
        &[b"m"],
    );
    with_referrers(&b, &image, 48, 1 << 20);
    let root2 = tmp.path().join("many-oci");
    let b2 = ocimux::testing::testutil::LayoutBuilder::new(&root2);
    let image2 = b2.image(
        serde_json::json!({"os": "linux", "architecture": "arm64"}),
        &[b"n"],
    );
    with_referrers(&b2, &image2, 255, 16_300);
    let file = write_config(tmp.path(), &[("big", &root), ("many", &root2)]);
    let server = Server::start(&["--config", s(&file)]);
    let big = server.url(&format!(
        "/v2/big/referrers/{}",
        image["digest"].as_str().unwrap()
    ));
    let many = server.url(&format!(
        "/v2/many/referrers/{}",
        image2["digest"].as_str().unwrap()
    ));
    let reply = get(&big, &[]);
    let j = reply.json();
    assert_eq!(j["manifests"].as_array().map(Vec::len), Some(48));
    assert!(
        j["manifests"][0].get("annotations").is_none(),
        "a 1 MiB annotation copied"
    );
    assert!(reply.body.len() < 64 * 1024, "{}", reply.body.len());
    let reply = get(&many, &[]);
    assert!(reply.body.len() <= 4 << 20, "{}", reply.body.len());
    let n = reply.json()["manifests"].as_array().map_or(0, Vec::len);
    assert!(
        (200..255).contains(&n),
        "{n} listed of 255: capped, not emptied"
    );
    let before = vm_rss_kib(server.pid());
    std::thread::scope(|sc| {
        for _ in 0..8 {
            sc.spawn(|| {
                for _ in 0..4 {
                    assert_eq!(get(&many, &[]).status, 200);
                    assert_eq!(get(&big, &[]).status, 200);
                }
            });
        }
    });
    let grew = vm_rss_kib(server.pid()).saturating_sub(before);
    assert!(
        grew < 48 * 1024,
        "RSS grew {grew} KiB answering 64 referrers requests"
    );
}

/// The referrers API lists the manifests of a source's index.json whose
/// subject is a served manifest (an SBOM here), filtered by artifactType;
/// the referrer and its blobs are served by digest.
#[test]
fn referrers_listed_in_a_source_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("app-oci");
    let b = ocimux::testing::testutil::LayoutBuilder::new(&root);
    let image = b.image(
        serde_json::json!({"os": "linux", "architecture": "amd64"}),
        &[b"layer"],
    );
    let empty = b.blob("application/vnd.oci.empty.v1+json", b"{}");
    let sbom = b.blob("application/spdx+json", br#"{"spdxVersion":"SPDX-2.3"}"#);
    let referrer = b.json_blob(
        OCI_MANIFEST,
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "artifactType": "application/spdx+json", "config": empty, "layers": [sbom],
            "subject": image, "annotations": {"org.example": "sbom"}}),
    );
    b.index(&[(image.clone(), Some("latest")), (referrer.clone(), None)]);
    let server = Server::start(&["app", s(&root)]);
    let subject = image["digest"].as_str().unwrap();
    let url = |q: &str| server.url(&format!("/v2/app/referrers/{subject}{q}"));
    let all = get(&url(""), &[]);
    assert_eq!(all.header("content-type"), Some(OCI_INDEX));
    let listed = all.json()["manifests"].clone();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["digest"], referrer["digest"]);
    assert_eq!(listed[0]["artifactType"], "application/spdx+json");
    assert_eq!(listed[0]["annotations"]["org.example"], "sbom");
    let only = get(&url("?artifactType=application%2Fspdx%2Bjson"), &[]);
    assert_eq!(only.json()["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(only.header("oci-filters-applied"), Some("artifactType"));
    let other = get(&url("?artifactType=application%2Fvnd.example"), &[]);
    assert_eq!(other.json()["manifests"], serde_json::json!([]));
    // The referrer and its blobs, by digest.
    let accept = format!("Accept: {OCI_MANIFEST}");
    let d = referrer["digest"].as_str().unwrap();
    let man = get(&server.url(&format!("/v2/app/manifests/{d}")), &[&accept]);
    assert_eq!(Digest::sha256_of(&man.body).to_string(), d);
    let sd = sbom["digest"].as_str().unwrap();
    assert_eq!(
        get(&server.url(&format!("/v2/app/blobs/{sd}")), &[]).body,
        br#"{"spdxVersion":"SPDX-2.3"}"#
    );
    // The image itself is what the tag names, as before.
    let index = get(
        &server.url("/v2/app/manifests/latest"),
        &[&format!("Accept: {OCI_INDEX}")],
    )
    .json();
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
}

/// A configuration file may give one repository several tags, each its own
/// sources; the same tag twice is refused by name.
#[test]
fn a_repository_has_a_tag_per_set_of_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, arm64) = two_layouts(tmp.path(), "tags");
    let file = tmp.path().join("tags.toml");
    let entry = |tag: &str, p: &Path| {
        format!(
            "[[repository]]\nname = \"app\"\ntag = {tag:?}\nsources = [{:?}]\n",
            s(p)
        )
    };
    fs::write(&file, entry("latest", &amd64) + &entry("v1", &arm64)).unwrap();
    let server = Server::start(&["--config", s(&file)]);
    let tags = get(&server.url("/v2/app/tags/list"), &[]).json();
    assert_eq!(tags["tags"], serde_json::json!(["latest", "v1"]));
    for (tag, arch) in [("latest", "amd64"), ("v1", "arm64")] {
        let index = get(
            &server.url(&format!("/v2/app/manifests/{tag}")),
            &[&format!("Accept: {OCI_INDEX}")],
        )
        .json();
        assert_eq!(
            index["manifests"][0]["platform"]["architecture"], arch,
            "{tag}"
        );
    }
    drop(server);
    fs::write(&file, entry("v1", &amd64) + &entry("v1", &arm64)).unwrap();
    let out = ocimux(&["serve", "--listen", "127.0.0.1:0", "--config", s(&file)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("repository \"app\": tag \"v1\" is given twice"),
        "{stderr}"
    );
}

#[test]
fn tls_and_basic_authentication() {
    require_tool("openssl");
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, _) = two_layouts(tmp.path(), "s9");
    let (cert, key) = certificate(tmp.path(), "one");
    let htpasswd = tmp.path().join("htpasswd");
    fs::write(
        &htpasswd,
        format!("ci:{}\n", bcrypt::hash("pa55", 5).unwrap()),
    )
    .unwrap();
    let server = Server::start(&[
        "--tls-cert",
        s(&cert),
        "--tls-key",
        s(&key),
        "--htpasswd",
        s(&htpasswd),
        "app",
        s(&amd64),
    ]);
    let url = format!("https://{}/v2/app/tags/list", server.host);
    let with = |ca: &Path, creds: &[&str]| {
        let mut extra = vec!["--cacert", s(ca)];
        extra.extend_from_slice(creds);
        curl("GET", &url, &[], &extra)
    };
    let anonymous = with(&cert, &[]);
    assert_eq!(
        (anonymous.status, anonymous.error_code().as_str()),
        (401, "UNAUTHORIZED")
    );
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Basic realm=\"ocimux\"")
    );
    assert_eq!(with(&cert, &["-u", "ci:wrong"]).status, 401);
    assert_eq!(
        with(&cert, &["-u", "ci:pa55"]).json()["tags"],
        serde_json::json!(["latest"])
    );
    // skopeo over TLS with credentials.
    let certs = tmp.path().join("certs");
    fs::create_dir_all(&certs).unwrap();
    fs::copy(&cert, certs.join("ca.crt")).unwrap();
    run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--creds",
        "ci:pa55",
        "--cert-dir",
        s(&certs),
        &format!("docker://{}/app:latest", server.host),
    ]));
    // SIGHUP reads a renewed certificate; a broken one keeps the last good.
    let (cert2, key2) = certificate(tmp.path(), "two");
    fs::copy(&cert2, &cert).unwrap();
    fs::copy(&key2, &key).unwrap();
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server.pid() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap()
    };
    hup();
    wait_for("the renewed certificate", Duration::from_secs(10), || {
        with(&cert2, &["-u", "ci:pa55"]).status == 200
    });
    fs::write(&cert, "not a certificate").unwrap();
    hup();
    wait_for(
        "the failed reload to be reported",
        Duration::from_secs(10),
        || server.log().contains("keeping the previous certificate"),
    );
    assert_eq!(
        with(&cert2, &["-u", "ci:pa55"]).status,
        200,
        "the last good certificate stays"
    );
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("keeping the previous certificate"), "{log}");
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("app-oci");
    let bytes = pattern(24 << 20, 3);
    let (_, layer) = ocimux::testing::testutil::LayoutBuilder::one_layer(&root, &bytes);
    let server = Server::start(&["--drain", "20", "app", s(&root)]);
    let digest = layer["digest"].as_str().unwrap().to_owned();
    let mut c = body_of(&server.host, &format!("/v2/app/blobs/{digest}"));
    let mut first = vec![0u8; 1 << 20];
    c.read_exact(&mut first).unwrap();
    let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
    // SIGHUP (systemctl reload) without TLS: logged, not a stop.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for("the SIGHUP to be logged", Duration::from_secs(10), || {
        server.log().contains("SIGHUP: nothing to reload")
    });
    assert_eq!(get(&server.url("/v2/"), &[]).status, 200);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    // New connections are refused once the listener is closed …
    let host = server.host.clone();
    wait_for("the listener to close", Duration::from_secs(10), || {
        TcpStream::connect(&host).is_err()
    });
    // … while the body in flight is delivered whole.
    let mut rest = vec![0u8; bytes.len() - first.len()];
    c.read_exact(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    assert!(first == bytes, "the whole body, after SIGTERM");
    drop(c);
    let (status, log) = server.stop();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("SIGTERM: stopping"), "{log}");
}

/// `--listen` (and the file's `listen`) as docker-registry's `addr` and
/// meta-virtualization's `CONTAINER_REGISTRY_URL` are written: a name that
/// resolves to loopback is listened on at each of its addresses, `:PORT` on
/// every IPv4 interface, `[v6]:PORT`; anything else is one line, exit 2.
#[test]
fn listen_takes_the_forms_registry_users_write() {
    use std::net::ToSocketAddrs;
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, _) = two_layouts(tmp.path(), "listen");
    let answers = |host: &str| get(&format!("http://{host}/v2/"), &[]).status == 200;

    let server = Server::start_listening(&["--listen", "localhost:0", "app", s(&amd64)]);
    let port: u16 = server.host.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(server.host.starts_with("127.0.0.1:"), "{}", server.host);
    let localhost: Vec<_> = ("localhost", port).to_socket_addrs().unwrap().collect();
    assert!(!localhost.is_empty());
    for addr in &localhost {
        assert!(answers(&addr.to_string()), "{addr}");
    }
    server.stop();

    let any = Server::start_listening(&["--listen", ":0", "app", s(&amd64)]);
    let port = any.host.rsplit_once(':').unwrap().1;
    assert!(answers(&format!("127.0.0.1:{port}")));
    let (_, log) = any.stop();
    assert!(log.contains("without TLS"), "{log}");

    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let v6 = Server::start_listening(&["--listen", "[::1]:0", "app", s(&amd64)]);
        assert!(v6.host.starts_with("[::1]:"), "{}", v6.host);
        assert!(answers(&v6.host.clone()));
        v6.stop();
    }

    let config = tmp.path().join("c.toml");
    fs::write(
        &config,
        format!(
            "listen = \"localhost:0\"\n[[repository]]\nname = \"app\"\nsources = [{:?}]\n",
            s(&amd64)
        ),
    )
    .unwrap();
    let from_file = Server::start_listening(&["--config", s(&config)]);
    assert!(answers(&from_file.host.clone()));
    from_file.stop();

    for bad in ["5000", "127.0.0.1:65536", "[::1:5000", "local host:5000"] {
        let out = ocimux(&["serve", "--listen", bad, "app", s(&amd64)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.contains(bad) && first.contains("--listen"),
            "{bad}: {err}"
        );
    }
}
