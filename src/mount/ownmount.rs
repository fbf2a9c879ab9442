//! A mount known by what only its daemon holds, and acted on without a path
//! a user can swap.
//!
//! The source field and the type `fuse.ocimux` are strings any
//! user can give a FUSE mount of their own (`fusermount3 -o fsname=…`), so
//! they name nothing. A daemon's mount is an [`Identity`]: its never-reused
//! 64-bit mount id (`STATX_MNT_ID_UNIQUE`, read from the mount the daemon
//! made), its mountinfo id and its device (the FUSE connection, which the
//! daemon alone serves).
//!
//! To act on a mount, [`Held`] opens the directory it is mounted in without
//! following any symlink, checks through that fd that the name there is the
//! mount (by its unique id), and unmounts `/proc/self/fd/DIR/NAME` with
//! `UMOUNT_NOFOLLOW`. Between the check and the unmount the name cannot
//! change: the kernel refuses to rename a mountpoint, and only root can
//! mount over the daemon's mount. Unprivileged unmounts go through
//! fusermount3, which unmounts only the caller's own FUSE mounts.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::files::mountinfo::{self, MountEntry};

/// A mount, by what no other mount can share while it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// `STATX_MNT_ID_UNIQUE`: never reused while the system runs.
    pub unique: u64,
    /// The mountinfo id (first field; reused after an unmount).
    pub id: u64,
    /// The device: the FUSE connection is its minor.
    pub dev: (u32, u32),
}

/// The size of an [`Identity`] on the watchdog's pipe.
pub const IDENTITY_BYTES: usize = 24;

impl Identity {
    /// The identity of the mount `mnt` (a mount fd, or any fd of its root),
    /// read without asking the filesystem (its daemon may not answer yet).
    pub fn of_mount_fd(mnt: BorrowedFd<'_>) -> io::Result<Identity> {
        Identity::at(mnt, c"", libc::AT_EMPTY_PATH)
    }

    /// The identity of the mount at `name` in `dir` (not following a symlink).
    fn at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<Identity> {
        let flags = flags | libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_DONT_SYNC;
        let unique = crate::files::sys::statx(dir, name, flags, libc::STATX_MNT_ID_UNIQUE)?;
        let plain = crate::files::sys::statx(dir, name, flags, libc::STATX_MNT_ID)?;
        if plain.stx_mask & libc::STATX_MNT_ID == 0 {
            // Before Linux 5.8.
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        // Before Linux 6.8 there is no id that is never reused: 0 on both
        // sides of every comparison, which then rests on the mountinfo id
        // and the device (together unique among attached mounts).
        let unique_known = unique.stx_mask & libc::STATX_MNT_ID_UNIQUE != 0;
        Ok(Identity {
            unique: if unique_known { unique.stx_mnt_id } else { 0 },
            id: plain.stx_mnt_id,
            dev: (unique.stx_dev_major, unique.stx_dev_minor),
        })
    }

    /// The identity of the mount a helper (fusermount3) just made at
    /// `mountpoint` with source `fsname`: the topmost such mount there,
    /// checked through its directory.
    pub fn of_helper_mount(mountpoint: &Path, fsname: &str) -> io::Result<Identity> {
        let all = mountinfo::all()?;
        let entry = all
            .iter()
            .rev()
            .find(|e| e.mountpoint == mountpoint)
            .filter(|e| e.source == fsname && e.is_ocimux())
            .ok_or_else(|| io::Error::other("the new mount is not in mountinfo"))?;
        let (dir, name) = open_parent(&entry.mountpoint)?;
        let identity = Identity::at(dir.as_fd(), &name, 0)?;
        match identity.id == entry.id && dev_string(identity.dev) == entry.dev {
            true => Ok(identity),
            false => Err(io::Error::other(
                "the new mount changed while it was checked",
            )),
        }
    }

    /// This mount's entry in this process's mountinfo, if it is attached.
    pub fn entry<'a>(&self, all: &'a [MountEntry]) -> Option<&'a MountEntry> {
        all.iter()
            .find(|e| e.id == self.id && e.dev == dev_string(self.dev))
    }

    /// The FUSE connection number (`/sys/fs/fuse/connections/N`).
    pub fn connection(&self) -> u32 {
        self.dev.1
    }

    /// The bytes sent to the watchdog.
    pub fn to_bytes(self) -> [u8; IDENTITY_BYTES] {
        let mut b = [0u8; IDENTITY_BYTES];
        b[..8].copy_from_slice(&self.unique.to_le_bytes());
        b[8..16].copy_from_slice(&self.id.to_le_bytes());
        b[16..20].copy_from_slice(&self.dev.0.to_le_bytes());
        b[20..].copy_from_slice(&self.dev.1.to_le_bytes());
        b
    }

    /// The identity [`Identity::to_bytes`] sent.
    pub fn from_bytes(b: &[u8; IDENTITY_BYTES]) -> Identity {
        let (unique, rest) = b.split_at(8);
        let (id, dev) = rest.split_at(8);
        let (major, minor) = dev.split_at(4);
        let u64_of = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
        let u32_of = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or([0; 4]));
        Identity {
            unique: u64_of(unique),
            id: u64_of(id),
            dev: (u32_of(major), u32_of(minor)),
        }
    }

    /// Unmounts this mount where it is attached now, if nothing covers it;
    /// `Ok(false)` when it is not attached here or is covered (then it is
    /// left alone).
    pub fn unmount(&self, lazy: bool) -> Result<bool, UnmountError> {
        let all = mountinfo::all().map_err(UnmountError::Mountinfo)?;
        let Some(entry) = self.entry(&all) else {
            return Ok(false);
        };
        if entry.covered(&all) {
            log::warn!(
                "{}: something is mounted over this ocimux mount; left alone",
                entry.mountpoint.display()
            );
            return Ok(false);
        }
        let held = Held::open(entry).map_err(UnmountError::Locate)?;
        if held.identity != *self {
            log::warn!(
                "{}: the mount there is not this daemon's; left alone",
                entry.mountpoint.display()
            );
            return Ok(false);
        }
        held.unmount(lazy).map(|()| true)
    }
}

