//! The utility crate every filter in this collection builds on.
//!
//! The one rule: filter logic never calls the proxy-wasm host directly. It talks to [`Host`],
//! which has a real implementation over the proxy-wasm ABI (`proxy`, wasm only, on [`abi`],
//! where every host status is a `Result` and all of this crate's `unsafe` lives) and an
//! emulated proxy for native tests (`proxytest`, native only: workers, streams, callouts, a
//! settable clock), so the same code that runs in Envoy is unit-tested with plain `cargo test`.
//!
//! - [`config`]: plugin configuration → serde (`deny_unknown_fields`, field paths in errors) →
//!   semantic validation into an immutable compiled form.
//! - [`plugin`]: the root/HTTP filter traits filters implement; `glue` (wasm only) registers them
//!   as the module's contexts, and `exports` (wasm only) is the proxy-wasm ABI's entry points
//!   (no SDK): [`main!`] declares a module's root and the stream callbacks it exports.
//! - [`routing`]: wakes and callout answers to the stream they belong to, and resuming paused
//!   streams (used by the glue and by `proxytest`).
//! - [`shared_cell`]: a value in proxy-wasm shared data under compare-and-swap (all workers).
//! - [`lease`]: one worker per proxy does X (CAS lease with expiry); [`fetch`]: a value fetched
//!   periodically by the lease holder and published for all workers (tokens, JWKS).
//! - [`waiting`]: requests paused until the root can answer them (token-fetch, jwt-auth).
//! - [`seed`]: a random seed per proxy that every worker agrees on.
//! - `proxytest`, `mock`: the emulated proxy for unit tests, and a bare host (native only).
//! - [`headers`], [`matching`], [`reply`], [`stats`]: small helpers shared by all filters;
//!   [`hash`] (FNV, splitmix, keyed SipHash), [`base64`], [`time`] (clock → integer units).

// `unsafe` only in `abi` (the host calls), each block with its SAFETY comment.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod abi;
pub mod base64;
pub mod bundle;
pub mod config;
pub mod fetch;
pub mod hash;
pub mod headers;
pub mod host;
pub mod lease;
pub mod matching;
pub mod plugin;
pub mod reply;
pub mod routing;
#[cfg(feature = "schema")]
pub mod schema;
pub mod seed;
pub mod shared_cell;
pub mod stats;
pub mod time;
pub mod waiting;

// `#[no_mangle]` (the ABI's entry points) counts as unsafe code for rustc's lint.
// Native builds compile it for its unit tests only (the entry points and a stand-in host).
#[cfg(any(target_arch = "wasm32", test))]
#[allow(unsafe_code)]
pub mod exports;
#[cfg(target_arch = "wasm32")]
pub mod glue;
#[cfg(not(target_arch = "wasm32"))]
pub mod mock;
#[cfg(target_arch = "wasm32")]
pub mod proxy;
#[cfg(not(target_arch = "wasm32"))]
pub mod proxytest;

pub use host::{HeaderMapKind, Host, HostError, LogLevel, MetricKind};
pub use plugin::{Action, HttpFilter, RootFilter};

/// A filter module's entry points: `_initialize`, which registers `$root` as every plugin's root
/// context, and the stream callbacks the filter handles. Envoy answers a callback the module
/// does not export itself, without entering the VM (each crossing costs thousands of
/// instructions), so list exactly the [`HttpFilter`] methods the filter implements: names
/// `request_headers`, `request_body`, `request_trailers`, `response_headers`, `response_body`,
/// `response_trailers`, `log` (callout answers and wakes are always delivered). A stream of an
/// unconfigured plugin is refused at the first listed callback.
///
/// ```ignore
/// #[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
/// shared::main!(filter::MyRoot; request_headers, response_headers);
/// ```
#[macro_export]
macro_rules! main {
    ($root:ty; $($callback:ident),+ $(,)?) => {
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn _initialize() {
            $crate::glue::start::<$root>();
        }
        $crate::http_exports!($($callback),+);
    };
}

/// The stream callbacks a module exports (see [`main!`]); `all` for every one (a module whose
/// plugins may be any filter: the bundle, the test probe).
#[macro_export]
macro_rules! http_exports {
    (all) => {
        $crate::http_exports!(
            request_headers,
            request_body,
            request_trailers,
            response_headers,
            response_body,
            response_trailers,
            log
        );
    };
    ($($callback:ident),+ $(,)?) => {
        $( $crate::http_export!($callback); )+
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! http_export {
    (request_headers) => {
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn proxy_on_request_headers(context_id: u32, num_headers: usize, end_of_stream: u32) -> u32 {
            $crate::exports::on_request_headers(context_id, num_headers, end_of_stream)
        }
    };
    (request_body) => {
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn proxy_on_request_body(context_id: u32, body_size: usize, end_of_stream: u32) -> u32 {
            $crate::exports::on_request_body(context_id, body_size, end_of_stream)
        }
    };
    (request_trailers) => {
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn proxy_on_request_trailers(context_id: u32, num_trailers: usize) -> u32 {
            $crate::exports::on_request_trailers(context_id, num_trailers)
        }
    };
    (response_headers) => {
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn proxy_on_response_headers(context_id: u32, num_headers: usize, end_of_stream: u32) -> u32 {
            $crate::exports::on_response_headers(context_id, num_headers, end_of_stream)
        }
    };
    (response_body) => {
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn proxy_on_response_body(context_id: u32, body_size: usize, end_of_stream: u32) -> u32 {
            $crate::exports::on_response_body(context_id, body_size, end_of_stream)
        }
    };
    (response_trailers) => {
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn proxy_on_response_trailers(context_id: u32, num_trailers: usize) -> u32 {
            $crate::exports::on_response_trailers(context_id, num_trailers)
        }
    };
    (log) => {
        #[allow(unsafe_code)]
        #[no_mangle]
        pub extern "C" fn proxy_on_log(context_id: u32) {
            $crate::exports::on_log(context_id)
        }
    };
}
