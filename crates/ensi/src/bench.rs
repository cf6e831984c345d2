//! `ensi bench <suite>`: benchmarks that print a table and write JSON.
//!
//! Every figure is a median over repeated runs, measured in this process, with
//! the thread count and parameters recorded beside it.

use crate::CliResult;
use clap::{Args, ValueEnum};
use ensi_ckks::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Benchmark suites.
#[derive(Clone, Copy, ValueEnum)]
pub enum Suite {
    /// CKKS primitives (NTT, encoding, encryption, key switching, ...).
    Ckks,
    /// Ternary (ENSI) vs conventional PCMM in the column layout.
    Pcmm,
    /// Sigmoid attention (ENSI) vs the conventional HE softmax, column layout.
    Attention,
    /// Bootstrapping (with key generation, precision, levels, key bytes and
    /// peak memory), one degree-63 Chebyshev polynomial and one dense linear
    /// transform of dimension 2^12. Use a `*-boot` preset.
    Bootstrap,
    /// One encrypted BitNet block on random ternary weights (per-step times,
    /// levels, bootstraps) and ENSI's four ratios, measured in the same run.
    /// Default preset `insecure-boot-n12` (NOT secure); `--preset n16-boot` is 128-bit.
    Block,
    /// The demo's round timed phase by phase (keygen, upload, encrypt,
    /// inference per block, decrypt) with key and ciphertext sizes on the wire.
    /// Default preset `insecure-boot-n12` (NOT secure), as the demo.
    E2e,
}

/// Shapes of the block benchmark.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Shape {
    /// The built-in tiny 1bitLLM model (hidden 64, intermediate 128, 4 heads of 16).
    Tiny,
    /// 1bitLLM/bitnet_b1_58-large (hidden 1536, intermediate 4096, 16 heads of 96).
    #[value(name = "1bitllm-large")]
    OneBitLlmLarge,
}

/// `ensi bench` arguments.
#[derive(Args)]
pub struct BenchArgs {
    /// Suite to run.
    pub suite: Suite,
    /// Parameter preset (default: n16-l20; bootstrap: n16-boot; block and e2e:
    /// insecure-boot-n12, NOT secure).
    #[arg(long)]
    pub preset: Option<String>,
    /// Worker threads (1 = single-threaded, as the anchors are measured).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Runs per operation (the median is reported; default 7, at least 5;
    /// block: default 3, at least 1, its PCMMs at least 3; e2e: one round trip per generated token).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// PCMM suite: tokens (rows of the hidden state).
    #[arg(long, default_value_t = 16)]
    pub tokens: usize,
    /// PCMM suite: input features.
    #[arg(long, default_value_t = 64)]
    pub d_in: usize,
    /// PCMM suite: output features.
    #[arg(long, default_value_t = 64)]
    pub d_out: usize,
    /// Rounds to alternate with the baseline (default 3 with a baseline, else 1).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Also measure a baseline library in the same run and report ratios
    /// (ours / baseline). `openfhe` runs tools/openfhe_baseline.py.
    #[arg(long, value_enum)]
    pub baseline: Option<Baseline>,
    /// Python interpreter that has the `openfhe` wheel (CPython 3.10 for openfhe 1.6.1).
    #[arg(long, env = "ENSI_OPENFHE_PYTHON", default_value = "python3")]
    pub openfhe_python: String,
    /// Block suite: model shape.
    #[arg(long, value_enum, default_value = "tiny")]
    pub shape: Shape,
    /// Block suite: tokens (default 16 for tiny, 128 for 1bitllm-large).
    #[arg(long)]
    pub seq: Option<usize>,
    /// Block suite: memory budget in GiB for one measurement; larger shapes are
    /// measured on the largest slice that fits, and the slice is reported.
    #[arg(long, default_value_t = 6.0)]
    pub max_mem_gib: f64,
    /// Block suite, 1bitllm-large: skip the whole block in the wide layout
    /// (about 13 minutes and 19 GB at n16-boot) and measure only the slices.
    #[arg(long)]
    pub skip_block: bool,
    /// E2e suite: prompt.
    #[arg(long, default_value = "The quick")]
    pub prompt: String,
    /// E2e suite: tokens to generate (one encrypted round each).
    #[arg(long, default_value_t = 2)]
    pub max_new_tokens: usize,
    /// E2e suite: longest sequence the keys serve (the column slot count; the demo's 16).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// E2e suite: hidden-state layout, `dense` or `columns` (default: as the
    /// server chooses, dense where it fits).
    #[arg(long)]
    pub layout: Option<String>,
}

