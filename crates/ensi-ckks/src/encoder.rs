//! The CKKS encoder: complex vectors <-> plaintext polynomials through the
//! canonical embedding.
//!
//! With n slots (a power of two, at most N/2) the message lives in the
//! subring Z[Y]/(Y^{2n} + 1), Y = X^{N/2n}, and slot j is the evaluation at
//! xi^{5^j} with xi = exp(i pi / 2n). Writing v_i = c_i + i c_{i+n} for the
//! 2n coefficients turns decoding into v -> sum_i v_i xi^{5^j i}, a twisted
//! DFT that the "special FFT" below computes in n log n. The powers 5^j make
//! rotation by one slot the automorphism X -> X^5.

use crate::ciphertext::Plaintext;
use crate::error::{CkksError, Result};
use crate::math::Modulus;
use crate::params::Parameters;
use num_complex::Complex64;
use rayon::prelude::*;
use std::f64::consts::PI;

/// A vector's inverse special FFT (see [`Encoder::unscaled_coefficients`]):
/// what encoding it at any level and scale starts from.
#[derive(Clone, Debug, PartialEq)]
pub struct UnscaledCoefficients {
    v: Vec<Complex64>,
    log_slots: u32,
}

impl UnscaledCoefficients {
    /// log2 of the slot count.
    pub fn log_slots(&self) -> u32 {
        self.log_slots
    }
}

/// A plaintext before its residues: the rounded coefficients of a vector at
/// a scale, at no level yet ([`Encoder::encode_coefficients`]).
///
/// [`Encoder::encode`] stores `level + 1` limbs of N words in NTT form; a
/// plaintext used in one product only ([`crate::Evaluator::mul_coefficients_sum`])
/// is better built limb by limb inside the product, where each residue limb is
/// reduced, transformed and multiplied while it is in cache and the whole
/// plaintext never goes to memory (at N = 2^16 and 12 primes, 6 MB written and
/// read again per plaintext).
#[derive(Clone, Debug)]
pub struct PlainCoefficients {
    coeffs: Vec<f64>,
    max: f64,
    scale: f64,
    log_slots: u32,
}

impl PlainCoefficients {
    /// The scale the coefficients carry.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// log2 of the slot count.
    pub fn log_slots(&self) -> u32 {
        self.log_slots
    }

    /// Whether the coefficients fit the modulus at `level` (a centered lift
    /// needs them below half of it).
    pub(crate) fn check_level(&self, params: &Parameters, level: usize) -> Result<()> {
        check_coefficient_bound(params, self.max, level)
    }

    /// The residues modulo `m` (coefficient form) into `out`; the caller has
    /// checked the bound ([`Self::check_level`]).
    pub(crate) fn reduce_into(&self, m: &Modulus, out: &mut [u64]) {
        reduce_limb(m, out, &self.coeffs, self.max)
    }
}

/// Refuses coefficients of magnitude `max` at `level` if they reach half the
/// modulus there.
pub(crate) fn check_coefficient_bound(params: &Parameters, max: f64, level: usize) -> Result<()> {
    let log_q: f64 = params.q()[..=level]
        .iter()
        .map(|&q| (q as f64).log2())
        .sum();
    // NaN fails this too.
    if max.partial_cmp(&(log_q - 1.0).exp2()) != Some(std::cmp::Ordering::Less) {
        return Err(CkksError::Encoding(format!(
            "coefficient 2^{:.1} exceeds the modulus 2^{log_q:.1} at level {level}; lower the scale",
            max.log2()
        )));
    }
    Ok(())
}

/// Integer-valued `coeffs` (largest magnitude `max`, below half the modulus
/// product) reduced modulo `m` into `out`, by the fastest exact way their
/// size allows.
fn reduce_limb(m: &Modulus, out: &mut [u64], coeffs: &[f64], max: f64) {
    if max < 4.0e15 && m.value() < (1 << 52) {
        reduce_small_integers(out, coeffs, m.value());
    } else if max < 9.0e18 {
        crate::ring::kernels::reduce_signed(m, out, coeffs);
    } else {
        for (r, &c) in out.iter_mut().zip(coeffs) {
            *r = reduce_f64_integer(c, m);
        }
    }
}

