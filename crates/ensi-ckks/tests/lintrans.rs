//! Homomorphic linear transforms end to end: y = M x for a random dense matrix
//! and a banded one, against the plaintext product, with the precision in bits,
//! the level and scale of the output, and the rotation keys: an evaluator
//! holding exactly [`LinearTransform::rotation_steps`] succeeds, and one
//! missing any single step of that list fails (so the list is exactly what is used).
//! The prepared form ([`LinearTransform::prepare`], encoded at once or giant
//! step by giant step) and the streaming [`LinearTransform::evaluate`] give
//! the same ciphertext.
//! insecure-n12 with sparse slots (2^4 and 2^6).

mod common;
use common::{precision_bits, random_values};
use ensi_ckks::circuits::LinearTransform;
use ensi_ckks::*;
use std::sync::Arc;

struct Setup {
    params: Parameters,
    encoder: Encoder,
    sk: SecretKey,
    enc: Encryptor,
    dec: Decryptor,
}

fn setup() -> Setup {
    let params = ParametersLiteral::preset("insecure-n12")
        .unwrap()
        .build()
        .unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key();
    let pk = kg.gen_public_key(&sk);
    Setup {
        encoder: Encoder::new(&params),
        enc: Encryptor::with_public_key(&params, &pk),
        dec: Decryptor::new(&sk),
        sk,
        params,
    }
}

/// An evaluator holding a relinearization key and Galois keys for exactly `steps`.
fn evaluator(s: &Setup, steps: &[i64]) -> Evaluator {
    let keys = KeyGenerator::new(&s.params).gen_evaluation_keys(&s.sk, steps, false);
    assert_eq!(
        keys.galois.len(),
        steps.len(),
        "distinct steps give distinct keys"
    );
    Evaluator::new(&s.params, Arc::new(keys))
}

fn dense_product(m: &[Vec<Complex64>], x: &[Complex64]) -> Vec<Complex64> {
    m.iter()
        .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
        .collect()
}

/// Encrypts x (sparse slots) at `level`, applies `lt` to `output_scale`, and checks the bookkeeping.
fn apply(
    s: &mut Setup,
    lt: &LinearTransform,
    x: &[Complex64],
    level: usize,
    output_scale: f64,
) -> Vec<Complex64> {
    let steps = lt.rotation_steps();
    let eval = evaluator(s, &steps);
    let pt = s
        .encoder
        .encode(x, level, s.params.default_scale(), lt.log_slots())
        .unwrap();
    let ct = s.enc.encrypt(&pt).unwrap();
    let encoded = lt
        .encode(&s.encoder, level, ct.scale(), output_scale)
        .unwrap();
    assert_eq!(encoded.rotation_steps(), steps);
    let out = encoded.evaluate(&eval, &ct).unwrap();
    // The prepared path (inverse FFT once, encoded per call) gives the same plaintexts.
    let prepared_lt = lt.prepare(&s.encoder).unwrap();
    let prepared = prepared_lt
        .encode(&s.encoder, level, ct.scale(), output_scale)
        .unwrap();
    assert_eq!(prepared.evaluate(&eval, &ct).unwrap(), out);
    // And the prepared path encoded giant step by giant step (bootstrapping's).
    let (streamed, _) = prepared_lt
        .evaluate_streaming(&eval, &s.encoder, &ct, output_scale)
        .unwrap();
    assert_eq!(streamed, out);
    // So does the streaming path (one giant step's diagonals encoded at a time).
    assert_eq!(
        lt.evaluate(&eval, &s.encoder, &ct, output_scale).unwrap(),
        out
    );
    assert_eq!(out.level(), level - 1, "one level");
    assert!(
        ((out.scale() / output_scale) - 1.0).abs() < 1e-9,
        "output at the requested scale"
    );
    // Every listed step is needed: without any one of them the evaluation fails.
    for skip in 0..steps.len() {
        let fewer: Vec<i64> = steps
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != skip)
            .map(|(_, &k)| k)
            .collect();
        let err = encoded.evaluate(&evaluator(s, &fewer), &ct).unwrap_err();
        assert!(
            matches!(err, CkksError::MissingGaloisKey(_)),
            "step {} unused? {err}",
            steps[skip]
        );
    }
    s.encoder.decode(&s.dec.decrypt(&out).unwrap())
}

