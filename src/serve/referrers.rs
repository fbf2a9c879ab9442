//! The referrers API: an image index of the served manifests whose
//! `subject` is a digest. Built once per snapshot (each manifest read and
//! hashed once), then answered from memory; an empty index when none refers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::blob::FileRange;
use crate::digest::Digest;
use crate::document::{self, OCI_INDEX};
use crate::generations::Generations;

/// Descriptors of referring manifests, by subject.
type BySubject = HashMap<Digest, Vec<Value>>;

/// The referrers of the snapshots last asked about (one per tag), known by
/// their index digests.
#[derive(Debug, Default)]
pub struct Referrers {
    cache: Mutex<Option<(Vec<Digest>, Arc<BySubject>)>>,
}

impl Referrers {
    /// The referrers index for `subject`, filtered by `artifact_type`.
    pub fn of(
        &self,
        snapshots: &[Arc<Generations>],
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Value {
        let map = self.map(snapshots);
        let manifests: Vec<&Value> = map
            .get(subject)
            .into_iter()
            .flatten()
            .filter(|d| artifact_type.is_none_or(|t| d["artifactType"] == t))
            .collect();
        json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests })
    }

    fn map(&self, snapshots: &[Arc<Generations>]) -> Arc<BySubject> {
        let layouts: Vec<_> = snapshots.iter().map(|g| g.current()).collect();
        let key: Vec<Digest> = layouts.iter().map(|l| l.index_digest().clone()).collect();
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, map)) = cache.as_ref().filter(|(k, _)| *k == key) {
                return map.clone();
            }
        }
        // Built outside the lock: it reads files.
        let mut map = BySubject::new();
        let mut seen = std::collections::HashSet::new();
        for (_, blob) in layouts.iter().flat_map(|l| l.blobs()) {
            if document::kind_of(&blob.media_type).is_none()
                || blob.size > document::MAX_JSON
                || !seen.insert(blob.digest.clone())
            {
                continue;
            }
            let Ok(range) = FileRange::open_once(blob, true) else {
                continue;
            };
            let size = u32::try_from(range.len).unwrap_or(u32::MAX);
            let Ok(bytes) = range.read(0, size) else {
                continue;
            };
            if let Some((subject, descriptor)) = referrer(&bytes, &blob.digest, &blob.media_type) {
                map.entry(subject).or_default().push(descriptor);
            }
        }
        let map = Arc::new(map);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        *cache = Some((key, map.clone()));
        map
    }
}

/// The subject of a manifest and the descriptor that lists it, if it has one.
fn referrer(bytes: &[u8], digest: &Digest, media_type: &str) -> Option<(Digest, Value)> {
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
        if let Some(a) = doc.get("annotations").filter(|a| a.is_object()) {
            obj.insert("annotations".into(), a.clone());
        }
    }
    Some((subject, d))
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
            let (subject, d) = referrer(&bytes, &me, document::OCI_MANIFEST).unwrap();
            assert_eq!(subject.to_string(), s);
            assert_eq!(d["artifactType"].as_str(), want);
            assert_eq!(d["size"], bytes.len());
        }
        assert!(referrer(br#"{"config": {}}"#, &me, document::OCI_MANIFEST).is_none());
        assert!(referrer(b"not json", &me, document::OCI_MANIFEST).is_none());
    }
}
