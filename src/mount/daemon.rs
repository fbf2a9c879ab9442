//! Running a mount: detaches the daemon so that `ocimux mount` returns only
//! once the kernel's FUSE handshake is done, serves until unmounted, and
//! unmounts cleanly on SIGINT/SIGTERM/SIGHUP. The mountpoint itself (claim,
//! unmount, watchdog) is `mountpoint`; the `-o` options are `options`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use fuser::{INodeNo, Session};

pub use crate::mount::options::{MountOptions, Sharing};
use nix::unistd::{ForkResult, Pid};

use crate::mount::fs::{FsOptions, OciFs};
use crate::mount::mountpoint::Mountpoint;
use crate::mount::ownmount::unmount_own as unmount_own_mount;
use crate::process::lifecycle::{exit, stop_signals};
use crate::snapshot::generations::{Generations, Invalidation};
use crate::snapshot::index::Composition;
use crate::snapshot::plan::Plan;

/// Why mounting or unmounting failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mountpoint cannot be used, or unmounting failed.
    #[error(transparent)]
    Mountpoint(#[from] crate::mount::mountpoint::MountpointError),
    /// A `-o` option is unknown or conflicts.
    #[error("mount option {0}")]
    Option(#[from] crate::mount::options::OptionProblem),
    /// The kernel or fusermount refused the mount.
    #[error("mounting {path}: {err}")]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// The error.
        err: io::Error,
    },
    /// `/dev/fuse` is missing or not usable by the user who mounts.
    #[error(
        "mounting {path}: /dev/fuse {why}; FUSE needs /dev/fuse readable and writable by the user \
         who mounts: distributions make it 0666 (a udev rule; as root: chmod 0666 /dev/fuse, \
         modprobe fuse if it is missing), or mount as root"
    )]
    NoFuseDevice {
        /// The mountpoint.
        path: PathBuf,
        /// What is wrong with it.
        why: FuseDevice,
    },
    /// The log file cannot be used.
    #[error("log file {path}: {why}")]
    LogFile {
        /// The path given.
        path: PathBuf,
        /// Why.
        why: LogFileProblem,
    },
    /// The detached daemon reported a failure or died.
    #[error("{0}")]
    Daemon(DaemonFailure),
    /// Other I/O around the mount (pipes, log file, signals).
    #[error("{what}: {err}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        err: io::Error,
    },
}

fn io_err(what: &str) -> impl FnOnce(io::Error) -> MountError + '_ {
    move |err| MountError::Io {
        what: what.to_owned(),
        err,
    }
}

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Canonical mountpoint (see [`crate::mount::mountpoint::claim`]).
    pub mountpoint: PathBuf,
    /// How the mount runs.
    pub run: Run,
    /// Where the detached daemon logs; `None` discards its log.
    pub log_file: Option<PathBuf>,
    /// Parsed `-o` options.
    pub options: MountOptions,
    /// FUSE event loop threads.
    pub threads: usize,
    /// Try kernel passthrough for source blobs.
    pub passthrough: bool,
    /// Readahead for the mount's backing device info, in KiB (0: leave as is).
    pub readahead_kb: u32,
    /// Follow source changes (off with `--static`).
    pub live: bool,
    /// Hash each blob version at its first open (`--verify`).
    pub verify: bool,
    /// The mount's source, as mount(8) shows it ([`source_name`], or what
    /// mount(8) was given).
    pub source: String,
}

/// Longest mount source shown: longer lists are cut (said with `…`).
const MAX_SOURCE: usize = 2048;

/// The mount's source as mount(8) and findmnt show it: the sources as an
/// fstab line writes them (`:` between them, `\:` inside one), so that
/// `mount -a` finds an fstab line's mount already there.
pub fn source_name(names: &[String]) -> String {
    let mut joined = names
        .iter()
        .map(|n| n.replace('\\', "\\\\").replace(':', "\\:"))
        .collect::<Vec<_>>()
        .join(":");
    if joined.len() > MAX_SOURCE {
        let mut cut = MAX_SOURCE;
        while !joined.is_char_boundary(cut) {
            cut -= 1;
        }
        joined.truncate(cut);
        joined.push('…');
    }
    joined
}

