//! `ensi bench attention`: the conventional HE softmax against ENSI's sigmoid
//! attention on the same encrypted scores, same run: the softmax in NEXUS's
//! layout (one row per ciphertext, row sums by rotations: `softmax_over_sigmoid`)
//! and in ENSI's column layout (row sums by additions:
//! `softmax_columns_over_sigmoid`). All end at the same level, each starting
//! from the lowest level its depth allows (as `ensi bench block` measures them).

use crate::bench::{time_ms, OpResult};
use crate::CliResult;
use ensi_ckks::circuits::ChebyshevPoly;
use ensi_ckks::{
    Ciphertext, Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, ParametersLiteral,
};
use ensi_infer::attention::{
    sigmoid_attention, softmax_attention, softmax_rows, softmax_rows_rotations, SoftmaxApprox,
};
use ensi_infer::layout::ColumnLayout;
use ensi_model::Matrix;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Parameters of the attention benchmark.
pub struct AttentionArgs<'a> {
    pub preset: &'a str,
    pub threads: usize,
    pub runs: usize,
    pub tokens: usize,
    pub json: Option<&'a PathBuf>,
}

#[derive(Serialize)]
struct Report {
    suite: &'static str,
    preset: String,
    threads: usize,
    layout: &'static str,
    tokens: usize,
    score_interval: [f64; 2],
    sigmoid_degree: usize,
    softmax: String,
    /// Input level of each operation (all end at the same level).
    input_levels: BTreeMap<&'static str, usize>,
    levels: BTreeMap<&'static str, usize>,
    precision_bits: BTreeMap<&'static str, f64>,
    ops: BTreeMap<&'static str, OpResult>,
    ratios: BTreeMap<&'static str, f64>,
}