impl BenchArgs {
    /// The preset, or the suite's default.
    pub fn preset(&self) -> &str {
        match (&self.preset, self.suite) {
            (Some(p), _) => p,
            (None, Suite::Bootstrap) => "n16-boot",
            (None, Suite::Block | Suite::E2e) => crate::demo::DEMO_PRESET,
            (None, _) => "n16-l20",
        }
    }

    /// Runs per operation, or the suite's default.
    pub fn runs(&self) -> usize {
        self.runs.unwrap_or(match self.suite {
            Suite::Block | Suite::E2e => 3,
            _ => 7,
        })
    }
}

/// Baseline libraries.
#[derive(Clone, Copy, ValueEnum)]
pub enum Baseline {
    /// OpenFHE's Python wheel, at the anchors' setting (N=2^16, depth 20, dnum 3).
    Openfhe,
}

#[derive(Serialize, serde::Deserialize, Clone)]
pub(crate) struct OpResult {
    pub(crate) median_ms: f64,
    pub(crate) runs: usize,
}

#[derive(Serialize, serde::Deserialize)]
struct BaselineReport {
    library: String,
    version: String,
    ops: BTreeMap<String, OpResult>,
}

/// Runs the OpenFHE baseline script and parses its JSON.
fn run_openfhe(
    args: &BenchArgs,
    params: &Parameters,
) -> std::result::Result<BaselineReport, String> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/openfhe_baseline.py");
    eprintln!(
        "running the OpenFHE baseline ({} {}) ...",
        args.openfhe_python,
        script.display()
    );
    let out = std::process::Command::new(&args.openfhe_python)
        .arg(&script)
        .args(["--runs", &args.runs().to_string()])
        .args(["--log-n", &params.log_n().to_string()])
        .args(["--depth", &params.max_level().to_string()])
        .args(["--dnum", &params.dnum().to_string()])
        .env("OMP_NUM_THREADS", args.threads.to_string())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args.openfhe_python))?;
    if !out.status.success() {
        return Err(format!(
            "OpenFHE baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad baseline output: {e}"))
}

#[derive(Serialize)]
struct CkksReport {
    suite: &'static str,
    preset: String,
    log_n: u32,
    q_limbs: usize,
    p_limbs: usize,
    dnum: usize,
    log_qp: f64,
    log_scale: f64,
    threads: usize,
    /// Rounds (baseline and ours alternating); figures are medians over rounds.
    rounds: usize,
    ops: BTreeMap<&'static str, OpResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<BaselineReport>,
    /// ours / baseline, per operation (below 1 is faster).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    ratios: BTreeMap<&'static str, f64>,
    /// The ratio of each round.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    ratio_rounds: BTreeMap<&'static str, Vec<f64>>,
}

