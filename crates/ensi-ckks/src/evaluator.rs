//! Homomorphic operations on ciphertexts.
//!
//! Levels and scales are tracked exactly. Operands at different levels are
//! aligned by dropping primes from the higher one (free, no noise); operands
//! at different scales are refused ([`CkksError::ScaleMismatch`]) unless the
//! scales agree to [`SCALE_TOLERANCE`]: use [`Evaluator::set_scale_to`] to
//! bring one to the other's scale at the cost of a level.

use crate::ciphertext::{Ciphertext, Plaintext};
use crate::error::{CkksError, Result};
use crate::keys::{EvaluationKeys, SwitchingKey};
use crate::keyswitch::{decompose, key_switch_with, product_mod_down_with, Addend};
use crate::params::Parameters;
use crate::ring::{kernels, pool, Ring, RnsPoly};
use num_complex::Complex64;
use rayon::prelude::*;
use std::sync::Arc;

/// Two scales whose ratio differs from 1 by less than this are treated as
/// equal: the difference is below the precision of any CKKS result at the
/// scales used here (~2^-33 relative).
pub const SCALE_TOLERANCE: f64 = 1e-10;

/// A product before relinearization: (d0, d1, d2) decrypting to d0 + d1 s + d2 s^2.
#[derive(Clone, Debug)]
pub struct CiphertextTensor {
    d0: RnsPoly,
    d1: RnsPoly,
    d2: RnsPoly,
    scale: f64,
    log_slots: u32,
}

/// Evaluates operations with a set of public evaluation keys.
pub struct Evaluator {
    params: Parameters,
    keys: Arc<EvaluationKeys>,
    /// NTT of the monomial X^{N/2} per Q limb: multiplying by it multiplies every slot by i.
    monomial_i: RnsPoly,
}

/// Words `cols` of the vectors `rows` of `v`.
fn cut<'a>(
    v: &[&'a [u64]],
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> Vec<&'a [u64]> {
    v[rows].iter().map(|x| &x[cols.clone()]).collect()
}

/// One limb of each factor of a sum of products: `(x_t, b_t, a_t)` by term.
type LimbTerms<'a, 'b> = (&'a [&'b [u64]], &'a [&'b [u64]], &'a [&'b [u64]]);

/// Limb i of one output's two halves, with the output's index.
type OutputLimb<'a> = (usize, &'a mut [u64], &'a mut [u64]);

/// Limb `i` of `(sum_t x_t b_t, sum_t x_t a_t)` written (`overwrite`) or
/// added into `out`: lazily with IFMA below 2^50 (one reduction per output
/// and per [`kernels::MAX_LAZY_TERMS`] terms, the accumulators read once per
/// such group), term by term above.
fn accumulate_products(
    ring: &Ring,
    limbs: usize,
    i: usize,
    out: (&mut [u64], &mut [u64]),
    terms: LimbTerms,
    overwrite: bool,
) {
    const BLOCK: usize = 512;
    let ((o0, o1), (xs, bs, a_s)) = (out, terms);
    let m = &ring.moduli()[i];
    let n = o0.len();
    if kernels::has_fast_inner_product(m, 1) {
        let chunk = kernels::MAX_LAZY_TERMS;
        let mut start = 0;
        if overwrite {
            let k = xs.len().min(chunk);
            kernels::inner_product_pair(m, o0, o1, &xs[..k], &bs[..k], &a_s[..k]);
            start = k;
        }
        let (mut t0, mut t1) = ([0u64; BLOCK], [0u64; BLOCK]);
        while start < xs.len() {
            let end = (start + chunk).min(xs.len());
            for b in (0..n).step_by(BLOCK) {
                let e = (b + BLOCK).min(n);
                kernels::inner_product_pair_add(
                    m,
                    &mut o0[b..e],
                    &mut o1[b..e],
                    &cut(xs, start..end, b..e),
                    &cut(bs, start..end, b..e),
                    &cut(a_s, start..end, b..e),
                    &mut t0[..e - b],
                    &mut t1[..e - b],
                );
            }
            start = end;
        }
    } else {
        let plan = ring.plan(limbs, i);
        if overwrite {
            o0.fill(0);
            o1.fill(0);
        }
        for ((x, b), a) in xs.iter().zip(bs).zip(a_s) {
            plan.mul_acc(o0, x, b);
            plan.mul_acc(o1, x, a);
        }
    }
}

