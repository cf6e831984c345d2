//! Sparse-slot bootstrapping with one SlotsToCoeffs level on the chain of
//! `n16-boot`, at N = 2^12 (`insecure-boot-n12`, NOT secure: the same primes,
//! so the same levels and scales, in seconds instead of minutes).

mod common;
use common::{precision_bits, random_values};
use ensi_ckks::circuits::bootstrap::{BootstrapConfig, BootstrapKeys, Bootstrapper};
use ensi_ckks::*;
use std::time::Instant;

struct Setup {
    params: Parameters,
    encoder: Encoder,
    sk: SecretKey,
    dec: Decryptor,
}

fn setup() -> Setup {
    let params = ParametersLiteral::preset("insecure-boot-n12")
        .unwrap()
        .build()
        .unwrap();
    let sk = KeyGenerator::new(&params).gen_secret_key();
    Setup {
        encoder: Encoder::new(&params),
        dec: Decryptor::new(&sk),
        sk,
        params,
    }
}

fn bootstrapper(s: &Setup, config: BootstrapConfig) -> Bootstrapper {
    let t = Instant::now();
    let keys = BootstrapKeys::generate(&s.params, &config, &s.sk, &[]).unwrap();
    eprintln!(
        "  keys: {} Galois keys, {:.0} MiB, {:.1} s",
        keys.eval.galois.len(),
        keys.byte_size() as f64 / 2f64.powi(20),
        t.elapsed().as_secs_f64()
    );
    Bootstrapper::new(&s.params, config, keys).unwrap()
}

