//! The encrypted model in the dense column-block layout: the whole hidden
//! state of a short prompt in ONE ciphertext, so that every nonlinearity runs
//! once per block instead of once per feature column.
//!
//! ENSI's column layout spends one ciphertext per feature column on `s`
//! tokens: at N = 2^16 that is 32768 slots for a handful of values, and every
//! per-column step (RoPE, QK^T, AV, the sigmoid, the gate activation) costs
//! a full ring product per column. Here, with `s` = the token count rounded up
//! to a power of two (one *block* of slots per column):
//!
//! * `Std(w)`: column c of a `w`-column matrix in block c (`w * s` slots);
//!   the residual stream, the normed state, the MLP's gate, up and hidden.
//! * `Big`: the attention layout, block `(j * H + h) * s + delta` for
//!   head-feature j (outermost), head h and diagonal shift delta (innermost),
//!   `d * s` blocks, `d * s * s` slots.
//!
//! Every projection is one *block map* ([`block_map`]): output block `ob`
//! reads `sum_ib w(ob, ib, t) x[ib][t]` with a per-token weight, evaluated by
//! the diagonal method over blocks with baby-step giant-step rotations. The
//! weight function folds in everything linear around the ternary weights: the
//! BitNet scale, the RMSNorm gain gamma, RoPE's cos/sin (they depend on the
//! token t, which the per-token weight allows), the 1/sqrt(d_head) of the
//! scores and the sigmoid's input map, the replication over shifts and heads
//! (GQA) the attention layout needs. So a projection costs one level, whatever
//! it carries.
//!
//! Attention in `Big`: q is replicated over the shifts, k and v are shifted by
//! delta tokens inside each block (one hoisted rotation per shift, masks for
//! the shift and, on v, the causal mask and validity); one product gives every
//! `q_t . k_{t - delta}` term, and summing over j — the outermost index, so the
//! sum is a cyclic rotate-and-sum over the whole ciphertext — leaves the score
//! of (h, delta, t) in EVERY block (j, h, delta): the sigmoid runs once on one
//! ciphertext and its output is already broadcast over the head's features,
//! so AV is one product and a rotate-and-sum over delta. Inside a block a shift
//! past the first token wraps to the same column's last tokens, so every slot
//! holds a genuine score (the column layout's convention) and the sigmoid's
//! interval covers all of them; the causal mask on v removes the wrapped ones.
//!
//! Level budget (`L` = 12, the bootstrap's output level; residual at level 1,
//! scale 2^34 so that the sum of squares fits the bootstrap's input range
//! without a level):
//!
//! | step | levels | level after |
//! | --- | --- | --- |
//! | main norm: `ss = sum x_c^2` (rotate-and-sum), bootstrap ss, 1/sqrt | 1 | residual 1 -> 0 |
//! | `x * r * K`, bootstrap | 1 | 0 -> L |
//! | q, k, v block maps (gamma, RoPE, scales folded) | 1 | L-1 |
//! | shift k and v by delta (hoisted rotations, masks) | 1 | L-2 |
//! | `q * k`, sum over j | 1 | L-3 |
//! | sigmoid (degree 15, input already in [-1, 1]) | 4 | L-7 (a level to spare from here) |
//! | `A * v`, sum over delta | 1 | o at L-8 |
//! | sub-norm: ss of o (masked square), bootstrap, 1/sqrt | | |
//! | o_proj block map (gamma folded), times r | 2 | L-10, dropped to 1 |
//! | MLP main norm | as above | L |
//! | gate, up block maps | 1 | L-1 |
//! | activation (degree 31 + affine) | 6 | L-7 |
//! | gate * up | 1 | L-8 |
//! | sub-norm, down block map, times r | 2 | L-10 = 2 |
//!
//! Bootstraps per block: 6, as in the column layout (2 per main norm, 1 per
//! sub-norm), each of `d * s` slots.

use crate::block::{
    generate_keys_with_steps, mul_const_to_scale, EncryptedLogits, EncryptedModel, ServerContext,
};
use crate::packing::{relabel, Layout, Packing};
use crate::{InferError, Result};
use ensi_ckks::circuits::bootstrap::BootstrapKeys;
use ensi_ckks::circuits::{ChebyshevPoly, PolynomialEvaluator};
use ensi_ckks::{Ciphertext, Decryptor, Encoder, Encryptor, Parameters, SecretKey};
use ensi_model::{Matrix, ModelConfig, TernaryMatrix};
use rayon::prelude::*;
use std::time::Instant;

/// The residual stream's level in the dense layout.
pub const DENSE_RESIDUAL_LEVEL: usize = 1;

