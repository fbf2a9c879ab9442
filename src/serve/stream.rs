//! A blob's body as the server sends it: read from its source file a
//! chunk at a time on the blocking pool, each chunk holding its share of a
//! budget shared by every connection until hyper has sent it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::{Semaphore, mpsc};

/// Bytes read from a source file per step of a body.
pub(super) const CHUNK: usize = 1024 * 1024;
/// The unit of [`Limits::body_budget`].
pub(super) const BUDGET_UNIT: usize = 64 * 1024;
/// A body's own chunk, when the shared budget is spent: every body may
/// always hold [`OWN_CHUNKS`] of these, whatever other clients hold.
const OWN_CHUNK: usize = 64 * 1024;
/// See [`OWN_CHUNK`].
const OWN_CHUNKS: usize = 2;

/// A body read from a source file a chunk at a time, each read on the
/// blocking pool and identity-checked; a client that does not take a chunk
/// within `send_timeout` loses the connection. A chunk of 1 MiB holds its
/// share of the shared `budget` until hyper has sent it, so such chunks in
/// flight hold at most the budget whatever the number of clients. The budget
/// is never waited for: when clients that do not read hold it all, a body
/// goes on in chunks of its own ([`OWN_CHUNKS`] of [`OWN_CHUNK`] at most,
/// which only it holds), so a slow or silent client delays only itself.
/// Memory: the budget, plus 128 KiB per connection at most.
pub(super) fn stream(
    range: crate::blob::FileRange,
    offset: u64,
    len: u64,
    send_timeout: Duration,
    budget: Arc<Semaphore>,
    pool: Arc<Pool>,
    busy: Arc<std::sync::atomic::AtomicUsize>,
) -> ChannelBody {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(1);
    let range = Arc::new(range);
    tokio::spawn(async move {
        let own = Arc::new(Semaphore::new(OWN_CHUNKS));
        let end = offset.saturating_add(len);
        let mut at = offset;
        while at < end {
            let want = usize::try_from((end - at).min(CHUNK as u64)).unwrap_or(CHUNK);
            let units = u32::try_from(want.div_ceil(BUDGET_UNIT)).unwrap_or(u32::MAX);
            let (want, permit, mut buf) = match budget.clone().try_acquire_many_owned(units) {
                Ok(p) => (want, p, pool.take()),
                Err(_) => {
                    // Waits only for this body's own chunks to be sent.
                    let Ok(p) = own.clone().acquire_owned().await else {
                        return;
                    };
                    (want.min(OWN_CHUNK), p, Vec::with_capacity(OWN_CHUNK))
                }
            };
            let r = range.clone();
            let read = tokio::task::spawn_blocking(move || {
                let got = r.read_into(at, want, &mut buf);
                got.map(|()| buf)
            })
            .await;
            let chunk = match read {
                Ok(Ok(buf)) => Ok(Bytes::from_owner(Chunk {
                    buf,
                    pool: pool.clone(),
                    _permit: permit,
                    _busy: super::idle::Busy::new(&busy),
                })),
                Ok(Err(e)) => Err(io::Error::other(e.to_string())),
                Err(e) => Err(io::Error::other(e.to_string())),
            };
            let failed = chunk.is_err();
            if let Ok(b) = &chunk {
                at += b.len() as u64;
            }
            match tokio::time::timeout(send_timeout, tx.send(chunk)).await {
                Ok(Ok(())) if !failed => {}
                // The client went away, the read failed, or it stalled.
                _ => return,
            }
        }
    });
    ChannelBody { rx }
}

/// Bytes of a body and their share of the budget, released when hyper
/// drops them (the buffer back to the pool).
struct Chunk {
    buf: Vec<u8>,
    pool: Arc<Pool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    /// Its connection is not idle while it is unwritten.
    _busy: super::idle::Busy,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// Body buffers, reused: a fresh 1 MiB buffer per chunk cost page faults
/// and zeroing (measured: 11 % of the daemon's CPU). At most as many are
/// kept as the budget holds chunks.
#[derive(Debug)]
pub(crate) struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    max: usize,
}

impl Pool {
    pub(super) fn new(max: usize) -> Self {
        Pool {
            free: Mutex::new(Vec::new()),
            max,
        }
    }

    fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        reused.unwrap_or_else(|| Vec::with_capacity(CHUNK))
    }

    fn give(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.max && buf.capacity() >= CHUNK {
            free.push(buf);
        }
    }
}

/// A body fed by a channel.
pub(super) struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}
