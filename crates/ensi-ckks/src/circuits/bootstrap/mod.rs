//! CKKS bootstrapping: refreshes a level-0 ciphertext to a high level.
//!
//! A circuit on top of the [`Evaluator`], [`polynomial`](crate::circuits::polynomial)
//! and [`lintrans`](crate::circuits::lintrans); the only engine-level steps
//! (the sparse secret, key switching between two secrets, ModRaise) are in
//! the private `raw` module beside it.
//!
//! # Pipeline
//!
//! For a ciphertext with `n = 2^log_slots` slots at scale `D` (any level; it is
//! first dropped to level 0):
//!
//! 1. **Sparse-secret encapsulation.** The level-0 ciphertext is switched from
//!    the dense secret `s` to an ephemeral sparse secret `s'` with exactly `h`
//!    nonzero coefficients in {-1, 1} (default `h = 32`).
//! 2. **ModRaise.** Its residues modulo `q_0` are read as centered integers
//!    modulo the whole chain: it now decrypts (under `s'`) to `t = D m + q_0 I`,
//!    with `I` an integer polynomial. It is switched back to `s` at the top level.
//! 3. **Sparse slots: trace.** For `n < N/2` the rotations by `n, 2n, ..., N/4`
//!    are summed: this keeps the coefficients of `X^(N/2n)`-multiples (times
//!    `N/2n`) and cancels the rest of `I`, so the polynomial lives in the subring
//!    that `n` slots see.
//! 4. **CoeffsToSlots** (`cts_levels` levels): the inverse special FFT, factored
//!    into butterfly groups ([`coeffs_to_slots`]), maps the slots to the coefficients
//!    `y = t / q_0 = I + D m / q_0` (complex: two coefficients per slot, in
//!    bit-reversed slot order), divided by `2 K'`. A conjugation splits real and
//!    imaginary parts into two ciphertexts holding `Re y / K'` and `Im y / K'`.
//!    **Sparse packing** (`2n <= N/2`): the last CtS group instead acts on the
//!    `n` slots viewed as `2n` (periodic, `[x, x]`) and outputs `[u, -i u]`, so
//!    that one conjugation gives `[Re y, Im y] / K'` in ONE ciphertext of `2n`
//!    real slots, and EvalMod runs once instead of twice (`n16-boot`, 2^9 slots:
//!    about 17 CPU seconds per bootstrap instead of 29).
//! 5. **EvalMod**: `sin(2 pi y) = cos(2 pi (y - 1/4))`. A Chebyshev
//!    interpolant of `cos(2 pi K' w / 2^r)` on `w = (y - 1/4) / K'` in `[-1, 1]`
//!    (degree `cosine_degree`, no level for the affine map since the interval is
//!    `[-1, 1]`), then `r` double-angle steps `c -> 2 c^2 - 1`. Since
//!    `sin(2 pi y) = 2 pi D m / q_0 + O((D m / q_0)^3)`, the result is the message
//!    coefficients times `2 pi D / q_0`. Optionally (`arcsine`, 2 levels) the
//!    cubic error is corrected with `x + x^3 / 6`.
//! 6. **SlotsToCoeffs** (`stc_levels` levels): the forward special FFT, factored
//!    the same way, after recombining the two halves as `re + i im` (with sparse
//!    packing the first StC group acts on the `2n` slots `[a, b]` and is
//!    followed by one rotation by `n`, which together give `n` slots of
//!    `M (a + i b)`: see `dft::widen_slots_to_coeffs`); the
//!    factor `q_0 / (2 pi D)` is folded into the recorded scale (free), and the
//!    result lands at the requested output scale exactly. With sparse packing,
//!    EvalMod lands lower than its working scale so that StC's plaintexts keep
//!    a large scale (`Bootstrapper::packed_cosine_scale`), and its output's
//!    conjugate is added to it (the slots are real) to halve the noise the `2n`
//!    slots carry into `a + i b`.
//!
//! The diagonals of sparse transforms are held compactly (`compact`: `4n`
//! words per prime instead of `N`): CoeffsToSlots is encoded once in
//! [`Bootstrapper::new`] (6.8 MiB for 2^9 slots at `n16-boot`), SlotsToCoeffs,
//! whose scales follow the input's, at every call (0.1-0.2 s, 117 MB instead of
//! 3.7 GB encoded the usual way). Full slots use the usual encoding, except
//! for SlotsToCoeffs groups whose diagonals repeat with a shorter period (the
//! first group, the FFT's butterflies of span below 2^8: every diagonal
//! repeats every 2^8 slots): those are encoded compactly from one period at
//! every call (`CompactTransform::encode_periodic`), the rest streamed.
//!
//! Levels: the output is at `max_level - cts_levels - (ceil(log2(degree + 1)) + r) - stc_levels`
//! ([`BootstrapConfig::output_level`]). Every EvalMod level must sit on a prime
//! of about the EvalMod scale (checked: its power basis squares the scale, so a
//! smaller prime would make it drift by tens of bits). On `n16-boot`'s chain
//! (25 levels: CtS 4 on 56-bit primes, EvalMod 8 on 60-bit, StC 3 and 10 more
//! on 40-bit) that fixes CtS at 4 levels; StC is free: with `stc_levels` 1, as
//! sparse slots afford, its two spare 40-bit primes become computation levels
//! and 12 are left instead of 10.
//!
//! # The bound K and the failure probability
//!
//! Decrypting under `s'` gives `c0 + c1 s' = t` over the integers with
//! `|c0|, |c1| <= q_0 / 2` coefficient-wise (centered residues), so every
//! coefficient satisfies `|y| = |t / q_0| <= (h + 1) / 2` **always**: with
//! `h = 32` the integer part `|I| <= 16`. EvalMod is accurate for
//! `y - 1/4` in `[-K', K']` with the default `K' = (h + 1) / 2 + 1/2 = 17`, so the
//! modular reduction cannot fail for any ciphertext, whatever the distribution
//! of its coefficients (failure probability 0, not merely negligible). A
//! smaller `K'` (a cheaper sine) is allowed; [`BootstrapConfig::failure_probability`]
//! then gives the union bound `2 n P(|S_h| > K' - 3/4)` over the `2n`
//! coefficients that the slots see, where `S_h`, a sum of `h` independent
//! uniform variables on `[-1/2, 1/2]` (the coefficients of `c1` are uniform
//! modulo `q_0`), follows the Irwin-Hall law, evaluated exactly.
//!
//! # Message-range contract
//!
//! The input slots must satisfy `|z_j| <= 1` and the input scale `D` must leave
//! `q_0 / D >= 2^min_log_message_ratio` (default `2^8`; the `n16-boot` preset
//! has `q_0 ~ 2^48`, so `D = 2^40` gives `2^8`): what matters is the size of
//! the integers `D z` against `q_0`. [`Bootstrapper::fit_range`] lets a caller
//! with `|z_j| <= B` scale into the interval (free when the recorded scale can
//! absorb `B`, otherwise one level); the slots then read `z / B`, and so does
//! the output. Inputs whose scale is too large are refused with a typed error.
//!
//! The sine's error is cubic in the message coefficients `u`: about
//! `(2 pi D |u| / q_0)^2 / 6` relative. With full slots `|u| ~ 1/sqrt(3n)` is tiny
//! and the noise of EvalMod (amplified by `q_0 / 2 pi D` and by `sqrt(n)` in
//! SlotsToCoeffs) dominates; with few slots `|u| ~ |z|` and the cubic term
//! dominates: use the `arcsine` correction, or a smaller input scale `D`.
//! The arcsine needs two more EvalMod-sized primes, which `insecure-boot-n11`
//! has and `n16-boot` does not (two more 60-bit primes would exceed the
//! 128-bit bound); there a smaller `D` is the remedy. Measured with one StC
//! level (real `|z| <= 1`, largest slot error): `insecure-boot-n12` 2^3 slots
//! 18 bits at `D = 2^40`, 26 at `2^36`, 27 at `2^34`; 2^9 slots 22.3 and
//! 24.7 bits at `2^40` and `2^36` (21.5 and 24.8 before sparse packing);
//! `n16-boot` 2^9 slots 22.5 and 23.0 bits (21.3 and 22.8 before).
//!
//! # Sparse-secret encapsulation: security
//!
//! The main secret `s` is uniform ternary and every key published under it is
//! counted in the parameter set's `log2(QP)` (checked against the 128-bit
//! bound at build time). The ephemeral sparse secret `s'` (weight `h`) appears
//! in exactly two published objects:
//! * the key `s -> s'`, an RLWE sample **under `s'`** over the two primes
//!   `q_0` and `p_0` only: a sparse-secret RLWE instance of dimension `N` and
//!   modulus `q_0 p_0` (about 2^108 for `n16-boot`; 128-bit security for a
//!   dense secret at N = 2^16 allows 2^1772, and at N = 2^12 already 2^109).
//!   This is the Bossuat-Troncoso-Pastoriza-Hubaux argument (ACNS 2022), also
//!   Lattigo's: the tiny modulus compensates for the sparse secret, whose
//!   weight h = 32 still leaves C(2^16, 32) 2^32 > 2^400 candidates. A run of
//!   the lattice estimator for these exact figures (hybrid and sparse-secret
//!   attacks) has not been done here and should be recorded before production use.
//! * the key `s' -> s`, an ordinary RLWE sample under the dense `s` with `s'` in
//!   the message, exactly like a rotation key.
//!
//! `s'` is drawn fresh at key generation and never leaves the key generator.

