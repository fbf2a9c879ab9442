//! What every ocimux process shares about its life: the exit codes (each
//! error type says its own through [`ExitStatus`]), the stop signals and
//! the open-file limit. `daemon`, `scoped`, `mountpoint`, `serve` and the
//! CLI use these, so each is said once.

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

    /// Every code with what it means, for the manual pages (README.md's
    /// table says the same at length).
    pub const MEANINGS: &[(&str, &str)] = &[
        ("0", "success"),
        (
            "1",
            "verify found a bad blob (each is named); anything not below",
        ),
        (
            "2",
            "bad input: a source (the message names the source and the file), an argument, \
             a -o option, a configuration, password, certificate or log file",
        ),
        (
            "3",
            "the mountpoint was refused (not an empty directory, or already mounted) or mounting failed",
        ),
        (
            "4",
            "umount: not an ocimux mount, busy, or the daemon did not exit or answer",
        ),
        (
            "5",
            "serve: the address cannot be listened on, or the server could not start",
        ),
        (
            "COMMAND's",
            "mount ... -- COMMAND and serve ... -- COMMAND: COMMAND's status \
             (128+N for signal N, 127 not found, 126 not runnable)",
        ),
    ];
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

/// Whether `pid` still runs (a zombie has finished: it only awaits its parent).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
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
        let unique: std::collections::BTreeSet<u8> = codes.into_iter().collect();
        assert_eq!(unique.len(), codes.len(), "exit codes are distinct");
    }
}
