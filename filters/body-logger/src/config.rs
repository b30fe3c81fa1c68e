//! Configuration: the serde shape (phase 1) and its validation into [`Compiled`] (phase 2).
//! Everything the request path needs (lowercased name sets, compiled regexes, the sampling
//! threshold) is computed here once.

use crate::names::NameRule;
pub use crate::names::DEFAULT_HARMLESS_FIELDS;
use crate::redact::{Pattern, Redactor};
use serde::Deserialize;
use shared::config::ConfigError;
use shared::headers::normalize_header_name;
use shared::matching::{PathMatchConfig, PathMatcher};
use shared::LogLevel;

pub const DEFAULT_MAX_BYTES: usize = 4096;
/// Bytes of captures (bodies and logged headers) one worker VM holds at once: see the README's
/// "Memory" section for the argument.
pub const DEFAULT_CAPTURE_BUDGET_BYTES: usize = 64 << 20;
/// Half of the 1 GiB a proxy-wasm VM may grow to in Envoy (V8's `wasm_max_mem_pages`).
pub const MAX_CAPTURE_BUDGET_BYTES: usize = 512 << 20;
/// Ceiling for `max_bytes`: each direction's capture lives in the VM until the stream ends.
pub const MAX_MAX_BYTES: usize = 1 << 20;
pub const DEFAULT_FILTER_STATE_NAME: &str = "body_log";
pub const DEFAULT_REPLACEMENT: &str = "[REDACTED]";

pub const DEFAULT_CONTENT_TYPES: &[&str] =
    &["application/json", "application/*+json", "text/*", "application/x-www-form-urlencoded"];

/// Exact names (see [`crate::names`]): short or common words that are sensitive as a whole
/// name only. Longer names (`password`, `access_token`, `client_secret`, `x-api-key`…) need no
/// entry: they hold a sensitive part.
pub const DEFAULT_REDACT_FIELDS: &[&str] = &[
    "pwd", "pass", "pin", "pincode", "otp", "totp", "hotp", "ssn", "key", "auth", "sid", "sig", "jwt", "csc", "cccsc",
];

/// Headers whose values are never logged (when `log_headers` is on).
pub const DEFAULT_REDACT_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
    "x-csrf-token",
    "x-xsrf-token",
    "x-amz-security-token",
    "x-goog-iap-jwt-assertion",
    "x-forwarded-client-cert",
];

const MAX_LIST: usize = 256;
const MAX_NAME_LEN: usize = 256;

fn default_max_bytes() -> usize {
    DEFAULT_MAX_BYTES
}
fn default_capture_budget() -> usize {
    DEFAULT_CAPTURE_BUDGET_BYTES
}
fn default_true() -> bool {
    true
}
fn default_rate() -> f64 {
    1.0
}
fn default_content_types() -> Vec<String> {
    DEFAULT_CONTENT_TYPES.iter().map(|s| s.to_string()).collect()
}
fn default_fields() -> Vec<String> {
    DEFAULT_REDACT_FIELDS.iter().map(|s| s.to_string()).collect()
}
fn default_harmless() -> Vec<String> {
    DEFAULT_HARMLESS_FIELDS.iter().map(|s| s.to_string()).collect()
}
fn default_headers() -> Vec<String> {
    DEFAULT_REDACT_HEADERS.iter().map(|s| s.to_string()).collect()
}
fn default_replacement() -> String {
    DEFAULT_REPLACEMENT.to_string()
}
fn default_filter_state_name() -> Option<String> {
    Some(DEFAULT_FILTER_STATE_NAME.to_string())
}
fn default_log_level() -> String {
    "info".to_string()
}