impl Evaluator {
    /// An evaluator for `params` with evaluation `keys`.
    pub fn new(params: &Parameters, keys: Arc<EvaluationKeys>) -> Self {
        let ring = params.ring();
        let mut coeffs = vec![0i64; ring.n()];
        coeffs[ring.n() / 2] = 1;
        let mut monomial_i = ring.from_signed(&coeffs, ring.q_count(), 0);
        ring.ntt(&mut monomial_i);
        Self {
            params: params.clone(),
            keys,
            monomial_i,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Parameters {
        &self.params
    }

    /// The evaluation keys.
    pub fn keys(&self) -> &EvaluationKeys {
        &self.keys
    }

    /// The keys, shared: another evaluator over the same keys costs no copy.
    pub fn shared_keys(&self) -> Arc<EvaluationKeys> {
        Arc::clone(&self.keys)
    }

    fn check(&self, ct: &Ciphertext) -> Result<()> {
        let n = self.params.n();
        let q = ct.c0.q_limbs();
        if q == 0
            || q > self.params.q_count()
            || ct.c0.p_limbs() != 0
            || ct.c1.q_limbs() != q
            || ct.c1.p_limbs() != 0
            || ct.c0.as_words().len() != q * n
            || ct.c1.as_words().len() != q * n
        {
            return Err(CkksError::ParametersMismatch);
        }
        Ok(())
    }

    /// The ciphertexts of a sum of products: valid, at `first`'s level and
    /// slot count.
    fn check_sum_operands<'c>(
        &self,
        cts: impl Iterator<Item = &'c Ciphertext>,
        first: &Ciphertext,
    ) -> Result<()> {
        for ct in cts {
            self.check(ct)?;
            if ct.level() != first.level() {
                return Err(CkksError::LevelTooLow {
                    needed: first.level(),
                    level: ct.level(),
                });
            }
            Self::check_slots(ct.log_slots, first.log_slots)?;
        }
        Ok(())
    }

    fn check_scales(a: f64, b: f64) -> Result<()> {
        if ((a / b) - 1.0).abs() > SCALE_TOLERANCE {
            return Err(CkksError::ScaleMismatch {
                a: a.log2(),
                b: b.log2(),
            });
        }
        Ok(())
    }

    fn check_slots(a: u32, b: u32) -> Result<()> {
        if a != b {
            return Err(CkksError::SlotMismatch { a, b });
        }
        Ok(())
    }

    /// Drops primes so that `ct` is at `level` (no noise, no rescaling).
    pub fn drop_to_level(&self, ct: &Ciphertext, level: usize) -> Result<Ciphertext> {
        self.check(ct)?;
        if level > ct.level() {
            return Err(CkksError::LevelTooLow {
                needed: level,
                level: ct.level(),
            });
        }
        // Only the kept limbs are copied.
        let ring = self.params.ring();
        Ok(Ciphertext {
            c0: ring.q_prefix(&ct.c0, level + 1),
            c1: ring.q_prefix(&ct.c1, level + 1),
            scale: ct.scale,
            log_slots: ct.log_slots,
        })
    }

    /// Brings two ciphertexts to the lower of their levels.
    fn aligned<'a>(
        &self,
        a: &'a Ciphertext,
        b: &'a Ciphertext,
    ) -> Result<(
        std::borrow::Cow<'a, Ciphertext>,
        std::borrow::Cow<'a, Ciphertext>,
    )> {
        use std::borrow::Cow;
        self.check(a)?;
        self.check(b)?;
        Check::slots(a, b)?;
        Ok(match a.level().cmp(&b.level()) {
            std::cmp::Ordering::Equal => (Cow::Borrowed(a), Cow::Borrowed(b)),
            std::cmp::Ordering::Greater => (
                Cow::Owned(self.drop_to_level(a, b.level())?),
                Cow::Borrowed(b),
            ),
            std::cmp::Ordering::Less => (
                Cow::Borrowed(a),
                Cow::Owned(self.drop_to_level(b, a.level())?),
            ),
        })
    }

    /// The plaintext polynomial at `level` (dropping primes; error if the plaintext is lower).
    /// A plaintext usable at `level`: at that level or above, Q limbs only.
    fn check_plain(&self, pt: &Plaintext, level: usize) -> Result<()> {
        if pt.level() < level {
            return Err(CkksError::LevelTooLow {
                needed: level,
                level: pt.level(),
            });
        }
        if pt.poly.p_limbs() != 0 || pt.poly.as_words().len() != pt.poly.q_limbs() * self.params.n()
        {
            return Err(CkksError::ParametersMismatch);
        }
        Ok(())
    }

    /// The plaintext's first `level + 1` limbs (only those are copied).
    fn plain_at(&self, pt: &Plaintext, level: usize) -> Result<RnsPoly> {
        self.check_plain(pt, level)?;
        Ok(self.params.ring().q_prefix(&pt.poly, level + 1))
    }

