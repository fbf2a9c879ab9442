//! The pull side of the OCI distribution API over live snapshots, with no
//! HTTP stack: a request's method, path and few headers in, a [`Reply`] out.
//! Blocking (it opens and may hash source files): the adapter calls it on
//! its blocking pool.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde_json::json;

use crate::blob::verify::Verifier;
use crate::blob::{FileRange, Opened, Proof};
use crate::oci::digest::Digest;
use crate::oci::document::{self, OCI_INDEX};
use crate::snapshot::generations::Generations;
use crate::snapshot::layout::{Content, FsError};
use crate::source::Blob;

use super::access::{self, Readers};
use super::referrers::Referrers;
use super::reply::{self, Body, Code, Range, Reply};
use super::route::{self, Reference, Route, RouteError};

mod blobs;
mod manifests;

use blobs::Refusal;

/// Most entries one `tags/list` or `_catalog` page holds.
pub const MAX_PAGE: usize = 1000;

/// One repository: per tag, the live snapshots of that tag's set of
/// sources (a configuration file's `[[repository]]` entries of one name,
/// the Yocto mode's link tag and dated builds).
#[derive(Debug)]
pub struct Repository {
    /// Its name (`yocto/app`).
    pub name: String,
    /// Tag → the snapshots composed under it. Cloned out before any I/O:
    /// the lock is never held across a read.
    tags: RwLock<BTreeMap<String, Arc<Generations>>>,
    /// Hash every blob version before serving it (`--verify`).
    pub verify: bool,
    verifier: Verifier,
    referrers: Referrers,
}

impl Repository {
    /// A repository with no tag yet.
    pub fn new(name: String, verify: bool) -> Self {
        Repository {
            name,
            tags: RwLock::default(),
            verify,
            verifier: Verifier::default(),
            referrers: Referrers::default(),
        }
    }

    /// Serves `snapshots` under `tag` (replacing what it named).
    pub fn set_tag(&self, tag: &str, snapshots: Arc<Generations>) {
        let mut tags = self.tags.write().unwrap_or_else(|p| p.into_inner());
        tags.insert(tag.to_owned(), snapshots);
    }

    /// Stops serving `tag`; whether it was served.
    pub fn remove_tag(&self, tag: &str) -> bool {
        let mut tags = self.tags.write().unwrap_or_else(|p| p.into_inner());
        tags.remove(tag).is_some()
    }

    /// The tags given sources, in order.
    pub fn tag_names(&self) -> Vec<String> {
        self.read_tags().keys().cloned().collect()
    }

    /// Each tag with its snapshots (tag order).
    pub fn tag_snapshots(&self) -> Vec<(String, Arc<Generations>)> {
        self.read_tags()
            .iter()
            .map(|(t, g)| (t.clone(), g.clone()))
            .collect()
    }

    /// Every tag's snapshots (tag order).
    pub(crate) fn snapshots(&self) -> Vec<Arc<Generations>> {
        self.read_tags().values().cloned().collect()
    }

