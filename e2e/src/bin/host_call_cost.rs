//! What a whole-map replace costs against the same edits made header by header, in a real
//! Envoy (docs/architecture.md, "Host calls and their cost"). Not a test and not `make bench`:
//! a small interleaved loop over the probe module (e2e/probe, `dist/test/probe.wasm`).
//!
//!   make build envoy && cargo run --release -p e2e --bin host_call_cost
//!
//! Three variants on one Envoy (one worker), the variant chosen per request by a header:
//! - `none`: the probe reads nothing and edits nothing (the baseline);
//! - `per-header`: request map `remove x-probe-drop` + `set x-probe-added`, response map
//!   `remove x-powered-by` + `set x-probe-added` (four host calls);
//! - `read-only`: `headers()` on each map, no edit (the read half of `set-headers`);
//! - `set-headers`: the same edits as read-modify-write, `headers()` then `set_headers()` on
//!   each map (four host calls, each carrying the whole map).
//!
//! The probe exports every stream callback (for the bench's host-call replays), so every
//! variant pays the same VM crossings: the differences between variants are what to read.
//!
//! `HOST_CALL_COST_PIN=1` runs Envoy on CPU 0 (`taskset`), this process (the upstream) and wrk
//! on CPU 1: steadier on an idle machine, starved on a shared one (off by default).
//!
//! Each edit runs `HOST_CALL_COST_REPEAT` times (default 10) per map and request, so the
//! per-edit cost stands out of the per-request noise of a shared machine; the report divides
//! by it. The request carries 13 headers, the response 8 (browser and API sizes). Each round
//! runs every variant for `HOST_CALL_COST_SECONDS` (default 4) with wrk, in a rotating order;
//! CPU per request = Envoy's utime+stime delta (`/proc/<pid>/stat`) / requests completed. Reported:
//! the median over `HOST_CALL_COST_ROUNDS` (default 8) rounds and the median of the per-round
//! differences, so a machine that gets busier during the run shifts all variants alike.

use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::upstream::{Upstream, UpstreamOptions};
use e2e::{repo_root, LISTENER_PORT, UPSTREAM_PORT};
use std::process::{Command, Stdio};
use std::sync::Arc;

const VARIANTS: [&str; 4] = ["none", "per-header", "read-only", "set-headers"];

/// A browser-like request (wrk adds `host`).
const REQUEST_HEADERS: &[(&str, &str)] = &[
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
    ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("accept-language", "en-US,en;q=0.9"),
    ("accept-encoding", "gzip, deflate, br"),
    ("cookie", "session=3f2a9c1e7b5d4f60a8e2; theme=dark; consent=1"),
    ("referer", "https://www.example.com/products?page=2"),
    ("cache-control", "no-cache"),
    ("x-forwarded-for", "203.0.113.7"),
    ("x-correlation-id", "5b8e0c2a-1f4d-4c3b-9a7e-2d6f8b1c0e9a"),
    ("sec-fetch-mode", "navigate"),
    ("x-probe-drop", "removed by the edit"),
];

fn fixed_response() -> Arc<[u8]> {
    let body = b"{\"ok\":true}";
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\n\
         x-powered-by: demo\r\nserver: demo-upstream/1.0\r\nvary: accept-encoding\r\netag: \"33a64df5\"\r\n\r\n",
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out.into()
}

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn envoy_ticks(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
    match fields.as_slice() {
        [utime, stime] => Ok(utime + stime),
        _ => Err(format!("cannot read /proc/{pid}/stat")),
    }
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|t: &f64| *t > 0.0)
        .unwrap_or(100.0)
}

