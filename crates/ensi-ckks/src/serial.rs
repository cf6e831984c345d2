//! Versioned binary serialization of parameters, keys, ciphertexts and plaintexts.
//!
//! The wire format of every object of the crate, in one place so that the
//! object kinds stay unique: the engine's objects and, above them, the
//! bootstrapping key set of [`crate::circuits::bootstrap`].
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
//! travel at half their size in memory. A switching key whose seed is all
//! zeros is not seeded (its `a` was not expanded from a seed): its `a` parts
//! follow its `b` parts.
//!
//! Reading validates the magic, version, kind, fingerprint, every length
//! against the parameters (before allocating) and every residue against its
//! modulus, and returns a typed [`DecodeError`].
//!
//! # Streaming
//!
//! A bootstrapping key set at N = 2^16 is gigabytes: [`EvaluationKeys`] and
//! [`BootstrapKeys`] also write to any [`std::io::Write`] and read from any
//! [`std::io::Read`] polynomial by polynomial, so that a key set is never held
//! twice in memory (once as keys, once as bytes). `to_bytes` / `from_bytes`
//! are the same code over a `Vec<u8>` / a slice. A streaming read consumes
//! exactly the object's bytes (another object may follow); pass a
//! [`std::io::BufReader`] for files, since the reader makes small reads.

use crate::ciphertext::{Ciphertext, Plaintext};
use crate::circuits::bootstrap::{raw::expand_encapsulation_a, BootstrapKeys};
use crate::error::{CkksError, DecodeError, Result};
use crate::keys::{
    expand_public_a, expand_switching_a, EvaluationKeys, GaloisKey, PublicKey, RelinKey, SecretKey,
    SwitchingKey,
};
use crate::params::{Parameters, ParametersLiteral, SecretDistribution};
use crate::ring::RnsPoly;
use std::io::{self, BufWriter, Read, Write};

const MAGIC: &[u8; 4] = b"ENSI";
/// Current format version.
pub const VERSION: u16 = 1;
const HEADER_LEN: usize = 40;
/// The seed that marks a switching key as not seeded (its `a` parts are stored).
const UNSEEDED: [u8; 32] = [0; 32];
/// Residue words converted per write or read call when streaming polynomials.
const CHUNK_WORDS: usize = 8192;

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
    BootstrapKeys = 9,
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
            Kind::BootstrapKeys => "bootstrapping key set",
        }
    }
}

struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    fn new(mut out: W, kind: Kind, fingerprint: &[u8; 32]) -> io::Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(MAGIC);
        header[4..6].copy_from_slice(&VERSION.to_le_bytes());
        header[6] = kind as u8;
        header[8..].copy_from_slice(fingerprint);
        out.write_all(&header)?;
        Ok(Self { out })
    }
    fn u8(&mut self, v: u8) -> io::Result<()> {
        self.out.write_all(&[v])
    }
    fn u16(&mut self, v: u16) -> io::Result<()> {
        self.out.write_all(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) -> io::Result<()> {
        self.out.write_all(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> io::Result<()> {
        self.out.write_all(&v.to_le_bytes())
    }
    fn f64(&mut self, v: f64) -> io::Result<()> {
        self.u64(v.to_bits())
    }
    fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)
    }
    fn poly(&mut self, p: &RnsPoly) -> io::Result<()> {
        self.u16(p.q_limbs() as u16)?;
        self.u16(p.p_limbs() as u16)?;
        self.u8(p.is_ntt() as u8)?;
        let mut buf = vec![0u8; CHUNK_WORDS.min(p.as_words().len()) * 8];
        for words in p.as_words().chunks(CHUNK_WORDS) {
            let bytes = &mut buf[..words.len() * 8];
            for (dst, w) in bytes.chunks_exact_mut(8).zip(words) {
                dst.copy_from_slice(&w.to_le_bytes());
            }
            self.out.write_all(bytes)?;
        }
        Ok(())
    }
}

/// Serializes into memory: `write` must only fail on I/O errors, and a
/// `Vec<u8>` has none.
fn to_vec(
    kind: Kind,
    params: &Parameters,
    capacity: usize,
    write: impl FnOnce(&mut Writer<&mut Vec<u8>>) -> io::Result<()>,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + capacity);
    Writer::new(&mut buf, kind, params.fingerprint())
        .and_then(|mut w| write(&mut w))
        .expect("writing to a Vec<u8> cannot fail");
    buf
}

