//! ECDSA P-256 (ES256) verification, fast on wasm32.
//!
//! The `p256` crate's own verification (constant-time lincomb with complete formulas) costs
//! ~5× more in V8 than this (CRYPTO.md). Verification only handles public values, so here:
//!
//! - `u1·G + u2·Q` is a sum of table entries, no doublings: for both G (one table per VM,
//!   built on first use) and each key's Q (built when the JWKS is parsed) the table holds
//!   `j·2^(w·i)·P` for j = 1..=2^(w−1) and every w-bit window i, in affine coordinates
//!   (w = 7 for G: 37 windows; w = 5 for Q: 52 windows). Scalars are recoded into signed
//!   base-2^w digits, so at most 89 mixed additions make the sum;
//! - mixed Jacobian+affine addition (variable time, with the doubling and inverse cases
//!   handled);
//! - no inversion at the end: x(R) ≡ r (mod n) is checked as X = r·Z² (and (r+n)·Z² when
//!   r + n < p).
//!
//! Field arithmetic, scalar arithmetic, point validation and the table building are the
//! `p256` crate's.

use super::p384::fixed_be;
use p256::ecdsa::VerifyingKey;
use p256::elliptic_curve::ff::{Field, PrimeField};
use p256::elliptic_curve::group::{Curve, Group};
use p256::elliptic_curve::hazmat::FieldArithmetic;
use p256::elliptic_curve::ops::Reduce;
use p256::elliptic_curve::point::AffineCoordinates;
use p256::{AffinePoint, FieldBytes, NistP256, ProjectivePoint, Scalar};
use std::sync::OnceLock;

type Fe = <NistP256 as FieldArithmetic>::FieldElement;

/// Window widths: G's table is built once per VM and can be large (37 windows × 64 points,
/// 150 KB); a key's is built per JWKS parse (52 windows × 16 points, 53 KB).
const G_WINDOW_BITS: usize = 7;
const KEY_WINDOW_BITS: usize = 5;

#[derive(Clone, Copy, Debug)]
struct Affine {
    x: Fe,
    y: Fe,
}

/// `entries[i * per_window + j] = (j+1)·2^(w·i)·P` for windows of w bits, per_window =
/// 2^(w−1), and enough windows for 256 bits plus the recoding carry.
#[derive(Clone, Debug)]
struct Table {
    w: usize,
    entries: Vec<Affine>,
}

fn windows(w: usize) -> usize {
    257usize.div_ceil(w)
}

impl Table {
    fn new(p: ProjectivePoint, w: usize) -> Option<Table> {
        let per_window = 1 << (w - 1);
        let mut proj = Vec::with_capacity(windows(w) * per_window);
        let mut base = p;
        for _ in 0..windows(w) {
            let mut acc = base;
            for _ in 0..per_window {
                proj.push(acc);
                acc += base;
            }
            for _ in 0..w {
                base = base.double();
            }
        }
        let mut affine = vec![AffinePoint::IDENTITY; proj.len()];
        ProjectivePoint::batch_normalize(&proj, &mut affine);
        let mut entries = Vec::with_capacity(affine.len());
        for a in affine {
            // Multiples below the group order are never the identity; refuse rather than
            // trust it.
            if bool::from(a.is_identity()) {
                return None;
            }
            let x = Option::<Fe>::from(Fe::from_repr(a.x()))?;
            let y = Option::<Fe>::from(Fe::from_repr(a.y()))?;
            entries.push(Affine { x, y });
        }
        Some(Table { w, entries })
    }

    /// Adds k·P to `acc`, k given as big-endian bytes.
    fn add_mul(&self, acc: &mut Jacobian, k: &[u8; 32]) {
        let per_window = 1 << (self.w - 1);
        for (i, d) in signed_digits(k, self.w).iter().enumerate() {
            if *d == 0 {
                continue;
            }
            let e = &self.entries[i * per_window + (d.unsigned_abs() as usize - 1)];
            let y = if *d < 0 { e.y.neg() } else { e.y };
            acc.add_affine(&e.x, &y);
        }
    }
}