/// log2 of the residual stream's scale: low enough that the sum of squares of
/// a block (scale ~ 2^(2 * 34 - 40)) times its bound (2^10 for the tiny model)
/// stays below the bootstrap's largest input scale (2^40) with no level spent.
pub const DENSE_RESIDUAL_LOG_SCALE: i32 = 34;

/// The sizes of the dense layouts for one model and packing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseShape {
    /// Slots per block: the token count rounded up to a power of two.
    pub s: usize,
    /// Hidden blocks (the hidden size, a power of two).
    pub d: usize,
    /// Intermediate blocks (the MLP width rounded up to a power of two).
    pub ff: usize,
    /// Query heads.
    pub heads: usize,
    /// Head dimension.
    pub hd: usize,
    /// Query heads per KV head.
    pub group: usize,
}

impl DenseShape {
    /// The shape for `cfg` with the packing's token count, checking that it
    /// fits: heads and head dimension powers of two with `heads * hd = hidden`,
    /// and the attention layout (`d s^2` slots) inside one ciphertext.
    pub fn new(cfg: &ModelConfig, packing: &Packing, log_n: u32) -> Result<Self> {
        let (heads, hd, d) = (cfg.num_heads, cfg.head_dim, cfg.hidden_size);
        if !heads.is_power_of_two() || !hd.is_power_of_two() || heads * hd != d {
            return Err(InferError::Shape(format!(
                "the dense layout needs power-of-two heads ({heads}) and head dimension ({hd}) \
                 with heads x head_dim = hidden ({d})"
            )));
        }
        let s = packing.tokens_pad;
        let ff = cfg.intermediate_size.next_power_of_two();
        let slots = 1usize << (log_n - 1);
        if d * s * s > slots || ff * s > slots {
            return Err(InferError::Shape(format!(
                "the dense layout of {d} columns and {s} token slots needs {} slots \
                 (attention) and {} (MLP) in one ciphertext of {slots}: use fewer tokens \
                 or the column layout",
                d * s * s,
                ff * s
            )));
        }
        Ok(Self {
            s,
            d,
            ff,
            heads,
            hd,
            group: heads / cfg.num_kv_heads.max(1),
        })
    }

    /// Blocks of the attention layout.
    pub fn big(&self) -> usize {
        self.d * self.s
    }

    /// (j, h, delta) of an attention block.
    fn big_index(&self, b: usize) -> (usize, usize, usize) {
        (
            b / (self.heads * self.s),
            (b / self.s) % self.heads,
            b % self.s,
        )
    }

    /// Every rotation the dense forward pass uses besides bootstrapping.
    pub fn rotation_steps(&self, packing: &Packing) -> Vec<i64> {
        let s = self.s as i64;
        let mut steps = packing.rotation_steps();
        // Block maps (baby and giant steps) for every input width.
        for (bi, maps) in [(self.d, 3), (self.d, 2), (self.ff, 1), (self.big(), 1)] {
            let n1 = baby_steps(bi, maps);
            steps.extend((1..n1).map(|j| j as i64 * s));
            steps.extend((1..bi.div_ceil(n1)).map(|g| (g * n1) as i64 * s));
        }
        // Token shifts of k and v.
        steps.extend((1..s).map(|delta| -delta));
        // Power-of-two block sums: over delta, over all blocks of any layout,
        // over j (a multiple of H s blocks).
        let mut m = 1;
        while m < self.big().max(self.ff) {
            steps.push(m as i64 * s);
            m *= 2;
        }
        steps.retain(|&x| x != 0);
        steps.sort_unstable();
        steps.dedup();
        steps
    }
}

/// Baby steps for `diagonals` block diagonals shared by `maps` block maps of
/// the same input: the power of two minimizing the rotations, a hoisted baby
/// rotation counted as 0.6 of a giant one (its decomposition is shared).
fn baby_steps(diagonals: usize, maps: usize) -> usize {
    let mut best = (f64::INFINITY, 1);
    let mut n1 = 1;
    while n1 <= diagonals {
        let cost = 0.6 * (n1 - 1) as f64 + (maps * (diagonals.div_ceil(n1) - 1)) as f64;
        if cost < best.0 {
            best = (cost, n1);
        }
        n1 *= 2;
    }
    best.1
}

/// A block map's weight: `w(output block, input block, token)`.
pub type BlockWeight<'a> = &'a (dyn Fn(usize, usize, usize) -> f64 + Sync);

