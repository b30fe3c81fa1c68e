//! `make oci`'s image layouts, read back by a real OCI tool (skopeo, Debian's package): one
//! compat-variant image per filter that Istio's WasmPlugin can pull, reproducible byte for byte.

use e2e::{dist_dir, repo_root};
use std::path::{Path, PathBuf};
use std::process::Command;

fn layout(wasm: &Path, out: &Path) -> String {
    let o = Command::new("python3")
        .arg(repo_root().join("scripts/oci-layout.py"))
        .arg("--wasm")
        .arg(wasm)
        .args(["--tag", "test"])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1).unwrap().to_string()
}

fn skopeo(args: &[&str]) -> String {
    let o = Command::new("skopeo")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("skopeo: {e}: install Debian's `skopeo` (`make deps`)"));
    assert!(o.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn modules() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dist_dir())
        .expect("dist/: run `make build`")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no modules in dist/");
    v
}

#[test]
fn every_module_becomes_a_reproducible_compat_image_that_skopeo_reads() {
    let tmp = std::env::temp_dir().join(format!("e2e-oci-{}", std::process::id()));
    for wasm in modules() {
        let name = wasm.file_stem().unwrap().to_string_lossy().into_owned();
        let (a, b) = (tmp.join(format!("{name}-a")), tmp.join(format!("{name}-b")));
        let digest = layout(&wasm, &a);
        assert_eq!(layout(&wasm, &b), digest, "{name}: two builds of one module differ");

        let reference = format!("oci:{}:test", a.display());
        let inspected: serde_json::Value = serde_json::from_str(&skopeo(&["inspect", &reference])).unwrap();
        assert_eq!(inspected["Digest"], digest, "{name}");
        let manifest: serde_json::Value = serde_json::from_str(&skopeo(&["inspect", "--raw", &reference])).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "{name}: compat images have exactly one layer");
        assert_eq!(layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
        assert_eq!(manifest["annotations"]["module.wasm.image/variant"], "compat");

        // The layer holds exactly plugin.wasm, byte-identical to the module.
        let layer_digest = layers[0]["digest"].as_str().unwrap().trim_start_matches("sha256:");
        let blob = a.join("blobs/sha256").join(layer_digest);
        let list = Command::new("tar").arg("-tzf").arg(&blob).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "plugin.wasm", "{name}");
        let extracted = Command::new("tar").arg("-xzOf").arg(&blob).arg("plugin.wasm").output().unwrap();
        assert!(extracted.stdout == std::fs::read(&wasm).unwrap(), "{name}: layer content differs from dist/");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
