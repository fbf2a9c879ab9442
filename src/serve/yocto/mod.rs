//! The Yocto mode: every image of one or more builds, found as
//! meta-virtualization lays them out, served as one multi-arch repository
//! each (`NAMESPACE/IMAGE`), its machines as platforms, its link's tag live
//! and its dated builds as tags of their own; looked at again every
//! [`RESCAN`].
//!
//! - `build`: where a build's machine directories are (`--yocto PATH`);
//! - `names`: what a deploy directory's names are;
//! - `choose`: which outputs each tag is composed from;
//! - `machine`: a machine's platform where its images' configs cannot say it;
//! - `version`: the version tags (the `PV` each build recorded);
//! - this file: scanning, and serving what was chosen.

mod build;
mod choose;
mod machine;
mod names;
mod version;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::printable;
use crate::oci::platform::Platform;
use crate::snapshot::plan::{IndexArgs, Plan};
use crate::source::{SourceSpec, Transport};

use super::api::Registry;
use super::{RepoPlan, ServeConfig, route};

pub use build::{BuildError, BuildPath};
pub use machine::MACHINE_VARIANTS;

use choose::{Found, Selection};
use names::{Form, NotOutput};

/// How often build directories are looked at again.
pub const RESCAN: Duration = Duration::from_secs(5);

/// Most entries read per machine directory.
const MAX_ENTRIES: usize = 65_536;
/// Default and most dated builds served as tags per image.
pub const HISTORY: (usize, usize) = (5, 32);
/// Most distinct build paths (`--yocto`) looked at.
pub const MAX_BUILDS: usize = 64;
/// Most distinct messages remembered as said (each is logged once).
const MAX_SAID: usize = 4096;

/// Why the Yocto mode's settings are refused.
#[derive(Debug, thiserror::Error)]
pub enum YoctoError {
    /// `--yocto PATH` is no build.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A `[yocto.platforms]` value is not a platform.
    #[error("[yocto.platforms] {machine} = {value:?}: {why}")]
    Platform {
        /// The machine.
        machine: String,
        /// The value.
        value: String,
        /// Why.
        why: crate::oci::platform::PlatformError,
    },
    /// More build paths than [`MAX_BUILDS`].
    #[error("{0} --yocto paths: at most {MAX_BUILDS} distinct ones")]
    TooManyBuilds(usize),
    /// `--history` out of range.
    #[error("--history {0}: at most {max} dated builds per image", max = HISTORY.1)]
    History(usize),
    /// The index options (tag, annotations) are wrong.
    #[error(transparent)]
    Index(Box<crate::Error>),
}

/// The builds to look at and what to make of their images.
#[derive(Debug, Clone)]
pub struct Finder {
    paths: Vec<BuildPath>,
    namespace: String,
    index: IndexArgs,
    history: usize,
    platforms: BTreeMap<String, Platform>,
}

/// What the Yocto mode is given.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `--yocto` paths.
    pub paths: Vec<PathBuf>,
    /// The namespace repositories are named under (`yocto` → `yocto/IMAGE`).
    pub namespace: String,
    /// Index options for every repository (its `tag` is the live tag's
    /// name where no machine has a tag link).
    pub index: IndexArgs,
    /// Dated builds served as tags per image (`None`: [`HISTORY`]'s default).
    pub history: Option<usize>,
    /// `[yocto.platforms]`: machine → platform.
    pub platforms: BTreeMap<String, String>,
}

impl Finder {
    /// Checks the settings: every path a build, every platform one.
    pub fn new(s: Settings) -> Result<Finder, YoctoError> {
        // One directory given twice (or through a link) is one build.
        let mut seen = BTreeSet::new();
        let mut paths = Vec::new();
        for p in &s.paths {
            let build = BuildPath::classify(p)?;
            let id = std::fs::metadata(build.path()).map(|m| (m.dev(), m.ino()));
            if id.is_ok_and(|id| seen.insert(id)) {
                paths.push(build);
            }
        }
        if paths.len() > MAX_BUILDS {
            return Err(YoctoError::TooManyBuilds(paths.len()));
        }
        let history = s.history.unwrap_or(HISTORY.0);
        if history > HISTORY.1 {
            return Err(YoctoError::History(history));
        }
        let platforms = s
            .platforms
            .into_iter()
            .map(|(machine, value)| match Platform::parse(&value) {
                Ok(n) => Ok((machine, n.platform)),
                Err(why) => Err(YoctoError::Platform {
                    machine,
                    value,
                    why,
                }),
            })
            .collect::<Result<_, _>>()?;
        Plan::from_args(&[], &s.index).map_err(|e| YoctoError::Index(Box::new(e)))?;
        Ok(Finder {
            paths,
            namespace: s.namespace,
            index: s.index,
            history,
            platforms,
        })
    }

