//! token-fetch in a real Envoy (several workers), on envoy-configs/token-fetch.yaml, against
//! the loopback token server (e2e/src/token_server.rs).
//!
//! What users need from the tokens, checked on every request that reached the upstream: it
//! carried a token the token server issued, not expired when the request was sent
//! ([`assert_tokens_issued_and_unexpired`]). Not which token each request carried: every
//! worker picks up a refreshed token on its own tick, so two workers may inject the previous
//! and the new token in turn for a moment, both valid.

use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::http::{Request, Response};
use e2e::token_server::{Issued, Mode, TokenServer};
use e2e::upstream::Upstream;
use e2e::{LISTENER_PORT, TOKEN_SERVER_PORT, UPSTREAM_PORT};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const CONFIG: &str = "token-fetch.yaml";

struct Setup {
    envoy: Envoy,
    upstream: Upstream,
    tokens: TokenServer,
    /// Every request the test sent, by path (paths are unique).
    sent: RefCell<BTreeMap<String, Sent>>,
}

/// When a request was sent and when its answer came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sent {
    at: Instant,
    answered: Instant,
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
    Setup { envoy, upstream, tokens, sent: RefCell::default() }
}

/// Send a GET with a path not used before, and record when.
fn get(s: &Setup, path: &str) -> Response {
    let at = Instant::now();
    let r = Request::get(path).send(s.envoy.port(LISTENER_PORT)).unwrap();
    record(s, path, at);
    r
}

fn record(s: &Setup, path: &str, at: Instant) {
    let previous = s.sent.borrow_mut().insert(path.to_string(), Sent { at, answered: Instant::now() });
    assert!(previous.is_none(), "every request has its own path: {path} twice");
}

/// The `authorization` the upstream saw on the request with this path (the upstream records a
/// request before answering it, so once the answer is here the record is too).
fn seen_auth(s: &Setup, path: &str) -> Option<String> {
    s.upstream.requests().iter().rev().find(|r| r.path == path).and_then(|r| r.header_value("authorization"))
}

/// `tok-N` out of `Bearer tok-N`.
fn token_of(auth: &str) -> &str {
    auth.strip_prefix("Bearer ").unwrap_or_else(|| panic!("not a Bearer header: {auth}"))
}

/// Poll until `f` holds (bounded): for state changes that take a refresh, a backoff or a tick.
/// Deadlines are generous (a loaded 2-core machine) but finite, so the test can still fail.
fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every request that reached the upstream carried a token the token server issued, and that
/// token had not expired when the request was sent ([`check_tokens`]). `without_header`:
/// requests the filter may pass on without one (`allow_request_without_credential`).
fn assert_tokens_issued_and_unexpired(s: &Setup, without_header: bool) {
    let sent = s.sent.borrow();
    let uses: Vec<(String, Option<String>, Sent)> = s
        .upstream
        .requests()
        .into_iter()
        .map(|r| {
            let when =
                *sent.get(&r.path).unwrap_or_else(|| panic!("{} reached the upstream, but was not sent", r.path));
            let token = r.header_value("authorization").map(|auth| token_of(&auth).to_string());
            (r.path, token, when)
        })
        .collect();
    match check_tokens(&s.tokens.issued_tokens(), &uses, without_header) {
        Ok(margin) => {
            eprintln!("{} requests: every token issued and unexpired (smallest margin {margin:?})", uses.len())
        }
        Err(e) => panic!("{e}"),
    }
}

/// `(path, token, when)` per request that reached the upstream, against the tokens issued. A
/// token's expiry is the server's (issue time + `expires_in`) plus an allowance: the filter
/// counts the lifetime from when the answer reached it, later than the server issued it by the
/// time the answer took to arrive and be handled, which on a loaded machine is not negligible.
/// The first time a request came back with the token bounds when the filter had it, so the
/// allowance is that time minus the issue time (a few milliseconds on an idle machine; a stale
/// token, used after its expiry, exceeds it by far). Returns the smallest margin left.
fn check_tokens(
    issued: &[Issued],
    uses: &[(String, Option<String>, Sent)],
    without_header: bool,
) -> Result<Duration, String> {
    let mut first_back: BTreeMap<&str, Instant> = BTreeMap::new();
    for (_, token, when) in uses {
        if let Some(token) = token {
            let t = first_back.entry(token.as_str()).or_insert(when.answered);
            *t = (*t).min(when.answered);
        }
    }
    let mut margin = Duration::MAX;
    for (path, token, when) in uses {
        let Some(token) = token else {
            if without_header {
                continue;
            }
            return Err(format!("{path} reached the upstream without a token"));
        };
        let t = issued
            .iter()
            .find(|t| t.name == *token)
            .ok_or_else(|| format!("{path}: {token} was never issued by the token server"))?;
        if t.at >= when.answered {
            return Err(format!("{path}: {token} was used before it was issued"));
        }
        let allowance = first_back[token.as_str()].saturating_duration_since(t.at);
        let expiry = t.expires_at() + allowance;
        if when.at >= expiry {
            return Err(format!(
                "{path}: {token} used {:?} after it expired ({:?} lifetime, issued {:?} before the request was sent, allowance {allowance:?})",
                when.at - expiry,
                t.lifetime,
                when.at - t.at
            ));
        }
        margin = margin.min(expiry - when.at);
    }
    Ok(margin)
}

