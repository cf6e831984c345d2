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
    let r = 2f64.powi(approx.squarings as i32);
    // exp(x - shift) ~ (1 + (x - shift)/2^r)^(2^r), per column.
    let exps: Vec<Ciphertext> = scores
        .par_iter()
        .map(|ct| {
            let mut t = eval.mul_const(ct, Complex64::new(1.0 / r, 0.0))?;
            t = eval.add_const(&t, Complex64::new(1.0 - approx.shift / r, 0.0))?;
            for _ in 0..approx.squarings {
                t = eval.mul_rescale(&t, &t)?;
            }
            Ok(t)
        })
        .collect::<Result<_>>()?;
    // Row sums: in the column layout, the sum of the columns.
    let mut sum = exps[0].clone();
    for e in &exps[1..] {
        eval.add_assign(&mut sum, e)?;
    }
    // 1 / sum by Newton's iteration from a constant start.
    let mut y = eval.add_const(
        &eval.mul_int(&sum, 0)?,
        Complex64::new(approx.inverse_start, 0.0),
    )?;
    for _ in 0..approx.newton_steps {
        let sy = eval.mul_rescale(&sum, &y)?;
        let two_minus = eval.add_const(&eval.neg(&sy)?, Complex64::new(2.0, 0.0))?;
        y = eval.mul_rescale(&y, &two_minus)?;
    }
    exps.par_iter()
        .map(|e| Ok(eval.mul_rescale(e, &y)?))
        .collect()
}
