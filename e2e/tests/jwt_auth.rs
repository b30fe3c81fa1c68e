//! jwt-auth in a real Envoy, on envoy-configs/jwt-auth.yaml, with the loopback JWKS server
//! (e2e/src/jwks_server.rs) and the committed test keys (e2e/src/jwt.rs).
//!
//! `JWT_AUTH_UNDER_TEST=native` runs the same tests against Envoy's native jwt_authn, given the
//! same JSON (the plugin configuration is jwt_authn's JwtAuthentication): that is how these
//! tests were checked before the filter existed, and it shows which expectations are
//! jwt_authn's own. Tests of what only the filter has (its stats, its config refusals, key
//! rotation on an unknown kid, the token size cap) say so and are skipped there, by name.
//!
//! `differential_*` runs both in one Envoy (two listeners, the same providers and rules) on
//! one corpus and requires the same answer, except for the listed [`EXPECTED_DIFFERENCES`].

use e2e::envoy::{free_port, Envoy, EnvoyOptions};
use e2e::http::{Request, Response};
use e2e::jwks_server::{JwksServer, Mode};
use e2e::jwt::{
    self, b64url, claims, claims_for, raw_token, token, token_with, Alg, Key, AUDIENCE, ISSUER, LOCAL_ISSUER,
};
use e2e::upstream::{Recorded, Upstream};
use e2e::{JWKS_PORT, LISTENER_PORT, UPSTREAM_PORT};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONFIG: &str = "jwt-auth.yaml";
/// Our own top-level fields, not jwt_authn's: dropped when the JSON is given to jwt_authn.
const OWN_FIELDS: &[&str] = &["max_token_bytes", "unknown_kid_refetch_interval"];

fn native() -> bool {
    std::env::var("JWT_AUTH_UNDER_TEST").is_ok_and(|v| v == "native")
}

/// Skip a filter-only test when running against native jwt_authn (said aloud, never silent).
fn filter_only(what: &str) -> bool {
    if native() {
        eprintln!("JWT_AUTH_UNDER_TEST=native: skipping `{what}`: jwt-auth only, jwt_authn has no such thing");
    }
    native()
}

// ---- config surgery (YAML → JSON Envoy reads as well) ----

fn yaml_to_json(text: &str) -> Value {
    serde_norway::from_str(text).expect("config YAML")
}

fn http_filters(listener: &mut Value) -> &mut Vec<Value> {
    listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"].as_array_mut().expect("http_filters")
}

/// jwt-auth's plugin configuration in `config`, parsed.
fn plugin_json(config: &Value) -> Value {
    let listeners = config["static_resources"]["listeners"].as_array().expect("listeners");
    for l in listeners {
        for f in l["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"].as_array().into_iter().flatten() {
            if f["name"] == "jwt-auth" {
                let text = f["typed_config"]["config"]["configuration"]["value"].as_str().expect("configuration.value");
                return serde_json::from_str(text).expect("plugin JSON");
            }
        }
    }
    panic!("no jwt-auth filter in the config")
}

/// The native jwt_authn filter with the same JSON.
fn native_filter(plugin: &Value) -> Value {
    let mut typed = plugin.clone();
    for f in OWN_FIELDS {
        typed.as_object_mut().map(|o| o.remove(*f));
    }
    typed["@type"] = json!("type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication");
    json!({"name": "envoy.filters.http.jwt_authn", "typed_config": typed})
}

/// Every jwt-auth filter in `text` replaced with native jwt_authn given the same JSON.
fn to_native(text: &str) -> String {
    let mut config = yaml_to_json(text);
    let plugin = plugin_json(&config);
    for l in config["static_resources"]["listeners"].as_array_mut().expect("listeners") {
        for f in http_filters(l).iter_mut() {
            if f["name"] == "jwt-auth" {
                *f = native_filter(&plugin);
            }
        }
    }
    config.to_string()
}

/// Replace `from` with `to` in the config text, insisting it is there.
fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the config has no {from:?}");
    text.replace(from, to)
}

// ---- setup ----

struct Setup {
    envoy: Envoy,
    upstream: Upstream,
    jwks: JwksServer,
}

type Edit = Box<dyn Fn(String) -> String>;

fn options(jwks: &JwksServer, concurrency: u32, edit: Option<Edit>) -> EnvoyOptions {
    let native = native();
    let edit: Edit = Box::new(move |text| {
        let text = match &edit {
            Some(e) => e(text),
            None => text,
        };
        if native {
            to_native(&text)
        } else {
            text
        }
    });
    let mut opts = EnvoyOptions { concurrency, edit: Some(edit), ..EnvoyOptions::default() };
    opts.preset_ports.insert(JWKS_PORT, jwks.port);
    opts
}

/// JWKS server first (Envoy fetches at start), then Envoy, then the upstream.
fn start_with(mode: Mode, concurrency: u32, edit: Option<Edit>) -> Setup {
    let jwks = JwksServer::start(0, &jwt::jwks(&jwt::REMOTE_KEYS)).unwrap();
    jwks.set_mode(mode);
    let envoy = Envoy::start_with(CONFIG, options(&jwks, concurrency, edit)).unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    Setup { envoy, upstream, jwks }
}

fn start() -> Setup {
    start_with(Mode::Serve, 2, None)
}

impl Setup {
    fn port(&self) -> u16 {
        self.envoy.port(LISTENER_PORT)
    }

    fn send(&self, r: &Request) -> Response {
        r.send(self.port()).unwrap()
    }

    /// The request the upstream saw with this `x-case` header (recorded before it answered).
    fn seen(&self, case: &str) -> Option<Recorded> {
        self.upstream.requests().into_iter().find(|r| r.header_value("x-case").as_deref() == Some(case))
    }

    /// A jwt-auth stat (`wasmcustom.jwt_auth.<name>`), or jwt_authn's for the names it has.
    fn stat_name(&self, name: &str) -> String {
        if native() {
            format!("http.ingress.jwt_authn.{name}")
        } else {
            format!("wasmcustom.jwt_auth.{name}")
        }
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(&self.stat_name(name))
    }

    fn wait_stat(&self, name: &str, min: u64) -> u64 {
        self.envoy.wait_stat(&self.stat_name(name), min)
    }
}

fn bearer(path: &str, token: &str) -> Request {
    Request::get(path).header("authorization", &format!("Bearer {token}"))
}

fn realm(port: u16, path: &str) -> String {
    format!("Bearer realm=\"http://localhost:{port}{path}\"")
}

fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A 401 with jwt_authn's body and `WWW-Authenticate`.
fn assert_401(s: &Setup, r: &Response, path: &str, body: &str, what: &str) {
    assert_eq!(r.status, 401, "{what}: {r}");
    assert_eq!(r.body_text(), body, "{what}: {r}");
    let want = if body == "Jwt is missing" {
        realm(s.port(), path)
    } else {
        format!("{}, error=\"invalid_token\"", realm(s.port(), path))
    };
    assert_eq!(r.header("www-authenticate").as_deref(), Some(want.as_str()), "{what}: {r}");
}

// ---- the corpus ----

const MISSING: &str = "Jwt is missing";
const BAD_FORMAT: &str = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections";
const VERIFY_FAILS: &str = "Jwt verification fails";
const NO_KEY: &str = "Jwks doesn't have key to match kid or alg from Jwt";

