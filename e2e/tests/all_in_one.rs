//! envoy-configs/all-in-one.yaml (what `make demo` and docker compose run) serves traffic
//! through every filter it holds.

use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::http::Request;
use e2e::jwks_server::JwksServer;
use e2e::jwt::{self, Alg};
use e2e::token_server::TokenServer;
use e2e::upstream::Upstream;
use e2e::{JWKS_PORT, LISTENER_PORT, TOKEN_SERVER_PORT, UPSTREAM_PORT};

#[test]
fn all_in_one_serves_with_every_filter() {
    // token-fetch's token server (cluster token-server), before Envoy: it fetches at start.
    let tokens = TokenServer::start(0, 60).unwrap();
    // jwt-auth's JWKS server (cluster jwks), before Envoy for the same reason.
    let jwks = JwksServer::start(0, &jwt::jwks(&jwt::REMOTE_KEYS)).unwrap();
    let mut opts = EnvoyOptions::default();
    opts.preset_ports.insert(TOKEN_SERVER_PORT, tokens.port);
    opts.preset_ports.insert(JWKS_PORT, jwks.port);
    let envoy = Envoy::start_with("all-in-one.yaml", opts).unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    // The service token and the JWKS are fetched at start; requests before them wait (up to
    // 3 s and 2.5 s), which token_fetch.rs and jwt_auth.rs test. Here: what serves after.
    assert!(envoy.wait_stat("wasmcustom.token_fetch.fetch_success", 1) >= 1, "the service token");
    assert!(envoy.wait_stat("wasmcustom.jwt_auth.jwks_fetch_success", 1) >= 1, "the JWKS");
    let r = Request::get("/api/items").send(envoy.port(LISTENER_PORT)).unwrap();
    assert_eq!(r.status, 200, "{r}");
    // security-headers
    assert_eq!(r.header("x-content-type-options").as_deref(), Some("nosniff"), "{r}");
    assert!(!r.has_header("server") && !r.has_header("x-powered-by"), "{r}");
    // rate-limit
    assert_eq!(r.header("ratelimit-policy").as_deref(), Some("\"per_client\";q=100;w=2"), "{r}");
    // token-fetch: the upstream got the service token. (The upstream records a request just
    // after answering it: give the record a moment.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while upstream.requests().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    // A token the server issued (tok-1 unless a fetch timed out on a loaded machine).
    let issued: Vec<String> = tokens.issued_tokens().into_iter().map(|t| format!("Bearer {}", t.name)).collect();
    let auth = seen[0].header_value("authorization").unwrap_or_default();
    assert!(issued.contains(&auth), "{auth:?} is not one of the tokens issued, {issued:?}");
    // body-logger (last before the router): /api requests are logged, their bodies passed on.
    let r = Request::get("/api/login")
        .method("POST")
        .header("content-type", "application/json")
        .body(br#"{"user":"ann","password":"all-in-one-secret"}"#)
        .send(envoy.port(LISTENER_PORT))
        .unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(upstream.requests()[1].body, br#"{"user":"ann","password":"all-in-one-secret"}"#);
    assert!(envoy.wait_stat("wasmcustom.body_logger.logged", 2) >= 2);
    assert!(envoy.wait_stat("wasmcustom.body_logger.redactions", 1) >= 1);
    assert!(!envoy.log().contains("all-in-one-secret"), "{}", envoy.log());
    // jwt-auth: /admin needs a JWT (401 without, security-headers' headers on the 401 too); with
    // one, the upstream sees the verified subject and the service token, not the client's.
    let r = Request::get("/admin/users").send(envoy.port(LISTENER_PORT)).unwrap();
    assert_eq!(r.status, 401, "{r}");
    assert_eq!(r.body_text(), "Jwt is missing", "{r}");
    assert_eq!(r.header("x-content-type-options").as_deref(), Some("nosniff"), "{r}");
    let t = jwt::token(Alg::RS256, &jwt::claims("admin-ann"));
    let r = Request::get("/admin/users")
        .header("authorization", &format!("Bearer {t}"))
        .send(envoy.port(LISTENER_PORT))
        .unwrap();
    assert_eq!(r.status, 200, "{r}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while upstream.requests().len() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let seen = upstream.requests().into_iter().find(|q| q.path == "/admin/users").expect("reached the upstream");
    assert_eq!(seen.header_value("x-jwt-sub").as_deref(), Some("admin-ann"), "{seen:?}");
    assert!(seen.header_value("authorization").is_some_and(|a| a.starts_with("Bearer tok-")), "{seen:?}");
    // One JWKS fetch for the proxy; any other call was the retry of a failed one.
    let (success, failed) =
        (envoy.stat("wasmcustom.jwt_auth.jwks_fetch_success"), envoy.stat("wasmcustom.jwt_auth.jwks_fetch_failed"));
    assert_eq!((success, jwks.calls() as u64), (1, 1 + failed), "JWKS fetches: {success} ok, {failed} failed");
    // Every module says which version it is when it starts.
    let started = format!("security-headers {}: configured", env!("CARGO_PKG_VERSION"));
    assert!(envoy.log().contains(&started), "{started:?} not logged:\n{}", envoy.log());
}
