//! RNS-CKKS homomorphic encryption in pure Rust: the engine under ENSI.
pub mod error;
pub mod math;
pub mod params;
pub mod ring;

pub use error::{CkksError, DecodeError, Result};
pub use params::{Parameters, ParametersLiteral, SecretDistribution};