/// Streams an object through a buffer into `out` (which may be unbuffered).
fn stream_to<W: Write + ?Sized>(
    kind: Kind,
    params: &Parameters,
    out: &mut W,
    write: impl FnOnce(&mut Writer<BufWriter<&mut W>>) -> io::Result<()>,
) -> io::Result<()> {
    let mut w = Writer::new(
        BufWriter::with_capacity(1 << 16, out),
        kind,
        params.fingerprint(),
    )?;
    write(&mut w)?;
    w.out.flush()
}

struct Reader<R: Read> {
    src: R,
}

impl<R: Read> Reader<R> {
    /// Checks the header and returns a reader positioned after it, with the fingerprint.
    fn open(src: R, kind: Kind) -> std::result::Result<(Self, [u8; 32]), DecodeError> {
        let mut r = Self { src };
        if &r.array::<4>()? != MAGIC {
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
        let fp = r.array::<32>()?;
        Ok((r, fp))
    }
    /// Fills `buf` entirely; an early end of input is [`DecodeError::Truncated`].
    fn fill(&mut self, buf: &mut [u8]) -> std::result::Result<(), DecodeError> {
        let mut got = 0;
        while got < buf.len() {
            match self.src.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(DecodeError::Truncated {
                        needed: buf.len() - got,
                    })
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(DecodeError::Truncated {
                        needed: buf.len() - got,
                    })
                }
                // DecodeError has no I/O variant (it is Eq and Clone, io::Error is neither).
                Err(_) => {
                    return Err(DecodeError::InvalidValue {
                        field: "input stream (read failed)",
                    })
                }
            }
        }
        Ok(())
    }
    fn array<const K: usize>(&mut self) -> std::result::Result<[u8; K], DecodeError> {
        let mut b = [0u8; K];
        self.fill(&mut b)?;
        Ok(b)
    }
    /// `n` bytes; callers bound `n` by the parameters first.
    fn bytes(&mut self, n: usize) -> std::result::Result<Vec<u8>, DecodeError> {
        let mut b = vec![0u8; n];
        self.fill(&mut b)?;
        Ok(b)
    }
    fn u8(&mut self) -> std::result::Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> std::result::Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> std::result::Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> std::result::Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> std::result::Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }
    fn seed(&mut self) -> std::result::Result<[u8; 32], DecodeError> {
        self.array()
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
        let mut poly = ring.zero(q, p, true);
        let mut buf = vec![0u8; CHUNK_WORDS.min(n) * 8];
        for (i, limb) in poly.data.chunks_mut(n).enumerate() {
            let modulus = ring.moduli()[ring.modulus_index(q, i)].value();
            for words in limb.chunks_mut(CHUNK_WORDS) {
                let bytes = &mut buf[..words.len() * 8];
                self.fill(bytes)?;
                for (w, b) in words.iter_mut().zip(bytes.chunks_exact(8)) {
                    let v = u64::from_le_bytes(b.try_into().expect("8 bytes"));
                    if v >= modulus {
                        return Err(DecodeError::ResidueOutOfRange { value: v, modulus });
                    }
                    *w = v;
                }
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

/// Opens an object of `kind` made for `params`.
fn open_for<R: Read>(params: &Parameters, src: R, kind: Kind) -> Result<Reader<R>> {
    let (r, fp) = Reader::open(src, kind)?;
    if &fp != params.fingerprint() {
        return Err(DecodeError::FingerprintMismatch.into());
    }
    Ok(r)
}

/// Reads an object of `kind` that must span all of `bytes`.
fn from_slice<T>(
    params: &Parameters,
    bytes: &[u8],
    kind: Kind,
    read: impl FnOnce(&mut Reader<&mut &[u8]>) -> Result<T>,
) -> Result<T> {
    let mut rest = bytes;
    let value = read(&mut open_for(params, &mut rest, kind)?)?;
    match rest.len() {
        0 => Ok(value),
        extra => Err(DecodeError::TrailingBytes(extra).into()),
    }
}

impl Parameters {
    /// Serializes the parameter literal (the primes are regenerated on reading).
    pub fn to_bytes(&self) -> Vec<u8> {
        let lit = self.literal();
        to_vec(Kind::Parameters, self, 64, |w| {
            w.u16(lit.name.len() as u16)?;
            w.bytes(lit.name.as_bytes())?;
            w.u8(lit.log_n as u8)?;
            w.u8(lit.log_scale as u8)?;
            w.u8(lit.log_slots as u8)?;
            w.u16(lit.dnum as u16)?;
            w.u8(lit.secret as u8)?;
            w.u8(lit.insecure as u8)?;
            for bits in [&lit.q_bits, &lit.p_bits] {
                w.u16(bits.len() as u16)?;
                for &b in bits.iter() {
                    w.u8(b as u8)?;
                }
            }
            Ok(())
        })
    }

    /// Reads and re-validates parameters (including the security check); the
    /// rebuilt parameters must reproduce the recorded fingerprint.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut rest = bytes;
        let (mut r, fp) = Reader::open(&mut rest, Kind::Parameters)?;
        let name_len = r.u16()? as usize;
        let name = String::from_utf8(r.bytes(name_len)?)
            .map_err(|_| DecodeError::InvalidValue { field: "name" })?;
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
            *chain = r.bytes(len)?.into_iter().map(u32::from).collect();
        }
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes(rest.len()).into());
        }
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
        to_vec(Kind::Ciphertext, params, self.byte_size() + 32, |w| {
            w.f64(self.scale)?;
            w.u8(self.log_slots as u8)?;
            w.poly(&self.c0)?;
            w.poly(&self.c1)
        })
    }

    /// Reads a ciphertext made for `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        from_slice(params, bytes, Kind::Ciphertext, |r| {
            let (scale, log_slots) = r.scale_and_slots(params)?;
            let c0 = r.poly(params, None, 0)?;
            let c1 = r.poly(params, Some(c0.q_limbs()), 0)?;
            Ok(Ciphertext {
                c0,
                c1,
                scale,
                log_slots,
            })
        })
    }
}

