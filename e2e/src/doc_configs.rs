//! Every filter configuration the documentation shows, found in one place so tests can hold
//! the docs to the code: `e2e/tests/doc_configs.rs` compiles each with its filter, and the
//! JSON Schema checks validate the same set.
//!
//! What counts as a configuration, in every `*.md` of the repository (outside `target/`,
//! `dist/`, `tools/` and hidden directories):
//! - a fenced ```` ```json ```` block: the whole block is one filter configuration;
//! - in a fenced ```` ```yaml ```` block, the JSON of every Envoy wasm filter's
//!   `configuration` (`@type: type.googleapis.com/google.protobuf.StringValue`, `value: |`),
//!   and every Istio `pluginConfig` (YAML, converted to the JSON Istio hands the filter).
//!
//! Which filter a configuration is for: the `root_id` (else the `dist/<filter>.wasm` file
//! name, else `vm_id`) of the Envoy snippet; a WasmPlugin's `pluginName` (its root_id), else
//! its `metadata.name`; otherwise the page's location (`filters/<filter>/…`); otherwise a
//! `<!-- filter: <name> -->` comment on the last non-blank line before the fence (which also
//! overrides the others).
//!
//! A `chain` configuration (root_id `chain`, collection/src/chain.rs), in either YAML form, is
//! one configuration of filter `chain` followed by each member's configuration as its own
//! filter's ([`DocConfig::member_of_chain`]): the chain checks the whole, each filter (and its
//! schema) its part, a member configuration given as a JSON string included.
//!
//! A block that is not a complete configuration (a part of one, a log line, a sketch with
//! `…`) is marked by `<!-- fragment -->` (or `<!-- fragment: why -->`) on the last
//! non-blank line before its fence, and skipped. A ```` ```json ```` block with no filter
//! to compile it, or a ```` ```yaml ```` block that is not YAML, is a [`Problem`], never
//! silently skipped. Convention documented in CONTRIBUTING.md.

use serde_norway::Value as Yaml;
use std::path::{Path, PathBuf};

/// The comment that marks the next fenced block as not a complete configuration.
pub const FRAGMENT_MARK: &str = "<!-- fragment";
/// The comment that names the filter of the next fenced block: `<!-- filter: rate-limit -->`.
pub const FILTER_MARK: &str = "<!-- filter:";

/// Where in the page a configuration comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A fenced ```` ```json ```` block.
    JsonBlock,
    /// The `configuration` `StringValue` of an Envoy wasm filter in a ```` ```yaml ```` block.
    EnvoyStringValue,
    /// An Istio `pluginConfig` in a ```` ```yaml ```` block, converted to JSON.
    IstioPluginConfig,
}

/// One complete configuration shown by the documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocConfig {
    /// The page, relative to the repository root.
    pub file: PathBuf,
    /// 1-based line in the page: the block's first line for a JSON block, the line naming
    /// the `StringValue` or `pluginConfig` for YAML.
    pub line: usize,
    pub filter: String,
    pub origin: Origin,
    /// The configuration exactly as the filter receives it.
    pub json: String,
    /// A member of the `chain` configuration just before it (same line), not a plugin's own.
    pub member_of_chain: bool,
}

impl DocConfig {
    /// `file:line`, for messages.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }

    /// The configuration as a JSON value (for schema validation).
    pub fn value(&self) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self.json).map_err(|e| format!("{}: not JSON: {e}", self.location()))
    }
}

/// A block the extractor could not read as configurations, and that is not marked as a
/// fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    pub configs: Vec<DocConfig>,
    pub problems: Vec<Problem>,
    /// Blocks skipped as marked fragments: `(file, line of the fence)`.
    pub fragments: Vec<(PathBuf, usize)>,
}

impl Extracted {
    fn append(&mut self, other: Extracted) {
        self.configs.extend(other.configs);
        self.problems.extend(other.problems);
        self.fragments.extend(other.fragments);
    }
}

/// The `.yaml` files directly in `dir` of the repository at `root` (`envoy-configs`,
/// `deploy/istio`), relative to `root`, sorted.
pub fn yaml_files(root: &Path, dir: &str) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(root.join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| PathBuf::from(dir).join(e.file_name()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every documentation page of the repository at `root`, relative to it, sorted.
pub fn doc_pages(root: &Path) -> Vec<PathBuf> {
    const SKIP: &[&str] = &["target", "dist", "tools", "node_modules"];
    let mut pages = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else { continue };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = dir.join(&name);
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                if !name.starts_with('.') && !SKIP.contains(&name.as_str()) {
                    dirs.push(rel);
                }
            } else if kind.is_file() && name.ends_with(".md") {
                pages.push(rel);
            }
        }
    }
    pages.sort();
    pages
}

