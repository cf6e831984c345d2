//! Versioned binary serialization of parameters, keys, ciphertexts and plaintexts.
//!
//! Every object starts with a 40-byte header:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `ENSI` |
//! | 2 | format version (little-endian), currently 1 |
//! | 1 | object kind |
//! | 1 | reserved, 0 |
//! | 32 | fingerprint of the parameters the object belongs to |
//!
//! Small fields are little-endian integers; residues are raw little-endian
//! 64-bit words, limb after limb. Keys are stored seeded: only the `b` parts
//! and the 32-byte seed from which every uniform `a` is regenerated, so they
//! travel at half their size in memory. Reading validates the magic, version,
//! kind, fingerprint, every length against the parameters (before allocating)
//! and every residue against its modulus, and returns a typed [`DecodeError`].

use crate::ciphertext::{Ciphertext, Plaintext};
use crate::error::{CkksError, DecodeError, Result};
use crate::keys::{
    expand_public_a, expand_switching_a, EvaluationKeys, GaloisKey, PublicKey, RelinKey, SecretKey,
    SwitchingKey,
};
use crate::params::{Parameters, ParametersLiteral, SecretDistribution};
use crate::ring::RnsPoly;

const MAGIC: &[u8; 4] = b"ENSI";
/// Current format version.
pub const VERSION: u16 = 1;
const HEADER_LEN: usize = 40;

/// Kinds of serialized objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Parameters = 1,
    SecretKey = 2,
    PublicKey = 3,
    RelinKey = 4,
    GaloisKey = 5,
    Ciphertext = 6,
    Plaintext = 7,
    EvaluationKeys = 8,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Parameters => "parameter set",
            Kind::SecretKey => "secret key",
            Kind::PublicKey => "public key",
            Kind::RelinKey => "relinearization key",
            Kind::GaloisKey => "Galois key",
            Kind::Ciphertext => "ciphertext",
            Kind::Plaintext => "plaintext",
            Kind::EvaluationKeys => "evaluation key set",
        }
    }
}

struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn new(kind: Kind, fingerprint: &[u8; 32], capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + capacity);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.push(kind as u8);
        buf.push(0);
        buf.extend_from_slice(fingerprint);
        Self { buf }
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    fn poly(&mut self, p: &RnsPoly) {
        self.u16(p.q_limbs() as u16);
        self.u16(p.p_limbs() as u16);
        self.u8(p.is_ntt() as u8);
        self.buf.reserve(p.as_words().len() * 8);
        for w in p.as_words() {
            self.buf.extend_from_slice(&w.to_le_bytes());
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Checks the header and returns a reader positioned after it, with the fingerprint.
    fn open(buf: &'a [u8], kind: Kind) -> std::result::Result<(Self, [u8; 32]), DecodeError> {
        let mut r = Self { buf, pos: 0 };
        if r.take(4)? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = r.u16()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let found = r.u8()?;
        if found != kind as u8 {
            return Err(DecodeError::WrongKind {
                expected: kind.name(),
                found,
            });
        }
        if r.u8()? != 0 {
            return Err(DecodeError::InvalidValue {
                field: "reserved header byte",
            });
        }
        let fp: [u8; 32] = r.take(32)?.try_into().expect("32 bytes");
        Ok((r, fp))
    }
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Truncated { needed: n })?;
        if end > self.buf.len() {
            return Err(DecodeError::Truncated {
                needed: end - self.buf.len(),
            });
        }
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> std::result::Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> std::result::Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> std::result::Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> std::result::Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn f64(&mut self) -> std::result::Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }
    fn seed(&mut self) -> std::result::Result<[u8; 32], DecodeError> {
        Ok(self.take(32)?.try_into().expect("32 bytes"))
    }
    fn finish(&self) -> std::result::Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes(extra)),
        }
    }

    /// A polynomial whose shape must be exactly (q_limbs, p_limbs, ntt).
    fn poly(
        &mut self,
        params: &Parameters,
        q_limbs: Option<usize>,
        p_limbs: usize,
    ) -> std::result::Result<RnsPoly, DecodeError> {
        let q = self.u16()? as usize;
        let p = self.u16()? as usize;
        let ntt = self.u8()?;
        match q_limbs {
            Some(want) if q != want => {
                return Err(DecodeError::BadLength {
                    field: "Q limbs",
                    value: q as u64,
                })
            }
            None if q == 0 || q > params.q_count() => {
                return Err(DecodeError::BadLength {
                    field: "Q limbs",
                    value: q as u64,
                })
            }
            _ => {}
        }
        if p != p_limbs {
            return Err(DecodeError::BadLength {
                field: "P limbs",
                value: p as u64,
            });
        }
        if ntt != 1 {
            return Err(DecodeError::InvalidValue { field: "NTT flag" });
        }
        let ring = params.ring();
        let n = ring.n();
        let bytes = self.take((q + p) * n * 8)?;
        let mut poly = ring.zero(q, p, true);
        for (i, (limb, src)) in poly.data.chunks_mut(n).zip(bytes.chunks(n * 8)).enumerate() {
            let modulus = ring.moduli()[ring.modulus_index(q, i)].value();
            for (w, b) in limb.iter_mut().zip(src.chunks_exact(8)) {
                let v = u64::from_le_bytes(b.try_into().expect("8 bytes"));
                if v >= modulus {
                    return Err(DecodeError::ResidueOutOfRange { value: v, modulus });
                }
                *w = v;
            }
        }
        Ok(poly)
    }

    fn scale_and_slots(
        &mut self,
        params: &Parameters,
    ) -> std::result::Result<(f64, u32), DecodeError> {
        let scale = self.f64()?;
        if !(scale.is_finite() && scale >= 1.0) {
            return Err(DecodeError::InvalidValue { field: "scale" });
        }
        let log_slots = self.u8()? as u32;
        if log_slots >= params.log_n() {
            return Err(DecodeError::InvalidValue {
                field: "slot count",
            });
        }
        Ok((scale, log_slots))
    }
}

