//! security-headers: see README.md beside this crate for the full reference.

pub mod config;
pub mod filter;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    shared::glue::start::<filter::SecurityHeadersRoot>();
}}
