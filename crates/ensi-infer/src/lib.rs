//! Encrypted BitNet inference (ENSI): the layer between the CKKS engine
//! (`ensi-ckks`, which knows nothing of transformers) and the model
//! (`ensi-model`, which knows nothing of encryption).
//!
//! The encrypted model runs in one of two layouts of the hidden state
//! ([`packing::Layout`]): the dense column-block layout, the default where it
//! fits ([`dense_model`]: the whole state in one ciphertext, projections as
//! block maps, every nonlinearity once per block), and ENSI's column layout
//! ([`block`]: one ciphertext per feature column, multiplication-free ternary
//! PCMM). States one ciphertext cannot hold (a large model at a hundred
//! tokens) run block by block in the wide layout ([`wide`]: the dense layout
//! over several ciphertexts). Beside them: the conventional PCMM and HE softmax the paper compares
//! with ([`pcmm`], [`attention`]), the client's encryption and decryption
//! ([`client`]) and the wire format ([`wire`]). See docs/ARCHITECTURE.md.

pub mod attention;
pub mod block;
pub mod client;
pub mod dense;
pub mod dense_model;
pub mod layout;
pub mod packing;
pub mod pcmm;
pub mod wide;
pub mod wire;

use thiserror::Error;

/// Errors of encrypted inference.
#[derive(Debug, Error)]
pub enum InferError {
    /// An error from the CKKS engine.
    #[error(transparent)]
    Ckks(#[from] ensi_ckks::CkksError),
    /// Shapes that do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A malformed message.
    #[error("malformed message: {0}")]
    Wire(String),
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, InferError>;
