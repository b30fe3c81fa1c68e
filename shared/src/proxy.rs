//! The real host: [`Host`] over `proxy_wasm::hostcalls`, and the glue that registers a
//! [`RootFilter`] with the SDK. Compiled for wasm only.
//!
//! Only the `Result`-returning hostcalls are used, and only their byte variants: the SDK's
//! trait defaults `unwrap()`, and its `String` getters trap the VM on non-UTF-8 header bytes.

use crate::host::{BodyKind, HeaderMapKind, Host, HostError, LogLevel, MetricKind};
use crate::plugin::{Action, HttpFilter, RootFilter};
use crate::reply;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MapType, MetricType, Status};
use std::time::{Duration, SystemTime};

pub struct ProxyWasmHost;

fn map_type(map: HeaderMapKind) -> MapType {
    match map {
        HeaderMapKind::RequestHeaders => MapType::HttpRequestHeaders,
        HeaderMapKind::RequestTrailers => MapType::HttpRequestTrailers,
        HeaderMapKind::ResponseHeaders => MapType::HttpResponseHeaders,
        HeaderMapKind::ResponseTrailers => MapType::HttpResponseTrailers,
        HeaderMapKind::HttpCallResponseHeaders => MapType::HttpCallResponseHeaders,
    }
}

fn host_error(status: Status) -> HostError {
    match status {
        Status::CasMismatch => HostError::CasMismatch,
        Status::NotFound => HostError::NotFound,
        Status::BadArgument => HostError::BadArgument,
        _ => HostError::Failure,
    }
}

fn proxy_level(level: LogLevel) -> proxy_wasm::types::LogLevel {
    use proxy_wasm::types::LogLevel as L;
    match level {
        LogLevel::Trace => L::Trace,
        LogLevel::Debug => L::Debug,
        LogLevel::Info => L::Info,
        LogLevel::Warn => L::Warn,
        LogLevel::Error => L::Error,
        LogLevel::Critical => L::Critical,
    }
}

impl Host for ProxyWasmHost {
    fn now(&self) -> SystemTime {
        hostcalls::get_current_time().unwrap_or(SystemTime::UNIX_EPOCH)
    }

    fn log(&self, level: LogLevel, message: &str) {
        let _ = hostcalls::log(proxy_level(level), message);
    }

    fn log_level(&self) -> LogLevel {
        use proxy_wasm::types::LogLevel as L;
        match hostcalls::get_log_level() {
            Ok(L::Trace) => LogLevel::Trace,
            Ok(L::Debug) => LogLevel::Debug,
            Ok(L::Info) => LogLevel::Info,
            Ok(L::Warn) => LogLevel::Warn,
            Ok(L::Error) => LogLevel::Error,
            Ok(L::Critical) => LogLevel::Critical,
            Err(_) => LogLevel::Info,
        }
    }

    fn header(&self, map: HeaderMapKind, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(map_type(map), name).ok().flatten()
    }

    fn headers(&self, map: HeaderMapKind) -> Vec<(String, Vec<u8>)> {
        hostcalls::get_map_bytes(map_type(map)).unwrap_or_default()
    }

    fn set_header(&self, map: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        hostcalls::set_map_value_bytes(map_type(map), name, Some(value)).map_err(host_error)
    }

    fn add_header(&self, map: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        hostcalls::add_map_value_bytes(map_type(map), name, value).map_err(host_error)
    }

    fn remove_header(&self, map: HeaderMapKind, name: &str) -> Result<(), HostError> {
        hostcalls::remove_map_value(map_type(map), name).map_err(host_error)
    }

    fn body(&self, body: BodyKind, start: usize, max_size: usize) -> Option<Vec<u8>> {
        let buffer = match body {
            BodyKind::Request => BufferType::HttpRequestBody,
            BodyKind::Response => BufferType::HttpResponseBody,
            BodyKind::HttpCallResponse => BufferType::HttpCallResponseBody,
        };
        hostcalls::get_buffer(buffer, start, max_size).ok().flatten()
    }

