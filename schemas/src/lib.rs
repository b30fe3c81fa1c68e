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

/// The published files: `<filter>.schema.json` (the configuration: an Envoy `StringValue`'s
/// JSON, an Istio `pluginConfig`) and `<filter>.wasmplugin.schema.json` (a whole WasmPlugin
/// manifest whose `spec.pluginConfig` is that configuration).
pub fn files() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (filter, schema) in FILTERS {
        let config = schema().to_value();
        out.push((format!("{filter}.wasmplugin.schema.json"), canonical(&wasm_plugin(filter, &config))));
        out.push((format!("{filter}.schema.json"), canonical(&config)));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The configuration schema of `T`, draft 2020-12, for what serde reads (deserialize contract).
pub fn schema_of<T: JsonSchema>() -> Schema {
    SchemaSettings::draft2020_12().for_deserialize().into_generator().into_root_schema_for::<T>()
}

/// A WasmPlugin (extensions.istio.io) whose `pluginConfig` is `config`. Only `pluginConfig` is
/// ours: the rest of `spec` is Istio's, left open except for the fields every manifest needs.
pub fn wasm_plugin(filter: &str, config: &Value) -> Value {
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
                "required": ["url"],
                "properties": {
                    "url": { "type": "string", "minLength": 1 },
                    "pluginConfig": { "$ref": "#/$defs/PluginConfig" }
                }
            }
        },
        "$defs": defs
    })
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
