//! `ocimux serve`: the same live snapshots a mount shows, over the pull side
//! of the OCI distribution API, read-only.
//!
//! - `route`: what a request path names, validated;
//! - `api`: the repositories and the answer to each request, with no HTTP
//!   stack (tested without a socket); `reply`: that answer; `referrers`: the
//!   referrers index; `access`: what a source's owner may publish;
//! - `http`: the thin hyper adapter (bounds, access log); `stream`: a blob's
//!   body within the shared budget; `deadline`: writes bounded in time;
//! - `auth`, `tls`: basic authentication and TLS;
//! - `yocto`: finding every image of build directories; `config`: the TOML file.

pub(crate) mod access;
pub mod accesslog;
pub(crate) mod api;
pub mod auth;
pub mod config;
mod deadline;
pub(crate) mod http;
pub(crate) mod idle;
pub mod listen;
pub(crate) mod metrics;
pub(crate) mod page;
pub(crate) mod referrers;
pub(crate) mod reply;
pub mod route;
pub mod run;
mod status;
mod stream;
pub mod tls;
pub mod traffic;
pub mod yocto;

pub use http::Limits;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::snapshot::generations::Generations;
use crate::snapshot::plan::Plan;

use api::{Registry, Repository};

/// Most repositories one server holds: each has a watcher thread and an
/// inotify instance (the kernel allows a user 128 instances by default).
pub const MAX_REPOSITORIES: usize = 64;

/// How a server runs.
#[derive(Debug)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: listen::Listen,
    /// Where to answer Prometheus metrics (`--metrics`), if anywhere.
    pub metrics: Option<listen::Listen>,
    /// Bounds on clients.
    pub limits: Limits,
    /// Hash every blob version before serving it.
    pub verify: bool,
    /// Follow rebuilds (`false`: `--static`).
    pub live: bool,
    /// Basic authentication from this htpasswd file.
    pub htpasswd: Option<PathBuf>,
    /// TLS certificate chain and key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `-- CMD`: run with `$OCIMUX_REGISTRY`, then stop.
    pub command: Vec<OsString>,
    /// How long in-flight requests may take to finish after a stop.
    pub drain: Duration,
    /// Threads for reading files and answering.
    pub blocking_threads: usize,
}

/// One repository to serve.
#[derive(Debug)]
pub struct RepoPlan {
    /// Its name.
    pub name: String,
    /// Its sources and index options.
    pub plan: Plan,
}

