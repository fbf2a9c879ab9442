//! `ocimux export`: writes the very layout a mount would serve, for machines
//! and build tasks without FUSE.
//!
//! - `dir`: an OCI image layout directory. Each blob is a reflink of its
//!   source file where the filesystem can clone, else a hard link, else a
//!   copy (`copy_file_range`, which the kernel may turn into a server-side
//!   copy); `--link` picks one mode only. Archive members are byte ranges:
//!   always copied.
//! - `oci-archive`: one uncompressed tar of that layout, streamed from the
//!   sources with positional reads, never staged.
//!
//! Either is built in a private staging directory beside OUT
//! (`.NAME.ocimux-export-PID`, see `staging`) and renamed into place at the
//! end, so a failure leaves nothing and a kill leaves only that directory,
//! which the next export next to it removes once it has proved it is an
//! export's. An existing OUT is refused unless it is an empty directory or
//! `force`. Copies keep the source's read bits (narrowed as the mount narrows
//! them) and, as root, its owner; an archive gets the bits every blob grants.
//!
//! Sources are read as the mount reads them: confined opens, identity
//! checked before and after each blob (a file rewritten meanwhile fails the
//! export); with `verify`, every blob is hashed.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use crate::blob::FileRange;
use crate::export::staging::Staging;
use crate::files::confine::{Access, FileId};
use crate::oci::digest::Digest;
use crate::snapshot::index::Composition;
use crate::snapshot::layout::OCI_LAYOUT;
use crate::source::{Blob, Origin};

mod archive;
pub(crate) mod staging;
use archive::{RangeReader, write_archive};

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An OCI image layout directory.
    Dir,
    /// One uncompressed tar of it.
    OciArchive,
}

/// How a directory export places blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkMode {
    /// Reflink, else hard link, else copy, per blob.
    Auto,
    /// Copy-on-write clones only.
    Reflink,
    /// Hard links only.
    Hardlink,
    /// Copies only.
    Copy,
}

/// Export options.
#[derive(Debug, Clone, Copy)]
pub struct ExportOptions {
    /// Directory or archive.
    pub format: Format,
    /// How blobs reach a directory.
    pub link: LinkMode,
    /// Replace an existing OUT.
    pub force: bool,
    /// Hash every blob.
    pub verify: bool,
    /// How progress shows on stderr.
    pub progress: crate::report::inspect::Progress,
}

/// Why an export failed (nothing was left at OUT).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// OUT exists and is not an empty directory.
    #[error("{0} exists; give --force to replace it")]
    Exists(PathBuf),
    /// OUT is, holds or lies inside a source.
    #[error("{} would overlap the source {}: export somewhere else", out.display(), source_path.display())]
    Overlaps {
        /// OUT, resolved.
        out: PathBuf,
        /// The source's path.
        source_path: PathBuf,
    },
    /// A blob could not be placed with the mode asked.
    #[error("blob {digest} from source {source_name} ({file}): {why}")]
    Blob {
        /// The blob.
        digest: Box<Digest>,
        /// Its source.
        source_name: String,
        /// Its file.
        file: String,
        /// What went wrong.
        why: String,
    },
    /// Writing failed.
    #[error("{what} {}: {err}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        err: io::Error,
    },
}

/// What an export did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Where.
    pub out: PathBuf,
    /// Files written (blobs and generated files).
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs cloned.
    pub reflinked: usize,
    /// Blobs hard-linked.
    pub hardlinked: usize,
    /// Blobs copied.
    pub copied: usize,
    /// Their bytes (what no link could spare).
    pub copied_bytes: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exported {} files ({} bytes) to {}: {} reflinked, {} hard-linked, {} copied ({} bytes copied)",
            self.files,
            self.bytes,
            self.out.display(),
            self.reflinked,
            self.hardlinked,
            self.copied,
            self.copied_bytes
        )
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ExportError + 'a {
    move |err| ExportError::Io {
        what,
        path: path.to_owned(),
        err,
    }
}

