//! The encrypted BitNet forward pass: blocks, the final norm and the LM head,
//! in ENSI's column layout, with every bootstrap inside an RMSNorm.
//!
//! Level budget (`L` = the bootstrap's output level, 12 with the sparse-slot
//! configuration of [`bootstrap_config`]; the residual stream stays at level 2):
//!
//! | step | levels | where |
//! | --- | --- | --- |
//! | main RMSNorm: `ss = sum x_c^2` | 1 | residual 2 -> 1 |
//! | bootstrap `ss`, `1/sqrt` (degree 31 + 1 Newton step) | 8 | L -> L-8 |
//! | pack `gamma_c x_c` (mask), times `1/sqrt` | 2 | 2 -> 0 |
//! | bootstrap the packed normed state, unpack | 1 | L -> L-1 |
//! | q/k/v (ternary, additions only) | 0 | |
//! | RoPE (scales folded into its plaintexts) | 1 | |
//! | QK^T per diagonal (one relinearization per head and shift) | 1 | |
//! | sigmoid, degree 15 (input already in [-1, 1]) | 4 | |
//! | AV (causal mask and value scale folded on the value side) | 1 | o at L-9 |
//! | sub-norm: `ss` of o, bootstrap it, `1/sqrt`, times o | 1 | o_proj input at L-10 |
//! | o_proj (ternary) + residual | 0 | residual at 2 |
//! | MLP main norm | as above | L-1 |
//! | gate activation (degree 31 + affine) | 6 | |
//! | gate x up | 1 | |
//! | sub-norm, down_proj, residual | 1 | residual at 2 |
//!
//! Bootstraps per block: 6 (2 per main norm, 1 per sub-norm), 4 of them
//! refreshing only the per-token sums of squares.
//!
//! Every constant (ternary scales, gains, the sigmoid's input map, the packing
//! range factor) is folded into a plaintext or constant product that happens
//! anyway; see the comments at each step.

