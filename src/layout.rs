//! The immutable snapshot of the virtual layout: inode numbers, directories,
//! attributes, and where each file's bytes come from. No FUSE types here; the
//! adapter in [`crate::fs`] only translates.
//!
//! Tree:
//! ```text
//! /                  oci-layout  index.json  blobs/
//! /blobs/            sha256/ [sha512/]
//! /blobs/<alg>/<hex> one file per reachable blob, plus the generated index
//! ```

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::digest::{Algorithm, Digest};
pub use crate::error::FsError;
use crate::index::Composition;
use crate::source::Blob;

/// `oci-layout`'s content.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Inode numbers. Fixed ones are here; blob numbers come from [`Inodes`],
/// the one place where they are assigned:
/// - 1 is the root (FUSE's convention), 2..=15 are the fixed directories and
///   generated files;
/// - blobs get numbers from [`FIRST_BLOB`](ino::FIRST_BLOB) up, one per digest.
pub mod ino {
    /// The root directory.
    pub const ROOT: u64 = 1;
    /// `/blobs`.
    pub const BLOBS: u64 = 2;
    /// `/oci-layout`.
    pub const OCI_LAYOUT: u64 = 3;
    /// `/index.json`.
    pub const INDEX_JSON: u64 = 4;
    /// `/blobs/sha256`.
    pub const SHA256: u64 = 5;
    /// `/blobs/sha512`.
    pub const SHA512: u64 = 6;
    /// The first blob number.
    pub const FIRST_BLOB: u64 = 16;

    /// The directory that lists blobs of `algorithm`.
    pub fn dir_of(algorithm: crate::digest::Algorithm) -> u64 {
        match algorithm {
            crate::digest::Algorithm::Sha256 => SHA256,
            crate::digest::Algorithm::Sha512 => SHA512,
        }
    }
}

/// Blob inode numbers, one per digest, shared by every snapshot of a mount.
///
/// A digest keeps its number while some live snapshot serves it, so the
/// kernel's cached entries stay right across rebuilds. Numbers come from a
/// counter and are never given out twice in a mount's life, so no number can
/// ever name two digests (no generation numbers needed): a digest that is
/// forgotten and comes back gets a new number. Assigned in the order asked;
/// [`Layout::new`] asks source blobs in digest order first, so the same blobs
/// get the same numbers on every mount, whatever the source order.
#[derive(Debug)]
pub struct Inodes {
    by_digest: HashMap<Digest, u64>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        Inodes {
            by_digest: HashMap::new(),
            next: ino::FIRST_BLOB,
        }
    }
}

impl Inodes {
    /// The number of `digest`, assigning the next free one the first time.
    pub fn of(&mut self, digest: &Digest) -> u64 {
        if let Some(n) = self.by_digest.get(digest) {
            return *n;
        }
        let n = self.next;
        self.next += 1;
        self.by_digest.insert(digest.clone(), n);
        n
    }

    /// Forgets every digest for which `keep` is false; returns them with
    /// their numbers.
    pub fn forget_unless(&mut self, keep: impl Fn(&Digest) -> bool) -> Vec<(Digest, u64)> {
        let mut gone = Vec::new();
        self.by_digest.retain(|d, n| {
            let k = keep(d);
            if !k {
                gone.push((d.clone(), *n));
            }
            k
        });
        gone
    }
}

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory (mode 0555).
    Dir,
    /// A regular file (mode 0444).
    File,
}

/// Who owns a node, as the mount shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The user who mounted (generated files and directories).
    Mount,
    /// The source file's owner and group (source blobs).
    Source {
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
}

impl Owner {
    /// (uid, gid) as shown, given the mount owner's.
    pub fn ids(self, mount_uid: u32, mount_gid: u32) -> (u32, u32) {
        match self {
            Owner::Mount => (mount_uid, mount_gid),
            Owner::Source { uid, gid } => (uid, gid),
        }
    }
}

