//! The engine alone, with a fake key view: every verdict, every wait, and the bound on waits.

use super::*;
use crate::config::Config;
use crate::token::testing::{hs, jwks, sign, SECRET};

const NOW: u64 = 1_800_000_000;

/// A worker as the engine sees it: keys per provider (`None`: none yet), whether a refetch is
/// allowed, and a cache per provider.
struct FakeKeys {
    keys: Vec<Option<Rc<Jwks>>>,
    refetch: bool,
    caches: Vec<RefCell<TokenCache>>,
}

impl FakeKeys {
    fn new(engine: &Engine) -> FakeKeys {
        let n = engine.config.providers.len();
        FakeKeys {
            keys: vec![None; n],
            refetch: true,
            caches: (0..n).map(|i| RefCell::new(engine.new_cache(i))).collect(),
        }
    }

    fn with_keys(mut self, provider: usize, jwks_text: &str) -> FakeKeys {
        self.keys[provider] = Some(Rc::new(Jwks::parse(jwks_text.as_bytes()).unwrap()));
        self
    }
}

impl KeyView for FakeKeys {
    fn remote_keys(&self, provider: usize) -> Option<Rc<Jwks>> {
        self.keys.get(provider).cloned().flatten()
    }
    fn may_refetch(&self, _provider: usize) -> bool {
        self.refetch
    }
    fn cache(&self, provider: usize) -> Option<&RefCell<TokenCache>> {
        self.caches.get(provider)
    }
}

fn engine(json: &str) -> Engine {
    Engine::new(shared::config::load(Some(json.as_bytes()), Config::compile).unwrap())
}

fn remote(issuer: &str, extra: &str) -> String {
    format!(
        r#"{{"issuer":"{issuer}","remote_jwks":{{"http_uri":{{"uri":"http://keys/j","cluster":"c","timeout":"1s"}}}}{extra}}}"#
    )
}