/// How a mount runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// `-f`: this process serves, logging to stderr, until unmounted.
    Foreground,
    /// The default: a detached daemon; `mount` returns once it is live.
    Detached,
    /// `mount … -- CMD`: detached, and unmounted when the process that
    /// mounted exits (if ocimux is killed, the mount goes with it); with
    /// `tmp` (`--tmp` made the mountpoint) the mountpoint is removed too.
    Scoped {
        /// The mountpoint is a temporary directory made for this mount.
        tmp: bool,
    },
}

/// What to serve: the plan, and the composition already made from it (which
/// validated every source before anything was mounted).
#[derive(Debug)]
pub struct Served {
    /// The sources and options.
    pub plan: Plan,
    /// The first composition.
    pub first: Composition,
}

/// Mounts what `served` composes and serves it until unmounted or signalled.
///
/// Detached (the default), this returns in the parent once the daemon reports
/// the mount live, or with the daemon's error; the daemon itself never returns.
///
/// `claimed` (the mountpoint's lock) is held until the mount is live, in
/// every process that has it.
pub fn mount(served: Served, cfg: &MountConfig, claimed: Mountpoint) -> Result<(), MountError> {
    if cfg.run == Run::Foreground {
        let (session, _) = start(served, cfg, &claimed)?;
        drop(claimed);
        return serve(session);
    }
    // Opened here, before anything is mounted, so a bad path is bad input.
    let log = cfg.log_file.as_deref().map(open_log).transpose()?;
    if log.is_none() && cfg.run == Run::Detached && crate::process::syslog::connect().is_none() {
        log::info!(
            "no --log-file and no system log at {}: the daemon's messages are discarded",
            crate::process::syslog::SOCKET
        );
    }
    // Close-on-exec: fusermount3, which stays alive as the auto_unmount
    // monitor, must not hold the write end (the parent would wait forever).
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io_err("creating a pipe")(e.into()))?;
    // The parent holds the write end of `lifeline` until it exits (never
    // passed to a command: close-on-exec); the daemon sees EOF then.
    let lifeline = match matches!(cfg.run, Run::Scoped { .. }) {
        true => Some(
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| io_err("creating a pipe")(e.into()))?,
        ),
        false => None,
    };
    // No other thread exists yet (sources are read single-threaded and the
    // FUSE threads start in the child): fork_alone checks it.
    let forked = crate::files::sys::fork_alone().map_err(io_err("forking the daemon"))?;
    match forked {
        ForkResult::Parent { child } => {
            drop(write_end);
            if let Some((parent_gone, held)) = lifeline {
                drop(parent_gone);
                std::mem::forget(held); // closed by the kernel when this process ends
            }
            let ready = wait_ready(read_end, child);
            drop(claimed);
            ready
        }
        ForkResult::Child => {
            drop(read_end);
            let parent_gone = lifeline.map(|(parent_gone, held)| {
                drop(held);
                parent_gone
            });
            let code = daemon_child(served, cfg, log, write_end, claimed, parent_gone);
            std::process::exit(code);
        }
    }
}

/// How a detached daemon failed before its mount was live.
#[derive(Debug, thiserror::Error)]
pub enum DaemonFailure {
    /// It wrote why (its own error's message, through the readiness pipe).
    #[error("{0}")]
    Reported(String),
    /// It ended without a word; how, as waitpid saw it.
    #[error("the daemon exited before the mount was live ({0})")]
    Died(String),
}

/// The parent's side: the daemon writes `OK` once the mount is live, or an
/// error line; EOF without either means it died.
fn wait_ready(read_end: OwnedFd, child: Pid) -> Result<(), MountError> {
    let mut msg = String::new();
    let read = File::from(read_end).read_to_string(&mut msg);
    match (read, msg.strip_prefix("OK")) {
        (Ok(_), Some(_)) => Ok(()),
        _ => {
            let status = nix::sys::wait::waitpid(child, None);
            let msg = msg.trim();
            Err(MountError::Daemon(if msg.is_empty() {
                DaemonFailure::Died(format!("{status:?}"))
            } else {
                DaemonFailure::Reported(msg.to_owned())
            }))
        }
    }
}

