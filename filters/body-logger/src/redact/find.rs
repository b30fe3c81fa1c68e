//! Finding the next byte a scanner cares about, 8 bytes at a time. Every scanner walks the whole
//! capture, and most of a body's bytes are ordinary; in the shipped build (opt-level "z",
//! wasm32) a byte-at-a-time loop costs ~10 instructions a byte, a word test ~2. A word test only
//! says "maybe in these 8 bytes" (it has no false negatives); the byte test then decides, so
//! every function here returns exactly what the byte-at-a-time loop would
//! (`find_matches_the_byte_loop`). Plain integer code: wasm32 has 64-bit integers, and no SIMD
//! is assumed.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Non-zero if some byte of `v` is below `n` (`n` ≤ 128).
#[inline(always)]
fn has_less(v: u64, n: u8) -> u64 {
    v.wrapping_sub(LO.wrapping_mul(u64::from(n))) & !v & HI
}

/// Non-zero if some byte of `v` is `c`.
#[inline(always)]
fn has_byte(v: u64, c: u8) -> u64 {
    has_less(v ^ LO.wrapping_mul(u64::from(c)), 1)
}

/// The first `i >= from` with `byte(hay[i])`, or `hay.len()`. `word` must be non-zero for every
/// 8 bytes that hold such a byte.
#[inline(always)]
fn find_by(hay: &[u8], from: usize, word: impl Fn(u64) -> u64, byte: impl Fn(u8) -> bool) -> usize {
    let mut i = from.min(hay.len());
    while let Some(chunk) = hay.get(i..i + 8) {
        let Ok(w) = <[u8; 8]>::try_from(chunk) else { break };
        if word(u64::from_le_bytes(w)) != 0 {
            break;
        }
        i += 8;
    }
    hay.get(i..).and_then(|rest| rest.iter().position(|c| byte(*c))).map_or(hay.len(), |p| i + p)
}

/// The first `c` at or after `from`, or `hay.len()`.
pub(super) fn byte(hay: &[u8], from: usize, c: u8) -> usize {
    find_by(hay, from, |w| has_byte(w, c), |x| x == c)
}

/// The first `a` or `b` at or after `from`, or `hay.len()`.
pub(super) fn either(hay: &[u8], from: usize, a: u8, b: u8) -> usize {
    find_by(hay, from, |w| has_byte(w, a) | has_byte(w, b), |x| x == a || x == b)
}

/// The first `a`, `b` or `c` at or after `from`, or `hay.len()`.
pub(super) fn any3(hay: &[u8], from: usize, a: u8, b: u8, c: u8) -> usize {
    find_by(hay, from, |w| has_byte(w, a) | has_byte(w, b) | has_byte(w, c), |x| x == a || x == b || x == c)
}

/// The first ASCII digit at or after `from`, or `hay.len()`.
pub(super) fn digit(hay: &[u8], from: usize) -> usize {
    // `x ^ 0x30` is below 10 exactly for `0`..`9`.
    find_by(hay, from, |w| has_less(w ^ LO.wrapping_mul(0x30), 10), |x| x.is_ascii_digit())
}

/// The first `letter` (a lowercase ASCII letter) in either case at or after `from`, or
/// `hay.len()`.
pub(super) fn letter(hay: &[u8], from: usize, letter: u8) -> usize {
    // `x | 0x20` is `letter` exactly for its two cases.
    find_by(hay, from, |w| has_byte(w | LO.wrapping_mul(0x20), letter), |x| x.to_ascii_lowercase() == letter)
}

#[cfg(test)]
mod tests {
    /// Every function against its byte loop, over every start and many contents, including the
    /// bytes next to the ones searched for (borrows across bytes are where word tricks go wrong).
    #[test]
    fn find_matches_the_byte_loop() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet: &[u8] = b"\"\\:=%09/aAbBeEyY\x00\x01\x7f\x80\xff \x2f\x3a\x21\x5c\x3d";
        for len in 0..40 {
            for _ in 0..200 {
                let hay: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if x.is_multiple_of(4) {
                            (x >> 32) as u8
                        } else {
                            alphabet[(x >> 40) as usize % alphabet.len()]
                        }
                    })
                    .collect();
                let naive = |from: usize, f: &dyn Fn(u8) -> bool| {
                    hay.iter().enumerate().skip(from).find(|(_, c)| f(**c)).map_or(hay.len(), |(i, _)| i)
                };
                for from in 0..=len + 1 {
                    assert_eq!(super::byte(&hay, from, b'"'), naive(from, &|c| c == b'"'), "{hay:?} {from}");
                    assert_eq!(super::byte(&hay, from, 0), naive(from, &|c| c == 0), "{hay:?} {from}");
                    assert_eq!(
                        super::either(&hay, from, b'"', b'\\'),
                        naive(from, &|c| c == b'"' || c == b'\\'),
                        "{hay:?} {from}"
                    );
                    assert_eq!(
                        super::any3(&hay, from, b':', b'=', b'%'),
                        naive(from, &|c| matches!(c, b':' | b'=' | b'%')),
                        "{hay:?} {from}"
                    );
                    assert_eq!(super::digit(&hay, from), naive(from, &|c| c.is_ascii_digit()), "{hay:?} {from}");
                    for l in [b'b', b'e', b'y'] {
                        assert_eq!(
                            super::letter(&hay, from, l),
                            naive(from, &|c| c.to_ascii_lowercase() == l),
                            "{hay:?} {from}"
                        );
                    }
                }
            }
        }
    }
}
