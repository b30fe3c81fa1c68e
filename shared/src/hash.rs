//! The collection's non-cryptographic hashes, in one place.
//!
//! - [`fnv1a`] / [`Fnv1a`] + [`mix64`]: fast, unkeyed, stable across workers and builds; for
//!   spreading values that an attacker does not choose, or where a collision costs nothing
//!   (body-logger's sampling).
//! - [`keyed`]: SipHash-2-4 under a 128-bit [`HashKey`] (the per-proxy seed), for anything an
//!   outsider could exploit if they could compute it: table slots chosen by request values
//!   (collision flooding) and log fingerprints of configuration that contains secrets (an
//!   offline oracle for guessing them). Without the key the output tells nothing about the
//!   input. SipHash is a keyed PRF designed for exactly this; std's keyed `SipHasher` is
//!   deprecated and `RandomState` cannot take a given key (every worker must agree on it),
//!   so it comes from the `siphasher` crate (no_std, no dependencies).
//! - [`keyed128`]: SipHash-2-4's 128-bit output under a secret random [`HashKey`], as a short
//!   stand-in for a value in a table that must not hold the value itself (jwt-auth's
//!   verified-token cache): without the key nobody can aim at a collision, and 128 bits leave
//!   no room for an accidental one. Several times cheaper than SHA-256 in wasm.

use siphasher::sip::SipHasher24;
use siphasher::sip128::{Hasher128, SipHasher24 as SipHasher128};
use std::fmt;
use std::hash::Hasher;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bits, fed in pieces.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(FNV_OFFSET)
    }
}

impl Fnv1a {
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u8(*b);
        }
    }

    pub fn write_u8(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// FNV-1a, 64 bits, of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a::default();
    h.write(bytes);
    h.finish()
}

/// splitmix64's finaliser: every input bit reaches every output bit, so FNV's weak low bits
/// (or a counter, or a clock) come out spread over the whole `u64`.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A short (8 hex digits), stable, unkeyed fingerprint: FNV-1a 64 folded to 32 bits. Only for
/// values an outsider cannot guess (high-entropy tokens) or that are not secret; for anything
/// derived from a secret use [`keyed_fingerprint`].
pub fn fingerprint(bytes: &[u8]) -> String {
    let h = fnv1a(bytes);
    format!("{:08x}", (h >> 32) ^ (h & 0xffff_ffff))
}

/// A 128-bit key for [`keyed`]. `Debug` never shows it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HashKey([u8; 16]);

impl HashKey {
    pub const fn new(bytes: [u8; 16]) -> HashKey {
        HashKey(bytes)
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(..)")
    }
}

/// SipHash-2-4 under `key` of `parts`, each framed by its length (so `["ab", "c"]` and
/// `["a", "bc"]` differ). Stable across workers, builds and targets for the same key.
pub fn keyed(key: &HashKey, parts: &[&[u8]]) -> u64 {
    let mut h = SipHasher24::new_with_key(&key.0);
    for part in parts {
        // u64, not usize: the same on wasm32 and in native tests.
        h.write(&(part.len() as u64).to_le_bytes());
        h.write(part);
    }
    h.finish()
}

/// SipHash-2-4 with its 128-bit output under `key` of `bytes` (one part, unframed).
pub fn keyed128(key: &HashKey, bytes: &[u8]) -> [u8; 16] {
    let mut h = SipHasher128::new_with_key(&key.0);
    h.write(bytes);
    h.finish128().as_bytes()
}

/// [`keyed`] as 16 hex digits, for log lines and shared-data key names.
pub fn keyed_fingerprint(key: &HashKey, parts: &[&[u8]]) -> String {
    format!("{:016x}", keyed(key, parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_and_mix_known_values() {
        // FNV-1a 64 reference values (draft-eastlake-fnv).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        let mut h = Fnv1a::default();
        h.write(b"foo");
        h.write(b"bar");
        assert_eq!(h.finish(), fnv1a(b"foobar"));
        // splitmix64's first output for seed 0 is mix64(0x9e3779b97f4a7c15).
        assert_eq!(mix64(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
        assert_eq!(mix64(0), 0);
    }

    #[test]
    fn fingerprints_are_short_stable_and_distinct() {
        assert_eq!(fingerprint(b"secret"), fingerprint(b"secret"));
        assert_ne!(fingerprint(b"secret"), fingerprint(b"secreu"));
        assert_eq!(fingerprint(b"x").len(), 8);
        assert!(!fingerprint(b"secret").contains("secret"));
    }

    #[test]
    fn keyed_is_siphash_2_4_framed_and_depends_on_the_key() {
        // SipHash-2-4 reference vector (Aumasson & Bernstein, appendix A): key 00..0f,
        // message 00..0e → a129ca6149be45e5. Framing adds the length first, so check the raw
        // hasher here and the framing below.
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let mut raw = SipHasher24::new_with_key(&key);
        raw.write(&(0..15).collect::<Vec<u8>>());
        assert_eq!(raw.finish(), 0xa129_ca61_49be_45e5);

        let k = HashKey::new(key);
        assert_eq!(keyed(&k, &[b"ab", b"c"]), keyed(&k, &[b"ab", b"c"]));
        assert_ne!(keyed(&k, &[b"ab", b"c"]), keyed(&k, &[b"a", b"bc"]));
        assert_ne!(keyed(&k, &[b"abc"]), keyed(&k, &[b"abc", b""]));
        assert_ne!(keyed(&k, &[b"abc"]), keyed(&HashKey::new([0; 16]), &[b"abc"]));
        assert_eq!(keyed_fingerprint(&k, &[b"x"]).len(), 16);
        assert_eq!(format!("{k:?}"), "HashKey(..)");
    }

    #[test]
    fn keyed128_is_siphash_2_4_128_and_depends_on_the_key() {
        // SipHash-2-4-128 reference vector (the reference implementation's vectors.h, 128-bit
        // output, first entry): key 00..0f, the empty message.
        let key = HashKey::new(std::array::from_fn(|i| i as u8));
        assert_eq!(
            keyed128(&key, b""),
            [0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55, 0x02, 0x93]
        );
        assert_ne!(keyed128(&key, b"abc"), keyed128(&key, b"abd"));
        assert_ne!(keyed128(&key, b"abc"), keyed128(&HashKey::new([0; 16]), b"abc"));
    }
}
