//! The proxy-wasm ABI (0.2.1: what proxy-wasm Rust SDK 0.2.5 and Envoy 1.36–1.40 speak) as
//! this crate calls it. Every host function `shared` uses is declared here and wrapped so that
//! every status the host can return becomes a `Result<_, HostError>`: nothing here unwraps,
//! panics or indexes out of bounds.
//!
//! Why not the SDK's `proxy_wasm::hostcalls`:
//! - its wrappers `panic!` on any status they do not expect (`set_property`, `remove_map_value`,
//!   `get_shared_data`, … every one of them), which traps the VM;
//! - its `String` getters and `get_map_bytes` unwrap UTF-8 (header names included);
//! - its imports are declared to return a Rust enum (`Status`, `LogLevel`) that lacks values the
//!   host does return (`InvalidMemoryAccess` = 6; Envoy's log level `off` = 6): reading one is
//!   undefined behaviour. The imports here return plain integers.
//!
//! The imports are declared with the SDK's signatures (the same wasm types), so both sets of
//! declarations name the same host functions and coexist in one module.
//!
//! The modules no longer link the SDK at all: the entry points Envoy calls are
//! `shared::exports`'s, and a callout's token is filed there under the context that made it.
//!
//! Host-side limits (proxy-wasm-cpp-host, which Envoy embeds) are enforced before a call:
//! a pairs buffer (headers, metadata) of more than [`MAX_PAIRS`] pairs or [`MAX_PAIRS_BYTES`]
//! bytes is read by the host as *no pairs at all*: `set_header_map_pairs` would then clear the
//! whole map and report success. [`serialize_pairs`] refuses such a list instead.
//!
//! All the crate's `unsafe` is in this module (`shared` denies it elsewhere), one block per
//! host call, each with its SAFETY argument. The encoding helpers (pairs, property paths,
//! statuses) are plain Rust and tested natively; the host calls exist on wasm only.

use crate::host::{HostError, LogLevel};
use std::time::Duration;

/// Most pairs the host accepts in one pairs buffer (proxy-wasm-cpp-host
/// `PROXY_WASM_HOST_PAIRS_MAX_COUNT`). Beyond it the host reads the buffer as empty.
pub const MAX_PAIRS: usize = 1024;
/// Largest pairs buffer the host accepts (`PROXY_WASM_HOST_PAIRS_MAX_BYTES`, 1 MiB).
pub const MAX_PAIRS_BYTES: usize = 1024 * 1024;
/// Largest `random_get` the host serves in one call (`PROXY_WASM_HOST_WASI_RANDOM_GET_MAX_SIZE_BYTES`).
pub const MAX_RANDOM_CHUNK: usize = 64 * 1024;
/// Longest cluster name [`grpc_service`] encodes (both protobuf lengths stay one byte, so the
/// encoding is ASCII).
pub const MAX_GRPC_CLUSTER_LEN: usize = 125;

/// Which buffer a host call reads (proxy-wasm `proxy_buffer_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum BufferType {
    HttpRequestBody = 0,
    HttpResponseBody = 1,
    DownstreamData = 2,
    UpstreamData = 3,
    HttpCallResponseBody = 4,
    GrpcReceiveBuffer = 5,
    VmConfiguration = 6,
    PluginConfiguration = 7,
    CallData = 8,
}

/// Which header map a host call addresses (proxy-wasm `proxy_map_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MapType {
    HttpRequestHeaders = 0,
    HttpRequestTrailers = 1,
    HttpResponseHeaders = 2,
    HttpResponseTrailers = 3,
    GrpcReceiveInitialMetadata = 4,
    GrpcReceiveTrailingMetadata = 5,
    HttpCallResponseHeaders = 6,
    HttpCallResponseTrailers = 7,
}

/// Which direction of a stream `continue_stream` / `close_stream` address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum StreamType {
    HttpRequest = 0,
    HttpResponse = 1,
    Downstream = 2,
    Upstream = 3,
}

/// A metric's kind (proxy-wasm `proxy_metric_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

/// The ABI's status codes (proxy-wasm spec `proxy_status_t`).
pub mod status {
    pub const OK: u32 = 0;
    pub const NOT_FOUND: u32 = 1;
    pub const BAD_ARGUMENT: u32 = 2;
    pub const SERIALIZATION_FAILURE: u32 = 3;
    pub const PARSE_FAILURE: u32 = 4;
    pub const UNIMPLEMENTED: u32 = 5;
    pub const INVALID_MEMORY_ACCESS: u32 = 6;
    pub const EMPTY: u32 = 7;
    pub const CAS_MISMATCH: u32 = 8;
    pub const INTERNAL_FAILURE: u32 = 10;
}

