//! Indexing an uncompressed tar archive in place: where each member's bytes
//! are, so a blob can be served as a byte range of the archive without
//! extracting anything.
//!
//! Reads headers only and seeks past member data, so indexing costs grow with
//! the number of members, not their bytes. Understands ustar (with `prefix`),
//! pax extended headers (`path`, `size`) and GNU long names (`L`); sizes in
//! octal or base-256. Refuses what cannot be served safely: absolute names or
//! `..`, duplicate names, sparse members, truncated archives.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// One block of a tar archive.
const BLOCK: u64 = 512;
/// Pax records and GNU long names are read into memory: cap them.
const MAX_META: u64 = 1024 * 1024;
/// The most members an archive may have (each is an index entry held while
/// the archive is served); documented in README.md.
pub const MAX_MEMBERS: usize = 262_144;

/// Why an archive cannot be indexed.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// Compressed input: not served in place.
    #[error("archive is {0}-compressed; decompress it first (e.g. {1})")]
    Compressed(&'static str, &'static str),
    /// The archive ends inside a header or a member.
    #[error("truncated archive: {0}")]
    Truncated(String),
    /// A header is not a tar header.
    #[error("not a tar archive: bad header at offset {0}")]
    BadHeader(u64),
    /// A member name is absolute or climbs out with `..`.
    #[error("unsafe member name {0:?}")]
    UnsafeName(String),
    /// Two members with one name.
    #[error("duplicate member {0:?}")]
    Duplicate(String),
    /// A sparse member.
    #[error("sparse member {0:?} is not supported")]
    Sparse(String),
    /// A malformed pax record or size field.
    #[error("malformed {what} at offset {offset}")]
    Malformed {
        /// What was malformed.
        what: &'static str,
        /// Where.
        offset: u64,
    },
    /// More members than [`MAX_MEMBERS`].
    #[error("more than {0} members, the most an archive may have")]
    TooManyMembers(usize),
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The kind of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A hard or symbolic link.
    Link,
    /// A device, FIFO or other special file.
    Other,
}

/// Where a member's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Offset of the data in the archive.
    pub offset: u64,
    /// Size of the data.
    pub size: u64,
    /// What it is.
    pub kind: MemberKind,
}

/// The members of an archive by normalised name (no `./`, no trailing `/`).
#[derive(Debug, Clone, Default)]
pub struct TarIndex {
    /// Members by name.
    pub members: HashMap<String, Member>,
}

/// Names the compression of `head` (the first bytes of a file), if any.
pub fn compression(head: &[u8]) -> Option<(&'static str, &'static str)> {
    match head {
        [0x1f, 0x8b, ..] => Some(("gzip", "gunzip -k FILE")),
        [b'B', b'Z', b'h', ..] => Some(("bzip2", "bunzip2 -k FILE")),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Some(("xz", "unxz -k FILE")),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(("zstd", "unzstd FILE")),
        [0x04, 0x22, 0x4d, 0x18, ..] => Some(("lz4", "unlz4 FILE")),
        _ => None,
    }
}

/// Whether `head` looks like a tar header (ustar magic, or a valid checksum).
pub fn looks_like_tar(head: &[u8]) -> bool {
    head.get(257..262) == Some(b"ustar") || head.len() >= 512 && checksum_ok(head)
}

/// Indexes `file`: reads each header in turn, folds extension headers (pax,
/// GNU long names) into the member that follows, and records each member.
pub fn index(file: &File) -> Result<TarIndex, TarError> {
    index_at_most(file, MAX_MEMBERS)
}

