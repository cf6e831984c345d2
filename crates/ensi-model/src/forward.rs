//! The plaintext forward pass in f64, with a KV cache: the original BitNet b1.58 model and the
//! ENSI twin.
//!
//! This is the reference the rest of the project is checked against. [`Mode::original`] is the
//! model as published (softmax attention, 8-bit per-token activation quantization before every
//! projection). [`Mode::twin`] is the model as the encrypted path computes it:
//! - attention weights sigma(q.k / sqrt(d) + b) with b from [`SigmoidBias`], the causal mask
//!   applied by multiplication after the sigmoid, no row normalization;
//! - every nonlinearity (sigmoid, SiLU / ReLU^2, the inverse square root of every RMSNorm)
//!   through the polynomials of [`crate::approx::EnsiApprox`], inputs clamped to the intervals
//!   (and counted in [`RangeStats`] when they leave them);
//! - no activation quantization: a per-token max is not a polynomial, so the encrypted path
//!   feeds the projections unquantized activations (ternary weights and their scales are the
//!   same as in the original).
//!
//! Two intermediate modes separate the effects for `ensi eval`:
//! [`Mode::original_without_activation_quant`] and [`Mode::sigmoid_exact`].
//!
//! The order of operations in one block is the order the encrypted path follows, and
//! [`BitNetModel::forward_traced`] records every intermediate ([`LayerTrace`]) so that the
//! decrypted values of each step can be compared with the twin's.

use crate::approx::{sigmoid, ApproxPolys, ChebyshevPoly, EnsiApprox, SigmoidBias};
use crate::error::{ModelError, Result};
use crate::quant::{absmax_quantize, TernaryMatrix};
use crate::tensor::Matrix;
use crate::weights::BitNetModel;
use rayon::prelude::*;
use std::sync::Arc;

/// How attention weights are formed from the scores.
#[derive(Clone, Debug, PartialEq)]
pub enum AttentionKind {
    /// softmax over the attended positions (the published models).
    Softmax,
    /// sigma(score + b), causal mask multiplied in afterwards, no normalization (ENSI).
    Sigmoid(SigmoidBias),
}

/// What the forward pass computes: the original model, the ENSI twin, or a step between.
#[derive(Clone, Debug)]
pub struct Mode {
    name: &'static str,
    activation_quant: bool,
    attention: AttentionKind,
    polys: Option<Arc<ApproxPolys>>,
}

impl Mode {
    /// The model as published: softmax attention, 8-bit absmax activations, exact functions.
    pub fn original() -> Self {
        Mode {
            name: "original",
            activation_quant: true,
            attention: AttentionKind::Softmax,
            polys: None,
        }
    }

    /// The original without activation quantization (isolates the effect of dropping it).
    pub fn original_without_activation_quant() -> Self {
        Mode {
            name: "original-noquant",
            activation_quant: false,
            attention: AttentionKind::Softmax,
            polys: None,
        }
    }

    /// Sigmoid attention with exact functions and no activation quantization (isolates the
    /// effect of sigmoid attention from that of the polynomials).
    pub fn sigmoid_exact(bias: SigmoidBias) -> Self {
        Mode {
            name: "sigmoid-exact",
            activation_quant: false,
            attention: AttentionKind::Sigmoid(bias),
            polys: None,
        }
    }

    /// The ENSI twin: what the encrypted path computes, per `approx`.
    pub fn twin(approx: &EnsiApprox) -> Result<Self> {
        Ok(Mode {
            name: "twin",
            activation_quant: false,
            attention: AttentionKind::Sigmoid(approx.sigmoid_bias.clone()),
            polys: Some(Arc::new(approx.polys()?)),
        })
    }

    /// Short name (`original`, `original-noquant`, `sigmoid-exact`, `twin`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether activations are quantized before every projection.
    pub fn activation_quant(&self) -> bool {
        self.activation_quant
    }

    /// The attention kind.
    pub fn attention(&self) -> &AttentionKind {
        &self.attention
    }

    /// The polynomials, in the twin.
    pub fn polys(&self) -> Option<&ApproxPolys> {
        self.polys.as_deref()
    }
}