/// The filter a page documents by its location: `filters/<filter>/…`.
pub fn filter_of_page(page: &Path) -> Option<String> {
    let mut parts = page.components().map(|c| c.as_os_str().to_string_lossy().into_owned());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(dir), Some(filter), Some(_)) if dir == "filters" => Some(filter),
        _ => None,
    }
}

/// Every configuration in every page under `root` (see the module documentation).
pub fn extract_all(root: &Path) -> Extracted {
    let mut out = Extracted::default();
    for page in doc_pages(root) {
        match std::fs::read_to_string(root.join(&page)) {
            Ok(text) => out.append(extract_markdown(&page, &text)),
            Err(e) => out.problems.push(Problem { file: page, line: 0, message: format!("unreadable: {e}") }),
        }
    }
    out
}

/// A fenced code block: its info string's first word, the line of its opening fence, its
/// content (indentation of the fence removed), and the comment mark before it.
struct Block {
    lang: String,
    fence_line: usize,
    content: String,
    mark: Option<String>,
}

fn fenced_blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        let fence_char = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let fence_len = fence_char.map_or(0, |c| trimmed.chars().take_while(|x| *x == c).count());
        let (Some(fence_char), true) = (fence_char, fence_len >= 3) else {
            i += 1;
            continue;
        };
        let lang = trimmed[fence_len..].split_whitespace().next().unwrap_or("").to_ascii_lowercase();
        let mark = lines[..i].iter().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string());
        let mut content = String::new();
        let mut j = i + 1;
        while j < lines.len() {
            let t = lines[j].trim_start();
            if t.chars().take_while(|c| *c == fence_char).count() >= fence_len
                && t.trim_end().chars().all(|c| c == fence_char)
            {
                break;
            }
            // Remove up to the fence's own indentation (blocks inside list items).
            let strip = lines[j].len() - lines[j].trim_start().len();
            content.push_str(&lines[j][strip.min(indent)..]);
            content.push('\n');
            j += 1;
        }
        blocks.push(Block { lang, fence_line: i + 1, content, mark });
        i = j + 1;
    }
    blocks
}

/// The configurations of one page. `page` is the path reported (relative to the repository
/// root; it also decides the default filter).
pub fn extract_markdown(page: &Path, text: &str) -> Extracted {
    let mut out = Extracted::default();
    let page_filter = filter_of_page(page);
    for block in fenced_blocks(text) {
        if !matches!(block.lang.as_str(), "json" | "yaml" | "yml") {
            continue;
        }
        let mark = block.mark.as_deref().unwrap_or("");
        if mark.starts_with(FRAGMENT_MARK) {
            out.fragments.push((page.to_path_buf(), block.fence_line));
            continue;
        }
        let marked_filter = mark
            .strip_prefix(FILTER_MARK)
            .and_then(|rest| rest.strip_suffix("-->"))
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty());
        let first_line = block.fence_line + 1;
        if block.lang == "json" {
            match marked_filter.or_else(|| page_filter.clone()) {
                Some(filter) => out.configs.push(DocConfig {
                    file: page.to_path_buf(),
                    line: first_line,
                    filter,
                    origin: Origin::JsonBlock,
                    json: block.content,
                    member_of_chain: false,
                }),
                None => out.problems.push(Problem {
                    file: page.to_path_buf(),
                    line: block.fence_line,
                    message: format!(
                        "a JSON block outside filters/<filter>/: name its filter with `{FILTER_MARK} <name> -->` \
                         or mark it `{FRAGMENT_MARK} -->` on the line before the fence"
                    ),
                }),
            }
        } else {
            let fallback = marked_filter.clone().or_else(|| page_filter.clone());
            let mut found = extract_yaml(page, &block.content, first_line, fallback.as_deref());
            if let Some(filter) = &marked_filter {
                for c in &mut found.configs {
                    c.filter.clone_from(filter);
                }
            }
            out.append(found);
        }
    }
    out
}

