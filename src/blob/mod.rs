//! Reading a blob's bytes safely, for the mount, `export` and `verify` alike:
//! opened confined to its source, refused unless the file is the version
//! the snapshot recorded (or a replacement shown to hash to the name), read
//! with the one positional-read loop and the identity re-checked after every
//! read.

pub(crate) mod hashpool;
pub(crate) mod verify;

use std::fs::File;
use std::sync::Arc;

use crate::blob::verify::Verifier;
use crate::files::confine::FileId;
use crate::files::lease::Lease;
use crate::files::readat::read_at;
use crate::snapshot::layout::FsError;
use crate::source::{Blob, Origin};

/// A byte range of an open source file that must keep identity `id`.
#[derive(Debug, Clone)]
pub(crate) struct FileRange {
    /// The file (shared by every open of this file version).
    pub file: Arc<File>,
    /// Where the blob starts in it (an archive member's data offset; 0 for a
    /// whole file).
    pub base: u64,
    /// The blob's size.
    pub len: u64,
    /// The identity the file had when opened; reads fail once it changes.
    pub id: FileId,
    /// The read lease a hash of it stands on: reads fail once it breaks
    /// (someone opened the file for writing). `None` when it was not hashed,
    /// or no lease can be had (see `lease`).
    pub lease: Option<Arc<Lease>>,
}

/// What [`FileRange::open_for_serving`] comes to.
#[derive(Debug)]
pub(crate) enum Proof {
    /// Its bytes may be sent.
    Ready(Opened),
    /// Its bytes must be shown to hash to its name first.
    Needed(Opened),
}

/// A source blob opened for reading.
#[derive(Debug)]
pub(crate) struct Opened {
    /// What reads read.
    pub range: FileRange,
    /// Whether this is the very file the snapshot recorded, so that pages
    /// the kernel cached for the inode are the blob's (`FOPEN_KEEP_CACHE`).
    pub as_recorded: bool,
    /// Whether the kernel may read it directly: the recorded file, whose
    /// owner and writers are trusted ([`crate::files::confine::Access::passthrough`]), and not
    /// under `--verify` (then every read is the daemon's, identity-checked).
    pub passthrough: bool,
}

impl FileRange {
    /// Opens `blob`'s bytes, refusing any that may not be the name's.
    ///
    /// A whole file is reopened confined to its source. One replaced or
    /// rewritten since the snapshot (a rebuild renames new files over old
    /// ones) is served only once its bytes are shown to hash to the name; one
    /// of another size never. An archive member is read from the archive that
    /// was indexed (no fd per open), and only while the archive keeps its
    /// identity: rewritten in place, its offsets are of no known version.
    /// With `verify`, every blob version is hashed once before it is served.
    /// (The mount calls the two steps itself, hashing off its request
    /// threads: [`FileRange::open_unhashed`], then [`Opened::check`].)
    #[cfg(test)]
    pub fn open(blob: &Blob, verify: bool, verifier: &Verifier) -> Result<Opened, FsError> {
        let (mut opened, must_hash) = Self::open_unhashed(blob, verify)?;
        if must_hash {
            opened.check(blob, verifier)?;
        }
        Ok(opened)
    }

    /// The one blob-opening policy every front end follows (the mount, the
    /// server): the blob opened once, and either ready to send — not to be
    /// hashed, or proven before, with the lease its proof stands on — or to
    /// be proven first ([`Opened::check`], on that same opened file, where
    /// the front end chooses to wait).
    pub fn open_for_serving(
        blob: &Blob,
        verify: bool,
        verifier: &Verifier,
    ) -> Result<Proof, FsError> {
        let (mut opened, must_hash) = Self::open_unhashed(blob, verify)?;
        if !must_hash {
            return Ok(Proof::Ready(opened));
        }
        if opened.checked_before(blob, verifier) {
            // A kept result: no hash, but the lease it stands on is taken
            // into the range, so its reads stop once a writer appears.
            opened.check(blob, verifier)?;
            return Ok(Proof::Ready(opened));
        }
        Ok(Proof::Needed(opened))
    }

    /// [`FileRange::open`] up to the hash: the opened range, and whether it
    /// must be hashed ([`Opened::check`]) before a byte of it is served.
    pub fn open_unhashed(blob: &Blob, verify: bool) -> Result<(Opened, bool), FsError> {
        let (range, must_hash) = match &blob.origin {
            Origin::File { dir, id } => {
                let (file, now) = dir.open(&blob.rel())?;
                let replaced = !id.holds(&now);
                if replaced && now.size != blob.size {
                    return Err(FsError::Changed);
                }
                let range = FileRange {
                    file: Arc::new(file),
                    base: 0,
                    len: blob.size,
                    id: now,
                    lease: None,
                };
                (range, verify || replaced || blob.replaced)
            }
            Origin::Range { archive, offset } => {
                let now = FileId::of(&archive.file)?;
                if !archive.id.holds(&now) {
                    return Err(FsError::Changed);
                }
                let range = FileRange {
                    file: archive.file.clone(),
                    base: *offset,
                    len: blob.size,
                    id: now,
                    lease: None,
                };
                (range, verify || blob.replaced)
            }
        };
        let as_recorded = blob.origin.file_id() == range.id;
        // A replaced blob may pass through too: it is hashed (must_hash)
        // before the first byte is served, like any version not yet proven.
        let passthrough = as_recorded && !verify && blob.access.passthrough;
        Ok((
            Opened {
                range,
                as_recorded,
                passthrough,
            },
            must_hash,
        ))
    }

