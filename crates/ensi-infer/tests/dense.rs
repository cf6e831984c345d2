//! The dense (column-block) layout and its ternary PCMM: the plain reference
//! against X W^T, encryption round trips, the encrypted PCMM against the
//! plaintext product (insecure-n10), shape errors, and (ignored) a timing
//! against the column layout's additions-only PCMM at n15-l10.

use ensi_ckks::*;
use ensi_infer::dense::{ternary_pcmm_dense, ternary_pcmm_dense_plain, DenseLayout, DensePcmmPlan};
use ensi_infer::InferError;
use ensi_model::{Matrix, TernaryMatrix};
use std::sync::Arc;
use std::time::Instant;

/// A seeded LCG (the tests' only randomness).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// Uniform in [-1, 1] (steps of 1e-3).
    fn value(&mut self) -> f64 {
        (self.next() % 2001) as f64 / 1000.0 - 1.0
    }

    fn matrix(&mut self, rows: usize, cols: usize) -> Matrix {
        Matrix::from_vec(rows, cols, (0..rows * cols).map(|_| self.value()).collect())
    }

    /// Ternary weights with an all-zero first row, and `scale`.
    fn ternary(&mut self, rows: usize, cols: usize, scale: f64) -> TernaryMatrix {
        let mut v: Vec<i8> = (0..rows * cols)
            .map(|_| (self.next() % 3) as i8 - 1)
            .collect();
        v[..cols].iter_mut().for_each(|w| *w = 0);
        TernaryMatrix::new("w", rows, cols, v, scale).unwrap()
    }
}

/// Keys and codecs for one preset.
struct Ctx {
    params: Parameters,
    encoder: Encoder,
    enc: Encryptor,
    dec: Decryptor,
    sk: SecretKey,
}

impl Ctx {
    fn new(preset: &str) -> Self {
        let params = ParametersLiteral::preset(preset).unwrap().build().unwrap();
        let sk = KeyGenerator::new(&params).gen_secret_key();
        Self {
            encoder: Encoder::new(&params),
            enc: Encryptor::with_secret_key(&params, &sk),
            dec: Decryptor::new(&sk),
            sk,
            params,
        }
    }

    fn evaluator(&self, steps: &[i64]) -> Evaluator {
        let keys = KeyGenerator::new(&self.params).gen_evaluation_keys(&self.sk, steps, false);
        Evaluator::new(&self.params, Arc::new(keys))
    }
}

/// log2(max|want| / max|got - want|): the bits of the result relative to its magnitude.
fn relative_bits(got: &Matrix, want: &Matrix) -> (f64, f64) {
    let err = got.max_abs_diff(want);
    (err, (want.max_abs() / err).log2())
}

#[test]
fn plain_reference_matches_the_product() {
    let mut rng = Lcg(7);
    // (tokens, d_in, d_out, max_log_slots): one ciphertext, several, partial
    // last ciphertexts, d < B, d_out > d_in and d_out < d_in, B = 1.
    let shapes = [
        (3, 5, 5, 9),
        (3, 5, 2, 9),
        (1, 7, 13, 4),
        (8, 64, 64, 9),
        (16, 64, 64, 9),
        (16, 100, 40, 9),
        (16, 40, 100, 9),
        (5, 33, 70, 7),
        (16, 3, 9, 4),
        (4, 200, 150, 8),
    ];
    for (tokens, d_in, d_out, max_log_slots) in shapes {
        let lin = DenseLayout::new(tokens, d_in, max_log_slots).unwrap();
        let x = rng.matrix(tokens, d_in);
        let w = rng.ternary(d_out, d_in, 0.37);
        let slots = lin.pack(&x).unwrap();
        assert_eq!(
            lin.unpack(&slots).unwrap(),
            x,
            "pack/unpack {tokens}x{d_in}"
        );
        // The output in its own layout (its own B) and in the input's B.
        for lout in [
            DenseLayout::new(tokens, d_out, max_log_slots).unwrap(),
            lin.with_features(d_out).unwrap(),
        ] {
            let y = ternary_pcmm_dense_plain(&lin, &slots, &w, w.scale(), &lout).unwrap();
            // Padding slots stay zero.
            for v in &y {
                for (i, &s) in v.iter().enumerate() {
                    if i % lout.block_len() >= tokens {
                        assert_eq!(s, 0.0);
                    }
                }
            }
            let err = lout.unpack(&y).unwrap().max_abs_diff(&w.forward(&x));
            assert!(
                err < 1e-12,
                "{tokens}x{d_in} -> {d_out} (B {} -> {}): error {err}",
                lin.blocks_per_ciphertext(),
                lout.blocks_per_ciphertext()
            );
        }
    }
}

