//! Opening a source's files confined to the source: the one place where ocimux
//! turns a path into an open file.
//!
//! A source's root is resolved once (following a `…-latest-oci` symlink, which
//! is how Yocto names the current build) and held as an `O_PATH` directory fd,
//! [`SourceDir`]. Every file under it is opened relative to that fd with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: a symlink that stays
//! inside the source is followed, one that leaves it fails. Where the kernel has
//! no openat2 (before 5.6) each component is opened with `O_NOFOLLOW`, so no
//! symlink is followed at all.
//!
//! Nothing is ever opened blocking: files are opened `O_NONBLOCK` and then
//! `fstat`ed, and only regular files are handed out, so a FIFO, socket or
//! device costs one open and a clear error, never a hang. A path given on the
//! command line is first opened `O_PATH` (no open side effects at all) and only
//! reopened for reading once it is known to be a directory or regular file.
//!
//! What a file is, [`FileInfo`], travels with it: its identity ([`FileId`],
//! which changes when the file is rewritten or replaced) and who may read it
//! ([`Access`], the source's owner, group and read bits, narrowed by the
//! directories above it).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::files::chain::{DirPerm, Publishers, Start, reachable_mode, trusted_owner, walk};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};

pub use crate::files::chain::OpenError;

/// What must stay the same for a file to keep the bytes it had: device,
/// inode, size, and modification and change times (nanoseconds). A rewrite in
/// place changes the size or times (restoring the mtime afterwards changes
/// the ctime), a replacement the inode. Compare with [`FileId::holds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i64,
    /// No name links to the file any more (it was deleted or renamed over).
    pub unlinked: bool,
}

/// Who may read a file through the mount: the source file's owner and group,
/// and read bits (never more than `0444`) that grant no class of users more
/// than the source does, directories above the file included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Access {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Read bits, a subset of `0o444`.
    pub mode: u16,
    /// Whether the kernel may serve it directly (passthrough), where an
    /// in-place rewrite would reach readers unchecked: only while the file's
    /// owner is root or the mounting user, nobody else may write it, and no
    /// directory above it could be changed by anyone else. Otherwise reads go
    /// through the daemon, which checks the file's identity on every read.
    pub passthrough: bool,
}

/// An opened file's identity and access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// Identity, for detecting rewrites.
    pub id: FileId,
    /// Who may read it.
    pub access: Access,
}

impl FileId {
    /// Whether `now`, read from the file later, shows the same bytes as this
    /// recorded identity. Unlinking a file changes its ctime, and a file
    /// renamed over (as every atomic rebuild does) must go on serving the
    /// snapshots and open files that hold it; once unlinked, only an fd
    /// already open can change it, and that still shows in size and mtime.
    pub fn holds(&self, now: &FileId) -> bool {
        (self.dev, self.ino, self.size, self.mtime_ns) == (now.dev, now.ino, now.size, now.mtime_ns)
            && (now.unlinked || self.ctime_ns == now.ctime_ns)
    }

    /// The identity of an open file.
    pub fn of(file: &File) -> io::Result<Self> {
        Ok(Self::from_meta(&file.metadata()?))
    }

    fn from_meta(m: &std::fs::Metadata) -> Self {
        // Exact from 1677 to 2262; outside, saturated (the ctime, which only
        // the kernel sets, still tells a rewrite).
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
            unlinked: m.nlink() == 0,
        }
    }
}

/// What a command-line path resolved to.
#[derive(Debug)]
pub enum Resolved {
    /// A directory, held open.
    Dir(SourceDir),
    /// A regular file, opened for reading, and who had a say in what it is
    /// (its owner and the owners of the symlinks followed).
    File(File, FileInfo, Publishers),
}

/// A source's root directory, held open for the life of a snapshot.
#[derive(Debug)]
pub struct SourceDir {
    fd: OwnedFd,
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// Search permissions from `/` down to and including the root.
    above: Vec<DirPerm>,
    /// Who had a say in what this source is (see [`Publishers`]).
    publishers: Publishers,
    /// [`SourceDir::dir_of`]'s answers, per directory under the root.
    dir_cache: Mutex<HashMap<String, (Arc<OwnedFd>, Vec<DirPerm>)>>,
    /// Directories under the root that a symlinked blob's target is in
    /// (beyond `blobs/<alg>`): their permissions narrow what it shows, so
    /// they are watched as long as a snapshot of this source is served.
    target_dirs: Mutex<std::collections::BTreeSet<String>>,
}

