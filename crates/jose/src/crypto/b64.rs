//! base64url (RFC 4648 §5) decoding as jwt_authn's `absl::WebSafeBase64Unescape` accepts it for
//! JWK fields and token segments: the URL-safe alphabet, with or without `=` padding, and the
//! unused low bits of the last character ignored (RFC 4648 §3.5 lets a decoder do either;
//! jwt_authn 1.40 accepts every spelling, so a token has several — see jwt-auth's README).

fn value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    } as u32)
}

/// Decode base64url. `None` for a character outside the alphabet, misplaced padding, or a
/// length that no encoding has (4n+1 characters).
pub fn decode_url(input: &[u8]) -> Option<Vec<u8>> {
    let mut data = input;
    // Padding only at the end, at most two, and only up to a multiple of 4.
    if data.len().is_multiple_of(4) {
        if let Some(rest) = data.strip_suffix(b"==") {
            data = rest;
        } else if let Some(rest) = data.strip_suffix(b"=") {
            data = rest;
        }
    }
    if data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &c in data {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// base64url without padding (tests and the probe build fixtures with it).
pub fn encode_url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::decode_url;

    #[test]
    fn decodes_with_and_without_padding() {
        assert_eq!(decode_url(b"AQAB").unwrap(), vec![1, 0, 1]);
        assert_eq!(decode_url(b"_-8").unwrap(), vec![0xff, 0xef]);
        assert_eq!(decode_url(b"_-8=").unwrap(), vec![0xff, 0xef]);
        assert_eq!(decode_url(b"YQ==").unwrap(), b"a".to_vec());
        assert_eq!(decode_url(b"YQ").unwrap(), b"a".to_vec());
        assert_eq!(decode_url(b"").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn round_trips() {
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            assert_eq!(decode_url(super::encode_url(&data).as_bytes()).unwrap(), data);
        }
    }

    #[test]
    fn unused_bits_of_the_last_character_are_ignored_as_in_jwt_authn() {
        // 2 bytes = 3 characters, 2 unused bits; 1 byte = 2 characters, 4 unused bits.
        for spelling in ["_-8", "_-9", "_--", "_-_"] {
            assert_eq!(decode_url(spelling.as_bytes()).unwrap(), vec![0xff, 0xef], "{spelling}");
        }
        for last in "QRSTUVWXYZabcdef".chars() {
            assert_eq!(decode_url(format!("Y{last}").as_bytes()).unwrap(), b"a".to_vec(), "Y{last}");
        }
    }

    #[test]
    fn refuses_non_url_alphabet_and_bad_lengths() {
        assert!(decode_url(b"a+b/").is_none());
        assert!(decode_url(b"abcde").is_none());
        assert!(decode_url(b"ab=c").is_none());
        assert!(decode_url(b"a===").is_none());
        assert!(decode_url(b"ab c").is_none());
    }
}
