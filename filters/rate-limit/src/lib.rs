//! rate-limit: see README.md beside this crate for the full reference.

pub mod address;
pub mod bucket;
pub mod config;
pub mod filter;
pub mod table;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    shared::glue::start::<filter::RateLimitRoot>();
}}
