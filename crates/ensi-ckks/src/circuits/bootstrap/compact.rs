//! Linear transforms on sparse slots with their diagonals held compactly.
//!
//! A plaintext of `n' = 2^ls` slots is `f(X^gap)`, `gap = N / 2n'`, with `f` of
//! `M = 2n'` coefficients. Its NTT values, in the ring's bit-reversed order, are
//! `out[j] = f(psi^(gap (2 brev_N(j) + 1)))`; `omega = psi^gap` is a primitive
//! `2M`-th root and `2 brev_N(j) + 1 = 2 brev_M(j / gap) + 1 (mod 2M)` (the low
//! `log M` bits of `brev_N(j)` are the high bits of `j`, reversed), so
//! `out[j] = F[j / gap]`: the size-`M` negacyclic NTT `F` of `f`, in the same
//! layout, with every value repeated `gap` times.
//!
//! [`CompactTransform`] keeps only `F` (`M` words per prime instead of `N`) and
//! expands it block by block, in cache, inside the products. For the
//! one-level SlotsToCoeffs of 2^9 slots at N = 2^16 (512 diagonals on 2^10
//! slots, 14 primes) that is 117 MB instead of 3.7 GB, and encoding costs a
//! special FFT of the slot count and a size-`M` NTT per prime instead of a
//! size-`N` NTT per prime (plus the page faults of 3.7 GB).

use crate::ciphertext::Ciphertext;
use crate::circuits::lintrans::LinearTransform;
use crate::encoder::{check_coefficient_bound, reduce_f64_integer, scale_round};
use crate::error::{CkksError, Result};
use crate::evaluator::{Evaluator, SCALE_TOLERANCE};
use crate::math::Modulus;
use crate::params::Parameters;
use crate::ring::{kernels, RnsPoly};
use num_complex::Complex64;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::f64::consts::PI;

/// Words per block when a compact plaintext is expanded for a product.
const BLOCK: usize = 256;

/// The size-`M` NTT of one prime, with its outputs in the ring's layout
/// (`F[t] = f(omega^(2 brev_M(t) + 1))`).
struct SmallNtt {
    modulus: Modulus,
    /// `tfhe-ntt`'s plan for size `M` (None below its minimum size, 16) and
    /// where it puts `F[t]`: its own root is some odd power of `omega`, so its
    /// outputs are a permutation of `F`.
    plan: Option<(tfhe_ntt::prime64::Plan, Vec<u32>)>,
    /// `omega^(2 brev_M(t) + 1)`, read off the ring's NTT of `X^gap`; the
    /// evaluation points of the direct transform used without a plan.
    points: Vec<u64>,
}

impl SmallNtt {
    fn new(params: &Parameters, prime: usize, log_m: u32) -> Self {
        let ring = params.ring();
        let n = ring.n();
        let m = 1usize << log_m;
        let gap = n / m;
        let modulus = ring.q()[prime];
        let mut x_gap = vec![0u64; n];
        x_gap[gap % n] = 1;
        ring.plan(prime + 1, prime).forward(&mut x_gap);
        let points: Vec<u64> = (0..m).map(|t| x_gap[t * gap]).collect();
        let plan = tfhe_ntt::prime64::Plan::try_new(m, modulus.value()).map(|plan| {
            let mut y = vec![0u64; m];
            y[1 % m] = 1;
            plan.fwd(&mut y);
            let at: HashMap<u64, u32> = y.iter().enumerate().map(|(i, &v)| (v, i as u32)).collect();
            let perm = points.iter().map(|p| at[p]).collect();
            (plan, perm)
        });
        Self {
            modulus,
            plan,
            points,
        }
    }

    /// `F` from the reduced coefficients `f` (`M` of them), into `out`.
    fn forward(&self, f: &mut [u64], out: &mut [u64]) {
        match &self.plan {
            Some((plan, perm)) => {
                plan.fwd(f);
                for (o, &p) in out.iter_mut().zip(perm) {
                    *o = f[p as usize];
                }
            }
            None => {
                let m = &self.modulus;
                for (o, &x) in out.iter_mut().zip(&self.points) {
                    *o = f.iter().rev().fold(0, |acc, &c| m.add(m.mul(acc, x), c));
                }
            }
        }
    }
}

