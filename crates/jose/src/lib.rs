//! jose: the key and signature side of jwt-auth, in one crate a reviewer can read alone.
//!
//! - [`jwks`]: JSON Web Key Sets (RFC 7517) parsed as Envoy's jwt_authn parses them, key
//!   selection by `kid`/`alg`, and JWS signature verification (RFC 7515/7518/8037).
//! - [`json`]: the JSON dialect jwt_authn reads a JWKS in (protobuf's, a little lenient).
//! - [`crypto`]: the signature primitives and base64url under it.
//!
//! No proxy-wasm here: the crate builds and tests natively, for wasm32 in the filter, and in
//! `bench/crypto-probe` (V8 timings, CRYPTO.md).

pub mod crypto;
pub mod json;
pub mod jwks;

/// Fuzz target bodies (the `fuzzing` feature, for the shared fuzz harness; always in tests).
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_targets;
