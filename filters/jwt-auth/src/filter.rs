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
//!   fetch by any worker), pauses. The stream keeps what it waits for ([`Wait`]); the worker's
//!   wait list says whom to wake. The root wakes it ([`Host::wake`]) from a tick or a fetch
//!   answer, and the stream re-runs the same evaluation in `on_wake`, on its own request. It
//!   waits at most the provider's `http_uri.timeout`; then, without keys, it gets jwt_authn's
//!   `Jwks remote fetch is failed`.

use crate::config::{Compiled, Config, KeySource, Remote};
use crate::engine::{Counts, Engine, HeaderOp, KeyView, Keys, TokenCache, Verdict};
use crate::extract::RequestHeaders;
use crate::jwks::Jwks;
use crate::token::Status;
use shared::config::ConfigError;
use shared::fetch::{FetchPolicy, FetchResult, Fetcher, Outcome, Published, Ticker};
use shared::host::{BodyKind, HeaderMapKind, HostExt};
use shared::lease::holder_id;
use shared::stats::Counter;
use shared::time::{duration_ms, millis};
use shared::waiting::WaitList;
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

/// An entry of the worker's wait list: whom to wake, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Waiter {
    context_id: u32,
    provider: usize,
    /// The provider's key generation this request saw; a newer one wakes it.
    generation: u64,
    deadline_ms: u64,
    refetch: bool,
}

/// What a paused stream waits for (kept by the stream, read when it is woken).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Wait {
    provider: usize,
    /// It asked for a refetch (unknown `kid`).
    refetch: bool,
    deadline_ms: u64,
    /// The provider's failed fetches when it started waiting: one more ends the wait.
    failures: u64,
}

/// The outcome of one evaluation of a request.
enum Decision {
    /// Decided: the action (a denial's reply is already sent).
    Done(Action),
    /// Waits for keys (registered in the worker's wait list).
    Wait(Wait),
}

impl shared::waiting::Waiter for Waiter {
    fn context_id(&self) -> u32 {
        self.context_id
    }
}

