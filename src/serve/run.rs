//! A server's life: bind, say where it answers, serve until a stop signal
//! (or until `-- CMD` ends), drain, exit.

use std::io::Write;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use super::http::{Shared, accept_loop};
use super::{RepoPlan, ServeConfig, ServeError, yocto};

/// Open files kept free of connections (sources, watchers, logs, the
/// runtime): this many, or a quarter of a lower limit.
const FD_RESERVE: u64 = 256;

/// The environment variable that tells `-- CMD` where the server is (`HOST:PORT`).
pub const REGISTRY_ENV: &str = "OCIMUX_REGISTRY";

/// Serves `repos` (and what `finder` finds) until stopped; the exit code.
pub fn run(
    mut cfg: ServeConfig,
    repos: Vec<RepoPlan>,
    finder: Option<yocto::Finder>,
) -> Result<u8, ServeError> {
    fit_connections(&mut cfg);
    let registry = match &finder {
        // The Yocto mode may start with nothing found yet.
        Some(_) => {
            let reg = Arc::new(super::api::Registry::default());
            for r in repos {
                super::add(&reg, r, &cfg)?;
            }
            reg
        }
        None => super::registry(repos, &cfg)?,
    };
    let found = finder.as_ref().map(|f| f.start(&registry, &cfg));
    let (auth, tls) = credentials(&cfg)?;
    let scoped = !cfg.command.is_empty();
    if scoped {
        // Before any thread starts: they all inherit the mask, so stop
        // signals reach the command, not the runtime.
        crate::process::scoped::block_stop_signals();
    }
    let sockets = bind(&cfg.listen, "")?;
    let metrics = match &cfg.metrics {
        Some(m) => {
            if !m.is_loopback() {
                log::warn!(
                    "metrics on {m}: anyone on the network can read them (no TLS, no password)"
                );
            }
            bind(m, "the metrics address ")?
        }
        None => Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(cfg.blocking_threads.max(1))
        .thread_name("serve")
        .enable_all()
        .build()
        .map_err(|err| ServeError::Start {
            what: "starting the runtime",
            err,
        })?;
    let listener = Listening {
        sockets,
        metrics,
        auth,
        tls,
    };
    runtime.block_on(serve_until_stopped(
        cfg,
        registry,
        listener,
        (finder, found),
    ))
}

/// Each connection may hold its socket and a body's file: leave room for
/// sources, watchers and the runtime, and size the bound by what is left.
fn fit_connections(cfg: &mut ServeConfig) {
    let fds = crate::process::lifecycle::raise_fd_limit();
    let reserve = FD_RESERVE.min(fds / 4);
    let fit = usize::try_from(fds.saturating_sub(reserve) / 2)
        .unwrap_or(usize::MAX)
        .max(1);
    if cfg.limits.connections > fit {
        log::warn!(
            "at most {fit} connections at once, not {}: the open-file limit is {fds} \
             (raise it with LimitNOFILE= or ulimit -n)",
            cfg.limits.connections
        );
        cfg.limits.connections = fit;
    }
}

/// The password file and TLS identity, loaded; a warning when the network
/// would see what is served in the clear.
type Credentials = (
    Option<Arc<super::auth::Htpasswd>>,
    Option<Arc<super::tls::Tls>>,
);

fn credentials(cfg: &ServeConfig) -> Result<Credentials, ServeError> {
    let auth = match &cfg.htpasswd {
        Some(p) => Some(Arc::new(super::auth::Htpasswd::load(p)?)),
        None => None,
    };
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(Arc::new(super::tls::Tls::load(cert, key)?)),
        None => None,
    };
    if !cfg.listen.is_loopback() && tls.is_none() {
        log::warn!(
            "listening on {} without TLS: anyone on the network can read what is served{}",
            cfg.listen,
            if auth.is_some() {
                ", and see the passwords"
            } else {
                ""
            }
        );
    }
    Ok((auth, tls))
}

/// Binds every address `listen` names (`what` it is for, in errors: the
/// API's or the `metrics ` address): the first as given, the others on
/// the port the first got (port 0 picks one port for all). An address
/// after the first that cannot be bound (no IPv6 here) is skipped, said.
fn bind(
    listen: &super::listen::Listen,
    what: &str,
) -> Result<Vec<std::net::TcpListener>, ServeError> {
    let mut sockets: Vec<std::net::TcpListener> = Vec::new();
    for addr in listen.addrs() {
        let mut addr = *addr;
        if let Some(port) = sockets
            .first()
            .and_then(|s| s.local_addr().ok())
            .map(|a| a.port())
        {
            addr.set_port(port);
        }
        let bound = std::net::TcpListener::bind(addr).and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        });
        match bound {
            Ok(s) => sockets.push(s),
            Err(err) if sockets.is_empty() => {
                return Err(ServeError::Listen {
                    addr: format!("{what}{listen} ({addr})"),
                    err,
                });
            }
            Err(err) => log::warn!("{listen}: not listening on {addr} too: {err}"),
        }
    }
    Ok(sockets)
}

/// The bound sockets and what connections are checked with.
struct Listening {
    /// The first is the address announced.
    sockets: Vec<std::net::TcpListener>,
    /// The metrics address's (none without `--metrics`).
    metrics: Vec<std::net::TcpListener>,
    auth: Option<Arc<super::auth::Htpasswd>>,
    tls: Option<Arc<super::tls::Tls>>,
}