/// `y[ob][t] = sum_ib w(ob, ib, t) x[ib][t]`: x in `bi` blocks of `s` slots
/// (the ciphertext has `bi s` slots), y in `bo` blocks, one level, the input's scale.
/// See [`block_maps`].
pub fn block_map(
    ctx: &ServerContext,
    x: &Ciphertext,
    s: usize,
    bi: usize,
    bo: usize,
    w: BlockWeight,
) -> Result<Ciphertext> {
    let mut out = block_maps(ctx, x, s, bi, &[(bo, w)])?;
    Ok(out.remove(0))
}

/// Several block maps of the same input, `(bo, w)` each, sharing its baby
/// rotations.
///
/// The diagonal method over blocks with `B = max(bi, bo)` working blocks (an
/// input with fewer blocks is read as its period repeated; an output with
/// fewer is computed in every period): `y = sum_k D_k (.) rot(x, k s)`,
/// `D_k[b][t] = w(b mod bo, (b + k) mod bi, t)`, k in 0..bi. Baby-step
/// giant-step with k = g n1 + j: the n1 baby rotations share one decomposition
/// (and every map), each giant step costs one rotation, the diagonals are
/// pre-rotated in the clear and encoded one at a time (their memory is never
/// all held at once).
pub fn block_maps(
    ctx: &ServerContext,
    x: &Ciphertext,
    s: usize,
    bi: usize,
    maps: &[(usize, BlockWeight)],
) -> Result<Vec<Ciphertext>> {
    let eval = ctx.eval();
    if x.log_slots() != (bi * s).trailing_zeros() || x.level() == 0 {
        return Err(InferError::Shape(format!(
            "block map input has 2^{} slots at level {}, expected {bi} blocks of {s} slots \
             at level >= 1",
            x.log_slots(),
            x.level()
        )));
    }
    let bw_max = maps.iter().map(|m| m.0).max().unwrap_or(bi).max(bi);
    // Babies at the widest working slot count: a periodic vector read with
    // more slots is the same ciphertext, so every map can relabel them.
    let x = relabel(x, (bw_max * s).trailing_zeros());
    let n1 = baby_steps(bi, maps.len());
    let giants = bi.div_ceil(n1);
    let steps: Vec<i64> = (1..n1).map(|j| (j * s) as i64).collect();
    let mut babies = vec![x.clone()];
    babies.extend(eval.rotate_hoisted(&x, &steps)?);
    let level = x.level();
    let pt_scale = eval.params().q()[level] as f64;
    let encoder = ctx.encoder();
    let tasks: Vec<(usize, usize)> = (0..maps.len())
        .flat_map(|m| (0..giants).map(move |g| (m, g)))
        .collect();
    let parts: Vec<Option<Ciphertext>> = tasks
        .par_iter()
        .map(|&(m, g)| {
            let (bo, w) = maps[m];
            let bw = bi.max(bo);
            let lw = (bw * s).trailing_zeros();
            let shift = g * n1;
            let mut acc: Option<Ciphertext> = None;
            let mut buf = vec![0.0; bw * s];
            for (j, baby) in babies.iter().enumerate().take(bi - shift) {
                let k = shift + j;
                let mut nonzero = false;
                for bp in 0..bw {
                    // Pre-rotated right by the giant step: block bp holds D_k[bp - shift].
                    let b = (bp + bw - shift % bw) % bw;
                    let (ob, ib) = (b % bo, (b + k) % bi);
                    for t in 0..s {
                        let v = w(ob, ib, t);
                        buf[bp * s + t] = v;
                        nonzero |= v != 0.0;
                    }
                }
                if !nonzero {
                    continue;
                }
                let pt = encoder.encode_real(&buf, level, pt_scale, lw)?;
                // A map narrower than the widest reads the babies with its own
                // slot count (a relabeling copy, only then).
                let term = if baby.log_slots() == lw {
                    eval.mul_plain(baby, &pt)?
                } else {
                    eval.mul_plain(&relabel(baby, lw), &pt)?
                };
                match acc.as_mut() {
                    Some(a) => eval.add_assign(a, &term)?,
                    None => acc = Some(term),
                }
            }
            match acc {
                Some(a) if shift > 0 => Ok(Some(eval.rotate(&a, (shift * s) as i64)?)),
                other => Ok(other),
            }
        })
        .collect::<Result<_>>()?;
    let mut parts = parts.into_iter();
    maps.iter()
        .map(|&(bo, _)| {
            let mut it = parts.by_ref().take(giants).flatten();
            let mut y = it
                .next()
                .ok_or_else(|| InferError::Shape("block map with an all-zero weight".into()))?;
            for p in it {
                eval.add_assign(&mut y, &p)?;
            }
            Ok(relabel(&eval.rescale(&y)?, (bo * s).trailing_zeros()))
        })
        .collect()
}

