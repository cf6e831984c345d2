//! Many linear combinations of the same ciphertexts at once:
//! out_r = sum_c w[r][c] in_c.
//!
//! Computing each output on its own reads every input once per output, and
//! at N = 2^15..2^16 a ciphertext is megabytes: the work is then bound by
//! memory bandwidth, whatever the weights. Here the inputs are walked block
//! by block (a few kilobytes of every input's limb at a time, small enough
//! for the cache) and every output's block is produced from them, so each
//! input is read from memory once in total. What remains is arithmetic:
//! general weights cost a modular multiplication each, while signed sums
//! (weights in {-1, 0, 1}) share their partial sums between outputs through
//! tables and add lazily (`tables`).

use crate::ciphertext::Ciphertext;
use crate::error::{CkksError, Result};
use crate::evaluator::Evaluator;
use crate::ring::RnsPoly;
use rayon::prelude::*;

mod tables;

/// Coefficients per block: inputs x BLOCK words should stay in L2.
const BLOCK: usize = 256;

impl Evaluator {
    fn check_inputs(&self, inputs: &[Ciphertext], weights: usize, rows: usize) -> Result<()> {
        let first = inputs
            .first()
            .ok_or_else(|| CkksError::InvalidParameters("no input ciphertexts".into()))?;
        if weights != rows * inputs.len() {
            return Err(CkksError::InvalidParameters(format!(
                "{weights} weights for {rows}x{}",
                inputs.len()
            )));
        }
        for ct in inputs {
            if ct.level() != first.level() {
                return Err(CkksError::LevelTooLow {
                    needed: first.level(),
                    level: ct.level(),
                });
            }
            if ct.log_slots != first.log_slots {
                return Err(CkksError::SlotMismatch {
                    a: first.log_slots,
                    b: ct.log_slots,
                });
            }
            if ((ct.scale / first.scale) - 1.0).abs() > crate::evaluator::SCALE_TOLERANCE {
                return Err(CkksError::ScaleMismatch {
                    a: first.scale.log2(),
                    b: ct.scale.log2(),
                });
            }
            if ct.c0.as_words().len() != first.c0.as_words().len()
                || ct.c1.as_words().len() != first.c0.as_words().len()
            {
                return Err(CkksError::ParametersMismatch);
            }
        }
        Ok(())
    }

    /// out_r = sum_c w[r][c] in_c with every weight in {-1, 0, 1} (row-major,
    /// `rows` x `inputs.len()`): additions and subtractions only, no level,
    /// no change of scale.
    pub fn signed_sums(
        &self,
        inputs: &[Ciphertext],
        weights: &[i8],
        rows: usize,
    ) -> Result<Vec<Ciphertext>> {
        self.check_inputs(inputs, weights.len(), rows)?;
        if let Some(&w) = weights.iter().find(|w| !(-1..=1).contains(*w)) {
            return Err(CkksError::InvalidParameters(format!(
                "weight {w} is not in {{-1, 0, 1}}"
            )));
        }
        Ok(self.signed_sums_tables(inputs, weights, rows))
    }

    /// out_r = sum_c round(w[r][c] const_scale) in_c for real weights (row-major):
    /// no rescale here; the scale becomes the inputs' scale times `const_scale`.
    pub fn linear_combinations(
        &self,
        inputs: &[Ciphertext],
        weights: &[f64],
        rows: usize,
        const_scale: f64,
    ) -> Result<Vec<Ciphertext>> {
        self.check_inputs(inputs, weights.len(), rows)?;
        if !(const_scale.is_finite() && const_scale > 0.0) || weights.iter().any(|w| !w.is_finite())
        {
            return Err(CkksError::Encoding(
                "weights and their scale must be finite".into(),
            ));
        }
        let level = inputs[0].level();
        let ring = self.params().ring();
        // Each weight's residue (and Shoup companion) per limb: [limb][r * cols + c].
        let residues: Vec<Vec<(u64, u64)>> = ring.q()[..=level]
            .iter()
            .map(|m| {
                weights
                    .iter()
                    .map(|&w| {
                        let v = crate::encoder::reduce_f64_integer((w * const_scale).round(), m);
                        (v, m.shoup(v))
                    })
                    .collect()
            })
            .collect();
        // 52-bit Shoup companions for the IFMA kernel (used when q < 2^51).
        let residues52: Vec<Vec<u64>> = ring.q()[..=level]
            .iter()
            .zip(&residues)
            .map(|(m, r)| {
                r.iter()
                    .map(|&(v, _)| (((v as u128) << 52) / m.value() as u128) as u64)
                    .collect()
            })
            .collect();
        let cols = inputs.len();
        Ok(self.combine_blocks(
            inputs,
            rows,
            inputs[0].scale * const_scale,
            |m, limb, block_in, r, out| {
                let w = &residues[limb][r * cols..(r + 1) * cols];
                let w52 = &residues52[limb][r * cols..(r + 1) * cols];
                out.fill(0);
                for (c, (&(wv, ws), &ws52)) in w.iter().zip(w52).enumerate() {
                    if wv != 0 {
                        simd::mul_add_mod(out, block_in[c], m, wv, ws, ws52);
                    }
                }
            },
        ))
    }

