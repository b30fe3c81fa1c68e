//! `make new-filter` produces a filter that builds, lints clean, loads in the real Envoy and
//! passes its generated tests, run in a scratch copy of the repository so this checkout is
//! left untouched.

use e2e::repo_root;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target directory of the cargo running this test.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from)
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        // The suite's own target dir: the crates.io dependencies (Limitador, tonic, the crypto
        // crates, for native and wasm32) are already built there, so only the copy's
        // workspace crates build (its paths differ). Cargo holds no lock on it while tests run.
        // A separate, empty directory made this test rebuild everything: 12 of CI's minutes.
        .env("CARGO_TARGET_DIR", target_dir())
        // The generated manifest's digest is filled by this build, as on a developer's machine.
        .env_remove("CI")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed in {}:\n{}{}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn new_filter_builds_loads_in_envoy_and_passes_its_tests() {
    let root = repo_root();
    let copy = std::env::temp_dir().join(format!("scaffold-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).unwrap();
    // The files a fresh clone has (tracked, plus new ones not ignored).
    let files =
        Command::new("git").args(["ls-files", "-co", "--exclude-standard", "-z"]).current_dir(&root).output().unwrap();
    assert!(files.status.success());
    for file in files.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let rel = Path::new(std::str::from_utf8(file).unwrap());
        if !root.join(rel).is_file() {
            continue; // deleted in the work tree
        }
        std::fs::create_dir_all(copy.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(root.join(rel), copy.join(rel)).unwrap();
    }
    // The installed Envoy(s), not copied.
    std::os::unix::fs::symlink(root.join("tools"), copy.join("tools")).unwrap();

    run(&copy, "make", &["new-filter", "NAME=demo-x"]);
    for generated in [
        "filters/demo-x/src/filter.rs",
        "filters/demo-x/README.md",
        "envoy-configs/demo-x.yaml",
        "deploy/istio/demo-x.yaml",
    ] {
        assert!(copy.join(generated).is_file(), "{generated} not generated");
    }
    run(&copy, "make", &["build"]);
    assert!(copy.join("dist/demo-x.wasm").is_file(), "dist/demo-x.wasm not built");
    // A member of the bundle module too (served under root_id "demo-x").
    let bundle = std::fs::read_to_string(copy.join("collection/src/lib.rs")).unwrap();
    assert!(bundle.contains("member::<demo_x::filter::DemoXRoot>()"), "demo-x is not in the bundle:\n{bundle}");
    assert!(copy.join("dist/collection.wasm").is_file(), "dist/collection.wasm not built");
    // Its configuration's JSON Schema, generated from the template's types by the build.
    for schema in ["schemas/demo-x.schema.json", "dist/schemas/demo-x.wasmplugin.schema.json"] {
        assert!(copy.join(schema).is_file(), "{schema} not generated");
    }
    run(&copy, "cargo", &["fmt", "--all", "--", "--check"]);
    run(&copy, "cargo", &["clippy", "--locked", "-p", "demo-x", "--all-targets", "--", "-D", "warnings"]);
    run(&copy, "cargo", &["clippy", "--locked", "--target", "wasm32-wasip1", "-p", "demo-x", "--", "-D", "warnings"]);
    run(&copy, "cargo", &["test", "--locked", "-p", "demo-x"]);
    // In the real Envoy: its own e2e test, its config validates, its manifest is accepted, its
    // README's example is accepted (not registered natively: checked by the module in Envoy);
    // its README, Envoy config and manifest validate against its schema.
    run(
        &copy,
        "cargo",
        &[
            "test",
            "--locked",
            "-p",
            "e2e",
            "--test",
            "demo_x",
            "--test",
            "configs",
            "--test",
            "deploy",
            "--test",
            "doc_configs",
            "--test",
            "schemas",
        ],
    );
    // A second filter of the same name is refused.
    let again = Command::new("scripts/new-filter.sh").arg("demo-x").current_dir(&copy).output().unwrap();
    assert!(!again.status.success(), "a second demo-x must be refused");

    let _ = std::fs::remove_dir_all(&copy);
}