/// Attributes of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
    /// Exact size in bytes (directories: number of entries).
    pub size: u64,
    /// Permission bits: 0555 for directories, 0444 for generated files, the
    /// source's read bits for blobs.
    pub perm: u16,
    /// Owner and group.
    pub owner: Owner,
    /// Link count.
    pub nlink: u32,
    /// Modification time: the snapshot's creation.
    pub mtime: SystemTime,
    /// Whether the content or size may differ in the next snapshot (index.json,
    /// directories): the kernel must not cache it. Blobs are content-addressed
    /// and never volatile.
    pub volatile: bool,
}

impl Attr {
    /// 512-byte blocks, rounded up, as `st_blocks` reports them.
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(512)
    }
}

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Generated, held in memory.
    Memory(Arc<[u8]>),
    /// A source blob, served byte for byte from where it is on disk.
    Blob(Blob),
}

/// One directory entry as listed by [`Layout::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry<'a> {
    /// The entry's inode.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
    /// Its name.
    pub name: &'a str,
    /// The offset to resume listing after this entry.
    pub next_offset: u64,
}

#[derive(Debug)]
enum Body {
    /// Children sorted by name (binary-searched by lookup).
    Dir {
        parent: u64,
        children: Vec<(String, u64)>,
    },
    File(Content),
}

#[derive(Debug)]
struct Node {
    attr: Attr,
    body: Body,
}

/// The virtual layout.
#[derive(Debug)]
pub struct Layout {
    nodes: HashMap<u64, Node>,
    index_digest: Digest,
    file_count: usize,
    total_bytes: u64,
}

impl Layout {
    /// Builds the tree for a composition, numbering blobs from `inodes`.
    pub fn new(comp: &Composition, inodes: &mut Inodes) -> Self {
        let mut b = Builder {
            nodes: HashMap::new(),
            mtime: SystemTime::now(),
            per_alg: [Vec::new(), Vec::new()],
        };
        b.file(ino::OCI_LAYOUT, Content::Memory(Arc::from(OCI_LAYOUT)));
        b.file(
            ino::INDEX_JSON,
            Content::Memory(Arc::from(comp.index_json.as_slice())),
        );
        // Source blobs first, in digest order (see [`Inodes`]).
        for blob in &comp.blobs {
            if blob.digest == comp.index_digest {
                continue; // a source happens to hold the generated index: serve ours
            }
            b.blob(
                inodes.of(&blob.digest),
                &blob.digest,
                Content::Blob(blob.clone()),
            );
        }
        let index = Content::Memory(Arc::from(comp.index.as_slice()));
        b.blob(inodes.of(&comp.index_digest), &comp.index_digest, index);
        let [sha256, sha512] = std::mem::take(&mut b.per_alg);
        let mut alg_dirs = vec![("sha256".to_owned(), ino::SHA256)];
        b.dir(ino::SHA256, ino::BLOBS, sha256);
        if !sha512.is_empty() {
            b.dir(ino::SHA512, ino::BLOBS, sha512);
            alg_dirs.push(("sha512".to_owned(), ino::SHA512));
        }
        b.dir(ino::BLOBS, ino::ROOT, alg_dirs);
        let root_children = vec![
            ("blobs".to_owned(), ino::BLOBS),
            ("index.json".to_owned(), ino::INDEX_JSON),
            ("oci-layout".to_owned(), ino::OCI_LAYOUT),
        ];
        b.dir(ino::ROOT, ino::ROOT, root_children);
        let nodes = b.nodes;
        let files = || nodes.values().filter(|n| n.attr.kind == Kind::File);
        let (file_count, total_bytes) = (files().count(), files().map(|n| n.attr.size).sum());
        Layout {
            file_count,
            total_bytes,
            nodes,
            index_digest: comp.index_digest.clone(),
        }
    }

    /// Every source blob the layout serves, with its inode number.
    pub fn blobs(&self) -> impl Iterator<Item = (u64, &Blob)> {
        self.nodes.iter().filter_map(|(ino, n)| match &n.body {
            Body::File(Content::Blob(b)) => Some((*ino, b)),
            _ => None,
        })
    }

