//! The global rate-limit engine of the tests: Envoy's rate limit service protocol (RLS v3,
//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, gRPC over h2c) served on a
//! loopback port by [Limitador](https://github.com/kuadrant/limitador) — the engine
//! limitador-server runs — on its non-cached Redis storage, with a real [`crate::redis::Redis`].
//! Two Envoys pointed at one server share one budget, as production proxies share one
//! limitador-server or envoyproxy/ratelimit.
//!
//! # From an RLS request to Limitador (what limitador-server does)
//! - `domain` is the Limitador namespace; an empty domain answers `UNKNOWN`.
//! - The descriptors are the CEL list `descriptors`: descriptor *i*'s entries are the map
//!   `descriptors[i]`, so a limit's conditions and variables name them by position, e.g.
//!   `descriptors[0]['generic_key'] == 'api'` and `descriptors[0]['remote_address']` (one counter
//!   per address). [`RlsLimit`] writes those expressions from entries; a limits file of
//!   limitador-server ([`load_limits_file`]) is used as it is.
//! - One check for the whole request: every limit that applies is checked and, only if all
//!   admit, every counter is charged (`check_rate_limited_and_update`). Any over → `OVER_LIMIT`.
//! - `hits_addend` is the amount charged (0 means 1, as the protocol says). A descriptor's own
//!   `hits_addend` overrides it; descriptors asking for different amounts are refused
//!   (`INVALID_ARGUMENT`: Limitador charges one amount per check). Negative hits are refused too.
//! - A storage error (Redis down) answers `UNAVAILABLE` "Service unavailable", as
//!   limitador-server does, so Envoy applies its `failure_mode_deny`.
//!
//! # What this server adds to limitador-server's answer
//! - `statuses`: one `DescriptorStatus` per descriptor, as envoyproxy/ratelimit fills them and
//!   Envoy's `enable_x_ratelimit_headers` reads them (limitador-server leaves them empty). A
//!   limit belongs to the descriptors its expressions name (`descriptors[i]`; a limit naming
//!   none belongs to all). Each status reports that descriptor's most restrictive counter:
//!   `current_limit` (the limit's value and window as an RLS unit, its name), `limit_remaining`
//!   (after this request's charge when admitted) and `duration_until_reset` (the counter's TTL
//!   in Redis); `OVER_LIMIT` when that counter refused the request. A descriptor no limit
//!   applies to gets `OK` without `current_limit`.
//! - Descriptors a request lacks read as empty maps: limitador-server evaluates
//!   `descriptors[1]…` on a one-descriptor request as an out-of-bounds CEL error and panics in
//!   `Limit::applies` (the test `limitador_panics_on_a_missing_descriptor` shows it).
//! - Checks run one at a time. Limitador's Redis storage reads the counters, then increments
//!   them (two round trips, not atomic; its own docs: "does not guarantee exact limits"), so
//!   concurrent checks of one counter can all pass the read and admit more than the limit.
//!   Serialised, one server admits exactly the limit; [`RlsOptions::concurrent_checks`] turns
//!   it off to observe the overshoot.
//! - Test modes: [`RlsServer::set_delay`] (RLS slow), [`RlsServer::stop`] /
//!   [`RlsServer::restart`] (RLS down), [`RlsServer::set_response_headers_to_add`] /
//!   [`RlsServer::set_request_headers_to_add`] (passed through on every answer), and a record of
//!   every request with its descriptors and answer ([`RlsServer::requests`],
//!   [`RlsServer::counts`]). Redis down is [`crate::redis::Redis::stop`].

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as RlsUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus, RateLimit};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use limitador::counter::Counter;
use limitador::limit::{Context, Expression, Limit, Namespace, Predicate};
use limitador::storage::redis::AsyncRedisStorage;
use limitador::AsyncRateLimiter;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A limit's window: the units an RLS `DescriptorStatus` can report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
}

impl Unit {
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
        }
    }
}

