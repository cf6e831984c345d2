//! The bytes of one round: the encrypted input the client sends and the
//! encrypted logits the server returns. Every read is validated (magic,
//! counts against the remaining bytes, each ciphertext by `ensi_ckks::serial`).

use crate::block::EncryptedLogits;
use crate::{InferError, Result};
use ensi_ckks::{Ciphertext, Parameters};

const INPUT_MAGIC: &[u8; 8] = b"ENSI-IN1";
const OUTPUT_MAGIC: &[u8; 8] = b"ENSI-OU1";

/// The encrypted, embedded prompt: hidden columns for `tokens` real tokens.
pub struct EncryptedInput {
    /// Real tokens (the rest of the column slots is padding).
    pub tokens: usize,
    /// One ciphertext per hidden feature.
    pub columns: Vec<Ciphertext>,
}

fn write_cts(magic: &[u8; 8], head: u32, cts: &[Ciphertext], params: &Parameters) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(magic);
    out.extend_from_slice(&head.to_le_bytes());
    out.extend_from_slice(&(cts.len() as u32).to_le_bytes());
    for ct in cts {
        let b = ct.to_bytes(params);
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(&b);
    }
    out
}

fn read_cts(magic: &[u8; 8], params: &Parameters, bytes: &[u8]) -> Result<(u32, Vec<Ciphertext>)> {
    let bad = |m: &str| InferError::Wire(m.to_string());
    if bytes.len() < 16 || &bytes[..8] != magic {
        return Err(bad("not an ENSI message of this kind (bad magic)"));
    }
    let head = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let count = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let mut rest = &bytes[16..];
    // Each entry takes at least its 8-byte length: bound the count before allocating.
    if count > rest.len() / 8 {
        return Err(bad("ciphertext count exceeds the message size"));
    }
    let mut cts = Vec::with_capacity(count);
    for i in 0..count {
        if rest.len() < 8 {
            return Err(bad("message truncated"));
        }
        let len = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
        rest = &rest[8..];
        if len > rest.len() as u64 {
            return Err(InferError::Wire(format!("ciphertext {i} truncated")));
        }
        let (ct, tail) = rest.split_at(len as usize);
        cts.push(Ciphertext::from_bytes(params, ct)?);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the last ciphertext"));
    }
    Ok((head, cts))
}

impl EncryptedInput {
    /// Serializes the input.
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        write_cts(INPUT_MAGIC, self.tokens as u32, &self.columns, params)
    }

    /// Reads and validates an input.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        let (tokens, columns) = read_cts(INPUT_MAGIC, params, bytes)?;
        if tokens == 0 {
            return Err(InferError::Wire("an input needs at least one token".into()));
        }
        Ok(Self {
            tokens: tokens as usize,
            columns,
        })
    }
}

impl EncryptedLogits {
    /// Serializes the logits.
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        write_cts(OUTPUT_MAGIC, 0, &self.chunks, params)
    }

    /// Reads and validates logits.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        let (_, chunks) = read_cts(OUTPUT_MAGIC, params, bytes)?;
        Ok(Self { chunks })
    }
}
