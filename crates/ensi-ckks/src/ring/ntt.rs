//! The negacyclic NTT for one prime, through `tfhe-ntt`, plus a plain
//! reference transform that the tests compare it with.
//!
//! `tfhe-ntt` picks AVX-512 IFMA (primes below ~2^50), AVX-512 or scalar code
//! at run time. Its forward output is in bit-reversed order and its inverse is
//! unnormalized; [`NttPlan::inverse`] multiplies by N^-1 so that callers never
//! see either quirk except through [`crate::ring::Ring::automorphism_ntt_map`].
//! Its pointwise products can leave a word in [q, 2q); the products here
//! return reduced words (see [`NttPlan::mul_acc`]).

use super::kernels;
use crate::math::Modulus;

/// NTT plan and pointwise kernels for one prime.
#[derive(Clone)]
pub struct NttPlan {
    plan: tfhe_ntt::prime64::Plan,
    modulus: Modulus,
}

/// Pointwise products are computed in blocks of this many words so that a
/// product-then-store never needs a heap buffer.
const BLOCK: usize = 256;

impl NttPlan {
    /// Builds the plan for degree `n` and prime modulus `m` (m = 1 mod 2n).
    pub fn new(n: usize, m: Modulus) -> Self {
        let plan = tfhe_ntt::prime64::Plan::try_new(n, m.value())
            .unwrap_or_else(|| panic!("{} is not an NTT prime for N = {n}", m.value()));
        Self { plan, modulus: m }
    }

    /// The modulus.
    pub fn modulus(&self) -> &Modulus {
        &self.modulus
    }

    /// Coefficients (standard order) to NTT values (bit-reversed order).
    #[inline]
    pub fn forward(&self, a: &mut [u64]) {
        self.debug_check_reduced(a);
        self.plan.fwd(a);
    }

    /// NTT values (bit-reversed order) to coefficients, normalized by N^-1.
    #[inline]
    pub fn inverse(&self, a: &mut [u64]) {
        self.debug_check_reduced(a);
        self.plan.inv(a);
        self.plan.normalize(a);
    }

    /// Inverse NTT without the N^-1 factor, for callers that fold it into a
    /// later constant multiplication.
    #[inline]
    pub fn inverse_unnormalized(&self, a: &mut [u64]) {
        self.debug_check_reduced(a);
        self.plan.inv(a);
    }

    /// The transforms take reduced words only: one word in [q, 2q) silently
    /// garbles half the output. Checked in debug builds.
    #[inline]
    fn debug_check_reduced(&self, a: &[u64]) {
        debug_assert!(
            a.iter().all(|&x| x < self.modulus.value()),
            "NTT input not reduced modulo {}",
            self.modulus.value()
        );
    }

    /// acc += a * b pointwise (all reduced; the result is reduced).
    ///
    /// `tfhe-ntt`'s `mul_accumulate` can leave a word in [q, 2q): its Barrett
    /// quotient may be two short and only one conditional subtraction follows.
    /// That happens for about one word in 10^8, and an unreduced word wrecks
    /// what comes next (an inverse NTT of it garbles half the coefficients:
    /// a key switch in every few hundred decrypted to noise before this was
    /// caught). So every block is brought into [0, q) once more while it is
    /// still in cache.
    pub fn mul_acc(&self, acc: &mut [u64], a: &[u64], b: &[u64]) {
        let q = self.modulus.value();
        for ((z, x), y) in acc
            .chunks_mut(BLOCK)
            .zip(a.chunks(BLOCK))
            .zip(b.chunks(BLOCK))
        {
            self.plan.mul_accumulate(z, x, y);
            kernels::reduce_once(q, z);
        }
    }

    /// a *= b pointwise (all reduced; the result is reduced).
    pub fn mul_assign(&self, a: &mut [u64], b: &[u64]) {
        let q = self.modulus.value();
        let mut tmp = [0u64; BLOCK];
        for (x, y) in a.chunks_mut(BLOCK).zip(b.chunks(BLOCK)) {
            let t = &mut tmp[..x.len()];
            t.fill(0);
            self.plan.mul_accumulate(t, x, y);
            kernels::reduce_once(q, t);
            x.copy_from_slice(t);
        }
    }