fn daemon_child(
    served: Served,
    cfg: &MountConfig,
    log: Option<File>,
    ready: OwnedFd,
    claimed: Mountpoint,
    parent_gone: Option<OwnedFd>,
) -> i32 {
    let mut ready = File::from(ready);
    if let Err(e) = detach(log) {
        let _ = write!(ready, "{e}");
        return i32::from(exit::MOUNT);
    }
    match start(served, cfg, &claimed) {
        Ok((session, handshake)) => {
            drop(claimed);
            let ready = Arc::new(std::sync::Mutex::new(Some(ready)));
            announce(ready.clone(), handshake);
            let orphaned = parent_gone.map(unmount_when_closed);
            let served = serve(session);
            // After the session ended (here, not in the watcher: the process
            // exits as soon as serve returns).
            let tmp = cfg.run == Run::Scoped { tmp: true };
            if tmp && orphaned.is_some_and(|o| o.load(Ordering::SeqCst)) {
                if let Err(e) = std::fs::remove_dir(&cfg.mountpoint) {
                    log::warn!("removing {}: {e}", cfg.mountpoint.display());
                }
            }
            match served {
                Ok(()) => {
                    say(&ready, "the mount ended before it was ready");
                    0
                }
                Err(e) => {
                    say(&ready, &e.to_string());
                    log::error!("{e}");
                    // The watchdog unmounts once this process is gone.
                    i32::from(exit::OTHER)
                }
            }
        }
        Err(e) => {
            let _ = write!(ready, "{e}");
            i32::from(exit::MOUNT)
        }
    }
}

/// Says success on the readiness pipe once the kernel's handshake (INIT) is
/// handled, from then on the mount answers; an error of the session before
/// that is said instead (by whoever says first), and so is a handshake that
/// never comes (then the mount is taken down again).
fn announce(ready: Arc<std::sync::Mutex<Option<File>>>, handshake: Receiver<()>) {
    let said = ready.clone();
    let announcer = std::thread::Builder::new()
        .name("ready".into())
        .spawn(move || match handshake.recv_timeout(HANDSHAKE_WAIT) {
            Ok(()) => say(&said, "OK"),
            Err(_) => {
                let why = format!(
                    "the kernel did not complete the FUSE handshake within {HANDSHAKE_WAIT:?}"
                );
                say(&said, &why);
                let gone = crate::mount::ownmount::own().map(|m| m.unmount(true));
                if let Some(Err(e)) = gone {
                    log::error!("unmounting after a failed handshake: {e}");
                }
            }
        });
    if let Err(e) = announcer {
        say(&ready, &format!("starting a thread: {e}"));
    }
}

/// Writes `msg` to the readiness pipe, once: later calls find it gone. The
/// parent may be gone already (killed); serving goes on regardless.
fn say(ready: &std::sync::Mutex<Option<File>>, msg: &str) {
    let taken = ready
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(mut f) = taken {
        let _ = f.write_all(msg.as_bytes());
    }
}

/// How long the kernel may take to start the FUSE protocol on a new mount.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);

/// Opens the daemon's log file for appending: created `0600` if missing,
/// never through a symlink (`O_NOFOLLOW`: a user who owns the log's
/// directory could point it at a root-only file), never opened blocking (a
/// FIFO would hang the mount), and only a regular file owned by the user who
/// mounts. The checks are made on the opened file, which is what is used.
pub fn open_log(path: &Path) -> Result<File, MountError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let refuse = |why: LogFileProblem| MountError::LogFile {
        path: path.to_owned(),
        why,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refuse(LogFileProblem::Symlink),
            _ => refuse(LogFileProblem::Io(e)),
        })?;
    let meta = file.metadata().map_err(|e| refuse(LogFileProblem::Io(e)))?;
    if !meta.is_file() {
        return Err(refuse(LogFileProblem::NotRegular));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(refuse(LogFileProblem::Owner {
            owner: meta.uid(),
            me,
        }));
    }
    Ok(file)
}