/// The pid of the daemon serving the ocimux mount `entry`, from the state
/// files of the user who mounted it (the kernel's `user_id=`; another
/// user's file never names it): the one whose mount has the unique id
/// `unique` when known, else the one mounted at its mountpoint; a mount
/// made by an older ocimux names it in its source. `None` when no live
/// daemon says it serves it (dead, or a user's this caller may not read).
pub fn daemon_of(entry: &MountEntry, unique: Option<u64>) -> Option<i32> {
    if let Some(pid) = entry.legacy_pid() {
        return Some(pid);
    }
    let mountpoint = entry.mountpoint.to_str()?;
    crate::process::state::read_of_user(entry.fuse_owner?)
        .into_iter()
        .map(|f| f.value)
        .filter(|v| v["kind"] == "mount" && v["mountpoint"] == mountpoint)
        .find(|v| match (unique, v["mount_id"].as_u64()) {
            (Some(u), Some(id)) if u != 0 && id != 0 => u == id,
            _ => true,
        })
        .and_then(|v| v["pid"].as_i64())
        .and_then(|p| i32::try_from(p).ok())
}

/// This daemon's own mount, once mounted.
static OWN: OnceLock<Identity> = OnceLock::new();

/// Records this daemon's mount (once).
pub fn set_own(identity: Identity) {
    let _ = OWN.set(identity);
}

/// This daemon's mount, if it has one.
pub fn own() -> Option<Identity> {
    OWN.get().copied()
}

/// Takes this daemon's own mount down: unmounted if it is not busy, else
/// detached (a stop means stop); `Ok(false)` when there is none to take.
pub fn unmount_own() -> Result<bool, UnmountError> {
    let Some(own) = own() else {
        return Ok(false);
    };
    own.unmount(false).or_else(|_| own.unmount(true))
}

/// `major:minor`, as mountinfo writes a device.
fn dev_string((major, minor): (u32, u32)) -> String {
    format!("{major}:{minor}")
}