impl Plaintext {
    /// Serializes the plaintext.
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        let size = self.poly.as_words().len() * 8 + 16;
        to_vec(Kind::Plaintext, params, size, |w| {
            w.f64(self.scale)?;
            w.u8(self.log_slots as u8)?;
            w.poly(&self.poly)
        })
    }

    /// Reads a plaintext made for `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        from_slice(params, bytes, Kind::Plaintext, |r| {
            let (scale, log_slots) = r.scale_and_slots(params)?;
            let poly = r.poly(params, None, 0)?;
            Ok(Plaintext {
                poly,
                scale,
                log_slots,
            })
        })
    }
}

impl SecretKey {
    /// Serializes the secret key: one byte per ternary coefficient. Keep it private.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_vec(Kind::SecretKey, &self.params, self.coeffs.len(), |w| {
            w.bytes(&self.coeffs.iter().map(|&c| c as u8).collect::<Vec<u8>>())
        })
    }

    /// Reads a secret key made for `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        let raw = from_slice(params, bytes, Kind::SecretKey, |r| Ok(r.bytes(params.n())?))?;
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
        let size = self.b.as_words().len() * 8 + 64;
        to_vec(Kind::PublicKey, params, size, |w| {
            w.bytes(&self.seed)?;
            w.poly(&self.b)
        })
    }

    /// Reads a public key made for `params`, regenerating `a` from its seed.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        from_slice(params, bytes, Kind::PublicKey, |r| {
            let seed = r.seed()?;
            let b = r.poly(params, Some(params.q_count()), 0)?;
            Ok(PublicKey {
                a: expand_public_a(params, seed),
                b,
                seed,
            })
        })
    }
}

/// Bytes of a switching key on the wire: `b`, and `a` only when not seeded.
fn switching_key_wire_size(key: &SwitchingKey) -> usize {
    let half = key.byte_size() / 2;
    if key.seed == UNSEEDED {
        2 * half
    } else {
        half
    }
}

fn write_switching_key<W: Write>(w: &mut Writer<W>, key: &SwitchingKey) -> io::Result<()> {
    w.bytes(&key.seed)?;
    w.u16(key.b.len() as u16)?;
    for b in &key.b {
        w.poly(b)?;
    }
    if key.seed == UNSEEDED {
        for a in &key.a {
            w.poly(a)?;
        }
    }
    Ok(())
}