/// A host status as a `Result`. `NotFound`, `BadArgument` and `CasMismatch` keep their
/// meaning; every other non-zero status (including ones no ABI version defines) is `Failure`.
/// Wrappers for which `NotFound` means "absent" turn it into `Ok(None)` first.
pub fn check(raw: u32) -> Result<(), HostError> {
    match raw {
        status::OK => Ok(()),
        status::NOT_FOUND => Err(HostError::NotFound),
        status::BAD_ARGUMENT => Err(HostError::BadArgument),
        status::CAS_MISMATCH => Err(HostError::CasMismatch),
        _ => Err(HostError::Failure),
    }
}

/// The host's log level. Envoy answers with spdlog's levels, which go one further than the
/// ABI's: `off` (6) and anything unknown read as `Critical`, the level that logs least.
pub fn log_level_from(raw: u32) -> LogLevel {
    match raw {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => LogLevel::Critical,
    }
}

pub fn log_level_to(level: LogLevel) -> u32 {
    match level {
        LogLevel::Trace => 0,
        LogLevel::Debug => 1,
        LogLevel::Info => 2,
        LogLevel::Warn => 3,
        LogLevel::Error => 4,
        LogLevel::Critical => 5,
    }
}

/// A name/value pair borrowed from a pairs buffer.
pub type Pair<'a> = (&'a [u8], &'a [u8]);
/// An owned name/value pair, both bytes.
pub type OwnedPair = (Vec<u8>, Vec<u8>);

fn read_u32_le(buf: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(bytes)).ok()
}

/// `len` bytes at `*at`, which must be followed by a NUL; moves `*at` past the NUL.
fn nul_terminated<'a>(buf: &'a [u8], at: &mut usize, len: usize) -> Option<&'a [u8]> {
    let end = at.checked_add(len)?;
    let bytes = buf.get(*at..end)?;
    if *buf.get(end)? != 0 {
        return None;
    }
    *at = end.checked_add(1)?;
    Some(bytes)
}

/// Decode a pairs buffer as the host writes it (`proxy_get_header_map_pairs`): a little-endian
/// `u32` count N, N pairs of `u32` lengths (name, value), then each name and value followed by
/// a NUL. Every length is bounds-checked; a buffer that is truncated, has a missing NUL or
/// trailing bytes is an error (`Failure`), never a trap. Names and values are returned as
/// bytes: nothing here assumes UTF-8. An empty buffer is an empty map.
pub fn parse_pairs(buf: &[u8]) -> Result<Vec<Pair<'_>>, HostError> {
    const MALFORMED: HostError = HostError::Failure;
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    let count = read_u32_le(buf, 0).ok_or(MALFORMED)?;
    // The size table must fit, which also bounds `count` by the buffer's length before any
    // allocation depends on it.
    let mut at = count.checked_mul(8).and_then(|n| n.checked_add(4)).filter(|&n| n <= buf.len()).ok_or(MALFORMED)?;
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let sizes = 4 + 8 * i;
        let name_len = read_u32_le(buf, sizes).ok_or(MALFORMED)?;
        let value_len = read_u32_le(buf, sizes + 4).ok_or(MALFORMED)?;
        let name = nul_terminated(buf, &mut at, name_len).ok_or(MALFORMED)?;
        let value = nul_terminated(buf, &mut at, value_len).ok_or(MALFORMED)?;
        pairs.push((name, value));
    }
    if at != buf.len() {
        return Err(MALFORMED);
    }
    Ok(pairs)
}

/// The size of the pairs buffer for `pairs`; `BadArgument` when the host would not read it:
/// more than [`MAX_PAIRS`] pairs or more than [`MAX_PAIRS_BYTES`] bytes (the host would
/// silently see no pairs at all).
pub fn pairs_size<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Result<usize, HostError> {
    if pairs.len() > MAX_PAIRS {
        return Err(HostError::BadArgument);
    }
    let mut size: usize = 4 + 8 * pairs.len();
    for (name, value) in pairs {
        size = size
            .checked_add(name.as_ref().len())
            .and_then(|s| s.checked_add(value.as_ref().len()))
            .and_then(|s| s.checked_add(2))
            .ok_or(HostError::BadArgument)?;
    }
    if size > MAX_PAIRS_BYTES {
        return Err(HostError::BadArgument);
    }
    Ok(size)
}

/// Encode pairs for the host (`set_header_map_pairs`, `send_local_response`, gRPC metadata);
/// refused as [`pairs_size`] says. Every length fits a `u32` (the total is at most 1 MiB).
pub fn serialize_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Result<Vec<u8>, HostError> {
    let size = pairs_size(pairs)?;
    let len32 = |n: usize| (n as u32).to_le_bytes();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len32(pairs.len()));
    for (name, value) in pairs {
        out.extend_from_slice(&len32(name.as_ref().len()));
        out.extend_from_slice(&len32(value.as_ref().len()));
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_ref());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    Ok(out)
}

