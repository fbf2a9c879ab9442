//! `ocimux serve`: the distribution API over the same snapshots, checked
//! with real clients (skopeo, curl, podman, buildah, containerd) and side by
//! side with docker-registry 2.8 serving the same images.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ocimux::oci::digest::Digest;
use serde_json::Value;

use crate::common::*;

pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A running `ocimux serve` on 127.0.0.1, port 0; stopped with SIGTERM on drop.
pub(crate) struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub(crate) host: String,
    stderr: Option<std::thread::JoinHandle<()>>,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// `ocimux serve --listen 127.0.0.1:0 ARGS…`, once its URL is printed.
    pub(crate) fn start(args: &[&str]) -> Server {
        Self::try_start(args).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn try_start(args: &[&str]) -> Result<Server, String> {
        Self::start_as(Command::new(bin()), args)
    }

    /// [`Server::start`] with at most `n` open files (prlimit).
    pub(crate) fn start_with_nofile(n: u64, args: &[&str]) -> Server {
        let mut c = Command::new("prlimit");
        c.arg(format!("--nofile={n}:{n}")).arg(bin());
        Self::start_as(c, args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn start_as(mut command: Command, args: &[&str]) -> Result<Server, String> {
        let mut child = command
            .args(["-v", "serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ocimux serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let collected = log.clone();
        let stderr = std::thread::spawn(move || {
            let mut lines = BufReader::new(&mut stderr);
            let mut line = String::new();
            while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                collected.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let url = line.trim();
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        let Some(host) = host.map(str::to_owned) else {
            let _ = child.kill();
            let status = child.wait().expect("wait");
            let _ = stderr.join();
            return Err(format!(
                "ocimux serve printed {line:?} and exited {status}: {}",
                log.lock().unwrap()
            ));
        };
        Ok(Server {
            child,
            host,
            stderr: Some(stderr),
            log,
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it has logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit status and everything it logged.
    pub(crate) fn stop(mut self) -> (std::process::ExitStatus, String) {
        let status = self.terminate();
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
        (status, self.log())
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                return self.child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// An HTTP response as curl saw it.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: Vec<u8>,
}

impl Resp {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub(crate) fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// `curl -X METHOD URL -H …` (HEAD with -I); extra curl arguments after the headers.
pub(crate) fn curl(method: &str, url: &str, headers: &[&str], extra: &[&str]) -> Resp {
    require_tool("curl");
    let dir = tempfile::tempdir().expect("tmp");
    let (head, body) = (dir.path().join("h"), dir.path().join("b"));
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-g", "--path-as-is", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body);
    match method {
        "HEAD" => cmd.arg("-I"),
        m => cmd.args(["-X", m]),
    };
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.args(extra).arg(url);
    let out = cmd.output().expect("run curl");
    assert!(out.status.success(), "curl {url}: {out:?}");
    let head = fs::read_to_string(&head).expect("headers");
    // The last response's head (after any 100 Continue).
    let last = head
        .trim_end()
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default();
    let mut lines = last.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        headers,
        body: fs::read(&body).unwrap_or_default(),
    }
}

pub(crate) fn get(url: &str, headers: &[&str]) -> Resp {
    curl("GET", url, headers, &[])
}

/// An amd64 and an arm64 layout made with umoci under `dir`.
pub(crate) fn two_layouts(dir: &Path, seed: &str) -> (PathBuf, PathBuf) {
    (
        umoci_layout(dir, "amd64", seed),
        umoci_layout(dir, "arm64", seed),
    )
}

/// `skopeo copy --all docker://SERVER/REPO:latest oci:DEST:latest` (skopeo
/// verifies every digest it pulls).
pub(crate) fn skopeo_pull(server: &Server, repo: &str, dest: &Path) {
    skopeo_pull_tag(server, repo, "latest", dest);
}

/// `skopeo copy --all docker://SERVER/REPO:TAG oci:DEST:TAG`.
pub(crate) fn skopeo_pull_tag(server: &Server, repo: &str, tag: &str, dest: &Path) {
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{}/{repo}:{tag}", server.host),
        &format!("oci:{}:{tag}", dest.display()),
    ]));
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every file under `root/blobs` with its bytes.
fn blobs_of(root: &Path) -> BTreeMap<String, Vec<u8>> {
    layout_members(root)
        .into_iter()
        .filter_map(|(name, bytes)| Some((name.strip_prefix("./blobs/")?.to_owned(), bytes)))
        .collect()
}

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
        ("GET", "/v2/a/b/blobs/uploads/x".into(), 405, "UNSUPPORTED"),
        ("GET", "/other".into(), 404, "NOT_FOUND"),
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
    }
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
    let requests: Vec<(&str, String, Vec<&str>)> = vec![
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
            if ours.error_code() != theirs.error_code() {
                differences.push(format!(
                    "{what}: {} vs {}",
                    ours.error_code(),
                    theirs.error_code()
                ));
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

/// Sends raw bytes on one connection and reads what comes back until the
/// server closes it or `within` passes.
fn raw(host: &str, request: &[u8], within: Duration) -> Vec<u8> {
    let mut c = TcpStream::connect(host).expect("connect");
    c.set_read_timeout(Some(within)).unwrap();
    c.write_all(request).expect("send");
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    out
}

/// The status line and the value of Content-Length of one response on `c`,
/// its body read and returned.
fn read_response(c: &mut BufReader<TcpStream>, head_only: bool) -> (String, Vec<u8>) {
    let mut status = String::new();
    c.read_line(&mut status).expect("status line");
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        c.read_line(&mut line).expect("header");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().expect("length");
            }
        }
    }
    let mut body = vec![0; if head_only { 0 } else { len }];
    c.read_exact(&mut body).expect("body");
    (status.trim().to_owned(), body)
}

/// A configuration file serving each (name, layout).
fn write_config(dir: &Path, repos: &[(&str, &Path)]) -> PathBuf {
    let mut text = String::new();
    for (name, path) in repos {
        text.push_str(&format!(
            "[[repository]]\nname = {name:?}\nsources = [{:?}]\n",
            s(path)
        ));
    }
    let file = dir.join("serve.toml");
    fs::write(&file, text).unwrap();
    file
}

/// How many sockets process `pid` has open.
fn sockets(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn hostile_clients_get_errors_and_the_server_keeps_answering() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, _) = two_layouts(tmp.path(), "s5");
    let big = tmp.path().join("big");
    let mut bytes = vec![0u8; 32 << 20];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2654435761).to_le_bytes()[3];
    }
    let (_, big_desc) = ocimux::testing::testutil::LayoutBuilder::one_layer(&big, &bytes);
    let big_layer = big_desc["digest"].as_str().unwrap();
    let server = Server::start(&[
        "--client-timeout",
        "2",
        "--config",
        s(&write_config(tmp.path(), &[("app", &amd64), ("big", &big)])),
    ]);
    let host = server.host.clone();
    // A head over the bound: refused with a 4xx, not read into memory.
    let big = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer =
        String::from_utf8_lossy(&raw(&host, big.as_bytes(), Duration::from_secs(5))).into_owned();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A client that stalls in its head is cut off after the timeout.
    let started = Instant::now();
    let stalled = raw(&host, b"GET /v2/ HTTP/1.1\r\nHo", Duration::from_secs(10));
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(8),
        "closed after {waited:?}: {stalled:?}"
    );
    // An idle keep-alive connection too.
    let started = Instant::now();
    let idle = raw(
        &host,
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(String::from_utf8_lossy(&idle).starts_with("HTTP/1.1 200"));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "idle closed after {:?}",
        started.elapsed()
    );
    // Clients that take no body (32 MiB, more than socket buffers hold):
    // the server lets go of them after the timeout; others go on meanwhile.
    let layer = big_layer.to_owned();
    let baseline = sockets(server.pid());
    let mut sleepers = Vec::new();
    for _ in 0..8 {
        let mut c = TcpStream::connect(&host).unwrap();
        let _ = nix::sys::socket::setsockopt(&c, nix::sys::socket::sockopt::RcvBuf, &4096);
        c.write_all(format!("GET /v2/big/blobs/{layer} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        sleepers.push(c);
    }
    wait_for(
        "the stalled clients' connections",
        Duration::from_secs(5),
        || sockets(server.pid()) >= baseline + 8,
    );
    assert_eq!(
        get(&server.url("/v2/"), &[]).status,
        200,
        "answers while 8 clients stall"
    );
    // 10,000 requests for missing blobs on keep-alive connections: 404 JSON
    // each, memory flat.
    let pid = server.pid();
    let mut c = BufReader::new(TcpStream::connect(&host).unwrap());
    let mut ask = |i: u32| {
        let d = format!("sha256:{:064x}", i);
        c.get_mut()
            .write_all(format!("GET /v2/app/blobs/{d} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        read_response(&mut c, false)
    };
    for i in 0..1000 {
        ask(i);
    }
    let before = vm_rss_kib(pid);
    for i in 1000..10_000 {
        let (status, body) = ask(i);
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        assert!(String::from_utf8_lossy(&body).contains("BLOB_UNKNOWN"));
    }
    let after = vm_rss_kib(pid);
    assert!(
        after < before + 4096,
        "RSS {before} -> {after} KiB over 9,000 requests"
    );
    // HEAD: headers only, the connection stays usable.
    let mut c = BufReader::new(TcpStream::connect(&host).unwrap());
    for _ in 0..2 {
        c.get_mut()
            .write_all(format!("HEAD /v2/big/blobs/{layer} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let (status, _) = read_response(&mut c, true);
        assert_eq!(status, "HTTP/1.1 200 OK");
    }
    // The stalled readers are let go (the client timeout is 2 s), not held.
    wait_for(
        "the server to drop stalled readers",
        Duration::from_secs(15),
        || sockets(server.pid()) <= baseline,
    );
    drop(sleepers);
    assert_eq!(get(&server.url("/v2/"), &[]).status, 200);
    let (status, log) = server.stop();
    assert!(status.success(), "{status}: {log}");
}

pub(crate) fn chown_r(path: &Path, owner: &str) {
    run(Command::new("chown").args(["-R", owner]).arg(path));
}

/// A layer file of `layout` (its first manifest's first layer).
fn first_layer(layout: &Path) -> PathBuf {
    let index = json_file(&layout.join("index.json"));
    let man = json_file(
        &layout
            .join("blobs/sha256")
            .join(hex(&index["manifests"][0])),
    );
    layout.join("blobs/sha256").join(hex(&man["layers"][0]))
}

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

/// `ocimux serve … app SOURCE -- true`: a start, its checks, and a stop.
fn serve_once(source: &Path) -> std::process::Output {
    Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "app",
            s(source),
            "--",
            "true",
        ])
        .output()
        .expect("run")
}

/// A GET of `path` on a new connection, its head read: the body is next.
fn body_of(host: &str, path: &str) -> BufReader<TcpStream> {
    let mut c = BufReader::new(TcpStream::connect(host).unwrap());
    c.get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        assert!(c.read_line(&mut line).unwrap() > 0, "the head ended early");
    }
    c
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2654435761);
            x.wrapping_add(seed.wrapping_mul(0x9E37_79B9)).to_le_bytes()[3]
        })
        .collect()
}

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

/// A layout with `count` SBOM referrers of `image`, each with an annotation
/// of `annotation` bytes; their descriptors, in index order.
fn with_referrers(
    b: &ocimux::testing::testutil::LayoutBuilder,
    image: &Value,
    count: usize,
    annotation: usize,
) -> Vec<Value> {
    let empty = b.blob("application/vnd.oci.empty.v1+json", b"{}");
    let mut entries = vec![(image.clone(), Some("latest"))];
    let mut referrers = Vec::new();
    for i in 0..count {
        let sbom = b.blob("application/spdx+json", format!("{{\"n\":{i}}}").as_bytes());
        let r = b.json_blob(
            OCI_MANIFEST,
            &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "artifactType": "application/spdx+json", "config": empty, "layers": [sbom],
                "subject": image, "annotations": {"org.example": "x".repeat(annotation)}}),
        );
        referrers.push(r);
    }
    entries.extend(referrers.iter().map(|r| (r.clone(), None)));
    b.index(&entries);
    referrers
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

/// Issue 23, class 13: the connection bound is sized by the open-file
/// limit, so clients past it wait to be accepted instead of failing.
#[test]
fn connections_fit_the_open_file_limit() {
    require_tool("prlimit");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("l");
    let big = pattern(16 << 20, 23);
    let (_, layer) = ocimux::testing::testutil::LayoutBuilder::one_layer(root.clone(), &big);
    let server = Server::start_with_nofile(160, &["app", s(&root)]);
    let path = format!("/v2/app/blobs/{}", layer["digest"].as_str().unwrap());
    // 120 clients at once, each holding its connection and body a while:
    // more sockets and files than the limit allows (before: EMFILE, 500s).
    let fetch = || -> Result<usize, String> {
        let mut c = BufReader::new(TcpStream::connect(&server.host).map_err(|e| e.to_string())?);
        let _ = c.get_mut().set_read_timeout(Some(Duration::from_secs(60)));
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        c.get_mut()
            .write_all(req.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        c.read_line(&mut line).map_err(|e| e.to_string())?;
        if !line.contains(" 200 ") {
            return Err(line);
        }
        while line != "\r\n" {
            line.clear();
            if c.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("head cut".into());
            }
        }
        let mut first = [0u8; 1];
        c.read_exact(&mut first).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(500));
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).map_err(|e| e.to_string())?;
        Ok(rest.len() + 1)
    };
    let results: Vec<Result<usize, String>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..120).map(|_| sc.spawn(fetch)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let failed: Vec<_> = results.iter().filter(|r| **r != Ok(big.len())).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    let log = server.log();
    assert!(
        log.contains("at most 60 connections at once, not 512"),
        "{log}"
    );
    assert!(!log.contains("accepting a connection"), "{log}");
}

