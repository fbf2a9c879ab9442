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
    let me = std::process::id() as i32;
    crate::mountpoint::unmount_ours(me, false)
        .or_else(|_| crate::mountpoint::unmount_ours(me, true))
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
        let codes = [exit::OTHER, exit::BAD_INPUT, exit::MOUNT, exit::UMOUNT];
        let mut unique = codes.to_vec();
        unique.dedup();
        assert_eq!(unique.len(), codes.len(), "exit codes are distinct");
    }
}
