//! RSA signature verification (RSASSA-PKCS1-v1_5 and RSASSA-PSS, RFC 8017) for public keys.
//!
//! The public operation `s^e mod n` runs on our own Montgomery multiplication with w-bit limbs
//! (w = 28, or 26 for moduli above 3556 bits) held in `u32` and multiplied into a `u64`
//! accumulator. The products of a limb pair are at most 2^(2w), so a whole column of the
//! product-scanning multiplication (≤ 2·L products) is summed without carry handling: wasm32
//! has no 64×64→128 multiply, and this is what makes it ~5× faster there than 32-bit limbs with
//! carry propagation (CRYPTO.md). Everything here works on public data (the key, the signature,
//! the message), so nothing needs to be constant time.
//!
//! Key checks follow what jwt_authn (BoringSSL `RSA_check_key`) accepts: `e` is 3 or 65537,
//! the modulus is odd and 512..=16384 bits. Verification follows BoringSSL: the signature is
//! exactly as long as the modulus and below it; PKCS#1 v1.5 compares the whole encoded message
//! with the expected one (DigestInfo with NULL parameters); PSS uses MGF1 with the message hash
//! and, like BoringSSL's default for verification, accepts any salt length.

use super::hash::HashAlg;

/// Smallest and largest modulus jwt_authn (BoringSSL) accepts.
pub const MIN_MODULUS_BITS: usize = 512;
pub const MAX_MODULUS_BITS: usize = 16384;

/// Σ x[j]·y[j] over the shorter length, in a u64 (callers keep it from overflowing). A macro,
/// not a function, so that it is inlined into `mont_mul` at opt-level z too.
#[cfg(not(target_arch = "wasm32"))]
macro_rules! dot {
    ($x:expr, $y:expr) => {
        $x.iter().zip($y).map(|(a, b)| u64::from(*a) * u64::from(*b)).sum::<u64>()
    };
}

/// The same with wasm SIMD: `i64x2.extmul_{low,high}_i32x4_u` make four 32×32→64 products
/// per pair of instructions, summed in two u64 lanes (only inside `simd128` functions).
#[cfg(target_arch = "wasm32")]
macro_rules! dot {
    ($x:expr, $y:expr) => {{
        use core::arch::wasm32::{
            i64x2_add, i64x2_splat, u64x2_extmul_high_u32x4, u64x2_extmul_low_u32x4, u64x2_extract_lane, v128,
            v128_load,
        };
        let (x, y): (&[u32], &[u32]) = ($x, $y);
        let len = x.len().min(y.len());
        let (x, y) = (&x[..len], &y[..len]);
        let mut acc = i64x2_splat(0);
        let mut k = 0;
        while k + 4 <= len {
            let (cx, cy) = (&x[k..k + 4], &y[k..k + 4]);
            // SAFETY: `cx` and `cy` are 4 u32 (16 bytes) in bounds; wasm loads need no alignment.
            let (va, vb) = unsafe { (v128_load(cx.as_ptr() as *const v128), v128_load(cy.as_ptr() as *const v128)) };
            acc = i64x2_add(acc, u64x2_extmul_low_u32x4(va, vb));
            acc = i64x2_add(acc, u64x2_extmul_high_u32x4(va, vb));
            k += 4;
        }
        let mut sum = u64x2_extract_lane::<0>(acc).wrapping_add(u64x2_extract_lane::<1>(acc));
        while k < len {
            sum += u64::from(x[k]) * u64::from(y[k]);
            k += 1;
        }
        sum
    }};
}

