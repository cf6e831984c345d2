//! Chebyshev polynomial evaluation end to end: decrypted results against the
//! plaintext function and against the Clenshaw reference, with the precision
//! in bits, the levels consumed against the reported depth, and the output scale.
//!
//! Most tests use `insecure-n12-l9`, a test literal with 9 levels (the stock
//! `insecure-n12` has 5, and sigmoid of degree 16 on [-10, 11] needs 5 + 1 for
//! the affine map); one runs on the stock preset.

mod common;
use common::precision_bits;
use ensi_ckks::circuits::polynomial::{
    self, ChebyshevPoly, EvalCost, InvSqrt, PolynomialEvaluator,
};
use ensi_ckks::*;
use std::sync::Arc;

struct Setup {
    params: Parameters,
    encoder: Encoder,
    enc: Encryptor,
    dec: Decryptor,
    eval: Evaluator,
}

/// N = 2^12, q_0 of 50 bits and 9 primes of 40 bits, dnum 4 with 3 special primes of 50 bits.
fn literal_l9() -> ParametersLiteral {
    let mut lit = ParametersLiteral::preset("insecure-n12").unwrap();
    lit.name = "insecure-n12-l9".into();
    lit.q_bits = std::iter::once(50)
        .chain(std::iter::repeat_n(40, 9))
        .collect();
    lit.p_bits = vec![50; 3];
    lit.dnum = 4;
    lit
}

fn setup(lit: ParametersLiteral) -> Setup {
    let params = lit.build().unwrap();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key();
    let pk = kg.gen_public_key(&sk);
    let keys = kg.gen_evaluation_keys(&sk, &[], false);
    Setup {
        encoder: Encoder::new(&params),
        enc: Encryptor::with_public_key(&params, &pk),
        dec: Decryptor::new(&sk),
        eval: Evaluator::new(&params, Arc::new(keys)),
        params,
    }
}

/// Deterministic real inputs spread over [a, b], the endpoints included.
fn inputs(n: usize, a: f64, b: f64) -> Vec<f64> {
    let mut s: u64 = 0x2545f4914f6cdd1d;
    (0..n)
        .map(|i| match i {
            0 => a,
            1 => b,
            _ => {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                a + (b - a) * ((s >> 11) as f64 / (1u64 << 53) as f64)
            }
        })
        .collect()
}

fn complex(v: &[f64]) -> Vec<Complex64> {
    v.iter().map(|&x| Complex64::new(x, 0.0)).collect()
}

struct Outcome {
    got: Vec<Complex64>,
    cost: EvalCost,
    levels_consumed: usize,
}

/// Encrypts `x` at the top level and default scale, evaluates `poly` to
/// `target` (default: the input's scale) and checks level and scale bookkeeping.
fn run(s: &mut Setup, poly: &ChebyshevPoly, x: &[f64], target: Option<f64>) -> Outcome {
    let pt = s
        .encoder
        .encode_real(
            x,
            s.params.max_level(),
            s.params.default_scale(),
            s.params.log_slots(),
        )
        .unwrap();
    let ct = s.enc.encrypt(&pt).unwrap();
    let pe = PolynomialEvaluator::new(&s.eval);
    let (out, cost) = match target {
        None => pe.evaluate(&ct, poly).unwrap(),
        Some(t) => pe.evaluate_to_scale(&ct, poly, t).unwrap(),
    };
    let want_scale = target.unwrap_or(ct.scale());
    assert!(
        ((out.scale() / want_scale) - 1.0).abs() < 1e-9,
        "output scale 2^{} != 2^{}",
        out.scale().log2(),
        want_scale.log2()
    );
    let levels_consumed = ct.level() - out.level();
    assert_eq!(levels_consumed, cost.depth);
    assert_eq!(cost, poly.cost(), "the plaintext twin predicts the cost");
    Outcome {
        got: s.encoder.decode(&s.dec.decrypt(&out).unwrap()),
        cost,
        levels_consumed,
    }
}