/// `(name, token, expected body)`: tokens every provider must refuse with a 401, built with
/// real signatures so only the flaw named is wrong. Expected bodies are jwt_authn's.
fn bad_tokens() -> Vec<(&'static str, String, &'static str)> {
    let now = jwt::now();
    let good = claims("attacker");
    let rs = |h: Value, p: &Value| token_with(Alg::RS256, Key::Rsa1, &h, p);
    let unsigned = |alg: &str| {
        format!(
            "{}.{}.",
            b64url(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()),
            b64url(good.to_string().as_bytes())
        )
    };
    let valid = token(Alg::RS256, &good);
    let parts: Vec<String> = valid.split('.').map(String::from).collect();
    let mut flipped = jwt::b64_decode(&parts[2], true).unwrap();
    flipped[10] ^= 1;
    vec![
        // An empty third section is a bad format to jwt_authn, before alg is looked at.
        ("alg none", unsigned("none"), BAD_FORMAT),
        ("alg None", unsigned("None"), BAD_FORMAT),
        (
            "alg none, signed anyway",
            format!("{}.{}", unsigned("none").trim_end_matches('.'), parts[2]),
            "Jwt header [alg] is not supported",
        ),
        (
            "RS→HS key confusion (HS256 over the RSA public key, kid rsa-1)",
            token_with(Alg::HS256, Key::Rsa1, &json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}), &good),
            VERIFY_FAILS,
        ),
        (
            "RS→HS key confusion without kid",
            token_with(Alg::HS256, Key::Rsa1, &json!({"alg": "HS256", "typ": "JWT"}), &good),
            // jwt_authn tries every key without a kid and reports the last key's failure (the
            // Ed25519 key's length check): its words, however odd.
            "Jwt ED25519 signature is wrong length",
        ),
        ("empty signature", format!("{}.{}.", parts[0], parts[1]), BAD_FORMAT),
        ("bad signature (one bit)", format!("{}.{}.{}", parts[0], parts[1], b64url(&flipped)), VERIFY_FAILS),
        (
            "signature of another token",
            format!("{}.{}.{}", parts[0], b64url(claims("x").to_string().as_bytes()), parts[2]),
            VERIFY_FAILS,
        ),
        (
            "non-base64url chars in the payload",
            format!("{}.{}+/.{}", parts[0], parts[1], parts[2]),
            "Jwt payload is an invalid Base64url encoded",
        ),
        (
            "non-base64url chars in the header",
            format!("{}*.{}.{}", parts[0], parts[1], parts[2]),
            "Jwt header is an invalid Base64url encoded",
        ),
        ("JWE (5 parts)", format!("{}.a.b.c.d", b64url(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#)), BAD_FORMAT),
        ("two parts", format!("{}.{}", parts[0], parts[1]), BAD_FORMAT),
        ("one part", "abc".to_string(), BAD_FORMAT),
        (
            "exp a string",
            rs(jwt::header(Alg::RS256, Key::Rsa1), &jwt::with(good.clone(), json!({"exp": "tomorrow"}))),
            "Jwt payload [exp] field is not an integer",
        ),
        (
            "exp absurd",
            rs(jwt::header(Alg::RS256, Key::Rsa1), &jwt::with(good.clone(), json!({"exp": 1e300}))),
            "Jwt payload [exp] field is not a positive 64 bit integer",
        ),
        (
            "exp negative",
            rs(jwt::header(Alg::RS256, Key::Rsa1), &jwt::with(good.clone(), json!({"exp": -5}))),
            "Jwt payload [exp] field is not a positive 64 bit integer",
        ),
        (
            "nbf a string",
            rs(jwt::header(Alg::RS256, Key::Rsa1), &jwt::with(good.clone(), json!({"nbf": "now"}))),
            "Jwt payload [nbf] field is not an integer",
        ),
        (
            "expired",
            rs(jwt::header(Alg::RS256, Key::Rsa1), &jwt::with(good.clone(), json!({"exp": now - 3600}))),
            "Jwt is expired",
        ),
        (
            "not yet valid",
            rs(jwt::header(Alg::RS256, Key::Rsa1), &jwt::with(good.clone(), json!({"nbf": now + 3600}))),
            "Jwt not yet valid",
        ),
        (
            "unknown issuer",
            rs(
                jwt::header(Alg::RS256, Key::Rsa1),
                &jwt::with(good.clone(), json!({"iss": "https://evil.example.com"})),
            ),
            "Jwt issuer is not configured",
        ),
        ("unknown kid", rs(json!({"alg": "RS256", "typ": "JWT", "kid": "nope"}), &good), NO_KEY),
        (
            "ES256 signed by the P-384 key",
            token_with(Alg::ES384, Key::Ec384, &json!({"alg": "ES256", "kid": "ec-384"}), &good),
            VERIFY_FAILS,
        ),
        ("unsupported alg", rs(json!({"alg": "RS1", "kid": "rsa-1"}), &good), "Jwt header [alg] is not supported"),
        (
            "alg not a string",
            rs(json!({"alg": 256, "kid": "rsa-1"}), &good),
            "Jwt header [alg] field is required and must be a string",
        ),
        (
            "header invalid JSON",
            raw_token(b"{\"alg\":\"RS256\",", good.to_string().as_bytes(), Alg::RS256, Key::Rsa1),
            "Jwt header is an invalid JSON",
        ),
        (
            "payload invalid JSON",
            raw_token(jwt::header(Alg::RS256, Key::Rsa1).to_string().as_bytes(), b"{\"iss\":", Alg::RS256, Key::Rsa1),
            "Jwt payload is an invalid JSON",
        ),
        (
            "payload invalid UTF-8",
            raw_token(
                jwt::header(Alg::RS256, Key::Rsa1).to_string().as_bytes(),
                b"{\"iss\":\"\xff\xfe\"}",
                Alg::RS256,
                Key::Rsa1,
            ),
            "Jwt payload is an invalid JSON",
        ),
        (
            "header invalid UTF-8",
            raw_token(b"{\"alg\":\"RS256\",\"kid\":\"\xff\"}", good.to_string().as_bytes(), Alg::RS256, Key::Rsa1),
            "Jwt header is an invalid JSON",
        ),
        (
            "payload not an object",
            raw_token(jwt::header(Alg::RS256, Key::Rsa1).to_string().as_bytes(), b"[1,2]", Alg::RS256, Key::Rsa1),
            "Jwt payload is an invalid JSON",
        ),
        (
            "iss not a string",
            rs(jwt::header(Alg::RS256, Key::Rsa1), &jwt::with(good.clone(), json!({"iss": 7}))),
            "Jwt payload [iss] field is not a string",
        ),
        (
            "EdDSA signature wrong length",
            format!(
                "{}.{}.{}",
                b64url(jwt::header(Alg::EdDSA, Key::Ed25519).to_string().as_bytes()),
                parts[1],
                b64url(&[1; 10])
            ),
            "Jwt ED25519 signature is wrong length",
        ),
    ]
}

/// Tokens jwt-auth refuses (401) and jwt_authn accepts: deliberate deviations (RFC 8725),
/// listed in [`EXPECTED_DIFFERENCES`] too.
fn refused_by_the_filter_only() -> Vec<(&'static str, String)> {
    let h = json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1", "crit": ["x-unknown"], "x-unknown": 1});
    vec![("unknown crit header", token_with(Alg::RS256, Key::Rsa1, &h, &claims("crit")))]
}

// ---- behaviour ----

#[test]
fn valid_tokens_of_every_alg_pass_and_the_upstream_sees_claims_not_the_token() {
    let s = start();
    for alg in Alg::ALL {
        let case = format!("valid-{}", alg.name());
        let (path, r, tok) = if alg.is_hmac() {
            // HS keys are `oct` keys of the local provider's inline JWKS; its token header.
            let t = token(alg, &claims_for(LOCAL_ISSUER, "hmac-user"));
            ("/local/items", Request::get("/local/items").header("x-api-token", &format!("Token {t}")), t)
        } else {
            let p = jwt::with(claims(&format!("user-{}", alg.name())), json!({"org": {"tenant": "acme"}}));
            let t = token(alg, &p);
            ("/api/items", bearer("/api/items", &t), t)
        };
        let resp = s.send(&r.header("x-case", &case));
        assert_eq!(resp.status, 200, "{case}: {resp}");
        let seen = s.seen(&case).expect("reached the upstream");
        assert_eq!(seen.path, path);
        if alg.is_hmac() {
            assert_eq!(seen.header_value("x-jwt-sub").as_deref(), Some("hmac-user"), "{case}");
            // forward: true on the local provider.
            assert_eq!(seen.header_value("x-api-token"), Some(format!("Token {tok}")), "{case}");
        } else {
            assert_eq!(seen.header_value("x-jwt-sub"), Some(format!("user-{}", alg.name())), "{case}");
            assert_eq!(seen.header_value("x-jwt-tenant").as_deref(), Some("acme"), "{case}: nested claim");
            assert_eq!(seen.header_value("x-jwt-payload").as_deref(), tok.split('.').nth(1), "{case}");
            assert_eq!(seen.header_value("authorization"), None, "{case}: forward false strips the token");
        }
    }
}

#[test]
fn token_locations_and_rules() {
    let s = start();
    let remote = token(Alg::RS256, &claims("loc"));
    let local = token(Alg::ES256, &claims_for(LOCAL_ISSUER, "loc-local"));
    let port = s.port();
    let cases: Vec<(&str, Request, u16, &str)> = vec![
        ("no rule needs nothing", Request::get("/public/x"), 200, ""),
        ("no rule: a bad token is not even looked at", bearer("/public/x", "garbage"), 200, ""),
        ("allow_missing: none", Request::get("/optional/x"), 200, ""),
        ("allow_missing: valid", bearer("/optional/x", &remote), 200, ""),
        (
            "allow_missing: invalid is still refused",
            bearer("/optional/x", "a.b.c"),
            401,
            "Jwt header is an invalid Base64url encoded",
        ),
        ("default: access_token param", Request::get(&format!("/api/q?access_token={remote}")), 200, ""),
        ("default: missing", Request::get("/api/q"), 401, MISSING),
        (
            "default: other scheme is not a token",
            Request::get("/api/q").header("authorization", &format!("Basic {remote}")),
            401,
            MISSING,
        ),
        (
            "local: custom header with prefix",
            Request::get("/local/x").header("x-api-token", &format!("Token {local}")),
            200,
            "",
        ),
        ("local: header without the prefix", Request::get("/local/x").header("x-api-token", &local), 401, MISSING),
        ("local: param", Request::get(&format!("/local/x?token={local}")), 200, ""),
        ("local: cookie", Request::get("/local/x").header("cookie", &format!("a=b; session={local}; c=d")), 200, ""),
        ("local: Authorization is not its location", bearer("/local/x", &local), 401, MISSING),
        (
            "local: remote issuer's token",
            Request::get("/local/x").header("x-api-token", &format!("Token {remote}")),
            401,
            "Jwt issuer is not configured",
        ),
        ("any: remote", bearer("/any/x", &remote), 200, ""),
        ("any: local", Request::get("/any/x").header("x-api-token", &format!("Token {local}")), 200, ""),
    ];
    for (what, req, status, body) in cases {
        let r = s.send(&req);
        if status == 200 {
            assert_eq!(r.status, 200, "{what}: {r}");
        } else {
            assert_401(&s, &r, &req.path, body, what);
        }
    }
    let _ = port;
}

#[test]
fn attack_and_malformed_tokens_are_401_with_jwt_authn_answers() {
    let mut s = start();
    let path = "/api/attack";
    let mut wrong = Vec::new();
    for (what, tok, body) in bad_tokens() {
        let r = s.send(&bearer(path, &tok));
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| assert_401(&s, &r, path, body, what))).is_err() {
            wrong.push(format!("{what}: {} {:?} {:?}", r.status, r.body_text(), r.header("www-authenticate")));
        }
    }
    assert!(wrong.is_empty(), "{} wrong answers:\n{}", wrong.len(), wrong.join("\n"));
    for (what, tok) in refused_by_the_filter_only() {
        let r = s.send(&bearer(path, &tok));
        if native() {
            eprintln!("JWT_AUTH_UNDER_TEST=native: jwt_authn answers {} to `{what}` (jwt-auth: 401)", r.status);
            continue;
        }
        assert_eq!(r.status, 401, "{what}: {r}");
        let want = format!("{}, error=\"invalid_token\"", realm(s.port(), path));
        assert_eq!(r.header("www-authenticate").as_deref(), Some(want.as_str()), "{what}: {r}");
    }
    let bodies_seen = s.upstream.requests().len();
    // Missing: no error="invalid_token".
    let r = s.send(&Request::get(path));
    assert_401(&s, &r, path, MISSING, "missing");
    // The realm is the request's URI, query included (jwt_authn's buildOriginalUri).
    let r = s.send(&Request::get(&format!("{path}?a=1")));
    assert_401(&s, &r, &format!("{path}?a=1"), MISSING, "realm with the query");
    assert!(native() || bodies_seen == 0, "nothing reached the upstream");
    assert_eq!(s.envoy.exited(), None, "Envoy still runs");
}

