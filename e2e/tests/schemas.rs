//! The JSON Schemas of `schemas/` (one per filter, plus a WasmPlugin wrapper) against the
//! config types and the filters' own validation:
//! - the committed files are what the config types generate now (a type change without
//!   `make build` fails here), and every filter has one;
//! - every documented configuration (`e2e::doc_configs`), every wasm configuration in
//!   `envoy-configs/` and every `deploy/istio` manifest validates (the manifest against the
//!   WasmPlugin schema as a whole);
//! - configurations the filter refuses fail the schema too, except the listed refusals JSON
//!   Schema cannot express (each checked to still be accepted by the schema, so the list
//!   stays true), and edge cases the filter accepts pass it (the schema is never stricter).

mod common;

use common::configure_natively;
use e2e::doc_configs::{self, DocConfig, Origin};
use e2e::repo_root;
use jsonschema::Validator;
use serde_json::Value;
use std::collections::BTreeMap;

/// The filter's own verdict (both phases), natively; the chain's (a root of the bundle module,
/// which only builds for wasm) in Envoy, on dist/collection.wasm; `None` for a filter not
/// registered in `common` (a new one from `make new-filter`: its schema is still checked).
fn filter_verdict(filter: &str, json: &str) -> Option<Result<(), String>> {
    if filter == e2e::CHAIN {
        let verdict = e2e::envoy::validate_plugin_config(filter, json);
        return Some(verdict.map_err(|(field, message)| format!("field `{field}`: {message}")));
    }
    configure_natively(filter, json).map(|r| r.map_err(|e| e.to_string()))
}

struct Schemas {
    files: BTreeMap<String, Value>,
}

impl Schemas {
    fn generate() -> Schemas {
        Schemas { files: schemas::files().into_iter().collect() }
    }

