//! The root context fetches (when it holds the lease) and keeps this worker's copy of the
//! token; HTTP contexts inject it, or wait for it.
//!
//! - Every worker ticks every [`TICK`]: [`Fetcher::poll`] decides whether this worker fetches
//!   now (one per proxy, through the lease); then the worker re-reads the published token
//!   (one shared-data read), resumes the requests waiting for it, and answers those that
//!   waited too long.
//! - Requests that find no valid token are paused and registered, by context id, in this
//!   worker's waiting list (bounded, [`MAX_WAITING`]); each stream keeps its own deadline.
//!   The root wakes them ([`Host::wake`]) when a token arrives or their deadline passes; each
//!   stream then decides in `on_wake` on its own request (inject, or the no-token answer) and
//!   the glue resumes it on `Continue`.
//! - Why polling, not a shared queue: a worker learns of a new token within one tick either
//!   way, the token record is one small key, and a queue would need a consumer per worker and
//!   bounded keys; polling one key per tick per worker is the cheapest mechanism that is
//!   correct. The worker that fetched resumes its own waiters at once, without waiting for
//!   its tick; a request that finds its worker's copy stale re-reads shared data itself.

use crate::config::{Compiled, Config, Extract, OAUTH2_DEFAULT_LIFETIME};
use shared::config::ConfigError;
use shared::fetch::{FetchResult, Fetcher, Outcome, Published, Ticker};
use shared::hash::{keyed_fingerprint, HashKey};
use shared::host::{BodyKind, HeaderMapKind, HostExt};
use shared::lease::holder_id;
use shared::stats::{Counter, Gauge};
use shared::time::{duration_ms, millis};
use shared::waiting::WaitList;
use shared::{reply, Action, Host, HttpFilter, LogLevel, RootFilter};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

pub const NAME: &str = "token-fetch";
/// Timer period of every worker: lease, refresh, token polling, waiting-request deadlines.
pub const TICK: Duration = Duration::from_millis(250);
/// The first tick comes sooner, so the first fetch happens at start.
pub const FIRST_TICK: Duration = Duration::from_millis(20);
/// Requests one worker holds waiting for a token; beyond, they get the no-token answer at once.
pub const MAX_WAITING: usize = 4096;
/// Largest token response body read.
const MAX_BODY: usize = 64 * 1024;

/// Stat names, as Envoy shows them (under `wasmcustom.`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub fetch_success: Counter,
    pub fetch_failure: Counter,
    pub requests_injected: Counter,
    /// Answered 503: no valid token (after waiting).
    pub requests_rejected_no_token: Counter,
    /// Passed on without the header (`allow_request_without_credential`).
    pub requests_allowed_no_token: Counter,
    /// Requests that had to wait for a token.
    pub requests_paused: Counter,
    /// Seconds the current token has left (0: none valid).
    pub token_remaining_seconds: Gauge,
}

