//! Host access behind one trait, so filter logic runs unchanged in Envoy and in native tests.

use crate::headers::HeaderPairs;
use std::time::{Duration, SystemTime};

/// Which header map a call addresses. Names follow proxy-wasm's `MapType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HeaderMapKind {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    HttpCallResponseHeaders,
    /// Initial and trailing metadata of a gRPC call answer being delivered.
    GrpcReceiveInitialMetadata,
    GrpcReceiveTrailingMetadata,
}

/// Which body buffer a call addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BodyKind {
    Request,
    Response,
    HttpCallResponse,
    /// The message of a gRPC call answer being delivered (`on_grpc_call_response`).
    GrpcReceive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// A host call that did not succeed. Filters decide what that means for the request;
/// nothing in this crate panics on a host error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostError {
    /// Shared data: the compare-and-swap token no longer matches.
    CasMismatch,
    NotFound,
    BadArgument,
    /// Any other status the host returned.
    Failure,
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            HostError::CasMismatch => "cas mismatch",
            HostError::NotFound => "not found",
            HostError::BadArgument => "bad argument",
            HostError::Failure => "host failure",
        };
        f.write_str(text)
    }
}

/// Everything a filter may ask of the proxy. Header values are bytes: upstreams and clients
/// send obs-text (0x80–0xFF) and the SDK's `String` getters would trap the VM on it.
///
/// A new method is implemented by `ProxyWasmHost` and the emulator's `ContextHost`
/// (`proxytest.rs`, with a `HostCall` kind), and forwarded once, by the [`HostWrapper`] impl
/// below (a test fails for a kind it misses).
pub trait Host {
    /// The host's wall-clock time. In Envoy it is read once per callback (`shared::exports`):
    /// every call within one callback, by any filter of a chain, returns the same instant.
    fn now(&self) -> SystemTime;
    fn log(&self, level: LogLevel, message: &str);
    /// The proxy's current log level, to skip formatting messages nobody will see.
    fn log_level(&self) -> LogLevel;

