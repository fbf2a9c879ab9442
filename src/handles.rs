//! What open files of the mount hold, and how their bytes are read: the
//! handle table, the backing id each inode shares while open, the fds the
//! daemon read path shares, and the counters logged at unmount.
//!
//! No FUSE types: the table is generic over the backing id `B` (fuser's
//! `BackingId` in the mount, a plain value in tests), so all of it is tested
//! without a kernel.
//!
//! Invariants:
//! - a handle holds everything its reads need (bytes, or a file, a range and
//!   the identity the file must keep), so reads never consult a snapshot that
//!   may have been swapped since;
//! - every open of an inode that uses passthrough shares one backing id (the
//!   kernel's rule): [`Handles::adopt_backing`] returns the id another open
//!   registered meanwhile;
//! - one fd per source file version ([`FileId`]), however many opens read it;
//! - the tables' locks are held only to look up, insert or remove an `Arc`,
//!   never across I/O or an ioctl (dropping the last backing id is one).

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::confine::FileId;
use crate::layout::FsError;
use crate::readat::read_at;
use crate::source::{Blob, Origin};
use crate::verify::Verifier;

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
    /// owner and writers are trusted ([`crate::confine::Access::passthrough`]), and not
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
    pub fn open(blob: &Blob, verify: bool, verifier: &Verifier) -> Result<Opened, FsError> {
        let (opened, must_hash) = Self::open_unhashed(blob, verify)?;
        if must_hash {
            opened.check(blob, verifier)?;
        }
        Ok(opened)
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
                };
                (range, verify || replaced)
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
                };
                (range, verify)
            }
        };
        let as_recorded = blob.origin.file_id() == range.id;
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
        if bytes.len() as u64 == want && self.id.holds(&FileId::of(&self.file)?) {
            Ok(bytes)
        } else {
            Err(FsError::Changed)
        }
    }
}

impl Opened {
    /// Hashes the range (once per file version: `verifier` keeps results)
    /// and fails unless it hashes to `blob`'s digest.
    pub fn check(&self, blob: &Blob, verifier: &Verifier) -> Result<(), FsError> {
        let r = &self.range;
        verifier.check(&r.file, r.base, r.len, r.id, &blob.digest)
    }

    /// Whether [`Opened::check`] would answer at once from a kept result.
    pub fn checked_before(&self, blob: &Blob, verifier: &Verifier) -> bool {
        let r = &self.range;
        verifier.known_good(r.id, r.base, r.len, &blob.digest)
    }
}

/// What an open file handle holds.
#[derive(Debug)]
pub(crate) enum Handle<B> {
    /// Generated bytes, as they were at open.
    Memory(Arc<[u8]>),
    /// The daemon reads this range of inode `ino`'s source.
    Read {
        /// The inode (its opens must all take one path: see
        /// [`Handles::backing_for`]).
        ino: u64,
        /// What reads read.
        range: FileRange,
    },
    /// The kernel reads the backing file; held so the id lives while open.
    Passthrough {
        /// The inode's backing id.
        _backing: Arc<B>,
    },
}

/// What `read` takes out of a handle (cloned, so no lock is held while reading).
#[derive(Debug)]
pub(crate) enum ReadFrom {
    /// Generated bytes.
    Memory(Arc<[u8]>),
    /// A source file's range.
    File(FileRange),
}

/// Open handles, the live backing id of each inode opened with passthrough,
/// and the open source files the daemon read path shares.
#[derive(Debug)]
pub(crate) struct Handles<B> {
    /// Whether new opens try passthrough: set when the kernel offers it,
    /// cleared for good by the first failed registration.
    passthrough: AtomicBool,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Handle<B>>>,
    backing: Mutex<HashMap<u64, Weak<B>>>,
    /// Open daemon-read handles per inode.
    daemon: Mutex<HashMap<u64, usize>>,
    files: Mutex<HashMap<FileId, Weak<File>>>,
}

impl<B> Default for Handles<B> {
    fn default() -> Self {
        Handles {
            passthrough: AtomicBool::new(false),
            next: AtomicU64::new(0),
            open: Mutex::default(),
            backing: Mutex::default(),
            daemon: Mutex::default(),
            files: Mutex::default(),
        }
    }
}

/// How many dead entries the shared-file table may hold before it is swept:
/// sweeps happen when its length reaches a power of two from here, so the
/// table stays within twice the files in use, at amortised constant cost.
const SWEEP_FROM: usize = 64;

impl<B> Handles<B> {
    /// The shared fd of file version `id` if one is open, else `file` (now shared).
    fn share(&self, id: FileId, file: Arc<File>) -> Arc<File> {
        let Ok(mut files) = self.files.lock() else {
            return file;
        };
        if let Some(live) = files.get(&id).and_then(Weak::upgrade) {
            return live; // `file` is closed when the caller drops it
        }
        if files.len() >= SWEEP_FROM && files.len().is_power_of_two() {
            files.retain(|_, w| w.strong_count() > 0);
        }
        files.insert(id, Arc::downgrade(&file));
        file
    }

