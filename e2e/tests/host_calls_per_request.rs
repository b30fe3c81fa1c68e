//! Host calls per request, per filter: each filter drives the request `make bench` sends it
//! (its configuration read from the very envoy-configs/bench/*.yaml the bench runs) through
//! the native `Host`, and the calls it makes are counted per kind. Printed with
//! `cargo test -p e2e --test host_calls -- --nocapture`; the counts go in the gateway-cost
//! note beside CPU and instructions per request (every host call is a VM crossing).
//!
//! What is counted: calls a filter makes through `shared::Host` during one request's
//! callbacks (request headers, response headers, response body, log), after a warm-up request
//! (jwt-auth's cache filled, token-fetch's token fetched). Not counted: the SDK's own calls
//! around each callback (the trivial filter's floor pays them too).
//!
//! HOOK (issue 12's shared test harness, branch core12, not on main yet): its host-call counter
//! replaces [`Counting`] below once it lands, and these scenarios move onto its contexts. Until
//! then `Counting` wraps `MockHost` and counts at the `Host` trait.

use e2e::jwt::{self, Alg};
use serde_norway::Value as Yaml;
use shared::host::{BodyKind, Host, HostError, LogLevel, MetricKind};
use shared::mock::MockHost;
use shared::plugin::{Action, HttpFilter, RootFilter};
use shared::HeaderMapKind;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// HOOK: `MockHost` with a count per `Host` method; replaced by the shared harness's counter.
struct Counting<'a> {
    inner: &'a MockHost,
    counts: RefCell<BTreeMap<&'static str, u64>>,
    on: std::cell::Cell<bool>,
}

impl<'a> Counting<'a> {
    fn new(inner: &'a MockHost) -> Self {
        Counting { inner, counts: RefCell::new(BTreeMap::new()), on: std::cell::Cell::new(false) }
    }
    fn count(&self, kind: &'static str) {
        if self.on.get() {
            *self.counts.borrow_mut().entry(kind).or_default() += 1;
        }
    }
    /// Count from now on, from zero.
    fn start(&self) {
        self.counts.borrow_mut().clear();
        self.on.set(true);
    }
    fn total(&self) -> u64 {
        self.counts.borrow().values().sum()
    }
}

impl Host for Counting<'_> {
    fn now(&self) -> SystemTime {
        self.count("now");
        self.inner.now()
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.count("log");
        self.inner.log(level, message)
    }
    fn log_level(&self) -> LogLevel {
        self.count("log_level");
        self.inner.log_level()
    }
    fn header(&self, map: HeaderMapKind, name: &str) -> Option<Vec<u8>> {
        self.count("header");
        self.inner.header(map, name)
    }
    fn headers(&self, map: HeaderMapKind) -> Vec<(String, Vec<u8>)> {
        self.count("headers");
        self.inner.headers(map)
    }
    fn set_header(&self, map: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.count("set_header");
        self.inner.set_header(map, name, value)
    }
    fn add_header(&self, map: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.count("add_header");
        self.inner.add_header(map, name, value)
    }
    fn remove_header(&self, map: HeaderMapKind, name: &str) -> Result<(), HostError> {
        self.count("remove_header");
        self.inner.remove_header(map, name)
    }
    fn body(&self, body: BodyKind, start: usize, max_size: usize) -> Option<Vec<u8>> {
        self.count("body");
        self.inner.body(body, start, max_size)
    }
    fn send_local_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        self.count("send_local_response");
        self.inner.send_local_response(status, headers, body)
    }
    fn resume_request(&self) -> Result<(), HostError> {
        self.count("resume_request");
        self.inner.resume_request()
    }
    fn resume_response(&self) -> Result<(), HostError> {
        self.count("resume_response");
        self.inner.resume_response()
    }
    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        self.count("set_effective_context");
        self.inner.set_effective_context(context_id)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.count("property");
        self.inner.property(path)
    }
    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        self.count("set_property");
        Host::set_property(self.inner, path, value)
    }
    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.count("shared_data");
        self.inner.shared_data(key)
    }
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        self.count("set_shared_data");
        self.inner.set_shared_data(key, value, cas)
    }
    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, HostError> {
        self.count("dispatch_http_call");
        self.inner.dispatch_http_call(cluster, headers, body, timeout)
    }
    fn dispatch_grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        initial_metadata: &[(&str, &[u8])],
        message: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        self.count("dispatch_grpc_call");
        self.inner.dispatch_grpc_call(cluster, service, method, initial_metadata, message, timeout)
    }
    fn call_status(&self) -> Result<(u32, Vec<u8>), HostError> {
        self.count("call_status");
        self.inner.call_status()
    }
    fn set_headers(&self, map: HeaderMapKind, pairs: &[(&str, &[u8])]) -> Result<(), HostError> {
        self.count("set_headers");
        Host::set_headers(self.inner, map, pairs)
    }
    fn random(&self, buf: &mut [u8]) -> Result<(), HostError> {
        self.count("random");
        self.inner.random(buf)
    }
    fn wake(&self, context_id: u32) -> Result<(), HostError> {
        self.count("wake");
        self.inner.wake(context_id)
    }
    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        self.count("set_tick_period");
        self.inner.set_tick_period(period)
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        self.count("define_metric");
        self.inner.define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, delta: i64) {
        self.count("increment_metric");
        self.inner.increment_metric(id, delta)
    }
    fn record_metric(&self, id: u32, value: u64) {
        self.count("record_metric");
        self.inner.record_metric(id, value)
    }
}

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

