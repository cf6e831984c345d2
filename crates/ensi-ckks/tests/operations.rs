//! Every homomorphic operation against the same computation on plaintext
//! complex vectors, with the precision asserted in bits (insecure-n12:
//! N = 2^12, 2^11 slots, scale 2^40).

mod common;
use common::*;
use ensi_ckks::*;

const ROTATIONS: &[i64] = &[1, 2, 3, 7, -1, -5, 100];

fn ctx() -> Ctx {
    Ctx::new("insecure-n12", ROTATIONS)
}

#[test]
fn encrypt_decrypt_public_and_secret_key() {
    let mut c = ctx();
    let v = random_values(c.slots(), 1);
    let ct = c.encrypt(&v);
    assert_eq!(ct.level(), c.params.max_level());
    assert_precision("public-key encryption", &c.decrypt(&ct), &v, 22.0);
    let mut sk_enc = Encryptor::with_secret_key(&c.params, &c.sk);
    let pt = c
        .encoder
        .encode(&v, 2, c.params.default_scale(), c.params.log_slots())
        .unwrap();
    let ct = sk_enc.encrypt(&pt).unwrap();
    assert_eq!(ct.level(), 2);
    assert_precision("secret-key encryption", &c.decrypt(&ct), &v, 28.0);
}

#[test]
fn additive_operations() {
    let mut c = ctx();
    let (a, b) = (random_values(c.slots(), 2), random_values(c.slots(), 3));
    let (ca, cb) = (c.encrypt(&a), c.encrypt(&b));
    let e = &c.eval;
    let sum: Vec<_> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let diff: Vec<_> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    let neg: Vec<_> = a.iter().map(|x| -x).collect();
    assert_precision("add", &c.decrypt(&e.add(&ca, &cb).unwrap()), &sum, 22.0);
    assert_precision("sub", &c.decrypt(&e.sub(&ca, &cb).unwrap()), &diff, 22.0);
    assert_precision("neg", &c.decrypt(&e.neg(&ca).unwrap()), &neg, 22.0);
    let mut acc = ca.clone();
    e.add_assign(&mut acc, &cb).unwrap();
    e.sub_assign(&mut acc, &cb).unwrap();
    assert_precision("add_assign then sub_assign", &c.decrypt(&acc), &a, 22.0);

    let pb = c
        .encoder
        .encode(&b, c.params.max_level(), ca.scale(), c.params.log_slots())
        .unwrap();
    assert_precision(
        "add_plain",
        &c.decrypt(&e.add_plain(&ca, &pb).unwrap()),
        &sum,
        22.0,
    );
    assert_precision(
        "sub_plain",
        &c.decrypt(&e.sub_plain(&ca, &pb).unwrap()),
        &diff,
        22.0,
    );

    let k = Complex64::new(0.75, -1.5);
    let plus_k: Vec<_> = a.iter().map(|x| x + k).collect();
    assert_precision(
        "add_const",
        &c.decrypt(&e.add_const(&ca, k).unwrap()),
        &plus_k,
        22.0,
    );
    let minus_k: Vec<_> = a.iter().map(|x| x - k).collect();
    assert_precision(
        "sub_const",
        &c.decrypt(&e.sub_const(&ca, k).unwrap()),
        &minus_k,
        22.0,
    );
    let times3: Vec<_> = a.iter().map(|x| x * 3.0).collect();
    assert_precision(
        "mul_int",
        &c.decrypt(&e.mul_int(&ca, 3).unwrap()),
        &times3,
        22.0,
    );
}

