//! Polynomial evaluation in the Chebyshev basis, at optimal depth and exact scale.
//!
//! Sits on the [`Evaluator`]: the model's non-linearities (sigmoid attention,
//! SiLU, ReLU^2, RMSNorm's inverse square root) and bootstrapping's EvalMod are
//! all [`ChebyshevPoly`]s evaluated here.
//!
//! # Convention
//!
//! A [`ChebyshevPoly`] on `[a, b]` is `p(x) = sum_{k=0}^{d} c_k T_k(y)` with
//! `y = (2x - a - b) / (b - a)` in `[-1, 1]`; `c_0` is the constant term itself
//! (it is **not** halved).
//!
//! # Depth
//!
//! [`ChebyshevPoly::depth`] levels are consumed, always exactly:
//! `ceil(log2(d + 1))`, plus one level for the affine map `x -> y` when
//! `b - a != 2` (a pure shift, `b - a = 2`, is free). The polynomial is split
//! recursively as `p = q T_{2^k} + r` (Chebyshev division) until the pieces are
//! leaves `sum c_i T_i` over the baby steps `T_1 .. T_{2^l}`; a leaf is only
//! used where its `c_i T_i` products (one level for the constants) still fit in
//! the levels left, otherwise it is split once more, which is what keeps the
//! depth at `ceil(log2(d + 1))` on the leading branch. The baby-step bound
//! `2^l` is chosen by counting the ciphertext products of every choice.
//!
//! # Scales
//!
//! The primes are close to but not exactly the scale, so products drift. No
//! scale is ever corrected after the fact: each node is asked for a result at
//! an exact (level, scale), and every constant is encoded at the scale that
//! makes its product land there (a leaf asks for `S q_{l+1}` before its single
//! rescale; the quotient of a split asks for `S q_{l+1} / scale(T_{2^k})` so
//! that its product with the giant step rescales to `S`). The power basis
//! absorbs its own drift the same way (`T_{a+b} = 2 T_a T_b - T_{a-b}` subtracts
//! `T_{a-b}` re-encoded at the product's scale before the rescale). Additions
//! therefore never see mismatched scales, and the output is at the requested
//! scale to floating-point rounding.
//!
//! # Reference twin
//!
//! The algorithm is written once over a small (crate-private) `Backend` trait; the
//! homomorphic backend calls the [`Evaluator`], and a plaintext backend runs
//! the same sequence of operations on `f64` values (rounding constants exactly
//! as the encrypted path does). [`ChebyshevPoly::eval_bsgs_plain`] and
//! [`ChebyshevPoly::cost`] use it; [`ChebyshevPoly::eval_plain`] (Clenshaw)
//! is the independent reference.

use crate::ciphertext::Ciphertext;
use crate::error::{CkksError, Result};
use crate::evaluator::{Evaluator, SCALE_TOLERANCE};
use num_complex::Complex64;
use std::cell::Cell;
use std::collections::BTreeMap;

/// ceil(log2(n)) for n >= 1 (0 for n = 1).
fn ceil_log2(n: usize) -> usize {
    debug_assert!(n >= 1);
    (usize::BITS - (n - 1).leading_zeros()) as usize
}

fn invalid(msg: String) -> CkksError {
    CkksError::InvalidParameters(msg)
}

/// A real polynomial `sum_k coeffs[k] T_k(y)` on `[a, b]`, `y = (2x - a - b)/(b - a)`.
///
/// `coeffs[0]` is the constant term, not halved. The degree is `coeffs.len() - 1`
/// even when leading coefficients are zero (the depth follows the degree asked for).
#[derive(Clone, Debug, PartialEq)]
pub struct ChebyshevPoly {
    /// Lower end of the interval.
    pub a: f64,
    /// Upper end of the interval.
    pub b: f64,
    /// Coefficients in the Chebyshev basis of `[a, b]`, constant first.
    pub coeffs: Vec<f64>,
}

/// What a homomorphic evaluation costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalCost {
    /// Ciphertext-ciphertext multiplications (each a tensor and a relinearization).
    pub ct_mults: usize,
    /// Levels consumed (input level minus output level).
    pub depth: usize,
}

impl ChebyshevPoly {
    /// A polynomial from its coefficients (`a < b`, finite, at least one coefficient).
    pub fn new(a: f64, b: f64, coeffs: Vec<f64>) -> Result<Self> {
        if !(a.is_finite() && b.is_finite() && a < b) {
            return Err(invalid(format!(
                "Chebyshev interval [{a}, {b}] must be finite with a < b"
            )));
        }
        if coeffs.is_empty() || coeffs.iter().any(|c| !c.is_finite()) {
            return Err(invalid(
                "Chebyshev coefficients must be finite and non-empty".into(),
            ));
        }
        Ok(Self { a, b, coeffs })
    }