/// `x + rot(x, step) + rot(x, 2 step) + ...` over `count` (a power of two)
/// terms in log2(count) rotations.
pub(crate) fn rotate_sum(
    ctx: &ServerContext,
    x: &Ciphertext,
    step: usize,
    count: usize,
) -> Result<Ciphertext> {
    let eval = ctx.eval();
    let mut acc = x.clone();
    let mut m = 1;
    while m < count {
        let r = eval.rotate(&acc, (m * step) as i64)?;
        eval.add_assign(&mut acc, &r)?;
        m *= 2;
    }
    Ok(acc)
}

/// W[o][i] as f64, zero outside W (the padding blocks of a layout).
pub(crate) fn ternary_weight(m: &TernaryMatrix, o: usize, i: usize) -> f64 {
    if o < m.rows() && i < m.cols() {
        f64::from(m.values()[o * m.cols() + i])
    } else {
        0.0
    }
}

/// Intermediates of one dense block, each as (name, ciphertext in `Std(w)`,
/// factor, per-column gains): value = factor * gain_c * decrypted.
#[derive(Default)]
pub struct DenseTrace {
    /// Named intermediates.
    pub steps: Vec<(&'static str, Ciphertext, f64, Option<Vec<f64>>)>,
}

impl EncryptedModel {
    /// The dense shape for a packing.
    pub fn dense_shape(&self, packing: &Packing, log_n: u32) -> Result<DenseShape> {
        DenseShape::new(self.model().config(), packing, log_n)
    }

    /// Main RMSNorm in the dense layout: returns `K x / rms(x)` (no gain:
    /// the gains ride on the next block maps) refreshed at the bootstrap's
    /// output level, and K.
    fn dense_norm(
        &self,
        ctx: &ServerContext,
        sh: &DenseShape,
        x: &Ciphertext,
    ) -> Result<(Ciphertext, f64)> {
        let eval = ctx.eval();
        let t = Instant::now();
        let sq = eval.rescale(&eval.mul(x, x)?)?;
        let ss = rotate_sum(ctx, &sq, sh.s, sh.d)?;
        let fitted = ctx.fit_for_bootstrap(&ss, self.ss_bound(sh.d))?;
        ctx.record("norm_ss", t.elapsed(), 1);
        let r = self.inv_rms_of_fitted(ctx, &fitted)?;
        let t = Instant::now();
        let (r, k) = self.norm_multiplier(ctx, x, &r, sh.d)?;
        let y = eval.rescale(&eval.mul(x, &r)?)?;
        ctx.record("norm_mul", t.elapsed(), 1);
        Ok((ctx.bootstrap(&ctx.fit_for_bootstrap(&y, 1.0)?)?, k))
    }

    /// The main norms' multiplier `K r / sqrt(B_v)` (r = `sqrt(B_v) / rms`)
    /// for a state like `x` of `width` features, scaled so that `x` times it
    /// lands at half the bootstrap's largest input scale; and K.
    /// |x_c / rms(x)| <= sqrt(width) (one square is at most the sum), with a
    /// margin for the inverse square root's error: K x / rms(x) is in [-1, 1].
    pub(crate) fn norm_multiplier(
        &self,
        ctx: &ServerContext,
        x: &Ciphertext,
        r: &Ciphertext,
        width: usize,
    ) -> Result<(Ciphertext, f64)> {
        let eval = ctx.eval();
        let k = 1.0 / (1.05 * (width as f64).sqrt());
        let level = x.level().min(r.level() - 1);
        let prime = eval.params().q()[level] as f64;
        let target = ctx.max_input_scale() / 2.0 * prime / x.scale();
        let r = mul_const_to_scale(eval, r, k / self.inv_sqrt_div().sqrt(), target)?;
        Ok((r, k))
    }

    /// `ss / bound <= 1` for the sum of squares of `width` features whose mean
    /// lies in the inverse square root's interval.
    pub(crate) fn ss_bound(&self, width: usize) -> f64 {
        2.0 * self.inv_sqrt_div() * width as f64
    }

    /// `z * r` with r = `sqrt(B_v) / rms`, landing at `target_scale`.
    pub(crate) fn times_inv_rms(
        &self,
        ctx: &ServerContext,
        z: &Ciphertext,
        r: &Ciphertext,
        target_scale: f64,
    ) -> Result<Ciphertext> {
        let eval = ctx.eval();
        let level = z.level().min(r.level() - 1);
        let prime = eval.params().q()[level] as f64;
        let target_r = target_scale * prime / z.scale();
        let r = mul_const_to_scale(eval, r, 1.0 / self.inv_sqrt_div().sqrt(), target_r)?;
        Ok(eval.rescale(&eval.mul(z, &r)?)?)
    }

