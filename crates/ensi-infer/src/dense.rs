//! A dense packing of the hidden state for short inputs, and the ternary PCMM
//! over it.
//!
//! Sits beside [`crate::layout`] and [`crate::pcmm`]. ENSI's column layout
//! puts one feature column (s tokens) in each ciphertext, so its ternary PCMM
//! costs additions only, but at small s nearly every slot is wasted: d
//! ciphertexts whatever s is. [`DenseLayout`] packs several whole columns into
//! each ciphertext instead:
//!
//! * s_pad = next_pow2(s) slots per column (the *block*; the padding slots
//!   are zero), B = min(next_pow2(d), slots / s_pad) blocks per ciphertext;
//! * ciphertext m holds columns m B .. m B + B - 1, column m B + b in slots
//!   `b s_pad .. b s_pad + s`;
//! * the ciphertexts are encoded with 2^log_slots = B s_pad slots (sparse
//!   packing when that is below N/2), so the slot vector repeats with period
//!   B s_pad and a left rotation by k s_pad moves whole columns cyclically:
//!   block b receives block (b + k) mod B.
//!
//! # The PCMM
//!
//! Y = X W^T is the generalized diagonal method over blocks. With X_i the
//! input ciphertexts and Y_o the outputs (same B on both sides first),
//!
//! `Y_o = sum_i sum_k D_{o,i,k} (.) rot(X_i, k s_pad)`,
//!
//! where diagonal D_{o,i,k} holds, on the first s slots of output block b,
//! `scale_factor * W[o B + b][i B + (b + k) mod B]` (zero outside W, zero in
//! the padding). With the baby-step giant-step split k = g n1 + j,
//!
//! `Y_o = sum_g rot( sum_i sum_j rot(D_{o,i,g n1 + j}, -g n1 s_pad) (.) rot(X_i, j s_pad), g n1 s_pad )`:
//! the baby rotations rot(X_i, j s_pad) are hoisted (one key-switching
//! decomposition per input) and shared by every output, the diagonals are
//! pre-rotated in the clear, and each output pays one rotation per giant step.
//! The diagonals are the ternary weights times one real factor (the BitNet
//! per-tensor scale folded in), encoded at the scale of the prime the rescale
//! removes: the product costs exactly one level and the output keeps the
//! input's scale.
//!
//! When the two layouts have different B (a small d_in or d_out), the work is
//! done with B_w = max(B_in, B_out) blocks: an input with fewer blocks is read
//! as its period repeated ([`Ciphertext::set_log_slots`]), so diagonal k in
//! 0..B_in meets input column i B_in + (b + k) mod B_in in block b; an output
//! with fewer blocks is computed with its own period (block b holds output
//! column o B_out + b mod B_out) and then read with its own slot count.
//!
//! The trade against the column layout: ceil(d / B) ciphertexts instead of d,
//! bought with one level, C_in (n1 - 1) + C_out (G - 1) rotations
//! (G = ceil(B_in / n1) giant steps) and up to C_in C_out B_in plaintext
//! products. [`ternary_pcmm_dense_plain`] runs the same schedule on f64 slot
//! vectors: the reference the encrypted path is tested against.

use crate::{InferError, Result};
use ensi_ckks::{
    Ciphertext, CkksError, Complex64, Decryptor, Encoder, Encryptor, Evaluator, Plaintext,
};
use ensi_model::{Matrix, TernaryMatrix};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::BTreeSet;

/// Slot counts above 2^30 are refused (as by the CKKS crate's linear transforms).
const MAX_LOG_SLOTS: u32 = 30;

/// The column-block layout of an s x d matrix: B whole columns per ciphertext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseLayout {
    tokens: usize,
    features: usize,
    /// B, a power of two.
    blocks: usize,
    /// s_pad = next_pow2(tokens).
    block_len: usize,
    /// The slot budget the layout was built for.
    max_log_slots: u32,
}