    fn read_tags(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Generations>>> {
        self.tags.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Tag → digest over every tag's current snapshot. A tag's own
    /// snapshots decide what it names; names a snapshot adds beside it
    /// (`--platform-tags`) come after, first one kept.
    pub fn tags(&self) -> BTreeMap<String, Digest> {
        let tags: Vec<(String, Arc<Generations>)> = self
            .read_tags()
            .iter()
            .map(|(t, g)| (t.clone(), g.clone()))
            .collect();
        let each: Vec<(String, BTreeMap<String, Digest>)> = tags
            .into_iter()
            .map(|(t, g)| {
                let names = g.tags().into_iter().filter(|(n, _)| route::is_tag(n));
                (t, names.collect())
            })
            .collect();
        let mut out = BTreeMap::new();
        for (tag, names) in &each {
            if let Some(d) = names.get(tag) {
                out.insert(tag.clone(), d.clone());
            }
        }
        for (_, names) in each {
            for (name, d) in names {
                out.entry(name).or_insert(d);
            }
        }
        out
    }

    /// What a digest names in any tag's current snapshot.
    fn by_digest(&self, digest: &Digest) -> Result<Content, FsError> {
        let mut last = Err(FsError::NotFound);
        for g in self.snapshots() {
            last = g.by_digest(digest);
            if last.is_ok() {
                break;
            }
        }
        last
    }

    /// A document as a served snapshot read it, for when its file is gone.
    fn kept(&self, digest: &Digest) -> Option<(Arc<Blob>, crate::source::KeptDocument)> {
        self.snapshots().iter().find_map(|g| g.document(digest))
    }

    /// Hashes the file `pending` opened (once per file version: the result
    /// is kept); `Some` with that same file, proven, for the next answer to
    /// send — `None` when it failed, which that answer finds and reports.
    pub(crate) fn prove(&self, mut pending: Pending) -> Option<Pending> {
        pending.opened.check(&pending.blob, &self.verifier).ok()?;
        Some(pending)
    }
}

/// Every repository served, by name.
#[derive(Debug, Default)]
pub struct Registry {
    repos: RwLock<BTreeMap<String, Arc<Repository>>>,
    readers: Readers,
    /// Watchers started for its tags (each runs until the process exits).
    watched: std::sync::atomic::AtomicUsize,
}

/// What [`Registry::respond`] comes to.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The reply.
    Reply(Reply),
    /// This blob must be hashed first: [`Repository::prove`] it, then ask
    /// again with it.
    Hash(Arc<Repository>, Pending),
}

/// A blob whose hash an answer waits for, with the file opened for it: the
/// proof and the answer read that one file (one open per proof).
#[derive(Debug)]
pub(crate) struct Pending {
    blob: Arc<Blob>,
    opened: Opened,
}

/// A blob whose hash the answer waits for.
#[derive(Debug)]
struct Deferred(Arc<Repository>, Pending);

/// What [`Registry::respond`] needs of a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// The path, as sent (not decoded).
    pub path: &'a str,
    /// The query string, if any.
    pub query: Option<&'a str>,
    /// Every `Accept` header, joined by commas.
    pub accept: &'a str,
    /// `Range`.
    pub range: Option<&'a str>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a str>,
}

impl Registry {
    /// Adds (or replaces) a repository; the one now served.
    pub fn insert(&self, repo: Repository) -> Arc<Repository> {
        let repo = Arc::new(repo);
        let mut repos = self.repos.write().unwrap_or_else(|p| p.into_inner());
        repos.insert(repo.name.clone(), repo.clone());
        repo
    }

