//! jwt-auth in a real Envoy, on envoy-configs/jwt-auth.yaml.

use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::http::Request;
use e2e::upstream::Upstream;
use e2e::{LISTENER_PORT, UPSTREAM_PORT};

#[test]
fn marks_responses_in_envoy() {
    let envoy = Envoy::start("jwt-auth.yaml").unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    let r = Request::get("/").send(envoy.port(LISTENER_PORT)).unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("x-jwt-auth").as_deref(), Some("on"), "{r}");
    assert_eq!(upstream.requests().len(), 1);
    assert_eq!(envoy.wait_stat("wasmcustom.jwt_auth.responses_marked", 1), 1);
}

#[test]
fn bad_config_is_refused_naming_the_field() {
    let opts = EnvoyOptions {
        edit: Some(Box::new(|config: String| config.replace("value: \"{}\"", "value: '{\"colour\": 1}'"))),
        ..EnvoyOptions::default()
    };
    let mut envoy = Envoy::spawn("jwt-auth.yaml", &opts).unwrap();
    let status = envoy.wait_exit(std::time::Duration::from_secs(30));
    let log = envoy.log();
    assert!(status.is_some_and(|s| !s.success()), "Envoy kept running:\n{log}");
    assert!(log.contains("jwt-auth: invalid configuration, refusing to start: field `colour`"), "{log}");
}
