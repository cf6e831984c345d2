//! Phase timings and precision of full-slot bootstraps at `n16-boot` (2^15
//! slots, the default CtS 4 / StC 3 levels), on the global thread pool (set
//! `RAYON_NUM_THREADS=1` for the single-thread figure), `RUNS` times (default 2).
//! Needs about 6.5 GB and a minute for the keys: run it alone, in release mode:
//!
//! `RAYON_NUM_THREADS=1 cargo run --release -p ensi-ckks --example boot_full`
//! (`STC=2` for two SlotsToCoeffs levels, as the wide layout uses).
use ensi_ckks::circuits::bootstrap::{BootstrapConfig, BootstrapKeys, Bootstrapper};
use ensi_ckks::*;
use std::time::Instant;

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let params = ParametersLiteral::preset("n16-boot")?.build()?;
    let log_slots = params.log_slots();
    let mut config = BootstrapConfig::for_params(&params).with_log_slots(log_slots);
    // STC=2: the wide layout's two SlotsToCoeffs levels.
    if let Some(stc) = std::env::var("STC").ok().and_then(|v| v.parse().ok()) {
        config.stc_levels = stc;
    }
    let sk = KeyGenerator::new(&params).gen_secret_key();
    let t = Instant::now();
    let keys = BootstrapKeys::generate(&params, &config, &sk, &[])?;
    println!(
        "keygen {:.1} s, {} galois keys",
        t.elapsed().as_secs_f64(),
        keys.eval.galois.len()
    );
    let bt = Bootstrapper::new(&params, config, keys)?;
    let encoder = Encoder::new(&params);
    let dec = Decryptor::new(&sk);
    let mut enc = Encryptor::with_secret_key(&params, &sk);
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let values: Vec<Complex64> = (0..1usize << log_slots)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            Complex64::new((s >> 11) as f64 / 2f64.powi(53) * 2.0 - 1.0, 0.0)
        })
        .collect();
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    for _ in 0..runs {
        let pt = encoder.encode(&values, 0, 2f64.powi(40), log_slots)?;
        let ct = enc.encrypt(&pt)?;
        let t = Instant::now();
        let (out, phases) = bt.bootstrap_timed(&ct)?;
        let secs = t.elapsed().as_secs_f64();
        let got = encoder.decode(&dec.decrypt(&out)?);
        let (mut max, mut sum) = (0f64, 0f64);
        for (a, b) in got.iter().zip(&values) {
            let e = (a - b).norm();
            max = max.max(e);
            sum += -e.max(1e-300).log2();
        }
        println!(
            "{secs:.2} s: {:.1} min / {:.1} mean bits, level {}; ModRaise {:.2} CtS {:.2} EvalMod {:.2} StC {:.2} (encoding {:.2})",
            -max.log2(), sum / got.len() as f64, out.level(),
            phases.mod_raise.as_secs_f64(), phases.coeffs_to_slots.as_secs_f64(),
            phases.eval_mod.as_secs_f64(), phases.slots_to_coeffs.as_secs_f64(), phases.encoding.as_secs_f64()
        );
    }
    Ok(())
}
