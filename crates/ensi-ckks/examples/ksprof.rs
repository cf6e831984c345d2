//! A key-switching loop at n16-l20 to run under `perf record`.
use ensi_ckks::keyswitch::*;
use ensi_ckks::*;
fn main() {
    let params = ParametersLiteral::preset("n16-l20")
        .unwrap()
        .build()
        .unwrap();
    let ring = params.ring();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key();
    let rk = kg.gen_relin_key(&sk);
    let mut p = ring.zero(21, 0, false);
    for (i, x) in p.data_mut_for_bench().iter_mut().enumerate() {
        *x = (i as u64 * 7919) % 1000003;
    }
    ring.ntt(&mut p);
    for _ in 0..20 {
        std::hint::black_box(key_switch(&params, &p, rk.switching_key()));
    }
}
