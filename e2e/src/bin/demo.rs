//! `make demo`: the demo upstream and a real Envoy running envoy-configs/all-in-one.yaml on
//! localhost, in the foreground. Envoy is this process's child; Ctrl-C stops both.

use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::token_server::TokenServer;
use e2e::upstream::Upstream;
use e2e::{ADMIN_PORT, LISTENER_PORT, TLS_LISTENER_PORT, TOKEN_SERVER_PORT, UPSTREAM_PORT};

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
    let opts = EnvoyOptions { fixed_ports: true, log_to_terminal: true, log_level: "warn", ..EnvoyOptions::default() };
    let mut envoy = match Envoy::start_with("all-in-one.yaml", opts) {
        Ok(e) => e,
        Err(e) => fail(&e),
    };
    let (http, https, admin) = (LISTENER_PORT, TLS_LISTENER_PORT, ADMIN_PORT);
    println!(
        "
Envoy {} is serving envoy-configs/all-in-one.yaml; demo upstream on 127.0.0.1:{}, token server on 127.0.0.1:{}.
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

  # the filters' stats
  curl -s http://localhost:{admin}/stats | grep wasmcustom

Ctrl-C stops Envoy and the upstream.
",
        e2e::envoy_bin().display(),
        upstream.port,
        tokens.port
    );
    let status = envoy.wait();
    drop(upstream);
    drop(tokens);
    eprintln!("Envoy exited: {status:?}");
}

fn fail(message: &str) -> ! {
    eprintln!("demo: {message}");
    std::process::exit(1);
}
