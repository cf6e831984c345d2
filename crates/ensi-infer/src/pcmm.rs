//! Ciphertext x plaintext matrix products (PCMM) for BitLinear layers.
//!
//! ENSI's first idea: BitNet b1.58 weights are ternary times one per-tensor
//! scale, so in the column layout each output column is a signed sum of input
//! columns, computed with ciphertext additions and subtractions only: no
//! multiplication, no level, no rotation. The scale is not applied here; the
//! caller folds it into a later constant multiplication (a norm's gamma, or
//! the client's decryption). Ternary weights allow one thing more that real
//! weights do not: inputs taken five at a time have only 3^5 signed
//! combinations, built once and shared by every output
//! (`ensi_ckks::lincomb`), so an output costs about a fifth of the additions.

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
    // All outputs at once, reading every input column once (see ensi_ckks::lincomb).
    Ok(eval.signed_sums(columns, w.values(), w.rows())?)
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
        return Err(InferError::Shape(format!(
            "{} weights for {rows}x{cols}",
            weights.len()
        )));
    }
    let level = columns[0].level();
    // Constants at the scale of the prime the rescale removes: outputs keep the input scale.
    let const_scale = eval.params().q()[level] as f64;
    let sums = eval.linear_combinations(columns, weights, rows, const_scale)?;
    sums.par_iter().map(|ct| Ok(eval.rescale(ct)?)).collect()
}