impl DenseLayout {
    /// The layout for `tokens` x `features` with at most 2^`max_log_slots`
    /// slots per ciphertext (N/2 for full packing: `Parameters::log_slots`):
    /// B = min(next_pow2(features), 2^max_log_slots / next_pow2(tokens)).
    pub fn new(tokens: usize, features: usize, max_log_slots: u32) -> Result<Self> {
        let block_len = Self::check(tokens, features, max_log_slots)?;
        let blocks = features
            .next_power_of_two()
            .min((1usize << max_log_slots) / block_len);
        Ok(Self {
            tokens,
            features,
            blocks,
            block_len,
            max_log_slots,
        })
    }

    /// The layout with `blocks` (B, a power of two) columns per ciphertext,
    /// whatever the feature count.
    pub fn with_blocks(
        tokens: usize,
        features: usize,
        blocks: usize,
        max_log_slots: u32,
    ) -> Result<Self> {
        let block_len = Self::check(tokens, features, max_log_slots)?;
        if !blocks.is_power_of_two() || blocks > (1usize << max_log_slots) / block_len {
            return Err(InferError::Shape(format!(
                "{blocks} blocks of {block_len} slots: not a power of two or more than 2^{max_log_slots} slots"
            )));
        }
        Ok(Self {
            tokens,
            features,
            blocks,
            block_len,
            max_log_slots,
        })
    }

    /// The same tokens, blocks per ciphertext and slot budget for another
    /// feature count (an output layout that keeps the input's slot count).
    pub fn with_features(&self, features: usize) -> Result<Self> {
        if features == 0 {
            return Err(InferError::Shape("a layout needs features".into()));
        }
        Ok(Self { features, ..*self })
    }

    /// s_pad, after checking the shape and the slot budget.
    fn check(tokens: usize, features: usize, max_log_slots: u32) -> Result<usize> {
        if tokens == 0 || features == 0 {
            return Err(InferError::Shape(format!(
                "empty matrix {tokens}x{features}"
            )));
        }
        if max_log_slots > MAX_LOG_SLOTS {
            return Err(InferError::Ckks(CkksError::InvalidSlots(max_log_slots)));
        }
        let block_len = tokens.next_power_of_two();
        if block_len > 1usize << max_log_slots {
            return Err(InferError::Shape(format!(
                "{tokens} tokens do not fit in 2^{max_log_slots} slots"
            )));
        }
        Ok(block_len)
    }

    /// Tokens (rows).
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Features (columns).
    pub fn features(&self) -> usize {
        self.features
    }

    /// Ciphertexts: ceil(features / B).
    pub fn ciphertexts(&self) -> usize {
        self.features.div_ceil(self.blocks)
    }

    /// B: columns per ciphertext.
    pub fn blocks_per_ciphertext(&self) -> usize {
        self.blocks
    }

    /// s_pad: slots per column (the block length).
    pub fn block_len(&self) -> usize {
        self.block_len
    }

    /// Slots per ciphertext: B s_pad.
    pub fn slots(&self) -> usize {
        self.blocks * self.block_len
    }

    /// log2 of [`Self::slots`], the slot count the ciphertexts are encoded with.
    pub fn log_slots(&self) -> u32 {
        self.slots().trailing_zeros()
    }

    /// The slot budget the layout was built with.
    pub fn max_log_slots(&self) -> u32 {
        self.max_log_slots
    }

    /// The slot vectors of X in the clear, one per ciphertext (what
    /// [`Self::encrypt`] encodes).
    pub fn pack(&self, x: &Matrix) -> Result<Vec<Vec<f64>>> {
        if x.rows() != self.tokens || x.cols() != self.features {
            return Err(InferError::Shape(format!(
                "matrix is {}x{}, layout is {}x{}",
                x.rows(),
                x.cols(),
                self.tokens,
                self.features
            )));
        }
        Ok((0..self.ciphertexts())
            .map(|m| {
                let mut v = vec![0.0; self.slots()];
                for b in 0..self.blocks.min(self.features - m * self.blocks) {
                    let col = m * self.blocks + b;
                    for (t, slot) in v[b * self.block_len..][..self.tokens]
                        .iter_mut()
                        .enumerate()
                    {
                        *slot = x.get(t, col);
                    }
                }
                v
            })
            .collect())
    }

