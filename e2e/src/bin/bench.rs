//! `make bench`: the CPU each filter costs per request in a real Envoy, against the same Envoy
//! with the router only, and against Envoy's native equivalent where there is one. A
//! measurement tool, not a test: it asserts behaviour (every variant's response is checked
//! before measuring) but never timing.
//!
//! Method. Every variant is its own Envoy (`--concurrency 1`), all started at once on distinct
//! ports and pinned to one CPU; wrk and the upstream are pinned to another. Rounds are
//! interleaved (the order rotates each round) so host noise falls on every variant alike, after
//! one warm-up round that is not counted. CPU per request = the Envoy process's utime + stime
//! delta (`/proc/<pid>/stat`) over the run / the requests wrk completed. Ratios and added µs are
//! medians of per-round pairs (a variant against the baseline of the same round).
//!
//! Environment: BENCH_ROUNDS (5), BENCH_SECONDS (5), BENCH_CONNECTIONS (16), BENCH_ONLY
//! (comma-separated parts of variant names to run; the baseline always runs).
//!
//! jwt-auth and native jwt_authn (bench/jwt-auth.yaml, bench/native-jwt-authn.yaml: the same
//! JSON, both with a 100-entry verified-token cache) are measured three ways ([`JWT_TOKENS`]):
//! one RS256 token repeated (cache hits after the first), and a pre-generated list of 4096
//! distinct RS256 or ES256 tokens cycled by a wrk Lua script (more than either cache holds, so
//! every request verifies a signature). Tokens come from the committed test keys (e2e/src/jwt.rs),
//! valid for ten hours, written to target/bench/tokens-*.txt.
//!
//! Adding a filter: a row in [`VARIANTS`] (its config under envoy-configs/, the request wrk
//! sends, a check of one response) and a row in [`COMPARISONS`] when a native filter does the
//! same job.
//!
//! Envoys are started by the test harness (`e2e::envoy::Envoy`) with the bench's extras:
//! `pin_cpu` (taskset), `preset_ports` (one upstream shared by every Envoy) and `pid()` for
//! CPU accounting.

use e2e::envoy::{wasm_files, Envoy, EnvoyOptions};
use e2e::http::{Request, Response};
use e2e::jwt::{self, Alg};
use e2e::token_server::TokenServer;
use e2e::upstream::{Upstream, UpstreamOptions};
use e2e::{envoy_bin, repo_root, LISTENER_PORT, TOKEN_SERVER_PORT, UPSTREAM_PORT};
use security_headers::config::{DEFAULT_HEADERS, DEFAULT_REMOVE_HEADERS, HSTS};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::process::{Command, Stdio};
use std::time::Instant;

/// One Envoy to measure: a row of the table.
struct Variant {
    name: &'static str,
    /// Under `envoy-configs/`; ports follow the harness convention (10000, 9901, 18080).
    config: &'static str,
    /// The request wrk sends (GET).
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// Checked on one response before measuring: a variant that misbehaves is not measured.
    check: fn(&Response) -> Result<(), String>,
}

/// Every Envoy measured, a row each; the first is the baseline every other is compared with.
const VARIANTS: &[Variant] = &[
    Variant { name: "router-only", config: "bench/router-only.yaml", path: "/", headers: &[], check: plain_proxy },
    Variant {
        name: "security-headers (wasm)",
        config: "security-headers.yaml",
        path: "/",
        headers: &[],
        check: security_headers_applied,
    },
    Variant {
        name: "native header_mutation",
        config: "bench/native-header-mutation.yaml",
        path: "/",
        headers: &[],
        check: security_headers_applied,
    },
    // token-fetch with a token in hand (the bench's token server issues one-hour tokens): the
    // cost measured is the per-request injection, not the fetch. Fail-closed by default, so a
    // 200 with the upstream's body means the request carried a token (without one: 503).
    Variant { name: "token-fetch (wasm)", config: "token-fetch.yaml", path: "/", headers: &[], check: from_upstream },
    Variant {
        name: "native request header add",
        config: "bench/native-request-header.yaml",
        path: "/",
        headers: &[],
        check: from_upstream,
    },
    Variant {
        name: "rate-limit (wasm)",
        config: "bench/rate-limit.yaml",
        path: "/",
        headers: &[],
        check: x_ratelimit_headers,
    },
    Variant {
        name: "native local_ratelimit",
        config: "bench/native-local-ratelimit.yaml",
        path: "/",
        headers: &[],
        check: x_ratelimit_headers,
    },
    Variant {
        name: "router-only, 1 KiB POST",
        config: "bench/router-only.yaml",
        path: "/",
        headers: &[],
        check: from_upstream,
    },
    Variant {
        name: "body-logger, 1 KiB POST",
        config: "bench/body-logger.yaml",
        path: "/",
        headers: &[],
        check: from_upstream,
    },
    Variant {
        name: "router-only, 64 KiB POST",
        config: "bench/router-only.yaml",
        path: "/",
        headers: &[],
        check: from_upstream,
    },
    Variant {
        name: "body-logger, 64 KiB POST",
        config: "bench/body-logger.yaml",
        path: "/",
        headers: &[],
        check: from_upstream,
    },
    // The floor of each JWT filter: a path no rule covers (no token read, nothing verified).
    Variant {
        name: "jwt-auth, no JWT needed",
        config: "bench/jwt-auth.yaml",
        path: "/open",
        headers: &[],
        check: from_upstream,
    },
    Variant {
        name: "jwt_authn, no JWT needed",
        config: "bench/native-jwt-authn.yaml",
        path: "/open",
        headers: &[],
        check: from_upstream,
    },
    Variant {
        name: "jwt-auth, RS256 repeated",
        config: "bench/jwt-auth.yaml",
        path: "/",
        headers: &[],
        check: from_upstream,
    },
    Variant {
        name: "jwt_authn, RS256 repeated",
        config: "bench/native-jwt-authn.yaml",
        path: "/",
        headers: &[],
        check: from_upstream,
    },
    Variant {
        name: "jwt-auth, RS256 unique",
        config: "bench/jwt-auth.yaml",
        path: "/",
        headers: &[],
        check: from_upstream,
    },
    Variant {
        name: "jwt_authn, RS256 unique",
        config: "bench/native-jwt-authn.yaml",
        path: "/",
        headers: &[],
        check: from_upstream,
    },
    Variant {
        name: "jwt-auth, ES256 unique",
        config: "bench/jwt-auth.yaml",
        path: "/",
        headers: &[],
        check: from_upstream,
    },
    Variant {
        name: "jwt_authn, ES256 unique",
        config: "bench/native-jwt-authn.yaml",
        path: "/",
        headers: &[],
        check: from_upstream,
    },
];

