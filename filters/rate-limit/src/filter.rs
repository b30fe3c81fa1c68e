//! The request path, top to bottom: at request headers, every rule whose `match` fits builds
//! its descriptor. A local rule (and a global rule's pre-bucket) takes a token from its bucket
//! in the local table (a CAS update of one shared-data group); the first exhausted bucket of an
//! enforcing rule answers `429`. The descriptors of the global rules then go to the rate-limit
//! service in one `ShouldRateLimit` call while the request waits; its answer denies, lets the
//! request go on (with the service's headers), or fails per `failure_mode_deny`. Allowed
//! requests get the rate-limit headers on their response.

use crate::address::{self, mask};
use crate::bucket::{ceil_secs, Decision, Limits};
use crate::config::{Action, Compiled, Config, OnExhausted, Rule, KEY_PREFIX};
use crate::rls;
use crate::table::{self, Slot};
use shared::config::ConfigError;
use shared::hash::{keyed, HashKey};
use shared::headers::{is_addable_header, push_decimal};
use shared::host::BodyKind;
use shared::host::HeaderMapKind::{RequestHeaders, ResponseHeaders};
use shared::host::HostExt;
use shared::matching::RouteName;
use shared::shared_cell::{self, CasError};
use shared::stats::Counter;
use shared::{Action as FilterAction, Host, HttpFilter, LogLevel, RootFilter};
use std::borrow::Cow;
use std::net::IpAddr;
use std::rc::Rc;

/// The use the table hash's key is derived for from the per-proxy seed
/// ([`shared::seed::Seed::hash_key`]): no other use of the seed shares it.
pub const TABLE_HASH_LABEL: &str = "rate-limit/table";

/// The hash that places a key's bucket in the table: the rule's name and bucket shape, then
/// the descriptor entries. The shape is part of it because a bucket's state is a point on its
/// shape's token clock (bucket.rs) and means nothing on another's: a reload that changes a
/// rule's rate or size starts that rule's buckets full, as Envoy's local_ratelimit does on
/// every reload, and one that keeps the rule's name and shape keeps them.
pub(crate) fn bucket_hash(key: &HashKey, rule: &str, limits: &Limits, entries: &[Entry<'_>]) -> u64 {
    let shape = [limits.max_tokens, limits.tokens_per_fill, limits.fill_interval_ns].map(u64::to_le_bytes);
    let mut parts: Vec<&[u8]> = Vec::with_capacity(4 + 2 * entries.len());
    parts.push(rule.as_bytes());
    parts.extend(shape.iter().map(|b| b.as_slice()));
    for (k, v) in entries {
        parts.push(k);
        parts.push(v);
    }
    keyed(key, &parts)
}

/// gRPC status for a call whose deadline passed.
const GRPC_DEADLINE_EXCEEDED: u32 = 4;
/// How Envoy (1.36 to 1.40 at least) ends a wasm gRPC call at its timeout: not
/// `DEADLINE_EXCEEDED` but `UNAVAILABLE` with its router's timeout reply as the message (seen
/// in e2e/tests/rate_limit_global.rs with the service slow). The filter's clock cannot tell
/// instead: the call ends a few ms *before* `timeout` has passed on it (Envoy's timer runs on
/// its event loop's cached time).
const ENVOY_TIMEOUT_MESSAGE: &[u8] = b"upstream request timeout";
/// gRPC status `CANCELLED`.
const GRPC_CANCELLED: u32 = 1;

/// The largest service answer read, in bytes. A real one is a few hundred bytes (one status per
/// descriptor, a few headers, maybe a body); Envoy's gRPC client sets no size limit, and the
/// whole answer is copied into the VM's memory before it is decoded. A larger one is an
/// unreadable answer (`rls.error`, then `failure_mode_deny`).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
/// How a tonic-based service (Limitador among them) ends a call whose `grpc-timeout` (which
/// Envoy sends with the filter's `timeout`) has passed on its side: `CANCELLED` with this
/// message. The two deadlines run out at about the same moment, so on a loaded machine the
/// service's answer can arrive before Envoy's own timeout does (seen in CI). Envoy hands the
/// message over as the `grpc-message` trailer carries it, percent-encoded, with its details
/// appended (`Timeout%20expired{via_upstream}`, seen on Envoy 1.40): both spellings count.
const TONIC_TIMEOUT_MESSAGES: [&[u8]; 2] = [b"Timeout expired", b"Timeout%20expired"];

/// Counters, as Envoy shows them under `wasmcustom.rate_limit.`.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Requests some rule applied to that went on to the upstream (shadow-limited included).
    pub allowed: Counter,
    /// Requests denied.
    pub limited: Counter,
    /// Requests a shadow rule would have denied.
    pub shadow_limited: Counter,
    /// Per rule, `rule.<name>.limited` / `rule.<name>.shadow_limited`.
    pub rule_limited: Vec<Counter>,
    pub rule_shadow_limited: Vec<Counter>,
    /// Compare-and-swap writes lost to another worker (each one retried).
    pub cas_conflicts: Counter,
    /// Updates that lost every attempt (`cas.on_exhausted` decided).
    pub cas_exhausted: Counter,
    /// A new key landed in a group holding live buckets of other keys.
    pub slot_collisions: Counter,
    /// A new key took the slot of a full (idle) bucket: no information lost.
    pub slot_reused: Counter,
    /// A new key replaced a live bucket (`table.on_full: EVICT`).
    pub evictions: Counter,
    /// A new key found no slot and was denied (`table.on_full: DENY`).
    pub table_full: Counter,
    /// `x-forwarded-for` absent or malformed: the client is `source.address`.
    pub xff_fallback: Counter,
    /// A rule matched but a descriptor entry was missing: the rule did not apply.
    pub descriptor_missing: Counter,
    /// Shared-data or header host calls that failed.
    pub host_errors: Counter,
    /// A `request_headers` header appeared more than once: refused (400) unless shadow.
    pub duplicate_header: Counter,
    /// Calls to the rate-limit service, by outcome (Envoy's ratelimit stats: `ok`,
    /// `over_limit`, `error`, `failure_mode_allowed`). `timeout` is the part of `error` where
    /// the deadline passed.
    pub rls_ok: Counter,
    pub rls_over_limit: Counter,
    pub rls_error: Counter,
    pub rls_timeout: Counter,
    pub rls_failure_mode_allowed: Counter,
    pub rls_failure_mode_denied: Counter,
}

impl Stats {
    fn define(host: &dyn Host, rules: &[Rule]) -> Self {
        let c = |n: &str| Counter::define(host, &format!("rate_limit.{n}"));
        Stats {
            allowed: c("allowed"),
            limited: c("limited"),
            shadow_limited: c("shadow_limited"),
            rule_limited: rules.iter().map(|r| c(&format!("rule.{}.limited", r.name))).collect(),
            rule_shadow_limited: rules.iter().map(|r| c(&format!("rule.{}.shadow_limited", r.name))).collect(),
            cas_conflicts: c("cas_conflicts"),
            cas_exhausted: c("cas_exhausted"),
            slot_collisions: c("slot_collisions"),
            slot_reused: c("slot_reused"),
            evictions: c("evictions"),
            table_full: c("table_full"),
            xff_fallback: c("xff_fallback"),
            descriptor_missing: c("descriptor_missing"),
            host_errors: c("host_errors"),
            duplicate_header: c("duplicate_header"),
            rls_ok: c("rls.ok"),
            rls_over_limit: c("rls.over_limit"),
            rls_error: c("rls.error"),
            rls_timeout: c("rls.timeout"),
            rls_failure_mode_allowed: c("rls.failure_mode_allowed"),
            rls_failure_mode_denied: c("rls.failure_mode_denied"),
        }
    }
}

/// Where this instance's table lives and how keys are placed in it.
#[derive(Debug)]
pub struct TableRef {
    /// `rate-limit/<plugin name>/`: the shared-data key prefix of the groups.
    pub prefix: String,
    /// The table hash's key, derived from the per-proxy seed ([`TABLE_HASH_LABEL`]).
    pub key: HashKey,
}

/// The plugin's name (Envoy's `config.name`, Istio's `<namespace>.<WasmPlugin name>`): what
/// keeps the tables of two instances in one VM apart. Empty when the host has none.
fn plugin_name(host: &dyn Host) -> String {
    host.property(&["plugin_name"]).map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default()
}

#[derive(Default)]
pub struct RateLimitRoot {
    config: Option<Rc<Compiled>>,
    table: Option<Rc<TableRef>>,
    stats: Rc<Stats>,
}

impl RootFilter for RateLimitRoot {
    type Http = RateLimit;
    const NAME: &'static str = "rate-limit";

    /// Compiles the configuration, then creates every group of the table in shared data before
    /// this worker serves a request: creation is the one write CAS cannot protect, so it never
    /// happens on the request path. Every worker writes the same zero bytes, and only for keys
    /// that do not exist yet, so a reload keeps the buckets.
    fn configure(&mut self, host: &dyn Host, raw_config: Option<&[u8]>) -> Result<(), ConfigError> {
        let compiled = shared::config::load(raw_config, Config::compile)?;
        let seed = shared::seed::agree(host)
            .map_err(|e| ConfigError::new("table", format!("no per-proxy seed for the table hash: {e}")))?;
        let prefix = format!("{KEY_PREFIX}{}/", plugin_name(host));
        for i in 0..compiled.groups {
            shared_cell::ensure_exists(host, &table::group_key(&prefix, i), &table::EMPTY_GROUP)
                .map_err(|e| ConfigError::new("table", format!("cannot create the shared-data table: {e}")))?;
        }
        self.stats = Rc::new(Stats::define(host, &compiled.rules));
        self.table = Some(Rc::new(TableRef { prefix, key: seed.hash_key(TABLE_HASH_LABEL) }));
        self.config = Some(Rc::new(compiled));
        Ok(())
    }

    fn new_http_filter(&self, _context_id: u32) -> Option<RateLimit> {
        Some(RateLimit {
            config: self.config.clone()?,
            table: self.table.clone()?,
            stats: self.stats.clone(),
            evals: Vec::new(),
            global: Vec::new(),
            pending: None,
            response_headers_to_add: Vec::new(),
            replied: false,
        })
    }
}

/// What one rule found for this request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eval {
    pub rule: usize,
    pub remaining: u64,
    pub limited: bool,
    pub retry_after_ns: u64,
    pub full_in_ns: u64,
    pub next_fill_in_ns: u64,
}

/// What the rate-limit service said about one global rule's descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalEval {
    pub rule: usize,
    pub over_limit: bool,
    /// `current_limit`: requests per unit, the unit in seconds (0: unknown), its name.
    pub limit: Option<(u32, u64, String)>,
    pub remaining: u32,
    /// `duration_until_reset`: (whole seconds, rounded up).
    pub reset: Option<(u64, u64)>,
}

/// A `ShouldRateLimit` call in flight: its token and the global rules in descriptor order.
#[derive(Debug)]
struct Pending {
    token: u32,
    rules: Vec<usize>,
}

/// Why a reply is a denial, for its headers.
#[derive(Clone, Copy)]
enum Denial<'a> {
    None,
    Local(&'a Eval),
    Global,
}

/// A descriptor entry, `(key, value)`: borrowed from the configuration where it is fixed (every
/// key, a `generic_key` value), read from the request otherwise.
pub(crate) type Entry<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// A descriptor's entries.
type Entries<'a> = Vec<Entry<'a>>;

/// What a rule's descriptor came to for this request.
enum Descriptor<'a> {
    Entries(Entries<'a>),
    /// An entry is missing: the rule does not apply, as in Envoy.
    Missing,
    /// A `request_headers` header appears more than once (R3): the rule refuses the request.
    Duplicate(String),
}