    /// Drives `kernel(modulus, limb, input blocks, row, output block)` over every
    /// limb of both polynomials, block by block.
    fn combine_blocks(
        &self,
        inputs: &[Ciphertext],
        rows: usize,
        scale: f64,
        kernel: impl Fn(&crate::math::Modulus, usize, &[&[u64]], usize, &mut [u64]) + Sync,
    ) -> Vec<Ciphertext> {
        let ring = self.params().ring();
        let n = ring.n();
        let q_limbs = inputs[0].level() + 1;
        let mut outs: Vec<(RnsPoly, RnsPoly)> = (0..rows)
            .map(|_| {
                (
                    ring.scratch(q_limbs, 0, true),
                    ring.scratch(q_limbs, 0, true),
                )
            })
            .collect();
        // Tasks: (part, limb, block); each writes its block of every output.
        let blocks = n.div_ceil(BLOCK);
        let mut targets: Vec<Vec<&mut [u64]>> = (0..2 * q_limbs * blocks)
            .map(|_| Vec::with_capacity(rows))
            .collect();
        for (c0, c1) in outs.iter_mut() {
            for (part, poly) in [c0, c1].into_iter().enumerate() {
                for (l, limb) in poly.data.chunks_mut(n).enumerate() {
                    for (b, block) in limb.chunks_mut(BLOCK).enumerate() {
                        targets[(part * q_limbs + l) * blocks + b].push(block);
                    }
                }
            }
        }
        targets
            .into_par_iter()
            .enumerate()
            .for_each(|(task, mut outs)| {
                let (part, rest) = (task / (q_limbs * blocks), task % (q_limbs * blocks));
                let (l, b) = (rest / blocks, rest % blocks);
                let m = &ring.q()[l];
                let start = l * n + b * BLOCK;
                let len = BLOCK.min(n - b * BLOCK);
                let block_in: Vec<&[u64]> = inputs
                    .iter()
                    .map(|ct| {
                        &(if part == 0 { &ct.c0 } else { &ct.c1 }).as_words()[start..start + len]
                    })
                    .collect();
                for (r, out) in outs.iter_mut().enumerate() {
                    kernel(m, l, &block_in, r, out);
                }
            });
        ciphertexts(outs, scale, inputs[0].log_slots)
    }
}

/// The outputs' polynomial pairs as ciphertexts of the given scale and slots.
fn ciphertexts(outs: Vec<(RnsPoly, RnsPoly)>, scale: f64, log_slots: u32) -> Vec<Ciphertext> {
    outs.into_iter()
        .map(|(c0, c1)| Ciphertext {
            c0,
            c1,
            scale,
            log_slots,
        })
        .collect()
}

/// Block kernels: AVX-512 (and IFMA) when the CPU has them, with the plain
/// loops as the reference they are tested against.
mod simd {
    use crate::math::Modulus;

    /// out = (out + w x) mod q, elementwise, given w's 64-bit and 52-bit Shoup companions.
    pub(super) fn mul_add_mod(out: &mut [u64], x: &[u64], m: &Modulus, w: u64, ws: u64, ws52: u64) {
        #[cfg(target_arch = "x86_64")]
        if m.value() < (1 << 51)
            && out.len().is_multiple_of(8)
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512ifma")
        {
            // SAFETY: the features were just detected; lengths are multiples of 8.
            return unsafe { mul_add_mod_ifma(out, x, m.value(), w, ws52) };
        }
        mul_add_mod_plain(out, x, m, w, ws)
    }

    pub(super) fn mul_add_mod_plain(out: &mut [u64], x: &[u64], m: &Modulus, w: u64, ws: u64) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = m.add(*o, m.mul_shoup(v, w, ws));
        }
    }

    /// 52-bit Shoup multiplication with IFMA, eight lanes at a time (q < 2^51, x < 2^52).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn mul_add_mod_ifma(out: &mut [u64], x: &[u64], q: u64, w: u64, ws52: u64) {
        use std::arch::x86_64::*;
        let zero = _mm512_setzero_si512();
        let mask = _mm512_set1_epi64(((1u64 << 52) - 1) as i64);
        let (qv, wv, wsv) = (
            _mm512_set1_epi64(q as i64),
            _mm512_set1_epi64(w as i64),
            _mm512_set1_epi64(ws52 as i64),
        );
        for (o, v) in out.chunks_exact_mut(8).zip(x.chunks_exact(8)) {
            // SAFETY: both chunks hold exactly eight words.
            let a = unsafe { _mm512_loadu_si512(v.as_ptr() as *const _) };
            let qhat = _mm512_madd52hi_epu64(zero, a, wsv);
            let lo = _mm512_sub_epi64(
                _mm512_madd52lo_epu64(zero, a, wv),
                _mm512_madd52lo_epu64(zero, qhat, qv),
            );
            let r = _mm512_and_si512(lo, mask);
            let r = _mm512_min_epu64(r, _mm512_sub_epi64(r, qv));
            let acc = unsafe { _mm512_loadu_si512(o.as_ptr() as *const _) };
            let s = _mm512_add_epi64(acc, r);
            let s = _mm512_min_epu64(s, _mm512_sub_epi64(s, qv));
            unsafe { _mm512_storeu_si512(o.as_mut_ptr() as *mut _, s) };
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::math::primes::ntt_primes;

        #[test]
        fn vector_kernels_match_plain_loops() {
            for &q in &ntt_primes(10, &[40, 50], &[]).unwrap() {
                let m = Modulus::new(q);
                let mut s = q;
                let mut rand = || {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (s >> 5) % q
                };
                let x: Vec<u64> = (0..256).map(|_| rand()).collect();
                let start: Vec<u64> = (0..256).map(|_| rand()).collect();
                let w = rand();
                let (ws, ws52) = (m.shoup(w), (((w as u128) << 52) / q as u128) as u64);
                let run = |f: &dyn Fn(&mut [u64])| {
                    let mut o = start.clone();
                    f(&mut o);
                    o
                };
                assert_eq!(
                    run(&|o| mul_add_mod(o, &x, &m, w, ws, ws52)),
                    run(&|o| mul_add_mod_plain(o, &x, &m, w, ws))
                );
            }
        }
    }
}
