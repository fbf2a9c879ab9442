//! What the server has answered, counted as answers end: requests and body
//! bytes by route and status, requests in flight, and blobs waiting to be
//! hashed. Read by `ocimux status` and the metrics endpoint.
//!
//! Bounded: a route is one of [`super::route::label`]'s fixed labels and a
//! status one of the few the server answers, so the table cannot grow with
//! what clients send. Its lock is held only to add to a counter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

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
    by_route: Mutex<BTreeMap<(&'static str, u16), Counts>>,
}

impl Traffic {
    /// Counts a request in flight until the guard is dropped (answered, or
    /// abandoned by its client before the answer).
    pub fn begin(self: &Arc<Self>) -> Answering {
        self.in_flight.fetch_add(1, Relaxed);
        Answering(self.clone())
    }

    /// Requests and bytes by route label and status, in order.
    pub fn by_route(&self) -> Vec<((&'static str, u16), Counts)> {
        let table = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        table.iter().map(|(k, v)| (*k, *v)).collect()
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
        let mut table = t.by_route.lock().unwrap_or_else(|p| p.into_inner());
        let c = table.entry((route, status)).or_default();
        c.requests += 1;
        c.bytes = c.bytes.saturating_add(sent);
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
        let steps: [(&'static str, u16, u64); 4] = [
            ("blobs", 200, 10),
            ("blobs", 200, 5),
            ("blobs", 404, 0),
            ("manifests", 200, 7),
        ];
        for (route, status, sent) in steps {
            let a = t.begin();
            assert_eq!(t.in_flight.load(Relaxed), 1);
            a.answered(route, status, sent);
        }
        assert_eq!(t.in_flight.load(Relaxed), 0);
        assert_eq!(t.requests.load(Relaxed), 4);
        assert_eq!(t.bytes_sent.load(Relaxed), 22);
        let want = vec![
            (
                ("blobs", 200),
                Counts {
                    requests: 2,
                    bytes: 15,
                },
            ),
            (
                ("blobs", 404),
                Counts {
                    requests: 1,
                    bytes: 0,
                },
            ),
            (
                ("manifests", 200),
                Counts {
                    requests: 1,
                    bytes: 7,
                },
            ),
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
