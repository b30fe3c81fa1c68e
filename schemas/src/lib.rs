//! The JSON Schema (draft 2020-12) of every filter's configuration, generated from the
//! filter's own config types (`schemars` derives next to serde's, feature `schema`), and the
//! WasmPlugin-shaped wrapper editors use for Istio manifests. `make build` (scripts/schemas.sh)
//! keeps the committed copies in `schemas/` current (CI refuses stale ones) and publishes them
//! in `dist/schemas/`;
//! `e2e/tests/schemas.rs` validates every shipped and documented configuration against them.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde_json::{json, Map, Value};

/// Generates one configuration's schema.
pub type SchemaFn = fn() -> Schema;

/// Every filter's configuration type, by filter name (the `filters/<name>` directory). A new
/// filter or root configuration joins with one line here (and its dependency with feature
/// `schema` in Cargo.toml); `make new-filter` adds both.
pub const FILTERS: &[(&str, SchemaFn)] = &[
    ("body-logger", schema_of::<body_logger::config::Config>),
    ("jwt-auth", schema_of::<jwt_auth::config::Config>),
    ("rate-limit", schema_of::<rate_limit::config::Config>),
    ("security-headers", schema_of::<security_headers::config::Config>),
    ("token-fetch", schema_of::<token_fetch::config::Config>),
    // new filters above this line (scripts/new-filter.sh)
];

/// The bundle module's roots that are not a filter, by root_id: their configurations embed the
/// filters' (the config types live in `collection/`, a cdylib this crate cannot link, so the
/// schema is built here from [`FILTERS`]' own).
pub const ROOTS: &[(&str, SchemaFn)] = &[("chain", chain_schema)];

/// The published files: `<filter>.schema.json` (the configuration: an Envoy `StringValue`'s
/// JSON, an Istio `pluginConfig`) and `<filter>.wasmplugin.schema.json` (a whole WasmPlugin
/// manifest whose `spec.pluginConfig` is that configuration).
pub fn files() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (filter, schema) in FILTERS {
        let config = schema().to_value();
        out.push((format!("{filter}.wasmplugin.schema.json"), canonical(&wasm_plugin(filter, &config, None))));
        out.push((format!("{filter}.schema.json"), canonical(&config)));
    }
    // A root of the bundle is only that root under its own `pluginName` (Istio's root_id).
    for (root, schema) in ROOTS {
        let config = schema().to_value();
        out.push((format!("{root}.wasmplugin.schema.json"), canonical(&wasm_plugin(root, &config, Some(root)))));
        out.push((format!("{root}.schema.json"), canonical(&config)));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The configuration schema of `T`, draft 2020-12, for what serde reads (deserialize contract).
pub fn schema_of<T: JsonSchema>() -> Schema {
    SchemaSettings::draft2020_12().for_deserialize().into_generator().into_root_schema_for::<T>()
}

/// A WasmPlugin (extensions.istio.io) whose `pluginConfig` is `config`. Only `pluginConfig` is
/// ours: the rest of `spec` is Istio's, left open except for the fields every manifest needs,
/// and `pluginName` (the root_id) when it must be `plugin_name` (a root of the bundle module).
pub fn wasm_plugin(filter: &str, config: &Value, plugin_name: Option<&str>) -> Value {
    let mut plugin_config = config.clone();
    let mut defs = Map::new();
    if let Some(object) = plugin_config.as_object_mut() {
        object.remove("$schema");
        // `#/$defs/X` references stay valid: the definitions move to this document's root.
        if let Some(Value::Object(d)) = object.remove("$defs") {
            defs = d;
        }
    }
    defs.insert("PluginConfig".into(), plugin_config);
    let mut spec_required = vec![json!("url")];
    let mut spec_properties = Map::new();
    spec_properties.insert("url".into(), json!({ "type": "string", "minLength": 1 }));
    spec_properties.insert("pluginConfig".into(), json!({ "$ref": "#/$defs/PluginConfig" }));
    if let Some(name) = plugin_name {
        spec_required.push(json!("pluginName"));
        spec_properties.insert(
            "pluginName".into(),
            json!({ "const": name, "description": format!("The root_id: the bundle module serves {name} under this one.") }),
        );
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("Istio WasmPlugin running {filter}"),
        "description": format!("An Istio WasmPlugin manifest whose spec.pluginConfig is the {filter} configuration ({filter}.schema.json). The rest of spec is Istio's (extensions.istio.io WasmPlugin)."),
        "type": "object",
        "required": ["apiVersion", "kind", "spec"],
        "properties": {
            "apiVersion": { "type": "string", "pattern": "^extensions\\.istio\\.io/" },
            "kind": { "const": "WasmPlugin" },
            "metadata": { "type": "object" },
            "spec": {
                "type": "object",
                "required": spec_required,
                "properties": spec_properties
            }
        },
        "$defs": defs
    })
}