/// Writes the layout `comp` describes to `out`.
pub fn export(comp: &Composition, out: &Path, opts: &ExportOptions) -> Result<Report, ExportError> {
    let out = std::path::absolute(out).map_err(io_err("resolving", out))?;
    let (parent, name) = match (out.parent(), out.file_name()) {
        (Some(p), Some(n)) => (p.to_owned(), n.to_string_lossy().into_owned()),
        _ => return Err(ExportError::Exists(out)),
    };
    refuse_overlap(&out, comp)?;
    let replaces = check_out(&out, opts.force)?;
    crate::export::staging::remove_stale(&parent, &name);
    let staging = Staging::create(&parent, &name)
        .map_err(io_err("creating a staging directory in", &parent))?;
    let temp = staging.item();
    let progress = crate::report::inspect::progress_bar(opts.progress, comp, "export");
    let written = match opts.format {
        Format::Dir => write_dir(comp, &temp, opts, &progress),
        Format::OciArchive => write_archive(comp, &temp, opts, &progress),
    };
    progress.finish_and_clear();
    let placed = written.and_then(|report| {
        staging
            .put_in_place(&out, replaces)
            .map_err(io_err("renaming into place", &out))
            .map(|()| report)
    });
    // The staging directory goes in every case (after an exchange it holds
    // the old OUT).
    staging.remove();
    let mut report = placed?;
    report.out = out;
    Ok(report)
}

/// Refuses an OUT that is a source, lies inside one or holds one: writing
/// there would change a source, and replacing it would delete one.
fn refuse_overlap(out: &Path, comp: &Composition) -> Result<(), ExportError> {
    // OUT may not exist yet: compare through its parent, resolved.
    let canonical = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let out = match (out.parent(), out.file_name()) {
        (Some(parent), Some(name)) => canonical(parent).join(name),
        _ => out.to_owned(),
    };
    let out = canonical(&out);
    let roots: std::collections::BTreeSet<PathBuf> = comp
        .blobs
        .iter()
        .map(|b| match &b.origin {
            Origin::File { dir, .. } => dir.path().to_owned(),
            Origin::Range { archive, .. } => canonical(&archive.path),
        })
        .collect();
    match roots
        .iter()
        .find(|r| out.starts_with(r) || r.starts_with(&out))
    {
        Some(root) => Err(ExportError::Overlaps {
            out,
            source_path: root.clone(),
        }),
        None => Ok(()),
    }
}

/// Whether OUT exists and will be replaced; refuses one that may not be.
fn check_out(out: &Path, force: bool) -> Result<bool, ExportError> {
    match fs::symlink_metadata(out) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("checking", out)(e)),
        Ok(m) if force => Ok(m.is_dir() || m.is_file() || m.file_type().is_symlink()),
        Ok(m) if m.is_dir() => match fs::read_dir(out).map(|mut d| d.next().is_none()) {
            Ok(true) => Ok(true),
            Ok(false) => Err(ExportError::Exists(out.to_owned())),
            Err(e) => Err(io_err("reading", out)(e)),
        },
        Ok(_) => Err(ExportError::Exists(out.to_owned())),
    }
}

/// A source blob opened for export: identity-checked, hashed with `verify`.
fn open_blob(blob: &Blob, verify: bool) -> Result<FileRange, ExportError> {
    FileRange::open_once(blob, verify).map_err(|e| blob_err(blob, e.to_string()))
}

fn blob_err(blob: &Blob, why: String) -> ExportError {
    ExportError::Blob {
        digest: Box::new(blob.digest.clone()),
        source_name: blob.source.to_string(),
        file: crate::error::printable(&blob.describe()).into_owned(),
        why,
    }
}

/// Fails when the file changed while it was being exported. A hard link
/// changes the file's ctime (its link count), nothing else: after one,
/// ctime is not compared.
fn still_same(blob: &Blob, range: &FileRange, linked: bool) -> Result<(), ExportError> {
    let unchanged = |now: FileId| match linked {
        true => range.id.holds(&FileId {
            ctime_ns: range.id.ctime_ns,
            ..now
        }),
        false => range.id.holds(&now),
    };
    match FileId::of(&range.file) {
        Ok(now) if unchanged(now) => Ok(()),
        Ok(_) => Err(blob_err(
            blob,
            "the file changed while it was exported".into(),
        )),
        Err(e) => Err(blob_err(blob, e.to_string())),
    }
}