#[test]
fn encrypt_decrypt_round_trip() {
    let mut c = Ctx::new("insecure-n10");
    let mut rng = Lcg(3);
    let max_log_slots = c.params.log_slots();
    // (tokens, features, expected B, expected ciphertexts) at 512 slots.
    for (tokens, features, blocks, cts) in [
        (3, 5, 8, 1),
        (8, 5, 8, 1),
        (16, 5, 8, 1),
        (3, 64, 64, 1),
        (8, 64, 64, 1),
        (16, 64, 32, 2),
        (16, 100, 32, 4),
        (3, 300, 128, 3),
    ] {
        let layout = DenseLayout::new(tokens, features, max_log_slots).unwrap();
        assert_eq!(
            (layout.blocks_per_ciphertext(), layout.ciphertexts()),
            (blocks, cts),
            "{tokens}x{features}"
        );
        let x = rng.matrix(tokens, features);
        let level = c.params.max_level();
        let ct = layout
            .encrypt(&x, &c.encoder, &mut c.enc, level, c.params.default_scale())
            .unwrap();
        assert_eq!(ct.len(), cts);
        assert!(ct.iter().all(|ct| ct.log_slots() == layout.log_slots()));
        let back = layout.decrypt(&ct, &c.encoder, &c.dec).unwrap();
        let err = back.max_abs_diff(&x);
        eprintln!(
            "round trip {tokens}x{features}: B {blocks}, {cts} ct, error {err:.2e} ({:.1} bits)",
            -err.log2()
        );
        assert!(-err.log2() >= 25.0, "round trip error {err}");
    }
}

#[test]
fn dense_pcmm_matches_plaintext() {
    let mut c = Ctx::new("insecure-n10");
    let mut rng = Lcg(11);
    let max_log_slots = c.params.log_slots();
    let top = c.params.max_level();
    // (name, tokens, d_in, d_out, output in the input's B) at 512 slots.
    let cases = [
        ("square, d < B", 3, 5, 5, false),
        ("square, 2 ct", 16, 64, 64, false),
        ("square, 1 ct, B 64", 8, 64, 64, false),
        ("wide, B 64, 1 -> 2 ct", 8, 40, 100, false),
        ("wide, B 16 -> 32, 1 -> 2 ct", 16, 10, 40, false),
        ("wide, B 16 -> 16, 1 -> 3 ct", 16, 10, 40, true),
        ("wide, 2 -> 4 ct", 16, 40, 100, false),
        ("wide, B 8 -> 16", 3, 5, 12, false),
        ("tall, 4 -> 2 ct", 16, 100, 40, false),
        ("tall, B 32 -> 4", 3, 20, 3, false),
        ("tall, B 32 -> 8, 4 -> 1 ct", 16, 100, 6, false),
        ("tall, B 32 -> 32, d_out < B", 3, 20, 3, true),
    ];
    for (name, tokens, d_in, d_out, same_b) in cases {
        let lin = DenseLayout::new(tokens, d_in, max_log_slots).unwrap();
        let lout = if same_b {
            lin.with_features(d_out).unwrap()
        } else {
            DenseLayout::new(tokens, d_out, max_log_slots).unwrap()
        };
        let x = rng.matrix(tokens, d_in);
        let w = rng.ternary(d_out, d_in, 0.37);
        let want = w.forward(&x);
        let steps = lin.rotation_steps_to(&lout);
        if !same_b {
            assert_eq!(steps, lin.rotation_steps(d_out));
        }
        let eval = c.evaluator(&steps);
        let cts = lin
            .encrypt(&x, &c.encoder, &mut c.enc, top, c.params.default_scale())
            .unwrap();

        let plan = DensePcmmPlan::new(&c.encoder, &lin, &w, w.scale(), &lout, top).unwrap();
        assert!(plan.rotation_steps().iter().all(|s| steps.contains(s)));
        let out = plan.apply(&eval, &cts).unwrap();
        assert_eq!(out.len(), lout.ciphertexts());
        for ct in &out {
            assert_eq!(ct.level(), top - 1, "one level");
            assert!(
                (ct.scale() / cts[0].scale() - 1.0).abs() < 1e-12,
                "input scale kept"
            );
        }
        let y = lout.decrypt(&out, &c.encoder, &c.dec).unwrap();
        let (err, bits) = relative_bits(&y, &want);
        eprintln!(
            "{name}: {tokens}x{d_in} -> {d_out}, B {} -> {}, {} -> {} ct, n1 {}, {} diagonals, {} rotation keys: \
             max error {err:.2e}, max |Y| {:.2}, {bits:.1} bits",
            lin.blocks_per_ciphertext(),
            lout.blocks_per_ciphertext(),
            lin.ciphertexts(),
            lout.ciphertexts(),
            plan.baby_step(),
            plan.diagonal_count(),
            steps.len(),
            want.max_abs(),
        );
        assert!(bits >= 25.0, "{name}: {bits:.1} bits");

        // The one-shot function, on inputs one level lower (primes dropped, same scale).
        let low: Vec<Ciphertext> = cts
            .iter()
            .map(|ct| eval.drop_to_level(ct, top - 1).unwrap())
            .collect();
        let out = ternary_pcmm_dense(&eval, &c.encoder, &lin, &low, &w, w.scale(), &lout).unwrap();
        assert!(out.iter().all(|ct| ct.level() == top - 2));
        let y = lout.decrypt(&out, &c.encoder, &c.dec).unwrap();
        let (_, bits_low) = relative_bits(&y, &want);
        assert!(
            bits_low >= 25.0,
            "{name} one level lower: {bits_low:.1} bits"
        );
    }
}