/// Why a server does not start or stops.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A repository name breaks the distribution spec's grammar.
    #[error(
        "repository name {0:?}: not a valid name (lower-case letters, digits, separators . _ __ -, components joined by /, at most 255 bytes)"
    )]
    Name(String),
    /// One tag of a repository given twice.
    #[error("repository {repo:?}: tag {tag:?} is given twice")]
    Duplicate {
        /// The repository.
        repo: String,
        /// The tag.
        tag: String,
    },
    /// Nothing to serve.
    #[error("no repository to serve")]
    Nothing,
    /// More than [`MAX_REPOSITORIES`].
    #[error("{0} repositories: at most {MAX_REPOSITORIES} may be served")]
    TooMany(usize),
    /// A repository's sources do not compose.
    #[error("repository {repo:?}: {err}")]
    Source {
        /// The repository.
        repo: String,
        /// Why.
        err: Box<crate::Error>,
    },
    /// A blob someone who had a say in its path may not read.
    #[error("repository {repo:?}: {what}, so it is not published")]
    Unpublishable {
        /// The repository.
        repo: String,
        /// The file.
        what: String,
    },
    /// The address cannot be listened on.
    #[error("listening on {addr}: {err}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        err: std::io::Error,
    },
    /// The configuration file is wrong.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The htpasswd file is wrong.
    #[error(transparent)]
    Htpasswd(#[from] auth::HtpasswdError),
    /// The certificate or key is wrong.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The Yocto mode's settings are wrong (`--yocto` is no build …).
    #[error(transparent)]
    Yocto(#[from] yocto::YoctoError),
    /// Starting threads, watchers or the runtime failed.
    #[error("{what}: {err}")]
    Start {
        /// What.
        what: &'static str,
        /// Why.
        err: std::io::Error,
    },
}

impl crate::process::lifecycle::ExitStatus for ServeError {
    fn exit_code(&self) -> u8 {
        use crate::process::lifecycle::exit;
        match self {
            ServeError::Name(_)
            | ServeError::Duplicate { .. }
            | ServeError::Nothing
            | ServeError::TooMany(_)
            | ServeError::Source { .. }
            | ServeError::Unpublishable { .. }
            | ServeError::Config(_)
            | ServeError::Htpasswd(_)
            | ServeError::Tls(_)
            | ServeError::Yocto(_) => exit::BAD_INPUT,
            ServeError::Listen { .. } | ServeError::Start { .. } => exit::SERVE,
        }
    }
}

/// Reads every repository's sources, refusing by name anything that is not
/// its owner's to publish; starts a watcher per repository when live.
pub(crate) fn registry(
    repos: Vec<RepoPlan>,
    cfg: &ServeConfig,
) -> Result<Arc<Registry>, ServeError> {
    if repos.is_empty() {
        return Err(ServeError::Nothing);
    }
    if repos.len() > MAX_REPOSITORIES {
        return Err(ServeError::TooMany(repos.len()));
    }
    let registry = Arc::new(Registry::default());
    for r in repos {
        // Without the Yocto mode, sources are never replaced.
        drop(add(&registry, r, cfg)?);
    }
    Ok(registry)
}

/// Adds one tag of a repository, with its sources (at start, or when the
/// Yocto mode finds an image); a repository's first tag adds it. Followed
/// live when `cfg.live` (one watcher each, [`MAX_REPOSITORIES`] at most).
pub(crate) fn add(
    registry: &Arc<Registry>,
    r: RepoPlan,
    cfg: &ServeConfig,
) -> Result<Option<crate::snapshot::watch::Replan>, ServeError> {
    let tag = r.plan.opts.tag.to_string();
    if let Some(repo) = registry.get(&r.name) {
        if repo.tag_names().contains(&tag) {
            return Err(ServeError::Duplicate { repo: r.name, tag });
        }
    }
    set_tag(registry, r, cfg.verify, cfg.live)
}

/// Serves `r`'s sources under its tag, replacing what the tag named (the
/// Yocto mode's dated builds, composed again when they change).
pub(crate) fn set_tag(
    registry: &Arc<Registry>,
    r: RepoPlan,
    verify: bool,
    live: bool,
) -> Result<Option<crate::snapshot::watch::Replan>, ServeError> {
    if !route::is_name(&r.name) {
        return Err(ServeError::Name(r.name));
    }
    let known = registry.get(&r.name);
    if known.is_none() && registry.len() >= MAX_REPOSITORIES {
        return Err(ServeError::TooMany(registry.len() + 1));
    }
    if live && registry.watched() >= MAX_REPOSITORIES {
        return Err(ServeError::TooMany(registry.watched() + 1));
    }
    let tag = r.plan.opts.tag.to_string();
    let (plan, comp) = compose_for_serving(registry, r.plan, &r.name)?;
    let snapshots = Arc::new(Generations::new(&comp));
    let repo = match known {
        Some(repo) => repo,
        None => registry.insert(Repository::new(r.name.clone(), verify)),
    };
    repo.set_tag(&tag, snapshots.clone());
    let replan = match live {
        true => {
            let notify = report_unpublishable(registry, &r.name, &snapshots);
            let spawned = crate::snapshot::watch::spawn(plan, &comp, snapshots, notify);
            let replan = spawned.map_err(|err| ServeError::Start {
                what: "starting a watcher",
                err,
            })?;
            registry.watching();
            Some(replan)
        }
        false => None,
    };
    let platforms: Vec<String> = comp
        .rows
        .iter()
        .map(|r| r.image.platform.to_string())
        .collect();
    log::info!(
        "repository {:?} tag {tag:?}: index {}: {} blobs, {} ({})",
        r.name,
        comp.index_digest,
        comp.blobs.len() + 1,
        platforms.join(", "),
        if live { "live" } else { "static" }
    );
    Ok(replan)
}

/// Composes `plan` as serve serves it: with the referrers (signatures,
/// SBOMs) listed in a source's index.json, each left out by name if it is
/// not its publishers' to publish, and documents kept (a tag's outlive
/// their files); refused by name if any other blob is not theirs.
fn compose_for_serving(
    registry: &Registry,
    mut plan: crate::snapshot::plan::Plan,
    name: &str,
) -> Result<
    (
        crate::snapshot::plan::Plan,
        crate::snapshot::index::Composition,
    ),
    ServeError,
> {
    for spec in &mut plan.specs {
        spec.with_referrers = true;
        spec.keep_documents = true;
    }
    let mut comp = plan.compose().map_err(|err| ServeError::Source {
        repo: name.to_owned(),
        err: Box::new(err),
    })?;
    for (referrer, what) in registry.drop_unpublishable_referrers(&mut comp) {
        log::warn!(
            "repository {name:?}: referrer {referrer}: {}; the referrer is not served",
            crate::error::printable(&what)
        );
    }
    if let Some(what) = registry.unpublishable_in(&comp) {
        return Err(ServeError::Unpublishable {
            repo: name.to_owned(),
            what,
        });
    }
    Ok((plan, comp))
}

/// What the watcher is told after each rebuild (once per snapshot: prunes
/// call it too): it names what is no longer its publishers' to publish.
fn report_unpublishable(
    registry: &Arc<Registry>,
    name: &str,
    snapshots: &Arc<Generations>,
) -> crate::snapshot::watch::Notify {
    let reg = Arc::downgrade(registry);
    let (name, watched) = (name.to_owned(), Arc::downgrade(snapshots));
    let reported = std::sync::Mutex::new(None);
    Box::new(move |_| {
        let (Some(reg), Some(watched)) = (reg.upgrade(), watched.upgrade()) else {
            return;
        };
        // The snapshot itself (a rebuild may keep every digest).
        let now = Some(Arc::as_ptr(&watched.current()) as usize);
        let mut last = reported.lock().unwrap_or_else(|p| p.into_inner());
        if *last == now {
            return;
        }
        *last = now;
        drop(last);
        for what in reg.unpublishable_now(&watched) {
            log::warn!(
                "repository {name:?}: {}; not served",
                crate::error::printable(&what)
            );
        }
    })
}

impl ServeConfig {
    /// Defaults for what only the finder's added repositories use.
    pub(crate) fn placeholder() -> Self {
        ServeConfig {
            listen: listen::Listen::at(SocketAddr::from(([127, 0, 0, 1], 0))),
            metrics: None,
            limits: http::Limits::default(),
            verify: false,
            live: true,
            htpasswd: None,
            tls: None,
            command: Vec::new(),
            drain: Duration::from_secs(10),
            blocking_threads: 32,
        }
    }
}
