//! Read leases: a hashed file version stays trusted only while no one can
//! write it unseen.
//!
//! A file version is known by (device, inode, size, mtime, ctime), and a
//! store through a shared writable mapping into pages already dirty changes
//! none of them. So the proof that a version hashes to its name (`verify`)
//! holds only together with a read lease (`F_SETLEASE`, `F_RDLCK`) taken
//! before hashing: the kernel grants one only while nobody has the file
//! open for writing (a writable mapping keeps its file open), and breaks it
//! as soon as someone opens it for writing or truncates it. A broken lease
//! makes the next open hash again and every read of a handle that relied
//! on it fail ([`Lease::held`]).
//!
//! The kernel tells the lease's owner of a break with a signal:
//! [`lease_signal`], blocked in every thread from the start of `main`
//! ([`block_signal`]) and taken by one thread ([`Registry`]), which marks
//! the lease broken and releases it at once, so the writer is not kept
//! waiting for the break timeout. At most a quarter of the open-file limit
//! (and [`MAX_LEASES`]) are held, each holding an fd; past that the oldest
//! is released, and its version is hashed again at its next open.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::files::sys;

/// The thread that hears lease breaks (0 until it runs): each lease's
/// signal is sent to it alone.
static LISTENER: AtomicI32 = AtomicI32::new(0);

/// Most leases held at once, whatever the open-file limit.
pub const MAX_LEASES: usize = 65_536;

/// Most leases held at once here: a quarter of the open-file limit (each
/// holds an fd), within 64 and [`MAX_LEASES`]. Read once, after the
/// daemon raised its limit.
fn max_leases() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        usize::try_from(soft / 4)
            .unwrap_or(MAX_LEASES)
            .clamp(64, MAX_LEASES)
    })
}

/// The signal a lease break is told by: the second real-time signal for
/// applications (glibc keeps the first ones).
pub fn lease_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

/// Blocks [`lease_signal`] in this thread, and so in every thread it starts.
/// Called first thing in `main` (a real-time signal's default action ends
/// the process).
pub fn block_signal() {
    sys::block_signal(lease_signal());
}

/// Why a lease was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoLease {
    /// Someone has the file open for writing (or mapped writable): its
    /// bytes may change at any time.
    BeingWritten,
    /// Leases are not available here (another user's file without
    /// CAP_LEASE, a filesystem without leases, `fs.leases-enable = 0`).
    Unavailable(i32),
}

/// A read lease on an open file.
#[derive(Debug)]
pub struct Lease {
    file: Arc<File>,
    broken: AtomicBool,
}

impl Lease {
    /// Takes a read lease on `file` (opened read-only). A lease already held
    /// on the same open file is shared.
    pub fn take(file: &Arc<File>) -> Result<Arc<Lease>, NoLease> {
        registry().take(file)
    }

    /// Whether the lease still holds: no one has opened the file for
    /// writing since it was taken.
    pub fn held(&self) -> bool {
        if self.broken.load(Ordering::SeqCst) {
            return false;
        }
        sys::get_lease(self.file.as_raw_fd()) == libc::F_RDLCK
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn release(&self) {
        self.broken.store(true, Ordering::SeqCst);
        let _ = sys::set_lease(self.fd(), libc::F_UNLCK);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release();
    }
}

/// The leases held, by fd, oldest first; the thread that hears of breaks.
#[derive(Debug, Default)]
struct Registry {
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    by_fd: HashMap<RawFd, Arc<Lease>>,
    order: VecDeque<Weak<Lease>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("leases".into())
            .spawn(move || hear_breaks(&tx));
        match spawned {
            // Leases are set once it listens: their signals go to it alone.
            Ok(_) => {
                let _ = rx.recv_timeout(std::time::Duration::from_secs(5));
            }
            Err(e) => log::error!("starting the lease thread: {e}; leases break only by timeout"),
        }
        Registry::default()
    })
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self, file: &Arc<File>) -> Result<Arc<Lease>, NoLease> {
        let fd = file.as_raw_fd();
        if let Some(live) = self.lock().by_fd.get(&fd).filter(|l| l.held()) {
            return Ok(live.clone());
        }
        set_lease(fd)?;
        let lease = Arc::new(Lease {
            file: file.clone(),
            broken: AtomicBool::new(false),
        });
        let evicted = {
            let mut held = self.lock();
            held.by_fd.insert(fd, lease.clone());
            held.order.push_back(Arc::downgrade(&lease));
            let mut evicted = Vec::new();
            while held.by_fd.len() > max_leases() {
                match held.order.pop_front().and_then(|w| w.upgrade()) {
                    Some(old) => {
                        held.by_fd.remove(&old.fd());
                        evicted.push(old);
                    }
                    None if held.order.is_empty() => break,
                    None => {}
                }
            }
            evicted
        };
        // Released outside the lock.
        for old in evicted {
            old.release();
        }
        Ok(lease)
    }

    /// The lease on `fd` was broken: marked and released at once.
    fn broken(&self, fd: RawFd) {
        let lease = self.lock().by_fd.remove(&fd);
        if let Some(lease) = lease {
            log::info!("a blob's file was opened for writing: its hash will be checked again");
            lease.release();
        }
    }
}

/// `F_SETSIG` then `F_SETLEASE F_RDLCK` on `fd`, then its signal directed
/// to the listening thread (setting a lease makes the process its owner).
fn set_lease(fd: RawFd) -> Result<(), NoLease> {
    let set = sys::set_signal(fd, lease_signal()).and_then(|()| sys::set_lease(fd, libc::F_RDLCK));
    if let Err(e) = set {
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Err(NoLease::BeingWritten),
            Some(errno) => Err(NoLease::Unavailable(errno)),
            None => Err(NoLease::Unavailable(0)),
        };
    }
    let tid = LISTENER.load(Ordering::SeqCst);
    if tid != 0 {
        let _ = sys::set_owner_thread(fd, tid);
    }
    Ok(())
}

/// Waits for lease-break signals and handles each (the signal carries the
/// fd whose lease is being broken).
fn hear_breaks(listening: &std::sync::mpsc::Sender<()>) {
    block_signal();
    LISTENER.store(sys::gettid(), Ordering::SeqCst);
    let _ = listening.send(());
    loop {
        if let Some(fd) = sys::wait_signal_fd(lease_signal()) {
            registry().broken(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_lease_holds_until_someone_opens_the_file_for_writing() {
        block_signal();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"bytes").unwrap();
        let reader = Arc::new(File::open(&path).unwrap());
        let lease = Lease::take(&reader).unwrap();
        assert!(lease.held());
        assert!(
            Arc::ptr_eq(&lease, &Lease::take(&reader).unwrap()),
            "shared"
        );
        // A writer: the lease breaks, and is released at once (the open
        // does not wait for the 45 s break timeout).
        let (tx, rx) = std::sync::mpsc::channel();
        let writer_path = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(std::fs::OpenOptions::new().write(true).open(writer_path));
        });
        let opened = rx.recv_timeout(std::time::Duration::from_secs(5));
        let mut w = opened.expect("the writer waited for the lease").unwrap();
        assert!(!lease.held());
        // While it is open for writing, no lease is granted.
        let again = Arc::new(File::open(&path).unwrap());
        assert_eq!(Lease::take(&again).unwrap_err(), NoLease::BeingWritten);
        w.write_all(b"!").unwrap();
        drop(w);
        assert!(Lease::take(&again).unwrap().held());
    }
}
