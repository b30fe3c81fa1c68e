//! Native cost of redaction for the bodies `make bench` posts, and for a realistic mixed body:
//! `cargo run --release -p body-logger --example redact_cost` (Linux). Prints the median CPU
//! µs per call of several rounds: CPU time of this process (`/proc/self/schedstat`), not wall
//! time, so that other load on a shared machine weighs less. It measures only the redactor (the part the scanners changed); the
//! per-request cost in Envoy is `make bench`'s. To compare with another revision, run
//! `scripts/body-logger-redact-vs.sh REV`: both redactors in one binary, timed in alternation.

use body_logger::config::{BodyKind, RedactConfig};

// Shared with scripts/body-logger-redact-vs.sh, which include!s it.
#[path = "redact_cost/bodies.rs"]
mod bodies;

use bodies::{bench_body, cpu_ns, mixed_body, MAX_BYTES};

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
