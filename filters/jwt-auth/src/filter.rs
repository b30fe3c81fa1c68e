//! jwt-auth's contexts: the root (one per worker VM) and one HTTP filter per stream, over one
//! [`Worker`] they share. The work is in two submodules:
//!
//! - `request`: the request path. Every request first loses the headers only this filter may
//!   set; then the first matching rule's requirement is decided by [`Engine::evaluate`] (pure),
//!   and the verdict applied: header edits and `Continue`, jwt_authn's 401/403, or a wait for
//!   keys. A waiting stream keeps what it waits for and what it already waited for
//!   ([`Settled`](crate::engine::Settled)); the root wakes it ([`Host::wake`]) and it decides
//!   again in `on_wake`, on its own request, until it is answered.
//! - `keys`: the remote keys' lifecycle, per provider: one fetch per proxy (a lease), published
//!   in shared data, taken by every worker once per new key set (keys precomputed then); failed
//!   refreshes keep the last good keys; an unknown `kid` asks for a refetch, at most once per
//!   `unknown_kid_refetch_interval` per proxy.

mod keys;
mod request;
#[cfg(test)]
mod tests;

use crate::config::{Compiled, Config, KeySource};
use crate::engine::{Counts, Engine};
use crate::token::Status;
use keys::ProviderState;
use request::{Wait, Waiter};
use shared::config::ConfigError;
use shared::fetch::Ticker;
use shared::hash::HashKey;
use shared::lease::holder_id;
use shared::stats::{Counter, Gauge};
use shared::waiting::WaitList;
use shared::{Action, Host, HttpFilter, LogLevel, RootFilter};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

pub const NAME: &str = "jwt-auth";
/// Timer period of every worker: JWKS lease and refresh, new key sets, waiting requests.
pub const TICK: Duration = Duration::from_millis(250);
/// The first tick comes sooner, so the first JWKS fetch happens at start.
pub const FIRST_TICK: Duration = Duration::from_millis(20);
/// Requests one worker holds waiting for keys; beyond, they are answered at once.
pub const MAX_WAITING: usize = 4096;

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub allowed: Counter,
    pub denied: Counter,
    pub denied_by: BTreeMap<&'static str, Counter>,
    pub jwks_fetch_success: Counter,
    pub jwks_fetch_failed: Counter,
    pub jwt_cache_hit: Counter,
    pub jwt_cache_miss: Counter,
    /// Keys of the key sets in use skipped as too weak (every worker sets the same value).
    pub jwks_weak_keys: Gauge,
}

impl Stats {
    fn define(host: &dyn Host) -> Stats {
        let c = |n: &str| Counter::define(host, &format!("jwt_auth.{n}"));
        Stats {
            allowed: c("allowed"),
            denied: c("denied"),
            denied_by: Status::REASONS.iter().map(|r| (*r, c(&format!("denied_{r}")))).collect(),
            jwks_fetch_success: c("jwks_fetch_success"),
            jwks_fetch_failed: c("jwks_fetch_failed"),
            jwt_cache_hit: c("jwt_cache_hit"),
            jwt_cache_miss: c("jwt_cache_miss"),
            jwks_weak_keys: Gauge::define(host, "jwt_auth.jwks_weak_keys"),
        }
    }

    fn count(&self, host: &dyn Host, counts: Counts) {
        self.jwt_cache_hit.add(host, counts.cache_hits);
        self.jwt_cache_miss.add(host, counts.cache_misses);
    }
}

/// What the root and this worker's HTTP contexts share.
pub struct Worker {
    pub engine: Engine,
    stats: Stats,
    /// One per provider, in the configuration's order.
    providers: Vec<ProviderState>,
    /// The paused streams, and whom to wake when.
    waiting: WaitList<Waiter>,
}

