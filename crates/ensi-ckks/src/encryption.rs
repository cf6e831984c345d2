//! Encryption (public or secret key) and decryption.

use crate::ciphertext::{Ciphertext, Plaintext};
use crate::error::{CkksError, Result};
use crate::keys::{PublicKey, SecretKey};
use crate::params::Parameters;
use crate::ring::RnsPoly;
use crate::sampling::Sampler;

/// Encrypts plaintexts under a public key (anyone) or the secret key (the client).
pub struct Encryptor {
    params: Parameters,
    key: EncryptionKey,
    sampler: Sampler,
}

enum EncryptionKey {
    Public(PublicKey),
    Secret(SecretKey),
}

impl Encryptor {
    /// Public-key encryption: (b u + e0 + m, a u + e1) with ternary u.
    pub fn with_public_key(params: &Parameters, pk: &PublicKey) -> Self {
        Self {
            params: params.clone(),
            key: EncryptionKey::Public(pk.clone()),
            sampler: Sampler::from_os(),
        }
    }

    /// Secret-key encryption: (-a s + e + m, a), with less noise than public-key encryption.
    pub fn with_secret_key(params: &Parameters, sk: &SecretKey) -> Self {
        Self {
            params: params.clone(),
            key: EncryptionKey::Secret(sk.clone()),
            sampler: Sampler::from_os(),
        }
    }

    fn small_poly(&self, coeffs: &[i64], q_limbs: usize) -> RnsPoly {
        let ring = self.params.ring();
        let mut p = ring.from_signed(coeffs, q_limbs, 0);
        ring.ntt(&mut p);
        p
    }

    /// Encrypts `pt` at its level and scale.
    pub fn encrypt(&mut self, pt: &Plaintext) -> Result<Ciphertext> {
        let ring = self.params.ring();
        let n = ring.n();
        let q_limbs = pt.poly.q_limbs();
        if pt.poly.limbs() * n != pt.poly.as_words().len() || q_limbs > self.params.q_count() {
            return Err(CkksError::ParametersMismatch);
        }
        let (c0, c1) = match &self.key {
            EncryptionKey::Public(pk) => {
                let u = self.sampler.ternary(n);
                let u = self.small_poly(&u, q_limbs);
                let e0 = self.sampler.gaussian(n);
                let e1 = self.sampler.gaussian(n);
                let mut c0 = self.small_poly(&e0, q_limbs);
                let mut c1 = self.small_poly(&e1, q_limbs);
                // The key is at the top level; only its first limbs are read.
                ring.mul_acc(&mut c0, &pk.b, &u);
                ring.mul_acc(&mut c1, &pk.a, &u);
                ring.add_assign(&mut c0, &pt.poly);
                (c0, c1)
            }
            EncryptionKey::Secret(sk) => {
                let a = self.sampler.uniform_poly(ring, q_limbs, 0);
                let e = self.sampler.gaussian(n);
                let mut c0 = self.small_poly(&e, q_limbs);
                let s = ring.q_prefix(&sk.poly, q_limbs);
                ring.sub_assign(&mut c0, &ring.mul(&a, &s));
                ring.add_assign(&mut c0, &pt.poly);
                (c0, a)
            }
        };
        Ok(Ciphertext {
            c0,
            c1,
            scale: pt.scale,
            log_slots: pt.log_slots,
        })
    }
}

/// Decrypts ciphertexts with the secret key.
pub struct Decryptor {
    sk: SecretKey,
}

impl Decryptor {
    /// A decryptor holding `sk`.
    pub fn new(sk: &SecretKey) -> Self {
        Self { sk: sk.clone() }
    }

    /// c0 + c1 s, as a plaintext at the ciphertext's level and scale.
    pub fn decrypt(&self, ct: &Ciphertext) -> Result<Plaintext> {
        let ring = self.sk.params.ring();
        let n = ring.n();
        let q_limbs = ct.c0.q_limbs();
        if q_limbs > ring.q_count()
            || ct.c0.p_limbs() != 0
            || ct.c1.q_limbs() != q_limbs
            || ct.c0.as_words().len() != q_limbs * n
            || ct.c1.as_words().len() != q_limbs * n
        {
            return Err(CkksError::ParametersMismatch);
        }
        let s = ring.q_prefix(&self.sk.poly, q_limbs);
        let mut m = ct.c0.clone();
        ring.mul_acc(&mut m, &ct.c1, &s);
        Ok(Plaintext {
            poly: m,
            scale: ct.scale,
            log_slots: ct.log_slots,
        })
    }
}
