//! Bootstrapping end to end: encrypt at level 0, refresh, decrypt, compare.
//!
//! * `insecure-boot-n11` (N = 2^11): full slots (2^10), sparse slots (2^4 and
//!   2^0), complex values, two real ciphertexts in one bootstrap, the
//!   message-range contract.
//! * `n16-boot` (N = 2^16, 2^15 slots, 128-bit): precision (mean and minimum
//!   over slots) and the levels and scale left; release mode only.

mod common;
use common::random_values;
use ensi_ckks::circuits::bootstrap::{BootstrapConfig, BootstrapKeys, Bootstrapper};
use ensi_ckks::*;
use std::time::Instant;

struct Setup {
    params: Parameters,
    encoder: Encoder,
    sk: SecretKey,
    dec: Decryptor,
}

fn setup(preset: &str) -> Setup {
    let params = ParametersLiteral::preset(preset).unwrap().build().unwrap();
    let sk = KeyGenerator::new(&params).gen_secret_key();
    Setup {
        encoder: Encoder::new(&params),
        dec: Decryptor::new(&sk),
        sk,
        params,
    }
}

fn bootstrapper(s: &Setup, config: BootstrapConfig) -> Bootstrapper {
    let keys = BootstrapKeys::generate(&s.params, &config, &s.sk, &[]).unwrap();
    Bootstrapper::new(&s.params, config, keys).unwrap()
}

fn encrypt_at_level0(s: &Setup, v: &[Complex64], log_slots: u32) -> Ciphertext {
    let pt = s
        .encoder
        .encode(v, 0, s.params.default_scale(), log_slots)
        .unwrap();
    Encryptor::with_secret_key(&s.params, &s.sk)
        .encrypt(&pt)
        .unwrap()
}

/// (mean, min) over slots of -log2 |error|.
fn precision(got: &[Complex64], want: &[Complex64]) -> (f64, f64) {
    let bits: Vec<f64> = got
        .iter()
        .zip(want)
        .map(|(a, b)| -(a - b).norm().max(1e-300).log2())
        .collect();
    let mean = bits.iter().sum::<f64>() / bits.len() as f64;
    (mean, bits.iter().cloned().fold(f64::INFINITY, f64::min))
}

fn check(s: &Setup, bt: &Bootstrapper, v: &[Complex64], log_slots: u32, min_bits: f64) {
    let ct = encrypt_at_level0(s, v, log_slots);
    let t = Instant::now();
    let out = bt.bootstrap(&ct).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(out.level(), bt.output_level());
    assert_eq!(out.scale(), bt.output_scale());
    assert_eq!(out.log_slots(), log_slots);
    let got = s.encoder.decode(&s.dec.decrypt(&out).unwrap());
    let (mean, min) = precision(&got, v);
    eprintln!(
        "{} log_slots {log_slots}: precision mean {mean:.1} min {min:.1} bits, level {}, {secs:.2} s",
        s.params.name(),
        out.level()
    );
    assert!(min >= min_bits, "precision {min:.1} < {min_bits}");
}

#[test]
fn small_full_and_sparse_slots() {
    let s = setup("insecure-boot-n11");
    let full = BootstrapConfig::for_params(&s.params);
    assert_eq!(full.log_slots, 10);
    assert_eq!(full.failure_probability(), 0.0);
    let bt = bootstrapper(&s, full.clone());
    assert_eq!(bt.output_level(), 4);
    // 2^10 slots at N = 2^11: coefficients ~2^-6, the sine's cubic term limits this to ~21 bits.
    check(&s, &bt, &random_values(1 << 10, 1), 10, 19.0);
    // Few slots: large coefficients, so the sine's cubic error is corrected (2 levels).
    for log_slots in [4u32, 0] {
        let cfg = full.clone().with_log_slots(log_slots).with_arcsine(true);
        let bt = bootstrapper(&s, cfg);
        assert_eq!(bt.output_level(), 2);
        check(&s, &bt, &random_values(1 << log_slots, 2), log_slots, 20.0);
    }
}

