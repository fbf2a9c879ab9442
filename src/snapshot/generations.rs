//! The current snapshot of the virtual layout, and the recent ones it replaced.
//!
//! A rebuilt source gives a new snapshot, swapped in whole: a request sees the
//! old tree or the new, never a mix. A client that read `index.json` just
//! before a swap may still ask for the index blob and manifests it named, so
//! names missing from the current snapshot are looked up in the snapshots of
//! the last [`KEEP`] (hidden from listings). Open files never need a snapshot:
//! their handles hold what they opened.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::snapshot::index::Composition;
use crate::snapshot::layout::{Attr, Content, FsError, Inodes, Layout, ino};
use crate::source::{Blob, Origin};

/// How long replaced snapshots stay reachable by name.
pub const KEEP: Duration = Duration::from_secs(600);

/// Bounds on the snapshots kept after being replaced: each is dropped
/// (closing the files it held) when it is older than `keep`, or to keep at
/// most `max_count` of them and `max_bytes` of their estimated memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Age limit.
    pub keep: Duration,
    /// Most snapshots kept.
    pub max_count: usize,
    /// Most estimated bytes kept ([`Layout::approx_bytes`]).
    pub max_bytes: u64,
}

/// The mount's retention: 10 minutes, 16 snapshots, 256 MiB.
pub const RETENTION: Retention = Retention {
    keep: KEEP,
    max_count: 16,
    max_bytes: 256 << 20,
};

/// What the kernel must forget after a swap, because a name's bytes now come
/// from elsewhere. The daemon sends these (FUSE notifications) from the
/// watcher's thread, never from a request handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The inode's cached attributes and pages (its file was replaced,
    /// rewritten, resized or its access changed).
    Inode(u64),
    /// A name no snapshot serves any more: its cached entry.
    Entry {
        /// The directory.
        parent: u64,
        /// The name in it.
        name: String,
    },
}

#[derive(Debug)]
struct Inner {
    current: Arc<Layout>,
    /// Replaced snapshots, newest first, with when they were replaced.
    retired: Vec<(Instant, Arc<Layout>)>,
}

/// The snapshots. The lock is held only to clone or swap `Arc`s.
#[derive(Debug)]
pub struct Generations {
    inner: RwLock<Inner>,
    retention: Retention,
    /// Blob inode numbers for the mount's life; used only while building.
    inodes: Mutex<Inodes>,
    /// Set while the sources do not compose (one vanished, or is mid-rewrite):
    /// files of the current snapshot may be gone, so lookups check them.
    degraded: AtomicBool,
    /// When the current snapshot was built, and why the sources do not
    /// compose now (since when), for `ocimux status`.
    health: Mutex<Health>,
}