/// Issue 23, class 3: clients that never read hold the shared body budget,
/// and another client's downloads go on (in chunks of their own) instead of
/// waiting for them.
#[test]
fn clients_that_never_read_delay_only_themselves() {
    let tmp = tempfile::tempdir().unwrap();
    let (big_root, small_root) = (tmp.path().join("big"), tmp.path().join("small"));
    let (_, big) = ocimux::testing::testutil::LayoutBuilder::one_layer(
        big_root.clone(),
        &pattern(64 << 20, 3),
    );
    let small_bytes = pattern(2 << 20, 4);
    let (_, small) =
        ocimux::testing::testutil::LayoutBuilder::one_layer(small_root.clone(), &small_bytes);
    let file = write_config(tmp.path(), &[("big", &big_root), ("small", &small_root)]);
    let server = Server::start(&["--config", s(&file), "--client-timeout", "120"]);
    let big_path = format!("/v2/big/blobs/{}", big["digest"].as_str().unwrap());
    // 40 connections ask for 64 MiB each and never read a byte.
    let silent: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut c = TcpStream::connect(&server.host).unwrap();
            c.set_nodelay(true).unwrap();
            let req = format!("GET {big_path} HTTP/1.1\r\nHost: x\r\n\r\n");
            c.write_all(req.as_bytes()).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let url = server.url(&format!(
        "/v2/small/blobs/{}",
        small["digest"].as_str().unwrap()
    ));
    let began = Instant::now();
    for _ in 0..20 {
        let r = get(&url, &[]);
        assert_eq!((r.status, r.body.len()), (200, small_bytes.len()));
    }
    let took = began.elapsed();
    drop(silent);
    // Before: each waited for a silent client's chunks to time out (minutes
    // here); now 40 MiB in well under a second on this machine.
    assert!(
        took < Duration::from_secs(20),
        "20 GETs of 2 MiB took {took:?}"
    );
}

