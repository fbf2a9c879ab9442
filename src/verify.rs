//! `--verify`: a blob's bytes are hashed the first time it is opened, and an
//! open whose bytes do not hash to the blob's name fails.
//!
//! Mount-time validation hashes manifests and configs but only stats layers
//! (so start-up costs the same for 1 MiB or 10 GiB); with `--verify` no layer
//! is served before it has been hashed once. The result is kept per file
//! identity ([`FileId`], which changes when the file is rewritten or
//! replaced), byte range and digest, so each version of a file is hashed
//! once, however often it is opened. Concurrent first opens of one blob wait
//! for one hash. The table is bounded: past [`MAX_ENTRIES`] finished results
//! are dropped (and recomputed on demand).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use crate::confine::FileId;
use crate::digest::{Digest, Hasher};
use crate::layout::FsError;

/// How many results are kept before finished ones are dropped.
pub const MAX_ENTRIES: usize = 65_536;

/// What hashing one version of a blob found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Matches,
    /// The bytes hash to this instead.
    Mismatch(Digest),
    /// Reading failed (not kept: the next open tries again): the errno, or
    /// the kind of an error without one (a short read).
    Failed(Result<i32, io::ErrorKind>),
}

/// A file version, a byte range of it, and the name it must hash to.
type Key = (FileId, u64, u64, Digest);

/// Verified blob versions.
#[derive(Debug, Default)]
pub struct Verifier {
    results: Mutex<HashMap<Key, Arc<OnceLock<Outcome>>>>,
}

impl Verifier {
    /// Checks that `len` bytes of `file` from `base` hash to `digest`, and
    /// that the file still has identity `id` afterwards. The table's lock is
    /// held only to find or insert an entry, never while hashing.
    pub fn check(
        &self,
        file: &File,
        base: u64,
        len: u64,
        id: FileId,
        digest: &Digest,
    ) -> Result<(), FsError> {
        let key = (id, base, len, digest.clone());
        let cell = {
            let mut results = self
                .results
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if results.len() >= MAX_ENTRIES && !results.contains_key(&key) {
                results.retain(|_, cell| cell.get().is_none());
            }
            results.entry(key.clone()).or_default().clone()
        };
        let outcome = cell.get_or_init(|| match hash_range(file, base, len, digest) {
            Ok(actual) if actual == *digest => Outcome::Matches,
            Ok(actual) => Outcome::Mismatch(actual),
            Err(e) => Outcome::Failed(e.raw_os_error().ok_or(e.kind())),
        });
        match outcome {
            Outcome::Matches => {}
            Outcome::Mismatch(actual) => {
                return Err(FsError::Corrupt {
                    actual: actual.clone(),
                });
            }
            Outcome::Failed(e) => {
                let e = match *e {
                    Ok(errno) => io::Error::from_raw_os_error(errno),
                    Err(kind) => io::Error::from(kind),
                };
                if let Ok(mut results) = self.results.lock() {
                    results.remove(&key);
                }
                return Err(FsError::Io(e));
            }
        }
        // Hashed bytes of a file rewritten while hashing prove nothing.
        if !id.holds(&FileId::of(file)?) {
            return Err(FsError::Changed);
        }
        Ok(())
    }

    /// Whether this version and range is known to hash to `digest`.
    pub fn known_good(&self, id: FileId, base: u64, len: u64, digest: &Digest) -> bool {
        let key = (id, base, len, digest.clone());
        self.results.lock().is_ok_and(|r| {
            r.get(&key)
                .is_some_and(|cell| cell.get() == Some(&Outcome::Matches))
        })
    }

    /// How many results are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.results.lock().map_or(0, |r| r.len())
    }
}

/// Hashes exactly `len` bytes of `file` from `base`; a file that ends sooner
/// is an error.
pub(crate) fn hash_range(file: &File, base: u64, len: u64, digest: &Digest) -> io::Result<Digest> {
    const CHUNK: usize = 1 << 20;
    let mut hasher = Hasher::new(digest.algorithm());
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from((len - done).min(CHUNK as u64)).unwrap_or(CHUNK);
        let chunk = buf.get_mut(..want).unwrap_or_default();
        // The crate's one positional-read loop; short only at end of file.
        let n = crate::readat::fill_at(file, base.saturating_add(done), chunk)?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        hasher.update(chunk.get(..n).unwrap_or_default());
        done += n as u64;
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn verify_table() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"headerPAYLOADtrailer").unwrap();
        let id = FileId::of(&f).unwrap();
        let payload = Digest::sha256_of(b"PAYLOAD");
        let v = Verifier::default();
        // base, len, digest, ok
        let cases: &[(u64, u64, &Digest, bool)] = &[
            (6, 7, &payload, true),
            (6, 7, &payload, true), // cached
            (5, 7, &payload, false),
            (6, 6, &payload, false),
            (18, 7, &payload, false), // past the end
        ];
        for (base, len, digest, ok) in cases {
            assert_eq!(
                v.check(&f, *base, *len, id, digest).is_ok(),
                *ok,
                "{base} {len}"
            );
        }
        // The match and two mismatches are kept; the failed read is not.
        assert_eq!(v.len(), 3);
        // A rewrite gives a new identity: the old result does not apply.
        f.write_all(b"more").unwrap();
        let err = v.check(&f, 6, 7, id, &payload).unwrap_err();
        assert!(matches!(err, FsError::Changed), "{err:?}");
        let id2 = FileId::of(&f).unwrap();
        assert!(v.check(&f, 6, 7, id2, &payload).is_ok());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"x").unwrap();
        let id = FileId::of(&f).unwrap();
        let v = Verifier::default();
        for i in 0..(MAX_ENTRIES as u64 + 10) {
            let _ = v.check(&f, 0, 1, FileId { ino: i, ..id }, &Digest::sha256_of(b"x"));
        }
        assert!(v.len() <= MAX_ENTRIES, "{}", v.len());
    }
}
