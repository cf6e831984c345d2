//! `ensi model`, `ensi run`, `ensi eval`: the plaintext model commands.
//!
//! Thin wrappers over `ensi-model`: write the built-in checkpoint, generate text with the
//! original model or the ENSI twin, and measure how far the twin is from the original.

use crate::CliResult;
use clap::{Args, Subcommand, ValueEnum};
use ensi_model::eval::{compare_modes, EvalReport, DEFAULT_PROMPTS};
use ensi_model::forward::RangeStat;
use ensi_model::generate::{log_softmax, top_k};
use ensi_model::{
    generate, BitNetModel, EnsiApprox, Family, GenerateOptions, Mode, Sampling, TinyOptions,
    Tokenizer,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `ensi model ...`
#[derive(Subcommand)]
pub enum ModelCommand {
    /// Write a deterministic small checkpoint in the Hugging Face layout.
    Init(InitArgs),
    /// Print a checkpoint's configuration and size.
    Info {
        /// Model directory (config.json, *.safetensors, tokenizer.json).
        #[arg(long)]
        model: PathBuf,
    },
}

/// Checkpoint family on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum FamilyArg {
    /// 1bitLLM bitnet_b1_58 layout (fp16 latent weights, SiLU, separate head).
    #[value(name = "1bitllm")]
    OneBitLlm,
    /// Microsoft bitnet-b1.58-2B-4T layout (packed ternary, ReLU^2, GQA, tied head).
    #[value(name = "bitnet-2b")]
    BitNet2B,
}

/// Model size on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum SizeArg {
    /// hidden 64, intermediate 128, 2 layers, 4 heads of 16.
    Tiny,
}

/// `ensi model init` arguments.
#[derive(Args)]
pub struct InitArgs {
    /// Checkpoint family.
    #[arg(long, value_enum)]
    family: FamilyArg,
    /// Model size.
    #[arg(long, value_enum, default_value = "tiny")]
    size: SizeArg,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory (created).
    #[arg(long)]
    out: PathBuf,
    /// Number of safetensors shards (more than 1 writes model.safetensors.index.json).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// bitnet-2b: write bf16 latent weights (as bitnet-b1.58-2B-4T-bf16) instead of the packed
    /// uint8 + weight_scale form.
    #[arg(long)]
    latent: bool,
}

/// Forward mode on the command line.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ModeArg {
    /// The model as published (softmax attention, 8-bit activations).
    Original,
    /// The ENSI twin (sigmoid attention, polynomials, no activation quantization).
    Twin,
}

/// `ensi run` arguments.
#[derive(Args)]
pub struct RunArgs {
    /// Model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Prompt text.
    #[arg(long)]
    prompt: String,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
    /// Original model or ENSI twin.
    #[arg(long, value_enum, default_value = "original")]
    mode: ModeArg,
    /// Print JSON (prompt ids, generated ids, logits of every generated position).
    #[arg(long)]
    json: bool,
    /// With --json: also print the logits of every prompt position (`prompt_logits`).
    #[arg(long)]
    prompt_logits: bool,
    /// Candidates shown per generated position.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Sample at this temperature instead of greedy decoding.
    #[arg(long)]
    temperature: Option<f64>,
    /// With --temperature: keep only the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// With --temperature: seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Approximation spec (JSON); default: the model directory's ensi_approx.json, else the
    /// built-in default.
    #[arg(long)]
    approx: Option<PathBuf>,
}