fn open_for<'a>(params: &Parameters, bytes: &'a [u8], kind: Kind) -> Result<Reader<'a>> {
    let (r, fp) = Reader::open(bytes, kind)?;
    if &fp != params.fingerprint() {
        return Err(DecodeError::FingerprintMismatch.into());
    }
    Ok(r)
}

impl Parameters {
    /// Serializes the parameter literal (the primes are regenerated on reading).
    pub fn to_bytes(&self) -> Vec<u8> {
        let lit = self.literal();
        let mut w = Writer::new(Kind::Parameters, self.fingerprint(), 64);
        w.u16(lit.name.len() as u16);
        w.bytes(lit.name.as_bytes());
        w.u8(lit.log_n as u8);
        w.u8(lit.log_scale as u8);
        w.u8(lit.log_slots as u8);
        w.u16(lit.dnum as u16);
        w.u8(lit.secret as u8);
        w.u8(lit.insecure as u8);
        for bits in [&lit.q_bits, &lit.p_bits] {
            w.u16(bits.len() as u16);
            bits.iter().for_each(|&b| w.u8(b as u8));
        }
        w.buf
    }

    /// Reads and re-validates parameters (including the security check); the
    /// rebuilt parameters must reproduce the recorded fingerprint.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (mut r, fp) = Reader::open(bytes, Kind::Parameters)?;
        let name_len = r.u16()? as usize;
        let name = std::str::from_utf8(r.take(name_len)?)
            .map_err(|_| DecodeError::InvalidValue { field: "name" })?
            .to_string();
        let log_n = r.u8()? as u32;
        let log_scale = r.u8()? as u32;
        let log_slots = r.u8()? as u32;
        let dnum = r.u16()? as usize;
        let secret = match r.u8()? {
            0 => SecretDistribution::UniformTernary,
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "secret distribution",
                }
                .into())
            }
        };
        let insecure = match r.u8()? {
            0 => false,
            1 => true,
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "insecure flag",
                }
                .into())
            }
        };
        let mut chains = [Vec::new(), Vec::new()];
        for chain in chains.iter_mut() {
            let len = r.u16()? as usize;
            if len > 256 {
                return Err(DecodeError::BadLength {
                    field: "prime chain",
                    value: len as u64,
                }
                .into());
            }
            *chain = r.take(len)?.iter().map(|&b| b as u32).collect();
        }
        r.finish()?;
        let [q_bits, p_bits] = chains;
        let lit = ParametersLiteral {
            name,
            log_n,
            log_scale,
            q_bits,
            p_bits,
            dnum,
            secret,
            log_slots,
            insecure,
        };
        let params = lit.build()?;
        if params.fingerprint() != &fp {
            return Err(DecodeError::FingerprintMismatch.into());
        }
        Ok(params)
    }
}

