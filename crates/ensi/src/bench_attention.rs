//! `ensi bench attention`: the conventional HE softmax against ENSI's sigmoid
//! attention on the same encrypted scores (column layout), same run.

use crate::bench::{time_ms, OpResult};
use crate::CliResult;
use ensi_ckks::circuits::ChebyshevPoly;
use ensi_ckks::{Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, ParametersLiteral};
use ensi_infer::attention::{sigmoid_attention, softmax_attention, SoftmaxApprox};
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
    levels: BTreeMap<&'static str, usize>,
    precision_bits: BTreeMap<&'static str, f64>,
    ops: BTreeMap<&'static str, OpResult>,
    ratios: BTreeMap<&'static str, f64>,
}

pub fn run(a: AttentionArgs) -> CliResult {
    let params = ParametersLiteral::preset(a.preset)?.build()?;
    let s = a.tokens;
    eprintln!(
        "attention: preset {}, column layout, {s} x {s} scores, {} thread(s), {} runs",
        a.preset, a.threads, a.runs
    );
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key();
    let eval = Evaluator::new(&params, Arc::new(kg.gen_evaluation_keys(&sk, &[], false)));
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
    let layout = ColumnLayout::new(s, s);
    let cols = layout.encrypt(
        &scores,
        &encoder,
        &mut enc,
        params.max_level(),
        params.default_scale(),
    )?;

    // ENSI: sigma(x + b), b = -ln(s), one degree-16 Chebyshev polynomial.
    let b = -(s as f64).ln();
    let degree = 16;
    let poly = ChebyshevPoly::interpolate(|x| 1.0 / (1.0 + (-(x + b)).exp()), lo, hi, degree)?;
    // The conventional way: (1 + x/2^6)^(2^6), row sums, Newton inverse.
    let approx = SoftmaxApprox {
        shift: hi,
        squarings: 6,
        inverse_start: 1.0 / s as f64,
        newton_steps: 5,
    };

    let sig = sigmoid_attention(&eval, &cols, &poly)?;
    let soft = softmax_attention(&eval, &cols, &approx)?;
    let (sig_m, soft_m) = (
        layout.decrypt(&sig, &encoder, &dec)?,
        layout.decrypt(&soft, &encoder, &dec)?,
    );
    let (mut e_sig, mut e_soft) = (0f64, 0f64);
    for i in 0..s {
        let want = approx.eval_plain(scores.row(i));
        #[allow(clippy::needless_range_loop)] // j indexes the matrix and the row alike
        for j in 0..s {
            e_sig = e_sig.max((sig_m.get(i, j) - poly.eval_plain(scores.get(i, j))).abs());
            e_soft = e_soft.max((soft_m.get(i, j) - want[j]).abs());
        }
    }

    let t_sig = time_ms(a.runs, || {
        drop(sigmoid_attention(&eval, &cols, &poly).unwrap())
    });
    eprintln!(
        "  sigmoid (degree {degree})          {:>10.1} ms",
        t_sig.median_ms
    );
    let t_soft = time_ms(a.runs, || {
        drop(softmax_attention(&eval, &cols, &approx).unwrap())
    });
    eprintln!(
        "  softmax (exp r=6, Newton x5)  {:>10.1} ms",
        t_soft.median_ms
    );
    let ratio = t_soft.median_ms / t_sig.median_ms;
    eprintln!("  softmax_over_sigmoid          {ratio:>10.2}");
    let report = Report {
        suite: "attention",
        preset: a.preset.to_string(),
        threads: a.threads,
        layout: "column",
        tokens: s,
        score_interval: [lo, hi],
        sigmoid_degree: degree,
        softmax: format!(
            "exp by (1+x/2^{})^(2^{}), row sums, {} Newton steps",
            approx.squarings, approx.squarings, approx.newton_steps
        ),
        levels: BTreeMap::from([
            ("sigmoid", params.max_level() - sig[0].level()),
            ("softmax", params.max_level() - soft[0].level()),
        ]),
        precision_bits: BTreeMap::from([("sigmoid", -e_sig.log2()), ("softmax", -e_soft.log2())]),
        ops: BTreeMap::from([("sigmoid_attention", t_sig), ("softmax_attention", t_soft)]),
        ratios: BTreeMap::from([("softmax_over_sigmoid", ratio)]),
    };
    if let Some(path) = a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