/// The RLS unit of a Limitador window; `UNKNOWN` for a window that is not one unit (Envoy then
/// leaves the window out of `X-RateLimit-Limit`).
fn rls_unit(seconds: u64) -> RlsUnit {
    match seconds {
        1 => RlsUnit::Second,
        60 => RlsUnit::Minute,
        3600 => RlsUnit::Hour,
        86_400 => RlsUnit::Day,
        604_800 => RlsUnit::Week,
        _ => RlsUnit::Unknown,
    }
}

/// A limit in descriptor terms, turned into a Limitador limit by [`RlsLimit::to_limitador`]:
/// `max_value` requests per `unit` in namespace `domain`, for requests whose descriptor number
/// `descriptor` has every `when` entry, one counter per distinct value of the `per` keys.
///
/// ```
/// use e2e::rls_server::{RlsLimit, Unit};
/// // 100 a minute per client address, for descriptors [generic_key=api, remote_address=…].
/// let limit = RlsLimit::new("edge", 100, Unit::Minute).when("generic_key", "api").per("remote_address");
/// let limit = limit.to_limitador().unwrap();
/// assert_eq!(limit.conditions().into_iter().collect::<Vec<_>>(), ["descriptors[0]['generic_key'] == 'api'"]);
/// assert_eq!(limit.variables().into_iter().collect::<Vec<_>>(), ["descriptors[0]['remote_address']"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RlsLimit {
    pub domain: String,
    pub max_value: u64,
    pub unit: Unit,
    pub descriptor: usize,
    pub when: Vec<(String, String)>,
    pub per: Vec<String>,
    pub name: Option<String>,
}

impl RlsLimit {
    pub fn new(domain: &str, max_value: u64, unit: Unit) -> RlsLimit {
        RlsLimit {
            domain: domain.to_string(),
            max_value,
            unit,
            descriptor: 0,
            when: Vec::new(),
            per: Vec::new(),
            name: None,
        }
    }

    /// Which descriptor of the request (position) the entries are read from; 0 by default.
    pub fn descriptor(mut self, index: usize) -> Self {
        self.descriptor = index;
        self
    }

    /// Applies only when the descriptor has entry `key` = `value`.
    pub fn when(mut self, key: &str, value: &str) -> Self {
        self.when.push((key.to_string(), value.to_string()));
        self
    }

    /// One counter per value of entry `key`; requests whose descriptor lacks it are not limited.
    pub fn per(mut self, key: &str) -> Self {
        self.per.push(key.to_string());
        self
    }

