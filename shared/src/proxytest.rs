//! An emulated proxy for native tests, in the spirit of the Go SDK's `proxytest.HostEmulator`.
//!
//! A [`Proxy`] is what every worker of one Envoy shares: the clock, shared data (Envoy's CAS
//! semantics), metrics, logs, random bytes and a count of host calls by kind. A [`Worker`] is
//! one worker VM: it owns a root filter and the HTTP filters of its streams, drives them
//! through the same [`Router`] the SDK glue uses (wakes, callout answers, resuming paused
//! streams), and keeps Envoy's side of every context by id: headers, trailers, bodies, the
//! action each callback returned, whether a phase is paused, resumes, the local reply, whether
//! the stream completed. A callout answer goes to the context that made the call, as in Envoy.
//!
//! ```text
//! let proxy = Proxy::new();
//! let mut w: Worker<MyRoot> = proxy.worker(r#"{"k":1}"#);
//! let (id, action) = w.request(&[(":path", "/"), (":method", "GET")]);
//! w.tick();
//! let call = w.last_http_call();
//! w.answer_http_call(call.token, &[(":status", "200")], b"{}");
//! assert_eq!(w.resumes(), vec![(id, Phase::Request)]);
//! ```
//!
//! Like Envoy, the emulator applies a `continue_stream` (resume) only after the VM call that
//! asked for it returns; resuming a phase that is not paused fails the test (Envoy would run
//! the filter chain twice). Test-only code: misuse (an unknown token, a stream that does not
//! exist) panics with a message.
#![allow(clippy::panic, clippy::expect_used)]

use crate::config::ConfigError;
use crate::host::{BodyKind, HeaderMapKind, Host, HostError, LogLevel, MetricKind};
use crate::plugin::{Action, RootFilter};
use crate::routing::{Router, Stream, StreamHandle};
use std::cell::{Cell, Ref, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

/// A host call, named after the proxy-wasm ABI function [`crate::Host`]'s method makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostCall {
    GetCurrentTimeNanoseconds,
    Log,
    GetLogLevel,
    GetHeaderMapValue,
    GetHeaderMapPairs,
    ReplaceHeaderMapValue,
    AddHeaderMapValue,
    RemoveHeaderMapValue,
    SetHeaderMapPairs,
    GetBufferBytes,
    SendLocalResponse,
    ContinueStream,
    SetEffectiveContext,
    GetProperty,
    SetProperty,
    GetSharedData,
    SetSharedData,
    HttpCall,
    GrpcCall,
    GetStatus,
    RandomGet,
    SetTickPeriodMilliseconds,
    DefineMetric,
    IncrementMetric,
    RecordMetric,
}

impl HostCall {
    /// Every kind.
    pub const ALL: [HostCall; 25] = [
        HostCall::GetCurrentTimeNanoseconds,
        HostCall::Log,
        HostCall::GetLogLevel,
        HostCall::GetHeaderMapValue,
        HostCall::GetHeaderMapPairs,
        HostCall::ReplaceHeaderMapValue,
        HostCall::AddHeaderMapValue,
        HostCall::RemoveHeaderMapValue,
        HostCall::SetHeaderMapPairs,
        HostCall::GetBufferBytes,
        HostCall::SendLocalResponse,
        HostCall::ContinueStream,
        HostCall::SetEffectiveContext,
        HostCall::GetProperty,
        HostCall::SetProperty,
        HostCall::GetSharedData,
        HostCall::SetSharedData,
        HostCall::HttpCall,
        HostCall::GrpcCall,
        HostCall::GetStatus,
        HostCall::RandomGet,
        HostCall::SetTickPeriodMilliseconds,
        HostCall::DefineMetric,
        HostCall::IncrementMetric,
        HostCall::RecordMetric,
    ];

    /// The ABI function's name (`random_get` is WASI's).
    pub fn abi_name(self) -> &'static str {
        match self {
            HostCall::GetCurrentTimeNanoseconds => "proxy_get_current_time_nanoseconds",
            HostCall::Log => "proxy_log",
            HostCall::GetLogLevel => "proxy_get_log_level",
            HostCall::GetHeaderMapValue => "proxy_get_header_map_value",
            HostCall::GetHeaderMapPairs => "proxy_get_header_map_pairs",
            HostCall::ReplaceHeaderMapValue => "proxy_replace_header_map_value",
            HostCall::AddHeaderMapValue => "proxy_add_header_map_value",
            HostCall::RemoveHeaderMapValue => "proxy_remove_header_map_value",
            HostCall::SetHeaderMapPairs => "proxy_set_header_map_pairs",
            HostCall::GetBufferBytes => "proxy_get_buffer_bytes",
            HostCall::SendLocalResponse => "proxy_send_local_response",
            HostCall::ContinueStream => "proxy_continue_stream",
            HostCall::SetEffectiveContext => "proxy_set_effective_context",
            HostCall::GetProperty => "proxy_get_property",
            HostCall::SetProperty => "proxy_set_property",
            HostCall::GetSharedData => "proxy_get_shared_data",
            HostCall::SetSharedData => "proxy_set_shared_data",
            HostCall::HttpCall => "proxy_http_call",
            HostCall::GrpcCall => "proxy_grpc_call",
            HostCall::GetStatus => "proxy_get_status",
            HostCall::RandomGet => "random_get",
            HostCall::SetTickPeriodMilliseconds => "proxy_set_tick_period_milliseconds",
            HostCall::DefineMetric => "proxy_define_metric",
            HostCall::IncrementMetric => "proxy_increment_metric",
            HostCall::RecordMetric => "proxy_record_metric",
        }
    }
}

/// Host calls counted by kind (see [`Proxy::host_calls`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostCalls(BTreeMap<HostCall, u64>);

