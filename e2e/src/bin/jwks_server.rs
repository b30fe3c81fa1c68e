//! The demo JWKS server for jwt-auth: `jwks_server [--port 18082]` serves the committed test
//! JWKS (e2e/fixtures/jwt/jwks.json) to `GET <any path>`. Runs until killed.
//!
//! `jwks_server --token [SUB]` prints a one-hour RS256 token it accepts (issuer
//! `https://issuer.example.com`, audience `api.example.com`), to try the demo with.
//! `jwks_server --write-fixtures` regenerates the committed JWKS files from the committed test
//! keys (after changing a key).

const JWKS: &str = include_str!("../../fixtures/jwt/jwks.json");

fn main() {
    let mut args = std::env::args().skip(1);
    let mut port = e2e::JWKS_PORT;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).unwrap_or(port),
            "--token" => {
                let sub = args.next().unwrap_or_else(|| "demo-user".to_string());
                println!("{}", e2e::jwt::token(e2e::jwt::Alg::RS256, &e2e::jwt::claims(&sub)));
                return;
            }
            "--write-fixtures" => {
                use e2e::jwt::{fixtures_dir, jwks, LOCAL_KEYS, REMOTE_KEYS, ROTATED_KEYS};
                for (file, keys) in [
                    ("jwks.json", &REMOTE_KEYS[..]),
                    ("jwks-rotated.json", &ROTATED_KEYS[..]),
                    ("local-jwks.json", &LOCAL_KEYS[..]),
                ] {
                    let path = fixtures_dir().join(file);
                    if let Err(e) = std::fs::write(&path, jwks(keys) + "\n") {
                        eprintln!("{}: {e}", path.display());
                        std::process::exit(1);
                    }
                    println!("wrote {}", path.display());
                }
                return;
            }
            other => {
                eprintln!("unknown argument {other}; usage: jwks_server [--port N] | --token [SUB] | --write-fixtures");
                std::process::exit(2);
            }
        }
    }
    match e2e::jwks_server::JwksServer::start(port, JWKS.trim()) {
        Ok(s) => {
            eprintln!("demo JWKS server listening on 127.0.0.1:{}", s.port);
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