/// Encodes and decodes messages for one parameter set.
pub struct Encoder {
    params: Parameters,
    /// Twiddles of the special FFT in the order the butterflies use them:
    /// the stage of length `len` reads entries `len/2 - 1 .. len - 1`. They do
    /// not depend on the slot count, so one table serves every sparse size.
    fft_twiddles: Vec<Complex64>,
    /// The same for the inverse FFT.
    fft_inv_twiddles: Vec<Complex64>,
    /// Per level: CRT constants for exact decoding.
    crt: Vec<CrtTable>,
}

/// Constants to lift residues modulo q_0..q_l to a signed integer, exactly,
/// when the integer is below 2^127 in magnitude (always the case for a
/// decrypted message: |coefficient| ~ scale * |value| is far smaller).
struct CrtTable {
    /// (Q/q_i)^-1 mod q_i and its Shoup companion.
    hat_inv: Vec<(u64, u64)>,
    /// Q/q_i mod 2^128.
    hat_low: Vec<u128>,
    /// Q mod 2^128.
    q_low: u128,
    /// 1 / q_i.
    q_recip: Vec<f64>,
}

impl Encoder {
    /// Precomputes the FFT tables and CRT constants.
    pub fn new(params: &Parameters) -> Self {
        let n = params.n();
        let m = 2 * n;
        let roots: Vec<Complex64> = (0..=m)
            .map(|k| {
                let a = 2.0 * PI * k as f64 / m as f64;
                Complex64::new(a.cos(), a.sin())
            })
            .collect();
        let mut rot_group = Vec::with_capacity(n / 2);
        let mut g = 1usize;
        for _ in 0..n / 2 {
            rot_group.push(g);
            g = g * 5 % m;
        }
        // Stage `len` (2, 4, ..., N/2) uses, for butterfly j < len/2, the root
        // of index (5^j mod 4 len) * (2N / 4 len), or its inverse.
        let mut fft_twiddles = Vec::with_capacity(n / 2);
        let mut fft_inv_twiddles = Vec::with_capacity(n / 2);
        let mut len = 2;
        while len <= n / 2 {
            let lenq = 4 * len;
            let gap = m / lenq;
            for &r in &rot_group[..len / 2] {
                let e = r & (lenq - 1);
                fft_twiddles.push(roots[e * gap]);
                fft_inv_twiddles.push(roots[(lenq - e) * gap]);
            }
            len *= 2;
        }
        let qm = params.ring().q();
        let crt = (0..params.q_count())
            .map(|l| {
                let hat_inv = (0..=l)
                    .map(|i| {
                        let m = &qm[i];
                        let prod = (0..=l)
                            .filter(|&k| k != i)
                            .fold(1u64, |a, k| m.mul(a, m.reduce(qm[k].value())));
                        let inv = m.inv(prod);
                        (inv, m.shoup(inv))
                    })
                    .collect();
                let hat_low = (0..=l)
                    .map(|i| {
                        (0..=l)
                            .filter(|&k| k != i)
                            .fold(1u128, |a, k| a.wrapping_mul(qm[k].value() as u128))
                    })
                    .collect();
                let q_low = (0..=l).fold(1u128, |a, k| a.wrapping_mul(qm[k].value() as u128));
                let q_recip = (0..=l).map(|i| 1.0 / qm[i].value() as f64).collect();
                CrtTable {
                    hat_inv,
                    hat_low,
                    q_low,
                    q_recip,
                }
            })
            .collect();
        Self {
            params: params.clone(),
            fft_twiddles,
            fft_inv_twiddles,
            crt,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Parameters {
        &self.params
    }

    fn check_slots(&self, log_slots: u32) -> Result<usize> {
        if log_slots >= self.params.log_n() {
            return Err(CkksError::InvalidSlots(log_slots));
        }
        Ok(1 << log_slots)
    }

    /// Slots -> coefficient vector v (in place): the inverse of [`Self::fft_special`].
    fn fft_special_inv(&self, v: &mut [Complex64]) {
        let size = v.len();
        let mut len = size;
        while len >= 2 {
            let lenh = len / 2;
            let tw = &self.fft_inv_twiddles[lenh - 1..len - 1];
            for block in v.chunks_mut(len) {
                let (lo, hi) = block.split_at_mut(lenh);
                for ((a, b), &t) in lo.iter_mut().zip(hi.iter_mut()).zip(tw) {
                    let u = *a + *b;
                    *b = (*a - *b) * t;
                    *a = u;
                }
            }
            len /= 2;
        }
        bit_reverse(v);
        let inv = 1.0 / size as f64;
        v.iter_mut().for_each(|x| *x *= inv);
    }

    /// Coefficient vector v -> slots (in place): slot_j = sum_i v_i xi^(5^j i).
    fn fft_special(&self, v: &mut [Complex64]) {
        let size = v.len();
        bit_reverse(v);
        let mut len = 2;
        while len <= size {
            let lenh = len / 2;
            let tw = &self.fft_twiddles[lenh - 1..len - 1];
            for block in v.chunks_mut(len) {
                let (lo, hi) = block.split_at_mut(lenh);
                for ((a, b), &t) in lo.iter_mut().zip(hi.iter_mut()).zip(tw) {
                    let w = *b * t;
                    *b = *a - w;
                    *a += w;
                }
            }
            len *= 2;
        }
    }

    /// Encodes complex `values` (at most 2^log_slots; the rest are zero) at
    /// `level` and `scale`.
    pub fn encode(
        &self,
        values: &[Complex64],
        level: usize,
        scale: f64,
        log_slots: u32,
    ) -> Result<Plaintext> {
        let unscaled = self.unscaled_coefficients(values, log_slots)?;
        self.encode_unscaled(&unscaled, level, scale)
    }

    /// The first half of [`Self::encode`], which depends on neither level nor
    /// scale: the inverse special FFT of `values` on 2^log_slots slots.
    /// Callers that encode the same values at many scales (bootstrapping's
    /// linear transforms) keep this and redo only [`Self::encode_unscaled`].
    pub fn unscaled_coefficients(
        &self,
        values: &[Complex64],
        log_slots: u32,
    ) -> Result<UnscaledCoefficients> {
        let slots = self.check_slots(log_slots)?;
        if values.len() > slots {
            return Err(CkksError::TooManyValues {
                got: values.len(),
                slots,
            });
        }
        let mut v = vec![Complex64::new(0.0, 0.0); slots];
        for (d, s) in v.iter_mut().zip(values) {
            if !(s.re.is_finite() && s.im.is_finite()) {
                return Err(CkksError::Encoding(format!("{s} is not finite")));
            }
            *d = *s;
        }
        self.fft_special_inv(&mut v);
        Ok(UnscaledCoefficients { v, log_slots })
    }

    /// The second half of [`Self::encode`]: scale, round, reduce and
    /// transform at `level` (the result is the same, word for word).
    pub fn encode_unscaled(
        &self,
        unscaled: &UnscaledCoefficients,
        level: usize,
        scale: f64,
    ) -> Result<Plaintext> {
        if level > self.params.max_level() {
            return Err(CkksError::LevelTooLow {
                needed: level,
                level: self.params.max_level(),
            });
        }
        let rounded = self.round_unscaled(unscaled, scale)?;
        let poly = self.coefficients_to_poly(&rounded, level)?;
        Ok(Plaintext {
            poly,
            scale,
            log_slots: unscaled.log_slots,
        })
    }

    /// `values` at `scale` as rounded coefficients, at no level yet (see
    /// [`PlainCoefficients`]); [`Self::encode`] at any level is these
    /// coefficients reduced and transformed, word for word.
    pub fn encode_coefficients(
        &self,
        values: &[Complex64],
        scale: f64,
        log_slots: u32,
    ) -> Result<PlainCoefficients> {
        self.round_unscaled(&self.unscaled_coefficients(values, log_slots)?, scale)
    }

    /// [`Self::encode_coefficients`] from the inverse FFT kept by
    /// [`Self::unscaled_coefficients`].
    pub fn round_unscaled(
        &self,
        unscaled: &UnscaledCoefficients,
        scale: f64,
    ) -> Result<PlainCoefficients> {
        if !(scale.is_finite() && scale >= 1.0) {
            return Err(CkksError::Encoding(format!(
                "scale {scale} must be finite and >= 1"
            )));
        }
        let n = self.params.n();
        let gap = n / (2 * self.check_slots(unscaled.log_slots)?);
        let mut coeffs = vec![0f64; n];
        scale_round(&mut coeffs, &unscaled.v, scale, gap);
        let max = coeffs.iter().fold(0f64, |a, &c| a.max(c.abs()));
        Ok(PlainCoefficients {
            coeffs,
            max,
            scale,
            log_slots: unscaled.log_slots,
        })
    }

    /// Encodes real `values`.
    pub fn encode_real(
        &self,
        values: &[f64],
        level: usize,
        scale: f64,
        log_slots: u32,
    ) -> Result<Plaintext> {
        let v: Vec<Complex64> = values.iter().map(|&x| Complex64::new(x, 0.0)).collect();
        self.encode(&v, level, scale, log_slots)
    }

    /// Rounded coefficients -> RNS polynomial in NTT form at `level`.
    fn coefficients_to_poly(
        &self,
        rounded: &PlainCoefficients,
        level: usize,
    ) -> Result<crate::ring::RnsPoly> {
        rounded.check_level(&self.params, level)?;
        let ring = self.params.ring();
        // Every limb is written below.
        let mut poly = ring.scratch(level + 1, 0, false);
        poly.data
            .par_chunks_mut(ring.n())
            .enumerate()
            .for_each(|(i, limb)| rounded.reduce_into(&ring.q()[i], limb));
        ring.ntt(&mut poly);
        Ok(poly)
    }

    /// Decodes a plaintext into its 2^log_slots complex values.
    pub fn decode(&self, pt: &Plaintext) -> Vec<Complex64> {
        let ring = self.params.ring();
        let mut poly = pt.poly.clone();
        if poly.is_ntt() {
            ring.intt(&mut poly);
        }
        let n = ring.n();
        let slots = 1usize << pt.log_slots;
        let gap = n / (2 * slots);
        let table = &self.crt[pt.level()];
        let inv_scale = 1.0 / pt.scale;
        let lift = |idx: usize| -> f64 {
            let mut frac = 0f64;
            let mut acc = 0u128;
            for (i, m) in ring.q()[..=pt.level()].iter().enumerate() {
                let (w, ws) = table.hat_inv[i];
                let y = m.mul_shoup(poly.limb(i)[idx], w, ws);
                frac += y as f64 * table.q_recip[i];
                acc = acc.wrapping_add((y as u128).wrapping_mul(table.hat_low[i]));
            }
            let v = frac.round() as u128;
            acc.wrapping_sub(v.wrapping_mul(table.q_low)) as i128 as f64
        };
        let mut v: Vec<Complex64> = (0..slots)
            .into_par_iter()
            .map(|i| Complex64::new(lift(i * gap) * inv_scale, lift(i * gap + n / 2) * inv_scale))
            .collect();
        self.fft_special(&mut v);
        v
    }

    /// Decodes and keeps the real parts.
    pub fn decode_real(&self, pt: &Plaintext) -> Vec<f64> {
        self.decode(pt).into_iter().map(|c| c.re).collect()
    }
}

/// Integer-valued f64 below 2^51.8 in magnitude reduced modulo q (< 2^52, so
/// that q and every k q involved are exact in f64):
/// the quotient is estimated in floating point (off by at most one) and
/// corrected, which vectorizes, unlike a 128-bit Barrett reduction.
/// `coeffs[i gap] = round(v_i.re scale)`, `coeffs[i gap + N/2] = round(v_i.im
/// scale)`, ties to even. Without a target feature that has a rounding
/// instruction, `round_ties_even` is a libm call per coefficient (3% of a
/// 1bitllm-large block went there); compiled for AVX-512 it is one vector
/// instruction per eight.
pub(crate) fn scale_round(coeffs: &mut [f64], v: &[Complex64], scale: f64, gap: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected.
        return unsafe { scale_round_avx512(coeffs, v, scale, gap) };
    }
    scale_round_plain(coeffs, v, scale, gap)
}

#[inline(always)]
fn scale_round_plain(coeffs: &mut [f64], v: &[Complex64], scale: f64, gap: usize) {
    let (re, im) = coeffs.split_at_mut(coeffs.len() / 2);
    if gap == 1 {
        for ((r, i), c) in re.iter_mut().zip(im.iter_mut()).zip(v) {
            *r = (c.re * scale).round_ties_even();
            *i = (c.im * scale).round_ties_even();
        }
    } else {
        for (k, c) in v.iter().enumerate() {
            re[k * gap] = (c.re * scale).round_ties_even();
            im[k * gap] = (c.im * scale).round_ties_even();
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scale_round_avx512(coeffs: &mut [f64], v: &[Complex64], scale: f64, gap: usize) {
    scale_round_plain(coeffs, v, scale, gap)
}

fn reduce_small_integers(out: &mut [u64], coeffs: &[f64], q: u64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq")
    {
        // SAFETY: the features were just detected.
        return unsafe { reduce_small_integers_avx512(out, coeffs, q) };
    }
    reduce_small_integers_plain(out, coeffs, q)
}

fn reduce_small_integers_plain(out: &mut [u64], coeffs: &[f64], q: u64) {
    let (qf, qi, inv) = (q as f64, q as i64, 1.0 / q as f64);
    for (r, &c) in out.iter_mut().zip(coeffs) {
        let k = (c * inv).floor();
        // SAFETY: c is a finite integer below 2^51.8 in magnitude (checked by
        // the caller) and k its quotient estimate, so c - k q is finite and
        // below 2 q < 2^53: representable. Unlike `as`, which saturates and
        // maps NaN to 0 lane by lane, this converts eight lanes in one
        // instruction (a third of the encoder's time at N = 2^16 went here).
        let mut v = unsafe { (c - k * qf).to_int_unchecked::<i64>() };
        v += if v < 0 { qi } else { 0 };
        v -= if v >= qi { qi } else { 0 };
        *r = v as u64;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn reduce_small_integers_avx512(out: &mut [u64], coeffs: &[f64], q: u64) {
    reduce_small_integers_plain(out, coeffs, q)
}

/// An integer-valued f64 (any magnitude) reduced modulo q, exactly.
pub(crate) fn reduce_f64_integer(x: f64, m: &crate::math::Modulus) -> u64 {
    let bits = x.abs().to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64 - 1075;
    let mant = (bits & ((1 << 52) - 1)) | (1 << 52);
    let r = if exp >= 0 {
        m.mul(m.reduce(mant), m.pow(2, exp as u64))
    } else {
        m.reduce(mant >> (-exp).min(63))
    };
    if x < 0.0 {
        m.neg(r)
    } else {
        r
    }
}

fn bit_reverse<T>(v: &mut [T]) {
    let n = v.len();
    if n <= 2 {
        return; // reversing zero or one bit changes nothing
    }
    let bits = n.trailing_zeros();
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - bits);
        if i < j {
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParametersLiteral;

    fn params() -> Parameters {
        ParametersLiteral::preset("insecure-n10")
            .unwrap()
            .build()
            .unwrap()
    }

    fn random_values(n: usize, seed: u64) -> Vec<Complex64> {
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        (0..n).map(|_| Complex64::new(next(), next())).collect()
    }

    /// slot_j = sum_i v_i xi^(5^j i), xi = exp(i pi / 2n), straight from the definition.
    fn reference_decode(v: &[Complex64]) -> Vec<Complex64> {
        let n = v.len();
        let m = 4 * n;
        (0..n)
            .map(|j| {
                let e = (0..j).fold(1usize, |g, _| g * 5 % m);
                v.iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        c * Complex64::from_polar(1.0, 2.0 * PI * ((e * i) % m) as f64 / m as f64)
                    })
                    .sum()
            })
            .collect()
    }

    #[test]
    fn special_fft_matches_definition_and_inverts() {
        let enc = Encoder::new(&params());
        for log_slots in [0u32, 1, 3, 9] {
            let v = random_values(1 << log_slots, log_slots as u64 + 1);
            let mut fast = v.clone();
            enc.fft_special(&mut fast);
            let slow = reference_decode(&v);
            for (a, b) in fast.iter().zip(&slow) {
                assert!((a - b).norm() < 1e-9, "{a} vs {b}");
            }
            enc.fft_special_inv(&mut fast);
            for (a, b) in fast.iter().zip(&v) {
                assert!((a - b).norm() < 1e-12);
            }
        }
    }

    #[test]
    fn encode_decode_round_trip_at_every_level_and_slot_count() {
        let p = params();
        let enc = Encoder::new(&p);
        for log_slots in [0u32, 2, 5, 9] {
            for level in [0, p.max_level()] {
                let v = random_values(1 << log_slots, 7);
                let pt = enc.encode(&v, level, p.default_scale(), log_slots).unwrap();
                assert_eq!(pt.level(), level);
                let back = enc.decode(&pt);
                let err = v
                    .iter()
                    .zip(&back)
                    .map(|(a, b)| (a - b).norm())
                    .fold(0.0, f64::max);
                // Rounding to integers at scale 2^40 loses about 2^-40 per coefficient.
                assert!(
                    err < 2f64.powi(-30),
                    "log_slots {log_slots} level {level}: error {err}"
                );
            }
        }
    }

    #[test]
    fn large_scales_encode_exactly() {
        let p = params();
        let enc = Encoder::new(&p);
        let v = random_values(8, 3);
        let scale = 2f64.powi(100);
        let pt = enc.encode(&v, p.max_level(), scale, 3).unwrap();
        let back = enc.decode(&pt);
        for (a, b) in v.iter().zip(&back) {
            assert!((a - b).norm() < 1e-12);
        }
    }

    #[test]
    fn vectorized_reduction_matches_exact_reduction() {
        for &q in &crate::math::primes::ntt_primes(10, &[40, 50], &[]).unwrap() {
            let m = crate::math::Modulus::new(q);
            let mut s = 5u64;
            let coeffs: Vec<f64> = (0..4096)
                .map(|i| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let v = ((s >> 12) % 8_000_000_000_000_000) as i64 - 4_000_000_000_000_000;
                    if i < 4 {
                        [0, -1, q as i64, -(q as i64)][i] as f64
                    } else {
                        v as f64
                    }
                })
                .collect();
            let mut fast = vec![0u64; coeffs.len()];
            reduce_small_integers(&mut fast, &coeffs, q);
            let exact: Vec<u64> = coeffs.iter().map(|&c| m.reduce_i64(c as i64)).collect();
            assert_eq!(fast, exact);
        }
    }

    #[test]
    fn bad_inputs_are_refused() {
        let p = params();
        let enc = Encoder::new(&p);
        let s = p.default_scale();
        assert!(matches!(
            enc.encode(&random_values(9, 1), 0, s, 3),
            Err(CkksError::TooManyValues { .. })
        ));
        assert!(matches!(
            enc.encode(&[], 0, s, 10),
            Err(CkksError::InvalidSlots(10))
        ));
        assert!(matches!(
            enc.encode_real(&[f64::NAN], 0, s, 3),
            Err(CkksError::Encoding(_))
        ));
        // 2^20 * 2^40 does not fit under q_0 ~ 2^50.
        assert!(matches!(
            enc.encode_real(&[1e6], 0, s, 3),
            Err(CkksError::Encoding(_))
        ));
        assert!(matches!(
            enc.encode_real(&[1.0], 99, s, 3),
            Err(CkksError::LevelTooLow { .. })
        ));
    }
}
