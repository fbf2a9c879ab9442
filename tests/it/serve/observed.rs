//! Issue 25, the server observed: an access line per request at the
//! default level, with the bytes actually taken and the time to the last
//! byte; `-q` hides it; `--log-format json`; health checks without
//! credentials.

use super::*;
use ocimux::testing::testutil::LayoutBuilder;

/// A layout whose one layer is `mib` MiB.
fn big_layer(root: PathBuf, mib: usize) -> (LayoutBuilder, String) {
    let b = LayoutBuilder::new(root);
    let layer_bytes = pattern(mib << 20, 7);
    let layer = b.blob("application/vnd.oci.image.layer.v1.tar", &layer_bytes);
    let config = b.json_blob(
        "application/vnd.oci.image.config.v1+json",
        &serde_json::json!({"os": "linux", "architecture": "amd64"}),
    );
    let m = b.json_blob(
        OCI_MANIFEST,
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}),
    );
    b.index(&[(m, None)]);
    let digest = layer["digest"].as_str().unwrap().to_owned();
    (b, digest)
}

/// Waits for a log line containing every one of `parts`.
fn logged(server: &Server, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = server.log();
        if let Some(l) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {parts:?} in:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_request_is_logged_with_the_bytes_it_took() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, layer) = big_layer(tmp.path().join("s"), 64);
    let server = Server::start_quiet(&[], &["app", s(&b.root)]);
    assert_eq!(get(&server.url("/v2/"), &[]).status, 200);
    let line = logged(&server, &["\"GET /v2/\" 200 2 "]);
    assert!(line.starts_with("ocimux: info: 127.0.0.1:"), "{line}");

    // A client that reads 1,000 bytes of a 64 MiB layer and hangs up: the
    // line says how much the server wrote, not the length it announced.
    let path = format!("/v2/app/blobs/{layer}");
    let mut c = body_of(&server.host, &path);
    let mut first = vec![0u8; 1000];
    c.read_exact(&mut first).unwrap();
    drop(c);
    let length = (64u64 << 20).to_string();
    let line = logged(&server, &[&path, &format!("/{length} ")]);
    let written: u64 = line
        .split_whitespace()
        .find_map(|w| w.strip_suffix(&format!("/{length}")))
        .and_then(|w| w.parse().ok())
        .unwrap();
    assert!(written < 64 << 20, "{line}");
    eprintln!("cut short: {line}");
    // The whole layer: written is the length.
    let whole = curl("GET", &server.url(&path), &[], &[]);
    assert_eq!(whole.body.len(), 64 << 20);
    logged(&server, &[&path, &format!(" 200 {length} ")]);
    server.stop();

    // -q: errors only, no access lines.
    let quiet = Server::start_quiet(&["-q"], &["app", s(&b.root)]);
    assert_eq!(get(&quiet.url("/v2/"), &[]).status, 200);
    let (_, log) = quiet.stop();
    assert!(!log.contains("/v2/"), "{log}");
}

#[test]
fn json_logs_and_health_checks_without_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, _) = two_layouts(tmp.path(), "observed");
    let htpasswd = tmp.path().join("htpasswd");
    fs::write(
        &htpasswd,
        format!("ci:{}\n", bcrypt::hash("pa55", 5).unwrap()),
    )
    .unwrap();
    let server = Server::start_quiet(
        &["--log-format", "json"],
        &["--htpasswd", s(&htpasswd), "app", s(&amd64)],
    );
    assert_eq!(get(&server.url("/v2/"), &[]).status, 401);
    for path in ["/healthz", "/debug/health"] {
        let r = get(&server.url(path), &[]);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]), "{path}");
    }
    assert_eq!(get(&server.url("/v2/a/b/c%0a%1b[31m"), &[]).status, 401);
    let line = logged(&server, &["\"path\":\"/healthz\""]);
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["target"], "access");
    assert_eq!(v["level"], "info");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["status"], 200);
    assert_eq!(v["written"], 2);
    assert_eq!(v["complete"], true);
    assert!(v["seconds"].as_f64().is_some() && v["time"].as_str().unwrap().ends_with('Z'));
    // Every line is one JSON object, a client's escapes included.
    let (_, log) = server.stop();
    for l in log.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["message"].is_string(), "{l}");
    }
    assert!(log.contains("c%0a%1b[31m"), "{log}");
}

/// `ocimux status URL`: a server's repositories, tags and the index each
/// serves, and what it has answered (brought up to date every 2 s).
#[test]
fn status_shows_a_server() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, _) = two_layouts(tmp.path(), "status");
    let server = Server::start_quiet(&[], &["app", s(&amd64)]);
    let url = format!("http://{}", server.host);
    let index = get(
        &server.url("/v2/app/manifests/latest"),
        &[&format!("Accept: {OCI_INDEX}")],
    );
    let digest = index.header("docker-content-digest").unwrap().to_owned();
    let mut v = Value::Null;
    wait_for(
        "status to count the request",
        Duration::from_secs(10),
        || {
            let out = ocimux(&["status", "--json", &url]);
            v = serde_json::from_slice::<Value>(&out.stdout).unwrap_or_default()[0].clone();
            v["requests"].as_u64().unwrap_or(0) >= 1
        },
    );
    assert_eq!(v["kind"], "serve");
    assert_eq!(v["url"], url.as_str());
    assert_eq!(v["repositories"][0]["name"], "app");
    assert_eq!(v["repositories"][0]["tags"][0]["tag"], "latest");
    assert_eq!(v["repositories"][0]["tags"][0]["index"], digest.as_str());
    let pid = server.pid();
    server.stop();
    assert!(!std::path::Path::new(&format!("/run/ocimux/{pid}.json")).exists());
}
