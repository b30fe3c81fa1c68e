//! Every shipped Envoy config passes `envoy --mode validate` (which also loads each wasm
//! module and runs its configuration validation).

/// `envoy-configs/*.yaml` and `envoy-configs/bench/*.yaml`, as names relative to envoy-configs/.
fn config_names() -> Vec<String> {
    let root = e2e::repo_root().join("envoy-configs");
    let mut names = Vec::new();
    for (dir, prefix) in [(root.clone(), ""), (root.join("bench"), "bench/")] {
        for entry in std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") {
                names.push(format!("{prefix}{name}"));
            }
        }
    }
    names.sort();
    names
}

#[test]
fn every_envoy_config_validates() {
    let names = config_names();
    assert!(names.contains(&"bench/router-only.yaml".to_string()), "{names:?}");
    assert!(names.contains(&"security-headers.yaml".to_string()), "{names:?}");
    assert!(names.contains(&"all-in-one.yaml".to_string()), "{names:?}");
    for name in names {
        let out = e2e::envoy::validate(&name).unwrap_or_else(|log| panic!("{name} does not validate:\n{log}"));
        assert!(out.contains("OK"), "{name}: {out}");
    }
}

/// Every HTTP connection manager in every shipped config normalizes the path before filters
/// see it: the filters' path rules match what the router routes (jwt-auth's J7; the bypasses
/// themselves are tested in jwt_auth.rs `path_spellings_*` and body_logger.rs).
#[test]
fn every_connection_manager_normalizes_paths() {
    let mut checked = 0;
    // The new-filter template too: a scaffolded filter's config lands in envoy-configs/.
    let template = e2e::repo_root().join("templates/filter/envoy.yaml.tmpl");
    let sources = config_names()
        .into_iter()
        .map(|name| (name.clone(), e2e::repo_root().join("envoy-configs").join(name)))
        .chain([("templates/filter/envoy.yaml.tmpl".to_string(), template)]);
    for (name, path) in sources {
        let text = std::fs::read_to_string(path).unwrap();
        let config: serde_json::Value = serde_norway::from_str(&text).unwrap();
        let listeners = config["static_resources"]["listeners"].as_array().cloned().unwrap_or_default();
        for listener in listeners {
            for chain in listener["filter_chains"].as_array().into_iter().flatten() {
                for filter in chain["filters"].as_array().into_iter().flatten() {
                    if filter["name"] != "envoy.filters.network.http_connection_manager" {
                        continue;
                    }
                    let hcm = &filter["typed_config"];
                    assert_eq!(hcm["normalize_path"], true, "{name}: normalize_path");
                    assert_eq!(hcm["merge_slashes"], true, "{name}: merge_slashes");
                    assert_eq!(
                        hcm["path_with_escaped_slashes_action"], "UNESCAPE_AND_REDIRECT",
                        "{name}: path_with_escaped_slashes_action"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} connection managers found");
}

/// Every Wasm filter of the shipped configs (and the new-filter template) states its
/// `failure_policy`, for ours the one `e2e::FAILURE_POLICIES` gives it (why: docs/architecture.md, "When
/// a VM traps anyway"), never the deprecated `fail_open`; and each filter's README says so.
#[test]
fn every_wasm_filter_states_its_failure_policy() {
    let policy_of = |filter: &str| e2e::FAILURE_POLICIES.iter().find(|(f, _, _)| *f == filter).map(|(_, p, _)| *p);
    let template = e2e::repo_root().join("templates/filter/envoy.yaml.tmpl");
    let sources = config_names()
        .into_iter()
        .filter(|name| !name.starts_with("bench/"))
        .map(|name| (name.clone(), e2e::repo_root().join("envoy-configs").join(name)))
        .chain([("templates/filter/envoy.yaml.tmpl".to_string(), template)]);
    let mut checked = 0;
    for (name, path) in sources {
        let config: serde_json::Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut wasm_filters = Vec::new();
        collect_wasm_configs(&config, &mut wasm_filters);
        for plugin in wasm_filters {
            let filter = plugin["root_id"].as_str().unwrap_or_default().to_string();
            assert!(plugin.get("fail_open").is_none(), "{name}: {filter} uses the deprecated fail_open");
            let stated =
                plugin["failure_policy"].as_str().unwrap_or_else(|| panic!("{name}: {filter} has no failure_policy"));
            // A filter outside the table (one `make new-filter` made, in a fork) only has to state one.
            // In the bundle every plugin is FAIL_RELOAD: they share one VM, and a FAIL_OPEN plugin
            // would keep the trapped one for good (README, "One VM for all filters").
            let bundled = plugin["vm_config"]["code"]["local"]["filename"]
                .as_str()
                .is_some_and(|f| f.ends_with("/collection.wasm"));
            let wanted =
                if name.starts_with("templates/") || bundled { Some("FAIL_RELOAD") } else { policy_of(&filter) };
            if let Some(wanted) = wanted {
                assert_eq!(stated, wanted, "{name}: {filter}'s failure_policy");
            }
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} Wasm filters found");
    for (filter, envoy, istio) in e2e::FAILURE_POLICIES {
        let readme = std::fs::read_to_string(e2e::repo_root().join(format!("filters/{filter}/README.md"))).unwrap();
        let section = readme
            .split("\n### Failure policy\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{filter}: no Failure policy section"));
        let section = section.split("\n## ").next().unwrap_or_default();
        for stated in [format!("`failure_policy: {envoy}`"), format!("`failStrategy: {istio}`")] {
            assert!(section.contains(&stated), "{filter}'s README, Failure policy: does not say {stated}");
        }
    }
}

/// Every `envoy.extensions.wasm.v3.PluginConfig` under an HTTP Wasm filter in `value`.
fn collect_wasm_configs(value: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    match value {
        serde_json::Value::Object(map) => {
            if map.get("@type").and_then(|t| t.as_str())
                == Some("type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm")
            {
                out.push(map.get("config").cloned().unwrap_or_default());
            }
            map.values().for_each(|v| collect_wasm_configs(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_wasm_configs(v, out)),
        _ => {}
    }
}
