//! The product: client commands (`keygen`, `encrypt`, `decrypt`, `client`),
//! server commands (`infer`, `serve`), and the backend that plugs the
//! encrypted model into the HTTP server. Glue only: the work is in
//! `ensi-infer` (the encrypted model), `ensi-server` (HTTP) and `ensi-ckks`.

use crate::CliResult;
use clap::Args;
use ensi_ckks::circuits::BootstrapKeys;
use ensi_ckks::{KeyGenerator, Parameters, ParametersLiteral, SecretKey};
use ensi_infer::block::EncryptedLogits;
use ensi_infer::block::{EncryptedModel, ServerContext};
use ensi_infer::client::{decrypt_logits, encrypt_embeddings};
use ensi_infer::dense_model::{choose_packing, generate_model_keys};
use ensi_infer::packing::{Layout, Packing};
use ensi_infer::wire::EncryptedInput;
use ensi_model::{BitNetModel, EnsiApprox, Tokenizer};
use ensi_server::{Backend, BackendError};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Default preset of the product: 128-bit, bootstrappable.
pub const DEFAULT_PRESET: &str = "n16-boot";
/// Default longest prompt (plus generated tokens) a key set serves.
pub const DEFAULT_MAX_TOKENS: usize = 16;

/// What a key directory was made for (`keys.json`, public).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KeyInfo {
    /// Parameter preset.
    pub preset: String,
    /// Longest sequence the keys serve.
    pub max_tokens: usize,
    /// Hidden size of the model the keys were made for.
    pub hidden: usize,
    /// Layout of the hidden state (`dense` or `columns`; key directories
    /// written before layouts existed are `columns`).
    #[serde(default = "columns_layout")]
    pub layout: String,
}

fn columns_layout() -> String {
    Layout::Columns.name().to_string()
}

/// Parses a `--layout` value (None: the model's default, dense where it fits).
pub fn parse_layout(name: Option<&str>) -> Result<Option<Layout>, ensi_infer::InferError> {
    name.map(Layout::from_name).transpose()
}

/// A per-stage timing table printed at the end of a command.
#[derive(Default)]
pub struct Timings(pub Vec<(String, f64)>);

impl Timings {
    /// Runs `f` and records its time under `name`.
    pub fn time<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.0.push((name.to_string(), t.elapsed().as_secs_f64()));
        out
    }

    /// Prints the table.
    pub fn print(&self, title: &str) {
        println!("\n{title}");
        let total: f64 = self.0.iter().map(|e| e.1).sum();
        for (name, s) in &self.0 {
            println!("  {name:<28} {s:>9.2} s");
        }
        println!("  {:<28} {total:>9.2} s", "total");
    }
}

fn params_for(
    preset: &str,
    allow_insecure: bool,
) -> Result<Parameters, Box<dyn std::error::Error>> {
    let lit = ParametersLiteral::preset(preset)?;
    if lit.insecure && !allow_insecure {
        return Err(format!(
            "preset {preset} is an insecure test preset; pass --allow-insecure to use it anyway (never with real data)"
        )
        .into());
    }
    Ok(lit.build()?)
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("template"));
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}

