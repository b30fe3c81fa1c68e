//! `make demo`: the demo upstream and a real Envoy running envoy-configs/all-in-one.yaml on
//! localhost, in the foreground. Envoy is this process's child; Ctrl-C stops both.

use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::jwks_server::JwksServer;
use e2e::jwt::{self, Alg};
use e2e::token_server::TokenServer;
use e2e::upstream::Upstream;
use e2e::{ADMIN_PORT, JWKS_PORT, LISTENER_PORT, TLS_LISTENER_PORT, TOKEN_SERVER_PORT, UPSTREAM_PORT};

fn main() {
    let upstream = match Upstream::start(UPSTREAM_PORT) {
        Ok(u) => u,
        Err(e) => fail(&format!("demo upstream: {e} (is another demo running?)")),
    };
    // token-fetch's token server: 60-second tokens, refreshed every 48 s.
    let tokens = match TokenServer::start(TOKEN_SERVER_PORT, 60) {
        Ok(t) => t,
        Err(e) => fail(&format!("demo token server: {e} (is another demo running?)")),
    };
    // jwt-auth's JWKS server: the committed test keys' public JWKS.
    let jwks = match JwksServer::start(JWKS_PORT, &jwt::jwks(&jwt::REMOTE_KEYS)) {
        Ok(j) => j,
        Err(e) => fail(&format!("demo JWKS server: {e} (is another demo running?)")),
    };
    let demo_token = jwt::token(Alg::RS256, &jwt::claims("demo-user"));
    let opts = EnvoyOptions { fixed_ports: true, log_to_terminal: true, log_level: "warn", ..EnvoyOptions::default() };
    let mut envoy = match Envoy::start_with("all-in-one.yaml", opts) {
        Ok(e) => e,
        Err(e) => fail(&e),
    };
    let (http, https, admin) = (LISTENER_PORT, TLS_LISTENER_PORT, ADMIN_PORT);
    println!(
        "
Envoy {} is serving envoy-configs/all-in-one.yaml; demo upstream on 127.0.0.1:{}, token server on 127.0.0.1:{},
JWKS server on 127.0.0.1:{}.
Try (from the repository root):

  # security headers added, upstream's Server / X-Powered-By removed; no HSTS over plain HTTP
  curl -si http://localhost:{http}/api/items

  # over HTTPS (demo certificate): HSTS too
  curl -si --cacert envoy-configs/certs/demo-ca.crt https://localhost:{https}/api/items

  # per-path overrides: relaxed CSP under /docs, SAMEORIGIN framing for /embed/<id>
  curl -si http://localhost:{http}/docs/index.html
  curl -si http://localhost:{http}/embed/widget-1

  # an upstream's own CSP is kept (append_action ADD_IF_ABSENT)
  curl -si -H 'x-echo-header: content-security-policy: script-src self' http://localhost:{http}/app

  # token-fetch: the upstream's echo shows the injected `authorization: Bearer tok-N`
  curl -s http://localhost:{http}/api/items | grep -o '\"authorization\",\"[^\"]*\"'

  # jwt-auth: /admin needs a JWT (401 `Jwt is missing` without); with this one-hour test token
  # the upstream's echo shows the verified `x-jwt-sub` and no client Authorization
  curl -si http://localhost:{http}/admin/users
  curl -s -H 'authorization: Bearer {demo_token}' http://localhost:{http}/admin/users

  # the filters' stats
  curl -s http://localhost:{admin}/stats | grep wasmcustom

Ctrl-C stops Envoy and the upstream.
",
        e2e::envoy_bin().display(),
        upstream.port,
        tokens.port,
        jwks.port
    );
    let status = envoy.wait();
    drop(upstream);
    drop(tokens);
    drop(jwks);
    eprintln!("Envoy exited: {status:?}");
}

fn fail(message: &str) -> ! {
    eprintln!("demo: {message}");
    std::process::exit(1);
}
