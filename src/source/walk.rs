//! The OCI walk of one source: `index.json` → the chosen entry → image
//! index (if any) → manifests → config and layers, checking every descriptor
//! against the file it names.

use std::sync::Arc;

use super::root::{Found, Root};
use super::spec::{ArmVariant, Transport};
use super::{Blob, BrokenBlob, Contribution, Image, KeptDocument, MAX_KEPT_BYTES, SourceSpec};
use crate::error::{Error, Problem};
use crate::oci::digest::Digest;
use crate::oci::document::{self, Document, Kind, RawDescriptor, RawPlatform};
use crate::oci::platform::Platform;

/// Reads `spec`, choosing the `index.json` entry named `want_ref`, keeping
/// only the platforms `only` matches (all when empty).
pub fn read(
    spec: &SourceSpec,
    want_ref: Option<&str>,
    only: &[Platform],
) -> Result<Contribution, Error> {
    let reader = Reader::open(spec, only)?;
    let index = reader.read_index_json()?;
    let mut out = Contribution {
        name: spec.name.clone(),
        images: Vec::new(),
        blobs: Vec::new(),
        broken: Vec::new(),
        referrers: Vec::new(),
        documents: Vec::new(),
    };
    if let Some(rows) = multi_arch_rows(&index, want_ref) {
        // index.json itself is the multi-arch index (see multi_arch_rows).
        reader.add_children(&mut out, &rows, "index.json", spec.platform.as_ref())?;
    } else {
        let entry = choose_entry(&index, want_ref).map_err(|p| reader.err("index.json", p))?;
        match document::kind_of(&entry.media_type) {
            Some(Kind::Manifest) => {
                reader.add_image(&mut out, entry, "index.json", spec.platform.as_ref())?
            }
            Some(Kind::Index) => reader.add_index(&mut out, entry, spec.platform.as_ref())?,
            None => {
                return Err(reader.err("index.json", Problem::MediaType(entry.media_type.clone())));
            }
        }
        if spec.with_referrers {
            reader.add_referrers(&mut out, &index, entry);
        }
    }
    out.blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    out.blobs.dedup_by(|a, b| a.digest == b.digest);
    bounded(out.blobs.len(), MAX_BLOBS).map_err(|p| reader.err("index.json", p))?;
    // The directories held open to build this snapshot are not needed while
    // it is served (opens go through the root), and retained snapshots
    // would keep them open.
    if let Root::Dir(dir) = &reader.root {
        dir.forget_dirs();
    }
    Ok(out)
}

/// The most `index.json` entries looked at for referrers per source (each
/// is read and hashed at every rebuild).
pub const MAX_REFERRER_ENTRIES: usize = 256;

/// The most blobs one source may contribute (documented in README.md): each
/// costs the daemon about 340 bytes in every live snapshot (BENCHMARKS.md).
pub const MAX_BLOBS: usize = 262_144;

/// Refuses a count over `max`.
fn bounded(count: usize, max: usize) -> Result<(), Problem> {
    match count > max {
        true => Err(Problem::TooManyBlobs(max)),
        false => Ok(()),
    }
}

/// Picks the entry: by ref name when asked; else the only one; else `latest`.
fn choose_entry<'a>(
    index: &'a [RawDescriptor],
    want_ref: Option<&str>,
) -> Result<&'a RawDescriptor, Problem> {
    let found = || {
        // Quoted: a source chose these words, and they reach log files.
        let names: Vec<String> = index
            .iter()
            .map(|d| d.ref_name().map_or("(none)".into(), |n| format!("{n:?}")))
            .collect();
        names.join(", ")
    };
    let pick = |wanted: &str| -> Result<Option<&'a RawDescriptor>, Problem> {
        let hits: Vec<&RawDescriptor> = index
            .iter()
            .filter(|d| d.ref_name() == Some(wanted))
            .collect();
        match hits.as_slice() {
            [] => Ok(None),
            many => one_choice(many).map(Some).ok_or(Problem::DuplicateRef {
                wanted: wanted.to_owned(),
                count: many.len(),
            }),
        }
    };
    let all: Vec<&RawDescriptor> = index.iter().collect();
    match (want_ref, index) {
        (_, []) => Err(Problem::EmptyIndex),
        (Some(wanted), _) => pick(wanted)?.ok_or_else(|| Problem::RefNotFound {
            wanted: wanted.to_owned(),
            found: found(),
        }),
        // One manifest under several names (`latest` and a version) is one choice.
        (None, many) => match one_choice(&all) {
            Some(only) => Ok(only),
            None => pick("latest")?.ok_or_else(|| Problem::AmbiguousRef {
                count: many.len(),
                found: found(),
            }),
        },
    }
}