/// What `ocimux status` reports of a set of snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// When the current snapshot was built.
    pub built: std::time::SystemTime,
    /// Rebuilds made since the start, and those that failed.
    pub rebuilds: u64,
    /// Of which failed.
    pub failed_rebuilds: u64,
    /// The newest sources do not compose: why, and since when the served
    /// snapshot is older than the sources.
    pub failing: Option<(String, std::time::SystemTime)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Generations {
    /// Starts with the snapshot of `comp`.
    pub fn new(comp: &Composition) -> Self {
        Self::with_retention(comp, RETENTION)
    }

    /// Starts with the snapshot of `comp`, keeping replaced ones within `retention`.
    pub fn with_retention(comp: &Composition, retention: Retention) -> Self {
        let mut inodes = Inodes::default();
        let layout = Layout::new(comp, &mut inodes);
        Generations {
            retention,
            inner: RwLock::new(Inner {
                current: Arc::new(layout),
                retired: Vec::new(),
            }),
            inodes: Mutex::new(inodes),
            degraded: AtomicBool::new(false),
            health: Mutex::new(Health {
                built: std::time::SystemTime::now(),
                rebuilds: 0,
                failed_rebuilds: 0,
                failing: None,
            }),
        }
    }

    /// How the snapshots fare (see [`Health`]).
    pub fn health(&self) -> Health {
        lock(&self.health).clone()
    }

    /// What `ocimux status` shows of them: the index served, its blobs and bytes,
    /// when it was built, rebuilds, and why newer sources fail, since when.
    pub fn report(&self) -> serde_json::Map<String, serde_json::Value> {
        use crate::process::state::unix;
        let current = self.current();
        let health = self.health();
        let failing = health
            .failing
            .map(|(error, since)| serde_json::json!({ "error": error, "since": unix(since) }));
        let mut m = serde_json::Map::new();
        m.insert("index".into(), current.index_digest().to_string().into());
        m.insert("blobs".into(), current.blob_count().into());
        m.insert("bytes".into(), current.total_bytes().into());
        m.insert("built".into(), unix(health.built).into());
        m.insert("rebuilds".into(), health.rebuilds.into());
        m.insert("failed_rebuilds".into(), health.failed_rebuilds.into());
        m.insert("failing".into(), failing.unwrap_or_default());
        m
    }

    /// Records a rebuild: swapped in (`Ok(true)`), composed to what is
    /// served already (`Ok(false)`), or failed with why.
    pub fn record_rebuild(&self, outcome: Result<bool, &str>) {
        let mut h = lock(&self.health);
        h.rebuilds += 1;
        match outcome {
            Ok(swapped) => {
                if swapped {
                    h.built = std::time::SystemTime::now();
                }
                h.failing = None;
            }
            Err(why) => {
                h.failed_rebuilds += 1;
                let since = match &h.failing {
                    Some((_, since)) => *since,
                    None => std::time::SystemTime::now(),
                };
                h.failing = Some((why.to_owned(), since));
            }
        }
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Layout> {
        match self.inner.read() {
            Ok(inner) => inner.current.clone(),
            Err(poisoned) => poisoned.into_inner().current.clone(),
        }
    }

    /// Builds the snapshot of `comp` and makes it current; the old one stays
    /// reachable by name within the retention. Returns what the kernel must
    /// forget: inodes whose bytes now come from elsewhere, and names no live
    /// snapshot serves (their numbers are forgotten too, never reused).
    pub fn swap(&self, comp: &Composition) -> Vec<Invalidation> {
        let layout = Arc::new(Layout::new(comp, &mut lock(&self.inodes)));
        let old = {
            let mut inner = self.write();
            let old = std::mem::replace(&mut inner.current, layout.clone());
            inner.retired.insert(0, (Instant::now(), old.clone()));
            old
        };
        let mut out: Vec<Invalidation> = layout
            .blobs()
            .filter(|(n, blob)| matches!(old.content(*n), Ok(Content::Blob(was)) if was != **blob))
            .map(|(n, _)| Invalidation::Inode(n))
            .collect();
        drop(old);
        out.extend(self.prune());
        out
    }

    /// Drops retired snapshots past the retention (closing what they held)
    /// and forgets the names none of the rest serves; returns those names'
    /// invalidations. Called at every swap and on the watcher's timer.
    pub fn prune(&self) -> Vec<Invalidation> {
        let r = self.retention;
        let (dropped, live) = {
            let mut inner = self.write();
            let now = Instant::now();
            let mut kept = Vec::new();
            let mut dropped = Vec::new();
            let mut bytes = 0u64;
            for (when, l) in std::mem::take(&mut inner.retired) {
                bytes = bytes.saturating_add(l.approx_bytes());
                let fits = now.duration_since(when) < r.keep
                    && kept.len() < r.max_count
                    && bytes <= r.max_bytes;
                if fits {
                    kept.push((when, l));
                } else {
                    dropped.push(l);
                }
            }
            inner.retired = kept;
            let live: Vec<Arc<Layout>> = std::iter::once(inner.current.clone())
                .chain(inner.retired.iter().map(|(_, l)| l.clone()))
                .collect();
            (dropped, live)
        };
        // Dropped here, outside the lock: closing files is I/O.
        drop(dropped);
        let forgotten = lock(&self.inodes).forget_unless(|d| live.iter().any(|l| l.has_blob(d)));
        forgotten
            .into_iter()
            .map(|(d, _)| Invalidation::Entry {
                parent: ino::dir_of(d.algorithm()),
                name: d.encoded().to_owned(),
            })
            .collect()
    }

    /// Drops every retained snapshot at once: they hold the access of their
    /// time, and a directory's permissions have changed since. Returns the
    /// names the kernel must forget.
    pub fn drop_retired(&self) -> Vec<Invalidation> {
        let dropped = std::mem::take(&mut self.write().retired);
        if dropped.is_empty() {
            return Vec::new();
        }
        // Closed outside the lock; then the names only they served go.
        drop(dropped);
        self.prune()
    }

    /// The source directories of every snapshot still served (once each).
    pub fn source_dirs(&self) -> Vec<Arc<crate::files::confine::SourceDir>> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        let layouts = std::iter::once(self.current()).chain(self.retired());
        for layout in layouts {
            for (_, blob) in layout.blobs() {
                if let crate::source::Origin::File { dir, .. } = &blob.origin {
                    if seen.insert(Arc::as_ptr(dir)) {
                        out.push(dir.clone());
                    }
                }
            }
        }
        out
    }

    /// How many replaced snapshots are kept.
    pub fn retired_count(&self) -> usize {
        match self.inner.read() {
            Ok(inner) => inner.retired.len(),
            Err(poisoned) => poisoned.into_inner().retired.len(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records whether the sources currently fail to compose (see `degraded`).
    pub fn set_degraded(&self, degraded: bool) {
        self.degraded.store(degraded, Ordering::Relaxed);
    }

    /// The retired snapshots still within the retention's age, newest first.
    fn retired(&self) -> Vec<Arc<Layout>> {
        let inner = match self.inner.read() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        inner
            .retired
            .iter()
            .filter(|(when, _)| now.duration_since(*when) < self.retention.keep)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Asks the current snapshot, then the retired ones when it does not know.
    /// `f` is told whether the snapshot's files may be gone: retired ones,
    /// and the current one while degraded.
    fn ask<T>(&self, f: impl Fn(&Layout, bool) -> Result<T, FsError>) -> Result<T, FsError> {
        match f(&self.current(), self.degraded.load(Ordering::Relaxed)) {
            Err(FsError::NotFound) => {}
            other => return other,
        }
        for layout in self.retired() {
            match f(&layout, true) {
                Err(FsError::NotFound) => continue,
                other => return other,
            }
        }
        Err(FsError::NotFound)
    }

    /// Attributes of `ino`.
    pub fn attr(&self, ino: u64) -> Result<Attr, FsError> {
        self.ask(|l, _| l.attr(ino))
    }

    /// Looks `name` up in `parent`. A blob whose source file has gone (its
    /// source vanished, or a rebuild dropped it) is not found: new lookups are
    /// refused while the rest of the snapshot is still served. That costs a
    /// stat, so it is done only where files may be gone: in retired snapshots,
    /// and in the current one while the sources do not compose.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        self.ask(|l, may_be_gone| {
            let attr = l.lookup(parent, name)?;
            match l.content(attr.ino) {
                Ok(Content::Blob(blob)) if may_be_gone && blob_gone(&blob) => {
                    Err(FsError::NotFound)
                }
                _ => Ok(attr),
            }
        })
    }

    /// Where the bytes of `ino` come from.
    #[cfg(test)]
    pub fn content(&self, ino: u64) -> Result<Content, FsError> {
        self.ask(|l, _| l.content(ino))
    }

    /// What the blob name `digest` serves (the generated index or a source
    /// blob), from the current snapshot or else a retained one, as a lookup
    /// in its `blobs/<algorithm>` directory would find it.
    pub fn by_digest(&self, digest: &crate::oci::digest::Digest) -> Result<Content, FsError> {
        self.ask(|l, may_be_gone| match l.by_digest(digest)? {
            Content::Blob(blob) if may_be_gone && blob_gone(&blob) => Err(FsError::NotFound),
            content => Ok(content),
        })
    }

    /// The current snapshot's ref names (→ digest, as its `index.json` says).
    pub fn tags(&self) -> BTreeMap<String, crate::oci::digest::Digest> {
        self.current().tags().clone()
    }

    /// The document `digest` as a snapshot still served (the current one or
    /// a retained one) read it, with its blob: there even when its file is
    /// gone.
    pub fn document(
        &self,
        digest: &crate::oci::digest::Digest,
    ) -> Option<(Arc<Blob>, crate::source::KeptDocument)> {
        let of = |l: &Layout| {
            let kept = l.document(digest)?;
            let dir = ino::dir_of(digest.algorithm());
            let attr = l.lookup(dir, OsStr::new(digest.encoded())).ok()?;
            match l.content(attr.ino) {
                Ok(Content::Blob(blob)) => Some((blob, kept)),
                _ => None,
            }
        };
        of(&self.current()).or_else(|| self.retired().iter().find_map(|l| of(l)))
    }

    /// Attributes and content of file `ino`, from one snapshot.
    pub fn file(&self, ino: u64) -> Result<(Attr, Content), FsError> {
        self.ask(|l, _| Ok((l.attr(ino)?, l.content(ino)?)))
    }
}

/// Whether a whole-file blob's file no longer has its name.
fn blob_gone(blob: &Blob) -> bool {
    match &blob.origin {
        Origin::File { dir, .. } => !dir.exists(&blob.rel()),
        Origin::Range { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest::Digest;
    use crate::snapshot::layout::ino;
    use crate::testing::testutil::{composed, contribution, file_origin, image};

    /// A composition whose manifest blob is the file `dir/SEED`.
    fn layout(dir: &std::path::Path, seed: &str) -> (Composition, Digest) {
        let mut c = contribution("src", vec![image("linux/amd64", seed)]);
        let path = dir.join(c.blobs[0].rel());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, seed).unwrap();
        let crate::files::confine::Resolved::Dir(d) = crate::files::confine::resolve(dir).unwrap()
        else {
            panic!("a directory")
        };
        Arc::make_mut(&mut c.blobs[0]).origin = file_origin(Arc::new(d), seed.len() as u64);
        let comp = composed(&[c]);
        let digest = comp.index_digest.clone();
        (comp, digest)
    }

    #[test]
    fn a_blob_whose_file_is_gone_is_not_found_by_name_while_degraded() {
        let dir = tempfile::tempdir().unwrap();
        let (l, _) = layout(dir.path(), "gone");
        let g = Generations::new(&l);
        let name = Digest::sha256_of(b"gone");
        let a = g.lookup(ino::SHA256, OsStr::new(name.encoded())).unwrap();
        std::fs::remove_file(dir.path().join(name.blob_path())).unwrap();
        // Not checked while the sources compose: a stat per lookup made a cold
        // find over 20,000 blobs 1.5x slower.
        assert!(g.lookup(ino::SHA256, OsStr::new(name.encoded())).is_ok());
        g.set_degraded(true);
        assert!(matches!(
            g.lookup(ino::SHA256, OsStr::new(name.encoded())),
            Err(FsError::NotFound)
        ));
        // An inode the kernel already knows still answers (its open will fail with ENOENT).
        assert_eq!(g.attr(a.ino).unwrap(), a);
        // Generated files have no source file to lose.
        assert!(g.lookup(ino::ROOT, OsStr::new("index.json")).is_ok());
    }

    #[test]
    fn old_names_stay_reachable_after_a_swap_but_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let (first, first_index) = layout(dir.path(), "one");
        let (second, second_index) = layout(dir.path(), "two");
        let g = Generations::new(&first);
        let old_json = g.content(ino::INDEX_JSON).unwrap();
        g.swap(&second);
        // index.json is the new one.
        assert_ne!(g.content(ino::INDEX_JSON).unwrap(), old_json);
        // The old index blob and manifest are still found by name and inode.
        for digest in [&first_index, &Digest::sha256_of(b"one")] {
            let a = g.lookup(ino::SHA256, OsStr::new(digest.encoded())).unwrap();
            assert_eq!(g.attr(a.ino).unwrap(), a);
            assert!(g.content(a.ino).is_ok());
        }
        // Listing shows only the current snapshot.
        let names: Vec<String> = g
            .current()
            .read_dir(ino::SHA256, 2)
            .unwrap()
            .map(|e| e.name.to_owned())
            .collect();
        assert!(names.contains(&second_index.encoded().to_owned()));
        assert!(!names.contains(&first_index.encoded().to_owned()));
        assert!(matches!(
            g.lookup(ino::SHA256, OsStr::new("nope")),
            Err(FsError::NotFound)
        ));
    }

    #[test]
    fn retired_snapshots_are_bounded_and_their_names_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let comps: Vec<(Composition, Digest)> = (0..6)
            .map(|i| layout(dir.path(), &format!("gen{i}")))
            .collect();
        let r = Retention {
            keep: Duration::from_secs(600),
            max_count: 2,
            max_bytes: u64::MAX,
        };
        let g = Generations::with_retention(&comps[0].0, r);
        let mut forgotten = Vec::new();
        for (c, _) in &comps[1..] {
            forgotten.extend(g.swap(c));
            assert!(g.retired_count() <= 2);
        }
        // gen0..gen2 are out of the count: their manifests and indexes are
        // forgotten, and the kernel told to forget the names.
        for seed in ["gen0", "gen1", "gen2"] {
            let d = Digest::sha256_of(seed.as_bytes());
            assert!(
                forgotten.contains(&Invalidation::Entry {
                    parent: ino::SHA256,
                    name: d.encoded().to_owned()
                }),
                "{seed}"
            );
            assert!(g.lookup(ino::SHA256, OsStr::new(d.encoded())).is_err());
        }
        for seed in ["gen3", "gen4", "gen5"] {
            let d = Digest::sha256_of(seed.as_bytes());
            assert!(
                g.lookup(ino::SHA256, OsStr::new(d.encoded())).is_ok(),
                "{seed}"
            );
        }
        // By age: with keep = 0 a prune drops every retired snapshot.
        let g = Generations::with_retention(
            &comps[0].0,
            Retention {
                keep: Duration::ZERO,
                ..r
            },
        );
        g.swap(&comps[1].0);
        assert_eq!(g.retired_count(), 0);
        // By bytes: a cap below one snapshot keeps none.
        let g = Generations::with_retention(&comps[0].0, Retention { max_bytes: 1, ..r });
        g.swap(&comps[1].0);
        assert_eq!(g.retired_count(), 0);
    }

    #[test]
    fn a_swap_invalidates_inodes_whose_bytes_moved() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = layout(dir.path(), "same");
        let g = Generations::new(&first);
        // The same composition again: nothing moved.
        assert!(
            g.swap(&first)
                .iter()
                .all(|i| !matches!(i, Invalidation::Inode(_)))
        );
        // The manifest's file is another one now (other identity).
        let mut moved = first.clone();
        if let Some(b) = moved.blobs.first_mut() {
            if let Origin::File { id, .. } = &mut Arc::make_mut(b).origin {
                id.ino += 1;
            }
        }
        let n = g
            .current()
            .lookup(ino::SHA256, OsStr::new(moved.blobs[0].digest.encoded()))
            .unwrap()
            .ino;
        assert!(g.swap(&moved).contains(&Invalidation::Inode(n)));
    }
}
