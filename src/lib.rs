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

pub(crate) mod acl;
pub(crate) mod attach;
pub(crate) mod blob;
pub(crate) mod chain;
pub mod check;
pub(crate) mod confine;
pub mod daemon;
pub mod digest;
pub mod document;
pub mod error;
pub mod export;
pub(crate) mod fs;
pub mod fstab;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod generations;
pub(crate) mod gone;
pub(crate) mod handles;
pub(crate) mod hashpool;
pub(crate) mod hex;
pub mod index;
pub mod inspect;
pub(crate) mod layout;
pub mod lease;
pub mod lifecycle;
pub mod mountinfo;
pub mod mountpoint;
pub mod options;
pub(crate) mod ownmount;
pub mod plan;
pub mod platform;
pub(crate) mod readat;
#[cfg(test)]
mod reference;
pub(crate) mod schedule;
pub mod scoped;
pub mod serve;
pub mod source;
pub(crate) mod staging;
pub mod tag;
pub(crate) mod tar;
#[doc(hidden)]
pub mod testutil;
pub(crate) mod verify;
pub(crate) mod watch;

pub use error::{Error, Problem};
