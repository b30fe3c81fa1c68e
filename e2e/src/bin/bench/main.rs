//! `make bench`: what each filter costs per request in a real Envoy, against the same Envoy
//! with the router only, against a trivial SDK-only Rust filter (the floor of any proxy-wasm
//! filter) and against Envoy's native equivalent where there is one; all five filters chained
//! against the native chain doing the same jobs. A measurement tool, not a test: it asserts
//! behaviour (every variant's response is checked before measuring) but never timing.
//!
//! Phases, in this order:
//! 1. Memory and start-up ([`memory`]): each config alone at `--concurrency 2`, RSS and
//!    spawn→ready, `BENCH_STARTS` interleaved starts.
//! 2. CPU per request (below): every variant is its own Envoy (`--concurrency 1`), all started
//!    at once on distinct ports and pinned to one CPU; wrk and the upstream are pinned to
//!    another. Rounds are interleaved (the order rotates each round) so host noise falls on
//!    every variant alike, after one warm-up round that is not counted. CPU per request = the
//!    Envoy process's utime + stime delta (`/proc/<pid>/stat`) over the run / the requests wrk
//!    completed. Ratios and added µs are medians of per-round pairs (a variant against the
//!    baseline of the same round); × the floor = a row's median added / the trivial filter's.
//! 3. Latency at a fixed rate ([`latency`]): the headline rows' Envoys again, open loop.
//! 4. Instructions per request under callgrind ([`instructions`]), opt-in.
//!
//! The report goes to target/bench/bench.md with the chart target/bench/cpu-per-request.svg
//! ([`chart`]); a full run (every variant, ≥ 5 rounds) also writes both to docs/bench/, which
//! README shows.
//!
//! Environment: BENCH_ROUNDS (5), BENCH_SECONDS (5), BENCH_CONNECTIONS (16, wrk's), BENCH_ONLY
//! (comma-separated parts of variant names to run; the baseline always runs), BENCH_STARTS
//! (memory/start-up starts per config; default BENCH_ROUNDS), BENCH_LATENCY (on|off),
//! BENCH_RATE (500 requests/s), BENCH_LATENCY_CONNECTIONS (8), BENCH_INSTRUCTIONS
//! (off|on|only; `make bench-instructions` = only), BENCH_INSTRUCTION_REQUESTS (200 per
//! window), BENCH_MEMORY (on|only: the memory/start-up table alone, to target/bench/memory.md), BENCH_BEFORE (a directory of another build's modules, e.g. an older commit's
//! dist/: each wasm row runs again with them, `[before]`, in the same rounds; not published). CI's smoke run (`BENCH_ROUNDS=1 BENCH_SECONDS=1`) runs every phase but the
//! instruction counts, once each.
//!
//! jwt-auth and native jwt_authn (bench/jwt-auth.yaml, bench/native-jwt-authn.yaml: the same
//! JSON, both with a 100-entry verified-token cache) are measured three ways ([`JWT_TOKENS`]):
//! one RS256 token repeated (cache hits after the first), and a pre-generated list of 4096
//! distinct RS256 or ES256 tokens cycled by a wrk Lua script (more than either cache holds, so
//! every request verifies a signature). Tokens come from the committed test keys (e2e/src/jwt.rs),
//! valid for ten hours, written to target/bench/tokens-*.txt.
//!
//! Adding a filter: a row in [`VARIANTS`] (its config under envoy-configs/bench/, the request
//! wrk sends, a check of one response), in [`HEADLINE`] for its request-work row, in
//! [`COMPARISONS`] when a native filter does the same job, in `memory::CONFIGS`, and in
//! bench/all-five.yaml when it joins the chain; its host calls in e2e/probe/src/replay.rs
//! (a "host calls alone" row: the same calls with no filter logic, held to the filter's
//! census by e2e/tests/host_calls_per_request.rs).
//!
//! Envoys are started by the test harness (`e2e::envoy::Envoy`) with the bench's extras:
//! `pin_cpu` (taskset), `wrapper` (valgrind), `preset_ports` (one upstream shared by every
//! Envoy) and `pid()` for CPU accounting.

mod chart;
mod instructions;
mod latency;
mod memory;

use e2e::envoy::{wasm_files, Envoy, EnvoyOptions};
use e2e::http::{Request, Response};
use e2e::jwt::{self, Alg};
use e2e::redis::Redis;
use e2e::rls_server::{RlsLimit, RlsOptions, RlsServer, Unit};
use e2e::token_server::TokenServer;
use e2e::upstream::{Upstream, UpstreamOptions};
use e2e::{envoy_bin, repo_root, LISTENER_PORT, RLS_PORT, TOKEN_SERVER_PORT, UPSTREAM_PORT};
use security_headers::config::{DEFAULT_HEADERS, DEFAULT_REMOVE_HEADERS, HSTS};
use std::fmt::Write as _;
use std::fs;
use std::process::{Command, Stdio};
use std::time::Instant;

/// One Envoy to measure: a row of the table.
struct Variant {
    name: &'static str,
    /// The row this one repeats with another build (`BENCH_BEFORE`), else `name`: what the
    /// per-variant tables (tokens, bodies, counters, baselines) are looked up by.
    base: &'static str,
    /// `BENCH_BEFORE`'s directory: this row's Envoy loads its modules from there, not dist/.
    before: Option<&'static str>,
    /// Under `envoy-configs/`; ports follow the harness convention (10000, 9901, 18080).
    config: &'static str,
    /// The request wrk sends (GET).
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// Checked on one response before measuring: a variant that misbehaves is not measured.
    check: fn(&Response) -> Result<(), String>,
    kind: Kind,
}

/// What a row is, for the chart's colours.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// router-only: what every other row is compared with.
    Baseline,
    /// The trivial SDK-only filter: the floor of any proxy-wasm Rust filter.
    Floor,
    Wasm,
    Native,
}

const fn row(
    name: &'static str,
    config: &'static str,
    path: &'static str,
    check: fn(&Response) -> Result<(), String>,
    kind: Kind,
) -> Variant {
    Variant { name, base: name, before: None, config, path, headers: &[], check, kind }
}

