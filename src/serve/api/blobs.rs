//! Serving a blob, as distribution's blobserver does: find it by digest,
//! answer its range with the headers registries send, and open its file
//! under the publication and proof rules (or stand a kept document in for a
//! file a rebuild deleted).

use super::*;

/// Bytes `start..start + len` of `bytes` (a range already checked against
/// their size; nothing when it is not within them).
fn part_of(bytes: &[u8], start: u64, len: u64) -> Body {
    let part = usize::try_from(start)
        .ok()
        .zip(usize::try_from(start + len).ok())
        .and_then(|(a, b)| bytes.get(a..b))
        .unwrap_or_default();
    Body::Bytes(Bytes::copy_from_slice(part))
}

/// The headers registries send with a blob's bytes `start..start + len` of
/// `size` (a `Content-Range` when `partial`).
fn headers(
    digest: &Digest,
    partial: bool,
    (start, len, size): (u64, u64, u64),
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_owned()),
        ("Content-Length", len.to_string()),
        ("Docker-Content-Digest", digest.to_string()),
        ("Etag", format!("\"{digest}\"")),
        ("Accept-Ranges", "bytes".to_owned()),
        ("Cache-Control", "max-age=31536000".to_owned()),
    ];
    if partial {
        let end = start + len - 1;
        headers.push(("Content-Range", format!("bytes {start}-{end}/{size}")));
    }
    headers
}

impl Registry {
    pub(super) fn blob(
        &self,
        repo: &Arc<Repository>,
        req: &Request<'_>,
        digest: &Digest,
        (defer, proven): (bool, &mut Option<Pending>),
    ) -> Result<Reply, Deferred> {
        let unknown = || {
            Reply::error(
                Code::BlobUnknown,
                Some(json!({ "digest": digest.to_string() })),
            )
        };
        let kept = || {
            self.kept(repo, digest)
                .map(|(_, b)| Arc::<[u8]>::from(&b[..]))
        };
        let (size, source) = match repo.by_digest(digest) {
            Ok(Content::Memory(bytes)) => (bytes.len() as u64, Err(bytes)),
            Ok(Content::Blob(blob)) => (blob.size, Ok(blob)),
            // Its file is gone: a document a snapshot still served read.
            Err(_) => match kept() {
                Some(bytes) => (bytes.len() as u64, Err(bytes)),
                None => return Ok(unknown()),
            },
        };
        let (status, start, len) = match reply::range(req.range, size) {
            Range::Whole => (200, 0, size),
            Range::Part { start, len } => (206, start, len),
            Range::Unsatisfiable => {
                return Ok(Reply::error(Code::RangeInvalid, None)
                    .with("Content-Range", format!("bytes */{size}")));
            }
        };
        let part = |bytes: &[u8]| part_of(bytes, start, len);
        let body = match source {
            Err(bytes) => part(&bytes),
            Ok(blob) => match self.open(repo, &blob, defer, proven) {
                Ok(range) => Body::File {
                    range,
                    offset: start,
                    len,
                },
                Err(Refusal::Gone) => match kept() {
                    Some(bytes) if bytes.len() as u64 == size => part(&bytes),
                    _ => return Ok(unknown()),
                },
                Err(Refusal::Unknown) => return Ok(unknown()),
                Err(Refusal::Failed(e)) => return Ok(io_failure(&blob, &e)),
                Err(Refusal::Unproven(opened)) => {
                    return Err(Deferred(repo.clone(), Pending { blob, opened }));
                }
            },
        };
        // Entity tags only (quoted), as docker-registry matches a blob's.
        if let Some(reply) = not_modified(req, digest, false) {
            return Ok(reply);
        }
        Ok(Reply {
            status,
            headers: headers(digest, status == 206, (start, len, size)),
            body,
        })
    }

    /// A kept document (see [`Repository::kept`]), published as its blob
    /// was: only if its source's owner could read it.
    pub(super) fn kept(&self, repo: &Repository, digest: &Digest) -> Option<(String, Bytes)> {
        let (blob, kept) = repo.kept(digest)?;
        if !access::recorded(&self.readers, &blob) {
            return None;
        }
        Some((
            kept.media_type.to_string(),
            Bytes::from(kept.bytes.to_vec()),
        ))
    }

    /// Opens a blob for sending: published only if its source's owner could
    /// read it (as recorded, and as the opened file shows now), hashed first
    /// under `--verify` or when its file was replaced since the snapshot
    /// (with `defer`, a hash not made yet is [`Refusal::Unproven`]).
    pub(super) fn open(
        &self,
        repo: &Repository,
        blob: &Blob,
        defer: bool,
        proven: &mut Option<Pending>,
    ) -> Result<FileRange, Refusal> {
        if let Some(why) = access::refusal(&self.readers, blob) {
            log::warn!(
                "{}: not served: {why}",
                crate::error::printable(&blob.describe())
            );
            return Err(Refusal::Unknown);
        }
        // The file the proof was made on, if this is the blob proven.
        let opened = match proven.take() {
            Some(p) if p.blob.digest == blob.digest => p.opened,
            _ => match FileRange::open_for_serving(blob, repo.verify, &repo.verifier)? {
                Proof::Ready(opened) => opened,
                Proof::Needed(opened) if defer => return Err(Refusal::Unproven(opened)),
                Proof::Needed(mut opened) => {
                    opened.check(blob, &repo.verifier)?;
                    opened
                }
            },
        };
        if !access::still(&self.readers, blob, &opened.range.file) {
            log::warn!(
                "{}: not served: its owner, group or mode changed",
                crate::error::printable(&blob.describe())
            );
            return Err(Refusal::Unknown);
        }
        Ok(opened.range)
    }
}

/// Why a blob is not sent.
#[derive(Debug)]
pub(super) enum Refusal {
    /// Its file is gone (a kept document may stand in).
    Gone,
    /// Answered as unknown: not the owner's to publish.
    Unknown,
    /// It must be hashed first, and the caller hashes elsewhere (on this
    /// opened file).
    Unproven(Opened),
    /// Its bytes could not be shown to be the name's.
    Failed(FsError),
}

impl From<FsError> for Refusal {
    fn from(e: FsError) -> Self {
        match e {
            FsError::NotFound | FsError::Refused(crate::files::confine::OpenError::Missing) => {
                Refusal::Gone
            }
            e => Refusal::Failed(e),
        }
    }
}

pub(super) fn io_failure(blob: &Blob, e: &FsError) -> Reply {
    log::warn!("{}: {e}", crate::error::printable(&blob.describe()));
    Reply::error(
        Code::Unknown,
        Some(json!({ "digest": blob.digest.to_string() })),
    )
}
