//! token-fetch in a real Envoy (several workers), on envoy-configs/token-fetch.yaml, against
//! the loopback token server (e2e/src/token_server.rs).

use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::http::{Request, Response};
use e2e::token_server::{token_name, Mode, TokenServer};
use e2e::upstream::Upstream;
use e2e::{LISTENER_PORT, TOKEN_SERVER_PORT, UPSTREAM_PORT};
use std::time::{Duration, Instant};

const CONFIG: &str = "token-fetch.yaml";

struct Setup {
    envoy: Envoy,
    upstream: Upstream,
    tokens: TokenServer,
}

/// Token server first (it is a cluster endpoint Envoy calls at start), then Envoy, then the
/// upstream on the port Envoy's config was given.
fn start(lifetime_secs: u64, mode: Mode, concurrency: u32, edit: Option<Box<dyn Fn(String) -> String>>) -> Setup {
    let tokens = TokenServer::start(0, lifetime_secs).unwrap();
    tokens.set_mode(mode);
    let mut opts = EnvoyOptions { concurrency, edit, ..EnvoyOptions::default() };
    opts.preset_ports.insert(TOKEN_SERVER_PORT, tokens.port);
    let envoy = Envoy::start_with(CONFIG, opts).unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    Setup { envoy, upstream, tokens }
}

fn get(s: &Setup, path: &str) -> Response {
    Request::get(path).send(s.envoy.port(LISTENER_PORT)).unwrap()
}

