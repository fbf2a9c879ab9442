//! ocimux: per-architecture OCI image layouts served as one virtual multi-arch
//! layout over FUSE, without copying a single blob.
//!
//! The crate is split into folders in the order the data flows; a module
//! imports only from folders above it in this list:
//! - [`oci`]: the vocabulary — [`oci::digest`], [`oci::platform`],
//!   [`oci::document`], [`oci::tag`] — parsed strictly, each with its own error;
//! - [`files`]: files as an untrusted source offers them — `confine` (opens
//!   confined beneath a source's root, never blocking) over `chain` (the
//!   permission chain, who had a say in a path) and `acl`; `readat` (the one
//!   positional-read loop); `tar` (indexing archives served in place);
//!   [`files::lease`] (the read lease a hash stands on); [`files::mountinfo`];
//!   `sys` (every `unsafe` block of the crate, behind safe functions);
//! - [`error`]: the library's errors, and `FsError`'s one mapping to errno;
//! - [`process`]: what every process shares — [`process::lifecycle`] (exit
//!   codes, each error type giving its own; stop signals; the open-file
//!   limit) and [`process::scoped`] (`… -- CMD`);
//! - [`source`]: reads one source and computes what it contributes,
//!   validating as it goes;
//! - [`snapshot`]: [`snapshot::plan`] (what to compose), [`snapshot::index`]
//!   (the image index and `index.json`), `layout` (the immutable virtual tree,
//!   no FUSE types), `generations` (the current snapshot and those it
//!   replaced), `watch` and `schedule` (rebuilding when sources change);
//! - `blob`: opening a blob's bytes and proving them (`verify`, the
//!   `hashpool` that hashes off request threads);
//! - [`mount`]: the FUSE front end — `handles` and `fs` (the thin `fuser`
//!   adapter), [`mount::options`], [`mount::fstab`], [`mount::mountpoint`]
//!   (claiming, the watchdog), `attach`, `ownmount` (a mount known by what only
//!   its daemon holds), `gone` (a stop ends the service everywhere),
//!   [`mount::daemon`];
//! - [`serve`]: the same snapshots over the OCI distribution API (pull side);
//! - [`export`]: writing the layout out (its `staging` directory);
//! - [`report`]: [`report::check`] (`verify`) and [`report::inspect`];
//! - `testing`: layouts built in code for tests, and the fuzz targets' entries
//!   (compiled only for tests and under the `testing` feature, which the
//!   integration tests and the fuzz targets turn on).
//!
//! The binary (`main.rs`, `cli.rs`, `commands.rs`, `failure.rs`,
//! `logging.rs`) parses, validates and reports.
//!
//! Modules in code spans are `pub(crate)`: only the CLI's needs (and the
//! vocabulary the tests build inputs with) are public, so the compiler
//! reports what nothing uses.
#![deny(missing_docs, missing_debug_implementations, unsafe_code)]

// Folders in the order data flows, each imported only by those after it:
// the shared-table primitives, the OCI vocabulary, files as a source offers them, the library's errors
// (which name both), process facts (exit codes, signals), sources,
// snapshots, blobs, then the front ends.
pub(crate) mod sync;
pub mod human;
pub mod oci;
pub mod files;
pub mod error;
pub mod process;
pub mod source;
pub mod snapshot;
pub(crate) mod blob;
pub mod mount;
pub mod serve;
pub mod export;
pub mod report;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod reference;

pub use error::{Error, Problem};
