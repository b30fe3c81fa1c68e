//! rate-limit's handling of a rate-limit service answer (`rate_limit::rls::decode_response` and
//! the filter's decision on it), driven through the emulated proxy exactly as Envoy delivers a
//! gRPC answer. Input: the 1st byte picks the configuration (`failure_mode_deny`, one or two
//! global rules, shadow mode) and whether the call failed at the gRPC level; the rest is the
//! answer message. Properties:
//! - never panics, whatever the bytes;
//! - the request is decided exactly once: resumed, or answered by a local reply;
//! - a reply is `429` only when the decoded answer's overall code is `OVER_LIMIT` (it decides,
//!   as in Envoy) and that is for an enforcing rule (the statuses by position, or every rule),
//!   `500` only under `failure_mode_deny` for an unusable answer; a rule in shadow mode never
//!   denies; an unusable answer never denies without `failure_mode_deny`;
//! - `Retry-After`, when sent, is a whole number of seconds, at least 1;
//! - no header the filter builds (`ratelimit*`, `x-ratelimit-*`, `retry-after`) carries a
//!   control character, whatever the service put in its limit names;
//! - every header that reaches Envoy from the answer (`response_headers_to_add` on the reply or
//!   the response, `request_headers_to_add` on the request) is one the service may add
//!   (`shared::headers::is_addable_header`: no CR, LF or NUL, no pseudo-header, no framing or
//!   connection header).
#![no_main]

use rate_limit::filter::RateLimitRoot;
use rate_limit::rls::{decode_response, CODE_OK, CODE_OVER_LIMIT};
use shared::headers::is_addable_header;
use shared::host::HeaderMapKind::{RequestHeaders, ResponseHeaders};
use shared::proxytest::{Proxy, Worker};

fn config(failure_mode_deny: bool, two_rules: bool, shadow: bool) -> String {
    let second = if two_rules {
        r#",{"name":"per_ip","actions":[{"remote_address":{}}],"global":{"hits_addend":3}}"#
    } else {
        ""
    };
    format!(
        r#"{{"domain":"edge","rate_limit_service":{{"grpc_service":{{"envoy_grpc":{{"cluster_name":"rls"}}}}}},
        "enable_x_ratelimit_headers":"DRAFT_VERSION_03","failure_mode_deny":{failure_mode_deny},"table":{{"max_keys":4}},
        "rules":[{{"name":"per_user","shadow_mode":{shadow},"actions":[{{"request_headers":{{"header_name":"x-user","descriptor_key":"user"}}}}],
        "global":{{}}}}{second}]}}"#
    )
}

fn built_by_the_filter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("ratelimit") || name.starts_with("x-ratelimit-") || name == "retry-after"
}

fn clean(value: &str) -> bool {
    !value.bytes().any(|b| b.is_ascii_control() && b != b'\t')
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [mode, message @ ..] = data else { return };
    let (failure_mode_deny, two_rules, shadow) = (mode & 1 != 0, mode & 2 != 0, mode & 4 != 0);
    let grpc_status = if mode & 8 != 0 { u32::from(mode >> 4) } else { 0 };

    let p = Proxy::new();
    p.set_property(&["source", "address"], b"10.0.0.1:1");
    let mut w: Worker<RateLimitRoot> = p.worker(&config(failure_mode_deny, two_rules, shadow));
    let (id, _) = w.request(&[(":method", "GET"), (":path", "/"), ("x-user", "alice")]);
    let calls = w.grpc_calls();
    assert_eq!(calls.len(), 1, "one call per request");
    w.answer_grpc_call(calls[0].token, grpc_status, message);

    let decoded = (grpc_status == 0).then(|| decode_response(message).ok()).flatten();
    let usable = decoded.as_ref().filter(|r| r.overall_code == CODE_OK || r.overall_code == CODE_OVER_LIMIT);
    let rules = if two_rules { 2 } else { 1 };
    // Which rules the answer says are over the limit: none under an overall OK; under an overall
    // OVER_LIMIT those whose status says so by position, or every rule when none does or the
    // statuses are not one per rule.
    let over: Vec<bool> = match usable {
        Some(r) if r.overall_code != CODE_OVER_LIMIT => vec![false; rules],
        Some(r) if r.statuses.len() == rules && r.statuses.iter().any(|s| s.code == CODE_OVER_LIMIT) => {
            r.statuses.iter().map(|s| s.code == CODE_OVER_LIMIT).collect()
        }
        Some(_) => vec![true; rules],
        None => vec![false; rules],
    };
    let enforcing_over = over.iter().enumerate().any(|(i, o)| *o && !(i == 0 && shadow));
    let enforcing = two_rules || !shadow;

    let reply = w.local_reply(id);
    let resumed = w.resumes().iter().any(|(s, _)| *s == id);
    assert!(reply.is_some() != resumed, "decided exactly once: reply {reply:?}, resumed {resumed}");
    match (&reply, usable) {
        (Some(r), Some(_)) => assert!(r.status == 429 && enforcing_over, "{} on a usable answer", r.status),
        (Some(r), None) => {
            assert!(r.status == 500 && failure_mode_deny && enforcing, "{} on an unusable answer", r.status)
        }
        (None, Some(_)) => assert!(!enforcing_over, "over the limit for an enforcing rule, and resumed"),
        (None, None) => assert!(!(failure_mode_deny && enforcing), "unusable answer resumed under failure_mode_deny"),
    }

    let headers: Vec<(String, String)> = match &reply {
        Some(r) => r.headers.clone(),
        None => {
            w.response_headers(id, &[(":status", "200")], true);
            w.headers(id, ResponseHeaders)
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect()
        }
    };
    // The harness's own `:status` on the response is the only header not added by the filter.
    let added = headers.iter().filter(|(n, _)| reply.is_some() || n != ":status");
    for (name, value) in added {
        assert!(is_addable_header(name, value.as_bytes()), "{name:?}: {value:?} reached Envoy");
    }
    // The request's own three headers, then what the service's answer added.
    for (name, value) in w.headers(id, RequestHeaders).iter().skip(3) {
        assert!(is_addable_header(name, value), "{name:?}: {value:?} added to the request");
    }
    for (name, value) in &headers {
        if built_by_the_filter(name) {
            assert!(clean(value), "control character in {name}: {value:?}");
        }
        if name.eq_ignore_ascii_case("retry-after") {
            assert!(value.parse::<u64>().is_ok_and(|s| s >= 1), "retry-after {value:?}");
        }
    }
});
