//! Hybrid key switching: ModUp of each digit, product with the key, ModDown by P.
//!
//! The machines this runs on are bound by memory bandwidth long before
//! arithmetic (a few GB/s per core), so the steps are arranged to touch each
//! megabyte as few times as possible:
//! * ModUp ([`decompose`]) leaves the converted limbs in coefficient form and
//!   never copies the digit's own limbs (they are read from the input);
//! * the product with the key and ModDown are fused limb by limb
//!   ([`product_mod_down`]): each limb of each digit is brought to NTT form in
//!   place, multiplied into two accumulators that stay in cache, and, for the
//!   Q primes, combined at once with the converted P part. No QP-sized
//!   accumulator is ever written to memory.
//!
//! The decomposition does not depend on the key, so it can be computed once
//! and shared by many keys ("hoisting"): an automorphism commutes with ModUp,
//! so permuting the decomposed digits in NTT form is as good as decomposing
//! the rotated input.

use crate::keys::SwitchingKey;
use crate::params::Parameters;
use crate::ring::{pool, RnsPoly};
use rayon::prelude::*;

/// The digits of one polynomial d, each extended to Q_l and P.
///
/// Digit j's own limbs are d's limbs (NTT form) and are read from `d`; `ext[j]`
/// holds the other limbs, the other Q limbs in order then the P limbs, in
/// coefficient form until [`Decomposed::transform_to_ntt`] (or the fused product)
/// transforms them.
pub struct Decomposed<'a> {
    d: &'a RnsPoly,
    ext: Vec<RnsPoly>,
    level: usize,
    alpha: usize,
    ntt: bool,
}

impl Decomposed<'_> {
    fn own_range(&self, j: usize) -> std::ops::Range<usize> {
        j * self.alpha..((j + 1) * self.alpha).min(self.level + 1)
    }

    /// Transforms every converted limb to NTT form, limb by limb across the
    /// digits so that each prime's tables are loaded once.
    fn transform_to_ntt(&mut self, params: &Parameters) {
        if self.ntt {
            return;
        }
        let ring = params.ring();
        let q_limbs = self.level + 1;
        for_each_limb_across_digits(self, |i, limbs| {
            let plan = ring.plan(q_limbs, i);
            for limb in limbs {
                plan.forward(limb);
            }
        });
        self.ntt = true;
    }
}

/// Calls `f(i, limbs)` in parallel for every limb index i of Q_l and P, with
/// the converted limbs of all digits at that index.
fn for_each_limb_across_digits(dec: &mut Decomposed, f: impl Fn(usize, Vec<&mut [u64]>) + Sync) {
    let total = dec.level + 1 + dec.ext.first().map_or(0, |e| e.p_limbs());
    let mut per_limb: Vec<Vec<&mut [u64]>> = (0..total).map(|_| Vec::new()).collect();
    let owns: Vec<_> = (0..dec.ext.len()).map(|j| dec.own_range(j)).collect();
    let n = dec.d.as_words().len() / dec.d.limbs();
    for (ext, own) in dec.ext.iter_mut().zip(&owns) {
        let indices = (0..total).filter(|i| !own.contains(i));
        for (i, limb) in indices.zip(ext.data.chunks_mut(n)) {
            per_limb[i].push(limb);
        }
    }
    per_limb
        .into_par_iter()
        .enumerate()
        .for_each(|(i, limbs)| f(i, limbs));
}

