//! The immutable snapshot of the virtual layout: inode numbers, directories,
//! attributes, and where each file's bytes come from. No FUSE types here; the
//! adapter in [`crate::mount::fs`] only translates.
//!
//! Tree:
//! ```text
//! /                  oci-layout  index.json  blobs/
//! /blobs/            sha256/ [sha512/]
//! /blobs/<alg>/<hex> one file per reachable blob, plus the generated index
//! ```

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::SystemTime;

pub use crate::error::FsError;
use crate::oci::digest::{Algorithm, Digest};
use crate::snapshot::index::Composition;
use crate::source::{Blob, Image, KeptDocument};

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
    pub fn dir_of(algorithm: crate::oci::digest::Algorithm) -> u64 {
        match algorithm {
            crate::oci::digest::Algorithm::Sha256 => SHA256,
            crate::oci::digest::Algorithm::Sha512 => SHA512,
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
    /// SHA-256 digests by their 32 bytes (a table entry per blob of every
    /// live snapshot: half the size of the hex).
    sha256: HashMap<[u8; 32], u64>,
    /// The rest (SHA-512).
    other: HashMap<Digest, u64>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        Inodes {
            sha256: HashMap::new(),
            other: HashMap::new(),
            next: ino::FIRST_BLOB,
        }
    }
}

impl Inodes {
    /// The number of `digest`, assigning the next free one the first time.
    pub fn of(&mut self, digest: &Digest) -> u64 {
        let next = &mut self.next;
        let fresh = || {
            let n = *next;
            *next += 1;
            n
        };
        match digest.sha256_bytes() {
            Some(bytes) => *self.sha256.entry(bytes).or_insert_with(fresh),
            None => *self.other.entry(digest.clone()).or_insert_with(fresh),
        }
    }

