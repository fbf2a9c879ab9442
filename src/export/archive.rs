//! `oci-archive` export: one uncompressed tar of the layout, streamed from
//! the sources (blob data copied by the kernel at the archive's offset, or
//! read and hashed with `verify`), never staged.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use indicatif::ProgressBar;

use super::{
    ExportError, ExportOptions, Report, blob_err, copy_range_to, create, io_err, open_blob,
    still_same,
};
use crate::blob::FileRange;
use crate::files::confine::Access;
use crate::files::readat::fill_at;
use crate::oci::digest::{Digest, Hasher};
use crate::snapshot::index::Composition;
use crate::snapshot::layout::OCI_LAYOUT;
use crate::source::Blob;

/// What an archive of `blobs` may grant: the read bits every blob grants,
/// and the owner they share (else root's, with the bits of others only).
fn archive_access(blobs: &[std::sync::Arc<Blob>]) -> Access {
    let first = blobs.first().map(|b| (b.access.uid, b.access.gid));
    let shared = blobs
        .iter()
        .all(|b| Some((b.access.uid, b.access.gid)) == first);
    let mut mode = blobs.iter().fold(0o444, |m, b| m & b.access.mode);
    // Owned by one of several owners, that owner could chmod the archive and
    // read the others' blobs: root owns it then, and only "others" bits stay.
    let (uid, gid) = match (shared, first) {
        (true, Some(owner)) => owner,
        _ => {
            mode &= 0o004;
            (0, 0)
        }
    };
    Access {
        uid,
        gid,
        mode,
        passthrough: false,
    }
}

/// Reads a blob's range front to back with positional reads.
pub(super) struct RangeReader<'a> {
    range: &'a FileRange,
    pos: u64,
}

impl<'a> RangeReader<'a> {
    pub(super) fn new(range: &'a FileRange) -> Self {
        RangeReader { range, pos: 0 }
    }
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.range.len.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let dest = buf.get_mut(..n).unwrap_or_default();
        let got = fill_at(&self.range.file, self.range.base + self.pos, dest)?;
        if got < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than the blob",
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
}

/// Hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

/// Appends a blob through the tar crate, hashing what it reads (this path
/// is taken with `verify`, and for names too long for a ustar header).
fn append_read(
    tar: &mut tar::Builder<File>,
    h: &mut tar::Header,
    path: &str,
    blob: &Blob,
    range: &FileRange,
) -> Result<(), Appending> {
    let mut reader = Hashing {
        inner: io::BufReader::with_capacity(1 << 20, RangeReader::new(range)),
        hasher: Hasher::new(blob.digest.algorithm()),
    };
    tar.append_data(h, path, &mut reader)?;
    let actual = reader.hasher.finish();
    match actual == blob.digest {
        true => Ok(()),
        false => Err(Appending::Mismatch(Box::new(actual))),
    }
}

/// Why a blob was not appended to an archive.
#[derive(Debug, thiserror::Error)]
enum Appending {
    /// Reading the blob or writing the archive failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The bytes do not hash to the blob's name.
    #[error("content hashes to {0}")]
    Mismatch(Box<Digest>),
}

/// Appends a blob whose name fits the header: the header, then the bytes
/// copied by the kernel, then the padding to a whole block.
fn append_copied(
    out: &mut File,
    h: &mut tar::Header,
    path: &str,
    range: &FileRange,
) -> Result<(), Appending> {
    let write = |out: &mut File, h: &mut tar::Header| -> io::Result<()> {
        h.set_path(path)?;
        h.set_cksum();
        out.write_all(h.as_bytes())?;
        copy_range_to(range, out)?;
        let pad = (512 - range.len % 512) % 512;
        out.write_all([0u8; 512].get(..pad as usize).unwrap_or_default())
    };
    Ok(write(out, h)?)
}

pub(super) fn write_archive(
    comp: &Composition,
    temp: &Path,
    opts: &ExportOptions,
    progress: &ProgressBar,
) -> Result<Report, ExportError> {
    let file = create(temp, archive_access(&comp.blobs)).map_err(io_err("creating", temp))?;
    // Unbuffered: blob data goes straight from the sources to the file
    // (copy_file_range), so headers are written where the data follows.
    let mut tar = tar::Builder::new(file);
    let mut report = append_generated(&mut tar, comp).map_err(io_err("writing", temp))?;
    for blob in &comp.blobs {
        let range = open_blob(blob, false)?;
        let path = blob.digest.blob_path();
        let mut h = tar_header(blob.size, tar::EntryType::Regular);
        let appended = match opts.verify || path.len() > 100 {
            // Hashing, or a name that needs a GNU long-name header: through
            // the tar crate, reading the bytes here.
            true => append_read(&mut tar, &mut h, &path, blob, &range),
            false => append_copied(tar.get_mut(), &mut h, &path, &range),
        };
        appended.map_err(|e| blob_err(blob, e.to_string()))?;
        still_same(blob, &range, false)?;
        report.copied += 1;
        report.copied_bytes += blob.size;
        report.files += 1;
        report.bytes += blob.size;
        progress.inc(blob.size);
    }
    let file = tar.into_inner().map_err(io_err("writing", temp))?;
    file.sync_all().map_err(io_err("syncing", temp))?;
    Ok(report)
}

/// A header of reproducible metadata: mode 0644 (0755 for directories),
/// owner 0, time 0.
fn tar_header(size: u64, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// The directories, `oci-layout`, `index.json` and the generated index.
fn append_generated(tar: &mut tar::Builder<File>, comp: &Composition) -> io::Result<Report> {
    let algs: std::collections::BTreeSet<&str> = std::iter::once(&comp.index_digest)
        .chain(comp.blobs.iter().map(|b| &b.digest))
        .map(|d| d.algorithm().name())
        .collect();
    let dirs =
        std::iter::once("blobs/".to_owned()).chain(algs.iter().map(|a| format!("blobs/{a}/")));
    for d in dirs {
        tar.append_data(
            &mut tar_header(0, tar::EntryType::Directory),
            d,
            io::empty(),
        )?;
    }
    let mut report = Report::default();
    for (path, bytes) in [
        ("oci-layout".to_owned(), OCI_LAYOUT),
        ("index.json".to_owned(), comp.index_json.as_slice()),
        (comp.index_digest.blob_path(), comp.index.as_slice()),
    ] {
        let mut h = tar_header(bytes.len() as u64, tar::EntryType::Regular);
        tar.append_data(&mut h, path, bytes)?;
        report.files += 1;
        report.bytes += bytes.len() as u64;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_grants_what_every_blob_grants() {
        let blob = |uid, mode| {
            let mut b = crate::testing::testutil::blob("x");
            b.access = Access {
                uid,
                gid: uid,
                mode,
                passthrough: true,
            };
            std::sync::Arc::new(b)
        };
        // (blobs as (uid, mode), owner, mode)
        let cases: &[(&[(u32, u16)], u32, u16)] = &[
            (&[(7, 0o444), (7, 0o400)], 7, 0o400),
            (&[(7, 0o444), (7, 0o444)], 7, 0o444),
            // Two owners: root's, others' bits only.
            (&[(7, 0o444), (8, 0o444)], 0, 0o004),
            (&[(7, 0o400), (8, 0o444)], 0, 0o000),
            (&[], 0, 0o004),
        ];
        for (blobs, uid, mode) in cases {
            let blobs: Vec<_> = blobs.iter().map(|(u, m)| blob(*u, *m)).collect();
            let a = archive_access(&blobs);
            assert_eq!((a.uid, a.gid, a.mode), (*uid, *uid, *mode), "{blobs:?}");
        }
    }
}