/// Issue 23, class 7: password checks are bounded apart from answers: an
/// authenticated client is answered at once while 32 clients send wrong
/// passwords, which are refused (429) once an address failed too often.
#[test]
fn password_guessing_does_not_slow_authenticated_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, _) = two_layouts(tmp.path(), "pw");
    let htpasswd = tmp.path().join("htpasswd");
    fs::write(
        &htpasswd,
        format!("ci:{}\n", bcrypt::hash("pa55", 10).unwrap()),
    )
    .unwrap();
    let server = Server::start(&["--htpasswd", s(&htpasswd), "app", s(&amd64)]);
    let url = server.url("/v2/app/tags/list");
    let b64 = |c: &str| {
        use base64::Engine;
        format!(
            "Authorization: Basic {}",
            base64::engine::general_purpose::STANDARD.encode(c)
        )
    };
    let (good, bad) = (b64("ci:pa55"), b64("ci:wrong"));
    assert_eq!(get(&url, &[&good]).status, 200);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let statuses = std::sync::Mutex::new(Vec::new());
    let slowest = std::thread::scope(|sc| {
        for _ in 0..32 {
            sc.spawn(|| {
                for _ in 0..4 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let st = get(&url, &[&bad]).status;
                    statuses.lock().unwrap().push(st);
                }
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let t = Instant::now();
            assert_eq!(get(&url, &[&good]).status, 200);
            slowest = slowest.max(t.elapsed());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        slowest
    });
    let statuses = statuses.into_inner().unwrap();
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "an address that keeps failing is refused: {statuses:?}"
    );
    // Each answer is a curl process; the guessing never sits in front of it.
    assert!(
        slowest < Duration::from_millis(1500),
        "slowest authenticated answer {slowest:?}"
    );
}