impl Stats {
    fn define(host: &dyn Host) -> Self {
        let c = |n: &str| Counter::define(host, &format!("token_fetch.{n}"));
        Stats {
            fetch_success: c("fetch_success"),
            fetch_failure: c("fetch_failure"),
            requests_injected: c("requests_injected"),
            requests_rejected_no_token: c("requests_rejected_no_token"),
            requests_allowed_no_token: c("requests_allowed_no_token"),
            requests_paused: c("requests_paused"),
            token_remaining_seconds: Gauge::define(host, "token_fetch.token_remaining_seconds"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Waiter {
    context_id: u32,
    deadline_ms: u64,
}

impl shared::waiting::Waiter for Waiter {
    fn context_id(&self) -> u32 {
        self.context_id
    }
}

/// What the root and this worker's HTTP contexts share.
pub struct Worker {
    pub config: Compiled,
    stats: Stats,
    value_key: String,
    /// This worker's copy of the published token (header value bytes).
    cache: RefCell<Option<Published>>,
    waiting: WaitList<Waiter>,
    /// The published record (fetched at this time) was unusable: the root fetches again at
    /// its next tick, unless another worker already replaced it.
    unusable_record: Cell<Option<u64>>,
}

impl Worker {
    /// A valid header value: this worker's copy, else a fresh read of shared data (another
    /// worker may have fetched since our last tick). Never an expired one.
    fn token(&self, host: &dyn Host, now: SystemTime) -> Option<Vec<u8>> {
        if let Some(p) = self.cache.borrow().as_ref().filter(|p| p.is_valid_at(now)) {
            return Some(p.value.clone());
        }
        self.refresh_cache(host, now)
    }

    /// Re-read the published record. One whose value this configuration would not have
    /// published (see [`Compiled::is_injectable`]) is never used, and is fetched again.
    fn refresh_cache(&self, host: &dyn Host, now: SystemTime) -> Option<Vec<u8>> {
        let mut fresh = host.shared_data(&self.value_key).0.and_then(|b| Published::decode(&b));
        if let Some(p) = fresh.as_ref().filter(|p| p.generation > 0 && !self.config.is_injectable(&p.value)) {
            let seen = p.fetched_at_ms;
            fresh = None;
            if self.unusable_record.replace(Some(seen)).is_none() {
                host.log(
                    LogLevel::Warn,
                    &format!(
                        "{NAME}: the shared-data record {} is not a valid header value; fetching again",
                        self.value_key
                    ),
                );
            }
        }
        let valid = fresh.as_ref().filter(|p| p.is_valid_at(now)).map(|p| p.value.clone());
        *self.cache.borrow_mut() = fresh;
        valid
    }

    /// Set the header on the request of the current (effective) context.
    fn inject(&self, host: &dyn Host, value: &[u8]) {
        let c = &self.config;
        if !c.overwrite && host.header(HeaderMapKind::RequestHeaders, &c.header_name).is_some() {
            return;
        }
        match host.set_header(HeaderMapKind::RequestHeaders, &c.header_name, value) {
            Ok(()) => self.stats.requests_injected.inc(host),
            Err(e) => host.log(LogLevel::Error, &format!("{NAME}: cannot set {}: {e}", c.header_name)),
        }
    }

    /// No valid token for the current context's request: 503 (and `Pause`), or `Continue`
    /// without the header.
    fn no_token(&self, host: &dyn Host) -> Action {
        if self.config.allow_request_without_credential {
            self.stats.requests_allowed_no_token.inc(host);
            return Action::Continue;
        }
        self.stats.requests_rejected_no_token.inc(host);
        let body = format!("{NAME}: no valid credential for the upstream is available; retry later");
        if reply::send_text(host, 503, &body, &[("retry-after", "1")]).is_err() {
            host.log(LogLevel::Error, &format!("{NAME}: cannot send the 503 reply"));
        }
        Action::Pause
    }

    /// Wake the waiters when there is a token, or when their deadline has passed.
    fn serve_waiters(&self, host: &dyn Host, now: SystemTime) {
        if self.waiting.is_empty() {
            return;
        }
        let has_token = self.token(host, now).is_some();
        let now_ms = millis(now);
        for w in self.waiting.take(|w| has_token || now_ms >= w.deadline_ms) {
            // A stream that is gone by then is skipped by the glue.
            let _ = host.wake(w.context_id);
        }
    }

    /// Pause the current request until a token comes or `deadline_ms`; `false` when it
    /// cannot wait (no wait configured, or the list is full).
    fn wait(&self, context_id: u32, deadline_ms: u64) -> bool {
        !self.config.pending_request_timeout.is_zero() && self.waiting.push(Waiter { context_id, deadline_ms })
    }

    fn forget(&self, context_id: u32) {
        self.waiting.forget(context_id);
    }
}

pub struct TokenFetchRoot {
    worker: Option<Rc<Worker>>,
    fetcher: Option<Fetcher>,
    ticker: Ticker,
    /// The proxy's key for fingerprints ([`proxy_key`]).
    key: HashKey,
}

impl Default for TokenFetchRoot {
    fn default() -> Self {
        TokenFetchRoot {
            worker: None,
            fetcher: None,
            ticker: Ticker::new(FIRST_TICK, TICK),
            key: HashKey::new([0; 16]),
        }
    }
}

impl TokenFetchRoot {
    pub fn worker(&self) -> Option<&Rc<Worker>> {
        self.worker.as_ref()
    }

    fn dispatch(&mut self, host: &dyn Host, now: SystemTime) {
        let (Some(worker), Some(fetcher)) = (&self.worker, &mut self.fetcher) else { return };
        let c = &worker.config;
        let headers: Vec<(&str, &str)> = c.request_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        match host.dispatch_http_call(&c.cluster, &headers, c.request_body.as_deref(), c.policy.fetch_timeout) {
            Ok(token) => {
                fetcher.started(token, now);
                host.log_with(LogLevel::Debug, || format!("{NAME}: fetching a token from cluster {}", c.cluster));
            }
            Err(e) => {
                worker.stats.fetch_failure.inc(host);
                let retry = fetcher.dispatch_failed(now);
                host.log(
                    LogLevel::Warn,
                    &format!("{NAME}: cannot call cluster {:?} ({e}); retrying in {retry:?}", c.cluster),
                );
            }
        }
    }

    fn update_gauge(&self, host: &dyn Host, now: SystemTime) {
        if let Some(w) = &self.worker {
            let remaining = w.cache.borrow().as_ref().map_or(Duration::ZERO, |p| p.remaining(now));
            w.stats.token_remaining_seconds.set(host, remaining.as_secs());
        }
    }
}

/// Parse a token-endpoint answer into (header value, lifetime). Error texts never include the
/// body or the token: the body may echo credentials.
pub fn parse_answer(c: &Compiled, host: &dyn Host, body_size: usize) -> FetchResult {
    let status = host.header_str(HeaderMapKind::HttpCallResponseHeaders, ":status");
    token_from_answer(
        c,
        status.as_deref(),
        |name| host.header(HeaderMapKind::HttpCallResponseHeaders, name),
        || host.body(BodyKind::HttpCallResponse, 0, body_size.min(MAX_BODY)).unwrap_or_default(),
    )
}

/// [`parse_answer`] without the host: the `:status` (`None`: no answer), a reader of the
/// answer's headers and of its body (read only when the token is in it). Every accepted token
/// passed [`Compiled::header_value`]: no control byte, non-ASCII, or more than
/// [`crate::config::MAX_TOKEN_BYTES`] (the fuzz target `token_fetch_answer` checks it).
pub fn token_from_answer(
    c: &Compiled,
    status: Option<&str>,
    header: impl FnOnce(&str) -> Option<Vec<u8>>,
    body: impl FnOnce() -> Vec<u8>,
) -> FetchResult {
    let Some(status) = status else {
        return FetchResult::Failed("no answer (timeout, connection failure or reset)".into());
    };
    if status != "200" {
        return FetchResult::Failed(describe_status(status));
    }
    let (token, lifetime) = match &c.extract {
        Extract::Header(name) => match header(name) {
            Some(v) => {
                (String::from_utf8(v).map_err(|_| "the token header is not UTF-8".to_string()), c.fixed_lifetime)
            }
            None => return FetchResult::Failed(format!("no {name} header in the answer")),
        },
        Extract::JsonField(field) => {
            let json: serde_json::Value = match serde_json::from_slice(&body()) {
                Ok(v) => v,
                Err(e) => return FetchResult::Failed(json_error(&e)),
            };
            match json.get(field).and_then(|v| v.as_str()) {
                Some(t) => (Ok(t.to_string()), c.fixed_lifetime),
                None => return FetchResult::Failed(format!("no string field {field:?} in the JSON answer")),
            }
        }
        Extract::OAuth2 => {
            let json: serde_json::Value = match serde_json::from_slice(&body()) {
                Ok(v) => v,
                Err(e) => return FetchResult::Failed(json_error(&e)),
            };
            let Some(token) = json.get("access_token").and_then(|v| v.as_str()) else {
                return FetchResult::Failed("no string access_token in the answer".into());
            };
            if let Some(tt) = json.get("token_type") {
                let bearer_prefix = c.header_prefix.trim_end().eq_ignore_ascii_case("bearer");
                if bearer_prefix && !tt.as_str().is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
                    return FetchResult::Failed(format!(
                        "{} cannot be sent as a Bearer token",
                        describe_token_type(tt)
                    ));
                }
            }
            let lifetime = match oauth2_lifetime(json.get("expires_in")) {
                Ok(lifetime) => lifetime,
                Err(e) => return FetchResult::Failed(e.into()),
            };
            (Ok(token.to_string()), Some(lifetime))
        }
    };
    let token = match token {
        Ok(t) => t,
        Err(e) => return FetchResult::Failed(e),
    };
    let lifetime = lifetime.unwrap_or(OAUTH2_DEFAULT_LIFETIME);
    match c.header_value(&token) {
        Ok(value) => FetchResult::Fetched { value: value.into_bytes(), lifetime },
        Err(e) => FetchResult::Failed(e),
    }
}

/// The longest an OAuth2 token is used, whatever its `expires_in` says.
pub const MAX_OAUTH2_LIFETIME: Duration = Duration::from_secs(366 * 86_400);

/// An OAuth2 answer's `expires_in`: absent or `null` is [`OAUTH2_DEFAULT_LIFETIME`]; a positive
/// whole number of seconds in any JSON spelling (`3600`, `3600.0`, `3.6e3`, as protobuf's
/// JSON reading in Envoy's OAuth2 clients takes it) or a string of digits is the lifetime,
/// cut to [`MAX_OAUTH2_LIFETIME`] (a longer one is a valid answer: refusing it would leave the
/// proxy without any token). Zero, negative, fractional or other values are refused.
fn oauth2_lifetime(expires_in: Option<&serde_json::Value>) -> Result<Duration, &'static str> {
    let max = MAX_OAUTH2_LIFETIME.as_secs();
    let secs = match expires_in {
        None | Some(serde_json::Value::Null) => return Ok(OAUTH2_DEFAULT_LIFETIME),
        Some(serde_json::Value::String(s)) => {
            let digits = s.trim();
            // Past u64 (more than 19 digits) is long-lived, like 1e300: cut below.
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u64>().unwrap_or(u64::MAX))
        }
        Some(v) => v.as_u64().or_else(|| {
            // `as` saturates: 1e300 is u64::MAX, cut below.
            v.as_f64().filter(|f| f.is_finite() && *f >= 1.0 && f.fract() == 0.0).map(|f| f as u64)
        }),
    };
    match secs {
        Some(s) if s > 0 => Ok(Duration::from_secs(s.min(max))),
        _ => Err("expires_in is not a positive whole number of seconds"),
    }
}

/// The key of this proxy's fingerprints ([`Compiled::fingerprint`], the token's in the log):
/// every worker uses the same one (the shared-data keys are named with it), and it cannot be
/// computed outside the proxy (else a fingerprint would test guessed secrets offline). It
/// comes from the per-proxy seed every worker agrees on ([`shared::seed`]).
fn proxy_key(host: &dyn Host) -> Result<HashKey, ConfigError> {
    shared::seed::agree(host)
        .map(|seed| seed.hash_key("token-fetch/fingerprint"))
        .map_err(|e| ConfigError::new("", format!("no per-proxy seed for fingerprints: {e}")))
}

/// Token types a refusal may quote: the names of IANA's OAuth Access Token Types registry and
/// the draft `mac`. Any other `token_type` is described, never quoted: the answer chose that
/// text, and it may hold the token itself (found by the fuzz target `token_fetch_answer`).
const NAMED_TOKEN_TYPES: [&str; 5] = ["Bearer", "N_A", "PoP", "DPoP", "mac"];

/// `token_type …` for a refusal, without the answer's own text unless it is a registered name.
fn describe_token_type(tt: &serde_json::Value) -> String {
    match tt.as_str() {
        Some(t) => match NAMED_TOKEN_TYPES.iter().find(|n| n.eq_ignore_ascii_case(t)) {
            Some(name) => format!("token_type {name:?}"),
            None => format!("token_type of {} bytes (not Bearer, not quoted)", t.len()),
        },
        None => "token_type that is not a string".to_string(),
    }
}

/// `status …` for a refusal: the code when it is one (Envoy hands over three digits), else
/// only that it is not: the host's text is never quoted.
fn describe_status(status: &str) -> String {
    if status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit()) {
        format!("status {status}")
    } else {
        format!(":status of {} bytes that is not a status code", status.len())
    }
}

