#!/usr/bin/env bash
# A CycloneDX 1.5 SBOM per shipped module: every crate compiled into dist/<filter>.wasm
# (wasm32-wasip1 dependencies only, build-time-only crates left out), with versions, licenses
# and package URLs, written by cargo-cyclonedx (installed into tools/cargo at a pinned version).
#   scripts/sbom.sh <out-dir>        -> <out-dir>/<filter>.cdx.json
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${1:?usage: $0 <out-dir>}"
scripts/install-cargo-tool.sh cargo-cyclonedx
mkdir -p "$out"
# cargo-cyclonedx writes <crate>.cdx.json beside every workspace member's Cargo.toml.
cleanup() { find . -path ./target -prune -o -name '*.cdx.json' -newer "$stamp" -print0 2>/dev/null | xargs -0 rm -f; rm -f "$stamp"; }
stamp="$(mktemp)"
trap cleanup EXIT
tools/cargo/bin/cargo-cyclonedx cyclonedx --quiet --format json --spec-version 1.5 \
  --target wasm32-wasip1 --no-build-deps --describe crate
for dir in filters/*/; do
  name="$(basename "$dir")"
  [ -f "$dir/$name.cdx.json" ] || { echo "sbom: no SBOM for $name" >&2; exit 1; }
  # Paths of this checkout say nothing about the module: make them repository-relative.
  sed "s#file://$root/#file:///src/#g" "$dir/$name.cdx.json" > "$out/$name.cdx.json"
done
echo "SBOMs in $out: $(cd "$out" && ls | tr '\n' ' ')"