#[test]
fn multiplicative_operations() {
    let mut c = ctx();
    let (a, b) = (random_values(c.slots(), 4), random_values(c.slots(), 5));
    let (ca, cb) = (c.encrypt(&a), c.encrypt(&b));
    let e = &c.eval;
    let prod: Vec<_> = a.iter().zip(&b).map(|(x, y)| x * y).collect();

    let ct = e.mul_rescale(&ca, &cb).unwrap();
    assert_eq!(ct.level(), c.params.max_level() - 1);
    assert_precision("mul + relinearize + rescale", &c.decrypt(&ct), &prod, 20.0);
    // Relinearizing by hand gives the same as mul.
    let t = e.tensor(&ca, &cb).unwrap();
    let ct2 = e.rescale(&e.relinearize(&t).unwrap()).unwrap();
    assert_precision(
        "tensor + relinearize + rescale",
        &c.decrypt(&ct2),
        &prod,
        20.0,
    );
    // The fused ModDown + rescale (mul_rescale) and the two steps round
    // differently only where a coefficient sits within 1/2 of a rounding
    // boundary of q_l (odds ~2^-40 each): the decryptions are equal or nearly.
    assert_eq!((ct.level(), ct.scale()), (ct2.level(), ct2.scale()));
    assert_precision(
        "fused relinearize + rescale vs the two steps",
        &c.decrypt(&ct),
        &c.decrypt(&ct2),
        28.0,
    );

    let pb = c
        .encoder
        .encode(
            &b,
            c.params.max_level(),
            c.params.default_scale(),
            c.params.log_slots(),
        )
        .unwrap();
    let ct = e.rescale(&e.mul_plain(&ca, &pb).unwrap()).unwrap();
    assert_precision("mul_plain + rescale", &c.decrypt(&ct), &prod, 20.0);

    // rescale(2 a b - m + 0.25) in one ModDown: m at the product's level and scale.
    let m = random_values(c.slots(), 9);
    let prod_scale = ca.scale() * cb.scale();
    let level = ca.level();
    let pm = c
        .encoder
        .encode(&m, level, prod_scale, c.params.log_slots())
        .unwrap();
    let cm = Encryptor::with_secret_key(&c.params, &c.sk)
        .encrypt(&pm)
        .unwrap();
    let fused = e
        .mul_scaled_sub_rescale(&ca, &cb, 2, Some(&cm), 0.25)
        .unwrap();
    let want: Vec<_> = a
        .iter()
        .zip(&b)
        .zip(&m)
        .map(|((x, y), z)| 2.0 * x * y - z + 0.25)
        .collect();
    assert_eq!(fused.level(), level - 1);
    assert_precision("mul_scaled_sub_rescale", &c.decrypt(&fused), &want, 18.0);
    let chain = e
        .rescale(
            &e.add_const(
                &e.sub(&e.mul_int(&e.mul(&ca, &cb).unwrap(), 2).unwrap(), &cm)
                    .unwrap(),
                Complex64::new(0.25, 0.0),
            )
            .unwrap(),
        )
        .unwrap();
    assert!((fused.scale() / chain.scale() - 1.0).abs() < 1e-12);
    assert_precision(
        "mul_scaled_sub_rescale against the separate steps",
        &c.decrypt(&fused),
        &c.decrypt(&chain),
        18.0,
    );
    let low = e.drop_to_level(&cm, level - 1).unwrap();
    assert!(e
        .mul_scaled_sub_rescale(&ca, &cb, 2, Some(&low), 0.0)
        .is_err());

    let k = Complex64::new(-0.3, 0.7);
    let times_k: Vec<_> = a.iter().map(|x| x * k).collect();
    let ct = e.mul_const(&ca, k).unwrap();
    assert!(
        (ct.scale() - ca.scale()).abs() < 1e-6 * ca.scale(),
        "mul_const keeps the scale"
    );
    assert_precision("mul_const (complex)", &c.decrypt(&ct), &times_k, 22.0);

    // A chain of squarings down to level 0: x^(2^L).
    let small: Vec<_> = a.iter().map(|x| x * 0.7).collect(); // |x| < 1 keeps x^(2^L) bounded
    let mut ct = c.encrypt(&small);
    let mut want = small.clone();
    while ct.level() > 0 {
        ct = c.eval.mul_rescale(&ct, &ct).unwrap();
        want.iter_mut().for_each(|x| *x = *x * *x);
    }
    assert_precision("repeated squaring to level 0", &c.decrypt(&ct), &want, 18.0);
    assert!(matches!(
        c.eval.rescale(&ct),
        Err(CkksError::LevelTooLow { .. })
    ));
    assert!(matches!(
        c.eval.mul_rescale(&ct, &ct),
        Err(CkksError::LevelTooLow { .. })
    ));
}