    fn send_local_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        hostcalls::send_http_response(status, headers.to_vec(), Some(body)).map_err(host_error)
    }

    fn resume_request(&self) -> Result<(), HostError> {
        hostcalls::resume_http_request().map_err(host_error)
    }

    fn resume_response(&self) -> Result<(), HostError> {
        hostcalls::resume_http_response().map_err(host_error)
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        hostcalls::set_effective_context(context_id).map_err(host_error)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        hostcalls::set_property(path.to_vec(), Some(value)).map_err(host_error)
    }

    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        hostcalls::set_shared_data(key, Some(value), cas).map_err(host_error)
    }

    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, HostError> {
        hostcalls::dispatch_http_call(cluster, headers.to_vec(), body, vec![], timeout).map_err(host_error)
    }

    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        hostcalls::set_tick_period(period).map_err(host_error)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        hostcalls::define_metric(kind, name).map_err(host_error)
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        let _ = hostcalls::increment_metric(id, delta);
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }
}

/// Register `R` as this module's root context. Call from `proxy_wasm::main!`.
pub fn start<R: RootFilter + Default + 'static>() {
    install_panic_hook(R::NAME);
    proxy_wasm::set_root_context(new_root::<R>);
}

/// A panic should never happen (clippy denies the usual sources), but if one does the VM is
/// dead: say so loudly, with the filter's name, at critical.
fn install_panic_hook(name: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        let _ = hostcalls::log(
            proxy_wasm::types::LogLevel::Critical,
            &format!("{name}: panic, this VM can no longer serve requests: {info}"),
        );
    }));
}

fn new_root<R: RootFilter + Default + 'static>(_context_id: u32) -> Box<dyn RootContext> {
    Box::new(RootAdapter { filter: R::default() })
}

struct RootAdapter<R> {
    filter: R,
}

impl<R: RootFilter> Context for RootAdapter<R> {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, num_trailers: usize) {
        self.filter.on_http_call_response(&ProxyWasmHost, token, num_headers, body_size, num_trailers);
    }
}

impl<R: RootFilter + 'static> RootContext for RootAdapter<R> {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let host = ProxyWasmHost;
        let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten();
        match self.filter.configure(&host, raw.as_deref()) {
            Ok(()) => {
                host.log(LogLevel::Info, &format!("{} {}: configured", R::NAME, env!("CARGO_PKG_VERSION")));
                true
            }
            Err(e) => {
                host.log(LogLevel::Critical, &format!("{}: invalid configuration, refusing to start: {e}", R::NAME));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.filter.on_tick(&ProxyWasmHost);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // The SDK panics on `None`: always hand back a context.
        match self.filter.new_http_filter(context_id) {
            Some(f) => Some(Box::new(HttpAdapter { filter: f })),
            None => Some(Box::new(Unconfigured { name: R::NAME })),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct HttpAdapter<F> {
    filter: F,
}

impl<F: HttpFilter> Context for HttpAdapter<F> {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, num_trailers: usize) {
        self.filter.on_http_call_response(&ProxyWasmHost, token, num_headers, body_size, num_trailers);
    }
}

impl<F: HttpFilter> HttpContext for HttpAdapter<F> {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.filter.on_request_headers(&ProxyWasmHost, end_of_stream)
    }
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.filter.on_request_body(&ProxyWasmHost, body_size, end_of_stream)
    }
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.filter.on_request_trailers(&ProxyWasmHost)
    }
    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.filter.on_response_headers(&ProxyWasmHost, end_of_stream)
    }
    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.filter.on_response_body(&ProxyWasmHost, body_size, end_of_stream)
    }
    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.filter.on_response_trailers(&ProxyWasmHost)
    }
    fn on_log(&mut self) {
        self.filter.on_log(&ProxyWasmHost);
    }
}

/// Serves when the plugin has no valid configuration: fail closed, never half-applied.
struct Unconfigured {
    name: &'static str,
}

impl Context for Unconfigured {}

impl HttpContext for Unconfigured {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let host = ProxyWasmHost;
        let body = format!("{}: filter is not configured", self.name);
        if reply::send_text(&host, 503, &body, &[]).is_err() {
            // Never let the request through unfiltered.
            let _ = hostcalls::reset_http_request();
        }
        Action::Pause
    }
}
