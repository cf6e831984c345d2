//! The plaintext and ciphertext containers.
//!
//! Both live in NTT form at some level, carry their scale exactly (as an f64
//! that is only ever multiplied or divided by the primes and constants the
//! evaluator used) and the number of slots they pack.

use crate::ring::RnsPoly;

/// An encoded message: one polynomial in NTT form at a level and a scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Plaintext {
    pub(crate) poly: RnsPoly,
    pub(crate) scale: f64,
    pub(crate) log_slots: u32,
}

/// A CKKS ciphertext (c0, c1), decrypting to c0 + c1 s.
#[derive(Clone, Debug, PartialEq)]
pub struct Ciphertext {
    pub(crate) c0: RnsPoly,
    pub(crate) c1: RnsPoly,
    pub(crate) scale: f64,
    pub(crate) log_slots: u32,
}

impl Plaintext {
    /// The level (number of Q primes minus one).
    pub fn level(&self) -> usize {
        self.poly.q_limbs() - 1
    }
    /// The scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }
    /// log2 of the slot count.
    pub fn log_slots(&self) -> u32 {
        self.log_slots
    }
    /// The polynomial (NTT form).
    pub fn poly(&self) -> &RnsPoly {
        &self.poly
    }
}

impl Ciphertext {
    /// The level (number of Q primes minus one).
    pub fn level(&self) -> usize {
        self.c0.q_limbs() - 1
    }
    /// The scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }
    /// Overrides the recorded scale, for callers that know the message was
    /// multiplied by a factor the evaluator did not see (for example an
    /// integer constant folded into the meaning of the message).
    pub fn set_scale(&mut self, scale: f64) {
        self.scale = scale;
    }
    /// log2 of the slot count.
    pub fn log_slots(&self) -> u32 {
        self.log_slots
    }
    /// Reads the same polynomial with another slot count. A message with 2^a
    /// slots is, as a vector of all N/2 slots, periodic with period 2^a; it
    /// is therefore also a message of 2^b slots for any b >= a (the period
    /// repeated), and of 2^b slots for b < a when the caller knows the
    /// vector has that smaller period. Only metadata changes.
    pub fn set_log_slots(&mut self, log_slots: u32) {
        self.log_slots = log_slots;
    }
    /// The two polynomials (NTT form).
    pub fn parts(&self) -> (&RnsPoly, &RnsPoly) {
        (&self.c0, &self.c1)
    }
    /// Size in bytes of the raw residues.
    pub fn byte_size(&self) -> usize {
        (self.c0.as_words().len() + self.c1.as_words().len()) * 8
    }
}