/// Keys (after RoPE) and values of the positions already processed.
#[derive(Clone, Debug)]
pub struct KvCache {
    keys: Vec<Vec<f64>>,
    values: Vec<Vec<f64>>,
    len: usize,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Observed range of the inputs of one kind of nonlinearity.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeStat {
    /// Number of inputs seen.
    pub count: u64,
    /// Smallest input.
    pub min: f64,
    /// Largest input.
    pub max: f64,
    /// Inputs outside the polynomial's interval (twin only; they were clamped).
    pub outside: u64,
}

impl Default for RangeStat {
    fn default() -> Self {
        RangeStat {
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            outside: 0,
        }
    }
}

impl RangeStat {
    fn record(&mut self, x: f64, poly: Option<&ChebyshevPoly>) {
        self.count += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        if let Some(p) = poly {
            if !p.covers(x) {
                self.outside += 1;
            }
        }
    }

    /// Combines two observations.
    pub fn merge(&mut self, other: &RangeStat) {
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.outside += other.outside;
    }
}

/// Ranges of the inputs of every nonlinearity during a pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RangeStats {
    /// Sigmoid inputs (score / sqrt(d) + b); under softmax, the scaled scores q.k / sqrt(d).
    pub attention: RangeStat,
    /// Gate activations entering SiLU or ReLU^2.
    pub gate: RangeStat,
    /// Inverse-square-root inputs mean(x^2) + eps of every RMSNorm.
    pub inv_sqrt: RangeStat,
}

impl RangeStats {
    /// Combines two observations.
    pub fn merge(&mut self, other: &RangeStats) {
        self.attention.merge(&other.attention);
        self.gate.merge(&other.gate);
        self.inv_sqrt.merge(&other.inv_sqrt);
    }

    /// Total number of clamped inputs.
    pub fn outside(&self) -> u64 {
        self.attention.outside + self.gate.outside + self.inv_sqrt.outside
    }
}

/// Every intermediate of one block, for the new tokens of a pass (rows = new tokens).
#[derive(Clone, Debug, Default)]
pub struct LayerTrace {
    /// Residual stream entering the block.
    pub input: Matrix,
    /// `input_layernorm` output.
    pub attn_norm: Matrix,
    /// Query projection after RoPE.
    pub q: Matrix,
    /// Key projection after RoPE.
    pub k: Matrix,
    /// Value projection.
    pub v: Matrix,
    /// Attention weights per query head (new tokens x all positions; zero where masked).
    pub attn_weights: Vec<Matrix>,
    /// Concatenated head outputs, before the sub-norm.
    pub attn_out: Matrix,
    /// Attention sub-norm output (`inner_attn_ln` / `attn_sub_norm`).
    pub attn_sub_norm: Matrix,
    /// `o_proj` output.
    pub o_proj: Matrix,
    /// Residual stream after attention.
    pub after_attn: Matrix,
    /// `post_attention_layernorm` output.
    pub mlp_norm: Matrix,
    /// `gate_proj` output.
    pub gate: Matrix,
    /// `up_proj` output.
    pub up: Matrix,
    /// act(gate) * up.
    pub hidden: Matrix,
    /// MLP sub-norm output (`ffn_layernorm` / `ffn_sub_norm`).
    pub ffn_sub_norm: Matrix,
    /// `down_proj` output.
    pub down: Matrix,
    /// Residual stream leaving the block.
    pub output: Matrix,
}

impl LayerTrace {
    /// The intermediate named like its field (`"attn_norm"`, `"after_attn"`,
    /// ...; not the per-head weights): how the encrypted blocks' traces name
    /// the steps they record.
    pub fn step(&self, name: &str) -> Option<&Matrix> {
        Some(match name {
            "input" => &self.input,
            "attn_norm" => &self.attn_norm,
            "q" => &self.q,
            "k" => &self.k,
            "v" => &self.v,
            "attn_out" => &self.attn_out,
            "attn_sub_norm" => &self.attn_sub_norm,
            "o_proj" => &self.o_proj,
            "after_attn" => &self.after_attn,
            "mlp_norm" => &self.mlp_norm,
            "gate" => &self.gate,
            "up" => &self.up,
            "hidden" => &self.hidden,
            "ffn_sub_norm" => &self.ffn_sub_norm,
            "down" => &self.down,
            "output" => &self.output,
            _ => return None,
        })
    }
}

