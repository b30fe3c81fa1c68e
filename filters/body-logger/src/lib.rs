//! body-logger: see README.md beside this crate for the full reference.

pub mod config;
pub mod corpus;
pub mod filter;
pub mod grpc;
mod line;
pub mod names;
pub mod redact;

// Not in the bundle (collection/, feature `bundled`): it registers every filter itself.
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
proxy_wasm::main! {{
    shared::glue::start::<filter::BodyLoggerRoot>();
}}