/// The `chain` root's configuration (collection/src/chain.rs, `ChainConfig`):
/// `{"filters": [{"root_id", "name", "configuration"}, …]}`, one to
/// [`shared::bundle::CHAIN_MAX_MEMBERS`] members, no unknown field at either level. `root_id`
/// is one of [`FILTERS`] (never `chain`); `name` is optional (default:
/// `<the chain's plugin_name>/<root_id>`) and not empty; `configuration` is optional or `null` (the filter
/// then reads `{}`), an object, checked with the schema of the filter `root_id` names (each
/// filter's schema and definitions under `$defs/<filter>` and `$defs/<filter>.<Def>`), or a
/// JSON string holding the configuration's text (Envoy's StringValue form: the schema cannot
/// see inside it). Only the chain can check that names are distinct and that a filter
/// accepts an absent configuration.
pub fn chain_schema() -> Schema {
    let mut defs = Map::new();
    let mut cases = Vec::new();
    for (filter, schema) in FILTERS {
        let mut config = schema().to_value();
        let prefix = format!("{filter}.");
        rebase_refs(&mut config, &prefix);
        if let Some(object) = config.as_object_mut() {
            object.remove("$schema");
            if let Some(Value::Object(d)) = object.remove("$defs") {
                for (name, def) in d {
                    defs.insert(format!("{prefix}{name}"), def);
                }
            }
        }
        defs.insert((*filter).to_string(), config);
        cases.push(json!({
            "if": { "properties": { "root_id": { "const": filter } }, "required": ["root_id"] },
            "then": { "properties": { "configuration": {
                "if": { "type": "object" },
                "then": { "$ref": format!("#/$defs/{filter}") }
            } } }
        }));
    }
    let root_ids: Vec<&str> = FILTERS.iter().map(|(f, _)| *f).collect();
    defs.insert(
        "ChainMember".into(),
        json!({
            "description": "One filter of the chain, shaped like Envoy's wasm PluginConfig.",
            "type": "object",
            "additionalProperties": false,
            "required": ["root_id"],
            "properties": {
                "root_id": {
                    "description": "The filter (any of the bundle's but chain).",
                    "enum": root_ids
                },
                "name": {
                    "description": "The instance: what the member reads as plugin_name (default: <the chain's own plugin_name>/<root_id>). Distinct within the chain; an explicit name is taken as is.",
                    "type": ["string", "null"],
                    "minLength": 1
                },
                "configuration": {
                    "description": "The filter's configuration as it takes it alone: an object (checked with that filter's schema), or its JSON text as a string (not checked here). Absent or null: the filter reads {}.",
                    "type": ["object", "string", "null"]
                }
            },
            "allOf": cases
        }),
    );
    let value = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "chain configuration",
        "description": "The bundle module's chain root (dist/collection.wasm, root_id chain): several filters in one plugin, request callbacks in order, response callbacks in reverse.",
        "type": "object",
        "additionalProperties": false,
        "required": ["filters"],
        "properties": {
            "filters": {
                "description": format!("The members, in request order (at most {}).", shared::bundle::CHAIN_MAX_MEMBERS),
                "type": "array",
                "minItems": 1,
                "maxItems": shared::bundle::CHAIN_MAX_MEMBERS,
                "items": { "$ref": "#/$defs/ChainMember" }
            }
        },
        "$defs": defs
    });
    match value {
        Value::Object(map) => Schema::from(map),
        _ => Schema::default(),
    }
}

/// `#/$defs/X` → `#/$defs/<prefix>X` throughout `value` (a filter's schema moved into another
/// document's `$defs`). Recursion is bounded by the generated schemas' own nesting.
fn rebase_refs(value: &mut Value, prefix: &str) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "$ref" {
                    if let Some(name) = child.as_str().and_then(|r| r.strip_prefix("#/$defs/")) {
                        *child = Value::String(format!("#/$defs/{prefix}{name}"));
                    }
                } else {
                    rebase_refs(child, prefix);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rebase_refs(v, prefix)),
        _ => {}
    }
}

/// Keys sorted at every level, whatever map type serde_json was built with, so the files are
/// the same bytes from any build.
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), canonical(&map[k]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The text of a file: pretty JSON and a final newline.
pub fn text(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}