/// Reads a switching key; `q_limbs` fixes its level, `None` accepts a key
/// truncated to any level (see [`SwitchingKey::truncate_to_level`]).
fn read_switching_key<R: Read>(
    r: &mut Reader<R>,
    params: &Parameters,
    q_limbs: Option<usize>,
) -> Result<SwitchingKey> {
    let seed = r.seed()?;
    let digits = r.u16()? as usize;
    if digits == 0 || digits > params.dnum() {
        return Err(DecodeError::BadLength {
            field: "key digits",
            value: digits as u64,
        }
        .into());
    }
    // The first polynomial fixes the Q limbs, and the digit count must match them.
    let first = r.poly(params, q_limbs, params.p_count())?;
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
    let a = if seed == UNSEEDED {
        (0..digits)
            .map(|_| r.poly(params, Some(q_limbs), params.p_count()))
            .collect::<std::result::Result<_, _>>()?
    } else {
        (0..digits)
            .map(|j| {
                let mut a = expand_switching_a(params, seed, j);
                a.truncate_q(q_limbs);
                a
            })
            .collect()
    };
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
        let size = switching_key_wire_size(&self.0) + 64;
        to_vec(Kind::RelinKey, params, size, |w| {
            write_switching_key(w, &self.0)
        })
    }

    /// Reads a relinearization key made for `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        from_slice(params, bytes, Kind::RelinKey, |r| {
            Ok(RelinKey(read_switching_key(r, params, None)?))
        })
    }
}

impl GaloisKey {
    /// Serializes the key (seeded: half size).
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        let size = switching_key_wire_size(&self.key) + 64;
        to_vec(Kind::GaloisKey, params, size, |w| {
            w.u64(self.galois_element)?;
            write_switching_key(w, &self.key)
        })
    }

    /// Reads a Galois key made for `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        from_slice(params, bytes, Kind::GaloisKey, |r| {
            let galois_element = r.u64()?;
            check_galois_element(params, galois_element)?;
            let key = read_switching_key(r, params, None)?;
            Ok(GaloisKey {
                galois_element,
                key,
            })
        })
    }
}

fn evaluation_keys_wire_size(keys: &EvaluationKeys) -> usize {
    let relin = keys
        .relin
        .as_ref()
        .map_or(0, |k| switching_key_wire_size(&k.0));
    let galois: usize = keys
        .galois
        .values()
        .map(|k| switching_key_wire_size(&k.key) + 64)
        .sum();
    relin + galois + 64
}

fn write_evaluation_keys<W: Write>(w: &mut Writer<W>, keys: &EvaluationKeys) -> io::Result<()> {
    match &keys.relin {
        Some(k) => {
            w.u8(1)?;
            write_switching_key(w, &k.0)?;
        }
        None => w.u8(0)?,
    }
    w.u32(keys.galois.len() as u32)?;
    for key in keys.galois.values() {
        w.u64(key.galois_element)?;
        write_switching_key(w, &key.key)?;
    }
    Ok(())
}

fn read_evaluation_keys<R: Read>(r: &mut Reader<R>, params: &Parameters) -> Result<EvaluationKeys> {
    let relin = match r.u8()? {
        0 => None,
        1 => Some(RelinKey(read_switching_key(r, params, None)?)),
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
        let key = read_switching_key(r, params, None)?;
        keys.insert_galois(GaloisKey {
            galois_element,
            key,
        });
    }
    Ok(keys)
}

impl EvaluationKeys {
    /// Serializes every key of the set (seeded: half size).
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        to_vec(
            Kind::EvaluationKeys,
            params,
            evaluation_keys_wire_size(self),
            |w| write_evaluation_keys(w, self),
        )
    }

    /// Writes the same bytes as [`Self::to_bytes`] to `out`, key by key,
    /// without building them in memory first.
    pub fn write_to<W: Write + ?Sized>(&self, params: &Parameters, out: &mut W) -> io::Result<()> {
        stream_to(Kind::EvaluationKeys, params, out, |w| {
            write_evaluation_keys(w, self)
        })
    }

    /// Reads an evaluation key set made for `params`.
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        from_slice(params, bytes, Kind::EvaluationKeys, |r| {
            read_evaluation_keys(r, params)
        })
    }

    /// Reads one evaluation key set made for `params` from `src`, consuming
    /// exactly its bytes (wrap files in a [`std::io::BufReader`]).
    pub fn read_from<R: Read + ?Sized>(params: &Parameters, src: &mut R) -> Result<Self> {
        read_evaluation_keys(&mut open_for(params, src, Kind::EvaluationKeys)?, params)
    }
}

/// The encapsulation key `s -> s'`: over q_0 and p_0 only, one digit, its
/// `a` expanded from the seed (see `raw::gen_encapsulation_key`).
fn write_encapsulation_key<W: Write>(w: &mut Writer<W>, key: &SwitchingKey) -> io::Result<()> {
    w.bytes(&key.seed)?;
    for b in &key.b {
        w.poly(b)?;
    }
    if key.seed == UNSEEDED {
        for a in &key.a {
            w.poly(a)?;
        }
    }
    Ok(())
}

