//! Prometheus metrics on an address of their own (`--metrics ADDR`, opt-in,
//! as docker-registry's debug address): `GET /metrics` in the text
//! exposition format (version 0.0.4), every other path 404.
//!
//! What is counted: requests and body bytes actually sent by route and
//! status, requests in flight, blobs waiting to be hashed and being hashed,
//! and per repository and tag the rebuilds, their failures, whether newer
//! sources fail now, when the served snapshot was built and how many
//! snapshots are kept. Label values are the server's route labels and the
//! validated repository and tag names, escaped as the format says all the
//! same.
//!
//! Bounded: at most [`CONNECTIONS`] connections (more are closed at once),
//! each for at most [`CONNECTION_TIME`], headers within [`HEADER_TIME`].

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::api::Registry;
use super::traffic::Traffic;

/// Connections to the metrics address at once.
pub const CONNECTIONS: usize = 8;
/// How long one connection may stay open.
pub const CONNECTION_TIME: Duration = Duration::from_secs(60);
/// How long a request's headers may take.
pub const HEADER_TIME: Duration = Duration::from_secs(5);
/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the metrics are read from.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The repositories served.
    pub registry: Arc<Registry>,
    /// What has been answered.
    pub traffic: Arc<Traffic>,
    /// When the server started.
    pub started: SystemTime,
}

/// The metrics now, in the text exposition format.
pub fn render(o: &Observed) -> String {
    let mut out = String::with_capacity(4096);
    traffic(&mut out, &o.traffic);
    snapshots(&mut out, &o.registry);
    family(
        &mut out,
        "ocimux_start_time_seconds",
        "gauge",
        "When the server started (Unix time).",
    );
    sample(
        &mut out,
        "ocimux_start_time_seconds",
        &[],
        crate::process::state::unix(o.started),
    );
    out
}

/// Requests and bytes by route and status; in flight; hashing.
fn traffic(out: &mut String, t: &Traffic) {
    let by_route = t.by_route();
    family(
        out,
        "ocimux_http_requests_total",
        "counter",
        "Requests answered, by route and status.",
    );
    for ((route, code), c) in &by_route {
        sample(
            out,
            "ocimux_http_requests_total",
            &[("route", route), ("code", code)],
            c.requests,
        );
    }
    family(
        out,
        "ocimux_http_response_bytes_total",
        "counter",
        "Body bytes sent (taken by the HTTP layer), by route and status.",
    );
    for ((route, code), c) in &by_route {
        sample(
            out,
            "ocimux_http_response_bytes_total",
            &[("route", route), ("code", code)],
            c.bytes,
        );
    }
    let gauges = [
        (
            "ocimux_http_requests_in_flight",
            "Requests being answered.",
            t.in_flight.load(Relaxed),
        ),
        (
            "ocimux_hashing_queue_depth",
            "Requests waiting for a blob to be hashed.",
            t.hashing_waiting.load(Relaxed),
        ),
        (
            "ocimux_hashing_running",
            "Blobs being hashed.",
            t.hashing_running.load(Relaxed),
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, "gauge", help);
        sample(out, name, &[], value);
    }
}

/// Per repository and tag: rebuilds, failures, failing now, built, kept.
fn snapshots(out: &mut String, registry: &Registry) {
    let mut rows = Vec::new();
    for repo in registry.repositories() {
        for (tag, g) in repo.tag_snapshots() {
            let h = g.health();
            let values = [
                h.rebuilds,
                h.failed_rebuilds,
                u64::from(h.failing.is_some()),
                crate::process::state::unix(h.built),
                g.retired_count() as u64 + 1,
            ];
            rows.push((repo.name.clone(), tag, values));
        }
    }
    let families = [
        (
            "ocimux_rebuilds_total",
            "counter",
            "Rebuilds after the sources changed.",
        ),
        (
            "ocimux_rebuild_failures_total",
            "counter",
            "Rebuilds whose sources did not compose.",
        ),
        (
            "ocimux_rebuild_failing",
            "gauge",
            "1 while the newest sources fail to compose (an older snapshot is served).",
        ),
        (
            "ocimux_snapshot_built_time_seconds",
            "gauge",
            "When the served snapshot was built (Unix time).",
        ),
        (
            "ocimux_snapshots_retained",
            "gauge",
            "Snapshots kept: the served one and those replaced but still read.",
        ),
    ];
    for (i, (name, kind, help)) in families.into_iter().enumerate() {
        family(out, name, kind, help);
        for (repo, tag, values) in &rows {
            let value = values.get(i).copied().unwrap_or(0);
            sample(out, name, &[("repository", repo), ("tag", tag)], value);
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the format writes it: `\`, `"` and newline escaped.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Answers metrics requests on `listeners` until the task is dropped.
pub async fn serve(listeners: Vec<TcpListener>, observed: Observed) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let accepted = super::http::accept_any(&listeners).await;
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                log::warn!("metrics: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            log::warn!("metrics: {peer}: {CONNECTIONS} connections open already; closed");
            continue;
        };
        let observed = observed.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let observed = observed.clone();
                async move { Ok::<_, Infallible>(answer(&req, &observed)) }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new()).header_read_timeout(HEADER_TIME);
            let conn = b.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIME, conn).await;
            drop(permit);
        });
    }
}

/// The answer to one request: the metrics, 405 or 404.
fn answer<B>(req: &Request<B>, observed: &Observed) -> Response<Full<Bytes>> {
    let method = req.method().as_str();
    let (status, body, allow) = match (req.uri().path(), method) {
        ("/metrics", "GET" | "HEAD") => (200, render(observed), None),
        ("/metrics", _) => (
            405,
            "405 method not allowed\n".to_owned(),
            Some("GET, HEAD"),
        ),
        _ => (404, "404 page not found\n".to_owned(), None),
    };
    let content_type = match status {
        200 => CONTENT_TYPE,
        _ => "text/plain; charset=utf-8",
    };
    let length = body.len();
    let body = match method {
        "HEAD" => Bytes::new(),
        _ => Bytes::from(body),
    };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    h.insert(hyper::header::CONTENT_LENGTH, length.into());
    if let Some(allow) = allow {
        h.insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static(allow),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        let cases = [
            ("yocto/app", "yocto/app"),
            ("a\"b", "a\\\"b"),
            ("a\\b", "a\\\\b"),
            ("a\nb", "a\\nb"),
            ("}{,=", "}{,="),
        ];
        for (v, want) in cases {
            assert_eq!(escape(v), want, "{v:?}");
        }
    }

    #[test]
    fn every_sample_line_parses_and_counts_show() {
        let traffic = Arc::new(Traffic::default());
        traffic.begin().answered("blobs", 200, 1234);
        traffic.begin().answered("manifests", 404, 0);
        let _in_flight = traffic.begin();
        let observed = Observed {
            registry: Arc::default(),
            traffic,
            started: SystemTime::UNIX_EPOCH + Duration::from_secs(7),
        };
        let text = render(&observed);
        let wanted = [
            "ocimux_http_requests_total{route=\"blobs\",code=\"200\"} 1",
            "ocimux_http_response_bytes_total{route=\"blobs\",code=\"200\"} 1234",
            "ocimux_http_requests_total{route=\"manifests\",code=\"404\"} 1",
            "ocimux_http_requests_in_flight 1",
            "ocimux_hashing_queue_depth 0",
            "ocimux_start_time_seconds 7",
        ];
        for w in wanted {
            assert!(text.lines().any(|l| l == w), "{w} in\n{text}");
        }
        // Every line: a comment, or NAME[{LABELS}] VALUE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
            assert!(series.starts_with("ocimux_"), "{line}");
        }
    }
}
