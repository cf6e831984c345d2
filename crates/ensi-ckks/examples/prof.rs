//! Phase timings of key switching (min over repeats, to see through noise) at
//! the top level of `PROF_PRESET` (default `n16-l20`).
use ensi_ckks::keyswitch::*;
use ensi_ckks::*;
use std::time::Instant;

fn min_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let preset = std::env::var("PROF_PRESET").unwrap_or_else(|_| "n16-l20".into());
    let params = ParametersLiteral::preset(&preset).unwrap().build().unwrap();
    let top = params.max_level();
    let ring = params.ring();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key();
    let rk = kg.gen_relin_key(&sk);
    let mut p = ring.zero(top + 1, 0, false);
    for (i, x) in p.data_mut_for_bench().iter_mut().enumerate() {
        *x = (i as u64 * 7919) % 1000003;
    }
    ring.ntt(&mut p);
    let runs = 7;
    println!(
        "decompose: {:.2} ms",
        min_ms(runs, || drop(std::hint::black_box(decompose(&params, &p))))
    );
    let mut d = decompose(&params, &p);
    println!(
        "product_mod_down: {:.2} ms",
        min_ms(runs, || drop(product_mod_down(
            &params,
            &mut d,
            rk.switching_key(),
            None
        )))
    );
    println!(
        "key_switch: {:.2} ms",
        min_ms(runs, || drop(key_switch(&params, &p, rk.switching_key())))
    );
    let ring = params.ring();
    let k = ring.galois_element_for_rotation(1);
    println!(
        "automorphism_ntt_map: {:.3} ms",
        min_ms(runs, || drop(std::hint::black_box(
            ring.automorphism_ntt_map(k)
        )))
    );
    let map = ring.automorphism_ntt_map(k);
    println!(
        "automorphism of {} limbs: {:.3} ms",
        top + 1,
        min_ms(runs, || drop(std::hint::black_box(
            ring.automorphism_ntt_with_map(&p, &map)
        )))
    );
    let encoder = Encoder::new(&params);
    let values: Vec<Complex64> = (0..params.n() / 2)
        .map(|i| Complex64::new((i % 7) as f64 * 0.1, (i % 5) as f64 * 0.1))
        .collect();
    println!(
        "encode at the top level: {:.2} ms",
        min_ms(runs, || drop(std::hint::black_box(encoder.encode(
            &values,
            top,
            2f64.powi(40),
            params.log_slots()
        ))))
    );
    let unscaled = encoder
        .unscaled_coefficients(&values, params.log_slots())
        .unwrap();
    println!(
        "encode_unscaled at the top level: {:.2} ms",
        min_ms(runs, || drop(std::hint::black_box(
            encoder.encode_unscaled(&unscaled, top, 2f64.powi(40))
        )))
    );
    let mut q = ring.zero(top + 1, 0, false);
    println!(
        "NTT of {} limbs (mean of forward and inverse): {:.2} ms",
        top + 1,
        min_ms(runs, || {
            ring.ntt(&mut q);
            ring.intt(&mut q)
        }) / 2.0
    );
    // `PROF_LOOP=k`: k more key switches, for a profiler to see them alone.
    let extra: usize = std::env::var("PROF_LOOP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if extra > 0 {
        let t = Instant::now();
        for _ in 0..extra {
            drop(std::hint::black_box(key_switch(
                &params,
                &p,
                rk.switching_key(),
            )));
        }
        println!(
            "loop: {:.2} ms per key switch",
            t.elapsed().as_secs_f64() * 1e3 / extra as f64
        );
    }
}
