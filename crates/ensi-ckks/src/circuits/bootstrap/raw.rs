//! The few engine primitives bootstrapping needs below the evaluator's public
//! API: the sparse ephemeral secret, switching keys between two secrets, key
//! switching with such a key, and ModRaise.
//!
//! They live here, beside the circuit that uses them, so that the evaluator
//! stays a plain CKKS evaluator: nothing in it knows that a second secret exists.

use crate::ciphertext::Ciphertext;
use crate::error::{CkksError, Result};
use crate::keys::{expand_switching_a, SwitchingKey};
use crate::keyswitch::key_switch;
use crate::params::Parameters;
use crate::ring::RnsPoly;
use crate::sampling::Sampler;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// A secret with exactly `h` nonzero coefficients, each +-1, at uniformly
/// random distinct positions (Fisher-Yates on the first `h` positions).
pub(crate) fn sparse_ternary(n: usize, h: usize) -> Vec<i64> {
    let mut rng = ChaCha20Rng::from_os_rng();
    let mut below = |bound: usize| -> usize {
        // Rejection sampling: uniform in 0..bound.
        let bound = bound as u64;
        let zone = u64::MAX - u64::MAX % bound;
        loop {
            let v = rng.next_u64();
            if v < zone {
                return (v % bound) as usize;
            }
        }
    };
    let mut idx: Vec<usize> = (0..n).collect();
    let mut coeffs = vec![0i64; n];
    for i in 0..h.min(n) {
        let j = i + below(n - i);
        idx.swap(i, j);
        coeffs[idx[i]] = if below(2) == 0 { 1 } else { -1 };
    }
    coeffs
}

/// s in NTT form over every Q and P prime.
pub(crate) fn secret_poly(params: &Parameters, coeffs: &[i64]) -> RnsPoly {
    let ring = params.ring();
    let mut poly = ring.from_signed(coeffs, ring.q_count(), ring.p_count());
    ring.ntt(&mut poly);
    poly
}

/// A hybrid switching key from `s_from` to `s_to` (both NTT form over all of
/// QP), with `b_j = -a_j s_to + e_j + P g_j s_from`.
///
/// With `q_limbs < q_count` only the digits of level `q_limbs - 1` are made
/// and every Q limb at or above `q_limbs` is zero in both parts: the key is then
/// an RLWE sample modulo `q_0 ... q_{q_limbs-1} P` only, and carries nothing
/// about the secrets modulo the other primes. Such a key (bootstrapping does
/// not use one at present) is not seed-compressed: its seed is all zeros, so
/// serialization stores its `a`; truncate it to level `q_limbs - 1` first
/// (`SwitchingKey::truncate_to_level`), since a reader expects the digits
/// of the limbs it finds.
pub(crate) fn gen_switching_key_between(
    params: &Parameters,
    sampler: &mut Sampler,
    s_to: &RnsPoly,
    s_from: &RnsPoly,
    q_limbs: usize,
) -> SwitchingKey {
    let ring = params.ring();
    let n = ring.n();
    let qc = ring.q_count();
    let alpha = params.alpha();
    let full = q_limbs >= qc;
    let digits = if full {
        params.dnum()
    } else {
        params.digits_at(q_limbs - 1)
    };
    let seed = sampler.seed();
    let mut bs = Vec::with_capacity(digits);
    let mut as_ = Vec::with_capacity(digits);
    for digit in 0..digits {
        let mut a = expand_switching_a(params, seed, digit);
        let e = sampler.gaussian(n);
        let mut b = ring.from_signed(&e, qc, ring.p_count());
        ring.ntt(&mut b);
        let mut t = a.clone();
        ring.mul_assign(&mut t, s_to);
        ring.sub_assign(&mut b, &t);
        for i in digit * alpha..((digit + 1) * alpha).min(qc) {
            let m = &ring.q()[i];
            let w = params.p_mod_q()[i];
            let ws = m.shoup(w);
            let src = s_from.limb(i).to_vec();
            for (x, &s) in b.limb_mut(i).iter_mut().zip(&src) {
                *x = m.add(*x, m.mul_shoup(s, w, ws));
            }
        }
        if !full {
            for i in q_limbs..qc {
                b.limb_mut(i).fill(0);
                a.limb_mut(i).fill(0);
            }
        }
        bs.push(b);
        as_.push(a);
    }
    SwitchingKey {
        b: bs,
        a: as_,
        seed: if full { seed } else { [0; 32] },
    }
}

