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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::files::sys;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

// Kernel ABI (include/uapi/linux/mount.h), stable since 5.2.
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;
const MOUNT_ATTR_NOATIME: libc::c_uint = 0x10;

/// What the FUSE mount is asked for.
#[derive(Debug, Clone)]
pub(crate) struct FuseParams<'a> {
    /// The source field (the sources, as fstab writes them).
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

/// One `fsconfig` call: a string (`Some`) or a flag (`None`).
fn fsconfig(fs: BorrowedFd<'_>, key: &str, value: Option<&str>) -> io::Result<()> {
    let key_c = cstr(key)?;
    let value_c = value.map(cstr).transpose()?;
    let cmd = match value_c {
        Some(_) => FSCONFIG_SET_STRING,
        None => FSCONFIG_SET_FLAG,
    };
    sys::fsconfig(fs, cmd, Some(&key_c), value_c.as_deref())
        .map_err(|e| io::Error::new(e.kind(), format!("fsconfig {key}: {e}")))
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
    let fs = sys::fsopen(c"fuse")?;
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
    sys::fsconfig(fs, FSCONFIG_CMD_CREATE, None, None)
        .map_err(|e| io::Error::new(e.kind(), format!("creating the filesystem: {e}")))?;
    let mut attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOATIME;
    if p.noexec {
        attrs |= MOUNT_ATTR_NOEXEC;
    }
    let mnt = sys::fsmount(fs, attrs)?;
    sys::move_mount_onto(mnt.as_fd(), dir)?;
    let identity = crate::mount::ownmount::Identity::of_mount_fd(mnt.as_fd())?;
    Ok((dev.into(), identity))
}