use crate::packing::{pack, relabel, Layout, Packing, Unpacker};
use crate::pcmm::ternary_pcmm_columns;
use crate::{InferError, Result};
use ensi_ckks::circuits::bootstrap::{BootstrapConfig, BootstrapKeys, Bootstrapper};
use ensi_ckks::circuits::{ChebyshevPoly, InvSqrt, PolynomialEvaluator};
use ensi_ckks::{Ciphertext, Complex64, Encoder, Evaluator, Parameters, SecretKey};
use ensi_model::approx::ApproxPolys;
use ensi_model::{BitNetModel, TernaryMatrix};
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The level the client encrypts the embedded tokens at (the residual stream's level).
pub const RESIDUAL_LEVEL: usize = 2;

/// The bootstrapping configuration of the encrypted model: the packed slot
/// count, and one SlotsToCoeffs level (enough for a few thousand slots), which
/// leaves two more levels for the block than the full-slot default.
pub fn bootstrap_config(params: &Parameters, packing: &Packing) -> BootstrapConfig {
    let mut cfg = BootstrapConfig::for_params(params).with_log_slots(packing.packed_log_slots());
    // One SlotsToCoeffs level is the whole FFT in one transform: affordable
    // for the few thousand slots of one packed state, not for all N/2 slots
    // of the wide layout, which takes two (one level fewer after bootstrapping).
    cfg.stc_levels = match packing.layout {
        Layout::Wide => 2,
        Layout::Columns | Layout::Dense => 1,
    };
    cfg
}

/// The configuration that bootstraps the wide layout's sums of squares: a
/// sum over all blocks is the same in every block (periodic with period s),
/// so s slots carry it, and a bootstrap of s slots is several times cheaper
/// than one of all N/2 (CtS and StC on s slots, one EvalMod for both halves,
/// one StC level). None where the blocks are one (nothing to gain).
pub fn sum_bootstrap_config(params: &Parameters, packing: &Packing) -> Option<BootstrapConfig> {
    let slots = 1usize << params.log_slots();
    (packing.layout == Layout::Wide && 2 * packing.tokens_pad <= slots / 2).then(|| {
        let mut cfg =
            BootstrapConfig::for_params(params).with_log_slots(packing.tokens_pad.trailing_zeros());
        cfg.stc_levels = 1;
        cfg
    })
}

/// The server's keys for the encrypted model (client side: needs the secret key).
pub fn generate_keys(
    params: &Parameters,
    packing: &Packing,
    sk: &SecretKey,
) -> Result<BootstrapKeys> {
    generate_keys_with_steps(params, packing, sk, packing.rotation_steps())
}

/// Bootstrapping keys plus Galois keys for `extra` rotation steps, those
/// truncated to the bootstrap's output level unless bootstrapping uses them.
pub(crate) fn generate_keys_with_steps(
    params: &Parameters,
    packing: &Packing,
    sk: &SecretKey,
    extra: Vec<i64>,
) -> Result<BootstrapKeys> {
    let cfg = bootstrap_config(params, packing);
    // The model's own rotations all happen at or below the bootstrap's output level.
    let top = cfg.output_level(params)?;
    let keys = BootstrapKeys::generate_with_extra_at(params, &cfg, sk, &extra, Some(top))?;
    Ok(keys)
}

/// What the server holds for one session: parameters, the bootstrapper (with
/// the session's public keys) and the packing. No secret key.
pub struct ServerContext {
    params: Parameters,
    packing: Packing,
    boot: Bootstrapper,
    encoder: Encoder,
    /// Column layout only: the dense layout never unpacks.
    unpacker: Option<Unpacker>,
    /// Wide layout only: bootstraps the sums of squares on s slots
    /// ([`sum_bootstrap_config`]), over the same keys.
    sums: Option<Bootstrapper>,
    stats: Stats,
}

impl ServerContext {
    /// Builds the context from a session's keys.
    pub fn new(params: &Parameters, packing: Packing, keys: BootstrapKeys) -> Result<Self> {
        let boot = Bootstrapper::new(params, bootstrap_config(params, &packing), keys)?;
        let encoder = Encoder::new(params);
        let unpacker = match packing.layout {
            Layout::Columns => Some(Unpacker::new(
                boot.evaluator(),
                &encoder,
                packing,
                boot.output_level(),
            )?),
            Layout::Dense | Layout::Wide => None,
        };
        let sums = sum_bootstrap_config(params, &packing)
            .map(|cfg| boot.sibling(cfg))
            .transpose()?;
        Ok(Self {
            params: params.clone(),
            packing,
            boot,
            encoder,
            unpacker,
            sums,
            stats: Stats::default(),
        })
    }

    /// The evaluator.
    pub fn eval(&self) -> &Evaluator {
        self.boot.evaluator()
    }

    /// The packing.
    pub fn packing(&self) -> &Packing {
        &self.packing
    }

    /// The parameters.
    pub fn params(&self) -> &Parameters {
        &self.params
    }

    /// Timings and bootstrap count since the last [`ServerContext::take_stats`].
    pub fn take_stats(&self) -> StatsReport {
        let steps = std::mem::take(&mut *self.stats.steps.lock().expect("stats lock"));
        StatsReport {
            steps,
            bootstraps: self.stats.bootstraps.swap(0, Ordering::Relaxed),
        }
    }

    pub(crate) fn bootstrap(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        let t = Instant::now();
        let out = self.boot.bootstrap(ct)?;
        self.stats.bootstraps.fetch_add(1, Ordering::Relaxed);
        self.stats.record("bootstrap", t.elapsed(), 0);
        Ok(out)
    }

    /// Refreshes a sum over blocks (the same value in every block): on s
    /// slots where the layout has a bootstrapper for them, else as
    /// [`Self::bootstrap`]. Same slot count out as in.
    pub(crate) fn bootstrap_sum(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        let Some(sums) = &self.sums else {
            return self.bootstrap(ct);
        };
        let t = Instant::now();
        let out = sums.bootstrap(&relabel(ct, sums.config().log_slots))?;
        self.stats.bootstraps.fetch_add(1, Ordering::Relaxed);
        self.stats.record("bootstrap", t.elapsed(), 0);
        Ok(relabel(&out, ct.log_slots()))
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Records one timed step (and prints it when progress is on).
    pub(crate) fn record(&self, name: &'static str, time: Duration, levels: usize) {
        self.stats.record(name, time, levels);
    }

    /// Prints every recorded step to stderr as it ends (for runs of many
    /// minutes: a whole block at a large shape).
    pub fn set_progress(&mut self, on: bool) {
        self.stats.progress = on;
    }

    /// See [`Bootstrapper::fit_range`].
    pub(crate) fn fit_for_bootstrap(&self, ct: &Ciphertext, bound: f64) -> Result<Ciphertext> {
        Ok(self.boot.fit_range(ct, bound)?)
    }

    /// See [`Bootstrapper::max_input_scale`].
    pub(crate) fn max_input_scale(&self) -> f64 {
        self.boot.max_input_scale()
    }

    fn unpacker(&self) -> Result<&Unpacker> {
        self.unpacker
            .as_ref()
            .ok_or_else(|| InferError::Shape("the dense layout has no column unpacking".into()))
    }
}

#[derive(Default)]
struct Stats {
    steps: Mutex<Vec<StepTime>>,
    bootstraps: AtomicUsize,
    progress: bool,
}

impl Stats {
    fn record(&self, name: &'static str, time: Duration, levels: usize) {
        if self.progress {
            eprintln!("  {name}: {:.2} s", time.as_secs_f64());
        }
        self.steps
            .lock()
            .expect("stats lock")
            .push(StepTime { name, time, levels });
    }
}

/// One timed step.
#[derive(Clone, Debug)]
pub struct StepTime {
    /// Step name (`bootstrap`, `qkv`, `attention`, ...).
    pub name: &'static str,
    /// Wall time.
    pub time: Duration,
    /// Levels the step consumed.
    pub levels: usize,
}

/// Timings of a pass.
#[derive(Clone, Debug, Default)]
pub struct StatsReport {
    /// Every step in order.
    pub steps: Vec<StepTime>,
    /// Bootstraps run.
    pub bootstraps: usize,
}

impl StatsReport {
    /// Total time per step name, in first-seen order, with the levels of one occurrence.
    pub fn totals(&self) -> Vec<(&'static str, Duration, usize, usize)> {
        let mut out: Vec<(&'static str, Duration, usize, usize)> = Vec::new();
        for s in &self.steps {
            match out.iter_mut().find(|e| e.0 == s.name) {
                Some(e) => {
                    e.1 += s.time;
                    e.3 += 1;
                }
                None => out.push((s.name, s.time, s.levels, 1)),
            }
        }
        out
    }
}

/// Intermediates of one encrypted block, as column ciphertexts, each with the
/// factor that turns its decrypted values into the twin's (value = factor * decrypted).
#[derive(Default)]
pub struct BlockTrace {
    /// Named intermediates.
    pub steps: Vec<(&'static str, Vec<Ciphertext>, f64)>,
}

/// The encrypted model: the plaintext weights and the polynomials the twin uses.
pub struct EncryptedModel {
    model: Arc<BitNetModel>,
    polys: ApproxPolys,
}

/// Encrypted logits of the last position: chunk i, slot `p C s_pad + t` holds
/// logit `i * per_chunk + p s_pad + t` (see [`EncryptedModel::logit_slots`]).
pub struct EncryptedLogits {
    /// The ciphertexts.
    pub chunks: Vec<Ciphertext>,
}

impl EncryptedModel {
    /// Wraps a model and its approximation polynomials.
    pub fn new(model: Arc<BitNetModel>, polys: ApproxPolys) -> Self {
        Self { model, polys }
    }

    /// The plaintext model.
    pub fn model(&self) -> &BitNetModel {
        &self.model
    }

    /// The approximation polynomials (shared with the twin).
    pub fn polys(&self) -> &ApproxPolys {
        &self.polys
    }

    /// The packing this model uses for `max_tokens` at `params`.
    pub fn packing(&self, params: &Parameters, max_tokens: usize) -> Result<Packing> {
        Packing::new(max_tokens, self.model.config().hidden_size, params.log_n())
    }

    /// The range factor of the packed normed state: `|y_c| <= sqrt(d) max|gamma|`
    /// holds for every RMSNorm output (one feature's square is at most the sum of
    /// squares), so `K y` with `K` the inverse of that bound (plus a margin for the
    /// inverse square root's error) is inside the bootstrap's input range.
    fn pack_factor(&self, gamma: &[f64]) -> f64 {
        let g = gamma.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
        1.0 / (1.05 * (gamma.len() as f64).sqrt() * g)
    }

    /// `B_v`: the inverse square root runs on `v / B_v`, whose interval then has
    /// width 2, so the polynomial's input map is a shift (no level).
    pub(crate) fn inv_sqrt_div(&self) -> f64 {
        let g = &self.polys.inv_sqrt_guess;
        (g.b - g.a) / 2.0
    }

    /// `sqrt(B_v) / sqrt(mean(x^2) + eps)` per token from `ss = sum_c x_c^2` over
    /// `width` features: ss is refreshed alone, then the guess and Newton steps
    /// run on fresh levels. Column slot count in and out.
    fn inv_rms(&self, ctx: &ServerContext, ss: &Ciphertext, width: usize) -> Result<Ciphertext> {
        let eval = ctx.eval();
        let bv = self.inv_sqrt_div();
        // ss / (2 B_v width) <= v_max / (2 B_v) <= 1 for v in the interval.
        let bound = 2.0 * bv * width as f64;
        let packed = relabel(ss, ctx.packing.packed_log_slots());
        // Divide by the bound and land below the bootstrap's largest input scale.
        let fitted =
            mul_const_to_scale(eval, &packed, 1.0 / bound, ctx.boot.max_input_scale() / 2.0)?;
        Ok(relabel(
            &self.inv_rms_of_fitted(ctx, &fitted)?,
            ctx.packing.column_log_slots(),
        ))
    }

    /// `sqrt(B_v) / sqrt(mean + eps)` from `ss / (2 B_v width)` already in the
    /// bootstrap's input range (packed slot count): bootstrap, then the guess
    /// and Newton steps on fresh levels. Packed slot count out.
    pub(crate) fn inv_rms_of_fitted(
        &self,
        ctx: &ServerContext,
        fitted: &Ciphertext,
    ) -> Result<Ciphertext> {
        let eval = ctx.eval();
        let bv = self.inv_sqrt_div();
        let g = &self.polys.inv_sqrt_guess;
        let fresh = ctx.bootstrap_sum(fitted)?;
        let t = Instant::now();
        // v / B_v = 2 * (ss / (2 B_v width)) + eps / B_v.
        let v = eval.add_const(
            &eval.mul_int(&fresh, 2)?,
            Complex64::new(self.model.config().rms_norm_eps / bv, 0.0),
        )?;
        // The twin's guess g on [a, b] at v equals the same coefficients on
        // [a / B_v, b / B_v] at v / B_v; times sqrt(B_v) it is the guess of
        // 1/sqrt(v / B_v), and Newton's step keeps that factor.
        let coeffs: Vec<f64> = g.coeffs.iter().map(|c| c * bv.sqrt()).collect();
        let f = InvSqrt {
            guess: ChebyshevPoly::new(g.a / bv, g.b / bv, coeffs)?,
            newton_steps: self.polys.newton_steps,
        };
        let (r, _) = PolynomialEvaluator::new(eval).inv_sqrt(&v, &f)?;
        ctx.stats
            .record("inv_sqrt", t.elapsed(), fresh.level() - r.level());
        Ok(r)
    }

    /// Main RMSNorm with its two bootstraps: returns the packed, refreshed
    /// `K y` (y = RMSNorm(x) gamma) at the bootstrap's output level, and K.
    fn norm_refresh(
        &self,
        ctx: &ServerContext,
        x: &[Ciphertext],
        gamma: &[f64],
    ) -> Result<(Ciphertext, f64)> {
        let eval = ctx.eval();
        let t = Instant::now();
        let pairs: Vec<(&Ciphertext, &Ciphertext)> = x.iter().map(|c| (c, c)).collect();
        let ss = eval.rescale(&eval.mul_sum(&pairs)?)?;
        ctx.stats.record("norm_ss", t.elapsed(), 1);
        let r = self.inv_rms(ctx, &ss, x.len())?;
        let t = Instant::now();
        let k = self.pack_factor(gamma);
        let bv = self.inv_sqrt_div();
        let weights: Vec<f64> = gamma.iter().map(|g| g * k / bv.sqrt()).collect();
        let px = pack(eval, &ctx.encoder, &ctx.packing, x, &weights)?;
        // Land the product below the bootstrap's largest input scale.
        let prime = eval.params().q()[px.level()] as f64;
        let target = ctx.boot.max_input_scale() / 2.0 * prime / px.scale();
        let r = mul_const_to_scale(eval, &r, 1.0, target)?;
        let r = relabel(&r, ctx.packing.packed_log_slots());
        let py = eval.rescale(&eval.mul(&px, &r)?)?;
        ctx.stats.record("norm_pack", t.elapsed(), 2);
        let fresh = ctx.bootstrap(&ctx.boot.fit_range(&py, 1.0)?)?;
        Ok((fresh, k))
    }

    /// Sub-norm: `h_c * gamma_c * extra / rms(h)`, landing at `target_scale`
    /// (the residual stream's, so the projection's output adds to it exactly).
    fn sub_norm(
        &self,
        ctx: &ServerContext,
        h: &[Ciphertext],
        gamma: &[f64],
        extra: f64,
        target_scale: f64,
    ) -> Result<Vec<Ciphertext>> {
        let eval = ctx.eval();
        let t = Instant::now();
        let pairs: Vec<(&Ciphertext, &Ciphertext)> = h.iter().map(|c| (c, c)).collect();
        let ss = eval.rescale(&eval.mul_sum(&pairs)?)?;
        ctx.stats.record("subnorm_ss", t.elapsed(), 1);
        let r = self.inv_rms(ctx, &ss, h.len())?;
        let t = Instant::now();
        let bv = self.inv_sqrt_div();
        let level = h[0].level().min(r.level() - 1);
        let prime = eval.params().q()[level] as f64;
        let target_r = target_scale * prime / h[0].scale();
        let out = h
            .par_iter()
            .zip(gamma)
            .map(|(hc, g)| {
                let rc = mul_const_to_scale(eval, &r, g * extra / bv.sqrt(), target_r)?;
                Ok(eval.rescale(&eval.mul(hc, &rc)?)?)
            })
            .collect::<Result<Vec<_>>>()?;
        ctx.stats.record("subnorm_mul", t.elapsed(), 1);
        Ok(out)
    }

    /// One block on the residual stream `x` (hidden columns at [`RESIDUAL_LEVEL`])
    /// for `tokens` real tokens.
    pub fn block(
        &self,
        ctx: &ServerContext,
        layer: usize,
        x: &[Ciphertext],
        tokens: usize,
        mut trace: Option<&mut BlockTrace>,
    ) -> Result<Vec<Ciphertext>> {
        let eval = ctx.eval();
        let cfg = self.model.config();
        let w = &self.model.layers()[layer];
        let hd = cfg.head_dim;
        let residual_scale = x[0].scale();
        let mut record = |name: &'static str, cts: &[Ciphertext], f: f64| {
            if let Some(t) = trace.as_deref_mut() {
                t.steps.push((name, cts.to_vec(), f));
            }
        };

        // ---- Attention ----
        let (p, k_pack) = self.norm_refresh(ctx, x, &w.input_norm)?;
        let t = Instant::now();
        let y = ctx.unpacker()?.unpack(eval, &p)?;
        ctx.stats.record("unpack", t.elapsed(), 1);
        record("attn_norm", &y, 1.0 / k_pack);
        let t = Instant::now();
        let (q, k, v) = (
            ternary_pcmm_columns(eval, &y, &w.q_proj)?,
            ternary_pcmm_columns(eval, &y, &w.k_proj)?,
            ternary_pcmm_columns(eval, &y, &w.v_proj)?,
        );
        ctx.stats.record("qkv_pcmm", t.elapsed(), 0);
        // Scores enter the sigmoid polynomial as t = 2 (z - mid) / width with
        // z = q.k / sqrt(d) + b: every factor of q.k goes into q's RoPE plaintexts.
        let sig = &self.polys.sigmoid;
        let (sa, sb) = (sig.a, sig.b);
        let q_factor = w.q_proj.scale() * w.k_proj.scale() / (k_pack * k_pack) * 2.0
            / ((sb - sa) * (hd as f64).sqrt());
        let t = Instant::now();
        let qr = self.rope(ctx, &q, q_factor)?;
        let kr = self.rope(ctx, &k, 1.0)?;
        ctx.stats.record("rope", t.elapsed(), 1);
        record("q", &qr, w.q_proj.scale() / (k_pack * q_factor));
        let t = Instant::now();
        let scores = self.scores(ctx, &qr, &kr, tokens)?;
        ctx.stats.record("qk", t.elapsed(), 1);
        let t = Instant::now();
        let coeffs = ChebyshevPoly::new(-1.0, 1.0, sig.coeffs.clone())?;
        let pe = PolynomialEvaluator::new(eval);
        let weights: Vec<Vec<Ciphertext>> = scores
            .par_iter()
            .map(|head| {
                head.iter()
                    .map(|s| Ok(pe.evaluate(s, &coeffs)?.0))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        ctx.stats.record("sigmoid", t.elapsed(), coeffs.depth());
        let t = Instant::now();
        let o = self.attend(ctx, &weights, &v, w.v_proj.scale() / k_pack, tokens)?;
        ctx.stats.record("av", t.elapsed(), 1);
        record("attn_out", &o, 1.0);
        let on = self.sub_norm(ctx, &o, &w.attn_sub_norm, w.o_proj.scale(), residual_scale)?;
        let t = Instant::now();
        let o_out = ternary_pcmm_columns(eval, &on, &w.o_proj)?;
        let after_attn = residual_add(eval, x, &o_out)?;
        ctx.stats.record("o_proj_residual", t.elapsed(), 0);
        record("after_attn", &after_attn, 1.0);

        // ---- MLP ----
        let (p, k_pack) = self.norm_refresh(ctx, &after_attn, &w.post_attention_norm)?;
        let t = Instant::now();
        let y = ctx.unpacker()?.unpack(eval, &p)?;
        ctx.stats.record("unpack", t.elapsed(), 1);
        record("mlp_norm", &y, 1.0 / k_pack);
        let t = Instant::now();
        let gate = ternary_pcmm_columns(eval, &y, &w.gate_proj)?;
        let up = ternary_pcmm_columns(eval, &y, &w.up_proj)?;
        ctx.stats.record("gate_up_pcmm", t.elapsed(), 0);
        // The gate's polynomial on the unscaled sums: interval stretched by K / alpha.
        let act = self.polys.activation(cfg.activation);
        let stretch = k_pack / w.gate_proj.scale();
        let act_poly = ChebyshevPoly::new(act.a * stretch, act.b * stretch, act.coeffs.clone())?;
        let up_factor = Complex64::new(w.up_proj.scale() / k_pack, 0.0);
        let t = Instant::now();
        let hidden = gate
            .par_iter()
            .zip(&up)
            .map(|(g, u)| {
                let a = pe.evaluate(g, &act_poly)?.0;
                let u = eval.mul_const(u, up_factor)?;
                Ok(eval.rescale(&eval.mul(&a, &u)?)?)
            })
            .collect::<Result<Vec<_>>>()?;
        ctx.stats
            .record("activation_gate_up", t.elapsed(), act_poly.depth() + 1);
        record("hidden", &hidden, 1.0);
        let hn = self.sub_norm(
            ctx,
            &hidden,
            &w.ffn_sub_norm,
            w.down_proj.scale(),
            residual_scale,
        )?;
        let t = Instant::now();
        let down = ternary_pcmm_columns(eval, &hn, &w.down_proj)?;
        let out = residual_add(eval, &after_attn, &down)?;
        ctx.stats.record("down_residual", t.elapsed(), 0);
        record("output", &out, 1.0);
        if out[0].level() < RESIDUAL_LEVEL {
            return Err(InferError::Shape(format!(
                "the block left the residual stream at level {} (< {RESIDUAL_LEVEL}): \
                 the bootstrap leaves too few levels for this level budget",
                out[0].level()
            )));
        }
        Ok(out)
    }

    /// RoPE on projection columns, times `factor`: one level (plaintext products).
    fn rope(
        &self,
        ctx: &ServerContext,
        cols: &[Ciphertext],
        factor: f64,
    ) -> Result<Vec<Ciphertext>> {
        let eval = ctx.eval();
        let hd = self.model.config().head_dim;
        let half = hd / 2;
        let inv_freq = self.model.inv_freq();
        let s_pad = ctx.packing.tokens_pad;
        let ls = ctx.packing.column_log_slots();
        let level = cols[0].level();
        let q = eval.params().q()[level] as f64;
        (0..cols.len())
            .into_par_iter()
            .map(|c| {
                let j = c % hd;
                let (fi, partner, sign) = if j < half {
                    (j, c + half, -1.0)
                } else {
                    (j - half, c - half, 1.0)
                };
                let cos: Vec<f64> = (0..s_pad)
                    .map(|i| (i as f64 * inv_freq[fi]).cos() * factor)
                    .collect();
                let sin: Vec<f64> = (0..s_pad)
                    .map(|i| sign * (i as f64 * inv_freq[fi]).sin() * factor)
                    .collect();
                let pc = ctx.encoder.encode_real(&cos, level, q, ls)?;
                let ps = ctx.encoder.encode_real(&sin, level, q, ls)?;
                let mut acc = eval.mul_plain(&cols[c], &pc)?;
                eval.add_assign(&mut acc, &eval.mul_plain(&cols[partner], &ps)?)?;
                Ok(eval.rescale(&acc)?)
            })
            .collect()
    }

    /// Scores per query head, one ciphertext per diagonal shift k (slot i holds
    /// query i against key (i + k) mod s_pad), already mapped to the sigmoid
    /// polynomial's [-1, 1] (the bias of row i added as a plaintext).
    fn scores(
        &self,
        ctx: &ServerContext,
        q: &[Ciphertext],
        k: &[Ciphertext],
        tokens: usize,
    ) -> Result<Vec<Vec<Ciphertext>>> {
        let eval = ctx.eval();
        let cfg = self.model.config();
        let hd = cfg.head_dim;
        let group = cfg.num_heads / cfg.num_kv_heads;
        let s_pad = ctx.packing.tokens_pad;
        let steps: Vec<i64> = (0..s_pad as i64).collect();
        // Every key column rotated by every shift, one decomposition each.
        let k_rot: Vec<Vec<Ciphertext>> = k
            .par_iter()
            .map(|c| Ok(eval.rotate_hoisted(c, &steps)?))
            .collect::<Result<_>>()?;
        let sig = &self.polys.sigmoid;
        let bias: Vec<f64> = (0..s_pad)
            .map(|i| {
                let b = self.polys.spec.sigmoid_bias.bias(i, tokens);
                (2.0 * b - (sig.a + sig.b)) / (sig.b - sig.a)
            })
            .collect();
        let jobs: Vec<(usize, usize)> = (0..cfg.num_heads)
            .flat_map(|h| (0..s_pad).map(move |s| (h, s)))
            .collect();
        let flat: Vec<Ciphertext> = jobs
            .par_iter()
            .map(|&(h, s)| {
                let g = h / group;
                let pairs: Vec<(&Ciphertext, &Ciphertext)> = (0..hd)
                    .map(|j| (&q[h * hd + j], &k_rot[g * hd + j][s]))
                    .collect();
                let sc = eval.rescale(&eval.mul_sum(&pairs)?)?;
                let pt = ctx.encoder.encode_real(
                    &bias,
                    sc.level(),
                    sc.scale(),
                    ctx.packing.column_log_slots(),
                )?;
                Ok(eval.add_plain(&sc, &pt)?)
            })
            .collect::<Result<_>>()?;
        let mut it = flat.into_iter();
        Ok((0..cfg.num_heads)
            .map(|_| it.by_ref().take(s_pad).collect())
            .collect())
    }

    /// o_c = sum_k A_{head(c), k} * (mask_k * factor * rot(v_c, k)): the causal
    /// mask and the value scale ride on the value side, which has levels to spare.
    fn attend(
        &self,
        ctx: &ServerContext,
        weights: &[Vec<Ciphertext>],
        v: &[Ciphertext],
        factor: f64,
        tokens: usize,
    ) -> Result<Vec<Ciphertext>> {
        let eval = ctx.eval();
        let cfg = self.model.config();
        let hd = cfg.head_dim;
        let group = cfg.num_heads / cfg.num_kv_heads;
        let s_pad = ctx.packing.tokens_pad;
        let ls = ctx.packing.column_log_slots();
        let steps: Vec<i64> = (0..s_pad as i64).collect();
        let level = v[0].level();
        let q = eval.params().q()[level] as f64;
        // mask_k[i] = 1 where key (i + k) mod s_pad is at or before query i (and real).
        let masks: Vec<_> = (0..s_pad)
            .map(|s| {
                let m: Vec<f64> = (0..s_pad)
                    .map(|i| {
                        let j = (i + s) % s_pad;
                        if j <= i && j < tokens {
                            factor
                        } else {
                            0.0
                        }
                    })
                    .collect();
                ctx.encoder.encode_real(&m, level, q, ls)
            })
            .collect::<std::result::Result<_, _>>()?;
        let v_masked: Vec<Vec<Ciphertext>> = v
            .par_iter()
            .map(|c| {
                eval.rotate_hoisted(c, &steps)?
                    .iter()
                    .zip(&masks)
                    .map(|(r, m)| Ok(eval.rescale(&eval.mul_plain(r, m)?)?))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        (0..cfg.num_heads * hd)
            .into_par_iter()
            .map(|c| {
                let h = c / hd;
                let kv = (h / group) * hd + c % hd;
                let pairs: Vec<(&Ciphertext, &Ciphertext)> = (0..s_pad)
                    .map(|s| (&weights[h][s], &v_masked[kv][s]))
                    .collect();
                Ok(eval.rescale(&eval.mul_sum(&pairs)?)?)
            })
            .collect()
    }

    /// The whole model: every block, the final norm and the LM head on the
    /// last real position. `x`: the embedded tokens as columns at [`RESIDUAL_LEVEL`].
    pub fn forward(
        &self,
        ctx: &ServerContext,
        x: Vec<Ciphertext>,
        tokens: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<EncryptedLogits> {
        let cfg = self.model.config();
        if ctx.packing.layout == Layout::Wide {
            return Err(InferError::Shape(
                "the wide layout runs single blocks (EncryptedModel::wide_block); its final norm \
                 and LM head are not implemented"
                    .into(),
            ));
        }
        if ctx.packing.layout == Layout::Dense {
            return match <[Ciphertext; 1]>::try_from(x) {
                Ok([x]) => self.dense_forward(ctx, x, tokens, progress),
                Err(x) => Err(InferError::Shape(format!(
                    "{} input ciphertexts; the dense layout takes one",
                    x.len()
                ))),
            };
        }
        if x.len() != cfg.hidden_size || tokens == 0 || tokens > ctx.packing.tokens_pad {
            return Err(InferError::Shape(format!(
                "{} input columns for {} tokens; the model needs {} columns and at most {} tokens",
                x.len(),
                tokens,
                cfg.hidden_size,
                ctx.packing.tokens_pad
            )));
        }
        for c in &x {
            if c.log_slots() != ctx.packing.column_log_slots() || c.level() < RESIDUAL_LEVEL {
                return Err(InferError::Shape(format!(
                    "input column with 2^{} slots at level {}; expected 2^{} slots at level >= {}",
                    c.log_slots(),
                    c.level(),
                    ctx.packing.column_log_slots(),
                    RESIDUAL_LEVEL
                )));
            }
        }
        let eval = ctx.eval();
        let mut x: Vec<Ciphertext> = x
            .iter()
            .map(|c| Ok(eval.drop_to_level(c, RESIDUAL_LEVEL)?))
            .collect::<Result<_>>()?;
        let layers = cfg.num_layers;
        for l in 0..layers {
            progress(l, layers + 1);
            x = self.block(ctx, l, &x, tokens, None)?;
        }
        progress(layers, layers + 1);
        let logits = self.head(ctx, &x, tokens)?;
        progress(layers + 1, layers + 1);
        Ok(logits)
    }

    /// Final RMSNorm (refreshed, packed) and the LM head on position `tokens - 1`.
    pub fn head(
        &self,
        ctx: &ServerContext,
        x: &[Ciphertext],
        tokens: usize,
    ) -> Result<EncryptedLogits> {
        let (p, k_pack) = self.norm_refresh(ctx, x, self.model.final_norm())?;
        let ones = vec![1.0; self.model.config().hidden_size];
        self.lm_head(ctx, &p, k_pack, &ones, tokens)
    }

    /// The LM head on position `tokens - 1` of the packed normed state `p`
    /// (`K y`, column c in block c, times `gains[c]` still to apply: the
    /// final norm's gamma in the dense layout, ones in the column layout).
    pub(crate) fn lm_head(
        &self,
        ctx: &ServerContext,
        p: &Ciphertext,
        k_pack: f64,
        gains: &[f64],
        tokens: usize,
    ) -> Result<EncryptedLogits> {
        let eval = ctx.eval();
        let cfg = self.model.config();
        let pk = &ctx.packing;
        let t = Instant::now();
        let s_pad = pk.tokens_pad;
        let last = tokens - 1;
        // Keep only the last position of each block (and undo the range factor).
        let level = p.level();
        let q = eval.params().q()[level] as f64;
        let mut sel = vec![0.0; s_pad * pk.blocks];
        for c in 0..pk.hidden {
            sel[c * s_pad + last] = 1.0 / k_pack;
        }
        let pt = ctx
            .encoder
            .encode_real(&sel, level, q, pk.packed_log_slots())?;
        let mut z = eval.rescale(&eval.mul_plain(p, &pt)?)?;
        // Spread it over the s_pad positions to its left: position i of block c
        // then holds h_c for i <= last and h_{c+1} for i > last.
        let mut m = 1;
        while m < s_pad {
            let r = eval.rotate(&z, m as i64)?;
            eval.add_assign(&mut z, &r)?;
            m *= 2;
        }
        let full = eval.params().log_slots();
        z.set_log_slots(full);
        let slots = 1usize << full;
        let period = s_pad * pk.blocks;
        let per_chunk = slots / pk.blocks;
        let vocab = cfg.vocab_size;
        let head = self.model.lm_head();
        let hidden = cfg.hidden_size;
        let level = z.level();
        let q = eval.params().q()[level] as f64;
        let chunks = vocab.div_ceil(per_chunk);
        let out = (0..chunks)
            .into_par_iter()
            .map(|chunk| {
                let mut wv = vec![0.0; slots];
                for (x, w) in wv.iter_mut().enumerate() {
                    let (p_idx, within) = (x / period, x % period);
                    let (blk, i) = (within / s_pad, within % s_pad);
                    let j = chunk * per_chunk + p_idx * s_pad + i;
                    let col = (blk + usize::from(i > last)) % pk.blocks;
                    if j < vocab && col < hidden {
                        *w = f64::from(head[j * hidden + col]) * gains[col];
                    }
                }
                let pt = ctx.encoder.encode_real(&wv, level, q, full)?;
                let mut acc = eval.rescale(&eval.mul_plain(&z, &pt)?)?;
                let mut b = 1;
                while b < pk.blocks {
                    let r = eval.rotate(&acc, (b * s_pad) as i64)?;
                    eval.add_assign(&mut acc, &r)?;
                    b *= 2;
                }
                Ok(acc)
            })
            .collect::<Result<Vec<_>>>()?;
        ctx.stats.record("lm_head", t.elapsed(), 2);
        Ok(EncryptedLogits { chunks: out })
    }

    /// Where logit j lives: (chunk, slot) for a packing.
    pub fn logit_slots(packing: &Packing, log_slots: u32, vocab: usize) -> Vec<(usize, usize)> {
        let slots = 1usize << log_slots;
        let per_chunk = slots / packing.blocks;
        let period = packing.tokens_pad * packing.blocks;
        (0..vocab)
            .map(|j| {
                let (chunk, r) = (j / per_chunk, j % per_chunk);
                let (p, i) = (r / packing.tokens_pad, r % packing.tokens_pad);
                (chunk, p * period + i)
            })
            .collect()
    }

    /// The ternary matrices of a layer (for benchmarks).
    pub fn projections(&self, layer: usize) -> Vec<(&'static str, &TernaryMatrix)> {
        let w = &self.model.layers()[layer];
        vec![
            ("q_proj", &w.q_proj),
            ("k_proj", &w.k_proj),
            ("v_proj", &w.v_proj),
            ("o_proj", &w.o_proj),
            ("gate_proj", &w.gate_proj),
            ("up_proj", &w.up_proj),
            ("down_proj", &w.down_proj),
        ]
    }
}

/// `c * ct`, rescaled, with the result's scale exactly `target`: the constant
/// is encoded at the scale that makes it so (the scale drift of earlier
/// rescales is absorbed where a product happens anyway).
pub(crate) fn mul_const_to_scale(
    eval: &Evaluator,
    ct: &Ciphertext,
    c: f64,
    target: f64,
) -> Result<Ciphertext> {
    let prime = eval.params().q()[ct.level()] as f64;
    let const_scale = target * prime / ct.scale();
    let precision = const_scale * c.abs().max(1e-300);
    if precision.is_nan() || precision < 2f64.powi(24) {
        return Err(InferError::Shape(format!(
            "constant {c} at scale 2^{:.1} is too coarse",
            const_scale.log2()
        )));
    }
    Ok(eval.rescale(&eval.mul_const_scaled(ct, Complex64::new(c, 0.0), const_scale)?)?)
}

/// x + y column by column, at the lower level.
fn residual_add(eval: &Evaluator, x: &[Ciphertext], y: &[Ciphertext]) -> Result<Vec<Ciphertext>> {
    x.par_iter()
        .zip(y)
        .map(|(a, b)| Ok(eval.add(a, b)?))
        .collect()
}