/// The encapsulation key from the dense `s` to the sparse `s'`, over the two
/// primes q_0 and p_0 only: `b = -a s' + e + p_0 s` (p_0 times s on q_0, 0 on p_0).
///
/// Keeping this key at the smallest modulus that still switches a level-0
/// ciphertext (q_0 p_0, about 2^108 for `n16-boot`) is what makes publishing an
/// RLWE sample under a sparse secret safe (Bossuat et al., ACNS 2022).
pub(crate) fn gen_encapsulation_key(
    params: &Parameters,
    sampler: &mut Sampler,
    s_sparse: &[i64],
    sk: &crate::keys::SecretKey,
) -> Result<SwitchingKey> {
    let ring = params.ring();
    let (q0, p0) = (ring.q()[0].value(), ring.p()[0].value());
    if p0 <= q0 {
        return Err(CkksError::InvalidParameters(format!(
            "sparse-secret encapsulation needs p_0 > q_0 (p_0 = 2^{:.1}, q_0 = 2^{:.1})",
            (p0 as f64).log2(),
            (q0 as f64).log2()
        )));
    }
    let mut s_to = ring.from_signed(s_sparse, 1, 1);
    ring.ntt(&mut s_to);
    let dense: Vec<i64> = sk.coeffs.iter().map(|&c| c as i64).collect();
    let mut s_from = ring.from_signed(&dense, 1, 0);
    ring.ntt(&mut s_from);
    let seed = sampler.seed();
    let a = expand_encapsulation_a(params, seed);
    let mut b = ring.from_signed(&sampler.gaussian(ring.n()), 1, 1);
    ring.ntt(&mut b);
    let mut t = a.clone();
    ring.mul_assign(&mut t, &s_to);
    ring.sub_assign(&mut b, &t);
    let m = &ring.q()[0];
    let w = m.reduce(p0);
    let ws = m.shoup(w);
    let src = s_from.limb(0).to_vec();
    for (x, &sv) in b.limb_mut(0).iter_mut().zip(&src) {
        *x = m.add(*x, m.mul_shoup(sv, w, ws));
    }
    Ok(SwitchingKey {
        b: vec![b],
        a: vec![a],
        seed,
    })
}

/// The uniform `a` of an encapsulation key (over q_0 and p_0), expanded from
/// its seed: the key is published seeded like every other switching key
/// (`a` is public and uniform either way), so it travels as the seed and `b`.
pub(crate) fn expand_encapsulation_a(params: &Parameters, seed: [u8; 32]) -> RnsPoly {
    Sampler::from_seed(seed, 0).uniform_poly(params.ring(), 1, 1)
}

