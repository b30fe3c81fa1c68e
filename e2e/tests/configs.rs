//! Every shipped Envoy config passes `envoy --mode validate` (which also loads each wasm
//! module and runs its configuration validation).

#[test]
fn every_envoy_config_validates() {
    let dir = e2e::repo_root().join("envoy-configs");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.contains(&"security-headers.yaml".to_string()), "{names:?}");
    assert!(names.contains(&"all-in-one.yaml".to_string()), "{names:?}");
    for name in names {
        let out = e2e::envoy::validate(&name).unwrap_or_else(|log| panic!("{name} does not validate:\n{log}"));
        assert!(out.contains("OK"), "{name}: {out}");
    }
}