impl HostCalls {
    pub fn get(&self, kind: HostCall) -> u64 {
        self.0.get(&kind).copied().unwrap_or(0)
    }
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
    /// The kinds called at least once, with their counts.
    pub fn iter(&self) -> impl Iterator<Item = (HostCall, u64)> + '_ {
        self.0.iter().map(|(k, n)| (*k, *n))
    }
}

impl fmt::Display for HostCalls {
    /// `total N: proxy_get_header_map_value 3, proxy_log 1, …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "total {}", self.total())?;
        for (i, (kind, n)) in self.iter().enumerate() {
            write!(f, "{} {} {n}", if i == 0 { ":" } else { "," }, kind.abi_name())?;
        }
        Ok(())
    }
}

/// The two phases of a stream a filter can pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Request,
    Response,
}

/// A stream callback the emulator called, as recorded with the action it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callback {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    HttpCallResponse,
    GrpcCallResponse,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl LocalResponse {
    /// The first value of a header of the reply (names as the filter wrote them, compared
    /// without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP callout as the filter made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
    /// The context Envoy files the call under (the effective context when it was made).
    pub context_id: u32,
}

impl HttpCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A gRPC callout as the filter made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcCall {
    pub token: u32,
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub initial_metadata: Vec<(String, Vec<u8>)>,
    pub message: Vec<u8>,
    pub timeout: Duration,
    pub context_id: u32,
}

#[derive(Clone, Debug)]
enum Call {
    Http(HttpCall),
    Grpc(GrpcCall),
}

impl Call {
    fn token(&self) -> u32 {
        match self {
            Call::Http(c) => c.token,
            Call::Grpc(c) => c.token,
        }
    }
    fn context_id(&self) -> u32 {
        match self {
            Call::Http(c) => c.context_id,
            Call::Grpc(c) => c.context_id,
        }
    }
}

struct Callout {
    call: Call,
    /// The context the SDK files the answer under: the one it last called back (0.2.5's
    /// `active_id`), which is the root while the router delivers a wake.
    sdk_owner: u32,
    answered: bool,
}

/// The callout answer being delivered.
enum Answer {
    Http { headers: Vec<(String, Vec<u8>)>, body: Vec<u8> },
    Grpc { status: u32, message: Vec<u8> },
}

// ---- the proxy: what every worker shares ------------------------------------------------------

struct ProxyState {
    now: Cell<SystemTime>,
    log_level: Cell<LogLevel>,
    logs: RefCell<Vec<(LogLevel, String)>>,
    shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
    metrics: RefCell<Vec<(String, MetricKind, i64)>>,
    host_calls: RefCell<BTreeMap<HostCall, u64>>,
    next_id: Cell<u32>,
    properties: RefCell<HashMap<Vec<String>, Vec<u8>>>,
    random: Cell<u64>,
    fail_random: Cell<bool>,
    /// Shared-data reads still to be raced by another worker's write.
    contended_reads: Cell<u32>,
}

impl ProxyState {
    fn count(&self, kind: HostCall) {
        *self.host_calls.borrow_mut().entry(kind).or_insert(0) += 1;
    }

    fn next_id(&self) -> u32 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        let mut shared = self.shared.borrow_mut();
        // Envoy: an existing key checks a non-zero token; a new key is written whatever the
        // token (a first creation is never CAS-protected). Every write takes the next token
        // of one proxy-wide counter, skipping 0.
        if let (Some(cas), Some((_, current))) = (cas.filter(|c| *c != 0), shared.get(key)) {
            if cas != *current {
                return Err(HostError::CasMismatch);
            }
        }
        let token = self.next_cas.get();
        self.next_cas.set(token.wrapping_add(1).max(1));
        shared.insert(key.to_string(), (value.to_vec(), token));
        Ok(())
    }

    fn random_u64(&self) -> u64 {
        // splitmix64 over a per-proxy random start: different in every Proxy (and run).
        let z = self.random.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.random.set(z);
        let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One emulated Envoy: what its workers share. Cheap to clone (a handle).
#[derive(Clone)]
pub struct Proxy {
    state: Rc<ProxyState>,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy::new()
    }
}

impl Proxy {
    /// A proxy whose clock reads 1 700 000 000 s after the Unix epoch and whose log level is
    /// trace (every message is formatted, so formatting bugs show).
    pub fn new() -> Proxy {
        use std::hash::{BuildHasher, Hasher};
        let mut entropy = std::collections::hash_map::RandomState::new().build_hasher();
        entropy.write_u64(0);
        Proxy {
            state: Rc::new(ProxyState {
                now: Cell::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
                log_level: Cell::new(LogLevel::Trace),
                logs: RefCell::new(Vec::new()),
                shared: RefCell::new(HashMap::new()),
                next_cas: Cell::new(1),
                metrics: RefCell::new(Vec::new()),
                host_calls: RefCell::new(BTreeMap::new()),
                next_id: Cell::new(1),
                properties: RefCell::new(HashMap::new()),
                random: Cell::new(entropy.finish()),
                fail_random: Cell::new(false),
                contended_reads: Cell::new(0),
            }),
        }
    }

    /// A worker VM running `R::default()` configured with `config`; panics with the
    /// configuration error (use [`Worker::start`] to test refusals).
    #[track_caller]
    pub fn worker<R: RootFilter + Default>(&self, config: &str) -> Worker<R> {
        match Worker::start(self, R::default(), config) {
            Ok(w) => w,
            Err(e) => panic!("{}: configuration refused: {e}", R::NAME),
        }
    }

    /// A bare host: one stream context of its own worker, with no filter (for code that
    /// takes a `&dyn Host` directly). Shares this proxy's shared data, clock and metrics.
    pub fn host(&self) -> ContextHost {
        let vm = Vm::new(self);
        let id = self.state.next_id();
        vm.contexts.borrow_mut().insert(id, ContextState::default());
        ContextHost::new(&vm, id)
    }

