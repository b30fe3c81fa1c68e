//! Header name/value validation for configuration, shared by every filter that sets headers.

/// Headers that frame the message or belong to the connection (RFC 9110 §7.6.1, plus `host`):
/// a filter that sets or removes one from configuration corrupts or misroutes the message.
pub const FRAMING_AND_CONNECTION_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
    "host",
];

/// Is `name` (lowercase) one of [`FRAMING_AND_CONNECTION_HEADERS`]?
pub fn is_framing_or_connection_header(name: &str) -> bool {
    FRAMING_AND_CONNECTION_HEADERS.contains(&name)
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Validate a configured header name and return it lowercased (HTTP/2 and Envoy use lowercase).
/// Pseudo-headers (`:path`, …) are refused: no filter here may set them from config.
pub fn normalize_header_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("header name is empty".into());
    }
    if let Some(b) = name.bytes().find(|b| !is_tchar(*b)) {
        return Err(format!("header name {name:?} contains the invalid character {:?}", b as char));
    }
    Ok(name.to_ascii_lowercase())
}

/// Validate a configured header value: visible ASCII, spaces and tabs inside, nothing that
/// could split or end a header (CR, LF, NUL), no leading or trailing whitespace.
pub fn validate_header_value(value: &str) -> Result<(), String> {
    if let Some(b) = value.bytes().find(|b| !(b' '..=b'~').contains(b) && *b != b'\t') {
        return Err(format!("header value contains the invalid byte 0x{b:02x}"));
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err("header value has leading or trailing whitespace".into());
    }
    Ok(())
}

/// May a header that arrives at run time from a peer (a rate-limit service's
/// `response_headers_to_add`, say), not from configuration, be added to a message? Its name a
/// token (RFC 9110 §5.1: so no pseudo-header, no CR, LF or NUL) and not one of
/// [`FRAMING_AND_CONNECTION_HEADERS`]; its value field content (§5.5: no control character but
/// HTAB, so nothing that splits or ends the header; bytes above 0x7f allowed, as obs-text).
pub fn is_addable_header(name: &str, value: &[u8]) -> bool {
    !name.is_empty()
        && name.bytes().all(is_tchar)
        && !FRAMING_AND_CONNECTION_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
        && value.iter().all(|b| *b == b'\t' || !b.is_ascii_control())
}

/// The first value of `name` in a map read whole with [`crate::Host::headers`]: what
/// [`crate::Host::header`] answers (Envoy's `get_header_map_value` gives the first value too),
/// without a host call per header. A filter that reads several headers of a map reads it once
/// and looks them up here: one host call instead of one per header (`host_calls_per_request`).
/// Names compare ASCII-case-insensitively, as Envoy's lookup does.
pub fn first<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
}

/// A header map read whole as the host's one pairs buffer ([`crate::Host::header_pairs`]),
/// looked at borrowed: one allocation for the map where [`crate::Host::headers`] makes two per
/// pair (a name `String` and a value `Vec`), then frees them. Names are bytes as the host gave
/// them (lowercase in Envoy). A buffer that does not parse reads as an empty map, as
/// `headers()` does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderPairs(Vec<u8>);

impl HeaderPairs {
    /// The host's serialized buffer (`proxy_get_header_map_pairs`'s format).
    pub fn from_buffer(buffer: Vec<u8>) -> HeaderPairs {
        HeaderPairs(buffer)
    }

    /// Serialize `pairs` (what a host without a raw buffer answers).
    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> HeaderPairs {
        HeaderPairs(crate::abi::serialize_pairs(pairs).unwrap_or_default())
    }

    /// The buffer itself (the pairs' slices point into it).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Every pair, in order.
    pub fn pairs(&self) -> Vec<(&[u8], &[u8])> {
        crate::abi::parse_pairs(&self.0).unwrap_or_default()
    }

    /// The first value of `name`, ASCII-case-insensitively (see [`first`]).
    pub fn first<'a>(pairs: &[(&'a [u8], &'a [u8])], name: &str) -> Option<&'a [u8]> {
        pairs.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| *v)
    }
}