/// The control for [`check_tokens`]: it refuses a token used past its expiry, one the server
/// never issued, and a missing header, and lets a previous token still within its lifetime pass.
#[test]
fn the_token_check_refuses_stale_unknown_and_missing_tokens() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let tok = |n: u64, at: Duration| Issued { name: format!("tok-{n}"), at: t0 + at, lifetime: ms(3000) };
    let issued = [tok(1, ms(0)), tok(2, ms(2400))];
    let sent = |at: u64| Sent { at: t0 + ms(at), answered: t0 + ms(at + 5) };
    let used = |path: &str, n: Option<u64>, at: u64| (path.to_string(), n.map(|n| format!("tok-{n}")), sent(at));
    // tok-1 first back at 5 ms: allowance 5 ms, valid until 3005 ms.
    let good =
        vec![used("/a", Some(1), 0), used("/b", Some(2), 2500), used("/c", Some(1), 2600), used("/d", Some(2), 2700)];
    assert_eq!(check_tokens(&issued, &good, false), Ok(ms(405)), "tok-1 after tok-2, both valid: fine");
    let stale = [good.clone(), vec![used("/e", Some(1), 3100)]].concat();
    assert!(check_tokens(&issued, &stale, false).unwrap_err().contains("/e: tok-1 used"), "stale");
    let unknown = [good.clone(), vec![used("/f", Some(7), 2800)]].concat();
    assert!(check_tokens(&issued, &unknown, false).unwrap_err().contains("never issued"), "unknown");
    let missing = [good.clone(), vec![used("/g", None, 2800)]].concat();
    assert!(check_tokens(&issued, &missing, false).unwrap_err().contains("without a token"), "missing");
    assert!(check_tokens(&issued, &missing, true).is_ok(), "allowed without one");
}

#[test]
fn upstream_sees_only_issued_unexpired_tokens_and_the_token_server_one_call_per_refresh_per_proxy() {
    one_call_per_refresh_per_proxy(4);
}

/// The same at 16 workers (oversubscribed on a small machine: correctness only, no timing).
#[test]
fn one_call_per_refresh_per_proxy_with_16_workers() {
    one_call_per_refresh_per_proxy(16);
}

