//! The filter on the emulated proxy (`shared::proxytest`): several workers, real routing of
//! wakes and callout answers, host calls counted.

use super::*;
use crate::token::testing::{b64url, hs, jwks, sign, SECRET};
use shared::mock::MockHost;
use shared::proxytest::{Phase, Proxy, Worker};
use shared::LogLevel;
use std::time::UNIX_EPOCH;

const NOW: u64 = 1_800_000_000;

fn local_config(extra_provider: &str, rules: &str) -> String {
    let jwks = jwks("h1").replace('"', "\\\"");
    format!(
        r#"{{"providers":{{"p":{{"issuer":"https://iss","audiences":["api"],"local_jwks":{{"inline_string":"{jwks}"}}{extra_provider}}}}},"rules":{rules}}}"#
    )
}

const RULES: &str = r#"[{"match":{"prefix":"/open"}},{"match":{"prefix":"/"},"requires":{"provider_name":"p"}}]"#;

type W = Worker<JwtAuthRoot>;

fn proxy() -> Proxy {
    let p = Proxy::new();
    p.set_now(UNIX_EPOCH + Duration::from_secs(NOW));
    p
}

/// A bare host, for configurations refused before any request.
fn host() -> MockHost {
    let h = MockHost::new();
    h.set_now(UNIX_EPOCH + Duration::from_secs(NOW));
    h
}