/// Every intermediate of a pass.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Embedded input tokens.
    pub embeddings: Matrix,
    /// One entry per block.
    pub layers: Vec<LayerTrace>,
    /// Final RMSNorm output.
    pub final_norm: Matrix,
    /// Logits.
    pub logits: Matrix,
}

/// Result of a forward pass over some new tokens.
#[derive(Clone, Debug)]
pub struct Forward {
    /// Logits of every new token (tokens x vocab).
    pub logits: Matrix,
    /// Last hidden state of every new token, before the final norm (tokens x hidden).
    pub hidden: Matrix,
    /// Input ranges of the nonlinearities.
    pub ranges: RangeStats,
}

struct Ctx<'a> {
    mode: &'a Mode,
    eps: f64,
    bits: u32,
    stats: RangeStats,
}

impl Ctx<'_> {
    /// RMSNorm: x * rsqrt(mean(x^2) + eps) * gamma, the inverse square root through the
    /// polynomial in the twin.
    fn rms_norm(&mut self, x: &Matrix, gamma: &[f64], approx: bool) -> Matrix {
        let mut out = Matrix::zeros(x.rows(), x.cols());
        let polys = if approx { self.mode.polys() } else { None };
        for r in 0..x.rows() {
            let row = x.row(r);
            let v = row.iter().map(|a| a * a).sum::<f64>() / row.len() as f64 + self.eps;
            self.stats
                .inv_sqrt
                .record(v, polys.map(|p| &p.inv_sqrt_guess));
            let inv = match polys {
                Some(p) => p.inv_sqrt(v),
                None => 1.0 / v.sqrt(),
            };
            for ((o, a), g) in out.row_mut(r).iter_mut().zip(row).zip(gamma) {
                *o = a * inv * g;
            }
        }
        out
    }

    /// The input a projection sees: per-token absmax-quantized in the original model.
    fn projection_input(&self, x: &Matrix) -> Matrix {
        let mut q = x.clone();
        if self.mode.activation_quant {
            for r in 0..q.rows() {
                absmax_quantize(q.row_mut(r), self.bits);
            }
        }
        q
    }
}

fn linear(x_in: &Matrix, w: &TernaryMatrix) -> Matrix {
    w.forward(x_in)
}