/// The same directory, with the same deciders: a snapshot whose publishers
/// changed is a new snapshot (they are re-checked at every one).
impl PartialEq for SourceDir {
    fn eq(&self, other: &Self) -> bool {
        (self.dev, self.ino, &self.path, &self.publishers)
            == (other.dev, other.ino, &other.path, &other.publishers)
    }
}

impl Eq for SourceDir {}

/// Set once openat2 answered ENOSYS: use the `O_NOFOLLOW` walk from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

const READ_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

/// Resolves a path given on the command line (symlinks followed): a
/// directory is held open as a [`SourceDir`], a regular file is opened for
/// reading; anything else, or anything inside an ocimux mount, is refused.
pub fn resolve(path: &Path) -> Result<Resolved, OpenError> {
    resolve_checked(path, true)
}

/// [`resolve`], but a path on an ocimux mount is accepted: for reading a
/// mount from another process (`ocimux verify`), never for serving.
pub fn resolve_on_any_mount(path: &Path) -> Result<Resolved, OpenError> {
    resolve_checked(path, false)
}

fn resolve_checked(path: &Path, refuse_ocimux: bool) -> Result<Resolved, OpenError> {
    let abs = std::path::absolute(path).map_err(OpenError::Io)?;
    // One walk: the directories it went through are the ones whose bits
    // narrow what the mount shows, and what it ends on is what is served.
    let walked = walk(Start::Root, &abs)?;
    let mut publishers = walked.deciders.clone();
    publishers.add_user(walked.st.st_uid);
    for uid in &walked.link_owners {
        publishers.add_user(*uid);
    }
    let probe = File::from(walked.fd);
    let meta = probe.metadata()?;
    if refuse_ocimux {
        refuse_ocimux_mount(probe.as_fd(), &meta)?;
    }
    if meta.is_dir() {
        return Ok(Resolved::Dir(SourceDir {
            fd: probe.into(),
            path: walked.path,
            dev: meta.dev(),
            ino: meta.ino(),
            above: walked.chain,
            publishers,
            dir_cache: Mutex::default(),
            target_dirs: Mutex::default(),
        }));
    }
    if !meta.is_file() {
        return Err(OpenError::NotRegular(type_name(meta.mode())));
    }
    // Reopen the very inode for reading: through /proc/self/fd it is the
    // same file whatever has happened to the path meanwhile.
    let file = reopen(probe.as_fd())?;
    let info = info_of(&file, &walked.chain)?;
    Ok(Resolved::File(file, info, publishers))
}

/// A small regular file `name` inside directory `dir`, read whole (at most
/// `cap` bytes): opened beneath `dir` (a symlink may lead elsewhere in it,
/// never out of it), non-blocking, regular files only. For what a build
/// writes beside its images (`testdata.json`), read by name each scan.
pub fn read_beside(dir: &Path, name: &str, cap: u64) -> Result<Vec<u8>, OpenError> {
    if name.contains('/') || matches!(name, "" | "." | "..") {
        return Err(OpenError::Escapes);
    }
    let dir = nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| not_found_or(e.into()))?;
    let how = OpenHow::new()
        .flags(READ_FLAGS)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match nix::fcntl::openat2(dir.as_fd(), name, how) {
        Ok(fd) => fd,
        // No openat2: links are not followed at all.
        Err(nix::errno::Errno::ENOSYS) => nix::fcntl::openat(
            dir.as_fd(),
            name,
            READ_FLAGS | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(walk_error)?,
        Err(nix::errno::Errno::EXDEV | nix::errno::Errno::ELOOP) => {
            return Err(OpenError::Escapes);
        }
        Err(e) => return Err(not_found_or(e.into())),
    };
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(OpenError::NotRegular(type_name(meta.mode())));
    }
    if meta.len() > cap {
        return Err(OpenError::Io(io::Error::other(format!(
            "larger than {cap} bytes"
        ))));
    }
    Ok(crate::files::readat::read_up_to(&file, 0, cap, meta.len())?)
}

