//! SipHash-2-4 under a 128-bit key, framed by part lengths: the same function and API as
//! `shared::hash::keyed` (helper fuzz12, not on main yet). Replaced by it on merge.

use siphasher::sip::SipHasher24;
use std::hash::Hasher;

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HashKey([u8; 16]);

impl HashKey {
    pub const fn new(bytes: [u8; 16]) -> HashKey {
        HashKey(bytes)
    }
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(..)")
    }
}

pub fn keyed(key: &HashKey, parts: &[&[u8]]) -> u64 {
    let mut h = SipHasher24::new_with_key(&key.0);
    for part in parts {
        h.write(&(part.len() as u64).to_le_bytes());
        h.write(part);
    }
    h.finish()
}
