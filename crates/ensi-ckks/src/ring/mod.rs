//! Polynomials in RNS form over the ring Z_Q[X]/(X^N + 1).
//!
//! Second layer of the crate: it knows moduli and NTTs, not encodings or keys.
//! A [`Ring`] holds every modulus of the chain, Q primes first, then the
//! special primes P; an [`RnsPoly`] holds the residues of one polynomial for a
//! prefix of the Q primes (its level) and, optionally, all of P.

pub mod basis;
pub mod kernels;
pub mod ntt;
pub mod pool;

use crate::math::Modulus;
use ntt::NttPlan;
use rayon::prelude::*;

/// The moduli and NTT plans of one parameter set.
#[derive(Clone)]
pub struct Ring {
    log_n: u32,
    /// Q primes then P primes.
    moduli: Vec<Modulus>,
    plans: Vec<NttPlan>,
    q_count: usize,
}

/// The residues of one polynomial, limb after limb, each limb N words.
///
/// Limbs `0..q_limbs` are modulo q_0..q_{q_limbs-1}; limbs after them are
/// modulo p_0..p_{p_limbs-1}. `ntt` says whether the limbs hold coefficients
/// or NTT values (in tfhe-ntt's bit-reversed order).
#[derive(Debug, PartialEq, Eq)]
pub struct RnsPoly {
    pub(crate) data: Vec<u64>,
    pub(crate) q_limbs: usize,
    pub(crate) p_limbs: usize,
    pub(crate) ntt: bool,
}

impl Clone for RnsPoly {
    fn clone(&self) -> Self {
        let mut data = pool::take(self.data.len());
        data.copy_from_slice(&self.data);
        Self { data, ..*self }
    }
}

impl Drop for RnsPoly {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.data));
    }
}

impl RnsPoly {
    /// Number of limbs.
    pub fn limbs(&self) -> usize {
        self.q_limbs + self.p_limbs
    }
    /// Number of Q limbs (the level plus one).
    pub fn q_limbs(&self) -> usize {
        self.q_limbs
    }
    /// Number of P limbs.
    pub fn p_limbs(&self) -> usize {
        self.p_limbs
    }
    /// Whether the limbs hold NTT values.
    pub fn is_ntt(&self) -> bool {
        self.ntt
    }
    /// The residues of limb `i`.
    pub fn limb(&self, i: usize) -> &[u64] {
        let n = self.data.len() / self.limbs();
        &self.data[i * n..(i + 1) * n]
    }
    /// The residues of limb `i`, mutable.
    pub fn limb_mut(&mut self, i: usize) -> &mut [u64] {
        let n = self.data.len() / self.limbs();
        &mut self.data[i * n..(i + 1) * n]
    }
    /// All words, mutable (benchmarks and tests fill polynomials directly).
    #[doc(hidden)]
    pub fn data_mut_for_bench(&mut self) -> &mut [u64] {
        &mut self.data
    }
    /// All words, limb after limb.
    pub fn as_words(&self) -> &[u64] {
        &self.data
    }
    /// Drops the P limbs.
    pub fn drop_p(&mut self) {
        let n = self.data.len() / self.limbs();
        self.data.truncate(self.q_limbs * n);
        self.p_limbs = 0;
    }
    /// Drops Q limbs from the top so that `q_limbs` remain (P limbs kept).
    pub fn truncate_q(&mut self, q_limbs: usize) {
        assert!(q_limbs <= self.q_limbs);
        if q_limbs == self.q_limbs {
            return;
        }
        let n = self.data.len() / self.limbs();
        self.data.drain(q_limbs * n..self.q_limbs * n);
        self.q_limbs = q_limbs;
    }
}

impl Ring {
    /// Builds the ring for N = 2^log_n over `q` then `p` (all NTT-friendly primes).
    pub fn new(log_n: u32, q: &[u64], p: &[u64]) -> Self {
        let n = 1usize << log_n;
        let moduli: Vec<Modulus> = q.iter().chain(p).map(|&v| Modulus::new(v)).collect();
        let plans = moduli.iter().map(|m| NttPlan::new(n, *m)).collect();
        Self {
            log_n,
            moduli,
            plans,
            q_count: q.len(),
        }
    }

