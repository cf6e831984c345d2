//! CoeffsToSlots and SlotsToCoeffs as factored special FFTs.
//!
//! The encoder's special FFT on `n` slots is a bit reversal followed by
//! `log2 n` butterfly stages; each stage is a slot-wise linear map with three
//! diagonals (`0`, `+len/2`, `-len/2`). Consecutive stages are multiplied
//! together into `levels` groups, each one [`LinearTransform`] that costs one
//! level (a group of `g` stages has at most `2^(g+1) - 1` diagonals).
//!
//! The bit reversal is never evaluated: CoeffsToSlots leaves the coefficients
//! in bit-reversed slot order, EvalMod acts slot by slot and does not care,
//! and SlotsToCoeffs starts from that order.
//!
//! * CoeffsToSlots = `bitrev . SF^-1` (the encoder's inverse FFT, with its `1/n`
//!   spread as `1/2` per stage so that intermediate values stay bounded);
//! * SlotsToCoeffs = `SF . bitrev` (the encoder's forward FFT).

use crate::circuits::lintrans::LinearTransform;
use crate::error::{CkksError, Result};
use num_complex::Complex64;
use std::collections::BTreeMap;
use std::f64::consts::PI;

type Diagonals = BTreeMap<usize, Vec<Complex64>>;

/// The twiddle of butterfly `j` in the stage of block length `len`:
/// `exp(2 pi i (5^j mod 4 len) / (4 len))` (the encoder's table, recomputed).
fn twiddle(len: usize, j: usize, inverse: bool) -> Complex64 {
    let m = 4 * len;
    let mut g = 1usize;
    for _ in 0..j {
        g = g * 5 % m;
    }
    let a = 2.0 * PI * g as f64 / m as f64;
    Complex64::from_polar(1.0, if inverse { -a } else { a })
}

fn zero_vec(n: usize) -> Vec<Complex64> {
    vec![Complex64::new(0.0, 0.0); n]
}

/// One stage of the forward special FFT (block length `len`):
/// `(a, b) -> (a + w b, a - w b)` on positions `p` and `p + len/2` of each block.
fn forward_stage(n: usize, len: usize) -> Diagonals {
    let h = len / 2;
    let tw: Vec<Complex64> = (0..h).map(|j| twiddle(len, j, false)).collect();
    let (mut d0, mut dp, mut dm) = (zero_vec(n), zero_vec(n), zero_vec(n));
    for i in 0..n {
        let p = i % len;
        if p < h {
            d0[i] = Complex64::new(1.0, 0.0);
            dp[i] = tw[p];
        } else {
            d0[i] = -tw[p - h];
            dm[i] = Complex64::new(1.0, 0.0);
        }
    }
    diagonals_of(n, h, d0, dp, dm)
}

/// One stage of the inverse special FFT with a factor 1/2:
/// `(a, b) -> ((a + b) / 2, (a - b) w^-1 / 2)`.
fn inverse_stage(n: usize, len: usize) -> Diagonals {
    let h = len / 2;
    let tw: Vec<Complex64> = (0..h).map(|j| twiddle(len, j, true) * 0.5).collect();
    let half = Complex64::new(0.5, 0.0);
    let (mut d0, mut dp, mut dm) = (zero_vec(n), zero_vec(n), zero_vec(n));
    for i in 0..n {
        let p = i % len;
        if p < h {
            d0[i] = half;
            dp[i] = half;
        } else {
            d0[i] = -tw[p - h];
            dm[i] = tw[p - h];
        }
    }
    diagonals_of(n, h, d0, dp, dm)
}

fn diagonals_of(
    n: usize,
    h: usize,
    d0: Vec<Complex64>,
    dp: Vec<Complex64>,
    dm: Vec<Complex64>,
) -> Diagonals {
    let mut out = Diagonals::new();
    out.insert(0, d0);
    for (k, d) in [(h % n, dp), ((n - h) % n, dm)] {
        match out.get_mut(&k) {
            Some(acc) => acc.iter_mut().zip(&d).for_each(|(a, b)| *a += b),
            None => {
                out.insert(k, d);
            }
        }
    }
    out
}

/// `A B` (B applied first) in diagonal form:
/// `diag(a_k) R^k diag(b_l) R^l = diag(a_k . rot(b_l, k)) R^(k+l)`.
fn compose(a: &Diagonals, b: &Diagonals, n: usize) -> Diagonals {
    let mut out = Diagonals::new();
    for (&k, ak) in a {
        for (&l, bl) in b {
            let idx = (k + l) % n;
            let acc = out.entry(idx).or_insert_with(|| zero_vec(n));
            for (i, v) in acc.iter_mut().enumerate() {
                *v += ak[i] * bl[(i + k) % n];
            }
        }
    }
    out.retain(|_, d| d.iter().any(|v| v.norm() > 1e-14));
    out
}