/// Phase 1: the JSON shape. Unknown fields are errors naming their path.
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(title = "body-logger configuration"))]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_max_bytes")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_MAX_BYTES)))]
    pub max_bytes: usize,
    /// At least `max_bytes`.
    #[serde(default = "default_capture_budget")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_CAPTURE_BUDGET_BYTES)))]
    pub capture_budget_bytes: usize,
    #[serde(default = "default_true")]
    pub request_body: bool,
    #[serde(default = "default_true")]
    pub response_body: bool,
    /// `type/subtype`, `type/*` or `type/*+suffix`.
    #[serde(default = "default_content_types")]
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_LIST), inner(regex(pattern = schema::MEDIA_RANGE))))]
    pub content_types: Vec<String>,
    /// gRPC (`application/grpc`, `application/grpc+*`, in any `content-type` value): log a
    /// summary of the message framing (count, bytes, compressed flags) instead of the body,
    /// whatever `content_types` says; gRPC-Web (`application/grpc-web*`) is never captured.
    /// `false` treats both like any other content type.
    #[serde(default = "default_true")]
    pub grpc_frames: bool,
    #[serde(default)]
    pub paths: Vec<PathMatchConfig>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(inner(regex(pattern = r"^[A-Za-z-]{1,32}$"))))]
    pub methods: Vec<String>,
    #[serde(default = "default_rate")]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 1)))]
    pub sample_rate: f64,
    #[serde(default)]
    pub sample_by_request_id: bool,
    #[serde(default)]
    pub log_headers: bool,
    #[serde(default)]
    pub redact: RedactConfig,
    #[serde(default = "default_log_level")]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["trace", "debug", "info", "warn", "warning", "error", "critical"])))]
    pub log_level: String,
    #[serde(default = "default_true")]
    pub envoy_log: bool,
    /// `null` disables it.
    #[serde(default = "default_filter_state_name")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,128}$")))]
    pub filter_state_name: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        shared::config::parse(None).unwrap_or_else(|_| Config {
            max_bytes: DEFAULT_MAX_BYTES,
            capture_budget_bytes: DEFAULT_CAPTURE_BUDGET_BYTES,
            request_body: true,
            response_body: true,
            content_types: default_content_types(),
            grpc_frames: true,
            paths: vec![],
            methods: vec![],
            sample_rate: 1.0,
            sample_by_request_id: false,
            log_headers: false,
            redact: RedactConfig::default(),
            log_level: default_log_level(),
            envoy_log: true,
            filter_state_name: default_filter_state_name(),
        })
    }
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// Exact names; replaces the default list.
    #[serde(default = "default_fields")]
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_LIST), inner(regex(pattern = schema::NAME))))]
    pub fields: Vec<String>,
    /// Added to `fields` (keeps the defaults).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_LIST), inner(regex(pattern = schema::NAME))))]
    pub additional_fields: Vec<String>,
    /// Names never redacted for a part they hold; replaces the default list.
    #[serde(default = "default_harmless")]
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_LIST), inner(regex(pattern = schema::NAME))))]
    pub harmless_fields: Vec<String>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_LIST), inner(regex(pattern = schema::NAME))))]
    pub additional_harmless_fields: Vec<String>,
    #[serde(default = "default_headers")]
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_LIST), inner(regex(pattern = shared::schema::HEADER_NAME_PATTERN))))]
    pub headers: Vec<String>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_LIST), inner(regex(pattern = shared::schema::HEADER_NAME_PATTERN))))]
    pub additional_headers: Vec<String>,
    #[serde(default = "default_true")]
    pub bearer_tokens: bool,
    #[serde(default = "default_true")]
    pub jwts: bool,
    #[serde(default = "default_true")]
    pub card_numbers: bool,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 32)))]
    pub patterns: Vec<PatternConfig>,
    /// 1 to 64 characters; no control characters, `"` or `\`.
    #[serde(default = "default_replacement")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r#"^[^\u0000-\u001f\u007f"\\]{1,64}$"#)))]
    pub replacement: String,
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            fields: default_fields(),
            additional_fields: vec![],
            harmless_fields: default_harmless(),
            additional_harmless_fields: vec![],
            headers: default_headers(),
            additional_headers: vec![],
            bearer_tokens: true,
            jwts: true,
            card_numbers: true,
            patterns: vec![],
            replacement: default_replacement(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 64)))]
    pub name: String,
    pub regex: String,
}

