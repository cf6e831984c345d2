use ensi_ckks::ring::basis::BasisConverter;
use ensi_ckks::*;
use std::time::Instant;
fn main() {
    let params = ParametersLiteral::preset("n16-l20")
        .unwrap()
        .build()
        .unwrap();
    let ring = params.ring();
    let n = ring.n();
    let src: Vec<usize> = (0..7).collect();
    let dst: Vec<usize> = (7..27).collect();
    let conv = BasisConverter::new(ring, &src, &dst);
    let input: Vec<Vec<u64>> = (0..7)
        .map(|i| (0..n as u64).map(|c| (c * 7919 + i) % 1000003).collect())
        .collect();
    let mut out = vec![vec![0u64; n]; 20];
    for centered in [false, true] {
        let mut best = f64::MAX;
        for _ in 0..7 {
            let inp: Vec<&[u64]> = input.iter().map(|v| v.as_slice()).collect();
            let mut o: Vec<&mut [u64]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
            let t = Instant::now();
            if centered {
                conv.convert_centered(ring, &inp, &mut o)
            } else {
                conv.convert(ring, &inp, &mut o)
            }
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "7 -> 20 limbs (centered {centered}): {best:.2} ms = {:.2} ns per MAC",
            best * 1e6 / (7.0 * 20.0 * n as f64)
        );
    }
}
