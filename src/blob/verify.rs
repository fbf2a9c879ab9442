//! `--verify`: a blob's bytes are hashed the first time it is opened, and an
//! open whose bytes do not hash to the blob's name fails.
//!
//! Mount-time validation hashes manifests and configs but only stats layers
//! (so start-up costs the same for 1 MiB or 10 GiB); with `--verify` no layer
//! is served before it has been hashed once. The result is kept per file
//! identity ([`FileId`], which changes when the file is rewritten or
//! replaced), byte range and digest, so each version of a file is hashed
//! once, however often it is opened. Concurrent first opens of one blob wait
//! for one hash. A proof stands on a read lease taken before hashing
//! (`lease`): once someone opens the file for writing, it is made again, and
//! a file open for writing is not served. The table is bounded: past [`MAX_ENTRIES`] finished results
//! are dropped (and recomputed on demand).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::Arc;

use crate::sync::{Mutex, Once};

use crate::files::confine::FileId;
use crate::files::lease::{Lease, NoLease};
use crate::oci::digest::{Digest, Hasher};
use crate::snapshot::layout::FsError;

/// How many results are kept before finished ones are dropped.
pub const MAX_ENTRIES: usize = 65_536;

/// What hashing one version of a blob found.
#[derive(Debug, Clone)]
enum Outcome {
    /// It hashes to its name, and no one may write it unseen while the
    /// lease holds (`None`: no lease can be had here, see [`NoLease`]).
    Matches(Option<Arc<Lease>>),
    /// The bytes hash to this instead.
    Mismatch(Digest),
    /// Reading failed (not kept: the next open tries again): the errno, or
    /// the kind of an error without one (a short read).
    Failed(Result<i32, io::ErrorKind>),
    /// The file was open for writing, or opened for writing while it was
    /// hashed (not kept).
    BeingWritten,
}

/// A file version, a byte range of it, and the name it must hash to.
type Key = (FileId, u64, u64, Digest);

/// Verified blob versions.
#[derive(Debug, Default)]
pub struct Verifier {
    results: Mutex<HashMap<Key, Arc<Once<Outcome>>>>,
}

impl Verifier {
    /// Checks that `len` bytes of `file` from `base` hash to `digest`, and
    /// that the file still has identity `id` afterwards; returns the lease
    /// the proof stands on (reads must stop once it breaks). The table's
    /// lock is held only to find or insert an entry, never while hashing.
    pub fn check(
        &self,
        file: &Arc<File>,
        base: u64,
        len: u64,
        id: FileId,
        digest: &Digest,
    ) -> Result<Option<Arc<Lease>>, FsError> {
        let key = (id, base, len, digest.clone());
        // Twice at most: a kept proof whose lease broke is made again.
        for _ in 0..2 {
            let cell = self.cell(&key);
            match cell.get_or_init(|| prove(file, base, len, digest)) {
                Outcome::Matches(Some(lease)) if !lease.held() => self.forget(&key, &cell),
                Outcome::Matches(lease) => {
                    // Hashed bytes of a file rewritten while hashing prove nothing.
                    if !id.holds(&FileId::of(file)?) {
                        return Err(FsError::Changed);
                    }
                    return Ok(lease);
                }
                Outcome::Mismatch(actual) => {
                    return Err(FsError::Corrupt { actual });
                }
                Outcome::Failed(e) => {
                    self.forget(&key, &cell);
                    return Err(FsError::Io(match e {
                        Ok(errno) => io::Error::from_raw_os_error(errno),
                        Err(kind) => io::Error::from(kind),
                    }));
                }
                Outcome::BeingWritten => {
                    self.forget(&key, &cell);
                    return Err(FsError::BeingWritten);
                }
            }
        }
        Err(FsError::BeingWritten)
    }

    /// The entry of `key`, made if there is none.
    fn cell(&self, key: &Key) -> Arc<Once<Outcome>> {
        let mut results = self
            .results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if results.len() >= MAX_ENTRIES && !results.contains_key(key) {
            results.retain(|_, cell| cell.get().is_none());
        }
        results.entry(key.clone()).or_default().clone()
    }

    /// Drops the entry of `key` if it is still `cell`.
    fn forget(&self, key: &Key, cell: &Arc<Once<Outcome>>) {
        if let Ok(mut results) = self.results.lock() {
            if results.get(key).is_some_and(|c| Arc::ptr_eq(c, cell)) {
                results.remove(key);
            }
        }
    }

