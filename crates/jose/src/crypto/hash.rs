//! The SHA-2 functions of JWS (RS/PS/ES/HS 256/384/512).

use sha2::{Digest, Sha256, Sha384, Sha512};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlg {
    Sha256,
    Sha384,
    Sha512,
}

/// A digest of at most 64 bytes, without allocating.
#[derive(Clone, Copy)]
pub struct Digest64 {
    bytes: [u8; 64],
    len: usize,
}

impl Digest64 {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl HashAlg {
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// Hash of the concatenation of `parts`.
    pub fn digest_parts(self, parts: &[&[u8]]) -> Digest64 {
        fn run<D: Digest>(parts: &[&[u8]], out: &mut [u8; 64]) -> usize {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            let d = h.finalize();
            let n = d.len();
            out[..n].copy_from_slice(&d);
            n
        }
        let mut bytes = [0u8; 64];
        let len = match self {
            HashAlg::Sha256 => run::<Sha256>(parts, &mut bytes),
            HashAlg::Sha384 => run::<Sha384>(parts, &mut bytes),
            HashAlg::Sha512 => run::<Sha512>(parts, &mut bytes),
        };
        Digest64 { bytes, len }
    }

    pub fn digest(self, data: &[u8]) -> Digest64 {
        self.digest_parts(&[data])
    }
}