    /// Forgets every digest for which `keep` is false; returns them with
    /// their numbers.
    pub fn forget_unless(&mut self, keep: impl Fn(&Digest) -> bool) -> Vec<(Digest, u64)> {
        let mut gone = Vec::new();
        self.sha256.retain(|bytes, n| {
            let d = Digest::from_sha256_bytes(bytes);
            let k = keep(&d);
            if !k {
                gone.push((d, *n));
            }
            k
        });
        self.other.retain(|d, n| {
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
    /// A source blob, served byte for byte from where it is on disk (shared
    /// by every snapshot that serves it unchanged).
    Blob(Arc<Blob>),
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
enum Children {
    /// The root and `blobs/`: fixed names, sorted.
    Fixed(Vec<(&'static str, u64)>),
    /// An algorithm's directory: [`Layout::listing`]'s slot.
    Blobs(usize),
}

#[derive(Debug)]
enum Body {
    Dir { parent: u64, children: Children },
    File(Content),
}

#[derive(Debug)]
struct Node {
    attr: Attr,
    body: Body,
}

/// The virtual layout.
///
/// Memory: the fixed nodes (directories, generated files) are a handful;
/// each source blob costs one map entry (its number and a shared pointer)
/// and one listing slot, its attributes derived from the blob when asked.
/// The blobs themselves are shared with the composition and with every other
/// snapshot that serves them unchanged.
#[derive(Debug)]
pub struct Layout {
    fixed: HashMap<u64, Node>,
    blobs: HashMap<u64, Arc<Blob>>,
    /// Per algorithm (sha256, sha512): blob numbers in name order, the
    /// generated index among them.
    listing: [Vec<u64>; 2],
    index_ino: u64,
    index_digest: Digest,
    mtime: SystemTime,
    file_count: usize,
    total_bytes: u64,
    /// The composition's kept documents (see [`KeptDocument`]).
    documents: Arc<HashMap<Digest, KeptDocument>>,
    /// Tag → digest, as `index.json` names them.
    tags: BTreeMap<String, Digest>,
    /// The index's platform manifests, in its order.
    images: Vec<Image>,
}

fn slot_of(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::Sha256 => 0,
        Algorithm::Sha512 => 1,
    }
}

impl Layout {
    /// Builds the tree for a composition, numbering blobs from `inodes`.
    pub fn new(comp: &Composition, inodes: &mut Inodes) -> Self {
        let mtime = SystemTime::now();
        let mut fixed = HashMap::new();
        let generated = |ino: u64, bytes: &[u8]| (ino, file_node(ino, Arc::from(bytes), mtime));
        fixed.extend([
            generated(ino::OCI_LAYOUT, OCI_LAYOUT),
            generated(ino::INDEX_JSON, &comp.index_json),
        ]);
        let (blobs, index_ino, listing) = number_blobs(comp, inodes);
        fixed.extend([generated(index_ino, &comp.index)]);
        fixed.extend(directories(&listing, mtime));
        let generated_files = fixed.values().filter(|n| n.attr.kind == Kind::File);
        let (gen_count, gen_bytes) =
            generated_files.fold((0, 0), |(c, b), n| (c + 1, b + n.attr.size));
        Layout {
            file_count: gen_count + blobs.len(),
            total_bytes: gen_bytes + blobs.values().map(|b| b.size).sum::<u64>(),
            documents: comp.documents.clone(),
            tags: tags_of(&comp.index_json),
            images: comp.rows.iter().map(|r| r.image.clone()).collect(),
            fixed,
            blobs,
            listing,
            index_ino,
            index_digest: comp.index_digest.clone(),
            mtime,
        }
    }

    /// Every source blob the layout serves, with its inode number.
    pub fn blobs(&self) -> impl Iterator<Item = (u64, &Arc<Blob>)> {
        self.blobs.iter().map(|(n, b)| (*n, b))
    }

    /// The name of `ino` in its algorithm's directory.
    fn name_of(&self, ino: u64) -> &str {
        match self.blobs.get(&ino) {
            Some(b) => b.digest.encoded(),
            None if ino == self.index_ino => self.index_digest.encoded(),
            None => "",
        }
    }

    /// Where `name` is in listing `slot`.
    fn find_in(&self, slot: usize, name: &str) -> Option<u64> {
        let list = self.listing.get(slot)?;
        let i = list.binary_search_by(|n| self.name_of(*n).cmp(name)).ok()?;
        list.get(i).copied()
    }

    /// Whether the layout serves a file named `digest`.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.find_in(slot_of(digest.algorithm()), digest.encoded())
            .is_some()
    }

    /// What the blob named `digest` serves (the generated index or a source
    /// blob): the snapshot asked by digest, as the server asks it.
    pub fn by_digest(&self, digest: &Digest) -> Result<Content, FsError> {
        let ino = self
            .find_in(slot_of(digest.algorithm()), digest.encoded())
            .ok_or(FsError::NotFound)?;
        self.content(ino)
    }

    /// The ref names `index.json` gives, each with its digest (read once,
    /// when the snapshot was built).
    pub fn tags(&self) -> &BTreeMap<String, Digest> {
        &self.tags
    }

    /// The platform manifests the generated index lists (platform, digest,
    /// image size), in its order.
    pub fn images(&self) -> &[Image] {
        &self.images
    }

    /// The generated index's digest.
    pub fn index_digest(&self) -> &Digest {
        &self.index_digest
    }

    /// Blobs the layout serves: the source blobs and the generated index
    /// (what every log line and `ocimux status` count).
    pub fn blob_count(&self) -> usize {
        self.blobs.len() + 1
    }

    /// Bytes of all files the layout serves.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The document `digest` as it was read when this snapshot was built.
    pub fn document(&self, digest: &Digest) -> Option<KeptDocument> {
        self.documents.get(digest).cloned()
    }

    /// An estimate of the memory the snapshot holds: per blob its map entry
    /// and listing slot (the blobs themselves are shared with the current
    /// snapshot, mostly, and counted as [`BLOB_BYTES`] for those that are
    /// not), plus the generated bytes and the kept documents. Checked against measurements in
    /// `scripts/memory.py` (BENCHMARKS.md).
    pub fn approx_bytes(&self) -> u64 {
        let generated: u64 = self
            .fixed
            .values()
            .filter(|n| n.attr.kind == Kind::File)
            .map(|n| n.attr.size)
            .sum();
        let unshared = self
            .blobs
            .values()
            .filter(|b| Arc::strong_count(b) == 1)
            .count() as u64;
        let documents: u64 = match Arc::strong_count(&self.documents) {
            1 => self.documents.values().map(|d| d.bytes.len() as u64).sum(),
            _ => 0, // shared with a newer snapshot of the same composition
        };
        (self.blobs.len() as u64)
            .saturating_mul(ENTRY_BYTES)
            .saturating_add(documents)
            .saturating_add(unshared.saturating_mul(BLOB_BYTES))
            .saturating_add(generated)
    }

    /// How many files the layout serves.
    pub fn file_count(&self) -> usize {
        self.file_count
    }

    /// Attributes of `ino`.
    pub fn attr(&self, ino: u64) -> Result<Attr, FsError> {
        if let Some(n) = self.fixed.get(&ino) {
            return Ok(n.attr);
        }
        let blob = self.blobs.get(&ino).ok_or(FsError::NotFound)?;
        // A blob shows its source's owner and read bits.
        Ok(Attr {
            ino,
            kind: Kind::File,
            size: blob.size,
            perm: blob.access.mode,
            owner: Owner::Source {
                uid: blob.access.uid,
                gid: blob.access.gid,
            },
            nlink: 1,
            mtime: self.mtime,
            volatile: false,
        })
    }

    fn dir(&self, ino: u64) -> Result<(u64, &Children), FsError> {
        match self.fixed.get(&ino) {
            Some(Node {
                body: Body::Dir { parent, children },
                ..
            }) => Ok((*parent, children)),
            Some(_) => Err(FsError::NotDir),
            None if self.blobs.contains_key(&ino) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }

    /// Looks `name` up in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        let (up, children) = self.dir(parent)?;
        let Some(name) = name.to_str() else {
            return Err(FsError::NotFound);
        };
        let ino = match (name, children) {
            (".", _) => parent,
            ("..", _) => up,
            (_, Children::Fixed(list)) => list
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| *c)
                .ok_or(FsError::NotFound)?,
            (_, Children::Blobs(slot)) => self.find_in(*slot, name).ok_or(FsError::NotFound)?,
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
        let (parent, children) = self.dir(ino)?;
        let dots = [(".", ino), ("..", parent)];
        let listed: Box<dyn Iterator<Item = (&str, u64)>> = match children {
            Children::Fixed(list) => Box::new(list.iter().map(|(n, c)| (*n, *c))),
            Children::Blobs(slot) => Box::new(
                self.listing
                    .get(*slot)
                    .into_iter()
                    .flatten()
                    .map(|n| (self.name_of(*n), *n)),
            ),
        };
        let all = dots
            .into_iter()
            .chain(listed)
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .map(move |(i, (name, child))| DirEntry {
                ino: child,
                kind: self.fixed.get(&child).map_or(Kind::File, |n| n.attr.kind),
                name,
                next_offset: i as u64 + 1,
            });
        Ok(all)
    }

    /// Where the bytes of file `ino` come from.
    pub fn content(&self, ino: u64) -> Result<Content, FsError> {
        if let Some(blob) = self.blobs.get(&ino) {
            return Ok(Content::Blob(blob.clone()));
        }
        match &self.node(ino)?.body {
            Body::File(c) => Ok(c.clone()),
            Body::Dir { .. } => Err(FsError::IsDir),
        }
    }

    fn node(&self, ino: u64) -> Result<&Node, FsError> {
        self.fixed.get(&ino).ok_or(FsError::NotFound)
    }
}

/// [`Layout::approx_bytes`]: a blob's map entry and listing slot.
const ENTRY_BYTES: u64 = 40;
/// [`Layout::approx_bytes`]: a blob held by this snapshot alone.
const BLOB_BYTES: u64 = 256;

/// The part of `bytes` that a read of `size` bytes at `offset` returns: empty
/// past the end, never a panic.
pub fn slice_at(bytes: &[u8], offset: u64, size: u32) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let end = start.saturating_add(size as usize).min(bytes.len());
    bytes.get(start..end).unwrap_or_default()
}

/// A generated file (`oci-layout`, `index.json`, the generated index): the
/// mounting user's, read-only; `index.json` may differ in the next snapshot.
fn file_node(ino: u64, bytes: Arc<[u8]>, mtime: SystemTime) -> Node {
    let attr = Attr {
        ino,
        kind: Kind::File,
        size: bytes.len() as u64,
        perm: 0o444,
        owner: Owner::Mount,
        nlink: 1,
        mtime,
        volatile: ino == ino::INDEX_JSON,
    };
    Node {
        attr,
        body: Body::File(Content::Memory(bytes)),
    }
}

/// Numbers the source blobs (first, in digest order: see [`Inodes`]) and the
/// generated index; the blobs by number, the index's number, and each
/// algorithm directory's listing in name order.
fn number_blobs(
    comp: &Composition,
    inodes: &mut Inodes,
) -> (HashMap<u64, Arc<Blob>>, u64, [Vec<u64>; 2]) {
    let mut blobs = HashMap::with_capacity(comp.blobs.len());
    let mut listing: [Vec<(&Digest, u64)>; 2] = [Vec::new(), Vec::new()];
    for blob in &comp.blobs {
        if blob.digest == comp.index_digest {
            continue; // a source happens to hold the generated index: serve ours
        }
        let n = inodes.of(&blob.digest);
        if let Some(list) = listing.get_mut(slot_of(blob.digest.algorithm())) {
            list.push((&blob.digest, n));
        }
        blobs.insert(n, blob.clone());
    }
    let index_ino = inodes.of(&comp.index_digest);
    if let Some(list) = listing.get_mut(slot_of(comp.index_digest.algorithm())) {
        list.push((&comp.index_digest, index_ino));
    }
    let listing = listing.map(|mut l| {
        l.sort();
        l.into_iter().map(|(_, n)| n).collect::<Vec<u64>>()
    });
    (blobs, index_ino, listing)
}

/// The directories: the root, `blobs`, and `blobs/sha256` (and `sha512`
/// when a blob is named by it), read-only, the mounting user's.
fn directories(listing: &[Vec<u64>; 2], mtime: SystemTime) -> Vec<(u64, Node)> {
    let dir = |ino: u64, parent: u64, children: Children, size: usize, subdirs: usize| {
        let attr = Attr {
            ino,
            kind: Kind::Dir,
            size: size as u64,
            perm: 0o555,
            owner: Owner::Mount,
            nlink: 2 + u32::try_from(subdirs).unwrap_or(u32::MAX - 2),
            mtime,
            volatile: true,
        };
        (
            ino,
            Node {
                attr,
                body: Body::Dir { parent, children },
            },
        )
    };
    let [sha256, sha512] = listing;
    let mut out = vec![dir(
        ino::SHA256,
        ino::BLOBS,
        Children::Blobs(0),
        sha256.len(),
        0,
    )];
    let mut alg_dirs = vec![("sha256", ino::SHA256)];
    if !sha512.is_empty() {
        out.push(dir(
            ino::SHA512,
            ino::BLOBS,
            Children::Blobs(1),
            sha512.len(),
            0,
        ));
        alg_dirs.push(("sha512", ino::SHA512));
    }
    let n = alg_dirs.len();
    out.push(dir(ino::BLOBS, ino::ROOT, Children::Fixed(alg_dirs), n, n));
    let root_children = vec![
        ("blobs", ino::BLOBS),
        ("index.json", ino::INDEX_JSON),
        ("oci-layout", ino::OCI_LAYOUT),
    ];
    out.push(dir(
        ino::ROOT,
        ino::ROOT,
        Children::Fixed(root_children),
        3,
        1,
    ));
    out
}

/// Ref name → digest, from an `index.json` (its entries that have one).
fn tags_of(index_json: &[u8]) -> BTreeMap<String, Digest> {
    let Ok(index) = crate::oci::document::parse::<crate::oci::document::Document>(index_json)
    else {
        return BTreeMap::new();
    };
    index
        .manifests
        .iter()
        .flatten()
        .filter_map(|e| Some((e.ref_name()?.to_owned(), Digest::parse(&e.digest).ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::testutil::{blob, composed, contribution, image};

    fn layout() -> (Layout, Composition, Inodes) {
        let mut c = contribution("src", vec![image("linux/amd64", "manifest")]);
        let mut big = blob("big");
        big.digest = crate::oci::digest::Algorithm::Sha512.hash(b"big");
        c.blobs
            .extend([blob("config"), blob("layer"), big].map(Arc::new));
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
            Content::Blob(b) if b.size == 5
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
            c.blobs.push(Arc::new(blob("config")));
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