    /// The matrix from its slot vectors (the inverse of [`Self::pack`]; padding is ignored).
    pub fn unpack(&self, slots: &[Vec<f64>]) -> Result<Matrix> {
        if slots.len() != self.ciphertexts() {
            return Err(InferError::Shape(format!(
                "{} slot vectors for {} ciphertexts",
                slots.len(),
                self.ciphertexts()
            )));
        }
        if let Some(v) = slots.iter().find(|v| v.len() != self.slots()) {
            return Err(InferError::Shape(format!(
                "{} slots, layout has {}",
                v.len(),
                self.slots()
            )));
        }
        let mut x = Matrix::zeros(self.tokens, self.features);
        for (m, v) in slots.iter().enumerate() {
            for b in 0..self.blocks.min(self.features - m * self.blocks) {
                let col = m * self.blocks + b;
                for (t, &value) in v[b * self.block_len..][..self.tokens].iter().enumerate() {
                    x.row_mut(t)[col] = value;
                }
            }
        }
        Ok(x)
    }

    /// Encrypts X block by block at `level` and `scale` (client side).
    pub fn encrypt(
        &self,
        x: &Matrix,
        encoder: &Encoder,
        encryptor: &mut Encryptor,
        level: usize,
        scale: f64,
    ) -> Result<Vec<Ciphertext>> {
        self.pack(x)?
            .iter()
            .map(|v| {
                let pt = encoder.encode_real(v, level, scale, self.log_slots())?;
                Ok(encryptor.encrypt(&pt)?)
            })
            .collect()
    }

    /// Decrypts the ciphertexts back into an s x d matrix (client side).
    pub fn decrypt(
        &self,
        cts: &[Ciphertext],
        encoder: &Encoder,
        decryptor: &Decryptor,
    ) -> Result<Matrix> {
        if cts.len() != self.ciphertexts() {
            return Err(InferError::Shape(format!(
                "{} ciphertexts for {} columns in blocks of {}",
                cts.len(),
                self.features,
                self.blocks
            )));
        }
        let slots = cts
            .iter()
            .map(|ct| {
                if ct.log_slots() != self.log_slots() {
                    return Err(InferError::Shape(format!(
                        "ciphertext has 2^{} slots, layout 2^{}",
                        ct.log_slots(),
                        self.log_slots()
                    )));
                }
                Ok(encoder.decode_real(&decryptor.decrypt(ct)?))
            })
            .collect::<Result<Vec<_>>>()?;
        self.unpack(&slots)
    }

    /// Every rotation step a PCMM from this layout to `d_out` features may
    /// use, whatever the weights, when the output layout is
    /// `DenseLayout::new(tokens, d_out, self.max_log_slots())`: generate
    /// Galois keys for these. [`Self::rotation_steps_to`] is the same for any
    /// output layout, [`DensePcmmPlan::rotation_steps`] the subset one weight
    /// matrix uses.
    pub fn rotation_steps(&self, d_out: usize) -> Vec<i64> {
        match DenseLayout::new(self.tokens, d_out.max(1), self.max_log_slots) {
            Ok(out) => self.rotation_steps_to(&out),
            // Unreachable: this layout's tokens fit its own budget.
            Err(_) => Vec::new(),
        }
    }

