//! Content digests (`algorithm:encoded`), validated before any path is built.
//!
//! Only the registered algorithms `sha256` and `sha512` are accepted, in
//! lower-case hex of the exact length: a digest that passes [`Digest::parse`]
//! is always safe to use as a file name (`sha256:../../x`, CVE-2024-3727,
//! never gets that far).

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A registered digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    /// SHA-256, 64 hex digits.
    Sha256,
    /// SHA-512, 128 hex digits.
    Sha512,
}

impl Algorithm {
    /// The name used in digests and as the directory under `blobs/`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// Hashes `data` with this algorithm.
    pub fn hash(self, data: &[u8]) -> Digest {
        let mut h = Hasher::new(self);
        h.update(data);
        h.finish()
    }
}

/// An incremental hash, for content too large to hold in memory.
#[derive(Debug, Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A new hash of `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything added.
    pub fn finish(self) -> Digest {
        let hex = match self {
            Hasher::Sha256(h) => Hex::Sha256(crate::oci::hex::encode(&h.finalize())),
            Hasher::Sha512(h) => Hex::Sha512(Box::new(crate::oci::hex::encode(&h.finalize()))),
        };
        Digest { hex }
    }
}

/// A validated digest.
///
/// Invariant: the hex is lower-case ASCII of exactly the algorithm's length.
/// A SHA-256 digest is held inline (no allocation: a snapshot holds several
/// copies per blob); ordering is by algorithm, then hex, as for the strings.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: Hex,
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Hex {
    Sha256([u8; 64]),
    Sha512(Box<[u8; 128]>),
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// Why a digest string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestError(pub &'static str);

impl Digest {
    /// Parses and validates `s`.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let Some((alg, encoded)) = s.split_once(':') else {
            return Err(DigestError("no ':' between algorithm and encoded part"));
        };
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ if is_algorithm_grammar(alg) => {
                return Err(DigestError("algorithm not supported (sha256, sha512 are)"));
            }
            _ => return Err(DigestError("algorithm does not follow the grammar")),
        };
        if encoded.len() != algorithm.hex_len() {
            return Err(DigestError("encoded part has the wrong length"));
        }
        if !encoded
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(DigestError("encoded part is not lower-case hex"));
        }
        Digest::from_hex(encoded).ok_or(DigestError("encoded part has the wrong length"))
    }

    /// From checked lower-case hex, by its length.
    fn from_hex(encoded: &str) -> Option<Self> {
        let bytes = encoded.as_bytes();
        let hex = match bytes.len() {
            64 => Hex::Sha256(bytes.try_into().ok()?),
            128 => Hex::Sha512(Box::new(bytes.try_into().ok()?)),
            _ => return None,
        };
        Some(Digest { hex })
    }

    /// SHA-256 of `data`.
    pub fn sha256_of(data: &[u8]) -> Self {
        Algorithm::Sha256.hash(data)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self.hex {
            Hex::Sha256(_) => Algorithm::Sha256,
            Hex::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// A SHA-256 digest's 32 bytes (for compact tables); `None` for others.
    pub fn sha256_bytes(&self) -> Option<[u8; 32]> {
        let Hex::Sha256(hex) = &self.hex else {
            return None;
        };
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let nibble = |c: u8| match c {
                b'0'..=b'9' => c - b'0',
                _ => c.wrapping_sub(b'a').wrapping_add(10) & 0xf,
            };
            let (hi, lo) = (pair.first().copied()?, pair.get(1).copied()?);
            *byte = nibble(hi) << 4 | nibble(lo);
        }
        Some(out)
    }

    /// The SHA-256 digest whose bytes are `bytes`.
    pub fn from_sha256_bytes(bytes: &[u8; 32]) -> Self {
        Digest {
            hex: Hex::Sha256(crate::oci::hex::encode(bytes)),
        }
    }

    /// The hex part, safe as a file name.
    pub fn encoded(&self) -> &str {
        let bytes: &[u8] = match &self.hex {
            Hex::Sha256(b) => b,
            Hex::Sha512(b) => &b[..],
        };
        // ASCII hex by construction.
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    /// `blobs/<alg>/<hex>`, relative to a layout's root.
    pub fn blob_path(&self) -> String {
        format!("blobs/{}/{}", self.algorithm().name(), self.encoded())
    }

    /// Whether `data` hashes to this digest.
    pub fn matches(&self, data: &[u8]) -> Result<(), Digest> {
        let actual = self.algorithm().hash(data);
        if actual == *self { Ok(()) } else { Err(actual) }
    }
}

/// `[a-z0-9]+([+._-][a-z0-9]+)*`, the image-spec algorithm grammar.
fn is_algorithm_grammar(alg: &str) -> bool {
    !alg.is_empty()
        && alg.split(['+', '.', '_', '-']).all(|part| {
            !part.is_empty() && part.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9'))
        })
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm().name(), self.encoded())
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX64: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_table() {
        let hex128 = "a".repeat(128);
        let upper = HEX64.to_uppercase();
        let cases: Vec<(String, Result<&str, &str>)> = vec![
            (format!("sha256:{HEX64}"), Ok("sha256")),
            (format!("sha512:{hex128}"), Ok("sha512")),
            ("sha256:../../etc/passwd".into(), Err("wrong length")),
            (format!("sha256:{}", &HEX64[..63]), Err("wrong length")),
            (format!("sha256:{HEX64}0"), Err("wrong length")),
            (format!("sha256:{upper}"), Err("not lower-case hex")),
            (
                format!("sha256:{}/{}", &HEX64[..31], &HEX64[..32]),
                Err("not lower-case hex"),
            ),
            (format!("sha512:{HEX64}"), Err("wrong length")),
            (format!("md5:{HEX64}"), Err("not supported")),
            (format!("sha256+b64u:{HEX64}"), Err("not supported")),
            (format!("SHA256:{HEX64}"), Err("grammar")),
            (format!("../x:{HEX64}"), Err("grammar")),
            (format!(":{HEX64}"), Err("grammar")),
            (HEX64.into(), Err("no ':'")),
            ("".into(), Err("no ':'")),
        ];
        for (input, want) in cases {
            match (Digest::parse(&input), want) {
                (Ok(d), Ok(alg)) => {
                    assert_eq!(d.algorithm().name(), alg, "{input}");
                    assert_eq!(d.to_string(), input);
                }
                (Err(DigestError(why)), Err(frag)) => assert!(why.contains(frag), "{input}: {why}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn hashing_and_paths() {
        let d = Digest::sha256_of(b"");
        assert_eq!(d.to_string(), format!("sha256:{HEX64}"));
        assert_eq!(d.blob_path(), format!("blobs/sha256/{HEX64}"));
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), Digest::sha256_of(b"abc"));
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(b"abc");
        assert_eq!(h.finish(), Algorithm::Sha512.hash(b"abc"));
        assert!(d.matches(b"").is_ok());
        assert_eq!(d.matches(b"x").unwrap_err(), Digest::sha256_of(b"x"));
        let d512 = Algorithm::Sha512.hash(b"abc");
        assert!(d512.to_string().starts_with("sha512:ddaf35a193617aba"));
        // Bytes and back.
        let bytes = d.sha256_bytes().unwrap();
        assert_eq!(Digest::from_sha256_bytes(&bytes), d);
        assert_eq!(d512.sha256_bytes(), None);
        // Held inline: no larger than the hex.
        assert!(std::mem::size_of::<Digest>() <= 72);
        // Ordered as the strings are.
        let mut ds = [
            d512.clone(),
            Digest::sha256_of(b"b"),
            Digest::sha256_of(b"a"),
            d,
        ];
        ds.sort();
        let mut strings: Vec<String> = ds.iter().map(ToString::to_string).collect();
        let sorted = {
            let mut s = strings.clone();
            s.sort();
            s
        };
        assert_eq!(strings, sorted);
        strings.dedup();
        assert_eq!(strings.len(), 4);
    }
}