/// Real slots uniform in [-1, 1].
fn real_values(n: usize, seed: u64) -> Vec<Complex64> {
    random_values(n, seed)
        .into_iter()
        .map(|c| Complex64::new(c.re, 0.0))
        .collect()
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

/// Bootstraps real slots `|z| <= 1` encrypted at level 0 and scale `2^log_d`;
/// returns the precision in bits (-log2 of the largest slot error).
fn run(s: &Setup, bt: &Bootstrapper, log_d: u32, seed: u64) -> f64 {
    let log_slots = bt.config().log_slots;
    let v = real_values(1 << log_slots, seed);
    let pt = s
        .encoder
        .encode(&v, 0, (log_d as f64).exp2(), log_slots)
        .unwrap();
    let ct = Encryptor::with_secret_key(&s.params, &s.sk)
        .encrypt(&pt)
        .unwrap();
    let t = Instant::now();
    let out = bt.bootstrap(&ct).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(out.level(), bt.output_level());
    assert_eq!(out.scale(), bt.output_scale());
    assert_eq!(out.log_slots(), log_slots);
    let got = s.encoder.decode(&s.dec.decrypt(&out).unwrap());
    let bits = precision_bits(&got, &v);
    let c = bt.config();
    eprintln!(
        "  2^{log_slots} slots, D = 2^{log_d}, CtS {} StC {}: {bits:.1} bits, level {}, {secs:.2} s",
        c.cts_levels,
        c.stc_levels,
        out.level()
    );
    bits
}

/// Two real ciphertexts in one bootstrap; returns the worse precision of the two.
fn run_pair(s: &Setup, bt: &Bootstrapper, seed: u64) -> f64 {
    let log_slots = bt.config().log_slots;
    let (a, b) = (
        real_values(1 << log_slots, seed),
        real_values(1 << log_slots, seed + 1),
    );
    let (ca, cb) = (
        encrypt_at_level0(s, &a, log_slots),
        encrypt_at_level0(s, &b, log_slots),
    );
    let (oa, ob) = bt.bootstrap_real_pair(&ca, &cb).unwrap();
    let mut worst = f64::INFINITY;
    for (out, want) in [(&oa, &a), (&ob, &b)] {
        assert_eq!(out.level(), bt.output_level());
        assert_eq!(out.scale(), bt.output_scale());
        let got = s.encoder.decode(&s.dec.decrypt(out).unwrap());
        worst = worst.min(precision_bits(&got, want));
    }
    eprintln!("  2^{log_slots} slots, real pair: {worst:.1} bits");
    worst
}

/// The default flow is n16-boot's: CtS 4, StC 3, 10 levels left.
#[test]
fn default_flow_matches_n16_boot() {
    let s = setup();
    let cfg = BootstrapConfig::for_params(&s.params);
    let n16 = ParametersLiteral::preset("n16-boot").unwrap();
    assert_eq!(s.params.literal().q_bits, n16.q_bits);
    assert_eq!((cfg.cts_levels, cfg.stc_levels, cfg.log_slots), (4, 3, 11));
    assert_eq!(cfg.output_level(&s.params).unwrap(), 10);
    let bt = bootstrapper(&s, cfg);
    assert!(run(&s, &bt, 40, 1) >= 20.0);
}

/// 2^9 slots with one StC level: the two spare StC primes become levels (12 left).
#[test]
fn sparse_slots_one_stc_level_leaves_12_levels() {
    let s = setup();
    let cfg = BootstrapConfig::for_params(&s.params)
        .with_log_slots(9)
        .with_levels(4, 1);
    assert_eq!(cfg.output_level(&s.params).unwrap(), 12);
    let bt = bootstrapper(&s, cfg);
    assert_eq!(bt.output_level(), 12);
    // ~21 bits at D = 2^40 (the sine's cubic term and the one-level StC's
    // plaintext scale, 2^25, share the error), ~24.5 at D = 2^36.
    assert!(run(&s, &bt, 40, 2) >= 19.0);
    assert!(run(&s, &bt, 36, 3) >= 22.0);
    assert!(run_pair(&s, &bt, 4) >= 19.0);
}

/// 2^3 slots with one StC level. Few slots have large coefficients
/// (`|u| ~ |z|`), so the sine's cubic error `(2 pi D u / q_0)^2 / 6` limits
/// D = 2^40 to ~17-18 bits; the arcsine correction would need two more
/// 60-bit primes, which this chain (like n16-boot) does not have. A smaller
/// input scale is the remedy here: D = 2^36 gives ~26 bits.
#[test]
fn few_slots_one_stc_level() {
    let s = setup();
    let cfg = BootstrapConfig::for_params(&s.params)
        .with_log_slots(3)
        .with_levels(4, 1);
    let bt = bootstrapper(&s, cfg);
    assert_eq!(bt.output_level(), 12);
    assert!(run(&s, &bt, 40, 5) >= 16.0);
    assert!(run(&s, &bt, 36, 6) >= 23.0);
    assert!(run(&s, &bt, 34, 7) >= 23.0);
    assert!(run_pair(&s, &bt, 8) >= 15.0);
}

/// Fewer CtS levels, or the arcsine correction, would run EvalMod on primes
/// other than its 60-bit ones (the 56-bit CtS primes, the 40-bit StC ones):
/// its power basis then drifts by tens of bits and the result is garbage, so
/// the configuration is refused instead.
#[test]
fn eval_mod_off_its_primes_is_refused() {
    let s = setup();
    let base = BootstrapConfig::for_params(&s.params).with_log_slots(9);
    for cfg in [
        base.clone().with_levels(3, 1),
        base.clone().with_levels(2, 1),
        base.clone().with_levels(4, 1).with_arcsine(true),
        base.clone().with_arcsine(true),
    ] {
        let err = BootstrapKeys::generate(&s.params, &cfg, &s.sk, &[]).unwrap_err();
        eprintln!(
            "  CtS {} StC {} arcsine {}: {err}",
            cfg.cts_levels, cfg.stc_levels, cfg.arcsine
        );
        assert!(matches!(err, CkksError::InvalidParameters(_)));
    }
}

/// Sparse packing (`2n <= N/2`): real and imaginary parts share one EvalMod
/// on `2n` slots. The largest sparse count at N = 2^12 (2^10, so `2n = N/2`)
/// with one and with three StC levels, and the smallest (one slot, whose
/// coefficients are large: a smaller input scale, as for 2^3 slots).
#[test]
fn sparse_packing_largest_and_smallest_slot_counts() {
    let s = setup();
    let base = BootstrapConfig::for_params(&s.params).with_log_slots(10);
    let steps = ensi_ckks::circuits::bootstrap::rotation_steps(&s.params, &base).unwrap();
    assert!(steps.contains(&(1 << 10)), "the recombination rotates by n");
    for (cfg, left, log_d, min_bits) in [
        (base.clone().with_levels(4, 1), 12, 40, 21.0),
        (base.clone(), 10, 40, 21.0),
        (
            base.clone().with_log_slots(0).with_levels(4, 1),
            12,
            34,
            22.0,
        ),
    ] {
        let bt = bootstrapper(&s, cfg);
        assert_eq!(bt.output_level(), left);
        assert!(run(&s, &bt, log_d, 11) >= min_bits);
    }
}

/// One CoeffsToSlots and one SlotsToCoeffs level (the whole FFT in one
/// transform each way) on a chain built for it at N = 2^11 (NOT secure),
/// up to the largest sparse count there (2^9, `2n = N/2`).
#[test]
fn sparse_packing_one_cts_and_one_stc_level() {
    let mut lit = ParametersLiteral::preset("insecure-boot-n11").unwrap();
    lit.name = "insecure-boot-n11-cts1".into();
    // q_0, 2 levels left, StC 1 (40 bits), EvalMod 8 (60), CtS 1 (56).
    lit.q_bits = std::iter::once(48)
        .chain([40; 3])
        .chain([60; 8])
        .chain([56])
        .collect();
    let params = lit.build().unwrap();
    let sk = KeyGenerator::new(&params).gen_secret_key();
    let s = Setup {
        encoder: Encoder::new(&params),
        dec: Decryptor::new(&sk),
        sk,
        params,
    };
    for log_slots in [4u32, 9] {
        let cfg = BootstrapConfig::for_params(&s.params)
            .with_log_slots(log_slots)
            .with_levels(1, 1);
        let bt = bootstrapper(&s, cfg);
        assert_eq!(bt.output_level(), 2);
        assert!(run(&s, &bt, 36, 12 + log_slots as u64) >= 20.0);
        // The pair runs at the default scale 2^40: few slots are limited by
        // the sine's cubic term there (see `few_slots_one_stc_level`).
        let pair_bits = if log_slots < 8 { 15.0 } else { 18.0 };
        assert!(run_pair(&s, &bt, 13) >= pair_bits);
    }
}

/// One key set for two slot counts ([`BootstrapKeys::generate_for`]): the
/// full-slot bootstrapper and its sparse sibling ([`Bootstrapper::sibling`])
/// share it, and the sibling refreshes a full-slot ciphertext whose values
/// repeat with period n read as n slots (a sum over blocks, as the wide
/// layout's norms make). Keys made for one configuration refuse a sibling
/// of the other with a typed error.
#[test]
fn sibling_bootstraps_a_periodic_full_slot_ciphertext() {
    let s = setup();
    let full_slots = s.params.log_slots();
    let mut full = BootstrapConfig::for_params(&s.params).with_log_slots(full_slots);
    full.stc_levels = 2;
    let mut sparse = BootstrapConfig::for_params(&s.params).with_log_slots(6);
    sparse.stc_levels = 1;
    let only_full = Bootstrapper::new(
        &s.params,
        full.clone(),
        BootstrapKeys::generate(&s.params, &full, &s.sk, &[]).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        only_full.sibling(sparse.clone()),
        Err(CkksError::MissingGaloisKey(_))
    ));
    drop(only_full);
    let keys = BootstrapKeys::generate_for(&s.params, &[&full, &sparse], &s.sk, &[], None).unwrap();
    let bt = Bootstrapper::new(&s.params, full, keys).unwrap();
    let sib = bt.sibling(sparse).unwrap();
    assert!(
        sib.output_level() > bt.output_level(),
        "one StC level instead of two"
    );
    // 64 values repeated over all 2048 slots.
    let period = real_values(64, 3);
    let v: Vec<Complex64> = (0..1usize << full_slots).map(|j| period[j % 64]).collect();
    let ct = encrypt_at_level0(&s, &v, full_slots);
    let mut as_sparse = ct.clone();
    as_sparse.set_log_slots(6);
    let mut out = sib.bootstrap(&as_sparse).unwrap();
    out.set_log_slots(full_slots);
    let got = s.encoder.decode(&s.dec.decrypt(&out).unwrap());
    let bits = precision_bits(&got, &v);
    eprintln!(
        "periodic full-slot ciphertext through the 64-slot sibling: {bits:.1} bits, level {}",
        out.level()
    );
    assert!(bits > 15.0, "{bits:.1} bits");
    // The full-slot bootstrapper still works on the shared keys.
    let got = s
        .encoder
        .decode(&s.dec.decrypt(&bt.bootstrap(&ct).unwrap()).unwrap());
    assert!(precision_bits(&got, &v) > 15.0);
}