#[test]
fn oversized_tokens_are_refused_before_parsing() {
    if filter_only("max_token_bytes (jwt_authn has no cap)") {
        return;
    }
    let s = start();
    // A well-signed, otherwise valid token just over the default cap of 8192 bytes.
    let big = token(Alg::RS256, &jwt::with(claims("big"), json!({"pad": "x".repeat(6500)})));
    assert!(big.len() > 8192, "{}", big.len());
    let r = s.send(&bearer("/api/big", &big));
    assert_eq!(r.status, 401, "{r}");
    assert!(r.header("www-authenticate").is_some_and(|v| v.ends_with(", error=\"invalid_token\"")), "{r}");
    // Just under it passes.
    let fits = token(Alg::RS256, &jwt::with(claims("fits"), json!({"pad": "x".repeat(5000)})));
    assert!(fits.len() < 8192, "{}", fits.len());
    assert_eq!(s.send(&bearer("/api/fits", &fits)).status, 200);
    // The cap is configurable.
    drop(s);
    let s = start_with(
        Mode::Serve,
        2,
        Some(Box::new(|c| replace(&c, "\"providers\": {", "\"max_token_bytes\": 16384, \"providers\": {"))),
    );
    assert_eq!(s.send(&bearer("/api/big", &big)).status, 200);
}

#[test]
fn audience_not_allowed_is_403() {
    let s = start();
    let path = "/api/aud";
    for aud in [json!("other.example.com"), json!(["x", "y"])] {
        let t = token(Alg::RS256, &jwt::with(claims("aud"), json!({"aud": aud})));
        let r = s.send(&bearer(path, &t));
        assert_eq!(r.status, 403, "{r}");
        assert_eq!(r.body_text(), "Audiences in Jwt are not allowed", "{r}");
        let want = format!("{}, error=\"invalid_token\"", realm(s.port(), path));
        assert_eq!(r.header("www-authenticate").as_deref(), Some(want.as_str()), "{r}");
    }
    // One allowed audience among others is enough.
    let t = token(Alg::RS256, &jwt::with(claims("aud"), json!({"aud": ["x", AUDIENCE]})));
    assert_eq!(s.send(&bearer(path, &t)).status, 200);
}

#[test]
fn remote_jwks_is_fetched_once_per_proxy_not_per_worker() {
    jwks_once_per_proxy(2, 40);
}

/// The same at 16 workers (oversubscribed on a small machine: correctness only, no timing).
#[test]
fn remote_jwks_is_fetched_once_per_proxy_with_16_workers() {
    jwks_once_per_proxy(16, 200);
}

/// `requests` on new connections (spread by the kernel over the workers) all verified with the
/// remote JWKS: every worker that served one had the keys, and the proxy fetched them once.
fn jwks_once_per_proxy(workers: u32, requests: u32) {
    let s = start_with(Mode::Serve, workers, None);
    let t = token(Alg::ES256, &claims("once"));
    for i in 0..requests {
        let r = s.send(&bearer(&format!("/api/once/{i}"), &t));
        assert_eq!(r.status, 200, "{r}");
    }
    let spread = s.envoy.connections_per_worker(LISTENER_PORT);
    assert_eq!(spread.len(), workers as usize, "{spread:?}");
    let served = spread.iter().filter(|n| **n > 0).count();
    // Which worker takes a connection is the kernel's choice: most, not all, is what luck allows.
    assert!(
        served > workers as usize / 2,
        "{requests} connections reached only {served} of {workers} workers: {spread:?}"
    );
    assert_eq!(s.wait_stat("jwks_fetch_success", 1), 1, "one JWKS fetch for the proxy, whatever the workers");
    // Every other call was a retry of one that failed (on a loaded machine the 2-second
    // http_uri.timeout can pass before the answer is handled); a fetch per worker would be a
    // second success.
    assert_jwks_calls_are_one_success_plus_retries(&s);
    eprintln!(
        "--concurrency {workers}: {requests} requests verified, JWKS calls {}; connections per worker {spread:?}",
        s.jwks.calls()
    );
}

/// The JWKS server's calls are the successful fetches plus the failed ones, with one success:
/// nothing fetched beyond what the filter counted. (Read once the fetches have settled.)
fn assert_jwks_calls_are_one_success_plus_retries(s: &Setup) {
    // The counter follows the publication the request saw: wait for it.
    let (success, failed) = (s.wait_stat("jwks_fetch_success", 1), s.stat("jwks_fetch_failed"));
    assert_eq!(success, 1, "one JWKS fetch ({failed} failed)");
    assert_eq!(s.jwks.calls() as u64, success + failed, "JWKS calls: one success, {failed} retried failures");
}

#[test]
fn key_rotation_is_picked_up_on_an_unknown_kid() {
    if filter_only("refetch on an unknown kid") {
        return;
    }
    // Refetches on an unknown kid at most once per 3 s per worker (ours; default 10 s).
    const INTERVAL: Duration = Duration::from_secs(3);
    const WORKERS: u64 = 2;
    let s = start_with(
        Mode::Serve,
        WORKERS as u32,
        Some(Box::new(|c| {
            replace(&c, "\"providers\": {", "\"unknown_kid_refetch_interval\": \"3s\", \"providers\": {")
        })),
    );
    let old = token(Alg::RS256, &claims("old"));
    assert_eq!(s.send(&bearer("/api/rot", &old)).status, 200);
    assert_jwks_calls_are_one_success_plus_retries(&s);
    // The IdP rotates: rsa-2 in, rsa-1 out. A token signed by rsa-2 (unknown kid) makes the
    // filter refetch at once, without waiting for cache_duration (300 s).
    std::thread::sleep(INTERVAL + Duration::from_millis(200));
    s.jwks.set_body(&jwt::jwks(&jwt::ROTATED_KEYS));
    let calls = s.jwks.calls();
    let new = token_with(Alg::RS256, Key::Rsa2, &jwt::header(Alg::RS256, Key::Rsa2), &claims("new"));
    let r = s.send(&bearer("/api/rot", &new));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(s.jwks.calls(), calls + 1, "the unknown kid made the filter refetch");
    // rsa-1 is gone from the JWKS now: a token it signs no longer verifies (fresh ones: `old`
    // sits in the verified-token cache, as it would in jwt_authn's). Every worker takes the new
    // keys on its next tick (250 ms), so soon no worker accepts rsa-1. Connections land on
    // workers at random: 20 refusals in a row make "one worker still had rsa-1 and was never
    // asked" a one-in-a-million chance (6 left it at 1 in 32, and CI met it).
    eventually("every worker has the rotated keys", Duration::from_secs(30), || {
        (0..20).all(|i| s.send(&bearer("/api/rot", &token(Alg::RS256, &claims(&format!("old-{i}"))))).status == 401)
    });
    let r = s.send(&bearer("/api/rot", &token(Alg::RS256, &claims("old-last"))));
    assert_401(&s, &r, "/api/rot", NO_KEY, "retired key");
    // Unknown kids do not hammer the JWKS server: each worker refetches for them at most once
    // per interval, however many come and however long they take to send. Without the limit,
    // each of these requests would wait for a refetch of its own (20 calls).
    let (calls, started) = (s.jwks.calls() as u64, Instant::now());
    for i in 0..20 {
        let t = token_with(Alg::RS256, Key::Rsa2, &json!({"alg": "RS256", "kid": format!("nope-{i}")}), &claims("x"));
        assert_eq!(s.send(&bearer("/api/rot", &t)).status, 401);
    }
    let (refetches, elapsed) = (s.jwks.calls() as u64 - calls, started.elapsed());
    let allowed = WORKERS * (elapsed.as_millis() as u64 / INTERVAL.as_millis() as u64 + 1);
    assert!(refetches <= allowed, "rate-limited refetch: {refetches} calls in {elapsed:?} (at most {allowed})");
}

