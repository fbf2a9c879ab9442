//! Property tests of the model against reference models simple enough to be
//! obviously right (test-only):
//! - [`Layout`]: generated contributions (sha256 and sha512 digests, digests
//!   sharing 60 of their 64 hex digits, one blob in several sources) against a
//!   map from name to size: lookups, readdir from every offset, unique and
//!   stable inode numbers, sizes and totals;
//! - [`Generations`]: swap and prune sequences against "the current snapshot
//!   plus the retired ones within the retention": which names resolve, which
//!   inodes and names are invalidated, inode numbers kept while live;
//! - lookup, open, read, release and swap as the FUSE adapter drives them
//!   (snapshots, blob opens, the handle table), against "a live name resolves
//!   and an open handle reads its name's bytes, whatever happened since";
//! - [`Schedule`]: the watcher's timing, simulated in virtual time against its
//!   rules (gaps between rebuilds, debounce, every event rebuilt within
//!   `MAX_DELAY` of the gap, retries, pruning);
//! - [`tar::index`]: archives written by the `tar` crate (ustar, GNU long
//!   names, pax) against that crate's own reading of them.
//!
//! Case counts are set per property (`CASES_*`). `cargo test` runs them from
//! a fixed seed, so CI is repeatable; `scripts/proptest.sh` runs them with
//! random seeds and `OCIMUX_PROPTEST_SCALE` times the cases (figures in
//! BENCHMARKS.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::files::confine::Access;
use crate::oci::digest::{Algorithm, Digest};
use crate::oci::document::OCI_MANIFEST;
use crate::oci::platform::Platform;
use crate::snapshot::generations::{Generations, Invalidation, Retention};
use crate::snapshot::index::Composition;
use crate::snapshot::layout::{FsError, Inodes, Kind, Layout, OCI_LAYOUT, ino};
use crate::snapshot::schedule::{MAX_DELAY, MIN_GAP, PRUNE_EVERY, RETRY, SETTLE, Schedule};
use crate::source::{Blob, Contribution, Image};
use crate::testing::testutil::{composed, file_blob, file_origin, root_dir};

const CASES_LAYOUT: u32 = 256;
const CASES_GENERATIONS: u32 = 64;
const CASES_SCHEDULE: u32 = 512;
const CASES_TAR: u32 = 256;

/// The config of a property with `cases` cases (see the module doc).
fn config(cases: u32) -> ProptestConfig {
    let scale: u32 = std::env::var("OCIMUX_PROPTEST_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let rng_seed = match std::env::var_os("OCIMUX_PROPTEST_RANDOM") {
        Some(_) => proptest::test_runner::RngSeed::Random,
        None => proptest::test_runner::RngSeed::Fixed(0x6f63_696d_7578),
    };
    ProptestConfig {
        cases: cases.saturating_mul(scale),
        rng_seed,
        ..ProptestConfig::default()
    }
}

const PLATFORMS: [&str; 4] = [
    "linux/amd64",
    "linux/arm64",
    "linux/arm/v7",
    "linux/riscv64",
];

/// A digest drawn from a small space: `seed` picks the bytes (so equal seeds
/// are one blob in several sources), `near` forces the first 60 hex digits of
/// sha256 digests to one value (what a prefix-keyed scheme would confuse).
fn digest_of(sha512: bool, near: bool, seed: u8) -> Digest {
    let alg = if sha512 {
        Algorithm::Sha512
    } else {
        Algorithm::Sha256
    };
    let real = alg.hash(&[seed]);
    if !near || sha512 {
        return real;
    }
    let tail = real.encoded().get(60..).unwrap_or_default().to_owned();
    Digest::parse(&format!("sha256:{}{tail}", "ab".repeat(30))).unwrap()
}

/// A blob with a made-up origin (a layout never opens it).
fn fake_blob(digest: Digest) -> Blob {
    let size = u64::from(digest.encoded().as_bytes()[0]) * 1000;
    Blob {
        origin: file_origin(root_dir(), size),
        digest,
        size,
        access: Access {
            uid: 1,
            gid: 2,
            mode: 0o444,
            passthrough: true,
        },
        media_type: crate::oci::document::OCI_LAYER.into(),
        source: "src".into(),
        replaced: false,
    }
}

