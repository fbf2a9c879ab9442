//! Reading one source layout: which manifest it contributes, on which platform,
//! and every blob reachable from it. Split by concern: `spec` parses the
//! argument, `root` finds a source's files (directory or archive), `walk`
//! follows the OCI documents from `index.json` to every blob, `platform_of`
//! reads an image's platform.
//!
//! Everything that can be checked cheaply is checked here, before anything is
//! mounted: the layout marker, JSON size caps and syntax, every digest's grammar
//! (before it becomes a path), that every referenced blob exists with its
//! descriptor's size, and that manifests and configs hash to their digests.
//! Layers are stat'ed, never read, so this costs the same for 1 MiB or 10 GiB.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use crate::files::confine::{Access, FileId, SourceDir};
use crate::oci::digest::Digest;
use crate::oci::platform::Platform;

mod platform_of;
mod root;
mod spec;
mod walk;

pub use spec::{ArmVariant, SourceSpec, Transport};
pub use walk::read;

/// A blob in a source, with the file its bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Its digest (validated).
    pub digest: Digest,
    /// Its size, equal to the file's and to every descriptor's.
    pub size: u64,
    /// Where its bytes are.
    pub origin: Origin,
    /// Who may read it through the mount: what the source grants.
    pub access: Access,
    /// The media type of the first descriptor that named it (shared: a
    /// source's blobs have a handful of media types between them).
    pub media_type: Arc<str>,
    /// The source it is served from (its name as given).
    pub source: Arc<str>,
    /// Its file took the place of another file of this name after the first
    /// snapshot served it (renamed over, rewritten, or a new archive): what
    /// the source claimed was checked once, this is a new claim, so its
    /// bytes are shown to hash to the name (once per file version) before
    /// they are served.
    pub replaced: bool,
}

impl Blob {
    /// Where a whole-file blob is under its source's root: `blobs/<alg>/<hex>`
    /// (derived, not stored: a snapshot holds one per blob).
    pub fn rel(&self) -> String {
        self.digest.blob_path()
    }

    /// A short description for logs: the source file or archive member.
    pub fn describe(&self) -> String {
        match &self.origin {
            Origin::File { dir, .. } => dir.path().join(self.rel()).display().to_string(),
            Origin::Range { archive, offset } => {
                format!("{} at offset {offset}", archive.path.display())
            }
        }
    }
}

/// Where a blob's bytes are on disk, and the identity they had when the
/// snapshot was built: bytes are served only while that identity holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A whole file of a layout directory, opened beneath the source's root.
    File {
        /// The source's root, held open; the file is [`Blob::rel`] under it.
        dir: Arc<SourceDir>,
        /// Its identity when found.
        id: FileId,
    },
    /// A byte range of a tar archive (a member's data).
    Range {
        /// The archive, as opened when it was indexed.
        archive: Arc<Archive>,
        /// Where the member's data starts.
        offset: u64,
    },
}

impl Origin {
    /// The identity of the file the bytes are read from.
    pub fn file_id(&self) -> FileId {
        match self {
            Origin::File { id, .. } => *id,
            Origin::Range { archive, .. } => archive.id,
        }
    }
}

/// An indexed tar archive, kept open. An archive's path is not
/// content-addressed: a rebuild replaces it with other offsets, or rewrites it
/// in place. Reading the file that was indexed (not whatever now has its
/// path), and only while it keeps the identity it had, keeps the offsets of
/// every snapshot true.
#[derive(Debug)]
pub struct Archive {
    /// Where it was found.
    pub path: PathBuf,
    /// The file that was indexed, shared by every open of its members.
    pub file: Arc<File>,
    /// Its identity when indexed.
    pub id: FileId,
    /// Who had a say in what it is (see [`crate::files::chain::Publishers`]).
    pub publishers: crate::files::chain::Publishers,
}

/// The same archive, with the same deciders: a snapshot whose publishers
/// changed is a new snapshot (they are re-checked at every one).
impl PartialEq for Archive {
    fn eq(&self, other: &Self) -> bool {
        (self.id, &self.path, &self.publishers) == (other.id, &other.path, &other.publishers)
    }
}

impl Eq for Archive {}

/// One platform manifest a source contributes to the image index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The manifest's media type (from its descriptor).
    pub media_type: String,
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's size.
    pub size: u64,
    /// The image's size: the manifest, its config and its layers (what a
    /// pull of this platform fetches at most).
    pub image_size: u64,
    /// Its platform.
    pub platform: Platform,
}

/// What one source contributes.
#[derive(Debug, Clone)]
pub struct Contribution {
    /// The source's name as given.
    pub name: String,
    /// Its platform manifests, in its own order.
    pub images: Vec<Image>,
    /// Every blob reachable from those manifests (manifests, configs, layers),
    /// each once (allocated once: the composition and its snapshots share them).
    pub blobs: Vec<Arc<Blob>>,
    /// Layers that are missing or of the wrong size: only when the source
    /// was read with [`SourceSpec::report_broken_layers`] (`ocimux verify`);
    /// otherwise such a layer fails the read.
    pub broken: Vec<BrokenBlob>,
    /// The referrers served with it ([`SourceSpec::with_referrers`]), each
    /// with the blobs only it brings (their blobs are in `blobs` too).
    pub referrers: Vec<Referrer>,
    /// The documents (manifests, configs, indexes) as they were read and
    /// hashed, up to [`MAX_KEPT_BYTES`], when the source was read with
    /// [`SourceSpec::keep_documents`]: served after their files are gone.
    pub documents: Vec<KeptDocument>,
}

/// How many bytes of documents a source keeps (a Yocto image's manifest and
/// config are a few KiB; past this, documents are read from their files).
pub const MAX_KEPT_BYTES: usize = 8 << 20;

/// A document's bytes as they were read and shown to hash to its digest
/// when the snapshot was built. A tag names documents of a snapshot; kept,
/// they can be served for as long as the snapshot is, even once a rebuild
/// has deleted their files (`ocimux serve`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptDocument {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: Arc<str>,
    /// Its bytes (hashing to `digest`).
    pub bytes: Arc<[u8]>,
}

/// A manifest served because its `subject` is a served manifest (a
/// signature, an SBOM): optional, so one that cannot be published is left
/// out, never its subject's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    /// Its manifest's digest.
    pub manifest: Digest,
    /// The digests of the blobs it brings that no image of the source
    /// needs (its manifest, config and layers, less those).
    pub only: Vec<Digest>,
}

/// A layer named by a manifest that cannot be served: missing, of another
/// size than its descriptor's, or not a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenBlob {
    /// The digest (valid: a descriptor with an invalid one fails the read).
    pub digest: Digest,
    /// The descriptor's size.
    pub size: u64,
    /// The descriptor's media type.
    pub media_type: String,
    /// The source, as given.
    pub source: String,
    /// What is wrong, naming the file.
    pub problem: String,
}