impl Ciphertext {
    /// Serializes the ciphertext.
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        let mut w = Writer::new(
            Kind::Ciphertext,
            params.fingerprint(),
            self.byte_size() + 32,
        );
        w.f64(self.scale);
        w.u8(self.log_slots as u8);
        w.poly(&self.c0);
        w.poly(&self.c1);
        w.buf
    }

    /// Reads a ciphertext made for `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        let mut r = open_for(params, bytes, Kind::Ciphertext)?;
        let (scale, log_slots) = r.scale_and_slots(params)?;
        let c0 = r.poly(params, None, 0)?;
        let c1 = r.poly(params, Some(c0.q_limbs()), 0)?;
        r.finish()?;
        Ok(Ciphertext {
            c0,
            c1,
            scale,
            log_slots,
        })
    }
}

impl Plaintext {
    /// Serializes the plaintext.
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        let mut w = Writer::new(
            Kind::Plaintext,
            params.fingerprint(),
            self.poly.as_words().len() * 8 + 16,
        );
        w.f64(self.scale);
        w.u8(self.log_slots as u8);
        w.poly(&self.poly);
        w.buf
    }

    /// Reads a plaintext made for `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        let mut r = open_for(params, bytes, Kind::Plaintext)?;
        let (scale, log_slots) = r.scale_and_slots(params)?;
        let poly = r.poly(params, None, 0)?;
        r.finish()?;
        Ok(Plaintext {
            poly,
            scale,
            log_slots,
        })
    }
}

impl SecretKey {
    /// Serializes the secret key: one byte per ternary coefficient. Keep it private.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(
            Kind::SecretKey,
            self.params.fingerprint(),
            self.coeffs.len(),
        );
        w.bytes(&self.coeffs.iter().map(|&c| c as u8).collect::<Vec<u8>>());
        w.buf
    }

    /// Reads a secret key made for `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        let mut r = open_for(params, bytes, Kind::SecretKey)?;
        let raw = r.take(params.n())?;
        r.finish()?;
        let coeffs: Vec<i64> = raw
            .iter()
            .map(|&b| match b as i8 {
                c @ -1..=1 => Ok(c as i64),
                _ => Err(DecodeError::InvalidValue {
                    field: "secret coefficient",
                }),
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(SecretKey::from_coeffs(params, &coeffs))
    }
}

impl PublicKey {
    /// Serializes the public key (seeded: `b` and the seed of `a`).
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        let mut w = Writer::new(
            Kind::PublicKey,
            params.fingerprint(),
            self.b.as_words().len() * 8 + 64,
        );
        w.bytes(&self.seed);
        w.poly(&self.b);
        w.buf
    }

    /// Reads a public key made for `params`, regenerating `a` from its seed.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        let mut r = open_for(params, bytes, Kind::PublicKey)?;
        let seed = r.seed()?;
        let b = r.poly(params, Some(params.q_count()), 0)?;
        r.finish()?;
        Ok(PublicKey {
            a: expand_public_a(params, seed),
            b,
            seed,
        })
    }
}

fn write_switching_key(w: &mut Writer, key: &SwitchingKey) {
    w.bytes(&key.seed);
    w.u16(key.b.len() as u16);
    key.b.iter().for_each(|b| w.poly(b));
}

fn read_switching_key(r: &mut Reader, params: &Parameters) -> Result<SwitchingKey> {
    let seed = r.seed()?;
    let digits = r.u16()? as usize;
    if digits == 0 || digits > params.dnum() {
        return Err(DecodeError::BadLength {
            field: "key digits",
            value: digits as u64,
        }
        .into());
    }
    // A key may be truncated to a lower level (see SwitchingKey::truncate_to_level):
    // its first polynomial fixes the Q limbs, and the digit count must match them.
    let first = r.poly(params, None, params.p_count())?;
    let q_limbs = first.q_limbs();
    if digits != params.digits_at(q_limbs - 1) {
        return Err(DecodeError::BadLength {
            field: "key digits",
            value: digits as u64,
        }
        .into());
    }
    let mut b = vec![first];
    for _ in 1..digits {
        b.push(r.poly(params, Some(q_limbs), params.p_count())?);
    }
    let a = (0..digits)
        .map(|j| {
            let mut a = expand_switching_a(params, seed, j);
            a.truncate_q(q_limbs);
            a
        })
        .collect();
    Ok(SwitchingKey { b, a, seed })
}