fn identity(n: usize) -> Diagonals {
    let mut d = Diagonals::new();
    d.insert(0, vec![Complex64::new(1.0, 0.0); n]);
    d
}

/// Splits `stages` stages into `levels` consecutive groups, as even as
/// possible (the larger groups first); groups beyond the stage count are empty.
fn split(stages: usize, levels: usize) -> Vec<usize> {
    (0..levels)
        .map(|g| stages / levels + usize::from(g < stages % levels))
        .collect()
}

fn grouped(
    log_slots: u32,
    levels: usize,
    stage_lens: Vec<usize>,
    stage: fn(usize, usize) -> Diagonals,
) -> Result<Vec<LinearTransform>> {
    if levels == 0 {
        return Err(CkksError::InvalidParameters(
            "a factored FFT needs at least one level".into(),
        ));
    }
    let n = 1usize << log_slots;
    let mut lens = stage_lens.into_iter();
    split(log_slots as usize, levels)
        .into_iter()
        .map(|count| {
            let mut m = identity(n);
            for len in lens.by_ref().take(count) {
                m = compose(&stage(n, len), &m, n);
            }
            LinearTransform::from_diagonals(log_slots, m.into_iter().map(|(k, d)| (k as i64, d)))
        })
        .collect()
}

/// CoeffsToSlots on `2^log_slots` slots in `levels` groups (applied in order):
/// their product maps the slots `SF(v)` to `bitrev(v)`. With fewer stages than
/// levels the last groups are identities (they still cost their level).
pub fn coeffs_to_slots(log_slots: u32, levels: usize) -> Result<Vec<LinearTransform>> {
    let n = 1usize << log_slots;
    let lens = (1..=log_slots).rev().map(|k| 1usize << k).collect();
    let _ = n;
    grouped(log_slots, levels, lens, inverse_stage)
}

/// SlotsToCoeffs on `2^log_slots` slots in `levels` groups (applied in order):
/// their product maps `bitrev(v)` to the slots `SF(v)`.
pub fn slots_to_coeffs(log_slots: u32, levels: usize) -> Result<Vec<LinearTransform>> {
    let lens = (1..=log_slots).map(|k| 1usize << k).collect();
    grouped(log_slots, levels, lens, forward_stage)
}

/// The last CoeffsToSlots group `M` on `n` slots widened to `2n` slots for
/// sparse packing: on a periodic input `[x, x]` (an `n`-slot ciphertext viewed
/// with `2n` slots) it outputs `[u, -i u]`, `u = M x`, so that one conjugation
/// then gives `[u, -i u] + conj = [2 Re u, 2 Im u]`: the real and imaginary
/// parts side by side in one ciphertext, for a single EvalMod.
///
/// Diagonal `k` keeps its index (`x[(i + k) mod 2n] = x[(i + k) mod n]` for a
/// periodic input), its upper half is the lower half times `-i`: the same
/// rotations, the same number of plaintexts.
pub(crate) fn widen_coeffs_to_slots(m: &LinearTransform) -> Result<LinearTransform> {
    let minus_i = Complex64::new(0.0, -1.0);
    LinearTransform::from_diagonals(
        m.log_slots() + 1,
        m.diagonals().iter().map(|(&k, d)| {
            let wide: Vec<Complex64> = d
                .iter()
                .copied()
                .chain(d.iter().map(|&v| v * minus_i))
                .collect();
            (k as i64, wide)
        }),
    )
}

