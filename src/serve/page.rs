//! `GET /`: a page for people — what the server serves (repositories,
//! tags, each tag's index digest and when it was built, its platforms and
//! their image sizes, whether newer sources fail) and the commands that
//! pull each (podman, skopeo, ctr, and from a QEMU target, whose host is
//! 10.0.2.2 under user networking).
//!
//! Plain HTML and CSS from the binary: no script, no external asset. It
//! reloads itself every [`REFRESH_SECS`] so that it follows rebuilds.
//! Every string that is not the page's own (names, tags, platforms, a
//! rebuild's error, the `Host` a client sent) is escaped; a `Host` that is
//! not a host name or address with a port is not used at all.

use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use bytes::Bytes;

use super::api::Registry;
use super::reply::Reply;
use crate::human;

/// How often the page reloads itself.
pub const REFRESH_SECS: u32 = 10;

/// The page's content type.
pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// Where clients reach the server, for the commands shown.
#[derive(Debug, Clone, Copy)]
pub struct Reached<'a> {
    /// The `Host` the browser sent, if any.
    pub host: Option<&'a str>,
    /// Whether the server speaks TLS.
    pub secure: bool,
}

/// The answer to `method /`: the page (GET, HEAD), else 405.
pub fn answer(registry: &Registry, method: &str, reached: Reached<'_>) -> Reply {
    match method {
        "GET" => reply(registry, reached),
        "HEAD" => reply(registry, reached).headless(),
        m => Reply::not_allowed(m, "GET, HEAD"),
    }
}

/// The page now.
fn reply(registry: &Registry, reached: Reached<'_>) -> Reply {
    let html = render(registry, reached);
    Reply::bytes(200, CONTENT_TYPE, Bytes::from(html)).with("Cache-Control", "no-store".into())
}

/// `host` when it is `NAME[:PORT]`, `IPv4[:PORT]` or `[IPv6][:PORT]`
/// (what a browser sends), else `None`.
pub fn valid_host(host: &str) -> Option<&str> {
    if host.is_empty() || host.len() > 261 {
        return None;
    }
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            v6.parse::<std::net::Ipv6Addr>().ok()?;
            (None, after.strip_prefix(':').map(Some).unwrap_or(Some("")))
        }
        None => match host.rsplit_once(':') {
            Some((n, p)) => (Some(n), Some(p)),
            None => (Some(host), Some("")),
        },
    };
    let port_ok = port.is_some_and(|p| p.is_empty() || p.parse::<u16>().is_ok());
    let name_ok = name.is_none_or(|n| {
        !n.is_empty()
            && n.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    });
    (port_ok && name_ok).then_some(host)
}

/// The port of a valid `host` (the scheme's default when it names none).
fn port_of(host: &str, secure: bool) -> &str {
    let after = host.rsplit_once(']').map_or(host, |(_, a)| a);
    match after.rsplit_once(':') {
        Some((_, p)) if !p.is_empty() => p,
        _ if secure => "443",
        _ => "80",
    }
}

/// A time since the Unix epoch in RFC 3339, to the second.
fn to_second(t: std::time::Duration) -> String {
    human::rfc3339(std::time::Duration::from_secs(t.as_secs())).replace(".000Z", "Z")
}