mod compact;
mod dft;
pub(crate) mod raw;

pub use dft::{coeffs_to_slots, slots_to_coeffs};

use crate::ciphertext::Ciphertext;
use crate::circuits::lintrans::{EncodedLinearTransform, LinearTransform, PreparedLinearTransform};
use crate::circuits::polynomial::{ChebyshevPoly, PolynomialEvaluator};
use crate::encoder::Encoder;
use crate::error::{CkksError, Result};
use crate::evaluator::Evaluator;
use crate::keys::{EvaluationKeys, GaloisKey, KeyGenerator, SecretKey, SwitchingKey};
use crate::params::Parameters;
use crate::sampling::Sampler;
use compact::{CompactEncoder, CompactTransform};
use num_complex::Complex64;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::f64::consts::PI;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn invalid(msg: String) -> CkksError {
    CkksError::InvalidParameters(msg)
}

/// How to bootstrap: slot count, level budget per phase, EvalMod shape.
#[derive(Clone, Debug, PartialEq)]
pub struct BootstrapConfig {
    /// log2 of the slot count of the ciphertexts to refresh (`< log_n`).
    pub log_slots: u32,
    /// Levels of CoeffsToSlots (the inverse FFT is split into this many groups).
    pub cts_levels: usize,
    /// Levels of SlotsToCoeffs.
    pub stc_levels: usize,
    /// Hamming weight `h` of the ephemeral sparse secret.
    pub sparse_weight: usize,
    /// `K'`: EvalMod is accurate for `y - 1/4` in `[-K', K']`.
    pub eval_mod_interval: f64,
    /// Number `r` of double-angle steps.
    pub double_angle: usize,
    /// Degree of the Chebyshev interpolant of the scaled cosine.
    pub cosine_degree: usize,
    /// log2 of the scale EvalMod works at: its primes must be within one bit of it.
    pub eval_mod_log_scale: u32,
    /// Smallest accepted log2(q_0 / input scale).
    pub min_log_message_ratio: f64,
    /// Corrects the sine's cubic error with `x + x^3 / 6` (arcsine to third
    /// order; 2 more levels, which the chain must provide at EvalMod's prime
    /// size, as `insecure-boot-n11` does). Worth it for few slots, whose
    /// coefficients are large (`|u| ~ |z|` for one slot), not for full slots
    /// (`|u| ~ 2^-8`).
    pub arcsine: bool,
}

impl BootstrapConfig {
    /// The default shape for `params` (built for the `*-boot` presets): full
    /// slots, CtS 4 / StC 3 levels from N = 2^14 up and on chains as long as
    /// `n16-boot`'s (`insecure-boot-n12`), 3 / 2 otherwise, `h = 32`, `K' = 17`
    /// (no failure), 2 double angles after a degree-63 cosine, EvalMod at 2^60.
    pub fn for_params(params: &Parameters) -> Self {
        // 25 = 4 + 8 + 3 + 10: the n16-boot flow (10 levels left) fits.
        let big = params.log_n() >= 14 || params.max_level() >= 25;
        let h = 32;
        Self {
            log_slots: params.log_slots(),
            cts_levels: if big { 4 } else { 3 },
            stc_levels: if big { 3 } else { 2 },
            sparse_weight: h,
            eval_mod_interval: (h as f64 + 1.0) / 2.0 + 0.5,
            double_angle: 2,
            cosine_degree: 63,
            eval_mod_log_scale: 60,
            min_log_message_ratio: 8.0,
            arcsine: false,
        }
    }

    /// The same with another slot count.
    pub fn with_log_slots(mut self, log_slots: u32) -> Self {
        self.log_slots = log_slots;
        self
    }