    /// Interpolates `f` at the `degree + 1` Chebyshev nodes of the first kind on `[a, b]`.
    ///
    /// `c_k = (2 - [k = 0]) / (d + 1) * sum_j f(x_j) T_k(y_j)`, `y_j = cos(pi (j + 1/2) / (d + 1))`:
    /// the interpolant agrees with `f` at the nodes and is within a factor ~2 + (2/pi) log d of
    /// the best uniform approximation of that degree.
    pub fn interpolate<F: Fn(f64) -> f64>(f: F, a: f64, b: f64, degree: usize) -> Result<Self> {
        if !(a.is_finite() && b.is_finite() && a < b) {
            return Err(invalid(format!(
                "Chebyshev interval [{a}, {b}] must be finite with a < b"
            )));
        }
        let n = degree + 1;
        let pi = std::f64::consts::PI;
        let values: Vec<f64> = (0..n)
            .map(|j| {
                let y = (pi * (j as f64 + 0.5) / n as f64).cos();
                f(0.5 * (b - a) * y + 0.5 * (a + b))
            })
            .collect();
        let coeffs = (0..n)
            .map(|k| {
                let s: f64 = values
                    .iter()
                    .enumerate()
                    .map(|(j, v)| v * (pi * k as f64 * (j as f64 + 0.5) / n as f64).cos())
                    .sum();
                s * if k == 0 { 1.0 } else { 2.0 } / n as f64
            })
            .collect();
        Self::new(a, b, coeffs)
    }

    /// The degree (number of coefficients minus one).
    pub fn degree(&self) -> usize {
        self.coeffs.len() - 1
    }

    /// The affine map `x -> alpha x + beta` onto `[-1, 1]`.
    pub fn affine(&self) -> (f64, f64) {
        let w = self.b - self.a;
        (2.0 / w, -(self.a + self.b) / w)
    }

    /// Whether the affine map costs a level (it does unless `b - a = 2`, a pure shift).
    pub fn affine_costs_level(&self) -> bool {
        self.affine().0 != 1.0
    }

    /// Levels the homomorphic evaluation consumes: `ceil(log2(degree + 1))`,
    /// plus one if [`Self::affine_costs_level`].
    pub fn depth(&self) -> usize {
        ceil_log2(self.degree() + 1) + usize::from(self.affine_costs_level() && self.degree() > 0)
    }

    /// p(x) by Clenshaw's recurrence (the plaintext reference).
    pub fn eval_plain(&self, x: f64) -> f64 {
        let (alpha, beta) = self.affine();
        let y = alpha * x + beta;
        let (mut b1, mut b2) = (0.0, 0.0);
        for &c in self.coeffs[1..].iter().rev() {
            let b0 = c + 2.0 * y * b1 - b2;
            b2 = b1;
            b1 = b0;
        }
        self.coeffs[0] + y * b1 - b2
    }

    /// p(x) by the exact sequence of operations the homomorphic evaluation
    /// performs (same splits, same power recurrences, constants rounded at the
    /// same scales), on plaintext values with a scale of 2^40 and primes of 2^40.
    pub fn eval_bsgs_plain(&self, x: f64) -> f64 {
        let sim = SimBackend::uniform(self.depth());
        let ct = SimCt {
            value: x,
            level: self.depth(),
            scale: sim.q(0),
        };
        match Circuit::new(&sim).polynomial(&ct, self, ct.scale) {
            Ok(out) => out.value,
            Err(e) => unreachable!("the plaintext twin has exactly the levels it needs: {e}"),
        }
    }

    /// The cost of the homomorphic evaluation (counted on the plaintext twin).
    pub fn cost(&self) -> EvalCost {
        let sim = SimBackend::uniform(self.depth());
        let ct = SimCt {
            value: 0.0,
            level: self.depth(),
            scale: sim.q(0),
        };
        let circuit = Circuit::new(&sim);
        match circuit.polynomial(&ct, self, ct.scale) {
            Ok(out) => EvalCost {
                ct_mults: circuit.mults.get(),
                depth: ct.level - out.level,
            },
            Err(e) => unreachable!("the plaintext twin has exactly the levels it needs: {e}"),
        }
    }
}

/// Chebyshev division by `T_n`: `p = q T_n + r`, `deg r < n`, for `n <= deg p < 2n`.
///
/// Uses `T_k = 2 T_{k-n} T_n - T_{2n-k}` for `n < k < 2n` (and `T_n = T_0 T_n`).
fn chebyshev_divide(coeffs: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let e = coeffs.len() - 1;
    debug_assert!(n <= e && e < 2 * n);
    let mut q = vec![0.0; e - n + 1];
    let mut r = coeffs[..n].to_vec();
    q[0] = coeffs[n];
    for k in n + 1..=e {
        q[k - n] += 2.0 * coeffs[k];
        r[2 * n - k] -= coeffs[k];
    }
    (q, r)
}