    /// Whether the layout serves a file named `digest`.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        let dir = ino::dir_of(digest.algorithm());
        matches!(self.nodes.get(&dir).map(|n| &n.body), Some(Body::Dir { children, .. })
            if children.binary_search_by(|(n, _)| n.as_str().cmp(digest.encoded())).is_ok())
    }

    /// The generated index's digest.
    pub fn index_digest(&self) -> &Digest {
        &self.index_digest
    }

    /// Bytes of all files the layout serves.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// An estimate of the memory the snapshot holds: nodes, names and
    /// generated bytes (for bounding retired snapshots).
    pub fn approx_bytes(&self) -> u64 {
        let generated: u64 = self
            .nodes
            .values()
            .filter_map(|n| match &n.body {
                Body::File(Content::Memory(b)) => Some(b.len() as u64),
                _ => None,
            })
            .sum();
        (self.nodes.len() as u64).saturating_mul(320) + generated
    }

    /// How many files the layout serves.
    pub fn file_count(&self) -> usize {
        self.file_count
    }

    fn node(&self, ino: u64) -> Result<&Node, FsError> {
        self.nodes.get(&ino).ok_or(FsError::NotFound)
    }

    /// Attributes of `ino`.
    pub fn attr(&self, ino: u64) -> Result<Attr, FsError> {
        Ok(self.node(ino)?.attr)
    }

    /// Looks `name` up in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        let Body::Dir {
            parent: up,
            children,
        } = &self.node(parent)?.body
        else {
            return Err(FsError::NotDir);
        };
        let Some(name) = name.to_str() else {
            return Err(FsError::NotFound);
        };
        let ino = match name {
            "." => parent,
            ".." => *up,
            _ => {
                let i = children
                    .binary_search_by(|(n, _)| n.as_str().cmp(name))
                    .map_err(|_| FsError::NotFound)?;
                children.get(i).map(|(_, c)| *c).ok_or(FsError::NotFound)?
            }
        };
        self.attr(ino)
    }

    /// Lists directory `ino` from `offset`: `.` is offset 0, `..` is 1, then the
    /// children in name order. Each entry carries the offset that resumes after
    /// it, so listing survives any buffer size and seeking back.
    pub fn read_dir(
        &self,
        ino: u64,
        offset: u64,
    ) -> Result<impl Iterator<Item = DirEntry<'_>>, FsError> {
        let Body::Dir { parent, children } = &self.node(ino)?.body else {
            return Err(FsError::NotDir);
        };
        let dots = [(".", ino), ("..", *parent)];
        let all = dots
            .into_iter()
            .chain(children.iter().map(|(n, c)| (n.as_str(), *c)))
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .map(move |(i, (name, child))| DirEntry {
                ino: child,
                kind: self.nodes.get(&child).map_or(Kind::File, |n| n.attr.kind),
                name,
                next_offset: i as u64 + 1,
            });
        Ok(all)
    }

    /// Where the bytes of file `ino` come from.
    pub fn content(&self, ino: u64) -> Result<&Content, FsError> {
        match &self.node(ino)?.body {
            Body::File(c) => Ok(c),
            Body::Dir { .. } => Err(FsError::IsDir),
        }
    }
}

/// Builds a [`Layout`]'s nodes.
struct Builder {
    nodes: HashMap<u64, Node>,
    mtime: SystemTime,
    /// Blob directory entries, per algorithm (sha256, sha512).
    per_alg: [Vec<(String, u64)>; 2],
}

impl Builder {
    /// A file node. Blobs show their source's owner and read bits; generated
    /// files the mount owner's and `0444`.
    fn file(&mut self, ino: u64, content: Content) {
        let (size, perm, owner) = match &content {
            Content::Memory(b) => (b.len() as u64, 0o444, Owner::Mount),
            Content::Blob(blob) => (
                blob.size,
                blob.access.mode,
                Owner::Source {
                    uid: blob.access.uid,
                    gid: blob.access.gid,
                },
            ),
        };
        let attr = Attr {
            ino,
            kind: Kind::File,
            size,
            perm,
            owner,
            nlink: 1,
            mtime: self.mtime,
            volatile: ino == ino::INDEX_JSON,
        };
        let body = Body::File(content);
        self.nodes.insert(ino, Node { attr, body });
    }

