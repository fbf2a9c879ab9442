//! The tag of the generated `index.json` entry: an OCI ref name
//! (`org.opencontainers.image.ref.name`), checked once when it is made.

use std::fmt;
use std::str::FromStr;

/// Longest tag accepted (the distribution spec's limit for tags).
pub const MAX_TAG: usize = 128;

/// A tag that follows the image-spec's ref name grammar, at most
/// [`MAX_TAG`] characters:
/// `component ("/" component)*`, `component ::= alphanum (separator alphanum)*`,
/// `alphanum ::= [A-Za-z0-9]+`, `separator ::= [-._:@+] | "--"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

/// Why a tag is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not an OCI ref name: 1 to {MAX_TAG} characters, components of letters and \
     digits joined by one of - . _ : @ + (or --), separated by /"
)]
pub struct TagError;

impl Tag {
    /// Checks `s` against the grammar.
    pub fn parse(s: &str) -> Result<Self, TagError> {
        if s.len() <= MAX_TAG && s.split('/').all(is_ref_component) {
            Ok(Tag(s.to_owned()))
        } else {
            Err(TagError)
        }
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Tag {
    /// `latest`.
    fn default() -> Self {
        Tag("latest".to_owned())
    }
}

impl FromStr for Tag {
    type Err = TagError;
    fn from_str(s: &str) -> Result<Self, TagError> {
        Tag::parse(s)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_ref_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    let mut need_alnum = true;
    while let Some(&ch) = b.get(i) {
        if ch.is_ascii_alphanumeric() {
            need_alnum = false;
            i += 1;
        } else if need_alnum {
            return false;
        } else if b.get(i..i + 2) == Some(b"--") {
            need_alnum = true;
            i += 2;
        } else if matches!(ch, b'-' | b'.' | b'_' | b':' | b'@' | b'+') {
            need_alnum = true;
            i += 1;
        } else {
            return false;
        }
    }
    !need_alnum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_table() {
        for (tag, ok) in [
            ("latest", true),
            ("v1.2.3", true),
            ("v1.2.3-rc1", true),
            ("release/2026-11", true),
            ("a--b", true),
            ("sha256:abc", true),
            ("a__b", false),
            ("a---b", false),
            ("../../etc", false),
            ("a//b", false),
            ("$(id)", false),
            ("", false),
            ("-a", false),
            ("a-", false),
            ("a b", false),
        ] {
            assert_eq!(Tag::parse(tag).is_ok(), ok, "{tag:?}");
        }
        assert_eq!(
            Tag::parse(&"a".repeat(MAX_TAG)).unwrap().as_str().len(),
            128
        );
        assert_eq!(Tag::parse(&"a".repeat(MAX_TAG + 1)), Err(TagError));
        assert_eq!(Tag::default().as_str(), "latest");
    }
}
