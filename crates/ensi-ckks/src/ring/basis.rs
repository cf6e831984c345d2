//! Fast (approximate) RNS basis conversion, the core of ModUp and ModDown.
//!
//! Given the residues x_i of x modulo the primes a_i of a basis A, the
//! conversion computes, modulo each prime b_j of a basis B,
//!
//!   sum_i [x_i (A/a_i)^-1]_{a_i} (A/a_i)  =  x + u A,   0 <= u < |A|,
//!
//! without ever forming x. The small multiple u A is harmless in hybrid key
//! switching (it vanishes modulo Q after the key product) and in ModDown (it
//! becomes an error of at most |A| after division by P).

use super::Ring;
use rayon::prelude::*;

/// Coefficients are converted in blocks of this many so that the scaled
/// source residues of one block stay in the L1/L2 cache while every target
/// limb is produced.
const BLOCK: usize = 1024;

/// Precomputed constants for converting from one set of moduli to another.
#[derive(Clone, Debug)]
pub struct BasisConverter {
    src: Vec<usize>,
    dst: Vec<usize>,
    /// [(A/a_i)^-1 * factor_i]_{a_i} and its Shoup companion.
    hat_inv: Vec<(u64, u64)>,
    /// (A/a_i) mod b_j at [j * src.len() + i].
    hat_mod_dst: Vec<u64>,
    /// 1 / a_i, to estimate the overflow u for the centered conversion.
    src_recip: Vec<f64>,
    /// A mod b_j.
    prod_mod_dst: Vec<u64>,
}

impl BasisConverter {
    /// Constants for converting from moduli `src` to moduli `dst` (indices into
    /// [`Ring::moduli`]).
    pub fn new(ring: &Ring, src: &[usize], dst: &[usize]) -> Self {
        assert!(!src.is_empty() && src.len() <= 128, "basis conversion needs 1..=128 source primes");
        let moduli = ring.moduli();
        let hat_inv = src
            .iter()
            .map(|&i| {
                let m = &moduli[i];
                let prod = src.iter().filter(|&&k| k != i).fold(1u64, |acc, &k| m.mul(acc, m.reduce(moduli[k].value())));
                let inv = m.inv(prod);
                (inv, m.shoup(inv))
            })
            .collect();
        let mut hat_mod_dst = Vec::with_capacity(src.len() * dst.len());
        for &j in dst {
            let m = &moduli[j];
            for &i in src {
                hat_mod_dst.push(src.iter().filter(|&&k| k != i).fold(1u64, |acc, &k| m.mul(acc, m.reduce(moduli[k].value()))));
            }
        }
        let src_recip = src.iter().map(|&i| 1.0 / moduli[i].value() as f64).collect();
        let prod_mod_dst = dst
            .iter()
            .map(|&j| src.iter().fold(1u64, |acc, &k| moduli[j].mul(acc, moduli[j].reduce(moduli[k].value()))))
            .collect();
        Self { src: src.to_vec(), dst: dst.to_vec(), hat_inv, hat_mod_dst, src_recip, prod_mod_dst }
    }

    /// Source modulus indices.
    pub fn src(&self) -> &[usize] {
        &self.src
    }
    /// Target modulus indices.
    pub fn dst(&self) -> &[usize] {
        &self.dst
    }

    /// Converts coefficient-form limbs `input[i]` (mod src[i]) into `output[j]`
    /// (mod dst[j]), up to a multiple u A of the source product, 0 <= u < |A|.
    pub fn convert(&self, ring: &Ring, input: &[&[u64]], output: &mut [&mut [u64]]) {
        self.convert_impl(ring, input, output, false)
    }

    /// Converts exactly the centered representative of x, in (-A/2, A/2].
    ///
    /// The overflow u = round(sum_i y_i / a_i) is estimated in floating point
    /// and subtracted. ModDown needs this: the fast conversion's u lies in
    /// [0, |A|) and is not centered, and its mean, multiplied by the secret,
    /// becomes an error whose canonical norm grows like N.
    pub fn convert_centered(&self, ring: &Ring, input: &[&[u64]], output: &mut [&mut [u64]]) {
        self.convert_impl(ring, input, output, true)
    }