    /// One block on the dense residual stream (`Std(d)` at
    /// [`DENSE_RESIDUAL_LEVEL`]) for `tokens` real tokens.
    pub fn dense_block(
        &self,
        ctx: &ServerContext,
        layer: usize,
        x: &Ciphertext,
        tokens: usize,
        mut trace: Option<&mut DenseTrace>,
    ) -> Result<Ciphertext> {
        let eval = ctx.eval();
        let model = self.model();
        let cfg = model.config();
        let w = &model.layers()[layer];
        let sh = self.dense_shape(ctx.packing(), eval.params().log_n())?;
        let (s, hd, heads) = (sh.s, sh.hd, sh.heads);
        let residual_scale = x.scale();
        let mut record = |name: &'static str, ct: &Ciphertext, f: f64, g: Option<&[f64]>| {
            if let Some(t) = trace.as_deref_mut() {
                t.steps.push((name, ct.clone(), f, g.map(<[f64]>::to_vec)));
            }
        };

        // ---- Attention ----
        let (y, k_norm) = self.dense_norm(ctx, &sh, x)?;
        record("attn_norm", &y, 1.0 / k_norm, Some(&w.input_norm));
        let sig = &self.polys().sigmoid;
        let (sa, sb) = (sig.a, sig.b);
        // Scores enter the sigmoid polynomial as 2 (z - mid) / width: the
        // factor of q.k goes into q's weights, the bias into a plaintext.
        let q_factor = 2.0 / ((sb - sa) * (hd as f64).sqrt());
        let inv_freq = model.inv_freq();
        let gamma = &w.input_norm;
        let rope_weight = |m: &TernaryMatrix, row_base: usize, j: usize, i: usize, t: usize| {
            let half = hd / 2;
            let (fi, partner, sign) = if j < half {
                (j, j + half, -1.0)
            } else {
                (j - half, j - half, 1.0)
            };
            let angle = t as f64 * inv_freq[fi];
            let c = m.cols();
            let own = f64::from(m.values()[(row_base + j) * c + i]);
            let other = f64::from(m.values()[(row_base + partner) * c + i]);
            angle.cos() * own + sign * angle.sin() * other
        };
        let std_in = |i: usize| i < cfg.hidden_size;
        let t0 = Instant::now();
        let qa = w.q_proj.scale() / k_norm * q_factor;
        let wq = |ob: usize, i: usize, t: usize| {
            let (j, h, _) = sh.big_index(ob);
            if !std_in(i) {
                return 0.0;
            }
            qa * gamma[i] * rope_weight(&w.q_proj, h * hd, j, i, t)
        };
        let ka = w.k_proj.scale() / k_norm;
        let wk = |ob: usize, i: usize, t: usize| {
            let (j, h, _) = sh.big_index(ob);
            if !std_in(i) {
                return 0.0;
            }
            ka * gamma[i] * rope_weight(&w.k_proj, (h / sh.group) * hd, j, i, t)
        };
        let va = w.v_proj.scale() / k_norm;
        let wv = |ob: usize, i: usize, _t: usize| {
            let (j, h, _) = sh.big_index(ob);
            if !std_in(i) {
                return 0.0;
            }
            let row = (h / sh.group) * hd + j;
            va * gamma[i] * f64::from(w.v_proj.values()[row * w.v_proj.cols() + i])
        };
        let big = sh.big();
        let [q_big, k_rep, v_rep]: [Ciphertext; 3] =
            block_maps(ctx, &y, s, sh.d, &[(big, &wq), (big, &wk), (big, &wv)])?
                .try_into()
                .map_err(|_| InferError::Shape("three projections".into()))?;
        ctx.record("qkv_map", t0.elapsed(), 1);

        let t0 = Instant::now();
        // k: every slot of block (j, h, delta) reads key t - delta, wrapping to
        // the same column's last tokens (genuine scores, masked on v's side).
        let k_big = self.shift_tokens(ctx, &sh, &k_rep, &|_, _| 1.0)?;
        // v: only keys at or before the query and among the real tokens.
        let v_big = self.shift_tokens(ctx, &sh, &v_rep, &|delta, t| {
            if t >= delta && t - delta < tokens {
                1.0
            } else {
                0.0
            }
        })?;
        ctx.record("kv_shift", t0.elapsed(), 1);

