//! Latency at a fixed request rate (open loop), for the headline rows: p50/p99 of each
//! variant and what they add over router-only in the same round, beside Envoy's CPU per
//! request at that rate.
//!
//! Why a client of our own: wrk (Debian) is closed loop — each connection sends its next
//! request when the previous answer arrives, so at saturation its latency mirrors throughput,
//! and a slow answer hides the requests that should have been sent meanwhile (coordinated
//! omission). wrk2, which fixes both, is in none of the registries this project may use
//! (crates.io, Debian, PyPI, npm); neither are vegeta or k6. The client here is wrk2's method
//! in ~60 lines: `connections` keep-alive connections (threads on the load CPU), request `k` of
//! connection `i` due at `start + (i + k·connections) / rate`. A request's latency runs from
//! its due time when it had to wait for the previous answer on its connection (so a stall
//! counts for every request it delayed), else from its actual send (this client's own timer
//! lateness is not Envoy's).

use super::{median, min_max, Proxy, Settings, HEADLINE};
use e2e::http::KeepAlive;
use std::fmt::Write as _;
use std::fs;
use std::time::{Duration, Instant};

struct Run {
    variant: usize,
    round: u32,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    /// Envoy's CPU per request at this rate (µs).
    cpu_us: f64,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// CPU time of every thread of a process, in ns (`/proc/<pid>/task/*/schedstat`: exact, where
/// utime+stime count 10 ms ticks, too coarse for a few thousand requests).
fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let text = fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Send `encoded` at `rate` per second over `connections` connections for `seconds`; every
/// answer must be a 200. Returns each request's latency in µs, sorted.
fn fixed_rate(port: u16, encoded: &[u8], rate: u32, connections: u32, seconds: u32) -> Result<Vec<f64>, String> {
    // Connections open first; the schedule starts a little later.
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs(u64::from(seconds));
    let per_request = 1.0 / f64::from(rate);
    let results: Vec<Result<Vec<f64>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..connections)
            .map(|i| {
                scope.spawn(move || -> Result<Vec<f64>, String> {
                    let mut conn = KeepAlive::connect(port)?;
                    let mut latencies = Vec::new();
                    let mut previous_done = start;
                    for k in 0u64.. {
                        let slot = f64::from(i) + k as f64 * f64::from(connections);
                        let due = start + Duration::from_secs_f64(slot * per_request);
                        if due >= end {
                            break;
                        }
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let sent = Instant::now();
                        let response = conn.exchange(encoded)?;
                        let done = Instant::now();
                        if response.status != 200 {
                            return Err(format!("status {} (want 200):\n{response}", response.status));
                        }
                        let from = if previous_done > due { due } else { sent };
                        latencies.push(done.duration_since(from).as_secs_f64() * 1e6);
                        previous_done = done;
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("client thread panicked".into()))).collect()
    });
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    all.sort_by(f64::total_cmp);
    Ok(all)
}

fn measure(settings: &Settings, index: usize, proxy: &mut Proxy, round: u32) -> Result<Run, String> {
    proxy.ensure_running()?;
    let encoded = proxy.request().encode_for(&format!("localhost:{}", proxy.listener), true);
    let pid = proxy.pid();
    let before = cpu_ns(pid);
    let latencies = fixed_rate(proxy.listener, &encoded, settings.rate, settings.latency_connections, settings.seconds)
        .map_err(|e| format!("{}: {e}", proxy.variant.name))?;
    let after = cpu_ns(pid);
    proxy.ensure_running()?;
    let cpu_us = match (before, after) {
        (Some(b), Some(a)) if !latencies.is_empty() => a.saturating_sub(b) as f64 / 1e3 / latencies.len() as f64,
        _ => f64::NAN,
    };
    Ok(Run {
        variant: index,
        round,
        p50: percentile(&latencies, 50.0),
        p90: percentile(&latencies, 90.0),
        p99: percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or(f64::NAN),
        cpu_us,
    })
}

/// Run the headline variants among `proxies` at the fixed rate, interleaved like the CPU
/// rounds (one uncounted warm-up round); the table as markdown.
pub(crate) fn run(settings: &Settings, proxies: &mut [Proxy]) -> Result<String, String> {
    let chosen: Vec<usize> =
        HEADLINE.iter().filter_map(|(name, _)| proxies.iter().position(|p| p.variant.name == *name)).collect();
    let Some(&baseline) = chosen.first() else { return Ok(String::new()) };
    println!(
        "\nbench: latency at {} requests/s over {} connections: {} variants × ({} rounds + warm-up) × {} s\n",
        settings.rate,
        settings.latency_connections,
        chosen.len(),
        settings.rounds,
        settings.seconds
    );
    let mut runs = Vec::new();
    for round in 0..=settings.rounds {
        for k in 0..chosen.len() {
            let index = chosen[(k + round as usize) % chosen.len()];
            let Some(proxy) = proxies.get_mut(index) else { continue };
            let r = measure(settings, index, proxy, round)?;
            let label = if round == 0 { "warm".to_string() } else { format!("{round}/{}", settings.rounds) };
            println!(
                "{label:<6} {:<28} p50 {:>7.0} µs  p90 {:>7.0} µs  p99 {:>7.0} µs  max {:>8.0} µs  CPU {:>6.1} µs/request",
                proxy.variant.name, r.p50, r.p90, r.p99, r.max, r.cpu_us
            );
            if round > 0 {
                runs.push(r);
            }
        }
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Latency at a fixed rate ({} requests/s, open loop)\n\n\
         | variant | p50 µs | p99 µs | added p50 µs, median (min–max) | added p99 µs, median (min–max) | Envoy CPU µs/request at this rate |\n\
         |---|---:|---:|---:|---:|---:|",
        settings.rate
    );
    let base_of = |round: u32| runs.iter().find(|r| r.variant == baseline && r.round == round);
    for &index in &chosen {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.variant == index).collect();
        let column = |f: fn(&Run) -> f64| mine.iter().map(|r| f(r)).collect::<Vec<f64>>();
        let added = |f: fn(&Run) -> f64| -> String {
            if index == baseline {
                return "—".to_string();
            }
            let d: Vec<f64> = mine.iter().filter_map(|r| base_of(r.round).map(|b| f(r) - f(b))).collect();
            let (lo, hi) = min_max(&d);
            format!("{:+.0} ({lo:+.0} to {hi:+.0})", median(&d))
        };
        let name = proxies.get(index).map_or("", |p| p.variant.name);
        let _ = writeln!(
            md,
            "| {name} | {:.0} | {:.0} | {} | {} | {:.1} |",
            median(&column(|r| r.p50)),
            median(&column(|r| r.p99)),
            added(|r| r.p50),
            added(|r| r.p99),
            median(&column(|r| r.cpu_us))
        );
    }
    let _ = writeln!(
        md,
        "\n- {} requests/s spread over {} keep-alive connections (a request due every {:.1} ms on each), {} rounds × \
         {} s after a warm-up round, interleaved; the same Envoys as the CPU table (one worker, pinned), the client on \
         the load CPU. Latency = the answer's last byte minus the request's due time when it waited for its \
         connection, else its send time (wrk2's method against coordinated omission). Added = median over rounds of \
         (variant − router-only in the same round). CPU per request here is exact (`/proc/<pid>/task/*/schedstat`) \
         and includes the idle-time wake-ups a lightly loaded Envoy pays per request.",
        settings.rate,
        settings.latency_connections,
        f64::from(settings.latency_connections) * 1e3 / f64::from(settings.rate),
        settings.rounds,
        settings.seconds
    );
    Ok(md)
}