pub fn run(args: BenchArgs) -> CliResult {
    let min_runs = match args.suite {
        Suite::Block | Suite::E2e => 1,
        _ => 5,
    };
    if args.runs() < min_runs {
        return Err(format!("--runs must be at least {min_runs}").into());
    }
    if let Suite::E2e = args.suite {
        // The server and the client run on their own threads (Tokio's), so the
        // thread count goes to rayon's global pool.
        return crate::bench_e2e::run(&args);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.max(1))
        .build()?;
    // Errors cross the pool as text (boxed errors are not Send).
    pool.install(|| match args.suite {
        Suite::Ckks => bench_ckks(&args).map_err(|e| e.to_string()),
        Suite::Bootstrap => bench_bootstrap(&args).map_err(|e| e.to_string()),
        Suite::Block => crate::bench_block::run(&args).map_err(|e| e.to_string()),
        Suite::E2e => unreachable!("run above, outside the pool"),
        Suite::Attention => crate::bench_attention::run(crate::bench_attention::AttentionArgs {
            preset: args.preset(),
            threads: args.threads,
            runs: args.runs(),
            tokens: args.tokens,
            json: args.json.as_ref(),
        })
        .map_err(|e| e.to_string()),
        Suite::Pcmm => crate::bench_pcmm::run(crate::bench_pcmm::PcmmArgs {
            preset: args.preset(),
            threads: args.threads,
            runs: args.runs(),
            tokens: args.tokens,
            d_in: args.d_in,
            d_out: args.d_out,
            json: args.json.as_ref(),
        })
        .map_err(|e| e.to_string()),
    })?;
    Ok(())
}

/// Median wall time in milliseconds of `runs` calls of `f` (after one warm-up).
pub(crate) fn time_ms(runs: usize, mut f: impl FnMut()) -> OpResult {
    f();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    OpResult {
        median_ms: t[runs / 2],
        runs,
    }
}

