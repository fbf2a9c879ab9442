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

/// Where `server` (started with `--metrics 127.0.0.1:0`) answers metrics,
/// as `ocimux status` says.
fn metrics_url(server: &Server) -> String {
    let mut url = String::new();
    wait_for(
        "status to say where the metrics are",
        Duration::from_secs(10),
        || {
            let out = ocimux(&["status", "--json", &format!("http://{}", server.host)]);
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            url = v[0]["metrics"].as_str().unwrap_or_default().to_owned();
            !url.is_empty()
        },
    );
    url
}

/// The metrics now, from `url`.
fn scrape(url: &str) -> String {
    let r = get(url, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(r.body).unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(is_sample(line), "not a sample line: {line:?}");
    }
    text
}

/// `NAME[{K="V",…}] VALUE` with V escaped as the exposition format says.
fn is_sample(line: &str) -> bool {
    let Some((series, value)) = line.rsplit_once(' ') else {
        return false;
    };
    let name_ok = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let Some((name, labels)) = series.split_once('{') else {
        return name_ok(series) && value.parse::<u64>().is_ok();
    };
    let Some(mut rest) = labels.strip_suffix('}') else {
        return false;
    };
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once("=\"") else {
            return false;
        };
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' if matches!(chars.next(), Some((_, '\\' | '"' | 'n'))) => {}
                '\\' | '\n' => return false,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else { return false };
        if !name_ok(key) {
            return false;
        }
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    name_ok(name) && value.parse::<u64>().is_ok()
}

/// The value of the sample `series` (exactly as written), if present.
fn value_of(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `--metrics`: requests and bytes actually sent by route and status, and
/// the rebuilds of a source that breaks, from a source whose path holds
/// quotes, braces and a newline; the metrics address is bounded and
/// answers nothing else.
#[test]
fn metrics_count_requests_bytes_and_failed_rebuilds() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, layer) = big_layer(tmp.path().join("s\"}{x\nq=\"1\""), 4);
    let server = Server::start_quiet(&[], &["--metrics", "127.0.0.1:0", "app", s(&b.root)]);
    // Port 0: where the metrics are is in `ocimux status`.
    let url = metrics_url(&server);
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"),
        "{url}"
    );
    let people = ocimux(&["status", &format!("http://{}", server.host)]);
    assert!(String::from_utf8_lossy(&people.stdout).contains(&format!("metrics: {url}")));
    assert_ne!(url, server.url("/metrics"));
    assert_eq!(get(&server.url("/v2/"), &[]).status, 200);
    let whole = get(&server.url(&format!("/v2/app/blobs/{layer}")), &[]);
    assert_eq!(whole.body.len(), 4 << 20);
    assert_eq!(get(&server.url("/v2/app/manifests/nope"), &[]).status, 404);
    // The main address has no /metrics; the metrics address nothing else.
    assert_eq!(get(&server.url("/metrics"), &[]).status, 404);
    let other = url.replace("/metrics", "/v2/");
    assert_eq!(get(&other, &[]).status, 404);
    let post = curl("POST", &url, &[], &[]);
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, HEAD"))
    );

    let mut text = String::new();
    wait_for(
        "the requests to be counted",
        Duration::from_secs(10),
        || {
            text = scrape(&url);
            value_of(
                &text,
                r#"ocimux_http_requests_total{route="other",code="404"}"#,
            ) == Some(1)
        },
    );
    let counted = [
        (r#"ocimux_http_requests_total{route="base",code="200"}"#, 1),
        (r#"ocimux_http_requests_total{route="blobs",code="200"}"#, 1),
        (
            r#"ocimux_http_response_bytes_total{route="blobs",code="200"}"#,
            4 << 20,
        ),
        (
            r#"ocimux_http_requests_total{route="manifests",code="404"}"#,
            1,
        ),
        ("ocimux_http_requests_in_flight", 0),
        ("ocimux_hashing_queue_depth", 0),
        (
            r#"ocimux_snapshots_retained{repository="app",tag="latest"}"#,
            1,
        ),
        (
            r#"ocimux_rebuild_failing{repository="app",tag="latest"}"#,
            0,
        ),
    ];
    for (series, want) in counted {
        assert_eq!(value_of(&text, series), Some(want), "{series} in\n{text}");
    }

    // The source breaks: the failure is counted, and shows until fixed.
    let index = b.root.join("index.json");
    let good = fs::read(&index).unwrap();
    fs::write(&index, b"{ not json").unwrap();
    let failing = r#"ocimux_rebuild_failing{repository="app",tag="latest"}"#;
    wait_for(
        "the failed rebuild to show",
        Duration::from_secs(20),
        || {
            text = scrape(&url);
            value_of(&text, failing) == Some(1)
        },
    );
    let failures = r#"ocimux_rebuild_failures_total{repository="app",tag="latest"}"#;
    assert!(value_of(&text, failures).unwrap() >= 1, "{text}");
    fs::write(&index, good).unwrap();
    wait_for("the fixed source to show", Duration::from_secs(20), || {
        value_of(&scrape(&url), failing) == Some(0)
    });

    // Bounded: the ninth connection at once is closed unanswered.
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(host).unwrap()).collect();
    wait_for(
        "the ninth connection to be closed",
        Duration::from_secs(10),
        || {
            let mut c = TcpStream::connect(host).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut buf = [0u8; 1];
            matches!(c.read(&mut buf), Ok(0) | Err(_))
        },
    );
    drop(held);
    wait_for("metrics answered again", Duration::from_secs(10), || {
        get(&url, &[]).status == 200
    });
    server.stop();
}

