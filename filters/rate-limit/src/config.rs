//! Configuration: the JSON shape (phase 1) and its checked, compiled form (phase 2). Field
//! names follow Envoy's `local_ratelimit` (`token_bucket {max_tokens, tokens_per_fill,
//! fill_interval}`, `enable_x_ratelimit_headers`, `status`), its route `rate_limits[].actions`
//! (`remote_address`, `masked_remote_address`, `request_headers`, `generic_key`) and the HCM's
//! `xff_num_trusted_hops`, so a rule reads like the Envoy descriptor it becomes for a global
//! rule. Global rules (`global` instead of `token_bucket`) take the names of Envoy's
//! `ratelimit` filter (`domain`, `timeout`, `failure_mode_deny`, `rate_limit_service`,
//! `enable_x_ratelimit_headers`, `status_on_error`, `disable_x_envoy_ratelimited_header`) at
//! the top level, as Envoy has them per filter: every global rule of a request goes in one
//! `ShouldRateLimit` call, which has one domain, one service and one deadline. Only
//! `hits_addend` is per rule (Envoy: per descriptor).

use crate::bucket::{Limits, MAX_RATE_PER_SECOND};
use crate::table::{OnFull, WAYS};
use serde::Deserialize;
use shared::config::{ConfigError, Duration};
use shared::headers::normalize_header_name;
use shared::matching::{PathMatchConfig, PathMatcher, RegexMatcherConfig};

pub const MAX_RULES: usize = 64;
pub const MAX_ACTIONS: usize = 8;
pub const DEFAULT_MAX_KEYS: u32 = 16_384;
pub const MAX_MAX_KEYS: u32 = 1_048_576;
pub const DEFAULT_CAS_MAX_ATTEMPTS: u32 = 32;
pub const MAX_CAS_MAX_ATTEMPTS: u32 = 1000;
/// Envoy's own floor for local_ratelimit's `fill_interval`.
pub const MIN_FILL_INTERVAL_MS: u64 = 50;
/// Shared-data key prefix of the table's groups (shared data is scoped per `vm_id`).
pub const KEY_PREFIX: &str = "rate-limit/";

#[derive(Deserialize, Default, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(title = "rate-limit configuration", transform = schema::config))]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The rules, 1 to 64; each request is checked against every rule that matches it.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_RULES)))]
    pub rules: Vec<RuleConfig>,
    /// 0: the client is `source.address` (Envoy's view of the downstream peer). N > 0: the
    /// N-th address from the right of `x-forwarded-for`.
    #[serde(default)]
    pub xff_num_trusted_hops: u32,
    #[serde(default)]
    pub status: Option<StatusConfig>,
    /// Count and add headers, never deny (every rule).
    #[serde(default)]
    pub shadow_mode: bool,
    /// `OFF` (default) or `DRAFT_VERSION_03`: Envoy's `x-ratelimit-limit/remaining/reset`.
    #[serde(default)]
    pub enable_x_ratelimit_headers: Option<XRateLimitHeaders>,
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers). Default on.
    #[serde(default)]
    pub ratelimit_headers: Option<bool>,
    #[serde(default)]
    pub table: TableConfig,
    #[serde(default)]
    pub cas: CasConfig,
    /// The limiter cannot decide (the rate-limit service fails or times out; shared data
    /// unusable): deny instead of allowing. Default false, as Envoy's ratelimit filter.
    #[serde(default)]
    pub failure_mode_deny: bool,
    /// Global rules: the RLS domain (Envoy's ratelimit `domain`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[!-~]{1,256}$")))]
    pub domain: Option<String>,
    /// Global rules: the deadline of one `ShouldRateLimit` call (default 100ms).
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Global rules: the rate-limit service, an Envoy gRPC cluster.
    #[serde(default)]
    pub rate_limit_service: Option<RateLimitServiceConfig>,
    /// Global rules: the status of a denial under `failure_mode_deny` (default 500, as Envoy).
    #[serde(default)]
    pub status_on_error: Option<StatusConfig>,
    /// Global rules: no `x-envoy-ratelimited: true` on a denial by the service.
    #[serde(default)]
    pub disable_x_envoy_ratelimited_header: bool,
}