/// What rules read from the request, read once and only when a rule needs it (a rule that
/// matches no path, route or method and keys on neither costs no host call for them).
struct RequestView<'h> {
    path: Option<String>,
    method: Option<Vec<u8>>,
    client: Option<Option<IpAddr>>,
    headers: Option<Vec<(String, Vec<u8>)>>,
    route: RouteName<'h>,
}

/// Lossy: a non-UTF-8 path still matches the prefixes it starts with.
fn request_path(host: &dyn Host) -> String {
    String::from_utf8_lossy(&host.header(RequestHeaders, ":path").unwrap_or_default()).into_owned()
}

impl<'h> RequestView<'h> {
    fn new(host: &'h dyn Host) -> Self {
        RequestView { path: None, method: None, client: None, headers: None, route: RouteName::of(host) }
    }

    fn path(&mut self, host: &dyn Host) -> &str {
        self.path.get_or_insert_with(|| request_path(host))
    }

    fn method(&mut self, host: &dyn Host) -> &[u8] {
        self.method.get_or_insert_with(|| host.header(RequestHeaders, ":method").unwrap_or_default())
    }
}

pub struct RateLimit {
    config: Rc<Compiled>,
    table: Rc<TableRef>,
    stats: Rc<Stats>,
    evals: Vec<Eval>,
    global: Vec<GlobalEval>,
    pending: Option<Pending>,
    /// The service's `response_headers_to_add`, for the response (or the denial).
    response_headers_to_add: Vec<(String, Vec<u8>)>,
    replied: bool,
}

/// `"<name>"`, the start of an IETF `RateLimit`/`RateLimit-Policy` member (rule names are
/// checked at load to need no escaping).
fn quoted(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 24);
    s.push('"');
    s.push_str(name);
    s.push('"');
    s
}

/// `"<name>";q=<quota>;w=<window seconds>`: a member of the IETF `RateLimit-Policy` header,
/// for a global rule's service-reported limit here and for a local rule's bucket at load
/// (`config::policy_header`).
pub(crate) fn policy_member(name: &str, quota: u64, window: u64) -> String {
    let mut s = quoted(name);
    s.push_str(";q=");
    push_decimal(&mut s, quota);
    s.push_str(";w=");
    push_decimal(&mut s, window);
    s
}

/// `"<name>";r=<remaining>;t=<seconds>`: a member of the IETF `RateLimit` header.
fn state_member(name: &str, remaining: u64, t: u64) -> String {
    let mut s = quoted(name);
    s.push_str(";r=");
    push_decimal(&mut s, remaining);
    s.push_str(";t=");
    push_decimal(&mut s, t);
    s
}

fn now_ns(host: &dyn Host) -> u64 {
    shared::time::nanos(host.now())
}

impl RateLimit {
    /// The client address: the `xff_num_trusted_hops`-th entry from the right of
    /// `x-forwarded-for`, else (0 hops, or an absent, short or malformed header)
    /// `source.address`.
    fn client_ip(&self, host: &dyn Host) -> Option<IpAddr> {
        let hops = self.config.xff_num_trusted_hops as usize;
        if hops > 0 {
            let from_xff = host.header(RequestHeaders, "x-forwarded-for").and_then(|v| address::from_xff(&v, hops));
            if from_xff.is_some() {
                return from_xff;
            }
            self.stats.xff_fallback.inc(host);
        }
        let source = host.property(&["source", "address"])?;
        address::parse_ip(std::str::from_utf8(&source).ok()?)
    }

    fn rule_matches(rule: &Rule, host: &dyn Host, view: &mut RequestView<'_>) -> bool {
        if let Some(m) = &rule.path {
            let RequestView { path, route, .. } = view;
            // Moves the borrow of the cached path in, so the path read outlives the closure.
            let path = move || {
                let path = path;
                Some(path.get_or_insert_with(|| request_path(host)).as_str())
            };
            if !m.matches_with(path, route) {
                return false;
            }
        }
        if !rule.methods.is_empty() {
            let method = view.method(host);
            if !rule.methods.iter().any(|m| m.as_bytes() == method) {
                return false;
            }
        }
        rule.headers.iter().all(|h| {
            let value = host.header(RequestHeaders, &h.name);
            let hit = match &h.exact {
                Some(exact) => value.as_deref() == Some(exact.as_slice()),
                None => value.is_some() == h.present,
            };
            hit != h.invert
        })
    }

    /// The descriptor entries `(key, value)` of a rule for this request, with the values
    /// Envoy's route actions give: `remote_address` the address, `masked_remote_address` the
    /// masked address as a CIDR (`10.1.2.0/24`), `request_headers` the header's only value.
    fn descriptor<'c>(&self, rule: &'c Rule, host: &dyn Host, view: &mut RequestView<'_>) -> Descriptor<'c> {
        let mut entries = Vec::with_capacity(rule.actions.len());
        for action in &rule.actions {
            match action {
                Action::RemoteAddress { key, v4, v6 } => {
                    let ip = *view.client.get_or_insert_with(|| self.client_ip(host));
                    let Some(ip) = ip else { return Descriptor::Missing };
                    let value = if *key == "masked_remote_address" {
                        let len = if ip.is_ipv4() { *v4 } else { *v6 };
                        format!("{}/{len}", mask(ip, *v4, *v6))
                    } else {
                        ip.to_string()
                    };
                    entries.push((Cow::Borrowed(key.as_bytes()), Cow::Owned(value.into_bytes())));
                }
                Action::RequestHeader { name, key, skip_if_absent } => {
                    let value = if name.starts_with(':') {
                        // Pseudo-headers occur once.
                        host.header(RequestHeaders, name)
                    } else {
                        let all = view.headers.get_or_insert_with(|| host.headers(RequestHeaders));
                        let mut values = all.iter().filter(|(k, _)| k == name);
                        let first = values.next().map(|(_, v)| v.clone());
                        if values.next().is_some() {
                            return Descriptor::Duplicate(name.clone());
                        }
                        first
                    };
                    match value {
                        Some(v) => entries.push((Cow::Borrowed(key.as_bytes()), Cow::Owned(v))),
                        None if *skip_if_absent => {}
                        None => return Descriptor::Missing,
                    }
                }
                Action::Generic { key, value } => {
                    entries.push((Cow::Borrowed(key.as_bytes()), Cow::Borrowed(value.as_bytes())))
                }
                Action::Path => {
                    let p = shared::matching::path_without_query(view.path(host));
                    entries.push((Cow::Borrowed(&b"path"[..]), Cow::Owned(p.as_bytes().to_vec())));
                }
            }
        }
        Descriptor::Entries(entries)
    }

