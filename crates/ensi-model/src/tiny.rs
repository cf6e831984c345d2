//! The built-in tiny checkpoints (`ensi model init`): deterministic random BitNet b1.58 models
//! written in exactly the format of the real ones.
//!
//! They are the model of `ensi demo` and of every test: small enough for encrypted inference
//! on two cores in minutes, yet with every part of the real architecture (2 blocks, 4 heads,
//! grouped-query attention for bitnet-2b, gated MLP, all four norms per block, RoPE, a separate
//! or tied LM head). Weights come from [`SplitMix64`] uniform draws (integer arithmetic only, so
//! the bytes are the same on every machine), scaled so that activations stay well inside the
//! default [`EnsiApprox`] intervals.

use crate::approx::{EnsiApprox, APPROX_FILE};
use crate::checkpoint::{write_checkpoint, OwnedTensor, StoreDtype};
use crate::config::{Activation, Family, ModelConfig, WeightScaleConvention};
use crate::error::{ModelError, Result};
use crate::quant::TernaryMatrix;
use crate::rng::SplitMix64;
use crate::tokenizer::{tiny_special_ids, tiny_tokenizer_json, TINY_VOCAB, TOKENIZER_FILE};
use std::path::{Path, PathBuf};

/// Options of [`write_tiny`].
#[derive(Clone, Debug)]
pub struct TinyOptions {
    /// Checkpoint family (tensor names, dtypes, activation, GQA, tied head).
    pub family: Family,
    /// Seed of the weights.
    pub seed: u64,
    /// Number of safetensors shards (1: `model.safetensors`; more: index + shards).
    pub shards: usize,
    /// bitnet-2b only: write the packed `uint8` + `weight_scale` form (as
    /// `bitnet-b1.58-2B-4T`) rather than bf16 latent weights (as `bitnet-b1.58-2B-4T-bf16`).
    pub packed: bool,
}

impl TinyOptions {
    /// Defaults: one file, packed weights for bitnet-2b.
    pub fn new(family: Family, seed: u64) -> Self {
        TinyOptions {
            family,
            seed,
            shards: 1,
            packed: true,
        }
    }
}

/// The configuration of the tiny model of a family: hidden 64, intermediate 128, 2 layers,
/// 4 heads of 16 (bitnet-2b: 2 KV heads), the byte-level vocabulary.
pub fn tiny_config(family: Family) -> ModelConfig {
    let (bos, eos) = tiny_special_ids();
    ModelConfig {
        family,
        hidden_size: 64,
        intermediate_size: 128,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: match family {
            Family::OneBitLlm => 4,
            Family::BitNet2B => 2,
        },
        head_dim: 16,
        vocab_size: TINY_VOCAB,
        rms_norm_eps: 1e-5,
        rope_theta: match family {
            Family::OneBitLlm => 10_000.0,
            Family::BitNet2B => 500_000.0,
        },
        tie_word_embeddings: family == Family::BitNet2B,
        activation: match family {
            Family::OneBitLlm => Activation::Silu,
            Family::BitNet2B => Activation::Relu2,
        },
        max_position_embeddings: 512,
        bos_token_id: Some(bos),
        eos_token_ids: vec![eos],
        input_bits: 8,
        weight_scale: WeightScaleConvention::Multiply,
    }
}

/// Gain of the query and key projections: small, so that attention scores stay within about
/// +-0.7 and softmax and sigmoid attention weigh positions alike (see docs/MODEL.md).
const QK_GAIN: f64 = 0.8;

struct Writer {
    rng: SplitMix64,
    float: StoreDtype,
    packed: bool,
    tensors: Vec<OwnedTensor>,
}

impl Writer {
    fn floats(&mut self, n: usize, f: impl Fn(f64) -> f64) -> Vec<f64> {
        (0..n).map(|_| f(self.rng.next_f64())).collect()
    }

    fn float(&mut self, name: &str, shape: Vec<usize>, values: &[f64]) {
        self.tensors
            .push(OwnedTensor::from_f64(name, self.float, shape, values));
    }

    /// A norm gain 1 + U(-0.2, 0.2): not all ones, so that a loader that skipped a norm would
    /// be caught.
    fn norm(&mut self, name: &str, n: usize) {
        let g = self.floats(n, |u| 1.0 + 0.2 * (2.0 * u - 1.0));
        self.float(name, vec![n], &g);
    }

