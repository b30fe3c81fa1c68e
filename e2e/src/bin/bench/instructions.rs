//! Instructions per request under callgrind: a figure that does not move with the machine's
//! load (this VM's `perf stat -e instructions` answers "not supported": no hardware counters).
//! Opt-in (`BENCH_INSTRUCTIONS=on`, or `only` = `make bench-instructions`): Envoy under
//! valgrind takes a minute or more to start.
//!
//! Per variant: Envoy (`--concurrency 1`) under `valgrind --tool=callgrind
//! --instr-atstart=no --smc-check=all-non-file` (V8 writes the code it runs: valgrind must
//! notice; instrumentation off until the count starts, so start-up runs at valgrind's
//! uninstrumented speed); warm-up requests on one keep-alive connection (V8's tier-up of the
//! module happens here, uncounted); then `callgrind_control -i on`, `-z` (zero), N requests,
//! `-d` (dump) — twice, two windows, to show the count repeats. Instructions per request =
//! the window's total (every thread of Envoy: the request, plus whatever timers fired) / N,
//! the lower of the two windows (timers only ever add); added = that minus router-only's.

use super::{envoy_options, Proxy, Servers, Settings, FLOOR, HEADLINE, INSTRUCTION_EXTRA};
use e2e::repo_root;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WARM_UP_REQUESTS: u32 = 300;
const WINDOWS: usize = 2;
/// Envoys under valgrind at once (each is one CPU's worth: valgrind runs a process's threads
/// one at a time).
const PARALLEL: usize = 2;

struct Count {
    name: &'static str,
    /// Instructions per request in each window: Envoy's worker thread, which runs every
    /// request (HTTP codec, filters, router, upstream pool), and every thread (the main
    /// thread's timers — stats flush, admin — included).
    per_request: Vec<f64>,
    all_threads: Vec<f64>,
}

/// Under valgrind Envoy's first requests take seconds (every code path is translated once):
/// no route timeout (15 s by default) and generous connect timeouts, so that they are not
/// answered 504 or 503. The requests measured are unchanged.
fn patient(config: String) -> String {
    config
        .replace("route: { cluster: upstream }", "route: { cluster: upstream, timeout: 0s }")
        .replace("connect_timeout: 1s", "connect_timeout: 60s")
        .replace("connect_timeout: 2s", "connect_timeout: 60s")
}

const PATIENCE: Duration = Duration::from_secs(600);

fn callgrind_control(args: &[&str], pid: u32) -> Result<(), String> {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .map_err(|e| format!("callgrind_control: {e} (run `make deps`: valgrind)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && text.contains("OK") {
        Ok(())
    } else {
        Err(format!("callgrind_control {args:?} {pid}: {text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The `totals:` line of a callgrind dump: instructions (Ir) over the window.
fn dump_total(path: &Path) -> Result<u64, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{}: no totals line", path.display()))
}

/// Instructions of window `window` per thread (`--separate-threads=yes` dumps one file per
/// thread, `<out>.<window>-<thread>`).
fn window_totals(out_file: &Path, window: usize) -> Result<Vec<u64>, String> {
    let dir = out_file.parent().ok_or("callgrind output has no directory")?;
    let prefix = format!("{}.{window}-", out_file.file_name().and_then(|n| n.to_str()).unwrap_or_default());
    let mut totals = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            totals.push(dump_total(&entry.path())?);
        }
    }
    if totals.is_empty() {
        return Err(format!("no callgrind dump {prefix}* in {}", dir.display()));
    }
    Ok(totals)
}

fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

fn count(
    variant: &'static super::Variant,
    settings: &Settings,
    servers: Servers,
    all_cpus: &str,
    repeated_jwt: &str,
) -> Result<Count, String> {
    let dir: PathBuf = repo_root().join("target").join("bench").join("callgrind").join(slug(variant.name));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out_file = dir.join("callgrind.out");
    let wrapper = vec![
        "taskset".to_string(),
        "-c".into(),
        all_cpus.into(),
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--instr-atstart=no".into(),
        "--smc-check=all-non-file".into(),
        "--separate-threads=yes".into(),
        format!("--callgrind-out-file={}", out_file.display()),
    ];
    let opts = e2e::envoy::EnvoyOptions {
        wrapper,
        ready_timeout: Duration::from_secs(1800),
        edit: Some(Box::new(patient)),
        ..envoy_options(servers, 1)
    };
    let started = Instant::now();
    let proxy = Proxy::start(variant, opts, repeated_jwt)?;
    let pid = proxy.pid();
    let encoded = proxy.request().encode_for(&format!("localhost:{}", proxy.listener), true);
    let mut conn = e2e::http::KeepAlive::connect_waiting(proxy.listener, PATIENCE)?;
    let first = conn.exchange(&encoded)?;
    (variant.check)(&first).map_err(|e| format!("{}: under valgrind: {e}\n{first}", variant.name))?;
    let mut send = |n: u32| -> Result<(), String> {
        for _ in 0..n {
            let r = conn.exchange(&encoded)?;
            if r.status != 200 {
                return Err(format!("{}: status {} under valgrind:\n{r}", variant.name, r.status));
            }
        }
        Ok(())
    };
    send(WARM_UP_REQUESTS)?;
    // Warm by now: the answers checked as in the timed runs (the 401 without a token).
    proxy.check_answers()?;
    callgrind_control(&["-i", "on"], pid)?;
    let (mut per_request, mut all_threads) = (Vec::new(), Vec::new());
    for window in 1..=WINDOWS {
        callgrind_control(&["-z"], pid)?;
        send(settings.instruction_requests)?;
        callgrind_control(&["-d"], pid)?;
        let threads = window_totals(&out_file, window)?;
        // The worker is the thread that ran the requests: by far the busiest in a window.
        let worker = threads.iter().copied().max().unwrap_or(0);
        per_request.push(worker as f64 / f64::from(settings.instruction_requests));
        all_threads.push(threads.iter().sum::<u64>() as f64 / f64::from(settings.instruction_requests));
    }
    println!(
        "instructions {:<28} worker {} per request, all threads {} (windows of {} requests), {:.0} s under valgrind",
        variant.name,
        per_request.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", "),
        all_threads.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", "),
        settings.instruction_requests,
        started.elapsed().as_secs_f64()
    );
    Ok(Count { name: variant.name, per_request, all_threads })
}

