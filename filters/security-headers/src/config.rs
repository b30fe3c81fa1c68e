//! Configuration: the serde shape (phase 1) and its semantic validation into a [`Compiled`]
//! policy set (phase 2). Every header operation is precomputed here so the request path only
//! picks a policy and applies it.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use shared::config::ConfigError;
use shared::headers::{normalize_header_name, validate_header_value};
use shared::matching::{PathMatchConfig, PathMatcher, RouteName};
use std::collections::BTreeMap;
use std::fmt;

pub const HSTS: &str = "strict-transport-security";
pub const CSP: &str = "content-security-policy";
pub const CSP_REPORT_ONLY: &str = "content-security-policy-report-only";

/// The secure defaults, API-oriented. Each is explained in README.md ("Defaults and why").
pub const DEFAULT_HEADERS: &[(&str, &str)] = &[
    (HSTS, "max-age=31536000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (CSP, "default-src 'none'; frame-ancestors 'none'"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "permissions-policy",
        "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()",
    ),
    ("x-permitted-cross-domain-policies", "none"),
    ("x-xss-protection", "0"),
];

/// Headers that reveal the upstream's software and version.
pub const DEFAULT_REMOVE_HEADERS: &[&str] = &[
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
    "x-generator",
    "x-runtime",
    "x-version",
    "x-backend-server",
];

/// Headers this filter never sets or removes: the framing and connection headers, and the two
/// that say how to read the body (changing them from a header filter corrupts the response).
fn is_forbidden(name: &str) -> bool {
    shared::headers::is_framing_or_connection_header(name) || ["content-type", "content-encoding"].contains(&name)
}

const MAX_VALUE_LEN: usize = 8192;
const MAX_HEADERS: usize = 64;

/// Envoy's `HeaderValueOption.append_action`, the two values that make sense here.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum AppendAction {
    /// Keep a value the upstream already set; add ours only where it set none.
    #[default]
    #[serde(rename = "ADD_IF_ABSENT")]
    AddIfAbsent,
    /// Always replace the upstream's value with ours.
    #[serde(rename = "OVERWRITE_IF_EXISTS_OR_ADD")]
    OverwriteIfExistsOrAdd,
}

/// A header's setting: `null` (disabled), `"value"`, or `{"value": …, "append_action": …}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderSetting {
    Disabled,
    Value { value: String, append_action: Option<AppendAction> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderSettingObject {
    value: String,
    #[serde(default)]
    append_action: Option<AppendAction>,
}

impl<'de> Deserialize<'de> for HeaderSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderSetting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a header value string, null to disable the header, or {\"value\", \"append_action\"}")
            }
            fn visit_unit<E: de::Error>(self) -> Result<HeaderSetting, E> {
                Ok(HeaderSetting::Disabled)
            }
            fn visit_none<E: de::Error>(self) -> Result<HeaderSetting, E> {
                Ok(HeaderSetting::Disabled)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HeaderSetting, E> {
                Ok(HeaderSetting::Value { value: v.to_string(), append_action: None })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HeaderSetting, A::Error> {
                let o = HeaderSettingObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(HeaderSetting::Value { value: o.value, append_action: o.append_action })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(title = "security-headers configuration"))]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Overrides of the defaults, by header name: a value replaces the default, `null` disables
    /// the header, a new name adds a header.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(transform = schema::header_settings))]
    pub headers: BTreeMap<String, HeaderSetting>,
    /// What to do when the upstream already set a header this filter sets.
    #[serde(default)]
    pub append_action: AppendAction,
    /// Response headers removed from every response; replaces the default list when given.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(transform = schema::removable_names))]
    pub remove_headers: Option<Vec<String>>,
    /// Send the CSP as `Content-Security-Policy-Report-Only` (observe before enforcing).
    #[serde(default)]
    pub content_security_policy_report_only: bool,
    /// Decide HTTPS (for HSTS) from `x-forwarded-proto` when present, instead of the downstream
    /// connection's TLS. Only for TLS ending in front of Envoy, at a proxy that sets the header.
    #[serde(default)]
    pub trust_x_forwarded_proto: bool,
    /// Per-path changes; the first whose `match` fits the request path wins.
    #[serde(default)]
    pub path_overrides: Vec<PathOverride>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PathOverride {
    #[serde(rename = "match")]
    pub match_: PathMatchConfig,
    /// Merged over the top-level `headers`, same syntax.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(transform = schema::header_settings))]
    pub headers: BTreeMap<String, HeaderSetting>,
    #[serde(default)]
    pub content_security_policy_report_only: Option<bool>,
}

/// One header this filter writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderOp {
    pub name: String,
    pub value: String,
    pub action: AppendAction,
    /// HSTS: only on HTTPS (RFC 6797 §7.2).
    pub https_only: bool,
}

