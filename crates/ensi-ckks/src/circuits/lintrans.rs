//! Homomorphic linear transforms `y = M x` on the slots, by diagonals and baby-step giant-step.
//!
//! Sits on the [`Evaluator`]; bootstrapping's CoeffsToSlots / SlotsToCoeffs and
//! the model's slot permutations are built from it.
//!
//! # Diagonals
//!
//! For an `n x n` matrix (`n` the slot count), diagonal `k` is
//! `d_k[i] = M[i][(i + k) mod n]`, so that `M x = sum_k d_k * rot(x, k)` with
//! `rot` the left rotation of the evaluator (`rot(x, k)[i] = x[i + k]`).
//!
//! # Baby-step giant-step
//!
//! Writing `k = n1 j + i` (`0 <= i < n1`):
//! `M x = sum_j rot( sum_i rot(d_{n1 j + i}, -n1 j) * rot(x, i), n1 j )`.
//! The baby rotations `rot(x, i)` share one key-switching decomposition
//! ([`Evaluator::rotate_hoisted`]); the diagonals are rotated by `-n1 j` in the
//! clear and encoded once ([`EncodedLinearTransform`]), or, when they are used
//! once, rounded per giant step and reduced, transformed and multiplied limb by
//! limb inside the inner sum ([`Evaluator::mul_coefficients_sum`]); each inner
//! sum costs one giant rotation. `n1` is the power of two that minimizes the number of
//! distinct rotations (about `sqrt(#diagonals)` for a dense matrix).
//!
//! # Level and scale
//!
//! The diagonals are encoded at the input's level with scale
//! `output_scale * q_level / input_scale`: the products all share one scale,
//! the giant rotations act before the single rescale (their key-switching
//! noise is then divided by `q_level` too), and the result comes out one level
//! lower at exactly `output_scale`.

use crate::ciphertext::{Ciphertext, Plaintext};
use crate::encoder::{Encoder, PlainCoefficients, UnscaledCoefficients};
use crate::error::{CkksError, Result};
use crate::evaluator::{Evaluator, SCALE_TOLERANCE};
use num_complex::Complex64;
use std::collections::{BTreeMap, BTreeSet};

/// A linear map on `2^log_slots` slots, stored by its nonzero diagonals.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearTransform {
    log_slots: u32,
    /// Diagonal index in `0..n` -> the `n` values of that diagonal.
    diagonals: BTreeMap<usize, Vec<Complex64>>,
}

/// A [`LinearTransform`] with its pre-rotated diagonals encoded for one input level and scale.
#[derive(Clone, Debug)]
pub struct EncodedLinearTransform {
    log_slots: u32,
    level: usize,
    input_scale: f64,
    output_scale: f64,
    n1: usize,
    /// Giant index j -> (baby index i, diagonal n1 j + i rotated right by n1 j, encoded).
    giants: BTreeMap<usize, Vec<(usize, Plaintext)>>,
}

/// A [`LinearTransform`] whose pre-rotated diagonals went through the
/// encoder's inverse FFT once ([`LinearTransform::prepare`]), for transforms
/// encoded again and again at scales that change (bootstrapping's, whose
/// scales follow the input's): about 40% of the encoding time saved.
#[derive(Clone, Debug)]
pub struct PreparedLinearTransform {
    log_slots: u32,
    n1: usize,
    /// Giant index j -> (baby index i, diagonal n1 j + i rotated right by n1 j, transformed).
    giants: BTreeMap<usize, Vec<(usize, UnscaledCoefficients)>>,
}

