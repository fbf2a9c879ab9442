//! The Yocto mode: every image of one or more build directories, found the
//! way meta-virtualization's `oci-multiarch.bbclass` lays them out
//! (`tmp*/deploy/images/<machine>/<image>[-<machine>]-latest-oci`, `…-oci`,
//! `…-oci.tar`), grouped by image name across machines into one multi-arch
//! repository each under a namespace; images that appear later are added.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::plan::{IndexArgs, Plan};

use super::api::Registry;
use super::{RepoPlan, ServeConfig, route};

/// How often build directories are looked at again for new images.
pub const RESCAN: Duration = Duration::from_secs(5);

/// Most machines (directories under `deploy/images`) looked at per build directory.
const MAX_MACHINES: usize = 256;
/// Most entries read per machine directory.
const MAX_ENTRIES: usize = 65_536;

/// Build directories and what to make of their images.
#[derive(Debug, Clone)]
pub struct Finder {
    /// Build directories (`TOPDIR`s).
    pub build_dirs: Vec<PathBuf>,
    /// The namespace repositories are named under (`yocto` → `yocto/IMAGE`).
    pub namespace: String,
    /// Index options for every repository.
    pub index: IndexArgs,
}

/// One candidate found for an image on a machine, best first by `rank`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    /// 0: `-latest-oci`, 1: `-oci` directory, 2: `-oci.tar`.
    rank: u8,
    /// Newer first within a rank.
    age: std::cmp::Reverse<SystemTime>,
    path: PathBuf,
}

impl Finder {
    /// Image name → one source per machine (in machine order).
    pub fn scan(&self) -> BTreeMap<String, Vec<PathBuf>> {
        let mut best: BTreeMap<(String, String), Candidate> = BTreeMap::new();
        for build in &self.build_dirs {
            for images_dir in tmp_dirs(build) {
                for (machine, dir) in read_dir(&images_dir).into_iter().take(MAX_MACHINES) {
                    for (name, path) in read_dir(&dir).into_iter().take(MAX_ENTRIES) {
                        let Some((image, rank)) = classify(&name, &machine) else {
                            continue;
                        };
                        // As oci-multiarch.bbclass: a directory counts once
                        // it has its index.json (a build may be writing it).
                        let complete = match rank {
                            2 => path.is_file(),
                            _ => path.join("index.json").is_file(),
                        };
                        if !complete {
                            continue;
                        }
                        let age = std::cmp::Reverse(
                            std::fs::metadata(&path)
                                .and_then(|m| m.modified())
                                .unwrap_or(SystemTime::UNIX_EPOCH),
                        );
                        let c = Candidate { rank, age, path };
                        let key = (image, machine.clone());
                        if best.get(&key).is_none_or(|b| c < *b) {
                            best.insert(key, c);
                        }
                    }
                }
            }
        }
        let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for ((image, _machine), c) in best {
            out.entry(image).or_default().push(c.path);
        }
        out
    }

    /// The repository name of an image, if it makes a valid one.
    pub fn repo_name(&self, image: &str) -> Option<String> {
        let name = format!("{}/{}", self.namespace, image.to_ascii_lowercase());
        route::is_name(&name).then_some(name)
    }

    fn plan(&self, image: &str, paths: &[PathBuf]) -> Option<RepoPlan> {
        let Some(name) = self.repo_name(image) else {
            log::warn!(
                "image {image:?}: not a valid repository name under {:?}; skipped",
                self.namespace
            );
            return None;
        };
        let sources: Vec<String> = paths
            .iter()
            .filter_map(|p| p.to_str().map(|s| format!("oci:{s}")))
            .collect();
        match Plan::from_args(&sources, &self.index) {
            Ok(plan) => Some(RepoPlan { name, plan }),
            Err(e) => {
                log::warn!("image {image:?}: {e}; skipped");
                None
            }
        }
    }

    /// Serves every image found now; an image that does not compose (yet),
    /// or holds what its publishers may not read, is skipped by name and
    /// looked at again by [`Finder::follow`].
    pub(crate) fn start(&self, registry: &Arc<Registry>, cfg: &ServeConfig) -> Served {
        let mut served = Served::default();
        self.look(registry, cfg, &mut served);
        served
    }

    /// Looks again every [`RESCAN`]: adds images not served yet, and gives a
    /// served image its new set of sources when a machine appears or goes.
    pub(crate) fn follow(&self, registry: &Arc<Registry>, cfg: &ServeConfig, mut served: Served) {
        loop {
            std::thread::sleep(RESCAN);
            self.look(registry, cfg, &mut served);
        }
    }

