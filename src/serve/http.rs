//! The thin hyper adapter: accepts connections within bounds, turns each
//! request into an [`api::Request`], runs [`Registry::respond`] on the
//! blocking pool, and streams the [`Reply`]. No HTTP parsing of its own.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::api::{self, Registry};
use super::deadline::WriteDeadline;
use super::reply::{Body, Reply};
use super::stream::{BUDGET_UNIT, CHUNK, Pool, stream};

/// What one client and all clients together may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections in all.
    pub connections: usize,
    /// Open connections from one address.
    pub per_peer: usize,
    /// Bytes of a request's head (request line and headers).
    pub header_bytes: usize,
    /// Time to send a request's head, and most time idle between requests.
    pub header_timeout: Duration,
    /// Most time a client may take to take the next piece of a body.
    pub send_timeout: Duration,
    /// Most bytes of bodies held in memory at once, all clients together.
    pub body_budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 512,
            per_peer: 128,
            header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            body_budget: 32 << 20,
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The repositories.
    pub registry: Arc<Registry>,
    /// The bounds.
    pub limits: Limits,
    /// Basic authentication, when asked for.
    pub auth: Option<Arc<super::auth::Htpasswd>>,
    /// TLS, when asked for.
    pub tls: Option<Arc<super::tls::Tls>>,
    peers: Mutex<HashMap<IpAddr, usize>>,
    budget: Arc<Semaphore>,
    pool: Arc<Pool>,
    hashing: Semaphore,
    /// Password checks running (bcrypt, on their own threads' share).
    checking: Semaphore,
    /// Password checks running or waiting; beyond, refused at once.
    check_queue: Semaphore,
    /// Open connections, for closing an idle one to make room.
    conns: Arc<super::idle::Conns>,
    /// What has been answered.
    pub traffic: Arc<super::traffic::Traffic>,
}

/// Password checks at once: unauthenticated work never takes more of the
/// blocking pool than this, whatever clients send.
const CHECKING: usize = 2;
/// Password checks waiting at most; more are answered 429 at once.
const CHECK_QUEUE: usize = 16;