    /// a + b.
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.combine(a, b, Ring::add)
    }

    /// a += b.
    pub fn add_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        self.combine_assign(a, b, Ring::add_assign, Ring::add)
    }

    /// a - b.
    pub fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.combine(a, b, Ring::sub)
    }

    /// a -= b.
    pub fn sub_assign(&self, a: &mut Ciphertext, b: &Ciphertext) -> Result<()> {
        self.combine_assign(a, b, Ring::sub_assign, Ring::sub)
    }

    /// `op` on both parts, after aligning levels and checking scales and slots.
    fn combine(
        &self,
        a: &Ciphertext,
        b: &Ciphertext,
        op: fn(&Ring, &RnsPoly, &RnsPoly) -> RnsPoly,
    ) -> Result<Ciphertext> {
        let (a, b) = self.aligned(a, b)?;
        Self::check_scales(a.scale, b.scale)?;
        let ring = self.params.ring();
        Ok(Ciphertext {
            c0: op(ring, &a.c0, &b.c0),
            c1: op(ring, &a.c1, &b.c1),
            scale: a.scale,
            log_slots: a.log_slots,
        })
    }

    /// In-place `op_assign` when the levels agree (no allocation), else `op`.
    fn combine_assign(
        &self,
        a: &mut Ciphertext,
        b: &Ciphertext,
        op_assign: fn(&Ring, &mut RnsPoly, &RnsPoly),
        op: fn(&Ring, &RnsPoly, &RnsPoly) -> RnsPoly,
    ) -> Result<()> {
        if a.level() != b.level() {
            *a = self.combine(a, b, op)?;
            return Ok(());
        }
        self.check(a)?;
        self.check(b)?;
        Check::slots(a, b)?;
        Self::check_scales(a.scale, b.scale)?;
        let ring = self.params.ring();
        op_assign(ring, &mut a.c0, &b.c0);
        op_assign(ring, &mut a.c1, &b.c1);
        Ok(())
    }

    /// -a.
    pub fn neg(&self, a: &Ciphertext) -> Result<Ciphertext> {
        self.check(a)?;
        let ring = self.params.ring();
        let mut out = a.clone();
        ring.neg_assign(&mut out.c0);
        ring.neg_assign(&mut out.c1);
        Ok(out)
    }

    /// ct + pt (the plaintext must have the ciphertext's scale and at least its level).
    pub fn add_plain(&self, ct: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        self.plain_into_c0(ct, pt, Ring::add_assign)
    }

    /// ct - pt.
    pub fn sub_plain(&self, ct: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        self.plain_into_c0(ct, pt, Ring::sub_assign)
    }

    /// Adds or subtracts a plaintext: only c0 changes.
    fn plain_into_c0(
        &self,
        ct: &Ciphertext,
        pt: &Plaintext,
        op_assign: fn(&Ring, &mut RnsPoly, &RnsPoly),
    ) -> Result<Ciphertext> {
        self.check(ct)?;
        Self::check_slots(ct.log_slots, pt.log_slots)?;
        Self::check_scales(ct.scale, pt.scale)?;
        let p = self.plain_at(pt, ct.level())?;
        let mut out = ct.clone();
        op_assign(self.params.ring(), &mut out.c0, &p);
        Ok(out)
    }

    /// ct * pt, without rescaling: the scale becomes the product of the scales.
    pub fn mul_plain(&self, ct: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        self.mul_plain_sum(&[(ct, pt)])
    }

    /// `sum_t ct_t * pt_t`, not rescaled, in one pass over the limbs (the
    /// inner sums of baby-step giant-step linear maps): the ciphertexts share
    /// one level, and every `ct_t.scale * pt_t.scale` must agree (the
    /// result's scale); plaintexts above that level are read down to it.
    /// Primes below 2^50 sum the products lazily with IFMA (one reduction per
    /// output and per 15 terms); larger ones multiply-accumulate term by term.
    pub fn mul_plain_sum(&self, terms: &[(&Ciphertext, &Plaintext)]) -> Result<Ciphertext> {
        let (first, first_pt) = *terms
            .first()
            .ok_or_else(|| CkksError::InvalidParameters("an empty sum of products".into()))?;
        let level = first.level();
        let scale = first.scale * first_pt.scale;
        self.check_sum_operands(terms.iter().map(|(ct, _)| *ct), first)?;
        for &(ct, pt) in terms {
            Self::check_slots(ct.log_slots, pt.log_slots)?;
            self.check_plain(pt, level)?;
            Self::check_scales(ct.scale * pt.scale, scale)?;
        }
        let ring = self.params.ring();
        let (n, limbs) = (ring.n(), level + 1);
        let mut c0 = ring.scratch(limbs, 0, true);
        let mut c1 = ring.scratch(limbs, 0, true);
        c0.data
            .par_chunks_mut(n)
            .zip(c1.data.par_chunks_mut(n))
            .enumerate()
            .for_each(|(i, (o0, o1))| {
                let xs: Vec<&[u64]> = terms.iter().map(|(_, pt)| pt.poly.limb(i)).collect();
                let bs: Vec<&[u64]> = terms.iter().map(|(ct, _)| ct.c0.limb(i)).collect();
                let a_s: Vec<&[u64]> = terms.iter().map(|(ct, _)| ct.c1.limb(i)).collect();
                accumulate_products(ring, limbs, i, (o0, o1), (&xs, &bs, &a_s), true);
            });
        Ok(Ciphertext {
            c0,
            c1,
            scale,
            log_slots: first.log_slots,
        })
    }

    /// `sum_t ct_t * pt_t` as [`Self::mul_plain_sum`], with every plaintext
    /// given by its rounded coefficients ([`crate::PlainCoefficients`]): each
    /// limb of each plaintext is reduced and transformed in cache, a few terms
    /// at a time, and multiplied at once, so no plaintext is ever stored
    /// whole. For plaintexts used once (the diagonals of a linear map encoded
    /// as they are used) this saves writing and reading back `level + 1`
    /// limbs of N words per term.
    pub fn mul_coefficients_sum(
        &self,
        terms: &[(&Ciphertext, &crate::PlainCoefficients)],
    ) -> Result<Ciphertext> {
        let cts: Vec<&Ciphertext> = terms.iter().map(|(ct, _)| *ct).collect();
        let pts: Vec<Option<&crate::PlainCoefficients>> =
            terms.iter().map(|(_, pt)| Some(*pt)).collect();
        self.mul_coefficients_sums(&cts, &[pts])?
            .pop()
            .flatten()
            .ok_or_else(|| CkksError::InvalidParameters("an empty sum of products".into()))
    }

    /// Several sums over the same ciphertexts at once: output o is
    /// `sum_t cts[t] * pts[o][t]` as in [`Self::mul_coefficients_sum`] (a
    /// `None` skips the term; an output without terms is `None`). Each
    /// ciphertext limb is read from memory once for all outputs and reused
    /// from cache: the products of a linear map's inner sums are bound by
    /// reading the rotated inputs, which every output of the map shares.
    pub fn mul_coefficients_sums(
        &self,
        cts: &[&Ciphertext],
        pts: &[Vec<Option<&crate::PlainCoefficients>>],
    ) -> Result<Vec<Option<Ciphertext>>> {
        let first = *cts
            .first()
            .ok_or_else(|| CkksError::InvalidParameters("an empty sum of products".into()))?;
        let level = first.level();
        self.check_sum_operands(cts.iter().copied(), first)?;
        let mut scales = Vec::with_capacity(pts.len());
        for row in pts {
            if row.len() != cts.len() {
                return Err(CkksError::InvalidParameters(format!(
                    "{} plaintexts for {} ciphertexts",
                    row.len(),
                    cts.len()
                )));
            }
            let mut scale = None;
            for (ct, pt) in cts.iter().zip(row) {
                let Some(pt) = pt else { continue };
                Self::check_slots(ct.log_slots, pt.log_slots())?;
                pt.check_level(&self.params, level)?;
                let sc = ct.scale * pt.scale();
                match scale {
                    None => scale = Some(sc),
                    Some(s) => Self::check_scales(sc, s)?,
                }
            }
            scales.push(scale);
        }
        let ring = self.params.ring();
        let (n, limbs) = (ring.n(), level + 1);
        // Residue limbs transformed at once per output: a few, so that they
        // and the ciphertext limbs they multiply stay in cache.
        const CHUNK: usize = 4;
        let mut outs: Vec<Option<(RnsPoly, RnsPoly)>> = scales
            .iter()
            .map(|s| s.map(|_| (ring.scratch(limbs, 0, true), ring.scratch(limbs, 0, true))))
            .collect();
        // Limb i of every output, so that the limbs run in parallel.
        let mut per_limb: Vec<Vec<OutputLimb>> = (0..limbs).map(|_| Vec::new()).collect();
        for (o, out) in outs.iter_mut().enumerate() {
            if let Some((c0, c1)) = out {
                for (i, (a, b)) in c0.data.chunks_mut(n).zip(c1.data.chunks_mut(n)).enumerate() {
                    per_limb[i].push((o, a, b));
                }
            }
        }
        per_limb
            .into_par_iter()
            .enumerate()
            .for_each(|(i, mut limb_outs)| {
                let (m, plan) = (&ring.moduli()[i], ring.plan(limbs, i));
                let mut scratch = pool::take(CHUNK.min(cts.len()) * n);
                let mut written = vec![false; pts.len()];
                for start in (0..cts.len()).step_by(CHUNK) {
                    let end = (start + CHUNK).min(cts.len());
                    for (o, o0, o1) in limb_outs.iter_mut() {
                        let mut xs: Vec<&[u64]> = Vec::with_capacity(CHUNK);
                        let (mut bs, mut a_s) = (xs.clone(), xs.clone());
                        let mut free: &mut [u64] = &mut scratch;
                        for t in start..end {
                            let Some(pt) = pts[*o][t] else { continue };
                            let (x, rest) = std::mem::take(&mut free).split_at_mut(n);
                            pt.reduce_into(m, x);
                            plan.forward(x);
                            xs.push(x);
                            bs.push(cts[t].c0.limb(i));
                            a_s.push(cts[t].c1.limb(i));
                            free = rest;
                        }
                        if xs.is_empty() {
                            continue;
                        }
                        accumulate_products(
                            ring,
                            limbs,
                            i,
                            (o0, o1),
                            (&xs, &bs, &a_s),
                            !written[*o],
                        );
                        written[*o] = true;
                    }
                }
                pool::give(scratch);
            });
        Ok(outs
            .into_iter()
            .zip(scales)
            .map(|(out, scale)| {
                let ((c0, c1), scale) = (out?, scale?);
                Some(Ciphertext {
                    c0,
                    c1,
                    scale,
                    log_slots: first.log_slots,
                })
            })
            .collect())
    }

    /// Residues of round(c) in each Q limb up to `level` (c an integer-valued f64 of any size).
    fn integer_residues(&self, c: f64, level: usize) -> Vec<u64> {
        self.params.ring().q()[..=level]
            .iter()
            .map(|m| crate::encoder::reduce_f64_integer(c.round(), m))
            .collect()
    }

    /// ct + c for a complex constant c in every slot.
    pub fn add_const(&self, ct: &Ciphertext, c: Complex64) -> Result<Ciphertext> {
        self.check(ct)?;
        let ring = self.params.ring();
        let mut out = ct.clone();
        let re = self.integer_residues(c.re * ct.scale, ct.level());
        ring.add_scalar_rns(&mut out.c0, &re);
        if c.im != 0.0 {
            let mut t = self.monomial_i.clone();
            t.truncate_q(ct.level() + 1);
            ring.mul_scalar_rns(&mut t, &self.integer_residues(c.im * ct.scale, ct.level()));
            ring.add_assign(&mut out.c0, &t);
        }
        Ok(out)
    }

    /// ct - c for a complex constant c in every slot.
    pub fn sub_const(&self, ct: &Ciphertext, c: Complex64) -> Result<Ciphertext> {
        self.add_const(ct, -c)
    }

    /// ct * round(c * const_scale) without rescaling: the scale becomes
    /// scale * const_scale. `c` may be complex (the imaginary part multiplies by X^{N/2}).
    pub fn mul_const_scaled(
        &self,
        ct: &Ciphertext,
        c: Complex64,
        const_scale: f64,
    ) -> Result<Ciphertext> {
        self.check(ct)?;
        if !(c.re.is_finite() && c.im.is_finite() && const_scale.is_finite() && const_scale > 0.0) {
            return Err(CkksError::Encoding(format!(
                "constant {c} at scale {const_scale}"
            )));
        }
        let ring = self.params.ring();
        let level = ct.level();
        let re = self.integer_residues(c.re * const_scale, level);
        let mut out = ct.clone();
        ring.mul_scalar_rns(&mut out.c0, &re);
        ring.mul_scalar_rns(&mut out.c1, &re);
        if c.im != 0.0 {
            let im = self.integer_residues(c.im * const_scale, level);
            let mut mono = self.monomial_i.clone();
            mono.truncate_q(level + 1);
            ring.mul_scalar_rns(&mut mono, &im);
            let mut t0 = ct.c0.clone();
            let mut t1 = ct.c1.clone();
            ring.mul_assign(&mut t0, &mono);
            ring.mul_assign(&mut t1, &mono);
            ring.add_assign(&mut out.c0, &t0);
            ring.add_assign(&mut out.c1, &t1);
        }
        out.scale *= const_scale;
        Ok(out)
    }

    /// `sum_k round(c_k s_k) ct_k` at `level`, not rescaled, for terms
    /// `(ct_k, c_k, s_k)`: each input is read only down to `level` (no copy,
    /// one pass per output limb), and every `ct_k.scale * s_k` must agree: the
    /// result carries that scale. Equal, word for word, to dropping each input
    /// to `level`, [`Self::mul_const_scaled`] and adding; the leaves of
    /// polynomial evaluation are such sums.
    pub fn mul_const_sum(
        &self,
        terms: &[(&Ciphertext, f64, f64)],
        level: usize,
    ) -> Result<Ciphertext> {
        let (first, _, s0) = *terms
            .first()
            .ok_or_else(|| CkksError::InvalidParameters("an empty sum of terms".into()))?;
        let scale = first.scale * s0;
        for &(ct, c, s) in terms {
            self.check(ct)?;
            if ct.level() < level {
                return Err(CkksError::LevelTooLow {
                    needed: level,
                    level: ct.level(),
                });
            }
            if ct.log_slots != first.log_slots {
                return Err(CkksError::SlotMismatch {
                    a: first.log_slots,
                    b: ct.log_slots,
                });
            }
            if !(c.is_finite() && s.is_finite() && s > 0.0) {
                return Err(CkksError::Encoding(format!("constant {c} at scale {s}")));
            }
            Self::check_scales(ct.scale * s, scale)?;
        }
        let ring = self.params.ring();
        let residues: Vec<Vec<u64>> = terms
            .iter()
            .map(|&(_, c, s)| self.integer_residues(c * s, level))
            .collect();
        let sum = |pick: fn(&Ciphertext) -> &RnsPoly| {
            let mut out = ring.zero(level + 1, 0, true);
            let n = ring.n();
            out.data
                .par_chunks_mut(n)
                .enumerate()
                .for_each(|(i, limb)| {
                    let m = &ring.moduli()[i];
                    for (&(ct, _, _), r) in terms.iter().zip(&residues) {
                        kernels::add_mul_const(m, limb, pick(ct).limb(i), r[i]);
                    }
                });
            out
        };
        Ok(Ciphertext {
            c0: sum(|ct| &ct.c0),
            c1: sum(|ct| &ct.c1),
            scale,
            log_slots: first.log_slots,
        })
    }

    /// ct * c, then rescale: the constant is encoded at the scale of the prime
    /// that the rescaling removes, so the result keeps ct's scale exactly.
    pub fn mul_const(&self, ct: &Ciphertext, c: Complex64) -> Result<Ciphertext> {
        let q_top = self.prime_to_rescale(ct)?;
        let out = self.mul_const_scaled(ct, c, q_top)?;
        self.rescale(&out)
    }

    /// The prime the next rescale of `ct` removes (refused at level 0).
    fn prime_to_rescale(&self, ct: &Ciphertext) -> Result<f64> {
        self.check(ct)?;
        if ct.level() == 0 {
            return Err(CkksError::LevelTooLow {
                needed: 1,
                level: 0,
            });
        }
        Ok(self.params.q()[ct.level()] as f64)
    }

    /// ct * k for an integer k: no level, no change of scale.
    pub fn mul_int(&self, ct: &Ciphertext, k: i64) -> Result<Ciphertext> {
        self.check(ct)?;
        let ring = self.params.ring();
        let r: Vec<u64> = ring.q()[..=ct.level()]
            .iter()
            .map(|m| m.reduce_i64(k))
            .collect();
        let mut out = ct.clone();
        ring.mul_scalar_rns(&mut out.c0, &r);
        ring.mul_scalar_rns(&mut out.c1, &r);
        Ok(out)
    }

    /// Changes the scale of `ct` to `target` at the cost of one level
    /// (multiplies by 1 encoded at the scale that makes the rescaled result land on `target`).
    pub fn set_scale_to(&self, ct: &Ciphertext, target: f64) -> Result<Ciphertext> {
        let q_top = self.prime_to_rescale(ct)?;
        let const_scale = target * q_top / ct.scale;
        if const_scale < 2f64.powi(20) {
            return Err(CkksError::Encoding(format!(
                "target scale 2^{:.1} too small to reach",
                target.log2()
            )));
        }
        let mut out =
            self.rescale(&self.mul_const_scaled(ct, Complex64::new(1.0, 0.0), const_scale)?)?;
        // The rounding of const_scale is folded into the recorded scale exactly.
        out.scale = ct.scale * const_scale.round() / q_top;
        Ok(out)
    }

    /// The tensor product (d0, d1, d2) = (a0 b0, a0 b1 + a1 b0, a1 b1).
    pub fn tensor(&self, a: &Ciphertext, b: &Ciphertext) -> Result<CiphertextTensor> {
        let (a, b) = self.aligned(a, b)?;
        let ring = self.params.ring();
        let d0 = ring.mul(&a.c0, &b.c0);
        let mut d1 = ring.mul(&a.c0, &b.c1);
        ring.mul_acc(&mut d1, &a.c1, &b.c0);
        let d2 = ring.mul(&a.c1, &b.c1);
        Ok(CiphertextTensor {
            d0,
            d1,
            d2,
            scale: a.scale * b.scale,
            log_slots: a.log_slots,
        })
    }

    fn relin_key(&self) -> Result<&SwitchingKey> {
        self.keys
            .relin
            .as_ref()
            .map(|k| &k.0)
            .ok_or(CkksError::MissingRelinKey)
    }

    /// A (possibly truncated) key must reach the ciphertext's level with enough digits.
    fn check_key(&self, key: &SwitchingKey, level: usize) -> Result<()> {
        if key.level() < level || key.b.len() < self.params.digits_at(level) {
            return Err(CkksError::KeyLevelTooLow {
                key_level: key.level(),
                level,
            });
        }
        Ok(())
    }

    /// Switches d2 s^2 back to a ciphertext under s.
    pub fn relinearize(&self, t: &CiphertextTensor) -> Result<Ciphertext> {
        let key = self.relin_key()?;
        self.check_key(key, t.d2.q_limbs() - 1)?;
        let (c0, c1) = key_switch_with(&self.params, &t.d2, key, Addend::Both(&t.d0, &t.d1), false);
        Ok(Ciphertext {
            c0,
            c1,
            scale: t.scale,
            log_slots: t.log_slots,
        })
    }

    /// [`Self::relinearize`] followed by [`Self::rescale`], in one ModDown
    /// (by P and q_l at once): the same result up to rounding, without the
    /// rescale's own pass of transforms over every limb.
    pub fn relinearize_rescale(&self, t: &CiphertextTensor) -> Result<Ciphertext> {
        let level = t.d2.q_limbs() - 1;
        if level == 0 {
            return Err(CkksError::LevelTooLow {
                needed: 1,
                level: 0,
            });
        }
        let key = self.relin_key()?;
        self.check_key(key, level)?;
        let (c0, c1) = key_switch_with(&self.params, &t.d2, key, Addend::Both(&t.d0, &t.d1), true);
        Ok(Ciphertext {
            c0,
            c1,
            scale: t.scale / self.params.q()[level] as f64,
            log_slots: t.log_slots,
        })
    }

    /// sum_i a_i * b_i with a single relinearization, without rescaling: the
    /// tensors are accumulated first (an inner product costs one key switch,
    /// not one per term). All pairs must share level, scale and slot count.
    pub fn mul_sum(&self, pairs: &[(&Ciphertext, &Ciphertext)]) -> Result<Ciphertext> {
        let ((a0, b0), rest) = pairs
            .split_first()
            .ok_or_else(|| CkksError::Encoding("empty inner product".into()))?;
        let mut acc = self.tensor(a0, b0)?;
        let ring = self.params.ring();
        for (a, b) in rest {
            let (a, b) = self.aligned(a, b)?;
            let level = acc.d0.q_limbs() - 1;
            if a.level() < level {
                return Err(CkksError::LevelTooLow {
                    needed: level,
                    level: a.level(),
                });
            }
            let a = self.drop_to_level(&a, level)?;
            let b = self.drop_to_level(&b, level)?;
            Check::slots(&a, &b)?;
            Self::check_scales(a.scale * b.scale, acc.scale)?;
            ring.mul_acc(&mut acc.d0, &a.c0, &b.c0);
            ring.mul_acc(&mut acc.d1, &a.c0, &b.c1);
            ring.mul_acc(&mut acc.d1, &a.c1, &b.c0);
            ring.mul_acc(&mut acc.d2, &a.c1, &b.c1);
        }
        self.relinearize(&acc)
    }

    /// a * b with relinearization, without rescaling.
    pub fn mul(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.relinearize(&self.tensor(a, b)?)
    }

    /// a * b with relinearization and rescaling (one level).
    pub fn mul_rescale(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.relinearize_rescale(&self.tensor(a, b)?)
    }

    /// `rescale(k a b - minus + constant)`: the product scaled by an integer,
    /// less a ciphertext at the product's level and scale, plus a real
    /// constant, all added to the tensor before the relinearization's ModDown,
    /// which also rescales (one key switch, one level). This is the Chebyshev
    /// recurrence `T_{m+n} = 2 T_m T_n - T_{m-n}` (or `T_{2m} = 2 T_m^2 - 1`) in
    /// one pass; the result equals the separate operations' up to rounding.
    pub fn mul_scaled_sub_rescale(
        &self,
        a: &Ciphertext,
        b: &Ciphertext,
        k: i64,
        minus: Option<&Ciphertext>,
        constant: f64,
    ) -> Result<Ciphertext> {
        let mut t = self.tensor(a, b)?;
        let ring = self.params.ring();
        let level = t.d2.q_limbs() - 1;
        if k != 1 {
            let r: Vec<u64> = ring.q()[..=level].iter().map(|m| m.reduce_i64(k)).collect();
            for d in [&mut t.d0, &mut t.d1, &mut t.d2] {
                ring.mul_scalar_rns(d, &r);
            }
        }
        if let Some(c) = minus {
            self.check(c)?;
            Self::check_slots(c.log_slots, t.log_slots)?;
            Self::check_scales(c.scale, t.scale)?;
            if c.level() != level {
                return Err(CkksError::LevelTooLow {
                    needed: level,
                    level: c.level(),
                });
            }
            ring.sub_assign(&mut t.d0, &c.c0);
            ring.sub_assign(&mut t.d1, &c.c1);
        }
        if constant != 0.0 {
            ring.add_scalar_rns(&mut t.d0, &self.integer_residues(constant * t.scale, level));
        }
        self.relinearize_rescale(&t)
    }

    /// Divides by the top prime q_l (rounding) and drops it: level - 1, scale / q_l.
    pub fn rescale(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        self.check(ct)?;
        let l = ct.level();
        if l == 0 {
            return Err(CkksError::LevelTooLow {
                needed: 1,
                level: 0,
            });
        }
        let q_top = self.params.q()[l];
        let (c0, c1) = self.rescale_pair(&ct.c0, &ct.c1);
        Ok(Ciphertext {
            c0,
            c1,
            scale: ct.scale / q_top as f64,
            log_slots: ct.log_slots,
        })
    }

    /// round(x / q_l) over the remaining primes, in NTT form, for two
    /// polynomials at once (limb by limb, so each prime's NTT tables are reused).
    fn rescale_pair(&self, x: &RnsPoly, y: &RnsPoly) -> (RnsPoly, RnsPoly) {
        let ring = self.params.ring();
        let n = ring.n();
        let l = x.q_limbs() - 1;
        let top = &ring.q()[l];
        // t = x mod q_l, centered; (x - t) / q_l is then x / q_l rounded to the nearest integer.
        let mut rx = pool::take(n);
        let mut ry = pool::take(n);
        rx.copy_from_slice(x.limb(l));
        ry.copy_from_slice(y.limb(l));
        ring.plan(l + 1, l).inverse(&mut rx);
        ring.plan(l + 1, l).inverse(&mut ry);
        let q_inv = self.params.q_inv(l);
        // Outputs are written from the inputs directly: no copy of the kept limbs.
        let mut ox = ring.scratch(l, 0, true);
        let mut oy = ring.scratch(l, 0, true);
        ox.data
            .par_chunks_mut(n)
            .zip(oy.data.par_chunks_mut(n))
            .enumerate()
            .for_each(|(i, (lx, ly))| {
                let m = &ring.q()[i];
                let plan = ring.plan(l, i);
                for (out, r, src) in [(lx, &rx, x.limb(i)), (ly, &ry, y.limb(i))] {
                    kernels::lift_centered(m, top.value(), out, r);
                    plan.forward(out);
                    kernels::sub_from_mul_const(m, out, src, q_inv[i]);
                }
            });
        pool::give(rx);
        pool::give(ry);
        (ox, oy)
    }

    fn galois_key(&self, k: u64) -> Result<&SwitchingKey> {
        self.keys
            .galois
            .get(&k)
            .map(|g| &g.key)
            .ok_or(CkksError::MissingGaloisKey(k))
    }

    /// Applies X -> X^k and switches back to s with the Galois key for k.
    pub fn apply_galois(&self, ct: &Ciphertext, k: u64) -> Result<Ciphertext> {
        self.check(ct)?;
        let key = self.galois_key(k)?;
        self.check_key(key, ct.level())?;
        let ring = self.params.ring();
        let map = ring.automorphism_ntt_map(k);
        let c1 = ring.automorphism_ntt_with_map(&ct.c1, &map);
        let (c0, c1) = key_switch_with(
            &self.params,
            &c1,
            key,
            Addend::FirstPermuted(&ct.c0, &map),
            false,
        );
        Ok(Ciphertext {
            c0,
            c1,
            scale: ct.scale,
            log_slots: ct.log_slots,
        })
    }

    /// Rotates the slots left by `step` (right for negative steps).
    pub fn rotate(&self, ct: &Ciphertext, step: i64) -> Result<Ciphertext> {
        let k = self.params.ring().galois_element_for_rotation(step);
        if k == 1 {
            self.check(ct)?;
            return Ok(ct.clone());
        }
        self.apply_galois(ct, k)
    }

    /// Complex conjugation of every slot.
    pub fn conjugate(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        self.apply_galois(ct, self.params.ring().galois_element_conjugate())
    }

    /// Rotations by several steps sharing one decomposition of c1 (hoisting).
    pub fn rotate_hoisted(&self, ct: &Ciphertext, steps: &[i64]) -> Result<Vec<Ciphertext>> {
        self.check(ct)?;
        let ring = self.params.ring();
        let elements: Vec<u64> = steps
            .iter()
            .map(|&s| ring.galois_element_for_rotation(s))
            .collect();
        for &k in &elements {
            if k != 1 {
                self.check_key(self.galois_key(k)?, ct.level())?;
            }
        }
        let mut dec = decompose(&self.params, &ct.c1);
        elements
            .iter()
            .map(|&k| {
                if k == 1 {
                    return Ok(ct.clone());
                }
                let key = self.galois_key(k)?;
                let map = ring.automorphism_ntt_map(k);
                let (c0, c1) = product_mod_down_with(
                    &self.params,
                    &mut dec,
                    key,
                    Some(&map),
                    Some(Addend::FirstPermuted(&ct.c0, &map)),
                    false,
                );
                Ok(Ciphertext {
                    c0,
                    c1,
                    scale: ct.scale,
                    log_slots: ct.log_slots,
                })
            })
            .collect()
    }
}

/// Checks shared by binary operations.
struct Check;

impl Check {
    fn slots(a: &Ciphertext, b: &Ciphertext) -> Result<()> {
        Evaluator::check_slots(a.log_slots, b.log_slots)
    }
}