fn request(w: &mut W, path: &str, auth: Option<&str>) -> (u32, Action) {
    let bearer = auth.map(|t| format!("Bearer {t}"));
    let mut headers =
        vec![(":path", path), (":authority", "api.test"), (":method", "GET"), ("x-forwarded-proto", "https")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    w.request(&headers)
}

fn valid_payload() -> String {
    format!(r#"{{"iss":"https://iss","aud":"api","sub":"alice","exp":{},"team":{{"id":7}}}}"#, NOW + 600)
}

fn reply(w: &W, id: u32) -> (u32, String, String) {
    let r = w.local_reply(id).expect("a local reply");
    let www = r.header("www-authenticate").unwrap_or_default().to_string();
    (r.status, r.body_text(), www)
}

#[test]
fn valid_token_passes_with_headers_and_without_the_token() {
    let p = proxy();
    let cfg = local_config(
        r#","forward_payload_header":"x-payload","claim_to_headers":[{"header_name":"x-sub","claim_name":"sub"},{"header_name":"x-team","claim_name":"team.id"}]"#,
        RULES,
    );
    let mut w: W = p.worker(&cfg);
    let (id, action) = request(&mut w, "/api", Some(&hs(&valid_payload())));
    assert_eq!(action, Action::Continue);
    assert!(w.local_reply(id).is_none());
    let req = |n: &str| w.request_header_values(id, n);
    assert!(req("authorization").is_empty(), "the token is not forwarded by default");
    assert_eq!(req("x-sub"), vec!["alice"]);
    assert_eq!(req("x-team"), vec!["7"]);
    assert_eq!(req("x-payload"), vec![b64url(valid_payload().as_bytes())]);
    assert_eq!(p.metric("jwt_auth.allowed"), Some(1));
}

#[test]
fn forged_claim_headers_are_removed_even_without_a_token_check_passing() {
    let p = proxy();
    let mut w: W =
        p.worker(&local_config(r#","claim_to_headers":[{"header_name":"x-sub","claim_name":"sub"}]"#, RULES));
    let bearer = format!("Bearer {}", hs(&valid_payload()));
    let (id, action) = w.request(&[(":path", "/api"), ("x-sub", "admin"), ("authorization", &bearer)]);
    assert_eq!(action, Action::Continue);
    assert_eq!(w.request_header_values(id, "x-sub"), vec!["alice"]);
}

#[test]
fn answers_like_jwt_authn() {
    let p = proxy();
    let mut w: W = p.worker(&local_config("", RULES));
    let realm = r#"Bearer realm="https://api.test/api?q=1""#;
    let invalid = format!(r#"{realm}, error="invalid_token""#);
    let (id, a) = request(&mut w, "/api?q=1", None);
    assert_eq!(a, Action::Pause);
    assert_eq!(reply(&w, id), (401, "Jwt is missing".into(), realm.into()));
    let cases: Vec<(String, u32, &str)> = vec![
        (hs(&format!(r#"{{"iss":"https://iss","aud":"api","exp":{}}}"#, NOW - 61)), 401, "Jwt is expired"),
        (hs(&format!(r#"{{"iss":"https://iss","aud":"api","nbf":{}}}"#, NOW + 61)), 401, "Jwt not yet valid"),
        (hs(r#"{"iss":"https://other","aud":"api"}"#), 401, "Jwt issuer is not configured"),
        (hs(r#"{"iss":"https://iss","aud":"other"}"#), 403, "Audiences in Jwt are not allowed"),
        (
            sign(r#"{"alg":"HS256","kid":"h1"}"#, r#"{"iss":"https://iss","aud":"api"}"#, b"wrong"),
            401,
            "Jwt verification fails",
        ),
        (
            sign(r#"{"alg":"HS256","kid":"zz"}"#, r#"{"iss":"https://iss","aud":"api"}"#, SECRET),
            401,
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
        (
            sign(r#"{"alg":"none"}"#, r#"{"iss":"https://iss","aud":"api"}"#, SECRET),
            401,
            "Jwt header [alg] is not supported",
        ),
        (
            sign(r#"{"alg":"HS256","crit":["b64"]}"#, r#"{"iss":"https://iss","aud":"api"}"#, SECRET),
            401,
            "Jwt header [crit] lists an unsupported extension",
        ),
        ("a.b".into(), 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
        (
            format!("{}.", hs(r#"{"iss":"https://iss","aud":"api"}"#).rsplit_once('.').unwrap().0),
            401,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
        ("x".repeat(9000), 401, "Jwt is too large"),
    ];
    for (token, status, body) in cases {
        let (id, a) = request(&mut w, "/api?q=1", Some(&token));
        assert_eq!(a, Action::Pause, "{body}");
        assert_eq!(reply(&w, id), (status, body.to_string(), invalid.clone()), "{body}");
    }
    assert_eq!(p.metric("jwt_auth.denied"), Some(12));
    assert_eq!(p.metric("jwt_auth.denied_missing"), Some(1));
    assert_eq!(p.metric("jwt_auth.denied_expired"), Some(1));
    assert_eq!(p.metric("jwt_auth.denied_audience"), Some(1));
    assert_eq!(p.metric("jwt_auth.denied_bad_signature"), Some(1));
    assert_eq!(p.metric("jwt_auth.denied_no_matching_key"), Some(1));
    assert_eq!(p.metric("jwt_auth.denied_malformed"), Some(5));
    // No rule needs a JWT under /open.
    let (_, a) = request(&mut w, "/open/x", None);
    assert_eq!(a, Action::Continue);
}

#[test]
fn cache_hits_but_never_past_exp() {
    let p = proxy();
    let mut w: W = p.worker(&local_config(r#","clock_skew_seconds":1"#, RULES));
    let token = hs(&format!(r#"{{"iss":"https://iss","aud":"api","exp":{}}}"#, NOW + 5));
    for _ in 2..5 {
        assert_eq!(request(&mut w, "/api", Some(&token)).1, Action::Continue);
    }
    assert_eq!((p.metric("jwt_auth.jwt_cache_miss"), p.metric("jwt_auth.jwt_cache_hit")), (Some(1), Some(2)));
    p.advance(Duration::from_secs(7));
    let (id, a) = request(&mut w, "/api", Some(&token));
    assert_eq!(a, Action::Pause);
    assert_eq!(reply(&w, id).1, "Jwt is expired");
    // A token that fails is never cached.
    let bad = sign(r#"{"alg":"HS256"}"#, r#"{"iss":"https://iss","aud":"api"}"#, b"wrong");
    for _ in 6..8 {
        let (id, _) = request(&mut w, "/api", Some(&bad));
        assert_eq!(reply(&w, id).1, "Jwt verification fails");
    }
    assert_eq!(p.metric("jwt_auth.jwt_cache_hit"), Some(2));
}

/// The cache's digest: SipHash-2-4-128 under the worker's random key, or SHA-256 when the host
/// gives no random bytes (said at warn). Either way a hit needs the very same token: one with
/// a single signature byte changed is verified, and fails.
#[test]
fn cache_digests_keyed_or_sha256_and_serve_only_the_same_token() {
    for no_random in [false, true] {
        let p = proxy();
        p.fail_random(no_random);
        let mut w: W = p.worker(&local_config("", RULES));
        let warned = p.logs().iter().any(|(l, m)| *l == LogLevel::Warn && m.contains("digests with SHA-256"));
        assert_eq!(warned, no_random, "no_random={no_random}");
        let token = hs(&valid_payload());
        for _ in 0..3 {
            assert_eq!(request(&mut w, "/api", Some(&token)).1, Action::Continue);
        }
        assert_eq!((p.metric("jwt_auth.jwt_cache_miss"), p.metric("jwt_auth.jwt_cache_hit")), (Some(1), Some(2)));
        let mut forged = token.clone().into_bytes();
        if let Some(last) = forged.last_mut() {
            *last = if *last == b'A' { b'B' } else { b'A' };
        }
        let forged = String::from_utf8(forged).unwrap();
        let (id, a) = request(&mut w, "/api", Some(&forged));
        assert_eq!(a, Action::Pause, "no_random={no_random}");
        assert_eq!(reply(&w, id).1, "Jwt verification fails");
        assert_eq!((p.metric("jwt_auth.jwt_cache_miss"), p.metric("jwt_auth.jwt_cache_hit")), (Some(2), Some(2)));
    }
}

#[test]
fn requirement_trees() {
    let p = proxy();
    let rules = r#"[{"match":{"prefix":"/optional"},"requires":{"allow_missing":{}}},
        {"match":{"prefix":"/lenient"},"requires":{"allow_missing_or_failed":{}}},
        {"match":{"prefix":"/any"},"requires":{"requires_any":{"requirements":[{"provider_name":"p"},{"allow_missing":{}}]}}}]"#;
    let mut w: W = p.worker(&local_config("", rules));
    let bad = sign(r#"{"alg":"HS256"}"#, r#"{"iss":"https://iss","aud":"api"}"#, b"wrong");
    assert_eq!(request(&mut w, "/optional", None).1, Action::Continue);
    let (id, a) = request(&mut w, "/optional", Some(&bad));
    assert_eq!(a, Action::Pause);
    assert_eq!(reply(&w, id).1, "Jwt verification fails");
    assert_eq!(request(&mut w, "/lenient", Some(&bad)).1, Action::Continue);
    assert_eq!(request(&mut w, "/any", None).1, Action::Continue);
    assert_eq!(request(&mut w, "/any", Some(&bad)).1, Action::Pause);
    assert_eq!(request(&mut w, "/any", Some(&hs(&valid_payload()))).1, Action::Continue);
}

fn remote_config() -> String {
    r#"{"providers":{"r":{"issuer":"https://iss","remote_jwks":{"http_uri":{"uri":"http://keys.test:8080/jwks.json?v=1","cluster":"jwks","timeout":"2s"},"cache_duration":"300s"}}},
        "rules":[{"match":{"prefix":"/"},"requires":{"provider_name":"r"}}]}"#
        .to_string()
}

/// Answer the worker's last JWKS fetch.
fn answer(w: &mut W, status: &str, body: &str) {
    let call = w.last_http_call();
    w.answer_http_call(call.token, &[(":status", status)], body.as_bytes());
}

#[test]
fn remote_jwks_fetched_at_start_and_waiting_requests_resumed() {
    let p = proxy();
    let mut w: W = p.worker(&remote_config());
    let token = hs(r#"{"iss":"https://iss"}"#);
    let (id, a) = request(&mut w, "/api", Some(&token));
    assert_eq!(a, Action::Pause);
    assert!(w.local_reply(id).is_none(), "waits for the keys");
    w.tick();
    let calls = w.http_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].cluster, "jwks");
    let hv = |n: &str| calls[0].header(n);
    assert_eq!(
        (hv(":method"), hv(":path"), hv(":authority")),
        (Some("GET"), Some("/jwks.json?v=1"), Some("keys.test:8080"))
    );
    answer(&mut w, "200", &jwks("h1"));
    assert_eq!(w.resumes(), vec![(id, Phase::Request)]);
    assert_eq!(p.metric("jwt_auth.jwks_fetch_success"), Some(1));
    // Later requests verify at once; ticks do not refetch before the refresh time.
    assert_eq!(request(&mut w, "/api", Some(&token)).1, Action::Continue);
    for _ in 0..20 {
        p.advance(Duration::from_secs(10));
        w.tick();
    }
    assert_eq!(w.http_calls().len(), 1, "refresh at 80% of 300 s");
    p.advance(Duration::from_secs(50));
    w.tick();
    assert_eq!(w.http_calls().len(), 2);
    // A failed refresh keeps the keys.
    answer(&mut w, "503", "");
    assert_eq!(p.metric("jwt_auth.jwks_fetch_failed"), Some(1));
    assert_eq!(request(&mut w, "/api", Some(&token)).1, Action::Continue);
}

#[test]
fn a_resumed_stream_reads_its_own_headers() {
    // Stream A (a forged signature) and stream B (a good token) both wait for the JWKS;
    // when it arrives, each is decided on its own request headers. (On the old one-map
    // mock, A was decided on B's headers and let through.)
    let p = proxy();
    let mut w: W = p.worker(&remote_config());
    let forged = sign(r#"{"alg":"HS256","kid":"h1"}"#, r#"{"iss":"https://iss"}"#, b"wrong");
    let (a, act) = request(&mut w, "/a", Some(&forged));
    assert_eq!(act, Action::Pause);
    let (b, act) = request(&mut w, "/b", Some(&hs(r#"{"iss":"https://iss"}"#)));
    assert_eq!(act, Action::Pause);
    w.tick();
    answer(&mut w, "200", &jwks("h1"));
    assert_eq!(w.resumes(), vec![(b, Phase::Request)], "only B goes on");
    let replies = w.local_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!((replies[0].0, replies[0].1.status), (a, 401));
    assert_eq!(reply(&w, a).1, "Jwt verification fails");
    assert!(w.request_header_values(b, "authorization").is_empty(), "B's token removed from B");
    assert_eq!(w.request_header_values(a, "authorization").len(), 1, "A's request untouched");
}

#[test]
fn no_jwks_within_the_timeout_is_jwt_authn_fetch_failure() {
    let p = proxy();
    let mut w: W = p.worker(&remote_config());
    w.tick();
    answer(&mut w, "500", "");
    let (id, a) = request(&mut w, "/api", Some(&hs(r#"{"iss":"https://iss"}"#)));
    assert_eq!(a, Action::Pause);
    p.advance(Duration::from_secs(3));
    w.tick();
    let replies = w.local_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!((replies[0].0, replies[0].1.status), (id, 401));
    assert_eq!(replies[0].1.body, b"Jwks remote fetch is failed");
    assert_eq!(p.metric("jwt_auth.denied_jwks_unavailable"), Some(1));
}

#[test]
fn a_failed_fetch_answers_the_requests_that_waited_for_it() {
    // Waiting for the first JWKS; the fetch fails: the request gets its answer at once,
    // not at its deadline.
    let p = proxy();
    let mut w: W = p.worker(&remote_config());
    let (id, a) = request(&mut w, "/api", Some(&hs(r#"{"iss":"https://iss"}"#)));
    assert_eq!(a, Action::Pause);
    w.tick();
    answer(&mut w, "500", "");
    assert_eq!(reply(&w, id).1, "Jwks remote fetch is failed");
    assert!(w.resumes().is_empty());
}

#[test]
fn unknown_kid_refetches_once_then_verifies() {
    let p = proxy();
    let mut w: W = p.worker(&remote_config());
    w.tick();
    answer(&mut w, "200", &jwks("old"));
    let retired = sign(r#"{"alg":"HS256","kid":"old"}"#, r#"{"iss":"https://iss"}"#, SECRET);
    assert_eq!(request(&mut w, "/api", Some(&retired)).1, Action::Continue, "verified and cached");
    p.advance(Duration::from_secs(11));
    let rotated = sign(r#"{"alg":"HS256","kid":"new"}"#, r#"{"iss":"https://iss"}"#, SECRET);
    let (id, a) = request(&mut w, "/api", Some(&rotated));
    assert_eq!(a, Action::Pause);
    w.tick();
    assert_eq!(w.http_calls().len(), 2, "refetched for the unknown kid");
    answer(&mut w, "200", &jwks("new"));
    assert_eq!(w.resumes(), vec![(id, Phase::Request)]);
    // The key "old" is gone: its cached token is not accepted any more.
    let (id, a) = request(&mut w, "/api", Some(&retired));
    assert_eq!(a, Action::Pause);
    assert_eq!(reply(&w, id).1, "Jwks doesn't have key to match kid or alg from Jwt");
    // Right after a fetch, another unknown kid is answered at once (rate limit).
    let other = sign(r#"{"alg":"HS256","kid":"other"}"#, r#"{"iss":"https://iss"}"#, SECRET);
    let (id, a) = request(&mut w, "/api", Some(&other));
    assert_eq!(a, Action::Pause);
    assert_eq!(reply(&w, id).1, "Jwks doesn't have key to match kid or alg from Jwt");
    w.tick();
    assert_eq!(w.http_calls().len(), 2);
}

/// This worker's key set for the remote provider (the `Rc` shows whether it was parsed again).
fn keys_in_use(w: &W) -> (Rc<jose::jwks::Jwks>, u64) {
    let worker = w.root().worker.as_ref().expect("configured");
    let remote = worker.providers[0].remote.as_ref().expect("remote provider");
    (remote.jwks().expect("keys"), remote.generation())
}

/// The published record of the remote provider's JWKS.
/// Two workers of one proxy holding the JWKS with kid `h1`: worker 1 fetched it, worker 2
/// took the record on its tick.
fn two_workers_with_keys() -> (Proxy, W, W) {
    let p = proxy();
    let mut w1: W = p.worker(&remote_config());
    let mut w2: W = p.worker(&remote_config());
    w1.tick();
    answer(&mut w1, "200", &jwks("h1"));
    w2.tick();
    (p, w1, w2)
}

/// A token whose `kid` no JWKS holds: it forces an unknown-kid refetch.
fn unknown_kid_token() -> String {
    sign(r#"{"alg":"HS256","kid":"unknown"}"#, r#"{"iss":"https://iss"}"#, SECRET)
}

fn published(w: &W) -> shared::fetch::Published {
    let fingerprint = &w.root().worker.as_ref().expect("configured").engine.config.fingerprint;
    let record = w.proxy().shared_data(&format!("{NAME}/{fingerprint}/r/value")).0.expect("record");
    shared::fetch::Published::decode(&record).expect("a record")
}

#[test]
fn a_refetch_bringing_the_same_keys_keeps_generation_keys_and_cache() {
    // J8: an unknown kid forces a refetch; the issuer answers the same JWKS. Before, a new
    // generation was published and every worker took it; now the generation stays, no worker
    // parses the keys again, verified tokens stay cached, and the request that asked for the
    // refetch is answered when it lands (not at its deadline).
    let (p, mut w1, mut w2) = two_workers_with_keys();
    let token = hs(r#"{"iss":"https://iss"}"#);
    for w in [&mut w1, &mut w2] {
        assert_eq!(request(w, "/api", Some(&token)).1, Action::Continue);
        assert_eq!(request(w, "/api", Some(&token)).1, Action::Continue);
    }
    assert_eq!(p.metric("jwt_auth.jwt_cache_hit"), Some(2), "one hit per worker");
    let before = [keys_in_use(&w1), keys_in_use(&w2)];
    let generation = published(&w1).generation;
    p.advance(Duration::from_secs(11));
    let unknown = unknown_kid_token();
    let (id, a) = request(&mut w1, "/api", Some(&unknown));
    assert_eq!(a, Action::Pause);
    assert!(w1.local_reply(id).is_none(), "waits for the refetch");
    w1.tick();
    assert_eq!(w1.http_calls().len(), 2, "refetched for the unknown kid");
    answer(&mut w1, "200", &jwks("h1"));
    assert_eq!(reply(&w1, id).1, "Jwks doesn't have key to match kid or alg from Jwt", "answered on landing");
    w2.tick();
    let record = published(&w1);
    assert_eq!(record.generation, generation, "same keys, same generation");
    assert_eq!(record.fetched_at_ms, (NOW + 11) * 1000, "the record says when it was fetched");
    for (w, (jwks, generation)) in [&w1, &w2].into_iter().zip(before) {
        let (now, now_generation) = keys_in_use(w);
        assert!(Rc::ptr_eq(&now, &jwks), "the key set was not parsed again");
        assert_eq!(now_generation, generation);
    }
    for w in [&mut w1, &mut w2] {
        assert_eq!(request(w, "/api", Some(&token)).1, Action::Continue);
    }
    assert_eq!(p.metric("jwt_auth.jwt_cache_hit"), Some(4), "the verified tokens stayed cached");
    // The control: a refetch bringing a different JWKS is a new generation, parsed, and the
    // cache starts again (a withdrawn key stops working at once).
    p.advance(Duration::from_secs(11));
    let (id, _) = request(&mut w1, "/api", Some(&unknown));
    w1.tick();
    answer(&mut w1, "200", &jwks("unknown"));
    assert_eq!(w1.resumes().last(), Some(&(id, Phase::Request)));
    w2.tick();
    assert_eq!(published(&w1).generation, generation + 1);
    assert_eq!(keys_in_use(&w2).1, generation + 1, "worker 2 took the new keys");
    assert_eq!(request(&mut w2, "/api", Some(&token)).1, Action::Pause, "kid h1 withdrawn");
}

#[test]
fn the_unknown_kid_refetch_budget_is_per_proxy_not_per_worker() {
    // Worker 1 spends the proxy's refetch budget; worker 2, within the interval, answers an
    // unknown kid at once without fetching. Per-worker budgets would let N workers refetch N
    // times per interval.
    let (p, mut w1, mut w2) = two_workers_with_keys();
    p.advance(Duration::from_secs(11));
    let unknown = unknown_kid_token();
    let (id1, _) = request(&mut w1, "/api", Some(&unknown));
    assert!(w1.local_reply(id1).is_none(), "worker 1 claims the refetch and waits");
    let (id2, _) = request(&mut w2, "/api", Some(&unknown));
    assert_eq!(reply(&w2, id2).1, "Jwks doesn't have key to match kid or alg from Jwt", "worker 2: at once");
    w1.tick();
    w2.tick();
    assert_eq!((w1.http_calls().len(), w2.http_calls().len()), (2, 0), "one refetch in the proxy");
    answer(&mut w1, "200", &jwks("h1"));
    p.advance(Duration::from_secs(5));
    let (id2, _) = request(&mut w2, "/api", Some(&unknown));
    assert_eq!(reply(&w2, id2).1, "Jwks doesn't have key to match kid or alg from Jwt");
    w2.tick();
    assert!(w2.http_calls().is_empty(), "still within worker 1's interval");
    // The control: once the interval is over, worker 2 may refetch (so the test can fail).
    p.advance(Duration::from_secs(6));
    let (id2, _) = request(&mut w2, "/api", Some(&unknown));
    assert!(w2.local_reply(id2).is_none(), "worker 2 claims the next refetch");
    w2.tick();
    assert_eq!(w2.http_calls().len(), 1);
}

#[test]
fn bad_configs_name_the_field() {
    let cases = [
        (r#"{"providers":{"p":{"issuer":"x"}}}"#, "providers.p"),
        (r#"{"providers":{"p":{"subjects":{}}}}"#, "providers.p"),
        (
            r#"{"rules":[{"match":{"prefix":"/"},"requires":{"provider_name":"nope"}}]}"#,
            "rules[0].requires.provider_name",
        ),
        (r#"{"requirement_map":{}}"#, ""),
        (r#"{"providers":{"p":{"local_jwks":{"filename":"/x"}}}}"#, "providers.p.local_jwks"),
        (r#"{"providers":{"p":{"local_jwks":{"inline_string":"{}"}}}}"#, "providers.p.local_jwks.inline_string"),
        (
            r#"{"providers":{"p":{"local_jwks":{"environment_variable":"JWT_AUTH_TEST_UNSET_VARIABLE"}}}}"#,
            "providers.p.local_jwks.environment_variable",
        ),
        (r#"{"providers":{"p":{"local_jwks":{}}}}"#, "providers.p.local_jwks"),
        (
            r#"{"providers":{"p":{"remote_jwks":{"http_uri":{"uri":"ftp://x","cluster":"c","timeout":"1s"}}}}}"#,
            "providers.p.remote_jwks.http_uri.uri",
        ),
        (r#"{"max_token_bytes":1}"#, "max_token_bytes"),
        (r#"{"rules":[{"match":{"prefix":"/","headers":[]}}]}"#, "rules[0].match"),
        (r#"{"rules":[{"match":{"route_name":""}}]}"#, "rules[0].match.route_name"),
        (r#"{"rules":[{"match":{"route_name":"a","prefix":"/a"}}]}"#, "rules[0].match"),
    ];
    for (json, field) in cases {
        let mut r = JwtAuthRoot::default();
        let e = r.configure(&host(), Some(json.as_bytes())).unwrap_err();
        assert!(e.field.starts_with(field), "{json}: {e}");
        if json.contains("_UNSET_VARIABLE") {
            assert!(e.message.contains("JWT_AUTH_TEST_UNSET_VARIABLE"), "names the variable: {e}");
        }
    }
}

/// An Ed25519 JWK of the identity point, and an EdDSA token "signed" for it with R = B,
/// s = 1: under the cofactorless equation it verifies whatever the payload (J4).
fn identity_ed25519_jwk() -> String {
    let x = shared::base64::encode_url(&[&[1u8][..], &[0u8; 31][..]].concat());
    format!(r#"{{"kty":"OKP","crv":"Ed25519","kid":"legacy","x":"{x}"}}"#)
}

fn forged_eddsa(payload: &str) -> String {
    let base_point = [0x58u8].iter().copied().chain([0x66u8; 31]).collect::<Vec<u8>>();
    let sig = [&base_point[..], &[1u8][..], &[0u8; 31][..]].concat();
    let b = |x: &[u8]| shared::base64::encode_url(x);
    format!("{}.{}.{}", b(br#"{"alg":"EdDSA"}"#), b(payload.as_bytes()), b(&sig))
}

fn inline_config(jwks: &str, extra_provider: &str) -> String {
    let jwks = serde_json::to_string(jwks).unwrap();
    format!(
        r#"{{"providers":{{"p":{{"issuer":"https://iss","local_jwks":{{"inline_string":{jwks}}}{extra_provider}}}}},"rules":{RULES}}}"#
    )
}

#[test]
fn weak_keys_are_skipped_logged_and_counted_and_the_rest_still_works() {
    // Local: the identity key next to the HMAC key.
    let p = proxy();
    let hmac = jwks("h1");
    let both = hmac.replacen("[", &format!("[{},", identity_ed25519_jwk()), 1);
    let mut w: W = p.worker(&inline_config(&both, ""));
    let warned: Vec<String> = p.logs().into_iter().filter(|(l, _)| *l == LogLevel::Warn).map(|(_, m)| m).collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains(r#"provider p: JWKS key 0 (kid "legacy") skipped: Ed25519 key of small order"#));
    assert_eq!(p.metric("jwt_auth.jwks_weak_keys"), Some(1));
    let (id, a) = request(&mut w, "/api", Some(&forged_eddsa(&valid_payload())));
    assert_eq!(a, Action::Pause);
    assert_eq!(reply(&w, id).1, "Jwks doesn't have key to match kid or alg from Jwt");
    assert_eq!(request(&mut w, "/api", Some(&hs(&valid_payload()))).1, Action::Continue);
    // Only a weak key: nothing usable, the configuration is refused naming the field.
    let mut only = JwtAuthRoot::default();
    let e = only
        .configure(&host(), Some(inline_config(&format!(r#"{{"keys":[{}]}}"#, identity_ed25519_jwk()), "").as_bytes()));
    assert_eq!(e.unwrap_err().field, "providers.p.local_jwks.inline_string");
    // Remote: logged by the worker that fetched, counted once the keys are in use.
    let p = proxy();
    let mut w: W = p.worker(&remote_config());
    w.tick();
    answer(&mut w, "200", &both);
    let warned = p.logs().into_iter().filter(|(l, m)| *l == LogLevel::Warn && m.contains("skipped")).count();
    assert_eq!(warned, 1);
    assert_eq!(p.metric("jwt_auth.jwks_weak_keys"), Some(1));
    let (id, a) = request(&mut w, "/api", Some(&forged_eddsa(r#"{"iss":"https://iss"}"#)));
    assert_eq!(a, Action::Pause);
    assert_eq!(reply(&w, id).1, "Jwks doesn't have key to match kid or alg from Jwt");
    // The next generation without the weak key brings the gauge back to 0.
    p.advance(Duration::from_secs(300));
    w.tick();
    answer(&mut w, "200", &hmac);
    assert_eq!(p.metric("jwt_auth.jwks_weak_keys"), Some(0));
}

#[test]
fn an_empty_local_jwks_loads_and_answers_no_valid_keys_as_jwt_authn() {
    let p = proxy();
    let mut w: W = p.worker(&inline_config("", ""));
    let (id, a) = request(&mut w, "/api", Some(&hs(&valid_payload())));
    assert_eq!(a, Action::Pause);
    assert_eq!(reply(&w, id).1, "Jwks doesn't have any valid public key");
    assert_eq!(p.metric("jwt_auth.denied"), Some(1));
    // Whitespace is not empty: an invalid JSON, refused at load (as jwt_authn 1.40).
    let mut blank = JwtAuthRoot::default();
    let e = blank.configure(&host(), Some(inline_config(" ", "").as_bytes())).unwrap_err();
    assert_eq!(e.field, "providers.p.local_jwks.inline_string");
    assert!(e.to_string().contains("Jwks is an invalid JSON"), "{e}");
}

#[test]
fn require_kid_refuses_tokens_without_kid() {
    let p = proxy();
    let mut w: W = p.worker(&inline_config(&jwks("h1"), r#","require_kid":true"#));
    let no_kid = sign(r#"{"alg":"HS256"}"#, &valid_payload(), SECRET);
    let (id, a) = request(&mut w, "/api", Some(&no_kid));
    assert_eq!(a, Action::Pause);
    assert_eq!(reply(&w, id).1, "Jwks doesn't have key to match kid or alg from Jwt");
    let empty_kid = sign(r#"{"alg":"HS256","kid":""}"#, &valid_payload(), SECRET);
    assert_eq!(request(&mut w, "/api", Some(&empty_kid)).1, Action::Pause);
    assert_eq!(request(&mut w, "/api", Some(&hs(&valid_payload()))).1, Action::Continue);
    // Off (the default): the same kid-less token is tried on every key, as jwt_authn.
    let mut w: W = p.worker(&inline_config(&jwks("h1"), ""));
    assert_eq!(request(&mut w, "/api", Some(&no_kid)).1, Action::Continue);
}

/// A request on route `route` (`xds.route_name`; `None`: no route), with the host calls it made.
fn request_on_route(w: &mut W, route: Option<&str>, path: &str, auth: Option<&str>) -> (u32, Action, u64) {
    let bearer = auth.map(|t| format!("Bearer {t}"));
    let mut headers = vec![(":path", path), (":authority", "api.test"), (":method", "GET")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    let id = w.new_stream();
    if let Some(r) = route {
        w.set_property(id, &["xds", "route_name"], r.as_bytes());
    }
    let proxy = w.proxy().clone();
    let (action, calls) = proxy.count_host_calls(|| w.request_headers(id, &headers, true));
    (id, action, calls.get(shared::proxytest::HostCall::GetProperty))
}

const ROUTE_RULES: &str =
    r#"[{"match":{"route_name":"admin"},"requires":{"provider_name":"p"}},{"match":{"prefix":"/"}}]"#;

#[test]
fn route_name_rules_follow_the_route_not_the_path_spelling() {
    let p = proxy();
    let mut w: W = p.worker(&local_config("", ROUTE_RULES));
    for path in ["/admin", "/ADMIN/x", "/%61dmin", "/anything"] {
        let (id, action, reads) = request_on_route(&mut w, Some("admin"), path, None);
        assert_eq!(action, Action::Pause, "{path} on the admin route");
        assert_eq!(reply(&w, id).0, 401, "{path}");
        assert_eq!(reads, 1, "the route name read once");
    }
    let token = hs(&valid_payload());
    assert_eq!(request_on_route(&mut w, Some("admin"), "/ADMIN", Some(&token)).1, Action::Continue);
    // Another route, an unnamed one (empty name) and no route at all: the rule does not hold.
    for route in [Some("admin2"), Some("Admin"), Some(""), None] {
        let (id, action, _) = request_on_route(&mut w, route, "/admin", None);
        assert_eq!(action, Action::Continue, "route {route:?}");
        assert!(w.local_reply(id).is_none());
    }
}

#[test]
fn a_path_only_config_reads_no_route_name() {
    let p = proxy();
    let mut w: W = p.worker(&local_config("", RULES));
    let (id, action, reads) = request_on_route(&mut w, Some("admin"), "/admin", None);
    assert_eq!((action, reply(&w, id).0), (Action::Pause, 401));
    assert_eq!(reads, 0);
    // A route rule after the matching path rule is not evaluated either.
    let rules = r#"[{"match":{"prefix":"/"},"requires":{"provider_name":"p"}},{"match":{"route_name":"admin"}}]"#;
    let mut w: W = p.worker(&local_config("", rules));
    assert_eq!(request_on_route(&mut w, Some("admin"), "/admin", None).2, 0);
}

#[test]
fn a_request_waiting_for_keys_keeps_its_route_rule_and_reads_the_name_once() {
    let p = proxy();
    let cfg = remote_config().replace(r#"{"match":{"prefix":"/"},"#, r#"{"match":{"route_name":"admin"},"#);
    let mut w: W = p.worker(&cfg);
    let token = hs(r#"{"iss":"https://iss"}"#);
    let (id, action, reads) = request_on_route(&mut w, Some("admin"), "/ADMIN", Some(&token));
    assert_eq!((action, reads), (Action::Pause, 1));
    w.tick();
    let (_, calls) = p.count_host_calls(|| answer(&mut w, "200", &jwks("h1")));
    assert_eq!(w.resumes(), vec![(id, Phase::Request)]);
    assert_eq!(calls.get(shared::proxytest::HostCall::GetProperty), 0, "not read again on resume");
    // Off the route: no rule, no wait.
    assert_eq!(request_on_route(&mut w, Some("public"), "/ADMIN", None).1, Action::Continue);
}

#[test]
fn a_stream_that_ends_while_waiting_for_keys_leaves_the_waiting_list() {
    use shared::waiting::Waiter as _;
    let p = proxy();
    let mut w: W = p.worker(&remote_config());
    let token = hs(r#"{"iss":"https://iss"}"#);
    let (gone, a) = request(&mut w, "/api", Some(&token));
    assert_eq!(a, Action::Pause);
    let (stays, _) = request(&mut w, "/api", Some(&token));
    let waiting = |w: &W, id: u32| w.root().worker.as_ref().unwrap().waiting.any(|x| x.context_id() == id);
    assert!(waiting(&w, gone) && waiting(&w, stays));
    w.complete(gone);
    assert!(!waiting(&w, gone), "an ended stream leaves the waiting list at once");
    assert!(waiting(&w, stays));
}