/// [`index`], refusing more than `max_members` members.
fn index_at_most(file: &File, max_members: usize) -> Result<TarIndex, TarError> {
    let len = file.metadata()?.len();
    refuse_compressed(file)?;
    let mut out = TarIndex::default();
    let mut pending = Pending::default();
    let mut pos = 0u64;
    while let Some(hdr) = read_header(file, pos, len)? {
        let extent = Extent::of(&hdr, pos, len, &pending)?;
        match hdr[156] {
            typeflag @ (b'x' | b'g' | b'L') => pending.read(file, typeflag, &extent)?,
            _ => {
                let (name, member) = pending.take_member(&hdr, &extent)?;
                // Links and directories carry no data; "." (the root) may appear once.
                if !name.is_empty() && out.members.insert(name.clone(), member).is_some() {
                    return Err(TarError::Duplicate(name));
                }
                if out.members.len() > max_members {
                    return Err(TarError::TooManyMembers(max_members));
                }
            }
        }
        pos = extent.next;
    }
    Ok(out)
}

/// Refuses a compressed archive, naming its compression.
fn refuse_compressed(file: &File) -> Result<(), TarError> {
    let mut head = [0u8; 6];
    let n = crate::files::readat::fill_at(file, 0, &mut head)?;
    match compression(head.get(..n).unwrap_or_default()) {
        Some((name, hint)) => Err(TarError::Compressed(name, hint)),
        None => Ok(()),
    }
}

/// The header block at `pos`, checksum checked; `None` at the end-of-archive
/// marker (two zero blocks; GNU tar writes both, and both must be there).
fn read_header(file: &File, pos: u64, len: u64) -> Result<Option<[u8; 512]>, TarError> {
    let mut hdr = [0u8; 512];
    read_block(file, pos, len, &mut hdr, "in a header")?;
    if hdr.iter().all(|&b| b == 0) {
        let mut second = [0u8; 512];
        let what = "in the end-of-archive marker";
        read_block(file, pos + BLOCK, len, &mut second, what)?;
        return Ok(None);
    }
    if !checksum_ok(&hdr) {
        return Err(TarError::BadHeader(pos));
    }
    Ok(Some(hdr))
}

/// Where a header's member data is, checked to lie within the file.
struct Extent {
    /// The header's offset.
    pos: u64,
    /// The data's offset and size.
    data: u64,
    size: u64,
    /// The next header's offset (data padded to whole blocks).
    next: u64,
}

impl Extent {
    /// The extent of the member whose header `hdr` is at `pos`; a pax `size`
    /// record pending for it wins over the header's field.
    fn of(hdr: &[u8; 512], pos: u64, len: u64, pending: &Pending) -> Result<Self, TarError> {
        let malformed = |what| TarError::Malformed { what, offset: pos };
        let mut size = parse_size(&hdr[124..136]).ok_or(malformed("size field"))?;
        if let Some(s) = pending.pax.get("size") {
            size = s.parse().map_err(|_| malformed("pax size"))?;
        }
        let data = pos + BLOCK;
        let padded = size.div_ceil(BLOCK).checked_mul(BLOCK);
        let next = padded
            .and_then(|p| data.checked_add(p))
            .ok_or(malformed("size field"))?;
        if data.checked_add(size).is_none_or(|end| end > len) {
            return Err(TarError::Truncated(format!(
                "member at offset {pos} needs {size} bytes, the file ends first"
            )));
        }
        Ok(Extent {
            pos,
            data,
            size,
            next,
        })
    }
}

/// What extension headers say about the next member.
#[derive(Default)]
struct Pending {
    /// Pax `x` records.
    pax: HashMap<String, String>,
    /// A GNU `L` long name.
    long_name: Option<String>,
}

impl Pending {
    /// Reads an extension header's data (capped: it is held in memory).
    fn read(&mut self, file: &File, typeflag: u8, extent: &Extent) -> Result<(), TarError> {
        let malformed = |what| TarError::Malformed {
            what,
            offset: extent.pos,
        };
        if extent.size > MAX_META {
            return Err(malformed("oversized extended header"));
        }
        let mut buf = vec![0u8; extent.size as usize];
        file.read_exact_at(&mut buf, extent.data)?;
        match typeflag {
            b'x' => self.pax = parse_pax(&buf).ok_or(malformed("pax header"))?,
            b'L' => self.long_name = Some(cstr(&buf)),
            _ => {} // global pax headers carry nothing we serve
        }
        Ok(())
    }