    // ---- clock, logs -------------------------------------------------------------------------
    pub fn now(&self) -> SystemTime {
        self.state.now.get()
    }
    pub fn set_now(&self, t: SystemTime) {
        self.state.now.set(t);
    }
    pub fn advance(&self, d: Duration) {
        self.state.now.set(self.state.now.get() + d);
    }
    pub fn set_log_level(&self, level: LogLevel) {
        self.state.log_level.set(level);
    }
    /// Every message logged by any worker, in order.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.state.logs.borrow().clone()
    }

    // ---- metrics, shared data, properties -----------------------------------------------------
    /// The value of the metric with this full name (summed over workers, as Envoy shows it);
    /// `None` if no worker defined it.
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.state.metrics.borrow().iter().find(|(n, _, _)| n == name).map(|(_, _, v)| *v)
    }
    /// Shared data as a worker would read it (not counted as a host call).
    pub fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        read_shared(&self.state, key)
    }
    /// Write shared data unconditionally, as another worker would (not counted).
    pub fn set_shared_data(&self, key: &str, value: &[u8]) {
        let _ = self.state.set_shared(key, value, None);
    }
    /// A property every context reads unless the stream has its own (see
    /// [`Worker::set_property`]).
    pub fn set_property(&self, path: &[&str], value: &[u8]) {
        self.state.properties.borrow_mut().insert(path_key(path), value.to_vec());
    }
    /// Race the next `reads` shared-data reads (by any worker): right after each, another
    /// worker rewrites the key with the same bytes, so a compare-and-swap based on that read
    /// fails. `u32::MAX`: every read, until set back to 0.
    pub fn contend_shared_data(&self, reads: u32) {
        self.state.contended_reads.set(reads);
    }
    /// Make `Host::random` fail from now on (or work again).
    pub fn fail_random(&self, fail: bool) {
        self.state.fail_random.set(fail);
    }

    // ---- host calls --------------------------------------------------------------------------
    /// Host calls made by every worker since the proxy started or the last reset, by kind.
    pub fn host_calls(&self) -> HostCalls {
        HostCalls(self.state.host_calls.borrow().clone())
    }
    pub fn reset_host_calls(&self) {
        self.state.host_calls.borrow_mut().clear();
    }
    /// The host calls `f` makes (e.g. one request through a worker), with its result.
    pub fn count_host_calls<T>(&self, f: impl FnOnce() -> T) -> (T, HostCalls) {
        let before = self.host_calls();
        let out = f();
        let mut after = self.host_calls();
        for (kind, n) in before.iter() {
            if let Some(v) = after.0.get_mut(&kind) {
                *v -= n;
            }
        }
        after.0.retain(|_, n| *n > 0);
        (out, after)
    }
}

fn path_key(path: &[&str]) -> Vec<String> {
    path.iter().map(|s| s.to_string()).collect()
}

fn read_shared(state: &ProxyState, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    match state.shared.borrow().get(key) {
        // Envoy hands an empty value back as no value (with its token).
        Some((v, cas)) if v.is_empty() => (None, Some(*cas)),
        Some((v, cas)) => (Some(v.clone()), Some(*cas)),
        None => (None, None),
    }
}

// ---- one worker VM: Envoy's side of its contexts -----------------------------------------------

#[derive(Default)]
pub(crate) struct ContextState {
    is_root: bool,
    pub(crate) maps: HashMap<HeaderMapKind, Vec<(String, Vec<u8>)>>,
    pub(crate) request_body: Vec<u8>,
    pub(crate) response_body: Vec<u8>,
    pub(crate) properties: HashMap<Vec<String>, Vec<u8>>,
    pub(crate) properties_written: Vec<(Vec<String>, Vec<u8>)>,
    actions: Vec<(Callback, Action)>,
    request_paused: bool,
    response_paused: bool,
    pub(crate) local_reply: Option<LocalResponse>,
    completed: bool,
    /// Envoy no longer has this context: calls addressing it fail.
    deleted: bool,
}

struct Vm {
    proxy: Rc<ProxyState>,
    contexts: RefCell<BTreeMap<u32, ContextState>>,
    callouts: RefCell<Vec<Callout>>,
    answer: RefCell<Option<Answer>>,
    tick_period: Cell<Option<Duration>>,
    router: Router,
    /// `continue_stream` calls, applied when the VM call returns (as Envoy does).
    after_call: RefCell<Vec<(u32, Phase)>>,
    resumes: RefCell<Vec<(u32, Phase)>>,
    local_replies: RefCell<Vec<(u32, LocalResponse)>>,
    fail_http_calls: Cell<bool>,
    fail_header_writes: Cell<bool>,
}

impl Vm {
    fn new(proxy: &Proxy) -> Rc<Vm> {
        Rc::new(Vm {
            proxy: proxy.state.clone(),
            contexts: RefCell::new(BTreeMap::new()),
            callouts: RefCell::new(Vec::new()),
            answer: RefCell::new(None),
            tick_period: Cell::new(None),
            router: Router::new(),
            after_call: RefCell::new(Vec::new()),
            resumes: RefCell::new(Vec::new()),
            local_replies: RefCell::new(Vec::new()),
            fail_http_calls: Cell::new(false),
            fail_header_writes: Cell::new(false),
        })
    }

    /// The VM call returned: apply the resumes it asked for.
    fn after_call(&self) {
        let pending = std::mem::take(&mut *self.after_call.borrow_mut());
        for (id, phase) in pending {
            let mut contexts = self.contexts.borrow_mut();
            let Some(c) = contexts.get_mut(&id).filter(|c| !c.deleted) else { continue };
            let paused = match phase {
                Phase::Request => &mut c.request_paused,
                Phase::Response => &mut c.response_paused,
            };
            if !std::mem::take(paused) && c.local_reply.is_none() {
                panic!("stream {id}: {phase:?} resumed but not paused (Envoy would run the rest of the chain again)");
            }
            self.resumes.borrow_mut().push((id, phase));
        }
    }