/// Writes `bytes` to `path` with owner-only permissions (the secret key).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Generates a key directory: `secret.key` (0600), `eval.keys` (public, seeded), `keys.json`.
pub fn keygen_into(
    preset: &str,
    model_dir: &Path,
    max_tokens: usize,
    out: &Path,
    allow_insecure: bool,
    layout: Option<Layout>,
) -> CliResult {
    let params = params_for(preset, allow_insecure)?;
    let model = BitNetModel::load(model_dir)?;
    let hidden = model.config().hidden_size;
    let packing = choose_packing(model.config(), &params, max_tokens, layout)?;
    std::fs::create_dir_all(out)?;
    let pb = spinner(&format!(
        "generating {preset} keys ({} layout, bootstrapping at 2^{} slots)",
        packing.layout.name(),
        packing.packed_log_slots(),
    ));
    let sk = KeyGenerator::new(&params).gen_secret_key();
    let keys = generate_model_keys(&params, model.config(), &packing, &sk)?;
    pb.set_message("writing keys");
    write_private(&out.join("secret.key"), &sk.to_bytes())?;
    // Written to a temporary name and renamed: a crash never leaves a half key file.
    let tmp = out.join("eval.keys.partial");
    {
        let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
        keys.write_to(&params, &mut w)?;
        w.flush()?;
    }
    std::fs::rename(&tmp, out.join("eval.keys"))?;
    let info = KeyInfo {
        preset: preset.to_string(),
        max_tokens,
        hidden,
        layout: packing.layout.name().to_string(),
    };
    std::fs::write(out.join("keys.json"), serde_json::to_string_pretty(&info)?)?;
    pb.finish_with_message(format!(
        "keys in {} (evaluation keys {:.2} GiB)",
        out.display(),
        std::fs::metadata(out.join("eval.keys"))?.len() as f64 / (1u64 << 30) as f64
    ));
    Ok(())
}

/// The client's view of a key directory.
pub struct ClientKeys {
    /// What the keys are for.
    pub info: KeyInfo,
    /// Parameters.
    pub params: Parameters,
    /// Packing.
    pub packing: Packing,
    /// The secret key (never leaves the client).
    pub sk: SecretKey,
}

/// Loads a key directory.
pub fn load_client_keys(
    dir: &Path,
    allow_insecure: bool,
) -> Result<ClientKeys, Box<dyn std::error::Error>> {
    let info: KeyInfo = serde_json::from_str(&std::fs::read_to_string(dir.join("keys.json"))?)?;
    let params = params_for(&info.preset, allow_insecure)?;
    let packing = Packing {
        layout: Layout::from_name(&info.layout)?,
        ..Packing::new(info.max_tokens, info.hidden, params.log_n())?
    };
    let sk = SecretKey::from_bytes(&params, &std::fs::read(dir.join("secret.key"))?)?;
    Ok(ClientKeys {
        info,
        params,
        packing,
        sk,
    })
}

/// Tokenizes, embeds and encrypts a token sequence: the bytes of one request.
pub fn encrypt_tokens(
    keys: &ClientKeys,
    model: &BitNetModel,
    tokens: &[u32],
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    if tokens.len() > keys.packing.tokens_pad {
        return Err(format!(
            "{} tokens exceed the {} the keys were made for (keygen --max-tokens)",
            tokens.len(),
            keys.packing.tokens_pad
        )
        .into());
    }
    let x = model.embed(tokens)?;
    let columns = encrypt_embeddings(&keys.params, &keys.packing, &keys.sk, &x)?;
    Ok(EncryptedInput {
        tokens: tokens.len(),
        columns,
    }
    .to_bytes(&keys.params))
}

/// Decrypts the logits of one answer.
pub fn decrypt_answer(
    keys: &ClientKeys,
    vocab: usize,
    bytes: &[u8],
) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let logits = EncryptedLogits::from_bytes(&keys.params, bytes)?;
    Ok(decrypt_logits(
        &keys.params,
        &keys.packing,
        &keys.sk,
        &logits,
        vocab,
    )?)
}

/// The server's side: parameters, packing, the encrypted model. No secret key
/// anywhere in it (its types cannot hold one).
pub struct EnsiBackend {
    preset: String,
    params: Parameters,
    packing: Packing,
    model: EncryptedModel,
    model_name: String,
}

impl EnsiBackend {
    /// Loads the model for serving at `preset` with `max_tokens`.
    pub fn new(
        model_dir: &Path,
        preset: &str,
        max_tokens: usize,
        allow_insecure: bool,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        Self::with_layout(model_dir, preset, max_tokens, allow_insecure, None)
    }

