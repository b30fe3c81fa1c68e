//! What Envoy's Wasm `failure_policy` (`envoy.extensions.wasm.v3.PluginConfig`) does when a VM
//! traps, in a real Envoy with two workers. The test-only probe module (e2e/probe, never shipped)
//! executes a wasm `unreachable` on `x-probe-trap` — what a panic does under the filters'
//! `panic = "abort"` — and names its VM instance on `x-probe-vm` (a random id per instance, one
//! per worker, a new one after a reload, with `x-probe-vm-served` counting the requests that
//! instance saw). Each worker runs its own VM, so a trap kills one worker's VM: the requests on
//! the other worker are the control, and the three policies answering differently on the same
//! trap are each other's.
//!
//! Figures (what the filters' READMEs, "Failure policy", rely on): the trapped request gets a 503
//! under every policy; FAIL_CLOSED answers 503 on that worker from then on, FAIL_OPEN serves it
//! without the filter from then on (neither ever recovers without a new configuration);
//! FAIL_RELOAD answers 503 while its backoff runs (`vm_reload_backoff` counts each such request)
//! and then starts a fresh VM on the next request (`vm_reload_success`), every time it traps.
//! The same on Envoy 1.40 and 1.36 (`.ci/run` runs this file on both).

use e2e::envoy::{Envoy, EnvoyOptions};
use e2e::http::Request;
use e2e::upstream::Upstream;
use e2e::{repo_root, LISTENER_PORT, UPSTREAM_PORT};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const TRAP: &str = "x-probe-trap";

/// What one request got: status, and the VM instance that served it (none when the probe did
/// not run: refused before it, or bypassed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    vm: Option<String>,
    served: u64,
}

/// The probe config with `policy` (YAML lines of `PluginConfig`) added, on two workers.
fn start(policy: &str) -> (Envoy, Upstream) {
    let lines: String = policy.lines().map(|l| format!("                {l}\n")).collect();
    let opts = EnvoyOptions {
        concurrency: 2,
        edit: Some(Box::new(move |config: String| {
            assert!(config.contains("                root_id: probe\n"), "probe config changed shape");
            config.replacen("                root_id: probe\n", &format!("                root_id: probe\n{lines}"), 1)
        })),
        ..EnvoyOptions::default()
    };
    let envoy = Envoy::start_path(&repo_root().join("e2e/probe/envoy.yaml"), opts).unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    (envoy, upstream)
}

/// One request on a new connection (so either worker may take it), asking the probe who it is.
fn ask(envoy: &Envoy, trap: Option<&str>) -> Answer {
    let mut request = Request::get("/").header("x-probe-vm", "1");
    if let Some(place) = trap {
        request = request.header(TRAP, place);
    }
    let r = request.send(envoy.port(LISTENER_PORT)).unwrap();
    Answer {
        status: r.status,
        vm: r.header("x-probe-vm"),
        served: r.header("x-probe-vm-served").and_then(|n| n.parse().ok()).unwrap_or(0),
    }
}

/// Ask until both workers' VMs have answered: their two ids.
fn both_vms(envoy: &Envoy) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for _ in 0..400 {
        let a = ask(envoy, None);
        assert_eq!(a.status, 200, "before any trap: {a:?}");
        ids.insert(a.vm.expect("the probe names its VM"));
        if ids.len() == 2 {
            return ids;
        }
    }
    panic!("400 requests on new connections never reached both workers: {ids:?}");
}

/// Ask until the trapped worker and the healthy one have each taken at least 3 requests (bounded):
/// (answers, how many came from the healthy worker's VM `survivor`). Which worker a connection
/// lands on is the kernel's choice, so this asks until both were seen rather than a fixed count.
fn after_trap(envoy: &Envoy, ids: &BTreeSet<String>, is_trapped: impl Fn(&Answer) -> bool) -> (Vec<Answer>, String) {
    let mut answers = Vec::new();
    for _ in 0..400 {
        answers.push(ask(envoy, None));
        let trapped = answers.iter().filter(|a| is_trapped(a)).count();
        if trapped >= 3 && answers.len() - trapped >= 3 {
            break;
        }
    }
    let healthy: BTreeSet<String> = answers.iter().filter(|a| !is_trapped(a)).filter_map(|a| a.vm.clone()).collect();
    assert_eq!(healthy.len(), 1, "one healthy worker, one VM: {answers:?}");
    let survivor = healthy.into_iter().next().unwrap_or_default();
    assert!(ids.contains(&survivor), "the healthy worker keeps its VM (no restart): {survivor} not in {ids:?}");
    let trapped = answers.iter().filter(|a| is_trapped(a)).count();
    assert!(trapped >= 1, "400 requests never reached the trapped worker: {answers:?}");
    (answers, survivor)
}