    /// Take one token from the bucket of `rule` for `entries`. `None`: the rule is skipped
    /// (a failure the configuration says to allow).
    fn take(&self, host: &dyn Host, index: usize, limits: Limits, entries: &[Entry<'_>], now: u64) -> Option<Eval> {
        let config = &self.config;
        let rule = config.rules.get(index)?;
        let hash = bucket_hash(&self.table.key, &rule.name, &limits, entries);
        let (group, tag, tie) = table::place(hash, index, config.groups);
        let key = table::group_key(&self.table.prefix, group);
        let limits_of = |r: usize| config.rules.get(r).and_then(Rule::table_limits);
        let result = shared_cell::update(host, &key, config.cas_max_attempts, |bytes| {
            let mut group = table::decode(bytes);
            let slot = table::find_slot(&group, tag, now, &limits_of, config.on_full, tie);
            let x = match slot {
                Slot::Found(i) => group[i].x,
                Slot::Free { .. } => 0,
                Slot::Evicted(i) => {
                    let victim = group[i];
                    let full_in = table::full_in_ns(&victim, now, &limits_of);
                    table::inherited_state(&victim, index, &limits, now, full_in)
                }
                Slot::Full => return (None, (slot, None)),
            };
            let at = match slot {
                Slot::Found(i) | Slot::Free { index: i, .. } | Slot::Evicted(i) => i,
                Slot::Full => return (None, (slot, None)),
            };
            let d: Decision = limits.take(x, now);
            if !d.allowed {
                return (None, (slot, Some(d)));
            }
            group[at] = table::Entry { tag, x: d.x };
            (Some(table::encode(&group)), (slot, Some(d)))
        });
        let failed = |deny: bool| {
            deny.then_some(Eval {
                rule: index,
                remaining: 0,
                limited: true,
                retry_after_ns: limits.next_fill_in_ns(now),
                full_in_ns: limits.fill_interval_ns,
                next_fill_in_ns: limits.next_fill_in_ns(now),
            })
        };
        match result {
            Ok(updated) => {
                self.stats.cas_conflicts.add(host, u64::from(updated.conflicts));
                let (slot, decision) = updated.result;
                match slot {
                    Slot::Free { reused, shared, .. } => {
                        if reused {
                            self.stats.slot_reused.inc(host);
                        }
                        if shared {
                            self.stats.slot_collisions.inc(host);
                        }
                    }
                    Slot::Evicted(_) => {
                        self.stats.slot_collisions.inc(host);
                        // Replaced only when the newcomer was admitted (a refusal writes nothing).
                        if decision.is_some_and(|d| d.allowed) {
                            self.stats.evictions.inc(host);
                        }
                    }
                    Slot::Full => self.stats.table_full.inc(host),
                    Slot::Found(_) => {}
                }
                match decision {
                    Some(d) => Some(Eval {
                        rule: index,
                        remaining: d.remaining,
                        limited: !d.allowed,
                        retry_after_ns: d.retry_after_ns,
                        full_in_ns: d.full_in_ns,
                        next_fill_in_ns: d.next_fill_in_ns,
                    }),
                    // Table full under on_full: DENY.
                    None => failed(true),
                }
            }
            Err(CasError::Contended { attempts }) => {
                self.stats.cas_exhausted.inc(host);
                self.stats.cas_conflicts.add(host, u64::from(attempts));
                host.log_with(LogLevel::Warn, || {
                    format!("rate-limit: rule {}: bucket still contended after {attempts} attempts", rule.name)
                });
                failed(config.on_cas_exhausted == OnExhausted::Deny)
            }
            Err(e) => {
                self.stats.host_errors.inc(host);
                host.log_with(LogLevel::Error, || format!("rate-limit: rule {}: shared data: {e}", rule.name));
                failed(config.failure_mode_deny)
            }
        }
    }

    /// The rate-limit headers for the rules that applied: the IETF fields (a global rule
    /// reports the service's numbers; its pre-bucket is internal), `x-ratelimit-*` (from the
    /// service's statuses exactly as Envoy's ratelimit filter builds them when any global rule
    /// reported a limit, else from the most restrictive local bucket, as local_ratelimit), and
    /// on a denial `Retry-After` (and `x-envoy-ratelimited` for the service's).
    fn headers(&self, denial: Denial) -> Vec<(Cow<'static, str>, String)> {
        let mut out: Vec<(Cow<'static, str>, String)> = Vec::new();
        self.each_header(denial, &mut |name, value| out.push((Cow::Borrowed(name), value.to_owned())));
        out
    }

    /// [`RateLimit::headers`], handed to `emit` one by one as they are built (the response
    /// path writes each at once: no list, and the values share one buffer).
    fn each_header(&self, denial: Denial, emit: &mut dyn FnMut(&'static str, &str)) {
        let config = &self.config;
        let mut scratch = String::new();
        let mut number = |name: &'static str, n: u64, emit: &mut dyn FnMut(&'static str, &str)| {
            scratch.clear();
            push_decimal(&mut scratch, n);
            emit(name, &scratch);
        };
        if config.ratelimit_headers {
            // (rule index, policy member, state member), in rule order.
            let mut members: Vec<(usize, Cow<'_, str>, String)> = Vec::new();
            for g in &self.global {
                let (Some(rule), Some((quota, unit, _))) = (config.rules.get(g.rule), &g.limit) else { continue };
                let t = g.reset.map_or(0, |r| r.1);
                let policy = policy_member(&rule.name, u64::from(*quota), (*unit).max(1));
                members.push((g.rule, Cow::Owned(policy), state_member(&rule.name, u64::from(g.remaining), t)));
            }
            for e in &self.evals {
                let Some(rule) = config.rules.get(e.rule) else { continue };
                if rule.is_global() && !self.global.is_empty() {
                    continue;
                }
                members.push((
                    e.rule,
                    Cow::Borrowed(rule.policy_header.as_str()),
                    state_member(&rule.name, e.remaining, ceil_secs(e.full_in_ns)),
                ));
            }
            members.sort_by_key(|m| m.0);
            if !members.is_empty() {
                emit("ratelimit-policy", &members.iter().map(|m| m.1.as_ref()).collect::<Vec<_>>().join(", "));
                emit("ratelimit", &members.iter().map(|m| m.2.as_str()).collect::<Vec<_>>().join(", "));
            }
        }
        if config.x_ratelimit_headers && !self.x_ratelimit_from_service(emit) {
            if let Some(e) = self.evals.iter().min_by_key(|e| e.remaining) {
                // As local_ratelimit: the most restrictive bucket (fewest tokens left).
                if let Some(limits) = config.rules.get(e.rule).and_then(Rule::table_limits) {
                    number("x-ratelimit-limit", limits.max_tokens, emit);
                    number("x-ratelimit-remaining", e.remaining, emit);
                    number("x-ratelimit-reset", ceil_secs(e.next_fill_in_ns), emit);
                }
            }
        }
        match denial {
            Denial::None => {}
            Denial::Local(d) => number("retry-after", ceil_secs(d.retry_after_ns).max(1), emit),
            Denial::Global => {
                let enforcing_over =
                    |g: &&GlobalEval| g.over_limit && config.rules.get(g.rule).is_some_and(|r| !r.shadow);
                if let Some(wait) = self.global.iter().filter(enforcing_over).filter_map(|g| g.reset.map(|r| r.1)).max()
                {
                    number("retry-after", wait.max(1), emit);
                }
                if config.global.as_ref().is_some_and(|g| g.x_envoy_ratelimited) {
                    emit("x-envoy-ratelimited", "true");
                }
            }
        }
    }

    /// `x-ratelimit-*` as Envoy's ratelimit filter (`XRateLimitHeaderUtils::create`): the
    /// status with the fewest remaining (first on ties) among those with a limit gives
    /// `remaining` and `reset` (whole seconds); `limit` is its quota followed by
    /// `, <quota>;w=<unit seconds>[;name="<limit name>"]` for every status with a known unit.
    fn x_ratelimit_from_service(&self, emit: &mut dyn FnMut(&'static str, &str)) -> bool {
        let mut min: Option<&GlobalEval> = None;
        for g in &self.global {
            if g.limit.is_some() && min.is_none_or(|m| g.remaining < m.remaining) {
                min = Some(g);
            }
        }
        let Some(m) = min else { return false };
        let mut value = String::with_capacity(64);
        push_decimal(&mut value, u64::from(m.limit.as_ref().map_or(0, |l| l.0)));
        for g in &self.global {
            let Some((quota, unit, name)) = &g.limit else { continue };
            if *unit > 0 {
                value.push_str(", ");
                push_decimal(&mut value, u64::from(*quota));
                value.push_str(";w=");
                push_decimal(&mut value, *unit);
                // The service's limit name goes into a quoted string: only when it can be one
                // (a CR or LF would split the header; found by the rate_limit_rls_answer fuzz
                // target).
                if !name.is_empty() && name.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') {
                    value.push_str(";name=\"");
                    value.push_str(name);
                    value.push('"');
                }
            }
        }
        emit("x-ratelimit-limit", &value);
        value.clear();
        push_decimal(&mut value, u64::from(m.remaining));
        emit("x-ratelimit-remaining", &value);
        value.clear();
        push_decimal(&mut value, m.reset.map_or(0, |r| r.0));
        emit("x-ratelimit-reset", &value);
        true
    }

    /// Answer the request now: a denial, with its headers. `Pause` either way: a reply the
    /// host refuses leaves the request paused (denied by reset), never passed on.
    fn reply(
        &mut self,
        host: &dyn Host,
        status: u32,
        body: &[u8],
        headers: Vec<(Cow<'static, str>, String)>,
    ) -> FilterAction {
        self.replied = true;
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 1);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            all.push(("content-type", "text/plain"));
        }
        all.extend(headers.iter().map(|(k, v)| (k.as_ref(), v.as_str())));
        if host.send_local_response(status, &all, body).is_err() {
            self.stats.host_errors.inc(host);
            host.log(LogLevel::Error, "rate-limit: the host refused the local reply; the request is denied by reset");
        }
        FilterAction::Pause
    }

    fn count_limited(&self, host: &dyn Host, index: usize, shadow: bool) {
        let (all, per_rule) = if shadow {
            (&self.stats.shadow_limited, &self.stats.rule_shadow_limited)
        } else {
            (&self.stats.limited, &self.stats.rule_limited)
        };
        all.inc(host);
        if let Some(c) = per_rule.get(index) {
            c.inc(host);
        }
    }

    /// One `ShouldRateLimit` call with the descriptors of the global rules that applied; the
    /// request waits for it.
    fn call_service(&mut self, host: &dyn Host, rules: Vec<(usize, Entries<'_>)>) -> FilterAction {
        let config = self.config.clone();
        let Some(service) = &config.global else { return FilterAction::Continue };
        let hits_of = |i: usize| match config.rules.get(i).map(|r| r.kind) {
            Some(crate::config::RuleKind::Global { hits_addend, .. }) => hits_addend,
            _ => 1,
        };
        // One hits_addend for all: the request's field (what every service reads); different
        // ones: each descriptor's own.
        let first = rules.first().map(|(i, _)| hits_of(*i));
        let common = rules.iter().all(|(i, _)| Some(hits_of(*i)) == first);
        let message = rls::encode_request(
            &service.domain,
            rules.iter().map(|(i, entries)| (entries.as_slice(), (!common).then(|| u64::from(hits_of(*i))))),
            if common { first.filter(|h| *h != 1).unwrap_or(0) } else { 0 },
        );
        let order: Vec<usize> = rules.into_iter().map(|(i, _)| i).collect();
        match host.dispatch_grpc_call(&service.cluster, rls::SERVICE, rls::METHOD, &[], &message, service.timeout) {
            Ok(token) => {
                self.pending = Some(Pending { token, rules: order });
                FilterAction::Pause
            }
            Err(e) => {
                self.stats.rls_error.inc(host);
                host.log_with(LogLevel::Error, || {
                    format!("rate-limit: cannot call the rate-limit service (cluster {}): {e}", service.cluster)
                });
                self.service_failed(host, &order)
            }
        }
    }

    /// The service gave no answer: allow (counted) or, with `failure_mode_deny` and an
    /// enforcing rule among `rules`, deny with `status_on_error`.
    fn service_failed(&mut self, host: &dyn Host, rules: &[usize]) -> FilterAction {
        let config = self.config.clone();
        let enforcing = rules.iter().any(|i| config.rules.get(*i).is_some_and(|r| !r.shadow));
        if config.failure_mode_deny && enforcing {
            self.stats.rls_failure_mode_denied.inc(host);
            let status = config.global.as_ref().map_or(500, |g| g.status_on_error);
            return self.reply(host, status, b"rate limit service unavailable", Vec::new());
        }
        self.stats.rls_failure_mode_allowed.inc(host);
        self.stats.allowed.inc(host);
        FilterAction::Continue
    }

    /// The service's answer to the pending call.
    fn on_service_answer(&mut self, host: &dyn Host, pending: Pending, status: u32, size: usize) -> FilterAction {
        let config = self.config.clone();
        if status != 0 {
            self.stats.rls_error.inc(host);
            let message = host.call_status().map(|(_, m)| m).unwrap_or_default();
            let timed_out = status == GRPC_DEADLINE_EXCEEDED
                || message.starts_with(ENVOY_TIMEOUT_MESSAGE)
                || (status == GRPC_CANCELLED && TONIC_TIMEOUT_MESSAGES.iter().any(|m| message.starts_with(m)));
            if timed_out {
                self.stats.rls_timeout.inc(host);
            }
            // No clock read per call for this line: the status and the timeout say enough.
            host.log_with(LogLevel::Warn, || {
                let message = String::from_utf8_lossy(&message);
                let timeout_ms = config.global.as_ref().map_or(0, |g| u64::try_from(g.timeout.as_millis()).unwrap_or(u64::MAX));
                let kind = if timed_out { "timed out" } else { "failed" };
                format!(
                    "rate-limit: rate-limit service call {kind} (timeout {timeout_ms} ms): gRPC status {status} {message}"
                )
            });
            return self.service_failed(host, &pending.rules);
        }
        if size > MAX_ANSWER_BYTES {
            self.stats.rls_error.inc(host);
            host.log_with(LogLevel::Warn, || {
                format!(
                    "rate-limit: rate-limit service answer of {size} bytes, larger than {MAX_ANSWER_BYTES}: not read"
                )
            });
            return self.service_failed(host, &pending.rules);
        }
        let bytes = host.body(BodyKind::GrpcReceive, 0, size).unwrap_or_default();
        let response = match rls::decode_response(&bytes) {
            Ok(r) if r.overall_code == rls::CODE_OK || r.overall_code == rls::CODE_OVER_LIMIT => r,
            Ok(r) => {
                self.stats.rls_error.inc(host);
                host.log_with(LogLevel::Warn, || {
                    format!("rate-limit: rate-limit service answered overall_code {}", r.overall_code)
                });
                return self.service_failed(host, &pending.rules);
            }
            Err(e) => {
                self.stats.rls_error.inc(host);
                host.log_with(LogLevel::Warn, || format!("rate-limit: unreadable rate-limit service answer: {e}"));
                return self.service_failed(host, &pending.rules);
            }
        };
        if response.overall_code == rls::CODE_OVER_LIMIT {
            self.stats.rls_over_limit.inc(host);
        } else {
            self.stats.rls_ok.inc(host);
        }
        // One status per descriptor, in order (the protocol); otherwise only the overall code
        // is known, and it stands for every rule.
        let per_descriptor = response.statuses.len() == pending.rules.len();
        // The overall code decides, as in Envoy: OK admits whatever a status says, OVER_LIMIT
        // denies. The statuses only tell which rules were over (for shadow mode); when none
        // says so, the overall code stands for every rule.
        let overall_over = response.overall_code == rls::CODE_OVER_LIMIT;
        let marked = per_descriptor && response.statuses.iter().any(|s| s.code == rls::CODE_OVER_LIMIT);
        for (i, rule) in pending.rules.iter().enumerate() {
            let status = per_descriptor.then(|| &response.statuses[i]);
            self.global.push(GlobalEval {
                rule: *rule,
                over_limit: overall_over && (!marked || status.is_some_and(|s| s.code == rls::CODE_OVER_LIMIT)),
                limit: status
                    .and_then(|s| s.current_limit.as_ref())
                    .map(|l| (l.requests_per_unit, rls::unit_seconds(l.unit), l.name.to_owned())),
                remaining: status.map_or(0, |s| s.limit_remaining),
                reset: status
                    .and_then(|s| s.duration_until_reset.as_ref())
                    .map(|d| (d.whole_seconds(), d.ceil_seconds())),
            });
        }
        // The service's headers go to Envoy only when they are headers it may add (a CR or LF
        // would split the message, a `:status` on the denial change its status, a `host` or
        // `content-length` misroute or misframe it): the rest is dropped and logged.
        let addable = |h: &rls::HeaderValue<'_>| {
            let ok = is_addable_header(h.key, h.value_bytes());
            if !ok {
                host.log_with(LogLevel::Warn, || {
                    format!("rate-limit: dropped the rate-limit service's header {:?}: not one it may add", h.key)
                });
            }
            ok
        };
        self.response_headers_to_add = response
            .response_headers_to_add
            .iter()
            .filter(|h| addable(h))
            .map(|h| (h.key.to_ascii_lowercase(), h.value_bytes().to_vec()))
            .collect();
        let mut denied = false;
        for rule in self.global.iter().filter(|g| g.over_limit).map(|g| g.rule) {
            let shadow = config.rules.get(rule).is_none_or(|r| r.shadow);
            self.count_limited(host, rule, shadow);
            denied |= !shadow;
        }
        if denied {
            let mut headers = self.headers(Denial::Global);
            headers.extend(
                self.response_headers_to_add
                    .iter()
                    .map(|(k, v)| (Cow::Owned(k.clone()), String::from_utf8_lossy(v).into_owned())),
            );
            let body: &[u8] = if response.raw_body.is_empty() { b"rate limited" } else { response.raw_body };
            return self.reply(host, config.status, body, headers);
        }
        for h in response.request_headers_to_add.iter().filter(|h| addable(h)) {
            if host.add_header(RequestHeaders, h.key, h.value_bytes()).is_err() {
                self.stats.host_errors.inc(host);
            }
        }
        self.stats.allowed.inc(host);
        FilterAction::Continue
    }
}

impl HttpFilter for RateLimit {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> FilterAction {
        let config = self.config.clone();
        let mut view = RequestView::new(host);
        // Read when a bucket needs it: a request that only global rules apply to needs no clock.
        let mut now = None;
        let mut global = Vec::new();
        for (index, rule) in config.rules.iter().enumerate() {
            if !Self::rule_matches(rule, host, &mut view) {
                continue;
            }
            let entries = match self.descriptor(rule, host, &mut view) {
                Descriptor::Entries(e) => e,
                Descriptor::Missing => {
                    self.stats.descriptor_missing.inc(host);
                    continue;
                }
                Descriptor::Duplicate(name) => {
                    self.stats.duplicate_header.inc(host);
                    host.log_with(LogLevel::Debug, || {
                        format!("rate-limit: rule {}: header {name} appears more than once", rule.name)
                    });
                    if rule.shadow {
                        continue;
                    }
                    let body = format!("duplicate {name} header");
                    return self.reply(host, 400, body.as_bytes(), Vec::new());
                }
            };
            if let Some(limits) = rule.table_limits() {
                let now = *now.get_or_insert_with(|| now_ns(host));
                if let Some(eval) = self.take(host, index, limits, &entries, now) {
                    self.evals.push(eval);
                    if eval.limited {
                        self.count_limited(host, index, rule.shadow);
                        if !rule.shadow {
                            let headers = self.headers(Denial::Local(&eval));
                            return self.reply(host, config.status, b"rate limited", headers);
                        }
                    }
                }
            }
            if rule.is_global() {
                global.push((index, entries));
            }
        }
        if !global.is_empty() {
            return self.call_service(host, global);
        }
        if !self.evals.is_empty() {
            self.stats.allowed.inc(host);
        }
        FilterAction::Continue
    }

    fn on_grpc_call_response(
        &mut self,
        host: &dyn Host,
        token: u32,
        status_code: u32,
        message_size: usize,
    ) -> FilterAction {
        match self.pending.take() {
            Some(p) if p.token == token => self.on_service_answer(host, p, status_code, message_size),
            other => {
                self.pending = other;
                FilterAction::Continue
            }
        }
    }

    fn on_response_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> FilterAction {
        if self.replied {
            return FilterAction::Continue;
        }
        self.each_header(Denial::None, &mut |name, value| {
            if host.set_header(ResponseHeaders, name, value.as_bytes()).is_err() {
                self.stats.host_errors.inc(host);
            }
        });
        // As Envoy's ratelimit filter: appended, the upstream's own values kept.
        for (name, value) in &self.response_headers_to_add {
            if host.add_header(ResponseHeaders, name, value).is_err() {
                self.stats.host_errors.inc(host);
            }
        }
        FilterAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::proxytest::{Proxy, Worker};
    use std::time::{Duration, UNIX_EPOCH};

    const T0: u64 = 1_700_000_040; // a multiple of 60 s: fills of every interval used here happen at T0

    type W = Worker<RateLimitRoot>;

    /// One proxy (its shared data and clock) at `at_ns` after the epoch.
    fn proxy_at(at_ns: u64) -> Proxy {
        let p = Proxy::new();
        p.set_now(UNIX_EPOCH + Duration::from_nanos(at_ns));
        p.set_property(&["plugin_name"], b"rl");
        p
    }

    /// One request through worker `w` with these headers and source address; returns (status,
    /// response headers).
    fn send(w: &mut W, headers: &[(&str, &str)], source: &str) -> (u32, Vec<(String, String)>) {
        let mut all = vec![(":method", "GET"), (":path", "/")];
        for (k, v) in headers {
            all.retain(|(name, _)| name != k);
            all.push((k, v));
        }
        let id = w.new_stream();
        w.set_property(id, &["source", "address"], source.as_bytes());
        match w.request_headers(id, &all, true) {
            FilterAction::Pause => {
                let r = w.local_reply(id).unwrap();
                (r.status, r.headers)
            }
            _ => {
                w.response_headers(id, &[], true);
                let headers = w
                    .headers(id, ResponseHeaders)
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect();
                (200, headers)
            }
        }
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    const PER_IP: &str = r#"{"rules":[{"name":"per_ip","actions":[{"remote_address":{}}],
        "token_bucket":{"max_tokens":3,"tokens_per_fill":2,"fill_interval":"1s"}}],
        "enable_x_ratelimit_headers":"DRAFT_VERSION_03"}"#;

    #[test]
    fn configure_creates_every_group_before_traffic() {
        let p = proxy_at(T0 * 1_000_000_000);
        let _w: W = p.worker(
            r#"{"rules":[{"name":"a","actions":[{"path":{}}],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}}],"table":{"max_keys":40}}"#,
        );
        for i in 0..10 {
            assert_eq!(p.shared_data(&format!("rate-limit/rl/{i}")).0.unwrap(), table::EMPTY_GROUP.to_vec());
        }
        assert_eq!(p.shared_data("rate-limit/rl/10"), (None, None), "exactly max_keys / 4 groups");
    }

    #[test]
    fn burst_then_deny_with_headers_then_refill() {
        let p = proxy_at(T0 * 1_000_000_000 + 100_000_000);
        let mut w: W = p.worker(PER_IP);
        for remaining in [2, 1, 0] {
            let (status, h) = send(&mut w, &[], "10.0.0.1:4000");
            assert_eq!(status, 200);
            assert_eq!(header(&h, "ratelimit-policy"), Some("\"per_ip\";q=3;w=2"));
            assert_eq!(header(&h, "x-ratelimit-limit"), Some("3"));
            assert_eq!(header(&h, "x-ratelimit-remaining").unwrap(), remaining.to_string());
            assert_eq!(header(&h, "x-ratelimit-reset"), Some("1"));
            assert!(header(&h, "retry-after").is_none());
        }
        let (status, h) = send(&mut w, &[], "10.0.0.1:4001");
        assert_eq!(status, 429, "same IP, another port");
        assert_eq!(header(&h, "retry-after"), Some("1"));
        assert_eq!(header(&h, "ratelimit"), Some("\"per_ip\";r=0;t=2"));
        assert_eq!(header(&h, "x-ratelimit-remaining"), Some("0"));
        assert_eq!(header(&h, "content-type"), Some("text/plain"));
        // Another client is independent.
        assert_eq!(send(&mut w, &[], "10.0.0.2:4000").0, 200);
        // One fill later: exactly tokens_per_fill more.
        p.advance(Duration::from_secs(1));
        let statuses: Vec<u32> = (0..4).map(|_| send(&mut w, &[], "10.0.0.1:1").0).collect();
        assert_eq!(statuses, [200, 200, 429, 429]);
        assert_eq!(p.metric("rate_limit.limited"), Some(3));
        assert_eq!(p.metric("rate_limit.rule.per_ip.limited"), Some(3));
        assert_eq!(p.metric("rate_limit.allowed"), Some(6));
    }

    #[test]
    fn a_reload_keeps_a_rules_buckets_unless_its_shape_changes() {
        // Regression (e2e reload.rs): a reload that made a rule slower (the same name, 4 an
        // hour → 4 a day) read its buckets' states on the slower clock as decades of debt, and
        // the keys were denied. A reload is a new configuration on the same shared data.
        let rule = |interval: &str| {
            format!(
                r#"{{"rules":[{{"name":"per_ip","actions":[{{"remote_address":{{}}}}],
                "token_bucket":{{"max_tokens":4,"tokens_per_fill":4,"fill_interval":"{interval}"}}}}]}}"#
            )
        };
        let p = proxy_at(T0 * 1_000_000_000);
        let mut hourly: W = p.worker(&rule("3600s"));
        assert_eq!(send(&mut hourly, &[], "10.0.0.1:1").0, 200);
        // The same rule again: the same bucket, one token spent.
        let mut again: W = p.worker(&rule("3600s"));
        let statuses: Vec<u32> = (0..4).map(|_| send(&mut again, &[], "10.0.0.1:1").0).collect();
        assert_eq!(statuses, [200, 200, 200, 429]);
        // Slower: a bucket of the new shape, full.
        let mut daily: W = p.worker(&rule("86400s"));
        let statuses: Vec<u32> = (0..5).map(|_| send(&mut daily, &[], "10.0.0.1:1").0).collect();
        assert_eq!(statuses, [200, 200, 200, 200, 429]);
    }

    #[test]
    fn a_slowed_rules_old_entries_do_not_hold_the_table() {
        // Found in review (review3): after a reload that slows a rule, the entries its old
        // shape wrote sit far beyond the new shape's clock (decades of debt on it), so they are
        // never free; a new key that had to evict one inherited that state and was denied, and
        // with DENY the group stayed full. One group of 4: filled by the old shape, then 4 new
        // keys of the new shape.
        for on_full in ["EVICT", "DENY"] {
            let rule = |interval: &str| {
                format!(
                    r#"{{"rules":[{{"name":"per_ip","actions":[{{"remote_address":{{}}}}],
                    "token_bucket":{{"max_tokens":4,"tokens_per_fill":4,"fill_interval":"{interval}"}}}}],
                    "table":{{"max_keys":4,"on_full":"{on_full}"}}}}"#
                )
            };
            let p = proxy_at(T0 * 1_000_000_000);
            let mut hourly: W = p.worker(&rule("3600s"));
            for i in 1..=4 {
                assert_eq!(send(&mut hourly, &[], &format!("10.0.0.{i}:1")).0, 200);
            }
            // An hour on, every old bucket is full again on its own clock.
            p.advance(Duration::from_secs(3_600));
            let mut daily: W = p.worker(&rule("86400s"));
            let statuses: Vec<u32> = (5..=8).map(|i| send(&mut daily, &[], &format!("10.0.0.{i}:1")).0).collect();
            assert_eq!(statuses, [200, 200, 200, 200], "{on_full}");
        }
    }

    #[test]
    fn workers_share_one_budget() {
        // Two worker VMs (two roots) on one proxy's shared data: one budget.
        let p = proxy_at(T0 * 1_000_000_000);
        let mut a: W = p.worker(PER_IP);
        let mut b: W = p.worker(PER_IP);
        let statuses: Vec<u32> =
            (0..6).map(|i| send(if i % 2 == 0 { &mut a } else { &mut b }, &[], "10.0.0.1:1").0).collect();
        assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    }

    #[test]
    fn two_instances_in_one_vm_never_share_buckets() {
        // One VM's shared data, two plugins (e.g. per-IP before jwt-auth and per-claim after
        // it) with the same rule name and descriptor: their tables are apart, by plugin name.
        let p = proxy_at(T0 * 1_000_000_000);
        p.set_property(&["plugin_name"], b"before-auth");
        let mut a: W = p.worker(PER_IP);
        p.set_property(&["plugin_name"], b"after-auth");
        let mut b: W = p.worker(PER_IP);
        let statuses: Vec<u32> = (0..4).map(|_| send(&mut a, &[], "10.0.0.1:1").0).collect();
        assert_eq!(statuses, [200, 200, 200, 429]);
        let statuses: Vec<u32> = (0..4).map(|_| send(&mut b, &[], "10.0.0.1:1").0).collect();
        assert_eq!(statuses, [200, 200, 200, 429], "the second instance has its own bucket");
        assert!(p.shared_data("rate-limit/before-auth/0").0.is_some());
        assert!(p.shared_data("rate-limit/after-auth/0").0.is_some());
        // The control: a third worker of the first plugin shares its budget.
        p.set_property(&["plugin_name"], b"before-auth");
        let mut c: W = p.worker(PER_IP);
        assert_eq!(send(&mut c, &[], "10.0.0.1:1").0, 429);
    }

    #[test]
    fn xff_trusted_hops_and_fallback() {
        let json = r#"{"xff_num_trusted_hops":2,"rules":[{"name":"ip","actions":[{"remote_address":{}}],
            "token_bucket":{"max_tokens":1,"fill_interval":"60s"}}]}"#;
        let p = proxy_at(T0 * 1_000_000_000);
        let mut w: W = p.worker(json);
        // The client is the 2nd from the right; what a client prepends is not trusted.
        assert_eq!(send(&mut w, &[("x-forwarded-for", "6.6.6.6, 1.1.1.1, 9.9.9.9")], "127.0.0.1:1").0, 200);
        assert_eq!(send(&mut w, &[("x-forwarded-for", "7.7.7.7, 1.1.1.1, 8.8.8.8")], "127.0.0.1:1").0, 429);
        assert_eq!(send(&mut w, &[("x-forwarded-for", "1.1.1.2,9.9.9.9")], "127.0.0.1:1").0, 200);
        // Malformed or too short: the peer address, counted.
        assert_eq!(send(&mut w, &[("x-forwarded-for", "junk, 9.9.9.9")], "127.0.0.1:1").0, 200);
        assert_eq!(send(&mut w, &[("x-forwarded-for", "9.9.9.9")], "127.0.0.1:2").0, 429);
        assert_eq!(send(&mut w, &[], "[::1]:443").0, 200);
        assert_eq!(p.metric("rate_limit.xff_fallback"), Some(3));
        // IPv6 in XFF, with a port.
        assert_eq!(send(&mut w, &[("x-forwarded-for", "[2001:db8::1]:80, 9.9.9.9")], "127.0.0.1:1").0, 200);
        assert_eq!(send(&mut w, &[("x-forwarded-for", "2001:db8::1, 9.9.9.9")], "127.0.0.1:1").0, 429);
    }

    #[test]
    fn masked_addresses_share_a_bucket() {
        let json = r#"{"rules":[{"name":"net","actions":[{"masked_remote_address":{"v4_prefix_mask_len":24,"v6_prefix_mask_len":64}}],
            "token_bucket":{"max_tokens":1,"fill_interval":"60s"}}]}"#;
        let p = proxy_at(T0 * 1_000_000_000);
        let mut w: W = p.worker(json);
        assert_eq!(send(&mut w, &[], "10.1.2.3:1").0, 200);
        assert_eq!(send(&mut w, &[], "10.1.2.200:1").0, 429);
        assert_eq!(send(&mut w, &[], "10.1.3.1:1").0, 200);
        assert_eq!(send(&mut w, &[], "[2001:db8:0:1::5]:1").0, 200);
        assert_eq!(send(&mut w, &[], "[2001:db8:0:1:ffff::9]:1").0, 429);
    }

    #[test]
    fn ipv4_mapped_ipv6_clients_are_ipv4_clients_before_masking() {
        // R2: `::ffff:a.b.c.d` masked to /64 used to be `::`, one bucket for every such client.
        let json = r#"{"rules":[{"name":"net","actions":[{"masked_remote_address":{"v4_prefix_mask_len":32,"v6_prefix_mask_len":64}}],
            "token_bucket":{"max_tokens":1,"fill_interval":"60s"}}]}"#;
        let p = proxy_at(T0 * 1_000_000_000);
        let mut w: W = p.worker(json);
        assert_eq!(send(&mut w, &[], "[::ffff:192.0.2.1]:1").0, 200);
        assert_eq!(send(&mut w, &[], "[::ffff:198.51.100.7]:1").0, 200, "another IPv4 client");
        // The same client over IPv4 and IPv4-mapped IPv6 is one client.
        assert_eq!(send(&mut w, &[], "192.0.2.1:2").0, 429);
        assert_eq!(send(&mut w, &[], "[::ffff:c000:201]:3").0, 429);
        // A real IPv6 /64 still shares a bucket.
        assert_eq!(send(&mut w, &[], "[2001:db8::1]:1").0, 200);
        assert_eq!(send(&mut w, &[], "[2001:db8::2]:1").0, 429);
    }

    #[test]
    fn matching_descriptors_and_several_rules() {
        let json = r#"{"rules":[
          {"name":"login","match":{"path":"/login","methods":["POST"]},"actions":[{"remote_address":{}}],
           "token_bucket":{"max_tokens":1,"fill_interval":"60s"}},
          {"name":"key","match":{"prefix":"/api/","headers":[{"name":"x-internal","present_match":true,"invert_match":true}]},
           "actions":[{"request_headers":{"header_name":"x-api-key","descriptor_key":"api_key"}},{"path":{}}],
           "token_bucket":{"max_tokens":2,"fill_interval":"60s"}},
          {"name":"all","actions":[{"generic_key":{"descriptor_value":"everyone"}}],
           "token_bucket":{"max_tokens":100,"tokens_per_fill":100,"fill_interval":"60s"}}]}"#;
        let p = proxy_at(T0 * 1_000_000_000);
        let mut w: W = p.worker(json);
        let ip = "10.0.0.1:1";
        assert_eq!(send(&mut w, &[(":method", "POST"), (":path", "/login")], ip).0, 200);
        assert_eq!(send(&mut w, &[(":method", "GET"), (":path", "/login")], ip).0, 200, "GET is not limited");
        assert_eq!(send(&mut w, &[(":method", "POST"), (":path", "/login?x=1")], ip).0, 429, "query ignored");
        // api key + path, query ignored; the rule does not apply without the key.
        let k = |key: &'static str, path: &'static str| vec![(":path", path), ("x-api-key", key)];
        assert_eq!(send(&mut w, &k("a", "/api/x?1"), ip).0, 200);
        assert_eq!(send(&mut w, &k("a", "/api/x?2"), ip).0, 200);
        assert_eq!(send(&mut w, &k("a", "/api/x"), ip).0, 429);
        assert_eq!(send(&mut w, &k("a", "/api/y"), ip).0, 200, "another path, another bucket");
        assert_eq!(send(&mut w, &k("b", "/api/x"), ip).0, 200, "another key, another bucket");
        let (status, h) = send(&mut w, &[(":path", "/api/x")], ip);
        assert_eq!(status, 200, "no key: the rule does not apply");
        assert_eq!(header(&h, "ratelimit-policy"), Some("\"all\";q=100;w=60"));
        assert_eq!(p.metric("rate_limit.descriptor_missing"), Some(1));
        let mut internal = k("a", "/api/x");
        internal.push(("x-internal", "1"));
        assert_eq!(send(&mut w, &internal, ip).0, 200, "inverted header match excludes it");
        // Two rules on one response: both listed.
        let (_, h) = send(&mut w, &k("c", "/api/z"), ip);
        assert_eq!(header(&h, "ratelimit-policy"), Some("\"key\";q=2;w=120, \"all\";q=100;w=60"));
        assert!(header(&h, "ratelimit").unwrap().starts_with("\"key\";r=1;t=60, \"all\";r="), "{h:?}");
    }

    /// One request on route `route` (`xds.route_name`; `None`: no route): its status and the
    /// `get_property` calls it made.
    fn send_on_route(w: &mut W, route: Option<&str>, headers: &[(&str, &str)]) -> (u32, u64) {
        let id = w.new_stream();
        if let Some(r) = route {
            w.set_property(id, &["xds", "route_name"], r.as_bytes());
        }
        let proxy = w.proxy().clone();
        let (action, calls) = proxy.count_host_calls(|| w.request_headers(id, headers, true));
        let status = match action {
            FilterAction::Pause => w.local_reply(id).map_or(0, |r| r.status),
            _ => 200,
        };
        (status, calls.get(shared::proxytest::HostCall::GetProperty))
    }

    #[test]
    fn route_name_rules_follow_the_route_read_once_and_only_when_needed() {
        let json = r#"{"rules":[
          {"name":"admin","match":{"route_name":"admin","methods":["POST"]},"actions":[{"generic_key":{"descriptor_value":"a"}}],
           "token_bucket":{"max_tokens":1,"fill_interval":"60s"}},
          {"name":"also","match":{"route_name":"admin"},"actions":[{"generic_key":{"descriptor_value":"b"}}],
           "token_bucket":{"max_tokens":100,"tokens_per_fill":100,"fill_interval":"60s"}}]}"#;
        let p = proxy_at(T0 * 1_000_000_000);
        let mut w: W = p.worker(json);
        let post = |path: &'static str| [(":method", "POST"), (":path", path)];
        assert_eq!(send_on_route(&mut w, Some("admin"), &post("/admin")), (200, 1), "two route rules, one read");
        for path in ["/ADMIN", "/%61dmin/x", "/"] {
            assert_eq!(send_on_route(&mut w, Some("admin"), &post(path)).0, 429, "{path}: the route's bucket");
        }
        assert_eq!(send_on_route(&mut w, Some("admin"), &[(":method", "GET"), (":path", "/admin")]).0, 200);
        for route in [Some("other"), Some(""), None] {
            assert_eq!(send_on_route(&mut w, route, &post("/admin")).0, 200, "route {route:?}");
        }
        assert_eq!(p.metric("rate_limit.rule.admin.limited"), Some(3));

        // Rules on paths, methods or headers alone read no route name.
        let json = r#"{"rules":[{"name":"p","match":{"prefix":"/admin","methods":["POST"]},
          "actions":[{"generic_key":{"descriptor_value":"a"}}],"token_bucket":{"max_tokens":1,"fill_interval":"60s"}}]}"#;
        let mut w: W = p.worker(json);
        assert_eq!(send_on_route(&mut w, Some("admin"), &post("/admin")), (200, 0));
        assert_eq!(send_on_route(&mut w, Some("admin"), &post("/admin")), (429, 0));
        assert_eq!(
            send_on_route(&mut w, Some("admin"), &post("/ADMIN")),
            (200, 0),
            "the control: a spelling slips past a path rule"
        );
    }

    #[test]
    fn shadow_mode_counts_and_never_denies() {
        let json = r#"{"rules":[{"name":"s","shadow_mode":true,"actions":[{"remote_address":{}}],
            "token_bucket":{"max_tokens":2,"fill_interval":"60s"}}]}"#;
        let p = proxy_at(T0 * 1_000_000_000);
        let mut w: W = p.worker(json);
        for _ in 0..5 {
            let (status, h) = send(&mut w, &[], "10.0.0.1:1");
            assert_eq!(status, 200);
            assert!(header(&h, "ratelimit").is_some());
        }
        let (_, h) = send(&mut w, &[], "10.0.0.1:1");
        assert_eq!(header(&h, "ratelimit"), Some("\"s\";r=0;t=120"));
        assert_eq!(p.metric("rate_limit.shadow_limited"), Some(4));
        assert_eq!(p.metric("rate_limit.rule.s.shadow_limited"), Some(4));
        assert_eq!(p.metric("rate_limit.limited"), Some(0));
    }

    #[test]
    fn status_and_headers_are_configurable() {
        let json = r#"{"status":{"code":503},"ratelimit_headers":false,"rules":[{"name":"a","actions":[{"remote_address":{}}],
            "token_bucket":{"max_tokens":1,"fill_interval":"60s"}}]}"#;
        let p = proxy_at(T0 * 1_000_000_000);
        let mut w: W = p.worker(json);
        let (_, h) = send(&mut w, &[], "10.0.0.1:1");
        assert!(h.iter().all(|(k, _)| !k.starts_with("ratelimit") && !k.starts_with("x-ratelimit")), "{h:?}");
        let (status, h) = send(&mut w, &[], "10.0.0.1:1");
        assert_eq!(status, 503);
        assert_eq!(header(&h, "retry-after"), Some("60"));
    }

    #[test]
    fn cas_contention_is_retried_counted_and_bounded() {
        // Another worker writes the group between our read and write every time.
        for (on_exhausted, want) in [("DENY", FilterAction::Pause), ("ALLOW", FilterAction::Continue)] {
            let p = proxy_at(T0 * 1_000_000_000);
            let json = format!(
                r#"{{"cas":{{"max_attempts":3,"on_exhausted":"{on_exhausted}"}},"rules":[{{"name":"a","actions":[{{"remote_address":{{}}}}],
                "token_bucket":{{"max_tokens":5,"fill_interval":"60s"}}}}]}}"#
            );
            let mut w: W = p.worker(&json);
            p.set_property(&["source", "address"], b"10.0.0.1:1");
            // Two lost races, then a win: allowed, 2 conflicts.
            p.contend_shared_data(2);
            assert_eq!(w.request(&[(":method", "GET"), (":path", "/")]).1, FilterAction::Continue);
            assert_eq!(p.metric("rate_limit.cas_conflicts"), Some(2));
            // Always losing: exhausted after 3 attempts, then the configured answer.
            p.contend_shared_data(u32::MAX);
            assert_eq!(w.request(&[(":method", "GET"), (":path", "/")]).1, want, "{on_exhausted}");
            assert_eq!(p.metric("rate_limit.cas_exhausted"), Some(1));
            assert_eq!(p.metric("rate_limit.cas_conflicts"), Some(5));
        }
    }

    #[test]
    fn more_keys_than_the_table_evict_or_deny_and_memory_stays_fixed() {
        for (on_full, over) in [("EVICT", 200), ("DENY", 429)] {
            let json = format!(
                r#"{{"table":{{"max_keys":4,"on_full":"{on_full}"}},"rules":[{{"name":"a","actions":[{{"remote_address":{{}}}}],
                "token_bucket":{{"max_tokens":2,"fill_interval":"60s"}}}}]}}"#
            );
            let p = proxy_at(T0 * 1_000_000_000);
            let mut w: W = p.worker(&json);
            for i in 0..4 {
                assert_eq!(send(&mut w, &[], &format!("10.0.0.{i}:1")).0, 200);
            }
            assert_eq!(send(&mut w, &[], "10.0.0.9:1").0, over, "{on_full}");
            // Only the one group exists, whatever the number of keys.
            assert!(p.shared_data("rate-limit/rl/1").0.is_none());
            if on_full == "EVICT" {
                assert_eq!(p.metric("rate_limit.evictions"), Some(1));
            } else {
                assert_eq!(p.metric("rate_limit.table_full"), Some(1));
            }
            // Once the buckets have refilled their slots are reused without loss.
            p.advance(Duration::from_secs(60));
            assert_eq!(send(&mut w, &[], "10.0.0.10:1").0, 200);
            assert_eq!(p.metric("rate_limit.slot_reused"), Some(1));
        }
    }

    #[test]
    fn equals_the_token_bucket_through_the_filter_with_the_mock_clock() {
        // max 5, +2 every 250ms: 5 now, then exactly 2 per fill, capped at 5 after idling.
        let json = r#"{"rules":[{"name":"a","actions":[{"remote_address":{}}],
            "token_bucket":{"max_tokens":5,"tokens_per_fill":2,"fill_interval":"0.25s"}}]}"#;
        let p = proxy_at(T0 * 1_000_000_000);
        let mut w: W = p.worker(json);
        let mut burst = |n: usize| (0..n).filter(|_| send(&mut w, &[], "10.0.0.1:1").0 == 200).count();
        assert_eq!(burst(20), 5);
        p.advance(Duration::from_millis(250));
        assert_eq!(burst(20), 2);
        p.advance(Duration::from_millis(749));
        assert_eq!(burst(20), 4, "two more fills (at 500 and 750 ms), not three");
        p.advance(Duration::from_secs(10));
        assert_eq!(burst(20), 5, "never more than max_tokens");
    }

    #[test]
    fn garbage_in_a_group_reads_as_empty_and_is_repaired() {
        let p = proxy_at(T0 * 1_000_000_000);
        let mut w: W = p.worker(
            r#"{"table":{"max_keys":4},"rules":[{"name":"a","actions":[{"remote_address":{}}],"token_bucket":{"max_tokens":1,"fill_interval":"60s"}}]}"#,
        );
        p.set_shared_data("rate-limit/rl/0", b"garbage");
        assert_eq!(send(&mut w, &[], "10.0.0.1:1").0, 200);
        assert_eq!(p.shared_data("rate-limit/rl/0").0.unwrap().len(), table::GROUP_BYTES);
        assert_eq!(send(&mut w, &[], "10.0.0.1:1").0, 429);
    }
}