    /// Every rotation step a PCMM from this layout to `out` may use: baby
    /// steps j s_pad (0 < j < n1) and giant steps g n1 s_pad (0 < g < ceil(B_in / n1)).
    pub fn rotation_steps_to(&self, out: &DenseLayout) -> Vec<i64> {
        let n1 = baby_step(self.blocks, self.ciphertexts(), out.ciphertexts());
        let s = self.block_len as i64;
        let babies = (1..n1).map(|j| j as i64 * s);
        let giants = (1..self.blocks.div_ceil(n1)).map(|g| (g * n1) as i64 * s);
        babies.chain(giants).collect()
    }
}

/// The baby-step count n1 (a power of two <= the diagonal count) that
/// minimizes the rotations C_in (n1 - 1) + C_out (ceil(diagonals / n1) - 1);
/// ties go to the larger n1, since baby rotations are hoisted and cheaper.
fn baby_step(diagonals: usize, c_in: usize, c_out: usize) -> usize {
    let mut best = (usize::MAX, 1);
    let mut n1 = 1;
    while n1 <= diagonals {
        let cost = c_in * (n1 - 1) + c_out * (diagonals.div_ceil(n1) - 1);
        if cost <= best.0 {
            best = (cost, n1);
        }
        n1 *= 2;
    }
    best.1
}

/// The shape of one PCMM, worked with B_w = max(B_in, B_out) blocks.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    tokens: usize,
    /// s_pad.
    len: usize,
    b_in: usize,
    b_out: usize,
    b_w: usize,
    c_in: usize,
    c_out: usize,
    /// Baby steps; the diagonals per (output, input) pair are B_in.
    n1: usize,
}

impl Geometry {
    /// The shapes of W (d_out x d_in) from `inp` to `out`.
    fn new(inp: &DenseLayout, w: &TernaryMatrix, out: &DenseLayout) -> Result<Self> {
        if w.cols() != inp.features || w.rows() != out.features {
            return Err(InferError::Shape(format!(
                "weight is {}x{}, layouts are {} -> {} features",
                w.rows(),
                w.cols(),
                inp.features,
                out.features
            )));
        }
        if inp.tokens != out.tokens {
            return Err(InferError::Shape(format!(
                "input layout has {} tokens, output {}",
                inp.tokens, out.tokens
            )));
        }
        let (c_in, c_out) = (inp.ciphertexts(), out.ciphertexts());
        Ok(Self {
            tokens: inp.tokens,
            len: inp.block_len,
            b_in: inp.blocks,
            b_out: out.blocks,
            b_w: inp.blocks.max(out.blocks),
            c_in,
            c_out,
            n1: baby_step(inp.blocks, c_in, c_out),
        })
    }

    fn giants(&self) -> usize {
        self.b_in.div_ceil(self.n1)
    }

    /// Slots of the working ciphertexts.
    fn slots(&self) -> usize {
        self.b_w * self.len
    }

    fn log_slots(&self) -> u32 {
        self.slots().trailing_zeros()
    }
}

/// The diagonals of one PCMM, computed on demand (shared by the encrypted
/// plan and the plain reference, so that the reference tests the index logic).
struct Diagonals<'a> {
    geom: Geometry,
    w: &'a TernaryMatrix,
    scale_factor: f64,
}

impl Diagonals<'_> {
    /// The ternary weight of D_{o,i,k} in working block b (zero outside W).
    fn weight(&self, o: usize, i: usize, k: usize, b: usize) -> i8 {
        let g = &self.geom;
        let (row, col) = (o * g.b_out + b % g.b_out, i * g.b_in + (b + k) % g.b_in);
        if row < self.w.rows() && col < self.w.cols() {
            self.w.values()[row * self.w.cols() + col]
        } else {
            0
        }
    }

    /// Whether D_{o,i,k} has a nonzero entry.
    fn nonzero(&self, o: usize, i: usize, k: usize) -> bool {
        self.scale_factor != 0.0 && (0..self.geom.b_w).any(|b| self.weight(o, i, k, b) != 0)
    }

    /// Writes D_{o,i,k} rotated right by `shift` blocks into `out` (the working slots).
    fn fill(&self, o: usize, i: usize, k: usize, shift: usize, out: &mut [f64]) {
        let g = &self.geom;
        out.fill(0.0);
        for b in 0..g.b_w {
            let v = self.weight(o, i, k, b);
            if v != 0 {
                let dst = (b + shift) % g.b_w * g.len;
                out[dst..dst + g.tokens].fill(self.scale_factor * f64::from(v));
            }
        }
    }
}