/// A property path as the host reads it: the segments joined by NUL. A segment containing a
/// NUL would change the path's segmentation: `BadArgument`.
pub fn property_path(path: &[&str]) -> Result<Vec<u8>, HostError> {
    let mut out = Vec::with_capacity(path.iter().map(|segment| segment.len() + 1).sum());
    for (i, segment) in path.iter().enumerate() {
        if segment.as_bytes().contains(&0) {
            return Err(HostError::BadArgument);
        }
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(segment.as_bytes());
    }
    Ok(out)
}

/// The `grpc_service` argument of a gRPC call, as a serialized `envoy.config.core.v3.GrpcService`
/// `{ envoy_grpc: { cluster_name: cluster } }`, never as a bare cluster name.
///
/// Envoy first tries to parse that argument as a serialized `GrpcService` and only then as a
/// cluster name, so a bare name that happens to be well-formed protobuf (`"hx"`: field 13, varint;
/// any 9-byte name starting with `a`: field 12, fixed64) is read as a `GrpcService` with no
/// target at all. Encoding the message ourselves removes that ambiguity. Empty names and names
/// longer than [`MAX_GRPC_CLUSTER_LEN`] bytes are refused (`BadArgument`).
pub fn grpc_service(cluster: &str) -> Result<String, HostError> {
    let len = cluster.len();
    if len == 0 || len > MAX_GRPC_CLUSTER_LEN {
        return Err(HostError::BadArgument);
    }
    // Field 1 (envoy_grpc), length-delimited, holding field 1 (cluster_name), length-delimited.
    // Both lengths are below 128: single-byte varints, ASCII.
    let inner = len as u8;
    let outer = inner + 2;
    let mut out = String::with_capacity(len + 4);
    out.push('\n');
    out.push(char::from(outer));
    out.push('\n');
    out.push(char::from(inner));
    out.push_str(cluster);
    Ok(out)
}

/// A callout timeout in whole milliseconds, at most `i32::MAX`: Envoy reads the HTTP-call
/// timeout as a signed `int` (larger values would be refused as negative), and the SDK
/// truncates the duration to `u32` (a huge timeout would wrap to a tiny one).
pub fn callout_timeout(timeout: Duration) -> Duration {
    const MAX: Duration = Duration::from_millis(i32::MAX as u64);
    timeout.min(MAX)
}