impl Shared {
    /// State for `registry` within `limits`.
    pub fn new(
        registry: Arc<Registry>,
        limits: Limits,
        auth: Option<Arc<super::auth::Htpasswd>>,
        tls: Option<Arc<super::tls::Tls>>,
    ) -> Self {
        Shared {
            registry,
            limits,
            auth,
            tls,
            peers: Mutex::new(HashMap::new()),
            budget: Arc::new(Semaphore::new(
                (limits.body_budget / BUDGET_UNIT).max(CHUNK / BUDGET_UNIT),
            )),
            pool: Arc::new(Pool::new((limits.body_budget / CHUNK).max(1))),
            hashing: Semaphore::new(HASHING),
            checking: Semaphore::new(CHECKING),
            check_queue: Semaphore::new(CHECK_QUEUE),
            conns: Arc::default(),
            traffic: Arc::default(),
        }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection counted against its peer's share until dropped.
struct PeerSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl PeerSlot {
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<PeerSlot> {
        let mut peers = shared.peers();
        let n = peers.entry(ip).or_insert(0);
        if *n >= shared.limits.per_peer {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut peers = self.shared.peers();
        if let Some(n) = peers.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections until `stop` resolves, then lets the ones in flight
/// finish within `drain`.
pub async fn accept_loop(
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    stop: impl std::future::Future<Output = ()>,
    drain: Duration,
) {
    let slots = Arc::new(Semaphore::new(shared.limits.connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            a = accept_any(&listeners) => match a {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: wait a little rather than spin.
                    log::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(permit) = slot_for(&slots, &shared, stop.as_mut()).await else {
            return drain_then_stop(graceful, drain).await;
        };
        let _ = stream.set_nodelay(true);
        spawn_connection(shared.clone(), stream, peer, permit, graceful.watcher());
    }
    drop(listeners);
    drain_then_stop(graceful, drain).await;
}

/// The next connection on any of `listeners`.
pub(crate) async fn accept_any(
    listeners: &[TcpListener],
) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
    std::future::poll_fn(|cx| {
        for l in listeners {
            if let Poll::Ready(accepted) = l.poll_accept(cx) {
                return Poll::Ready(accepted);
            }
        }
        Poll::Pending
    })
    .await
}

/// A slot for a new connection: when every one is taken, the oldest idle
/// connection makes room (tried again every 100 ms while none frees); none
/// idle, it waits here as the next ones wait in the kernel's backlog.
/// `None` when the server stops meanwhile.
async fn slot_for(
    slots: &Arc<Semaphore>,
    shared: &Shared,
    mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if let Ok(p) = slots.clone().try_acquire_owned() {
        return Some(p);
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            p = slots.clone().acquire_owned() => return p.ok(),
            _ = tick.tick() => {
                if shared.conns.evict_oldest_idle(None) {
                    log::info!("every connection slot taken: an idle connection closed");
                }
            }
            () = &mut stop => return None,
        }
    }
}

/// Serves one accepted connection on its own task, holding its slot (and
/// its address's) until it ends or is closed to make room while idle.
fn spawn_connection(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
    watcher: hyper_util::server::graceful::Watcher,
) {
    tokio::spawn(async move {
        let Some(slot) = peer_slot(&shared, peer).await else {
            return;
        };
        let registered = shared.conns.add(peer.ip());
        let evict = registered.evict.clone();
        let busy = registered.busy.clone();
        let serving = serve_connection(shared, stream, peer, busy.clone(), watcher);
        tokio::pin!(serving);
        loop {
            tokio::select! {
                () = &mut serving => break,
                () = evict.notified() => {
                    // Idle when picked; a request may have begun since.
                    if busy.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                        log::info!("{peer}: idle connection closed to make room");
                        break;
                    }
                }
            }
        }
        drop((registered, permit, slot));
    });
}

/// Lets the requests in flight finish within `drain`.
async fn drain_then_stop(
    graceful: hyper_util::server::graceful::GracefulShutdown,
    drain: Duration,
) {
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        log::warn!("requests still in flight after {drain:?}; stopping anyway");
    }
}

/// A slot of `peer`'s share: when its connections fill it, its oldest idle
/// one makes room (waited for at most a second); none idle: `None`, closed.
async fn peer_slot(shared: &Arc<Shared>, peer: SocketAddr) -> Option<PeerSlot> {
    if let Some(slot) = PeerSlot::take(shared, peer.ip()) {
        return Some(slot);
    }
    if !shared.conns.evict_oldest_idle(Some(peer.ip())) {
        log::warn!("{peer}: too many connections from this address, none idle; closed");
        return None;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if let Some(slot) = PeerSlot::take(shared, peer.ip()) {
            return Some(slot);
        }
    }
    None
}

/// Serves one connection (TLS handshake first, when asked for) until it ends.
async fn serve_connection(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    busy: Arc<std::sync::atomic::AtomicUsize>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let builder = connection_builder(&shared.limits);
    let send_timeout = shared.limits.send_timeout;
    let service = {
        let shared = shared.clone();
        service_fn(move |req| handle(shared.clone(), peer, busy.clone(), req))
    };
    match shared.tls.as_ref().map(|t| t.acceptor()) {
        None => {
            let io = TokioIo::new(WriteDeadline::new(stream, send_timeout));
            let _ = watcher.watch(builder.serve_connection(io, service)).await;
        }
        Some(acceptor) => {
            let timeout = shared.limits.header_timeout;
            let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return log::info!("{peer}: TLS handshake: {e}"),
                Err(_) => return log::info!("{peer}: TLS handshake timed out"),
            };
            let io = TokioIo::new(WriteDeadline::new(stream, send_timeout));
            let _ = watcher.watch(builder.serve_connection(io, service)).await;
        }
    }
}

fn connection_builder(limits: &Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.header_bytes.max(8192))
        .keep_alive(true);
    b
}

type ReplyBody = http_body_util::combinators::BoxBody<Bytes, io::Error>;

async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    busy: Arc<std::sync::atomic::AtomicUsize>,
    req: Request<Incoming>,
) -> Result<Response<ReplyBody>, Infallible> {
    let started = Instant::now();
    let answering = shared.traffic.begin();
    // In flight until its body is sent (or dropped): not idle meanwhile.
    let in_flight = super::idle::Busy::new(&busy);
    let asked = Arc::new(Asked::of(&req, shared.tls.is_some()));
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Health checks answer without credentials (docker-registry's
    // /debug/health, and /healthz), before any are checked: they cost
    // nothing, whatever Authorization header comes with them.
    let health = super::reply::is_health_check(&asked.method, &asked.path);
    let reply = match health {
        true => Authorized::Health,
        false => authorize(&shared, peer.ip(), authorization).await,
    };
    let reply = match reply {
        Authorized::Health => Reply::healthy(),
        Authorized::Yes => answer(&shared, &asked).await,
        Authorized::No => super::auth::challenge(),
        Authorized::Later => {
            Reply::error(super::reply::Code::TooManyRequests, None).with("Retry-After", "60".into())
        }
    };
    let entry = super::accesslog::Entry {
        peer,
        method: asked.method.clone(),
        path: asked.path.clone(),
        status: reply.status,
        length: match (&reply.body, asked.method.as_str()) {
            (Body::Empty, _) | (_, "HEAD") => Some(0),
            _ => reply.header("Content-Length").and_then(|l| l.parse().ok()),
        },
        started,
    };
    let response = response(reply, &shared, &busy);
    Ok(response.map(|body| {
        use http_body_util::BodyExt;
        InFlight {
            body,
            sent: 0,
            entry,
            answering,
            _busy: in_flight,
        }
        .boxed()
    }))
}

/// What a request's credentials come to.
enum Authorized {
    /// A health check: no credentials asked.
    Health,
    Yes,
    No,
    /// Too many failures from this address, or too many checks waiting.
    Later,
}

/// Checks credentials: remembered ones at once; others with bcrypt, off the
/// async threads, at most [`CHECKING`] at a time and [`CHECK_QUEUE`]
/// waiting (beyond: refused at once), never for an address that failed too
/// often lately. Authenticated clients never wait behind password checks.
async fn authorize(shared: &Shared, peer: IpAddr, authorization: Option<String>) -> Authorized {
    let Some(auth) = shared.auth.clone() else {
        return Authorized::Yes;
    };
    match auth.remembered(authorization.as_deref()) {
        Some(true) => return Authorized::Yes,
        Some(false) => return Authorized::No,
        None => {}
    }
    let now = Instant::now();
    if auth.failures.blocked(peer, now) {
        return Authorized::Later;
    }
    let Ok(_queued) = shared.check_queue.try_acquire() else {
        return Authorized::Later;
    };
    let Ok(_running) = shared.checking.acquire().await else {
        return Authorized::Later;
    };
    let checker = auth.clone();
    let ok = tokio::task::spawn_blocking(move || checker.check(authorization.as_deref()))
        .await
        .unwrap_or(false);
    if ok {
        Authorized::Yes
    } else {
        auth.failures.failed(peer, Instant::now());
        Authorized::No
    }
}

/// A reply's body that keeps its request counted in flight until it is
/// sent or dropped, counts the bytes the HTTP layer takes of it, and logs
/// the request when it is dropped (done, failed or abandoned).
struct InFlight {
    body: ReplyBody,
    /// Body bytes handed to hyper.
    sent: u64,
    entry: super::accesslog::Entry,
    answering: super::traffic::Answering,
    _busy: super::idle::Busy,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.entry.done(self.sent);
        let route = super::route::label(&self.entry.path);
        self.answering.answered(route, self.entry.status, self.sent);
    }
}

