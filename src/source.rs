//! Reading one source layout: which manifest it contributes, on which platform,
//! and every blob reachable from it.
//!
//! Everything that can be checked cheaply is checked here, before anything is
//! mounted: the layout marker, JSON size caps and syntax, every digest's grammar
//! (before it becomes a path), that every referenced blob exists with its
//! descriptor's size, and that manifests and configs hash to their digests.
//! Layers are stat'ed, never read, so this costs the same for 1 MiB or 10 GiB.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::confine::{self, Access, FileId, FileInfo, OpenError, Resolved, SourceDir};
use crate::digest::Digest;
use crate::document::{self, Document, Kind, RawDescriptor, RawPlatform};
use crate::error::{Error, Problem};
use crate::platform::Platform;
use crate::tar;

/// One `[PLATFORM=]PATH` argument.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// The argument as given, used in every message about this source.
    pub name: String,
    /// The path as given, made absolute (symlinks not resolved).
    pub path: PathBuf,
    /// The platform given on the command line, already normalised.
    pub platform: Option<Platform>,
}

impl SourceSpec {
    /// Parses `[PLATFORM=]PATH`.
    ///
    /// The part before the first `=` is taken as a platform when it looks like
    /// one (`os/arch[/variant]`, starting with a letter); otherwise the whole
    /// argument is a path, so `./dir=x` stays a path.
    pub fn parse(arg: &str) -> Result<Self, Error> {
        let platform_part = arg.split_once('=').filter(|(p, _)| looks_like_platform(p));
        let Some((platform, path)) = platform_part else {
            return Ok(SourceSpec {
                name: arg.to_owned(),
                path: absolute(arg),
                platform: None,
            });
        };
        let normalized = Platform::parse(platform).map_err(|why| Error::Argument {
            what: "platform",
            value: platform.to_owned(),
            why,
        })?;
        for w in &normalized.warnings {
            log::warn!("source {arg}: {w}");
        }
        if path.is_empty() {
            return Err(Error::Argument {
                what: "source",
                value: arg.to_owned(),
                why: "no PATH after PLATFORM=".into(),
            });
        }
        Ok(SourceSpec {
            name: path.to_owned(),
            path: absolute(path),
            platform: Some(normalized.platform),
        })
    }
}

/// The path made absolute against the current directory, symlinks kept (a
/// re-pointed `…-latest-oci` link must be followed anew on every rebuild,
/// and the daemon runs from `/`).
fn absolute(path: &str) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path))
}

fn looks_like_platform(p: &str) -> bool {
    let parts: Vec<&str> = p.split('/').collect();
    (2..=3).contains(&parts.len())
        && p.starts_with(|c: char| c.is_ascii_alphabetic())
        && parts.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// A blob in a source, with the file its bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Its digest (validated).
    pub digest: Digest,
    /// Its size, equal to the file's and to every descriptor's.
    pub size: u64,
    /// Where its bytes are.
    pub origin: Origin,
    /// Who may read it through the mount: what the source grants.
    pub access: Access,
}

/// Where a blob's bytes are on disk, and the identity they had when the
/// snapshot was built: bytes are served only while that identity holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A whole file of a layout directory, opened beneath the source's root.
    File {
        /// The source's root, held open.
        dir: Arc<SourceDir>,
        /// The file under it (`blobs/<alg>/<hex>`).
        rel: String,
        /// Its identity when found.
        id: FileId,
    },
    /// A byte range of a tar archive (a member's data).
    Range {
        /// The archive, as opened when it was indexed.
        archive: Arc<Archive>,
        /// Where the member's data starts.
        offset: u64,
    },
}

impl Origin {
    /// A short description for logs: the source file or archive member.
    pub fn describe(&self) -> String {
        match self {
            Origin::File { dir, rel, .. } => dir.path().join(rel).display().to_string(),
            Origin::Range { archive, offset } => {
                format!("{} at offset {offset}", archive.path.display())
            }
        }
    }

    /// The identity of the file the bytes are read from.
    pub fn file_id(&self) -> FileId {
        match self {
            Origin::File { id, .. } => *id,
            Origin::Range { archive, .. } => archive.id,
        }
    }
}

/// An indexed tar archive, kept open. An archive's path is not
/// content-addressed: a rebuild replaces it with other offsets, or rewrites it
/// in place. Reading the file that was indexed (not whatever now has its
/// path), and only while it keeps the identity it had, keeps the offsets of
/// every snapshot true.
#[derive(Debug)]
pub struct Archive {
    /// Where it was found.
    pub path: PathBuf,
    /// The file that was indexed, shared by every open of its members.
    pub file: Arc<File>,
    /// Its identity when indexed.
    pub id: FileId,
}

