//! Composing sources into one multi-arch image: the generated image index blob
//! and the single-entry `index.json` that points at it.
//!
//! Output is compact JSON with a fixed key order and no timestamps, so the same
//! inputs always give byte-identical documents (and so the same digest).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::error::Error;
use crate::oci::digest::Digest;
use crate::oci::document::{MAX_JSON, OCI_INDEX, REF_NAME};
use crate::oci::platform::Platform;
use crate::oci::tag::Tag;
use crate::source::{Blob, Contribution, Image};

/// Options that shape the generated documents.
#[derive(Debug, Clone, Default)]
pub struct IndexOptions {
    /// The `org.opencontainers.image.ref.name` of the `index.json` entry.
    pub tag: Tag,
    /// Annotations on the generated image index.
    pub annotations: BTreeMap<String, String>,
    /// Also list each platform manifest in `index.json`, tagged
    /// `<tag>-<os>-<arch>[-<variant>][-<os.version>]` (umoci picks an image
    /// by tag only).
    pub platform_tags: bool,
}

/// The composed image: what the virtual layout serves.
#[derive(Debug, Clone)]
pub struct Composition {
    /// The generated image index.
    pub index: Vec<u8>,
    /// Its digest.
    pub index_digest: Digest,
    /// The generated `index.json`.
    pub index_json: Vec<u8>,
    /// Every source blob, once each, sorted by digest (shared with the
    /// snapshots built from it).
    pub blobs: Vec<Arc<Blob>>,
    /// One row per platform manifest, in index order.
    pub rows: Vec<Row>,
    /// Layers the sources name but cannot serve (only when read for
    /// `ocimux verify`; see [`crate::source::SourceSpec::report_broken_layers`]).
    pub broken: Vec<crate::source::BrokenBlob>,
    /// The referrers among `blobs` (`ocimux serve` only), each with the
    /// blobs only it brings.
    pub referrers: Vec<crate::source::Referrer>,
    /// The sources' documents as read when composed, by digest (shared
    /// with the snapshots built from it).
    pub documents: Arc<HashMap<Digest, crate::source::KeptDocument>>,
}

/// One platform manifest of the generated index, and the source it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The source's name, as given.
    pub source: String,
    /// The manifest's descriptor.
    pub image: Image,
}

#[derive(Serialize)]
struct IndexDoc<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: Vec<DescriptorOut<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct DescriptorOut<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<&'a Platform>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<&'a str, &'a str>>,
}

/// Composes sources, in the given order, into one image index.
///
/// Refuses two manifests with the same platform, naming both sources. A blob
/// present in several sources is served from the first one.
pub fn compose(sources: &[Contribution], opts: &IndexOptions) -> Result<Composition, Error> {
    let rows = rows(sources)?;
    let index = image_index(&rows, &opts.annotations);
    // What registries and containers/image accept: refuse here, not at push.
    if index.len() as u64 > MAX_JSON {
        let mut names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        names.dedup();
        return Err(Error::IndexTooLarge {
            size: index.len() as u64,
            cap: MAX_JSON,
            manifests: rows.len(),
            sources: names.join(", "),
        });
    }
    let index_digest = Digest::sha256_of(&index);
    let platform_tags = match opts.platform_tags {
        true => platform_tags(&rows, &opts.tag)?,
        false => Vec::new(),
    };
    let index_json = index_json(&index_digest, index.len() as u64, &opts.tag, &platform_tags);
    // One entry per platform can take index.json past what clients read.
    if index_json.len() as u64 > MAX_JSON {
        return Err(Error::Argument {
            what: "--platform-tags",
            value: format!("{} platforms", platform_tags.len()),
            why: format!(
                "index.json would be {} bytes, more than the {MAX_JSON}-byte limit clients read",
                index_json.len()
            ),
        });
    }
    Ok(Composition {
        index,
        index_digest,
        index_json,
        blobs: first_of_each(sources),
        rows,
        broken: sources.iter().flat_map(|s| s.broken.clone()).collect(),
        referrers: sources.iter().flat_map(|s| s.referrers.clone()).collect(),
        documents: Arc::new(kept_documents(sources)),
    })
}