    /// Stores a handle; returns its number (never 0, never reused). A daemon
    /// read handle's file is swapped for the shared fd of its version.
    pub fn insert(&self, handle: Handle<B>) -> u64 {
        let handle = match handle {
            Handle::Read { ino, range } => {
                if let Ok(mut daemon) = self.daemon.lock() {
                    *daemon.entry(ino).or_default() += 1;
                }
                Handle::Read {
                    ino,
                    range: FileRange {
                        file: self.share(range.id, range.file),
                        ..range
                    },
                }
            }
            other => other,
        };
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut open) = self.open.lock() {
            open.insert(fh, handle);
        }
        fh
    }

    /// What a read of handle `fh` reads; `None` for an unknown handle or one
    /// the kernel serves itself.
    pub fn read_from(&self, fh: u64) -> Option<ReadFrom> {
        match self.open.lock().ok()?.get(&fh)? {
            Handle::Memory(bytes) => Some(ReadFrom::Memory(bytes.clone())),
            Handle::Read { range, .. } => Some(ReadFrom::File(range.clone())),
            Handle::Passthrough { .. } => None,
        }
    }

    /// Removes a handle; what it held is dropped by the caller, after the
    /// lock is released (dropping the last backing id is an ioctl).
    pub fn remove(&self, fh: u64) -> Option<Handle<B>> {
        let handle = self.open.lock().ok()?.remove(&fh)?;
        if let (Handle::Read { ino, .. }, Ok(mut daemon)) = (&handle, self.daemon.lock()) {
            if let Some(n) = daemon.get_mut(ino) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    daemon.remove(ino);
                }
            }
        }
        Some(handle)
    }

    /// Turns passthrough on (the kernel offers it) or off.
    pub fn set_passthrough(&self, on: bool) {
        self.passthrough.store(on, Ordering::Relaxed);
    }

    /// The backing id a new open of `ino` uses, if any. All opens of an
    /// inode must take one path (the kernel fails an open that mixes them):
    /// the id its open handles hold, even after passthrough was switched off
    /// or `allowed` turned false; none while daemon-read handles of it are
    /// open or when passthrough is not `allowed` for it; else, while
    /// passthrough is on, one from `register`. The first failed registration
    /// switches passthrough off for good and is logged once; that open, and
    /// all later ones, use daemon reads.
    pub fn backing_for<E: std::fmt::Display>(
        &self,
        ino: u64,
        allowed: bool,
        register: impl FnOnce() -> Result<B, E>,
    ) -> Option<Arc<B>> {
        if let Some(live) = self.live_backing(ino) {
            return Some(live);
        }
        let daemon_reads = self.daemon.lock().map_or(true, |d| d.contains_key(&ino));
        if !allowed || daemon_reads || !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        match register() {
            Ok(id) => Some(self.adopt_backing(ino, id)),
            Err(e) => {
                if self.passthrough.swap(false, Ordering::Relaxed) {
                    log::warn!(
                        "read path: passthrough registration failed ({e}); daemon reads from now on"
                    );
                }
                None
            }
        }
    }

    /// The backing id an open handle of `ino` holds, if any.
    pub fn live_backing(&self, ino: u64) -> Option<Arc<B>> {
        self.backing.lock().ok()?.get(&ino)?.upgrade()
    }

    /// Records `id` as the inode's backing id, unless another open registered
    /// one meanwhile: then that one is returned and `id` is dropped, so that
    /// every open of the inode uses one id.
    pub fn adopt_backing(&self, ino: u64, id: B) -> Arc<B> {
        let id = Arc::new(id);
        let Ok(mut table) = self.backing.lock() else {
            return id;
        };
        if let Some(existing) = table.get(&ino).and_then(Weak::upgrade) {
            return existing;
        }
        table.retain(|_, w| w.strong_count() > 0);
        table.insert(ino, Arc::downgrade(&id));
        id
    }
}

/// Counters, logged when the filesystem is unmounted.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// READ requests the daemon answered.
    pub read_requests: AtomicU64,
    /// Bytes those requests returned.
    pub read_bytes: AtomicU64,
    /// Opens served by kernel passthrough.
    pub passthrough_opens: AtomicU64,
    /// Opens served by daemon reads.
    pub daemon_opens: AtomicU64,
}

impl Stats {
    /// Adds one to a counter.
    pub fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The line logged at unmount.
    pub fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "stats: {} read requests, {} bytes read by the daemon; {} passthrough opens, {} daemon opens",
            get(&self.read_requests),
            get(&self.read_bytes),
            get(&self.passthrough_opens),
            get(&self.daemon_opens),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::file_blob;
    use std::io::Write;