/// Every Envoy measured, a row each; the first is the baseline every other is compared with.
/// Each config is router-only.yaml plus the filter(s) named (envoy-configs/bench/).
const VARIANTS: &[Variant] = &[
    row("router-only", "bench/router-only.yaml", "/", plain_proxy, Kind::Baseline),
    row("trivial filter (SDK only)", "bench/trivial-filter.yaml", "/", trivial_header_set, Kind::Floor),
    row("security-headers (defaults)", "bench/security-headers.yaml", "/", security_headers_applied, Kind::Wasm),
    row("native header_mutation", "bench/native-header-mutation.yaml", "/", security_headers_applied, Kind::Native),
    // The floor of each JWT filter: a path no rule covers (no token read, nothing verified).
    row("jwt-auth, no JWT needed", "bench/jwt-auth.yaml", "/open", from_upstream, Kind::Wasm),
    row("jwt_authn, no JWT needed", "bench/native-jwt-authn.yaml", "/open", from_upstream, Kind::Native),
    row("jwt-auth, RS256 repeated", "bench/jwt-auth.yaml", "/", from_upstream, Kind::Wasm),
    row("jwt_authn, RS256 repeated", "bench/native-jwt-authn.yaml", "/", from_upstream, Kind::Native),
    row("jwt-auth, RS256 unique", "bench/jwt-auth.yaml", "/", from_upstream, Kind::Wasm),
    row("jwt_authn, RS256 unique", "bench/native-jwt-authn.yaml", "/", from_upstream, Kind::Native),
    row("jwt-auth, ES256 unique", "bench/jwt-auth.yaml", "/", from_upstream, Kind::Wasm),
    row("jwt_authn, ES256 unique", "bench/native-jwt-authn.yaml", "/", from_upstream, Kind::Native),
    row("rate-limit (never limiting)", "bench/rate-limit.yaml", "/", x_ratelimit_headers, Kind::Wasm),
    row("native local_ratelimit", "bench/native-local-ratelimit.yaml", "/", x_ratelimit_headers, Kind::Native),
    // One call per request to the bench's rate limit service (Limitador on Redis, in this
    // process: see [`start_rls`]), whose limit never denies.
    row("rate-limit, global rule", "bench/rate-limit-global.yaml", "/", x_ratelimit_from_service, Kind::Wasm),
    row("native ratelimit (RLS)", "bench/native-ratelimit.yaml", "/", x_ratelimit_from_service, Kind::Native),
    // token-fetch with a token in hand (the bench's token server issues one-hour tokens): the
    // cost measured is the per-request injection, not the fetch. Fail-closed by default, so a
    // 200 with the upstream's body means the request carried a token (without one: 503).
    row("token-fetch (injecting)", "bench/token-fetch.yaml", "/", from_upstream, Kind::Wasm),
    row("native request header add", "bench/native-request-header.yaml", "/", from_upstream, Kind::Native),
    row("body-logger, GET", "bench/body-logger.yaml", "/", from_upstream, Kind::Wasm),
    row("router-only, 1 KiB POST", "bench/router-only.yaml", "/", from_upstream, Kind::Baseline),
    row("body-logger, 1 KiB POST", "bench/body-logger.yaml", "/", from_upstream, Kind::Wasm),
    row("router-only, 64 KiB POST", "bench/router-only.yaml", "/", from_upstream, Kind::Baseline),
    row("body-logger, 64 KiB POST", "bench/body-logger.yaml", "/", from_upstream, Kind::Wasm),
    // All five with their request work (a verified RS256 token, a rule that never limits, a
    // token injected, a line built) against the native filters doing the same jobs.
    row("all five (wasm)", "bench/all-five.yaml", "/", all_five_applied, Kind::Wasm),
    // The same five from the bundle module under one vm_id (five plugins, one VM), and as one
    // `chain` plugin of the bundle: one stream context instead of five.
    row("all five (bundle)", "bench/all-five-bundle.yaml", "/", all_five_applied, Kind::Wasm),
    row("all five (chain)", "bench/all-five-chain.yaml", "/", all_five_applied, Kind::Wasm),
    row("native chain", "bench/native-chain.yaml", "/", native_chain_applied, Kind::Native),
    // The host calls of each job above alone, made by the test-only probe module with no
    // filter logic (e2e/probe/src/replay.rs): what a module making these calls through the
    // proxy-wasm ABI pays before its own code runs. Same request, same answer checked.
    row(REPLAY_SECURITY_HEADERS, "bench/replay-security-headers.yaml", "/", security_headers_applied, Kind::Wasm),
    row(REPLAY_JWT_AUTH, "bench/replay-jwt-auth.yaml", "/", from_upstream, Kind::Wasm),
    row(REPLAY_RATE_LIMIT, "bench/replay-rate-limit.yaml", "/", x_ratelimit_headers, Kind::Wasm),
    row(REPLAY_TOKEN_FETCH, "bench/replay-token-fetch.yaml", "/", from_upstream, Kind::Wasm),
    row(REPLAY_BODY_LOGGER, "bench/replay-body-logger.yaml", "/", from_upstream, Kind::Wasm),
    row(REPLAY_CHAIN, "bench/replay-chain.yaml", "/", all_five_applied, Kind::Wasm),
];

const REPLAY_SECURITY_HEADERS: &str = "host calls alone: security-headers";
const REPLAY_JWT_AUTH: &str = "host calls alone: jwt-auth";
const REPLAY_RATE_LIMIT: &str = "host calls alone: rate-limit";
const REPLAY_TOKEN_FETCH: &str = "host calls alone: token-fetch";
const REPLAY_BODY_LOGGER: &str = "host calls alone: body-logger";
const REPLAY_CHAIN: &str = "host calls alone: the chain";
/// Replays sent the JWT rows' token, so their requests are the same size, but verifying
/// nothing: a request without one is not refused.
const REPLAYS_SENT_A_TOKEN: &[&str] = &[REPLAY_JWT_AUTH, REPLAY_CHAIN];

