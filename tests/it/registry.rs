//! The distributed path: push the mount to a real registry (Debian's
//! docker-registry on 127.0.0.1) with `skopeo copy --all`, read it back.

use std::fs;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

/// A docker-registry on a free loopback port, storage in a temp dir; killed on drop.
pub(crate) struct Registry {
    child: Child,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub(crate) fn start() -> Registry {
        require_tool("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        // Port 0: the kernel picks a free port for the registry itself (no
        // port found by binding it here and releasing it, which another
        // process could take in between); found afterwards from its socket.
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start docker-registry");
        let mut port = 0;
        wait_for("the registry to listen", Duration::from_secs(20), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("docker-registry exited: {status}");
            }
            port = listening_port(child.id()).unwrap_or(0);
            port != 0 && TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Registry {
            child,
            port,
            _dir: dir,
        }
    }
}

/// The TCP port process `pid` listens on (IPv4), from its sockets' inodes
/// and /proc/net/tcp.
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address, state (0A = LISTEN), inode
        let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
        if *state != "0A" || !inodes.iter().any(|i| i == inode) {
            return None;
        }
        u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
    })
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn skopeo_pushes_the_mount_to_a_registry_unchanged() {
    require_tool("skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, m) = two_arch_mount(tmp.path(), "r1");
    let index_json: Value = json_file(&m.path("index.json"));
    let index_digest = index_json["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let index: Value = serde_json::from_slice(
        &fs::read(m.path(&format!(
            "blobs/sha256/{}",
            index_digest.trim_start_matches("sha256:")
        )))
        .unwrap(),
    )
    .unwrap();

    let registry = Registry::start();
    let dest = format!("docker://127.0.0.1:{}/app:latest", registry.port);
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}", m.dir.display()),
        &dest,
    ]));

    // The registry holds the very index the mount generated.
    let raw =
        run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &dest])).stdout;
    assert_eq!(
        ocimux::oci::digest::Digest::sha256_of(&raw).to_string(),
        index_digest
    );

    // And a client asking for arm64 gets the arm64 source's image (its layers).
    let arm64_manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["platform"]["architecture"] == "arm64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let manifest: Value = serde_json::from_slice(
        &fs::read(m.path(&format!("blobs/sha256/{arm64_manifest}"))).unwrap(),
    )
    .unwrap();
    let want_layers: Vec<Value> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].clone())
        .collect();
    let out = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--override-os",
        "linux",
        "--override-arch",
        "arm64",
        &dest,
    ]))
    .stdout;
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["Architecture"], "arm64");
    assert_eq!(out["Layers"], Value::Array(want_layers));
}
