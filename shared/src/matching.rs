//! Request matching, compiled once at configuration time. Field names follow Envoy's
//! `RouteMatch` (as used by jwt_authn rules): `prefix`, `path`, `safe_regex {regex}`.

use crate::config::ConfigError;
use serde::Deserialize;

/// Envoy's `RegexMatcher` (the RE2 engine options are not accepted: Rust's regex syntax is
/// RE2's, without look-around or back-references).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegexMatcherConfig {
    pub regex: String,
}

/// One of `prefix`, `path` (exact) or `safe_regex` (whole path). The query string is never
/// part of what is matched, as in Envoy's route matching.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PathMatchConfig {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub safe_regex: Option<RegexMatcherConfig>,
}

#[derive(Clone, Debug)]
pub enum PathMatcher {
    Prefix(String),
    Exact(String),
    Regex(regex_lite::Regex),
}

/// Longest regex source accepted, and the compiled-size ceiling: a configured pattern must not
/// make the VM spend unbounded memory or time compiling it.
const MAX_REGEX_LEN: usize = 4096;
const MAX_REGEX_SIZE: usize = 1 << 20;

/// Compile a regex that must match a whole subject (Envoy's `safe_regex` semantics).
pub fn compile_full_match_regex(source: &str) -> Result<regex_lite::Regex, String> {
    if source.len() > MAX_REGEX_LEN {
        return Err(format!("regex is longer than {MAX_REGEX_LEN} characters"));
    }
    regex_lite::RegexBuilder::new(&format!("^(?:{source})$"))
        .size_limit(MAX_REGEX_SIZE)
        .build()
        .map_err(|e| format!("invalid regex: {e}"))
}

impl PathMatchConfig {
    pub fn compile(&self) -> Result<PathMatcher, ConfigError> {
        let set = [self.prefix.is_some(), self.path.is_some(), self.safe_regex.is_some()];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(ConfigError::new("", "exactly one of `prefix`, `path`, `safe_regex` must be set"));
        }
        if let Some(p) = &self.prefix {
            check_path_literal(p).map_err(|m| ConfigError::new("prefix", m))?;
            return Ok(PathMatcher::Prefix(p.clone()));
        }
        if let Some(p) = &self.path {
            check_path_literal(p).map_err(|m| ConfigError::new("path", m))?;
            return Ok(PathMatcher::Exact(p.clone()));
        }
        let source = self.safe_regex.as_ref().map(|r| r.regex.as_str()).unwrap_or_default();
        compile_full_match_regex(source).map(PathMatcher::Regex).map_err(|m| ConfigError::new("safe_regex.regex", m))
    }
}

fn check_path_literal(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must start with '/'"));
    }
    if p.contains(['?', '#']) || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("{p:?} must be a path without query, fragment, spaces or control characters"));
    }
    Ok(())
}

impl PathMatcher {
    /// `path` is the request's `:path`; its query string and fragment are ignored.
    pub fn matches(&self, path: &str) -> bool {
        let path = path_without_query(path);
        match self {
            PathMatcher::Prefix(p) => path.starts_with(p.as_str()),
            PathMatcher::Exact(p) => path == p,
            PathMatcher::Regex(r) => r.is_match(path),
        }
    }
}

pub fn path_without_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(json: &str) -> Result<PathMatcher, ConfigError> {
        serde_json::from_str::<PathMatchConfig>(json).unwrap().compile()
    }

    #[test]
    fn prefix_exact_regex() {
        let p = m(r#"{"prefix":"/docs"}"#).unwrap();
        assert!(p.matches("/docs") && p.matches("/docs/a?x=1") && p.matches("/docsx"));
        assert!(!p.matches("/api/docs"));
        let e = m(r#"{"path":"/a"}"#).unwrap();
        assert!(e.matches("/a") && e.matches("/a?q") && !e.matches("/a/") && !e.matches("/ab"));
        let r = m(r#"{"safe_regex":{"regex":"/v[0-9]+/docs"}}"#).unwrap();
        assert!(r.matches("/v1/docs") && r.matches("/v12/docs?x"));
        assert!(!r.matches("/v1/docs/x"), "safe_regex matches the whole path");
        assert!(!r.matches("/x/v1/docs"));
    }

    #[test]
    fn refuses_ambiguous_or_bad_matchers() {
        assert!(m(r#"{}"#).is_err());
        assert!(m(r#"{"prefix":"/a","path":"/b"}"#).is_err());
        assert_eq!(m(r#"{"prefix":"docs"}"#).unwrap_err().field, "prefix");
        assert_eq!(m(r#"{"path":"/a?b"}"#).unwrap_err().field, "path");
        assert_eq!(m(r#"{"safe_regex":{"regex":"("}}"#).unwrap_err().field, "safe_regex.regex");
        assert!(serde_json::from_str::<PathMatchConfig>(r#"{"safe_regex":{"regex":"a","x":1}}"#).is_err());
    }
}
