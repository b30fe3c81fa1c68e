//! rate-limit: see README.md beside this crate for the full reference.

pub mod address;
pub mod bucket;
pub mod config;
pub mod filter;
pub mod rls;
pub mod table;

// Not in the bundle (collection/, feature `bundled`): it registers every filter itself.
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
proxy_wasm::main! {{
    shared::glue::start::<filter::RateLimitRoot>();
}}

#[cfg(test)]
mod attack_tests;