#[test]
fn jwks_server_failures_keep_the_last_good_keys() {
    // Refresh every second, so failures happen while the test runs.
    let mut s = start_with(
        Mode::Serve,
        2,
        Some(Box::new(|c| replace(&c, "\"cache_duration\": \"300s\"", "\"cache_duration\": \"1s\""))),
    );
    let t = token(Alg::EdDSA, &claims("keep"));
    assert_eq!(s.send(&bearer("/api/keep", &t)).status, 200);
    for mode in [Mode::Status(500), Mode::Gone, Mode::Delay(4000)] {
        // A failed refresh (answered or timed out: http_uri.timeout is 2 s) while the keys expire.
        let calls = s.jwks.calls();
        s.jwks.set_mode(mode.clone());
        eventually(&format!("a refresh attempt while {mode:?}"), Duration::from_secs(30), || {
            // jwt_authn refreshes when a request finds the keys expired.
            let _ = s.send(&bearer("/api/keep", &t));
            s.jwks.calls() > calls
        });
        std::thread::sleep(Duration::from_millis(2500));
        let r = s.send(&bearer("/api/keep", &t));
        assert_eq!(r.status, 200, "{mode:?}: the last good keys still verify: {r}");
        // Back to serving (the retry back-off resets on success) before the next way to fail.
        let calls = s.jwks.calls();
        s.jwks.set_mode(Mode::Serve);
        eventually("a good refresh", Duration::from_secs(30), || {
            let _ = s.send(&bearer("/api/keep", &t));
            s.jwks.calls() > calls
        });
    }
    assert!(s.wait_stat("jwks_fetch_failed", 1) >= 1, "failures counted");
    s.jwks.set_mode(Mode::Serve);
    assert_eq!(s.send(&bearer("/api/keep", &t)).status, 200);
    assert_eq!(s.envoy.exited(), None);
}

#[test]
fn a_request_before_the_first_jwks_waits_for_it() {
    // http_uri.timeout raised from 2 s to 30 s: the wait below must not turn into a failed
    // fetch on a loaded machine.
    let longer = |c: String| replace(&c, "\"timeout\": \"2s\"", "\"timeout\": \"30s\"");
    let t = token(Alg::RS256, &claims("early"));
    if native() {
        // jwt_authn's listener opens after the first fetch (async_fetch without fast_listener):
        // no request can come before it. The JWKS answers after 1.2 s.
        let s = start_with(Mode::Delay(1200), 2, Some(Box::new(longer)));
        let r = s.send(&bearer("/api/early", &t));
        assert_eq!(r.status, 200, "{r}");
        return;
    }
    // The JWKS server holds the first fetch until the request is inside Envoy: then the keys
    // cannot be there before it, however the machine schedules things.
    let s = start_with(Mode::Hold, 2, Some(Box::new(longer)));
    eventually("the first JWKS fetch is under way", Duration::from_secs(30), || s.jwks.calls() >= 1);
    let port = s.port();
    let waiting = std::thread::spawn(move || bearer("/api/early", &t).send(port));
    eventually("the request is in Envoy", Duration::from_secs(30), || {
        s.envoy.stat("http.ingress.downstream_rq_active") >= 1
    });
    assert_eq!(s.stat("allowed") + s.stat("denied"), 0, "nothing decided before the keys came");
    s.jwks.set_mode(Mode::Serve);
    let r = waiting.join().unwrap().unwrap();
    assert_eq!(r.status, 200, "waited for the keys: {r}");
    assert_eq!(s.jwks.calls(), 1, "the request waited for the fetch under way, not a new one");
}

