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
    let mut coeff = d.clone();
    ring.intt(&mut coeff);
    let alpha = params.alpha();
    let digits = (0..params.digits_at(level))
        .map(|j| {
            let conv = params.mod_up(level, j);
            let mut ext = ring.zero(level + 1, params.p_count(), true);
            let (lo, hi) = (j * alpha, ((j + 1) * alpha).min(level + 1));
            // The digit's own limbs are already known in NTT form.
            ext.data[lo * n..hi * n].copy_from_slice(&d.data[lo * n..hi * n]);
            let input: Vec<&[u64]> = (lo..hi).map(|i| coeff.limb(i)).collect();
            // Target limbs in the converter's order: the other Q limbs, then P.
            let mut outputs: Vec<&mut [u64]> = ext
                .data
                .chunks_mut(n)
                .enumerate()
                .filter(|(i, _)| !(lo..hi).contains(i))
                .map(|(_, c)| c)
                .collect();
            conv.convert(ring, &input, &mut outputs);
            let q_limbs = ext.q_limbs();
            ext.data.par_chunks_mut(n).enumerate().filter(|(i, _)| !(lo..hi).contains(i)).for_each(|(i, limb)| {
                ring.plan(q_limbs, i).forward(limb);
            });
            ext
        })
        .collect();
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

/// (x - [x]_P) / P: from Q_l and P down to Q_l (NTT form in and out).
pub fn mod_down(params: &Parameters, x: &RnsPoly) -> RnsPoly {
    let ring = params.ring();
    let n = ring.n();
    let q_limbs = x.q_limbs();
    let level = q_limbs - 1;
    let mut p_part = RnsPoly { data: x.data[q_limbs * n..].to_vec(), q_limbs: 0, p_limbs: x.p_limbs(), ntt: true };
    ring.intt(&mut p_part);
    let mut conv = ring.zero(q_limbs, 0, false);
    {
        let input: Vec<&[u64]> = p_part.data.chunks(n).collect();
        let mut outputs: Vec<&mut [u64]> = conv.data.chunks_mut(n).collect();
        params.mod_down(level).convert(ring, &input, &mut outputs);
    }
    ring.ntt(&mut conv);
    let p_inv = params.p_inv_mod_q();
    conv.data.par_chunks_mut(n).zip(x.data[..q_limbs * n].par_chunks(n)).enumerate().for_each(|(i, (c, xi))| {
        let m = &ring.q()[i];
        let (w, ws) = (p_inv[i], m.shoup(p_inv[i]));
        for (c, &v) in c.iter_mut().zip(xi) {
            *c = m.mul_shoup(m.sub(v, *c), w, ws);
        }
    });
    conv.ntt = true;
    conv
}

/// Key switching of `d` (NTT form at some level): returns (u0, u1) with
/// u0 + u1 s ~ d s', where the key switches s' to s.
pub fn key_switch(params: &Parameters, d: &RnsPoly, key: &SwitchingKey) -> (RnsPoly, RnsPoly) {
    let dec = decompose(params, d);
    let (a0, a1) = key_product(params, &dec, key, None);
    (mod_down(params, &a0), mod_down(params, &a1))
}
