#!/usr/bin/env bash
# Create a new, complete filter from templates/filter/: crate in the workspace (filters/<name>),
# config with validation, unit tests, an end-to-end test, a doc page, an Envoy config, an
# Istio WasmPlugin, and its place in the bundle module (collection/). It compiles, loads in
# Envoy and passes its tests as generated.
#   scripts/new-filter.sh <name>        (make new-filter NAME=<name>)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
name="${1:-}"
if ! [[ "$name" =~ ^[a-z][a-z0-9]*(-[a-z0-9]+)*$ ]]; then
  echo "usage: $0 <name>   (lowercase letters, digits and single dashes, e.g. geo-block)" >&2
  exit 2
fi
snake="${name//-/_}"
camel="$(echo "$name" | sed -E 's/(^|-)([a-z0-9])/\U\2/g')"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"

declare -A targets=(
  [Cargo.toml.tmpl]="filters/$name/Cargo.toml"
  [lib.rs.tmpl]="filters/$name/src/lib.rs"
  [config.rs.tmpl]="filters/$name/src/config.rs"
  [filter.rs.tmpl]="filters/$name/src/filter.rs"
  [README.md.tmpl]="filters/$name/README.md"
  [e2e.rs.tmpl]="e2e/tests/$snake.rs"
  [envoy.yaml.tmpl]="envoy-configs/$name.yaml"
  [wasmplugin.yaml.tmpl]="deploy/istio/$name.yaml"
)
for template in "${!targets[@]}"; do
  if [ -e "${targets[$template]}" ]; then
    echo "${targets[$template]} already exists: pick another name" >&2
    exit 1
  fi
done
for template in "${!targets[@]}"; do
  out="${targets[$template]}"
  mkdir -p "$(dirname "$out")"
  sed -e "s/__NAME__/$name/g" -e "s/__SNAKE__/$snake/g" -e "s/__CAMEL__/$camel/g" -e "s/__VERSION__/$version/g" \
    "templates/filter/$template" > "$out"
done
# Its configuration's JSON Schema: one line in the generator's list, and its dependency.
sed -i "s|^    // new filters above this line|    (\"$name\", schema_of::<$snake::config::Config>),\n&|" schemas/src/lib.rs
echo "$name = { path = \"../filters/$name\", features = [\"schema\"] }" >> schemas/Cargo.toml
grep -q "\"$name\", schema_of" schemas/src/lib.rs || { echo "could not add $name to schemas/src/lib.rs" >&2; exit 1; }

# The bundle module (collection/, dist/collection.wasm) serves it too, under root_id "$name".
sed -i "s|^# new filters above this line|$name = { path = \"../filters/$name\", features = [\"bundled\"] }\n&|" collection/Cargo.toml
sed -i -e "s|^    // new filters above this line|    $snake::filter::${camel}Root::NAME,\n&|" \
  -e "s|^        // new filters above this line|        member::<$snake::filter::${camel}Root>(),\n&|" collection/src/lib.rs
[ "$(grep -c "$snake::filter::${camel}Root" collection/src/lib.rs)" = 2 ] || { echo "could not add $name to collection/src/lib.rs" >&2; exit 1; }
# ... and may run it as a member of a `chain` plugin (collection/src/chain.rs).
sed -i "s|^        // new filters above this line|        factory::<$snake::filter::${camel}Root>(),\n&|" collection/src/chain.rs
grep -q "factory::<$snake::filter::${camel}Root>" collection/src/chain.rs || { echo "could not add $name to collection/src/chain.rs" >&2; exit 1; }

# Record the new workspace member in Cargo.lock (it uses only dependencies already locked).
# `update --workspace` touches workspace members only and needs the registry index, not the
# crates themselves (`cargo metadata` would download every locked crate, even those of other
# targets). Offline first, from the index any earlier build cached; online on a new machine.
cargo update --workspace --offline --quiet 2>/dev/null || cargo update --workspace --quiet

cat <<MSG
Created filter '$name':
  filters/$name/ (crate, README.md), envoy-configs/$name.yaml, e2e/tests/$snake.rs, deploy/istio/$name.yaml,
  its JSON Schema in schemas/ (written by make build), and a member of the bundle (collection/,
  dist/collection.wasm, root_id "$name")
Next:
  make build                                   # dist/$name.wasm, and its digest in deploy/istio/$name.yaml
  cargo test -p $name && cargo test -p e2e --test $snake
  ENVOY_CONFIG=$name.yaml docker compose up    # try it in containers
To run it in the demo, add it to envoy-configs/all-in-one.yaml (see the order notes there).
MSG
