//! Lower-case hexadecimal encoding, the only form OCI digests may use.

/// Encodes `bytes` as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_lower_case() {
        for (input, want) in [(&b""[..], ""), (&[0x00, 0xff, 0x1a][..], "00ff1a")] {
            assert_eq!(super::encode(input), want);
        }
    }
}
