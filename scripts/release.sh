#!/usr/bin/env bash
# Versioned release artifacts from the current build, in dist/release/<version>/:
#   <filter>-<version>.wasm, SHA256SUMS, oci/<filter>/ (OCI image layouts, Istio compat form),
#   sbom/<filter>.cdx.json (CycloneDX SBOM of the crates in each module, scripts/sbom.sh),
#   schemas/<filter>.schema.json and <filter>.wasmplugin.schema.json (the configuration's JSON
#   Schema and the WasmPlugin wrapper, from make build's dist/schemas/),
#   istio/<manifest>.yaml (each deploy/istio manifest pinned to the image its url names: url tag
#   + spec.sha256 = the image's manifest digest, which is what Istio checks for oci:// urls;
#   chain.yaml names the collection image),
# and a CHANGELOG.md entry for the version when it has none yet (edit it before tagging).
#   scripts/release.sh [--out DIR] [--changelog FILE]     REGISTRY=ghcr.io/you/envoy-wasm-filters
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
out="dist/release/$version"
changelog=CHANGELOG.md
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --changelog) changelog="$2"; shift 2 ;;
    *) echo "usage: $0 [--out DIR] [--changelog FILE]" >&2; exit 2 ;;
  esac
done
registry="${REGISTRY:-ghcr.io/OWNER/envoy-wasm-filters}"
[ -f dist/SHA256SUMS ] || { echo "dist/SHA256SUMS missing: run make build" >&2; exit 1; }
(cd dist && sha256sum --check --quiet --strict SHA256SUMS) || { echo "dist/ does not match SHA256SUMS: run make build" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/oci" "$out/istio"
digests=()
for wasm in dist/*.wasm; do
  name="$(basename "$wasm" .wasm)"
  cp "$wasm" "$out/$name-$version.wasm"
  digest="$(python3 scripts/oci-layout.py --wasm "$wasm" --tag "$version" --out "$out/oci/$name" | awk '{print $2}')"
  digests+=("$name $digest")
done
# Each deploy/istio manifest pinned to the image its url names (`oci://…/<module>:<tag>`; a
# manifest's module need not be its file name: chain.yaml runs the collection image).
for manifest in deploy/istio/*.yaml; do
  [ -f "$manifest" ] || continue
  stem="$(basename "$manifest" .yaml)"
  name="$(sed -nE 's#^  url: oci://.*/([^/:@]+)[:@].*#\1#p' "$manifest" | head -n 1)"
  digest=""
  for d in "${digests[@]}"; do
    [ "${d%% *}" = "$name" ] && digest="${d#* }"
  done
  [ -n "$digest" ] || { echo "$manifest: url names no module of dist/ (${name:-no '  url: oci://…' line})" >&2; exit 1; }
  # Pin: the registry, the version tag, and the image's manifest digest (no `sha256:` prefix).
  sed -E \
    -e "s#^(  url: oci://).*/$name:.*#\1$registry/$name:$version#" \
    -e "s#^  \# sha256: .*#  sha256: ${digest#sha256:}#" \
    -e "s#^  sha256: .*#  sha256: ${digest#sha256:}#" \
    "$manifest" > "$out/istio/$stem.yaml"
  if ! grep -q "^  sha256: ${digest#sha256:}$" "$out/istio/$stem.yaml"; then
    # No sha256 line in the manifest: add one right after spec.url.
    awk -v sha="${digest#sha256:}" '{ print } /^  url: oci:\/\// { print "  sha256: " sha }' \
      "$out/istio/$stem.yaml" > "$out/istio/$stem.yaml.tmp"
    mv "$out/istio/$stem.yaml.tmp" "$out/istio/$stem.yaml"
  fi
  [ "$(grep -c "^  sha256: ${digest#sha256:}$" "$out/istio/$stem.yaml")" = 1 ] ||
    { echo "$manifest: could not pin spec.sha256 (needs one '  url: oci://…' line)" >&2; exit 1; }
done
[ -d dist/schemas ] || { echo "dist/schemas missing: run make build" >&2; exit 1; }
mkdir -p "$out/schemas"
cp dist/schemas/*.json "$out/schemas/"
(cd "$out" && sha256sum ./*.wasm | sed 's# \./# #' > SHA256SUMS)
scripts/sbom.sh "$out/sbom" >/dev/null

if ! grep -q "^## \[$version\]" "$changelog" 2>/dev/null; then
  since="$(git describe --tags --abbrev=0 2>/dev/null || true)"
  {
    echo "Modules (SHA-256 of the .wasm / OCI image manifest digest):"
    echo
    while read -r sum file; do
      name="${file%-"$version".wasm}"
      for d in "${digests[@]}"; do
        [ "${d%% *}" = "$name" ] && echo "- \`$file\` \`$sum\` / image \`${d#* }\`"
      done
    done < "$out/SHA256SUMS"
    echo
    echo "Changes${since:+ since $since}:"
    echo
    git log --no-merges --format='- %s' ${since:+"$since"..HEAD}
    echo
  } > "$out/CHANGELOG.entry.md"
  [ -f "$changelog" ] || printf '# Changelog\n' > "$changelog"
  # The entry goes before the first release heading (after the title and its introduction).
  # An `## Unreleased` section there (upgrade notes written as changes landed) becomes the
  # top of the new entry, so its notes ship with the release that brings the change.
  awk -v heading="## [$version] - $(date -u +%Y-%m-%d)" -v entry="$out/CHANGELOG.entry.md" '
    function flush_entry(   line) {
      print heading; print ""
      if (unreleased != "") { printf "%s", unreleased; print "" }
      while ((getline line < entry) > 0) print line
      done = 1
    }
    !done && !in_unreleased && /^## Unreleased[[:space:]]*$/ { in_unreleased = 1; next }
    in_unreleased && /^## / { sub(/^\n+/, "", unreleased); sub(/\n+$/, "\n", unreleased); flush_entry(); in_unreleased = 0 }
    in_unreleased { unreleased = unreleased $0 "\n"; next }
    !done && /^## / { flush_entry() }
    { print }
    END {
      if (in_unreleased) { sub(/^\n+/, "", unreleased); sub(/\n+$/, "\n", unreleased) } else if (!done) { print "" }
      if (!done) flush_entry()
    }
  ' "$changelog" > "$changelog.tmp"
  mv "$changelog.tmp" "$changelog"
  rm "$out/CHANGELOG.entry.md"
  echo "added a $version entry to $changelog: edit it before tagging v$version"
fi
echo "release $version in $out:"
ls -1 "$out" | sed 's/^/  /'
