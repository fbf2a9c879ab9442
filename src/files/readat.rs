//! Positional reads of source files: no shared cursor, so any number of
//! threads read one open file at once without a lock.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Fills `buf` from `offset`, looping over short reads and EINTR; fewer
/// bytes only at end of file. The one positional-read loop of the crate.
pub fn fill_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0usize;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        match file.read_at(rest, offset.saturating_add(filled as u64)) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Appends up to `want` bytes read at `offset` to `buf`, into its spare
/// capacity (a buffer reused chunk after chunk is neither zeroed nor faulted
/// in again: zeroing and faulting fresh buffers were 17 % of `serve`'s CPU);
/// fewer bytes only at end of file. Returns how many.
pub fn append_at(file: &File, offset: u64, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    buf.reserve(want);
    let mut filled = 0usize;
    while filled < want {
        let room = buf.capacity().saturating_sub(buf.len()).min(want - filled);
        if room == 0 {
            break;
        }
        let at = offset.saturating_add(filled as u64);
        let Ok(at) = libc::off_t::try_from(at) else {
            break; // past any file's end
        };
        match crate::files::sys::pread_append(file, buf, room, at) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads up to `size` bytes at `offset`, stopping at `limit` (the end of the
/// blob or member); fewer bytes only at end of file. Callers bound `size`.
pub fn read_at(file: &File, offset: u64, size: u64, limit: u64) -> io::Result<Vec<u8>> {
    let want = limit.saturating_sub(offset).min(size);
    let mut buf = vec![0u8; usize::try_from(want).unwrap_or(usize::MAX)];
    let filled = fill_at(file, offset, &mut buf)?;
    buf.truncate(filled);
    Ok(buf)
}

/// Reads from `offset` to the end of the file, but at most `max` bytes,
/// in chunks growing from `hint` (the size the caller expects): a small file
/// costs one buffer of its size, not one of `max`.
pub fn read_up_to(file: &File, offset: u64, max: u64, hint: u64) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = hint.clamp(1, max.max(1));
    loop {
        let start = buf.len();
        let room = max.saturating_sub(start as u64).min(chunk);
        if room == 0 {
            return Ok(buf);
        }
        buf.resize(start + usize::try_from(room).unwrap_or(usize::MAX), 0);
        let dest = buf.get_mut(start..).unwrap_or_default();
        let n = fill_at(file, offset.saturating_add(start as u64), dest)?;
        buf.truncate(start + n);
        if (n as u64) < room {
            return Ok(buf);
        }
        chunk = (buf.len() as u64).max(4096);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn append_table() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789").unwrap();
        // offset, want, appended
        let cases: &[(u64, usize, &[u8])] = &[
            (0, 10, b"0123456789"),
            (0, 100, b"0123456789"),
            (3, 4, b"3456"),
            (10, 4, b""),
            (u64::MAX, 4, b""),
        ];
        for (off, want, appended) in cases {
            let mut buf = b"ab".to_vec();
            let n = append_at(&f, *off, &mut buf, *want).unwrap();
            assert_eq!(n, appended.len());
            assert_eq!(&buf[..2], b"ab");
            assert_eq!(&buf[2..], *appended, "{off} {want}");
        }
    }

    #[test]
    fn read_table() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789").unwrap();
        // offset, size, limit, want
        let cases: &[(u64, u64, u64, &[u8])] = &[
            (0, 10, 10, b"0123456789"),
            (0, 100, 10, b"0123456789"),
            (3, 4, 10, b"3456"),
            (8, 4, 10, b"89"),
            (10, 4, 10, b""),
            (11, 4, 10, b""),
            (0, 10, 4, b"0123"),   // limit wins over a longer file
            (5, 10, 20, b"56789"), // file shorter than limit: stop at EOF
            (u64::MAX, u64::MAX, u64::MAX, b""),
        ];
        for (off, size, limit, want) in cases {
            assert_eq!(
                read_at(&f, *off, *size, *limit).unwrap(),
                *want,
                "{off} {size} {limit}"
            );
        }
        // offset, max, hint: the rest of the file, at most max bytes.
        let up_to: &[(u64, u64, u64, &[u8])] = &[
            (0, 100, 10, b"0123456789"),
            (0, 100, 1, b"0123456789"),
            (0, 100, 0, b"0123456789"),
            (0, 4, 10, b"0123"),
            (3, 100, 2, b"3456789"),
            (0, 0, 10, b""),
            (10, 100, 10, b""),
            (0, 11, 10, b"0123456789"), // one past the expected size: not grown
        ];
        for (off, max, hint, want) in up_to {
            assert_eq!(
                read_up_to(&f, *off, *max, *hint).unwrap(),
                *want,
                "{off} {max} {hint}"
            );
        }
        // An offset the kernel cannot seek to is an error, not a panic.
        assert!(read_at(&f, u64::MAX - 1, 4, u64::MAX).is_err());
    }
}