/// One product of a giant step: a diagonal times a baby rotation of an input.
#[derive(Clone, Debug)]
struct Term {
    input: usize,
    /// Baby step j (the rotation by j s_pad).
    baby: usize,
    /// Index into the input's hoisted rotations; None for j = 0 (the input itself).
    rotated: Option<usize>,
    /// D_{o,input,g n1 + j} rotated right by g n1 blocks, encoded.
    diagonal: Plaintext,
}

/// The nonzero products of one output ciphertext that share giant step g.
#[derive(Clone, Debug)]
struct Giant {
    g: usize,
    /// Never empty.
    terms: Vec<Term>,
}

/// The dense ternary PCMM for one weight matrix and one input level, with
/// its diagonals encoded once (a block applies the same weights to every
/// batch of tokens).
///
/// Memory: one plaintext per nonzero diagonal, up to C_in C_out B_in of
/// them, each (level + 1) N words.
#[derive(Clone, Debug)]
pub struct DensePcmmPlan {
    layout_in: DenseLayout,
    layout_out: DenseLayout,
    geom: Geometry,
    level: usize,
    /// Per input ciphertext, the nonzero baby steps j some term uses (sorted).
    babies: Vec<Vec<usize>>,
    /// Per output ciphertext, its giant steps (possibly none: a zero output).
    outputs: Vec<Vec<Giant>>,
}