/// A JSON error without serde's excerpt of the input (which could be a secret).
fn json_error(e: &serde_json::Error) -> String {
    format!("the answer is not valid JSON ({:?} error at line {} column {})", e.classify(), e.line(), e.column())
}

impl RootFilter for TokenFetchRoot {
    type Http = TokenFetch;
    const NAME: &'static str = NAME;

    fn configure(&mut self, host: &dyn Host, raw_config: Option<&[u8]>) -> Result<(), ConfigError> {
        let config = shared::config::load(raw_config, Config::compile)?;
        self.key = proxy_key(host)?;
        let fingerprint = config.fingerprint(&self.key);
        let prefix = format!("{NAME}/{fingerprint}/");
        let fetcher = Fetcher::new(&prefix, holder_id(0, host.now()), config.policy);
        if let Err(e) = fetcher.ensure_exists(host) {
            return Err(ConfigError::new("", format!("cannot create the shared-data keys: {e}")));
        }
        let client = config.client_id.as_ref().map(|id| format!(", client_id {id:?}")).unwrap_or_default();
        host.log(
            LogLevel::Info,
            &format!(
                "{NAME}: token source cluster {:?}{client}, configuration fingerprint {fingerprint}",
                config.cluster
            ),
        );
        let stats = Stats::define(host);
        self.worker = Some(Rc::new(Worker {
            stats,
            value_key: format!("{prefix}value"),
            config,
            cache: RefCell::new(None),
            waiting: WaitList::new(MAX_WAITING),
            unusable_record: Cell::new(None),
        }));
        self.fetcher = Some(fetcher);
        self.ticker.start(host).map_err(|e| ConfigError::new("", format!("cannot set the timer: {e}")))?;
        Ok(())
    }