#[derive(Clone, Debug)]
pub struct RsaPublicKey {
    /// Limb width in bits and its mask.
    w: u32,
    mask: u32,
    /// Modulus, little-endian w-bit limbs, and the same reversed.
    n: Vec<u32>,
    n_rev: Vec<u32>,
    /// -n⁻¹ mod 2^w.
    n0inv: u32,
    /// R² mod n with R = 2^(w·L): converts into Montgomery form.
    r2: Vec<u32>,
    /// Modulus big-endian without leading zeros (its length is the signature length).
    n_be: Vec<u8>,
    bits: usize,
    e: u32,
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

impl RsaPublicKey {
    /// Modulus and exponent as unsigned big-endian bytes (leading zeros allowed). `None` for a
    /// key jwt_authn refuses.
    pub fn new(n: &[u8], e: &[u8]) -> Option<RsaPublicKey> {
        let n = strip_zeros(n);
        let e = match strip_zeros(e) {
            [3] => 3,
            [1, 0, 1] => 65537,
            _ => return None,
        };
        let first = *n.first()?;
        let bits = n.len() * 8 - first.leading_zeros() as usize;
        if !(MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&bits) || n[n.len() - 1] & 1 == 0 {
            return None;
        }
        // 28-bit limbs while a column of 2·L products of 56 bits fits in 64 bits (L ≤ 127).
        let w = if bits.div_ceil(28) <= 127 { 28 } else { 26 };
        let l = bits.div_ceil(w as usize);
        let mask = (1u32 << w) - 1;
        let n_limbs = from_be(n, w, l);
        // Newton iteration for n[0]⁻¹ mod 2^32 (n odd: start with 1, correct mod 2).
        let mut inv: u32 = 1;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(n_limbs[0].wrapping_mul(inv)));
        }
        let n0inv = inv.wrapping_neg() & mask;
        let n_rev = n_limbs.iter().rev().copied().collect();
        let mut key = RsaPublicKey { w, mask, n: n_limbs, n_rev, n0inv, r2: Vec::new(), n_be: n.to_vec(), bits, e };
        key.r2 = key.compute_r2();
        Some(key)
    }

    pub fn modulus_bits(&self) -> usize {
        self.bits
    }

    /// 2^(2·w·L) mod n by doubling, starting from 2^(bits-1) < n (n is odd, so not equal).
    fn compute_r2(&self) -> Vec<u32> {
        let l = self.n.len();
        let w = self.w as usize;
        let mut x = vec![0u32; l];
        let top = self.bits - 1;
        x[top / w] = 1 << (top % w);
        for _ in top..2 * w * l {
            // x = 2x (the top limb may grow one bit past w), then x -= n if x >= n.
            let mut carry = 0u32;
            for limb in x.iter_mut() {
                let v = (*limb << 1) | carry;
                carry = v >> self.w;
                *limb = v & self.mask;
            }
            x[l - 1] |= carry << self.w;
            if self.ge_n(&x) {
                self.sub_n(&mut x);
            }
        }
        x
    }

    fn ge_n(&self, x: &[u32]) -> bool {
        for (a, b) in x.iter().rev().zip(self.n.iter().rev()) {
            if a != b {
                return a > b;
            }
        }
        true
    }

    fn sub_n(&self, x: &mut [u32]) {
        let mut borrow = 0u32;
        for (a, &b) in x.iter_mut().zip(self.n.iter()) {
            let t = a.wrapping_sub(b).wrapping_sub(borrow);
            // A borrow shows as the sign bit (values are below 2^(w+1) < 2^31).
            borrow = t >> 31;
            *a = t & self.mask;
        }
    }

    /// out = a·b·R⁻¹ mod n (a, b < n, normalised limbs). Product scanning: column i sums
    /// a[j]·b[i−j] + m[j]·n[i−j] in a u64 without carries; with b and n reversed (`b_rev`,
    /// `n_rev`) each column is one dot product over contiguous slices. `m` receives the
    /// reduction multipliers.
    #[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
    fn mont_mul(&self, a: &[u32], b: &[u32], s: &mut Scratch, out: &mut [u32]) {
        let l = self.n.len();
        let n_rev = &self.n_rev[..];
        let w = self.w;
        for (r, x) in s.b_rev.iter_mut().zip(b.iter().rev()) {
            *r = *x;
        }
        let b_rev = &s.b_rev[..];
        let m = &mut s.m[..];
        let mut acc: u64 = 0;
        for i in 0..l {
            // j = 0..=i for a·b (b[0] = b_rev[l-1]), j = 0..i for m·n, then m[i]·n[0].
            acc += dot!(&a[..=i], &b_rev[l - 1 - i..]);
            acc += dot!(&m[..i], &n_rev[l - 1 - i..l - 1]);
            let mi = (acc as u32).wrapping_mul(self.n0inv) & self.mask;
            m[i] = mi;
            acc += u64::from(mi) * u64::from(self.n[0]);
            acc >>= w;
        }
        for i in l..2 * l - 1 {
            let lo = i + 1 - l;
            let len = l - lo;
            acc += dot!(&a[lo..], &b_rev[..len]);
            acc += dot!(&m[lo..], &n_rev[..len]);
            out[i - l] = (acc as u32) & self.mask;
            acc >>= w;
        }
        // (ab + mn)/R < 2n: at most one bit past w in the top limb, one subtraction.
        out[l - 1] = acc as u32;
        if self.ge_n(out) {
            self.sub_n(out);
        }
    }

    /// out = a²·R⁻¹ mod n: [`Self::mont_mul`] with each cross product a[j]·a[i−j] (j ≠ i−j)
    /// computed once and doubled (the column bound is unchanged: i/2 doubled products).
    #[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
    fn mont_sqr(&self, a: &[u32], s: &mut Scratch, out: &mut [u32]) {
        let l = self.n.len();
        let n_rev = &self.n_rev[..];
        let w = self.w;
        for (r, x) in s.b_rev.iter_mut().zip(a.iter().rev()) {
            *r = *x;
        }
        let a_rev = &s.b_rev[..];
        let m = &mut s.m[..];
        let square = |i: usize| if i.is_multiple_of(2) { u64::from(a[i / 2]) * u64::from(a[i / 2]) } else { 0 };
        let mut acc: u64 = 0;
        for i in 0..l {
            let h = i.div_ceil(2);
            acc += 2 * dot!(&a[..h], &a_rev[l - 1 - i..l - 1 - i + h]) + square(i);
            acc += dot!(&m[..i], &n_rev[l - 1 - i..l - 1]);
            let mi = (acc as u32).wrapping_mul(self.n0inv) & self.mask;
            m[i] = mi;
            acc += u64::from(mi) * u64::from(self.n[0]);
            acc >>= w;
        }
        for i in l..2 * l - 1 {
            let lo = i + 1 - l;
            let h = i.div_ceil(2) - lo;
            acc += 2 * dot!(&a[lo..lo + h], &a_rev[..h]) + square(i);
            acc += dot!(&m[lo..], &n_rev[..l - lo]);
            out[i - l] = (acc as u32) & self.mask;
            acc >>= w;
        }
        out[l - 1] = acc as u32;
        if self.ge_n(out) {
            self.sub_n(out);
        }
    }

    /// s^e mod n as `k` big-endian bytes (k = modulus length), or `None` when the signature is
    /// not exactly k bytes or not below n.
    pub fn public_op(&self, sig: &[u8]) -> Option<Vec<u8>> {
        let k = self.n_be.len();
        if sig.len() != k || sig >= &self.n_be[..] {
            return None;
        }
        let l = self.n.len();
        let s = from_be(sig, self.w, l);
        let mut m = Scratch { m: vec![0u32; l], b_rev: vec![0u32; l] };
        let mut x = vec![0u32; l];
        let mut y = vec![0u32; l];
        let mut t = vec![0u32; l];
        self.mont_mul(&s, &self.r2, &mut m, &mut x); // x = sR
        let squarings = if self.e == 3 { 1 } else { 16 };
        y.copy_from_slice(&x);
        for _ in 0..squarings {
            self.mont_sqr(&y, &mut m, &mut t);
            std::mem::swap(&mut y, &mut t);
        }
        self.mont_mul(&y, &x, &mut m, &mut t); // s^e R
        let mut one = vec![0u32; l];
        one[0] = 1;
        self.mont_mul(&t, &one, &mut m, &mut y); // s^e
        Some(to_be(&y, self.w, k))
    }

    /// RSASSA-PKCS1-v1_5 verification (RFC 8017 §8.2.2) of `msg` hashed with `hash`.
    pub fn verify_pkcs1v15(&self, hash: HashAlg, msg: &[u8], sig: &[u8]) -> bool {
        let Some(em) = self.public_op(sig) else {
            return false;
        };
        let prefix = digest_info_prefix(hash);
        let h = hash.digest(msg);
        let t_len = prefix.len() + hash.output_len();
        let k = em.len();
        if k < t_len + 11 {
            return false;
        }
        let sep = k - t_len - 1;
        em[0] == 0
            && em[1] == 1
            && em[2..sep].iter().all(|&b| b == 0xff)
            && em[sep] == 0
            && em[sep + 1..sep + 1 + prefix.len()] == *prefix
            && em[sep + 1 + prefix.len()..] == *h.as_bytes()
    }

    /// RSASSA-PSS verification (RFC 8017 §8.1.2, EMSA-PSS-VERIFY §9.1.2) with MGF1 on the same
    /// hash. `salt_len: None` accepts any salt length (BoringSSL's default for verification,
    /// which jwt_authn uses); `Some(n)` requires exactly n.
    pub fn verify_pss(&self, hash: HashAlg, msg: &[u8], sig: &[u8], salt_len: Option<usize>) -> bool {
        let Some(em_full) = self.public_op(sig) else {
            return false;
        };
        let em_bits = self.bits - 1;
        let em_len = em_bits.div_ceil(8);
        let em = if em_len < em_full.len() {
            if em_full[0] != 0 {
                return false;
            }
            &em_full[1..]
        } else {
            &em_full[..]
        };
        let h_len = hash.output_len();
        if em_len < h_len + 2 || em[em_len - 1] != 0xbc {
            return false;
        }
        let db_len = em_len - h_len - 1;
        let (masked_db, rest) = em.split_at(db_len);
        let h = &rest[..h_len];
        let unused_bits = 8 * em_len - em_bits;
        let top_mask = 0xffu8 >> unused_bits;
        if masked_db[0] & !top_mask != 0 {
            return false;
        }
        let mut db = masked_db.to_vec();
        mgf1_xor(hash, h, &mut db);
        db[0] &= top_mask;
        let Some(one) = db.iter().position(|&b| b != 0) else {
            return false;
        };
        if db[one] != 1 {
            return false;
        }
        let salt = &db[one + 1..];
        if salt_len.is_some_and(|s| s != salt.len()) {
            return false;
        }
        let m_hash = hash.digest(msg);
        let h2 = hash.digest_parts(&[&[0u8; 8], m_hash.as_bytes(), salt]);
        h2.as_bytes() == h
    }
}