/// What one response gets: precomputed, nothing parsed per request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub set: Vec<HeaderOp>,
}

#[derive(Clone, Debug)]
pub struct Compiled {
    pub default_policy: Policy,
    pub overrides: Vec<(PathMatcher, Policy)>,
    pub remove: Vec<String>,
    pub trust_x_forwarded_proto: bool,
}

impl Compiled {
    /// The override for a request path (`:path`, query ignored) or route; `None`: the default.
    pub fn override_for(&self, path: Option<&str>, route: &RouteName) -> Option<usize> {
        self.overrides.iter().position(|(m, _)| m.matches(path, route))
    }

    /// The policy for a request path (`:path`, query ignored) or route.
    pub fn policy_for(&self, path: Option<&str>, route: &RouteName) -> &Policy {
        self.override_for(path, route)
            .and_then(|i| self.overrides.get(i))
            .map_or(&self.default_policy, |(_, policy)| policy)
    }
}

/// Header names normalised to lowercase, refusing two spellings of one name.
fn normalize_settings(
    settings: &BTreeMap<String, HeaderSetting>,
    field: &str,
) -> Result<BTreeMap<String, HeaderSetting>, ConfigError> {
    if settings.len() > MAX_HEADERS {
        return Err(ConfigError::new(field, format!("at most {MAX_HEADERS} headers")));
    }
    let mut out = BTreeMap::new();
    for (name, setting) in settings {
        let path = format!("{field}.{name}");
        let lower = normalize_header_name(name).map_err(|m| ConfigError::new(&path, m))?;
        if is_forbidden(&lower) {
            return Err(ConfigError::new(
                &path,
                format!("`{lower}` frames the message and cannot be set by this filter"),
            ));
        }
        if let HeaderSetting::Value { value, .. } = setting {
            check_value(&lower, value).map_err(|m| ConfigError::new(&path, m))?;
        }
        if out.insert(lower.clone(), setting.clone()).is_some() {
            return Err(ConfigError::new(
                &path,
                format!("`{lower}` is given twice (header names are case-insensitive)"),
            ));
        }
    }
    Ok(out)
}

fn check_value(name: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("empty value; use null to disable a header".into());
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(format!("value is longer than {MAX_VALUE_LEN} bytes"));
    }
    validate_header_value(value)?;
    if name == HSTS && !has_max_age(value) {
        return Err("strict-transport-security needs a `max-age=<seconds>` directive (RFC 6797 §6.1.1)".into());
    }
    Ok(())
}

fn has_max_age(value: &str) -> bool {
    value.split(';').any(|d| {
        let d = d.trim();
        d.len() > 8
            && d[..8].eq_ignore_ascii_case("max-age=")
            && d[8..].trim_matches('"').bytes().all(|b| b.is_ascii_digit())
            && !d[8..].trim_matches('"').is_empty()
    })
}

fn build_policy(merged: &BTreeMap<String, HeaderSetting>, default_action: AppendAction, report_only: bool) -> Policy {
    let mut set = Vec::new();
    for (name, setting) in merged {
        if let HeaderSetting::Value { value, append_action } = setting {
            let name = if report_only && name == CSP { CSP_REPORT_ONLY.to_string() } else { name.clone() };
            set.push(HeaderOp {
                https_only: name == HSTS,
                name,
                value: value.clone(),
                action: append_action.unwrap_or(default_action),
            });
        }
    }
    Policy { set }
}

/// Report-only mode renames the CSP to `content-security-policy-report-only`; a header of that
/// name configured as well would be written twice, one value silently winning.
fn check_report_only_collision(policy: &Policy, field: &str) -> Result<(), ConfigError> {
    if policy.set.iter().filter(|o| o.name == CSP_REPORT_ONLY).count() > 1 {
        return Err(ConfigError::new(
            field,
            format!("report-only mode and an explicit `{CSP_REPORT_ONLY}` header both set it; keep one"),
        ));
    }
    Ok(())
}