impl PartialEq for Archive {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.path == other.path
    }
}

impl Eq for Archive {}

/// One platform manifest a source contributes to the image index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The manifest's media type (from its descriptor).
    pub media_type: String,
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's size.
    pub size: u64,
    /// Its platform.
    pub platform: Platform,
}

/// What one source contributes.
#[derive(Debug, Clone)]
pub struct Contribution {
    /// The source's name as given.
    pub name: String,
    /// Its platform manifests, in its own order.
    pub images: Vec<Image>,
    /// Every blob reachable from those manifests (manifests, configs, layers),
    /// each once.
    pub blobs: Vec<Blob>,
}

/// Reads `spec`, choosing the `index.json` entry named `want_ref`.
pub fn read(spec: &SourceSpec, want_ref: Option<&str>) -> Result<Contribution, Error> {
    let reader = Reader::open(spec)?;
    let index = reader.read_index_json()?;
    let entry = choose_entry(&index, want_ref).map_err(|p| reader.err("index.json", p))?;
    let mut out = Contribution {
        name: spec.name.clone(),
        images: Vec::new(),
        blobs: Vec::new(),
    };
    match document::kind_of(&entry.media_type) {
        Some(Kind::Manifest) => {
            reader.add_image(&mut out, entry, "index.json", spec.platform.as_ref())?
        }
        Some(Kind::Index) => reader.add_index(&mut out, entry, spec.platform.as_ref())?,
        None => return Err(reader.err("index.json", Problem::MediaType(entry.media_type.clone()))),
    }
    out.blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    out.blobs.dedup_by(|a, b| a.digest == b.digest);
    Ok(out)
}

/// Picks the entry: by ref name when asked; else the only one; else `latest`.
fn choose_entry<'a>(
    index: &'a [RawDescriptor],
    want_ref: Option<&str>,
) -> Result<&'a RawDescriptor, Problem> {
    let found = || {
        let names: Vec<&str> = index
            .iter()
            .map(|d| d.ref_name().unwrap_or("(none)"))
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
            [one] => Ok(Some(*one)),
            many => Err(Problem::DuplicateRef {
                wanted: wanted.to_owned(),
                count: many.len(),
            }),
        }
    };
    match (want_ref, index) {
        (_, []) => Err(Problem::EmptyIndex),
        (Some(wanted), _) => pick(wanted)?.ok_or_else(|| Problem::RefNotFound {
            wanted: wanted.to_owned(),
            found: found(),
        }),
        (None, [only]) => Ok(only),
        (None, many) => pick("latest")?.ok_or_else(|| Problem::AmbiguousRef {
            count: many.len(),
            found: found(),
        }),
    }
}

/// Whether an index entry is an attestation or other non-image entry that
/// BuildKit adds (platform `unknown/unknown`, `vnd.docker.reference.type`).
fn is_attestation(d: &RawDescriptor) -> bool {
    d.annotations.contains_key(document::DOCKER_REFERENCE_TYPE)
        || d.platform.as_ref().is_some_and(|p| {
            p.os.as_deref() == Some("unknown") && p.architecture.as_deref() == Some("unknown")
        })
}

/// Indexes a tar archive source and finds its layout: at the root (members
/// `oci-layout` or `./oci-layout`) or under exactly one top directory.
fn open_archive(path: &Path, file: File, info: FileInfo) -> Result<Root, Problem> {
    let mut head = [0u8; 512];
    let n = read_head(&file, &mut head).map_err(Problem::Io)?;
    let head = head.get(..n).unwrap_or_default();
    if tar::compression(head).is_none() && !tar::looks_like_tar(head) {
        return Err(Problem::NotLayout(
            "neither a directory nor a tar archive".into(),
        ));
    }
    let index = tar::index(&file).map_err(Problem::Archive)?;
    let prefix = if index.members.contains_key("oci-layout") {
        String::new()
    } else {
        let tops: std::collections::BTreeSet<&str> = index
            .members
            .keys()
            .map(|k| k.split('/').next().unwrap_or_default())
            .collect();
        match tops.into_iter().collect::<Vec<_>>().as_slice() {
            [top] if index.members.contains_key(&format!("{top}/oci-layout")) => format!("{top}/"),
            _ => {
                return Err(Problem::NotLayout(
                    "archive has no oci-layout at its root or under one top directory".into(),
                ));
            }
        }
    };
    // Indexed from this very file: if it changed meanwhile, the offsets are
    // of no version in particular.
    if !info.id.holds(&FileId::of(&file).map_err(Problem::Io)?) {
        return Err(Problem::Io(io::Error::other(
            "the archive changed while it was being indexed",
        )));
    }
    let archive = Arc::new(Archive {
        path: path.to_owned(),
        file: Arc::new(file),
        id: info.id,
    });
    Ok(Root::Tar {
        archive,
        access: info.access,
        index,
        prefix,
    })
}