/// Switches a level-0 ciphertext with an encapsulation key (two primes, q_0
/// and p_0): ModUp of c_1 to p_0 (exact: its centered residue), the product
/// with the key, and ModDown by p_0.
pub(crate) fn switch_level0(
    params: &Parameters,
    ct: &Ciphertext,
    key: &SwitchingKey,
) -> Result<Ciphertext> {
    let ring = params.ring();
    let n = ring.n();
    if ct.level() != 0
        || key.b.len() != 1
        || key.a.len() != 1
        || key.b[0].limbs() != 2
        || key.a[0].limbs() != 2
    {
        return Err(CkksError::InvalidParameters(
            "the encapsulation switch takes a level-0 ciphertext and a two-prime key".into(),
        ));
    }
    let (mq, mp) = (&ring.q()[0], &ring.p()[0]);
    // c_1 over {q_0, p_0}: its centered coefficients lifted to p_0.
    let mut coeff = ct.c1.limb(0).to_vec();
    ring.plan(1, 0).inverse(&mut coeff);
    let mut d = ring.zero(1, 1, true);
    d.limb_mut(0).copy_from_slice(ct.c1.limb(0));
    for (x, &v) in d.limb_mut(1).iter_mut().zip(&coeff) {
        *x = mp.reduce_i64(mq.center(v));
    }
    ring.plan(1, 1).forward(d.limb_mut(1));
    let acc0 = ring.mul(&d, &key.b[0]);
    let acc1 = ring.mul(&d, &key.a[0]);
    // (acc - [acc]_{p_0}) / p_0 modulo q_0, with [acc]_{p_0} centered.
    let p_inv = mq.inv(mq.reduce(mp.value()));
    let mod_down = |acc: &RnsPoly| -> RnsPoly {
        let mut r = acc.limb(1).to_vec();
        ring.plan(1, 1).inverse(&mut r);
        let mut out = ring.zero(1, 0, true);
        for (t, &v) in out.limb_mut(0).iter_mut().zip(&r) {
            *t = mq.reduce_i64(mp.center(v));
        }
        ring.plan(1, 0).forward(out.limb_mut(0));
        for (t, &a) in out.limb_mut(0).iter_mut().zip(acc.limb(0)) {
            *t = mq.mul(mq.sub(a, *t), p_inv);
        }
        debug_assert_eq!(out.as_words().len(), n);
        out
    };
    let (u0, u1) = (mod_down(&acc0), mod_down(&acc1));
    let mut c0 = ct.c0.clone();
    ring.add_assign(&mut c0, &u0);
    Ok(Ciphertext {
        c0,
        c1: u1,
        scale: ct.scale,
        log_slots: ct.log_slots,
    })
}

/// Switches `ct` from the key's source secret to its target secret:
/// `(c0 + u0, u1)` with `u0 + u1 s_to ~ c1 s_from`. Level and scale are kept.
pub(crate) fn switch_secret(
    params: &Parameters,
    ct: &Ciphertext,
    key: &SwitchingKey,
) -> Result<Ciphertext> {
    let digits = params.digits_at(ct.level());
    if key.b.len() < digits || key.a.len() < digits {
        return Err(CkksError::InvalidParameters(format!(
            "switching key has {} digits, level {} needs {digits}",
            key.b.len(),
            ct.level()
        )));
    }
    let (u0, u1) = key_switch(params, &ct.c1, key);
    let mut c0 = ct.c0.clone();
    params.ring().add_assign(&mut c0, &u0);
    Ok(Ciphertext {
        c0,
        c1: u1,
        scale: ct.scale,
        log_slots: ct.log_slots,
    })
}

/// ModRaise: reads a level-0 ciphertext's residues modulo q_0 as centered
/// integers and reduces them modulo every Q prime. The result decrypts to
/// `m + q_0 I` over the full chain, with `I` a small integer polynomial
/// (bounded by `(||s||_1 + 1) / 2` in every coefficient).
pub(crate) fn mod_raise(params: &Parameters, ct: &Ciphertext) -> Result<Ciphertext> {
    if ct.level() != 0 {
        return Err(CkksError::InvalidParameters(format!(
            "ModRaise takes a level-0 ciphertext, got level {}",
            ct.level()
        )));
    }
    let ring = params.ring();
    let q0 = &ring.q()[0];
    let raise = |p: &RnsPoly| -> RnsPoly {
        let mut limb = p.limb(0).to_vec();
        if p.is_ntt() {
            ring.plan(1, 0).inverse(&mut limb);
        }
        let centered: Vec<i64> = limb.iter().map(|&v| q0.center(v)).collect();
        let mut out = ring.from_signed(&centered, ring.q_count(), 0);
        ring.ntt(&mut out);
        out
    };
    Ok(Ciphertext {
        c0: raise(&ct.c0),
        c1: raise(&ct.c1),
        scale: ct.scale,
        log_slots: ct.log_slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_secret_has_exact_weight() {
        for h in [0, 1, 32, 64] {
            let s = sparse_ternary(1024, h);
            assert_eq!(s.iter().filter(|&&c| c != 0).count(), h);
            assert!(s.iter().all(|&c| (-1..=1).contains(&c)));
        }
    }
}
