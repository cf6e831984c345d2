//! The two packings of the encrypted hidden state and the moves between them.
//!
//! * Columns (ENSI's layout, see [`crate::layout::ColumnLayout`]): ciphertext c
//!   holds feature c for every token, `s_pad` slots (the token count rounded up
//!   to a power of two, padding rows included), so the vector repeats with
//!   period `s_pad` over all N/2 slots. Projections, RoPE, attention and the
//!   MLP run here.
//! * Packed (a dense column-block layout): one ciphertext holds all the hidden
//!   columns side by side, column c in slots `[c s_pad, (c + 1) s_pad)`, period
//!   `C s_pad` with `C` the hidden size rounded up to a power of two. This is
//!   what gets bootstrapped: one bootstrap refreshes the whole hidden state
//!   instead of one per column.
//!
//! Packing costs one level and no rotation: a column ciphertext already holds
//! its values in every block, so a 0/1 mask on block c keeps them where they
//! belong ([`pack`]; the mask carries any per-column constant, such as an RMSNorm
//! gain, for free). Unpacking costs one level and `C - 1` rotations: with
//! `R_k = rot(P, k s_pad)`, column c is `sum_k M_{(c - k) mod C} R_k`, M_b the
//! mask of block b ([`Unpacker`]). The rotations use only the power-of-two block
//! shifts, so the key set stays small.

use crate::{InferError, Result};
use ensi_ckks::{Ciphertext, Encoder, Evaluator, Plaintext};
use rayon::prelude::*;

/// Which layout the hidden state travels in between the client and the server
/// and through the blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// ENSI's column layout: one ciphertext per feature column.
    Columns,
    /// The dense column-block layout: the whole hidden state in one
    /// ciphertext, column c in block c (see [`crate::dense_model`]).
    Dense,
    /// The dense column-block layout over several ciphertexts (all slots of
    /// each), for states one ciphertext cannot hold (see [`crate::wide`]).
    Wide,
}

impl Layout {
    /// The name used on the command line, in key directories and server info.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Columns => "columns",
            Layout::Dense => "dense",
            Layout::Wide => "wide",
        }
    }

    /// Parses [`Layout::name`].
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "columns" => Ok(Layout::Columns),
            "dense" => Ok(Layout::Dense),
            "wide" => Ok(Layout::Wide),
            other => Err(InferError::Shape(format!(
                "unknown layout {other:?} (expected \"dense\", \"wide\" or \"columns\")"
            ))),
        }
    }
}

/// Sizes of the two packings for a model width and a maximum token count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packing {
    /// Slots per column: the maximum token count rounded up to a power of two.
    pub tokens_pad: usize,
    /// Hidden size (columns packed together).
    pub hidden: usize,
    /// Blocks of the packed ciphertext: `hidden` rounded up to a power of two.
    pub blocks: usize,
    /// The layout of the hidden state ([`Layout::Columns`] from [`Packing::new`]).
    pub layout: Layout,
}

impl Packing {
    /// The packing of a `max_tokens` x `hidden` state in a ring of `2^log_n`.
    pub fn new(max_tokens: usize, hidden: usize, log_n: u32) -> Result<Self> {
        if max_tokens == 0 || hidden == 0 {
            return Err(InferError::Shape("empty packing".into()));
        }
        let tokens_pad = max_tokens.next_power_of_two();
        let blocks = hidden.next_power_of_two();
        let slots = 1usize << (log_n - 1);
        if tokens_pad * blocks > slots {
            return Err(InferError::Shape(format!(
                "{blocks} columns of {tokens_pad} slots do not fit one ciphertext of {slots} slots \
                 (several packed ciphertexts per state are not implemented yet)"
            )));
        }
        Ok(Self {
            tokens_pad,
            hidden,
            blocks,
            layout: Layout::Columns,
        })
    }

    /// log2 of the slot count of a column ciphertext.
    pub fn column_log_slots(&self) -> u32 {
        self.tokens_pad.trailing_zeros()
    }

    /// log2 of the slot count of the packed ciphertext (and of bootstrapping).
    pub fn packed_log_slots(&self) -> u32 {
        (self.tokens_pad * self.blocks).trailing_zeros()
    }

    /// Rotations the encrypted model uses besides bootstrapping: token shifts
    /// 1..s_pad (attention, and the LM head's spreading of the last token) and
    /// the power-of-two block shifts (unpacking, the LM head's block sums).
    pub fn rotation_steps(&self) -> Vec<i64> {
        let mut steps: Vec<i64> = (1..self.tokens_pad as i64).collect();
        let mut b = 1;
        while b < self.blocks {
            steps.push((b * self.tokens_pad) as i64);
            b *= 2;
        }
        steps.sort_unstable();
        steps.dedup();
        steps
    }

    /// The slot vector of the packed layout with `value(c)` on the first
    /// `rows` slots of block c (c < hidden), zero elsewhere.
    pub fn block_vector(&self, rows: usize, value: impl Fn(usize) -> f64) -> Vec<f64> {
        let mut v = vec![0.0; self.tokens_pad * self.blocks];
        for c in 0..self.hidden {
            let x = value(c);
            v[c * self.tokens_pad..c * self.tokens_pad + rows].fill(x);
        }
        v
    }
}