/// The logistic function 1 / (1 + e^-x).
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// SiLU: x * sigmoid(x).
pub fn silu(x: f64) -> f64 {
    x * sigmoid(x)
}

/// ReLU^2: max(x, 0)^2.
pub fn relu_squared(x: f64) -> f64 {
    let r = x.max(0.0);
    r * r
}

/// One Newton step for 1/sqrt(x): `y (3 - x y^2) / 2`, written as the encrypted
/// path computes it: `1.5 y + (-0.5 x y) y^2`.
pub fn newton_inv_sqrt_step(x: f64, y: f64) -> f64 {
    1.5 * y + (-0.5 * x * y) * (y * y)
}

/// Sigmoid interpolated on `[a, b]` at `degree`.
pub fn sigmoid_poly(a: f64, b: f64, degree: usize) -> Result<ChebyshevPoly> {
    ChebyshevPoly::interpolate(sigmoid, a, b, degree)
}

/// SiLU interpolated on `[a, b]` at `degree`.
pub fn silu_poly(a: f64, b: f64, degree: usize) -> Result<ChebyshevPoly> {
    ChebyshevPoly::interpolate(silu, a, b, degree)
}

/// ReLU^2 interpolated on `[a, b]` at `degree` (only C^1 at 0, so the error
/// falls like degree^-2 rather than geometrically).
pub fn relu_squared_poly(a: f64, b: f64, degree: usize) -> Result<ChebyshevPoly> {
    ChebyshevPoly::interpolate(relu_squared, a, b, degree)
}

/// 1/sqrt(x) on `[lo, hi]`: a Chebyshev first guess refined by Newton steps.
///
/// Each Newton step roughly squares the relative error (`e -> 1.5 e^2`) and
/// costs 2 levels and 3 ciphertext products (the input must still be one level
/// above the current guess, which holds since the guess costs at least one).
#[derive(Clone, Debug, PartialEq)]
pub struct InvSqrt {
    /// The first guess.
    pub guess: ChebyshevPoly,
    /// Number of Newton steps after the guess.
    pub newton_steps: usize,
}

impl InvSqrt {
    /// Interpolates 1/sqrt on `[lo, hi]` (`0 < lo < hi`) at `degree`, then `newton_steps` steps.
    pub fn new(lo: f64, hi: f64, degree: usize, newton_steps: usize) -> Result<Self> {
        if !(lo > 0.0 && lo < hi && hi.is_finite()) {
            return Err(invalid(format!(
                "inverse square root interval [{lo}, {hi}] must satisfy 0 < lo < hi"
            )));
        }
        if degree == 0 {
            return Err(invalid(
                "the inverse square root guess needs degree >= 1".into(),
            ));
        }
        Ok(Self {
            guess: ChebyshevPoly::interpolate(|x| 1.0 / x.sqrt(), lo, hi, degree)?,
            newton_steps,
        })
    }

    /// Levels consumed: the guess's depth plus 2 per Newton step.
    pub fn depth(&self) -> usize {
        self.guess.depth() + 2 * self.newton_steps
    }

    /// The plaintext twin: the guess (Clenshaw) then the same Newton steps.
    pub fn eval_plain(&self, x: f64) -> f64 {
        (0..self.newton_steps).fold(self.guess.eval_plain(x), |y, _| newton_inv_sqrt_step(x, y))
    }
}

/// Evaluates [`ChebyshevPoly`]s and [`InvSqrt`] on ciphertexts.
pub struct PolynomialEvaluator<'a> {
    eval: &'a Evaluator,
}

impl<'a> PolynomialEvaluator<'a> {
    /// Wraps an evaluator (it needs the relinearization key, no Galois keys).
    pub fn new(eval: &'a Evaluator) -> Self {
        Self { eval }
    }

    /// p(ct) slot-wise, at the input's scale, [`ChebyshevPoly::depth`] levels lower.
    ///
    /// The power basis squares its scale at every level: an input scale off
    /// the primes by f would grow as f^(2^k). A polynomial whose interval is
    /// not `[-1, 1]` (or a shift of it) brings the basis back onto the primes
    /// with the constant of its affine map, for free; one on `[-1, 1]` has no
    /// such constant and wants its input at about the prime of its level.
    pub fn evaluate(
        &self,
        ct: &Ciphertext,
        poly: &ChebyshevPoly,
    ) -> Result<(Ciphertext, EvalCost)> {
        self.evaluate_to_scale(ct, poly, ct.scale())
    }