/// Signed base-2^w digits d_i in [−(2^(w−1)−1), 2^(w−1)] with k = Σ d_i·2^(w·i), w ≤ 8.
fn signed_digits(k: &[u8; 32], w: usize) -> Vec<i16> {
    let byte = |j: usize| if j < 32 { u16::from(k[31 - j]) } else { 0 };
    let mask = (1u16 << w) - 1;
    let half = 1i16 << (w - 1);
    let mut carry = 0i16;
    (0..windows(w))
        .map(|i| {
            let bit = w * i;
            let pair = byte(bit / 8) | (byte(bit / 8 + 1) << 8);
            let v = ((pair >> (bit % 8)) & mask) as i16 + carry;
            if v > half {
                carry = 1;
                v - (1 << w)
            } else {
                carry = 0;
                v
            }
        })
        .collect()
}

/// A point in Jacobian coordinates (x = X/Z², y = Y/Z³); Z = 0 is the identity.
struct Jacobian {
    x: Fe,
    y: Fe,
    z: Fe,
}

impl Jacobian {
    fn identity() -> Jacobian {
        Jacobian { x: Fe::ONE, y: Fe::ONE, z: Fe::ZERO }
    }

    fn is_identity(&self) -> bool {
        bool::from(self.z.is_zero())
    }

    /// self += (x2, y2) (madd: 8M + 3S), with P + P and P + (−P) handled.
    fn add_affine(&mut self, x2: &Fe, y2: &Fe) {
        if self.is_identity() {
            *self = Jacobian { x: *x2, y: *y2, z: Fe::ONE };
            return;
        }
        let z1z1 = self.z.square();
        let u2 = x2.multiply(&z1z1);
        let s2 = y2.multiply(&self.z).multiply(&z1z1);
        let h = u2.sub(&self.x);
        let r = s2.sub(&self.y);
        if bool::from(h.is_zero()) {
            if bool::from(r.is_zero()) {
                self.double();
            } else {
                *self = Jacobian::identity();
            }
            return;
        }
        let hh = h.square();
        let hhh = h.multiply(&hh);
        let v = self.x.multiply(&hh);
        let x3 = r.square().sub(&hhh).sub(&v.double());
        let y3 = r.multiply(&v.sub(&x3)).sub(&self.y.multiply(&hhh));
        let z3 = self.z.multiply(&h);
        *self = Jacobian { x: x3, y: y3, z: z3 };
    }

    /// self = 2·self for a = −3 (dbl-2001-b: 3M + 5S). Only reached when adding a point to
    /// itself.
    fn double(&mut self) {
        if self.is_identity() || bool::from(self.y.is_zero()) {
            *self = Jacobian::identity();
            return;
        }
        let delta = self.z.square();
        let gamma = self.y.square();
        let beta = self.x.multiply(&gamma);
        let t = self.x.sub(&delta).multiply(&self.x.add(&delta));
        let alpha = t.double().add(&t);
        let beta4 = beta.double().double();
        let x3 = alpha.square().sub(&beta4.double());
        let z3 = self.y.add(&self.z).square().sub(&gamma).sub(&delta);
        let gamma2 = gamma.square();
        let y3 = alpha.multiply(&beta4.sub(&x3)).sub(&gamma2.double().double().double());
        *self = Jacobian { x: x3, y: y3, z: z3 };
    }
}

fn g_table() -> Option<&'static Table> {
    static G: OnceLock<Option<Table>> = OnceLock::new();
    G.get_or_init(|| Table::new(ProjectivePoint::GENERATOR, G_WINDOW_BITS)).as_ref()
}

/// The group order n, big-endian.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// The field prime p, big-endian.
const PRIME: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
];

/// r + n if it is below p (then x(R) = r + n also gives x(R) mod n = r).
fn r_plus_n(r: &[u8; 32]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in (0..32).rev() {
        let v = u16::from(r[i]) + u16::from(ORDER[i]) + carry;
        out[i] = v as u8;
        carry = v >> 8;
    }
    (carry == 0 && out < PRIME).then_some(out)
}

