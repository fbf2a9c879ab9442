//! The JSON documents of an OCI layout, parsed strictly.
//!
//! Only the fields ocimux needs are modelled; unknown fields are ignored, but a
//! known field given twice is an error (serde refuses duplicate fields), and so
//! is a document that contradicts its descriptor (CVE-2021-41190).

use std::collections::BTreeMap;

use serde::Deserialize;

/// Media type of an OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of a Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Media type of a Docker image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of a Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The longest media type a blob keeps (RFC 6838 allows 127 + 1 + 127
/// bytes): snapshots hold one per blob, and a source writes them.
pub const MAX_MEDIA_TYPE: usize = 256;

/// `media_type` as a blob keeps it: cut to [`MAX_MEDIA_TYPE`] bytes (at a
/// character boundary). A longer one is no media type, and stays none cut.
pub fn kept_media_type(media_type: &str) -> std::sync::Arc<str> {
    let mut end = media_type.len().min(MAX_MEDIA_TYPE);
    while !media_type.is_char_boundary(end) {
        end -= 1;
    }
    intern(media_type.get(..end).unwrap_or_default())
}

/// How many distinct media types are shared; past that (a hostile source
/// inventing one per blob) each gets its own copy, so the table is bounded.
const MAX_INTERNED: usize = 64;

/// One shared copy of a media type (most blobs have one of a handful).
fn intern(media_type: &str) -> std::sync::Arc<str> {
    static TABLE: std::sync::Mutex<Vec<std::sync::Arc<str>>> = std::sync::Mutex::new(Vec::new());
    let Ok(mut table) = TABLE.lock() else {
        return media_type.into();
    };
    if let Some(shared) = table.iter().find(|t| ***t == *media_type) {
        return shared.clone();
    }
    let fresh: std::sync::Arc<str> = media_type.into();
    if table.len() < MAX_INTERNED {
        table.push(fresh.clone());
    }
    fresh
}

/// Media type of an uncompressed OCI layer.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// The annotation that names a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation BuildKit puts on attestation manifests.
pub const DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// The largest manifest, index or config accepted (registries' and containers/image's cap).
pub const MAX_JSON: u64 = 4 * 1024 * 1024;

/// What a descriptor's media type makes of the document it points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A single-platform image manifest.
    Manifest,
    /// A list of manifests.
    Index,
}

/// Classifies a manifest-position media type; `None` for anything else.
pub fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Manifest),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// `oci-layout`.
#[derive(Debug, Deserialize)]
pub struct OciLayout {
    /// Must be `1.0.0`.
    #[serde(rename = "imageLayoutVersion")]
    pub image_layout_version: String,
}

/// A descriptor as found in a document; the digest is still a string here and
/// is validated by whoever turns it into a path.
#[derive(Debug, Clone, Deserialize)]
pub struct RawDescriptor {
    /// The media type of the referenced content.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The digest, unvalidated.
    pub digest: String,
    /// The size in bytes.
    pub size: u64,
    /// The platform, in indexes.
    #[serde(default)]
    pub platform: Option<RawPlatform>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl RawDescriptor {
    /// The `org.opencontainers.image.ref.name` annotation.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }
}

/// A platform object as found in an index or config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawPlatform {
    /// Architecture.
    #[serde(default)]
    pub architecture: Option<String>,
    /// Operating system.
    #[serde(default)]
    pub os: Option<String>,
    /// OS version.
    #[serde(rename = "os.version", default)]
    pub os_version: Option<String>,
    /// OS features.
    #[serde(rename = "os.features", default)]
    pub os_features: Option<Vec<String>>,
    /// Variant.
    #[serde(default)]
    pub variant: Option<String>,
}

/// An image index, manifest list, or image manifest: one struct so that a
/// document carrying both `manifests` and `layers` can be refused.
#[derive(Debug, Deserialize)]
pub struct Document {
    /// Must be 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: Option<u32>,
    /// Optional in OCI; must agree with the descriptor when present.
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    /// Index entries.
    #[serde(default)]
    pub manifests: Option<Vec<RawDescriptor>>,
    /// Manifest config.
    #[serde(default)]
    pub config: Option<RawDescriptor>,
    /// Manifest layers.
    #[serde(default)]
    pub layers: Option<Vec<RawDescriptor>>,
}

/// An image config; only the platform fields are read.
pub type Config = RawPlatform;

/// A JSON document that does not parse or does not fit the schema: serde's
/// message, one line, with line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(pub String);

/// A document that contradicts its descriptor or itself (CVE-2021-41190).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    /// `schemaVersion` is missing or not 2.
    #[error("schemaVersion is {0:?}, expected 2")]
    SchemaVersion(Option<u32>),
    /// Both an index's `manifests` and a manifest's `config`/`layers`.
    #[error("carries both manifests and layers/config")]
    Mixed,
    /// Its own `mediaType` differs from its descriptor's.
    #[error("mediaType {own:?} disagrees with its descriptor's {descriptor:?}")]
    MediaType {
        /// The document's.
        own: String,
        /// The descriptor's.
        descriptor: String,
    },
    /// An image index without `manifests`.
    #[error("image index without manifests")]
    NoManifests,
    /// An image manifest without `config`.
    #[error("image manifest without config")]
    NoConfig,
    /// An image manifest without `layers`.
    #[error("image manifest without layers")]
    NoLayers,
}

