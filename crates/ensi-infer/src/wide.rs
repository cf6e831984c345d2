//! The encrypted block in the *wide* layout: the dense column-block layout
//! spread over several ciphertexts, for states one ciphertext cannot hold
//! (1bitllm-large at 128 tokens: 1536 columns x 128 token slots = 6 full
//! ciphertexts at N = 2^16).
//!
//! Every ciphertext uses all N/2 slots: `B = N / (2 s)` blocks of `s` token
//! slots (s = the token count rounded up to a power of two). Two layouts:
//!
//! * `Std(w)`: column c in block `c mod B` of ciphertext `c / B` (the
//!   residual stream, the normed state, the MLP's gate, up and hidden);
//! * `Heads`: queries, keys, values and the attention output, block b of
//!   ciphertext m holding head `h = b mod H'` and head feature
//!   `j = m (B / H') + b / H'` (H' = heads rounded up to a power of two;
//!   the padding heads and features are zero). Every ciphertext holds every
//!   head, so a sum over a head's features is a sum over the ciphertexts
//!   (one relinearization) and a rotate-and-sum over the `B / H'` feature
//!   groups inside one.
//!
//! **Complex packing.** The slots are complex and the values real, so every
//! ciphertext carries two real ones of these layouts: complex ciphertext m
//! holds real ciphertext m in its real parts and real ciphertext `m + C`
//! (C = half the count, rounded up: [`packed`]) in its imaginary parts. A
//! real-linear map is `A z + B conj(z)` ([`wide_maps`]): one complex diagonal
//! stands for four real ones, so half the diagonals are encoded and
//! multiplied. The residual stream, the normed states (half the bootstraps),
//! q, k, v and o travel packed; `sum |z|^2` is the sum of squares of both
//! halves and `Re(sum q conj(k))` the scores. Only the MLP's activation needs
//! real slots: gate and up are unpacked (one conjugation each) and the
//! hidden state packed again (a multiplication by i is free).
//!
//! Projections are block maps over several ciphertexts ([`wide_maps`]): the
//! diagonal method over blocks, baby-step giant-step, every linear factor
//! around the ternary weights folded into the diagonals (BitNet scale, the
//! RMSNorm gain, RoPE's per-token cos/sin, 1/sqrt(d_head) and the sigmoid's
//! input map, the column order of `Heads`, GQA's sharing of KV heads). One
//! level each, whatever they carry. The diagonals are made as they are used
//! (a 1536 x 1536 map has 9216 of them, 60 GB encoded), one giant step at a
//! time, for every output at once: each is only rounded, and its residues are
//! reduced, transformed and multiplied limb by limb inside the products.
//!
//! Attention runs over the token shifts delta = 0..s, two at a time (delta
//! and delta + s/2) and in chunks of 8 such pairs. One product ciphertext
//! carries both scores of a pair: with `K+ = K + i rot(K, -s/2)` and
//! `K- = conj(K) + i rot(conj(K), -s/2)` (made once), shifted by delta,
//! `Y = sum_m Q_m rot(K-_m, -delta) + conj(Q_m) rot(K+_m, -delta)` (one
//! relinearization) holds, per feature group, a partial sum of
//! `(R_delta + i R_(delta + s/2)) / 2`, R the real scores
//! (`Q conj(K) + conj(Q) K = 2 Re(Q conj(K))` sums both packed halves).
//! The shift is split baby-step giant-step, delta = base + b with base a
//! multiple of 8: `Q rot(K, -delta) = rot(rot(Q, base) rot(K, -b), -base)`,
//! so the keys are rotated by the eight babies once (hoisted), the queries by
//! each chunk's base, and the rotation back by -base is taken once per packed
//! ciphertext (its masks pre-rotated by base): at 1bitllm-large 42 hoisted
//! rotations of keys, 42 of queries and 8 back, where shifting the keys took
//! 384 (336 of them hoisted). The values split the same way: v and
//! rot(v, -s/2) are rotated by the babies once, and each chunk works in a
//! frame turned by its base (its causal and group masks encoded turned, the
//! sigmoid's outputs turned by +base, its products turned back by -base):
//! 4 rotations per chunk where a giant rotation of each value ciphertext and
//! its hoisted babies took 48.
//! **Packed scores.** A score summed over the G = B / H' feature groups of a
//! ciphertext would stand in all G of them; instead G scores share one
//! ciphertext, score `p G + g` in group g: `W = sum_r rot(sum_sigma M_(g_sigma + r)
//! Y_sigma, r groups)` with M_g the 0/1 mask of group g and Y_sigma = Y or
//! -i Y (the imaginary half), then `W + conj(W)` (the real part). One mask
//! level and G - 1 rotations per G scores, where a rotate-and-sum per score
//! took log2 G; the sigmoid then runs on s / G ciphertexts instead of s (8,
//! not 128, at 1bitllm-large). Its output A is rotated by whole groups
//! (hoisted), so that `rot(A, r groups)` holds in group f the weight of
//! score `p G + (f + r) mod G`, and multiplied by `V_(p,r) = sum_f M_f
//! V_sigma` (the values of that score's shift in group f, `V_delta = rot(V,
//! -delta)` masked to the keys at or before the query and among the real
//! tokens): `o_m = sum_(p,r) rot(A_p, r) V_(p,r),m`, one relinearization per
//! chunk. The value side has levels to spare (v is computed two levels above
//! A); the score side pays the packing's level with the sigmoid's degree: 15
//! (depth 4) instead of ENSI's 16 (depth 5). A query slot t < delta reads,
//! through the rotation, the last keys of the neighbouring block: a dot
//! product of a query with another head's (or a permuted) key, bounded like
//! any score by |q| |k|, so inside the sigmoid's interval when the real
//! scores are; the causal mask on V zeroes its weight.
//!
//! Level budget (`L` = 11, the full-slot bootstrap's output level with two
//! SlotsToCoeffs levels; residual at level 1, scale 2^[`wide_residual_log_scale`]):
//!
//! | step | levels | level after |
//! | --- | --- | --- |
//! | main norm: `ss = sum_m sum_c x^2`, rotate-and-sum, bootstrap ss, 1/sqrt | 1 | residual 1 -> 0 |
//! | `x * r * K` per ciphertext, bootstrap each | 1 | 0 -> L |
//! | q, k maps (gamma, RoPE, scales folded) | 1 | L-1 |
//! | v map, from the normed state dropped to L-4 | 1 | L-5 |
//! | v masked per shift (causal), then per feature group | 2 | L-7 |
//! | `Y = sum_m q_m K-_delta,m + conj(q_m) K+_delta,m` | 1 | L-2 |
//! | pack G scores per ciphertext (group masks, rotations, real part) | 1 | L-3 |
//! | sigmoid (degree 15, input already in [-1, 1]) | 4 | L-7 |
//! | `sum_(p,r) rot(A_p, r) V_(p,r)` | 1 | o at L-8 |
//! | sub-norm: ss of o, bootstrap ss, 1/sqrt | 2 (on a copy) | |
//! | o_proj map (gamma folded), times r | 2 | L-10 = 1 |
//! | MLP main norm | as above | L |
//! | gate map (its input map folded), from the normed state dropped to L-1; up map from L-6 | 1 | L-2; L-7 |
//! | activation (degree 31 on [-1, 1]) | 5 | L-7 |
//! | gate * up | 1 | L-8 |
//! | sub-norm, down map, times r | 2 | L-10 = 1 |
//!
//! Bootstraps per block: `2 (1 + ceil(C_d / 2)) + 2` (C_d = the hidden
//! state's real ciphertexts, packed two by two: 6, so 3 bootstrapped per
//! main norm, at 1bitllm-large, s = 128), all inside RMSNorms. The packed
//! states are refreshed at all N/2 slots; the sums of squares, the same in
//! every block, at s slots ([`crate::block::sum_bootstrap_config`]: one
//! SlotsToCoeffs level, so their inverse square roots start at L + 1).

