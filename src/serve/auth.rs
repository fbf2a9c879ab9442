//! HTTP basic authentication from an htpasswd file of bcrypt hashes, as
//! docker-registry's `htpasswd` auth reads it (`htpasswd -Bbn USER PASS`).
//! Verified credentials are remembered (a bounded set of their SHA-256), so
//! bcrypt runs once per client, not once per request.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use sha2::{Digest as _, Sha256};

use super::reply::{Code, Reply};

/// Most verified credentials remembered.
const MAX_REMEMBERED: usize = 1024;

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
    /// A line is not `user:bcrypt-hash`.
    #[error(
        "htpasswd file {path}, line {line}: not USER:BCRYPT-HASH (only bcrypt, as docker-registry; make one with htpasswd -B)"
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
    verified: Mutex<HashSet<[u8; 32]>>,
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
            let bcrypt = ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p));
            if user.is_empty() || !bcrypt {
                return Err(i + 1);
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        if users.is_empty() {
            return Err(0);
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Whether an `Authorization` header holds a known user's password.
    pub fn check(&self, authorization: Option<&str>) -> bool {
        let Some(encoded) = authorization.and_then(|a| a.strip_prefix("Basic ")) else {
            return false;
        };
        let key: [u8; 32] = Sha256::digest(encoded.trim().as_bytes()).into();
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.contains(&key) {
            return true;
        }
        drop(verified);
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(pair) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = pair.split_once(':') else {
            return false;
        };
        let ok = self
            .users
            .get(user)
            .is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false));
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
        assert_eq!(Htpasswd::parse("alice:{SHA}x").unwrap_err(), 1);
        assert_eq!(Htpasswd::parse("# none\n").unwrap_err(), 0);
        assert_eq!(Htpasswd::parse("nocolon").unwrap_err(), 1);
    }
}