fn write_dir(
    comp: &Composition,
    temp: &Path,
    opts: &ExportOptions,
    progress: &ProgressBar,
) -> Result<Report, ExportError> {
    let mut report = Report::default();
    fs::DirBuilder::new()
        .mode(0o755)
        .create(temp)
        .map_err(io_err("creating", temp))?;
    // Each algorithm's directory once, before any file.
    let algs: std::collections::BTreeSet<&str> = std::iter::once(&comp.index_digest)
        .chain(comp.blobs.iter().map(|b| &b.digest))
        .map(|d| d.algorithm().name())
        .collect();
    for alg in algs {
        let dir = temp.join("blobs").join(alg);
        fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(&dir)
            .map_err(io_err("creating", &dir))?;
    }
    let new_file = |rel: &str, bytes: &[u8]| -> Result<(), ExportError> {
        let path = temp.join(rel);
        fs::write(&path, bytes).map_err(io_err("writing", &path))
    };
    new_file("oci-layout", OCI_LAYOUT)?;
    new_file("index.json", &comp.index_json)?;
    new_file(&comp.index_digest.blob_path(), &comp.index)?;
    report.files = 3;
    report.bytes = (OCI_LAYOUT.len() + comp.index_json.len() + comp.index.len()) as u64;
    let mut unsupported = Unsupported::default();
    for blob in &comp.blobs {
        let dest = temp.join(blob.digest.blob_path());
        let range = open_blob(blob, opts.verify)?;
        let how = place(blob, &range, &dest, opts.link, &mut unsupported)?;
        still_same(blob, &range, how == LinkMode::Hardlink)?;
        match how {
            LinkMode::Reflink => report.reflinked += 1,
            LinkMode::Hardlink => report.hardlinked += 1,
            _ => {
                report.copied += 1;
                report.copied_bytes += blob.size;
            }
        }
        report.files += 1;
        report.bytes += blob.size;
        progress.inc(blob.size);
    }
    // One flush of the filesystem before the rename makes the result visible.
    if let Ok(dir) = File::open(temp) {
        if let Err(e) = nix::unistd::syncfs(dir.as_fd()) {
            log::warn!("syncfs {}: {e}", temp.display());
        }
    }
    Ok(report)
}

/// Places one blob at `dest` with `mode` (Auto: the first that works);
/// returns the mode used.
/// Link modes that a source filesystem cannot do towards OUT's (reflink on
/// ext4, hard links across filesystems): not tried again for its other blobs.
#[derive(Default)]
struct Unsupported(std::collections::HashSet<(u64, LinkMode)>);

impl Unsupported {
    /// Records a failure of `how` from filesystem `dev` if it says the mode
    /// cannot work there at all (not a failure of this one file).
    fn note(&mut self, dev: u64, how: LinkMode, e: &io::Error) {
        let never = [
            libc::EOPNOTSUPP,
            libc::EXDEV,
            libc::EINVAL,
            libc::ENOTTY,
            libc::ENOSYS,
        ];
        if e.raw_os_error().is_some_and(|c| never.contains(&c)) {
            self.0.insert((dev, how));
        }
    }
}