fn valgrind_present() -> Result<(), String> {
    match Command::new("valgrind").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("valgrind not found: run `make deps` (Debian's valgrind)".into()),
    }
}

/// Count the headline variants and the native equivalents; the table as markdown.
pub(crate) fn run(settings: &Settings, servers: Servers, all_cpus: &str, repeated_jwt: &str) -> Result<String, String> {
    valgrind_present()?;
    let names: Vec<&str> = HEADLINE.iter().map(|(n, _)| *n).chain(INSTRUCTION_EXTRA.iter().copied()).collect();
    let variants: Vec<&'static super::Variant> = names
        .iter()
        .enumerate()
        .filter(|(i, n)| *i == 0 || settings.wanted(n))
        .filter_map(|(_, n)| super::variant(n))
        .collect();
    let variants = settings.with_before(variants);
    println!(
        "\nbench: instructions under callgrind: {} variants, {PARALLEL} at a time, {WARM_UP_REQUESTS} warm-up requests, \
         {WINDOWS} windows of {} requests each",
        variants.len(),
        settings.instruction_requests
    );
    let queue = Mutex::new(variants.clone().into_iter().enumerate());
    let results: Mutex<Vec<(usize, Result<Count, String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| loop {
                let next = queue.lock().ok().and_then(|mut q| q.next());
                let Some((i, v)) = next else { break };
                let r = count(v, settings, servers, all_cpus, repeated_jwt);
                if let Err(e) = &r {
                    eprintln!("bench: instructions of {}: {e}", v.name);
                }
                if let Ok(mut all) = results.lock() {
                    all.push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().map_err(|_| "instruction counting: a worker panicked".to_string())?;
    results.sort_by_key(|(i, _)| *i);
    // A variant that failed gets a row saying so; the others are still reported.
    let mut counts = Vec::new();
    let mut failed = Vec::new();
    for (i, r) in results {
        match r {
            Ok(c) => counts.push(c),
            Err(e) => failed.push((variants[i].name, e)),
        }
    }
    if counts.first().map(|c| c.name) != variants.first().map(|v| v.name) {
        return Err(format!("instructions: the baseline failed: {failed:?}"));
    }
    // The lower window: what a timer firing during a window adds is not the request's.
    // The lower window: what a timer firing during a window adds is not the request's.
    let lower = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let baseline = counts.first().map_or(f64::NAN, |c| lower(&c.per_request));
    let floor_added = counts.iter().find(|c| c.name == FLOOR).map(|c| lower(&c.per_request) - baseline);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Instructions per request (callgrind)\n\n\
         | variant | worker thread, instructions/request (window 1, window 2) | added over router-only | × trivial filter's added | all threads |\n\
         |---|---:|---:|---:|---:|"
    );
    for (i, c) in counts.iter().enumerate() {
        let windows = c.per_request.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
        let (added, times) = if i == 0 {
            ("—".to_string(), String::new())
        } else {
            let added = lower(&c.per_request) - baseline;
            let times = match floor_added {
                Some(f) if f > 0.0 => format!("{:.1}×", added / f),
                _ => "—".to_string(),
            };
            (format!("{added:+.0}"), times)
        };
        let _ = writeln!(
            md,
            "| {} | {:.0} ({windows}) | {added} | {times} | {:.0} |",
            c.name,
            lower(&c.per_request),
            lower(&c.all_threads)
        );
    }
    for (name, e) in &failed {
        let first_line = e.lines().next().unwrap_or_default();
        let _ = writeln!(md, "| {name} | failed: {first_line} | | | |");
    }
    let _ = writeln!(
        md,
        "\n- Envoy `--concurrency 1` under `valgrind --tool=callgrind --instr-atstart=no --smc-check=all-non-file \
         --separate-threads=yes`; {WARM_UP_REQUESTS} uncounted warm-up requests (V8 tiers the modules up), then \
         {WINDOWS} windows of {} requests on one keep-alive connection, each zeroed and dumped with \
         `callgrind_control`; the same request as the CPU rows. The worker thread runs every request (codec, filters, \
         wasm, router, upstream pool); \"all threads\" adds the main thread's timers (stats flush, admin) that fall \
         into the window, which under valgrind's slowness weigh per request. Each figure is the lower of the two \
         windows (timers only add). Independent of the machine's load.",
        settings.instruction_requests
    );
    Ok(md)
}
