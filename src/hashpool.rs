//! Hashing off the FUSE request threads: a small, bounded pool.
//!
//! An open that must hash first (a file replaced since the snapshot, or any
//! blob under `--verify`) could take seconds to minutes (a 12 GiB sparse
//! layer costs nothing on disk). Done in the request handler, a few such
//! opens hold every request thread and the whole mount stops answering. So
//! the handler hands the open to this pool and returns; the pool answers the
//! open when the hash ends, while the request threads keep serving.
//!
//! Bounded: [`THREADS`] threads (started at the first job) and a queue of
//! [`QUEUE`] waiting jobs; a job offered to a full queue is refused at once
//! (its open fails with EAGAIN), so no client can grow it.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};

/// Hashing threads.
pub(crate) const THREADS: usize = 2;
/// Jobs that may wait for a thread.
pub(crate) const QUEUE: usize = 64;

/// A job: called with `true` to do its work, or `false` when it was refused
/// (then it only answers its request with an error).
pub(crate) type Job = Box<dyn FnOnce(bool) + Send>;

/// The pool.
#[derive(Debug, Default)]
pub(crate) struct HashPool {
    tx: OnceLock<Option<SyncSender<Job>>>,
}

impl HashPool {
    /// Runs `job` on a pool thread, or refuses it (calls `job(false)` here)
    /// when the queue is full or no thread could be started.
    pub(crate) fn submit(&self, job: Job) {
        let tx = self.tx.get_or_init(start);
        let refused = match tx {
            Some(tx) => match tx.try_send(job) {
                Ok(()) => None,
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Some(job),
            },
            None => Some(job),
        };
        if let Some(job) = refused {
            log::warn!("hashing queue full ({QUEUE} opens waiting): open refused");
            job(false);
        }
    }
}

fn start() -> Option<SyncSender<Job>> {
    let (tx, rx) = sync_channel::<Job>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let mut started = 0;
    for i in 0..THREADS {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("hash-{i}"))
            .spawn(move || work(&rx));
        match spawned {
            Ok(_) => started += 1,
            Err(e) => log::error!("starting a hashing thread: {e}"),
        }
    }
    (started > 0).then_some(tx)
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only to take one job, never while it runs.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match job {
            Ok(job) => job(true),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn jobs_run_off_the_caller_and_a_full_queue_refuses() {
        let pool = HashPool::default();
        let (ran, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let started = Instant::now();
        for _ in 0..THREADS + QUEUE + 5 {
            let (ran, refused, gate) = (ran.clone(), refused.clone(), gate.clone());
            pool.submit(Box::new(move |run| match run {
                true => {
                    drop(gate.lock());
                    ran.fetch_add(1, Ordering::SeqCst);
                }
                false => {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        // Submitting never waited for a job.
        assert!(started.elapsed() < Duration::from_secs(2));
        let refused_now = refused.load(Ordering::SeqCst);
        assert!(
            (5..=5 + THREADS).contains(&refused_now),
            "{refused_now} refused"
        );
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(10);
        while ran.load(Ordering::SeqCst) + refused.load(Ordering::SeqCst) < THREADS + QUEUE + 5 {
            assert!(Instant::now() < deadline, "jobs did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
