//! Every `unsafe` block of the crate: the system calls that `nix` and the
//! standard library do not wrap, each behind a safe function whose SAFETY
//! note says why the call cannot misuse memory. Every other module denies
//! `unsafe_code` (a unit test checks that none allows it).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A syscall's `long` result as a new fd, or the errno.
fn fd_result(rc: libc::c_long) -> io::Result<OwnedFd> {
    match i32::try_from(rc) {
        // SAFETY: the kernel just returned this new fd to us; nothing else owns it.
        Ok(fd) if fd >= 0 => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A `0 or -1` result as `()` or the errno.
fn unit_result(rc: libc::c_long) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

// ---- the new mount API (attach) ----

/// `fsopen(2)`, close-on-exec.
pub(crate) fn fsopen(fs_name: &CStr) -> io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
    // SAFETY: a NUL-terminated name that outlives the call.
    fd_result(unsafe { libc::syscall(libc::SYS_fsopen, fs_name.as_ptr(), FSOPEN_CLOEXEC) })
}

/// One `fsconfig(2)` call: `cmd` with `key` and `value` (either may be null
/// for commands that take none).
pub(crate) fn fsconfig(
    fs: BorrowedFd<'_>,
    cmd: libc::c_uint,
    key: Option<&CStr>,
    value: Option<&CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: both strings (or nulls) outlive the call; fsconfig reads them only.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            ptr(key),
            ptr(value),
            0,
        )
    })
}

/// `fsmount(2)`, close-on-exec, with mount attributes `attrs`.
pub(crate) fn fsmount(fs: BorrowedFd<'_>, attrs: libc::c_uint) -> io::Result<OwnedFd> {
    const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
    // SAFETY: no pointers.
    fd_result(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
}

/// `move_mount(2)` of the detached mount `mnt` onto the directory `dir`.
pub(crate) fn move_mount_onto(mnt: BorrowedFd<'_>, dir: BorrowedFd<'_>) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    let empty = c"";
    // SAFETY: `empty` is a static NUL-terminated string; both fds are open.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            dir.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
}

// ---- files ----

/// `statx(2)` of `name` in `dir`.
pub(crate) fn statx(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mask: libc::c_uint,
) -> io::Result<libc::statx> {
    // SAFETY: an all-zero statx is a valid value of the plain C struct.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated and `st` is writable; both outlive the call.
    let rc = unsafe { libc::statx(dir.as_raw_fd(), name.as_ptr(), flags, mask, &mut st) };
    unit_result(rc.into()).map(|()| st)
}

/// `pread(2)` into the spare capacity of `buf` (at most `room` bytes), which
/// grows by what was read; returns that count.
pub(crate) fn pread_append(
    file: &File,
    buf: &mut Vec<u8>,
    room: usize,
    at: libc::off_t,
) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let room = room.min(spare.len());
    // SAFETY: `spare` is `room` or more bytes of writable memory owned by
    // `buf`; pread writes at most `room` bytes there and nowhere else.
    let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), room, at) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let n = n.min(room);
    // SAFETY: pread initialised the first `n` bytes of the spare capacity,
    // right after the current length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// The extended attribute `name` of the file `fd` (`path`: read through this
/// path instead, for an `O_PATH` fd), into `buf`; its length.
pub(crate) fn getxattr(
    fd: BorrowedFd<'_>,
    path: Option<&CStr>,
    name: &CStr,
    buf: &mut [u8],
) -> io::Result<usize> {
    // SAFETY: `path` and `name` are NUL-terminated and outlive the call; the
    // kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        match path {
            None => libc::fgetxattr(
                fd.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            ),
            Some(p) => libc::getxattr(
                p.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            ),
        }
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `ioctl(FICLONE)`: `out` shares `src`'s extents (a reflink).
pub(crate) fn ficlone(out: &File, src: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open
    // for the duration of the call.
    let rc = unsafe { libc::ioctl(out.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    unit_result(rc.into())
}

// ---- read leases ----

// Kernel ABI (include/uapi/asm-generic/fcntl.h), not in the libc crate.
const F_SETSIG: libc::c_int = 10;
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

/// `struct f_owner_ex`.
#[repr(C)]
struct OwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// `fcntl(F_GETLEASE)`: the lease held on `fd` (`F_RDLCK`, `F_UNLCK`, …).
pub(crate) fn get_lease(fd: RawFd) -> libc::c_int {
    // SAFETY: F_GETLEASE takes no argument and reads nothing of ours.
    unsafe { libc::fcntl(fd, libc::F_GETLEASE) }
}

/// `fcntl(F_SETLEASE, kind)` on `fd`.
pub(crate) fn set_lease(fd: RawFd, kind: libc::c_int) -> io::Result<()> {
    // SAFETY: plain fcntl with an integer argument.
    unit_result(unsafe { libc::fcntl(fd, libc::F_SETLEASE, kind) }.into())
}

/// `fcntl(F_SETSIG, signal)` on `fd`.
pub(crate) fn set_signal(fd: RawFd, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: plain fcntl with an integer argument.
    unit_result(unsafe { libc::fcntl(fd, F_SETSIG, signal) }.into())
}

/// `fcntl(F_SETOWN_EX)`: `fd`'s signals go to thread `tid` alone.
pub(crate) fn set_owner_thread(fd: RawFd, tid: libc::pid_t) -> io::Result<()> {
    let owner = OwnerEx {
        kind: F_OWNER_TID,
        pid: tid,
    };
    // SAFETY: `owner` outlives the call, which only reads it.
    unit_result(unsafe { libc::fcntl(fd, F_SETOWN_EX, &owner as *const OwnerEx) }.into())
}

/// This thread's id.
pub(crate) fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no arguments.
    unsafe { libc::gettid() }
}

/// A set holding `signal` alone.
fn set_of(signal: libc::c_int) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        set
    }
}