/// Accepts until a stop signal (or, scoped, until the command exits);
/// the exit code.
async fn serve_until_stopped(
    cfg: ServeConfig,
    registry: Arc<super::api::Registry>,
    listening: Listening,
    (finder, found): (Option<yocto::Finder>, Option<yocto::Served>),
) -> Result<u8, ServeError> {
    let listen_err = |err| ServeError::Listen {
        addr: cfg.listen.to_string(),
        err,
    };
    let addr = match listening.sockets.first() {
        Some(s) => s.local_addr().map_err(listen_err)?,
        None => return Err(listen_err(std::io::ErrorKind::AddrNotAvailable.into())),
    };
    let listener = listening
        .sockets
        .into_iter()
        .map(TcpListener::from_std)
        .collect::<Result<Vec<_>, _>>()
        .map_err(listen_err)?;
    let tls = listening.tls;
    let shared = Arc::new(Shared::new(
        registry.clone(),
        cfg.limits,
        listening.auth,
        tls.clone(),
    ));
    let traffic = shared.traffic.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(accept_loop(
        listener,
        shared,
        async {
            let _ = stop_rx.await;
        },
        cfg.drain,
    ));
    // The accept loop runs: the server answers from here on.
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}");
    announce(&url, registry.len());
    let metrics = observe(url, listening.metrics, &registry, traffic).map_err(listen_err)?;
    let scoped = !cfg.command.is_empty();
    if !scoped {
        spawn_reloader(tls);
    }
    if let (Some(finder), Some(found)) = (finder, found) {
        follow_builds(finder, found, registry, &cfg)?;
    }
    let code = match scoped {
        true => run_scoped(cfg.command.clone(), addr.to_string()).await,
        false => {
            wait_for_stop().await;
            0
        }
    };
    let _ = stop_tx.send(());
    let _ = server.await;
    if let Some(m) = metrics {
        m.abort();
    }
    crate::process::state::remove_own();
    log::info!("stopped");
    Ok(code)
}

/// Says where the server answers: the base URL as stdout's first line (what
/// scripts wait for), and in the log.
fn announce(url: &str, repositories: usize) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{url}").and_then(|()| out.flush());
    drop(out);
    let noun = if repositories == 1 {
        "repository"
    } else {
        "repositories"
    };
    log::info!("serving {repositories} {noun} at {url}");
}

/// What the server says of itself: metrics on `sockets` (if any), the state
/// file `ocimux status` reads; the metrics task.
fn observe(
    url: String,
    sockets: Vec<std::net::TcpListener>,
    registry: &Arc<super::api::Registry>,
    traffic: Arc<super::traffic::Traffic>,
) -> std::io::Result<Option<tokio::task::JoinHandle<()>>> {
    let metrics = serve_metrics(sockets, registry, &traffic)?;
    let metrics_url = metrics.as_ref().map(|(u, _)| u.clone());
    super::status::keep([Some(url), metrics_url], registry.clone(), traffic);
    Ok(metrics.map(|(_, task)| task))
}

/// Answers metrics on `sockets` (if any) from a task of its own; their URL
/// (said in the log, and by `ocimux status`).
fn serve_metrics(
    sockets: Vec<std::net::TcpListener>,
    registry: &Arc<super::api::Registry>,
    traffic: &Arc<super::traffic::Traffic>,
) -> std::io::Result<Option<(String, tokio::task::JoinHandle<()>)>> {
    let Some(addr) = sockets.first().map(|s| s.local_addr()).transpose()? else {
        return Ok(None);
    };
    let listeners = sockets
        .into_iter()
        .map(TcpListener::from_std)
        .collect::<Result<Vec<_>, _>>()?;
    let observed = super::metrics::Observed {
        registry: registry.clone(),
        traffic: traffic.clone(),
        started: std::time::SystemTime::now(),
    };
    let url = format!("http://{addr}/metrics");
    log::info!("metrics at {url}");
    let task = tokio::spawn(super::metrics::serve(listeners, observed));
    Ok(Some((url, task)))
}

/// Runs the scoped command with the server's address in its environment;
/// its exit code.
async fn run_scoped(command: Vec<std::ffi::OsString>, addr: String) -> u8 {
    let outcome = tokio::task::spawn_blocking(move || {
        crate::process::scoped::run_with(&command, REGISTRY_ENV, addr.as_ref())
    })
    .await;
    outcome.map_or(crate::process::lifecycle::exit::OTHER, |o| o.code)
}

/// The Yocto mode's thread that follows the build.
fn follow_builds(
    finder: yocto::Finder,
    found: yocto::Served,
    registry: Arc<super::api::Registry>,
    cfg: &ServeConfig,
) -> Result<(), ServeError> {
    let follow_cfg = ServeConfig {
        live: cfg.live,
        verify: cfg.verify,
        ..ServeConfig::placeholder()
    };
    std::thread::Builder::new()
        .name("yocto".into())
        .spawn(move || finder.follow(&registry, &follow_cfg, found))
        .map(|_| ())
        .map_err(|err| ServeError::Start {
            what: "starting the Yocto finder",
            err,
        })
}

/// Returns at SIGTERM or SIGINT.
async fn wait_for_stop() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot wait for signals; stopping");
        return;
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: stopping"),
        _ = int.recv() => log::info!("SIGINT: stopping"),
    }
}

/// Reads the certificate and key again at every SIGHUP; without TLS a
/// SIGHUP (a `systemctl reload`) is logged, not taken as a stop.
fn spawn_reloader(tls: Option<Arc<super::tls::Tls>>) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        log::warn!("cannot wait for SIGHUP: the certificate will not be reloaded");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match tls.as_ref().map(|t| t.reload()) {
                None => log::info!("SIGHUP: nothing to reload (no TLS)"),
                Some(Ok(())) => log::info!("SIGHUP: certificate and key reloaded"),
                Some(Err(e)) => log::error!("SIGHUP: {e}; keeping the previous certificate"),
            }
        }
    });
}
