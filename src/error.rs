//! The library's error types: every refusal names the source and the file.
//!
//! [`Error`] is what building a snapshot can fail with; all of its variants are
//! bad input (the CLI maps them to exit code 2). [`FsError`] is what a request
//! to the mounted filesystem can fail with, and [`FsError::errno`] its one
//! mapping to errno.

use std::io;

use crate::files::confine::OpenError;

/// A refusal to build the virtual layout from the given inputs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something is wrong with one file of one source.
    #[error("source {source_name}: {file}: {problem}")]
    Source {
        /// The source as given on the command line.
        source_name: String,
        /// The file inside the source (relative to it), or `.` for the source itself.
        file: String,
        /// What is wrong.
        problem: Problem,
    },
    /// Two sources would publish the same platform.
    #[error(
        "sources {first} and {second} both provide platform {platform}; \
         give one an explicit PLATFORM=PATH override"
    )]
    DuplicatePlatform {
        /// The platform, as `os/arch[/variant]`.
        platform: String,
        /// The source that provided it first.
        first: String,
        /// The source that provided it again.
        second: String,
    },
    /// A command-line value is malformed.
    #[error("invalid {what} {value:?}: {why}")]
    Argument {
        /// Which kind of argument (`platform`, `annotation`, `tag` …).
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        why: String,
    },
    /// No source was given.
    #[error("no SOURCE given")]
    NoSources,
    /// `--platform` left nothing.
    #[error("no source has a platform that --platform {0} selects")]
    NoPlatformMatch(String),
    /// The generated image index would be larger than clients accept.
    #[error(
        "the generated image index would be {size} bytes ({manifests} manifests), more than the \
         {cap}-byte limit that registries and containers/image enforce; sources: {sources}"
    )]
    IndexTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        cap: u64,
        /// How many manifests it lists.
        manifests: usize,
        /// The sources, comma separated.
        sources: String,
    },
}