    /// The member of header `hdr`, named by what is pending (pax `path`, then
    /// a long name, then the header's own), which is then cleared.
    fn take_member(
        &mut self,
        hdr: &[u8; 512],
        extent: &Extent,
    ) -> Result<(String, Member), TarError> {
        let raw_name = self
            .pax
            .remove("path")
            .or_else(|| self.long_name.take())
            .unwrap_or_else(|| ustar_name(hdr));
        let typeflag = hdr[156];
        let is_sparse = typeflag == b'S' || self.pax.keys().any(|k| k.starts_with("GNU.sparse."));
        *self = Pending::default();
        if is_sparse {
            return Err(TarError::Sparse(raw_name));
        }
        let kind = match typeflag {
            b'0' | 0 | b'7' => MemberKind::File,
            b'5' => MemberKind::Dir,
            b'1' | b'2' => MemberKind::Link,
            _ => MemberKind::Other,
        };
        let member = Member {
            offset: extent.data,
            size: if kind == MemberKind::File {
                extent.size
            } else {
                0
            },
            kind,
        };
        Ok((normalize(&raw_name)?, member))
    }
}

fn read_block(
    file: &File,
    pos: u64,
    len: u64,
    buf: &mut [u8; 512],
    what: &str,
) -> Result<(), TarError> {
    if pos + BLOCK > len {
        return Err(TarError::Truncated(format!(
            "the file ends {what} at offset {pos}"
        )));
    }
    file.read_exact_at(buf, pos)?;
    Ok(())
}

fn checksum_ok(hdr: &[u8]) -> bool {
    let Some(field) = hdr.get(148..156) else {
        return false;
    };
    let Some(want) = parse_octal(field) else {
        return false;
    };
    let sum: u64 = hdr
        .iter()
        .take(512)
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum();
    sum == want
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let s: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    let s = std::str::from_utf8(&s).ok()?;
    u64::from_str_radix(s, 8).ok()
}

/// Octal, or GNU base-256 (first byte's high bit set) for sizes ≥ 8 GiB.
fn parse_size(field: &[u8]) -> Option<u64> {
    match field.first() {
        Some(&b) if b & 0x80 != 0 => {
            let mut v: u64 = u64::from(b & 0x7f);
            for &byte in field.get(1..)? {
                v = v.checked_mul(256)?.checked_add(u64::from(byte))?;
            }
            Some(v)
        }
        _ => parse_octal(field),
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or_default()).into_owned()
}

