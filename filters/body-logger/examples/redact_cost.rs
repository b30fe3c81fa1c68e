//! Native cost of redaction for the bodies `make bench` posts, and for a realistic mixed body:
//! `cargo run --release -p body-logger --example redact_cost` (Linux). Prints the median CPU
//! µs per call of several rounds: CPU time of this process (`/proc/self/schedstat`), not wall
//! time, so that other load on a shared machine weighs less. It measures only the redactor (the part the scanners changed); the
//! per-request cost in Envoy is `make bench`'s. To compare with another revision, run
//! `scripts/body-logger-redact-vs.sh REV`: both redactors in one binary, timed in alternation.

use body_logger::config::{BodyKind, RedactConfig};

/// Nanoseconds this process has run on a CPU.
fn cpu_ns() -> Result<f64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string("/proc/self/schedstat")?;
    Ok(stat.split_whitespace().next().ok_or("empty /proc/self/schedstat")?.parse()?)
}

const MAX_BYTES: usize = 4096;

fn bench_body(size: usize) -> Vec<u8> {
    let filler = size.saturating_sub(r#"{"data":""}"#.len());
    format!(r#"{{"data":"{}"}}"#, "x".repeat(filler)).into_bytes()
}

/// An API body with nested objects, numbers, URLs, a JSON string holding JSON and a few secrets.
fn mixed_body(size: usize) -> Vec<u8> {
    let item = r#"{"id":1234,"author":"ann","keyword":"rust wasm","price":12.5,"tags":["a","b"],"url":"https://x.example/p?page=2&sort=asc","meta":"{\"k\":\"v\",\"n\":3}","password":"hunter2","accessToken":"abc.def"},"#;
    let mut s = String::from(r#"{"items":["#);
    while s.len() + item.len() < size {
        s.push_str(item);
    }
    s.push_str(r#"{"id":0}]}"#);
    s.into_bytes()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redactor = RedactConfig::default().compile()?;
    let cases: [(&str, Vec<u8>); 4] = [
        ("bench 1 KiB", bench_body(1024)),
        ("bench 64 KiB (4 KiB captured)", bench_body(64 * 1024)),
        ("mixed 1 KiB", mixed_body(1024)),
        ("mixed 64 KiB (4 KiB captured)", mixed_body(64 * 1024)),
    ];
    let rounds = 7;
    let calls = 2000;
    for (name, body) in &cases {
        let captured = &body[..body.len().min(MAX_BYTES)];
        let truncated = captured.len() < body.len();
        let mut per_call = Vec::with_capacity(rounds);
        let mut redactions = 0;
        for _ in 0..rounds {
            let start = cpu_ns()?;
            for _ in 0..calls {
                let (out, n) = redactor.redact_body(std::hint::black_box(captured), BodyKind::Json, None, truncated);
                redactions = n;
                std::hint::black_box(out);
            }
            per_call.push((cpu_ns()? - start) / 1e3 / f64::from(calls));
        }
        per_call.sort_by(f64::total_cmp);
        let median = per_call.get(rounds / 2).copied().unwrap_or_default();
        let (lo, hi) = (per_call.first().copied().unwrap_or_default(), per_call.last().copied().unwrap_or_default());
        println!("{name:32} {median:8.2} CPU µs/call (range {lo:.2}–{hi:.2}), {redactions} redactions");
    }
    Ok(())
}