    /// The limit's name (reported in `current_limit.name` and Limitador's headers).
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    pub fn to_limitador(&self) -> Result<Limit, String> {
        let entry = |key: &str| Ok::<_, String>(format!("descriptors[{}][{}]", self.descriptor, cel_string(key)?));
        let conditions = self
            .when
            .iter()
            .map(|(k, v)| {
                let source = format!("{} == {}", entry(k)?, cel_string(v)?);
                Predicate::parse(&source).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let variables = self
            .per
            .iter()
            .map(|k| Expression::parse(entry(k)?).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut limit = Limit::new(self.domain.as_str(), self.max_value, self.unit.seconds(), conditions, variables);
        if let Some(name) = &self.name {
            limit.set_name(name.clone());
        }
        Ok(limit)
    }
}

/// A CEL string literal. Control characters are refused rather than escaped (descriptor values in
/// tests are printable; a header value cannot hold them either).
fn cel_string(s: &str) -> Result<String, String> {
    if s.chars().any(char::is_control) {
        return Err(format!("{s:?}: control characters in a descriptor key or value"));
    }
    Ok(format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")))
}

/// The limits of a limitador-server limits file (a YAML list of `namespace`, `max_value`,
/// `seconds`, `conditions`, `variables`, `name`), as limitador-server reads it.
pub fn load_limits_file(path: &Path) -> Result<Vec<Limit>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The descriptor positions a limit's conditions and variables name (`descriptors[i]`).
fn descriptor_indexes(limit: &Limit) -> BTreeSet<usize> {
    let sources = limit.conditions().into_iter().chain(limit.variables());
    sources
        .flat_map(|source| {
            source
                .match_indices("descriptors[")
                .filter_map(|(at, m)| {
                    let rest = &source[at + m.len()..];
                    rest[..rest.find(']')?].trim().parse().ok()
                })
                .collect::<Vec<usize>>()
        })
        .collect()
}

/// The server's answer to one request, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Ok,
    OverLimit,
    Unknown,
    /// A gRPC error status (`Unavailable` when Redis is down).
    Error(tonic::Code),
}

/// One `ShouldRateLimit` call as the server received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRequest {
    pub domain: String,
    /// Each descriptor's entries, in order.
    pub descriptors: Vec<Vec<(String, String)>>,
    /// The request's `hits_addend` as sent (0: not set, which means 1).
    pub hits_addend: u32,
    /// Each descriptor's own `hits_addend`, when set.
    pub descriptor_hits_addends: Vec<Option<u64>>,
    /// `None` while the answer is pending, and for good when the client gave up first (Envoy's
    /// timeout cancels the call; the request is then never charged).
    pub answer: Option<Answer>,
}

/// How many requests got which answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RlsCounts {
    pub requests: usize,
    pub ok: usize,
    pub over_limit: usize,
    pub unknown: usize,
    pub errors: usize,
    /// Not answered (yet, or ever: cancelled by the client).
    pub unanswered: usize,
}

#[derive(Clone, Debug)]
pub struct RlsOptions {
    /// Loopback port; 0 picks a free one.
    pub port: u16,
    /// `redis://127.0.0.1:<port>` of the counters' Redis.
    pub redis_url: String,
    /// Let checks overlap, as limitador-server does (see the module doc); off by default so one
    /// server admits exactly the limit.
    pub concurrent_checks: bool,
    /// Add Limitador's own `X-RateLimit-*` headers (draft 03) to `response_headers_to_add`, as
    /// limitador-server's `--rate-limit-headers DRAFT_VERSION_03` does.
    pub limitador_headers: bool,
}

impl RlsOptions {
    pub fn new(redis_url: &str) -> RlsOptions {
        RlsOptions { port: 0, redis_url: redis_url.to_string(), concurrent_checks: false, limitador_headers: false }
    }
}

struct State {
    limiter: AsyncRateLimiter,
    /// Checks run one at a time unless `concurrent_checks` (the module doc says why).
    serial: Option<tokio::sync::Mutex<()>>,
    limitador_headers: bool,
    /// Highest descriptor position any limit names: shorter requests are padded to it.
    max_descriptor: AtomicUsize,
    delay: Mutex<Duration>,
    response_headers_to_add: Mutex<Vec<(String, String)>>,
    request_headers_to_add: Mutex<Vec<(String, String)>>,
    seen: Mutex<Vec<SeenRequest>>,
}

fn locked<T: Clone>(m: &Mutex<T>) -> T {
    m.lock().map(|g| g.clone()).unwrap_or_else(|e| e.into_inner().clone())
}

fn header_values(pairs: &[(String, String)]) -> Vec<HeaderValue> {
    pairs.iter().map(|(k, v)| HeaderValue { key: k.clone(), value: v.clone(), ..Default::default() }).collect()
}

struct Service(Arc<State>);

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let state = &self.0;
        let request = request.into_inner();
        let index = state.record(&request);
        let delay = locked(&state.delay);
        // Before the check: a call Envoy abandons at its timeout is dropped here, never charged.
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let result = state.answer(&request).await;
        let answer = match &result {
            Ok(r) if r.overall_code == Code::OverLimit as i32 => Answer::OverLimit,
            Ok(r) if r.overall_code == Code::Ok as i32 => Answer::Ok,
            Ok(_) => Answer::Unknown,
            Err(status) => Answer::Error(status.code()),
        };
        if let Ok(mut seen) = state.seen.lock() {
            if let Some(s) = seen.get_mut(index) {
                s.answer = Some(answer);
            }
        }
        result.map(tonic::Response::new)
    }
}