    fn record(&self, id: u32, callback: Callback, action: Action) {
        let mut contexts = self.contexts.borrow_mut();
        let Some(c) = contexts.get_mut(&id) else { return };
        c.actions.push((callback, action));
        let paused = action == Action::Pause;
        match callback {
            Callback::RequestHeaders | Callback::RequestBody | Callback::RequestTrailers => c.request_paused = paused,
            Callback::ResponseHeaders | Callback::ResponseBody | Callback::ResponseTrailers => {
                c.response_paused = paused
            }
            // A callout answer's action is the glue's business, not Envoy's.
            Callback::HttpCallResponse | Callback::GrpcCallResponse => {}
        }
    }

    fn with_context<T>(&self, id: u32, f: impl FnOnce(&mut ContextState) -> T) -> T {
        let mut contexts = self.contexts.borrow_mut();
        let c = contexts.get_mut(&id).unwrap_or_else(|| panic!("no context {id} in this worker"));
        f(c)
    }
}

/// The [`Host`] a filter sees in the emulator: one context of one worker (the one called back),
/// plus the effective context it may switch to with `set_effective_context`.
pub struct ContextHost {
    vm: Rc<Vm>,
    /// The context the SDK called back (where it files callouts).
    active: u32,
    effective: Cell<u32>,
}

impl ContextHost {
    fn new(vm: &Rc<Vm>, context_id: u32) -> ContextHost {
        ContextHost { vm: vm.clone(), active: context_id, effective: Cell::new(context_id) }
    }

    /// The context later calls address.
    pub fn effective_context(&self) -> u32 {
        self.effective.get()
    }

    fn count(&self, kind: HostCall) {
        self.vm.proxy.count(kind);
    }

    /// For [`crate::mock::MockHost`]: its own context's state.
    pub(crate) fn own<T>(&self, f: impl FnOnce(&mut ContextState) -> T) -> T {
        self.vm.with_context(self.active, f)
    }
    pub(crate) fn http_calls(&self) -> Vec<HttpCall> {
        let callouts = self.vm.callouts.borrow();
        callouts
            .iter()
            .filter_map(|c| match &c.call {
                Call::Http(h) => Some(h.clone()),
                Call::Grpc(_) => None,
            })
            .collect()
    }
    pub(crate) fn fail_http_calls(&self, fail: bool) {
        self.vm.fail_http_calls.set(fail);
    }
    pub(crate) fn fail_header_writes(&self, fail: bool) {
        self.vm.fail_header_writes.set(fail);
    }
    pub(crate) fn tick_period(&self) -> Option<Duration> {
        self.vm.tick_period.get()
    }

    /// Run `f` on the effective context if it is a live stream.
    fn stream<T>(&self, f: impl FnOnce(&mut ContextState) -> T) -> Option<T> {
        let mut contexts = self.vm.contexts.borrow_mut();
        contexts.get_mut(&self.effective.get()).filter(|c| !c.is_root && !c.deleted).map(f)
    }

    fn edit_map(
        &self,
        map: HeaderMapKind,
        f: impl FnOnce(&mut Vec<(String, Vec<u8>)>) -> Result<(), HostError>,
    ) -> Result<(), HostError> {
        if self.vm.fail_header_writes.get() {
            return Err(HostError::BadArgument);
        }
        if !is_stream_map(map) {
            return Err(HostError::BadArgument);
        }
        self.stream(|c| f(c.maps.entry(map).or_default())).unwrap_or(Err(HostError::NotFound))
    }

    fn read_map(&self, map: HeaderMapKind) -> Vec<(String, Vec<u8>)> {
        match map {
            HeaderMapKind::HttpCallResponseHeaders => match &*self.vm.answer.borrow() {
                Some(Answer::Http { headers, .. }) => headers.clone(),
                _ => Vec::new(),
            },
            HeaderMapKind::GrpcReceiveInitialMetadata | HeaderMapKind::GrpcReceiveTrailingMetadata => Vec::new(),
            _ => self.stream(|c| c.maps.get(&map).cloned().unwrap_or_default()).unwrap_or_default(),
        }
    }

    fn record_call(&self, make: impl FnOnce(u32, u32) -> Call) -> u32 {
        let token = self.vm.proxy.next_id();
        let call = make(token, self.effective.get());
        self.vm.callouts.borrow_mut().push(Callout { call, sdk_owner: self.active, answered: false });
        token
    }
}

fn is_stream_map(map: HeaderMapKind) -> bool {
    matches!(
        map,
        HeaderMapKind::RequestHeaders
            | HeaderMapKind::RequestTrailers
            | HeaderMapKind::ResponseHeaders
            | HeaderMapKind::ResponseTrailers
    )
}

fn lowercase_pairs(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    pairs.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_vec())).collect()
}

fn text_pairs(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    pairs.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())).collect()
}

impl Host for ContextHost {
    fn now(&self) -> SystemTime {
        self.count(HostCall::GetCurrentTimeNanoseconds);
        self.vm.proxy.now.get()
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.count(HostCall::Log);
        self.vm.proxy.logs.borrow_mut().push((level, message.to_string()));
    }

    fn log_level(&self) -> LogLevel {
        self.count(HostCall::GetLogLevel);
        self.vm.proxy.log_level.get()
    }