/// Sources: each a platform manifest plus blobs `(sha512, near, seed)`.
fn sources() -> impl Strategy<Value = Vec<Vec<(bool, bool, u8)>>> {
    prop::collection::vec(
        prop::collection::vec((prop::bool::weighted(0.2), any::<bool>(), 0u8..24), 0..12),
        1..=PLATFORMS.len(),
    )
}

fn contributions(spec: &[Vec<(bool, bool, u8)>]) -> Vec<Contribution> {
    spec.iter()
        .enumerate()
        .map(|(i, blobs)| {
            let manifest = fake_blob(Digest::sha256_of(format!("manifest {i}").as_bytes()));
            let image = Image {
                media_type: OCI_MANIFEST.into(),
                digest: manifest.digest.clone(),
                size: manifest.size,
                platform: Platform::parse(PLATFORMS[i]).unwrap().platform,
            };
            let mut all = vec![Arc::new(manifest)];
            all.extend(
                blobs
                    .iter()
                    .map(|&(l, n, s)| Arc::new(fake_blob(digest_of(l, n, s)))),
            );
            Contribution {
                name: format!("src{i}"),
                images: vec![image],
                blobs: all,
                broken: Vec::new(),
                referrers: Vec::new(),
                documents: Vec::new(),
            }
        })
        .collect()
}

/// The reference: every file by directory and name, with its size.
fn expected_files(comp: &Composition) -> BTreeMap<(u64, String), u64> {
    let mut files = BTreeMap::new();
    files.insert((ino::ROOT, "oci-layout".into()), OCI_LAYOUT.len() as u64);
    files.insert(
        (ino::ROOT, "index.json".into()),
        comp.index_json.len() as u64,
    );
    let dir = |d: &Digest| ino::dir_of(d.algorithm());
    for b in &comp.blobs {
        files.insert((dir(&b.digest), b.digest.encoded().into()), b.size);
    }
    let index = &comp.index_digest;
    files.insert(
        (dir(index), index.encoded().into()),
        comp.index.len() as u64,
    );
    files
}

/// `.`, `..` and the sorted children of `dir`, as the reference lists them.
fn expected_listing(
    files: &BTreeMap<(u64, String), u64>,
    dir: u64,
    subdirs: &[&str],
) -> Vec<String> {
    let mut names: Vec<String> = files
        .keys()
        .filter(|(d, _)| *d == dir)
        .map(|(_, n)| n.clone())
        .chain(subdirs.iter().map(|s| s.to_string()))
        .collect();
    names.sort();
    [".".to_owned(), "..".to_owned()]
        .into_iter()
        .chain(names)
        .collect()
}

