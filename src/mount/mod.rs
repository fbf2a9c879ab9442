//! The FUSE front end and its process: the `fuser` adapter and its open
//! handles, the daemon, its `-o` options and fstab form, the mountpoint, the
//! mount's identity and the stop that ends it everywhere.

pub(crate) mod handles;
pub(crate) mod fs;
pub mod options;
pub mod fstab;
pub mod mountpoint;
pub(crate) mod attach;
pub mod ownmount;
pub(crate) mod gone;
pub(crate) mod status;
pub mod daemon;