    fn header(&self, map: HeaderMapKind, name: &str) -> Option<Vec<u8>> {
        self.count(HostCall::GetHeaderMapValue);
        let name = name.to_ascii_lowercase();
        self.read_map(map).into_iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    fn headers(&self, map: HeaderMapKind) -> Vec<(String, Vec<u8>)> {
        self.count(HostCall::GetHeaderMapPairs);
        self.read_map(map)
    }

    fn set_header(&self, map: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.count(HostCall::ReplaceHeaderMapValue);
        let name = name.to_ascii_lowercase();
        self.edit_map(map, |m| {
            m.retain(|(k, _)| *k != name);
            m.push((name, value.to_vec()));
            Ok(())
        })
    }

    fn add_header(&self, map: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.count(HostCall::AddHeaderMapValue);
        self.edit_map(map, |m| {
            m.push((name.to_ascii_lowercase(), value.to_vec()));
            Ok(())
        })
    }

    fn remove_header(&self, map: HeaderMapKind, name: &str) -> Result<(), HostError> {
        self.count(HostCall::RemoveHeaderMapValue);
        let name = name.to_ascii_lowercase();
        self.edit_map(map, |m| {
            m.retain(|(k, _)| *k != name);
            Ok(())
        })
    }

    fn set_headers(&self, map: HeaderMapKind, pairs: &[(&str, &[u8])]) -> Result<(), HostError> {
        self.count(HostCall::SetHeaderMapPairs);
        self.edit_map(map, |m| {
            *m = lowercase_pairs(pairs);
            Ok(())
        })
    }

    fn body(&self, body: BodyKind, start: usize, max_size: usize) -> Option<Vec<u8>> {
        self.count(HostCall::GetBufferBytes);
        let bytes = match body {
            BodyKind::Request => self.stream(|c| c.request_body.clone())?,
            BodyKind::Response => self.stream(|c| c.response_body.clone())?,
            BodyKind::HttpCallResponse => match &*self.vm.answer.borrow() {
                Some(Answer::Http { body, .. }) => body.clone(),
                _ => return None,
            },
            BodyKind::GrpcReceive => match &*self.vm.answer.borrow() {
                Some(Answer::Grpc { status: 0, message }) => message.clone(),
                _ => return None,
            },
        };
        let start = start.min(bytes.len());
        let end = start.saturating_add(max_size).min(bytes.len());
        Some(bytes[start..end].to_vec())
    }

    fn send_local_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        self.count(HostCall::SendLocalResponse);
        let reply = LocalResponse {
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.to_vec(),
        };
        let id = self.effective.get();
        let sent = self.stream(|c| {
            if c.local_reply.is_some() {
                // Envoy refuses a second local reply for the same stream.
                return Err(HostError::BadArgument);
            }
            c.local_reply = Some(reply.clone());
            Ok(())
        });
        match sent {
            Some(Ok(())) => {
                self.vm.local_replies.borrow_mut().push((id, reply));
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Err(HostError::BadArgument),
        }
    }

    fn resume_request(&self) -> Result<(), HostError> {
        self.count(HostCall::ContinueStream);
        let id = self.effective.get();
        self.stream(|_| ()).ok_or(HostError::BadArgument)?;
        self.vm.after_call.borrow_mut().push((id, Phase::Request));
        Ok(())
    }

    fn resume_response(&self) -> Result<(), HostError> {
        self.count(HostCall::ContinueStream);
        let id = self.effective.get();
        self.stream(|_| ()).ok_or(HostError::BadArgument)?;
        self.vm.after_call.borrow_mut().push((id, Phase::Response));
        Ok(())
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        self.count(HostCall::SetEffectiveContext);
        match self.vm.contexts.borrow().get(&context_id) {
            Some(c) if !c.deleted => {
                self.effective.set(context_id);
                Ok(())
            }
            _ => Err(HostError::BadArgument),
        }
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.count(HostCall::GetProperty);
        let key = path_key(path);
        let own = self.vm.contexts.borrow().get(&self.effective.get()).and_then(|c| c.properties.get(&key).cloned());
        own.or_else(|| self.vm.proxy.properties.borrow().get(&key).cloned())
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        self.count(HostCall::SetProperty);
        self.stream(|c| c.properties_written.push((path_key(path), value.to_vec()))).ok_or(HostError::BadArgument)
    }

    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.count(HostCall::GetSharedData);
        let proxy = &self.vm.proxy;
        let read = read_shared(proxy, key);
        let races = proxy.contended_reads.get();
        if races > 0 && read.1.is_some() {
            proxy.contended_reads.set(if races == u32::MAX { races } else { races - 1 });
            let value = proxy.shared.borrow().get(key).map(|(v, _)| v.clone()).unwrap_or_default();
            let _ = proxy.set_shared(key, &value, None);
        }
        read
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        self.count(HostCall::SetSharedData);
        self.vm.proxy.set_shared(key, value, cas)
    }

    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, HostError> {
        self.count(HostCall::HttpCall);
        if self.vm.fail_http_calls.get() {
            return Err(HostError::BadArgument);
        }
        Ok(self.record_call(|token, context_id| {
            Call::Http(HttpCall {
                token,
                cluster: cluster.to_string(),
                headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                body: body.map(<[u8]>::to_vec),
                timeout,
                context_id,
            })
        }))
    }