fn read_encapsulation_key<R: Read>(r: &mut Reader<R>, params: &Parameters) -> Result<SwitchingKey> {
    let seed = r.seed()?;
    let b = r.poly(params, Some(1), 1)?;
    let a = if seed == UNSEEDED {
        r.poly(params, Some(1), 1)?
    } else {
        expand_encapsulation_a(params, seed)
    };
    Ok(SwitchingKey {
        b: vec![b],
        a: vec![a],
        seed,
    })
}

fn write_bootstrap_keys<W: Write>(w: &mut Writer<W>, keys: &BootstrapKeys) -> io::Result<()> {
    write_evaluation_keys(w, &keys.eval)?;
    write_encapsulation_key(w, &keys.to_sparse)?;
    write_switching_key(w, &keys.to_dense)
}

fn read_bootstrap_keys<R: Read>(r: &mut Reader<R>, params: &Parameters) -> Result<BootstrapKeys> {
    let eval = read_evaluation_keys(r, params)?;
    let to_sparse = read_encapsulation_key(r, params)?;
    // ModRaise lands at the top of the chain: the key s' -> s is never truncated.
    let to_dense = read_switching_key(r, params, Some(params.q_count()))?;
    Ok(BootstrapKeys {
        eval,
        to_sparse,
        to_dense,
    })
}

// Layout after the header: the evaluation key set (as in EvaluationKeys), the
// encapsulation key s -> s' (seed and b over q_0 and p_0), then the key s' -> s
// (a full-level switching key). Every part is seeded.
impl BootstrapKeys {
    /// Serializes the key set (seeded: about half of [`Self::byte_size`]).
    /// At N = 2^16 that is gigabytes: prefer [`Self::write_to`] for files.
    pub fn to_bytes(&self, params: &Parameters) -> Vec<u8> {
        let size = evaluation_keys_wire_size(&self.eval)
            + switching_key_wire_size(&self.to_sparse)
            + switching_key_wire_size(&self.to_dense)
            + 128;
        to_vec(Kind::BootstrapKeys, params, size, |w| {
            write_bootstrap_keys(w, self)
        })
    }

    /// Writes the same bytes as [`Self::to_bytes`] to `out`, polynomial by
    /// polynomial (through a 64 KiB buffer), without building them in memory.
    pub fn write_to<W: Write + ?Sized>(&self, params: &Parameters, out: &mut W) -> io::Result<()> {
        stream_to(Kind::BootstrapKeys, params, out, |w| {
            write_bootstrap_keys(w, self)
        })
    }

    /// Reads a bootstrapping key set made for `params` (every key is
    /// validated; the result is accepted by `Bootstrapper::new` for any
    /// configuration whose keys it holds).
    pub fn from_bytes(params: &Parameters, bytes: &[u8]) -> Result<Self> {
        from_slice(params, bytes, Kind::BootstrapKeys, |r| {
            read_bootstrap_keys(r, params)
        })
    }

    /// Reads one bootstrapping key set made for `params` from `src`,
    /// consuming exactly its bytes (wrap files in a [`std::io::BufReader`]).
    pub fn read_from<R: Read + ?Sized>(params: &Parameters, src: &mut R) -> Result<Self> {
        read_bootstrap_keys(&mut open_for(params, src, Kind::BootstrapKeys)?, params)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyGenerator;

    /// A key whose `a` is not a seed expansion travels whole and comes back
    /// equal, at its full level and truncated.
    #[test]
    fn unseeded_switching_keys_store_their_a() {
        let params = ParametersLiteral::preset("insecure-n10")
            .unwrap()
            .build()
            .unwrap();
        let mut kg = KeyGenerator::new(&params);
        let sk = kg.gen_secret_key();
        let mut key = kg.gen_relin_key(&sk);
        // Its `a` is the expansion of the old seed, not of any other: only a stored `a` round-trips.
        key.0.seed = UNSEEDED;
        for level in [params.max_level(), 1] {
            key.truncate_to_level(&params, level);
            let bytes = key.to_bytes(&params);
            assert!(bytes.len() > key.0.byte_size());
            assert_eq!(RelinKey::from_bytes(&params, &bytes).unwrap(), key);
            // Cut inside the stored `a`: still a truncation error.
            assert!(matches!(
                RelinKey::from_bytes(&params, &bytes[..bytes.len() - 8]),
                Err(CkksError::Decode(DecodeError::Truncated { needed: 8 }))
            ));
        }
    }
}