    /// log2 N.
    pub fn log_n(&self) -> u32 {
        self.log_n
    }
    /// N.
    pub fn n(&self) -> usize {
        1 << self.log_n
    }
    /// Number of Q primes.
    pub fn q_count(&self) -> usize {
        self.q_count
    }
    /// Number of P primes.
    pub fn p_count(&self) -> usize {
        self.moduli.len() - self.q_count
    }
    /// All moduli, Q then P.
    pub fn moduli(&self) -> &[Modulus] {
        &self.moduli
    }
    /// The Q moduli.
    pub fn q(&self) -> &[Modulus] {
        &self.moduli[..self.q_count]
    }
    /// The P moduli.
    pub fn p(&self) -> &[Modulus] {
        &self.moduli[self.q_count..]
    }

    /// Index into [`Ring::moduli`] of limb `i` of a polynomial with `q_limbs` Q limbs.
    #[inline]
    pub fn modulus_index(&self, q_limbs: usize, i: usize) -> usize {
        if i < q_limbs {
            i
        } else {
            self.q_count + (i - q_limbs)
        }
    }

    /// Modulus of limb `i` of `poly`.
    #[inline]
    pub fn modulus_of(&self, poly: &RnsPoly, i: usize) -> &Modulus {
        &self.moduli[self.modulus_index(poly.q_limbs, i)]
    }

    /// NTT plan of limb `i` of a polynomial with `q_limbs` Q limbs.
    #[inline]
    pub fn plan(&self, q_limbs: usize, i: usize) -> &NttPlan {
        &self.plans[self.modulus_index(q_limbs, i)]
    }

    /// The zero polynomial.
    pub fn zero(&self, q_limbs: usize, p_limbs: usize, ntt: bool) -> RnsPoly {
        assert!(q_limbs <= self.q_count && p_limbs <= self.p_count());
        RnsPoly {
            data: pool::take_zeroed((q_limbs + p_limbs) * self.n()),
            q_limbs,
            p_limbs,
            ntt,
        }
    }

    /// A polynomial with unspecified contents, for callers that overwrite every limb.
    pub(crate) fn scratch(&self, q_limbs: usize, p_limbs: usize, ntt: bool) -> RnsPoly {
        assert!(q_limbs <= self.q_count && p_limbs <= self.p_count());
        RnsPoly {
            data: pool::take((q_limbs + p_limbs) * self.n()),
            q_limbs,
            p_limbs,
            ntt,
        }
    }

    /// The first `q_limbs` Q limbs of `a` (a copy, P limbs dropped).
    pub fn q_prefix(&self, a: &RnsPoly, q_limbs: usize) -> RnsPoly {
        assert!(q_limbs <= a.q_limbs);
        let n = self.n();
        let mut data = pool::take(q_limbs * n);
        data.copy_from_slice(&a.data[..q_limbs * n]);
        RnsPoly {
            data,
            q_limbs,
            p_limbs: 0,
            ntt: a.ntt,
        }
    }

    /// A polynomial whose limbs are the residues of signed coefficients.
    pub fn from_signed(&self, coeffs: &[i64], q_limbs: usize, p_limbs: usize) -> RnsPoly {
        assert_eq!(coeffs.len(), self.n());
        // Every limb is written below.
        let mut poly = self.scratch(q_limbs, p_limbs, false);
        let n = self.n();
        poly.data
            .par_chunks_mut(n)
            .enumerate()
            .for_each(|(i, limb)| {
                let m = &self.moduli[self.modulus_index(q_limbs, i)];
                for (r, &c) in limb.iter_mut().zip(coeffs) {
                    *r = m.reduce_i64(c);
                }
            });
        poly
    }

    /// Forward NTT of every limb.
    pub fn ntt(&self, poly: &mut RnsPoly) {
        assert!(!poly.ntt, "polynomial already in NTT form");
        let q_limbs = poly.q_limbs;
        poly.data
            .par_chunks_mut(self.n())
            .enumerate()
            .for_each(|(i, limb)| self.plan(q_limbs, i).forward(limb));
        poly.ntt = true;
    }

    /// Inverse NTT of every limb.
    pub fn intt(&self, poly: &mut RnsPoly) {
        assert!(poly.ntt, "polynomial not in NTT form");
        let q_limbs = poly.q_limbs;
        poly.data
            .par_chunks_mut(self.n())
            .enumerate()
            .for_each(|(i, limb)| self.plan(q_limbs, i).inverse(limb));
        poly.ntt = false;
    }

    fn check_same_shape(a: &RnsPoly, b: &RnsPoly) {
        assert!(
            a.q_limbs == b.q_limbs && a.p_limbs == b.p_limbs && a.ntt == b.ntt,
            "mismatched polynomial shapes"
        );
    }

