//! The client's side of one round: encrypt the embedded prompt in the model's
//! column layout, decrypt the logits. The secret key lives here and only here.

use crate::block::{EncryptedLogits, EncryptedModel, RESIDUAL_LEVEL};
use crate::dense_model::encrypt_dense;
use crate::packing::{Layout, Packing};
use crate::{InferError, Result};
use ensi_ckks::{Ciphertext, Decryptor, Encoder, Encryptor, Parameters, SecretKey};
use ensi_model::Matrix;

/// Encrypts embedded tokens (tokens x hidden) as hidden columns at the
/// residual level (or, in the dense layout, as one ciphertext: [`encrypt_dense`]). Padding rows (up to the packing's power of two) repeat the
/// last token, so every padded position stays inside the polynomials'
/// intervals; the causal mask keeps real positions from ever reading them.
pub fn encrypt_embeddings(
    params: &Parameters,
    packing: &Packing,
    sk: &SecretKey,
    x: &Matrix,
) -> Result<Vec<Ciphertext>> {
    let (tokens, hidden) = (x.rows(), x.cols());
    if tokens == 0 || tokens > packing.tokens_pad || hidden != packing.hidden {
        return Err(InferError::Shape(format!(
            "{tokens} x {hidden} embeddings for a packing of at most {} tokens x {}",
            packing.tokens_pad, packing.hidden
        )));
    }
    match packing.layout {
        Layout::Dense => return Ok(vec![encrypt_dense(params, packing, sk, x)?]),
        Layout::Wide => return crate::wide::encrypt_wide(params, packing, sk, x),
        Layout::Columns => {}
    }
    let encoder = Encoder::new(params);
    let mut enc = Encryptor::with_secret_key(params, sk);
    (0..hidden)
        .map(|c| {
            let col: Vec<f64> = (0..packing.tokens_pad)
                .map(|r| x.get(r.min(tokens - 1), c))
                .collect();
            let pt = encoder.encode_real(
                &col,
                RESIDUAL_LEVEL,
                params.default_scale(),
                packing.column_log_slots(),
            )?;
            Ok(enc.encrypt(&pt)?)
        })
        .collect()
}

/// Decrypts the logits of the last position (vocab values).
pub fn decrypt_logits(
    params: &Parameters,
    packing: &Packing,
    sk: &SecretKey,
    logits: &EncryptedLogits,
    vocab: usize,
) -> Result<Vec<f64>> {
    let encoder = Encoder::new(params);
    let dec = Decryptor::new(sk);
    let decoded: Vec<Vec<f64>> = logits
        .chunks
        .iter()
        .map(|c| Ok(encoder.decode_real(&dec.decrypt(c)?)))
        .collect::<Result<_>>()?;
    let places = EncryptedModel::logit_slots(packing, params.log_slots(), vocab);
    places
        .iter()
        .map(|&(chunk, slot)| {
            decoded
                .get(chunk)
                .and_then(|d| d.get(slot))
                .copied()
                .ok_or_else(|| InferError::Shape(format!("logits lack chunk {chunk}")))
        })
        .collect()
}

/// Decrypts column ciphertexts into a tokens x columns matrix (times `factor`).
pub fn decrypt_columns(
    params: &Parameters,
    sk: &SecretKey,
    cols: &[Ciphertext],
    tokens: usize,
    factor: f64,
) -> Result<Matrix> {
    let encoder = Encoder::new(params);
    let dec = Decryptor::new(sk);
    let mut m = Matrix::zeros(tokens, cols.len());
    for (c, ct) in cols.iter().enumerate() {
        let v = encoder.decode_real(&dec.decrypt(ct)?);
        for (r, x) in v.iter().take(tokens).enumerate() {
            m.row_mut(r)[c] = x * factor;
        }
    }
    Ok(m)
}
