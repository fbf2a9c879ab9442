//! Which connections may be closed to make room. A connection is idle
//! while it has no request in flight and no body chunk unwritten:
//! handshaking, waiting for a head, or kept alive between requests. When every slot (or every slot of one
//! address) is taken, the oldest idle connection is closed so a new one is
//! served: idle or handshaking connections cannot deny service, and a client
//! with a request in flight is never cut for another.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// One open connection, as the registry sees it.
#[derive(Debug)]
struct Conn {
    peer: IpAddr,
    busy: Arc<AtomicUsize>,
    evict: Arc<Notify>,
}

/// Every open connection, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Conns {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Conn>>,
}

/// A connection's place in [`Conns`]: taken out when dropped.
#[derive(Debug)]
pub(crate) struct Registered {
    conns: Arc<Conns>,
    id: u64,
    /// Requests in flight (see [`Busy`]).
    pub busy: Arc<AtomicUsize>,
    /// Told when the connection is to close to make room.
    pub evict: Arc<Notify>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut open = self.conns.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(&self.id);
    }
}

/// A request in flight on its connection, until dropped (with its body).
#[derive(Debug)]
pub(crate) struct Busy(Arc<AtomicUsize>);

impl Busy {
    /// Counts one more request in flight on `busy`.
    pub(crate) fn new(busy: &Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::SeqCst);
        Busy(busy.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Conns {
    /// Registers a connection from `peer`.
    pub(crate) fn add(self: &Arc<Self>, peer: IpAddr) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (busy, evict) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.insert(
            id,
            Conn {
                peer,
                busy: busy.clone(),
                evict: evict.clone(),
            },
        );
        Registered {
            conns: self.clone(),
            id,
            busy,
            evict,
        }
    }

    /// Asks the oldest idle connection (of `peer`, when given) to close;
    /// whether there was one.
    pub(crate) fn evict_oldest_idle(&self, peer: Option<IpAddr>) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let found = open
            .iter()
            .find(|(_, c)| peer.is_none_or(|p| c.peer == p) && c.busy.load(Ordering::SeqCst) == 0)
            .map(|(id, c)| (*id, c.evict.clone()));
        match found {
            Some((id, evict)) => {
                // Out of the registry now: it is not picked twice.
                open.remove(&id);
                evict.notify_one();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_idle_connection_goes_first_and_a_busy_one_never() {
        let conns = Arc::new(Conns::default());
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let first = conns.add(a);
        let second = conns.add(b);
        let third = conns.add(a);
        let busy = Busy::new(&first.busy);
        // first is busy: of a's, third goes; then none of a's is idle.
        assert!(conns.evict_oldest_idle(Some(a)));
        assert!(!conns.evict_oldest_idle(Some(a)));
        // Any address: second.
        assert!(conns.evict_oldest_idle(None));
        assert!(!conns.evict_oldest_idle(None));
        drop(busy);
        assert!(conns.evict_oldest_idle(None), "first is idle again");
        drop((first, second, third));
        assert!(conns.open.lock().unwrap().is_empty());
    }
}