/// The request that trapped on its request headers never reached the upstream.
fn trapped_request_stopped(upstream: &Upstream) {
    let leaked = upstream.requests().iter().filter(|r| r.header_value(TRAP).is_some()).count();
    assert_eq!(leaked, 0, "the request that trapped reached the upstream");
}

fn reload_stats(envoy: &Envoy) -> (u64, u64, u64) {
    (
        envoy.stat("wasm.probe.vm_reload_backoff"),
        envoy.stat("wasm.probe.vm_reload_success"),
        envoy.stat("wasm.probe.vm_reload_failure"),
    )
}

/// Longer than FAIL_RELOAD's default 1 s backoff: what a policy does after it, it does for good.
const PAST_RELOAD_BACKOFF: Duration = Duration::from_secs(3);

#[test]
fn fail_closed_refuses_every_later_request_on_the_trapped_worker_for_good() {
    let (envoy, upstream) = start("failure_policy: FAIL_CLOSED");
    let ids = both_vms(&envoy);
    let trap = ask(&envoy, Some("request-headers"));
    assert_eq!((trap.status, trap.vm), (503, None), "the request that trapped");
    trapped_request_stopped(&upstream);

    let refused = |a: &Answer| a.status == 503 && a.vm.is_none();
    let (answers, survivor) = after_trap(&envoy, &ids, refused);
    for a in &answers {
        assert!(refused(a) || (a.status == 200 && a.vm.as_ref() == Some(&survivor)), "{a:?}");
    }
    // No recovery: past the time FAIL_RELOAD would have reloaded, the worker still refuses.
    std::thread::sleep(PAST_RELOAD_BACKOFF);
    let (later, survivor_later) = after_trap(&envoy, &ids, refused);
    assert_eq!(survivor_later, survivor);
    assert!(later.iter().all(|a| refused(a) || a.vm.as_ref() == Some(&survivor)), "{later:?}");
    assert_eq!(reload_stats(&envoy), (0, 0, 0), "FAIL_CLOSED never reloads");
    let refused_count = answers.iter().chain(&later).filter(|a| refused(a)).count();
    eprintln!("FAIL_CLOSED: {refused_count} of {} requests refused after the trap", answers.len() + later.len());
}

#[test]
fn fail_open_serves_every_later_request_on_the_trapped_worker_without_the_filter() {
    let (envoy, upstream) = start("failure_policy: FAIL_OPEN");
    let ids = both_vms(&envoy);
    let trap = ask(&envoy, Some("request-headers"));
    // Even FAIL_OPEN does not let the request that trapped through: the trap ended it.
    assert_eq!((trap.status, trap.vm), (503, None), "the request that trapped");
    trapped_request_stopped(&upstream);

    let bypassed = |a: &Answer| a.status == 200 && a.vm.is_none();
    let before = upstream.requests().len();
    let (answers, survivor) = after_trap(&envoy, &ids, bypassed);
    for a in &answers {
        assert!(bypassed(a) || (a.status == 200 && a.vm.as_ref() == Some(&survivor)), "{a:?}");
    }
    assert_eq!(upstream.requests().len() - before, answers.len(), "every request reached the upstream");
    std::thread::sleep(PAST_RELOAD_BACKOFF);
    let (later, _) = after_trap(&envoy, &ids, bypassed);
    assert!(later.iter().all(|a| bypassed(a) || a.vm.as_ref() == Some(&survivor)), "{later:?}");
    assert_eq!(reload_stats(&envoy), (0, 0, 0), "FAIL_OPEN never reloads");
}