/// Every source's kept documents, the first source's where several keep one.
fn kept_documents(sources: &[Contribution]) -> HashMap<Digest, crate::source::KeptDocument> {
    let mut out = HashMap::new();
    for doc in sources.iter().flat_map(|s| &s.documents) {
        out.entry(doc.digest.clone()).or_insert_with(|| doc.clone());
    }
    out
}

/// One row per platform manifest, sources in order; refuses a platform two
/// sources provide.
fn rows(sources: &[Contribution]) -> Result<Vec<Row>, Error> {
    let mut rows: Vec<Row> = Vec::new();
    // Platform → the source that gave it first (a set, not a scan: an index
    // source can bring thousands of manifests).
    let mut seen: std::collections::HashMap<_, &str> = std::collections::HashMap::new();
    for source in sources {
        for image in &source.images {
            if let Some(first) = seen.insert(image.platform.key(), &source.name) {
                return Err(Error::DuplicatePlatform {
                    platform: image.platform.to_string(),
                    first: first.to_owned(),
                    second: source.name.clone(),
                });
            }
            rows.push(Row {
                source: source.name.clone(),
                image: image.clone(),
            });
        }
    }
    if rows.is_empty() {
        return Err(Error::NoSources);
    }
    Ok(rows)
}

/// The generated image index's bytes.
fn image_index(rows: &[Row], annotations: &BTreeMap<String, String>) -> Vec<u8> {
    to_json(&IndexDoc {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests: rows
            .iter()
            .map(|Row { image, .. }| DescriptorOut {
                media_type: &image.media_type,
                digest: image.digest.to_string(),
                size: image.size,
                platform: Some(&image.platform),
                annotations: None,
            })
            .collect(),
        annotations,
    })
}

/// `index.json`'s bytes: the image index, tagged; then, with
/// `--platform-tags`, each platform manifest with its own tag.
fn index_json(index_digest: &Digest, size: u64, tag: &Tag, platforms: &[(Tag, &Row)]) -> Vec<u8> {
    let mut manifests = vec![DescriptorOut {
        media_type: OCI_INDEX,
        digest: index_digest.to_string(),
        size,
        platform: None,
        annotations: Some(BTreeMap::from([(REF_NAME, tag.as_str())])),
    }];
    manifests.extend(
        platforms
            .iter()
            .map(|(tag, Row { image, .. })| DescriptorOut {
                media_type: &image.media_type,
                digest: image.digest.to_string(),
                size: image.size,
                platform: Some(&image.platform),
                annotations: Some(BTreeMap::from([(REF_NAME, tag.as_str())])),
            }),
    );
    to_json(&IndexDoc {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests,
        annotations: &BTreeMap::new(),
    })
}

