#!/usr/bin/env bash
# Run the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer, AddressSanitizer) on the pinned stable
# toolchain. cargo-fuzz is installed from crates.io, pinned, into tools/cargo/ (never onto
# PATH). No nightly: RUSTC_BOOTSTRAP=1 lets stable take cargo-fuzz's `-Z` flags.
#   scripts/fuzz.sh                 every target, $FUZZ_SECONDS (60) each, one after the other
#   FUZZ_TARGETS="a b" FUZZ_SECONDS=600 scripts/fuzz.sh
#   FUZZ_SANITIZER=none             no ASan (faster build; what the CI smoke uses)
# New inputs go to target/fuzz-corpus/<target> (not committed); the committed seeds in
# fuzz/corpus/<target> are read, never written. A finding stops the run, leaves the input in
# fuzz/artifacts/<target>/ and prints how to reproduce it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"

# cargo-fuzz, pinned, into tools/cargo/bin (scripts/install-cargo-tool.sh).
scripts/install-cargo-tool.sh cargo-fuzz
export PATH="$root/tools/cargo/bin:$PATH" RUSTC_BOOTSTRAP=1

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
# Build every target first (a compile error shows before any time is spent fuzzing).
for t in $targets; do
  if ! build=$(cargo fuzz build --debug-assertions --sanitizer "$sanitizer" "$t" 2>&1); then
    echo "$build" | tail -n 60
    exit 1
  fi
done

for t in $targets; do
  work="$root/target/fuzz-corpus/$t"
  mkdir -p "$work"
  seeds=()
  [ -d "fuzz/corpus/$t" ] && seeds=("fuzz/corpus/$t")
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=("-dict=fuzz/dict/$t.dict")
  echo "=== $t: ${seconds}s"
  log="$root/target/fuzz-$t.log"
  if ! cargo fuzz run --debug-assertions --sanitizer "$sanitizer" "$t" "$work" "${seeds[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $t FAILED (log: $log; reproduce: RUSTC_BOOTSTRAP=1 PATH=$root/tools/cargo/bin:\$PATH cargo fuzz run $t fuzz/artifacts/$t/<file>)" >&2
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
  echo "$t: ${execs:-?} execs, ${cov:-cov: ?}, no finding"
done
