//! The ENSI approximation spec: the one place that says how every nonlinearity is computed
//! under encryption.
//!
//! CKKS evaluates only additions and multiplications, so every nonlinearity of the model is
//! replaced by a polynomial in the Chebyshev basis on a stated interval: the attention sigmoid,
//! the MLP gate (SiLU or ReLU^2), and the inverse square root of RMSNorm (a polynomial first
//! guess refined by Newton steps). [`EnsiApprox`] declares the function, interval, degree and
//! Newton steps; [`EnsiApprox::polys`] turns it into coefficients ([`ApproxPolys`]). The
//! plaintext ENSI twin ([`crate::forward`]) evaluates exactly these coefficients in f64, and the
//! encrypted path consumes the very same coefficients, so the two compute the same thing up to
//! CKKS noise.
//!
//! Out-of-interval inputs: the twin clamps an input to the interval before evaluating a
//! polynomial, because a Chebyshev polynomial diverges fast outside it. The encrypted path
//! cannot clamp (a comparison is not a polynomial), so the intervals must cover the values that
//! occur; the twin counts every clamped input ([`crate::forward::RangeStats`]) so that a spec
//! that does not cover a model is visible, and `ensi eval` prints the observed ranges.

use crate::error::{ModelError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name of an approximation spec stored beside a checkpoint.
pub const APPROX_FILE: &str = "ensi_approx.json";

/// Chebyshev interpolation coefficients of `f` on `[a, b]` at the `degree + 1` Chebyshev nodes
/// of the first kind.
///
/// The polynomial is p(x) = sum_{j=0}^{degree} c_j T_j(t) with t = (2x - a - b) / (b - a);
/// the returned `c_0` already carries the factor 1/2 of the interpolation formula.
pub fn chebyshev_coeffs(f: impl Fn(f64) -> f64, a: f64, b: f64, degree: usize) -> Vec<f64> {
    let n = degree + 1;
    let nf = n as f64;
    let half_width = 0.5 * (b - a);
    let mid = 0.5 * (a + b);
    let values: Vec<f64> = (0..n)
        .map(|k| {
            let t = (std::f64::consts::PI * (k as f64 + 0.5) / nf).cos();
            f(mid + half_width * t)
        })
        .collect();
    (0..n)
        .map(|j| {
            let s: f64 = values
                .iter()
                .enumerate()
                .map(|(k, v)| v * (std::f64::consts::PI * j as f64 * (k as f64 + 0.5) / nf).cos())
                .sum();
            let c = 2.0 * s / nf;
            if j == 0 {
                0.5 * c
            } else {
                c
            }
        })
        .collect()
}

/// Evaluates sum_j c_j T_j(t), t = (2x - a - b) / (b - a), by Clenshaw's recurrence (no
/// clamping: outside `[a, b]` the polynomial is evaluated as it is).
pub fn chebyshev_eval(coeffs: &[f64], a: f64, b: f64, x: f64) -> f64 {
    let t = (2.0 * x - a - b) / (b - a);
    let (mut b1, mut b2) = (0.0f64, 0.0f64);
    for &c in coeffs.iter().skip(1).rev() {
        let b0 = c + 2.0 * t * b1 - b2;
        b2 = b1;
        b1 = b0;
    }
    coeffs.first().copied().unwrap_or(0.0) + t * b1 - b2
}

/// Interval and degree of one Chebyshev approximation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChebyshevSpec {
    /// Lower end of the interval.
    pub a: f64,
    /// Upper end of the interval.
    pub b: f64,
    /// Polynomial degree (multiplicative depth ceil(log2(degree + 1)) under CKKS).
    pub degree: usize,
}

impl ChebyshevSpec {
    fn validate(&self, field: &str) -> Result<()> {
        if !(self.a.is_finite() && self.b.is_finite() && self.a < self.b) {
            return Err(ModelError::InvalidApprox {
                field: field.to_string(),
                reason: format!("interval [{}, {}] is empty or not finite", self.a, self.b),
            });
        }
        if self.degree == 0 || self.degree > 1024 {
            return Err(ModelError::InvalidApprox {
                field: field.to_string(),
                reason: format!("degree {} is outside 1..=1024", self.degree),
            });
        }
        Ok(())
    }