        let t0 = Instant::now();
        let prod = eval.rescale(&eval.mul(&q_big, &k_big)?)?;
        let scores = rotate_sum(ctx, &prod, heads * s * s, hd)?;
        let bias: Vec<f64> = (0..sh.big() * s)
            .map(|slot| {
                let t = slot % s;
                let b = self.polys().spec.sigmoid_bias.bias(t, tokens);
                (2.0 * b - (sa + sb)) / (sb - sa)
            })
            .collect();
        let pt =
            ctx.encoder()
                .encode_real(&bias, scores.level(), scores.scale(), scores.log_slots())?;
        let scores = eval.add_plain(&scores, &pt)?;
        ctx.record("qk", t0.elapsed(), 1);
        let t0 = Instant::now();
        let coeffs = ChebyshevPoly::new(-1.0, 1.0, sig.coeffs.clone())?;
        let pe = PolynomialEvaluator::new(eval);
        let a = pe.evaluate(&scores, &coeffs)?.0;
        ctx.record("sigmoid", t0.elapsed(), coeffs.depth());
        let t0 = Instant::now();
        let av = eval.rescale(&eval.mul(&a, &v_big)?)?;
        let o_big = rotate_sum(ctx, &av, s, s)?;
        ctx.record("av", t0.elapsed(), 1);

        // Sub-norm on o (blocks (j, h, 0) of o_big): ss of the masked square.
        let r = self.big_sub_norm_r(ctx, &sh, &o_big)?;
        let t0 = Instant::now();
        let gsub = &w.attn_sub_norm;
        let oa = w.o_proj.scale();
        let z = block_map(ctx, &o_big, s, sh.big(), sh.d, &|c, ib, _| {
            let (j, h, delta) = sh.big_index(ib);
            let i = h * hd + j;
            if delta != 0 || c >= cfg.hidden_size {
                return 0.0;
            }
            oa * gsub[i] * f64::from(w.o_proj.values()[c * w.o_proj.cols() + i])
        })?;
        let branch = self.times_inv_rms(ctx, &z, &r, residual_scale)?;
        let after_attn = eval.add(x, &branch)?;
        ctx.record("o_map_residual", t0.elapsed(), 2);
        record("after_attn", &after_attn, 1.0, None);

        // ---- MLP ----
        let (y, k_norm) = self.dense_norm(ctx, &sh, &after_attn)?;
        let gamma = &w.post_attention_norm;
        record("mlp_norm", &y, 1.0 / k_norm, Some(gamma));
        let t0 = Instant::now();
        let (ga, ua) = (w.gate_proj.scale() / k_norm, w.up_proj.scale() / k_norm);
        let wg = |o: usize, i: usize, _t: usize| {
            ternary_weight(&w.gate_proj, o, i) * ga * gamma.get(i).copied().unwrap_or(0.0)
        };
        let wu = |o: usize, i: usize, _t: usize| {
            ternary_weight(&w.up_proj, o, i) * ua * gamma.get(i).copied().unwrap_or(0.0)
        };
        let [gate, up]: [Ciphertext; 2] =
            block_maps(ctx, &y, s, sh.d, &[(sh.ff, &wg), (sh.ff, &wu)])?
                .try_into()
                .map_err(|_| InferError::Shape("two projections".into()))?;
        ctx.record("gate_up_map", t0.elapsed(), 1);
        let t0 = Instant::now();
        let act = self.polys().activation(cfg.activation);
        let act = ChebyshevPoly::new(act.a, act.b, act.coeffs.clone())?;
        let g = pe.evaluate(&gate, &act)?.0;
        let hidden = eval.rescale(&eval.mul(&g, &up)?)?;
        ctx.record("activation_gate_up", t0.elapsed(), act.depth() + 1);
        record("hidden", &hidden, 1.0, None);

        let t0 = Instant::now();
        let bound = self.ss_bound(cfg.intermediate_size);
        let prime = eval.params().q()[hidden.level() - 1] as f64;
        let target = ctx.max_input_scale() / 2.0 * prime / hidden.scale();
        let scaled = mul_const_to_scale(eval, &hidden, 1.0 / bound, target)?;
        let sq = eval.rescale(&eval.mul(&scaled, &hidden)?)?;
        let ss = relabel(
            &rotate_sum(ctx, &sq, s, sh.ff)?,
            ctx.packing().packed_log_slots(),
        );
        ctx.record("subnorm_ss", t0.elapsed(), 2);
        let r = self.inv_rms_of_fitted(ctx, &ss)?;
        let t0 = Instant::now();
        let gsub = &w.ffn_sub_norm;
        let da = w.down_proj.scale();
        let down = block_map(ctx, &hidden, s, sh.ff, sh.d, &|c, i, _| {
            if c >= cfg.hidden_size || i >= cfg.intermediate_size {
                return 0.0;
            }
            da * gsub[i] * f64::from(w.down_proj.values()[c * w.down_proj.cols() + i])
        })?;
        let branch = self.times_inv_rms(ctx, &down, &r, residual_scale)?;
        let out = eval.add(&after_attn, &branch)?;
        ctx.record("down_map_residual", t0.elapsed(), 2);
        record("output", &out, 1.0, None);
        if out.level() < DENSE_RESIDUAL_LEVEL {
            return Err(InferError::Shape(format!(
                "the block left the residual stream at level {} (< {DENSE_RESIDUAL_LEVEL})",
                out.level()
            )));
        }
        Ok(eval.drop_to_level(&out, DENSE_RESIDUAL_LEVEL)?)
    }