#[test]
fn requests_parked_together_are_each_decided_on_their_own_token() {
    // One worker, and the first JWKS answer held back (with a fetch timeout long enough):
    // every request below is parked in the same worker, then all are woken by the same key
    // arrival. Each must get the answer its own token deserves.
    let long_timeout: Edit = Box::new(|c| c.replace(r#""timeout": "2s""#, r#""timeout": "30s""#));
    let s = start_with(Mode::Hold, 1, Some(long_timeout));
    let good = token(Alg::RS256, &claims("parked"));
    let parts: Vec<&str> = good.split('.').collect();
    let mut sig = jwt::b64_decode(parts[2], true).unwrap();
    sig[7] ^= 1;
    let forged = format!("{}.{}.{}", parts[0], parts[1], b64url(&sig));
    let port = s.port();
    let parked: Vec<_> = (0..6)
        .map(|i| {
            let (case, t) =
                if i % 2 == 0 { (format!("good-{i}"), good.clone()) } else { (format!("forged-{i}"), forged.clone()) };
            let path = format!("/api/parked/{case}");
            let req = bearer(&path, &t).header("x-case", &case);
            (case, path, std::thread::spawn(move || req.send(port)))
        })
        .collect();
    eventually("all six requests parked in Envoy", Duration::from_secs(20), || {
        s.envoy.stat("http.ingress.downstream_rq_active") >= 6
    });
    assert!(s.upstream.requests().is_empty(), "nothing passed before the keys came");
    s.jwks.set_mode(Mode::Serve);
    for (case, path, t) in parked {
        let r = t.join().unwrap().unwrap();
        if case.starts_with("good") {
            assert_eq!(r.status, 200, "{case}: {r}");
            let seen = s.seen(&case).unwrap_or_else(|| panic!("{case} reached the upstream"));
            assert_eq!(seen.path, path, "{case}: its own request went on");
        } else {
            assert_401(&s, &r, &path, VERIFY_FAILS, &case);
            assert!(s.seen(&case).is_none(), "{case} never reached the upstream");
        }
    }
    if !filter_only("one JWKS fetch for the parked requests (jwt_authn fetches per worker)") {
        assert_eq!(s.jwks.calls(), 1, "they all waited for the same fetch");
    }
}

#[test]
fn no_jwks_at_all_means_401_jwks_fetch_failed_never_a_hang() {
    // The answer comes within http_uri.timeout (2 s) plus room for a loaded machine: a hang
    // would hold the request until the client gives up (30 s).
    const ANSWER_BOUND: Duration = Duration::from_secs(12);
    let s = start_with(Mode::Gone, 2, None);
    let t = token(Alg::RS256, &claims("none"));
    for _ in 0..3 {
        let started = Instant::now();
        let r = s.send(&bearer("/api/none", &t));
        assert_401(&s, &r, "/api/none", "Jwks remote fetch is failed", "no JWKS");
        assert!(started.elapsed() < ANSWER_BOUND, "bounded by http_uri.timeout: {:?}", started.elapsed());
    }
    // A slow JWKS (past the 2-second timeout) is the same.
    drop(s);
    let s = start_with(Mode::Delay(6000), 2, None);
    let started = Instant::now();
    let r = s.send(&bearer("/api/none", &t));
    assert_401(&s, &r, "/api/none", "Jwks remote fetch is failed", "slow JWKS");
    assert!(started.elapsed() < ANSWER_BOUND, "bounded by http_uri.timeout: {:?}", started.elapsed());
    // Then it comes back: the same Envoy recovers (after the retry back-off, a few seconds).
    s.jwks.set_mode(Mode::Serve);
    eventually("recovered", Duration::from_secs(60), || s.send(&bearer("/api/none", &t)).status == 200);
}

/// The HCM path settings every shipped config carries (J7): rules then match the path the
/// router routes.
const NORMALIZATION: &str = "          normalize_path: true\n          merge_slashes: true\n          path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT\n";

/// Only `/api` needs a token (the shipped config's catch-all rule would hide a bypass).
fn api_rule_only(normalize: bool) -> Edit {
    Box::new(move |text| {
        let text = if normalize { text } else { replace(&text, NORMALIZATION, "") };
        e2e::envoy::edit_plugin_config(&text, "jwt-auth", |plugin| {
            plugin["rules"] = json!([{"match": {"prefix": "/api"}, "requires": {"provider_name": "remote"}}]);
        })
        .expect("jwt-auth plugin config")
    })
}

/// Spellings of `/api/admin` a client may choose; the router routes them all to `/api/admin`.
const RESPELLED: &[&str] = &["/%61pi/admin", "//api/admin", "/./api/admin", "/x/../api/admin"];

#[test]
fn path_spellings_do_not_slip_past_a_rule() {
    let s = start_with(Mode::Serve, 2, Some(api_rule_only(true)));
    let mut paths: Vec<&str> = RESPELLED.to_vec();
    paths.extend(["/api/admin", "/api/../api/admin"]);
    for (i, path) in paths.iter().enumerate() {
        let r = s.send(&Request::get(path).header("x-case", &format!("n-{i}")));
        assert_401(&s, &r, "/api/admin", MISSING, path);
        assert!(s.seen(&format!("n-{i}")).is_none(), "{path} reached the upstream");
    }
    // An escaped slash is answered with a redirect to the unescaped path (which then meets the
    // rule); it never reaches the upstream as it is.
    let r = s.send(&Request::get("/api%2Fadmin").header("x-case", "escaped-slash"));
    assert_eq!(r.status, 307, "{r}");
    assert_eq!(r.header("location").as_deref(), Some("/api/admin"), "{r}");
    assert!(s.seen("escaped-slash").is_none());
    // Rules are case-sensitive, like a native RouteMatch's default: `/API/admin` is another
    // path (and another route to an upstream that distinguishes case).
    let r = s.send(&Request::get("/API/admin").header("x-case", "upper"));
    assert_eq!(r.status, 200, "{r}");
    // And a token opens the normalized spellings like the plain path.
    let t = token(Alg::RS256, &claims("admin"));
    for path in RESPELLED {
        assert_eq!(s.send(&bearer(path, &t)).status, 200, "{path} with a token");
    }
}

/// The control: the same config without the HCM settings lets each spelling through without a
/// token, so it is the settings that protect (and the test above can fail).
#[test]
fn path_spellings_slip_past_a_rule_without_normalization() {
    let s = start_with(Mode::Serve, 2, Some(api_rule_only(false)));
    for (i, path) in RESPELLED.iter().enumerate() {
        let r = s.send(&Request::get(path).header("x-case", &format!("raw-{i}")));
        assert_eq!(r.status, 200, "{path}: {r}");
        let seen = s.seen(&format!("raw-{i}")).unwrap_or_else(|| panic!("{path} not upstream"));
        assert_eq!(seen.path, *path, "the upstream got the raw spelling");
    }
    // The plain path still meets the rule: the difference is only the spelling.
    let r = s.send(&Request::get("/api/admin"));
    assert_401(&s, &r, "/api/admin", MISSING, "/api/admin");
}

/// J1 in a real Envoy: a `requires_any` of two providers whose remote JWKS never answer, and a
/// request carrying a token of each. Before the fix the worker ping-ponged between the two
/// waits (a stack overflow once the wait list was full, and no answer at all before that: the
/// review saw none after 15 s). Now both give up after `http_uri.timeout` and the request gets
/// jwt_authn's answer for a failed fetch; the worker keeps serving.
#[test]
fn two_unreachable_jwks_under_requires_any_answer_and_the_worker_lives() {
    const ANSWER_BOUND: Duration = Duration::from_secs(12);
    const SECOND_ISSUER: &str = "https://second.example.com";
    let edit: Edit = Box::new(|text| {
        e2e::envoy::edit_plugin_config(&text, "jwt-auth", |plugin| {
            let mut second = plugin["providers"]["remote"].clone();
            second["issuer"] = json!(SECOND_ISSUER);
            second["remote_jwks"]["http_uri"]["uri"] = json!("http://127.0.0.1:18082/second/jwks.json");
            second["from_headers"] = json!([{"name": "x-second-token"}]);
            second.as_object_mut().map(|o| o.remove("claim_to_headers"));
            second.as_object_mut().map(|o| o.remove("forward_payload_header"));
            plugin["providers"]["second"] = second;
            let both = json!({"requires_any": {"requirements": [
                {"provider_name": "remote"}, {"provider_name": "second"}
            ]}});
            plugin["rules"] = json!([
                {"match": {"prefix": "/both"}, "requires": both},
                {"match": {"prefix": "/"}}
            ]);
        })
        .expect("jwt-auth plugin config")
    });
    // Hold: the JWKS server accepts and never answers (until the test ends).
    let s = start_with(Mode::Hold, 2, Some(edit));
    let first = token(Alg::RS256, &claims("first"));
    let second = token(Alg::RS256, &claims_for(SECOND_ISSUER, "second"));
    // Several requests so both workers are asked, each with the two-token shape.
    for i in 0..4 {
        let started = Instant::now();
        let r = bearer("/both/x", &first).header("x-second-token", &second).header("x-case", &format!("both-{i}"));
        let r = r.send_within(s.port(), Duration::from_secs(30)).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_401(&s, &r, "/both/x", "Jwks remote fetch is failed", &format!("request {i}"));
        assert!(started.elapsed() < ANSWER_BOUND, "request {i}: bounded by http_uri.timeout: {:?}", started.elapsed());
        // The worker that answered still serves: a request with no rule right after.
        let r = s.send(&Request::get("/open").header("x-case", &format!("open-{i}")));
        assert_eq!(r.status, 200, "after request {i}: {r}");
    }
    assert!(s.seen("both-0").is_none(), "no token-less pass to the upstream");
    let log = s.envoy.log();
    for bad in ["panic", "wasm trap", "Function: proxy_on", "stack overflow"] {
        assert!(!log.contains(bad), "{bad} in the log:\n{log}");
    }
}

/// J2: a client's own copies of the claim and payload headers never reach the upstream, on
/// every path: under `requires_any` the provider that did not verify would leave its headers
/// as the client sent them (`x-jwt-tenant: admin` next to a valid `local` token), and on a path
/// with no rule nothing is verified at all. jwt-auth removes every provider's headers on every
/// request. Checked against native (`JWT_AUTH_UNDER_TEST=native`): jwt_authn 1.40 does the
/// same; 1.36 does it only on paths with a rule and passes them through on a path without one.
#[test]
fn forged_claim_headers_never_reach_the_upstream() {
    let s = start();
    let local = token(Alg::ES256, &claims_for(LOCAL_ISSUER, "local-user"));
    let forged = [("x-jwt-sub", "admin"), ("x-jwt-tenant", "admin"), ("x-jwt-payload", "eyJzdWIiOiJhZG1pbiJ9")];
    let native_1_36 = native() && e2e::envoy_version().is_some_and(|(major, minor, _)| (major, minor) < (1, 40));
    let cases = [
        ("any-local", Request::get("/any/x").header("x-api-token", &format!("Token {local}")), Some("local-user")),
        ("no-rule", Request::get("/public/x"), None),
    ];
    for (case, req, sub) in cases {
        let req = forged.iter().fold(req.header("x-case", case), |r, (name, value)| r.header(name, value));
        let r = s.send(&req);
        assert_eq!(r.status, 200, "{case}: {r}");
        let seen = s.seen(case).expect("reached the upstream");
        for (name, value) in forged {
            let expected = match (name, sub) {
                ("x-jwt-sub", Some(sub)) => Some(sub.to_string()),
                _ if native_1_36 && case == "no-rule" => Some(value.to_string()),
                _ => None,
            };
            assert_eq!(seen.header_value(name), expected, "{case}: {name}");
        }
    }
}

#[test]
fn the_verified_token_cache_never_serves_an_expired_token() {
    let s = start_with(
        Mode::Serve,
        1,
        Some(Box::new(|c| replace(&c, "\"jwt_cache_config\"", "\"clock_skew_seconds\": 1, \"jwt_cache_config\""))),
    );
    // Valid for 5 to 6 s (plus the 1-second skew): both requests pass even on a loaded machine.
    let exp = jwt::now() + 6;
    let t = token(Alg::RS256, &jwt::with(claims("short"), json!({"exp": exp})));
    assert_eq!(s.send(&bearer("/api/short", &t)).status, 200);
    assert_eq!(s.send(&bearer("/api/short", &t)).status, 200);
    assert!(s.wait_stat("jwt_cache_hit", 1) >= 1, "the second was a cache hit");
    // clock_skew_seconds 1, not 0: to jwt_authn 0 is unset, i.e. the default 60 (proto3).
    while jwt::now() <= exp + 1 {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1100));
    let r = s.send(&bearer("/api/short", &t));
    assert_401(&s, &r, "/api/short", "Jwt is expired", "cached, then expired");
}

#[test]
fn stats_count_allowed_and_denied_by_reason() {
    let s = start();
    let ok = token(Alg::RS256, &claims("st"));
    assert_eq!(s.send(&bearer("/api/st", &ok)).status, 200);
    assert_eq!(s.send(&Request::get("/api/st")).status, 401);
    assert_eq!(s.send(&bearer("/api/st", "x.y")).status, 401);
    let expired = token(Alg::RS256, &jwt::with(claims("st"), json!({"exp": jwt::now() - 1000})));
    assert_eq!(s.send(&bearer("/api/st", &expired)).status, 401);
    assert!(s.wait_stat("allowed", 1) >= 1);
    assert!(s.wait_stat("denied", 3) >= 3);
    // The names jwt_authn has too (http.<stat_prefix>.jwt_authn.<name> there).
    let stats = s.envoy.stats();
    for name in ["allowed", "denied", "jwks_fetch_success", "jwks_fetch_failed", "jwt_cache_hit", "jwt_cache_miss"] {
        assert!(stats.contains_key(&s.stat_name(name)), "{} is defined", s.stat_name(name));
    }
    assert!(s.wait_stat("jwt_cache_miss", 1) >= 1, "the first verification was a miss");
    if filter_only("denied_<reason> stats") {
        return;
    }
    for (reason, min) in [("missing", 1), ("malformed", 1), ("expired", 1)] {
        assert!(s.wait_stat(&format!("denied_{reason}"), min) >= min, "denied_{reason}");
    }
    // Every reason is there from the start, at 0 when nothing happened.
    for reason in [
        "not_yet_valid",
        "unknown_issuer",
        "audience",
        "no_matching_key",
        "bad_signature",
        "jwks_unavailable",
        "lifetime",
    ] {
        let name = s.stat_name(&format!("denied_{reason}"));
        assert!(s.envoy.stats().contains_key(&name), "{name} is defined");
    }
}

#[test]
fn unsupported_configuration_is_refused_naming_the_field() {
    if filter_only("refusing jwt_authn fields it does not support") {
        return;
    }
    let cases: [(&str, &str, &str); 5] = [
        ("\"providers\": {", "\"requirement_map\": {}, \"providers\": {", "requirement_map"),
        ("\"providers\": {", "\"filter_state_rules\": {\"name\": \"x\"}, \"providers\": {", "filter_state_rules"),
        (
            "\"issuer\": \"https://issuer.example.com\",",
            "\"issuer\": \"https://issuer.example.com\", \"subjects\": {\"prefix\": \"spiffe://\"},",
            "providers.remote.subjects",
        ),
        (
            "\"jwt_cache_config\"",
            "\"normalize_payload_in_metadata\": {}, \"jwt_cache_config\"",
            "providers.remote.normalize_payload_in_metadata",
        ),
        (
            "\"prefix\": \"/public\"",
            "\"prefix\": \"/public\", \"headers\": [{\"name\": \"x\"}]",
            "rules[0].match.headers",
        ),
    ];
    for (from, to, field) in cases {
        let (from, to) = (from.to_string(), to.to_string());
        let jwks = JwksServer::start(0, &jwt::jwks(&jwt::REMOTE_KEYS)).unwrap();
        let opts = options(&jwks, 1, Some(Box::new(move |c| replace(&c, &from, &to))));
        let mut envoy = Envoy::spawn(CONFIG, &opts).unwrap();
        let status = envoy.wait_exit(Duration::from_secs(60));
        let log = envoy.log();
        assert!(status.is_some_and(|s| !s.success()), "{field}: Envoy kept running:\n{log}");
        assert!(
            log.contains(&format!("jwt-auth: invalid configuration, refusing to start: field `{field}`")),
            "{field}:\n{log}"
        );
    }
}

// ---- differential: the filter and jwt_authn in one Envoy ----

/// Cases where jwt-auth deliberately answers otherwise than jwt_authn, with the reason. The
/// differential test requires these to differ as stated (so a fixed deviation is noticed too).
const EXPECTED_DIFFERENCES: &[(&str, &str)] = &[
    (
        "filter only: unknown crit header",
        "RFC 7515 §4.1.11: a token whose `crit` names an extension the verifier does not understand must be \
         rejected; jwt_authn ignores `crit` and accepts it (200)",
    ),
    ("filter only on /optional: unknown crit header", "as above, on an allow_missing route"),
    (
        "oversized token (9 KB, valid)",
        "max_token_bytes (default 8192): jwt-auth refuses longer tokens (401) before parsing; jwt_authn has no cap",
    ),
];

fn text_template() -> String {
    std::fs::read_to_string(e2e::repo_root().join("envoy-configs").join(CONFIG)).unwrap()
}

struct Differential {
    envoy: Envoy,
    upstream: Upstream,
    _jwks: JwksServer,
    wasm_port: u16,
    native_port: u16,
}

/// One Envoy, two listeners on the same routes and upstream: `http` (LISTENER_PORT) with
/// jwt-auth, `native` with jwt_authn, both given jwt-auth.yaml's very JSON. Under
/// `JWT_AUTH_UNDER_TEST=native` both are jwt_authn (a check of the harness itself).
fn start_differential() -> Differential {
    let jwks = JwksServer::start(0, &jwt::jwks(&jwt::REMOTE_KEYS)).unwrap();
    let native_port = free_port();
    let mut opts = EnvoyOptions::default();
    opts.preset_ports.insert(JWKS_PORT, jwks.port);
    opts.edit = Some(Box::new(move |text| {
        let text = if native() { to_native(&text) } else { text };
        let mut config = yaml_to_json(&text);
        let plugin = plugin_json(&yaml_to_json(&text_template()));
        let listeners = config["static_resources"]["listeners"].as_array_mut().unwrap();
        let mut twin = listeners[0].clone();
        twin["name"] = json!("native");
        twin["address"]["socket_address"]["port_value"] = json!(native_port);
        twin["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"] = json!("native");
        for f in http_filters(&mut twin).iter_mut() {
            if f["name"] == "jwt-auth" || f["name"] == "envoy.filters.http.jwt_authn" {
                *f = native_filter(&plugin);
            }
        }
        listeners.push(twin);
        config.to_string()
    }));
    let envoy = Envoy::start_with(CONFIG, opts).unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    let wasm_port = envoy.port(LISTENER_PORT);
    Differential { envoy, upstream, _jwks: jwks, wasm_port, native_port }
}

/// What a client and the upstream can tell about one answer.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Answer {
    status: u16,
    body: String,
    www_authenticate: Option<String>,
    /// Headers the upstream saw that the filter sets or strips (only for requests let through).
    upstream: Vec<(String, Option<String>)>,
}