/// The JWT variants' tokens: one repeated, or a cycled list of distinct ones.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tokens {
    RepeatedRs256,
    UniqueRs256,
    UniqueEs256,
}

const JWT_TOKENS: &[(&str, Tokens)] = &[
    ("jwt-auth, RS256 repeated", Tokens::RepeatedRs256),
    ("jwt_authn, RS256 repeated", Tokens::RepeatedRs256),
    ("jwt-auth, RS256 unique", Tokens::UniqueRs256),
    ("jwt_authn, RS256 unique", Tokens::UniqueRs256),
    ("jwt-auth, ES256 unique", Tokens::UniqueEs256),
    ("jwt_authn, ES256 unique", Tokens::UniqueEs256),
];

/// Distinct tokens per list: far more than the 100-entry caches of both filters.
const UNIQUE_TOKENS: usize = 4096;

fn jwt_tokens(variant: &Variant) -> Option<Tokens> {
    JWT_TOKENS.iter().find(|(name, _)| *name == variant.name).map(|(_, t)| *t)
}

fn token_list_path(alg: Alg) -> std::path::PathBuf {
    repo_root().join("target").join("bench").join(format!("tokens-{}.txt", alg.name().to_ascii_lowercase()))
}

fn bench_claims(n: usize) -> serde_json::Value {
    // Ten hours: no token expires during a run.
    jwt::with(jwt::claims(&format!("bench-{n}")), serde_json::json!({"exp": jwt::now() + 36_000}))
}

