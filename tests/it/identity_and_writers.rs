//! Issue 23, trust round three, on the mount side: a mount is known by what
//! only its daemon holds, and a stop ends the service everywhere.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::Duration;

use crate::common::*;
use ocimux::testing::testutil::LayoutBuilder;

/// A FUSE mount that claims to be `daemon`'s (source `ocimux:PID`, type
/// `fuse.ocimux`, owned by nobody, as `fusermount3 -o fsname=…,subtype=ocimux`
/// makes it for any user), served by no one: anything that touches it hangs
/// until the connection is closed. Dropping closes it and detaches it.
struct Impostor {
    dir: PathBuf,
    fuse: Option<OwnedFd>,
}

impl Impostor {
    fn new(dir: &Path, daemon: i32) -> Impostor {
        fs::create_dir_all(dir).unwrap();
        chown(dir, NOBODY);
        let fuse: OwnedFd = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .unwrap()
            .into();
        let data = format!(
            "fd={},rootmode=40000,user_id={NOBODY},group_id={NOBODY}",
            fuse.as_raw_fd()
        );
        nix::mount::mount(
            Some(format!("ocimux:{daemon}").as_str()),
            dir,
            Some("fuse.ocimux"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .unwrap();
        Impostor {
            dir: dir.to_path_buf(),
            fuse: Some(fuse),
        }
    }

    /// Whether it is still mounted (read from mountinfo, never touched).
    fn mounted(&self) -> bool {
        let all = ocimux::files::mountinfo::all().unwrap();
        all.iter().any(|e| e.mountpoint == self.dir)
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.fuse.take();
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn mounted_at(tmp: &Path, extra: &[&str]) -> (PathBuf, Mount, i32) {
    let (m, pid) = one_image_mounted(tmp, extra);
    (m.dir.clone(), m, pid)
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

/// Class 1: a mount made after the daemon's, with the daemon's `ocimux:PID`
/// as its source, is never what a stop, `ocimux umount` or the watchdog
/// unmounts; the daemon's own mount is.
#[test]
fn a_mount_named_like_ours_is_never_unmounted_in_its_place() {
    use nix::sys::signal::Signal;
    for stop in ["SIGTERM", "umount", "SIGKILL"] {
        let tmp = tempfile::tempdir().unwrap();
        let (mnt, m, pid) = mounted_at(tmp.path(), &[]);
        let fake = Impostor::new(&fs::canonicalize(tmp.path()).unwrap().join("fake"), pid);
        assert!(fake.mounted() && is_mounted(&mnt));
        match stop {
            "SIGTERM" => signal(pid, Signal::SIGTERM),
            "SIGKILL" => signal(pid, Signal::SIGKILL),
            _ => {
                let out = ocimux(&["umount", "--timeout", "5", mnt.to_str().unwrap()]);
                assert!(
                    out.status.success(),
                    "{stop}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        wait_for("our mount to go", Duration::from_secs(10), || {
            !is_mounted(&mnt)
        });
        assert!(fake.mounted(), "{stop}: the impostor was unmounted");
        std::mem::forget(m);
    }
}

/// Class 10: a user's `unshare -Urm` holds a copy of the mount in a
/// namespace of their own. Whatever stops the mount (umount(8), SIGTERM,
/// `ocimux umount`) ends the service there too: the daemon exits and the
/// copy answers "not connected".
#[test]
fn a_stop_ends_the_service_in_every_namespace() {
    require_tool("unshare");
    require_tool("setpriv");
    use std::io::BufRead;
    for stop in ["umount(8)", "SIGTERM", "ocimux umount"] {
        let tmp = tempfile::tempdir().unwrap();
        open_to_all(tmp.path());
        let (mnt, m, pid) = mounted_at(tmp.path(), &["-o", "allow_other"]);
        let index = mnt.join("index.json");
        let script = format!(
            "cat '{0}' >/dev/null || exit 3; echo ready; while cat '{0}' >/dev/null 2>&1; do sleep 0.05; done; echo ended",
            index.display()
        );
        let mut copy = nobody("timeout")
            .args(["20", "unshare", "-Urm", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut said = std::io::BufReader::new(copy.stdout.take().unwrap()).lines();
        assert_eq!(said.next().unwrap().unwrap(), "ready", "{stop}");
        let started = std::time::Instant::now();
        match stop {
            "umount(8)" => {
                run(Command::new("umount").arg(&mnt));
            }
            "SIGTERM" => signal(pid, nix::sys::signal::Signal::SIGTERM),
            _ => {
                let out = ocimux(&["umount", "--timeout", "10", mnt.to_str().unwrap()]);
                assert!(
                    out.status.success(),
                    "{stop}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let ended = said.next().map(|l| l.unwrap());
        let _ = copy.kill();
        let _ = copy.wait();
        assert_eq!(
            ended.as_deref(),
            Some("ended"),
            "{stop}: the copy still served"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{stop}: took {:?}",
            started.elapsed()
        );
        wait_for("the daemon to exit", Duration::from_secs(10), || {
            !ocimux::process::lifecycle::process_alive(pid)
        });
        assert!(!is_mounted(&mnt));
        std::mem::forget(m);
    }
}

/// A writer holding the file open with a shared writable mapping, as an
/// attacker would: stores into pages already dirty change no mtime.
struct Mapped {
    ptr: *mut u8,
    len: usize,
    _file: fs::File,
}

impl Mapped {
    fn new(path: &Path) -> Mapped {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let len = file.metadata().unwrap().len() as usize;
        // SAFETY: a fresh shared mapping of the whole file, unmapped in drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        Mapped {
            ptr: ptr.cast(),
            len,
            _file: file,
        }
    }

    /// Stores `bytes` at the start (the page is dirty after the first store).
    fn store(&self, bytes: &[u8]) {
        assert!(bytes.len() <= self.len);
        // SAFETY: within the mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr, bytes.len()) };
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Class 5: `--verify` trusts a hashed version only while no one can
/// write it unseen. A writer's dirty pages keep (dev, ino, size, mtime,
/// ctime); before, a second GET (or a fresh open through the mount) sent
/// the writer's bytes under the digest.
#[test]
fn a_writer_with_a_mapping_never_gets_its_bytes_served_as_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("app-oci");
    let good: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let (b, layer) = LayoutBuilder::one_layer(&root, &good);
    let digest = layer["digest"].as_str().unwrap().to_owned();
    let path = b.blob_path(&layer);
    let hashes_right =
        |bytes: &[u8]| ocimux::oci::digest::Digest::sha256_of(bytes).to_string() == digest;
    // serve --verify
    let server =
        crate::serve::Server::start(&["--verify", "--static", "app", root.to_str().unwrap()]);
    let url = server.url(&format!("/v2/app/blobs/{digest}"));
    // mount --verify
    let mnt = tmp.path().join("mnt");
    let m = Mount::new(&mnt, &[root.to_str().unwrap(), "--verify", "--static"]);
    let through_mount = m.path(&format!("blobs/sha256/{}", hex(&layer)));
    let map = Mapped::new(&path);
    map.store(&good[..4096]); // dirty, same bytes
    // While the writer holds it: refused, never served.
    let r = crate::serve::get(&url, &[]);
    assert_ne!(r.status, 200, "served while mapped writable");
    let err = fs::read(&through_mount).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
    // The attack: a first verified read, then a store into the dirty page.
    let mut evil = good[..4096].to_vec();
    evil[0] ^= 0xff;
    map.store(&evil);
    // Refused, or the right bytes: never the writer's.
    let never_other_bytes = || {
        let r = crate::serve::get(&url, &[]);
        assert!(
            r.status != 200 || hashes_right(&r.body),
            "serve sent other bytes"
        );
        drop_caches();
        if let Ok(bytes) = fs::read(&through_mount) {
            assert!(hashes_right(&bytes), "the mount read other bytes");
        }
    };
    for _ in 0..3 {
        never_other_bytes();
    }
    // Good bytes back and the writer gone: served again, hashed anew.
    map.store(&good[..4096]);
    drop(map);
    let r = crate::serve::get(&url, &[]);
    assert_eq!(r.status, 200);
    assert!(hashes_right(&r.body));
    drop_caches();
    assert!(hashes_right(&fs::read(&through_mount).unwrap()));
    // A handle opened after the proof (no hash: the kept proof, and its
    // lease) reads nothing a writer stores after it was opened.
    let handle = fs::File::open(&through_mount).unwrap();
    let map = Mapped::new(&path);
    map.store(&evil);
    drop_caches();
    let mut head = vec![0u8; 4096];
    let read = std::os::unix::fs::FileExt::read_exact_at(&handle, &mut head, 0);
    assert!(
        read.is_err() || head == good[..4096],
        "an open handle read other bytes"
    );
    map.store(&good[..4096]);
    drop(map);
    drop(handle);
    // A writer that comes after the proof: the next open proves again, and
    // while it holds the file the blob is refused.
    let map = Mapped::new(&path);
    map.store(&evil);
    never_other_bytes();
    map.store(&good[..4096]);
}

/// Class 6: every directory whose permissions went into a blob's access is
/// watched, for every snapshot still served — the directory a symlinked
/// blob's target is in, and those above a layout whose blobs only a
/// replaced snapshot still serves.
#[test]
fn every_directory_that_narrows_a_blob_is_watched() {
    let tmp = tempfile::tempdir().unwrap();
    open_to_all(tmp.path());
    let above = tmp.path().join("home");
    fs::create_dir(&above).unwrap();
    chmod(&above, 0o755);
    let root = above.join("app-oci");
    let (b, desc) = LayoutBuilder::one_layer(&root, b"layers/amd64 layer");
    // The layer lives in layers/amd64; its blob name is a symlink there.
    let src = b.blob_path(&desc);
    let target_dir = root.join("layers/amd64");
    fs::create_dir_all(&target_dir).unwrap();
    fs::rename(&src, target_dir.join("layer")).unwrap();
    std::os::unix::fs::symlink("../../layers/amd64/layer", &src).unwrap();
    for dir in ["", "blobs", "blobs/sha256", "layers", "layers/amd64"] {
        chmod(&root.join(dir), 0o755);
    }
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &[root.to_str().unwrap(), "-o", "allow_other"],
    );
    let name = m.path(&format!("blobs/sha256/{}", hex(&desc)));
    assert!(nobody_reads(&name));
    chmod(&target_dir, 0o700);
    wait_timed(
        "chmod 700 of the target's directory to reach the mount",
        Duration::from_secs(3),
        || !nobody_reads(&name),
    );
    chmod(&target_dir, 0o755);
    wait_for(
        "chmod 755 to reach the mount",
        Duration::from_secs(3),
        || nobody_reads(&name),
    );

    // A rebuild replaces the layer: the old one is served by its name from
    // the replaced snapshot. Closing the directory above the layout closes
    // it too.
    let old = m.path(&format!("blobs/sha256/{}", hex(&desc)));
    let (_, new_desc) = LayoutBuilder::one_layer(&root, b"the next build");
    let new = m.path(&format!("blobs/sha256/{}", hex(&new_desc)));
    wait_for("the rebuild", Duration::from_secs(5), || nobody_reads(&new));
    assert!(
        nobody_reads(&old),
        "the replaced snapshot serves the old layer"
    );
    chmod(&above, 0o700);
    wait_for(
        "chmod 700 above the layout to reach the old layer",
        Duration::from_secs(3),
        || !nobody_reads(&old),
    );
    assert!(!nobody_reads(&new));
}