    /// [`EnsiBackend::new`] with a layout (None: dense where it fits).
    pub fn with_layout(
        model_dir: &Path,
        preset: &str,
        max_tokens: usize,
        allow_insecure: bool,
        layout: Option<Layout>,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let params = params_for(preset, allow_insecure)?;
        let model = Arc::new(BitNetModel::load(model_dir)?);
        let approx = EnsiApprox::for_model_dir(model_dir)?;
        let enc = EncryptedModel::new(model.clone(), approx.polys()?);
        let packing = choose_packing(model.config(), &params, max_tokens, layout)?;
        Ok(Self {
            preset: preset.to_string(),
            params,
            packing,
            model: enc,
            model_name: model_dir.display().to_string(),
        })
    }

    /// Loads and validates session keys from a file.
    pub fn load(&self, path: &Path) -> Result<ServerContext, Box<dyn std::error::Error>> {
        let mut r = BufReader::new(std::fs::File::open(path)?);
        let keys = BootstrapKeys::read_from(&self.params, &mut r)?;
        Ok(ServerContext::new(&self.params, self.packing, keys)?)
    }

    /// One inference on request bytes.
    pub fn run(
        &self,
        ctx: &ServerContext,
        input: &[u8],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Vec<u8>, ensi_infer::InferError> {
        let input = EncryptedInput::from_bytes(&self.params, input)?;
        let logits = self
            .model
            .forward(ctx, input.columns, input.tokens, progress)?;
        Ok(logits.to_bytes(&self.params))
    }
}

impl Backend for EnsiBackend {
    type Keys = ServerContext;

    fn info(&self) -> serde_json::Value {
        serde_json::json!({
            "preset": self.preset,
            "max_tokens": self.packing.tokens_pad,
            "hidden": self.packing.hidden,
            "layout": self.packing.layout.name(),
            "column_log_slots": self.packing.column_log_slots(),
            "packed_log_slots": self.packing.packed_log_slots(),
            "model": self.model_name,
        })
    }

    fn load_keys(&self, path: &Path) -> Result<ServerContext, BackendError> {
        self.load(path)
            .map_err(|e| BackendError::BadKeys(e.to_string()))
    }

    fn infer(&self, keys: &ServerContext, input: &[u8]) -> Result<Vec<u8>, BackendError> {
        let t = Instant::now();
        // progress(l, n): stage l of n starts (blocks, then the final norm and
        // LM head); progress(n, n): the pass is done (reported below).
        let out = self.run(keys, input, &|l, n| {
            if l < n {
                eprintln!(
                    "ensi-server: inference: stage {}/{} ({:.1} s)",
                    l + 1,
                    n,
                    t.elapsed().as_secs_f64()
                )
            }
        });
        let stats = keys.take_stats();
        eprintln!(
            "ensi-server: inference done in {:.1} s, {} bootstraps",
            t.elapsed().as_secs_f64(),
            stats.bootstraps
        );
        out.map_err(backend_error)
    }
}

/// The HTTP error class of an inference error.
pub(crate) fn backend_error(e: ensi_infer::InferError) -> BackendError {
    match e {
        ensi_infer::InferError::Wire(_) | ensi_infer::InferError::Shape(_) => {
            BackendError::BadInput(e.to_string())
        }
        ensi_infer::InferError::Ckks(ref c) if is_input_error(c) => {
            BackendError::BadInput(e.to_string())
        }
        other => BackendError::Internal(other.to_string()),
    }
}

fn is_input_error(e: &ensi_ckks::CkksError) -> bool {
    !matches!(e, ensi_ckks::CkksError::MissingRelinKey)
}

/// The top `k` logits.
pub fn top_k(logits: &[f64], k: usize) -> Vec<(u32, f64)> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.into_iter()
        .take(k)
        .map(|i| (i as u32, logits[i]))
        .collect()
}

// ---------------- command-line arguments ----------------

