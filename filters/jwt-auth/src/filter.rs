//! jwt-auth's request path and its remote-JWKS machinery.
//!
//! - A request's decision is [`Engine::evaluate`] (pure); this file reads the headers once,
//!   applies the verdict (header edits and resume, or jwt_authn's 401/403), and counts stats.
//! - Remote JWKS: one [`Fetcher`] per remote provider in every worker's root context; the lease
//!   makes one worker per proxy fetch, the result is published in shared data, and every worker
//!   parses a new generation once (keys precomputed) on its next tick or when a request finds it
//!   has none. A failed refresh keeps the last good keys (jwt_authn would fail requests once its
//!   `cache_duration` ends; keeping them is the safer answer when the issuer is unreachable).
//! - A request that needs keys this worker does not have yet, or that carries an unknown `kid`
//!   (key rotation; refetch at most every `unknown_kid_refetch_interval`, counted from the last
//!   fetch by any worker), pauses; the root resumes it from a tick or a fetch answer with
//!   `set_effective_context`, re-running the same evaluation. It waits at most the provider's
//!   `http_uri.timeout`; then, without keys, it gets jwt_authn's `Jwks remote fetch is failed`.

use crate::config::{Compiled, Config, KeySource, Remote};
use crate::engine::{Counts, Engine, HeaderOp, KeyView, Keys, TokenCache, Verdict};
use crate::extract::RequestHeaders;
use crate::jwks::Jwks;
use crate::token::Status;
use shared::config::ConfigError;
use shared::fetch::{FetchPolicy, FetchResult, Fetcher, Outcome, Published};
use shared::host::{BodyKind, HeaderMapKind, HostExt};
use shared::lease::{holder_id, millis};
use shared::stats::Counter;
use shared::{reply, Action, Host, HttpFilter, LogLevel, RootFilter};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const NAME: &str = "jwt-auth";
/// Timer period of every worker: JWKS lease and refresh, new generations, waiting requests.
pub const TICK: Duration = Duration::from_millis(250);
/// The first tick comes sooner, so the first JWKS fetch happens at start.
pub const FIRST_TICK: Duration = Duration::from_millis(20);
/// Requests one worker holds waiting for keys; beyond, they are answered at once.
pub const MAX_WAITING: usize = 4096;
/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 512 * 1024;

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub allowed: Counter,
    pub denied: Counter,
    pub denied_by: BTreeMap<&'static str, Counter>,
    pub jwks_fetch_success: Counter,
    pub jwks_fetch_failed: Counter,
    pub jwt_cache_hit: Counter,
    pub jwt_cache_miss: Counter,
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
        }
    }

    fn count(&self, host: &dyn Host, counts: Counts) {
        self.jwt_cache_hit.add(host, counts.cache_hits);
        self.jwt_cache_miss.add(host, counts.cache_misses);
    }
}

/// This worker's copy of a remote provider's keys.
#[derive(Default)]
struct RemoteKeys {
    value_key: String,
    generation: u64,
    fetched_at_ms: u64,
    jwks: Option<Rc<Jwks>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Waiter {
    context_id: u32,
    provider: usize,
    /// The provider's key generation this request saw; a newer one wakes it.
    generation: u64,
    deadline_ms: u64,
    refetch: bool,
}

/// What the root and this worker's HTTP contexts share.
pub struct Worker {
    pub engine: Engine,
    stats: Stats,
    /// Indexed by provider; `None` for local keys.
    remote: Vec<Option<RefCell<RemoteKeys>>>,
    caches: RefCell<Vec<TokenCache>>,
    waiting: RefCell<Vec<Waiter>>,
}

/// The key view of one evaluation: what this worker has, plus what this request already went
/// through (a refetch it waited for, a wait that timed out).
struct View<'a> {
    worker: &'a Worker,
    now_ms: u64,
    refetched: Option<usize>,
    timed_out: Option<usize>,
}

impl KeyView for View<'_> {
    fn keys(&self, provider: usize) -> Keys {
        let Some(Some(r)) = self.worker.remote.get(provider) else { return Keys::Pending };
        match &r.borrow().jwks {
            Some(j) => Keys::Ready(j.clone()),
            None if self.timed_out == Some(provider) => Keys::Failed,
            None => Keys::Pending,
        }
    }

    fn may_refetch(&self, provider: usize) -> bool {
        if self.refetched == Some(provider) {
            return false;
        }
        let Some(Some(r)) = self.worker.remote.get(provider) else { return false };
        let interval = millis_of(self.worker.engine.config.unknown_kid_refetch_interval);
        self.now_ms >= r.borrow().fetched_at_ms.saturating_add(interval)
    }
}