/// The configurations in YAML text (one or more documents): Envoy wasm filters'
/// `StringValue` configurations and Istio `pluginConfig`s. `first_line` is the line of the
/// text's first line in `file`; `default_filter` names the filter when the YAML does not.
/// Also usable on whole files (`envoy-configs/*.yaml`, `deploy/istio/*.yaml`).
pub fn extract_yaml(file: &Path, text: &str, first_line: usize, default_filter: Option<&str>) -> Extracted {
    let mut out = Extracted::default();
    let mut found = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        match <Yaml as serde::Deserialize>::deserialize(document) {
            Ok(doc) => {
                let mut in_doc = Vec::new();
                walk(&doc, default_filter, &mut in_doc);
                // A YAML alias (`*hcm`: the same HTTP filters on a second listener) repeats
                // configurations already found: keep the first, which has its own line.
                for item in in_doc {
                    if !found.contains(&item) {
                        found.push(item);
                    }
                }
            }
            Err(e) => {
                let line = e.location().map_or(0, |l| l.line().saturating_sub(1));
                out.problems.push(Problem {
                    file: file.to_path_buf(),
                    line: first_line + line,
                    message: format!(
                        "not YAML ({e}): fix it, or mark the block `{FRAGMENT_MARK} -->` on the line before the fence"
                    ),
                });
                return out;
            }
        }
    }
    // Lines: the n-th configuration of a kind is at the n-th line naming its kind.
    let lines_with = |needle: &str| -> Vec<usize> {
        text.lines().enumerate().filter(|(_, l)| l.contains(needle)).map(|(i, _)| first_line + i).collect()
    };
    let string_value_lines = lines_with("google.protobuf.StringValue");
    let plugin_config_lines = lines_with("pluginConfig:");
    let (mut n_string_value, mut n_plugin_config) = (0usize, 0usize);
    for item in found {
        // A chain's members are at its line.
        let n = match item.origin {
            Origin::EnvoyStringValue => &mut n_string_value,
            _ => &mut n_plugin_config,
        };
        if !item.member_of_chain {
            *n += 1;
        }
        let lines = if item.origin == Origin::EnvoyStringValue { &string_value_lines } else { &plugin_config_lines };
        let line = (*n).checked_sub(1).and_then(|i| lines.get(i)).copied().unwrap_or(first_line);
        match item.result {
            Ok((filter, json)) => out.configs.push(DocConfig {
                file: file.to_path_buf(),
                line,
                filter,
                origin: item.origin,
                json,
                member_of_chain: item.member_of_chain,
            }),
            Err(message) => out.problems.push(Problem { file: file.to_path_buf(), line, message }),
        }
    }
    out
}

#[derive(PartialEq)]
struct Found {
    origin: Origin,
    /// `(filter, json)`, or why not.
    result: Result<(String, String), String>,
    member_of_chain: bool,
}

impl Found {
    fn plugin(origin: Origin, result: Result<(String, String), String>) -> Found {
        Found { origin, result, member_of_chain: false }
    }

    /// A plugin's configuration: a chain's is itself, then each of its members.
    fn push_plugin(found: &mut Vec<Found>, origin: Origin, result: Result<(String, String), String>) {
        let members = match &result {
            Ok((filter, json)) if filter == crate::CHAIN => Some(chain_members(json)),
            _ => None,
        };
        found.push(Found::plugin(origin, result));
        match members {
            Some(Ok(members)) => {
                found.extend(members.into_iter().map(|m| Found { origin, result: Ok(m), member_of_chain: true }))
            }
            Some(Err(e)) => found.push(Found { origin, result: Err(e), member_of_chain: true }),
            None => {}
        }
    }
}

fn str_at<'a>(v: &'a Yaml, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, key| v.get(*key)).and_then(Yaml::as_str)
}

/// `dist/security-headers.wasm` or `oci://…/security-headers:0.1.0` → `security-headers`.
fn filter_of_module(reference: &str) -> Option<String> {
    let last = reference.rsplit('/').next()?;
    let name = last.strip_suffix(".wasm").unwrap_or_else(|| last.split([':', '@']).next().unwrap_or(last));
    Some(name.to_string()).filter(|n| !n.is_empty())
}