    /// The same with other level budgets for CoeffsToSlots and SlotsToCoeffs.
    /// Fewer SlotsToCoeffs levels leave more levels after bootstrapping (the
    /// spare primes become computation levels: `n16-boot` with `stc_levels` 1
    /// leaves 12) at the price of denser transforms (a group of `g` FFT stages
    /// has up to `2^(g + 1) - 1` diagonals): more rotations, keys and
    /// plaintexts. One StC level is the whole FFT, `2^log_slots` diagonals
    /// encoded at once at the StC level: for sparse slots they are held
    /// compactly (117 MB for 2^9 slots at `n16-boot`; 3.7 GB encoded as
    /// full plaintexts), for full slots as plaintexts.
    pub fn with_levels(mut self, cts_levels: usize, stc_levels: usize) -> Self {
        self.cts_levels = cts_levels;
        self.stc_levels = stc_levels;
        self
    }

    /// The same with the arcsine correction on or off.
    pub fn with_arcsine(mut self, on: bool) -> Self {
        self.arcsine = on;
        self
    }

    /// Levels EvalMod consumes: `ceil(log2(degree + 1)) + r` (+ 2 with the arcsine correction).
    pub fn eval_mod_depth(&self) -> usize {
        self.cosine_depth() + self.double_angle + if self.arcsine { 2 } else { 0 }
    }

    /// Levels of the cosine alone: `ceil(log2(degree + 1))`.
    fn cosine_depth(&self) -> usize {
        let d = self.cosine_degree + 1;
        (usize::BITS - (d - 1).leading_zeros()) as usize
    }

    /// Levels one bootstrap consumes from the top of the chain.
    pub fn depth(&self) -> usize {
        self.cts_levels + self.eval_mod_depth() + self.stc_levels
    }

    /// The level of the refreshed ciphertext.
    pub fn output_level(&self, params: &Parameters) -> Result<usize> {
        params.max_level().checked_sub(self.depth()).ok_or_else(|| {
            invalid(format!(
                "bootstrapping needs {} levels above level 0, the chain has {}",
                self.depth(),
                params.max_level()
            ))
        })
    }

    fn validate(&self, params: &Parameters) -> Result<()> {
        if self.log_slots >= params.log_n() {
            return Err(CkksError::InvalidSlots(self.log_slots));
        }
        if self.cts_levels == 0 || self.stc_levels == 0 {
            return Err(invalid("CtS and StC need at least one level each".into()));
        }
        if self.sparse_weight == 0 || self.sparse_weight > params.n() {
            return Err(invalid(format!(
                "sparse weight {} outside 1..={}",
                self.sparse_weight,
                params.n()
            )));
        }
        if !(self.eval_mod_interval.is_finite() && self.eval_mod_interval >= 1.0) {
            return Err(invalid(format!(
                "EvalMod interval {} must be >= 1",
                self.eval_mod_interval
            )));
        }
        if self.cosine_degree == 0 || self.double_angle > 8 {
            return Err(invalid(
                "EvalMod needs degree >= 1 and at most 8 double angles".into(),
            ));
        }
        if !(20..=61).contains(&self.eval_mod_log_scale) {
            return Err(invalid(format!(
                "EvalMod scale 2^{} outside 2^20..2^61",
                self.eval_mod_log_scale
            )));
        }
        self.output_level(params)?;
        // EvalMod's power basis squares its scale at every level (T_2k ~ T_k^2 / q):
        // a prime d bits off the EvalMod scale shifts T_32 by 32 d bits, and its
        // constants end up encoded at a scale below 1 (garbage, not an error).
        // So every EvalMod level, the arcsine's included, must sit on a prime of
        // that size: on n16-boot's chain, CoeffsToSlots must keep its 4 levels
        // and there is no room for the arcsine correction.
        let start = params.max_level() - self.cts_levels;
        let wanted = self.eval_mod_log_scale as f64;
        for level in (start + 1 - self.eval_mod_depth()..=start).rev() {
            let bits = (params.q()[level] as f64).log2();
            if (bits - wanted).abs() > 1.0 {
                return Err(invalid(format!(
                    "EvalMod at 2^{wanted} would rescale by q_{level} = 2^{bits:.1}: with \
                     {} CtS levels{} its {} levels need primes of about {wanted} bits \
                     from level {start} down",
                    self.cts_levels,
                    if self.arcsine {
                        " and the arcsine correction"
                    } else {
                        ""
                    },
                    self.eval_mod_depth()
                )));
            }
        }
        Ok(())
    }

    /// Upper bound on the probability that EvalMod's interval is exceeded in one
    /// bootstrap (0 when `K' >= (h + 1) / 2 + 1/4`: the bound is then worst-case).
    pub fn failure_probability(&self) -> f64 {
        let h = self.sparse_weight as f64;
        // |y| <= 1/2 + |S_h|; EvalMod covers y in [-K' + 1/4, K' + 1/4] => |S_h| <= K' - 3/4 suffices.
        let t = self.eval_mod_interval - 0.75;
        if t >= h / 2.0 {
            return 0.0;
        }
        let coefficients = 2.0 * (1u64 << self.log_slots) as f64;
        (coefficients * 2.0 * irwin_hall_cdf(self.sparse_weight, h / 2.0 - t)).min(1.0)
    }
}

/// CDF at `x` of the sum of `h` independent uniforms on [0, 1] (Irwin-Hall),
/// `(1/h!) sum_{k <= x} (-1)^k C(h, k) (x - k)^h`, evaluated in log space per term.
pub fn irwin_hall_cdf(h: usize, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= h as f64 {
        return 1.0;
    }
    let ln_fact = |m: usize| (1..=m).map(|i| (i as f64).ln()).sum::<f64>();
    let mut s = 0.0;
    let mut k = 0usize;
    while (k as f64) < x && k <= h {
        let ln_term =
            ln_fact(h) - ln_fact(k) - ln_fact(h - k) + h as f64 * (x - k as f64).ln() - ln_fact(h);
        let term = ln_term.exp();
        s += if k.is_multiple_of(2) { term } else { -term };
        k += 1;
    }
    s.clamp(0.0, 1.0)
}

/// Everything the server needs to bootstrap: relinearization, rotation and
/// conjugation keys, and the two keys of the sparse-secret encapsulation.
#[derive(Clone, Debug)]
pub struct BootstrapKeys {
    /// Relinearization key and the Galois keys of CtS, StC, the trace and
    /// conjugation, each truncated to the highest level bootstrapping uses it
    /// at (the relinearization key reaches the level right after
    /// CoeffsToSlots, above any level a bootstrapped ciphertext can be at).
    pub eval: EvaluationKeys,
    /// Dense `s` -> sparse `s'`, nonzero modulo `q_0 P` only.
    pub to_sparse: SwitchingKey,
    /// Sparse `s'` -> dense `s`, over the whole chain.
    pub to_dense: SwitchingKey,
}

