//! The real host: [`Host`] over `proxy_wasm::hostcalls`. Compiled for wasm only; the SDK glue
//! that drives a [`crate::RootFilter`] is in [`crate::glue`].
//!
//! Only the `Result`-returning hostcalls are used, and only their byte variants: the SDK's
//! trait defaults `unwrap()`, and its `String` getters trap the VM on non-UTF-8 header bytes.

use crate::host::{BodyKind, HeaderMapKind, Host, HostError, LogLevel, MetricKind};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType, Status};
use std::time::{Duration, SystemTime};

pub struct ProxyWasmHost;

fn map_type(map: HeaderMapKind) -> MapType {
    match map {
        HeaderMapKind::RequestHeaders => MapType::HttpRequestHeaders,
        HeaderMapKind::RequestTrailers => MapType::HttpRequestTrailers,
        HeaderMapKind::ResponseHeaders => MapType::HttpResponseHeaders,
        HeaderMapKind::ResponseTrailers => MapType::HttpResponseTrailers,
        HeaderMapKind::HttpCallResponseHeaders => MapType::HttpCallResponseHeaders,
        HeaderMapKind::GrpcReceiveInitialMetadata => MapType::GrpcReceiveInitialMetadata,
        HeaderMapKind::GrpcReceiveTrailingMetadata => MapType::GrpcReceiveTrailingMetadata,
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
            BodyKind::GrpcReceive => BufferType::GrpcReceiveBuffer,
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

    fn wake(&self, context_id: u32) -> Result<(), HostError> {
        crate::glue::wake(context_id);
        Ok(())
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