    /// Interpolates `f` on this interval.
    pub fn fit(&self, f: impl Fn(f64) -> f64) -> ChebyshevPoly {
        ChebyshevPoly {
            a: self.a,
            b: self.b,
            coeffs: chebyshev_coeffs(f, self.a, self.b, self.degree),
        }
    }
}

/// A polynomial in the Chebyshev basis on `[a, b]`: the coefficients the encrypted path
/// evaluates.
#[derive(Clone, Debug, PartialEq)]
pub struct ChebyshevPoly {
    /// Lower end of the interval.
    pub a: f64,
    /// Upper end of the interval.
    pub b: f64,
    /// Coefficients c_0..c_degree (see [`chebyshev_coeffs`] for the convention).
    pub coeffs: Vec<f64>,
}

impl ChebyshevPoly {
    /// The polynomial at `x`, unclamped (what the encrypted path computes).
    pub fn eval(&self, x: f64) -> f64 {
        chebyshev_eval(&self.coeffs, self.a, self.b, x)
    }

    /// The polynomial at `x` clamped to `[a, b]` (what the twin computes).
    pub fn eval_clamped(&self, x: f64) -> f64 {
        self.eval(x.clamp(self.a, self.b))
    }

    /// Whether `x` lies in the interval.
    pub fn covers(&self, x: f64) -> bool {
        (self.a..=self.b).contains(&x)
    }

    /// Polynomial degree.
    pub fn degree(&self) -> usize {
        self.coeffs.len().saturating_sub(1)
    }

    /// Largest |p(x) - f(x)| over `samples` evenly spaced points of the interval.
    pub fn max_error(&self, f: impl Fn(f64) -> f64, samples: usize) -> f64 {
        (0..=samples)
            .map(|i| {
                let x = self.a + (self.b - self.a) * i as f64 / samples as f64;
                (self.eval(x) - f(x)).abs()
            })
            .fold(0.0, f64::max)
    }
}

/// The inverse square root of RMSNorm: y0 = p(v) on `first_guess.[a, b]`, then `newton_steps`
/// times y <- y * (3 - v * y^2) / 2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvSqrtSpec {
    /// Chebyshev first guess of 1/sqrt(v); its interval is where v = mean(x^2) + eps must lie.
    pub first_guess: ChebyshevSpec,
    /// Newton steps after the first guess (each roughly squares the relative error).
    pub newton_steps: usize,
}

/// The additive bias b of sigmoid attention, sigma(q.k / sqrt(d) + b).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigmoidBias {
    /// b = -ln(n) with n the number of positions the query attends to (i + 1 for the query at
    /// position i). Each row's bias depends only on its own position, so a later token never
    /// changes an earlier position and a KV cache gives the same result as a full pass.
    NegLnAttended,
    /// b = -ln(s) with s the total sequence length of the pass (ENSI's code). Earlier positions
    /// then depend on the length of the sequence they are computed in.
    NegLnSeqLen,
    /// A fixed b.
    Fixed(f64),
}

impl SigmoidBias {
    /// The bias for a query at position `pos` (0-based) in a sequence of `seq_len` positions.
    pub fn bias(&self, pos: usize, seq_len: usize) -> f64 {
        match self {
            SigmoidBias::NegLnAttended => -((pos + 1) as f64).ln(),
            SigmoidBias::NegLnSeqLen => -(seq_len.max(1) as f64).ln(),
            SigmoidBias::Fixed(b) => *b,
        }
    }
}

/// How the encrypted path computes every nonlinearity: one value of this struct is shared by
/// the ENSI twin and the encrypted inference.
///
/// The defaults are calibrated for the built-in tiny models (`ensi model init`) and follow
/// ENSI's choices where ENSI made one; see docs/MODEL.md for the measured errors. A model with
/// other ranges carries its own spec as `ensi_approx.json` beside its `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnsiApprox {
    /// Sigmoid of attention scores (ENSI: degree 16 on [-10, 11]).
    pub sigmoid: ChebyshevSpec,
    /// SiLU gate of the 1bitLLM family, fitted directly (not as x * sigmoid(x), which would
    /// cost one more level).
    pub silu: ChebyshevSpec,
    /// ReLU^2 gate of the bitnet-2b family, fitted directly as the function max(x, 0)^2 (it is
    /// C^1, so the fit converges as 1/degree^2, much slower than for SiLU).
    pub relu2: ChebyshevSpec,
    /// Inverse square root of every RMSNorm.
    pub inv_sqrt: InvSqrtSpec,
    /// Bias added to the scores before the sigmoid.
    pub sigmoid_bias: SigmoidBias,
    /// Whether the final RMSNorm (before the LM head) is exact: true when the server returns the
    /// last hidden state and the client finishes in plaintext.
    pub exact_final_norm: bool,
}