    /// The repository name of an image, if it makes a valid one.
    pub fn repo_name(&self, image: &str) -> Option<String> {
        let name = format!("{}/{}", self.namespace, image.to_ascii_lowercase());
        route::is_name(&name).then_some(name)
    }

    /// Serves every image found now; an image (or tag) that does not
    /// compose (yet), or holds what its publishers may not read, is skipped
    /// by name and looked at again by [`Finder::follow`].
    pub(crate) fn start(&self, registry: &Arc<Registry>, cfg: &ServeConfig) -> Served {
        let mut served = Served::default();
        self.look(registry, cfg, &mut served);
        if served.images.is_empty() {
            let paths: Vec<String> = self
                .paths
                .iter()
                .map(|p| format!("{:?}", p.path()))
                .collect();
            log::warn!(
                "--yocto {}: no image served yet (none found, or none complete); looking again every {} s",
                paths.join(", "),
                RESCAN.as_secs()
            );
        }
        served
    }

    /// Looks again every [`RESCAN`].
    pub(crate) fn follow(&self, registry: &Arc<Registry>, cfg: &ServeConfig, mut served: Served) {
        loop {
            std::thread::sleep(RESCAN);
            self.look(registry, cfg, &mut served);
        }
    }

    fn look(&self, registry: &Arc<Registry>, cfg: &ServeConfig, served: &mut Served) {
        let began = std::time::Instant::now();
        let found = self.scan(served);
        let scanned = began.elapsed();
        let images = found.len();
        for (name, sel) in found {
            self.serve_image(registry, cfg, served, &name, sel);
        }
        log::debug!(
            "yocto: {images} images looked at: scan {} us, serve {} us",
            scanned.as_micros(),
            (began.elapsed() - scanned).as_micros()
        );
    }

    /// Repository name → its tags' selections, from what is on disk now.
    fn scan(&self, served: &mut Served) -> BTreeMap<String, Vec<Selection>> {
        let mut by_image: BTreeMap<String, (u32, Vec<Found>)> = BTreeMap::new();
        for dir in build::machine_dirs(&self.paths) {
            for found in self.outputs(&dir, served) {
                let (owner, list) = by_image
                    .entry(found.output.image.clone())
                    .or_insert_with(|| (dir.owner, Vec::new()));
                // Two users' builds of one image name are not one image:
                // the first build path's owner keeps the name.
                if *owner != dir.owner {
                    served.say_once(format!(
                        "{}: image {} of uid {}'s build, already uid {owner}'s; skipped",
                        printable(&found.path.display().to_string()),
                        printable(&found.output.image),
                        dir.owner
                    ));
                    continue;
                }
                list.push(found);
            }
        }
        let mut out = BTreeMap::new();
        let mut named: BTreeMap<String, String> = BTreeMap::new();
        for (image, (_, found)) in by_image {
            let Some(name) = self.repo_name(&image) else {
                served.say_once(format!(
                    "image {}: not a valid repository name under {:?}; skipped",
                    printable(&image),
                    self.namespace
                ));
                continue;
            };
            // `App` and `app` would be one repository: the first by name is.
            if let Some(first) = named.get(&name) {
                served.say_once(format!(
                    "image {}: its repository {name:?} is image {}'s; skipped",
                    printable(&image),
                    printable(first)
                ));
                continue;
            }
            named.insert(name.clone(), image.clone());
            let mut selections = choose::choose(&found, &self.index.tag, self.history);
            let recorded: BTreeMap<PathBuf, String> = selections
                .iter()
                .filter(|s| !s.live)
                .flat_map(|s| &s.sources)
                .filter_map(|f| Some((f.path.clone(), served.version_of(f)?)))
                .collect();
            let (versions, said) =
                version::version_tags(&selections, |f| recorded.get(&f.path).cloned());
            for s in said {
                served.say_once(format!("image {}: {s}", printable(&image)));
            }
            selections.extend(versions);
            out.insert(name, selections);
        }
        out
    }

