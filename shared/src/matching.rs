//! Request matching, compiled once at configuration time. Field names follow Envoy's
//! `RouteMatch` (as used by jwt_authn rules): `prefix`, `path`, `safe_regex {regex}`; and
//! `route_name`, the name of the route Envoy picked for the request (`xds.route_name`).
//!
//! `route_name` is a fourth alternative, not a condition added to a path matcher: a rule is
//! scoped either to paths or to a route. A route is matched by Envoy itself (case-insensitive
//! prefixes, regexes, headers, whatever the route table says), so a rule on its name selects
//! exactly the requests that route serves, however the path is spelled; adding a path
//! condition to it would bring the spelling back. A rule that needs a narrower scope names a
//! narrower route.
//!
//! The route name is read through [`RouteName`]: from the host at most once per request, and
//! only when a rule that names a route is evaluated (a configuration without one costs no host
//! call). No route (no route matched, a direct response, the property missing or empty) never
//! matches.

use crate::config::ConfigError;
use crate::host::Host;
use serde::Deserialize;
use std::cell::OnceCell;

/// Envoy's `RegexMatcher` (the RE2 engine options are not accepted: Rust's regex syntax is
/// RE2's, without look-around or back-references).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegexMatcherConfig {
    pub regex: String,
}

/// One of `prefix`, `path` (exact), `safe_regex` (whole path) or `route_name` (exact name of
/// the route Envoy picked). The query string is never part of what is matched, as in Envoy's
/// route matching.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PathMatchConfig {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub safe_regex: Option<RegexMatcherConfig>,
    #[serde(default)]
    pub route_name: Option<String>,
}

#[derive(Clone, Debug)]
pub enum PathMatcher {
    Prefix(String),
    Exact(String),
    Regex(regex_lite::Regex),
    /// The route's name (`xds.route_name`), compared exactly.
    Route(String),
}

/// The property Envoy gives the name of the request's route in.
pub const ROUTE_NAME_PROPERTY: &[&str] = &["xds", "route_name"];
/// Longest `route_name` accepted.
pub const MAX_ROUTE_NAME_LEN: usize = 256;

/// The request's route name, read from the host on first use and kept for the request: one
/// `get_property` at most, none when no rule asks. Make one per request and pass it to every
/// match of that request.
pub struct RouteName<'h> {
    host: Option<&'h dyn Host>,
    value: OnceCell<Option<Vec<u8>>>,
}

impl<'h> RouteName<'h> {
    /// Read from `host` (`xds.route_name`) when first asked.
    pub fn of(host: &'h dyn Host) -> RouteName<'h> {
        RouteName { host: Some(host), value: OnceCell::new() }
    }

    /// A known route name (`None`: no route), for code that has no host (tests, fuzzing).
    pub fn known(name: Option<&str>) -> RouteName<'static> {
        RouteName { host: None, value: OnceCell::from(name.map(|n| n.as_bytes().to_vec())) }
    }

    /// The name; `None` when the request has no route or the route no name.
    pub fn get(&self) -> Option<&[u8]> {
        self.value
            .get_or_init(|| self.host.and_then(|h| h.property(ROUTE_NAME_PROPERTY)).filter(|v| !v.is_empty()))
            .as_deref()
    }

    /// Whether the name has been read (for tests of the lazy read).
    pub fn was_read(&self) -> bool {
        self.host.is_some() && self.value.get().is_some()
    }
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
        let set = [self.prefix.is_some(), self.path.is_some(), self.safe_regex.is_some(), self.route_name.is_some()];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(ConfigError::new(
                "",
                "exactly one of `prefix`, `path`, `safe_regex`, `route_name` must be set",
            ));
        }
        if let Some(name) = &self.route_name {
            check_route_name(name).map_err(|m| ConfigError::new("route_name", m))?;
            return Ok(PathMatcher::Route(name.clone()));
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

/// A route name as Envoy's route table can spell it, and as logs and headers can show it.
fn check_route_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_ROUTE_NAME_LEN {
        return Err(format!("must be 1 to {MAX_ROUTE_NAME_LEN} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} must not contain control characters"));
    }
    Ok(())
}

impl PathMatcher {
    /// `path` is the request's `:path` (`None`: absent or not text), its query string and
    /// fragment ignored; `route` the request's route name, read only by a `route_name` matcher.
    pub fn matches(&self, path: Option<&str>, route: &RouteName) -> bool {
        self.matches_with(|| path, route)
    }

    /// [`matches`](Self::matches) with the path read only when a path matcher needs it.
    pub fn matches_with<'p>(&self, path: impl FnOnce() -> Option<&'p str>, route: &RouteName) -> bool {
        let name = match self {
            PathMatcher::Route(name) => name,
            _ => return path().is_some_and(|p| self.matches_path(p)),
        };
        route.get() == Some(name.as_bytes())
    }

    /// The path matchers on `path` alone; a `route_name` matcher never matches here.
    fn matches_path(&self, path: &str) -> bool {
        let path = path_without_query(path);
        match self {
            PathMatcher::Prefix(p) => path.starts_with(p.as_str()),
            PathMatcher::Exact(p) => path == p,
            PathMatcher::Regex(r) => r.is_match(path),
            PathMatcher::Route(_) => false,
        }
    }
}

