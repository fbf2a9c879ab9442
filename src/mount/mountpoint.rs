//! The mountpoint: claimed before mounting, unmounted only where the top
//! mount is ours, and never left dead.
//!
//! - [`claim`] opens the directory once, checks it through that fd, and
//!   locks it (`flock`) until the mount is live, so two `ocimux mount`s on one
//!   directory cannot both pass the check and stack; root's mount is then
//!   attached to that fd (`attach`), so a name swapped after the check
//!   changes nothing. A dead ocimux mount found there (its daemon gone) is
//!   cleaned first.
//! - A daemon's own mount is unmounted by its identity (`ownmount`), never
//!   by its source or type, which any user can give a mount,
//!   and only if nothing covers it: a tmpfs or bind mount on or under it is
//!   never touched, whoever asks.
//! - [`watchdog`] forks a process that outlives a killed daemon and unmounts
//!   its mount, so a SIGKILL, an OOM kill or a crash leaves no "Transport
//!   endpoint is not connected" directory behind.
//! - [`umount`] is `ocimux umount`: it waits for the daemon to exit and, if
//!   it does not, aborts the FUSE connection and says so.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::files::mountinfo::{self, MountEntry};
use crate::mount::ownmount::{
    Abort, Held, IDENTITY_BYTES, Identity, UnmountError, abort_fuse_connection,
};
use crate::process::lifecycle::process_alive;

/// Why a mountpoint was refused, or an unmount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountpointError {
    /// The mountpoint cannot be used.
    #[error("mountpoint {path}: {why}")]
    Mountpoint {
        /// The mountpoint as given.
        path: PathBuf,
        /// Why it is refused.
        why: MountpointProblem,
    },
    /// `umount` of something that is not an ocimux mount.
    #[error("{0} is not an ocimux mount")]
    NotOurs(PathBuf),
    /// Unmounting failed.
    #[error("unmounting {path}: {why}")]
    Unmount {
        /// The mountpoint.
        path: PathBuf,
        /// Why.
        why: Box<UmountFailure>,
    },
}

impl crate::process::lifecycle::ExitStatus for MountpointError {
    fn exit_code(&self) -> u8 {
        use crate::process::lifecycle::exit;
        match self {
            MountpointError::Mountpoint { .. } => exit::MOUNT,
            MountpointError::NotOurs(_) | MountpointError::Unmount { .. } => exit::UMOUNT,
        }
    }
}

/// Why a mountpoint is refused.
#[derive(Debug, thiserror::Error)]
pub enum MountpointProblem {
    /// A dead ocimux mount there could not be removed.
    #[error("removing a dead ocimux mount: {0}")]
    DeadMount(#[source] UnmountError),
    /// It is not a directory.
    #[error("not a directory")]
    NotDirectory,
    /// Another `ocimux mount` holds it past the wait.
    #[error("another ocimux mount of this directory is in progress ({0})")]
    Claimed(nix::errno::Errno),
    /// It holds something.
    #[error("not empty")]
    NotEmpty,
    /// A live ocimux mount is there already.
    #[error(
        "already mounted by ocimux (pid {pid}) from {sources}; unmount it first (ocimux umount)"
    )]
    AlreadyMounted {
        /// Its daemon (0: not known to this user).
        pid: i32,
        /// Its sources, as mount(8) shows them.
        sources: String,
    },
    /// Its name no longer leads to the directory that was checked.
    #[error("something was mounted over it or it was moved")]
    Covered,
    /// Opening or reading it failed.
    #[error("{0}")]
    Io(#[source] io::Error),
}

