//! The host calls the collection's filters make for `make bench`'s request, replayed with no
//! filter logic: what a module making these calls through the proxy-wasm ABI pays before it
//! runs a line of its own (docs/architecture.md, "What the host calls alone cost"). The bench
//! measures each script as a plugin of this module (root id `replay-<script>`) beside the
//! filter it copies and the native equivalent.
//!
//! Each script is the census `e2e/tests/host_calls_per_request.rs` prints for the filter, in
//! the callback where the filter makes each call: the same kinds and counts (that test holds
//! them equal), and the filter's maps, header names, values of the same sizes, properties and
//! shared-data sizes (copied from the filters, not tested). `replay-chain` is the five in the
//! chain's order: request callbacks in order, response callbacks in reverse, the time read
//! once per callback as the chain reads it.

use shared::host::{BodyKind, HeaderMapKind, MetricKind};
use shared::Host;

/// One host call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `proxy_get_current_time_nanoseconds` (at most once per callback: `shared::exports`).
    Now,
    /// `proxy_get_header_map_pairs`, the map read borrowed (`Host::header_pairs`).
    ReadMap(HeaderMapKind),
    Remove(HeaderMapKind, &'static str),
    /// `proxy_replace_header_map_value`.
    Replace(HeaderMapKind, &'static str, &'static str),
    /// `proxy_add_header_map_value`.
    Add(HeaderMapKind, &'static str, &'static str),
    Property(&'static [&'static str]),
    /// `proxy_get_shared_data` then `proxy_set_shared_data` with its CAS (a token bucket).
    SharedDataCas,
    /// `proxy_increment_metric` on a counter named by the script.
    Count(&'static str),
    /// `proxy_get_buffer_bytes` of the response chunk.
    ReadResponseBody,
    LogLevel,
    /// `proxy_set_property` of a log line (filter state).
    SetLine,
}

/// The callbacks a filter makes host calls in.
#[derive(Clone, Copy, Debug, Default)]
pub struct Script {
    pub request_headers: &'static [Step],
    pub response_headers: &'static [Step],
    pub response_body: &'static [Step],
    pub log: &'static [Step],
}

use HeaderMapKind::{RequestHeaders as Req, ResponseHeaders as Resp};

