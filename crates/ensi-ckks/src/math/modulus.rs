//! A word-sized prime modulus with Barrett and Shoup reduction.

/// A prime modulus q < 2^61 with the constants for fast modular arithmetic.
///
/// Barrett reduction handles arbitrary 128-bit products; Shoup multiplication
/// handles the common case of multiplying many values by one fixed constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Modulus {
    q: u64,
    /// floor(2^128 / q), split into two words.
    ratio_lo: u64,
    ratio_hi: u64,
}

impl Modulus {
    /// Largest supported modulus bit size. Keeping two bits of headroom lets
    /// sums of two reduced values and lazy accumulations stay in a word.
    pub const MAX_BITS: u32 = 61;

    /// Creates the constants for `q`; `q` must be odd, > 2, and < 2^61.
    pub fn new(q: u64) -> Self {
        assert!(
            q > 2 && q & 1 == 1 && q < (1u64 << Self::MAX_BITS),
            "invalid modulus {q}"
        );
        // floor(2^128 / q) = floor((2^128 - 1) / q) since q is odd and > 1.
        let ratio = u128::MAX / q as u128;
        Self {
            q,
            ratio_lo: ratio as u64,
            ratio_hi: (ratio >> 64) as u64,
        }
    }

    /// The modulus value.
    #[inline(always)]
    pub fn value(&self) -> u64 {
        self.q
    }

    /// Number of bits of q.
    pub fn bits(&self) -> u32 {
        64 - self.q.leading_zeros()
    }

    /// (a + b) mod q for a, b < q.
    #[inline(always)]
    pub fn add(&self, a: u64, b: u64) -> u64 {
        let s = a + b;
        if s >= self.q {
            s - self.q
        } else {
            s
        }
    }

    /// (a - b) mod q for a, b < q.
    #[inline(always)]
    pub fn sub(&self, a: u64, b: u64) -> u64 {
        if a >= b {
            a - b
        } else {
            a + self.q - b
        }
    }

    /// -a mod q for a < q.
    #[inline(always)]
    pub fn neg(&self, a: u64) -> u64 {
        if a == 0 {
            0
        } else {
            self.q - a
        }
    }

    /// x mod q for any 128-bit x (Barrett reduction with floor(2^128/q)).
    #[inline(always)]
    pub fn reduce_u128(&self, x: u128) -> u64 {
        let x0 = x as u64;
        let x1 = (x >> 64) as u64;
        // Estimate floor(x * ratio / 2^128) from the three significant partial products.
        let carry = ((x0 as u128 * self.ratio_lo as u128) >> 64) as u64;
        let t = x0 as u128 * self.ratio_hi as u128 + carry as u128;
        let u = x1 as u128 * self.ratio_lo as u128 + (t as u64) as u128;
        let qhat = x1
            .wrapping_mul(self.ratio_hi)
            .wrapping_add((t >> 64) as u64)
            .wrapping_add((u >> 64) as u64);
        let r = x0.wrapping_sub(qhat.wrapping_mul(self.q));
        // The estimate is short by at most 2 (q < 2^61 keeps r in a word).
        let r = if r >= self.q { r - self.q } else { r };
        if r >= self.q {
            r - self.q
        } else {
            r
        }
    }

    /// x mod q for any 64-bit x.
    #[inline(always)]
    pub fn reduce(&self, x: u64) -> u64 {
        self.reduce_u128(x as u128)
    }

    /// x mod q for a signed 64-bit x.
    #[inline(always)]
    pub fn reduce_i64(&self, x: i64) -> u64 {
        let r = self.reduce(x.unsigned_abs());
        if x < 0 {
            self.neg(r)
        } else {
            r
        }
    }

    /// x mod q for a signed 128-bit x.
    #[inline(always)]
    pub fn reduce_i128(&self, x: i128) -> u64 {
        let r = self.reduce_u128(x.unsigned_abs());
        if x < 0 {
            self.neg(r)
        } else {
            r
        }
    }

    /// a * b mod q.
    #[inline(always)]
    pub fn mul(&self, a: u64, b: u64) -> u64 {
        self.reduce_u128(a as u128 * b as u128)
    }

    /// The Shoup companion of a constant w < q: floor(w * 2^64 / q).
    #[inline(always)]
    pub fn shoup(&self, w: u64) -> u64 {
        (((w as u128) << 64) / self.q as u128) as u64
    }

    /// a * w mod q for a < 2^64, given w < q and w' = shoup(w).
    #[inline(always)]
    pub fn mul_shoup(&self, a: u64, w: u64, w_shoup: u64) -> u64 {
        let hi = ((a as u128 * w_shoup as u128) >> 64) as u64;
        let r = a.wrapping_mul(w).wrapping_sub(hi.wrapping_mul(self.q));
        if r >= self.q {
            r - self.q
        } else {
            r
        }
    }

    /// base^exp mod q.
    pub fn pow(&self, mut base: u64, mut exp: u64) -> u64 {
        let mut acc = 1u64;
        base = self.reduce(base);
        while exp > 0 {
            if exp & 1 == 1 {
                acc = self.mul(acc, base);
            }
            base = self.mul(base, base);
            exp >>= 1;
        }
        acc
    }

    /// a^-1 mod q (q prime, a not divisible by q).
    pub fn inv(&self, a: u64) -> u64 {
        let a = self.reduce(a);
        assert!(a != 0, "zero has no inverse");
        self.pow(a, self.q - 2)
    }

    /// The centered representative of a < q in (-q/2, q/2].
    #[inline(always)]
    pub fn center(&self, a: u64) -> i64 {
        if a > self.q / 2 {
            a as i64 - self.q as i64
        } else {
            a as i64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Primes of 30, 40, 50 and 60 bits (the sizes used by the presets), 1 mod 2^17.
    const PRIMES: [u64; 4] = [
        1073872897,
        1099512938497,
        1125899908022273,
        1152921504614055937,
    ];

    #[test]
    fn test_primes_are_prime() {
        for q in PRIMES {
            assert!(crate::math::primes::is_prime(q), "{q}");
        }
    }

    proptest! {
        #[test]
        fn barrett_matches_u128_rem(x in any::<u128>(), i in 0usize..4) {
            let m = Modulus::new(PRIMES[i]);
            prop_assert_eq!(m.reduce_u128(x) as u128, x % PRIMES[i] as u128);
        }

        #[test]
        fn shoup_matches_plain(a in any::<u64>(), w in any::<u64>(), i in 0usize..4) {
            let m = Modulus::new(PRIMES[i]);
            let w = w % PRIMES[i];
            let expect = ((a as u128 * w as u128) % PRIMES[i] as u128) as u64;
            prop_assert_eq!(m.mul_shoup(a, w, m.shoup(w)), expect);
        }

        #[test]
        fn signed_reduction(x in any::<i64>(), i in 0usize..4) {
            let m = Modulus::new(PRIMES[i]);
            let expect = x.rem_euclid(PRIMES[i] as i64) as u64;
            prop_assert_eq!(m.reduce_i64(x), expect);
        }
    }

    #[test]
    fn inverse() {
        for &q in &PRIMES {
            let m = Modulus::new(q);
            for a in [1u64, 2, 12345, q - 1] {
                assert_eq!(m.mul(a, m.inv(a)), 1);
            }
        }
    }
}
