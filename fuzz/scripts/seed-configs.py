#!/usr/bin/env python3
"""Regenerate the config targets' seed corpora and dictionaries from the repository's own
examples: the ```json blocks of each filter's README, the configurations in envoy-configs/
and deploy/, and the JSON strings of the filter's unit tests. Small and curated on purpose:
one file per distinct example, invalid JSON dropped (the fuzzer finds those by itself).

Run from the repository root: python3 fuzz/scripts/seed-configs.py
"""
import hashlib
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
FILTERS = {
    "rate-limit": "config_rate_limit",
    "token-fetch": "config_token_fetch",
    "security-headers": "config_security_headers",
    "body-logger": "config_body_logger",
    "jwt-auth": "config_jwt_auth",
}
MAX_SEEDS = 40


def readme_blocks(filter_dir):
    text = (filter_dir / "README.md").read_text()
    return re.findall(r"```json\n(.*?)```", text, re.S)


def yaml_blocks(name):
    """`value: |` blocks under a `configuration:` in envoy-configs/<name>.yaml and deploy/."""
    out = []
    paths = list((ROOT / "envoy-configs").glob("*.yaml")) + list((ROOT / "deploy").rglob("*.yaml"))
    for path in paths:
        if name not in path.name and "all-in-one" not in path.name:
            continue
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() in ("value: |", "pluginConfig:"):
                indent = len(line) - len(line.lstrip())
                block = []
                for nxt in lines[i + 1:]:
                    if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                        break
                    block.append(nxt)
                out.append("\n".join(block))
    return out


def test_strings(filter_dir):
    out = []
    for path in (filter_dir / "src").rglob("*.rs"):
        out += re.findall(r'r#"(\{.*?\})"#', path.read_text(), re.S)
    return out


def keys(value, acc):
    if isinstance(value, dict):
        for k, v in value.items():
            acc.add(k)
            keys(v, acc)
    elif isinstance(value, list):
        for v in value:
            keys(v, acc)


for filt, target in FILTERS.items():
    filter_dir = ROOT / "filters" / filt
    seen, docs = set(), []
    for text in readme_blocks(filter_dir) + yaml_blocks(filt) + test_strings(filter_dir):
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if not isinstance(value, dict):
            continue
        canon = json.dumps(value, sort_keys=True)
        if canon in seen:
            continue
        seen.add(canon)
        docs.append(value)
    # The filter's own examples first (README, configs), then tests, up to MAX_SEEDS.
    docs = docs[:MAX_SEEDS]
    corpus = ROOT / "fuzz" / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    for old in corpus.iterdir():
        old.unlink()
    names = set()
    for value in docs:
        data = json.dumps(value, separators=(",", ":")).encode()
        (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)
        keys(value, names)
    dict_path = ROOT / "fuzz" / "dict" / f"{target}.dict"
    dict_path.parent.mkdir(parents=True, exist_ok=True)
    tokens = sorted({f'"{k}"' for k in names} | {"{", "}", "[", "]", ":", ",", "true", "false", "null", '"1s"', '"0s"', "0", "-1", "4294967296"})
    dict_path.write_text("".join(f"{json.dumps(t)}\n" for t in tokens))
    print(f"{target}: {len(docs)} seeds, {len(tokens)} dictionary entries")