/// Write the token lists the selected JWT variants need (signing 4096 RS256 tokens takes a few
/// seconds); returns the repeated token.
fn prepare_tokens(variants: &[&'static Variant]) -> Result<String, String> {
    let needed: Vec<Tokens> = variants.iter().filter_map(|v| jwt_tokens(v)).collect();
    let dir = repo_root().join("target").join("bench");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for (kind, alg) in [(Tokens::UniqueRs256, Alg::RS256), (Tokens::UniqueEs256, Alg::ES256)] {
        if needed.contains(&kind) {
            let list: Vec<String> = (0..UNIQUE_TOKENS).map(|n| jwt::token(alg, &bench_claims(n))).collect();
            let path = token_list_path(alg);
            fs::write(&path, list.join("\n") + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(jwt::token(Alg::RS256, &bench_claims(0)))
}

/// The first token a JWT variant sends (its response check uses it).
fn first_token(kind: Tokens, repeated: &str) -> Result<String, String> {
    let alg = match kind {
        Tokens::RepeatedRs256 => return Ok(repeated.to_string()),
        Tokens::UniqueRs256 => Alg::RS256,
        Tokens::UniqueEs256 => Alg::ES256,
    };
    let path = token_list_path(alg);
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines().next().map(String::from).ok_or_else(|| format!("{} is empty", path.display()))
}

/// wrk cycles a token list through this Lua script (one wrk thread: one counter for all its
/// connections).
fn wrk_token_script(alg: Alg) -> Result<std::path::PathBuf, String> {
    let list = token_list_path(alg);
    let path = repo_root().join("target").join("bench").join(format!("tokens-{}.lua", alg.name().to_ascii_lowercase()));
    let script = format!(
        "local tokens = {{}}\nfor line in io.lines(\"{}\") do tokens[#tokens + 1] = \"Bearer \" .. line end\n\
         local i = 0\nrequest = function()\n  i = i % #tokens + 1\n  \
         return wrk.format(\"GET\", nil, {{[\"Authorization\"] = tokens[i]}})\nend\n",
        list.display()
    );
    fs::write(&path, script).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Variants that POST a JSON body of this many bytes (`{"data":"xxx…"}`) instead of a GET.
const REQUEST_BODIES: &[(&str, usize)] = &[
    ("router-only, 1 KiB POST", 1024),
    ("body-logger, 1 KiB POST", 1024),
    ("router-only, 64 KiB POST", 64 * 1024),
    ("body-logger, 64 KiB POST", 64 * 1024),
];

/// A variant compared with another than the GET baseline: the same body through router only,
/// in the same rounds, so the body's own transfer cost cancels out.
const SAME_REQUEST_BASELINES: &[(&str, &str)] =
    &[("body-logger, 1 KiB POST", "router-only, 1 KiB POST"), ("body-logger, 64 KiB POST", "router-only, 64 KiB POST")];

fn request_body(variant: &Variant) -> Option<Vec<u8>> {
    let (_, size) = REQUEST_BODIES.iter().find(|(name, _)| *name == variant.name)?;
    let filler = size.saturating_sub(r#"{"data":""}"#.len());
    Some(format!(r#"{{"data":"{}"}}"#, "x".repeat(filler)).into_bytes())
}

/// wrk sends bodies through a Lua script: this one, written next to the report.
fn wrk_body_script(body: &[u8]) -> Result<std::path::PathBuf, String> {
    let dir = repo_root().join("target").join("bench");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join(format!("post-{}.lua", body.len()));
    let lua_body: String = String::from_utf8_lossy(body).replace('\\', "\\\\").replace('"', "\\\"");
    let script = format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = \"{lua_body}\"\n"
    );
    fs::write(&path, script).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// A wasm filter and the native filter doing the same job: their added CPU is compared.
struct Comparison {
    wasm: &'static str,
    native: &'static str,
}

const COMPARISONS: &[Comparison] = &[
    Comparison { wasm: "jwt-auth, no JWT needed", native: "jwt_authn, no JWT needed" },
    Comparison { wasm: "security-headers (wasm)", native: "native header_mutation" },
    Comparison { wasm: "token-fetch (wasm)", native: "native request header add" },
    Comparison { wasm: "rate-limit (wasm)", native: "native local_ratelimit" },
    Comparison { wasm: "jwt-auth, RS256 repeated", native: "jwt_authn, RS256 repeated" },
    Comparison { wasm: "jwt-auth, RS256 unique", native: "jwt_authn, RS256 unique" },
    Comparison { wasm: "jwt-auth, ES256 unique", native: "jwt_authn, ES256 unique" },
];

// ---- response checks ----

const UPSTREAM_SERVER: &str = "bench-upstream/1.0";
const UPSTREAM_BODY: &str = r#"{"upstream":"bench","ok":true}"#;

fn from_upstream(r: &Response) -> Result<(), String> {
    if r.status != 200 {
        return Err(format!("status {} (want 200)", r.status));
    }
    if r.body_text() != UPSTREAM_BODY {
        return Err("the body is not the bench upstream's".into());
    }
    Ok(())
}

/// Router only: the upstream's answer passes through untouched (its `server` header too).
fn plain_proxy(r: &Response) -> Result<(), String> {
    from_upstream(r)?;
    if r.header("server").as_deref() != Some(UPSTREAM_SERVER) {
        return Err(format!("server: {:?} (want the upstream's {UPSTREAM_SERVER:?})", r.header("server")));
    }
    if let Some((name, _)) = DEFAULT_HEADERS.iter().find(|(name, _)| r.has_header(name)) {
        return Err(format!("{name} is set, but nothing here should set it"));
    }
    Ok(())
}

/// security-headers' defaults over plain HTTP: every default header but HSTS, with exactly the
/// default value, and none of the fingerprinting headers.
fn security_headers_applied(r: &Response) -> Result<(), String> {
    from_upstream(r)?;
    for (name, value) in DEFAULT_HEADERS {
        let got = r.header_all(name);
        if *name == HSTS {
            if !got.is_empty() {
                return Err(format!("{HSTS} on plain HTTP: {got:?}"));
            }
        } else if got != [*value] {
            return Err(format!("{name}: {got:?} (want [{value:?}])"));
        }
    }
    if let Some(name) = DEFAULT_REMOVE_HEADERS.iter().find(|name| r.has_header(name)) {
        return Err(format!("{name} was not removed: {:?}", r.header_all(name)));
    }
    Ok(())
}

/// A rate limiter that admitted the request and said so: Envoy's DRAFT_VERSION_03 headers, with
/// the bench bucket's size (both rate-limit variants use the same one).
fn x_ratelimit_headers(r: &Response) -> Result<(), String> {
    from_upstream(r)?;
    if r.header("x-ratelimit-limit").as_deref() != Some("1000000000") {
        return Err(format!("x-ratelimit-limit: {:?} (want 1000000000)", r.header("x-ratelimit-limit")));
    }
    for name in ["x-ratelimit-remaining", "x-ratelimit-reset"] {
        if !r.has_header(name) {
            return Err(format!("no {name}"));
        }
    }
    Ok(())
}

// ---- settings ----

struct Settings {
    rounds: u32,
    seconds: u32,
    connections: u32,
    only: Vec<String>,
}

fn env_count(name: &str, default: u32) -> Result<u32, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) if v.trim().is_empty() => Ok(default),
        Ok(v) => match v.trim().parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name}={v:?}: want a whole number above 0")),
        },
    }
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let only = std::env::var("BENCH_ONLY")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(Settings {
            rounds: env_count("BENCH_ROUNDS", 5)?,
            seconds: env_count("BENCH_SECONDS", 5)?,
            connections: env_count("BENCH_CONNECTIONS", 16)?,
            only,
        })
    }

    fn selected(&self) -> Vec<&'static Variant> {
        VARIANTS
            .iter()
            .enumerate()
            .filter(|(i, v)| {
                *i == 0 || self.only.is_empty() || self.only.iter().any(|o| v.name.to_ascii_lowercase().contains(o))
            })
            .map(|(_, v)| v)
            .collect()
    }
}

// ---- CPU pinning ----

#[derive(Clone, Copy)]
struct Pinning {
    envoy_cpu: u32,
    load_cpu: u32,
}

/// CPUs this process may run on, from `Cpus_allowed_list` (e.g. `0-3,6`).
fn allowed_cpus() -> Vec<u32> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or("").trim();
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u32>(), hi.trim().parse::<u32>()) {
            cpus.extend(lo..=hi);
        }
    }
    cpus
}