impl BitNetModel {
    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        let n = self.config.num_layers;
        KvCache {
            keys: vec![Vec::new(); n],
            values: vec![Vec::new(); n],
            len: 0,
        }
    }

    /// Embeds tokens (tokens x hidden): the client's step.
    pub fn embed(&self, tokens: &[u32]) -> Result<Matrix> {
        let h = self.config.hidden_size;
        let mut x = Matrix::zeros(tokens.len(), h);
        for (r, &t) in tokens.iter().enumerate() {
            x.row_mut(r).copy_from_slice(&self.embedding(t)?);
        }
        Ok(x)
    }

    /// Runs the new `tokens` after the positions in `cache` (which it extends) and returns
    /// their logits.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, mode: &Mode) -> Result<Forward> {
        let x = self.embed(tokens)?;
        self.forward_embedded(x, cache, mode, None)
    }

    /// [`BitNetModel::forward`] that also records every intermediate.
    pub fn forward_traced(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        mode: &Mode,
    ) -> Result<(Forward, Trace)> {
        let x = self.embed(tokens)?;
        let mut trace = Trace::default();
        let f = self.forward_embedded(x, cache, mode, Some(&mut trace))?;
        Ok((f, trace))
    }

    /// The forward pass from already embedded inputs (tokens x hidden), as the server sees
    /// them; `trace`, when given, receives every intermediate.
    pub fn forward_embedded(
        &self,
        x: Matrix,
        cache: &mut KvCache,
        mode: &Mode,
        mut trace: Option<&mut Trace>,
    ) -> Result<Forward> {
        let c = &self.config;
        if x.rows() == 0 {
            return Err(ModelError::EmptyInput);
        }
        assert_eq!(
            x.cols(),
            c.hidden_size,
            "embedded input width does not match the model"
        );
        let mut ctx = Ctx {
            mode,
            eps: c.rms_norm_eps,
            bits: c.input_bits,
            stats: RangeStats::default(),
        };
        if let Some(t) = trace.as_deref_mut() {
            t.embeddings = x.clone();
            t.layers.clear();
        }
        let mut x = x;
        for (l, layer) in self.layers.iter().enumerate() {
            let mut lt = trace.as_ref().map(|_| LayerTrace {
                input: x.clone(),
                ..Default::default()
            });
            x = self.block(l, layer, x, cache, &mut ctx, lt.as_mut());
            if let (Some(t), Some(lt)) = (trace.as_deref_mut(), lt) {
                t.layers.push(lt);
            }
        }
        cache.len += x.rows();
        let hidden = x;
        let normed = ctx.rms_norm(
            &hidden,
            &self.final_norm,
            !mode.polys().is_some_and(|p| p.spec.exact_final_norm),
        );
        let logits = self.lm_logits(&normed);
        if let Some(t) = trace {
            t.final_norm = normed;
            t.logits = logits.clone();
        }
        Ok(Forward {
            logits,
            hidden,
            ranges: ctx.stats,
        })
    }

    /// Logits of final-normed hidden states through the full-precision LM head.
    pub fn lm_logits(&self, normed: &Matrix) -> Matrix {
        let (v, h) = (self.config.vocab_size, self.config.hidden_size);
        let head = self.lm_head();
        let mut out = Matrix::zeros(normed.rows(), v);
        for r in 0..normed.rows() {
            let x = normed.row(r);
            out.row_mut(r)
                .par_iter_mut()
                .with_min_len(256)
                .enumerate()
                .for_each(|(j, o)| {
                    *o = head[j * h..(j + 1) * h]
                        .iter()
                        .zip(x)
                        .map(|(&w, &a)| f64::from(w) * a)
                        .sum();
                });
        }
        out
    }

    fn rope(&self, row: &mut [f64], pos: usize) {
        let half = self.config.head_dim / 2;
        for head in row.chunks_mut(self.config.head_dim) {
            for (j, f) in self.inv_freq.iter().enumerate() {
                let (s, c) = (pos as f64 * f).sin_cos();
                let (a, b) = (head[j], head[j + half]);
                head[j] = a * c - b * s;
                head[j + half] = b * c + a * s;
            }
        }
    }

    fn block(
        &self,
        l: usize,
        w: &crate::weights::LayerWeights,
        x: Matrix,
        cache: &mut KvCache,
        ctx: &mut Ctx<'_>,
        lt: Option<&mut LayerTrace>,
    ) -> Matrix {
        let c = &self.config;
        let (n, past) = (x.rows(), cache.len);
        let total = past + n;
        let d = c.head_dim;
        let group = c.num_heads / c.num_kv_heads;

        // Attention.
        let xn = ctx.rms_norm(&x, &w.input_norm, true);
        let xin = ctx.projection_input(&xn);
        let mut q = linear(&xin, &w.q_proj);
        let mut k = linear(&xin, &w.k_proj);
        let v = linear(&xin, &w.v_proj);
        for r in 0..n {
            self.rope(q.row_mut(r), past + r);
            self.rope(k.row_mut(r), past + r);
        }
        cache.keys[l].extend_from_slice(k.data());
        cache.values[l].extend_from_slice(v.data());
        let (keys, values) = (&cache.keys[l], &cache.values[l]);
        let kvw = c.kv_width();
        let scale = 1.0 / (d as f64).sqrt();
        let polys = ctx.mode.polys();
        let mut attn_out = Matrix::zeros(n, c.q_width());
        let mut weights_trace: Vec<Matrix> = if lt.is_some() {
            vec![Matrix::zeros(n, total); c.num_heads]
        } else {
            Vec::new()
        };
        let mut weights = vec![0.0; total];
        for r in 0..n {
            let pos = past + r;
            for hq in 0..c.num_heads {
                let g = hq / group;
                let qh = &q.row(r)[hq * d..(hq + 1) * d];
                // Positions after `pos` are masked: their weight is zero (multiplicatively, after
                // the sigmoid, in the twin), so they are skipped.
                let wts = &mut weights[..=pos];
                for (j, wj) in wts.iter_mut().enumerate() {
                    let kh = &keys[j * kvw + g * d..j * kvw + (g + 1) * d];
                    *wj = qh.iter().zip(kh).map(|(a, b)| a * b).sum::<f64>() * scale;
                }
                match &ctx.mode.attention {
                    AttentionKind::Softmax => {
                        let m = wts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let mut sum = 0.0;
                        for s in wts.iter_mut() {
                            ctx.stats.attention.record(*s, None);
                            *s = (*s - m).exp();
                            sum += *s;
                        }
                        wts.iter_mut().for_each(|s| *s /= sum);
                    }
                    AttentionKind::Sigmoid(bias) => {
                        let b = bias.bias(pos, total);
                        for s in wts.iter_mut() {
                            let z = *s + b;
                            ctx.stats.attention.record(z, polys.map(|p| &p.sigmoid));
                            *s = match polys {
                                Some(p) => p.sigmoid.eval_clamped(z),
                                None => sigmoid(z),
                            };
                        }
                    }
                }
                let out = &mut attn_out.row_mut(r)[hq * d..(hq + 1) * d];
                for (j, wj) in wts.iter().enumerate() {
                    let vh = &values[j * kvw + g * d..j * kvw + (g + 1) * d];
                    for (o, vv) in out.iter_mut().zip(vh) {
                        *o += wj * vv;
                    }
                }
                if let Some(wt) = weights_trace.get_mut(hq) {
                    wt.row_mut(r)[..=pos].copy_from_slice(wts);
                }
            }
        }
        let attn_sub = ctx.rms_norm(&attn_out, &w.attn_sub_norm, true);
        let o = linear(&ctx.projection_input(&attn_sub), &w.o_proj);
        let mut after_attn = x.clone();
        after_attn
            .data_mut()
            .iter_mut()
            .zip(o.data())
            .for_each(|(a, b)| *a += b);

        // MLP.
        let mn = ctx.rms_norm(&after_attn, &w.post_attention_norm, true);
        let min = ctx.projection_input(&mn);
        let gate = linear(&min, &w.gate_proj);
        let up = linear(&min, &w.up_proj);
        let act = c.activation;
        let mut hidden = Matrix::zeros(n, c.intermediate_size);
        for ((hv, g), u) in hidden.data_mut().iter_mut().zip(gate.data()).zip(up.data()) {
            ctx.stats.gate.record(*g, polys.map(|p| p.activation(act)));
            let a = match polys {
                Some(p) => p.activation(act).eval_clamped(*g),
                None => act.eval(*g),
            };
            *hv = a * u;
        }
        let ffn_sub = ctx.rms_norm(&hidden, &w.ffn_sub_norm, true);
        let down = linear(&ctx.projection_input(&ffn_sub), &w.down_proj);
        let mut out = after_attn.clone();
        out.data_mut()
            .iter_mut()
            .zip(down.data())
            .for_each(|(a, b)| *a += b);

        if let Some(lt) = lt {
            lt.attn_norm = xn;
            lt.q = q;
            lt.k = k;
            lt.v = v;
            lt.attn_weights = weights_trace;
            lt.attn_out = attn_out;
            lt.attn_sub_norm = attn_sub;
            lt.o_proj = o;
            lt.after_attn = after_attn;
            lt.mlp_norm = mn;
            lt.gate = gate;
            lt.up = up;
            lt.hidden = hidden;
            lt.ffn_sub_norm = ffn_sub;
            lt.down = down;
            lt.output = out.clone();
        }
        out
    }
}
