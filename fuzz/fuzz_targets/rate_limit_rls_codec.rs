//! rate-limit's hand-written RLS codec (`rate_limit::rls`) against prost, the library it
//! replaced, on the same bytes. Input: the 1st byte picks the direction; the rest is an answer
//! to decode, or the makings of a request to encode. Properties:
//! - `decode_response` never panics, and accepts exactly what prost accepts, with the same
//!   field values (unknown fields and groups skipped, prost's nesting limit, a message field
//!   seen twice merged, the last scalar winning, strings UTF-8), but for the entries of a
//!   repeated field past `rls::MAX_REPEATED`, read and not kept;
//! - `encode_request` writes exactly the bytes prost writes for the same `RateLimitRequest`
//!   (non-UTF-8 descriptor bytes as U+FFFD), and prost reads them back.
#![no_main]

use prost::Message;
use rate_limit::rls::{self, proto};
use std::borrow::Cow;

/// prost's answer as ours keeps it: the first `rls::MAX_REPEATED` entries of each repeated field.
fn kept(mut t: proto::RateLimitResponse) -> proto::RateLimitResponse {
    t.statuses.truncate(rls::MAX_REPEATED);
    t.response_headers_to_add.truncate(rls::MAX_REPEATED);
    t.request_headers_to_add.truncate(rls::MAX_REPEATED);
    t
}

/// Splits `data` into descriptors of entries: 0xff ends an entry's key or value, 0xfe a
/// descriptor; a descriptor's first byte, if odd, gives it its own `hits_addend`.
fn descriptors(data: &[u8]) -> Vec<(Vec<(Cow<'_, [u8]>, Cow<'_, [u8]>)>, Option<u64>)> {
    data.split(|b| *b == 0xfe)
        .map(|d| {
            let hits = d.first().filter(|b| *b % 2 == 1).map(|b| u64::from(*b) << 40);
            let parts: Vec<&[u8]> = d.split(|b| *b == 0xff).collect();
            let entries = parts
                .chunks(2)
                .map(|kv| (Cow::Borrowed(kv[0]), Cow::Borrowed(*kv.get(1).unwrap_or(&&[][..]))))
                .collect();
            (entries, hits)
        })
        .collect()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    if mode % 2 == 0 {
        let ours = rls::decode_response(rest);
        let theirs = proto::RateLimitResponse::decode(rest);
        match (&ours, &theirs) {
            (Ok(o), Ok(t)) => assert_eq!(proto::from_answer(o), kept(t.clone())),
            (Err(_), Err(_)) => {}
            _ => panic!("ours {ours:?}, prost {theirs:?}"),
        }
        return;
    }
    let (domain, rest) = rest.split_at(rest.iter().position(|b| *b == 0xfd).unwrap_or(0));
    let domain = String::from_utf8_lossy(domain);
    let hits_addend = u32::from(mode >> 1) * 1000;
    let descriptors = descriptors(rest);
    let ours = rls::encode_request(&domain, descriptors.iter().map(|(e, h)| (e.as_slice(), *h)), hits_addend);
    let theirs = proto::RateLimitRequest {
        domain: domain.to_string(),
        hits_addend,
        descriptors: descriptors
            .iter()
            .map(|(entries, hits)| proto::RateLimitDescriptor {
                entries: entries
                    .iter()
                    .map(|(k, v)| proto::Entry {
                        key: String::from_utf8_lossy(k).into_owned(),
                        value: String::from_utf8_lossy(v).into_owned(),
                    })
                    .collect(),
                hits_addend: hits.map(|value| proto::UInt64Value { value }),
            })
            .collect(),
    };
    assert_eq!(ours, theirs.encode_to_vec());
    assert_eq!(proto::RateLimitRequest::decode(ours.as_slice()).as_ref(), Ok(&theirs));
});