fn read_head(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(buf.get_mut(n..).unwrap_or_default(), n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Where a source's files are: a layout directory, or a tar archive of one.
enum Root {
    Dir(Arc<SourceDir>),
    Tar {
        archive: Arc<Archive>,
        /// Who may read the archive, and so its members.
        access: Access,
        index: tar::TarIndex,
        /// `""` for a layout at the archive's root, `"top/"` for one under a top directory.
        prefix: String,
    },
}

/// A file of the layout as found: its size, where its bytes are, who may
/// read it, and (for a directory source) the file, already open.
struct Found {
    size: u64,
    origin: Origin,
    access: Access,
    file: Option<File>,
}

impl Found {
    /// Reads the whole file into memory; it is at most `cap` bytes (checked by the caller).
    fn read_all(&self, cap: u64) -> io::Result<Vec<u8>> {
        match (&self.file, &self.origin) {
            (Some(file), _) => {
                let mut bytes = Vec::new();
                file.take(cap + 1).read_to_end(&mut bytes).map(|_| bytes)
            }
            (None, Origin::Range { archive, offset }) => tar::read_member(
                &archive.file,
                &tar::Member {
                    offset: *offset,
                    size: self.size,
                    kind: tar::MemberKind::File,
                },
            ),
            (None, Origin::File { .. }) => Err(io::Error::other("file not open")),
        }
    }
}

/// A confinement refusal, as a problem of a source's file.
fn problem(e: OpenError) -> Problem {
    match e {
        OpenError::Missing => Problem::Missing,
        OpenError::Io(e) => Problem::Io(e),
        e => Problem::Open(e),
    }
}

struct Reader<'a> {
    name: &'a str,
    root: Root,
}

impl<'a> Reader<'a> {
    fn open(spec: &'a SourceSpec) -> Result<Self, Error> {
        let name = spec.name.as_str();
        let root = match confine::resolve(&spec.path) {
            Ok(Resolved::Dir(dir)) => Root::Dir(Arc::new(dir)),
            Ok(Resolved::File(file, info)) => {
                open_archive(&spec.path, file, info).map_err(|p| Error::source(name, ".", p))?
            }
            Err(e) => return Err(Error::source(name, ".", problem(e))),
        };
        let reader = Reader { name, root };
        let marker = reader.read_small("oci-layout", document::MAX_JSON, "no oci-layout file")?;
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

    fn read_index_json(&self) -> Result<Vec<RawDescriptor>, Error> {
        let bytes = self.read_small("index.json", document::MAX_JSON, "no index.json")?;
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

    /// Finds a regular file of the layout; `Ok(None)` when it does not exist.
    /// A directory source's file is opened confined to the source.
    fn find(&self, rel: &str) -> Result<Option<Found>, Problem> {
        match &self.root {
            Root::Dir(dir) => {
                let (file, info) = match dir.open_with_access(rel) {
                    Ok(opened) => opened,
                    Err(OpenError::Missing) => return Ok(None),
                    Err(e) => return Err(problem(e)),
                };
                Ok(Some(Found {
                    size: info.id.size,
                    origin: Origin::File {
                        dir: dir.clone(),
                        rel: rel.to_owned(),
                        id: info.id,
                    },
                    access: info.access,
                    file: Some(file),
                }))
            }
            Root::Tar {
                archive,
                access,
                index,
                prefix,
            } => {
                let Some(m) = index.members.get(&format!("{prefix}{rel}")) else {
                    return Ok(None);
                };
                match m.kind {
                    tar::MemberKind::File => Ok(Some(Found {
                        size: m.size,
                        origin: Origin::Range {
                            archive: archive.clone(),
                            offset: m.offset,
                        },
                        access: *access,
                        file: None,
                    })),
                    tar::MemberKind::Link => Err(Problem::Link),
                    _ => Err(Problem::NotRegular),
                }
            }
        }
    }

    /// Reads a small file of the layout, refusing anything over `cap` bytes
    /// without reading it; `missing` says what a missing file means.
    fn read_small(&self, rel: &str, cap: u64, missing: &str) -> Result<Vec<u8>, Error> {
        let found = self
            .find(rel)
            .map_err(|p| self.err(rel, p))?
            .ok_or_else(|| self.err(rel, Problem::NotLayout(missing.into())))?;
        self.read_found(rel, &found, cap)
    }

    fn read_found(&self, rel: &str, found: &Found, cap: u64) -> Result<Vec<u8>, Error> {
        if found.size > cap {
            return Err(self.err(
                rel,
                Problem::TooLarge {
                    size: found.size,
                    cap,
                },
            ));
        }
        let bytes = found
            .read_all(cap)
            .map_err(|e| self.err(rel, Problem::Io(e)))?;
        if bytes.len() as u64 > cap {
            return Err(self.err(
                rel,
                Problem::TooLarge {
                    size: bytes.len() as u64,
                    cap,
                },
            ));
        }
        Ok(bytes)
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
        };
        Ok((blob, found))
    }

    /// Reads a JSON blob (manifest, index or config) and verifies its digest.
    fn json_blob(&self, desc: &RawDescriptor, holder: &str) -> Result<(Blob, Vec<u8>), Error> {
        let (blob, found) = self.blob(desc, holder)?;
        let rel = blob.digest.blob_path();
        let bytes = self.read_found(&rel, &found, document::MAX_JSON)?;
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
        if children.is_empty() {
            return Err(self.err(&rel, Problem::NoPlatformManifests));
        }
        if platform.is_some() && children.len() > 1 {
            return Err(self.err(&rel, Problem::OverrideOnIndex));
        }
        for child in children {
            match document::kind_of(&child.media_type) {
                Some(Kind::Manifest) => self.add_image(out, child, &rel, platform)?,
                Some(Kind::Index) => return Err(self.err(&rel, Problem::NestedIndex)),
                None => return Err(self.err(&rel, Problem::MediaType(child.media_type.clone()))),
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
            return Err(self.err(
                &rel,
                Problem::Ambiguous("image manifest without config or layers".into()),
            ));
        };
        let (config_blob, config_bytes) = self.json_blob(config, &rel)?;
        let config_rel = config_blob.digest.blob_path();
        let platform = match platform {
            Some(p) => p.clone(),
            None => {
                let raw: RawPlatform = document::parse(&config_bytes)
                    .map_err(|e| self.err(&config_rel, Problem::Json(e)))?;
                self.platform_from(&raw, desc.platform.as_ref())
                    .map_err(|p| self.err(&config_rel, p))?
            }
        };
        out.images.push(Image {
            media_type: desc.media_type.clone(),
            digest: manifest_blob.digest.clone(),
            size: manifest_blob.size,
            platform,
        });
        out.blobs.push(manifest_blob);
        out.blobs.push(config_blob);
        for layer in layers {
            out.blobs.push(self.blob(layer, &rel)?.0);
        }
        Ok(())
    }

    /// The platform from a config, falling back to the index descriptor's.
    fn platform_from(
        &self,
        config: &RawPlatform,
        from_index: Option<&RawPlatform>,
    ) -> Result<Platform, Problem> {
        let pick = |f: fn(&RawPlatform) -> Option<&String>| {
            f(config)
                .or_else(|| from_index.and_then(f))
                .filter(|s| !s.is_empty())
        };
        let arch = pick(|p| p.architecture.as_ref()).ok_or(Problem::NoPlatform("architecture"))?;
        let os = pick(|p| p.os.as_ref()).ok_or(Problem::NoPlatform("os"))?;
        let variant = pick(|p| p.variant.as_ref());
        let normalized = Platform::normalize(os, arch, variant.map(String::as_str))
            .map_err(Problem::BadPlatform)?;
        for w in &normalized.warnings {
            log::warn!("source {}: {w}", self.name);
        }
        let mut platform = normalized.platform;
        platform.os_version = pick(|p| p.os_version.as_ref()).cloned();
        platform.os_features = config
            .os_features
            .clone()
            .or_else(|| from_index.and_then(|p| p.os_features.clone()))
            .unwrap_or_default();
        crate::platform::check_os_fields(platform.os_version.as_deref(), &platform.os_features)
            .map_err(Problem::BadPlatform)?;
        Ok(platform)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{DOCKER_LIST, DOCKER_MANIFEST};
    use crate::testutil::LayoutBuilder;
    use serde_json::{Value, json};

    fn desc(tag: Option<&str>) -> RawDescriptor {
        let mut annotations = std::collections::BTreeMap::new();
        if let Some(t) = tag {
            annotations.insert(document::REF_NAME.to_owned(), t.to_owned());
        }
        RawDescriptor {
            media_type: document::OCI_MANIFEST.into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            size: 1,
            platform: None,
            annotations,
        }
    }

    #[test]
    fn choose_entry_table() {
        // entries' tags, --ref, Ok(index chosen) or Err(fragment)
        let cases: &[(&[Option<&str>], Option<&str>, Result<usize, &str>)] = &[
            (&[None], None, Ok(0)),
            (&[Some("v1")], None, Ok(0)),
            (&[Some("v1"), Some("latest")], None, Ok(1)),
            (
                &[Some("v1"), Some("v2")],
                None,
                Err("choose one with --ref (ref names found: v1, v2)"),
            ),
            (&[None, None], None, Err("(none), (none)")),
            (
                &[Some("latest"), Some("latest")],
                None,
                Err("2 entries have ref name \"latest\""),
            ),
            (&[Some("v1"), Some("v2")], Some("v2"), Ok(1)),
            (
                &[Some("v1")],
                Some("v3"),
                Err("no entry has ref name \"v3\" (ref names found: v1)"),
            ),
            (&[None], Some("latest"), Err("no entry has ref name")),
            (&[], None, Err("lists no manifests")),
        ];
        for (tags, want_ref, want) in cases {
            let index: Vec<RawDescriptor> = tags.iter().map(|t| desc(*t)).collect();
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
        }
    }

    fn hexes(blobs: &[Blob]) -> Vec<String> {
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
        let c = read(&spec(&b.root, None), None).unwrap();
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
            let Origin::File { dir, rel, id } = &blob.origin else {
                panic!("a directory source's blob is a whole file: {blob:?}")
            };
            let path = dir.path().join(rel);
            assert!(path.is_absolute() && path.is_file());
            assert_eq!(blob.size, std::fs::metadata(&path).unwrap().len());
            assert_eq!(blob.size, id.size);
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
            match (read(&spec(&b.root, *override_), None), want) {
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
        let c = read(&spec(&b.root, None), None).unwrap();
        let platforms: Vec<String> = c.images.iter().map(|i| i.platform.to_string()).collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
        assert_eq!(
            c.blobs.len(),
            6,
            "two images of three blobs; neither the list nor the attestation"
        );
        assert!(!hexes(&c.blobs).contains(&list["digest"].as_str().unwrap().to_owned()));
        // An override cannot name the platform of two images at once.
        let err = read(&spec(&b.root, Some("linux/amd64")), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("single-platform source"), "{err}");
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
        let c = read(&spec(&b.root, None), None).unwrap();
        assert_eq!(c.images[0].media_type, DOCKER_MANIFEST);
        assert_eq!(c.blobs.len(), 3);
    }

    #[test]
    fn spec_parse_table() {
        // arg, Ok((name, path, platform)) or Err
        let cases: &[(&str, Result<(&str, Option<&str>), &str>)] = &[
            ("deploy/a-oci", Ok(("deploy/a-oci", None))),
            (
                "linux/arm64=deploy/a-oci",
                Ok(("deploy/a-oci", Some("linux/arm64"))),
            ),
            ("linux/arm/v7=/abs/x", Ok(("/abs/x", Some("linux/arm/v7")))),
            ("linux/aarch64=x", Ok(("x", Some("linux/arm64")))),
            ("./dir=x", Ok(("./dir=x", None))),
            ("dir=x", Ok(("dir=x", None))),
            ("linux/arm64=", Err("no PATH")),
        ];
        for (arg, want) in cases {
            match (SourceSpec::parse(arg), want) {
                (Ok(s), Ok((path, platform))) => {
                    assert_eq!(s.path, std::path::absolute(path).unwrap(), "{arg}");
                    assert_eq!(
                        s.platform.map(|p| p.to_string()).as_deref(),
                        *platform,
                        "{arg}"
                    );
                }
                (Err(e), Err(frag)) => assert!(e.to_string().contains(frag), "{arg}: {e}"),
                (got, want) => panic!("{arg}: got {got:?}, want {want:?}"),
            }
        }
    }
}