#[cfg(test)]
mod global_tests {
    //! Global rules on the emulated proxy: the call the filter makes, and every kind of answer.
    use super::*;
    use crate::rls;
    use crate::rls::proto::{DescriptorStatus, HeaderValue, ProtoDuration, RateLimitRequest, RateLimitResponse};
    use prost::Message;
    use shared::proxytest::{Phase, Proxy, Worker};

    type W = Worker<RateLimitRoot>;

    fn config(extra: &str, rule_extra: &str) -> String {
        format!(
            r#"{{"domain":"edge","rate_limit_service":{{"grpc_service":{{"envoy_grpc":{{"cluster_name":"rls"}}}}}},
            "enable_x_ratelimit_headers":"DRAFT_VERSION_03"{extra},
            "rules":[{{"name":"per_user","actions":[{{"request_headers":{{"header_name":"x-user","descriptor_key":"user"}}}},
              {{"generic_key":{{"descriptor_value":"api"}}}}],"global":{{{rule_extra}}}}}]}}"#
        )
    }

    fn proxy() -> Proxy {
        let p = Proxy::new();
        p.set_property(&["source", "address"], b"10.0.0.1:1");
        p
    }

    fn request(w: &mut W, user: &str) -> (u32, FilterAction) {
        w.request(&[(":method", "GET"), (":path", "/"), ("x-user", user)])
    }

    fn status(code: i32, quota: u32, unit: i32, name: &str, remaining: u32, reset: i64) -> DescriptorStatus {
        DescriptorStatus {
            code,
            current_limit: Some(rls::proto::RateLimit { name: name.into(), requests_per_unit: quota, unit }),
            limit_remaining: remaining,
            duration_until_reset: Some(ProtoDuration { seconds: reset, nanos: 0 }),
        }
    }

    fn answer(code: i32, statuses: Vec<DescriptorStatus>) -> Vec<u8> {
        RateLimitResponse { overall_code: code, statuses, ..Default::default() }.encode_to_vec()
    }

    fn response_headers(w: &mut W, id: u32) -> Vec<(String, String)> {
        w.response_headers(id, &[(":status", "200")], true);
        w.headers(id, ResponseHeaders).into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect()
    }

    fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_request_waits_for_one_call_with_the_descriptors() {
        let p = proxy();
        let mut w: W = p.worker(&config("", ""));
        let (id, action) = request(&mut w, "alice");
        assert_eq!(action, FilterAction::Pause);
        let calls = w.grpc_calls();
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!(
            (call.cluster.as_str(), call.service.as_str(), call.method.as_str()),
            ("rls", rls::SERVICE, rls::METHOD)
        );
        assert_eq!(call.timeout, std::time::Duration::from_millis(100), "the documented default");
        let sent = RateLimitRequest::decode(call.message.as_slice()).unwrap();
        assert_eq!(sent.domain, "edge");
        assert_eq!(sent.hits_addend, 0);
        let entries: Vec<(&str, &str)> =
            sent.descriptors[0].entries.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
        assert_eq!(entries, [("user", "alice"), ("generic_key", "api")]);
        assert!(w.is_paused(id));
    }

    #[test]
    fn ok_resumes_with_the_service_headers() {
        let p = proxy();
        let mut w: W = p.worker(&config("", ""));
        let (id, _) = request(&mut w, "alice");
        let token = w.grpc_calls()[0].token;
        let response = RateLimitResponse {
            overall_code: rls::CODE_OK,
            statuses: vec![status(rls::CODE_OK, 10, 2, "per-user", 7, 30)],
            response_headers_to_add: vec![HeaderValue { key: "X-Custom".into(), value: "1".into(), raw_value: vec![] }],
            request_headers_to_add: vec![HeaderValue { key: "x-rl".into(), value: "yes".into(), raw_value: vec![] }],
            raw_body: vec![],
        };
        w.answer_grpc_call(token, 0, &response.encode_to_vec());
        assert_eq!(w.resumes(), [(id, Phase::Request)]);
        assert_eq!(w.request_header_values(id, "x-rl"), ["yes"]);
        let h = response_headers(&mut w, id);
        assert_eq!(header(&h, "x-ratelimit-limit"), Some("10, 10;w=60;name=\"per-user\""));
        assert_eq!(header(&h, "x-ratelimit-remaining"), Some("7"));
        assert_eq!(header(&h, "x-ratelimit-reset"), Some("30"));
        assert_eq!(header(&h, "ratelimit-policy"), Some("\"per_user\";q=10;w=60"));
        assert_eq!(header(&h, "ratelimit"), Some("\"per_user\";r=7;t=30"));
        assert_eq!(header(&h, "x-custom"), Some("1"));
        assert!(header(&h, "retry-after").is_none());
        assert_eq!(p.metric("rate_limit.rls.ok"), Some(1));
        assert_eq!(p.metric("rate_limit.allowed"), Some(1));
    }

    #[test]
    fn a_limit_name_that_cannot_be_quoted_is_left_out_of_x_ratelimit_limit() {
        // Regression (fuzz target rate_limit_rls_answer): the name went into the header as is.
        for (name, want) in [
            ("x\r\ninjected: 1", "10, 10;w=60"),
            ("a\"b", "10, 10;w=60"),
            ("back\\slash", "10, 10;w=60"),
            ("per-user 2", "10, 10;w=60;name=\"per-user 2\""),
        ] {
            let p = proxy();
            let mut w: W = p.worker(&config("", ""));
            let (id, _) = request(&mut w, "alice");
            let token = w.grpc_calls()[0].token;
            w.answer_grpc_call(token, 0, &answer(rls::CODE_OK, vec![status(rls::CODE_OK, 10, 2, name, 7, 30)]));
            let h = response_headers(&mut w, id);
            assert_eq!(header(&h, "x-ratelimit-limit"), Some(want), "{name:?}");
        }
    }

    #[test]
    fn over_limit_is_a_429_with_the_service_numbers() {
        let p = proxy();
        let mut w: W = p.worker(&config("", ""));
        let (id, _) = request(&mut w, "alice");
        let token = w.grpc_calls()[0].token;
        w.answer_grpc_call(
            token,
            0,
            &answer(rls::CODE_OVER_LIMIT, vec![status(rls::CODE_OVER_LIMIT, 10, 1, "", 0, 1)]),
        );
        assert!(w.resumes().is_empty(), "a denied request never goes on");
        let r = w.local_reply(id).unwrap();
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.header("x-envoy-ratelimited"), Some("true"));
        assert_eq!(r.header("x-ratelimit-limit"), Some("10, 10;w=1"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
        assert_eq!(r.header("ratelimit"), Some("\"per_user\";r=0;t=1"));
        assert_eq!(r.body_text(), "rate limited");
        assert_eq!(p.metric("rate_limit.rls.over_limit"), Some(1));
        assert_eq!(p.metric("rate_limit.rule.per_user.limited"), Some(1));
        // The service's body and content type win, as in Envoy.
        let (id, _) = request(&mut w, "alice");
        let token = w.grpc_calls()[1].token;
        let response = RateLimitResponse {
            overall_code: rls::CODE_OVER_LIMIT,
            response_headers_to_add: vec![HeaderValue {
                key: "content-type".into(),
                value: "application/json".into(),
                raw_value: vec![],
            }],
            raw_body: b"{\"slow\":\"down\"}".to_vec(),
            ..Default::default()
        };
        w.answer_grpc_call(token, 0, &response.encode_to_vec());
        let r = w.local_reply(id).unwrap();
        assert_eq!(
            (r.status, r.header("content-type"), r.body_text().as_str()),
            (429, Some("application/json"), "{\"slow\":\"down\"}")
        );
        assert!(r.header("retry-after").is_none(), "no status: no reset known");
    }

    #[test]
    fn the_overall_code_decides_as_in_envoy() {
        // Regression (e2e native_and_wasm_on_one_service_agree_on_every_request): a status
        // saying OVER_LIMIT under an overall OK denied the request Envoy admits.
        let p = proxy();
        let mut w: W = p.worker(&config("", ""));
        let (id, _) = request(&mut w, "alice");
        let token = w.grpc_calls()[0].token;
        w.answer_grpc_call(token, 0, &answer(rls::CODE_OK, vec![status(rls::CODE_OVER_LIMIT, 10, 2, "", 0, 30)]));
        assert_eq!(w.resumes(), [(id, Phase::Request)]);
        assert_eq!(header(&response_headers(&mut w, id), "x-ratelimit-remaining"), Some("0"));
        assert_eq!((p.metric("rate_limit.rls.ok"), p.metric("rate_limit.limited")), (Some(1), Some(0)));
        // And an overall OVER_LIMIT denies though no status says which descriptor was over.
        let (id, _) = request(&mut w, "alice");
        let token = w.grpc_calls()[1].token;
        w.answer_grpc_call(token, 0, &answer(rls::CODE_OVER_LIMIT, vec![status(rls::CODE_OK, 10, 2, "", 3, 30)]));
        assert_eq!(w.local_reply(id).map(|r| r.status), Some(429));
        assert_eq!(p.metric("rate_limit.rule.per_user.limited"), Some(1));
    }

    #[test]
    fn envoys_own_timeout_of_the_call_is_a_timeout() {
        // Regression (e2e wasm_failure_mode_*): Envoy 1.40 ends a wasm gRPC call at its
        // timeout with UNAVAILABLE "upstream request timeout", never DEADLINE_EXCEEDED, so
        // rls.timeout stayed 0 with the service slow.
        let p = proxy();
        let mut w: W = p.worker(&config("", ""));
        let answers: [&[u8]; 3] =
            [b"upstream request timeout{response_timeout}", b"upstream request timeout", b"no healthy upstream"];
        for (i, message) in answers.into_iter().enumerate() {
            request(&mut w, "alice");
            let token = w.grpc_calls()[i].token;
            w.answer_grpc_call(token, 14, message);
        }
        assert_eq!(p.metric("rate_limit.rls.error"), Some(3));
        assert_eq!(p.metric("rate_limit.rls.timeout"), Some(2));
    }

    #[test]
    fn the_services_own_deadline_is_a_timeout() {
        // Regression (CI, e2e wasm_failure_mode_allow_*): the service honours the
        // `grpc-timeout` Envoy sends and, tonic-based like Limitador, can answer CANCELLED
        // "Timeout expired" just before Envoy's own timer fires; rls.timeout stayed 0.
        let p = proxy();
        let mut w: W = p.worker(&config("", ""));
        // Regression (e2e wasm_failure_mode_deny_*, loaded machine): a real Envoy 1.40 delivers
        // the message percent-encoded with its details: `Timeout%20expired{via_upstream}`.
        let answers: [(u32, &[u8]); 4] = [
            (1, b"Timeout expired"),
            (1, b"client cancelled"),
            (14, b"Timeout expired"),
            (1, b"Timeout%20expired{via_upstream}"),
        ];
        for (i, (code, message)) in answers.into_iter().enumerate() {
            request(&mut w, "alice");
            let token = w.grpc_calls()[i].token;
            w.answer_grpc_call(token, code, message);
        }
        assert_eq!(p.metric("rate_limit.rls.error"), Some(4));
        assert_eq!(p.metric("rate_limit.rls.timeout"), Some(2), "only CANCELLED \"Timeout expired\", either spelling");
    }

    #[test]
    fn failures_allow_by_default_counted_and_deny_with_failure_mode_deny() {
        for deny in [false, true] {
            let p = proxy();
            let extra = if deny { r#","failure_mode_deny":true"# } else { "" };
            let mut w: W = p.worker(&config(extra, ""));
            // Unavailable, the deadline, an unreadable answer, an UNKNOWN code.
            let answers: [(u32, Vec<u8>); 4] =
                [(14, b"no healthy upstream".to_vec()), (4, vec![]), (0, vec![0x12, 9]), (0, answer(0, vec![]))];
            for (i, (code, message)) in answers.iter().enumerate() {
                let (id, _) = request(&mut w, "alice");
                let token = w.grpc_calls()[i].token;
                w.answer_grpc_call(token, *code, message);
                if deny {
                    assert_eq!(w.local_reply(id).map(|r| r.status), Some(500), "answer {i}");
                } else {
                    assert!(w.resumes().contains(&(id, Phase::Request)), "answer {i}");
                    assert!(response_headers(&mut w, id).iter().all(|(k, _)| !k.contains("ratelimit")));
                }
            }
            assert_eq!(p.metric("rate_limit.rls.error"), Some(4));
            assert_eq!(p.metric("rate_limit.rls.timeout"), Some(1));
            let (allowed, denied) = if deny { (0, 4) } else { (4, 0) };
            assert_eq!(p.metric("rate_limit.rls.failure_mode_allowed"), Some(allowed));
            assert_eq!(p.metric("rate_limit.rls.failure_mode_denied"), Some(denied));
            // A call the host refuses (unknown cluster) is decided at once.
            w.fail_http_calls(true);
            let (id, action) = request(&mut w, "alice");
            if deny {
                assert_eq!((action, w.local_reply(id).map(|r| r.status)), (FilterAction::Pause, Some(500)));
            } else {
                assert_eq!(action, FilterAction::Continue);
            }
            assert_eq!(p.metric("rate_limit.rls.error"), Some(5));
        }
    }

    #[test]
    fn status_on_error_and_no_x_envoy_ratelimited() {
        let p = proxy();
        let mut w: W = p.worker(&config(
            r#","failure_mode_deny":true,"status_on_error":{"code":503},"disable_x_envoy_ratelimited_header":true"#,
            "",
        ));
        let (id, _) = request(&mut w, "a");
        w.answer_grpc_call(w.grpc_calls()[0].token, 14, b"");
        assert_eq!(w.local_reply(id).unwrap().status, 503);
        let (id, _) = request(&mut w, "a");
        w.answer_grpc_call(w.grpc_calls()[1].token, 0, &answer(rls::CODE_OVER_LIMIT, vec![]));
        let r = w.local_reply(id).unwrap();
        assert_eq!(r.status, 429, "overall OVER_LIMIT without statuses stands for every rule");
        assert!(r.header("x-envoy-ratelimited").is_none());
    }

    #[test]
    fn shadow_global_rules_ask_the_service_and_never_deny() {
        let p = proxy();
        let mut w: W = p.worker(&config(r#","failure_mode_deny":true,"shadow_mode":true"#, ""));
        let (id, _) = request(&mut w, "a");
        w.answer_grpc_call(w.grpc_calls()[0].token, 0, &answer(rls::CODE_OVER_LIMIT, vec![status(2, 1, 1, "", 0, 1)]));
        assert_eq!(w.resumes(), [(id, Phase::Request)]);
        assert_eq!(p.metric("rate_limit.rule.per_user.shadow_limited"), Some(1));
        assert_eq!(p.metric("rate_limit.limited"), Some(0));
        // A failure does not deny a shadow rule either.
        let (id, _) = request(&mut w, "a");
        w.answer_grpc_call(w.grpc_calls()[1].token, 14, b"");
        assert!(w.resumes().contains(&(id, Phase::Request)));
    }

    #[test]
    fn a_pre_bucket_sheds_a_flood_before_the_service() {
        let p = proxy();
        let mut w: W =
            p.worker(&config("", r#""pre_bucket":{"max_tokens":2,"tokens_per_fill":2,"fill_interval":"60s"}"#));
        for i in 0..2 {
            let (_, action) = request(&mut w, "flood");
            assert_eq!(action, FilterAction::Pause);
            w.answer_grpc_call(w.grpc_calls()[i].token, 0, &answer(rls::CODE_OK, vec![]));
        }
        let (id, action) = request(&mut w, "flood");
        assert_eq!(action, FilterAction::Pause);
        assert_eq!(w.local_reply(id).map(|r| r.status), Some(429));
        assert_eq!(w.grpc_calls().len(), 2, "shed before the service");
        // Another key has its own pre-bucket.
        assert_eq!(request(&mut w, "other").1, FilterAction::Pause);
        assert_eq!(w.grpc_calls().len(), 3);
    }

    #[test]
    fn hits_addend_goes_on_the_request_or_on_each_descriptor() {
        let two = r#"{"domain":"d","rate_limit_service":{"grpc_service":{"envoy_grpc":{"cluster_name":"rls"}}},"rules":[
            {"name":"a","actions":[{"generic_key":{"descriptor_value":"a"}}],"global":{"hits_addend":HA}},
            {"name":"b","actions":[{"generic_key":{"descriptor_value":"b"}}],"global":{"hits_addend":HB}}]}"#;
        for (a, b, request_level, per_descriptor) in [("5", "5", 5, [None, None]), ("1", "3", 0, [Some(1), Some(3)])] {
            let p = proxy();
            let mut w: W = p.worker(&two.replace("HA", a).replace("HB", b));
            w.request(&[(":method", "GET"), (":path", "/")]);
            let sent = RateLimitRequest::decode(w.grpc_calls()[0].message.as_slice()).unwrap();
            assert_eq!(sent.hits_addend, request_level);
            let got: Vec<Option<u64>> =
                sent.descriptors.iter().map(|d| d.hits_addend.as_ref().map(|h| h.value)).collect();
            assert_eq!(got, per_descriptor);
        }
    }

    #[test]
    fn local_and_global_rules_together() {
        // A local rule denies without calling the service; when it allows, the global rule
        // is asked, and the headers of both appear, in rule order.
        let json = r#"{"domain":"d","rate_limit_service":{"grpc_service":{"envoy_grpc":{"cluster_name":"rls"}}},"rules":[
            {"name":"local","actions":[{"remote_address":{}}],"token_bucket":{"max_tokens":1,"fill_interval":"60s"}},
            {"name":"global","actions":[{"remote_address":{}}],"global":{}}]}"#;
        let p = proxy();
        let mut w: W = p.worker(json);
        let (id, _) = w.request(&[(":method", "GET"), (":path", "/")]);
        let sent = RateLimitRequest::decode(w.grpc_calls()[0].message.as_slice()).unwrap();
        assert_eq!(sent.descriptors.len(), 1, "only the global rule's descriptor");
        assert_eq!(sent.descriptors[0].entries[0].value, "10.0.0.1");
        w.answer_grpc_call(w.grpc_calls()[0].token, 0, &answer(rls::CODE_OK, vec![status(1, 100, 3, "", 99, 3599)]));
        let h = response_headers(&mut w, id);
        assert_eq!(header(&h, "ratelimit-policy"), Some("\"local\";q=1;w=60, \"global\";q=100;w=3600"));
        let (id, action) = w.request(&[(":method", "GET"), (":path", "/")]);
        assert_eq!((action, w.local_reply(id).map(|r| r.status)), (FilterAction::Pause, Some(429)));
        assert_eq!(w.grpc_calls().len(), 1, "the local denial never asks the service");
    }

    #[test]
    fn an_answer_to_a_stream_that_is_gone_is_harmless() {
        let p = proxy();
        let mut w: W = p.worker(&config("", ""));
        let (id, _) = request(&mut w, "a");
        w.complete(id);
        assert!(w.pending_calls().is_empty(), "Envoy cancels the call with the stream");
    }

    /// What a service (or anything answering on its cluster) sends in `response_headers_to_add` /
    /// `request_headers_to_add`, and what of it reaches Envoy: the headers it may add, not a CR
    /// or LF that splits the message, a pseudo-header (`:status` on the denial, `:authority`),
    /// or a header that frames the message or belongs to the connection.
    fn hostile_headers() -> Vec<HeaderValue> {
        let h = |key: &str, value: &str, raw: &[u8]| HeaderValue {
            key: key.into(),
            value: value.into(),
            raw_value: raw.to_vec(),
        };
        vec![
            h("X-Kept", "caf\u{e9}\tok", b""),
            h("x-split", "1\r\nset-cookie: a=b", b""),
            h("x-lf", "", b"1\nx-injected: 1"),
            h("x-nul", "", b"a\0b"),
            h("x-bell", "a\x07b", b""),
            h("x-a\r\nx-b", "1", b""),
            h("x y", "1", b""),
            h("", "1", b""),
            h(":status", "200", b""),
            h(":authority", "evil.example", b""),
            h(":path", "/admin", b""),
            h("Host", "evil.example", b""),
            h("content-length", "0", b""),
            h("transfer-encoding", "chunked", b""),
            h("connection", "close", b""),
        ]
    }

    fn names(h: &[(String, String)]) -> Vec<String> {
        let mut n: Vec<String> = h.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
        n.sort();
        n
    }

    #[test]
    fn only_headers_the_service_may_add_reach_envoy() {
        let filtered = |h: &[(String, String)]| -> Vec<(String, String)> {
            h.iter().filter(|(k, _)| !k.starts_with("x-ratelimit") && !k.starts_with("ratelimit")).cloned().collect()
        };
        // Allowed: the request goes on with the service's request and response headers.
        let p = proxy();
        let mut w: W = p.worker(&config("", ""));
        let (id, _) = request(&mut w, "alice");
        let before =
            names(&w.headers(id, RequestHeaders).into_iter().map(|(k, _)| (k, String::new())).collect::<Vec<_>>());
        let response = RateLimitResponse {
            overall_code: rls::CODE_OK,
            response_headers_to_add: hostile_headers(),
            request_headers_to_add: hostile_headers(),
            ..Default::default()
        };
        w.answer_grpc_call(w.grpc_calls()[0].token, 0, &response.encode_to_vec());
        assert_eq!(w.resumes(), [(id, Phase::Request)], "an OK answer still admits");
        let request_headers: Vec<(String, String)> = w
            .headers(id, RequestHeaders)
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let mut want = before.clone();
        want.push("x-kept".into());
        want.sort();
        assert_eq!(names(&request_headers), want, "{request_headers:?}");
        assert_eq!(w.request_header_values(id, "x-kept"), ["caf\u{e9}\tok"]);
        let dropped = |p: &Proxy| {
            p.logs()
                .iter()
                .filter(|(l, m)| *l == LogLevel::Warn && m.contains("dropped the rate-limit service's header"))
                .count()
        };
        assert_eq!(dropped(&p), 2 * (hostile_headers().len() - 1), "each dropped header is logged");
        let h = filtered(&response_headers(&mut w, id));
        assert_eq!(
            h,
            [(":status".to_string(), "200".to_string()), ("x-kept".to_string(), "caf\u{e9}\tok".to_string())]
        );

        // Denied: the local reply carries the service's headers, and its status stays 429.
        let (id, _) = request(&mut w, "alice");
        let response = RateLimitResponse {
            overall_code: rls::CODE_OVER_LIMIT,
            response_headers_to_add: hostile_headers(),
            ..Default::default()
        };
        w.answer_grpc_call(w.grpc_calls()[1].token, 0, &response.encode_to_vec());
        let r = w.local_reply(id).unwrap();
        assert_eq!(r.status, 429);
        let h = filtered(&r.headers);
        assert_eq!(names(&h), ["content-type", "x-envoy-ratelimited", "x-kept"], "{h:?}");
    }

    #[test]
    fn a_flood_of_statuses_and_headers_is_bounded_and_decides_as_the_overall_code() {
        let p = proxy();
        let mut w: W = p.worker(&config("", ""));
        let (id, _) = request(&mut w, "alice");
        let response = RateLimitResponse {
            overall_code: rls::CODE_OVER_LIMIT,
            statuses: vec![status(rls::CODE_OK, 10, 2, "", 7, 30); 1000],
            response_headers_to_add: vec![
                HeaderValue { key: "x-a".into(), value: "1".into(), raw_value: vec![] };
                1000
            ],
            ..Default::default()
        };
        w.answer_grpc_call(w.grpc_calls()[0].token, 0, &response.encode_to_vec());
        let r = w.local_reply(id).unwrap();
        assert_eq!(r.status, 429, "not one status per descriptor: the overall code stands for the rule");
        assert_eq!(r.headers.iter().filter(|(k, _)| k == "x-a").count(), rls::MAX_REPEATED);
    }

    #[test]
    fn an_answer_larger_than_the_bound_is_not_read_and_fails_per_failure_mode_deny() {
        for (extra, want) in [("", None), (r#","failure_mode_deny":true"#, Some(500))] {
            let p = proxy();
            let mut w: W = p.worker(&config(extra, ""));
            let (id, _) = request(&mut w, "alice");
            let response = RateLimitResponse {
                overall_code: rls::CODE_OVER_LIMIT,
                raw_body: vec![b'x'; MAX_ANSWER_BYTES],
                ..Default::default()
            };
            w.answer_grpc_call(w.grpc_calls()[0].token, 0, &response.encode_to_vec());
            assert_eq!(w.local_reply(id).map(|r| r.status), want, "{extra}");
            assert_eq!(p.metric("rate_limit.rls.error"), Some(1));
            assert!(p.logs().iter().any(|(_, m)| m.contains("larger than")), "{:?}", p.logs());
        }
        // Control: just under the bound, the answer decides.
        let p = proxy();
        let mut w: W = p.worker(&config("", ""));
        let (id, _) = request(&mut w, "alice");
        let response =
            RateLimitResponse { overall_code: rls::CODE_OVER_LIMIT, raw_body: vec![b'x'; 1000], ..Default::default() };
        w.answer_grpc_call(w.grpc_calls()[0].token, 0, &response.encode_to_vec());
        assert_eq!(w.local_reply(id).map(|r| r.status), Some(429));
    }

    #[test]
    fn non_utf8_values_merge_never_split() {
        let p = proxy();
        let mut w: W = p.worker(&config("", ""));
        let id = w.new_stream();
        w.request_headers_bytes(id, &[(":method", b"GET"), (":path", b"/"), ("x-user", b"al\xffice")], true);
        let sent = RateLimitRequest::decode(w.grpc_calls()[0].message.as_slice()).unwrap();
        assert_eq!(sent.descriptors[0].entries[0].value, "al\u{fffd}ice");
    }
}

#[cfg(test)]
mod duplicate_tests {
    //! R3: a keying header sent twice. Envoy keys on the first value; an upstream reading the
    //! last one let a client rotate a random first value and escape its limit.
    use super::*;
    use shared::proxytest::{Proxy, Worker};

    const JSON: &str = r#"{"rules":[{"name":"key","actions":[{"request_headers":{"header_name":"x-api-key","descriptor_key":"k"}}],
        "token_bucket":{"max_tokens":2,"fill_interval":"60s"}}]}"#;

    #[test]
    fn a_keying_header_sent_twice_is_refused_not_keyed_on_its_first_value() {
        let p = Proxy::new();
        let mut w: Worker<RateLimitRoot> = p.worker(JSON);
        let req = |w: &mut Worker<RateLimitRoot>, first: &str| {
            let (id, action) =
                w.request(&[(":method", "GET"), (":path", "/"), ("x-api-key", first), ("x-api-key", "real")]);
            (action, w.local_reply(id).map(|r| (r.status, r.body_text())))
        };
        // Rotating the first value gets nothing through.
        for i in 0..5 {
            let (action, reply) = req(&mut w, &format!("random-{i}"));
            assert_eq!(action, FilterAction::Pause);
            assert_eq!(reply, Some((400, "duplicate x-api-key header".to_string())));
        }
        assert_eq!(p.metric("rate_limit.duplicate_header"), Some(5));
        // Sent once, the key is limited as usual.
        let once: Vec<FilterAction> =
            (0..3).map(|_| w.request(&[(":method", "GET"), (":path", "/"), ("x-api-key", "real")]).1).collect();
        assert_eq!(once, [FilterAction::Continue, FilterAction::Continue, FilterAction::Pause]);
        // In shadow mode the rule only counts.
        let p = Proxy::new();
        let mut w: Worker<RateLimitRoot> =
            p.worker(&JSON.replace(r#""name":"key","#, r#""name":"key","shadow_mode":true,"#));
        assert_eq!(req(&mut w, "x").0, FilterAction::Continue);
        assert_eq!(p.metric("rate_limit.duplicate_header"), Some(1));
    }
}
