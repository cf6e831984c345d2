//! Ciphertext x plaintext matrix products (PCMM) for BitLinear layers.
//!
//! ENSI's first idea: BitNet b1.58 weights are ternary times one per-tensor
//! scale, so in the column layout each output column is a signed sum of input
//! columns, computed with ciphertext additions and subtractions only: no
//! multiplication, no level, no rotation. The scale is not applied here; the
//! caller folds it into a later constant multiplication (a norm's gamma, or
//! the client's decryption).

use crate::{InferError, Result};
use ensi_ckks::{Ciphertext, Evaluator};
use ensi_model::TernaryMatrix;
use rayon::prelude::*;

/// Y = X W^T for the column layout: `columns[c]` holds input feature c;
/// output column r is sum_c W[r][c] columns[c], with W ternary (the
/// per-tensor scale is left to the caller).
pub fn ternary_pcmm_columns(
    eval: &Evaluator,
    columns: &[Ciphertext],
    w: &TernaryMatrix,
) -> Result<Vec<Ciphertext>> {
    if w.cols() != columns.len() {
        return Err(InferError::Shape(format!(
            "weight has {} columns, input has {}",
            w.cols(),
            columns.len()
        )));
    }
    let values = w.values();
    (0..w.rows())
        .into_par_iter()
        .map(|r| {
            let row = &values[r * w.cols()..(r + 1) * w.cols()];
            if let Some(v) = row.iter().find(|v| !(-1..=1).contains(*v)) {
                return Err(InferError::Shape(format!(
                    "weight value {v} is not ternary"
                )));
            }
            // Start from the first nonzero column as it is; if its weight is
            // -1 the accumulator holds the negated sum until one final negation.
            let Some(first) = row.iter().position(|&v| v != 0) else {
                return Ok(eval.mul_int(&columns[0], 0)?); // an all-zero row
            };
            let sign = row[first];
            let mut acc = columns[first].clone();
            for (c, &wv) in row.iter().enumerate().skip(first + 1) {
                match wv * sign {
                    1 => eval.add_assign(&mut acc, &columns[c])?,
                    -1 => eval.sub_assign(&mut acc, &columns[c])?,
                    _ => {}
                }
            }
            Ok(if sign < 0 { eval.neg(&acc)? } else { acc })
        })
        .collect()
}

/// The conventional PCMM that ENSI is compared with (as NEXUS and BOLT do
/// it): every weight is a plaintext constant multiplied into its input
/// column, the products are summed, and each output is rescaled once (one
/// level). `weights` is row-major (rows x columns.len()), real-valued.
pub fn generic_pcmm_columns(
    eval: &Evaluator,
    columns: &[Ciphertext],
    weights: &[f64],
    rows: usize,
) -> Result<Vec<Ciphertext>> {
    let cols = columns.len();
    if weights.len() != rows * cols || cols == 0 {
        return Err(InferError::Shape(format!("{} weights for {rows}x{cols}", weights.len())));
    }
    let level = columns[0].level();
    // Constants at the scale of the prime the rescale removes: outputs keep the input scale.
    let const_scale = eval.params().q()[level] as f64;
    (0..rows)
        .into_par_iter()
        .map(|r| {
            let row = &weights[r * cols..(r + 1) * cols];
            let mut acc: Option<Ciphertext> = None;
            for (x, &w) in columns.iter().zip(row) {
                let term = eval.mul_const_scaled(x, ensi_ckks::Complex64::new(w, 0.0), const_scale)?;
                match acc.as_mut() {
                    Some(a) => eval.add_assign(a, &term)?,
                    None => acc = Some(term),
                }
            }
            Ok(eval.rescale(&acc.expect("at least one column"))?)
        })
        .collect()
}