impl BootstrapKeys {
    /// Generates the keys for `config` (a fresh sparse secret is drawn and dropped).
    /// `extra_rotations` are added to the Galois keys (for the caller's own circuits), whole.
    pub fn generate(
        params: &Parameters,
        config: &BootstrapConfig,
        sk: &SecretKey,
        extra_rotations: &[i64],
    ) -> Result<Self> {
        Self::generate_with_extra_at(params, config, sk, extra_rotations, None)
    }

    /// [`Self::generate`] with the caller's rotation keys truncated to
    /// `extra_level` (the highest level the caller rotates at; None: whole),
    /// or to bootstrapping's own level for the step where that is higher.
    ///
    /// Every key is truncated as soon as it is made, the keys made in
    /// parallel: the peak memory is the keys' final size plus one whole key
    /// per thread (a whole key at `n16-boot` is 107 MB; making them all
    /// first would hold 14 GB for the full-slot configuration).
    pub fn generate_with_extra_at(
        params: &Parameters,
        config: &BootstrapConfig,
        sk: &SecretKey,
        extra_rotations: &[i64],
        extra_level: Option<usize>,
    ) -> Result<Self> {
        Self::generate_for(params, &[config], sk, extra_rotations, extra_level)
    }

    /// [`Self::generate_with_extra_at`] for bootstrapping at several slot
    /// counts with one set of keys (see [`Bootstrapper::sibling`]): the
    /// union of their rotations, each at the highest level any uses it. The
    /// configurations must share the sparse secret's weight.
    pub fn generate_for(
        params: &Parameters,
        configs: &[&BootstrapConfig],
        sk: &SecretKey,
        extra_rotations: &[i64],
        extra_level: Option<usize>,
    ) -> Result<Self> {
        let config = *configs
            .first()
            .ok_or_else(|| invalid("no bootstrapping configuration".into()))?;
        for c in configs {
            c.validate(params)?;
            if c.sparse_weight != config.sparse_weight {
                return Err(invalid(format!(
                    "sparse secret weights {} and {} in one key set",
                    c.sparse_weight, config.sparse_weight
                )));
            }
        }
        if sk.params != *params {
            return Err(CkksError::ParametersMismatch);
        }
        if extra_level.is_some_and(|l| l > params.max_level()) {
            return Err(invalid(format!("key level {extra_level:?}")));
        }
        let ring = params.ring();
        // The highest level each Galois element is used at. A rotation key
        // needs only the limbs (and digits) of that level: SlotsToCoeffs runs
        // near the bottom of the chain, so its own keys shrink to less than half.
        let mut levels: BTreeMap<u64, (i64, usize)> = BTreeMap::new();
        let mut note = |step: i64, level: usize| {
            let k = ring.galois_element_for_rotation(step);
            if k != 1 {
                let e = levels.entry(k).or_insert((step, level));
                e.1 = e.1.max(level);
            }
        };
        for c in configs {
            for (step, level) in rotation_levels(params, c)? {
                note(step, level);
            }
        }
        for &step in extra_rotations {
            note(step, extra_level.unwrap_or(params.max_level()));
        }
        let galois: Vec<GaloisKey> = levels
            .into_values()
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|(step, level)| {
                let mut key = KeyGenerator::new(params).gen_rotation_key(sk, step);
                key.truncate_to_level(params, level);
                key
            })
            .collect();
        let mut kg = KeyGenerator::new(params);
        let mut eval = EvaluationKeys {
            relin: Some(kg.gen_relin_key(sk)),
            galois: BTreeMap::new(),
        };
        for key in galois {
            eval.insert_galois(key);
        }
        // The conjugation and the relinearizations of EvalMod happen after
        // CoeffsToSlots; everything after bootstrapping runs lower still.
        let after_cts = configs
            .iter()
            .map(|c| params.max_level() - c.cts_levels)
            .max()
            .unwrap_or(params.max_level());
        let mut conj = kg.gen_conjugation_key(sk);
        conj.truncate_to_level(params, after_cts);
        eval.insert_galois(conj);
        if let Some(relin) = eval.relin.as_mut() {
            relin.truncate_to_level(params, after_cts);
        }
        let mut sampler = Sampler::from_os();
        let sparse = raw::sparse_ternary(params.n(), config.sparse_weight);
        let s_sparse = raw::secret_poly(params, &sparse);
        let to_sparse = raw::gen_encapsulation_key(params, &mut sampler, &sparse, sk)?;
        let to_dense = raw::gen_switching_key_between(
            params,
            &mut sampler,
            &sk.poly,
            &s_sparse,
            params.q_count(),
        );
        Ok(Self {
            eval,
            to_sparse,
            to_dense,
        })
    }

    /// Bytes of raw residues held by all the keys.
    pub fn byte_size(&self) -> usize {
        let galois: usize = self.eval.galois.values().map(|g| g.key.byte_size()).sum();
        galois
            + self.eval.relin.as_ref().map_or(0, |r| r.0.byte_size())
            + self.to_sparse.byte_size()
            + self.to_dense.byte_size()
    }
}

/// The rotation steps bootstrapping uses for `config` (CtS, StC, trace).
pub fn rotation_steps(params: &Parameters, config: &BootstrapConfig) -> Result<Vec<i64>> {
    let mut set = BTreeSet::new();
    let (cts, stc) = transforms(params, config)?;
    for lt in cts.iter().chain(&stc) {
        set.extend(lt.rotation_steps());
    }
    set.extend(trace_steps(config.log_slots, params.n() / 2));
    if packs_real_imag(params, config) {
        // The recombination after the first StC group (a trace step already).
        set.insert(1i64 << config.log_slots);
    }
    Ok(set.into_iter().collect())
}

/// Whether real and imaginary parts share one EvalMod: with `2n <= N / 2`
/// the `n` slots viewed as `2n` leave room for both (sparse packing).
fn packs_real_imag(params: &Parameters, config: &BootstrapConfig) -> bool {
    config.log_slots + 2 <= params.log_n()
}

/// The CoeffsToSlots and SlotsToCoeffs groups, in order. With sparse packing
/// the last CtS group and the first StC group act on `2n` slots
/// ([`dft::widen_coeffs_to_slots`], [`dft::widen_slots_to_coeffs`]).
fn transforms(
    params: &Parameters,
    config: &BootstrapConfig,
) -> Result<(Vec<LinearTransform>, Vec<LinearTransform>)> {
    let mut cts = coeffs_to_slots(config.log_slots, config.cts_levels)?;
    let mut stc = slots_to_coeffs(config.log_slots, config.stc_levels)?;
    if packs_real_imag(params, config) {
        if let Some(last) = cts.last_mut() {
            *last = dft::widen_coeffs_to_slots(last)?;
        }
        if let Some(first) = stc.first_mut() {
            *first = dft::widen_slots_to_coeffs(first)?;
        }
    }
    Ok((cts, stc))
}

