//! Agreement between two forward modes on a prompt set (`ensi eval`): top-1 agreement, mean
//! KL divergence and the largest logit error, over every position of every prompt (teacher
//! forcing: both modes see the same tokens).
//!
//! This is how the twin is checked against the original; the same figures for the decrypted
//! logits against the twin check the encrypted path.

use crate::error::Result;
use crate::forward::{Mode, RangeStats};
use crate::generate::{argmax, log_softmax};
use crate::tensor::Matrix;
use crate::weights::BitNetModel;

/// How far one mode's logits are from a reference mode's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Agreement {
    /// Positions compared.
    pub positions: usize,
    /// Positions whose arg-max token is the same.
    pub top1_agree: usize,
    /// Mean over positions of KL(reference || candidate), in nats.
    pub mean_kl: f64,
    /// Largest |logit difference| over all positions and tokens.
    pub max_abs_logit_error: f64,
    /// Largest |logit| of the reference, to read the error against.
    pub max_abs_logit: f64,
}

impl Agreement {
    /// Fraction of positions with the same top-1 token.
    pub fn top1_rate(&self) -> f64 {
        if self.positions == 0 {
            1.0
        } else {
            self.top1_agree as f64 / self.positions as f64
        }
    }

    /// Compares candidate logits with reference logits (rows = positions).
    pub fn of(reference: &Matrix, candidate: &Matrix) -> Self {
        let mut a = Agreement::default();
        a.add(reference, candidate);
        a
    }

    /// Adds the positions of one more prompt.
    pub fn add(&mut self, reference: &Matrix, candidate: &Matrix) {
        let total_kl = self.mean_kl * self.positions as f64;
        let mut kl_sum = 0.0;
        for r in 0..reference.rows() {
            let (p, q) = (reference.row(r), candidate.row(r));
            if argmax(p) == argmax(q) {
                self.top1_agree += 1;
            }
            let (lp, lq) = (log_softmax(p), log_softmax(q));
            kl_sum += lp
                .iter()
                .zip(&lq)
                .map(|(a, b)| a.exp() * (a - b))
                .sum::<f64>();
        }
        self.positions += reference.rows();
        self.mean_kl = (total_kl + kl_sum) / self.positions.max(1) as f64;
        self.max_abs_logit_error = self
            .max_abs_logit_error
            .max(reference.max_abs_diff(candidate));
        self.max_abs_logit = self.max_abs_logit.max(reference.max_abs());
    }
}

/// One candidate mode against the reference.
#[derive(Clone, Debug)]
pub struct ModeReport {
    /// The candidate mode's name.
    pub mode: &'static str,
    /// Its agreement with the reference mode.
    pub agreement: Agreement,
    /// Input ranges of its nonlinearities (with clamped counts, for the twin).
    pub ranges: RangeStats,
}

/// Agreement of several modes with a reference mode over a prompt set.
#[derive(Clone, Debug)]
pub struct EvalReport {
    /// The reference mode's name.
    pub reference: &'static str,
    /// Input ranges of the reference's nonlinearities.
    pub reference_ranges: RangeStats,
    /// One entry per candidate, in the order given.
    pub candidates: Vec<ModeReport>,
    /// Prompts evaluated.
    pub prompts: usize,
}

/// Runs every prompt (token ids) through the reference and each candidate mode and compares
/// logits position by position.
pub fn compare_modes(
    model: &BitNetModel,
    prompts: &[Vec<u32>],
    reference: &Mode,
    candidates: &[Mode],
) -> Result<EvalReport> {
    let mut report = EvalReport {
        reference: reference.name(),
        reference_ranges: RangeStats::default(),
        candidates: candidates
            .iter()
            .map(|m| ModeReport {
                mode: m.name(),
                agreement: Agreement::default(),
                ranges: RangeStats::default(),
            })
            .collect(),
        prompts: prompts.len(),
    };
    for p in prompts {
        let r = model.forward(p, &mut model.new_cache(), reference)?;
        report.reference_ranges.merge(&r.ranges);
        for (m, out) in candidates.iter().zip(report.candidates.iter_mut()) {
            let f = model.forward(p, &mut model.new_cache(), m)?;
            out.agreement.add(&r.logits, &f.logits);
            out.ranges.merge(&f.ranges);
        }
    }
    Ok(report)
}

/// A small default prompt set (English, varied lengths) for `ensi eval`.
pub const DEFAULT_PROMPTS: [&str; 12] = [
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time",
    "In 1969, the first humans landed on",
    "Secure inference keeps the prompt private.",
    "def add(a, b): return a + b",
    "The capital of France is",
    "Homomorphic encryption lets a server compute on data it cannot read.",
    "1, 2, 3, 4, 5,",
    "She opened the door and saw",
    "Ternary weights are -1, 0 or +1.",
    "Hello, world!",
    "The sigmoid replaces the softmax in attention, and the model",
];
