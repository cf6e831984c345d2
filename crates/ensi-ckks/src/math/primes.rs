//! Deterministic generation of NTT-friendly primes q = 1 mod 2N.

/// Deterministic Miller-Rabin for all 64-bit integers (fixed witness set).
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    for p in [2u64, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let mulmod = |a: u64, b: u64| ((a as u128 * b as u128) % n as u128) as u64;
    let powmod = |mut b: u64, mut e: u64| {
        let mut r = 1u64;
        while e > 0 {
            if e & 1 == 1 {
                r = mulmod(r, b);
            }
            b = mulmod(b, b);
            e >>= 1;
        }
        r
    };
    let s = (n - 1).trailing_zeros();
    let d = (n - 1) >> s;
    'witness: for a in [2u64, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        let mut x = powmod(a, d);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mulmod(x, x);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

/// Generates primes q = 1 mod 2N, one per entry of `bit_sizes`, all distinct
/// and distinct from `exclude`.
///
/// Primes of one bit size are taken alternately just above and just below
/// 2^bits, so that a chain of rescaling primes stays as close as possible to
/// the scale 2^bits and the scale drifts little over many rescalings. The
/// result depends only on the inputs: the same literal always yields the same
/// chain.
pub fn ntt_primes(log_n: u32, bit_sizes: &[u32], exclude: &[u64]) -> Result<Vec<u64>, String> {
    let m = 2u64 << log_n;
    let mut chosen: Vec<u64> = Vec::with_capacity(bit_sizes.len());
    for (i, &bits) in bit_sizes.iter().enumerate() {
        if !(log_n + 2..=60).contains(&bits) {
            return Err(format!("prime bit size {bits} outside {}..=60", log_n + 2));
        }
        // Alternate sides for primes of the same size so their product stays near 2^(bits k).
        let same_size_before = bit_sizes[..i].iter().filter(|&&b| b == bits).count();
        let first_up = same_size_before % 2 == 0;
        let center = 1u64 << bits;
        let used = |c: u64| chosen.contains(&c) || exclude.contains(&c);
        let search = |up: bool| -> Option<u64> {
            (1..(center >> 1) / m)
                .map(|k| {
                    if up {
                        center + 1 + (k - 1) * m
                    } else {
                        center + 1 - k * m
                    }
                })
                .take(1 << 22)
                .find(|&c| !used(c) && is_prime(c))
        };
        match search(first_up).or_else(|| search(!first_up)) {
            Some(p) => chosen.push(p),
            None => return Err(format!("no {bits}-bit NTT prime found for N = 2^{log_n}")),
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn miller_rabin_agrees_with_trial_division() {
        let trial = |n: u64| {
            n >= 2
                && (2..)
                    .take_while(|d| d * d <= n)
                    .all(|d| !n.is_multiple_of(d))
        };
        for n in 0..5000u64 {
            assert_eq!(is_prime(n), trial(n), "{n}");
        }
        assert!(is_prime(0x1fffffffffe00001));
        assert!(!is_prime(0x1fffffffffe00001 * 3));
    }

    #[test]
    fn primes_are_ntt_friendly_distinct_and_deterministic() {
        let bits = [50, 40, 40, 40, 40, 50, 50];
        let a = ntt_primes(16, &bits, &[]).unwrap();
        let b = ntt_primes(16, &bits, &[]).unwrap();
        assert_eq!(a, b);
        for (i, &q) in a.iter().enumerate() {
            assert!(is_prime(q));
            assert_eq!(q % (2 << 16), 1);
            let b = 64 - q.leading_zeros();
            assert!(b == bits[i] || b == bits[i] + 1, "{q} has {b} bits");
            assert!((q as f64).log2() - bits[i] as f64 <= 0.01);
            for &r in &a[..i] {
                assert_ne!(q, r);
            }
        }
    }
}
