//! Shared set-up for the end-to-end CKKS tests: a parameter set, keys, and
//! helpers to compare decrypted slots with the same computation in plaintext.
#![allow(dead_code)]

use ensi_ckks::*;
use std::sync::Arc;

pub struct Ctx {
    pub params: Parameters,
    pub encoder: Encoder,
    pub sk: SecretKey,
    pub pk: PublicKey,
    pub enc: Encryptor,
    pub dec: Decryptor,
    pub eval: Evaluator,
}

impl Ctx {
    pub fn new(preset: &str, rotations: &[i64]) -> Self {
        let params = ParametersLiteral::preset(preset).unwrap().build().unwrap();
        let mut kg = KeyGenerator::new(&params);
        let sk = kg.gen_secret_key();
        let pk = kg.gen_public_key(&sk);
        let keys = kg.gen_evaluation_keys(&sk, rotations, true);
        Self {
            encoder: Encoder::new(&params),
            enc: Encryptor::with_public_key(&params, &pk),
            dec: Decryptor::new(&sk),
            eval: Evaluator::new(&params, Arc::new(keys)),
            params,
            sk,
            pk,
        }
    }

    pub fn slots(&self) -> usize {
        1 << self.params.log_slots()
    }

    /// The values encoded at the top level, default scale, full slots.
    pub fn encode(&self, v: &[Complex64]) -> Plaintext {
        let p = &self.params;
        self.encoder
            .encode(v, p.max_level(), p.default_scale(), p.log_slots())
            .unwrap()
    }

    /// Public-key encryption.
    pub fn encrypt(&mut self, v: &[Complex64]) -> Ciphertext {
        let pt = self.encode(v);
        self.enc.encrypt(&pt).unwrap()
    }

    /// Secret-key encryption (what a client that holds the key uses: less noise).
    pub fn encrypt_sk(&mut self, v: &[Complex64]) -> Ciphertext {
        let pt = self.encode(v);
        Encryptor::with_secret_key(&self.params, &self.sk)
            .encrypt(&pt)
            .unwrap()
    }

    pub fn decrypt(&self, ct: &Ciphertext) -> Vec<Complex64> {
        self.encoder.decode(&self.dec.decrypt(ct).unwrap())
    }
}

/// Uniform complex values with real and imaginary parts in [-1, 1].
pub fn random_values(n: usize, seed: u64) -> Vec<Complex64> {
    let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    (0..n).map(|_| Complex64::new(next(), next())).collect()
}

/// -log2 of the largest slot error: the precision in bits.
pub fn precision_bits(got: &[Complex64], want: &[Complex64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let err = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).norm())
        .fold(0.0, f64::max);
    -err.max(1e-300).log2()
}

/// Asserts that `got` matches `want` to at least `bits` bits (and prints it).
#[track_caller]
pub fn assert_precision(what: &str, got: &[Complex64], want: &[Complex64], bits: f64) {
    let p = precision_bits(got, want);
    eprintln!("{what}: {p:.1} bits");
    assert!(p >= bits, "{what}: precision {p:.1} bits < {bits} bits");
}
