//! Reading a layout for people and scripts: `verify` (every blob hashed)
//! and `inspect`.

pub mod check;
pub mod inspect;