#[test]
fn plan_drops_higher_inputs_and_handles_zero_weights() {
    let mut c = Ctx::new("insecure-n10");
    let mut rng = Lcg(5);
    let (tokens, d) = (4, 24);
    let lin = DenseLayout::new(tokens, d, c.params.log_slots()).unwrap();
    let top = c.params.max_level();
    let x = rng.matrix(tokens, d);
    let cts = lin
        .encrypt(&x, &c.encoder, &mut c.enc, top, c.params.default_scale())
        .unwrap();
    // All-zero weights: no rotation, a zero output at the right level and scale.
    let zero = TernaryMatrix::new("w", d, d, vec![0; d * d], 0.5).unwrap();
    let plan = DensePcmmPlan::new(&c.encoder, &lin, &zero, 0.5, &lin, top - 1).unwrap();
    assert!(plan.rotation_steps().is_empty());
    assert_eq!(plan.diagonal_count(), 0);
    let eval = c.evaluator(&[]);
    let out = plan.apply(&eval, &cts).unwrap();
    assert!(out.iter().all(|ct| ct.level() == top - 2));
    let y = lin.decrypt(&out, &c.encoder, &c.dec).unwrap();
    assert!(y.max_abs() < 1e-6);
    // The identity: diagonal 0 only, no rotation; inputs above the plan's level are dropped.
    let mut id = vec![0i8; d * d];
    (0..d).for_each(|i| id[i * d + i] = 1);
    let id = TernaryMatrix::new("id", d, d, id, 1.0).unwrap();
    let plan = DensePcmmPlan::new(&c.encoder, &lin, &id, -2.0, &lin, top - 1).unwrap();
    assert!(plan.rotation_steps().is_empty());
    let y = lin
        .decrypt(&plan.apply(&eval, &cts).unwrap(), &c.encoder, &c.dec)
        .unwrap();
    let mut want = x.clone();
    want.data_mut().iter_mut().for_each(|v| *v *= -2.0);
    let (err, bits) = relative_bits(&y, &want);
    eprintln!("identity x -2: error {err:.2e} ({bits:.1} bits)");
    assert!(bits >= 25.0);
}