/// `ensi keygen`.
#[derive(Args)]
pub struct KeygenArgs {
    /// Parameter preset (128-bit; insecure-* only with --allow-insecure).
    #[arg(long, default_value = DEFAULT_PRESET)]
    pub preset: String,
    /// Model directory (its hidden size shapes the packing).
    #[arg(long)]
    pub model: PathBuf,
    /// Longest sequence (prompt + generated tokens) the keys serve.
    #[arg(long, default_value_t = DEFAULT_MAX_TOKENS)]
    pub max_tokens: usize,
    /// Output key directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Hidden-state layout: `dense` (one ciphertext per state) or `columns`
    /// (ENSI's, one per feature); default: dense where it fits.
    #[arg(long)]
    pub layout: Option<String>,
    /// Permit an insecure test preset.
    #[arg(long)]
    pub allow_insecure: bool,
}

/// `ensi keygen`.
pub fn keygen(a: KeygenArgs) -> CliResult {
    let mut t = Timings::default();
    t.time("keygen", || {
        keygen_into(
            &a.preset,
            &a.model,
            a.max_tokens,
            &a.out,
            a.allow_insecure,
            parse_layout(a.layout.as_deref())?,
        )
    })?;
    t.print("where the time went");
    Ok(())
}

/// `ensi encrypt`.
#[derive(Args)]
pub struct EncryptArgs {
    /// Key directory from `ensi keygen`.
    #[arg(long)]
    pub keys: PathBuf,
    /// Model directory (tokenizer and embedding table: the client's part).
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Output file (encrypted input).
    #[arg(long)]
    pub out: PathBuf,
    /// Permit an insecure test preset.
    #[arg(long)]
    pub allow_insecure: bool,
}

/// `ensi encrypt`.
pub fn encrypt(a: EncryptArgs) -> CliResult {
    let mut t = Timings::default();
    let keys = t.time("load keys", || load_client_keys(&a.keys, a.allow_insecure))?;
    let model = BitNetModel::load(&a.model)?;
    let tok = Tokenizer::from_dir(&a.model)?;
    let ids = tok.encode(&a.prompt)?;
    let bytes = t.time("tokenize, embed, encrypt", || {
        encrypt_tokens(&keys, &model, &ids)
    })?;
    std::fs::write(&a.out, &bytes)?;
    println!(
        "{} tokens encrypted into {} ({:.1} MiB)",
        ids.len(),
        a.out.display(),
        bytes.len() as f64 / (1 << 20) as f64
    );
    t.print("where the time went");
    Ok(())
}

/// `ensi decrypt`.
#[derive(Args)]
pub struct DecryptArgs {
    /// Key directory.
    #[arg(long)]
    pub keys: PathBuf,
    /// Model directory (tokenizer).
    #[arg(long)]
    pub model: PathBuf,
    /// Encrypted logits from `ensi infer` or the server.
    #[arg(long)]
    pub input: PathBuf,
    /// How many top tokens to print.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Permit an insecure test preset.
    #[arg(long)]
    pub allow_insecure: bool,
}

/// `ensi decrypt`.
pub fn decrypt(a: DecryptArgs) -> CliResult {
    let mut t = Timings::default();
    let keys = t.time("load keys", || load_client_keys(&a.keys, a.allow_insecure))?;
    let model = BitNetModel::load(&a.model)?;
    let tok = Tokenizer::from_dir(&a.model)?;
    let bytes = std::fs::read(&a.input)?;
    let logits = t.time("decrypt", || {
        decrypt_answer(&keys, model.config().vocab_size, &bytes)
    })?;
    for (id, v) in top_k(&logits, a.top) {
        println!("{id:>6} {:>10.4}  {:?}", v, tok.decode(&[id])?);
    }
    t.print("where the time went");
    Ok(())
}