/// The rows of the headline table (issue 16's shape: router-only, the floor, each filter doing
/// its request work, all five, the native chain), in this order. The chart, the fixed-rate
/// latency runs and the instruction counts cover these rows.
const HEADLINE: &[(&str, &str)] = &[
    ("router-only", "no filter but the router: the baseline"),
    ("trivial filter (SDK only)", "the SDK's contexts, one response header set"),
    ("security-headers (defaults)", "9 response headers added, the upstream's `server` and `x-powered-by` removed"),
    ("jwt-auth, RS256 repeated", "one RS256 token verified once, then served from the 100-entry verified-token cache"),
    ("rate-limit (never limiting)", "key from `remote_address`, one CAS on shared data, `x-ratelimit-*` headers"),
    ("token-fetch (injecting)", "the fetched OAuth2 token injected as `authorization`"),
    ("body-logger, GET", "defaults, a GET without body: one JSON line built and set in filter state"),
    ("all five (wasm)", "the five rows above chained in all-in-one order, five VMs"),
    ("all five (chain)", "the same five as one `chain` plugin of the bundle: one VM, one stream context"),
    ("native chain", "header_mutation ×2, jwt_authn with `jwt_cache_config`, local_ratelimit"),
];

/// Instruction counts also cover the native equivalents of the headline filters, and the
/// global rule beside native ratelimit (issue 15's goal: one call to the same service).
const INSTRUCTION_EXTRA: &[&str] = &[
    "native header_mutation",
    "jwt_authn, RS256 repeated",
    "native local_ratelimit",
    "native request header add",
    "rate-limit, global rule",
    "native ratelimit (RLS)",
    "all five (bundle)",
    REPLAY_SECURITY_HEADERS,
    REPLAY_JWT_AUTH,
    REPLAY_RATE_LIMIT,
    REPLAY_TOKEN_FETCH,
    REPLAY_BODY_LOGGER,
    REPLAY_CHAIN,
];

/// The floor row: every row's added CPU is also given as a multiple of this one's.
const FLOOR: &str = "trivial filter (SDK only)";

/// A counter each variant must have counted after its checked request (the filter did its work,
/// not just let the request through).
const STAT_CHECKS: &[(&str, &str)] = &[
    ("body-logger, GET", "wasmcustom.body_logger.logged"),
    ("body-logger, 1 KiB POST", "wasmcustom.body_logger.logged"),
    ("body-logger, 64 KiB POST", "wasmcustom.body_logger.logged"),
    ("all five (wasm)", "wasmcustom.body_logger.logged"),
    ("all five (bundle)", "wasmcustom.body_logger.logged"),
    ("all five (chain)", "wasmcustom.body_logger.logged"),
    (REPLAY_BODY_LOGGER, "wasmcustom.probe_replay.body_logger.logged"),
    (REPLAY_CHAIN, "wasmcustom.probe_replay.body_logger.logged"),
];

/// The JWT variants' tokens: one repeated, or a cycled list of distinct ones.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tokens {
    RepeatedRs256,
    UniqueRs256,
    UniqueEs256,
}

