//! Serialization of the bootstrapping keys (`insecure-boot-n11`, full slots):
//! round trips (in memory, streamed, through a file) that bootstrap as well
//! as the original keys, the seeded size, and damaged input (truncated,
//! corrupted header, wrong limb counts, out-of-range residues), which must
//! give a typed error and never a panic.

mod common;
use common::random_values;
use ensi_ckks::circuits::bootstrap::{BootstrapConfig, BootstrapKeys, Bootstrapper};
use ensi_ckks::*;
use std::io::{BufReader, BufWriter, Cursor, Read, Write};
use std::sync::OnceLock;

struct Fixture {
    params: Parameters,
    config: BootstrapConfig,
    sk: SecretKey,
    keys: BootstrapKeys,
    bytes: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let params = ParametersLiteral::preset("insecure-boot-n11")
            .unwrap()
            .build()
            .unwrap();
        let config = BootstrapConfig::for_params(&params);
        let sk = KeyGenerator::new(&params).gen_secret_key();
        let keys = BootstrapKeys::generate(&params, &config, &sk, &[]).unwrap();
        let bytes = keys.to_bytes(&params);
        Fixture {
            params,
            config,
            sk,
            keys,
            bytes,
        }
    })
}

fn assert_same_keys(a: &BootstrapKeys, b: &BootstrapKeys) {
    assert_eq!(a.eval.relin, b.eval.relin);
    assert_eq!(a.eval.galois, b.eval.galois);
    assert_eq!(a.to_sparse, b.to_sparse);
    assert_eq!(a.to_dense, b.to_dense);
}

/// Bootstraps a level-0 encryption of random complex slots with `keys` and
/// returns the precision in bits (-log2 of the largest slot error).
fn bootstrap_precision(keys: BootstrapKeys) -> f64 {
    let f = fixture();
    let (p, log_slots) = (&f.params, f.config.log_slots);
    let bt = Bootstrapper::new(p, f.config.clone(), keys).unwrap();
    let encoder = Encoder::new(p);
    let v = random_values(1 << log_slots, 21);
    let pt = encoder.encode(&v, 0, p.default_scale(), log_slots).unwrap();
    let ct = Encryptor::with_secret_key(p, &f.sk).encrypt(&pt).unwrap();
    let out = bt.bootstrap(&ct).unwrap();
    assert_eq!(out.level(), bt.output_level());
    let got = encoder.decode(&Decryptor::new(&f.sk).decrypt(&out).unwrap());
    common::precision_bits(&got, &v)
}

#[test]
fn round_trip_bootstraps_like_the_original() {
    let f = fixture();
    let p = &f.params;
    let keys = BootstrapKeys::from_bytes(p, &f.bytes).unwrap();
    assert_same_keys(&keys, &f.keys);
    assert_eq!(keys.to_bytes(p), f.bytes);
    let bits = bootstrap_precision(keys);
    eprintln!("bootstrap with deserialized keys: {bits:.1} bits");
    // Full slots at N = 2^11: ~21 bits with fresh keys (tests/bootstrap.rs).
    assert!(bits >= 19.0, "{bits:.1} bits");
}

#[test]
fn streaming_writes_the_same_bytes_and_reads_exactly_one_object() {
    let f = fixture();
    let p = &f.params;
    let mut streamed = Vec::new();
    f.keys.write_to(p, &mut streamed).unwrap();
    assert_eq!(streamed, f.bytes);

    // Two objects back to back: each read consumes exactly its own bytes.
    let mut two = streamed.clone();
    f.keys.eval.write_to(p, &mut two).unwrap();
    let mut cur = Cursor::new(&two);
    let keys = BootstrapKeys::read_from(p, &mut cur).unwrap();
    assert_eq!(cur.position() as usize, f.bytes.len());
    assert_same_keys(&keys, &f.keys);
    let eval = EvaluationKeys::read_from(p, &mut cur).unwrap();
    assert_eq!(cur.position() as usize, two.len());
    assert_eq!(eval.galois, f.keys.eval.galois);
    assert_eq!(eval.to_bytes(p), f.keys.eval.to_bytes(p));

    // Through a file, as a server would store them.
    let path = std::env::temp_dir().join(format!("ensi-boot-keys-{}.bin", std::process::id()));
    {
        let mut file = BufWriter::new(std::fs::File::create(&path).unwrap());
        f.keys.write_to(p, &mut file).unwrap();
        file.flush().unwrap();
    }
    assert_eq!(
        std::fs::metadata(&path).unwrap().len() as usize,
        f.bytes.len()
    );
    let mut file = BufReader::new(std::fs::File::open(&path).unwrap());
    let keys = BootstrapKeys::read_from(p, &mut file).unwrap();
    let mut rest = Vec::new();
    file.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    // A file cut short is an error too.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(f.bytes.len() as u64 / 2)
        .unwrap();
    let cut = BootstrapKeys::read_from(p, &mut BufReader::new(std::fs::File::open(&path).unwrap()));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        cut,
        Err(CkksError::Decode(DecodeError::Truncated { .. }))
    ));
    let bits = bootstrap_precision(keys);
    eprintln!("bootstrap with keys read from a file: {bits:.1} bits");
    assert!(bits >= 19.0, "{bits:.1} bits");
}

