//! ocimux: per-architecture OCI image layouts served as one virtual multi-arch
//! layout over FUSE, without copying a single blob.
//!
//! The crate is split the way the data flows:
//! - [`digest`], [`platform`], [`document`], [`tag`]: the OCI vocabulary, parsed
//!   strictly, each with its own error type;
//! - `confine`: opens a source's files confined beneath its root, never blocking;
//! - [`source`]: reads one source layout and computes what it contributes
//!   (a platform manifest and every blob reachable from it), validating as it
//!   goes; `readat`: the one positional-read loop;
//! - [`index`]: generates the image index and `index.json` bytes;
//! - `layout`: the immutable snapshot of the virtual tree (inodes, directories,
//!   where each file's bytes come from), with no FUSE types; `generations`:
//!   the current snapshot and the recent ones it replaced;
//! - [`plan`] and `watch`: what to compose, and rebuilding when sources change
//!   (`schedule`: when, as a pure state machine);
//! - `tar`: indexing uncompressed tar archives, served in place;
//! - `verify`: `--verify`, hashing each blob version once before serving it;
//!   [`lease`]: the read lease a hash stands on (no writer can change the
//!   bytes unseen);
//! - `handles`: what open files hold and how their bytes are read (no FUSE types);
//! - `fs`: the thin `fuser` adapter that answers kernel requests from a snapshot;
//! - [`lifecycle`]: exit codes (each error type gives its own), stop signals,
//!   the open-file limit, shared by every process; nothing here names a front
//!   end (the binary's `Failure` does);
//! - [`daemon`]: running a mount, detaching and signals; [`options`]: the
//!   `-o` options; [`mountpoint`]: claiming, unmounting only our own mount,
//!   the watchdog that outlives a killed daemon; `attach`: root's mount on
//!   the claimed directory's fd; `ownmount`: a mount known by what only its
//!   daemon holds, unmounted through the directory it is in (and the
//!   fusermount3 and fusectl paths); `gone`: the
//!   service stops in every namespace once the mount leaves the daemon's;
//!   [`scoped`]: `mount … -- CMD`; [`fstab`]: the mount(8) command line;
//! - [`serve`]: the same snapshots over the OCI distribution API (pull side);
//! - [`export`], [`check`], [`inspect`]: writing the layout out, hashing
//!   every blob, and describing it, for machines and scripts without FUSE.
//!
//! Modules in code spans are `pub(crate)`: only the CLI's needs (and the
//! vocabulary the tests build inputs with) are public, so the compiler
//! reports what nothing uses.
#![deny(missing_docs, missing_debug_implementations, unsafe_code)]

// Folders in the order data flows, each imported only by those after it:
// the OCI vocabulary, files as a source offers them, the library's errors
// (which name both), process facts (exit codes, signals), sources,
// snapshots, blobs, then the front ends. Each module is also reachable by its
// short name (`crate::digest`, …) through the re-exports below.
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
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod reference;

pub(crate) use blob::hashpool;
pub(crate) use blob::verify;
pub(crate) use export::staging;
pub(crate) use files::acl;
pub(crate) use files::chain;
pub(crate) use files::confine;
pub use files::lease;
pub use files::mountinfo;
pub(crate) use files::readat;
pub(crate) use files::tar;
pub(crate) use mount::attach;
pub use mount::daemon;
pub(crate) use mount::fs;
pub use mount::fstab;
pub(crate) use mount::gone;
pub(crate) use mount::handles;
pub use mount::mountpoint;
pub use mount::options;
pub(crate) use mount::ownmount;
pub use oci::digest;
pub use oci::document;
pub(crate) use oci::hex;
pub use oci::platform;
pub use oci::tag;
pub use process::lifecycle;
pub use process::scoped;
pub use report::check;
pub use report::inspect;
pub(crate) use snapshot::generations;
pub use snapshot::index;
pub(crate) use snapshot::layout;
pub use snapshot::plan;
pub(crate) use snapshot::schedule;
pub(crate) use snapshot::watch;
#[doc(hidden)]
pub use testing::fuzzing;
#[doc(hidden)]
pub use testing::testutil;

pub use error::{Error, Problem};
