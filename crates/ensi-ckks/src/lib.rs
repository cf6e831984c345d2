//! RNS-CKKS homomorphic encryption in pure Rust: the engine under ENSI.
//!
//! Layers, bottom up (each uses only the ones below it):
//! [`math`] (word moduli, primes) -> [`ring`] (RNS polynomials, NTT, basis
//! conversion, automorphisms) -> [`params`] -> [`encoder`], [`keys`],
//! [`keyswitch`] -> [`encryption`], [`evaluator`].
pub mod ciphertext;
pub mod circuits;
pub mod encoder;
pub mod encryption;
pub mod error;
pub mod evaluator;
pub mod keys;
pub mod keyswitch;
pub mod lincomb;
pub mod math;
pub mod params;
pub mod ring;
pub mod sampling;
pub mod serial;

pub use ciphertext::{Ciphertext, Plaintext};
pub use encoder::{Encoder, PlainCoefficients};
pub use encryption::{Decryptor, Encryptor};
pub use error::{CkksError, DecodeError, Result};
pub use evaluator::{CiphertextTensor, Evaluator};
pub use keys::{
    EvaluationKeys, GaloisKey, KeyGenerator, PublicKey, RelinKey, SecretKey, SwitchingKey,
};
pub use num_complex::Complex64;
pub use params::{Parameters, ParametersLiteral, SecretDistribution};