#[test]
fn small_two_real_ciphertexts_in_one_bootstrap() {
    let s = setup("insecure-boot-n11");
    let cfg = BootstrapConfig::for_params(&s.params)
        .with_log_slots(6)
        .with_arcsine(true);
    let bt = bootstrapper(&s, cfg);
    let re = |v: Vec<Complex64>| -> Vec<Complex64> {
        v.into_iter().map(|c| Complex64::new(c.re, 0.0)).collect()
    };
    let (a, b) = (re(random_values(64, 3)), re(random_values(64, 4)));
    let (ca, cb) = (encrypt_at_level0(&s, &a, 6), encrypt_at_level0(&s, &b, 6));
    let (oa, ob) = bt.bootstrap_real_pair(&ca, &cb).unwrap();
    for (out, want) in [(&oa, &a), (&ob, &b)] {
        assert_eq!(out.level(), bt.output_level());
        let got = s.encoder.decode(&s.dec.decrypt(out).unwrap());
        let (mean, min) = precision(&got, want);
        eprintln!("pair: mean {mean:.1} min {min:.1} bits");
        assert!(min >= 20.0);
    }
}

#[test]
fn small_message_range_contract() {
    let s = setup("insecure-boot-n11");
    let bt = bootstrapper(
        &s,
        BootstrapConfig::for_params(&s.params)
            .with_log_slots(3)
            .with_arcsine(true),
    );
    // Values up to 8 at scale 2^40 (level 1): scaled into [-1, 1] with one
    // level, the output reads z / 8.
    let v: Vec<Complex64> = random_values(8, 5).into_iter().map(|c| c * 8.0).collect();
    let pt = s
        .encoder
        .encode(&v, 1, s.params.default_scale(), 3)
        .unwrap();
    let ct = Encryptor::with_secret_key(&s.params, &s.sk)
        .encrypt(&pt)
        .unwrap();
    let out = bt.bootstrap(&bt.fit_range(&ct, 8.0).unwrap()).unwrap();
    let got = s.encoder.decode(&s.dec.decrypt(&out).unwrap());
    let want: Vec<Complex64> = v.iter().map(|c| c / 8.0).collect();
    let (mean, min) = precision(&got, &want);
    eprintln!("fit_range(8): mean {mean:.1} min {min:.1} bits");
    assert!(min >= 18.0);
    // An input scale too close to q_0 is refused, as is a wrong slot count.
    let mut big = ct.clone();
    big.set_scale(bt.max_input_scale() * 2.0);
    assert!(matches!(bt.bootstrap(&big), Err(CkksError::Encoding(_))));
    let small: Vec<Complex64> = v[..4].iter().map(|c| c / 8.0).collect();
    let other = encrypt_at_level0(&s, &small, 2);
    assert!(matches!(
        bt.bootstrap(&other),
        Err(CkksError::SlotMismatch { .. })
    ));
}

/// N = 2^16, 2^15 slots, 128-bit: >= 20 bits (mean and min) for real inputs
/// uniform in [-1, 1], >= 10 levels at scale >= 2^40 left.
#[test]
#[cfg_attr(debug_assertions, ignore = "N = 2^16: run in release mode")]
fn n16_boot_full_slots() {
    let s = setup("n16-boot");
    assert!(!s.params.is_insecure());
    assert!(s.params.log_qp() <= 1772.0);
    let cfg = BootstrapConfig::for_params(&s.params);
    let t = Instant::now();
    let keys = BootstrapKeys::generate(&s.params, &cfg, &s.sk, &[]).unwrap();
    eprintln!(
        "n16-boot: log QP {:.1}, keygen {:.1} s, {} Galois keys, {:.2} GiB",
        s.params.log_qp(),
        t.elapsed().as_secs_f64(),
        keys.eval.galois.len(),
        keys.byte_size() as f64 / 2f64.powi(30)
    );
    let bt = Bootstrapper::new(&s.params, cfg, keys).unwrap();
    assert!(bt.output_level() >= 10);
    assert!(bt.output_scale() >= 2f64.powi(40));
    let v: Vec<Complex64> = random_values(1 << 15, 7)
        .into_iter()
        .map(|c| Complex64::new(c.re, 0.0))
        .collect();
    check(&s, &bt, &v, 15, 20.0);
    let ct = encrypt_at_level0(&s, &v, 15);
    let got = s
        .encoder
        .decode(&s.dec.decrypt(&bt.bootstrap(&ct).unwrap()).unwrap());
    let (mean, _) = precision(&got, &v);
    assert!(mean >= 20.0);
}

#[test]
fn rotation_key_counts() {
    for preset in ["insecure-boot-n11", "n16-boot"] {
        let params = ParametersLiteral::preset(preset).unwrap().build().unwrap();
        let cfg = BootstrapConfig::for_params(&params);
        let steps = ensi_ckks::circuits::bootstrap::rotation_steps(&params, &cfg).unwrap();
        eprintln!(
            "{preset}: {} rotation steps (+ conjugation), log QP {:.1}, output level {}",
            steps.len(),
            params.log_qp(),
            cfg.output_level(&params).unwrap()
        );
    }
}
