//! Global rate limiting through a real engine: Envoy's native `envoy.filters.http.ratelimit`
//! (envoy-configs/rate-limit-native.yaml) against [`e2e::rls_server::RlsServer`] — Limitador on a
//! real Redis behind the RLS v3 gRPC service. Proves the engine before the wasm filter's global
//! rules are compared with native on it:
//! - two Envoy replicas (`--concurrency 2` each) sharing one service admit exactly the limit of
//!   1,000 concurrent requests, with no RLS error or timeout;
//! - RLS down, RLS slow (past the filter's `timeout`) and Redis down each give native's
//!   documented answer (`failure_mode_deny: false` admits, `true` answers 500) and the next
//!   requests are checked again once the part is back, without restarting Envoy.

use e2e::envoy::{free_port, Envoy, EnvoyOptions};
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

const CONFIG: &str = "rate-limit-native.yaml";

/// One Redis, one RLS and one upstream, shared by `replicas` Envoys.
struct Stack {
    redis: Redis,
    rls: RlsServer,
    upstream: Upstream,
    envoys: Vec<Envoy>,
}

fn stack(replicas: usize, failure_mode_deny: bool) -> Stack {
    let redis = Redis::start().unwrap();
    let rls = RlsServer::start(0, &redis.url()).unwrap();
    let upstream = Upstream::start(free_port()).unwrap();
    let envoys = (0..replicas)
        .map(|_| {
            let edit: Option<Box<dyn Fn(String) -> String>> = failure_mode_deny.then(|| {
                Box::new(|c: String| {
                    assert!(c.contains("failure_mode_deny: false"));
                    c.replace("failure_mode_deny: false", "failure_mode_deny: true")
                }) as Box<dyn Fn(String) -> String>
            });
            let opts = EnvoyOptions {
                concurrency: 2,
                preset_ports: BTreeMap::from([(UPSTREAM_PORT, upstream.port), (RLS_PORT, rls.port())]),
                edit,
                ..EnvoyOptions::default()
            };
            Envoy::start_with(CONFIG, opts).unwrap()
        })
        .collect();
    Stack { redis, rls, upstream, envoys }
}

/// Native's stats of the route's cluster (`upstream`): `cluster.upstream.ratelimit.<name>`.
fn ratelimit_stat(envoy: &Envoy, name: &str) -> u64 {
    envoy.stat(&format!("cluster.upstream.ratelimit.{name}"))
}

fn keyed(key: &str) -> Request {
    Request::get("/").header("x-api-key", key)
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
                let request = format!("GET / HTTP/1.1\r\nhost: localhost\r\nx-api-key: {key}\r\n\r\n");
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

#[test]
fn two_replicas_sharing_one_rls_admit_exactly_the_limit() {
    let s = stack(2, false);
    // An hour: Limitador's window starts at the first hit, so no reset lands during the run.
    s.rls.set_limits(&[RlsLimit::new("edge", 100, Unit::Hour).when("generic_key", "api").per("api_key")]).unwrap();
    let ports: Vec<u16> = s.envoys.iter().map(|e| e.port(LISTENER_PORT)).collect();

    let responses = concurrent(&ports, 200, 5, "shared-key");
    let statuses: BTreeMap<u16, usize> = responses.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.status).or_default() += 1;
        m
    });
    assert_eq!(statuses, BTreeMap::from([(200, 100), (429, 900)]));
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
    let sum = |name: &str| s.envoys.iter().map(|e| ratelimit_stat(e, name)).collect::<Vec<_>>();
    let (ok, over) = (sum("ok"), sum("over_limit"));
    assert!(ok.iter().zip(&over).all(|(o, v)| o + v > 0), "a replica was not used: ok {ok:?}, over {over:?}");
    assert_eq!(ok.iter().sum::<u64>(), 100);
    assert_eq!(over.iter().sum::<u64>(), 900);
    assert_eq!(sum("error").iter().sum::<u64>(), 0);
    assert_eq!(sum("failure_mode_allowed").iter().sum::<u64>(), 0);
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

fn failure_modes(deny: bool) {
    let mut s = stack(1, deny);
    // The compose service's own limits file (100 a minute per API key).
    s.rls
        .set_limitador_limits(load_limits_file(&e2e::repo_root().join("deploy/limitador/limits.yaml")).unwrap())
        .unwrap();
    let envoy = &s.envoys[0];
    let failed = if deny { 500 } else { 200 };
    assert_eq!(one(envoy, "k"), (200, true));
    assert_eq!(ratelimit_stat(envoy, "ok"), 1);

    // RLS down: connection refused.
    s.rls.stop();
    assert_eq!(one(envoy, "k"), (failed, false), "RLS down");
    assert_eq!(ratelimit_stat(envoy, "error"), 1);
    assert_eq!(ratelimit_stat(envoy, "failure_mode_allowed"), u64::from(!deny));
    s.rls.restart().unwrap();
    recovers(&s, "k");

    // RLS slow: past the filter's 2 s timeout. The abandoned check is never charged.
    s.rls.clear_requests();
    s.rls.set_delay(Duration::from_secs(4));
    assert_eq!(one(envoy, "k"), (failed, false), "RLS slow");
    assert_eq!(ratelimit_stat(envoy, "error"), 2);
    assert_eq!(ratelimit_stat(envoy, "failure_mode_allowed"), 2 * u64::from(!deny));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.rls.requests().iter().map(|r| r.answer).collect::<Vec<_>>(), [None], "cancelled, not answered");
    s.rls.set_delay(Duration::ZERO);
    recovers(&s, "k");

    // Redis down: Limitador's storage fails, the service answers UNAVAILABLE.
    s.rls.clear_requests();
    s.redis.stop();
    assert_eq!(one(envoy, "k"), (failed, false), "Redis down");
    assert_eq!(s.rls.requests().last().and_then(|r| r.answer), Some(Answer::Error(tonic::Code::Unavailable)));
    assert_eq!(ratelimit_stat(envoy, "error"), 3);
    assert_eq!(ratelimit_stat(envoy, "failure_mode_allowed"), 3 * u64::from(!deny));
    s.redis.restart().unwrap();
    recovers(&s, "k");

    // Back to counting (Redis restarted empty): 100 a minute, then 429.
    let statuses: Vec<u16> = (0..101).map(|_| one(envoy, "fresh").0).collect();
    assert_eq!(statuses.iter().filter(|&&st| st == 200).count(), 100);
    assert_eq!(statuses.last(), Some(&429));
}

#[test]
fn failure_mode_allow_admits_while_rls_or_redis_is_down_or_slow_and_recovers() {
    failure_modes(false);
}

#[test]
fn failure_mode_deny_answers_500_while_rls_or_redis_is_down_or_slow_and_recovers() {
    failure_modes(true);
}
