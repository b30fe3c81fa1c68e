//! The remote keys' lifecycle, per provider and worker.
//!
//! - **One fetch per proxy.** Every worker runs the [`Fetcher`] loop; a lease in shared data
//!   lets one fetch. The answer is checked (a usable JWKS) and published in shared data.
//! - **Every worker takes a new key set once**: on its next tick, or when a request finds it has
//!   none. A refetch or refresh that brought a byte-identical JWKS keeps its generation (the
//!   shared fetch publishes only a new fetch time): no worker parses it again or clears its
//!   verified-token cache, and the requests that waited for it decide again at once; a
//!   different one is parsed (keys precomputed) and clears the cache, so a withdrawn key stops
//!   working at once.
//! - **A failed refresh keeps the last good keys** (jwt_authn would fail requests once its
//!   `cache_duration` ends; keeping them is the safer answer when the issuer is unreachable).
//! - **Unknown `kid`** (key rotation): a request may wait for a refetch at most once per
//!   `unknown_kid_refetch_interval` per proxy. The stamp of the last one is in shared data, so
//!   all workers share one budget, claimed by compare-and-swap.

use super::{Worker, NAME};
use crate::config::{KeySource, Remote};
use crate::engine::{Engine, TokenCache};
use jose::jwks::Jwks;
use sha2::{Digest, Sha256};
use shared::config::ConfigError;
use shared::fetch::{FetchPolicy, FetchResult, Fetcher, Outcome, Published};
use shared::hash::HashKey;
use shared::host::{BodyKind, HeaderMapKind, HostExt};
use shared::shared_cell;
use shared::{Host, LogLevel};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 512 * 1024;

/// Everything a worker keeps for one provider.
pub(super) struct ProviderState {
    /// Verified tokens (jwt_authn's `JwtCache`), per worker.
    pub cache: RefCell<TokenCache>,
    /// `None` for a `local_jwks` provider.
    pub remote: Option<RemoteState>,
}

/// A remote provider's fetch loop and this worker's copy of its keys.
pub(super) struct RemoteState {
    config: Remote,
    /// How long a request waits for keys (`http_uri.timeout`).
    pub timeout: Duration,
    fetcher: RefCell<Fetcher>,
    /// The published record's key (`<prefix>value`).
    value_key: String,
    /// The per-proxy stamp of the last refetch for an unknown `kid` (ms since the epoch).
    refetch_key: String,
    keys: RefCell<KeysInUse>,
    /// Failed fetches in this worker so far (a failure ends the waits on this provider).
    failures: Cell<u64>,
}

/// This worker's copy of a remote provider's keys.
#[derive(Default)]
struct KeysInUse {
    /// The published generation taken last (0: none yet). It changes only with the key set.
    generation: u64,
    /// The taken record's fetch time: a refetch that brought the same keys changes only this.
    fetched_at_ms: u64,
    /// Records taken so far (new keys or a fetch of the same ones): what waiters watch.
    records_taken: u64,
    jwks: Option<Rc<Jwks>>,
    /// SHA-256 of the JWKS document `jwks` was parsed from.
    digest: [u8; 32],
}

impl ProviderState {
    /// From `configure`: the provider's state, its shared-data keys created.
    /// `cache_key`: this worker's key for the verified-token cache's digests.
    pub fn new(
        host: &dyn Host,
        engine: &Engine,
        index: usize,
        holder: u64,
        cache_key: Option<HashKey>,
    ) -> Result<ProviderState, ConfigError> {
        let config = &engine.config;
        let cache = engine.new_cache(index);
        let cache = RefCell::new(match cache_key {
            Some(key) => cache.keyed(key),
            None => cache,
        });
        let Some(p) = config.providers.get(index) else {
            return Ok(ProviderState { cache, remote: None });
        };
        let KeySource::Remote(r) = &p.keys else {
            return Ok(ProviderState { cache, remote: None });
        };
        let prefix = format!("{NAME}/{}/{}/", config.fingerprint, p.name);
        // Retries double from `failed_refetch_duration` up to 30 s, but never wait longer than
        // the JWKS is meant to be cached.
        let policy = FetchPolicy {
            refresh_fraction: 0.8,
            backoff_base: r.retry_base,
            backoff_max: r.cache_duration.clamp(r.retry_base, Duration::from_secs(30).max(r.retry_base)),
            fetch_timeout: r.timeout,
        };
        let fetcher = Fetcher::new(&prefix, holder, policy);
        let refetch_key = format!("{prefix}kid_refetch");
        let created = fetcher
            .ensure_exists(host)
            .and_then(|()| shared_cell::ensure_exists(host, &refetch_key, &0u64.to_be_bytes()));
        created.map_err(|e| {
            ConfigError::new(format!("providers.{}.remote_jwks", p.name), format!("cannot create shared data: {e}"))
        })?;
        let remote = RemoteState {
            config: r.clone(),
            timeout: r.timeout,
            fetcher: RefCell::new(fetcher),
            value_key: format!("{prefix}value"),
            refetch_key,
            keys: RefCell::new(KeysInUse::default()),
            failures: Cell::new(0),
        };
        Ok(ProviderState { cache, remote: Some(remote) })
    }
}