/// ModUp of every digit of `d` (NTT form over q_0..q_level); the converted
/// limbs stay in coefficient form.
fn mod_up<'a>(params: &Parameters, d: &'a RnsPoly) -> Decomposed<'a> {
    assert!(d.is_ntt() && d.p_limbs() == 0);
    let ring = params.ring();
    let n = ring.n();
    let level = d.q_limbs() - 1;
    let q_limbs = level + 1;
    // Unnormalized: the converters fold in N^-1.
    let mut coeff = d.clone();
    coeff
        .data
        .par_chunks_mut(n)
        .enumerate()
        .for_each(|(i, limb)| ring.plan(q_limbs, i).inverse_unnormalized(limb));
    let alpha = params.alpha();
    let ext = (0..params.digits_at(level))
        .map(|j| {
            let own = j * alpha..((j + 1) * alpha).min(level + 1);
            // Every limb is written by the conversion.
            let mut ext = ring.scratch(q_limbs - own.len(), params.p_count(), false);
            let input: Vec<&[u64]> = own.clone().map(|i| coeff.limb(i)).collect();
            let mut outputs: Vec<&mut [u64]> = ext.data.chunks_mut(n).collect();
            params.mod_up(level, j).convert(ring, &input, &mut outputs);
            ext
        })
        .collect();
    Decomposed {
        d,
        ext,
        level,
        alpha,
        ntt: false,
    }
}

/// ModUp of every digit of `d` with every limb in NTT form, ready to be
/// shared by several keys (hoisted rotations).
pub fn decompose<'a>(params: &Parameters, d: &'a RnsPoly) -> Decomposed<'a> {
    let mut dec = mod_up(params, d);
    dec.transform_to_ntt(params);
    dec
}

/// acc = sum_j digit_j[i] * key_j[i] (both halves), with the digit limbs
/// given in NTT form (already permuted if needed).
fn limb_product(
    params: &Parameters,
    q_limbs: usize,
    key: &SwitchingKey,
    i: usize,
    digits: &[&[u64]],
    acc: &mut [u64],
) {
    let plan = params.ring().plan(q_limbs, i);
    // Limb i of Q_l is key limb i; the P limbs follow the key's own Q limbs
    // (all of Q, or fewer for a key truncated to a lower level).
    let key_q = key.b[0].q_limbs();
    let key_limb = if i < q_limbs {
        i
    } else {
        key_q + (i - q_limbs)
    };
    let n = params.n();
    let (acc0, acc1) = acc.split_at_mut(n);
    acc0.fill(0);
    acc1.fill(0);
    for (j, x) in digits.iter().enumerate() {
        plan.mul_acc(acc0, x, key.b[j].limb(key_limb));
        plan.mul_acc(acc1, x, key.a[j].limb(key_limb));
    }
}

