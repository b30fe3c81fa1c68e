//! rate-limit's client address: `x-forwarded-for` selection, address parsing, masking
//! (`rate_limit::address`). Input: hops (1st byte), IPv4 and IPv6 prefix lengths (2nd, 3rd),
//! then the header value. Properties:
//! - the XFF pick is the `hops`-th entry from the right, parsed (an independent model);
//! - a parsed address's canonical text parses back to it, and is a fixed point;
//! - with a port (`a:p`, `[a]:p`) and surrounding spaces, the same address;
//! - masking keeps the family, zeroes every bit past the prefix, is idempotent, composes as
//!   the shorter prefix, and its text round-trips (it is the bucket key).
#![no_main]

use rate_limit::address::{from_xff, mask, parse_ip};
use std::net::IpAddr;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [hops, v4, v6, value @ ..] = data else { return };
    let hops = usize::from(*hops % 8) + 1;
    let (v4, v6) = (*v4 % 40, *v6 % 140);

    let picked = from_xff(value, hops);
    let model = std::str::from_utf8(value).ok().and_then(|t| {
        let entries: Vec<&str> = t.split(',').collect();
        entries.len().checked_sub(hops).and_then(|i| {
            entries[i]
                .trim()
                .parse::<IpAddr>()
                .ok()
                .or_else(|| entries[i].trim().parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        })
    });
    assert_eq!(picked, model, "xff pick differs from the model");

    let candidates = [picked, std::str::from_utf8(value).ok().and_then(parse_ip)];
    for ip in candidates.into_iter().flatten() {
        let text = ip.to_string();
        assert_eq!(parse_ip(&text), Some(ip), "canonical text does not parse back: {text}");
        assert_eq!(parse_ip(&text).map(|i| i.to_string()).as_deref(), Some(text.as_str()));
        let with_port = match ip {
            IpAddr::V4(_) => format!(" {text}:65535 "),
            IpAddr::V6(_) => format!("\t[{text}]:0"),
        };
        assert_eq!(parse_ip(&with_port), Some(ip), "{with_port}");

        let m = mask(ip, v4, v6);
        assert_eq!(m.is_ipv4(), ip.is_ipv4(), "mask changed the family");
        assert_eq!(mask(m, v4, v6), m, "mask not idempotent");
        let (a4, a6) = (*value.first().unwrap_or(&0) % 40, *value.last().unwrap_or(&0) % 140);
        assert_eq!(mask(mask(ip, v4, v6), a4, a6), mask(ip, v4.min(a4), v6.min(a6)), "masks do not compose");
        match (ip, m) {
            (IpAddr::V4(_), IpAddr::V4(m)) => {
                let keep = u32::from(v4.min(32));
                let host_bits = if keep == 0 { u32::MAX } else { u32::MAX.checked_shr(keep).unwrap_or(0) };
                assert_eq!(u32::from(m) & host_bits, 0, "host bits left at /{v4}");
            }
            (IpAddr::V6(_), IpAddr::V6(m)) => {
                let keep = u32::from(v6.min(128));
                let host_bits = if keep == 0 { u128::MAX } else { u128::MAX.checked_shr(keep).unwrap_or(0) };
                assert_eq!(u128::from(m) & host_bits, 0, "host bits left at /{v6}");
            }
            _ => unreachable!(),
        }
        let key = m.to_string();
        assert_eq!(parse_ip(&key), Some(m), "masked key does not round-trip: {key}");
    }
});