    /// p(ct) slot-wise, landing on `target_scale` exactly.
    pub fn evaluate_to_scale(
        &self,
        ct: &Ciphertext,
        poly: &ChebyshevPoly,
        target_scale: f64,
    ) -> Result<(Ciphertext, EvalCost)> {
        let backend = HeBackend { eval: self.eval };
        let circuit = Circuit::new(&backend);
        let out = circuit.polynomial(ct, poly, target_scale)?;
        let cost = EvalCost {
            ct_mults: circuit.mults.get(),
            depth: ct.level() - out.level(),
        };
        Ok((out, cost))
    }

    /// 1/sqrt(ct) slot-wise at the input's scale, [`InvSqrt::depth`] levels lower.
    pub fn inv_sqrt(&self, ct: &Ciphertext, f: &InvSqrt) -> Result<(Ciphertext, EvalCost)> {
        let backend = HeBackend { eval: self.eval };
        let circuit = Circuit::new(&backend);
        let out = circuit.inv_sqrt(ct, f, ct.scale())?;
        let cost = EvalCost {
            ct_mults: circuit.mults.get(),
            depth: ct.level() - out.level(),
        };
        Ok((out, cost))
    }
}

/// The operations the circuits need, so that one algorithm drives both the
/// evaluator and its plaintext twin.
pub(crate) trait Backend {
    type Ct: Clone;
    fn level(&self, ct: &Self::Ct) -> usize;
    fn scale(&self, ct: &Self::Ct) -> f64;
    /// The prime q_level (what a rescale at `level` divides by).
    fn q(&self, level: usize) -> f64;
    fn drop_to_level(&self, ct: &Self::Ct, level: usize) -> Result<Self::Ct>;
    fn mul_relin(&self, a: &Self::Ct, b: &Self::Ct) -> Result<Self::Ct>;
    fn rescale(&self, ct: &Self::Ct) -> Result<Self::Ct>;
    /// `rescale(mul_relin(a, b))`: the same level and scale; a backend may
    /// fuse the two (one ModDown instead of a relinearization and a rescale).
    fn mul_relin_rescale(&self, a: &Self::Ct, b: &Self::Ct) -> Result<Self::Ct> {
        self.rescale(&self.mul_relin(a, b)?)
    }
    /// `rescale(2 a b - minus + constant)`, `minus` at the product's level
    /// and scale; a backend may fuse it (the additions on the tensor, one
    /// ModDown for relinearization and rescale).
    fn mul_twice_sub_rescale(
        &self,
        a: &Self::Ct,
        b: &Self::Ct,
        minus: Option<&Self::Ct>,
        constant: f64,
    ) -> Result<Self::Ct> {
        let mut p = self.mul_int(&self.mul_relin(a, b)?, 2)?;
        if let Some(m) = minus {
            p = self.sub(&p, m)?;
        }
        if constant != 0.0 {
            p = self.add_const(&p, constant)?;
        }
        self.rescale(&p)
    }
    fn mul_int(&self, ct: &Self::Ct, k: i64) -> Result<Self::Ct>;
    fn mul_const_scaled(&self, ct: &Self::Ct, c: f64, const_scale: f64) -> Result<Self::Ct>;
    fn add_const(&self, ct: &Self::Ct, c: f64) -> Result<Self::Ct>;
    fn add(&self, a: &Self::Ct, b: &Self::Ct) -> Result<Self::Ct>;
    fn sub(&self, a: &Self::Ct, b: &Self::Ct) -> Result<Self::Ct>;
    /// `sum_k c_k ct_k` at `level`, each constant encoded at its scale `s_k`
    /// (terms `(ct_k, c_k, s_k)`, not rescaled): by default term by term.
    fn mul_const_sum(&self, terms: &[(&Self::Ct, f64, f64)], level: usize) -> Result<Self::Ct> {
        let mut acc: Option<Self::Ct> = None;
        for &(ct, c, s) in terms {
            let term = self.mul_const_scaled(&self.drop_to_level(ct, level)?, c, s)?;
            acc = Some(match acc {
                None => term,
                Some(a) => self.add(&a, &term)?,
            });
        }
        acc.ok_or_else(|| invalid("an empty sum of terms".into()))
    }
}

/// The homomorphic backend.
struct HeBackend<'a> {
    eval: &'a Evaluator,
}