/// The rules phase 2 checks that JSON Schema can say and the derives cannot.
#[cfg(feature = "schema")]
mod schema {
    /// `MediaRange::parse`.
    pub const MEDIA_RANGE: &str =
        r"^\s*[A-Za-z0-9!#$&^_.+-]+/(?:\*|\*\+[A-Za-z0-9!#$&^_.+-]+|[A-Za-z0-9!#$&^_.+-]+)\s*$";
    /// `check_names`: a letter, digit or non-ASCII character somewhere (names are compared by
    /// those).
    pub const NAME: &str = r"[^\u0000-/:-@\[-`{-\u007f]";
}

/// A content-type allowlist entry: `type/subtype`, `type/*` or `type/*+suffix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaRange {
    Exact(String),
    AnySubtype(String),
    Suffix(String, String),
}

impl MediaRange {
    fn parse(s: &str) -> Result<MediaRange, String> {
        let lower = s.trim().to_ascii_lowercase();
        let (t, sub) = lower.split_once('/').ok_or_else(|| format!("{s:?} is not a media type (type/subtype)"))?;
        let token =
            |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
        if !token(t) {
            return Err(format!("{s:?}: bad type"));
        }
        if sub == "*" {
            return Ok(MediaRange::AnySubtype(t.to_string()));
        }
        if let Some(suffix) = sub.strip_prefix("*+") {
            if token(suffix) {
                return Ok(MediaRange::Suffix(t.to_string(), suffix.to_string()));
            }
            return Err(format!("{s:?}: bad suffix"));
        }
        if !token(sub) {
            return Err(format!("{s:?}: bad subtype (use type/subtype, type/* or type/*+suffix)"));
        }
        Ok(MediaRange::Exact(lower))
    }

    /// `essence` is the lowercased `type/subtype` of a content-type, parameters removed.
    pub fn matches(&self, essence: &str) -> bool {
        let (t, sub) = essence.split_once('/').unwrap_or((essence, ""));
        match self {
            MediaRange::Exact(e) => e == essence,
            MediaRange::AnySubtype(rt) => rt == t && !sub.is_empty(),
            MediaRange::Suffix(rt, suffix) => {
                rt == t && sub.rsplit_once('+').is_some_and(|(head, s)| !head.is_empty() && s == suffix)
            }
        }
    }
}

/// `Application/JSON; charset=utf-8` → `application/json`.
pub fn media_essence(content_type: &[u8]) -> String {
    let text = String::from_utf8_lossy(content_type);
    text.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// How a body is scanned for secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    /// XML, and HTML (the same tag and attribute scanner).
    Xml,
    /// `multipart/*`: parts by name, each part by its own content type.
    Multipart,
    /// Anything else; a text body that starts like JSON or markup is scanned as such too.
    Text,
}

pub fn body_kind(essence: &str) -> BodyKind {
    let (t, sub) = essence.split_once('/').unwrap_or((essence, ""));
    if essence == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else if sub == "json" || sub.ends_with("+json") {
        BodyKind::Json
    } else if sub == "xml" || sub.ends_with("+xml") || essence == "text/html" {
        BodyKind::Xml
    } else if t == "multipart" {
        BodyKind::Multipart
    } else {
        BodyKind::Text
    }
}

/// Which gRPC a body's content-type claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grpc {
    /// gRPC-Web (`application/grpc-web`, `+<codec>`, `-text`): the same binary messages, plus
    /// trailer frames (or base64 in `-text`), not walked: never captured.
    Web,
    /// gRPC's HTTP/2 framing: `application/grpc` or `application/grpc+<codec>` (`+proto`,
    /// `+json`): summarised.
    Framed,
}