impl DensePcmmPlan {
    /// Encodes the diagonals of `scale_factor * W` for inputs in `layout_in`
    /// at `level` (>= 1); the outputs come in `layout_out` (same tokens,
    /// `w.rows()` features, any B) one level lower at the input's scale.
    pub fn new(
        encoder: &Encoder,
        layout_in: &DenseLayout,
        w: &TernaryMatrix,
        scale_factor: f64,
        layout_out: &DenseLayout,
        level: usize,
    ) -> Result<Self> {
        let geom = Geometry::new(layout_in, w, layout_out)?;
        if !scale_factor.is_finite() {
            return Err(InferError::Ckks(CkksError::Encoding(format!(
                "scale factor {scale_factor}"
            ))));
        }
        let params = encoder.params();
        if level == 0 || level > params.max_level() {
            return Err(InferError::Ckks(CkksError::LevelTooLow {
                needed: level.max(1),
                level: if level == 0 { 0 } else { params.max_level() },
            }));
        }
        if geom.log_slots() > params.log_slots() {
            return Err(InferError::Ckks(CkksError::InvalidSlots(geom.log_slots())));
        }
        let (n1, giants) = (geom.n1, geom.giants());
        let diagonals = Diagonals {
            geom,
            w,
            scale_factor,
        };
        // Diagonals at the scale of the prime the rescale removes: outputs keep the input scale.
        let pt_scale = params.q()[level] as f64;
        let built: Vec<Option<Giant>> = (0..geom.c_out * giants)
            .into_par_iter()
            .map(|task| {
                let (o, g) = (task / giants, task % giants);
                let mut buf = vec![0.0; geom.slots()];
                let mut terms = Vec::new();
                for i in 0..geom.c_in {
                    for j in 0..n1.min(geom.b_in - g * n1) {
                        let k = g * n1 + j;
                        if !diagonals.nonzero(o, i, k) {
                            continue;
                        }
                        diagonals.fill(o, i, k, g * n1, &mut buf);
                        let diagonal =
                            encoder.encode_real(&buf, level, pt_scale, geom.log_slots())?;
                        terms.push(Term {
                            input: i,
                            baby: j,
                            rotated: None,
                            diagonal,
                        });
                    }
                }
                Ok((!terms.is_empty()).then_some(Giant { g, terms }))
            })
            .collect::<Result<_>>()?;
        let mut babies: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); geom.c_in];
        for term in built.iter().flatten().flat_map(|g| &g.terms) {
            if term.baby != 0 {
                babies[term.input].insert(term.baby);
            }
        }
        let babies: Vec<Vec<usize>> = babies
            .into_iter()
            .map(|s| s.into_iter().collect())
            .collect();
        let mut outputs: Vec<Vec<Giant>> = vec![Vec::new(); geom.c_out];
        for (task, giant) in built.into_iter().enumerate() {
            if let Some(mut giant) = giant {
                for term in &mut giant.terms {
                    term.rotated = babies[term.input].binary_search(&term.baby).ok();
                }
                outputs[task / giants].push(giant);
            }
        }
        Ok(Self {
            layout_in: *layout_in,
            layout_out: *layout_out,
            geom,
            level,
            babies,
            outputs,
        })
    }

    /// The input layout.
    pub fn layout_in(&self) -> &DenseLayout {
        &self.layout_in
    }

    /// The output layout.
    pub fn layout_out(&self) -> &DenseLayout {
        &self.layout_out
    }

    /// The input level the diagonals were encoded for (the output is one lower).
    pub fn level(&self) -> usize {
        self.level
    }

    /// The baby-step count n1.
    pub fn baby_step(&self) -> usize {
        self.geom.n1
    }

    /// The encoded (nonzero) diagonals.
    pub fn diagonal_count(&self) -> usize {
        self.outputs.iter().flatten().map(|g| g.terms.len()).sum()
    }

    /// Exactly the rotation steps [`Self::apply`] uses (a subset of
    /// [`DenseLayout::rotation_steps_to`] for the plan's layouts).
    pub fn rotation_steps(&self) -> Vec<i64> {
        let s = self.geom.len as i64;
        let babies: BTreeSet<usize> = self.babies.iter().flatten().copied().collect();
        let giants: BTreeSet<usize> = self
            .outputs
            .iter()
            .flatten()
            .map(|g| g.g)
            .filter(|&g| g != 0)
            .collect();
        babies
            .into_iter()
            .map(|j| j as i64 * s)
            .chain(giants.into_iter().map(|g| (g * self.geom.n1) as i64 * s))
            .collect()
    }

    /// The inputs at the plan's level, read with the working slot count.
    fn working_inputs<'a>(
        &self,
        eval: &Evaluator,
        cts: &'a [Ciphertext],
    ) -> Result<Vec<Cow<'a, Ciphertext>>> {
        if cts.len() != self.layout_in.ciphertexts() {
            return Err(InferError::Shape(format!(
                "{} ciphertexts, layout has {}",
                cts.len(),
                self.layout_in.ciphertexts()
            )));
        }
        cts.iter()
            .map(|ct| {
                if ct.log_slots() != self.layout_in.log_slots() {
                    return Err(InferError::Shape(format!(
                        "ciphertext has 2^{} slots, layout 2^{}",
                        ct.log_slots(),
                        self.layout_in.log_slots()
                    )));
                }
                if ct.level() < self.level {
                    return Err(InferError::Ckks(CkksError::LevelTooLow {
                        needed: self.level,
                        level: ct.level(),
                    }));
                }
                let relabel = self.geom.b_in < self.geom.b_w;
                if ct.level() == self.level && !relabel {
                    return Ok(Cow::Borrowed(ct));
                }
                let mut ct = if ct.level() > self.level {
                    eval.drop_to_level(ct, self.level)?
                } else {
                    ct.clone()
                };
                // Fewer input blocks than working blocks: the same polynomial is
                // the input's period repeated.
                ct.set_log_slots(self.geom.log_slots());
                Ok(Cow::Owned(ct))
            })
            .collect()
    }

    /// Y = scale_factor X W^T: one level, output at the inputs' scale in
    /// [`Self::layout_out`]. Inputs above the plan's level are dropped to it first.
    pub fn apply(&self, eval: &Evaluator, cts: &[Ciphertext]) -> Result<Vec<Ciphertext>> {
        let inputs = self.working_inputs(eval, cts)?;
        let s = self.geom.len as i64;
        // Baby steps: all rotations of one input share one decomposition.
        let rotated: Vec<Vec<Ciphertext>> = inputs
            .par_iter()
            .zip(&self.babies)
            .map(|(ct, js)| {
                if js.is_empty() {
                    return Ok(Vec::new());
                }
                let steps: Vec<i64> = js.iter().map(|&j| j as i64 * s).collect();
                Ok(eval.rotate_hoisted(ct, &steps)?)
            })
            .collect::<Result<_>>()?;
        let source = |t: &Term| -> &Ciphertext {
            match t.rotated {
                Some(r) => &rotated[t.input][r],
                None => &inputs[t.input],
            }
        };
        let giant_sum = |giant: &Giant| -> Result<Ciphertext> {
            let Some((first, rest)) = giant.terms.split_first() else {
                unreachable!("the plan keeps no empty giant step")
            };
            // One pass over the terms' limbs (lazy sums), not a product and a sum per term.
            let products: Vec<(&Ciphertext, &Plaintext)> = std::iter::once(first)
                .chain(rest)
                .map(|t| (source(t), &t.diagonal))
                .collect();
            let mut acc = eval.mul_plain_sum(&products)?;
            if giant.g != 0 {
                acc = eval.rotate(&acc, (giant.g * self.geom.n1) as i64 * s)?;
            }
            Ok(acc)
        };
        let q_level = eval.params().q()[self.level] as f64;
        self.outputs
            .par_iter()
            .map(|giants| {
                let sum = giants
                    .par_iter()
                    .map(giant_sum)
                    .try_reduce_with(|mut a, b| {
                        eval.add_assign(&mut a, &b)?;
                        Ok(a)
                    });
                let sum = match sum {
                    Some(sum) => sum?,
                    // An all-zero block of W: zero at the product's scale.
                    None => eval.mul_const_scaled(&inputs[0], Complex64::new(0.0, 0.0), q_level)?,
                };
                let mut out = eval.rescale(&sum)?;
                // Fewer output blocks than working blocks: the vector has the
                // output's period by construction.
                out.set_log_slots(self.layout_out.log_slots());
                Ok(out)
            })
            .collect()
    }
}