impl Backend for HeBackend<'_> {
    type Ct = Ciphertext;
    fn level(&self, ct: &Ciphertext) -> usize {
        ct.level()
    }
    fn scale(&self, ct: &Ciphertext) -> f64 {
        ct.scale()
    }
    fn q(&self, level: usize) -> f64 {
        self.eval.params().q()[level] as f64
    }
    fn drop_to_level(&self, ct: &Ciphertext, level: usize) -> Result<Ciphertext> {
        if ct.level() == level {
            return Ok(ct.clone());
        }
        self.eval.drop_to_level(ct, level)
    }
    fn mul_relin(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.eval.mul(a, b)
    }
    fn rescale(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        self.eval.rescale(ct)
    }
    fn mul_relin_rescale(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.eval.mul_rescale(a, b)
    }
    fn mul_twice_sub_rescale(
        &self,
        a: &Ciphertext,
        b: &Ciphertext,
        minus: Option<&Ciphertext>,
        constant: f64,
    ) -> Result<Ciphertext> {
        self.eval.mul_scaled_sub_rescale(a, b, 2, minus, constant)
    }
    fn mul_int(&self, ct: &Ciphertext, k: i64) -> Result<Ciphertext> {
        self.eval.mul_int(ct, k)
    }
    fn mul_const_scaled(&self, ct: &Ciphertext, c: f64, const_scale: f64) -> Result<Ciphertext> {
        self.eval
            .mul_const_scaled(ct, Complex64::new(c, 0.0), const_scale)
    }
    fn add_const(&self, ct: &Ciphertext, c: f64) -> Result<Ciphertext> {
        self.eval.add_const(ct, Complex64::new(c, 0.0))
    }
    fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.eval.add(a, b)
    }
    fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.eval.sub(a, b)
    }
    fn mul_const_sum(&self, terms: &[(&Ciphertext, f64, f64)], level: usize) -> Result<Ciphertext> {
        // One pass over the inputs' limbs instead of a copy, a product and a sum per term.
        self.eval.mul_const_sum(terms, level)
    }
}

/// A plaintext value with the level and scale its ciphertext would have.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SimCt {
    pub(crate) value: f64,
    pub(crate) level: usize,
    pub(crate) scale: f64,
}

/// The plaintext twin: the same bookkeeping and checks as the evaluator
/// (levels, exact scales, scale-mismatch refusals, constant rounding), no noise.
pub(crate) struct SimBackend {
    primes: Vec<f64>,
}

impl SimBackend {
    /// A chain of `levels + 1` primes all equal to 2^40.
    pub(crate) fn uniform(levels: usize) -> Self {
        Self {
            primes: vec![2f64.powi(40); levels + 1],
        }
    }

    fn check_scales(a: f64, b: f64) -> Result<()> {
        if ((a / b) - 1.0).abs() > SCALE_TOLERANCE {
            return Err(CkksError::ScaleMismatch {
                a: a.log2(),
                b: b.log2(),
            });
        }
        Ok(())
    }
}

impl Backend for SimBackend {
    type Ct = SimCt;
    fn level(&self, ct: &SimCt) -> usize {
        ct.level
    }
    fn scale(&self, ct: &SimCt) -> f64 {
        ct.scale
    }
    fn q(&self, level: usize) -> f64 {
        self.primes[level]
    }
    fn drop_to_level(&self, ct: &SimCt, level: usize) -> Result<SimCt> {
        if level > ct.level {
            return Err(CkksError::LevelTooLow {
                needed: level,
                level: ct.level,
            });
        }
        Ok(SimCt { level, ..*ct })
    }
    fn mul_relin(&self, a: &SimCt, b: &SimCt) -> Result<SimCt> {
        Ok(SimCt {
            value: a.value * b.value,
            level: a.level.min(b.level),
            scale: a.scale * b.scale,
        })
    }
    fn rescale(&self, ct: &SimCt) -> Result<SimCt> {
        if ct.level == 0 {
            return Err(CkksError::LevelTooLow {
                needed: 1,
                level: 0,
            });
        }
        Ok(SimCt {
            value: ct.value,
            level: ct.level - 1,
            scale: ct.scale / self.primes[ct.level],
        })
    }
    fn mul_int(&self, ct: &SimCt, k: i64) -> Result<SimCt> {
        Ok(SimCt {
            value: ct.value * k as f64,
            ..*ct
        })
    }
    fn mul_const_scaled(&self, ct: &SimCt, c: f64, const_scale: f64) -> Result<SimCt> {
        // The evaluator multiplies by the integer round(c * const_scale) and records scale * const_scale.
        Ok(SimCt {
            value: ct.value * (c * const_scale).round() / const_scale,
            level: ct.level,
            scale: ct.scale * const_scale,
        })
    }
    fn add_const(&self, ct: &SimCt, c: f64) -> Result<SimCt> {
        Ok(SimCt {
            value: ct.value + (c * ct.scale).round() / ct.scale,
            ..*ct
        })
    }
    fn add(&self, a: &SimCt, b: &SimCt) -> Result<SimCt> {
        Self::check_scales(a.scale, b.scale)?;
        Ok(SimCt {
            value: a.value + b.value,
            level: a.level.min(b.level),
            scale: a.scale,
        })
    }
    fn sub(&self, a: &SimCt, b: &SimCt) -> Result<SimCt> {
        Self::check_scales(a.scale, b.scale)?;
        Ok(SimCt {
            value: a.value - b.value,
            level: a.level.min(b.level),
            scale: a.scale,
        })
    }
}