pub fn path_without_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::mock::MockHost;
    use crate::proxytest::{HostCall, Proxy};

    fn m(json: &str) -> Result<PathMatcher, ConfigError> {
        serde_json::from_str::<PathMatchConfig>(json).unwrap().compile()
    }

    /// A path matcher on `path` alone (no route).
    trait OnPath {
        fn on_path(&self, path: &str) -> bool;
    }
    impl OnPath for PathMatcher {
        fn on_path(&self, path: &str) -> bool {
            self.matches(Some(path), &RouteName::known(None))
        }
    }

    #[test]
    fn prefix_exact_regex() {
        let p = m(r#"{"prefix":"/docs"}"#).unwrap();
        assert!(p.on_path("/docs") && p.on_path("/docs/a?x=1") && p.on_path("/docsx"));
        assert!(!p.on_path("/api/docs"));
        let e = m(r#"{"path":"/a"}"#).unwrap();
        assert!(e.on_path("/a") && e.on_path("/a?q") && !e.on_path("/a/") && !e.on_path("/ab"));
        let r = m(r#"{"safe_regex":{"regex":"/v[0-9]+/docs"}}"#).unwrap();
        assert!(r.on_path("/v1/docs") && r.on_path("/v12/docs?x"));
        assert!(!r.on_path("/v1/docs/x"), "safe_regex matches the whole path");
        assert!(!r.on_path("/x/v1/docs"));
    }

    #[test]
    fn refuses_ambiguous_or_bad_matchers() {
        assert!(m(r#"{}"#).is_err());
        assert!(m(r#"{"prefix":"/a","path":"/b"}"#).is_err());
        assert_eq!(m(r#"{"prefix":"docs"}"#).unwrap_err().field, "prefix");
        assert_eq!(m(r#"{"path":"/a?b"}"#).unwrap_err().field, "path");
        assert_eq!(m(r#"{"safe_regex":{"regex":"("}}"#).unwrap_err().field, "safe_regex.regex");
        assert!(serde_json::from_str::<PathMatchConfig>(r#"{"safe_regex":{"regex":"a","x":1}}"#).is_err());
        assert!(m(r#"{"prefix":"/a","route_name":"a"}"#).is_err(), "route_name is an alternative, not an AND");
        assert_eq!(m(r#"{"route_name":""}"#).unwrap_err().field, "route_name");
        assert_eq!(m(r#"{"route_name":"a\nb"}"#).unwrap_err().field, "route_name");
        let long = format!(r#"{{"route_name":"{}"}}"#, "r".repeat(MAX_ROUTE_NAME_LEN + 1));
        assert_eq!(m(&long).unwrap_err().field, "route_name");
        assert!(m(&format!(r#"{{"route_name":"{}"}}"#, "r".repeat(MAX_ROUTE_NAME_LEN))).is_ok());
    }

    #[test]
    fn route_name_matches_the_route_whatever_the_path() {
        let r = m(r#"{"route_name":"admin"}"#).unwrap();
        for path in [Some("/admin"), Some("/ADMIN/x"), Some("/%61dmin"), None] {
            assert!(r.matches(path, &RouteName::known(Some("admin"))), "{path:?}");
        }
        // Exact, case-sensitive: a route name is an identifier of the route table.
        assert!(!r.matches(Some("/admin"), &RouteName::known(Some("Admin"))));
        assert!(!r.matches(Some("/admin"), &RouteName::known(Some("admin-v2"))));
        // No route never matches, nor does a path matcher without a path.
        assert!(!r.matches(Some("/admin"), &RouteName::known(None)));
        let p = m(r#"{"prefix":"/"}"#).unwrap();
        assert!(!p.matches(None, &RouteName::known(Some("admin"))));
    }

    #[test]
    fn route_name_is_read_once_and_only_when_a_route_rule_is_evaluated() {
        let proxy = Proxy::new();
        let host = MockHost::on(&proxy);
        host.set_property(&["xds", "route_name"], b"admin");
        let by_path = m(r#"{"prefix":"/admin"}"#).unwrap();
        let by_route = m(r#"{"route_name":"admin"}"#).unwrap();
        let other = m(r#"{"route_name":"other"}"#).unwrap();

        let route = RouteName::of(&host);
        let (hit, calls) = proxy.count_host_calls(|| by_path.matches(Some("/admin"), &route));
        assert!(hit);
        assert_eq!(calls.get(HostCall::GetProperty), 0, "a path rule reads no route name");
        assert!(!route.was_read());

        let (hits, calls) = proxy.count_host_calls(|| {
            (
                other.matches(Some("/admin"), &route),
                by_route.matches(Some("/x"), &route),
                by_route.matches(None, &route),
            )
        });
        assert_eq!(hits, (false, true, true));
        assert_eq!(calls.get(HostCall::GetProperty), 1, "read once for the request");

        // A path matcher does not read the path it does not need, nor a route matcher the path.
        assert!(!by_path.matches_with(|| None, &route));
        assert!(by_route.matches_with(|| unreachable!("a route rule reads no path"), &route));
    }

    #[test]
    fn an_absent_or_empty_route_name_never_matches() {
        let host = MockHost::new();
        let any = m(r#"{"route_name":"admin"}"#).unwrap();
        assert!(!any.matches(Some("/admin"), &RouteName::of(&host)), "property missing");
        host.set_property(&["xds", "route_name"], b"");
        assert!(!any.matches(Some("/admin"), &RouteName::of(&host)), "unnamed route");
        assert_eq!(RouteName::of(&host).get(), None);
    }
}
