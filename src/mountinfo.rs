//! Finding an ocimux mount in `/proc/self/mountinfo`.
//!
//! The daemon mounts with source (`fsname`) `ocimux:PID` and type
//! `fuse.ocimux`, so `mount(8)` shows which process serves a mount and
//! `ocimux umount` can wait for exactly that process to exit.

use std::path::Path;

/// The filesystem types an ocimux mount shows: `fuse` when mounted directly by
/// root (fuser's mount(2) path sets no subtype), `fuse.ocimux` through fusermount.
pub const FSTYPES: [&str; 2] = ["fuse", "fuse.ocimux"];

/// One mount, as far as ocimux cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The device, `major:minor`.
    pub dev: String,
    /// The mount point (unescaped).
    pub mountpoint: String,
    /// The filesystem type.
    pub fstype: String,
    /// The source field.
    pub source: String,
}

impl MountEntry {
    /// The daemon's pid, for an ocimux mount.
    pub fn ocimux_pid(&self) -> Option<i32> {
        if !FSTYPES.contains(&self.fstype.as_str()) {
            return None;
        }
        self.source.strip_prefix("ocimux:")?.parse().ok()
    }
}

/// Parses mountinfo text; lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // id parent maj:min root mountpoint options [optional...] - fstype source superopts
    let (left, right) = line.split_once(" - ")?;
    let mut left = left.split(' ');
    let dev = left.nth(2)?;
    let mountpoint = left.nth(1)?;
    let mut right = right.split(' ');
    let fstype = right.next()?;
    let source = right.next()?;
    Some(MountEntry {
        dev: dev.to_owned(),
        mountpoint: unescape(mountpoint),
        fstype: unescape(fstype),
        source: unescape(source),
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space …).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
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
    String::from_utf8_lossy(&out).into_owned()
}

/// The last (topmost) mount at `mountpoint`, read from this process's view.
pub fn find(mountpoint: &Path) -> std::io::Result<Option<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = mountpoint.to_string_lossy();
    Ok(parse(&text)
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == want))
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
        let got = parse(text);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].mountpoint, "/mnt/parent");
        assert_eq!(got[0].dev, "98:0");
        assert_eq!(got[1].dev, "0:52");
        assert_eq!(got[0].ocimux_pid(), None);
        assert_eq!(got[1].mountpoint, "/tmp/a b");
        assert_eq!(got[1].ocimux_pid(), Some(4242));
        assert_eq!(got[2].ocimux_pid(), None, "another fs type is never ours");
        assert_eq!(got[3].ocimux_pid(), Some(77));
        assert_eq!(got[4].ocimux_pid(), None);
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
            assert_eq!(unescape(input), want, "{input}");
        }
    }
}