#[test]
fn shape_errors() {
    let mut c = Ctx::new("insecure-n10");
    let max = c.params.log_slots();
    let top = c.params.max_level();
    let is_shape = |r: std::result::Result<(), InferError>| matches!(r, Err(InferError::Shape(_)));
    assert!(is_shape(DenseLayout::new(0, 4, max).map(|_| ())));
    assert!(is_shape(DenseLayout::new(4, 0, max).map(|_| ())));
    assert!(is_shape(DenseLayout::new(1000, 4, max).map(|_| ())));
    assert!(is_shape(
        DenseLayout::with_blocks(16, 4, 3, max).map(|_| ())
    ));
    assert!(is_shape(
        DenseLayout::with_blocks(16, 4, 64, max).map(|_| ())
    ));

    let lin = DenseLayout::new(16, 64, max).unwrap();
    let x = Matrix::zeros(16, 64);
    // Encrypting a matrix of another shape.
    assert!(is_shape(
        lin.encrypt(&Matrix::zeros(15, 64), &c.encoder, &mut c.enc, top, 1e12)
            .map(|_| ())
    ));
    assert!(is_shape(
        lin.encrypt(&Matrix::zeros(16, 63), &c.encoder, &mut c.enc, top, 1e12)
            .map(|_| ())
    ));
    let cts = lin
        .encrypt(&x, &c.encoder, &mut c.enc, top, c.params.default_scale())
        .unwrap();
    // Decrypting the wrong number of ciphertexts, or ciphertexts of another slot count.
    assert!(is_shape(
        lin.decrypt(&cts[..1], &c.encoder, &c.dec).map(|_| ())
    ));
    let other = DenseLayout::new(16, 16, max).unwrap();
    let small = other
        .encrypt(&Matrix::zeros(16, 16), &c.encoder, &mut c.enc, top, 1e12)
        .unwrap();
    let mixed = vec![cts[0].clone(), small[0].clone()];
    assert!(is_shape(
        lin.decrypt(&mixed, &c.encoder, &c.dec).map(|_| ())
    ));
    assert!(is_shape(lin.unpack(&[vec![0.0; 512]]).map(|_| ())));

    let w = TernaryMatrix::new("w", 8, 64, vec![1; 8 * 64], 1.0).unwrap();
    let out = lin.with_features(8).unwrap();
    // W does not match the layouts.
    assert!(is_shape(
        DensePcmmPlan::new(&c.encoder, &lin, &w, 1.0, &lin, top).map(|_| ())
    ));
    assert!(is_shape(
        DensePcmmPlan::new(&c.encoder, &out, &w, 1.0, &out, top).map(|_| ())
    ));
    // An output layout with another token count.
    let other_s = DenseLayout::with_blocks(8, 8, lin.blocks_per_ciphertext(), max).unwrap();
    assert!(is_shape(
        DensePcmmPlan::new(&c.encoder, &lin, &w, 1.0, &other_s, top).map(|_| ())
    ));
    assert!(is_shape(
        ternary_pcmm_dense_plain(&lin, &[vec![0.0; 512]], &w, 1.0, &out).map(|_| ())
    ));
    // Level 0 cannot be rescaled; a non-finite factor cannot be encoded.
    assert!(matches!(
        DensePcmmPlan::new(&c.encoder, &lin, &w, 1.0, &out, 0),
        Err(InferError::Ckks(_))
    ));
    assert!(matches!(
        DensePcmmPlan::new(&c.encoder, &lin, &w, f64::NAN, &out, top),
        Err(InferError::Ckks(_))
    ));
    // Applying to the wrong number of ciphertexts, or below the plan's level.
    let plan = DensePcmmPlan::new(&c.encoder, &lin, &w, 1.0, &out, top).unwrap();
    let eval = c.evaluator(&lin.rotation_steps(8));
    assert!(is_shape(plan.apply(&eval, &cts[..1]).map(|_| ())));
    assert!(is_shape(plan.apply(&eval, &mixed).map(|_| ())));
    let low: Vec<Ciphertext> = cts
        .iter()
        .map(|ct| eval.drop_to_level(ct, top - 1).unwrap())
        .collect();
    assert!(matches!(plan.apply(&eval, &low), Err(InferError::Ckks(_))));
    assert!(is_shape(
        ternary_pcmm_dense(&eval, &c.encoder, &lin, &[], &w, 1.0, &out).map(|_| ())
    ));
}

/// Median of `runs` timings of `f`, in milliseconds.
fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

