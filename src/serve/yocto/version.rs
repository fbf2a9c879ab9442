//! An image's version tags: the `PV` each dated build recorded in its
//! `testdata.json` (OE-core's `write_image_test_data`), served as a tag —
//! what container-registry.sh's `version` strategy makes with a push, known
//! here from the deploy directory alone.
//!
//! A version names the newest of the dated builds served that recorded it
//! (composed once, like them: a newer build of the same version moves it).
//! Not served, and said: a version that is not a valid tag, one another tag
//! already is, and one build whose machines recorded different versions.
//! Machines whose build recorded none do not count. Pure: the caller reads
//! the files.

use std::collections::BTreeSet;

use super::choose::{Found, Selection};
use crate::serve::route::is_tag;

/// The version selections for `selections` (live first, then dated newest
/// first, as [`super::choose::choose`] gives them), with `version_of` each
/// source's recorded version; and what to say about versions left out.
pub fn version_tags(
    selections: &[Selection],
    version_of: impl Fn(&Found) -> Option<String>,
) -> (Vec<Selection>, Vec<String>) {
    let mut taken: BTreeSet<String> = selections.iter().map(|s| s.tag.clone()).collect();
    let mut out = Vec::new();
    let mut said = Vec::new();
    for sel in selections.iter().filter(|s| !s.live) {
        let versions: BTreeSet<String> = sel.sources.iter().filter_map(&version_of).collect();
        let mut versions = versions.into_iter();
        let (Some(version), None) = (versions.next(), versions.next()) else {
            if sel.sources.iter().filter_map(&version_of).count() > 1 {
                let all: Vec<String> = sel.sources.iter().filter_map(&version_of).collect();
                said.push(format!(
                    "build {}: its machines recorded different versions ({}): no version tag",
                    sel.tag,
                    all.join(", ")
                ));
            }
            continue;
        };
        if !is_tag(&version) {
            said.push(format!(
                "build {}: version {version:?} (PV) is not a valid tag: not served as one",
                sel.tag
            ));
            continue;
        }
        if taken.contains(&version) {
            // A newer build has it (newest first), or another tag is named so.
            if !out.iter().any(|s: &Selection| s.tag == version) {
                said.push(format!(
                    "build {}: version {version:?} is already another tag: not served as one",
                    sel.tag
                ));
            }
            continue;
        }
        taken.insert(version.clone());
        out.push(Selection {
            tag: version,
            live: false,
            sources: sel.sources.clone(),
        });
    }
    (out, said)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::yocto::names::{Build, Form, Output};
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::SystemTime;

    fn found(machine: &str, stamp: &str) -> Found {
        Found {
            machine: machine.into(),
            output: Output {
                image: "app".into(),
                build: Build::Dated(stamp.into()),
                form: Form::Dir,
            },
            path: PathBuf::from(format!("/d/{machine}/{stamp}")),
            modified: SystemTime::UNIX_EPOCH,
        }
    }

    fn sel(tag: &str, live: bool, machines: &[&str]) -> Selection {
        Selection {
            tag: tag.into(),
            live,
            sources: machines.iter().map(|m| found(m, tag)).collect(),
        }
    }

    #[test]
    fn versions_table() {
        // (recorded versions by (machine, stamp); wanted tags with their
        // stamp; how many things said)
        type Case = (
            &'static [(&'static str, &'static str, &'static str)],
            &'static [(&'static str, &'static str)],
            usize,
        );
        let cases: [Case; 7] = [
            // Newest build of each version; live tags never give one.
            (
                &[("a", "3", "1.1"), ("a", "2", "1.1"), ("a", "1", "1.0")],
                &[("1.1", "3"), ("1.0", "1")],
                0,
            ),
            // Machines agree; one without testdata does not count.
            (&[("a", "3", "2.0"), ("b", "3", "2.0")], &[("2.0", "3")], 0),
            (&[("a", "3", "2.0")], &[("2.0", "3")], 0),
            // Machines disagree: no tag, said.
            (&[("a", "3", "2.0"), ("b", "3", "2.1")], &[], 1),
            // Not a tag, or another tag's name: said.
            (&[("a", "3", "1.0+git")], &[], 1),
            (&[("a", "3", "latest")], &[], 1),
            (&[("a", "3", "2")], &[], 1),
        ];
        let selections = [
            sel("latest", true, &["a", "b"]),
            sel("3", false, &["a", "b"]),
            sel("2", false, &["a", "b"]),
            sel("1", false, &["a", "b"]),
        ];
        for (recorded, wanted, says) in cases {
            let map: BTreeMap<(String, String), String> = recorded
                .iter()
                .map(|(m, s, v)| ((m.to_string(), s.to_string()), v.to_string()))
                .collect();
            let version_of = |f: &Found| {
                let Build::Dated(stamp) = &f.output.build else {
                    return None;
                };
                map.get(&(f.machine.clone(), stamp.clone())).cloned()
            };
            let (got, said) = version_tags(&selections, version_of);
            let got: Vec<(String, String)> = got
                .iter()
                .map(|s| match &s.sources[0].output.build {
                    Build::Dated(stamp) => (s.tag.clone(), stamp.clone()),
                    _ => (s.tag.clone(), String::new()),
                })
                .collect();
            let wanted: Vec<(String, String)> = wanted
                .iter()
                .map(|(t, s)| (t.to_string(), s.to_string()))
                .collect();
            assert_eq!(got, wanted, "{recorded:?}");
            assert_eq!(said.len(), says, "{recorded:?}: {said:?}");
            assert!(
                got.iter()
                    .all(|(t, _)| !["latest", "1", "2", "3"].contains(&t.as_str()))
            );
        }
    }
}