impl Config {
    /// Phase 2: semantic checks, then precompute every policy.
    pub fn compile(self) -> Result<Compiled, ConfigError> {
        let mut base: BTreeMap<String, HeaderSetting> = DEFAULT_HEADERS
            .iter()
            .map(|(n, v)| (n.to_string(), HeaderSetting::Value { value: v.to_string(), append_action: None }))
            .collect();
        base.extend(normalize_settings(&self.headers, "headers")?);

        let remove: Vec<String> = match &self.remove_headers {
            None => DEFAULT_REMOVE_HEADERS.iter().map(|s| s.to_string()).collect(),
            Some(list) => {
                let mut out: Vec<String> = Vec::new();
                for (i, name) in list.iter().enumerate() {
                    let field = format!("remove_headers[{i}]");
                    let lower = normalize_header_name(name).map_err(|m| ConfigError::new(&field, m))?;
                    if is_forbidden(&lower) {
                        return Err(ConfigError::new(
                            &field,
                            format!("`{lower}` frames the message and cannot be removed"),
                        ));
                    }
                    if !out.contains(&lower) {
                        out.push(lower);
                    }
                }
                out
            }
        };

        let default_policy = build_policy(&base, self.append_action, self.content_security_policy_report_only);
        check_report_only_collision(&default_policy, "content_security_policy_report_only")?;

        let mut overrides = Vec::with_capacity(self.path_overrides.len());
        for (i, o) in self.path_overrides.iter().enumerate() {
            let field = format!("path_overrides[{i}]");
            let matcher = o.match_.compile().map_err(|e| e.within(&format!("{field}.match")))?;
            let mut merged = base.clone();
            merged.extend(normalize_settings(&o.headers, &format!("{field}.headers"))?);
            let report_only = o.content_security_policy_report_only.unwrap_or(self.content_security_policy_report_only);
            let policy = build_policy(&merged, self.append_action, report_only);
            check_report_only_collision(&policy, &format!("{field}.content_security_policy_report_only"))?;
            overrides.push((matcher, policy));
        }

        // A header both set and removed is a contradiction, whichever policy sets it.
        let all_policies = std::iter::once(&default_policy).chain(overrides.iter().map(|(_, p)| p));
        for policy in all_policies {
            for op in &policy.set {
                if let Some(i) = remove.iter().position(|r| *r == op.name) {
                    let field = if self.remove_headers.is_some() {
                        format!("remove_headers[{i}]")
                    } else {
                        format!("headers.{}", op.name)
                    };
                    return Err(ConfigError::new(field, format!("`{}` is both set and removed", op.name)));
                }
            }
        }

        Ok(Compiled { default_policy, overrides, remove, trust_x_forwarded_proto: self.trust_x_forwarded_proto })
    }
}

/// What phase 2 checks that JSON Schema can say (header names and values, HSTS `max-age`, the
/// headers no one may set); schemars reads the rest from the types.
#[cfg(feature = "schema")]
mod schema {
    use super::*;
    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
    use shared::schema::{any_case_names_pattern, json, Value, HEADER_NAME_PATTERN, HEADER_VALUE_PATTERN};
    use std::borrow::Cow;