/// Envoy's `RateLimitServiceConfig`, for an Envoy gRPC cluster only.
#[derive(Deserialize, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimitServiceConfig {
    pub grpc_service: GrpcServiceConfig,
    /// Only `V3` (Envoy's only version).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["V3", null])))]
    pub transport_api_version: Option<String>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GrpcServiceConfig {
    pub envoy_grpc: EnvoyGrpcConfig,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EnvoyGrpcConfig {
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[!-~]{1,125}$")))]
    pub cluster_name: String,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// An HTTP error status, 400 to 599.
    #[cfg_attr(feature = "schema", schemars(range(min = 400, max = 599)))]
    pub code: u32,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum XRateLimitHeaders {
    #[serde(rename = "OFF")]
    Off,
    #[serde(rename = "DRAFT_VERSION_03")]
    DraftVersion03,
}

#[derive(Deserialize, Default, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 4, max = MAX_MAX_KEYS)))]
    pub max_keys: Option<u32>,
    #[serde(default)]
    pub on_full: Option<OnFullConfig>,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum OnFullConfig {
    #[serde(rename = "EVICT")]
    Evict,
    #[serde(rename = "DENY")]
    Deny,
}

#[derive(Deserialize, Default, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CasConfig {
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_CAS_MAX_ATTEMPTS)))]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub on_exhausted: Option<OnExhausted>,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum OnExhausted {
    #[serde(rename = "DENY")]
    Deny,
    #[serde(rename = "ALLOW")]
    Allow,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(transform = shared::schema::exactly_one_of(schema::RULE_KIND)))]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Names the rule in stats and headers: 1 to 64 of `[A-Za-z0-9_-]`, unique.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$")))]
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// The descriptor entries (1 to 8) that key this rule's bucket.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_ACTIONS)))]
    pub actions: Vec<ActionConfig>,
    /// A local rule: this proxy's bucket. Exactly one of `token_bucket`, `global`.
    #[serde(default)]
    pub token_bucket: Option<TokenBucketConfig>,
    /// A global rule: the descriptor goes to the rate-limit service, which decides.
    #[serde(default)]
    pub global: Option<GlobalConfig>,
    #[serde(default)]
    pub shadow_mode: bool,
}

#[derive(Deserialize, Debug, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    /// Hits this request counts for (Envoy's descriptor `hits_addend`), default 1.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_HITS_ADDEND)))]
    pub hits_addend: Option<u32>,
    /// A local bucket per descriptor checked first: it sheds floods before they reach the
    /// service (a denial by it never calls the service).
    #[serde(default)]
    pub pre_bucket: Option<TokenBucketConfig>,
}

/// Every condition given must hold; an empty match selects every request.
#[derive(Deserialize, Default, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(transform = shared::schema::at_most_one_of(schema::PATH_MATCH)))]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = shared::schema::PATH_LITERAL_PATTERN)))]
    pub prefix: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = shared::schema::PATH_LITERAL_PATTERN)))]
    pub path: Option<String>,
    #[serde(default)]
    pub safe_regex: Option<RegexMatcherConfig>,
    /// The name of the route Envoy picked (`xds.route_name`), exact; instead of a path.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = shared::schema::ROUTE_NAME_PATTERN), length(min = 1, max = shared::matching::MAX_ROUTE_NAME_LEN))
    )]
    pub route_name: Option<String>,
    /// Upper-case HTTP methods.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(inner(regex(pattern = r"^[A-Z_-]+$"))))]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatchConfig>,
}

/// A subset of Envoy's `HeaderMatcher`.
#[derive(Deserialize, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", schemars(transform = shared::schema::exactly_one_of(schema::HEADER_MATCH)))]
pub struct HeaderMatchConfig {
    #[cfg_attr(feature = "schema", schemars(regex(pattern = schema::HEADER_OR_PSEUDO)))]
    pub name: String,
    #[serde(default)]
    pub exact_match: Option<String>,
    #[serde(default)]
    pub present_match: Option<bool>,
    #[serde(default)]
    pub invert_match: bool,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Deserialize, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MaskedRemoteAddress {
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(max = 32)))]
    pub v4_prefix_mask_len: Option<u8>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(max = 128)))]
    pub v6_prefix_mask_len: Option<u8>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestHeadersAction {
    #[cfg_attr(feature = "schema", schemars(regex(pattern = schema::HEADER_OR_PSEUDO)))]
    pub header_name: String,
    #[cfg_attr(feature = "schema", schemars(regex(pattern = schema::DESCRIPTOR_KEY)))]
    pub descriptor_key: String,
    #[serde(default)]
    pub skip_if_absent: bool,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GenericKeyAction {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 256)))]
    pub descriptor_value: String,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = schema::DESCRIPTOR_KEY)))]
    pub descriptor_key: Option<String>,
}

/// One descriptor entry: exactly one field set (Envoy's `RateLimit.Action`).
#[derive(Deserialize, Debug, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(transform = shared::schema::exactly_one_of(schema::ACTION)))]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    #[serde(default)]
    pub remote_address: Option<Empty>,
    #[serde(default)]
    pub masked_remote_address: Option<MaskedRemoteAddress>,
    #[serde(default)]
    pub request_headers: Option<RequestHeadersAction>,
    #[serde(default)]
    pub generic_key: Option<GenericKeyAction>,
    /// The request path without its query string (not an Envoy action: `request_headers` on
    /// `:path` keeps the query, which lets a client mint keys at will).
    #[serde(default)]
    pub path: Option<Empty>,
}

#[derive(Deserialize, Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenBucketConfig {
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub max_tokens: u32,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub tokens_per_fill: Option<u32>,
    pub fill_interval: Duration,
}

// ---- compiled ----

