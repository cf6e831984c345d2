//! CKKS parameters: a plain literal validated once into immutable [`Parameters`].
//!
//! Presets are named data ([`ParametersLiteral::preset`]), not code paths. A
//! literal whose modulus QP is too large for 128-bit security at its ring
//! degree is refused unless it is a named insecure test preset.

use crate::error::{CkksError, Result};
use crate::math::primes::ntt_primes;
use crate::ring::basis::BasisConverter;
use crate::ring::Ring;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Distribution of the secret key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretDistribution {
    /// Uniform over {-1, 0, 1}^N (the HomomorphicEncryption.org standard's ternary secret).
    UniformTernary,
}

/// Maximum log2(QP) at 128-bit classical security for a uniform ternary
/// secret, from the HomomorphicEncryption.org security standard (N = 2^10 to
/// 2^15) and its extension to N = 2^16. `None` for degrees outside the table.
pub fn max_log_qp_128(log_n: u32) -> Option<u32> {
    match log_n {
        10 => Some(27),
        11 => Some(54),
        12 => Some(109),
        13 => Some(218),
        14 => Some(438),
        15 => Some(881),
        16 => Some(1772),
        _ => None,
    }
}

/// Everything that defines a parameter set, before validation.
#[derive(Clone, Debug, PartialEq)]
pub struct ParametersLiteral {
    /// Name of the preset; insecure presets must start with `insecure-`.
    pub name: String,
    /// log2 of the ring degree N.
    pub log_n: u32,
    /// log2 of the default scale.
    pub log_scale: u32,
    /// Bit sizes of the ciphertext primes q_0, ..., q_L (q_0 first).
    pub q_bits: Vec<u32>,
    /// Bit sizes of the special primes P used by key switching.
    pub p_bits: Vec<u32>,
    /// Number of digits of the hybrid key-switching decomposition.
    pub dnum: usize,
    /// Secret distribution.
    pub secret: SecretDistribution,
    /// log2 of the default slot count (at most log_n - 1).
    pub log_slots: u32,
    /// Set only for named test presets that are below 128-bit security.
    pub insecure: bool,
}

/// Names of the built-in presets.
pub const PRESETS: &[&str] = &[
    "n16-l20",
    "n15-l10",
    "n16-boot",
    "insecure-n12",
    "insecure-n10",
    "insecure-boot-n11",
    "insecure-boot-n12",
];

