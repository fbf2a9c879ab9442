//! A small builder of OCI layouts on disk, for tests (unit and integration):
//! valid ones, and broken ones by writing any JSON or bytes where a valid file
//! would be. Not part of the supported API.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};

use crate::files::confine::{Access, FileId, Resolved, SourceDir};
use crate::oci::digest::Digest;
use crate::oci::document::{OCI_INDEX, OCI_MANIFEST, REF_NAME};
use crate::oci::platform::Platform;
use crate::source::{Blob, Contribution, Image, Origin};

/// A platform manifest descriptor whose digest is the sha256 of `seed`.
pub fn image(platform: &str, seed: &str) -> Image {
    Image {
        media_type: OCI_MANIFEST.into(),
        digest: Digest::sha256_of(seed.as_bytes()),
        size: 100 + seed.len() as u64,
        image_size: 1000 + seed.len() as u64,
        platform: Platform::parse(platform).expect("valid platform").platform,
    }
}

/// `/`, held as a source directory, for blobs whose files are never opened.
pub fn root_dir() -> Arc<SourceDir> {
    static ROOT: OnceLock<Arc<SourceDir>> = OnceLock::new();
    ROOT.get_or_init(|| match crate::files::confine::resolve(Path::new("/")) {
        Ok(Resolved::Dir(d)) => Arc::new(d),
        other => panic!("resolving /: {other:?}"),
    })
    .clone()
}

/// A whole-file origin under `dir` with a made-up identity of `size` bytes.
pub fn file_origin(dir: Arc<SourceDir>, size: u64) -> Origin {
    Origin::File {
        dir,
        id: FileId {
            dev: 0,
            ino: 0,
            size,
            mtime_ns: 0,
            ctime_ns: 0,
            unlinked: false,
        },
    }
}

/// A blob whose digest is the sha256 of `seed`, `seed.len()` bytes long, at
/// `/src/SEED`, owned by 7:8 with mode 0440.
pub fn blob(seed: &str) -> Blob {
    Blob {
        digest: Digest::sha256_of(seed.as_bytes()),
        size: seed.len() as u64,
        origin: file_origin(root_dir(), seed.len() as u64),
        access: Access {
            uid: 7,
            gid: 8,
            mode: 0o440,
            passthrough: true,
        },
        media_type: crate::oci::document::OCI_LAYER.into(),
        source: "src".into(),
        replaced: false,
    }
}

/// Root's, readable by all.
const PUBLIC: Access = Access {
    uid: 0,
    gid: 0,
    mode: 0o444,
    passthrough: true,
};

/// A blob whose bytes are a real file `blobs/sha256/<hex>` under `root`,
/// recorded with the identity it has now.
pub fn file_blob(root: &Path, bytes: &[u8]) -> Blob {
    let digest = Digest::sha256_of(bytes);
    let rel = digest.blob_path();
    let path = root.join(&rel);
    fs::create_dir_all(path.parent().expect("blob path has a parent")).expect("mkdir");
    fs::write(&path, bytes).expect("write blob");
    let dir = match crate::files::confine::resolve(root) {
        Ok(Resolved::Dir(d)) => Arc::new(d),
        other => panic!("resolving {}: {other:?}", root.display()),
    };
    let (_, id) = dir.open(&rel).expect("open blob");
    Blob {
        digest,
        size: bytes.len() as u64,
        origin: Origin::File { dir, id },
        access: PUBLIC,
        media_type: crate::oci::document::OCI_LAYER.into(),
        source: "src".into(),
        replaced: false,
    }
}

/// Composes contributions with the default tag, for tests of what comes after.
pub fn composed(sources: &[Contribution]) -> crate::snapshot::index::Composition {
    crate::snapshot::index::compose(sources, &crate::snapshot::index::IndexOptions::default())
        .expect("compose")
}

/// What a source named `name` with these images contributes (their manifests as blobs).
pub fn contribution(name: &str, images: Vec<Image>) -> Contribution {
    let blobs = images
        .iter()
        .map(|i| {
            Arc::new(Blob {
                digest: i.digest.clone(),
                size: i.size,
                origin: file_origin(root_dir(), i.size),
                access: PUBLIC,
                media_type: crate::oci::document::OCI_LAYER.into(),
                source: name.into(),
                replaced: false,
            })
        })
        .collect();
    Contribution {
        name: name.into(),
        images,
        blobs,
        broken: Vec::new(),
        referrers: Vec::new(),
        documents: Vec::new(),
    }
}

/// Writes a layout under `root`.
#[derive(Debug, Clone)]
pub struct LayoutBuilder {
    /// The layout's root directory.
    pub root: PathBuf,
}

impl LayoutBuilder {
    /// Creates `root` with `oci-layout` and an empty `blobs/sha256`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        fs::create_dir_all(root.join("blobs/sha256")).expect("create layout");
        fs::write(
            root.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("write oci-layout");
        LayoutBuilder { root }
    }