const JWT_TOKENS: &[(&str, Tokens)] = &[
    ("all five (wasm)", Tokens::RepeatedRs256),
    ("all five (bundle)", Tokens::RepeatedRs256),
    ("all five (chain)", Tokens::RepeatedRs256),
    ("native chain", Tokens::RepeatedRs256),
    (REPLAY_JWT_AUTH, Tokens::RepeatedRs256),
    (REPLAY_CHAIN, Tokens::RepeatedRs256),
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
    JWT_TOKENS.iter().find(|(name, _)| *name == variant.base).map(|(_, t)| *t)
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
    let (_, size) = REQUEST_BODIES.iter().find(|(name, _)| *name == variant.base)?;
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
    Comparison { wasm: "security-headers (defaults)", native: "native header_mutation" },
    Comparison { wasm: "token-fetch (injecting)", native: "native request header add" },
    Comparison { wasm: "rate-limit (never limiting)", native: "native local_ratelimit" },
    Comparison { wasm: "rate-limit, global rule", native: "native ratelimit (RLS)" },
    Comparison { wasm: "jwt-auth, RS256 repeated", native: "jwt_authn, RS256 repeated" },
    Comparison { wasm: "jwt-auth, RS256 unique", native: "jwt_authn, RS256 unique" },
    Comparison { wasm: "jwt-auth, ES256 unique", native: "jwt_authn, ES256 unique" },
    Comparison { wasm: "all five (wasm)", native: "native chain" },
    Comparison { wasm: "all five (chain)", native: "native chain" },
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

/// The variants that call the rate limit service: it runs only when one of them is selected.
const RLS_VARIANTS: &[&str] = &["rate-limit, global rule", "native ratelimit (RLS)"];

/// The rate limit service's limit for the bench's descriptor `[generic_key=bench]`: so high that
/// it never denies (wrk counts 429s as errors).
const RLS_LIMIT: u64 = 1_000_000_000;

/// A global check that admitted the request: `x-ratelimit-*` built from the service's answer
/// (its limit, an hour), so the call was made and answered.
fn x_ratelimit_from_service(r: &Response) -> Result<(), String> {
    from_upstream(r)?;
    let want = format!("{RLS_LIMIT}, {RLS_LIMIT};w=3600");
    if r.header("x-ratelimit-limit").as_deref() != Some(want.as_str()) {
        return Err(format!("x-ratelimit-limit: {:?} (want {want:?})", r.header("x-ratelimit-limit")));
    }
    Ok(())
}

/// The trivial filter's one response header, on the upstream's answer.
fn trivial_header_set(r: &Response) -> Result<(), String> {
    from_upstream(r)?;
    match r.header("x-trivial-filter").as_deref() {
        Some("1") => Ok(()),
        other => Err(format!("x-trivial-filter: {other:?} (want \"1\")")),
    }
}

/// All five: the token was verified (else 401), a service token injected (else 503), the
/// security headers set and the rate limiter's headers present. body-logger's line is checked
/// through its counter ([`STAT_CHECKS`]).
fn all_five_applied(r: &Response) -> Result<(), String> {
    security_headers_applied(r)?;
    x_ratelimit_headers(r)
}

/// The native chain: the same answer (its token check is jwt_authn's, its injection static).
fn native_chain_applied(r: &Response) -> Result<(), String> {
    security_headers_applied(r)?;
    x_ratelimit_headers(r)
}

// ---- settings ----

pub(crate) struct Settings {
    rounds: u32,
    seconds: u32,
    connections: u32,
    only: Vec<String>,
    /// Envoy starts per config for the memory/start-up table (BENCH_STARTS, default: rounds).
    starts: u32,
    /// The fixed-rate latency runs (BENCH_LATENCY=off skips them).
    latency: bool,
    /// Requests per second of the fixed-rate runs, over `latency_connections` connections.
    rate: u32,
    latency_connections: u32,
    instructions: InstructionMode,
    /// Requests per counted window under callgrind.
    instruction_requests: u32,
    /// BENCH_BEFORE: a directory of modules from another build (e.g. an older commit's dist/);
    /// every wasm row selected is measured again with them, in the same rounds.
    before: Option<&'static str>,
    /// BENCH_MEMORY=only: the memory/start-up table alone (no CPU, latency or instructions).
    memory_only: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum InstructionMode {
    Off,
    /// Also count instructions, after the timed runs.
    On,
    /// Count instructions only (`make bench-instructions`).
    Only,
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

fn env_word(name: &str, default: &str, allowed: &[&str]) -> Result<String, String> {
    let v = std::env::var(name).unwrap_or_default().trim().to_ascii_lowercase();
    let v = if v.is_empty() { default.to_string() } else { v };
    if allowed.contains(&v.as_str()) {
        Ok(v)
    } else {
        Err(format!("{name}={v:?}: want one of {}", allowed.join(", ")))
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
        let rounds = env_count("BENCH_ROUNDS", 5)?;
        let instructions = match env_word("BENCH_INSTRUCTIONS", "off", &["off", "on", "only"])?.as_str() {
            "on" => InstructionMode::On,
            "only" => InstructionMode::Only,
            _ => InstructionMode::Off,
        };
        Ok(Settings {
            rounds,
            seconds: env_count("BENCH_SECONDS", 5)?,
            connections: env_count("BENCH_CONNECTIONS", 16)?,
            only,
            starts: env_count("BENCH_STARTS", rounds)?,
            latency: env_word("BENCH_LATENCY", "on", &["on", "off"])? == "on",
            rate: env_count("BENCH_RATE", 500)?,
            latency_connections: env_count("BENCH_LATENCY_CONNECTIONS", 8)?,
            instructions,
            instruction_requests: env_count("BENCH_INSTRUCTION_REQUESTS", 200)?,
            before: before_dir()?,
            memory_only: env_word("BENCH_MEMORY", "on", &["on", "only"])? == "only",
        })
    }

    fn wanted(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| name.to_ascii_lowercase().contains(o))
    }

    /// The baseline always, then every variant BENCH_ONLY asks for, then (BENCH_BEFORE) each
    /// wasm row of those again with the other build's modules.
    fn selected(&self) -> Vec<&'static Variant> {
        let selected: Vec<&'static Variant> =
            VARIANTS.iter().enumerate().filter(|(i, v)| *i == 0 || self.wanted(v.name)).map(|(_, v)| v).collect();
        self.with_before(selected)
    }

    /// `rows`, then (BENCH_BEFORE) each wasm row of them again with the other build's modules,
    /// named `… [before]`: the timed rounds and the instruction counts both use it.
    pub(crate) fn with_before(&self, mut selected: Vec<&'static Variant>) -> Vec<&'static Variant> {
        if let Some(dir) = self.before {
            let again: Vec<&'static Variant> = selected
                .iter()
                .filter(|v| v.kind == Kind::Wasm)
                .map(|v| {
                    // A handful of rows for the process's lifetime: leaking them keeps every
                    // row `&'static` like the table's.
                    let name: &'static str = Box::leak(format!("{} [before]", v.name).into_boxed_str());
                    let row: &'static Variant = Box::leak(Box::new(Variant { name, before: Some(dir), ..**v }));
                    row
                })
                .collect();
            selected.extend(again);
        }
        selected
    }

    /// A full run (every variant, at least 5 rounds, this build only) is published: its table
    /// and chart are copied to docs/bench/, which README shows.
    fn publishes(&self) -> bool {
        self.only.is_empty() && self.rounds >= 5 && self.before.is_none() && !self.memory_only
    }
}

#[cfg(test)]
impl Settings {
    fn for_test() -> Settings {
        Settings {
            rounds: 5,
            seconds: 5,
            connections: 16,
            only: Vec::new(),
            starts: 5,
            latency: true,
            rate: 500,
            latency_connections: 8,
            instructions: InstructionMode::Off,
            instruction_requests: 200,
            before: None,
            memory_only: false,
        }
    }
}

/// BENCH_BEFORE, checked: an existing directory (absolute, since Envoy runs in the repo root).
fn before_dir() -> Result<Option<&'static str>, String> {
    let Ok(dir) = std::env::var("BENCH_BEFORE") else { return Ok(None) };
    if dir.trim().is_empty() {
        return Ok(None);
    }
    let path = fs::canonicalize(dir.trim()).map_err(|e| format!("BENCH_BEFORE={dir:?}: {e}"))?;
    if !path.is_dir() {
        return Err(format!("BENCH_BEFORE={dir:?}: not a directory of .wasm modules"));
    }
    let text = path.to_str().ok_or_else(|| format!("BENCH_BEFORE={dir:?}: not UTF-8"))?;
    Ok(Some(Box::leak(text.to_string().into_boxed_str())))
}

/// A config's module paths (`filename: dist/x.wasm`, quoted or not) moved to `dir`.
fn modules_from(config: String, dir: &str) -> String {
    config
        .replace("filename: dist/", &format!("filename: {dir}/"))
        .replace("filename: \"dist/", &format!("filename: \"{dir}/"))
}

fn variant(name: &str) -> Option<&'static Variant> {
    VARIANTS.iter().find(|v| v.name == name)
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

/// The loopback servers every Envoy talks to.
#[derive(Clone, Copy)]
pub(crate) struct Servers {
    upstream: u16,
    token_server: u16,
    /// The rate limit service, when a selected variant needs one (else 0).
    rls: u16,
}

/// The harness's options for a bench Envoy: the same port substitution as the tests, except
/// that 18080 is the one shared upstream, 18081 the one token server (token-fetch) and 18083
/// the one rate limit service.
pub(crate) fn envoy_options(servers: Servers, concurrency: u32) -> EnvoyOptions {
    EnvoyOptions {
        concurrency,
        log_level: "warning",
        preset_ports: [
            (UPSTREAM_PORT, servers.upstream),
            (TOKEN_SERVER_PORT, servers.token_server),
            (RLS_PORT, servers.rls),
        ]
        .into_iter()
        .filter(|(_, port)| *port != 0)
        .collect(),
        ..EnvoyOptions::default()
    }
}

/// The global rate limit rows' service: the tests' RLS (Limitador on a real Redis, both on the
/// load CPU with wrk and the upstream) with [`RLS_LIMIT`] an hour for `[generic_key=bench]`.
/// Checks may overlap (`concurrent_checks`): no exact count is needed here, and one at a time
/// would make the service the bottleneck of both rows.
fn start_rls() -> Result<(Redis, RlsServer), String> {
    let redis = Redis::start()?;
    let rls = RlsServer::start_with(RlsOptions { concurrent_checks: true, ..RlsOptions::new(&redis.url()) })?;
    rls.set_limits(&[RlsLimit::new("bench", RLS_LIMIT, Unit::Hour).when("generic_key", "bench")])?;
    Ok((redis, rls))
}

/// One Envoy per variant, started by the test harness (a child of this process, killed and
/// reaped on drop), with the shared upstream's port preset and Envoy pinned.
pub(crate) struct Proxy {
    variant: &'static Variant,
    envoy: Envoy,
    listener: u16,
    /// JWT variants: the token of the response check (and the one wrk repeats).
    token: Option<String>,
}

impl Proxy {
    fn start(variant: &'static Variant, mut opts: EnvoyOptions, repeated_jwt: &str) -> Result<Proxy, String> {
        if let Some(dir) = variant.before {
            let edit = opts.edit.take();
            opts.edit = Some(Box::new(move |text| {
                let text = edit.as_ref().map_or(text.clone(), |e| e(text));
                modules_from(text, dir)
            }));
        }
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
        self.request_with(self.token.as_deref())
    }

    fn request_with(&self, token: Option<&str>) -> Request {
        let mut r = self.variant.headers.iter().fold(Request::get(self.variant.path), |r, (k, v)| r.header(k, v));
        if let Some(token) = token {
            r = r.header("authorization", &format!("Bearer {token}"));
        }
        match request_body(self.variant) {
            Some(body) => r.method("POST").header("content-type", "application/json").body(&body),
            None => r,
        }
    }

    /// One request through this Envoy, checked; an error says what is wrong and shows it.
    /// Variants that need a JWT must also refuse the same request without one (the token is
    /// what is being checked), and the counters of [`STAT_CHECKS`] must have moved.
    fn sanity_check(&self) -> Result<(), String> {
        let response = self.check_answers()?;
        for (name, stat) in STAT_CHECKS.iter().filter(|(name, _)| *name == self.variant.base) {
            if self.envoy.wait_stat(stat, 1) == 0 {
                return Err(self.misbehaves(format!("{name}: {stat} stayed 0"), &response));
            }
        }
        Ok(())
    }

    /// The answers of [`Proxy::sanity_check`] without its counters (the admin's `/stats` is
    /// too slow under valgrind); returns the checked response.
    fn check_answers(&self) -> Result<Response, String> {
        let response = self.request().send(self.listener).map_err(|e| format!("{}: {e}", self.variant.name))?;
        (self.variant.check)(&response).map_err(|e| self.misbehaves(e, &response))?;
        if self.token.is_some() && !REPLAYS_SENT_A_TOKEN.contains(&self.variant.base) {
            let denied =
                self.request_with(None).send(self.listener).map_err(|e| format!("{}: {e}", self.variant.name))?;
            if denied.status != 401 {
                return Err(self.misbehaves(format!("without a token: status {} (want 401)", denied.status), &denied));
            }
        }
        Ok(response)
    }

    fn misbehaves(&self, e: String, response: &Response) -> String {
        format!(
            "variant `{}` (envoy-configs/{}) misbehaves, not measuring it: {e}\n{} {} gave:\n{response}",
            self.variant.name,
            self.variant.config,
            self.request().method,
            self.variant.path
        )
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
    /// wrk's latency percentiles (`--latency`), at saturation: closed loop, so they follow
    /// the throughput (16 connections / requests per second) more than anything else.
    p50_us: f64,
    p99_us: f64,
}

fn run_wrk(settings: &Settings, pinning: Option<Pinning>, proxy: &Proxy) -> Result<WrkResult, String> {
    let mut cmd = pinned(pinning.map(|p| p.load_cpu), "wrk");
    cmd.args([
        "-t1",
        &format!("-c{}", settings.connections),
        &format!("-d{}s", settings.seconds),
        "--timeout",
        "5s",
        "--latency",
    ]);
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
    let percentile = |p: &str| {
        text.lines()
            .skip_while(|l| !l.contains("Latency Distribution"))
            .find_map(|l| l.trim().strip_prefix(p).map(str::trim))
            .and_then(parse_wrk_duration)
            .ok_or_else(|| format!("no {p} line in wrk's latency distribution"))
    };
    Ok(WrkResult { requests, rps, p50_us: percentile("50%")?, p99_us: percentile("99%")? })
}

/// A wrk duration (`812.00us`, `2.35ms`, `1.02s`) in µs.
fn parse_wrk_duration(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60e6)
    } else {
        return None;
    };
    number.trim().parse::<f64>().ok().map(|n| n * scale)
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
    sat_p50_us: f64,
    sat_p99_us: f64,
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
        sat_p50_us: wrk.p50_us,
        sat_p99_us: wrk.p99_us,
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
    sat_p50: Vec<f64>,
    sat_p99: Vec<f64>,
}