/// Blocks `signal` (a real-time one, which nix's `Signal` cannot name) in
/// this thread, and so in every thread it starts.
pub(crate) fn block_signal(signal: libc::c_int) {
    let set = set_of(signal);
    // SAFETY: pthread_sigmask only reads the initialised set.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for `signal` (blocked) and returns the fd it was queued for by
/// `F_SETSIG` (`si_fd`); `None` when the wait was interrupted.
pub(crate) fn wait_signal_fd(signal: libc::c_int) -> Option<RawFd> {
    /// The prefix of `siginfo_t` for signals queued by F_SETSIG (kernel:
    /// struct kernel_siginfo, `_sigpoll`): `si_fd` after `si_band`, a long.
    #[repr(C)]
    struct Poll {
        signo: libc::c_int,
        errno: libc::c_int,
        code: libc::c_int,
        band: libc::c_long,
        fd: libc::c_int,
    }
    let set = set_of(signal);
    // SAFETY: siginfo_t is plain data that sigwaitinfo fills; it is larger
    // than the `Poll` prefix read from it afterwards.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        if libc::sigwaitinfo(&set, &mut info) < 0 {
            return None;
        }
        Some((*(&info as *const libc::siginfo_t).cast::<Poll>()).fd)
    }
}

// ---- processes ----

/// Whether this process runs one thread only (`/proc/self/task`).
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

/// `fork(2)`, only while this process has one thread (then the child may
/// run normal code: no other thread held a lock it would need); refused
/// with EDEADLK otherwise.
pub(crate) fn fork_alone() -> io::Result<nix::unistd::ForkResult> {
    if !single_threaded() {
        return Err(io::Error::from_raw_os_error(libc::EDEADLK));
    }
    // SAFETY: single-threaded, checked just above.
    unsafe { nix::unistd::fork() }.map_err(io::Error::from)
}

/// Closes every fd above stderr but `keep` (a freshly forked process that
/// must hold nothing of its parent's).
pub(crate) fn close_all_but(keep: BorrowedFd<'_>) {
    let keep = u32::try_from(keep.as_raw_fd()).unwrap_or(u32::MAX);
    // SAFETY: close_range only closes descriptors; callers own none of the
    // others afterwards (they are the forked child's copies).
    unsafe {
        if keep > 3 {
            libc::close_range(3, keep - 1, 0);
        }
        libc::close_range(keep.saturating_add(1), u32::MAX, 0);
    }
}

/// Ignores `sig` (SIG_IGN: no handler code is installed).
pub(crate) fn ignore_signal(sig: nix::sys::signal::Signal) {
    // SAFETY: SIG_IGN installs no handler code.
    let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
}

/// `cmd` starts with `signals` unblocked (between fork and exec).
pub(crate) fn unblock_in_child(cmd: &mut std::process::Command, signals: nix::sys::signal::SigSet) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the child between fork and exec, and only calls
    // sigprocmask, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
                Some(&signals),
                None,
            )
            .map_err(io::Error::from)
        });
    }
}

/// Returns freed heap pages to the kernel (glibc's `malloc_trim`).
pub(crate) fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    /// No module but this one allows `unsafe_code` (the crate denies it).
    #[test]
    fn unsafe_lives_here_only() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![root];
        let mut offenders = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("files/sys.rs")
                    && std::fs::read_to_string(&path)
                        .unwrap()
                        .contains(concat!("allow(", "unsafe_code)"))
                {
                    offenders.push(path);
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "unsafe outside files/sys.rs: {offenders:?}"
        );
    }
}
