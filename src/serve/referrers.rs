//! The referrers API: an image index of the served manifests whose
//! `subject` is a digest. Built once per snapshot (each manifest read and
//! hashed once), every subject's reply serialized then and shared by every
//! request; an empty index when none refers. Only referrers whose every blob
//! its publishers may publish are listed, and a reply holds at most
//! [`MAX_REPLY`] bytes (the rest are left out, logged once per snapshot).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{Value, json};

use super::access::{self, Readers};
use crate::blob::FileRange;
use crate::oci::digest::Digest;
use crate::oci::document::{self, OCI_INDEX};
use crate::snapshot::generations::Generations;
use crate::snapshot::layout::Layout;

/// Most bytes of one referrers reply (a registry's manifest limit).
pub const MAX_REPLY: usize = document::MAX_JSON as usize;
/// Most bytes of a referrer's annotations copied into its descriptor.
const MAX_ANNOTATIONS: usize = 16 * 1024;

/// One subject's referrers: their descriptors, and the unfiltered reply.
#[derive(Debug, Default)]
struct Listed {
    descriptors: Vec<Value>,
    reply: Bytes,
}

/// Referrers by subject.
type BySubject = HashMap<Digest, Listed>;

/// The referrers of the snapshots last asked about (one per tag), known by
/// the snapshots themselves (a rebuild that keeps every digest may still
/// change who may read a blob).
#[derive(Debug, Default)]
pub struct Referrers {
    cache: Mutex<Option<(Vec<Arc<Layout>>, Arc<BySubject>)>>,
}

fn index_of(manifests: &[&Value]) -> Bytes {
    let doc = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
}

impl Referrers {
    /// The referrers index for `subject` (JSON bytes), filtered by
    /// `artifact_type`: unfiltered, the reply built with the snapshot.
    pub fn of(
        &self,
        snapshots: &[Arc<Generations>],
        readers: &Readers,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Bytes {
        let map = self.map(snapshots, readers);
        let Some(listed) = map.get(subject) else {
            return index_of(&[]);
        };
        match artifact_type {
            None => listed.reply.clone(),
            Some(t) => {
                let kept: Vec<&Value> = listed
                    .descriptors
                    .iter()
                    .filter(|d| d["artifactType"] == t)
                    .collect();
                index_of(&kept)
            }
        }
    }

    fn map(&self, snapshots: &[Arc<Generations>], readers: &Readers) -> Arc<BySubject> {
        let layouts: Vec<_> = snapshots.iter().map(|g| g.current()).collect();
        let same = |k: &[Arc<Layout>]| {
            k.len() == layouts.len() && k.iter().zip(&layouts).all(|(a, b)| Arc::ptr_eq(a, b))
        };
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, map)) = cache.as_ref().filter(|(k, _)| same(k)) {
                return map.clone();
            }
        }
        // Built outside the lock: it reads files.
        let all: HashMap<&Digest, &Arc<crate::source::Blob>> = layouts
            .iter()
            .flat_map(|l| l.blobs())
            .map(|(_, b)| (&b.digest, b))
            .collect();
        let publishable = |d: &Digest| all.get(d).is_some_and(|b| access::recorded(readers, b));
        let mut found: HashMap<Digest, Vec<Value>> = HashMap::new();
        let mut sizes: HashMap<Digest, usize> = HashMap::new();
        for (digest, blob) in &all {
            if !publishable(digest) {
                continue;
            }
            let Some(r) = read_referrer(blob).filter(|r| r.needs.iter().all(&publishable)) else {
                continue;
            };
            let len = serde_json::to_vec(&r.descriptor).map_or(usize::MAX, |v| v.len() + 1);
            let total = sizes.entry(r.subject.clone()).or_insert(64);
            if total.saturating_add(len) > MAX_REPLY {
                log::warn!(
                    "referrers of {}: more than {MAX_REPLY} bytes; {digest} not listed",
                    r.subject
                );
                continue;
            }
            *total += len;
            found.entry(r.subject).or_default().push(r.descriptor);
        }
        let map = Arc::new(listed(found));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        *cache = Some((layouts, map.clone()));
        map
    }
}

