//! Issue 11, for real: mount(8) and fstab, scoped mounts, export in each
//! link mode (same filesystem, tmpfs, a reflink-capable XFS), verify,
//! inspect --json, completions and the man page.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use ocimux::testing::testutil::LayoutBuilder;

/// Two small sources: an umoci one (amd64) and a LayoutBuilder one (arm64,
/// one 4 MiB layer).
fn sources(dir: &Path) -> (PathBuf, PathBuf) {
    let amd64 = umoci_layout(dir, "amd64", "reach");
    let layer: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let b = LayoutBuilder::new(dir.join("arm64-oci"));
    let m = b.image(
        serde_json::json!({"os": "linux", "architecture": "arm64"}),
        &[&layer],
    );
    b.index(&[(m, None)]);
    (amd64, b.root)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The mount(8) source that runs this build: mount.fuse3's `PROGRAM#SOURCES`
/// form with the binary's absolute path, used with `-t fuse`. It runs exactly
/// what `-t fuse.ocimux SOURCES` runs once `ocimux` is installed (mount.fuse3
/// finds that with a fixed PATH), without installing anything outside the
/// test's own directories.
fn helper_source(sources: &str) -> String {
    format!("{}#{sources}", bin())
}

/// Two sources, an empty mountpoint and the SOURCES mount(8) takes.
fn for_mount_8(tmp: &Path) -> (PathBuf, PathBuf, PathBuf, String) {
    require_tool("mount");
    let (amd64, arm64) = sources(tmp);
    let mnt = tmp.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let sources = format!("{}:{}", s(&amd64), s(&arm64));
    (amd64, arm64, mnt, sources)
}

fn index_tag(mnt: &Path) -> String {
    json_file(&mnt.join("index.json"))["manifests"][0]["annotations"]
        ["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// mount -t fuse PROGRAM#SOURCES and an fstab line (with fstab-only words), then
/// umount(8).
#[test]
fn mount_8_and_fstab_lines_mount_and_umount_8_unmounts() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, mnt, sources) = for_mount_8(tmp.path());
    run(Command::new("mount")
        .args(["-t", "fuse", &helper_source(&sources)])
        .arg(&mnt)
        .args(["-o", "tag=v1,noauto,_netdev,x-systemd.automount,nofail"]));
    assert!(is_mounted(&mnt));
    assert_eq!(index_tag(&mnt), "v1");
    let index: serde_json::Value = serde_json::from_slice(&served_index(&mnt)).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    let pid = daemon_pid(&mnt);
    run(Command::new("umount").arg(&mnt));
    assert!(!is_mounted(&mnt));
    wait_for("the daemon to exit", Duration::from_secs(10), || {
        !ocimux::process::lifecycle::process_alive(pid)
    });
    // The same through an fstab file (mount --fstab), as systemd would.
    let fstab = tmp.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "{} {} fuse defaults,noauto,user,tag=v2,allow_other 0 0\n",
            helper_source(&sources).replace(' ', "\\040"),
            s(&mnt)
        ),
    )
    .unwrap();
    run(Command::new("mount").arg("--fstab").arg(&fstab).arg(&mnt));
    assert_eq!(index_tag(&mnt), "v2");
    run(Command::new("umount").arg(&mnt));
    assert!(!is_mounted(&mnt));
    // A bad option is refused before anything is mounted.
    let out = Command::new("mount")
        .args(["-t", "fuse", &helper_source(&sources)])
        .arg(&mnt)
        .args(["-o", "size=1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!is_mounted(&mnt));
}

/// Issue 16: pieces of SOURCES in the mount(8) form are sources, never
/// options or a command, whatever they start with.
#[test]
fn mount_8_sources_never_become_options_or_a_command() {
    require_tool("mount");
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, _) = sources(tmp.path());
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let ran = tmp.path().join("ran");
    let log = tmp.path().join("log");
    for sources in [
        format!("{}:--:/bin/sh:-c:touch {}", s(&amd64), s(&ran)),
        format!("{}:--log-file={}:-oallow_other", s(&amd64), s(&log)),
        format!("{}:--:/usr/bin/touch:{}", s(&amd64), s(&ran)),
    ] {
        let out = Command::new("mount")
            .args(["-t", "fuse", &helper_source(&sources)])
            .arg(&mnt)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sources}: mounted");
        assert!(err.contains("does not exist"), "{sources}: {err}");
        assert!(!is_mounted(&mnt), "{sources}");
        assert!(!ran.exists(), "{sources}: a source ran a command");
        assert!(!log.exists(), "{sources}: a source became --log-file");
    }
}

