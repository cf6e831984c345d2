//! BitNet b1.58 quantization: absmean ternary weights, the packed 2-bit form, and per-token
//! absmax activations.
//!
//! Loading turns every projection into a [`TernaryMatrix`] (values in {-1, 0, 1} and one
//! per-tensor scale), whatever its stored form. The ternary values are what makes ENSI's
//! ciphertext x plaintext products multiplication-free; the scale is a constant the encrypted
//! path folds into a later step. [`absmax_quantize`] is the 8-bit activation quantization that
//! the original model applies before every projection and that the ENSI twin leaves out.

use crate::error::{ModelError, Result};
use rayon::prelude::*;

/// The clamp BitNet applies to both scales (`.clamp(min=1e-5)`), so a zero tensor or token
/// does not divide by zero.
pub const SCALE_FLOOR: f64 = 1e-5;

/// Values per byte of the packed form (2 bits each).
pub const VALUES_PER_BYTE: usize = 4;

/// A `rows x cols` (out x in) ternary weight matrix with one scale: W = scale * values.
#[derive(Clone, Debug, PartialEq)]
pub struct TernaryMatrix {
    rows: usize,
    cols: usize,
    values: Vec<i8>,
    scale: f64,
}

impl TernaryMatrix {
    /// Wraps ternary values.
    ///
    /// # Errors
    /// [`ModelError::NotTernary`] (naming `name`) if a value is outside {-1, 0, 1} or the
    /// length does not match.
    pub fn new(name: &str, rows: usize, cols: usize, values: Vec<i8>, scale: f64) -> Result<Self> {
        if values.len() != rows * cols {
            return Err(ModelError::NotTernary {
                name: name.to_string(),
                reason: format!("{} values for a {rows}x{cols} matrix", values.len()),
            });
        }
        if let Some(v) = values.iter().find(|v| !(-1..=1).contains(*v)) {
            return Err(ModelError::NotTernary {
                name: name.to_string(),
                reason: format!("value {v}"),
            });
        }
        if !(scale.is_finite()) {
            return Err(ModelError::NonFinite {
                name: name.to_string(),
            });
        }
        Ok(TernaryMatrix {
            rows,
            cols,
            values,
            scale,
        })
    }

    /// Quantizes latent weights exactly as BitNet b1.58 does at load:
    /// scale = max(mean|W|, 1e-5), values = clamp(round(W / scale), -1, 1), with round half to
    /// even (PyTorch's `round`).
    pub fn from_latent(rows: usize, cols: usize, latent: &[f64]) -> Self {
        assert_eq!(
            latent.len(),
            rows * cols,
            "latent weights do not match their shape"
        );
        let scale = absmean_scale(latent);
        // BitNet multiplies by the reciprocal; doing the same keeps ties where PyTorch has them.
        let inv = 1.0 / scale;
        let values = latent
            .iter()
            .map(|w| (w * inv).round_ties_even().clamp(-1.0, 1.0) as i8)
            .collect();
        TernaryMatrix {
            rows,
            cols,
            values,
            scale,
        }
    }

    /// Unpacks the Hugging Face packed form: a `uint8` tensor of shape
    /// `[ceil(rows / 4), cols]` whose byte (r, c) holds, in bits 2i..2i+2, the value of row
    /// `i * ceil(rows / 4) + r` plus one (so codes 0, 1, 2 mean -1, 0, 1).
    ///
    /// # Errors
    /// [`ModelError::NotTernary`] if a code 3 occurs in a used position.
    pub fn from_packed(
        name: &str,
        rows: usize,
        cols: usize,
        packed: &[u8],
        scale: f64,
    ) -> Result<Self> {
        let prow = rows.div_ceil(VALUES_PER_BYTE);
        assert_eq!(
            packed.len(),
            prow * cols,
            "packed weights do not match their shape"
        );
        let mut values = vec![0i8; rows * cols];
        for i in 0..VALUES_PER_BYTE {
            for r in 0..prow {
                let row = i * prow + r;
                if row >= rows {
                    break;
                }
                for c in 0..cols {
                    let code = (packed[r * cols + c] >> (2 * i)) & 3;
                    if code == 3 {
                        return Err(ModelError::NotTernary {
                            name: name.to_string(),
                            reason: format!("packed code 3 at byte ({r}, {c}), bits {}", 2 * i),
                        });
                    }
                    values[row * cols + c] = code as i8 - 1;
                }
            }
        }
        TernaryMatrix::new(name, rows, cols, values, scale)
    }

