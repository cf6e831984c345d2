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
use crate::ring::{kernels, pool, RnsPoly};
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
    // Copied and transformed limb by limb, so that each copy is transformed
    // while it is still in cache. Unnormalized: the converters fold in N^-1.
    let mut coeff = ring.scratch(q_limbs, 0, false);
    coeff
        .data
        .par_chunks_mut(n)
        .zip(d.data.par_chunks(n))
        .enumerate()
        .for_each(|(i, (limb, src))| {
            limb.copy_from_slice(src);
            ring.plan(q_limbs, i).inverse_unnormalized(limb);
        });
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
    let ring = params.ring();
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
    let m = &ring.moduli()[ring.modulus_index(q_limbs, i)];
    if kernels::has_fast_inner_product(m, digits.len()) {
        let bs: Vec<&[u64]> = (0..digits.len()).map(|j| key.b[j].limb(key_limb)).collect();
        let a_s: Vec<&[u64]> = (0..digits.len()).map(|j| key.a[j].limb(key_limb)).collect();
        kernels::inner_product_pair(m, acc0, acc1, digits, &bs, &a_s);
    } else {
        // Larger primes: tfhe-ntt's AVX-512 products, accumulated.
        let plan = ring.plan(q_limbs, i);
        acc0.fill(0);
        acc1.fill(0);
        for (j, x) in digits.iter().enumerate() {
            plan.mul_acc(acc0, x, key.b[j].limb(key_limb));
            plan.mul_acc(acc1, x, key.a[j].limb(key_limb));
        }
    }
}

/// What a key switch adds to its output while writing it (one pass over
/// memory fewer than adding afterwards).
#[derive(Clone, Copy)]
pub enum Addend<'a> {
    /// `(u0 + a0, u1 + a1)`: relinearization adds the tensor's d0 and d1.
    Both(&'a RnsPoly, &'a RnsPoly),
    /// `(u0 + a0 permuted by the NTT index map, u1)`: a rotation adds the
    /// automorphism of c0.
    FirstPermuted(&'a RnsPoly, &'a [u32]),
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
    product_mod_down_with(params, dec, key, map, None, false)
}

/// [`product_mod_down`] that also adds `addend` (at the input's level, NTT
/// form) to the output and, with `rescale`, divides by the top prime q_l as
/// well: the result is then `round((P a + acc) / (P q_l))` over Q_{l-1}, the
/// relinearized and rescaled product in one ModDown (from P and q_l at once),
/// which spares the rescale's own transforms of every limb.
pub fn product_mod_down_with(
    params: &Parameters,
    dec: &mut Decomposed,
    key: &SwitchingKey,
    map: Option<&[u32]>,
    addend: Option<Addend>,
    rescale: bool,
) -> (RnsPoly, RnsPoly) {
    assert!(
        map.is_none() || dec.ntt,
        "hoisted automorphisms need an NTT-form decomposition"
    );
    assert!(
        !rescale || (dec.level > 0 && matches!(addend, Some(Addend::Both(..)))),
        "the fused rescale takes a relinearization above level 0"
    );
    let ring = params.ring();
    let n = ring.n();
    let level = dec.level;
    let q_limbs = level + 1;
    let out_limbs = if rescale { level } else { q_limbs };
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
    let mut down_lists = q_lists.split_off(q_limbs);
    // With the rescale, q_l joins the primes divided out (last, after P).
    let dropped = if rescale { 1 } else { 0 };
    if rescale {
        down_lists.push(q_lists.pop().expect("top limb"));
    }
    let down_count = pc + dropped;
    let scratch_len = if map.is_some() { digit_count * n } else { 0 };

    // P limbs (and q_l): products, then straight back to coefficients while in cache.
    let mut down_coeffs = pool::take(2 * down_count * n);
    down_coeffs
        .par_chunks_mut(2 * n)
        .zip(down_lists.into_par_iter())
        .enumerate()
        .for_each(|(t, (out, converted))| {
            let i = if t < pc { q_limbs + t } else { level };
            let mut scratch = pool::take(scratch_len);
            product(i, converted, out, &mut scratch);
            pool::give(scratch);
            if i == level {
                // acc + P a on the dropped prime.
                if let Some(Addend::Both(a0, a1)) = addend {
                    let m = &ring.q()[i];
                    let p_mod = params.p_mod_q()[i];
                    kernels::add_mul_const(m, &mut out[..n], a0.limb(i), p_mod);
                    kernels::add_mul_const(m, &mut out[n..], a1.limb(i), p_mod);
                }
            }
            let plan = ring.plan(q_limbs, i);
            // Unnormalized: the converter folds in N^-1.
            plan.inverse_unnormalized(&mut out[..n]);
            plan.inverse_unnormalized(&mut out[n..]);
        });

    // [x]_P (or [x]_{P q_l}) -> the output primes, exactly (centered), for both halves.
    let converter = if rescale {
        params.mod_down_rescale(level)
    } else {
        params.mod_down(level)
    };
    let mut out0 = ring.scratch(out_limbs, 0, true);
    let mut out1 = ring.scratch(out_limbs, 0, true);
    for (half, out) in [&mut out0, &mut out1].into_iter().enumerate() {
        let input: Vec<&[u64]> = (0..down_count)
            .map(|t| &down_coeffs[(2 * t + half) * n..(2 * t + half + 1) * n])
            .collect();
        let mut outputs: Vec<&mut [u64]> = out.data.chunks_mut(n).collect();
        converter.convert_centered(ring, &input, &mut outputs);
    }
    pool::give(down_coeffs);

    // Q limbs: products, and (x - [x]_P) / P (times q_l^-1 with the rescale) at once.
    let p_inv = params.p_inv_mod_q();
    let q_inv = if rescale { params.q_inv(level) } else { &[] };
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
            // (acc + P a - [x]) / (P q_l) = (acc - [x]) (P q_l)^-1 + a q_l^-1.
            let (w, a_factor) = if rescale {
                (m.mul(p_inv[i], q_inv[i]), q_inv[i])
            } else {
                (p_inv[i], 1)
            };
            kernels::sub_from_mul_const(m, c0, &acc[..n], w);
            kernels::sub_from_mul_const(m, c1, &acc[n..], w);
            match addend {
                None => {}
                Some(Addend::Both(a0, a1)) => {
                    kernels::add_mul_const(m, c0, a0.limb(i), a_factor);
                    kernels::add_mul_const(m, c1, a1.limb(i), a_factor);
                }
                Some(Addend::FirstPermuted(a0, map)) => {
                    let permuted = &mut acc[..n];
                    let src = a0.limb(i);
                    for (o, &k) in permuted.iter_mut().zip(map) {
                        *o = src[k as usize];
                    }
                    kernels::add_mul_const(m, c0, permuted, 1);
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

/// [`key_switch`] with an addend and an optional fused rescale (see
/// [`product_mod_down_with`]).
pub fn key_switch_with(
    params: &Parameters,
    d: &RnsPoly,
    key: &SwitchingKey,
    addend: Addend,
    rescale: bool,
) -> (RnsPoly, RnsPoly) {
    product_mod_down_with(
        params,
        &mut mod_up(params, d),
        key,
        None,
        Some(addend),
        rescale,
    )
}
