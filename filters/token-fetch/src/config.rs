//! Configuration: the serde shape (phase 1) and its semantic validation into [`Compiled`]
//! (phase 2). Field names follow Envoy's credential injector (`oauth2.token_endpoint {cluster,
//! uri, timeout}`, `client_credentials {client_id, client_secret, auth_type}`, `scopes`,
//! `endpoint_params`, `overwrite`, `allow_request_without_credential`).
//!
//! The token request (headers and body) is built here once: the request path and the timer
//! only send it.

use serde::Deserialize;
use shared::config::{ConfigError, Duration, Secret};
use shared::fetch::FetchPolicy;
use shared::hash::{keyed_fingerprint, HashKey};
use shared::headers::{normalize_header_name, validate_header_value};
use std::fmt;

pub const DEFAULT_HEADER_NAME: &str = "authorization";
pub const DEFAULT_HEADER_PREFIX: &str = "Bearer ";
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const DEFAULT_PENDING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Upper bound on how long a request may be held waiting for the first token.
const MAX_PENDING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
const DEFAULT_BACKOFF_BASE: std::time::Duration = std::time::Duration::from_secs(1);
const DEFAULT_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(30);
pub const DEFAULT_REFRESH_FRACTION: f64 = 0.8;
const MAX_FIELD_LEN: usize = 4096;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "schema",
    schemars(title = "token-fetch configuration", transform = shared::schema::exactly_one_of(schema::SOURCE))
)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Source 1: OAuth2 client credentials grant.
    #[serde(default)]
    pub oauth2: Option<OAuth2>,
    /// Source 2: a plain GET whose answer carries the token in a header or a JSON field.
    #[serde(default)]
    pub http_get: Option<HttpGet>,
    /// Request header the token goes into (default `authorization`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(transform = schema::header_name))]
    pub header_name: Option<String>,
    /// Written before the token (default `Bearer `; `""` for none).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^(?:[!-~][ -~]*)?$"), length(max = MAX_FIELD_LEN)))]
    pub header_prefix: Option<String>,
    /// Replace a value the request already carries (default false: keep it, as Envoy's
    /// credential injector does).
    #[serde(default)]
    pub overwrite: bool,
    /// Also set the header on responses (the classic example's behaviour). Default false.
    #[serde(default)]
    pub inject_on_response: bool,
    /// With no valid token (after waiting `pending_request_timeout`): pass the request on
    /// without the header (true) instead of answering 503 (false, the default).
    #[serde(default)]
    pub allow_request_without_credential: bool,
    /// How long a request waits for a token when none is valid (default 5 s; "0s": no wait).
    #[serde(default)]
    pub pending_request_timeout: Option<Duration>,
    /// Refresh at this fraction of the token's lifetime, in (0, 1] (default 0.8).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(max = 1), extend("exclusiveMinimum" = 0)))]
    pub refresh_fraction: Option<f64>,
    /// Backoff between failed fetches: base doubling up to max, with jitter.
    #[serde(default)]
    pub retry_back_off: Option<BackOff>,
}

/// Envoy's `config.core.v3.HttpUri`: the cluster is what is called; the URI gives `:authority`
/// and `:path`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HttpUri {
    /// The Envoy cluster called.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"\S")))]
    pub cluster: String,
    /// `http(s)://host[:port]/path?query`: gives `:authority` and `:path`.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^https?://[!-.0->A-~]+(?:[/?][!-\x22$-~]*)?$")))]
    pub uri: String,
    #[serde(default)]
    pub timeout: Option<Duration>,
}

#[derive(Clone, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct OAuth2 {
    pub token_endpoint: HttpUri,
    pub client_credentials: ClientCredentials,
    /// Visible ASCII without space, `"` or `\` (RFC 6749 §3.3).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(inner(regex(pattern = r"^[!#-\[\]-~]+$"))))]
    pub scopes: Vec<String>,
    /// Extra form parameters of the token request (e.g. `audience`).
    #[serde(default)]
    pub endpoint_params: Vec<Param>,
}