#[test]
fn random_dense_matrix() {
    let mut s = setup();
    let n = 16;
    let m: Vec<Vec<Complex64>> = (0..n).map(|i| random_values(n, 100 + i as u64)).collect();
    let x = random_values(n, 7);
    let lt = LinearTransform::from_dense(&m).unwrap();
    assert_eq!(lt.diagonals().len(), n);
    assert_eq!(lt.baby_step(), 4);
    assert_eq!(lt.rotation_steps(), vec![1, 2, 3, 4, 8, 12]);
    let want = dense_product(&m, &x);
    let (top, scale) = (s.params.max_level(), s.params.default_scale());
    let got = apply(&mut s, &lt, &x, top, scale);
    let p = precision_bits(&got, &want);
    eprintln!("dense 16 x 16 (n1 = 4, 6 rotations): {p:.1} bits");
    assert!(p >= 20.0, "{p:.1} bits");
    // Below the top level and onto another scale.
    let got = apply(&mut s, &lt, &x, 2, 2f64.powi(36));
    let p = precision_bits(&got, &want);
    eprintln!("dense 16 x 16 at level 2 to scale 2^36: {p:.1} bits");
    assert!(p >= 20.0, "{p:.1} bits");
}

#[test]
fn banded_matrix() {
    let mut s = setup();
    let n = 64;
    let diag = |k: i64, seed: u64| (k, random_values(n, seed));
    // Tridiagonal plus one far diagonal, with -1 given as a negative index.
    let lt = LinearTransform::from_diagonals(6, [diag(0, 1), diag(1, 2), diag(-1, 3), diag(20, 4)])
        .unwrap();
    assert_eq!(
        lt.diagonals().keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 20, 63]
    );
    let steps = lt.rotation_steps();
    eprintln!("banded: n1 = {}, steps {steps:?}", lt.baby_step());
    assert!(steps.len() <= 3, "{steps:?}");
    let mut m = vec![vec![Complex64::new(0.0, 0.0); n]; n];
    for (&k, d) in lt.diagonals() {
        for i in 0..n {
            m[i][(i + k) % n] += d[i];
        }
    }
    let x = random_values(n, 9);
    let want = dense_product(&m, &x);
    assert!(precision_bits(&lt.apply_plain(&x), &want) > 45.0);
    let (top, scale) = (s.params.max_level(), s.params.default_scale());
    let got = apply(&mut s, &lt, &x, top, scale);
    let p = precision_bits(&got, &want);
    eprintln!("banded 64 x 64 (4 diagonals): {p:.1} bits");
    assert!(p >= 20.0, "{p:.1} bits");
}

#[test]
fn mismatched_inputs_are_refused() {
    let mut s = setup();
    let lt =
        LinearTransform::from_diagonals(4, [(0, random_values(16, 1)), (1, random_values(16, 2))])
            .unwrap();
    let eval = evaluator(&s, &lt.rotation_steps());
    let pt = s
        .encoder
        .encode(&random_values(16, 3), 3, s.params.default_scale(), 4)
        .unwrap();
    let ct = s.enc.encrypt(&pt).unwrap();
    let enc_hi = lt.encode(&s.encoder, 4, ct.scale(), ct.scale()).unwrap();
    assert_eq!(
        enc_hi.evaluate(&eval, &ct).unwrap_err(),
        CkksError::LevelTooLow {
            needed: 4,
            level: 3
        }
    );
    let enc_scale = lt
        .encode(&s.encoder, 3, ct.scale() * 2.0, ct.scale())
        .unwrap();
    assert!(matches!(
        enc_scale.evaluate(&eval, &ct).unwrap_err(),
        CkksError::ScaleMismatch { .. }
    ));
    let pt5 = s
        .encoder
        .encode(&random_values(32, 3), 3, s.params.default_scale(), 5)
        .unwrap();
    let ct5 = s.enc.encrypt(&pt5).unwrap();
    let enc = lt.encode(&s.encoder, 3, ct.scale(), ct.scale()).unwrap();
    assert_eq!(
        enc.evaluate(&eval, &ct5).unwrap_err(),
        CkksError::SlotMismatch { a: 5, b: 4 }
    );
}
