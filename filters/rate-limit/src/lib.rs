//! rate-limit: see README.md beside this crate for the full reference.

pub mod address;
pub mod bucket;
pub mod config;
pub mod filter;
pub mod rls;
pub mod table;

// Not in the bundle (collection/, feature `bundled`): it registers every filter itself. The
// callbacks listed are exactly the ones `filter` implements (see `shared::main!`).
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
shared::main!(filter::RateLimitRoot; request_headers, response_headers);

#[cfg(test)]
mod attack_tests;