impl fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2")
            .field("token_endpoint", &self.token_endpoint)
            .field("client_id", &self.client_credentials.client_id)
            .field("client_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ClientCredentials {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_FIELD_LEN)))]
    pub client_id: String,
    /// A string, or a data source: `{"environment_variable": "NAME"}` reads it from the VM's
    /// environment at configure time, so it is not in the configuration or `/config_dump`.
    pub client_secret: Secret,
    #[serde(default)]
    pub auth_type: AuthType,
}

/// Envoy's `OAuth2.AuthType`: how the client authenticates to the token endpoint.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum AuthType {
    /// `Authorization: Basic` (RFC 6749 §2.3.1, the recommended way).
    #[default]
    #[serde(rename = "BASIC_AUTH")]
    BasicAuth,
    /// `client_id` and `client_secret` in the form body.
    #[serde(rename = "URL_ENCODED_BODY")]
    UrlEncodedBody,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Param {
    /// Not one the filter sets itself (`grant_type`, `scope`, `client_id`, `client_secret`).
    #[cfg_attr(feature = "schema", schemars(length(min = 1), extend("not" = { "enum": ["grant_type", "scope", "client_id", "client_secret"] })))]
    pub name: String,
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_FIELD_LEN)))]
    pub value: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(transform = shared::schema::exactly_one_of(schema::TOKEN_PLACE)))]
#[serde(deny_unknown_fields)]
pub struct HttpGet {
    pub token_endpoint: HttpUri,
    /// The token is this response header's value, as is.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = shared::schema::HEADER_NAME_PATTERN)))]
    pub token_header: Option<String>,
    /// The token is this top-level string field of a JSON response body.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub token_json_field: Option<String>,
    /// How long a fetched token is used (the response carries no expiry).
    pub token_lifetime: Duration,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BackOff {
    #[serde(default)]
    pub base_interval: Option<Duration>,
    #[serde(default)]
    pub max_interval: Option<Duration>,
}

/// The rules phase 2 checks that JSON Schema can say and the derives cannot.
#[cfg(feature = "schema")]
mod schema {
    use shared::schema::{any_case_names_pattern, json, HEADER_NAME_PATTERN};

    pub const SOURCE: &[&str] = &["oauth2", "http_get"];
    pub const TOKEN_PLACE: &[&str] = &["token_header", "token_json_field"];

    /// A header name, not one that frames or routes the message.
    pub fn header_name(schema: &mut schemars::Schema) {
        if let Some(object) = schema.as_object_mut() {
            object.insert("pattern".into(), HEADER_NAME_PATTERN.into());
            let framing = any_case_names_pattern(shared::headers::FRAMING_AND_CONNECTION_HEADERS);
            object.insert("not".into(), json!({ "type": "string", "pattern": framing }));
        }
    }
}

/// Where the token is in the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Extract {
    /// OAuth2 JSON: `access_token`, `expires_in`, `token_type`.
    OAuth2,
    Header(String),
    JsonField(String),
}

/// The longest token injected; a longer one fails the fetch.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The validated configuration. `Debug` never shows the client secret.
#[derive(Clone, PartialEq)]
pub struct Compiled {
    pub cluster: String,
    /// `:method`, `:path`, `:authority` and the rest; may hold the client secret (Basic).
    pub request_headers: Vec<(String, String)>,
    pub request_body: Option<Vec<u8>>,
    pub extract: Extract,
    /// `http_get.token_lifetime`; OAuth2 uses `expires_in` (else [`OAUTH2_DEFAULT_LIFETIME`]).
    pub fixed_lifetime: Option<std::time::Duration>,
    pub header_name: String,
    pub header_prefix: String,
    pub overwrite: bool,
    pub inject_on_response: bool,
    pub allow_request_without_credential: bool,
    pub pending_request_timeout: std::time::Duration,
    pub policy: FetchPolicy,
    /// OAuth2's `client_id` (not a secret, RFC 6749 §2.2), for the log.
    pub client_id: Option<String>,
}

/// OAuth2 answers without `expires_in` (RFC 6749 makes it optional) are used this long.
pub const OAUTH2_DEFAULT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(300);

impl fmt::Debug for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compiled")
            .field("cluster", &self.cluster)
            .field("extract", &self.extract)
            .field("header_name", &self.header_name)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn err(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(field, message)
}

