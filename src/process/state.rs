//! What each running daemon (a mount, a server) says about itself, for
//! `ocimux status`: one JSON file per daemon, `PID.json`, in a directory
//! private to the daemon's user — `/run/ocimux` for root, else
//! `$XDG_RUNTIME_DIR/ocimux` (or `/run/user/UID/ocimux`, or
//! `/tmp/ocimux-UID`) — rewritten whole (a temporary file renamed over it)
//! when what it says changes, checked at most every [`EVERY`].
//!
//! Trust: the directory is made `0700` and used only if it is a directory
//! (not a symlink) owned by the user with no access for others; every file
//! is read through that directory's fd, `O_NOFOLLOW`, non-blocking, only if
//! it is a regular file owned by the directory's owner and at most
//! [`MAX_BYTES`]. A file whose process is gone (or is another process under
//! a reused pid: its start time differs) is not reported, and is removed
//! when the reader owns it. What a file holds (paths a user gave) is
//! quoted by whoever prints it.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// How often a daemon's file is brought up to date (when it changed).
pub const EVERY: Duration = Duration::from_secs(2);

/// Largest file written or read.
pub const MAX_BYTES: usize = 1024 * 1024;

/// Most files one directory is read for.
pub const MAX_FILES: usize = 4096;

/// The directory this user's daemons write to.
pub fn own_dir() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/ocimux");
    }
    // Only the user's own runtime directory: an environment inherited
    // from another user (sudo, setpriv) names theirs.
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        let own = std::fs::symlink_metadata(&xdg)
            .is_ok_and(|m| m.is_dir() && std::os::unix::fs::MetadataExt::uid(&m) == uid.as_raw());
        if xdg.is_absolute() && own {
            return xdg.join("ocimux");
        }
    }
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    match run_user.is_dir() {
        true => run_user.join("ocimux"),
        false => PathBuf::from(format!("/tmp/ocimux-{uid}")),
    }
}

