//! body-logger's gRPC frame summary (`body_logger::grpc`), driven through the emulated proxy as
//! Envoy delivers a request body: the body cut into chunks, each read by the filter in windows.
//! Input: the 1st byte seeds the chunk sizes (1 to 64 bytes, or one chunk), the 2nd byte
//! whether the stream ends with the last chunk, with trailers or is cut (reset); the rest is
//! the body. Properties:
//! - never panics, whatever the bytes;
//! - the logged summary equals an independent model (a walk over the whole body: prefix, flag,
//!   big-endian length, message), whatever the chunking;
//! - `bytes` is the body's length, no body is ever logged, `complete` says how the stream ended.
#![no_main]

use body_logger::filter::BodyLoggerRoot;
use shared::proxytest::{Proxy, Worker};

/// (messages, message_bytes, compressed, max_message_bytes, partial, invalid)
fn model(body: &[u8]) -> (u64, u64, u64, u64, bool, bool) {
    let (mut messages, mut bytes, mut compressed, mut max) = (0u64, 0u64, 0u64, 0u64);
    let mut rest = body;
    loop {
        if rest.is_empty() {
            return (messages, bytes, compressed, max, false, false);
        }
        if rest.len() < 5 {
            return (messages, bytes, compressed, max, true, false);
        }
        let flag = rest[0];
        if flag > 1 {
            return (messages, bytes, compressed, max, false, true);
        }
        let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        max = max.max(length as u64);
        if rest.len() - 5 < length {
            return (messages, bytes, compressed, max, true, false);
        }
        messages += 1;
        bytes += length as u64;
        compressed += u64::from(flag);
        rest = &rest[5 + length..];
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [seed, end, body @ ..] = data else { return };
    let proxy = Proxy::new();
    let mut w: Worker<BodyLoggerRoot> = proxy.worker("{}");
    let id = w.new_stream();
    w.request_headers(id, &[(":method", "POST"), (":path", "/s.S/M"), ("content-type", "application/grpc")], false);
    let mut sizes = *seed as u32 | 1;
    let mut rest = body;
    while !rest.is_empty() {
        let n = if *seed == 0 { rest.len() } else { (sizes % 64 + 1) as usize }.min(rest.len());
        sizes = sizes.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        w.request_body(id, chunk, rest.is_empty() && end % 3 == 0);
    }
    match end % 3 {
        0 if body.is_empty() => {
            w.request_body(id, &[], true);
        }
        1 => {
            w.request_trailers(id, &[("grpc-timeout", "1S")]);
        }
        _ => {}
    }
    w.complete(id);
    let line = proxy
        .logs()
        .into_iter()
        .find_map(|(_, m)| m.starts_with('{').then(|| serde_json::from_str::<serde_json::Value>(&m).unwrap()))
        .expect("a line");
    let r = &line["request"];
    let g = &r["grpc"];
    let got = (
        g["messages"].as_u64().unwrap(),
        g["message_bytes"].as_u64().unwrap(),
        g["compressed"].as_u64().unwrap(),
        g["max_message_bytes"].as_u64().unwrap(),
        g["partial"].as_bool().unwrap(),
        g["invalid"].as_bool().unwrap(),
    );
    assert_eq!(got, model(body), "summary differs from the model");
    assert_eq!(r["bytes"].as_u64(), Some(body.len() as u64));
    assert!(r["body"].is_null() && r.get("skipped").is_none(), "{r}");
    assert_eq!(r["complete"].as_bool(), Some(end % 3 != 2), "{r}");
});