/// Why a log file is refused.
#[derive(Debug, thiserror::Error)]
pub enum LogFileProblem {
    /// It is a symbolic link (never followed: `O_NOFOLLOW`).
    #[error("is a symbolic link")]
    Symlink,
    /// It is a FIFO, device, directory …
    #[error("not a regular file")]
    NotRegular,
    /// Another user owns it.
    #[error("owned by uid {owner}, not by the user who mounts (uid {me})")]
    Owner {
        /// Its owner.
        owner: u32,
        /// The user who mounts.
        me: u32,
    },
    /// Opening or reading it failed.
    #[error("{0}")]
    Io(#[source] io::Error),
}

/// Starts a new session, moves to `/`, and points stdio away from the
/// terminal: stderr to the log file when there is one; without one, the
/// log goes to the system log when there is one (see
/// [`crate::process::syslog`]).
fn detach(log: Option<File>) -> Result<(), MountError> {
    if log.is_none() {
        if let Some(sock) = crate::process::syslog::connect() {
            crate::process::syslog::divert(sock);
        }
    }
    nix::unistd::setsid().map_err(|e| io_err("setsid")(e.into()))?;
    std::env::set_current_dir("/").map_err(io_err("chdir /"))?;
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(io_err("opening /dev/null"))?;
    let log: OwnedFd = match log {
        Some(f) => f.into(),
        None => null.try_clone().map_err(io_err("dup"))?.into(),
    };
    use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout};
    let redirected = dup2_stdin(&null)
        .and(dup2_stdout(&null))
        .and(dup2_stderr(&log));
    redirected.map_err(|e| io_err("redirecting stdio")(e.into()))
}

/// Mounts: blocks the stop signals first (the FUSE threads inherit the mask,
/// so only the signal thread sees them), then mounts and completes the FUSE
/// handshake, after which the mount answers requests.
fn start(
    served: Served,
    cfg: &MountConfig,
    claimed: &Mountpoint,
) -> Result<(Session<OciFs>, Receiver<()>), MountError> {
    stop_signals()
        .thread_block()
        .map_err(|e| io_err("blocking signals")(e.into()))?;
    // Forked while this process has one thread; the pipe end lives as long
    // as the process (closed by the kernel however it ends).
    let watchdog =
        crate::mount::mountpoint::watchdog().map_err(io_err("starting the unmount watchdog"))?;
    let _ = crate::process::lifecycle::raise_fd_limit();
    let snapshots = Arc::new(Generations::new(&served.first));
    crate::snapshot::watch::release_freed_memory();
    let mut fs = OciFs::new(
        snapshots.clone(),
        FsOptions {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            passthrough: cfg.passthrough,
            verify: cfg.verify,
        },
    );
    let handshake = fs.handshake();
    let drain = fs.drain();
    let mut fsname = cfg.source.clone();
    let through_helper = !nix::unistd::geteuid().is_root() || cfg.options.sharing.auto_unmount();
    if through_helper {
        // fusermount3 takes it inside its comma-separated option list,
        // where a comma starts another option and a backslash escapes the
        // next character: neither may reach it from a source's name.
        fsname = fsname.replace([',', '\\'], "_");
    }
    let config = cfg.options.fuser_config(fsname.clone(), cfg.threads);
    fuse_device_usable().map_err(|why| MountError::NoFuseDevice {
        path: cfg.mountpoint.clone(),
        why,
    })?;
    let session = open_session(fs, cfg, claimed, &fsname, config)?;
    crate::mount::status::MountState {
        mountpoint: cfg.mountpoint.display().to_string(),
        sources: served.plan.specs.iter().map(|s| s.name.clone()).collect(),
        identity: crate::mount::ownmount::own(),
        snapshots: snapshots.clone(),
        drain: drain.clone(),
        started: std::time::SystemTime::now(),
    }
    .keep();
    if let Some(identity) = crate::mount::ownmount::own() {
        crate::mount::mountpoint::tell_watchdog(&watchdog, identity)
            .map_err(io_err("telling the unmount watchdog"))?;
        crate::mount::gone::spawn(identity, drain).map_err(io_err("starting the stop watcher"))?;
    }
    // Open as long as the process: its closing, however the process ends,
    // is what the watchdog waits for.
    std::mem::forget(watchdog);
    log::info!(
        "mounted {} ({} threads)",
        cfg.mountpoint.display(),
        cfg.threads
    );
    if cfg.readahead_kb > 0 {
        raise_readahead(cfg.readahead_kb);
    }
    if cfg.live {
        let notify = kernel_notifier(session.notifier());
        crate::snapshot::watch::spawn(served.plan, &served.first, snapshots, notify)
            .map_err(io_err("starting the source watcher"))?;
    } else {
        log::info!("--static: sources are not watched");
    }
    Ok((session, handshake))
}

