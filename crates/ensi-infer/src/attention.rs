//! The attention nonlinearity on encrypted scores, both ways, in ENSI's
//! column layout (ciphertext j holds the scores of key position j for every
//! query position, one per slot).
//!
//! * [`sigmoid_attention`]: ENSI's way, sigma(x + b) per score as one
//!   Chebyshev polynomial; no exponential over a row, no row sum, no division.
//! * [`softmax_attention`]: the conventional HE softmax that ENSI is compared
//!   with (as NEXUS does it): exp by (1 + x/2^r)^(2^r) after a shift that makes
//!   every argument non-positive, the row sums (in the column layout, sums of
//!   the column ciphertexts: additions), the inverse of the sums by Newton's
//!   iteration y <- y (2 - s y), and one product per column.
//! * [`softmax_rows`]: the same softmax in NEXUS's own layout, each
//!   ciphertext holding one row of scores (a query against every key) in its
//!   slots: the row sum is a rotate-and-sum (log2 of the row length
//!   rotations) and every row needs its own inverse. This is the conventional
//!   way the issue names ("row sums by rotations"); the column-layout variant
//!   above is what the softmax costs once ENSI's layout has removed the
//!   rotations and shared one inverse among all rows.
//!
//! The causal mask (a 0/1 plaintext product after the nonlinearity) is not
//! part of either function: it costs both the same.

use crate::{InferError, Result};
use ensi_ckks::circuits::{ChebyshevPoly, PolynomialEvaluator};
use ensi_ckks::{Ciphertext, Complex64, Evaluator};
use rayon::prelude::*;

/// The approximations of the conventional softmax.
#[derive(Clone, Copy, Debug)]
pub struct SoftmaxApprox {
    /// Scores are shifted by this bound first so that every exponent is <= 0.
    pub shift: f64,
    /// exp(x) ~ (1 + x / 2^r)^(2^r): r squarings.
    pub squarings: u32,
    /// The row sums lie in (0, 2 / y0) for the starting point y0 of Newton's iteration.
    pub inverse_start: f64,
    /// Newton iterations for the inverse of the row sums.
    pub newton_steps: usize,
}

impl SoftmaxApprox {
    /// Levels consumed: 1 (scaling) + r (squarings) + 2 per Newton step + 1 (product).
    pub fn depth(&self) -> usize {
        1 + self.squarings as usize + 2 * self.newton_steps + 1
    }

    /// The same computation in f64, for one row of scores.
    pub fn eval_plain(&self, row: &[f64]) -> Vec<f64> {
        let r = 2f64.powi(self.squarings as i32);
        let e: Vec<f64> = row
            .iter()
            .map(|&x| (1.0 + (x - self.shift) / r).powf(r))
            .collect();
        let s: f64 = e.iter().sum();
        let mut y = self.inverse_start;
        for _ in 0..self.newton_steps {
            y *= 2.0 - s * y;
        }
        e.iter().map(|v| v * y).collect()
    }
}

/// sigma(x + b) for every score, as the Chebyshev polynomial `poly` (which
/// includes the bias: build it for x -> sigma(x + b) on the scores' interval).
pub fn sigmoid_attention(
    eval: &Evaluator,
    scores: &[Ciphertext],
    poly: &ChebyshevPoly,
) -> Result<Vec<Ciphertext>> {
    let pe = PolynomialEvaluator::new(eval);
    scores
        .par_iter()
        .map(|ct| Ok(pe.evaluate(ct, poly)?.0))
        .collect()
}

/// The conventional HE softmax over each row of scores (see the module docs).
pub fn softmax_attention(
    eval: &Evaluator,
    scores: &[Ciphertext],
    approx: &SoftmaxApprox,
) -> Result<Vec<Ciphertext>> {
    if scores.is_empty() {
        return Err(InferError::Shape("no score columns".into()));
    }
    let exps: Vec<Ciphertext> = scores
        .par_iter()
        .map(|ct| exp_shifted(eval, ct, approx))
        .collect::<Result<_>>()?;
    // Row sums: in the column layout, the sum of the columns.
    let mut sum = exps[0].clone();
    for e in &exps[1..] {
        eval.add_assign(&mut sum, e)?;
    }
    let y = inverse(eval, &sum, approx)?;
    exps.par_iter()
        .map(|e| Ok(eval.mul_rescale(e, &y)?))
        .collect()
}

/// The rotations [`softmax_rows`] needs on rows of `2^log_slots` scores.
pub fn softmax_rows_rotations(log_slots: u32) -> Vec<i64> {
    (0..log_slots).map(|i| 1i64 << i).collect()
}

/// The conventional HE softmax with one row of scores per ciphertext, as
/// NEXUS lays them out: every slot of a ciphertext holds a score of the same
/// query (the row is the whole slot vector, so it must be full: padding slots
/// would add exp(-shift) each to the sum). Per ciphertext: the exponential,
/// the row sum by rotate-and-sum ([`softmax_rows_rotations`] keys), Newton's
/// iteration for the inverse of the (replicated) sum, one product. Levels:
/// [`SoftmaxApprox::depth`], as the column variant.
pub fn softmax_rows(
    eval: &Evaluator,
    rows: &[Ciphertext],
    approx: &SoftmaxApprox,
) -> Result<Vec<Ciphertext>> {
    if rows.is_empty() {
        return Err(InferError::Shape("no score rows".into()));
    }
    rows.par_iter()
        .map(|ct| {
            let e = exp_shifted(eval, ct, approx)?;
            // Rotate-and-sum: every slot ends with the sum of the whole row.
            let mut sum = e.clone();
            for step in softmax_rows_rotations(ct.log_slots()) {
                let rot = eval.rotate(&sum, step)?;
                eval.add_assign(&mut sum, &rot)?;
            }
            let y = inverse(eval, &sum, approx)?;
            Ok(eval.mul_rescale(&e, &y)?)
        })
        .collect()
}

/// exp(x - shift) ~ (1 + (x - shift) / 2^r)^(2^r): one scaling, r squarings.
fn exp_shifted(eval: &Evaluator, ct: &Ciphertext, approx: &SoftmaxApprox) -> Result<Ciphertext> {
    let r = 2f64.powi(approx.squarings as i32);
    let mut t = eval.mul_const(ct, Complex64::new(1.0 / r, 0.0))?;
    t = eval.add_const(&t, Complex64::new(1.0 - approx.shift / r, 0.0))?;
    for _ in 0..approx.squarings {
        t = eval.mul_rescale(&t, &t)?;
    }
    Ok(t)
}

/// 1 / sum by Newton's iteration y <- y (2 - sum y) from a constant start.
fn inverse(eval: &Evaluator, sum: &Ciphertext, approx: &SoftmaxApprox) -> Result<Ciphertext> {
    let mut y = eval.add_const(
        &eval.mul_int(sum, 0)?,
        Complex64::new(approx.inverse_start, 0.0),
    )?;
    for _ in 0..approx.newton_steps {
        let sy = eval.mul_rescale(sum, &y)?;
        let two_minus = eval.add_const(&eval.neg(&sy)?, Complex64::new(2.0, 0.0))?;
        y = eval.mul_rescale(&y, &two_minus)?;
    }
    Ok(y)
}
