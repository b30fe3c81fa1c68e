//! Configuration: the JSON form of Envoy's `JwtAuthentication` (jwt_authn) for the supported
//! subset, with jwt_authn's field names and meanings, so a user can paste theirs. Phase 1 is
//! serde with unknown fields refused (an unsupported jwt_authn field is refused by name, never
//! ignored); phase 2 compiles it into [`Compiled`], which is all the request path reads.

use jose::jwks::Jwks;
use serde::Deserialize;
use shared::config::{join_path, ConfigError, DataSource, Duration};
use shared::headers::normalize_header_name;
use shared::matching::{PathMatchConfig, PathMatcher};
use std::collections::BTreeMap;
use std::rc::Rc;

/// jwt_authn's default clock skew (`clock_skew_seconds: 0` means this).
pub const DEFAULT_CLOCK_SKEW_SECONDS: u64 = 60;
/// jwt_authn's default `remote_jwks.cache_duration`.
pub const DEFAULT_CACHE_DURATION: std::time::Duration = std::time::Duration::from_secs(600);
/// jwt_authn's default `jwt_cache_config.jwt_cache_size`.
pub const DEFAULT_JWT_CACHE_SIZE: usize = 100;
/// Ours: longest token accepted (RFC 8725 §3.x: bound the work an unauthenticated input causes).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
/// Ours: the shortest interval between two JWKS refetches caused by an unknown `kid`.
pub const DEFAULT_UNKNOWN_KID_REFETCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest cache accepted: the cache lives in every worker.
const MAX_JWT_CACHE_SIZE: u32 = 1 << 20;
/// The default token locations when a provider names none.
pub const DEFAULT_HEADER: &str = "authorization";
pub const DEFAULT_PREFIX: &str = "Bearer ";
pub const DEFAULT_PARAM: &str = "access_token";

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(title = "jwt-auth configuration"))]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The JWT providers by name (jwt_authn's `providers`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("propertyNames" = { "minLength": 1 })))]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub bypass_cors_preflight: bool,
    /// Ours (not in jwt_authn): tokens longer than this are refused without being parsed.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 64, max = 1_048_576)))]
    pub max_token_bytes: Option<u64>,
    /// Ours: how often at most an unknown `kid` may trigger a JWKS refetch (key rotation).
    #[serde(default)]
    pub unknown_kid_refetch_interval: Option<Duration>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(transform = shared::schema::exactly_one_of(schema::KEY_SOURCE)))]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    #[serde(default)]
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub local_jwks: Option<DataSource>,
    #[serde(default)]
    pub remote_jwks: Option<RemoteJwks>,
    #[serde(default)]
    pub forward: bool,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(inner(length(min = 1))))]
    pub from_params: Vec<String>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(inner(regex(pattern = r"^[!-:<>-~]+$"))))]
    pub from_cookies: Vec<String>,
    /// `""`: none.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = schema::HEADER_NAME_OR_EMPTY)))]
    pub forward_payload_header: String,
    #[serde(default)]
    pub pad_forward_payload_header: bool,
    #[serde(default)]
    pub claim_to_headers: Vec<ClaimToHeader>,
    #[serde(default)]
    pub clock_skew_seconds: u32,
    #[serde(default)]
    pub require_expiration: bool,
    #[serde(default)]
    pub max_lifetime: Option<Duration>,
    #[serde(default)]
    pub jwt_cache_config: Option<JwtCacheConfig>,
    /// Ours (not in jwt_authn): tokens without `kid` are refused instead of tried on every key.
    #[serde(default)]
    pub require_kid: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RemoteJwks {
    pub http_uri: HttpUri,
    #[serde(default)]
    pub cache_duration: Option<Duration>,
    #[serde(default)]
    pub async_fetch: Option<AsyncFetch>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HttpUri {
    #[cfg_attr(feature = "schema", schemars(regex(pattern = schema::HTTP_URI)))]
    pub uri: String,
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub cluster: String,
    pub timeout: Duration,
}

/// Accepted for compatibility: this filter always fetches ahead of requests (jwt_authn's
/// `async_fetch` behaviour); `failed_refetch_duration` is the first retry delay.
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AsyncFetch {
    #[serde(default)]
    pub fast_listener: bool,
    #[serde(default)]
    pub failed_refetch_duration: Option<Duration>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JwtHeader {
    #[cfg_attr(feature = "schema", schemars(regex(pattern = shared::schema::HEADER_NAME_PATTERN)))]
    pub name: String,
    #[serde(default)]
    pub value_prefix: String,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    #[cfg_attr(feature = "schema", schemars(regex(pattern = shared::schema::HEADER_NAME_PATTERN)))]
    pub header_name: String,
    /// A claim, nested as `a.b`.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[^.]+(?:\.[^.]+)*$")))]
    pub claim_name: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JwtCacheConfig {
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(max = MAX_JWT_CACHE_SIZE)))]
    pub jwt_cache_size: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(rename = "match")]
    pub route_match: PathMatchConfig,
    #[serde(default)]
    pub requires: Option<RequirementConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(transform = shared::schema::at_most_one_of(schema::REQUIREMENT)))]
