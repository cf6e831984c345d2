//! Serialization: round trips, seeded key sizes, and corrupted input (which
//! must give a typed error, never a panic).

mod common;
use common::*;
use ensi_ckks::*;
use proptest::prelude::*;
use std::sync::{Arc, OnceLock};

struct Fixture {
    ctx: Ctx,
    keys: EvaluationKeys,
    ct_bytes: Vec<u8>,
    values: Vec<Complex64>,
}

/// One key set for all tests of this file (insecure-n10: small and fast).
fn fixture() -> &'static std::sync::Mutex<Fixture> {
    static F: OnceLock<std::sync::Mutex<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let mut ctx = Ctx::new("insecure-n10", &[1, -2]);
        let mut kg = KeyGenerator::new(&ctx.params);
        let keys = kg.gen_evaluation_keys(&ctx.sk, &[1, -2], true);
        let values = random_values(ctx.slots(), 11);
        let ct = ctx.encrypt(&values);
        let ct_bytes = ct.to_bytes(&ctx.params);
        std::sync::Mutex::new(Fixture {
            ctx,
            keys,
            ct_bytes,
            values,
        })
    })
}

#[test]
fn round_trips_preserve_meaning() {
    let f = fixture().lock().unwrap_or_else(|e| e.into_inner());
    let c = &f.ctx;
    let p = &c.params;

    let p2 = Parameters::from_bytes(&p.to_bytes()).unwrap();
    assert_eq!(&p2, p);

    let ct = Ciphertext::from_bytes(p, &f.ct_bytes).unwrap();
    assert_eq!(ct.to_bytes(p), f.ct_bytes);
    assert_precision("ciphertext round trip", &c.decrypt(&ct), &f.values, 20.0);

    let pt = c.dec.decrypt(&ct).unwrap();
    assert_eq!(Plaintext::from_bytes(p, &pt.to_bytes(p)).unwrap(), pt);

    let sk = SecretKey::from_bytes(p, &c.sk.to_bytes()).unwrap();
    assert_precision(
        "decrypt with re-read secret key",
        &c.encoder.decode(&Decryptor::new(&sk).decrypt(&ct).unwrap()),
        &f.values,
        20.0,
    );

    let pk = PublicKey::from_bytes(p, &c.pk.to_bytes(p)).unwrap();
    assert_eq!(pk, c.pk);

    let keys = EvaluationKeys::from_bytes(p, &f.keys.to_bytes(p)).unwrap();
    assert_eq!(keys.relin, f.keys.relin);
    assert_eq!(keys.galois, f.keys.galois);
    let rk = RelinKey::from_bytes(p, &f.keys.relin.as_ref().unwrap().to_bytes(p)).unwrap();
    assert_eq!(Some(rk), f.keys.relin);
    for g in f.keys.galois.values() {
        assert_eq!(&GaloisKey::from_bytes(p, &g.to_bytes(p)).unwrap(), g);
    }
    // The re-read keys evaluate correctly.
    let eval = Evaluator::new(p, Arc::new(keys));
    let r = eval.rotate(&ct, 1).unwrap();
    let n = f.values.len();
    let want: Vec<_> = (0..n).map(|i| f.values[(i + 1) % n]).collect();
    assert_precision("rotate with re-read keys", &c.decrypt(&r), &want, 20.0);
}

#[test]
fn seeded_keys_travel_at_half_size() {
    let f = fixture().lock().unwrap_or_else(|e| e.into_inner());
    let p = &f.ctx.params;
    let rk = f.keys.relin.as_ref().unwrap();
    let in_memory = rk.switching_key().byte_size() as f64;
    let on_wire = rk.to_bytes(p).len() as f64;
    let ratio = on_wire / in_memory;
    assert!(
        (0.49..0.52).contains(&ratio),
        "serialized/in-memory = {ratio}"
    );
}

