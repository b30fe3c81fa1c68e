//! Host calls per request, per filter: each filter drives the request `make bench` sends it
//! (its configuration read from the very envoy-configs/bench/*.yaml the bench runs) through
//! the emulated proxy, and the host calls it makes are counted by kind. Printed with
//! `cargo test -p e2e --test host_calls_per_request -- --nocapture`; the counts go in the
//! gateway-cost note beside CPU and instructions per request (every host call is a VM crossing).
//!
//! What is counted: every host call a filter makes during one request's callbacks (request
//! headers, response headers, response body, log), counted by `shared::proxytest` (the
//! emulated proxy, through the same routing the SDK glue uses), after a warm-up request
//! (jwt-auth's cache filled, token-fetch's token fetched). The rate-limit global rule's count
//! includes its `ShouldRateLimit` call and the callback of the service's answer. Not counted: the SDK's own calls
//! around each callback, which the trivial filter's floor pays too.
//!
//! The same test holds the bench's "host calls alone" replays (e2e/probe/src/replay.rs) to
//! these counts: each replay must make its filter's calls, the chain's the five's sum.

use e2e::jwt::{self, Alg};
use probe::replay::{self, Plan};
use serde_norway::Value as Yaml;
use shared::config::ConfigError;
use shared::proxytest::{HostCall, HostCalls, Proxy, Worker};
use shared::{Action, Host, HttpFilter, LogLevel, RootFilter};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::SystemTime;

/// The `configuration.value` of the wasm filter `root_id` in `envoy-configs/<config>`.
fn plugin_config(config: &str, root_id: &str) -> String {
    fn find(v: &Yaml, root_id: &str) -> Option<String> {
        match v {
            Yaml::Mapping(m) => {
                if m.get("root_id").and_then(Yaml::as_str) == Some(root_id) {
                    return m.get("configuration")?.get("value")?.as_str().map(String::from);
                }
                m.values().find_map(|x| find(x, root_id))
            }
            Yaml::Sequence(s) => s.iter().find_map(|x| find(x, root_id)),
            _ => None,
        }
    }
    let path = e2e::repo_root().join("envoy-configs").join(config);
    let text = std::fs::read_to_string(&path).unwrap();
    let yaml: Yaml = serde_norway::from_str(&text).unwrap();
    find(&yaml, root_id).unwrap_or_else(|| panic!("no {root_id} configuration in {}", path.display()))
}

/// The bench upstream's answer, as Envoy hands it to the filter.
const RESPONSE: &[(&str, &str)] = &[
    (":status", "200"),
    ("content-type", "application/json"),
    ("content-length", "30"),
    ("server", "bench-upstream/1.0"),
    ("x-powered-by", "bench"),
];
const RESPONSE_BODY: &[u8] = br#"{"upstream":"bench","ok":true}"#;

fn request_headers(token: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![
        (":authority", "127.0.0.1:10000".to_string()),
        (":path", "/".to_string()),
        (":method", "GET".to_string()),
        (":scheme", "http".to_string()),
        ("x-forwarded-proto", "http".to_string()),
        ("x-request-id", "5d1c8a3e-1f7e-4a44-9e2f-0a3c5b7d9e11".to_string()),
    ];
    if let Some(t) = token {
        h.push(("authorization", format!("Bearer {t}")));
    }
    h
}

/// One GET through a new stream of `w`, in Envoy's callback order for a response with a body;
/// every callback lets it through and nothing answers locally. Returns the stream's id.
fn one_request<R: RootFilter>(w: &mut Worker<R>, token: Option<&str>) -> u32 {
    let headers = request_headers(token);
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let id = w.new_stream();
    assert_eq!(w.request_headers(id, &pairs, true), Action::Continue, "{}: request headers", R::NAME);
    assert_eq!(w.response_headers(id, RESPONSE, false), Action::Continue, "{}: response headers", R::NAME);
    assert_eq!(w.response_body(id, RESPONSE_BODY, true), Action::Continue, "{}: response body", R::NAME);
    w.complete(id);
    assert!(w.local_reply(id).is_none(), "{}: answered locally: {:?}", R::NAME, w.local_reply(id));
    id
}

/// The emulated proxy as the bench's Envoy runs: its clock, `--log-level warning`, the
/// client's address.
fn bench_proxy() -> Proxy {
    let proxy = Proxy::new();
    proxy.set_now(SystemTime::now());
    proxy.set_log_level(LogLevel::Warn);
    proxy.set_property(&["source", "address"], b"127.0.0.1:50000");
    proxy
}