const SECURITY_HEADERS: Script = Script {
    // Whether the downstream connection is TLS (for HSTS), read with the request.
    request_headers: &[Step::Property(&["connection", "tls_version"])],
    // Over plain HTTP: the defaults without HSTS, the upstream's two revealing headers removed.
    response_headers: &[
        Step::ReadMap(Resp),
        Step::Add(Resp, "x-content-type-options", "nosniff"),
        Step::Add(Resp, "x-frame-options", "DENY"),
        Step::Add(Resp, "referrer-policy", "no-referrer"),
        Step::Add(Resp, "content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
        Step::Add(Resp, "cross-origin-opener-policy", "same-origin"),
        Step::Add(Resp, "cross-origin-resource-policy", "same-origin"),
        Step::Add(
            Resp,
            "permissions-policy",
            "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()",
        ),
        Step::Add(Resp, "x-permitted-cross-domain-policies", "none"),
        Step::Add(Resp, "x-xss-protection", "0"),
        Step::Remove(Resp, "server"),
        Step::Remove(Resp, "x-powered-by"),
        Step::Count("security_headers.a"),
        Step::Count("security_headers.b"),
        Step::Count("security_headers.c"),
    ],
    response_body: &[],
    log: &[],
};

/// A token served from the verified-token cache, then removed before the upstream.
const JWT_AUTH: Script = Script {
    request_headers: &[
        Step::Now,
        Step::ReadMap(Req),
        Step::Remove(Req, "authorization"),
        Step::Count("jwt_auth.a"),
        Step::Count("jwt_auth.b"),
    ],
    response_headers: &[],
    response_body: &[],
    log: &[],
};

const RATE_LIMIT: Script = Script {
    request_headers: &[
        Step::Now,
        Step::Property(&["source", "address"]),
        Step::SharedDataCas,
        Step::Count("rate_limit.a"),
    ],
    response_headers: &[
        Step::Replace(Resp, "x-ratelimit-limit", "1000000000"),
        Step::Replace(Resp, "x-ratelimit-remaining", "999999999"),
        Step::Replace(Resp, "x-ratelimit-reset", "1"),
    ],
    response_body: &[],
    log: &[],
};

const TOKEN_FETCH: Script = Script {
    request_headers: &[
        Step::Now,
        // The bench token server's token (`tok-N`).
        Step::Replace(Req, "authorization", "Bearer tok-1"),
        Step::Count("token_fetch.a"),
    ],
    response_headers: &[],
    response_body: &[],
    log: &[],
};

const BODY_LOGGER: Script = Script {
    request_headers: &[Step::ReadMap(Req), Step::Now],
    response_headers: &[Step::ReadMap(Resp)],
    response_body: &[Step::ReadResponseBody],
    log: &[Step::Now, Step::LogLevel, Step::SetLine, Step::Count("body_logger.logged")],
};

/// The chain's order (`envoy-configs/bench/all-five-chain.yaml`).
const CHAIN: [Script; 5] = [SECURITY_HEADERS, JWT_AUTH, RATE_LIMIT, TOKEN_FETCH, BODY_LOGGER];

/// A line of the size body-logger writes for the bench's GET.
const LINE: &str = concat!(
    r#"{"duration_ms":0.412,"method":"GET","path":"/","redactions":0,"request":{"body":null,"bytes":0,"#,
    r#""captured_bytes":0,"complete":true,"content_type":null,"truncated":false},"request_id":"#,
    r#""5b8e0c2a-1f4d-4c3b-9a7e-2d6f8b1c0e9a","response":{"body":"{\"upstream\":\"bench\",\"ok\":true}","#,
    r#""bytes":30,"captured_bytes":30,"complete":true,"content_type":"application/json","truncated":false},"#,
    r#""status":200}"#
);

/// The scripts a root id names: one filter's, or the chain's five.
pub fn scripts(root_id: &str) -> Option<Vec<Script>> {
    let one = |s: Script| Some(vec![s]);
    match root_id.strip_prefix("replay-")? {
        "security-headers" => one(SECURITY_HEADERS),
        "jwt-auth" => one(JWT_AUTH),
        "rate-limit" => one(RATE_LIMIT),
        "token-fetch" => one(TOKEN_FETCH),
        "body-logger" => one(BODY_LOGGER),
        "chain" => Some(CHAIN.to_vec()),
        _ => None,
    }
}

/// A step as the plan runs it: a counter's id defined at configuration, so a request makes the
/// `increment_metric` call and no lookup (the replay runs no logic of its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Step(Step),
    Count(u32),
}

/// A root's plan: every callback's calls, its counters defined.
#[derive(Debug, Default)]
pub struct Plan {
    pub request_headers: Vec<Call>,
    pub response_headers: Vec<Call>,
    pub response_body: Vec<Call>,
    pub log: Vec<Call>,
}

