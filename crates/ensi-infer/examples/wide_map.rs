//! Times one wide map at 1bitllm-large's shape (N = 2^16, `n16-boot`, 128
//! tokens, 256 blocks), as `EncryptedModel::wide_block` runs it, on random
//! ternary weights: `IN` real input ciphertexts (default 6: 1536 columns) to
//! the real output counts in `OUTS` (default "6,6": the q and k maps), at
//! `LEVEL` (default 11), weights varying per token if `PER_TOKEN=1` (as RoPE
//! makes q's and k's), `RUNS` times (default 2). Checks one output slot
//! against the plaintext product.
use ensi_ckks::*;
use ensi_infer::wide::{map_rotations, packed, wide_maps, WideWeight};
use std::sync::Arc;
use std::time::Instant;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

type Weight<'a> = Box<dyn Fn(usize, usize, &mut [f64]) -> bool + Sync + 'a>;

fn main() {
    let params = ParametersLiteral::preset("n16-boot")
        .unwrap()
        .build()
        .unwrap();
    let (s, blocks) = (128usize, 256usize);
    let c_in: usize = env("IN", "6").parse().unwrap();
    let outs: Vec<usize> = env("OUTS", "6,6")
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    let level: usize = env("LEVEL", "11").parse().unwrap();
    let per_token = env("PER_TOKEN", "0") == "1";
    let runs: usize = env("RUNS", "2").parse().unwrap();
    let packed_outs: usize = outs.iter().map(|&c| packed(c)).sum();

    let t = Instant::now();
    let mut kg = KeyGenerator::new(&params);
    let sk = kg.gen_secret_key();
    let mut keys = EvaluationKeys::default();
    let mut conj = kg.gen_conjugation_key(&sk);
    conj.truncate_to_level(&params, level);
    keys.insert_galois(conj);
    for step in map_rotations(2 * packed(c_in), packed_outs, s, blocks) {
        let mut k = kg.gen_rotation_key(&sk, step);
        k.truncate_to_level(&params, level);
        keys.insert_galois(k);
    }
    let eval = Evaluator::new(&params, Arc::new(keys));
    let encoder = Encoder::new(&params);
    eprintln!("keys: {:.1} s", t.elapsed().as_secs_f64());

    // Inputs: x(c, t) for real column c = m B + b, packed two by two.
    let cols = c_in * blocks;
    let x = |c: usize, t: usize| ((c * 7 + t * 13) % 17) as f64 / 17.0 - 0.5;
    let mut enc = Encryptor::with_secret_key(&params, &sk);
    let cz = packed(c_in);
    let zs: Vec<Ciphertext> = (0..cz)
        .map(|m| {
            let v: Vec<Complex64> = (0..blocks * s)
                .map(|i| {
                    let (b, t) = (i / s, i % s);
                    let im = if m + cz < c_in {
                        x((m + cz) * blocks + b, t)
                    } else {
                        0.0
                    };
                    Complex64::new(x(m * blocks + b, t), im)
                })
                .collect();
            let pt = encoder.encode(&v, level, 2f64.powi(40), 15).unwrap();
            enc.encrypt(&pt).unwrap()
        })
        .collect();
    let w = |o: usize, i: usize| -> f64 {
        let h = (o.wrapping_mul(2654435761) ^ i.wrapping_mul(40503)) % 3;
        h as f64 - 1.0
    };
    let wave: Vec<f64> = (0..s).map(|t| (0.1 * t as f64).cos()).collect();
    let wave = &wave;
    let weights: Vec<Weight> = (0..outs.len())
        .map(|m| {
            let f = move |o: usize, i: usize, out: &mut [f64]| {
                let v = w(o + 100_000 * m, i) * 0.01;
                if v == 0.0 {
                    return false;
                }
                if per_token {
                    for (y, c) in out.iter_mut().zip(wave) {
                        *y = v * c;
                    }
                } else {
                    out.fill(v);
                }
                true
            };
            Box::new(f) as Weight
        })
        .collect();
    let maps: Vec<(usize, WideWeight)> = outs
        .iter()
        .zip(&weights)
        .map(|(&c, f)| (c, f.as_ref() as WideWeight))
        .collect();
    let mut times = Vec::new();
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        out = Some(wide_maps(&eval, &encoder, &zs, c_in, s, blocks, &maps).unwrap());
        times.push(t.elapsed().as_secs_f64());
        eprintln!("map: {:.2} s", times.last().unwrap());
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Output column 0 of the first map at token 3, against the plaintext sum.
    let y = &out.unwrap()[0][0];
    let dec = Decryptor::new(&sk);
    let got = encoder.decode(&dec.decrypt(y).unwrap());
    let t = 3;
    let mut buf = vec![0.0; s];
    let want: f64 = (0..cols)
        .map(|i| {
            if (maps[0].1)(0, i, &mut buf) {
                buf[t] * x(i, t)
            } else {
                0.0
            }
        })
        .sum();
    println!(
        "IN {c_in} OUTS {outs:?} LEVEL {level} PER_TOKEN {per_token}: min {:.2} s over {runs} runs; \
         check {:.4e} vs {:.4e}",
        times[0], got[t].re, want
    );
}