fn taskset_works() -> bool {
    Command::new("taskset").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Envoys on the first allowed CPU, wrk and the upstream on the second; `None` (unpinned) with
/// one CPU or no taskset.
fn plan_pinning() -> (Option<Pinning>, String) {
    let cpus = allowed_cpus();
    match cpus.as_slice() {
        [envoy_cpu, load_cpu, ..] if taskset_works() => (
            Some(Pinning { envoy_cpu: *envoy_cpu, load_cpu: *load_cpu }),
            format!("Envoys pinned to CPU {envoy_cpu}, wrk and the upstream to CPU {load_cpu} (taskset)"),
        ),
        [_, _, ..] => (None, "UNPINNED: taskset not found (util-linux); Envoy shares CPUs with wrk".into()),
        _ => (None, format!("UNPINNED: only {} CPU allowed; Envoy shares it with wrk and the upstream", cpus.len())),
    }
}

/// Pin every thread of this process (the upstream's threads are created later and inherit it).
fn pin_self(cpu: u32) -> Result<(), String> {
    let out = Command::new("taskset")
        .args(["-a", "-c", "-p", &cpu.to_string(), &std::process::id().to_string()])
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("taskset -a -c -p {cpu}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// `program` as a command, under `taskset -c <cpu>` when pinned.
fn pinned(cpu: Option<u32>, program: &str) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string(), program]);
            c
        }
        None => Command::new(program),
    }
}

// ---- the upstream ----

/// The harness's upstream with a fixed answer and no request log (it would hold millions).
/// Like the tests' echo, the answer carries `server` and `x-powered-by`, so removing them is
/// part of the work measured.
fn start_upstream() -> Result<Upstream, String> {
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nserver: {UPSTREAM_SERVER}\r\n\
         x-powered-by: bench\r\n\r\n{UPSTREAM_BODY}",
        UPSTREAM_BODY.len()
    );
    Upstream::start_with(
        0,
        UpstreamOptions {
            no_recording: true,
            fixed_response: Some(response.into_bytes().into()),
            ..UpstreamOptions::default()
        },
    )
}

// ---- Envoy ----

/// One Envoy per variant, started by the test harness (a child of this process, killed and
/// reaped on drop), with the shared upstream's port preset and Envoy pinned.
struct Proxy {
    variant: &'static Variant,
    envoy: Envoy,
    listener: u16,
    /// JWT variants: the token of the response check (and the one wrk repeats).
    token: Option<String>,
}

impl Proxy {
    fn start(
        variant: &'static Variant,
        upstream_port: u16,
        token_port: u16,
        cpu: Option<u32>,
        repeated_jwt: &str,
    ) -> Result<Proxy, String> {
        let opts = EnvoyOptions {
            concurrency: 1,
            log_level: "warning",
            // The same substitution as the tests, except that 18080 is the one shared upstream.
            // 18081: the token server, for token-fetch.
            preset_ports: BTreeMap::from([(UPSTREAM_PORT, upstream_port), (TOKEN_SERVER_PORT, token_port)]),
            pin_cpu: cpu,
            ..EnvoyOptions::default()
        };
        let envoy = Envoy::start_with(variant.config, opts).map_err(|e| format!("{}: {e}", variant.name))?;
        let listener = envoy.port(LISTENER_PORT);
        if listener == 0 {
            return Err(format!("{}: needs a listener on port_value {LISTENER_PORT}", variant.config));
        }
        let token = jwt_tokens(variant).map(|kind| first_token(kind, repeated_jwt)).transpose()?;
        Ok(Proxy { variant, envoy, listener, token })
    }

