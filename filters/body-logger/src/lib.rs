//! body-logger: see README.md beside this crate for the full reference.

pub mod config;
pub mod corpus;
pub mod filter;
pub mod grpc;
mod line;
pub mod names;
pub mod redact;

// Not in the bundle (collection/, feature `bundled`): it registers every filter itself. The
// callbacks listed are exactly the ones `filter` implements (see `shared::main!`).
#[cfg(all(target_arch = "wasm32", not(feature = "bundled")))]
shared::main!(filter::BodyLoggerRoot; request_headers, request_body, request_trailers, response_headers, response_body, response_trailers, log);
