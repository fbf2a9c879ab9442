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

mod api;
mod hostile;
mod observed;
mod page;
mod publish;
mod pulls;
mod rebuilds;

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

    /// `ocimux [GLOBAL…] serve --listen 127.0.0.1:0 ARGS…` without `-v`:
    /// what an operator sees by default.
    pub(crate) fn start_quiet(global: &[&str], args: &[&str]) -> Server {
        let mut c = Command::new(bin());
        c.args(global).args(["serve", "--listen", "127.0.0.1:0"]);
        Self::spawned(c, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ocimux serve ARGS…` (its own `--listen` or configuration), once its
    /// URL is printed.
    pub(crate) fn start_listening(args: &[&str]) -> Server {
        let mut c = Command::new(bin());
        c.args(["-v", "serve"]);
        Self::spawned(c, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Server::start`] with at most `n` open files (prlimit).
    pub(crate) fn start_with_nofile(n: u64, args: &[&str]) -> Server {
        let mut c = Command::new("prlimit");
        c.arg(format!("--nofile={n}:{n}")).arg(bin());
        Self::start_as(c, args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn start_as(mut command: Command, args: &[&str]) -> Result<Server, String> {
        command.args(["-v", "serve", "--listen", "127.0.0.1:0"]);
        Self::spawned(command, args)
    }

    fn spawned(mut command: Command, args: &[&str]) -> Result<Server, String> {
        let mut child = command
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

    /// The spec's error code, or the plain-text body of an answer that has
    /// none (a router's 404 or 405).
    pub(crate) fn error_code(&self) -> String {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(v) => v["errors"][0]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            Err(_) => format!("text: {}", String::from_utf8_lossy(&self.body).trim()),
        }
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
pub(crate) fn blobs_of(root: &Path) -> BTreeMap<String, Vec<u8>> {
    layout_members(root)
        .into_iter()
        .filter_map(|(name, bytes)| Some((name.strip_prefix("./blobs/")?.to_owned(), bytes)))
        .collect()
}

/// Sends raw bytes on one connection and reads what comes back until the
/// server closes it or `within` passes.
pub(crate) fn raw(host: &str, request: &[u8], within: Duration) -> Vec<u8> {
    let mut c = TcpStream::connect(host).expect("connect");
    c.set_read_timeout(Some(within)).unwrap();
    c.write_all(request).expect("send");
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    out
}

/// The status line and the value of Content-Length of one response on `c`,
/// its body read and returned.
pub(crate) fn read_response(c: &mut BufReader<TcpStream>, head_only: bool) -> (String, Vec<u8>) {
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
pub(crate) fn write_config(dir: &Path, repos: &[(&str, &Path)]) -> PathBuf {
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
pub(crate) fn sockets(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

pub(crate) fn vm_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

pub(crate) fn chown_r(path: &Path, owner: &str) {
    run(Command::new("chown").args(["-R", owner]).arg(path));
}

/// A layer file of `layout` (its first manifest's first layer).
pub(crate) fn first_layer(layout: &Path) -> PathBuf {
    let index = json_file(&layout.join("index.json"));
    let man = json_file(
        &layout
            .join("blobs/sha256")
            .join(hex(&index["manifests"][0])),
    );
    layout.join("blobs/sha256").join(hex(&man["layers"][0]))
}

/// `ocimux serve … app SOURCE -- true`: a start, its checks, and a stop.
pub(crate) fn serve_once(source: &Path) -> std::process::Output {
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
pub(crate) fn body_of(host: &str, path: &str) -> BufReader<TcpStream> {
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

pub(crate) fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2654435761);
            x.wrapping_add(seed.wrapping_mul(0x9E37_79B9)).to_le_bytes()[3]
        })
        .collect()
}

/// A layout with `count` SBOM referrers of `image`, each with an annotation
/// of `annotation` bytes; their descriptors, in index order.
pub(crate) fn with_referrers(
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

pub(crate) fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
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