/// Depth-first, in document order. Recursion is bounded by the documentation's own nesting.
fn walk(v: &Yaml, default_filter: Option<&str>, found: &mut Vec<Found>) {
    match v {
        Yaml::Mapping(_) => {
            // An Envoy wasm filter's PluginConfig: { name, root_id, configuration, vm_config }.
            if let Some(configuration) = v.get("configuration") {
                let is_string_value =
                    str_at(configuration, &["@type"]).is_some_and(|t| t.ends_with("google.protobuf.StringValue"));
                if is_string_value {
                    let filter = str_at(v, &["root_id"])
                        .map(str::to_string)
                        .or_else(|| str_at(v, &["vm_config", "code", "local", "filename"]).and_then(filter_of_module))
                        .or_else(|| str_at(v, &["vm_config", "vm_id"]).map(str::to_string))
                        .or_else(|| default_filter.map(str::to_string));
                    let result = match (filter, str_at(configuration, &["value"])) {
                        (Some(filter), Some(json)) => Ok((filter, json.to_string())),
                        (None, _) => Err("an Envoy wasm configuration with no root_id, filename or vm_id".to_string()),
                        (_, None) => Err("a StringValue configuration without a string `value`".to_string()),
                    };
                    Found::push_plugin(found, Origin::EnvoyStringValue, result);
                }
            }
            // An Istio WasmPlugin (whole manifest, or a `spec` snippet with `pluginConfig`).
            if let Some(plugin_config) = v.get("pluginConfig") {
                let filter = default_filter.map(str::to_string);
                Found::push_plugin(found, Origin::IstioPluginConfig, plugin_config_json(plugin_config, filter));
            }
            walk_children(v, default_filter, found);
        }
        Yaml::Sequence(items) => items.iter().for_each(|item| walk(item, default_filter, found)),
        Yaml::Tagged(tagged) => walk(&tagged.value, default_filter, found),
        _ => {}
    }
}

/// `(root_id, configuration)` of each member of a `chain` plugin's configuration.
fn chain_members(json: &str) -> Result<Vec<(String, String)>, String> {
    let chain: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("a chain configuration: {e}"))?;
    let members = chain["filters"].as_array().ok_or("a chain configuration without `filters`")?;
    members
        .iter()
        .map(|m| {
            let root_id = m["root_id"].as_str().ok_or("a chain member without `root_id`")?;
            let config = match &m["configuration"] {
                serde_json::Value::Null => "{}".to_string(),
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            Ok((root_id.to_string(), config))
        })
        .collect()
}

/// The children of a mapping, for [`walk`].
fn walk_children(v: &Yaml, default_filter: Option<&str>, found: &mut Vec<Found>) {
    if let Yaml::Mapping(map) = v {
        let is_wasm_plugin = str_at(v, &["kind"]) == Some("WasmPlugin");
        {
            for (key, child) in map {
                if is_wasm_plugin && key.as_str() == Some("spec") {
                    let filter = str_at(child, &["pluginName"])
                        .or_else(|| str_at(v, &["metadata", "name"]))
                        .map(str::to_string)
                        .or_else(|| str_at(child, &["url"]).and_then(filter_of_module))
                        .or_else(|| default_filter.map(str::to_string));
                    walk(child, filter.as_deref(), found);
                } else if key.as_str() != Some("pluginConfig") {
                    walk(child, default_filter, found);
                }
            }
        }
    }
}

