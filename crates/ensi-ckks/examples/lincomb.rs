//! Times the column-layout PCMM kernels (`signed_sums`, `linear_combinations`)
//! at one level of `PROF_PRESET` (default `n16-boot`), `D_IN` x `D_OUT`
//! random ternary weights, min over `RUNS`.
use ensi_ckks::*;
use std::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let preset = std::env::var("PROF_PRESET").unwrap_or_else(|_| "n16-boot".into());
    let params = ParametersLiteral::preset(&preset).unwrap().build().unwrap();
    let level = env("LEVEL", 11).min(params.max_level());
    let (d_in, d_out, runs) = (env("D_IN", 64), env("D_OUT", 64), env("RUNS", 3));
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key();
    let encoder = Encoder::new(&params);
    let mut enc = Encryptor::with_secret_key(&params, &sk);
    let pt = encoder
        .encode(
            &vec![Complex64::new(0.5, 0.0); 1 << params.log_slots()],
            level,
            params.default_scale(),
            params.log_slots(),
        )
        .unwrap();
    let ct = enc.encrypt(&pt).unwrap();
    let inputs = vec![ct; d_in];
    let mut s = 12345u64;
    let weights: Vec<i8> = (0..d_in * d_out)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % 3) as i8 - 1
        })
        .collect();
    let real: Vec<f64> = weights.iter().map(|&w| w as f64 * 0.01).collect();
    let eval = Evaluator::new(&params, Default::default());
    let min_ms = |f: &dyn Fn()| {
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::MAX, f64::min)
    };
    let t = min_ms(&|| drop(eval.signed_sums(&inputs, &weights, d_out).unwrap()));
    let g = if std::env::var_os("SKIP_GENERIC").is_some() {
        f64::NAN
    } else {
        min_ms(&|| {
            drop(
                eval.linear_combinations(&inputs, &real, d_out, 2f64.powi(40))
                    .unwrap(),
            )
        })
    };
    println!(
        "{preset} level {level}, {d_in} -> {d_out}: signed_sums {t:.1} ms, linear_combinations {g:.1} ms, ratio {:.2}",
        g / t
    );
}