#[test]
fn rotations_conjugation_and_hoisting() {
    let mut c = ctx();
    let n = c.slots();
    let a = random_values(n, 6);
    let ca = c.encrypt(&a);
    let e = &c.eval;
    let rotated = |s: i64| -> Vec<Complex64> {
        (0..n)
            .map(|i| a[(i as i64 + s).rem_euclid(n as i64) as usize])
            .collect()
    };
    for &s in ROTATIONS {
        assert_precision(
            &format!("rotate {s}"),
            &c.decrypt(&e.rotate(&ca, s).unwrap()),
            &rotated(s),
            22.0,
        );
    }
    let conj: Vec<_> = a.iter().map(|x| x.conj()).collect();
    assert_precision(
        "conjugate",
        &c.decrypt(&e.conjugate(&ca).unwrap()),
        &conj,
        22.0,
    );
    let hoisted = e.rotate_hoisted(&ca, ROTATIONS).unwrap();
    for (&s, ct) in ROTATIONS.iter().zip(&hoisted) {
        assert_precision(
            &format!("hoisted rotate {s}"),
            &c.decrypt(ct),
            &rotated(s),
            22.0,
        );
    }
    assert!(matches!(
        e.rotate(&ca, 4),
        Err(CkksError::MissingGaloisKey(_))
    ));
    // Rotation at a lower level uses fewer key-switching digits.
    let low = e.drop_to_level(&ca, 1).unwrap();
    assert_precision(
        "rotate at level 1",
        &c.decrypt(&e.rotate(&low, 3).unwrap()),
        &rotated(3),
        22.0,
    );
}

#[test]
fn sparse_slots() {
    let mut c = ctx();
    let log_slots = 3;
    let a = random_values(8, 7);
    let pt = c
        .encoder
        .encode(
            &a,
            c.params.max_level(),
            c.params.default_scale(),
            log_slots,
        )
        .unwrap();
    let ct = c.enc.encrypt(&pt).unwrap();
    assert_eq!(ct.log_slots(), log_slots);
    assert_precision("sparse encrypt", &c.decrypt(&ct), &a, 25.0);
    let r = c.eval.rotate(&ct, 3).unwrap();
    let want: Vec<_> = (0..8).map(|i| a[(i + 3) % 8]).collect();
    assert_precision("sparse rotate", &c.decrypt(&r), &want, 22.0);
    let sq = c.eval.mul_rescale(&ct, &ct).unwrap();
    let want: Vec<_> = a.iter().map(|x| x * x).collect();
    assert_precision("sparse square", &c.decrypt(&sq), &want, 20.0);
}

#[test]
fn levels_and_scales_are_tracked_and_checked() {
    let mut c = ctx();
    let (a, b) = (random_values(c.slots(), 8), random_values(c.slots(), 9));
    let (ca, cb) = (c.encrypt(&a), c.encrypt(&b));
    let e = &c.eval;
    // Different levels, same scale: aligned by dropping primes.
    let low = e.drop_to_level(&cb, 2).unwrap();
    let sum = e.add(&ca, &low).unwrap();
    assert_eq!(sum.level(), 2);
    let want: Vec<_> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_precision("add across levels", &c.decrypt(&sum), &want, 22.0);
    // Different scales: refused.
    let prod = e.mul_rescale(&ca, &cb).unwrap();
    assert!(matches!(
        e.add(&prod, &ca),
        Err(CkksError::ScaleMismatch { .. })
    ));
    // ...until one is brought to the other's scale (one level).
    let fixed = e.set_scale_to(&ca, prod.scale()).unwrap();
    assert!((fixed.scale() / prod.scale() - 1.0).abs() < 1e-12);
    let s = e.add(&prod, &fixed).unwrap();
    let want: Vec<_> = a.iter().zip(&b).map(|(x, y)| x * y + x).collect();
    assert_precision("add after set_scale_to", &c.decrypt(&s), &want, 20.0);
    // Slot counts must agree.
    let pt = c
        .encoder
        .encode(&a[..4], c.params.max_level(), c.params.default_scale(), 2)
        .unwrap();
    let sparse = c.enc.encrypt(&pt).unwrap();
    assert!(matches!(
        e.add(&ca, &sparse),
        Err(CkksError::SlotMismatch { .. })
    ));
    // Missing relinearization key.
    let bare = Evaluator::new(&c.params, std::sync::Arc::new(EvaluationKeys::default()));
    assert!(matches!(
        bare.mul(&ca, &cb),
        Err(CkksError::MissingRelinKey)
    ));
}

