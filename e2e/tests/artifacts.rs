//! What `make build` ships: one module per filter crate, checksums that match, sizes within
//! budget — and the Envoy under test is the version asked for.

use std::collections::BTreeMap;
use std::process::Command;

/// Size budgets in bytes, as `make build` writes them. A trivial proxy-wasm Rust filter is
/// already ~80 KB (~64 KB after wasm-opt): see README "Build profile and module size".
const BUDGETS: &[(&str, u64)] = &[
    ("security-headers", 340 * 1024),
    ("token-fetch", 320 * 1024),
    ("rate-limit", 400 * 1024),
    // The layered redaction scanners (JSON in strings, XML, multipart, URLs) add ~34 KB: 345 →
    // 379 KB before shared::abi and proxytest's glue, 394 → 428 KB after.
    ("body-logger", 440 * 1024),
    // ~1.3x the 621,525 bytes of jwt-auth.wasm built from jwt-core + jwt-crypto (RSA, p256/p384,
    // ed25519-dalek, HMAC): the crypto is most of it.
    ("jwt-auth", 790 * 1024),
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
