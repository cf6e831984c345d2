//! Typed errors of the CKKS crate.

use thiserror::Error;

/// Everything that can go wrong in the CKKS crate, one variant per cause.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CkksError {
    /// A parameter literal is malformed.
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// A parameter set is below 128-bit security and is not a named insecure preset.
    #[error(
        "insecure parameters: log2(QP) = {log_qp:.1} exceeds the 128-bit bound {bound} for N = 2^{log_n} \
         (only presets named 'insecure-*' may do this)"
    )]
    Insecure { log_n: u32, log_qp: f64, bound: u32 },
    /// No preset has this name.
    #[error("unknown preset '{0}' (known: {1})")]
    UnknownPreset(String, String),
    /// Operands belong to different parameter sets.
    #[error("operands belong to different parameter sets")]
    ParametersMismatch,
    /// Two operands have different scales and cannot be added.
    #[error("scale mismatch: 2^{a:.4} vs 2^{b:.4}")]
    ScaleMismatch { a: f64, b: f64 },
    /// An operation needs more levels than the ciphertext has.
    #[error("level too low: operation needs level {needed}, ciphertext is at level {level}")]
    LevelTooLow { needed: usize, level: usize },
    /// Operands have different slot counts.
    #[error("slot count mismatch: 2^{a} vs 2^{b}")]
    SlotMismatch { a: u32, b: u32 },
    /// More values than slots.
    #[error("{got} values do not fit in {slots} slots")]
    TooManyValues { got: usize, slots: usize },
    /// A slot count that is not a power of two, or above N/2.
    #[error("invalid slot count 2^{0}")]
    InvalidSlots(u32),
    /// A key was truncated below the level it is needed at.
    #[error("the key only reaches level {key_level}, the ciphertext is at level {level}")]
    KeyLevelTooLow { key_level: usize, level: usize },
    /// The evaluator has no relinearization key.
    #[error("no relinearization key was provided")]
    MissingRelinKey,
    /// The evaluator has no key for this Galois element.
    #[error("no Galois key for element {0} (rotation keys must be generated for every step used)")]
    MissingGaloisKey(u64),
    /// A value cannot be encoded (not finite, or too large for the scale).
    #[error("value cannot be encoded: {0}")]
    Encoding(String),
    /// Bytes that do not decode to the expected object.
    #[error("decoding failed: {0}")]
    Decode(#[from] DecodeError),
}

/// Why bytes could not be read back as a CKKS object.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended early.
    #[error("truncated input: needed {needed} more bytes")]
    Truncated { needed: usize },
    /// The magic bytes are wrong: this is not an ensi-ckks object.
    #[error("bad magic bytes")]
    BadMagic,
    /// The format version is not supported.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    /// The object is of another kind than expected.
    #[error("expected a {expected}, found object kind {found}")]
    WrongKind { expected: &'static str, found: u8 },
    /// The object was made for other parameters.
    #[error("parameter fingerprint mismatch: object was made for other parameters")]
    FingerprintMismatch,
    /// A length field is out of range.
    #[error("invalid length for {field}: {value}")]
    BadLength { field: &'static str, value: u64 },
    /// A residue is not below its modulus.
    #[error("residue {value} not below its modulus {modulus}")]
    ResidueOutOfRange { value: u64, modulus: u64 },
    /// Some other field holds an invalid value.
    #[error("invalid value for {field}")]
    InvalidValue { field: &'static str },
    /// Extra bytes after the object.
    #[error("{0} trailing bytes after the object")]
    TrailingBytes(usize),
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, CkksError>;