/// Asserts precision against the Clenshaw reference and against the function itself.
#[track_caller]
fn check(
    what: &str,
    poly: &ChebyshevPoly,
    x: &[f64],
    o: &Outcome,
    f: impl Fn(f64) -> f64,
    bits_poly: f64,
    bits_fn: f64,
) {
    let want_poly = complex(&x.iter().map(|&v| poly.eval_plain(v)).collect::<Vec<_>>());
    let want_fn = complex(&x.iter().map(|&v| f(v)).collect::<Vec<_>>());
    let (p_poly, p_fn) = (
        precision_bits(&o.got, &want_poly),
        precision_bits(&o.got, &want_fn),
    );
    eprintln!(
        "{what}: degree {}, depth {} (levels consumed {}), {} ct-ct products; \
         vs polynomial {p_poly:.1} bits, vs function {p_fn:.1} bits",
        poly.degree(),
        o.cost.depth,
        o.levels_consumed,
        o.cost.ct_mults
    );
    assert!(
        p_poly >= bits_poly,
        "{what}: {p_poly:.1} bits against the polynomial < {bits_poly}"
    );
    assert!(
        p_fn >= bits_fn,
        "{what}: {p_fn:.1} bits against the function < {bits_fn}"
    );
}

fn ceil_log2(n: usize) -> usize {
    (usize::BITS - (n - 1).leading_zeros()) as usize
}

#[test]
fn sigmoid_degree_16_on_minus_10_11() {
    let mut s = setup(literal_l9());
    let poly = polynomial::sigmoid_poly(-10.0, 11.0, 16).unwrap();
    assert_eq!(
        poly.depth(),
        ceil_log2(17) + 1,
        "5 levels for degree 16, one for the affine map"
    );
    let x = inputs(s.encoder.params().n() / 2, -10.0, 11.0);
    let o = run(&mut s, &poly, &x, None);
    assert_eq!(o.levels_consumed, 6);
    // Degree 16 on an interval of width 21 approximates sigmoid to ~2^-7 (poles at +-i pi).
    check(
        "sigmoid [-10, 11]",
        &poly,
        &x,
        &o,
        polynomial::sigmoid,
        22.0,
        6.5,
    );
}

#[test]
fn exp_to_a_target_scale() {
    let mut s = setup(literal_l9());
    let poly = ChebyshevPoly::interpolate(f64::exp, -2.0, 1.0, 15).unwrap();
    assert_eq!(poly.depth(), 4 + 1);
    let x = inputs(2048, -2.0, 1.0);
    let target = 2f64.powi(37);
    let o = run(&mut s, &poly, &x, Some(target));
    check(
        "exp [-2, 1] at scale 2^37",
        &poly,
        &x,
        &o,
        f64::exp,
        20.0,
        20.0,
    );
}

#[test]
fn degree_63_polynomial_on_unit_interval() {
    let mut s = setup(literal_l9());
    let mut seed: u64 = 11;
    let coeffs: Vec<f64> = (0..=63)
        .map(|k| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) / (k as f64 + 1.0)
        })
        .collect();
    let poly = ChebyshevPoly::new(-1.0, 1.0, coeffs).unwrap();
    assert_eq!(poly.depth(), 6, "no affine level on [-1, 1]");
    let x = inputs(2048, -1.0, 1.0);
    let o = run(&mut s, &poly, &x, None);
    check(
        "random degree 63",
        &poly,
        &x,
        &o,
        |v| poly.eval_plain(v),
        15.0,
        15.0,
    );
}

#[test]
fn silu_and_relu_squared() {
    let mut s = setup(literal_l9());
    let poly = polynomial::silu_poly(-8.0, 8.0, 31).unwrap();
    assert_eq!(poly.depth(), 5 + 1);
    let x = inputs(2048, -8.0, 8.0);
    let o = run(&mut s, &poly, &x, None);
    check("SiLU [-8, 8]", &poly, &x, &o, polynomial::silu, 20.0, 13.0);

    let poly = polynomial::relu_squared_poly(-4.0, 4.0, 32).unwrap();
    assert_eq!(poly.depth(), 6 + 1);
    let x = inputs(2048, -4.0, 4.0);
    let o = run(&mut s, &poly, &x, None);
    // ReLU^2 is only C^1: the fit itself limits the agreement with the function.
    check(
        "ReLU^2 [-4, 4]",
        &poly,
        &x,
        &o,
        polynomial::relu_squared,
        18.0,
        6.0,
    );
}

