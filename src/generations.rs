//! The current snapshot of the virtual layout, and the recent ones it replaced.
//!
//! A rebuilt source gives a new snapshot, swapped in whole: a request sees the
//! old tree or the new, never a mix. A client that read `index.json` just
//! before a swap may still ask for the index blob and manifests it named, so
//! names missing from the current snapshot are looked up in the snapshots of
//! the last [`KEEP`] (hidden from listings). Open files never need a snapshot:
//! their handles hold what they opened.

use std::ffi::OsStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::layout::{Attr, Content, FsError, Layout};

/// How long replaced snapshots stay reachable by name.
pub const KEEP: Duration = Duration::from_secs(600);

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
}

impl Generations {
    /// Starts with `layout`.
    pub fn new(layout: Layout) -> Self {
        Generations {
            inner: RwLock::new(Inner {
                current: Arc::new(layout),
                retired: Vec::new(),
            }),
        }
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Layout> {
        match self.inner.read() {
            Ok(inner) => inner.current.clone(),
            Err(poisoned) => poisoned.into_inner().current.clone(),
        }
    }

    /// Makes `layout` current; the old one stays reachable by name for [`KEEP`].
    pub fn swap(&self, layout: Layout) {
        let layout = Arc::new(layout);
        let mut inner = match self.inner.write() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        };
        let old = std::mem::replace(&mut inner.current, layout);
        let now = Instant::now();
        inner.retired.insert(0, (now, old));
        inner
            .retired
            .retain(|(when, _)| now.duration_since(*when) < KEEP);
    }

    /// The retired snapshots still within [`KEEP`], newest first.
    fn retired(&self) -> Vec<Arc<Layout>> {
        let inner = match self.inner.read() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        inner
            .retired
            .iter()
            .filter(|(when, _)| now.duration_since(*when) < KEEP)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Asks the current snapshot, then the retired ones when it does not know.
    fn ask<T>(&self, f: impl Fn(&Layout) -> Result<T, FsError>) -> Result<T, FsError> {
        match f(&self.current()) {
            Err(FsError::NotFound) => {}
            other => return other,
        }
        for layout in self.retired() {
            match f(&layout) {
                Err(FsError::NotFound) => continue,
                other => return other,
            }
        }
        Err(FsError::NotFound)
    }

    /// Attributes of `ino`.
    pub fn attr(&self, ino: u64) -> Result<Attr, FsError> {
        self.ask(|l| l.attr(ino))
    }

    /// Looks `name` up in `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        self.ask(|l| l.lookup(parent, name))
    }

    /// Where the bytes of `ino` come from.
    pub fn content(&self, ino: u64) -> Result<Content, FsError> {
        self.ask(|l| l.content(ino).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::layout::ino;
    use crate::testutil::{composed, contribution, image};

    fn layout(seed: &str) -> (Layout, Digest) {
        let c = contribution("src", vec![image("linux/amd64", seed)]);
        let comp = composed(&[c]);
        (Layout::new(&comp), comp.index_digest)
    }

    #[test]
    fn old_names_stay_reachable_after_a_swap_but_are_not_listed() {
        let (first, first_index) = layout("one");
        let (second, second_index) = layout("two");
        let g = Generations::new(first);
        let old_json = g.content(ino::INDEX_JSON).unwrap();
        g.swap(second);
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
}
