//! The demo/bench upstream: `upstream [--port 18080]`. Runs until killed.

fn main() {
    let mut args = std::env::args().skip(1);
    let mut port = e2e::UPSTREAM_PORT;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).unwrap_or(port),
            other => {
                eprintln!("unknown argument {other}; usage: upstream [--port N]");
                std::process::exit(2);
            }
        }
    }
    match e2e::upstream::Upstream::start(port) {
        Ok(u) => {
            eprintln!("demo upstream listening on 127.0.0.1:{}", u.port);
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
