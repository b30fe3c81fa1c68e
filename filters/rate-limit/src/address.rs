//! The client address of a request, as the `remote_address` and `masked_remote_address`
//! actions see it: `x-forwarded-for` (N trusted hops from the right) or `source.address`,
//! parsed, then masked. Pure functions, so the fuzz target (`fuzz/fuzz_targets/
//! rate_limit_address.rs`) drives exactly what the filter runs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:5678`, surrounding whitespace ignored.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>().ok().or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The address with only its first `v4` (IPv4) or `v6` (IPv6) bits kept; lengths past the
/// address size keep it whole.
pub fn mask(ip: IpAddr, v4: u8, v6: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if v4 == 0 { 0 } else { u32::MAX << (32 - u32::from(v4.min(32))) };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if v6 == 0 { 0 } else { u128::MAX << (128 - u32::from(v6.min(128))) };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// The `hops`-th entry from the right of an `x-forwarded-for` value (`hops` ≥ 1), as Envoy's
/// `xff_num_trusted_hops` picks it; `None` when the header has fewer entries, is not UTF-8,
/// or that entry is not an address (the filter then falls back to `source.address`).
pub fn from_xff(value: &[u8], hops: usize) -> Option<IpAddr> {
    let text = std::str::from_utf8(value).ok()?;
    let i = text.split(',').count().checked_sub(hops)?;
    parse_ip(text.split(',').nth(i)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_with_and_without_ports() {
        for (text, want) in
            [("1.2.3.4", "1.2.3.4"), (" 1.2.3.4:80 ", "1.2.3.4"), ("::1", "::1"), ("[2001:db8::1]:443", "2001:db8::1")]
        {
            assert_eq!(parse_ip(text).map(|ip| ip.to_string()).as_deref(), Some(want), "{text}");
        }
        for bad in ["", "junk", "1.2.3", "1.2.3.4:", "[::1]", "1.2.3.4:99999"] {
            assert_eq!(parse_ip(bad), None, "{bad}");
        }
    }

    #[test]
    fn masks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(mask(ip("1.2.3.4"), 0, 0).to_string(), "0.0.0.0");
        assert_eq!(mask(ip("1.2.3.4"), 24, 0).to_string(), "1.2.3.0");
        assert_eq!(mask(ip("1.2.3.4"), 32, 0).to_string(), "1.2.3.4");
        assert_eq!(mask(ip("2001:db8:0:1:ffff::9"), 0, 64).to_string(), "2001:db8:0:1::");
        assert_eq!(mask(ip("2001:db8::1"), 0, 128).to_string(), "2001:db8::1");
    }

    #[test]
    fn xff_counts_trusted_hops_from_the_right() {
        let v = b"6.6.6.6, 1.1.1.1, 9.9.9.9";
        assert_eq!(from_xff(v, 1), parse_ip("9.9.9.9"));
        assert_eq!(from_xff(v, 2), parse_ip("1.1.1.1"));
        assert_eq!(from_xff(v, 3), parse_ip("6.6.6.6"));
        assert_eq!(from_xff(v, 4), None);
        assert_eq!(from_xff(b"junk, 9.9.9.9", 2), None);
        assert_eq!(from_xff(b"\xff, 9.9.9.9", 1), None);
        assert_eq!(from_xff(b"[2001:db8::1]:80, 9.9.9.9", 2), parse_ip("2001:db8::1"));
    }
}