/// `ensi infer`.
#[derive(Args)]
pub struct InferArgs {
    /// Model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Evaluation keys (`eval.keys` from keygen).
    #[arg(long)]
    pub eval_keys: PathBuf,
    /// Encrypted input.
    #[arg(long)]
    pub input: PathBuf,
    /// Output file (encrypted logits).
    #[arg(long)]
    pub out: PathBuf,
    /// Parameter preset the keys were made with.
    #[arg(long, default_value = DEFAULT_PRESET)]
    pub preset: String,
    /// Longest sequence the keys serve.
    #[arg(long, default_value_t = DEFAULT_MAX_TOKENS)]
    pub max_tokens: usize,
    /// Hidden-state layout: `dense` (one ciphertext per state) or `columns`
    /// (ENSI's, one per feature); default: dense where it fits.
    #[arg(long)]
    pub layout: Option<String>,
    /// Permit an insecure test preset.
    #[arg(long)]
    pub allow_insecure: bool,
}

/// `ensi infer`: the server's work from files, no secret key involved.
pub fn infer(a: InferArgs) -> CliResult {
    let mut t = Timings::default();
    let backend = t.time("load model", || {
        EnsiBackend::with_layout(
            &a.model,
            &a.preset,
            a.max_tokens,
            a.allow_insecure,
            parse_layout(a.layout.as_deref())?,
        )
    })?;
    let ctx = t.time("load evaluation keys", || backend.load(&a.eval_keys))?;
    let input = std::fs::read(&a.input)?;
    let pb = ProgressBar::new(backend.model.model().config().num_layers as u64 + 1);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} stages [{elapsed}]").expect("template"),
    );
    let out = t.time("encrypted forward pass", || {
        backend.run(&ctx, &input, &|l, _| pb.set_position(l as u64))
    })?;
    pb.finish();
    std::fs::write(&a.out, &out)?;
    let stats = ctx.take_stats();
    println!(
        "{} bootstraps; encrypted logits in {}",
        stats.bootstraps,
        a.out.display()
    );
    print_step_table(&stats);
    t.print("where the time went");
    Ok(())
}

/// Prints per-step totals of an encrypted pass.
pub fn print_step_table(stats: &ensi_infer::block::StatsReport) {
    println!("\nencrypted pass, per step (total over layers)");
    for (name, time, levels, count) in stats.totals() {
        println!(
            "  {name:<20} x{count:<3} {:>8.2} s  ({levels} levels each)",
            time.as_secs_f64()
        );
    }
}

/// `ensi serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8750")]
    pub listen: std::net::SocketAddr,
    /// Where sessions are stored (they survive a restart).
    #[arg(long, default_value = "ensi-data")]
    pub data_dir: PathBuf,
    /// Parameter preset.
    #[arg(long, default_value = DEFAULT_PRESET)]
    pub preset: String,
    /// Longest sequence served.
    #[arg(long, default_value_t = DEFAULT_MAX_TOKENS)]
    pub max_tokens: usize,
    /// Inferences at once (more are answered "busy").
    #[arg(long, default_value_t = 1)]
    pub max_concurrent: usize,
    /// Hidden-state layout: `dense` (one ciphertext per state) or `columns`
    /// (ENSI's, one per feature); default: dense where it fits.
    #[arg(long)]
    pub layout: Option<String>,
    /// Permit an insecure test preset.
    #[arg(long)]
    pub allow_insecure: bool,
}

/// `ensi serve`.
pub fn serve(a: ServeArgs) -> CliResult {
    let backend = Arc::new(EnsiBackend::with_layout(
        &a.model,
        &a.preset,
        a.max_tokens,
        a.allow_insecure,
        parse_layout(a.layout.as_deref())?,
    )?);
    let mut config = ensi_server::ServerConfig::new(a.listen, &a.data_dir);
    config.max_concurrent_inferences = a.max_concurrent;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        ensi_server::serve(backend, config, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    })?;
    Ok(())
}