#[derive(Clone, Debug)]
pub struct P256Key {
    table: Table,
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
        let table = Table::new(ProjectivePoint::from(*key.as_affine()), KEY_WINDOW_BITS)?;
        Some(P256Key { table })
    }

    /// `sig` is r‖s, 64 bytes (IEEE P1363 / JWS); `digest` the SHA-256 of the signing input.
    /// ECDSA verification as SEC 1 §4.1.4 / BoringSSL `ECDSA_do_verify`: r, s in [1, n−1].
    pub fn verify_prehash(&self, digest: &[u8], sig: &[u8]) -> bool {
        let (Ok(r_bytes), Ok(s_bytes), Ok(digest)) = (
            <[u8; 32]>::try_from(&sig[..sig.len().min(32)]),
            <[u8; 32]>::try_from(&sig[32.min(sig.len())..]),
            <[u8; 32]>::try_from(digest),
        ) else {
            return false;
        };
        let (Some(r), Some(s)) = (
            Option::<Scalar>::from(Scalar::from_repr(FieldBytes::from(r_bytes))),
            Option::<Scalar>::from(Scalar::from_repr(FieldBytes::from(s_bytes))),
        ) else {
            return false;
        };
        if bool::from(r.is_zero()) || bool::from(s.is_zero()) {
            return false;
        }
        let Some(s_inv) = Option::<Scalar>::from(s.invert_vartime()) else {
            return false;
        };
        let e = <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(digest));
        let u1: [u8; 32] = (e * s_inv).to_repr().into();
        let u2: [u8; 32] = (r * s_inv).to_repr().into();
        let Some(g) = g_table() else {
            return false;
        };
        let mut acc = Jacobian::identity();
        g.add_mul(&mut acc, &u1);
        self.table.add_mul(&mut acc, &u2);
        if acc.is_identity() {
            return false;
        }
        let z2 = acc.z.square();
        let matches = |candidate: &[u8; 32]| match Option::<Fe>::from(Fe::from_repr(FieldBytes::from(*candidate))) {
            Some(c) => c.multiply(&z2) == acc.x,
            None => false,
        };
        matches(&r_bytes) || r_plus_n(&r_bytes).is_some_and(|rn| matches(&rn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_recompose() {
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151).wrapping_add(7);
        }
        for w in 2..=8 {
            for k in [k, [0xff; 32], [0; 32], [0x88; 32], [0x99; 32], [0x7f; 32]] {
                let d = signed_digits(&k, w);
                let half = 1i32 << (w - 1);
                assert!(d.iter().all(|&x| (-(half - 1)..=half).contains(&i32::from(x))));
                // Σ d_i·2^(w·i) back to bits, least significant first.
                let mut bits = vec![0i32; 8 * 40];
                let mut acc: Vec<i64> = d.iter().map(|&x| i64::from(x)).collect();
                acc.push(0);
                for i in 0..d.len() {
                    let c = acc[i].div_euclid(1 << w);
                    acc[i] -= c << w;
                    acc[i + 1] += c;
                    for b in 0..w {
                        bits[w * i + b] = ((acc[i] >> b) & 1) as i32;
                    }
                }
                assert_eq!(acc[d.len()], 0);
                for (i, bit) in bits.iter().enumerate().take(256) {
                    assert_eq!(*bit, i32::from((k[31 - i / 8] >> (i % 8)) & 1), "w {w} bit {i}");
                }
                assert!(bits[256..].iter().all(|&b| b == 0));
            }
        }
    }

    #[test]
    fn table_sum_matches_scalar_multiplication() {
        let g = g_table().unwrap();
        for seed in [1u64, 2, 3, 0xdead_beef, u64::MAX] {
            let k = Scalar::from(seed) * Scalar::from(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1).invert().unwrap();
            let bytes: [u8; 32] = k.to_repr().into();
            let mut acc = Jacobian::identity();
            g.add_mul(&mut acc, &bytes);
            let q = Table::new(ProjectivePoint::GENERATOR, KEY_WINDOW_BITS).unwrap();
            q.add_mul(&mut acc, &bytes);
            let expect = (ProjectivePoint::GENERATOR * (k + k)).to_affine();
            let zinv = acc.z.invert().unwrap();
            let x = acc.x.multiply(&zinv.square());
            let y = acc.y.multiply(&zinv.square().multiply(&zinv));
            assert_eq!(x.to_repr(), expect.x());
            assert_eq!(y.to_repr(), expect.y());
        }
    }
}
