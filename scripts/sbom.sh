#!/usr/bin/env bash
# A CycloneDX 1.5 SBOM per shipped module: every crate compiled into dist/<filter>.wasm (and
# dist/collection.wasm)
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
# The filters, and the bundle of them all (collection/: dist/collection.wasm).
for dir in filters/*/ collection/; do
  name="$(basename "$dir")"
  [ -f "$dir/$name.cdx.json" ] || { echo "sbom: no SBOM for $name" >&2; exit 1; }
  # Paths of this checkout say nothing about the module: make them repository-relative.
  sed "s#file://$root/#file:///src/#g" "$dir/$name.cdx.json" > "$out/$name.cdx.json"
  # cargo-cyclonedx resolves features for the whole workspace, so the native-only crates that
  # other members turn on (the `schema` feature: schemars, for schemas/) would be listed.
  # Keep the crates of this module's own wasm32 build, as `cargo tree -p` resolves it.
  cargo tree --locked -q -p "$name" --target wasm32-wasip1 -e normal --prefix none --format '{p}' |
    awk '{ print $1 "@" substr($2, 2) }' | sort -u > "$out/.$name.crates"
  python3 - "$out/$name.cdx.json" "$out/.$name.crates" <<'PY'
import json, sys
path, crates = sys.argv[1], set(open(sys.argv[2]).read().split())
bom = json.load(open(path))
keep = {c["bom-ref"] for c in bom["components"] if f'{c["name"]}@{c["version"]}' in crates}
keep.add(bom["metadata"]["component"]["bom-ref"])
bom["components"] = [c for c in bom["components"] if c["bom-ref"] in keep]
deps = []
for d in bom.get("dependencies", []):
    if d["ref"] in keep:
        if "dependsOn" in d:
            d["dependsOn"] = [r for r in d["dependsOn"] if r in keep]
        deps.append(d)
bom["dependencies"] = deps
with open(path, "w") as f:
    json.dump(bom, f, indent=2)
    f.write("\n")
PY
  rm -f "$out/.$name.crates"
done
echo "SBOMs in $out: $(cd "$out" && ls | tr '\n' ' ')"