/// The directory `path` is in, opened without following any symlink, and
/// the last component's name.
fn open_parent(path: &Path) -> io::Result<(OwnedFd, CString)> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let invalid = || io::Error::from_raw_os_error(libc::EINVAL);
    let (parent, name) = match (path.parent(), path.file_name()) {
        (Some(p), Some(n)) if path.is_absolute() => (p, n),
        _ => return Err(invalid()),
    };
    let name = CString::new(name.as_bytes()).map_err(|_| invalid())?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let dir = nix::fcntl::openat2(nix::fcntl::AT_FDCWD, parent, how)?;
    Ok((dir, name))
}

/// A mount held by the directory it is mounted in: every act goes through
/// that fd and the mount's name there, checked to be this mount.
#[derive(Debug)]
pub struct Held {
    dir: OwnedFd,
    name: CString,
    /// The mount at the name when it was opened.
    pub identity: Identity,
    /// Its mountinfo entry.
    pub entry: MountEntry,
}

impl Held {
    /// Holds the mount of `entry`.
    fn open(entry: &MountEntry) -> io::Result<Held> {
        let (dir, name) = open_parent(&entry.mountpoint)?;
        let identity = Identity::at(dir.as_fd(), &name, 0)?;
        Ok(Held {
            dir,
            name,
            identity,
            entry: entry.clone(),
        })
    }

    /// Holds the ocimux mount at `path` (an absolute path whose directory
    /// is canonical): `None` when what is there is not the root of an
    /// ocimux mount. Reads nothing through the mount.
    pub fn at_path(path: &Path) -> io::Result<Option<Held>> {
        let (dir, name) = open_parent(path)?;
        let identity = Identity::at(dir.as_fd(), &name, 0)?;
        let all = mountinfo::all()?;
        let found = identity
            .entry(&all)
            .filter(|e| e.mountpoint == path && e.is_ocimux());
        Ok(found.map(|entry| Held {
            dir,
            name,
            identity,
            entry: entry.clone(),
        }))
    }

    /// The mount's name through the held directory.
    fn path(&self) -> PathBuf {
        let name = std::ffi::OsStr::from_bytes(self.name.as_bytes());
        PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd())).join(name)
    }

    /// Unmounts it (detaches it if `lazy`). Root unmounts the held name
    /// itself; others go through fusermount3, by the mount's path.
    pub fn unmount(&self, lazy: bool) -> Result<(), UnmountError> {
        let mut flags = nix::mount::MntFlags::UMOUNT_NOFOLLOW;
        if lazy {
            flags |= nix::mount::MntFlags::MNT_DETACH;
        }
        match nix::mount::umount2(&self.path(), flags) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EPERM) => fusermount_u(&self.entry.mountpoint, lazy),
            Err(e) => Err(UnmountError::Refused(e)),
        }
    }

    /// Asks the mount's daemon for the root's attributes, from a thread,
    /// giving up after `wait` (a hung daemon keeps the thread until its
    /// connection is aborted): `None` without an answer, else the errno it
    /// answered with, if any.
    fn ask(&self, wait: Duration) -> Option<Option<i32>> {
        let dir = self.dir.try_clone().ok()?;
        let name = self.name.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let asked = std::thread::Builder::new()
            .name("probe".into())
            .spawn(move || {
                let flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_FORCE_SYNC;
                let answer = crate::files::sys::statx(dir.as_fd(), &name, flags, libc::STATX_TYPE);
                let _ = tx.send(answer.err().and_then(|e| e.raw_os_error()));
            });
        asked.ok()?;
        rx.recv_timeout(wait).ok()
    }

    /// Whether its daemon is gone: a request fails at once as not connected.
    pub fn is_dead(&self, wait: Duration) -> bool {
        let dead = [libc::ENOTCONN, libc::ECONNABORTED];
        matches!(self.ask(wait), Some(Some(e)) if dead.contains(&e))
    }

    /// Whether its daemon answers within `wait` (whatever it answers).
    pub fn answers(&self, wait: Duration) -> bool {
        self.ask(wait).is_some()
    }
}