impl PreparedLinearTransform {
    /// Encodes for inputs at `level` and `input_scale`, output at
    /// `output_scale`: the same plaintexts as [`LinearTransform::encode`].
    pub fn encode(
        &self,
        encoder: &Encoder,
        level: usize,
        input_scale: f64,
        output_scale: f64,
    ) -> Result<EncodedLinearTransform> {
        let pt_scale = plaintext_scale(encoder, level, input_scale, output_scale)?;
        let giants = self
            .giants
            .iter()
            .map(|(&j, terms)| Ok((j, encode_group(encoder, terms, level, pt_scale)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(EncodedLinearTransform {
            log_slots: self.log_slots,
            level,
            input_scale,
            output_scale,
            n1: self.n1,
            giants,
        })
    }

    /// Bytes held.
    pub fn byte_size(&self) -> usize {
        self.giants
            .values()
            .map(|v| v.len() * (16usize << self.log_slots))
            .sum()
    }

    /// Encodes for `ct` (its level and scale) and evaluates, landing on
    /// `output_scale`: the same result as [`Self::encode`] then
    /// [`EncodedLinearTransform::evaluate`], but one giant step's diagonals
    /// are encoded at a time and dropped once used. A full-slot
    /// SlotsToCoeffs group at N = 2^16 holds 3.6 GB encoded at once: freed
    /// and faulted in again on every bootstrap, that costs more than the
    /// encoding. Returns the result and the time spent encoding.
    pub fn evaluate_streaming(
        &self,
        eval: &Evaluator,
        encoder: &Encoder,
        ct: &Ciphertext,
        output_scale: f64,
    ) -> Result<(Ciphertext, std::time::Duration)> {
        let pt_scale = input_plaintext_scale(encoder, ct, self.log_slots, output_scale)?;
        let babies: BTreeSet<usize> = self.giants.values().flatten().map(|(i, _)| *i).collect();
        let encoding = std::cell::Cell::new(std::time::Duration::ZERO);
        let groups = self.giants.iter().map(|(&j, terms)| {
            let start = std::time::Instant::now();
            let pts = round_group(encoder, terms, pt_scale)?;
            encoding.set(encoding.get() + start.elapsed());
            Ok((j, pts))
        });
        let out = baby_step_giant_step(eval, ct, self.n1, &babies, groups, output_scale)?;
        Ok((out, encoding.get()))
    }
}

/// One giant step's prepared diagonals encoded at `level` and `pt_scale`.
fn encode_group(
    encoder: &Encoder,
    terms: &[(usize, UnscaledCoefficients)],
    level: usize,
    pt_scale: f64,
) -> Result<Vec<(usize, Plaintext)>> {
    terms
        .iter()
        .map(|(i, u)| Ok((*i, encoder.encode_unscaled(u, level, pt_scale)?)))
        .collect()
}

/// One giant step's prepared diagonals rounded at `pt_scale` (their residues
/// are made inside the products, limb by limb: [`Evaluator::mul_coefficients_sum`]).
fn round_group(
    encoder: &Encoder,
    terms: &[(usize, UnscaledCoefficients)],
    pt_scale: f64,
) -> Result<Vec<(usize, PlainCoefficients)>> {
    terms
        .iter()
        .map(|(i, u)| Ok((*i, encoder.round_unscaled(u, pt_scale)?)))
        .collect()
}

/// The inner sums of a giant step, for either form of its diagonals.
trait InnerSum {
    fn inner_sum(eval: &Evaluator, products: &[(&Ciphertext, &Self)]) -> Result<Ciphertext>;
}

impl InnerSum for Plaintext {
    fn inner_sum(eval: &Evaluator, products: &[(&Ciphertext, &Self)]) -> Result<Ciphertext> {
        eval.mul_plain_sum(products)
    }
}

impl InnerSum for PlainCoefficients {
    fn inner_sum(eval: &Evaluator, products: &[(&Ciphertext, &Self)]) -> Result<Ciphertext> {
        eval.mul_coefficients_sum(products)
    }
}

fn invalid(msg: String) -> CkksError {
    CkksError::InvalidParameters(msg)
}

fn log2_exact(n: usize, what: &str) -> Result<u32> {
    if n == 0 || !n.is_power_of_two() {
        return Err(invalid(format!("{what}: size {n} is not a power of two")));
    }
    Ok(n.trailing_zeros())
}

/// The power of two n1 that minimizes the distinct nonzero rotations of the
/// split `k = n1 j + i` (ties: the larger n1, since baby rotations are hoisted).
fn best_split(indices: &[usize], n: usize) -> usize {
    let mut best = (usize::MAX, 1);
    let mut n1 = 1;
    while n1 <= n {
        let (babies, giants) = split_sets(indices, n1);
        let cost =
            babies.iter().filter(|&&i| i != 0).count() + giants.iter().filter(|&&j| j != 0).count();
        if cost <= best.0 {
            best = (cost, n1);
        }
        n1 *= 2;
    }
    best.1
}

fn split_sets(indices: &[usize], n1: usize) -> (BTreeSet<usize>, BTreeSet<usize>) {
    (
        indices.iter().map(|k| k % n1).collect(),
        indices.iter().map(|k| k / n1).collect(),
    )
}

/// The nonzero rotation steps of the split: baby steps i, then giant steps n1 j.
fn steps_for(indices: &[usize], n1: usize) -> Vec<i64> {
    let (babies, giants) = split_sets(indices, n1);
    let mut steps: Vec<i64> = babies
        .into_iter()
        .filter(|&i| i != 0)
        .map(|i| i as i64)
        .collect();
    steps.extend(
        giants
            .into_iter()
            .filter(|&j| j != 0)
            .map(|j| (n1 * j) as i64),
    );
    steps
}

/// rot(d, -shift)[t] = d[t - shift]: the giant rotation applied last moves it back.
fn rotated_right(d: &[Complex64], shift: usize) -> Vec<Complex64> {
    let n = d.len();
    (0..n).map(|t| d[(t + n - shift) % n]).collect()
}

/// [`plaintext_scale`] for the ciphertext `ct`, after checking that it has
/// the transform's slot count.
fn input_plaintext_scale(
    encoder: &Encoder,
    ct: &Ciphertext,
    log_slots: u32,
    output_scale: f64,
) -> Result<f64> {
    if ct.log_slots() != log_slots {
        return Err(CkksError::SlotMismatch {
            a: ct.log_slots(),
            b: log_slots,
        });
    }
    plaintext_scale(encoder, ct.level(), ct.scale(), output_scale)
}

/// The diagonals' scale for inputs at `level` and `input_scale` and an
/// output at `output_scale` one level lower, after checking them.
fn plaintext_scale(
    encoder: &Encoder,
    level: usize,
    input_scale: f64,
    output_scale: f64,
) -> Result<f64> {
    if level == 0 {
        return Err(CkksError::LevelTooLow {
            needed: 1,
            level: 0,
        });
    }
    let params = encoder.params();
    if level > params.max_level() {
        return Err(CkksError::LevelTooLow {
            needed: level,
            level: params.max_level(),
        });
    }
    if !(input_scale.is_finite()
        && input_scale > 0.0
        && output_scale.is_finite()
        && output_scale > 0.0)
    {
        return Err(invalid(format!("scales {input_scale} -> {output_scale}")));
    }
    Ok(output_scale * params.q()[level] as f64 / input_scale)
}

impl LinearTransform {
    /// From a dense `n x n` matrix (`n` a power of two, the slot count); all-zero diagonals are dropped.
    pub fn from_dense(matrix: &[Vec<Complex64>]) -> Result<Self> {
        let n = matrix.len();
        let log_slots = log2_exact(n, "dense matrix")?;
        if matrix.iter().any(|row| row.len() != n) {
            return Err(invalid(format!(
                "dense matrix: every row must have {n} entries"
            )));
        }
        let zero = Complex64::new(0.0, 0.0);
        let diagonals = (0..n)
            .map(|k| {
                (
                    k,
                    (0..n).map(|i| matrix[i][(i + k) % n]).collect::<Vec<_>>(),
                )
            })
            .filter(|(_, d)| d.iter().any(|&v| v != zero))
            .collect();
        Self::from_map(log_slots, diagonals)
    }

    /// From diagonals by index: index `k` (any integer, taken mod n, so `-1` is
    /// `n - 1`) maps to `d_k[i] = M[i][(i + k) mod n]`, `n = 2^log_slots` values.
    /// Indices that coincide mod n are summed.
    pub fn from_diagonals<I>(log_slots: u32, diagonals: I) -> Result<Self>
    where
        I: IntoIterator<Item = (i64, Vec<Complex64>)>,
    {
        let n = 1usize << log_slots;
        let mut map: BTreeMap<usize, Vec<Complex64>> = BTreeMap::new();
        for (k, d) in diagonals {
            if d.len() != n {
                return Err(invalid(format!(
                    "diagonal {k} has {} values, expected {n}",
                    d.len()
                )));
            }
            let k = k.rem_euclid(n as i64) as usize;
            match map.get_mut(&k) {
                Some(acc) => acc.iter_mut().zip(&d).for_each(|(a, b)| *a += b),
                None => {
                    map.insert(k, d);
                }
            }
        }
        Self::from_map(log_slots, map)
    }

    fn from_map(log_slots: u32, diagonals: BTreeMap<usize, Vec<Complex64>>) -> Result<Self> {
        if log_slots > 30 {
            return Err(CkksError::InvalidSlots(log_slots));
        }
        if diagonals
            .values()
            .flatten()
            .any(|v| !(v.re.is_finite() && v.im.is_finite()))
        {
            return Err(invalid("linear transform with non-finite entries".into()));
        }
        Ok(Self {
            log_slots,
            diagonals,
        })
    }

    /// log2 of the slot count.
    pub fn log_slots(&self) -> u32 {
        self.log_slots
    }

    /// The slot count n.
    pub fn slots(&self) -> usize {
        1 << self.log_slots
    }

    /// The diagonals by index in `0..n`.
    pub fn diagonals(&self) -> &BTreeMap<usize, Vec<Complex64>> {
        &self.diagonals
    }

    /// The plaintext reference: `y = sum_k d_k * rot(x, k)` (x has n values).
    pub fn apply_plain(&self, x: &[Complex64]) -> Vec<Complex64> {
        let n = self.slots();
        let mut y = vec![Complex64::new(0.0, 0.0); n];
        for (&k, d) in &self.diagonals {
            for (i, yi) in y.iter_mut().enumerate() {
                *yi += d[i] * x[(i + k) % n];
            }
        }
        y
    }

    /// The baby-step count n1 of the split `k = n1 j + i`.
    pub fn baby_step(&self) -> usize {
        let idx: Vec<usize> = self.diagonals.keys().copied().collect();
        best_split(&idx, self.slots())
    }

    /// Exactly the rotation steps the evaluation uses (baby steps `1..n1`
    /// that occur, then giant steps `n1 j`): generate Galois keys for these.
    pub fn rotation_steps(&self) -> Vec<i64> {
        let idx: Vec<usize> = self.diagonals.keys().copied().collect();
        steps_for(&idx, best_split(&idx, self.slots()))
    }

    /// The baby step n1 and, per giant step j, `f` of every diagonal n1 j + i
    /// rotated right by n1 j (paired with its baby index i).
    #[allow(clippy::type_complexity)]
    fn by_giant_step<T>(
        &self,
        mut f: impl FnMut(&[Complex64]) -> Result<T>,
    ) -> Result<(usize, BTreeMap<usize, Vec<(usize, T)>>)> {
        let n1 = self.baby_step();
        let mut giants: BTreeMap<usize, Vec<(usize, T)>> = BTreeMap::new();
        for (&k, d) in &self.diagonals {
            let (j, i) = (k / n1, k % n1);
            let t = f(&rotated_right(d, n1 * j))?;
            giants.entry(j).or_default().push((i, t));
        }
        Ok((n1, giants))
    }

    /// Pre-rotates and encodes the diagonals for inputs at `level` and
    /// `input_scale`, so that the output is at `output_scale` one level lower.
    pub fn encode(
        &self,
        encoder: &Encoder,
        level: usize,
        input_scale: f64,
        output_scale: f64,
    ) -> Result<EncodedLinearTransform> {
        let pt_scale = plaintext_scale(encoder, level, input_scale, output_scale)?;
        let (n1, giants) =
            self.by_giant_step(|d| encoder.encode(d, level, pt_scale, self.log_slots))?;
        Ok(EncodedLinearTransform {
            log_slots: self.log_slots,
            level,
            input_scale,
            output_scale,
            n1,
            giants,
        })
    }

    /// The pre-rotated diagonals carried through the encoder's inverse FFT
    /// once: encoding them for an input ([`PreparedLinearTransform::encode`])
    /// is then only the scaling, reduction and NTTs. Holds 2^log_slots
    /// complex values per diagonal.
    pub fn prepare(&self, encoder: &Encoder) -> Result<PreparedLinearTransform> {
        let (n1, giants) =
            self.by_giant_step(|d| encoder.unscaled_coefficients(d, self.log_slots))?;
        Ok(PreparedLinearTransform {
            log_slots: self.log_slots,
            n1,
            giants,
        })
    }

    /// Encodes for `ct` (its level and scale) and evaluates, landing on
    /// `output_scale`: the same result as [`Self::encode`] then
    /// [`EncodedLinearTransform::evaluate`], but the diagonals are encoded one
    /// giant step at a time, so that only those of one giant step are held
    /// (a dense 2^12 map at N = 2^16 would need 20 GB encoded at once).
    pub fn evaluate(
        &self,
        eval: &Evaluator,
        encoder: &Encoder,
        ct: &Ciphertext,
        output_scale: f64,
    ) -> Result<Ciphertext> {
        let pt_scale = input_plaintext_scale(encoder, ct, self.log_slots, output_scale)?;
        let n1 = self.baby_step();
        let mut giants: BTreeMap<usize, Vec<(usize, &Vec<Complex64>)>> = BTreeMap::new();
        for (&k, d) in &self.diagonals {
            giants.entry(k / n1).or_default().push((k % n1, d));
        }
        let babies: BTreeSet<usize> = self.diagonals.keys().map(|k| k % n1).collect();
        let groups = giants.iter().map(|(&j, terms)| {
            let pts = terms
                .iter()
                .map(|&(i, d)| {
                    let pt = encoder.encode_coefficients(
                        &rotated_right(d, n1 * j),
                        pt_scale,
                        self.log_slots,
                    )?;
                    Ok((i, pt))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((j, pts))
        });
        baby_step_giant_step(eval, ct, n1, &babies, groups, output_scale)
    }
}

impl EncodedLinearTransform {
    /// The input level the diagonals were encoded for (the output is one lower).
    pub fn level(&self) -> usize {
        self.level
    }

    /// The input scale the diagonals were encoded for.
    pub fn input_scale(&self) -> f64 {
        self.input_scale
    }

    /// The scale of the output.
    pub fn output_scale(&self) -> f64 {
        self.output_scale
    }

    /// The baby-step count n1.
    pub fn baby_step(&self) -> usize {
        self.n1
    }

    /// Bytes of the encoded diagonals.
    pub fn byte_size(&self) -> usize {
        self.giants
            .values()
            .flatten()
            .map(|(_, pt)| pt.poly().as_words().len() * 8)
            .sum()
    }

    /// Exactly the rotation steps [`Self::evaluate`] uses.
    pub fn rotation_steps(&self) -> Vec<i64> {
        let idx: Vec<usize> = self
            .giants
            .iter()
            .flat_map(|(&j, v)| v.iter().map(move |(i, _)| j * self.n1 + i))
            .collect();
        steps_for(&idx, self.n1)
    }

    /// `M ct`: one level, output at [`Self::output_scale`]. A ciphertext above
    /// the encoded level is dropped to it first; its scale must be the encoded input scale.
    pub fn evaluate(&self, eval: &Evaluator, ct: &Ciphertext) -> Result<Ciphertext> {
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
        let ct = if ct.level() > self.level {
            eval.drop_to_level(ct, self.level)?
        } else {
            ct.clone()
        };
        if ct.level() < self.level {
            return Err(CkksError::LevelTooLow {
                needed: self.level,
                level: ct.level(),
            });
        }
        let babies: BTreeSet<usize> = self.giants.values().flatten().map(|(i, _)| *i).collect();
        let groups = self
            .giants
            .iter()
            .map(|(&j, terms)| Ok((j, terms.iter().map(|(i, pt)| (*i, pt)).collect::<Vec<_>>())));
        baby_step_giant_step::<Plaintext, _, _>(
            eval,
            &ct,
            self.n1,
            &babies,
            groups,
            self.output_scale,
        )
    }
}

/// The evaluation shared by the encoded and the streaming paths: the baby
/// rotations of `ct` hoisted, then per giant step `j` (in the order `groups`
/// yields them, each with its encoded diagonals) the inner sum, one giant
/// rotation by `n1 j`, and one rescale at the end.
fn baby_step_giant_step<T, P, G>(
    eval: &Evaluator,
    ct: &Ciphertext,
    n1: usize,
    babies: &BTreeSet<usize>,
    groups: G,
    output_scale: f64,
) -> Result<Ciphertext>
where
    T: InnerSum,
    P: std::borrow::Borrow<T>,
    G: Iterator<Item = Result<(usize, Vec<(usize, P)>)>>,
{
    let steps: Vec<i64> = babies.iter().map(|&i| i as i64).collect();
    let rotated: BTreeMap<usize, Ciphertext> = babies
        .iter()
        .copied()
        .zip(eval.rotate_hoisted(ct, &steps)?)
        .collect();
    let mut acc: Option<Ciphertext> = None;
    for group in groups {
        let (j, terms) = group?;
        if terms.is_empty() {
            continue;
        }
        let products: Vec<(&Ciphertext, &T)> = terms
            .iter()
            .map(|(i, pt)| (&rotated[i], pt.borrow()))
            .collect();
        let mut inner = T::inner_sum(eval, &products)?;
        if j != 0 {
            inner = eval.rotate(&inner, (n1 * j) as i64)?;
        }
        match acc.as_mut() {
            None => acc = Some(inner),
            Some(s) => eval.add_assign(s, &inner)?,
        }
    }
    match acc {
        Some(acc) => eval.rescale(&acc),
        // The zero map: a zero ciphertext at the output level and scale.
        None => eval.rescale(&eval.mul_const_scaled(
            ct,
            Complex64::new(0.0, 0.0),
            output_scale * eval.params().q()[ct.level()] as f64 / ct.scale(),
        )?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_diagonals_reproduce_the_matrix_product() {
        let n = 8;
        let m: Vec<Vec<Complex64>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| Complex64::new((i * n + j) as f64, (i as f64) - (j as f64)))
                    .collect()
            })
            .collect();
        let x: Vec<Complex64> = (0..n)
            .map(|i| Complex64::new(i as f64 * 0.5, 1.0))
            .collect();
        let lt = LinearTransform::from_dense(&m).unwrap();
        let want: Vec<Complex64> = (0..n)
            .map(|i| (0..n).map(|j| m[i][j] * x[j]).sum())
            .collect();
        assert_eq!(lt.apply_plain(&x), want);
    }

    #[test]
    fn split_is_sqrt_for_dense_and_small_for_bands() {
        let all: Vec<usize> = (0..64).collect();
        assert_eq!(best_split(&all, 64), 8);
        assert_eq!(steps_for(&all, 8).len(), 14);
        // Tridiagonal: diagonals 0, 1, n - 1.
        let band = [0, 1, 63];
        assert_eq!(steps_for(&band, best_split(&band, 64)).len(), 2);
    }
}