/// One run of a circuit on a backend: the memoized Chebyshev power basis and a
/// count of ciphertext products.
pub(crate) struct Circuit<'b, B: Backend> {
    be: &'b B,
    pub(crate) mults: Cell<usize>,
}

/// The state of one polynomial evaluation: T_k(y) by k, the level of T_1, and
/// the baby-step bound 2^l.
struct PowerBasis<C> {
    powers: BTreeMap<usize, C>,
    top: usize,
    baby_max: usize,
}

impl<'b, B: Backend> Circuit<'b, B> {
    pub(crate) fn new(be: &'b B) -> Self {
        Self {
            be,
            mults: Cell::new(0),
        }
    }

    fn mul_relin(&self, a: &B::Ct, b: &B::Ct) -> Result<B::Ct> {
        self.mults.set(self.mults.get() + 1);
        self.be.mul_relin(a, b)
    }

    fn mul_relin_rescale(&self, a: &B::Ct, b: &B::Ct) -> Result<B::Ct> {
        self.mults.set(self.mults.get() + 1);
        self.be.mul_relin_rescale(a, b)
    }

    /// Makes sure T_i is in the basis, at depth ceil(log2 i) below T_1.
    fn ensure_power(&self, pb: &mut PowerBasis<B::Ct>, i: usize) -> Result<()> {
        if pb.powers.contains_key(&i) {
            return Ok(());
        }
        // i = a + b with a the largest power of two below i, so depth(T_i) = depth(T_a) + 1.
        let a = 1usize << (ceil_log2(i) - 1);
        let b = i - a;
        self.ensure_power(pb, a)?;
        self.ensure_power(pb, b)?;
        if a != b {
            self.ensure_power(pb, a - b)?;
        }
        let be = self.be;
        let (ta, tb) = (&pb.powers[&a], &pb.powers[&b]);
        // The product's level and scale, where the recurrence's other terms are added.
        let (level, scale) = (be.level(ta).min(be.level(tb)), be.scale(ta) * be.scale(tb));
        self.mults.set(self.mults.get() + 1);
        let power = if a == b {
            // T_2a = 2 T_a^2 - 1; the constant is added at the product's scale, before the rescale.
            be.mul_twice_sub_rescale(ta, tb, None, -1.0)?
        } else {
            // T_{a+b} = 2 T_a T_b - T_{a-b}, with T_{a-b} brought to the product's scale
            // by a constant 1 encoded at the ratio (no level: both share the rescale).
            let t = be.drop_to_level(&pb.powers[&(a - b)], level)?;
            let t = be.mul_const_scaled(&t, 1.0, scale / be.scale(&t))?;
            be.mul_twice_sub_rescale(ta, tb, Some(&t), 0.0)?
        };
        pb.powers.insert(i, power);
        Ok(())
    }

    /// `sum c_k T_k` at exactly (`level`, `scale`), one level below the powers it uses.
    fn leaf(
        &self,
        pb: &mut PowerBasis<B::Ct>,
        coeffs: &[f64],
        level: usize,
        scale: f64,
    ) -> Result<B::Ct> {
        let be = self.be;
        let at = level + 1;
        let pre_scale = scale * be.q(at);
        // The nonzero terms (and the last one if all are zero: a leaf is a ciphertext).
        let mut used: Vec<(usize, f64)> = Vec::new();
        for (k, &c) in coeffs.iter().enumerate().skip(1) {
            if c == 0.0 && !(used.is_empty() && k + 1 == coeffs.len()) {
                continue;
            }
            self.ensure_power(pb, k)?;
            used.push((k, c));
        }
        if used.is_empty() {
            return Err(invalid("a leaf needs degree >= 1".into()));
        }
        let terms: Vec<(&B::Ct, f64, f64)> = used
            .iter()
            .map(|&(k, c)| {
                let t = &pb.powers[&k];
                (t, c, pre_scale / be.scale(t))
            })
            .collect();
        let mut acc = be.mul_const_sum(&terms, at)?;
        if coeffs[0] != 0.0 {
            acc = be.add_const(&acc, coeffs[0])?;
        }
        be.rescale(&acc)
    }

