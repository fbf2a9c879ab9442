//! What every ocimux process shares: exit codes and stop signals
//! (`lifecycle`), and running a command beside a mount or server (`scoped`).

pub mod lifecycle;
pub mod scoped;
