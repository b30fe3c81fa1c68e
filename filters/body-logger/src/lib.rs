//! body-logger: see README.md beside this crate for the full reference.

pub mod config;
pub mod corpus;
pub mod filter;
pub mod grpc;
pub mod names;
pub mod redact;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    shared::glue::start::<filter::BodyLoggerRoot>();
}}