    fn dispatch_grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        initial_metadata: &[(&str, &[u8])],
        message: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        self.count(HostCall::GrpcCall);
        if self.vm.fail_http_calls.get() {
            return Err(HostError::BadArgument);
        }
        Ok(self.record_call(|token, context_id| {
            Call::Grpc(GrpcCall {
                token,
                cluster: cluster.to_string(),
                service: service.to_string(),
                method: method.to_string(),
                initial_metadata: initial_metadata.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect(),
                message: message.to_vec(),
                timeout,
                context_id,
            })
        }))
    }

    fn call_status(&self) -> Result<(u32, Vec<u8>), HostError> {
        self.count(HostCall::GetStatus);
        match &*self.vm.answer.borrow() {
            Some(Answer::Grpc { status: 0, .. }) => Ok((0, Vec::new())),
            Some(Answer::Grpc { status, message }) => Ok((*status, message.clone())),
            _ => Err(HostError::NotFound),
        }
    }

    fn random(&self, buf: &mut [u8]) -> Result<(), HostError> {
        self.count(HostCall::RandomGet);
        if self.vm.proxy.fail_random.get() {
            return Err(HostError::Failure);
        }
        for chunk in buf.chunks_mut(8) {
            let r = self.vm.proxy.random_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        Ok(())
    }

    fn wake(&self, context_id: u32) -> Result<(), HostError> {
        // Not a host call: the glue queues it in the VM.
        self.vm.router.wake(context_id);
        Ok(())
    }

    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        self.count(HostCall::SetTickPeriodMilliseconds);
        self.vm.tick_period.set(Some(period));
        Ok(())
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        self.count(HostCall::DefineMetric);
        let mut metrics = self.vm.proxy.metrics.borrow_mut();
        let id = match metrics.iter().position(|(n, _, _)| n == name) {
            Some(i) => i,
            None => {
                metrics.push((name.to_string(), kind, 0));
                metrics.len() - 1
            }
        };
        u32::try_from(id).map_err(|_| HostError::Failure)
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        self.count(HostCall::IncrementMetric);
        if let Some(m) = self.vm.proxy.metrics.borrow_mut().get_mut(id as usize) {
            m.2 += delta;
        }
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.count(HostCall::RecordMetric);
        if let Some(m) = self.vm.proxy.metrics.borrow_mut().get_mut(id as usize) {
            m.2 = i64::try_from(value).unwrap_or(i64::MAX);
        }
    }
}

// ---- the worker: a root filter and its streams ---------------------------------------------------

/// One worker VM of a [`Proxy`]: a root filter `R`, the HTTP filters of its streams, and
/// Envoy's side of each context.
pub struct Worker<R: RootFilter> {
    proxy: Proxy,
    vm: Rc<Vm>,
    root_id: u32,
    root: R,
    streams: BTreeMap<u32, StreamHandle<R::Http>>,
}

impl<R: RootFilter> Worker<R> {
    /// A worker VM with `root`, configured with `config` (its `on_configure`).
    pub fn start(proxy: &Proxy, root: R, config: &str) -> Result<Worker<R>, ConfigError> {
        Worker::start_raw(proxy, root, Some(config.as_bytes()))
    }

    /// [`Worker::start`] with the raw plugin configuration (`None`: none given).
    pub fn start_raw(proxy: &Proxy, mut root: R, config: Option<&[u8]>) -> Result<Worker<R>, ConfigError> {
        let vm = Vm::new(proxy);
        let root_id = proxy.state.next_id();
        vm.contexts.borrow_mut().insert(root_id, ContextState { is_root: true, ..ContextState::default() });
        root.configure(&ContextHost::new(&vm, root_id), config)?;
        Ok(Worker { proxy: proxy.clone(), vm, root_id, root, streams: BTreeMap::new() })
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }
    pub fn root(&self) -> &R {
        &self.root
    }
    pub fn root_mut(&mut self) -> &mut R {
        &mut self.root
    }
    pub fn root_id(&self) -> u32 {
        self.root_id
    }
    /// A host addressing context `context_id` of this worker (the root or a stream), e.g. to
    /// call a filter directly or wrap the host in a test double.
    pub fn host(&self, context_id: u32) -> ContextHost {
        ContextHost::new(&self.vm, context_id)
    }

    /// `on_tick` of the root, then the wakes it queued, then the resumes they asked for.
    pub fn tick(&mut self) {
        let host = self.host(self.root_id);
        self.vm.router.on_tick(&mut self.root, &host);
        self.vm.after_call();
    }
    /// The period the root last set (`None`: never set).
    pub fn tick_period(&self) -> Option<Duration> {
        self.vm.tick_period.get()
    }

    // ---- streams -------------------------------------------------------------------------------
    /// A new HTTP context (`new_http_filter`); its id.
    #[track_caller]
    pub fn new_stream(&mut self) -> u32 {
        let id = self.proxy.state.next_id();
        let Some(filter) = self.root.new_http_filter(id) else {
            panic!("{}: new_http_filter returned None (is the root configured?)", R::NAME)
        };
        self.vm.contexts.borrow_mut().insert(id, ContextState::default());
        self.streams.insert(id, StreamHandle::new(&self.vm.router, id, filter));
        id
    }

    /// A new stream whose request headers (a whole request, `end_of_stream`) go through the
    /// filter: its id and the action.
    pub fn request(&mut self, headers: &[(&str, &str)]) -> (u32, Action) {
        let id = self.new_stream();
        let action = self.request_headers(id, headers, true);
        (id, action)
    }

    #[track_caller]
    fn call(
        &mut self,
        id: u32,
        callback: Callback,
        f: impl FnOnce(&StreamHandle<R::Http>, &Router, &ContextHost) -> Action,
    ) -> Action {
        let Some(stream) = self.streams.get(&id) else { panic!("stream {id} does not exist (or completed)") };
        let host = ContextHost::new(&self.vm, id);
        let action = f(stream, &self.vm.router, &host);
        self.vm.record(id, callback, action);
        self.vm.after_call();
        action
    }

    fn set_map(&self, id: u32, map: HeaderMapKind, pairs: Vec<(String, Vec<u8>)>) {
        self.vm.with_context(id, |c| c.maps.insert(map, pairs));
    }