/// `-- CMD`: output and status passed through, unmounted afterwards; --tmp.
#[test]
fn scoped_mounts_pass_output_and_status_and_always_unmount() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, arm64) = sources(tmp.path());
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    for (script, code) in [("exit 0", 0), ("exit 3", 3), ("kill -TERM $$", 143)] {
        let out = ocimux(&[
            "mount",
            s(&mnt),
            s(&amd64),
            s(&arm64),
            "--",
            "sh",
            "-c",
            &format!(
                r#"test "$OCIMUX_MNT" = "{}" && cat "$OCIMUX_MNT/oci-layout"; {script}"#,
                s(&mnt)
            ),
        ]);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, br#"{"imageLayoutVersion":"1.0.0"}"#, "{script}");
        assert!(!is_mounted(&mnt), "{script}: still mounted");
    }
    // --tmp: a fresh directory, removed afterwards.
    let out = ocimux(&[
        "mount",
        "--tmp",
        s(&amd64),
        "--",
        "sh",
        "-c",
        r#"test -f "$OCIMUX_MNT/index.json" && echo "$OCIMUX_MNT""#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let used = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(used.is_absolute() && !used.exists(), "{}", used.display());
    // A command that does not exist: 127, and nothing left mounted.
    let out = ocimux(&["mount", s(&mnt), s(&amd64), "--", "/nonexistent/cmd"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(!is_mounted(&mnt));
    // --tmp without a command is bad input.
    assert_eq!(
        ocimux(&["mount", "--tmp", s(&amd64)]).status.code(),
        Some(2)
    );
}

/// The first line a child prints.
fn first_line(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    line.trim().to_owned()
}

/// Ends the process `pid` (this test's own, by the pid it printed: never a
/// process found by its name).
fn kill_pid(pid: i32) {
    // SAFETY: kill with a pid and a valid signal.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// `ocimux mount DIR/mnt SOURCE -- sh -c 'echo $$; exec sleep SECS'`,
/// running once the mount is up; the pid of the sleep.
fn scoped_sleep(dir: &Path, secs: &str) -> (PathBuf, std::process::Child, i32) {
    let (amd64, _) = sources(dir);
    let mnt = dir.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let script = format!("echo $$; exec sleep {secs}");
    let mut child = Command::new(bin())
        .args(["mount", s(&mnt), s(&amd64), "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sleep_pid: i32 = first_line(&mut child).parse().unwrap();
    wait_for("the scoped mount", Duration::from_secs(20), || {
        is_mounted(&mnt)
    });
    (mnt, child, sleep_pid)
}

/// SIGTERM to ocimux reaches the command; the mount is gone afterwards.
#[test]
fn a_terminated_scoped_mount_unmounts() {
    let tmp = tempfile::tempdir().unwrap();
    let (mnt, mut child, _) = scoped_sleep(tmp.path(), "60");
    // SAFETY: kill with a valid pid and signal.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(143),
        "sleep was terminated, its status passed on"
    );
    assert!(!is_mounted(&mnt));
}

/// A scoped mount whose ocimux is SIGKILLed (a CI job cancelled) does not
/// outlive it: the daemon sees its parent gone and unmounts.
#[test]
fn a_killed_scoped_mount_does_not_outlive_ocimux() {
    let tmp = tempfile::tempdir().unwrap();
    let (mnt, mut child, sleep_pid) = scoped_sleep(tmp.path(), "37.25");
    let amd64 = tmp.path().join("amd64-oci");
    let pid = daemon_pid(&mnt);
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("the mount to go", Duration::from_secs(10), || {
        !is_mounted(&mnt)
    });
    wait_for("the daemon to exit", Duration::from_secs(10), || {
        !ocimux::process::lifecycle::process_alive(pid)
    });
    kill_pid(sleep_pid);
    // With --tmp, the temporary mountpoint goes too.
    let mut child = Command::new(bin())
        .args([
            "mount",
            "--tmp",
            s(&amd64),
            "--",
            "sh",
            "-c",
            "echo \"$OCIMUX_MNT\"; echo $$; exec sleep 37.5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = |what: &str| {
        let mut l = String::new();
        std::io::BufRead::read_line(&mut out, &mut l).unwrap();
        assert!(!l.is_empty(), "no {what}");
        l.trim().to_owned()
    };
    let tmp_mnt = PathBuf::from(line("mountpoint"));
    let sleep_pid: i32 = line("pid").parse().unwrap();
    assert!(is_mounted(&tmp_mnt), "{}", tmp_mnt.display());
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for(
        "the temporary mountpoint to go",
        Duration::from_secs(10),
        || !tmp_mnt.exists(),
    );
    kill_pid(sleep_pid);
}

/// Free bytes of the filesystem holding `p`.
fn free_bytes(p: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(p).unwrap();
    st.blocks_available() as u64 * st.fragment_size() as u64
}

fn export(args: &[&str]) -> std::process::Output {
    let mut all = vec!["export", "-v"];
    all.extend_from_slice(args);
    ocimux(&all)
}

/// A scratch filesystem mounted at `dir` (tmpfs or an XFS image), unmounted on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn tmpfs(dir: &Path) -> Scratch {
        fs::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256m", "tmpfs"])
            .arg(dir));
        Scratch(dir.to_owned())
    }

    fn xfs(dir: &Path, image: &Path) -> Scratch {
        require_tool("mkfs.xfs");
        fs::create_dir_all(dir).unwrap();
        let f = fs::File::create(image).unwrap();
        f.set_len(512 << 20).unwrap();
        run(Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(image));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(dir));
        Scratch(dir.to_owned())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The export equals the mount (diff -r), and each link mode does what it
/// says: no data blocks added on the source's filesystem (hard links) or on
/// XFS (reflinks), copies on tmpfs.
#[test]
fn export_matches_the_mount_in_every_link_mode() {
    require_tool("diff");
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, arm64) = sources(tmp.path());
    let mnt = Mount::new(&tmp.path().join("mnt"), &[s(&amd64), s(&arm64)]);
    let same = |out: &Path| {
        run(Command::new("diff").arg("-r").arg(&mnt.dir).arg(out));
    };
    // Same filesystem, auto: hard links (ext4/overlay have no reflink).
    let out = tmp.path().join("out-auto");
    let r = export(&[s(&out), s(&amd64), s(&arm64)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let log = String::from_utf8_lossy(&r.stdout);
    assert!(
        log.contains("hard-linked") || log.contains("reflinked"),
        "{log}"
    );
    // Only the export's own blocks count (the filesystem is shared with the
    // other tests): files that are not the sources' own inodes.
    let sources: std::collections::HashSet<(u64, u64)> = [&amd64, &arm64]
        .iter()
        .flat_map(|root| tree_state(root).into_keys().map(move |p| root.join(p)))
        .filter_map(|p| fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    let added: u64 = tree_state(&out)
        .into_keys()
        .filter_map(|p| fs::metadata(out.join(p)).ok())
        .filter(|m| m.is_file() && !sources.contains(&(m.dev(), m.ino())))
        .map(|m| m.blocks() * 512)
        .sum();
    assert!(added < 1 << 20, "{added} bytes of data blocks were added");
    same(&out);
    // To a tmpfs: copied, every byte.
    let t = Scratch::tmpfs(&tmp.path().join("tmpfs"));
    let out = t.0.join("out");
    let r = export(&[s(&out), s(&amd64), s(&arm64)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let log = String::from_utf8_lossy(&r.stdout);
    assert!(
        log.contains("0 reflinked, 0 hard-linked, 6 copied"),
        "{log}"
    );
    same(&out);
    let used = (256u64 << 20) - free_bytes(&t.0);
    assert!(
        used >= 4 << 20,
        "the copies take their bytes on tmpfs: {used}"
    );
    // --link hardlink across filesystems is refused, and leaves nothing.
    let out2 = t.0.join("out2");
    let r = export(&["--link", "hardlink", s(&out2), s(&amd64)]);
    assert_eq!(
        r.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(!out2.exists() && fs::read_dir(&t.0).unwrap().count() == 1);
    // On XFS with reflink: clones, no data blocks added.
    let x = Scratch::xfs(&tmp.path().join("xfs"), &tmp.path().join("xfs.img"));
    let src = x.0.join("src");
    run(Command::new("cp").arg("-r").arg(&arm64).arg(&src));
    let before = free_bytes(&x.0);
    let out = x.0.join("out");
    let r = export(&["--link", "reflink", s(&out), s(&src)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("3 reflinked"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(
        before.saturating_sub(free_bytes(&x.0)) < 1 << 20,
        "reflinks added data blocks"
    );
    // Existing OUT: refused, kept; replaced with --force.
    fs::write(out.join("marker"), b"x").unwrap();
    let r = export(&[s(&out), s(&src)]);
    assert_eq!(
        r.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(out.join("marker").exists());
    let r = export(&["--force", s(&out), s(&src)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(!out.join("marker").exists() && out.join("index.json").exists());
    // OUT as a source, inside one, or holding one: refused, the source untouched.
    let before = tree_state(&src);
    for out in [src.clone(), src.join("blobs/out"), x.0.clone()] {
        let r = export(&["--force", s(&out), s(&src)]);
        assert_eq!(
            r.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert!(String::from_utf8_lossy(&r.stderr).contains("would overlap the source"));
    }
    assert_eq!(tree_state(&src), before);
}

/// An oci-archive export is what skopeo reads, byte for byte the mount's index.
#[test]
fn an_oci_archive_export_is_read_by_skopeo() {
    require_tool("skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, arm64) = sources(tmp.path());
    let archive = tmp.path().join("app.tar");
    let r = export(&[
        "--format",
        "oci-archive",
        "--verify",
        s(&archive),
        s(&amd64),
        s(&arm64),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let mnt = Mount::new(&tmp.path().join("mnt"), &[s(&amd64), s(&arm64)]);
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci-archive:{}", s(&archive)),
    ]))
    .stdout;
    assert_eq!(raw, served_index(&mnt.dir));
    let copy = tmp.path().join("copy");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "-q",
        &format!("oci-archive:{}", s(&archive)),
        &format!("oci:{}:latest", s(&copy)),
    ]));
}

/// A killed export leaves no OUT; the next one removes what it left.
#[test]
fn a_killed_export_leaves_nothing_at_out() {
    let tmp = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..(192u32 << 20)).map(|i| (i >> 12) as u8).collect();
    let (b, _) = LayoutBuilder::one_layer(tmp.path().join("src"), &big);
    let t = Scratch::tmpfs(&tmp.path().join("tmpfs"));
    let out = t.0.join("out");
    let mut child = Command::new(bin())
        .args(["export", "--format", "oci-archive", s(&out), s(&b.root)])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let staging = t.0.join(format!(".out.ocimux-export-{pid}"));
    let partial = staging.join("out");
    wait_for(
        "the export to start writing",
        Duration::from_secs(20),
        || fs::metadata(&partial).is_ok_and(|m| m.len() > 1 << 20),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "a killed export left OUT");
    let r = export(&["--format", "oci-archive", s(&out), s(&b.root)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        !staging.exists(),
        "the killed export's staging directory was not removed"
    );
    assert_eq!(fs::metadata(&out).unwrap().size() % 512, 0);
}

/// verify: a flipped byte, a truncated and a missing layer are each named
/// with their source (exit 1); a mount verifies clean; --json for scripts.
#[test]
fn verify_names_bad_blobs_and_passes_a_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, arm64) = sources(tmp.path());
    let ok = ocimux(&["verify", s(&amd64), s(&arm64)]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    {
        let mnt = Mount::new(&tmp.path().join("mnt"), &[s(&amd64), s(&arm64)]);
        let out = ocimux(&["verify", "--json", s(&mnt.dir)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(results.as_array().unwrap().len() >= 6);
    }
    // Flip one byte of the 4 MiB layer, in place.
    let index = json_file(&arm64.join("index.json"));
    let manifest = json_file(&arm64.join(format!("blobs/sha256/{}", hex(&index["manifests"][0]))));
    let layer = arm64.join(format!("blobs/sha256/{}", hex(&manifest["layers"][0])));
    let mut bytes = fs::read(&layer).unwrap();
    bytes[1 << 20] ^= 1;
    fs::write(&layer, &bytes).unwrap();
    let bad = ocimux(&["verify", s(&amd64), s(&arm64)]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&hex(&manifest["layers"][0])) && err.contains(s(&arm64)),
        "{err}"
    );
    let json = ocimux(&["verify", "--json", s(&amd64), s(&arm64)]);
    let results: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let bad_ones: Vec<_> = results
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["error"].is_null())
        .collect();
    assert_eq!(bad_ones.len(), 1);
    // Truncated, and another layer missing: each named, exit 1.
    fs::write(&layer, &bytes[..1000]).unwrap();
    let amd_index = json_file(&amd64.join("index.json"));
    let amd_manifest =
        json_file(&amd64.join(format!("blobs/sha256/{}", hex(&amd_index["manifests"][0]))));
    let amd_layer = hex(&amd_manifest["layers"][0]);
    fs::rename(
        amd64.join(format!("blobs/sha256/{amd_layer}")),
        tmp.path().join("aside"),
    )
    .unwrap();
    let short = ocimux(&["verify", s(&amd64), s(&arm64)]);
    let err = String::from_utf8_lossy(&short.stderr);
    assert_eq!(short.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&hex(&manifest["layers"][0])) && err.contains("size 1000"),
        "{err}"
    );
    assert!(err.contains(&amd_layer) && err.contains("missing"), "{err}");
    // The mount itself still refuses such sources (bad input).
    let mnt = tmp.path().join("mnt2");
    fs::create_dir(&mnt).unwrap();
    assert_eq!(
        ocimux(&["mount", s(&mnt), s(&amd64)]).status.code(),
        Some(2)
    );
}

#[test]
fn inspect_json_lists_every_file_with_its_source() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, arm64) = sources(tmp.path());
    let out = ocimux(&["inspect", "--json", s(&amd64), s(&arm64)]);
    assert!(out.status.success());
    let files: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mnt = Mount::new(&tmp.path().join("mnt"), &[s(&amd64), s(&arm64)]);
    let mut served: Vec<String> = rehash_blobs(&mnt.dir)
        .into_iter()
        .map(|(n, _)| format!("blobs/sha256/{n}"))
        .collect();
    served.extend(["oci-layout".into(), "index.json".into()]);
    served.sort();
    let mut listed: Vec<String> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, served);
    for f in files.as_array().unwrap() {
        let size = fs::metadata(mnt.dir.join(f["path"].as_str().unwrap()))
            .unwrap()
            .len();
        assert_eq!(f["size"].as_u64(), Some(size));
    }
    // Each platform manifest's row: its platform, and its image's size as
    // the manifest read through the mount adds it up.
    let table = ocimux(&["inspect", s(&amd64), s(&arm64)]);
    let text = String::from_utf8_lossy(&table.stdout);
    let mut platforms = Vec::new();
    for f in files.as_array().unwrap() {
        let Some(platform) = f.get("platform") else {
            continue;
        };
        let path = mnt.dir.join(f["path"].as_str().unwrap());
        let m: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        let parts = m["layers"].as_array().unwrap().iter().chain([&m["config"]]);
        let want =
            f["size"].as_u64().unwrap() + parts.map(|d| d["size"].as_u64().unwrap()).sum::<u64>();
        assert_eq!(f["imageSize"].as_u64(), Some(want), "{f}");
        let row = text
            .lines()
            .find(|l| l.starts_with(platform.as_str().unwrap()))
            .unwrap();
        assert!(row.contains(&format!(" {want} ")), "{row}");
        platforms.push(platform.as_str().unwrap().to_owned());
    }
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert!(text.contains("HUMAN") && text.contains(" MiB)"), "{text}");
}

#[test]
fn completions_and_man_page_generate() {
    for shell in ["bash", "zsh", "fish"] {
        let out = ocimux(&["completions", shell]);
        assert!(out.status.success() && out.stdout.len() > 1000, "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("export"),
            "{shell}"
        );
    }
    let man = ocimux(&["man"]);
    assert!(man.status.success());
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(
        text.starts_with(".ie") || text.contains(".TH ocimux"),
        "{}",
        &text[..200.min(text.len())]
    );
    for sub in [
        "mount",
        "umount",
        "inspect",
        "export",
        "verify",
        "completions",
        "man",
    ] {
        let help = ocimux(&[sub, "--help"]);
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("Example"),
            "{sub} --help has no example"
        );
        // Issue 17: every page the top page refers to exists.
        let page = ocimux(&["man", sub]);
        let page_text = String::from_utf8_lossy(&page.stdout);
        assert!(page.status.success(), "man {sub}");
        assert!(
            page_text.contains(&format!(".TH ocimux-{sub} 1")),
            "man {sub}: {}",
            &page_text[..200.min(page_text.len())]
        );
        assert!(
            text.contains(&format!("ocimux\\-{sub}(1)")),
            "ocimux(1) lists {sub}"
        );
    }
    assert_eq!(ocimux(&["man", "bogus"]).status.code(), Some(2));
}

/// Issue 25: README's install block for completions and man pages runs as
/// written on a machine where none of its directories exist (here under a
/// private root: /etc, /usr/local and ~ moved into a temporary directory),
/// and installs a page for every subcommand `ocimux --help` lists.
#[test]
fn the_readme_install_block_runs_on_a_fresh_machine() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Completions and man page")
        .nth(1)
        .expect("README has the section");
    let block: String = section
        .lines()
        .skip_while(|l| !l.starts_with("    "))
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    assert!(block.contains("ocimux man"), "{block}");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_str().unwrap();
    let script = block
        .replace("/etc/", &format!("{root}/etc/"))
        .replace("/usr/local/", &format!("{root}/usr/local/"))
        .replace("~/", &format!("{root}/home/"));
    let bin_dir = Path::new(bin()).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}\n{out:?}");
    let man1 = tmp.path().join("usr/local/share/man/man1");
    let help = String::from_utf8(ocimux(&["--help"]).stdout).unwrap();
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A command's line, not its description's continuation.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(commands.len() >= 9, "{commands:?}");
    for c in commands
        .iter()
        .map(|c| format!("ocimux-{c}.1"))
        .chain(["ocimux.1".into()])
    {
        let page = fs::read_to_string(man1.join(&c)).unwrap_or_default();
        assert!(page.contains(".TH ocimux"), "{c} not installed");
    }
    for f in [
        "etc/bash_completion.d/ocimux",
        "usr/local/share/zsh/site-functions/_ocimux",
        "home/.config/fish/completions/ocimux.fish",
    ] {
        assert!(
            fs::metadata(tmp.path().join(f)).unwrap().len() > 1000,
            "{f}"
        );
    }
}

/// Issue 17: output cut short by a closed pipe ends quietly with status 0
/// (ripgrep's behaviour), never a panic or "Broken pipe".
#[test]
fn a_closed_pipe_ends_output_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, arm64) = sources(tmp.path());
    for args in [
        vec!["completions", "zsh"],
        vec!["completions", "bash"],
        vec!["man"],
        vec!["inspect", "--json", s(&amd64), s(&arm64)],
        vec!["verify", "--json", s(&amd64), s(&arm64)],
    ] {
        // A reader that closes at once: every write after it fails with EPIPE.
        let mut child = Command::new(bin())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

/// Issue 17: the sample layouts can be made by an unprivileged user (umoci
/// unpacks --rootless then), and mount.
#[test]
fn sample_layouts_are_made_by_an_unprivileged_user_too() {
    require_tool("umoci");
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    chown(&work, NOBODY);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-sample-layouts.sh");
    let out = nobody("env")
        .arg(format!("TMPDIR={}", work.display()))
        .arg(format!("HOME={}", work.display()))
        .arg("bash")
        .arg(&script)
        .arg(work.join("deploy"))
        .arg("arm64")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layout = work.join("deploy/app-arm64-latest-oci");
    let r = ocimux(&["inspect", s(&layout)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("linux/arm64"));
}

/// Issue 17: every `-o` word of the mount(8) form is declared once and names
/// a real `ocimux mount` option; every FUSE word is one `mount -o` takes.
#[test]
fn every_dash_o_word_names_a_mount_option() {
    let help = String::from_utf8(ocimux(&["mount", "--help"]).stdout).unwrap();
    for (word, flag, takes_value) in ocimux::mount::fstab::OCIMUX_WORDS {
        let long = format!("--{flag}");
        let line = help
            .lines()
            .find(|l| l.trim_start().split([' ', ',']).any(|w| w == long))
            .unwrap_or_else(|| panic!("-o {word}: ocimux mount has no {long}"));
        assert_eq!(line.contains('<'), *takes_value, "-o {word}: {line}");
    }
    for word in ocimux::mount::fstab::FUSE_WORDS {
        let opts = match *word {
            "auto_unmount" => "auto_unmount,allow_other".to_owned(),
            w => w.to_owned(),
        };
        assert!(
            ocimux::mount::daemon::MountOptions::parse([opts.as_str()]).is_ok(),
            "-o {word}"
        );
    }
}

/// Issue 25, skopeo's manners: a command that writes says what it wrote in
/// one line (`export`: files, links, bytes copied); `-q` leaves only errors
/// (no summary, no progress) for `export` and `verify`.
#[test]
fn writers_summarize_and_quiet_means_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, arm64) = sources(tmp.path());
    let (out1, out2) = (tmp.path().join("out"), tmp.path().join("out2"));
    let out = ocimux(&["export", s(&out1), s(&amd64), s(&arm64)]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.starts_with("exported ")
            && said.contains("hard-linked")
            && said.contains("0 bytes copied"),
        "{said}"
    );
    let quiet_export = ocimux(&["-q", "export", s(&out2), s(&amd64), s(&arm64)]);
    let quiet_verify = ocimux(&["-q", "verify", s(&amd64), s(&arm64)]);
    for out in [quiet_export, quiet_verify] {
        assert!(out.status.success(), "{out:?}");
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    }
}

/// Issue 25, mount(8)'s manners: the mount's source is its sources as the
/// fstab line wrote them, so `mount -a` a second time finds it mounted
/// (exit 0, one mount); a second mount there is told who holds it; the
/// helper form takes a relative mountpoint; a mountpoint and a source given
/// the wrong way round get a hint.
#[test]
fn mount_8_manners() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, arm64, mnt, sources) = for_mount_8(tmp.path());
    let fstab = tmp.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "{} {} fuse defaults,tag=v3 0 0\n",
            helper_source(&sources),
            s(&mnt)
        ),
    )
    .unwrap();
    let mounts_at = |dir: &Path| {
        ocimux::files::mountinfo::all()
            .unwrap()
            .into_iter()
            .filter(|e| e.mountpoint == dir && e.is_ocimux())
            .collect::<Vec<_>>()
    };
    for _ in 0..2 {
        let out = Command::new("mount")
            .arg("--fstab")
            .arg(&fstab)
            .arg("-a")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(mounts_at(&mnt).len(), 1, "mount -a is idempotent");
    }
    assert_eq!(mounts_at(&mnt)[0].source, helper_source(&sources));
    assert_eq!(index_tag(&mnt), "v3");
    // A second mount there: who holds it, and from what.
    let out = ocimux(&["mount", s(&mnt), s(&amd64)]);
    let err = String::from_utf8_lossy(&out.stderr);
    let pid = daemon_pid(&mnt);
    assert!(
        err.contains(&format!(
            "already mounted by ocimux (pid {pid}) from {}",
            helper_source(&sources)
        )),
        "{err}"
    );
    assert_eq!(mounts_at(&mnt).len(), 1);
    run(Command::new("umount").arg(&mnt));

    // `ocimux mount`: the source shown is the sources, as fstab writes them.
    let m = Mount::new(&mnt, &[s(&amd64), s(&arm64)]);
    assert_eq!(mounts_at(&m.dir)[0].source, sources);
    drop(m);

    // The helper form with a relative mountpoint, typed in tmp.
    let out = Command::new(bin())
        .args([sources.as_str(), "mnt", "-o", "tag=rel"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(index_tag(&mnt), "rel");
    assert!(ocimux(&["umount", s(&mnt)]).status.success());

    // mount(8)'s order given to `ocimux mount`: a hint, nothing mounted.
    let out = ocimux(&["mount", s(&amd64), s(&mnt)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("hint: the mountpoint comes first"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(mounts_at(&mnt).is_empty() && mounts_at(&amd64).is_empty());
}