/// One GET through a fresh stream of `root`, Envoy's callback order for a response with a
/// body; every callback must let it through.
fn one_request<R: RootFilter>(host: &dyn Host, mock: &MockHost, root: &R, ctx: u32, token: Option<&str>) {
    let headers = request_headers(token);
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    mock.set_request_headers(&pairs);
    mock.set_response_headers(RESPONSE);
    mock.set_body(BodyKind::Response, RESPONSE_BODY);
    mock.clear_local_response();
    mock.clear_effective_context();
    let mut f = root.new_http_filter(ctx).expect("configured");
    assert_eq!(f.on_request_headers(host, true), Action::Continue, "{}: request headers", R::NAME);
    assert_eq!(f.on_response_headers(host, false), Action::Continue, "{}: response headers", R::NAME);
    assert_eq!(f.on_response_body(host, RESPONSE_BODY.len(), true), Action::Continue, "{}: response body", R::NAME);
    f.on_log(host);
    assert!(mock.local_response().is_none(), "{}: answered locally: {:?}", R::NAME, mock.local_response());
}

fn mock() -> MockHost {
    let m = MockHost::new();
    m.set_now(SystemTime::now());
    // The bench's Envoy runs at --log-level warning.
    m.set_log_level(LogLevel::Warn);
    m.set_property(&["source", "address"], b"127.0.0.1:50000");
    m.set_property(&["request", "id"], b"5d1c8a3e-1f7e-4a44-9e2f-0a3c5b7d9e11");
    m
}

/// Configure `root` from the bench config, run a warm-up request, then count one request.
fn measure<R: RootFilter>(
    mut root: R,
    config: &str,
    token: Option<&str>,
    prepare: impl FnOnce(&MockHost, &mut R),
) -> (BTreeMap<&'static str, u64>, MockHost) {
    let m = mock();
    let json = plugin_config(config, R::NAME);
    root.configure(&m, Some(json.as_bytes())).unwrap_or_else(|e| panic!("{}: {e:?}", R::NAME));
    prepare(&m, &mut root);
    let counting = Counting::new(&m);
    one_request(&counting, &m, &root, 2, token);
    counting.start();
    one_request(&counting, &m, &root, 3, token);
    let counts = counting.counts.borrow().clone();
    assert!(counting.total() > 0, "{}: no host call at all", R::NAME);
    (counts, m)
}

fn print(name: &str, counts: &BTreeMap<&'static str, u64>) {
    let total: u64 = counts.values().sum();
    let kinds: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("{name:<18} {total:>3} host calls per request: {}", kinds.join(", "));
}

#[test]
fn host_calls_per_request_per_filter() {
    let mut all: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut add = |name: &str, counts: BTreeMap<&'static str, u64>| {
        print(name, &counts);
        for (k, n) in counts {
            *all.entry(k).or_default() += n;
        }
    };

    let (c, m) = measure(
        security_headers::filter::SecurityHeadersRoot::default(),
        "bench/security-headers.yaml",
        None,
        |_, _| {},
    );
    assert_eq!(m.response_header_values("x-frame-options"), vec!["DENY"], "security-headers did its work");
    assert!(m.response_header_values("server").is_empty(), "server removed");
    add("security-headers", c);

    let token =
        jwt::token(Alg::RS256, &jwt::with(jwt::claims("bench-0"), serde_json::json!({"exp": jwt::now() + 3600})));
    let (c, m) = measure(jwt_auth::filter::JwtAuthRoot::default(), "bench/jwt-auth.yaml", Some(&token), |_, _| {});
    assert!(m.header_values(HeaderMapKind::RequestHeaders, "authorization").is_empty(), "token verified and stripped");
    add("jwt-auth (cached)", c);

    let (c, m) = measure(rate_limit::filter::RateLimitRoot::default(), "bench/rate-limit.yaml", None, |_, _| {});
    assert_eq!(m.response_header_values("x-ratelimit-limit"), vec!["1000000000"], "rate-limit did its work");
    add("rate-limit", c);

    let (c, m) = measure(token_fetch::filter::TokenFetchRoot::default(), "bench/token-fetch.yaml", None, |m, r| {
        r.on_tick(m);
        let call = m.http_calls().last().cloned().expect("a token fetch");
        let body = br#"{"access_token":"tok-bench","token_type":"Bearer","expires_in":3600}"#;
        m.set_headers(HeaderMapKind::HttpCallResponseHeaders, &[(":status", "200")]);
        m.set_body(BodyKind::HttpCallResponse, body);
        r.on_http_call_response(m, call.token, 1, body.len(), 0);
    });
    assert_eq!(m.header_values(HeaderMapKind::RequestHeaders, "authorization"), vec!["Bearer tok-bench"]);
    add("token-fetch", c);

    let (c, m) = measure(body_logger::filter::BodyLoggerRoot::default(), "bench/body-logger.yaml", None, |_, _| {});
    assert_eq!(m.metric("body_logger.logged"), Some(2), "a line per request");
    add("body-logger (GET)", c);

    print("all five (sum)", &all);
}
