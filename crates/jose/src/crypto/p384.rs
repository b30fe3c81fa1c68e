//! ECDSA P-384 (ES384) verification with the `p384` crate.

use p384::ecdsa::signature::hazmat::PrehashVerifier;
use p384::ecdsa::{Signature, VerifyingKey};

#[derive(Clone, Debug)]
pub struct P384Key {
    key: VerifyingKey,
}

/// Unsigned big-endian integer of at most `len` bytes (leading zeros allowed) left-padded.
pub(crate) fn fixed_be<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    let b = &b[first..];
    if b.len() > N {
        return None;
    }
    let mut out = [0u8; N];
    out[N - b.len()..].copy_from_slice(b);
    Some(out)
}

impl P384Key {
    /// Affine coordinates as unsigned big-endian integers; `None` unless below p and on the curve.
    pub fn new(x: &[u8], y: &[u8]) -> Option<P384Key> {
        let x: [u8; 48] = fixed_be(x)?;
        let y: [u8; 48] = fixed_be(y)?;
        let mut sec1 = [0u8; 97];
        sec1[0] = 4;
        sec1[1..49].copy_from_slice(&x);
        sec1[49..].copy_from_slice(&y);
        let key = VerifyingKey::from_sec1_bytes(&sec1).ok()?;
        Some(P384Key { key })
    }

    /// `sig` is r‖s, 96 bytes (IEEE P1363 / JWS); `digest` the SHA-384 of the signing input.
    pub fn verify_prehash(&self, digest: &[u8], sig: &[u8]) -> bool {
        if sig.len() != 96 {
            return false;
        }
        match Signature::from_slice(sig) {
            Ok(sig) => self.key.verify_prehash(digest, &sig).is_ok(),
            Err(_) => false,
        }
    }
}
