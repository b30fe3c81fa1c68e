//! The deployment artifacts, checked without a container engine or a cluster:
//! - every Istio `WasmPlugin` in deploy/istio/ has the API's shape, and its `pluginConfig` is
//!   accepted by the filter's own validator (the one the filter runs in Envoy);
//! - the wasm digest each manifest records is the digest of the module in dist/;
//! - `chain.yaml`, the bundle's `chain` root in one WasmPlugin (module and image `collection`,
//!   `pluginName: chain`), is the separate WasmPlugins of its workloads as one: the same
//!   configurations in the order Istio runs those, with a failStrategy no weaker than theirs;
//! - docker-compose.yml passes `docker-compose config` and mounts the very files the native
//!   harness runs.
//!
//! Needs `make build` (dist/) and the Debian package `docker-compose`.

use e2e::{dist_dir, repo_root, DEFAULT_ENVOY_VERSION};
use serde_json::Value as Json;
use serde_norway::{Mapping, Value as Yaml};
use sha2::{Digest, Sha256};
use shared::config::ConfigError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where each manifest records the SHA-256 of its wasm module. Not `spec.sha256`: for `oci://`
/// URLs Istio compares that with the image's manifest digest (see the manifest's comments).
const WASM_SHA256_ANNOTATION: &str = "envoy-wasm-filters/wasm-sha256";

/// Top-level `spec` fields of `extensions.istio.io/v1alpha1` WasmPlugin (istio/api
/// extensions/v1alpha1/wasm.proto). Only `pluginConfig` keeps unknown fields in the CRD, so a
/// misspelt field here would be dropped or refused by the API server.
const SPEC_FIELDS: &[&str] = &[
    "selector",
    "targetRef",
    "targetRefs",
    "url",
    "sha256",
    "imagePullPolicy",
    "imagePullSecret",
    "verificationKey",
    "pluginConfig",
    "pluginName",
    "phase",
    "priority",
    "failStrategy",
    "vmConfig",
    "match",
    "type",
];
const PHASES: &[&str] = &["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"];
const FAIL_STRATEGIES: &[&str] = &["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"];
const PULL_POLICIES: &[&str] = &["UNSPECIFIED_POLICY", "IfNotPresent", "Always"];
const PLUGIN_TYPES: &[&str] = &["UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"];

/// The filter's own configuration validation, run by Envoy on the built module: the very code
/// that checks the configuration in production, for any filter, with nothing to register.
fn validate_plugin_config(filter: &str, json: &str) -> Result<(), ConfigError> {
    e2e::envoy::validate_plugin_config(filter, json).map_err(|(field, message)| ConfigError::new(field, message))
}

/// `(filter, path)` of every deploy/istio/*.yaml, sorted: the file is named after the root_id it
/// runs (a filter, or the bundle's `chain`), whose module is [`e2e::module_of`].
fn manifests() -> Vec<(String, PathBuf)> {
    let dir = repo_root().join("deploy/istio");
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    assert!(out.iter().any(|(f, _)| f == "security-headers"), "no deploy/istio/security-headers.yaml: {out:?}");
    out
}

fn read_yaml(path: &Path) -> (String, Yaml) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    (text, value)
}

fn get<'a>(v: &'a Yaml, path: &str) -> Option<&'a Yaml> {
    path.split('.').try_fold(v, |v, key| v.get(key))
}

fn get_str<'a>(v: &'a Yaml, path: &str) -> Option<&'a str> {
    get(v, path).and_then(Yaml::as_str)
}