    /// The packed form read by [`TernaryMatrix::from_packed`] (and by transformers' BitNet
    /// support), shape `[ceil(rows / 4), cols]`.
    pub fn pack(&self) -> Vec<u8> {
        let prow = self.rows.div_ceil(VALUES_PER_BYTE);
        let mut packed = vec![0u8; prow * self.cols];
        for row in 0..self.rows {
            let (i, r) = (row / prow, row % prow);
            for c in 0..self.cols {
                let code = (self.values[row * self.cols + c] + 1) as u8;
                packed[r * self.cols + c] |= code << (2 * i);
            }
        }
        packed
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The ternary values, row-major (out x in).
    pub fn values(&self) -> &[i8] {
        &self.values
    }

    /// The per-tensor scale (W = scale * values).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// `x W^T * scale` for a `tokens x cols` input: each output is a signed sum of inputs
    /// (no multiplication by a weight), times one scale at the end.
    pub fn forward(&self, x: &crate::tensor::Matrix) -> crate::tensor::Matrix {
        assert_eq!(
            x.cols(),
            self.cols,
            "input width does not match the projection"
        );
        let mut out = crate::tensor::Matrix::zeros(x.rows(), self.rows);
        for t in 0..x.rows() {
            let xin = x.row(t);
            let dst = out.row_mut(t);
            let body = |(o, w): (&mut f64, &[i8])| {
                let acc: f64 = w.iter().zip(xin).map(|(&w, &v)| f64::from(w) * v).sum();
                *o = acc * self.scale;
            };
            // Only large projections are worth the thread hand-off.
            if self.rows * self.cols >= 1 << 18 {
                dst.par_iter_mut()
                    .zip(self.values.par_chunks(self.cols))
                    .for_each(body);
            } else {
                dst.iter_mut()
                    .zip(self.values.chunks(self.cols))
                    .for_each(body);
            }
        }
        out
    }
}

/// BitNet's per-tensor weight scale: max(mean|W|, 1e-5).
pub fn absmean_scale(w: &[f64]) -> f64 {
    if w.is_empty() {
        return SCALE_FLOOR;
    }
    let mean = w.iter().map(|x| x.abs()).sum::<f64>() / w.len() as f64;
    mean.max(SCALE_FLOOR)
}

/// Per-token absmax activation quantization to `bits` bits, in place ("fake" quantization:
/// the result is the dequantized value, as in BitNet's `activation_quant`):
/// s = Qp / max(max|x|, 1e-5), x <- clamp(round(x * s), -Qp-1, Qp) / s, with Qp = 2^(bits-1) - 1
/// and round half to even.
pub fn absmax_quantize(x: &mut [f64], bits: u32) {
    let qp = f64::from((1u32 << (bits - 1)) - 1);
    let qn = -qp - 1.0;
    let max = x
        .iter()
        .map(|v| v.abs())
        .fold(0.0, f64::max)
        .max(SCALE_FLOOR);
    let s = qp / max;
    for v in x.iter_mut() {
        *v = (*v * s).round_ties_even().clamp(qn, qp) / s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absmean_matches_hand_computation() {
        // mean|W| = (0.1 + 0.4 + 0.05 + 0.25 + 0.6 + 0.2) / 6 = 0.26666...
        let w = [0.1, -0.4, 0.05, 0.25, -0.6, 0.2];
        let t = TernaryMatrix::from_latent(2, 3, &w);
        assert!((t.scale() - 1.6 / 6.0).abs() < 1e-15);
        // W / scale = 0.375, -1.5, 0.1875, 0.9375, -2.25, 0.75
        assert_eq!(t.values(), &[0, -1, 0, 1, -1, 1]);
        // A zero tensor takes the floor and quantizes to zeros.
        let z = TernaryMatrix::from_latent(1, 2, &[0.0, 0.0]);
        assert_eq!(z.scale(), SCALE_FLOOR);
        assert_eq!(z.values(), &[0, 0]);
    }

    #[test]
    fn ties_round_to_even() {
        // scale = 1 exactly: W = 0.5 -> 0, 1.5 -> 2 -> clamp 1, -0.5 -> 0, plus padding to
        // make the mean 1.
        let w = [0.5, 1.5, -0.5, 1.5];
        let t = TernaryMatrix::from_latent(1, 4, &w);
        assert_eq!(t.scale(), 1.0);
        assert_eq!(t.values(), &[0, 1, 0, 1]);
        // max = 127 so s = 1 exactly: 0.5 -> 0, -1.5 -> -2, 2.5 -> 2.
        let mut x = [0.5, 127.0, -1.5, 2.5];
        absmax_quantize(&mut x, 8);
        assert_eq!(x, [0.0, 127.0, -2.0, 2.0]);
    }

    #[test]
    fn absmax_hand_computed() {
        let mut x = [1.0, -0.5, 0.25, 0.0];
        absmax_quantize(&mut x, 8);
        // s = 127: 127, -63.5 -> -64 (even), 31.75 -> 32, 0
        assert_eq!(x, [1.0, -64.0 / 127.0, 32.0 / 127.0, 0.0]);
    }

    #[test]
    fn pack_matches_transformers_example() {
        // The docstring example of transformers' `unpack_weights`: packed
        // [[0b10100001, 0b00011000], [0b10010000, 0b00001010]] unpacks to the 8 x 2 matrix
        // [[0,-1],[-1,1],[-1,1],[-1,1],[1,0],[0,-1],[1,-1],[1,-1]].
        let packed = [0b1010_0001u8, 0b0001_1000, 0b1001_0000, 0b0000_1010];
        let t = TernaryMatrix::from_packed("w", 8, 2, &packed, 1.0).unwrap();
        let want: [i8; 16] = [0, -1, -1, 1, -1, 1, -1, 1, 1, 0, 0, -1, 1, -1, 1, -1];
        assert_eq!(t.values(), &want);
        assert_eq!(t.pack(), packed);
        let bad = [0b0000_0011u8, 0, 0, 0];
        assert!(matches!(
            TernaryMatrix::from_packed("w", 8, 2, &bad, 1.0),
            Err(ModelError::NotTernary { .. })
        ));
    }

    #[test]
    fn forward_is_a_signed_sum() {
        let t = TernaryMatrix::new("w", 2, 3, vec![1, 0, -1, -1, 1, 1], 0.5).unwrap();
        let x = crate::tensor::Matrix::from_vec(1, 3, vec![1.0, 2.0, 4.0]);
        let y = t.forward(&x);
        assert_eq!(y.data(), &[0.5 * (1.0 - 4.0), 0.5 * (-1.0 + 2.0 + 4.0)]);
    }
}
