//! The permission chain of a path, taken from one walk through held fds.
//!
//! What a blob shows through the mount is narrowed by every directory one
//! must search to reach it (see [`reachable_mode`]). Those directories are
//! the ones actually walked: [`walk`] resolves a path one component at a
//! time, each opened `O_PATH | O_NOFOLLOW` beneath the fd of the one before,
//! `fstat`ed and its ACL read through that same fd, and follows symlinks
//! itself (at most [`MAX_HOPS`]), so a symlinked blob is narrowed by the
//! directories above the file it names, and a path re-pointed by another
//! user between two resolutions cannot lend one object's bits to another:
//! there is only one resolution, and what it ends on is what is opened.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Symlinks followed in one walk at most, as the kernel's limit.
pub(crate) const MAX_HOPS: usize = 40;

/// Why a file of a source was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Nothing has that name.
    #[error("does not exist")]
    Missing,
    /// The name resolves outside the source (a symlink leaving it), or through
    /// a symlink where symlinks cannot be followed safely.
    #[error("a symbolic link leads outside the source")]
    Escapes,
    /// It exists but is not a regular file.
    #[error("is a {0}, not a regular file")]
    NotRegular(&'static str),
    /// The source resolves into an ocimux mount (this one or another).
    #[error(
        "is inside an ocimux mount ({0}); a mount cannot serve its own or another mount's files"
    )]
    OcimuxMount(String),
    /// Any other failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Search permission of one directory on the way to a file.
/// `mode` is the directory's mode with its ACL folded in (see `acl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DirPerm {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mode: u32,
    /// Who besides its owner may rename or replace what is in it: none in a
    /// sticky directory (there only an entry's owner may, and that owner is
    /// counted where the entry is used).
    pub(crate) writers: crate::files::acl::Writers,
    /// Someone other than root and the mounting user could replace what is
    /// in it: its owner is another user, or others may write it (and it is
    /// not sticky).
    pub(crate) shared: bool,
}

impl DirPerm {
    /// The permission of the directory `fd` (an `O_PATH` fd will do), ACL
    /// included; a directory whose ACL cannot be read grants others nothing
    /// and counts as writable by anyone.
    pub(crate) fn of(fd: BorrowedFd<'_>, st: &libc::stat) -> Self {
        let (mode, writers) = crate::files::acl::of_file(fd, st.st_mode);
        let writers = match st.st_mode & libc::S_ISVTX != 0 {
            true => crate::files::acl::Writers::default(),
            false => writers,
        };
        DirPerm {
            uid: st.st_uid,
            gid: st.st_gid,
            mode,
            writers,
            shared: !trusted_owner(st.st_uid) || writers.group || writers.anyone,
        }
    }
}

/// Who could have decided what a path names: the owners of the symlinks
/// followed and of what it ends on, and the owner of, and whoever else may
/// write, each directory a name of it was looked up in. What a source
/// publishes must be readable by every one of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publishers {
    /// Users, each of whom must be able to read it.
    pub users: Vec<u32>,
    /// Groups whose every member must be able to read it.
    pub groups: Vec<u32>,
    /// Anyone could have: it must be readable by all.
    pub anyone: bool,
}

impl Publishers {
    /// Adds a user.
    pub fn add_user(&mut self, uid: u32) {
        if !self.users.contains(&uid) {
            self.users.push(uid);
        }
    }

    /// Adds the deciders of a directory a name was looked up in.
    pub(crate) fn add_dir(&mut self, dir: &DirPerm) {
        self.add_user(dir.uid);
        if dir.writers.group && !self.groups.contains(&dir.gid) {
            self.groups.push(dir.gid);
        }
        self.anyone |= dir.writers.anyone;
    }
}

/// Whether files of owner `uid` are as trusted as the mount itself: root's
/// or the mounting user's.
pub(crate) fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::getuid().as_raw()
}