/// The dense PCMM against the column layout's additions-only PCMM at n15-l10,
/// s = 16, d_in = d_out = 64, top level, median of 3. Run with
/// `cargo test --release -p ensi-infer --test dense -- --ignored --nocapture`.
#[test]
#[ignore = "timing, not a check"]
fn measure_dense_vs_column() {
    use ensi_infer::layout::ColumnLayout;
    use ensi_infer::pcmm::{generic_pcmm_columns, ternary_pcmm_columns};
    let (tokens, d) = (16, 64);
    let mut c = Ctx::new("n15-l10");
    let mut rng = Lcg(1);
    let x = rng.matrix(tokens, d);
    let w = rng.ternary(d, d, 0.05);
    let top = c.params.max_level();
    let scale = c.params.default_scale();

    let dense = DenseLayout::new(tokens, d, c.params.log_slots()).unwrap();
    let steps = dense.rotation_steps(d);
    let t = Instant::now();
    let eval = c.evaluator(&steps);
    let keygen_ms = t.elapsed().as_secs_f64() * 1e3;
    let dense_cts = dense
        .encrypt(&x, &c.encoder, &mut c.enc, top, scale)
        .unwrap();
    let t = Instant::now();
    let plan = DensePcmmPlan::new(&c.encoder, &dense, &w, w.scale(), &dense, top).unwrap();
    let plan_ms = t.elapsed().as_secs_f64() * 1e3;
    let columns = ColumnLayout::new(tokens, d);
    let col_cts = columns
        .encrypt(&x, &c.encoder, &mut c.enc, top, scale)
        .unwrap();
    let real: Vec<f64> = w
        .values()
        .iter()
        .map(|&v| f64::from(v) * w.scale())
        .collect();

    // Warm-up (pool, caches), then the medians.
    drop(plan.apply(&eval, &dense_cts).unwrap());
    drop(ternary_pcmm_columns(&eval, &col_cts, &w).unwrap());
    let dense_ms = median_ms(3, || drop(plan.apply(&eval, &dense_cts).unwrap()));
    let column_ms = median_ms(3, || {
        drop(ternary_pcmm_columns(&eval, &col_cts, &w).unwrap())
    });
    let generic_ms = median_ms(3, || {
        drop(generic_pcmm_columns(&eval, &col_cts, &real, d).unwrap())
    });

    // Where the dense time goes: the baby steps (hoisted), one giant rotation, one product.
    let s_pad = dense.block_len() as i64;
    let babies: Vec<i64> = (1..plan.baby_step() as i64).map(|j| j * s_pad).collect();
    let hoisted_ms = median_ms(3, || {
        drop(eval.rotate_hoisted(&dense_cts[0], &babies).unwrap())
    });
    let rotate_ms = median_ms(3, || {
        drop(
            eval.rotate(&dense_cts[0], plan.baby_step() as i64 * s_pad)
                .unwrap(),
        )
    });
    let diag = c
        .encoder
        .encode_real(
            &[0.05; 16],
            top,
            c.params.q()[top] as f64,
            dense.log_slots(),
        )
        .unwrap();
    let product_ms = median_ms(3, || drop(eval.mul_plain(&dense_cts[0], &diag).unwrap()));

    let y = dense
        .decrypt(&plan.apply(&eval, &dense_cts).unwrap(), &c.encoder, &c.dec)
        .unwrap();
    let (err, bits) = relative_bits(&y, &w.forward(&x));
    eprintln!(
        "n15-l10, s {tokens}, d {d} -> {d}, level {top}, {} rayon threads",
        rayon::current_num_threads()
    );
    eprintln!(
        "  dense layout: B {}, {} ciphertext(s), n1 {}, {} diagonals, {} rotation keys \
         (keygen {keygen_ms:.0} ms), plan {plan_ms:.0} ms, precision {bits:.1} bits (error {err:.1e})",
        dense.blocks_per_ciphertext(),
        dense.ciphertexts(),
        plan.baby_step(),
        plan.diagonal_count(),
        steps.len()
    );
    eprintln!("  dense ternary PCMM (1 level)            {dense_ms:>9.1} ms");
    eprintln!("  column ternary PCMM (additions, 0 lvl)  {column_ms:>9.1} ms ({d} ciphertexts)");
    eprintln!("  column generic PCMM (plain mults, 1 lvl){generic_ms:>9.1} ms");
    eprintln!(
        "  dense / column ternary                  {:>9.2}",
        dense_ms / column_ms
    );
    eprintln!(
        "  dense parts: {} hoisted baby rotations {hoisted_ms:.1} ms, one rotation {rotate_ms:.1} ms, \
         one plaintext product {product_ms:.2} ms",
        babies.len()
    );
}
