//! `ensi bench block`: one encrypted BitNet b1.58 block on random ternary
//! weights, step by step, and ENSI's four claims as ratios measured in the
//! same run:
//!
//! * `pcmm_generic_over_ternary`: in ENSI's column layout, the conventional
//!   PCMM (every weight a plaintext constant) over the multiplication-free
//!   ternary PCMM, d -> d, same inputs, same level;
//! * `pcmm_column_over_default`: the column-layout ternary PCMM over the
//!   dense column-block layout's PCMM ([`DensePcmmPlan`], evaluation only; the
//!   plan's encoding is reported beside it), same shape, same level;
//! * `softmax_over_sigmoid`: the conventional HE softmax (NEXUS's layout:
//!   one row of scores per ciphertext, row sums by rotations, an inverse per
//!   row) over the block's sigmoid polynomial on the same encrypted scores;
//!   beside it `softmax_columns_over_sigmoid`, the same softmax in ENSI's
//!   column layout (row sums by additions, one inverse per head);
//! * `bootstrap_share`: bootstrapping time over block time, from runs of
//!   [`EncryptedModel::block`].
//!
//! Shapes too large for the memory budget (`--max-mem-gib`) are measured on
//! the largest slice that fits; a figure scaled from a slice to the full shape
//! says `"extrapolated": true` and names its slice, and every ratio says in
//! `"ratio_basis"` what it was computed from. What cannot run at all is listed
//! under `"not_run"` with the reason. Nothing is scaled silently.

use crate::bench::{peak_rss_bytes, BenchArgs, OpResult, Shape};
use crate::CliResult;
use ensi_ckks::circuits::ChebyshevPoly;
use ensi_ckks::circuits::{BootstrapConfig, BootstrapKeys};
use ensi_ckks::{
    Ciphertext, Decryptor, Encoder, Encryptor, EvaluationKeys, Evaluator, KeyGenerator, Parameters,
    ParametersLiteral, SecretKey,
};
use ensi_infer::attention::{
    sigmoid_attention, softmax_attention, softmax_rows, softmax_rows_rotations, SoftmaxApprox,
};
use ensi_infer::block::{bootstrap_config, EncryptedModel, ServerContext};
use ensi_infer::client::{decrypt_columns, encrypt_embeddings};
use ensi_infer::dense::{DenseLayout, DensePcmmPlan};
use ensi_infer::dense_model::{choose_packing, decrypt_dense, generate_model_keys, DenseTrace};
use ensi_infer::layout::ColumnLayout;
use ensi_infer::packing::{Layout, Packing};
use ensi_infer::pcmm::{generic_pcmm_columns, ternary_pcmm_columns};
use ensi_infer::wide::{decrypt_wide, WideTrace};
use ensi_model::approx::ApproxPolys;
use ensi_model::rng::SplitMix64;
use ensi_model::{BitNetModel, EnsiApprox, Family, Matrix, Mode, TernaryMatrix, TinyOptions};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

type R<T> = Result<T, Box<dyn std::error::Error>>;

const GIB: f64 = (1u64 << 30) as f64;

/// The model dimensions a block benchmark runs at.
#[derive(Serialize, Clone, Copy, Debug)]
pub(crate) struct ModelShape {
    hidden: usize,
    intermediate: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

fn model_shape(shape: Shape) -> ModelShape {
    match shape {
        Shape::Tiny => {
            let c = ensi_model::tiny::tiny_config(Family::OneBitLlm);
            ModelShape {
                hidden: c.hidden_size,
                intermediate: c.intermediate_size,
                heads: c.num_heads,
                kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
            }
        }
        Shape::OneBitLlmLarge => ModelShape {
            hidden: 1536,
            intermediate: 4096,
            heads: 16,
            kv_heads: 16,
            head_dim: 96,
        },
    }
}

fn shape_name(shape: Shape) -> &'static str {
    match shape {
        Shape::Tiny => "tiny",
        Shape::OneBitLlmLarge => "1bitllm-large",
    }
}

#[derive(Serialize)]
pub(crate) struct ParamsInfo {
    pub(crate) log_n: u32,
    /// Levels of a fresh ciphertext (the top level of the chain).
    pub(crate) levels: usize,
    pub(crate) q_limbs: usize,
    pub(crate) p_limbs: usize,
    pub(crate) dnum: usize,
    pub(crate) log_qp: f64,
    pub(crate) log_scale: f64,
    /// N/2.
    pub(crate) max_slots: usize,
}

impl ParamsInfo {
    pub(crate) fn of(params: &Parameters) -> Self {
        Self {
            log_n: params.log_n(),
            levels: params.max_level(),
            q_limbs: params.q_count(),
            p_limbs: params.p_count(),
            dnum: params.dnum(),
            log_qp: params.log_qp(),
            log_scale: params.default_scale().log2(),
            max_slots: 1 << params.log_slots(),
        }
    }
}

/// The loud label of an insecure preset (None for a secure one).
pub(crate) fn insecure_warning(preset: &str, params: &Parameters) -> Option<String> {
    params.is_insecure().then(|| {
        format!(
            "preset {preset} is an INSECURE test preset (log2 QP = {:.0} at N = 2^{}, far above \
             the 128-bit bound): figures show the algorithm's cost at a small ring only; \
             `--preset n16-boot` is the 128-bit run",
            params.log_qp(),
            params.log_n()
        )
    })
}

#[derive(Serialize)]
struct StepResult {
    name: &'static str,
    /// Median over block runs of the step's total time within one block.
    median_ms: f64,
    /// Occurrences within one block.
    count: usize,
    /// Levels one occurrence consumes.
    levels: usize,
}

#[derive(Serialize)]
struct BlockResult {
    /// `columns` (ENSI's, [`EncryptedModel::block`]) or `dense` ([`EncryptedModel::dense_block`]).
    layout: &'static str,
    /// Which layer of the random model ran.
    layer: usize,
    tokens: usize,
    tokens_pad: usize,
    keygen_s: f64,
    eval_key_bytes: usize,
    /// Median wall time of one block.
    median_ms: f64,
    runs_ms: Vec<f64>,
    /// Bootstraps in one block.
    bootstraps: usize,
    /// Median over runs of the total bootstrap time within one block.
    bootstrap_ms: f64,
    /// Bootstrap time over block time, per run.
    bootstrap_share_runs: Vec<f64>,
    steps: Vec<StepResult>,
    /// Decrypted block output (last run) against the plaintext ENSI twin's.
    output_max_abs_err_vs_twin: f64,
    output_max_abs: f64,
    /// The wide layout's intermediates (last run) against the twin's: where
    /// the error comes from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    step_errors: Vec<StepError>,
}

#[derive(Serialize)]
struct StepError {
    name: &'static str,
    max_abs_err: f64,
    max_abs: f64,
    /// log2(max_abs / max_abs_err).
    bits: f64,
}

#[derive(Serialize, Clone)]
struct Measured {
    /// Input and output features of the slice actually run.
    d_in: usize,
    d_out: usize,
    median_ms: f64,
    runs: usize,
    /// Levels the operation consumes.
    levels: usize,
    /// The time at the full shape: `median_ms` when the slice is the full
    /// shape, otherwise scaled by (d_in d_out) / (slice d_in d_out).
    full_shape_ms: f64,
    /// Whether `full_shape_ms` is scaled from a slice (not measured).
    extrapolated: bool,
    /// Largest error of the decrypted result against the plaintext product.
    max_abs_err: f64,
}