/// Why an unmount did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UnmountError {
    /// `/proc/self/mountinfo` could not be read.
    #[error("reading mountinfo: {0}")]
    Mountinfo(#[source] io::Error),
    /// The kernel refused (busy, permission …).
    #[error("{}", .0.desc())]
    Refused(#[source] nix::errno::Errno),
    /// The unprivileged helper failed; what it said.
    #[error("{helper}: {stderr}")]
    Helper {
        /// fusermount3 or fusermount.
        helper: &'static str,
        /// Its error output.
        stderr: String,
    },
    /// The helper could not be run.
    #[error("running {helper}: {err}")]
    HelperIo {
        /// fusermount3 or fusermount.
        helper: &'static str,
        /// Why.
        #[source]
        err: io::Error,
    },
    /// Neither helper is installed.
    #[error("neither fusermount3 nor fusermount found")]
    NoHelper,
    /// The directory a mount is in could not be opened as checked.
    #[error("{0}")]
    Locate(#[source] io::Error),
    /// A disconnected mount that is not a dead ocimux mount.
    #[error("Transport endpoint is not connected (not a dead ocimux mount)")]
    NotDead,
}

/// What aborting a FUSE connection did.
#[derive(Debug, thiserror::Error)]
pub enum Abort {
    /// Done, through this control file.
    #[error("aborted its FUSE connection ({0})")]
    Aborted(String),
    /// Mountinfo does not say which connection it is.
    #[error("its FUSE connection is unknown")]
    Unknown,
    /// The connection had already ended.
    #[error("its FUSE connection {0} is already gone")]
    Gone(u32),
    /// Writing the control file failed.
    #[error("could not abort its FUSE connection ({path}: {err})")]
    Failed {
        /// The control file.
        path: String,
        /// Why.
        err: io::Error,
    },
}

/// Unprivileged unmount goes through the setuid helper, as for any FUSE
/// mount (it checks itself that the mount is the user's FUSE mount).
pub(crate) fn fusermount_u(path: &Path, lazy: bool) -> Result<(), UnmountError> {
    let mut last = UnmountError::NoHelper;
    for helper in ["fusermount3", "fusermount"] {
        let mut cmd = Command::new(helper);
        cmd.arg("-u");
        if lazy {
            cmd.arg("-z");
        }
        match cmd.arg("--").arg(path).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                last = UnmountError::Helper {
                    helper,
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => last = UnmountError::HelperIo { helper, err },
        }
    }
    Err(last)
}

/// Aborts FUSE connection `n`, mounting fusectl first where it is missing.
pub fn abort_fuse_connection(n: u32) -> Abort {
    let dir = Path::new("/sys/fs/fuse/connections");
    let path = dir.join(n.to_string()).join("abort");
    // fusectl is not always mounted (containers): mount it where it belongs.
    if !path.exists() && fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()) {
        let mounted = nix::mount::mount(
            Some("fusectl"),
            dir,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
        if let Err(e) = mounted {
            log::info!("mounting fusectl on {}: {e}", dir.display());
        }
    }
    let path = path.display().to_string();
    match fs::write(&path, "1") {
        Ok(()) => Abort::Aborted(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Abort::Gone(n),
        Err(err) => Abort::Failed { path, err },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_travel_whole() {
        for id in [
            Identity {
                unique: 0,
                id: 0,
                dev: (0, 0),
            },
            Identity {
                unique: u64::MAX,
                id: 41,
                dev: (0, 77),
            },
            Identity {
                unique: 0x1_0000_0042,
                id: u64::MAX,
                dev: (u32::MAX, 1),
            },
        ] {
            assert_eq!(Identity::from_bytes(&id.to_bytes()), id);
        }
    }

    #[test]
    fn a_plain_directory_is_held_as_no_mount() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::fs::canonicalize(dir.path()).unwrap();
        assert!(Held::at_path(&path).unwrap().is_none());
        // A symlink anywhere on the way is refused, not followed.
        let link = path.join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = Held::at_path(&link.join("x")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
    }

    #[test]
    fn the_root_of_this_process_s_mount_has_an_identity() {
        let root = std::fs::File::open("/").unwrap();
        let id = Identity::of_mount_fd(root.as_fd()).unwrap();
        let all = mountinfo::all().unwrap();
        let entry = id.entry(&all).unwrap();
        assert_eq!(entry.mountpoint, Path::new("/"));
    }
}