impl Plan {
    pub fn new(host: &dyn Host, scripts: &[Script]) -> Plan {
        // A callback's steps across the scripts: request callbacks in the scripts' order,
        // response callbacks and the log in reverse (Envoy's order for a filter chain).
        let calls = |pick: fn(&Script) -> &'static [Step], reverse: bool| -> Vec<Call> {
            let mut ordered: Vec<&Script> = scripts.iter().collect();
            if reverse {
                ordered.reverse();
            }
            let steps = ordered.into_iter().flat_map(|s| pick(s).iter().copied());
            steps
                .map(|step| match step {
                    Step::Count(name) => host
                        .define_metric(MetricKind::Counter, &format!("probe_replay.{name}"))
                        .map_or(Call::Step(step), Call::Count),
                    _ => Call::Step(step),
                })
                .collect()
        };
        Plan {
            request_headers: calls(|s| s.request_headers, false),
            response_headers: calls(|s| s.response_headers, true),
            response_body: calls(|s| s.response_body, true),
            log: calls(|s| s.log, true),
        }
    }

    /// Make the calls' host calls; `body_size`: the chunk a body callback was given.
    pub fn run(&self, host: &dyn Host, calls: &[Call], body_size: usize) {
        for call in calls {
            let step = match *call {
                Call::Count(id) => {
                    host.increment_metric(id, 1);
                    continue;
                }
                Call::Step(step) => step,
            };
            match step {
                Step::Now => {
                    std::hint::black_box(host.now());
                }
                Step::ReadMap(map) => {
                    std::hint::black_box(host.header_pairs(map).pairs().len());
                }
                Step::Remove(map, name) => {
                    let _ = host.remove_header(map, name);
                }
                Step::Replace(map, name, value) => {
                    let _ = host.set_header(map, name, value.as_bytes());
                }
                Step::Add(map, name, value) => {
                    let _ = host.add_header(map, name, value.as_bytes());
                }
                Step::Property(path) => {
                    std::hint::black_box(host.property(path));
                }
                Step::SharedDataCas => {
                    // One group of rate-limit's table: four 16-byte entries.
                    let key = "probe_replay/bucket";
                    let (value, cas) = host.shared_data(key);
                    let mut group = [0u8; 64];
                    group[0] = value.and_then(|v| v.first().copied()).unwrap_or(0).wrapping_add(1);
                    let _ = host.set_shared_data(key, &group, cas);
                }
                // A counter the host refused to define: no call, as a filter's `Counter`.
                Step::Count(_) => {}
                Step::ReadResponseBody => {
                    if body_size > 0 {
                        std::hint::black_box(host.body(BodyKind::Response, 0, body_size));
                    }
                }
                Step::LogLevel => {
                    std::hint::black_box(host.log_level());
                }
                Step::SetLine => {
                    // body-logger's default filter state name.
                    let _ = host.set_property(&["body_log"], LINE.as_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn count(calls: &[Call], f: fn(&Call) -> bool) -> usize {
        calls.iter().filter(|c| f(c)).count()
    }

    /// The chain's plan is the five scripts' steps, response callbacks in reverse order.
    #[test]
    fn the_chain_is_the_five_in_chain_order() {
        let host = shared::mock::MockHost::default();
        let plan = Plan::new(&host, &scripts("replay-chain").unwrap());
        let step = |s: Step| Some(Call::Step(s));
        assert_eq!(plan.request_headers.first().copied(), step(Step::Property(&["connection", "tls_version"])));
        assert_eq!(plan.response_headers.first().copied(), step(Step::ReadMap(Resp)), "body-logger answers first");
        // security-headers answers last: its removals, then its three counters.
        let tail = &plan.response_headers[plan.response_headers.len() - 4..];
        assert_eq!(tail[0], Call::Step(Step::Remove(Resp, "x-powered-by")));
        assert!(tail[1..].iter().all(|c| matches!(c, Call::Count(_))), "{tail:?}");
        let all = [&plan.request_headers, &plan.response_headers, &plan.response_body, &plan.log];
        let total: usize = all.iter().map(|s| s.len()).sum();
        // The five censuses (host_calls_per_request.rs) sum to 40 calls, the shared data CAS
        // being two of them. (In Envoy the five time asks make two calls: one per callback.)
        assert_eq!(total + 1, 40);
        assert_eq!(all.iter().map(|s| count(s, |c| *c == Call::Step(Step::Now))).sum::<usize>(), 5);
        assert_eq!(all.iter().map(|s| count(s, |c| matches!(c, Call::Step(Step::Add(..))))).sum::<usize>(), 9);
        // Every counter defined at configuration: a request looks none up.
        assert_eq!(all.iter().map(|s| count(s, |c| matches!(c, Call::Count(_)))).sum::<usize>(), 8);
        assert!(scripts("replay-nothing").is_none() && scripts("chain").is_none());
    }
}
