#!/usr/bin/env bash
# What a new user gets: clone the committed repository into a temporary directory and run
# README's test command (`make test`) with every cache a developer machine accumulates
# isolated away:
#   CARGO_HOME, CARGO_TARGET_DIR   new and empty (no registry, no git checkouts, no builds)
#   PATH                           rustup's proxies only from ~/.cargo/bin (no cargo-installed tools)
#   pip, npm                       PIP_NO_CACHE_DIR=1, npm_config_cache new and empty
#   tools/                         absent (a fresh clone has none: Envoy and tools are installed)
#   TOOLS_CACHE                    new and empty (the per-user cache of built cargo tools)
# Not isolated: the Rust toolchain itself (RUSTUP_HOME; rust-toolchain.toml pins it) and Debian
# packages (system-wide; `make deps` installs what is missing).
#   scripts/fresh-check.sh [make target…]     (make fresh-check; default target: test)
# A manual check (it roughly doubles CI's time), run before resolving build or install changes.
# Prints the exit code and the time taken; keeps the directory when the run fails.
set -uo pipefail
# The whole script is one block: bash reads it completely before running it. The run takes
# an hour or more in the very checkout being edited, and bash otherwise reads a script as it
# goes, so an edit to this file mid-run made it execute a shifted line (`make ci` here).
{
root="$(cd "$(dirname "$0")/.." && pwd)"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(test)

work="$(mktemp -d /tmp/fresh-check.XXXXXX)"
log="$work.log"
mkdir -p "$work/cargo-home" "$work/target" "$work/npm-cache" "$work/bin"
git clone --quiet --no-hardlinks "$root" "$work/repo" || { echo "fresh-check: clone failed" >&2; exit 1; }
echo "fresh-check: $(git -C "$work/repo" log -1 --format='%h %s') in $work/repo"
[ -n "$(git -C "$root" status --porcelain)" ] && echo "fresh-check: note: uncommitted changes in $root are not part of the check"

# rustup's proxies, and nothing else that `cargo install` may have put beside them.
rustup_bin="$(dirname "$(command -v rustup)")"
for proxy in cargo rustc rustdoc rustup rustfmt cargo-fmt cargo-clippy clippy-driver; do
  [ -e "$rustup_bin/$proxy" ] && ln -s "$rustup_bin/$proxy" "$work/bin/$proxy"
done
path="$work/bin"
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ "$d" = "$rustup_bin" ] || [ -z "$d" ] || path="$path:$d"
done

start=$(date +%s)
(
  cd "$work/repo" &&
    env -u CARGO_TARGET_DIR -u ENVOY_BIN -u RUSTC_WRAPPER \
      PATH="$path" \
      CARGO_HOME="$work/cargo-home" \
      CARGO_TARGET_DIR="$work/target" \
      RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" \
      PIP_NO_CACHE_DIR=1 \
      npm_config_cache="$work/npm-cache" \
      TOOLS_CACHE="$work/tools-cache" \
      make "${targets[@]}"
) 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
secs=$(( $(date +%s) - start ))
echo
echo "fresh-check: make ${targets[*]} exited $status after ${secs}s ($((secs / 60)) min); log: $log"
if [ "$status" -eq 0 ]; then
  rm -rf "$work"
else
  echo "fresh-check: kept $work for inspection"
fi
exit "$status"
}