/// The identity and access of an opened file reached through `dirs`.
fn info_of(file: &File, dirs: &[DirPerm]) -> Result<FileInfo, OpenError> {
    let meta = file.metadata()?;
    let (mode, writers) = crate::files::acl::of_file(file.as_fd(), meta.mode());
    let others_write = writers.group || writers.anyone;
    Ok(FileInfo {
        id: FileId::from_meta(&meta),
        access: Access {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: reachable_mode(meta.uid(), meta.gid(), mode, dirs),
            passthrough: trusted_owner(meta.uid())
                && !others_write
                && !dirs.iter().any(|d| d.shared),
        },
    })
}

impl SourceDir {
    /// The root as resolved when it was opened (for messages and watches).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Who had a say in what this source is, as seen when it was opened:
    /// the root directory's owner, and the owner of every symlink followed
    /// to reach it (a build user's `…-latest-oci` link to a layout of
    /// root's is the build user's choice, not root's).
    pub fn publishers(&self) -> &Publishers {
        &self.publishers
    }

    /// Opens `rel` (a `/`-separated path made by ocimux, never with `..`)
    /// for reading, confined beneath this directory; only a regular file is
    /// returned, with its identity. This is the request path: one openat2 and
    /// one fstat.
    pub fn open(&self, rel: &str) -> Result<(File, FileId), OpenError> {
        let (file, meta) = self.open_regular(rel)?;
        Ok((file, FileId::from_meta(&meta)))
    }

    /// The confined open and its one `fstat`.
    fn open_regular(&self, rel: &str) -> Result<(File, std::fs::Metadata), OpenError> {
        let file = if NO_OPENAT2.load(Ordering::Relaxed) {
            self.open_walk(rel)?
        } else {
            let how = OpenHow::new()
                .flags(READ_FLAGS)
                .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            match nix::fcntl::openat2(self.fd.as_fd(), rel, how) {
                Ok(fd) => File::from(fd),
                Err(nix::errno::Errno::ENOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    log::info!(
                        "openat2 is not available: symbolic links in sources are not followed"
                    );
                    self.open_walk(rel)?
                }
                Err(nix::errno::Errno::EXDEV | nix::errno::Errno::ELOOP) => {
                    return Err(OpenError::Escapes);
                }
                Err(e) => return Err(not_found_or(e.into())),
            }
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(OpenError::NotRegular(type_name(meta.mode())));
        }
        Ok((file, meta))
    }

