#!/usr/bin/env bash
# Run the jose crate's tests (Wycheproof RSA/PSS/ECDSA/Ed25519/HMAC, table checks, JWKS parsing
# and verification) compiled for wasm32-wasip1, in node's V8 with WASI: the SIMD code paths
# only exist on wasm32. Everything at opt-level 3 (the vectors take minutes unoptimised); its
# own target dir, never dist/.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="$root/target/crypto-wasm-test" CARGO_PROFILE_DEV_OPT_LEVEL=3
args=(test --locked -p jose --lib --target wasm32-wasip1 --no-run)
out="$(cargo "${args[@]}" --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*\.wasm\)".*/\1/p' | tail -n 1)"
[ -n "$out" ] || { echo "build failed" >&2; cargo "${args[@]}"; exit 1; }
node --no-warnings "$root/bench/crypto-probe/wasm-test.mjs" "$out" --test-threads=1
