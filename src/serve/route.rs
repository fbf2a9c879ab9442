//! What a request path of the distribution API names, validated: a
//! repository name, a tag or a digest. A path is percent-decoded once, as
//! docker-registry's router does (`manifests/lat%65st`, `yocto%2fapp`), and
//! then validated: `%2e%2e` becomes `..`, which fails the name grammar.

use crate::oci::digest::Digest;

/// Longest repository name accepted (docker-distribution's limit).
pub const MAX_NAME: usize = 255;

/// An endpoint of `/v2/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags {
        /// Repository.
        name: &'a str,
    },
    /// `/v2/<name>/manifests/<reference>`.
    Manifest {
        /// Repository.
        name: &'a str,
        /// A tag or a digest.
        reference: Reference,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob {
        /// Repository.
        name: &'a str,
        /// The blob.
        digest: Digest,
    },
    /// `/v2/<name>/referrers/<digest>`.
    Referrers {
        /// Repository.
        name: &'a str,
        /// The subject.
        digest: Digest,
    },
    /// `/v2/<name>/blobs/uploads/…`: only writes go there.
    Upload,
}

/// A manifest reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A tag (validated).
    Tag(String),
    /// A digest (validated).
    Digest(Digest),
}

/// Why a path names nothing servable; each is one spec error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// Not an endpoint of the API.
    NotFound,
    /// The repository name breaks the grammar.
    NameInvalid,
    /// A malformed digest.
    DigestInvalid,
    /// A malformed tag (no manifest can have it).
    TagInvalid,
}

impl Route<'_> {
    /// The methods it answers, for `Allow` (an upload: none).
    pub fn allowed(&self) -> &'static str {
        match self {
            Route::Catalog | Route::Tags { .. } => "GET",
            Route::Upload => "",
            _ => "GET, HEAD",
        }
    }
}

/// `path` percent-decoded; `None` for a bad escape, bytes that are not
/// UTF-8, or a decoded control character (NUL included).
pub fn decode(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !path.contains('%') {
        return Some(std::borrow::Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    let text = String::from_utf8(out).ok()?;
    match text.chars().any(char::is_control) {
        true => None,
        false => Some(std::borrow::Cow::Owned(text)),
    }
}

/// Parses an API path (without the query), already decoded ([`decode`]).
pub fn parse(path: &str) -> Result<Route<'_>, RouteError> {
    let rest = match path {
        "/v2" | "/v2/" => return Ok(Route::Base),
        "/v2/_catalog" => return Ok(Route::Catalog),
        p => p.strip_prefix("/v2/").ok_or(RouteError::NotFound)?,
    };
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(Route::Tags {
            name: name_of(name)?,
        });
    }
    if rest.contains("/blobs/uploads") {
        return Ok(Route::Upload);
    }
    let (head, last) = rest.rsplit_once('/').ok_or(RouteError::NotFound)?;
    let (name, kind) = head.rsplit_once('/').ok_or(RouteError::NotFound)?;
    match kind {
        "manifests" => {
            let name = name_of(name)?;
            let reference = if last.contains(':') {
                Reference::Digest(digest_of(last)?)
            } else if is_tag(last) {
                Reference::Tag(last.to_owned())
            } else {
                return Err(RouteError::TagInvalid);
            };
            Ok(Route::Manifest { name, reference })
        }
        "blobs" => Ok(Route::Blob {
            name: name_of(name)?,
            digest: digest_of(last)?,
        }),
        "referrers" => Ok(Route::Referrers {
            name: name_of(name)?,
            digest: digest_of(last)?,
        }),
        _ => Err(RouteError::NotFound),
    }
}

/// Every label [`label`] gives, in the order metrics list them.
pub const LABELS: [&str; 10] = [
    "base",
    "catalog",
    "tags",
    "manifests",
    "blobs",
    "referrers",
    "uploads",
    "health",
    "page",
    "other",
];

/// The endpoint `path` is a request to, as metrics count it: one of a
/// fixed set of labels ([`LABELS`]), from the path's shape alone (nothing a client
/// writes becomes a label).
pub fn label(path: &str) -> &'static str {
    match path {
        "/" => return "page",
        "/healthz" | "/debug/health" => return "health",
        "/v2" | "/v2/" => return "base",
        "/v2/_catalog" => return "catalog",
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return "other";
    };
    if rest.ends_with("/tags/list") {
        return "tags";
    }
    if rest.contains("/blobs/uploads") {
        return "uploads";
    }
    let kind = rest
        .rsplit_once('/')
        .and_then(|(head, _)| head.rsplit_once('/'))
        .map(|(_, kind)| kind);
    match kind {
        Some("manifests") => "manifests",
        Some("blobs") => "blobs",
        Some("referrers") => "referrers",
        _ => "other",
    }
}

fn name_of(name: &str) -> Result<&str, RouteError> {
    if is_name(name) {
        Ok(name)
    } else {
        Err(RouteError::NameInvalid)
    }
}

fn digest_of(s: &str) -> Result<Digest, RouteError> {
    Digest::parse(s).map_err(|_| RouteError::DigestInvalid)
}

/// The spec's repository name grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`,
/// at most [`MAX_NAME`] bytes.
pub fn is_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && name.split('/').all(is_component)
}

