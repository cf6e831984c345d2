use ensi_ckks::*;
use std::time::Instant;
fn main() {
    let params = ParametersLiteral::preset("n16-l20").unwrap().build().unwrap();
    let ring = params.ring();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key();
    let mut p = ring.zero(21, 0, false);
    for (i, x) in p.data_mut_for_bench().iter_mut().enumerate() { *x = (i as u64 * 7919) % 1000003; }
    let t = Instant::now();
    for _ in 0..5 { ring.ntt(&mut p); ring.intt(&mut p); }
    println!("21-limb ntt+intt: {:.2} ms", t.elapsed().as_secs_f64() * 1e3 / 5.0);
    let q = p.clone();
    let t = Instant::now();
    for _ in 0..5 { let mut a = q.clone(); ring.add_assign(&mut a, &q); }
    println!("clone+add: {:.2} ms", t.elapsed().as_secs_f64() * 1e3 / 5.0);
    let mut a = q.clone();
    let t = Instant::now();
    for _ in 0..5 { ring.add_assign(&mut a, &q); }
    println!("add in place: {:.2} ms", t.elapsed().as_secs_f64() * 1e3 / 5.0);
    let _ = sk;
    let mut pn = q.clone(); ring.ntt(&mut pn);
    let t = Instant::now();
    for _ in 0..5 { let d = ensi_ckks::keyswitch::decompose(&params, &pn); std::hint::black_box(d); }
    println!("decompose: {:.2} ms", t.elapsed().as_secs_f64() * 1e3 / 5.0);
    let rk = kg.gen_relin_key(&sk);
    let d = ensi_ckks::keyswitch::decompose(&params, &pn);
    let t = Instant::now();
    for _ in 0..5 { let r = ensi_ckks::keyswitch::key_product(&params, &d, rk.switching_key(), None); std::hint::black_box(r); }
    println!("key_product: {:.2} ms", t.elapsed().as_secs_f64() * 1e3 / 5.0);
    let (a0, _) = ensi_ckks::keyswitch::key_product(&params, &d, rk.switching_key(), None);
    let t = Instant::now();
    for _ in 0..5 { let r = ensi_ckks::keyswitch::mod_down_pair(&params, &a0, &a0); std::hint::black_box(r); }
    println!("mod_down_pair: {:.2} ms", t.elapsed().as_secs_f64() * 1e3 / 5.0);
}