    /// A blob file, listed in its algorithm's directory.
    fn blob(&mut self, ino: u64, digest: &Digest, content: Content) {
        let slot = match digest.algorithm() {
            Algorithm::Sha256 => 0,
            Algorithm::Sha512 => 1,
        };
        if let Some(list) = self.per_alg.get_mut(slot) {
            list.push((digest.encoded().to_owned(), ino));
        }
        self.file(ino, content);
    }

    fn dir(&mut self, ino: u64, parent: u64, mut children: Vec<(String, u64)>) {
        children.sort();
        let subdirs = children
            .iter()
            .filter(|(_, c)| self.nodes.get(c).is_some_and(|n| n.attr.kind == Kind::Dir))
            .count();
        let attr = Attr {
            ino,
            kind: Kind::Dir,
            size: children.len() as u64,
            perm: 0o555,
            owner: Owner::Mount,
            nlink: 2 + u32::try_from(subdirs).unwrap_or(u32::MAX - 2),
            mtime: self.mtime,
            volatile: true,
        };
        let body = Body::Dir { parent, children };
        self.nodes.insert(ino, Node { attr, body });
    }
}

/// The part of `bytes` that a read of `size` bytes at `offset` returns: empty
/// past the end, never a panic.
pub fn slice_at(bytes: &[u8], offset: u64, size: u32) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let end = start.saturating_add(size as usize).min(bytes.len());
    bytes.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{blob, composed, contribution, image};

    fn layout() -> (Layout, Composition, Inodes) {
        let mut c = contribution("src", vec![image("linux/amd64", "manifest")]);
        let mut big = blob("big");
        big.digest = crate::digest::Algorithm::Sha512.hash(b"big");
        c.blobs.extend([blob("config"), blob("layer"), big]);
        let comp = composed(&[c]);
        let mut inodes = Inodes::default();
        (Layout::new(&comp, &mut inodes), comp, inodes)
    }

    #[test]
    fn lookup_table() {
        let (l, comp, mut inodes) = layout();
        let layer = Digest::sha256_of(b"layer");
        let cases: &[(u64, &str, Result<u64, &str>)] = &[
            (ino::ROOT, "oci-layout", Ok(ino::OCI_LAYOUT)),
            (ino::ROOT, "index.json", Ok(ino::INDEX_JSON)),
            (ino::ROOT, "blobs", Ok(ino::BLOBS)),
            (ino::ROOT, ".", Ok(ino::ROOT)),
            (ino::ROOT, "..", Ok(ino::ROOT)),
            (ino::BLOBS, "sha256", Ok(ino::SHA256)),
            (ino::BLOBS, "sha512", Ok(ino::SHA512)),
            (ino::BLOBS, "..", Ok(ino::ROOT)),
            (ino::SHA256, layer.encoded(), Ok(inodes.of(&layer))),
            (
                ino::SHA256,
                comp.index_digest.encoded(),
                Ok(inodes.of(&comp.index_digest)),
            ),
            (ino::SHA256, "nope", Err("not found")),
            (ino::ROOT, "missing", Err("not found")),
            (ino::OCI_LAYOUT, "x", Err("not a directory")),
            (999, "x", Err("not found")),
        ];
        for (parent, name, want) in cases {
            match (l.lookup(*parent, OsStr::new(name)), want) {
                (Ok(a), Ok(ino)) => assert_eq!(a.ino, *ino, "{parent}/{name}"),
                (Err(e), Err(msg)) => assert_eq!(e.to_string(), *msg, "{parent}/{name}"),
                (got, want) => panic!("{parent}/{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn attributes() {
        let (l, comp, _) = layout();
        let root = l.attr(ino::ROOT).unwrap();
        assert_eq!((root.kind, root.perm, root.nlink), (Kind::Dir, 0o555, 3));
        let index = l.attr(ino::INDEX_JSON).unwrap();
        assert!(index.volatile && root.volatile);
        assert!(!l.attr(ino::OCI_LAYOUT).unwrap().volatile);
        assert_eq!(
            (index.kind, index.perm, index.size),
            (Kind::File, 0o444, comp.index_json.len() as u64)
        );
        assert_eq!(
            l.attr(ino::OCI_LAYOUT).unwrap().size,
            OCI_LAYOUT.len() as u64
        );
        let layer = l
            .lookup(
                ino::SHA256,
                OsStr::new(Digest::sha256_of(b"layer").encoded()),
            )
            .unwrap();
        assert_eq!((layer.size, layer.blocks()), (5, 1));
        assert!(matches!(
            l.content(layer.ino).unwrap(),
            Content::Blob(Blob { size: 5, .. })
        ));
        // A blob shows its source file's owner and read bits; generated files the mount's.
        assert_eq!(
            (layer.perm, layer.owner),
            (0o440, Owner::Source { uid: 7, gid: 8 })
        );
        assert_eq!((index.owner, index.perm), (Owner::Mount, 0o444));
        assert!(matches!(l.content(ino::BLOBS), Err(FsError::IsDir)));
        assert_eq!(l.file_count(), 2 + 1 + 4);
    }

    #[test]
    fn readdir_resumes_at_every_offset() {
        let (l, _, _) = layout();
        let full: Vec<(String, u64)> = l
            .read_dir(ino::SHA256, 0)
            .unwrap()
            .map(|e| (e.name.to_owned(), e.next_offset))
            .collect();
        assert_eq!(full.len(), 2 + 4, "{full:?}"); // . .. index manifest config layer
        assert_eq!(full[0].0, ".");
        assert_eq!(full[1].0, "..");
        let names: Vec<&str> = full[2..].iter().map(|(n, _)| n.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        // One entry per call (the smallest buffer), and seeking back to any offset.
        for start in 0..=full.len() {
            let mut offset = start as u64;
            let mut got = Vec::new();
            while let Some(e) = l.read_dir(ino::SHA256, offset).unwrap().next() {
                got.push(e.name.to_owned());
                offset = e.next_offset;
            }
            let want: Vec<String> = full[start..].iter().map(|(n, _)| n.clone()).collect();
            assert_eq!(got, want, "from {start}");
        }
        assert_eq!(l.read_dir(ino::SHA256, u64::MAX).unwrap().count(), 0);
        assert!(matches!(
            l.read_dir(ino::INDEX_JSON, 0),
            Err(FsError::NotDir)
        ));
    }

    #[test]
    fn blob_inodes_are_stable_across_rebuilds_and_unique_per_digest() {
        let (a, _, mut inodes) = layout();
        let name = Digest::sha256_of(b"config");
        let first = a
            .lookup(ino::SHA256, OsStr::new(name.encoded()))
            .unwrap()
            .ino;
        // A rebuild with the same table keeps the number.
        let (b_comp, b) = {
            let mut c = contribution("src", vec![image("linux/amd64", "manifest")]);
            c.blobs.push(blob("config"));
            let comp = composed(&[c]);
            let l = Layout::new(&comp, &mut inodes);
            (comp, l)
        };
        let again = b
            .lookup(ino::SHA256, OsStr::new(name.encoded()))
            .unwrap()
            .ino;
        assert_eq!(first, again);
        assert!(first >= ino::FIRST_BLOB);
        // Digests that share their first 16 hex digits (what a hash-prefix
        // scheme confused) get different numbers.
        let x = Digest::parse(&format!("sha256:{}{}", "a".repeat(16), "0".repeat(48))).unwrap();
        let y = Digest::parse(&format!("sha256:{}{}", "a".repeat(16), "1".repeat(48))).unwrap();
        assert_ne!(inodes.of(&x), inodes.of(&y));
        // A forgotten digest never gets its old number back.
        let before = inodes.of(&x);
        let gone = inodes.forget_unless(|d| *d != x);
        assert_eq!(gone, vec![(x.clone(), before)]);
        assert_ne!(inodes.of(&x), before);
        assert!(b.has_blob(&name) && !b.has_blob(&x));
        assert_eq!(b.blobs().count(), b_comp.blobs.len());
    }

    #[test]
    fn slice_at_clamps() {
        let b = b"hello";
        let cases: &[(u64, u32, &[u8])] = &[
            (0, 5, b"hello"),
            (0, 100, b"hello"),
            (1, 2, b"el"),
            (5, 1, b""),
            (6, 1, b""),
            (u64::MAX, u32::MAX, b""),
        ];
        for (off, size, want) in cases {
            assert_eq!(slice_at(b, *off, *size), *want, "{off} {size}");
        }
    }
}
