//! Typed errors of the model crate.
//!
//! Everything that comes from a file (a checkpoint, a tokenizer, an approximation spec) is
//! untrusted: a bad file gives one of these variants, naming the file, field or tensor at fault,
//! and never a panic.

use std::path::PathBuf;

/// An error while loading, writing or running a BitNet b1.58 model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (`config.json`, the shard index, an approximation spec) is not valid JSON or
    /// does not have the expected shape.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A required field of `config.json` is absent.
    #[error("config.json: field `{field}` is missing")]
    MissingField {
        /// The field's name.
        field: &'static str,
    },
    /// A field of `config.json` has a value this crate cannot use.
    #[error("config.json: field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `config.json` names an architecture that is neither BitNet b1.58 family.
    #[error(
        "unknown architecture {architectures:?} (model_type {model_type:?}): expected \
         `BitnetForCausalLM` (1bitLLM bitnet_b1_58) or `BitNetForCausalLM` / model_type \
         `bitnet` (Microsoft bitnet-b1.58)"
    )]
    UnknownArchitecture {
        /// The `architectures` list of the config.
        architectures: Vec<String>,
        /// The `model_type` of the config.
        model_type: Option<String>,
    },
    /// The directory has neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error("{dir}: no model.safetensors or model.safetensors.index.json")]
    NoWeights {
        /// The model directory.
        dir: PathBuf,
    },
    /// A safetensors file is malformed.
    #[error("{path}: invalid safetensors file: {reason}")]
    SafeTensors {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A tensor the architecture needs is not in the checkpoint.
    #[error("tensor `{name}` is missing from the checkpoint")]
    MissingTensor {
        /// The tensor's name.
        name: String,
    },
    /// A tensor has the wrong shape for the configuration.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// The tensor's name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has a data type that cannot be used where it is.
    #[error("tensor `{name}` has dtype {dtype}, expected {expected}")]
    TensorDtype {
        /// The tensor's name.
        name: String,
        /// The dtype in the file.
        dtype: String,
        /// What was expected there.
        expected: &'static str,
    },
    /// The shard index lists a tensor in a shard that does not contain it.
    #[error("tensor `{name}` is mapped to shard {shard} by the index, but that shard lacks it")]
    TensorNotInShard {
        /// The tensor's name.
        name: String,
        /// The shard's file name.
        shard: String,
    },
    /// The same tensor name occurs in two shards.
    #[error("tensor `{name}` occurs in both {first} and {second}")]
    DuplicateTensor {
        /// The tensor's name.
        name: String,
        /// The first shard holding it.
        first: String,
        /// The second shard holding it.
        second: String,
    },
    /// A weight that must be ternary holds something else (a packed code 3, or a value outside
    /// {-1, 0, 1} next to a `weight_scale`).
    #[error("tensor `{name}` is not ternary: {reason}")]
    NotTernary {
        /// The tensor's name.
        name: String,
        /// What was found.
        reason: String,
    },
    /// A tensor holds a NaN or an infinity.
    #[error("tensor `{name}` holds a non-finite value")]
    NonFinite {
        /// The tensor's name.
        name: String,
    },
    /// The tokenizer could not be loaded or used.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The `tokenizer.json` file.
        path: PathBuf,
        /// The tokenizer library's message.
        message: String,
    },
    /// A token id is not below the model's vocabulary size.
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// A forward pass or generation was asked for with no token.
    #[error("empty input: at least one token is needed")]
    EmptyInput,
    /// An approximation spec is unusable (empty interval, zero degree, ...).
    #[error("approximation spec: `{field}` {reason}")]
    InvalidApprox {
        /// The field of [`crate::approx::EnsiApprox`].
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A run option (temperature, size, ...) is out of range.
    #[error("option `{option}`: {reason}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor could not be serialized while writing a checkpoint.
    #[error("cannot serialize tensor `{name}`: {reason}")]
    Serialize {
        /// The tensor's name.
        name: String,
        /// The serializer's message.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}
