//! The integration tests, one binary: real mounts of the built `ocimux`
//! binary, checked from outside with read(2), mmap(2), skopeo, umoci and a
//! registry. Shared helpers are in `common`; each module is one concern.

mod common;

mod bad_input;
mod bounds;
mod checked_then_used;
mod clients;
mod guide;
mod hostile_sources;
mod identity_and_writers;
mod layer;
mod lifecycle;
mod live;
mod mount;
mod reach;
mod readpath;
mod registry;
mod serve;
mod status;
mod tar;
mod yocto;