impl State {
    fn record(&self, request: &RateLimitRequest) -> usize {
        let seen = SeenRequest {
            domain: request.domain.clone(),
            descriptors: request
                .descriptors
                .iter()
                .map(|d| d.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect())
                .collect(),
            hits_addend: request.hits_addend,
            descriptor_hits_addends: request.descriptors.iter().map(|d| d.hits_addend.map(|h| h.value)).collect(),
            answer: None,
        };
        let mut all = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        all.push(seen);
        all.len() - 1
    }

    async fn answer(&self, request: &RateLimitRequest) -> Result<RateLimitResponse, tonic::Status> {
        let mut response = RateLimitResponse {
            response_headers_to_add: header_values(&locked(&self.response_headers_to_add)),
            request_headers_to_add: header_values(&locked(&self.request_headers_to_add)),
            ..Default::default()
        };
        if request.domain.is_empty() {
            response.overall_code = Code::Unknown as i32;
            return Ok(response);
        }
        if request.descriptors.iter().any(|d| d.is_negative_hits) {
            return Err(tonic::Status::invalid_argument("negative hits are not supported"));
        }
        let request_hits = u64::from(request.hits_addend.max(1));
        let hits: BTreeSet<u64> =
            request.descriptors.iter().map(|d| d.hits_addend.map_or(request_hits, |h| h.value)).collect();
        let hits = match hits.len() {
            0 => request_hits,
            1 => hits.into_iter().next().unwrap_or(request_hits),
            _ => return Err(tonic::Status::invalid_argument("descriptors with different hits_addend")),
        };

        let padded = request.descriptors.len().max(self.max_descriptor.load(Ordering::Relaxed) + 1);
        let mut values: Vec<HashMap<String, String>> = request
            .descriptors
            .iter()
            .map(|d| d.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect())
            .collect();
        values.resize_with(padded, HashMap::new);
        let mut ctx = Context::default();
        ctx.list_binding("descriptors".to_string(), values);

        let namespace = Namespace::from(request.domain.as_str());
        let result = match &self.serial {
            Some(serial) => {
                let _one_at_a_time = serial.lock().await;
                self.limiter.check_rate_limited_and_update(&namespace, &ctx, hits).await
            }
            None => self.limiter.check_rate_limited_and_update(&namespace, &ctx, hits).await,
        };
        // limitador-server's answer to a storage error: UNAVAILABLE, so that the client's
        // failure mode decides (UNKNOWN would always be allowed by Envoy).
        let mut result = result.map_err(|_| tonic::Status::unavailable("Service unavailable"))?;

        response.overall_code = if result.limited { Code::OverLimit } else { Code::Ok } as i32;
        response.statuses = (0..request.descriptors.len())
            .map(|i| descriptor_status(&result.counters, i, hits, result.limited))
            .collect();
        if self.limitador_headers {
            let mut headers: Vec<(String, String)> = result.response_header().into_iter().collect();
            headers.sort();
            response.response_headers_to_add.extend(header_values(&headers));
        }
        Ok(response)
    }
}

