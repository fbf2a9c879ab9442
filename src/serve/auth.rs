//! HTTP basic authentication from an htpasswd file of bcrypt hashes, as
//! docker-registry's `htpasswd` auth reads it (`htpasswd -Bbn USER PASS`).
//! Verified credentials are remembered (a bounded set of their SHA-256), so
//! bcrypt runs once per client, not once per request. Unauthenticated work
//! is bounded apart from answers (see `http`): an unknown user costs the same
//! bcrypt as a known one (names cannot be told by timing), hashes of a cost
//! over [`MAX_COST`] are refused at load, and [`Failures`] are remembered per
//! peer.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use sha2::{Digest as _, Sha256};

use super::reply::{Code, Reply};

/// Most verified credentials remembered.
const MAX_REMEMBERED: usize = 1024;
/// Highest bcrypt cost accepted (each step doubles a check's time; 14 is
/// about a second here, 31 days).
pub const MAX_COST: u32 = 14;
/// Failed checks from one address within [`FAILURE_WINDOW`] before it is
/// refused without a check until the window ends.
pub const MAX_FAILURES: u32 = 10;
/// See [`MAX_FAILURES`].
pub const FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Most addresses whose failures are remembered.
const MAX_PEERS: usize = 4096;

/// Why an htpasswd file is refused.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// It cannot be read.
    #[error("htpasswd file {path}: {err}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        err: std::io::Error,
    },
    /// A line is not `user:bcrypt-hash` of a cost up to [`MAX_COST`].
    #[error(
        "htpasswd file {path}, line {line}: not USER:BCRYPT-HASH of cost 4 to {MAX_COST} (only bcrypt, as docker-registry; make one with htpasswd -B)"
    )]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number.
        line: usize,
    },
    /// No users.
    #[error("htpasswd file {0}: no users")]
    Empty(PathBuf),
}

/// The users and their hashes.
#[derive(Debug)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// A hash of the highest cost among the users', checked for unknown users.
    decoy: String,
    verified: Mutex<HashSet<[u8; 32]>>,
    /// Failed checks per address.
    pub failures: Failures,
}

/// Failed password checks per peer address, in a window (bounded: when full,
/// the oldest windows are forgotten).
#[derive(Debug, Default)]
pub struct Failures {
    peers: Mutex<HashMap<std::net::IpAddr, (u32, std::time::Instant)>>,
}

impl Failures {
    /// Whether `peer` failed [`MAX_FAILURES`] times within the window.
    pub fn blocked(&self, peer: std::net::IpAddr, now: std::time::Instant) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.get(&peer).is_some_and(|(n, since)| {
            *n >= MAX_FAILURES && now.duration_since(*since) < FAILURE_WINDOW
        })
    }

    /// Counts a failure of `peer`.
    pub fn failed(&self, peer: std::net::IpAddr, now: std::time::Instant) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
            if peers.len() >= MAX_PEERS {
                return;
            }
        }
        let e = peers.entry(peer).or_insert((0, now));
        if now.duration_since(e.1) >= FAILURE_WINDOW {
            *e = (0, now);
        }
        e.0 = e.0.saturating_add(1);
    }
}

/// A bcrypt hash's cost, if it is one of the accepted forms.
fn cost(hash: &str) -> Option<u32> {
    let rest = ["$2y$", "$2a$", "$2b$"]
        .iter()
        .find_map(|p| hash.strip_prefix(p))?;
    let (cost, body) = rest.split_once('$')?;
    let cost: u32 = cost.parse().ok().filter(|c| (4..=MAX_COST).contains(c))?;
    (body.len() == 53).then_some(cost)
}

/// What an `Authorization` header holds: `Basic` (any case) credentials.
fn basic(authorization: Option<&str>) -> Option<&str> {
    let (scheme, value) = authorization?.trim().split_once(char::is_whitespace)?;
    scheme.eq_ignore_ascii_case("basic").then(|| value.trim())
}

impl Htpasswd {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, HtpasswdError> {
        let text = super::config::read_settings(path)
            .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
            .map_err(|err| HtpasswdError::Read {
                path: path.to_owned(),
                err,
            })?;
        Self::parse(&text).map_err(|line| match line {
            0 => HtpasswdError::Empty(path.to_owned()),
            line => HtpasswdError::Line {
                path: path.to_owned(),
                line,
            },
        })
    }

    /// Parses the text; the failing line number (1-based), or 0 when empty.
    fn parse(text: &str) -> Result<Self, usize> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line.split_once(':').ok_or(i + 1)?;
            if user.is_empty() || cost(hash).is_none() {
                return Err(i + 1);
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        let decoy = users
            .values()
            .max_by_key(|h| cost(h))
            .cloned()
            .ok_or(0usize)?;
        Ok(Htpasswd {
            users,
            decoy,
            verified: Mutex::new(HashSet::new()),
            failures: Failures::default(),
        })
    }

