//! Which of an image's outputs each tag is composed from (pure).
//!
//! - **A tag link's tag** (`OCI_IMAGE_TAG`, `latest` when no machine has a
//!   link), followed live: for each machine, the link's directory, else the
//!   newest dated directory, else an undated one; else a tar (the link's,
//!   else the newest dated, else an undated one); else a `-dir.tar` in the
//!   same order.
//! - **Each dated build** (`DATETIME`), newest `history` of them, static:
//!   for each machine, its newest build at or before that time (its
//!   directory, else its `.tar`, else its `-dir.tar`); a machine with no
//!   build by then is left out. A timestamp that is also a link's tag is the
//!   link's.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::SystemTime;

use super::names::{Build, Form, Output};

/// A complete output found on a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The machine.
    pub machine: String,
    /// What it is.
    pub output: Output,
    /// Where.
    pub path: PathBuf,
    /// Its modification time (orders undated outputs).
    pub modified: SystemTime,
}

/// One tag and the output each machine contributes to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The tag.
    pub tag: String,
    /// Followed live (a link's tag), or composed once (a dated build).
    pub live: bool,
    /// Per machine (machine order), what it contributes.
    pub sources: Vec<Found>,
}

fn form_rank(f: Form) -> u8 {
    match f {
        Form::Dir => 0,
        Form::Tar => 1,
        Form::DirTar => 2,
    }
}

/// The tags of one image's outputs (all of one image), live ones first.
pub fn choose(found: &[Found], default_tag: &str, history: usize) -> Vec<Selection> {
    let mut by_machine: BTreeMap<&str, Vec<&Found>> = BTreeMap::new();
    for f in found {
        by_machine.entry(&f.machine).or_default().push(f);
    }
    let mut links: BTreeSet<&str> = found
        .iter()
        .filter_map(|f| match &f.output.build {
            Build::Tagged(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    if links.is_empty() {
        links.insert(default_tag);
    }
    let mut out: Vec<Selection> = links
        .iter()
        .map(|tag| Selection {
            tag: (*tag).to_owned(),
            live: true,
            sources: by_machine
                .values()
                .filter_map(|outputs| best_for_link(outputs, tag).cloned())
                .collect(),
        })
        .filter(|s| !s.sources.is_empty())
        .collect();
    let stamps: BTreeSet<&str> = found
        .iter()
        .filter_map(|f| match &f.output.build {
            Build::Dated(s) => Some(s.as_str()),
            _ => None,
        })
        .filter(|s| !links.contains(s))
        .collect();
    for stamp in stamps.into_iter().rev().take(history) {
        out.push(Selection {
            tag: stamp.to_owned(),
            live: false,
            sources: by_machine
                .values()
                .filter_map(|outputs| best_at(outputs, stamp).cloned())
                .collect(),
        });
    }
    out
}

/// A machine's output for link tag `tag`.
fn best_for_link<'a>(outputs: &[&'a Found], tag: &str) -> Option<&'a Found> {
    let build_rank = |b: &Build| match b {
        Build::Tagged(t) if t == tag => Some(0),
        Build::Tagged(_) => None,
        Build::Dated(_) => Some(1),
        Build::Undated => Some(2),
    };
    outputs
        .iter()
        .filter_map(|f| {
            let rank = build_rank(&f.output.build)?;
            let stamp = match &f.output.build {
                Build::Dated(s) => s.as_str(),
                _ => "",
            };
            Some((
                (
                    form_rank(f.output.form),
                    rank,
                    Reverse(stamp),
                    Reverse(f.modified),
                ),
                *f,
            ))
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, f)| f)
}

