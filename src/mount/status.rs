//! What a mount's daemon says about itself in its state file (see
//! [`crate::process::state`]): where it is mounted, from which sources, the
//! index it serves and when that snapshot was built, why newer sources do
//! not compose (and since when), open files and what the daemon read.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::mount::fs::Drain;
use crate::mount::ownmount::Identity;
use crate::process::state::{StateFile, start_time, unix};
use crate::snapshot::generations::Generations;

/// What one mount says now.
pub(crate) struct MountState {
    pub mountpoint: String,
    pub sources: Vec<String>,
    pub identity: Option<Identity>,
    pub snapshots: Arc<Generations>,
    pub drain: Drain,
    pub started: SystemTime,
}

impl MountState {
    fn gather(&self) -> Value {
        let pid = std::process::id();
        let (read_bytes, passthrough_opens, daemon_opens) = self.drain.served();
        let mut v = json!({
            "kind": "mount",
            "pid": pid,
            "start": i32::try_from(pid).ok().and_then(start_time),
            "started": unix(self.started),
            "mountpoint": self.mountpoint,
            "sources": self.sources,
            "mount_id": self.identity.map(|i| i.unique),
            "open_files": self.drain.open_files(),
            "daemon_read_bytes": read_bytes,
            "passthrough_opens": passthrough_opens,
            "daemon_opens": daemon_opens,
        });
        if let Some(m) = v.as_object_mut() {
            m.extend(self.snapshots.report());
        }
        v
    }

    /// Keeps this daemon's state file written for its life; a daemon that
    /// cannot write one still serves (said once).
    pub fn keep(self) {
        let kept = StateFile::create().and_then(|f| f.keep_written(move || self.gather()));
        if let Err(e) = kept {
            log::warn!("no state file for ocimux status: {e}");
        }
    }
}