    fn header(&self, map: HeaderMapKind, name: &str) -> Option<Vec<u8>>;
    fn headers(&self, map: HeaderMapKind) -> Vec<(String, Vec<u8>)>;
    /// The same read (one `get_header_map_pairs` call) kept as the host's one buffer, for a
    /// filter that only looks at the pairs: no allocation per pair. The default serializes
    /// [`Host::headers`].
    fn header_pairs(&self, map: HeaderMapKind) -> HeaderPairs {
        HeaderPairs::from_pairs(&self.headers(map))
    }
    /// Replace every value of `name` with `value`.
    fn set_header(&self, map: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Append a value, keeping existing ones.
    fn add_header(&self, map: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError>;
    fn remove_header(&self, map: HeaderMapKind, name: &str) -> Result<(), HostError>;

    fn body(&self, body: BodyKind, start: usize, max_size: usize) -> Option<Vec<u8>>;

    /// Answer the downstream directly; the request goes no further.
    fn send_local_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError>;
    fn resume_request(&self) -> Result<(), HostError>;
    fn resume_response(&self) -> Result<(), HostError>;
    /// Make later calls address the stream `context_id` (proxy-wasm `set_effective_context`).
    /// To let a paused stream go on, prefer [`Host::wake`]: the stream then decides itself.
    /// Fails when that stream is gone. The default refuses, so other hosts stay compatible.
    fn set_effective_context(&self, _context_id: u32) -> Result<(), HostError> {
        Err(HostError::Failure)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Write a property for this stream. In Envoy this is filter state under the key
    /// `wasm.<path joined by '.'>` (Envoy prefixes `wasm.`), which access logs read with
    /// `%FILTER_STATE(wasm.<name>:PLAIN)%`. The default refuses, for hosts that cannot.
    fn set_property(&self, _path: &[&str], _value: &[u8]) -> Result<(), HostError> {
        Err(HostError::Failure)
    }

    /// Value and compare-and-swap token of a shared-data key (scoped per `vm_id` by the host).
    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// `cas: None` writes unconditionally. A key's first creation is never CAS-protected.
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError>;

    /// Call an Envoy *cluster* (not a URL). Headers must carry `:method`, `:path`, `:authority`.
    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, HostError>;

    /// A unary gRPC call to an Envoy *cluster* (proxy-wasm `dispatch_grpc_call`): `message` is
    /// the serialized request, `initial_metadata` goes out as gRPC metadata. The answer
    /// arrives in the calling context's `on_grpc_call_response`. The default refuses.
    fn dispatch_grpc_call(
        &self,
        _cluster: &str,
        _service: &str,
        _method: &str,
        _initial_metadata: &[(&str, &[u8])],
        _message: &[u8],
        _timeout: Duration,
    ) -> Result<u32, HostError> {
        Err(HostError::Failure)
    }

    /// Status of the callout answer being delivered (proxy-wasm `get_status`): for gRPC the
    /// gRPC status code and message. Only meaningful inside a call-response callback.
    fn call_status(&self) -> Result<(u32, Vec<u8>), HostError> {
        Err(HostError::Failure)
    }

    /// Replace a whole header map in one call (proxy-wasm `set_header_map_pairs`). Measured
    /// costlier than a few per-header calls in Envoy 1.40: read `docs/architecture.md` before
    /// choosing it. The default refuses.
    fn set_headers(&self, _map: HeaderMapKind, _pairs: &[(&str, &[u8])]) -> Result<(), HostError> {
        Err(HostError::Failure)
    }

    /// Fill `buf` with random bytes from the host (WASI `random_get`). The default refuses.
    fn random(&self, _buf: &mut [u8]) -> Result<(), HostError> {
        Err(HostError::Failure)
    }

    /// From a root context: the paused stream `context_id` may continue. The glue calls that
    /// stream's [`crate::HttpFilter::on_wake`] once the current callback returns, and resumes
    /// it (or, inside a chain, runs the filters after it) when that answers `Continue`.
    /// Waking a stream that is gone or not paused does nothing. The default refuses.
    fn wake(&self, _context_id: u32) -> Result<(), HostError> {
        Err(HostError::Failure)
    }

    fn set_tick_period(&self, period: Duration) -> Result<(), HostError>;

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError>;
    fn increment_metric(&self, id: u32, delta: i64);
    fn record_metric(&self, id: u32, value: u64);
}

/// A [`Host`] made of another one: implement this and the type is a `Host` whose every call
/// goes to [`HostWrapper::inner`], plus what its hooks add. The one forwarding list of the
/// crate (routing's `Tracking`, `MockHost`, the collection chain's `MemberHost`): a wrapper
/// states only what it changes. A wrapper that must change another call gets a hook here, so
/// the list stays one.
pub trait HostWrapper {
    /// The host every call goes to.
    fn inner(&self) -> &dyn Host;

    /// A callout (HTTP or gRPC) just went out through this host with `token`.
    fn on_callout(&self, _token: u32) {}

    /// A property the wrapper answers itself (a chain member's own `plugin_name`); `None` forwards.
    fn property_override(&self, _path: &[&str]) -> Option<Vec<u8>> {
        None
    }

    /// A local reply is about to go out: the request is answered even if the host refuses it.
    fn before_local_response(&self) {}

    /// `false`: resuming fails without reaching the host (a chain member; the chain resumes).
    fn may_resume(&self) -> bool {
        true
    }

    /// A tick period the wrapper sets itself (a chain member root's, merged); `None` forwards.
    fn tick_period_override(&self, _period: Duration) -> Option<Result<(), HostError>> {
        None
    }
}

impl<W: HostWrapper> Host for W {
    fn now(&self) -> SystemTime {
        self.inner().now()
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.inner().log(level, message)
    }
    fn log_level(&self) -> LogLevel {
        self.inner().log_level()
    }
    fn header(&self, map: HeaderMapKind, name: &str) -> Option<Vec<u8>> {
        self.inner().header(map, name)
    }
    fn headers(&self, map: HeaderMapKind) -> Vec<(String, Vec<u8>)> {
        self.inner().headers(map)
    }
    fn header_pairs(&self, map: HeaderMapKind) -> HeaderPairs {
        self.inner().header_pairs(map)
    }
    fn set_header(&self, map: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.inner().set_header(map, name, value)
    }
    fn add_header(&self, map: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.inner().add_header(map, name, value)
    }
    fn remove_header(&self, map: HeaderMapKind, name: &str) -> Result<(), HostError> {
        self.inner().remove_header(map, name)
    }
    fn body(&self, body: BodyKind, start: usize, max_size: usize) -> Option<Vec<u8>> {
        self.inner().body(body, start, max_size)
    }
    fn send_local_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        self.before_local_response();
        self.inner().send_local_response(status, headers, body)
    }
    fn resume_request(&self) -> Result<(), HostError> {
        if !self.may_resume() {
            return Err(HostError::Failure);
        }
        self.inner().resume_request()
    }
    fn resume_response(&self) -> Result<(), HostError> {
        if !self.may_resume() {
            return Err(HostError::Failure);
        }
        self.inner().resume_response()
    }
    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        self.inner().set_effective_context(context_id)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.property_override(path).or_else(|| self.inner().property(path))
    }
    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        self.inner().set_property(path, value)
    }
    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.inner().shared_data(key)
    }
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        self.inner().set_shared_data(key, value, cas)
    }
    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let token = self.inner().dispatch_http_call(cluster, headers, body, timeout)?;
        self.on_callout(token);
        Ok(token)
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
        let token = self.inner().dispatch_grpc_call(cluster, service, method, initial_metadata, message, timeout)?;
        self.on_callout(token);
        Ok(token)
    }
    fn call_status(&self) -> Result<(u32, Vec<u8>), HostError> {
        self.inner().call_status()
    }
    fn set_headers(&self, map: HeaderMapKind, pairs: &[(&str, &[u8])]) -> Result<(), HostError> {
        self.inner().set_headers(map, pairs)
    }
    fn random(&self, buf: &mut [u8]) -> Result<(), HostError> {
        self.inner().random(buf)
    }
    fn wake(&self, context_id: u32) -> Result<(), HostError> {
        self.inner().wake(context_id)
    }
    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        self.tick_period_override(period).unwrap_or_else(|| self.inner().set_tick_period(period))
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        self.inner().define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, delta: i64) {
        self.inner().increment_metric(id, delta)
    }
    fn record_metric(&self, id: u32, value: u64) {
        self.inner().record_metric(id, value)
    }
}

/// Convenience readers on top of [`Host`].
pub trait HostExt: Host {
    /// A header as text; `None` when absent or not valid UTF-8.
    fn header_str(&self, map: HeaderMapKind, name: &str) -> Option<String> {
        self.header(map, name).and_then(|v| String::from_utf8(v).ok())
    }
    fn request_header(&self, name: &str) -> Option<String> {
        self.header_str(HeaderMapKind::RequestHeaders, name)
    }
    fn response_header(&self, name: &str) -> Option<String> {
        self.header_str(HeaderMapKind::ResponseHeaders, name)
    }
    /// Log with the message built only when the level is enabled.
    fn log_with(&self, level: LogLevel, message: impl FnOnce() -> String) {
        if level >= self.log_level() {
            self.log(level, &message());
        }
    }
}

impl<H: Host + ?Sized> HostExt for H {}
