//! gRPC clients through every filter: a real tonic client (HTTP/2, prior knowledge) calls
//! `e2e.Echo` ([`e2e::grpc_server`], an h2c upstream) through Envoy on each shipped config.
//!
//! - Every denial a filter can give reaches the client as the `grpc-status` Envoy's native
//!   filters give: Envoy turns a local reply to a gRPC request into a trailers-only answer
//!   (`:status 200`, `grpc-status` from `Grpc::Utility::httpToGrpcStatus`, `grpc-message` the
//!   reply's body) — 400 → 13 INTERNAL, 401 → 16 UNAUTHENTICATED, 403 → 7 PERMISSION_DENIED,
//!   429/502/503/504 → 14 UNAVAILABLE, any other (500) → 2 UNKNOWN. The filter's extra headers
//!   (`www-authenticate`, `retry-after`, `x-ratelimit-*`) are headers of that answer, which a
//!   client reads as the status's metadata.
//! - Allowed unary and server-streaming calls arrive untouched: every message, the custom
//!   trailer, `grpc-status: 0`.
//! - Controls: the same call with the filter removed passes; Envoy's native filter for the
//!   same denial (jwt_authn, local_ratelimit, ratelimit) gives the same `grpc-status`.
//! - body-logger logs a frame summary of gRPC bodies, never the messages.

use e2e::envoy::{edit_plugin_config, without_http_filter, Envoy, EnvoyOptions};
use e2e::grpc_server::{http2_upstream, GrpcClient, GrpcServer, Outcome, STREAM, STREAM_TRAILER, UNARY};
use e2e::jwks_server::JwksServer;
use e2e::jwt::{self, claims, token, Alg};
use e2e::redis::Redis;
use e2e::rls_server::{RlsLimit, RlsServer, Unit};
use e2e::token_server::TokenServer;
use e2e::{JWKS_PORT, LISTENER_PORT, TOKEN_SERVER_PORT, UPSTREAM_PORT};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tonic::Code;

type Edit = Box<dyn Fn(String) -> String>;

/// Envoy on `config` with the `upstream` cluster over HTTP/2, `edit` applied first, then the
/// gRPC upstream on its port.
fn start(config: &str, edit: Option<Edit>, preset: &[(u16, u16)]) -> (Envoy, GrpcServer) {
    let mut opts = EnvoyOptions {
        edit: Some(Box::new(move |text: String| {
            let text = match &edit {
                Some(e) => e(text),
                None => text,
            };
            http2_upstream(&text).expect("a cluster `upstream`")
        })),
        ..EnvoyOptions::default()
    };
    for (template, port) in preset {
        opts.preset_ports.insert(*template, *port);
    }
    let envoy = Envoy::start_with(config, opts).unwrap();
    let upstream = GrpcServer::start(envoy.port(UPSTREAM_PORT)).unwrap();
    (envoy, upstream)
}

fn client(envoy: &Envoy) -> GrpcClient {
    GrpcClient::connect(envoy.port(LISTENER_PORT)).unwrap()
}

