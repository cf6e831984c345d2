//! Hybrid key switching: decompose (ModUp per digit), multiply by the key,
//! ModDown by P.
//!
//! The decomposition does not depend on the key, so it is computed once and
//! shared by many keys ("hoisting"): an automorphism commutes with ModUp, so
//! rotating the decomposed digits is as good as decomposing the rotated input.

use crate::keys::SwitchingKey;
use crate::params::Parameters;
use crate::ring::RnsPoly;
use rayon::prelude::*;

/// The digits of one polynomial, each extended to Q_l and P, in NTT form.
pub struct Decomposed {
    pub(crate) digits: Vec<RnsPoly>,
    pub(crate) level: usize,
}

/// ModUp of every digit of `d` (NTT form over q_0..q_level).
pub fn decompose(params: &Parameters, d: &RnsPoly) -> Decomposed {
    assert!(d.is_ntt() && d.p_limbs() == 0);
    let ring = params.ring();
    let n = ring.n();
    let level = d.q_limbs() - 1;
    let q_limbs = level + 1;
    // Unnormalized: the converters fold in N^-1.
    let mut coeff = d.clone();
    coeff.data.par_chunks_mut(n).enumerate().for_each(|(i, limb)| ring.plan(q_limbs, i).inverse_unnormalized(limb));
    let alpha = params.alpha();
    let digit_range = |j: usize| j * alpha..((j + 1) * alpha).min(level + 1);
    let mut digits: Vec<RnsPoly> = (0..params.digits_at(level))
        .map(|j| {
            let range = digit_range(j);
            // Every limb is written below: the digit's own, or a conversion output.
            let mut ext = ring.scratch(q_limbs, params.p_count(), true);
            // The digit's own limbs are already known in NTT form.
            ext.data[range.start * n..range.end * n].copy_from_slice(&d.data[range.start * n..range.end * n]);
            let input: Vec<&[u64]> = range.clone().map(|i| coeff.limb(i)).collect();
            // Target limbs in the converter's order: the other Q limbs, then P.
            let mut outputs: Vec<&mut [u64]> =
                ext.data.chunks_mut(n).enumerate().filter(|(i, _)| !range.contains(i)).map(|(_, c)| c).collect();
            params.mod_up(level, j).convert(ring, &input, &mut outputs);
            ext
        })
        .collect();
    // Forward NTTs limb by limb across the digits, so that each prime's
    // twiddle tables are loaded into cache once rather than once per digit.
    let mut per_limb: Vec<Vec<&mut [u64]>> = (0..q_limbs + params.p_count()).map(|_| Vec::new()).collect();
    for (j, ext) in digits.iter_mut().enumerate() {
        let range = digit_range(j);
        for (i, limb) in ext.data.chunks_mut(n).enumerate() {
            if !range.contains(&i) {
                per_limb[i].push(limb);
            }
        }
    }
    per_limb.into_par_iter().enumerate().for_each(|(i, limbs)| {
        let plan = ring.plan(q_limbs, i);
        for limb in limbs {
            plan.forward(limb);
        }
    });
    Decomposed { digits, level }
}

/// Sum over digits of digit * key, over Q_l and P, optionally applying the
/// automorphism `map` (NTT index map) to the digits first.
pub fn key_product(params: &Parameters, dec: &Decomposed, key: &SwitchingKey, map: Option<&[u32]>) -> (RnsPoly, RnsPoly) {
    let ring = params.ring();
    let n = ring.n();
    let level = dec.level;
    let q_limbs = level + 1;
    let mut acc0 = ring.zero(q_limbs, params.p_count(), true);
    let mut acc1 = ring.zero(q_limbs, params.p_count(), true);
    acc0.data
        .par_chunks_mut(n)
        .zip(acc1.data.par_chunks_mut(n))
        .enumerate()
        .for_each(|(i, (z0, z1))| {
            let plan = ring.plan(q_limbs, i);
            // The key spans every prime: limb i of Q_l is key limb i, P limbs follow all of Q.
            let key_limb = if i < q_limbs { i } else { params.q_count() + (i - q_limbs) };
            let mut permuted = if map.is_some() { vec![0u64; n] } else { Vec::new() };
            for (j, digit) in dec.digits.iter().enumerate() {
                let x = digit.limb(i);
                let x = match map {
                    Some(map) => {
                        for (o, &src) in permuted.iter_mut().zip(map) {
                            *o = x[src as usize];
                        }
                        &permuted[..]
                    }
                    None => x,
                };
                plan.mul_acc(z0, x, key.b[j].limb(key_limb));
                plan.mul_acc(z1, x, key.a[j].limb(key_limb));
            }
        });
    (acc0, acc1)
}