    fn validator(&self, file: &str) -> Validator {
        let schema = self.files.get(file).unwrap_or_else(|| panic!("no schema {file}"));
        jsonschema::draft202012::meta::validate(schema).unwrap_or_else(|e| panic!("{file} is not a valid schema: {e}"));
        jsonschema::draft202012::new(schema).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    fn config(&self, filter: &str) -> Validator {
        self.validator(&format!("{filter}.schema.json"))
    }
}

/// Every schema error, one line each: `at /rules/0/name: …`.
fn errors(validator: &Validator, value: &Value) -> Vec<String> {
    validator.iter_errors(value).map(|e| format!("at {}: {e}", e.instance_path())).collect()
}

fn filters_in_repo() -> Vec<String> {
    let mut filters: Vec<String> = std::fs::read_dir(repo_root().join("filters"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    filters.sort();
    filters
}

#[test]
fn committed_schemas_are_what_the_config_types_generate() {
    let root = repo_root();
    let generated = schemas::files();
    let mut stale = Vec::new();
    for (name, value) in &generated {
        let path = root.join("schemas").join(name);
        if std::fs::read_to_string(&path).ok() != Some(schemas::text(value)) {
            stale.push(name.clone());
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/ differs from the config types (run `make schemas` or `make build`, and commit schemas/): {stale:?}"
    );
    // No file left behind by a removed filter.
    let mut committed: Vec<String> = std::fs::read_dir(root.join("schemas"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    committed.sort();
    let names: Vec<String> = generated.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(committed, names);
    // Every filter has its two schemas.
    for filter in filters_in_repo() {
        for name in [format!("{filter}.schema.json"), format!("{filter}.wasmplugin.schema.json")] {
            assert!(names.contains(&name), "{filter} has no {name}: add it to schemas/src/lib.rs FILTERS");
        }
    }
}

fn check_config(schemas: &Schemas, config: &DocConfig, failures: &mut Vec<String>) {
    let value = match config.value() {
        Ok(v) => v,
        Err(e) => return failures.push(e),
    };
    if !schemas.files.contains_key(&format!("{}.schema.json", config.filter)) {
        return failures.push(format!("{}: no schema for filter `{}`", config.location(), config.filter));
    }
    let errs = errors(&schemas.config(&config.filter), &value);
    if !errs.is_empty() {
        failures.push(format!(
            "{}: {} schema refuses this {:?}:\n    {}",
            config.location(),
            config.filter,
            config.origin,
            errs.join("\n    ")
        ));
    }
}

#[test]
fn every_documented_and_shipped_configuration_validates() {
    let root = repo_root();
    let schemas = Schemas::generate();
    let mut failures = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut chains = Vec::new();

    let docs = doc_configs::extract_all(&root);
    assert_eq!(docs.problems, vec![], "the doc_configs test names these");
    for config in &docs.configs {
        check_config(&schemas, config, &mut failures);
    }
    counts.insert("documentation", docs.configs.len());

    let mut envoy = 0;
    for file in doc_configs::yaml_files(&root, "envoy-configs") {
        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        let found = doc_configs::extract_yaml(&file, &text, 1, None);
        assert_eq!(found.problems, vec![], "{}", file.display());
        for config in &found.configs {
            check_config(&schemas, config, &mut failures);
            if config.filter == e2e::CHAIN {
                chains.push(file.display().to_string());
            }
        }
        envoy += found.configs.len();
    }
    counts.insert("envoy-configs", envoy);

    let mut manifests = 0;
    for file in doc_configs::yaml_files(&root, "deploy/istio") {
        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        let found = doc_configs::extract_yaml(&file, &text, 1, None);
        assert_eq!(found.problems, vec![], "{}", file.display());
        for config in &found.configs {
            check_config(&schemas, config, &mut failures);
            if config.filter == e2e::CHAIN {
                chains.push(file.display().to_string());
            }
        }
        // The whole manifest against its filter's WasmPlugin schema (what an editor checks).
        let filter = file.file_stem().unwrap().to_string_lossy().into_owned();
        let manifest: Value = serde_norway::from_str(&text).unwrap();
        let errs = errors(&schemas.validator(&format!("{filter}.wasmplugin.schema.json")), &manifest);
        if !errs.is_empty() {
            failures.push(format!(
                "{}: refused by {filter}.wasmplugin.schema.json:\n    {}",
                file.display(),
                errs.join("\n    ")
            ));
        }
        manifests += 1;
    }
    counts.insert("deploy/istio manifests", manifests);

    assert!(failures.is_empty(), "configurations their filter's schema refuses:\n{}", failures.join("\n"));
    // Not vacuous: every filter's configurations were among them, in each form.
    for filter in filters_in_repo() {
        assert!(docs.configs.iter().any(|c| c.filter == filter), "no documented configuration of {filter}");
    }
    assert!(docs.configs.iter().any(|c| c.origin == Origin::EnvoyStringValue));
    assert!(envoy >= 5 && manifests >= 5, "{counts:?}");
    // The chain's, whole (chain.schema.json), in both shipped forms: all-in-one-chain.yaml's
    // StringValue and deploy/istio/chain.yaml (its members were checked above as their filters').
    assert!(chains.contains(&"envoy-configs/all-in-one-chain.yaml".to_string()), "{chains:?}");
    assert!(chains.contains(&"deploy/istio/chain.yaml".to_string()), "{chains:?}");
    println!("validated: {counts:?}");
}

/// The WasmPlugin wrapper checks `spec.pluginConfig` with the filter's schema and the shape
/// around it; the control for the test above.
#[test]
fn the_wasmplugin_schema_refuses_a_bad_plugin_config_and_a_wrong_kind() {
    let schemas = Schemas::generate();
    let validator = schemas.validator("rate-limit.wasmplugin.schema.json");
    let text = std::fs::read_to_string(repo_root().join("deploy/istio/rate-limit.yaml")).unwrap();
    let good: Value = serde_norway::from_str(&text).unwrap();
    assert!(validator.is_valid(&good));
    let mut bad = good.clone();
    bad["spec"]["pluginConfig"]["rules"][0]["token_bucket"]["max_tokens"] = 0.into();
    let errs = errors(&validator, &bad);
    assert!(errs.iter().any(|e| e.contains("/spec/pluginConfig/rules/0/token_bucket")), "{errs:?}");
    let mut typo = good.clone();
    typo["spec"]["pluginConfig"]["rulez"] = Value::Array(vec![]);
    assert!(!validator.is_valid(&typo));
    let mut kind = good;
    kind["kind"] = "EnvoyFilter".into();
    assert!(!validator.is_valid(&kind));
}

/// The chain's WasmPlugin schema checks each member's configuration with its filter's schema,
/// the members' shape, and the root_id Istio passes (`pluginName`).
#[test]
fn the_chain_wasmplugin_schema_refuses_a_bad_member_and_another_plugin_name() {
    let schemas = Schemas::generate();
    let validator = schemas.validator("chain.wasmplugin.schema.json");
    let text = std::fs::read_to_string(repo_root().join("deploy/istio/chain.yaml")).unwrap();
    let good: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(errors(&validator, &good), Vec::<String>::new());
    let members = good["spec"]["pluginConfig"]["filters"].as_array().unwrap();
    let rate_limit = members.iter().position(|m| m["root_id"] == "rate-limit").expect("a rate-limit member");
    let mut bad = good.clone();
    bad["spec"]["pluginConfig"]["filters"][rate_limit]["configuration"]["rules"][0]["token_bucket"]["max_tokens"] =
        0.into();
    let errs = errors(&validator, &bad);
    let at = format!("/spec/pluginConfig/filters/{rate_limit}/configuration/rules/0/token_bucket");
    assert!(errs.iter().any(|e| e.contains(&at)), "{errs:?}");
    // The same configuration under another member's root_id is that filter's, and refused.
    let mut swapped = good.clone();
    swapped["spec"]["pluginConfig"]["filters"][rate_limit]["root_id"] = "security-headers".into();
    assert!(!validator.is_valid(&swapped));
    let mut typo = good.clone();
    typo["spec"]["pluginConfig"]["filters"][0]["configuraton"] = Value::Object(Default::default());
    assert!(!validator.is_valid(&typo));
    let mut plugin_name = good.clone();
    plugin_name["spec"]["pluginName"] = "security-headers".into();
    assert!(!validator.is_valid(&plugin_name));
    let mut no_plugin_name = good;
    no_plugin_name["spec"].as_object_mut().unwrap().remove("pluginName");
    assert!(!validator.is_valid(&no_plugin_name));
}

const GLOBAL: &str = r#""domain":"d","rate_limit_service":{"grpc_service":{"envoy_grpc":{"cluster_name":"rls"}}}"#;
const RULE: &str =
    r#"{"name":"r","actions":[{"remote_address":{}}],"token_bucket":{"max_tokens":10,"fill_interval":"1s"}}"#;
const GLOBAL_RULE: &str = r#"{"name":"g","actions":[{"path":{}}],"global":{}}"#;
const JWKS: &str = r#""local_jwks":{"inline_string":""}"#;

/// A chain of `n` security-headers members, named `m0`, `m1`, …
fn chain_of(n: usize) -> String {
    let members: Vec<String> =
        (0..n).map(|i| format!(r#"{{"root_id":"security-headers","name":"m{i}","configuration":{{}}}}"#)).collect();
    format!(r#"{{"filters":[{}]}}"#, members.join(","))
}

fn rate_limit(extra: &str) -> String {
    format!(r#"{{"rules":[{RULE}]{extra}}}"#)
}

/// Configurations the filter refuses whose refusal JSON Schema can express: the schema must
/// refuse each too.
fn refused_by_both() -> Vec<(&'static str, String)> {
    let r = |json: &str| json.to_string();
    vec![
        // every filter: an unknown field, a wrong type (deny_unknown_fields → additionalProperties: false)
        ("security-headers", r(r#"{"header":{}}"#)),
        ("security-headers", r(r#"{"trust_x_forwarded_proto":"yes"}"#)),
        ("security-headers", r(r#"{"headers":{"bad name":"x"}}"#)),
        ("security-headers", r(r#"{"headers":{"x-a":"line\r\nbreak"}}"#)),
        ("security-headers", r(r#"{"headers":{"x-a":""}}"#)),
        ("security-headers", r(r#"{"headers":{"x-a":" lead"}}"#)),
        ("security-headers", r(r#"{"headers":{"Content-Length":"1"}}"#)),
        ("security-headers", r(r#"{"headers":{"Strict-Transport-Security":"includeSubDomains"}}"#)),
        ("security-headers", r(r#"{"headers":{"strict-transport-security":{"value":"max-age=1d"}}}"#)),
        ("security-headers", r(r#"{"headers":{"x-a":{"value":"1","append_action":"APPEND_IF_EXISTS_OR_ADD"}}}"#)),
        ("security-headers", r(r#"{"headers":{"x-a":{"value":"1","extra":true}}}"#)),
        ("security-headers", r(r#"{"headers":{"x-a":5}}"#)),
        ("security-headers", r(r#"{"append_action":"OVERWRITE"}"#)),
        ("security-headers", r(r#"{"remove_headers":["ok","no good"]}"#)),
        ("security-headers", r(r#"{"remove_headers":["transfer-encoding"]}"#)),
        ("security-headers", r(r#"{"path_overrides":[{"match":{}}]}"#)),
        ("security-headers", r(r#"{"path_overrides":[{"match":{"prefix":"/a","path":"/b"}}]}"#)),
        ("security-headers", r(r#"{"path_overrides":[{"match":{"prefix":"docs"}}]}"#)),
        ("security-headers", r(r#"{"path_overrides":[{"match":{"path":"/a?b"}}]}"#)),
        ("security-headers", r(r#"{"path_overrides":[{"match":{"prefix":"/a"},"colour":1}]}"#)),
        // rate-limit
        ("rate-limit", r("{}")),
        ("rate-limit", r(r#"{"rules":[]}"#)),
        ("rate-limit", r(r#"{"rules":[],"x":1}"#)),
        ("rate-limit", format!(r#"{{"rules":[{}]}}"#, RULE.replace(r#""name":"r""#, r#""name":"a b""#))),
        (
            "rate-limit",
            format!(r#"{{"rules":[{}]}}"#, RULE.replace(r#""actions":[{"remote_address":{}}]"#, r#""actions":[]"#)),
        ),
        (
            "rate-limit",
            format!(
                r#"{{"rules":[{}]}}"#,
                RULE.replace(r#"{"remote_address":{}}"#, r#"{"remote_address":{},"path":{}}"#)
            ),
        ),
        ("rate-limit", format!(r#"{{"rules":[{}]}}"#, RULE.replace(r#"{"remote_address":{}}"#, "{}"))),
        ("rate-limit", format!(r#"{{"rules":[{}]}}"#, RULE.replace(r#""max_tokens":10"#, r#""max_tokens":0"#))),
        (
            "rate-limit",
            format!(r#"{{"rules":[{}]}}"#, RULE.replace(r#""fill_interval":"1s""#, r#""fill_interval":"1""#)),
        ),
        (
            "rate-limit",
            format!(r#"{{"rules":[{}]}}"#, RULE.replace(r#""fill_interval":"1s""#, r#""fill_interval":"1m""#)),
        ),
        ("rate-limit", r(r#"{"rules":[{"name":"a","actions":[{"path":{}}]}]}"#)),
        (
            "rate-limit",
            format!(
                r#"{{{GLOBAL},"rules":[{}]}}"#,
                GLOBAL_RULE
                    .replace(r#""global":{}"#, r#""global":{},"token_bucket":{"max_tokens":1,"fill_interval":"1s"}"#)
            ),
        ),
        ("rate-limit", rate_limit(r#","status":{"code":200}"#)),
        ("rate-limit", rate_limit(r#","table":{"max_keys":2}"#)),
        ("rate-limit", rate_limit(r#","table":{"max_keys":2000000}"#)),
        ("rate-limit", rate_limit(r#","table":{"on_full":"DROP"}"#)),
        ("rate-limit", rate_limit(r#","cas":{"max_attempts":0}"#)),
        ("rate-limit", rate_limit(r#","enable_x_ratelimit_headers":"DRAFT_VERSION_04""#)),
        (
            "rate-limit",
            format!(
                r#"{{"rules":[{}]}}"#,
                RULE.replace(r#"{"remote_address":{}}"#, r#"{"masked_remote_address":{"v4_prefix_mask_len":33}}"#)
            ),
        ),
        (
            "rate-limit",
            format!(
                r#"{{"rules":[{}]}}"#,
                RULE.replace(
                    r#"{"remote_address":{}}"#,
                    r#"{"request_headers":{"header_name":"x y","descriptor_key":"k"}}"#
                )
            ),
        ),
        (
            "rate-limit",
            format!(
                r#"{{"rules":[{}]}}"#,
                RULE.replace(r#"{"remote_address":{}}"#, r#"{"generic_key":{"descriptor_value":""}}"#)
            ),
        ),
        (
            "rate-limit",
            format!(
                r#"{{"rules":[{}]}}"#,
                RULE.replace(r#""name":"r","#, r#""name":"r","match":{"prefix":"/a","path":"/a"},"#)
            ),
        ),
        (
            "rate-limit",
            format!(
                r#"{{"rules":[{}]}}"#,
                RULE.replace(r#""name":"r","#, r#""name":"r","match":{"methods":["get"]},"#)
            ),
        ),
        (
            "rate-limit",
            format!(
                r#"{{"rules":[{}]}}"#,
                RULE.replace(r#""name":"r","#, r#""name":"r","match":{"headers":[{"name":"x"}]},"#)
            ),
        ),
        // global rules: the service settings come with a global rule, and only with one
        ("rate-limit", format!(r#"{{"rules":[{GLOBAL_RULE}]}}"#)),
        ("rate-limit", format!(r#"{{"domain":"d","rules":[{GLOBAL_RULE}]}}"#)),
        ("rate-limit", rate_limit(&format!(",{GLOBAL}"))),
        ("rate-limit", rate_limit(r#","timeout":"1s""#)),
        ("rate-limit", rate_limit(r#","disable_x_envoy_ratelimited_header":true"#)),
        ("rate-limit", format!(r#"{{{GLOBAL},"status_on_error":{{"code":200}},"rules":[{GLOBAL_RULE}]}}"#)),
        (
            "rate-limit",
            format!(
                r#"{{{GLOBAL},"rules":[{}]}}"#,
                GLOBAL_RULE.replace(r#""global":{}"#, r#""global":{"hits_addend":0}"#)
            ),
        ),
        (
            "rate-limit",
            format!(
                r#"{{"domain":"d d","rate_limit_service":{{"grpc_service":{{"envoy_grpc":{{"cluster_name":"rls"}}}}}},"rules":[{GLOBAL_RULE}]}}"#
            ),
        ),
        (
            "rate-limit",
            format!(
                r#"{{{},"rules":[{GLOBAL_RULE}]}}"#,
                GLOBAL.replace(r#""rls"}}"#, r#""rls"}},"transport_api_version":"V2""#)
            ),
        ),
        // jwt-auth
        ("jwt-auth", r(r#"{"providers":{"p":{}}}"#)),
        (
            "jwt-auth",
            format!(
                r#"{{"providers":{{"p":{{{JWKS},"remote_jwks":{{"http_uri":{{"uri":"https://x/j","cluster":"c","timeout":"1s"}}}}}}}}}}"#
            ),
        ),
        ("jwt-auth", r(r#"{"providers":{"p":{"local_jwks":{}}}}"#)),
        ("jwt-auth", r(r#"{"providers":{"p":{"local_jwks":{"inline_string":"","environment_variable":"K"}}}}"#)),
        (
            "jwt-auth",
            r(r#"{"providers":{"p":{"remote_jwks":{"http_uri":{"uri":"ftp://x/j","cluster":"c","timeout":"1s"}}}}}"#),
        ),
        ("jwt-auth", r(r#"{"providers":{"p":{"remote_jwks":{"http_uri":{"uri":"https://x/j","cluster":"c"}}}}}"#)),
        ("jwt-auth", format!(r#"{{"providers":{{"p":{{{JWKS},"from_headers":[{{"name":"bad name"}}]}}}}}}"#)),
        ("jwt-auth", format!(r#"{{"providers":{{"p":{{{JWKS},"from_cookies":["a=b"]}}}}}}"#)),
        (
            "jwt-auth",
            format!(
                r#"{{"providers":{{"p":{{{JWKS},"claim_to_headers":[{{"header_name":"x-a","claim_name":"a..b"}}]}}}}}}"#
            ),
        ),
        ("jwt-auth", format!(r#"{{"providers":{{"p":{{{JWKS},"issuerr":"x"}}}}}}"#)),
        ("jwt-auth", r(r#"{"max_token_bytes":10}"#)),
        (
            "jwt-auth",
            format!(
                r#"{{"providers":{{"p":{{{JWKS}}}}},"rules":[{{"match":{{"prefix":"/"}},"requires":{{"provider_name":"p","allow_missing":{{}}}}}}]}}"#
            ),
        ),
        (
            "jwt-auth",
            format!(
                r#"{{"providers":{{"p":{{{JWKS}}}}},"rules":[{{"match":{{"prefix":"/"}},"requires":{{"requires_any":{{"requirements":[{{"provider_name":"p"}}]}}}}}}]}}"#
            ),
        ),
        ("jwt-auth", r(r#"{"rules":[{"match":{"prefix":"/"},"requires":{"allow_missing":{"x":1}}}]}"#)),
        // token-fetch
        ("token-fetch", r("{}")),
        (
            "token-fetch",
            format!(
                r#"{{"oauth2":{{"token_endpoint":{{"cluster":"c","uri":"http://t/"}},"client_credentials":{{"client_id":"a","client_secret":"{}"}}}}}}"#,
                "s".repeat(4097)
            ),
        ),
        (
            "token-fetch",
            r(
                r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://t/"},"client_credentials":{"client_id":"a","client_secret":{"filename":"/s"}}}}"#,
            ),
        ),
        (
            "token-fetch",
            r(
                r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://t/"},"client_credentials":{"client_id":"a","client_secret":""}}}"#,
            ),
        ),
        // the empty secret as a data source (the shared DataSource schema accepts "" for
        // jwt-auth's local JWKS: token-fetch's Secret refuses it)
        (
            "token-fetch",
            r(
                r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://t/"},"client_credentials":{"client_id":"a","client_secret":{"inline_string":""}}}}"#,
            ),
        ),
        (
            "token-fetch",
            format!(
                r#"{{"oauth2":{{"token_endpoint":{{"cluster":"c","uri":"http://t/"}},"client_credentials":{{"client_id":"a","client_secret":{{"inline_string":"{}"}}}}}}}}"#,
                "s".repeat(4097)
            ),
        ),
        (
            "token-fetch",
            r(
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://t/"},"token_header":"x-t","token_lifetime":"60s"},"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://t/"},"client_credentials":{"client_id":"a","client_secret":"b"}}}"#,
            ),
        ),
        (
            "token-fetch",
            r(r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://t/"},"token_lifetime":"60s"}}"#),
        ),
        (
            "token-fetch",
            r(
                r#"{"http_get":{"token_endpoint":{"cluster":" ","uri":"http://t/"},"token_header":"x-t","token_lifetime":"60s"}}"#,
            ),
        ),
        (
            "token-fetch",
            r(
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://u@t/"},"token_header":"x-t","token_lifetime":"60s"}}"#,
            ),
        ),
        (
            "token-fetch",
            r(
                r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://t/"},"client_credentials":{"client_id":"","client_secret":"b"}}}"#,
            ),
        ),
        (
            "token-fetch",
            r(
                r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://t/"},"client_credentials":{"client_id":"a","client_secret":"b","auth_type":"DIGEST"}}}"#,
            ),
        ),
        (
            "token-fetch",
            r(
                r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://t/"},"client_credentials":{"client_id":"a","client_secret":"b"},"scopes":["a b"]}}"#,
            ),
        ),
        (
            "token-fetch",
            r(
                r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://t/"},"client_credentials":{"client_id":"a","client_secret":"b"},"endpoint_params":[{"name":"scope","value":"x"}]}}"#,
            ),
        ),
        (
            "token-fetch",
            r(
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://t/"},"token_header":"x-t","token_lifetime":"60s"},"header_name":"Host"}"#,
            ),
        ),
        (
            "token-fetch",
            r(
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://t/"},"token_header":"x-t","token_lifetime":"60s"},"refresh_fraction":0}"#,
            ),
        ),
        (
            "token-fetch",
            r(
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://t/"},"token_header":"x-t","token_lifetime":"60s"},"header_prefix":" x"}"#,
            ),
        ),
        // body-logger
        ("body-logger", r(r#"{"max_bytes":0}"#)),
        ("body-logger", r(r#"{"max_bytes":2000000}"#)),
        ("body-logger", r(r#"{"sample_rate":1.5}"#)),
        ("body-logger", r(r#"{"log_level":"verbose"}"#)),
        ("body-logger", r(r#"{"filter_state_name":"a b"}"#)),
        ("body-logger", r(r#"{"content_types":["json"]}"#)),
        ("body-logger", r(r#"{"methods":["G3T"]}"#)),
        ("body-logger", r(r#"{"paths":[{"prefix":"/a","safe_regex":{"regex":"/b"}}]}"#)),
        ("body-logger", r(r#"{"paths":[{"prefix":"/a","route_name":"a"}]}"#)),
        ("body-logger", r(r#"{"paths":[{"route_name":""}]}"#)),
        ("security-headers", r(r#"{"path_overrides":[{"match":{"route_name":"a\u0007b"}}]}"#)),
        ("jwt-auth", r(r#"{"rules":[{"match":{"route_name":7}}]}"#)),
        (
            "rate-limit",
            format!(
                r#"{{"rules":[{}]}}"#,
                RULE.replace(r#""name":"r","#, r#""name":"r","match":{"path":"/a","route_name":"a"},"#)
            ),
        ),
        ("body-logger", r(r#"{"redact":{"fields":["--"]}}"#)),
        ("body-logger", r(r#"{"redact":{"headers":["x y"]}}"#)),
        ("body-logger", r(r#"{"redact":{"replacement":"a\"b"}}"#)),
        ("body-logger", r(r#"{"redact":{"replacement":""}}"#)),
        ("body-logger", r(r#"{"redact":{"patterns":[{"name":"","regex":"x"}]}}"#)),
        ("body-logger", r(r#"{"redact":{"bearer_tokens":"yes"}}"#)),
        // the chain: its own shape, then each member's configuration by its filter's schema
        ("chain", r("{}")),
        ("chain", r(r#"{"filters":[]}"#)),
        ("chain", r(r#"{"filters":[{"root_id":"jwt-auth"}],"filter":[]}"#)),
        ("chain", r(r#"{"filters":[{"root_id":"ratelimit"}]}"#)),
        ("chain", r(r#"{"filters":[{"root_id":"chain"}]}"#)),
        ("chain", r(r#"{"filters":[{"name":"a"}]}"#)),
        ("chain", r(r#"{"filters":[{"root_id":"jwt-auth","nmae":"a"}]}"#)),
        ("chain", r(r#"{"filters":[{"root_id":"jwt-auth","name":""}]}"#)),
        ("chain", r(r#"{"filters":[{"root_id":"jwt-auth","configuration":5}]}"#)),
        ("chain", r(r#"{"filters":[{"root_id":"jwt-auth","configuration":[]}]}"#)),
        ("chain", r(r#"{"filters":[{"root_id":"security-headers","configuration":{"headerz":{}}}]}"#)),
        (
            "chain",
            format!(
                r#"{{"filters":[{{"root_id":"jwt-auth"}},{{"root_id":"rate-limit","configuration":{{"rules":[{RULE}],"tabel":{{}}}}}}]}}"#
            ),
        ),
        (
            "chain",
            format!(
                r#"{{"filters":[{{"root_id":"rate-limit","configuration":{{"rules":[{}]}}}}]}}"#,
                RULE.replace(r#""max_tokens":10"#, r#""max_tokens":0"#)
            ),
        ),
        // more than 16 members (shared::bundle::CHAIN_MAX_MEMBERS)
        ("chain", chain_of(17)),
        // a member's configuration is its own filter's: rate-limit's under security-headers
        ("chain", format!(r#"{{"filters":[{{"root_id":"security-headers","configuration":{{"rules":[{RULE}]}}}}]}}"#)),
    ]
}

/// Refusals JSON Schema cannot express (documented in schemas/README.md): the filter refuses
/// each, the schema accepts it. Each entry says why.
fn refused_by_the_filter_only() -> Vec<(&'static str, String, &'static str)> {
    let r = |json: &str| json.to_string();
    vec![
        (
            "security-headers",
            r(r#"{"path_overrides":[{"match":{"safe_regex":{"regex":"(["}}}]}"#),
            "a regex that does not compile",
        ),
        (
            "security-headers",
            r(r#"{"headers":{"x-a":"1","X-A":"2"}}"#),
            "one header name in two cases (JSON Schema compares keys exactly)",
        ),
        (
            "security-headers",
            r(r#"{"remove_headers":["x-frame-options"]}"#),
            "a header both set (by default) and removed: cross-field",
        ),
        (
            "security-headers",
            r(r#"{"content_security_policy_report_only":true,"headers":{"content-security-policy-report-only":"x"}}"#),
            "report-only mode and an explicit report-only header: cross-field",
        ),
        (
            "rate-limit",
            format!(r#"{{"rules":[{RULE},{RULE}]}}"#),
            "two rules of one name (uniqueness of a property across array items)",
        ),
        (
            "rate-limit",
            format!(r#"{{"rules":[{}]}}"#, RULE.replace(r#""fill_interval":"1s""#, r#""fill_interval":"0.01s""#)),
            "a duration range (durations are strings)",
        ),
        (
            "rate-limit",
            format!(
                r#"{{"rules":[{}]}}"#,
                RULE.replace(r#""max_tokens":10"#, r#""max_tokens":100000000,"tokens_per_fill":100000000"#)
                    .replace(r#""1s""#, r#""0.05s""#)
            ),
            "a refill rate: a ratio of two fields",
        ),
        (
            "rate-limit",
            format!(
                r#"{{"rules":[{}]}}"#,
                RULE.replace(r#""name":"r","#, r#""name":"r","match":{"safe_regex":{"regex":"("}},"#)
            ),
            "a regex that does not compile",
        ),
        (
            "jwt-auth",
            r(r#"{"providers":{"p":{"local_jwks":{"inline_string":"{}"}}}}"#),
            "a JWKS that is not usable (JSON inside a string)",
        ),
        (
            "jwt-auth",
            r(r#"{"rules":[{"match":{"prefix":"/"},"requires":{"provider_name":"nobody"}}]}"#),
            "a requirement naming a provider that is not configured: cross-field",
        ),
        (
            "jwt-auth",
            format!(r#"{{"providers":{{"p":{{{JWKS},"forward_payload_header":"authorization"}}}}}}"#),
            "a provider writing the header a provider reads tokens from: cross-field",
        ),
        (
            "token-fetch",
            r(
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://t/"},"token_header":"x-t","token_lifetime":"60s"},"pending_request_timeout":"61s"}"#,
            ),
            "a duration range (durations are strings)",
        ),
        (
            "body-logger",
            r(r#"{"max_bytes":100,"capture_budget_bytes":50}"#),
            "capture_budget_bytes at least max_bytes: cross-field",
        ),
        ("body-logger", r(r#"{"redact":{"patterns":[{"name":"p","regex":"("}]}}"#), "a regex that does not compile"),
        (
            "jwt-auth",
            r(r#"{"providers":{"p":{"local_jwks":{"environment_variable":"SCHEMA_TEST_UNSET_VARIABLE"}}}}"#),
            "an environment variable the VM does not have",
        ),
        (
            "token-fetch",
            r(
                r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://t/p"},"client_credentials":{"client_id":"a","client_secret":{"environment_variable":"SCHEMA_TEST_UNSET_VARIABLE"}}}}"#,
            ),
            "an environment variable the VM does not have",
        ),
        (
            "chain",
            r(r#"{"filters":[{"root_id":"jwt-auth"},{"root_id":"jwt-auth"}]}"#),
            "two members of one name (the default name is <the chain's plugin_name>/<root_id>): uniqueness of a property across array items",
        ),
        (
            "chain",
            r(r#"{"filters":[{"root_id":"rate-limit"}]}"#),
            "an absent configuration for a filter that refuses {} (JSON Schema cannot check a default against a schema)",
        ),
        (
            "chain",
            r(r#"{"filters":[{"root_id":"security-headers","configuration":"{\"headerz\":{}}"}]}"#),
            "a member configuration given as a JSON string (JSON inside a string)",
        ),
    ]
}

/// Edge cases the filter accepts, where a schema could easily be stricter than the parser:
/// `null` for an absent option, a disabled header that is also on the remove list, the
/// shortest and longest forms.
fn accepted_by_both() -> Vec<(&'static str, String)> {
    let r = |json: &str| json.to_string();
    vec![
        ("security-headers", r("{}")),
        ("security-headers", r(r#"{"headers":{"Server":null,"X-Frame-Options":null},"remove_headers":null}"#)),
        ("security-headers", r(r#"{"headers":{"Strict-Transport-Security":"includeSubDomains; Max-Age=\"100\""},"path_overrides":[{"match":{"prefix":"/d","path":null},"content_security_policy_report_only":null}]}"#)),
        ("security-headers", r(r#"{"headers":{"x-a":{"value":"a\tb","append_action":null}},"path_overrides":[{"match":{"safe_regex":{"regex":""}}}]}"#)),
        ("rate-limit", format!(r#"{{"rules":[{RULE}],"status":null,"table":{{"max_keys":4,"on_full":null}},"domain":null,"timeout":null,"disable_x_envoy_ratelimited_header":false}}"#)),
        ("rate-limit", format!(r#"{{{GLOBAL},"timeout":"0.001s","rules":[{GLOBAL_RULE},{RULE}]}}"#)),
        ("rate-limit", format!(r#"{{"rules":[{}]}}"#, RULE.replace(r#"{"remote_address":{}}"#, r#"{"remote_address":null,"request_headers":{"header_name":":Path","descriptor_key":"p"}}"#))),
        ("rate-limit", format!(r#"{{"rules":[{}]}}"#, RULE.replace(r#""name":"r","#, r#""name":"r","match":{"prefix":null,"headers":[{"name":"x","exact_match":null,"present_match":false}]},"#))),
        ("jwt-auth", r("{}")),
        ("jwt-auth", r(r#"{"rules":[{"match":{"route_name":"admin","prefix":null}},{"match":{"route_name":"ünïcode route/1"}}]}"#)),
        ("security-headers", r(r#"{"path_overrides":[{"match":{"route_name":"docs"}}]}"#)),
        ("body-logger", r(r#"{"paths":[{"route_name":"api"},{"prefix":"/b"}]}"#)),
        ("rate-limit", format!(r#"{{"rules":[{}]}}"#, RULE.replace(r#""name":"r","#, r#""name":"r","match":{"route_name":"admin","methods":["GET"]},"#))),
        ("jwt-auth", r(r#"{"providers":{"p":{"local_jwks":{"inline_string":""},"remote_jwks":null,"from_cookies":["s!d"]}},"rules":[{"match":{"prefix":"/"},"requires":{}}]}"#)),
        ("jwt-auth", r(r#"{"providers":{"p":{"remote_jwks":{"http_uri":{"uri":"https://idp:8443/a/b@c?x=1","cluster":"c","timeout":"1.5s"}}}}}"#)),
        ("token-fetch", r(r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"https://t:1?x"},"token_json_field":"t","token_lifetime":"60s"},"oauth2":null,"header_prefix":"","refresh_fraction":1}"#)),
        ("token-fetch", r(r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://t/p","timeout":"60s"},"client_credentials":{"client_id":"a","client_secret":"b"},"scopes":["read:x","a#b"]},"header_name":"X-Token","header_prefix":"Token "}"#)),
        ("token-fetch", r(r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://t/p"},"client_credentials":{"client_id":"a","client_secret":{"inline_string":"b","environment_variable":null}}}}"#)),
        ("body-logger", r("{}")),
        ("chain", r(r#"{"filters":[{"root_id":"security-headers","name":null,"configuration":null}]}"#)),
        ("chain", chain_of(16)),
        ("chain", format!(r#"{{"filters":[{{"root_id":"jwt-auth","configuration":"  "}},{{"root_id":"rate-limit","name":"per-client","configuration":{{"rules":[{RULE}]}}}},{{"root_id":"rate-limit","name":"per-user","configuration":{{"rules":[{RULE}]}}}},{{"root_id":"body-logger","configuration":"{{\"log_headers\":false}}"}}]}}"#)),
        ("body-logger", r(r#"{"sample_rate":0,"filter_state_name":null,"log_level":"warning","content_types":[" Application/*+JSON "],"methods":["get"],"redact":{"fields":["\tpin","naïve"],"replacement":"***"}}"#)),
    ]
}

#[test]
fn refused_configurations_fail_the_schema_where_json_schema_can_say_so() {
    let schemas = Schemas::generate();
    let mut failures = Vec::new();
    for (filter, json) in refused_by_both() {
        let value: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
        if let Some(Ok(())) = filter_verdict(filter, &json) {
            failures.push(format!("{filter} accepts {json}: not a bad configuration"));
        }
        if schemas.config(filter).is_valid(&value) {
            failures.push(format!("{filter} schema accepts {json}, which the filter refuses"));
        }
    }
    for (filter, json, why) in refused_by_the_filter_only() {
        let value: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
        if let Some(Ok(())) = filter_verdict(filter, &json) {
            failures.push(format!("{filter} accepts {json}: not a bad configuration"));
        }
        let errs = errors(&schemas.config(filter), &value);
        if !errs.is_empty() {
            failures.push(format!(
                "{filter} schema now refuses {json} ({why}): move it to refused_by_both, update schemas/README.md"
            ));
        }
    }
    for (filter, json) in accepted_by_both() {
        let value: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
        if let Some(Err(e)) = filter_verdict(filter, &json) {
            failures.push(format!("{filter} refuses {json}: {e}"));
        }
        let errs = errors(&schemas.config(filter), &value);
        if !errs.is_empty() {
            failures.push(format!(
                "{filter} schema refuses {json}, which the filter accepts:\n    {}",
                errs.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
