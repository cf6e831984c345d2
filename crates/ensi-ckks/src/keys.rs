//! Secret, public and evaluation keys, and their generation.
//!
//! Evaluation keys use hybrid key switching: a switching key from s' to s has
//! one component per digit j of the Q chain,
//!
//!   (b_j, a_j) over QP,   b_j = -a_j s + e_j + P g_j s',
//!
//! where g_j is 1 modulo the digit's primes and 0 modulo the others. Every
//! uniform `a` is expanded from a 32-byte seed, so keys travel at half size.

use crate::error::{CkksError, Result};
use crate::params::Parameters;
use crate::ring::RnsPoly;
use crate::sampling::Sampler;
use std::collections::BTreeMap;

/// The client's secret: uniform ternary coefficients. Never sent anywhere.
#[derive(Clone)]
pub struct SecretKey {
    pub(crate) params: Parameters,
    pub(crate) coeffs: Vec<i8>,
    /// s in NTT form over every Q and P prime.
    pub(crate) poly: RnsPoly,
}

impl SecretKey {
    /// Builds the key from its ternary coefficients (each in {-1, 0, 1}).
    pub(crate) fn from_coeffs(params: &Parameters, coeffs: &[i64]) -> Self {
        let ring = params.ring();
        let mut poly = ring.from_signed(coeffs, ring.q_count(), ring.p_count());
        ring.ntt(&mut poly);
        SecretKey {
            params: params.clone(),
            coeffs: coeffs.iter().map(|&c| c as i8).collect(),
            poly,
        }
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// An encryption of zero under s at the top level, (b, a) = (-a s + e, a).
#[derive(Clone, Debug, PartialEq)]
pub struct PublicKey {
    pub(crate) b: RnsPoly,
    pub(crate) a: RnsPoly,
    pub(crate) seed: [u8; 32],
}

/// A hybrid key-switching key (one (b, a) pair per digit, over QP).
#[derive(Clone, Debug, PartialEq)]
pub struct SwitchingKey {
    pub(crate) b: Vec<RnsPoly>,
    pub(crate) a: Vec<RnsPoly>,
    pub(crate) seed: [u8; 32],
}

/// Switches s^2 back to s after a multiplication.
#[derive(Clone, Debug, PartialEq)]
pub struct RelinKey(pub(crate) SwitchingKey);

impl RelinKey {
    /// The underlying switching key.
    pub fn switching_key(&self) -> &SwitchingKey {
        &self.0
    }

    /// See [`SwitchingKey::truncate_to_level`].
    pub fn truncate_to_level(&mut self, params: &Parameters, level: usize) {
        self.0.truncate_to_level(params, level)
    }
}

/// Switches s(X^k) back to s after the automorphism X -> X^k.
#[derive(Clone, Debug, PartialEq)]
pub struct GaloisKey {
    pub(crate) galois_element: u64,
    pub(crate) key: SwitchingKey,
}

impl GaloisKey {
    /// The Galois element k of X -> X^k.
    pub fn galois_element(&self) -> u64 {
        self.galois_element
    }

    /// The underlying switching key.
    pub fn switching_key(&self) -> &SwitchingKey {
        &self.key
    }

    /// See [`SwitchingKey::truncate_to_level`].
    pub fn truncate_to_level(&mut self, params: &Parameters, level: usize) {
        self.key.truncate_to_level(params, level)
    }
}

impl SwitchingKey {
    /// The highest level this key can switch at.
    pub fn level(&self) -> usize {
        self.b.first().map_or(0, |p| p.q_limbs().saturating_sub(1))
    }

    /// Drops the Q limbs above `level` and the digits a ciphertext at `level`
    /// does not use: a key needed only at low levels shrinks to a fraction
    /// of its size (and is read faster).
    pub fn truncate_to_level(&mut self, params: &Parameters, level: usize) {
        if level >= self.level() {
            return;
        }
        let digits = params.digits_at(level);
        self.b.truncate(digits);
        self.a.truncate(digits);
        for p in self.b.iter_mut().chain(self.a.iter_mut()) {
            p.truncate_q(level + 1);
        }
    }

    /// Size of the raw residues in memory (both parts).
    pub fn byte_size(&self) -> usize {
        self.b
            .iter()
            .chain(&self.a)
            .map(|p| p.as_words().len() * 8)
            .sum()
    }
}

/// The public keys a server needs to evaluate: relinearization and Galois keys.
#[derive(Clone, Debug, Default)]
pub struct EvaluationKeys {
    /// The relinearization key, if multiplications are needed.
    pub relin: Option<RelinKey>,
    /// Galois keys by Galois element.
    pub galois: BTreeMap<u64, GaloisKey>,
}

impl EvaluationKeys {
    /// Adds a Galois key.
    pub fn insert_galois(&mut self, key: GaloisKey) {
        self.galois.insert(key.galois_element, key);
    }
}

/// Generates keys with OS-seeded randomness.
pub struct KeyGenerator {
    params: Parameters,
    sampler: Sampler,
}

/// Stream identifiers that separate the seeded expansions of one seed.
pub(crate) const STREAM_PUBLIC_KEY: u64 = u64::MAX;

/// Expands the uniform `a` of digit `digit` of a switching key from its seed.
pub(crate) fn expand_switching_a(params: &Parameters, seed: [u8; 32], digit: usize) -> RnsPoly {
    Sampler::from_seed(seed, digit as u64).uniform_poly(
        params.ring(),
        params.q_count(),
        params.p_count(),
    )
}

/// Expands the uniform `a` of a public key from its seed.
pub(crate) fn expand_public_a(params: &Parameters, seed: [u8; 32]) -> RnsPoly {
    Sampler::from_seed(seed, STREAM_PUBLIC_KEY).uniform_poly(params.ring(), params.q_count(), 0)
}

impl KeyGenerator {
    /// A key generator for `params`.
    pub fn new(params: &Parameters) -> Self {
        Self {
            params: params.clone(),
            sampler: Sampler::from_os(),
        }
    }

    /// A fresh uniform ternary secret key.
    pub fn gen_secret_key(&mut self) -> SecretKey {
        let coeffs = self.sampler.ternary(self.params.n());
        SecretKey::from_coeffs(&self.params, &coeffs)
    }

    /// An error polynomial in NTT form with the given limbs.
    fn error_poly(&mut self, q_limbs: usize, p_limbs: usize) -> RnsPoly {
        let ring = self.params.ring();
        let e = self.sampler.gaussian(ring.n());
        let mut poly = ring.from_signed(&e, q_limbs, p_limbs);
        ring.ntt(&mut poly);
        poly
    }

    /// The public key for `sk`.
    pub fn gen_public_key(&mut self, sk: &SecretKey) -> PublicKey {
        let params = self.params.clone();
        let ring = params.ring();
        let seed = self.sampler.seed();
        let a = expand_public_a(&self.params, seed);
        let mut s = sk.poly.clone();
        s.drop_p();
        let mut b = self.error_poly(ring.q_count(), 0);
        let mut as_ = a.clone();
        ring.mul_assign(&mut as_, &s);
        ring.sub_assign(&mut b, &as_);
        PublicKey { b, a, seed }
    }

    /// A switching key from `s_from` (NTT form over QP) to `sk`.
    fn gen_switching_key(&mut self, sk: &SecretKey, s_from: &RnsPoly) -> SwitchingKey {
        let params = self.params.clone();
        let ring = params.ring();
        let n = ring.n();
        let seed = self.sampler.seed();
        let alpha = params.alpha();
        let mut bs = Vec::with_capacity(params.dnum());
        let mut as_ = Vec::with_capacity(params.dnum());
        for digit in 0..params.dnum() {
            let a = expand_switching_a(&params, seed, digit);
            let mut b = self.error_poly(ring.q_count(), ring.p_count());
            let mut t = a.clone();
            ring.mul_assign(&mut t, &sk.poly);
            ring.sub_assign(&mut b, &t);
            // + P s' on the digit's own primes (g_j is 1 there, 0 on the other Q primes, and P = 0 mod P).
            for i in digit * alpha..((digit + 1) * alpha).min(ring.q_count()) {
                let m = &ring.q()[i];
                let w = params.p_mod_q()[i];
                let ws = m.shoup(w);
                let (b_limb, s_limb) = (
                    &mut b.data[i * n..(i + 1) * n],
                    &s_from.data[i * n..(i + 1) * n],
                );
                for (x, &s) in b_limb.iter_mut().zip(s_limb) {
                    *x = m.add(*x, m.mul_shoup(s, w, ws));
                }
            }
            bs.push(b);
            as_.push(a);
        }
        SwitchingKey {
            b: bs,
            a: as_,
            seed,
        }
    }

    /// The relinearization key (s^2 -> s).
    pub fn gen_relin_key(&mut self, sk: &SecretKey) -> RelinKey {
        let ring = self.params.ring();
        let mut s2 = sk.poly.clone();
        ring.mul_assign(&mut s2, &sk.poly);
        RelinKey(self.gen_switching_key(sk, &s2))
    }

    /// The Galois key for X -> X^k (k odd, below 2N).
    pub fn gen_galois_key(&mut self, sk: &SecretKey, galois_element: u64) -> Result<GaloisKey> {
        let two_n = 2 * self.params.n() as u64;
        if galois_element & 1 == 0 || galois_element >= two_n {
            return Err(CkksError::InvalidParameters(format!(
                "Galois element {galois_element} must be odd and < 2N"
            )));
        }
        let s_k = self.params.ring().automorphism(&sk.poly, galois_element);
        Ok(GaloisKey {
            galois_element,
            key: self.gen_switching_key(sk, &s_k),
        })
    }

    /// The Galois key that rotates slots left by `step` (negative: right).
    pub fn gen_rotation_key(&mut self, sk: &SecretKey, step: i64) -> GaloisKey {
        let k = self.params.ring().galois_element_for_rotation(step);
        self.gen_galois_key(sk, k)
            .expect("rotation elements are valid")
    }

    /// The Galois key that conjugates every slot.
    pub fn gen_conjugation_key(&mut self, sk: &SecretKey) -> GaloisKey {
        let k = self.params.ring().galois_element_conjugate();
        self.gen_galois_key(sk, k)
            .expect("conjugation element is valid")
    }

    /// A relinearization key and rotation keys for `steps`.
    pub fn gen_evaluation_keys(
        &mut self,
        sk: &SecretKey,
        steps: &[i64],
        conjugate: bool,
    ) -> EvaluationKeys {
        let mut keys = EvaluationKeys {
            relin: Some(self.gen_relin_key(sk)),
            galois: BTreeMap::new(),
        };
        for &s in steps {
            let k = self.params.ring().galois_element_for_rotation(s);
            if k != 1 && !keys.galois.contains_key(&k) {
                keys.insert_galois(self.gen_rotation_key(sk, s));
            }
        }
        if conjugate {
            keys.insert_galois(self.gen_conjugation_key(sk));
        }
        keys
    }
}