/// The blocked multi-output kernels against the plain one-output-at-a-time
/// evaluator (bit-for-bit) and against plaintext.
#[test]
fn batched_linear_combinations_match_the_plain_evaluator() {
    let mut c = ctx();
    let cols = 5;
    let rows = 4;
    let inputs: Vec<Vec<Complex64>> = (0..cols)
        .map(|i| random_values(c.slots(), 30 + i as u64))
        .collect();
    let cts: Vec<Ciphertext> = inputs.iter().map(|v| c.encrypt(v)).collect();
    let e = &c.eval;
    let signs: Vec<i8> = vec![
        1, -1, 0, 1, 1, 0, 0, 0, 0, 0, -1, -1, 1, 0, 1, 1, 1, 1, -1, 1,
    ];
    let sums = e.signed_sums(&cts, &signs, rows).unwrap();
    let weights: Vec<f64> = (0..rows * cols).map(|i| (i as f64 * 0.37).sin()).collect();
    let q_top = c.params.q()[c.params.max_level()] as f64;
    let combos = e.linear_combinations(&cts, &weights, rows, q_top).unwrap();
    for r in 0..rows {
        // Reference: one output at a time with the plain evaluator.
        let mut reference: Option<Ciphertext> = None;
        let mut want = vec![Complex64::new(0.0, 0.0); c.slots()];
        for col in 0..cols {
            let w = signs[r * cols + col];
            want.iter_mut()
                .zip(&inputs[col])
                .for_each(|(a, x)| *a += *x * w as f64);
            let term = match w {
                1 => cts[col].clone(),
                -1 => e.neg(&cts[col]).unwrap(),
                _ => continue,
            };
            reference = Some(match reference {
                Some(acc) => e.add(&acc, &term).unwrap(),
                None => term,
            });
        }
        match reference {
            Some(reference) => assert_eq!(
                sums[r], reference,
                "row {r}: signed sums differ from the plain evaluator"
            ),
            None => assert!(c.decrypt(&sums[r]).iter().all(|x| x.norm() < 1e-6)),
        }
        assert_precision(
            &format!("signed_sums row {r}"),
            &c.decrypt(&sums[r]),
            &want,
            21.0,
        );

        let mut reference: Option<Ciphertext> = None;
        let mut want = vec![Complex64::new(0.0, 0.0); c.slots()];
        for col in 0..cols {
            let w = weights[r * cols + col];
            want.iter_mut()
                .zip(&inputs[col])
                .for_each(|(a, x)| *a += *x * w);
            let term = e
                .mul_const_scaled(&cts[col], Complex64::new(w, 0.0), q_top)
                .unwrap();
            reference = Some(match reference {
                Some(acc) => e.add(&acc, &term).unwrap(),
                None => term,
            });
        }
        assert_eq!(
            combos[r],
            reference.unwrap(),
            "row {r}: linear combinations differ from the plain evaluator"
        );
        let out = e.rescale(&combos[r]).unwrap();
        assert_precision(
            &format!("linear_combinations row {r}"),
            &c.decrypt(&out),
            &want,
            20.0,
        );
    }
    assert!(e.signed_sums(&cts, &[2; 20], rows).is_err());
    assert!(e.signed_sums(&cts, &signs[..19], rows).is_err());
}