/// The read bits a file of owner `uid`, group `gid` and mode `mode` may show,
/// given the directories one must search to reach it.
///
/// Per class of users (owner, group, other), a read bit survives only if every
/// directory grants search to every class such a user might fall in there
/// (a group member may own the directory or not, and so on). The answer never
/// grants more than the source; where group membership is unknowable it may
/// grant less. Root bypasses modes anyway.
pub(crate) fn reachable_mode(uid: u32, gid: u32, mode: u32, dirs: &[DirPerm]) -> u16 {
    const UX: u32 = 0o100;
    const GX: u32 = 0o010;
    const OX: u32 = 0o001;
    let mut bits = mode & 0o444;
    for d in dirs {
        let owner_ok = if d.uid == uid {
            d.mode & UX != 0
        } else {
            d.mode & GX != 0 && d.mode & OX != 0
        };
        let maybe_owner_of_dir = d.uid != uid; // someone other than the file owner owns d
        let group_ok = d.mode & GX != 0
            && (!maybe_owner_of_dir || d.mode & UX != 0)
            && (d.gid == gid || d.mode & OX != 0);
        let other_ok = d.mode & OX != 0
            && (!maybe_owner_of_dir || d.mode & UX != 0)
            && (d.gid == gid || d.mode & GX != 0);
        if !owner_ok {
            bits &= !0o400;
        }
        if !group_ok {
            bits &= !0o040;
        }
        if !other_ok {
            bits &= !0o004;
        }
    }
    // Masked with 0o444 above, so it fits.
    u16::try_from(bits).unwrap_or(0)
}

/// Where a walk starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start<'a> {
    /// At `/`: a path from the command line (made absolute first).
    Root,
    /// Beneath a source's root, never leaving it: `..` above it, or an
    /// absolute symlink, is [`OpenError::Escapes`]. `above` is the chain
    /// down to and including the root.
    Beneath(BorrowedFd<'a>, &'a [DirPerm]),
}

/// What a walk ended on.
#[derive(Debug)]
pub(crate) struct Walked {
    /// The object, opened `O_PATH` (no open side effects).
    pub(crate) fd: OwnedFd,
    /// Its `fstat`.
    pub(crate) st: libc::stat,
    /// The directories searched to reach it, from the start on; for a
    /// directory, itself included last.
    pub(crate) chain: Vec<DirPerm>,
    /// Its path as walked (for messages and watches).
    pub(crate) path: PathBuf,
    /// The owners of the symlinks followed, in order: each had a say in
    /// what the path names.
    pub(crate) link_owners: Vec<u32>,
    /// The directories a name was looked up in: their owners and writers
    /// chose what the path names.
    pub(crate) deciders: Publishers,
}

fn fstat(fd: BorrowedFd<'_>) -> Result<libc::stat, OpenError> {
    nix::sys::stat::fstat(fd).map_err(|e| OpenError::Io(e.into()))
}

fn is(st: &libc::stat, kind: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == kind
}

fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_owned()),
        Component::ParentDir => Some(OsString::from("..")),
        _ => None,
    })
}

/// Resolves `path` from `start`, following symlinks itself; see the module
/// header. Missing components are [`OpenError::Missing`].
pub(crate) fn walk(start: Start<'_>, path: &Path) -> Result<Walked, OpenError> {
    let mut walker = Walker::new(start, path)?;
    while let Some(name) = walker.todo.pop_front() {
        walker.step(name)?;
    }
    walker.finish()
}

/// A walk in progress: the base it started from, the directories entered
/// under it, and the names left to resolve.
struct Walker {
    /// The start: `/`, or the root walked beneath.
    base_fd: OwnedFd,
    /// The base's chain (`/` alone, or the chain above the root).
    base_chain: Vec<DirPerm>,
    /// Beneath a root: `..` above it and absolute symlinks escape.
    beneath: bool,
    /// The path as walked.
    shown: PathBuf,
    /// The names left, symlink targets spliced in.
    todo: VecDeque<OsString>,
    /// The directories entered under the base.
    stack: Vec<(OwnedFd, DirPerm)>,
    /// Symlinks followed so far.
    hops: usize,
    link_owners: Vec<u32>,
    deciders: Publishers,
    /// The last name resolved, not yet known to be a directory.
    last: Option<(OwnedFd, libc::stat)>,
}