    fn look(&self, registry: &Arc<Registry>, cfg: &ServeConfig, served: &mut Served) {
        for (image, paths) in self.scan() {
            let Some(name) = self.repo_name(&image) else {
                continue;
            };
            if let Some((was, replan)) = served.repos.get_mut(&name) {
                if *was != paths {
                    if let (Some(replan), Some(p)) = (replan.as_ref(), self.plan(&image, &paths)) {
                        log::info!("repository {name:?}: {} sources now", paths.len());
                        replan.send(p.plan);
                    }
                    *was = paths;
                }
                continue;
            }
            let Some(plan) = self.plan(&image, &paths) else {
                continue;
            };
            match super::add(registry, plan, cfg) {
                Ok(replan) => {
                    served.refused.remove(&name);
                    log::info!("image found: serving repository {name:?}");
                    served.repos.insert(name, (paths, replan));
                }
                Err(e) => {
                    let msg = e.to_string();
                    if served.refused.get(&name) != Some(&msg) {
                        log::warn!("{msg}; image skipped for now");
                        if served.refused.len() < super::MAX_REPOSITORIES * 4 {
                            served.refused.insert(name, msg);
                        }
                    }
                }
            }
        }
    }
}

/// What the finder serves: per repository its sources and how to give it
/// others; and the last refusal per image (each logged once, not every look).
#[derive(Debug, Default)]
pub(crate) struct Served {
    repos: BTreeMap<String, (Vec<PathBuf>, Option<crate::watch::Replan>)>,
    refused: BTreeMap<String, String>,
}

/// `BUILD/tmp*/deploy/images` directories.
fn tmp_dirs(build: &Path) -> Vec<PathBuf> {
    read_dir(build)
        .into_iter()
        .filter(|(name, _)| name.starts_with("tmp"))
        .map(|(_, p)| p.join("deploy").join("images"))
        .filter(|p| p.is_dir())
        .collect()
}

/// Entries of a directory, sorted by name (names that are not UTF-8 skipped).
fn read_dir(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .take(MAX_ENTRIES)
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    out.sort();
    out
}

/// The image a deploy entry is of, and its rank; `None` for other files.
fn classify(name: &str, machine: &str) -> Option<(String, u8)> {
    let (stem, rank) = if let Some(s) = name.strip_suffix("-latest-oci") {
        (s, 0)
    } else if let Some(s) = name.strip_suffix("-oci") {
        (s, 1)
    } else if let Some(s) = name.strip_suffix("-oci.tar") {
        (s, 2)
    } else {
        return None;
    };
    // IMAGE-MACHINE-latest-oci, or IMAGE-MACHINE-DATETIME.rootfs-oci.
    let stem = stem.strip_suffix(".rootfs").unwrap_or(stem);
    let image = match stem.split_once(&format!("-{machine}")) {
        Some((image, _)) => image,
        None => stem,
    };
    (!image.is_empty()).then(|| (image.to_owned(), rank))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_names() {
        let m = "qemuarm64";
        let cases = [
            (
                "app-container-qemuarm64-latest-oci",
                Some(("app-container", 0)),
            ),
            ("app-container-latest-oci", Some(("app-container", 0))),
            (
                "app-container-qemuarm64-20261203101010.rootfs-oci",
                Some(("app-container", 1)),
            ),
            (
                "app-container-qemuarm64-20261203101010-oci.tar",
                Some(("app-container", 2)),
            ),
            ("app-container-qemuarm64.rootfs.tar.bz2", None),
            ("-latest-oci", None),
            ("Image", None),
        ];
        for (name, want) in cases {
            let got = classify(name, m);
            assert_eq!(got.as_ref().map(|(i, r)| (i.as_str(), *r)), want, "{name}");
        }
    }

    #[test]
    fn images_are_grouped_across_machines_and_tmp_dirs() {
        let t = tempfile::tempdir().unwrap();
        let mk = |rel: &str| std::fs::create_dir_all(t.path().join(rel)).unwrap();
        let layout = |rel: &str| {
            mk(rel);
            std::fs::write(t.path().join(rel).join("index.json"), "{}").unwrap();
        };
        layout("tmp/deploy/images/qemuarm64/app-qemuarm64-latest-oci");
        layout("tmp/deploy/images/qemuarm64/app-qemuarm64-1.rootfs-oci");
        layout("tmp/deploy/images/qemux86-64/app-qemux86-64-1.rootfs-oci");
        layout("tmp-musl/deploy/images/qemuriscv64/base-qemuriscv64-latest-oci");
        mk("tmp/deploy/images/qemux86-64/unrelated");
        // Being written: no index.json yet.
        mk("tmp/deploy/images/qemux86-64/half-qemux86-64-latest-oci");
        let f = Finder {
            build_dirs: vec![t.path().to_owned()],
            namespace: "yocto".into(),
            index: IndexArgs::default(),
        };
        let found = f.scan();
        let names: Vec<&String> = found.keys().collect();
        assert_eq!(names, ["app", "base"]);
        let app: Vec<String> = found["app"]
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            app,
            ["app-qemuarm64-latest-oci", "app-qemux86-64-1.rootfs-oci"]
        );
        assert_eq!(f.repo_name("App").as_deref(), Some("yocto/app"));
        assert_eq!(f.repo_name("a..b"), None);
    }
}
