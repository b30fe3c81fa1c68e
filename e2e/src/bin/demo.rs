//! `make demo`: the demo upstream, token and JWKS servers, and a real Envoy running
//! envoy-configs/all-in-one.yaml on localhost, in the foreground, with Envoy's access log (and
//! in it body-logger's redacted lines) on this terminal. Envoy is this process's child; Ctrl-C
//! stops both. The "Try" list is `e2e::demo`'s, which `e2e/tests/all_in_one.rs` runs.

use e2e::demo::{render, Demo};

fn main() {
    let mut demo = match Demo::start(true) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "
Envoy {} is serving envoy-configs/all-in-one.yaml (security-headers, jwt-auth, rate-limit,
token-fetch, body-logger); demo upstream on 127.0.0.1:{}, token server on 127.0.0.1:{}, JWKS
server on 127.0.0.1:{}. Envoy's access log follows below, one line per request.
Try (from the repository root, in another terminal):
{}
Ctrl-C stops Envoy and the servers.
",
        e2e::envoy_bin().display(),
        demo.upstream.port,
        demo.tokens.port,
        demo.jwks.port,
        render(&demo.try_list())
    );
    let status = demo.envoy.wait();
    eprintln!("Envoy exited: {status:?}");
}