    /// Opens `rel` confined as [`SourceDir::open`] does, and also works out
    /// who may read it (for building a snapshot, not for the request path):
    /// from one walk beneath the root, so the directories that narrow it are
    /// the ones above the file itself, a symlink's target included.
    pub fn open_with_access(&self, rel: &str) -> Result<(File, FileInfo), OpenError> {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let (dir_fd, dirs) = self.dir_of(parent)?;
        let direct = nix::fcntl::openat(
            dir_fd.as_fd(),
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        );
        let probe = match direct {
            Ok(fd) => File::from(fd),
            Err(nix::errno::Errno::ENOENT) => return Err(OpenError::Missing),
            Err(e) => return Err(OpenError::Io(e.into())),
        };
        let meta = probe.metadata()?;
        let (file, dirs) = if meta.is_symlink() {
            // Walk the whole way, so the chain is the target's.
            let w = walk(Start::Beneath(self.fd.as_fd(), &self.above), Path::new(rel))?;
            self.note_target_dirs(&w.path);
            let target = File::from(w.fd);
            let meta = target.metadata()?;
            if !meta.is_file() {
                return Err(OpenError::NotRegular(type_name(meta.mode())));
            }
            (reopen(target.as_fd())?, w.chain)
        } else if meta.is_file() {
            // Opened for reading beneath the same held directory, and
            // checked to be the very file the O_PATH open found.
            let file = File::from(
                nix::fcntl::openat(
                    dir_fd.as_fd(),
                    name,
                    READ_FLAGS | OFlag::O_NOFOLLOW,
                    Mode::empty(),
                )
                .map_err(|e| not_found_or(e.into()))?,
            );
            let now = file.metadata()?;
            if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
                return Err(OpenError::Io(io::Error::other(
                    "replaced while it was opened",
                )));
            }
            (file, dirs)
        } else {
            return Err(OpenError::NotRegular(type_name(meta.mode())));
        };
        let info = info_of(&file, &dirs)?;
        Ok((file, info))
    }

    /// Opens `rel` one component at a time without following any symlink,
    /// for kernels without openat2.
    pub(crate) fn open_walk(&self, rel: &str) -> Result<File, OpenError> {
        let parts: Vec<&str> = rel.split('/').collect();
        let Some((last, dirs)) = parts.split_last() else {
            return Err(OpenError::Missing);
        };
        if parts.iter().any(|p| matches!(*p, "" | "." | "..")) {
            return Err(OpenError::Escapes);
        }
        let mut cur: Option<OwnedFd> = None;
        for dir in dirs {
            let at = cur.as_ref().map_or(self.fd.as_fd(), AsFd::as_fd);
            let next = nix::fcntl::openat(
                at,
                *dir,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(walk_error)?;
            cur = Some(next);
        }
        let at = cur.as_ref().map_or(self.fd.as_fd(), AsFd::as_fd);
        let fd = nix::fcntl::openat(at, *last, READ_FLAGS | OFlag::O_NOFOLLOW, Mode::empty())
            .map_err(walk_error)?;
        Ok(File::from(fd))
    }

    /// Whether something still has the name `rel` (no symlink followed).
    pub fn exists(&self, rel: &str) -> bool {
        nix::sys::stat::fstatat(
            self.fd.as_fd(),
            rel,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok()
    }

    /// Records the directories (under the root) that `target` (a path as
    /// walked, relative to the root) is in, each prefix of its parent.
    fn note_target_dirs(&self, target: &Path) {
        let Ok(mut dirs) = self.target_dirs.lock() else {
            return;
        };
        for dir in target.ancestors().skip(1) {
            let dir = dir.to_string_lossy();
            if !dir.is_empty() {
                dirs.insert(dir.into_owned());
            }
        }
    }

    /// The directories symlinked blobs' targets are in, as absolute paths.
    pub fn target_dirs(&self) -> Vec<PathBuf> {
        let dirs = self
            .target_dirs
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        dirs.iter().map(|d| self.path.join(d)).collect()
    }

    /// Closes the directories [`SourceDir::dir_of`] kept (once the snapshot
    /// is built; a later call walks again).
    pub fn forget_dirs(&self) {
        if let Ok(mut cache) = self.dir_cache.lock() {
            cache.clear();
        }
    }

    /// The directory `parent` (a path under the root, `""` for the root),
    /// held open, and the directories searched to reach it, itself included;
    /// walked once per directory and snapshot (every blob of a source lives
    /// in one or two of them).
    fn dir_of(&self, parent: &str) -> Result<(Arc<OwnedFd>, Vec<DirPerm>), OpenError> {
        if let Some(hit) = self
            .dir_cache
            .lock()
            .ok()
            .and_then(|c| c.get(parent).cloned())
        {
            return Ok(hit);
        }
        let found = match parent {
            "" => (Arc::new(self.fd.try_clone()?), self.above.clone()),
            p => {
                let w = walk(Start::Beneath(self.fd.as_fd(), &self.above), Path::new(p))?;
                if w.st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    return Err(OpenError::Missing);
                }
                (Arc::new(w.fd), w.chain)
            }
        };
        if let Ok(mut cache) = self.dir_cache.lock() {
            cache.insert(parent.to_owned(), found.clone());
        }
        Ok(found)
    }
}

fn walk_error(e: nix::errno::Errno) -> OpenError {
    match e {
        // O_NOFOLLOW on a symlink: ELOOP; O_DIRECTORY|O_NOFOLLOW on one: ENOTDIR.
        nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => OpenError::Escapes,
        e => not_found_or(e.into()),
    }
}

fn not_found_or(e: io::Error) -> OpenError {
    if e.kind() == io::ErrorKind::NotFound {
        OpenError::Missing
    } else {
        OpenError::Io(e)
    }
}