    #[track_caller]
    pub fn request_headers(&mut self, id: u32, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        self.set_map(id, HeaderMapKind::RequestHeaders, text_pairs(headers));
        self.call(id, Callback::RequestHeaders, |s, r, h| s.on_request_headers(r, h, end_of_stream))
    }
    /// Request headers with raw value bytes (obs-text, invalid UTF-8).
    #[track_caller]
    pub fn request_headers_bytes(&mut self, id: u32, headers: &[(&str, &[u8])], end_of_stream: bool) -> Action {
        self.set_map(id, HeaderMapKind::RequestHeaders, lowercase_pairs(headers));
        self.call(id, Callback::RequestHeaders, |s, r, h| s.on_request_headers(r, h, end_of_stream))
    }
    /// One chunk of the request body: the body buffer holds this chunk during the callback.
    #[track_caller]
    pub fn request_body(&mut self, id: u32, chunk: &[u8], end_of_stream: bool) -> Action {
        self.vm.with_context(id, |c| c.request_body = chunk.to_vec());
        self.call(id, Callback::RequestBody, |s, r, h| s.on_request_body(r, h, chunk.len(), end_of_stream))
    }
    #[track_caller]
    pub fn request_trailers(&mut self, id: u32, trailers: &[(&str, &str)]) -> Action {
        self.set_map(id, HeaderMapKind::RequestTrailers, text_pairs(trailers));
        self.call(id, Callback::RequestTrailers, |s, r, h| s.on_request_trailers(r, h))
    }
    #[track_caller]
    pub fn response_headers(&mut self, id: u32, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        self.set_map(id, HeaderMapKind::ResponseHeaders, text_pairs(headers));
        self.call(id, Callback::ResponseHeaders, |s, r, h| s.on_response_headers(r, h, end_of_stream))
    }
    #[track_caller]
    pub fn response_headers_bytes(&mut self, id: u32, headers: &[(&str, &[u8])], end_of_stream: bool) -> Action {
        self.set_map(id, HeaderMapKind::ResponseHeaders, lowercase_pairs(headers));
        self.call(id, Callback::ResponseHeaders, |s, r, h| s.on_response_headers(r, h, end_of_stream))
    }
    #[track_caller]
    pub fn response_body(&mut self, id: u32, chunk: &[u8], end_of_stream: bool) -> Action {
        self.vm.with_context(id, |c| c.response_body = chunk.to_vec());
        self.call(id, Callback::ResponseBody, |s, r, h| s.on_response_body(r, h, chunk.len(), end_of_stream))
    }
    #[track_caller]
    pub fn response_trailers(&mut self, id: u32, trailers: &[(&str, &str)]) -> Action {
        self.set_map(id, HeaderMapKind::ResponseTrailers, text_pairs(trailers));
        self.call(id, Callback::ResponseTrailers, |s, r, h| s.on_response_trailers(r, h))
    }

    /// The stream is over: the filter's `on_log`, then Envoy deletes the context (its pending
    /// callouts are cancelled; wakes no longer reach it). Its recorded state stays readable.
    #[track_caller]
    pub fn complete(&mut self, id: u32) {
        let Some(stream) = self.streams.remove(&id) else { panic!("stream {id} does not exist (or completed)") };
        let host = ContextHost::new(&self.vm, id);
        stream.on_log(&self.vm.router, &host);
        drop(stream);
        self.vm.with_context(id, |c| {
            c.completed = true;
            c.deleted = true;
        });
        self.vm.after_call();
    }

    /// Envoy forgets stream `id` without telling the VM (a defensive path: calls addressing it
    /// fail from now on, while the filter still exists).
    pub fn forget_context(&mut self, id: u32) {
        self.vm.with_context(id, |c| c.deleted = true);
    }

    // ---- callouts ------------------------------------------------------------------------------
    /// Every HTTP callout this worker made, in order.
    pub fn http_calls(&self) -> Vec<HttpCall> {
        let callouts = self.vm.callouts.borrow();
        callouts
            .iter()
            .filter_map(|c| match &c.call {
                Call::Http(h) => Some(h.clone()),
                Call::Grpc(_) => None,
            })
            .collect()
    }
    #[track_caller]
    pub fn last_http_call(&self) -> HttpCall {
        self.http_calls().pop().expect("no HTTP callout was made")
    }
    pub fn grpc_calls(&self) -> Vec<GrpcCall> {
        let callouts = self.vm.callouts.borrow();
        callouts
            .iter()
            .filter_map(|c| match &c.call {
                Call::Grpc(g) => Some(g.clone()),
                Call::Http(_) => None,
            })
            .collect()
    }
    /// Tokens of the callouts not answered yet (and not cancelled).
    pub fn pending_calls(&self) -> Vec<u32> {
        let contexts = self.vm.contexts.borrow();
        let live = |id: u32| contexts.get(&id).is_some_and(|c| !c.deleted);
        self.vm
            .callouts
            .borrow()
            .iter()
            .filter(|c| !c.answered && live(c.call.context_id()))
            .map(|c| c.call.token())
            .collect()
    }
    pub fn fail_http_calls(&self, fail: bool) {
        self.vm.fail_http_calls.set(fail);
    }

    #[track_caller]
    fn take_call(&self, token: u32) -> u32 {
        let mut callouts = self.vm.callouts.borrow_mut();
        let Some(c) = callouts.iter_mut().find(|c| c.call.token() == token) else {
            panic!("no callout with token {token} in this worker")
        };
        assert!(!c.answered, "callout {token} was already answered");
        let envoy_context = c.call.context_id();
        if self.vm.contexts.borrow().get(&envoy_context).is_some_and(|c| c.deleted) {
            panic!("callout {token} was cancelled: its context {envoy_context} ended");
        }
        c.answered = true;
        c.sdk_owner
    }