    /// Reads up to `size` bytes of the blob at `offset`: exactly what the blob
    /// holds there, or an error. A short read or a new identity means the
    /// file was truncated or rewritten: those bytes are not the blob's.
    pub fn read(&self, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let want = self.len.saturating_sub(offset).min(u64::from(size));
        let bytes = read_at(
            &self.file,
            self.base.saturating_add(offset),
            u64::from(size),
            self.base.saturating_add(self.len),
        )?;
        if bytes.len() as u64 == want && self.still_holds()? {
            Ok(bytes)
        } else {
            Err(FsError::Changed)
        }
    }
}

impl FileRange {
    /// Whether what was read is still the version that was opened (and,
    /// once hashed, that no one has opened it for writing since).
    fn still_holds(&self) -> Result<bool, FsError> {
        let leased = self.lease.as_ref().is_none_or(|l| l.held());
        Ok(leased && self.id.holds(&FileId::of(&self.file)?))
    }

    /// Appends up to `size` bytes of the blob at `offset` to `buf` (reused
    /// between calls): exactly what the blob holds there, or an error, as
    /// [`FileRange::read`].
    pub fn read_into(&self, offset: u64, size: usize, buf: &mut Vec<u8>) -> Result<(), FsError> {
        let want = self.len.saturating_sub(offset).min(size as u64);
        let want = usize::try_from(want).unwrap_or(size);
        let n = crate::files::readat::append_at(
            &self.file,
            self.base.saturating_add(offset),
            buf,
            want,
        )?;
        if n == want && self.still_holds()? {
            Ok(())
        } else {
            Err(FsError::Changed)
        }
    }
}

impl FileRange {
    /// Opens `blob` for one read through (`export`, `verify`): hashed now
    /// when `hash` is set or the file was replaced since the snapshot, with
    /// no table of results kept (each version is hashed every time).
    pub fn open_once(blob: &Blob, hash: bool) -> Result<FileRange, FsError> {
        let (opened, must_hash) = Self::open_unhashed(blob, hash)?;
        if must_hash {
            let r = &opened.range;
            let actual = crate::blob::verify::hash_range(&r.file, r.base, r.len, &blob.digest)?;
            if actual != blob.digest {
                return Err(FsError::Corrupt { actual });
            }
            // Hashed bytes of a file rewritten while hashing prove nothing.
            if !r.id.holds(&FileId::of(&r.file)?) {
                return Err(FsError::Changed);
            }
        }
        Ok(opened.range)
    }
}

impl Opened {
    /// Hashes the range (once per file version: `verifier` keeps results)
    /// and fails unless it hashes to `blob`'s digest.
    pub fn check(&mut self, blob: &Blob, verifier: &Verifier) -> Result<(), FsError> {
        let r = &self.range;
        let lease = verifier.check(&r.file, r.base, r.len, r.id, &blob.digest)?;
        self.range.lease = lease;
        Ok(())
    }

    /// Whether [`Opened::check`] would answer at once from a kept result.
    pub fn checked_before(&self, blob: &Blob, verifier: &Verifier) -> bool {
        let r = &self.range;
        verifier.known_good(r.id, r.base, r.len, &blob.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::testutil::file_blob;
    use std::io::Write;

    #[test]
    fn reads_are_exact_or_refused() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"..0123456789..").unwrap();
        let range = FileRange {
            id: FileId::of(&f).unwrap(),
            file: Arc::new(f.try_clone().unwrap()),
            base: 2,
            len: 10,
            lease: None,
        };
        // offset, size, what the blob holds there
        let cases: &[(u64, u32, &[u8])] = &[
            (0, 4, b"0123"),
            (8, 100, b"89"),
            (10, 1, b""),
            (u64::MAX, u32::MAX, b""),
        ];
        for (offset, size, want) in cases {
            assert_eq!(
                range.read(*offset, *size).unwrap(),
                *want,
                "{offset} {size}"
            );
        }
        // Truncated under the handle: a short read, refused; so is any read
        // once the identity changed.
        f.set_len(6).unwrap();
        assert!(matches!(range.read(0, 10), Err(FsError::Changed)));
        assert!(matches!(range.read(0, 1), Err(FsError::Changed)));
    }

    #[test]
    fn open_refuses_what_is_not_the_names() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = Verifier::default();
        let blob = file_blob(dir.path(), b"layer bytes");
        let opened = FileRange::open(&blob, false, &verifier).unwrap();
        assert!(opened.as_recorded);
        assert_eq!(opened.range.read(0, 100).unwrap(), b"layer bytes");
        let path = dir.path().join(blob.rel());
        // Replaced by other bytes of the same size: hashed, refused.
        let swap = |bytes: &[u8]| {
            let tmp = dir.path().join("tmp");
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        swap(b"LAYER BYTES");
        assert!(matches!(
            FileRange::open(&blob, false, &verifier),
            Err(FsError::Corrupt { .. })
        ));
        // Of another size: refused without hashing.
        swap(b"short");
        assert!(matches!(
            FileRange::open(&blob, false, &verifier),
            Err(FsError::Changed)
        ));
        // Replaced by the right bytes: served, but not as the recorded file.
        swap(b"layer bytes");
        let again = FileRange::open(&blob, false, &verifier).unwrap();
        assert!(!again.as_recorded);
        assert_eq!(again.range.read(0, 100).unwrap(), b"layer bytes");
        // Gone: not found.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            FileRange::open(&blob, false, &verifier),
            Err(FsError::Refused(crate::files::confine::OpenError::Missing))
        ));
    }
}