/// The first SlotsToCoeffs group `M` on `n` slots widened to `2n` slots for
/// sparse packing: on `[a, b]` (the real and imaginary parts that EvalMod
/// refreshed side by side) it outputs `z` with `z + rot(z, n) = [y, y]`,
/// `y = M (a + i b)`, a periodic vector, i.e. an `n`-slot ciphertext again.
///
/// It is `M' D` with `D = diag(1, ..., 1, i, ..., i)` and `M'` the periodic
/// extension of `M` (diagonal `k` repeated over both halves): `M'` commutes
/// with the rotation by `n`, so `z + rot(z, n) = M' (D x + rot(D x, n))` and
/// `D x + rot(D x, n) = [a + i b, a + i b]`. Diagonal `k` keeps its index, so
/// the combination costs one rotation by `n` (a trace key) instead of doubling
/// the diagonals of a `2n`-slot map whose output is already periodic.
pub(crate) fn widen_slots_to_coeffs(m: &LinearTransform) -> Result<LinearTransform> {
    let n = m.slots();
    let i_unit = Complex64::new(0.0, 1.0);
    LinearTransform::from_diagonals(
        m.log_slots() + 1,
        m.diagonals().iter().map(|(&k, d)| {
            let wide: Vec<Complex64> = (0..2 * n)
                .map(|i| {
                    let v = d[i % n];
                    if (i + k) % (2 * n) < n {
                        v
                    } else {
                        v * i_unit
                    }
                })
                .collect();
            (k as i64, wide)
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitrev(v: &[Complex64]) -> Vec<Complex64> {
        let n = v.len();
        let bits = n.trailing_zeros();
        (0..n)
            .map(|i| {
                if n == 1 {
                    v[0]
                } else {
                    v[i.reverse_bits() >> (usize::BITS - bits)]
                }
            })
            .collect()
    }

    /// slot_j = sum_i v_i xi^(5^j i), xi = exp(i pi / 2n).
    fn reference_sf(v: &[Complex64]) -> Vec<Complex64> {
        let n = v.len();
        let m = 4 * n;
        (0..n)
            .map(|j| {
                let mut e = 1usize;
                for _ in 0..j {
                    e = e * 5 % m;
                }
                v.iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        c * Complex64::from_polar(1.0, 2.0 * PI * ((e * i) % m) as f64 / m as f64)
                    })
                    .sum()
            })
            .collect()
    }

    fn values(n: usize) -> Vec<Complex64> {
        (0..n)
            .map(|i| Complex64::new((i as f64 * 0.37).sin(), (i as f64 * 1.3).cos() * 0.5))
            .collect()
    }

    #[test]
    fn factored_transforms_match_the_special_fft() {
        for log_slots in [0u32, 1, 3, 6, 7] {
            for levels in [1usize, 2, 3, 4] {
                let n = 1 << log_slots;
                let v = values(n);
                let z = reference_sf(&v);
                let mut x = z.clone();
                for lt in coeffs_to_slots(log_slots, levels).unwrap() {
                    x = lt.apply_plain(&x);
                }
                let want = bitrev(&v);
                for (a, b) in x.iter().zip(&want) {
                    assert!(
                        (a - b).norm() < 1e-10,
                        "CtS {log_slots}/{levels}: {a} vs {b}"
                    );
                }
                let mut y = want.clone();
                for lt in slots_to_coeffs(log_slots, levels).unwrap() {
                    y = lt.apply_plain(&y);
                }
                for (a, b) in y.iter().zip(&z) {
                    assert!(
                        (a - b).norm() < 1e-9,
                        "StC {log_slots}/{levels}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// The widened groups against the plaintext pipeline they stand for:
    /// CtS then the real / imaginary split, and the recombination `a + i b` then StC.
    #[test]
    fn widened_groups_split_and_recombine() {
        for log_slots in [0u32, 1, 3, 6] {
            for levels in [1usize, 2, 3] {
                let n = 1 << log_slots;
                let x = values(n);
                let periodic: Vec<Complex64> = x.iter().chain(&x).copied().collect();
                let cts = coeffs_to_slots(log_slots, levels).unwrap();
                let last = cts.last().unwrap();
                let u = last.apply_plain(&x);
                let wide = widen_coeffs_to_slots(last).unwrap();
                assert_eq!(wide.slots(), 2 * n);
                assert_eq!(
                    wide.diagonals().keys().collect::<Vec<_>>(),
                    last.diagonals().keys().collect::<Vec<_>>()
                );
                let w = wide.apply_plain(&periodic);
                let split: Vec<Complex64> = w.iter().map(|v| v + v.conj()).collect();
                for i in 0..n {
                    let (re, im) = (split[i], split[i + n]);
                    assert!((re - Complex64::new(2.0 * u[i].re, 0.0)).norm() < 1e-12);
                    assert!((im - Complex64::new(2.0 * u[i].im, 0.0)).norm() < 1e-12);
                }

                let ab: Vec<Complex64> = (0..2 * n)
                    .map(|i| Complex64::new((i as f64 * 0.71).cos(), 0.0))
                    .collect();
                let c: Vec<Complex64> = (0..n)
                    .map(|i| ab[i] + Complex64::new(0.0, 1.0) * ab[i + n])
                    .collect();
                let stc = slots_to_coeffs(log_slots, levels).unwrap();
                let first = &stc[0];
                let want = first.apply_plain(&c);
                let wide = widen_slots_to_coeffs(first).unwrap();
                assert_eq!(
                    wide.diagonals().keys().collect::<Vec<_>>(),
                    first.diagonals().keys().collect::<Vec<_>>()
                );
                assert_eq!(wide.rotation_steps(), first.rotation_steps());
                let z = wide.apply_plain(&ab);
                for i in 0..2 * n {
                    let folded = z[i] + z[(i + n) % (2 * n)];
                    assert!(
                        (folded - want[i % n]).norm() < 1e-10,
                        "StC {log_slots}/{levels} slot {i}: {folded} vs {}",
                        want[i % n]
                    );
                }
            }
        }
    }

    #[test]
    fn groups_have_few_diagonals() {
        let cts = coeffs_to_slots(10, 3).unwrap();
        assert_eq!(cts.len(), 3);
        for lt in &cts {
            assert!(lt.diagonals().len() <= 31, "{}", lt.diagonals().len());
        }
    }
}
