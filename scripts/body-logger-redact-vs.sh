#!/usr/bin/env bash
# body-logger's redactor against an earlier revision's, natively, in ONE process: both are
# linked into one binary (the old one renamed), built with the shipped profile (opt-level "z",
# LTO), and timed in alternation (old, new; then new, old; …) on the same inputs, so machine
# load weighs on both alike. Prints CPU µs per call (this process's CPU time, from
# /proc/self/schedstat) and the median of the per-round ratios new/old.
#   scripts/body-logger-redact-vs.sh [REV]        REV: default 6c27392 (main before body14's
#                                                 layered scanners)
#   ROUNDS=15 ROUND_MS=200                        rounds, CPU ms per side and round (the
#                                                 kernel updates a running task's CPU time
#                                                 about once a tick: rounds of 100s of ms)
#   INSTRUCTIONS=1 (needs valgrind)               also instructions per call (callgrind):
#                                                 exact and load-independent
# The cases: make bench's body (`{"data":"xxx…"}`) at 1 KiB and 64 KiB (4 KiB captured, the
# default max_bytes), and a mixed API body (nested objects, URLs, JSON in a string, secrets).
# Only the redactor (config, names, redact) is compared: the filter's per-request cost is
# make bench's. Work directory: target/redact-vs (not committed).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rev="${1:-6c27392}"
work="$root/target/redact-vs"
rm -rf "$work/old"
mkdir -p "$work/old/src" "$work/bench/src"

# The old redactor: its modules but the filter (no proxy-wasm glue), as crate `body_logger_old`.
git -C "$root" archive "$rev" filters/body-logger/src | tar -x -C "$work/old/src" --strip-components=3
rm -rf "$work/old/src/filter.rs" "$work/old/src/filter"
: >"$work/old/src/lib.rs"
for m in config names redact corpus; do
  [ -f "$work/old/src/$m.rs" ] && echo "pub mod $m;" >>"$work/old/src/lib.rs"
done
cat >"$work/old/Cargo.toml" <<EOF
[package]
name = "body-logger-old"
version = "0.0.0"
edition = "2021"
[dependencies]
serde = { version = "1", features = ["derive"] }
serde_json = "1"
regex-lite = "0.1"
shared = { path = "$root/shared" }
EOF
# The call differs across revisions: the multipart boundary argument came with body14.
if grep -q 'boundary: Option<&\[u8\]>' "$work/old/src/redact.rs"; then
  old_call='old.redact_body(cap, body_logger_old::config::BodyKind::Json, None, truncated)'
else
  old_call='old.redact_body(cap, body_logger_old::config::BodyKind::Json, truncated)'
fi

cat >"$work/bench/Cargo.toml" <<EOF
[package]
name = "redact-vs"
version = "0.0.0"
edition = "2021"
[dependencies]
body-logger = { path = "$root/filters/body-logger" }
body-logger-old = { path = "../old" }
[workspace]
# The shipped module's profile (the workspace's release profile).
[profile.release]
opt-level = "z"
lto = true
codegen-units = 1
panic = "abort"
debug = 1
EOF
cat >"$work/bench/src/main.rs" <<EOF
use std::hint::black_box;

include!("$root/filters/body-logger/examples/redact_cost/bodies.rs");

fn cpu() -> f64 {
    cpu_ns().expect("/proc/self/schedstat")
}

fn main() {
    let new = body_logger::config::RedactConfig::default().compile().expect("new compiles");
    let old = body_logger_old::config::RedactConfig::default().compile().expect("old compiles");
    let cases = [
        ("bench 1 KiB", bench_body(1024)),
        ("bench 64 KiB (4 KiB captured)", bench_body(64 * 1024)),
        ("mixed 1 KiB", mixed_body(1024)),
        ("mixed 64 KiB (4 KiB captured)", mixed_body(64 * 1024)),
    ];
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(d);
    let call = |which: &str, case: usize| -> u32 {
        let body = &cases[case].1;
        let cap = black_box(&body[..body.len().min(MAX_BYTES)]);
        let truncated = cap.len() < body.len();
        if which == "old" {
            black_box($old_call).1
        } else {
            black_box(new.redact_body(cap, body_logger::config::BodyKind::Json, None, truncated)).1
        }
    };
    // \`redact-vs one old|new CASE\`: ITERS calls of one side, for callgrind.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("one") {
        let case = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
        for _ in 0..env("ITERS", 100) {
            call(&args[2], case);
        }
        return;
    }
    let (rounds, round_ns) = (env("ROUNDS", 15), env("ROUND_MS", 200) as f64 * 1e6);
    println!("{:32} {:>9} {:>9} {:>9}   CPU µs per call, median of {rounds} rounds", "case", "old", "new", "new/old");
    for (i, (name, _)) in cases.iter().enumerate() {
        let (mut olds, mut news, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let mut found = (0, 0);
        for round in 0..rounds {
            let mut time = |which: &str| {
                let start = cpu();
                let mut calls = 0;
                while cpu() - start < round_ns {
                    for _ in 0..100 {
                        let n = call(which, i);
                        if which == "old" { found.0 = n } else { found.1 = n }
                    }
                    calls += 100;
                }
                (cpu() - start) / 1e3 / calls as f64
            };
            let (o, n) = if round % 2 == 0 {
                let o = time("old");
                (o, time("new"))
            } else {
                let n = time("new");
                (time("old"), n)
            };
            olds.push(o);
            news.push(n);
            ratios.push(n / o);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "{name:32} {:9.2} {:9.2} {:9.3}   (redactions: old {}, new {})",
            median(&mut olds),
            median(&mut news),
            median(&mut ratios),
            found.0,
            found.1
        );
    }
}
EOF
cd "$work/bench"
cargo build --release --quiet
bin="$work/bench/target/release/redact-vs"
"$bin"
if [ -n "${INSTRUCTIONS:-}" ]; then
  echo "instructions per call (callgrind, 100 calls less 0 calls):"
  count() { ITERS=$3 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" one "$1" "$2" 2>&1 | sed -n 's/.*Collected : //p'; }
  for case in 0 1 2 3; do
    base=$(count old "$case" 0)
    o=$(( ($(count old "$case" 100) - base) / 100 ))
    n=$(( ($(count new "$case" 100) - base) / 100 ))
    echo "  case $case: old $o, new $n, new/old $(awk "BEGIN{printf \"%.2f\", $n/$o}")"
  done
fi
