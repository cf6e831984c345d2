//! Randomness: a ChaCha20 CSPRNG seeded by the operating system, and the
//! distributions CKKS needs (uniform mod q, uniform ternary, discrete Gaussian).

use crate::ring::{Ring, RnsPoly};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Standard deviation of the error distribution.
pub const SIGMA: f64 = 3.2;
/// Errors are cut at about 6 sigma.
const GAUSSIAN_BOUND: i64 = 19;

/// A source of randomness for keys and encryption.
pub struct Sampler {
    rng: ChaCha20Rng,
    /// Cumulative probabilities of -B..=B scaled to 2^64 (last entry excluded).
    cdt: Vec<u64>,
}

impl Sampler {
    /// A sampler seeded from the operating system's randomness.
    pub fn from_os() -> Self {
        Self::with_rng(ChaCha20Rng::from_os_rng())
    }

    /// A deterministic sampler, for expanding public seeds (and for tests).
    pub fn from_seed(seed: [u8; 32], stream: u64) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        rng.set_stream(stream);
        Self::with_rng(rng)
    }

    fn with_rng(rng: ChaCha20Rng) -> Self {
        let weights: Vec<f64> = (-GAUSSIAN_BOUND..=GAUSSIAN_BOUND)
            .map(|k| (-((k * k) as f64) / (2.0 * SIGMA * SIGMA)).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut cum = 0.0;
        let cdt = weights[..weights.len() - 1]
            .iter()
            .map(|w| {
                cum += w / total;
                (cum * 2f64.powi(64)).min(u64::MAX as f64) as u64
            })
            .collect();
        Self { rng, cdt }
    }

    /// A fresh 32-byte seed.
    pub fn seed(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.rng.fill_bytes(&mut s);
        s
    }

    /// Uniform coefficients in {-1, 0, 1}.
    pub fn ternary(&mut self, n: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n);
        let mut buf = [0u8; 64];
        while out.len() < n {
            self.rng.fill_bytes(&mut buf);
            // 255 = 3 * 85: reject 255 so that byte % 3 is uniform.
            out.extend(
                buf.iter()
                    .filter(|&&b| b < 255)
                    .map(|&b| (b % 3) as i64 - 1)
                    .take(n - out.len()),
            );
        }
        out
    }

    /// Discrete Gaussian coefficients (sigma 3.2, cut at 19) by a full scan of
    /// the cumulative table, so the time does not depend on the value.
    pub fn gaussian(&mut self, n: usize) -> Vec<i64> {
        (0..n)
            .map(|_| {
                let r = self.rng.next_u64();
                let idx: i64 = self.cdt.iter().map(|&t| (t <= r) as i64).sum();
                idx - GAUSSIAN_BOUND
            })
            .collect()
    }

    /// A polynomial uniform modulo each limb's prime, flagged as NTT form
    /// (uniform in one form is uniform in the other).
    pub fn uniform_poly(&mut self, ring: &Ring, q_limbs: usize, p_limbs: usize) -> RnsPoly {
        let mut poly = ring.zero(q_limbs, p_limbs, true);
        let n = ring.n();
        for i in 0..poly.limbs() {
            let q = ring.moduli()[ring.modulus_index(q_limbs, i)].value();
            let mask = u64::MAX >> q.leading_zeros();
            for x in poly.data[i * n..(i + 1) * n].iter_mut() {
                *x = loop {
                    let v = self.rng.next_u64() & mask;
                    if v < q {
                        break v;
                    }
                };
            }
        }
        poly
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_has_the_right_moments() {
        let mut s = Sampler::from_seed([1; 32], 0);
        let e = s.gaussian(200_000);
        let mean = e.iter().sum::<i64>() as f64 / e.len() as f64;
        let var = e.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / e.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var.sqrt() - SIGMA).abs() < 0.05, "sigma {}", var.sqrt());
        assert!(e.iter().all(|x| x.abs() <= GAUSSIAN_BOUND));
    }

    #[test]
    fn ternary_is_balanced() {
        let mut s = Sampler::from_seed([2; 32], 0);
        let t = s.ternary(300_000);
        for v in -1..=1 {
            let frac = t.iter().filter(|&&x| x == v).count() as f64 / t.len() as f64;
            assert!((frac - 1.0 / 3.0).abs() < 0.005, "{v}: {frac}");
        }
    }

    #[test]
    fn seeded_expansion_is_deterministic_and_streams_differ() {
        let a = Sampler::from_seed([3; 32], 0).seed();
        let b = Sampler::from_seed([3; 32], 0).seed();
        let c = Sampler::from_seed([3; 32], 1).seed();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(Sampler::from_os().seed(), Sampler::from_os().seed());
    }
}