/// Long values (tokens, base64 payloads) shortened for the mismatch table.
fn short(v: &str) -> String {
    let n = v.chars().count();
    if n > 60 {
        let head: String = v.chars().take(28).collect();
        let tail: String = v.chars().skip(n - 28).collect();
        format!("{head}…({n} chars)…{tail}")
    } else {
        v.to_string()
    }
}

/// `jwt-auth | jwt_authn` cells naming only what differs.
fn differences(a: &Answer, b: &Answer) -> String {
    let (mut left, mut right) = (Vec::new(), Vec::new());
    if a.status != b.status {
        left.push(format!("status {}", a.status));
        right.push(format!("status {}", b.status));
    }
    if a.body != b.body {
        left.push(format!("body {:?}", short(&a.body)));
        right.push(format!("body {:?}", short(&b.body)));
    }
    if a.www_authenticate != b.www_authenticate {
        left.push(format!("www-authenticate {:?}", a.www_authenticate.as_deref().map(short)));
        right.push(format!("www-authenticate {:?}", b.www_authenticate.as_deref().map(short)));
    }
    for ((name, x), (_, y)) in a.upstream.iter().zip(&b.upstream) {
        if x != y {
            left.push(format!("upstream {name}: {:?}", x.as_deref().map(short)));
            right.push(format!("upstream {name}: {:?}", y.as_deref().map(short)));
        }
    }
    if a.upstream.len() != b.upstream.len() {
        left.push(format!("reached upstream: {}", !a.upstream.is_empty()));
        right.push(format!("reached upstream: {}", !b.upstream.is_empty()));
    }
    format!("{} | {}", left.join("; "), right.join("; "))
}

fn answer(d: &Differential, port: u16, case: &str, req: &Request) -> Answer {
    let tag = format!("{case}@{port}");
    let r = req.clone().header("x-case", &tag).send(port).unwrap_or_else(|e| panic!("{case}: {e}"));
    let upstream =
        match d.upstream.requests().into_iter().find(|q| q.header_value("x-case").as_deref() == Some(tag.as_str())) {
            Some(q) => ["x-jwt-sub", "x-jwt-tenant", "x-jwt-payload", "authorization", "x-api-token"]
                .iter()
                .map(|h| (h.to_string(), q.header_value(h)))
                .collect(),
            None => vec![],
        };
    Answer {
        status: r.status,
        // Only jwt_authn's own answers are compared word for word (the upstream's echo shows the port).
        body: if r.status == 200 { String::new() } else { r.body_text() },
        www_authenticate: r
            .header("www-authenticate")
            .map(|v| v.replace(&format!("localhost:{port}"), "localhost:PORT")),
        upstream,
    }
}