    /// out = a * b pointwise (all reduced; the result is reduced).
    pub fn mul_into(&self, out: &mut [u64], a: &[u64], b: &[u64]) {
        out.fill(0);
        self.mul_acc(out, a, b);
    }
}

/// Plain O(N^2) negacyclic transform used only to check the fast one:
/// `out[j] = a(psi^(2 brev(j) + 1))`, the layout `tfhe-ntt` produces.
#[cfg(test)]
pub(crate) fn reference_forward(a: &[u64], psi: u64, m: &Modulus) -> Vec<u64> {
    let n = a.len();
    let log_n = n.trailing_zeros();
    let brev = |x: usize| x.reverse_bits() >> (usize::BITS - log_n);
    (0..n)
        .map(|j| {
            let x = m.pow(psi, (2 * brev(j) + 1) as u64);
            // Horner evaluation at x.
            a.iter().rev().fold(0u64, |acc, &c| m.add(m.mul(acc, x), c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::primes::ntt_primes;

    fn random_poly(n: usize, q: u64, seed: u64) -> Vec<u64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 11) % q
            })
            .collect()
    }

    #[test]
    fn fast_ntt_matches_reference_evaluation() {
        let n = 64;
        for &q in &ntt_primes(6, &[30, 40, 50, 60], &[]).unwrap() {
            let m = Modulus::new(q);
            let plan = NttPlan::new(n, m);
            // The transform of X lists the evaluation points; position 0 is psi itself.
            let mut x = vec![0u64; n];
            x[1] = 1;
            plan.forward(&mut x);
            let psi = x[0];
            assert_eq!(
                m.pow(psi, n as u64),
                q - 1,
                "psi must be a primitive 2N-th root"
            );
            let a = random_poly(n, q, q);
            let mut fast = a.clone();
            plan.forward(&mut fast);
            assert_eq!(fast, reference_forward(&a, psi, &m));
            plan.inverse(&mut fast);
            assert_eq!(fast, a);
        }
    }

    #[test]
    fn pointwise_kernels_match_scalar() {
        let n = 1 << 10;
        for &q in &ntt_primes(10, &[40, 50, 60], &[]).unwrap() {
            let m = Modulus::new(q);
            let plan = NttPlan::new(n, m);
            let a = random_poly(n, q, 1);
            let b = random_poly(n, q, 2);
            let c = random_poly(n, q, 3);
            let mut x = a.clone();
            plan.mul_assign(&mut x, &b);
            let mut acc = c.clone();
            plan.mul_acc(&mut acc, &a, &b);
            for i in 0..n {
                assert_eq!(x[i], m.mul(a[i], b[i]));
                assert_eq!(acc[i], m.add(c[i], m.mul(a[i], b[i])));
            }
        }
    }

    /// Three products accumulated at one word of a key switch's special
    /// prime (q just above 2^50, `n16-l20`), captured when one key switch in
    /// a few hundred decrypted to noise: `tfhe-ntt`'s `mul_accumulate` left
    /// this word at its residue plus q, and the inverse NTT that followed
    /// garbled every odd coefficient. The wrappers must return the residue.
    #[test]
    fn products_are_fully_reduced_where_tfhe_ntt_leaves_a_word_unreduced() {
        let q = 1125899915100161u64;
        let digits = [78812145887874u64, 727871052268946, 1044569347706176];
        let key = [850076142435571u64, 72004390992085, 1056232354817175];
        let m = Modulus::new(q);
        let n = 16;
        let plan = NttPlan::new(n, m);
        let want = (0..3).fold(0, |acc, j| m.add(acc, m.mul(digits[j], key[j])));
        // The raw library, for the record: the same sums without the wrapper.
        let mut raw = vec![0u64; n];
        let mut ours = vec![0u64; n];
        for j in 0..3 {
            let (x, y) = (vec![digits[j]; n], vec![key[j]; n]);
            plan.plan.mul_accumulate(&mut raw, &x, &y);
            plan.mul_acc(&mut ours, &x, &y);
        }
        assert!(
            raw.iter().all(|&v| v % q == want),
            "congruent, reduced or not"
        );
        assert!(ours.iter().all(|&v| v == want), "{ours:?} != {want}");
        let mut prod = vec![0u64; n];
        plan.mul_into(&mut prod, &vec![digits[2]; n], &vec![key[2]; n]);
        assert!(prod.iter().all(|&v| v == m.mul(digits[2], key[2])));
    }
}
