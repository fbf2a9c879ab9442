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

mod generations;
mod layout;
mod operations;
mod schedule;
mod tar_index;

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
                image_size: manifest.size,
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

#[test]
fn the_reference_helpers_are_sound() {
    // Near digests share 60 hex digits and still differ.
    let a = digest_of(false, true, 1);
    let b = digest_of(false, true, 2);
    assert_eq!(a.encoded()[..60], b.encoded()[..60]);
    assert_ne!(a, b);
    assert_eq!(digest_of(true, true, 1).algorithm(), Algorithm::Sha512);
}