    /// `sum c_k T_k` at exactly (`level`, `scale`); needs `ceil(log2(deg + 1))` levels below T_1.
    fn node(
        &self,
        pb: &mut PowerBasis<B::Ct>,
        coeffs: &[f64],
        level: usize,
        scale: f64,
    ) -> Result<B::Ct> {
        let be = self.be;
        let e = coeffs.len() - 1;
        let budget = pb.top - level;
        // A leaf costs the depth of its highest power plus one level for the constants.
        if e <= pb.baby_max && ceil_log2(e.max(1)) < budget {
            return self.leaf(pb, coeffs, level, scale);
        }
        let n = 1usize << (ceil_log2(e + 1) - 1);
        let (q, r) = chebyshev_divide(coeffs, n);
        self.ensure_power(pb, n)?;
        let giant_scale = be.scale(&pb.powers[&n]);
        let quotient = if q.len() == 1 {
            // A constant quotient is a plaintext product: no ciphertext multiplication.
            let t = be.drop_to_level(&pb.powers[&n], level + 1)?;
            be.rescale(&be.mul_const_scaled(&t, q[0], scale * be.q(level + 1) / giant_scale)?)?
        } else {
            // q is asked for the scale that makes q * T_n rescale exactly onto `scale`.
            let qc = self.node(pb, &q, level + 1, scale * be.q(level + 1) / giant_scale)?;
            self.mul_relin_rescale(&qc, &pb.powers[&n])?
        };
        let rc = self.node(pb, &r, level, scale)?;
        be.add(&quotient, &rc)
    }

    /// Brings x onto [-1, 1]: alpha x + beta (one level unless alpha = 1), keeping x's scale.
    fn to_unit(&self, x: &B::Ct, poly: &ChebyshevPoly) -> Result<B::Ct> {
        let be = self.be;
        let (alpha, beta) = poly.affine();
        let mut y = if alpha != 1.0 {
            // alpha encoded at q_top q_next / scale(x): after the rescale y sits
            // at q_next, the prime its square is divided by, so the power basis
            // keeps its scale whatever x's was. (Left at x's scale, a factor f
            // off the primes grows as f^(2^k) up the basis: 2^40 inputs recorded
            // at twice the scale lost 20 bits through a degree-31 SiLU.)
            let top = be.level(x);
            let cs = be.q(top) * be.q(top - 1) / be.scale(x);
            be.rescale(&be.mul_const_scaled(x, alpha, cs)?)?
        } else {
            x.clone()
        };
        if beta != 0.0 {
            y = be.add_const(&y, beta)?;
        }
        Ok(y)
    }

    /// p(x) at `target_scale`, [`ChebyshevPoly::depth`] levels below x.
    pub(crate) fn polynomial(
        &self,
        x: &B::Ct,
        poly: &ChebyshevPoly,
        target_scale: f64,
    ) -> Result<B::Ct> {
        let be = self.be;
        if !(target_scale.is_finite() && target_scale > 0.0) {
            return Err(invalid(format!("target scale {target_scale}")));
        }
        if poly.degree() == 0 {
            // A constant: multiply by zero to get a ciphertext at the target scale, then add.
            let z = be.mul_const_scaled(x, 0.0, target_scale / be.scale(x))?;
            return be.add_const(&z, poly.coeffs[0]);
        }
        let depth = poly.depth();
        if be.level(x) < depth {
            return Err(CkksError::LevelTooLow {
                needed: depth,
                level: be.level(x),
            });
        }
        let y = self.to_unit(x, poly)?;
        let top = be.level(&y);
        let out_level = be.level(x) - depth;
        let baby_max = 1usize << best_baby_log(&poly.coeffs);
        let mut pb = PowerBasis {
            powers: BTreeMap::from([(1, y)]),
            top,
            baby_max,
        };
        self.node(&mut pb, &poly.coeffs, out_level, target_scale)
    }

    /// One Newton step y <- 1.5 y + (-0.5 x y) y^2 for 1/sqrt(x): 2 levels, 3 products, y's scale kept.
    fn newton_inv_sqrt(&self, x: &B::Ct, y: &B::Ct) -> Result<B::Ct> {
        let be = self.be;
        let lam = be.level(y);
        if lam < 2 || be.level(x) < lam + 1 {
            return Err(CkksError::LevelTooLow {
                needed: lam.max(2) + 1,
                level: be.level(x).min(lam),
            });
        }
        let s = be.scale(y);
        let y2 = self.mul_relin_rescale(y, y)?;
        // -0.5 x at level lam with the scale that makes y2 * (-0.5 x y) land on s * q_{lam-1}.
        let b_scale = s * be.q(lam - 1) / be.scale(&y2);
        let xh_scale = b_scale * be.q(lam) / s;
        let xd = be.drop_to_level(x, lam + 1)?;
        let xh = be.rescale(&be.mul_const_scaled(
            &xd,
            -0.5,
            xh_scale * be.q(lam + 1) / be.scale(&xd),
        )?)?;
        let xy = self.mul_relin_rescale(&xh, y)?;
        let cube = self.mul_relin(&y2, &xy)?;
        let lin = be.drop_to_level(y, lam - 1)?;
        let lin = be.mul_const_scaled(&lin, 1.5, be.scale(&cube) / s)?;
        be.rescale(&be.add(&lin, &cube)?)
    }

