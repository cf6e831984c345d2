//! Packing of a hidden state X (s tokens x d features) into ciphertexts.
//!
//! [`ColumnLayout`] is ENSI's column-wise encoding: ciphertext j holds
//! feature column j, the s tokens in its slots (the slot count is the next
//! power of two >= s, so the ciphertext is sparsely packed). A BitLinear
//! layer then needs no rotation at all, and the nonlinear layers that work
//! per feature follow directly. It uses s of N/2 slots, which is why a denser
//! layout is planned beside it (see docs/ARCHITECTURE.md).

use crate::{InferError, Result};
use ensi_ckks::{Ciphertext, Decryptor, Encoder, Encryptor};
use ensi_model::Matrix;

/// ENSI's column layout for an s x d matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnLayout {
    /// Tokens (rows).
    pub tokens: usize,
    /// Features (columns, one ciphertext each).
    pub features: usize,
}

impl ColumnLayout {
    /// The layout for `tokens` x `features`.
    pub fn new(tokens: usize, features: usize) -> Self {
        Self { tokens, features }
    }

    /// log2 of the slot count each ciphertext uses.
    pub fn log_slots(&self) -> u32 {
        self.tokens.max(1).next_power_of_two().trailing_zeros()
    }

    /// Encrypts X column by column at `level` and `scale` (client side).
    pub fn encrypt(
        &self,
        x: &Matrix,
        encoder: &Encoder,
        encryptor: &mut Encryptor,
        level: usize,
        scale: f64,
    ) -> Result<Vec<Ciphertext>> {
        if x.rows() != self.tokens || x.cols() != self.features {
            return Err(InferError::Shape(format!(
                "matrix is {}x{}, layout is {}x{}",
                x.rows(),
                x.cols(),
                self.tokens,
                self.features
            )));
        }
        (0..self.features)
            .map(|j| {
                let column: Vec<f64> = (0..self.tokens).map(|r| x.get(r, j)).collect();
                let pt = encoder.encode_real(&column, level, scale, self.log_slots())?;
                Ok(encryptor.encrypt(&pt)?)
            })
            .collect()
    }

    /// Decrypts the columns back into an s x d matrix (client side).
    pub fn decrypt(
        &self,
        cts: &[Ciphertext],
        encoder: &Encoder,
        decryptor: &Decryptor,
    ) -> Result<Matrix> {
        if cts.len() != self.features {
            return Err(InferError::Shape(format!(
                "{} ciphertexts for {} columns",
                cts.len(),
                self.features
            )));
        }
        let mut m = Matrix::zeros(self.tokens, self.features);
        for (j, ct) in cts.iter().enumerate() {
            let values = encoder.decode_real(&decryptor.decrypt(ct)?);
            for (r, &v) in values.iter().take(self.tokens).enumerate() {
                m.row_mut(r)[j] = v;
            }
        }
        Ok(m)
    }
}