/// Descriptor `index`'s status: its most restrictive counter (fewest remaining; one that refused
/// the request first). Only a `limited` check has refusing counters: an admitted request that
/// took a counter's last unit leaves it at 0 remaining and is still `OK`, as envoyproxy/ratelimit
/// answers (over the limit means the request would exceed it).
fn descriptor_status(counters: &[Counter], index: usize, hits: u64, limited: bool) -> DescriptorStatus {
    let refused = |c: &Counter| limited && c.remaining().unwrap_or(c.max_value()) < hits;
    let mine = counters.iter().filter(|c| {
        let named = descriptor_indexes(c.limit());
        named.is_empty() || named.contains(&index)
    });
    let Some(counter) = mine.min_by_key(|c| (!refused(c), c.remaining().unwrap_or(c.max_value()))) else {
        return DescriptorStatus { code: Code::Ok as i32, ..Default::default() };
    };
    let saturate = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let reset = counter.expires_in().unwrap_or(counter.window());
    DescriptorStatus {
        code: if refused(counter) { Code::OverLimit } else { Code::Ok } as i32,
        current_limit: Some(RateLimit {
            name: counter.limit().name().unwrap_or_default().to_string(),
            requests_per_unit: saturate(counter.max_value()),
            unit: rls_unit(counter.window().as_secs()) as i32,
        }),
        limit_remaining: saturate(counter.remaining().unwrap_or(counter.max_value())),
        duration_until_reset: Some(PbDuration {
            seconds: i64::try_from(reset.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(reset.subsec_nanos()).unwrap_or(0),
        }),
        quota: None,
    }
}

type Serving = (oneshot::Sender<()>, JoinHandle<Result<(), tonic::transport::Error>>);

/// The RLS on a loopback port (see the module doc). Stopped on drop.
pub struct RlsServer {
    port: u16,
    state: Arc<State>,
    serving: Option<Serving>,
    runtime: Runtime,
}

impl RlsServer {
    /// Serve on 127.0.0.1:`port` (0: a free port) with Limitador on the Redis at `redis_url`.
    pub fn start(port: u16, redis_url: &str) -> Result<RlsServer, String> {
        Self::start_with(RlsOptions { port, ..RlsOptions::new(redis_url) })
    }

    pub fn start_with(opts: RlsOptions) -> Result<RlsServer, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rls-server")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let storage = runtime.block_on(redis_storage(&opts.redis_url))?;
        let state = Arc::new(State {
            limiter: AsyncRateLimiter::new_with_storage(Box::new(storage)),
            serial: (!opts.concurrent_checks).then(|| tokio::sync::Mutex::new(())),
            limitador_headers: opts.limitador_headers,
            max_descriptor: AtomicUsize::new(0),
            delay: Mutex::new(Duration::ZERO),
            response_headers_to_add: Mutex::new(Vec::new()),
            request_headers_to_add: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
        });
        let mut server = RlsServer { port: opts.port, state, serving: None, runtime };
        if opts.port != 0 {
            server.restart()?;
            return Ok(server);
        }
        // A free port can be taken (by another process's outgoing connection) before we bind
        // it: pick another, a few times.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = crate::envoy::free_port();
            match server.restart() {
                Ok(()) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Replace every limit (of every domain) with `limits`. Counters of limits that stay are
    /// kept (Limitador's `configure_with`); flush Redis for a fresh budget.
    pub fn set_limits(&self, limits: &[RlsLimit]) -> Result<(), String> {
        let limits = limits.iter().map(RlsLimit::to_limitador).collect::<Result<Vec<_>, _>>()?;
        self.set_limitador_limits(limits)
    }

    /// [`Self::set_limits`] with Limitador limits as they are (e.g. from [`load_limits_file`]).
    pub fn set_limitador_limits(&self, limits: Vec<Limit>) -> Result<(), String> {
        let max = limits.iter().flat_map(descriptor_indexes).max().unwrap_or(0);
        self.runtime.block_on(self.state.limiter.configure_with(limits)).map_err(|e| e.to_string())?;
        self.state.max_descriptor.store(max, Ordering::Relaxed);
        Ok(())
    }

    /// RLS slow: wait this long before checking each request (zero: answer at once).
    pub fn set_delay(&self, delay: Duration) {
        if let Ok(mut d) = self.state.delay.lock() {
            *d = delay;
        }
    }

    /// Headers every answer asks the client to add to its response (`response_headers_to_add`).
    pub fn set_response_headers_to_add(&self, headers: &[(&str, &str)]) {
        if let Ok(mut h) = self.state.response_headers_to_add.lock() {
            *h = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        }
    }

    /// Headers every answer asks the client to add to the upstream request
    /// (`request_headers_to_add`).
    pub fn set_request_headers_to_add(&self, headers: &[(&str, &str)]) {
        if let Ok(mut h) = self.state.request_headers_to_add.lock() {
            *h = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        }
    }

    /// RLS down: stop listening (new connections are refused) and close the open ones once
    /// their calls are answered (HTTP/2 GOAWAY). Limits and counters stay.
    pub fn stop(&mut self) {
        if let Some((shutdown, task)) = self.serving.take() {
            let _ = shutdown.send(());
            let _ = self.runtime.block_on(task);
        }
    }

    pub fn is_serving(&self) -> bool {
        self.serving.is_some()
    }

    /// (Re)start serving on the same port.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port))
            .map_err(|e| format!("bind 127.0.0.1:{}: {e}", self.port))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _in_runtime = self.runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let (shutdown, stop) = oneshot::channel::<()>();
        let service = RateLimitServiceServer::from_arc(Arc::new(Service(self.state.clone())));
        let task = self.runtime.spawn(
            tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(incoming, async {
                let _ = stop.await;
            }),
        );
        self.serving = Some((shutdown, task));
        Ok(())
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        locked(&self.state.seen)
    }

    /// Forget the requests seen so far (counts start again from zero).
    pub fn clear_requests(&self) {
        if let Ok(mut seen) = self.state.seen.lock() {
            seen.clear();
        }
    }

    pub fn counts(&self) -> RlsCounts {
        let mut counts = RlsCounts::default();
        for seen in self.requests() {
            counts.requests += 1;
            match seen.answer {
                None => counts.unanswered += 1,
                Some(Answer::Ok) => counts.ok += 1,
                Some(Answer::OverLimit) => counts.over_limit += 1,
                Some(Answer::Unknown) => counts.unknown += 1,
                Some(Answer::Error(_)) => counts.errors += 1,
            }
        }
        counts
    }

    /// Wait until at least `n` requests have been answered (a generous deadline; returns the
    /// counts either way).
    pub fn wait_answered(&self, n: usize) -> RlsCounts {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let counts = self.counts();
            if counts.requests - counts.unanswered >= n || Instant::now() > deadline {
                return counts;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RlsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Limitador's non-cached Redis storage on a connection manager that fails fast: one reconnect
/// attempt, short timeouts, so a dead Redis answers `UNAVAILABLE` at once instead of holding
/// the check through minutes of retries (Envoy's timeout would then hide the storage error).
async fn redis_storage(url: &str) -> Result<AsyncRedisStorage, String> {
    let client = ::redis::Client::open(url).map_err(|e| format!("{url}: {e}"))?;
    let config = ::redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_factor(10)
        .set_max_delay(100)
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_secs(2));
    let manager =
        ::redis::aio::ConnectionManager::new_with_config(client, config).await.map_err(|e| format!("{url}: {e}"))?;
    AsyncRedisStorage::new_with_conn_manager(manager).await.map_err(|e| format!("{url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;

    #[test]
    fn cel_literals_are_quoted() {
        assert_eq!(cel_string("a'b\\c").unwrap(), r"'a\'b\\c'");
        assert!(cel_string("a\nb").is_err());
        let limit = RlsLimit::new("d", 1, Unit::Second).descriptor(2).when("k'", "v").to_limitador().unwrap();
        assert_eq!(limit.conditions().into_iter().collect::<Vec<_>>(), [r"descriptors[2]['k\''] == 'v'"]);
        assert_eq!(descriptor_indexes(&limit), BTreeSet::from([2]));
    }

    #[test]
    fn descriptor_positions_are_found_in_conditions_and_variables() {
        let limit = Limit::new(
            "ns",
            1,
            60,
            vec![Predicate::parse("descriptors[0].a == '1' && descriptors[ 3 ]['b'] == '2'").unwrap()],
            vec![Expression::parse("descriptors[1].c").unwrap()],
        );
        assert_eq!(descriptor_indexes(&limit), BTreeSet::from([0, 1, 3]));
        assert!(descriptor_indexes(&Limit::new("ns", 1, 60, vec![], vec![])).is_empty());
    }

    /// Why requests are padded: Limitador evaluates `descriptors[1]` on a one-descriptor request
    /// as an out-of-bounds error, and `Limit::applies` unwraps it.
    #[test]
    fn limitador_panics_on_a_missing_descriptor() {
        let limiter = limitador::RateLimiter::new(100);
        limiter.add_limit(RlsLimit::new("ns", 1, Unit::Minute).descriptor(1).when("k", "v").to_limitador().unwrap());
        let check = |descriptors: Vec<HashMap<String, String>>| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut ctx = Context::default();
                ctx.list_binding("descriptors".to_string(), descriptors);
                limiter.check_rate_limited_and_update(&"ns".into(), &ctx, 1).map(|r| r.limited)
            }))
        };
        let one = HashMap::from([("k".to_string(), "v".to_string())]);
        assert!(check(vec![one.clone()]).is_err(), "limitador no longer panics: padding may go");
        assert!(matches!(check(vec![one.clone(), HashMap::new()]), Ok(Ok(false))));
        assert!(matches!(check(vec![HashMap::new(), one]), Ok(Ok(false))));
    }

    fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries.iter().map(|(k, v)| Entry { key: k.to_string(), value: v.to_string() }).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_status_reports_its_descriptors_most_restrictive_counter() {
        let limiter = limitador::RateLimiter::new(100);
        for limit in [
            RlsLimit::new("ns", 10, Unit::Minute).when("k", "v").named("wide"),
            RlsLimit::new("ns", 2, Unit::Second).when("k", "v").named("narrow"),
            RlsLimit::new("ns", 5, Unit::Hour).descriptor(1).per("user"),
        ] {
            limiter.add_limit(limit.to_limitador().unwrap());
        }
        let request = [descriptor(&[("k", "v")]), descriptor(&[("user", "alice")]), descriptor(&[("x", "y")])];
        let check = || {
            let mut ctx = Context::default();
            ctx.list_binding(
                "descriptors".to_string(),
                request.iter().map(|d| d.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect()).collect(),
            );
            let result = limiter.check_rate_limited_and_update(&"ns".into(), &ctx, 1).unwrap();
            let statuses: Vec<_> = (0..3).map(|i| descriptor_status(&result.counters, i, 1, result.limited)).collect();
            (result.limited, statuses)
        };
        let (limited, statuses) = check();
        assert!(!limited);
        let limit = |s: &DescriptorStatus| s.current_limit.clone().map(|l| (l.name, l.requests_per_unit, l.unit));
        assert_eq!(limit(&statuses[0]), Some(("narrow".into(), 2, RlsUnit::Second as i32)));
        assert_eq!((statuses[0].code, statuses[0].limit_remaining), (Code::Ok as i32, 1));
        assert_eq!(limit(&statuses[1]), Some((String::new(), 5, RlsUnit::Hour as i32)));
        assert_eq!(statuses[1].limit_remaining, 4);
        assert_eq!(statuses[2], DescriptorStatus { code: Code::Ok as i32, ..Default::default() });
        // The second request takes "narrow"'s last unit: admitted, so OK with 0 remaining
        // (this status once said OVER_LIMIT, and the wasm filter denied where Envoy admitted).
        let (limited, statuses) = check();
        assert!(!limited);
        assert_eq!((statuses[0].code, statuses[0].limit_remaining), (Code::Ok as i32, 0));
        // The third request: "narrow" refuses, nothing is charged, the others report OK.
        let (limited, statuses) = check();
        assert!(limited);
        assert_eq!((statuses[0].code, statuses[0].limit_remaining), (Code::OverLimit as i32, 0));
        assert_eq!((statuses[1].code, statuses[1].limit_remaining), (Code::Ok as i32, 3));
        assert!(statuses[0].duration_until_reset.is_some_and(|d| d.seconds <= 1));
    }
}
