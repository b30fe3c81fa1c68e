//! The utility crate every filter in this collection builds on.
//!
//! The one rule: filter logic never calls the proxy-wasm host directly. It talks to [`Host`],
//! which has a real implementation over `proxy_wasm::hostcalls` (`proxy`, wasm only) and a
//! native one, `mock::MockHost` (native only), with a settable clock, so the same code that
//! runs in Envoy is unit-tested with plain `cargo test`.
//!
//! - [`config`]: plugin configuration → serde (`deny_unknown_fields`, field paths in errors) →
//!   semantic validation into an immutable compiled form.
//! - [`plugin`]: the root/HTTP filter traits filters implement; `glue` (wasm only) registers them
//!   with the proxy-wasm SDK.
//! - [`shared_cell`]: a value in proxy-wasm shared data under compare-and-swap (all workers).
//! - [`lease`]: one worker per proxy does X (CAS lease with expiry); [`fetch`]: a value fetched
//!   periodically by the lease holder and published for all workers (tokens, JWKS).
//! - [`waiting`]: requests paused until the root can answer them (token-fetch, jwt-auth).
//! - [`headers`], [`matching`], [`reply`], [`stats`]: small helpers shared by all filters.

pub mod config;
pub mod fetch;
pub mod headers;
pub mod host;
pub mod lease;
pub mod matching;
pub mod plugin;
pub mod reply;
pub mod shared_cell;
pub mod stats;
pub mod waiting;

#[cfg(target_arch = "wasm32")]
pub mod glue;
#[cfg(not(target_arch = "wasm32"))]
pub mod mock;
#[cfg(target_arch = "wasm32")]
pub mod proxy;

pub use host::{HeaderMapKind, Host, HostError, LogLevel, MetricKind};
pub use plugin::{Action, HttpFilter, RootFilter};