    /// `sum_delta mask_delta (.) rot(x, -delta)` over the attention layout,
    /// `mask_delta` keeping the blocks of shift delta with `value(delta, t)`:
    /// one level, the rotations hoisted.
    fn shift_tokens(
        &self,
        ctx: &ServerContext,
        sh: &DenseShape,
        x: &Ciphertext,
        value: &(dyn Fn(usize, usize) -> f64 + Sync),
    ) -> Result<Ciphertext> {
        let eval = ctx.eval();
        let s = sh.s;
        let steps: Vec<i64> = (1..s as i64).map(|d| -d).collect();
        let mut rots = vec![x.clone()];
        rots.extend(eval.rotate_hoisted(x, &steps)?);
        let level = x.level();
        let q = eval.params().q()[level] as f64;
        let terms: Vec<Ciphertext> = rots
            .par_iter()
            .enumerate()
            .map(|(delta, r)| {
                let mut m = vec![0.0; sh.big() * s];
                for b in 0..sh.big() {
                    if b % s == delta {
                        for t in 0..s {
                            m[b * s + t] = value(delta, t);
                        }
                    }
                }
                let pt = ctx.encoder().encode_real(&m, level, q, x.log_slots())?;
                Ok(eval.mul_plain(r, &pt)?)
            })
            .collect::<Result<_>>()?;
        let mut acc = terms[0].clone();
        for t in &terms[1..] {
            eval.add_assign(&mut acc, t)?;
        }
        Ok(eval.rescale(&acc)?)
    }

    /// The sub-norm's `sqrt(B_v) / rms(o)` from o in the attention layout
    /// (valid in the blocks of shift 0): the masked square carries 1/bound,
    /// a rotate-and-sum over every block leaves the per-token sum everywhere.
    fn big_sub_norm_r(
        &self,
        ctx: &ServerContext,
        sh: &DenseShape,
        o_big: &Ciphertext,
    ) -> Result<Ciphertext> {
        let eval = ctx.eval();
        let t0 = Instant::now();
        let s = sh.s;
        let bound = self.ss_bound(self.model().config().hidden_size);
        let level = o_big.level();
        let (q_hi, q_lo) = (
            eval.params().q()[level] as f64,
            eval.params().q()[level - 1] as f64,
        );
        // Mask scale so that (o * m) * o lands at half the bootstrap's largest input scale.
        let target = ctx.max_input_scale() / 2.0;
        let m_scale = target * q_hi * q_lo / (o_big.scale() * o_big.scale());
        let mut m = vec![0.0; sh.big() * s];
        for b in (0..sh.big()).filter(|b| b % s == 0) {
            m[b * s..(b + 1) * s].fill(1.0 / bound);
        }
        let pt = ctx
            .encoder()
            .encode_real(&m, level, m_scale, o_big.log_slots())?;
        let masked = eval.rescale(&eval.mul_plain(o_big, &pt)?)?;
        let sq = eval.rescale(&eval.mul(&masked, o_big)?)?;
        let ss = relabel(
            &rotate_sum(ctx, &sq, s, sh.big())?,
            ctx.packing().packed_log_slots(),
        );
        ctx.record("subnorm_ss", t0.elapsed(), 2);
        self.inv_rms_of_fitted(ctx, &ss)
    }

