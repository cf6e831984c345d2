//! Phase timings of key switching at n16-l20 (min over repeats, to see through noise).
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
    let params = ParametersLiteral::preset("n16-l20").unwrap().build().unwrap();
    let ring = params.ring();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key();
    let rk = kg.gen_relin_key(&sk);
    let mut p = ring.zero(21, 0, false);
    for (i, x) in p.data_mut_for_bench().iter_mut().enumerate() {
        *x = (i as u64 * 7919) % 1000003;
    }
    let runs = 7;
    println!("21-limb ntt+intt: {:.2} ms", min_ms(runs, || { ring.ntt(&mut p); ring.intt(&mut p); }));
    let q = p.clone();
    println!("clone: {:.2} ms", min_ms(runs, || drop(std::hint::black_box(q.clone()))));
    let mut a = q.clone();
    println!("add in place: {:.2} ms", min_ms(runs, || ring.add_assign(&mut a, &q)));
    let mut pn = q.clone();
    ring.ntt(&mut pn);
    println!("decompose: {:.2} ms", min_ms(runs, || drop(std::hint::black_box(decompose(&params, &pn)))));
    let d = decompose(&params, &pn);
    println!("key_product: {:.2} ms", min_ms(runs, || drop(key_product(&params, &d, rk.switching_key(), None))));
    let (a0, a1) = key_product(&params, &d, rk.switching_key(), None);
    println!("mod_down_pair: {:.2} ms", min_ms(runs, || drop(mod_down_pair(&params, &a0, &a1))));
    println!("key_switch: {:.2} ms", min_ms(runs, || drop(key_switch(&params, &pn, rk.switching_key()))));
}