    /// Whether this version and range is known to hash to `digest`, with
    /// its lease still held.
    pub fn known_good(&self, id: FileId, base: u64, len: u64, digest: &Digest) -> bool {
        let key = (id, base, len, digest.clone());
        self.results.lock().is_ok_and(|r| {
            r.get(&key).is_some_and(|cell| match cell.get() {
                Some(Outcome::Matches(lease)) => lease.as_ref().is_none_or(|l| l.held()),
                _ => false,
            })
        })
    }

    /// How many results are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.results.lock().map_or(0, |r| r.len())
    }
}

/// Proofs made (tests count them).
#[cfg(test)]
static HASHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Takes a read lease on `file`, then hashes the range: a proof that holds
/// while the lease does. A file open for writing proves nothing.
fn prove(file: &Arc<File>, base: u64, len: u64, digest: &Digest) -> Outcome {
    #[cfg(test)]
    HASHED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let lease = match Lease::take(file) {
        Ok(lease) => Some(lease),
        Err(NoLease::BeingWritten) => return Outcome::BeingWritten,
        Err(NoLease::Unavailable(errno)) => {
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                log::warn!(
                    "no read lease on a blob's file ({}): a writer that maps it could change \
                     hashed bytes unseen (a lease needs the file's owner or CAP_LEASE)",
                    io::Error::from_raw_os_error(errno)
                );
            }
            None
        }
    };
    match hash_range(file, base, len, digest) {
        Ok(_) if lease.as_ref().is_some_and(|l| !l.held()) => Outcome::BeingWritten,
        Ok(actual) if actual == *digest => Outcome::Matches(lease),
        Ok(actual) => Outcome::Mismatch(actual),
        Err(e) => Outcome::Failed(e.raw_os_error().ok_or(e.kind())),
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
        let n = crate::files::readat::fill_at(file, base.saturating_add(done), chunk)?;
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

    /// A file holding `bytes`, opened read-only (a file open for writing
    /// is never proven), and a way to write it.
    fn read_only(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, Arc<File>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).unwrap();
        let f = Arc::new(File::open(&path).unwrap());
        (dir, path, f)
    }

    #[test]
    fn verify_table() {
        crate::files::lease::block_signal();
        let (_dir, path, f) = read_only(b"headerPAYLOADtrailer");
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
        assert!(v.known_good(id, 6, 7, &payload));
        // Opened for writing: the proof no longer stands, and while the
        // writer holds the file nothing is proven.
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        assert!(!v.known_good(id, 6, 7, &payload));
        let err = v.check(&f, 6, 7, id, &payload).unwrap_err();
        assert!(matches!(err, FsError::BeingWritten), "{err:?}");
        // A rewrite gives a new identity: the old result does not apply.
        w.write_all(b"more").unwrap();
        drop(w);
        let err = v.check(&f, 6, 7, id, &payload).unwrap_err();
        assert!(matches!(err, FsError::Changed), "{err:?}");
        let id2 = FileId::of(&f).unwrap();
        assert!(
            v.check(&f, 6, 7, id2, &payload).unwrap().is_some(),
            "leased"
        );
    }

    #[test]
    fn the_table_is_bounded() {
        crate::files::lease::block_signal();
        let (_dir, _path, f) = read_only(b"x");
        let id = FileId::of(&f).unwrap();
        let v = Verifier::default();
        for i in 0..(MAX_ENTRIES as u64 + 10) {
            let _ = v.check(&f, 0, 1, FileId { ino: i, ..id }, &Digest::sha256_of(b"x"));
        }
        assert!(v.len() <= MAX_ENTRIES, "{}", v.len());
    }

    /// Concurrent checks of one version: under every interleaving Shuttle
    /// tries, it is hashed once, every check gets the one proof, and the
    /// table keeps one entry.
    #[cfg(feature = "shuttle")]
    #[test]
    fn a_version_is_proven_once_under_any_interleaving() {
        crate::files::lease::block_signal();
        let (_dir, _path, f) = read_only(b"payload");
        let id = FileId::of(&f).unwrap();
        let digest = Digest::sha256_of(b"payload");
        shuttle::check_random(
            move || {
                let v = Arc::new(Verifier::default());
                let before = HASHED.load(std::sync::atomic::Ordering::SeqCst);
                let checks: Vec<_> = (0..3)
                    .map(|_| {
                        let (v, f, digest) = (v.clone(), f.clone(), digest.clone());
                        shuttle::thread::spawn(move || v.check(&f, 0, 7, id, &digest).is_ok())
                    })
                    .collect();
                for c in checks {
                    assert!(c.join().unwrap(), "a check failed");
                }
                assert_eq!(HASHED.load(std::sync::atomic::Ordering::SeqCst) - before, 1);
                assert_eq!(v.len(), 1);
            },
            1000,
        );
    }
}