/// What the root and this worker's HTTP contexts share.
pub struct Worker {
    pub engine: Engine,
    stats: Stats,
    /// Indexed by provider; `None` for local keys.
    remote: Vec<Option<RefCell<RemoteKeys>>>,
    caches: RefCell<Vec<TokenCache>>,
    waiting: WaitList<Waiter>,
    /// Per provider: when this worker last asked for a refetch for an unknown `kid`.
    last_forced_ms: RefCell<Vec<Option<u64>>>,
    /// Per provider: failed JWKS fetches so far (a failure ends the waits on that provider).
    fetch_failures: RefCell<Vec<u64>>,
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
        if self.refetched == Some(provider) || !matches!(self.worker.remote.get(provider), Some(Some(_))) {
            return false;
        }
        let interval = duration_ms(self.worker.engine.config.unknown_kid_refetch_interval);
        match self.worker.last_forced_ms.borrow().get(provider) {
            Some(Some(last)) => self.now_ms >= last.saturating_add(interval),
            _ => true,
        }
    }
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
                // Tokens verified with the previous keys are verified again: a key the issuer
                // withdrew stops working at once, not when its tokens leave the cache.
                if let Some(cache) = self.caches.borrow_mut().get_mut(provider) {
                    cache.clear();
                }
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

    fn failures(&self, provider: usize) -> u64 {
        self.fetch_failures.borrow().get(provider).copied().unwrap_or(0)
    }

    /// Decide for the request of the current context.
    fn decide(&self, host: &dyn Host, context_id: u32, refetched: Option<usize>, timed_out: Option<usize>) -> Decision {
        let mut request = RequestHeaders(host.headers(HeaderMapKind::RequestHeaders));
        let config = &self.engine.config;
        if config.bypass_cors_preflight
            && request.get_str(":method") == "OPTIONS"
            && !request.get_str("origin").is_empty()
            && !request.get_str("access-control-request-method").is_empty()
        {
            self.stats.allowed.inc(host);
            return Decision::Done(Action::Continue);
        }
        let Some(requirement) = self.engine.requirement(request.get_str(":path")) else {
            self.stats.allowed.inc(host);
            return Decision::Done(Action::Continue);
        };
        let now = host.now();
        let view = View { worker: self, now_ms: millis(now), refetched, timed_out };
        let (verdict, counts) = {
            let mut caches = self.caches.borrow_mut();
            self.engine.evaluate(requirement, &mut request, &view, &mut caches, unix_seconds(now))
        };
        self.stats.count(host, counts);
        match verdict {
            Verdict::Allow(ops) => {
                apply(host, &ops);
                self.stats.allowed.inc(host);
                Decision::Done(Action::Continue)
            }
            Verdict::Deny(status) => {
                // Built only for a denial; the pseudo-headers it reads are never sanitized.
                self.deny(host, status, &realm(&request));
                Decision::Done(Action::Pause)
            }
            Verdict::InvalidHeader(header) => {
                self.stats.allowed.inc(host);
                let body = format!("invalid header value for: {header}");
                if reply::send_text(host, 503, &body, &[]).is_err() {
                    host.log(LogLevel::Error, &format!("{NAME}: cannot send the 503 reply"));
                }
                Decision::Done(Action::Pause)
            }
            Verdict::Wait { provider, refetch } => {
                let timeout = self.remote_config(provider).map_or(Duration::ZERO, |r| r.timeout);
                if self.waiting.is_full() || timeout.is_zero() {
                    // Decide now, as if the wait had ended without news.
                    return self.decide(host, context_id, Some(provider), Some(provider));
                }
                let deadline_ms = millis(now).saturating_add(duration_ms(timeout + Duration::from_millis(500)));
                let generation = self.generation(provider);
                if refetch {
                    if let Some(slot) = self.last_forced_ms.borrow_mut().get_mut(provider) {
                        *slot = Some(millis(now));
                    }
                }
                // Not full (checked above; nothing else runs in between).
                self.waiting.push(Waiter { context_id, provider, generation, deadline_ms, refetch });
                Decision::Wait(Wait { provider, refetch, deadline_ms, failures: self.failures(provider) })
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

    /// Wake the waiting requests whose provider has new keys or whose wait is over: each
    /// decides again in its `on_wake`.
    fn serve_waiters(&self, host: &dyn Host, now: SystemTime) {
        if self.waiting.is_empty() {
            return;
        }
        let now_ms = millis(now);
        for w in self.waiting.take(|w| now_ms >= w.deadline_ms || self.generation(w.provider) != w.generation) {
            // A stream that is gone by then is skipped by the glue.
            let _ = host.wake(w.context_id);
        }
    }

    fn forget(&self, context_id: u32) {
        self.waiting.forget(context_id);
    }

    fn wants_refetch(&self, provider: usize) -> bool {
        self.waiting.any(|w| w.provider == provider && w.refetch)
    }
}

/// jwt_authn's realm: the request's original URI, `<x-forwarded-proto>://<host><path>`, the
/// path (query included) cut at 256 bytes as Envoy's `buildOriginalUri` does for jwt_authn.
fn realm(request: &RequestHeaders) -> String {
    const MAX_PATH: usize = 256;
    let scheme = match request.get_str("x-forwarded-proto") {
        "" => request.get_str(":scheme"),
        s => s,
    };
    let path = request.get(":path").unwrap_or_default();
    let path = String::from_utf8_lossy(&path[..path.len().min(MAX_PATH)]);
    let text = format!("{scheme}://{}{path}", request.get_str(":authority"));
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

pub struct JwtAuthRoot {
    worker: Option<Rc<Worker>>,
    fetches: Vec<RemoteFetch>,
    ticker: Ticker,
}

impl Default for JwtAuthRoot {
    fn default() -> Self {
        JwtAuthRoot { worker: None, fetches: Vec::new(), ticker: Ticker::new(FIRST_TICK, TICK) }
    }
}

impl JwtAuthRoot {
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
                    &format!(
                        "{NAME}: cannot call cluster {:?} for the JWKS ({e}); retrying in {retry:?}",
                        remote.cluster
                    ),
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
            // Retries double from `failed_refetch_duration` up to 30 s, but never wait longer
            // than the JWKS is meant to be cached.
            let policy = FetchPolicy {
                refresh_fraction: 0.8,
                backoff_base: r.retry_base,
                backoff_max: r.cache_duration.clamp(r.retry_base, Duration::from_secs(30).max(r.retry_base)),
                fetch_timeout: r.timeout,
            };
            let fetcher = Fetcher::new(&prefix, holder, policy);
            fetcher.ensure_exists(host).map_err(|e| {
                ConfigError::new(format!("providers.{}.remote_jwks", p.name), format!("cannot create shared data: {e}"))
            })?;
            fetches.push(RemoteFetch { provider: i, fetcher });
            remote
                .push(Some(RefCell::new(RemoteKeys { value_key: format!("{prefix}value"), ..RemoteKeys::default() })));
        }
        let n_providers = config.providers.len();
        let engine = Engine::new(config);
        let caches = RefCell::new(engine.new_caches());
        self.worker = Some(Rc::new(Worker {
            engine,
            stats: Stats::define(host),
            remote,
            caches,
            waiting: WaitList::new(MAX_WAITING),
            last_forced_ms: RefCell::new(vec![None; n_providers]),
            fetch_failures: RefCell::new(vec![0; n_providers]),
        }));
        self.fetches = fetches;
        if !self.fetches.is_empty() {
            self.ticker.start(host).map_err(|e| ConfigError::new("", format!("cannot set the timer: {e}")))?;
        }
        Ok(())
    }

    fn new_http_filter(&self, context_id: u32) -> Option<JwtAuth> {
        Some(JwtAuth { worker: self.worker.clone()?, context_id, wait: None })
    }

    fn on_tick(&mut self, host: &dyn Host) {
        self.ticker.on_tick(host, NAME);
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
                    host.log(
                        LogLevel::Info,
                        &format!("{NAME}: provider {name}: JWKS fetched (generation {generation})"),
                    );
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
                    let provider = f.provider;
                    if let Some(n) = worker.fetch_failures.borrow_mut().get_mut(provider) {
                        *n += 1;
                    }
                    worker.waiting.update(|w| {
                        if w.provider == provider {
                            w.deadline_ms = w.deadline_ms.min(millis(now));
                        }
                    });
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
    /// While paused for keys: what for.
    wait: Option<Wait>,
}

impl JwtAuth {
    fn settle(&mut self, decision: Decision) -> Action {
        match decision {
            Decision::Done(action) => action,
            Decision::Wait(wait) => {
                self.wait = Some(wait);
                Action::Pause
            }
        }
    }
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
        let decision = w.decide(host, self.context_id, None, None);
        self.settle(decision)
    }

    /// The root woke this waiting request: its provider has new keys, a fetch failed, or the
    /// wait is over. Decide again, on this stream's own request.
    fn on_wake(&mut self, host: &dyn Host) -> Action {
        let Some(wait) = self.wait.take() else { return Action::Pause };
        let w = &self.worker;
        let ended = millis(host.now()) >= wait.deadline_ms || w.failures(wait.provider) != wait.failures;
        let timed_out = ended.then_some(wait.provider);
        let refetched = wait.refetch.then_some(wait.provider).or(timed_out);
        let decision = w.decide(host, self.context_id, refetched, timed_out);
        self.settle(decision)
    }

    fn on_log(&mut self, _host: &dyn Host) {
        if self.wait.is_some() {
            self.worker.forget(self.context_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use shared::mock::MockHost;
    use shared::proxytest::{Phase, Proxy, Worker};

    const SECRET: &[u8] = b"a-test-secret-of-32-bytes-length";
    const NOW: u64 = 1_800_000_000;

    fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut k = [0u8; 64];
        k[..key.len()].copy_from_slice(key);
        let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).chain(msg.iter().copied()).collect();
        let inner_hash = Sha256::digest(&inner);
        let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).chain(inner_hash.iter().copied()).collect();
        Sha256::digest(&outer).to_vec()
    }

    fn sign(header: &str, payload: &str, key: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            shared::base64::encode_url(AsRef::<[u8]>::as_ref(&header)),
            shared::base64::encode_url(AsRef::<[u8]>::as_ref(&payload))
        );
        let sig = hmac_sha256(key, input.as_bytes());
        format!("{input}.{}", shared::base64::encode_url(AsRef::<[u8]>::as_ref(&sig)))
    }

    fn hs(payload: &str) -> String {
        sign(r#"{"alg":"HS256","kid":"h1"}"#, payload, SECRET)
    }

    fn jwks(kid: &str) -> String {
        format!(
            r#"{{"keys":[{{"kty":"oct","kid":"{kid}","alg":"HS256","k":"{}"}}]}}"#,
            shared::base64::encode_url(AsRef::<[u8]>::as_ref(&SECRET))
        )
    }

    fn local_config(extra_provider: &str, rules: &str) -> String {
        let jwks = jwks("h1").replace('"', "\\\"");
        format!(
            r#"{{"providers":{{"p":{{"issuer":"https://iss","audiences":["api"],"local_jwks":{{"inline_string":"{jwks}"}}{extra_provider}}}}},"rules":{rules}}}"#
        )
    }

    const RULES: &str = r#"[{"match":{"prefix":"/open"}},{"match":{"prefix":"/"},"requires":{"provider_name":"p"}}]"#;

    type W = Worker<JwtAuthRoot>;

    fn proxy() -> Proxy {
        let p = Proxy::new();
        p.set_now(UNIX_EPOCH + Duration::from_secs(NOW));
        p
    }

    /// A bare host, for configurations refused before any request.
    fn host() -> MockHost {
        let h = MockHost::new();
        h.set_now(UNIX_EPOCH + Duration::from_secs(NOW));
        h
    }

    fn request(w: &mut W, path: &str, auth: Option<&str>) -> (u32, Action) {
        let bearer = auth.map(|t| format!("Bearer {t}"));
        let mut headers =
            vec![(":path", path), (":authority", "api.test"), (":method", "GET"), ("x-forwarded-proto", "https")];
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        w.request(&headers)
    }

    fn valid_payload() -> String {
        format!(r#"{{"iss":"https://iss","aud":"api","sub":"alice","exp":{},"team":{{"id":7}}}}"#, NOW + 600)
    }

    fn reply(w: &W, id: u32) -> (u32, String, String) {
        let r = w.local_reply(id).expect("a local reply");
        let www = r.header("www-authenticate").unwrap_or_default().to_string();
        (r.status, r.body_text(), www)
    }

    #[test]
    fn valid_token_passes_with_headers_and_without_the_token() {
        let p = proxy();
        let cfg = local_config(
            r#","forward_payload_header":"x-payload","claim_to_headers":[{"header_name":"x-sub","claim_name":"sub"},{"header_name":"x-team","claim_name":"team.id"}]"#,
            RULES,
        );
        let mut w: W = p.worker(&cfg);
        let (id, action) = request(&mut w, "/api", Some(&hs(&valid_payload())));
        assert_eq!(action, Action::Continue);
        assert!(w.local_reply(id).is_none());
        let req = |n: &str| w.request_header_values(id, n);
        assert!(req("authorization").is_empty(), "the token is not forwarded by default");
        assert_eq!(req("x-sub"), vec!["alice"]);
        assert_eq!(req("x-team"), vec!["7"]);
        assert_eq!(req("x-payload"), vec![shared::base64::encode_url(AsRef::<[u8]>::as_ref(&valid_payload()))]);
        assert_eq!(p.metric("jwt_auth.allowed"), Some(1));
    }

    #[test]
    fn forged_claim_headers_are_removed_even_without_a_token_check_passing() {
        let p = proxy();
        let mut w: W =
            p.worker(&local_config(r#","claim_to_headers":[{"header_name":"x-sub","claim_name":"sub"}]"#, RULES));
        let bearer = format!("Bearer {}", hs(&valid_payload()));
        let (id, action) = w.request(&[(":path", "/api"), ("x-sub", "admin"), ("authorization", &bearer)]);
        assert_eq!(action, Action::Continue);
        assert_eq!(w.request_header_values(id, "x-sub"), vec!["alice"]);
    }

    #[test]
    fn answers_like_jwt_authn() {
        let p = proxy();
        let mut w: W = p.worker(&local_config("", RULES));
        let realm = r#"Bearer realm="https://api.test/api?q=1""#;
        let invalid = format!(r#"{realm}, error="invalid_token""#);
        let (id, a) = request(&mut w, "/api?q=1", None);
        assert_eq!(a, Action::Pause);
        assert_eq!(reply(&w, id), (401, "Jwt is missing".into(), realm.into()));
        let cases: Vec<(String, u32, &str)> = vec![
            (hs(&format!(r#"{{"iss":"https://iss","aud":"api","exp":{}}}"#, NOW - 61)), 401, "Jwt is expired"),
            (hs(&format!(r#"{{"iss":"https://iss","aud":"api","nbf":{}}}"#, NOW + 61)), 401, "Jwt not yet valid"),
            (hs(r#"{"iss":"https://other","aud":"api"}"#), 401, "Jwt issuer is not configured"),
            (hs(r#"{"iss":"https://iss","aud":"other"}"#), 403, "Audiences in Jwt are not allowed"),
            (
                sign(r#"{"alg":"HS256","kid":"h1"}"#, r#"{"iss":"https://iss","aud":"api"}"#, b"wrong"),
                401,
                "Jwt verification fails",
            ),
            (
                sign(r#"{"alg":"HS256","kid":"zz"}"#, r#"{"iss":"https://iss","aud":"api"}"#, SECRET),
                401,
                "Jwks doesn't have key to match kid or alg from Jwt",
            ),
            (
                sign(r#"{"alg":"none"}"#, r#"{"iss":"https://iss","aud":"api"}"#, SECRET),
                401,
                "Jwt header [alg] is not supported",
            ),
            (
                sign(r#"{"alg":"HS256","crit":["b64"]}"#, r#"{"iss":"https://iss","aud":"api"}"#, SECRET),
                401,
                "Jwt header [crit] lists an unsupported extension",
            ),
            ("a.b".into(), 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
            (
                format!("{}.", hs(r#"{"iss":"https://iss","aud":"api"}"#).rsplit_once('.').unwrap().0),
                401,
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
            ),
            ("x".repeat(9000), 401, "Jwt is too large"),
        ];
        for (token, status, body) in cases {
            let (id, a) = request(&mut w, "/api?q=1", Some(&token));
            assert_eq!(a, Action::Pause, "{body}");
            assert_eq!(reply(&w, id), (status, body.to_string(), invalid.clone()), "{body}");
        }
        assert_eq!(p.metric("jwt_auth.denied"), Some(12));
        assert_eq!(p.metric("jwt_auth.denied_missing"), Some(1));
        assert_eq!(p.metric("jwt_auth.denied_expired"), Some(1));
        assert_eq!(p.metric("jwt_auth.denied_audience"), Some(1));
        assert_eq!(p.metric("jwt_auth.denied_bad_signature"), Some(1));
        assert_eq!(p.metric("jwt_auth.denied_no_matching_key"), Some(1));
        assert_eq!(p.metric("jwt_auth.denied_malformed"), Some(5));
        // No rule needs a JWT under /open.
        let (_, a) = request(&mut w, "/open/x", None);
        assert_eq!(a, Action::Continue);
    }

    #[test]
    fn cache_hits_but_never_past_exp() {
        let p = proxy();
        let mut w: W = p.worker(&local_config(r#","clock_skew_seconds":1"#, RULES));
        let token = hs(&format!(r#"{{"iss":"https://iss","aud":"api","exp":{}}}"#, NOW + 5));
        for _ in 2..5 {
            assert_eq!(request(&mut w, "/api", Some(&token)).1, Action::Continue);
        }
        assert_eq!((p.metric("jwt_auth.jwt_cache_miss"), p.metric("jwt_auth.jwt_cache_hit")), (Some(1), Some(2)));
        p.advance(Duration::from_secs(7));
        let (id, a) = request(&mut w, "/api", Some(&token));
        assert_eq!(a, Action::Pause);
        assert_eq!(reply(&w, id).1, "Jwt is expired");
        // A token that fails is never cached.
        let bad = sign(r#"{"alg":"HS256"}"#, r#"{"iss":"https://iss","aud":"api"}"#, b"wrong");
        for _ in 6..8 {
            let (id, _) = request(&mut w, "/api", Some(&bad));
            assert_eq!(reply(&w, id).1, "Jwt verification fails");
        }
        assert_eq!(p.metric("jwt_auth.jwt_cache_hit"), Some(2));
    }

    #[test]
    fn requirement_trees() {
        let p = proxy();
        let rules = r#"[{"match":{"prefix":"/optional"},"requires":{"allow_missing":{}}},
            {"match":{"prefix":"/lenient"},"requires":{"allow_missing_or_failed":{}}},
            {"match":{"prefix":"/any"},"requires":{"requires_any":{"requirements":[{"provider_name":"p"},{"allow_missing":{}}]}}}]"#;
        let mut w: W = p.worker(&local_config("", rules));
        let bad = sign(r#"{"alg":"HS256"}"#, r#"{"iss":"https://iss","aud":"api"}"#, b"wrong");
        assert_eq!(request(&mut w, "/optional", None).1, Action::Continue);
        let (id, a) = request(&mut w, "/optional", Some(&bad));
        assert_eq!(a, Action::Pause);
        assert_eq!(reply(&w, id).1, "Jwt verification fails");
        assert_eq!(request(&mut w, "/lenient", Some(&bad)).1, Action::Continue);
        assert_eq!(request(&mut w, "/any", None).1, Action::Continue);
        assert_eq!(request(&mut w, "/any", Some(&bad)).1, Action::Pause);
        assert_eq!(request(&mut w, "/any", Some(&hs(&valid_payload()))).1, Action::Continue);
    }

    fn remote_config() -> String {
        r#"{"providers":{"r":{"issuer":"https://iss","remote_jwks":{"http_uri":{"uri":"http://keys.test:8080/jwks.json?v=1","cluster":"jwks","timeout":"2s"},"cache_duration":"300s"}}},
            "rules":[{"match":{"prefix":"/"},"requires":{"provider_name":"r"}}]}"#
            .to_string()
    }

    /// Answer the worker's last JWKS fetch.
    fn answer(w: &mut W, status: &str, body: &str) {
        let call = w.last_http_call();
        w.answer_http_call(call.token, &[(":status", status)], body.as_bytes());
    }

    #[test]
    fn remote_jwks_fetched_at_start_and_waiting_requests_resumed() {
        let p = proxy();
        let mut w: W = p.worker(&remote_config());
        let token = hs(r#"{"iss":"https://iss"}"#);
        let (id, a) = request(&mut w, "/api", Some(&token));
        assert_eq!(a, Action::Pause);
        assert!(w.local_reply(id).is_none(), "waits for the keys");
        w.tick();
        let calls = w.http_calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].cluster, "jwks");
        let hv = |n: &str| calls[0].header(n);
        assert_eq!(
            (hv(":method"), hv(":path"), hv(":authority")),
            (Some("GET"), Some("/jwks.json?v=1"), Some("keys.test:8080"))
        );
        answer(&mut w, "200", &jwks("h1"));
        assert_eq!(w.resumes(), vec![(id, Phase::Request)]);
        assert_eq!(p.metric("jwt_auth.jwks_fetch_success"), Some(1));
        // Later requests verify at once; ticks do not refetch before the refresh time.
        assert_eq!(request(&mut w, "/api", Some(&token)).1, Action::Continue);
        for _ in 0..20 {
            p.advance(Duration::from_secs(10));
            w.tick();
        }
        assert_eq!(w.http_calls().len(), 1, "refresh at 80% of 300 s");
        p.advance(Duration::from_secs(50));
        w.tick();
        assert_eq!(w.http_calls().len(), 2);
        // A failed refresh keeps the keys.
        answer(&mut w, "503", "");
        assert_eq!(p.metric("jwt_auth.jwks_fetch_failed"), Some(1));
        assert_eq!(request(&mut w, "/api", Some(&token)).1, Action::Continue);
    }

    #[test]
    fn a_resumed_stream_reads_its_own_headers() {
        // Stream A (a forged signature) and stream B (a good token) both wait for the JWKS;
        // when it arrives, each is decided on its own request headers. (On the old one-map
        // mock, A was decided on B's headers and let through.)
        let p = proxy();
        let mut w: W = p.worker(&remote_config());
        let forged = sign(r#"{"alg":"HS256","kid":"h1"}"#, r#"{"iss":"https://iss"}"#, b"wrong");
        let (a, act) = request(&mut w, "/a", Some(&forged));
        assert_eq!(act, Action::Pause);
        let (b, act) = request(&mut w, "/b", Some(&hs(r#"{"iss":"https://iss"}"#)));
        assert_eq!(act, Action::Pause);
        w.tick();
        answer(&mut w, "200", &jwks("h1"));
        assert_eq!(w.resumes(), vec![(b, Phase::Request)], "only B goes on");
        let replies = w.local_replies();
        assert_eq!(replies.len(), 1);
        assert_eq!((replies[0].0, replies[0].1.status), (a, 401));
        assert_eq!(reply(&w, a).1, "Jwt verification fails");
        assert!(w.request_header_values(b, "authorization").is_empty(), "B's token removed from B");
        assert_eq!(w.request_header_values(a, "authorization").len(), 1, "A's request untouched");
    }

    #[test]
    fn no_jwks_within_the_timeout_is_jwt_authn_fetch_failure() {
        let p = proxy();
        let mut w: W = p.worker(&remote_config());
        w.tick();
        answer(&mut w, "500", "");
        let (id, a) = request(&mut w, "/api", Some(&hs(r#"{"iss":"https://iss"}"#)));
        assert_eq!(a, Action::Pause);
        p.advance(Duration::from_secs(3));
        w.tick();
        let replies = w.local_replies();
        assert_eq!(replies.len(), 1);
        assert_eq!((replies[0].0, replies[0].1.status), (id, 401));
        assert_eq!(replies[0].1.body, b"Jwks remote fetch is failed");
        assert_eq!(p.metric("jwt_auth.denied_jwks_unavailable"), Some(1));
    }

    #[test]
    fn a_failed_fetch_answers_the_requests_that_waited_for_it() {
        // Waiting for the first JWKS; the fetch fails: the request gets its answer at once,
        // not at its deadline.
        let p = proxy();
        let mut w: W = p.worker(&remote_config());
        let (id, a) = request(&mut w, "/api", Some(&hs(r#"{"iss":"https://iss"}"#)));
        assert_eq!(a, Action::Pause);
        w.tick();
        answer(&mut w, "500", "");
        assert_eq!(reply(&w, id).1, "Jwks remote fetch is failed");
        assert!(w.resumes().is_empty());
    }

    #[test]
    fn unknown_kid_refetches_once_then_verifies() {
        let p = proxy();
        let mut w: W = p.worker(&remote_config());
        w.tick();
        answer(&mut w, "200", &jwks("old"));
        let retired = sign(r#"{"alg":"HS256","kid":"old"}"#, r#"{"iss":"https://iss"}"#, SECRET);
        assert_eq!(request(&mut w, "/api", Some(&retired)).1, Action::Continue, "verified and cached");
        p.advance(Duration::from_secs(11));
        let rotated = sign(r#"{"alg":"HS256","kid":"new"}"#, r#"{"iss":"https://iss"}"#, SECRET);
        let (id, a) = request(&mut w, "/api", Some(&rotated));
        assert_eq!(a, Action::Pause);
        w.tick();
        assert_eq!(w.http_calls().len(), 2, "refetched for the unknown kid");
        answer(&mut w, "200", &jwks("new"));
        assert_eq!(w.resumes(), vec![(id, Phase::Request)]);
        // The key "old" is gone: its cached token is not accepted any more.
        let (id, a) = request(&mut w, "/api", Some(&retired));
        assert_eq!(a, Action::Pause);
        assert_eq!(reply(&w, id).1, "Jwks doesn't have key to match kid or alg from Jwt");
        // Right after a fetch, another unknown kid is answered at once (rate limit).
        let other = sign(r#"{"alg":"HS256","kid":"other"}"#, r#"{"iss":"https://iss"}"#, SECRET);
        let (id, a) = request(&mut w, "/api", Some(&other));
        assert_eq!(a, Action::Pause);
        assert_eq!(reply(&w, id).1, "Jwks doesn't have key to match kid or alg from Jwt");
        w.tick();
        assert_eq!(w.http_calls().len(), 2);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (r#"{"providers":{"p":{"issuer":"x"}}}"#, "providers.p"),
            (r#"{"providers":{"p":{"subjects":{}}}}"#, "providers.p"),
            (
                r#"{"rules":[{"match":{"prefix":"/"},"requires":{"provider_name":"nope"}}]}"#,
                "rules[0].requires.provider_name",
            ),
            (r#"{"requirement_map":{}}"#, ""),
            (r#"{"providers":{"p":{"local_jwks":{"filename":"/x"}}}}"#, "providers.p.local_jwks"),
            (r#"{"providers":{"p":{"local_jwks":{"inline_string":"{}"}}}}"#, "providers.p.local_jwks.inline_string"),
            (
                r#"{"providers":{"p":{"remote_jwks":{"http_uri":{"uri":"ftp://x","cluster":"c","timeout":"1s"}}}}}"#,
                "providers.p.remote_jwks.http_uri.uri",
            ),
            (r#"{"max_token_bytes":1}"#, "max_token_bytes"),
            (r#"{"rules":[{"match":{"prefix":"/","headers":[]}}]}"#, "rules[0].match"),
        ];
        for (json, field) in cases {
            let mut r = JwtAuthRoot::default();
            let e = r.configure(&host(), Some(json.as_bytes())).unwrap_err();
            assert!(e.field.starts_with(field), "{json}: {e}");
        }
    }
}