/// Requests wrk completed; any non-2xx or socket error fails the run.
fn wrk(port: u16, variant: &str, repeat: u32, seconds: u32) -> Result<u64, String> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "-c8", &format!("-d{seconds}s"), "--timeout", "5s", "-H", &format!("x-probe-edit: {variant}")]);
    cmd.args(["-H", &format!("x-probe-repeat: {repeat}")]);
    for (name, value) in REQUEST_HEADERS {
        cmd.args(["-H", &format!("{name}: {value}")]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}/"));
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("wrk: {e} (run `make deps`)"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.contains("Non-2xx") || text.contains("Socket errors") || !out.status.success() {
        return Err(format!("{variant}: wrk reported errors:\n{text}"));
    }
    text.lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{variant}: no `N requests in` line:\n{text}"))
}

/// This process (its upstream threads, and the wrk it starts) on `cpu`, away from Envoy's.
fn pin_self_to_cpu(cpu: u32) -> Result<(), String> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset -p -c {cpu} failed"))
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn check_edits(port: u16) -> Result<(), String> {
    for variant in ["per-header", "set-headers"] {
        let r = e2e::http::Request::get("/").header("x-probe-edit", variant).send(port)?;
        if r.status != 200 || r.header("x-probe-added").as_deref() != Some("1") || r.has_header("x-powered-by") {
            return Err(format!("{variant}: the probe did not edit the response:\n{r}"));
        }
    }
    Ok(())
}

fn run() -> Result<(), String> {
    let rounds = env_u32("HOST_CALL_COST_ROUNDS", 8);
    let seconds = env_u32("HOST_CALL_COST_SECONDS", 4);
    let repeat = env_u32("HOST_CALL_COST_REPEAT", 10).max(1);
    let pin = std::env::var("HOST_CALL_COST_PIN").is_ok_and(|v| v == "1");
    let opts = EnvoyOptions { concurrency: 1, log_level: "warn", pin_cpu: pin.then_some(0), ..EnvoyOptions::default() };
    if pin {
        pin_self_to_cpu(1)?;
    }
    let envoy = Envoy::start_path(&repo_root().join("e2e/probe/envoy.yaml"), opts)?;
    let upstream_opts =
        UpstreamOptions { no_recording: true, fixed_response: Some(fixed_response()), ..UpstreamOptions::default() };
    let _upstream = Upstream::start_with(envoy.port(UPSTREAM_PORT), upstream_opts)?;
    let port = envoy.port(LISTENER_PORT);
    let pid = envoy.pid().ok_or("no Envoy pid")?;
    check_edits(port)?;
    wrk(port, "none", repeat, 2)?; // warm-up, not counted
    let ticks_per_s = clock_ticks_per_second();

    let mut per_variant: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    for round in 0..rounds {
        for k in 0..VARIANTS.len() {
            let i = (round as usize + k) % VARIANTS.len();
            let before = envoy_ticks(pid)?;
            let requests = wrk(port, VARIANTS[i], repeat, seconds)?;
            let cpu_s = (envoy_ticks(pid)? - before) as f64 / ticks_per_s;
            let us = cpu_s * 1e6 / requests as f64;
            eprintln!("round {round} {:<12} {requests:>8} requests  {us:6.2} µs CPU/request", VARIANTS[i]);
            per_variant[i].push(us);
        }
    }
    // Per-round differences against the baseline, divided by the repeat count: the cost of
    // doing each variant's edit once on the request map and once on the response map.
    let once = |a: usize, b: usize| {
        let mut d: Vec<f64> =
            per_variant[a].iter().zip(&per_variant[b]).map(|(x, y)| (x - y) / repeat as f64).collect();
        median(&mut d)
    };
    println!(
        "Envoy {} (--concurrency 1), CPU per request, median of {rounds} interleaved rounds of {seconds}s, \
         each edit repeated {repeat}x per map:",
        e2e_version()
    );
    for (i, name) in VARIANTS.iter().enumerate() {
        let mut v = per_variant[i].clone();
        println!("  {name:<12} {:7.2} µs/request", median(&mut v));
    }
    println!("Added by one edit of the request map and one of the response map (median of per-round differences / {repeat}):");
    println!("  per-header  (remove + set, ×2 maps)        {:+6.2} µs", once(1, 0));
    println!("  read-only   (headers(), ×2 maps)           {:+6.2} µs", once(2, 0));
    println!("  set-headers (headers() + set_headers, ×2)  {:+6.2} µs", once(3, 0));
    println!("  set-headers − per-header                   {:+6.2} µs", once(3, 1));
    Ok(())
}

fn e2e_version() -> String {
    std::env::var("ENVOY_VERSION").unwrap_or_else(|_| e2e::DEFAULT_ENVOY_VERSION.to_string())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("host_call_cost: {e}");
        std::process::exit(1);
    }
}