impl RemoteState {
    pub fn jwks(&self) -> Option<Rc<Jwks>> {
        self.keys.borrow().jwks.clone()
    }

    #[cfg(test)]
    pub fn generation(&self) -> u64 {
        self.keys.borrow().generation
    }

    /// Changes whenever a fetch landed in this worker's view, with new keys or the same: a
    /// waiting request decides again then.
    pub fn records_taken(&self) -> u64 {
        self.keys.borrow().records_taken
    }

    pub fn failures(&self) -> u64 {
        self.failures.get()
    }

    /// Ask the fetch loop for a refetch at its next poll.
    pub fn refresh_soon(&self) {
        self.fetcher.borrow_mut().refresh_soon();
    }

    fn last_refetch_ms(&self, host: &dyn Host) -> u64 {
        host.shared_data(&self.refetch_key).0.map_or(0, |v| stamp(&v))
    }

    /// Whether the proxy's refetch budget allows one now (read only).
    pub fn refetch_allowed(&self, host: &dyn Host, now_ms: u64, interval_ms: u64) -> bool {
        now_ms >= self.last_refetch_ms(host).saturating_add(interval_ms)
    }

    /// Take the proxy's refetch budget: `true` for the one caller per interval that gets it.
    pub fn claim_refetch(&self, host: &dyn Host, now_ms: u64, interval_ms: u64) -> bool {
        let claimed = shared_cell::update(host, &self.refetch_key, 1, |v| {
            if now_ms >= stamp(v).saturating_add(interval_ms) {
                (Some(now_ms.to_be_bytes().to_vec()), true)
            } else {
                (None, false)
            }
        });
        // A lost compare-and-swap: another worker claimed it just now.
        claimed.is_ok_and(|u| u.result)
    }

    /// Take a newer published record, if any. `true` when one was taken (the keys may be the
    /// same: waiters wake either way and decide again).
    fn take_published(&self, host: &dyn Host, cache: &RefCell<TokenCache>) -> bool {
        let Some(p) = host.shared_data(&self.value_key).0.and_then(|b| Published::decode(&b)) else { return false };
        let mut keys = self.keys.borrow_mut();
        if p.generation == 0 || (p.generation == keys.generation && p.fetched_at_ms == keys.fetched_at_ms) {
            return false;
        }
        keys.records_taken += 1;
        keys.fetched_at_ms = p.fetched_at_ms;
        if p.generation == keys.generation {
            // A refetch that brought the same keys (the generation stays): nothing to parse.
            return true;
        }
        let digest: [u8; 32] = Sha256::digest(&p.value).into();
        if keys.jwks.is_some() && digest == keys.digest {
            // The same document again: same keys, same verified tokens.
            keys.generation = p.generation;
            return true;
        }
        match Jwks::parse(&p.value) {
            Ok(jwks) => {
                keys.generation = p.generation;
                keys.jwks = Some(Rc::new(jwks));
                keys.digest = digest;
                // Tokens verified with the previous keys are verified again: a key the issuer
                // withdrew stops working at once, not when its tokens leave the cache.
                cache.borrow_mut().clear();
                true
            }
            Err(e) => {
                // Validated before publishing, so only a different build could disagree.
                host.log(LogLevel::Error, &format!("{NAME}: published JWKS unusable: {e}"));
                keys.generation = p.generation;
                false
            }
        }
    }

    /// A JWKS answer: status 200 and a JWKS with at least one usable key.
    fn parse_answer(&self, host: &dyn Host, body_size: usize, provider: &str) -> FetchResult {
        let status = host.header_str(HeaderMapKind::HttpCallResponseHeaders, ":status").unwrap_or_default();
        if status != "200" {
            return FetchResult::Failed(format!("status {status:?}"));
        }
        if body_size > MAX_JWKS_BYTES {
            return FetchResult::Failed(format!("JWKS of {body_size} bytes is over the {MAX_JWKS_BYTES}-byte limit"));
        }
        let body = host.body(BodyKind::HttpCallResponse, 0, body_size).unwrap_or_default();
        match Jwks::parse(&body) {
            Ok(jwks) => {
                log_weak_keys(host, provider, &jwks);
                FetchResult::Fetched { value: body, lifetime: self.config.cache_duration }
            }
            Err(e) => FetchResult::Failed(format!("not a usable JWKS: {e}")),
        }
    }
}

/// Warn about each key of a provider's JWKS that is skipped as too weak (jwt_authn would use
/// it): once per fetched generation (by the worker that fetched it), once per VM for a local one.
pub(super) fn log_weak_keys(host: &dyn Host, provider: &str, jwks: &Jwks) {
    for k in jwks.skipped().iter().filter(|k| k.weak) {
        host.log(
            LogLevel::Warn,
            &format!("{NAME}: provider {provider}: JWKS key {} (kid {:?}) skipped: {}", k.index, k.kid, k.reason),
        );
    }
}