use crate::block::{
    bootstrap_config, mul_const_to_scale, sum_bootstrap_config, EncryptedModel, ServerContext,
};
use crate::dense_model::{
    rotate_sum, ternary_weight, DENSE_RESIDUAL_LEVEL, DENSE_RESIDUAL_LOG_SCALE,
};
use crate::packing::{Layout, Packing};
use crate::{InferError, Result};
use ensi_ckks::circuits::bootstrap::{BootstrapConfig, BootstrapKeys};
use ensi_ckks::circuits::{ChebyshevPoly, PolynomialEvaluator};
use ensi_ckks::{
    Ciphertext, Complex64, Decryptor, Encoder, Encryptor, Evaluator, Parameters, PlainCoefficients,
    Plaintext, SecretKey,
};
use ensi_model::{Matrix, ModelConfig};
use rayon::prelude::*;
use std::time::Instant;

/// Baby rotations held at once are capped at this many per map call
/// (`C_in n1` ciphertexts): 256 at 1bitllm-large is about 3 GB.
const MAX_BABIES: usize = 256;

/// Token shifts processed together in attention, each with its partner s/2
/// further: their rotated keys and values are held at once (4 C_h per shift).
const SHIFT_CHUNK: usize = 8;

/// The sizes of the wide layouts for one model and token count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WideShape {
    /// Token slots per block (a power of two).
    pub s: usize,
    /// Blocks per ciphertext: N / (2 s).
    pub blocks: usize,
    /// Hidden size.
    pub d: usize,
    /// MLP width.
    pub ff: usize,
    /// Query heads.
    pub heads: usize,
    /// Heads rounded up to a power of two (the head index's period in `Heads`).
    pub heads_pad: usize,
    /// Head dimension.
    pub hd: usize,
    /// Query heads per KV head.
    pub group: usize,
    /// Ciphertexts of `Std(d)`, `Std(ff)` and `Heads`.
    pub c_d: usize,
    /// See `c_d`.
    pub c_ff: usize,
    /// See `c_d`.
    pub c_h: usize,
}

impl WideShape {
    /// The shape for `cfg` in a wide packing.
    pub fn new(cfg: &ModelConfig, packing: &Packing) -> Result<Self> {
        let (s, blocks) = (packing.tokens_pad, packing.blocks);
        if packing.layout != Layout::Wide || !s.is_power_of_two() || !blocks.is_power_of_two() {
            return Err(InferError::Shape(format!(
                "not a wide packing: {:?} layout, {s} token slots, {blocks} blocks",
                packing.layout
            )));
        }
        if s < 2 {
            return Err(InferError::Shape(
                "the wide layout pairs token shifts: it needs at least 2 token slots".into(),
            ));
        }
        let heads_pad = cfg.num_heads.next_power_of_two();
        if heads_pad > blocks
            || cfg.num_kv_heads == 0
            || !cfg.num_heads.is_multiple_of(cfg.num_kv_heads)
        {
            return Err(InferError::Shape(format!(
                "the wide layout needs the {} heads (rounded up to {heads_pad}) within the {blocks} \
                 blocks of a ciphertext and whole query groups per KV head ({} KV heads)",
                cfg.num_heads, cfg.num_kv_heads
            )));
        }
        let j_per_ct = blocks / heads_pad;
        Ok(Self {
            s,
            blocks,
            d: cfg.hidden_size,
            ff: cfg.intermediate_size,
            heads: cfg.num_heads,
            heads_pad,
            hd: cfg.head_dim,
            group: cfg.num_heads / cfg.num_kv_heads,
            c_d: cfg.hidden_size.div_ceil(blocks),
            c_ff: cfg.intermediate_size.div_ceil(blocks),
            c_h: cfg.head_dim.div_ceil(j_per_ct),
        })
    }

    /// Head features per ciphertext of `Heads`.
    pub fn j_per_ct(&self) -> usize {
        self.blocks / self.heads_pad
    }

    /// (head, head feature) of global block `g` (ciphertext `g / B`, block
    /// `g mod B`) of `Heads`; None for padding.
    pub fn head_feature(&self, g: usize) -> Option<(usize, usize)> {
        let (m, b) = (g / self.blocks, g % self.blocks);
        let (h, j) = (b % self.heads_pad, m * self.j_per_ct() + b / self.heads_pad);
        (h < self.heads && j < self.hd).then_some((h, j))
    }

    /// The block maps of one block: (input ciphertexts, output ciphertexts of
    /// all maps sharing that input).
    fn maps(&self) -> [(usize, usize); 4] {
        // Packed inputs and their conjugates; packed outputs.
        let (d, h, ff) = (packed(self.c_d), packed(self.c_h), packed(self.c_ff));
        [(2 * d, 3 * h), (2 * h, d), (2 * d, 2 * ff), (2 * ff, d)]
    }

    /// Every rotation the wide block uses besides bootstrapping.
    pub fn rotation_steps(&self) -> Vec<i64> {
        let s = self.s as i64;
        let mut steps = Vec::new();
        for (c_in, outs) in self.maps() {
            steps.extend(map_rotations(c_in, outs, self.s, self.blocks));
        }
        // Token shifts of keys and values: delta = c a + b < s/2, a giant
        // rotation by c a per chunk of c shifts, then hoisted baby rotations
        // by b; the shifts s/2 further start with one rotation by s/2.
        let c = SHIFT_CHUNK.min(self.s / 2) as i64;
        steps.extend((1..c).map(|b| -b));
        steps.extend((1..s / 2 / c).map(|a| -c * a));
        steps.push(-s / 2);
        // Queries rotated by the chunks' bases (the keys take the babies).
        steps.extend((1..s / 2 / c).map(|a| c * a));
        // Sums over all blocks (norms).
        let mut m = 1;
        while m < self.blocks {
            steps.push(m as i64 * s);
            m *= 2;
        }
        // Packed scores: every rotation by whole feature groups.
        let group = (self.heads_pad * self.s) as i64;
        steps.extend((1..self.j_per_ct() as i64).map(|r| r * group));
        steps.retain(|&x| x != 0);
        steps.sort_unstable();
        steps.dedup();
        steps
    }
}

/// Complex ciphertexts that pack `c` real ones of a layout: complex
/// ciphertext m holds real ciphertext m in its real part and real ciphertext
/// `m + packed(c)` (zero if there is none) in its imaginary part.
pub fn packed(c: usize) -> usize {
    c.div_ceil(2)
}

/// Baby steps of a map over `blocks` diagonals with `c_in` inputs and `outs`
/// output ciphertexts: the power of two minimizing rotations (a hoisted baby
/// rotation counted as 0.6 of a giant one), at most [`MAX_BABIES`] held.
fn baby_step(c_in: usize, outs: usize, blocks: usize) -> usize {
    let mut best = (f64::INFINITY, 1);
    let mut n1 = 1;
    while n1 <= blocks && (n1 == 1 || c_in * n1 <= MAX_BABIES) {
        let cost = 0.6 * (c_in * (n1 - 1)) as f64 + (outs * (blocks / n1 - 1)) as f64;
        if cost < best.0 {
            best = (cost, n1);
        }
        n1 *= 2;
    }
    best.1
}

/// The rotations of a wide map over `blocks` blocks of `s` slots with `c_in`
/// inputs (packed ciphertexts and their conjugates) and `outs` packed
/// outputs: its baby and giant steps.
pub fn map_rotations(c_in: usize, outs: usize, s: usize, blocks: usize) -> Vec<i64> {
    let n1 = baby_step(c_in, outs, blocks);
    (1..n1)
        .map(|j| (j * s) as i64)
        .chain((1..blocks / n1).map(|g| (g * n1 * s) as i64))
        .collect()
}

/// A wide map's weight: `w(output global block, input global block, out)`
/// writes the s per-token weights into `out` and returns whether any is
/// nonzero (when it returns false, `out` is ignored). Global block
/// `m B + b` is block b of real ciphertext m of the (unpacked) layout.
pub type WideWeight<'a> = &'a (dyn Fn(usize, usize, &mut [f64]) -> bool + Sync);