/// Mounts `fs` and opens its FUSE session, recording the mount's identity
/// as this daemon's own.
///
/// Root mounts directly; others (and auto_unmount) through fusermount3,
/// which checks itself what it unmounts. Root's mount is attached to the
/// claimed directory's fd (src/mount/attach.rs): fuser's own mount would
/// unmount its path once more when the session ends, even after the mount
/// was unmounted from outside, and so unmount whatever was beneath it; a
/// session built on an fd owns no mount: only the daemon's stop (by the
/// mount's identity, src/mount/ownmount.rs) unmounts.
fn open_session(
    fs: OciFs,
    cfg: &MountConfig,
    claimed: &Mountpoint,
    fsname: &str,
    config: fuser::Config,
) -> Result<Session<OciFs>, MountError> {
    let mount_err = |err| MountError::Mount {
        path: cfg.mountpoint.clone(),
        err,
    };
    if nix::unistd::geteuid().is_root() && !cfg.options.sharing.auto_unmount() {
        let params = crate::mount::attach::FuseParams {
            fsname,
            default_permissions: cfg.options.default_permissions(),
            // allow_root is allow_other in the kernel, narrowed by the session's ACL.
            allow_other: cfg.options.sharing != Sharing::Owner,
            noexec: cfg.options.noexec,
        };
        let (fd, identity) =
            crate::mount::attach::attach(claimed.dir(), &params).map_err(mount_err)?;
        crate::mount::ownmount::set_own(identity);
        Session::from_fd(fs, fd, config.acl, config).map_err(mount_err)
    } else {
        let session = Session::new(fs, &cfg.mountpoint, &config).map_err(mount_err)?;
        let identity = crate::mount::ownmount::Identity::of_helper_mount(&claimed.path, fsname)
            .map_err(io_err("finding the new mount"))?;
        crate::mount::ownmount::set_own(identity);
        Ok(session)
    }
}

impl crate::process::lifecycle::ExitStatus for MountError {
    fn exit_code(&self) -> u8 {
        use crate::process::lifecycle::exit;
        use MountError as E;
        match self {
            E::Option(_) | E::LogFile { .. } => exit::BAD_INPUT,
            E::Mountpoint(e) => e.exit_code(),
            E::Mount { .. } | E::NoFuseDevice { .. } | E::Daemon(_) | E::Io { .. } => exit::MOUNT,
        }
    }
}

/// Whether this user may open `/dev/fuse` for reading and writing; why not.
fn fuse_device_usable() -> Result<(), FuseDevice> {
    use nix::unistd::{AccessFlags, access};
    match access("/dev/fuse", AccessFlags::R_OK | AccessFlags::W_OK) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::ENOENT) => Err(FuseDevice::Missing),
        Err(errno) => Err(FuseDevice::Unusable {
            mode: fs::metadata("/dev/fuse")
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
                .unwrap_or(0),
            errno,
        }),
    }
}