impl ParametersLiteral {
    /// A named preset.
    ///
    /// * `n16-l20`: N = 2^16, a 50-bit q_0 and 20 rescaling primes of 40 bits
    ///   (scale 2^40), dnum 3 with 6 special primes of 50 bits; log2(QP) ~ 1150.
    ///   The setting of the OpenFHE comparison.
    /// * `n15-l10`: N = 2^15, 10 levels at 2^40, dnum 3; log2(QP) ~ 650.
    /// * `n16-boot`: N = 2^16 for bootstrapping (see `circuits::bootstrap`):
    ///   q_0 of 48 bits, 10 levels of 40 bits left after bootstrapping, 3 + 8 + 4
    ///   levels (40, 60, 56 bits) for SlotsToCoeffs, EvalMod and CoeffsToSlots,
    ///   dnum 3 with 8 special primes of 60 bits; log2(QP) ~ 1752.
    /// * `insecure-n12`, `insecure-n10`: small, fast and NOT secure; for tests.
    /// * `insecure-boot-n11`: the bootstrapping chain at N = 2^11 with 10 EvalMod
    ///   primes (room for the arcsine correction), 4 levels left without it
    ///   and 2 with it; NOT secure, for tests.
    /// * `insecure-boot-n12`: exactly the chain of `n16-boot` (same prime sizes,
    ///   same 8 special primes, dnum 3) at N = 2^12, so that its level flow
    ///   (10 levels left, or 12 with one SlotsToCoeffs level) is tested in
    ///   seconds; log2(QP) ~ 1752, far above the 109 allowed at N = 2^12:
    ///   NOT secure, for tests.
    pub fn preset(name: &str) -> Result<Self> {
        let lit = |log_n, q_bits: Vec<u32>, p_bits: Vec<u32>, dnum, insecure| ParametersLiteral {
            name: name.to_string(),
            log_n,
            log_scale: 40,
            q_bits,
            p_bits,
            dnum,
            secret: SecretDistribution::UniformTernary,
            log_slots: log_n - 1,
            insecure,
        };
        let chain = |levels: usize| {
            std::iter::once(50)
                .chain(std::iter::repeat_n(40, levels))
                .collect::<Vec<u32>>()
        };
        let boot_chain = |left: usize, stc: usize, eval_mod: usize, cts: usize| {
            std::iter::once(48)
                .chain(std::iter::repeat_n(40, left + stc))
                .chain(std::iter::repeat_n(60, eval_mod))
                .chain(std::iter::repeat_n(56, cts))
                .collect::<Vec<u32>>()
        };
        Ok(match name {
            "n16-l20" => lit(16, chain(20), vec![50; 6], 3, false),
            "n15-l10" => lit(15, chain(10), vec![50; 4], 3, false),
            "insecure-n12" => lit(12, chain(5), vec![50; 2], 3, true),
            "insecure-n10" => lit(10, chain(3), vec![50; 2], 2, true),
            // Bootstrapping chains, q_0 first: q_0 ~ 2^48 (message ratio 2^8 at
            // scale 2^40), the levels left after bootstrapping (40 bits), then
            // SlotsToCoeffs (40), EvalMod (60) and CoeffsToSlots (56) on top.
            "n16-boot" => lit(16, boot_chain(10, 3, 8, 4), vec![60; 8], 3, false),
            "insecure-boot-n11" => lit(11, boot_chain(2, 2, 10, 3), vec![60; 5], 4, true),
            "insecure-boot-n12" => lit(12, boot_chain(10, 3, 8, 4), vec![60; 8], 3, true),
            _ => {
                return Err(CkksError::UnknownPreset(
                    name.to_string(),
                    PRESETS.join(", "),
                ))
            }
        })
    }

    /// Validates the literal into parameters (generates primes and tables).
    pub fn build(&self) -> Result<Parameters> {
        Parameters::new(self.clone())
    }
}

/// Validated, immutable parameters. Cheap to clone (shared).
#[derive(Clone)]
pub struct Parameters {
    inner: Arc<Inner>,
}

struct Inner {
    literal: ParametersLiteral,
    ring: Ring,
    q: Vec<u64>,
    p: Vec<u64>,
    alpha: usize,
    log_qp: f64,
    fingerprint: [u8; 32],
    /// [level][digit]: from the digit's limbs to the other Q limbs of the level, then P
    /// (inputs straight from an unnormalized inverse NTT).
    mod_up: Vec<Vec<BasisConverter>>,
    /// [level]: from P to q_0..q_level (inputs from an unnormalized inverse NTT).
    mod_down: Vec<BasisConverter>,
    /// [level]: from P and q_level to q_0..q_{level-1}, for a key switch
    /// fused with a rescale (none at level 0).
    mod_down_rescale: Vec<Option<BasisConverter>>,
    /// [i]: P mod q_i, then P^-1 mod q_i.
    p_mod_q: Vec<u64>,
    p_inv_mod_q: Vec<u64>,
    /// [l][i]: q_l^-1 mod q_i for i < l.
    q_inv: Vec<Vec<u64>>,
}

impl std::fmt::Debug for Parameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Parameters({}: N=2^{}, {} Q primes, {} P primes, dnum {}, log QP {:.1})",
            self.name(),
            self.log_n(),
            self.q_count(),
            self.p_count(),
            self.dnum(),
            self.log_qp()
        )
    }
}

impl PartialEq for Parameters {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.fingerprint == other.inner.fingerprint
    }
}