#[test]
fn stock_preset_and_shifted_interval() {
    // insecure-n12 (5 levels): degree 15 on an interval of width 2 costs exactly 4 levels (the shift is free).
    let mut s = setup(ParametersLiteral::preset("insecure-n12").unwrap());
    let poly = ChebyshevPoly::interpolate(f64::sin, 0.0, 2.0, 15).unwrap();
    assert!(!poly.affine_costs_level());
    assert_eq!(poly.depth(), 4);
    let x = inputs(2048, 0.0, 2.0);
    let o = run(&mut s, &poly, &x, None);
    check(
        "sin [0, 2] on insecure-n12",
        &poly,
        &x,
        &o,
        f64::sin,
        21.0,
        21.0,
    );

    // Degree 16 on [-10, 11] needs 6 levels: refused, not silently wrong.
    let poly = polynomial::sigmoid_poly(-10.0, 11.0, 16).unwrap();
    let pt = s
        .encoder
        .encode_real(
            &[0.5],
            s.params.max_level(),
            s.params.default_scale(),
            s.params.log_slots(),
        )
        .unwrap();
    let ct = s.enc.encrypt(&pt).unwrap();
    let err = PolynomialEvaluator::new(&s.eval)
        .evaluate(&ct, &poly)
        .unwrap_err();
    assert_eq!(
        err,
        CkksError::LevelTooLow {
            needed: 6,
            level: 5
        }
    );
}

#[test]
fn inverse_sqrt_with_newton_steps() {
    let mut s = setup(literal_l9());
    let (lo, hi) = (0.5, 8.0);
    let f = InvSqrt::new(lo, hi, 7, 2).unwrap();
    assert_eq!(f.depth(), 3 + 1 + 2 * 2);
    let x = inputs(2048, lo, hi);
    let pt = s
        .encoder
        .encode_real(
            &x,
            s.params.max_level(),
            s.params.default_scale(),
            s.params.log_slots(),
        )
        .unwrap();
    let ct = s.enc.encrypt(&pt).unwrap();
    let (out, cost) = PolynomialEvaluator::new(&s.eval).inv_sqrt(&ct, &f).unwrap();
    assert_eq!(ct.level() - out.level(), f.depth());
    assert_eq!(cost.depth, f.depth());
    assert!(((out.scale() / ct.scale()) - 1.0).abs() < 1e-9);
    let got = s.encoder.decode(&s.dec.decrypt(&out).unwrap());
    let twin = complex(&x.iter().map(|&v| f.eval_plain(v)).collect::<Vec<_>>());
    let exact = complex(&x.iter().map(|&v| 1.0 / v.sqrt()).collect::<Vec<_>>());
    let guess_only = InvSqrt {
        newton_steps: 0,
        ..f.clone()
    };
    let guess = complex(
        &x.iter()
            .map(|&v| guess_only.eval_plain(v))
            .collect::<Vec<_>>(),
    );
    let (p_twin, p_exact, p_guess) = (
        precision_bits(&got, &twin),
        precision_bits(&got, &exact),
        precision_bits(&guess, &exact),
    );
    eprintln!(
        "1/sqrt on [{lo}, {hi}]: guess degree 7 ({p_guess:.1} bits alone), 2 Newton steps; depth {}, \
         {} ct-ct products; vs twin {p_twin:.1} bits, vs 1/sqrt {p_exact:.1} bits",
        cost.depth, cost.ct_mults
    );
    assert!(p_twin >= 21.0);
    assert!(p_exact >= 20.0);
    assert!(
        p_exact > p_guess + 8.0,
        "the Newton steps must refine the guess"
    );
}

/// An input whose scale is off the primes' (here recorded at 0.5, 1.3 and 2
/// times the default, as after a free halving or a fitted range) keeps its
/// precision: the affine map's constant brings the power basis back onto the
/// primes. Before it did, x2 lost 20 bits through this degree-31 SiLU (4.2
/// bits left) and x1.3 lost 7.
#[test]
fn input_scale_off_the_primes() {
    let mut s = setup(literal_l9());
    let poly = polynomial::silu_poly(-8.0, 8.0, 31).unwrap();
    let x = inputs(2048, -8.0, 8.0);
    let want = complex(&x.iter().map(|&v| poly.eval_plain(v)).collect::<Vec<_>>());
    for f in [1.0, 2.0, 0.5, 1.3] {
        let pt = s
            .encoder
            .encode_real(
                &x,
                s.params.max_level(),
                s.params.default_scale() * f,
                s.params.log_slots(),
            )
            .unwrap();
        let ct = s.enc.encrypt(&pt).unwrap();
        let (out, cost) = PolynomialEvaluator::new(&s.eval)
            .evaluate(&ct, &poly)
            .unwrap();
        assert_eq!(cost.depth, poly.depth());
        assert!(
            ((out.scale() / ct.scale()) - 1.0).abs() < 1e-9,
            "at the input's scale"
        );
        let bits = precision_bits(&s.encoder.decode(&s.dec.decrypt(&out).unwrap()), &want);
        eprintln!("input at {f} x the default scale: {bits:.1} bits against the polynomial");
        assert!(bits > 21.0, "scale x{f}: {bits:.1} bits");
    }
}