/// The key product followed by ModDown, fused limb by limb: returns (u0, u1)
/// over Q_l with u0 + u1 s ~ d' s', where d' is the decomposed polynomial
/// permuted by the automorphism `map` (NTT index map), if any.
///
/// A coefficient-form decomposition is transformed in place (and consumed);
/// hoisted callers pass an NTT-form one, which is only read.
pub fn product_mod_down(
    params: &Parameters,
    dec: &mut Decomposed,
    key: &SwitchingKey,
    map: Option<&[u32]>,
) -> (RnsPoly, RnsPoly) {
    assert!(
        map.is_none() || dec.ntt,
        "hoisted automorphisms need an NTT-form decomposition"
    );
    let ring = params.ring();
    let n = ring.n();
    let q_limbs = dec.level + 1;
    let pc = params.p_count();
    let digit_count = dec.ext.len();
    let was_ntt = dec.ntt;
    let d = dec.d;
    let owns: Vec<_> = (0..digit_count).map(|j| dec.own_range(j)).collect();

    // Per limb: the digits' limbs in NTT form (transforming converted limbs in
    // place), permuted by `map`, then the product into `acc`.
    let product =
        |i: usize, mut converted: Vec<&mut [u64]>, acc: &mut [u64], scratch: &mut [u64]| {
            let plan = ring.plan(q_limbs, i);
            if !was_ntt {
                for limb in converted.iter_mut() {
                    plan.forward(limb);
                }
            }
            let mut next = converted.iter();
            let sources: Vec<&[u64]> = owns
                .iter()
                .map(|own| {
                    if own.contains(&i) {
                        d.limb(i)
                    } else {
                        &**next.next().expect("limb")
                    }
                })
                .collect();
            match map {
                None => limb_product(params, q_limbs, key, i, &sources, acc),
                Some(map) => {
                    for (src, out) in sources.iter().zip(scratch.chunks_mut(n)) {
                        for (o, &k) in out.iter_mut().zip(map) {
                            *o = src[k as usize];
                        }
                    }
                    let permuted: Vec<&[u64]> = scratch.chunks(n).take(digit_count).collect();
                    limb_product(params, q_limbs, key, i, &permuted, acc);
                }
            }
        };

    // The converted limbs of every digit, grouped by limb index (transformed
    // in place if still in coefficient form, only read otherwise).
    let mut per_limb: Vec<Vec<&mut [u64]>> = (0..q_limbs + pc).map(|_| Vec::new()).collect();
    for (ext, own) in dec.ext.iter_mut().zip(&owns) {
        let indices = (0..q_limbs + pc).filter(|i| !own.contains(i));
        for (i, limb) in indices.zip(ext.data.chunks_mut(n)) {
            per_limb[i].push(limb);
        }
    }
    let mut q_lists = per_limb;
    let p_lists = q_lists.split_off(q_limbs);
    let scratch_len = if map.is_some() { digit_count * n } else { 0 };

    // P limbs: products, then straight back to coefficients while in cache.
    let mut p_coeffs = pool::take(2 * pc * n);
    p_coeffs
        .par_chunks_mut(2 * n)
        .zip(p_lists.into_par_iter())
        .enumerate()
        .for_each(|(t, (out, converted))| {
            let i = q_limbs + t;
            let mut scratch = pool::take(scratch_len);
            product(i, converted, out, &mut scratch);
            pool::give(scratch);
            let plan = ring.plan(q_limbs, i);
            // Unnormalized: the converter folds in N^-1.
            plan.inverse_unnormalized(&mut out[..n]);
            plan.inverse_unnormalized(&mut out[n..]);
        });

    // [x]_P -> Q_l, exactly (centered), for both halves.
    let mut out0 = ring.scratch(q_limbs, 0, true);
    let mut out1 = ring.scratch(q_limbs, 0, true);
    for (half, out) in [&mut out0, &mut out1].into_iter().enumerate() {
        let input: Vec<&[u64]> = (0..pc)
            .map(|t| &p_coeffs[(2 * t + half) * n..(2 * t + half + 1) * n])
            .collect();
        let mut outputs: Vec<&mut [u64]> = out.data.chunks_mut(n).collect();
        params
            .mod_down(dec.level)
            .convert_centered(ring, &input, &mut outputs);
    }
    pool::give(p_coeffs);

    // Q limbs: products, and (x - [x]_P) / P at once.
    let p_inv = params.p_inv_mod_q();
    out0.data
        .par_chunks_mut(n)
        .zip(out1.data.par_chunks_mut(n))
        .zip(q_lists.into_par_iter())
        .enumerate()
        .for_each(|(i, ((c0, c1), converted))| {
            let mut buf = pool::take(2 * n + scratch_len);
            let (acc, scratch) = buf.split_at_mut(2 * n);
            let plan = ring.plan(q_limbs, i);
            // The converted P part first, so that this prime's forward tables,
            // still in cache, serve these two and the digits' transforms below.
            plan.forward(c0);
            plan.forward(c1);
            product(i, converted, acc, scratch);
            let m = &ring.q()[i];
            let (w, ws) = (p_inv[i], m.shoup(p_inv[i]));
            for (c, a) in [(c0, &acc[..n]), (c1, &acc[n..])] {
                for (c, &v) in c.iter_mut().zip(a) {
                    *c = m.mul_shoup(m.sub(v, *c), w, ws);
                }
            }
            pool::give(buf);
        });
    dec.ntt = true;
    (out0, out1)
}

/// Key switching of `d` (NTT form at some level): returns (u0, u1) with
/// u0 + u1 s ~ d s', where the key switches s' to s.
pub fn key_switch(params: &Parameters, d: &RnsPoly, key: &SwitchingKey) -> (RnsPoly, RnsPoly) {
    product_mod_down(params, &mut mod_up(params, d), key, None)
}
