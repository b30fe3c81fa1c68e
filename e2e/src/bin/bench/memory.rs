//! Memory and start-up: each config's Envoy at `--concurrency 2` (two workers, so two copies
//! of every VM), started alone on every CPU, `starts` times, interleaved (the order rotates
//! each round). Ready = process spawned to the admin `/ready` answering 200 (polled every
//! 10 ms); RSS = `VmRSS` half a second after ready, when every worker has its VMs.

use super::{envoy_options, median, min_max, Servers, Settings};
use e2e::envoy::{Envoy, EnvoyOptions};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The configs of the table (envoy-configs/bench/): router-only, the floor, each filter as the
/// CPU rows configure it, all five (five modules; the bundle; the bundle Istio-shaped), the
/// native chain.
pub(crate) const CONFIGS: &[(&str, &str)] = &[
    ("router-only", "bench/router-only.yaml"),
    ("trivial filter (SDK only)", "bench/trivial-filter.yaml"),
    ("security-headers", "bench/security-headers.yaml"),
    ("jwt-auth", "bench/jwt-auth.yaml"),
    ("rate-limit", "bench/rate-limit.yaml"),
    ("token-fetch", "bench/token-fetch.yaml"),
    ("body-logger", "bench/body-logger.yaml"),
    ("all five (wasm)", "bench/all-five.yaml"),
    // The same five from the bundle module under one vm_id: one VM per worker instead of five.
    ("all five, bundle (one VM)", "bench/all-five-bundle.yaml"),
    // The bundle as Istio would configure it: each plugin's vm_config with its own
    // ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION.
    ("all five, bundle, Istio-shaped vm_config", "bench/all-five-bundle-istio.yaml"),
    // The same five as one `chain` plugin of the bundle: one VM, one plugin.
    ("all five (chain)", "bench/all-five-chain.yaml"),
    ("native chain", "bench/native-chain.yaml"),
];

const WORKERS: u32 = 2;
const SETTLE: Duration = Duration::from_millis(500);

struct Start {
    config: usize,
    round: u32,
    rss_mb: f64,
    ready_ms: f64,
}

fn rss_mb(pid: u32) -> Result<f64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("/proc/{pid}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1000.0)
        .ok_or_else(|| format!("/proc/{pid}/status: no VmRSS"))
}

fn start_once(config: &str, servers: Servers, all_cpus: &str) -> Result<(f64, f64), String> {
    // The bench process is pinned to the load CPU and children inherit that: give Envoy back
    // every CPU, as a gateway's Envoy would have.
    let opts = EnvoyOptions {
        wrapper: vec!["taskset".into(), "-c".into(), all_cpus.into()],
        ..envoy_options(servers, WORKERS)
    };
    let spawned = Instant::now();
    let mut envoy = Envoy::spawn(config, &opts)?;
    envoy
        .wait_ready_polling(Duration::from_secs(120), Duration::from_millis(10))
        .map_err(|e| format!("{config}: {e}"))?;
    let ready_ms = spawned.elapsed().as_secs_f64() * 1e3;
    std::thread::sleep(SETTLE);
    let rss = rss_mb(envoy.pid().unwrap_or(0))?;
    Ok((rss, ready_ms))
}

