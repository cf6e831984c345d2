//! Circuits: homomorphic algorithms built only from the public [`Evaluator`](crate::Evaluator) API.
//!
//! This layer sits above the evaluator and below bootstrapping and the model:
//! `evaluator` -> `circuits::{polynomial, lintrans}` -> (bootstrapping: CoeffsToSlots /
//! SlotsToCoeffs are linear transforms, EvalMod is a polynomial) -> the ENSI model
//! (sigmoid attention, SiLU, RMSNorm's inverse square root, BitNet linear layers).
//!
//! Nothing here reaches below the evaluator: every circuit is a sequence of the
//! evaluator's public operations, with levels and scales planned so that the
//! result lands exactly on a requested scale at a level known in advance.
//!
//! * [`polynomial`]: Chebyshev interpolation and baby-step giant-step evaluation
//!   at optimal depth, plus the function helpers the model needs (sigmoid, SiLU,
//!   ReLU^2, inverse square root with Newton steps).
//! * [`lintrans`]: y = M x for a slot-by-slot matrix given by its diagonals,
//!   evaluated with hoisted baby-step rotations and giant-step rotations (one level).

pub mod bootstrap;
pub mod lintrans;
pub mod polynomial;

pub use bootstrap::{BootstrapConfig, BootstrapKeys, Bootstrapper};
pub use lintrans::{EncodedLinearTransform, LinearTransform};
pub use polynomial::{ChebyshevPoly, EvalCost, InvSqrt, PolynomialEvaluator};
