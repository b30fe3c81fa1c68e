//! ECDSA P-521 (ES512) verification with the `p521` crate as is (measured in V8: CRYPTO.md).

use super::p384::fixed_be;
use p521::ecdsa::signature::hazmat::PrehashVerifier;
use p521::ecdsa::{Signature, VerifyingKey};

#[derive(Clone, Debug)]
pub struct P521Key {
    key: VerifyingKey,
}

impl P521Key {
    /// Affine coordinates as unsigned big-endian integers (66 bytes each once leading zeros
    /// are dropped and the rest left-padded); `None` unless below p and on the curve.
    pub fn new(x: &[u8], y: &[u8]) -> Option<P521Key> {
        let x: [u8; 66] = fixed_be(x)?;
        let y: [u8; 66] = fixed_be(y)?;
        let mut sec1 = [0u8; 133];
        sec1[0] = 4;
        sec1[1..67].copy_from_slice(&x);
        sec1[67..].copy_from_slice(&y);
        let key = VerifyingKey::from_sec1_bytes(&sec1).ok()?;
        Some(P521Key { key })
    }

    /// `sig` is r‖s, 132 bytes (IEEE P1363 / JWS); `digest` the SHA-512 of the signing input.
    pub fn verify_prehash(&self, digest: &[u8], sig: &[u8]) -> bool {
        if sig.len() != 132 {
            return false;
        }
        match Signature::from_slice(sig) {
            Ok(sig) => self.key.verify_prehash(digest, &sig).is_ok(),
            Err(_) => false,
        }
    }
}
