//! Attaching a FUSE mount to the mountpoint that was checked: the new mount
//! API (`fsopen`, `fsconfig`, `fsmount`, `move_mount`) puts the mount on the
//! held directory fd itself, so a mountpoint (or a directory above it)
//! swapped for a symlink after the check cannot send root's mount elsewhere.
//!
//! Root mounts this way; everyone else goes through the setuid fusermount3,
//! which does its own checks (it mounts on the directory it opened).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

// Kernel ABI (include/uapi/linux/mount.h), stable since 5.2.
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;
const MOUNT_ATTR_NOATIME: libc::c_uint = 0x10;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// What the FUSE mount is asked for.
#[derive(Debug, Clone)]
pub(crate) struct FuseParams<'a> {
    /// The source field (`ocimux:PID`).
    pub fsname: &'a str,
    /// The kernel checks permissions (`default_permissions`).
    pub default_permissions: bool,
    /// Others may use the mount (`allow_other`; `allow_root` is this,
    /// narrowed by the session).
    pub allow_other: bool,
    /// `noexec`.
    pub noexec: bool,
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A syscall's `long` result as an fd or the errno.
fn fd_result(rc: libc::c_long) -> io::Result<OwnedFd> {
    match i32::try_from(rc) {
        Ok(fd) if fd >= 0 => {
            // SAFETY: the kernel just returned this new fd to us; nothing
            // else owns it.
            #[allow(unsafe_code)]
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
        _ => Err(io::Error::last_os_error()),
    }
}

fn unit_result(rc: libc::c_long) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// One `fsconfig` call: a string (`Some`) or a flag (`None`).
fn fsconfig(fs: BorrowedFd<'_>, key: &str, value: Option<&str>) -> io::Result<()> {
    let key_c = cstr(key)?;
    let value_c = value.map(cstr).transpose()?;
    let (cmd, value_ptr) = match &value_c {
        Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
        None => (FSCONFIG_SET_FLAG, std::ptr::null()),
    };
    // SAFETY: both strings outlive the call; fsconfig reads them only.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            key_c.as_ptr(),
            value_ptr,
            0,
        )
    };
    unit_result(rc).map_err(|e| io::Error::new(e.kind(), format!("fsconfig {key}: {e}")))
}

/// Mounts a new FUSE filesystem on the directory `dir` (an fd of the
/// checked mountpoint), read-only, nosuid, nodev, noatime. Returns the
/// `/dev/fuse` fd to serve it from and the mount's identity (read from the
/// mount made here, the one thing no other mount can claim to be).
pub(crate) fn attach(
    dir: BorrowedFd<'_>,
    p: &FuseParams<'_>,
) -> io::Result<(OwnedFd, crate::mount::ownmount::Identity)> {
    let rootmode = File::from(dir.try_clone_to_owned()?).metadata()?.mode();
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")?;
    let fuse = cstr("fuse")?;
    // SAFETY: a NUL-terminated name that outlives the call.
    #[allow(unsafe_code)]
    let fs = fd_result(unsafe { libc::syscall(libc::SYS_fsopen, fuse.as_ptr(), FSOPEN_CLOEXEC) })?;
    let fs = fs.as_fd();
    fsconfig(fs, "source", Some(p.fsname))?;
    fsconfig(fs, "subtype", Some("ocimux"))?;
    fsconfig(fs, "fd", Some(&dev.as_raw_fd().to_string()))?;
    fsconfig(fs, "rootmode", Some(&format!("{rootmode:o}")))?;
    fsconfig(fs, "user_id", Some(&nix::unistd::getuid().to_string()))?;
    fsconfig(fs, "group_id", Some(&nix::unistd::getgid().to_string()))?;
    fsconfig(fs, "ro", None)?;
    if p.default_permissions {
        fsconfig(fs, "default_permissions", None)?;
    }
    if p.allow_other {
        fsconfig(fs, "allow_other", None)?;
    }
    // SAFETY: no pointers.
    #[allow(unsafe_code)]
    let created = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    unit_result(created)
        .map_err(|e| io::Error::new(e.kind(), format!("creating the filesystem: {e}")))?;
    let mut attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOATIME;
    if p.noexec {
        attrs |= MOUNT_ATTR_NOEXEC;
    }
    // SAFETY: no pointers.
    #[allow(unsafe_code)]
    let mnt = fd_result(unsafe {
        libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs)
    })?;
    let empty = cstr("")?;
    // SAFETY: `empty` outlives the call; both fds are open.
    #[allow(unsafe_code)]
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            dir.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    unit_result(moved)?;
    let identity = crate::mount::ownmount::Identity::of_mount_fd(mnt.as_fd())?;
    Ok((dev.into(), identity))
}
