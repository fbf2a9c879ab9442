//! POSIX access ACLs folded into what a mount can show: one owner, one
//! group and "others", each with its own bits.
//!
//! An ACL can grant or deny named users and groups what the mode bits do not
//! say. The mount shows a file's owner, group and mode, and the kernel checks
//! those (`default_permissions`), so every entry is folded into the three
//! classes so that no one gets more through the mount than the ACL grants:
//! - a named user might be a member of the owning group, or fall under
//!   "others" in the mount's view: the group and other bits keep only what
//!   every named user is granted (after the mask);
//! - a member of a named group that no group entry grants is denied, though
//!   "others" may be granted: the other bits keep only what every named
//!   group is granted;
//! - the group class is the owning group's entry after the mask.
//!
//! An ACL that cannot be read or parsed leaves the owner's bits only: show
//! less, never more.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const XATTR_NAME: &std::ffi::CStr = c"system.posix_acl_access";
const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
/// A larger ACL than any filesystem stores is not read whole: refused.
const MAX_BYTES: usize = 64 * 1024;

/// The access ACL of the file `fd` refers to (any fd, `O_PATH` too), or
/// `None` when it has none (or the filesystem has no ACLs).
pub(crate) fn read(fd: BorrowedFd<'_>) -> io::Result<Option<Vec<u8>>> {
    // fgetxattr on the fd itself; an O_PATH fd refuses it (EBADF), and is
    // read through its /proc name, which is the same inode.
    let mut buf = vec![0u8; 256];
    let mut path: Option<std::ffi::CString> = None;
    loop {
        let read = crate::files::sys::getxattr(fd, path.as_deref(), XATTR_NAME, &mut buf);
        let e = match read {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(e) => e,
        };
        match e.raw_os_error() {
            Some(libc::EBADF) if path.is_none() => {
                path = Some(
                    std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
                );
            }
            Some(libc::ENODATA | libc::EOPNOTSUPP) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < MAX_BYTES => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
    }
}

/// The mode bits (`0o777`) that grant no class more than `mode` and the
/// access ACL `acl` (its raw xattr bytes) do. `Err(())`-free: an ACL that
/// does not parse keeps the owner's bits only.
pub(crate) fn effective_mode(mode: u32, acl: Option<&[u8]>) -> u32 {
    let mode = mode & 0o777;
    let Some(acl) = acl else {
        return mode;
    };
    parse(acl).map_or(mode & 0o700, |entries| fold(mode, &entries))
}

/// Who besides the owner (and root) may write a file or directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct Writers {
    /// The owning group, by its bits (after the ACL's mask).
    pub(crate) group: bool,
    /// Others, by their bits, or any named user or group of the ACL
    /// (counted as anyone: who they are is not followed further).
    pub(crate) anyone: bool,
}

/// Who besides the owner may write a file or directory of mode `mode` with
/// access ACL `acl`. An ACL that does not parse counts as anyone.
pub(crate) fn writers(mode: u32, acl: Option<&[u8]>) -> Writers {
    const W: u32 = 0o2;
    let Some(acl) = acl else {
        return Writers {
            group: mode & 0o020 != 0,
            anyone: mode & 0o002 != 0,
        };
    };
    let Some(entries) = parse(acl) else {
        return Writers {
            group: true,
            anyone: true,
        };
    };
    let mask = entries.iter().find(|(t, _)| *t == MASK).map(|(_, p)| *p);
    let writes = |perm: u32| mask.map_or(perm, |m| perm & m) & W != 0;
    let mut out = Writers::default();
    for &(tag, perm) in &entries {
        match tag {
            GROUP_OBJ => out.group |= writes(perm),
            USER | GROUP => out.anyone |= writes(perm),
            OTHER => out.anyone |= perm & W != 0,
            _ => {}
        }
    }
    out
}

/// The ACL of `fd` folded into the mode `mode`: the bits the mount may show
/// (see [`effective_mode`]) and who besides the owner may write it. An ACL
/// that cannot be read leaves the owner's bits only, and counts as writable
/// by anyone: less shown, never more.
pub(crate) fn of_file(fd: BorrowedFd<'_>, mode: u32) -> (u32, Writers) {
    match read(fd) {
        Ok(acl) => (
            effective_mode(mode, acl.as_deref()),
            writers(mode, acl.as_deref()),
        ),
        Err(_) => (
            mode & 0o700,
            Writers {
                group: true,
                anyone: true,
            },
        ),
    }
}

/// Whether anyone but the owner (and root) may write a file or directory of
/// mode `mode` with access ACL `acl` (see [`writers`]).
pub(crate) fn others_may_write(mode: u32, acl: Option<&[u8]>) -> bool {
    let w = writers(mode, acl);
    w.group || w.anyone
}