fn check_galois_element(params: &Parameters, k: u64) -> Result<()> {
    if k & 1 == 0 || k >= 2 * params.n() as u64 {
        return Err(DecodeError::InvalidValue {
            field: "Galois element",
        }
        .into());
    }
    Ok(())
}

impl RelinKey {
    /// Serializes the key (seeded: half size).
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        let mut w = Writer::new(
            Kind::RelinKey,
            params.fingerprint(),
            self.0.byte_size() / 2 + 64,
        );
        write_switching_key(&mut w, &self.0);
        w.buf
    }

    /// Reads a relinearization key made for `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        let mut r = open_for(params, bytes, Kind::RelinKey)?;
        let key = read_switching_key(&mut r, params)?;
        r.finish()?;
        Ok(RelinKey(key))
    }
}

impl GaloisKey {
    /// Serializes the key (seeded: half size).
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        let mut w = Writer::new(
            Kind::GaloisKey,
            params.fingerprint(),
            self.key.byte_size() / 2 + 64,
        );
        w.u64(self.galois_element);
        write_switching_key(&mut w, &self.key);
        w.buf
    }

    /// Reads a Galois key made for `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        let mut r = open_for(params, bytes, Kind::GaloisKey)?;
        let galois_element = r.u64()?;
        check_galois_element(params, galois_element)?;
        let key = read_switching_key(&mut r, params)?;
        r.finish()?;
        Ok(GaloisKey {
            galois_element,
            key,
        })
    }
}

impl EvaluationKeys {
    /// Serializes every key of the set (seeded: half size).
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        let size: usize = self
            .relin
            .iter()
            .map(|k| k.0.byte_size() / 2)
            .sum::<usize>()
            + self
                .galois
                .values()
                .map(|k| k.key.byte_size() / 2)
                .sum::<usize>();
        let mut w = Writer::new(Kind::EvaluationKeys, params.fingerprint(), size + 64);
        match &self.relin {
            Some(k) => {
                w.u8(1);
                write_switching_key(&mut w, &k.0);
            }
            None => w.u8(0),
        }
        w.u32(self.galois.len() as u32);
        for key in self.galois.values() {
            w.u64(key.galois_element);
            write_switching_key(&mut w, &key.key);
        }
        w.buf
    }

    /// Reads an evaluation key set made for `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        let mut r = open_for(params, bytes, Kind::EvaluationKeys)?;
        let relin = match r.u8()? {
            0 => None,
            1 => Some(RelinKey(read_switching_key(&mut r, params)?)),
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "relinearization key flag",
                }
                .into())
            }
        };
        let count = r.u32()? as u64;
        if count > params.n() as u64 {
            return Err(DecodeError::BadLength {
                field: "Galois key count",
                value: count,
            }
            .into());
        }
        let mut keys = EvaluationKeys {
            relin,
            ..Default::default()
        };
        for _ in 0..count {
            let galois_element = r.u64()?;
            check_galois_element(params, galois_element)?;
            if keys.galois.contains_key(&galois_element) {
                return Err(DecodeError::InvalidValue {
                    field: "duplicate Galois element",
                }
                .into());
            }
            let key = read_switching_key(&mut r, params)?;
            keys.insert_galois(GaloisKey {
                galois_element,
                key,
            });
        }
        r.finish()?;
        Ok(keys)
    }
}

/// Whether `bytes` start like an ensi-ckks object (magic and version), and of which kind.
pub fn peek_kind(bytes: &[u8]) -> std::result::Result<u8, CkksError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Truncated {
            needed: HEADER_LEN - bytes.len(),
        }
        .into());
    }
    if &bytes[..4] != MAGIC {
        return Err(DecodeError::BadMagic.into());
    }
    Ok(bytes[6])
}