fn bench_ckks(args: &BenchArgs) -> CliResult {
    let params = ParametersLiteral::preset(args.preset())?.build()?;
    let rounds = args
        .rounds
        .unwrap_or(if args.baseline.is_some() { 3 } else { 1 })
        .max(1);
    eprintln!(
        "preset {}: {:?}, {} thread(s), {} runs per op, {} round(s)",
        args.preset(),
        params,
        args.threads,
        args.runs(),
        rounds
    );
    // With a baseline, the two libraries alternate round by round, so that the
    // machine's drift (it moves by 2x within minutes) hits both alike; each
    // ratio is taken within a round and the median over rounds is reported.
    let mut ours_rounds = Vec::new();
    let mut theirs_rounds = Vec::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        if let Some(Baseline::Openfhe) = args.baseline {
            theirs_rounds.push(run_openfhe(args, &params)?);
        }
        ours_rounds.push(measure_ckks(args, &params)?);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let ops: BTreeMap<&'static str, OpResult> = ours_rounds[0]
        .keys()
        .map(|&k| {
            let m = median(ours_rounds.iter().map(|r| r[k].median_ms).collect());
            (
                k,
                OpResult {
                    median_ms: m,
                    runs: args.runs() * rounds,
                },
            )
        })
        .collect();
    let baseline = theirs_rounds.first().map(|first| BaselineReport {
        library: first.library.clone(),
        version: first.version.clone(),
        ops: first
            .ops
            .keys()
            .map(|k| {
                let m = median(theirs_rounds.iter().map(|r| r.ops[k].median_ms).collect());
                (
                    k.clone(),
                    OpResult {
                        median_ms: m,
                        runs: args.runs() * rounds,
                    },
                )
            })
            .collect(),
    });
    let mut ratio_rounds: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for (ours, theirs) in ours_rounds.iter().zip(&theirs_rounds) {
        for (name, o) in ours {
            if let Some(t) = theirs.ops.get(*name) {
                ratio_rounds
                    .entry(name)
                    .or_default()
                    .push(o.median_ms / t.median_ms);
            }
        }
    }
    let scale = params.default_scale();
    let mut ratios = BTreeMap::new();
    if let Some(b) = &baseline {
        eprintln!(
            "\n{:<20} {:>12} {:>12} {:>8}  per round",
            "op", "ensi ms", "openfhe ms", "ratio"
        );
        for (name, ours) in &ops {
            if let (Some(theirs), Some(rs)) = (b.ops.get(*name), ratio_rounds.get(name)) {
                let r = median(rs.clone());
                let per: Vec<String> = rs.iter().map(|x| format!("{x:.3}")).collect();
                eprintln!(
                    "{name:<20} {:>12.2} {:>12.2} {:>8.3}  [{}]",
                    ours.median_ms,
                    theirs.median_ms,
                    r,
                    per.join(", ")
                );
                ratios.insert(*name, r);
            }
        }
    }
    let report = CkksReport {
        suite: "ckks",
        preset: args.preset().to_string(),
        log_n: params.log_n(),
        q_limbs: params.q_count(),
        p_limbs: params.p_count(),
        dnum: params.dnum(),
        log_qp: params.log_qp(),
        log_scale: scale.log2(),
        threads: args.threads,
        rounds,
        ops,
        baseline,
        ratios,
        ratio_rounds,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// One round of our own measurements (keys generated afresh).
fn measure_ckks(
    args: &BenchArgs,
    params: &Parameters,
) -> std::result::Result<BTreeMap<&'static str, OpResult>, Box<dyn std::error::Error>> {
    let params = params.clone();
    let runs = args.runs();
    let mut ops = BTreeMap::new();
    let mut record = |name: &'static str, r: OpResult| {
        eprintln!("  {name:<20} {:>10.2} ms", r.median_ms);
        ops.insert(name, r);
    };

    let ring = params.ring();
    let mut limb: Vec<u64> = (0..ring.n() as u64)
        .map(|i| i * 7919 % ring.q()[0].value())
        .collect();
    let plan = ring.plan(params.q_count(), 0);
    record(
        "ntt",
        time_ms(runs.max(50), || {
            plan.forward(std::hint::black_box(&mut limb))
        }),
    );

    let mut kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key();
    let pk = kg.gen_public_key(&sk);
    let relin = kg.gen_relin_key(&sk);
    record(
        "keygen_relin",
        time_ms(runs, || drop(kg.gen_relin_key(&sk))),
    );
    record(
        "keygen_rotation",
        time_ms(runs, || drop(kg.gen_rotation_key(&sk, 1))),
    );
    let mut keys = EvaluationKeys {
        relin: Some(relin),
        ..Default::default()
    };
    for step in 1..=8 {
        keys.insert_galois(kg.gen_rotation_key(&sk, step));
    }
    let eval = Evaluator::new(&params, Arc::new(keys));
    let encoder = Encoder::new(&params);
    let mut enc = Encryptor::with_public_key(&params, &pk);
    let dec = Decryptor::new(&sk);

    let slots = 1usize << params.log_slots();
    let values: Vec<Complex64> = (0..slots)
        .map(|i| Complex64::new((i as f64).sin(), (i as f64).cos()))
        .collect();
    let (level, scale) = (params.max_level(), params.default_scale());
    record(
        "encode",
        time_ms(runs, || {
            drop(
                encoder
                    .encode(&values, level, scale, params.log_slots())
                    .unwrap(),
            )
        }),
    );
    let pt = encoder.encode(&values, level, scale, params.log_slots())?;
    record("encrypt", time_ms(runs, || drop(enc.encrypt(&pt).unwrap())));
    let ct = enc.encrypt(&pt)?;
    let ct2 = enc.encrypt(&pt)?;
    record(
        "decrypt",
        time_ms(runs, || drop(encoder.decode(&dec.decrypt(&ct).unwrap()))),
    );
    record("add", time_ms(runs, || drop(eval.add(&ct, &ct2).unwrap())));
    record(
        "mul_plain_rescale",
        time_ms(runs, || {
            drop(eval.rescale(&eval.mul_plain(&ct, &pt).unwrap()).unwrap())
        }),
    );
    record(
        "mul_relin_rescale",
        time_ms(runs, || drop(eval.mul_rescale(&ct, &ct2).unwrap())),
    );
    let tensor = eval.tensor(&ct, &ct2)?;
    record(
        "relinearize",
        time_ms(runs, || drop(eval.relinearize(&tensor).unwrap())),
    );
    let prod = eval.relinearize(&tensor)?;
    record(
        "rescale",
        time_ms(runs, || drop(eval.rescale(&prod).unwrap())),
    );
    record(
        "rotate",
        time_ms(runs, || drop(eval.rotate(&ct, 1).unwrap())),
    );
    let steps: Vec<i64> = (1..=8).collect();
    record(
        "rotate_hoisted_8",
        time_ms(runs, || drop(eval.rotate_hoisted(&ct, &steps).unwrap())),
    );

    Ok(ops)
}