    /// Applies `f(modulus, a_limb, b_limb)` to matching limbs in parallel.
    fn zip_limbs(
        &self,
        a: &mut RnsPoly,
        b: &RnsPoly,
        f: impl Fn(&Modulus, &mut [u64], &[u64]) + Sync,
    ) {
        Self::check_same_shape(a, b);
        let n = self.n();
        let q_limbs = a.q_limbs;
        a.data
            .par_chunks_mut(n)
            .zip(b.data.par_chunks(n))
            .enumerate()
            .for_each(|(i, (x, y))| f(&self.moduli[self.modulus_index(q_limbs, i)], x, y));
    }

    /// a + b into a new polynomial.
    pub fn add(&self, a: &RnsPoly, b: &RnsPoly) -> RnsPoly {
        self.zip_into(a, b, |m, x, y| m.add(x, y))
    }

    /// a - b into a new polynomial.
    pub fn sub(&self, a: &RnsPoly, b: &RnsPoly) -> RnsPoly {
        self.zip_into(a, b, |m, x, y| m.sub(x, y))
    }

    /// out = f(a, b) limb-wise into a new polynomial: one pass, no copy of `a` first.
    fn zip_into(
        &self,
        a: &RnsPoly,
        b: &RnsPoly,
        f: impl Fn(&Modulus, u64, u64) -> u64 + Sync,
    ) -> RnsPoly {
        Self::check_same_shape(a, b);
        let n = self.n();
        let q_limbs = a.q_limbs;
        let mut out = self.scratch(a.q_limbs, a.p_limbs, a.ntt);
        out.data
            .par_chunks_mut(n)
            .zip(a.data.par_chunks(n).zip(b.data.par_chunks(n)))
            .enumerate()
            .for_each(|(i, (o, (x, y)))| {
                let m = &self.moduli[self.modulus_index(q_limbs, i)];
                for (o, (&x, &y)) in o.iter_mut().zip(x.iter().zip(y)) {
                    *o = f(m, x, y);
                }
            });
        out
    }

    /// a += b.
    pub fn add_assign(&self, a: &mut RnsPoly, b: &RnsPoly) {
        self.zip_limbs(a, b, |m, x, y| {
            for (x, &y) in x.iter_mut().zip(y) {
                *x = m.add(*x, y);
            }
        });
    }

    /// a -= b.
    pub fn sub_assign(&self, a: &mut RnsPoly, b: &RnsPoly) {
        self.zip_limbs(a, b, |m, x, y| {
            for (x, &y) in x.iter_mut().zip(y) {
                *x = m.sub(*x, y);
            }
        });
    }

    /// a = -a.
    pub fn neg_assign(&self, a: &mut RnsPoly) {
        let n = self.n();
        let q_limbs = a.q_limbs;
        a.data.par_chunks_mut(n).enumerate().for_each(|(i, x)| {
            let m = &self.moduli[self.modulus_index(q_limbs, i)];
            for x in x.iter_mut() {
                *x = m.neg(*x);
            }
        });
    }

    /// a *= b pointwise (both in NTT form).
    pub fn mul_assign(&self, a: &mut RnsPoly, b: &RnsPoly) {
        assert!(a.ntt && b.ntt);
        let q_limbs = a.q_limbs;
        Self::check_same_shape(a, b);
        let n = self.n();
        a.data
            .par_chunks_mut(n)
            .zip(b.data.par_chunks(n))
            .enumerate()
            .for_each(|(i, (x, y))| self.plan(q_limbs, i).mul_assign(x, y));
    }

    /// acc += a * b pointwise (all in NTT form, Q limbs only). `a` and `b`
    /// may have more Q limbs than `acc` (a key at a higher level): only the
    /// first ones are used, without copying them.
    pub fn mul_acc(&self, acc: &mut RnsPoly, a: &RnsPoly, b: &RnsPoly) {
        assert!(acc.ntt && a.ntt && b.ntt);
        let same = acc.q_limbs == a.q_limbs
            && acc.q_limbs == b.q_limbs
            && acc.p_limbs == a.p_limbs
            && acc.p_limbs == b.p_limbs;
        assert!(
            same || (acc.p_limbs == 0 && a.q_limbs >= acc.q_limbs && b.q_limbs >= acc.q_limbs),
            "mismatched polynomial shapes"
        );
        let n = self.n();
        let q_limbs = acc.q_limbs;
        let len = acc.data.len();
        acc.data
            .par_chunks_mut(n)
            .zip(a.data[..len].par_chunks(n).zip(b.data[..len].par_chunks(n)))
            .enumerate()
            .for_each(|(i, (z, (x, y)))| self.plan(q_limbs, i).mul_acc(z, x, y));
    }