/// What is wrong with one file of a source.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The path does not exist.
    #[error("does not exist")]
    Missing,
    /// The file could not be read.
    #[error("{0}")]
    Io(#[source] io::Error),
    /// The source is not an OCI image layout.
    #[error("not an OCI image layout: {0}")]
    NotLayout(String),
    /// `oci-layout` names a version other than 1.0.0.
    #[error("imageLayoutVersion is {0:?}, only \"1.0.0\" is supported")]
    LayoutVersion(String),
    /// A JSON document does not parse or does not fit the schema.
    #[error("malformed JSON: {0}")]
    Json(#[source] crate::oci::document::JsonError),
    /// A JSON document is larger than the cap.
    #[error("{size} bytes is larger than the {cap}-byte limit for JSON documents")]
    TooLarge {
        /// The file's size.
        size: u64,
        /// The limit.
        cap: u64,
    },
    /// `index.json` lists no manifests.
    #[error("lists no manifests")]
    EmptyIndex,
    /// No entry matches the wanted reference.
    #[error("no entry has ref name {wanted:?} (ref names found: {found})")]
    RefNotFound {
        /// The wanted ref name.
        wanted: String,
        /// The ref names present, comma separated.
        found: String,
    },
    /// Several entries and no way to choose.
    #[error(
        "{count} entries and none is tagged \"latest\"; choose one with --ref (ref names found: {found})"
    )]
    AmbiguousRef {
        /// How many entries there are.
        count: usize,
        /// The ref names present, comma separated.
        found: String,
    },
    /// Several entries carry the wanted ref name.
    #[error("{count} entries have ref name {wanted:?}")]
    DuplicateRef {
        /// The wanted ref name.
        wanted: String,
        /// How many entries carry it.
        count: usize,
    },
    /// A digest does not follow the grammar or names an unsupported algorithm.
    #[error("invalid digest {digest:?}: {why}")]
    BadDigest {
        /// The digest as found.
        digest: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// A referenced blob is not in the layout.
    #[error("referenced blob is missing")]
    MissingBlob,
    /// An archive member is not a regular file.
    #[error("not a regular file")]
    NotRegular,
    /// A file could not be opened confined to its source (it leaves the
    /// source, is not a regular file, or is inside an ocimux mount).
    #[error("{0}")]
    Open(#[source] crate::files::confine::OpenError),
    /// An archive member that a layout needs is a hard or symbolic link.
    #[error("is a link in the archive; blobs must be regular members")]
    Link,
    /// A tar archive that cannot be served.
    #[error("{0}")]
    Archive(#[source] crate::files::tar::TarError),
    /// A blob's size differs from the descriptor that references it.
    #[error("size {actual} differs from descriptor size {expected}")]
    SizeMismatch {
        /// The descriptor's size.
        expected: u64,
        /// The file's size.
        actual: u64,
    },
    /// A manifest or config does not hash to its digest.
    #[error("content hashes to {actual}, not to its digest")]
    DigestMismatch {
        /// The computed digest.
        actual: String,
    },
    /// A media type ocimux cannot serve in that position.
    #[error("unsupported media type {0:?}")]
    MediaType(String),
    /// A document contradicts its descriptor or itself (CVE-2021-41190).
    #[error("ambiguous document: {0}")]
    Ambiguous(#[source] crate::oci::document::DocError),
    /// The image config names no platform and none was given.
    #[error("config has no {0}; give the platform as PLATFORM=PATH (e.g. linux/arm64=PATH)")]
    NoPlatform(&'static str),
    /// A platform value read from the config is unusable.
    #[error("{0}")]
    BadPlatform(#[source] crate::oci::platform::PlatformError),
    /// Media types that a registry would refuse together.
    #[error("refused: {0}")]
    MixedMediaTypes(String),
    /// The config's platform and the index entry's disagree.
    #[error("the config says platform {config} but its index entry says {index}")]
    PlatformConflict {
        /// From the config (with what the entry filled in).
        config: String,
        /// From the index entry.
        index: String,
    },
    /// An image index nested inside an image index.
    #[error("an image index inside an image index is not supported")]
    NestedIndex,
    /// An image index whose entries are all attestations or empty.
    #[error("image index lists no platform manifests")]
    NoPlatformManifests,
    /// An override was given for a source that already carries several platforms.
    #[error("a PLATFORM= override needs a single-platform source, this one is an image index")]
    OverrideOnIndex,
    /// More blobs (or archive members) than a source may have.
    #[error("names more than {0} blobs, the most one source may have")]
    TooManyBlobs(usize),
}

impl Error {
    /// Builds a [`Error::Source`].
    pub fn source(source_name: &str, file: impl Into<String>, problem: Problem) -> Self {
        Error::Source {
            source_name: source_name.to_owned(),
            file: file.into(),
            problem,
        }
    }
}

/// Errors of the mounted filesystem; the adapter maps each to one errno.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No such inode or name.
    #[error("not found")]
    NotFound,
    /// A directory operation on a file.
    #[error("not a directory")]
    NotDir,
    /// A file operation on a directory.
    #[error("is a directory")]
    IsDir,
    /// Any write.
    #[error("read-only file system")]
    ReadOnly,
    /// The source file no longer has the identity recorded in the snapshot
    /// (rewritten in place, truncated, replaced): its bytes are not served.
    #[error("the source file changed since the snapshot was built")]
    Changed,
    /// With `--verify`: the bytes do not hash to the blob's name.
    #[error("content hashes to {actual}, not to its name")]
    Corrupt {
        /// What the bytes hash to.
        actual: crate::oci::digest::Digest,
    },
    /// The source file cannot be opened confined to its source any more.
    #[error("{0}")]
    Refused(#[from] OpenError),
    /// Reading a source file failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The request came from one of this daemon's own threads: a source
    /// leads back into this mount, and answering would wait for itself.
    #[error("the request comes from this daemon itself (a source leads back into the mount)")]
    SelfRequest,
    /// The mount was unmounted or detached in the daemon's namespace: the
    /// service has stopped, for every namespace's copy of the mount; files
    /// already open are served until they are closed.
    #[error("the mount has been stopped")]
    Stopped,
    /// Someone has the file open for writing (or opened it for writing
    /// since it was hashed): its bytes may change unseen, so it is not served.
    #[error("the file is open for writing")]
    BeingWritten,
}

impl FsError {
    /// The errno a request that failed with this gets. A failure that means
    /// the bytes may not be the name's is EIO: the call fails, nothing is served.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound | FsError::Refused(OpenError::Missing) => libc::ENOENT,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::ReadOnly => libc::EROFS,
            FsError::SelfRequest => libc::EDEADLK,
            FsError::Stopped => libc::ENOTCONN,
            FsError::BeingWritten => libc::EBUSY,
            FsError::Changed
            | FsError::Corrupt { .. }
            | FsError::Refused(
                OpenError::Escapes | OpenError::NotRegular(_) | OpenError::OcimuxMount(_),
            ) => libc::EIO,
            FsError::Refused(OpenError::Io(io)) | FsError::Io(io) => {
                io.raw_os_error().unwrap_or(libc::EIO)
            }
        }
    }

    /// Whether this is a normal answer rather than a failure worth a warning
    /// (lookups of absent names, refused writes).
    pub fn is_routine(&self) -> bool {
        matches!(
            self,
            FsError::NotFound
                | FsError::ReadOnly
                | FsError::Refused(OpenError::Missing)
                | FsError::Stopped
        )
    }
}

/// `s` with control characters escaped (`\u{1b}`), so that text taken from a
/// source (a ref name, a path) cannot drive the terminal it is printed on.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table() {
        let io = |code| io::Error::from_raw_os_error(code);
        let cases: Vec<(FsError, i32, bool)> = vec![
            (FsError::NotFound, libc::ENOENT, true),
            (FsError::Refused(OpenError::Missing), libc::ENOENT, true),
            (FsError::NotDir, libc::ENOTDIR, false),
            (FsError::IsDir, libc::EISDIR, false),
            (FsError::ReadOnly, libc::EROFS, true),
            (FsError::SelfRequest, libc::EDEADLK, false),
            (FsError::Stopped, libc::ENOTCONN, true),
            (FsError::BeingWritten, libc::EBUSY, false),
            (FsError::Changed, libc::EIO, false),
            (FsError::Refused(OpenError::Escapes), libc::EIO, false),
            (
                FsError::Refused(OpenError::Io(io(libc::EACCES))),
                libc::EACCES,
                false,
            ),
            (FsError::Io(io(libc::EMFILE)), libc::EMFILE, false),
            (FsError::Io(io::Error::other("no code")), libc::EIO, false),
        ];
        for (e, errno, routine) in cases {
            assert_eq!((e.errno(), e.is_routine()), (errno, routine), "{e:?}");
        }
    }

    #[test]
    fn printable_table() {
        let cases = [
            ("plain text", "plain text"),
            ("tab\there", "tab\\there"),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("line\nbreak", "line\\nbreak"),
            ("ünïcode", "ünïcode"),
            ("\u{9b}csi", "\\u{9b}csi"),
        ];
        for (input, want) in cases {
            assert_eq!(super::printable(input), want, "{input:?}");
        }
    }
}
