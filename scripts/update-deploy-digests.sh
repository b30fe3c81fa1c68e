#!/usr/bin/env bash
# Write each manifest's wasm SHA-256 from dist/SHA256SUMS into deploy/istio/*.yaml, in the
# `envoy-wasm-filters/wasm-sha256:` annotation (why not spec.sha256: see security-headers.yaml).
# A manifest ships the module its image is named after (`url: oci://…/<module>:<tag>`:
# chain.yaml's is collection), else the one named like the file. Idempotent: files already up
# to date are left untouched. Run after `make build`.
#   scripts/update-deploy-digests.sh           rewrite the manifests
#   scripts/update-deploy-digests.sh --check   change nothing; exit 1 if any manifest is stale
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

check=no
case "${1:-}" in
  "") ;;
  --check) check=yes ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

key="envoy-wasm-filters/wasm-sha256"
sums=dist/SHA256SUMS
if [ ! -f "$sums" ]; then
  echo "error: $sums not found: run \`make build\` first" >&2
  exit 1
fi
# The sums must describe the files next to them (a stale SHA256SUMS would pin the wrong build).
if ! (cd dist && sha256sum --check --quiet --strict SHA256SUMS) >&2; then
  echo "error: $sums does not match dist/*.wasm: run \`make build\` again" >&2
  exit 1
fi

shopt -s nullglob
manifests=(deploy/istio/*.yaml)
if [ ${#manifests[@]} -eq 0 ]; then
  echo "error: no deploy/istio/*.yaml" >&2
  exit 1
fi

stale=0
for manifest in "${manifests[@]}"; do
  filter="$(sed -nE 's#^  url: oci://.*/([^/:@]+)[:@].*#\1#p' "$manifest" | head -n 1)"
  filter="${filter:-$(basename "$manifest" .yaml)}"
  digest="$(awk -v f="$filter.wasm" '$2 == f || $2 == "*" f { print $1 }' "$sums")"
  if ! [[ "$digest" =~ ^[0-9a-f]{64}$ ]]; then
    echo "error: no digest for $filter.wasm in $sums ($manifest; is $filter built?)" >&2
    exit 1
  fi
  count="$(grep -cE "^[[:space:]]*${key}:" "$manifest" || true)"
  if [ "$count" != 1 ]; then
    echo "error: $manifest must have exactly one \`$key:\` line (found $count)" >&2
    exit 1
  fi
  current="$(sed -nE "s#^[[:space:]]*${key}:[[:space:]]*\"?([^\"[:space:]]*)\"?.*#\\1#p" "$manifest")"
  if [ "$current" = "$digest" ]; then
    echo "$manifest: up to date"
    continue
  fi
  if [ "$check" = yes ]; then
    echo "$manifest: stale ($key is ${current:-empty}, dist/$filter.wasm is $digest)" >&2
    stale=1
    continue
  fi
  tmp="$(mktemp "$manifest.XXXXXX")"
  sed -E "s#^([[:space:]]*${key}:).*#\\1 ${digest}#" "$manifest" > "$tmp"
  chmod --reference="$manifest" "$tmp"
  mv "$tmp" "$manifest"
  echo "$manifest: $key ${current:-<empty>} -> $digest"
done

if [ "$stale" = 1 ]; then
  echo "run scripts/update-deploy-digests.sh" >&2
  exit 1
fi