/// Per-operation buffers of [`RsaPublicKey::mont_mul`].
struct Scratch {
    m: Vec<u32>,
    b_rev: Vec<u32>,
}

/// `out ^= MGF1(seed)` (RFC 8017 B.2.1).
fn mgf1_xor(hash: HashAlg, seed: &[u8], out: &mut [u8]) {
    for (counter, chunk) in out.chunks_mut(hash.output_len()).enumerate() {
        let c = (counter as u32).to_be_bytes();
        let block = hash.digest_parts(&[seed, &c]);
        for (o, m) in chunk.iter_mut().zip(block.as_bytes()) {
            *o ^= m;
        }
    }
}

/// DER of DigestInfo{AlgorithmIdentifier{OID, NULL}, OCTET STRING} up to the hash bytes.
fn digest_info_prefix(hash: HashAlg) -> &'static [u8] {
    match hash {
        HashAlg::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
            0x20,
        ],
        HashAlg::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04,
            0x30,
        ],
        HashAlg::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04,
            0x40,
        ],
    }
}

/// Big-endian bytes to `l` little-endian w-bit limbs (bits past w·l are dropped; callers
/// only pass values that fit).
fn from_be(bytes: &[u8], w: u32, l: usize) -> Vec<u32> {
    let mask = (1u64 << w) - 1;
    let mut out = vec![0u32; l];
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    let mut idx = 0;
    for &b in bytes.iter().rev() {
        acc |= u64::from(b) << bits;
        bits += 8;
        if bits >= w {
            if let Some(o) = out.get_mut(idx) {
                *o = (acc & mask) as u32;
            }
            idx += 1;
            acc >>= w;
            bits -= w;
        }
    }
    if bits > 0 {
        if let Some(o) = out.get_mut(idx) {
            *o = acc as u32;
        }
    }
    out
}

/// Little-endian w-bit limbs to `k` big-endian bytes (higher bits dropped).
fn to_be(limbs: &[u32], w: u32, k: usize) -> Vec<u8> {
    let mut out = vec![0u8; k];
    let mut pos = k;
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &limb in limbs {
        acc |= u64::from(limb) << bits;
        bits += w;
        while bits >= 8 && pos > 0 {
            pos -= 1;
            out[pos] = acc as u8;
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 && pos > 0 {
        out[pos - 1] = acc as u8;
    }
    out
}