    /// A projection with latent weights U(-amp, amp), amp = gain / sqrt(fan_in), so that the
    /// output of a unit-RMS input has an RMS of about gain * sqrt(3) / 4.
    fn projection(&mut self, prefix: &str, rows: usize, cols: usize, gain: f64) {
        let amp = gain / (cols as f64).sqrt();
        let latent = self.floats(rows * cols, |u| amp * (2.0 * u - 1.0));
        let name = format!("{prefix}.weight");
        if !self.packed {
            self.float(&name, vec![rows, cols], &latent);
            return;
        }
        // Quantize what a float checkpoint would hold, so the packed and the latent form of one
        // seed are the same model (up to the bf16 rounding of the scale).
        let stored: Vec<f64> = latent
            .iter()
            .map(|&x| half::bf16::from_f64(x).to_f64())
            .collect();
        let t = TernaryMatrix::from_latent(rows, cols, &stored);
        self.tensors.push(OwnedTensor {
            name,
            dtype: StoreDtype::U8,
            shape: vec![rows.div_ceil(4), cols],
            bytes: t.pack(),
        });
        self.float(&format!("{prefix}.weight_scale"), vec![1], &[t.scale()]);
    }
}

/// Writes a tiny checkpoint (config.json, safetensors, tokenizer.json, ensi_approx.json) into
/// `dir`, creating it; returns the files written.
pub fn write_tiny(dir: &Path, opts: &TinyOptions) -> Result<Vec<PathBuf>> {
    write_random(dir, opts, &tiny_config(opts.family))
}

/// Writes a random checkpoint of any shape the same way as [`write_tiny`]
/// (the same weight distributions, the byte-level tokenizer): benchmarks run
/// blocks of real model sizes on it. `config` must be of `opts.family` and
/// have the tiny vocabulary.
pub fn write_random(dir: &Path, opts: &TinyOptions, config: &ModelConfig) -> Result<Vec<PathBuf>> {
    if config.family != opts.family || config.vocab_size != TINY_VOCAB {
        return Err(ModelError::InvalidOption {
            option: "config",
            reason: format!(
                "a random checkpoint needs the options' family ({:?}) and the byte-level \
                 vocabulary ({TINY_VOCAB}); got {:?} with {}",
                opts.family, config.family, config.vocab_size
            ),
        });
    }
    if opts.shards == 0 {
        return Err(ModelError::InvalidOption {
            option: "shards",
            reason: "must be at least 1".into(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let c = config;
    let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let mut w = Writer {
        rng: SplitMix64::new(opts.seed),
        float: match opts.family {
            Family::OneBitLlm => StoreDtype::F16,
            Family::BitNet2B => StoreDtype::BF16,
        },
        packed: opts.family == Family::BitNet2B && opts.packed,
        tensors: Vec::new(),
    };
    // Unit-variance embeddings: the residual stream starts at RMS 1.
    let embed = w.floats(v * h, |u| 3f64.sqrt() * (2.0 * u - 1.0));
    w.float("model.embed_tokens.weight", vec![v, h], &embed);
    for l in 0..c.num_layers {
        let p = format!("model.layers.{l}");
        w.norm(&format!("{p}.input_layernorm.weight"), h);
        w.projection(&format!("{p}.self_attn.q_proj"), c.q_width(), h, QK_GAIN);
        w.projection(&format!("{p}.self_attn.k_proj"), c.kv_width(), h, QK_GAIN);
        w.projection(&format!("{p}.self_attn.v_proj"), c.kv_width(), h, 2.4);
        w.norm(
            &format!("{p}.self_attn.{}.weight", c.family.attn_sub_norm()),
            c.q_width(),
        );
        // The residual branches are weaker than the stream (gain 1.2), as in a trained model
        // where no single block overwrites the residual.
        w.projection(&format!("{p}.self_attn.o_proj"), h, c.q_width(), 1.2);
        w.norm(&format!("{p}.post_attention_layernorm.weight"), h);
        w.projection(&format!("{p}.mlp.gate_proj"), i, h, 2.4);
        w.projection(&format!("{p}.mlp.up_proj"), i, h, 2.4);
        w.norm(&format!("{p}.mlp.{}.weight", c.family.ffn_sub_norm()), i);
        w.projection(&format!("{p}.mlp.down_proj"), h, i, 1.2);
    }
    w.norm("model.norm.weight", h);
    if !c.tie_word_embeddings {
        let head = w.floats(v * h, |u| 0.6 * (2.0 * u - 1.0));
        w.float("lm_head.weight", vec![v, h], &head);
    }

    let mut written = write_checkpoint(dir, &w.tensors, opts.shards)?;
    let mut json = config.to_json();
    if opts.family == Family::BitNet2B && !opts.packed {
        // The bf16 master checkpoint quantizes at run time (transformers' "online" mode).
        json["quantization_config"]["quantization_mode"] = "online".into();
    }
    let cfg_path = dir.join("config.json");
    write_json(&cfg_path, &json)?;
    written.push(cfg_path);
    let tok_path = dir.join(TOKENIZER_FILE);
    write_json(&tok_path, &tiny_tokenizer_json())?;
    written.push(tok_path);
    let approx_path = dir.join(APPROX_FILE);
    EnsiApprox::default().write(&approx_path)?;
    written.push(approx_path);
    Ok(written)
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values always serialize");
    std::fs::write(path, text).map_err(|e| ModelError::io(path, e))
}
