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
