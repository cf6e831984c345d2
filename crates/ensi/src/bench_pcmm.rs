//! `ensi bench pcmm`: ENSI's multiplication-free ternary PCMM against the
//! conventional PCMM that multiplies by plaintext weights, in ENSI's column
//! layout, same shape, same level, same run.

use crate::bench::{time_ms, OpResult};
use crate::CliResult;
use ensi_ckks::{Encoder, Encryptor, EvaluationKeys, Evaluator, KeyGenerator, ParametersLiteral};
use ensi_infer::layout::ColumnLayout;
use ensi_infer::pcmm::{generic_pcmm_columns, ternary_pcmm_columns};
use ensi_model::{Matrix, TernaryMatrix};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Shape and parameters of the PCMM benchmark.
pub struct PcmmArgs<'a> {
    pub preset: &'a str,
    pub threads: usize,
    pub runs: usize,
    pub tokens: usize,
    pub d_in: usize,
    pub d_out: usize,
    pub json: Option<&'a PathBuf>,
}

#[derive(Serialize)]
struct PcmmReport {
    suite: &'static str,
    preset: String,
    threads: usize,
    layout: &'static str,
    tokens: usize,
    d_in: usize,
    d_out: usize,
    level: usize,
    ops: BTreeMap<&'static str, OpResult>,
    ratios: BTreeMap<&'static str, f64>,
}

pub fn run(a: PcmmArgs) -> CliResult {
    let params = ParametersLiteral::preset(a.preset)?.build()?;
    eprintln!(
        "pcmm: preset {}, column layout, {} tokens, {} -> {} features, {} thread(s), {} runs",
        a.preset, a.tokens, a.d_in, a.d_out, a.threads, a.runs
    );
    let sk = KeyGenerator::new(&params).gen_secret_key();
    let encoder = Encoder::new(&params);
    let mut enc = Encryptor::with_secret_key(&params, &sk);
    let eval = Evaluator::new(&params, Arc::new(EvaluationKeys::default()));
    let mut s = 1u64;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    };
    let x = Matrix::from_vec(
        a.tokens,
        a.d_in,
        (0..a.tokens * a.d_in)
            .map(|_| (next() % 2001) as f64 / 1000.0 - 1.0)
            .collect(),
    );
    let values: Vec<i8> = (0..a.d_out * a.d_in)
        .map(|_| (next() % 3) as i8 - 1)
        .collect();
    let w = TernaryMatrix::new("w", a.d_out, a.d_in, values.clone(), 0.05)?;
    let real: Vec<f64> = values.iter().map(|&v| v as f64 * w.scale()).collect();
    let level = params.max_level();
    let cols = ColumnLayout::new(a.tokens, a.d_in).encrypt(
        &x,
        &encoder,
        &mut enc,
        level,
        params.default_scale(),
    )?;

    let mut ops = BTreeMap::new();
    let ternary = time_ms(a.runs, || {
        drop(ternary_pcmm_columns(&eval, &cols, &w).unwrap())
    });
    eprintln!(
        "  ternary (additions only)   {:>10.1} ms",
        ternary.median_ms
    );
    let generic = time_ms(a.runs, || {
        drop(generic_pcmm_columns(&eval, &cols, &real, a.d_out).unwrap())
    });
    eprintln!(
        "  generic (plaintext mults)  {:>10.1} ms",
        generic.median_ms
    );
    let ratio = generic.median_ms / ternary.median_ms;
    eprintln!("  pcmm_generic_over_ternary  {ratio:>10.2}");
    ops.insert("ternary_pcmm", ternary);
    ops.insert("generic_pcmm", generic);
    let report = PcmmReport {
        suite: "pcmm",
        preset: a.preset.to_string(),
        threads: a.threads,
        layout: "column",
        tokens: a.tokens,
        d_in: a.d_in,
        d_out: a.d_out,
        level,
        ops,
        ratios: BTreeMap::from([("pcmm_generic_over_ternary", ratio)]),
    };
    if let Some(path) = a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
