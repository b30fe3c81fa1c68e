//! The chain mode of the harness: with `E2E_VIA_CHAIN=1`, every Envoy a test starts runs each
//! run of consecutive wasm HTTP filters of ours as one `chain` plugin of dist/collection.wasm
//! (collection/src/chain.rs): same configurations, same order, one stream context. The filters'
//! own suites then prove the chain behaves as separate filters do, without a copy of them.
//!
//! The rewrite is textual, on the configs' own layout (each filter a `- name:` list item under
//! `http_filters:`, its JSON configuration a `value: |` block): an item it cannot read is left
//! alone, and so ends the run.

/// Modules whose filters the chain can run (dist/<name>.wasm; `collection` by its root_id).
const OURS: &[&str] = &["security-headers", "jwt-auth", "rate-limit", "token-fetch", "body-logger", "collection"];

/// `E2E_VIA_CHAIN` is set (to anything but `0` or empty).
pub fn via_chain() -> bool {
    std::env::var("E2E_VIA_CHAIN").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// For a test that cannot hold through the chain: `true` (skip it) in chain mode, saying why.
pub fn skip_via_chain(why: &str) -> bool {
    if via_chain() {
        eprintln!("skipped with E2E_VIA_CHAIN: {why}");
    }
    via_chain()
}

/// One wasm filter of ours, read from its list item.
struct Member {
    root_id: String,
    name: Option<String>,
    /// The configuration's JSON text as written (checked to be JSON), without its indentation.
    configuration: Option<String>,
    failure_policy: Option<String>,
    /// `environment_variables:` and its lines, without their indentation.
    environment: Vec<String>,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The value after `key:` on a line, unquoted.
fn value_of<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.trim_start().strip_prefix(key)?.strip_prefix(':')?;
    let v = rest.split(" #").next()?.trim().trim_matches(['"', '\'']);
    (!v.is_empty()).then_some(v)
}

/// The lines after `lines[at]` indented deeper than it (blank ones included), as its block.
fn block_after<'a>(lines: &[&'a str], at: usize) -> Vec<&'a str> {
    let key = indent_of(lines[at]);
    lines[at + 1..].iter().take_while(|l| l.trim().is_empty() || indent_of(l) > key).copied().collect()
}

fn read_member(item: &[&str]) -> Option<Member> {
    let text = item.concat();
    if !text.contains("type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm") {
        return None;
    }
    let files = crate::envoy::wasm_files(&text);
    let module = files.first()?.strip_prefix("dist/")?.strip_suffix(".wasm")?;
    if files.len() != 1 || !OURS.contains(&module) || text.contains("config_discovery") {
        return None;
    }
    let root_id = item.iter().find_map(|l| value_of(l, "root_id")).unwrap_or(module).to_string();
    if root_id == "collection" || root_id == "chain" {
        return None;
    }
    // The plugin's name becomes the member's, so a member reads the `plugin_name` it read alone
    // (rate-limit keys its table by it); an unnamed plugin's member reads the chain's default,
    // `chain/<root_id>`.
    let name = item.iter().skip(1).find_map(|l| value_of(l, "name")).map(str::to_string);
    let failure_policy = item.iter().find_map(|l| value_of(l, "failure_policy")).map(str::to_string);
    let mut configuration = None;
    if let Some(at) = item.iter().position(|l| l.trim_start().starts_with("value:")) {
        let text = if item[at].trim_end().ends_with('|') {
            let block = block_after(item, at);
            let indent = block.iter().filter(|l| !l.trim().is_empty()).map(|l| indent_of(l)).min().unwrap_or(0);
            let lines: Vec<&str> = block.iter().map(|l| l.get(indent..).unwrap_or("").trim_end()).collect();
            lines.join("\n").trim().to_string()
        } else {
            let v = item[at].trim_start().strip_prefix("value:")?.trim();
            v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(v).to_string()
        };
        serde_json::from_str::<serde_json::Value>(&text).ok()?;
        configuration = Some(text);
    }
    let mut environment = Vec::new();
    if let Some(at) = item.iter().position(|l| l.trim_start().starts_with("environment_variables:")) {
        let base = indent_of(item[at]);
        environment.push(item[at].trim_start().trim_end().to_string());
        for l in block_after(item, at) {
            environment.push(format!("{}{}", " ".repeat(indent_of(l).saturating_sub(base)), l.trim()));
        }
    }
    Some(Member { root_id, name, configuration, failure_policy, environment })
}

/// The one policy of a chain: the strictest of its members' (a chain holds filters that must
/// never be skipped: it never fails open unless every member would).
fn chain_policy(members: &[Member]) -> Option<&'static str> {
    let has = |p: &str| members.iter().any(|m| m.failure_policy.as_deref() == Some(p));
    if has("FAIL_CLOSED") {
        Some("FAIL_CLOSED")
    } else if has("FAIL_RELOAD") || members.iter().any(|m| m.failure_policy.is_none()) {
        // No policy is Envoy's default, FAIL_CLOSED before 1.37 and FAIL_RELOAD after; say it.
        Some("FAIL_RELOAD")
    } else {
        Some("FAIL_OPEN")
    }
}