/// `token` with the unused low bits of its signature's last base64url character set to `bits`
/// (RFC 4648 §3.5: a decoder may ignore them). Canonical when `bits` is 0.
fn respelled(token: &str, bits: u8) -> String {
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let sig_len = token.len() - token.rfind('.').unwrap() - 1;
    let unused = match sig_len % 4 {
        2 => 4,
        3 => 2,
        _ => panic!("a signature of {sig_len} characters has no unused bits"),
    };
    let last = URL.iter().position(|c| *c == token.as_bytes()[token.len() - 1]).unwrap() as u8;
    let mask = (1u8 << unused) - 1;
    assert_eq!(last & mask, 0, "not canonical to begin with");
    format!("{}{}", &token[..token.len() - 1], URL[usize::from(last | (bits & mask))] as char)
}

/// J6: four spellings of one signature each (unused bits set); the answer for each is native's.
fn base64url_spellings() -> Vec<(String, Request)> {
    let rs = token(Alg::RS256, &claims("spelling"));
    let hs = token(Alg::HS256, &claims_for(LOCAL_ISSUER, "spelling"));
    let mut cases = Vec::new();
    for bits in [0b0001, 0b0010, 0b0100, 0b1000] {
        cases.push((
            format!("base64url: RS256 signature, unused bits {bits:04b}"),
            bearer("/api/b64", &respelled(&rs, bits)),
        ));
    }
    for bits in [0b01, 0b10, 0b11] {
        cases.push((
            format!("base64url: HS256 signature, unused bits {bits:02b}"),
            Request::get("/local/b64").header("x-api-token", &format!("Token {}", respelled(&hs, bits))),
        ));
    }
    cases
}

/// The corpus: every algorithm, claims edge cases, token locations, rules, and every bad token.
fn differential_corpus() -> Vec<(String, Request)> {
    let now = jwt::now();
    let mut cases: Vec<(String, Request)> = Vec::new();
    let mut add = |name: String, r: Request| cases.push((name, r));
    for alg in Alg::ALL {
        let remote = token(alg, &jwt::with(claims(&format!("d-{}", alg.name())), json!({"org": {"tenant": "t1"}})));
        add(format!("{} remote bearer", alg.name()), bearer("/api/d", &remote));
        let local = token(alg, &claims_for(LOCAL_ISSUER, "d-local"));
        add(
            format!("{} local header", alg.name()),
            Request::get("/local/d").header("x-api-token", &format!("Token {local}")),
        );
        add(
            format!("{} local token on /any", alg.name()),
            Request::get("/any/d").header("x-api-token", &format!("Token {local}")),
        );
    }
    let base = claims("edge");
    let rs = |p: Value| token(Alg::RS256, &p);
    for (name, extra) in [
        ("no exp", json!({"exp": null})),
        ("no iat", json!({"iat": null})),
        ("no aud", json!({"aud": null})),
        ("aud list with ours", json!({"aud": ["a", AUDIENCE]})),
        ("aud other", json!({"aud": "other"})),
        ("aud empty list", json!({"aud": []})),
        ("aud with a trailing slash", json!({"aud": format!("{AUDIENCE}/")})),
        ("aud with scheme", json!({"aud": format!("https://{AUDIENCE}")})),
        ("no iss", json!({"iss": null})),
        ("iss with a trailing slash", json!({"iss": format!("{ISSUER}/")})),
        ("exp within skew", json!({"exp": now - 30})),
        ("exp past skew", json!({"exp": now - 90})),
        ("nbf within skew", json!({"nbf": now + 30})),
        ("nbf past skew", json!({"nbf": now + 90})),
        ("exp 0", json!({"exp": 0})),
        ("exp float", json!({"exp": (now + 100) as f64 + 0.5})),
        ("exp huge", json!({"exp": u64::MAX})),
        ("exp as a string of digits", json!({"exp": (now + 100).to_string()})),
        ("iat in the future", json!({"iat": now + 3600})),
        ("iat a string", json!({"iat": "x"})),
        ("sub a number", json!({"sub": 5})),
        ("jti a number", json!({"jti": 5})),
        ("nested claim a number", json!({"org": {"tenant": 42}})),
        ("nested claim an object", json!({"org": {"tenant": {"a": 1}}})),
        ("nested claim a bool", json!({"org": {"tenant": true}})),
        ("claim with unicode", json!({"sub": "ünï-çødé", "org": {"tenant": "日本"}})),
        ("claim with a newline", json!({"sub": "a\nb"})),
    ] {
        add(format!("claims: {name}"), bearer("/api/edge", &rs(jwt::with(base.clone(), extra))));
    }
    for (name, tok, _) in bad_tokens() {
        add(format!("bad: {name}"), bearer("/api/bad", &tok));
        add(format!("bad on /optional: {name}"), bearer("/optional/bad", &tok));
    }
    for (name, tok) in refused_by_the_filter_only() {
        add(format!("filter only: {name}"), bearer("/api/bad", &tok));
        add(format!("filter only on /optional: {name}"), bearer("/optional/bad", &tok));
    }
    let good = token(Alg::RS256, &claims("loc"));
    let bad = token(Alg::RS256, &jwt::with(claims("loc"), json!({"exp": now - 1000})));
    let local = token(Alg::ES256, &claims_for(LOCAL_ISSUER, "loc"));
    add("missing".into(), Request::get("/api/m"));
    add("missing with query".into(), Request::get("/api/m?x=1&y=2"));
    add("public".into(), Request::get("/public/p"));
    add("public with a bad token".into(), bearer("/public/p", "bad"));
    add("optional missing".into(), Request::get("/optional/o"));
    add("optional valid".into(), bearer("/optional/o", &good));
    add("access_token param".into(), Request::get(&format!("/api/p?access_token={good}")));
    add("access_token param, expired".into(), Request::get(&format!("/api/p?access_token={bad}")));
    add("bearer lowercase scheme".into(), Request::get("/api/s").header("authorization", &format!("bearer {good}")));
    add("bearer, two spaces".into(), Request::get("/api/s").header("authorization", &format!("Bearer  {good}")));
    add("bearer, nothing after".into(), Request::get("/api/s").header("authorization", "Bearer "));
    add("basic auth".into(), Request::get("/api/s").header("authorization", "Basic dTpw"));
    add(
        "two authorization headers (good, bad)".into(),
        bearer("/api/s", &good).header("authorization", &format!("Bearer {bad}")),
    );
    add(
        "two authorization headers (bad, good)".into(),
        bearer("/api/s", &bad).header("authorization", &format!("Bearer {good}")),
    );
    add("header and param (good, bad)".into(), bearer(&format!("/api/s?access_token={bad}"), &good));
    add("header and param (bad, good)".into(), bearer(&format!("/api/s?access_token={good}"), &bad));
    add("two params".into(), Request::get(&format!("/api/s?access_token={good}&access_token={bad}")));
    add("local: cookie".into(), Request::get("/local/c").header("cookie", &format!("session={local}")));
    add("local: two cookies".into(), Request::get("/local/c").header("cookie", &format!("session={local}; session=x")));
    add("local: param".into(), Request::get(&format!("/local/c?token={local}")));
    add("local: header without prefix".into(), Request::get("/local/c").header("x-api-token", &local));
    add("local: remote's token".into(), Request::get("/local/c").header("x-api-token", &format!("Token {good}")));
    add("any: nothing".into(), Request::get("/any/n"));
    add("any: remote's expired token".into(), bearer("/any/n", &bad));
    add("any: both (remote good, local bad)".into(), bearer("/any/n", &good).header("x-api-token", "Token x.y.z"));
    add("HEAD missing".into(), Request::get("/api/h").method("HEAD"));
    add("POST valid".into(), bearer("/api/post", &good).method("POST").body(b"{}"));
    add(
        "oversized token (9 KB, valid)".into(),
        bearer("/api/big", &token(Alg::RS256, &jwt::with(claims("big"), json!({"pad": "x".repeat(6500)})))),
    );
    add(
        "large token under the cap (7 KB)".into(),
        bearer("/api/big", &token(Alg::RS256, &jwt::with(claims("big"), json!({"pad": "x".repeat(4800)})))),
    );
    cases.extend(base64url_spellings());
    cases
}

#[test]
fn differential_same_answers_as_native_jwt_authn() {
    let mut d = start_differential();
    let corpus = differential_corpus();
    let mut mismatches = Vec::new();
    let mut expected_seen = Vec::new();
    for (name, req) in &corpus {
        let wasm = answer(&d, d.wasm_port, name, req);
        let theirs = answer(&d, d.native_port, name, req);
        let expected = EXPECTED_DIFFERENCES.iter().find(|(n, _)| n == name);
        match (wasm == theirs, expected) {
            (true, None) => {}
            (false, Some(_)) => expected_seen.push(name.clone()),
            (true, Some(_)) if native() => {}
            (true, Some((_, why))) => {
                mismatches.push(format!("| {name} | same answer, but listed as a deviation ({why}) | {wasm:?} |"))
            }
            (false, None) => mismatches.push(format!("| {name} | {} |", differences(&wasm, &theirs))),
        }
    }
    eprintln!(
        "differential: {} cases, {} the same, {} expected differences, {} mismatches",
        corpus.len(),
        corpus.len() - mismatches.len() - expected_seen.len(),
        expected_seen.len(),
        mismatches.len()
    );
    assert_eq!(d.envoy.exited(), None, "Envoy still runs");
    assert!(
        mismatches.is_empty(),
        "jwt-auth and jwt_authn answered differently ({} of {} cases):\n| case | jwt-auth | jwt_authn |\n|---|---|---|\n{}",
        mismatches.len(),
        corpus.len(),
        mismatches.join("\n")
    );
}