#[derive(Debug)]
pub struct Compiled {
    pub rules: Vec<Rule>,
    pub xff_num_trusted_hops: u32,
    pub status: u32,
    pub x_ratelimit_headers: bool,
    pub ratelimit_headers: bool,
    /// Number of shared-data keys (groups of `WAYS` entries).
    pub groups: u32,
    pub on_full: OnFull,
    pub cas_max_attempts: u32,
    pub on_cas_exhausted: OnExhausted,
    pub failure_mode_deny: bool,
    /// Present when a rule is global.
    pub global: Option<GlobalService>,
}

/// Where and how global rules are decided.
#[derive(Debug)]
pub struct GlobalService {
    pub domain: String,
    pub cluster: String,
    pub timeout: std::time::Duration,
    pub status_on_error: u32,
    pub x_envoy_ratelimited: bool,
}

/// Default `timeout`. Envoy's ratelimit filter defaults to 20ms and then fails open: on a
/// loaded node that admits requests the limit should refuse. 100ms still bounds the latency an
/// outage adds to every request.
pub const DEFAULT_TIMEOUT_MS: u64 = 100;
/// The gRPC cluster name is passed encoded in a `GrpcService` (shared::abi::grpc_service).
pub const MAX_CLUSTER_NAME: usize = 125;
pub const MAX_HITS_ADDEND: u32 = 1_000_000;

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub path: Option<PathMatcher>,
    pub methods: Vec<String>,
    pub headers: Vec<HeaderMatch>,
    pub actions: Vec<Action>,
    pub kind: RuleKind,
    pub shadow: bool,
    /// `RateLimit-Policy` list member of the local bucket, precomputed: `"name";q=…;w=…`.
    pub policy_header: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Local(Limits),
    Global { hits_addend: u32, pre_bucket: Option<Limits> },
}

impl Rule {
    /// The shape of this rule's bucket in the local table: a local rule's bucket or a global
    /// rule's pre-bucket.
    pub fn table_limits(&self) -> Option<Limits> {
        match self.kind {
            RuleKind::Local(l) => Some(l),
            RuleKind::Global { pre_bucket, .. } => pre_bucket,
        }
    }

    pub fn is_global(&self) -> bool {
        matches!(self.kind, RuleKind::Global { .. })
    }
}

#[derive(Debug)]
pub struct HeaderMatch {
    pub name: String,
    pub exact: Option<Vec<u8>>,
    pub present: bool,
    pub invert: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The client address, masked to a prefix (32 / 128 = the whole address).
    RemoteAddress {
        key: &'static str,
        v4: u8,
        v6: u8,
    },
    RequestHeader {
        name: String,
        key: String,
        skip_if_absent: bool,
    },
    Generic {
        key: String,
        value: String,
    },
    Path,
}

fn check_rule_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(format!(
            "{name:?} may contain only ASCII letters, digits, '_' and '-' (it names stats and headers)"
        ));
    }
    Ok(())
}

fn check_descriptor_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be 1 to 128 visible ASCII characters".into());
    }
    Ok(())
}

/// Pseudo-headers a descriptor may read.
const PSEUDO_HEADERS: &[&str] = &[":path", ":authority", ":method", ":scheme"];

fn header_name(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    if PSEUDO_HEADERS.contains(&lower.as_str()) {
        return Ok(lower);
    }
    normalize_header_name(name)
}

/// A rule's compiled `match`: path, methods, headers.
type CompiledMatch = (Option<PathMatcher>, Vec<String>, Vec<HeaderMatch>);

impl MatchConfig {
    fn compile(&self) -> Result<CompiledMatch, ConfigError> {
        let any_path =
            self.prefix.is_some() || self.path.is_some() || self.safe_regex.is_some() || self.route_name.is_some();
        let path = if any_path {
            let p = PathMatchConfig {
                prefix: self.prefix.clone(),
                path: self.path.clone(),
                safe_regex: self.safe_regex.clone(),
                route_name: self.route_name.clone(),
            };
            Some(p.compile()?)
        } else {
            None
        };
        let mut methods = Vec::new();
        for (i, m) in self.methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_') {
                return Err(ConfigError::new(
                    format!("methods[{i}]"),
                    format!("{m:?} is not an upper-case HTTP method"),
                ));
            }
            methods.push(m.clone());
        }
        let mut headers = Vec::new();
        for (i, h) in self.headers.iter().enumerate() {
            let field = format!("headers[{i}]");
            let name = header_name(&h.name).map_err(|m| ConfigError::new(format!("{field}.name"), m))?;
            let present = match (&h.exact_match, h.present_match) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(ConfigError::new(field, "exactly one of `exact_match`, `present_match` must be set"))
                }
                (_, Some(p)) => p,
                (Some(_), None) => true,
            };
            headers.push(HeaderMatch {
                name,
                exact: h.exact_match.as_ref().map(|v| v.as_bytes().to_vec()),
                present,
                invert: h.invert_match,
            });
        }
        Ok((path, methods, headers))
    }
}