fn one_call_per_refresh_per_proxy(workers: u32) {
    // 3-second tokens refreshed at 80% (2.4 s).
    let s = start(3, Mode::Ok, workers, None);
    let r = get(&s, "/first");
    assert_eq!(r.status, 200, "{r}");
    assert!(seen_auth(&s, "/first").is_some_and(|a| a.starts_with("Bearer tok-")), "the first request has a token");

    // Keep traffic flowing until the upstream has seen three refreshed tokens (four in all):
    // about 7 s when idle; the deadline only bounds a refresh that never comes.
    let mut distinct = std::collections::BTreeSet::new();
    let mut i = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    while distinct.len() < 4 {
        assert!(Instant::now() < deadline, "tokens refreshed while traffic flowed: only {distinct:?} seen");
        i += 1;
        let path = format!("/r{i}");
        let r = get(&s, &path);
        assert_eq!(r.status, 200, "{r}");
        let auth = seen_auth(&s, &path).expect("every request carries the token");
        distinct.insert(token_of(&auth).to_string());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_tokens_issued_and_unexpired(&s, false);

    // One fetch per refresh per proxy: a refresh is due 2.4 s after the previous token arrived
    // (a retry after a timed-out call 2 s plus a backoff after it), so no two tokens are issued
    // within 2 s of each other, however slow the machine. A fetch per worker would put one call
    // per worker within one 250 ms tick.
    let issued = s.tokens.issued_tokens();
    assert_eq!(issued.len(), s.tokens.calls(), "every call was answered with a token");
    let gaps: Vec<Duration> = issued.windows(2).map(|w| w[1].at - w[0].at).collect();
    let spread = s.envoy.connections_per_worker(LISTENER_PORT);
    assert_eq!(spread.len(), workers as usize, "{spread:?}");
    // Which worker takes a connection is the kernel's choice: most, not all, is what luck allows.
    let served = spread.iter().filter(|n| **n > 0).count();
    assert!(served > workers as usize / 2, "connections reached only {served} of {workers} workers: {spread:?}");
    eprintln!(
        "--concurrency {workers}: {} token calls over {i} requests; gaps between them: {gaps:?}; connections per worker {spread:?}",
        issued.len()
    );
    assert!(gaps.iter().all(|g| *g >= Duration::from_secs(2)), "one fetch per proxy, not per worker: {gaps:?}");

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
    assert!(s.envoy.wait_stat("wasmcustom.token_fetch.fetch_success", 4) >= 4);
    assert!(s.envoy.wait_stat("wasmcustom.token_fetch.requests_injected", i + 1) > i);
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
    // The wait is bounded at 20 s: ample for the steps below on a loaded machine (the client
    // gives up at 30 s).
    let s = start(
        60,
        Mode::Down,
        2,
        Some(Box::new(|c| c.replace(r#""pending_request_timeout": "3s""#, r#""pending_request_timeout": "20s""#))),
    );
    let port = s.envoy.port(LISTENER_PORT);
    let sent_at = Instant::now();
    let waiting = std::thread::spawn(move || Request::get("/early").send(port));
    // The request is parked in the filter (the token server is down).
    eventually("the request is paused", Duration::from_secs(15), || {
        s.envoy.stat("wasmcustom.token_fetch.requests_paused") >= 1
    });
    // ... and the filter has tried the token server (and failed) at least once.
    eventually("a first fetch attempt", Duration::from_secs(15), || s.tokens.calls() >= 1);
    eventually("the first failure counted", Duration::from_secs(15), || {
        s.envoy.stat("wasmcustom.token_fetch.fetch_failure") >= 1
    });
    assert!(s.upstream.requests().is_empty(), "nothing reached the upstream without a token");
    s.tokens.set_mode(Mode::Ok);
    let r = waiting.join().unwrap().unwrap();
    record(&s, "/early", sent_at);
    assert_eq!(r.status, 200, "{r}");
    let auth = seen_auth(&s, "/early").expect("resumed with the token");
    assert!(auth.starts_with("Bearer tok-"), "{auth}");
    assert_tokens_issued_and_unexpired(&s, false);
    assert!(s.envoy.wait_stat("wasmcustom.token_fetch.fetch_success", 1) >= 1);
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
    // The first token is there (a request waits 0.5 s only: not what this test is about).
    assert!(s.envoy.wait_stat("wasmcustom.token_fetch.fetch_success", 1) >= 1, "the first token");
    assert_eq!(get(&s, "/before").status, 200);
    // The server goes away in the ways real ones do: errors, garbage, then gone. Requests keep
    // coming meanwhile, through the token's expiry (checked below: none sent on with it after).
    let mut probe = 0;
    for mode in [Mode::Status(500), Mode::Garbage, Mode::Down] {
        let failures = s.envoy.stat("wasmcustom.token_fetch.fetch_failure");
        s.tokens.set_mode(mode.clone());
        eventually(&format!("{mode:?} counts as a fetch failure"), Duration::from_secs(30), || {
            probe += 1;
            let r = get(&s, &format!("/probe{probe}"));
            assert!(r.status == 200 || r.status == 503, "{r}");
            s.envoy.stat("wasmcustom.token_fetch.fetch_failure") > failures
        });
    }
    // Once the 2-second token has expired, requests are refused, never sent with a stale token.
    eventually("503 once the token expired", Duration::from_secs(30), || {
        probe += 1;
        get(&s, &format!("/probe{probe}")).status == 503
    });
    let r = get(&s, "/during");
    assert_eq!(r.status, 503, "{r}");
    assert!(r.body_text().contains("token-fetch: no valid credential"), "{r}");
    assert!(!s.upstream.requests().iter().any(|q| q.path == "/during"), "refused, never sent on");
    assert!(s.envoy.wait_stat("wasmcustom.token_fetch.requests_rejected_no_token", 1) >= 1);
    // Each worker sets the gauge on its tick.
    eventually("the gauge says no valid token", Duration::from_secs(30), || {
        s.envoy.stat("wasmcustom.token_fetch.token_remaining_seconds") == 0
    });
    // Every request that did reach the upstream, through the token's expiry, had a valid one.
    assert_tokens_issued_and_unexpired(&s, false);

    // The server comes back: the same Envoy recovers on its own.
    let issued = s.tokens.issued();
    s.tokens.set_mode(Mode::Ok);
    let mut after = 0;
    eventually("recovered", Duration::from_secs(30), || {
        after += 1;
        get(&s, &format!("/after{after}")).status == 200
    });
    let auth = seen_auth(&s, &format!("/after{after}")).unwrap();
    let n: u64 = token_of(&auth).strip_prefix("tok-").and_then(|n| n.parse().ok()).unwrap();
    assert!(n > issued, "a fresh token, not the expired one: {auth}");
    assert_tokens_issued_and_unexpired(&s, false);
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
    eventually("hang counted as failure", Duration::from_secs(30), || {
        s.envoy.stat("wasmcustom.token_fetch.fetch_failure") >= 1
    });
    s.tokens.set_mode(Mode::Ok);
    let mut later = 0;
    eventually("token after the hang", Duration::from_secs(30), || {
        later += 1;
        let path = format!("/later{later}");
        get(&s, &path).status == 200 && seen_auth(&s, &path).is_some()
    });
    assert_tokens_issued_and_unexpired(&s, true);
}

#[test]
fn a_token_server_issuing_ten_year_tokens_is_served_with_a_366_day_lifetime() {
    // Issue 18's review: `expires_in` past 366 days failed every fetch, so such a token
    // server left the proxy answering 503 to everything (Envoy's credential injector takes
    // the token). It is served now, its lifetime cut to 366 days.
    let s = start(315_360_000, Mode::Ok, 1, None);
    let r = get(&s, "/long");
    assert_eq!(r.status, 200, "{r}");
    assert!(seen_auth(&s, "/long").is_some_and(|a| a.starts_with("Bearer tok-")), "{r}");
    assert!(s.envoy.wait_stat("wasmcustom.token_fetch.fetch_success", 1) >= 1);
    assert_eq!(s.envoy.stat("wasmcustom.token_fetch.fetch_failure"), 0);
    let remaining = s.envoy.stat("wasmcustom.token_fetch.token_remaining_seconds");
    assert!((366 * 86_400 - 60..=366 * 86_400).contains(&remaining), "{remaining}");
}

/// Every `authorization` value the upstream saw on the request with this path.
fn seen_auth_all(s: &Setup, path: &str) -> Vec<String> {
    let requests = s.upstream.requests();
    let Some(r) = requests.iter().rev().find(|r| r.path == path) else { return Vec::new() };
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn a_client_authorization_is_replaced_whole_with_overwrite_and_kept_without() {
    // What a client's own `authorization` does (issue 18's review). The shipped config has
    // `overwrite: true`: the client's values, repeated and in another case, never reach the
    // upstream, which sees exactly one value, an issued token (not appended beside them).
    let s = start(60, Mode::Ok, 2, None);
    let port = s.envoy.port(LISTENER_PORT);
    for i in 0..6 {
        let path = format!("/mine{i}");
        let at = Instant::now();
        let r = Request::get(&path)
            .header("Authorization", "Bearer attacker")
            .header("authorization", "Basic bWU6bWU=")
            .send(port)
            .unwrap();
        record(&s, &path, at);
        assert_eq!(r.status, 200, "{r}");
        let seen = seen_auth_all(&s, &path);
        assert_eq!(seen.len(), 1, "one value upstream: {seen:?}");
        assert!(seen[0].starts_with("Bearer tok-"), "{seen:?}");
    }
    assert_tokens_issued_and_unexpired(&s, false);
    drop(s);

    // `overwrite: false` (Envoy's credential injector's default): the client's values go
    // upstream, and no token is added beside them.
    let s = start(60, Mode::Ok, 1, Some(Box::new(|c| c.replace(r#""overwrite": true"#, r#""overwrite": false"#))));
    let port = s.envoy.port(LISTENER_PORT);
    let r = Request::get("/kept")
        .header("Authorization", "Bearer attacker")
        .header("authorization", "Basic bWU6bWU=")
        .send(port)
        .unwrap();
    assert_eq!(r.status, 200, "{r}");
    // (Envoy joins the two values with a comma on the way upstream.)
    let seen = seen_auth_all(&s, "/kept").join(",");
    assert_eq!(seen, "Bearer attacker,Basic bWU6bWU=", "the client's values, no token");
    // The control: without its own header the same proxy injects.
    let r = get(&s, "/injected");
    assert_eq!(r.status, 200, "{r}");
    assert!(seen_auth(&s, "/injected").is_some_and(|a| a.starts_with("Bearer tok-")));
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
        let status = envoy.wait_exit(Duration::from_secs(60)).expect("Envoy refuses to start");
        assert!(!status.success());
        let log = envoy.log();
        assert!(
            log.contains(&format!("token-fetch: invalid configuration, refusing to start: field `{field}`")),
            "{log}"
        );
        assert!(!log.contains("demo-secret-never-logged"), "the secret is not echoed");
    }
}
