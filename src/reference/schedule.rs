//! [`Schedule`]: the watcher's timing, simulated in virtual time against its
//! rules.

use super::*;

/// A simulated watcher run in virtual time.
#[derive(Debug, Default)]
struct Run {
    /// Events as delivered (the loop's instant after a wait).
    delivered: Vec<Instant>,
    /// Rebuilds: (start, end, failed).
    rebuilds: Vec<(Instant, Instant, bool)>,
    prunes: Vec<Instant>,
}

/// Drives a [`Schedule`] as the watcher does: sleep until its wake time or
/// the next event, deliver events, prune and rebuild when due. Rebuild `i`
/// takes `took[i % len]` ms and fails while `i < failures`.
fn simulate(
    t0: Instant,
    events: &[u64],
    took: &[u64],
    failures: usize,
    initially_failing: bool,
    pruning: bool,
    horizon: Instant,
) -> Run {
    let mut s = Schedule::new(t0, initially_failing);
    let mut run = Run::default();
    let mut pending = events
        .iter()
        .map(|ms| t0 + Duration::from_millis(*ms))
        .peekable();
    let mut now = t0;
    while now < horizon {
        let next_event = pending.peek().copied();
        let Some(wake) = [s.wake_at(pruning), next_event].into_iter().flatten().min() else {
            break;
        };
        now = now.max(wake);
        if pending.peek().is_some_and(|e| *e <= now) {
            while pending.next_if(|e| *e <= now).is_some() {}
            s.event(now);
            run.delivered.push(now);
        }
        let due = s.due(now, pruning);
        if due.prune {
            s.pruned(now);
            run.prunes.push(now);
        }
        if due.rebuild {
            let i = run.rebuilds.len();
            let end = now + Duration::from_millis(took[i % took.len()]);
            let failed = i < failures;
            s.rebuilt(now, end, failed);
            run.rebuilds.push((now, end, failed));
            now = end;
        }
    }
    run
}

proptest! {
    #![proptest_config(config(CASES_SCHEDULE))]

    #[test]
    fn schedule_follows_its_rules(
        mut events in prop::collection::vec(0u64..4000, 0..40),
        took in prop::collection::vec(0u64..400, 1..8),
        failures in 0usize..4,
        initially_failing in any::<bool>(),
        pruning in any::<bool>(),
    ) {
        events.sort_unstable();
        let t0 = Instant::now();
        let horizon = t0 + Duration::from_secs(60);
        let run = simulate(t0, &events, &took, failures, initially_failing, pruning, horizon);
        let gap = |(start, end, _): (Instant, Instant, bool)| MIN_GAP.max((end - start) * 4);
        let r = &run.rebuilds;
        // Never sooner than the gap after the last rebuild.
        for w in r.windows(2) {
            prop_assert!(w[1].0 >= w[0].1 + gap(w[0]), "{:?}", w);
        }
        for (i, &(start, _, _)) in r.iter().enumerate() {
            let prev = i.checked_sub(1).map(|p| r[p]);
            let burst: Vec<Instant> = run.delivered.iter().copied()
                .filter(|e| prev.is_none_or(|p| *e > p.0) && *e <= start).collect();
            let retrying = prev.map_or(initially_failing, |p| p.2);
            // Every rebuild has a reason: events since the last one, or a retry.
            prop_assert!(retrying || !burst.is_empty(), "rebuild {} without a reason", i);
            // A retry comes RETRY after the failure (or when the gap allows).
            if retrying {
                let at = prev.map_or(t0 + RETRY, |p| (p.1 + RETRY).max(p.1 + gap(p)));
                prop_assert!(start <= at, "retry {} late", i);
            } else if let (Some(first), Some(last)) = (burst.first(), burst.last()) {
                // Debounced: not while events keep coming, unless MAX_DELAY passed.
                prop_assert!(start >= (*last + SETTLE).min(*first + MAX_DELAY), "rebuild {} early", i);
            }
        }
        // Every event is followed by a rebuild within MAX_DELAY (or the gap).
        for &e in &run.delivered {
            let last_before = r.iter().rfind(|x| x.1 <= e).copied();
            let bound = last_before.map_or(e + MAX_DELAY, |p| (e + MAX_DELAY).max(p.1 + gap(p)));
            prop_assert!(
                r.iter().any(|x| x.0 >= e && x.0 <= bound),
                "event at {:?} not rebuilt by {:?}", e - t0, bound - t0
            );
        }
        // Pruned every PRUNE_EVERY while pruning (late by a rebuild at most), never otherwise.
        if pruning {
            let slack = Duration::from_millis(*took.iter().max().unwrap_or(&0));
            let mut last = t0;
            for &p in &run.prunes {
                prop_assert!(p >= last + PRUNE_EVERY && p <= last + PRUNE_EVERY + slack);
                last = p;
            }
        } else {
            prop_assert!(run.prunes.is_empty());
        }
    }
}