#[derive(Serialize)]
struct DenseInfo {
    blocks_per_ciphertext: usize,
    block_len: usize,
    ciphertexts_in: usize,
    ciphertexts_out: usize,
    baby_step: usize,
    encoded_diagonals: usize,
    diagonal_bytes: f64,
    rotation_keys: usize,
    plan_build_ms: f64,
}

#[derive(Serialize)]
struct PcmmSection {
    tokens: usize,
    d_in: usize,
    d_out: usize,
    /// The inputs' level (the level of q/k/v in the block: the bootstrap's output level - 1).
    level: usize,
    level_note: String,
    /// Ciphertexts of one d-wide hidden state per layout.
    column_ciphertexts: usize,
    dense_ciphertexts: usize,
    ops: BTreeMap<&'static str, Measured>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dense: Option<DenseInfo>,
    /// Scaled: every ternary projection of one block (4 d x d, 3 d x i) at the
    /// time per (input x output) column pair of the d -> d measurement.
    extrapolated_all_projections_ms: BTreeMap<&'static str, f64>,
}

#[derive(Serialize)]
struct AttnMeasured {
    /// Score ciphertexts the measurement ran on.
    ciphertexts: usize,
    median_ms: f64,
    runs: usize,
    /// Levels the operation consumes.
    levels: usize,
    /// The time for all of the block's score ciphertexts: `median_ms` when
    /// all were measured, otherwise scaled per ciphertext.
    block_ms: f64,
    /// Whether `block_ms` is scaled (not measured).
    extrapolated: bool,
    /// Largest error of the decrypted result (head 0) against the same
    /// computation in f64.
    max_abs_err: f64,
}

#[derive(Serialize)]
struct AttentionSection {
    /// Score ciphertexts of one block: heads x s_pad diagonals, s_pad slots each.
    score_ciphertexts: usize,
    /// Score ciphertexts measured (whole heads where they fit).
    measured_ciphertexts: usize,
    heads_measured: usize,
    keys_per_row: usize,
    /// The parameters of this comparison (see `notes`).
    preset: String,
    insecure: bool,
    log_n: u32,
    /// The softmax's input level (the top of the chain).
    level: usize,
    /// The sigmoid's input level: both end at `output_level`.
    sigmoid_level: usize,
    output_level: usize,
    score_interval: [f64; 2],
    sigmoid: String,
    /// The conventional softmax in NEXUS's layout (one row per ciphertext).
    softmax_rows: String,
    /// The same softmax in ENSI's column layout (the ciphertexts read as columns).
    softmax_columns: String,
    ops: BTreeMap<&'static str, AttnMeasured>,
    precision_bits: BTreeMap<&'static str, f64>,
}

#[derive(Serialize)]
struct NotRun {
    what: String,
    why: String,
}

#[derive(Serialize)]
struct Report {
    suite: &'static str,
    shape: &'static str,
    model: ModelShape,
    preset: String,
    insecure: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
    threads: usize,
    seq: usize,
    tokens_pad: usize,
    runs: usize,
    max_mem_gib: f64,
    params: ParamsInfo,
    /// The block in ENSI's column layout.
    #[serde(skip_serializing_if = "Option::is_none")]
    block: Option<BlockResult>,
    /// The same block in the dense layout, where it fits.
    #[serde(skip_serializing_if = "Option::is_none")]
    block_dense: Option<BlockResult>,
    /// The block in the wide layout (the dense layout over several
    /// ciphertexts): 1bitllm-large, where neither of the others fits.
    #[serde(skip_serializing_if = "Option::is_none")]
    block_wide: Option<BlockResult>,
    pcmm: PcmmSection,
    attention: AttentionSection,
    ratios: BTreeMap<&'static str, f64>,
    /// What each ratio was computed from (measured, or from which slice).
    ratio_basis: BTreeMap<&'static str, String>,
    not_run: Vec<NotRun>,
    notes: Vec<String>,
    peak_rss_bytes: u64,
}