/// The metrics address answers while every connection slot of the API is
/// taken by a client that stalls mid-body: it has slots of its own, and it
/// counts those requests in flight.
#[test]
fn metrics_answer_while_the_api_is_full() {
    let tmp = tempfile::tempdir().unwrap();
    let (b, layer) = big_layer(tmp.path().join("s"), 64);
    let server = Server::start_quiet(
        &[],
        &[
            "--max-connections",
            "4",
            "--metrics",
            "127.0.0.1:0",
            "app",
            s(&b.root),
        ],
    );
    let url = metrics_url(&server);
    // Four clients read a byte of the 64 MiB layer each, then stall.
    let path = format!("/v2/app/blobs/{layer}");
    let stalled: Vec<_> = (0..4)
        .map(|_| {
            let mut c = body_of(&server.host, &path);
            let mut one = [0u8; 1];
            c.read_exact(&mut one).unwrap();
            c
        })
        .collect();
    // The API is full: a fifth client waits in the backlog, unanswered.
    let mut fifth = TcpStream::connect(&server.host).unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    fifth
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(fifth.read(&mut buf).is_err(), "answered while full");
    let started = Instant::now();
    let mut text = String::new();
    wait_for(
        "the stalled requests to be counted",
        Duration::from_secs(10),
        || {
            text = scrape(&url);
            value_of(&text, "ocimux_http_requests_in_flight") == Some(4)
        },
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(stalled);
    wait_for("the requests to end", Duration::from_secs(20), || {
        let text = scrape(&url);
        value_of(&text, "ocimux_http_requests_in_flight") == Some(0)
            && value_of(
                &text,
                r#"ocimux_http_requests_total{route="blobs",code="200"}"#,
            ) == Some(4)
    });
    server.stop();
}

/// A bad or taken metrics address: the usual bad-input and listen exit
/// codes, the message naming the metrics address.
#[test]
fn a_bad_or_taken_metrics_address_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, _) = two_layouts(tmp.path(), "metrics-bad");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cases = [
        (
            "nowhere".to_owned(),
            2,
            "invalid value 'nowhere' for '--metrics",
        ),
        (
            format!("127.0.0.1:{port}"),
            5,
            "the metrics address 127.0.0.1:",
        ),
    ];
    for (addr, code, says) in cases {
        let out = ocimux(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            &addr,
            "app",
            s(&amd64),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{addr}: {err}");
        assert!(err.contains(says), "{addr}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
