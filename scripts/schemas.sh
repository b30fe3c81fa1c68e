#!/usr/bin/env bash
# The configuration JSON Schemas (schemas/README.md): schemas/*.json (committed) and their
# published copy dist/schemas/. Run by make build; `make schemas` forces a regeneration.
#   scripts/schemas.sh [--force]
# The generator (the schemas/ crate) is a native build of every filter with its `schema`
# feature, in its own cargo profile: about a minute of CPU from a cold cache. It runs only when
# a source it reads changed since schemas/ was written (schemas/inputs.sha256 hashes them), so a
# fresh clone's build copies the committed files; e2e/tests/schemas.rs proves they are what the
# config types generate. Locally a stale schemas/ is rewritten (commit it, like the manifest
# digests); in CI (CI=true) it fails the build instead.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
force=no
case "${1:-}" in
  "") ;;
  --force) force=yes ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

# Everything the generator is built from: the crates' sources and manifests, the lock file, the
# toolchain. Conservative: any filter change regenerates (seconds once the cache is warm).
inputs_hash() {
  { find filters shared crates schemas/src -type f \( -name '*.rs' -o -name Cargo.toml \) -print
    printf '%s\n' Cargo.toml Cargo.lock rust-toolchain.toml schemas/Cargo.toml; } |
    LC_ALL=C sort -u | xargs sha256sum | sha256sum | cut -d' ' -f1
}
hash="$(inputs_hash)"
generate=(cargo run --quiet --locked --profile schemas -p schemas --)
if [ "$force" = yes ] || [ "$(cat schemas/inputs.sha256 2>/dev/null)" != "$hash" ]; then
  if [ "${CI:-}" = true ]; then
    "${generate[@]}" --check schemas
  else
    "${generate[@]}" schemas
    echo "$hash" > schemas/inputs.sha256
  fi
fi
rm -rf dist/schemas
mkdir -p dist/schemas
cp schemas/*.schema.json dist/schemas/