impl Default for EnsiApprox {
    fn default() -> Self {
        EnsiApprox {
            // ENSI's interval; degree 15 rather than its 16: depth 4, not 5
            // (error 8.7e-3 instead of 6.8e-3), and the wide layout's level
            // budget spends that level on packing the scores.
            sigmoid: ChebyshevSpec {
                a: -10.0,
                b: 11.0,
                degree: 15,
            },
            silu: ChebyshevSpec {
                a: -8.0,
                b: 8.0,
                degree: 31,
            },
            relu2: ChebyshevSpec {
                a: -8.0,
                b: 8.0,
                degree: 31,
            },
            // Degree 31 and one Newton step: 7 levels, what the encrypted block's
            // level budget leaves after a bootstrap (docs/ARCHITECTURE.md); the
            // tiny models' inputs lie in [0.031, 12.8].
            inv_sqrt: InvSqrtSpec {
                first_guess: ChebyshevSpec {
                    a: 0.01,
                    b: 16.0,
                    degree: 31,
                },
                newton_steps: 1,
            },
            sigmoid_bias: SigmoidBias::NegLnAttended,
            exact_final_norm: false,
        }
    }
}

impl EnsiApprox {
    /// Checks every interval and degree.
    pub fn validate(&self) -> Result<()> {
        self.sigmoid.validate("sigmoid")?;
        self.silu.validate("silu")?;
        self.relu2.validate("relu2")?;
        self.inv_sqrt.first_guess.validate("inv_sqrt.first_guess")?;
        if self.inv_sqrt.first_guess.a <= 0.0 {
            return Err(ModelError::InvalidApprox {
                field: "inv_sqrt.first_guess".into(),
                reason: "the interval must be positive".into(),
            });
        }
        if self.inv_sqrt.newton_steps > 16 {
            return Err(ModelError::InvalidApprox {
                field: "inv_sqrt.newton_steps".into(),
                reason: format!("{} is more than 16", self.inv_sqrt.newton_steps),
            });
        }
        if let SigmoidBias::Fixed(b) = self.sigmoid_bias {
            if !b.is_finite() {
                return Err(ModelError::InvalidApprox {
                    field: "sigmoid_bias".into(),
                    reason: "fixed bias is not finite".into(),
                });
            }
        }
        Ok(())
    }

    /// Computes the Chebyshev coefficients of every approximation.
    pub fn polys(&self) -> Result<ApproxPolys> {
        self.validate()?;
        Ok(ApproxPolys {
            sigmoid: self.sigmoid.fit(sigmoid),
            silu: self.silu.fit(crate::config::Activation::Silu.exact()),
            relu2: self.relu2.fit(crate::config::Activation::Relu2.exact()),
            inv_sqrt_guess: self.inv_sqrt.first_guess.fit(|v| 1.0 / v.sqrt()),
            newton_steps: self.inv_sqrt.newton_steps,
            spec: self.clone(),
        })
    }

    /// Reads a spec from JSON.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let spec: EnsiApprox = serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// The spec stored beside a checkpoint (`ensi_approx.json`), or the default.
    pub fn for_model_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(APPROX_FILE);
        if path.is_file() {
            Self::from_file(&path)
        } else {
            Ok(Self::default())
        }
    }

    /// Writes the spec as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("the spec always serializes");
        std::fs::write(path, text).map_err(|e| ModelError::io(path, e))
    }
}