impl Walker {
    fn new(start: Start<'_>, path: &Path) -> Result<Walker, OpenError> {
        let (base_fd, base_chain, shown) = match start {
            Start::Root => {
                let fd = nix::fcntl::open(
                    "/",
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| OpenError::Io(e.into()))?;
                let st = fstat(fd.as_fd())?;
                let perm = DirPerm::of(fd.as_fd(), &st);
                (fd, vec![perm], PathBuf::from("/"))
            }
            Start::Beneath(root, above) => (
                root.try_clone_to_owned().map_err(OpenError::Io)?,
                above.to_vec(),
                PathBuf::new(),
            ),
        };
        Ok(Walker {
            base_fd,
            base_chain,
            beneath: matches!(start, Start::Beneath(..)),
            shown,
            todo: components(path).collect(),
            stack: Vec::new(),
            hops: 0,
            link_owners: Vec::new(),
            deciders: Publishers::default(),
            last: None,
        })
    }

    /// Resolves one name: `..`, a symlink (its target spliced in) or an
    /// entry, in the directory reached so far.
    fn step(&mut self, name: OsString) -> Result<(), OpenError> {
        if let Some((fd, st)) = self.last.take() {
            // Something that is not a directory, with components after it.
            if !is(&st, libc::S_IFDIR) {
                return Err(OpenError::Missing);
            }
            let perm = DirPerm::of(fd.as_fd(), &st);
            self.stack.push((fd, perm));
        }
        if name == ".." {
            if self.stack.pop().is_none() && self.beneath {
                return Err(OpenError::Escapes);
            }
            self.shown.pop();
            return Ok(());
        }
        let (fd, st) = self.look_up(&name)?;
        if is(&st, libc::S_IFLNK) {
            return self.follow(fd.as_fd(), &st);
        }
        self.shown.push(&name);
        self.last = Some((fd, st));
        Ok(())
    }