impl Parameters {
    fn new(lit: ParametersLiteral) -> Result<Self> {
        let bad = |s: String| Err(CkksError::InvalidParameters(s));
        if !(4..=17).contains(&lit.log_n) {
            return bad(format!("log_n = {} outside 4..=17", lit.log_n));
        }
        if lit.q_bits.is_empty() {
            return bad("the Q chain is empty".into());
        }
        if lit.p_bits.is_empty() {
            return bad("key switching needs at least one special prime".into());
        }
        if lit.dnum == 0 || lit.dnum > lit.q_bits.len() {
            return bad(format!(
                "dnum = {} outside 1..={}",
                lit.dnum,
                lit.q_bits.len()
            ));
        }
        if lit.log_slots >= lit.log_n {
            return bad(format!(
                "log_slots = {} must be below log_n = {}",
                lit.log_slots, lit.log_n
            ));
        }
        if lit.log_scale < 10 || lit.log_scale > 60 {
            return bad(format!("log_scale = {} outside 10..=60", lit.log_scale));
        }
        if lit.insecure != lit.name.starts_with("insecure-") {
            return bad(format!(
                "preset '{}': insecure presets, and only they, are named 'insecure-*'",
                lit.name
            ));
        }
        let q = ntt_primes(lit.log_n, &lit.q_bits, &[]).map_err(CkksError::InvalidParameters)?;
        let p = ntt_primes(lit.log_n, &lit.p_bits, &q).map_err(CkksError::InvalidParameters)?;
        let log_qp: f64 = q.iter().chain(&p).map(|&v| (v as f64).log2()).sum();
        if !lit.insecure {
            match max_log_qp_128(lit.log_n) {
                Some(bound) if log_qp <= bound as f64 => {}
                Some(bound) => {
                    return Err(CkksError::Insecure {
                        log_n: lit.log_n,
                        log_qp,
                        bound,
                    })
                }
                None => {
                    return bad(format!(
                        "no 128-bit security bound is known for N = 2^{}",
                        lit.log_n
                    ))
                }
            }
        }
        let ring = Ring::new(lit.log_n, &q, &p);
        let alpha = q.len().div_ceil(lit.dnum);
        let (qc, pc) = (q.len(), p.len());
        let p_indices: Vec<usize> = (qc..qc + pc).collect();
        let mod_up = (0..qc)
            .map(|level| {
                (0..=level / alpha)
                    .map(|digit| {
                        let src: Vec<usize> =
                            (digit * alpha..((digit + 1) * alpha).min(level + 1)).collect();
                        let dst: Vec<usize> = (0..=level)
                            .filter(|i| !src.contains(i))
                            .chain(p_indices.iter().copied())
                            .collect();
                        BasisConverter::new_after_unnormalized_intt(&ring, &src, &dst)
                    })
                    .collect()
            })
            .collect();
        let mod_down = (0..qc)
            .map(|level| {
                BasisConverter::new_after_unnormalized_intt(
                    &ring,
                    &p_indices,
                    &(0..=level).collect::<Vec<_>>(),
                )
            })
            .collect();
        // ModDown and rescale at once: from P and q_level to q_0..q_{level-1}.
        let mod_down_rescale = (0..qc)
            .map(|level| {
                (level > 0).then(|| {
                    let src: Vec<usize> = p_indices.iter().copied().chain([level]).collect();
                    BasisConverter::new_after_unnormalized_intt(
                        &ring,
                        &src,
                        &(0..level).collect::<Vec<_>>(),
                    )
                })
            })
            .collect();
        let qm = ring.q();
        let p_mod_q: Vec<u64> = qm
            .iter()
            .map(|m| p.iter().fold(1u64, |acc, &pj| m.mul(acc, m.reduce(pj))))
            .collect();
        let p_inv_mod_q = qm.iter().zip(&p_mod_q).map(|(m, &v)| m.inv(v)).collect();
        let q_inv = (0..qc)
            .map(|l| (0..l).map(|i| qm[i].inv(qm[i].reduce(q[l]))).collect())
            .collect();

        let mut h = Sha256::new();
        h.update(b"ensi-ckks parameters v1");
        h.update(lit.log_n.to_le_bytes());
        h.update(lit.log_slots.to_le_bytes());
        h.update((lit.dnum as u64).to_le_bytes());
        h.update([lit.secret as u8, lit.insecure as u8]);
        for v in q.iter().chain(&p) {
            h.update(v.to_le_bytes());
        }
        h.update((q.len() as u64).to_le_bytes());
        let fingerprint = h.finalize().into();

        Ok(Self {
            inner: Arc::new(Inner {
                literal: lit,
                ring,
                q,
                p,
                alpha,
                log_qp,
                fingerprint,
                mod_up,
                mod_down,
                mod_down_rescale,
                p_mod_q,
                p_inv_mod_q,
                q_inv,
            }),
        })
    }