    /// How many watchers its tags have started.
    pub fn watched(&self) -> usize {
        self.watched.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts one more watcher.
    pub(crate) fn watching(&self) {
        self.watched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every repository (name order).
    pub fn repositories(&self) -> Vec<Arc<Repository>> {
        self.read().values().cloned().collect()
    }

    /// How many repositories there are.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// A repository.
    pub fn get(&self, name: &str) -> Option<Arc<Repository>> {
        self.read().get(name).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Repository>>> {
        self.repos.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The first blob of `comp` that is not its publishers' to publish
    /// (what it is, for refusing by name).
    pub fn unpublishable_in(&self, comp: &crate::snapshot::index::Composition) -> Option<String> {
        comp.blobs.iter().find_map(|b| {
            access::refusal(&self.readers, b).map(|why| format!("{}: {why}", b.describe()))
        })
    }

    /// Takes out of `comp` every referrer that brings a blob its publishers
    /// may not publish (a referrer is optional: its subject is served
    /// without it), with the blobs only it brings; each one taken, with the
    /// file that decided it. Referrers that shared a taken blob go too.
    pub fn drop_unpublishable_referrers(
        &self,
        comp: &mut crate::snapshot::index::Composition,
    ) -> Vec<(Digest, String)> {
        use std::collections::{HashMap, HashSet};
        let bad: HashMap<&Digest, String> = comp
            .blobs
            .iter()
            .filter_map(|b| {
                let why = access::refusal(&self.readers, b)?;
                Some((&b.digest, format!("{}: {why}", b.describe())))
            })
            .collect();
        let mut gone: HashSet<Digest> = HashSet::new();
        let mut dropped: Vec<(Digest, String)> = Vec::new();
        // Until no referrer left needs a blob that is gone or bad.
        loop {
            let hit = comp.referrers.iter().find_map(|r| {
                let why = r.only.iter().find_map(|d| match bad.get(d) {
                    Some(what) => Some(what.clone()),
                    None => gone
                        .contains(d)
                        .then(|| format!("{d} (shared with a referrer left out)")),
                })?;
                Some((r.manifest.clone(), why))
            });
            let Some((manifest, why)) = hit else { break };
            if let Some(i) = comp.referrers.iter().position(|r| r.manifest == manifest) {
                gone.extend(comp.referrers.swap_remove(i).only);
            }
            dropped.push((manifest, why));
        }
        comp.blobs.retain(|b| !gone.contains(&b.digest));
        dropped
    }

    /// Every blob of `snapshots`' current snapshot that is not its
    /// publishers' to publish (what each is, for refusing by name).
    pub fn unpublishable_now(&self, snapshots: &Generations) -> Vec<String> {
        let current = snapshots.current();
        let blobs = current.blobs().map(|(_, b)| b);
        blobs
            .filter_map(|b| {
                let why = access::refusal(&self.readers, b)?;
                Some(format!("{}: {why}", b.describe()))
            })
            .collect()
    }

    /// Answers a request. With `may_defer`, a blob that must be hashed
    /// first (and has not been) is not hashed here: the answer says so, the
    /// caller proves it off its request threads ([`Repository::prove`]) and
    /// asks again.
    /// `proven`: the blob a [`Answer::Hash`] asked to prove, proven.
    pub fn respond(&self, req: &Request<'_>, may_defer: bool, proven: Option<Pending>) -> Answer {
        let read = matches!(req.method, "GET" | "HEAD");
        let Some(path) = route::decode(req.path) else {
            return Answer::Reply(Reply::no_endpoint());
        };
        let route = match route::parse(&path) {
            Ok(r) => r,
            Err(RouteError::NotFound) => return Answer::Reply(Reply::no_endpoint()),
            Err(_) if !read => return Answer::Reply(Reply::not_allowed(req.method, "GET, HEAD")),
            Err(e) => return Answer::Reply(Reply::error(route_error(e), None)),
        };
        let allow = route.allowed();
        if !allow.split(", ").any(|m| m == req.method) {
            let reply = Reply::not_allowed(req.method, allow);
            return Answer::Reply(match req.method {
                "HEAD" => reply.headless(),
                _ => reply,
            });
        }
        let mut proven = proven;
        match self.answer(req, route, may_defer, &mut proven) {
            Ok(reply) if req.method == "HEAD" => Answer::Reply(reply.headless()),
            Ok(reply) => Answer::Reply(reply),
            Err(Deferred(repo, pending)) => Answer::Hash(repo, pending),
        }
    }

    fn answer(
        &self,
        req: &Request<'_>,
        route: Route<'_>,
        defer: bool,
        proven: &mut Option<Pending>,
    ) -> Result<Reply, Deferred> {
        let repo = match route {
            // Byte for byte docker-distribution's answer.
            Route::Base => {
                let json = "application/json; charset=utf-8";
                return Ok(Reply::bytes(200, json, Bytes::from_static(b"{}")));
            }
            Route::Catalog => {
                let names: Vec<String> = self.read().keys().cloned().collect();
                let doc = |names: &[String]| json!({ "repositories": names });
                return Ok(page(req.query, names, "/v2/_catalog", doc));
            }
            Route::Upload => return Ok(Reply::error(Code::Unsupported, None)),
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::Referrers { name, .. } => match self.get(name) {
                Some(repo) => repo,
                None => {
                    let detail = Some(json!({ "name": name }));
                    return Ok(Reply::error(Code::NameUnknown, detail));
                }
            },
        };
        Ok(match route {
            Route::Tags { name } => {
                let tags: Vec<String> = repo.tags().into_keys().collect();
                let path = format!("/v2/{name}/tags/list");
                page(
                    req.query,
                    tags,
                    &path,
                    |tags| json!({ "name": name, "tags": tags }),
                )
            }
            Route::Manifest { reference, .. } => {
                self.manifest(&repo, req, reference, (defer, proven))?
            }
            Route::Blob { digest, .. } => self.blob(&repo, req, &digest, (defer, proven))?,
            Route::Referrers { digest, .. } => {
                let filter = query_param(req.query, "artifactType");
                let snapshots = repo.snapshots();
                let index =
                    repo.referrers
                        .of(&snapshots, &self.readers, &digest, filter.as_deref());
                let reply = Reply::bytes(200, OCI_INDEX, index);
                match filter {
                    Some(_) => reply.with("OCI-Filters-Applied", "artifactType".into()),
                    None => reply,
                }
            }
            Route::Base | Route::Catalog | Route::Upload => Reply::no_endpoint(),
        })
    }
}

/// 304 when `If-None-Match` names `digest` (its entity tag `"DIGEST"`,
/// `*`, or with `bare` the digest unquoted), with the `ETag` and digest a
/// 200 would carry (RFC 9110 §15.4.5).
fn not_modified(req: &Request<'_>, digest: &Digest, bare: bool) -> Option<Reply> {
    let digest = digest.to_string();
    let etag = format!("\"{digest}\"");
    let matches = |t: &str| t == "*" || t == etag || t.strip_prefix("W/") == Some(&etag);
    let hit = req
        .if_none_match?
        .split(',')
        .map(str::trim)
        .any(|t| matches(t) || (bare && t == digest));
    hit.then(|| Reply {
        status: 304,
        headers: vec![("Docker-Content-Digest", digest), ("Etag", etag)],
        body: Body::Empty,
    })
}

fn route_error(e: RouteError) -> Code {
    match e {
        RouteError::NotFound | RouteError::NameInvalid => Code::NameInvalid,
        RouteError::DigestInvalid => Code::DigestInvalid,
        RouteError::TagInvalid => Code::ManifestUnknown,
    }
}

/// A parameter of a query string (values are not percent-decoded beyond
/// what tags and media types need: `%2B` for `+`, `%2F` for `/`).
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%2B", "+")
                .replace("%2b", "+")
                .replace("%2F", "/")
                .replace("%2f", "/")
        })
    })
}

