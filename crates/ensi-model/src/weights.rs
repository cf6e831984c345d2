//! The weights of a BitNet b1.58 model, checked against its configuration.
//!
//! Third step of loading, after [`crate::config`] and [`crate::checkpoint`]: every tensor the
//! configuration implies is fetched by its Hugging Face name, its shape checked, and every
//! projection turned into a [`TernaryMatrix`]:
//! - float latent weights (1bitLLM fp16, Microsoft's `-bf16` checkpoint) are quantized with
//!   BitNet's absmean rule;
//! - packed `uint8` weights with a `weight_scale` (Microsoft's deployment checkpoint) are
//!   unpacked, the scale read per the config's `quantization_config.linear_class`;
//! - float weights next to a `weight_scale` are taken as already ternary.
//!
//! The embedding table and a separate LM head stay in full precision (BitNet never quantizes
//! them); they are kept as f32, which holds f16 and bf16 values exactly.

use crate::checkpoint::TensorStore;
use crate::config::{Family, ModelConfig, WeightScaleConvention};
use crate::error::{ModelError, Result};
use crate::quant::TernaryMatrix;
use std::path::Path;

/// The weights of one transformer block.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    /// `input_layernorm` gain (hidden).
    pub input_norm: Vec<f64>,
    /// `self_attn.q_proj` (num_heads * head_dim x hidden).
    pub q_proj: TernaryMatrix,
    /// `self_attn.k_proj` (num_kv_heads * head_dim x hidden).
    pub k_proj: TernaryMatrix,
    /// `self_attn.v_proj` (num_kv_heads * head_dim x hidden).
    pub v_proj: TernaryMatrix,
    /// `self_attn.inner_attn_ln` / `self_attn.attn_sub_norm` gain (num_heads * head_dim).
    pub attn_sub_norm: Vec<f64>,
    /// `self_attn.o_proj` (hidden x num_heads * head_dim).
    pub o_proj: TernaryMatrix,
    /// `post_attention_layernorm` gain (hidden).
    pub post_attention_norm: Vec<f64>,
    /// `mlp.gate_proj` (intermediate x hidden).
    pub gate_proj: TernaryMatrix,
    /// `mlp.up_proj` (intermediate x hidden).
    pub up_proj: TernaryMatrix,
    /// `mlp.ffn_layernorm` / `mlp.ffn_sub_norm` gain (intermediate).
    pub ffn_sub_norm: Vec<f64>,
    /// `mlp.down_proj` (hidden x intermediate).
    pub down_proj: TernaryMatrix,
}

/// A loaded BitNet b1.58 model.
#[derive(Clone, Debug)]
pub struct BitNetModel {
    pub(crate) config: ModelConfig,
    pub(crate) embed: Vec<f32>,
    pub(crate) layers: Vec<LayerWeights>,
    pub(crate) final_norm: Vec<f64>,
    pub(crate) lm_head: Option<Vec<f32>>,
    pub(crate) inv_freq: Vec<f64>,
}

