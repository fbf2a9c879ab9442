//! A stop ends the service everywhere: once the daemon's mount has left its
//! mount namespace (umount(8), `umount -l`, `ocimux umount`, a stop signal),
//! the copies of it that other namespaces hold (`unshare -m`, containers)
//! are served no longer.
//!
//! The kernel keeps a FUSE connection alive while any namespace holds a
//! copy of its mount, so an unmount alone leaves those copies served. Here
//! a thread waits for the mount table of the daemon's namespace to change
//! (`poll` on `/proc/self/mountinfo`, rechecked each second too); when the
//! mount's [`Identity`] is no longer attached, every new lookup and open is
//! refused (ENOTCONN), files already open are served until they are closed
//! (as `umount -l` promises), and then the connection is aborted, which
//! ends the session and this process.

use std::os::fd::AsFd;
use std::time::Duration;

use crate::mount::fs::Drain;
use crate::mount::ownmount::Identity;

/// How often the mount table is read without a change being signalled.
const RECHECK: Duration = Duration::from_secs(1);
/// How often the open files are counted while they drain.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// How long the session is given to end after the abort.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// Starts the thread that stops the service once `own` has left this
/// namespace.
pub fn spawn(own: Identity, drain: Drain) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("gone".into())
        .spawn(move || {
            wait_until_gone(own);
            stop(own, &drain);
        })
        .map(|_| ())
}

/// Returns once `own` is not attached in this namespace (or the mount
/// table cannot be read any more).
fn wait_until_gone(own: Identity) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let table = std::fs::File::open("/proc/self/mountinfo");
    let timeout = PollTimeout::try_from(RECHECK).unwrap_or(PollTimeout::NONE);
    loop {
        match crate::files::mountinfo::all() {
            Ok(all) if own.entry(&all).is_some() => {}
            Ok(_) => return,
            Err(e) => return log::error!("reading mountinfo: {e}; stopping"),
        }
        match &table {
            Ok(t) => {
                let mut fds = [PollFd::new(t.as_fd(), PollFlags::POLLPRI)];
                let _ = poll(&mut fds, timeout);
            }
            Err(_) => std::thread::sleep(RECHECK),
        }
    }
}

/// Refuses new requests, waits for open files to be closed, then ends the
/// connection (every namespace's copy answers "not connected").
fn stop(own: Identity, drain: &Drain) {
    drain.stop();
    let open = drain.open_files();
    log::info!(
        "the mount left this namespace: the service stops ({open} open files are served until closed)"
    );
    while drain.open_files() > 0 {
        std::thread::sleep(DRAIN_POLL);
    }
    let aborted = crate::mount::ownmount::abort_fuse_connection(own.connection());
    log::info!("stopped: {aborted}");
    std::thread::sleep(EXIT_WAIT);
    // The session did not end (no fusectl to abort through): end here.
    log::warn!("the FUSE session did not end after the abort; exiting");
    std::process::exit(0);
}