    /// 1/sqrt(x) at `target_scale`: the guess, then the Newton steps.
    pub(crate) fn inv_sqrt(&self, x: &B::Ct, f: &InvSqrt, target_scale: f64) -> Result<B::Ct> {
        let mut y = self.polynomial(x, &f.guess, target_scale)?;
        for _ in 0..f.newton_steps {
            y = self.newton_inv_sqrt(x, &y)?;
        }
        Ok(y)
    }
}

/// The baby-step bound log2 that minimizes ciphertext products (ties: the smaller bound).
fn best_baby_log(coeffs: &[f64]) -> usize {
    let m = ceil_log2(coeffs.len());
    let poly = ChebyshevPoly {
        a: -1.0,
        b: 1.0,
        coeffs: coeffs.to_vec(),
    };
    let sim = SimBackend::uniform(m);
    (1..=m.max(1))
        .min_by_key(|&l| {
            let circuit = Circuit::new(&sim);
            let mut pb = PowerBasis {
                powers: BTreeMap::from([(
                    1,
                    SimCt {
                        value: 0.5,
                        level: m,
                        scale: sim.q(0),
                    },
                )]),
                top: m,
                baby_max: 1 << l,
            };
            match circuit.node(&mut pb, &poly.coeffs, 0, sim.q(0)) {
                Ok(_) => circuit.mults.get(),
                Err(_) => usize::MAX,
            }
        })
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    #[test]
    fn interpolation_reproduces_polynomials_and_converges() {
        // T_3 is reproduced exactly by a degree-5 interpolation.
        let p = ChebyshevPoly::interpolate(|x| 4.0 * x * x * x - 3.0 * x, -1.0, 1.0, 5).unwrap();
        for (k, c) in p.coeffs.iter().enumerate() {
            assert!(
                (c - if k == 3 { 1.0 } else { 0.0 }).abs() < 1e-14,
                "c_{k} = {c}"
            );
        }
        let p = ChebyshevPoly::interpolate(f64::exp, -2.0, 3.0, 20).unwrap();
        for i in 0..=100 {
            let x = -2.0 + 5.0 * i as f64 / 100.0;
            assert!((p.eval_plain(x) - x.exp()).abs() < 1e-11);
        }
    }

    #[test]
    fn bsgs_twin_matches_clenshaw_and_reported_cost() {
        let mut seed = 7;
        for degree in 1..=70 {
            let coeffs: Vec<f64> = (0..=degree)
                .map(|k| lcg(&mut seed) / (k as f64 + 1.0))
                .collect();
            for (a, b) in [(-1.0, 1.0), (-3.0, 5.0), (0.5, 2.5)] {
                let p = ChebyshevPoly::new(a, b, coeffs.clone()).unwrap();
                let cost = p.cost();
                assert_eq!(cost.depth, p.depth(), "degree {degree} on [{a}, {b}]");
                assert_eq!(p.depth(), ceil_log2(degree + 1) + usize::from(b - a != 2.0));
                for i in 0..=16 {
                    let x = a + (b - a) * i as f64 / 16.0;
                    let (want, got) = (p.eval_plain(x), p.eval_bsgs_plain(x));
                    assert!(
                        (want - got).abs() < 1e-9,
                        "degree {degree}, x = {x}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn division_identity() {
        let mut seed = 3;
        let coeffs: Vec<f64> = (0..=12).map(|_| lcg(&mut seed)).collect();
        let (q, r) = chebyshev_divide(&coeffs, 8);
        let (p, pq, pr) = (
            ChebyshevPoly::new(-1.0, 1.0, coeffs).unwrap(),
            ChebyshevPoly::new(-1.0, 1.0, q).unwrap(),
            ChebyshevPoly::new(-1.0, 1.0, r).unwrap(),
        );
        for i in 0..=20 {
            let y = -1.0 + i as f64 / 10.0;
            let t8 = (8.0 * y.acos()).cos();
            assert!((p.eval_plain(y) - (pq.eval_plain(y) * t8 + pr.eval_plain(y))).abs() < 1e-12);
        }
    }

    #[test]
    fn inv_sqrt_twin_converges() {
        let f = InvSqrt::new(1.0, 16.0, 7, 2).unwrap();
        for i in 0..=30 {
            let x = 1.0 + 15.0 * i as f64 / 30.0;
            assert!((f.eval_plain(x) * x.sqrt() - 1.0).abs() < 1e-4, "x = {x}");
        }
        let sim = SimBackend::uniform(f.depth() + 1);
        let circuit = Circuit::new(&sim);
        let x = SimCt {
            value: 9.0,
            level: f.depth() + 1,
            scale: sim.q(0),
        };
        let y = circuit.inv_sqrt(&x, &f, x.scale).unwrap();
        assert_eq!(x.level - y.level, f.depth());
        assert!((y.value - f.eval_plain(9.0)).abs() < 1e-9);
    }
}