fn is_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Separators between alphanumeric runs: one '.', one or two '_', any '-'s.
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while bytes.get(i).is_some_and(|b| !alnum(*b)) {
            i += 1;
        }
        let sep = bytes.get(start..i).unwrap_or_default();
        let ok = matches!(sep, b"" | b"." | b"_" | b"__") || sep.iter().all(|b| *b == b'-');
        if !ok {
            return false;
        }
        while bytes.get(i).is_some_and(|b| alnum(*b)) {
            i += 1;
        }
    }
    true
}

/// The spec's tag grammar: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    match bytes.split_first() {
        Some((first, rest)) => {
            word(first) && rest.len() <= 127 && rest.iter().all(|b| word(b) || b".-".contains(b))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let cases = [
            ("/", "page"),
            ("/healthz", "health"),
            ("/debug/health", "health"),
            ("/v2/", "base"),
            ("/v2", "base"),
            ("/v2/_catalog", "catalog"),
            ("/v2/a/b/tags/list", "tags"),
            ("/v2/a/manifests/latest", "manifests"),
            ("/v2/a/b/manifests/sha256:00", "manifests"),
            ("/v2/a/blobs/sha256:00", "blobs"),
            ("/v2/a/blobs/uploads/", "uploads"),
            ("/v2/a/referrers/sha256:00", "referrers"),
            ("/v2/manifests", "other"),
            ("/v2/a/\"}{\n/x", "other"),
            ("/metrics", "other"),
            ("", "other"),
        ];
        for (path, want) in cases {
            assert_eq!(label(path), want, "{path:?}");
            assert!(LABELS.contains(&want));
        }
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn paths() {
        let d = Digest::parse(D).unwrap();
        let long = format!("/v2/{}/tags/list", "a".repeat(256));
        let cases: Vec<(String, Result<Route, RouteError>)> = vec![
            ("/v2/".into(), Ok(Route::Base)),
            ("/v2".into(), Ok(Route::Base)),
            ("/v2/_catalog".into(), Ok(Route::Catalog)),
            ("/v2/app/tags/list".into(), Ok(Route::Tags { name: "app" })),
            (
                "/v2/yocto/app/tags/list".into(),
                Ok(Route::Tags { name: "yocto/app" }),
            ),
            (
                "/v2/a/manifests/latest".into(),
                Ok(Route::Manifest {
                    name: "a",
                    reference: Reference::Tag("latest".into()),
                }),
            ),
            (
                format!("/v2/a/b/manifests/{D}"),
                Ok(Route::Manifest {
                    name: "a/b",
                    reference: Reference::Digest(d.clone()),
                }),
            ),
            (
                format!("/v2/a/blobs/{D}"),
                Ok(Route::Blob {
                    name: "a",
                    digest: d.clone(),
                }),
            ),
            (
                format!("/v2/a/referrers/{D}"),
                Ok(Route::Referrers {
                    name: "a",
                    digest: d,
                }),
            ),
            ("/v2/a/blobs/uploads/".into(), Ok(Route::Upload)),
            (
                "/v2/a/blobs/sha256:xyz".into(),
                Err(RouteError::DigestInvalid),
            ),
            (
                "/v2/a/blobs/sha256:ABCDEF".into(),
                Err(RouteError::DigestInvalid),
            ),
            (
                "/v2/a/manifests/sha256:12".into(),
                Err(RouteError::DigestInvalid),
            ),
            ("/v2/a/manifests/.bad".into(), Err(RouteError::TagInvalid)),
            (
                format!("/v2/a/manifests/{}", "t".repeat(129)),
                Err(RouteError::TagInvalid),
            ),
            (
                "/v2/../manifests/latest".into(),
                Err(RouteError::NameInvalid),
            ),
            (
                "/v2/%2e%2e/manifests/latest".into(),
                Err(RouteError::NameInvalid),
            ),
            (
                "/v2/App/manifests/latest".into(),
                Err(RouteError::NameInvalid),
            ),
            (
                "/v2/a//b/manifests/latest".into(),
                Err(RouteError::NameInvalid),
            ),
            ("/v2/a-/tags/list".into(), Err(RouteError::NameInvalid)),
            ("/v2/a..b/tags/list".into(), Err(RouteError::NameInvalid)),
            ("/v2/a___b/tags/list".into(), Err(RouteError::NameInvalid)),
            (long, Err(RouteError::NameInvalid)),
            ("/v2/a/other/x".into(), Err(RouteError::NotFound)),
            ("/v1/a/manifests/latest".into(), Err(RouteError::NotFound)),
            ("/".into(), Err(RouteError::NotFound)),
            ("/v2/a".into(), Err(RouteError::NotFound)),
        ];
        for (path, want) in cases {
            assert_eq!(parse(&path), want, "{path}");
        }
    }

    #[test]
    fn names_and_tags() {
        for ok in [
            "a",
            "a0",
            "a.b",
            "a_b",
            "a__b",
            "a---b",
            "yocto/app",
            "x/y/z-1.2",
        ] {
            assert!(is_name(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a/", "/a", "a._b", "a b", "é"] {
            assert!(!is_name(bad), "{bad}");
        }
        for ok in ["latest", "v1.0", "_x", "A-b.c_d", &"t".repeat(128)] {
            assert!(is_tag(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"t".repeat(129)] {
            assert!(!is_tag(bad), "{bad}");
        }
    }
}