    /// Answer HTTP callout `token` (headers include `:status`; no headers at all is how Envoy
    /// reports a timeout or a failed connection). Delivered to the context that made the call,
    /// as the SDK does; a stream's answer of `Continue` resumes it if paused.
    #[track_caller]
    pub fn answer_http_call(&mut self, token: u32, headers: &[(&str, &str)], body: &[u8]) {
        let owner = self.take_call(token);
        *self.vm.answer.borrow_mut() = Some(Answer::Http { headers: text_pairs(headers), body: body.to_vec() });
        let host = ContextHost::new(&self.vm, owner);
        if owner == self.root_id {
            self.vm.router.on_http_call_response(&mut self.root, &host, token, headers.len(), body.len(), 0);
        } else if let Some(stream) = self.streams.get(&owner) {
            let a = stream.on_http_call_response(&self.vm.router, &host, token, headers.len(), body.len(), 0);
            self.vm.record(owner, Callback::HttpCallResponse, a);
        }
        *self.vm.answer.borrow_mut() = None;
        self.vm.after_call();
    }

    /// Answer gRPC callout `token`. `status` 0 delivers `message` as the response message;
    /// any other status is a failure whose status message (`Host::call_status`) is `message`,
    /// as Envoy's `on_grpc_close` reports it.
    #[track_caller]
    pub fn answer_grpc_call(&mut self, token: u32, status: u32, message: &[u8]) {
        let owner = self.take_call(token);
        *self.vm.answer.borrow_mut() = Some(Answer::Grpc { status, message: message.to_vec() });
        let size = if status == 0 { message.len() } else { 0 };
        let host = ContextHost::new(&self.vm, owner);
        if owner == self.root_id {
            self.vm.router.on_grpc_call_response(&mut self.root, &host, token, status, size);
        } else if let Some(stream) = self.streams.get(&owner) {
            let a = stream.on_grpc_call_response(&self.vm.router, &host, token, status, size);
            self.vm.record(owner, Callback::GrpcCallResponse, a);
        }
        *self.vm.answer.borrow_mut() = None;
        self.vm.after_call();
    }

    // ---- what happened to a stream ------------------------------------------------------------
    fn read<T>(&self, id: u32, f: impl FnOnce(&ContextState) -> T) -> T {
        let contexts = self.vm.contexts.borrow();
        f(contexts.get(&id).unwrap_or_else(|| panic!("no context {id} in this worker")))
    }

    /// A header map of stream `id` as it is now (after the filter's edits).
    pub fn headers(&self, id: u32, map: HeaderMapKind) -> Vec<(String, Vec<u8>)> {
        self.read(id, |c| c.maps.get(&map).cloned().unwrap_or_default())
    }
    /// Every value of `name` in a header map of stream `id`, lossily decoded.
    pub fn header_values(&self, id: u32, map: HeaderMapKind, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.headers(id, map)
            .into_iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
            .collect()
    }
    pub fn request_header_values(&self, id: u32, name: &str) -> Vec<String> {
        self.header_values(id, HeaderMapKind::RequestHeaders, name)
    }
    pub fn response_header_values(&self, id: u32, name: &str) -> Vec<String> {
        self.header_values(id, HeaderMapKind::ResponseHeaders, name)
    }
    /// The local reply stream `id` got, if any.
    pub fn local_reply(&self, id: u32) -> Option<LocalResponse> {
        self.read(id, |c| c.local_reply.clone())
    }
    /// Every local reply this worker sent, in order, with its stream.
    pub fn local_replies(&self) -> Vec<(u32, LocalResponse)> {
        self.vm.local_replies.borrow().clone()
    }
    /// Every resume Envoy applied in this worker, in order.
    pub fn resumes(&self) -> Vec<(u32, Phase)> {
        self.vm.resumes.borrow().clone()
    }
    /// The callbacks the emulator called on stream `id`, with the action each returned.
    pub fn actions(&self, id: u32) -> Vec<(Callback, Action)> {
        self.read(id, |c| c.actions.clone())
    }
    /// Envoy's view: is a phase of stream `id` paused now?
    pub fn is_paused(&self, id: u32) -> bool {
        self.read(id, |c| c.request_paused || c.response_paused)
    }
    pub fn is_complete(&self, id: u32) -> bool {
        self.read(id, |c| c.completed)
    }
    /// What the filter of stream `id` wrote with `Host::set_property`, in order.
    pub fn properties_written(&self, id: u32) -> Vec<(Vec<String>, Vec<u8>)> {
        self.read(id, |c| c.properties_written.clone())
    }
    /// A property stream `id` reads (over the proxy-wide ones), e.g. `source.address`.
    pub fn set_property(&self, id: u32, path: &[&str], value: &[u8]) {
        self.vm.with_context(id, |c| c.properties.insert(path_key(path), value.to_vec()));
    }
    /// Make every header write of this worker fail (to test the answer to host errors).
    pub fn fail_header_writes(&self, fail: bool) {
        self.vm.fail_header_writes.set(fail);
    }
    /// The HTTP filter of live stream `id`. Do not hold it across a callback.
    #[track_caller]
    pub fn filter(&self, id: u32) -> Ref<'_, R::Http> {
        let Some(stream) = self.streams.get(&id) else { panic!("stream {id} does not exist (or completed)") };
        Ref::map(stream.stream().borrow(), Stream::filter)
    }
    /// The HTTP filter of live stream `id`, to call it directly (with [`Worker::host`]).
    #[track_caller]
    pub fn filter_mut(&self, id: u32) -> std::cell::RefMut<'_, R::Http> {
        let Some(stream) = self.streams.get(&id) else { panic!("stream {id} does not exist (or completed)") };
        std::cell::RefMut::map(stream.stream().borrow_mut(), Stream::filter_mut)
    }
    /// Streams the router knows (live, not completed).
    pub fn live_streams(&self) -> usize {
        self.vm.router.len()
    }
}

#[cfg(test)]
mod tests;
