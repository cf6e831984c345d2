//! `ensi demo`: the built-in model, end to end, as far as the encrypted path
//! is built today.
//!
//! What it does now (see README and docs/ARCHITECTURE.md for the plan):
//! 1. writes the built-in tiny BitNet checkpoint and runs the prompt through
//!    the original model and the ENSI twin in plaintext;
//! 2. client: generates a 128-bit CKKS key, and encrypts the normalized input
//!    of the first block in ENSI's column layout;
//! 3. server (holding only public data): evaluates the first block's
//!    `q_proj` as a multiplication-free ternary PCMM on the ciphertexts;
//! 4. client: decrypts, applies the folded weight scale, and compares with the
//!    twin's plaintext `q_proj` output.
//!
//! The rest of the encrypted forward pass (attention, RMSNorm with
//! bootstrapping, MLP, LM head) and the client/server protocol are not built
//! yet; the demo says so instead of pretending.

use crate::CliResult;
use clap::Args;
use ensi_ckks::{
    Ciphertext, Decryptor, Encoder, Encryptor, EvaluationKeys, Evaluator, KeyGenerator,
    ParametersLiteral,
};
use ensi_infer::layout::ColumnLayout;
use ensi_infer::pcmm::ternary_pcmm_columns;
use ensi_model::generate::argmax;
use ensi_model::{BitNetModel, EnsiApprox, Family, Mode, TinyOptions, Tokenizer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// `ensi demo` arguments.
#[derive(Args)]
pub struct DemoArgs {
    /// Prompt to run.
    #[arg(long, default_value = "The quick brown fox")]
    pub prompt: String,
    /// CKKS parameter preset (128-bit presets only, unless --allow-insecure).
    #[arg(long, default_value = "n15-l10")]
    pub preset: String,
    /// Where to write the built-in model (default: a fresh temporary directory).
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Permit an insecure test preset (never for real data).
    #[arg(long)]
    pub allow_insecure: bool,
}

struct Timings(Vec<(&'static str, f64)>);

impl Timings {
    fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.0.push((name, t.elapsed().as_secs_f64()));
        out
    }
}

pub fn run(args: DemoArgs) -> CliResult {
    let mut timings = Timings(Vec::new());
    let dir = args
        .model_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ensi-demo-{}", std::process::id())));
    println!(
        "ENSI demo: built-in tiny 1bitLLM-layout model, prompt {:?}",
        args.prompt
    );

    // --- plaintext model ---------------------------------------------------------------
    timings.time("write built-in model", || {
        ensi_model::write_tiny(&dir, &TinyOptions::new(Family::OneBitLlm, 0))
    })?;
    let model = BitNetModel::load(&dir)?;
    let tokenizer = Tokenizer::from_dir(&dir)?;
    let tokens = tokenizer.encode(&args.prompt)?;
    if tokens.is_empty() {
        return Err("the prompt has no tokens".into());
    }
    let approx = EnsiApprox::for_model_dir(&dir)?;
    let twin = Mode::twin(&approx)?;
    let (orig_fwd, twin_fwd, trace) = timings.time(
        "plaintext original + twin",
        || -> Result<_, ensi_model::ModelError> {
            let orig = model.forward(&tokens, &mut model.new_cache(), &Mode::original())?;
            let (tw, trace) = model.forward_traced(&tokens, &mut model.new_cache(), &twin)?;
            Ok((orig, tw, trace))
        },
    )?;
    let last = tokens.len() - 1;
    let next_orig = argmax(orig_fwd.logits.row(last)) as u32;
    let next_twin = argmax(twin_fwd.logits.row(last)) as u32;
    println!(
        "  {} tokens; next token: original {} {:?}, ENSI twin {} {:?}",
        tokens.len(),
        next_orig,
        tokenizer.decode(&[next_orig])?,
        next_twin,
        tokenizer.decode(&[next_twin])?
    );

    // --- client: keys and encryption -----------------------------------------------------
    let params = ParametersLiteral::preset(&args.preset)?.build()?;
    if params.is_insecure() && !args.allow_insecure {
        return Err(format!(
            "preset {} is not 128-bit secure; real data needs a secure preset",
            args.preset
        )
        .into());
    }
    println!(
        "  CKKS preset {}: N = 2^{}, {} levels, log2(QP) = {:.0}",
        params.name(),
        params.log_n(),
        params.max_level(),
        params.log_qp()
    );
    let sk = timings.time("client: key generation", || {
        KeyGenerator::new(&params).gen_secret_key()
    });
    let encoder = Encoder::new(&params);
    let mut encryptor = Encryptor::with_secret_key(&params, &sk);
    let x = &trace.layers[0].attn_norm;
    let layout = ColumnLayout::new(x.rows(), x.cols());
    let cts = timings.time("client: encrypt (column layout)", || {
        layout.encrypt(
            x,
            &encoder,
            &mut encryptor,
            params.max_level(),
            params.default_scale(),
        )
    })?;
    let upload: usize = cts.iter().map(|c| c.to_bytes(&params).len()).sum();
    println!(
        "  client -> server: {} ciphertexts, {:.1} MB",
        cts.len(),
        upload as f64 / 1e6
    );

    // --- server: multiplication-free ternary PCMM ---------------------------------------
    // The server sees only ciphertexts and public parameters; the PCMM needs no evaluation key.
    let received: Vec<Ciphertext> = cts
        .iter()
        .map(|c| Ciphertext::from_bytes(&params, &c.to_bytes(&params)))
        .collect::<Result<_, _>>()?;
    let eval = Evaluator::new(&params, Arc::new(EvaluationKeys::default()));
    let w = &model.layers()[0].q_proj;
    let out = timings.time("server: q_proj ternary PCMM", || {
        ternary_pcmm_columns(&eval, &received, w)
    })?;
    println!(
        "  server: q_proj ({}x{} ternary) with additions only, levels used: {}",
        w.rows(),
        w.cols(),
        params.max_level() - out[0].level()
    );

    // --- client: decrypt and compare -------------------------------------------------------
    let dec = Decryptor::new(&sk);
    let mut q = timings.time("client: decrypt", || {
        ColumnLayout::new(x.rows(), w.rows()).decrypt(&out, &encoder, &dec)
    })?;
    // The per-tensor scale was folded out of the PCMM; the client applies it here.
    q.data_mut().iter_mut().for_each(|v| *v *= w.scale());
    // The twin's own BitLinear on the same input (the trace's `q` is after RoPE).
    let want = &w.forward(x);
    let err = q.max_abs_diff(want);
    println!(
        "  decrypted q_proj vs plaintext ENSI twin: max abs error {err:.2e} ({:.1} bits, values up to {:.2})",
        -err.log2(),
        want.max_abs()
    );
    println!("  not built yet: encrypted attention, RMSNorm with bootstrapping, MLP, LM head, HTTP server (issues 3, 5, 6)");

    println!("\nwhere the time went:");
    for (name, secs) in &timings.0 {
        println!("  {name:<36} {:>9.3} s", secs);
    }
    if args.model_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if err > 1e-4 {
        return Err(format!("decrypted result differs from the twin by {err:.2e}").into());
    }
    Ok(())
}
