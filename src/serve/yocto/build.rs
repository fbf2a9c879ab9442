//! Where a build's images are. `--yocto PATH` takes a `TOPDIR` (its `tmp*/`
//! directories, and the `TMPDIR`s its `conf/*.conf` and
//! `conf/multiconfig/*.conf` set when they lie elsewhere), a `TMPDIR`, a
//! `deploy/images` directory, or one machine's `deploy/images/MACHINE`
//! (`DEPLOY_DIR_IMAGE`). Anything else is refused at start, saying what was
//! looked for. What lies below is looked at anew at every scan: a build
//! directory may exist before its first image does.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Most machine directories looked at per `deploy/images`.
const MAX_MACHINES: usize = 256;
/// Most `tmp*` directories, and `TMPDIR` settings, looked at per `TOPDIR`.
const MAX_TMPDIRS: usize = 64;
/// Most bytes of a `conf/*.conf` file read for its `TMPDIR`.
const MAX_CONF: u64 = 1 << 20;

/// Why `--yocto PATH` is refused.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Nothing of a build was found there.
    #[error(
        "--yocto {0:?}: no Yocto build here (looked for a TOPDIR with conf/ or tmp*/deploy/images, \
         a TMPDIR with deploy/images, a deploy/images directory, or deploy/images/MACHINE)"
    )]
    NotABuild(PathBuf),
    /// It cannot be read.
    #[error("--yocto {path:?}: {err}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        err: std::io::Error,
    },
}

/// A place images are found under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildPath {
    /// A `TOPDIR`.
    Top(PathBuf),
    /// A `TMPDIR`.
    Tmp(PathBuf),
    /// A `deploy/images` directory.
    Images(PathBuf),
    /// One machine's directory (its name is the machine).
    Machine(PathBuf),
}

/// One machine's deploy directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineDir {
    /// The machine (the directory's name).
    pub machine: String,
    /// The directory.
    pub path: PathBuf,
    /// Who owns the build path it was found under (`--yocto PATH`): builds
    /// of different users are never merged into one image.
    pub owner: u32,
}

fn is_dir(p: &Path) -> bool {
    p.is_dir()
}

fn named(p: &Path, name: &str) -> bool {
    p.file_name().is_some_and(|n| n == name)
}

impl BuildPath {
    /// The path given.
    pub fn path(&self) -> &Path {
        match self {
            BuildPath::Top(p)
            | BuildPath::Tmp(p)
            | BuildPath::Images(p)
            | BuildPath::Machine(p) => p,
        }
    }

    /// The owner of the path given (`u32::MAX` if it is gone).
    fn owner(&self) -> u32 {
        std::fs::metadata(self.path()).map_or(u32::MAX, |m| m.uid())
    }

    /// What `path` is, or why it is none of them.
    pub fn classify(path: &Path) -> Result<BuildPath, BuildError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(BuildError::NotABuild(path)),
            Err(err) => return Err(BuildError::Io { path, err }),
        }
        let images =
            |p: &Path| named(p, "images") && p.parent().is_some_and(|d| named(d, "deploy"));
        let has_tmp = !tmp_dirs(&path).is_empty();
        Ok(if is_dir(&path.join("conf")) || has_tmp {
            BuildPath::Top(path)
        } else if is_dir(&path.join("deploy/images")) {
            BuildPath::Tmp(path)
        } else if images(&path) {
            BuildPath::Images(path)
        } else if path.parent().is_some_and(images) {
            BuildPath::Machine(path)
        } else {
            return Err(BuildError::NotABuild(path));
        })
    }

    /// The machine directories below, now.
    pub fn machines(&self) -> Vec<MachineDir> {
        let images_dirs = match self {
            BuildPath::Top(top) => {
                let mut dirs: Vec<PathBuf> = tmp_dirs(top);
                dirs.extend(conf_tmpdirs(top));
                dirs.into_iter().map(|t| t.join("deploy/images")).collect()
            }
            BuildPath::Tmp(tmp) => vec![tmp.join("deploy/images")],
            BuildPath::Images(images) => vec![images.clone()],
            BuildPath::Machine(dir) => {
                let machine = dir.file_name().map(|n| n.to_string_lossy().into_owned());
                return machine
                    .map(|machine| MachineDir {
                        machine,
                        path: dir.clone(),
                        owner: self.owner(),
                    })
                    .into_iter()
                    .collect();
            }
        };
        images_dirs
            .iter()
            .flat_map(|d| {
                subdirs(d)
                    .into_iter()
                    .take(MAX_MACHINES)
                    .map(|(machine, path)| MachineDir {
                        machine,
                        path,
                        owner: self.owner(),
                    })
            })
            .collect()
    }
}

/// Every machine directory below `paths`, each directory once (one reached
/// twice, through two build paths or a link, is looked at once).
pub fn machine_dirs(paths: &[BuildPath]) -> Vec<MachineDir> {
    let mut seen = HashSet::new();
    paths
        .iter()
        .flat_map(BuildPath::machines)
        .filter(|m| match std::fs::metadata(&m.path) {
            Ok(meta) => seen.insert((meta.dev(), meta.ino())),
            Err(_) => false,
        })
        .collect()
}