    /// The whole model in the dense layout: every block, the final norm and
    /// the LM head on the last real position.
    pub fn dense_forward(
        &self,
        ctx: &ServerContext,
        x: Ciphertext,
        tokens: usize,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<EncryptedLogits> {
        let cfg = self.model().config();
        let packing = ctx.packing();
        if tokens == 0 || tokens > packing.tokens_pad {
            return Err(InferError::Shape(format!(
                "{tokens} tokens; the keys allow 1..={}",
                packing.tokens_pad
            )));
        }
        if x.log_slots() != packing.packed_log_slots() || x.level() < DENSE_RESIDUAL_LEVEL {
            return Err(InferError::Shape(format!(
                "input with 2^{} slots at level {}; expected 2^{} slots at level >= {}",
                x.log_slots(),
                x.level(),
                packing.packed_log_slots(),
                DENSE_RESIDUAL_LEVEL
            )));
        }
        let eval = ctx.eval();
        let mut x = eval.drop_to_level(&x, DENSE_RESIDUAL_LEVEL)?;
        let layers = cfg.num_layers;
        for l in 0..layers {
            progress(l, layers + 1);
            x = self.dense_block(ctx, l, &x, tokens, None)?;
        }
        progress(layers, layers + 1);
        let sh = self.dense_shape(packing, eval.params().log_n())?;
        let (y, k) = self.dense_norm(ctx, &sh, &x)?;
        let logits = self.lm_head(ctx, &y, k, self.model().final_norm(), tokens)?;
        progress(layers + 1, layers + 1);
        Ok(logits)
    }
}

/// The packing for a model at `params` and `max_tokens`: the given layout, or
/// by default the dense layout where it fits one ciphertext (it runs every
/// nonlinearity once per block instead of once per column) and ENSI's column
/// layout otherwise.
pub fn choose_packing(
    cfg: &ModelConfig,
    params: &Parameters,
    max_tokens: usize,
    layout: Option<Layout>,
) -> Result<Packing> {
    if layout == Some(Layout::Wide) {
        return crate::wide::wide_packing(cfg, params, max_tokens);
    }
    let columns = Packing::new(max_tokens, cfg.hidden_size, params.log_n())?;
    let dense = Packing {
        layout: Layout::Dense,
        ..columns
    };
    let fits = DenseShape::new(cfg, &dense, params.log_n());
    match layout {
        Some(Layout::Columns) => Ok(columns),
        Some(Layout::Dense) => fits.map(|_| dense),
        Some(Layout::Wide) => unreachable!("returned above"),
        None => Ok(if fits.is_ok() { dense } else { columns }),
    }
}

/// The server's keys for the model in its packing's layout (client side:
/// needs the secret key): bootstrapping plus the layout's own rotations.
pub fn generate_model_keys(
    params: &Parameters,
    cfg: &ModelConfig,
    packing: &Packing,
    sk: &SecretKey,
) -> Result<BootstrapKeys> {
    let extra = match packing.layout {
        Layout::Columns => packing.rotation_steps(),
        Layout::Dense => DenseShape::new(cfg, packing, params.log_n())?.rotation_steps(packing),
        Layout::Wide => return crate::wide::generate_wide_keys(params, cfg, packing, sk),
    };
    generate_keys_with_steps(params, packing, sk, extra)
}

/// Encrypts embedded tokens (tokens x hidden) in the dense layout, one
/// ciphertext at [`DENSE_RESIDUAL_LEVEL`] and scale 2^[`DENSE_RESIDUAL_LOG_SCALE`]
/// (client side). Padding rows repeat the last token, as in the column layout.
pub fn encrypt_dense(
    params: &Parameters,
    packing: &Packing,
    sk: &SecretKey,
    x: &Matrix,
) -> Result<Ciphertext> {
    let (tokens, hidden) = (x.rows(), x.cols());
    if tokens == 0 || tokens > packing.tokens_pad || hidden != packing.hidden {
        return Err(InferError::Shape(format!(
            "{tokens} x {hidden} embeddings for a packing of at most {} tokens x {}",
            packing.tokens_pad, packing.hidden
        )));
    }
    let s = packing.tokens_pad;
    let mut v = vec![0.0; s * packing.blocks];
    for c in 0..hidden {
        for t in 0..s {
            v[c * s + t] = x.get(t.min(tokens - 1), c);
        }
    }
    let encoder = Encoder::new(params);
    let pt = encoder.encode_real(
        &v,
        DENSE_RESIDUAL_LEVEL,
        f64::from(DENSE_RESIDUAL_LOG_SCALE).exp2(),
        packing.packed_log_slots(),
    )?;
    Ok(Encryptor::with_secret_key(params, sk).encrypt(&pt)?)
}

/// Decrypts a `Std(cols)` ciphertext with `s` slots per block into a
/// `tokens x cols` matrix (client side; tests and traces).
pub fn decrypt_dense(
    params: &Parameters,
    sk: &SecretKey,
    ct: &Ciphertext,
    s: usize,
    (tokens, cols): (usize, usize),
) -> Result<Matrix> {
    let v = Encoder::new(params).decode_real(&Decryptor::new(sk).decrypt(ct)?);
    if v.len() < cols * s || tokens > s {
        return Err(InferError::Shape(format!(
            "{} slots for {cols} columns of {s} (tokens {tokens})",
            v.len()
        )));
    }
    let mut m = Matrix::zeros(tokens, cols);
    for c in 0..cols {
        for t in 0..tokens {
            m.row_mut(t)[c] = v[c * s + t];
        }
    }
    Ok(m)
}
