//! `ensi bench e2e`: the demo's round, timed phase by phase.
//!
//! The same pieces as `ensi demo` (the built-in tiny model, the HTTP server on
//! a loopback port, the client of `ensi client`), with the server's backend
//! wrapped so that each inference also records its time per block (from the
//! model's progress calls) and the step totals of each block
//! ([`ServerContext::take_stats`]). Reported: key generation, the upload of
//! the evaluation keys (and the server's loading of them), and per round
//! encryption, the inference request (client view and server view: per block,
//! final norm + LM head, bootstraps), decryption; the evaluation key bytes on
//! the wire and the ciphertext bytes up and down per round.

use crate::bench::{peak_rss_bytes, BenchArgs};
use crate::bench_block::{insecure_warning, ParamsInfo};
use crate::demo::greedy;
use crate::secure::{
    backend_error, client_rounds_on_loopback, parse_layout, EnsiBackend, DEFAULT_MAX_TOKENS,
};
use crate::CliResult;
use ensi_ckks::ParametersLiteral;
use ensi_infer::block::{ServerContext, StatsReport};
use ensi_model::{BitNetModel, EnsiApprox, Family, Mode, TinyOptions, Tokenizer};
use ensi_server::{Backend, BackendError};
use serde::Serialize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Step totals of one stage (a block, or the final norm and LM head).
#[derive(Serialize, Clone)]
struct StepTotal {
    name: &'static str,
    total_ms: f64,
    count: usize,
    /// Levels one occurrence consumes.
    levels: usize,
}

#[derive(Serialize, Clone)]
struct Stage {
    seconds: f64,
    bootstraps: usize,
    steps: Vec<StepTotal>,
}

fn stage(seconds: f64, stats: &StatsReport) -> Stage {
    Stage {
        seconds,
        bootstraps: stats.bootstraps,
        steps: stats
            .totals()
            .into_iter()
            .map(|(name, t, levels, count)| StepTotal {
                name,
                total_ms: t.as_secs_f64() * 1e3,
                count,
                levels,
            })
            .collect(),
    }
}

/// The server's view of one inference.
#[derive(Serialize, Clone)]
struct ServerRound {
    /// From the request bytes to the answer bytes.
    total_s: f64,
    /// Parsing and checking the encrypted input.
    deserialize_s: f64,
    blocks: Vec<Stage>,
    /// Final RMSNorm (with its bootstraps) and the LM head.
    head: Stage,
    /// Serializing the encrypted logits.
    serialize_s: f64,
    bootstraps: usize,
    #[serde(skip)]
    stats: StatsReport,
}

