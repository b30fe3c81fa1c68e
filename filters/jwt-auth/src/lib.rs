//! jwt-auth: JWT validation with Envoy jwt_authn's configuration and answers. See README.md.

pub mod config;
pub mod engine;
pub mod extract;
pub mod filter;
pub mod token;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    shared::glue::start::<filter::JwtAuthRoot>();
}}