    /// a * b pointwise into a new polynomial (both in NTT form, same shape).
    pub fn mul(&self, a: &RnsPoly, b: &RnsPoly) -> RnsPoly {
        assert!(a.ntt && b.ntt);
        Self::check_same_shape(a, b);
        let n = self.n();
        let mut out = self.scratch(a.q_limbs, a.p_limbs, true);
        let q_limbs = a.q_limbs;
        out.data
            .par_chunks_mut(n)
            .zip(a.data.par_chunks(n).zip(b.data.par_chunks(n)))
            .enumerate()
            .for_each(|(i, (z, (x, y)))| self.plan(q_limbs, i).mul_into(z, x, y));
        out
    }

    /// a *= c for one constant given by its residue in each limb (as the
    /// modulus list of `a`); constants must be reduced.
    pub fn mul_scalar_rns(&self, a: &mut RnsPoly, residues: &[u64]) {
        assert_eq!(residues.len(), a.limbs());
        let n = self.n();
        let q_limbs = a.q_limbs;
        a.data.par_chunks_mut(n).enumerate().for_each(|(i, x)| {
            let m = &self.moduli[self.modulus_index(q_limbs, i)];
            let w = residues[i];
            let ws = m.shoup(w);
            for x in x.iter_mut() {
                *x = m.mul_shoup(*x, w, ws);
            }
        });
    }

    /// a += c for a constant polynomial c (in NTT form a constant adds to every value).
    pub fn add_scalar_rns(&self, a: &mut RnsPoly, residues: &[u64]) {
        assert_eq!(residues.len(), a.limbs());
        let n = self.n();
        let q_limbs = a.q_limbs;
        let ntt = a.ntt;
        a.data.par_chunks_mut(n).enumerate().for_each(|(i, x)| {
            let m = &self.moduli[self.modulus_index(q_limbs, i)];
            if ntt {
                for x in x.iter_mut() {
                    *x = m.add(*x, residues[i]);
                }
            } else {
                x[0] = m.add(x[0], residues[i]);
            }
        });
    }

    /// The Galois element X -> X^(5^step) that rotates slots left by `step`
    /// (negative steps rotate right).
    pub fn galois_element_for_rotation(&self, step: i64) -> u64 {
        let mask = (2u64 << self.log_n) - 1;
        let mut e = step.rem_euclid((self.n() / 2) as i64) as u64;
        let (mut g, mut base) = (1u64, 5u64);
        while e > 0 {
            if e & 1 == 1 {
                g = g.wrapping_mul(base) & mask;
            }
            base = base.wrapping_mul(base) & mask;
            e >>= 1;
        }
        g
    }

    /// The Galois element X -> X^(2N-1) that conjugates slots.
    pub fn galois_element_conjugate(&self) -> u64 {
        (2u64 << self.log_n) - 1
    }

    /// Index map of the automorphism X -> X^k on NTT values in tfhe-ntt's
    /// bit-reversed order: `out[j] = in[map[j]]`.
    ///
    /// Position j holds the evaluation at psi^(2 brev(j) + 1); the automorphism
    /// moves the evaluation at psi^(e k) to the position of psi^e.
    pub fn automorphism_ntt_map(&self, k: u64) -> Vec<u32> {
        let n = self.n();
        let log_n = self.log_n;
        let mask = (2 * n - 1) as u64;
        let brev = |x: usize| x.reverse_bits() >> (usize::BITS - log_n);
        (0..n)
            .map(|j| {
                let e = (2 * brev(j) + 1) as u64;
                let ek = (e * k) & mask;
                brev(((ek - 1) / 2) as usize) as u32
            })
            .collect()
    }

    /// X -> X^k applied to `a` (either form); k odd.
    pub fn automorphism(&self, a: &RnsPoly, k: u64) -> RnsPoly {
        if a.ntt {
            let map = self.automorphism_ntt_map(k);
            self.automorphism_ntt_with_map(a, &map)
        } else {
            self.automorphism_coeff(a, k)
        }
    }

