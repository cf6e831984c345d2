//! Sigmoid attention and the conventional HE softmax against their plaintext
//! computations (insecure N = 2^12 chain with 16 levels; the column layout,
//! and the softmax also in NEXUS's row layout).

use ensi_ckks::circuits::ChebyshevPoly;
use ensi_ckks::*;
use ensi_infer::attention::{
    sigmoid_attention, softmax_attention, softmax_rows, softmax_rows_rotations, SoftmaxApprox,
};
use ensi_infer::layout::ColumnLayout;
use ensi_model::Matrix;
use std::sync::Arc;

#[test]
fn sigmoid_and_softmax_match_plaintext() {
    let lit = ParametersLiteral {
        name: "insecure-n12-l16".into(),
        log_n: 12,
        log_scale: 40,
        q_bits: std::iter::once(50)
            .chain(std::iter::repeat_n(40, 16))
            .collect(),
        p_bits: vec![50; 4],
        dnum: 4,
        secret: SecretDistribution::UniformTernary,
        log_slots: 11,
        insecure: true,
    };
    let params = lit.build().unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key();
    let s: usize = 8; // queries (slots) and keys (columns)
    let log_row = s.trailing_zeros();
    let keys = kg.gen_evaluation_keys(&sk, &softmax_rows_rotations(log_row), false);
    let eval = Evaluator::new(&params, Arc::new(keys));
    let encoder = Encoder::new(&params);
    let mut enc = Encryptor::with_secret_key(&params, &sk);
    let dec = Decryptor::new(&sk);

    let mut seed = 3u64;
    let scores = Matrix::from_vec(
        s,
        s,
        (0..s * s)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 11) as f64 / (1u64 << 53) as f64) * 8.0 - 4.0
            })
            .collect(),
    );
    let layout = ColumnLayout::new(s, s);
    let cols = layout
        .encrypt(
            &scores,
            &encoder,
            &mut enc,
            params.max_level(),
            params.default_scale(),
        )
        .unwrap();

    let b = -(s as f64).ln();
    let poly =
        ChebyshevPoly::interpolate(|x| 1.0 / (1.0 + (-(x + b)).exp()), -4.0, 4.0, 16).unwrap();
    let out = layout
        .decrypt(
            &sigmoid_attention(&eval, &cols, &poly).unwrap(),
            &encoder,
            &dec,
        )
        .unwrap();
    let mut err = 0f64;
    for i in 0..s {
        #[allow(clippy::needless_range_loop)] // j indexes the matrix and the row alike
        for j in 0..s {
            err = err.max((out.get(i, j) - poly.eval_plain(scores.get(i, j))).abs());
        }
    }
    eprintln!(
        "sigmoid attention: {:.1} bits against its polynomial",
        -err.log2()
    );
    assert!(-err.log2() >= 18.0);

    let approx = SoftmaxApprox {
        shift: 4.0,
        squarings: 4,
        inverse_start: 1.0 / s as f64,
        newton_steps: 5,
    };
    let soft = softmax_attention(&eval, &cols, &approx).unwrap();
    assert_eq!(soft[0].level(), params.max_level() - approx.depth());
    let out = layout.decrypt(&soft, &encoder, &dec).unwrap();
    let mut err = 0f64;
    for i in 0..s {
        let want = approx.eval_plain(scores.row(i));
        for (j, w) in want.iter().enumerate() {
            err = err.max((out.get(i, j) - w).abs());
        }
    }
    eprintln!(
        "HE softmax: {:.1} bits against its plaintext computation",
        -err.log2()
    );
    assert!(-err.log2() >= 14.0);

    // The same softmax with one row per ciphertext (row sums by rotations).
    let rows: Vec<Ciphertext> = (0..s)
        .map(|i| {
            let pt = encoder
                .encode_real(
                    scores.row(i),
                    params.max_level(),
                    params.default_scale(),
                    log_row,
                )
                .unwrap();
            enc.encrypt(&pt).unwrap()
        })
        .collect();
    let soft = softmax_rows(&eval, &rows, &approx).unwrap();
    assert_eq!(soft[0].level(), params.max_level() - approx.depth());
    let mut err = 0f64;
    for (i, ct) in soft.iter().enumerate() {
        let got = encoder.decode_real(&dec.decrypt(ct).unwrap());
        let want = approx.eval_plain(scores.row(i));
        for (g, w) in got.iter().zip(&want) {
            err = err.max((g - w).abs());
        }
    }
    eprintln!(
        "HE softmax, row layout: {:.1} bits against its plaintext computation",
        -err.log2()
    );
    assert!(-err.log2() >= 14.0);
}