    /// The answer without a password check, when there is one: `Some(true)`
    /// for credentials verified before, `Some(false)` for a header that is
    /// no Basic credentials at all; `None` when [`Htpasswd::check`] must hash.
    pub fn remembered(&self, authorization: Option<&str>) -> Option<bool> {
        let Some(encoded) = basic(authorization) else {
            return Some(false);
        };
        let key: [u8; 32] = Sha256::digest(encoded.as_bytes()).into();
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.contains(&key).then_some(true)
    }

    /// The hash a password for `user` is checked against, and whether the
    /// user is known: an unknown one is checked against the costliest known
    /// hash (a decoy), so that the answer takes as long and names no one.
    fn hash_to_check(&self, user: &str) -> (&str, bool) {
        match self.users.get(user) {
            Some(hash) => (hash, true),
            None => (&self.decoy, false),
        }
    }

    /// Whether an `Authorization` header holds a known user's password.
    /// The same bcrypt work for an unknown user as for a known one.
    pub fn check(&self, authorization: Option<&str>) -> bool {
        let Some(encoded) = basic(authorization) else {
            return false;
        };
        let key: [u8; 32] = Sha256::digest(encoded.as_bytes()).into();
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.contains(&key) {
            return true;
        }
        drop(verified);
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded);
        let pair = decoded
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .unwrap_or_default();
        let (user, password) = pair.split_once(':').unwrap_or(("", ""));
        let (hash, known) = self.hash_to_check(user);
        let ok = bcrypt::verify(password, hash).unwrap_or(false) && known;
        if ok {
            verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified.len() < MAX_REMEMBERED {
                verified.insert(key);
            }
        }
        ok
    }
}

/// The answer to a request without valid credentials.
pub(crate) fn challenge() -> Reply {
    Reply::error(Code::Unauthorized, None)
        .with("WWW-Authenticate", "Basic realm=\"ocimux\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_users_cost_a_check_too() {
        // Before: an unknown name was refused without a bcrypt check
        // (microseconds against milliseconds). Checked by what is hashed,
        // not by a timing this machine's load would blur.
        let cheap = bcrypt::hash("s3cret", 4).unwrap();
        let dear = bcrypt::hash("s3cret", 6).unwrap();
        let h = Htpasswd::parse(&format!("alice:{cheap}\nbob:{dear}\n")).unwrap();
        let (hash, known) = h.hash_to_check("mallory");
        assert!(!known);
        assert_eq!(cost(hash), cost(&dear), "the costliest known hash");
        assert_eq!(h.hash_to_check("alice"), (cheap.as_str(), true));
        // The decoy's own password does not let an unknown user in.
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("mallory:s3cret")
        );
        assert!(!h.check(Some(&header)));
    }

    #[test]
    fn failures_are_remembered_per_peer() {
        let f = Failures::default();
        let (a, b) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let t0 = std::time::Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            f.failed(a, t0);
        }
        assert!(!f.blocked(a, t0));
        f.failed(a, t0);
        assert!(f.blocked(a, t0), "the tenth failure blocks");
        assert!(!f.blocked(b, t0), "another address is not");
        assert!(!f.blocked(a, t0 + FAILURE_WINDOW), "until the window ends");
        f.failed(a, t0 + FAILURE_WINDOW);
        assert!(
            !f.blocked(a, t0 + FAILURE_WINDOW),
            "a new window counts anew"
        );
    }

    #[test]
    fn credentials() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let h = Htpasswd::parse(&format!("# users\nalice:{hash}\n")).unwrap();
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        let cases = [
            (Some(basic("alice:s3cret")), true),
            (Some(basic("alice:s3cret")), true), // remembered
            (Some(basic("alice:wrong")), false),
            (Some(basic("bob:s3cret")), false),
            (Some(basic("alice")), false),
            (Some("Basic !!!".to_owned()), false),
            (Some("Bearer x".to_owned()), false),
            (None, false),
        ];
        for (header, want) in cases {
            assert_eq!(h.check(header.as_deref()), want, "{header:?}");
        }
        // The scheme in any case, as RFC 9110 says.
        let lower = basic("alice:s3cret").replacen("Basic", "basic", 1);
        assert!(h.check(Some(&lower)));
        // Costs past MAX_COST are refused at load (cost 31 is days per check).
        for c in [31, MAX_COST + 1] {
            let line = format!("bob:$2y${c:02}${}", "a".repeat(53));
            assert_eq!(Htpasswd::parse(&line).unwrap_err(), 1, "{line}");
        }
        assert_eq!(Htpasswd::parse("alice:{SHA}x").unwrap_err(), 1);
        assert_eq!(Htpasswd::parse("# none\n").unwrap_err(), 0);
        assert_eq!(Htpasswd::parse("nocolon").unwrap_err(), 1);
    }
}
