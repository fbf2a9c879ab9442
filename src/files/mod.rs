//! Files as an untrusted source offers them: confined opens and the
//! permission chain (`chain`, `confine`, `acl`), positional reads (`readat`),
//! tar indexing, read leases, and the mount table. Nothing here knows OCI.

pub(crate) mod sys;
pub(crate) mod readat;
pub(crate) mod acl;
pub(crate) mod chain;
pub(crate) mod confine;
pub mod lease;
pub(crate) mod tar;
pub mod mountinfo;