/// Parses JSON, mapping errors to one line.
pub fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, JsonError> {
    serde_json::from_slice(bytes).map_err(|e| JsonError(e.to_string()))
}

impl Document {
    /// Checks the document against what its descriptor (or position) says it is.
    pub fn check(
        &self,
        expected: Kind,
        descriptor_media_type: Option<&str>,
    ) -> Result<(), DocError> {
        if self.schema_version != Some(2) {
            return Err(DocError::SchemaVersion(self.schema_version));
        }
        if self.manifests.is_some() && (self.layers.is_some() || self.config.is_some()) {
            return Err(DocError::Mixed);
        }
        if let (Some(own), Some(desc)) = (&self.media_type, descriptor_media_type) {
            if own != desc {
                return Err(DocError::MediaType {
                    own: own.clone(),
                    descriptor: desc.to_owned(),
                });
            }
        }
        match expected {
            Kind::Index if self.manifests.is_none() => Err(DocError::NoManifests),
            Kind::Manifest if self.config.is_none() => Err(DocError::NoConfig),
            Kind::Manifest if self.layers.is_none() => Err(DocError::NoLayers),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_media_types_are_bounded() {
        assert_eq!(&*kept_media_type(OCI_LAYER), OCI_LAYER);
        assert_eq!(kept_media_type(&"a".repeat(10_000)).len(), MAX_MEDIA_TYPE);
        // Cut at a character boundary.
        let wide = format!("{}é", "a".repeat(MAX_MEDIA_TYPE - 1));
        assert_eq!(&*kept_media_type(&wide), "a".repeat(MAX_MEDIA_TYPE - 1));
        // Shared.
        assert!(std::sync::Arc::ptr_eq(
            &kept_media_type(OCI_LAYER),
            &kept_media_type(OCI_LAYER)
        ));
    }

    #[test]
    fn check_table() {
        let d = r#"{"mediaType":"x","digest":"sha256:0","size":1}"#;
        let cases: &[(String, Kind, Option<&str>, Result<(), DocError>)] = &[
            (
                format!(r#"{{"schemaVersion":2,"config":{d},"layers":[]}}"#),
                Kind::Manifest,
                None,
                Ok(()),
            ),
            (
                r#"{"schemaVersion":2,"manifests":[]}"#.to_string(),
                Kind::Index,
                Some(OCI_INDEX),
                Ok(()),
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{d},"layers":[]}}"#
                ),
                Kind::Manifest,
                Some(OCI_MANIFEST),
                Ok(()),
            ),
            (
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","config":{d},"layers":[]}}"#
                ),
                Kind::Manifest,
                Some(OCI_MANIFEST),
                Err(DocError::MediaType {
                    own: OCI_INDEX.into(),
                    descriptor: OCI_MANIFEST.into(),
                }),
            ),
            (
                format!(r#"{{"schemaVersion":2,"manifests":[],"config":{d},"layers":[]}}"#),
                Kind::Manifest,
                None,
                Err(DocError::Mixed),
            ),
            (
                format!(r#"{{"schemaVersion":1,"config":{d},"layers":[]}}"#),
                Kind::Manifest,
                None,
                Err(DocError::SchemaVersion(Some(1))),
            ),
            (
                r#"{"schemaVersion":2,"layers":[]}"#.to_string(),
                Kind::Manifest,
                None,
                Err(DocError::NoConfig),
            ),
            (
                format!(r#"{{"schemaVersion":2,"config":{d}}}"#),
                Kind::Manifest,
                None,
                Err(DocError::NoLayers),
            ),
            (
                r#"{"schemaVersion":2}"#.into(),
                Kind::Index,
                None,
                Err(DocError::NoManifests),
            ),
        ];
        for (json, kind, media, want) in cases {
            let doc: Document = parse(json.as_bytes()).unwrap();
            match (doc.check(*kind, *media), want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(want)) => assert_eq!(&e, want, "{json}"),
                (got, want) => panic!("{json}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn refuses_duplicate_fields_and_bad_sizes() {
        for (json, frag) in [
            (
                r#"{"schemaVersion":2,"schemaVersion":2}"#,
                "duplicate field",
            ),
            (
                r#"{"mediaType":"a","digest":"b","size":-1}"#,
                "invalid value",
            ),
            (
                r#"{"mediaType":"a","digest":"b","size":1e3}"#,
                "invalid type",
            ),
            (r#"{"mediaType":"a","digest":"b"}"#, "missing field `size`"),
        ] {
            let err = if json.contains("schemaVersion") {
                parse::<Document>(json.as_bytes()).unwrap_err()
            } else {
                parse::<RawDescriptor>(json.as_bytes()).unwrap_err()
            };
            assert!(err.0.contains(frag), "{json}: {err}");
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(kind_of(OCI_MANIFEST), Some(Kind::Manifest));
        assert_eq!(kind_of(DOCKER_MANIFEST), Some(Kind::Manifest));
        assert_eq!(kind_of(OCI_INDEX), Some(Kind::Index));
        assert_eq!(kind_of(DOCKER_LIST), Some(Kind::Index));
        assert_eq!(kind_of("application/vnd.oci.image.layer.v1.tar+gzip"), None);
    }
}