/// `ensi client`.
#[derive(Args)]
pub struct ClientArgs {
    /// Server URL.
    #[arg(long)]
    pub server: String,
    /// Key directory (generated here if empty).
    #[arg(long)]
    pub keys: PathBuf,
    /// Model directory (tokenizer and embeddings: the client's part).
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 2)]
    pub max_new_tokens: usize,
    /// Permit an insecure test preset (when the server runs one).
    #[arg(long)]
    pub allow_insecure: bool,
}

/// What a client run produced.
pub struct ClientRun {
    /// Generated token ids.
    pub tokens: Vec<u32>,
    /// Decrypted logits of each round.
    pub logits: Vec<Vec<f64>>,
    /// Timings.
    pub timings: Timings,
    /// Bytes sent per round (encrypted input) and received (encrypted logits).
    pub wire: Vec<(usize, usize)>,
    /// Size of the uploaded evaluation keys.
    pub key_bytes: u64,
    /// Key generation (with writing the key files), when this run made the keys.
    pub keygen_s: Option<f64>,
    /// Key upload and session creation (the server validates the keys before answering).
    pub upload_s: f64,
    /// Per round: encryption, the inference request (round trip), decryption, in seconds.
    pub rounds: Vec<RoundTimes>,
}

/// Client-side times of one round, in seconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RoundTimes {
    /// Tokens sent (prompt plus tokens generated so far).
    pub tokens: usize,
    /// Tokenize, embed, encrypt, serialize.
    pub encrypt_s: f64,
    /// The HTTP request until the encrypted answer is in.
    pub infer_s: f64,
    /// Decrypt and decode the logits.
    pub decrypt_s: f64,
}

/// Serves `backend` on a loopback port (sessions under `data_dir`), runs the
/// client rounds against it (echoing tokens), and stops the server: the demo's
/// and `ensi bench e2e`'s whole round in one process.
#[allow(clippy::too_many_arguments)]
pub fn client_rounds_on_loopback<B: Backend>(
    backend: Arc<B>,
    data_dir: &Path,
    keys_dir: &Path,
    model_dir: &Path,
    prompt: &str,
    max_new_tokens: usize,
    allow_insecure: bool,
    announce: impl Fn(&str),
) -> Result<ClientRun, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Runtime::new()?;
    let config = ensi_server::ServerConfig::new("127.0.0.1:0".parse()?, data_dir);
    let server = rt.block_on(ensi_server::Server::bind(backend, config))?;
    let url = format!("http://{}", server.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = rt.spawn(server.run(async {
        let _ = stop_rx.await;
    }));
    announce(&url);
    let run = rt.block_on(client_rounds(
        &url,
        keys_dir,
        model_dir,
        prompt,
        max_new_tokens,
        allow_insecure,
        true,
    ));
    let _ = stop_tx.send(());
    rt.block_on(handle)??;
    run
}