/// The `authorization` the upstream saw on the request with this path. The upstream records a
/// request just after answering it, so give the record a moment to appear.
fn seen_auth(s: &Setup, path: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(r) = s.upstream.requests().iter().rev().find(|r| r.path == path) {
            return r.header_value("authorization");
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Poll until `f` holds (bounded): for state changes that take a refresh or a backoff.
fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn upstream_sees_the_current_token_and_the_token_server_one_call_per_refresh_per_proxy() {
    // 3-second tokens refreshed at 80% (2.4 s), 4 workers.
    let s = start(3, Mode::Ok, 4, None);
    let r = get(&s, "/first");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(seen_auth(&s, "/first"), Some(format!("Bearer {}", token_name(1))), "the first token");

    // Keep traffic flowing over ~4 refresh periods; every request carries a token the server
    // issued, and later requests carry later tokens.
    let calls_before = s.tokens.calls();
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(10) {
        i += 1;
        let path = format!("/r{i}");
        let r = get(&s, &path);
        assert_eq!(r.status, 200, "{r}");
        let auth = seen_auth(&s, &path).expect("every request carries the token");
        let n: u64 = auth.strip_prefix("Bearer tok-").and_then(|n| n.parse().ok()).expect(&auth);
        assert!(n >= 1 && n <= s.tokens.issued(), "{auth} was issued by the server");
        seen.push(n);
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed();
    let calls = s.tokens.calls() - calls_before;
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "tokens only move forward: {seen:?}");
    assert!(seen.last() > seen.first(), "refreshed while traffic flowed: {seen:?}");
    // One fetch per 2.4-second refresh per proxy: ~4 in 10 s. Per worker it would be 4x that.
    let periods = elapsed.as_secs_f64() / 2.4;
    eprintln!("{calls} token calls in {elapsed:?} ({periods:.1} refresh periods, 4 workers)");
    assert!(calls as f64 >= periods / 2.0, "refreshes happen: {calls} calls in {periods:.1} periods");
    assert!(
        calls as f64 <= periods + 2.0,
        "one fetch per proxy, not per worker: {calls} calls in {periods:.1} periods"
    );

    // What the token server received: client credentials by Basic auth, the form body.
    let req = s.tokens.requests().last().cloned().unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/oauth/token");
    assert_eq!(
        req.header_value("authorization").as_deref(),
        Some("Basic ZGVtby1jbGllbnQ6ZGVtby1zZWNyZXQtbmV2ZXItbG9nZ2Vk")
    );
    assert_eq!(
        String::from_utf8_lossy(&req.body),
        "grant_type=client_credentials&scope=orders.read&audience=demo-upstream"
    );
    assert!(s.envoy.wait_stat("wasmcustom.token_fetch.fetch_success", 3) >= 3);
    assert!(s.envoy.wait_stat("wasmcustom.token_fetch.requests_injected", i) >= i);
    assert!(s.envoy.stat("wasmcustom.token_fetch.token_remaining_seconds") <= 3);

    // Secrets never reach the log; the fingerprint does.
    let log = s.envoy.log();
    assert!(log.contains("token-fetch: token fetched (fingerprint"), "{log}");
    assert!(!log.contains("demo-secret-never-logged"), "client secret in the log");
    // Which configuration: non-secret fields and a fingerprint keyed with the proxy's seed;
    // never an unkeyed hash of the secret (it let a log reader test guessed secrets offline).
    assert!(log.contains(r#"client_id "demo-client", configuration fingerprint "#), "{log}");
    assert!(!log.contains(&shared::hash::fingerprint(b"demo-secret-never-logged")), "unkeyed secret fingerprint");
    assert!(!log.contains("Bearer tok-") && !log.contains("\"tok-"), "a token in the log");
}

#[test]
fn requests_before_the_first_token_wait_and_then_succeed() {
    let s = start(
        60,
        Mode::Down,
        2,
        Some(Box::new(|c| c.replace(r#""pending_request_timeout": "3s""#, r#""pending_request_timeout": "20s""#))),
    );
    let port = s.envoy.port(LISTENER_PORT);
    let waiting = std::thread::spawn(move || Request::get("/early").send(port));
    // The request is parked in the filter (the token server is down).
    eventually("the request is paused", Duration::from_secs(10), || {
        s.envoy.stat("wasmcustom.token_fetch.requests_paused") >= 1
    });
    // ... and the filter has tried the token server (and failed) at least once.
    eventually("a first fetch attempt", Duration::from_secs(10), || s.tokens.calls() >= 1);
    eventually("the first failure counted", Duration::from_secs(10), || {
        s.envoy.stat("wasmcustom.token_fetch.fetch_failure") >= 1
    });
    assert!(s.upstream.requests().is_empty(), "nothing reached the upstream without a token");
    s.tokens.set_mode(Mode::Ok);
    let r = waiting.join().unwrap().unwrap();
    assert_eq!(r.status, 200, "{r}");
    let auth = seen_auth(&s, "/early").expect("resumed with the token");
    assert!(auth.starts_with("Bearer tok-"), "{auth}");
    assert!(s.envoy.stat("wasmcustom.token_fetch.fetch_success") >= 1);
}

#[test]
fn no_valid_token_means_503_then_recovery_without_restarting_envoy() {
    let s = start(
        2,
        Mode::Ok,
        2,
        Some(Box::new(|c| c.replace(r#""pending_request_timeout": "3s""#, r#""pending_request_timeout": "0.5s""#))),
    );
    let pid = s.envoy.pid();
    assert_eq!(get(&s, "/before").status, 200);
    // The server goes away in the ways real ones do: errors, garbage, then gone.
    for mode in [Mode::Status(500), Mode::Garbage, Mode::Down] {
        let failures = s.envoy.stat("wasmcustom.token_fetch.fetch_failure");
        s.tokens.set_mode(mode.clone());
        eventually(&format!("{mode:?} counts as a fetch failure"), Duration::from_secs(15), || {
            s.envoy.stat("wasmcustom.token_fetch.fetch_failure") > failures
        });
    }
    // Once the 2-second token has expired, requests are refused, never sent with a stale token.
    eventually("503 once the token expired", Duration::from_secs(10), || get(&s, "/probe").status == 503);
    let r = get(&s, "/during");
    assert_eq!(r.status, 503, "{r}");
    assert!(r.body_text().contains("token-fetch: no valid credential"), "{r}");
    assert!(seen_auth(&s, "/during").is_none() && !s.upstream.requests().iter().any(|q| q.path == "/during"));
    assert!(s.envoy.stat("wasmcustom.token_fetch.requests_rejected_no_token") >= 1);
    assert_eq!(s.envoy.stat("wasmcustom.token_fetch.token_remaining_seconds"), 0);

    // The server comes back: the same Envoy recovers on its own.
    let issued = s.tokens.issued();
    s.tokens.set_mode(Mode::Ok);
    eventually("recovered", Duration::from_secs(15), || get(&s, "/after").status == 200);
    let auth = seen_auth(&s, "/after").unwrap();
    let n: u64 = auth.strip_prefix("Bearer tok-").and_then(|n| n.parse().ok()).unwrap();
    assert!(n > issued, "a fresh token, not the expired one: {auth}");
    assert_eq!(s.envoy.pid(), pid);
}

#[test]
fn hanging_token_server_times_out_and_pass_through_sends_without_the_header() {
    let s = start(
        60,
        Mode::Hang,
        2,
        Some(Box::new(|c| {
            c.replace(r#""allow_request_without_credential": false"#, r#""allow_request_without_credential": true"#)
                .replace(r#""pending_request_timeout": "3s""#, r#""pending_request_timeout": "0.5s""#)
        })),
    );
    let r = get(&s, "/open");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(seen_auth(&s, "/open"), None, "passed on without a header");
    assert!(s.envoy.wait_stat("wasmcustom.token_fetch.requests_allowed_no_token", 1) >= 1);
    // The 2-second call timeout turns the hang into a failure.
    eventually("hang counted as failure", Duration::from_secs(15), || {
        s.envoy.stat("wasmcustom.token_fetch.fetch_failure") >= 1
    });
    s.tokens.set_mode(Mode::Ok);
    eventually("token after the hang", Duration::from_secs(15), || {
        get(&s, "/later").status == 200 && seen_auth(&s, "/later").is_some()
    });
}

#[test]
fn bad_configs_are_refused_naming_the_field() {
    for (from, to, field) in [
        (r#""refresh_fraction": 0.8"#, r#""refresh_fraction": 1.5"#, "refresh_fraction"),
        (r#""cluster": "token-server""#, r#""cluster": """#, "oauth2.token_endpoint.cluster"),
        (r#""auth_type": "BASIC_AUTH""#, r#""auth_type": "DIGEST""#, "oauth2.client_credentials.auth_type"),
    ] {
        let (from, to) = (from.to_string(), to.to_string());
        let opts = EnvoyOptions { edit: Some(Box::new(move |c| c.replace(&from, &to))), ..EnvoyOptions::default() };
        let mut envoy = Envoy::spawn(CONFIG, &opts).unwrap();
        let status = envoy.wait_exit(Duration::from_secs(30)).expect("Envoy refuses to start");
        assert!(!status.success());
        let log = envoy.log();
        assert!(
            log.contains(&format!("token-fetch: invalid configuration, refusing to start: field `{field}`")),
            "{log}"
        );
        assert!(!log.contains("demo-secret-never-logged"), "the secret is not echoed");
    }
}
