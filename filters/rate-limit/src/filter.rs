//! The request path, top to bottom: at request headers, every rule whose `match` fits takes a
//! token from its bucket (a CAS update of one shared-data group); the first exhausted bucket of
//! an enforcing rule answers `429`. Allowed requests get the rate-limit headers on their
//! response.

use crate::address;
use crate::bucket::{ceil_secs, Decision};
use crate::config::{Action, Compiled, Config, OnExhausted, Rule, KEY_PREFIX};
use crate::table::{self, Slot};
use shared::config::ConfigError;
use shared::host::HeaderMapKind::{RequestHeaders, ResponseHeaders};
use shared::host::HostExt;
use shared::shared_cell::{self, CasError};
use shared::stats::Counter;
use shared::{Action as FilterAction, Host, HttpFilter, LogLevel, RootFilter};
use std::net::IpAddr;
use std::rc::Rc;

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
        }
    }
}

#[derive(Default)]
pub struct RateLimitRoot {
    config: Option<Rc<Compiled>>,
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
        for i in 0..compiled.groups {
            shared_cell::ensure_exists(host, &table::group_key(KEY_PREFIX, i), &table::EMPTY_GROUP)
                .map_err(|e| ConfigError::new("table", format!("cannot create the shared-data table: {e}")))?;
        }
        self.stats = Rc::new(Stats::define(host, &compiled.rules));
        self.config = Some(Rc::new(compiled));
        Ok(())
    }

    fn new_http_filter(&self, _context_id: u32) -> Option<RateLimit> {
        Some(RateLimit { config: self.config.clone()?, stats: self.stats.clone(), evals: Vec::new(), replied: false })
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

pub struct RateLimit {
    config: Rc<Compiled>,
    stats: Rc<Stats>,
    evals: Vec<Eval>,
    replied: bool,
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

    fn rule_matches(rule: &Rule, host: &dyn Host, path: &str, method: &[u8]) -> bool {
        if let Some(m) = &rule.path {
            if !m.matches(path) {
                return false;
            }
        }
        if !rule.methods.is_empty() && !rule.methods.iter().any(|m| m.as_bytes() == method) {
            return false;
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

    /// The descriptor entries `(key, value)` of a rule for this request; `None` when one is
    /// missing (the rule then does not apply, as in Envoy).
    fn descriptor(
        &self,
        rule: &Rule,
        host: &dyn Host,
        path: &str,
        client: &mut Option<Option<IpAddr>>,
    ) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut entries = Vec::with_capacity(rule.actions.len());
        for action in &rule.actions {
            match action {
                Action::RemoteAddress { key, v4, v6 } => {
                    let ip = *client.get_or_insert_with(|| self.client_ip(host));
                    let ip = address::mask(ip?, *v4, *v6);
                    entries.push((key.as_bytes().to_vec(), ip.to_string().into_bytes()));
                }
                Action::RequestHeader { name, key, skip_if_absent } => match host.header(RequestHeaders, name) {
                    Some(v) => entries.push((key.as_bytes().to_vec(), v)),
                    None if *skip_if_absent => {}
                    None => return None,
                },
                Action::Generic { key, value } => entries.push((key.as_bytes().to_vec(), value.as_bytes().to_vec())),
                Action::Path => {
                    let p = shared::matching::path_without_query(path);
                    entries.push((b"path".to_vec(), p.as_bytes().to_vec()));
                }
            }
        }
        Some(entries)
    }

    /// Take one token from the bucket of `rule` for `entries`. `None`: the rule is skipped
    /// (a failure the configuration says to allow).
    fn take(&self, host: &dyn Host, index: usize, entries: &[(Vec<u8>, Vec<u8>)], now: u64) -> Option<Eval> {
        let config = &self.config;
        let rule = config.rules.get(index)?;
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + 2 * entries.len());
        parts.push(rule.name.as_bytes());
        for (k, v) in entries {
            parts.push(k);
            parts.push(v);
        }
        let h = table::hash(&parts);
        // Group from the high half, fingerprint from the low 56 bits.
        let group = (((h >> 32) * u64::from(config.groups)) >> 32) as u32;
        let tag = table::tag(index, h);
        let key = table::group_key(KEY_PREFIX, group);
        let limits_of = |r: usize| config.rules.get(r).map(|r| r.limits);
        let result = shared_cell::update(host, &key, config.cas_max_attempts, |bytes| {
            let mut group = table::decode(bytes);
            let slot = table::find_slot(&group, tag, now, &limits_of, config.on_full);
            let at = match slot {
                Slot::Found(i) | Slot::Free { index: i, .. } | Slot::Evicted(i) => i,
                Slot::Full => return (None, (slot, None)),
            };
            let x = if matches!(slot, Slot::Found(_)) { group[at].x } else { 0 };
            let d: Decision = rule.limits.take(x, now);
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
                retry_after_ns: rule.limits.next_fill_in_ns(now),
                full_in_ns: rule.limits.fill_interval_ns,
                next_fill_in_ns: rule.limits.next_fill_in_ns(now),
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
                        self.stats.evictions.inc(host);
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

    /// The rate-limit headers for the rules that applied.
    pub fn headers(&self, denied: Option<&Eval>) -> Vec<(&'static str, String)> {
        let config = &self.config;
        let mut out = Vec::new();
        if self.evals.is_empty() {
            return out;
        }
        if config.ratelimit_headers {
            let mut policy = Vec::with_capacity(self.evals.len());
            let mut state = Vec::with_capacity(self.evals.len());
            for e in &self.evals {
                let Some(rule) = config.rules.get(e.rule) else { continue };
                policy.push(rule.policy_header.clone());
                state.push(format!("\"{}\";r={};t={}", rule.name, e.remaining, ceil_secs(e.full_in_ns)));
            }
            out.push(("ratelimit-policy", policy.join(", ")));
            out.push(("ratelimit", state.join(", ")));
        }
        if config.x_ratelimit_headers {
            // As Envoy: the most restrictive bucket (fewest tokens left).
            if let Some(e) = self.evals.iter().min_by_key(|e| e.remaining) {
                if let Some(rule) = config.rules.get(e.rule) {
                    out.push(("x-ratelimit-limit", rule.limits.max_tokens.to_string()));
                    out.push(("x-ratelimit-remaining", e.remaining.to_string()));
                    out.push(("x-ratelimit-reset", ceil_secs(e.next_fill_in_ns).to_string()));
                }
            }
        }
        if let Some(d) = denied {
            out.push(("retry-after", ceil_secs(d.retry_after_ns).max(1).to_string()));
        }
        out
    }
}

impl HttpFilter for RateLimit {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> FilterAction {
        let config = self.config.clone();
        let raw_path = host.header(RequestHeaders, ":path").unwrap_or_default();
        // Lossy: a non-UTF-8 path still matches the prefixes it starts with.
        let path = String::from_utf8_lossy(&raw_path);
        let method = host.header(RequestHeaders, ":method").unwrap_or_default();
        let now = now_ns(host);
        let mut client = None;
        for (index, rule) in config.rules.iter().enumerate() {
            if !Self::rule_matches(rule, host, &path, &method) {
                continue;
            }
            let Some(entries) = self.descriptor(rule, host, &path, &mut client) else {
                self.stats.descriptor_missing.inc(host);
                continue;
            };
            let Some(eval) = self.take(host, index, &entries, now) else { continue };
            self.evals.push(eval);
            if !eval.limited {
                continue;
            }
            if rule.shadow {
                self.stats.shadow_limited.inc(host);
                if let Some(c) = self.stats.rule_shadow_limited.get(index) {
                    c.inc(host);
                }
                continue;
            }
            self.stats.limited.inc(host);
            if let Some(c) = self.stats.rule_limited.get(index) {
                c.inc(host);
            }
            let headers = self.headers(Some(&eval));
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.replied = true;
            if shared::reply::send_text(host, config.status, "rate limited", &headers).is_err() {
                self.stats.host_errors.inc(host);
                host.log(
                    LogLevel::Error,
                    "rate-limit: the host refused the local reply; the request is denied by reset",
                );
                return FilterAction::Pause;
            }
            return FilterAction::Pause;
        }
        if !self.evals.is_empty() {
            self.stats.allowed.inc(host);
        }
        FilterAction::Continue
    }

    fn on_response_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> FilterAction {
        if self.replied {
            return FilterAction::Continue;
        }
        for (name, value) in self.headers(None) {
            if host.set_header(ResponseHeaders, name, value.as_bytes()).is_err() {
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
            assert_eq!(p.shared_data(&format!("rate-limit/{i}")).0.unwrap(), table::EMPTY_GROUP.to_vec());
        }
        assert_eq!(p.shared_data("rate-limit/10"), (None, None), "exactly max_keys / 4 groups");
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
            assert!(p.shared_data("rate-limit/1").0.is_none());
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
        p.set_shared_data("rate-limit/0", b"garbage");
        assert_eq!(send(&mut w, &[], "10.0.0.1:1").0, 200);
        assert_eq!(p.shared_data("rate-limit/0").0.unwrap().len(), table::GROUP_BYTES);
        assert_eq!(send(&mut w, &[], "10.0.0.1:1").0, 429);
    }
}
