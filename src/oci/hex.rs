//! Lower-case hexadecimal encoding, the only form OCI digests may use.

/// Lower-case hex of `bytes` into an array of twice their length (a
/// digest's hex is held inline, see `Digest`); extra bytes are ignored,
/// missing ones leave `0`s.
pub fn encode<const N: usize>(bytes: &[u8]) -> [u8; N] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'0'; N];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        for (slot, nibble) in pair.iter_mut().zip([b >> 4, b & 0xf]) {
            *slot = DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_lower_case() {
        assert_eq!(&super::encode::<0>(b""), b"");
        assert_eq!(&super::encode::<6>(&[0x00, 0xff, 0x1a]), b"00ff1a");
    }
}