/// [`EnsiBackend`] with a record of every key load and inference.
struct TimedBackend {
    inner: EnsiBackend,
    key_loads: Mutex<Vec<f64>>,
    rounds: Mutex<Vec<ServerRound>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Backend for TimedBackend {
    type Keys = ServerContext;

    fn info(&self) -> serde_json::Value {
        self.inner.info()
    }

    fn load_keys(&self, path: &Path) -> Result<ServerContext, BackendError> {
        let t = Instant::now();
        let keys = self.inner.load_keys(path);
        lock(&self.key_loads).push(t.elapsed().as_secs_f64());
        keys
    }

    fn infer(&self, keys: &ServerContext, input: &[u8]) -> Result<Vec<u8>, BackendError> {
        drop(keys.take_stats());
        let start = Instant::now();
        // At each stage boundary: the time, and the steps since the last boundary.
        let marks: Mutex<Vec<(f64, StatsReport)>> = Mutex::new(Vec::new());
        let out = self.inner.run(keys, input, &|l, n| {
            let t = start.elapsed().as_secs_f64();
            lock(&marks).push((t, keys.take_stats()));
            if l < n {
                eprintln!("  server: stage {}/{n} at {t:.1} s", l + 1);
            }
        });
        let total_s = start.elapsed().as_secs_f64();
        let out = out.map_err(backend_error)?;
        let marks = std::mem::take(&mut *lock(&marks));
        // Marks: before each block, before the head, after the head.
        if marks.len() < 2 {
            return Err(BackendError::Internal(
                "the model reported no stages".into(),
            ));
        }
        let last = marks.len() - 1;
        let blocks = (0..last - 1)
            .map(|l| stage(marks[l + 1].0 - marks[l].0, &marks[l + 1].1))
            .collect::<Vec<_>>();
        let head = stage(marks[last].0 - marks[last - 1].0, &marks[last].1);
        let mut all = StatsReport::default();
        for (_, s) in &marks {
            all.steps.extend(s.steps.iter().cloned());
            all.bootstraps += s.bootstraps;
        }
        lock(&self.rounds).push(ServerRound {
            total_s,
            deserialize_s: marks[0].0,
            blocks,
            head,
            serialize_s: total_s - marks[last].0,
            bootstraps: all.bootstraps,
            stats: all,
        });
        Ok(out)
    }
}

#[derive(Serialize)]
struct RoundReport {
    round: usize,
    tokens: usize,
    encrypt_s: f64,
    /// Client view: the HTTP request until the answer is in.
    infer_s: f64,
    decrypt_s: f64,
    /// Encrypted input sent.
    up_bytes: usize,
    /// Encrypted logits received.
    down_bytes: usize,
    server: ServerRound,
    token: u32,
    twin_token: Option<u32>,
}

#[derive(Serialize)]
struct Report {
    suite: &'static str,
    preset: String,
    insecure: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
    threads: usize,
    params: ParamsInfo,
    /// The hidden-state layout the server chose (`columns` or `dense`).
    layout: String,
    model: serde_json::Value,
    prompt: String,
    prompt_tokens: usize,
    max_new_tokens: usize,
    /// Longest sequence the keys serve (column slot count).
    max_tokens: usize,
    keygen_s: f64,
    /// Key upload over loopback, until the server has validated and stored them.
    upload_s: f64,
    /// The server's part of the upload: reading and validating the keys.
    server_load_keys_s: f64,
    eval_key_bytes: u64,
    secret_key_bytes: u64,
    rounds: Vec<RoundReport>,
    tokens: Vec<u32>,
    twin_tokens: Vec<u32>,
    tokens_match_twin: bool,
    /// Round 0: max |decrypted logit - twin logit|.
    logits_max_abs_err_vs_twin: f64,
    wall_s: f64,
    peak_rss_bytes: u64,
}

pub fn run(args: &BenchArgs) -> CliResult {
    let start = Instant::now();
    if rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.max(1))
        .build_global()
        .is_err()
    {
        eprintln!("warning: the thread pool was already set up; --threads is not applied");
    }
    let preset = args.preset().to_string();
    let params = ParametersLiteral::preset(&preset)?.build()?;
    let warning = insecure_warning(&preset, &params);
    // Only the built-in model and the benchmark's prompt flow here.
    let allow_insecure = params.is_insecure();
    if let Some(w) = &warning {
        eprintln!("WARNING: {w}");
    }
    let max_tokens = args.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let work = std::env::temp_dir().join(format!("ensi-bench-e2e-{}", std::process::id()));
    let result = run_in(args, &preset, max_tokens, allow_insecure, warning, &work);
    let _ = std::fs::remove_dir_all(&work);
    let report = result?;
    print_report(&report, start.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn run_in(
    args: &BenchArgs,
    preset: &str,
    max_tokens: usize,
    allow_insecure: bool,
    warning: Option<String>,
    work: &Path,
) -> Result<Report, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let params = ParametersLiteral::preset(preset)?.build()?;
    let model_dir = work.join("model");
    let keys_dir = work.join("keys");
    let data_dir = work.join("server-data");
    std::fs::create_dir_all(work)?;
    ensi_model::write_tiny(&model_dir, &TinyOptions::new(Family::OneBitLlm, 0))?;
    let model = BitNetModel::load(&model_dir)?;
    let tok = Tokenizer::from_dir(&model_dir)?;
    let ids = tok.encode(&args.prompt)?;
    let n_new = args
        .max_new_tokens
        .min(max_tokens.saturating_sub(ids.len()));
    if n_new == 0 {
        return Err(format!(
            "the prompt has {} tokens: no room for a new token within --max-tokens {max_tokens} (or --max-new-tokens is 0)",
            ids.len()
        )
        .into());
    }
    let approx = EnsiApprox::for_model_dir(&model_dir)?;
    let (twin, twin_logits) = greedy(&model, &ids, n_new, &Mode::twin(&approx)?)?;
    let c = model.config();
    let model_info = serde_json::json!({
        "name": "built-in tiny 1bitLLM",
        "layers": c.num_layers,
        "hidden": c.hidden_size,
        "intermediate": c.intermediate_size,
        "heads": c.num_heads,
        "head_dim": c.head_dim,
        "vocab": c.vocab_size,
    });
    let layers = c.num_layers;
    eprintln!(
        "bench e2e: built-in tiny model ({layers} layers), prompt {:?} = {} tokens, {n_new} round(s), \
         preset {preset}, {} thread(s), keys for {max_tokens} tokens",
        args.prompt,
        ids.len(),
        args.threads
    );

    let backend = Arc::new(TimedBackend {
        inner: EnsiBackend::with_layout(
            &model_dir,
            preset,
            max_tokens,
            allow_insecure,
            parse_layout(args.layout.as_deref())?,
        )?,
        key_loads: Mutex::new(Vec::new()),
        rounds: Mutex::new(Vec::new()),
    });
    let run = client_rounds_on_loopback(
        backend.clone(),
        &data_dir,
        &keys_dir,
        &model_dir,
        &args.prompt,
        n_new,
        allow_insecure,
        |url| eprintln!("server listening on {url}"),
    )?;

    let server_rounds = std::mem::take(&mut *lock(&backend.rounds));
    if server_rounds.len() != run.rounds.len() {
        return Err(format!(
            "{} client rounds but {} server inferences",
            run.rounds.len(),
            server_rounds.len()
        )
        .into());
    }
    let rounds: Vec<RoundReport> = run
        .rounds
        .iter()
        .zip(server_rounds)
        .enumerate()
        .map(|(i, (c, s))| RoundReport {
            round: i,
            tokens: c.tokens,
            encrypt_s: c.encrypt_s,
            infer_s: c.infer_s,
            decrypt_s: c.decrypt_s,
            up_bytes: run.wire[i].0,
            down_bytes: run.wire[i].1,
            server: s,
            token: run.tokens[i],
            twin_token: twin.get(i).copied(),
        })
        .collect();
    let err = match (run.logits.first(), twin_logits.first()) {
        (Some(a), Some(b)) => a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max),
        _ => f64::NAN,
    };
    let key_loads = lock(&backend.key_loads).clone();
    Ok(Report {
        suite: "e2e",
        preset: preset.to_string(),
        insecure: params.is_insecure(),
        warning,
        threads: args.threads,
        params: ParamsInfo::of(&params),
        layout: backend.inner.info()["layout"]
            .as_str()
            .unwrap_or("columns")
            .to_string(),
        model: model_info,
        prompt: args.prompt.clone(),
        prompt_tokens: ids.len(),
        max_new_tokens: n_new,
        max_tokens,
        keygen_s: run
            .keygen_s
            .ok_or("the keys were not generated in this run")?,
        upload_s: run.upload_s,
        server_load_keys_s: key_loads.first().copied().unwrap_or(f64::NAN),
        eval_key_bytes: run.key_bytes,
        secret_key_bytes: std::fs::metadata(keys_dir.join("secret.key"))?.len(),
        tokens_match_twin: run.tokens == twin[..run.tokens.len()],
        tokens: run.tokens,
        twin_tokens: twin,
        rounds,
        logits_max_abs_err_vs_twin: err,
        wall_s: start.elapsed().as_secs_f64(),
        peak_rss_bytes: peak_rss_bytes(),
    })
}