/// The memory/start-up table, as markdown.
pub(crate) fn run(settings: &Settings, servers: Servers, all_cpus: &str) -> Result<String, String> {
    let configs: Vec<(usize, &(&str, &str))> =
        CONFIGS.iter().enumerate().filter(|(i, (name, _))| *i == 0 || settings.wanted(name)).collect();
    println!(
        "\nbench: memory/start-up: {} configs × {} starts at --concurrency {WORKERS}, interleaved",
        configs.len(),
        settings.starts
    );
    let mut starts = Vec::new();
    for round in 0..settings.starts {
        for k in 0..configs.len() {
            let (index, (name, config)) = configs[(k + round as usize) % configs.len()];
            let (rss_mb, ready_ms) = start_once(config, servers, all_cpus)?;
            println!(
                "start {}/{} {name:<28} ready {ready_ms:>7.0} ms  RSS {rss_mb:>6.1} MB",
                round + 1,
                settings.starts
            );
            starts.push(Start { config: index, round, rss_mb, ready_ms });
        }
    }
    let base_of = |round: u32| starts.iter().find(|s| s.config == 0 && s.round == round);
    let mut md = String::new();
    let _ = writeln!(md, "## Memory and start-up (`--concurrency {WORKERS}`)\n");
    let _ = writeln!(
        md,
        "| config | RSS MB, median (min–max) | added MB | start → ready ms, median (min–max) | added ms |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for (index, (name, config)) in &configs {
        let mine: Vec<&Start> = starts.iter().filter(|s| s.config == *index).collect();
        let rss: Vec<f64> = mine.iter().map(|s| s.rss_mb).collect();
        let ready: Vec<f64> = mine.iter().map(|s| s.ready_ms).collect();
        let pairs: Vec<(f64, f64)> = mine
            .iter()
            .filter_map(|s| base_of(s.round).map(|b| (s.rss_mb - b.rss_mb, s.ready_ms - b.ready_ms)))
            .collect();
        let (added_rss, added_ready) = if *index == 0 {
            ("—".to_string(), "—".to_string())
        } else {
            let rss_added: Vec<f64> = pairs.iter().map(|p| p.0).collect();
            let ready_added: Vec<f64> = pairs.iter().map(|p| p.1).collect();
            (format!("{:+.1}", median(&rss_added)), format!("{:+.0}", median(&ready_added)))
        };
        let ((rss_lo, rss_hi), (ready_lo, ready_hi)) = (min_max(&rss), min_max(&ready));
        let _ = writeln!(
            md,
            "| {name} (`{config}`) | {:.1} ({rss_lo:.1}–{rss_hi:.1}) | {added_rss} | {:.0} ({ready_lo:.0}–{ready_hi:.0}) | {added_ready} |",
            median(&rss),
            median(&ready)
        );
    }
    let _ = writeln!(
        md,
        "\n- Each Envoy alone, unpinned, `--concurrency {WORKERS}`, {} starts per config interleaved with the others; \
         added = median of per-round differences with router-only. Ready = spawn to admin `/ready` = 200 (polled \
         every 10 ms: start-up includes compiling each module once per worker); RSS = `VmRSS` {} ms after ready.",
        settings.starts,
        SETTLE.as_millis()
    );
    Ok(md)
}

#[cfg(test)]
mod tests {
    use e2e::repo_root;

    /// The bundle rows measure all-five.yaml's filters and configurations: below `admin:` their
    /// configs are all-five.yaml with each plugin's vm_id and module changed, and (Istio-shaped)
    /// one environment variable per plugin added.
    #[test]
    fn the_bundle_configs_are_all_five_from_the_bundle() {
        let read = |name: &str| std::fs::read_to_string(repo_root().join("envoy-configs/bench").join(name)).unwrap();
        let body = |text: &str| text.split_once("\nadmin:").map(|(_, b)| b.to_string()).unwrap();
        let mut expected = body(&read("all-five.yaml"));
        for filter in ["security-headers", "jwt-auth", "rate-limit", "token-fetch", "body-logger"] {
            expected = expected
                .replace(&format!("vm_id: {filter}\n"), "vm_id: collection\n")
                .replace(&format!("dist/{filter}.wasm"), "dist/collection.wasm");
        }
        assert_eq!(body(&read("all-five-bundle.yaml")), expected);
        let istio: String = body(&read("all-five-bundle-istio.yaml"))
            .lines()
            .filter(|l| !l.contains("environment_variables:") && !l.contains("ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(istio, expected);
        let istio_config = read("all-five-bundle-istio.yaml");
        let versions: std::collections::BTreeSet<&str> =
            istio_config.lines().filter(|l| l.contains("RESOURCE_VERSION: ")).collect();
        assert_eq!(versions.len(), 5, "one distinct value per plugin");
    }
}