#[serde(deny_unknown_fields)]
pub struct RequirementConfig {
    #[serde(default)]
    pub provider_name: Option<String>,
    #[serde(default)]
    pub provider_and_audiences: Option<ProviderAndAudiences>,
    #[serde(default)]
    pub requires_any: Option<RequirementList>,
    #[serde(default)]
    pub requires_all: Option<RequirementList>,
    #[serde(default)]
    pub allow_missing_or_failed: Option<Empty>,
    #[serde(default)]
    pub allow_missing: Option<Empty>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ProviderAndAudiences {
    pub provider_name: String,
    #[serde(default)]
    pub audiences: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RequirementList {
    #[cfg_attr(feature = "schema", schemars(length(min = 2)))]
    pub requirements: Vec<RequirementConfig>,
}

/// `google.protobuf.Empty`: `{}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// The rules phase 2 checks that JSON Schema can say and the derives cannot.
#[cfg(feature = "schema")]
mod schema {
    pub const KEY_SOURCE: &[&str] = &["local_jwks", "remote_jwks"];
    pub const REQUIREMENT: &[&str] = &[
        "provider_name",
        "provider_and_audiences",
        "requires_any",
        "requires_all",
        "allow_missing_or_failed",
        "allow_missing",
    ];
    pub const HEADER_NAME_OR_EMPTY: &str = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]*$";
    /// `split_uri`: http(s), a host without `@`, nothing at or below space or above `~`, no `#`.
    pub const HTTP_URI: &str = r"^https?://[!-?A-~]+(?:/[!-\x22$-~]*)?$";
}

// ---------------------------------------------------------------------------------------------
// Compiled form

/// Where a provider's keys come from.
#[derive(Debug)]
pub enum KeySource {
    Local(Rc<Jwks>),
    Remote(Remote),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Remote {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout: std::time::Duration,
    pub cache_duration: std::time::Duration,
    pub retry_base: std::time::Duration,
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub issuer: String,
    /// Audiences as jwt_authn compares them (scheme and trailing slash removed).
    pub audiences: Audiences,
    pub keys: KeySource,
    pub forward: bool,
    pub forward_payload_header: Option<String>,
    pub pad_forward_payload_header: bool,
    pub claim_to_headers: Vec<(String, Vec<String>)>,
    pub clock_skew_seconds: u64,
    /// `require_expiration` / `max_lifetime`: `Some(None)` = an `exp` is required, any lifetime;
    /// `Some(Some(d))` = `exp` required and at most `d` from now.
    pub max_exp: Option<Option<std::time::Duration>>,
    /// 0: no cache (jwt_authn caches only with `jwt_cache_config`; ours caches by default).
    pub cache_size: usize,
    /// Token locations this provider reads (its own, or the defaults).
    pub locations: Vec<Location>,
    /// Headers this provider writes (`forward_payload_header`, `claim_to_headers`): removed
    /// from every request before anything else, so only a verified token can set them.
    pub writes: Vec<String>,
    /// Tokens without `kid` match no key (`JwksKidAlgMismatch`).
    pub require_kid: bool,
}

/// Audience check of jwt_authn (`CheckAudience`): empty config = any; else one of the token's
/// audiences must be configured, compared without `http://`/`https://` and a trailing `/`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audiences(Vec<String>);

impl Audiences {
    pub fn new(configured: &[String]) -> Audiences {
        Audiences(configured.iter().map(|a| sanitize_audience(a).to_string()).collect())
    }
    pub fn allows(&self, token_audiences: &[String]) -> bool {
        self.0.is_empty() || token_audiences.iter().any(|a| self.0.iter().any(|c| c == sanitize_audience(a)))
    }
}

fn sanitize_audience(aud: &str) -> &str {
    let a = aud.strip_prefix("http://").or_else(|| aud.strip_prefix("https://")).unwrap_or(aud);
    a.strip_suffix('/').unwrap_or(a)
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Location {
    /// Header name (lower case) and value prefix ("" = the whole value).
    Header(String, String),
    Param(String),
    Cookie(String),
}

#[derive(Clone, Debug)]
pub enum Requirement {
    Provider {
        index: usize,
        audiences: Option<Audiences>,
    },
    Any {
        children: Vec<Requirement>,
        allow_missing: bool,
        allow_missing_or_failed: bool,
    },
    All(Vec<Requirement>),
    AllowMissing,
    AllowMissingOrFailed,
    /// A rule without `requires`, or an empty requirement: no JWT needed.
    AllowAll,
}

#[derive(Debug)]
pub struct Rule {
    pub matcher: PathMatcher,
    pub requirement: Requirement,
}

#[derive(Debug)]
pub struct Compiled {
    pub providers: Vec<Provider>,
    pub rules: Vec<Rule>,
    pub bypass_cors_preflight: bool,
    pub max_token_bytes: usize,
    pub unknown_kid_refetch_interval: std::time::Duration,
    /// Identifies this configuration in shared-data keys (a changed config never reads old keys).
    pub fingerprint: String,
}

impl Config {
    pub fn compile(self) -> Result<Compiled, ConfigError> {
        let fingerprint = shared::hash::fingerprint(format!("{self:?}").as_bytes());
        let mut providers = Vec::with_capacity(self.providers.len());
        for (name, p) in &self.providers {
            providers.push(compile_provider(name, p).map_err(|e| e.within(&format!("providers.{name}")))?);
        }
        check_written_headers(&providers)?;
        let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            let matcher = r.route_match.compile().map_err(|e| e.within(&join_path(&at, "match")))?;
            let requirement = match &r.requires {
                None => Requirement::AllowAll,
                Some(req) => compile_requirement(req, &names).map_err(|e| e.within(&join_path(&at, "requires")))?,
            };
            rules.push(Rule { matcher, requirement });
        }
        let max_token_bytes = match self.max_token_bytes {
            None => DEFAULT_MAX_TOKEN_BYTES,
            Some(n) if (64..=1 << 20).contains(&n) => usize::try_from(n).unwrap_or(DEFAULT_MAX_TOKEN_BYTES),
            Some(_) => return Err(ConfigError::new("max_token_bytes", "must be between 64 and 1048576")),
        };
        let unknown_kid_refetch_interval =
            self.unknown_kid_refetch_interval.map_or(DEFAULT_UNKNOWN_KID_REFETCH_INTERVAL, |d| d.0);
        Ok(Compiled {
            providers,
            rules,
            bypass_cors_preflight: self.bypass_cors_preflight,
            max_token_bytes,
            unknown_kid_refetch_interval,
            fingerprint,
        })
    }
}

fn compile_provider(name: &str, p: &ProviderConfig) -> Result<Provider, ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::new("", "a provider name must not be empty"));
    }
    let keys = match (&p.local_jwks, &p.remote_jwks) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new("local_jwks", "set one of `local_jwks` and `remote_jwks`, not both"))
        }
        (None, None) => return Err(ConfigError::new("", "one of `local_jwks` or `remote_jwks` is required")),
        (Some(local), None) => {
            // `environment_variable`: the VM's environment (as jwt_authn reads Envoy's), which
            // keeps HMAC (`oct`) keys out of the configuration and `/config_dump`.
            let text = local.read("local_jwks")?;
            let field = if local.inline_string.is_some() {
                "local_jwks.inline_string"
            } else {
                "local_jwks.environment_variable"
            };
            // Empty: no keys, every token gets `Jwks doesn't have any valid public key` (as
            // jwt_authn, which loads such a provider). Anything else must be a usable JWKS (as
            // jwt_authn 1.40, which refuses the configuration otherwise).
            let jwks = if text.is_empty() {
                Jwks::default()
            } else {
                Jwks::parse(text.as_bytes()).map_err(|e| ConfigError::new(field, format!("not a usable JWKS: {e}")))?
            };
            KeySource::Local(Rc::new(jwks))
        }
        (None, Some(remote)) => KeySource::Remote(compile_remote(remote).map_err(|e| e.within("remote_jwks"))?),
    };
    let mut locations = Vec::new();
    for (i, h) in p.from_headers.iter().enumerate() {
        let header =
            normalize_header_name(&h.name).map_err(|m| ConfigError::new(format!("from_headers[{i}].name"), m))?;
        locations.push(Location::Header(header, h.value_prefix.clone()));
    }
    for (i, param) in p.from_params.iter().enumerate() {
        if param.is_empty() {
            return Err(ConfigError::new(format!("from_params[{i}]"), "must not be empty"));
        }
        locations.push(Location::Param(param.clone()));
    }
    for (i, cookie) in p.from_cookies.iter().enumerate() {
        if cookie.is_empty() || cookie.bytes().any(|b| b <= b' ' || b == b'=' || b == b';' || b >= 0x7f) {
            return Err(ConfigError::new(format!("from_cookies[{i}]"), "must be a cookie name"));
        }
        locations.push(Location::Cookie(cookie.clone()));
    }
    if locations.is_empty() {
        locations.push(Location::Header(DEFAULT_HEADER.into(), DEFAULT_PREFIX.into()));
        locations.push(Location::Param(DEFAULT_PARAM.into()));
    }
    let mut writes = Vec::new();
    let forward_payload_header = if p.forward_payload_header.is_empty() {
        None
    } else {
        let h = normalize_header_name(&p.forward_payload_header)
            .map_err(|m| ConfigError::new("forward_payload_header", m))?;
        writes.push(h.clone());
        Some(h)
    };
    let mut claim_to_headers = Vec::new();
    for (i, c) in p.claim_to_headers.iter().enumerate() {
        let at = format!("claim_to_headers[{i}]");
        let h =
            normalize_header_name(&c.header_name).map_err(|m| ConfigError::new(join_path(&at, "header_name"), m))?;
        if c.claim_name.is_empty() || c.claim_name.split('.').any(str::is_empty) {
            return Err(ConfigError::new(join_path(&at, "claim_name"), "must be a claim name, nested as `a.b`"));
        }
        writes.push(h.clone());
        claim_to_headers.push((h, c.claim_name.split('.').map(String::from).collect()));
    }
    let max_exp = match (&p.max_lifetime, p.require_expiration) {
        (Some(d), _) => Some(Some(d.0)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let cache_size = match &p.jwt_cache_config {
        None => DEFAULT_JWT_CACHE_SIZE,
        Some(c) if c.jwt_cache_size > MAX_JWT_CACHE_SIZE => {
            return Err(ConfigError::new("jwt_cache_config.jwt_cache_size", format!("at most {MAX_JWT_CACHE_SIZE}")))
        }
        Some(c) if c.jwt_cache_size == 0 => DEFAULT_JWT_CACHE_SIZE,
        Some(c) => usize::try_from(c.jwt_cache_size).unwrap_or(DEFAULT_JWT_CACHE_SIZE),
    };
    Ok(Provider {
        name: name.to_string(),
        issuer: p.issuer.clone(),
        audiences: Audiences::new(&p.audiences),
        keys,
        forward: p.forward,
        forward_payload_header,
        pad_forward_payload_header: p.pad_forward_payload_header,
        claim_to_headers,
        clock_skew_seconds: if p.clock_skew_seconds == 0 {
            DEFAULT_CLOCK_SKEW_SECONDS
        } else {
            u64::from(p.clock_skew_seconds)
        },
        max_exp,
        cache_size,
        locations,
        writes,
        require_kid: p.require_kid,
    })
}

/// Headers a provider writes are removed from every request first: one that is also where a
/// provider reads tokens (a token header, or `cookie` with `from_cookies`) would remove every
/// token, so such a configuration is refused.
fn check_written_headers(providers: &[Provider]) -> Result<(), ConfigError> {
    let read: Vec<(&str, &str)> = providers
        .iter()
        .flat_map(|p| {
            p.locations.iter().filter_map(move |l| match l {
                Location::Header(h, _) => Some((h.as_str(), p.name.as_str())),
                Location::Cookie(_) => Some(("cookie", p.name.as_str())),
                Location::Param(_) => None,
            })
        })
        .collect();
    for p in providers {
        let fields = p.forward_payload_header.iter().map(|h| (h, "forward_payload_header".to_string())).chain(
            p.claim_to_headers.iter().enumerate().map(|(i, (h, _))| (h, format!("claim_to_headers[{i}].header_name"))),
        );
        for (header, field) in fields {
            if let Some((_, reader)) = read.iter().find(|(h, _)| h == header) {
                return Err(ConfigError::new(
                    format!("providers.{}.{field}", p.name),
                    format!(
                        "`{header}` is where provider {reader:?} reads tokens; a header a provider writes is removed \
                         from every request"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn compile_remote(r: &RemoteJwks) -> Result<Remote, ConfigError> {
    let uri = &r.http_uri;
    if uri.cluster.is_empty() {
        return Err(ConfigError::new("http_uri.cluster", "must name an Envoy cluster"));
    }
    let (authority, path) = split_uri(&uri.uri).map_err(|m| ConfigError::new("http_uri.uri", m))?;
    let timeout = uri.timeout.0;
    if timeout.is_zero() || timeout > std::time::Duration::from_secs(60) {
        return Err(ConfigError::new("http_uri.timeout", "must be more than 0s and at most 60s"));
    }
    let cache_duration = r.cache_duration.as_ref().map_or(DEFAULT_CACHE_DURATION, |d| d.0);
    if cache_duration < std::time::Duration::from_secs(1) {
        return Err(ConfigError::new("cache_duration", "must be at least 1s"));
    }
    let retry_base = r
        .async_fetch
        .as_ref()
        .and_then(|a| a.failed_refetch_duration.as_ref())
        .map_or(std::time::Duration::from_secs(1), |d| d.0.max(std::time::Duration::from_millis(100)));
    Ok(Remote { cluster: uri.cluster.clone(), authority, path, timeout, cache_duration, retry_base })
}

/// `http(s)://authority/path?query` → (`:authority`, `:path`).
fn split_uri(uri: &str) -> Result<(String, String), String> {
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
        .ok_or_else(|| format!("{uri:?} must start with http:// or https://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.bytes().any(|b| b <= b' ' || b >= 0x7f || b == b'@') {
        return Err(format!("{uri:?} has no valid host"));
    }
    if path.bytes().any(|b| b <= b' ' || b >= 0x7f || b == b'#') {
        return Err(format!("{uri:?} has an invalid path"));
    }
    Ok((authority.to_string(), path.to_string()))
}

fn compile_requirement(r: &RequirementConfig, names: &[&str]) -> Result<Requirement, ConfigError> {
    let set = [
        r.provider_name.is_some(),
        r.provider_and_audiences.is_some(),
        r.requires_any.is_some(),
        r.requires_all.is_some(),
        r.allow_missing_or_failed.is_some(),
        r.allow_missing.is_some(),
    ];
    if set.iter().filter(|s| **s).count() > 1 {
        return Err(ConfigError::new("", "set only one of `provider_name`, `provider_and_audiences`, `requires_any`, `requires_all`, `allow_missing`, `allow_missing_or_failed`"));
    }
    let provider = |name: &str, field: &str| -> Result<usize, ConfigError> {
        names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| ConfigError::new(field, format!("required provider [{name:?}] is not configured")))
    };
    if let Some(name) = &r.provider_name {
        return Ok(Requirement::Provider { index: provider(name, "provider_name")?, audiences: None });
    }
    if let Some(pa) = &r.provider_and_audiences {
        let index = provider(&pa.provider_name, "provider_and_audiences.provider_name")?;
        let audiences = (!pa.audiences.is_empty()).then(|| Audiences::new(&pa.audiences));
        return Ok(Requirement::Provider { index, audiences });
    }
    if let Some(list) = &r.requires_all {
        if list.requirements.len() < 2 {
            return Err(ConfigError::new("requires_all.requirements", "needs at least 2 requirements"));
        }
        let children = compile_list(list, names, "requires_all.requirements")?;
        return Ok(Requirement::All(children));
    }
    if let Some(list) = &r.requires_any {
        if list.requirements.len() < 2 {
            return Err(ConfigError::new("requires_any.requirements", "needs at least 2 requirements"));
        }
        let mut allow_missing = false;
        let mut allow_missing_or_failed = false;
        let mut children = Vec::new();
        for c in compile_list(list, names, "requires_any.requirements")? {
            match c {
                // As jwt_authn: these two become flags of the group, not children.
                Requirement::AllowMissing => allow_missing = true,
                Requirement::AllowMissingOrFailed => allow_missing_or_failed = true,
                other => children.push(other),
            }
        }
        if children.is_empty() {
            children.push(if allow_missing_or_failed {
                Requirement::AllowMissingOrFailed
            } else {
                Requirement::AllowMissing
            });
        }
        return Ok(Requirement::Any { children, allow_missing, allow_missing_or_failed });
    }
    if r.allow_missing_or_failed.is_some() {
        return Ok(Requirement::AllowMissingOrFailed);
    }
    if r.allow_missing.is_some() {
        return Ok(Requirement::AllowMissing);
    }
    Ok(Requirement::AllowAll)
}

fn compile_list(list: &RequirementList, names: &[&str], at: &str) -> Result<Vec<Requirement>, ConfigError> {
    list.requirements
        .iter()
        .enumerate()
        .map(|(i, c)| compile_requirement(c, names).map_err(|e| e.within(&format!("{at}[{i}]"))))
        .collect()
}