fn millis_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Worker {
    fn remote_config(&self, provider: usize) -> Option<&Remote> {
        match &self.engine.config.providers.get(provider)?.keys {
            KeySource::Remote(r) => Some(r),
            KeySource::Local(_) => None,
        }
    }

    /// Take a newer published generation of a provider's keys, if any. `true` when changed.
    fn refresh_keys(&self, host: &dyn Host, provider: usize) -> bool {
        let Some(Some(cell)) = self.remote.get(provider) else { return false };
        let key = cell.borrow().value_key.clone();
        let Some(p) = host.shared_data(&key).0.and_then(|b| Published::decode(&b)) else { return false };
        let mut r = cell.borrow_mut();
        if p.generation == 0 || p.generation == r.generation {
            return false;
        }
        match Jwks::parse(&p.value) {
            Ok(jwks) => {
                r.jwks = Some(Rc::new(jwks));
                r.generation = p.generation;
                r.fetched_at_ms = p.fetched_at_ms;
                true
            }
            Err(e) => {
                // Validated before publishing, so only a different build could disagree.
                host.log(LogLevel::Error, &format!("{NAME}: published JWKS unusable: {e}"));
                r.generation = p.generation;
                false
            }
        }
    }

    fn refresh_all(&self, host: &dyn Host) {
        for i in 0..self.remote.len() {
            self.refresh_keys(host, i);
        }
    }

    fn generation(&self, provider: usize) -> u64 {
        match self.remote.get(provider) {
            Some(Some(r)) => r.borrow().generation,
            _ => 0,
        }
    }

    /// Decide for the request of the current (effective) context. `Some(action)` when decided
    /// (the reply is already sent for a denial); `None` when it must wait (already recorded).
    fn decide(&self, host: &dyn Host, context_id: u32, refetched: Option<usize>, timed_out: Option<usize>) -> Option<Action> {
        let request = RequestHeaders(host.headers(HeaderMapKind::RequestHeaders));
        let config = &self.engine.config;
        if config.bypass_cors_preflight
            && request.get_str(":method") == "OPTIONS"
            && !request.get_str("origin").is_empty()
            && !request.get_str("access-control-request-method").is_empty()
        {
            self.stats.allowed.inc(host);
            return Some(Action::Continue);
        }
        let Some(requirement) = self.engine.requirement(request.get_str(":path")) else {
            self.stats.allowed.inc(host);
            return Some(Action::Continue);
        };
        let now = host.now();
        let view = View { worker: self, now_ms: millis(now), refetched, timed_out };
        let realm = realm(&request);
        let (verdict, counts) = {
            let mut caches = self.caches.borrow_mut();
            self.engine.evaluate(requirement, request, &view, &mut caches, unix_seconds(now))
        };
        self.stats.count(host, counts);
        match verdict {
            Verdict::Allow(ops) => {
                apply(host, &ops);
                self.stats.allowed.inc(host);
                Some(Action::Continue)
            }
            Verdict::Deny(status) => {
                self.deny(host, status, &realm);
                Some(Action::Pause)
            }
            Verdict::Wait { provider, refetch } => {
                let timeout = self.remote_config(provider).map_or(Duration::ZERO, |r| r.timeout);
                if self.waiting.borrow().len() >= MAX_WAITING || timeout.is_zero() {
                    // Decide now, as if the wait had ended without news.
                    return self.decide(host, context_id, Some(provider), Some(provider));
                }
                let deadline_ms = millis(now).saturating_add(millis_of(timeout + Duration::from_millis(500)));
                let generation = self.generation(provider);
                self.waiting.borrow_mut().push(Waiter { context_id, provider, generation, deadline_ms, refetch });
                None
            }
        }
    }

    fn deny(&self, host: &dyn Host, status: Status, realm: &str) {
        self.stats.denied.inc(host);
        if let Some(c) = self.stats.denied_by.get(status.reason()) {
            c.inc(host);
        }
        let code = if status == Status::JwtAudienceNotAllowed { 403 } else { 401 };
        let mut challenge = format!("Bearer realm=\"{realm}\"");
        if status != Status::JwtMissed {
            challenge.push_str(", error=\"invalid_token\"");
        }
        if reply::send_text(host, code, status.message(), &[("www-authenticate", &challenge)]).is_err() {
            host.log(LogLevel::Error, &format!("{NAME}: cannot send the {code} reply"));
        }
    }

    /// Re-decide waiting requests whose provider has new keys or whose wait is over.
    fn serve_waiters(&self, host: &dyn Host, now: SystemTime) {
        if self.waiting.borrow().is_empty() {
            return;
        }
        let now_ms = millis(now);
        let ready: Vec<Waiter> = {
            let mut waiting = self.waiting.borrow_mut();
            let (ready, keep): (Vec<Waiter>, Vec<Waiter>) = waiting
                .drain(..)
                .partition(|w| now_ms >= w.deadline_ms || self.generation(w.provider) != w.generation);
            *waiting = keep;
            ready
        };
        for w in ready {
            // The stream may be gone (client left): nothing to do.
            if host.set_effective_context(w.context_id).is_err() {
                continue;
            }
            let timed_out = (now_ms >= w.deadline_ms).then_some(w.provider);
            let refetched = w.refetch.then_some(w.provider).or(timed_out);
            if self.decide(host, w.context_id, refetched, timed_out) == Some(Action::Continue) {
                let _ = host.resume_request();
            }
        }
    }

    fn forget(&self, context_id: u32) {
        self.waiting.borrow_mut().retain(|w| w.context_id != context_id);
    }

    fn wants_refetch(&self, provider: usize) -> bool {
        self.waiting.borrow().iter().any(|w| w.provider == provider && w.refetch)
    }
}

