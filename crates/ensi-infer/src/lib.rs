//! Encrypted BitNet inference (ENSI): the layer between the CKKS engine
//! (`ensi-ckks`, which knows nothing of transformers) and the model
//! (`ensi-model`, which knows nothing of encryption).
//!
//! Built so far: ENSI's column-wise packing of a hidden state, the
//! multiplication-free ternary PCMM over it and the conventional PCMM it is
//! compared with ([`layout`], [`pcmm`]), and the attention nonlinearity both
//! ways: sigmoid and the conventional HE softmax ([`attention`]). The
//! encrypted attention, RMSNorm with bootstrapping, MLP and the whole model
//! come with later issues; see docs/ARCHITECTURE.md.

pub mod attention;
pub mod block;
pub mod client;
pub mod dense;
pub mod dense_model;
pub mod layout;
pub mod packing;
pub mod pcmm;
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