#[test]
fn a_trap_on_the_response_path_turns_the_upstream_answer_into_a_503() {
    // The request already reached the upstream (whatever it did, it did); the client gets a 503
    // instead of its answer, under the most lenient policy and the strictest alike.
    for policy in ["FAIL_OPEN", "FAIL_CLOSED"] {
        let (envoy, upstream) = start(&format!("failure_policy: {policy}"));
        let ids = both_vms(&envoy);
        let trap = ask(&envoy, Some("response-headers"));
        assert_eq!((trap.status, trap.vm), (503, None), "{policy}: the request that trapped on its response");
        let reached = upstream.requests().iter().filter(|r| r.header_value(TRAP).is_some()).count();
        assert_eq!(reached, 1, "{policy}: the request reached the upstream before the trap");
        if policy == "FAIL_OPEN" {
            let (answers, survivor) = after_trap(&envoy, &ids, |a| a.status == 200 && a.vm.is_none());
            assert!(answers.iter().all(|a| a.status == 200 && (a.vm.is_none() || a.vm.as_ref() == Some(&survivor))));
        }
    }
}

/// FAIL_RELOAD: trap, then ask until the trapped worker has a new VM. Returns (requests refused
/// while the backoff ran, the new VM's first answer, seconds from the trap to it). `known`: every
/// VM id seen so far; after a trap only the healthy worker's one may answer again.
fn trap_until_reloaded(envoy: &Envoy, known: &BTreeSet<String>) -> (usize, Answer, f64) {
    let trapped_at = Instant::now();
    let trap = ask(envoy, Some("request-headers"));
    assert_eq!((trap.status, trap.vm), (503, None), "the request that trapped");
    let mut refused = 0;
    let mut healthy = BTreeSet::new();
    loop {
        let a = ask(envoy, None);
        match &a.vm {
            None => {
                assert_eq!(a.status, 503, "while the backoff runs the worker refuses, never bypasses: {a:?}");
                refused += 1;
                // Paced: the backoff is about a second; no need to spin a loaded machine.
                std::thread::sleep(Duration::from_millis(10));
            }
            Some(vm) if known.contains(vm) => {
                assert_eq!(a.status, 200, "{a:?}");
                healthy.insert(vm.clone());
                assert_eq!(healthy.len(), 1, "only the healthy worker's VM answers: the trapped one is gone");
            }
            Some(vm) => {
                assert_eq!(a.status, 200, "{a:?}");
                assert_ne!(vm, "0000000000000000", "the fresh VM was configured (on_configure draws its id)");
                assert_eq!(a.served, 1, "a reload starts a fresh VM, with nothing of the old one: {a:?}");
                return (refused, a, trapped_at.elapsed().as_secs_f64());
            }
        }
        assert!(
            trapped_at.elapsed() < Duration::from_secs(60),
            "no reload within 60 s of the trap ({refused} refused)"
        );
    }
}

#[test]
fn fail_reload_refuses_during_the_backoff_then_starts_a_fresh_vm_every_time() {
    let (envoy, upstream) = start("failure_policy: FAIL_RELOAD");
    let mut known = both_vms(&envoy);
    let mut refused_total = 0;
    let mut delays = Vec::new();
    for round in 0..3 {
        let (refused, fresh, secs) = trap_until_reloaded(&envoy, &known);
        trapped_request_stopped(&upstream);
        refused_total += refused;
        delays.push(secs);
        known.insert(fresh.vm.unwrap_or_default());
        // Recovered: both workers run the probe again, nothing refused.
        for _ in 0..20 {
            let a = ask(&envoy, None);
            assert_eq!(a.status, 200, "round {round}, after the reload: {a:?}");
            assert!(a.vm.as_ref().is_some_and(|vm| known.contains(vm)), "{a:?}");
        }
    }
    let (backoff, success, failure) = reload_stats(&envoy);
    assert_eq!((success, failure), (3, 0), "one reload per trap");
    assert_eq!(backoff, refused_total as u64, "each refused request is one the backoff skipped");
    eprintln!(
        "FAIL_RELOAD (default backoff): reloaded {delays:.2?} s after each of 3 traps; {refused_total} requests refused meanwhile"
    );
}

#[test]
fn fail_reload_waits_out_a_configured_backoff() {
    // `reload_config.backoff.base_interval` 3 s: the figure printed is the time from the trap to
    // the reload (no timing assertion; the doc pages quote it).
    let (envoy, _upstream) =
        start("failure_policy: FAIL_RELOAD\nreload_config: { backoff: { base_interval: 3s, max_interval: 10s } }");
    let known = both_vms(&envoy);
    let (refused, _, secs) = trap_until_reloaded(&envoy, &known);
    assert_eq!(reload_stats(&envoy), (refused as u64, 1, 0));
    eprintln!(
        "FAIL_RELOAD (base_interval 3s): reloaded {secs:.2} s after the trap, {refused} requests refused meanwhile"
    );
}