/// `http://host[:port]/path?query` → (`:authority`, `:path`).
fn split_uri(uri: &str) -> Result<(String, String), String> {
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
        .ok_or_else(|| format!("{uri:?} must start with http:// or https://"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{uri:?} has no host"));
    }
    if authority.contains('@') {
        return Err(format!("{uri:?}: credentials in the URI are not supported"));
    }
    if authority.bytes().chain(path.bytes()).any(|b| !(b'!'..=b'~').contains(&b)) || path.contains('#') {
        return Err(format!("{uri:?} contains a character not allowed in a URI (space, control, non-ASCII, #)"));
    }
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
    Ok((authority.to_string(), path))
}

fn compile_uri(u: &HttpUri, field: &str) -> Result<(String, String, std::time::Duration), ConfigError> {
    if u.cluster.trim().is_empty() {
        return Err(err(&format!("{field}.cluster"), "must name an Envoy cluster"));
    }
    let (authority, path) = split_uri(&u.uri).map_err(|m| err(&format!("{field}.uri"), m))?;
    let timeout = u.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
    if timeout.is_zero() || timeout > std::time::Duration::from_secs(60) {
        return Err(err(&format!("{field}.timeout"), "must be more than 0s and at most 60s"));
    }
    Ok((authority, path, timeout))
}

/// RFC 3986 unreserved characters stay; everything else is percent-encoded
/// (`application/x-www-form-urlencoded`, with `%20` for space, which every server accepts).
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn check_len(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.len() > MAX_FIELD_LEN {
        return Err(err(field, format!("longer than {MAX_FIELD_LEN} bytes")));
    }
    Ok(())
}

impl Config {
    pub fn compile(self) -> Result<Compiled, ConfigError> {
        let header_name = match &self.header_name {
            Some(n) => normalize_header_name(n).map_err(|m| err("header_name", m))?,
            None => DEFAULT_HEADER_NAME.to_string(),
        };
        // A token may not go into a header that frames the message or routes it.
        if shared::headers::is_framing_or_connection_header(&header_name) {
            return Err(err("header_name", format!("{header_name:?} frames or routes the message; pick another")));
        }
        let header_prefix = self.header_prefix.clone().unwrap_or_else(|| DEFAULT_HEADER_PREFIX.to_string());
        if header_prefix.bytes().any(|b| !(b' '..=b'~').contains(&b)) || header_prefix.starts_with([' ', '\t']) {
            return Err(err("header_prefix", "must be visible ASCII (a trailing space is fine), no leading space"));
        }
        check_len("header_prefix", &header_prefix)?;

        let pending_request_timeout = self.pending_request_timeout.map_or(DEFAULT_PENDING_TIMEOUT, |d| d.0);
        if pending_request_timeout > MAX_PENDING_TIMEOUT {
            return Err(err("pending_request_timeout", "at most 60s: requests are held in memory while waiting"));
        }
        let refresh_fraction = self.refresh_fraction.unwrap_or(DEFAULT_REFRESH_FRACTION);
        if !(refresh_fraction > 0.0 && refresh_fraction <= 1.0) {
            return Err(err("refresh_fraction", "must be more than 0 and at most 1 (e.g. 0.8)"));
        }
        let base = self.retry_back_off.and_then(|b| b.base_interval).map_or(DEFAULT_BACKOFF_BASE, |d| d.0);
        let max = self.retry_back_off.and_then(|b| b.max_interval).map_or(DEFAULT_BACKOFF_MAX, |d| d.0);
        if base < std::time::Duration::from_millis(100) {
            return Err(err("retry_back_off.base_interval", "must be at least 0.1s"));
        }
        if max < base || max > std::time::Duration::from_secs(3600) {
            return Err(err("retry_back_off.max_interval", "must be at least base_interval and at most 3600s"));
        }

        let (cluster, request_headers, request_body, extract, fixed_lifetime, timeout, client_id) =
            match (&self.oauth2, &self.http_get) {
                (Some(_), Some(_)) => {
                    return Err(err("http_get", "set exactly one token source: `oauth2` or `http_get`, not both"))
                }
                (None, None) => return Err(err("", "set a token source: `oauth2` or `http_get`")),
                (Some(o), None) => {
                    let (authority, path, timeout) = compile_uri(&o.token_endpoint, "oauth2.token_endpoint")?;
                    let cc = &o.client_credentials;
                    if cc.client_id.is_empty() {
                        return Err(err("oauth2.client_credentials.client_id", "must not be empty"));
                    }
                    let client_secret = cc.client_secret.read("oauth2.client_credentials.client_secret")?;
                    if client_secret.is_empty() {
                        return Err(err("oauth2.client_credentials.client_secret", "must not be empty"));
                    }
                    check_len("oauth2.client_credentials.client_id", &cc.client_id)?;
                    check_len("oauth2.client_credentials.client_secret", &client_secret)?;
                    let mut body = String::from("grant_type=client_credentials");
                    for (i, s) in o.scopes.iter().enumerate() {
                        if s.is_empty() || s.bytes().any(|b| !(b'!'..=b'~').contains(&b) || b == b'"' || b == b'\\') {
                            return Err(err(
                                &format!("oauth2.scopes[{i}]"),
                                "a scope is visible ASCII without space, \" or \\ (RFC 6749 §3.3)",
                            ));
                        }
                    }
                    if !o.scopes.is_empty() {
                        body.push_str("&scope=");
                        body.push_str(&form_encode(&o.scopes.join(" ")));
                    }
                    for (i, p) in o.endpoint_params.iter().enumerate() {
                        let field = format!("oauth2.endpoint_params[{i}]");
                        if p.name.is_empty() {
                            return Err(err(&format!("{field}.name"), "must not be empty"));
                        }
                        let reserved = ["grant_type", "scope", "client_id", "client_secret"];
                        if reserved.contains(&p.name.as_str()) {
                            return Err(err(&format!("{field}.name"), format!("{:?} is set by the filter", p.name)));
                        }
                        check_len(&format!("{field}.value"), &p.value)?;
                        body.push_str(&format!("&{}={}", form_encode(&p.name), form_encode(&p.value)));
                    }
                    let mut headers = vec![
                        (":method".to_string(), "POST".to_string()),
                        (":path".to_string(), path),
                        (":authority".to_string(), authority),
                        ("content-type".to_string(), "application/x-www-form-urlencoded".to_string()),
                        ("accept".to_string(), "application/json".to_string()),
                    ];
                    match cc.auth_type {
                        AuthType::BasicAuth => {
                            let pair = format!("{}:{}", form_encode(&cc.client_id), form_encode(&client_secret));
                            headers.push((
                                "authorization".to_string(),
                                format!("Basic {}", shared::base64::encode(pair.as_bytes())),
                            ));
                        }
                        AuthType::UrlEncodedBody => {
                            body.push_str(&format!(
                                "&client_id={}&client_secret={}",
                                form_encode(&cc.client_id),
                                form_encode(&client_secret)
                            ));
                        }
                    }
                    (
                        o.token_endpoint.cluster.clone(),
                        headers,
                        Some(body.into_bytes()),
                        Extract::OAuth2,
                        None,
                        timeout,
                        Some(cc.client_id.clone()),
                    )
                }
                (None, Some(g)) => {
                    let (authority, path, timeout) = compile_uri(&g.token_endpoint, "http_get.token_endpoint")?;
                    let extract = match (&g.token_header, &g.token_json_field) {
                        (Some(_), Some(_)) => {
                            return Err(err("http_get.token_json_field", "set one of token_header or token_json_field"))
                        }
                        (None, None) => {
                            return Err(err("http_get", "set token_header or token_json_field: where the token is"))
                        }
                        (Some(h), None) => {
                            Extract::Header(normalize_header_name(h).map_err(|m| err("http_get.token_header", m))?)
                        }
                        (None, Some(f)) if f.is_empty() => {
                            return Err(err("http_get.token_json_field", "must not be empty"))
                        }
                        (None, Some(f)) => Extract::JsonField(f.clone()),
                    };
                    if g.token_lifetime.0 < std::time::Duration::from_secs(1) {
                        return Err(err("http_get.token_lifetime", "must be at least 1s"));
                    }
                    let headers = vec![
                        (":method".to_string(), "GET".to_string()),
                        (":path".to_string(), path),
                        (":authority".to_string(), authority),
                    ];
                    (g.token_endpoint.cluster.clone(), headers, None, extract, Some(g.token_lifetime.0), timeout, None)
                }
            };
        Ok(Compiled {
            cluster,
            request_headers,
            request_body,
            extract,
            fixed_lifetime,
            header_name,
            header_prefix,
            overwrite: self.overwrite,
            inject_on_response: self.inject_on_response,
            allow_request_without_credential: self.allow_request_without_credential,
            pending_request_timeout,
            policy: FetchPolicy { refresh_fraction, backoff_base: base, backoff_max: max, fetch_timeout: timeout },
            client_id,
        })
    }
}

impl Compiled {
    /// This configuration's fingerprint under `key` (the proxy's seed): SipHash-2-4 of
    /// everything that decides which token is fetched and where it goes — the cluster, the
    /// token request whole (endpoint, client id and secret, scopes, parameters), where the
    /// token is found, its header and prefix. It names the shared-data keys, so a changed
    /// configuration (a rotated secret included) never reads the old one's token, and it is
    /// logged, to tell which configuration a line is about. Without the key it tells nothing
    /// about the secret: it is no way to test guesses offline. Stable across the workers and
    /// reloads of one Envoy; another Envoy (another seed) shows another value.
    pub fn fingerprint(&self, key: &HashKey) -> String {
        let mut parts: Vec<&[u8]> = vec![self.cluster.as_bytes()];
        for (name, value) in &self.request_headers {
            parts.extend([name.as_bytes(), value.as_bytes()]);
        }
        let extract = format!("{:?}", self.extract);
        let lifetime = format!("{:?}", self.fixed_lifetime);
        match &self.request_body {
            Some(body) => parts.extend([b"body".as_slice(), body]),
            None => parts.push(b"no body"),
        }
        parts.extend([
            extract.as_bytes(),
            lifetime.as_bytes(),
            self.header_name.as_bytes(),
            self.header_prefix.as_bytes(),
        ]);
        keyed_fingerprint(key, &parts)
    }

    /// Whether `value` is a header value [`Compiled::header_value`] could have made: this
    /// prefix, then a token it accepts. Checked on what is read back from shared data, which
    /// any plugin of the VM can write.
    pub fn is_injectable(&self, value: &[u8]) -> bool {
        std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.strip_prefix(self.header_prefix.as_str()))
            .is_some_and(|token| self.header_value(token).is_ok())
    }

    /// The header value for a token, checked: a token that could split or end a header is
    /// refused (the fetch counts as failed), never injected.
    pub fn header_value(&self, token: &str) -> Result<String, String> {
        if token.is_empty() {
            return Err("the token is empty".into());
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err("the token is longer than 16 KiB".into());
        }
        let value = format!("{}{}", self.header_prefix, token);
        validate_header_value(&value).map_err(|m| format!("the token is not a valid header value: {m}"))?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<Compiled, ConfigError> {
        shared::config::load(Some(json.as_bytes()), Config::compile)
    }

    const OAUTH: &str = r#"{"oauth2":{"token_endpoint":{"cluster":"auth","uri":"http://auth.local:8080/oauth/token?x=1","timeout":"2s"},
        "client_credentials":{"client_id":"svc a","client_secret":"s3cr:t"},"scopes":["read","write"],
        "endpoint_params":[{"name":"audience","value":"https://api"}]}}"#;

    #[test]
    fn client_secret_as_a_data_source() {
        let inline =
            load(&OAUTH.replace(r#""client_secret":"s3cr:t""#, r#""client_secret":{"inline_string":"s3cr:t"}"#));
        assert_eq!(inline.unwrap().request_headers, load(OAUTH).unwrap().request_headers);
        // An unset variable refuses the configuration, naming the field and the variable.
        let e = load(&OAUTH.replace(
            r#""client_secret":"s3cr:t""#,
            r#""client_secret":{"environment_variable":"TOKEN_FETCH_TEST_UNSET_VARIABLE"}"#,
        ))
        .unwrap_err();
        assert_eq!(e.field, "oauth2.client_credentials.client_secret.environment_variable");
        assert!(e.message.contains("TOKEN_FETCH_TEST_UNSET_VARIABLE"), "{e}");
        let e = load(&OAUTH.replace(r#""client_secret":"s3cr:t""#, r#""client_secret":{"filename":"/etc/x"}"#))
            .unwrap_err();
        assert!(e.field.starts_with("oauth2.client_credentials.client_secret"), "{e}");
        // An empty secret is refused in either form (the schema's `minLength` on both).
        for empty in [r#""client_secret":"""#, r#""client_secret":{"inline_string":""}"#] {
            let e = load(&OAUTH.replace(r#""client_secret":"s3cr:t""#, empty)).unwrap_err();
            assert_eq!(e.field, "oauth2.client_credentials.client_secret", "{e}");
            assert!(e.message.contains("must not be empty"), "{e}");
        }
    }

    #[test]
    fn oauth2_request_is_built_once_with_basic_auth() {
        let c = load(OAUTH).unwrap();
        assert_eq!(c.cluster, "auth");
        let h = |n: &str| c.request_headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(h(":method").as_deref(), Some("POST"));
        assert_eq!(h(":path").as_deref(), Some("/oauth/token?x=1"));
        assert_eq!(h(":authority").as_deref(), Some("auth.local:8080"));
        assert_eq!(h("authorization").as_deref(), Some("Basic c3ZjJTIwYTpzM2NyJTNBdA=="));
        let body = String::from_utf8(c.request_body.clone().unwrap()).unwrap();
        assert_eq!(body, "grant_type=client_credentials&scope=read%20write&audience=https%3A%2F%2Fapi");
        assert_eq!(c.policy.fetch_timeout, std::time::Duration::from_secs(2));
        assert_eq!(c.policy.refresh_fraction, 0.8);
        assert!(!format!("{c:?}").contains("s3cr"), "Debug never shows the secret");
    }

    #[test]
    fn oauth2_secret_in_body_when_asked() {
        let c = load(
            &OAUTH.replace(r#""client_secret":"s3cr:t""#, r#""client_secret":"s3cr:t","auth_type":"URL_ENCODED_BODY""#),
        )
        .unwrap();
        assert!(!c.request_headers.iter().any(|(k, _)| k == "authorization"));
        let body = String::from_utf8(c.request_body.unwrap()).unwrap();
        assert!(body.ends_with("&client_id=svc%20a&client_secret=s3cr%3At"), "{body}");
    }

    #[test]
    fn http_get_source() {
        let c = load(r#"{"http_get":{"token_endpoint":{"cluster":"t","uri":"http://t/auth"},"token_header":"X-Token","token_lifetime":"60s"},"header_prefix":""}"#).unwrap();
        assert_eq!(c.extract, Extract::Header("x-token".into()));
        assert_eq!(c.fixed_lifetime, Some(std::time::Duration::from_secs(60)));
        assert_eq!(c.request_body, None);
        assert_eq!(c.header_value("abc").unwrap(), "abc");
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("{}", ""),
            (
                r#"{"oauth2":{"token_endpoint":{"cluster":"","uri":"http://a/"},"client_credentials":{"client_id":"a","client_secret":"b"}}}"#,
                "oauth2.token_endpoint.cluster",
            ),
            (
                r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"ftp://a/"},"client_credentials":{"client_id":"a","client_secret":"b"}}}"#,
                "oauth2.token_endpoint.uri",
            ),
            (
                r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://a/","timeout":"0s"},"client_credentials":{"client_id":"a","client_secret":"b"}}}"#,
                "oauth2.token_endpoint.timeout",
            ),
            (
                r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"client_credentials":{"client_id":"a","client_secret":""}}}"#,
                "oauth2.client_credentials.client_secret",
            ),
            (
                r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"client_credentials":{"client_id":"a","client_secret":"b","auth_type":"DIGEST"}}}"#,
                "oauth2.client_credentials.auth_type",
            ),
            (
                r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"client_credentials":{"client_id":"a","client_secret":"b"},"scopes":["a b"]}}"#,
                "oauth2.scopes[0]",
            ),
            (
                r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"client_credentials":{"client_id":"a","client_secret":"b"},"endpoint_params":[{"name":"scope","value":"x"}]}}"#,
                "oauth2.endpoint_params[0].name",
            ),
            (
                r#"{"oauth2":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"client_credentials":{"client_id":"a","client_secret":"b","extra":1}}}"#,
                "oauth2.client_credentials.extra",
            ),
            (r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"token_lifetime":"60s"}}"#, "http_get"),
            (
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"token_header":"a b","token_lifetime":"60s"}}"#,
                "http_get.token_header",
            ),
            (
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"token_header":"x","token_lifetime":"0.5s"}}"#,
                "http_get.token_lifetime",
            ),
            (
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"token_header":"x","token_lifetime":"60"}}"#,
                "http_get.token_lifetime",
            ),
            (
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"token_header":"x","token_lifetime":"60s"},"header_name":"content-length"}"#,
                "header_name",
            ),
            (
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"token_header":"x","token_lifetime":"60s"},"header_prefix":"Bearer\n"}"#,
                "header_prefix",
            ),
            (
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"token_header":"x","token_lifetime":"60s"},"refresh_fraction":1.5}"#,
                "refresh_fraction",
            ),
            (
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"token_header":"x","token_lifetime":"60s"},"refresh_fraction":0}"#,
                "refresh_fraction",
            ),
            (
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"token_header":"x","token_lifetime":"60s"},"pending_request_timeout":"61s"}"#,
                "pending_request_timeout",
            ),
            (
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"token_header":"x","token_lifetime":"60s"},"retry_back_off":{"base_interval":"2s","max_interval":"1s"}}"#,
                "retry_back_off.max_interval",
            ),
            (
                r#"{"http_get":{"token_endpoint":{"cluster":"c","uri":"http://a/"},"token_header":"x","token_lifetime":"60s"},"ovewrite":true}"#,
                "ovewrite",
            ),
        ];
        for (json, field) in cases {
            let e = load(json).unwrap_err();
            assert_eq!(e.field, *field, "{json}: {e}");
        }
        let both = format!(
            r#"{{"oauth2":{},"http_get":{{"token_endpoint":{{"cluster":"c","uri":"http://a/"}},"token_header":"x","token_lifetime":"60s"}}}}"#,
            &OAUTH[10..OAUTH.len() - 1]
        );
        assert_eq!(load(&both).unwrap_err().field, "http_get");
    }

    #[test]
    fn fingerprint_changes_with_the_identity_and_the_secret_but_only_under_the_key() {
        let key = HashKey::new([7; 16]);
        let fp = |json: &str| load(json).unwrap().fingerprint(&key);
        let body =
            OAUTH.replace(r#""client_secret":"s3cr:t""#, r#""client_secret":"s3cr:t","auth_type":"URL_ENCODED_BODY""#);
        assert_eq!(fp(OAUTH), fp(OAUTH));
        assert_eq!(fp(OAUTH).len(), 16);
        // A changed client, scope, header — and a rotated secret, sent either way — is another
        // configuration: it never reads the old one's token.
        for (base, changed) in [
            (OAUTH.to_string(), OAUTH.replace("svc a", "svc b")),
            (OAUTH.to_string(), OAUTH.replace("\"write\"", "\"admin\"")),
            (OAUTH.to_string(), OAUTH.replace("s3cr:t", "s3cr:u")),
            (body.clone(), body.replace("s3cr:t", "s3cr:u")),
            (OAUTH.to_string(), body.clone()),
        ] {
            assert_ne!(fp(&base), fp(&changed), "{changed}");
        }
        // Another proxy (another seed) shows another value: nothing to compare a guess with.
        let c = load(OAUTH).unwrap();
        assert_ne!(c.fingerprint(&key), c.fingerprint(&HashKey::new([8; 16])));
        assert!(!format!("{c:?}").contains("s3cr"));
    }

    #[test]
    fn tokens_that_could_split_a_header_are_refused() {
        let c = load(OAUTH).unwrap();
        assert_eq!(c.header_value("abc.def").unwrap(), "Bearer abc.def");
        for bad in ["", "a\r\nx-admin: 1", "a\0", "tok ", "é"] {
            assert!(c.header_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("a b/c~"), "a%20b%2Fc~");
    }
}