    fn convert_impl(&self, ring: &Ring, input: &[&[u64]], output: &mut [&mut [u64]], centered: bool) {
        let k = self.src.len();
        assert_eq!(input.len(), k);
        assert_eq!(output.len(), self.dst.len());
        let n = ring.n();
        let moduli = ring.moduli();
        // Regroup the outputs by block so that blocks can run in parallel.
        let blocks = n.div_ceil(BLOCK);
        let mut per_block: Vec<Vec<&mut [u64]>> = (0..blocks).map(|_| Vec::with_capacity(output.len())).collect();
        for out in output.iter_mut() {
            for (b, chunk) in out.chunks_mut(BLOCK).enumerate() {
                per_block[b].push(chunk);
            }
        }
        per_block.into_par_iter().enumerate().for_each(|(b, mut outs)| {
            let start = b * BLOCK;
            let len = BLOCK.min(n - start);
            let mut y = vec![0u64; k * len];
            for (i, &src) in self.src.iter().enumerate() {
                let m = &moduli[src];
                let (w, ws) = self.hat_inv[i];
                for (y, &x) in y[i * len..(i + 1) * len].iter_mut().zip(&input[i][start..start + len]) {
                    *y = m.mul_shoup(x, w, ws);
                }
            }
            let overflow: Vec<u64> = if centered {
                (0..len)
                    .map(|c| (0..k).map(|i| y[i * len + c] as f64 * self.src_recip[i]).sum::<f64>().round() as u64)
                    .collect()
            } else {
                Vec::new()
            };
            for (j, out) in outs.iter_mut().enumerate() {
                let m = &moduli[self.dst[j]];
                let w = &self.hat_mod_dst[j * k..(j + 1) * k];
                for (c, o) in out.iter_mut().enumerate() {
                    let mut acc = 0u128;
                    for i in 0..k {
                        acc += y[i * len + c] as u128 * w[i] as u128;
                    }
                    *o = m.reduce_u128(acc);
                }
                if centered {
                    let a_mod = self.prod_mod_dst[j];
                    for (o, &u) in out.iter_mut().zip(&overflow) {
                        *o = m.sub(*o, m.mul(u, a_mod));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::primes::ntt_primes;

    #[test]
    fn centered_conversion_is_exact() {
        let primes = ntt_primes(4, &[30, 30, 30, 31, 31], &[]).unwrap();
        let ring = Ring::new(4, &primes[..3], &primes[3..]);
        let n = ring.n();
        let big_a: i128 = primes[..3].iter().map(|&q| q as i128).product();
        let mut s = 3u64;
        let xs: Vec<i128> = (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                (((s as u128) << 40 ^ s as u128) % big_a as u128) as i128 - big_a / 2
            })
            .collect();
        let input: Vec<Vec<u64>> =
            primes[..3].iter().map(|&q| xs.iter().map(|&x| x.rem_euclid(q as i128) as u64).collect()).collect();
        let mut out = vec![vec![0u64; n]; 2];
        {
            let inp: Vec<&[u64]> = input.iter().map(|v| v.as_slice()).collect();
            let mut o: Vec<&mut [u64]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
            BasisConverter::new(&ring, &[0, 1, 2], &[3, 4]).convert_centered(&ring, &inp, &mut o);
        }
        for (j, &b) in primes[3..].iter().enumerate() {
            for c in 0..n {
                assert_eq!(out[j][c], xs[c].rem_euclid(b as i128) as u64, "coefficient {c}");
            }
        }
    }

    /// Exact CRT with u128 arithmetic (bases small enough to fit).
    #[test]
    fn matches_exact_crt_up_to_multiple_of_source_product() {
        let primes = ntt_primes(4, &[30, 30, 30, 31, 31], &[]).unwrap();
        let ring = Ring::new(4, &primes[..3], &primes[3..]);
        let n = ring.n();
        let big_a: u128 = primes[..3].iter().map(|&q| q as u128).product();
        let mut s = 7u64;
        let xs: Vec<u128> = (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((s as u128) << 40 ^ s as u128) % big_a
            })
            .collect();
        let input: Vec<Vec<u64>> = primes[..3].iter().map(|&q| xs.iter().map(|&x| (x % q as u128) as u64).collect()).collect();
        let mut out = vec![vec![0u64; n]; 2];
        let conv = BasisConverter::new(&ring, &[0, 1, 2], &[3, 4]);
        {
            let inp: Vec<&[u64]> = input.iter().map(|v| v.as_slice()).collect();
            let mut o: Vec<&mut [u64]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
            conv.convert(&ring, &inp, &mut o);
        }
        for (j, &b) in primes[3..].iter().enumerate() {
            for c in 0..n {
                // The result is x + u A for some 0 <= u < 3.
                let ok = (0..3u128).any(|u| ((xs[c] + u * big_a) % b as u128) as u64 == out[j][c]);
                assert!(ok, "coefficient {c} target {j}");
            }
        }
    }
}