fn local(issuer: &str, extra: &str) -> String {
    let keys = serde_json::to_string(&jwks("h1")).unwrap();
    format!(r#"{{"issuer":"{issuer}","local_jwks":{{"inline_string":{keys}}}{extra}}}"#)
}

fn headers(pairs: &[(&str, &str)]) -> RequestHeaders {
    RequestHeaders::new(pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect())
}

fn eval(e: &Engine, path: &str, h: &[(&str, &str)], keys: &dyn KeyView, settled: &Settled) -> Verdict {
    let mut pairs = vec![(":path", path)];
    pairs.extend_from_slice(h);
    let request = headers(&pairs);
    let requirement = e.requirement(path, &RouteName::known(None)).expect("a rule");
    e.evaluate(requirement, &request, keys, settled, NOW).0
}

/// What the filter does with a wait it cannot register: settle it and evaluate again. Returns
/// the final verdict and the waits asked for on the way.
fn decide_without_waiting(
    e: &Engine,
    path: &str,
    h: &[(&str, &str)],
    keys: &dyn KeyView,
) -> (Verdict, Vec<(usize, bool)>) {
    let mut settled = Settled::default();
    let mut waits = Vec::new();
    loop {
        match eval(e, path, h, keys, &settled) {
            Verdict::Wait { provider, refetch } => {
                assert!(waits.len() <= 2 * e.config.providers.len(), "waits without end: {waits:?}");
                waits.push((provider, refetch));
                if refetch {
                    settled.refetched(provider);
                } else {
                    settled.give_up(provider);
                }
            }
            v => return (v, waits),
        }
    }
}

#[test]
fn two_providers_without_keys_end_in_an_answer_not_a_ping_pong() {
    // J1: `requires_any` over two remote providers without keys (and the token of each). The
    // old view remembered one given-up provider, so giving up on `b` made `a` pending again.
    let e = engine(&format!(
        r#"{{"providers":{{"a":{},"b":{}}},
            "rules":[{{"match":{{"prefix":"/any"}},"requires":{{"requires_any":{{"requirements":[{{"provider_name":"a"}},{{"provider_name":"b"}}]}}}}}},
                     {{"match":{{"prefix":"/lenient"}},"requires":{{"allow_missing_or_failed":{{}}}}}}]}}"#,
        remote("https://a", r#","from_headers":[{"name":"x-a"}]"#),
        remote("https://b", r#","from_headers":[{"name":"x-b"}]"#),
    ));
    let keys = FakeKeys::new(&e);
    let a = hs(r#"{"iss":"https://a"}"#);
    let b = hs(r#"{"iss":"https://b"}"#);
    let h = [("x-a", a.as_str()), ("x-b", b.as_str())];
    let (v, waits) = decide_without_waiting(&e, "/any", &h, &keys);
    assert_eq!(v, Verdict::Deny(Status::JwksFetchFail));
    assert_eq!(waits, vec![(0, false), (1, false)]);
    // allow_missing_or_failed, tokens of both issuers: both waits, then allowed.
    let (v, waits) = decide_without_waiting(&e, "/lenient", &h, &keys);
    assert!(matches!(v, Verdict::Allow(_)), "{v:?}");
    assert_eq!(waits, vec![(1, false), (0, false)], "tokens are taken from the last found");
    // Giving up on one provider twice is noticed (the filter's guard against a bad loop).
    let mut settled = Settled::default();
    assert!(settled.give_up(0));
    assert!(!settled.give_up(0));
}

#[test]
fn an_unknown_kid_waits_for_one_refetch_then_is_decided() {
    let e = engine(&format!(
        r#"{{"providers":{{"r":{}}},"rules":[{{"match":{{"prefix":"/"}},"requires":{{"provider_name":"r"}}}}]}}"#,
        remote("https://iss", "")
    ));
    let rotated = sign(r#"{"alg":"HS256","kid":"new"}"#, r#"{"iss":"https://iss"}"#, SECRET);
    let auth = format!("Bearer {rotated}");
    let h = [("authorization", auth.as_str())];
    let mut keys = FakeKeys::new(&e).with_keys(0, &jwks("old"));
    let (v, waits) = decide_without_waiting(&e, "/x", &h, &keys);
    assert_eq!((v, waits), (Verdict::Deny(Status::JwksKidAlgMismatch), vec![(0, true)]));
    // Rate-limited: no wait at all.
    keys.refetch = false;
    let (v, waits) = decide_without_waiting(&e, "/x", &h, &keys);
    assert_eq!((v, waits), (Verdict::Deny(Status::JwksKidAlgMismatch), vec![]));
    // The refetch brought the key.
    let keys = FakeKeys::new(&e).with_keys(0, &jwks("new"));
    assert!(matches!(decide_without_waiting(&e, "/x", &h, &keys).0, Verdict::Allow(_)));
}

#[test]
fn waits_are_bounded_by_twice_the_providers_whatever_the_requirement() {
    // Every provider remote; keys present but without the token's kid for half of them. Each
    // requirement shape, each combination of tokens: at most 2 waits per provider.
    let providers: Vec<String> = (0..4)
        .map(|i| {
            format!(
                r#""p{i}":{}"#,
                remote(&format!("https://i{i}"), &format!(r#","from_headers":[{{"name":"x-{i}"}}]"#))
            )
        })
        .collect();
    let any = r#"{"requires_any":{"requirements":[{"provider_name":"p0"},{"provider_name":"p1"},{"provider_name":"p2"},{"provider_name":"p3"}]}}"#;
    let all = r#"{"requires_all":{"requirements":[{"provider_name":"p0"},{"requires_any":{"requirements":[{"provider_name":"p1"},{"allow_missing":{}}]}},{"provider_name":"p3"}]}}"#;
    let rules = format!(
        r#"[{{"match":{{"prefix":"/any"}},"requires":{any}}},{{"match":{{"prefix":"/all"}},"requires":{all}}},
            {{"match":{{"prefix":"/missing"}},"requires":{{"allow_missing":{{}}}}}},{{"match":{{"prefix":"/failed"}},"requires":{{"allow_missing_or_failed":{{}}}}}}]"#
    );
    let e = engine(&format!(r#"{{"providers":{{{}}},"rules":{rules}}}"#, providers.join(",")));
    let tokens: Vec<String> = (0..4)
        .map(|i| sign(&format!(r#"{{"alg":"HS256","kid":"k{i}"}}"#), &format!(r#"{{"iss":"https://i{i}"}}"#), SECRET))
        .collect();
    for key_mask in 0..16u32 {
        let mut keys = FakeKeys::new(&e);
        for i in 0..4 {
            if key_mask & (1 << i) != 0 {
                let kid = if i % 2 == 0 { format!("k{i}") } else { "other".to_string() };
                keys = keys.with_keys(i, &jwks(&kid));
            }
        }
        for token_mask in 0..16u32 {
            let h: Vec<(String, &str)> =
                (0..4).filter(|i| token_mask & (1 << i) != 0).map(|i| (format!("x-{i}"), tokens[i].as_str())).collect();
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            for path in ["/any", "/all", "/missing", "/failed"] {
                let (_, waits) = decide_without_waiting(&e, path, &h, &keys);
                let mut seen = waits.clone();
                seen.sort();
                seen.dedup();
                assert_eq!(seen.len(), waits.len(), "{path} {key_mask} {token_mask}: a wait asked twice {waits:?}");
            }
        }
    }
}

#[test]
fn headers_a_provider_writes_are_removed_from_every_request() {
    // J2: claim and payload headers of every provider, whatever the rule (jwt_authn 1.40).
    let e = engine(&format!(
        r#"{{"providers":{{"a":{},"b":{}}},"rules":[]}}"#,
        local(
            "https://a",
            r#","forward_payload_header":"x-a-payload","claim_to_headers":[{"header_name":"x-a-sub","claim_name":"sub"}]"#
        ),
        local(
            "https://b",
            r#","from_headers":[{"name":"x-b"}],"claim_to_headers":[{"header_name":"x-b-role","claim_name":"role"}]"#
        ),
    ));
    let mut request =
        headers(&[(":path", "/"), ("x-b-role", "admin"), ("x-a-sub", "root"), ("x-other", "1"), ("x-b-role", "2")]);
    let ops = e.sanitize(&mut request);
    assert_eq!(ops, vec![HeaderOp::Remove("x-a-sub".into()), HeaderOp::Remove("x-b-role".into())]);
    let left: Vec<(&[u8], &[u8])> = request.iter().collect();
    assert_eq!(left, vec![(&b":path"[..], &b"/"[..]), (&b"x-other"[..], &b"1"[..])], "{request:?}");
    // Nothing forged: nothing to do (no host call).
    assert!(e.sanitize(&mut headers(&[(":path", "/"), ("x-other", "1")])).is_empty());
}

#[test]
fn lifetime_failures_answer_verification_fails_as_jwt_authn() {
    let e = engine(&format!(
        r#"{{"providers":{{"p":{},"q":{}}},"rules":[{{"match":{{"prefix":"/p"}},"requires":{{"provider_name":"p"}}}},{{"match":{{"prefix":"/q"}},"requires":{{"provider_name":"q"}}}}]}}"#,
        local("https://iss", r#","require_expiration":true"#),
        local("https://iss", r#","max_lifetime":"60s""#),
    ));
    let keys = FakeKeys::new(&e);
    for (path, payload) in [
        ("/p", r#"{"iss":"https://iss"}"#.to_string()),
        ("/q", r#"{"iss":"https://iss"}"#.to_string()),
        ("/q", format!(r#"{{"iss":"https://iss","exp":{}}}"#, NOW + 61)),
    ] {
        let auth = format!("Bearer {}", hs(&payload));
        let v = eval(&e, path, &[("authorization", &auth)], &keys, &Settled::default());
        assert_eq!(v, Verdict::Deny(Status::JwtLifetimeNotAllowed), "{path} {payload}");
        assert_eq!(Status::JwtLifetimeNotAllowed.message(), "Jwt verification fails");
        assert_eq!(Status::JwtLifetimeNotAllowed.reason(), "lifetime");
    }
    let auth = format!("Bearer {}", hs(&format!(r#"{{"iss":"https://iss","exp":{}}}"#, NOW + 59)));
    assert!(matches!(eval(&e, "/q", &[("authorization", &auth)], &keys, &Settled::default()), Verdict::Allow(_)));
}

fn allowed_ops(v: Verdict) -> Vec<HeaderOp> {
    match v {
        Verdict::Allow(ops) => ops,
        other => panic!("not allowed: {other:?}"),
    }
}

#[test]
fn forward_false_strips_every_token_place_of_the_providers_evaluated() {
    // J5. `p` reads a header, `access_token` and a cookie, and does not forward; `f` forwards.
    let e = engine(&format!(
        r#"{{"providers":{{"f":{},"p":{}}},"rules":[
            {{"match":{{"prefix":"/p"}},"requires":{{"provider_name":"p"}}}},
            {{"match":{{"prefix":"/missing"}},"requires":{{"allow_missing":{{}}}}}},
            {{"match":{{"prefix":"/failed"}},"requires":{{"allow_missing_or_failed":{{}}}}}}]}}"#,
        local("https://f", r#","forward":true,"from_headers":[{"name":"x-f"}],"from_params":["shared"]"#),
        local(
            "https://iss",
            r#","from_headers":[{"name":"authorization","value_prefix":"Bearer "}],"from_params":["access_token","shared"],"from_cookies":["session"]"#
        ),
    ));
    let keys = FakeKeys::new(&e);
    let good = hs(r#"{"iss":"https://iss"}"#);
    let expired = hs(&format!(r#"{{"iss":"https://iss","exp":{}}}"#, NOW - 3600));
    let bearer = format!("Bearer {good}");
    let set_path = |p: &str| HeaderOp::Set(":path".into(), p.as_bytes().to_vec());
    // A query token: removed from the path, the other pairs untouched (bytes and order).
    let ops = allowed_ops(eval(&e, &format!("/p/x?b=2&access_token={good}&a=%2F&&c"), &[], &keys, &Settled::default()));
    assert_eq!(ops, vec![set_path("/p/x?b=2&a=%2F&c")]);
    let ops = allowed_ops(eval(
        &e,
        &format!("/p/x?access_token={good}&access_token={good}"),
        &[],
        &keys,
        &Settled::default(),
    ));
    assert_eq!(ops, vec![set_path("/p/x")]);
    // A cookie token: the other cookies stay.
    let cookie = format!("a=1; session={good}; b=2");
    let ops = allowed_ops(eval(&e, "/p/x", &[("cookie", &cookie), ("cookie", "c=3")], &keys, &Settled::default()));
    assert_eq!(
        ops,
        vec![
            HeaderOp::Remove("cookie".into()),
            HeaderOp::Add("cookie".into(), b"a=1; b=2".to_vec()),
            HeaderOp::Add("cookie".into(), b"c=3".to_vec())
        ]
    );
    // allow_missing: a good header token and a forged (expired) query token. jwt_authn lets it
    // through and the forged token reaches the upstream; here it is removed too.
    let path = format!("/missing?access_token={expired}");
    let ops = allowed_ops(eval(&e, &path, &[("authorization", &bearer)], &keys, &Settled::default()));
    assert!(ops.contains(&HeaderOp::Remove("authorization".into())), "{ops:?}");
    assert!(ops.contains(&set_path("/missing")), "{ops:?}");
    // allow_missing_or_failed: a failed token is not forwarded either...
    let ops = allowed_ops(eval(
        &e,
        "/failed",
        &[("authorization", &format!("Bearer {expired}"))],
        &keys,
        &Settled::default(),
    ));
    assert_eq!(ops, vec![HeaderOp::Remove("authorization".into())]);
    // ...unless a provider reading that place forwards tokens (`shared`: `f` and `p`).
    let ops = allowed_ops(eval(&e, &format!("/failed?shared={expired}"), &[], &keys, &Settled::default()));
    assert_eq!(ops, vec![]);
    // `f` forwards its own header token.
    let f = hs(r#"{"iss":"https://f"}"#);
    let ops = allowed_ops(eval(&e, "/failed", &[("x-f", &f)], &keys, &Settled::default()));
    assert_eq!(ops, vec![]);
}