/// (x - [x]_P) / P for both polynomials of a pair: from Q_l and P down to
/// Q_l (NTT form in and out). The two are processed limb by limb together so
/// that each prime's NTT tables are used twice while in cache.
pub fn mod_down_pair(params: &Parameters, x: &RnsPoly, y: &RnsPoly) -> (RnsPoly, RnsPoly) {
    let ring = params.ring();
    let n = ring.n();
    let q_limbs = x.q_limbs();
    assert!(y.q_limbs() == q_limbs && x.is_ntt() && y.is_ntt());
    let level = q_limbs - 1;
    let pc = params.p_count();
    // [x]_P and [y]_P in coefficient form, interleaved limb by limb.
    let mut p_coeffs = crate::ring::pool::take(2 * pc * n);
    for t in 0..pc {
        p_coeffs[2 * t * n..(2 * t + 1) * n].copy_from_slice(x.limb(q_limbs + t));
        p_coeffs[(2 * t + 1) * n..(2 * t + 2) * n].copy_from_slice(y.limb(q_limbs + t));
    }
    // Unnormalized: the converter folds in N^-1.
    p_coeffs
        .par_chunks_mut(n)
        .enumerate()
        .for_each(|(k, limb)| ring.plan(q_limbs, q_limbs + k / 2).inverse_unnormalized(limb));
    // Every limb of the outputs is written by the conversion.
    let mut out_x = ring.scratch(q_limbs, 0, true);
    let mut out_y = ring.scratch(q_limbs, 0, true);
    for (poly_idx, out) in [&mut out_x, &mut out_y].into_iter().enumerate() {
        let input: Vec<&[u64]> = (0..pc).map(|t| &p_coeffs[(2 * t + poly_idx) * n..(2 * t + poly_idx + 1) * n]).collect();
        let mut outputs: Vec<&mut [u64]> = out.data.chunks_mut(n).collect();
        params.mod_down(level).convert_centered(ring, &input, &mut outputs);
    }
    crate::ring::pool::give(p_coeffs);
    let p_inv = params.p_inv_mod_q();
    out_x.data.par_chunks_mut(n).zip(out_y.data.par_chunks_mut(n)).enumerate().for_each(|(i, (a, b))| {
        let m = &ring.q()[i];
        let plan = ring.plan(q_limbs, i);
        let (w, ws) = (p_inv[i], m.shoup(p_inv[i]));
        for (c, src) in [(a, x.limb(i)), (b, y.limb(i))] {
            plan.forward(c);
            for (c, &v) in c.iter_mut().zip(src) {
                *c = m.mul_shoup(m.sub(v, *c), w, ws);
            }
        }
    });
    (out_x, out_y)
}

/// Key switching of `d` (NTT form at some level): returns (u0, u1) with
/// u0 + u1 s ~ d s', where the key switches s' to s.
pub fn key_switch(params: &Parameters, d: &RnsPoly, key: &SwitchingKey) -> (RnsPoly, RnsPoly) {
    let dec = decompose(params, d);
    let (a0, a1) = key_product(params, &dec, key, None);
    mod_down_pair(params, &a0, &a1)
}