/// The logistic function 1 / (1 + e^-x).
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The coefficients of an [`EnsiApprox`]: what the twin evaluates and the encrypted path
/// consumes.
#[derive(Clone, Debug)]
pub struct ApproxPolys {
    /// Attention sigmoid.
    pub sigmoid: ChebyshevPoly,
    /// SiLU gate.
    pub silu: ChebyshevPoly,
    /// ReLU^2 gate.
    pub relu2: ChebyshevPoly,
    /// First guess of the inverse square root.
    pub inv_sqrt_guess: ChebyshevPoly,
    /// Newton steps after the first guess.
    pub newton_steps: usize,
    /// The spec these were computed from.
    pub spec: EnsiApprox,
}

impl ApproxPolys {
    /// The gate polynomial for an activation.
    pub fn activation(&self, act: crate::config::Activation) -> &ChebyshevPoly {
        match act {
            crate::config::Activation::Silu => &self.silu,
            crate::config::Activation::Relu2 => &self.relu2,
        }
    }

    /// The twin's inverse square root of `v`: first guess on `v` clamped to the interval, then
    /// Newton steps on the unclamped `v`.
    pub fn inv_sqrt(&self, v: f64) -> f64 {
        let mut y = self.inv_sqrt_guess.eval_clamped(v);
        for _ in 0..self.newton_steps {
            y = y * (3.0 - v * y * y) * 0.5;
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Activation;

    #[test]
    fn interpolation_is_exact_for_polynomials() {
        let f = |x: f64| 3.0 * x * x * x - x + 0.5;
        let c = chebyshev_coeffs(f, -2.0, 3.0, 5);
        for i in 0..=20 {
            let x = -2.0 + 5.0 * i as f64 / 20.0;
            assert!((chebyshev_eval(&c, -2.0, 3.0, x) - f(x)).abs() < 1e-12);
        }
        // T_0..T_3 of t on [-1, 1]: x^3 = (3 T_1 + T_3) / 4.
        let c = chebyshev_coeffs(|x| x * x * x, -1.0, 1.0, 3);
        let want = [0.0, 0.75, 0.0, 0.25];
        for (c, w) in c.iter().zip(want) {
            assert!((c - w).abs() < 1e-14);
        }
    }

    #[test]
    fn default_spec_meets_its_accuracy() {
        let p = EnsiApprox::default().polys().unwrap();
        // Measured errors are recorded in docs/MODEL.md; these bounds keep them from drifting.
        let e_sig = p.sigmoid.max_error(sigmoid, 4000);
        let e_silu = p.silu.max_error(Activation::Silu.exact(), 4000);
        let e_relu2 = p.relu2.max_error(Activation::Relu2.exact(), 4000);
        assert!(e_sig < 2e-2, "sigmoid error {e_sig}");
        assert!(e_silu < 1e-4, "silu error {e_silu}");
        assert!(e_relu2 < 6e-2, "relu2 error {e_relu2}");
        let (a, b) = (p.inv_sqrt_guess.a, p.inv_sqrt_guess.b);
        let mut worst: f64 = 0.0;
        for i in 0..=4000 {
            // Log-spaced: the hard end of 1/sqrt is the small one.
            let v = a * (b / a).powf(i as f64 / 4000.0);
            worst = worst.max((p.inv_sqrt(v) * v.sqrt() - 1.0).abs());
        }
        // Measured 5.3e-2: degree 31 and one Newton step on [0.01, 16], what the level
        // budget of the encrypted block allows (docs/ARCHITECTURE.md).
        assert!(worst < 6e-2, "inv_sqrt relative error {worst}");
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = EnsiApprox::default();
        s.sigmoid.b = s.sigmoid.a;
        assert!(matches!(s.polys(), Err(ModelError::InvalidApprox { .. })));
        let mut s = EnsiApprox::default();
        s.inv_sqrt.first_guess.a = 0.0;
        assert!(matches!(s.polys(), Err(ModelError::InvalidApprox { .. })));
        let mut s = EnsiApprox::default();
        s.silu.degree = 0;
        assert!(matches!(s.polys(), Err(ModelError::InvalidApprox { .. })));
    }

    #[test]
    fn spec_round_trips_through_json() {
        let s = EnsiApprox {
            sigmoid_bias: SigmoidBias::Fixed(-2.0),
            ..Default::default()
        };
        let text = serde_json::to_string(&s).unwrap();
        let back: EnsiApprox = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }
}