/// Several real block maps of the same packed input ciphertexts (`(real
/// outputs, w)` each): `y[ob][t] = sum_ib w(ob, ib)[t] x[ib][t]` over global
/// blocks, one level, the inputs' scale; `zs` packs `c_in` real ciphertexts
/// and each map's output comes packed ([`packed`]).
///
/// With `z = x + i x'` (x, x' the real ciphertexts m and m + C) and
/// `Y = y + i y'`, a real-linear map is `Y = A z + B conj(z)` with
/// `A = (D_yx + D_y'x' + i (D_y'x - D_yx')) / 2` and
/// `B = (D_yx - D_y'x' + i (D_yx' + D_y'x)) / 2`: one complex diagonal per
/// input of `z` and of `conj z` serves two real inputs and two real outputs,
/// so half the diagonals of the real layout are encoded and multiplied.
///
/// Output ciphertext o reads `sum_i sum_k A_{o,i,k} (.) rot(z_i, k s) + ...`
/// with `D_{o,i,k}[b] = w(o B + b, i B + (b + k) mod B)`; with k = g n1 + j
/// the baby rotations of every input (and of its conjugate) are hoisted and
/// shared by all maps, each giant step costs one rotation, and a giant step's
/// diagonals (pre-rotated in the clear) are encoded, multiplied and summed in
/// one pass per input and dropped: each diagonal is only rounded
/// ([`ensi_ckks::Encoder::encode_coefficients`]), its residues made, transformed
/// and multiplied limb by limb in cache ([`ensi_ckks::Evaluator::mul_coefficients_sum`]).
pub fn wide_maps(
    eval: &Evaluator,
    encoder: &Encoder,
    zs: &[Ciphertext],
    c_in: usize,
    s: usize,
    blocks: usize,
    maps: &[(usize, WideWeight)],
) -> Result<Vec<Vec<Ciphertext>>> {
    let first = zs
        .first()
        .ok_or_else(|| InferError::Shape("wide map of no ciphertexts".into()))?;
    let (level, log_slots) = (first.level(), first.log_slots());
    if log_slots != (blocks * s).trailing_zeros()
        || level == 0
        || zs.len() != packed(c_in)
        || zs
            .iter()
            .any(|x| x.level() != level || x.log_slots() != log_slots || x.scale() != first.scale())
    {
        return Err(InferError::Shape(format!(
            "wide map inputs must be {} ciphertexts packing {c_in} and share level (>= 1), \
             scale and {blocks} blocks of {s} slots",
            packed(c_in)
        )));
    }
    let cz = zs.len();
    let outs: usize = maps.iter().map(|m| packed(m.0)).sum();
    let n1 = baby_step(2 * cz, outs, blocks);
    let giants = blocks / n1;
    let steps: Vec<i64> = (1..n1).map(|j| (j * s) as i64).collect();
    // Inputs z_0.. then their conjugates, each with its baby rotations.
    let conj = conjugates(eval, zs)?;
    let babies: Vec<Vec<Ciphertext>> = zs
        .par_iter()
        .chain(conj.par_iter())
        .map(|x| {
            let mut v = vec![x.clone()];
            v.extend(eval.rotate_hoisted(x, &steps)?);
            Ok(v)
        })
        .collect::<Result<_>>()?;
    drop(conj);
    let pt_scale = eval.params().q()[level] as f64;
    // Every packed output of every map: (map, output ciphertext).
    let flat: Vec<(usize, usize)> = maps
        .iter()
        .enumerate()
        .flat_map(|(m, &(c_out, _))| (0..packed(c_out)).map(move |o| (m, o)))
        .collect();
    let slots = blocks * s;
    // One task per giant step computes it for every output at once, so that
    // each baby rotation is read from memory once per giant step, not once per
    // output ([`Evaluator::mul_coefficients_sums`]).
    let parts: Vec<Vec<Option<Ciphertext>>> = (0..giants)
        .into_par_iter()
        .map(|g| {
            let shift = g * n1;
            let mut d = vec![vec![0.0; slots]; 4];
            let mut acc: Vec<Option<Ciphertext>> = vec![None; flat.len()];
            for i in 0..cz {
                let ins = [i, i + cz];
                // Terms: the baby rotations of z_i, then those of conj(z_i).
                let cts: Vec<&Ciphertext> = babies[i].iter().chain(&babies[i + cz]).collect();
                let mut pts: Vec<Vec<Option<PlainCoefficients>>> = Vec::with_capacity(flat.len());
                for &(m, o) in &flat {
                    let (c_out, w) = maps[m];
                    // Real output ciphertexts o (real part) and o + C' (imaginary part).
                    let outs = [o, o + packed(c_out)];
                    let mut row: Vec<Option<PlainCoefficients>> = vec![None; 2 * n1];
                    for j in 0..n1 {
                        let k = shift + j;
                        // d[2 a + c]: output outs[a] from input ins[c].
                        let mut nonzero = false;
                        for (idx, buf) in d.iter_mut().enumerate() {
                            let (oc, ic) = (outs[idx / 2], ins[idx % 2]);
                            for bp in 0..blocks {
                                // Pre-rotated right by the giant step: block bp holds D_k[bp - shift].
                                let b = (bp + blocks - shift) % blocks;
                                let out = &mut buf[bp * s..(bp + 1) * s];
                                if oc < c_out
                                    && ic < c_in
                                    && w(oc * blocks + b, ic * blocks + (b + k) % blocks, out)
                                {
                                    nonzero = true;
                                } else {
                                    out.fill(0.0);
                                }
                            }
                        }
                        if !nonzero {
                            continue;
                        }
                        let (yx, yx2, y2x, y2x2) = (&d[0], &d[1], &d[2], &d[3]);
                        // A multiplies z, B conj(z) (see above).
                        let on_z: Vec<Complex64> = (0..slots)
                            .map(|t| Complex64::new(yx[t] + y2x2[t], y2x[t] - yx2[t]) * 0.5)
                            .collect();
                        let on_conj: Vec<Complex64> = (0..slots)
                            .map(|t| Complex64::new(yx[t] - y2x2[t], yx2[t] + y2x[t]) * 0.5)
                            .collect();
                        for (v, t) in [(on_z, j), (on_conj, n1 + j)] {
                            if v.iter().any(|c| c.re != 0.0 || c.im != 0.0) {
                                row[t] =
                                    Some(encoder.encode_coefficients(&v, pt_scale, log_slots)?);
                            }
                        }
                    }
                    pts.push(row);
                }
                let refs: Vec<Vec<Option<&PlainCoefficients>>> = pts
                    .iter()
                    .map(|row| row.iter().map(Option::as_ref).collect())
                    .collect();
                let sums = eval.mul_coefficients_sums(&cts, &refs)?;
                for (a, part) in acc.iter_mut().zip(sums) {
                    let Some(part) = part else { continue };
                    match a.as_mut() {
                        Some(a) => eval.add_assign(a, &part)?,
                        None => *a = Some(part),
                    }
                }
            }
            acc.into_iter()
                .map(|a| match a {
                    Some(a) if shift > 0 => Ok(Some(eval.rotate(&a, (shift * s) as i64)?)),
                    other => Ok(other),
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let mut sums = (0..flat.len()).map(|f| {
        let mut it = parts.iter().filter_map(|p| p[f].as_ref());
        let y = match it.next() {
            Some(y) => {
                let mut y = y.clone();
                for p in it {
                    eval.add_assign(&mut y, p)?;
                }
                y
            }
            // An all-zero output ciphertext: zero at the product's scale.
            None => eval.mul_const_scaled(first, Complex64::new(0.0, 0.0), pt_scale)?,
        };
        Ok(eval.rescale(&y)?)
    });
    maps.iter()
        .map(|&(c_out, _)| sums.by_ref().take(packed(c_out)).collect())
        .collect()
}

/// One traced intermediate: (name, ciphertexts in `Std(w)`, factor,
/// per-column gains): value = factor * gain_c * decrypted.
pub type WideStep = (&'static str, Vec<Ciphertext>, f64, Option<Vec<f64>>);

/// Intermediates of one wide block.
#[derive(Default)]
pub struct WideTrace {
    /// Named intermediates.
    pub steps: Vec<WideStep>,
}

impl WideTrace {
    /// Each step decrypted (client side) into the twin's values: `tokens`
    /// rows, `cols(name)` columns, the step's factor and gains applied.
    pub fn decrypt(
        &self,
        params: &Parameters,
        sk: &SecretKey,
        s: usize,
        tokens: usize,
        cols: impl Fn(&str) -> usize,
    ) -> Result<Vec<(&'static str, Matrix)>> {
        self.steps
            .iter()
            .map(|(name, cts, factor, gains)| {
                let mut m = decrypt_wide(params, sk, cts, s, (tokens, cols(name)))?;
                for t in 0..tokens {
                    for (c, v) in m.row_mut(t).iter_mut().enumerate() {
                        *v *= factor * gains.as_ref().map_or(1.0, |g| g[c]);
                    }
                }
                Ok((*name, m))
            })
            .collect()
    }
}

impl EncryptedModel {
    /// The wide shape of a packing.
    pub fn wide_shape(&self, packing: &Packing) -> Result<WideShape> {
        WideShape::new(self.model().config(), packing)
    }

    /// Main RMSNorm in the wide layout: `K x / rms(x)` per ciphertext (no
    /// gain: the gains ride on the next maps), each refreshed to the
    /// bootstrap's output level, and K.
    fn wide_norm(
        &self,
        ctx: &ServerContext,
        sh: &WideShape,
        x: &[Ciphertext],
    ) -> Result<(Vec<Ciphertext>, f64)> {
        let eval = ctx.eval();
        let t = Instant::now();
        // |z|^2 = x^2 + x'^2 for the two real ciphertexts z packs.
        let sq = abs_squared_sum(ctx, x)?;
        let ss = rotate_sum(ctx, &sq, sh.s, sh.blocks)?;
        let fitted = ctx.fit_for_bootstrap(&ss, self.ss_bound(sh.d))?;
        ctx.record("norm_ss", t.elapsed(), 1);
        let r = self.inv_rms_of_fitted(ctx, &fitted)?;
        let t = Instant::now();
        let (r, k) = self.norm_multiplier(ctx, &x[0], &r, sh.d)?;
        // |K x_c / rms| <= K sqrt(d) < 1 per feature, and so |z| < 1 for the
        // packed pair of features of one token: in the bootstrap's range.
        let y: Vec<Ciphertext> = x
            .par_iter()
            .map(|xc| ctx.fit_for_bootstrap(&eval.rescale(&eval.mul(xc, &r)?)?, 1.0))
            .collect::<Result<_>>()?;
        ctx.record("norm_mul", t.elapsed(), 1);
        // One bootstrap at a time: each already uses every thread.
        let y = y
            .iter()
            .map(|c| ctx.bootstrap(c))
            .collect::<Result<Vec<_>>>()?;
        Ok((y, k))
    }

    /// The sub-norms' `sqrt(B_v) / rms(z)` over `width` features of `z`
    /// (several ciphertexts whose every block is a feature or zero).
    fn wide_sub_norm_r(
        &self,
        ctx: &ServerContext,
        sh: &WideShape,
        z: &[Ciphertext],
        width: usize,
    ) -> Result<Ciphertext> {
        let eval = ctx.eval();
        let t0 = Instant::now();
        // z / sqrt(bound) squared: the constant is split over both factors,
        // since 1/bound itself (1.5e-5 at width 1536) is too small to encode
        // at the scale that lands the product where the bootstrap wants it.
        let bound = self.ss_bound(width);
        let prime = eval.params().q()[z[0].level() - 1] as f64;
        let target = (ctx.max_input_scale() / 2.0 * prime).sqrt();
        let scaled: Vec<Ciphertext> = z
            .par_iter()
            .map(|c| mul_const_to_scale(eval, c, 1.0 / bound.sqrt(), target))
            .collect::<Result<_>>()?;
        let sq = abs_squared_sum(ctx, &scaled)?;
        let ss = rotate_sum(ctx, &sq, sh.s, sh.blocks)?;
        ctx.record("subnorm_ss", t0.elapsed(), 2);
        self.inv_rms_of_fitted(ctx, &ss)
    }

    /// One block on the wide residual stream (`Std(d)`, [`WideShape::c_d`]
    /// ciphertexts at [`DENSE_RESIDUAL_LEVEL`]) for `tokens` real tokens.
    pub fn wide_block(
        &self,
        ctx: &ServerContext,
        layer: usize,
        x: &[Ciphertext],
        tokens: usize,
        mut trace: Option<&mut WideTrace>,
    ) -> Result<Vec<Ciphertext>> {
        let eval = ctx.eval();
        let model = self.model();
        let cfg = model.config();
        let w = model
            .layers()
            .get(layer)
            .ok_or_else(|| InferError::Shape(format!("no layer {layer}")))?;
        let sh = self.wide_shape(ctx.packing())?;
        let (s, nb, hd) = (sh.s, sh.blocks, sh.hd);
        if x.len() != packed(sh.c_d) || tokens == 0 || tokens > s {
            return Err(InferError::Shape(format!(
                "{} ciphertexts for {tokens} tokens; the wide layout needs {} and 1..={s} tokens",
                x.len(),
                packed(sh.c_d)
            )));
        }
        let residual_scale = x[0].scale();
        let mut record = |name: &'static str, ct: &[Ciphertext], f: f64, g: Option<&[f64]>| {
            if let Some(t) = trace.as_deref_mut() {
                t.steps.push((name, ct.to_vec(), f, g.map(<[f64]>::to_vec)));
            }
        };

        // ---- Attention ----
        let (y, k_norm) = self.wide_norm(ctx, &sh, x)?;
        record("attn_norm", &y, 1.0 / k_norm, Some(&w.input_norm));
        let sig = &self.polys().sigmoid;
        // The sigmoid's output level: q and k maps, their products and the
        // packing take one level each. o = A v one below, o_proj and the
        // sub-norm's 1/rms two more, and the residual must stay at its level.
        let sig_depth = ChebyshevPoly::new(-1.0, 1.0, sig.coeffs.clone())?.depth();
        let a_level = y[0].level().checked_sub(3 + sig_depth);
        let Some(a_level) = a_level.filter(|&l| l >= DENSE_RESIDUAL_LEVEL + 3) else {
            return Err(InferError::Shape(format!(
                "the wide layout's attention needs a sigmoid of depth at most {} after a bootstrap \
                 to level {} (degree {} has depth {sig_depth}): lower its degree in the \
                 approximation spec",
                y[0].level().saturating_sub(6 + DENSE_RESIDUAL_LEVEL),
                y[0].level(),
                sig.coeffs.len() - 1
            )));
        };
        let (sa, sb) = (sig.a, sig.b);
        // Scores enter the sigmoid polynomial as 2 (z - mid) / width: the
        // factor of q.k rides on q's weights, the bias on a plaintext. A pair
        // of scores is read as 4 Re and 4 Im of a sum of products (see
        // `wide_attention`): a quarter of the factor.
        let q_factor = 1.0 / (2.0 * (sb - sa) * (hd as f64).sqrt());
        let inv_freq = model.inv_freq();
        let half = hd / 2;
        // cos and sin of t theta_f, per token slot and frequency.
        let (cos, sin): (Vec<f64>, Vec<f64>) = (0..s)
            .flat_map(|t| (0..half).map(move |f| t as f64 * inv_freq[f]))
            .map(|a| (a.cos(), a.sin()))
            .unzip();
        let gamma = &w.input_norm;
        let d = cfg.hidden_size;
        // RoPE folded into a projection: output feature j of head row `base`
        // is cos W[base + j] -/+ sin W[base + partner] per token.
        let rope = |m: &ensi_model::TernaryMatrix,
                    a: f64,
                    base: usize,
                    j: usize,
                    i: usize,
                    out: &mut [f64]| {
            let (f, partner, sign) = if j < half {
                (j, j + half, -1.0)
            } else {
                (j - half, j - half, 1.0)
            };
            let c = m.cols();
            let own = f64::from(m.values()[(base + j) * c + i]);
            let other = f64::from(m.values()[(base + partner) * c + i]);
            if own == 0.0 && other == 0.0 {
                return false;
            }
            for (t, v) in out.iter_mut().enumerate() {
                *v = a * (cos[t * half + f] * own + sign * sin[t * half + f] * other);
            }
            true
        };
        let qa = w.q_proj.scale() / k_norm * q_factor;
        let wq = |og: usize, i: usize, out: &mut [f64]| match sh.head_feature(og) {
            Some((h, j)) if i < d => rope(&w.q_proj, qa * gamma[i], h * hd, j, i, out),
            _ => false,
        };
        let ka = w.k_proj.scale() / k_norm;
        let wk = |og: usize, i: usize, out: &mut [f64]| match sh.head_feature(og) {
            Some((h, j)) if i < d => rope(&w.k_proj, ka * gamma[i], (h / sh.group) * hd, j, i, out),
            _ => false,
        };
        let va = w.v_proj.scale() / k_norm;
        let wv = |og: usize, i: usize, out: &mut [f64]| match sh.head_feature(og) {
            Some((h, j)) if i < d => {
                let v = va * gamma[i] * ternary_weight(&w.v_proj, (h / sh.group) * hd + j, i);
                out.fill(v);
                v != 0.0
            }
            _ => false,
        };
        let t0 = Instant::now();
        let [q, k]: [Vec<Ciphertext>; 2] = wide_maps(
            ctx.eval(),
            ctx.encoder(),
            &y,
            sh.c_d,
            s,
            nb,
            &[(sh.c_h, &wq), (sh.c_h, &wk)],
        )?
        .try_into()
        .map_err(|_| InferError::Shape("two projections".into()))?;
        // v is first read by its masks (two levels) beside the sigmoid's
        // output: computed that low, its diagonals are encoded on fewer primes
        // (8 instead of 12 at L = 11) and its shifts rotate smaller ciphertexts.
        let y_v = dropped_to(ctx, &y, a_level + 3)?;
        drop(y);
        let v = wide_maps(
            ctx.eval(),
            ctx.encoder(),
            &y_v,
            sh.c_d,
            s,
            nb,
            &[(sh.c_h, &wv)],
        )?
        .remove(0);
        drop(y_v);
        ctx.record("qkv_map", t0.elapsed(), 1);

        let o = self.wide_attention(ctx, &sh, &q, &k, &v, tokens)?;
        drop((q, k, v));

        // Sub-norm on o, o_proj with the sub-norm's gain folded, times 1/rms.
        let r = self.wide_sub_norm_r(ctx, &sh, &o, sh.heads * hd)?;
        let t0 = Instant::now();
        let gsub = &w.attn_sub_norm;
        let oa = w.o_proj.scale();
        let wo = |c: usize, ig: usize, out: &mut [f64]| match sh.head_feature(ig) {
            Some((h, j)) if c < d => {
                let i = h * hd + j;
                let v = oa * gsub[i] * ternary_weight(&w.o_proj, c, i);
                out.fill(v);
                v != 0.0
            }
            _ => false,
        };
        let z = wide_maps(
            ctx.eval(),
            ctx.encoder(),
            &o,
            sh.c_h,
            s,
            nb,
            &[(sh.c_d, &wo)],
        )?
        .remove(0);
        let after_attn: Vec<Ciphertext> = z
            .par_iter()
            .zip(x)
            .map(|(zc, xc)| {
                let branch = self.times_inv_rms(ctx, zc, &r, residual_scale)?;
                Ok(eval.add(xc, &branch)?)
            })
            .collect::<Result<_>>()?;
        ctx.record("o_map_residual", t0.elapsed(), 2);
        record("after_attn", &after_attn, 1.0, None);

        // ---- MLP ----
        let (y, k_norm) = self.wide_norm(ctx, &sh, &after_attn)?;
        let gamma = &w.post_attention_norm;
        record("mlp_norm", &y, 1.0 / k_norm, Some(gamma));
        let t0 = Instant::now();
        // The activation's input map t = alpha x + beta: alpha rides on the
        // gate's weights, beta is a free constant addition, and the polynomial
        // runs on [-1, 1] (one level fewer than mapping the input there).
        let act = self.polys().activation(cfg.activation);
        let (alpha, beta) = ChebyshevPoly::new(act.a, act.b, act.coeffs.clone())?.affine();
        let act = ChebyshevPoly::new(-1.0, 1.0, act.coeffs.clone())?;
        // Halved for the unpacking below.
        let (ga, ua) = (
            0.5 * alpha * w.gate_proj.scale() / k_norm,
            0.5 * w.up_proj.scale() / k_norm,
        );
        let ff = cfg.intermediate_size;
        let plain = |m: &ensi_model::TernaryMatrix, a: f64, o: usize, i: usize, out: &mut [f64]| {
            if o >= ff || i >= d {
                return false;
            }
            let v = a * gamma[i] * ternary_weight(m, o, i);
            out.fill(v);
            v != 0.0
        };
        let wg = |o: usize, i: usize, out: &mut [f64]| plain(&w.gate_proj, ga, o, i, out);
        let wu = |o: usize, i: usize, out: &mut [f64]| plain(&w.up_proj, ua, o, i, out);
        // The gate map from the lowest level that leaves the MLP what it needs
        // (activation, gate x up, down map, 1/rms, the residual's level):
        // fewer primes to encode its diagonals on.
        let gate_in = (DENSE_RESIDUAL_LEVEL + 4 + act.depth()).min(y[0].level());
        let y_gate = dropped_to(ctx, &y, gate_in)?;
        let gate = wide_maps(
            ctx.eval(),
            ctx.encoder(),
            &y_gate,
            sh.c_d,
            s,
            nb,
            &[(sh.c_ff, &wg)],
        )?
        .remove(0);
        // up is first read beside act(gate): computed that low, on fewer
        // primes (6 instead of 12 at L = 11), as v above.
        let act_level = gate[0].level().saturating_sub(act.depth());
        let y_up = dropped_to(ctx, &y, act_level + 1)?;
        drop(y);
        let up = wide_maps(
            ctx.eval(),
            ctx.encoder(),
            &y_up,
            sh.c_d,
            s,
            nb,
            &[(sh.c_ff, &wu)],
        )?
        .remove(0);
        drop(y_up);
        ctx.record("gate_up_map", t0.elapsed(), 1);
        let t0 = Instant::now();
        let pe = PolynomialEvaluator::new(eval);
        drop(y_gate);
        record("gate", &gate, 2.0 / alpha, None);
        record("up", &up, 2.0, None);
        // The activation is a real function: split the packed halves first.
        let (gate, up) = (
            unpack_halved(ctx, &gate, sh.c_ff)?,
            unpack_halved(ctx, &up, sh.c_ff)?,
        );
        let hidden: Vec<Ciphertext> = gate
            .iter()
            .zip(&up)
            .map(|(g, u)| {
                let g = eval.add_const(g, Complex64::new(beta, 0.0))?;
                let g = pe.evaluate(&g, &act)?.0;
                Ok(eval.rescale(&eval.mul(&g, u)?)?)
            })
            .collect::<Result<_>>()?;
        drop((gate, up));
        let hidden = pack(ctx, &hidden)?;
        ctx.record("activation_gate_up", t0.elapsed(), act.depth() + 1);
        record("hidden", &hidden, 1.0, None);

        let r = self.wide_sub_norm_r(ctx, &sh, &hidden, ff)?;
        let t0 = Instant::now();
        let gsub = &w.ffn_sub_norm;
        let da = w.down_proj.scale();
        let wd = |c: usize, i: usize, out: &mut [f64]| {
            if c >= d || i >= ff {
                return false;
            }
            let v = da * gsub[i] * ternary_weight(&w.down_proj, c, i);
            out.fill(v);
            v != 0.0
        };
        let down = wide_maps(
            ctx.eval(),
            ctx.encoder(),
            &hidden,
            sh.c_ff,
            s,
            nb,
            &[(sh.c_d, &wd)],
        )?
        .remove(0);
        let out: Vec<Ciphertext> = down
            .par_iter()
            .zip(&after_attn)
            .map(|(dc, xc)| {
                let branch = self.times_inv_rms(ctx, dc, &r, residual_scale)?;
                let o = eval.add(xc, &branch)?;
                if o.level() < DENSE_RESIDUAL_LEVEL {
                    return Err(InferError::Shape(format!(
                        "the block left the residual stream at level {} (< {DENSE_RESIDUAL_LEVEL})",
                        o.level()
                    )));
                }
                Ok(eval.drop_to_level(&o, DENSE_RESIDUAL_LEVEL)?)
            })
            .collect::<Result<_>>()?;
        ctx.record("down_map_residual", t0.elapsed(), 2);
        record("output", &out, 1.0, None);
        Ok(out)
    }

    /// Sigmoid attention over `Heads` ciphertexts q, k, v (q and k one level
    /// below the bootstrap's output, v two levels above the sigmoid's): returns
    /// o in `Heads`, shift by shift (see the module documentation).
    fn wide_attention(
        &self,
        ctx: &ServerContext,
        sh: &WideShape,
        q: &[Ciphertext],
        k: &[Ciphertext],
        v: &[Ciphertext],
        tokens: usize,
    ) -> Result<Vec<Ciphertext>> {
        let eval = ctx.eval();
        let encoder = ctx.encoder();
        let s = sh.s;
        let sig = &self.polys().sigmoid;
        let (sa, sb) = (sig.a, sig.b);
        let coeffs = ChebyshevPoly::new(-1.0, 1.0, sig.coeffs.clone())?;
        let pe = PolynomialEvaluator::new(eval);
        let slots = sh.blocks * s;
        let log_slots = q[0].log_slots();
        let groups = sh.j_per_ct();
        let group_slots = sh.heads_pad * s;
        let primes = eval.params().q();
        // Levels: products of q and k rescaled (y), packed (y - 1), the
        // sigmoid's output (a); v shifted and masked causally (a + 1), then
        // to one feature group (a).
        let y_level = q[0].level().checked_sub(1);
        let a_level = y_level.and_then(|l| l.checked_sub(1 + coeffs.depth()));
        let (Some(y_level), Some(a_level)) = (y_level, a_level) else {
            return Err(InferError::Shape("q and k too low for the sigmoid".into()));
        };
        if v[0].level() != a_level + 2 {
            return Err(InferError::Shape(format!(
                "v at level {}, attention needs it at {}",
                v[0].level(),
                a_level + 2
            )));
        }
        let v_level = a_level + 2;
        // One plaintext per feature group g: 1 on its slots, 0 elsewhere.
        // rot(M_g, shift) for the group masks M_g (1 on group g's slots).
        let group_masks = |level: usize, shift: usize| -> Result<Vec<Plaintext>> {
            (0..groups)
                .into_par_iter()
                .map(|g| {
                    let m: Vec<f64> = (0..slots)
                        .map(|slot| f64::from(u8::from((slot + shift) % slots / group_slots == g)))
                        .collect();
                    Ok(encoder.encode_real(&m, level, primes[level] as f64, log_slots)?)
                })
                .collect()
        };
        // The sigmoid's bias per query token, in every block.
        let bias: Vec<f64> = (0..slots)
            .map(|slot| {
                let b = self.polys().spec.sigmoid_bias.bias(slot % s, tokens);
                (2.0 * b - (sa + sb)) / (sb - sa)
            })
            .collect();
        let mut bias_pt: Option<Plaintext> = None;
        // Shifts delta and delta + s/2 share one product ciphertext, Re and Im
        // (see the module documentation): K+ = K + i rot(K, -s/2) and
        // K- = conj(K) + i rot(conj(K), -s/2) are shifted by delta alone.
        let t_pair = Instant::now();
        let far = -((s / 2) as i64);
        let i_unit = Complex64::new(0.0, 1.0);
        let with_far = |x: &Ciphertext| -> Result<Ciphertext> {
            let r = eval.mul_const_scaled(&eval.rotate(x, far)?, i_unit, 1.0)?;
            Ok(eval.add(x, &r)?)
        };
        let q_conj = conjugates(eval, q)?;
        let k_plus: Vec<Ciphertext> = k.par_iter().map(with_far).collect::<Result<_>>()?;
        let k_minus: Vec<Ciphertext> = conjugates(eval, k)?
            .par_iter()
            .map(with_far)
            .collect::<Result<_>>()?;
        let v_far: Vec<Ciphertext> = v
            .par_iter()
            .map(|x| Ok(eval.rotate(x, far)?))
            .collect::<Result<_>>()?;
        let group_steps: Vec<i64> = (1..groups).map(|r| (r * group_slots) as i64).collect();
        // Shift delta = base + b (base a multiple of the chunk size): the keys
        // are rotated by the babies -b once, the queries by the chunk's base,
        // and the packed products back by -base once per pack:
        // q rot(K, -delta) = rot(rot(q, base) rot(K, -b), -base).
        let chunk_len = SHIFT_CHUNK.min(s / 2);
        let babies: Vec<i64> = (1..chunk_len as i64).map(|b| -b).collect();
        let baby_shifted = |x: &Ciphertext| -> Result<Vec<Ciphertext>> {
            let mut out = eval.rotate_hoisted(x, &babies)?;
            out.insert(0, x.clone());
            Ok(out)
        };
        let rotated = |x: &Ciphertext, step: i64| -> Result<Ciphertext> {
            Ok(if step == 0 {
                x.clone()
            } else {
                eval.rotate(x, step)?
            })
        };
        // [K+ ciphertexts, then K- ciphertexts][baby b]
        let k_sh: Vec<Vec<Ciphertext>> = k_plus
            .par_iter()
            .chain(&k_minus)
            .map(baby_shifted)
            .collect::<Result<_>>()?;
        drop((k_plus, k_minus));
        let (kp_sh, km_sh) = k_sh.split_at(q.len());
        // The values' shifts split the same way: v and rot(v, -s/2) rotated
        // by the babies once; each chunk works in a frame turned by its base
        // (its masks and the sigmoid's outputs turned by +base) and turns its
        // products back by -base.
        // [value ciphertext][near babies, then far babies]
        let v_babies: Vec<Vec<Ciphertext>> = v
            .par_iter()
            .zip(&v_far)
            .map(|(near, far)| Ok([baby_shifted(near)?, baby_shifted(far)?].concat()))
            .collect::<Result<_>>()?;
        drop(v_far);
        let mut o_acc: Option<Vec<Ciphertext>> = None;
        let (mut t_rot, mut t_qk, mut t_sig, mut t_av) =
            (t_pair.elapsed().as_secs_f64(), 0.0, 0.0, 0.0);
        for chunk in (0..s / 2).collect::<Vec<_>>().chunks(SHIFT_CHUNK) {
            let t0 = Instant::now();
            let base = chunk[0];
            // rot(q, base), rot(conj(q), base).
            let q_sh: Vec<Ciphertext> = q
                .par_iter()
                .chain(&q_conj)
                .map(|x| rotated(x, base as i64))
                .collect::<Result<_>>()?;
            let (q_near, q_conj_sh) = q_sh.split_at(q.len());
            let pack_masks = group_masks(y_level, base)?;
            // The chunk's scores sigma: its shifts, then those s/2 further.
            let deltas: Vec<usize> = chunk
                .iter()
                .copied()
                .chain(chunk.iter().map(|&dl| dl + s / 2))
                .collect();
            // Values only from keys at or before the query and among the real
            // tokens: the causal mask of delta at slot t, in the chunk's frame
            // (slot i of the frame is slot i + base).
            let masks: Vec<Plaintext> = deltas
                .par_iter()
                .map(|&dl| {
                    let m: Vec<f64> = (0..slots)
                        .map(|slot| {
                            let t = (slot + base) % slots % s;
                            f64::from(u8::from(t >= dl && t - dl < tokens))
                        })
                        .collect();
                    Ok(encoder.encode_real(&m, v_level, primes[v_level] as f64, log_slots)?)
                })
                .collect::<Result<_>>()?;
            let value_masks = group_masks(a_level + 1, base)?;
            // [value ciphertext][score sigma]: rot(v, -b) masked, in the frame.
            let v_sh: Vec<Vec<Ciphertext>> = v_babies
                .par_iter()
                .map(|row| {
                    row.iter()
                        .zip(&masks)
                        .map(|(ct, m)| Ok(eval.rescale(&eval.mul_plain(ct, m)?)?))
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<_>>()?;
            t_rot += t0.elapsed().as_secs_f64();

            let t0 = Instant::now();
            // Y = sum_m q_m K-_m + conj(q_m) K+_m: per feature group a partial
            // sum of (R_delta + i R_(delta + s/2)) / 2 (q carries a quarter
            // of its factor). Score sigma reads Y (sigma < c) or -i Y.
            let products: Vec<(Ciphertext, Ciphertext)> = (0..chunk.len())
                .into_par_iter()
                .map(|ci| {
                    let terms: Vec<(&Ciphertext, &Ciphertext)> = q_near
                        .iter()
                        .zip(km_sh)
                        .chain(q_conj_sh.iter().zip(kp_sh))
                        .map(|(qm, km)| (qm, &km[ci]))
                        .collect();
                    let y = eval.rescale(&eval.mul_sum(&terms)?)?;
                    let y_im = eval.mul_const_scaled(&y, -i_unit, 1.0)?;
                    Ok((y, y_im))
                })
                .collect::<Result<_>>()?;
            drop(q_sh);
            let (near, far): (Vec<Ciphertext>, Vec<Ciphertext>) = products.into_iter().unzip();
            let partial: Vec<Ciphertext> = near.into_iter().chain(far).collect();
            // Packed score ciphertexts: group g of pack p holds score
            // sigma = p G + g, summed over the feature groups by G - 1
            // rotations of masked sums, W = sum_r rot(sum_sigma M_(g + r) Y_sigma,
            // r groups), and its real part taken, W + conj(W).
            let packs: Vec<std::ops::Range<usize>> = (0..partial.len())
                .step_by(groups)
                .map(|p| p..(p + groups).min(partial.len()))
                .collect();
            let scores: Vec<Ciphertext> = packs
                .iter()
                .map(|pack| {
                    let turned: Vec<Ciphertext> = (0..groups)
                        .into_par_iter()
                        .map(|r| {
                            let terms: Vec<(&Ciphertext, &Plaintext)> = pack
                                .clone()
                                .map(|sg| {
                                    (&partial[sg], &pack_masks[(sg - pack.start + r) % groups])
                                })
                                .collect();
                            // Rotated before the rescale: it divides the
                            // key switches' error by the prime as well.
                            let t = eval.mul_plain_sum(&terms)?;
                            Ok(if r == 0 {
                                t
                            } else {
                                eval.rotate(&t, group_steps[r - 1])?
                            })
                        })
                        .collect::<Result<_>>()?;
                    let mut w = turned[0].clone();
                    for t in &turned[1..] {
                        eval.add_assign(&mut w, t)?;
                    }
                    let w = rotated(&w, -(base as i64))?;
                    Ok(eval.rescale(&eval.add(&w, &eval.conjugate(&w)?)?)?)
                })
                .collect::<Result<_>>()?;
            drop(partial);
            if bias_pt.is_none() {
                bias_pt = Some(encoder.encode_real(
                    &bias,
                    scores[0].level(),
                    scores[0].scale(),
                    log_slots,
                )?);
            }
            let bias_pt = bias_pt.as_ref().expect("encoded above");
            t_qk += t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            let a: Vec<Ciphertext> = scores
                .par_iter()
                .map(|sc| Ok(pe.evaluate(&eval.add_plain(sc, bias_pt)?, &coeffs)?.0))
                .collect::<Result<_>>()?;
            drop(scores);
            t_sig += t0.elapsed().as_secs_f64();

            let t0 = Instant::now();
            // rot(A_p, r groups) holds in group f the weight of score
            // p G + (f + r) mod G; its values: V_(p,r) = sum_f M_f v_sigma.
            // In the chunk's frame: A_p turned by +base first.
            let a_turned: Vec<Vec<Ciphertext>> = a
                .par_iter()
                .map(|ap| {
                    let ap = rotated(ap, base as i64)?;
                    let mut out = eval.rotate_hoisted(&ap, &group_steps)?;
                    out.insert(0, ap);
                    Ok(out)
                })
                .collect::<Result<_>>()?;
            let terms: Vec<(usize, usize)> = (0..packs.len())
                .flat_map(|p| (0..groups).map(move |r| (p, r)))
                .collect();
            let part: Vec<Ciphertext> = v_sh
                .par_iter()
                .map(|row| {
                    let values: Vec<Ciphertext> = terms
                        .par_iter()
                        .map(|&(p, r)| {
                            let masked: Vec<(&Ciphertext, &Plaintext)> = (0..groups)
                                .filter_map(|f| {
                                    let sg = packs[p].start + (f + r) % groups;
                                    packs[p].contains(&sg).then(|| (&row[sg], &value_masks[f]))
                                })
                                .collect();
                            Ok(eval.rescale(&eval.mul_plain_sum(&masked)?)?)
                        })
                        .collect::<Result<_>>()?;
                    let pairs: Vec<(&Ciphertext, &Ciphertext)> = terms
                        .iter()
                        .zip(&values)
                        .map(|(&(p, r), vv)| (&a_turned[p][r], vv))
                        .collect();
                    // Back from the chunk's frame.
                    rotated(&eval.mul_sum(&pairs)?, -(base as i64))
                })
                .collect::<Result<_>>()?;
            match o_acc.as_mut() {
                Some(acc) => {
                    for (a, p) in acc.iter_mut().zip(&part) {
                        eval.add_assign(a, p)?;
                    }
                }
                None => o_acc = Some(part),
            }
            t_av += t0.elapsed().as_secs_f64();
        }
        let t0 = Instant::now();
        let o: Vec<Ciphertext> = o_acc
            .ok_or_else(|| InferError::Shape("attention over no shifts".into()))?
            .par_iter()
            .map(|c| Ok(eval.rescale(c)?))
            .collect::<Result<_>>()?;
        t_av += t0.elapsed().as_secs_f64();
        let secs = std::time::Duration::from_secs_f64;
        ctx.record("kv_shift", secs(t_rot), 1);
        ctx.record("qk", secs(t_qk), 2);
        ctx.record("sigmoid", secs(t_sig), coeffs.depth());
        ctx.record("av", secs(t_av), 2);
        Ok(o)
    }
}

/// The conjugate of each ciphertext (one key switch each).
fn conjugates(eval: &Evaluator, z: &[Ciphertext]) -> Result<Vec<Ciphertext>> {
    Ok(z.par_iter()
        .map(|c| eval.conjugate(c))
        .collect::<std::result::Result<_, _>>()?)
}

/// Each ciphertext dropped to `level` (those at or below it kept as they are).
fn dropped_to(ctx: &ServerContext, x: &[Ciphertext], level: usize) -> Result<Vec<Ciphertext>> {
    let eval = ctx.eval();
    Ok(x.iter()
        .map(|c| eval.drop_to_level(c, level.min(c.level())))
        .collect::<std::result::Result<_, _>>()?)
}

/// `sum_m |z_m|^2` (one relinearization, one level): the sum of squares of
/// every real ciphertext the `z_m` pack.
fn abs_squared_sum(ctx: &ServerContext, z: &[Ciphertext]) -> Result<Ciphertext> {
    let eval = ctx.eval();
    let conj = conjugates(ctx.eval(), z)?;
    let pairs: Vec<(&Ciphertext, &Ciphertext)> = z.iter().zip(&conj).collect();
    Ok(eval.rescale(&eval.mul_sum(&pairs)?)?)
}

/// Splits packed ciphertexts holding *half* the values into the real ones
/// they hold (`c` of them): `Re 2z = z + conj z` and `Im 2z = -i (z - conj z)`,
/// no level and the scale kept (the half rides on the weights that made z:
/// recording twice the scale instead throws the activation polynomials that
/// follow off by 2^-7 relative).
fn unpack_halved(ctx: &ServerContext, z: &[Ciphertext], c: usize) -> Result<Vec<Ciphertext>> {
    let eval = ctx.eval();
    let halves: Vec<(Ciphertext, Ciphertext)> = z
        .par_iter()
        .map(|zc| {
            let conj = eval.conjugate(zc)?;
            let re = eval.add(zc, &conj)?;
            let im =
                eval.mul_const_scaled(&eval.sub(zc, &conj)?, Complex64::new(0.0, -1.0), 1.0)?;
            Ok((re, im))
        })
        .collect::<Result<_>>()?;
    let (re, im): (Vec<Ciphertext>, Vec<Ciphertext>) = halves.into_iter().unzip();
    Ok(re.into_iter().chain(im).take(c).collect())
}

/// Packs real ciphertexts (same level and scale) two by two, `x_m + i x_{m+C}`
/// (no level: multiplying by i is multiplying by the monomial X^(N/2)).
fn pack(ctx: &ServerContext, x: &[Ciphertext]) -> Result<Vec<Ciphertext>> {
    let eval = ctx.eval();
    let cz = packed(x.len());
    (0..cz)
        .into_par_iter()
        .map(|m| match x.get(m + cz) {
            Some(hi) => Ok(eval.add(
                &x[m],
                &eval.mul_const_scaled(hi, Complex64::new(0.0, 1.0), 1.0)?,
            )?),
            None => Ok(x[m].clone()),
        })
        .collect()
}

/// log2 of the wide residual stream's scale for a hidden size: the sum of
/// squares of d features (scale 2^(2 ls - 40) after its rescale) times its
/// bound `2 B_v d` (B_v <= 2^5) must stay below the bootstrap's largest input
/// scale, 2^40, with no level spent (the residual sits at level 1): 34 up to
/// d = 64 (the dense layout's), 31 at d = 1536.
pub fn wide_residual_log_scale(hidden: usize) -> i32 {
    let ls = (75.0 - (2.0 * hidden.max(1) as f64).log2()) / 2.0;
    (ls.floor() as i32).min(DENSE_RESIDUAL_LOG_SCALE)
}

/// The wide packing of a model at `params` for up to `max_tokens` tokens:
/// every ciphertext uses all N/2 slots.
pub fn wide_packing(cfg: &ModelConfig, params: &Parameters, max_tokens: usize) -> Result<Packing> {
    // At least two token slots: attention pairs shift delta with delta + s/2.
    let s = max_tokens.next_power_of_two().max(2);
    let slots = 1usize << params.log_slots();
    if max_tokens == 0 || s > slots {
        return Err(InferError::Shape(format!(
            "{max_tokens} tokens for ciphertexts of {slots} slots"
        )));
    }
    let packing = Packing {
        tokens_pad: s,
        hidden: cfg.hidden_size,
        blocks: slots / s,
        layout: Layout::Wide,
    };
    WideShape::new(cfg, &packing)?;
    Ok(packing)
}

/// The server's keys for the wide block (client side): bootstrapping at all
/// N/2 slots plus [`WideShape::rotation_steps`], each truncated to the
/// bootstrap's output level as it is made.
pub fn generate_wide_keys(
    params: &Parameters,
    cfg: &ModelConfig,
    packing: &Packing,
    sk: &SecretKey,
) -> Result<BootstrapKeys> {
    let sh = WideShape::new(cfg, packing)?;
    let boot_cfg = bootstrap_config(params, packing);
    let top = boot_cfg.output_level(params)?;
    let sum_cfg = sum_bootstrap_config(params, packing);
    let configs: Vec<&BootstrapConfig> = std::iter::once(&boot_cfg).chain(&sum_cfg).collect();
    let keys = BootstrapKeys::generate_for(params, &configs, sk, &sh.rotation_steps(), Some(top))?;
    Ok(keys)
}

/// Encrypts embedded tokens (tokens x hidden) in `Std(hidden)`: the wide
/// shape's `c_d` ciphertexts at [`DENSE_RESIDUAL_LEVEL`] and scale
/// 2^[`wide_residual_log_scale`] (client side). Padding rows repeat the last token.
pub fn encrypt_wide(
    params: &Parameters,
    packing: &Packing,
    sk: &SecretKey,
    x: &Matrix,
) -> Result<Vec<Ciphertext>> {
    let (tokens, hidden) = (x.rows(), x.cols());
    let (s, blocks) = (packing.tokens_pad, packing.blocks);
    if packing.layout != Layout::Wide || tokens == 0 || tokens > s || hidden != packing.hidden {
        return Err(InferError::Shape(format!(
            "{tokens} x {hidden} embeddings for a wide packing of at most {s} tokens x {}",
            packing.hidden
        )));
    }
    let encoder = Encoder::new(params);
    let scale = f64::from(wide_residual_log_scale(hidden)).exp2();
    let cz = packed(hidden.div_ceil(blocks));
    (0..cz)
        .into_par_iter()
        .map(|m| {
            let mut v = vec![Complex64::new(0.0, 0.0); s * blocks];
            for (part, r) in [m, m + cz].into_iter().enumerate() {
                for b in 0..blocks.min(hidden.saturating_sub(r * blocks)) {
                    for t in 0..s {
                        let value = x.get(t.min(tokens - 1), r * blocks + b);
                        if part == 0 {
                            v[b * s + t].re = value;
                        } else {
                            v[b * s + t].im = value;
                        }
                    }
                }
            }
            let pt = encoder.encode(&v, DENSE_RESIDUAL_LEVEL, scale, packing.packed_log_slots())?;
            Ok(Encryptor::with_secret_key(params, sk).encrypt(&pt)?)
        })
        .collect()
}

/// Decrypts `Std(cols)` ciphertexts with `s` slots per block into a
/// `tokens x cols` matrix (client side; tests and benchmarks).
pub fn decrypt_wide(
    params: &Parameters,
    sk: &SecretKey,
    cts: &[Ciphertext],
    s: usize,
    (tokens, cols): (usize, usize),
) -> Result<Matrix> {
    let encoder = Encoder::new(params);
    let dec = Decryptor::new(sk);
    let mut m = Matrix::zeros(tokens, cols);
    let mut c = 0;
    let decoded: Vec<Vec<Complex64>> = cts
        .iter()
        .map(|ct| Ok(encoder.decode(&dec.decrypt(ct)?)))
        .collect::<Result<_>>()?;
    // The real parts, then the imaginary parts, are the real ciphertexts in order.
    for part in 0..2 {
        for v in &decoded {
            if tokens > s || !v.len().is_multiple_of(s) {
                return Err(InferError::Shape(format!(
                    "{} slots in blocks of {s} (tokens {tokens})",
                    v.len()
                )));
            }
            for b in 0..v.len() / s {
                if c == cols {
                    break;
                }
                for t in 0..tokens {
                    let z = v[b * s + t];
                    m.row_mut(t)[c] = if part == 0 { z.re } else { z.im };
                }
                c += 1;
            }
        }
    }
    if c < cols {
        return Err(InferError::Shape(format!(
            "{} ciphertexts hold {c} of {cols} columns",
            cts.len()
        )));
    }
    Ok(m)
}