/// The rows of an `index.json` that is itself a multi-arch index: no ref
/// asked for, several manifests and not one name among them, each with a
/// platform (what `oci-multiarch.bbclass` wrote before it nested its index,
/// `buildah manifest push oci:` and some CI scripts write). Attestations are
/// left out as in a nested index. `None` when the entries are anything else
/// (then [`choose_entry`] decides, and explains).
fn multi_arch_rows<'a>(
    index: &'a [RawDescriptor],
    want_ref: Option<&str>,
) -> Option<Vec<&'a RawDescriptor>> {
    let platformed = |d: &RawDescriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os.is_some() && p.architecture.is_some())
    };
    let fits = want_ref.is_none()
        && index.len() > 1
        && one_choice(&index.iter().collect::<Vec<_>>()).is_none()
        && index.iter().all(|d| {
            d.ref_name().is_none()
                && platformed(d)
                && document::kind_of(&d.media_type) == Some(Kind::Manifest)
        });
    fits.then(|| index.iter().filter(|d| !is_attestation(d)).collect())
}

/// The entry, when every one of `entries` names the same document (digest
/// and media type): several ref names for one manifest are not a choice.
fn one_choice<'a>(entries: &[&'a RawDescriptor]) -> Option<&'a RawDescriptor> {
    let (first, rest) = entries.split_first()?;
    rest.iter()
        .all(|d| d.digest == first.digest && d.media_type == first.media_type)
        .then_some(*first)
}

/// Docker's registry API takes a Docker manifest only with a Docker config
/// (an OCI manifest may carry any config type).
fn check_config_type(manifest_type: &str, config_type: &str) -> Result<(), Problem> {
    if manifest_type == document::DOCKER_MANIFEST && config_type != document::DOCKER_CONFIG {
        return Err(Problem::MixedMediaTypes(format!(
            "a Docker image manifest whose config is {config_type:?}; registries accept only {:?}",
            document::DOCKER_CONFIG
        )));
    }
    Ok(())
}

/// Whether a layer's failure is the layer's own (missing, mis-sized, not a
/// regular file), not a bad descriptor.
fn is_broken_layer(e: &Error) -> bool {
    matches!(
        e,
        Error::Source {
            problem: Problem::MissingBlob
                | Problem::SizeMismatch { .. }
                | Problem::Open(_)
                | Problem::NotRegular
                | Problem::Link
                | Problem::Io(_),
            ..
        }
    )
}

/// Whether an index entry is an attestation or other non-image entry that
/// BuildKit adds (platform `unknown/unknown`, `vnd.docker.reference.type`).
fn is_attestation(d: &RawDescriptor) -> bool {
    d.annotations.contains_key(document::DOCKER_REFERENCE_TYPE)
        || d.platform.as_ref().is_some_and(|p| {
            p.os.as_deref() == Some("unknown") && p.architecture.as_deref() == Some("unknown")
        })
}

struct Reader<'a> {
    name: &'a str,
    /// `--platform`: the platforms kept (all when empty).
    only: &'a [Platform],
    /// See [`SourceSpec::report_broken_layers`].
    report_broken: bool,
    /// See [`SourceSpec::arm_variant`].
    arm_variant: &'a ArmVariant,
    /// The name again, shared by every blob found.
    source: std::sync::Arc<str>,
    root: Root,
    /// Bytes of documents still to keep ([`SourceSpec::keep_documents`]:
    /// [`MAX_KEPT_BYTES`]; otherwise 0, and none is kept).
    keep_budget: std::cell::Cell<usize>,
}

impl<'a> Reader<'a> {
    fn open(spec: &'a SourceSpec, only: &'a [Platform]) -> Result<Self, Error> {
        let name = spec.name.as_str();
        let root = Root::open(&spec.path, spec.allow_ocimux_mount)
            .map_err(|p| Error::source(name, ".", p))?;
        let wrong = match (spec.transport, &root) {
            (Transport::Layout, Root::Tar { .. }) => {
                Some("oci: names a tar archive here; write oci-archive:PATH")
            }
            (Transport::Archive, Root::Dir(_)) => {
                Some("oci-archive: names a directory here; write oci:PATH")
            }
            _ => None,
        };
        if let Some(why) = wrong {
            return Err(Error::source(name, ".", Problem::NotLayout(why.into())));
        }
        let reader = Reader {
            name,
            only,
            report_broken: spec.report_broken_layers,
            arm_variant: &spec.arm_variant,
            source: name.into(),
            root,
            keep_budget: std::cell::Cell::new(match spec.keep_documents {
                true => MAX_KEPT_BYTES,
                false => 0,
            }),
        };
        let marker = reader.read_small("oci-layout", "no oci-layout file")?;
        let layout: document::OciLayout =
            document::parse(&marker).map_err(|e| reader.err("oci-layout", Problem::Json(e)))?;
        if layout.image_layout_version != "1.0.0" {
            return Err(reader.err(
                "oci-layout",
                Problem::LayoutVersion(layout.image_layout_version),
            ));
        }
        Ok(reader)
    }

    fn err(&self, file: &str, problem: Problem) -> Error {
        Error::source(self.name, file, problem)
    }