/// Why `ocimux umount` failed.
#[derive(Debug, thiserror::Error)]
pub enum UmountFailure {
    /// The path given cannot be resolved.
    #[error("{0}")]
    Locate(#[source] io::Error),
    /// Unmounting (or detaching a dead mount) failed.
    #[error(transparent)]
    Unmount(#[from] UnmountError),
    /// The mount was busy and its daemon did not answer: hung.
    #[error("{cause}, and daemon {pid} did not answer within {timeout:?}; {aborted}; {detached}")]
    Hung {
        /// Why the unmount failed.
        cause: UnmountError,
        /// The daemon.
        pid: i32,
        /// How long it was given.
        timeout: Duration,
        /// What aborting its connection did.
        aborted: Abort,
        /// What detaching the mount did.
        detached: Detach,
    },
    /// Unmounted, but the daemon went on running.
    #[error("unmounted, but daemon {pid} did not exit within {timeout:?}; {aborted}")]
    DidNotExit {
        /// The daemon.
        pid: i32,
        /// How long it was given.
        timeout: Duration,
        /// What aborting its connection did.
        aborted: Abort,
    },
}

/// What detaching a hung mount did.
#[derive(Debug, thiserror::Error)]
pub enum Detach {
    /// Detached.
    #[error("detached the mount")]
    Done,
    /// Detaching failed too.
    #[error("detaching: {0}")]
    Failed(UnmountError),
}

/// An empty directory, locked until the mount on it is live.
#[derive(Debug)]
pub struct Mountpoint {
    /// Canonical path.
    pub path: PathBuf,
    /// The lock; dropped (in every process holding it) once mounted.
    pub lock: Flock<File>,
}

/// How long [`claim`] waits for another `ocimux mount` of the same directory.
const CLAIM_WAIT: Duration = Duration::from_secs(10);

/// Checks that `path` is an existing, empty directory that nothing else is
/// mounting, and locks it. A dead ocimux mount there is unmounted first.
pub fn claim(path: &Path) -> Result<Mountpoint, MountpointError> {
    claim_within(path, CLAIM_WAIT)
}

/// [`claim`], waiting at most `wait` for another claim of the directory.
fn claim_within(path: &Path, wait: Duration) -> Result<Mountpoint, MountpointError> {
    let refuse = |why: MountpointProblem| MountpointError::Mountpoint {
        path: path.to_owned(),
        why,
    };
    let io = |e: io::Error| refuse(MountpointProblem::Io(e));
    remove_dead_mount(path).map_err(|e| refuse(MountpointProblem::DeadMount(e)))?;
    if let Some((pid, sources)) = live_mount(path) {
        return Err(refuse(MountpointProblem::AlreadyMounted { pid, sources }));
    }
    // Opened once; every check below is made on this directory, and the
    // mount is attached to it (src/mount/attach.rs), whatever its name becomes.
    let dir = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| match e {
        nix::errno::Errno::ENOTDIR => refuse(MountpointProblem::NotDirectory),
        e => io(e.into()),
    })?;
    let lock =
        lock_within(File::from(dir), wait).map_err(|e| refuse(MountpointProblem::Claimed(e)))?;
    let held = format!("/proc/self/fd/{}", lock.as_raw_fd());
    let canonical = fs::read_link(&held).map_err(io)?;
    // Under the lock: empty, through the held directory itself ...
    let mut entries = fs::read_dir(&held).map_err(io)?;
    if entries.next().is_some() {
        return Err(refuse(MountpointProblem::NotEmpty));
    }
    // ... and nothing mounted over it meanwhile (a mount that won the race
    // shows through the path, not through the fd, which is beneath it).
    let by_fd = lock.metadata().map_err(io)?;
    match fs::metadata(&canonical) {
        Ok(m) if (m.dev(), m.ino()) == (by_fd.dev(), by_fd.ino()) => {}
        _ => return Err(refuse(MountpointProblem::Covered)),
    }
    Ok(Mountpoint {
        path: canonical,
        lock,
    })
}

/// Removes a dead ocimux mount at `path` (its daemon gone), found from
/// mountinfo without touching the mount; nothing to do for anything else.
fn remove_dead_mount(path: &Path) -> Result<(), UnmountError> {
    let Ok(located) = locate(path) else {
        return Ok(());
    };
    let Some(entry) = mountinfo::find(&located).ok().flatten() else {
        return Ok(());
    };
    if !entry.is_ocimux() {
        return Ok(());
    }
    // No live daemon says it serves it: probed (a dead mount answers at once).
    match crate::mount::ownmount::daemon_of(&entry, None) {
        Some(pid) if process_alive(pid) => Ok(()),
        _ => clean_dead(&located).or_else(|e| match e {
            UnmountError::NotDead => Ok(()),
            e => Err(e),
        }),
    }
}

/// The daemon and sources of a live ocimux mount at `path`, if one is there
/// (found from mountinfo, the mount untouched).
fn live_mount(path: &Path) -> Option<(i32, String)> {
    let entry = mountinfo::find(&locate(path).ok()?).ok().flatten()?;
    if !entry.is_ocimux() {
        return None;
    }
    let pid = crate::mount::ownmount::daemon_of(&entry, None).unwrap_or(0);
    Some((pid, crate::error::printable(&entry.source).into_owned()))
}

/// Takes the exclusive lock on `dir`, waiting at most `wait` for whoever
/// holds it (another `ocimux mount` of the same directory).
fn lock_within(mut dir: File, wait: Duration) -> Result<Flock<File>, nix::errno::Errno> {
    let deadline = Instant::now() + wait;
    loop {
        match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((d, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                dir = d;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((_, e)) => return Err(e),
        }
    }
}

impl Mountpoint {
    /// The claimed directory, held open: what the mount is attached to.
    pub fn dir(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.lock.as_fd()
    }
}

/// `path` made canonical without touching its last component, which may be
/// a mount whose daemon is dead or hung: only its parent is resolved.
fn locate(path: &Path) -> io::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok(fs::canonicalize(parent)?.join(name)),
        _ => fs::canonicalize(&abs),
    }
}