impl BitNetModel {
    /// Loads `config.json` and the safetensors weights of a model directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let store = TensorStore::open_dir(dir)?;
        Self::from_store(config, &store)
    }

    /// Builds the model from a configuration and an opened tensor store.
    pub fn from_store(config: ModelConfig, store: &TensorStore) -> Result<Self> {
        let c = &config;
        let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let embed = to_f32(store.f64_tensor("model.embed_tokens.weight", &[v, h])?);
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let p = format!("model.layers.{l}");
            let norm = |name: String, n: usize| store.f64_tensor(&name, &[n]);
            let proj = |name: String, rows: usize, cols: usize| {
                load_projection(store, c.weight_scale, &name, rows, cols)
            };
            layers.push(LayerWeights {
                input_norm: norm(format!("{p}.input_layernorm.weight"), h)?,
                q_proj: proj(format!("{p}.self_attn.q_proj"), c.q_width(), h)?,
                k_proj: proj(format!("{p}.self_attn.k_proj"), c.kv_width(), h)?,
                v_proj: proj(format!("{p}.self_attn.v_proj"), c.kv_width(), h)?,
                attn_sub_norm: norm(
                    format!("{p}.self_attn.{}.weight", c.family.attn_sub_norm()),
                    c.q_width(),
                )?,
                o_proj: proj(format!("{p}.self_attn.o_proj"), h, c.q_width())?,
                post_attention_norm: norm(format!("{p}.post_attention_layernorm.weight"), h)?,
                gate_proj: proj(format!("{p}.mlp.gate_proj"), i, h)?,
                up_proj: proj(format!("{p}.mlp.up_proj"), i, h)?,
                ffn_sub_norm: norm(format!("{p}.mlp.{}.weight", c.family.ffn_sub_norm()), i)?,
                down_proj: proj(format!("{p}.mlp.down_proj"), h, i)?,
            });
        }
        let final_norm = store.f64_tensor("model.norm.weight", &[h])?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(to_f32(store.f64_tensor("lm_head.weight", &[v, h])?))
        };
        Ok(Self::assemble(config, embed, layers, final_norm, lm_head))
    }

    pub(crate) fn assemble(
        config: ModelConfig,
        embed: Vec<f32>,
        layers: Vec<LayerWeights>,
        final_norm: Vec<f64>,
        lm_head: Option<Vec<f32>>,
    ) -> Self {
        let d = config.head_dim;
        // RoPE frequencies theta^(-2j/d), j < d/2, paired as (j, j + d/2) (`rotate_half`).
        let inv_freq = (0..d / 2)
            .map(|j| 1.0 / config.rope_theta.powf(2.0 * j as f64 / d as f64))
            .collect();
        BitNetModel {
            config,
            embed,
            layers,
            final_norm,
            lm_head,
            inv_freq,
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The transformer blocks.
    pub fn layers(&self) -> &[LayerWeights] {
        &self.layers
    }

    /// RoPE frequencies theta^(-2j/d), j < head_dim / 2; dimension j is paired with j + d/2.
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }

    /// The final RMSNorm gain.
    pub fn final_norm(&self) -> &[f64] {
        &self.final_norm
    }

    /// The checkpoint family.
    pub fn family(&self) -> Family {
        self.config.family
    }

    /// The embedding row of a token (what the client computes before encrypting).
    pub fn embedding(&self, token: u32) -> Result<Vec<f64>> {
        let (v, h) = (self.config.vocab_size, self.config.hidden_size);
        let t = token as usize;
        if t >= v {
            return Err(ModelError::TokenOutOfRange {
                id: token,
                vocab: v,
            });
        }
        Ok(self.embed[t * h..(t + 1) * h]
            .iter()
            .map(|&x| f64::from(x))
            .collect())
    }

    /// The LM head matrix (vocab x hidden): the embedding table when tied.
    pub fn lm_head(&self) -> &[f32] {
        self.lm_head.as_deref().unwrap_or(&self.embed)
    }

    /// Number of parameters (ternary and full precision), counting a tied head once.
    pub fn num_parameters(&self) -> usize {
        let c = &self.config;
        let per_layer = 2 * c.hidden_size
            + c.q_width()
            + c.intermediate_size
            + 2 * c.q_width() * c.hidden_size
            + 2 * c.kv_width() * c.hidden_size
            + 3 * c.intermediate_size * c.hidden_size;
        c.num_layers * per_layer
            + c.vocab_size * c.hidden_size * if c.tie_word_embeddings { 1 } else { 2 }
            + c.hidden_size
    }
}

fn to_f32(v: Vec<f64>) -> Vec<f32> {
    // Exact for f16, bf16 and f32 sources; f64 sources are rounded (no BitNet checkpoint has
    // f64 embeddings).
    v.into_iter().map(|x| x as f32).collect()
}

/// Loads one projection `{prefix}.weight` (+ `{prefix}.weight_scale`) as a ternary matrix.
fn load_projection(
    store: &TensorStore,
    convention: WeightScaleConvention,
    prefix: &str,
    rows: usize,
    cols: usize,
) -> Result<TernaryMatrix> {
    let wname = format!("{prefix}.weight");
    let sname = format!("{prefix}.weight_scale");
    let read_scale = || -> Result<f64> {
        let raw = store.scalar(&sname)?;
        if raw <= 0.0 {
            return Err(ModelError::NotTernary {
                name: sname.clone(),
                reason: format!("weight_scale {raw} is not positive"),
            });
        }
        Ok(match convention {
            WeightScaleConvention::Multiply => raw,
            WeightScaleConvention::Divide => 1.0 / raw,
        })
    };
    if store.is_u8(&wname)? {
        let packed = store.u8_tensor(&wname, &[rows.div_ceil(4), cols])?;
        let scale = read_scale()?;
        return TernaryMatrix::from_packed(&wname, rows, cols, packed, scale);
    }
    let w = store.f64_tensor(&wname, &[rows, cols])?;
    if store.contains(&sname) {
        // Float storage of already-ternary weights (transformers' "offline" AutoBitLinear).
        let scale = read_scale()?;
        let mut values = Vec::with_capacity(w.len());
        for x in &w {
            if *x != -1.0 && *x != 0.0 && *x != 1.0 {
                return Err(ModelError::NotTernary {
                    name: wname,
                    reason: format!("value {x} next to a weight_scale"),
                });
            }
            values.push(*x as i8);
        }
        return TernaryMatrix::new(&wname, rows, cols, values, scale);
    }
    Ok(TernaryMatrix::from_latent(rows, cols, &w))
}