/// Append `n` in decimal. Header values are built on every request: `format!` and
/// `to_string` go through `core::fmt` (padding, a trait object per argument), measured at
/// several hundred instructions per number in the rate-limit headers; this is a loop.
pub fn push_decimal(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        // `n % 10` < 10: the digit is ASCII.
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // One append of ASCII digits (a `char` push per digit re-checks capacity and encodes
    // UTF-8 each time).
    out.push_str(std::str::from_utf8(digits.get(i..).unwrap_or_default()).unwrap_or_default());
}

/// `n` in decimal, as a new string.
pub fn decimal(n: u64) -> String {
    let mut s = String::with_capacity(20);
    push_decimal(&mut s, n);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_pairs_read_back_in_order_and_find_the_first_value() {
        let map: Vec<(String, Vec<u8>)> = vec![
            (":status".into(), b"200".to_vec()),
            ("set-cookie".into(), b"a=1".to_vec()),
            ("Set-Cookie".into(), b"b=\xff".to_vec()),
            ("empty".into(), Vec::new()),
        ];
        let raw = HeaderPairs::from_pairs(&map);
        let pairs = raw.pairs();
        let back: Vec<(&[u8], &[u8])> = map.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())).collect();
        assert_eq!(pairs, back);
        assert_eq!(HeaderPairs::first(&pairs, "SET-COOKIE"), Some(&b"a=1"[..]));
        assert_eq!(HeaderPairs::first(&pairs, "empty"), Some(&b""[..]));
        assert_eq!(HeaderPairs::first(&pairs, "absent"), None);
        // Not a pairs buffer: an empty map, as `headers()` reads it.
        assert!(HeaderPairs::from_buffer(b"junk".to_vec()).pairs().is_empty());
        assert!(HeaderPairs::default().pairs().is_empty());
    }

    #[test]
    fn decimal_is_to_string() {
        for n in [0, 1, 9, 10, 99, 100, 4_294_967_295, 1_000_000_007, u64::MAX] {
            assert_eq!(decimal(n), n.to_string());
            let mut s = String::from("q=");
            push_decimal(&mut s, n);
            assert_eq!(s, format!("q={n}"));
        }
    }

    #[test]
    fn first_value_of_a_read_map() {
        let map: Vec<(String, Vec<u8>)> =
            vec![(":path".into(), b"/a".to_vec()), ("x-a".into(), b"1".to_vec()), ("x-a".into(), b"2".to_vec())];
        assert_eq!(first(&map, "x-a"), Some(&b"1"[..]));
        assert_eq!(first(&map, "X-A"), Some(&b"1"[..]));
        assert_eq!(first(&map, ":path"), Some(&b"/a"[..]));
        assert_eq!(first(&map, "x-b"), None);
    }

    #[test]
    fn names() {
        assert_eq!(normalize_header_name("X-Frame-Options").unwrap(), "x-frame-options");
        for bad in ["", ":path", "a b", "a\r\nb", "é", "a:b", "a\0"] {
            assert!(normalize_header_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn framing_headers() {
        assert!(is_framing_or_connection_header("transfer-encoding") && is_framing_or_connection_header("host"));
        assert!(!is_framing_or_connection_header("x-frame-options"));
    }

    #[test]
    fn addable_headers() {
        for (name, value) in [("x-a", &b"1"[..]), ("X-A", b"caf\xc3\xa9\tok"), ("content-type", b"a/b"), ("x", b"")] {
            assert!(is_addable_header(name, value), "{name:?} {value:?}");
        }
        for (name, value) in [
            ("x-a", &b"1\r\nx-b: 2"[..]),
            ("x-a", b"1\n"),
            ("x-a", b"a\0b"),
            ("x-a", b"a\x7f"),
            ("", b"1"),
            ("x a", b"1"),
            ("x\r\ny", b"1"),
            (":status", b"200"),
            (":authority", b"a"),
            ("Host", b"a"),
            ("Content-Length", b"0"),
            ("transfer-encoding", b"chunked"),
            ("connection", b"close"),
        ] {
            assert!(!is_addable_header(name, value), "{name:?} {value:?}");
        }
    }

    #[test]
    fn values() {
        assert!(validate_header_value("max-age=1; includeSubDomains").is_ok());
        assert!(validate_header_value("").is_ok());
        for bad in ["a\r\nb", "a\nb", "a\0", " a", "a ", "é"] {
            assert!(validate_header_value(bad).is_err(), "{bad:?}");
        }
    }
}
