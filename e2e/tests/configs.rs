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
