//! The production-size preset `n16-l20` (N = 2^16, 21 primes, dnum 3):
//! multiplication and rotation keep at least 20 bits at scale 2^40.
//!
//! Precision is the largest error over all 2^15 slots. Public-key encryption
//! at N = 2^16 and scale 2^40 gives about 19.7 bits by that measure (its noise
//! has three terms of N coefficients each); secret-key encryption, which a
//! client holding the key uses, gives about 30.

mod common;
use common::*;

#[test]
fn n16_l20_mul_relin_rescale_and_rotate() {
    let mut c = Ctx::new("n16-l20", &[5]);
    assert!(!c.params.is_insecure());
    assert!(c.params.log_qp() <= 1772.0);
    let (a, b) = (random_values(c.slots(), 1), random_values(c.slots(), 2));
    let pk_ct = c.encrypt(&a);
    assert_precision(
        "n16-l20 fresh public-key encryption",
        &c.decrypt(&pk_ct),
        &a,
        19.0,
    );
    let (ca, cb) = (c.encrypt_sk(&a), c.encrypt_sk(&b));
    assert_precision(
        "n16-l20 fresh secret-key encryption",
        &c.decrypt(&ca),
        &a,
        25.0,
    );
    let prod = c.eval.mul_rescale(&ca, &cb).unwrap();
    let want: Vec<_> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    assert_precision(
        "n16-l20 mul + relinearize + rescale",
        &c.decrypt(&prod),
        &want,
        20.0,
    );
    let rot = c.eval.rotate(&prod, 5).unwrap();
    let n = want.len();
    let want: Vec<_> = (0..n).map(|i| want[(i + 5) % n]).collect();
    assert_precision("n16-l20 rotate", &c.decrypt(&rot), &want, 20.0);
}