/// What `blob` says if it is a document that refers to a subject (read
/// whole, at most [`document::MAX_JSON`] bytes, its bytes proven).
fn read_referrer(blob: &crate::source::Blob) -> Option<Referring> {
    if document::kind_of(&blob.media_type).is_none() || blob.size > document::MAX_JSON {
        return None;
    }
    let range = FileRange::open_once(blob, true).ok()?;
    let size = u32::try_from(range.len).unwrap_or(u32::MAX);
    let bytes = range.read(0, size).ok()?;
    referrer(&bytes, &blob.digest, &blob.media_type)
}

/// Each subject's referrers in a stable order (by digest), with the index
/// that lists them all.
fn listed(found: HashMap<Digest, Vec<Value>>) -> BySubject {
    found
        .into_iter()
        .map(|(subject, mut descriptors)| {
            descriptors.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
            let reply = index_of(&descriptors.iter().collect::<Vec<_>>());
            (subject, Listed { descriptors, reply })
        })
        .collect()
}

/// What a referring manifest says: its subject, the descriptor that lists
/// it, and the blobs it needs served (config and layers).
struct Referring {
    subject: Digest,
    descriptor: Value,
    needs: Vec<Digest>,
}

/// What a manifest says as a referrer, if it has a subject. Annotations
/// over [`MAX_ANNOTATIONS`] bytes are left out of its descriptor.
fn referrer(bytes: &[u8], digest: &Digest, media_type: &str) -> Option<Referring> {
    let doc: Value = serde_json::from_slice(bytes).ok()?;
    let subject = Digest::parse(doc["subject"]["digest"].as_str()?).ok()?;
    let artifact_type = doc["artifactType"]
        .as_str()
        .or_else(|| doc["config"]["mediaType"].as_str())
        .map(str::to_owned);
    let mut d = json!({
        "mediaType": media_type,
        "digest": digest.to_string(),
        "size": bytes.len(),
    });
    if let Some(obj) = d.as_object_mut() {
        if let Some(t) = artifact_type {
            obj.insert("artifactType".into(), Value::String(t));
        }
        let small = |a: &&Value| serde_json::to_vec(a).is_ok_and(|v| v.len() <= MAX_ANNOTATIONS);
        if let Some(a) = doc
            .get("annotations")
            .filter(|a| a.is_object())
            .filter(small)
        {
            obj.insert("annotations".into(), a.clone());
        }
    }
    let needs = std::iter::once(&doc["config"])
        .chain(doc["layers"].as_array().into_iter().flatten())
        .filter_map(|d| Digest::parse(d["digest"].as_str()?).ok())
        .collect();
    Some(Referring {
        subject,
        descriptor: d,
        needs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_referrer_is_described_by_its_subject() {
        let s = "sha256:".to_owned() + &"a".repeat(64);
        let me = Digest::sha256_of(b"x");
        let cases = [
            (
                json!({"subject": {"digest": s}, "artifactType": "t/sbom"}),
                Some("t/sbom"),
            ),
            (
                json!({"subject": {"digest": s}, "config": {"mediaType": "t/sig"}}),
                Some("t/sig"),
            ),
            (json!({"subject": {"digest": s}}), None),
        ];
        for (doc, want) in cases {
            let bytes = serde_json::to_vec(&doc).unwrap();
            let r = referrer(&bytes, &me, document::OCI_MANIFEST).unwrap();
            assert_eq!(r.subject.to_string(), s);
            assert_eq!(r.descriptor["artifactType"].as_str(), want);
            assert_eq!(r.descriptor["size"], bytes.len());
        }
        assert!(referrer(br#"{"config": {}}"#, &me, document::OCI_MANIFEST).is_none());
        assert!(referrer(b"not json", &me, document::OCI_MANIFEST).is_none());
    }
}