impl ActionConfig {
    fn compile(&self) -> Result<Action, ConfigError> {
        let set = [
            self.remote_address.is_some(),
            self.masked_remote_address.is_some(),
            self.request_headers.is_some(),
            self.generic_key.is_some(),
            self.path.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(ConfigError::new(
                "",
                "exactly one of `remote_address`, `masked_remote_address`, `request_headers`, `generic_key`, `path` must be set",
            ));
        }
        if self.remote_address.is_some() {
            return Ok(Action::RemoteAddress { key: "remote_address", v4: 32, v6: 128 });
        }
        if let Some(m) = &self.masked_remote_address {
            let v4 = m.v4_prefix_mask_len.unwrap_or(32);
            let v6 = m.v6_prefix_mask_len.unwrap_or(128);
            if v4 > 32 {
                return Err(ConfigError::new("masked_remote_address.v4_prefix_mask_len", "must be at most 32"));
            }
            if v6 > 128 {
                return Err(ConfigError::new("masked_remote_address.v6_prefix_mask_len", "must be at most 128"));
            }
            return Ok(Action::RemoteAddress { key: "masked_remote_address", v4, v6 });
        }
        if let Some(r) = &self.request_headers {
            let name = header_name(&r.header_name).map_err(|m| ConfigError::new("request_headers.header_name", m))?;
            check_descriptor_key(&r.descriptor_key)
                .map_err(|m| ConfigError::new("request_headers.descriptor_key", m))?;
            return Ok(Action::RequestHeader { name, key: r.descriptor_key.clone(), skip_if_absent: r.skip_if_absent });
        }
        if let Some(g) = &self.generic_key {
            let key = g.descriptor_key.clone().unwrap_or_else(|| "generic_key".to_string());
            check_descriptor_key(&key).map_err(|m| ConfigError::new("generic_key.descriptor_key", m))?;
            if g.descriptor_value.is_empty() || g.descriptor_value.len() > 256 {
                return Err(ConfigError::new("generic_key.descriptor_value", "must be 1 to 256 bytes"));
            }
            return Ok(Action::Generic { key, value: g.descriptor_value.clone() });
        }
        Ok(Action::Path)
    }
}

impl TokenBucketConfig {
    fn compile(&self) -> Result<Limits, ConfigError> {
        if self.max_tokens == 0 {
            return Err(ConfigError::new("max_tokens", "must be at least 1"));
        }
        let per_fill = self.tokens_per_fill.unwrap_or(1);
        if per_fill == 0 {
            return Err(ConfigError::new("tokens_per_fill", "must be at least 1"));
        }
        let interval = self.fill_interval.0;
        if interval.as_millis() < u128::from(MIN_FILL_INTERVAL_MS) {
            return Err(ConfigError::new(
                "fill_interval",
                format!("must be at least {MIN_FILL_INTERVAL_MS}ms, as in Envoy"),
            ));
        }
        let interval_ns = u64::try_from(interval.as_nanos())
            .ok()
            .filter(|ns| *ns <= 366 * 86_400 * 1_000_000_000)
            .ok_or_else(|| ConfigError::new("fill_interval", "must be at most 366 days"))?;
        // Adding more than max_tokens in one fill is the same as filling it up.
        let per_fill = u64::from(per_fill.min(self.max_tokens));
        if u128::from(per_fill) * 1_000_000_000 > u128::from(MAX_RATE_PER_SECOND) * u128::from(interval_ns) {
            return Err(ConfigError::new(
                "tokens_per_fill",
                format!("refills faster than {MAX_RATE_PER_SECOND} tokens per second"),
            ));
        }
        Ok(Limits { max_tokens: u64::from(self.max_tokens), tokens_per_fill: per_fill, fill_interval_ns: interval_ns })
    }
}

/// `RateLimit-Policy` member: quota `q` = max_tokens over window `w` = the seconds an empty
/// bucket takes to fill up (rounded up), i.e. the sustained rate, with `q` the burst.
fn policy_header(name: &str, l: &Limits) -> String {
    let fills = l.max_tokens.div_ceil(l.tokens_per_fill);
    let w = crate::bucket::ceil_secs(fills.saturating_mul(l.fill_interval_ns)).max(1);
    crate::filter::policy_member(name, l.max_tokens, w)
}