    /// Reads a JSON file of the layout that is not a blob.
    fn read_small(&self, rel: &str, missing: &str) -> Result<Vec<u8>, Error> {
        self.root
            .read_small(rel, document::MAX_JSON, missing)
            .map_err(|p| self.err(rel, p))
    }

    fn read_index_json(&self) -> Result<Vec<RawDescriptor>, Error> {
        let bytes = self.read_small("index.json", "no index.json")?;
        let doc: Document =
            document::parse(&bytes).map_err(|e| self.err("index.json", Problem::Json(e)))?;
        doc.check(Kind::Index, Some(document::OCI_INDEX))
            .map_err(|e| self.err("index.json", Problem::Ambiguous(e)))?;
        let manifests = doc.manifests.unwrap_or_default();
        if manifests.is_empty() {
            return Err(self.err("index.json", Problem::EmptyIndex));
        }
        Ok(manifests)
    }

    /// Validates a descriptor's digest (blamed on `holder`, the file that
    /// contains it) and checks the blob exists, confined to the source, as a
    /// regular file of the descriptor's size.
    fn blob(&self, desc: &RawDescriptor, holder: &str) -> Result<(Blob, Found), Error> {
        let digest = Digest::parse(&desc.digest).map_err(|e| {
            self.err(
                holder,
                Problem::BadDigest {
                    digest: desc.digest.clone(),
                    why: e.0,
                },
            )
        })?;
        let rel = digest.blob_path();
        let found = self
            .root
            .find(&rel)
            .map_err(|p| self.err(&rel, p))?
            .ok_or_else(|| self.err(&rel, Problem::MissingBlob))?;
        if found.size != desc.size {
            return Err(self.err(
                &rel,
                Problem::SizeMismatch {
                    expected: desc.size,
                    actual: found.size,
                },
            ));
        }
        let blob = Blob {
            digest,
            size: desc.size,
            origin: found.origin.clone(),
            access: found.access,
            media_type: document::kept_media_type(&desc.media_type),
            source: self.source.clone(),
            replaced: false,
        };
        Ok((blob, found))
    }

    /// Keeps `bytes`, the document `blob` (already hashed), in `out` while
    /// the budget allows.
    fn keep(&self, out: &mut Contribution, blob: &Blob, bytes: &[u8]) {
        let Some(left) = self.keep_budget.get().checked_sub(bytes.len()) else {
            return;
        };
        self.keep_budget.set(left);
        out.documents.push(KeptDocument {
            digest: blob.digest.clone(),
            media_type: blob.media_type.clone(),
            bytes: Arc::from(bytes),
        });
    }

    /// Reads a JSON blob (manifest, index or config) and verifies its digest.
    fn json_blob(&self, desc: &RawDescriptor, holder: &str) -> Result<(Blob, Vec<u8>), Error> {
        let (blob, found) = self.blob(desc, holder)?;
        let rel = blob.digest.blob_path();
        let bytes = found
            .read(document::MAX_JSON)
            .map_err(|p| self.err(&rel, p))?;
        if bytes.len() as u64 != blob.size {
            // The file changed between stat and read.
            return Err(self.err(
                &rel,
                Problem::SizeMismatch {
                    expected: blob.size,
                    actual: bytes.len() as u64,
                },
            ));
        }
        blob.digest.matches(&bytes).map_err(|actual| {
            self.err(
                &rel,
                Problem::DigestMismatch {
                    actual: actual.to_string(),
                },
            )
        })?;
        Ok((blob, bytes))
    }

    fn add_index(
        &self,
        out: &mut Contribution,
        entry: &RawDescriptor,
        platform: Option<&Platform>,
    ) -> Result<(), Error> {
        let (blob, bytes) = self.json_blob(entry, "index.json")?;
        self.keep(out, &blob, &bytes);
        let rel = blob.digest.blob_path();
        let doc: Document =
            document::parse(&bytes).map_err(|e| self.err(&rel, Problem::Json(e)))?;
        doc.check(Kind::Index, Some(&entry.media_type))
            .map_err(|e| self.err(&rel, Problem::Ambiguous(e)))?;
        let children: Vec<&RawDescriptor> = doc
            .manifests
            .iter()
            .flatten()
            .filter(|d| {
                let skip = is_attestation(d);
                if skip {
                    log::info!(
                        "source {}: {rel}: skipping attestation manifest {}",
                        self.name,
                        d.digest
                    );
                }
                !skip
            })
            .collect();
        self.add_children(out, &children, &rel, platform)
    }

