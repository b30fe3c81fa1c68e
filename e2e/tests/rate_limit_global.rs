//! Global rate limiting through a real engine: [`e2e::rls_server::RlsServer`] (Limitador on a
//! real Redis behind the RLS v3 gRPC service), driven by Envoy's native
//! `envoy.filters.http.ratelimit` (envoy-configs/rate-limit-native.yaml) and by this
//! repository's rate-limit filter with a global rule (envoy-configs/rate-limit-global.yaml).
//! Each test below runs on both ([`Filter`]):
//! - two Envoy replicas (`--concurrency 2` each) sharing one service admit exactly the limit of
//!   1,000 concurrent requests, with no RLS error or timeout;
//! - RLS down, RLS slow (past the filter's `timeout`) and Redis down each give the documented
//!   answer (`failure_mode_deny: false` admits, `true` answers 500) and the next requests are
//!   checked again once the part is back, without restarting Envoy.
//!
//! And the two side by side on one service: the same status and `X-RateLimit-*` values for every
//! request of a sequence that crosses the limit, our extra headers listed.

use e2e::envoy::{edit_plugin_config, free_port, Envoy, EnvoyOptions};
use e2e::http::{read_response, Request, Response};
use e2e::redis::Redis;
use e2e::rls_server::{load_limits_file, Answer, RlsLimit, RlsServer, Unit};
use e2e::upstream::Upstream;
use e2e::{LISTENER_PORT, RLS_PORT, UPSTREAM_PORT};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The filter doing the global check: Envoy's native `ratelimit` or the wasm filter's global
/// rule. The same tests run on both, each on its shipped config with the same descriptor,
/// `[generic_key=api, api_key=<x-api-key>]`, for `/api/` requests, the same `timeout` (native's
/// 2 s unless a test sets another), and the same statistic names (`ok`, `over_limit`, `error`,
/// `failure_mode_allowed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Filter {
    /// envoy-configs/rate-limit-native.yaml as it is.
    Native,
    /// envoy-configs/rate-limit-global.yaml with its `api_key` rule only: the `per_client` rule,
    /// whose local pre-bucket would shed requests before the service counts them, is left out,
    /// and `timeout` is native's rather than the shipped 100 ms (a loaded 2-core machine must
    /// not fail open: the tests assert zero timeouts).
    Wasm,
}

impl Filter {
    fn config(self) -> &'static str {
        match self {
            Filter::Native => "rate-limit-native.yaml",
            Filter::Wasm => "rate-limit-global.yaml",
        }
    }

    /// The service's port in the config (the harness maps it to the test's RLS).
    fn config_rls_port(self) -> u16 {
        match self {
            Filter::Native => RLS_PORT,
            Filter::Wasm => 8081,
        }
    }

    /// The config as this test runs it: `domain` (the service's namespace), `failure_mode_deny`
    /// and `timeout` set, the wasm filter's rules as said above.
    fn edit(self, config: String, domain: &'static str, failure_mode_deny: bool, timeout: &str) -> String {
        match self {
            Filter::Native => {
                for shipped in ["failure_mode_deny: false", "domain: edge\n", " timeout: 2s\n"] {
                    assert_eq!(config.matches(shipped).count(), 1, "{shipped}");
                }
                config
                    .replace("failure_mode_deny: false", &format!("failure_mode_deny: {failure_mode_deny}"))
                    .replace("domain: edge\n", &format!("domain: {domain}\n"))
                    .replace(" timeout: 2s\n", &format!(" timeout: {timeout}\n"))
            }
            Filter::Wasm => edit_plugin_config(&config, "rate-limit", |c| {
                c["domain"] = domain.into();
                c["timeout"] = timeout.into();
                c["failure_mode_deny"] = failure_mode_deny.into();
                let rules = c["rules"].as_array_mut().unwrap();
                rules.retain(|r| r["name"] == "api_key");
                assert_eq!(rules.len(), 1);
            })
            .unwrap(),
        }
    }

    /// A statistic of the check, by native's name: `cluster.upstream.ratelimit.<name>` (the
    /// route's cluster), the wasm filter's `wasmcustom.rate_limit.rls.<name>`.
    fn stat(self, envoy: &Envoy, name: &str) -> u64 {
        match self {
            Filter::Native => envoy.stat(&format!("cluster.upstream.ratelimit.{name}")),
            Filter::Wasm => envoy.stat(&format!("wasmcustom.rate_limit.rls.{name}")),
        }
    }
}