/// One page of a sorted list: entries after `last`, at most `n` (capped at
/// [`MAX_PAGE`]), with a `Link` to the next page when more follow.
fn page(
    query: Option<&str>,
    all: Vec<String>,
    path: &str,
    doc: impl Fn(&[String]) -> serde_json::Value,
) -> Reply {
    let n = match query_param(query, "n") {
        None => MAX_PAGE,
        Some(n) => match n.parse::<usize>() {
            Ok(n) => n.min(MAX_PAGE),
            Err(_) => return Reply::error(Code::PaginationNumberInvalid, Some(json!({ "n": n }))),
        },
    };
    let last = query_param(query, "last");
    let after: Vec<String> = all
        .into_iter()
        .filter(|t| last.as_ref().is_none_or(|l| t > l))
        .collect();
    let shown: Vec<String> = after.iter().take(n).cloned().collect();
    let reply = Reply::json(200, &doc(&shown));
    match shown.last() {
        Some(end) if after.len() > shown.len() => {
            reply.with("Link", format!("<{path}?last={end}&n={n}>; rel=\"next\""))
        }
        _ => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::testutil::LayoutBuilder;

    fn registry(dir: &std::path::Path) -> (Registry, serde_json::Value) {
        let (_, layer) = LayoutBuilder::one_layer(dir.join("l"), b"layer bytes");
        let sources = [dir.join("l").display().to_string()];
        let plan = crate::snapshot::plan::Plan::from_args(
            &sources,
            &crate::snapshot::plan::IndexArgs {
                tag: "v1".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let comp = plan.compose().unwrap();
        let reg = Registry::default();
        let snapshots = Arc::new(Generations::new(&comp));
        reg.insert(tagged("a/b", "v1", snapshots, false));
        (reg, layer)
    }

    fn tagged(name: &str, tag: &str, snapshots: Arc<Generations>, verify: bool) -> Repository {
        let repo = Repository::new(name.into(), verify);
        repo.set_tag(tag, snapshots);
        repo
    }

    #[test]
    fn each_tag_serves_its_own_sources() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::new("a".into(), false);
        let mut layers = Vec::new();
        for (tag, bytes) in [
            ("latest", &b"new layer"[..]),
            ("20261204120000", b"old layer"),
        ] {
            let src = dir.path().join(tag);
            let (_, layer) = LayoutBuilder::one_layer(src.clone(), bytes);
            let args = crate::snapshot::plan::IndexArgs {
                tag: tag.into(),
                ..Default::default()
            };
            let plan = crate::snapshot::plan::Plan::from_args(&[src.display().to_string()], &args);
            let comp = plan.unwrap().compose().unwrap();
            repo.set_tag(tag, Arc::new(Generations::new(&comp)));
            layers.push((tag, comp.index_digest, layer));
        }
        let reg = Registry::default();
        reg.insert(repo);
        let body = |r: Reply| match r.body {
            Body::Bytes(b) => b.to_vec(),
            _ => Vec::new(),
        };
        let list = body(reply(&reg, &req("GET", "/v2/a/tags/list", None)));
        let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
        assert_eq!(list["tags"], json!(["20261204120000", "latest"]));
        for (tag, index, layer) in &layers {
            let r = reply(&reg, &req("GET", &format!("/v2/a/manifests/{tag}"), None));
            let digest = r
                .headers
                .iter()
                .find(|(n, _)| *n == "Docker-Content-Digest");
            assert_eq!(
                digest.map(|(_, v)| v.as_str()),
                Some(index.to_string().as_str())
            );
            let l = format!("/v2/a/blobs/{}", layer["digest"].as_str().unwrap());
            assert_eq!(reply(&reg, &req("GET", &l, None)).status, 200, "{tag}");
        }
        // A tag taken away is gone; the other stays.
        reg.get("a").unwrap().remove_tag("20261204120000");
        let r = reply(&reg, &req("GET", "/v2/a/manifests/20261204120000", None));
        assert_eq!(r.status, 404);
        assert_eq!(
            reply(&reg, &req("GET", "/v2/a/manifests/latest", None)).status,
            200
        );
    }

    fn reply(reg: &Registry, r: &Request<'_>) -> Reply {
        match reg.respond(r, false, None) {
            Answer::Reply(reply) => reply,
            Answer::Hash(..) => panic!("no deferral asked for"),
        }
    }

    #[test]
    fn hashing_is_deferred_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let (_, layer) = LayoutBuilder::one_layer(dir.path().join("l"), b"layer bytes");
        let sources = [dir.path().join("l").display().to_string()];
        let plan = crate::snapshot::plan::Plan::from_args(
            &sources,
            &crate::snapshot::plan::IndexArgs::default(),
        );
        let comp = plan.unwrap().compose().unwrap();
        let reg = Registry::default();
        let snapshots = Arc::new(Generations::new(&comp));
        reg.insert(tagged("a", "latest", snapshots, true)); // --verify
        let l = format!("/v2/a/blobs/{}", layer["digest"].as_str().unwrap());
        let Answer::Hash(repo, pending) = reg.respond(&req("GET", &l, None), true, None) else {
            panic!("a --verify blob not hashed yet is deferred");
        };
        let proven = repo.prove(pending);
        assert!(proven.is_some(), "its bytes hash to its name");
        // Answered from the file the proof was made on, then from the kept proof.
        for proven in [proven, None] {
            match reg.respond(&req("GET", &l, None), true, proven) {
                Answer::Reply(r) => assert_eq!(r.status, 200),
                Answer::Hash(..) => panic!("proved once, answered at once"),
            }
        }
    }

    fn req<'a>(method: &'a str, path: &'a str, range: Option<&'a str>) -> Request<'a> {
        Request {
            method,
            path,
            query: None,
            accept: "application/vnd.oci.image.index.v1+json",
            range,
            if_none_match: None,
        }
    }

    #[test]
    fn answers() {
        let dir = tempfile::tempdir().unwrap();
        let (reg, layer) = registry(dir.path());
        let l = format!("/v2/a/b/blobs/{}", layer["digest"].as_str().unwrap());
        let missing = format!("/v2/a/b/blobs/sha256:{}", "1".repeat(64));
        // (method, path, range, status, error code, Content-Length)
        let cases: Vec<(&str, &str, Option<&str>, u16, Option<&str>, Option<&str>)> = vec![
            ("GET", "/v2/", None, 200, None, Some("2")),
            ("GET", "/v2/a/b/manifests/v1", None, 200, None, None),
            ("HEAD", "/v2/a/b/manifests/v1", None, 200, None, None),
            ("GET", &l, None, 200, None, Some("11")),
            ("HEAD", &l, None, 200, None, Some("11")),
            ("GET", &l, Some("bytes=6-"), 206, None, Some("5")),
            (
                "GET",
                &l,
                Some("bytes=11-"),
                416,
                Some("RANGE_INVALID"),
                None,
            ),
            ("GET", &missing, None, 404, Some("BLOB_UNKNOWN"), None),
            (
                "GET",
                "/v2/x/tags/list",
                None,
                404,
                Some("NAME_UNKNOWN"),
                None,
            ),
            (
                "GET",
                "/v2/a/b/manifests/v2",
                None,
                404,
                Some("MANIFEST_UNKNOWN"),
                None,
            ),
            (
                "PUT",
                "/v2/a/b/manifests/v1",
                None,
                405,
                Some("UNSUPPORTED"),
                None,
            ),
            ("POST", "/nowhere", None, 404, None, None),
            ("HEAD", "/v2/a/b/tags/list", None, 405, None, None),
            ("GET", "/v2/a/b/manifests/v%31", None, 200, None, None),
            ("GET", "/v2/a%2fb/tags/list", None, 200, None, None),
            ("GET", "/v2/a/b/manifests/v%00", None, 404, None, None),
            ("GET", "/v2/a/b/manifests/v%3", None, 404, None, None),
            (
                "GET",
                "/v2/a/b/blobs/x",
                None,
                400,
                Some("DIGEST_INVALID"),
                None,
            ),
        ];
        for (method, path, range, status, code, length) in cases {
            let r = reply(&reg, &req(method, path, range));
            let what = format!("{method} {path} {range:?}");
            assert_eq!(r.status, status, "{what}");
            if let Some(code) = code {
                let body: serde_json::Value =
                    serde_json::from_slice(r.body_bytes().unwrap()).unwrap();
                assert_eq!(body["errors"][0]["code"], code, "{what}");
            }
            if let Some(length) = length {
                assert_eq!(r.header("Content-Length"), Some(length), "{what}");
            }
            if method == "HEAD" {
                assert!(matches!(r.body, Body::Empty), "{what}");
            }
        }
        // The range's bytes are the blob's.
        match reply(&reg, &req("GET", &l, Some("bytes=6-"))).body {
            Body::File { range, offset, len } => {
                let size = u32::try_from(len).unwrap();
                let bytes = range.read(offset, size).unwrap();
                assert_eq!(bytes, b"bytes");
            }
            other => panic!("{other:?}"),
        }
    }
}