/// Opens `dir` as a private directory of `owner` (created `0700` when
/// missing and `create`): not a symlink, owned by `owner`, no access for
/// group or others.
fn open_private(dir: &Path, owner: u32, create: bool) -> io::Result<OwnedFd> {
    if create {
        match nix::unistd::mkdir(dir, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let fd = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let st = nix::sys::stat::fstat(fd.as_fd())?;
    if st.st_uid != owner || st.st_mode & 0o077 != 0 {
        return Err(io::Error::other(format!(
            "{} is not private to uid {owner}",
            dir.display()
        )));
    }
    Ok(fd)
}

/// Seconds since the Unix epoch, as state files say times.
pub fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A live process's start time (clock ticks since boot, `/proc/PID/stat`'s
/// 22nd field): with the pid, what no other process shares. `None` for a
/// process that is gone or a zombie (it has ended; its parent has not
/// reaped it yet).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Fields after the command: state is the 3rd, start time the 22nd.
    let mut fields = rest.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// A daemon's own state file, removed when dropped.
#[derive(Debug)]
pub struct StateFile {
    dir: OwnedFd,
    name: String,
    path: PathBuf,
}

impl StateFile {
    /// This process's file in [`own_dir`] (not written yet). Files of
    /// daemons that are gone are removed first.
    pub fn create() -> io::Result<StateFile> {
        let path = own_dir();
        let dir = open_private(&path, nix::unistd::geteuid().as_raw(), true)?;
        let _ = read_dir_fd(&dir, true);
        let name = format!("{}.json", std::process::id());
        Ok(StateFile {
            path: path.join(&name),
            dir,
            name,
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces its contents with `value` (whole: written beside it, then
    /// renamed over it). At most [`MAX_BYTES`].
    pub fn write(&self, value: &serde_json::Value) -> io::Result<()> {
        let bytes = serde_json::to_vec(value)?;
        if bytes.len() > MAX_BYTES {
            return Err(io::Error::other("state over its bound"));
        }
        let temp = format!(".{}.tmp", self.name);
        let fd = nix::fcntl::openat(
            self.dir.as_fd(),
            temp.as_str(),
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_TRUNC
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        File::from(fd).write_all(&bytes)?;
        nix::fcntl::renameat(
            self.dir.as_fd(),
            temp.as_str(),
            self.dir.as_fd(),
            self.name.as_str(),
        )?;
        Ok(())
    }

    /// Writes what `gather` says now, then every [`EVERY`] when it changed,
    /// from a thread, for the life of the process.
    pub fn keep_written(
        self,
        gather: impl Fn() -> serde_json::Value + Send + 'static,
    ) -> io::Result<()> {
        let mut last = gather();
        self.write(&last)?;
        std::thread::Builder::new()
            .name("state".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EVERY);
                    let now = gather();
                    if now != last {
                        if let Err(e) = self.write(&now) {
                            log::debug!("{}: {e}", self.path.display());
                        }
                        last = now;
                    }
                }
            })?;
        Ok(())
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        let _ = nix::unistd::unlinkat(
            self.dir.as_fd(),
            self.name.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

/// Removes this process's state file, if any (a daemon that ends).
pub fn remove_own() {
    let Ok(dir) = open_private(&own_dir(), nix::unistd::geteuid().as_raw(), false) else {
        return;
    };
    let name = format!("{}.json", std::process::id());
    let _ = nix::unistd::unlinkat(
        dir.as_fd(),
        name.as_str(),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
}

/// One daemon's state, as its file says.
#[derive(Debug, Clone)]
pub struct Found {
    /// The file.
    pub path: PathBuf,
    /// Its contents.
    pub value: serde_json::Value,
    /// The user whose directory holds it (and whose process it names).
    pub owner: u32,
}

/// The live daemons' state that user `uid` wrote, as far as the caller
/// may read it: only directories that user owns (root's `/run/ocimux`, a
/// user's `/run/user/UID/ocimux` or `/tmp/ocimux-UID`, and the caller's own
/// when it is that user). What another user wrote never speaks for it.
pub fn read_of_user(uid: u32) -> Vec<Found> {
    let mut dirs = match uid {
        0 => vec![PathBuf::from("/run/ocimux")],
        _ => vec![
            PathBuf::from(format!("/run/user/{uid}/ocimux")),
            PathBuf::from(format!("/tmp/ocimux-{uid}")),
        ],
    };
    if nix::unistd::geteuid().as_raw() == uid && !dirs.contains(&own_dir()) {
        dirs.push(own_dir());
    }
    read_dirs(dirs, |owner| owner == uid)
}

/// Every live daemon's state the caller may read: its own directory, and
/// for root every user's.
pub fn read_all() -> Vec<Found> {
    let me = nix::unistd::geteuid();
    let mut dirs = vec![own_dir()];
    if me.is_root() {
        for parent in ["/run/user", "/tmp"] {
            let Ok(entries) = std::fs::read_dir(parent) else {
                continue;
            };
            for e in entries.flatten().take(MAX_FILES) {
                let name = e.file_name();
                let name = name.to_string_lossy();
                match parent {
                    "/run/user" => dirs.push(e.path().join("ocimux")),
                    _ if name.starts_with("ocimux-") => dirs.push(e.path()),
                    _ => {}
                }
            }
        }
    }
    read_dirs(dirs, |_| true)
}

/// The live daemons' files in `dirs`, each directory read as its owner's
/// (the one whose files it may hold) when `owner_ok` accepts that owner.
fn read_dirs(dirs: Vec<PathBuf>, owner_ok: impl Fn(u32) -> bool) -> Vec<Found> {
    let me = nix::unistd::geteuid();
    let mut found = Vec::new();
    for dir in dirs {
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        let owner = std::os::unix::fs::MetadataExt::uid(&meta);
        if !owner_ok(owner) {
            continue;
        }
        let Ok(fd) = open_private(&dir, owner, false) else {
            continue;
        };
        let mine = owner == me.as_raw();
        for (name, value) in read_dir_fd(&fd, mine).unwrap_or_default() {
            found.push(Found {
                path: dir.join(name),
                value,
                owner,
            });
        }
    }
    found
}

/// The live daemons' files in `dir`; stale ones removed when `remove`.
fn read_dir_fd(dir: &OwnedFd, remove: bool) -> io::Result<Vec<(String, serde_json::Value)>> {
    let owner = nix::sys::stat::fstat(dir.as_fd())?.st_uid;
    // Listed through a duplicate: the directory stream consumes its fd.
    let listing = nix::dir::Dir::from_fd(nix::unistd::dup(dir.as_fd())?)?;
    let mut out = Vec::new();
    for entry in listing.into_iter().flatten().take(MAX_FILES) {
        let Ok(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(pid) = name
            .strip_suffix(".json")
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Some(value) = read_one(dir, &name, owner) else {
            continue;
        };
        // Live, the process it was written for (not a reused pid), and the
        // directory owner's own: a user's file speaks for that user only.
        let started = value.get("start").and_then(serde_json::Value::as_u64);
        let theirs = std::fs::metadata(format!("/proc/{pid}"))
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == owner);
        if started.is_some() && start_time(pid) == started && theirs {
            out.push((name, value));
        } else if remove {
            let _ = nix::unistd::unlinkat(
                dir.as_fd(),
                name.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// One file of `dir`, checked as the module header says.
fn read_one(dir: &OwnedFd, name: &str, owner: u32) -> Option<serde_json::Value> {
    let c = CString::new(name).ok()?;
    let fd = nix::fcntl::openat(
        dir.as_fd(),
        c.as_c_str(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let st = nix::sys::stat::fstat(fd.as_fd()).ok()?;
    let regular = st.st_mode & libc::S_IFMT == libc::S_IFREG;
    if !regular || st.st_uid != owner || st.st_size > MAX_BYTES as i64 {
        return None;
    }
    let mut bytes = Vec::new();
    File::from(fd)
        .take(MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}