/// µs/request of `variant` and of `other` in the same round, one pair per round both ran.
fn same_round_pairs(samples: &[Sample], variant: usize, other: usize) -> Vec<(f64, f64)> {
    samples
        .iter()
        .filter(|s| s.variant == variant)
        .filter_map(|s| {
            let o = samples.iter().find(|x| x.variant == other && x.round == s.round)?;
            Some((s.us_per_request, o.us_per_request))
        })
        .collect()
}

fn summarize(samples: &[Sample], variant: usize) -> Summary {
    let mine: Vec<&Sample> = samples.iter().filter(|s| s.variant == variant).collect();
    let pairs = same_round_pairs(samples, variant, 0);
    Summary {
        us: mine.iter().map(|s| s.us_per_request).collect(),
        rps: mine.iter().map(|s| s.rps).collect(),
        busy: mine.iter().map(|s| s.envoy_busy_pct).collect(),
        ratio: pairs.iter().map(|(v, b)| v / b).collect(),
        added: pairs.iter().map(|(v, b)| v - b).collect(),
        sat_p50: mine.iter().map(|s| s.sat_p50_us).collect(),
        sat_p99: mine.iter().map(|s| s.sat_p99_us).collect(),
    }
}

pub(crate) struct Context {
    envoy_version: String,
    pinning_note: String,
    clk_tck: u64,
    cpus: usize,
    wasm_sizes: Vec<(String, u64)>,
    /// /proc/loadavg (1, 5, 15 minutes) when the bench started and when it ended: how busy
    /// the machine was besides the bench.
    load_before: String,
    load_after: String,
    date: String,
}

