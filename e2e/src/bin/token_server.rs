//! The demo token server for token-fetch: `token_server [--port 18081] [--lifetime 60]`.
//! Issues `tok-N` tokens (OAuth2 JSON to POST, `x-token` header to GET). Runs until killed.

fn main() {
    let mut args = std::env::args().skip(1);
    let mut port = e2e::TOKEN_SERVER_PORT;
    let mut lifetime = 60;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).unwrap_or(port),
            "--lifetime" => lifetime = args.next().and_then(|p| p.parse().ok()).unwrap_or(lifetime),
            other => {
                eprintln!("unknown argument {other}; usage: token_server [--port N] [--lifetime SECONDS]");
                std::process::exit(2);
            }
        }
    }
    match e2e::token_server::TokenServer::start(port, lifetime) {
        Ok(s) => {
            eprintln!("demo token server listening on 127.0.0.1:{} (tokens valid {lifetime}s)", s.port);
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