/// The highest level each bootstrapping rotation is used at: the trace at the
/// top, CoeffsToSlots group g at `max_level - g`, SlotsToCoeffs group g at
/// its input level minus g.
fn rotation_levels(params: &Parameters, config: &BootstrapConfig) -> Result<BTreeMap<i64, usize>> {
    let top = params.max_level();
    let mut levels: BTreeMap<i64, usize> = BTreeMap::new();
    let mut note = |step: i64, level: usize| {
        let e = levels.entry(step).or_insert(level);
        *e = (*e).max(level);
    };
    for step in trace_steps(config.log_slots, params.n() / 2) {
        note(step, top);
    }
    let (cts, stc) = transforms(params, config)?;
    for (g, lt) in cts.iter().enumerate() {
        lt.rotation_steps()
            .into_iter()
            .for_each(|s| note(s, top - g));
    }
    let stc_input = config.output_level(params)? + config.stc_levels;
    if packs_real_imag(params, config) {
        note(1i64 << config.log_slots, stc_input - 1);
    }
    for (g, lt) in stc.iter().enumerate() {
        lt.rotation_steps()
            .into_iter()
            .for_each(|s| note(s, stc_input - g));
    }
    Ok(levels)
}

/// The scale CoeffsToSlots' input is recorded at, so that it outputs
/// `y / (2 K')`, `y = t / q_0` (the trace multiplied the slots by `gap = N / 2n`).
fn cts_input_scale(params: &Parameters, config: &BootstrapConfig, gap: usize) -> f64 {
    params.q()[0] as f64 * gap as f64 * 2.0 * config.eval_mod_interval
}

/// Rotations by `n 2^i` up to (excluding) `half`: the trace onto `n` slots.
fn trace_steps(log_slots: u32, half: usize) -> Vec<i64> {
    let mut v = Vec::new();
    let mut step = 1usize << log_slots;
    while step < half {
        v.push(step as i64);
        step *= 2;
    }
    v
}

/// With sparse packing, SlotsToCoeffs' input scale sits this many bits above
/// the scale that balances it against its plaintexts' scale (see
/// `Bootstrapper::packed_cosine_scale`). Measured with one StC level: at
/// `insecure-boot-n12` (2^9 and 2^10 slots) the precision is flat from 4 to
/// 10 bits and drops below; at `n16-boot` (2^9 slots, D = 2^40 and 2^36) 8
/// beats 5, 11 and 14 by 0.1 to 1 bit (14 is about where EvalMod lands
/// without this adjustment).
const STC_INPUT_HEADROOM_BITS: f64 = 8.0;

/// Where the time of one bootstrap went ([`Bootstrapper::bootstrap_timed`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BootstrapTimings {
    /// Level-0 drop, the two secret switches, ModRaise and the trace.
    pub mod_raise: Duration,
    /// CoeffsToSlots with the real / imaginary split (encoding included).
    pub coeffs_to_slots: Duration,
    /// EvalMod.
    pub eval_mod: Duration,
    /// SlotsToCoeffs with the recombination (encoding included).
    pub slots_to_coeffs: Duration,
    /// Of CoeffsToSlots and SlotsToCoeffs: encoding their diagonals.
    pub encoding: Duration,
}

impl BootstrapTimings {
    /// The whole bootstrap.
    pub fn total(&self) -> Duration {
        self.mod_raise + self.coeffs_to_slots + self.eval_mod + self.slots_to_coeffs
    }
}

/// The time since `*t`, which moves to now.
fn lap(t: &mut Instant) -> Duration {
    let now = Instant::now();
    let d = now - *t;
    *t = now;
    d
}

/// Refreshes ciphertexts: see the module documentation for the pipeline.
pub struct Bootstrapper {
    params: Parameters,
    config: BootstrapConfig,
    eval: Evaluator,
    encoder: Encoder,
    stc: Vec<LinearTransform>,
    /// Real and imaginary parts in one `2n`-slot ciphertext for EvalMod (see [`transforms`]).
    packed: bool,
    /// With sparse packing: compact encodings of the diagonals (see [`compact`]).
    compact: Option<CompactEncoder>,
    /// With sparse packing: CoeffsToSlots encoded once (its levels and scales
    /// do not depend on the input), compactly.
    cts_encoded: Vec<CompactTransform>,
    /// Full slots: CoeffsToSlots encoded once (its levels and scales do not
    /// depend on the input; 1.1 GiB at `n16-boot`, as OpenFHE's bootstrapping
    /// setup also precomputes), SlotsToCoeffs' diagonals through the inverse
    /// FFT once (encoding them per call is then the scaling and the NTTs).
    cts_full: Vec<EncodedLinearTransform>,
    /// None for the groups encoded compactly (`stc_periodic`).
    stc_prepared: Vec<Option<PreparedLinearTransform>>,
    /// Full slots: the SlotsToCoeffs groups whose diagonals repeat with a
    /// shorter period (log2 of it; the first group, the FFT's short
    /// butterflies), encoded compactly from one period at every call instead of
    /// streamed, and the encoder for those periods.
    stc_periodic: Vec<Option<u32>>,
    periodic_encoder: Option<CompactEncoder>,
    cosine: ChebyshevPoly,
    to_sparse: SwitchingKey,
    to_dense: SwitchingKey,
    output_scale: f64,
}

impl Bootstrapper {
    /// A bootstrapper for `config` with the keys from [`BootstrapKeys::generate`].
    /// The output scale is the parameters' default scale.
    pub fn new(params: &Parameters, config: BootstrapConfig, keys: BootstrapKeys) -> Result<Self> {
        config.validate(params)?;
        let n = params.n();
        let two_primes = |p: &crate::ring::RnsPoly| {
            p.q_limbs() == 1 && p.p_limbs() == 1 && p.as_words().len() == 2 * n
        };
        if keys.to_sparse.b.len() != 1
            || keys.to_sparse.a.len() != 1
            || !two_primes(&keys.to_sparse.b[0])
            || !two_primes(&keys.to_sparse.a[0])
        {
            return Err(CkksError::ParametersMismatch);
        }
        for key in [&keys.to_dense] {
            if key.b.is_empty()
                || key.b.len() != key.a.len()
                || key.b.iter().chain(&key.a).any(|p| {
                    p.q_limbs() != params.q_count()
                        || p.p_limbs() != params.p_count()
                        || p.as_words().len() != p.limbs() * n
                })
            {
                return Err(CkksError::ParametersMismatch);
            }
        }
        if keys.to_dense.b.len() < params.dnum() {
            return Err(CkksError::ParametersMismatch);
        }
        let eval = Evaluator::new(params, Arc::new(keys.eval));
        Self::build(params, config, eval, keys.to_sparse, keys.to_dense)
    }

