//! Where an export is built before it is renamed into place: a private
//! directory beside OUT, `.NAME.ocimux-export-PID`, that proves it is ours.
//!
//! OUT's parent often belongs to someone else (a build user's deploy
//! directory, an export run as root), who may rename, swap or plant entries
//! in it at any time. So:
//! - the staging directory is made `0700` and held by an fd; everything
//!   inside is reached through `/proc/self/fd/N/…`, which names that very
//!   directory whatever its name in the parent becomes, and nobody else can
//!   change what is inside it;
//! - it holds a marker, `ocimux-export`, created `O_EXCL` with our pid in it:
//!   a leftover of a killed export is removed only if the directory and the
//!   marker are owned by the user removing it and the marker names the pid
//!   in the directory's name, all checked through fds;
//! - removal goes through the directory's fd (`unlinkat`, never a path
//!   resolved again), so a name swapped meanwhile is never followed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

/// The marker's name inside a staging directory.
const MARKER: &str = "ocimux-export";
/// What the staging directory holds: the layout directory or the archive.
const ITEM: &str = "out";
/// How deep a removal goes (an export is three levels deep).
const MAX_DEPTH: usize = 16;

/// A staging directory of this process, held open.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: OwnedFd,
    parent: OwnedFd,
    name: String,
}

fn prefix(out_name: &str) -> String {
    format!(".{out_name}.ocimux-export-")
}

fn marker_text(pid: u32) -> String {
    format!("ocimux export {pid}\n")
}

fn open_dir_at(at: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    nix::fcntl::openat(
        at,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

fn open_parent(parent: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

impl Staging {
    /// Makes `.OUT_NAME.ocimux-export-PID` in `parent`, `0700`, with its marker.
    pub(crate) fn create(parent: &Path, out_name: &str) -> io::Result<Staging> {
        let pid = std::process::id();
        let name = format!("{}{pid}", prefix(out_name));
        let parent = open_parent(parent)?;
        nix::sys::stat::mkdirat(parent.as_fd(), name.as_str(), Mode::S_IRWXU)?;
        let dir = open_dir_at(parent.as_fd(), &name)?;
        let staging = Staging { dir, parent, name };
        // Made by us a moment ago, unless someone swapped it in between.
        let meta = File::from(staging.dir.try_clone()?).metadata()?;
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(io::Error::other(
                "the staging directory was replaced while it was made",
            ));
        }
        let marker = nix::fcntl::openat(
            staging.dir.as_fd(),
            MARKER,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )?;
        File::from(marker).write_all(marker_text(pid).as_bytes())?;
        Ok(staging)
    }

    /// Where the layout directory or the archive is built, as a path that
    /// resolves to the held directory whatever happens to its name.
    pub(crate) fn item(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{ITEM}", self.dir.as_raw_fd()))
    }

    /// Renames the finished item to `out`: exchanged with an existing OUT in
    /// one step (the old one then lies in the staging directory, removed
    /// with it), else renamed without replacing anything.
    pub(crate) fn put_in_place(&self, out: &Path, replaces: bool) -> io::Result<()> {
        let flags = match replaces {
            true => RenameFlags::RENAME_EXCHANGE,
            false => RenameFlags::RENAME_NOREPLACE,
        };
        nix::fcntl::renameat2(self.dir.as_fd(), ITEM, nix::fcntl::AT_FDCWD, out, flags)
            .map_err(io::Error::from)
    }

    /// Empties the staging directory through its fd, then removes its name
    /// if that still names it (else the empty directory is left where
    /// someone moved it, and whatever took its name is not touched).
    pub(crate) fn remove(self) {
        if let Err(e) = remove_tree(self.dir.as_fd(), 0)
            .and_then(|()| unlink_if_same(self.parent.as_fd(), &self.name, self.dir.as_fd()))
        {
            log::warn!("removing the staging directory {:?}: {e}", self.name);
        }
    }
}

/// Removes the staging directories that killed exports next to OUT left:
/// only those whose process is gone and which prove they are an export's
/// of this user (see the module header). Others are left and logged.
pub(crate) fn remove_stale(parent: &Path, out_name: &str) {
    let Ok(parent_fd) = open_parent(parent) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", parent_fd.as_raw_fd())) else {
        return;
    };
    let prefix = prefix(out_name);
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some((name, pid)) = file_name.to_str().and_then(|n| {
            let pid = n.strip_prefix(&prefix)?.parse::<u32>().ok()?;
            Some((n, pid))
        }) else {
            continue;
        };
        if crate::process::lifecycle::process_alive(pid as i32) {
            continue;
        }
        match proven(parent_fd.as_fd(), name, pid) {
            Ok(dir) => {
                log::info!(
                    "removing {name:?} in {} (left by a killed export)",
                    parent.display()
                );
                if let Err(e) = remove_tree(dir.as_fd(), 0)
                    .and_then(|()| unlink_if_same(parent_fd.as_fd(), name, dir.as_fd()))
                {
                    log::warn!("removing {name:?}: {e}");
                }
            }
            Err(why) => log::warn!(
                "leaving {name:?} in {}: not a staging directory of this user ({why})",
                parent.display()
            ),
        }
    }
}

