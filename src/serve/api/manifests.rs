//! Serving a manifest or index, by tag or digest: from memory (the
//! generated index, a kept document) or its file, only to a client whose
//! `Accept` names its media type, with `If-None-Match`.

use super::blobs::io_failure;
use super::*;

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
        let is_document = |b: &Blob| document::kind_of(&b.media_type).is_some();
        let (media_type, body) = match repo.by_digest(&digest) {
            Ok(Content::Memory(bytes)) => (OCI_INDEX.to_owned(), Bytes::from(bytes.to_vec())),
            Ok(Content::Blob(blob)) if is_document(&blob) => {
                match self.open(repo, &blob, defer, proven) {
                    Ok(range) => match read_document(&range) {
                        Ok(bytes) => (blob.media_type.to_string(), bytes),
                        Err(e) => return Ok(io_failure(&blob, &e)),
                    },
                    Err(Refusal::Gone) => match self.kept(repo, &digest) {
                        Some((media_type, bytes)) => (media_type, bytes),
                        None => return Ok(unknown(&reference)),
                    },
                    Err(Refusal::Unknown) => return Ok(unknown(&reference)),
                    Err(Refusal::Failed(e)) => return Ok(io_failure(&blob, &e)),
                    Err(Refusal::Unproven(opened)) => {
                        return Err(Deferred(repo.clone(), Pending { blob, opened }));
                    }
                }
            }
            Ok(Content::Blob(_)) => return Ok(unknown(&reference)),
            // Its file is gone: a snapshot still served read it.
            Err(_) => match self.kept(repo, &digest) {
                Some((media_type, bytes)) if document::kind_of(&media_type).is_some() => {
                    (media_type, bytes)
                }
                _ => return Ok(unknown(&reference)),
            },
        };
        // As docker-distribution 2.8: an OCI document is served only to a
        // client that says it accepts its media type.
        let refusal = match media_type.as_str() {
            OCI_INDEX => Some("OCI index found, but accept header does not support OCI indexes"),
            document::OCI_MANIFEST => {
                Some("OCI manifest found, but accept header does not support OCI manifests")
            }
            _ => None,
        };
        if let Some(what) = refusal {
            if !accepts(req.accept, &media_type) {
                let (status, code, _) = Code::ManifestUnknown.parts();
                let doc = json!({ "errors": [{ "code": code, "message": what }] });
                return Ok(Reply::json(status, &doc));
            }
        }
        let etag = format!("\"{digest}\"");
        if req
            .if_none_match
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
        {
            return Ok(Reply {
                status: 304,
                headers: Vec::new(),
                body: Body::Empty,
            });
        }
        Ok(Reply::bytes(200, &media_type, body)
            .with("Docker-Content-Digest", digest.to_string())
            .with("Etag", etag))
    }
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
