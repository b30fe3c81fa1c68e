//! base64 (RFC 4648 §4, standard) and base64url (§5): one codec for token-fetch's Basic
//! credentials, jwt-auth's JWS segments, JWK fields and claim headers, and the e2e fixtures.
//!
//! Our own rather than a crate because decoding must accept exactly what Envoy's jwt_authn
//! accepts (`absl::WebSafeBase64Unescape`: padding optional, at most two `=` and only up to a
//! multiple of 4, unused trailing bits ignored) — the differential tests against native Envoy
//! pin it — and because it is 40 lines in every filter's `.wasm`.

/// Standard base64 with padding (HTTP Basic credentials, jwt_authn's claim headers).
pub fn encode(data: &[u8]) -> String {
    encode_with(data, Alphabet::Standard, true)
}

/// base64url without padding (JWS segments, JWK fields).
pub fn encode_url(data: &[u8]) -> String {
    encode_with(data, Alphabet::Url, false)
}

/// Decode standard base64, padded or not (see [`decode_with`]).
pub fn decode(input: &[u8]) -> Option<Vec<u8>> {
    decode_with(input, Alphabet::Standard)
}

/// Decode base64url, padded or not (see [`decode_with`]).
pub fn decode_url(input: &[u8]) -> Option<Vec<u8>> {
    decode_with(input, Alphabet::Url)
}

/// Which 64 characters: `+/` (standard) or `-_` (URL- and filename-safe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alphabet {
    Standard,
    Url,
}

impl Alphabet {
    fn table(self) -> &'static [u8; 64] {
        match self {
            Alphabet::Standard => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            Alphabet::Url => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        }
    }

    fn value(self, c: u8) -> Option<u32> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' if self == Alphabet::Standard => 62,
            b'/' if self == Alphabet::Standard => 63,
            b'-' if self == Alphabet::Url => 62,
            b'_' if self == Alphabet::Url => 63,
            _ => return None,
        };
        Some(u32::from(v))
    }
}

/// Encode `data`; `padded` adds `=` up to a multiple of 4 characters.
pub fn encode_with(data: &[u8], alphabet: Alphabet, padded: bool) -> String {
    let table = alphabet.table();
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(table[((n >> (18 - 6 * i)) & 63) as usize]));
            } else if padded {
                out.push('=');
            }
        }
    }
    out
}

/// Decode, padded or not. `None` for a character outside the alphabet (whitespace included),
/// misplaced or excess padding, or a length no encoding has (4n+1 characters).
pub fn decode_with(input: &[u8], alphabet: Alphabet) -> Option<Vec<u8>> {
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
        acc = (acc << 6) | alphabet.value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::Alphabet::{Standard, Url};
    use super::*;

    #[test]
    fn rfc_4648_vectors() {
        for (plain, coded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(encode_url(plain.as_bytes()), coded.trim_end_matches('='));
            assert_eq!(decode(coded.as_bytes()).unwrap(), plain.as_bytes());
            assert_eq!(decode_url(coded.trim_end_matches('=').as_bytes()).unwrap(), plain.as_bytes());
        }
        assert_eq!(encode(b"\xfb\xff"), "+/8=");
        assert_eq!(encode_url(b"\xfb\xff"), "-_8");
    }

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
            for (alphabet, padded) in [(Standard, true), (Standard, false), (Url, true), (Url, false)] {
                assert_eq!(decode_with(encode_with(&data, alphabet, padded).as_bytes(), alphabet).unwrap(), data);
            }
        }
    }

    #[test]
    fn unused_bits_of_the_last_character_are_ignored_as_in_jwt_authn() {
        // 2 bytes = 3 characters, 2 unused bits; 1 byte = 2 characters, 4 unused bits.
        // jwt_authn 1.40 accepts every spelling, so a token has several (jwt-auth's README).
        for spelling in ["_-8", "_-9", "_--", "_-_"] {
            assert_eq!(decode_url(spelling.as_bytes()).unwrap(), vec![0xff, 0xef], "{spelling}");
        }
        for last in "QRSTUVWXYZabcdef".chars() {
            assert_eq!(decode_url(format!("Y{last}").as_bytes()).unwrap(), b"a".to_vec(), "Y{last}");
        }
    }

    #[test]
    fn refuses_the_other_alphabet_and_bad_lengths() {
        assert!(decode_url(b"a+b/").is_none());
        assert!(decode(b"a-b_").is_none());
        for bad in [&b"abcde"[..], b"ab=c", b"a===", b"ab c", b"YQ="] {
            assert!(decode_url(bad).is_none(), "{bad:?}");
        }
    }
}