/// One Redis, one RLS and one upstream, shared by the Envoys.
struct Stack {
    redis: Redis,
    rls: RlsServer,
    upstream: Upstream,
    envoys: Vec<Envoy>,
}

impl Stack {
    fn new() -> Stack {
        let redis = Redis::start().unwrap();
        let rls = RlsServer::start(0, &redis.url()).unwrap();
        // A port free a moment ago can be taken by then (another process's outbound
        // connection: ephemeral ports come from the same range): try a few.
        let upstream = (0..5).find_map(|_| Upstream::start(free_port()).ok()).expect("an upstream port");
        Stack { redis, rls, upstream, envoys: Vec::new() }
    }

    /// Start one more Envoy (`--concurrency 2`) running `filter` against this stack's service.
    fn add(&mut self, filter: Filter, domain: &'static str, failure_mode_deny: bool, timeout: &'static str) {
        let opts = EnvoyOptions {
            concurrency: 2,
            preset_ports: BTreeMap::from([
                (UPSTREAM_PORT, self.upstream.port),
                (filter.config_rls_port(), self.rls.port()),
            ]),
            edit: Some(Box::new(move |c: String| filter.edit(c, domain, failure_mode_deny, timeout))),
            ..EnvoyOptions::default()
        };
        self.envoys.push(Envoy::start_with(filter.config(), opts).unwrap());
    }
}

/// `replicas` Envoys running `filter` on domain `edge` against one service.
fn stack(filter: Filter, replicas: usize, failure_mode_deny: bool, timeout: &'static str) -> Stack {
    let mut s = Stack::new();
    for _ in 0..replicas {
        s.add(filter, "edge", failure_mode_deny, timeout);
    }
    s
}

/// The path every test request takes: the wasm config's `api_key` rule matches `/api/`; native's
/// descriptor is built for every path.
const PATH: &str = "/api/";

fn keyed(key: &str) -> Request {
    Request::get(PATH).header("x-api-key", key)
}