/// `s` with `& < > " '` as entities, control characters replaced.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;\
padding:0 1em;color:#1d232b;background:#fafbfc}h1{font-size:1.6em;margin:0}\
header p{color:#555}section.repo{margin-top:2em}h2{border-bottom:2px solid #2b6cb0;\
padding-bottom:.2em}article.tag{background:#fff;border:1px solid #d8dee4;border-radius:6px;\
padding:.6em 1em;margin:1em 0}h3{margin:.2em 0}code,pre{font:13px ui-monospace,monospace}\
table{border-collapse:collapse;margin:.5em 0}th,td{text-align:left;padding:.2em 1em .2em 0;\
border-bottom:1px solid #eee}td.size{text-align:right}.failing{color:#b00020;font-weight:600}\
pre.pull{background:#f3f5f7;padding:.6em;overflow-x:auto;white-space:pre}.empty{color:#777}";

/// The HTML.
pub fn render(registry: &Registry, reached: Reached<'_>) -> String {
    let host = reached.host.and_then(valid_host);
    let shown_host = host.unwrap_or("HOST:PORT");
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let repos = registry.repositories();
    let mut h = String::with_capacity(8192);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\">\
<meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
<title>ocimux at {host}</title><style>{STYLE}</style></head><body>\n\
<header><h1>ocimux</h1><p id=\"summary\">{n} {noun} at <code>{host}</code>, \
as of {now}; this page reloads every {REFRESH_SECS} s.</p></header>\n",
        host = escape(shown_host),
        n = repos.len(),
        noun = if repos.len() == 1 {
            "repository"
        } else {
            "repositories"
        },
        now = to_second(now),
    );
    if repos.is_empty() {
        h.push_str("<p class=\"empty\">Nothing is served yet.</p>\n");
    }
    for repo in &repos {
        let name = escape(&repo.name);
        let _ = writeln!(
            h,
            "<section class=\"repo\" data-repository=\"{name}\"><h2>{name}</h2>"
        );
        for (tag, snapshots) in repo.tag_snapshots() {
            tag_article(
                &mut h,
                &repo.name,
                &tag,
                &snapshots,
                (shown_host, reached.secure),
            );
        }
        h.push_str("</section>\n");
    }
    h.push_str("</body></html>\n");
    h
}

/// One tag: its index, when built, failing or not, platforms, commands.
fn tag_article(
    h: &mut String,
    repo: &str,
    tag: &str,
    snapshots: &crate::snapshot::generations::Generations,
    (host, secure): (&str, bool),
) {
    let layout = snapshots.current();
    let health = snapshots.health();
    let built = health.built.duration_since(UNIX_EPOCH).unwrap_or_default();
    let reference = format!("{repo}:{tag}");
    let _ = write!(
        h,
        "<article class=\"tag\" data-tag=\"{t}\"><h3>{r}</h3>\n<p>index <code class=\"digest\">{d}</code>, \
built <time>{b}</time>; {n} blobs, {size}</p>\n",
        t = escape(tag),
        r = escape(&reference),
        d = escape(&layout.index_digest().to_string()),
        b = to_second(built),
        n = layout.blob_count(),
        size = human::bytes(layout.total_bytes()),
    );
    if let Some((error, since)) = &health.failing {
        let since = since.duration_since(UNIX_EPOCH).unwrap_or_default();
        let _ = writeln!(
            h,
            "<p class=\"failing\">The newest sources fail to compose since {} \
(this snapshot is older): {}</p>",
            to_second(since),
            escape(error)
        );
    }
    h.push_str("<table><thead><tr><th>Platform</th><th>Image size</th><th>Manifest</th></tr></thead><tbody>\n");
    for image in layout.images() {
        let _ = writeln!(
            h,
            "<tr><td class=\"platform\">{}</td><td class=\"size\" data-bytes=\"{}\">{}</td>\
<td><code>{}</code></td></tr>",
            escape(&image.platform.to_string()),
            image.image_size,
            human::bytes(image.image_size),
            escape(&image.digest.to_string())
        );
    }
    h.push_str("</tbody></table>\n<pre class=\"pull\">");
    let commands = commands(repo, tag, host, secure);
    let lines: Vec<String> = commands.lines().map(escape).collect();
    h.push_str(&lines.join("\n"));
    h.push_str("\n</pre></article>\n");
}

/// The commands that pull `repo:tag` from `host`.
fn commands(repo: &str, tag: &str, host: &str, secure: bool) -> String {
    let image = format!("{host}/{repo}:{tag}");
    let (podman, src, plain) = match secure {
        true => ("", "", ""),
        false => (
            " --tls-verify=false",
            " --src-tls-verify=false",
            " --plain-http",
        ),
    };
    let dir = repo.rsplit('/').next().unwrap_or(repo);
    let qemu = format!("10.0.2.2:{}/{repo}:{tag}", port_of(host, secure));
    format!(
        "podman pull{podman} {image}\n\
skopeo copy --all{src} docker://{image} oci:{dir}:{tag}\n\
ctr images pull{plain} --all-platforms {image}\n\
# from a QEMU target (user networking: the host is 10.0.2.2)\n\
podman pull{podman} {qemu}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_table() {
        let cases = [
            ("localhost:5000", true),
            ("127.0.0.1:5000", true),
            ("build-01.example.com", true),
            ("[::1]:5000", true),
            ("[::1]", true),
            ("", false),
            ("a b:5000", false),
            ("x:99999", false),
            ("<script>:1", false),
            ("x\":1", false),
            ("[zz]:1", false),
            ("a..b", false),
            ("a:5000:1", false),
        ];
        for (host, ok) in cases {
            assert_eq!(valid_host(host).is_some(), ok, "{host:?}");
        }
        assert_eq!(port_of("[::1]:5000", false), "5000");
        assert_eq!(port_of("[::1]", true), "443");
        assert_eq!(port_of("h", false), "80");
    }

    #[test]
    fn escapes_what_is_not_the_pages() {
        let cases = [
            (
                "<img src=x onerror=alert(1)>",
                "&lt;img src=x onerror=alert(1)&gt;",
            ),
            ("a&b\"'", "a&amp;b&quot;&#39;"),
            ("line\nbreak\u{1b}", "line\u{fffd}break\u{fffd}"),
        ];
        for (s, want) in cases {
            assert_eq!(escape(s), want);
        }
    }

    #[test]
    fn commands_name_the_host_the_port_and_tls() {
        let plain = commands("yocto/app", "latest", "build:5000", false);
        assert!(plain.contains("podman pull --tls-verify=false build:5000/yocto/app:latest"));
        assert!(plain.contains("oci:app:latest"));
        assert!(plain.contains("ctr images pull --plain-http --all-platforms"));
        assert!(plain.contains("10.0.2.2:5000/yocto/app:latest"));
        let tls = commands("app", "v1", "build", true);
        assert!(!tls.contains("verify") && !tls.contains("plain"), "{tls}");
        assert!(tls.contains("10.0.2.2:443/app:v1"), "{tls}");
    }

    #[test]
    fn the_page_shows_what_is_served() {
        use crate::serve::reply::Body;
        use crate::snapshot::generations::Generations;
        use crate::testing::testutil::LayoutBuilder;
        let dir = tempfile::tempdir().unwrap();
        LayoutBuilder::one_layer(dir.path().join("l"), b"layer bytes");
        let sources = [dir.path().join("l").display().to_string()];
        let args = crate::snapshot::plan::IndexArgs::default();
        let plan = crate::snapshot::plan::Plan::from_args(&sources, &args).unwrap();
        let snapshots = std::sync::Arc::new(Generations::new(&plan.compose().unwrap()));
        let layout = snapshots.current();
        let repo = crate::serve::api::Repository::new("a/b".into(), false);
        repo.set_tag("v1", snapshots);
        let reg = Registry::default();
        reg.insert(repo);
        let reached = Reached {
            host: Some("127.0.0.1:5000"),
            secure: false,
        };
        let html = match answer(&reg, "GET", reached).body {
            Body::Bytes(b) => String::from_utf8(b.to_vec()).unwrap(),
            _ => String::new(),
        };
        let image = layout.images().first().unwrap();
        let wanted = [
            "<h3>a/b:v1</h3>".to_owned(),
            layout.index_digest().to_string(),
            format!("data-bytes=\"{}\"", image.image_size),
            image.platform.to_string(),
            "podman pull --tls-verify=false 127.0.0.1:5000/a/b:v1".into(),
            "10.0.2.2:5000/a/b:v1".into(),
        ];
        for w in wanted {
            assert!(html.contains(&w), "{w} in {html}");
        }
        let head = answer(&reg, "HEAD", reached);
        assert!(matches!((head.status, head.body), (200, Body::Empty)));
        assert_eq!(answer(&reg, "POST", reached).status, 405);
    }

    #[test]
    fn an_empty_registry_says_so_and_a_hostile_host_is_not_used() {
        let html = render(
            &Registry::default(),
            Reached {
                host: Some("\"><script>alert(1)</script>"),
                secure: false,
            },
        );
        assert!(html.contains("Nothing is served yet"));
        assert!(!html.contains("<script"));
        assert!(html.contains("HOST:PORT"));
    }
}
