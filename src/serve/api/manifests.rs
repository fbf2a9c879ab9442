//! Serving a manifest or index, by tag or digest: from memory (the
//! generated index, a kept document) or its file, only to a client whose
//! `Accept` names its media type, with `If-None-Match`.

use super::blobs::io_failure;
use super::*;

/// A manifest's or index's bytes, or why there are none.
enum Document {
    /// Its media type and bytes.
    Found(String, Bytes),
    /// Nothing by that name is a document this repository serves.
    Unknown,
    /// Its file could not be read: the answer that says so.
    Failed(Reply),
}

impl Registry {
    pub(super) fn manifest(
        &self,
        repo: &Arc<Repository>,
        req: &Request<'_>,
        reference: Reference,
        (defer, proven): (bool, &mut Option<Pending>),
    ) -> Result<Reply, Deferred> {
        let unknown = |r: &Reference| {
            let detail = match r {
                Reference::Tag(t) => json!({ "Tag": t }),
                Reference::Digest(d) => json!({ "Digest": d.to_string() }),
            };
            Reply::error(Code::ManifestUnknown, Some(detail))
        };
        let digest = match &reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => match repo.tags().remove(t) {
                Some(d) => d,
                None => return Ok(unknown(&reference)),
            },
        };
        Ok(match self.document(repo, &digest, defer, proven)? {
            Document::Found(media_type, body) => answer(req, &digest, &media_type, body),
            Document::Unknown => unknown(&reference),
            Document::Failed(reply) => reply,
        })
    }

    /// The document named `digest`: the generated index, its file (opened
    /// under the publication and proof rules), or, its file gone, the
    /// bytes a snapshot still served kept.
    fn document(
        &self,
        repo: &Arc<Repository>,
        digest: &Digest,
        defer: bool,
        proven: &mut Option<Pending>,
    ) -> Result<Document, Deferred> {
        let kept = || match self.kept(repo, digest) {
            Some((media_type, bytes)) if document::kind_of(&media_type).is_some() => {
                Document::Found(media_type, bytes)
            }
            _ => Document::Unknown,
        };
        let blob = match repo.by_digest(digest) {
            Ok(Content::Memory(bytes)) => {
                return Ok(Document::Found(
                    OCI_INDEX.to_owned(),
                    Bytes::from(bytes.to_vec()),
                ));
            }
            Ok(Content::Blob(blob)) if document::kind_of(&blob.media_type).is_some() => blob,
            Ok(Content::Blob(_)) => return Ok(Document::Unknown),
            // Its file is gone: a snapshot still served read it.
            Err(_) => return Ok(kept()),
        };
        Ok(match self.open(repo, &blob, defer, proven) {
            Ok(range) => match read_document(&range) {
                Ok(bytes) => Document::Found(blob.media_type.to_string(), bytes),
                Err(e) => Document::Failed(io_failure(&blob, &e)),
            },
            Err(Refusal::Gone) => kept(),
            Err(Refusal::Unknown) => Document::Unknown,
            Err(Refusal::Failed(e)) => Document::Failed(io_failure(&blob, &e)),
            Err(Refusal::Unproven(opened)) => {
                return Err(Deferred(repo.clone(), Pending { blob, opened }));
            }
        })
    }
}

/// The answer with a document's bytes: refused, as docker-distribution 2.8
/// refuses it, to a client whose `Accept` does not name an OCI document's
/// media type; 304 to one that has it (`If-None-Match`).
fn answer(req: &Request<'_>, digest: &Digest, media_type: &str, body: Bytes) -> Reply {
    let refusal = match media_type {
        OCI_INDEX => Some("OCI index found, but accept header does not support OCI indexes"),
        document::OCI_MANIFEST => {
            Some("OCI manifest found, but accept header does not support OCI manifests")
        }
        _ => None,
    };
    if let Some(what) = refusal {
        if !accepts(req.accept, media_type) {
            let (status, code, _) = Code::ManifestUnknown.parts();
            let doc = json!({ "errors": [{ "code": code, "message": what }] });
            return Reply::json(status, &doc);
        }
    }
    // docker-registry matches a manifest's digest quoted or not.
    if let Some(reply) = not_modified(req, digest, true) {
        return reply;
    }
    Reply::bytes(200, media_type, body)
        .with("Docker-Content-Digest", digest.to_string())
        .with("Etag", format!("\"{digest}\""))
}

/// A whole (small) document: at most [`document::MAX_JSON`] bytes.
fn read_document(range: &FileRange) -> Result<Bytes, FsError> {
    if range.len > document::MAX_JSON {
        return Err(FsError::Io(std::io::Error::other("document over 4 MiB")));
    }
    let size = u32::try_from(range.len).unwrap_or(u32::MAX);
    range.read(0, size).map(Bytes::from)
}

/// Whether an `Accept` list names `media_type` (parameters ignored, as
/// docker-distribution does; no `*/*` wildcard either).
fn accepts(accept: &str, media_type: &str) -> bool {
    accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or_default().trim())
        .any(|t| t == media_type)
}
