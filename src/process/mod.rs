//! What every ocimux process shares: exit codes and stop signals
//! (`lifecycle`), running a command beside a mount or server (`scoped`),
//! the state file each daemon keeps for `ocimux status` (`state`), and the
//! system log a detached daemon without a log file writes to (`syslog`).

pub mod lifecycle;
pub mod scoped;
pub mod state;
pub mod syslog;
