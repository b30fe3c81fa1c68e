//! jwt-auth: see README.md beside this crate.

pub mod config;
pub mod crypto;
pub mod filter;
pub mod jwks;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    shared::proxy::start::<filter::JwtAuthRoot>();
}}
