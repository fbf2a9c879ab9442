//! What every ocimux process shares: exit codes and stop signals
//! (`lifecycle`), running a command beside a mount or server (`scoped`),
//! and the state file each daemon keeps for `ocimux status` (`state`).

pub mod lifecycle;
pub mod scoped;
pub mod state;