/// What Istio hands the filter: `pluginConfig` (a protobuf `Struct`) as JSON.
fn plugin_config_json(plugin_config: &Yaml, filter: Option<String>) -> Result<(String, String), String> {
    let filter = filter.ok_or("a pluginConfig whose filter is not named (WasmPlugin metadata.name or url)")?;
    let json: serde_json::Value =
        serde_json::to_value(plugin_config).map_err(|e| format!("pluginConfig cannot be JSON: {e}"))?;
    if !json.is_object() {
        return Err(format!("pluginConfig must be a mapping, got {json}"));
    }
    Ok((filter, json.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(text: &str) -> Extracted {
        extract_markdown(Path::new("filters/rate-limit/README.md"), text)
    }

    #[test]
    fn json_blocks_are_configurations_of_the_pages_filter_with_their_line() {
        let out = page("# t\n\ntext\n\n```json\n{ \"rules\": [] }\n```\n\n```sh\n{}\n```\n");
        assert_eq!(out.problems, vec![]);
        assert_eq!(out.configs.len(), 1);
        let c = &out.configs[0];
        assert_eq!((c.filter.as_str(), c.line, c.origin), ("rate-limit", 6, Origin::JsonBlock));
        assert_eq!(c.json, "{ \"rules\": [] }\n");
        assert_eq!(c.location(), "filters/rate-limit/README.md:6");
    }

    #[test]
    fn marked_fragments_are_skipped_and_filter_marks_name_the_filter() {
        let text =
            "<!-- fragment -->\n```json\n{ \"x\": 1 }\n```\n\n<!-- fragment: a log line -->\n\n```json\n{}\n```\n\
                    <!-- filter: body-logger -->\n```json\n{}\n```\n";
        let out = extract_markdown(Path::new("docs/x.md"), text);
        assert_eq!(out.problems, vec![]);
        assert_eq!(out.fragments.len(), 2);
        assert_eq!(out.configs.len(), 1);
        assert_eq!((out.configs[0].filter.as_str(), out.configs[0].line), ("body-logger", 13));
    }

    #[test]
    fn an_unmarked_json_block_with_no_filter_is_a_problem_not_a_skip() {
        let out = extract_markdown(Path::new("README.md"), "text\n\n```json\n{}\n```\n");
        assert_eq!(out.configs, vec![]);
        assert_eq!(out.problems.len(), 1);
        assert_eq!(out.problems[0].line, 3);
    }

    #[test]
    fn envoy_string_values_in_yaml_blocks_name_their_filter() {
        let text = r#"intro

```yaml
http_filters:
# comment
- name: limit
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
      root_id: rate-limit
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: |
          { "rules": [] }
      vm_config: { code: { local: { filename: dist/rate-limit.wasm } } }
- name: other
  typed_config:
    config:
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: '{}'
      vm_config: { code: { local: { filename: dist/body-logger.wasm } } }
- name: envoy.filters.http.router
```
"#;
        let out = extract_markdown(Path::new("docs/deploy.md"), text);
        assert_eq!(out.problems, vec![]);
        let got: Vec<_> = out.configs.iter().map(|c| (c.filter.as_str(), c.line, c.json.trim(), c.origin)).collect();
        assert_eq!(
            got,
            vec![
                ("rate-limit", 12, "{ \"rules\": [] }", Origin::EnvoyStringValue),
                ("body-logger", 20, "{}", Origin::EnvoyStringValue)
            ]
        );
    }

    #[test]
    fn istio_plugin_configs_become_the_json_istio_sends() {
        let text = "```yaml\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: security-headers\n\
                    spec:\n  url: oci://r/security-headers:1\n  pluginConfig:\n    trust_x_forwarded_proto: true\n    headers:\n      \
                    x-frame-options: DENY\n```\n\n```yaml\npluginConfig:\n  rules: []\n```\n";
        let out = page(text);
        assert_eq!(out.problems, vec![]);
        let got: Vec<_> = out.configs.iter().map(|c| (c.filter.as_str(), c.line, c.json.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("security-headers", 8, r#"{"headers":{"x-frame-options":"DENY"},"trust_x_forwarded_proto":true}"#),
                ("rate-limit", 15, r#"{"rules":[]}"#)
            ]
        );
    }

    /// A chain, in either form, is the chain's configuration then each member's as its filter's
    /// (an object member as its JSON, a string member as its text, an absent one as `{}`), all
    /// at the chain's line; the next plugin keeps its own line.
    #[test]
    fn a_chain_is_itself_then_its_members_in_both_forms() {
        let text = r#"```yaml
http_filters:
- name: chain
  typed_config:
    config:
      root_id: chain
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: |
          {"filters": [{"root_id": "jwt-auth", "configuration": {"rules": []}},
                       {"root_id": "rate-limit", "name": "b", "configuration": "{\"rules\": []}"},
                       {"root_id": "body-logger"}]}
- name: after
  typed_config:
    config:
      root_id: security-headers
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: '{}'
```

```yaml
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: gateway
spec:
  url: oci://r/collection:1
  pluginName: chain
  pluginConfig:
    filters:
    - root_id: security-headers
      configuration:
        headers: {}
```
"#;
        let out = extract_markdown(Path::new("docs/x.md"), text);
        assert_eq!(out.problems, vec![]);
        let got: Vec<_> =
            out.configs.iter().map(|c| (c.filter.as_str(), c.line, c.json.trim(), c.member_of_chain)).collect();
        let chain_json = r#"{"filters":[{"configuration":{"headers":{}},"root_id":"security-headers"}]}"#;
        assert_eq!(
            got,
            vec![
                ("chain", 8, got[0].2, false),
                ("jwt-auth", 8, r#"{"rules":[]}"#, true),
                ("rate-limit", 8, r#"{"rules": []}"#, true),
                ("body-logger", 8, "{}", true),
                ("security-headers", 18, "{}", false),
                ("chain", 30, chain_json, false),
                ("security-headers", 30, r#"{"headers":{}}"#, true),
            ]
        );
        assert!(got[0].2.starts_with(r#"{"filters": [{"root_id": "jwt-auth""#), "{}", got[0].2);
        assert_eq!(out.configs[5].origin, Origin::IstioPluginConfig);
    }

    #[test]
    fn yaml_that_does_not_parse_is_a_problem_unless_marked() {
        let bad = "```yaml\nkey: [unclosed\n```\n";
        let out = page(bad);
        assert_eq!(out.problems.len(), 1, "{out:?}");
        assert!(out.problems[0].message.contains("not YAML"));
        let marked = page(&format!("<!-- fragment -->\n{bad}"));
        assert_eq!((marked.problems.len(), marked.fragments.len()), (0, 1));
    }

    #[test]
    fn fences_inside_list_items_and_longer_fences() {
        let text = "- item:\n\n  ```json\n  { \"a\": 1 }\n  ```\n\n````json\n```\n````\n";
        let out = page(text);
        assert_eq!(out.configs.len(), 2);
        assert_eq!(out.configs[0].json, "{ \"a\": 1 }\n");
        assert_eq!(out.configs[1].json, "```\n");
    }

    /// The same reader serves the shipped files (for the schema checks): every wasm
    /// configuration of envoy-configs/ and every WasmPlugin of deploy/istio/.
    #[test]
    fn shipped_envoy_configs_and_wasmplugins_are_read_too() {
        let root = crate::repo_root();
        let yaml_files = |dir: &str| yaml_files(&root, dir);
        let mut string_values = 0;
        for file in yaml_files("envoy-configs") {
            let text = std::fs::read_to_string(root.join(&file)).unwrap();
            let out = extract_yaml(&file, &text, 1, None);
            assert_eq!(out.problems, vec![], "{}", file.display());
            // One configuration per StringValue, and a chain's members after it.
            let members = text.matches("\"root_id\":").count();
            let expected = text.matches("google.protobuf.StringValue").count() + members;
            assert_eq!(out.configs.len(), expected, "{}", file.display());
            assert_eq!(out.configs.iter().filter(|c| c.member_of_chain).count(), members, "{}", file.display());
            string_values += out.configs.len();
        }
        assert!(string_values >= 5, "{string_values}");
        for file in yaml_files("deploy/istio") {
            let text = std::fs::read_to_string(root.join(&file)).unwrap();
            let out = extract_yaml(&file, &text, 1, None);
            let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
            // The manifest's own pluginConfig, named after the file; a chain's members after it.
            let got: Vec<_> = out.configs.iter().map(|c| (c.filter.as_str(), c.origin, c.member_of_chain)).collect();
            let mut expected = vec![(stem.as_str(), Origin::IstioPluginConfig, false)];
            let value = out.configs[0].value().unwrap();
            assert!(value.is_object());
            if stem == crate::CHAIN {
                let members = value["filters"].as_array().unwrap();
                assert!(members.len() >= 2, "{}", file.display());
                for m in members {
                    expected.push((m["root_id"].as_str().unwrap(), Origin::IstioPluginConfig, true));
                }
            }
            assert_eq!(got, expected, "{}", file.display());
        }
    }

    #[test]
    fn pages_are_found_outside_build_and_hidden_dirs() {
        let pages = doc_pages(&crate::repo_root());
        assert!(pages.contains(&PathBuf::from("README.md")), "{pages:?}");
        assert!(pages.contains(&PathBuf::from("filters/rate-limit/README.md")), "{pages:?}");
        assert!(pages.iter().all(|p| !p.starts_with("target") && !p.starts_with(".git")), "{pages:?}");
        assert_eq!(filter_of_page(Path::new("filters/jwt-auth/README.md")).as_deref(), Some("jwt-auth"));
        assert_eq!(filter_of_page(Path::new("docs/architecture.md")), None);
    }
}
