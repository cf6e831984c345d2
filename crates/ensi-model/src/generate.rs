//! Autoregressive generation over the KV cache: greedy or sampled.
//!
//! The plaintext counterpart of the client's loop in ENSI: run the prompt once, pick a token
//! from the last position's logits, feed it back, repeat.

use crate::error::{ModelError, Result};
use crate::forward::{Mode, RangeStats};
use crate::rng::SplitMix64;
use crate::weights::BitNetModel;

/// How the next token is picked from the logits.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    /// The arg-max (ties to the lowest id).
    Greedy,
    /// Sampling from softmax(logits / temperature) over the `top_k` largest logits (all when
    /// 0), with a seeded deterministic generator.
    Sample {
        /// Temperature (> 0).
        temperature: f64,
        /// Candidates kept (0 = all).
        top_k: usize,
        /// Seed of the generator.
        seed: u64,
    },
}

/// Options of [`generate`].
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Tokens to generate at most.
    pub max_new_tokens: usize,
    /// How to pick each token.
    pub sampling: Sampling,
    /// Stop after emitting one of these (the model's EOS ids).
    pub stop_tokens: Vec<u32>,
}

/// The outcome of [`generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    /// The prompt's token ids.
    pub prompt: Vec<u32>,
    /// The generated ids.
    pub generated: Vec<u32>,
    /// For each generated id, the logits it was picked from (vocab entries).
    pub step_logits: Vec<Vec<f64>>,
    /// Logits at every prompt position (prompt tokens x vocab), from the prefill pass.
    pub prompt_logits: crate::tensor::Matrix,
    /// Input ranges of the nonlinearities over the whole run.
    pub ranges: RangeStats,
}

/// Index of the largest value (the lowest index among equals).
pub fn argmax(x: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best
}

/// The `k` largest entries as (index, value), largest first.
pub fn top_k(x: &[f64], k: usize) -> Vec<(usize, f64)> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, x[i])).collect()
}

/// log-softmax of logits.
pub fn log_softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    x.iter().map(|v| v - lse).collect()
}

fn pick(logits: &[f64], sampling: &Sampling, rng: &mut SplitMix64) -> u32 {
    match sampling {
        Sampling::Greedy => argmax(logits) as u32,
        Sampling::Sample {
            temperature,
            top_k: k,
            ..
        } => {
            let k = if *k == 0 { logits.len() } else { *k };
            let cands = top_k(logits, k);
            let m = cands[0].1;
            let w: Vec<f64> = cands
                .iter()
                .map(|(_, v)| ((v - m) / temperature).exp())
                .collect();
            let total: f64 = w.iter().sum();
            let mut u = rng.next_f64() * total;
            for ((i, _), wi) in cands.iter().zip(&w) {
                if u < *wi {
                    return *i as u32;
                }
                u -= wi;
            }
            cands[cands.len() - 1].0 as u32
        }
    }
}

/// Generates up to `opts.max_new_tokens` tokens after `prompt`.
pub fn generate(
    model: &BitNetModel,
    prompt: &[u32],
    mode: &Mode,
    opts: &GenerateOptions,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(ModelError::EmptyInput);
    }
    if let Sampling::Sample { temperature, .. } = opts.sampling {
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(ModelError::InvalidOption {
                option: "temperature",
                reason: format!("{temperature} is not a positive number"),
            });
        }
    }
    let seed = match opts.sampling {
        Sampling::Sample { seed, .. } => seed,
        Sampling::Greedy => 0,
    };
    let mut rng = SplitMix64::new(seed);
    let mut cache = model.new_cache();
    let mut ranges = RangeStats::default();
    let mut generated = Vec::new();
    let mut step_logits = Vec::new();
    let mut f = model.forward(prompt, &mut cache, mode)?;
    let prompt_logits = f.logits.clone();
    for step in 0..opts.max_new_tokens {
        ranges.merge(&f.ranges);
        let last = f.logits.row(f.logits.rows() - 1).to_vec();
        let t = pick(&last, &opts.sampling, &mut rng);
        generated.push(t);
        step_logits.push(last);
        if opts.stop_tokens.contains(&t) || step + 1 == opts.max_new_tokens {
            break;
        }
        f = model.forward(&[t], &mut cache, mode)?;
    }
    if opts.max_new_tokens == 0 {
        ranges.merge(&f.ranges);
    }
    Ok(Generation {
        prompt: prompt.to_vec(),
        generated,
        step_logits,
        prompt_logits,
        ranges,
    })
}