/// Median of `runs` calls of `f` (no warm-up: the caller's checked first call is one).
fn timed<T>(runs: usize, mut f: impl FnMut() -> R<T>) -> R<OpResult> {
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        drop(f()?);
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(OpResult {
        median_ms: t[runs / 2],
        runs,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ct_bytes(params: &Parameters, level: usize) -> f64 {
    2.0 * (level + 1) as f64 * params.n() as f64 * 8.0
}

fn pt_bytes(params: &Parameters, level: usize) -> f64 {
    (level + 1) as f64 * params.n() as f64 * 8.0
}

/// A rotation key truncated to `level`.
fn rotation_key_bytes(params: &Parameters, level: usize) -> f64 {
    (params.digits_at(level) * 2 * (level + 1 + params.p_count())) as f64 * params.n() as f64 * 8.0
}

/// Random ternary weights as BitNet quantizes them (uniform latent, absmean scale).
fn random_ternary(rows: usize, cols: usize, seed: u64) -> TernaryMatrix {
    let mut rng = SplitMix64::new(seed);
    let latent: Vec<f64> = (0..rows * cols).map(|_| rng.uniform(1.0)).collect();
    TernaryMatrix::from_latent(rows, cols, &latent)
}

fn random_matrix(rows: usize, cols: usize, seed: u64, lo: f64, hi: f64) -> Matrix {
    let mut rng = SplitMix64::new(seed);
    Matrix::from_vec(
        rows,
        cols,
        (0..rows * cols)
            .map(|_| lo + (hi - lo) * rng.next_f64())
            .collect(),
    )
}

/// The top-left `rows x cols` block of `w`, same scale.
fn slice_ternary(w: &TernaryMatrix, rows: usize, cols: usize) -> R<TernaryMatrix> {
    let values: Vec<i8> = (0..rows)
        .flat_map(|r| w.values()[r * w.cols()..][..cols].iter().copied())
        .collect();
    Ok(TernaryMatrix::new("w", rows, cols, values, w.scale())?)
}

fn slice_cols(x: &Matrix, cols: usize) -> Matrix {
    Matrix::from_vec(
        x.rows(),
        cols,
        (0..x.rows())
            .flat_map(|r| x.row(r)[..cols].iter().copied())
            .collect(),
    )
}

/// The dense PCMM's baby-step count (as `ensi_infer::dense` chooses it), for
/// the memory estimate.
fn baby_step(diagonals: usize, c_in: usize, c_out: usize) -> usize {
    let mut best = (usize::MAX, 1);
    let mut n1 = 1;
    while n1 <= diagonals {
        let cost = c_in * (n1 - 1) + c_out * (diagonals.div_ceil(n1) - 1);
        if cost <= best.0 {
            best = (cost, n1);
        }
        n1 *= 2;
    }
    best.1
}

/// The level the block's q/k/v projections run at, and how it was chosen.
fn pcmm_level(params: &Parameters, log_slots: u32) -> (usize, String) {
    let mut cfg = BootstrapConfig::for_params(params).with_log_slots(log_slots);
    cfg.stc_levels = 1;
    match cfg.output_level(params) {
        Ok(l) if l >= 2 => (
            l - 1,
            format!(
                "the block's q/k/v level: the bootstrap's output level {l} minus the unpacking level"
            ),
        ),
        _ => (
            params.max_level(),
            "the preset cannot bootstrap: the top level".to_string(),
        ),
    }
}

pub fn run(args: &BenchArgs) -> CliResult {
    let preset = args.preset().to_string();
    let shape = args.shape;
    let ms = model_shape(shape);
    let seq = args.seq.unwrap_or(match shape {
        Shape::Tiny => 16,
        Shape::OneBitLlmLarge => 128,
    });
    if seq == 0 {
        return Err("--seq must be at least 1".into());
    }
    let runs = args.runs();
    let budget = args.max_mem_gib * GIB;
    let lit = ParametersLiteral::preset(&preset)?;
    let params = lit.build()?;
    let warning = insecure_warning(&preset, &params);
    let s_pad = seq.next_power_of_two();
    if s_pad > 1 << params.log_slots() {
        return Err(format!(
            "{seq} tokens do not fit one ciphertext of 2^{} slots",
            params.log_slots()
        )
        .into());
    }
    eprintln!(
        "bench block: shape {} (hidden {}, intermediate {}, {} heads of {}), {seq} tokens (s_pad {s_pad}), \
         preset {preset} (N = 2^{}, {} levels), {} thread(s), {runs} run(s), memory budget {:.1} GiB",
        shape_name(shape),
        ms.hidden,
        ms.intermediate,
        ms.heads,
        ms.head_dim,
        params.log_n(),
        params.max_level(),
        args.threads,
        args.max_mem_gib
    );
    if let Some(w) = &warning {
        eprintln!("WARNING: {w}");
    }
    let mut not_run = Vec::new();
    let mut notes = Vec::new();
    let approx = EnsiApprox::default();
    let polys = approx.polys()?;
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key();

    // ---- The whole block (tiny only), in ENSI's column layout and in the dense one ----
    let mut block_dense = None;
    let mut block_wide = None;
    let block = match shape {
        Shape::Tiny => {
            let tb = random_block(seq, &approx, shape)?;
            let cfg = tb.model.config();
            let columns = choose_packing(cfg, &params, seq, Some(Layout::Columns))?;
            let block = run_block(&params, &tb, columns, runs, &approx, &sk)?;
            match choose_packing(cfg, &params, seq, Some(Layout::Dense)) {
                Ok(dense) => {
                    block_dense = Some(run_block(&params, &tb, dense, runs, &approx, &sk)?)
                }
                Err(e) => not_run.push(NotRun {
                    what: "the block in the dense layout (EncryptedModel::dense_block)".into(),
                    why: format!("{e} (at {seq} tokens and N = 2^{})", params.log_n()),
                }),
            }
            Some(block)
        }
        Shape::OneBitLlmLarge => {
            let packing = Packing::new(seq, ms.hidden, params.log_n());
            let (l, _) = pcmm_level(&params, params.log_slots());
            let state_gb =
                (ms.hidden * 3 + ms.intermediate * 3) as f64 * ct_bytes(&params, l) / 1e9;
            let mut why = format!(
                "the column layout holds the hidden state as {} ciphertexts and the MLP as {} more \
                 (gate, up, their product), about {state_gb:.1} GB at level {l} without keys, \
                 attention's rotated keys and values, or intermediates",
                ms.hidden,
                ms.intermediate * 3
            );
            if let Err(e) = packing {
                why = format!("{e}; and {why}");
            }
            not_run.push(NotRun {
                what: "the whole block in ENSI's column layout (EncryptedModel::block) and in the \
                       one-ciphertext dense layout (dense_block)"
                    .into(),
                why: format!(
                    "{why}; the dense layout's attention needs d s^2 = {} slots in one ciphertext",
                    ms.hidden * s_pad * s_pad
                ),
            });
            if args.skip_block {
                not_run.push(NotRun {
                    what: "the whole block in the wide layout (EncryptedModel::wide_block)".into(),
                    why: "--skip-block".into(),
                });
            } else {
                let tb = random_block(seq, &approx, shape)?;
                let wide = choose_packing(tb.model.config(), &params, seq, Some(Layout::Wide))?;
                block_wide = Some(run_block(&params, &tb, wide, runs, &approx, &sk)?);
            }
            None
        }
    };

    // ---- PCMM: ternary vs generic (column), column vs dense ----
    // The PCMMs take seconds where the block takes minutes: at least three
    // runs each, so that their ratio is a median even with `--runs 1`.
    let pcmm = run_pcmm(
        &params,
        &sk,
        ms,
        seq,
        runs.max(3),
        budget,
        &mut notes,
        &mut not_run,
    )?;

    // ---- Attention nonlinearity: sigmoid vs softmax on the same scores ----
    let attention = run_attention(
        &params,
        ms,
        seq,
        runs,
        budget,
        &polys,
        &mut notes,
        &mut not_run,
    )?;

    // ---- Ratios ----
    let mut ratios = BTreeMap::new();
    let mut basis = BTreeMap::new();
    let basis_of = |m: &Measured, name: &str| {
        if m.extrapolated {
            format!(
                "{name}: measured on {} -> {} features, scaled to {} -> {} (extrapolated)",
                m.d_in, m.d_out, pcmm.d_in, pcmm.d_out
            )
        } else {
            format!("{name}: measured at the full shape")
        }
    };
    let (t, g) = (&pcmm.ops["ternary_column"], &pcmm.ops["generic_column"]);
    ratios.insert(
        "pcmm_generic_over_ternary",
        g.full_shape_ms / t.full_shape_ms,
    );
    basis.insert(
        "pcmm_generic_over_ternary",
        format!(
            "{}; {}; level {}, {seq} tokens",
            basis_of(g, "generic"),
            basis_of(t, "ternary"),
            pcmm.level
        ),
    );
    if let Some(d) = pcmm.ops.get("ternary_dense") {
        ratios.insert(
            "pcmm_column_over_default",
            t.full_shape_ms / d.full_shape_ms,
        );
        basis.insert(
            "pcmm_column_over_default",
            format!(
                "{}; {} (evaluation only; the plan's encoding is pcmm.dense.plan_build_ms)",
                basis_of(t, "column ternary"),
                basis_of(d, "dense ternary")
            ),
        );
    }
    let sg = &attention.ops["sigmoid"];
    let per_ct = if attention.measured_ciphertexts < attention.score_ciphertexts {
        "; the full block has more, the ratio is per ciphertext"
    } else {
        ""
    };
    for (name, op, how) in [
        (
            "softmax_over_sigmoid",
            "softmax_rows",
            "the conventional softmax in NEXUS's layout (row sums by rotations, an inverse per row)",
        ),
        (
            "softmax_columns_over_sigmoid",
            "softmax_columns",
            "the softmax in ENSI's column layout (row sums by additions, one inverse per head)",
        ),
    ] {
        let sm = &attention.ops[op];
        ratios.insert(name, sm.median_ms / sg.median_ms);
        basis.insert(
            name,
            format!(
                "{how} over the sigmoid, both on the same {} score ciphertexts of {} slots on {}, \
                 both ending at level {}: sigmoid from level {} ({} levels), softmax from level {} \
                 ({} levels; its extra bootstraps in a block are not counted){per_ct}",
                attention.measured_ciphertexts,
                s_pad,
                attention.preset,
                attention.output_level,
                attention.sigmoid_level,
                sg.levels,
                attention.level,
                sm.levels,
            ),
        );
    }
    if let (Some(c), Some(d)) = (&block, &block_dense) {
        ratios.insert("block_column_over_dense", c.median_ms / d.median_ms);
        basis.insert(
            "block_column_over_dense",
            format!(
                "median block times, EncryptedModel::block (columns) over dense_block, same model, \
                 same {seq} tokens, {} run(s) each",
                c.runs_ms.len()
            ),
        );
        ratios.insert(
            "bootstrap_share_dense",
            median(d.bootstrap_share_runs.clone()),
        );
        basis.insert(
            "bootstrap_share_dense",
            "as bootstrap_share, for EncryptedModel::dense_block".into(),
        );
    }
    if let (None, Some(b)) = (&block, &block_wide) {
        ratios.insert("bootstrap_share", median(b.bootstrap_share_runs.clone()));
        basis.insert(
            "bootstrap_share",
            format!(
                "median over {} run(s) of EncryptedModel::wide_block (the layout that holds this \
                 shape): bootstrap time (from ServerContext::take_stats) over the block's wall time",
                b.runs_ms.len()
            ),
        );
    }
    if let Some(b) = &block {
        ratios.insert("bootstrap_share", median(b.bootstrap_share_runs.clone()));
        basis.insert(
            "bootstrap_share",
            format!(
                "median over {} run(s) of EncryptedModel::block: bootstrap time (from \
                 ServerContext::take_stats) over the block's wall time",
                b.runs_ms.len()
            ),
        );
    }

    let report = Report {
        suite: "block",
        shape: shape_name(shape),
        model: ms,
        preset: preset.clone(),
        insecure: params.is_insecure() || attention.insecure,
        warning: warning.clone(),
        threads: args.threads,
        seq,
        tokens_pad: s_pad,
        runs,
        max_mem_gib: args.max_mem_gib,
        params: ParamsInfo::of(&params),
        block,
        block_dense,
        block_wide,
        pcmm,
        attention,
        ratios,
        ratio_basis: basis,
        not_run,
        notes,
        peak_rss_bytes: peak_rss_bytes(),
    };
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The random model of the block benchmark (its shape, one layer) and its input tokens.
struct TinyBlock {
    model: Arc<BitNetModel>,
    enc_model: EncryptedModel,
    ids: Vec<u32>,
}

fn random_block(seq: usize, approx: &EnsiApprox, shape: Shape) -> R<TinyBlock> {
    let dir = std::env::temp_dir().join(format!("ensi-bench-block-{}", std::process::id()));
    let mut config = ensi_model::tiny::tiny_config(Family::OneBitLlm);
    let ms = model_shape(shape);
    config.hidden_size = ms.hidden;
    config.intermediate_size = ms.intermediate;
    config.num_heads = ms.heads;
    config.num_kv_heads = ms.kv_heads;
    config.head_dim = ms.head_dim;
    // One layer: the benchmark runs layer 0.
    config.num_layers = 1;
    let opts = TinyOptions::new(Family::OneBitLlm, 1);
    let written = ensi_model::write_random(&dir, &opts, &config)
        .map_err(|e| e.to_string())
        .and_then(|_| BitNetModel::load(&dir).map_err(|e| e.to_string()));
    let _ = std::fs::remove_dir_all(&dir);
    let model = Arc::new(written?);
    let enc_model = EncryptedModel::new(model.clone(), approx.polys()?);
    let mut rng = SplitMix64::new(7);
    let vocab = model.config().vocab_size as u64;
    let ids: Vec<u32> = (0..seq).map(|_| (rng.next_u64() % vocab) as u32).collect();
    Ok(TinyBlock {
        model,
        enc_model,
        ids,
    })
}

/// Runs layer 0 of the random tiny model `runs` times in `layout`
/// ([`EncryptedModel::block`] for the column layout, [`EncryptedModel::dense_block`]
/// for the dense one) and checks the last output against the twin.
fn run_block(
    params: &Parameters,
    tb: &TinyBlock,
    packing: Packing,
    runs: usize,
    approx: &EnsiApprox,
    sk: &SecretKey,
) -> R<BlockResult> {
    let (model, enc_model, ids) = (&tb.model, &tb.enc_model, &tb.ids);
    let seq = ids.len();
    eprintln!(
        "block ({} layout): generating keys (bootstrapping at 2^{} slots, output level {})",
        packing.layout.name(),
        packing.packed_log_slots(),
        bootstrap_config(params, &packing).output_level(params)?
    );
    let t = Instant::now();
    let keys: BootstrapKeys = generate_model_keys(params, model.config(), &packing, sk)?;
    let keygen_s = t.elapsed().as_secs_f64();
    eprintln!(
        "keys: {:.1} s, {:.2} GiB",
        keygen_s,
        keys.byte_size() as f64 / GIB
    );
    let eval_key_bytes = keys.byte_size();
    let mut ctx = ServerContext::new(params, packing, keys)?;
    // A wide block runs for many minutes: show its steps as they end.
    ctx.set_progress(packing.layout == Layout::Wide);
    let x = model.embed(ids)?;
    let input = encrypt_embeddings(params, &packing, sk, &x)?;
    let mut runs_ms = Vec::new();
    let mut shares = Vec::new();
    let mut boot_ms = Vec::new();
    let mut per_step: Vec<(&'static str, Vec<f64>, usize, usize)> = Vec::new();
    let mut bootstraps = 0;
    let mut got = None;
    let mut wide_trace = WideTrace::default();
    drop(ctx.take_stats());
    for r in 0..runs {
        let t = Instant::now();
        let (out, trace) = match packing.layout {
            Layout::Columns => (enc_model.block(&ctx, 0, &input, seq, None)?, None),
            Layout::Wide => {
                // The last run keeps its intermediates (clones of a few dozen
                // ciphertexts) for the error per step.
                let last = r + 1 == runs;
                let out = enc_model.wide_block(
                    &ctx,
                    0,
                    &input,
                    seq,
                    if last { Some(&mut wide_trace) } else { None },
                )?;
                (out, None)
            }
            Layout::Dense => {
                // The trace only keeps (clones of) a handful of ciphertexts.
                let mut trace = DenseTrace::default();
                let y = enc_model.dense_block(&ctx, 0, &input[0], seq, Some(&mut trace))?;
                (vec![y], Some(trace))
            }
        };
        let wall = t.elapsed().as_secs_f64() * 1e3;
        got = Some(match trace {
            None if packing.layout == Layout::Wide => {
                decrypt_wide(params, sk, &out, packing.tokens_pad, (seq, packing.hidden))?
            }
            None => decrypt_columns(params, sk, &out, seq, 1.0)?,
            // The dense block's output is its residual stream: Std(d), no factor.
            Some(_) => decrypt_dense(
                params,
                sk,
                &out[0],
                packing.tokens_pad,
                (seq, packing.hidden),
            )?,
        });
        let stats = ctx.take_stats();
        bootstraps = stats.bootstraps;
        let mut boot = 0.0;
        for (name, time, levels, count) in stats.totals() {
            let ms = time.as_secs_f64() * 1e3;
            if name == "bootstrap" {
                boot = ms;
            }
            match per_step.iter_mut().find(|e| e.0 == name) {
                Some(e) => e.1.push(ms),
                None => per_step.push((name, vec![ms], levels, count)),
            }
        }
        eprintln!(
            "block ({}) run {}/{runs}: {:.2} s, {bootstraps} bootstraps {:.2} s",
            packing.layout.name(),
            r + 1,
            wall / 1e3,
            boot / 1e3
        );
        runs_ms.push(wall);
        boot_ms.push(boot);
        shares.push(boot / wall);
    }
    let got = got.ok_or("no block run")?;
    // The plaintext ENSI twin's output of the same block.
    let (_, trace) = model.forward_traced(ids, &mut model.new_cache(), &Mode::twin(approx)?)?;
    let lt = &trace.layers[0];
    let want = &lt.output;
    let step_errors: Vec<StepError> = wide_trace
        .decrypt(params, sk, packing.tokens_pad, seq, |name| {
            lt.step(name).map_or(0, |m| m.cols())
        })?
        .into_iter()
        .filter_map(|(name, got)| {
            let want = lt.step(name)?;
            let (err, max) = (max_err(&got, want), want.max_abs());
            Some(StepError {
                name,
                max_abs_err: err,
                max_abs: max,
                bits: (max / err).log2(),
            })
        })
        .collect();
    for e in &step_errors {
        eprintln!(
            "  {:<12} vs twin: max |err| {:.2e} (max |value| {:.2}), {:.1} bits",
            e.name, e.max_abs_err, e.max_abs, e.bits
        );
    }
    Ok(BlockResult {
        layout: packing.layout.name(),
        layer: 0,
        tokens: seq,
        tokens_pad: packing.tokens_pad,
        keygen_s,
        eval_key_bytes,
        median_ms: median(runs_ms.clone()),
        runs_ms,
        bootstraps,
        bootstrap_ms: median(boot_ms),
        bootstrap_share_runs: shares,
        steps: per_step
            .into_iter()
            .map(|(name, v, levels, count)| StepResult {
                name,
                median_ms: median(v),
                count,
                levels,
            })
            .collect(),
        output_max_abs_err_vs_twin: max_err(&got, want),
        output_max_abs: want.max_abs(),
        step_errors,
    })
}

/// The largest `d_in' x d_out'` slice of a column-layout PCMM within `budget`
/// bytes (inputs, outputs and the generic PCMM's unrescaled sums); a partial
/// `d_in'` is a multiple of `align` (the dense layout's columns per
/// ciphertext) where it can be, so that the dense layout gets whole ciphertexts.
fn column_slice(
    d_in: usize,
    d_out: usize,
    ct: f64,
    budget: f64,
    align: usize,
) -> Option<(usize, usize)> {
    let mut d_in_s = d_in.min((budget / 2.0 / ct) as usize);
    if d_in_s < d_in && d_in_s >= align {
        d_in_s -= d_in_s % align;
    }
    if d_in_s == 0 {
        return None;
    }
    let left = budget - d_in_s as f64 * ct;
    let d_out_s = d_out.min((left / (2.0 * ct)) as usize);
    (d_out_s > 0).then_some((d_in_s, d_out_s))
}

#[allow(clippy::too_many_arguments)]
fn run_pcmm(
    params: &Parameters,
    sk: &SecretKey,
    ms: ModelShape,
    seq: usize,
    runs: usize,
    budget: f64,
    notes: &mut Vec<String>,
    not_run: &mut Vec<NotRun>,
) -> R<PcmmSection> {
    let (d_in, d_out) = (ms.hidden, ms.hidden);
    let (level, level_note) = pcmm_level(params, params.log_slots());
    let scale = params.default_scale();
    let encoder = Encoder::new(params);
    let mut enc = Encryptor::with_secret_key(params, sk);
    let dec = Decryptor::new(sk);
    let w = random_ternary(d_out, d_in, 11);
    let x = random_matrix(seq, d_in, 12, -1.0, 1.0);
    let ct = ct_bytes(params, level);
    let full = (d_in * d_out) as f64;
    let mut ops = BTreeMap::new();

    // Column layout: ternary and generic on one slice.
    let lin_full = DenseLayout::new(seq, d_in, params.log_slots())?;
    let align = lin_full.blocks_per_ciphertext();
    let (ci, co) = column_slice(d_in, d_out, ct, budget, align).ok_or_else(|| {
        format!(
            "not even one column ciphertext pair ({:.1} MB each at level {level}) fits --max-mem-gib",
            ct / 1e6
        )
    })?;
    if (ci, co) != (d_in, d_out) {
        notes.push(format!(
            "column-layout PCMMs: {d_in} -> {d_out} at level {level} needs about {:.1} GB \
             ({:.1} MB per ciphertext); measured on the largest slice within the budget, {ci} -> {co}, \
             and scaled by (d_in d_out) / ({ci} x {co}) = {:.2} (extrapolated)",
            (d_in + 2 * d_out) as f64 * ct / 1e9,
            ct / 1e6,
            full / (ci * co) as f64
        ));
    }
    eprintln!("pcmm: column layout {ci} -> {co} features, {seq} tokens, level {level}");
    let ws = slice_ternary(&w, co, ci)?;
    let xs = slice_cols(&x, ci);
    let want = ws.forward(&xs);
    let cols = ColumnLayout::new(seq, ci).encrypt(&xs, &encoder, &mut enc, level, scale)?;
    let eval = Evaluator::new(params, Arc::new(Default::default()));
    let col_err = |out: &[Ciphertext], factor: f64| -> R<f64> {
        // The first few output columns against the plaintext product.
        let k = out.len().min(8);
        let got = decrypt_columns(params, sk, &out[..k], seq, factor)?;
        Ok(max_err(&got, &slice_cols(&want, k)))
    };
    let measured = |r: OpResult, levels: usize, err: f64, d: (usize, usize)| {
        let factor = full / (d.0 * d.1) as f64;
        Measured {
            d_in: d.0,
            d_out: d.1,
            median_ms: r.median_ms,
            runs: r.runs,
            levels,
            full_shape_ms: r.median_ms * factor,
            extrapolated: factor != 1.0,
            max_abs_err: err,
        }
    };
    let out = ternary_pcmm_columns(&eval, &cols, &ws)?;
    let err = col_err(&out, ws.scale())?;
    drop(out);
    let r = timed(runs, || Ok(ternary_pcmm_columns(&eval, &cols, &ws)?))?;
    eprintln!(
        "  ternary, column (additions, tables) {:>10.1} ms",
        r.median_ms
    );
    ops.insert("ternary_column", measured(r, 0, err, (ci, co)));
    let real: Vec<f64> = ws.values().iter().map(|&v| v as f64 * ws.scale()).collect();
    let out = generic_pcmm_columns(&eval, &cols, &real, co)?;
    let err = col_err(&out, 1.0)?;
    drop(out);
    let r = timed(runs, || Ok(generic_pcmm_columns(&eval, &cols, &real, co)?))?;
    eprintln!(
        "  generic, column (plaintext mults)   {:>10.1} ms",
        r.median_ms
    );
    ops.insert("generic_column", measured(r, 1, err, (ci, co)));
    drop(cols);

    // Dense column-block layout: the same inputs, as many outputs as fit.
    let b_out = DenseLayout::new(seq, d_out, params.log_slots())?.blocks_per_ciphertext();
    let lin = DenseLayout::new(seq, ci, params.log_slots())?;
    let (b_in, c_in) = (lin.blocks_per_ciphertext(), lin.ciphertexts());
    let pt = pt_bytes(params, level);
    let key = rotation_key_bytes(params, level);
    let estimate = |c_out: usize| {
        let n1 = baby_step(b_in, c_in, c_out);
        let keys = (n1 - 1) + b_in.div_ceil(n1).saturating_sub(1);
        c_in as f64 * n1 as f64 * ct
            + (c_in * c_out * b_in) as f64 * pt
            + 2.0 * c_out as f64 * ct
            + keys as f64 * key
    };
    let c_out_full = d_out.div_ceil(b_out);
    let c_out = (1..=c_out_full).rev().find(|&c| estimate(c) <= budget);
    let dense = match c_out {
        None => {
            not_run.push(NotRun {
                what: "dense-layout PCMM (pcmm_column_over_default)".into(),
                why: format!(
                    "one output ciphertext needs {} encoded diagonals of {:.1} MB: {:.1} GB, over --max-mem-gib",
                    c_in * b_in,
                    pt / 1e6,
                    estimate(1) / 1e9
                ),
            });
            None
        }
        Some(c_out) => {
            let do_s = (c_out * b_out).min(d_out);
            if (ci, do_s) != (d_in, d_out) {
                notes.push(format!(
                    "dense-layout PCMM: the plan of {d_in} -> {d_out} holds {} encoded diagonals \
                     ({:.1} GB at level {level}); measured on {ci} -> {do_s} ({c_out} output \
                     ciphertext(s)), scaled by (d_in d_out) / ({ci} x {do_s}) = {:.2} (extrapolated; \
                     the slice's baby-step/giant-step split is chosen for its own ciphertext counts)",
                    lin_full.ciphertexts() * c_out_full * lin_full.blocks_per_ciphertext(),
                    (lin_full.ciphertexts() * c_out_full * lin_full.blocks_per_ciphertext())
                        as f64
                        * pt
                        / 1e9,
                    full / (ci * do_s) as f64
                ));
            }
            let lout = DenseLayout::with_blocks(seq, do_s, b_out, params.log_slots())?;
            let wd = slice_ternary(&w, do_s, ci)?;
            eprintln!(
                "pcmm: dense layout {ci} -> {do_s} features ({} -> {} ciphertexts of {} columns), encoding the plan",
                c_in,
                lout.ciphertexts(),
                b_in
            );
            let t = Instant::now();
            let plan = DensePcmmPlan::new(&encoder, &lin, &wd, wd.scale(), &lout, level)?;
            let plan_build_ms = t.elapsed().as_secs_f64() * 1e3;
            let steps = plan.rotation_steps();
            // Rotation keys only (no relinearization), truncated to the PCMM's level.
            let mut keys = EvaluationKeys::default();
            let mut kg = KeyGenerator::new(params);
            for &s in &steps {
                let mut k = kg.gen_rotation_key(sk, s);
                k.truncate_to_level(params, level);
                keys.insert_galois(k);
            }
            let deval = Evaluator::new(params, Arc::new(keys));
            let xd = slice_cols(&x, ci);
            let cts = lin.encrypt(&xd, &encoder, &mut enc, level, scale)?;
            let out = plan.apply(&deval, &cts)?;
            let got = lout.decrypt(&out, &encoder, &dec)?;
            let err = max_err(&got, &wd.forward(&xd));
            drop(out);
            let r = timed(runs, || Ok(plan.apply(&deval, &cts)?))?;
            eprintln!(
                "  ternary, dense (BSGS diagonals)     {:>10.1} ms  (plan {:.1} ms)",
                r.median_ms, plan_build_ms
            );
            ops.insert("ternary_dense", measured(r, 1, err, (ci, do_s)));
            Some(DenseInfo {
                blocks_per_ciphertext: b_in,
                block_len: lin.block_len(),
                ciphertexts_in: c_in,
                ciphertexts_out: lout.ciphertexts(),
                baby_step: plan.baby_step(),
                encoded_diagonals: plan.diagonal_count(),
                diagonal_bytes: plan.diagonal_count() as f64 * pt,
                rotation_keys: steps.len(),
                plan_build_ms,
            })
        }
    };

    // Every ternary projection of one block, at the d -> d time per column pair.
    let pairs = (4 * ms.hidden * ms.hidden + 3 * ms.hidden * ms.intermediate) as f64;
    let mut all = BTreeMap::new();
    for (name, key) in [("column", "ternary_column"), ("dense", "ternary_dense")] {
        if let Some(m) = ops.get(key) {
            all.insert(name, m.full_shape_ms / full * pairs);
        }
    }
    Ok(PcmmSection {
        tokens: seq,
        d_in,
        d_out,
        level,
        level_note,
        column_ciphertexts: d_in,
        dense_ciphertexts: lin_full.ciphertexts(),
        ops,
        dense,
        extrapolated_all_projections_ms: all,
    })
}

/// The parameters of the attention comparison: the softmax needs 18 levels of
/// one scale, more than the block's chain has below its bootstrapping primes
/// (whose 56- and 60-bit primes would crush a 2^40 scale), so both
/// nonlinearities run on a chain of twenty 40-bit primes at the same N:
/// `n16-l20` at N = 2^16, an insecure copy of its chain otherwise.
fn attention_params(main: &Parameters) -> R<Parameters> {
    if main.log_n() == 16 {
        return Ok(ParametersLiteral::preset("n16-l20")?.build()?);
    }
    let mut lit = ParametersLiteral::preset("n16-l20")?;
    lit.log_n = main.log_n();
    lit.log_slots = main.log_n() - 1;
    let bound = ensi_ckks::params::max_log_qp_128(main.log_n()).unwrap_or(0);
    let bits: u32 = lit.q_bits.iter().chain(&lit.p_bits).sum();
    if bits > bound {
        lit.name = format!("insecure-l20-n{}", main.log_n());
        lit.insecure = true;
    } else {
        lit.name = format!("l20-n{}", main.log_n());
    }
    Ok(lit.build()?)
}

/// Largest entry of |a - b|, NaN if any entry is NaN.
fn max_err(a: &Matrix, b: &Matrix) -> f64 {
    a.data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| if d.is_nan() || d > m { d } else { m })
}

#[allow(clippy::too_many_arguments)]
fn run_attention(
    main: &Parameters,
    ms: ModelShape,
    seq: usize,
    runs: usize,
    budget: f64,
    polys: &ApproxPolys,
    notes: &mut Vec<String>,
    not_run: &mut Vec<NotRun>,
) -> R<AttentionSection> {
    let params = &attention_params(main)?;
    let s_pad = seq.next_power_of_two();
    let level = params.max_level();
    let total = ms.heads * s_pad;
    // Per score ciphertext: the sigmoid's and the softmax's inputs, and at
    // most three more of the same size alive at once (outputs, exponentials).
    let per_ct = 5.0 * ct_bytes(params, level);
    let fit = (budget / per_ct) as usize;
    let (heads, keys_per_row) = if fit >= total {
        (ms.heads, s_pad)
    } else if fit >= s_pad {
        (fit / s_pad, s_pad)
    } else if fit >= 2 {
        (1, fit)
    } else {
        return Err(format!(
            "not even two score ciphertexts ({:.1} MB each) fit --max-mem-gib",
            per_ct / 5e6
        )
        .into());
    };
    let measured_cts = heads * keys_per_row;
    if measured_cts < total {
        notes.push(format!(
            "attention nonlinearity: the block has {} heads x {s_pad} score ciphertexts ({:.1} GB \
             with the softmax's intermediates at level {level}); measured on {heads} head(s) x \
             {keys_per_row}, scaled by {:.2} to the block (extrapolated; heads are independent)",
            ms.heads,
            total as f64 * per_ct / 1e9,
            total as f64 / measured_cts as f64
        ));
        if keys_per_row < s_pad {
            not_run.push(NotRun {
                what: "the column-layout softmax over a whole row of keys".into(),
                why: format!("one head's {s_pad} score ciphertexts do not fit --max-mem-gib; rows of {keys_per_row} keys measured (the row-layout softmax has whole rows of {s_pad})"),
            });
        }
    }
    eprintln!("attention: {heads} head(s) x {keys_per_row} score ciphertexts of {s_pad} slots");
    notes.push(format!(
        "attention nonlinearity: measured on {} (N = 2^{}, 50 + 20 x 40-bit primes{}), not on the \
         block's chain: the softmax needs 18 levels at one scale, more than the block's 40-bit levels \
         (the rest are bootstrapping primes of 56-60 bits); in the block it would need extra bootstraps, \
         which are not counted here",
        params.name(),
        params.log_n(),
        if params.is_insecure() { ", NOT secure" } else { "" }
    ));
    let mut kg = KeyGenerator::new(params);
    let sk = &kg.gen_secret_key();
    let log_row = s_pad.trailing_zeros();
    let eval = Evaluator::new(
        params,
        Arc::new(kg.gen_evaluation_keys(sk, &softmax_rows_rotations(log_row), false)),
    );
    let encoder = Encoder::new(params);
    let mut enc = Encryptor::with_secret_key(params, sk);
    let dec = Decryptor::new(sk);
    let (lo, hi) = (-4.0, 4.0);
    let sig = &polys.sigmoid;
    let (sa, sb) = (sig.a, sig.b);
    // Head h: a keys_per_row x s_pad matrix, column j = diagonal j (slot i:
    // query i against key i + j), ciphertext j.
    let z: Vec<Matrix> = (0..heads)
        .map(|h| random_matrix(s_pad, keys_per_row, 20 + h as u64, lo, hi))
        .collect();
    let to_t = |v: f64| (2.0 * v - (sa + sb)) / (sb - sa);
    let layout = ColumnLayout::new(s_pad, keys_per_row);
    // The block's sigmoid: sigma on [sa, sb], evaluated on the scores mapped to
    // [-1, 1] (the map is folded into RoPE's plaintexts in the block).
    let poly = ChebyshevPoly::new(-1.0, 1.0, sig.coeffs.clone())?;
    let approx = SoftmaxApprox {
        shift: hi,
        squarings: 6,
        inverse_start: 1.0 / keys_per_row as f64,
        newton_steps: 5,
    };
    // Both end at the same level, each starting from the lowest level its
    // depth allows (a ciphertext is dropped to it for free): the softmax from
    // the top, the sigmoid from its own depth above the softmax's output.
    // Starting the sigmoid at the top too would spend its five levels on the
    // widest ciphertexts for nothing (the block runs it from level 9).
    let out_level = level
        .checked_sub(approx.depth())
        .ok_or("the chain is too short for the softmax")?;
    let sig_level = out_level + poly.depth();
    let mut z_cts = Vec::new();
    let mut t_cts = Vec::new();
    for m in &z {
        let t = Matrix::from_vec(
            m.rows(),
            m.cols(),
            m.data().iter().map(|&v| to_t(v)).collect(),
        );
        z_cts.push(layout.encrypt(m, &encoder, &mut enc, level, params.default_scale())?);
        t_cts.push(layout.encrypt(&t, &encoder, &mut enc, sig_level, params.default_scale())?);
    }
    // NEXUS's layout: the same ciphertexts read as rows (ciphertext j of head
    // h: one query against s_pad keys), the row sums by rotations.
    let approx_rows = SoftmaxApprox {
        inverse_start: 1.0 / s_pad as f64,
        ..approx
    };
    let all_t: Vec<Ciphertext> = t_cts.iter().flatten().cloned().collect();
    let all_z: Vec<Ciphertext> = z_cts.iter().flatten().cloned().collect();
    let rows_out = softmax_rows(&eval, &all_z, &approx_rows)?;
    let levels_rows = level - rows_out[0].level();
    let mut e_rows = 0f64;
    for (j, ct) in rows_out.iter().take(keys_per_row).enumerate() {
        let row: Vec<f64> = (0..s_pad).map(|i| z[0].get(i, j)).collect();
        let got = encoder.decode_real(&dec.decrypt(ct)?);
        for (g, w) in got.iter().zip(approx_rows.eval_plain(&row)) {
            let d = (g - w).abs();
            e_rows = if d.is_nan() || d > e_rows { d } else { e_rows };
        }
    }
    drop(rows_out);
    let sig_out = sigmoid_attention(&eval, &all_t, &poly)?;
    let soft_out: Vec<Vec<Ciphertext>> = z_cts
        .par_iter()
        .map(|head| softmax_attention(&eval, head, &approx))
        .collect::<ensi_infer::Result<_>>()?;
    let levels_sig = sig_level - sig_out[0].level();
    let levels_soft = level - soft_out[0][0].level();
    // Precision on head 0.
    let sig_m = layout.decrypt(&sig_out[..keys_per_row], &encoder, &dec)?;
    let soft_m = layout.decrypt(&soft_out[0], &encoder, &dec)?;
    let mut want_sig = Matrix::zeros(s_pad, keys_per_row);
    let mut want_soft = Matrix::zeros(s_pad, keys_per_row);
    for i in 0..s_pad {
        want_soft
            .row_mut(i)
            .copy_from_slice(&approx.eval_plain(z[0].row(i)));
        for j in 0..keys_per_row {
            want_sig.row_mut(i)[j] = poly.eval_plain(to_t(z[0].get(i, j)));
        }
    }
    let (e_sig, e_soft) = (max_err(&sig_m, &want_sig), max_err(&soft_m, &want_soft));
    drop((sig_out, soft_out));
    let scale_up = total as f64 / measured_cts as f64;
    let m = |r: OpResult, levels: usize, err: f64| AttnMeasured {
        ciphertexts: measured_cts,
        median_ms: r.median_ms,
        runs: r.runs,
        levels,
        block_ms: r.median_ms * scale_up,
        extrapolated: scale_up != 1.0,
        max_abs_err: err,
    };
    let r_sig = timed(runs, || Ok(sigmoid_attention(&eval, &all_t, &poly)?))?;
    eprintln!(
        "  sigmoid (degree {}, levels {sig_level} -> {out_level})       {:>10.1} ms",
        poly.degree(),
        r_sig.median_ms
    );
    let r_soft = timed(runs, || {
        Ok(z_cts
            .par_iter()
            .map(|head| softmax_attention(&eval, head, &approx))
            .collect::<ensi_infer::Result<Vec<_>>>()?)
    })?;
    eprintln!(
        "  softmax, columns (exp r=6, Newton x5, levels {level} -> {out_level}) {:>10.1} ms",
        r_soft.median_ms
    );
    let r_rows = timed(runs, || Ok(softmax_rows(&eval, &all_z, &approx_rows)?))?;
    eprintln!(
        "  softmax, rows (exp r=6, rotations, Newton x5, levels {level} -> {out_level}) {:>10.1} ms",
        r_rows.median_ms
    );
    let mut ops = BTreeMap::new();
    ops.insert("sigmoid", m(r_sig, levels_sig, e_sig));
    ops.insert("softmax_columns", m(r_soft, levels_soft, e_soft));
    ops.insert("softmax_rows", m(r_rows, levels_rows, e_rows));
    Ok(AttentionSection {
        score_ciphertexts: total,
        measured_ciphertexts: measured_cts,
        heads_measured: heads,
        keys_per_row,
        preset: params.name().to_string(),
        insecure: params.is_insecure(),
        log_n: params.log_n(),
        level,
        sigmoid_level: sig_level,
        output_level: out_level,
        score_interval: [lo, hi],
        sigmoid: format!(
            "the block's: degree-{} Chebyshev of sigma on [{sa}, {sb}], on the scores mapped to [-1, 1] \
             (the map is folded into RoPE's plaintexts in the block)",
            poly.degree()
        ),
        softmax_rows: format!(
            "NEXUS's layout, each ciphertext one row (a query against {s_pad} keys): exp by \
             (1 + x/2^{r})^(2^{r}) after a shift of {hi}, the row sum by {log_row} rotations, {} \
             Newton steps for the inverse of every row, one product per ciphertext",
            approx.newton_steps,
            r = approx.squarings
        ),
        softmax_columns: format!(
            "ENSI's column layout, the same ciphertexts read as the head's diagonals: exp as above, \
             row sums over the diagonal ciphertexts (additions), {} Newton steps for one inverse \
             shared by all rows, one product per ciphertext",
            approx.newton_steps,
        ),
        ops,
        precision_bits: BTreeMap::from([
            ("sigmoid", -e_sig.max(1e-300).log2()),
            ("softmax_columns", -e_soft.max(1e-300).log2()),
            ("softmax_rows", -e_rows.max(1e-300).log2()),
        ]),
    })
}

fn print_report(r: &Report) {
    println!(
        "\nensi bench block: shape {} (hidden {}, intermediate {}, {} heads of {}), {} tokens (s_pad {}), \
         preset {} (N = 2^{}, {} levels, log2 QP {:.0}), {} thread(s), {} run(s)",
        r.shape,
        r.model.hidden,
        r.model.intermediate,
        r.model.heads,
        r.model.head_dim,
        r.seq,
        r.tokens_pad,
        r.preset,
        r.params.log_n,
        r.params.levels,
        r.params.log_qp,
        r.threads,
        r.runs
    );
    if let Some(w) = &r.warning {
        println!("WARNING: {w}");
    }
    for b in r.block.iter().chain(&r.block_dense).chain(&r.block_wide) {
        println!(
            "\nblock, {} layout (layer 0 of a random tiny 1bitLLM model): median {:.2} s over {} run(s), \
             {} bootstraps ({:.2} s), keygen {:.1} s, evaluation keys {:.1} MiB; output vs twin: \
             max |err| {:.2e} (max |value| {:.2})",
            b.layout,
            b.median_ms / 1e3,
            b.runs_ms.len(),
            b.bootstraps,
            b.bootstrap_ms / 1e3,
            b.keygen_s,
            b.eval_key_bytes as f64 / (1 << 20) as f64,
            b.output_max_abs_err_vs_twin,
            b.output_max_abs
        );
        println!(
            "  {:<20} {:>5} {:>12} {:>7} {:>7}",
            "step", "count", "median ms", "levels", "share"
        );
        for s in &b.steps {
            println!(
                "  {:<20} {:>5} {:>12.1} {:>7} {:>6.1}%",
                s.name,
                s.count,
                s.median_ms,
                s.levels,
                100.0 * s.median_ms / b.median_ms
            );
        }
    }
    let p = &r.pcmm;
    println!(
        "\nPCMM {} -> {} features, {} tokens, level {} ({}); a hidden state is {} column ciphertexts or {} dense ones",
        p.d_in, p.d_out, p.tokens, p.level, p.level_note, p.column_ciphertexts, p.dense_ciphertexts
    );
    println!(
        "  {:<16} {:>14} {:>12} {:>16}  {:>6} {:>10}",
        "op", "measured on", "median ms", "full shape ms", "levels", "max err"
    );
    for (name, m) in &p.ops {
        println!(
            "  {:<16} {:>14} {:>12.1} {:>16}  {:>6} {:>10.2e}",
            name,
            format!("{} -> {}", m.d_in, m.d_out),
            m.median_ms,
            full_label(m),
            m.levels,
            m.max_abs_err
        );
    }
    if let Some(d) = &p.dense {
        println!(
            "  dense plan: B = {} columns of {} slots per ciphertext, {} -> {} ciphertexts, baby step {}, \
             {} diagonals ({:.1} MB), {} rotation keys, encoding {:.1} ms (not in the timing above)",
            d.blocks_per_ciphertext,
            d.block_len,
            d.ciphertexts_in,
            d.ciphertexts_out,
            d.baby_step,
            d.encoded_diagonals,
            d.diagonal_bytes / 1e6,
            d.rotation_keys,
            d.plan_build_ms
        );
    }
    for (name, v) in &p.extrapolated_all_projections_ms {
        println!(
            "  all 7 projections of a block, {name} layout: {:.2} s (EXTRAPOLATED from the d -> d time per column pair)",
            v / 1e3
        );
    }
    let a = &r.attention;
    println!(
        "\nattention nonlinearity: {} of the block's {} score ciphertexts ({} head(s) x {} diagonals, {} slots), \
         preset {}{} (N = 2^{}), from level {}",
        a.measured_ciphertexts,
        a.score_ciphertexts,
        a.heads_measured,
        a.keys_per_row,
        r.tokens_pad,
        a.preset,
        if a.insecure { ", NOT secure" } else { "" },
        a.log_n,
        a.level
    );
    for (name, m) in &a.ops {
        let block = if m.extrapolated {
            format!("{:.1} (extrap.)", m.block_ms)
        } else {
            format!("{:.1}", m.block_ms)
        };
        println!(
            "  {:<16} {:>12.1} ms  whole block: {:>16} ms  {} levels, {:.1} bits",
            name, m.median_ms, block, m.levels, a.precision_bits[name]
        );
    }
    println!("\nratios (same run)");
    for (name, v) in &r.ratios {
        println!("  {name:<28} {v:>8.3}   [{}]", r.ratio_basis[name]);
    }
    if !r.not_run.is_empty() {
        println!("\nnot run");
        for n in &r.not_run {
            println!("  - {}: {}", n.what, n.why);
        }
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    if r.warning.is_some() {
        println!(
            "WARNING: INSECURE preset {}: not a 128-bit measurement",
            r.preset
        );
    }
}

fn full_label(m: &Measured) -> String {
    if m.extrapolated {
        format!("{:.1} (extrap.)", m.full_shape_ms)
    } else {
        format!("{:.1}", m.full_shape_ms)
    }
}