/// jwt_authn's realm: the request's original URI, `<x-forwarded-proto>://<host><path>`.
fn realm(request: &RequestHeaders) -> String {
    let scheme = match request.get_str("x-forwarded-proto") {
        "" => request.get_str(":scheme"),
        s => s,
    };
    let text = format!("{scheme}://{}{}", request.get_str(":authority"), request.get_str(":path"));
    // A header value must not carry control characters or a quote that ends the realm early.
    text.chars().filter(|c| !c.is_control() && *c != '"' && *c != '\\').collect()
}

fn apply(host: &dyn Host, ops: &[HeaderOp]) {
    for op in ops {
        let result = match op {
            HeaderOp::Remove(name) => host.remove_header(HeaderMapKind::RequestHeaders, name),
            HeaderOp::Add(name, value) => host.add_header(HeaderMapKind::RequestHeaders, name, value.as_bytes()),
        };
        if let Err(e) = result {
            host.log(LogLevel::Warn, &format!("{NAME}: cannot edit request headers: {e}"));
        }
    }
}

/// One remote provider's fetch loop in this worker.
struct RemoteFetch {
    provider: usize,
    fetcher: Fetcher,
}

#[derive(Default)]
pub struct JwtAuthRoot {
    worker: Option<Rc<Worker>>,
    fetches: Vec<RemoteFetch>,
    started: bool,
}

impl JwtAuthRoot {
    pub fn worker(&self) -> Option<&Rc<Worker>> {
        self.worker.as_ref()
    }

    fn dispatch(&mut self, host: &dyn Host, index: usize, now: SystemTime) {
        let Some(worker) = &self.worker else { return };
        let Some(f) = self.fetches.get_mut(index) else { return };
        let Some(remote) = worker.remote_config(f.provider) else { return };
        let headers = [(":method", "GET"), (":path", remote.path.as_str()), (":authority", remote.authority.as_str())];
        match host.dispatch_http_call(&remote.cluster, &headers, None, remote.timeout) {
            Ok(token) => f.fetcher.started(token, now),
            Err(e) => {
                worker.stats.jwks_fetch_failed.inc(host);
                let retry = f.fetcher.dispatch_failed(now);
                host.log(
                    LogLevel::Warn,
                    &format!("{NAME}: cannot call cluster {:?} for the JWKS ({e}); retrying in {retry:?}", remote.cluster),
                );
            }
        }
    }
}

/// A JWKS answer: status 200 and a JWKS with at least one usable key.
fn parse_answer(host: &dyn Host, body_size: usize, remote: &Remote) -> FetchResult {
    let status = host.header_str(HeaderMapKind::HttpCallResponseHeaders, ":status").unwrap_or_default();
    if status != "200" {
        return FetchResult::Failed(format!("status {status:?}"));
    }
    if body_size > MAX_JWKS_BYTES {
        return FetchResult::Failed(format!("JWKS of {body_size} bytes is over the {MAX_JWKS_BYTES}-byte limit"));
    }
    let body = host.body(BodyKind::HttpCallResponse, 0, body_size).unwrap_or_default();
    match Jwks::parse(&body) {
        Ok(_) => FetchResult::Fetched { value: body, lifetime: remote.cache_duration },
        Err(e) => FetchResult::Failed(format!("not a usable JWKS: {e}")),
    }
}

impl RootFilter for JwtAuthRoot {
    type Http = JwtAuth;
    const NAME: &'static str = NAME;

