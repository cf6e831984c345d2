//! `ensi demo`: the whole product on the built-in model, with no set-up.
//!
//! 1. writes the built-in tiny BitNet checkpoint (1bitLLM layout) to a
//!    temporary directory and runs the prompt through the original model and
//!    the ENSI twin in plaintext (greedy tokens, the reference);
//! 2. starts the HTTP server (`ensi serve`'s code) on a loopback port, with
//!    the model and no secret;
//! 3. runs the client (`ensi client`'s code): 128-bit keys, key upload, one
//!    encrypted request and one encrypted answer per generated token;
//! 4. prints the decrypted tokens beside the twin's and the original's, the
//!    logit error against the twin, and where the time went.

use crate::secure::{client_rounds_on_loopback, EnsiBackend, DEFAULT_MAX_TOKENS, DEFAULT_PRESET};
use crate::CliResult;
use clap::Args;
use ensi_model::generate::argmax;
use ensi_model::{BitNetModel, EnsiApprox, Family, Mode, TinyOptions, Tokenizer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// `ensi demo` arguments.
#[derive(Args)]
pub struct DemoArgs {
    /// Prompt to run.
    #[arg(long, default_value = "Hi!")]
    pub prompt: String,
    /// Tokens to generate (one encrypted round each, several minutes each at 128 bits).
    #[arg(long, default_value_t = 1)]
    pub max_new_tokens: usize,
    /// CKKS parameter preset: 128-bit `n16-boot` by default. `insecure-boot-n12`
    /// (the same chain at N = 2^12, NOT secure) runs in about a minute.
    #[arg(long, default_value = DEFAULT_PRESET)]
    pub preset: String,
    /// Where to write the built-in model, keys and server data (default: a fresh temporary directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Permit an insecure test preset (never for real data).
    #[arg(long)]
    pub allow_insecure: bool,
}

/// Greedy tokens and the logits each was picked from.
pub(crate) type Greedy = (Vec<u32>, Vec<Vec<f64>>);

/// Greedy continuation of `ids` in plaintext under `mode`.
pub(crate) fn greedy(
    model: &BitNetModel,
    ids: &[u32],
    n: usize,
    mode: &Mode,
) -> Result<Greedy, Box<dyn std::error::Error>> {
    let mut ids = ids.to_vec();
    let mut out = Vec::new();
    let mut logits = Vec::new();
    for _ in 0..n {
        let f = model.forward(&ids, &mut model.new_cache(), mode)?;
        let row = f.logits.row(ids.len() - 1).to_vec();
        let next = argmax(&row) as u32;
        out.push(next);
        logits.push(row);
        ids.push(next);
    }
    Ok((out, logits))
}

/// The quick, NOT secure preset of the demo (see [`DemoArgs::preset`]).
pub const DEMO_PRESET: &str = "insecure-boot-n12";

pub fn run(mut args: DemoArgs) -> CliResult {
    let start = Instant::now();
    if args.preset == DEMO_PRESET {
        // Only the built-in model and a demo prompt flow here.
        args.allow_insecure = true;
        println!(
            "WARNING: the demo runs on the INSECURE test preset {DEMO_PRESET} (the n16-boot chain at N = 2^12); \
             `ensi demo` without --preset is the 128-bit run."
        );
    }
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ensi-demo-{}", std::process::id())));
    let model_dir = work.join("model");
    let keys_dir = work.join("keys");
    let data_dir = work.join("server-data");
    std::fs::create_dir_all(&work)?;
    ensi_model::write_tiny(&model_dir, &TinyOptions::new(Family::OneBitLlm, 0))?;
    let model = BitNetModel::load(&model_dir)?;
    let tok = Tokenizer::from_dir(&model_dir)?;
    let ids = tok.encode(&args.prompt)?;
    let n_new = args
        .max_new_tokens
        .min(DEFAULT_MAX_TOKENS.saturating_sub(ids.len()));
    // Keys for just the tokens this run needs: the attention layout grows with
    // the square of the (power-of-two) token count.
    let max_tokens = (ids.len() + n_new).max(1);
    println!(
        "ENSI demo: built-in tiny BitNet b1.58 ({} layers, hidden {}), prompt {:?} = {} tokens, {} new token(s), preset {}",
        model.config().num_layers,
        model.config().hidden_size,
        args.prompt,
        ids.len(),
        n_new,
        args.preset
    );
    let approx = EnsiApprox::for_model_dir(&model_dir)?;
    let (orig, _) = greedy(&model, &ids, n_new, &Mode::original())?;
    let (twin, twin_logits) = greedy(&model, &ids, n_new, &Mode::twin(&approx)?)?;

    // Server: the model, public keys only.
    let backend = Arc::new(EnsiBackend::new(
        &model_dir,
        &args.preset,
        max_tokens,
        args.allow_insecure,
    )?);
    // Server on a loopback port; client: keys, upload, rounds.
    let run = client_rounds_on_loopback(
        backend,
        &data_dir,
        &keys_dir,
        &model_dir,
        &args.prompt,
        n_new,
        args.allow_insecure,
        |url| println!("server listening on {url}"),
    )?;

    println!(
        "\n{:<8} {:<22} {:<22} {:<22}",
        "round", "encrypted (decrypted)", "ENSI twin (plain)", "original (plain)"
    );
    let show = |id: u32| format!("{id} {:?}", tok.decode(&[id]).unwrap_or_default());
    let mut same = true;
    for i in 0..run.tokens.len() {
        println!(
            "{:<8} {:<22} {:<22} {:<22}",
            i,
            show(run.tokens[i]),
            show(twin[i]),
            show(orig[i])
        );
        same &= run.tokens[i] == twin[i];
    }
    // The logits of the first round are comparable position by position (the
    // later rounds' inputs are the same only when the tokens agree).
    if let (Some(enc), Some(plain)) = (run.logits.first(), twin_logits.first()) {
        let err = enc
            .iter()
            .zip(plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let scale = plain.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        println!(
            "\nround 0 logits: max |encrypted - twin| = {err:.3e} (max |logit| {scale:.3}, {:.1} bits)",
            -(err / scale).log2()
        );
    }
    println!(
        "encrypted tokens {} the ENSI twin's; evaluation keys {:.2} GiB on the wire; per round {:.1} MiB up, {:.1} MiB down",
        if same { "match" } else { "DIFFER FROM" },
        run.key_bytes as f64 / (1u64 << 30) as f64,
        run.wire.first().map_or(0.0, |w| w.0 as f64 / (1 << 20) as f64),
        run.wire.first().map_or(0.0, |w| w.1 as f64 / (1 << 20) as f64),
    );
    run.timings.print("where the time went (client view)");
    println!(
        "  {:<28} {:>9.2} s",
        "demo wall time",
        start.elapsed().as_secs_f64()
    );
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    if !same {
        return Err("the encrypted tokens differ from the ENSI twin's".into());
    }
    Ok(())
}