impl Config {
    pub fn compile(self) -> Result<Compiled, ConfigError> {
        if self.rules.is_empty() {
            return Err(ConfigError::new("rules", "at least one rule is required"));
        }
        if self.rules.len() > MAX_RULES {
            return Err(ConfigError::new("rules", format!("at most {MAX_RULES} rules")));
        }
        let mut rules: Vec<Rule> = Vec::with_capacity(self.rules.len());
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            check_rule_name(&r.name).map_err(|m| ConfigError::new(format!("{at}.name"), m))?;
            if rules.iter().any(|other| other.name == r.name) {
                return Err(ConfigError::new(format!("{at}.name"), format!("{:?} is used by an earlier rule", r.name)));
            }
            let (path, methods, headers) = r.matcher.compile().map_err(|e| e.within(&format!("{at}.match")))?;
            if r.actions.is_empty() || r.actions.len() > MAX_ACTIONS {
                return Err(ConfigError::new(format!("{at}.actions"), format!("1 to {MAX_ACTIONS} actions")));
            }
            let mut actions = Vec::with_capacity(r.actions.len());
            for (j, a) in r.actions.iter().enumerate() {
                actions.push(a.compile().map_err(|e| e.within(&format!("{at}.actions[{j}]")))?);
            }
            let kind = match (&r.token_bucket, &r.global) {
                (Some(tb), None) => RuleKind::Local(tb.compile().map_err(|e| e.within(&format!("{at}.token_bucket")))?),
                (None, Some(g)) => {
                    let hits_addend = g.hits_addend.unwrap_or(1);
                    if !(1..=MAX_HITS_ADDEND).contains(&hits_addend) {
                        return Err(ConfigError::new(
                            format!("{at}.global.hits_addend"),
                            format!("must be 1 to {MAX_HITS_ADDEND}"),
                        ));
                    }
                    let pre_bucket = match &g.pre_bucket {
                        Some(tb) => Some(tb.compile().map_err(|e| e.within(&format!("{at}.global.pre_bucket")))?),
                        None => None,
                    };
                    RuleKind::Global { hits_addend, pre_bucket }
                }
                _ => return Err(ConfigError::new(at, "exactly one of `token_bucket`, `global` must be set")),
            };
            let policy = match kind {
                RuleKind::Local(l) => policy_header(&r.name, &l),
                RuleKind::Global { pre_bucket: Some(l), .. } => policy_header(&r.name, &l),
                RuleKind::Global { .. } => String::new(),
            };
            rules.push(Rule {
                policy_header: policy,
                name: r.name.clone(),
                path,
                methods,
                headers,
                actions,
                kind,
                shadow: r.shadow_mode || self.shadow_mode,
            });
        }
        let global = self.compile_global(rules.iter().any(Rule::is_global))?;
        let status = self.status.map_or(429, |s| s.code);
        if !(400..=599).contains(&status) {
            return Err(ConfigError::new("status.code", "must be an HTTP error status, 400 to 599"));
        }
        let max_keys = self.table.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
        if !(WAYS as u32..=MAX_MAX_KEYS).contains(&max_keys) {
            return Err(ConfigError::new("table.max_keys", format!("must be {WAYS} to {MAX_MAX_KEYS}")));
        }
        let cas_max_attempts = self.cas.max_attempts.unwrap_or(DEFAULT_CAS_MAX_ATTEMPTS);
        if !(1..=MAX_CAS_MAX_ATTEMPTS).contains(&cas_max_attempts) {
            return Err(ConfigError::new("cas.max_attempts", format!("must be 1 to {MAX_CAS_MAX_ATTEMPTS}")));
        }
        Ok(Compiled {
            rules,
            xff_num_trusted_hops: self.xff_num_trusted_hops,
            status,
            x_ratelimit_headers: self.enable_x_ratelimit_headers == Some(XRateLimitHeaders::DraftVersion03),
            ratelimit_headers: self.ratelimit_headers.unwrap_or(true),
            groups: max_keys.div_ceil(WAYS as u32),
            on_full: match self.table.on_full {
                Some(OnFullConfig::Deny) => OnFull::Deny,
                _ => OnFull::Evict,
            },
            cas_max_attempts,
            on_cas_exhausted: self.cas.on_exhausted.unwrap_or(OnExhausted::Deny),
            failure_mode_deny: self.failure_mode_deny,
            global,
        })
    }

    /// The service settings: required with a global rule, refused without one (a setting that
    /// does nothing is a mistake worth naming).
    fn compile_global(&self, any_global: bool) -> Result<Option<GlobalService>, ConfigError> {
        if !any_global {
            let set = [
                ("domain", self.domain.is_some()),
                ("rate_limit_service", self.rate_limit_service.is_some()),
                ("timeout", self.timeout.is_some()),
                ("status_on_error", self.status_on_error.is_some()),
                ("disable_x_envoy_ratelimited_header", self.disable_x_envoy_ratelimited_header),
            ];
            if let Some((field, _)) = set.iter().find(|(_, on)| *on) {
                return Err(ConfigError::new(*field, "applies to global rules only, and no rule is `global`"));
            }
            return Ok(None);
        }
        let domain = self.domain.clone().ok_or_else(|| ConfigError::new("domain", "required with a global rule"))?;
        if domain.is_empty() || domain.len() > 256 || !domain.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new("domain", "must be 1 to 256 visible ASCII characters"));
        }
        let service = self
            .rate_limit_service
            .as_ref()
            .ok_or_else(|| ConfigError::new("rate_limit_service", "required with a global rule"))?;
        if service.transport_api_version.as_deref().is_some_and(|v| v != "V3") {
            return Err(ConfigError::new("rate_limit_service.transport_api_version", "only `V3` exists"));
        }
        let cluster = &service.grpc_service.envoy_grpc.cluster_name;
        if cluster.is_empty() || cluster.len() > MAX_CLUSTER_NAME || !cluster.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                "rate_limit_service.grpc_service.envoy_grpc.cluster_name",
                format!("must be 1 to {MAX_CLUSTER_NAME} visible ASCII characters"),
            ));
        }
        let timeout = self.timeout.map_or(std::time::Duration::from_millis(DEFAULT_TIMEOUT_MS), |d| d.0);
        if timeout < std::time::Duration::from_millis(1) || timeout > std::time::Duration::from_secs(60) {
            return Err(ConfigError::new("timeout", "must be 1ms to 60s"));
        }
        let status_on_error = self.status_on_error.map_or(500, |s| s.code);
        if !(400..=599).contains(&status_on_error) {
            return Err(ConfigError::new("status_on_error.code", "must be an HTTP error status, 400 to 599"));
        }
        Ok(Some(GlobalService {
            domain,
            cluster: cluster.clone(),
            timeout,
            status_on_error,
            x_envoy_ratelimited: !self.disable_x_envoy_ratelimited_header,
        }))
    }
}