    /// Opens `name` (not following it) in the directory reached so far,
    /// whose owner and writers thereby decide what the path names.
    fn look_up(&mut self, name: &OsString) -> Result<(OwnedFd, libc::stat), OpenError> {
        let at = self
            .stack
            .last()
            .map_or(self.base_fd.as_fd(), |(fd, _)| fd.as_fd());
        match self
            .stack
            .last()
            .map(|(_, perm)| perm)
            .or(self.base_chain.last())
        {
            Some(perm) => self.deciders.add_dir(perm),
            // Beneath a root whose chain was not given: anyone, to be safe.
            None => self.deciders.anyone = true,
        }
        let fd = nix::fcntl::openat(
            at,
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => OpenError::Missing,
            e => OpenError::Io(e.into()),
        })?;
        let st = fstat(fd.as_fd())?;
        Ok((fd, st))
    }

    /// Follows the symlink `link`: its owner had a say; its target's names
    /// come next (an absolute one restarts at `/`, or escapes a root).
    fn follow(&mut self, link: BorrowedFd<'_>, st: &libc::stat) -> Result<(), OpenError> {
        self.link_owners.push(st.st_uid);
        self.hops += 1;
        if self.hops > MAX_HOPS {
            return Err(OpenError::Io(std::io::Error::from_raw_os_error(
                libc::ELOOP,
            )));
        }
        let target = nix::fcntl::readlinkat(link, "").map_err(|e| OpenError::Io(e.into()))?;
        let target = PathBuf::from(target);
        if target.is_absolute() {
            if self.beneath {
                return Err(OpenError::Escapes);
            }
            self.stack.clear();
            self.shown = PathBuf::from("/");
        }
        let mut ahead: VecDeque<OsString> = components(&target).collect();
        ahead.extend(self.todo.drain(..));
        self.todo = ahead;
        Ok(())
    }

    /// What the path named, with the chain of directories above it (and
    /// itself, last, when it is a directory).
    fn finish(mut self) -> Result<Walked, OpenError> {
        let mut chain = self.base_chain;
        chain.extend(self.stack.iter().map(|(_, perm)| *perm));
        let (fd, st) = match self.last {
            Some(found) => found,
            // The path named the start itself (`/`, or `.` beneath a root).
            None => match self.stack.pop() {
                Some((fd, _)) => {
                    chain.pop();
                    let st = fstat(fd.as_fd())?;
                    (fd, st)
                }
                None if self.beneath => return Err(OpenError::NotRegular("directory")),
                None => {
                    let st = fstat(self.base_fd.as_fd())?;
                    chain.clear();
                    (self.base_fd, st)
                }
            },
        };
        if is(&st, libc::S_IFDIR) {
            chain.push(DirPerm::of(fd.as_fd(), &st));
        }
        Ok(Walked {
            fd,
            st,
            chain,
            path: self.shown,
            link_owners: self.link_owners,
            deciders: self.deciders,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn reachable_mode_table() {
        let d = |uid, gid, mode| DirPerm {
            uid,
            gid,
            mode,
            writers: crate::files::acl::Writers::default(),
            shared: false,
        };
        // file (uid, gid, mode), dirs, shown mode
        let cases: &[((u32, u32, u32), &[DirPerm], u16)] = &[
            ((1, 1, 0o644), &[d(0, 0, 0o755)], 0o444),
            ((1, 1, 0o600), &[d(0, 0, 0o755)], 0o400),
            ((1, 1, 0o777), &[d(0, 0, 0o755)], 0o444),
            ((1, 1, 0o044), &[d(0, 0, 0o755)], 0o044),
            // A private directory of the owner hides everything from the rest.
            ((1, 1, 0o644), &[d(0, 0, 0o755), d(1, 1, 0o700)], 0o400),
            // Group may search, others not.
            ((1, 1, 0o644), &[d(1, 1, 0o750)], 0o440),
            // Directory of another group, searchable by its group only: no
            // one is known to be in it.
            ((1, 1, 0o644), &[d(1, 2, 0o710)], 0o400),
            // Directory of another owner with no search for others.
            ((1, 1, 0o644), &[d(2, 2, 0o770)], 0o000),
            ((1, 1, 0o644), &[d(2, 2, 0o711)], 0o444),
        ];
        for ((uid, gid, mode), dirs, want) in cases {
            assert_eq!(
                reachable_mode(*uid, *gid, *mode, dirs),
                *want,
                "{uid}:{gid} {mode:o} {dirs:?}"
            );
        }
    }

    #[test]
    fn a_walk_takes_the_chain_of_the_target_not_of_the_link() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        std::fs::create_dir_all(t.join("private/real")).unwrap();
        std::fs::create_dir_all(t.join("public")).unwrap();
        std::fs::write(t.join("private/real/f"), b"x").unwrap();
        chmod(&t.join("private"), 0o700);
        chmod(&t.join("public"), 0o755);
        symlink(t.join("private/real"), t.join("public/link")).unwrap();
        symlink("../private/real/f", t.join("public/rel")).unwrap();
        for via in [
            "public/link/f",
            "public/rel",
            "private/real/f",
            "public/../private/real/f",
        ] {
            let w = walk(Start::Root, &t.join(via)).unwrap();
            assert!(is(&w.st, libc::S_IFREG), "{via}");
            assert_eq!(w.path, t.join("private/real/f"), "{via}");
            // The 0700 directory is on the chain, whatever the way in.
            assert!(
                w.chain.iter().any(|d| d.mode & 0o777 == 0o700),
                "{via}: {:?}",
                w.chain
            );
        }
        // Beneath a root: `..` above it and absolute links escape.
        let root = walk(Start::Root, &t.join("public")).unwrap();
        let above = root.chain.clone();
        let beneath = Start::Beneath(root.fd.as_fd(), &above);
        assert!(matches!(
            walk(beneath, Path::new("../private/real/f")),
            Err(OpenError::Escapes)
        ));
        assert!(matches!(
            walk(beneath, Path::new("link/f")),
            Err(OpenError::Escapes)
        ));
        assert!(matches!(
            walk(beneath, Path::new("rel")),
            Err(OpenError::Escapes)
        ));
        assert!(matches!(
            walk(beneath, Path::new("none")),
            Err(OpenError::Missing)
        ));
        // A loop ends.
        symlink("loop", t.join("public/loop")).unwrap();
        assert!(walk(Start::Root, &t.join("public/loop")).is_err());
    }
}
