//! envoy-configs/all-in-one.yaml (what `make demo` and docker compose run) serves traffic
//! through every filter it holds.

use e2e::envoy::Envoy;
use e2e::http::Request;
use e2e::upstream::Upstream;
use e2e::{LISTENER_PORT, UPSTREAM_PORT};

#[test]
fn all_in_one_serves_with_every_filter() {
    let envoy = Envoy::start("all-in-one.yaml").unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    let r = Request::get("/api/items").send(envoy.port(LISTENER_PORT)).unwrap();
    assert_eq!(r.status, 200, "{r}");
    // security-headers
    assert_eq!(r.header("x-content-type-options").as_deref(), Some("nosniff"), "{r}");
    assert!(!r.has_header("server") && !r.has_header("x-powered-by"), "{r}");
    assert_eq!(upstream.requests().len(), 1);
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
}
