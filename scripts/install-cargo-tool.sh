#!/usr/bin/env bash
# Install a cargo tool the build uses at its pinned version into tools/cargo/bin (never onto
# the user's PATH), from crates.io with its own lock file. Idempotent.
#   scripts/install-cargo-tool.sh <crate>
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
echo "installing $crate $version into tools/cargo (cargo install --locked)"
# One build directory for every tool: crates they share (clap, serde, …) build once.
cargo install --quiet --locked --root "$root/tools/cargo" --target-dir "$root/target/cargo-install" "$crate@$version"
