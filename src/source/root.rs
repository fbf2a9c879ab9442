//! A source's files: a layout directory (each file opened confined to it, see
//! [`crate::files::confine`]) or a tar archive of one (each file a member, indexed
//! in place). Finding a file gives its size, where its bytes are and who may
//! read it; small files (JSON) are read whole, within a cap.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use super::{Archive, Origin};
use crate::error::Problem;
use crate::files::confine::{self, Access, FileId, FileInfo, OpenError, Resolved, SourceDir};
use crate::files::readat::{fill_at, read_at, read_up_to};
use crate::files::tar;

/// Where a source's files are: a layout directory, or a tar archive of one.
pub(super) enum Root {
    Dir(Arc<SourceDir>),
    Tar {
        archive: Arc<Archive>,
        /// Who may read the archive, and so its members.
        access: Access,
        index: tar::TarIndex,
        /// `""` for a layout at the archive's root, `"top/"` for one under a top directory.
        prefix: String,
    },
}

/// A file of the layout as found: its size, where its bytes are, who may
/// read it, and (for a directory source) the file, already open.
pub(super) struct Found {
    pub size: u64,
    pub origin: Origin,
    pub access: Access,
    file: Option<File>,
}

impl Found {
    /// Reads the whole file into memory, refusing one over `cap` bytes
    /// (before reading it when its size says so, and if it grew meanwhile).
    pub(super) fn read(&self, cap: u64) -> Result<Vec<u8>, Problem> {
        let too_large = |size| Problem::TooLarge { size, cap };
        if self.size > cap {
            return Err(too_large(self.size));
        }
        let bytes = match (&self.file, &self.origin) {
            // The whole file as it is now; one byte past the cap shows a
            // file that grew past it since it was stat'ed.
            (Some(file), _) => read_up_to(file, 0, cap.saturating_add(1), self.size + 1),
            (None, Origin::Range { archive, offset }) => read_at(
                &archive.file,
                *offset,
                self.size,
                offset.saturating_add(self.size),
            ),
            (None, Origin::File { .. }) => Err(io::Error::other("file not open")),
        }
        .map_err(Problem::Io)?;
        if bytes.len() as u64 > cap {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(bytes)
    }
}

/// Indexes a tar archive source and finds its layout: at the root (members
/// `oci-layout` or `./oci-layout`) or under exactly one top directory.
/// `publishers`: who had a say in what the archive is (see [`Archive`]).
fn open_archive(
    path: &Path,
    file: File,
    info: FileInfo,
    publishers: crate::files::chain::Publishers,
) -> Result<Root, Problem> {
    let mut head = [0u8; 512];
    let n = fill_at(&file, 0, &mut head).map_err(Problem::Io)?;
    let head = head.get(..n).unwrap_or_default();
    if tar::compression(head).is_none() && !tar::looks_like_tar(head) {
        return Err(Problem::NotLayout(
            "neither a directory nor a tar archive".into(),
        ));
    }
    let index = tar::index(&file).map_err(Problem::Archive)?;
    let prefix = if index.members.contains_key("oci-layout") {
        String::new()
    } else {
        let tops: std::collections::BTreeSet<&str> = index
            .members
            .keys()
            .map(|k| k.split('/').next().unwrap_or_default())
            .collect();
        match tops.into_iter().collect::<Vec<_>>().as_slice() {
            [top] if index.members.contains_key(&format!("{top}/oci-layout")) => format!("{top}/"),
            _ => {
                return Err(Problem::NotLayout(
                    "archive has no oci-layout at its root or under one top directory".into(),
                ));
            }
        }
    };
    // Indexed from this very file: if it changed meanwhile, the offsets are
    // of no version in particular.
    if !info.id.holds(&FileId::of(&file).map_err(Problem::Io)?) {
        return Err(Problem::Io(io::Error::other(
            "the archive changed while it was being indexed",
        )));
    }
    let archive = Arc::new(Archive {
        path: path.to_owned(),
        file: Arc::new(file),
        id: info.id,
        publishers,
    });
    Ok(Root::Tar {
        archive,
        access: info.access,
        index,
        prefix,
    })
}

/// A confinement refusal, as a problem of a source's file.
pub(super) fn problem(e: OpenError) -> Problem {
    match e {
        OpenError::Missing => Problem::Missing,
        OpenError::Io(e) => Problem::Io(e),
        e => Problem::Open(e),
    }
}

impl Root {
    /// Opens the root at `path`: a directory, or an archive to index (on an
    /// ocimux mount only if `allow_ocimux_mount`).
    pub(super) fn open(path: &Path, allow_ocimux_mount: bool) -> Result<Root, Problem> {
        let resolved = match allow_ocimux_mount {
            true => confine::resolve_on_any_mount(path),
            false => confine::resolve(path),
        };
        match resolved.map_err(problem)? {
            Resolved::Dir(dir) => Ok(Root::Dir(Arc::new(dir))),
            Resolved::File(file, info, publishers) => open_archive(path, file, info, publishers),
        }
    }

    /// Finds a regular file of the layout; `Ok(None)` when it does not exist.
    /// A directory source's file is opened confined to the source.
    pub(super) fn find(&self, rel: &str) -> Result<Option<Found>, Problem> {
        match self {
            Root::Dir(dir) => {
                let (file, info) = match dir.open_with_access(rel) {
                    Ok(opened) => opened,
                    Err(OpenError::Missing) => return Ok(None),
                    Err(e) => return Err(problem(e)),
                };
                Ok(Some(Found {
                    size: info.id.size,
                    origin: Origin::File {
                        dir: dir.clone(),
                        id: info.id,
                    },
                    access: info.access,
                    file: Some(file),
                }))
            }
            Root::Tar {
                archive,
                access,
                index,
                prefix,
            } => {
                let Some(m) = index.members.get(&format!("{prefix}{rel}")) else {
                    return Ok(None);
                };
                match m.kind {
                    tar::MemberKind::File => Ok(Some(Found {
                        size: m.size,
                        origin: Origin::Range {
                            archive: archive.clone(),
                            offset: m.offset,
                        },
                        access: *access,
                        file: None,
                    })),
                    tar::MemberKind::Link => Err(Problem::Link),
                    _ => Err(Problem::NotRegular),
                }
            }
        }
    }

    /// Reads a small file of the layout, refusing anything over `cap` bytes
    /// without reading it; `missing` says what a missing file means.
    pub(super) fn read_small(
        &self,
        rel: &str,
        cap: u64,
        missing: &str,
    ) -> Result<Vec<u8>, Problem> {
        self.find(rel)?
            .ok_or_else(|| Problem::NotLayout(missing.into()))?
            .read(cap)
    }
}
