//! `ocimux verify`: hashes every blob reachable from the sources (or from a
//! mounted layout read like one) in parallel, through the same confined,
//! identity-checked opens as the mount, and reports each blob.
//!
//! Composing the sources already checked each descriptor's size against its
//! file, and hashed manifests, configs and indexes; this hashes every blob
//! (the layers, and manifests and configs again: a few KiB, and their files
//! may have changed since).
//! Work is a shared queue of blobs, largest first, taken by `threads`
//! workers, so one huge layer does not end the run alone.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::blob::FileRange;
use crate::snapshot::index::Composition;
use crate::source::Blob;

/// What checking one blob found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobResult {
    /// The blob's digest.
    pub digest: String,
    /// Its size (every descriptor's, and its file's).
    pub size: u64,
    /// The media type of the first descriptor that names it.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Its source, as given.
    pub source: String,
    /// Where its bytes are.
    pub file: String,
    /// Why it is bad; `null` when it hashes to its digest.
    pub error: Option<String>,
}

/// Checks every blob of `comp` with `threads` workers; results in digest order.
pub fn verify(
    comp: &Composition,
    threads: usize,
    progress: crate::report::inspect::Progress,
) -> Vec<BlobResult> {
    let mut order: Vec<&Blob> = comp.blobs.iter().map(|b| &**b).collect();
    order.sort_by_key(|b| std::cmp::Reverse(b.size));
    let bar = crate::report::inspect::progress_bar(progress, comp, "verify");
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(order.len()));
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, 64) {
            s.spawn(|| {
                while let Some(blob) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let result = check(blob);
                    bar.inc(blob.size);
                    if let Ok(mut r) = results.lock() {
                        r.push(result);
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    results.extend(comp.broken.iter().map(|b| BlobResult {
        digest: b.digest.to_string(),
        size: b.size,
        media_type: b.media_type.clone(),
        source: b.source.clone(),
        file: b.digest.blob_path(),
        error: Some(b.problem.clone()),
    }));
    results.sort_by(|a, b| a.digest.cmp(&b.digest));
    results
}

/// Hashes one blob (every version is hashed, none remembered) and checks its
/// descriptor's media type.
fn check(blob: &Blob) -> BlobResult {
    let error = match FileRange::open_once(blob, true) {
        Err(e) => Some(e.to_string()),
        Ok(_) if !is_media_type(&blob.media_type) => Some(format!(
            "descriptor media type {:?} is not a media type (RFC 6838)",
            crate::error::printable(&blob.media_type)
        )),
        Ok(_) => None,
    };
    BlobResult {
        digest: blob.digest.to_string(),
        size: blob.size,
        media_type: blob.media_type.to_string(),
        source: blob.source.to_string(),
        file: blob.describe(),
        error,
    }
}

/// `type/subtype[+suffix]` with RFC 6838's restricted names (parameters,
/// which OCI media types never carry, are refused too).
fn is_media_type(s: &str) -> bool {
    let name = |n: &str| {
        (1..=127).contains(&n.len())
            && n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    matches!(s.split_once('/'), Some((t, sub)) if name(t) && name(sub))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::testutil::{composed, contribution, file_blob, image};

    #[test]
    fn media_type_table() {
        for (mt, ok) in [
            ("application/vnd.oci.image.layer.v1.tar", true),
            ("application/vnd.oci.image.layer.v1.tar+gzip", true),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", true),
            ("", false),
            ("application", false),
            ("application/", false),
            ("/tar", false),
            ("a/b/c", false),
            ("application/x; charset=utf-8", false),
            ("text/\u{1b}[31m", false),
        ] {
            assert_eq!(is_media_type(mt), ok, "{mt:?}");
        }
    }

    #[test]
    fn a_flipped_byte_and_a_truncated_blob_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = file_blob(dir.path(), b"good layer");
        let flipped = file_blob(dir.path(), b"flipped layer");
        let short = file_blob(dir.path(), b"truncated layer");
        let mut c = contribution("src", vec![image("linux/amd64", "m")]);
        c.blobs.clear();
        c.blobs
            .extend([good.clone(), flipped.clone(), short.clone()].map(std::sync::Arc::new));
        let comp = composed(&[c]);
        let path = |b: &Blob| dir.path().join(b.digest.blob_path());
        // In place, same size: the identity changes, so it is hashed, and fails.
        std::fs::write(path(&flipped), b"fliPped layer").unwrap();
        std::fs::write(path(&short), b"trunc").unwrap();
        let results = verify(&comp, 2, crate::report::inspect::Progress::Quiet);
        assert_eq!(results.len(), 3);
        let by = |b: &Blob| {
            results
                .iter()
                .find(|r| r.digest == b.digest.to_string())
                .unwrap()
        };
        assert_eq!(by(&good).error, None);
        assert!(
            by(&flipped).error.as_deref().unwrap().contains("hashes to"),
            "{:?}",
            by(&flipped)
        );
        assert!(by(&short).error.is_some(), "{:?}", by(&short));
        assert_eq!(by(&short).source, "src");
        assert!(by(&short).file.ends_with(&short.digest.blob_path()));
    }
}