/// A copy of `ct` read with `log_slots` slots (see [`Ciphertext::set_log_slots`]).
pub fn relabel(ct: &Ciphertext, log_slots: u32) -> Ciphertext {
    let mut out = ct.clone();
    out.set_log_slots(log_slots);
    out
}

/// Packs hidden columns (all at one level >= 1) into one ciphertext, column c
/// multiplied by `weight[c]`: one level.
pub fn pack(
    eval: &Evaluator,
    encoder: &Encoder,
    packing: &Packing,
    columns: &[Ciphertext],
    weight: &[f64],
) -> Result<Ciphertext> {
    if columns.len() != packing.hidden || weight.len() != packing.hidden {
        return Err(InferError::Shape(format!(
            "packing {} columns with {} weights into {} columns",
            columns.len(),
            weight.len(),
            packing.hidden
        )));
    }
    let level = columns[0].level();
    let log_slots = packing.packed_log_slots();
    // Masks at the scale of the prime the rescale removes: the packed
    // ciphertext keeps the columns' scale.
    let q = eval.params().q()[level] as f64;
    let terms: Vec<Ciphertext> = columns
        .par_iter()
        .enumerate()
        .map(|(c, col)| {
            let mut mask = vec![0.0; packing.tokens_pad * packing.blocks];
            mask[c * packing.tokens_pad..(c + 1) * packing.tokens_pad].fill(weight[c]);
            let pt = encoder.encode_real(&mask, level, q, log_slots)?;
            Ok(eval.mul_plain(&relabel(col, log_slots), &pt)?)
        })
        .collect::<Result<_>>()?;
    let mut acc = terms[0].clone();
    for t in &terms[1..] {
        eval.add_assign(&mut acc, t)?;
    }
    Ok(eval.rescale(&acc)?)
}

/// Unpacks refreshed packed ciphertexts into columns (one level); holds the
/// block masks, encoded once at the level it works at.
pub struct Unpacker {
    packing: Packing,
    level: usize,
    masks: Vec<Plaintext>,
}

impl Unpacker {
    /// Masks for unpacking ciphertexts at `level`.
    pub fn new(
        eval: &Evaluator,
        encoder: &Encoder,
        packing: Packing,
        level: usize,
    ) -> Result<Self> {
        let q = eval.params().q()[level] as f64;
        let log_slots = packing.packed_log_slots();
        let masks = (0..packing.blocks)
            .into_par_iter()
            .map(|b| {
                let mut m = vec![0.0; packing.tokens_pad * packing.blocks];
                m[b * packing.tokens_pad..(b + 1) * packing.tokens_pad].fill(1.0);
                Ok(encoder.encode_real(&m, level, q, log_slots)?)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            packing,
            level,
            masks,
        })
    }

    /// The level the masks were encoded at (inputs must not be above it... or below).
    pub fn level(&self) -> usize {
        self.level
    }

    /// `R_k = rot(p, k s_pad)` for every block k, from the power-of-two shifts:
    /// `R_k = rot(R_{k - 2^j}, 2^j s_pad)` with `2^j` the top bit of k.
    pub fn block_rotations(
        eval: &Evaluator,
        packing: &Packing,
        p: &Ciphertext,
    ) -> Result<Vec<Ciphertext>> {
        let mut rots = vec![p.clone()];
        let mut j = 1;
        while j < packing.blocks {
            let step = (j * packing.tokens_pad) as i64;
            let next: Vec<Ciphertext> = rots
                .par_iter()
                .map(|r| Ok(eval.rotate(r, step)?))
                .collect::<Result<_>>()?;
            rots.extend(next);
            j *= 2;
        }
        Ok(rots)
    }

    /// The hidden columns of `p`, each at the column slot count, one level lower.
    pub fn unpack(&self, eval: &Evaluator, p: &Ciphertext) -> Result<Vec<Ciphertext>> {
        let pk = &self.packing;
        if p.log_slots() != pk.packed_log_slots() || p.level() != self.level {
            return Err(InferError::Shape(format!(
                "unpacking a ciphertext of 2^{} slots at level {}, expected 2^{} at level {}",
                p.log_slots(),
                p.level(),
                pk.packed_log_slots(),
                self.level
            )));
        }
        let rots = Self::block_rotations(eval, pk, p)?;
        let c_pad = pk.blocks;
        (0..pk.hidden)
            .into_par_iter()
            .map(|c| {
                let mut acc = eval.mul_plain(&rots[0], &self.masks[c])?;
                for (k, r) in rots.iter().enumerate().skip(1) {
                    let m = &self.masks[(c + c_pad - k) % c_pad];
                    eval.add_assign(&mut acc, &eval.mul_plain(r, m)?)?;
                }
                let mut col = eval.rescale(&acc)?;
                // Every block now holds column c: the vector has period s_pad.
                col.set_log_slots(pk.column_log_slots());
                Ok(col)
            })
            .collect()
    }
}
