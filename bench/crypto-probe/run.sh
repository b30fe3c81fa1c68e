#!/usr/bin/env bash
# Time JWS signature verification inside Envoy's V8 runtime (CRYPTO.md).
#   bench/crypto-probe/run.sh            # the shipped release profile: z, crypto crates at 3
#   DEPS_OPT=z bench/crypto-probe/run.sh # crypto crates (p256, sha2, curve25519-dalek, ...) at z too
#   OPT=3 bench/crypto-probe/run.sh      # the rest of the module at opt-level 3 (or s, 2, ...)
#   JWT_OPT=3 bench/crypto-probe/run.sh  # the jose crate (crates/jose: own RSA, P-256 tables) at opt-level 3
#   RUSTFLAGS_EXTRA="-C target-feature=+simd128" bench/crypto-probe/run.sh
# Builds into target/crypto-probe (never dist/), starts Envoy with the module as a singleton
# WasmService, prints the figures it logs, stops Envoy.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
probe="$root/bench/crypto-probe"
envoy="${ENVOY_BIN:-$root/tools/envoy-${ENVOY_VERSION:-1.40.0}/envoy/_bin/envoy}"
export CARGO_TARGET_DIR="$root/target/crypto-probe"
args=(--release --target wasm32-wasip1 --manifest-path "$probe/Cargo.toml")
label="opt-level ${OPT:-z}, crypto deps ${DEPS_OPT:-3}"
quote() { case "$1" in [0-9]) echo "$1" ;; *) echo "\"$1\"" ;; esac; }
[ -n "${OPT:-}" ] && args+=(--config "profile.release.opt-level=$(quote "$OPT")")
if [ -n "${JWT_OPT:-}" ]; then
  args+=(--config "profile.release.package.jose.opt-level=$(quote "$JWT_OPT")")
  label="$label, jose $JWT_OPT"
fi
if [ -n "${DEPS_OPT:-}" ]; then
  for dep in p256 p384 p521 primefield primeorder elliptic-curve ecdsa crypto-bigint sha2 hmac curve25519-dalek ed25519-dalek; do
    args+=(--config "profile.release.package.$dep.opt-level=$(quote "$DEPS_OPT")")
  done
fi
[ -n "${RUSTFLAGS_EXTRA:-}" ] && label="$label, $RUSTFLAGS_EXTRA"
export CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="${RUSTFLAGS_EXTRA:-}"
PROBE_LABEL="$label" cargo build "${args[@]}" >&2
wasm="$CARGO_TARGET_DIR/wasm32-wasip1/release/crypto_probe.wasm"
echo "module: $(stat -c %s "$wasm") bytes ($label)"

tmp="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
cat > "$tmp/envoy.yaml" <<YAML
bootstrap_extensions:
- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    singleton: true
    config:
      name: crypto-probe
      root_id: crypto-probe
      vm_config:
        vm_id: crypto-probe
        runtime: envoy.wasm.runtime.v8
        code: { local: { filename: "$wasm" } }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
YAML
"$envoy" -c "$tmp/envoy.yaml" --concurrency 1 -l warn --base-id-path "$tmp/base-id" --use-dynamic-base-id \
  > "$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  grep -q "crypto-probe: done" "$tmp/log" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.5
done
grep -o "crypto-probe: .*" "$tmp/log" || { cat "$tmp/log"; exit 1; }
