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
    let params = ParametersLiteral::preset("n16-l20")
        .unwrap()
        .build()
        .unwrap();
    let ring = params.ring();
    let n = ring.n();
    let mut data: Vec<Vec<u64>> = (0..63)
        .map(|k| (0..n as u64).map(|j| (j * 7919 + k) % 1000003).collect())
        .collect();
    let plan0 = ring.plan(21, 1);
    let hot = min_ms(5, || {
        for _ in 0..21 {
            plan0.forward(&mut data[0])
        }
    }) / 21.0;
    let one_per_prime = min_ms(5, || {
        for i in 0..21 {
            ring.plan(21, i).forward(&mut data[i])
        }
    }) / 21.0;
    let three_per_prime = min_ms(5, || {
        for i in 0..21 {
            for d in 0..3 {
                ring.plan(21, i).forward(&mut data[3 * i + d])
            }
        }
    }) / 63.0;
    let same_prime_cold_data = min_ms(5, || {
        for i in 0..63 {
            plan0.forward(&mut data[i])
        }
    }) / 63.0;
    println!("per NTT: hot {hot:.3} ms, one per prime {one_per_prime:.3}, three per prime {three_per_prime:.3}, same prime cold data {same_prime_cold_data:.3}");
}