/// Unmounts a dead ocimux mount at `path` (its daemon no longer runs:
/// requests fail at once as not connected), acting on the mount that was
/// checked (see [`Held`]).
fn clean_dead(path: &Path) -> Result<(), UnmountError> {
    match Held::at_path(path).map_err(UnmountError::Locate)? {
        Some(held) if held.is_dead(DEAD_PROBE) => {
            log::warn!("{}: removing a dead ocimux mount", path.display());
            held.unmount(true)
        }
        _ => Err(UnmountError::NotDead),
    }
}

/// How long a mount is given to say it is dead (it answers at once if so).
const DEAD_PROBE: Duration = Duration::from_secs(1);

/// `ocimux umount`: unmounts the ocimux mount at `path` and waits up to
/// `timeout` for its daemon to exit. A daemon that does not exit (hung,
/// stopped) has its FUSE connection aborted, and that is an error. A lazy
/// unmount detaches at once and does not wait: the daemon keeps serving
/// open files until they are closed, then exits. A dead mount (its daemon
/// gone) is removed.
pub fn umount(path: &Path, lazy: bool, timeout: Duration) -> Result<(), MountpointError> {
    let fail = |why: UmountFailure| MountpointError::Unmount {
        path: path.to_owned(),
        why: Box::new(why),
    };
    // Nothing here reads through the mount: its daemon may be dead or hung.
    let held = held_at(path).map_err(|e| fail(UmountFailure::Locate(e)))?;
    let Some(held) = held else {
        return Err(MountpointError::NotOurs(path.to_owned()));
    };
    // The pid a state file names is only waited for, never signalled.
    // Everything else acts on the held mount. No live daemon: dead, or
    // not this user's to see (then unmounted without waiting).
    let pid = crate::mount::ownmount::daemon_of(&held.entry, Some(held.identity.unique))
        .filter(|p| process_alive(*p));
    if pid.is_none() && held.is_dead(DEAD_PROBE) {
        return held.unmount(true).map_err(|e| fail(e.into()));
    }
    let pid = pid.unwrap_or(0);
    if let Err(cause) = held.unmount(lazy) {
        // Busy: in use, or a client is stuck on a hung daemon. Ask the
        // daemon something; if it does not answer in time, it is hung.
        if held.answers(timeout) {
            return Err(fail(cause.into()));
        }
        let aborted = abort_connection(&held.entry);
        let detached = match held.unmount(true) {
            Ok(()) => Detach::Done,
            Err(e) => Detach::Failed(e),
        };
        return Err(fail(UmountFailure::Hung {
            cause,
            pid,
            timeout,
            aborted,
            detached,
        }));
    }
    let deadline = Instant::now() + timeout;
    while !lazy && process_alive(pid) {
        if Instant::now() > deadline {
            let aborted = abort_connection(&held.entry);
            return Err(fail(UmountFailure::DidNotExit {
                pid,
                timeout,
                aborted,
            }));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The ocimux mount `path` names: at that exact path (its directory made
/// canonical, the mount itself untouched), or else where the path leads
/// (it may name the mountpoint through a symlink; resolving it touches the
/// mount, which is then not one found dead or hung).
fn held_at(path: &Path) -> io::Result<Option<Held>> {
    let located = locate(path)?;
    if let Some(held) = Held::at_path(&located)? {
        return Ok(Some(held));
    }
    match fs::canonicalize(path) {
        Ok(c) if c != located => Held::at_path(&c),
        _ => Ok(None),
    }
}

/// Aborts a FUSE connection (`/sys/fs/fuse/connections/N/abort`): every
/// request waiting on the daemon fails with ENOTCONN; says what happened.
fn abort_connection(entry: &MountEntry) -> Abort {
    entry
        .fuse_connection()
        .map_or(Abort::Unknown, abort_fuse_connection)
}

/// Forks a watchdog that waits for this process (the daemon) to end, however
/// it ends, then detaches the daemon's mount (by its [`Identity`], which the
/// daemon sends through the pipe once mounted: see [`tell_watchdog`]).
/// Returns the end of the pipe the daemon keeps open (close-on-exec, so
/// fusermount3 does not inherit it): its closing, by exit or kill, is what
/// the watchdog waits for.
///
/// Must be called while the process has a single thread.
pub fn watchdog() -> io::Result<OwnedFd> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let daemon = nix::unistd::getpid().as_raw();
    let forked = crate::files::sys::fork_alone()?;
    match forked {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(read_end);
            Ok(write_end)
        }
        nix::unistd::ForkResult::Child => {
            drop(write_end);
            crate::files::sys::close_all_but(std::os::fd::AsFd::as_fd(&read_end));
            // Stop signals are for the daemon; the watchdog ends with it.
            for sig in crate::process::lifecycle::STOP_SIGNALS {
                crate::files::sys::ignore_signal(sig);
            }
            let _ = std::env::set_current_dir("/");
            std::process::exit(watch_daemon(File::from(read_end), daemon));
        }
    }
}

/// The watchdog's life: the daemon's mount identity, then the end of the
/// pipe, then the detach. Returns its exit code.
fn watch_daemon(mut pipe: File, daemon: i32) -> i32 {
    let mut bytes = [0u8; IDENTITY_BYTES];
    // EOF first: the daemon ended before it mounted.
    let Ok(()) = pipe.read_exact(&mut bytes) else {
        return 0;
    };
    let mut byte = [0u8; 1];
    // Returns at EOF: every copy of the write end is closed.
    while matches!(pipe.read(&mut byte), Err(ref e) if e.kind() == io::ErrorKind::Interrupted) {}
    match Identity::from_bytes(&bytes).unmount(true) {
        Ok(true) => {
            log::warn!("watchdog: daemon {daemon} ended without unmounting; unmounted it");
            0
        }
        Ok(false) => 0,
        Err(e) => {
            log::error!("watchdog: unmounting daemon {daemon}'s mount: {e}");
            1
        }
    }
}

/// Sends the watchdog the daemon's mount, through the pipe [`watchdog`] returned.
pub fn tell_watchdog(pipe: &OwnedFd, identity: Identity) -> io::Result<()> {
    use std::io::Write;
    File::from(pipe.try_clone()?).write_all(&identity.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_checks() {
        let dir = tempfile::tempdir().unwrap();
        let m = claim(dir.path()).unwrap();
        // A second claim while the first holds the lock waits, then gives up.
        let started = Instant::now();
        let wait = Duration::from_millis(200);
        let err = claim_within(dir.path(), wait).unwrap_err().to_string();
        assert!(err.contains("in progress"), "{err}");
        assert!(started.elapsed() >= wait);
        drop(m);
        assert!(claim(dir.path()).is_ok());
        fs::write(dir.path().join("f"), b"x").unwrap();
        let err = claim(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        let err = claim(&dir.path().join("f")).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        let err = claim(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(err.contains("No such file"), "{err}");
    }

    #[test]
    fn process_liveness() {
        assert!(process_alive(std::process::id() as i32));
        assert!(!process_alive(i32::MAX));
    }
}