pub fn run(a: AttentionArgs) -> CliResult {
    let params = ParametersLiteral::preset(a.preset)?.build()?;
    let s = a.tokens;
    if !s.is_power_of_two() || s < 2 {
        return Err(format!("--tokens {s}: the row layout needs a power of two >= 2").into());
    }
    eprintln!(
        "attention: preset {}, {s} x {s} scores, {} thread(s), {} runs",
        a.preset, a.threads, a.runs
    );
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key();
    let log_row = s.trailing_zeros();
    let eval = Evaluator::new(
        &params,
        Arc::new(kg.gen_evaluation_keys(&sk, &softmax_rows_rotations(log_row), false)),
    );
    let encoder = Encoder::new(&params);
    let mut enc = Encryptor::with_secret_key(&params, &sk);
    let dec = Decryptor::new(&sk);
    let (lo, hi) = (-4.0, 4.0);
    let mut seed = 7u64;
    let scores = Matrix::from_vec(
        s,
        s,
        (0..s * s)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                lo + (hi - lo) * ((seed >> 11) as f64 / (1u64 << 53) as f64)
            })
            .collect(),
    );
    // ENSI: sigma(x + b), b = -ln(s), one Chebyshev polynomial (degree 15,
    // depth 4, as the model's approximation spec; ENSI's code uses 16).
    let b = -(s as f64).ln();
    let degree = 15;
    let poly = ChebyshevPoly::interpolate(|x| 1.0 / (1.0 + (-(x + b)).exp()), lo, hi, degree)?;
    // The conventional way: (1 + x/2^6)^(2^6), row sums, Newton inverse.
    let approx = SoftmaxApprox {
        shift: hi,
        squarings: 6,
        inverse_start: 1.0 / s as f64,
        newton_steps: 5,
    };
    let top = params.max_level();
    let out_level = top
        .checked_sub(approx.depth())
        .ok_or("the chain is too short for the softmax")?;
    let sig_level = out_level + poly.depth();
    let layout = ColumnLayout::new(s, s);
    let scale = params.default_scale();
    let cols = layout.encrypt(&scores, &encoder, &mut enc, top, scale)?;
    let sig_cols = layout.encrypt(&scores, &encoder, &mut enc, sig_level, scale)?;
    let rows: Vec<Ciphertext> = (0..s)
        .map(|i| enc.encrypt(&encoder.encode_real(scores.row(i), top, scale, log_row)?))
        .collect::<Result<_, _>>()?;

    let sig = sigmoid_attention(&eval, &sig_cols, &poly)?;
    let soft = softmax_attention(&eval, &cols, &approx)?;
    let soft_rows = softmax_rows(&eval, &rows, &approx)?;
    let (sig_m, soft_m) = (
        layout.decrypt(&sig, &encoder, &dec)?,
        layout.decrypt(&soft, &encoder, &dec)?,
    );
    let (mut e_sig, mut e_soft, mut e_rows) = (0f64, 0f64, 0f64);
    for (i, row_ct) in soft_rows.iter().enumerate() {
        let want = approx.eval_plain(scores.row(i));
        let got_row = encoder.decode_real(&dec.decrypt(row_ct)?);
        #[allow(clippy::needless_range_loop)] // j indexes the matrix and the row alike
        for j in 0..s {
            e_sig = e_sig.max((sig_m.get(i, j) - poly.eval_plain(scores.get(i, j))).abs());
            e_soft = e_soft.max((soft_m.get(i, j) - want[j]).abs());
            e_rows = e_rows.max((got_row[j] - want[j]).abs());
        }
    }

    let t_sig = time_ms(a.runs, || {
        drop(sigmoid_attention(&eval, &sig_cols, &poly).unwrap())
    });
    eprintln!(
        "  sigmoid (degree {degree}, levels {sig_level} -> {out_level})          {:>10.1} ms",
        t_sig.median_ms
    );
    let t_soft = time_ms(a.runs, || {
        drop(softmax_attention(&eval, &cols, &approx).unwrap())
    });
    eprintln!(
        "  softmax, columns (levels {top} -> {out_level})  {:>10.1} ms",
        t_soft.median_ms
    );
    let t_rows = time_ms(a.runs, || {
        drop(softmax_rows(&eval, &rows, &approx).unwrap())
    });
    eprintln!(
        "  softmax, rows (levels {top} -> {out_level})     {:>10.1} ms",
        t_rows.median_ms
    );
    let ratio = t_rows.median_ms / t_sig.median_ms;
    let ratio_cols = t_soft.median_ms / t_sig.median_ms;
    eprintln!("  softmax_over_sigmoid          {ratio:>10.2}");
    eprintln!("  softmax_columns_over_sigmoid  {ratio_cols:>10.2}");
    let report = Report {
        suite: "attention",
        preset: a.preset.to_string(),
        threads: a.threads,
        layout: "sigmoid and softmax_columns: column; softmax_rows: one row per ciphertext",
        tokens: s,
        score_interval: [lo, hi],
        sigmoid_degree: degree,
        softmax: format!(
            "exp by (1+x/2^{})^(2^{}), row sums (rows: {log_row} rotations; columns: additions), {} \
             Newton steps",
            approx.squarings, approx.squarings, approx.newton_steps
        ),
        input_levels: BTreeMap::from([
            ("sigmoid", sig_level),
            ("softmax_columns", top),
            ("softmax_rows", top),
        ]),
        levels: BTreeMap::from([
            ("sigmoid", sig_level - sig[0].level()),
            ("softmax_columns", top - soft[0].level()),
            ("softmax_rows", top - soft_rows[0].level()),
        ]),
        precision_bits: BTreeMap::from([
            ("sigmoid", -e_sig.log2()),
            ("softmax_columns", -e_soft.log2()),
            ("softmax_rows", -e_rows.log2()),
        ]),
        ops: BTreeMap::from([
            ("sigmoid_attention", t_sig),
            ("softmax_columns", t_soft),
            ("softmax_rows", t_rows),
        ]),
        ratios: BTreeMap::from([
            ("softmax_over_sigmoid", ratio),
            ("softmax_columns_over_sigmoid", ratio_cols),
        ]),
    };
    if let Some(path) = a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