fn place(
    blob: &Blob,
    range: &FileRange,
    dest: &Path,
    mode: LinkMode,
    unsupported: &mut Unsupported,
) -> Result<LinkMode, ExportError> {
    let whole_file = matches!(blob.origin, Origin::File { .. });
    let tries: &[LinkMode] = match (mode, whole_file) {
        (LinkMode::Auto, true) => &[LinkMode::Reflink, LinkMode::Hardlink, LinkMode::Copy],
        (LinkMode::Auto, false) | (LinkMode::Copy, _) => &[LinkMode::Copy],
        (LinkMode::Reflink | LinkMode::Hardlink, false) => {
            return Err(blob_err(
                blob,
                "an archive member can only be copied (--link copy or auto)".into(),
            ));
        }
        (one, true) => std::slice::from_ref(match one {
            LinkMode::Reflink => &LinkMode::Reflink,
            _ => &LinkMode::Hardlink,
        }),
    };
    let mut last = None;
    let dev = range.id.dev;
    // In auto mode, skip what already proved impossible from this filesystem
    // (copy, the last resort, is always tried).
    for &how in tries {
        if mode == LinkMode::Auto && unsupported.0.contains(&(dev, how)) {
            continue;
        }
        let done = match how {
            LinkMode::Reflink => reflink(range, dest, blob.access),
            LinkMode::Hardlink => hardlink(range, dest),
            _ => copy(range, dest, blob.access),
        };
        match done {
            Ok(()) => return Ok(how),
            Err(e) => {
                log::debug!("{how:?} {}: {e}", blob.digest);
                let _ = fs::remove_file(dest);
                unsupported.note(dev, how, &e);
                last = Some(e);
            }
        }
    }
    let why = last.map_or_else(|| "no way to place it".into(), |e| e.to_string());
    Err(blob_err(blob, format!("{mode:?}: {why}")))
}

/// A new file that grants no more than `access` does: its read bits (and
/// the owner's write bit) and, when root exports, its owner and group.
fn create(dest: &Path, access: Access) -> io::Result<File> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(u32::from(access.mode & 0o444) | 0o200)
        .open(dest)?;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::fchown(&file, Some(access.uid), Some(access.gid))?;
    }
    Ok(file)
}

/// A copy-on-write clone of the whole file (`FICLONE`).
fn reflink(range: &FileRange, dest: &Path, access: Access) -> io::Result<()> {
    let out = create(dest, access)?;
    crate::files::sys::ficlone(&out, &range.file)
}

/// A hard link to the very file that was opened (not to whatever its path
/// names now): through `/proc/self/fd`, which needs no capability.
fn hardlink(range: &FileRange, dest: &Path) -> io::Result<()> {
    use nix::fcntl::{AT_FDCWD, AtFlags};
    use nix::unistd::linkat;
    use std::os::fd::AsRawFd;
    let proc_path = format!("/proc/self/fd/{}", range.file.as_raw_fd());
    linkat(
        AT_FDCWD,
        proc_path.as_str(),
        AT_FDCWD,
        dest,
        AtFlags::AT_SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

/// Copies the range into a new file `dest`.
fn copy(range: &FileRange, dest: &Path, access: Access) -> io::Result<()> {
    let mut out = create(dest, access)?;
    copy_range_to(range, &mut out)
}

/// Appends the range to `out` at its position with `copy_file_range` (the
/// kernel copies, or clones, without the bytes passing through here), else
/// with positional reads.
fn copy_range_to(range: &FileRange, out: &mut File) -> io::Result<()> {
    use nix::errno::Errno;
    let mut off_in = i64::try_from(range.base).map_err(io::Error::other)?;
    let mut left = range.len;
    while left > 0 {
        let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
        match nix::fcntl::copy_file_range(
            range.file.as_fd(),
            Some(&mut off_in),
            out.as_fd(),
            None,
            chunk,
        ) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => left -= n as u64,
            Err(Errno::EINTR) => continue,
            Err(Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL)
                if left == range.len =>
            {
                let mut reader = io::BufReader::with_capacity(1 << 20, RangeReader::new(range));
                let n = io::copy(&mut reader, out)?;
                return match n == range.len {
                    true => Ok(()),
                    false => Err(io::ErrorKind::UnexpectedEof.into()),
                };
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
impl crate::process::lifecycle::ExitStatus for ExportError {
    fn exit_code(&self) -> u8 {
        use crate::process::lifecycle::exit;
        use ExportError as E;
        match self {
            E::Exists(_) | E::Overlaps { .. } => exit::BAD_INPUT,
            E::Blob { .. } | E::Io { .. } => exit::OTHER,
        }
    }
}
