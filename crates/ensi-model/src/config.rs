//! `config.json`: which BitNet b1.58 family a checkpoint is, and its shapes.
//!
//! First step of the pipeline: the raw JSON is read field by field (so an error names the field)
//! and validated once into an immutable [`ModelConfig`]; everything after (tensor loading, the
//! forward pass, the encrypted path) reads only the validated form.

use crate::error::{ModelError, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// The two published BitNet b1.58 checkpoint layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// 1bitLLM `bitnet_b1_58-{large,xl,3B}`: LLaMA layout with `self_attn.inner_attn_ln` before
    /// `o_proj` and `mlp.ffn_layernorm` before `down_proj`; fp16 latent weights that are
    /// quantized at load; SiLU-gated MLP; separate LM head.
    OneBitLlm,
    /// Microsoft `bitnet-b1.58-2B-4T`: `self_attn.attn_sub_norm`, `mlp.ffn_sub_norm`, ReLU^2-gated
    /// MLP, grouped-query attention, tied embeddings; packed ternary (`uint8` + `weight_scale`)
    /// or bf16 latent weights.
    BitNet2B,
}

impl Family {
    /// The name of the sub-norm before `o_proj`, under `model.layers.N.self_attn.`.
    pub fn attn_sub_norm(self) -> &'static str {
        match self {
            Family::OneBitLlm => "inner_attn_ln",
            Family::BitNet2B => "attn_sub_norm",
        }
    }

    /// The name of the sub-norm before `down_proj`, under `model.layers.N.mlp.`.
    pub fn ffn_sub_norm(self) -> &'static str {
        match self {
            Family::OneBitLlm => "ffn_layernorm",
            Family::BitNet2B => "ffn_sub_norm",
        }
    }

    /// The `architectures` entry real checkpoints of this family carry.
    pub fn architecture(self) -> &'static str {
        match self {
            Family::OneBitLlm => "BitnetForCausalLM",
            Family::BitNet2B => "BitNetForCausalLM",
        }
    }

    /// The `model_type` real checkpoints of this family carry.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::OneBitLlm => "llama",
            Family::BitNet2B => "bitnet",
        }
    }

    /// The short name used on the command line (`1bitllm`, `bitnet-2b`).
    pub fn cli_name(self) -> &'static str {
        match self {
            Family::OneBitLlm => "1bitllm",
            Family::BitNet2B => "bitnet-2b",
        }
    }
}

/// The gate nonlinearity of the MLP: `down(sub_norm(act(gate(x)) * up(x)))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// SiLU, x * sigmoid(x) (`hidden_act: "silu"`).
    Silu,
    /// Squared ReLU, max(x, 0)^2 (`hidden_act: "relu2"`).
    Relu2,
}

impl Activation {
    /// The exact function.
    pub fn eval(self, x: f64) -> f64 {
        (self.exact())(x)
    }

    /// The exact function as a function pointer (what the Chebyshev fits interpolate).
    pub fn exact(self) -> fn(f64) -> f64 {
        match self {
            Activation::Silu => |x| x / (1.0 + (-x).exp()),
            Activation::Relu2 => |x| {
                let r = x.max(0.0);
                r * r
            },
        }
    }

    /// The `hidden_act` string.
    pub fn hf_name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::Relu2 => "relu2",
        }
    }
}

/// How a packed checkpoint's `weight_scale` relates to the ternary values.
///
/// Hugging Face transformers has two BitNet linear classes that read the same packed `uint8`
/// tensor: `AutoBitLinear` (the one `bitnet-b1.58-2B-4T` names in its `quantization_config`)
/// multiplies the output by `weight_scale`, the older `BitLinear` divides by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightScaleConvention {
    /// W = ternary * weight_scale (`linear_class: "autobitlinear"`).
    Multiply,
    /// W = ternary / weight_scale (`linear_class: "bitlinear"`, transformers' default).
    Divide,
}