/// What Istio hands the filter: `pluginConfig` (a protobuf Struct) as JSON. Fails, like the
/// Struct would, on keys that are not strings.
fn plugin_config_json(plugin_config: &Yaml) -> Result<String, String> {
    let json: Json = serde_json::to_value(plugin_config).map_err(|e| e.to_string())?;
    if !json.is_object() {
        return Err(format!("pluginConfig must be a mapping, got {json}"));
    }
    serde_json::to_string(&json).map_err(|e| e.to_string())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Kubernetes reads manifests as YAML 1.1, where plain `yes`, `no`, `on`, `off`, `y`, `n` are
/// booleans; YAML 1.2 parsers (this test's) read them as strings. Such values must be quoted.
fn yaml11_booleans(text: &str) -> Vec<String> {
    const WORDS: &[&str] = &["y", "n", "yes", "no", "on", "off"];
    text.lines()
        .map(|l| l.split(" #").next().unwrap_or(l).trim_end())
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter(|l| {
            let value = l.rsplit_once(": ").map(|(_, v)| v).or_else(|| l.trim_start().strip_prefix("- "));
            value.is_some_and(|v| WORDS.contains(&v.trim().to_ascii_lowercase().as_str()))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn every_wasmplugin_has_the_api_shape_and_a_config_the_filter_accepts() {
    for (filter, path) in manifests() {
        let name = path.display().to_string();
        let (text, doc) = read_yaml(&path);
        assert_eq!(get_str(&doc, "apiVersion"), Some("extensions.istio.io/v1alpha1"), "{name}");
        assert_eq!(get_str(&doc, "kind"), Some("WasmPlugin"), "{name}");
        assert_eq!(get_str(&doc, "metadata.name"), Some(filter.as_str()), "{name}: metadata.name");
        assert!(get_str(&doc, "metadata.namespace").is_some_and(|n| !n.is_empty()), "{name}: metadata.namespace");

        let spec = get(&doc, "spec").and_then(Yaml::as_mapping).unwrap_or_else(|| panic!("{name}: no spec"));
        for key in spec.keys() {
            let key = key.as_str().unwrap_or_else(|| panic!("{name}: non-string key in spec: {key:?}"));
            assert!(SPEC_FIELDS.contains(&key), "{name}: spec.{key} is not a WasmPlugin field ({SPEC_FIELDS:?})");
        }
        let spec = Yaml::Mapping(spec.clone());
        let one_of = |field: &str, allowed: &[&str]| {
            if let Some(v) = spec.get(field) {
                let v = v.as_str().unwrap_or_else(|| panic!("{name}: spec.{field} must be a string"));
                assert!(allowed.contains(&v), "{name}: spec.{field}: {v} is not one of {allowed:?}");
            }
        };
        one_of("phase", PHASES);
        one_of("failStrategy", FAIL_STRATEGIES);
        // Each filter's choice, with its reasons in docs/architecture.md ("When a VM traps anyway").
        if let Some((_, _, istio)) = e2e::FAILURE_POLICIES.iter().find(|(f, _, _)| *f == filter) {
            assert_eq!(get_str(&spec, "failStrategy"), Some(*istio), "{name}: spec.failStrategy");
        }
        one_of("imagePullPolicy", PULL_POLICIES);
        one_of("type", PLUGIN_TYPES);
        if let Some(p) = spec.get("priority") {
            assert!(p.as_i64().and_then(|p| i32::try_from(p).ok()).is_some(), "{name}: spec.priority must be an int32");
        }
        let targeting = ["selector", "targetRef", "targetRefs"].iter().filter(|f| spec.get(**f).is_some()).count();
        assert!(targeting <= 1, "{name}: at most one of selector, targetRef, targetRefs");
        // The root_id Envoy passes: the filter's, or the bundle root's the file is named after.
        let plugin_name = get_str(&spec, "pluginName").unwrap_or_else(|| panic!("{name}: spec.pluginName"));
        assert_eq!(plugin_name, filter, "{name}: spec.pluginName");

        // The image: oci://<registry>/<repo>/<module>:<workspace version>, never `latest`.
        let module = e2e::module_of(&filter);
        let url = get_str(&spec, "url").unwrap_or_else(|| panic!("{name}: spec.url"));
        let image = url.strip_prefix("oci://").unwrap_or_else(|| panic!("{name}: url {url} is not oci://"));
        let (repo, tag) = image.rsplit_once(':').unwrap_or_else(|| panic!("{name}: url {url} has no tag"));
        assert!(repo.ends_with(&format!("/{module}")), "{name}: image {repo} should be named after {module}");
        assert_eq!(tag, env!("CARGO_PKG_VERSION"), "{name}: image tag should be the release version");
        if let Some(sha) = spec.get("sha256") {
            let sha = sha.as_str().unwrap_or_default();
            assert!(sha.is_empty() || is_sha256_hex(sha), "{name}: spec.sha256 must be 64 lowercase hex digits");
        }

        let plugin_config = spec.get("pluginConfig").unwrap_or_else(|| panic!("{name}: spec.pluginConfig"));
        let json = plugin_config_json(plugin_config).unwrap_or_else(|e| panic!("{name}: pluginConfig: {e}"));
        if let Err(e) = validate_plugin_config(&filter, &json) {
            panic!("{name}: the filter refuses its pluginConfig: {e}\n{json}");
        }

        let ambiguous = yaml11_booleans(&text);
        assert!(ambiguous.is_empty(), "{name}: quote these values (Kubernetes reads them as booleans): {ambiguous:?}");
    }
}

/// The check above can fail: the same conversion and validator refuse broken copies.
#[test]
fn broken_plugin_configs_are_refused() {
    for (filter, path) in manifests() {
        let (_, doc) = read_yaml(&path);
        let good = get(&doc, "spec.pluginConfig").and_then(Yaml::as_mapping).cloned().unwrap();
        let json = plugin_config_json(&Yaml::Mapping(good.clone())).unwrap();
        let fine = validate_plugin_config(&filter, &json);
        assert!(fine.is_ok(), "{}: fix its pluginConfig first: {fine:?}", path.display());
        let refused = |config: Mapping| {
            let json = plugin_config_json(&Yaml::Mapping(config)).unwrap();
            validate_plugin_config(&filter, &json).expect_err(&json)
        };

        // A misspelt field, for any filter (unknown fields are refused, never ignored).
        let mut typo = good.clone();
        typo.insert("pluginconfig_typo".into(), Yaml::Bool(true));
        assert_eq!(refused(typo).field, "pluginconfig_typo", "{}", path.display());
        // Not a mapping at all.
        assert!(plugin_config_json(&Yaml::Sequence(vec![])).is_err());

        if filter == "body-logger" {
            // A sampling rate above 1, and a redaction pattern that is not a regex.
            let mut rate = good.clone();
            rate.insert("sample_rate".into(), Yaml::Number(2.into()));
            assert_eq!(refused(rate).field, "sample_rate");
            let mut regex = good.clone();
            let mut redact = regex.get("redact").and_then(Yaml::as_mapping).cloned().unwrap_or_default();
            let mut pattern = Mapping::new();
            pattern.insert("name".into(), "broken".into());
            pattern.insert("regex".into(), "(".into());
            redact.insert("patterns".into(), Yaml::Sequence(vec![Yaml::Mapping(pattern)]));
            regex.insert("redact".into(), Yaml::Mapping(redact));
            assert_eq!(refused(regex).field, "redact.patterns[0].regex");
        }
        if filter == e2e::CHAIN {
            // A member's misspelt field, named within the chain; an unknown root_id; a second
            // member of the first one's name.
            let members = || good.get("filters").and_then(Yaml::as_sequence).cloned().unwrap();
            let with_members = |members: Vec<Yaml>| {
                let mut config = good.clone();
                config.insert("filters".into(), Yaml::Sequence(members));
                config
            };
            let mut typo = members();
            let mut first = typo[0].as_mapping().cloned().unwrap();
            let mut inner = first.get("configuration").and_then(Yaml::as_mapping).cloned().unwrap_or_default();
            inner.insert("pluginconfig_typo".into(), Yaml::Bool(true));
            first.insert("configuration".into(), Yaml::Mapping(inner));
            typo[0] = Yaml::Mapping(first.clone());
            assert_eq!(refused(with_members(typo)).field, "filters[0].configuration.pluginconfig_typo");
            let mut unknown = members();
            let mut member = unknown[0].as_mapping().cloned().unwrap();
            member.insert("root_id".into(), "ratelimit".into());
            unknown[0] = Yaml::Mapping(member);
            assert_eq!(refused(with_members(unknown)).field, "filters[0].root_id");
            let mut twice = members();
            twice.push(twice[0].clone());
            assert_eq!(refused(with_members(twice.clone())).field, format!("filters[{}].name", twice.len() - 1));
        }
        if filter == "security-headers" {
            // An unquoted number where a header value must be a string (`x-xss-protection: 0`).
            let mut number = good.clone();
            let mut headers = number.get("headers").and_then(Yaml::as_mapping).cloned().unwrap_or_default();
            headers.insert("x-xss-protection".into(), Yaml::Number(0.into()));
            number.insert("headers".into(), Yaml::Mapping(headers));
            assert_eq!(refused(number).field, "headers.x-xss-protection");
            // A header both set and removed.
            let mut contradiction = good.clone();
            contradiction.insert("remove_headers".into(), Yaml::Sequence(vec!["referrer-policy".into()]));
            assert_eq!(refused(contradiction).field, "remove_headers[0]");
        }
    }
    assert_eq!(
        yaml11_booleans("a:\n  b: yes\n  c: \"on\"\n  d: Off # x\n  - n\n# e: no\n"),
        ["  b: yes", "  d: Off", "  - n"]
    );
}

/// Istio's order of plugins on one workload: by phase, then by priority, highest first.
fn istio_order(spec: &Yaml) -> (usize, i64) {
    let phase = get_str(spec, "phase").unwrap_or("UNSPECIFIED_PHASE");
    // UNSPECIFIED_PHASE is the end of the chain, just before the router.
    let rank = ["AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE"].iter().position(|p| *p == phase).unwrap();
    (rank, -get(spec, "priority").and_then(Yaml::as_i64).unwrap_or(0))
}

/// deploy/istio/chain.yaml is the separate WasmPlugins of the same workloads (same selector) as
/// one: each member's configuration is the pluginConfig of its filter's manifest, in the order
/// Istio runs those manifests, so the two ways to deploy never drift apart. Its failStrategy is
/// no weaker than any member's: FAIL_OPEN only if every member's is.
#[test]
fn the_chain_wasmplugin_is_the_separate_ones_as_one() {
    let manifests: Vec<(String, Yaml)> = manifests().into_iter().map(|(f, p)| (f, read_yaml(&p).1)).collect();
    let (_, chain) = manifests.iter().find(|(f, _)| f == e2e::CHAIN).expect("deploy/istio/chain.yaml");
    let selector = get(chain, "spec.selector").expect("chain.yaml: spec.selector");
    let mut separate: Vec<&(String, Yaml)> =
        manifests.iter().filter(|(f, m)| f != e2e::CHAIN && get(m, "spec.selector") == Some(selector)).collect();
    separate.sort_by_key(|(_, m)| istio_order(get(m, "spec").unwrap()));
    assert!(separate.len() >= 2, "no separate WasmPlugins on chain.yaml's workloads");

    let members = get(chain, "spec.pluginConfig.filters").and_then(Yaml::as_sequence).expect("chain.yaml: filters");
    let got: Vec<(&str, Option<&Yaml>)> = members
        .iter()
        .map(|m| (get_str(m, "root_id").expect("a member without root_id"), m.get("configuration")))
        .collect();
    // Only the members' manifests: a fork's new filter (`make new-filter`) gets a WasmPlugin of
    // its own on these workloads and is not a member until its author adds it (scaffold.rs
    // runs this test in such a fork).
    let expected: Vec<(&str, Option<&Yaml>)> = separate
        .iter()
        .filter(|(f, _)| got.iter().any(|(member, _)| member == f))
        .map(|(f, m)| (f.as_str(), get(m, "spec.pluginConfig")))
        .collect();
    assert!(expected.len() >= 2, "chain.yaml: fewer than two members with a manifest of their own");
    let names = |v: &[(&str, Option<&Yaml>)]| v.iter().map(|(f, _)| f.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&expected), "chain.yaml's members, in Istio's order of the separate manifests");
    for ((filter, config), (_, theirs)) in got.iter().zip(&expected) {
        assert_eq!(config, theirs, "chain.yaml: the {filter} member's configuration differs from {filter}.yaml's");
    }

    let strategy = get_str(chain, "spec.failStrategy").unwrap_or("FAIL_CLOSE");
    let all_open = separate.iter().all(|(_, m)| get_str(m, "spec.failStrategy") == Some("FAIL_OPEN"));
    assert!(strategy != "FAIL_OPEN" || all_open, "chain.yaml fails open while a member's manifest does not");
    // The control: the order is Istio's (AUTHN 1000 before AUTHN 500 before AUTHZ, ... last).
    let spec = |phase: &str, priority: i64| {
        let mut m = Mapping::new();
        m.insert("phase".into(), phase.into());
        m.insert("priority".into(), Yaml::Number(priority.into()));
        Yaml::Mapping(m)
    };
    let mut order = [spec("UNSPECIFIED_PHASE", -1000), spec("AUTHN", 500), spec("AUTHZ", 900), spec("AUTHN", 1000)];
    order.sort_by_key(istio_order);
    assert_eq!(
        order.clone().map(|s| get_str(&s, "phase").unwrap().to_string()),
        ["AUTHN", "AUTHN", "AUTHZ", "UNSPECIFIED_PHASE"]
    );
    assert_eq!(get(&order[0], "priority").and_then(Yaml::as_i64), Some(1000));
}

#[test]
fn every_wasmplugin_records_the_digest_of_the_module_in_dist() {
    let sums_path = dist_dir().join("SHA256SUMS");
    let sums = std::fs::read_to_string(&sums_path)
        .unwrap_or_else(|e| panic!("{}: {e}: run `make build` first", sums_path.display()));
    for (filter, path) in manifests() {
        let name = path.display().to_string();
        let (_, doc) = read_yaml(&path);
        let recorded = get(&doc, "metadata.annotations")
            .and_then(|a| a.get(WASM_SHA256_ANNOTATION))
            .and_then(Yaml::as_str)
            .unwrap_or_else(|| panic!("{name}: no metadata.annotations.{WASM_SHA256_ANNOTATION}"));

        let module = e2e::module_of(&filter);
        let wasm_path = dist_dir().join(format!("{module}.wasm"));
        let wasm = std::fs::read(&wasm_path)
            .unwrap_or_else(|e| panic!("{}: {e}: run `make build` first", wasm_path.display()));
        let actual = sha256_hex(&wasm);
        let listed = sums.lines().find_map(|l| {
            let (sum, file) = l.split_once(char::is_whitespace)?;
            (file.trim_start().trim_start_matches('*') == format!("{module}.wasm")).then_some(sum)
        });
        assert_eq!(listed, Some(actual.as_str()), "dist/SHA256SUMS is stale: run `make build`");
        assert_eq!(
            recorded, actual,
            "{name} records another build of {module}.wasm: run scripts/update-deploy-digests.sh (after `make build`)"
        );

        // For oci:// URLs Istio checks spec.sha256 against the image manifest digest: the wasm's
        // own digest there would fail every pull with "checksum mismatch".
        let spec_sha = get_str(&doc, "spec.sha256").unwrap_or_default();
        let url = get_str(&doc, "spec.url").unwrap_or_default();
        if url.starts_with("oci://") {
            assert_ne!(spec_sha, actual, "{name}: spec.sha256 must be the image's manifest digest, not the wasm's");
        }
    }
}

/// `host:container[:mode]` compose volumes of one service, as (host, container, read_only).
/// `a/${VAR:-b}c` → `a/bc`: compose's interpolation of an unset variable with a default.
fn interpolate_default(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else { break };
        let inner = &rest[start + 2..start + end];
        out.push_str(inner.split_once(":-").map_or("", |(_, default)| default));
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

fn volumes(service: &Yaml) -> Vec<(String, String, bool)> {
    service
        .get("volumes")
        .and_then(Yaml::as_sequence)
        .map(|v| v.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|v| {
            let v = v.as_str().unwrap_or_else(|| panic!("volume {v:?}: use the short `host:container:ro` form"));
            let mut parts = v.split(':');
            let host = parts.next().unwrap_or_default().to_string();
            let container = parts.next().unwrap_or_else(|| panic!("volume {v}: no container path")).to_string();
            let ro = parts.next() == Some("ro");
            (host, container, ro)
        })
        .collect()
}

/// The repository file a container path maps to through `mounts`, if any.
fn host_path(mounts: &[(String, String, bool)], container_path: &str) -> Option<PathBuf> {
    mounts.iter().find_map(|(host, container, _)| {
        let rest = container_path.strip_prefix(container.as_str())?;
        let rest = rest.strip_prefix('/').or(rest.is_empty().then_some(""))?;
        Some(repo_root().join(host.trim_start_matches("./")).join(rest))
    })
}

fn docker_compose(args: &[&str], envoy_version: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new("docker-compose");
    cmd.current_dir(repo_root()).args(args).env_remove("ENVOY_VERSION");
    if let Some(v) = envoy_version {
        cmd.env("ENVOY_VERSION", v);
    }
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`docker-compose` is not on PATH: install the Debian package `docker-compose` \
             (apt-get install docker-compose); no Docker engine is needed for `config`"
        ),
        Err(e) => panic!("docker-compose: {e}"),
    }
}

#[test]
fn docker_compose_config_is_valid_and_mounts_the_harness_configs() {
    // docker-compose itself: syntax, schema, interpolation (no engine needed).
    for (version, image) in [
        (None, format!("envoyproxy/envoy:v{DEFAULT_ENVOY_VERSION}")),
        (Some("1.36.4"), "envoyproxy/envoy:v1.36.4".to_string()),
    ] {
        let out = docker_compose(&["-f", "docker-compose.yml", "config"], version);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "docker-compose config failed:\n{stderr}");
        let resolved: Yaml = serde_norway::from_slice(&out.stdout).unwrap();
        assert_eq!(get_str(&resolved, "services.envoy.image"), Some(image.as_str()), "ENVOY_VERSION={version:?}");
    }

    // The file itself: what the harness guarantees must hold in the container too.
    let (_, compose) = read_yaml(&repo_root().join("docker-compose.yml"));
    let envoy = get(&compose, "services.envoy").expect("services.envoy");
    let upstream = get(&compose, "services.upstream").expect("services.upstream");

    // The upstream image is built from a Dockerfile that exists, and owns the network namespace.
    let dockerfile = get_str(upstream, "build.dockerfile").expect("services.upstream.build.dockerfile");
    assert!(repo_root().join(dockerfile).is_file(), "{dockerfile} does not exist");
    assert_eq!(get_str(envoy, "network_mode"), Some("service:upstream"), "127.0.0.1:18080 must reach the upstream");
    let ports: Vec<&str> =
        get(upstream, "ports").and_then(Yaml::as_sequence).unwrap().iter().filter_map(Yaml::as_str).collect();
    for port in [e2e::LISTENER_PORT, e2e::TLS_LISTENER_PORT, e2e::ADMIN_PORT] {
        assert!(ports.iter().any(|p| p.ends_with(&format!(":{port}"))), "port {port} is not published: {ports:?}");
    }

    // Mounts: repository directories, read-only, and dist/ among them.
    let mounts = volumes(envoy);
    for (host, container, ro) in &mounts {
        assert!(host.starts_with("./"), "{host}: mount repository paths relative to it");
        assert!(
            repo_root().join(host.trim_start_matches("./")).is_dir(),
            "{host} is not a directory of the repository"
        );
        assert!(*ro, "{host}:{container} should be read-only");
    }
    assert!(mounts.iter().any(|(h, _, _)| h == "./dist"), "dist/ is not mounted: {mounts:?}");

    // Every envoy-configs/… argument, from the working directory, is that file of the repository:
    // the container runs the very config the native harness runs (which runs from the repo root).
    let workdir = get_str(envoy, "working_dir").expect("services.envoy.working_dir");
    let command: Vec<&str> = get(envoy, "command")
        .and_then(Yaml::as_sequence)
        .expect("command as a list")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    // `${ENVOY_CONFIG:-all-in-one.yaml}` is checked with its default, as compose interpolates it.
    assert_eq!(interpolate_default("envoy-configs/${X:-a.yaml}"), "envoy-configs/a.yaml");
    let configs: Vec<String> =
        command.iter().filter(|a| a.starts_with("envoy-configs/")).map(|a| interpolate_default(a)).collect();
    assert!(!configs.is_empty(), "no envoy-configs/ file in the command: {command:?}");
    for config in &configs {
        let mapped = host_path(&mounts, &format!("{workdir}/{config}"))
            .unwrap_or_else(|| panic!("{workdir}/{config} is not inside a mount"));
        assert_eq!(mapped, repo_root().join(config), "{config}");
        assert!(mapped.is_file(), "{config} does not exist");

        // And every file that config loads (wasm modules, certificates) is mounted and exists.
        let text = std::fs::read_to_string(&mapped).unwrap();
        let files: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split("filename:").nth(1))
            .map(|f| f.trim().trim_end_matches('}').trim().trim_matches('"'))
            .collect();
        assert!(files.iter().any(|f| f.starts_with("dist/")), "{config} loads no module from dist/");
        for file in files {
            let in_container = host_path(&mounts, &format!("{workdir}/{file}"))
                .unwrap_or_else(|| panic!("{config} loads {file}, which no volume mounts"));
            assert!(in_container.is_file(), "{config} loads {file}, which does not exist (dist/: run `make build`)");
        }
    }
}
