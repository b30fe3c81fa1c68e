//! `make release` (scripts/release.sh): versioned modules with checksums, OCI layouts whose
//! digests pin the Istio manifests, an SBOM per module, a changelog entry; reproducible. Needs
//! `make build`.

use e2e::{dist_dir, repo_root};
use std::path::Path;
use std::process::Command;

fn release(out: &Path, changelog: &Path) {
    let o = Command::new(repo_root().join("scripts/release.sh"))
        .arg("--out")
        .arg(out)
        .arg("--changelog")
        .arg(changelog)
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "release.sh: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn release_artifacts_are_versioned_pinned_and_reproducible() {
    let version = env!("CARGO_PKG_VERSION");
    let tmp = std::env::temp_dir().join(format!("e2e-release-{}", std::process::id()));
    let (a, b, changelog) = (tmp.join("a"), tmp.join("b"), tmp.join("CHANGELOG.md"));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(
        &changelog,
        "# Changelog\n\nIntroduction.\n\n## Unreleased\n\nUpgrade notes:\n\n- a note\n\n## [0.0.1] - 2020-01-01\n\n- older\n",
    )
    .unwrap();
    release(&a, &changelog);
    release(&b, &changelog);

    // Reproducible, and SHA256SUMS verifies.
    let sums = std::fs::read_to_string(a.join("SHA256SUMS")).unwrap();
    assert_eq!(sums, std::fs::read_to_string(b.join("SHA256SUMS")).unwrap());
    let check = Command::new("sha256sum").args(["--check", "--strict", "SHA256SUMS"]).current_dir(&a).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));

    for entry in std::fs::read_dir(dist_dir()).unwrap().filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "wasm") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let versioned = a.join(format!("{name}-{version}.wasm"));
        assert!(std::fs::read(&versioned).unwrap() == std::fs::read(&path).unwrap(), "{name}: versioned copy differs");

        // An SBOM of the crates compiled into this module, without this checkout's paths.
        let sbom_text = std::fs::read_to_string(a.join("sbom").join(format!("{name}.cdx.json")))
            .unwrap_or_else(|e| panic!("{name}: no SBOM: {e}"));
        assert!(!sbom_text.contains(&repo_root().display().to_string()), "{name}: SBOM names this checkout");
        let sbom: serde_json::Value = serde_json::from_str(&sbom_text).unwrap();
        assert_eq!(sbom["bomFormat"], "CycloneDX", "{name}");
        assert_eq!(sbom["metadata"]["component"]["name"], name.as_str(), "{name}");
        let components: Vec<String> = sbom["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| format!("{}@{}", c["name"].as_str().unwrap_or(""), c["version"].as_str().unwrap_or("")))
            .collect();
        for needed in ["shared@", "serde_json@"] {
            assert!(components.iter().any(|c| c.starts_with(needed)), "{name}: SBOM lacks {needed}: {components:?}");
        }
        // The modules have their own entry points (shared::exports): the SDK is not in them.
        assert!(
            !components.iter().any(|c| c.starts_with("proxy-wasm@")),
            "{name}: SBOM lists proxy-wasm, which no module links: {components:?}"
        );
        // Only what is compiled into the module: not the native-only schema generator (the
        // `schema` feature other workspace members turn on).
        assert!(
            !components.iter().any(|c| c.starts_with("schemars@")),
            "{name}: SBOM lists schemars, which is not in the module: {components:?}"
        );
        // The configuration's JSON Schema ships with the module (the bundle's plugins take
        // their filter's configuration, whose schema ships, or the chain's).
        let schema = if name == "collection" { e2e::CHAIN } else { name.as_str() };
        for file in [format!("{schema}.schema.json"), format!("{schema}.wasmplugin.schema.json")] {
            let text = std::fs::read_to_string(a.join("schemas").join(&file))
                .unwrap_or_else(|e| panic!("{name}: no {file} in the release: {e}"));
            assert!(text.contains("https://json-schema.org/draft/2020-12/schema"), "{name}: {file}");
        }
        assert!(
            sbom["components"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["licenses"].as_array().is_some_and(|l| !l.is_empty())),
            "{name}: a component without a license in the SBOM"
        );
    }

    // Every deploy/istio manifest, pinned: the version and the very image built here, the one its
    // url names (chain.yaml: the collection image, e2e::module_of).
    let mut pinned = 0;
    for entry in std::fs::read_dir(repo_root().join("deploy/istio")).unwrap().filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let module = e2e::module_of(&stem);
        let layout = format!("oci:{}:{version}", a.join("oci").join(module).display());
        let inspect = Command::new("skopeo").args(["inspect", "--format", "{{.Digest}}", &layout]).output().unwrap();
        assert!(inspect.status.success(), "skopeo: {}", String::from_utf8_lossy(&inspect.stderr));
        let digest = String::from_utf8_lossy(&inspect.stdout).trim().trim_start_matches("sha256:").to_string();
        let manifest_path = a.join("istio").join(format!("{stem}.yaml"));
        let manifest = std::fs::read_to_string(&manifest_path)
            .unwrap_or_else(|e| panic!("{}: {e}: deploy/istio/{stem}.yaml not pinned", manifest_path.display()));
        assert!(
            manifest.contains(&format!("\n  sha256: {digest}\n")),
            "{stem}: spec.sha256 is not {module}'s image digest"
        );
        assert!(manifest.contains(&format!("/{module}:{version}\n")), "{stem}: url not pinned to {module}:{version}");
        let again = std::fs::read_to_string(b.join("istio").join(format!("{stem}.yaml"))).unwrap_or_default();
        assert_eq!(manifest, again, "{stem}: manifests differ");
        pinned += 1;
    }
    assert_eq!(std::fs::read_dir(a.join("istio")).unwrap().count(), pinned, "release istio/ vs deploy/istio/");
    assert!(pinned >= 6, "{pinned} manifests");

    // One entry for the version, added once: below the title and its introduction, above the
    // older entry, and opening with the Unreleased section's notes (that section is gone).
    let log = std::fs::read_to_string(&changelog).unwrap();
    assert_eq!(log.matches(&format!("## [{version}]")).count(), 1, "{log}");
    let at = |what: &str| log.find(what).unwrap_or_else(|| panic!("no {what:?} in:\n{log}"));
    let entry = at(&format!("## [{version}]"));
    assert!(at("Introduction.") < entry, "{log}");
    assert!(entry < at("- a note") && at("- a note") < at("Modules (") && at("Modules (") < at("## [0.0.1]"), "{log}");
    assert!(!log.contains("## Unreleased"), "{log}");
    assert!(log.contains(&format!("security-headers-{version}.wasm")), "{log}");
    let _ = std::fs::remove_dir_all(&tmp);
}