/// Encodes diagonals of sparse slot counts compactly.
pub(crate) struct CompactEncoder {
    params: Parameters,
    /// Inverse special FFT twiddles, computed exactly as the encoder's (same
    /// table, same floating-point operations), so that the coefficients, and
    /// so the plaintexts, are bit for bit the encoder's.
    inv_twiddles: Vec<Complex64>,
    /// log2 M -> per Q prime.
    ntts: BTreeMap<u32, Vec<SmallNtt>>,
}

impl CompactEncoder {
    /// Tables for transforms on `2^ls` slots, for each `ls` in `log_slots`
    /// (each below `log_n - 1`: full slots gain nothing).
    pub(crate) fn new(params: &Parameters, log_slots: &[u32]) -> Self {
        let n = params.n();
        let m = 2 * n;
        let max_slots = log_slots.iter().map(|&ls| 1usize << ls).max().unwrap_or(1);
        let mut inv_twiddles = Vec::new();
        let mut len = 2;
        while len <= max_slots {
            let lenq = 4 * len;
            let step = m / lenq;
            let mut g = 1usize;
            for _ in 0..len / 2 {
                let e = g & (lenq - 1);
                let a = 2.0 * PI * ((lenq - e) * step) as f64 / m as f64;
                inv_twiddles.push(Complex64::new(a.cos(), a.sin()));
                g = g * 5 % m;
            }
            len *= 2;
        }
        let ntts = log_slots
            .iter()
            .map(|&ls| {
                let log_m = ls + 1;
                let per_prime = (0..params.q_count())
                    .into_par_iter()
                    .map(|i| SmallNtt::new(params, i, log_m))
                    .collect();
                (log_m, per_prime)
            })
            .collect();
        Self {
            params: params.clone(),
            inv_twiddles,
            ntts,
        }
    }

    /// The encoder's inverse special FFT (slots -> coefficient vector), in place.
    fn fft_special_inv(&self, v: &mut [Complex64]) {
        let size = v.len();
        let mut len = size;
        while len >= 2 {
            let lenh = len / 2;
            let tw = &self.inv_twiddles[lenh - 1..len - 1];
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
        if size > 2 {
            let bits = size.trailing_zeros();
            for i in 0..size {
                let j = i.reverse_bits() >> (usize::BITS - bits);
                if i < j {
                    v.swap(i, j);
                }
            }
        }
        let inv = 1.0 / size as f64;
        v.iter_mut().for_each(|x| *x *= inv);
    }

    /// `values` (exactly `2^log_slots`) at `level` and `scale`: `M` NTT values
    /// per prime, limb after limb (`F` above).
    pub(crate) fn encode(
        &self,
        values: &[Complex64],
        level: usize,
        scale: f64,
        log_slots: u32,
    ) -> Result<Vec<u64>> {
        let slots = 1usize << log_slots;
        let ntts = self
            .ntts
            .get(&(log_slots + 1))
            .filter(|_| values.len() == slots && level < self.params.q_count())
            .ok_or(CkksError::InvalidSlots(log_slots))?;
        let mut v = values.to_vec();
        self.fft_special_inv(&mut v);
        let m = 2 * slots;
        let mut coeffs = vec![0f64; m];
        scale_round(&mut coeffs, &v, scale, 1);
        let max = coeffs.iter().fold(0f64, |a, &c| a.max(c.abs()));
        check_coefficient_bound(&self.params, max, level)?;
        let mut out = vec![0u64; (level + 1) * m];
        let mut f = vec![0u64; m];
        for (limb, ntt) in out.chunks_mut(m).zip(ntts) {
            let q = &ntt.modulus;
            for (r, &c) in f.iter_mut().zip(&coeffs) {
                *r = if c.abs() < 9.0e18 {
                    q.reduce_i64(c as i64)
                } else {
                    reduce_f64_integer(c, q)
                };
            }
            ntt.forward(&mut f, limb);
        }
        Ok(out)
    }
}

/// A [`LinearTransform`] on sparse slots with its pre-rotated diagonals
/// encoded compactly for one input level and scale (the same baby-step
/// giant-step evaluation as [`crate::circuits::EncodedLinearTransform`]).
pub(crate) struct CompactTransform {
    log_slots: u32,
    level: usize,
    input_scale: f64,
    output_scale: f64,
    n1: usize,
    /// log2(N / M): each compact value stands for `2^log_gap` NTT values.
    log_gap: u32,
    /// Giant index j -> (baby index i, diagonal n1 j + i rotated right by n1 j, compact).
    giants: BTreeMap<usize, Vec<(usize, Vec<u64>)>>,
}

/// log2 of the shortest period (a power of two) shared by every diagonal of
/// `lt`, up to a relative `1e-12`: a transform on `2^ls` slots whose
/// diagonals repeat every `2^p` slots has them encoded as `2^p`-slot
/// plaintexts (the first SlotsToCoeffs group, the FFT's short butterflies,
/// repeats every 2^8 slots).
pub(crate) fn diagonal_period_log(lt: &LinearTransform) -> u32 {
    let periodic = |p: usize| {
        lt.diagonals().values().all(|d| {
            let scale = d
                .iter()
                .fold(0f64, |a, z| a.max(z.norm()))
                .max(f64::MIN_POSITIVE);
            d.iter()
                .enumerate()
                .all(|(t, z)| (z - d[t % p]).norm() <= 1e-12 * scale)
        })
    };
    (0..lt.log_slots())
        .find(|&p| periodic(1 << p))
        .unwrap_or(lt.log_slots())
}

impl CompactTransform {
    /// Pre-rotates and encodes `lt` for inputs at `level` and `input_scale`,
    /// so that the output is at `output_scale` one level lower.
    pub(crate) fn encode(
        lt: &LinearTransform,
        encoder: &CompactEncoder,
        level: usize,
        input_scale: f64,
        output_scale: f64,
    ) -> Result<Self> {
        Self::encode_periodic(
            lt,
            encoder,
            level,
            input_scale,
            output_scale,
            lt.log_slots(),
        )
    }

