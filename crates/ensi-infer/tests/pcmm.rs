//! The multiplication-free ternary PCMM in ENSI's column layout against the
//! plaintext product (insecure-n10, small shapes).

use ensi_ckks::*;
use ensi_infer::layout::ColumnLayout;
use ensi_infer::pcmm::ternary_pcmm_columns;
use ensi_model::{Matrix, TernaryMatrix};
use std::sync::Arc;

#[test]
fn ternary_pcmm_matches_plaintext() {
    let params = ParametersLiteral::preset("insecure-n10")
        .unwrap()
        .build()
        .unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key();
    let encoder = Encoder::new(&params);
    let mut enc = Encryptor::with_secret_key(&params, &sk);
    let dec = Decryptor::new(&sk);
    let eval = Evaluator::new(&params, Arc::new(EvaluationKeys::default()));

    let (tokens, d_in, d_out) = (5, 12, 7);
    let mut s = 17u64;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    };
    let x = Matrix::from_vec(
        tokens,
        d_in,
        (0..tokens * d_in)
            .map(|_| (next() % 2001) as f64 / 1000.0 - 1.0)
            .collect(),
    );
    let mut wv: Vec<i8> = (0..d_out * d_in).map(|_| (next() % 3) as i8 - 1).collect();
    wv[..d_in].iter_mut().for_each(|v| *v = 0); // an all-zero row
    wv[d_in] = -1; // a row that starts with -1
    let w = TernaryMatrix::new("w", d_out, d_in, wv.clone(), 0.37).unwrap();

    let layout = ColumnLayout::new(tokens, d_in);
    let cols = layout
        .encrypt(
            &x,
            &encoder,
            &mut enc,
            params.max_level(),
            params.default_scale(),
        )
        .unwrap();
    let out = ternary_pcmm_columns(&eval, &cols, &w).unwrap();
    assert!(
        out.iter().all(|c| c.level() == params.max_level()),
        "no level consumed"
    );
    let y = ColumnLayout::new(tokens, d_out)
        .decrypt(&out, &encoder, &dec)
        .unwrap();
    let mut max_err = 0f64;
    for t in 0..tokens {
        for r in 0..d_out {
            let want: f64 = (0..d_in)
                .map(|c| wv[r * d_in + c] as f64 * x.get(t, c))
                .sum();
            max_err = max_err.max((y.get(t, r) - want).abs());
        }
    }
    let bits = -max_err.log2();
    eprintln!("ternary PCMM: max error {max_err:.2e} ({bits:.1} bits)");
    assert!(bits >= 22.0, "precision {bits:.1} bits");
    // The conventional PCMM (plaintext weights, one level) computes the same product times the scale.
    let real: Vec<f64> = wv.iter().map(|&v| v as f64 * w.scale()).collect();
    let out = ensi_infer::pcmm::generic_pcmm_columns(&eval, &cols, &real, d_out).unwrap();
    assert!(
        out.iter().all(|c| c.level() == params.max_level() - 1),
        "one level consumed"
    );
    let y = ColumnLayout::new(tokens, d_out)
        .decrypt(&out, &encoder, &dec)
        .unwrap();
    let mut max_err = 0f64;
    for t in 0..tokens {
        for r in 0..d_out {
            let want: f64 = (0..d_in).map(|c| real[r * d_in + c] * x.get(t, c)).sum();
            max_err = max_err.max((y.get(t, r) - want).abs());
        }
    }
    eprintln!(
        "generic PCMM: max error {max_err:.2e} ({:.1} bits)",
        -max_err.log2()
    );
    assert!(-max_err.log2() >= 20.0);
    // Non-ternary weights are refused.
    let bad = TernaryMatrix::new("w", 1, d_in, vec![2; d_in], 1.0);
    if let Ok(bad) = bad {
        assert!(ternary_pcmm_columns(&eval, &cols, &bad).is_err());
    }
}