/// `threads` keep-alive connections, thread `t` to `ports[t % ports.len()]`, all opened first,
/// released together, each sending `per_thread` requests with API key `key`.
fn concurrent(ports: &[u16], threads: usize, per_thread: usize, key: &'static str) -> Vec<Response> {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (barrier, port) = (barrier.clone(), ports[t % ports.len()]);
            std::thread::spawn(move || {
                let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let request = format!("GET {PATH} HTTP/1.1\r\nhost: localhost\r\nx-api-key: {key}\r\n\r\n");
                barrier.wait();
                (0..per_thread)
                    .map(|_| {
                        writer.write_all(request.as_bytes()).unwrap();
                        read_response(&mut reader, false).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
}

/// Two replicas of `filter`, 1,000 concurrent requests on one key, a limit of 100. The service
/// checks one request at a time (exact), so under a burst the last checks wait for up to 1,000
/// Redis round trips: a `timeout` of 30 s, as no check may time out and fail open here (2 s did,
/// on this 2-core machine at a load average of 17, admitting hundreds more).
fn two_replicas_admit_exactly_the_limit(filter: Filter) {
    let s = stack(filter, 2, false, "30s");
    // An hour: Limitador's window starts at the first hit, so no reset lands during the run.
    s.rls.set_limits(&[RlsLimit::new("edge", 100, Unit::Hour).when("generic_key", "api").per("api_key")]).unwrap();
    let ports: Vec<u16> = s.envoys.iter().map(|e| e.port(LISTENER_PORT)).collect();

    let responses = concurrent(&ports, 200, 5, "shared-key");
    let statuses: BTreeMap<u16, usize> = responses.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.status).or_default() += 1;
        m
    });
    let sum = |name: &str| s.envoys.iter().map(|e| filter.stat(e, name)).collect::<Vec<_>>();
    assert_eq!(statuses, BTreeMap::from([(200, 100), (429, 900)]), "RLS errors per replica: {:?}", sum("error"));
    assert_eq!(s.upstream.requests().len(), 100);

    // Serialised checks: every admitted request saw its own remaining count, 99 down to 0.
    let remaining: BTreeSet<u32> = responses
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.header("x-ratelimit-remaining").unwrap().parse().unwrap())
        .collect();
    assert_eq!(remaining, (0..100).collect());
    let limited = responses.iter().find(|r| r.status == 429).unwrap();
    assert_eq!(limited.header("x-ratelimit-limit").as_deref(), Some("100, 100;w=3600"));
    assert_eq!(limited.header("x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(limited.header("x-envoy-ratelimited").as_deref(), Some("true"));

    // The service answered every check: none failed, none timed out.
    let counts = s.rls.wait_answered(1000);
    assert_eq!((counts.requests, counts.ok, counts.over_limit), (1000, 100, 900), "{counts:?}");
    assert_eq!((counts.errors, counts.unanswered, counts.unknown), (0, 0, 0), "{counts:?}");
    let seen = &s.rls.requests()[0];
    assert_eq!(seen.domain, "edge");
    let entries = [("generic_key", "api"), ("api_key", "shared-key")].map(|(k, v)| (k.to_string(), v.to_string()));
    assert_eq!(seen.descriptors, vec![entries.to_vec()]);

    // Both replicas took part, and their stats add up to the same: no error, no fail-open.
    let (ok, over) = (sum("ok"), sum("over_limit"));
    assert!(ok.iter().zip(&over).all(|(o, v)| o + v > 0), "a replica was not used: ok {ok:?}, over {over:?}");
    assert_eq!(ok.iter().sum::<u64>(), 100);
    assert_eq!(over.iter().sum::<u64>(), 900);
    assert_eq!(sum("error").iter().sum::<u64>(), 0);
    assert_eq!(sum("failure_mode_allowed").iter().sum::<u64>(), 0);
    if filter == Filter::Wasm {
        // Part of `error` already; the wasm filter counts it apart.
        assert_eq!(sum("timeout").iter().sum::<u64>(), 0);
    }
    // One Redis counter held the shared budget (beside it, Limitador's index of a limit's
    // counters).
    let counters = s.redis.keys("namespace:{edge},counter:*");
    assert_eq!(
        counters.len(),
        1,
        "{:?}",
        s.redis.keys("*").iter().map(|k| String::from_utf8_lossy(k)).collect::<Vec<_>>()
    );
}

#[test]
fn two_native_replicas_sharing_one_rls_admit_exactly_the_limit() {
    two_replicas_admit_exactly_the_limit(Filter::Native);
}

#[test]
fn two_wasm_replicas_sharing_one_rls_admit_exactly_the_limit() {
    two_replicas_admit_exactly_the_limit(Filter::Wasm);
}

/// Send one request; the status and whether the service's answer reached it (X-RateLimit-*).
fn one(envoy: &Envoy, key: &str) -> (u16, bool) {
    let r = keyed(key).send(envoy.port(LISTENER_PORT)).unwrap();
    (r.status, r.has_header("x-ratelimit-remaining"))
}

/// Requests until one is checked by the service again (the part is back); Envoy is never
/// restarted. A generous deadline: reconnecting may take a few tries on a loaded machine.
fn recovers(s: &Stack, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, checked) = one(&s.envoys[0], key);
        if status == 200 && checked {
            return;
        }
        assert!(Instant::now() < deadline, "not checked again: last status {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn failure_modes(filter: Filter, deny: bool) {
    let mut s = stack(filter, 1, deny, "2s");
    // The compose service's own limits file (100 a minute per API key).
    s.rls
        .set_limitador_limits(load_limits_file(&e2e::repo_root().join("deploy/limitador/limits.yaml")).unwrap())
        .unwrap();
    let envoy = &s.envoys[0];
    let failed = if deny { 500 } else { 200 };
    assert_eq!(one(envoy, "k"), (200, true));
    assert_eq!(filter.stat(envoy, "ok"), 1);

    // RLS down: connection refused.
    s.rls.stop();
    assert_eq!(one(envoy, "k"), (failed, false), "RLS down");
    assert_eq!(filter.stat(envoy, "error"), 1);
    assert_eq!(filter.stat(envoy, "failure_mode_allowed"), u64::from(!deny));
    s.rls.restart().unwrap();
    recovers(&s, "k");

    // RLS slow: past the filter's 2 s timeout. The abandoned check is never charged.
    s.rls.clear_requests();
    s.rls.set_delay(Duration::from_secs(4));
    assert_eq!(one(envoy, "k"), (failed, false), "RLS slow");
    assert_eq!(filter.stat(envoy, "error"), 2);
    assert_eq!(filter.stat(envoy, "failure_mode_allowed"), 2 * u64::from(!deny));
    if filter == Filter::Wasm {
        assert_eq!(filter.stat(envoy, "timeout"), 1);
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.rls.requests().iter().map(|r| r.answer).collect::<Vec<_>>(), [None], "cancelled, not answered");
    s.rls.set_delay(Duration::ZERO);
    recovers(&s, "k");

    // Redis down: Limitador's storage fails, the service answers UNAVAILABLE.
    s.rls.clear_requests();
    s.redis.stop();
    assert_eq!(one(envoy, "k"), (failed, false), "Redis down");
    assert_eq!(s.rls.requests().last().and_then(|r| r.answer), Some(Answer::Error(tonic::Code::Unavailable)));
    assert_eq!(filter.stat(envoy, "error"), 3);
    assert_eq!(filter.stat(envoy, "failure_mode_allowed"), 3 * u64::from(!deny));
    s.redis.restart().unwrap();
    recovers(&s, "k");
    if filter == Filter::Wasm {
        // The wasm filter also counts the denials (native has no such counter).
        assert_eq!(filter.stat(envoy, "failure_mode_denied"), 3 * u64::from(deny));
        assert_eq!(filter.stat(envoy, "timeout"), 1);
    }

    // Back to counting (Redis restarted empty): 100 a minute, then 429.
    let statuses: Vec<u16> = (0..101).map(|_| one(envoy, "fresh").0).collect();
    assert_eq!(statuses.iter().filter(|&&st| st == 200).count(), 100);
    assert_eq!(statuses.last(), Some(&429));
}

#[test]
fn native_failure_mode_allow_admits_while_rls_or_redis_is_down_or_slow_and_recovers() {
    failure_modes(Filter::Native, false);
}

#[test]
fn native_failure_mode_deny_answers_500_while_rls_or_redis_is_down_or_slow_and_recovers() {
    failure_modes(Filter::Native, true);
}

#[test]
fn wasm_failure_mode_allow_admits_while_rls_or_redis_is_down_or_slow_and_recovers() {
    failure_modes(Filter::Wasm, false);
}

#[test]
fn wasm_failure_mode_deny_answers_500_while_rls_or_redis_is_down_or_slow_and_recovers() {
    failure_modes(Filter::Wasm, true);
}

/// The rate-limit headers of a response: `x-ratelimit-*`, `x-envoy-ratelimited`, the IETF
/// `ratelimit`/`ratelimit-policy`, `retry-after`, and the service's `x-rls-note`.
fn limit_headers(r: &Response) -> BTreeMap<String, String> {
    let names = ["x-ratelimit-", "x-envoy-ratelimited", "ratelimit", "retry-after", "x-rls-"];
    r.headers
        .iter()
        .filter(|(k, _)| names.iter().any(|n| k.starts_with(n)))
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

#[test]
fn native_and_wasm_on_one_service_agree_on_every_request() {
    let mut s = Stack::new();
    // Separate domains, so the two budgets never mix: each filter meets the same limit fresh.
    s.add(Filter::Native, "edge-native", false, "2s");
    s.add(Filter::Wasm, "edge-wasm", false, "2s");
    let limit =
        |domain| RlsLimit::new(domain, 5, Unit::Minute).when("generic_key", "api").per("api_key").named("per_api_key");
    s.rls.set_limits(&[limit("edge-native"), limit("edge-wasm")]).unwrap();
    s.rls.set_response_headers_to_add(&[("x-rls-note", "checked")]);
    s.rls.set_request_headers_to_add(&[("x-rls-user", "u1")]);
    let (native, wasm) = (&s.envoys[0], &s.envoys[1]);

    // Key a crosses its limit of 5; b has its own budget; no key: no descriptor, no check.
    let sequence = ["a", "a", "a", "b", "a", "a", "a", "", "a", "b"];
    let request = |key: &str| if key.is_empty() { Request::get(PATH) } else { keyed(key) };
    let mut statuses = Vec::new();
    for (i, key) in sequence.iter().enumerate() {
        // Interleaved, so the two counters of a key start within milliseconds of each other.
        let n = request(key).send(native.port(LISTENER_PORT)).unwrap();
        let w = request(key).send(wasm.port(LISTENER_PORT)).unwrap();
        let at = format!("request {i} (key {key:?}):\nnative {n}\nwasm {w}");
        assert_eq!(n.status, w.status, "{at}");
        statuses.push(n.status);

        let (mut nh, mut wh) = (limit_headers(&n), limit_headers(&w));
        // The counters' TTLs differ by the milliseconds between the two requests, which can
        // straddle a whole second: the reset may differ by one.
        let (nr, wr) = (nh.remove("x-ratelimit-reset"), wh.remove("x-ratelimit-reset"));
        let reset = |r: &Option<String>| r.as_ref().map(|v| v.parse::<u64>().unwrap());
        assert_eq!(nr.is_some(), wr.is_some(), "{at}");
        if let (Some(nr), Some(wr)) = (reset(&nr), reset(&wr)) {
            assert!(nr.abs_diff(wr) <= 1 && (1..=60).contains(&wr), "{at}");
        }
        // Our extra headers, the only difference: the IETF fields, and Retry-After on a denial
        // (the whole seconds to the reset, rounded up).
        let ietf = wh.remove("ratelimit");
        let policy = wh.remove("ratelimit-policy");
        let retry_after = wh.remove("retry-after");
        assert_eq!(nh, wh, "{at}");
        if key.is_empty() {
            assert!(nh.is_empty() && ietf.is_none() && policy.is_none() && retry_after.is_none(), "{at}");
            continue;
        }
        let remaining = &wh["x-ratelimit-remaining"];
        assert_eq!(wh["x-ratelimit-limit"], "5, 5;w=60;name=\"per_api_key\"", "{at}");
        assert_eq!(wh["x-rls-note"], "checked", "{at}");
        assert_eq!(policy.as_deref(), Some("\"api_key\";q=5;w=60"), "{at}");
        let ietf = ietf.unwrap();
        assert!(ietf.starts_with(&format!("\"api_key\";r={remaining};t=")), "{at}");
        let wr = reset(&wr).unwrap();
        let t: u64 = ietf.rsplit("t=").next().unwrap().parse().unwrap();
        assert!(t == wr || t == wr + 1, "{at}");
        match w.status {
            200 => assert!(retry_after.is_none(), "{at}"),
            _ => assert_eq!(retry_after.map(|r| r.parse().unwrap()), Some(t), "{at}"),
        }
    }
    // The sequence crosses the limit: without a limit the comparison would be vacuous.
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429, 200, 429, 200]);

    // Both sent the same descriptors, and both passed the service's request headers upstream.
    let requests = s.rls.requests();
    let descriptors = |domain: &str| {
        requests
            .iter()
            .filter(|r| r.domain == domain)
            .map(|r| (r.descriptors.clone(), r.hits_addend))
            .collect::<Vec<_>>()
    };
    assert_eq!(descriptors("edge-native").len(), 9);
    assert_eq!(descriptors("edge-native"), descriptors("edge-wasm"));
    let upstream = s.upstream.requests();
    assert_eq!(upstream.len(), 16);
    assert_eq!(upstream.iter().filter(|r| r.header_value("x-rls-user").as_deref() == Some("u1")).count(), 14);
    for name in ["ok", "over_limit"] {
        assert_eq!(Filter::Native.stat(native, name), Filter::Wasm.stat(wasm, name), "{name}");
    }
}