/// A rotation key truncated to a low level works there, is refused above it
/// with a typed error, and survives serialization at its reduced size.
#[test]
fn truncated_keys() {
    let mut c = ctx();
    let a = random_values(c.slots(), 40);
    let ct = c.encrypt(&a);
    let mut kg = KeyGenerator::new(&c.params);
    let mut key = kg.gen_rotation_key(&c.sk, 3);
    let full = key.to_bytes(&c.params).len();
    key.truncate_to_level(&c.params, 1);
    assert_eq!(key.switching_key().level(), 1);
    let bytes = key.to_bytes(&c.params);
    assert!(bytes.len() < full / 2, "{} vs {full}", bytes.len());
    let key = GaloisKey::from_bytes(&c.params, &bytes).unwrap();
    let mut keys = EvaluationKeys::default();
    keys.insert_galois(key);
    let eval = Evaluator::new(&c.params, std::sync::Arc::new(keys));
    assert!(matches!(
        eval.rotate(&ct, 3),
        Err(CkksError::KeyLevelTooLow { key_level: 1, .. })
    ));
    let low = eval.drop_to_level(&ct, 1).unwrap();
    let n = a.len();
    let want: Vec<_> = (0..n).map(|i| a[(i + 3) % n]).collect();
    assert_precision(
        "rotate with a truncated key",
        &c.decrypt(&eval.rotate(&low, 3).unwrap()),
        &want,
        22.0,
    );
    assert_precision(
        "hoisted rotate with a truncated key",
        &c.decrypt(&eval.rotate_hoisted(&low, &[3]).unwrap()[0]),
        &want,
        22.0,
    );
}

/// `mul_const_sum` (inputs at different levels and scales, read down to one
/// level) equals dropping, multiplying by each constant and adding, word for
/// word, and decrypts to the weighted sum (precision asserted in bits).
#[test]
fn const_sum_equals_the_term_by_term_chain() {
    let mut c = ctx();
    let (a, b) = (random_values(c.slots(), 21), random_values(c.slots(), 22));
    let ca = c.encrypt(&a);
    let cb = c.encrypt(&b);
    let e = &c.eval;
    let mut cb = e.drop_to_level(&cb, c.params.max_level() - 1).unwrap();
    cb.set_scale(cb.scale() * 4.0); // another scale: its constant scale compensates
    let b4: Vec<_> = b.iter().map(|x| x / 4.0).collect();
    let level = c.params.max_level() - 2;
    // After the rescale by q_level the sum sits at 2^40.
    let target = 2f64.powi(40) * c.params.q()[level] as f64;
    let terms = [
        (&ca, 0.75, target / ca.scale()),
        (&cb, -1.5, target / cb.scale()),
        (&ca, 0.0, target / ca.scale()),
    ];
    let fused = e.mul_const_sum(&terms, level).unwrap();
    let mut chain: Option<Ciphertext> = None;
    for &(ct, k, s) in &terms {
        let t = e
            .mul_const_scaled(
                &e.drop_to_level(ct, level).unwrap(),
                Complex64::new(k, 0.0),
                s,
            )
            .unwrap();
        chain = Some(match chain {
            None => t,
            Some(acc) => e.add(&acc, &t).unwrap(),
        });
    }
    assert_eq!(fused, chain.unwrap());
    assert_eq!(fused.level(), level);
    let want: Vec<_> = a.iter().zip(&b4).map(|(x, y)| 0.75 * x - 1.5 * y).collect();
    let out = e.rescale(&fused).unwrap();
    assert_precision("mul_const_sum", &c.decrypt(&out), &want, 20.0);
    // Refusals: an input below the level, scales that disagree, no terms.
    assert!(e.mul_const_sum(&terms, c.params.max_level()).is_err());
    assert!(e
        .mul_const_sum(&[(&ca, 1.0, 2.0), (&cb, 1.0, 2.0)], level)
        .is_err());
    assert!(e.mul_const_sum(&[], level).is_err());
}

