#!/usr/bin/env bash
# Build every filter under filters/ for wasm32-wasip1 and write dist/<filter>.wasm, the bundle
# of them all dist/collection.wasm (collection/), dist/SHA256SUMS, and dist/schemas/ (each
# configuration's JSON Schema) (and, never shipped: the e2e suite's test-only dist/test/probe.wasm,
# dist/test/jwt-auth-trap.wasm and dist/test/collection-trap.wasm, the
# bench's trivial filter dist/bench/trivial-filter.wasm).
# WASM_OPT=on also runs `wasm-opt -Oz` (Debian's binaryen) on the filters: off by default,
# because measured in Envoy 1.40 it cut the file by 18% but raised Envoy's RSS by ~9 MB with no
# faster start (README, "Build profile and module size").
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target=wasm32-wasip1
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  rustup target add "$target"
fi

# A filter whose Cargo.toml says `build-profile = "release-speed"` ([package.metadata.build])
# is built with that profile (opt-level 3 for every crate of its module, chosen by measurement:
# README, "Build profile and module size"); the others with `release` ("z").
filters=()
profile_of=()
for dir in filters/*/; do
  [ -f "$dir/Cargo.toml" ] || continue
  filters+=("$(basename "$dir")")
  if grep -qx 'build-profile = "release-speed"' "$dir/Cargo.toml"; then
    profile_of+=(release-speed)
  else
    profile_of+=(release)
  fi
done

# Path-independent output: the same source gives the same bytes in any checkout.
export CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="--remap-path-prefix=$root=/src --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
for profile in release release-speed; do
  args=()
  for i in "${!filters[@]}"; do
    [ "${profile_of[$i]}" = "$profile" ] && args+=(-p "${filters[$i]}")
  done
  [ ${#args[@]} -gt 0 ] && cargo build --profile "$profile" --locked --target "$target" "${args[@]}"
done

# Rust's wasm output uses these post-MVP features; binaryen must be told to accept them.
wasm_opt_flags=(-Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals
  --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types --strip-debug --strip-producers)
use_wasm_opt=no
if [ "${WASM_OPT:-off}" = on ]; then
  command -v wasm-opt >/dev/null 2>&1 || { echo "WASM_OPT=on needs wasm-opt (apt-get install binaryen)" >&2; exit 1; }
  use_wasm_opt=yes
fi

mkdir -p dist
rm -f dist/*.wasm dist/SHA256SUMS
for i in "${!filters[@]}"; do
  f="${filters[$i]}"
  src="${CARGO_TARGET_DIR:-target}/$target/${profile_of[$i]}/${f//-/_}.wasm"
  if [ "$use_wasm_opt" = yes ]; then
    wasm-opt "${wasm_opt_flags[@]}" "$src" -o "dist/$f.wasm"
  else
    cp "$src" "dist/$f.wasm"
  fi
done

# The bundle (collection/: every filter under its own root_id, one VM for all of them). Its
# filters are built with their `bundled` feature (no `shared::main!` of their own): its own
# cargo invocation, so that feature never reaches the modules above, and its own target
# directory, because each filter's cdylib would otherwise be rebuilt without its entry points
# under the same file name as the standalone one.
cargo build --release --locked --target "$target" -p collection --target-dir "${CARGO_TARGET_DIR:-target}/bundle"
src="${CARGO_TARGET_DIR:-target}/bundle/$target/release/collection.wasm"
if [ "$use_wasm_opt" = yes ]; then
  wasm-opt "${wasm_opt_flags[@]}" "$src" -o dist/collection.wasm
else
  cp "$src" dist/collection.wasm
fi
(cd dist && sha256sum ./*.wasm | sed 's# \./# #' > SHA256SUMS)

# The end-to-end suite's test-only module (e2e/probe, host capabilities in a real Envoy). Its own
# cargo invocation, so it can never change the filters' bytes (no feature unification with
# them), and written under dist/test/: outside dist/*.wasm, SHA256SUMS, releases and images.
cargo build --release --locked --target "$target" -p probe
mkdir -p dist/test
cp "${CARGO_TARGET_DIR:-target}/$target/release/probe.wasm" dist/test/probe.wasm

# jwt-auth with the `test-trap` feature (the shared glue traps on `x-test-trap`), for
# e2e/tests/failure_policy.rs: Envoy's FAIL_RELOAD restarting a real filter. Its own target
# directory, so the shipped build never shares (or rebuilds) artifacts with it; written to
# dist/test/ like the probe, never shipped.
cargo build --release --locked --target "$target" -p jwt-auth --features test-trap --target-dir "${CARGO_TARGET_DIR:-target}/test-trap"
cp "${CARGO_TARGET_DIR:-target}/test-trap/$target/release/jwt_auth.wasm" dist/test/jwt-auth-trap.wasm

# The bundle with the same `test-trap` (the first filter to see a request carrying `x-test-trap`
# traps the VM all of them share), for e2e/tests/failure_policy.rs's shared-fate test. Its own
# target directory, for the reasons above.
cargo build --release --locked --target "$target" -p collection --features test-trap --target-dir "${CARGO_TARGET_DIR:-target}/bundle-trap"
cp "${CARGO_TARGET_DIR:-target}/bundle-trap/$target/release/collection.wasm" dist/test/collection-trap.wasm

# The bench's floor (bench/trivial-filter: an SDK-only filter, `make bench`'s "trivial filter"
# row), with the filters' release profile and flags, in its own invocation for the same reason.
cargo build --release --locked --target "$target" -p trivial-filter
mkdir -p dist/bench
cp "${CARGO_TARGET_DIR:-target}/$target/release/trivial_filter.wasm" dist/bench/trivial-filter.wasm

# Each filter's configuration JSON Schema (and the WasmPlugin wrapper) into dist/schemas/, from
# the committed schemas/, regenerated from the config types when their sources changed.
scripts/schemas.sh

# The Istio manifests carry each module's digest. Locally they follow the build; in CI
# (CI=true) a manifest that does not match the build fails it: commit the updated manifest.
if [ "${CI:-}" = true ]; then
  scripts/update-deploy-digests.sh --check
else
  scripts/update-deploy-digests.sh
fi
echo "built (wasm-opt: $use_wasm_opt):"
(cd dist && for f in *.wasm; do printf '  dist/%-24s %8d bytes\n' "$f" "$(stat -c %s "$f")"; done)
echo "  dist/schemas/: $(ls dist/schemas | wc -l) JSON Schemas (schemas/README.md)"