/// Which gRPC a media type essence (lowercase, no parameters) is, if any.
pub fn grpc_essence(essence: &str) -> Option<Grpc> {
    if essence == "application/grpc" || essence.starts_with("application/grpc+") {
        Some(Grpc::Framed)
    } else if essence.starts_with("application/grpc-web") {
        Some(Grpc::Web)
    } else {
        None
    }
}

/// Which gRPC any element of a content-type value claims: Envoy joins repeated `content-type`
/// headers into one value (`text/plain,application/grpc`), and a server may act on any of
/// them, so each `,`-separated element counts (`Framed` over `Web`). A comma inside a quoted
/// parameter can only add a claim: a body wrongly taken for gRPC is not captured.
pub fn grpc_of(content_type: &[u8]) -> Option<Grpc> {
    content_type.split(|b| *b == b',').filter_map(|e| grpc_essence(&media_essence(e))).max()
}

/// A parameter of a content-type (`boundary` of `multipart/form-data; boundary="x"`), quotes
/// removed; the parameter name is case-insensitive.
pub fn media_param(content_type: &[u8], name: &str) -> Option<Vec<u8>> {
    for param in content_type.split(|b| *b == b';').skip(1) {
        let Some(eq) = param.iter().position(|b| *b == b'=') else { continue };
        if !param[..eq].trim_ascii().eq_ignore_ascii_case(name.as_bytes()) {
            continue;
        }
        let value = param[eq + 1..].trim_ascii();
        let value = match value.strip_prefix(b"\"") {
            Some(v) => v.strip_suffix(b"\"").unwrap_or(v),
            None => value,
        };
        return Some(value.to_vec());
    }
    None
}

/// Whether a `content-encoding` value (a list, `,`-separated, case-insensitive) says the body
/// is anything but the bytes themselves: any coding other than `identity`.
pub fn is_encoded(content_encoding: &[u8]) -> bool {
    content_encoding
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"))
}

/// Phase 2: checked and precomputed.
#[derive(Debug)]
pub struct Compiled {
    pub max_bytes: usize,
    pub capture_budget_bytes: usize,
    pub request_body: bool,
    pub response_body: bool,
    pub content_types: Vec<MediaRange>,
    pub grpc_frames: bool,
    pub paths: Vec<PathMatcher>,
    /// Uppercased.
    pub methods: Vec<String>,
    /// Sample when a 64-bit hash (or random value) is below this; `u64::MAX` with rate 1.
    pub sample_threshold: u64,
    pub sample_all: bool,
    pub sample_by_request_id: bool,
    pub log_headers: bool,
    pub redactor: Redactor,
    pub log_level: LogLevel,
    pub envoy_log: bool,
    pub filter_state_name: Option<String>,
}

