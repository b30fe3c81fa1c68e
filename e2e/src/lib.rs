//! End-to-end harness: runs the real Envoy on the configs in `envoy-configs/`, with loopback
//! test servers, and asserts from outside (status, headers, body, admin stats).
//!
//! Conventions every config follows (the harness substitutes these ports, nothing else):
//! `10000` plain HTTP listener, `10443` HTTPS listener, `9901` admin, `18080` echo upstream, `18081` token server, `18082` JWKS server, `18083` rate limit service.
//! Paths in configs are relative to the repository root, which is Envoy's working directory.

pub mod browser;
pub mod chain;
pub mod demo;
pub mod doc_configs;
pub mod envoy;
pub mod grpc_server;
pub mod http;
pub mod jwks_server;
pub mod jwt;
pub mod lds;
pub mod load;
pub mod loopback;
pub mod redis;
pub mod rls_server;
pub mod token_server;
pub mod upstream;

use std::path::PathBuf;

pub const LISTENER_PORT: u16 = 10000;
pub const TLS_LISTENER_PORT: u16 = 10443;
pub const ADMIN_PORT: u16 = 9901;
pub const UPSTREAM_PORT: u16 = 18080;
/// token-fetch's token server (envoy-configs/token-fetch.yaml, cluster `token-server`).
pub const TOKEN_SERVER_PORT: u16 = 18081;
/// jwt-auth's JWKS server (envoy-configs/jwt-auth.yaml, cluster `jwks`).
pub const JWKS_PORT: u16 = 18082;
/// The global rate limit service, RLS v3 over gRPC (envoy-configs/rate-limit-native.yaml,
/// cluster `rate_limit_service`): [`rls_server::RlsServer`] in tests, limitador-server in compose.
pub const RLS_PORT: u16 = 18083;

/// Each filter's answer to a VM that traps, as its doc page ("Failure policy"), its Envoy
/// configs and its WasmPlugin state it: `(filter, Envoy failure_policy, Istio failStrategy)`.
/// Why each, and what each policy does (proved by e2e/tests/failure_policy.rs): docs/architecture.md,
/// "When a VM traps anyway". configs.rs and deploy.rs hold the files to this table.
pub const FAILURE_POLICIES: &[(&str, &str, &str)] = &[
    ("body-logger", "FAIL_OPEN", "FAIL_OPEN"),
    ("jwt-auth", "FAIL_RELOAD", "FAIL_RELOAD"),
    ("rate-limit", "FAIL_RELOAD", "FAIL_OPEN"),
    ("security-headers", "FAIL_RELOAD", "FAIL_OPEN"),
    ("token-fetch", "FAIL_RELOAD", "FAIL_RELOAD"),
];

/// Default Envoy version; keep in step with the Makefile's `ENVOY_VERSION`.
pub const DEFAULT_ENVOY_VERSION: &str = "1.40.0";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

/// `ENVOY_BIN`, else the pinned Envoy that `make envoy` installs under `tools/`.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let version = std::env::var("ENVOY_VERSION").unwrap_or_else(|_| DEFAULT_ENVOY_VERSION.to_string());
    repo_root().join("tools").join(format!("envoy-{version}")).join("envoy/_bin/envoy")
}

/// The version of the Envoy under test (`envoy_bin() --version`: `…/1.40.0/Clean/RELEASE/…`), for
/// tests whose expectations differ between supported Envoy releases.
pub fn envoy_version() -> Option<(u32, u32, u32)> {
    let out = std::process::Command::new(envoy_bin()).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split('/').find_map(|part| {
        let mut numbers = part.split('.').map(|n| n.parse::<u32>().ok());
        match (numbers.next(), numbers.next(), numbers.next(), numbers.next()) {
            (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) => Some((a, b, c)),
            _ => None,
        }
    })
}

/// The root_id of the bundle module's `chain` (collection/src/chain.rs): several filters in one
/// plugin, configured `{"filters": [{"root_id", "name", "configuration"}, …]}`.
pub const CHAIN: &str = "chain";

/// The module (`dist/<module>.wasm`, the image `…/<module>:<tag>`) that serves `root_id`: each
/// filter has its own; the chain is only in the bundle, `collection`.
pub fn module_of(root_id: &str) -> &str {
    if root_id == CHAIN {
        "collection"
    } else {
        root_id
    }
}

/// Directory holding the built filters (`make build` writes them).
pub fn dist_dir() -> PathBuf {
    repo_root().join("dist")
}