#[test]
fn keys_are_stored_seeded() {
    let f = fixture();
    let p = &f.params;
    let in_memory = f.keys.byte_size();
    let on_wire = f.bytes.len();
    let ratio = on_wire as f64 / in_memory as f64;
    let sparse_wire = 32 + 5 + f.keys.to_sparse.byte_size() / 2;
    eprintln!(
        "{}: {} Galois keys, {:.1} MiB in memory, {:.1} MiB serialized ({ratio:.3}); \
         encapsulation key {} bytes in memory, {} on the wire",
        p.name(),
        f.keys.eval.galois.len(),
        in_memory as f64 / 2f64.powi(20),
        on_wire as f64 / 2f64.powi(20),
        f.keys.to_sparse.byte_size(),
        sparse_wire
    );
    assert!(
        (0.49..0.51).contains(&ratio),
        "serialized/in-memory = {ratio}"
    );
    // The parts add up: the evaluation keys alone, the two switching keys at half size.
    let eval_len = f.keys.eval.to_bytes(p).len();
    let dense_wire = 32 + 2 + f.keys.to_dense.byte_size() / 2 + 5 * p.dnum();
    assert_eq!(on_wire, eval_len + sparse_wire + dense_wire);
}

/// Offset of the first residue word of the relinearization key: header,
/// relinearization flag, seed, digit count, polynomial header.
const FIRST_WORD: usize = 40 + 1 + 32 + 2 + 5;

fn decode_err(bytes: &[u8]) -> CkksError {
    let p = &fixture().params;
    let slice = BootstrapKeys::from_bytes(p, bytes).unwrap_err();
    // The streaming reader sees the same damage (it cannot see trailing bytes).
    if !matches!(slice, CkksError::Decode(DecodeError::TrailingBytes(_))) {
        let streamed = BootstrapKeys::read_from(p, &mut Cursor::new(bytes)).unwrap_err();
        assert_eq!(streamed, slice);
    }
    slice
}

#[test]
fn truncated_input_is_an_error() {
    let f = fixture();
    let len = f.bytes.len();
    let mut cuts = vec![0, 1, 4, 39, 40, 41, FIRST_WORD, FIRST_WORD + 3, len - 1];
    cuts.extend((1..16).map(|i| len * i / 16));
    cuts.extend(len - 8..len);
    for cut in cuts {
        assert!(
            matches!(
                decode_err(&f.bytes[..cut]),
                CkksError::Decode(DecodeError::Truncated { .. })
            ),
            "prefix of {cut} bytes"
        );
    }
    let mut longer = f.bytes.clone();
    longer.push(0);
    assert_eq!(
        decode_err(&longer),
        CkksError::Decode(DecodeError::TrailingBytes(1))
    );
}

#[test]
fn corrupted_header_is_an_error() {
    let f = fixture();
    let edit = |i: usize, v: u8| {
        let mut b = f.bytes.clone();
        b[i] = v;
        decode_err(&b)
    };
    assert_eq!(edit(0, b'X'), CkksError::Decode(DecodeError::BadMagic));
    assert_eq!(
        edit(4, 2),
        CkksError::Decode(DecodeError::UnsupportedVersion(2))
    );
    // An evaluation key set is not a bootstrapping key set, nor the reverse.
    assert!(matches!(
        edit(6, 8),
        CkksError::Decode(DecodeError::WrongKind { found: 8, .. })
    ));
    assert!(matches!(
        EvaluationKeys::from_bytes(&f.params, &f.bytes),
        Err(CkksError::Decode(DecodeError::WrongKind { found: 9, .. }))
    ));
    assert!(matches!(
        edit(7, 1),
        CkksError::Decode(DecodeError::InvalidValue { .. })
    ));
    for i in [8, 20, 39] {
        let mut b = f.bytes.clone();
        b[i] ^= 0x10;
        assert_eq!(
            decode_err(&b),
            CkksError::Decode(DecodeError::FingerprintMismatch)
        );
    }
    // Keys made for other parameters.
    let other = ParametersLiteral::preset("insecure-n10")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        BootstrapKeys::from_bytes(&other, &f.bytes).unwrap_err(),
        CkksError::Decode(DecodeError::FingerprintMismatch)
    );
}

