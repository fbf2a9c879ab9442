//! Finding an ocimux mount in `/proc/self/mountinfo`.
//!
//! The daemon mounts with its sources as source (`fsname`: what an fstab
//! line writes, so `mount -a` finds it) and type `fuse.ocimux`; which
//! process serves it is in the daemons' state files. Those are strings any
//! user can give a FUSE mount: what a daemon acts on is its mount's
//! identity (`ownmount`).

use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The filesystem types an ocimux mount shows: `fuse.ocimux` (root's mounts
/// set the subtype, and so does fusermount3); `fuse` from older builds.
pub const FSTYPES: [&str; 2] = ["fuse", "fuse.ocimux"];

/// One mount, as far as ocimux cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount's id (first field), unique while it is mounted.
    pub id: u64,
    /// The id of the mount it is mounted on.
    pub parent: u64,
    /// The device, `major:minor`.
    pub dev: String,
    /// The mount point (unescaped; any bytes, not necessarily UTF-8).
    pub mountpoint: PathBuf,
    /// The filesystem type.
    pub fstype: String,
    /// The source field.
    pub source: String,
    /// For a FUSE mount, the user who mounted it (`user_id=` in the
    /// superblock options: the kernel records it, no mounter chooses it).
    pub fuse_owner: Option<u32>,
}

impl MountEntry {
    /// Whether this is an ocimux mount by its type (`fuse.ocimux`): any
    /// user can give a FUSE mount that type and any source, so it names
    /// nothing to act on (see `mount::ownmount`).
    pub fn is_ocimux(&self) -> bool {
        FSTYPES.contains(&self.fstype.as_str())
    }

    /// The pid an ocimux mount made before its source became its sources
    /// (`ocimux:PID`); newer daemons are found by their state file.
    pub fn legacy_pid(&self) -> Option<i32> {
        match self.is_ocimux() {
            true => self.source.strip_prefix("ocimux:")?.parse().ok(),
            false => None,
        }
    }

    /// Whether another mount of `all` sits on top of this one (mounted on
    /// its root).
    pub fn covered(&self, all: &[MountEntry]) -> bool {
        all.iter()
            .any(|m| m.parent == self.id && m.mountpoint == self.mountpoint)
    }

    /// The FUSE connection number (`/sys/fs/fuse/connections/N`): the minor
    /// of the device.
    pub fn fuse_connection(&self) -> Option<u32> {
        self.dev.split_once(':')?.1.parse().ok()
    }
}

/// Parses mountinfo bytes; lines that do not parse are skipped. Mount points
/// are bytes: one mount anywhere with a non-UTF-8 path must not hide the rest.
pub fn parse(text: &[u8]) -> Vec<MountEntry> {
    text.split(|b| *b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<MountEntry> {
    // id parent maj:min root mountpoint options [optional...] - fstype source superopts
    let sep = line.windows(3).position(|w| w == b" - ")?;
    let (left, right) = (line.get(..sep)?, line.get(sep + 3..)?);
    let mut left = left.split(|b| *b == b' ');
    let id = std::str::from_utf8(left.next()?).ok()?.parse().ok()?;
    let parent = std::str::from_utf8(left.next()?).ok()?.parse().ok()?;
    let dev = left.next()?;
    let mountpoint = left.nth(1)?;
    let mut right = right.split(|b| *b == b' ');
    let fstype = right.next()?;
    let source = right.next()?;
    let fuse_owner = right.next().and_then(|opts| {
        opts.split(|b| *b == b',')
            .find_map(|o| o.strip_prefix(b"user_id="))
            .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
    });
    let text = |b: &[u8]| String::from_utf8_lossy(&unescape(b)).into_owned();
    Some(MountEntry {
        id,
        parent,
        dev: text(dev),
        mountpoint: PathBuf::from(std::ffi::OsString::from_vec(unescape(mountpoint))),
        fstype: text(fstype),
        source: text(source),
        fuse_owner,
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space …).
fn unescape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| b == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')));
        match octal.and_then(|v| u8::try_from(v).ok()) {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Every mount in this process's view, in mount order.
pub fn all() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read("/proc/self/mountinfo")?))
}

/// The last (topmost) mount at `mountpoint`, read from this process's view.
pub fn find(mountpoint: &Path) -> std::io::Result<Option<MountEntry>> {
    Ok(all()?
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == mountpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let text = "\
36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
50 23 0:52 / /tmp/a\\040b ro,nosuid,nodev,relatime shared:9 - fuse.ocimux ocimux:4242 ro,user_id=0,group_id=0
51 23 0:53 / /tmp/c ro - fuse.sshfs ocimux:1 ro
52 23 0:54 / /tmp/d ro - fuse ocimux:77 ro
53 23 0:55 / /tmp/e ro - fuse sshfs#x ro
garbage line
";
        let got = parse(text.as_bytes());
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].mountpoint, Path::new("/mnt/parent"));
        assert_eq!((got[0].id, got[1].fuse_connection()), (36, Some(52)));
        assert_eq!(got[0].dev, "98:0");
        assert_eq!(got[1].dev, "0:52");
        assert_eq!(got[0].legacy_pid(), None);
        assert_eq!((got[0].fuse_owner, got[1].fuse_owner), (None, Some(0)));
        assert_eq!((got[1].id, got[1].parent), (50, 23));
        assert_eq!(got[1].legacy_pid(), Some(4242));
        assert_eq!(got[2].legacy_pid(), None, "another fs type is never ocimux");
        assert!(!got[1].covered(&got));
        let on_top = parse(b"70 50 0:70 / /tmp/a\\040b rw - tmpfs none rw\n");
        let mut with_top = got.clone();
        with_top.extend(on_top);
        assert!(with_top[1].covered(&with_top));
        assert_eq!(got[1].mountpoint, Path::new("/tmp/a b"));
        assert_eq!(got[1].legacy_pid(), Some(4242));
        assert_eq!(got[2].legacy_pid(), None, "another fs type is never ours");
        assert_eq!(got[3].legacy_pid(), Some(77));
        assert_eq!(got[4].legacy_pid(), None);
        // A mount point that is not UTF-8 hides nothing after it.
        let mut bytes = b"60 23 0:60 / /tmp/\xff\xfe ro - tmpfs none rw\n".to_vec();
        bytes.extend_from_slice(text.as_bytes());
        let got = parse(&bytes);
        assert_eq!(got.len(), 6);
        assert_eq!(
            got[0].mountpoint.as_os_str().as_encoded_bytes(),
            b"/tmp/\xff\xfe"
        );
        assert_eq!(got[2].legacy_pid(), Some(4242));
    }

    #[test]
    fn unescape_table() {
        for (input, want) in [
            ("a\\040b", "a b"),
            ("a\\011b", "a\tb"),
            ("a\\\\b", "a\\\\b"),
            ("\\04", "\\04"),
            ("x\\", "x\\"),
        ] {
            assert_eq!(unescape(input.as_bytes()), want.as_bytes(), "{input}");
        }
    }
}
