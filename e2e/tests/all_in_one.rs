//! envoy-configs/all-in-one.yaml (what `make demo` and docker compose run) serves traffic
//! through every filter it holds.

use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::http::Request;
use e2e::token_server::TokenServer;
use e2e::upstream::Upstream;
use e2e::{LISTENER_PORT, TOKEN_SERVER_PORT, UPSTREAM_PORT};

#[test]
fn all_in_one_serves_with_every_filter() {
    // token-fetch's token server (cluster token-server), before Envoy: it fetches at start.
    let tokens = TokenServer::start(0, 60).unwrap();
    let mut opts = EnvoyOptions::default();
    opts.preset_ports.insert(TOKEN_SERVER_PORT, tokens.port);
    let envoy = Envoy::start_with("all-in-one.yaml", opts).unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
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
    assert_eq!(seen[0].header_value("authorization").as_deref(), Some("Bearer tok-1"), "{:?}", seen[0]);
    assert!(tokens.calls() >= 1);
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
    // Every module says which version it is when it starts.
    let started = format!("security-headers {}: configured", env!("CARGO_PKG_VERSION"));
    assert!(envoy.log().contains(&started), "{started:?} not logged:\n{}", envoy.log());
}