fn parse(acl: &[u8]) -> Option<Vec<(u16, u32)>> {
    let (header, body) = acl.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*header) != VERSION || body.len() % 8 != 0 {
        return None;
    }
    body.chunks_exact(8)
        .map(|e| {
            let tag = u16::from_le_bytes([*e.first()?, *e.get(1)?]);
            let perm = u16::from_le_bytes([*e.get(2)?, *e.get(3)?]);
            Some((tag, u32::from(perm & 0o7)))
        })
        .collect()
}

fn fold(mode: u32, entries: &[(u16, u32)]) -> u32 {
    let find = |tag| entries.iter().find(|(t, _)| *t == tag).map(|(_, p)| *p);
    let mask = find(MASK);
    let masked = |p: u32| mask.map_or(p, |m| p & m);
    let owner = find(USER_OBJ).unwrap_or(mode >> 6 & 0o7);
    let mut group = masked(find(GROUP_OBJ).unwrap_or(mode >> 3 & 0o7));
    let mut other = find(OTHER).unwrap_or(mode & 0o7);
    for &(tag, perm) in entries {
        match tag {
            USER => {
                group &= masked(perm);
                other &= masked(perm);
            }
            GROUP => other &= masked(perm),
            _ => {}
        }
    }
    owner << 6 | group << 3 | other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut out = VERSION.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&perm.to_le_bytes());
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    #[test]
    fn effective_mode_table() {
        let u = u32::MAX;
        // (mode, ACL entries, shown)
        let cases: &[(u32, Option<&[(u16, u16, u32)]>, u32)] = &[
            (0o644, None, 0o644),
            (0o4755, None, 0o755),
            // A minimal ACL says what the mode says.
            (
                0o644,
                Some(&[(USER_OBJ, 6, u), (GROUP_OBJ, 4, u), (OTHER, 4, u)]),
                0o644,
            ),
            // `user:bob:---`: bob may be in the group or be "other".
            (
                0o644,
                Some(&[
                    (USER_OBJ, 6, u),
                    (USER, 0, 1000),
                    (GROUP_OBJ, 4, u),
                    (MASK, 4, u),
                    (OTHER, 4, u),
                ]),
                0o600,
            ),
            // `g::---` with an `r--` mask: the owning group reads nothing.
            (
                0o644,
                Some(&[
                    (USER_OBJ, 6, u),
                    (USER, 4, 1000),
                    (GROUP_OBJ, 0, u),
                    (MASK, 4, u),
                    (OTHER, 4, u),
                ]),
                0o604,
            ),
            // A named group denied: its members would fall to "other".
            (
                0o644,
                Some(&[
                    (USER_OBJ, 6, u),
                    (GROUP_OBJ, 4, u),
                    (GROUP, 0, 50),
                    (MASK, 4, u),
                    (OTHER, 4, u),
                ]),
                0o640,
            ),
            // The mask limits named entries: a named user with rwx under an
            // r-- mask reads only.
            (
                0o755,
                Some(&[
                    (USER_OBJ, 7, u),
                    (USER, 7, 1000),
                    (GROUP_OBJ, 5, u),
                    (MASK, 4, u),
                    (OTHER, 5, u),
                ]),
                0o744,
            ),
            // A directory: search (x) folded the same way.
            (
                0o755,
                Some(&[
                    (USER_OBJ, 7, u),
                    (USER, 6, 1000),
                    (GROUP_OBJ, 5, u),
                    (MASK, 7, u),
                    (OTHER, 5, u),
                ]),
                0o744,
            ),
        ];
        for (mode, entries, want) in cases {
            let bytes = entries.map(acl);
            assert_eq!(
                effective_mode(*mode, bytes.as_deref()),
                *want,
                "{mode:o} {entries:?}"
            );
        }
        // Who else may write.
        for (mode, entries, want) in [
            (0o644, None, false),
            (0o664, None, true),
            (0o646, None, true),
            (
                0o644,
                Some(
                    &[
                        (USER_OBJ, 6, u),
                        (USER, 6, 1000),
                        (GROUP_OBJ, 4, u),
                        (MASK, 6, u),
                        (OTHER, 4, u),
                    ][..],
                ),
                true,
            ),
            (
                0o644,
                Some(
                    &[
                        (USER_OBJ, 6, u),
                        (USER, 6, 1000),
                        (GROUP_OBJ, 4, u),
                        (MASK, 4, u),
                        (OTHER, 4, u),
                    ][..],
                ),
                false,
            ),
            (
                0o644,
                Some(&[(USER_OBJ, 6, u), (GROUP_OBJ, 4, u), (OTHER, 4, u)][..]),
                false,
            ),
        ] {
            let bytes = entries.map(acl);
            assert_eq!(
                others_may_write(mode, bytes.as_deref()),
                want,
                "{mode:o} {entries:?}"
            );
        }
        assert!(others_may_write(0o600, Some(b"junk")));
        // Unparseable: the owner's bits only.
        assert_eq!(effective_mode(0o644, Some(b"junk")), 0o600);
        assert_eq!(effective_mode(0o644, Some(&[2, 0, 0, 0, 1])), 0o600);
    }
}