#[test]
fn header_errors_are_typed() {
    let f = fixture().lock().unwrap_or_else(|e| e.into_inner());
    let p = &f.ctx.params;
    let good = &f.ct_bytes;
    let err = |b: &[u8]| Ciphertext::from_bytes(p, b).unwrap_err();

    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(err(&b), CkksError::Decode(DecodeError::BadMagic));
    let mut b = good.clone();
    b[4] = 9;
    assert_eq!(
        err(&b),
        CkksError::Decode(DecodeError::UnsupportedVersion(9))
    );
    let mut b = good.clone();
    b[6] = 3;
    assert!(matches!(
        err(&b),
        CkksError::Decode(DecodeError::WrongKind { found: 3, .. })
    ));
    let mut b = good.clone();
    b[20] ^= 1;
    assert_eq!(err(&b), CkksError::Decode(DecodeError::FingerprintMismatch));
    // Made for other parameters.
    let other = ParametersLiteral::preset("insecure-n12")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        Ciphertext::from_bytes(&other, good).unwrap_err(),
        CkksError::Decode(DecodeError::FingerprintMismatch)
    );
    // A residue above its modulus (first word of c0).
    let mut b = good.clone();
    let first_word = 40 + 8 + 1 + 5;
    b[first_word..first_word + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        err(&b),
        CkksError::Decode(DecodeError::ResidueOutOfRange { .. })
    ));
    // Trailing garbage and truncation.
    let mut b = good.clone();
    b.push(0);
    assert_eq!(err(&b), CkksError::Decode(DecodeError::TrailingBytes(1)));
    assert!(matches!(
        err(&good[..good.len() - 1]),
        CkksError::Decode(DecodeError::Truncated { .. })
    ));
    // A secret key with a coefficient outside {-1, 0, 1}.
    let mut b = f.ctx.sk.to_bytes();
    b[45] = 7;
    assert!(matches!(
        SecretKey::from_bytes(p, &b),
        Err(CkksError::Decode(DecodeError::InvalidValue { .. }))
    ));
    // An insecure literal re-labelled as secure is refused when read back.
    let mut pb = p.to_bytes();
    let name_len = u16::from_le_bytes([pb[40], pb[41]]) as usize;
    let insecure_flag = 40 + 2 + name_len + 6;
    pb[insecure_flag] = 0;
    assert!(Parameters::from_bytes(&pb).is_err());
}

#[test]
fn every_truncation_of_a_key_set_is_an_error() {
    let f = fixture().lock().unwrap_or_else(|e| e.into_inner());
    let p = &f.ctx.params;
    let bytes = f.keys.to_bytes(p);
    let step = (bytes.len() / 500).max(1);
    for len in (0..bytes.len())
        .step_by(step)
        .chain(bytes.len() - 64..bytes.len())
    {
        assert!(
            EvaluationKeys::from_bytes(p, &bytes[..len]).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bytes never panic, whatever kind they are read as.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), with_header in any::<bool>()) {
        let f = fixture().lock().unwrap_or_else(|e| e.into_inner());
        let p = &f.ctx.params;
        let mut b = bytes;
        if with_header && b.len() >= 40 {
            // Give the fuzzer a valid header so it reaches the body parsers.
            b[..40].copy_from_slice(&f.ct_bytes[..40]);
        }
        let _ = Ciphertext::from_bytes(p, &b);
        let _ = Plaintext::from_bytes(p, &b);
        let _ = SecretKey::from_bytes(p, &b);
        let _ = PublicKey::from_bytes(p, &b);
        let _ = RelinKey::from_bytes(p, &b);
        let _ = GaloisKey::from_bytes(p, &b);
        let _ = EvaluationKeys::from_bytes(p, &b);
        let _ = Parameters::from_bytes(&b);
    }

    /// Corrupting a valid ciphertext anywhere gives an error or a ciphertext, never a panic,
    /// and a decodable result is still usable by the evaluator.
    #[test]
    fn corrupted_ciphertexts_never_panic(pos in 0usize..60, byte in any::<u8>(), tail_pos in any::<prop::sample::Index>()) {
        let f = fixture().lock().unwrap_or_else(|e| e.into_inner());
        let p = &f.ctx.params;
        let mut b = f.ct_bytes.clone();
        let i = if pos < 59 { pos } else { tail_pos.index(b.len()) };
        b[i] = byte;
        if let Ok(ct) = Ciphertext::from_bytes(p, &b) {
            let _ = f.ctx.eval.add(&ct, &ct);
            let _ = f.ctx.dec.decrypt(&ct);
        }
    }
}