/// Each row's tag, `<tag>-<os>-<arch>[-<variant>][-<os.version>]`, checked
/// as a ref name and unique.
fn platform_tags<'a>(rows: &'a [Row], tag: &Tag) -> Result<Vec<(Tag, &'a Row)>, Error> {
    let mut seen = std::collections::HashSet::new();
    rows.iter()
        .map(|row| {
            let p = &row.image.platform;
            let name = [
                Some(tag.as_str()),
                Some(&p.os),
                Some(&p.architecture),
                p.variant.as_deref(),
                p.os_version.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("-");
            let refuse = |why: String| Error::Argument {
                what: "platform tag",
                value: name.clone(),
                why,
            };
            let t = Tag::parse(&name).map_err(|e| refuse(e.to_string()))?;
            if !seen.insert(name.clone()) {
                return Err(refuse("two platforms would share it".into()));
            }
            Ok((t, row))
        })
        .collect()
}

/// Every blob once, from the first source that has it, sorted by digest.
fn first_of_each(sources: &[Contribution]) -> Vec<Arc<Blob>> {
    let mut blobs: BTreeMap<&Digest, &Arc<Blob>> = BTreeMap::new();
    for blob in sources.iter().flat_map(|s| &s.blobs) {
        blobs.entry(&blob.digest).or_insert(blob);
    }
    blobs.into_values().cloned().collect()
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain structs of strings and integers into a Vec cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Longest annotation key and value accepted.
pub const MAX_ANNOTATION: (usize, usize) = (256, 4096);

/// Parses `KEY=VALUE` for `--annotation`: a key of 1 to 256 printable ASCII
/// characters without spaces, a value of at most 4096 characters without
/// control characters.
pub fn parse_annotation(s: &str) -> Result<(String, String), Error> {
    let refuse = |why: &str| Error::Argument {
        what: "annotation",
        value: s.to_owned(),
        why: why.to_owned(),
    };
    let Some((k, v)) = s.split_once('=') else {
        return Err(refuse("expected KEY=VALUE with a non-empty KEY"));
    };
    let (key_max, value_max) = MAX_ANNOTATION;
    if k.is_empty() || k.len() > key_max || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refuse(
            "KEY must be 1 to 256 printable ASCII characters without spaces",
        ));
    }
    if v.chars().count() > value_max || v.chars().any(char::is_control) {
        return Err(refuse(
            "VALUE must be at most 4096 characters without control characters",
        ));
    }
    Ok((k.to_owned(), v.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::testutil::{contribution, image};

    #[test]
    fn golden_bytes() {
        let sources = [
            contribution("a", vec![image("linux/arm64", "m1")]),
            contribution("b", vec![image("linux/arm/v7", "m2")]),
        ];
        let opts = IndexOptions {
            tag: Tag::default(),
            annotations: BTreeMap::from([(
                "org.opencontainers.image.version".into(),
                "1.0".into(),
            )]),
            platform_tags: false,
        };
        let c = compose(&sources, &opts).unwrap();
        let m1 = Digest::sha256_of(b"m1");
        let m2 = Digest::sha256_of(b"m2");
        let want = format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":["#,
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{m1}","size":102,"platform":{{"architecture":"arm64","os":"linux"}}}},"#,
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{m2}","size":102,"platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}}],"#,
                r#""annotations":{{"org.opencontainers.image.version":"1.0"}}}}"#
            ),
            m1 = m1,
            m2 = m2
        );
        assert_eq!(String::from_utf8(c.index.clone()).unwrap(), want);
        assert_eq!(c.index_digest, Digest::sha256_of(want.as_bytes()));
        let want_json = format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":["#,
                r#"{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{}","size":{},"#,
                r#""annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}"#
            ),
            c.index_digest,
            want.len()
        );
        assert_eq!(String::from_utf8(c.index_json.clone()).unwrap(), want_json);
        // Same inputs, same bytes.
        let again = compose(&sources, &opts).unwrap();
        assert_eq!(again.index, c.index);
        assert_eq!(again.index_json, c.index_json);
    }

    #[test]
    fn refuses_duplicate_platforms_naming_both() {
        let sources = [
            contribution("deploy/a", vec![image("linux/arm64", "m1")]),
            contribution("deploy/b", vec![image("linux/arm64", "m2")]),
        ];
        let err = compose(&sources, &IndexOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("deploy/a") && err.contains("deploy/b") && err.contains("linux/arm64"),
            "{err}"
        );
    }

    #[test]
    fn variants_are_distinct_platforms_and_blobs_dedup() {
        let shared = image("linux/arm/v6", "shared");
        let mut b = contribution("b", vec![image("linux/arm/v7", "m2")]);
        b.blobs
            .extend(contribution("b", vec![shared.clone()]).blobs);
        let sources = [contribution("a", vec![shared]), b];
        let c = compose(&sources, &IndexOptions::default()).unwrap();
        assert_eq!(c.rows.len(), 2);
        assert_eq!(c.blobs.len(), 2);
        let first = c
            .blobs
            .iter()
            .find(|b| b.digest == Digest::sha256_of(b"shared"))
            .unwrap();
        assert!(&*first.source == "a", "{first:?}");
    }

    #[test]
    fn platform_tags_list_each_manifest_after_the_index() {
        let sources = [
            contribution("a", vec![image("linux/arm/v7", "m1")]),
            contribution("b", vec![image("linux/amd64", "m2")]),
        ];
        let mut opts = IndexOptions {
            platform_tags: true,
            ..Default::default()
        };
        let c = compose(&sources, &opts).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&c.index_json).unwrap();
        let tags: Vec<&str> = doc["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["annotations"][REF_NAME].as_str().unwrap())
            .collect();
        assert_eq!(
            tags,
            ["latest", "latest-linux-arm-v7", "latest-linux-amd64"]
        );
        assert_eq!(
            doc["manifests"][1]["digest"],
            Digest::sha256_of(b"m1").to_string()
        );
        assert_eq!(doc["manifests"][1]["platform"]["variant"], "v7");
        // The index itself does not change; a tag too long to extend is refused.
        opts.platform_tags = false;
        assert_eq!(compose(&sources, &opts).unwrap().index, c.index);
        opts.platform_tags = true;
        opts.tag = Tag::parse(&"t".repeat(120)).unwrap();
        let err = compose(&sources, &opts).unwrap_err().to_string();
        assert!(err.contains("invalid platform tag"), "{err}");
    }

    #[test]
    fn platform_tags_that_would_overflow_index_json_are_refused() {
        let images: Vec<_> = (0..15_000u32)
            .map(|i| {
                let mut im = image("linux/amd64", &format!("m{i}"));
                im.platform.os_version = Some(format!("10.0.{i}"));
                im
            })
            .collect();
        let sources = [contribution("a", images)];
        let mut opts = IndexOptions::default();
        let c = compose(&sources, &opts).unwrap();
        assert!(c.index.len() as u64 <= MAX_JSON);
        opts.platform_tags = true;
        let err = compose(&sources, &opts).unwrap_err().to_string();
        assert!(
            err.contains("index.json would be") && err.contains("15000 platforms"),
            "{err}"
        );
    }

    #[test]
    fn argument_checks() {
        assert_eq!(
            parse_annotation("k=v=w").unwrap(),
            ("k".into(), "v=w".into())
        );
        assert_eq!(parse_annotation("k=").unwrap(), ("k".into(), "".into()));
        assert!(parse_annotation("=v").is_err());
        assert!(parse_annotation("kv").is_err());
        assert!(parse_annotation("k=\u{1b}]0;title\u{7}").is_err());
        assert!(parse_annotation("k y=v").is_err());
        assert!(parse_annotation(&format!("{}=v", "k".repeat(257))).is_err());
        assert!(parse_annotation(&format!("k={}", "v".repeat(4097))).is_err());
        assert!(parse_annotation(&format!("k={}", "é".repeat(4096))).is_ok());
    }

    #[test]
    fn an_index_over_the_cap_is_refused_naming_the_sources() {
        let images = |name: &str, from: u32| {
            let images: Vec<_> = (from..from + 9000)
                .map(|i| {
                    let mut im = image("linux/amd64", &format!("{name}{i}"));
                    im.platform.os_version = Some(format!("10.0.{i}"));
                    im
                })
                .collect();
            contribution(name, images)
        };
        let sources = [images("a", 0), images("b", 9000), images("c", 18000)];
        let opts = IndexOptions {
            tag: Tag::default(),
            ..Default::default()
        };
        let err = compose(&sources, &opts).unwrap_err().to_string();
        assert!(
            err.contains("27000 manifests") && err.contains("sources: a, b, c"),
            "{err}"
        );
        assert!(compose(&sources[..1], &opts).is_ok());
    }
}