    /// Writes `bytes` as a sha256 blob; returns a descriptor of `media_type`.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let digest = Digest::sha256_of(bytes);
        fs::write(self.root.join(digest.blob_path()), bytes).expect("write blob");
        json!({"mediaType": media_type, "digest": digest.to_string(), "size": bytes.len()})
    }

    /// Writes a JSON document as a blob.
    pub fn json_blob(&self, media_type: &str, doc: &Value) -> Value {
        self.blob(media_type, &serde_json::to_vec(doc).expect("serialise"))
    }

    /// Writes a config (with `platform` fields merged in), `layers` and a
    /// manifest; returns the manifest's descriptor.
    pub fn image(&self, platform: Value, layers: &[&[u8]]) -> Value {
        let mut config = json!({"created": "2026-01-01T00:00:00Z", "rootfs": {"type": "layers", "diff_ids": []}});
        if let (Some(c), Some(p)) = (config.as_object_mut(), platform.as_object()) {
            c.extend(p.clone());
        }
        let config = self.json_blob("application/vnd.oci.image.config.v1+json", &config);
        let layers: Vec<Value> = layers
            .iter()
            .map(|l| self.blob("application/vnd.oci.image.layer.v1.tar+gzip", l))
            .collect();
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers});
        self.json_blob(OCI_MANIFEST, &manifest)
    }

    /// Writes `index.json` listing `entries` (each tagged when a tag is given).
    pub fn index(&self, entries: &[(Value, Option<&str>)]) {
        let manifests: Vec<Value> = entries
            .iter()
            .map(|(d, tag)| {
                let mut d = d.clone();
                if let (Some(tag), Some(obj)) = (tag, d.as_object_mut()) {
                    obj.insert("annotations".into(), json!({ REF_NAME: tag }));
                }
                d
            })
            .collect();
        self.write(
            "index.json",
            &serde_json::to_vec(
                &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
            )
            .expect("serialise"),
        );
    }

    /// Writes any file of the layout.
    pub fn write(&self, rel: &str, bytes: &[u8]) {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create dir");
        }
        fs::write(path, bytes).expect("write file");
    }

    /// A one-image layout: config platform `os/arch[/variant]`, two layers.
    pub fn simple(root: impl Into<PathBuf>, os: &str, arch: &str, seed: &str) -> Self {
        let b = LayoutBuilder::new(root);
        let m = b.image(
            json!({"os": os, "architecture": arch}),
            &[
                format!("layer-a-{seed}").as_bytes(),
                format!("layer-b-{seed}").as_bytes(),
            ],
        );
        b.index(&[(m, Some("latest"))]);
        b
    }

    /// A layout with one linux/amd64 image whose only layer is `layer`;
    /// returns the builder and the layer's descriptor.
    pub fn one_layer(root: impl Into<PathBuf>, layer: &[u8]) -> (Self, Value) {
        let b = LayoutBuilder::new(root);
        let l = b.blob("application/vnd.oci.image.layer.v1.tar", layer);
        let config = b.json_blob(
            "application/vnd.oci.image.config.v1+json",
            &json!({"os": "linux", "architecture": "amd64"}),
        );
        let m = b.json_blob(
            OCI_MANIFEST,
            &json!({"schemaVersion": 2, "config": config, "layers": [l.clone()]}),
        );
        b.index(&[(m, None)]);
        (b, l)
    }

    /// The path of a blob by descriptor.
    pub fn blob_path(&self, descriptor: &Value) -> PathBuf {
        let digest = descriptor["digest"].as_str().unwrap_or_default();
        self.root
            .join(Path::new("blobs").join(digest.replacen(':', "/", 1)))
    }
}

/// A minimal tar writer for hostile and huge archives that GNU tar will not
/// make, and the one place a tar checksum is computed for tests.
pub mod tarw {
    /// A ustar header; `size` in octal, or base-256 when it does not fit.
    pub fn header(name: &str, size: u64, typeflag: u8) -> [u8; 512] {
        header_with_link(name, size, typeflag, "")
    }

    /// A ustar header naming a link target.
    pub fn header_with_link(name: &str, size: u64, typeflag: u8, link: &str) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        if size < 0o77777777777 {
            h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        } else {
            h[124] = 0x80;
            h[128..136].copy_from_slice(&size.to_be_bytes());
        }
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = typeflag;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        set_checksum(&mut h);
        h
    }

    /// Writes the checksum of a 512-byte header (after any edit of it).
    pub fn set_checksum(h: &mut [u8]) {
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().take(512).map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{:06o}\0", sum % 0o1000000).as_bytes());
    }

    /// One pax record `"%d key=value\n"`.
    pub fn pax_record(key: &str, value: &str) -> String {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}")
    }

    /// Appends a member (header and padded data) to `out`.
    pub fn member(out: &mut Vec<u8>, name: &str, data: &[u8], typeflag: u8) {
        out.extend_from_slice(&header(name, data.len() as u64, typeflag));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    /// Appends a symbolic link member.
    pub fn symlink(out: &mut Vec<u8>, name: &str, target: &str) {
        out.extend_from_slice(&header_with_link(name, 0, b'2', target));
    }

    /// Appends a pax extended header applying `records` to the next member.
    pub fn pax(out: &mut Vec<u8>, records: &[(&str, &str)]) {
        let body: String = records.iter().map(|(k, v)| pax_record(k, v)).collect();
        member(out, "PaxHeaders/x", body.as_bytes(), b'x');
    }

    /// The end-of-archive marker.
    pub fn finish(out: &mut Vec<u8>) {
        out.extend_from_slice(&[0u8; 1024]);
    }
}