/// What is wrong with `/dev/fuse`.
#[derive(Debug, thiserror::Error)]
pub enum FuseDevice {
    /// It does not exist (no fuse module, or a container without it).
    #[error("does not exist")]
    Missing,
    /// The user who mounts may not read and write it.
    #[error("is not usable (mode {mode:o}): {}", errno.desc())]
    Unusable {
        /// Its permission bits.
        mode: u32,
        /// What access(2) said.
        errno: nix::errno::Errno,
    },
}

/// Sends a swap's invalidations to the kernel (from the watcher's thread).
fn kernel_notifier(notifier: fuser::Notifier) -> crate::snapshot::watch::Notify {
    Box::new(move |stale: &[Invalidation]| {
        for inv in stale {
            let sent = match inv {
                Invalidation::Inode(ino) => notifier.inval_inode(INodeNo(*ino), 0, 0),
                Invalidation::Entry { parent, name } => {
                    notifier.inval_entry(INodeNo(*parent), std::ffi::OsStr::new(name))
                }
            };
            // ENOENT: the kernel holds nothing for it, which is fine.
            if let Err(e) = sent {
                log::debug!("invalidating {inv:?}: {e}");
            }
        }
    })
}

/// Raises the readahead of the mount's bdi (`/sys/class/bdi/MAJ:MIN`), which
/// FUSE sets low. Best effort: needs root; failure is logged, not fatal. The
/// device number is the mount's identity's, read when it was mounted.
fn raise_readahead(kb: u32) {
    let Some(own) = crate::mount::ownmount::own() else {
        return log::info!("readahead: the mount is not known");
    };
    let (major, minor) = own.dev;
    let path = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    match fs::write(&path, kb.to_string()) {
        Ok(()) => log::info!("readahead: {path} = {kb}"),
        Err(e) => log::info!("readahead: cannot write {path}: {e}"),
    }
}

/// Unmounts (as a stop signal would) once `fd`'s write end is closed: the
/// process that mounted is gone. The flag says it happened.
fn unmount_when_closed(fd: OwnedFd) -> Arc<AtomicBool> {
    let orphaned = Arc::new(AtomicBool::new(false));
    let flag = orphaned.clone();
    let watcher = std::thread::Builder::new()
        .name("parent".into())
        .spawn(move || {
            let mut buf = [0u8; 1];
            let mut file = File::from(fd);
            // Nothing is ever written: read returns at EOF (or on an error).
            let _ = std::io::Read::read(&mut file, &mut buf);
            log::warn!("the process that mounted is gone: unmounting");
            flag.store(true, Ordering::SeqCst);
            let done = unmount_own_mount();
            if let Err(e) = done {
                log::error!("unmount after the parent exited: {e}");
            }
        });
    if let Err(e) = watcher {
        log::error!("starting the parent watcher: {e}");
    }
    orphaned
}

/// Serves until the filesystem is unmounted, by a signal or from outside. A
/// stop signal unmounts this daemon's mount if nothing covers it (lazily if
/// busy: a signal means stop).
fn serve(session: Session<OciFs>) -> Result<(), MountError> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = stop_signals().wait() {
                log::info!("{sig}: unmounting");
                let done = unmount_own_mount();
                if let Err(e) = done {
                    log::error!("unmount after {sig}: {e}");
                }
            }
        })
        .map_err(io_err("starting the signal thread"))?;
    let served = session.run().map_err(io_err("serving"));
    crate::process::state::remove_own();
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_source_is_the_sources_as_fstab_writes_them() {
        let cases: &[&[&str]] = &[
            &["/deploy/amd64-oci", "linux/arm/v7=/deploy/arm-oci"],
            &["/odd:dir", r"back\slash", "a,b c"],
            &["oci:/x:latest"],
        ];
        for names in cases {
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let source = source_name(&names);
            let split = crate::mount::fstab::split_sources(&source).unwrap();
            assert_eq!(split, names, "{source}");
        }
        assert_eq!(
            source_name(&["/a".into(), "/b".into()]),
            "/a:/b",
            "what an fstab line of two sources holds"
        );
        let long = source_name(&["x".repeat(5000)]);
        assert!(long.len() <= MAX_SOURCE + 3 && long.ends_with('…'));
    }
}
