//! When the watcher rebuilds and prunes: a pure state machine over instants,
//! so its timing is tested without threads, sleeps or inotify.
//!
//! Rules (the watcher's module documents why):
//! - a burst of source events is rebuilt after [`SETTLE`] of quiet, or
//!   [`MAX_DELAY`] after its first event if events keep coming;
//! - while the sources do not compose, a rebuild is retried every [`RETRY`];
//! - no rebuild starts sooner than [`MIN_GAP`], nor sooner than 4× the last
//!   rebuild's duration, after the last one ended;
//! - retired snapshots are pruned every [`PRUNE_EVERY`] while there are any.
//!
//! The watcher asks [`Schedule::wake_at`] how long it may sleep, reports what
//! happened ([`Schedule::event`], [`Schedule::rebuilt`], [`Schedule::pruned`])
//! and asks [`Schedule::due`] what to do now.

use std::time::{Duration, Instant};

/// Quiet time after the last event before rebuilding.
pub const SETTLE: Duration = Duration::from_millis(100);
/// Rebuild at least this often while events keep coming.
pub const MAX_DELAY: Duration = Duration::from_millis(500);
/// Retry interval while the sources do not compose.
pub const RETRY: Duration = Duration::from_millis(500);
/// How often retired snapshots are pruned while there are any.
pub const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// A rebuild starts at least this long after the last one ended, and at
/// least 4 times as long as that one took: a source rewritten in a tight
/// loop costs at most a fifth of one CPU.
pub const MIN_GAP: Duration = Duration::from_millis(200);

/// What is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Due {
    /// Prune retired snapshots.
    pub prune: bool,
    /// Rebuild from the sources.
    pub rebuild: bool,
}

/// The watcher's timers.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The pending burst: (quiet until, its first event).
    burst: Option<(Instant, Instant)>,
    /// When to retry a failed rebuild.
    retry_at: Option<Instant>,
    /// The next prune, while there are retired snapshots.
    prune_at: Instant,
    /// No rebuild starts before this.
    next_allowed: Instant,
}

impl Schedule {
    /// The timers at `now`; `failing` when the sources do not compose yet.
    pub fn new(now: Instant, failing: bool) -> Self {
        Schedule {
            burst: None,
            retry_at: failing.then(|| now + RETRY),
            prune_at: now + PRUNE_EVERY,
            next_allowed: now,
        }
    }

    /// When the next rebuild is due, if one is.
    fn rebuild_at(&self) -> Option<Instant> {
        let burst = self
            .burst
            .map(|(quiet, first)| quiet.min(first + MAX_DELAY));
        [burst, self.retry_at]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.max(self.next_allowed))
    }

    /// Until when the watcher may sleep waiting for events (`None`: until
    /// one comes); `pruning` while retired snapshots are kept.
    pub fn wake_at(&self, pruning: bool) -> Option<Instant> {
        let prune = pruning.then_some(self.prune_at);
        [self.rebuild_at(), prune].into_iter().flatten().min()
    }

    /// A relevant source event arrived at `now`.
    pub fn event(&mut self, now: Instant) {
        let first = self.burst.map_or(now, |(_, first)| first);
        self.burst = Some((now + SETTLE, first));
    }

    /// What is due at `now`.
    pub fn due(&self, now: Instant, pruning: bool) -> Due {
        Due {
            prune: pruning && now >= self.prune_at,
            rebuild: self.rebuild_at().is_some_and(|t| now >= t),
        }
    }

    /// Pruned at `now`.
    pub fn pruned(&mut self, now: Instant) {
        self.prune_at = now + PRUNE_EVERY;
    }

    /// A rebuild ran from `started` to `ended`; `failed` when the sources did
    /// not compose. Events during it start a new burst (they are not lost).
    pub fn rebuilt(&mut self, started: Instant, ended: Instant, failed: bool) {
        if self.burst.is_some_and(|(_, first)| first <= started) {
            self.burst = None;
        }
        let took = ended.saturating_duration_since(started);
        self.next_allowed = ended + MIN_GAP.max(took * 4);
        self.retry_at = failed.then(|| ended + RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn timing_table() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, false);
        assert_eq!(s.wake_at(false), None, "idle: sleep until an event");
        assert_eq!(s.wake_at(true), Some(t0 + PRUNE_EVERY));
        s.event(t0 + ms(10));
        assert_eq!(s.wake_at(false), Some(t0 + ms(110)));
        assert!(!s.due(t0 + ms(109), false).rebuild);
        assert!(s.due(t0 + ms(110), false).rebuild);
        // Events every 50 ms: rebuilt MAX_DELAY after the first.
        for k in 1..20 {
            s.event(t0 + ms(10 + 50 * k));
        }
        assert_eq!(s.wake_at(false), Some(t0 + ms(510)));
        // A rebuild of 100 ms: the next starts no sooner than 400 ms after it.
        s.rebuilt(t0 + ms(510), t0 + ms(610), false);
        s.event(t0 + ms(1000));
        assert_eq!(s.wake_at(false), Some(t0 + ms(1100)));
        let mut s2 = Schedule::new(t0, false);
        s2.event(t0);
        s2.rebuilt(t0 + ms(100), t0 + ms(200), false);
        s2.event(t0 + ms(210));
        assert_eq!(s2.wake_at(false), Some(t0 + ms(600)), "4x the last rebuild");
        // Failing: retried every RETRY after the failure.
        let mut f = Schedule::new(t0, true);
        assert_eq!(f.wake_at(false), Some(t0 + RETRY));
        f.rebuilt(t0 + RETRY, t0 + RETRY + ms(1), true);
        assert_eq!(f.wake_at(false), Some(t0 + RETRY + ms(1) + RETRY));
        f.rebuilt(t0 + ms(2000), t0 + ms(2001), false);
        assert_eq!(f.wake_at(false), None);
        // Pruning.
        assert!(f.due(t0 + PRUNE_EVERY, true).prune);
        assert!(!f.due(t0 + PRUNE_EVERY, false).prune);
        f.pruned(t0 + PRUNE_EVERY);
        assert_eq!(f.wake_at(true), Some(t0 + PRUNE_EVERY * 2));
    }
}