/// Runs the client rounds against a server (async part of `ensi client` and the demo).
pub async fn client_rounds(
    server: &str,
    keys_dir: &Path,
    model_dir: &Path,
    prompt: &str,
    max_new_tokens: usize,
    allow_insecure: bool,
    echo: bool,
) -> Result<ClientRun, Box<dyn std::error::Error>> {
    let mut timings = Timings::default();
    let client = ensi_server::Client::new(server)?;
    client.health().await?;
    let info = client.info().await?;
    let preset = info["preset"]
        .as_str()
        .ok_or("server info lacks a preset")?
        .to_string();
    let max_tokens = info["max_tokens"]
        .as_u64()
        .ok_or("server info lacks max_tokens")? as usize;
    let layout = Layout::from_name(info["layout"].as_str().unwrap_or("columns"))?;
    let mut keygen_s = None;
    if !keys_dir.join("keys.json").exists() {
        let t = Instant::now();
        keygen_into(
            &preset,
            model_dir,
            max_tokens,
            keys_dir,
            allow_insecure,
            Some(layout),
        )?;
        keygen_s = Some(t.elapsed().as_secs_f64());
        timings.0.push(("keygen".into(), t.elapsed().as_secs_f64()));
    }
    let keys = load_client_keys(keys_dir, allow_insecure)?;
    if keys.info.preset != preset
        || keys.packing.tokens_pad != max_tokens
        || keys.packing.layout != layout
    {
        return Err(format!(
            "keys in {} are for {} / {} tokens / {} layout, the server runs \
             {preset} / {max_tokens} / {}",
            keys_dir.display(),
            keys.info.preset,
            keys.packing.tokens_pad,
            keys.packing.layout.name(),
            layout.name()
        )
        .into());
    }
    let model = BitNetModel::load(model_dir)?;
    let tok = Tokenizer::from_dir(model_dir)?;
    let key_path = keys_dir.join("eval.keys");
    let key_bytes = std::fs::metadata(&key_path)?.len();
    let pb = ProgressBar::new(key_bytes);
    pb.set_style(
        ProgressStyle::with_template("upload {bar:30} {bytes}/{total_bytes} ({bytes_per_sec})")
            .expect("template"),
    );
    let t = Instant::now();
    let pb2 = pb.clone();
    let session = client
        .create_session(&key_path, move |sent, _| pb2.set_position(sent))
        .await?;
    pb.finish_and_clear();
    let upload_s = t.elapsed().as_secs_f64();
    timings
        .0
        .push(("upload keys, open session".into(), upload_s));
    let mut ids = tok.encode(prompt)?;
    let mut out = Vec::new();
    let mut all_logits = Vec::new();
    let mut wire = Vec::new();
    let mut rounds = Vec::new();
    for round in 0..max_new_tokens {
        let t = Instant::now();
        let request = encrypt_tokens(&keys, &model, &ids)?;
        let encrypt_s = t.elapsed().as_secs_f64();
        timings
            .0
            .push((format!("round {round}: encrypt"), encrypt_s));
        let sent = request.len();
        let t = Instant::now();
        let pb = spinner(&format!(
            "round {round}: server computing on {} encrypted tokens",
            ids.len()
        ));
        let answer = client.infer(&session.session_id, request).await?;
        pb.finish_and_clear();
        let infer_s = t.elapsed().as_secs_f64();
        timings
            .0
            .push((format!("round {round}: encrypted inference"), infer_s));
        let t = Instant::now();
        let logits = decrypt_answer(&keys, model.config().vocab_size, &answer)?;
        let decrypt_s = t.elapsed().as_secs_f64();
        timings
            .0
            .push((format!("round {round}: decrypt"), decrypt_s));
        wire.push((sent, answer.len()));
        rounds.push(RoundTimes {
            tokens: ids.len(),
            encrypt_s,
            infer_s,
            decrypt_s,
        });
        let next = top_k(&logits, 1)[0].0;
        if echo {
            println!("token {round}: {next} {:?}", tok.decode(&[next])?);
        }
        out.push(next);
        all_logits.push(logits);
        ids.push(next);
        if ids.len() > keys.packing.tokens_pad {
            break;
        }
    }
    Ok(ClientRun {
        tokens: out,
        logits: all_logits,
        timings,
        wire,
        key_bytes,
        keygen_s,
        upload_s,
        rounds,
    })
}

/// `ensi client`.
pub fn client(a: ClientArgs) -> CliResult {
    let rt = tokio::runtime::Runtime::new()?;
    let run = rt.block_on(client_rounds(
        &a.server,
        &a.keys,
        &a.model,
        &a.prompt,
        a.max_new_tokens,
        a.allow_insecure,
        true,
    ))?;
    let tok = Tokenizer::from_dir(&a.model)?;
    println!("generated: {:?}", tok.decode(&run.tokens)?);
    run.timings.print("where the time went");
    Ok(())
}
