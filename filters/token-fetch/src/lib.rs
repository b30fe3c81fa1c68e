//! token-fetch: see README.md beside this crate for the full reference.

pub mod config;
pub mod filter;

// Not in the bundle (collection/, feature `bundled`): it registers every filter itself. The
// callbacks listed are exactly the ones `filter` implements (see `shared::main!`).
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
shared::main!(filter::TokenFetchRoot; request_headers, response_headers);
