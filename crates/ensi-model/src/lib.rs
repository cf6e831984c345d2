//! BitNet b1.58 models in plaintext: checkpoints, tokenizer, the reference forward pass and the
//! ENSI twin.
//!
//! This crate knows nothing of CKKS. It is the plaintext side of the project:
//!
//! 1. [`config`] reads `config.json` (which family, which shapes), [`checkpoint`] reads the
//!    safetensors files (single or sharded), [`weights`] checks every tensor against the config
//!    and quantizes the projections into ternary matrices ([`quant`]).
//! 2. [`tokenizer`] turns text into token ids (`tokenizer.json`).
//! 3. [`forward`] runs the model in f64 with a KV cache, either as published
//!    ([`Mode::original`]) or as the encrypted path computes it ([`Mode::twin`]); [`generate`]
//!    loops it; [`eval`] compares modes.
//! 4. [`approx`] is the single declaration of every polynomial approximation, read by the twin
//!    here and by the encrypted path in `ensi-infer`.
//! 5. [`tiny`] writes the built-in deterministic checkpoints.
//!
//! ```no_run
//! use ensi_model::{BitNetModel, Mode, Tokenizer, EnsiApprox};
//! # fn main() -> Result<(), ensi_model::ModelError> {
//! let dir = std::path::Path::new("tiny-1bitllm");
//! let model = BitNetModel::load(dir)?;
//! let tok = Tokenizer::from_dir(dir)?;
//! let ids = tok.encode("Hello")?;
//! let twin = Mode::twin(&EnsiApprox::for_model_dir(dir)?)?;
//! let out = model.forward(&ids, &mut model.new_cache(), &twin)?;
//! println!("{} logits per position", out.logits.cols());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod approx;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod eval;
pub mod forward;
pub mod generate;
pub mod quant;
pub mod rng;
pub mod tensor;
pub mod tiny;
pub mod tokenizer;
pub mod weights;

pub use approx::{ApproxPolys, ChebyshevPoly, ChebyshevSpec, EnsiApprox, InvSqrtSpec, SigmoidBias};
pub use config::{Activation, Family, ModelConfig};
pub use error::ModelError;
pub use forward::{Forward, KvCache, Mode, RangeStats, Trace};
pub use generate::{generate, GenerateOptions, Generation, Sampling};
pub use quant::TernaryMatrix;
pub use tensor::Matrix;
pub use tiny::{write_random, write_tiny, TinyOptions};
pub use tokenizer::Tokenizer;
pub use weights::{BitNetModel, LayerWeights};