/// A refetch stamp: 8 bytes big-endian (0 when unreadable).
fn stamp(bytes: &[u8]) -> u64 {
    bytes.try_into().map_or(0, u64::from_be_bytes)
}

impl Worker {
    /// Take every provider's newer published keys.
    fn take_all_published(&self, host: &dyn Host) {
        let mut changed = false;
        for p in &self.providers {
            if let Some(r) = &p.remote {
                changed |= r.take_published(host, &p.cache);
            }
        }
        if changed {
            self.count_weak_keys(host);
        }
    }

    /// Set the weak-keys gauge: keys skipped as too weak in the key sets this worker uses now,
    /// all providers (every worker sets the same value).
    pub(super) fn count_weak_keys(&self, host: &dyn Host) {
        let n: usize = self
            .engine
            .config
            .providers
            .iter()
            .zip(&self.providers)
            .map(|(p, state)| match (&p.keys, &state.remote) {
                (KeySource::Local(j), _) => j.weak_keys(),
                (KeySource::Remote(_), Some(r)) => r.jwks().map_or(0, |j| j.weak_keys()),
                (KeySource::Remote(_), None) => 0,
            })
            .sum();
        self.stats.jwks_weak_keys.set(host, u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// For a request: take the published keys of the providers this worker has none of yet.
    pub(super) fn take_missing_keys(&self, host: &dyn Host) {
        let mut changed = false;
        for p in &self.providers {
            if let Some(r) = p.remote.as_ref().filter(|r| r.keys.borrow().jwks.is_none()) {
                changed |= r.take_published(host, &p.cache);
            }
        }
        if changed {
            self.count_weak_keys(host);
        }
    }

    /// Every tick: new keys, due fetches, waiters to wake.
    pub(super) fn on_tick(&self, host: &dyn Host) {
        let now = host.now();
        self.take_all_published(host);
        for (i, p) in self.providers.iter().enumerate() {
            let Some(r) = &p.remote else { continue };
            let due = r.fetcher.borrow_mut().poll(host, now);
            if due {
                self.dispatch(host, i, r, now);
            }
        }
        self.serve_waiters(host, now);
    }

    fn dispatch(&self, host: &dyn Host, index: usize, r: &RemoteState, now: std::time::SystemTime) {
        let c = &r.config;
        let headers = [(":method", "GET"), (":path", c.path.as_str()), (":authority", c.authority.as_str())];
        match host.dispatch_http_call(&c.cluster, &headers, None, c.timeout) {
            Ok(token) => r.fetcher.borrow_mut().started(token, now),
            Err(e) => {
                self.stats.jwks_fetch_failed.inc(host);
                let retry = r.fetcher.borrow_mut().dispatch_failed(now);
                self.end_waits_for(index, now);
                r.failures.set(r.failures.get() + 1);
                host.log(
                    LogLevel::Warn,
                    &format!("{NAME}: cannot call cluster {:?} for the JWKS ({e}); retrying in {retry:?}", c.cluster),
                );
            }
        }
    }

    /// An HTTP-call answer to the root: a JWKS fetch of one of the providers.
    pub(super) fn on_fetch_answer(&self, host: &dyn Host, token: u32, body_size: usize) {
        let now = host.now();
        let answered = self
            .providers
            .iter()
            .enumerate()
            .find_map(|(i, p)| p.remote.as_ref().filter(|r| r.fetcher.borrow().awaits(token)).map(|r| (i, p, r)));
        if let Some((index, state, r)) = answered {
            let name = self.engine.config.providers.get(index).map_or("", |p| p.name.as_str());
            let result = r.parse_answer(host, body_size, name);
            let reason = match &result {
                FetchResult::Failed(reason) => reason.clone(),
                FetchResult::Fetched { .. } => "fetched, but not published to shared data".into(),
            };
            let outcome = r.fetcher.borrow_mut().on_response(host, token, now, result);
            match outcome {
                None => {}
                Some(Outcome::Published { generation }) => {
                    self.stats.jwks_fetch_success.inc(host);
                    host.log(
                        LogLevel::Info,
                        &format!("{NAME}: provider {name}: JWKS fetched (generation {generation})"),
                    );
                    if r.take_published(host, &state.cache) {
                        self.count_weak_keys(host);
                    }
                }
                Some(Outcome::Failed { retry_in } | Outcome::NotPublished { retry_in }) => {
                    self.stats.jwks_fetch_failed.inc(host);
                    let has_keys = r.keys.borrow().jwks.is_some();
                    host.log(
                        if has_keys { LogLevel::Warn } else { LogLevel::Error },
                        &format!(
                            "{NAME}: provider {name}: JWKS fetch from cluster {:?} failed: {reason}; retrying in {:.1}s; {}",
                            r.config.cluster,
                            retry_in.as_secs_f64(),
                            if has_keys { "keeping the last good keys" } else { "no keys yet" }
                        ),
                    );
                    r.failures.set(r.failures.get() + 1);
                    self.end_waits_for(index, now);
                }
            }
        }
        self.serve_waiters(host, now);
    }
}