impl Worker {
    fn new(host: &dyn Host, config: Compiled, max_waiting: usize) -> Result<Worker, ConfigError> {
        let holder = holder_id(0, host.now());
        let engine = Engine::new(config);
        let cache_key = cache_key(host);
        let providers = (0..engine.config.providers.len())
            .map(|i| ProviderState::new(host, &engine, i, holder, cache_key))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Worker { stats: Stats::define(host), providers, waiting: WaitList::new(max_waiting), engine })
    }

    fn has_remote(&self) -> bool {
        self.providers.iter().any(|p| p.remote.is_some())
    }
}

/// This worker's secret key for the verified-token cache's digests: 16 random bytes from the
/// host. Without them the cache digests with SHA-256 (the same cache, a costlier digest).
fn cache_key(host: &dyn Host) -> Option<HashKey> {
    let mut bytes = [0u8; 16];
    match host.random(&mut bytes) {
        Ok(()) => Some(HashKey::new(bytes)),
        Err(e) => {
            host.log(
                LogLevel::Warn,
                &format!("{NAME}: no random bytes from the host ({e}): the token cache digests with SHA-256"),
            );
            None
        }
    }
}

pub struct JwtAuthRoot {
    worker: Option<Rc<Worker>>,
    ticker: Ticker,
    /// How many requests a worker holds waiting ([`MAX_WAITING`]; tests fill a smaller list).
    max_waiting: usize,
}

impl Default for JwtAuthRoot {
    fn default() -> Self {
        JwtAuthRoot { worker: None, ticker: Ticker::new(FIRST_TICK, TICK), max_waiting: MAX_WAITING }
    }
}

impl RootFilter for JwtAuthRoot {
    type Http = JwtAuth;
    const NAME: &'static str = NAME;

    fn configure(&mut self, host: &dyn Host, raw_config: Option<&[u8]>) -> Result<(), ConfigError> {
        let config: Compiled = shared::config::load(raw_config, Config::compile)?;
        for p in &config.providers {
            if let KeySource::Local(jwks) = &p.keys {
                keys::log_weak_keys(host, &p.name, jwks);
            }
        }
        let worker = Worker::new(host, config, self.max_waiting)?;
        worker.count_weak_keys(host);
        if worker.has_remote() {
            self.ticker.start(host).map_err(|e| ConfigError::new("", format!("cannot set the timer: {e}")))?;
        }
        self.worker = Some(Rc::new(worker));
        Ok(())
    }

    fn new_http_filter(&self, context_id: u32) -> Option<JwtAuth> {
        Some(JwtAuth { worker: self.worker.clone()?, context_id, wait: None })
    }

    fn on_tick(&mut self, host: &dyn Host) {
        self.ticker.on_tick(host, NAME);
        if let Some(worker) = &self.worker {
            worker.on_tick(host);
        }
    }

    fn on_http_call_response(
        &mut self,
        host: &dyn Host,
        token: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(worker) = &self.worker {
            worker.on_fetch_answer(host, token, body_size);
        }
    }
}

pub struct JwtAuth {
    worker: Rc<Worker>,
    context_id: u32,
    /// While paused for keys: what for, and what it already waited for.
    wait: Option<Wait>,
}

impl JwtAuth {
    fn settle(&mut self, decision: request::Decision) -> Action {
        match decision {
            request::Decision::Done(action) => action,
            request::Decision::Wait(wait) => {
                self.wait = Some(wait);
                Action::Pause
            }
        }
    }
}

impl HttpFilter for JwtAuth {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        let decision = self.worker.start(host, self.context_id);
        self.settle(decision)
    }

    /// The root woke this waiting request: its provider has new keys, a fetch failed, or the
    /// wait is over. Decide again, on this stream's own request.
    fn on_wake(&mut self, host: &dyn Host) -> Action {
        let Some(wait) = self.wait.take() else { return Action::Pause };
        let decision = self.worker.resume(host, self.context_id, wait);
        self.settle(decision)
    }
}

/// A stream that ends while waiting for keys leaves the waiting list. On drop (Envoy deletes
/// the context) rather than in `on_log`: the module then need not export `proxy_on_log`, a VM
/// crossing on every request.
impl Drop for JwtAuth {
    fn drop(&mut self) {
        if self.wait.is_some() {
            self.worker.waiting.forget(self.context_id);
        }
    }
}