/// Y = scale_factor X W^T in the dense layout (encodes the diagonals for the
/// inputs' level, then applies them; build a [`DensePcmmPlan`] once instead
/// when the same weights meet several inputs). One level; the output, in
/// `layout_out` (same tokens, `w.rows()` features), keeps the inputs' scale.
pub fn ternary_pcmm_dense(
    eval: &Evaluator,
    encoder: &Encoder,
    layout_in: &DenseLayout,
    cts: &[Ciphertext],
    w: &TernaryMatrix,
    scale_factor: f64,
    layout_out: &DenseLayout,
) -> Result<Vec<Ciphertext>> {
    let level = cts
        .first()
        .ok_or_else(|| InferError::Shape("no input ciphertexts".into()))?
        .level();
    DensePcmmPlan::new(encoder, layout_in, w, scale_factor, layout_out, level)?.apply(eval, cts)
}

/// The plain reference of [`DensePcmmPlan::apply`]: the same diagonals,
/// baby-step giant-step split and rotations (`rot(v, r)[t] = v[(t + r) mod n]`),
/// on the f64 slot vectors of [`DenseLayout::pack`]. Reading a vector with
/// more slots repeats it; reading it with fewer keeps the mean of its periods
/// (what decoding the polynomial with fewer slots does).
pub fn ternary_pcmm_dense_plain(
    layout_in: &DenseLayout,
    slots: &[Vec<f64>],
    w: &TernaryMatrix,
    scale_factor: f64,
    layout_out: &DenseLayout,
) -> Result<Vec<Vec<f64>>> {
    let geom = Geometry::new(layout_in, w, layout_out)?;
    let (n_in, n) = (layout_in.slots(), geom.slots());
    if slots.len() != geom.c_in || slots.iter().any(|v| v.len() != n_in) {
        return Err(InferError::Shape(format!(
            "{} slot vectors, layout has {} of {n_in} slots",
            slots.len(),
            geom.c_in
        )));
    }
    let (len, n1) = (geom.len, geom.n1);
    let diagonals = Diagonals {
        geom,
        w,
        scale_factor,
    };
    let rot = |v: &[f64], r: usize| -> Vec<f64> { (0..n).map(|t| v[(t + r) % n]).collect() };
    let babies: Vec<Vec<Vec<f64>>> = slots
        .iter()
        .map(|x| {
            let x: Vec<f64> = (0..n).map(|t| x[t % n_in]).collect();
            (0..n1).map(|j| rot(&x, j * len)).collect()
        })
        .collect();
    let mut buf = vec![0.0; n];
    let n_out = layout_out.slots();
    Ok((0..geom.c_out)
        .map(|o| {
            let mut acc = vec![0.0; n];
            for g in 0..geom.giants() {
                let mut inner = vec![0.0; n];
                for (i, baby) in babies.iter().enumerate() {
                    for (j, x) in baby.iter().enumerate().take(geom.b_in - g * n1) {
                        let k = g * n1 + j;
                        if diagonals.nonzero(o, i, k) {
                            diagonals.fill(o, i, k, g * n1, &mut buf);
                            inner
                                .iter_mut()
                                .zip(&buf)
                                .zip(x)
                                .for_each(|((y, d), x)| *y += d * x);
                        }
                    }
                }
                acc.iter_mut()
                    .zip(rot(&inner, g * n1 * len))
                    .for_each(|(a, v)| *a += v);
            }
            let periods = n / n_out;
            (0..n_out)
                .map(|t| (0..periods).map(|p| acc[p * n_out + t]).sum::<f64>() / periods as f64)
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baby_step_balances_the_rotations() {
        assert_eq!(baby_step(64, 1, 1), 8);
        assert_eq!(baby_step(1, 3, 3), 1);
        // More inputs than outputs: fewer (shared) baby steps.
        assert!(baby_step(64, 4, 1) < baby_step(64, 1, 4));
    }

    #[test]
    fn layout_geometry() {
        let l = DenseLayout::new(3, 5, 9).unwrap();
        assert_eq!((l.block_len(), l.blocks_per_ciphertext()), (4, 8));
        assert_eq!((l.ciphertexts(), l.log_slots()), (1, 5));
        let l = DenseLayout::new(16, 100, 9).unwrap();
        assert_eq!(
            (l.blocks_per_ciphertext(), l.ciphertexts(), l.log_slots()),
            (32, 4, 9)
        );
        assert!(DenseLayout::new(1000, 4, 9).is_err());
        assert!(DenseLayout::with_blocks(16, 4, 64, 9).is_err());
        assert_eq!(l.with_features(7).unwrap().ciphertexts(), 1);
        // The rotation steps cover the ones a plan for the default output layout uses.
        let w = TernaryMatrix::new("w", 12, 100, vec![1; 1200], 1.0).unwrap();
        let out = DenseLayout::new(16, 12, 9).unwrap();
        let g = Geometry::new(&l, &w, &out).unwrap();
        assert_eq!(
            (g.b_in, g.b_out, g.b_w, g.c_in, g.c_out),
            (32, 16, 32, 4, 1)
        );
        assert_eq!(l.rotation_steps(12), l.rotation_steps_to(&out));
    }
}