fn check_layout(l: &Layout, comp: &Composition, inodes: &mut Inodes) -> Result<(), TestCaseError> {
    let files = expected_files(comp);
    let has512 = files.keys().any(|(d, _)| *d == ino::SHA512);
    // Every name resolves, with its size; numbers are unique and are the table's.
    let mut seen = HashMap::new();
    for ((dir, name), size) in &files {
        let a = l
            .lookup(*dir, OsStr::new(name))
            .map_err(|e| TestCaseError::fail(format!("{dir}/{name}: {e}")))?;
        prop_assert_eq!((a.kind, a.size), (Kind::File, *size), "{}/{}", dir, name);
        if let Some(other) = seen.insert(a.ino, name.clone()) {
            prop_assert!(false, "inode {} names {} and {}", a.ino, other, name);
        }
        if *dir != ino::ROOT {
            let digest = Digest::parse(&format!(
                "{}:{name}",
                if *dir == ino::SHA256 {
                    "sha256"
                } else {
                    "sha512"
                }
            ))
            .unwrap();
            prop_assert_eq!(a.ino, inodes.of(&digest));
            prop_assert!(a.ino >= ino::FIRST_BLOB);
        }
    }
    // Directories list exactly the reference, from every offset.
    let mut dirs = vec![
        (ino::ROOT, ino::ROOT, vec!["blobs"]),
        (ino::SHA256, ino::BLOBS, vec![]),
    ];
    dirs.push((
        ino::BLOBS,
        ino::ROOT,
        if has512 {
            vec!["sha256", "sha512"]
        } else {
            vec!["sha256"]
        },
    ));
    if has512 {
        dirs.push((ino::SHA512, ino::BLOBS, vec![]));
    } else {
        prop_assert!(matches!(
            l.lookup(ino::BLOBS, OsStr::new("sha512")),
            Err(FsError::NotFound)
        ));
    }
    for (dir, parent, subdirs) in dirs {
        let want = expected_listing(&files, dir, &subdirs);
        for start in 0..=want.len() {
            let got: Vec<String> = l
                .read_dir(dir, start as u64)
                .unwrap()
                .map(|e| e.name.to_owned())
                .collect();
            prop_assert_eq!(&got[..], &want[start..], "dir {} from {}", dir, start);
        }
        // One entry per call, resuming at each entry's next offset.
        let mut offset = 0;
        let mut got = Vec::new();
        while let Some(e) = l.read_dir(dir, offset).unwrap().next() {
            got.push(e.name.to_owned());
            offset = e.next_offset;
        }
        prop_assert_eq!(got, want);
        prop_assert_eq!(l.lookup(dir, OsStr::new("..")).unwrap().ino, parent);
    }
    // Names that are not there are not found.
    let absent = Digest::sha256_of(b"absent");
    prop_assert!(matches!(
        l.lookup(ino::SHA256, OsStr::new(absent.encoded())),
        Err(FsError::NotFound)
    ));
    prop_assert_eq!(l.file_count(), files.len());
    prop_assert_eq!(l.total_bytes(), files.values().sum::<u64>());
    Ok(())
}