impl Context {
    #[cfg(test)]
    fn for_test() -> Context {
        Context {
            envoy_version: "abc/1.40.0/Clean/RELEASE/BoringSSL".into(),
            pinning_note: String::new(),
            clk_tck: 100,
            cpus: 2,
            wasm_sizes: Vec::new(),
            load_before: "0.10 0.20 0.30".into(),
            load_after: "0.10 0.20 0.30".into(),
            date: "2026-12-01".into(),
        }
    }

    /// `1.40.0` out of `<commit>/1.40.0/Clean/RELEASE/BoringSSL`.
    fn envoy_version_short(&self) -> &str {
        self.envoy_version.split('/').nth(1).unwrap_or(&self.envoy_version)
    }
}

fn loadavg() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// One row's figures over the rounds.
pub(crate) struct RowFigures {
    name: &'static str,
    kind: Kind,
    us: (f64, f64, f64),
    /// Added over the baseline (per-round pairs): median, min, max; `None` for the baseline.
    added: Option<(f64, f64, f64)>,
}

fn stats(values: &[f64]) -> (f64, f64, f64) {
    let (lo, hi) = min_max(values);
    (median(values), lo, hi)
}

/// `x` times the floor's added CPU, when the floor's added CPU is clearly above zero.
fn times_floor(added: f64, floor_added: Option<f64>) -> String {
    match floor_added {
        Some(f) if f >= 0.5 => format!("{:.1}×", added / f),
        _ => "—".to_string(),
    }
}

fn fmt_added(added: Option<(f64, f64, f64)>) -> String {
    match added {
        Some((m, lo, hi)) => format!("{m:+.1} ({lo:+.1} to {hi:+.1})"),
        None => "—".to_string(),
    }
}

