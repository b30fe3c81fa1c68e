#!/usr/bin/env python3
"""Write an OCI image layout holding one Wasm filter, in the form Istio's WasmPlugin pulls.

    scripts/oci-layout.py --wasm dist/security-headers.wasm --tag 0.1.0 --out dist/oci/security-headers

The image is the Wasm image spec's "compat" variant (github.com/solo-io/wasm spec-compat):
exactly one `application/vnd.oci.image.layer.v1.tar+gzip` layer whose tar holds `plugin.wasm`,
and the manifest annotation `module.wasm.image/variant=compat`. It is the same image
`deploy/oci/Dockerfile` (FROM scratch + COPY) builds, so any registry and tool handles it,
unlike the custom-media-type "oci" variant.

Reproducible: tar entries have fixed owner, mode and mtime 0; gzip has mtime 0 and no name;
JSON is written with sorted keys. The same .wasm always gives the same manifest digest.
Only the Python standard library is used; no container engine.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile


def blob(layout: str, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return "sha256:" + digest


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(wasm: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(wasm)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return out.getvalue()


def gzip_deterministic(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return out.getvalue()


def build(wasm_path: str, tag: str, out: str, source: str) -> str:
    with open(wasm_path, "rb") as f:
        wasm = f.read()
    if wasm[:4] != b"\0asm":
        sys.exit(f"{wasm_path} is not a wasm module")
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "blobs", "sha256"))

    tar = layer_tar(wasm)
    layer = gzip_deterministic(tar)
    layer_digest = blob(out, layer)
    config = canonical_json({
        # What `docker build` of deploy/oci/Dockerfile records; Istio ignores the config.
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
    })
    config_digest = blob(out, config)
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": len(layer)}],
        "annotations": {
            "module.wasm.image/variant": "compat",
            "org.opencontainers.image.source": source,
            "org.opencontainers.image.version": tag,
        },
    })
    manifest_digest = blob(out, manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }
    with open(os.path.join(out, "index.json"), "wb") as f:
        f.write(canonical_json(index))
    with open(os.path.join(out, "oci-layout"), "wb") as f:
        f.write(canonical_json({"imageLayoutVersion": "1.0.0"}))
    return manifest_digest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wasm", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--source", default="https://github.com/OWNER/envoy-wasm-filters")
    a = p.parse_args()
    print(f"{a.out}:{a.tag} {build(a.wasm, a.tag, a.out, a.source)}")


if __name__ == "__main__":
    main()