/// The chain plugin's list item, at `indent`.
fn chain_item(indent: &str, members: &[Member]) -> String {
    // Written by hand to keep each configuration as its author wrote it.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let mut json = String::from("{\n  \"filters\": [\n");
    for (k, m) in members.iter().enumerate() {
        json.push_str(&format!("    {{\n      \"root_id\": {}", quote(&m.root_id)));
        if let Some(n) = &m.name {
            json.push_str(&format!(",\n      \"name\": {}", quote(n)));
        }
        if let Some(c) = &m.configuration {
            json.push_str(&format!(",\n      \"configuration\": {}", c.replace('\n', "\n      ")));
        }
        json.push_str(if k + 1 < members.len() { "\n    },\n" } else { "\n    }\n" });
    }
    json.push_str("  ]\n}");
    let mut out = String::new();
    let mut line = |depth: usize, text: &str| {
        out.push_str(indent);
        out.push_str(&" ".repeat(depth));
        out.push_str(text);
        out.push('\n');
    };
    line(0, "- name: chain");
    line(2, "typed_config:");
    line(4, "\"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm");
    line(4, "config:");
    line(6, "name: chain");
    line(6, "root_id: chain");
    if let Some(p) = chain_policy(members) {
        line(6, &format!("failure_policy: {p}"));
    }
    line(6, "configuration:");
    line(8, "\"@type\": type.googleapis.com/google.protobuf.StringValue");
    line(8, "value: |");
    for l in json.lines() {
        line(10, l);
    }
    line(6, "vm_config:");
    line(8, "vm_id: chain");
    line(8, "runtime: envoy.wasm.runtime.v8");
    line(8, "code:");
    line(10, "local: { filename: dist/collection.wasm }");
    if let Some(m) = members.iter().find(|m| !m.environment.is_empty()) {
        for l in &m.environment {
            line(8, l);
        }
    }
    out
}

/// `config` with each run of consecutive wasm HTTP filters of ours in an `http_filters:` list
/// turned into one `chain` plugin of dist/collection.wasm, in the same order.
pub fn into_chain(config: &str) -> String {
    let lines: Vec<&str> = config.split_inclusive('\n').collect();
    let mut out = String::with_capacity(config.len());
    let mut i = 0;
    while i < lines.len() {
        out.push_str(lines[i]);
        if lines[i].trim_end().trim_start() != "http_filters:" {
            i += 1;
            continue;
        }
        i += 1;
        // The list's items: `- ` lines at the first item's indentation.
        let skip = |l: &str| l.trim().is_empty() || l.trim_start().starts_with('#');
        let Some(first) = lines[i..].iter().position(|l| !skip(l)) else { continue };
        let item_indent = indent_of(lines[i + first]);
        if !lines[i + first].trim_start().starts_with("- ") {
            continue;
        }
        let mut run: Vec<Member> = Vec::new();
        // Comments before an item go with it (a member's are dropped).
        while let Some(start) = (i..lines.len()).find(|&k| !skip(lines[k])) {
            let l = lines[start];
            if indent_of(l) != item_indent || !l.trim_start().starts_with("- ") {
                break;
            }
            let end = (start + 1..lines.len())
                .find(|&k| !skip(lines[k]) && indent_of(lines[k]) <= item_indent)
                .unwrap_or(lines.len());
            let item = &lines[start..end];
            match read_member(item) {
                Some(m) => run.push(m),
                None => {
                    if !run.is_empty() {
                        out.push_str(&chain_item(&" ".repeat(item_indent), &run));
                        run.clear();
                    }
                    out.push_str(&lines[i..end].concat());
                }
            }
            i = end;
        }
        if !run.is_empty() {
            out.push_str(&chain_item(&" ".repeat(item_indent), &run));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::into_chain;

    const CONFIG: &str = "\
      http_filters:
      - name: a
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
          config:
            name: first
            failure_policy: FAIL_OPEN
            configuration:
              \"@type\": type.googleapis.com/google.protobuf.StringValue
              value: |
                { \"x\": 1 }
            vm_config:
              code:
                local: { filename: dist/jwt-auth.wasm }
              environment_variables: { host_env_keys: [K] }
      - name: b
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
          config:
            root_id: rate-limit
            failure_policy: FAIL_RELOAD
            vm_config:
              code:
                local: { filename: dist/collection.wasm }
      - name: envoy.filters.http.router
        typed_config: {}
  clusters: []
";

    #[test]
    fn a_run_of_our_filters_becomes_one_chain_plugin() {
        let out = into_chain(CONFIG);
        assert_eq!(out.matches("- name: ").count(), 2, "{out}");
        assert!(out.contains("      - name: chain\n"), "{out}");
        assert!(out.contains("root_id: chain\n") && out.contains("failure_policy: FAIL_RELOAD\n"), "{out}");
        assert!(out.contains("\"root_id\": \"jwt-auth\""), "{out}");
        assert!(out.contains("\"name\": \"first\""), "{out}");
        assert!(out.contains("\"root_id\": \"rate-limit\""), "{out}");
        assert!(out.contains("environment_variables: { host_env_keys: [K] }"), "{out}");
        assert!(out.ends_with("      - name: envoy.filters.http.router\n        typed_config: {}\n  clusters: []\n"));
        // Control: a config without filters of ours is unchanged.
        let other = CONFIG.replace("dist/jwt-auth.wasm", "dist/test/probe.wasm").replace("dist/collection.wasm", "x");
        assert_eq!(into_chain(&other), other);
    }

    /// Every shipped config with filters of ours runs them as a chain in chain mode (else the
    /// suites would prove nothing about it).
    #[test]
    fn every_shipped_config_of_ours_is_rewritten() {
        for name in ["jwt-auth", "security-headers", "rate-limit", "rate-limit-global", "token-fetch", "body-logger"] {
            let path = crate::repo_root().join(format!("envoy-configs/{name}.yaml"));
            let out = into_chain(&std::fs::read_to_string(path).unwrap());
            assert_eq!(out.matches("root_id: chain\n").count(), 1, "{name}");
            assert!(!out.contains(&format!("dist/{name}.wasm")), "{name}: {out}");
        }
    }
}