fn mib(b: f64) -> f64 {
    b / (1u64 << 20) as f64
}

fn print_report(r: &Report, wall: f64) {
    println!(
        "\nensi bench e2e: built-in tiny model, prompt {:?} ({} tokens), {} round(s), preset {} \
         (N = 2^{}, {} levels), {} layout, {} thread(s), keys for {} tokens",
        r.prompt,
        r.prompt_tokens,
        r.rounds.len(),
        r.preset,
        r.params.log_n,
        r.params.levels,
        r.layout,
        r.threads,
        r.max_tokens
    );
    if let Some(w) = &r.warning {
        println!("WARNING: {w}");
    }
    println!("\n  {:<40} {:>9}", "phase", "seconds");
    println!(
        "  {:<40} {:>9.2}",
        "keygen (generate, write key files)", r.keygen_s
    );
    println!(
        "  {:<40} {:>9.2}  ({:.1} MiB; server loads and checks them in {:.2} s)",
        "upload evaluation keys (POST, loopback)",
        r.upload_s,
        mib(r.eval_key_bytes as f64),
        r.server_load_keys_s
    );
    for x in &r.rounds {
        println!(
            "  {:<40} {:>9.2}  ({} tokens, {:.2} MiB up)",
            format!("round {}: encrypt", x.round),
            x.encrypt_s,
            x.tokens,
            mib(x.up_bytes as f64)
        );
        let blocks: Vec<String> = x
            .server
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| format!("block {i} {:.2} s", b.seconds))
            .collect();
        println!(
            "  {:<40} {:>9.2}  (server {:.2} s: {}, final norm + LM head {:.2} s; {} bootstraps)",
            format!("round {}: inference (round trip)", x.round),
            x.infer_s,
            x.server.total_s,
            blocks.join(", "),
            x.server.head.seconds,
            x.server.bootstraps
        );
        println!(
            "  {:<40} {:>9.2}  ({:.2} MiB down; token {}{})",
            format!("round {}: decrypt", x.round),
            x.decrypt_s,
            mib(x.down_bytes as f64),
            x.token,
            match x.twin_token {
                Some(t) if t == x.token => " = twin's".to_string(),
                Some(t) => format!(", twin's {t}: DIFFERENT"),
                None => String::new(),
            }
        );
    }
    let phases: f64 = r.keygen_s
        + r.upload_s
        + r.rounds
            .iter()
            .map(|x| x.encrypt_s + x.infer_s + x.decrypt_s)
            .sum::<f64>();
    println!("  {:<40} {:>9.2}", "sum of phases", phases);
    println!("  {:<40} {:>9.2}", "benchmark wall time", wall);
    if let Some(x) = r.rounds.first() {
        crate::secure::print_step_table(&x.server.stats);
    }
    println!(
        "\nsizes: evaluation keys {} bytes ({:.2} MiB) on the wire; secret key {} bytes (stays with the client); \
         round 0 ciphertexts {} bytes up, {} bytes down",
        r.eval_key_bytes,
        mib(r.eval_key_bytes as f64),
        r.secret_key_bytes,
        r.rounds.first().map_or(0, |x| x.up_bytes),
        r.rounds.first().map_or(0, |x| x.down_bytes)
    );
    println!(
        "decrypted tokens {} the ENSI twin's; round 0 logits max |err| vs twin {:.3e}",
        if r.tokens_match_twin {
            "match"
        } else {
            "DIFFER FROM"
        },
        r.logits_max_abs_err_vs_twin
    );
    if r.warning.is_some() {
        println!(
            "WARNING: INSECURE preset {}: not a 128-bit measurement",
            r.preset
        );
    }
}
