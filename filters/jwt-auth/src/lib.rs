//! jwt-auth: JWT validation with Envoy jwt_authn's configuration and answers. See README.md.

pub mod config;
pub mod engine;
pub mod extract;
pub mod filter;
pub mod token;

// Not in the bundle (collection/, feature `bundled`): it registers every filter itself. The
// callbacks listed are exactly the ones `filter` implements (see `shared::main!`).
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
shared::main!(filter::JwtAuthRoot; request_headers);