    /// The literal these parameters were built from.
    pub fn literal(&self) -> &ParametersLiteral {
        &self.inner.literal
    }
    /// Preset name.
    pub fn name(&self) -> &str {
        &self.inner.literal.name
    }
    /// log2 N.
    pub fn log_n(&self) -> u32 {
        self.inner.literal.log_n
    }
    /// N.
    pub fn n(&self) -> usize {
        1 << self.log_n()
    }
    /// The default scale, 2^log_scale.
    pub fn default_scale(&self) -> f64 {
        (self.inner.literal.log_scale as f64).exp2()
    }
    /// log2 of the default slot count.
    pub fn log_slots(&self) -> u32 {
        self.inner.literal.log_slots
    }
    /// The highest level (number of Q primes minus one).
    pub fn max_level(&self) -> usize {
        self.inner.q.len() - 1
    }
    /// Number of Q primes.
    pub fn q_count(&self) -> usize {
        self.inner.q.len()
    }
    /// Number of P primes.
    pub fn p_count(&self) -> usize {
        self.inner.p.len()
    }
    /// The Q primes.
    pub fn q(&self) -> &[u64] {
        &self.inner.q
    }
    /// The P primes.
    pub fn p(&self) -> &[u64] {
        &self.inner.p
    }
    /// Number of key-switching digits.
    pub fn dnum(&self) -> usize {
        self.inner.literal.dnum
    }
    /// Number of Q primes per digit.
    pub fn alpha(&self) -> usize {
        self.inner.alpha
    }
    /// Number of digits used at `level`.
    pub fn digits_at(&self, level: usize) -> usize {
        level / self.inner.alpha + 1
    }
    /// log2(QP).
    pub fn log_qp(&self) -> f64 {
        self.inner.log_qp
    }
    /// Whether this is a named insecure test preset.
    pub fn is_insecure(&self) -> bool {
        self.inner.literal.insecure
    }
    /// SHA-256 of everything that defines the parameters; serialized objects carry it.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.inner.fingerprint
    }
    /// The ring (moduli and NTTs).
    pub fn ring(&self) -> &Ring {
        &self.inner.ring
    }
    pub(crate) fn mod_up(&self, level: usize, digit: usize) -> &BasisConverter {
        &self.inner.mod_up[level][digit]
    }
    pub(crate) fn mod_down(&self, level: usize) -> &BasisConverter {
        &self.inner.mod_down[level]
    }
    /// The fused ModDown + rescale converter of `level` (`level >= 1`).
    pub(crate) fn mod_down_rescale(&self, level: usize) -> &BasisConverter {
        self.inner.mod_down_rescale[level]
            .as_ref()
            .expect("no rescale at level 0")
    }
    pub(crate) fn p_mod_q(&self) -> &[u64] {
        &self.inner.p_mod_q
    }
    pub(crate) fn p_inv_mod_q(&self) -> &[u64] {
        &self.inner.p_inv_mod_q
    }
    /// q_l^-1 mod q_i for i < l.
    pub(crate) fn q_inv(&self, l: usize) -> &[u64] {
        &self.inner.q_inv[l]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_build_and_n16_l20_is_secure() {
        for name in PRESETS {
            let lit = ParametersLiteral::preset(name).unwrap();
            if lit.log_n >= 15 {
                continue; // built in their own tests; prime search at 2^16 is slower
            }
            lit.build().unwrap();
        }
        let p = ParametersLiteral::preset("n16-l20")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(p.q_count(), 21);
        assert_eq!(p.max_level(), 20);
        assert!(p.log_qp() <= 1772.0);
        assert!(!p.is_insecure());
        assert!(p.default_scale() >= 2f64.powi(40));
    }

    #[test]
    fn oversized_modulus_is_refused_unless_named_insecure() {
        let mut lit = ParametersLiteral::preset("insecure-n12").unwrap();
        lit.name = "my-n12".into();
        lit.insecure = false;
        assert!(matches!(
            lit.build(),
            Err(CkksError::Insecure { log_n: 12, .. })
        ));
        // The n16-boot chain at N = 2^12 exists only as a named insecure preset.
        let mut lit = ParametersLiteral::preset("insecure-boot-n12").unwrap();
        lit.name = "boot-n12".into();
        lit.insecure = false;
        assert!(matches!(
            lit.build(),
            Err(CkksError::Insecure { log_n: 12, .. })
        ));
        let mut lit = ParametersLiteral::preset("insecure-n12").unwrap();
        lit.name = "my-n12".into();
        // Claiming insecurity without the name is refused too.
        lit.insecure = true;
        assert!(matches!(lit.build(), Err(CkksError::InvalidParameters(_))));
        // A small chain at N = 2^12 is accepted as secure.
        let lit = ParametersLiteral {
            name: "small".into(),
            log_n: 12,
            log_scale: 30,
            q_bits: vec![40, 30],
            p_bits: vec![35],
            dnum: 1,
            secret: SecretDistribution::UniformTernary,
            log_slots: 11,
            insecure: false,
        };
        assert!(lit.build().is_ok());
    }

    #[test]
    fn boot_n12_has_the_chain_of_n16_boot() {
        let small = ParametersLiteral::preset("insecure-boot-n12").unwrap();
        let big = ParametersLiteral::preset("n16-boot").unwrap();
        assert_eq!(small.q_bits, big.q_bits);
        assert_eq!(small.p_bits, big.p_bits);
        assert_eq!(small.dnum, big.dnum);
        assert_eq!((small.log_n, small.log_slots), (12, 11));
        let p = small.build().unwrap();
        assert!(p.is_insecure());
        assert_eq!(p.max_level(), 25);
        assert!(p.log_qp() > max_log_qp_128(12).unwrap() as f64);
    }

    #[test]
    fn fingerprints_differ_between_presets() {
        let a = ParametersLiteral::preset("insecure-n10")
            .unwrap()
            .build()
            .unwrap();
        let b = ParametersLiteral::preset("insecure-n12")
            .unwrap()
            .build()
            .unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a, b);
        assert_eq!(
            a,
            ParametersLiteral::preset("insecure-n10")
                .unwrap()
                .build()
                .unwrap()
        );
    }

    #[test]
    fn bad_literals_are_refused() {
        let base = ParametersLiteral::preset("insecure-n10").unwrap();
        for edit in [
            (|l: &mut ParametersLiteral| l.dnum = 0) as fn(&mut ParametersLiteral),
            |l| l.dnum = 99,
            |l| l.p_bits.clear(),
            |l| l.q_bits.clear(),
            |l| l.log_slots = 10,
            |l| l.log_n = 3,
            |l| l.q_bits[0] = 70,
        ] {
            let mut lit = base.clone();
            edit(&mut lit);
            assert!(
                matches!(lit.build(), Err(CkksError::InvalidParameters(_))),
                "{lit:?}"
            );
        }
        assert!(matches!(
            ParametersLiteral::preset("nope"),
            Err(CkksError::UnknownPreset(..))
        ));
    }
}