/// `ensi eval` arguments.
#[derive(Args)]
pub struct EvalArgs {
    /// Model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Prompt file, one prompt per line (default: a built-in set of 12 English prompts).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Approximation spec (JSON); default as for `ensi run`.
    #[arg(long)]
    approx: Option<PathBuf>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `ensi model ...`
pub fn model(cmd: ModelCommand) -> CliResult {
    match cmd {
        ModelCommand::Init(a) => init(a),
        ModelCommand::Info { model } => info(&model),
    }
}

fn init(a: InitArgs) -> CliResult {
    let family = match a.family {
        FamilyArg::OneBitLlm => Family::OneBitLlm,
        FamilyArg::BitNet2B => Family::BitNet2B,
    };
    let SizeArg::Tiny = a.size;
    if a.latent && family != Family::BitNet2B {
        return Err(
            "--latent applies to --family bitnet-2b only (1bitllm is always fp16 latent)".into(),
        );
    }
    let t = Instant::now();
    let opts = TinyOptions {
        family,
        seed: a.seed,
        shards: a.shards,
        packed: !a.latent,
    };
    let files = ensi_model::write_tiny(&a.out, &opts)?;
    let model = BitNetModel::load(&a.out)?;
    let c = model.config();
    println!(
        "wrote {} tiny checkpoint (seed {}) to {}: hidden {}, intermediate {}, {} layers, {} heads \
         of {} ({} KV), vocab {}, {} parameters",
        family.cli_name(),
        a.seed,
        a.out.display(),
        c.hidden_size,
        c.intermediate_size,
        c.num_layers,
        c.num_heads,
        c.head_dim,
        c.num_kv_heads,
        c.vocab_size,
        model.num_parameters()
    );
    for f in files {
        let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        println!("  {} ({} bytes)", f.display(), size);
    }
    println!(
        "time: {:.1} ms (write and reload)",
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

fn info(dir: &Path) -> CliResult {
    let model = BitNetModel::load(dir)?;
    let c = model.config();
    println!(
        "family: {} ({})",
        c.family.cli_name(),
        c.family.architecture()
    );
    println!(
        "hidden {}, intermediate {}, {} layers, {} heads of {} ({} KV), vocab {}",
        c.hidden_size,
        c.intermediate_size,
        c.num_layers,
        c.num_heads,
        c.head_dim,
        c.num_kv_heads,
        c.vocab_size
    );
    println!(
        "activation {}, rms_norm_eps {:e}, rope_theta {}, tied head {}, {} parameters",
        c.activation.hf_name(),
        c.rms_norm_eps,
        c.rope_theta,
        c.tie_word_embeddings,
        model.num_parameters()
    );
    Ok(())
}

fn load_approx(dir: &Path, file: Option<&Path>) -> Result<EnsiApprox, ensi_model::ModelError> {
    match file {
        Some(f) => EnsiApprox::from_file(f),
        None => EnsiApprox::for_model_dir(dir),
    }
}

/// `ensi run`
pub fn run(a: RunArgs) -> CliResult {
    let t0 = Instant::now();
    let model = BitNetModel::load(&a.model)?;
    let tok = Tokenizer::from_dir(&a.model)?;
    let approx = load_approx(&a.model, a.approx.as_deref())?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mode = match a.mode {
        ModeArg::Original => Mode::original(),
        ModeArg::Twin => Mode::twin(&approx)?,
    };
    let sampling = match a.temperature {
        None => Sampling::Greedy,
        Some(temperature) => Sampling::Sample {
            temperature,
            top_k: a.top_k,
            seed: a.seed,
        },
    };
    let ids = tok.encode(&a.prompt)?;
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling,
        stop_tokens: model.config().eos_token_ids.clone(),
    };
    let t1 = Instant::now();
    let g = generate(&model, &ids, &mode, &opts)?;
    let gen_ms = t1.elapsed().as_secs_f64() * 1e3;
    let text = tok.decode(&g.generated)?;
    // The vocabulary entry (e.g. `Ġthe`) is unambiguous where a lone byte of a multi-byte
    // character would decode to U+FFFD.
    let show = |id: usize| tok.token_str(id as u32).unwrap_or_default();
    if a.json {
        let mut out = json!({
            "mode": mode.name(),
            "prompt": a.prompt,
            "prompt_ids": g.prompt,
            "generated_ids": g.generated,
            "text": text,
            "logits": g.step_logits,
            "clamped_inputs": g.ranges.outside(),
            "time_ms": {"load": load_ms, "generate": gen_ms},
        });
        if a.prompt_logits {
            let rows: Vec<&[f64]> = (0..g.prompt_logits.rows())
                .map(|r| g.prompt_logits.row(r))
                .collect();
            out["prompt_logits"] = json!(rows);
        }
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!("mode: {}", mode.name());
    println!("prompt: {:?} ({} tokens: {:?})", a.prompt, ids.len(), ids);
    println!("generated: {:?}", text);
    println!("generated ids: {:?}", g.generated);
    for (step, (id, logits)) in g.generated.iter().zip(&g.step_logits).enumerate() {
        let lp = log_softmax(logits);
        let cands: Vec<String> = top_k(logits, a.top)
            .into_iter()
            .map(|(i, l)| format!("{:?} {} ({:.3}, p={:.3})", show(i), i, l, lp[i].exp()))
            .collect();
        println!("  step {step}: picked {id}; top: {}", cands.join(", "));
    }
    if mode.polys().is_some() {
        print_ranges("twin", &g.ranges, Some(&approx), model.config().activation);
    }
    println!(
        "time: load {:.1} ms, generate {:.1} ms ({} prompt + {} new tokens)",
        load_ms,
        gen_ms,
        ids.len(),
        g.generated.len()
    );
    Ok(())
}

fn read_prompts(file: Option<&Path>) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    match file {
        None => Ok(DEFAULT_PROMPTS.iter().map(|s| s.to_string()).collect()),
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let v: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if v.is_empty() {
                return Err(format!("{}: no prompt in the file", f.display()).into());
            }
            Ok(v)
        }
    }
}

fn fmt_stat(s: &RangeStat) -> String {
    if s.count == 0 {
        return "none".into();
    }
    format!("[{:.4}, {:.4}] over {} inputs", s.min, s.max, s.count)
}

fn print_ranges(
    label: &str,
    r: &ensi_model::RangeStats,
    approx: Option<&EnsiApprox>,
    act: ensi_model::Activation,
) {
    let iv = |s: &ensi_model::ChebyshevSpec| format!("[{}, {}] deg {}", s.a, s.b, s.degree);
    let (sig, gate, inv) = match approx {
        Some(a) => (
            format!(" vs {}", iv(&a.sigmoid)),
            format!(
                " vs {}",
                iv(match act {
                    ensi_model::Activation::Silu => &a.silu,
                    ensi_model::Activation::Relu2 => &a.relu2,
                })
            ),
            format!(
                " vs {} + {} Newton",
                iv(&a.inv_sqrt.first_guess),
                a.inv_sqrt.newton_steps
            ),
        ),
        None => Default::default(),
    };
    let clamp = |s: &RangeStat| {
        if approx.is_some() {
            format!("; clamped {}", s.outside)
        } else {
            String::new()
        }
    };
    println!("ranges ({label}):");
    println!(
        "  attention (sigmoid input / softmax score): {}{sig}{}",
        fmt_stat(&r.attention),
        clamp(&r.attention)
    );
    println!(
        "  gate ({}): {}{gate}{}",
        act.hf_name(),
        fmt_stat(&r.gate),
        clamp(&r.gate)
    );
    println!(
        "  inv_sqrt (mean x^2 + eps): {}{inv}{}",
        fmt_stat(&r.inv_sqrt),
        clamp(&r.inv_sqrt)
    );
    if approx.is_some() && r.outside() > 0 {
        println!(
            "  warning: {} inputs left their interval and were clamped; the encrypted path cannot \
             clamp, widen the intervals (--approx) for this model",
            r.outside()
        );
    }
}

fn report_json(r: &EvalReport, positions: usize) -> serde_json::Value {
    let stat =
        |s: &RangeStat| json!({"count": s.count, "min": s.min, "max": s.max, "clamped": s.outside});
    let ranges = |r: &ensi_model::RangeStats| json!({"attention": stat(&r.attention), "gate": stat(&r.gate), "inv_sqrt": stat(&r.inv_sqrt)});
    json!({
        "reference": r.reference,
        "prompts": r.prompts,
        "positions": positions,
        "reference_ranges": ranges(&r.reference_ranges),
        "candidates": r.candidates.iter().map(|c| json!({
            "mode": c.mode,
            "top1_agreement": c.agreement.top1_rate(),
            "mean_kl": c.agreement.mean_kl,
            "max_abs_logit_error": c.agreement.max_abs_logit_error,
            "max_abs_logit": c.agreement.max_abs_logit,
            "ranges": ranges(&c.ranges),
        })).collect::<Vec<_>>(),
    })
}

/// `ensi eval`
pub fn eval(a: EvalArgs) -> CliResult {
    let t0 = Instant::now();
    let model = BitNetModel::load(&a.model)?;
    let tok = Tokenizer::from_dir(&a.model)?;
    let approx = load_approx(&a.model, a.approx.as_deref())?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let prompts = read_prompts(a.prompts.as_deref())?;
    let ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| tok.encode(p))
        .collect::<Result<_, _>>()?;
    let positions: usize = ids.iter().map(Vec::len).sum();
    let t1 = Instant::now();
    let candidates = [
        Mode::original_without_activation_quant(),
        Mode::sigmoid_exact(approx.sigmoid_bias.clone()),
        Mode::twin(&approx)?,
    ];
    let report = compare_modes(&model, &ids, &Mode::original(), &candidates)?;
    let eval_ms = t1.elapsed().as_secs_f64() * 1e3;
    println!(
        "model: {} ({}), {} prompts, {} positions (teacher-forced), reference: {}",
        a.model.display(),
        model.family().cli_name(),
        prompts.len(),
        positions,
        report.reference
    );
    println!(
        "{:<18} {:>12} {:>14} {:>14} {:>14}",
        "mode", "top-1 agree", "mean KL", "max |dlogit|", "max |logit|"
    );
    for c in &report.candidates {
        let g = &c.agreement;
        println!(
            "{:<18} {:>11.1}% {:>14.3e} {:>14.3e} {:>14.3}",
            c.mode,
            100.0 * g.top1_rate(),
            g.mean_kl,
            g.max_abs_logit_error,
            g.max_abs_logit
        );
    }
    println!(
        "  original-noquant: no 8-bit activation quantization (what the twin drops); \
         sigmoid-exact: + sigmoid attention, exact functions; twin: + polynomials"
    );
    let act = model.config().activation;
    print_ranges("original", &report.reference_ranges, None, act);
    if let Some(tw) = report.candidates.last() {
        print_ranges("twin", &tw.ranges, Some(&approx), act);
    }
    println!(
        "time: load {:.1} ms, eval {:.1} ms ({} forward passes)",
        load_ms,
        eval_ms,
        4 * ids.len()
    );
    if let Some(path) = a.json {
        let text = serde_json::to_string_pretty(&report_json(&report, positions))?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
