//! What `make build` ships: one module per filter crate and the bundle of them all, checksums
//! that match, sizes within budget, entry points exported — and the Envoy under test is the
//! version asked for.

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
    // Every filter in one module (collection/): 1,096,164 bytes when it came, against 2.64 MB
    // for the five modules (one copy of the SDK, shared/, serde_json, the allocator). It grows
    // with any filter: the headroom is ~1% of that. The chain root (collection/src/chain.rs:
    // every filter behind a dyn root, its host wrapper, its configuration with serde_json's
    // RawValue) brought it from 1,101,501 to 1,151,314 bytes (+49 KB).
    ("collection", 1130 * 1024),
];

/// The bundle module (collection/): every filter in one `.wasm`, each under its own root_id.
const BUNDLE: &str = "collection";

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
    for name in filter_names().into_iter().chain([BUNDLE.to_string()]) {
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

/// The bundle's filters are built with their `bundled` feature (no `proxy_wasm::main!`). Cargo
/// unifies features per invocation: had it reached the filters' own build, their modules would
/// lack `_initialize`, and Envoy would load them with no root context (every plugin refused).
#[test]
fn every_module_exports_the_proxy_wasm_entry_points() {
    for name in filter_names().into_iter().chain([BUNDLE.to_string()]) {
        let bytes = std::fs::read(e2e::dist_dir().join(format!("{name}.wasm"))).unwrap();
        let exports = function_exports(&bytes).unwrap_or_else(|e| panic!("{name}.wasm: {e}"));
        for entry in ["_initialize", "proxy_abi_version_0_2_1", "proxy_on_context_create", "proxy_on_configure"] {
            assert!(exports.iter().any(|e| e == entry), "{name}.wasm does not export {entry}: {exports:?}");
        }
    }
}

/// The names of a wasm module's exported functions (its export section, binary format 1).
fn function_exports(wasm: &[u8]) -> Result<Vec<String>, String> {
    fn leb(b: &[u8], at: &mut usize) -> Result<usize, String> {
        let (mut v, mut shift) = (0usize, 0);
        loop {
            let byte = *b.get(*at).ok_or("truncated")?;
            *at += 1;
            v |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }
    if wasm.get(..8) != Some(b"\0asm\x01\0\0\0".as_slice()) {
        return Err("not a wasm module, version 1".into());
    }
    let mut at = 8;
    while at < wasm.len() {
        let id = wasm[at];
        at += 1;
        let size = leb(wasm, &mut at)?;
        let end = at + size;
        if id == 7 {
            let mut names = Vec::new();
            for _ in 0..leb(wasm, &mut at)? {
                let len = leb(wasm, &mut at)?;
                let name = String::from_utf8_lossy(wasm.get(at..at + len).ok_or("truncated")?).into_owned();
                at += len;
                let kind = *wasm.get(at).ok_or("truncated")?;
                at += 1;
                leb(wasm, &mut at)?;
                if kind == 0 {
                    names.push(name);
                }
            }
            return Ok(names);
        }
        at = end;
    }
    Err("no export section".into())
}

#[test]
fn envoy_under_test_is_the_requested_version() {
    let out = Command::new(e2e::envoy_bin()).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let wanted = std::env::var("ENVOY_VERSION").unwrap_or_else(|_| e2e::DEFAULT_ENVOY_VERSION.to_string());
    assert!(text.contains(&format!("/{wanted}/")), "wanted Envoy {wanted}, got: {text}");
    eprintln!("testing with {}", text.trim());
}