    /// A bootstrapper for another configuration (another slot count) over
    /// the same evaluation keys, shared, not copied (only the two
    /// secret-switching keys are, about 0.1 GB at `n16-boot`): the keys must
    /// hold its rotations ([`BootstrapKeys::generate_for`] with both
    /// configurations), else [`CkksError::MissingGaloisKey`].
    pub fn sibling(&self, config: BootstrapConfig) -> Result<Self> {
        config.validate(&self.params)?;
        if config.sparse_weight != self.config.sparse_weight {
            return Err(invalid(format!(
                "sparse secret weight {} for keys of weight {}",
                config.sparse_weight, self.config.sparse_weight
            )));
        }
        let ring = self.params.ring();
        let galois = &self.eval.keys().galois;
        for step in rotation_levels(&self.params, &config)?.into_keys() {
            let k = ring.galois_element_for_rotation(step);
            if k != 1 && !galois.contains_key(&k) {
                return Err(CkksError::MissingGaloisKey(k));
            }
        }
        let eval = Evaluator::new(&self.params, self.eval.shared_keys());
        Self::build(
            &self.params,
            config,
            eval,
            self.to_sparse.clone(),
            self.to_dense.clone(),
        )
    }

    fn build(
        params: &Parameters,
        config: BootstrapConfig,
        eval: Evaluator,
        to_sparse: SwitchingKey,
        to_dense: SwitchingKey,
    ) -> Result<Self> {
        let k = config.eval_mod_interval;
        let r = config.double_angle as i32;
        let omega = 2.0 * PI * k / 2f64.powi(r);
        let cosine =
            ChebyshevPoly::interpolate(|w| (omega * w).cos(), -1.0, 1.0, config.cosine_degree)?;
        let (cts, stc) = transforms(params, &config)?;
        let packed = packs_real_imag(params, &config);
        let (compact, cts_encoded) = if packed {
            let encoder = CompactEncoder::new(params, &[config.log_slots, config.log_slots + 1]);
            let gap = (params.n() / 2) >> config.log_slots;
            let em_scale = (config.eval_mod_log_scale as f64).exp2();
            let mut scale = cts_input_scale(params, &config, gap);
            let mut encoded = Vec::with_capacity(cts.len());
            for (g, lt) in cts.iter().enumerate() {
                let level = params.max_level() - g;
                encoded.push(CompactTransform::encode(
                    lt, &encoder, level, scale, em_scale,
                )?);
                scale = em_scale;
            }
            (Some(encoder), encoded)
        } else {
            (None, Vec::new())
        };
        let encoder = Encoder::new(params);
        let stc_periodic: Vec<Option<u32>> = stc
            .iter()
            .map(|lt| {
                let p = compact::diagonal_period_log(lt);
                (!packed && p < lt.log_slots()).then_some(p)
            })
            .collect();
        let periods: Vec<u32> = stc_periodic.iter().flatten().copied().collect();
        let periodic_encoder = (!periods.is_empty()).then(|| CompactEncoder::new(params, &periods));
        let stc_prepared: Vec<Option<PreparedLinearTransform>> = if packed {
            Vec::new()
        } else {
            stc.iter()
                .zip(&stc_periodic)
                .map(|(lt, p)| p.is_none().then(|| lt.prepare(&encoder)).transpose())
                .collect::<Result<_>>()?
        };
        let mut cts_full = Vec::new();
        if !packed {
            let em_scale = (config.eval_mod_log_scale as f64).exp2();
            let gap = (params.n() / 2) >> config.log_slots;
            let mut scale = cts_input_scale(params, &config, gap);
            for (g, lt) in cts.iter().enumerate() {
                let level = params.max_level() - g;
                cts_full.push(lt.encode(&encoder, level, scale, em_scale)?);
                scale = em_scale;
            }
        }
        Ok(Self {
            cts_full,
            stc_prepared,
            stc_periodic,
            periodic_encoder,
            stc,
            packed,
            compact,
            cts_encoded,
            eval,
            encoder,
            params: params.clone(),
            output_scale: params.default_scale(),
            to_sparse,
            to_dense,
            cosine,
            config,
        })
    }

    /// The evaluator (it holds the relinearization and rotation keys, usable for other circuits).
    pub fn evaluator(&self) -> &Evaluator {
        &self.eval
    }

    /// Bytes of the linear transforms' diagonals held by the bootstrapper
    /// (sparse packing: CoeffsToSlots encoded, compactly; SlotsToCoeffs, whose
    /// scale follows the input's, is encoded at every call, compactly too.
    /// Full slots: CoeffsToSlots encoded, SlotsToCoeffs through the inverse
    /// FFT and encoded at every call).
    pub fn encoded_bytes(&self) -> usize {
        let prepared: usize = self
            .stc_prepared
            .iter()
            .flatten()
            .map(PreparedLinearTransform::byte_size)
            .chain(self.cts_full.iter().map(EncodedLinearTransform::byte_size))
            .sum();
        prepared
            + self
                .cts_encoded
                .iter()
                .map(CompactTransform::byte_size)
                .sum::<usize>()
    }

    /// The configuration.
    pub fn config(&self) -> &BootstrapConfig {
        &self.config
    }

    /// The level of every refreshed ciphertext.
    pub fn output_level(&self) -> usize {
        self.params.max_level() - self.config.depth()
    }

    /// The scale of every refreshed ciphertext.
    pub fn output_scale(&self) -> f64 {
        self.output_scale
    }

    /// Sets the scale of refreshed ciphertexts.
    pub fn set_output_scale(&mut self, scale: f64) -> Result<()> {
        if !(scale.is_finite() && scale >= 2f64.powi(20)) {
            return Err(invalid(format!("output scale {scale}")));
        }
        self.output_scale = scale;
        Ok(())
    }

    /// The largest input scale accepted: `q_0 / 2^min_log_message_ratio`.
    pub fn max_input_scale(&self) -> f64 {
        self.params.q()[0] as f64 / self.config.min_log_message_ratio.exp2()
    }