/// A validated model configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Which checkpoint layout (tensor names, defaults).
    pub family: Family,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads (grouped-query attention when below `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding and the LM head).
    pub vocab_size: usize,
    /// RMSNorm epsilon, the same for every norm of the model.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Whether the LM head is the embedding table.
    pub tie_word_embeddings: bool,
    /// Gate nonlinearity of the MLP.
    pub activation: Activation,
    /// Longest context the model was trained for (informational; RoPE itself has no limit).
    pub max_position_embeddings: usize,
    /// Beginning-of-sequence token, if the config names one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens (LLaMA 3 style configs list several).
    pub eos_token_ids: Vec<u32>,
    /// Bits of the per-token absmax activation quantization (8 in every published model).
    pub input_bits: u32,
    /// Meaning of `weight_scale` for packed weights.
    pub weight_scale: WeightScaleConvention,
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&value)
    }

    /// Validates a parsed `config.json`.
    pub fn from_json(value: &Value) -> Result<Self> {
        let obj = value.as_object().ok_or(ModelError::InvalidField {
            field: "(root)",
            reason: "config.json must be a JSON object".into(),
        })?;
        let architectures: Vec<String> = match obj.get("architectures") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or(ModelError::InvalidField {
                            field: "architectures",
                            reason: "entries must be strings".into(),
                        })
                })
                .collect::<Result<_>>()?,
            Some(_) => {
                return Err(ModelError::InvalidField {
                    field: "architectures",
                    reason: "must be a list of strings".into(),
                })
            }
        };
        let model_type = opt_str(obj, "model_type")?;
        // The two families differ in the case of one letter; `model_type: "bitnet"` is what
        // transformers itself keys on, so it decides first.
        let family = if architectures.iter().any(|a| a == "BitNetForCausalLM")
            || model_type.as_deref() == Some("bitnet")
        {
            Family::BitNet2B
        } else if architectures.iter().any(|a| a == "BitnetForCausalLM") {
            Family::OneBitLlm
        } else {
            return Err(ModelError::UnknownArchitecture {
                architectures,
                model_type,
            });
        };

        let hidden_size = req_usize(obj, "hidden_size")?;
        let intermediate_size = req_usize(obj, "intermediate_size")?;
        let num_layers = req_usize(obj, "num_hidden_layers")?;
        let num_heads = req_usize(obj, "num_attention_heads")?;
        let num_kv_heads = opt_usize(obj, "num_key_value_heads")?.unwrap_or(num_heads);
        let vocab_size = req_usize(obj, "vocab_size")?;
        for (field, v) in [
            ("hidden_size", hidden_size),
            ("intermediate_size", intermediate_size),
            ("num_hidden_layers", num_layers),
            ("num_attention_heads", num_heads),
            ("num_key_value_heads", num_kv_heads),
            ("vocab_size", vocab_size),
        ] {
            if v == 0 {
                return Err(ModelError::InvalidField {
                    field,
                    reason: "must be positive".into(),
                });
            }
        }
        let head_dim = match opt_usize(obj, "head_dim")? {
            Some(d) => d,
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(ModelError::InvalidField {
                        field: "num_attention_heads",
                        reason: format!("{num_heads} does not divide hidden_size {hidden_size}"),
                    });
                }
                hidden_size / num_heads
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(ModelError::InvalidField {
                field: "head_dim",
                reason: format!("{head_dim}: RoPE needs a positive even head width"),
            });
        }
        if num_heads % num_kv_heads != 0 {
            return Err(ModelError::InvalidField {
                field: "num_key_value_heads",
                reason: format!("{num_kv_heads} does not divide num_attention_heads {num_heads}"),
            });
        }
        let rms_norm_eps = opt_f64(obj, "rms_norm_eps")?.unwrap_or(1e-6);
        if !(rms_norm_eps > 0.0 && rms_norm_eps.is_finite()) {
            return Err(ModelError::InvalidField {
                field: "rms_norm_eps",
                reason: format!("{rms_norm_eps} is not a positive number"),
            });
        }
        let rope_theta = opt_f64(obj, "rope_theta")?.unwrap_or(match family {
            Family::OneBitLlm => 10_000.0,
            Family::BitNet2B => 500_000.0,
        });
        if !(rope_theta > 1.0 && rope_theta.is_finite()) {
            return Err(ModelError::InvalidField {
                field: "rope_theta",
                reason: format!("{rope_theta} is not a number above 1"),
            });
        }
        match obj.get("rope_scaling") {
            None | Some(Value::Null) => {}
            Some(_) => {
                return Err(ModelError::InvalidField {
                    field: "rope_scaling",
                    reason: "RoPE scaling is not supported (no BitNet b1.58 checkpoint uses it)"
                        .into(),
                })
            }
        }
        let activation = match opt_str(obj, "hidden_act")?.as_deref() {
            None => match family {
                Family::OneBitLlm => Activation::Silu,
                Family::BitNet2B => Activation::Relu2,
            },
            Some("silu") | Some("swish") => Activation::Silu,
            Some("relu2") => Activation::Relu2,
            Some(other) => {
                return Err(ModelError::InvalidField {
                    field: "hidden_act",
                    reason: format!("`{other}` is not one of silu, relu2"),
                })
            }
        };
        // Both LlamaConfig and BitNetConfig default to untied heads; the real 2B-4T config says
        // `true` explicitly.
        let tie_word_embeddings = match obj.get("tie_word_embeddings") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ModelError::InvalidField {
                    field: "tie_word_embeddings",
                    reason: "must be true or false".into(),
                })
            }
        };
        let max_position_embeddings = opt_usize(obj, "max_position_embeddings")?.unwrap_or(2048);
        let bos_token_id = opt_u32(obj, "bos_token_id")?;
        let eos_token_ids = match obj.get("eos_token_id") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| json_u32(v, "eos_token_id"))
                .collect::<Result<_>>()?,
            Some(v) => vec![json_u32(v, "eos_token_id")?],
        };
        let input_bits = opt_usize(obj, "input_bits")?.unwrap_or(8);
        if !(2..=16).contains(&input_bits) {
            return Err(ModelError::InvalidField {
                field: "input_bits",
                reason: format!("{input_bits} is outside 2..=16"),
            });
        }
        let weight_scale = match obj.get("quantization_config") {
            None | Some(Value::Null) => WeightScaleConvention::Divide,
            Some(Value::Object(q)) => match q.get("linear_class").and_then(Value::as_str) {
                None | Some("bitlinear") => WeightScaleConvention::Divide,
                Some("autobitlinear") => WeightScaleConvention::Multiply,
                Some(other) => {
                    return Err(ModelError::InvalidField {
                        field: "quantization_config.linear_class",
                        reason: format!("`{other}` is not one of bitlinear, autobitlinear"),
                    })
                }
            },
            Some(_) => {
                return Err(ModelError::InvalidField {
                    field: "quantization_config",
                    reason: "must be an object".into(),
                })
            }
        };
        Ok(ModelConfig {
            family,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            rms_norm_eps,
            rope_theta,
            tie_word_embeddings,
            activation,
            max_position_embeddings,
            bos_token_id,
            eos_token_ids,
            input_bits: input_bits as u32,
            weight_scale,
        })
    }

    /// The `config.json` a real checkpoint of this family would carry for these shapes.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "architectures".into(),
            Value::from(vec![self.family.architecture()]),
        );
        m.insert("model_type".into(), Value::from(self.family.model_type()));
        m.insert("hidden_size".into(), Value::from(self.hidden_size));
        m.insert(
            "intermediate_size".into(),
            Value::from(self.intermediate_size),
        );
        m.insert("num_hidden_layers".into(), Value::from(self.num_layers));
        m.insert("num_attention_heads".into(), Value::from(self.num_heads));
        m.insert("num_key_value_heads".into(), Value::from(self.num_kv_heads));
        if self.head_dim * self.num_heads != self.hidden_size {
            m.insert("head_dim".into(), Value::from(self.head_dim));
        }
        m.insert("vocab_size".into(), Value::from(self.vocab_size));
        m.insert("rms_norm_eps".into(), Value::from(self.rms_norm_eps));
        m.insert("rope_theta".into(), Value::from(self.rope_theta));
        m.insert("rope_scaling".into(), Value::Null);
        m.insert("hidden_act".into(), Value::from(self.activation.hf_name()));
        m.insert(
            "tie_word_embeddings".into(),
            Value::from(self.tie_word_embeddings),
        );
        m.insert(
            "max_position_embeddings".into(),
            Value::from(self.max_position_embeddings),
        );
        m.insert("attention_bias".into(), Value::from(false));
        m.insert("attention_dropout".into(), Value::from(0.0));
        m.insert("initializer_range".into(), Value::from(0.02));
        m.insert("use_cache".into(), Value::from(true));
        if let Some(b) = self.bos_token_id {
            m.insert("bos_token_id".into(), Value::from(b));
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [e] => {
                m.insert("eos_token_id".into(), Value::from(*e));
            }
            many => {
                m.insert("eos_token_id".into(), Value::from(many.to_vec()));
            }
        }
        match self.family {
            Family::OneBitLlm => {
                m.insert("input_bits".into(), Value::from(self.input_bits));
                m.insert("weight_bits".into(), Value::from(1));
                m.insert("torch_dtype".into(), Value::from("float16"));
                m.insert("pretraining_tp".into(), Value::from(1));
            }
            Family::BitNet2B => {
                m.insert("torch_dtype".into(), Value::from("bfloat16"));
                let class = match self.weight_scale {
                    WeightScaleConvention::Multiply => "autobitlinear",
                    WeightScaleConvention::Divide => "bitlinear",
                };
                let mut q = Map::new();
                q.insert("quant_method".into(), Value::from("bitnet"));
                q.insert("linear_class".into(), Value::from(class));
                q.insert("quantization_mode".into(), Value::from("offline"));
                m.insert("quantization_config".into(), Value::Object(q));
            }
        }
        Value::Object(m)
    }

    /// Width of the concatenated query heads (`num_heads * head_dim`).
    pub fn q_width(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the concatenated key (or value) heads (`num_kv_heads * head_dim`).
    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

fn json_u32(v: &Value, field: &'static str) -> Result<u32> {
    v.as_u64()
        .and_then(|x| u32::try_from(x).ok())
        .ok_or(ModelError::InvalidField {
            field,
            reason: format!("{v} is not a token id"),
        })
}

fn opt_usize(obj: &Map<String, Value>, field: &'static str) -> Result<Option<usize>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .map(Some)
            .ok_or(ModelError::InvalidField {
                field,
                reason: format!("{v} is not a non-negative integer"),
            }),
    }
}

fn req_usize(obj: &Map<String, Value>, field: &'static str) -> Result<usize> {
    opt_usize(obj, field)?.ok_or(ModelError::MissingField { field })
}

fn opt_u32(obj: &Map<String, Value>, field: &'static str) -> Result<Option<u32>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => json_u32(v, field).map(Some),
    }
}

fn opt_f64(obj: &Map<String, Value>, field: &'static str) -> Result<Option<f64>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or(ModelError::InvalidField {
            field,
            reason: format!("{v} is not a number"),
        }),
    }
}

fn opt_str(obj: &Map<String, Value>, field: &'static str) -> Result<Option<String>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(ModelError::InvalidField {
            field,
            reason: format!("{v} is not a string"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "architectures": ["BitnetForCausalLM"], "model_type": "llama",
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "vocab_size": 300, "rms_norm_eps": 1e-5,
        })
    }

    #[test]
    fn families_are_told_apart() {
        let c = ModelConfig::from_json(&base()).unwrap();
        assert_eq!(c.family, Family::OneBitLlm);
        assert_eq!(c.activation, Activation::Silu);
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.num_kv_heads, 4);
        let mut v = base();
        v["architectures"] = json!(["BitNetForCausalLM"]);
        v["num_key_value_heads"] = json!(2);
        v["hidden_act"] = json!("relu2");
        v["quantization_config"] =
            json!({"quant_method": "bitnet", "linear_class": "autobitlinear"});
        let c = ModelConfig::from_json(&v).unwrap();
        assert_eq!(c.family, Family::BitNet2B);
        assert_eq!(c.weight_scale, WeightScaleConvention::Multiply);
        assert_eq!(c.kv_width(), 32);
        // Round trip through the writer's JSON.
        assert_eq!(ModelConfig::from_json(&c.to_json()).unwrap(), c);
    }

    #[test]
    fn bad_fields_are_named() {
        let mut v = base();
        v["architectures"] = json!(["GPT2LMHeadModel"]);
        v["model_type"] = json!("gpt2");
        assert!(matches!(
            ModelConfig::from_json(&v),
            Err(ModelError::UnknownArchitecture { .. })
        ));
        let mut v = base();
        v.as_object_mut().unwrap().remove("hidden_size");
        assert!(matches!(
            ModelConfig::from_json(&v),
            Err(ModelError::MissingField {
                field: "hidden_size"
            })
        ));
        let mut v = base();
        v["num_attention_heads"] = json!(5);
        assert!(matches!(
            ModelConfig::from_json(&v),
            Err(ModelError::InvalidField {
                field: "num_attention_heads",
                ..
            })
        ));
        let mut v = base();
        v["num_key_value_heads"] = json!(3);
        assert!(matches!(
            ModelConfig::from_json(&v),
            Err(ModelError::InvalidField {
                field: "num_key_value_heads",
                ..
            })
        ));
        let mut v = base();
        v["hidden_act"] = json!("gelu");
        assert!(matches!(
            ModelConfig::from_json(&v),
            Err(ModelError::InvalidField {
                field: "hidden_act",
                ..
            })
        ));
        let mut v = base();
        v["vocab_size"] = json!("many");
        assert!(matches!(
            ModelConfig::from_json(&v),
            Err(ModelError::InvalidField {
                field: "vocab_size",
                ..
            })
        ));
        let mut v = base();
        v["rms_norm_eps"] = json!(-1.0);
        assert!(matches!(
            ModelConfig::from_json(&v),
            Err(ModelError::InvalidField {
                field: "rms_norm_eps",
                ..
            })
        ));
        let mut v = base();
        v["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        assert!(matches!(
            ModelConfig::from_json(&v),
            Err(ModelError::InvalidField {
                field: "rope_scaling",
                ..
            })
        ));
    }
}