/// Subdirectories by name, sorted (names that are not UTF-8 skipped).
fn subdirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .take(super::MAX_ENTRIES)
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .filter(|(_, p)| p.is_dir())
        .collect();
    out.sort();
    out
}

/// `TOPDIR/tmp*` directories that hold `deploy/images`.
fn tmp_dirs(top: &Path) -> Vec<PathBuf> {
    subdirs(top)
        .into_iter()
        .filter(|(name, p)| name.starts_with("tmp") && is_dir(&p.join("deploy/images")))
        .map(|(_, p)| p)
        .take(MAX_TMPDIRS)
        .collect()
}

/// The `TMPDIR`s `TOPDIR/conf/*.conf` and `conf/multiconfig/*.conf` set
/// plainly (`TMPDIR = "${TOPDIR}/tmp-mc"`, `?=`, `??=`, `:=`), that hold
/// `deploy/images`. A value with any other `${…}` is not guessed at.
fn conf_tmpdirs(top: &Path) -> Vec<PathBuf> {
    let conf = top.join("conf");
    let mut files: Vec<PathBuf> = ["local.conf", "site.conf", "auto.conf"]
        .iter()
        .map(|f| conf.join(f))
        .collect();
    files.extend(
        subdirs_files(&conf.join("multiconfig"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "conf")),
    );
    let values = files.iter().filter_map(|f| {
        let bytes = crate::serve::config::read_settings_capped(f, MAX_CONF).ok()?;
        Some(tmpdir_settings(&String::from_utf8_lossy(&bytes)))
    });
    values
        .flatten()
        .filter_map(|v| {
            let v = v.replace("${TOPDIR}", &top.to_string_lossy());
            (!v.contains("${")).then(|| top.join(v))
        })
        .filter(|p| is_dir(&p.join("deploy/images")))
        .take(MAX_TMPDIRS)
        .collect()
}

fn subdirs_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .take(MAX_TMPDIRS)
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// The values of plain `TMPDIR` assignments in a BitBake configuration.
fn tmpdir_settings(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("TMPDIR")?;
            let rest = rest.trim_start();
            let rest = ["??=", "?=", ":=", "="]
                .iter()
                .find_map(|op| rest.strip_prefix(op))?;
            let value = rest.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))?;
            (!value.is_empty()).then(|| value.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpdir_lines() {
        let text = r#"
# TMPDIR = "${TOPDIR}/commented"
TMPDIR = "${TOPDIR}/tmp-mc"
TMPDIR ?= '/srv/tmp'
TMPDIR_OTHER = "/x"
TMPDIR:append = "/y"
  TMPDIR ??= "rel"
TMPDIR = ""
"#;
        assert_eq!(
            tmpdir_settings(text),
            ["${TOPDIR}/tmp-mc", "/srv/tmp", "rel"]
        );
    }

    #[test]
    fn what_a_path_is() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let mk = |rel: &str| std::fs::create_dir_all(root.join(rel)).unwrap();
        mk("build/conf");
        mk("build/tmp/deploy/images/qemux86-64");
        mk("build/tmp-arm64/deploy/images/qemuarm64");
        mk("elsewhere/tmp-riscv/deploy/images/qemuriscv64");
        mk("fresh/conf");
        mk("nothing/here");
        std::fs::write(
            root.join("build/conf/local.conf"),
            format!(
                "TMPDIR = \"{}\"\n",
                root.join("elsewhere/tmp-riscv").display()
            ),
        )
        .unwrap();
        std::fs::write(root.join("file"), "").unwrap();
        let b = |rel: &str| root.join(rel);
        let cases = [
            ("build", Ok(BuildPath::Top(b("build")))),
            ("fresh", Ok(BuildPath::Top(b("fresh")))),
            ("build/tmp", Ok(BuildPath::Tmp(b("build/tmp")))),
            (
                "build/tmp/deploy/images",
                Ok(BuildPath::Images(b("build/tmp/deploy/images"))),
            ),
            (
                "build/tmp/deploy/images/qemux86-64",
                Ok(BuildPath::Machine(b("build/tmp/deploy/images/qemux86-64"))),
            ),
            ("nothing", Err("no Yocto build here")),
            ("file", Err("no Yocto build here")),
            ("missing", Err("No such file")),
        ];
        for (rel, want) in cases {
            match (BuildPath::classify(&root.join(rel)), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{rel}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{rel}: {e}"),
                (got, want) => panic!("{rel}: {got:?}, want {want:?}"),
            }
        }
        let machines = |p: BuildPath| -> Vec<String> {
            machine_dirs(&[p]).into_iter().map(|m| m.machine).collect()
        };
        let top = BuildPath::classify(&root.join("build")).unwrap();
        assert_eq!(
            machines(top.clone()),
            ["qemux86-64", "qemuarm64", "qemuriscv64"]
        );
        // The same directories twice are looked at once.
        let tmp = BuildPath::classify(&root.join("build/tmp")).unwrap();
        let both: Vec<String> = machine_dirs(&[top, tmp])
            .into_iter()
            .map(|m| m.machine)
            .collect();
        assert_eq!(both, ["qemux86-64", "qemuarm64", "qemuriscv64"]);
    }
}