    fn ensure_running(&mut self) -> Result<(), String> {
        match self.envoy.exited() {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} ({}): Envoy exited ({status}); log:\n{}",
                self.variant.name,
                self.variant.config,
                self.envoy.log()
            )),
        }
    }

    fn pid(&self) -> u32 {
        self.envoy.pid().unwrap_or(0)
    }

    fn request(&self) -> Request {
        let mut r = self.variant.headers.iter().fold(Request::get(self.variant.path), |r, (k, v)| r.header(k, v));
        if let Some(token) = &self.token {
            r = r.header("authorization", &format!("Bearer {token}"));
        }
        match request_body(self.variant) {
            Some(body) => r.method("POST").header("content-type", "application/json").body(&body),
            None => r,
        }
    }

    /// One request through this Envoy, checked; an error says what is wrong and shows it.
    fn sanity_check(&self) -> Result<(), String> {
        let response = self.request().send(self.listener).map_err(|e| format!("{}: {e}", self.variant.name))?;
        (self.variant.check)(&response).map_err(|e| {
            format!(
                "variant `{}` (envoy-configs/{}) misbehaves, not measuring it: {e}\nGET {} gave:\n{response}",
                self.variant.name, self.variant.config, self.variant.path
            )
        })
    }
}

// ---- CPU accounting ----

/// CPU time of a process from `/proc/<pid>/stat`, in clock ticks: (utime + stime of all its
/// threads, cutime + cstime of the children it has waited for).
fn process_ticks(pid: &str) -> Result<(u64, u64), String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces; the first
    // of these is field 3 (state), so utime, stime, cutime, cstime (14-17) are at 11-14.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (field(11), field(12), field(13), field(14)) {
        (Some(utime), Some(stime), Some(cutime), Some(cstime)) => Ok((utime + stime, cutime + cstime)),
        _ => Err(format!("/proc/{pid}/stat: cannot read utime/stime from {stat:?}")),
    }
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// One CPU's counters from /proc/stat (the `cpu` total when `cpu` is None).
#[derive(Clone, Copy, Default)]
struct CpuTimes {
    busy: u64,
    steal: u64,
    total: u64,
}

fn cpu_times(cpu: Option<u32>) -> CpuTimes {
    let label = cpu.map_or_else(|| "cpu".to_string(), |c| format!("cpu{c}"));
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.split_whitespace().next() == Some(label.as_str())) else {
        return CpuTimes::default();
    };
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let v: Vec<u64> = line.split_whitespace().skip(1).take(8).filter_map(|f| f.parse().ok()).collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    CpuTimes { busy: at(0) + at(1) + at(2) + at(5) + at(6), steal: at(7), total: v.iter().sum() }
}

/// (busy %, steal %) between two readings.
fn cpu_percent(before: CpuTimes, after: CpuTimes) -> (f64, f64) {
    let total = after.total.saturating_sub(before.total) as f64;
    if total <= 0.0 {
        return (0.0, 0.0);
    }
    let pct = |a: u64, b: u64| 100.0 * a.saturating_sub(b) as f64 / total;
    (pct(after.busy, before.busy), pct(after.steal, before.steal))
}

// ---- wrk ----

struct WrkResult {
    requests: u64,
    rps: f64,
}

