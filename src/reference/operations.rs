//! Lookup, open, read, release and swap as the FUSE adapter drives them,
//! against "a live name resolves and an open handle reads its name's bytes".

use super::generations::{names, pool};
use super::*;

/// One step of a sequence of mount operations.
#[derive(Debug, Clone)]
enum Op {
    /// Swap to composition k of the pool.
    Swap(usize),
    /// Prune.
    Prune,
    /// Look a name up (index into every name of the pool) and open it.
    Open(usize),
    /// Read an open handle whole (index into the open handles).
    Read(usize),
    /// Release an open handle.
    Release(usize),
}

/// Every name of the pool with the bytes it must serve: content-addressed,
/// so wherever a name is served its bytes are these.
fn bytes_of(comps: &[Composition]) -> BTreeMap<Digest, Vec<u8>> {
    let mut out = BTreeMap::new();
    for c in comps {
        out.insert(c.index_digest.clone(), c.index.clone());
        for b in &c.blobs {
            let crate::source::Origin::File { dir, .. } = &b.origin else {
                continue;
            };
            let bytes = std::fs::read(dir.path().join(b.rel())).unwrap();
            out.insert(b.digest.clone(), bytes);
        }
    }
    out
}

proptest! {
    #![proptest_config(config(CASES_GENERATIONS))]

    /// lookup, open, read, release and swap, as the FUSE adapter drives them
    /// (snapshots, blob opens, the handle table: no kernel), against "a name
    /// resolves while a live snapshot serves it, and an open handle reads the
    /// bytes of its name, whatever was swapped or pruned since it opened".
    #[test]
    fn operations_match_the_reference(
        specs in prop::collection::vec(prop::collection::vec(0u8..8, 0..5), 3),
        ops in prop::collection::vec(
            prop_oneof![
                2 => (0usize..3).prop_map(Op::Swap),
                1 => Just(Op::Prune),
                4 => (0usize..32).prop_map(Op::Open),
                4 => (0usize..8).prop_map(Op::Read),
                2 => (0usize..8).prop_map(Op::Release),
            ],
            1..40,
        ),
        max_count in 0usize..3,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let comps = pool(tmp.path(), &specs);
        let retention = Retention {
            keep: Duration::from_secs(3600),
            max_count,
            max_bytes: u64::MAX,
        };
        let g = Generations::with_retention(&comps[0], retention);
        let handles: crate::mount::handles::Handles<()> = crate::mount::handles::Handles::default();
        let verifier = crate::blob::verify::Verifier::default();
        let bytes = bytes_of(&comps);
        let all: Vec<&Digest> = bytes.keys().collect();
        let (mut current, mut retired) = (0usize, Vec::<usize>::new());
        // Open handles: (fh, the bytes its name must read).
        let mut open: Vec<(u64, Vec<u8>)> = Vec::new();
        for op in ops {
            match op {
                Op::Swap(k) => {
                    retired.insert(0, current);
                    retired.truncate(max_count);
                    current = k;
                    g.swap(&comps[k]);
                }
                Op::Prune => {
                    g.prune();
                }
                Op::Open(i) => {
                    let d = all[i % all.len()];
                    let live = std::iter::once(current)
                        .chain(retired.iter().copied())
                        .any(|k| names(&comps[k]).contains(d));
                    let found = g.lookup(ino::dir_of(d.algorithm()), OsStr::new(d.encoded()));
                    let attr = match (found, live) {
                        (Ok(a), true) => a,
                        (Err(FsError::NotFound), false) => continue,
                        (other, live) => {
                            prop_assert!(false, "lookup {}: {:?}, live {}", d, other, live);
                            continue;
                        }
                    };
                    prop_assert_eq!(attr.size, bytes[d].len() as u64);
                    let (_, content) = g.file(attr.ino).unwrap();
                    let handle = match content {
                        crate::snapshot::layout::Content::Memory(b) => crate::mount::handles::Handle::Memory(b),
                        crate::snapshot::layout::Content::Blob(blob) => {
                            let (mut opened, must_hash) =
                                crate::blob::FileRange::open_unhashed(&blob, false).unwrap();
                            // A file rewritten since it was recorded (the pool
                            // writes a repeated seed twice) is hashed first, as
                            // the adapter does; its bytes are right, so it passes.
                            if must_hash {
                                prop_assert!(opened.check(&blob, &verifier).is_ok(), "{}", d);
                            }
                            crate::mount::handles::Handle::Read { ino: attr.ino, range: opened.range }
                        }
                    };
                    open.push((handles.insert(handle), bytes[d].clone()));
                }
                Op::Read(h) if !open.is_empty() => {
                    let (fh, want) = &open[h % open.len()];
                    let got = match handles.read_from(*fh) {
                        Some(crate::mount::handles::ReadFrom::Memory(b)) => b.to_vec(),
                        Some(crate::mount::handles::ReadFrom::File(range)) => {
                            range.read(0, u32::MAX).unwrap()
                        }
                        None => {
                            prop_assert!(false, "handle {} lost", fh);
                            continue;
                        }
                    };
                    prop_assert_eq!(&got, want);
                }
                Op::Release(h) if !open.is_empty() => {
                    let (fh, _) = open.remove(h % open.len());
                    prop_assert!(handles.remove(fh).is_some());
                    prop_assert!(handles.read_from(fh).is_none());
                }
                Op::Read(_) | Op::Release(_) => {}
            }
        }
    }
}
