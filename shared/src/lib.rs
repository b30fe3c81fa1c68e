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
//! - [`plugin`]: the root/HTTP filter traits filters implement; `glue` (wasm only) hands them to
//!   the proxy-wasm SDK.
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
