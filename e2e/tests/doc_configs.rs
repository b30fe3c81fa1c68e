//! Every complete configuration the documentation shows (JSON blocks, Envoy `StringValue`s
//! and Istio `pluginConfig`s in every page: `e2e::doc_configs`) is accepted by its filter's own
//! `RootFilter::configure`, natively, with a mock host: the same two phases (parse with field
//! paths, then `compile`) the filter runs in Envoy. A doc example that drifts from the code
//! fails here, naming the page and line.

mod common;

use common::configure_natively;
use e2e::doc_configs::{self, DocConfig, Origin};
use e2e::repo_root;
use shared::config::ConfigError;
use std::path::Path;

/// `Err` names the page, the line, the filter and the refused field.
fn check(config: &DocConfig) -> Result<(), String> {
    let result = match configure_natively(&config.filter, &config.json) {
        Some(result) => result,
        // The chain (in the bundle module only) and a filter not registered natively: in Envoy.
        None if config.filter == e2e::CHAIN || repo_root().join("filters").join(&config.filter).is_dir() => {
            e2e::envoy::validate_plugin_config(&config.filter, &config.json)
                .map_err(|(field, message)| ConfigError::new(field, message))
        }
        None => return Err(format!("{}: no filter named `{}` in filters/", config.location(), config.filter)),
    };
    result.map_err(|e| format!("{}: {} refuses this {:?}: {e}", config.location(), config.filter, config.origin))
}

#[test]
fn every_documented_configuration_is_accepted_by_its_filter() {
    let root = repo_root();
    let found = doc_configs::extract_all(&root);
    let problems: Vec<String> = found.problems.iter().map(ToString::to_string).collect();
    assert!(
        problems.is_empty(),
        "blocks that are neither a configuration nor marked a fragment:\n{}",
        problems.join("\n")
    );

    let failures: Vec<String> = found.configs.iter().filter_map(|c| check(c).err()).collect();
    assert!(failures.is_empty(), "documented configurations the filter refuses:\n{}", failures.join("\n"));

    // Not vacuous: every filter's page shows configurations, and both YAML forms are read.
    for entry in std::fs::read_dir(root.join("filters")).unwrap().filter_map(Result::ok) {
        let filter = entry.file_name().to_string_lossy().into_owned();
        if root.join("filters").join(&filter).join("README.md").is_file() {
            assert!(found.configs.iter().any(|c| c.filter == filter), "no configuration found for {filter}");
        }
    }
    assert!(found.configs.iter().any(|c| c.origin == Origin::EnvoyStringValue), "no Envoy StringValue found");
    // The chain is checked whole, in Envoy (README, "The chain under Istio").
    assert!(found.configs.iter().any(|c| c.filter == e2e::CHAIN && !c.member_of_chain), "no chain configuration found");
    println!("{} configurations checked, {} fragments skipped", found.configs.len(), found.fragments.len());
}

/// The control: the same check refuses a wrong example and names where it is.
#[test]
fn a_wrong_example_fails_naming_page_line_and_field() {
    let page = "# rate-limit\n\nSome text.\n\n```json\n{ \"rules\": [ { \"name\": \"r\", \"actions\": [ { \"remote_address\": {} } ],\n  \
                \"token_bucket\": { \"max_tokens\": 0, \"tokens_per_fill\": 1, \"fill_interval\": \"1s\" } } ] }\n```\n\n\
                ```yaml\n- name: sh\n  typed_config:\n    config:\n      root_id: security-headers\n      configuration:\n        \
                \"@type\": type.googleapis.com/google.protobuf.StringValue\n        value: '{\"headerz\": {}}'\n```\n";
    let found = doc_configs::extract_markdown(Path::new("filters/rate-limit/README.md"), page);
    assert_eq!(found.configs.len(), 2);
    let errors: Vec<String> = found.configs.iter().map(|c| check(c).unwrap_err()).collect();
    assert!(errors[0].starts_with("filters/rate-limit/README.md:6: rate-limit refuses"), "{}", errors[0]);
    assert!(errors[0].contains("rules[0].token_bucket.max_tokens"), "{}", errors[0]);
    assert!(errors[1].starts_with("filters/rate-limit/README.md:16: security-headers refuses"), "{}", errors[1]);
    assert!(errors[1].contains("headerz"), "{}", errors[1]);
}
