use ensi_ckks::*;
use std::time::Instant;
fn main() {
    let params = ParametersLiteral::preset("n16-l20").unwrap().build().unwrap();
    let ring = params.ring();
    for i in [0usize, 1, 2, 21] {
        let plan = ring.plan(21, i);
        let q = plan.modulus().value();
        let mut v: Vec<u64> = (0..ring.n() as u64).map(|j| j * 7919 % q).collect();
        let t = Instant::now();
        for _ in 0..50 { plan.forward(&mut v); }
        let f = t.elapsed().as_secs_f64() * 1e3 / 50.0;
        let t = Instant::now();
        for _ in 0..50 { plan.inverse(&mut v); }
        let inv = t.elapsed().as_secs_f64() * 1e3 / 50.0;
        println!("limb {i} q={q} ({:.2} bits): fwd {f:.3} ms inv {inv:.3} ms", (q as f64).log2());
    }
    let n = ring.n();
    let mut p = ring.zero(21, 0, false);
    for (i, x) in p.data_mut_for_bench().iter_mut().enumerate() { *x = (i as u64 * 7919) % 1000003; }
    let t = Instant::now();
    for _ in 0..5 {
        for (i, limb) in p.data_mut_for_bench().chunks_mut(n).enumerate() { ring.plan(21, i).forward(limb); }
        for (i, limb) in p.data_mut_for_bench().chunks_mut(n).enumerate() { ring.plan(21, i).inverse(limb); }
    }
    println!("sequential 21-limb fwd+inv: {:.2} ms", t.elapsed().as_secs_f64() * 1e3 / 5.0);
    let t = Instant::now();
    for _ in 0..5 {
        for (i, limb) in p.data_mut_for_bench().chunks_mut(n).enumerate() { ring.plan(21, i).forward(limb); }
    }
    println!("sequential 21-limb fwd: {:.2} ms", t.elapsed().as_secs_f64() * 1e3 / 5.0);
    let t = Instant::now();
    for _ in 0..5 {
        for (i, limb) in p.data_mut_for_bench().chunks_mut(n).enumerate() { ring.plan(21, i).inverse(limb); }
    }
    println!("sequential 21-limb inv: {:.2} ms", t.elapsed().as_secs_f64() * 1e3 / 5.0);
}
#[allow(dead_code)]
fn unused() {}