    /// The complete outputs of one machine directory; those being written
    /// are named once and looked at again.
    fn outputs(&self, dir: &build::MachineDir, served: &mut Served) -> Vec<Found> {
        let Ok(entries) = std::fs::read_dir(&dir.path) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.take(MAX_ENTRIES).filter_map(Result::ok) {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let path = entry.path();
            let target = match entry.file_type() {
                Ok(t) if t.is_symlink() => std::fs::read_link(&path)
                    .ok()
                    .map(|t| t.to_string_lossy().into_owned()),
                _ => None,
            };
            let output = match names::classify(&name, &dir.machine, target.as_deref()) {
                Ok(o) => o,
                Err(NotOutput::Multiarch) => {
                    served.say_once(format!(
                        "{}: oci-multiarch.bbclass's merged copy; its machines' own images \
                         are served instead",
                        printable(&path.display().to_string())
                    ));
                    continue;
                }
                Err(NotOutput::Other) => continue,
            };
            // Followed: a link's target is what is served.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if let Some(why) = served.incomplete(&path, output.form, &meta) {
                served.say_once(format!(
                    "{}: {why}; skipped until it is complete",
                    printable(&path.display().to_string())
                ));
                continue;
            }
            out.push(Found {
                machine: dir.machine.clone(),
                output,
                path,
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        out
    }

    /// Serves one image's tags: a live tag is added, or given its new
    /// sources; a dated tag is composed when new or changed, and taken away
    /// when its build is gone or no longer among the newest.
    fn serve_image(
        &self,
        registry: &Arc<Registry>,
        cfg: &ServeConfig,
        served: &mut Served,
        name: &str,
        selections: Vec<Selection>,
    ) {
        if registry.get(name).is_none() && registry.len() >= super::MAX_REPOSITORIES {
            served.say_once(format!(
                "image {name:?}: {}; skipped",
                super::ServeError::TooMany(registry.len() + 1)
            ));
            return;
        }
        let mut state = served.images.remove(name).unwrap_or_default();
        let mut dated_now = BTreeSet::new();
        for sel in selections {
            if sel.live {
                self.serve_live(registry, cfg, served, name, &mut state, &sel);
                continue;
            }
            let print = fingerprint(&sel);
            dated_now.insert(sel.tag.clone());
            if state.dated.get(&sel.tag) == Some(&print) {
                continue;
            }
            match self.add(registry, cfg.verify, false, served, name, &sel) {
                Some(_) => {
                    state.dated.insert(sel.tag.clone(), print);
                }
                None => {
                    // Not composed (yet): not served from an older look either.
                    if state.dated.remove(&sel.tag).is_some() {
                        registry.get(name).map(|r| r.remove_tag(&sel.tag));
                    }
                }
            }
        }
        drop_dated(registry, name, &mut state, &dated_now);
        if !state.live.is_empty() || !state.dated.is_empty() {
            served.images.insert(name.to_owned(), state);
        }
    }

    /// Serves a live tag: added when new, given its new sources when they
    /// changed since the last look.
    fn serve_live(
        &self,
        registry: &Arc<Registry>,
        cfg: &ServeConfig,
        served: &mut Served,
        name: &str,
        state: &mut ImageState,
        sel: &Selection,
    ) {
        let print = fingerprint(sel);
        match state.live.get_mut(&sel.tag) {
            Some((was, replan)) if *was != print => {
                if let (Some(replan), Ok(plan)) = (replan.as_ref(), self.plan(sel)) {
                    log::info!(
                        "repository {name:?} tag {:?}: now from {}",
                        sel.tag,
                        describe(sel)
                    );
                    replan.send(plan);
                }
                *was = print;
            }
            Some(_) => {}
            None => {
                if let Some(replan) = self.add(registry, cfg.verify, cfg.live, served, name, sel) {
                    state.live.insert(sel.tag.clone(), (print, replan));
                }
            }
        }
    }

    /// Composes and serves one tag; `None` (said once, by name) when it
    /// cannot be served now.
    fn add(
        &self,
        registry: &Arc<Registry>,
        verify: bool,
        live: bool,
        served: &mut Served,
        name: &str,
        sel: &Selection,
    ) -> Option<Option<crate::snapshot::watch::Replan>> {
        let plan = match self.plan(sel) {
            Ok(plan) => plan,
            Err(e) => {
                served.say_once(format!("image {name:?} tag {:?}: {e}; skipped", sel.tag));
                return None;
            }
        };
        let r = RepoPlan {
            name: name.to_owned(),
            plan,
        };
        match super::set_tag(registry, r, verify, live) {
            Ok(replan) => {
                log::info!(
                    "repository {name:?} tag {:?}: from {}",
                    sel.tag,
                    describe(sel)
                );
                Some(replan)
            }
            Err(e) => {
                served.say_once(format!(
                    "image {name:?} tag {:?}: {e}; skipped for now",
                    sel.tag
                ));
                None
            }
        }
    }

    /// The plan of one tag: each machine's output as what it is (an
    /// archive is an archive whatever its name), with its platform hint.
    /// A tag a link's name gave that is no OCI tag is refused here, by name.
    fn plan(&self, sel: &Selection) -> Result<Plan, crate::Error> {
        let args = IndexArgs {
            tag: sel.tag.clone(),
            ..self.index.clone()
        };
        let mut plan = Plan::from_args(&[], &args)?;
        plan.specs = sel
            .sources
            .iter()
            .map(|f| {
                let hint = machine::hint(&f.machine, &self.platforms, testdata(f).as_deref());
                SourceSpec {
                    name: f.path.display().to_string(),
                    path: f.path.clone(),
                    platform: hint.platform,
                    transport: match f.output.form {
                        Form::Dir => Transport::Layout,
                        Form::Tar | Form::DirTar => Transport::Archive,
                    },
                    ref_name: None,
                    allow_ocimux_mount: false,
                    report_broken_layers: false,
                    with_referrers: false,
                    keep_documents: false,
                    arm_variant: hint.arm_variant,
                }
            })
            .collect();
        Ok(plan)
    }
}

/// What a tag was composed from: each source's path and identity (dev, ino,
/// mtime, ctime) as found.
type Fingerprint = Vec<(PathBuf, u64, u64, i64, i64)>;

/// A tag's [`Fingerprint`] now: a dated tag is composed again when it
/// changes (its build rewritten or replaced).
fn fingerprint(sel: &Selection) -> Fingerprint {
    sel.sources
        .iter()
        .map(|f| {
            let m = std::fs::metadata(&f.path).ok();
            let id = m.map_or((0, 0, 0, 0), |m| (m.dev(), m.ino(), m.mtime(), m.ctime()));
            (f.path.clone(), id.0, id.1, id.2, id.3)
        })
        .collect()
}

/// `machine: file, …` for the log.
fn describe(sel: &Selection) -> String {
    let parts: Vec<String> = sel
        .sources
        .iter()
        .map(|f| {
            let file = f.path.file_name().unwrap_or_default().to_string_lossy();
            format!("{}: {}", printable(&f.machine), printable(&file))
        })
        .collect();
    parts.join(", ")
}

/// The `testdata.json` the build wrote beside an output, if any: the dated
/// build's (a link's target's), else the image's link name's.
fn testdata(f: &Found) -> Option<PathBuf> {
    let dir = f.path.parent()?;
    let stamp = match &f.output.build {
        names::Build::Dated(s) => Some(s.clone()),
        _ => std::fs::read_link(&f.path).ok().and_then(|t| {
            let t = t.file_name()?.to_string_lossy().into_owned();
            match names::classify(&t, &f.machine, None).ok()?.build {
                names::Build::Dated(s) => Some(s),
                _ => None,
            }
        }),
    };
    let stem = format!("{}-{}", f.output.image, f.machine);
    let mut names: Vec<String> = Vec::new();
    if let Some(s) = stamp {
        names.push(format!("{stem}-{s}.testdata.json"));
        names.push(format!("{stem}-{s}.rootfs.testdata.json"));
    }
    names.push(format!("{stem}.testdata.json"));
    names.push(format!("{stem}.rootfs.testdata.json"));
    names.into_iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// What the finder serves, and what it has said.
#[derive(Debug, Default)]
pub(crate) struct Served {
    /// Repository → its tags' state.
    images: BTreeMap<String, ImageState>,
    /// Messages logged (each once while remembered).
    said: BTreeSet<String>,
    /// Archives found complete: (dev, ino, size, mtime) → whether.
    tails: BTreeMap<(u64, u64, u64, i64), bool>,
    /// Versions recorded: testdata.json (dev, ino, size, mtime) → its PV.
    versions: BTreeMap<(u64, u64, u64, i64), Option<String>>,
}

/// Most remembered of [`Served`]'s tables (then forgotten, read again).
const MAX_REMEMBERED: usize = 4096;

impl Served {
    /// The version (`PV`) the build of `f` recorded in its `testdata.json`,
    /// read once per version of that file.
    fn version_of(&mut self, f: &Found) -> Option<String> {
        let path = testdata(f)?;
        let m = std::fs::metadata(&path).ok()?;
        let key = (m.dev(), m.ino(), m.size(), m.mtime());
        if let Some(v) = self.versions.get(&key) {
            return v.clone();
        }
        if self.versions.len() >= MAX_REMEMBERED {
            self.versions.clear();
        }
        let v = machine::recorded(&path, "PV");
        self.versions.insert(key, v.clone());
        v
    }
}

/// Takes away the dated tags of `name` not among `dated_now` (their build
/// is gone, or no longer among the newest).
fn drop_dated(
    registry: &Registry,
    name: &str,
    state: &mut ImageState,
    dated_now: &BTreeSet<String>,
) {
    let gone: Vec<String> = state
        .dated
        .keys()
        .filter(|t| !dated_now.contains(*t))
        .cloned()
        .collect();
    for tag in gone {
        state.dated.remove(&tag);
        if registry.get(name).is_some_and(|r| r.remove_tag(&tag)) {
            log::info!(
                "repository {name:?} tag {tag:?}: its build is gone or no longer among the newest; not served"
            );
        }
    }
}

#[derive(Debug, Default)]
struct ImageState {
    /// Live tag → what it was last given, and how to give it more.
    live: BTreeMap<String, (Fingerprint, Option<crate::snapshot::watch::Replan>)>,
    /// Dated tag → what it was composed from.
    dated: BTreeMap<String, Fingerprint>,
}

impl Served {
    /// Logs `msg` the first time (a skipped image is named once, not every look).
    fn say_once(&mut self, msg: String) {
        if self.said.contains(&msg) {
            return;
        }
        log::warn!("{msg}");
        if self.said.len() >= MAX_SAID {
            self.said.clear();
        }
        self.said.insert(msg);
    }

    /// Why an output is not complete yet: a directory without its
    /// `index.json` (as `oci-multiarch.bbclass` takes them), an archive
    /// without tar's end (two zero blocks: one still being written).
    fn incomplete(
        &mut self,
        path: &Path,
        form: Form,
        meta: &std::fs::Metadata,
    ) -> Option<&'static str> {
        match form {
            Form::Dir if !meta.is_dir() => Some("not a directory"),
            Form::Dir if !path.join("index.json").is_file() => Some("no index.json yet"),
            Form::Dir => None,
            _ if !meta.is_file() => Some("not a regular file"),
            _ => {
                let key = (meta.dev(), meta.ino(), meta.size(), meta.mtime());
                if self.tails.len() >= MAX_ENTRIES {
                    self.tails.clear();
                }
                let ends = *self
                    .tails
                    .entry(key)
                    .or_insert_with(|| tar_ends(path, meta.size()));
                (!ends).then_some("no end-of-archive marker yet (still being written?)")
            }
        }
    }
}

/// Whether the file at `path` ends as tar ends (its last 1024 bytes zero).
fn tar_ends(path: &Path, size: u64) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    if size < 1024 {
        return false;
    }
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    else {
        return false;
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut tail = [0u8; 1024];
    crate::files::readat::fill_at(&file, size - 1024, &mut tail).is_ok_and(|n| n == 1024)
        && tail.iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let t = tempfile::tempdir().unwrap();
        let images = t.path().join("tmp/deploy/images");
        std::fs::create_dir_all(&images).unwrap();
        let ok = || Settings {
            paths: vec![t.path().to_owned()],
            namespace: "yocto".into(),
            ..Settings::default()
        };
        assert!(Finder::new(ok()).is_ok());
        // setting, what the one-line error says
        let cases: Vec<(Settings, &str)> = vec![
            (
                Settings {
                    history: Some(HISTORY.1 + 1),
                    ..ok()
                },
                "--history 33: at most 32",
            ),
            (
                Settings {
                    platforms: BTreeMap::from([("qemuarm".into(), "linux".into())]),
                    ..ok()
                },
                "[yocto.platforms] qemuarm = \"linux\"",
            ),
            (
                Settings {
                    paths: vec![t.path().join("nothing")],
                    ..ok()
                },
                "--yocto",
            ),
            (
                Settings {
                    index: IndexArgs {
                        tag: "bad tag".into(),
                        ..IndexArgs::default()
                    },
                    ..ok()
                },
                "bad tag",
            ),
        ];
        for (settings, want) in cases {
            let err = Finder::new(settings).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}