fn ustar_name(hdr: &[u8; 512]) -> String {
    let name = cstr(&hdr[0..100]);
    let prefix = if &hdr[257..262] == b"ustar" {
        cstr(&hdr[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// Parses pax records `"%d %s=%s\n"`.
fn parse_pax(mut buf: &[u8]) -> Option<HashMap<String, String>> {
    let mut out = HashMap::new();
    while !buf.is_empty() {
        let space = buf.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(buf.get(..space)?).ok()?.parse().ok()?;
        let record = buf.get(space + 1..len)?;
        let record = record.strip_suffix(b"\n")?;
        let eq = record.iter().position(|&b| b == b'=')?;
        let key = String::from_utf8(record.get(..eq)?.to_vec()).ok()?;
        let value = String::from_utf8(record.get(eq + 1..)?.to_vec()).ok()?;
        out.insert(key, value);
        buf = buf.get(len..)?;
    }
    Some(out)
}

/// `./a/b/` → `a/b`; refuses absolute names and `..`.
fn normalize(name: &str) -> Result<String, TarError> {
    if name.starts_with('/') {
        return Err(TarError::UnsafeName(name.to_owned()));
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(TarError::UnsafeName(name.to_owned())),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_fields() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"00000000012\0", Some(10)),
            (b"    12 \0\0\0\0\0", Some(10)),
            (b"\0\0\0\0\0\0\0\0\0\0\0\0", Some(0)),
            (&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00], Some(512)),
            (
                &[0x80, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 1],
                Some((2u64 << 32) + 1),
            ),
            (b"0000000009\0\0", None),
            (
                &[
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
                None,
            ),
        ];
        for (field, want) in cases {
            assert_eq!(parse_size(field), *want, "{field:?}");
        }
    }

    #[test]
    fn names() {
        let cases = [
            ("./index.json", Ok("index.json")),
            ("index.json", Ok("index.json")),
            ("./", Ok("")),
            ("top/blobs/sha256/", Ok("top/blobs/sha256")),
            ("a//b", Ok("a/b")),
            ("/etc/passwd", Err(())),
            ("../x", Err(())),
            ("./blobs/../../x", Err(())),
        ];
        for (input, want) in cases {
            assert_eq!(
                normalize(input).map_err(|_| ()),
                want.map(str::to_owned),
                "{input}"
            );
        }
    }

    #[test]
    fn pax_records() {
        let rec = b"30 path=very/long/name/here/x\n20 size=10737418240\n";
        let m = parse_pax(rec).unwrap();
        assert_eq!(m["path"], "very/long/name/here/x");
        assert_eq!(m["size"], "10737418240");
        assert!(parse_pax(b"99 path=x\n").is_none());
        assert!(parse_pax(b"x path=x\n").is_none());
        assert!(parse_pax(b"9 pathx\n").is_none());
    }

    /// A valid archive, then thousands of deterministic corruptions of it:
    /// every one indexes or is refused, none panics.
    #[test]
    fn corrupted_archives_never_panic() {
        use crate::testing::testutil::tarw;
        let mut good = Vec::new();
        for (name, data) in [
            ("./oci-layout", &b"{}"[..]),
            ("./index.json", b"{\"a\":1}"),
            ("./blobs/sha256/x", &[7u8; 700]),
        ] {
            tarw::member(&mut good, name, data, b'0');
        }
        tarw::finish(&mut good);
        let write = |bytes: &[u8]| {
            use std::io::Write;
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(bytes).unwrap();
            f
        };
        assert_eq!(index(&write(&good)).unwrap().members.len(), 3);
        // Bounded: one member over the limit is refused, naming it.
        assert!(index_at_most(&write(&good), 3).is_ok());
        let err = index_at_most(&write(&good), 2).unwrap_err();
        assert!(matches!(err, TarError::TooManyMembers(2)), "{err}");
        let mut seed = 0x2545f4914f6cdd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut refused = 0;
        for _ in 0..3000 {
            let mut bad = good.clone();
            match next() % 3 {
                0 => bad.truncate((next() as usize) % good.len()),
                1 => {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() as usize) % bad.len();
                        bad[i] = next() as u8;
                    }
                }
                _ => {
                    // A corrupted size field, re-checksummed so that it is believed.
                    let hdr = 512 * ((next() as usize) % 3).min(1);
                    let field: Vec<u8> = (0..12).map(|_| next() as u8).collect();
                    bad[hdr + 124..hdr + 136].copy_from_slice(&field);
                    tarw::set_checksum(&mut bad[hdr..hdr + 512]);
                }
            }
            if index(&write(&bad)).is_err() {
                refused += 1;
            }
        }
        assert!(refused > 1000, "only {refused} of 3000 corruptions refused");

        // A base-256 size near u64::MAX: offset + size would overflow.
        let mut huge = good.clone();
        huge[124..136].copy_from_slice(&[
            0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00,
        ]);
        tarw::set_checksum(&mut huge[..512]);
        assert!(matches!(
            index(&write(&huge)),
            Err(TarError::Truncated(_) | TarError::Malformed { .. })
        ));
    }

    #[test]
    fn compression_magic() {
        assert_eq!(compression(&[0x1f, 0x8b, 8]).map(|c| c.0), Some("gzip"));
        assert_eq!(compression(b"BZh91AY").map(|c| c.0), Some("bzip2"));
        assert_eq!(
            compression(&[0xfd, b'7', b'z', b'X', b'Z', 0]).map(|c| c.0),
            Some("xz")
        );
        assert_eq!(
            compression(&[0x28, 0xb5, 0x2f, 0xfd]).map(|c| c.0),
            Some("zstd")
        );
        assert_eq!(compression(b"./index.json"), None);
    }
}