    /// Brings a ciphertext whose slots satisfy `|z_j| <= bound` into the input
    /// range; afterwards it reads `z / bound` (and so does the bootstrapped output).
    ///
    /// Free when `bound * scale` is at most [`Self::max_input_scale`]: only the
    /// recorded scale changes (the integers `scale z` are the same). Otherwise
    /// the slots are multiplied by `1 / bound` at the cost of one level.
    pub fn fit_range(&self, ct: &Ciphertext, bound: f64) -> Result<Ciphertext> {
        if !(bound.is_finite() && bound > 0.0) {
            return Err(invalid(format!("range bound {bound}")));
        }
        if ct.scale() * bound <= self.max_input_scale() {
            let mut out = ct.clone();
            out.scale *= bound;
            return Ok(out);
        }
        self.eval.mul_const(ct, Complex64::new(1.0 / bound, 0.0))
    }

    /// Refreshes `ct` (slots `|z_j| <= 1`, scale at most [`Self::max_input_scale`],
    /// any level): the result holds the same slots at [`Self::output_level`] and
    /// [`Self::output_scale`].
    pub fn bootstrap(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        self.bootstrap_to_scale(ct, self.output_scale)
    }

    /// [`Self::bootstrap`], with the wall time of each phase.
    pub fn bootstrap_timed(&self, ct: &Ciphertext) -> Result<(Ciphertext, BootstrapTimings)> {
        let mut timings = BootstrapTimings::default();
        let out = self.bootstrap_inner(ct, self.output_scale, &mut timings)?;
        Ok((out, timings))
    }

    /// Refreshes two ciphertexts of real slots in one bootstrap (packed as `a + i b`).
    /// Both must have the same scale; the outputs hold the real parts of their slots.
    pub fn bootstrap_real_pair(
        &self,
        a: &Ciphertext,
        b: &Ciphertext,
    ) -> Result<(Ciphertext, Ciphertext)> {
        let a0 = self.eval.drop_to_level(a, 0)?;
        let b0 = self.eval.drop_to_level(b, 0)?;
        let ib = self
            .eval
            .mul_const_scaled(&b0, Complex64::new(0.0, 1.0), 1.0)?;
        let packed = self.eval.add(&a0, &ib)?;
        // (z + conj z) reads 2 Re z: land at half the scale, then record twice it.
        let out = self.bootstrap_to_scale(&packed, self.output_scale / 2.0)?;
        let conj = self.eval.conjugate(&out)?;
        let mut re = self.eval.add(&out, &conj)?;
        let diff = self.eval.sub(&out, &conj)?;
        let mut im = self
            .eval
            .mul_const_scaled(&diff, Complex64::new(0.0, -1.0), 1.0)?;
        re.scale = self.output_scale;
        im.scale = self.output_scale;
        Ok((re, im))
    }

    fn bootstrap_to_scale(&self, ct: &Ciphertext, output_scale: f64) -> Result<Ciphertext> {
        self.bootstrap_inner(ct, output_scale, &mut BootstrapTimings::default())
    }

    /// Encodes `lt` for `ct` giant step by giant step as it evaluates it,
    /// counting the encoding time apart.
    fn apply(
        &self,
        lt: &PreparedLinearTransform,
        ct: &Ciphertext,
        output_scale: f64,
        encoding: &mut Duration,
    ) -> Result<Ciphertext> {
        let (out, t) = lt.evaluate_streaming(&self.eval, &self.encoder, ct, output_scale)?;
        *encoding += t;
        Ok(out)
    }

    fn bootstrap_inner(
        &self,
        ct: &Ciphertext,
        output_scale: f64,
        timings: &mut BootstrapTimings,
    ) -> Result<Ciphertext> {
        let eval = &self.eval;
        let cfg = &self.config;
        if ct.log_slots() != cfg.log_slots {
            return Err(CkksError::SlotMismatch {
                a: ct.log_slots(),
                b: cfg.log_slots,
            });
        }
        let q0 = self.params.q()[0] as f64;
        let input_scale = ct.scale();
        if !(input_scale.is_finite() && input_scale > 0.0) || input_scale > self.max_input_scale() {
            return Err(CkksError::Encoding(format!(
                "bootstrapping input scale 2^{:.2} exceeds q_0 / 2^{} = 2^{:.2}: \
                 record a larger scale with Bootstrapper::fit_range or lower the scale",
                input_scale.log2(),
                cfg.min_log_message_ratio,
                self.max_input_scale().log2()
            )));
        }
        // 1-2: dense -> sparse at level 0, ModRaise, sparse -> dense at the top.
        let start = Instant::now();
        let ct = eval.drop_to_level(ct, 0)?;
        let ct = raw::switch_level0(&self.params, &ct, &self.to_sparse)?;
        let ct = raw::mod_raise(&self.params, &ct)?;
        let mut ct = raw::switch_secret(&self.params, &ct, &self.to_dense)?;
        // 3: trace onto the subring of n slots.
        let half = self.params.n() / 2;
        let gap = half >> cfg.log_slots;
        for step in trace_steps(cfg.log_slots, half) {
            let rot = eval.rotate(&ct, step)?;
            eval.add_assign(&mut ct, &rot)?;
        }
        let mut t = Instant::now();
        timings.mod_raise = t - start;
        // 4: CoeffsToSlots to y / (2K'), y = t / q_0.
        ct.scale = cts_input_scale(&self.params, cfg, gap);
        let em_scale = (cfg.eval_mod_log_scale as f64).exp2();
        if self.packed {
            let last = self.cts_encoded.len() - 1;
            for (g, lt) in self.cts_encoded.iter().enumerate() {
                if g == last {
                    // n slots read with 2n are periodic, [x, x]: the widened
                    // group outputs [u, -i u].
                    ct.set_log_slots(cfg.log_slots + 1);
                }
                ct = lt.evaluate(eval, &ct)?;
            }
        } else {
            for lt in &self.cts_full {
                ct = lt.evaluate(eval, &ct)?;
            }
        }
        let conj = eval.conjugate(&ct)?;
        let mut ct = if self.packed {
            // [u, -i u] + conj = [2 Re u, 2 Im u] = [Re y, Im y] / K'; one EvalMod for both.
            let split = eval.add(&ct, &conj)?;
            timings.coeffs_to_slots = lap(&mut t);
            let ratio = 2.0 * PI * input_scale / q0;
            let cos_scale = self.packed_cosine_scale(ratio, output_scale).min(em_scale);
            let c = self.eval_mod(&split, cos_scale)?;
            // The slots are real: c + conj(c) (twice them, recorded at twice the
            // scale) drops the imaginary half of EvalMod's noise, which the 2n
            // slots would otherwise carry into a + i b (one key switch, at the
            // bottom of the chain: a small fraction of an EvalMod).
            let conj = eval.conjugate(&c)?;
            let mut c = eval.add(&c, &conj)?;
            c.scale *= 2.0;
            c
        } else {
            let re = eval.add(&ct, &conj)?;
            let im =
                eval.mul_const_scaled(&eval.sub(&ct, &conj)?, Complex64::new(0.0, -1.0), 1.0)?;
            timings.coeffs_to_slots = lap(&mut t);
            // 5: EvalMod on both halves.
            let re = self.eval_mod(&re, em_scale)?;
            let im = self.eval_mod(&im, em_scale)?;
            let i_im = eval.mul_const_scaled(&im, Complex64::new(0.0, 1.0), 1.0)?;
            eval.add(&re, &i_im)?
        };
        timings.eval_mod = lap(&mut t);
        // 6: SlotsToCoeffs, with q_0 / (2 pi D) folded into the recorded scale.
        ct.scale *= 2.0 * PI * input_scale / q0;
        let s_in = ct.scale;
        let g = self.stc.len();
        for (i, lt) in self.stc.iter().enumerate() {
            let frac = (i + 1) as f64 / g as f64;
            let target = if i + 1 == g {
                output_scale
            } else {
                (s_in.ln() * (1.0 - frac) + output_scale.ln() * frac).exp()
            };
            ct = match &self.compact {
                Some(encoder) => {
                    let start = Instant::now();
                    let encoded =
                        CompactTransform::encode(lt, encoder, ct.level(), ct.scale(), target)?;
                    timings.encoding += start.elapsed();
                    encoded.evaluate(eval, &ct)?
                }
                None => match (self.stc_periodic[i], &self.periodic_encoder) {
                    (Some(period_log), Some(encoder)) => {
                        let start = Instant::now();
                        let encoded = CompactTransform::encode_periodic(
                            lt,
                            encoder,
                            ct.level(),
                            ct.scale(),
                            target,
                            period_log,
                        )?;
                        timings.encoding += start.elapsed();
                        encoded.evaluate(eval, &ct)?
                    }
                    _ => {
                        let prepared = self.stc_prepared[i].as_ref().ok_or_else(|| {
                            CkksError::InvalidParameters("SlotsToCoeffs group not prepared".into())
                        })?;
                        self.apply(prepared, &ct, target, &mut timings.encoding)?
                    }
                },
            };
            if self.packed && i == 0 {
                // z + rot(z, n) = [y, y], y = M (a + i b): n slots again.
                let rot = eval.rotate(&ct, 1i64 << cfg.log_slots)?;
                eval.add_assign(&mut ct, &rot)?;
                ct.set_log_slots(cfg.log_slots);
            }
        }
        ct.scale = output_scale;
        timings.slots_to_coeffs = lap(&mut t);
        Ok(ct)
    }

