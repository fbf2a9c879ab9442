//! What every ocimux process shares about its life: the exit codes, the
//! stop signals, and how a daemon takes its own mount down. `daemon`,
//! `scoped`, `mountpoint` and the CLI use these, so each is said once.

use nix::sys::signal::{SigSet, Signal};

/// Exit codes (documented in README.md).
pub mod exit {
    /// Anything not covered below (and `verify` finding bad blobs).
    pub const OTHER: u8 = 1;
    /// Bad input: a source, an argument, a mount option.
    pub const BAD_INPUT: u8 = 2;
    /// The mountpoint was refused or the mount failed.
    pub const MOUNT: u8 = 3;
    /// `umount` of a path that is not an ocimux mount, or that would not unmount.
    pub const UMOUNT: u8 = 4;
    /// `serve` could not listen or start.
    pub const SERVE: u8 = 5;
}

/// Every way a command can fail, each with its exit code: the one error
/// type the CLI returns, so the code is a match, not a search.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A source, an argument or an index option is wrong.
    #[error(transparent)]
    Input(#[from] crate::Error),
    /// Mounting, serving a mount or unmounting failed.
    #[error(transparent)]
    Mount(#[from] crate::daemon::MountError),
    /// An export failed.
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    /// A server did not start.
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
    /// Writing a command's output (standard output) failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// Preparing something the command needs (a temporary directory …).
    #[error("{what}: {err}")]
    Setup {
        /// What was being prepared.
        what: String,
        /// Why it failed.
        #[source]
        err: std::io::Error,
    },
}

impl From<serde_json::Error> for Failure {
    /// JSON is only ever written to the output here.
    fn from(e: serde_json::Error) -> Self {
        Failure::Output(e.into())
    }
}

impl Failure {
    /// The exit code, from the failure's own type.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Input(e) => e.exit_code(),
            Failure::Mount(e) => e.exit_code(),
            Failure::Export(e) => e.exit_code(),
            Failure::Serve(e) => e.exit_code(),
            Failure::Output(_) | Failure::Setup { .. } => exit::OTHER,
        }
    }

    /// Output cut short by a closed pipe (`… | head`): not a failure to report.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Failure::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// The exit code of a failure, decided by the error type that knows it.
pub trait ExitStatus {
    /// One of [`exit`]'s codes.
    fn exit_code(&self) -> u8;
}

impl ExitStatus for crate::Error {
    fn exit_code(&self) -> u8 {
        exit::BAD_INPUT
    }
}

impl ExitStatus for crate::daemon::MountError {
    fn exit_code(&self) -> u8 {
        use crate::daemon::MountError as E;
        match self {
            E::Option(_) | E::LogFile { .. } => exit::BAD_INPUT,
            E::NotOurs(_) | E::Unmount { .. } => exit::UMOUNT,
            E::Mountpoint { .. }
            | E::Mount { .. }
            | E::NoFuseDevice { .. }
            | E::Daemon(_)
            | E::Io { .. } => exit::MOUNT,
        }
    }
}

impl ExitStatus for crate::export::ExportError {
    fn exit_code(&self) -> u8 {
        use crate::export::ExportError as E;
        match self {
            E::Exists(_) | E::Overlaps { .. } => exit::BAD_INPUT,
            E::Blob { .. } | E::Io { .. } => exit::OTHER,
        }
    }
}

/// The signals that mean "stop": the daemon unmounts, a scoped mount passes
/// them on to its command, the watchdog ignores them (it ends with the daemon).
pub const STOP_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// [`STOP_SIGNALS`] as a set, for blocking and waiting.
pub fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in STOP_SIGNALS {
        set.add(s);
    }
    set
}

/// Takes this daemon's own mount down: unmounted if it is not busy, else
/// detached (a stop means stop); `Ok(false)` when there is none to take.
pub fn unmount_own_mount() -> Result<bool, crate::mountpoint::UnmountError> {
    let Some(own) = crate::ownmount::own() else {
        return Ok(false);
    };
    own.unmount(false).or_else(|_| own.unmount(true))
}

/// Lets open files reach the hard limit: a mount shares open source files
/// per file version, a server holds each served tag's source roots (the
/// Yocto mode's dated builds among them), so fds grow with what is served.
/// Returns the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_set_is_the_stop_signals() {
        let set = stop_signals();
        for s in STOP_SIGNALS {
            assert!(set.contains(s), "{s}");
        }
        assert!(!set.contains(Signal::SIGKILL) && !set.contains(Signal::SIGPIPE));
        let codes = [
            exit::OTHER,
            exit::BAD_INPUT,
            exit::MOUNT,
            exit::UMOUNT,
            exit::SERVE,
        ];
        let mut unique = codes.to_vec();
        unique.dedup();
        assert_eq!(unique.len(), codes.len(), "exit codes are distinct");
    }

    #[test]
    fn each_failure_has_its_code() {
        use crate::daemon::MountError;
        use std::io::{Error as IoError, ErrorKind};
        let cases: Vec<(Failure, u8, bool)> = vec![
            (
                Failure::Input(crate::Error::NoSources),
                exit::BAD_INPUT,
                false,
            ),
            (
                Failure::Mount(MountError::NotOurs("/x".into())),
                exit::UMOUNT,
                false,
            ),
            (
                Failure::Output(IoError::from(ErrorKind::BrokenPipe)),
                exit::OTHER,
                true,
            ),
            (
                serde_json::to_writer(BrokenPipe, &1)
                    .map_err(Failure::from)
                    .unwrap_err(),
                exit::OTHER,
                true,
            ),
            (
                Failure::Output(IoError::from(ErrorKind::StorageFull)),
                exit::OTHER,
                false,
            ),
        ];
        for (failure, code, quiet) in cases {
            assert_eq!(failure.exit_code(), code, "{failure}");
            assert_eq!(failure.is_broken_pipe(), quiet, "{failure}");
        }
    }

    struct BrokenPipe;
    impl std::io::Write for BrokenPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