/// The rules phase 2 checks that JSON Schema can say and the derives cannot.
#[cfg(feature = "schema")]
mod schema {
    use schemars::Schema;
    use shared::schema::{add_rule, json};

    /// A header name (RFC 9110 token) or one of the pseudo-headers a descriptor may read.
    pub const HEADER_OR_PSEUDO: &str = r"^(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+|:[Pp][Aa][Tt][Hh]|:[Aa][Uu][Tt][Hh][Oo][Rr][Ii][Tt][Yy]|:[Mm][Ee][Tt][Hh][Oo][Dd]|:[Ss][Cc][Hh][Ee][Mm][Ee])$";
    pub const RULE_KIND: &[&str] = &["token_bucket", "global"];
    pub use shared::schema::PATH_MATCH;
    pub const HEADER_MATCH: &[&str] = &["exact_match", "present_match"];
    pub const ACTION: &[&str] = &["remote_address", "masked_remote_address", "request_headers", "generic_key", "path"];
    /// 1 to 128 visible ASCII characters.
    pub const DESCRIPTOR_KEY: &str = r"^[!-~]{1,128}$";

    /// `rules` is required; the service settings come with a global rule and only with one.
    pub fn config(schema: &mut Schema) {
        shared::schema::require(schema, "rules");
        let any_global = json!({
            "required": ["rules"],
            "properties": { "rules": { "contains": {
                "required": ["global"], "properties": { "global": { "not": { "type": "null" } } }
            } } }
        });
        add_rule(
            schema,
            json!({
                "if": any_global,
                "then": {
                    "required": ["domain", "rate_limit_service"],
                    "properties": { "domain": { "type": "string" }, "rate_limit_service": { "type": "object" } }
                },
                "else": {
                    "properties": {
                        "domain": { "type": "null" },
                        "rate_limit_service": { "type": "null" },
                        "timeout": { "type": "null" },
                        "status_on_error": { "type": "null" },
                        "disable_x_envoy_ratelimited_header": { "const": false }
                    }
                }
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<Compiled, ConfigError> {
        shared::config::load(Some(json.as_bytes()), Config::compile)
    }

    const RULE: &str = r#"{"name":"r","actions":[{"remote_address":{}}],"token_bucket":{"max_tokens":10,"tokens_per_fill":2,"fill_interval":"1s"}}"#;

    #[test]
    fn a_minimal_rule_and_its_defaults() {
        let c = load(&format!(r#"{{"rules":[{RULE}]}}"#)).unwrap();
        assert_eq!(c.status, 429);
        assert!(c.ratelimit_headers && !c.x_ratelimit_headers);
        assert_eq!(c.groups, DEFAULT_MAX_KEYS / 4);
        assert_eq!(c.on_full, OnFull::Evict);
        assert_eq!(c.on_cas_exhausted, OnExhausted::Deny);
        assert_eq!(c.cas_max_attempts, DEFAULT_CAS_MAX_ATTEMPTS);
        let r = &c.rules[0];
        assert_eq!(
            r.kind,
            RuleKind::Local(Limits { max_tokens: 10, tokens_per_fill: 2, fill_interval_ns: 1_000_000_000 })
        );
        assert!(c.global.is_none());
        assert_eq!(r.policy_header, "\"r\";q=10;w=5");
        assert!(r.path.is_none() && !r.shadow);
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: &[(&str, &str)] = &[
            (r#"{}"#, "rules"),
            (r#"{"rules":[],"x":1}"#, "x"),
            (
                r#"{"rules":[{"name":"a b","actions":[{"path":{}}],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}}]}"#,
                "rules[0].name",
            ),
            (
                r#"{"rules":[{"name":"a","actions":[],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}}]}"#,
                "rules[0].actions",
            ),
            (
                r#"{"rules":[{"name":"a","actions":[{"path":{},"remote_address":{}}],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}}]}"#,
                "rules[0].actions[0]",
            ),
            (
                r#"{"rules":[{"name":"a","actions":[{"request_headers":{"header_name":"a b","descriptor_key":"k"}}],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}}]}"#,
                "rules[0].actions[0].request_headers.header_name",
            ),
            (
                r#"{"rules":[{"name":"a","actions":[{"masked_remote_address":{"v6_prefix_mask_len":129}}],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}}]}"#,
                "rules[0].actions[0].masked_remote_address.v6_prefix_mask_len",
            ),
            (
                r#"{"rules":[{"name":"a","actions":[{"path":{}}],"token_bucket":{"max_tokens":0,"fill_interval":"1s"}}]}"#,
                "rules[0].token_bucket.max_tokens",
            ),
            (
                r#"{"rules":[{"name":"a","actions":[{"path":{}}],"token_bucket":{"max_tokens":1,"tokens_per_fill":0,"fill_interval":"1s"}}]}"#,
                "rules[0].token_bucket.tokens_per_fill",
            ),
            (
                r#"{"rules":[{"name":"a","actions":[{"path":{}}],"token_bucket":{"max_tokens":1,"fill_interval":"0.01s"}}]}"#,
                "rules[0].token_bucket.fill_interval",
            ),
            (
                r#"{"rules":[{"name":"a","actions":[{"path":{}}],"token_bucket":{"max_tokens":1,"fill_interval":"1"}}]}"#,
                "rules[0].token_bucket.fill_interval",
            ),
            (
                r#"{"rules":[{"name":"a","actions":[{"path":{}}],"token_bucket":{"max_tokens":4000000000,"tokens_per_fill":4000000000,"fill_interval":"0.05s"}}]}"#,
                "rules[0].token_bucket.tokens_per_fill",
            ),
            (
                r#"{"rules":[{"name":"a","match":{"prefix":"api"},"actions":[{"path":{}}],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}}]}"#,
                "rules[0].match.prefix",
            ),
            (
                r#"{"rules":[{"name":"a","match":{"methods":["get"]},"actions":[{"path":{}}],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}}]}"#,
                "rules[0].match.methods[0]",
            ),
            (
                r#"{"rules":[{"name":"a","match":{"headers":[{"name":"x"}]},"actions":[{"path":{}}],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}}]}"#,
                "rules[0].match.headers[0]",
            ),
            (r#"{"rules":[{"name":"a","actions":[{"path":{}}]}]}"#, "rules[0]"),
        ];
        for (json, field) in cases {
            let e = load(json).unwrap_err();
            assert_eq!(e.field, *field, "{json}: {e}");
        }
        let two = format!(r#"{{"rules":[{RULE},{RULE}]}}"#);
        assert_eq!(load(&two).unwrap_err().field, "rules[1].name");
        for (json, field) in [
            (format!(r#"{{"rules":[{RULE}],"status":{{"code":200}}}}"#), "status.code"),
            (format!(r#"{{"rules":[{RULE}],"table":{{"max_keys":2}}}}"#), "table.max_keys"),
            (format!(r#"{{"rules":[{RULE}],"table":{{"max_keys":2000000}}}}"#), "table.max_keys"),
            (format!(r#"{{"rules":[{RULE}],"table":{{"on_full":"DROP"}}}}"#), "table.on_full"),
            (format!(r#"{{"rules":[{RULE}],"cas":{{"max_attempts":0}}}}"#), "cas.max_attempts"),
            (
                format!(
                    r#"{{"rules":[{}]}}"#,
                    RULE.replace(r#""name":"r","#, r#""name":"r","match":{"route_name":"a","path":"/a"},"#)
                ),
                "rules[0].match",
            ),
            (
                format!(
                    r#"{{"rules":[{}]}}"#,
                    RULE.replace(r#""name":"r","#, r#""name":"r","match":{"route_name":""},"#)
                ),
                "rules[0].match.route_name",
            ),
            (
                format!(r#"{{"rules":[{RULE}],"enable_x_ratelimit_headers":"DRAFT_VERSION_04"}}"#),
                "enable_x_ratelimit_headers",
            ),
        ] {
            assert_eq!(load(&json).unwrap_err().field, field, "{json}");
        }
    }

    #[test]
    fn global_rules_and_their_service() {
        const SERVICE: &str = r#""domain":"edge","rate_limit_service":{"grpc_service":{"envoy_grpc":{"cluster_name":"rls"}},"transport_api_version":"V3"}"#;
        const GLOBAL: &str = r#"{"name":"g","actions":[{"remote_address":{}}],"global":{"hits_addend":2,"pre_bucket":{"max_tokens":5,"fill_interval":"1s"}}}"#;
        let c = load(&format!(r#"{{{SERVICE},"timeout":"0.25s","rules":[{GLOBAL},{RULE}]}}"#)).unwrap();
        let g = c.global.as_ref().unwrap();
        assert_eq!((g.domain.as_str(), g.cluster.as_str()), ("edge", "rls"));
        assert_eq!(g.timeout, std::time::Duration::from_millis(250));
        assert_eq!((g.status_on_error, g.x_envoy_ratelimited), (500, true));
        assert!(c.rules[0].is_global() && !c.rules[1].is_global());
        assert_eq!(
            c.rules[0].kind,
            RuleKind::Global {
                hits_addend: 2,
                pre_bucket: Some(Limits { max_tokens: 5, tokens_per_fill: 1, fill_interval_ns: 1_000_000_000 })
            }
        );
        let c = load(&format!(r#"{{{SERVICE},"rules":[{{"name":"g","actions":[{{"path":{{}}}}],"global":{{}}}}]}}"#))
            .unwrap();
        assert_eq!(c.global.unwrap().timeout, std::time::Duration::from_millis(DEFAULT_TIMEOUT_MS));
        let cases: Vec<(String, &str)> = vec![
            (format!(r#"{{"rules":[{GLOBAL}]}}"#), "domain"),
            (format!(r#"{{"domain":"d","rules":[{GLOBAL}]}}"#), "rate_limit_service"),
            (
                format!(
                    r#"{{"domain":"","rate_limit_service":{{"grpc_service":{{"envoy_grpc":{{"cluster_name":"r"}}}}}},"rules":[{GLOBAL}]}}"#
                ),
                "domain",
            ),
            (
                format!(
                    r#"{{"domain":"d","rate_limit_service":{{"grpc_service":{{"envoy_grpc":{{"cluster_name":""}}}}}},"rules":[{GLOBAL}]}}"#
                ),
                "rate_limit_service.grpc_service.envoy_grpc.cluster_name",
            ),
            (
                format!(
                    r#"{{"domain":"d","rate_limit_service":{{"grpc_service":{{"google_grpc":{{}}}}}},"rules":[{GLOBAL}]}}"#
                ),
                "rate_limit_service.grpc_service.google_grpc",
            ),
            (
                format!(
                    r#"{{"domain":"d","rate_limit_service":{{"grpc_service":{{"envoy_grpc":{{"cluster_name":"r"}}}},"transport_api_version":"V2"}},"rules":[{GLOBAL}]}}"#
                ),
                "rate_limit_service.transport_api_version",
            ),
            (format!(r#"{{{SERVICE},"timeout":"0s","rules":[{GLOBAL}]}}"#), "timeout"),
            (format!(r#"{{{SERVICE},"status_on_error":{{"code":200}},"rules":[{GLOBAL}]}}"#), "status_on_error.code"),
            (format!(r#"{{{SERVICE},"rules":[{RULE}]}}"#), "domain"),
            (format!(r#"{{"timeout":"1s","rules":[{RULE}]}}"#), "timeout"),
            (
                format!(
                    r#"{{{SERVICE},"rules":[{{"name":"g","actions":[{{"path":{{}}}}],"global":{{"hits_addend":0}}}}]}}"#
                ),
                "rules[0].global.hits_addend",
            ),
            (
                format!(
                    r#"{{{SERVICE},"rules":[{{"name":"g","actions":[{{"path":{{}}}}],"global":{{"pre_bucket":{{"max_tokens":0,"fill_interval":"1s"}}}}}}]}}"#
                ),
                "rules[0].global.pre_bucket.max_tokens",
            ),
            (
                format!(
                    r#"{{{SERVICE},"rules":[{{"name":"g","actions":[{{"path":{{}}}}],"global":{{}},"token_bucket":{{"max_tokens":1,"fill_interval":"1s"}}}}]}}"#
                ),
                "rules[0]",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(load(&json).unwrap_err().field, field, "{json}");
        }
    }

    #[test]
    fn options_compile() {
        let c = load(&format!(
            r#"{{"rules":[{RULE}],"status":{{"code":503}},"shadow_mode":true,"enable_x_ratelimit_headers":"DRAFT_VERSION_03",
            "ratelimit_headers":false,"table":{{"max_keys":10,"on_full":"DENY"}},"cas":{{"max_attempts":5,"on_exhausted":"ALLOW"}}}}"#
        ))
        .unwrap();
        assert_eq!(c.status, 503);
        assert!(c.rules[0].shadow && c.x_ratelimit_headers && !c.ratelimit_headers);
        assert_eq!(c.groups, 3, "max_keys rounds up to whole groups of 4");
        assert_eq!(c.on_full, OnFull::Deny);
        assert_eq!((c.cas_max_attempts, c.on_cas_exhausted), (5, OnExhausted::Allow));
        // tokens_per_fill above max_tokens is capped.
        let c = load(r#"{"rules":[{"name":"a","actions":[{"generic_key":{"descriptor_value":"v"}}],"token_bucket":{"max_tokens":3,"tokens_per_fill":9,"fill_interval":"60s"}}]}"#).unwrap();
        assert_eq!(c.rules[0].table_limits().unwrap().tokens_per_fill, 3);
        assert_eq!(c.rules[0].policy_header, "\"a\";q=3;w=60");
        assert_eq!(c.rules[0].actions[0], Action::Generic { key: "generic_key".into(), value: "v".into() });
    }
}