/// A worker configured from the bench config and `prepare`d, one warm-up request, then one
/// request counted: its host calls, the worker and the counted stream's id.
fn measure<R: RootFilter + Default>(
    config: &str,
    token: Option<&str>,
    prepare: impl FnOnce(&mut Worker<R>),
) -> (HostCalls, Worker<R>, u32) {
    let proxy = bench_proxy();
    let mut w: Worker<R> = proxy.worker(&plugin_config(config, R::NAME));
    prepare(&mut w);
    one_request(&mut w, token);
    let (id, calls) = proxy.count_host_calls(|| one_request(&mut w, token));
    assert!(calls.total() > 0, "{}: no host call at all", R::NAME);
    (calls, w, id)
}

/// The bench rate limit service's answer (Limitador's shape): OK, one status with the limit
/// (10^9 an hour), what remains, and the time to reset. Written with prost, as a service would.
fn service_answer() -> Vec<u8> {
    use prost::Message;
    #[derive(Clone, PartialEq, Message)]
    struct RateLimitResponse {
        #[prost(int32, tag = "1")]
        overall_code: i32,
        #[prost(message, repeated, tag = "2")]
        statuses: Vec<DescriptorStatus>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct DescriptorStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(message, optional, tag = "2")]
        current_limit: Option<RateLimit>,
        #[prost(uint32, tag = "3")]
        limit_remaining: u32,
        #[prost(message, optional, tag = "4")]
        duration_until_reset: Option<Duration>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct RateLimit {
        #[prost(uint32, tag = "1")]
        requests_per_unit: u32,
        #[prost(int32, tag = "2")]
        unit: i32,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Duration {
        #[prost(int64, tag = "1")]
        seconds: i64,
    }
    RateLimitResponse {
        overall_code: rate_limit::rls::CODE_OK,
        statuses: vec![DescriptorStatus {
            code: rate_limit::rls::CODE_OK,
            current_limit: Some(RateLimit { requests_per_unit: 1_000_000_000, unit: 3 }),
            limit_remaining: 999_999_999,
            duration_until_reset: Some(Duration { seconds: 3599 }),
        }],
    }
    .encode_to_vec()
}

/// [`one_request`] for the global rule: the request pauses for its `ShouldRateLimit` call,
/// which the emulated proxy answers; the answer's callback is counted with the request's.
fn one_global_request(w: &mut Worker<rate_limit::filter::RateLimitRoot>) -> u32 {
    let headers = request_headers(None);
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let id = w.new_stream();
    assert_eq!(w.request_headers(id, &pairs, true), Action::Pause, "global rule: waits for the service");
    let call = w.grpc_calls().last().cloned().expect("a ShouldRateLimit call");
    w.answer_grpc_call(call.token, 0, &service_answer());
    assert!(!w.is_paused(id), "global rule: resumed by the answer");
    assert_eq!(w.response_headers(id, RESPONSE, false), Action::Continue, "global rule: response headers");
    assert_eq!(w.response_body(id, RESPONSE_BODY, true), Action::Continue, "global rule: response body");
    w.complete(id);
    assert!(w.local_reply(id).is_none(), "global rule: answered locally: {:?}", w.local_reply(id));
    id
}

fn measure_global_rule() -> (HostCalls, Worker<rate_limit::filter::RateLimitRoot>, u32) {
    let proxy = bench_proxy();
    let mut w = proxy.worker(&plugin_config("bench/rate-limit-global.yaml", "rate-limit"));
    one_global_request(&mut w);
    let (id, calls) = proxy.count_host_calls(|| one_global_request(&mut w));
    (calls, w, id)
}

/// The probe's replay of a script (`replay-<name>`, its configuration) as a filter of the
/// emulated proxy, so its host calls are counted as the filters' are.
#[derive(Default)]
struct ReplayRoot(Option<Rc<Plan>>);

struct ReplayStream(Rc<Plan>);

impl RootFilter for ReplayRoot {
    type Http = ReplayStream;
    const NAME: &'static str = "replay";

    fn configure(&mut self, host: &dyn Host, raw: Option<&[u8]>) -> Result<(), ConfigError> {
        let name = String::from_utf8_lossy(raw.unwrap_or_default()).into_owned();
        let scripts = replay::scripts(&name).ok_or_else(|| ConfigError::new("", format!("no script {name}")))?;
        self.0 = Some(Rc::new(Plan::new(host, &scripts)));
        Ok(())
    }

    fn new_http_filter(&self, _context_id: u32) -> Option<ReplayStream> {
        self.0.clone().map(ReplayStream)
    }
}

impl HttpFilter for ReplayStream {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        self.0.run(host, &self.0.request_headers, 0);
        Action::Continue
    }
    fn on_response_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        self.0.run(host, &self.0.response_headers, 0);
        Action::Continue
    }
    fn on_response_body(&mut self, host: &dyn Host, body_size: usize, _end_of_stream: bool) -> Action {
        self.0.run(host, &self.0.response_body, body_size);
        Action::Continue
    }
    fn on_log(&mut self, host: &dyn Host) {
        self.0.run(host, &self.0.log, 0);
    }
}