fn report(
    settings: &Settings,
    variants: &[&'static Variant],
    samples: &[Sample],
    ctx: &Context,
) -> (String, Vec<RowFigures>) {
    let base = variants.first().map_or("baseline", |v| v.name);
    let summaries: Vec<Summary> = (0..variants.len()).map(|i| summarize(samples, i)).collect();
    let index_of = |name: &str| variants.iter().position(|v| v.name == name);
    let floor_added = index_of(FLOOR).map(|i| median(&summaries[i].added));
    let figures: Vec<RowFigures> = variants
        .iter()
        .zip(&summaries)
        .enumerate()
        .map(|(i, (v, s))| RowFigures {
            name: v.name,
            kind: v.kind,
            us: stats(&s.us),
            added: (i > 0).then(|| stats(&s.added)),
        })
        .collect();

    let mut md = String::new();
    let _ = writeln!(md, "## CPU per request: the floor, each filter, all five, the native chain\n");
    let _ = writeln!(
        md,
        "| variant | per request | CPU µs/request, median (min–max) | added over {base}, µs, median (min–max) | × trivial filter's added |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|");
    for (name, what) in HEADLINE {
        let Some(i) = index_of(name) else { continue };
        let f = &figures[i];
        let times = f.added.map_or(String::new(), |(m, _, _)| times_floor(m, floor_added));
        let _ = writeln!(
            md,
            "| {name} | {what} | {:.1} ({:.1}–{:.1}) | {} | {times} |",
            f.us.0,
            f.us.1,
            f.us.2,
            fmt_added(f.added)
        );
    }
    let _ = writeln!(md, "\n## Every variant\n");
    let _ = writeln!(
        md,
        "| variant | config | CPU µs/request, median (min–max) | vs {base} | added µs/request, median (min–max) | × trivial's added | RPS, median | Envoy core busy | latency at saturation p50 / p99, µs |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for ((v, s), f) in variants.iter().zip(&summaries).zip(&figures) {
        let (ratio, times) = match f.added {
            None => ("1.00×".to_string(), String::new()),
            Some((m, _, _)) => (format!("{:.2}×", median(&s.ratio)), times_floor(m, floor_added)),
        };
        let _ = writeln!(
            md,
            "| {} | `{}` | {:.1} ({:.1}–{:.1}) | {ratio} | {} | {times} | {:.0} | {:.0}% | {:.0} / {:.0} |",
            v.name,
            v.config,
            f.us.0,
            f.us.1,
            f.us.2,
            fmt_added(f.added),
            median(&s.rps),
            median(&s.busy),
            median(&s.sat_p50),
            median(&s.sat_p99)
        );
    }
    let _ = writeln!(md);
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
    let same_request = variants.iter().enumerate().filter_map(|(v, variant)| {
        let (_, baseline) = SAME_REQUEST_BASELINES.iter().find(|(name, _)| *name == variant.base)?;
        Some((variant.name, *baseline, v))
    });
    for (variant, baseline, v) in same_request {
        let Some(b) = index_of(baseline) else { continue };
        let pairs = same_round_pairs(samples, v, b);
        let added: Vec<f64> = pairs.iter().map(|(v, b)| v - b).collect();
        let ratio: Vec<f64> = pairs.iter().map(|(v, b)| v / b).collect();
        let (lo, hi) = min_max(&added);
        let _ = writeln!(
            md,
            "- **{variant}** against **{baseline}** (same request, same rounds): {:+.1} µs/request added \
             (per-round {lo:+.1} to {hi:+.1}), {:.2}×.",
            median(&added),
            median(&ratio)
        );
    }
    for (i, v) in variants.iter().enumerate().filter(|(_, v)| v.before.is_some()) {
        let Some(after) = index_of(v.base) else { continue };
        // Per round: this build's time over the other build's, the same request in the same round.
        let ratio: Vec<f64> = same_round_pairs(samples, after, i).iter().map(|(a, b)| a / b).collect();
        let (lo, hi) = min_max(&ratio);
        let _ = writeln!(
            md,
            "- **{}** with this build's modules against `BENCH_BEFORE`'s: {:.1} against {:.1} µs/request \
             (medians, {:+.1}), {:.2}× per round (median; {lo:.2}–{hi:.2}).",
            v.base,
            median(&summaries[after].us),
            median(&summaries[i].us),
            median(&summaries[after].us) - median(&summaries[i].us),
            median(&ratio)
        );
    }
    let steal: Vec<f64> = samples.iter().map(|s| s.envoy_cpu_steal_pct).collect();
    let load: Vec<f64> = samples.iter().map(|s| s.load_cpu_busy_pct).collect();
    let upstream: Vec<f64> = samples.iter().map(|s| s.upstream_us).collect();
    let wrk: Vec<f64> = samples.iter().map(|s| s.wrk_us).collect();
    let other: Vec<f64> = samples.iter().map(|s| s.envoy_cpu_other_pct).filter(|x| !x.is_nan()).collect();
    let _ = writeln!(
        md,
        "- Added µs and ratios are medians of per-round pairs (each variant against {base} in the same round); \
         min–max is over the rounds. × trivial's added = a row's median added CPU / the trivial filter's. \
         CPU = the Envoy process's utime+stime (CLK_TCK {}) / requests completed; \"Envoy core busy\" = that CPU \
         time / wall time (near 100%: Envoy, not the load side, is the limit). Latency at saturation is wrk's \
         (closed loop), so it mostly mirrors the throughput; the fixed-rate table below is the one to read for \
         latency.",
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
        "- Machine: Envoy {}; one Envoy per variant, `--concurrency 1`; {} rounds × {} s after one \
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
    (md, figures)
}

/// The machine and the modules, under every table.
fn footer(ctx: &Context) -> String {
    let wasm = if ctx.wasm_sizes.is_empty() {
        "none".to_string()
    } else {
        ctx.wasm_sizes.iter().map(|(p, n)| format!("`{p}` {n} bytes")).collect::<Vec<_>>().join(", ")
    };
    format!(
        "## Run\n\n- {}: Envoy {}, {} CPUs; load average (1, 5, 15 min) {} at the start and {} at the end \
         (other sessions share this machine: compare rows within a run, not runs).\n- Modules: {wasm}.\n",
        ctx.date, ctx.envoy_version, ctx.cpus, ctx.load_before, ctx.load_after
    )
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

fn module_sizes(configs: &[&str]) -> Vec<(String, u64)> {
    let mut sizes: Vec<(String, u64)> = Vec::new();
    for config in configs {
        let template = fs::read_to_string(repo_root().join("envoy-configs").join(config)).unwrap_or_default();
        for path in wasm_files(&template) {
            let size = fs::metadata(repo_root().join(&path)).map_or(0, |m| m.len());
            if !sizes.iter().any(|(p, _)| *p == path) {
                sizes.push((path, size));
            }
        }
    }
    sizes
}

/// Start one Envoy per variant (pinned, `--concurrency 1`) and check each one's answer.
fn start_proxies(
    variants: &[&'static Variant],
    servers: Servers,
    cpu: Option<u32>,
    repeated_jwt: &str,
) -> Result<Vec<Proxy>, String> {
    let mut proxies = Vec::new();
    for v in variants {
        let opts = EnvoyOptions { pin_cpu: cpu, ..envoy_options(servers, 1) };
        proxies.push(Proxy::start(v, opts, repeated_jwt)?);
    }
    for p in &proxies {
        p.sanity_check()?;
        println!(
            "bench: {:<40} envoy-configs/{:<36} pid {:>7}  response checked",
            p.variant.name,
            p.variant.config,
            p.pid()
        );
    }
    Ok(proxies)
}

/// The timed runs: every variant once per round, interleaved, the order rotated each round.
fn cpu_rounds(
    settings: &Settings,
    pinning: Option<Pinning>,
    clk_tck: u64,
    proxies: &mut [Proxy],
) -> Result<Vec<Sample>, String> {
    let n = proxies.len();
    let total = (settings.rounds + 1) as usize * n * settings.seconds as usize;
    println!(
        "\nbench: CPU: {n} variants × ({} rounds + warm-up) × {} s ≈ {} s of load\n",
        settings.rounds, settings.seconds, total
    );
    println!(
        "{:<6} {:<40} {:>8} {:>7} {:>7} {:>8} {:>6} | {:>8} {:>6} {:>6} | {:>5} {:>5}",
        "round", "variant", "requests", "rps", "envoy s", "µs/req", "busy", "upstream", "wrk", "cpu1", "steal", "other"
    );
    let mut samples = Vec::new();
    for round in 0..=settings.rounds {
        for k in 0..n {
            let index = (k + round as usize) % n;
            let Some(proxy) = proxies.get_mut(index) else { continue };
            let mut attempt = 0;
            let s = loop {
                let s = measure(settings, pinning, clk_tck, index, proxy, round)?;
                // Another process took the Envoy CPU (a build, a test run): that run is
                // not comparable, so it is repeated a few times before being kept.
                let retry = s.envoy_cpu_other_pct > BUSY_MACHINE_PCT && attempt < BUSY_MACHINE_RETRIES;
                let label = if round == 0 { "warm".to_string() } else { format!("{round}/{}", settings.rounds) };
                println!(
                    "{label:<6} {:<40} {:>8} {:>7.0} {:>7.2} {:>8.2} {:>5.0}% | {:>8.2} {:>6.2} {:>5.0}% | {:>4.0}% {:>4.0}%{}",
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
    Ok(samples)
}

/// Where a run's report goes: always target/bench/; a full run also to docs/bench/ (README
/// shows that table and chart).
fn write_outputs(settings: &Settings, files: &[(&str, &str)]) {
    let mut dirs = vec![repo_root().join("target").join("bench")];
    if settings.publishes() {
        dirs.push(repo_root().join("docs").join("bench"));
    }
    for dir in &dirs {
        for (name, text) in files {
            let path = dir.join(name);
            match fs::create_dir_all(dir).and_then(|()| fs::write(&path, text)) {
                Ok(()) => println!("written to {}", path.display()),
                Err(e) => eprintln!("bench: could not write {}: {e}", path.display()),
            }
        }
    }
    if !settings.publishes() {
        println!("(a partial run: docs/bench/ keeps the last full run's table and chart)");
    }
}

fn run() -> Result<(), String> {
    let settings = Settings::from_env()?;
    let variants = settings.selected();
    let clk_tck = clock_ticks_per_second();
    let cpus = allowed_cpus();
    let (pinning, pinning_note) = plan_pinning();
    let load_before = loadavg();
    // Before any thread exists: the upstream's threads inherit the load CPU.
    if let Some(p) = pinning {
        pin_self(p.load_cpu)?;
    }
    println!("bench: {pinning_note}; load average {load_before}");
    let upstream = start_upstream()?;
    // token-fetch's token server: one-hour tokens, so no refresh falls into a measured run.
    let tokens = TokenServer::start(0, 3600)?;
    let rls = if variants.iter().any(|v| RLS_VARIANTS.contains(&v.base)) { Some(start_rls()?) } else { None };
    let servers =
        Servers { upstream: upstream.port, token_server: tokens.port, rls: rls.as_ref().map_or(0, |(_, r)| r.port()) };
    let repeated_jwt = prepare_tokens(&variants)?;
    let all_cpus = cpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let mut ctx = Context {
        envoy_version: envoy_version(),
        pinning_note,
        clk_tck,
        cpus: cpus.len(),
        wasm_sizes: module_sizes(&variants.iter().map(|v| v.config).collect::<Vec<_>>()),
        load_before,
        load_after: String::new(),
        date: today(),
    };

    if settings.instructions == InstructionMode::Only {
        let md = instructions::run(&settings, servers, &all_cpus, &repeated_jwt)?;
        ctx.load_after = loadavg();
        let md = format!("# make bench-instructions\n\n{md}\n{}", footer(&ctx));
        println!("\n{md}");
        write_outputs(&settings, &[("instructions.md", &md)]);
        return Ok(());
    }

    let memory_md = memory::run(&settings, servers, &all_cpus)?;
    println!("\n{memory_md}");
    if settings.memory_only {
        ctx.load_after = loadavg();
        let md = format!("# make bench (memory/start-up only)\n\n{memory_md}\n{}", footer(&ctx));
        write_outputs(&settings, &[("memory.md", &md)]);
        return Ok(());
    }

    let mut proxies = start_proxies(&variants, servers, pinning.map(|p| p.envoy_cpu), &repeated_jwt)?;
    let samples = cpu_rounds(&settings, pinning, clk_tck, &mut proxies)?;
    let latency_md = if settings.latency { latency::run(&settings, &mut proxies)? } else { String::new() };
    drop(proxies);
    ctx.load_after = loadavg();

    let (cpu_md, figures) = report(&settings, &variants, &samples, &ctx);
    let chart_rows: Vec<&RowFigures> =
        HEADLINE.iter().filter_map(|(name, _)| figures.iter().find(|f| f.name == *name)).collect();
    let svg = chart::cpu_per_request(&chart_rows, &settings, &ctx)?;
    let document = |instructions_md: &str, ctx: &Context| {
        format!(
            "# make bench\n\n![CPU per request](cpu-per-request.svg)\n\n{cpu_md}\n{latency_md}\n{memory_md}\n{instructions_md}\n{}",
            footer(ctx)
        )
    };
    // Written before the (long) instruction counts, so that their failure loses nothing.
    let md = document("", &ctx);
    println!("\n{md}");
    write_outputs(&settings, &[("bench.md", &md), ("cpu-per-request.svg", &svg)]);
    if settings.instructions == InstructionMode::On {
        let instructions_md = instructions::run(&settings, servers, &all_cpus, &repeated_jwt)?;
        ctx.load_after = loadavg();
        let md = document(&instructions_md, &ctx);
        println!("\n{instructions_md}");
        write_outputs(&settings, &[("bench.md", &md)]);
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_rows_repeat_the_wasm_rows_with_the_other_modules() {
        let settings =
            Settings { only: vec!["body-logger, 1 kib".into()], before: Some("/old"), ..Settings::for_test() };
        let names: Vec<(&str, &str, Option<&str>)> =
            settings.selected().iter().map(|v| (v.name, v.base, v.before)).collect();
        assert_eq!(
            names,
            vec![
                ("router-only", "router-only", None),
                ("body-logger, 1 KiB POST", "body-logger, 1 KiB POST", None),
                ("body-logger, 1 KiB POST [before]", "body-logger, 1 KiB POST", Some("/old")),
            ]
        );
        assert!(!settings.publishes(), "a comparison run is not the published table");
        let before = settings.selected()[2];
        assert_eq!(request_body(before).map(|b| b.len()), Some(1024), "looked up by the row it repeats");
    }

    #[test]
    fn modules_move_in_both_yaml_forms() {
        let config = "code: { local: { filename: dist/a.wasm } }\nlocal:\n  filename: \"dist/b.wasm\"\ncert: dist/c\n";
        assert_eq!(
            modules_from(config.to_string(), "/old"),
            "code: { local: { filename: /old/a.wasm } }\nlocal:\n  filename: \"/old/b.wasm\"\ncert: dist/c\n"
        );
    }
}