    /// Adds each platform manifest of an index (`holder`: the file that lists them).
    fn add_children(
        &self,
        out: &mut Contribution,
        children: &[&RawDescriptor],
        holder: &str,
        platform: Option<&Platform>,
    ) -> Result<(), Error> {
        if children.is_empty() {
            return Err(self.err(holder, Problem::NoPlatformManifests));
        }
        if platform.is_some() && children.len() > 1 {
            return Err(self.err(holder, Problem::OverrideOnIndex));
        }
        for child in children {
            match document::kind_of(&child.media_type) {
                Some(Kind::Manifest) => self.add_image(out, child, holder, platform)?,
                Some(Kind::Index) => return Err(self.err(holder, Problem::NestedIndex)),
                None => {
                    return Err(self.err(holder, Problem::MediaType(child.media_type.clone())));
                }
            }
        }
        Ok(())
    }

    fn add_image(
        &self,
        out: &mut Contribution,
        desc: &RawDescriptor,
        holder: &str,
        platform: Option<&Platform>,
    ) -> Result<(), Error> {
        let (manifest_blob, bytes) = self.json_blob(desc, holder)?;
        let rel = manifest_blob.digest.blob_path();
        let doc: Document =
            document::parse(&bytes).map_err(|e| self.err(&rel, Problem::Json(e)))?;
        doc.check(Kind::Manifest, Some(&desc.media_type))
            .map_err(|e| self.err(&rel, Problem::Ambiguous(e)))?;
        let (Some(config), Some(layers)) = (&doc.config, &doc.layers) else {
            return Err(self.err(&rel, Problem::Ambiguous(document::DocError::NoConfig)));
        };
        check_config_type(&desc.media_type, &config.media_type).map_err(|p| self.err(&rel, p))?;
        let (config_blob, config_bytes) = self.json_blob(config, &rel)?;
        self.keep(out, &manifest_blob, &bytes);
        self.keep(out, &config_blob, &config_bytes);
        let config_rel = config_blob.digest.blob_path();
        let platform = match platform {
            Some(p) => p.clone(),
            None => {
                let raw: RawPlatform = document::parse(&config_bytes)
                    .map_err(|e| self.err(&config_rel, Problem::Json(e)))?;
                super::platform_of::platform_from(
                    self.name,
                    self.arm_variant,
                    &raw,
                    desc.platform.as_ref(),
                )
                .map_err(|p| self.err(&config_rel, p))?
            }
        };
        if !self.only.is_empty() && !self.only.iter().any(|p| p.matches(&platform)) {
            log::info!("source {}: {platform} left out (--platform)", self.name);
            return Ok(());
        }
        out.images.push(Image {
            media_type: desc.media_type.clone(),
            digest: manifest_blob.digest.clone(),
            size: manifest_blob.size,
            image_size: layers.iter().fold(
                manifest_blob.size.saturating_add(config_blob.size),
                |n, l| n.saturating_add(l.size),
            ),
            platform,
        });
        out.blobs.push(Arc::new(manifest_blob));
        out.blobs.push(Arc::new(config_blob));
        self.add_layers(out, layers, &rel)
    }

    /// Each layer's blob; with `report_broken_layers`, a missing or mis-sized
    /// one is recorded instead of failing the read.
    /// Adds the manifests of `index` (other than the chosen `entry`) whose
    /// `subject` is a manifest served from this source, with their config
    /// and layers. A referrer that cannot be served whole is skipped with a
    /// warning: it never fails the image it refers to. At most
    /// [`MAX_REFERRER_ENTRIES`] entries are looked at.
    fn add_referrers(
        &self,
        out: &mut Contribution,
        index: &[RawDescriptor],
        entry: &RawDescriptor,
    ) {
        let subjects: Vec<String> = out
            .images
            .iter()
            .map(|i| i.digest.to_string())
            .chain(std::iter::once(entry.digest.clone()))
            .collect();
        let candidates = index
            .iter()
            .filter(|d| d.digest != entry.digest && d.size <= document::MAX_JSON)
            .filter(|d| document::kind_of(&d.media_type) == Some(Kind::Manifest))
            .take(MAX_REFERRER_ENTRIES);
        let images: std::collections::HashSet<Digest> =
            out.blobs.iter().map(|b| b.digest.clone()).collect();
        for d in candidates {
            match self.referrer(d, &subjects) {
                Ok(Some(blobs)) => {
                    let only = blobs.iter().map(|b| b.digest.clone());
                    let mut only: Vec<Digest> = only.filter(|d| !images.contains(d)).collect();
                    only.sort();
                    only.dedup();
                    if let Some(manifest) = blobs.first().map(|b| b.digest.clone()) {
                        out.referrers.push(super::Referrer { manifest, only });
                    }
                    out.blobs.extend(blobs.into_iter().map(Arc::new));
                }
                Ok(None) => {}
                Err(e) => log::warn!(
                    "{e}; referrer {} not served",
                    crate::error::printable(&d.digest)
                ),
            }
        }
    }

