//! `ocimux status`: every ocimux mount and server the caller may see, from
//! the state files their daemons keep ([`ocimux::process::state`]), as
//! text for people or JSON for scripts. What a daemon wrote (paths a user
//! gave) is printed escaped.

use std::io::Write;

use std::time::Duration;

use serde_json::Value;

use crate::failure::Failure;
use ocimux::error::printable;
use ocimux::process::state;

/// Prints the daemons (those at `target` only, when given).
pub(crate) fn show(json: bool, target: Option<&str>) -> Result<u8, Failure> {
    // A mount is shown only where an ocimux mount of the file's owner is:
    // a user's file cannot put their name on another user's mount.
    let mounts = ocimux::files::mountinfo::all().unwrap_or_default();
    let real = |f: &state::Found| {
        f.value["kind"] != "mount"
            || mounts.iter().any(|e| {
                e.is_ocimux()
                    && e.fuse_owner == Some(f.owner)
                    && e.mountpoint.to_str() == f.value["mountpoint"].as_str()
            })
    };
    let mut found: Vec<Value> = state::read_all()
        .into_iter()
        .filter(real)
        .map(|f| f.value)
        .collect();
    if let Some(t) = target {
        let wanted = where_of(t);
        found.retain(|v| at(v) == Some(wanted.as_str()));
    }
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &found)?;
        writeln!(out)?;
    } else if found.is_empty() && target.is_none() {
        writeln!(out, "no ocimux mount or server is running")?;
    } else {
        for v in &found {
            describe(&mut out, v)?;
        }
    }
    out.flush()?;
    match (target, found.is_empty()) {
        (Some(t), true) => {
            eprintln!("ocimux: no ocimux mount or server at {}", printable(t));
            Ok(ocimux::process::lifecycle::exit::OTHER)
        }
        _ => Ok(0),
    }
}

/// A mountpoint made canonical (its last component untouched: it may be a
/// hung mount), or a URL as given less a trailing slash.
fn where_of(target: &str) -> String {
    if target.contains("://") {
        return target.trim_end_matches('/').to_owned();
    }
    let abs = std::path::absolute(target).unwrap_or_else(|_| target.into());
    let canonical = match (abs.parent(), abs.file_name()) {
        (Some(p), Some(n)) => std::fs::canonicalize(p).map(|p| p.join(n)).unwrap_or(abs),
        _ => abs,
    };
    canonical.display().to_string()
}

/// Where a daemon is: its mountpoint or its URL.
fn at(v: &Value) -> Option<&str> {
    v.get("mountpoint").or_else(|| v.get("url"))?.as_str()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("?")
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// A time the daemon wrote (Unix seconds), as RFC 3339.
fn time(v: &Value, key: &str) -> String {
    let t = ocimux::human::rfc3339(Duration::from_secs(num(v, key)));
    t.replace(".000Z", "Z")
}

/// One daemon, for people.
fn describe(out: &mut impl Write, v: &Value) -> std::io::Result<()> {
    let kind = text(v, "kind");
    let place = at(v).unwrap_or("?");
    writeln!(
        out,
        "{kind} {} (pid {}, since {})",
        printable(place),
        num(v, "pid"),
        time(v, "started")
    )?;
    if kind == "serve" {
        return describe_server(out, v);
    }
    let sources: Vec<String> = v["sources"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| printable(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    writeln!(out, "  sources: {}", sources.join(" "))?;
    describe_snapshot(out, v, "  ")?;
    writeln!(
        out,
        "  open files: {}; daemon read {} bytes; {} passthrough opens, {} daemon opens",
        num(v, "open_files"),
        num(v, "daemon_read_bytes"),
        num(v, "passthrough_opens"),
        num(v, "daemon_opens")
    )
}

/// The index a snapshot serves, when it was built, and whether newer
/// sources fail to compose.
fn describe_snapshot(out: &mut impl Write, v: &Value, indent: &str) -> std::io::Result<()> {
    writeln!(
        out,
        "{indent}serving: index {}: {} blobs, {} bytes, built {}; {} rebuilds, {} failed",
        printable(text(v, "index")),
        num(v, "blobs"),
        num(v, "bytes"),
        time(v, "built"),
        num(v, "rebuilds"),
        num(v, "failed_rebuilds")
    )?;
    if let Some(f) = v.get("failing").filter(|f| !f.is_null()) {
        writeln!(
            out,
            "{indent}FAILING: the newest sources do not compose (since {}; the snapshot served is older): {}",
            time(f, "since"),
            printable(text(f, "error"))
        )?;
    }
    Ok(())
}

/// A server's repositories and traffic.
fn describe_server(out: &mut impl Write, v: &Value) -> std::io::Result<()> {
    writeln!(
        out,
        "  {} requests, {} bytes sent, {} in flight",
        num(v, "requests"),
        num(v, "bytes_sent"),
        num(v, "in_flight")
    )?;
    if let Some(m) = v.get("metrics").and_then(Value::as_str) {
        writeln!(out, "  metrics: {}", printable(m))?;
    }
    for r in v["repositories"].as_array().into_iter().flatten() {
        for t in r["tags"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "  {}:{}",
                printable(text(r, "name")),
                printable(text(t, "tag"))
            )?;
            describe_snapshot(out, t, "    ")?;
        }
    }
    Ok(())
}
