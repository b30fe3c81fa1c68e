#!/usr/bin/env bash
# Run jwt-auth's crypto tests (Wycheproof RSA/PSS/ECDSA/Ed25519, table checks) as wasm32-wasip1
# in node's V8 with WASI: the SIMD code paths only exist on wasm32.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$root/bench/crypto-probe/wasm-test"
export CARGO_TARGET_DIR="$root/target/crypto-wasm-test"
out="$(cargo test --manifest-path "$dir/Cargo.toml" --target wasm32-wasip1 --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*\.wasm\)".*/\1/p' | tail -n 1)"
[ -n "$out" ] || { echo "build failed" >&2; cargo test --manifest-path "$dir/Cargo.toml" --target wasm32-wasip1 --no-run; exit 1; }
node --no-warnings "$dir/run.mjs" "$out" --test-threads=1
