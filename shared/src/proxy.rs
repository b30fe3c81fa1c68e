//! The real host: [`Host`] over the proxy-wasm ABI through [`crate::abi`], whose wrappers turn
//! every host status into a `Result` (the SDK's own `hostcalls` panic on unexpected statuses and
//! unwrap UTF-8). Compiled for wasm only; the glue that drives a [`crate::RootFilter`] is in
//! [`crate::glue`].

use crate::abi;
use crate::abi::{BufferType, MapType, MetricType, StreamType};
use crate::headers::HeaderPairs;
use crate::host::{BodyKind, HeaderMapKind, Host, HostError, LogLevel, MetricKind};
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

impl Host for ProxyWasmHost {
    /// One host call per callback: later reads in the same callback (the chain's next filter)
    /// get the same time.
    fn now(&self) -> SystemTime {
        crate::exports::callback_time(|| abi::current_time_nanos().ok())
            .map_or(SystemTime::UNIX_EPOCH, |nanos| SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
    }

    fn log(&self, level: LogLevel, message: &str) {
        let _ = abi::log(level, message);
    }

    fn log_level(&self) -> LogLevel {
        abi::log_level().unwrap_or(LogLevel::Info)
    }

    fn header(&self, map: HeaderMapKind, name: &str) -> Option<Vec<u8>> {
        abi::header_map_value(map_type(map), name).ok().flatten()
    }

    /// Names are text in this API. Envoy's codecs only admit token characters in names, so a
    /// name that is not UTF-8 cannot arrive over HTTP; should a host produce one anyway, its
    /// non-ASCII bytes read as U+FFFD rather than trapping or dropping the header.
    fn headers(&self, map: HeaderMapKind) -> Vec<(String, Vec<u8>)> {
        abi::header_map_pairs(map_type(map))
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| {
                let name = String::from_utf8(name).unwrap_or_else(|e| {
                    e.as_bytes()
                        .iter()
                        .map(|&b| if b.is_ascii() { char::from(b) } else { char::REPLACEMENT_CHARACTER })
                        .collect()
                });
                (name, value)
            })
            .collect()
    }

    fn header_pairs(&self, map: HeaderMapKind) -> HeaderPairs {
        HeaderPairs::from_buffer(abi::header_map_buffer(map_type(map)).unwrap_or_default())
    }

    fn set_header(&self, map: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        abi::replace_header_map_value(map_type(map), name, value)
    }

    fn add_header(&self, map: HeaderMapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        abi::add_header_map_value(map_type(map), name, value)
    }

    fn remove_header(&self, map: HeaderMapKind, name: &str) -> Result<(), HostError> {
        abi::remove_header_map_value(map_type(map), name)
    }

    fn set_headers(&self, map: HeaderMapKind, pairs: &[(&str, &[u8])]) -> Result<(), HostError> {
        abi::set_header_map_pairs(map_type(map), pairs)
    }

    fn body(&self, body: BodyKind, start: usize, max_size: usize) -> Option<Vec<u8>> {
        let buffer = match body {
            BodyKind::Request => BufferType::HttpRequestBody,
            BodyKind::Response => BufferType::HttpResponseBody,
            BodyKind::HttpCallResponse => BufferType::HttpCallResponseBody,
            BodyKind::GrpcReceive => BufferType::GrpcReceiveBuffer,
        };
        abi::buffer(buffer, start, max_size).ok().flatten()
    }

    fn send_local_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        abi::send_local_response(status, headers, body)
    }

    fn resume_request(&self) -> Result<(), HostError> {
        abi::continue_stream(StreamType::HttpRequest)
    }

    fn resume_response(&self) -> Result<(), HostError> {
        abi::continue_stream(StreamType::HttpResponse)
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        abi::set_effective_context(context_id)?;
        // The host files a callout under the effective context: so do the entry points.
        crate::exports::set_active(context_id);
        Ok(())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        abi::property(path).ok().flatten()
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        abi::set_property(path, value)
    }

    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        abi::shared_data(key).unwrap_or((None, None))
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        abi::set_shared_data(key, value, cas)
    }

    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, HostError> {
        abi::dispatch_http_call(cluster, headers, body, timeout)
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
        abi::dispatch_grpc_call(cluster, service, method, initial_metadata, message, timeout)
    }

    fn call_status(&self) -> Result<(u32, Vec<u8>), HostError> {
        abi::call_status()
    }

    fn random(&self, buf: &mut [u8]) -> Result<(), HostError> {
        abi::random(buf)
    }

    fn wake(&self, context_id: u32) -> Result<(), HostError> {
        crate::glue::wake(context_id);
        Ok(())
    }

    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        abi::set_tick_period(period)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        abi::define_metric(kind, name)
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        let _ = abi::increment_metric(id, delta);
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = abi::record_metric(id, value);
    }
}