fn run_wrk(settings: &Settings, pinning: Option<Pinning>, proxy: &Proxy) -> Result<WrkResult, String> {
    let mut cmd = pinned(pinning.map(|p| p.load_cpu), "wrk");
    cmd.args(["-t1", &format!("-c{}", settings.connections), &format!("-d{}s", settings.seconds), "--timeout", "5s"]);
    for (k, v) in proxy.variant.headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    if let Some(body) = request_body(proxy.variant) {
        cmd.arg("-s").arg(wrk_body_script(&body)?);
    }
    match (jwt_tokens(proxy.variant), &proxy.token) {
        (Some(Tokens::RepeatedRs256), Some(token)) => {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        (Some(Tokens::UniqueRs256), _) => {
            cmd.arg("-s").arg(wrk_token_script(Alg::RS256)?);
        }
        (Some(Tokens::UniqueEs256), _) => {
            cmd.arg("-s").arg(wrk_token_script(Alg::ES256)?);
        }
        _ => {}
    }
    cmd.arg(format!("http://127.0.0.1:{}{}", proxy.listener, proxy.variant.path));
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("wrk: {e} (run `make deps`)"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("wrk failed ({}): {text}{}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    parse_wrk(&text).map_err(|e| format!("{}: {e}; wrk said:\n{text}", proxy.variant.name))
}

/// Requests completed and requests/s from wrk's summary; any error response or socket error
/// is an error (a variant that fails requests is not measuring what it claims).
fn parse_wrk(text: &str) -> Result<WrkResult, String> {
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or("no `N requests in` line")?;
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .ok_or("no `Requests/sec:` line")?;
    if let Some(line) = text.lines().find(|l| l.contains("Non-2xx or 3xx responses")) {
        return Err(format!("error responses: {}", line.trim()));
    }
    if let Some(line) = text.lines().find(|l| l.contains("Socket errors")) {
        return Err(format!("socket errors: {}", line.trim()));
    }
    if requests == 0 {
        return Err("no request completed".into());
    }
    Ok(WrkResult { requests, rps })
}

// ---- measuring ----

/// A run during which other processes used more than this share of the Envoy CPU is repeated,
/// at most this many times.
const BUSY_MACHINE_PCT: f64 = 15.0;
const BUSY_MACHINE_RETRIES: u32 = 2;

struct Sample {
    variant: usize,
    round: u32,
    requests: u64,
    rps: f64,
    envoy_cpu_s: f64,
    us_per_request: f64,
    /// CPU per request of the load side, to show it is not what limits the rate.
    upstream_us: f64,
    wrk_us: f64,
    /// Envoy's CPU time / wall time: near 100% means Envoy, not the load side, is the limit.
    envoy_busy_pct: f64,
    load_cpu_busy_pct: f64,
    envoy_cpu_steal_pct: f64,
    /// Busy time on the Envoy CPU that was not this Envoy: other processes on the machine.
    envoy_cpu_other_pct: f64,
}

fn measure(
    settings: &Settings,
    pinning: Option<Pinning>,
    clk_tck: u64,
    index: usize,
    proxy: &mut Proxy,
    round: u32,
) -> Result<Sample, String> {
    proxy.ensure_running()?;
    let envoy_cpu = pinning.map(|p| p.envoy_cpu);
    let load_cpu = pinning.map(|p| p.load_cpu);
    let (envoy_before, load_before) = (cpu_times(envoy_cpu), cpu_times(load_cpu));
    let pid = proxy.pid().to_string();
    let ((ticks_before, _), (upstream_before, wrk_before)) = (process_ticks(&pid)?, process_ticks("self")?);
    let start = Instant::now();
    let wrk = run_wrk(settings, pinning, proxy)?;
    let wall = start.elapsed().as_secs_f64();
    let ((ticks_after, _), (upstream_after, wrk_after)) = (process_ticks(&pid)?, process_ticks("self")?);
    let ticks = ticks_after.saturating_sub(ticks_before);
    // This process is the upstream (its main thread sleeps in wrk's wait); wrk is the only
    // child reaped meanwhile.
    let per_request = |ticks: u64| ticks as f64 * 1e6 / clk_tck as f64 / wrk.requests as f64;
    let upstream_us = per_request(upstream_after.saturating_sub(upstream_before));
    let wrk_us = per_request(wrk_after.saturating_sub(wrk_before));
    let (load_busy, _) = cpu_percent(load_before, cpu_times(load_cpu));
    let (envoy_cpu_busy, envoy_steal) = cpu_percent(envoy_before, cpu_times(envoy_cpu));
    proxy.ensure_running()?;
    let envoy_cpu_s = ticks as f64 / clk_tck as f64;
    let envoy_busy_pct = 100.0 * envoy_cpu_s / wall;
    // Unpinned, the "Envoy CPU" is the machine total, where wrk and the upstream run too.
    let envoy_cpu_other_pct = if pinning.is_some() { (envoy_cpu_busy - envoy_busy_pct).max(0.0) } else { f64::NAN };
    Ok(Sample {
        variant: index,
        round,
        requests: wrk.requests,
        rps: wrk.rps,
        envoy_cpu_s,
        us_per_request: per_request(ticks),
        upstream_us,
        wrk_us,
        envoy_busy_pct,
        load_cpu_busy_pct: load_busy,
        envoy_cpu_steal_pct: envoy_steal,
        envoy_cpu_other_pct,
    })
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

/// Per variant: (µs/request, RPS, Envoy busy %) per round, and the per-round pairs with the baseline.
struct Summary {
    us: Vec<f64>,
    rps: Vec<f64>,
    busy: Vec<f64>,
    ratio: Vec<f64>,
    added: Vec<f64>,
}

fn summarize(samples: &[Sample], variant: usize) -> Summary {
    let mine: Vec<&Sample> = samples.iter().filter(|s| s.variant == variant).collect();
    let baseline_of = |round: u32| samples.iter().find(|s| s.variant == 0 && s.round == round);
    let pairs: Vec<(f64, f64)> =
        mine.iter().filter_map(|s| baseline_of(s.round).map(|b| (s.us_per_request, b.us_per_request))).collect();
    Summary {
        us: mine.iter().map(|s| s.us_per_request).collect(),
        rps: mine.iter().map(|s| s.rps).collect(),
        busy: mine.iter().map(|s| s.envoy_busy_pct).collect(),
        ratio: pairs.iter().map(|(v, b)| v / b).collect(),
        added: pairs.iter().map(|(v, b)| v - b).collect(),
    }
}

struct Context {
    envoy_version: String,
    pinning_note: String,
    clk_tck: u64,
    cpus: usize,
    wasm_sizes: Vec<(String, u64)>,
}

fn report(settings: &Settings, variants: &[&'static Variant], samples: &[Sample], ctx: &Context) -> String {
    let base = variants.first().map_or("baseline", |v| v.name);
    let mut md = String::new();
    let _ = writeln!(md, "## Envoy CPU per request: filters vs `{base}`\n");
    let _ = writeln!(
        md,
        "| variant | CPU µs/request, median (min–max) | vs {base} | added µs/request | RPS, median | Envoy core busy |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    let summaries: Vec<Summary> = (0..variants.len()).map(|i| summarize(samples, i)).collect();
    for (v, s) in variants.iter().zip(&summaries) {
        let (lo, hi) = min_max(&s.us);
        let (ratio, added) = if std::ptr::eq(*v, variants[0]) {
            ("1.00×".to_string(), "—".to_string())
        } else {
            (format!("{:.2}×", median(&s.ratio)), format!("{:+.1}", median(&s.added)))
        };
        let _ = writeln!(
            md,
            "| {} | {:.1} ({lo:.1}–{hi:.1}) | {ratio} | {added} | {:.0} | {:.0}% |",
            v.name,
            median(&s.us),
            median(&s.rps),
            median(&s.busy)
        );
    }
    let _ = writeln!(md);
    let index_of = |name: &str| variants.iter().position(|v| v.name == name);
    for c in COMPARISONS {
        let (Some(w), Some(n)) = (index_of(c.wasm), index_of(c.native)) else { continue };
        let (wasm_added, native_added) = (median(&summaries[w].added), median(&summaries[n].added));
        let verdict = if native_added >= 1.0 {
            format!("the wasm filter's added CPU is {:.1}× the native filter's", wasm_added / native_added)
        } else {
            "the native filter's added CPU is within noise, so no ratio".to_string()
        };
        let _ = writeln!(
            md,
            "- **{}** adds {wasm_added:+.1} µs/request over {base}; **{}** adds {native_added:+.1} µs/request: \
             {verdict} ({:+.1} µs/request more).",
            c.wasm,
            c.native,
            wasm_added - native_added
        );
    }
    for (variant, baseline) in SAME_REQUEST_BASELINES {
        let (Some(v), Some(b)) = (index_of(variant), index_of(baseline)) else { continue };
        let added: Vec<f64> = samples
            .iter()
            .filter(|s| s.variant == v)
            .filter_map(|s| {
                let base = samples.iter().find(|x| x.variant == b && x.round == s.round)?;
                Some(s.us_per_request - base.us_per_request)
            })
            .collect();
        let ratio: Vec<f64> = samples
            .iter()
            .filter(|s| s.variant == v)
            .filter_map(|s| {
                let base = samples.iter().find(|x| x.variant == b && x.round == s.round)?;
                Some(s.us_per_request / base.us_per_request)
            })
            .collect();
        let (lo, hi) = min_max(&added);
        let _ = writeln!(
            md,
            "- **{variant}** against **{baseline}** (same request, same rounds): {:+.1} µs/request added \
             (per-round {lo:+.1} to {hi:+.1}), {:.2}×.",
            median(&added),
            median(&ratio)
        );
    }
    let steal: Vec<f64> = samples.iter().map(|s| s.envoy_cpu_steal_pct).collect();
    let load: Vec<f64> = samples.iter().map(|s| s.load_cpu_busy_pct).collect();
    let upstream: Vec<f64> = samples.iter().map(|s| s.upstream_us).collect();
    let wrk: Vec<f64> = samples.iter().map(|s| s.wrk_us).collect();
    let other: Vec<f64> = samples.iter().map(|s| s.envoy_cpu_other_pct).filter(|x| !x.is_nan()).collect();
    let wasm = if ctx.wasm_sizes.is_empty() {
        "none".to_string()
    } else {
        ctx.wasm_sizes.iter().map(|(p, n)| format!("{p} {n} bytes")).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(
        md,
        "- Ratio and added µs are medians of per-round pairs (each variant against {base} in the same round). \
         CPU = the Envoy process's utime+stime (CLK_TCK {}) / requests completed; \"Envoy core busy\" = that CPU \
         time / wall time (near 100%: Envoy, not the load side, is the limit).",
        ctx.clk_tck
    );
    // Unpinned, per-CPU shares mean nothing: the "Envoy CPU" is the whole machine.
    let cpu_shares = if other.is_empty() {
        format!("machine steal median {:.0}% (max {:.0}%)", median(&steal), min_max(&steal).1)
    } else {
        format!(
            "on the Envoy CPU, steal median {:.0}% (max {:.0}%) and other processes median {:.0}% (max {:.0}%); \
             the load CPU busy {:.0}% (median)",
            median(&steal),
            min_max(&steal).1,
            median(&other),
            min_max(&other).1,
            median(&load)
        )
    };
    let _ = writeln!(
        md,
        "- Machine: Envoy {}; one Envoy per variant, `--concurrency 1`; wasm: {wasm}; {} rounds × {} s after one \
         warm-up round, interleaved, order rotated each round; `wrk -t1 -c{}`; {}; {} CPUs. Load side per request \
         (medians): upstream {:.1} µs, wrk {:.1} µs. During runs: {cpu_shares}.",
        ctx.envoy_version,
        settings.rounds,
        settings.seconds,
        settings.connections,
        ctx.pinning_note,
        ctx.cpus,
        median(&upstream),
        median(&wrk),
    );
    if !other.is_empty() && median(&other) > 10.0 {
        let _ = writeln!(
            md,
            "- **Warning:** other processes used the Envoy CPU during the runs (median {:.0}%): they share its caches \
             and inflate every row; rerun on a quiet machine.",
            median(&other)
        );
    }
    md
}

fn envoy_version() -> String {
    Command::new(envoy_bin())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.split_once("version:").map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "(unknown version)".to_string())
}

fn run() -> Result<(), String> {
    let settings = Settings::from_env()?;
    let variants = settings.selected();
    let clk_tck = clock_ticks_per_second();
    let cpus = allowed_cpus().len();
    let (pinning, pinning_note) = plan_pinning();
    // Before any thread exists: the upstream's threads inherit the load CPU.
    if let Some(p) = pinning {
        pin_self(p.load_cpu)?;
    }
    println!("bench: {pinning_note}");
    let upstream = start_upstream()?;
    let upstream_port = upstream.port;
    // token-fetch's token server: one-hour tokens, so no refresh falls into a measured run.
    let tokens = TokenServer::start(0, 3600)?;

    let repeated_jwt = prepare_tokens(&variants)?;
    let mut proxies = Vec::new();
    for v in &variants {
        proxies.push(Proxy::start(v, upstream_port, tokens.port, pinning.map(|p| p.envoy_cpu), &repeated_jwt)?);
    }
    for p in &proxies {
        p.sanity_check()?;
        println!(
            "bench: {:<26} envoy-configs/{:<36} pid {:>7}  response checked",
            p.variant.name,
            p.variant.config,
            p.pid()
        );
    }

    let mut wasm_sizes = Vec::new();
    for v in &variants {
        let template = fs::read_to_string(repo_root().join("envoy-configs").join(v.config)).unwrap_or_default();
        for path in wasm_files(&template) {
            let size = fs::metadata(repo_root().join(&path)).map_or(0, |m| m.len());
            if !wasm_sizes.iter().any(|(p, _)| *p == path) {
                wasm_sizes.push((path, size));
            }
        }
    }
    let ctx = Context { envoy_version: envoy_version(), pinning_note, clk_tck, cpus, wasm_sizes };

    let n = proxies.len();
    let total = (settings.rounds + 1) as usize * n * settings.seconds as usize;
    println!(
        "bench: {n} variants × ({} rounds + warm-up) × {} s ≈ {} s of load\n",
        settings.rounds, settings.seconds, total
    );
    println!(
        "{:<6} {:<26} {:>8} {:>7} {:>7} {:>8} {:>6} | {:>8} {:>6} {:>6} | {:>5} {:>5}",
        "round", "variant", "requests", "rps", "envoy s", "µs/req", "busy", "upstream", "wrk", "cpu1", "steal", "other"
    );
    let mut samples = Vec::new();
    for round in 0..=settings.rounds {
        for k in 0..n {
            let index = (k + round as usize) % n;
            let Some(proxy) = proxies.get_mut(index) else { continue };
            let mut attempt = 0;
            let s = loop {
                let s = measure(&settings, pinning, clk_tck, index, proxy, round)?;
                // Another process took the Envoy CPU (a build, a test run): that run is
                // not comparable, so it is repeated a few times before being kept.
                let retry = s.envoy_cpu_other_pct > BUSY_MACHINE_PCT && attempt < BUSY_MACHINE_RETRIES;
                let label = if round == 0 { "warm".to_string() } else { format!("{round}/{}", settings.rounds) };
                println!(
                    "{label:<6} {:<26} {:>8} {:>7.0} {:>7.2} {:>8.2} {:>5.0}% | {:>8.2} {:>6.2} {:>5.0}% | {:>4.0}% {:>4.0}%{}",
                    proxy.variant.name,
                    s.requests,
                    s.rps,
                    s.envoy_cpu_s,
                    s.us_per_request,
                    s.envoy_busy_pct,
                    s.upstream_us,
                    s.wrk_us,
                    s.load_cpu_busy_pct,
                    s.envoy_cpu_steal_pct,
                    s.envoy_cpu_other_pct,
                    if retry { "  (other processes on the Envoy CPU: measuring again)" } else { "" }
                );
                if !retry {
                    break s;
                }
                attempt += 1;
            };
            if round > 0 {
                samples.push(s);
            }
        }
    }
    drop(proxies);

    let md = report(&settings, &variants, &samples, &ctx);
    println!("\n{md}");
    let dir = repo_root().join("target").join("bench");
    let path = dir.join("bench.md");
    match fs::create_dir_all(&dir).and_then(|()| fs::write(&path, &md)) {
        Ok(()) => println!("written to {}", path.display()),
        Err(e) => eprintln!("bench: could not write {}: {e}", path.display()),
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}
