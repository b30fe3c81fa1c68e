//! The filter's crypto module, compiled in by path (see Cargo.toml).
#[allow(dead_code)]
#[path = "../../../../filters/jwt-auth/src/crypto/mod.rs"]
pub mod crypto;