/// A replay's host calls for one request (after a warm-up), by kind.
fn replayed(script: &str, token: Option<&str>) -> BTreeMap<HostCall, u64> {
    let proxy = bench_proxy();
    let mut w: Worker<ReplayRoot> = proxy.worker(script);
    one_request(&mut w, token);
    let (_, calls) = proxy.count_host_calls(|| one_request(&mut w, token));
    calls.iter().collect()
}

#[test]
fn host_calls_per_request_per_filter() {
    let mut all: BTreeMap<HostCall, u64> = BTreeMap::new();
    // Each filter's census, for the replay check below.
    let mut census: Vec<(&'static str, BTreeMap<HostCall, u64>)> = Vec::new();
    let mut report = |name: &str, calls: &HostCalls| {
        println!("{name:<18} {calls}");
        for (kind, n) in calls.iter() {
            *all.entry(kind).or_default() += n;
        }
    };

    let (c, w, id) =
        measure::<security_headers::filter::SecurityHeadersRoot>("bench/security-headers.yaml", None, |_| {});
    assert_eq!(w.response_header_values(id, "x-frame-options"), vec!["DENY"], "security-headers did its work");
    assert!(w.response_header_values(id, "server").is_empty(), "server removed");
    report("security-headers", &c);
    census.push(("security-headers", c.iter().collect()));

    let claims = jwt::with(jwt::claims("bench-0"), serde_json::json!({"exp": jwt::now() + 3600}));
    let token = jwt::token(Alg::RS256, &claims);
    let (c, w, id) = measure::<jwt_auth::filter::JwtAuthRoot>("bench/jwt-auth.yaml", Some(&token), |_| {});
    assert!(w.request_header_values(id, "authorization").is_empty(), "token verified and stripped");
    report("jwt-auth (cached)", &c);
    census.push(("jwt-auth", c.iter().collect()));

    let (c, w, id) = measure::<rate_limit::filter::RateLimitRoot>("bench/rate-limit.yaml", None, |_| {});
    assert_eq!(w.response_header_values(id, "x-ratelimit-limit"), vec!["1000000000"], "rate-limit did its work");
    report("rate-limit", &c);
    census.push(("rate-limit", c.iter().collect()));

    let (c, w, id) = measure_global_rule();
    assert_eq!(w.response_header_values(id, "x-ratelimit-remaining"), vec!["999999999"], "the service's numbers");
    // Not one of the five (all-five.yaml's rate-limit is the local rule): not in the sum.
    println!("{:<18} {c}", "rate-limit global");

    let (c, w, id) = measure::<token_fetch::filter::TokenFetchRoot>("bench/token-fetch.yaml", None, |w| {
        w.tick();
        let call = w.last_http_call();
        let body = br#"{"access_token":"tok-bench","token_type":"Bearer","expires_in":3600}"#;
        w.answer_http_call(call.token, &[(":status", "200")], body);
    });
    assert_eq!(w.request_header_values(id, "authorization"), vec!["Bearer tok-bench"], "token injected");
    report("token-fetch", &c);
    census.push(("token-fetch", c.iter().collect()));

    let (c, w, _) = measure::<body_logger::filter::BodyLoggerRoot>("bench/body-logger.yaml", None, |_| {});
    assert_eq!(w.proxy().metric("body_logger.logged"), Some(2), "a line per request");
    report("body-logger (GET)", &c);
    census.push(("body-logger", c.iter().collect()));

    let sum: u64 = all.values().sum();
    let kinds: Vec<String> = all.iter().map(|(k, n)| format!("{} {n}", k.abi_name())).collect();
    println!("{:<18} total {sum}: {}", "all five (sum)", kinds.join(", "));

    // The bench's "host calls alone" rows are only a lower bound if each replay makes its
    // filter's calls: the same kinds, as many of each (a filter that changes its calls fails
    // here until e2e/probe/src/replay.rs follows). The chain's is the five's sum.
    for (name, calls) in &census {
        let token = (*name == "jwt-auth").then_some(token.as_str());
        assert_eq!(&replayed(&format!("replay-{name}"), token), calls, "replay-{name} against {name}'s census");
    }
    assert_eq!(replayed("replay-chain", Some(&token)), all, "replay-chain against the five's sum");
}