/// `mul_plain_sum` over more terms than one lazy chunk (15) equals the chain
/// of `mul_plain` and `add`, word for word, at a preset with primes below
/// 2^50 (IFMA sums) and one with larger primes (term-by-term products), and
/// decrypts to the sum of products.
#[test]
fn plain_product_sums_equal_the_term_by_term_chain() {
    for preset in ["insecure-n12", "insecure-boot-n12"] {
        let mut c = Ctx::new(preset, &[]);
        let terms = 20;
        let xs: Vec<Vec<Complex64>> = (0..terms)
            .map(|t| random_values(c.slots(), 40 + t))
            .collect();
        let ws: Vec<Vec<Complex64>> = (0..terms)
            .map(|t| random_values(c.slots(), 80 + t))
            .collect();
        let cts: Vec<Ciphertext> = xs.iter().map(|x| c.encrypt(x)).collect();
        let level = cts[0].level();
        let pts: Vec<Plaintext> = ws
            .iter()
            .map(|w| {
                c.encoder
                    .encode(w, level, c.params.q()[level] as f64, c.params.log_slots())
                    .unwrap()
            })
            .collect();
        let e = &c.eval;
        let pairs: Vec<(&Ciphertext, &Plaintext)> = cts.iter().zip(&pts).collect();
        let fused = e.mul_plain_sum(&pairs).unwrap();
        let mut chain = e.mul_plain(&cts[0], &pts[0]).unwrap();
        for (ct, pt) in cts.iter().zip(&pts).skip(1) {
            e.add_assign(&mut chain, &e.mul_plain(ct, pt).unwrap())
                .unwrap();
        }
        assert_eq!(fused, chain, "{preset}");
        // The same sum with the plaintexts given as coefficients, reduced and
        // transformed limb by limb inside the product: the same words.
        let coeffs: Vec<PlainCoefficients> = ws
            .iter()
            .map(|w| {
                c.encoder
                    .encode_coefficients(w, c.params.q()[level] as f64, c.params.log_slots())
                    .unwrap()
            })
            .collect();
        let by_coeffs: Vec<(&Ciphertext, &PlainCoefficients)> = cts.iter().zip(&coeffs).collect();
        assert_eq!(
            e.mul_coefficients_sum(&by_coeffs).unwrap(),
            fused,
            "{preset}"
        );
        assert_eq!(
            e.mul_coefficients_sum(&by_coeffs[..1]).unwrap(),
            e.mul_plain(&cts[0], &pts[0]).unwrap(),
            "{preset}"
        );
        assert!(e.mul_coefficients_sum(&[]).is_err());
        // Several outputs over the same ciphertexts, some terms absent: each
        // output is the single sum of its own terms, word for word.
        let rows: Vec<Vec<Option<&PlainCoefficients>>> = (0..3usize)
            .map(|o| {
                coeffs
                    .iter()
                    .enumerate()
                    .map(|(t, pc)| ((t + o) % 3 != 0).then_some(pc))
                    .collect()
            })
            .chain(std::iter::once(vec![None; coeffs.len()]))
            .collect();
        let ct_refs: Vec<&Ciphertext> = cts.iter().collect();
        let multi = e.mul_coefficients_sums(&ct_refs, &rows).unwrap();
        assert_eq!(multi.len(), 4);
        assert!(multi[3].is_none(), "an output without terms");
        for (o, row) in rows.iter().take(3).enumerate() {
            let single: Vec<(&Ciphertext, &PlainCoefficients)> = cts
                .iter()
                .zip(row)
                .filter_map(|(ct, pc)| pc.map(|pc| (ct, pc)))
                .collect();
            let want = e.mul_coefficients_sum(&single).unwrap();
            assert_eq!(multi[o].as_ref(), Some(&want), "{preset}, output {o}");
        }
        assert!(e.mul_coefficients_sums(&ct_refs, &[vec![None; 1]]).is_err());
        // Coefficients beyond the modulus at the ciphertexts' level are refused.
        let huge = c
            .encoder
            .encode_coefficients(&ws[0], 2f64.powi(60), c.params.log_slots())
            .unwrap();
        let low = e.drop_to_level(&cts[0], 0).unwrap();
        assert!(e.mul_coefficients_sum(&[(&low, &huge)]).is_err());
        let want: Vec<Complex64> = (0..c.slots())
            .map(|i| (0..terms as usize).map(|t| xs[t][i] * ws[t][i]).sum())
            .collect();
        let out = e.rescale(&fused).unwrap();
        assert_precision(preset, &c.decrypt(&out), &want, 16.0);
        assert!(e.mul_plain_sum(&[]).is_err());
    }
}