    fn forbidden_names() -> Vec<&'static str> {
        let mut names = shared::headers::FRAMING_AND_CONNECTION_HEADERS.to_vec();
        names.extend(["content-type", "content-encoding"]);
        names
    }

    /// A name this filter may set or remove.
    fn header_name() -> Value {
        json!({ "pattern": HEADER_NAME_PATTERN, "not": { "pattern": any_case_names_pattern(&forbidden_names()) } })
    }

    /// `max-age=<digits>` as one `;`-separated directive (`has_max_age`).
    const MAX_AGE_PATTERN: &str = r#"(?:^|;)[ \t]*[Mm][Aa][Xx]-[Aa][Gg][Ee]="*[0-9]+"*[ \t]*(?:;|$)"#;

    /// `headers`: names as `normalize_settings` accepts them, at most [`MAX_HEADERS`], and an
    /// HSTS value (any case of its name) with `max-age`.
    pub fn header_settings(schema: &mut Schema) {
        let Some(object) = schema.as_object_mut() else { return };
        let setting = object.get("additionalProperties").cloned().unwrap_or(json!({}));
        object.insert("propertyNames".into(), header_name());
        object.insert("maxProperties".into(), MAX_HEADERS.into());
        let hsts = json!({
            "allOf": [setting, {
                "anyOf": [
                    { "type": "null" },
                    { "type": "string", "pattern": MAX_AGE_PATTERN },
                    { "type": "object", "properties": { "value": { "pattern": MAX_AGE_PATTERN } } }
                ]
            }]
        });
        object.insert("patternProperties".into(), json!({ any_case_names_pattern(&[HSTS]): hsts }));
    }

    /// `remove_headers`: names as `normalize_header_name` accepts them, none that frames the
    /// message.
    pub fn removable_names(schema: &mut Schema) {
        if let Some(object) = schema.as_object_mut() {
            object.insert("items".into(), header_name());
        }
    }

    impl JsonSchema for HeaderSetting {
        fn schema_name() -> Cow<'static, str> {
            "HeaderSetting".into()
        }
        fn json_schema(generator: &mut SchemaGenerator) -> Schema {
            let value = json!({
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_VALUE_LEN,
                "pattern": HEADER_VALUE_PATTERN,
            });
            json_schema!({
                "description": "The header's value; null disables the header; or {\"value\", \"append_action\"}.",
                "anyOf": [
                    { "type": "null" },
                    value,
                    {
                        "type": "object",
                        "properties": {
                            "value": value,
                            "append_action": generator.subschema_for::<Option<AppendAction>>(),
                        },
                        "required": ["value"],
                        "additionalProperties": false
                    }
                ]
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn load(json: &str) -> Result<Compiled, ConfigError> {
        shared::config::load(Some(json.as_bytes()), Config::compile)
    }

    #[test]
    fn an_empty_value_names_the_header_the_user_wrote() {
        // Found by CI's fuzz smoke: `"x-a": ""` was refused naming `headers.x-a.value`, a
        // field the document does not have (the value was a plain string).
        for json in [r#"{"headers":{"x-a":""}}"#, r#"{"headers":{"x-a":{"value":""}}}"#] {
            let e = load(json).unwrap_err();
            assert_eq!(e.field, "headers.x-a", "{json}");
        }
    }

    fn value_of<'a>(p: &'a Policy, name: &str) -> Option<&'a HeaderOp> {
        p.set.iter().find(|o| o.name == name)
    }

    #[test]
    fn defaults_are_complete() {
        let c = shared::config::load(None, Config::compile).unwrap();
        assert_eq!(c.default_policy.set.len(), DEFAULT_HEADERS.len());
        let hsts = value_of(&c.default_policy, HSTS).unwrap();
        assert!(hsts.https_only);
        assert_eq!(hsts.value, "max-age=31536000; includeSubDomains");
        assert_eq!(hsts.action, AppendAction::AddIfAbsent);
        assert!(value_of(&c.default_policy, "x-content-type-options").is_some_and(|o| !o.https_only));
        assert_eq!(c.remove, DEFAULT_REMOVE_HEADERS);
        assert!(!c.trust_x_forwarded_proto);
        // Every default passes the same checks a user's value does.
        for (name, value) in DEFAULT_HEADERS {
            check_value(name, value).unwrap();
        }
    }

    #[test]
    fn override_disable_add_and_actions() {
        let c = load(
            r#"{"headers":{"X-Frame-Options":null,"Referrer-Policy":"same-origin",
                "x-custom":{"value":"1","append_action":"OVERWRITE_IF_EXISTS_OR_ADD"}},
                "append_action":"ADD_IF_ABSENT"}"#,
        )
        .unwrap();
        let p = &c.default_policy;
        assert!(value_of(p, "x-frame-options").is_none());
        assert_eq!(value_of(p, "referrer-policy").unwrap().value, "same-origin");
        assert_eq!(value_of(p, "x-custom").unwrap().action, AppendAction::OverwriteIfExistsOrAdd);
        assert_eq!(value_of(p, "referrer-policy").unwrap().action, AppendAction::AddIfAbsent);
    }

    #[test]
    fn report_only_and_path_overrides() {
        let c = load(
            r#"{"path_overrides":[
                 {"match":{"prefix":"/docs"},"headers":{"content-security-policy":"default-src 'self'"},
                  "content_security_policy_report_only":true},
                 {"match":{"path":"/embed"},"headers":{"x-frame-options":"SAMEORIGIN"}}]}"#,
        )
        .unwrap();
        let docs = c.policy_for(Some("/docs/index.html?x=1"), &RouteName::known(None));
        assert!(value_of(docs, CSP).is_none());
        assert_eq!(value_of(docs, CSP_REPORT_ONLY).unwrap().value, "default-src 'self'");
        let embed = c.policy_for(Some("/embed"), &RouteName::known(None));
        assert_eq!(value_of(embed, "x-frame-options").unwrap().value, "SAMEORIGIN");
        assert_eq!(value_of(embed, CSP).unwrap().value, "default-src 'none'; frame-ancestors 'none'");
        let other = c.policy_for(Some("/api"), &RouteName::known(None));
        assert_eq!(value_of(other, "x-frame-options").unwrap().value, "DENY");
        assert_eq!(c.policy_for(None, &RouteName::known(None)), &c.default_policy);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (r#"{"header":{}}"#, "header"),
            (r#"{"headers":{"bad name":"x"}}"#, "headers.bad name"),
            (r#"{"headers":{"x-a":"line\r\nbreak"}}"#, "headers.x-a"),
            (r#"{"headers":{"x-a":""}}"#, "headers.x-a"),
            (r#"{"headers":{"x-a":" lead"}}"#, "headers.x-a"),
            (r#"{"headers":{"x-a":"1","X-A":"2"}}"#, "headers.x-a"),
            (r#"{"headers":{"content-length":"1"}}"#, "headers.content-length"),
            (r#"{"headers":{"strict-transport-security":"includeSubDomains"}}"#, "headers.strict-transport-security"),
            (
                r#"{"headers":{"x-a":{"value":"1","append_action":"APPEND_IF_EXISTS_OR_ADD"}}}"#,
                "headers.x-a.append_action",
            ),
            (r#"{"headers":{"x-a":{"value":"1","extra":true}}}"#, "headers.x-a.extra"),
            (r#"{"headers":{"x-a":5}}"#, "headers.x-a"),
            (r#"{"append_action":"OVERWRITE"}"#, "append_action"),
            (r#"{"remove_headers":["ok","no good"]}"#, "remove_headers[1]"),
            (r#"{"remove_headers":["transfer-encoding"]}"#, "remove_headers[0]"),
            (r#"{"remove_headers":["x-frame-options"]}"#, "remove_headers[0]"),
            (r#"{"headers":{"server":"mine"}}"#, "headers.server"),
            (
                r#"{"path_overrides":[{"match":{"safe_regex":{"regex":"(["}}}]}"#,
                "path_overrides[0].match.safe_regex.regex",
            ),
            (r#"{"path_overrides":[{"match":{}}]}"#, "path_overrides[0].match"),
            (r#"{"path_overrides":[{"match":{"route_name":"a","path":"/a"}}]}"#, "path_overrides[0].match"),
            (r#"{"path_overrides":[{"match":{"route_name":"a\u0000"}}]}"#, "path_overrides[0].match.route_name"),
            (
                r#"{"path_overrides":[{"match":{"prefix":"/a"},"headers":{"x\u00e9":"1"}}]}"#,
                "path_overrides[0].headers.xé",
            ),
            (r#"{"path_overrides":[{"match":{"prefix":"/a"},"colour":1}]}"#, "path_overrides[0].colour"),
            (r#"{"trust_x_forwarded_proto":"yes"}"#, "trust_x_forwarded_proto"),
            (
                r#"{"content_security_policy_report_only":true,"headers":{"content-security-policy-report-only":"x"}}"#,
                "content_security_policy_report_only",
            ),
            (
                r#"{"path_overrides":[{"match":{"prefix":"/a"},"content_security_policy_report_only":true,
                    "headers":{"content-security-policy-report-only":"x"}}]}"#,
                "path_overrides[0].content_security_policy_report_only",
            ),
        ];
        for (json, field) in cases {
            let e = load(json).expect_err(json);
            assert_eq!(e.field, field, "{json}: {e}");
        }
    }

    #[test]
    fn hsts_max_age_forms() {
        assert!(has_max_age("max-age=0"));
        assert!(has_max_age("includeSubDomains; Max-Age=\"100\"; preload"));
        assert!(!has_max_age("max-age="));
        assert!(!has_max_age("max-age=1d"));
        assert!(!has_max_age("preload"));
    }
}