    /// X -> X^k on NTT values with a precomputed map.
    pub fn automorphism_ntt_with_map(&self, a: &RnsPoly, map: &[u32]) -> RnsPoly {
        assert!(a.ntt);
        let n = self.n();
        let mut out = RnsPoly {
            data: pool::take(a.data.len()),
            ..*a
        };
        out.data
            .par_chunks_mut(n)
            .zip(a.data.par_chunks(n))
            .for_each(|(o, x)| {
                for (o, &src) in o.iter_mut().zip(map) {
                    *o = x[src as usize];
                }
            });
        out
    }

    /// X -> X^k on coefficients: coefficient i moves to i k mod 2N, negated past N.
    pub fn automorphism_coeff(&self, a: &RnsPoly, k: u64) -> RnsPoly {
        assert!(!a.ntt);
        assert!(k & 1 == 1, "Galois element must be odd");
        let n = self.n();
        let mask = 2 * n - 1;
        let q_limbs = a.q_limbs;
        let mut out = RnsPoly {
            data: pool::take_zeroed(a.data.len()),
            ..*a
        };
        out.data
            .par_chunks_mut(n)
            .zip(a.data.par_chunks(n))
            .enumerate()
            .for_each(|(l, (o, x))| {
                let m = &self.moduli[self.modulus_index(q_limbs, l)];
                for (i, &c) in x.iter().enumerate() {
                    let j = (i * k as usize) & mask;
                    if j < n {
                        o[j] = c;
                    } else {
                        o[j - n] = m.neg(c);
                    }
                }
            });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::primes::ntt_primes;

    fn random_poly(ring: &Ring, q_limbs: usize, p_limbs: usize, seed: u64) -> RnsPoly {
        let mut s = seed;
        let coeffs: Vec<i64> = (0..ring.n())
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 20) as i64 - (1 << 43)
            })
            .collect();
        ring.from_signed(&coeffs, q_limbs, p_limbs)
    }

    #[test]
    fn automorphism_in_ntt_form_matches_coefficient_form() {
        let primes = ntt_primes(8, &[40, 45, 50], &[]).unwrap();
        let ring = Ring::new(8, &primes[..2], &primes[2..]);
        let a = random_poly(&ring, 2, 1, 5);
        for k in [
            3u64,
            5,
            25,
            511,
            2 * 256 - 1,
            ring.galois_element_for_rotation(-3),
        ] {
            let coeff = ring.automorphism_coeff(&a, k);
            let mut via_ntt = a.clone();
            ring.ntt(&mut via_ntt);
            let mut via_ntt = ring.automorphism(&via_ntt, k);
            ring.intt(&mut via_ntt);
            assert_eq!(via_ntt, coeff, "k = {k}");
        }
    }

    #[test]
    fn automorphism_in_coefficient_form_matches_definition() {
        // a(X^k) computed by expanding each monomial X^(ik) mod X^N + 1.
        let primes = ntt_primes(5, &[30], &[]).unwrap();
        let ring = Ring::new(5, &primes, &[]);
        let a = random_poly(&ring, 1, 0, 9);
        let m = &ring.q()[0];
        let n = ring.n();
        for k in [3u64, 7, 63] {
            let mut want = vec![0u64; n];
            for (i, &c) in a.limb(0).iter().enumerate() {
                let e = (i as u64 * k) % (2 * n as u64);
                let (idx, neg) = if e < n as u64 {
                    (e as usize, false)
                } else {
                    (e as usize - n, true)
                };
                want[idx] = m.add(want[idx], if neg { m.neg(c) } else { c });
            }
            assert_eq!(ring.automorphism_coeff(&a, k).limb(0), &want[..]);
        }
    }

    #[test]
    fn ntt_domain_products_match_negacyclic_convolution() {
        let primes = ntt_primes(6, &[50], &[]).unwrap();
        let ring = Ring::new(6, &primes, &[]);
        let (a, b) = (random_poly(&ring, 1, 0, 1), random_poly(&ring, 1, 0, 2));
        let m = &ring.q()[0];
        let n = ring.n();
        let mut want = vec![0u64; n];
        for i in 0..n {
            for j in 0..n {
                let p = m.mul(a.limb(0)[i], b.limb(0)[j]);
                let k = i + j;
                if k < n {
                    want[k] = m.add(want[k], p);
                } else {
                    want[k - n] = m.sub(want[k - n], p);
                }
            }
        }
        let (mut x, mut y) = (a.clone(), b.clone());
        ring.ntt(&mut x);
        ring.ntt(&mut y);
        ring.mul_assign(&mut x, &y);
        ring.intt(&mut x);
        assert_eq!(x.limb(0), &want[..]);
    }
}