/// Issue 23, class 4: idle connections cannot deny service — with every
/// slot, or every slot of one address, held by connections that send
/// nothing, a new client is served (the oldest idle connection makes room),
/// and a download in flight is never the one cut.
#[test]
fn idle_connections_make_room() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("l");
    let big = pattern(16 << 20, 9);
    let (_, layer) = ocimux::testing::testutil::LayoutBuilder::one_layer(root.clone(), &big);
    let blob = format!("/v2/app/blobs/{}", layer["digest"].as_str().unwrap());
    let server = Server::start(&[
        "--max-connections",
        "8",
        "--client-timeout",
        "120",
        "app",
        s(&root),
    ]);
    // A download in flight, read slowly, holds one slot.
    let mut slow = body_of(&server.host, &blob);
    let mut first = vec![0u8; 1 << 20];
    slow.read_exact(&mut first).unwrap();
    // Seven connections that never send a byte hold the rest.
    let silent: Vec<TcpStream> = (0..7)
        .map(|_| TcpStream::connect(&server.host).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let began = Instant::now();
    for _ in 0..5 {
        assert_eq!(get(&server.url("/v2/"), &[]).status, 200);
    }
    // Before: each waited for an idle connection's 120 s timeout.
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    // The rest of its body (the connection stays open: keep-alive).
    let mut rest = vec![0u8; big.len() - first.len()];
    slow.read_exact(&mut rest).unwrap();
    first.extend(rest);
    assert!(first == big, "the download in flight was cut");
    drop((silent, server));

    // One address's 128 slots held by silent connections: a 129th from it
    // is served instead of reset.
    let server = Server::start(&["--client-timeout", "120", "app", s(&root)]);
    let silent: Vec<TcpStream> = (0..128)
        .map(|_| TcpStream::connect(&server.host).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        assert_eq!(get(&server.url("/v2/"), &[]).status, 200);
    }
    drop(silent);
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

/// podman or buildah with its storage under `d` (vfs, no daemon).
pub(crate) fn storage(d: &Path, tool: &str) -> Command {
    let mut c = Command::new(tool);
    c.arg("--root")
        .arg(d.join(format!("{tool}-root")))
        .arg("--runroot")
        .arg(d.join(format!("{tool}-run")))
        .args(["--storage-driver", "vfs"]);
    if tool == "podman" {
        c.args(["--events-backend", "file", "--cgroup-manager", "cgroupfs"]);
    }
    c
}

/// `podman pull HOW docker://IMAGE` (plain HTTP) with storage under `d`:
/// the architecture pulled (then the image is removed).
pub(crate) fn podman_pull_arch(d: &Path, image: &str, how: &[&str]) -> String {
    run(storage(d, "podman")
        .args(["pull", "-q", "--tls-verify=false"])
        .args(how)
        .arg(format!("docker://{image}")));
    let got = run(storage(d, "podman").args([
        "image",
        "inspect",
        "--format",
        "{{.Architecture}}",
        image,
    ]));
    run(storage(d, "podman").args(["rmi", "-f", image]));
    String::from_utf8_lossy(&got.stdout).trim().to_owned()
}

/// A private containerd under `d` (its own root, state and socket) pulls
/// every platform of `image` with `ctr --plain-http`: `ctr images ls` and
/// `ctr content ls -q` afterwards. Panics with ctr's complaint if the pull fails.
pub(crate) fn ctr_pull_all_platforms(d: &Path, image: &str) -> (String, String) {
    let cd = d.join("containerd");
    fs::create_dir_all(&cd).unwrap();
    let sock = cd.join("sock");
    fs::write(
        cd.join("config.toml"),
        format!(
            "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = {:?}\n[ttrpc]\n  address = {:?}\n",
            s(&cd.join("root")),
            s(&cd.join("state")),
            s(&sock),
            format!("{}.ttrpc", s(&sock)),
        ),
    )
    .unwrap();
    let mut containerd = Command::new("containerd")
        .arg("-c")
        .arg(cd.join("config.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start containerd");
    let ctr = |args: &[&str]| {
        Command::new("ctr")
            .arg("--address")
            .arg(&sock)
            .args(args)
            .output()
            .expect("run ctr")
    };
    wait_for("containerd to answer", Duration::from_secs(20), || {
        ctr(&["version"]).status.success()
    });
    let pulled = ctr(&["images", "pull", "--plain-http", "--all-platforms", image]);
    let listed = ctr(&["images", "ls"]);
    let content = ctr(&["content", "ls", "-q"]);
    let _ = containerd.kill();
    let _ = containerd.wait();
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let text = |o: std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    (text(listed), text(content))
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

fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    (cert, key)
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

/// Blobs that must be hashed first (--verify) are hashed two at a time,
/// waiting without a thread: 40 clients asking for 40 unhashed 256 MiB
/// layers at once do not hold the threads that answer everything else.
#[test]
fn hashing_holds_no_request_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let size: u64 = 256 << 20;
    let zeros = {
        let mut h = ocimux::oci::digest::Hasher::new(ocimux::oci::digest::Algorithm::Sha256);
        let block = vec![0u8; 1 << 20];
        for _ in 0..(size >> 20) {
            h.update(&block);
        }
        h.finish().encoded().to_owned()
    };
    let mut repos = Vec::new();
    for i in 0..40 {
        let root = tmp.path().join(format!("l{i}"));
        let b = ocimux::testing::testutil::LayoutBuilder::new(&root);
        let layer = root.join("blobs/sha256").join(&zeros);
        fs::File::create(&layer).unwrap().set_len(size).unwrap();
        let config = b.json_blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::json!({"os": "linux", "architecture": "amd64", "i": i}),
        );
        let l = serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{zeros}"), "size": size});
        let m = b.json_blob(
            OCI_MANIFEST,
            &serde_json::json!({"schemaVersion": 2, "config": config, "layers": [l]}),
        );
        b.index(&[(m, None)]);
        repos.push((format!("r{i}"), root));
    }
    let refs: Vec<(&str, &Path)> = repos
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    let server = Server::start(&["--verify", "--config", s(&write_config(tmp.path(), &refs))]);
    let pullers: Vec<std::thread::JoinHandle<u16>> = repos
        .iter()
        .map(|(name, _)| {
            let url = server.url(&format!("/v2/{name}/blobs/sha256:{zeros}"));
            std::thread::spawn(move || curl("HEAD", &url, &[], &[]).status)
        })
        .collect();
    // Meanwhile: tags, the index and /v2/ answer at once.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut asked = 0;
    while pullers.iter().any(|p| !p.is_finished()) && started.elapsed() < Duration::from_secs(120) {
        let t = Instant::now();
        assert_eq!(get(&server.url("/v2/r7/tags/list"), &[]).status, 200);
        slowest = slowest.max(t.elapsed());
        asked += 1;
    }
    for p in pullers {
        assert_eq!(p.join().unwrap(), 200, "each layer, once hashed");
    }
    assert!(
        asked >= 5,
        "the hashing took {:?}: {asked} requests",
        started.elapsed()
    );
    // Measured: 0.5-0.6 s at worst here with two cores busy hashing; 13 s
    // when every request thread hashed.
    assert!(
        slowest < Duration::from_secs(3),
        "slowest answer {slowest:?} ({asked} asked)"
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
