//! The vocabulary: what OCI names and documents are — digests, platforms,
//! documents and their media types, tags, hex — parsed and checked, no I/O.

pub mod digest;
pub mod document;
pub(crate) mod hex;
pub mod platform;
pub mod tag;
