//! What the server has answered, counted as answers end: requests and body
//! bytes by route and status, requests in flight, and blobs waiting to be
//! hashed. Read by `ocimux status` and the metrics endpoint.
//!
//! Bounded and lock-free: a fixed table of counters, one per route label
//! ([`super::route::LABELS`]) and status ([`STATUSES`], the rest counted as
//! `other`), so nothing a client sends grows it and no request waits for
//! another to count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::route::LABELS;

/// The statuses counted each on its own (what the server answers); any
/// other is counted as `other`.
pub const STATUSES: [u16; 13] = [
    200, 206, 304, 400, 401, 403, 404, 405, 413, 416, 429, 500, 503,
];

/// Requests and body bytes of one route and status.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Requests answered.
    pub requests: u64,
    /// Body bytes the HTTP layer took.
    pub bytes: u64,
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Body bytes the HTTP layer took.
    pub bytes_sent: AtomicU64,
    /// Requests being answered now.
    pub in_flight: AtomicU64,
    /// Requests waiting for a hashing slot.
    pub hashing_waiting: AtomicU64,
    /// Blobs being hashed now.
    pub hashing_running: AtomicU64,
    /// Requests and bytes per route label and status (the last: other).
    table: [[(AtomicU64, AtomicU64); STATUSES.len() + 1]; LABELS.len()],
}

/// The label of status slot `i`: the code, or `other`.
fn status_label(i: usize) -> String {
    STATUSES
        .get(i)
        .map_or_else(|| "other".to_owned(), u16::to_string)
}

impl Traffic {
    /// Counts a request in flight until the guard is dropped (answered, or
    /// abandoned by its client before the answer).
    pub fn begin(self: &Arc<Self>) -> Answering {
        self.in_flight.fetch_add(1, Relaxed);
        Answering(self.clone())
    }

    /// Requests and bytes by route label and status, those seen only, in
    /// route then status order.
    pub fn by_route(&self) -> Vec<((&'static str, String), Counts)> {
        let mut out = Vec::new();
        for (route, row) in LABELS.iter().zip(&self.table) {
            for (i, (requests, bytes)) in row.iter().enumerate() {
                let c = Counts {
                    requests: requests.load(Relaxed),
                    bytes: bytes.load(Relaxed),
                };
                if c.requests > 0 {
                    out.push(((*route, status_label(i)), c));
                }
            }
        }
        out
    }

    /// Counts one request waiting for a hashing slot until the guard is
    /// dropped; [`Hashing::running`] moves it to the running ones.
    pub fn hashing(self: &Arc<Self>) -> Hashing {
        self.hashing_waiting.fetch_add(1, Relaxed);
        Hashing {
            traffic: self.clone(),
            running: false,
        }
    }
}

/// A request in flight (see [`Traffic::begin`]).
#[derive(Debug)]
pub struct Answering(Arc<Traffic>);

impl Answering {
    /// The request to `route` was answered `status` with `sent` body bytes.
    pub fn answered(&self, route: &'static str, status: u16, sent: u64) {
        let t = &self.0;
        t.requests.fetch_add(1, Relaxed);
        t.bytes_sent.fetch_add(sent, Relaxed);
        let r = LABELS.iter().position(|l| *l == route);
        let s = STATUSES.iter().position(|c| *c == status);
        let slot = r.and_then(|r| t.table.get(r)?.get(s.unwrap_or(STATUSES.len())));
        if let Some((requests, bytes)) = slot {
            requests.fetch_add(1, Relaxed);
            bytes.fetch_add(sent, Relaxed);
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// A blob's hash an answer waits for (see [`Traffic::hashing`]).
#[derive(Debug)]
pub struct Hashing {
    traffic: Arc<Traffic>,
    running: bool,
}

impl Hashing {
    /// It got its slot: counted as running, no longer waiting.
    pub fn running(&mut self) {
        if !self.running {
            self.running = true;
            self.traffic.hashing_waiting.fetch_sub(1, Relaxed);
            self.traffic.hashing_running.fetch_add(1, Relaxed);
        }
    }
}

impl Drop for Hashing {
    fn drop(&mut self) {
        let t = &self.traffic;
        match self.running {
            true => t.hashing_running.fetch_sub(1, Relaxed),
            false => t.hashing_waiting.fetch_sub(1, Relaxed),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_and_gauges_return_to_zero() {
        let t = Arc::new(Traffic::default());
        let steps: [(&'static str, u16, u64); 5] = [
            ("blobs", 200, 10),
            ("blobs", 200, 5),
            ("blobs", 404, 0),
            ("manifests", 200, 7),
            ("manifests", 418, 1),
        ];
        for (route, status, sent) in steps {
            let a = t.begin();
            assert_eq!(t.in_flight.load(Relaxed), 1);
            a.answered(route, status, sent);
        }
        assert_eq!(t.in_flight.load(Relaxed), 0);
        assert_eq!(t.requests.load(Relaxed), 5);
        assert_eq!(t.bytes_sent.load(Relaxed), 23);
        let counts = |requests, bytes| Counts { requests, bytes };
        let want = vec![
            (("manifests", "200".to_owned()), counts(1, 7)),
            (("manifests", "other".to_owned()), counts(1, 1)),
            (("blobs", "200".to_owned()), counts(2, 15)),
            (("blobs", "404".to_owned()), counts(1, 0)),
        ];
        assert_eq!(t.by_route(), want);
        let mut h = t.hashing();
        let waiting = t.hashing();
        assert_eq!(t.hashing_waiting.load(Relaxed), 2);
        h.running();
        h.running();
        assert_eq!(t.hashing_waiting.load(Relaxed), 1);
        assert_eq!(t.hashing_running.load(Relaxed), 1);
        drop((h, waiting));
        assert_eq!(t.hashing_waiting.load(Relaxed), 0);
        assert_eq!(t.hashing_running.load(Relaxed), 0);
    }
}
