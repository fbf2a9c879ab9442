//! The access log: one line per request, written when its answer is done
//! (the body sent, failed or dropped), with the bytes the HTTP layer took
//! of the body (what docker-registry logs as `http.response.written`), not
//! the length announced, and the time to the last byte.
//!
//! Logged at info under the target `access` (shown by default; `-q` hides
//! it), with key-values (`--log-format json` writes them as fields). The
//! path is the client's: quoted, control characters escaped by the logger.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The log target of access lines.
pub const TARGET: &str = "access";

/// A request being answered.
#[derive(Debug)]
pub struct Entry {
    /// Who asked.
    pub peer: SocketAddr,
    /// The method, as sent.
    pub method: String,
    /// The path, as sent.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// The body's announced length, if any.
    pub length: Option<u64>,
    /// When the request arrived.
    pub started: Instant,
}

impl Entry {
    /// Logs the request, `sent` bytes of its body taken by the HTTP layer.
    pub fn done(&self, sent: u64) {
        // -q: nothing to format.
        if !log::log_enabled!(target: TARGET, log::Level::Info) {
            return;
        }
        let took = self.started.elapsed();
        let complete = self.length.is_none_or(|l| l == sent);
        log::info!(
            target: TARGET,
            peer = self.peer.to_string().as_str(),
            method = self.method.as_str(),
            path = self.path.as_str(),
            status = u64::from(self.status),
            written = sent,
            length = self.length.unwrap_or(sent),
            complete = complete,
            seconds = took.as_secs_f64();
            "{}", line(self, sent, took)
        );
    }
}

/// `PEER "METHOD PATH" STATUS WRITTEN[/LENGTH] TIME`: the length only when
/// the body was cut short.
fn line(e: &Entry, sent: u64, took: Duration) -> String {
    let length = match e.length {
        Some(l) if l != sent => format!("/{l}"),
        _ => String::new(),
    };
    format!(
        "{} \"{} {}\" {} {sent}{length} {took:.1?}",
        e.peer, e.method, e.path, e.status
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_what_was_written() {
        let e = |length| Entry {
            peer: SocketAddr::from(([127, 0, 0, 1], 4242)),
            method: "GET".into(),
            path: "/v2/a/blobs/x".into(),
            status: 200,
            length,
            started: Instant::now(),
        };
        let took = Duration::from_millis(1500);
        let cases = [
            (Some(268_435_456), 1000, "200 1000/268435456 1.5s"),
            (Some(1000), 1000, "200 1000 1.5s"),
            (None, 0, "200 0 1.5s"),
        ];
        for (length, sent, want) in cases {
            let got = line(&e(length), sent, took);
            assert!(got.ends_with(want), "{got}");
            assert!(got.starts_with("127.0.0.1:4242 \"GET /v2/a/blobs/x\""));
        }
    }
}