    fn new_http_filter(&self, context_id: u32) -> Option<TokenFetch> {
        Some(TokenFetch { worker: self.worker.clone()?, context_id, deadline_ms: None })
    }

    fn on_tick(&mut self, host: &dyn Host) {
        self.ticker.on_tick(host, NAME);
        let now = host.now();
        if let (Some(w), Some(f)) = (&self.worker, &mut self.fetcher) {
            if let Some(seen) = w.unusable_record.take() {
                f.refresh_unless_replaced(seen);
            }
        }
        let due = self.fetcher.as_mut().is_some_and(|f| f.poll(host, now));
        if due {
            self.dispatch(host, now);
        }
        if let Some(w) = &self.worker {
            w.refresh_cache(host, now);
            w.serve_waiters(host, now);
        }
        self.update_gauge(host, now);
    }

    fn on_http_call_response(
        &mut self,
        host: &dyn Host,
        token: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let (Some(worker), Some(fetcher)) = (&self.worker, &mut self.fetcher) else { return };
        let now = host.now();
        let result = parse_answer(&worker.config, host, body_size);
        let token_fp = match &result {
            FetchResult::Fetched { value, .. } => Some(keyed_fingerprint(&self.key, &[value])),
            FetchResult::Failed(_) => None,
        };
        let reason = match &result {
            FetchResult::Failed(r) => r.clone(),
            FetchResult::Fetched { .. } => "fetched, but could not be published to shared data".to_string(),
        };
        let lifetime = match &result {
            FetchResult::Fetched { lifetime, .. } => *lifetime,
            FetchResult::Failed(_) => Duration::ZERO,
        };
        let Some(outcome) = fetcher.on_response(host, token, now, result) else { return };
        match outcome {
            Outcome::Published { generation } => {
                worker.stats.fetch_success.inc(host);
                host.log(
                    LogLevel::Info,
                    &format!(
                        "{NAME}: token fetched (fingerprint {}, generation {generation}, valid {}s)",
                        token_fp.unwrap_or_default(),
                        lifetime.as_secs()
                    ),
                );
                worker.refresh_cache(host, now);
                worker.serve_waiters(host, now);
                self.update_gauge(host, now);
            }
            Outcome::Failed { retry_in } | Outcome::NotPublished { retry_in } => {
                worker.stats.fetch_failure.inc(host);
                let valid = worker.token(host, now).is_some();
                host.log(
                    if valid { LogLevel::Warn } else { LogLevel::Error },
                    &format!(
                        "{NAME}: token fetch from cluster {:?} failed: {reason}; retrying in {:.1}s; {}",
                        worker.config.cluster,
                        retry_in.as_secs_f64(),
                        if valid { "the current token is still valid" } else { "no valid token" }
                    ),
                );
            }
        }
    }
}

pub struct TokenFetch {
    worker: Rc<Worker>,
    context_id: u32,
    /// While paused for a token: when the wait ends.
    deadline_ms: Option<u64>,
}

impl HttpFilter for TokenFetch {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        let w = &self.worker;
        let now = host.now();
        if let Some(value) = w.token(host, now) {
            w.inject(host, &value);
            return Action::Continue;
        }
        let timeout = w.config.pending_request_timeout;
        let deadline_ms = millis(now).saturating_add(duration_ms(timeout));
        if w.wait(self.context_id, deadline_ms) {
            self.deadline_ms = Some(deadline_ms);
            w.stats.requests_paused.inc(host);
            return Action::Pause;
        }
        w.no_token(host)
    }

    /// The root woke this waiting request: a token came, or the wait is over.
    fn on_wake(&mut self, host: &dyn Host) -> Action {
        let Some(deadline_ms) = self.deadline_ms.take() else { return Action::Pause };
        let w = &self.worker;
        let now = host.now();
        if let Some(value) = w.token(host, now) {
            w.inject(host, &value);
            return Action::Continue;
        }
        // The token expired between the wake and now: wait on, within the same deadline.
        if millis(now) < deadline_ms && w.wait(self.context_id, deadline_ms) {
            self.deadline_ms = Some(deadline_ms);
            return Action::Pause;
        }
        w.no_token(host)
    }

    fn on_response_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        let w = &self.worker;
        if w.config.inject_on_response {
            if let Some(value) = w.token(host, host.now()) {
                let name = &w.config.header_name;
                if w.config.overwrite || host.header(HeaderMapKind::ResponseHeaders, name).is_none() {
                    let _ = host.set_header(HeaderMapKind::ResponseHeaders, name, &value);
                }
            }
        }
        Action::Continue
    }
}