/// A metadata value of a status (the trailers-only answer's headers).
fn meta(status: &tonic::Status, name: &str) -> Option<String> {
    status.metadata().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[track_caller]
fn assert_denied(outcome: &Outcome, code: Code, message: &str, what: &str) {
    let s = outcome.status();
    assert_eq!((s.code(), s.message()), (code, message), "{what}: {s:?}");
    let types: Vec<&str> = s.metadata().get_all("content-type").iter().filter_map(|v| v.to_str().ok()).collect();
    // Envoy's content type, not the filter's `text/plain` beside it.
    assert_eq!(types, ["application/grpc"], "{what}: {s:?}");
}

/// A unary call and a 5-message stream pass untouched. The response headers of the stream.
#[track_caller]
fn assert_untouched(c: &mut GrpcClient, metadata: &[(&str, &str)], what: &str) -> tonic::metadata::MetadataMap {
    match c.unary("hello", metadata) {
        Outcome::Ok { replies, .. } => {
            assert_eq!(replies.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(), ["hello"], "{what}")
        }
        Outcome::Err(s) => panic!("{what}: unary: {s:?}"),
    }
    match c.stream("item", 5, metadata) {
        Outcome::Ok { replies, headers, trailers } => {
            let texts: Vec<String> = replies.iter().map(|r| r.text.clone()).collect();
            assert_eq!(texts, (0..5).map(|i| format!("item {i}")).collect::<Vec<_>>(), "{what}");
            let trailers = trailers.unwrap_or_else(|| panic!("{what}: no trailers"));
            assert_eq!(trailers.get("grpc-status").and_then(|v| v.to_str().ok()), Some("0"), "{what}");
            assert_eq!(trailers.get(STREAM_TRAILER.0).and_then(|v| v.to_str().ok()), Some(STREAM_TRAILER.1), "{what}");
            headers
        }
        Outcome::Err(s) => panic!("{what}: stream: {s:?}"),
    }
}

/// `config` with the HTTP filter `name` replaced by the YAML list item `item` (its first line
/// `- name: …`, the rest indented two more), at the same indentation.
fn replace_http_filter(config: &str, name: &str, item: &str) -> String {
    let at = config.find(&format!("- name: {name}\n")).expect("filter");
    let line_start = config[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent = " ".repeat(at - line_start);
    let without = without_http_filter(config, name).unwrap();
    let item: String = item.lines().map(|l| format!("{indent}{l}\n")).collect();
    format!("{}{item}{}", &without[..line_start], &without[line_start..])
}

/// The plugin JSON of the Wasm filter `name` in `config`.
fn plugin_json(config: &str, name: &str) -> Value {
    let mut out = Value::Null;
    edit_plugin_config(config, name, |c| out = c.clone()).expect("plugin config");
    out
}

// ---- jwt-auth ----

/// jwt-auth, then native jwt_authn given the same JSON: missing token 401 → 16, a bad
/// signature 401 → 16, a disallowed audience 403 → 7, each with jwt_authn's message and the
/// `www-authenticate` challenge; none reaches the upstream; a valid token passes unary and
/// streaming calls untouched. Control: without the filter the token-less call passes.
#[test]
fn jwt_auth_denials_are_grpc_statuses_like_jwt_authn() {
    let valid = token(Alg::RS256, &claims("grpc-user"));
    let other = token(Alg::RS256, &claims("someone-else"));
    // Header and payload of one token, signature of another.
    let forged = format!("{}.{}", valid.rsplit_once('.').unwrap().0, other.rsplit_once('.').unwrap().1);
    let wrong_aud = token(Alg::RS256, &jwt::with(claims("grpc-user"), json!({"aud": "other.example.com"})));
    for native in [false, true] {
        let what = if native { "jwt_authn" } else { "jwt-auth" };
        let jwks = JwksServer::start(0, &jwt::jwks(&jwt::REMOTE_KEYS)).unwrap();
        let edit: Option<Edit> = native.then(|| -> Edit {
            Box::new(|text: String| {
                let mut typed = plugin_json(&text, "jwt-auth");
                for own in ["max_token_bytes", "unknown_kid_refetch_interval"] {
                    typed.as_object_mut().map(|o| o.remove(own));
                }
                typed["@type"] =
                    json!("type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication");
                let item = format!("- name: envoy.filters.http.jwt_authn\n  typed_config: {typed}");
                replace_http_filter(&text, "jwt-auth", &item)
            })
        });
        let (envoy, upstream) = start("jwt-auth.yaml", edit, &[(JWKS_PORT, jwks.port)]);
        let mut c = client(&envoy);
        let cases: [(&str, Option<&str>, Code, &str, bool); 3] = [
            ("missing", None, Code::Unauthenticated, "Jwt is missing", false),
            ("forged", Some(&forged), Code::Unauthenticated, "Jwt verification fails", true),
            ("audience", Some(&wrong_aud), Code::PermissionDenied, "Audiences in Jwt are not allowed", true),
        ];
        for (case, t, code, message, invalid_token) in cases {
            let bearer = t.map(|t| format!("Bearer {t}"));
            let md: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
            for outcome in [c.unary("x", &md), c.stream("x", 3, &md)] {
                assert_denied(&outcome, code, message, &format!("{what} {case}"));
                let challenge = meta(outcome.status(), "www-authenticate").unwrap_or_default();
                assert!(challenge.starts_with("Bearer realm=\"http://"), "{what} {case}: {challenge}");
                assert_eq!(challenge.contains("error=\"invalid_token\""), invalid_token, "{what} {case}: {challenge}");
            }
        }
        assert!(upstream.calls().is_empty(), "{what}: a denied call reached the upstream");
        let bearer = format!("Bearer {valid}");
        assert_untouched(&mut c, &[("authorization", &bearer)], what);
        let calls = upstream.calls();
        assert_eq!(calls.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), [UNARY, STREAM], "{what}");
        assert_eq!(calls[0].header("x-jwt-sub").as_deref(), Some("grpc-user"), "{what}");
        assert_eq!(calls[0].header("authorization"), None, "{what}: forward is false");
    }
    // Control: the filter removed, the token-less call passes.
    let (envoy, _upstream) =
        start("jwt-auth.yaml", Some(Box::new(|t: String| without_http_filter(&t, "jwt-auth").unwrap())), &[]);
    assert_untouched(&mut client(&envoy), &[], "without jwt-auth");
}

// ---- rate-limit ----

/// Local rules: allowed calls pass untouched with `x-ratelimit-*` response headers; over the
/// bucket 429 → 14 "rate limited" with the `x-ratelimit-*` headers on the trailers-only
/// answer; a duplicate descriptor header 400 → 13. Controls: Envoy's local_ratelimit over its
/// bucket gives 14 too; without the filter the same calls pass.
#[test]
fn rate_limit_local_denials_are_grpc_statuses_like_local_ratelimit() {
    // Each case its own client address (x-forwarded-for, one trusted hop): its own bucket.
    let edit = |text: String| {
        edit_plugin_config(&text, "rate-limit", |c| {
            c["rules"] = json!([
                {"name": "per_client", "actions": [{"remote_address": {}}],
                 "token_bucket": {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval": "3600s"}},
                {"name": "tenant", "match": {"prefix": "/e2e.Echo/Unary"},
                 "actions": [{"request_headers": {"header_name": "x-tenant", "descriptor_key": "tenant"}}],
                 "token_bucket": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "60s"}}
            ]);
        })
        .unwrap()
    };
    let (envoy, upstream) = start("rate-limit.yaml", Some(Box::new(edit)), &[]);
    let mut c = client(&envoy);
    let a = [("x-forwarded-for", "192.0.2.1")];
    let headers = assert_untouched(&mut c, &a, "rate-limit, within the bucket");
    assert_eq!(headers.get("x-ratelimit-remaining").and_then(|v| v.to_str().ok()), Some("0"), "{headers:?}");
    for outcome in [c.unary("x", &a), c.stream("x", 3, &a)] {
        assert_denied(&outcome, Code::Unavailable, "rate limited", "over the bucket");
        let s = outcome.status();
        assert_eq!(meta(s, "x-ratelimit-limit").as_deref(), Some("2"), "{s:?}");
        assert_eq!(meta(s, "x-ratelimit-remaining").as_deref(), Some("0"), "{s:?}");
        assert!(meta(s, "retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n > 0)), "{s:?}");
        assert!(meta(s, "ratelimit").is_some(), "{s:?}");
    }
    assert_eq!(upstream.calls().len(), 2, "the denied calls never reached the upstream");
    // Two values of the header a rule reads: 400 → INTERNAL.
    let dup = c.unary("x", &[("x-forwarded-for", "192.0.2.2"), ("x-tenant", "a"), ("x-tenant", "b")]);
    assert_denied(&dup, Code::Internal, "duplicate x-tenant header", "duplicate descriptor header");
    drop(envoy);

    // Control: native local_ratelimit over its bucket gives the same status.
    let native = |text: String| {
        let item = "- name: envoy.filters.http.local_ratelimit\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n    stat_prefix: native_rl\n    token_bucket: { max_tokens: 2, tokens_per_fill: 1, fill_interval: 3600s }\n    filter_enabled: { default_value: { numerator: 100, denominator: HUNDRED } }\n    filter_enforced: { default_value: { numerator: 100, denominator: HUNDRED } }";
        replace_http_filter(&text, "rate-limit", item)
    };
    let (envoy, _upstream) = start("rate-limit.yaml", Some(Box::new(native)), &[]);
    let mut c = client(&envoy);
    assert_untouched(&mut c, &[], "local_ratelimit, within the bucket");
    assert_denied(&c.unary("x", &[]), Code::Unavailable, "local_rate_limited", "local_ratelimit over the bucket");
    drop(envoy);

    // Control: without the filter, a third call from one client passes.
    let (envoy, _upstream) =
        start("rate-limit.yaml", Some(Box::new(|t: String| without_http_filter(&t, "rate-limit").unwrap())), &[]);
    let mut c = client(&envoy);
    assert_untouched(&mut c, &a, "without rate-limit");
    assert!(matches!(c.unary("x", &a), Outcome::Ok { .. }));
}

/// Global rules: the service's OVER_LIMIT 429 → 14 "rate limited"; the service down with
/// `failure_mode_deny` answers `status_on_error`: its default 500 → 2 UNKNOWN, 503 → 14.
/// Control: native `ratelimit` with `failure_mode_deny` and the service down gives 2 too.
#[test]
fn rate_limit_global_denials_are_grpc_statuses_like_ratelimit() {
    let redis = Redis::start().unwrap();
    let rls = RlsServer::start(0, &redis.url()).unwrap();
    rls.set_limits(&[RlsLimit::new("grpc", 2, Unit::Hour).when("generic_key", "api")]).unwrap();
    let edit = |failure_mode_deny: bool, status_on_error: Option<u16>| -> Edit {
        Box::new(move |text: String| {
            edit_plugin_config(&text, "rate-limit", |c| {
                c["domain"] = "grpc".into();
                c["timeout"] = "2s".into();
                c["failure_mode_deny"] = failure_mode_deny.into();
                if let Some(code) = status_on_error {
                    c["status_on_error"] = json!({ "code": code });
                }
                c["rules"] =
                    json!([{"name": "api", "actions": [{"generic_key": {"descriptor_value": "api"}}], "global": {}}]);
            })
            .unwrap()
        })
    };
    let (envoy, upstream) = start("rate-limit-global.yaml", Some(edit(false, None)), &[(8081, rls.port())]);
    let mut c = client(&envoy);
    assert_untouched(&mut c, &[], "rate-limit global, within the limit");
    let over = c.stream("x", 3, &[]);
    assert_denied(&over, Code::Unavailable, "rate limited", "global OVER_LIMIT");
    assert_eq!(meta(over.status(), "x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(upstream.calls().len(), 2);
    drop(envoy);
    drop(rls);

    // The service down (nothing listens on its port).
    for (status_on_error, code) in [(None, Code::Unknown), (Some(503), Code::Unavailable)] {
        let (envoy, _upstream) = start("rate-limit-global.yaml", Some(edit(true, status_on_error)), &[]);
        let outcome = client(&envoy).unary("x", &[]);
        assert_denied(
            &outcome,
            code,
            "rate limit service unavailable",
            &format!("status_on_error {status_on_error:?}"),
        );
    }
    let native = |text: String| {
        text.replace("failure_mode_deny: false", "failure_mode_deny: true").replace("domain: edge\n", "domain: grpc\n")
    };
    let (envoy, _upstream) = start("rate-limit-native.yaml", Some(Box::new(native)), &[]);
    // The shipped descriptor needs `x-api-key`; the service's port has nothing listening.
    let outcome = client(&envoy).unary("x", &[("x-api-key", "k")]);
    assert_eq!(outcome.status().code(), Code::Unknown, "native ratelimit, service down: {outcome:?}");
}

// ---- token-fetch ----

/// No token from the token endpoint: 503 → 14 with the filter's message and `retry-after`;
/// with the endpoint up the calls pass untouched, the upstream sees the token. Control: without
/// the filter, the call passes with the endpoint down.
#[test]
fn token_fetch_failure_is_unavailable() {
    // Nothing listens on the token endpoint's port.
    let (envoy, upstream) = start("token-fetch.yaml", None, &[]);
    let mut c = client(&envoy);
    for outcome in [c.unary("x", &[]), c.stream("x", 2, &[])] {
        assert_denied(
            &outcome,
            Code::Unavailable,
            "token-fetch: no valid credential for the upstream is available; retry later",
            "token endpoint down",
        );
        assert_eq!(meta(outcome.status(), "retry-after").as_deref(), Some("1"));
    }
    assert!(upstream.calls().is_empty());
    drop(envoy);

    let tokens = TokenServer::start(0, 3600).unwrap();
    let (envoy, upstream) = start("token-fetch.yaml", None, &[(TOKEN_SERVER_PORT, tokens.port)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut c = client(&envoy);
    // The first token may still be on its way: the filter holds the call until it comes.
    while tokens.issued() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_untouched(&mut c, &[], "token-fetch with a token");
    let auth = upstream.calls()[0].header("authorization").unwrap_or_default();
    assert!(auth.starts_with("Bearer "), "{auth}");

    let (envoy, _upstream) =
        start("token-fetch.yaml", Some(Box::new(|t: String| without_http_filter(&t, "token-fetch").unwrap())), &[]);
    assert_untouched(&mut client(&envoy), &[], "without token-fetch");
}

// ---- security-headers ----

/// security-headers denies nothing: calls pass untouched with its headers added to the
/// response headers; on a trailers-only answer (the upstream's UNIMPLEMENTED) they are added
/// to its headers, and the status stays the upstream's.
#[test]
fn security_headers_add_headers_and_change_no_status() {
    let (envoy, _upstream) = start("security-headers.yaml", None, &[]);
    let mut c = client(&envoy);
    let headers = assert_untouched(&mut c, &[], "security-headers");
    assert_eq!(headers.get("x-content-type-options").and_then(|v| v.to_str().ok()), Some("nosniff"), "{headers:?}");
    // A method the upstream lacks: its own trailers-only UNIMPLEMENTED.
    let missing = c.unary_at("/e2e.Echo/Missing", "x", &[]);
    let missing = missing.status();
    assert_eq!(missing.code(), Code::Unimplemented, "{missing:?}");
    assert_eq!(meta(missing, "x-content-type-options").as_deref(), Some("nosniff"), "{missing:?}");
}

// ---- body-logger ----

/// body-logger logs each direction of a gRPC call as a frame summary: one message each way for
/// a unary call, five back for a stream, whose response ends complete on its trailers; the
/// message text is never in the line. The calls pass untouched.
#[test]
fn body_logger_summarises_grpc_frames() {
    let (envoy, _upstream) = start("body-logger.yaml", None, &[]);
    let mut c = client(&envoy);
    assert_untouched(&mut c, &[], "body-logger");
    let lines = wait_lines(&envoy, 2);
    let unary = lines.iter().find(|l| l["path"] == UNARY).expect("unary line");
    let stream = lines.iter().find(|l| l["path"] == STREAM).expect("stream line");
    let summary = |l: &Value, d: &str| {
        let g = &l[d]["grpc"];
        (g["messages"].as_u64(), g["message_bytes"].as_u64(), l[d]["bytes"].as_u64())
    };
    // Protobuf sizes: `text` is tag, length, bytes; `count` and `index` 2 bytes when not 0.
    // Unary: "hello" both ways (7 bytes). Stream: "item" and count 5 (8 bytes) up; "item 0"
    // (8), then "item 1".."item 4" with their index (10 each) down. Each message adds a 5-byte
    // prefix to the direction's `bytes`.
    assert_eq!(summary(unary, "request"), (Some(1), Some(7), Some(12)), "{unary}");
    assert_eq!(summary(unary, "response"), (Some(1), Some(7), Some(12)), "{unary}");
    assert_eq!(summary(stream, "request"), (Some(1), Some(8), Some(13)), "{stream}");
    assert_eq!(summary(stream, "response"), (Some(5), Some(48), Some(73)), "{stream}");
    for l in [unary, stream] {
        for d in ["request", "response"] {
            assert_eq!(l[d]["body"], Value::Null, "{l}");
            assert_eq!(l[d]["grpc"]["partial"], false, "{l}");
            assert_eq!(l[d]["grpc"]["compressed"], 0, "{l}");
            assert_eq!(l[d]["complete"], true, "{l}");
        }
        assert!(!l.to_string().contains("hello") && !l.to_string().contains("item "), "{l}");
    }
    drop(envoy);

    // Control: `grpc_frames` off and `application/*` listed, the messages are logged as text.
    let edit = |text: String| {
        edit_plugin_config(&text, "body-logger", |c| {
            c["grpc_frames"] = false.into();
            c["content_types"] = json!(["application/*"]);
        })
        .unwrap()
    };
    let (envoy, _upstream) = start("body-logger.yaml", Some(Box::new(edit)), &[]);
    assert!(matches!(client(&envoy).unary("hello", &[]), Outcome::Ok { .. }));
    let line = wait_lines(&envoy, 1).remove(0);
    assert!(line["request"]["grpc"].is_null(), "{line}");
    assert!(line["request"]["body"].as_str().is_some_and(|b| b.contains("hello")), "{line}");
}

/// The filter's lines in Envoy's log, waiting (bounded) for at least `n`.
fn wait_lines(envoy: &Envoy, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines: Vec<Value> = envoy
            .log()
            .lines()
            .filter(|l| l.contains("[wasm]") && l.contains("\"request_id\""))
            .filter_map(|l| l.find('{').and_then(|i| serde_json::from_str(&l[i..]).ok()))
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- all five ----

/// all-in-one.yaml: the five filters chained. A token-less call is jwt-auth's 401 → 16, with
/// security-headers' headers on the trailers-only answer (it runs first, so it sees the local
/// reply); a valid call passes untouched through all five.
#[test]
fn all_five_chained() {
    let jwks = JwksServer::start(0, &jwt::jwks(&jwt::REMOTE_KEYS)).unwrap();
    let tokens = TokenServer::start(0, 3600).unwrap();
    // The shipped rules guard and log /admin and /api only: here every gRPC method.
    let edit = |text: String| {
        let text = edit_plugin_config(&text, "jwt-auth", |c| {
            c["rules"] = json!([{"match": {"prefix": "/e2e.Echo/"}, "requires": {"provider_name": "demo"}}]);
        })
        .unwrap();
        edit_plugin_config(&text, "body-logger", |c| c["paths"] = json!([])).unwrap()
    };
    let (envoy, upstream) =
        start("all-in-one.yaml", Some(Box::new(edit)), &[(JWKS_PORT, jwks.port), (TOKEN_SERVER_PORT, tokens.port)]);
    let mut c = client(&envoy);
    let denied = c.unary("x", &[]);
    assert_denied(&denied, Code::Unauthenticated, "Jwt is missing", "all-in-one, no token");
    assert_eq!(meta(denied.status(), "x-content-type-options").as_deref(), Some("nosniff"), "{denied:?}");
    let bearer = format!("Bearer {}", token(Alg::RS256, &claims("grpc-user")));
    let headers = assert_untouched(&mut c, &[("authorization", &bearer)], "all-in-one");
    assert!(headers.get("ratelimit").is_some(), "{headers:?}");
    assert_eq!(upstream.calls().len(), 2);
    assert_eq!(
        wait_lines(&envoy, 2).iter().filter(|l| l["response"]["grpc"]["messages"].as_u64().is_some()).count(),
        2
    );
}