/// A machine's newest dated output at or before `stamp`.
fn best_at<'a>(outputs: &[&'a Found], stamp: &str) -> Option<&'a Found> {
    outputs
        .iter()
        .filter_map(|f| match &f.output.build {
            Build::Dated(s) if s.as_str() <= stamp => {
                Some(((Reverse(s.as_str()), form_rank(f.output.form)), *f))
            }
            _ => None,
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, f)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(machine: &str, build: Build, form: Form) -> Found {
        let name = format!("{machine}-{build:?}-{form:?}");
        Found {
            machine: machine.into(),
            output: Output {
                image: "app".into(),
                build,
                form,
            },
            path: PathBuf::from(name),
            modified: SystemTime::UNIX_EPOCH,
        }
    }

    fn names(s: &Selection) -> Vec<String> {
        s.sources
            .iter()
            .map(|f| f.path.display().to_string())
            .collect()
    }

    #[test]
    fn tags_and_their_sources() {
        let d = |s: &str| Build::Dated(s.into());
        let latest = Build::Tagged("latest".into());
        let (x, a, r) = ("qemux86-64", "qemuarm64", "qemuarm");
        let found = vec![
            // x86-64: two dated builds, every form, the links.
            f(x, d("20261204120000"), Form::Dir),
            f(x, d("20261204120000"), Form::Tar),
            f(x, d("20261205120000"), Form::Dir),
            f(x, d("20261205120000"), Form::Tar),
            f(x, d("20261205120000"), Form::DirTar),
            f(x, latest.clone(), Form::Dir),
            f(x, latest.clone(), Form::Tar),
            // arm64: only tars left, built in between.
            f(a, d("20261204180000"), Form::Tar),
            f(a, latest.clone(), Form::Tar),
            // arm: only a -dir.tar, built last.
            f(r, d("20261205130000"), Form::DirTar),
        ];
        let got = choose(&found, "latest", 10);
        let tags: Vec<(&str, bool)> = got.iter().map(|s| (s.tag.as_str(), s.live)).collect();
        assert_eq!(
            tags,
            [
                ("latest", true),
                ("20261205130000", false),
                ("20261205120000", false),
                ("20261204180000", false),
                ("20261204120000", false),
            ]
        );
        let want: [&[&str]; 5] = [
            &[
                "qemuarm-Dated(\"20261205130000\")-DirTar",
                "qemuarm64-Tagged(\"latest\")-Tar",
                "qemux86-64-Tagged(\"latest\")-Dir",
            ],
            &[
                "qemuarm-Dated(\"20261205130000\")-DirTar",
                "qemuarm64-Dated(\"20261204180000\")-Tar",
                "qemux86-64-Dated(\"20261205120000\")-Dir",
            ],
            &[
                "qemuarm64-Dated(\"20261204180000\")-Tar",
                "qemux86-64-Dated(\"20261205120000\")-Dir",
            ],
            &[
                "qemuarm64-Dated(\"20261204180000\")-Tar",
                "qemux86-64-Dated(\"20261204120000\")-Dir",
            ],
            &["qemux86-64-Dated(\"20261204120000\")-Dir"],
        ];
        for (s, want) in got.iter().zip(want) {
            assert_eq!(names(s), want, "{}", s.tag);
        }
        // History is bounded: the newest N dated builds.
        let two = choose(&found, "latest", 2);
        let tags: Vec<&str> = two.iter().map(|s| s.tag.as_str()).collect();
        assert_eq!(tags, ["latest", "20261205130000", "20261205120000"]);
        assert_eq!(choose(&found, "latest", 0).len(), 1);
    }

    #[test]
    fn without_links_the_default_tag_takes_the_newest() {
        let d = |s: &str| Build::Dated(s.into());
        let found = vec![
            f("m", d("20261204120000"), Form::Dir),
            f("m", d("20261205120000"), Form::Tar),
            f("m", Build::Undated, Form::Dir),
        ];
        let got = choose(&found, "release", 0);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].tag.as_str(), got[0].live), ("release", true));
        // A directory before any tar, the newest dated before an undated one.
        assert_eq!(names(&got[0]), ["m-Dated(\"20261204120000\")-Dir"]);
        // Two link tags: each its own; a timestamp used as a link tag is the link's.
        let found = vec![
            f("m", d("20261205120000"), Form::Dir),
            f("m", Build::Tagged("latest".into()), Form::Dir),
            f("m", Build::Tagged("20261205120000".into()), Form::Dir),
        ];
        let tags: Vec<(String, bool)> = choose(&found, "latest", 5)
            .into_iter()
            .map(|s| (s.tag, s.live))
            .collect();
        assert_eq!(
            tags,
            [("20261205120000".into(), true), ("latest".into(), true)]
        );
    }
}