proptest! {
    #![proptest_config(config(CASES_LAYOUT))]

    #[test]
    fn layout_matches_the_reference(spec in sources()) {
        let contribs = contributions(&spec);
        let comp = composed(&contribs);
        let mut inodes = Inodes::default();
        let l = Layout::new(&comp, &mut inodes);
        check_layout(&l, &comp, &mut inodes)?;
        // Rebuilt from the sources in the other order (another index, so
        // other bytes for index.json): every blob keeps its number.
        let before: HashMap<Digest, u64> =
            comp.blobs.iter().map(|b| (b.digest.clone(), inodes.of(&b.digest))).collect();
        let mut reversed = contribs.clone();
        reversed.reverse();
        let comp2 = composed(&reversed);
        let l2 = Layout::new(&comp2, &mut inodes);
        check_layout(&l2, &comp2, &mut inodes)?;
        for (digest, n) in before {
            prop_assert_eq!(inodes.of(&digest), n);
        }
    }
}

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
fn pool(root: &std::path::Path, specs: &[Vec<u8>]) -> Vec<Composition> {
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
fn names(c: &Composition) -> BTreeSet<Digest> {
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

/// A simulated watcher run in virtual time.
#[derive(Debug, Default)]
struct Run {
    /// Events as delivered (the loop's instant after a wait).
    delivered: Vec<Instant>,
    /// Rebuilds: (start, end, failed).
    rebuilds: Vec<(Instant, Instant, bool)>,
    prunes: Vec<Instant>,
}

/// Drives a [`Schedule`] as the watcher does: sleep until its wake time or
/// the next event, deliver events, prune and rebuild when due. Rebuild `i`
/// takes `took[i % len]` ms and fails while `i < failures`.
fn simulate(
    t0: Instant,
    events: &[u64],
    took: &[u64],
    failures: usize,
    initially_failing: bool,
    pruning: bool,
    horizon: Instant,
) -> Run {
    let mut s = Schedule::new(t0, initially_failing);
    let mut run = Run::default();
    let mut pending = events
        .iter()
        .map(|ms| t0 + Duration::from_millis(*ms))
        .peekable();
    let mut now = t0;
    while now < horizon {
        let next_event = pending.peek().copied();
        let Some(wake) = [s.wake_at(pruning), next_event].into_iter().flatten().min() else {
            break;
        };
        now = now.max(wake);
        if pending.peek().is_some_and(|e| *e <= now) {
            while pending.next_if(|e| *e <= now).is_some() {}
            s.event(now);
            run.delivered.push(now);
        }
        let due = s.due(now, pruning);
        if due.prune {
            s.pruned(now);
            run.prunes.push(now);
        }
        if due.rebuild {
            let i = run.rebuilds.len();
            let end = now + Duration::from_millis(took[i % took.len()]);
            let failed = i < failures;
            s.rebuilt(now, end, failed);
            run.rebuilds.push((now, end, failed));
            now = end;
        }
    }
    run
}

proptest! {
    #![proptest_config(config(CASES_SCHEDULE))]

    #[test]
    fn schedule_follows_its_rules(
        mut events in prop::collection::vec(0u64..4000, 0..40),
        took in prop::collection::vec(0u64..400, 1..8),
        failures in 0usize..4,
        initially_failing in any::<bool>(),
        pruning in any::<bool>(),
    ) {
        events.sort_unstable();
        let t0 = Instant::now();
        let horizon = t0 + Duration::from_secs(60);
        let run = simulate(t0, &events, &took, failures, initially_failing, pruning, horizon);
        let gap = |(start, end, _): (Instant, Instant, bool)| MIN_GAP.max((end - start) * 4);
        let r = &run.rebuilds;
        // Never sooner than the gap after the last rebuild.
        for w in r.windows(2) {
            prop_assert!(w[1].0 >= w[0].1 + gap(w[0]), "{:?}", w);
        }
        for (i, &(start, _, _)) in r.iter().enumerate() {
            let prev = i.checked_sub(1).map(|p| r[p]);
            let burst: Vec<Instant> = run.delivered.iter().copied()
                .filter(|e| prev.is_none_or(|p| *e > p.0) && *e <= start).collect();
            let retrying = prev.map_or(initially_failing, |p| p.2);
            // Every rebuild has a reason: events since the last one, or a retry.
            prop_assert!(retrying || !burst.is_empty(), "rebuild {} without a reason", i);
            // A retry comes RETRY after the failure (or when the gap allows).
            if retrying {
                let at = prev.map_or(t0 + RETRY, |p| (p.1 + RETRY).max(p.1 + gap(p)));
                prop_assert!(start <= at, "retry {} late", i);
            } else if let (Some(first), Some(last)) = (burst.first(), burst.last()) {
                // Debounced: not while events keep coming, unless MAX_DELAY passed.
                prop_assert!(start >= (*last + SETTLE).min(*first + MAX_DELAY), "rebuild {} early", i);
            }
        }
        // Every event is followed by a rebuild within MAX_DELAY (or the gap).
        for &e in &run.delivered {
            let last_before = r.iter().rfind(|x| x.1 <= e).copied();
            let bound = last_before.map_or(e + MAX_DELAY, |p| (e + MAX_DELAY).max(p.1 + gap(p)));
            prop_assert!(
                r.iter().any(|x| x.0 >= e && x.0 <= bound),
                "event at {:?} not rebuilt by {:?}", e - t0, bound - t0
            );
        }
        // Pruned every PRUNE_EVERY while pruning (late by a rebuild at most), never otherwise.
        if pruning {
            let slack = Duration::from_millis(*took.iter().max().unwrap_or(&0));
            let mut last = t0;
            for &p in &run.prunes {
                prop_assert!(p >= last + PRUNE_EVERY && p <= last + PRUNE_EVERY + slack);
                last = p;
            }
        } else {
            prop_assert!(run.prunes.is_empty());
        }
    }
}

/// A member for the `tar` crate to write.
#[derive(Debug, Clone)]
struct Entry {
    /// Path components.
    path: Vec<String>,
    kind: u8,
    size: usize,
}

fn entry() -> impl Strategy<Value = Entry> {
    // Components up to 60 characters, up to 4 deep: names past 100 bytes
    // need a ustar prefix, a GNU long name or a pax path.
    let component = "[a-z0-9][a-z0-9._-]{0,59}";
    (
        prop::collection::vec(component, 1..5),
        prop_oneof![6 => Just(b'0'), 1 => Just(b'5'), 1 => Just(b'2')],
        0usize..3000,
    )
        .prop_map(|(path, kind, size)| Entry { path, kind, size })
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Ustar,
    Gnu,
    Pax,
}

fn write_archive(entries: &[Entry], format: Format) -> Option<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (i, e) in entries.iter().enumerate() {
        let path = e.path.join("/");
        let mut h = match format {
            Format::Gnu => tar::Header::new_gnu(),
            Format::Ustar | Format::Pax => tar::Header::new_ustar(),
        };
        let data = vec![i as u8; if e.kind == b'0' { e.size } else { 0 }];
        h.set_entry_type(tar::EntryType::new(e.kind));
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if matches!(format, Format::Pax) && path.len() > 100 {
            b.append_pax_extensions([("path", path.as_bytes())]).ok()?;
        }
        let result = match e.kind {
            b'2' => b.append_link(&mut h, &path, "target"),
            _ => b.append_data(&mut h, &path, &data[..]),
        };
        // ustar cannot hold some long names: the crate refuses, so do we.
        result.ok()?;
    }
    b.into_inner().ok()
}

proptest! {
    #![proptest_config(config(CASES_TAR))]

    #[test]
    fn tar_index_agrees_with_the_tar_crate(
        entries in prop::collection::vec(entry(), 1..12),
        format in prop_oneof![Just(Format::Ustar), Just(Format::Gnu), Just(Format::Pax)],
        cut in any::<prop::sample::Index>(),
    ) {
        let Some(bytes) = write_archive(&entries, format) else {
            return Ok(()); // not expressible in this format
        };
        let write = |b: &[u8]| {
            use std::io::Write;
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(b).unwrap();
            f
        };
        // The reference: the tar crate's entries, last one of a name wins.
        let mut want: HashMap<String, (u64, u64, u8)> = HashMap::new();
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(&bytes[..]);
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().trim_end_matches('/').to_owned();
            let kind = e.header().entry_type().as_byte();
            let size = if kind == b'0' { e.size() } else { 0 };
            names.push(name.clone());
            want.insert(name, (e.raw_file_position(), size, kind));
        }
        let unique: BTreeSet<&String> = names.iter().collect();
        let got = crate::files::tar::index(&write(&bytes));
        if unique.len() < names.len() {
            prop_assert!(matches!(got, Err(crate::files::tar::TarError::Duplicate(_))), "{:?}", got);
        } else {
            let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got.members.len(), want.len());
            for (name, (offset, size, kind)) in &want {
                let m = got.members.get(name)
                    .ok_or_else(|| TestCaseError::fail(format!("{name} missing")))?;
                let kind = match kind {
                    b'5' => crate::files::tar::MemberKind::Dir,
                    b'2' => crate::files::tar::MemberKind::Link,
                    _ => crate::files::tar::MemberKind::File,
                };
                prop_assert_eq!((m.offset, m.size, m.kind), (*offset, *size, kind), "{}", name);
            }
        }
        // Any truncation is refused, never half-indexed.
        let short = cut.index(bytes.len());
        prop_assert!(crate::files::tar::index(&write(&bytes[..short])).is_err(), "cut at {}", short);
    }
}

#[test]
fn the_reference_helpers_are_sound() {
    // Near digests share 60 hex digits and still differ.
    let a = digest_of(false, true, 1);
    let b = digest_of(false, true, 2);
    assert_eq!(a.encoded()[..60], b.encoded()[..60]);
    assert_ne!(a, b);
    assert_eq!(digest_of(true, true, 1).algorithm(), Algorithm::Sha512);
}