    /// [`Self::encode`] for a transform whose diagonals repeat every
    /// `2^period_log` slots ([`diagonal_period_log`]): each (pre-rotated)
    /// diagonal is encoded from its first period, a plaintext of that many
    /// slots, which read on the transform's slots is the diagonal itself.
    pub(crate) fn encode_periodic(
        lt: &LinearTransform,
        encoder: &CompactEncoder,
        level: usize,
        input_scale: f64,
        output_scale: f64,
        period_log: u32,
    ) -> Result<Self> {
        if period_log > lt.log_slots() {
            return Err(CkksError::InvalidSlots(period_log));
        }
        let period = 1usize << period_log;
        let params = &encoder.params;
        if level == 0 || level > params.max_level() {
            return Err(CkksError::LevelTooLow { needed: 1, level });
        }
        if !(input_scale.is_finite()
            && input_scale > 0.0
            && output_scale.is_finite()
            && output_scale > 0.0)
        {
            return Err(CkksError::InvalidParameters(format!(
                "scales {input_scale} -> {output_scale}"
            )));
        }
        let n = lt.slots();
        let n1 = lt.baby_step();
        let pt_scale = output_scale * params.q()[level] as f64 / input_scale;
        let diagonals: Vec<(&usize, &Vec<Complex64>)> = lt.diagonals().iter().collect();
        let encoded = diagonals
            .par_iter()
            .map(|&(&k, d)| {
                let (j, i) = (k / n1, k % n1);
                // rot(d, -n1 j)[t] = d[t - n1 j]: the giant rotation applied last moves it back.
                let shift = n1 * j;
                // One period of the rotated diagonal (the whole of it when
                // not periodic).
                let rotated: Vec<Complex64> = (0..period).map(|t| d[(t + n - shift) % n]).collect();
                Ok((j, i, encoder.encode(&rotated, level, pt_scale, period_log)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut giants: BTreeMap<usize, Vec<(usize, Vec<u64>)>> = BTreeMap::new();
        for (j, i, pt) in encoded {
            giants.entry(j).or_default().push((i, pt));
        }
        Ok(Self {
            log_slots: lt.log_slots(),
            level,
            input_scale,
            output_scale,
            n1,
            log_gap: params.log_n() - (period_log + 1),
            giants,
        })
    }

    /// Bytes of the compact diagonals.
    pub(crate) fn byte_size(&self) -> usize {
        self.giants
            .values()
            .flatten()
            .map(|(_, v)| v.len() * 8)
            .sum()
    }

    /// `M ct`: one level, output at the encoded output scale. A ciphertext
    /// above the encoded level is dropped to it first; its scale must be the
    /// encoded input scale.
    pub(crate) fn evaluate(&self, eval: &Evaluator, ct: &Ciphertext) -> Result<Ciphertext> {
        if ct.log_slots() != self.log_slots {
            return Err(CkksError::SlotMismatch {
                a: ct.log_slots(),
                b: self.log_slots,
            });
        }
        if ((ct.scale() / self.input_scale) - 1.0).abs() > SCALE_TOLERANCE {
            return Err(CkksError::ScaleMismatch {
                a: ct.scale().log2(),
                b: self.input_scale.log2(),
            });
        }
        if ct.level() < self.level {
            return Err(CkksError::LevelTooLow {
                needed: self.level,
                level: ct.level(),
            });
        }
        let ct = eval.drop_to_level(ct, self.level)?;
        let params = eval.params();
        let ring = params.ring();
        let babies: Vec<usize> = {
            let mut b: Vec<usize> = self.giants.values().flatten().map(|(i, _)| *i).collect();
            b.sort_unstable();
            b.dedup();
            b
        };
        let steps: Vec<i64> = babies.iter().map(|&i| i as i64).collect();
        let rotated: BTreeMap<usize, Ciphertext> = babies
            .iter()
            .copied()
            .zip(eval.rotate_hoisted(&ct, &steps)?)
            .collect();
        let q_limbs = self.level + 1;
        let pt_scale = self.output_scale * params.q()[self.level] as f64 / self.input_scale;
        let mut acc: Option<Ciphertext> = None;
        for (&j, terms) in &self.giants {
            let mut c0 = ring.scratch(q_limbs, 0, true);
            let mut c1 = ring.scratch(q_limbs, 0, true);
            let inputs: Vec<(&Ciphertext, &[u64])> = terms
                .iter()
                .map(|(i, pt)| (&rotated[i], pt.as_slice()))
                .collect();
            self.multiply_accumulate(params, (&mut c0, &mut c1), &inputs);
            let mut inner = Ciphertext {
                c0,
                c1,
                scale: ct.scale() * pt_scale,
                log_slots: self.log_slots,
            };
            if j != 0 {
                inner = eval.rotate(&inner, (self.n1 * j) as i64)?;
            }
            match acc.as_mut() {
                None => acc = Some(inner),
                Some(s) => eval.add_assign(s, &inner)?,
            }
        }
        let acc = acc.ok_or_else(|| CkksError::InvalidParameters("empty transform".into()))?;
        let mut out = eval.rescale(&acc)?;
        // Equal up to the rounding of the two products above.
        out.scale = self.output_scale;
        Ok(out)
    }

    /// `(c0, c1) = sum_t (inputs[t].0.c0, inputs[t].0.c1) * expand(inputs[t].1)`,
    /// limb by limb: each compact value is repeated `2^log_gap` times into a
    /// block in cache, once for both halves. Below 2^50 the products of up to
    /// [`kernels::MAX_LAZY_TERMS`] terms are summed lazily (IFMA) with one
    /// reduction, as the streamed transforms' are; otherwise term by term.
    fn multiply_accumulate(
        &self,
        params: &Parameters,
        (c0, c1): (&mut RnsPoly, &mut RnsPoly),
        inputs: &[(&Ciphertext, &[u64])],
    ) {
        let ring = params.ring();
        let n = ring.n();
        let q_limbs = c0.q_limbs;
        let m = n >> self.log_gap;
        let log_gap = self.log_gap;
        let expand = |values: &[u64], start: usize, out: &mut [u64]| {
            for (k, v) in out.iter_mut().enumerate() {
                *v = values[(start + k) >> log_gap];
            }
        };
        c0.data
            .par_chunks_mut(n)
            .zip(c1.data.par_chunks_mut(n))
            .enumerate()
            .for_each(|(l, (o0, o1))| {
                let modulus = &ring.moduli()[l];
                let values: Vec<&[u64]> =
                    inputs.iter().map(|(_, c)| &c[l * m..(l + 1) * m]).collect();
                if !kernels::has_fast_inner_product(modulus, 1) {
                    let plan = ring.plan(q_limbs, l);
                    o0.fill(0);
                    o1.fill(0);
                    let mut tmp = [0u64; BLOCK];
                    for ((ct, _), values) in inputs.iter().zip(&values) {
                        let (a0, a1) = (ct.c0.limb(l), ct.c1.limb(l));
                        for b in (0..n).step_by(BLOCK) {
                            let e = (b + BLOCK).min(n);
                            let t = &mut tmp[..e - b];
                            expand(values, b, t);
                            plan.mul_acc(&mut o0[b..e], &a0[b..e], t);
                            plan.mul_acc(&mut o1[b..e], &a1[b..e], t);
                        }
                    }
                    return;
                }
                const LAZY: usize = kernels::MAX_LAZY_TERMS;
                let chunk = LAZY;
                let mut expanded = vec![0u64; chunk * BLOCK];
                let (mut t0, mut t1) = ([0u64; BLOCK], [0u64; BLOCK]);
                if inputs.is_empty() {
                    o0.fill(0);
                    o1.fill(0);
                }
                for b in (0..n).step_by(BLOCK) {
                    let e = (b + BLOCK).min(n);
                    for start in (0..inputs.len()).step_by(chunk) {
                        let end = (start + chunk).min(inputs.len());
                        for (t, values) in values[start..end].iter().enumerate() {
                            expand(values, b, &mut expanded[t * BLOCK..t * BLOCK + e - b]);
                        }
                        let k = end - start;
                        let (mut xs, mut bs, mut a_s) =
                            ([&[][..]; LAZY], [&[][..]; LAZY], [&[][..]; LAZY]);
                        for (t, (ct, _)) in inputs[start..end].iter().enumerate() {
                            xs[t] = &expanded[t * BLOCK..t * BLOCK + e - b];
                            bs[t] = &ct.c0.limb(l)[b..e];
                            a_s[t] = &ct.c1.limb(l)[b..e];
                        }
                        let (xs, bs, a_s) = (&xs[..k], &bs[..k], &a_s[..k]);
                        let (o0, o1) = (&mut o0[b..e], &mut o1[b..e]);
                        if start == 0 {
                            kernels::inner_product_pair(modulus, o0, o1, xs, bs, a_s);
                        } else {
                            let (t0, t1) = (&mut t0[..e - b], &mut t1[..e - b]);
                            kernels::inner_product_pair_add(modulus, o0, o1, xs, bs, a_s, t0, t1);
                        }
                    }
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::Encoder;
    use crate::encryption::{Decryptor, Encryptor};
    use crate::keys::KeyGenerator;
    use crate::params::ParametersLiteral;
    use std::sync::Arc;

    fn values(n: usize, seed: f64) -> Vec<Complex64> {
        (0..n)
            .map(|i| {
                Complex64::new(
                    (i as f64 * 0.37 + seed).sin(),
                    (i as f64 * 1.3 - seed).cos(),
                )
            })
            .collect()
    }

    /// Expanded, the compact encoding is the encoder's plaintext bit for bit.
    #[test]
    fn compact_encoding_expands_to_the_encoders_plaintext() {
        let params = ParametersLiteral::preset("insecure-boot-n11")
            .unwrap()
            .build()
            .unwrap();
        let n = params.n();
        let log_slots: Vec<u32> = (0..params.log_n() - 1).collect();
        let compact = CompactEncoder::new(&params, &log_slots);
        let encoder = Encoder::new(&params);
        for &ls in &log_slots {
            for level in [1, params.max_level()] {
                let v = values(1 << ls, ls as f64);
                let scale = 2f64.powi(40);
                let want = encoder.encode(&v, level, scale, ls).unwrap();
                let got = compact.encode(&v, level, scale, ls).unwrap();
                let m = 2usize << ls;
                let gap = n / m;
                let expanded: Vec<u64> = got
                    .chunks(m)
                    .flat_map(|limb| (0..n).map(move |j| limb[j / gap]))
                    .collect();
                assert_eq!(
                    expanded,
                    want.poly().as_words(),
                    "2^{ls} slots, level {level}"
                );
            }
        }
    }

    /// Encrypted, the compact transform computes the matrix product, as the
    /// plaintext reference does: dense matrices (baby and giant steps) on
    /// sparse slot counts, including one below `tfhe-ntt`'s smallest size.
    #[test]
    fn compact_transform_evaluates_the_matrix() {
        let params = ParametersLiteral::preset("insecure-n10")
            .unwrap()
            .build()
            .unwrap();
        let encoder = Encoder::new(&params);
        let log_slots: Vec<u32> = vec![2, 5, 8];
        let compact = CompactEncoder::new(&params, &log_slots);
        let mut kg = KeyGenerator::new(&params);
        let sk = kg.gen_secret_key();
        let transforms: Vec<LinearTransform> = log_slots
            .iter()
            .map(|&ls| {
                let n = 1usize << ls;
                let rows: Vec<Vec<Complex64>> = (0..n)
                    .map(|r| values(n, r as f64).iter().map(|v| v / n as f64).collect())
                    .collect();
                LinearTransform::from_dense(&rows).unwrap()
            })
            .collect();
        let steps: Vec<i64> = transforms
            .iter()
            .flat_map(|lt| lt.rotation_steps())
            .collect();
        let eval = Evaluator::new(&params, Arc::new(kg.gen_evaluation_keys(&sk, &steps, true)));
        let mut enc = Encryptor::with_secret_key(&params, &sk);
        let dec = Decryptor::new(&sk);
        for (lt, &ls) in transforms.iter().zip(&log_slots) {
            let x = values(1 << ls, 0.5);
            let level = params.max_level();
            let scale = params.default_scale();
            let ct = enc
                .encrypt(&encoder.encode(&x, level, scale, ls).unwrap())
                .unwrap();
            let encoded = CompactTransform::encode(lt, &compact, level, scale, scale).unwrap();
            let out = encoded.evaluate(&eval, &ct).unwrap();
            assert_eq!((out.level(), out.scale()), (level - 1, scale));
            let got = encoder.decode(&dec.decrypt(&out).unwrap());
            for (a, b) in got.iter().zip(lt.apply_plain(&x)) {
                assert!((a - b).norm() < 1e-6, "2^{ls} slots: {a} vs {b}");
            }
        }
    }

    /// The first SlotsToCoeffs group on full slots has diagonals of a shorter
    /// period; encoded from one period, it computes the matrix product on the
    /// full-slot ciphertext (error below 2^-19.9); a dense random matrix has
    /// no shorter period.
    #[test]
    fn periodic_diagonals_encode_from_one_period() {
        let params = ParametersLiteral::preset("insecure-n10")
            .unwrap()
            .build()
            .unwrap();
        let ls = params.log_slots();
        let stc = crate::circuits::bootstrap::dft::slots_to_coeffs(ls, 2).unwrap();
        // 9 stages in groups of 5 and 4: the first repeats every 2^5 slots.
        assert_eq!(diagonal_period_log(&stc[0]), 5);
        assert_eq!(diagonal_period_log(&stc[1]), ls);
        let n = 1usize << ls;
        let rows: Vec<Vec<Complex64>> = (0..n).map(|r| values(n, r as f64)).collect();
        assert_eq!(
            diagonal_period_log(&LinearTransform::from_dense(&rows).unwrap()),
            ls
        );

        let lt = &stc[0];
        let compact = CompactEncoder::new(&params, &[5]);
        let encoder = Encoder::new(&params);
        let mut kg = KeyGenerator::new(&params);
        let sk = kg.gen_secret_key();
        let eval = Evaluator::new(
            &params,
            Arc::new(kg.gen_evaluation_keys(&sk, &lt.rotation_steps(), true)),
        );
        let mut enc = Encryptor::with_secret_key(&params, &sk);
        let dec = Decryptor::new(&sk);
        let x = values(n, 0.5);
        let (level, scale) = (params.max_level(), params.default_scale());
        let ct = enc
            .encrypt(&encoder.encode(&x, level, scale, ls).unwrap())
            .unwrap();
        let encoded =
            CompactTransform::encode_periodic(lt, &compact, level, scale, scale, 5).unwrap();
        let got = encoder.decode(&dec.decrypt(&encoded.evaluate(&eval, &ct).unwrap()).unwrap());
        let want = lt.apply_plain(&x);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).norm())
            .fold(0f64, f64::max);
        assert!(err < 1e-6, "max error {err:e}");
    }
}