impl http_body::Body for InFlight {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.sent += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// `busy`: the connection's count of work in flight, held by every chunk
/// of a file body until hyper has written it (after the body itself is
/// done, its last chunks may still be on their way to a slow client).
fn response(
    reply: Reply,
    shared: &Shared,
    busy: &Arc<std::sync::atomic::AtomicUsize>,
) -> Response<ReplyBody> {
    use http_body_util::BodyExt;
    let body: ReplyBody = match reply.body {
        Body::Empty => http_body_util::Empty::new().map_err(|e| match e {}).boxed(),
        Body::Bytes(b) => http_body_util::Full::new(b).map_err(|e| match e {}).boxed(),
        Body::File { range, offset, len } => {
            let (timeout, budget, pool) = (
                shared.limits.send_timeout,
                shared.budget.clone(),
                shared.pool.clone(),
            );
            let busy = busy.clone();
            stream(range, offset, len, timeout, budget, pool, busy).boxed()
        }
    };
    let mut builder = Response::builder()
        .status(reply.status)
        .header("Docker-Distribution-API-Version", "registry/2.0");
    for (name, value) in reply.headers {
        builder = builder.header(name, value);
    }
    builder.body(body).unwrap_or_else(|e| {
        log::error!("building a response: {e}");
        let mut r = Response::new(http_body_util::Empty::new().map_err(|e| match e {}).boxed());
        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// A request as [`Registry::respond`] reads it, owned.
#[derive(Debug)]
struct Asked {
    method: String,
    path: String,
    query: Option<String>,
    accept: String,
    range: Option<String>,
    if_none_match: Option<String>,
    host: Option<String>,
    secure: bool,
}

impl Asked {
    /// What `req` asks, over TLS or not.
    fn of<B>(req: &Request<B>, secure: bool) -> Asked {
        let headers = req.headers();
        let header = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let accept: Vec<&str> = headers
            .get_all(hyper::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        Asked {
            method: req.method().as_str().to_owned(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(str::to_owned),
            accept: accept.join(","),
            range: header(hyper::header::RANGE),
            if_none_match: header(hyper::header::IF_NONE_MATCH),
            host: header(hyper::header::HOST),
            secure,
        }
    }

    fn request(&self) -> api::Request<'_> {
        api::Request {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            accept: &self.accept,
            range: self.range.as_deref(),
            if_none_match: self.if_none_match.as_deref(),
        }
    }
}

/// The reply to `asked`, from the blocking pool. A blob that must be hashed
/// first is hashed with at most [`HASHING`] at once, waiting without a
/// thread; no request holds a thread while another hashes.
async fn answer(shared: &Arc<Shared>, asked: &Arc<Asked>) -> Reply {
    if asked.path == "/" {
        let reached = super::page::Reached {
            host: asked.host.as_deref(),
            secure: asked.secure,
        };
        return super::page::answer(&shared.registry, &asked.method, reached);
    }
    let ask = |defer: bool, proven: Option<api::Pending>| {
        let (registry, asked) = (shared.registry.clone(), asked.clone());
        tokio::task::spawn_blocking(move || registry.respond(&asked.request(), defer, proven))
    };
    let mut answered = ask(true, None).await;
    if let Ok(api::Answer::Hash(repo, pending)) = answered {
        let mut counted = shared.traffic.hashing();
        let permit = shared.hashing.acquire().await;
        counted.running();
        let proved = tokio::task::spawn_blocking(move || repo.prove(pending)).await;
        drop((permit, counted));
        let proven = proved.unwrap_or_else(|e| {
            log::error!("hashing: {e}");
            None
        });
        // Answered from the file the proof was made on: one open per proof.
        answered = ask(false, proven).await;
    }
    match answered {
        Ok(api::Answer::Reply(reply)) => reply,
        Ok(api::Answer::Hash(..)) => Reply::error(super::reply::Code::Unknown, None),
        Err(e) => {
            log::error!("answering {}: {e}", crate::error::printable(&asked.path));
            Reply::error(super::reply::Code::Unknown, None)
        }
    }
}

/// Blobs hashed at once (as the mount's hashing pool).
const HASHING: usize = 2;
