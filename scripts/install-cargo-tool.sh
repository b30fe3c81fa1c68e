#!/usr/bin/env bash
# Install a cargo tool the build uses at its pinned version into tools/cargo/bin (never onto
# the user's PATH), from crates.io with its own lock file. Idempotent.
#   scripts/install-cargo-tool.sh <crate>
# A build of a pinned version is kept in a per-user cache, $TOOLS_CACHE (default
# ~/.cache/envoy-wasm-filters/cargo-tools; `off` = none), and copied from there into tools/:
# another clone, worktree or CI checkout on the same machine does not compile it again
# (cargo-deny alone is minutes on 2 cores). `make fresh-check` points it at an empty directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
declare -A versions=(
  [cargo-deny]=0.20.2       # make deny: license and ban checks
  [cargo-cyclonedx]=0.5.9   # make sbom / make release: CycloneDX SBOM per module
  [cargo-fuzz]=0.13.2       # make fuzz: cargo-fuzz driver (libFuzzer)
)
crate="${1:-}"
version="${versions[$crate]:-}"
[ -n "$version" ] || { echo "usage: $0 <${!versions[*]}>" >&2; exit 2; }
bin="$root/tools/cargo/bin/$crate"
# cargo-deny prints "cargo-deny 0.20.2"; the cargo subcommands want their subcommand name first.
installed="$("$bin" --version 2>/dev/null || "$bin" "${crate#cargo-}" --version 2>/dev/null || true)"
case "$installed" in
  *" $version"*) exit 0 ;;
esac
cache="${TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/envoy-wasm-filters/cargo-tools}"
if [ "$cache" = off ] || ! mkdir -p "$cache" 2>/dev/null; then
  cache=""
fi
# The install root: the cache's directory for this exact version, else tools/cargo itself.
install_root="${cache:+$cache/$crate-$version}"
install_root="${install_root:-$root/tools/cargo}"
cached="$install_root/bin/$crate"
if [ -n "$cache" ] && [ -x "$cached" ]; then
  echo "$crate $version: from the tool cache $install_root"
else
  echo "installing $crate $version into ${cache:+the tool cache }$install_root (cargo install --locked)"
  # One build directory for every tool: crates they share (clap, serde, …) build once.
  cargo install --quiet --locked --root "$install_root" --target-dir "$root/target/cargo-install" "$crate@$version"
fi
if [ -n "$cache" ]; then
  mkdir -p "$root/tools/cargo/bin"
  cp "$cached" "$bin.tmp" && mv "$bin.tmp" "$bin"
fi
