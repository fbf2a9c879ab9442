//! From sources to what is served: the validated plan, composing the
//! image index, the virtual layout, its generations (swapped as sources
//! change), the watcher and its schedule.

pub mod plan;
pub mod index;
pub(crate) mod layout;
pub(crate) mod generations;
pub(crate) mod schedule;
pub(crate) mod watch;
