//! ECDSA P-256 (ES256) verification.

use super::p384::fixed_be;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};

#[derive(Clone, Debug)]
pub struct P256Key {
    key: VerifyingKey,
}

impl P256Key {
    /// Affine coordinates as unsigned big-endian integers; `None` unless below p and on the curve.
    pub fn new(x: &[u8], y: &[u8]) -> Option<P256Key> {
        let x: [u8; 32] = fixed_be(x)?;
        let y: [u8; 32] = fixed_be(y)?;
        let mut sec1 = [0u8; 65];
        sec1[0] = 4;
        sec1[1..33].copy_from_slice(&x);
        sec1[33..].copy_from_slice(&y);
        let key = VerifyingKey::from_sec1_bytes(&sec1).ok()?;
        Some(P256Key { key })
    }

    /// `sig` is r‖s, 64 bytes (IEEE P1363 / JWS); `digest` the SHA-256 of the signing input.
    pub fn verify_prehash(&self, digest: &[u8], sig: &[u8]) -> bool {
        if sig.len() != 64 {
            return false;
        }
        match Signature::from_slice(sig) {
            Ok(sig) => self.key.verify_prehash(digest, &sig).is_ok(),
            Err(_) => false,
        }
    }
}