/// The corpus means something only if jwt_authn itself says yes and no to it as intended.
#[test]
fn differential_corpus_is_judged_by_native_as_intended() {
    let d = start_differential();
    let statuses: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
    for (name, req) in differential_corpus() {
        let a = answer(&d, d.native_port, &name, &req);
        statuses.lock().unwrap().push((name, a.status));
    }
    let statuses = statuses.lock().unwrap();
    let status = |n: &str| statuses.iter().find(|(x, _)| x == n).map(|(_, s)| *s).unwrap();
    for alg in Alg::ALL {
        if alg.is_hmac() {
            assert_eq!(status(&format!("{} local header", alg.name())), 200, "{alg:?}");
        } else {
            assert_eq!(status(&format!("{} remote bearer", alg.name())), 200, "{alg:?}");
        }
    }
    for (name, _, _) in bad_tokens() {
        assert_eq!(status(&format!("bad: {name}")), 401, "{name}");
    }
    assert_eq!(status("claims: aud other"), 403);
    assert_eq!(status("missing"), 401);
    assert_eq!(status("public"), 200);
    // jwt_authn ignores the unused bits of base64url (J6): every spelling passes, so jwt-auth's
    // differential equality above means it accepts them too.
    for (name, _) in base64url_spellings() {
        assert_eq!(status(&name), 200, "{name}");
    }
}

// ---- keys: weak keys, the JWKS JSON dialect ----

/// Replaces the `local` provider's inline JWKS with `jwks` (before any switch to jwt_authn).
fn with_local_jwks(jwks: String) -> Edit {
    Box::new(move |text| {
        let mut config = yaml_to_json(&text);
        for l in config["static_resources"]["listeners"].as_array_mut().expect("listeners") {
            for f in http_filters(l).iter_mut().filter(|f| f["name"] == "jwt-auth") {
                let value = &mut f["typed_config"]["config"]["configuration"]["value"];
                let mut plugin: Value = serde_json::from_str(value.as_str().expect("configuration")).unwrap();
                plugin["providers"]["local"]["local_jwks"]["inline_string"] = json!(jwks);
                *value = json!(plugin.to_string());
            }
        }
        config.to_string()
    })
}

/// J4/J9: a weak key in a JWKS is skipped here (warned about, counted), where jwt_authn uses
/// it: the Ed25519 identity point, for which R = B, s = 1 "signs" any payload, and an RSA key
/// under RFC 7518's 2048 bits. The other keys of the set keep working.
#[test]
fn weak_keys_are_skipped_where_jwt_authn_would_use_them() {
    let identity = [&[1u8][..], &[0u8; 31][..]].concat();
    let base_point: Vec<u8> = std::iter::once(0x58).chain([0x66; 31]).collect();
    let forged_signature = [&base_point[..], &[1u8][..], &[0u8; 31][..]].concat();
    let weak = json!({"kty": "OKP", "crv": "Ed25519", "kid": "legacy", "x": b64url(&identity)});
    let mut doc: Value = serde_json::from_str(&jwt::jwks(&jwt::LOCAL_KEYS)).unwrap();
    doc["keys"].as_array_mut().unwrap().insert(0, weak);
    let s = start_with(Mode::Serve, 1, Some(with_local_jwks(doc.to_string())));
    let forged = |sub: &str| {
        let payload = jwt::with(claims_for(LOCAL_ISSUER, sub), json!({}));
        format!(
            "{}.{}.{}",
            b64url(br#"{"alg":"EdDSA"}"#),
            b64url(payload.to_string().as_bytes()),
            b64url(&forged_signature)
        )
    };
    let r = s.send(&Request::get("/local/weak").header("x-api-token", &format!("Token {}", forged("admin"))));
    if native() {
        eprintln!(
            "JWT_AUTH_UNDER_TEST=native: jwt_authn answers {} to a token forged for an identity Ed25519 key",
            r.status
        );
        assert_eq!(r.status, 200, "jwt_authn 1.40 uses the identity key (it did when this test was written): {r}");
        return;
    }
    // Its kid-less token tries every other key of the set, none of which signed it.
    assert_401(&s, &r, "/local/weak", VERIFY_FAILS, "a token forged for the identity key");
    assert_eq!(s.envoy.stat("wasmcustom.jwt_auth.jwks_weak_keys"), 1);
    let log = s.envoy.log();
    assert!(log.contains(r#"provider local: JWKS key 0 (kid "legacy") skipped: Ed25519 key of small order"#), "{log}");
    for alg in [Alg::EdDSA, Alg::HS256, Alg::RS256] {
        let good = token(alg, &claims_for(LOCAL_ISSUER, "ok"));
        let r = s.send(&Request::get("/local/ok").header("x-api-token", &format!("Token {good}")));
        assert_eq!(r.status, 200, "{alg:?}: {r}");
    }
}

/// The JSON dialect of a JWKS: each document given as `local_jwks` to jwt_authn and to jwt-auth
/// (`envoy --mode validate`, which loads both filters' configurations); each must load in both or
/// be refused by both. Trailing commas come from Envoy's own test JWKS; the rest is what
/// protobuf's JSON parser (legacy mode, as Envoy runs it) allows and refuses beyond RFC 8259.
#[test]
fn local_jwks_json_dialect_is_jwt_authns() {
    let hmac = format!(r#""kty":"oct","kid":"h","k":"{}""#, b64url(b"0123456789abcdef0123456789abcdef"));
    let documents: Vec<(&str, String, bool)> = vec![
        ("strict JSON", format!(r#"{{"keys":[{{{hmac}}}]}}"#), true),
        ("trailing commas", format!(r#"{{"keys":[{{{hmac},}},],}}"#), true),
        ("single quotes and bare keys", format!("{{keys:[{{{}}}]}}", hmac.replace('"', "'")), true),
        ("a raw newline in a string", format!("{{\"keys\":[{{{hmac},\"note\":\"a\nb\"}}]}}"), true),
        ("two trailing commas", format!(r#"{{"keys":[{{{hmac}}},,]}}"#), false),
        ("a comment", format!("{{\"keys\":[{{{hmac}}}] /* c */}}"), false),
        ("a repeated key", format!(r#"{{"keys":[{{{hmac},"kty":"oct"}}]}}"#), false),
        ("NaN", format!(r#"{{"keys":[{{{hmac},"x":NaN}}]}}"#), false),
        (
            "99 arrays under the top object",
            format!(r#"{{"keys":[{{{hmac}}}],"x":{}{}}}"#, "[".repeat(99), "]".repeat(99)),
            true,
        ),
        (
            "100 arrays under the top object",
            format!(r#"{{"keys":[{{{hmac}}}],"x":{}{}}}"#, "[".repeat(100), "]".repeat(100)),
            false,
        ),
        ("text after the document", format!(r#"{{"keys":[{{{hmac}}}]}} x"#), false),
    ];
    let mut differ = Vec::new();
    for (name, doc, expected) in &documents {
        let plugin = json!({"providers": {"p": {"issuer": "i", "local_jwks": {"inline_string": doc}}}});
        let native_loads = native_jwt_authn_loads(&plugin);
        let ours = if native() {
            native_loads
        } else {
            e2e::envoy::validate_plugin_config("jwt-auth", &plugin.to_string()).is_ok()
        };
        // The corpus means something only if jwt_authn judges it as written here.
        assert_eq!(
            native_loads,
            *expected,
            "{name}: jwt_authn {}",
            if native_loads { "loads it" } else { "refuses it" }
        );
        if ours != native_loads {
            differ.push(format!("{name}: jwt_authn {native_loads}, jwt-auth {ours}"));
        }
    }
    assert!(differ.is_empty(), "loaded by one and not the other:\n{}", differ.join("\n"));
}

/// Whether `envoy --mode validate` accepts jwt_authn with this configuration.
fn native_jwt_authn_loads(plugin: &Value) -> bool {
    let mut typed = plugin.clone();
    typed["@type"] = json!("type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication");
    let config = json!({"static_resources": {"listeners": [{
    "name": "validate",
    "address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}},
    "filter_chains": [{"filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "validate",
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
            "http_filters": [
                {"name": "envoy.filters.http.jwt_authn", "typed_config": typed},
                {"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
            ]}}]}]}]}});
    e2e::envoy::validate_text(&config.to_string(), "native.json").is_ok()
}
