//! Scoped mounts for scripts: `ocimux mount … -- CMD [ARGS…]` runs CMD with
//! the mount in place (its path in `$OCIMUX_MNT`), then unmounts, whatever
//! CMD did, and exits with CMD's status.
//!
//! SIGINT, SIGTERM and SIGHUP sent to ocimux are passed on to CMD (a
//! terminal's Ctrl-C reaches both); ocimux waits for CMD either way, then
//! unmounts. The signals are blocked here (a thread takes them) and
//! unblocked in CMD between fork and exec, so CMD starts as it would from a
//! shell.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::kill;

use crate::process::lifecycle::stop_signals;
use nix::unistd::Pid;

/// The environment variable that names the mountpoint for CMD.
pub const MOUNT_ENV: &str = "OCIMUX_MNT";

/// Exit code when CMD cannot be found (as POSIX shells use).
pub const NOT_FOUND: u8 = 127;
/// Exit code when CMD cannot be run (as POSIX shells use).
pub const NOT_RUNNABLE: u8 = 126;

/// What running CMD came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code to pass on: CMD's, 128 + N when signal N killed it,
    /// [`NOT_FOUND`] or [`NOT_RUNNABLE`] when it never ran.
    pub code: u8,
}

/// The exit code a shell would report for `status`.
pub fn code_of(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + (sig & 0x7f)).unwrap_or(1),
        (None, None) => 1,
    }
}

/// Blocks the stop signals in this thread (and the threads and processes it
/// starts), so one that arrives between the mount and the command is not
/// lost: it is passed on to the command as soon as it runs. Call before
/// mounting.
pub fn block_stop_signals() {
    if let Err(e) = stop_signals().thread_block() {
        log::warn!("blocking signals: {e}");
    }
}

/// Runs `command` with `$OCIMUX_MNT` set to `mountpoint`, passing stop
/// signals on to it, and returns once it has exited.
pub fn run(command: &[OsString], mountpoint: &Path) -> Outcome {
    run_with(command, MOUNT_ENV, mountpoint.as_os_str())
}

/// Runs `command` with the environment variable `name` set to `value`
/// (what CMD is told about the mount or the server), passing stop signals
/// on to it, and returns once it has exited.
pub fn run_with(command: &[OsString], name: &str, value: &std::ffi::OsStr) -> Outcome {
    let Some((program, args)) = command.split_first() else {
        return Outcome { code: 0 };
    };
    // Blocked (again: see block_stop_signals) before CMD exists, so none is
    // lost in between; the thread below takes them. CMD starts unblocked.
    block_stop_signals();
    let mut child = match spawn(program, args, (name, value)) {
        Ok(child) => child,
        Err(code) => return Outcome { code },
    };
    let reaped = forward_signals(Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)));
    let status = loop {
        match child.wait() {
            Ok(status) => break status,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("waiting for the command: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    reaped.store(true, Ordering::SeqCst);
    Outcome {
        code: code_of(status),
    }
}

/// Starts CMD with the stop signals unblocked; the shell's exit code when
/// it cannot be started.
fn spawn(
    program: &OsString,
    args: &[OsString],
    (name, value): (&str, &std::ffi::OsStr),
) -> Result<std::process::Child, u8> {
    let signals = stop_signals();
    let mut cmd = Command::new(program);
    cmd.args(args).env(name, value);
    crate::files::sys::unblock_in_child(&mut cmd, signals);
    cmd.spawn().map_err(|e| {
        let name = program.to_string_lossy();
        log::error!("{}: {e}", crate::error::printable(&name));
        match e.kind() {
            std::io::ErrorKind::NotFound => NOT_FOUND,
            _ => NOT_RUNNABLE,
        }
    })
}

/// Passes the stop signals this process receives on to `pid`, from a thread,
/// until the returned flag says CMD was reaped (its pid may then be reused).
fn forward_signals(pid: Pid) -> Arc<AtomicBool> {
    let reaped = Arc::new(AtomicBool::new(false));
    let done = reaped.clone();
    let signals = stop_signals();
    let _ = std::thread::Builder::new()
        .name("forward".into())
        .spawn(move || {
            while let Ok(sig) = signals.wait() {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                log::info!("{sig}: passed on to the command");
                let _ = kill(pid, sig);
            }
        });
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_what_a_shell_reports() {
        let status = |script: &str| {
            Command::new("sh")
                .args(["-c", script])
                .status()
                .expect("sh runs")
        };
        let cases = [
            ("exit 0", 0),
            ("exit 3", 3),
            ("exit 255", 255),
            ("kill -TERM $$", 128 + 15),
            ("kill -KILL $$", 128 + 9),
        ];
        for (script, want) in cases {
            assert_eq!(code_of(status(script)), want, "{script}");
        }
    }
}