    fn configure(&mut self, host: &dyn Host, raw_config: Option<&[u8]>) -> Result<(), ConfigError> {
        let config: Compiled = shared::config::load(raw_config, Config::compile)?;
        let holder = holder_id(0, host.now());
        let mut fetches = Vec::new();
        let mut remote = Vec::with_capacity(config.providers.len());
        for (i, p) in config.providers.iter().enumerate() {
            let KeySource::Remote(r) = &p.keys else {
                remote.push(None);
                continue;
            };
            let prefix = format!("{NAME}/{}/{}/", config.fingerprint, p.name);
            let policy = FetchPolicy {
                refresh_fraction: 0.8,
                backoff_base: r.retry_base,
                backoff_max: Duration::from_secs(30).max(r.retry_base),
                fetch_timeout: r.timeout,
            };
            let fetcher = Fetcher::new(&prefix, holder, policy);
            fetcher.ensure_exists(host).map_err(|e| {
                ConfigError::new(format!("providers.{}.remote_jwks", p.name), format!("cannot create shared data: {e}"))
            })?;
            fetches.push(RemoteFetch { provider: i, fetcher });
            remote.push(Some(RefCell::new(RemoteKeys { value_key: format!("{prefix}value"), ..RemoteKeys::default() })));
        }
        let engine = Engine::new(config);
        let caches = RefCell::new(engine.new_caches());
        self.worker = Some(Rc::new(Worker {
            engine,
            stats: Stats::define(host),
            remote,
            caches,
            waiting: RefCell::new(Vec::new()),
        }));
        self.fetches = fetches;
        self.started = false;
        if !self.fetches.is_empty() {
            host.set_tick_period(FIRST_TICK)
                .map_err(|e| ConfigError::new("", format!("cannot set the timer: {e}")))?;
        }
        Ok(())
    }

    fn new_http_filter(&self, context_id: u32) -> Option<JwtAuth> {
        Some(JwtAuth { worker: self.worker.clone()?, context_id, waiting: false })
    }

    fn on_tick(&mut self, host: &dyn Host) {
        if !self.started {
            self.started = true;
            if let Err(e) = host.set_tick_period(TICK) {
                host.log(LogLevel::Error, &format!("{NAME}: cannot set the timer period: {e}"));
            }
        }
        let Some(worker) = self.worker.clone() else { return };
        let now = host.now();
        worker.refresh_all(host);
        for i in 0..self.fetches.len() {
            let provider = self.fetches[i].provider;
            if worker.wants_refetch(provider) {
                self.fetches[i].fetcher.refresh_soon();
            }
            if self.fetches[i].fetcher.poll(host, now) {
                self.dispatch(host, i, now);
            }
        }
        worker.serve_waiters(host, now);
    }

    fn on_http_call_response(
        &mut self,
        host: &dyn Host,
        token: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(worker) = self.worker.clone() else { return };
        let now = host.now();
        for f in &mut self.fetches {
            if !f.fetcher.awaits(token) {
                continue;
            }
            let Some(remote) = worker.remote_config(f.provider) else { continue };
            let result = parse_answer(host, body_size, remote);
            let reason = match &result {
                FetchResult::Failed(r) => r.clone(),
                FetchResult::Fetched { .. } => "fetched, but not published to shared data".into(),
            };
            let Some(outcome) = f.fetcher.on_response(host, token, now, result) else { continue };
            let name = &worker.engine.config.providers[f.provider].name;
            match outcome {
                Outcome::Published { generation } => {
                    worker.stats.jwks_fetch_success.inc(host);
                    host.log(LogLevel::Info, &format!("{NAME}: provider {name}: JWKS fetched (generation {generation})"));
                    worker.refresh_keys(host, f.provider);
                }
                Outcome::Failed { retry_in } | Outcome::NotPublished { retry_in } => {
                    worker.stats.jwks_fetch_failed.inc(host);
                    let has_keys = worker.generation(f.provider) > 0;
                    host.log(
                        if has_keys { LogLevel::Warn } else { LogLevel::Error },
                        &format!(
                            "{NAME}: provider {name}: JWKS fetch from cluster {:?} failed: {reason}; retrying in {:.1}s; {}",
                            remote.cluster,
                            retry_in.as_secs_f64(),
                            if has_keys { "keeping the last good keys" } else { "no keys yet" }
                        ),
                    );
                    // Requests that waited for this refetch get their answer now.
                    let mut waiting = worker.waiting.borrow_mut();
                    for w in waiting.iter_mut().filter(|w| w.provider == f.provider) {
                        w.deadline_ms = w.deadline_ms.min(millis(now));
                    }
                }
            }
            break;
        }
        worker.serve_waiters(host, now);
    }
}

pub struct JwtAuth {
    worker: Rc<Worker>,
    context_id: u32,
    waiting: bool,
}

impl HttpFilter for JwtAuth {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        let w = &self.worker;
        // Keys another worker published since our last tick.
        for (i, r) in w.remote.iter().enumerate() {
            if r.as_ref().is_some_and(|r| r.borrow().jwks.is_none()) {
                w.refresh_keys(host, i);
            }
        }
        match w.decide(host, self.context_id, None, None) {
            Some(action) => action,
            None => {
                self.waiting = true;
                Action::Pause
            }
        }
    }

    fn on_log(&mut self, _host: &dyn Host) {
        if self.waiting {
            self.worker.forget(self.context_id);
        }
    }
}
