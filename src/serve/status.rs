//! What a server's process says about itself in its state file (see
//! [`crate::process::state`]): its URL, each repository's tags with the
//! index each serves, when it was built and whether newer sources fail to
//! compose, and what it has answered.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::api::Registry;
use super::traffic::Traffic;
use crate::process::state::{StateFile, start_time, unix};

/// Keeps this server's state file written for its life; a server that
/// cannot write one still serves (said once).
/// `urls`: the server's, and its metrics' (`--metrics`).
pub fn keep(urls: [Option<String>; 2], registry: Arc<Registry>, traffic: Arc<Traffic>) {
    let started = unix(SystemTime::now());
    let gather = move || gather(&urls, started, &registry, &traffic);
    if let Err(e) = StateFile::create().and_then(|f| f.keep_written(gather)) {
        log::warn!("no state file for ocimux status: {e}");
    }
}

fn gather(
    urls: &[Option<String>; 2],
    started: u64,
    registry: &Registry,
    traffic: &Traffic,
) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let pid = std::process::id();
    let repositories: Vec<Value> = registry
        .repositories()
        .iter()
        .map(|repo| {
            let tags: Vec<Value> = repo
                .tag_snapshots()
                .iter()
                .map(|(tag, g)| {
                    let mut t = g.report();
                    t.insert("tag".into(), tag.as_str().into());
                    Value::Object(t)
                })
                .collect();
            json!({ "name": repo.name, "tags": tags })
        })
        .collect();
    json!({
        "kind": "serve",
        "pid": pid,
        "start": i32::try_from(pid).ok().and_then(start_time),
        "started": started,
        "url": urls[0],
        "metrics": urls[1],
        "repositories": repositories,
        "requests": traffic.requests.load(Relaxed),
        "bytes_sent": traffic.bytes_sent.load(Relaxed),
        "in_flight": traffic.in_flight.load(Relaxed),
    })
}
