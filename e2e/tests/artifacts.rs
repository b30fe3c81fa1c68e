//! What `make build` ships: one module per filter crate, checksums that match, sizes within
//! budget — and the Envoy under test is the version asked for.

use std::collections::BTreeMap;
use std::process::Command;

/// Size budgets in bytes, as `make build` writes them. A trivial proxy-wasm Rust filter is
/// already ~80 KB (~64 KB after wasm-opt): see README "Build profile and module size".
const BUDGETS: &[(&str, u64)] = &[
    // This wave's shared layer (own ABI imports with every status an error, the per-proxy seed,
    // keyed hashing, wake/callout routing, the gRPC and whole-map host calls) added ~20–30 KB
    // to every module: security-headers 336 → 369 KB, token-fetch 318 → 353 KB. Issue 16's
    // diet works on it; the budgets hold the line where it is now.
    ("security-headers", 372 * 1024),
    // Secrets from the VM's environment (shared::config's DataSource, WASI environ) add ~11 KB:
    // 353 → 365 KB.
    ("token-fetch", 368 * 1024),
    // Global rules (RLS v3 messages with prost, the gRPC call) add ~61 KB: 437 → 498 KB
    // (filters/rate-limit/README.md says why prost).
    ("rate-limit", 500 * 1024),
    // The layered redaction scanners (JSON in strings, XML, multipart, URLs) add ~34 KB: 345 →
    // 379 KB before shared::abi and proxytest's glue, 394 → 428 KB after.
    ("body-logger", 440 * 1024),
    // ~1.3x the 621,525 bytes of jwt-auth.wasm built from jwt-core + jwt-crypto (RSA, p256/p384,
    // ed25519-dalek, HMAC): the crypto is most of it. ES512 (p521) and the X.509 JWKS form
    // (x509-cert, der) brought it to ~823 KB, the request path split and J1/J2/J8 to 849 KB.
    ("jwt-auth", 852 * 1024),
];

fn filter_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(e2e::repo_root().join("filters"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_filter_is_built_with_matching_checksums() {
    let dist = e2e::dist_dir();
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).expect("dist/SHA256SUMS: run `make build`");
    let listed: BTreeMap<String, String> =
        sums.lines().filter_map(|l| l.split_once("  ").map(|(h, f)| (f.trim().to_string(), h.to_string()))).collect();
    for name in filter_names() {
        let file = format!("{name}.wasm");
        let path = dist.join(&file);
        assert!(path.exists(), "{file} missing from dist/: run `make build`");
        let out = Command::new("sha256sum").arg(&path).output().unwrap();
        let actual = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string();
        assert_eq!(listed.get(&file), Some(&actual), "SHA256SUMS entry for {file}");
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], b"\0asm", "{file} is not a wasm module");
    }
}

#[test]
fn modules_stay_within_their_size_budget() {
    for (name, budget) in BUDGETS {
        let size = std::fs::metadata(e2e::dist_dir().join(format!("{name}.wasm"))).unwrap().len();
        assert!(size <= *budget, "{name}.wasm is {size} bytes, over its {budget}-byte budget");
    }
}

#[test]
fn envoy_under_test_is_the_requested_version() {
    let out = Command::new(e2e::envoy_bin()).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let wanted = std::env::var("ENVOY_VERSION").unwrap_or_else(|_| e2e::DEFAULT_ENVOY_VERSION.to_string());
    assert!(text.contains(&format!("/{wanted}/")), "wanted Envoy {wanted}, got: {text}");
    eprintln!("testing with {}", text.trim());
}