/// Why a directory named like a leftover is not removed.
#[derive(Debug, thiserror::Error)]
enum NotProven {
    /// It could not be opened or read as a directory (a symlink, a file …).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Another user owns it.
    #[error("owned by uid {0}")]
    Owner(u32),
    /// It holds no marker.
    #[error("no marker: {0}")]
    NoMarker(nix::errno::Errno),
    /// The marker is not a regular file of this user.
    #[error("the marker is not a file of this user")]
    MarkerNotOurs,
    /// The marker names another export.
    #[error("the marker names another export")]
    OtherExport,
}

/// Opens `name` and checks it is a staging directory of this user for `pid`.
fn proven(parent: BorrowedFd<'_>, name: &str, pid: u32) -> Result<OwnedFd, NotProven> {
    let me = nix::unistd::geteuid().as_raw();
    let dir = open_dir_at(parent, name)?;
    let owner = File::from(dir.try_clone()?).metadata()?.uid();
    if owner != me {
        return Err(NotProven::Owner(owner));
    }
    let marker = nix::fcntl::openat(
        dir.as_fd(),
        MARKER,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(NotProven::NoMarker)?;
    let mut marker = File::from(marker);
    let meta = marker.metadata()?;
    if !meta.is_file() || meta.uid() != me {
        return Err(NotProven::MarkerNotOurs);
    }
    let mut text = String::new();
    Read::by_ref(&mut marker)
        .take(64)
        .read_to_string(&mut text)?;
    if text != marker_text(pid) {
        return Err(NotProven::OtherExport);
    }
    Ok(dir)
}

fn unlink(at: BorrowedFd<'_>, name: &str, dir: bool) -> io::Result<()> {
    let flags = match dir {
        true => UnlinkatFlags::RemoveDir,
        false => UnlinkatFlags::NoRemoveDir,
    };
    nix::unistd::unlinkat(at, name, flags).map_err(io::Error::from)
}

/// Removes the empty directory `name` in `parent` if it is `dir`.
fn unlink_if_same(parent: BorrowedFd<'_>, name: &str, dir: BorrowedFd<'_>) -> io::Result<()> {
    let held = nix::sys::stat::fstat(dir)?;
    let named = nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino) {
        return Err(io::Error::other(
            "its name was given to something else; left as is",
        ));
    }
    unlink(parent, name, true)
}

/// Empties the directory `dir` through fds: files are unlinked, directories
/// opened `O_NOFOLLOW` beneath it and emptied in turn.
fn remove_tree(dir: BorrowedFd<'_>, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other("nested too deeply"));
    }
    // Listed through the fd's /proc name: the held directory itself.
    let mut names = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
        let name = entry?.file_name();
        match name.to_str() {
            Some(n) => names.push(n.to_owned()),
            None => return Err(io::Error::other("a name that is not UTF-8")),
        }
    }
    for name in names {
        let st = nix::sys::stat::fstatat(dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir {
            let sub = open_dir_at(dir, &name)?;
            remove_tree(sub.as_fd(), depth + 1)?;
        }
        unlink(dir, &name, is_dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staging_directory_is_removed_whole_and_only_with_proof() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Staging::create(tmp.path(), "out").unwrap();
        std::fs::create_dir_all(s.item().join("blobs/sha256")).unwrap();
        std::fs::write(s.item().join("blobs/sha256/x"), b"x").unwrap();
        let name = format!(".out.ocimux-export-{}", std::process::id());
        assert!(tmp.path().join(&name).is_dir());
        // Renamed away by someone: the item still lands where it was built.
        std::fs::rename(tmp.path().join(&name), tmp.path().join("moved")).unwrap();
        std::fs::create_dir(tmp.path().join(&name)).unwrap();
        assert!(s.item().join("blobs/sha256/x").is_file());
        s.put_in_place(&tmp.path().join("final"), false).unwrap();
        assert!(tmp.path().join("final/blobs/sha256/x").is_file());
        s.remove();
        // The staging directory (now "moved") is emptied and left there; the
        // decoy put under its old name is not the held one and stays.
        assert_eq!(
            std::fs::read_dir(tmp.path().join("moved")).unwrap().count(),
            0
        );
        assert!(tmp.path().join(&name).is_dir());
        std::fs::remove_dir(tmp.path().join(&name)).unwrap();
        // Not moved: removed whole.
        let s = Staging::create(tmp.path(), "out").unwrap();
        std::fs::write(s.item(), b"archive").unwrap();
        s.remove();
        assert!(!tmp.path().join(&name).exists());

        // Leftovers: a dead pid with a marker goes; a directory without a
        // marker, or with another pid's marker, stays.
        let dead = 0x3fff_fff0u32; // above pid_max
        let left = tmp.path().join(format!(".out.ocimux-export-{dead}"));
        std::fs::create_dir_all(left.join("out/blobs")).unwrap();
        std::fs::write(left.join(MARKER), marker_text(dead)).unwrap();
        let fake = tmp.path().join(format!(".out.ocimux-export-{}", dead + 1));
        std::fs::create_dir_all(fake.join("precious")).unwrap();
        let other = tmp.path().join(format!(".out.ocimux-export-{}", dead + 2));
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join(MARKER), marker_text(dead)).unwrap();
        remove_stale(tmp.path(), "out");
        assert!(!left.exists());
        assert!(fake.join("precious").is_dir());
        assert!(other.join(MARKER).is_file());
    }
}