fn check_names(list: &[String], field: &str) -> Result<Vec<String>, ConfigError> {
    if list.len() > MAX_LIST {
        return Err(ConfigError::new(field, format!("at most {MAX_LIST} entries")));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, name) in list.iter().enumerate() {
        let n = name.trim().to_ascii_lowercase();
        if n.is_empty() || n.len() > MAX_NAME_LEN || n.bytes().any(|b| b.is_ascii_control()) {
            return Err(ConfigError::new(
                format!("{field}[{i}]"),
                format!("{name:?}: want 1 to {MAX_NAME_LEN} characters, no control characters"),
            ));
        }
        // Names are compared normalised (letters and digits): one without any matches nothing.
        if crate::names::normalize(n.as_bytes()).is_empty() {
            return Err(ConfigError::new(format!("{field}[{i}]"), format!("{name:?}: want a letter or digit")));
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

fn check_headers(list: &[String], field: &str) -> Result<Vec<String>, ConfigError> {
    if list.len() > MAX_LIST {
        return Err(ConfigError::new(field, format!("at most {MAX_LIST} entries")));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, name) in list.iter().enumerate() {
        let n = normalize_header_name(name).map_err(|m| ConfigError::new(format!("{field}[{i}]"), m))?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

pub fn parse_log_level(s: &str) -> Option<LogLevel> {
    Some(match s {
        "trace" => LogLevel::Trace,
        "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "warn" | "warning" => LogLevel::Warn,
        "error" => LogLevel::Error,
        "critical" => LogLevel::Critical,
        _ => return None,
    })
}

impl Config {
    pub fn compile(self) -> Result<Compiled, ConfigError> {
        if self.max_bytes == 0 || self.max_bytes > MAX_MAX_BYTES {
            return Err(ConfigError::new("max_bytes", format!("{}: want 1 to {MAX_MAX_BYTES}", self.max_bytes)));
        }
        if self.capture_budget_bytes < self.max_bytes || self.capture_budget_bytes > MAX_CAPTURE_BUDGET_BYTES {
            return Err(ConfigError::new(
                "capture_budget_bytes",
                format!(
                    "{}: want max_bytes ({}) to {MAX_CAPTURE_BUDGET_BYTES}",
                    self.capture_budget_bytes, self.max_bytes
                ),
            ));
        }
        if self.content_types.len() > MAX_LIST {
            return Err(ConfigError::new("content_types", format!("at most {MAX_LIST} entries")));
        }
        let mut content_types = Vec::with_capacity(self.content_types.len());
        for (i, c) in self.content_types.iter().enumerate() {
            content_types.push(MediaRange::parse(c).map_err(|m| ConfigError::new(format!("content_types[{i}]"), m))?);
        }
        let mut paths = Vec::with_capacity(self.paths.len());
        for (i, p) in self.paths.iter().enumerate() {
            paths.push(p.compile().map_err(|e| e.within(&format!("paths[{i}]")))?);
        }
        let mut methods = Vec::with_capacity(self.methods.len());
        for (i, m) in self.methods.iter().enumerate() {
            let ok = !m.is_empty() && m.len() <= 32 && m.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-');
            if !ok {
                return Err(ConfigError::new(format!("methods[{i}]"), format!("{m:?} is not an HTTP method")));
            }
            methods.push(m.to_ascii_uppercase());
        }
        if !self.sample_rate.is_finite() || !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(ConfigError::new("sample_rate", format!("{}: want a number from 0 to 1", self.sample_rate)));
        }
        let sample_all = self.sample_rate >= 1.0;
        // u64::MAX as f64 rounds up to 2^64; the cast saturates, which is what we want.
        let sample_threshold = (self.sample_rate * u64::MAX as f64) as u64;

        let log_level = parse_log_level(&self.log_level).ok_or_else(|| {
            ConfigError::new(
                "log_level",
                format!("{:?}: want trace, debug, info, warn, error or critical", self.log_level),
            )
        })?;
        if let Some(name) = &self.filter_state_name {
            let ok = !name.is_empty()
                && name.len() <= 128
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            if !ok {
                return Err(ConfigError::new(
                    "filter_state_name",
                    format!("{name:?}: want 1 to 128 of [A-Za-z0-9_.-], or null to disable"),
                ));
            }
        }
        let redactor = self.redact.compile().map_err(|e| e.within("redact"))?;
        Ok(Compiled {
            max_bytes: self.max_bytes,
            capture_budget_bytes: self.capture_budget_bytes,
            request_body: self.request_body,
            response_body: self.response_body,
            content_types,
            grpc_frames: self.grpc_frames,
            paths,
            methods,
            sample_threshold,
            sample_all,
            sample_by_request_id: self.sample_by_request_id,
            log_headers: self.log_headers,
            redactor,
            log_level,
            envoy_log: self.envoy_log,
            filter_state_name: self.filter_state_name,
        })
    }
}

impl RedactConfig {
    pub fn compile(self) -> Result<Redactor, ConfigError> {
        let mut fields = check_names(&self.fields, "fields")?;
        for f in check_names(&self.additional_fields, "additional_fields")? {
            if !fields.contains(&f) {
                fields.push(f);
            }
        }
        let mut harmless = check_names(&self.harmless_fields, "harmless_fields")?;
        harmless.extend(check_names(&self.additional_harmless_fields, "additional_harmless_fields")?);
        let mut headers = check_headers(&self.headers, "headers")?;
        for h in check_headers(&self.additional_headers, "additional_headers")? {
            if !headers.contains(&h) {
                headers.push(h);
            }
        }
        // The replacement lands inside JSON strings (a key's value, a value the text pass finds
        // in a string): a quote, a backslash or a control character there would end or break
        // the string and the line would no longer be JSON. Empty, it would also read as
        // "already replaced" everywhere (`is_replacement`) and redact nothing in text.
        if self.replacement.is_empty()
            || self.replacement.len() > 64
            || self.replacement.bytes().any(|b| b.is_ascii_control() || b == b'"' || b == b'\\')
        {
            return Err(ConfigError::new(
                "replacement",
                "1 to 64 characters; no control characters, `\"` or `\\` (it is written inside JSON strings)",
            ));
        }
        if self.patterns.len() > 32 {
            return Err(ConfigError::new("patterns", "at most 32 patterns"));
        }
        let mut patterns = Vec::new();
        for (i, p) in self.patterns.iter().enumerate() {
            if p.name.is_empty() || p.name.len() > 64 {
                return Err(ConfigError::new(format!("patterns[{i}].name"), "want 1 to 64 characters"));
            }
            let compiled =
                Pattern::compile(&p.name, &p.regex).map_err(|m| ConfigError::new(format!("patterns[{i}].regex"), m))?;
            patterns.push(compiled);
        }
        let field_rule = NameRule::new(&fields, &harmless);
        // Header names: the same rule, with the header list as more exact names.
        let header_rule = NameRule::new(&[fields, headers].concat(), &harmless);
        Redactor::new(
            field_rule,
            header_rule,
            self.bearer_tokens,
            self.jwts,
            self.card_numbers,
            patterns,
            self.replacement,
        )
        .map_err(|m| ConfigError::new("", m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<Compiled, ConfigError> {
        shared::config::load(Some(json.as_bytes()), Config::compile)
    }

    #[test]
    fn defaults() {
        let c = shared::config::load(None, Config::compile).unwrap();
        assert_eq!(c.max_bytes, 4096);
        assert!(c.sample_all && c.request_body && c.response_body && c.envoy_log && !c.log_headers);
        assert_eq!(c.filter_state_name.as_deref(), Some("body_log"));
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.content_types.len(), DEFAULT_CONTENT_TYPES.len());
        let _ = Config::default();
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (r#"{"max_bytes":0}"#, "max_bytes"),
            (r#"{"max_bytes":2000000}"#, "max_bytes"),
            (r#"{"max_bytes":-1}"#, "max_bytes"),
            (r#"{"sample_rate":1.5}"#, "sample_rate"),
            (r#"{"sample_rate":-0.1}"#, "sample_rate"),
            (r#"{"content_types":["json"]}"#, "content_types[0]"),
            (r#"{"content_types":["application/json","a/b c"]}"#, "content_types[1]"),
            (r#"{"paths":[{"prefix":"api"}]}"#, "paths[0].prefix"),
            (r#"{"paths":[{"prefix":"/a"},{"route_name":""}]}"#, "paths[1].route_name"),
            (r#"{"paths":[{"route_name":"a","safe_regex":{"regex":"/a"}}]}"#, "paths[0]"),
            (r#"{"methods":["GET","P OST"]}"#, "methods[1]"),
            (r#"{"log_level":"loud"}"#, "log_level"),
            (r#"{"filter_state_name":"a b"}"#, "filter_state_name"),
            (r#"{"redact":{"fields":["ok",""]}}"#, "redact.fields[1]"),
            (r#"{"redact":{"headers":["bad header"]}}"#, "redact.headers[0]"),
            (r#"{"redact":{"patterns":[{"name":"x","regex":"("}]}}"#, "redact.patterns[0].regex"),
            (r#"{"redact":{"patterns":[{"name":"x","regex":""}]}}"#, "redact.patterns[0].regex"),
            (r#"{"redact":{"patterns":[{"name":"x","regex":"a","flags":1}]}}"#, "redact.patterns[0].flags"),
            (r#"{"redact":{"replacement":"a\nb"}}"#, "redact.replacement"),
            (r#"{"redact":{"replacement":"a\"b"}}"#, "redact.replacement"),
            (r#"{"redact":{"replacement":"a\\b"}}"#, "redact.replacement"),
            (r#"{"redact":{"replacement":""}}"#, "redact.replacement"),
            (r#"{"max_byte":10}"#, "max_byte"),
            (r#"{"max_bytes":8192,"capture_budget_bytes":4096}"#, "capture_budget_bytes"),
            (r#"{"capture_budget_bytes":1073741824}"#, "capture_budget_bytes"),
            (r#"{"redact":{"harmless_fields":[""]}}"#, "redact.harmless_fields[0]"),
            (r#"{"redact":{"additional_fields":["ok","--"]}}"#, "redact.additional_fields[1]"),
            (r#"{"redact":{"additional_harmless_fields":["a\u0001"]}}"#, "redact.additional_harmless_fields[0]"),
        ];
        for (json, field) in cases {
            let e = load(json).err().unwrap_or_else(|| panic!("{json} accepted"));
            assert_eq!(e.field, field, "{json}: {e}");
        }
    }

    #[test]
    fn media_ranges() {
        let r = |s: &str| MediaRange::parse(s).unwrap();
        assert!(r("application/json").matches("application/json"));
        assert!(!r("application/json").matches("application/jsonx"));
        assert!(r("text/*").matches("text/plain") && !r("text/*").matches("text") && !r("text/*").matches("image/png"));
        assert!(r("application/*+json").matches("application/problem+json"));
        assert!(
            !r("application/*+json").matches("application/json") && !r("application/*+json").matches("text/a+json")
        );
        assert_eq!(media_essence(b"Application/JSON ; charset=UTF-8"), "application/json");
        assert_eq!(media_essence(b"\xff/x"), "\u{fffd}/x");
        assert_eq!(body_kind("application/x-www-form-urlencoded"), BodyKind::Form);
        assert_eq!(body_kind("application/vnd.api+json"), BodyKind::Json);
        assert_eq!(body_kind("text/plain"), BodyKind::Text);
        assert_eq!(body_kind("application/soap+xml"), BodyKind::Xml);
        assert_eq!(body_kind("text/xml"), BodyKind::Xml);
        assert_eq!(body_kind("text/html"), BodyKind::Xml);
        assert_eq!(body_kind("multipart/form-data"), BodyKind::Multipart);
        assert_eq!(media_param(b"multipart/form-data; Boundary=\"a b\"", "boundary"), Some(b"a b".to_vec()));
        assert_eq!(media_param(b"multipart/form-data;boundary=x;y=1", "boundary"), Some(b"x".to_vec()));
        assert_eq!(media_param(b"multipart/form-data", "boundary"), None);
        for (value, encoded) in [
            ("gzip", true),
            ("identity", false),
            ("", false),
            (" Identity ", false),
            ("identity, gzip", true),
            ("br", true),
            ("x-gzip", true),
            (",", false),
        ] {
            assert_eq!(is_encoded(value.as_bytes()), encoded, "{value:?}");
        }
    }

    #[test]
    fn sampling_threshold_and_null_filter_state() {
        let c = load(r#"{"sample_rate":0.25,"filter_state_name":null,"methods":["post"]}"#).unwrap();
        assert!(!c.sample_all);
        let expected = u64::MAX / 4;
        assert!(c.sample_threshold.abs_diff(expected) < 1 << 12, "{}", c.sample_threshold);
        assert_eq!(c.filter_state_name, None);
        assert_eq!(c.methods, vec!["POST"]);
    }
}