    /// The blobs of manifest `d` if its subject is one of `subjects`.
    fn referrer(&self, d: &RawDescriptor, subjects: &[String]) -> Result<Option<Vec<Blob>>, Error> {
        /// What a referrer's manifest says of itself.
        #[derive(serde::Deserialize)]
        struct Referring {
            #[serde(default)]
            subject: Option<RawDescriptor>,
            #[serde(default)]
            config: Option<RawDescriptor>,
            #[serde(default)]
            layers: Vec<RawDescriptor>,
        }
        let (manifest, bytes) = self.json_blob(d, "index.json")?;
        let rel = manifest.digest.blob_path();
        let doc: Referring =
            document::parse(&bytes).map_err(|e| self.err(&rel, Problem::Json(e)))?;
        let subject = doc.subject.as_ref().map(|s| s.digest.as_str());
        if !subject.is_some_and(|s| subjects.iter().any(|x| x == s)) {
            return Ok(None);
        }
        let mut blobs = vec![manifest];
        for desc in doc.config.iter().chain(&doc.layers) {
            blobs.push(self.blob(desc, &rel)?.0);
        }
        Ok(Some(blobs))
    }

    fn add_layers(
        &self,
        out: &mut Contribution,
        layers: &[RawDescriptor],
        holder: &str,
    ) -> Result<(), Error> {
        for layer in layers {
            // Before duplicates are merged, a source may name each blob
            // several times (images sharing layers): stop long before
            // memory follows a hostile count.
            bounded(out.blobs.len(), 4 * MAX_BLOBS).map_err(|p| self.err(holder, p))?;
            match self.blob(layer, holder) {
                Ok((blob, _)) => out.blobs.push(Arc::new(blob)),
                Err(e) if self.report_broken && is_broken_layer(&e) => {
                    // A broken layer's digest parsed (a bad one is not "broken").
                    let Ok(digest) = Digest::parse(&layer.digest) else {
                        return Err(e);
                    };
                    out.broken.push(BrokenBlob {
                        digest,
                        size: layer.size,
                        media_type: document::kept_media_type(&layer.media_type).to_string(),
                        source: self.name.to_owned(),
                        problem: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::document::{DOCKER_LIST, DOCKER_MANIFEST};
    use crate::source::Origin;
    use crate::testing::testutil::LayoutBuilder;
    use serde_json::{Value, json};

    /// An entry tagged `tag` naming manifest `n`.
    fn desc(tag: Option<&str>, n: u8) -> RawDescriptor {
        let mut annotations = std::collections::BTreeMap::new();
        if let Some(t) = tag {
            annotations.insert(document::REF_NAME.to_owned(), t.to_owned());
        }
        RawDescriptor {
            media_type: document::OCI_MANIFEST.into(),
            digest: format!("sha256:{}", n.to_string().repeat(64)),
            size: 1,
            platform: None,
            annotations,
        }
    }

    #[test]
    fn choose_entry_table() {
        // entries (tag, manifest), --ref, Ok(index chosen) or Err(fragment)
        type Entries<'a> = &'a [(Option<&'a str>, u8)];
        let cases: &[(Entries, Option<&str>, Result<usize, &str>)] = &[
            (&[(None, 1)], None, Ok(0)),
            (&[(Some("v1"), 1)], None, Ok(0)),
            (&[(Some("v1"), 1), (Some("latest"), 2)], None, Ok(1)),
            (
                &[(Some("v1"), 1), (Some("v2"), 2)],
                None,
                Err(r#"choose one with --ref (ref names found: "v1", "v2")"#),
            ),
            (&[(None, 1), (None, 2)], None, Err("(none), (none)")),
            // Issue 16: a ref name is quoted, so none of its words stands
            // alone in a log line.
            (
                &[(Some("a /home/build/evil.so b"), 1), (Some("v2"), 2)],
                None,
                Err(r#"found: "a /home/build/evil.so b", "v2")"#),
            ),
            (
                &[(Some("latest"), 1), (Some("latest"), 2)],
                None,
                Err("2 entries have ref name \"latest\""),
            ),
            (&[(Some("v1"), 1), (Some("v2"), 2)], Some("v2"), Ok(1)),
            (
                &[(Some("v1"), 1)],
                Some("v3"),
                Err(r#"no entry has ref name "v3" (ref names found: "v1")"#),
            ),
            (&[(None, 1)], Some("latest"), Err("no entry has ref name")),
            (&[], None, Err("lists no manifests")),
            // One manifest under several names: one choice.
            (&[(Some("1.2.3"), 7), (Some("stable"), 7)], None, Ok(0)),
            (&[(Some("latest"), 7), (Some("latest"), 7)], None, Ok(0)),
            (
                &[(Some("v1"), 7), (Some("v1"), 7), (Some("v2"), 8)],
                Some("v1"),
                Ok(0),
            ),
            (
                &[(Some("v1"), 7), (Some("v2"), 7), (Some("v3"), 8)],
                None,
                Err("3 entries"),
            ),
        ];
        for (tags, want_ref, want) in cases {
            let index: Vec<RawDescriptor> = tags.iter().map(|(t, n)| desc(*t, *n)).collect();
            match (choose_entry(&index, *want_ref), want) {
                (Ok(d), Ok(i)) => assert!(std::ptr::eq(d, &index[*i]), "{tags:?} {want_ref:?}"),
                (Err(e), Err(frag)) => assert!(e.to_string().contains(frag), "{tags:?}: {e}"),
                (got, want) => panic!("{tags:?} {want_ref:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    fn spec(path: &std::path::Path, platform: Option<&str>) -> SourceSpec {
        SourceSpec {
            name: path.display().to_string(),
            path: path.to_owned(),
            platform: platform.map(|p| Platform::parse(p).unwrap().platform),
            transport: Transport::Any,
            ref_name: None,
            allow_ocimux_mount: false,
            report_broken_layers: false,
            with_referrers: false,
            keep_documents: false,
            arm_variant: ArmVariant::Advise,
        }
    }

    #[test]
    fn blob_counts_are_bounded() {
        for (count, max, ok) in [
            (0, 3, true),
            (3, 3, true),
            (4, 3, false),
            (MAX_BLOBS + 1, MAX_BLOBS, false),
        ] {
            let got = bounded(count, max);
            assert_eq!(got.is_ok(), ok, "{count} of {max}");
            if let Err(e) = got {
                assert!(matches!(e, Problem::TooManyBlobs(m) if m == max));
                assert!(e.to_string().contains(&max.to_string()));
            }
        }
    }

    fn hexes(blobs: &[Arc<Blob>]) -> Vec<String> {
        blobs.iter().map(|b| b.digest.to_string()).collect()
    }

    #[test]
    fn reachable_set_is_manifest_config_layers_without_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        let b = LayoutBuilder::new(tmp.path().join("s"));
        let m = b.image(
            json!({"os": "linux", "architecture": "arm64"}),
            &[b"l1", b"l2", b"l1"],
        );
        let leftover = b.blob("application/octet-stream", b"left behind by umoci");
        b.index(&[(m.clone(), Some("latest"))]);
        let c = read(&spec(&b.root, None), None, &[]).unwrap();
        assert_eq!(c.images.len(), 1);
        assert_eq!(c.images[0].platform.to_string(), "linux/arm64");
        assert_eq!(c.images[0].digest.to_string(), m["digest"]);
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(b.blob_path(&m)).unwrap()).unwrap();
        let mut want = vec![
            m["digest"].as_str().unwrap().to_owned(),
            manifest["config"]["digest"].as_str().unwrap().to_owned(),
            manifest["layers"][0]["digest"].as_str().unwrap().to_owned(),
            manifest["layers"][1]["digest"].as_str().unwrap().to_owned(),
        ];
        want.sort();
        assert_eq!(hexes(&c.blobs), want, "a repeated layer appears once");
        assert!(!hexes(&c.blobs).contains(&leftover["digest"].as_str().unwrap().to_owned()));
        for blob in &c.blobs {
            let Origin::File { dir, id } = &blob.origin else {
                panic!("a directory source's blob is a whole file: {blob:?}")
            };
            let path = dir.path().join(blob.rel());
            assert!(path.is_absolute() && path.is_file());
            assert_eq!(blob.size, std::fs::metadata(&path).unwrap().len());
            assert_eq!(blob.size, id.size);
        }
    }

    #[test]
    fn index_entry_platform_fills_in_and_is_cross_checked() {
        // config platform, index entry platform, Ok(platform) or Err(fragment)
        let cases: &[(Value, Value, Result<&str, &str>)] = &[
            (
                json!({"os": "linux", "architecture": "arm"}),
                json!({"os": "linux", "architecture": "arm", "variant": "v7"}),
                Ok("linux/arm/v7"),
            ),
            (
                json!({"os": "linux", "architecture": "arm64"}),
                json!({"os": "linux", "architecture": "arm64", "variant": "v8"}),
                Ok("linux/arm64"),
            ),
            (
                json!({"os": "linux", "architecture": "arm64"}),
                json!({"os": "linux", "architecture": "amd64"}),
                Err("the config says platform linux/arm64 but its index entry says linux/amd64"),
            ),
            (
                json!({"os": "linux", "architecture": "arm", "variant": "v6"}),
                json!({"os": "linux", "architecture": "arm", "variant": "v7"}),
                Err("its index entry says linux/arm/v7"),
            ),
            (
                json!({"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.2340"}),
                json!({"os": "windows", "architecture": "amd64"}),
                Ok("windows/amd64 (10.0.20348.2340)"),
            ),
        ];
        for (config, entry_platform, want) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let b = LayoutBuilder::new(tmp.path().join("s"));
            let mut m = b.image(config.clone(), &[b"l"]);
            m["platform"] = entry_platform.clone();
            b.index(&[(m, None)]);
            match (read(&spec(&b.root, None), None, &[]), want) {
                (Ok(c), Ok(p)) => assert_eq!(c.images[0].platform.to_string(), *p, "{config}"),
                (Err(e), Err(frag)) => assert!(e.to_string().contains(frag), "{config}: {e}"),
                (got, want) => panic!("{config}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn platform_sources_table() {
        // config platform, override, Ok(platform) or Err(fragment)
        let cases: &[(Value, Option<&str>, Result<&str, &str>)] = &[
            (
                json!({"os": "linux", "architecture": "amd64"}),
                None,
                Ok("linux/amd64"),
            ),
            (
                json!({"os": "linux", "architecture": "aarch64"}),
                None,
                Ok("linux/arm64"),
            ),
            (
                json!({"os": "linux", "architecture": "arm", "variant": "v6"}),
                None,
                Ok("linux/arm/v6"),
            ),
            (
                json!({"os": "linux", "architecture": "arm"}),
                Some("linux/arm/v7"),
                Ok("linux/arm/v7"),
            ),
            (
                json!({"os": "linux"}),
                Some("linux/riscv64"),
                Ok("linux/riscv64"),
            ),
            (
                json!({"os": "linux"}),
                None,
                Err("config has no architecture"),
            ),
            (
                json!({"architecture": "amd64"}),
                None,
                Err("config has no os"),
            ),
            (
                json!({"os": "linux", "architecture": ""}),
                None,
                Err("config has no architecture"),
            ),
            (
                json!({"os": "linux", "architecture": "x 86"}),
                None,
                Err("characters other than"),
            ),
        ];
        for (config, override_, want) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let b = LayoutBuilder::new(tmp.path().join("s"));
            let m = b.image(config.clone(), &[b"l"]);
            b.index(&[(m, None)]);
            match (read(&spec(&b.root, *override_), None, &[]), want) {
                (Ok(c), Ok(p)) => assert_eq!(c.images[0].platform.to_string(), *p, "{config}"),
                (Err(e), Err(frag)) => assert!(e.to_string().contains(frag), "{config}: {e}"),
                (got, want) => panic!("{config}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn an_index_source_contributes_each_platform_and_skips_attestations() {
        let tmp = tempfile::tempdir().unwrap();
        let b = LayoutBuilder::new(tmp.path().join("s"));
        let amd = b.image(json!({"os": "linux", "architecture": "amd64"}), &[b"a"]);
        let arm = b.image(json!({"os": "linux", "architecture": "arm64"}), &[b"b"]);
        let mut att = b.image(
            json!({"architecture": "unknown", "os": "unknown"}),
            &[b"attestation"],
        );
        att["platform"] = json!({"architecture": "unknown", "os": "unknown"});
        att["annotations"] = json!({"vnd.docker.reference.type": "attestation-manifest"});
        let list = b.json_blob(
            DOCKER_LIST,
            &json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [amd, arm, att]}),
        );
        b.index(&[(list.clone(), Some("latest"))]);
        let c = read(&spec(&b.root, None), None, &[]).unwrap();
        let platforms: Vec<String> = c.images.iter().map(|i| i.platform.to_string()).collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
        assert_eq!(
            c.blobs.len(),
            6,
            "two images of three blobs; neither the list nor the attestation"
        );
        assert!(!hexes(&c.blobs).contains(&list["digest"].as_str().unwrap().to_owned()));
        // An override cannot name the platform of two images at once.
        let err = read(&spec(&b.root, Some("linux/amd64")), None, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("single-platform source"), "{err}");
    }

    #[test]
    fn an_index_json_of_platform_manifests_without_names_is_a_multi_arch_source() {
        let tmp = tempfile::tempdir().unwrap();
        let b = LayoutBuilder::new(tmp.path().join("s"));
        let mut amd = b.image(json!({"os": "linux", "architecture": "amd64"}), &[b"a"]);
        let mut arm = b.image(json!({"os": "linux", "architecture": "arm"}), &[b"b"]);
        amd["platform"] = json!({"os": "linux", "architecture": "amd64"});
        // The entry's variant fills in what umoci's config lacks.
        arm["platform"] = json!({"os": "linux", "architecture": "arm", "variant": "v7"});
        b.index(&[(amd.clone(), None), (arm.clone(), None)]);
        let c = read(&spec(&b.root, None), None, &[]).unwrap();
        let platforms: Vec<String> = c.images.iter().map(|i| i.platform.to_string()).collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm/v7"]);
        assert_eq!(c.blobs.len(), 6, "two images of three blobs each");
        // Not a multi-arch index: a ref asked for, a name on an entry, an
        // entry without a platform. Each is a choice of one entry, as before.
        let cases: [(Vec<(serde_json::Value, Option<&str>)>, Option<&str>, &str); 3] = [
            (
                vec![(amd.clone(), None), (arm.clone(), None)],
                Some("latest"),
                "no entry has ref name",
            ),
            (
                vec![(amd.clone(), Some("v1")), (arm.clone(), None)],
                None,
                "entries",
            ),
            (
                vec![
                    (amd.clone(), None),
                    (
                        b.image(json!({"os": "linux", "architecture": "arm64"}), &[b"c"]),
                        None,
                    ),
                ],
                None,
                "entries",
            ),
        ];
        for (entries, want, err) in cases {
            b.index(&entries);
            let got = read(&spec(&b.root, None), want, &[])
                .unwrap_err()
                .to_string();
            assert!(got.contains(err), "{want:?}: {got}");
        }
    }

    #[test]
    fn an_arm_variant_hint_fills_in_only_what_the_config_lacks() {
        let known = ArmVariant::Known {
            variant: "v7".into(),
            from: "a table".into(),
        };
        let unknown = ArmVariant::Unknown {
            advice: "say so".into(),
        };
        // config (os, architecture, variant), hint, platform read
        let cases = [
            (
                json!({"os": "linux", "architecture": "arm"}),
                &known,
                "linux/arm/v7",
            ),
            (
                json!({"os": "linux", "architecture": "arm"}),
                &unknown,
                "linux/arm",
            ),
            (
                json!({"os": "linux", "architecture": "arm"}),
                &ArmVariant::Advise,
                "linux/arm",
            ),
            (
                json!({"os": "linux", "architecture": "arm", "variant": "v6"}),
                &known,
                "linux/arm/v6",
            ),
            (
                json!({"os": "linux", "architecture": "armv5"}),
                &known,
                "linux/arm/v5",
            ),
            (
                json!({"os": "linux", "architecture": "arm64"}),
                &known,
                "linux/arm64",
            ),
            (
                json!({"os": "linux", "architecture": "amd64"}),
                &known,
                "linux/amd64",
            ),
        ];
        for (i, (config, hint, want)) in cases.into_iter().enumerate() {
            let tmp = tempfile::tempdir().unwrap();
            let b = LayoutBuilder::new(tmp.path().join(format!("s{i}")));
            let m = b.image(config.clone(), &[b"x"]);
            b.index(&[(m, None)]);
            let mut s = spec(&b.root, None);
            s.arm_variant = hint.clone();
            let c = read(&s, None, &[]).unwrap();
            assert_eq!(c.images[0].platform.to_string(), want, "{config} {hint:?}");
        }
    }

    #[test]
    fn a_docker_manifest_list_is_flattened_and_a_mix_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let b = LayoutBuilder::new(tmp.path().join("s"));
        let manifest = |arch: &str, config_type: &str| {
            let config = b.json_blob(config_type, &json!({"os": "linux", "architecture": arch}));
            let layer = b.blob(
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                arch.as_bytes(),
            );
            let mut m = b.json_blob(
                DOCKER_MANIFEST,
                &json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": config, "layers": [layer]}),
            );
            m["platform"] = json!({"os": "linux", "architecture": arch});
            m
        };
        let docker = document::DOCKER_CONFIG;
        let list = b.json_blob(
            DOCKER_LIST,
            &json!({"schemaVersion": 2, "mediaType": DOCKER_LIST,
                    "manifests": [manifest("amd64", docker), manifest("arm64", docker)]}),
        );
        b.index(&[(list, None)]);
        let c = read(&spec(&b.root, None), None, &[]).unwrap();
        let got: Vec<(String, &str)> = c
            .images
            .iter()
            .map(|i| (i.platform.to_string(), i.media_type.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("linux/amd64".into(), DOCKER_MANIFEST),
                ("linux/arm64".into(), DOCKER_MANIFEST)
            ]
        );
        // --platform keeps one of a flattened list's platforms.
        let only = [Platform::parse("linux/arm64").unwrap().platform];
        let c = read(&spec(&b.root, None), None, &only).unwrap();
        assert_eq!(c.images.len(), 1);
        assert_eq!(
            c.blobs.len(),
            3,
            "the arm64 manifest, config and layer only"
        );
        // A Docker manifest with an OCI config: what a registry refuses.
        let b2 = LayoutBuilder::new(tmp.path().join("mixed"));
        let config = b2.json_blob(
            "application/vnd.oci.image.config.v1+json",
            &json!({"os": "linux", "architecture": "amd64"}),
        );
        let m = b2.json_blob(
            DOCKER_MANIFEST,
            &json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": config, "layers": []}),
        );
        b2.index(&[(m, None)]);
        let err = read(&spec(&b2.root, None), None, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("registries accept only"), "{err}");
    }

    #[test]
    fn docker_media_types_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let b = LayoutBuilder::new(tmp.path().join("s"));
        let config = b.json_blob(
            "application/vnd.docker.container.image.v1+json",
            &json!({"os": "linux", "architecture": "amd64"}),
        );
        let layer = b.blob(
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            b"layer",
        );
        let m = b.json_blob(DOCKER_MANIFEST, &json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": config, "layers": [layer]}));
        b.index(&[(m, None)]);
        let c = read(&spec(&b.root, None), None, &[]).unwrap();
        assert_eq!(c.images[0].media_type, DOCKER_MANIFEST);
        assert_eq!(c.blobs.len(), 3);
    }
}