    /// The scale to evaluate EvalMod's cosine at (sparse packing) so that
    /// SlotsToCoeffs starts from `2^STC_INPUT_HEADROOM_BITS` times the scale
    /// that balances it, `(output * prod q)^(1 / (g + 1))` over its `g` primes
    /// (every StC level then works near its prime).
    ///
    /// Why: StC's plaintexts are encoded at `output * q / input` (one level),
    /// so the usual EvalMod output, at 2^60 times `2 pi D / q_0`, leaves them
    /// at about 2^25 on `n16-boot` and their rounding limits the precision
    /// (worse on `2n` slots, whose plaintexts have twice the coefficients).
    /// Landing all the way down at the balance would let EvalMod's own rescale
    /// and relinearization noise (which grows with N) dominate instead; the
    /// headroom keeps it below. `ratio = 2 pi D / q_0` turns EvalMod's output
    /// scale into StC's input scale, and the conjugate-and-add after EvalMod
    /// doubles it. The double angles square the scale and divide by their
    /// primes: undone here in log space, last first.
    fn packed_cosine_scale(&self, ratio: f64, output_scale: f64) -> f64 {
        let q = |level: usize| (self.params.q()[level] as f64).log2();
        let cfg = &self.config;
        let out_level = self.output_level();
        let g = cfg.stc_levels;
        let log_stc_q: f64 = (out_level + 1..=out_level + g).map(q).sum();
        let log_stc_in =
            (output_scale.log2() + log_stc_q) / (g + 1) as f64 + STC_INPUT_HEADROOM_BITS;
        let mut log_scale = log_stc_in - 1.0 - ratio.log2();
        let cos_level = self.params.max_level() - cfg.cts_levels - cfg.cosine_depth();
        for j in (0..cfg.double_angle).rev() {
            log_scale = (log_scale + q(cos_level - j)) / 2.0;
        }
        log_scale.exp2()
    }

    /// `sin(2 pi y)` from a ciphertext holding `y / K'`: shift, cosine, double angles.
    fn eval_mod(&self, ct: &Ciphertext, scale: f64) -> Result<Ciphertext> {
        let eval = &self.eval;
        let k = self.config.eval_mod_interval;
        let shifted = eval.add_const(ct, Complex64::new(-0.25 / k, 0.0))?;
        let (mut c, _) =
            PolynomialEvaluator::new(eval).evaluate_to_scale(&shifted, &self.cosine, scale)?;
        for _ in 0..self.config.double_angle {
            let sq = eval.mul_rescale(&c, &c)?;
            c = eval.add_const(&eval.mul_int(&sq, 2)?, Complex64::new(-1.0, 0.0))?;
        }
        if self.config.arcsine {
            // x + x^3/6 = (9/8) T_1 + (1/24) T_3 on [-1, 1] (an identity, no
            // approximation); its 2 levels must be EvalMod-sized primes.
            let p = ChebyshevPoly::new(-1.0, 1.0, vec![0.0, 9.0 / 8.0, 0.0, 1.0 / 24.0])?;
            c = PolynomialEvaluator::new(eval)
                .evaluate_to_scale(&c, &p, c.scale())?
                .0;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irwin_hall_matches_known_values() {
        // Sum of 2 uniforms: CDF(1) = 1/2, CDF(0.5) = 1/8.
        assert!((irwin_hall_cdf(2, 1.0) - 0.5).abs() < 1e-12);
        assert!((irwin_hall_cdf(2, 0.5) - 0.125).abs() < 1e-12);
        assert!((irwin_hall_cdf(3, 1.5) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn default_interval_cannot_fail_and_smaller_ones_are_bounded() {
        let mut cfg = BootstrapConfig {
            log_slots: 15,
            cts_levels: 4,
            stc_levels: 3,
            sparse_weight: 32,
            eval_mod_interval: 17.0,
            double_angle: 2,
            cosine_degree: 63,
            eval_mod_log_scale: 60,
            min_log_message_ratio: 8.0,
            arcsine: false,
        };
        assert_eq!(cfg.failure_probability(), 0.0);
        cfg.eval_mod_interval = 12.5;
        let p = cfg.failure_probability();
        assert!(p > 0.0 && p < 2f64.powi(-30), "{p}");
    }
}