    #[test]
    fn one_backing_id_per_inode_while_open() {
        let h: Handles<&str> = Handles::default();
        let first = h.adopt_backing(7, "first");
        // A second open registered its own id meanwhile: it gets the first.
        assert_eq!(*h.adopt_backing(7, "second"), "first");
        assert_eq!(h.live_backing(7).as_deref(), Some(&"first"));
        assert!(h.live_backing(8).is_none());
        let fh = h.insert(Handle::Passthrough { _backing: first });
        assert!(
            h.read_from(fh).is_none(),
            "the kernel reads passthrough handles"
        );
        // Released by its last handle, the id is gone; the next open registers anew.
        drop(h.remove(fh));
        assert!(h.live_backing(7).is_none());
        assert_eq!(*h.adopt_backing(7, "third"), "third");
    }

    #[test]
    fn first_failed_registration_switches_passthrough_off_for_good() {
        let h: Handles<u32> = Handles::default();
        let fails = || Err::<u32, _>("ELOOP");
        // Off: nothing is registered.
        assert!(h.backing_for(1, true, || Ok::<_, &str>(10)).is_none());
        h.set_passthrough(true);
        let one = h.backing_for(1, true, || Ok::<_, &str>(10)).unwrap();
        assert_eq!(*one, 10);
        // A second open of inode 1 shares its id without registering.
        let again = h.backing_for(1, true, || -> Result<u32, &str> {
            panic!("registered twice")
        });
        assert!(Arc::ptr_eq(&one, &again.unwrap()));
        // Inode 2's registration fails: off for good...
        assert!(h.backing_for(2, true, fails).is_none());
        assert!(h.backing_for(3, true, || Ok::<_, &str>(30)).is_none());
        // ...but inode 1, still open with passthrough, keeps its id.
        assert!(Arc::ptr_eq(&one, &h.backing_for(1, true, fails).unwrap()));
        drop(one);
        assert!(h.backing_for(1, true, || Ok::<_, &str>(11)).is_none());
    }

    #[test]
    fn opens_of_one_inode_never_mix_passthrough_and_daemon_reads() {
        let h: Handles<u32> = Handles::default();
        h.set_passthrough(true);
        let f = tempfile::tempfile().unwrap();
        let range = FileRange {
            id: FileId::of(&f).unwrap(),
            file: Arc::new(f),
            base: 0,
            len: 0,
        };
        // Not allowed: daemon reads, nothing registered.
        let never = || -> Result<u32, &str> { panic!("registered") };
        assert!(h.backing_for(5, false, never).is_none());
        let fh = h.insert(Handle::Read { ino: 5, range });
        // Allowed now, but a daemon-read handle of inode 5 is open.
        assert!(h.backing_for(5, true, never).is_none());
        assert!(h.backing_for(6, true, || Ok::<_, &str>(60)).is_some());
        drop(h.remove(fh));
        let id = h.backing_for(5, true, || Ok::<_, &str>(50)).unwrap();
        // Not allowed any more, but passthrough handles are live: they agree.
        assert!(Arc::ptr_eq(&id, &h.backing_for(5, false, never).unwrap()));
    }

    #[test]
    fn handles_are_numbered_from_one_and_removed_once() {
        let h: Handles<()> = Handles::default();
        let a = h.insert(Handle::Memory(Arc::from(&b"a"[..])));
        let b = h.insert(Handle::Memory(Arc::from(&b"b"[..])));
        assert_eq!((a, b), (1, 2));
        assert!(matches!(h.read_from(b), Some(ReadFrom::Memory(m)) if &*m == b"b"));
        assert!(h.remove(a).is_some() && h.remove(a).is_none());
        assert!(h.read_from(a).is_none());
        assert!(h.read_from(999).is_none());
    }

    #[test]
    fn one_fd_per_file_version_and_dead_entries_swept() {
        let h: Handles<()> = Handles::default();
        let f = tempfile::tempfile().unwrap();
        let id = FileId::of(&f).unwrap();
        let first = h.share(id, Arc::new(f.try_clone().unwrap()));
        let second = h.share(id, Arc::new(f.try_clone().unwrap()));
        assert!(Arc::ptr_eq(&first, &second));
        drop((first, second));
        // Many versions opened and closed: the table stays bounded.
        for ino in 0..10_000 {
            let other = FileId { ino, ..id };
            drop(h.share(other, Arc::new(f.try_clone().unwrap())));
        }
        let held = h.files.lock().unwrap().len();
        assert!(held <= 2 * 8192, "{held} entries");
    }

    #[test]
    fn reads_are_exact_or_refused() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"..0123456789..").unwrap();
        let range = FileRange {
            id: FileId::of(&f).unwrap(),
            file: Arc::new(f.try_clone().unwrap()),
            base: 2,
            len: 10,
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
            Err(FsError::Refused(crate::confine::OpenError::Missing))
        ));
    }

    #[test]
    fn stats_summary_counts() {
        let s = Stats::default();
        Stats::count(&s.read_requests, 2);
        Stats::count(&s.read_bytes, 4096);
        Stats::count(&s.daemon_opens, 1);
        assert_eq!(
            s.summary(),
            "stats: 2 read requests, 4096 bytes read by the daemon; 0 passthrough opens, 1 daemon opens"
        );
    }
}
