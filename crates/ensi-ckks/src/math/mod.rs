//! Scalar arithmetic below the ring: word-sized moduli, prime generation.
//!
//! This is the bottom layer of the CKKS crate; nothing here knows about
//! polynomials or ciphertexts.

pub mod modulus;
pub mod primes;

pub use modulus::Modulus;