/// The tick period in milliseconds the host expects, saturating (the SDK truncates to `u32`,
/// so a huge period would wrap to a short one).
pub fn tick_period_ms(period: Duration) -> u32 {
    u32::try_from(period.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(target_arch = "wasm32")]
pub use host_calls::*;

/// The host calls (wasm only: the imports exist only in a proxy-wasm host).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod host_calls {
    use super::{callout_timeout, check, grpc_service, log_level_from, log_level_to, property_path, serialize_pairs};
    use super::{parse_pairs, status, tick_period_ms, OwnedPair, MAX_RANDOM_CHUNK};
    use super::{BufferType, MapType, MetricType, StreamType};
    use crate::host::{HostError, LogLevel};
    use std::ptr::{null, null_mut};
    use std::time::Duration;

    // SAFETY: these are the proxy-wasm ABI 0.2.1 host functions with the signatures of the spec
    // and of the SDK's own declarations (same wasm types: enums there are `u32` here, `Status`
    // there is the raw `u32` here so no status value can be invalid). The functions without
    // pointer arguments are declared `safe`: any integer is a valid argument and the host
    // answers with a status.
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
        fn proxy_get_log_level(return_level: *mut u32) -> u32;
        fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
        safe fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_buffer_data: *mut *mut u8,
            return_buffer_size: *mut usize,
        ) -> u32;
        fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize)
            -> u32;
        fn proxy_set_header_map_pairs(map_type: u32, map_data: *const u8, map_size: usize) -> u32;
        fn proxy_get_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        fn proxy_replace_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        fn proxy_add_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
        fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
        fn proxy_get_shared_data(
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
            return_cas: *mut u32,
        ) -> u32;
        fn proxy_set_shared_data(
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
            cas: u32,
        ) -> u32;
        safe fn proxy_continue_stream(stream_type: u32) -> u32;
        safe fn proxy_close_stream(stream_type: u32) -> u32;
        fn proxy_send_local_response(
            status_code: u32,
            status_code_details_data: *const u8,
            status_code_details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        safe fn proxy_set_effective_context(context_id: u32) -> u32;
        fn proxy_get_status(
            return_code: *mut u32,
            return_message_data: *mut *mut u8,
            return_message_size: *mut usize,
        ) -> u32;
        fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
        safe fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
        safe fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
        fn proxy_http_call(
            upstream_data: *const u8,
            upstream_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            body_data: *const u8,
            body_size: usize,
            trailers_data: *const u8,
            trailers_size: usize,
            timeout_milliseconds: u32,
            return_token: *mut u32,
        ) -> u32;
        fn proxy_grpc_call(
            service_data: *const u8,
            service_size: usize,
            service_name_data: *const u8,
            service_name_size: usize,
            method_name_data: *const u8,
            method_name_size: usize,
            initial_metadata_data: *const u8,
            initial_metadata_size: usize,
            message_data: *const u8,
            message_size: usize,
            timeout_milliseconds: u32,
            return_token: *mut u32,
        ) -> u32;
    }

    // SAFETY: the linker-generated function that runs a reactor module's static constructors;
    // no arguments, no result.
    unsafe extern "C" {
        fn __wasm_call_ctors();
    }

    /// Run the module's static constructors: the first thing `_initialize` does (as the SDK's
    /// `main!` did).
    pub fn call_ctors() {
        // SAFETY: called once, from `_initialize`, before any other code of the module runs.
        unsafe { __wasm_call_ctors() }
    }

    // SAFETY: WASI preview 1 `random_get(buf, buf_len) -> errno`, the signature Rust's own
    // standard library declares for this import.
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        fn random_get(buf: *mut u8, buf_len: usize) -> u32;
    }

    /// Run a host call that returns a buffer it allocated in this module's memory, and take
    /// ownership of that buffer when the call succeeds. `None`: success without data (the host
    /// writes a null pointer for an empty value).
    ///
    /// # Safety
    /// `call` must be a proxy-wasm host call that, on `Ok`, stores in its two arguments either
    /// a null pointer or a pointer to `size` bytes it obtained from this module's
    /// `proxy_on_memory_allocate(size)` and hands over (every buffer-returning call of the ABI).
    unsafe fn with_host_buffer(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> (u32, Option<Vec<u8>>) {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        let raw = call(&mut data, &mut size);
        if raw != status::OK || data.is_null() {
            // On failure the host allocated nothing (it allocates only once it has the value);
            // a stray pointer is leaked rather than freed with a guessed layout.
            return (raw, None);
        }
        // SAFETY: per this function's contract, `data` points to `size` initialized bytes the
        // host got from `proxy_on_memory_allocate(size)`, and nothing else owns them. The SDK's
        // allocator (the module's only one) makes that a `Box<[u8]>` of exactly `size` bytes
        // from the global allocator with alignment 1, which is what `Vec::from_raw_parts(data,
        // size, size)` frees on drop. A zero-size allocation is a dangling, never-freed pointer,
        // which `from_raw_parts` with capacity 0 accepts.
        (raw, Some(unsafe { Vec::from_raw_parts(data, size, size) }))
    }

    pub fn log(level: LogLevel, message: &str) -> Result<(), HostError> {
        // SAFETY: the message pointer and length describe a live `&str` for the call's duration.
        check(unsafe { proxy_log(log_level_to(level), message.as_ptr(), message.len()) })
    }

    pub fn log_level() -> Result<LogLevel, HostError> {
        let mut level: u32 = 0;
        // SAFETY: `level` is a live `u32` the host writes.
        check(unsafe { proxy_get_log_level(&mut level) })?;
        Ok(log_level_from(level))
    }

    pub fn current_time_nanos() -> Result<u64, HostError> {
        let mut nanos: u64 = 0;
        // SAFETY: `nanos` is a live `u64` the host writes.
        check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
        Ok(nanos)
    }

    /// `Duration::ZERO` stops the timer; periods beyond `u32::MAX` ms saturate.
    pub fn set_tick_period(period: Duration) -> Result<(), HostError> {
        check(proxy_set_tick_period_milliseconds(tick_period_ms(period)))
    }

    /// Up to `max_size` bytes of a buffer from `start`. `Ok(None)`: the buffer is absent
    /// (`NotFound`) or empty.
    pub fn buffer(kind: BufferType, start: usize, max_size: usize) -> Result<Option<Vec<u8>>, HostError> {
        // SAFETY: `proxy_get_buffer_bytes` returns a host-allocated buffer as `with_host_buffer`
        // requires.
        let (raw, data) =
            unsafe { with_host_buffer(|data, size| proxy_get_buffer_bytes(kind as u32, start, max_size, data, size)) };
        match raw {
            status::NOT_FOUND => Ok(None),
            raw => check(raw).map(|()| data),
        }
    }

    /// Every pair of a header map, in order, as bytes. A malformed buffer from the host is
    /// `Failure`; a map that does not exist in this phase is whatever the host answers (Envoy:
    /// an empty map).
    pub fn header_map_pairs(map: MapType) -> Result<Vec<OwnedPair>, HostError> {
        // SAFETY: `proxy_get_header_map_pairs` returns a host-allocated buffer as
        // `with_host_buffer` requires.
        let (raw, data) = unsafe { with_host_buffer(|data, size| proxy_get_header_map_pairs(map as u32, data, size)) };
        check(raw)?;
        let Some(data) = data else { return Ok(Vec::new()) };
        Ok(parse_pairs(&data)?.into_iter().map(|(name, value)| (name.to_vec(), value.to_vec())).collect())
    }

    /// A header map's pairs buffer as the host wrote it (see [`parse_pairs`]); empty when the
    /// host returned none.
    pub fn header_map_buffer(map: MapType) -> Result<Vec<u8>, HostError> {
        // SAFETY: `proxy_get_header_map_pairs` returns a host-allocated buffer as
        // `with_host_buffer` requires.
        let (raw, data) = unsafe { with_host_buffer(|data, size| proxy_get_header_map_pairs(map as u32, data, size)) };
        check(raw)?;
        Ok(data.unwrap_or_default())
    }

    /// Replace the whole map with `pairs`, in order (Envoy removes every entry, adds these and,
    /// for request headers, clears the route cache). `BadArgument` beyond the host's pairs limits.
    pub fn set_header_map_pairs(map: MapType, pairs: &[(&str, &[u8])]) -> Result<(), HostError> {
        let data = serialize_pairs(pairs)?;
        // SAFETY: the pointer and length describe `data`, live for the call's duration.
        check(unsafe { proxy_set_header_map_pairs(map as u32, data.as_ptr(), data.len()) })
    }

    /// The first value of `name`; `Ok(None)` when absent.
    pub fn header_map_value(map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        // SAFETY: the key describes a live `&str`; `proxy_get_header_map_value` returns a
        // host-allocated buffer as `with_host_buffer` requires.
        let (raw, data) = unsafe {
            with_host_buffer(|data, size| proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), data, size))
        };
        match raw {
            status::NOT_FOUND => Ok(None),
            raw => check(raw).map(|()| Some(data.unwrap_or_default())),
        }
    }

    pub fn replace_header_map_value(map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
        // SAFETY: both pointer/length pairs describe live borrows for the call's duration.
        check(unsafe {
            proxy_replace_header_map_value(map as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len())
        })
    }

    pub fn add_header_map_value(map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
        // SAFETY: both pointer/length pairs describe live borrows for the call's duration.
        check(unsafe { proxy_add_header_map_value(map as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
    }

    pub fn remove_header_map_value(map: MapType, name: &str) -> Result<(), HostError> {
        // SAFETY: the key describes a live `&str` for the call's duration.
        check(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
    }

    /// `Ok(None)`: no such property, or an empty value.
    pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        let path = property_path(path)?;
        // SAFETY: the path describes a live buffer; `proxy_get_property` returns a
        // host-allocated buffer as `with_host_buffer` requires.
        let (raw, data) =
            unsafe { with_host_buffer(|data, size| proxy_get_property(path.as_ptr(), path.len(), data, size)) };
        match raw {
            status::NOT_FOUND => Ok(None),
            raw => check(raw).map(|()| data),
        }
    }

    pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), HostError> {
        let path = property_path(path)?;
        // SAFETY: both pointer/length pairs describe live buffers for the call's duration.
        check(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
    }

    /// Value and CAS token of a shared-data key; `(None, None)` when the key does not exist.
    pub fn shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        let mut cas: u32 = 0;
        // SAFETY: the key describes a live `&str`, `cas` a live `u32` the host writes;
        // `proxy_get_shared_data` returns a host-allocated buffer as `with_host_buffer` requires.
        let (raw, data) = unsafe {
            with_host_buffer(|data, size| proxy_get_shared_data(key.as_ptr(), key.len(), data, size, &mut cas))
        };
        match raw {
            status::NOT_FOUND => Ok((None, None)),
            raw => check(raw).map(|()| (data, (cas != 0).then_some(cas))),
        }
    }

    /// `cas: None` (or `Some(0)`) writes unconditionally; a stale token is `CasMismatch`.
    pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        // SAFETY: both pointer/length pairs describe live borrows for the call's duration.
        check(unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas.unwrap_or(0)) })
    }

    pub fn continue_stream(stream: StreamType) -> Result<(), HostError> {
        check(proxy_continue_stream(stream as u32))
    }

    pub fn close_stream(stream: StreamType) -> Result<(), HostError> {
        check(proxy_close_stream(stream as u32))
    }

    /// A local reply (not a gRPC one). `BadArgument` beyond the host's pairs limits, where the
    /// host would send the reply without any of the headers.
    pub fn send_local_response(status_code: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        let headers = serialize_pairs(headers)?;
        // SAFETY: the body and headers describe live buffers for the call's duration; no
        // details (null, 0).
        check(unsafe {
            proxy_send_local_response(
                status_code,
                null(),
                0,
                body.as_ptr(),
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        })
    }

    /// `BadArgument` when the context is gone.
    pub fn set_effective_context(context_id: u32) -> Result<(), HostError> {
        check(proxy_set_effective_context(context_id))
    }

    /// Status of the callout answer being delivered: code and message bytes (gRPC: the gRPC
    /// status and message; `0` and empty on success).
    pub fn call_status() -> Result<(u32, Vec<u8>), HostError> {
        let mut code: u32 = 0;
        // SAFETY: `code` is a live `u32` the host writes; `proxy_get_status` returns a
        // host-allocated buffer as `with_host_buffer` requires.
        let (raw, message) = unsafe { with_host_buffer(|data, size| proxy_get_status(&mut code, data, size)) };
        check(raw)?;
        Ok((code, message.unwrap_or_default()))
    }

    pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, HostError> {
        let mut id: u32 = 0;
        // SAFETY: the name describes a live `&str`, `id` a live `u32` the host writes.
        check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
        Ok(id)
    }

    pub fn increment_metric(id: u32, delta: i64) -> Result<(), HostError> {
        check(proxy_increment_metric(id, delta))
    }

    pub fn record_metric(id: u32, value: u64) -> Result<(), HostError> {
        check(proxy_record_metric(id, value))
    }

    /// Fill `buf` from the host's CSPRNG (WASI `random_get`; Envoy: BoringSSL `RAND_bytes`), in
    /// chunks the host accepts. Any errno is `Failure`.
    pub fn random(buf: &mut [u8]) -> Result<(), HostError> {
        for chunk in buf.chunks_mut(MAX_RANDOM_CHUNK) {
            // SAFETY: the pointer and length describe a live, writable slice for the call.
            let errno = unsafe { random_get(chunk.as_mut_ptr(), chunk.len()) };
            if errno != 0 {
                return Err(HostError::Failure);
            }
        }
        Ok(())
    }

    /// A callout's timeout in milliseconds, within what Envoy accepts ([`callout_timeout`]).
    fn timeout_ms(timeout: Duration) -> u32 {
        u32::try_from(callout_timeout(timeout).as_millis()).unwrap_or(u32::MAX)
    }

    /// An HTTP callout to an Envoy cluster; the answer goes to the context that made it
    /// ([`crate::exports`]). Too many or too large headers are refused here (`BadArgument`)
    /// rather than letting the host read them as none.
    pub fn dispatch_http_call(
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let headers = serialize_pairs(headers)?;
        // No trailers: an empty pairs list is its count, 0.
        let trailers = [0u8; 4];
        let (body_data, body_size) = body.map_or((null(), 0), |b| (b.as_ptr(), b.len()));
        let mut token: u32 = 0;
        // SAFETY: every pointer/length pair describes a live buffer (or is null with length 0)
        // for the call's duration; `token` is a live `u32` the host writes.
        check(unsafe {
            proxy_http_call(
                cluster.as_ptr(),
                cluster.len(),
                headers.as_ptr(),
                headers.len(),
                body_data,
                body_size,
                trailers.as_ptr(),
                trailers.len(),
                timeout_ms(timeout),
                &mut token,
            )
        })?;
        crate::exports::register_callout(token);
        Ok(token)
    }

    /// A unary gRPC callout. Envoy's `grpc_call` answers `BadArgument` when it cannot build a
    /// client for the service, which a bare cluster name can provoke (see [`grpc_service`]); the
    /// service is therefore always passed as an encoded `GrpcService` naming an Envoy cluster,
    /// for which Envoy builds the client without checks. An unknown cluster then fails the
    /// call with `InternalFailure` (`Failure` here).
    pub fn dispatch_grpc_call(
        cluster: &str,
        service: &str,
        method: &str,
        initial_metadata: &[(&str, &[u8])],
        message: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let grpc_service = grpc_service(cluster)?;
        let metadata = serialize_pairs(initial_metadata)?;
        let mut token: u32 = 0;
        // SAFETY: every pointer/length pair describes a live buffer for the call's duration;
        // `token` is a live `u32` the host writes.
        check(unsafe {
            proxy_grpc_call(
                grpc_service.as_ptr(),
                grpc_service.len(),
                service.as_ptr(),
                service.len(),
                method.as_ptr(),
                method.len(),
                metadata.as_ptr(),
                metadata.len(),
                message.as_ptr(),
                message.len(),
                timeout_ms(timeout),
                &mut token,
            )
        })?;
        crate::exports::register_callout(token);
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK's own serialization test vector (proxy-wasm 0.2.5, hostcalls::utils::tests).
    #[rustfmt::skip]
    const SERIALIZED: &[u8] = &[
        4, 0, 0, 0,
        7, 0, 0, 0, 3, 0, 0, 0,
        5, 0, 0, 0, 8, 0, 0, 0,
        10, 0, 0, 0, 11, 0, 0, 0,
        10, 0, 0, 0, 10, 0, 0, 0,
        b':', b'm', b'e', b't', b'h', b'o', b'd', 0, b'G', b'E', b'T', 0,
        b':', b'p', b'a', b't', b'h', 0, b'/', b'b', b'y', b't', b'e', b's', b'/', b'1', 0,
        b':', b'a', b'u', b't', b'h', b'o', b'r', b'i', b't', b'y', 0,
        b'h', b't', b't', b'p', b'b', b'i', b'n', b'.', b'o', b'r', b'g', 0,
        b'P', b'o', b'w', b'e', b'r', b'e', b'd', b'-', b'B', b'y', 0,
        b'p', b'r', b'o', b'x', b'y', b'-', b'w', b'a', b's', b'm', 0,
    ];
    const PAIRS: &[(&str, &str)] =
        &[(":method", "GET"), (":path", "/bytes/1"), (":authority", "httpbin.org"), ("Powered-By", "proxy-wasm")];

    #[test]
    fn pairs_match_the_sdk_encoding_both_ways() {
        assert_eq!(serialize_pairs(PAIRS).unwrap(), SERIALIZED);
        let parsed = parse_pairs(SERIALIZED).unwrap();
        let expected: Vec<(&[u8], &[u8])> = PAIRS.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn empty_maps() {
        assert_eq!(parse_pairs(&[]).unwrap(), vec![]);
        assert_eq!(parse_pairs(&[0, 0, 0, 0]).unwrap(), vec![]);
        let none: &[(&str, &str)] = &[];
        assert_eq!(serialize_pairs(none).unwrap(), [0, 0, 0, 0]);
    }

    #[test]
    fn any_bytes_round_trip_including_invalid_utf8_names_and_nul() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"x-odd".to_vec(), vec![0x80, 0xff, b' ', 0xc3]),
            (vec![0xff, 0xfe], b"name is not UTF-8".to_vec()),
            (b"x-rep".to_vec(), b"a".to_vec()),
            (b"x-rep".to_vec(), b"b".to_vec()),
            (b"empty".to_vec(), vec![]),
            (b"nul".to_vec(), vec![b'a', 0, b'b']),
        ];
        let buf = serialize_pairs(&pairs).unwrap();
        let parsed = parse_pairs(&buf).unwrap();
        assert_eq!(parsed.len(), pairs.len());
        for ((n, v), (pn, pv)) in pairs.iter().zip(&parsed) {
            assert_eq!((n.as_slice(), v.as_slice()), (*pn, *pv));
        }
    }

    #[test]
    fn every_truncation_and_every_corrupted_byte_is_an_error_or_a_clean_parse() {
        // Truncated anywhere: always an error (the NUL terminators and exact length catch it).
        for cut in 1..SERIALIZED.len() {
            assert_eq!(parse_pairs(&SERIALIZED[..cut]), Err(HostError::Failure), "cut at {cut}");
        }
        // Trailing bytes are refused too.
        let mut longer = SERIALIZED.to_vec();
        longer.push(0);
        assert_eq!(parse_pairs(&longer), Err(HostError::Failure));
        // Any single byte set to any value: never a panic, and a success stays within bounds.
        for at in 0..SERIALIZED.len() {
            for value in [0u8, 1, 3, 0x7f, 0x80, 0xff] {
                let mut buf = SERIALIZED.to_vec();
                buf[at] = value;
                if let Ok(pairs) = parse_pairs(&buf) {
                    let total: usize = pairs.iter().map(|(n, v)| n.len() + v.len() + 10).sum();
                    assert_eq!(total + 4, buf.len(), "byte {at} = {value}");
                }
            }
        }
    }

    #[test]
    fn lengths_beyond_the_buffer_are_errors_not_allocations() {
        // A count of u32::MAX must be refused before anything is sized by it.
        assert_eq!(parse_pairs(&[0xff, 0xff, 0xff, 0xff]), Err(HostError::Failure));
        assert_eq!(parse_pairs(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]), Err(HostError::Failure));
        // One pair whose name length is u32::MAX.
        let buf = [1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, b'a', 0, 0];
        assert_eq!(parse_pairs(&buf), Err(HostError::Failure));
        // A missing NUL terminator.
        let buf = [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, b'a', b'x', b'b', 0];
        assert_eq!(parse_pairs(&buf), Err(HostError::Failure));
        // Fewer than four bytes.
        assert_eq!(parse_pairs(&[1, 0]), Err(HostError::Failure));
    }

    #[test]
    fn serialization_refuses_what_the_host_would_read_as_no_pairs() {
        let at_limit: Vec<(String, &[u8])> = (0..MAX_PAIRS).map(|i| (format!("h{i}"), &b"v"[..])).collect();
        assert!(serialize_pairs(&at_limit).is_ok());
        let over: Vec<(String, &[u8])> = (0..=MAX_PAIRS).map(|i| (format!("h{i}"), &b"v"[..])).collect();
        assert_eq!(serialize_pairs(&over), Err(HostError::BadArgument));

        // Exactly MAX_PAIRS_BYTES is accepted, one byte more is not.
        let fixed = 4 + 8 + "big".len() + 2;
        let value = vec![b'v'; MAX_PAIRS_BYTES - fixed];
        assert_eq!(serialize_pairs(&[("big", value.as_slice())]).unwrap().len(), MAX_PAIRS_BYTES);
        let value = vec![b'v'; MAX_PAIRS_BYTES - fixed + 1];
        assert_eq!(serialize_pairs(&[("big", value.as_slice())]), Err(HostError::BadArgument));
    }

    #[test]
    fn statuses_map_to_host_errors() {
        assert_eq!(check(0), Ok(()));
        assert_eq!(check(1), Err(HostError::NotFound));
        assert_eq!(check(2), Err(HostError::BadArgument));
        assert_eq!(check(8), Err(HostError::CasMismatch));
        for other in [3, 4, 5, 6, 7, 9, 10, 11, 12, 1000, u32::MAX] {
            assert_eq!(check(other), Err(HostError::Failure), "{other}");
        }
    }

    #[test]
    fn log_levels_including_envoys_off() {
        for level in
            [LogLevel::Trace, LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error, LogLevel::Critical]
        {
            assert_eq!(log_level_from(log_level_to(level)), level);
        }
        assert_eq!(log_level_from(6), LogLevel::Critical, "spdlog off");
        assert_eq!(log_level_from(u32::MAX), LogLevel::Critical);
    }

    #[test]
    fn property_paths_are_nul_joined_and_nul_in_a_segment_is_refused() {
        assert_eq!(property_path(&["connection", "tls_version"]).unwrap(), b"connection\0tls_version");
        assert_eq!(property_path(&[]).unwrap(), b"");
        assert_eq!(property_path(&["a\0b"]), Err(HostError::BadArgument));
    }

    /// Decode what `grpc_service` writes with a minimal protobuf reader: field 1 (length-
    /// delimited) holding field 1 (length-delimited) = the cluster name.
    fn decode_envoy_grpc_cluster(bytes: &[u8]) -> Option<&[u8]> {
        let (&[tag, len], rest) = bytes.split_first_chunk::<2>()?;
        if tag != 0x0a || usize::from(len) != rest.len() {
            return None;
        }
        let (&[tag, len], name) = rest.split_first_chunk::<2>()?;
        (tag == 0x0a && usize::from(len) == name.len()).then_some(name)
    }

    #[test]
    fn grpc_service_is_an_encoded_envoy_grpc_message() {
        for name in ["hx", "a", "rate-limit-service", "outbound|50051||rls.istio-system.svc.cluster.local"] {
            let encoded = grpc_service(name).unwrap();
            assert!(encoded.is_ascii());
            assert_eq!(decode_envoy_grpc_cluster(encoded.as_bytes()), Some(name.as_bytes()), "{name}");
        }
        let longest = "c".repeat(MAX_GRPC_CLUSTER_LEN);
        assert_eq!(decode_envoy_grpc_cluster(grpc_service(&longest).unwrap().as_bytes()), Some(longest.as_bytes()));
        assert_eq!(grpc_service(&"c".repeat(MAX_GRPC_CLUSTER_LEN + 1)), Err(HostError::BadArgument));
        assert_eq!(grpc_service(""), Err(HostError::BadArgument));
    }

    #[test]
    fn timeouts_and_tick_periods_saturate_instead_of_wrapping() {
        assert_eq!(callout_timeout(Duration::from_millis(1500)), Duration::from_millis(1500));
        assert_eq!(callout_timeout(Duration::from_secs(u64::MAX)), Duration::from_millis(i32::MAX as u64));
        // The SDK's `as u32` would have turned 2^32 + 5 ms into 5 ms.
        assert_eq!(tick_period_ms(Duration::from_millis((1 << 32) + 5)), u32::MAX);
        assert_eq!(tick_period_ms(Duration::from_millis(250)), 250);
    }
}
