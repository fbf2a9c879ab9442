//! Who a blob is published for. HTTP has no Unix user and `serve` often
//! runs as root, so it never reads with its own privilege: a blob goes out
//! only if the owner of its source's root (the user who built it) could read
//! it — owner, group and other bits and ACLs, along every directory above the
//! file, as the mount computes them ([`crate::files::confine::Access`]) — and only
//! while the open file still shows that. Whoever else had a say in what the
//! source path names must be able to read it as well: the owners of the
//! symlinks followed, and the owner of and whoever may write each directory
//! a name of the path was looked up in ([`Publishers`]).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use crate::files::chain::Publishers;
use crate::files::confine::Access;
use crate::source::{Blob, Origin};

/// A user and the groups they are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    /// The user.
    pub uid: u32,
    /// Primary and supplementary groups.
    pub groups: Vec<u32>,
}

impl Reader {
    /// Whether this user may read a file of owner `uid`, group `gid` with
    /// read bits `mode` (only the first class that applies counts, as in the
    /// kernel: an owner denied by the owner bits is denied).
    pub fn may_read(&self, uid: u32, gid: u32, mode: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        if uid == self.uid {
            mode & 0o400 != 0
        } else if self.groups.contains(&gid) {
            mode & 0o040 != 0
        } else {
            mode & 0o004 != 0
        }
    }
}

/// Readers by uid, looked up once (the group database is read at most once
/// per owner per process; a changed membership needs a restart, as a login does).
#[derive(Debug, Default)]
pub struct Readers {
    known: Mutex<HashMap<u32, Reader>>,
}

/// Most owners remembered; more are looked up each time.
const MAX_READERS: usize = 256;

impl Readers {
    /// The reader `uid`: its groups from the user database; a uid with no
    /// entry is in no group.
    pub fn of(&self, uid: u32) -> Reader {
        if let Some(r) = lock(&self.known).get(&uid) {
            return r.clone();
        }
        let reader = lookup(uid);
        let mut known = lock(&self.known);
        if known.len() < MAX_READERS {
            known.insert(uid, reader.clone());
        }
        reader
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lookup(uid: u32) -> Reader {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten();
    let groups = match user {
        Some(u) => match std::ffi::CString::new(u.name.clone()) {
            Ok(name) => nix::unistd::getgrouplist(&name, u.gid)
                .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                .unwrap_or_else(|_| vec![u.gid.as_raw()]),
            Err(_) => vec![u.gid.as_raw()],
        },
        None => Vec::new(),
    };
    Reader { uid, groups }
}

/// Who had a say in the source a blob comes from (see [`Publishers`]):
/// each of them must be able to read a blob for it to be published.
pub fn publishers(blob: &Blob) -> &Publishers {
    match &blob.origin {
        Origin::File { dir, .. } => dir.publishers(),
        Origin::Range { archive, .. } => &archive.publishers,
    }
}

/// Whether every publisher may read a file of `uid`, `gid` and read bits
/// `mode`. A group's every member may: they read by the group bits if it is
/// the file's group, else by the group or other bits (they may be in the
/// file's group too), and by the owner bits if one owns it.
fn all_may_read(readers: &Readers, blob: &Blob, uid: u32, gid: u32, mode: u32) -> bool {
    who_may_not_read(readers, publishers(blob), uid, gid, mode).is_none()
}

/// The first publisher of `who` who may not read a file of `uid`, `gid`
/// and read bits `mode`, said for a message.
fn who_may_not_read(
    readers: &Readers,
    who: &Publishers,
    uid: u32,
    gid: u32,
    mode: u32,
) -> Option<String> {
    let all_bits = |need: u32| mode & need == need;
    if who.users.is_empty() {
        return Some("no owner is known".to_owned());
    }
    if let Some(u) = who
        .users
        .iter()
        .find(|p| !readers.of(**p).may_read(uid, gid, mode))
    {
        return Some(format!(
            "uid {u} (who owns its source, a symlink followed to it or a directory on its path) \
             may not read it"
        ));
    }
    if let Some(g) = who
        .groups
        .iter()
        .find(|g| !all_bits(if **g == gid { 0o440 } else { 0o444 }))
    {
        return Some(format!(
            "group {g} may write a directory on its path, and some of its members may not read it"
        ));
    }
    if who.anyone && !all_bits(0o444) {
        return Some(
            "anyone may write a directory on its path, and some users may not read it".into(),
        );
    }
    None
}

/// Why `blob`, as recorded, is not its publishers' to publish, said for a
/// message (`None`: it is theirs).
pub fn refusal(readers: &Readers, blob: &Blob) -> Option<String> {
    let Access { uid, gid, mode, .. } = blob.access;
    who_may_not_read(readers, publishers(blob), uid, gid, u32::from(mode))
}

/// Whether `blob`, as its snapshot recorded it, is its publishers' to publish.
pub fn recorded(readers: &Readers, blob: &Blob) -> bool {
    let Access { uid, gid, mode, .. } = blob.access;
    all_may_read(readers, blob, uid, gid, u32::from(mode))
}

/// Whether the open `file` still is: same owner and group as recorded, and
/// its mode and ACL now (within what the directories allowed then) still
/// let the source owner read it.
pub fn still(readers: &Readers, blob: &Blob, file: &File) -> bool {
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let Access { uid, gid, mode, .. } = blob.access;
    if (meta.uid(), meta.gid()) != (uid, gid) {
        return false;
    }
    let acl = match crate::files::acl::read(file.as_fd()) {
        Ok(acl) => acl,
        Err(_) => return false,
    };
    let now = crate::files::acl::effective_mode(meta.mode(), acl.as_deref());
    all_may_read(readers, blob, uid, gid, now & u32::from(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_read() {
        let builder = Reader {
            uid: 1000,
            groups: vec![1000, 27],
        };
        let root = Reader {
            uid: 0,
            groups: vec![0],
        };
        // (reader, file uid, file gid, mode, may read)
        let cases = [
            (&builder, 1000, 1000, 0o400, true),
            (&builder, 1000, 1000, 0o044, false), // owner class decides
            (&builder, 0, 27, 0o040, true),
            (&builder, 0, 0, 0o400, false), // root's own 0600
            (&builder, 0, 0, 0o004, true),
            (&builder, 0, 27, 0o404, false), // group class decides
            (&builder, 2000, 2000, 0o000, false),
            (&root, 2000, 2000, 0o000, true),
        ];
        for (reader, uid, gid, mode, want) in cases {
            assert_eq!(
                reader.may_read(uid, gid, mode),
                want,
                "{} reads {uid}:{gid} {mode:o}",
                reader.uid
            );
        }
    }

    #[test]
    fn unknown_users_are_in_no_group() {
        let r = Readers::default().of(3_999_999);
        assert_eq!(r.groups, Vec::<u32>::new());
        assert!(!r.may_read(1, 3_999_999, 0o040));
    }
}
