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
//! (its open fails with EAGAIN), so no client can grow it. Fair:
//! [`HashPool::submit_keyed`] runs the opens of one file version behind one
//! queued job (one hash, one slot, however many opens), and one user may
//! hold at most [`PER_USER`] of the queue, so another user's opens are never
//! refused for the first one's.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};

/// Hashing threads.
pub(crate) const THREADS: usize = 2;
/// Jobs that may wait for a thread.
pub(crate) const QUEUE: usize = 64;
/// Queued jobs (distinct file versions) one user may have at once.
pub(crate) const PER_USER: usize = 16;
/// Opens that may wait on one file version's job.
pub(crate) const PER_VERSION: usize = 4096;

/// A job: called with `true` to do its work, or `false` when it was refused
/// (then it only answers its request with an error).
pub(crate) type Job = Box<dyn FnOnce(bool) + Send>;

/// The pool.
#[derive(Debug, Default)]
pub(crate) struct HashPool {
    tx: OnceLock<Option<SyncSender<Job>>>,
    /// Jobs queued or running by key, with the jobs waiting on them.
    keyed: Arc<Mutex<Keyed>>,
}

/// What [`HashPool::submit_keyed`] keeps.
#[derive(Default)]
struct Keyed {
    /// Key → the jobs that run after its first, and the user it counts for.
    waiting: std::collections::HashMap<String, (Vec<Job>, u32)>,
    /// User → keys of theirs queued or running.
    per_user: std::collections::HashMap<u32, usize>,
}

impl std::fmt::Debug for Keyed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyed")
            .field("keys", &self.waiting.len())
            .finish()
    }
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

    /// [`HashPool::submit`] for the opens of one file version (`key`) by
    /// user `uid`: a job whose key is already queued or running waits
    /// behind it (the hash it needs is being made) and then runs on the
    /// same thread, taking no queue slot; a user with [`PER_USER`] keys
    /// queued is refused at once, not others.
    pub(crate) fn submit_keyed(&self, key: String, uid: u32, job: Job) {
        let mut keyed = self.keyed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((waiters, _)) = keyed.waiting.get_mut(&key) {
            if waiters.len() < PER_VERSION {
                waiters.push(job);
                return;
            }
            drop(keyed);
            log::warn!("{PER_VERSION} opens wait on one file's hash: open refused");
            return job(false);
        }
        let mine = keyed.per_user.get(&uid).copied().unwrap_or(0);
        if mine >= PER_USER {
            drop(keyed);
            log::warn!("uid {uid} has {PER_USER} files being hashed: open refused");
            return job(false);
        }
        keyed.waiting.insert(key.clone(), (Vec::new(), uid));
        *keyed.per_user.entry(uid).or_default() += 1;
        drop(keyed);
        let shared = self.keyed.clone();
        self.submit(Box::new(move |run| {
            job(run);
            // Those that came meanwhile: their hash is made (or refused).
            // Taken under the lock, run outside it.
            let waiters = {
                let mut keyed = shared.lock().unwrap_or_else(|p| p.into_inner());
                let (waiters, uid) = keyed.waiting.remove(&key).unwrap_or_default();
                if let Some(n) = keyed.per_user.get_mut(&uid) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        keyed.per_user.remove(&uid);
                    }
                }
                waiters
            };
            for w in waiters {
                w(run);
            }
        }));
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
    fn one_version_takes_one_slot_and_one_user_cannot_refuse_another() {
        let pool = HashPool::default();
        let (ran, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let job = || -> Job {
            let (ran, refused, gate) = (ran.clone(), refused.clone(), gate.clone());
            Box::new(move |run| match run {
                true => {
                    drop(gate.lock());
                    ran.fetch_add(1, Ordering::SeqCst);
                }
                false => {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        // uid 1000 opens one unhashed file 200 times, then 20 other files.
        for _ in 0..200 {
            pool.submit_keyed("big".into(), 1000, job());
        }
        for i in 0..20 {
            pool.submit_keyed(format!("other {i}"), 1000, job());
        }
        assert_eq!(
            refused.load(Ordering::SeqCst),
            21 - PER_USER,
            "only its own beyond {PER_USER}"
        );
        // Root's opens of other files are all taken.
        for i in 0..10 {
            pool.submit_keyed(format!("root {i}"), 0, job());
        }
        assert_eq!(
            refused.load(Ordering::SeqCst),
            21 - PER_USER,
            "root refused for uid 1000"
        );
        drop(held);
        let want = 200 + PER_USER - 1 + 10;
        let deadline = Instant::now() + Duration::from_secs(10);
        while ran.load(Ordering::SeqCst) < want {
            assert!(
                Instant::now() < deadline,
                "{} of {want} ran",
                ran.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn jobs_run_off_the_caller_and_a_full_queue_refuses() {
        let pool = HashPool::default();
        let (ran, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        // Submitting never waits for a job: done on a thread, given 2 s (a
        // submit that blocked would fail here, not hang the test).
        let (done, submitted) = std::sync::mpsc::channel();
        let pool = Arc::new(pool);
        let submitter = {
            let (pool, ran, refused, gate) =
                (pool.clone(), ran.clone(), refused.clone(), gate.clone());
            std::thread::spawn(move || {
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
                let _ = done.send(());
            })
        };
        assert!(
            submitted.recv_timeout(Duration::from_secs(2)).is_ok(),
            "a submit waited for a job"
        );
        submitter.join().unwrap();
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