#[test]
fn corrupted_body_is_an_error() {
    let f = fixture();
    let p = &f.params;
    let n = p.n();
    let put_u16 =
        |b: &mut Vec<u8>, at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let bad_length = |b: &[u8]| {
        matches!(
            decode_err(b),
            CkksError::Decode(DecodeError::BadLength { .. })
        )
    };

    // A residue above its modulus, first and last word of the relinearization key's b_0.
    let mut b = f.bytes.clone();
    b[FIRST_WORD..FIRST_WORD + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        decode_err(&b),
        CkksError::Decode(DecodeError::ResidueOutOfRange { .. })
    ));
    // The relinearization flag, the digit count and the limb counts.
    let mut b = f.bytes.clone();
    b[40] = 2;
    assert!(matches!(
        decode_err(&b),
        CkksError::Decode(DecodeError::InvalidValue { .. })
    ));
    for digits in [0u16, p.dnum() as u16 + 1] {
        let mut b = f.bytes.clone();
        put_u16(&mut b, 40 + 1 + 32, digits);
        assert!(bad_length(&b), "{digits} digits");
    }
    let q_at = FIRST_WORD - 5;
    for q in [0u16, p.q_count() as u16 + 1, u16::MAX] {
        let mut b = f.bytes.clone();
        put_u16(&mut b, q_at, q);
        assert!(bad_length(&b), "{q} Q limbs");
    }
    let mut b = f.bytes.clone();
    put_u16(&mut b, q_at + 2, p.p_count() as u16 - 1);
    assert!(bad_length(&b));
    let mut b = f.bytes.clone();
    b[q_at + 4] = 0;
    assert!(matches!(
        decode_err(&b),
        CkksError::Decode(DecodeError::InvalidValue { field: "NTT flag" })
    ));

    // The key s' -> s is last: it must cover the whole chain.
    let dense = 32 + 2 + p.dnum() * (5 + (p.q_count() + p.p_count()) * n * 8);
    let dense_at = f.bytes.len() - dense;
    let mut b = f.bytes.clone();
    put_u16(&mut b, dense_at + 34, p.q_count() as u16 - 1);
    assert!(bad_length(&b));
    let mut b = f.bytes.clone();
    b[dense_at + 39..dense_at + 47].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        decode_err(&b),
        CkksError::Decode(DecodeError::ResidueOutOfRange { .. })
    ));
    // The encapsulation key before it: two primes, q_0 and p_0.
    let sparse_at = dense_at - (32 + 5 + 2 * n * 8);
    let mut b = f.bytes.clone();
    put_u16(&mut b, sparse_at + 32, 2);
    assert!(bad_length(&b));
    let mut b = f.bytes.clone();
    put_u16(&mut b, sparse_at + 34, 2);
    assert!(bad_length(&b));
    // Its residues modulo p_0 (second limb) are checked against p_0.
    let mut b = f.bytes.clone();
    let p0_limb = sparse_at + 37 + n * 8;
    b[p0_limb..p0_limb + 8].copy_from_slice(&(p.p()[0]).to_le_bytes());
    assert!(matches!(
        decode_err(&b),
        CkksError::Decode(DecodeError::ResidueOutOfRange { .. })
    ));
    // A flipped seed gives other keys, not an error: the keys are then wrong,
    // which Bootstrapper::new cannot see, but they still have valid shapes.
    let mut b = f.bytes.clone();
    b[sparse_at] ^= 1;
    let keys = BootstrapKeys::from_bytes(p, &b).unwrap();
    assert_ne!(keys.to_sparse, f.keys.to_sparse);
    assert!(Bootstrapper::new(p, f.config.clone(), keys).is_ok());
}

#[test]
fn damaged_bytes_never_panic() {
    let f = fixture();
    let p = &f.params;
    // Deterministic byte flips all over the object (cheap: most fail early or at the end).
    let mut s = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..40 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let mut b = f.bytes.clone();
        let at = (s % b.len() as u64) as usize;
        b[at] = (s >> 32) as u8;
        if let Ok(keys) = BootstrapKeys::from_bytes(p, &b) {
            let _ = Bootstrapper::new(p, f.config.clone(), keys);
        }
    }
}