/// Reopens an `O_PATH` fd for reading, non-blocking.
pub(crate) fn reopen(fd: BorrowedFd<'_>) -> Result<File, OpenError> {
    use std::os::fd::AsRawFd;
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let file = nix::fcntl::open(proc_path.as_str(), READ_FLAGS, Mode::empty())
        .map_err(|e| OpenError::Io(e.into()))?;
    Ok(File::from(file))
}

/// The name of a file type, for messages.
fn type_name(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symbolic link",
        _ => "special file",
    }
}

/// FUSE's filesystem magic, as `statfs` reports it.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Refuses a path on an ocimux mount: serving a mount from itself deadlocks
/// it, and from another one stacks daemons for no gain. Checked by the
/// filesystem type of the resolved path, then the mount's entry.
fn refuse_ocimux_mount(fd: BorrowedFd<'_>, meta: &std::fs::Metadata) -> Result<(), OpenError> {
    let st = nix::sys::statfs::fstatfs(fd).map_err(|e| OpenError::Io(e.into()))?;
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between libcs
    if st.filesystem_type().0 as i64 != FUSE_SUPER_MAGIC {
        return Ok(());
    }
    let dev = format!(
        "{}:{}",
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev())
    );
    match crate::files::mountinfo::all()?
        .iter()
        .find(|e| e.dev == dev)
    {
        Some(e) if e.is_ocimux() => Err(OpenError::OcimuxMount(e.source.clone())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn dir_of(path: &Path) -> SourceDir {
        match resolve(path).unwrap() {
            Resolved::Dir(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn confined_open_table() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("src");
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        std::fs::write(root.join("blobs/sha256/real"), b"bytes").unwrap();
        std::fs::write(tmp.path().join("outside"), b"secret").unwrap();
        symlink("real", root.join("blobs/sha256/inside")).unwrap();
        symlink(
            "../../blobs/sha256/real",
            root.join("blobs/sha256/up-and-in"),
        )
        .unwrap();
        symlink("../../../outside", root.join("blobs/sha256/up-and-out")).unwrap();
        symlink("/etc/passwd", root.join("blobs/sha256/absolute")).unwrap();
        symlink("/proc/self/exe", root.join("blobs/sha256/magic")).unwrap();
        symlink("/dev/zero", root.join("blobs/sha256/device")).unwrap();
        nix::unistd::mkfifo(
            &root.join("blobs/sha256/fifo"),
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        std::fs::create_dir(root.join("blobs/sha256/dir")).unwrap();
        let d = dir_of(&root);
        // name, Ok(bytes) or Err(message fragment)
        let cases: &[(&str, Result<&[u8], &str>)] = &[
            ("blobs/sha256/real", Ok(b"bytes")),
            ("blobs/sha256/inside", Ok(b"bytes")),
            ("blobs/sha256/up-and-in", Ok(b"bytes")),
            ("blobs/sha256/up-and-out", Err("outside the source")),
            ("blobs/sha256/absolute", Err("outside the source")),
            ("blobs/sha256/magic", Err("outside the source")),
            ("blobs/sha256/device", Err("outside the source")),
            ("blobs/sha256/fifo", Err("is a FIFO")),
            ("blobs/sha256/dir", Err("is a directory")),
            ("blobs/sha256/none", Err("does not exist")),
            ("../outside", Err("outside the source")),
        ];
        for (rel, want) in cases {
            let started = std::time::Instant::now();
            let got = d.open(rel).map(|(f, _)| {
                let mut v = Vec::new();
                io::Read::read_to_end(&mut &f, &mut v).unwrap();
                v
            });
            assert!(
                started.elapsed().as_secs() < 2,
                "{rel} took {:?}",
                started.elapsed()
            );
            match (got, want) {
                (Ok(bytes), Ok(w)) => assert_eq!(bytes, *w, "{rel}"),
                (Err(e), Err(frag)) => assert!(e.to_string().contains(frag), "{rel}: {e}"),
                (got, want) => panic!("{rel}: got {got:?}, want {want:?}"),
            }
        }
        // The walk without openat2 follows no symlink at all.
        for (rel, ok) in [
            ("blobs/sha256/real", true),
            ("blobs/sha256/inside", false),
            ("blobs/sha256/up-and-out", false),
            ("blobs/sha256/fifo", true), // opened non-blocking; refused by fstat later
            ("../outside", false),
        ] {
            assert_eq!(d.open_walk(rel).is_ok(), ok, "{rel}");
        }
    }

    #[test]
    fn resolve_refuses_what_is_neither_dir_nor_file() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
        let started = std::time::Instant::now();
        let err = resolve(&fifo).unwrap_err().to_string();
        assert!(err.contains("is a FIFO"), "{err}");
        assert!(started.elapsed().as_secs() < 2);
        assert!(
            resolve(Path::new("/dev/null"))
                .unwrap_err()
                .to_string()
                .contains("character device")
        );
        assert!(matches!(
            resolve(&tmp.path().join("none")),
            Err(OpenError::Missing)
        ));
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        symlink(tmp.path().join("f"), tmp.path().join("link")).unwrap();
        assert!(matches!(
            resolve(&tmp.path().join("link")),
            Ok(Resolved::File(..))
        ));
    }

    #[test]
    fn identity_changes_with_a_rewrite_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("s")).unwrap();
        std::fs::write(tmp.path().join("s/f"), b"one").unwrap();
        let d = dir_of(&tmp.path().join("s"));
        let (f, before) = d.open("f").unwrap();
        std::fs::write(tmp.path().join("s/f"), b"two!").unwrap();
        assert_ne!(FileId::of(&f).unwrap(), before, "same inode, rewritten");
        let (_, after) = d.open("f").unwrap();
        assert_eq!((after.dev, after.ino), (before.dev, before.ino));
        assert_eq!(after.size, 4);
        assert!(!before.holds(&after));
        // Renamed over (unlinked): still the same bytes for whoever holds it.
        std::fs::write(tmp.path().join("s/g"), b"new").unwrap();
        std::fs::rename(tmp.path().join("s/g"), tmp.path().join("s/f")).unwrap();
        let later = FileId::of(&f).unwrap();
        assert!(later.unlinked && after.holds(&later), "{after:?} {later:?}");
        // Times restored after a rewrite of the same size: the ctime tells.
        std::fs::write(tmp.path().join("s/h"), b"one").unwrap();
        let (h, first) = d.open("h").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(tmp.path().join("s/h"), b"two").unwrap();
        let mtime = std::time::UNIX_EPOCH
            + std::time::Duration::from_nanos(u64::try_from(first.mtime_ns).unwrap());
        h.set_modified(mtime).unwrap();
        let now = FileId::of(&h).unwrap();
        assert_eq!((now.size, now.mtime_ns), (first.size, first.mtime_ns));
        assert!(!first.holds(&now));
    }

    #[test]
    fn access_of_an_opened_file_follows_its_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("s");
        std::fs::create_dir_all(root.join("blobs")).unwrap();
        std::fs::write(root.join("blobs/f"), b"x").unwrap();
        std::fs::set_permissions(tmp.path(), PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&root, PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::set_permissions(root.join("blobs/f"), PermissionsExt::from_mode(0o644)).unwrap();
        std::fs::set_permissions(root.join("blobs"), PermissionsExt::from_mode(0o700)).unwrap();
        // What the directories above the test's own (TMPDIR's parents, which
        // may be private) allow: a 0644 file right in the source's root.
        std::fs::write(root.join("f"), b"x").unwrap();
        std::fs::set_permissions(root.join("f"), PermissionsExt::from_mode(0o644)).unwrap();
        let (_, above) = dir_of(&root).open_with_access("f").unwrap();
        assert_eq!(above.access.mode & 0o400, 0o400);
        let (_, info) = dir_of(&root).open_with_access("blobs/f").unwrap();
        assert_eq!(info.access.mode, 0o400);
        std::fs::set_permissions(root.join("blobs"), PermissionsExt::from_mode(0o755)).unwrap();
        let (_, info) = dir_of(&root).open_with_access("blobs/f").unwrap();
        assert_eq!(info.access.mode, above.access.mode);
    }
}