/// The same FAIL_RELOAD on a real filter, as shipped (envoy-configs/jwt-auth.yaml) but with the
/// test-only build `dist/test/jwt-auth-trap.wasm` (shared's `test-trap` feature: the glue traps
/// on `x-test-trap`). While the trapped worker waits for its reload, nothing gets through
/// unauthenticated; after it, the fresh VM verifies tokens again, on every worker.
#[test]
fn jwt_auth_under_fail_reload_never_lets_a_request_through_and_comes_back() {
    use e2e::jwks_server::JwksServer;
    use e2e::jwt::{claims, jwks, token, Alg, REMOTE_KEYS};
    let jwks_server = JwksServer::start(0, &jwks(&REMOTE_KEYS)).unwrap();
    let mut opts = EnvoyOptions {
        concurrency: 2,
        edit: Some(Box::new(|config: String| {
            assert!(config.contains("failure_policy: FAIL_RELOAD"), "the shipped config's policy changed");
            config.replace("dist/jwt-auth.wasm", "dist/test/jwt-auth-trap.wasm")
        })),
        ..EnvoyOptions::default()
    };
    opts.preset_ports.insert(e2e::JWKS_PORT, jwks_server.port);
    let envoy = Envoy::start_with("jwt-auth.yaml", opts).unwrap();
    let upstream = Upstream::start(envoy.port(UPSTREAM_PORT)).unwrap();
    let port = envoy.port(LISTENER_PORT);
    let valid = format!("Bearer {}", token(Alg::ES256, &claims("reload")));
    let send = |path: &str, auth: Option<&str>, trap: bool| {
        let mut r = Request::get(path);
        if let Some(auth) = auth {
            r = r.header("authorization", auth);
        }
        if trap {
            r = r.header("x-test-trap", "1");
        }
        r.send(port).unwrap().status
    };
    for i in 0..20 {
        assert_eq!(send(&format!("/api/before/{i}"), Some(&valid), false), 200);
    }
    assert_eq!(send("/api/trap", Some(&valid), true), 503, "the request that trapped");

    // Until the trapped worker has reloaded: valid tokens get 200 (the healthy worker) or 503 (the
    // trapped one, in its backoff); no token gets 401 or 503, never the upstream.
    let started = Instant::now();
    let (mut refused, mut i) = (0, 0);
    while envoy.stat("wasm.jwt-auth.vm_reload_success") == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "no reload within 60 s ({refused} refused)");
        i += 1;
        let (with_token, without) =
            (send(&format!("/api/wait/{i}"), Some(&valid), false), send("/api/anon", None, false));
        assert!(matches!(with_token, 200 | 503), "valid token while reloading: {with_token}");
        assert!(matches!(without, 401 | 503), "no token while reloading: {without}");
        refused += usize::from(with_token == 503) + usize::from(without == 503);
        std::thread::sleep(Duration::from_millis(10));
    }
    let reloaded_after = started.elapsed();
    // Reloaded: both workers verify again.
    for i in 0..40 {
        assert_eq!(send(&format!("/api/after/{i}"), Some(&valid), false), 200, "after the reload");
        assert_eq!(send("/api/anon", None, false), 401, "after the reload");
    }
    let leaked = upstream.requests().iter().filter(|r| r.path == "/api/anon" || r.path == "/api/trap").count();
    assert_eq!(leaked, 0, "a request without a token, or the one that trapped, reached the upstream");
    assert_eq!(envoy.stat("wasm.jwt-auth.vm_reload_success"), 1);
    // The fresh VM took the keys from proxy-wasm shared data, which outlives the VM: no new fetch.
    assert_eq!(envoy.stat("wasmcustom.jwt_auth.jwks_fetch_success"), 1, "the reload fetched the JWKS again");
    eprintln!(
        "jwt-auth FAIL_RELOAD: reloaded {:.2} s after the trap, {refused} requests refused meanwhile; JWKS calls {}",
        reloaded_after.as_secs_f64(),
        jwks_server.calls()
    );
}