#[derive(Serialize)]
struct BootstrapReport {
    suite: &'static str,
    preset: String,
    threads: usize,
    slots: usize,
    log_qp: f64,
    keygen_s: f64,
    bootstrap_median_s: f64,
    runs: usize,
    precision_bits_mean: f64,
    precision_bits_min: f64,
    levels_after: usize,
    log_scale_after: f64,
    eval_key_bytes: usize,
    peak_rss_bytes: u64,
    ops: BTreeMap<String, OpResult>,
}

/// Peak resident set size of this process (VmHWM), 0 where unknown.
pub(crate) fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `ensi bench bootstrap`: full-slot bootstrapping at the preset (the suite's
/// default preset is `n16-boot`). Each
/// bootstrap takes tens of seconds at N = 2^16, so its median is over
/// `runs` runs (at least 5, like every suite), as the polynomial and the linear transform.
fn bench_bootstrap(args: &BenchArgs) -> CliResult {
    use ensi_ckks::circuits::bootstrap::{BootstrapConfig, BootstrapKeys, Bootstrapper};
    use ensi_ckks::circuits::{ChebyshevPoly, LinearTransform, PolynomialEvaluator};
    let preset = args.preset();
    let params = ParametersLiteral::preset(preset)?.build()?;
    let config = BootstrapConfig::for_params(&params);
    let log_slots = config.log_slots;
    let slots = 1usize << log_slots;
    eprintln!(
        "preset {preset}: {params:?}, {} thread(s), {slots} slots",
        args.threads
    );
    let lt_log = 12.min(log_slots);
    let lt_n = 1usize << lt_log;
    // A dense 2^12 x 2^12 matrix (sparse slots 2^12) and its rotations.
    let matrix: Vec<Vec<Complex64>> = (0..lt_n)
        .map(|i| {
            (0..lt_n)
                .map(|j| {
                    Complex64::new(
                        (((i * 31 + j * 17) % 97) as f64 / 97.0 - 0.5) / lt_n as f64,
                        0.0,
                    )
                })
                .collect()
        })
        .collect();
    let lt = LinearTransform::from_dense(&matrix)?;
    // At N >= 2^15 the transform's ~126 rotation keys (~100 MB each) and its
    // 4096 encoded diagonals do not fit beside the bootstrapping keys: there
    // it is measured afterwards, on its own (see below).
    let with_lt = params.log_n() < 15;
    let lt_steps_all = lt.rotation_steps();
    let lt_steps = if with_lt {
        lt_steps_all.clone()
    } else {
        Vec::new()
    };
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key();
    let t = Instant::now();
    let keys = BootstrapKeys::generate(&params, &config, &sk, &lt_steps)?;
    let keygen_s = t.elapsed().as_secs_f64();
    let eval_key_bytes = keys.byte_size();
    eprintln!(
        "keygen {keygen_s:.1} s, {} Galois keys, {:.2} GiB",
        keys.eval.galois.len(),
        eval_key_bytes as f64 / 2f64.powi(30)
    );
    let bt = Bootstrapper::new(&params, config, keys)?;
    let encoder = Encoder::new(&params);
    let mut enc = Encryptor::with_secret_key(&params, &sk);
    let dec = Decryptor::new(&sk);
    // Inputs uniform in [-1, 1] (deterministic), real.
    let mut state = 0x9e3779b97f4a7c15u64;
    let values: Vec<Complex64> = (0..slots)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            Complex64::new((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0, 0.0)
        })
        .collect();
    let ct = enc.encrypt(&encoder.encode(&values, 0, params.default_scale(), log_slots)?)?;
    let boot_runs = args.runs();
    let mut times = Vec::new();
    let mut out = None;
    for r in 0..boot_runs {
        let t = Instant::now();
        out = Some(bt.bootstrap(&ct)?);
        times.push(t.elapsed().as_secs_f64());
        eprintln!("bootstrap {}/{boot_runs}: {:.2} s", r + 1, times[r]);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let out = out.ok_or("no bootstrap run")?;
    let got = encoder.decode(&dec.decrypt(&out)?);
    let bits: Vec<f64> = got
        .iter()
        .zip(&values)
        .map(|(a, b)| -(a - b).norm().max(1e-300).log2())
        .collect();
    let peak_rss = peak_rss_bytes();
    let precision_bits_mean = bits.iter().sum::<f64>() / bits.len() as f64;
    let precision_bits_min = bits.iter().cloned().fold(f64::INFINITY, f64::min);
    eprintln!(
        "precision mean {precision_bits_mean:.2} min {precision_bits_min:.2} bits, level {} at 2^{:.2}",
        out.level(),
        out.scale().log2()
    );

    let eval = bt.evaluator();
    let mut ops = BTreeMap::new();
    // One Chebyshev polynomial of degree 63 (depth 6) on the refreshed ciphertext.
    let poly = ChebyshevPoly::interpolate(|x| (x * 3.0).sin(), -1.0, 1.0, 63)?;
    let pe = PolynomialEvaluator::new(eval);
    let mut err = None;
    ops.insert(
        "chebyshev_deg63".to_string(),
        time_ms(args.runs(), || {
            if let Err(e) = pe.evaluate(&out, &poly) {
                err = Some(e);
            }
        }),
    );
    // One dense linear transform of dimension 2^12 on 2^12 slots.
    if with_lt {
        let small = enc.encrypt(&encoder.encode(
            &values[..lt_n],
            bt.output_level(),
            params.default_scale(),
            lt_log,
        )?)?;
        let encoded = lt.encode(
            &encoder,
            small.level(),
            small.scale(),
            params.default_scale(),
        )?;
        ops.insert(
            format!("lintrans_dense_{lt_n}"),
            time_ms(args.runs(), || {
                if let Err(e) = encoded.evaluate(eval, &small) {
                    err = Some(e);
                }
            }),
        );
    }
    if let Some(e) = err {
        return Err(e.into());
    }
    if !with_lt {
        // Measured after the bootstrapper is gone (its peak memory is already
        // recorded above), with rotation keys truncated to the refreshed
        // level, and its 4096 diagonals encoded inside the timed call one
        // giant step at a time (encoded at once they would take 20 GB).
        let level = bt.output_level();
        let small = enc.encrypt(&encoder.encode(
            &values[..lt_n],
            level,
            params.default_scale(),
            lt_log,
        )?)?;
        drop(bt);
        let t = Instant::now();
        let mut lt_keys = EvaluationKeys::default();
        for &step in &lt_steps_all {
            let mut key = kg.gen_rotation_key(&sk, step);
            key.truncate_to_level(&params, level);
            lt_keys.insert_galois(key);
        }
        eprintln!(
            "lintrans: {} rotation keys at level {level} in {:.1} s",
            lt_keys.galois.len(),
            t.elapsed().as_secs_f64()
        );
        let lt_eval = Evaluator::new(&params, std::sync::Arc::new(lt_keys));
        ops.insert(
            format!("lintrans_dense_{lt_n}_encoding_included"),
            time_ms(args.runs(), || {
                if let Err(e) = lt.evaluate(&lt_eval, &encoder, &small, params.default_scale()) {
                    err = Some(e);
                }
            }),
        );
        if let Some(e) = err {
            return Err(e.into());
        }
    }
    for (name, r) in &ops {
        eprintln!("{name:<24} {:>10.1} ms", r.median_ms);
    }
    let report = BootstrapReport {
        suite: "bootstrap",
        preset: preset.to_string(),
        threads: args.threads,
        slots,
        log_qp: params.log_qp(),
        keygen_s,
        bootstrap_median_s: times[times.len() / 2],
        runs: boot_runs,
        precision_bits_mean,
        precision_bits_min,
        levels_after: out.level(),
        log_scale_after: out.scale().log2(),
        eval_key_bytes,
        peak_rss_bytes: peak_rss,
        ops,
    };
    eprintln!(
        "peak RSS (keygen + bootstrap) {:.2} GiB",
        report.peak_rss_bytes as f64 / 2f64.powi(30)
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
