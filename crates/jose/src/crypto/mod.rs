//! Signature primitives for [`crate::jwks`]: everything a key needs is computed once when the
//! key is parsed; the per-request functions only do the signature math on public data (no
//! secret is involved in verification except HMAC keys, which are compared in constant time).
//!
//! - [`rsa`]: RSASSA-PKCS1-v1_5 and RSASSA-PSS verification on our own Montgomery arithmetic
//!   with 28-bit limbs (wasm32 has no 64×64→128 multiply; see CRYPTO.md for the measurements).
//! - [`p256`]: ECDSA P-256 verification with per-key precomputed tables over the `p256`
//!   crate's field arithmetic.
//! - [`p384`], [`p521`]: ECDSA P-384 and P-521 with the `p384` and `p521` crates as they are.
//! - [`hash`]: the SHA-2 functions JWS uses.

pub mod hash;
pub mod p256;
pub mod p384;
pub mod p521;
pub mod rsa;

#[cfg(test)]
mod wycheproof_tests;
