//! [`Generations`] against "the current snapshot plus the retired ones within
//! the retention".

use super::*;

/// One step of a generations sequence.
#[derive(Debug, Clone)]
enum Step {
    /// Swap to composition k of the pool.
    Swap(usize),
    /// Prune.
    Prune,
}

/// A pool of compositions whose blobs are real files, one directory per
/// composition (so a digest in two of them has two origins).
pub(super) fn pool(root: &std::path::Path, specs: &[Vec<u8>]) -> Vec<Composition> {
    specs
        .iter()
        .enumerate()
        .map(|(k, seeds)| {
            let dir = root.join(format!("c{k}"));
            let manifest = file_blob(&dir, format!("manifest {}", k % 2).as_bytes());
            let image = Image {
                media_type: OCI_MANIFEST.into(),
                digest: manifest.digest.clone(),
                size: manifest.size,
                image_size: manifest.size,
                platform: Platform::parse("linux/amd64").unwrap().platform,
            };
            let mut blobs = vec![Arc::new(manifest)];
            blobs.extend(seeds.iter().map(|s| Arc::new(file_blob(&dir, &[*s]))));
            composed(&[Contribution {
                name: format!("c{k}"),
                images: vec![image],
                blobs,
                broken: Vec::new(),
                referrers: Vec::new(),
                documents: Vec::new(),
            }])
        })
        .collect()
}

/// The names a composition serves under the algorithm directories.
pub(super) fn names(c: &Composition) -> BTreeSet<Digest> {
    c.blobs
        .iter()
        .map(|b| b.digest.clone())
        .chain([c.index_digest.clone()])
        .collect()
}

proptest! {
    #![proptest_config(config(CASES_GENERATIONS))]

    #[test]
    fn generations_match_current_plus_retained(
        specs in prop::collection::vec(prop::collection::vec(0u8..8, 0..5), 3),
        steps in prop::collection::vec(
            prop_oneof![4 => (0usize..3).prop_map(Step::Swap), 1 => Just(Step::Prune)],
            1..12,
        ),
        keep_forever in any::<bool>(),
        max_count in 0usize..4,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let comps = pool(tmp.path(), &specs);
        let retention = Retention {
            keep: if keep_forever { Duration::from_secs(3600) } else { Duration::ZERO },
            max_count,
            max_bytes: u64::MAX,
        };
        let g = Generations::with_retention(&comps[0], retention);
        // The reference: the current composition, and the retired ones kept, newest first.
        let mut current = 0usize;
        let mut retired: Vec<usize> = Vec::new();
        let live = |current: usize, retired: &[usize]| -> BTreeSet<Digest> {
            std::iter::once(current).chain(retired.iter().copied())
                .flat_map(|k| names(&comps[k])).collect()
        };
        let all: BTreeSet<Digest> = comps.iter().flat_map(names).collect();
        let lookup = |d: &Digest| g.lookup(ino::dir_of(d.algorithm()), OsStr::new(d.encoded()));
        let mut numbers: HashMap<Digest, u64> = HashMap::new();
        for d in names(&comps[0]) {
            numbers.insert(d.clone(), lookup(&d).unwrap().ino);
        }
        for step in steps {
            let before = live(current, &retired);
            let old = current;
            let got = match step {
                Step::Swap(k) => {
                    retired.insert(0, current);
                    current = k;
                    g.swap(&comps[k])
                }
                Step::Prune => g.prune(),
            };
            if !keep_forever {
                retired.clear();
            }
            retired.truncate(max_count);
            let after = live(current, &retired);
            prop_assert_eq!(g.retired_count(), retired.len());
            // Names no live snapshot serves are invalidated, and only those.
            let want_entries: BTreeSet<Digest> = before.difference(&after).cloned().collect();
            let got_entries: BTreeSet<String> = got.iter().filter_map(|i| match i {
                Invalidation::Entry { name, .. } => Some(name.clone()),
                Invalidation::Inode(_) => None,
            }).collect();
            prop_assert_eq!(
                got_entries,
                want_entries.iter().map(|d| d.encoded().to_owned()).collect::<BTreeSet<_>>()
            );
            // A blob now served from another file than before is invalidated.
            let moved: BTreeSet<u64> = match step {
                Step::Swap(k) if k != old => comps[k].blobs.iter()
                    .filter(|b| comps[old].blobs.iter().any(|o| o.digest == b.digest))
                    .map(|b| numbers[&b.digest]).collect(),
                _ => BTreeSet::new(),
            };
            let got_inodes: BTreeSet<u64> = got.iter().filter_map(|i| match i {
                Invalidation::Inode(n) => Some(*n),
                Invalidation::Entry { .. } => None,
            }).collect();
            prop_assert_eq!(got_inodes, moved);
            // Exactly the live names resolve; a name keeps its number while live.
            for d in &all {
                match (lookup(d), after.contains(d)) {
                    (Ok(a), true) => {
                        if before.contains(d) {
                            prop_assert_eq!(Some(&a.ino), numbers.get(d), "{} renumbered", d);
                        }
                        numbers.insert(d.clone(), a.ino);
                    }
                    (Err(FsError::NotFound), false) => { numbers.remove(d); }
                    (other, live) => prop_assert!(false, "{}: {:?}, live {}", d, other, live),
                }
            }
            // Listings and index.json are the current snapshot's.
            let listed: BTreeSet<String> = g.current().read_dir(ino::SHA256, 2).unwrap()
                .map(|e| e.name.to_owned()).collect();
            let want: BTreeSet<String> = names(&comps[current]).iter()
                .map(|d| d.encoded().to_owned()).collect();
            prop_assert_eq!(listed, want);
            let json = match g.content(ino::INDEX_JSON).unwrap() {
                crate::snapshot::layout::Content::Memory(b) => b,
                crate::snapshot::layout::Content::Blob(_) => unreachable!(),
            };
            prop_assert_eq!(&json[..], &comps[current].index_json[..]);
        }
    }
}