/// A stream that ends while waiting for a token leaves the waiting list. On drop (Envoy
/// deletes the context) rather than in `on_log`: the module then need not export
/// `proxy_on_log`, a VM crossing on every request.
impl Drop for TokenFetch {
    fn drop(&mut self) {
        if self.deadline_ms.is_some() {
            self.worker.forget(self.context_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MAX_TOKEN_BYTES;
    use shared::mock::MockHost;
    use shared::proxytest::{Phase, Proxy, Worker};

    const S: Duration = Duration::from_secs(1);

    fn oauth_config(extra: &str) -> String {
        format!(
            r#"{{"oauth2":{{"token_endpoint":{{"cluster":"token-server","uri":"http://auth.local/oauth/token","timeout":"2s"}},
            "client_credentials":{{"client_id":"svc","client_secret":"TOPSECRET"}}}},
            "retry_back_off":{{"base_interval":"1s","max_interval":"8s"}}{extra}}}"#
        )
    }

    type W = Worker<TokenFetchRoot>;

    /// Answer this worker's last HTTP call.
    fn answer(w: &mut W, status: &str, body: &str) {
        let call = w.last_http_call();
        w.answer_http_call(call.token, &[(":status", status)], body.as_bytes());
    }

    fn token_json(t: &str, expires_in: u64) -> String {
        format!(r#"{{"access_token":"{t}","token_type":"Bearer","expires_in":{expires_in}}}"#)
    }

    fn request(w: &mut W) -> (u32, Action) {
        w.request(&[(":path", "/"), (":method", "GET")])
    }

    fn auth(w: &W, id: u32) -> Vec<String> {
        w.request_header_values(id, "authorization")
    }

    #[test]
    fn first_fetch_at_start_then_injection() {
        let p = Proxy::new();
        let mut w: W = p.worker(&oauth_config(""));
        assert_eq!(w.tick_period(), Some(FIRST_TICK));
        w.tick();
        assert_eq!(w.tick_period(), Some(TICK));
        let calls = w.http_calls();
        assert_eq!(calls.len(), 1, "fetched on the first tick");
        let hv = |n: &str| calls[0].header(n).unwrap();
        assert_eq!((hv(":method"), hv(":path"), hv(":authority")), ("POST", "/oauth/token", "auth.local"));
        assert_eq!(calls[0].cluster, "token-server");
        answer(&mut w, "200", &token_json("tok-1", 60));
        let (id, a) = request(&mut w);
        assert_eq!(a, Action::Continue);
        assert_eq!(auth(&w, id), vec!["Bearer tok-1"]);
        assert_eq!(p.metric("token_fetch.requests_injected"), Some(1));
        assert_eq!(p.metric("token_fetch.fetch_success"), Some(1));
        assert_eq!(p.metric("token_fetch.token_remaining_seconds"), Some(60));
    }

    #[test]
    fn fingerprints_are_keyed_by_the_proxy_seed() {
        // Every worker of a proxy uses one key (the shared-data keys are named with it)...
        let p = Proxy::new();
        let a: W = p.worker(&oauth_config(""));
        let b: W = p.worker(&oauth_config(""));
        assert_eq!(a.root().key, b.root().key);
        // ...another proxy another one: no fingerprint can be computed outside the proxy.
        let q = Proxy::new();
        let c: W = q.worker(&oauth_config(""));
        assert_ne!(a.root().key, c.root().key);
        // No random bytes from the host: refuse to start rather than use a guessable key.
        let r = Proxy::new();
        r.fail_random(true);
        let err = Worker::start(&r, TokenFetchRoot::default(), &oauth_config("")).err().unwrap();
        assert!(err.to_string().contains("per-proxy seed"), "{err}");
    }

    #[test]
    fn secrets_and_tokens_never_logged() {
        let p = Proxy::new();
        let mut w: W = p.worker(&oauth_config(""));
        w.tick();
        answer(&mut w, "200", &token_json("tok-SENSITIVE", 60));
        p.advance(50 * S);
        w.tick();
        answer(&mut w, "200", r#"{"access_token":"tok-SENSITIVE2","expires_in":"x"}"#);
        p.advance(5 * S);
        w.tick();
        answer(&mut w, "200", r#"{"access_token": tok-SENSITIVE3"#);
        let logs = p.logs();
        // Fingerprints under the proxy's key: the token's, and the configuration's (which
        // covers the secret) with the non-secret client_id beside it.
        let key = w.root().key;
        let config_fp = w.root().worker().unwrap().config.fingerprint(&key);
        assert!(logs.iter().any(|(_, m)| m.contains(&keyed_fingerprint(&key, &[b"Bearer tok-SENSITIVE"]))), "{logs:?}");
        assert!(logs.iter().any(|(_, m)| m.contains(&config_fp) && m.contains("client_id \"svc\"")), "{logs:?}");
        // Never a hash of the secret alone, as before (an unkeyed 32-bit FNV at info level:
        // anyone with the log could test guessed secrets offline).
        for (_, m) in &logs {
            assert!(!m.contains(&shared::hash::fingerprint(b"TOPSECRET")), "unkeyed secret fingerprint: {m}");
        }
        for (_, m) in &logs {
            assert!(!m.contains("SENSITIVE") && !m.contains("TOPSECRET"), "leaked: {m}");
        }
    }

    #[test]
    fn requests_before_the_first_token_wait_and_resume_with_it() {
        let p = Proxy::new();
        let mut w: W = p.worker(&oauth_config(""));
        w.tick();
        let (id, a) = request(&mut w);
        assert_eq!(a, Action::Pause);
        assert_eq!(p.metric("token_fetch.requests_paused"), Some(1));
        answer(&mut w, "200", &token_json("tok-1", 60));
        assert_eq!(w.resumes(), vec![(id, Phase::Request)], "woken and resumed");
        assert_eq!(auth(&w, id), vec!["Bearer tok-1"]);
        assert!(w.local_replies().is_empty());
    }

    #[test]
    fn waiting_requests_get_the_token_in_their_own_headers() {
        // A waits; B (its own credential, kept: no overwrite) waits too; C comes once the
        // token is there. Each stream's headers are its own.
        let p = Proxy::new();
        let mut w: W = p.worker(&oauth_config(""));
        w.tick();
        let (a, _) = w.request(&[(":path", "/a")]);
        let (b, _) = w.request(&[(":path", "/b"), ("authorization", "Basic mine")]);
        let (_, act) = w.request(&[(":path", "/b")]);
        assert_eq!(act, Action::Pause);
        answer(&mut w, "200", &token_json("tok-1", 60));
        assert_eq!(auth(&w, a), vec!["Bearer tok-1"]);
        assert_eq!(auth(&w, b), vec!["Basic mine"]);
        assert_eq!(w.resumes().len(), 3);
        let (c, _) = w.request(&[(":path", "/c")]);
        assert_eq!(auth(&w, c), vec!["Bearer tok-1"]);
    }

    #[test]
    fn waiting_is_bounded_then_503_by_default() {
        let p = Proxy::new();
        let mut w: W = p.worker(&oauth_config(r#","pending_request_timeout":"1s""#));
        w.tick();
        let (id, a) = request(&mut w);
        assert_eq!(a, Action::Pause);
        answer(&mut w, "500", "oops");
        p.advance(S / 2);
        w.tick();
        assert!(w.local_replies().is_empty(), "still within the wait");
        p.advance(S / 2);
        w.tick();
        let replies = w.local_replies();
        assert_eq!(replies.len(), 1);
        assert_eq!((replies[0].0, replies[0].1.status), (id, 503));
        assert!(replies[0].1.body_text().contains("no valid credential"));
        assert_eq!(p.metric("token_fetch.requests_rejected_no_token"), Some(1));
        assert!(w.resumes().is_empty());
        // With no wait configured, a request is answered at once.
        let p2 = Proxy::new();
        let mut w2: W = p2.worker(&oauth_config(r#","pending_request_timeout":"0s""#));
        let (id, a) = request(&mut w2);
        assert_eq!(a, Action::Pause);
        assert_eq!(w2.local_reply(id).unwrap().status, 503);
    }

    #[test]
    fn pass_through_without_header_when_configured() {
        let p = Proxy::new();
        let mut w: W =
            p.worker(&oauth_config(r#","allow_request_without_credential":true,"pending_request_timeout":"1s""#));
        w.tick();
        let (id, a) = request(&mut w);
        assert_eq!(a, Action::Pause, "waits first");
        answer(&mut w, "503", "");
        p.advance(S);
        w.tick();
        assert_eq!(w.resumes(), vec![(id, Phase::Request)]);
        assert!(auth(&w, id).is_empty());
        assert!(w.local_replies().is_empty());
        assert_eq!(p.metric("token_fetch.requests_allowed_no_token"), Some(1));
    }

    #[test]
    fn a_stream_that_ended_while_waiting_is_forgotten() {
        let p = Proxy::new();
        let mut w: W = p.worker(&oauth_config(""));
        w.tick();
        let (f, _) = request(&mut w);
        let (g, _) = request(&mut w);
        w.complete(f);
        let waiting = |id: u32| w.root().worker().unwrap().waiting.any(|x| x.context_id == id);
        assert!(!waiting(f), "an ended stream leaves the waiting list at once");
        assert!(waiting(g));
        w.forget_context(g); // gone without on_log: the wake cannot address it
        answer(&mut w, "200", &token_json("tok", 60));
        assert!(w.resumes().is_empty());
        assert!(w.root().worker().unwrap().waiting.is_empty());
    }

    #[test]
    fn expired_token_is_never_injected() {
        let p = Proxy::new();
        let mut w: W = p.worker(&oauth_config(r#","pending_request_timeout":"0s""#));
        w.tick();
        answer(&mut w, "200", &token_json("tok-1", 10));
        // Every refresh fails from now on.
        w.fail_http_calls(true);
        for _ in 0..40 {
            p.advance(TICK);
            w.tick();
        }
        let (id, a) = request(&mut w);
        assert_eq!(a, Action::Pause);
        assert_eq!(w.local_reply(id).unwrap().status, 503);
        assert!(auth(&w, id).is_empty());
        assert!(p.metric("token_fetch.fetch_failure").unwrap() >= 1);
        assert_eq!(p.metric("token_fetch.token_remaining_seconds"), Some(0));
    }

    #[test]
    fn keeps_an_existing_header_unless_overwrite() {
        for (overwrite, want) in [(false, "Basic mine"), (true, "Bearer tok")] {
            let p = Proxy::new();
            let mut w: W = p.worker(&oauth_config(&format!(r#","overwrite":{overwrite}"#)));
            w.tick();
            answer(&mut w, "200", &token_json("tok", 60));
            let (id, a) = w.request(&[(":path", "/"), ("authorization", "Basic mine")]);
            assert_eq!(a, Action::Continue);
            assert_eq!(auth(&w, id), vec![want]);
        }
    }

    #[test]
    fn response_injection_only_when_enabled() {
        for enabled in [false, true] {
            let p = Proxy::new();
            let mut w: W = p.worker(&oauth_config(&format!(r#","inject_on_response":{enabled}"#)));
            w.tick();
            answer(&mut w, "200", &token_json("tok", 60));
            let (id, _) = request(&mut w);
            w.response_headers(id, &[(":status", "200")], true);
            assert_eq!(!w.response_header_values(id, "authorization").is_empty(), enabled);
        }
    }

    #[test]
    fn bad_answers_are_failures_and_keep_the_current_token() {
        let bodies = [
            ("200", "not json"),
            ("200", r#"{"token_type":"Bearer"}"#),
            ("200", r#"{"access_token":"a\r\nx-evil: 1","expires_in":60}"#),
            ("200", r#"{"access_token":"a","token_type":"mac","expires_in":60}"#),
            ("200", r#"{"access_token":"a","expires_in":-5}"#),
            ("401", r#"{"error":"invalid_client"}"#),
        ];
        for (status, body) in bodies {
            let p = Proxy::new();
            let mut w: W = p.worker(&oauth_config(""));
            w.tick();
            answer(&mut w, "200", &token_json("good", 10));
            p.advance(8 * S);
            w.tick();
            assert_eq!(w.http_calls().len(), 2, "refresh at 80%");
            answer(&mut w, status, body);
            assert_eq!(p.metric("token_fetch.fetch_failure"), Some(1), "{body}");
            let (id, a) = request(&mut w);
            assert_eq!(a, Action::Continue);
            assert_eq!(auth(&w, id), vec!["Bearer good"], "{body}");
        }
    }

    #[test]
    fn other_workers_pick_the_token_up_and_do_not_fetch() {
        let p = Proxy::new();
        let cfg = oauth_config("");
        let mut a: W = p.worker(&cfg);
        let mut b: W = p.worker(&cfg);
        let fetches = |a: &W, b: &W| a.http_calls().len() + b.http_calls().len();
        a.tick();
        b.tick();
        assert_eq!(fetches(&a, &b), 1, "one fetch for both workers");
        let (id, act) = request(&mut b);
        assert_eq!(act, Action::Pause);
        answer(&mut a, "200", &token_json("tok", 60));
        assert!(b.resumes().is_empty(), "b's waiter waits for b's tick");
        p.advance(TICK);
        b.tick();
        assert_eq!(b.resumes(), vec![(id, Phase::Request)]);
        // Over 200 s of ticks in both workers: one fetch per 48 s refresh.
        for _ in 0..800 {
            p.advance(TICK);
            a.tick();
            b.tick();
            // Whoever fetched gets its answer at once.
            let n = fetches(&a, &b);
            for w in [&mut a, &mut b] {
                if w.root().fetcher.as_ref().is_some_and(Fetcher::in_flight) {
                    answer(w, "200", &token_json(&format!("tok{n}"), 60));
                }
            }
        }
        let calls = fetches(&a, &b);
        assert!((4..=6).contains(&calls), "{calls}");
    }

    #[test]
    fn a_refusal_never_quotes_text_the_answer_chose() {
        // Found by the fuzz target token_fetch_answer: the refusal quoted the answer's
        // token_type, and a token endpoint (or whoever answers for it) can put the token, or
        // anything else, there; the refusal goes to the log.
        let c = shared::config::load(Some(oauth_config("").as_bytes()), Config::compile).unwrap();
        let refusal = |status: &str, body: &str| match token_from_answer(&c, Some(status), |_| None, || body.into()) {
            FetchResult::Failed(m) => m,
            FetchResult::Fetched { .. } => panic!("accepted {status} {body}"),
        };
        let leaky = [
            ("200", r#"{"access_token":"tok-SENSITIVE","token_type":"tok-SENSITIVE"}"#),
            ("200", r#"{"access_token":"tok-SENSITIVE","token_type":"Bearer tok-SENSITIVE"}"#),
            ("200", r#"{"access_token":"tok-SENSITIVE","token_type":["tok-SENSITIVE"]}"#),
            ("200 tok-SENSITIVE", r#"{"access_token":"tok-SENSITIVE"}"#),
            ("tok-SENSITIVE", ""),
        ];
        for (status, body) in leaky {
            let m = refusal(status, body);
            assert!(!m.contains("SENSITIVE"), "{m}");
        }
        // What the refusal says instead: the field, and what is wrong with it.
        let m = refusal("200", r#"{"access_token":"a","token_type":"tok-SENSITIVE"}"#);
        assert!(m.contains("token_type") && m.contains("13 bytes") && m.contains("not Bearer"), "{m}");
        assert!(refusal("200", r#"{"access_token":"a","token_type":7}"#).contains("not a string"));
        // A registered token type is named: it tells the operator what the server issues.
        let m = refusal("200", r#"{"access_token":"a","token_type":"DPoP"}"#);
        assert!(m.contains(r#"token_type "DPoP""#), "{m}");
        assert_eq!(refusal("503", ""), "status 503");
        assert!(refusal("2000", "").contains("not a status code"));
    }

    /// Write a token record holding `value` (fetched now, valid for an hour) under the key `w`
    /// reads: what another plugin of the same `vm_id` could write there.
    fn publish_raw(p: &Proxy, w: &W, value: &[u8]) {
        let key = {
            let root = w.root();
            format!("{NAME}/{}/value", root.worker().unwrap().config.fingerprint(&root.key))
        };
        let now = millis(p.now());
        let record =
            Published { generation: 7, fetched_at_ms: now, expires_at_ms: now + 3_600_000, value: value.to_vec() };
        p.set_shared_data(&key, &record.encode());
    }

    #[test]
    fn a_published_record_that_is_not_a_valid_header_value_is_never_injected() {
        // Found in review (issue 18): the worker injected whatever bytes the shared-data
        // record held. Every plugin of the VM (same vm_id) can write that key, and a record
        // written by another build under the same key (a format change across a reload) is
        // no better; CR LF there would split the upstream request. The record is checked as
        // an answer's token is, and a bad one is fetched again at once.
        let p = Proxy::new();
        let mut w: W = p.worker(&oauth_config(r#","pending_request_timeout":"0s""#));
        w.tick();
        answer(&mut w, "200", &token_json("good", 3600));
        let fetches = w.http_calls().len();
        for bad in [&b"Bearer x\r\nx-evil: 1"[..], b"Bearer \0", b"Bearer \xff", b"tok-without-prefix", b"Bearer "] {
            publish_raw(&p, &w, bad);
            p.advance(TICK);
            w.tick(); // reads the record: unusable
            let (id, a) = request(&mut w);
            assert_eq!(a, Action::Pause, "{bad:?}");
            assert_eq!(w.local_reply(id).unwrap().status, 503, "{bad:?}");
            assert!(auth(&w, id).is_empty(), "{bad:?} injected");
        }
        // ...and fetched again ahead of the schedule (the record said 1 h), which repairs it.
        p.advance(TICK);
        w.tick();
        assert!(w.http_calls().len() > fetches, "no refetch of an unusable record");
        answer(&mut w, "200", &token_json("good2", 3600));
        let (id, _) = request(&mut w);
        assert_eq!(auth(&w, id), vec!["Bearer good2"]);
    }

    #[test]
    fn workers_that_each_find_the_record_unusable_fetch_once_for_the_proxy() {
        // Found in review: each worker that saw the bad record asked for a fetch on its own,
        // and the lease only made them take turns: one fetch per worker.
        let p = Proxy::new();
        let cfg = oauth_config(r#","pending_request_timeout":"0s""#);
        let (mut a, mut b): (W, W) = (p.worker(&cfg), p.worker(&cfg));
        a.tick();
        answer(&mut a, "200", &token_json("good", 3600));
        publish_raw(&p, &a, b"x");
        let fetches = |a: &W, b: &W| a.http_calls().len() + b.http_calls().len();
        let before = fetches(&a, &b);
        p.advance(TICK);
        a.tick(); // both read the record: unusable
        b.tick();
        p.advance(TICK);
        a.tick(); // a fetches; b finds the lease taken
        b.tick();
        assert_eq!(fetches(&a, &b), before + 1);
        answer(&mut a, "200", &token_json("good2", 3600));
        for _ in 0..3 {
            p.advance(TICK);
            a.tick();
            b.tick();
        }
        assert_eq!(fetches(&a, &b), before + 1, "a's answer replaced the record b asked about");
        let (id, _) = request(&mut b);
        assert_eq!(auth(&b, id), vec!["Bearer good2"]);
    }

    #[test]
    fn oversized_and_deeply_nested_answers_are_refusals_not_traps() {
        // What a hostile or broken token endpoint can send: only the first 64 KiB are read
        // (a JSON answer cut there fails), and nesting past serde_json's recursion limit is
        // an error, not a stack overflow that would trap the VM.
        let big_token = "t".repeat(MAX_BODY);
        let answers = [
            format!(r#"{{"access_token":"{big_token}","expires_in":60}}"#),
            format!(r#"{{"access_token":"a","expires_in":60,"pad":"{big_token}"}}"#),
            "[".repeat(MAX_BODY),
            format!(r#"{{"access_token":"a","x":{}1{}}}"#, "[".repeat(5000), "]".repeat(5000)),
        ];
        for body in &answers {
            let p = Proxy::new();
            let mut w: W = p.worker(&oauth_config(r#","pending_request_timeout":"0s""#));
            w.tick();
            answer(&mut w, "200", body);
            assert_eq!(p.metric("token_fetch.fetch_failure"), Some(1), "{}", &body[..40]);
            let (id, _) = request(&mut w);
            assert_eq!(w.local_reply(id).unwrap().status, 503);
        }
        // Within the limit, a long JWT access token is fine.
        let p = Proxy::new();
        let mut w: W = p.worker(&oauth_config(""));
        w.tick();
        answer(&mut w, "200", &token_json(&"j".repeat(MAX_TOKEN_BYTES), 60));
        let (id, _) = request(&mut w);
        assert_eq!(auth(&w, id)[0].len(), "Bearer ".len() + MAX_TOKEN_BYTES);
    }

    /// The lifetime [`token_from_answer`] gives an OAuth2 answer body, or its refusal.
    fn oauth2_lifetime_of(body: &str) -> Result<Duration, String> {
        let c = shared::config::load(Some(oauth_config("").as_bytes()), Config::compile).unwrap();
        match token_from_answer(&c, Some("200"), |_| None, || body.into()) {
            FetchResult::Fetched { lifetime, .. } => Ok(lifetime),
            FetchResult::Failed(m) => Err(m),
        }
    }

    #[test]
    fn an_expires_in_beyond_366_days_is_cut_not_refused() {
        // Found in review (issue 18): a token endpoint that issues long-lived tokens (ten
        // years, or u64::MAX) had every fetch refused, so the filter never had a token and
        // answered 503 to everything; Envoy's credential injector takes the token. The
        // lifetime is cut to 366 days instead (refreshed at 80% of that).
        const MAX: Duration = Duration::from_secs(366 * 86_400);
        for expires_in in
            ["31622401", "315360000", "18446744073709551615", "\"315360000\"", "1e300", "\"99999999999999999999999\""]
        {
            let body = format!(r#"{{"access_token":"a","token_type":"Bearer","expires_in":{expires_in}}}"#);
            assert_eq!(oauth2_lifetime_of(&body), Ok(MAX), "{body}");
        }
        let at_cap = format!(r#"{{"access_token":"a","expires_in":{}}}"#, MAX.as_secs());
        assert_eq!(oauth2_lifetime_of(&at_cap), Ok(MAX));
    }

    #[test]
    fn an_integral_number_in_any_json_spelling_is_a_lifetime() {
        // Found in review (issue 18): `3600.0` or `3.6e3` (what a token endpoint that
        // computes in floating point sends) was refused; protobuf's JSON reading, which
        // Envoy's OAuth2 clients use for `expires_in`, takes any integral number.
        for expires_in in ["3600", "3600.0", "3.6e3", "36e2", "\"3600\""] {
            let body = format!(r#"{{"access_token":"a","expires_in":{expires_in}}}"#);
            assert_eq!(oauth2_lifetime_of(&body), Ok(Duration::from_secs(3600)), "{body}");
        }
        // Still refused: nothing left of the token's life, a past, a fraction, not a number.
        for expires_in in
            ["0", "0.0", "-5", "-0.0", "3599.5", "\"3600.0\"", "\"-1\"", "\"+60\"", "\"\"", "true", "[60]", "{}"]
        {
            let body = format!(r#"{{"access_token":"a","expires_in":{expires_in}}}"#);
            let refusal = oauth2_lifetime_of(&body).expect_err(&body);
            assert!(refusal.contains("expires_in"), "{body}: {refusal}");
        }
    }

    #[test]
    fn http_get_source_reads_a_header_or_a_json_field() {
        let p = Proxy::new();
        let mut w: W = p.worker(
            r#"{"http_get":{"token_endpoint":{"cluster":"t","uri":"http://t/auth"},"token_header":"x-token","token_lifetime":"30s"},"header_prefix":""}"#,
        );
        w.tick();
        let call = w.http_calls()[0].clone();
        assert_eq!(call.header(":method"), Some("GET"));
        w.answer_http_call(call.token, &[(":status", "200"), ("x-token", "Bearer abc")], b"");
        let (id, _) = request(&mut w);
        assert_eq!(auth(&w, id), vec!["Bearer abc"]);

        let p = Proxy::new();
        let mut w: W = p.worker(
            r#"{"http_get":{"token_endpoint":{"cluster":"t","uri":"http://t/auth"},"token_json_field":"token","token_lifetime":"30s"}}"#,
        );
        w.tick();
        answer(&mut w, "200", r#"{"token":"xyz"}"#);
        let (id, _) = request(&mut w);
        assert_eq!(auth(&w, id), vec!["Bearer xyz"]);
    }

    #[test]
    fn a_timeout_answer_is_a_failure() {
        let p = Proxy::new();
        let mut w: W = p.worker(&oauth_config(""));
        w.tick();
        let call = w.http_calls()[0].clone();
        w.answer_http_call(call.token, &[], b"");
        assert_eq!(p.metric("token_fetch.fetch_failure"), Some(1));
        assert!(p.logs().iter().any(|(_, m)| m.contains("no answer")));
    }

    #[test]
    fn invalid_config_is_refused() {
        let h = MockHost::new();
        let mut r = TokenFetchRoot::default();
        let e = r.configure(&h, Some(br#"{"oauth2":{}}"#)).unwrap_err();
        assert!(e.to_string().contains("token_endpoint") || e.field.contains("oauth2"), "{e}");
        assert!(r.new_http_filter(1).is_none());
    }
}
