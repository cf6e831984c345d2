//! Element-wise limb kernels that the hot paths (key switching, rescaling)
//! run over millions of words: one AVX-512 IFMA version (eight lanes, 52-bit
//! Shoup products) for primes below 2^50, and a plain scalar version that is
//! both the fallback (larger primes, other CPUs) and the reference the tests
//! compare the vector one with.
//!
//! Why by hand: a scalar Shoup product needs a 64 x 64 -> 128-bit multiply,
//! which the compiler cannot vectorize, and these loops were a fifth of a key
//! switch at N = 2^16.

use crate::math::Modulus;

/// IFMA handles primes below this (products and sums stay within 52 bits).
const IFMA_MAX_Q: u64 = 1 << 50;

fn use_ifma(m: &Modulus) -> bool {
    m.value() < IFMA_MAX_Q && ifma::available()
}

/// `out[i] = (a[i] - out[i]) * w mod q` for reduced inputs and `w < q`.
///
/// ModDown's last step ((x - [x]_P) P^-1) and rescaling's ((x - [x]_q) q^-1).
pub fn sub_from_mul_const(m: &Modulus, out: &mut [u64], a: &[u64], w: u64) {
    assert_eq!(out.len(), a.len());
    if use_ifma(m) && out.len().is_multiple_of(8) {
        // SAFETY: the CPU features were checked by `use_ifma`; q < 2^50.
        unsafe { ifma::sub_from_mul_const(m.value(), out, a, w) }
    } else if wide::available() && out.len().is_multiple_of(8) {
        // SAFETY: the CPU features were checked; q < 2^61 (every Modulus).
        unsafe { wide::sub_from_mul_const(m.value(), out, a, w, m.shoup(w)) }
    } else {
        sub_from_mul_const_scalar(m, out, a, w)
    }
}

fn sub_from_mul_const_scalar(m: &Modulus, out: &mut [u64], a: &[u64], w: u64) {
    let ws = m.shoup(w);
    for (o, &x) in out.iter_mut().zip(a) {
        *o = m.mul_shoup(m.sub(x, *o), w, ws);
    }
}

/// `out[i] = out[i] + a[i] * w mod q` for reduced inputs and `w < q`.
pub fn add_mul_const(m: &Modulus, out: &mut [u64], a: &[u64], w: u64) {
    assert_eq!(out.len(), a.len());
    if use_ifma(m) && out.len().is_multiple_of(8) {
        // SAFETY: the CPU features were checked by `use_ifma`; q < 2^50.
        unsafe { ifma::add_mul_const(m.value(), out, a, w) }
    } else if wide::available() && out.len().is_multiple_of(8) {
        // SAFETY: the CPU features were checked; q < 2^61 (every Modulus).
        unsafe { wide::add_mul_const(m.value(), out, a, w, m.shoup(w)) }
    } else {
        add_mul_const_scalar(m, out, a, w)
    }
}

fn add_mul_const_scalar(m: &Modulus, out: &mut [u64], a: &[u64], w: u64) {
    let ws = m.shoup(w);
    for (o, &x) in out.iter_mut().zip(a) {
        *o = m.add(*o, m.mul_shoup(x, w, ws));
    }
}

/// The most terms [`inner_product_pair`]'s lazy sums take (their high
/// halves must stay below 2^52: each is below 2^48 for q < 2^50).
pub const MAX_LAZY_TERMS: usize = 15;

/// Whether [`inner_product_pair`] has its vector form for `m` and `terms`
/// (otherwise it runs the scalar reference, slower than a vector multiply-accumulate).
pub fn has_fast_inner_product(m: &Modulus, terms: usize) -> bool {
    use_ifma(m) && terms <= MAX_LAZY_TERMS
}

/// `(acc0, acc1) = (sum_j x_j b_j, sum_j x_j a_j) mod q` pointwise, for
/// reduced inputs: the key product of a key switch (digits `xs`, the key's
/// halves `bs` and `a_s`), each digit read once for both halves.
pub fn inner_product_pair(
    m: &Modulus,
    acc0: &mut [u64],
    acc1: &mut [u64],
    xs: &[&[u64]],
    bs: &[&[u64]],
    a_s: &[&[u64]],
) {
    let n = acc0.len();
    assert!(acc1.len() == n && xs.len() == bs.len() && xs.len() == a_s.len());
    assert!(xs.iter().chain(bs).chain(a_s).all(|v| v.len() == n));
    if use_ifma(m) && n.is_multiple_of(8) && xs.len() <= MAX_LAZY_TERMS {
        // SAFETY: the CPU features were checked by `use_ifma`; q < 2^50; the
        // lengths were checked above.
        unsafe { ifma::inner_product_pair(m.value(), acc0, acc1, xs, bs, a_s) }
    } else {
        inner_product_pair_scalar(m, acc0, acc1, xs, bs, a_s)
    }
}

/// `(acc0, acc1) += (sum_j x_j b_j, sum_j x_j a_j) mod q` for at most
/// [`MAX_LAZY_TERMS`] terms: [`inner_product_pair`] into the scratch blocks,
/// then one addition and one conditional subtraction (both sums below q).
#[allow(clippy::too_many_arguments)]
pub fn inner_product_pair_add(
    m: &Modulus,
    acc0: &mut [u64],
    acc1: &mut [u64],
    xs: &[&[u64]],
    bs: &[&[u64]],
    a_s: &[&[u64]],
    scratch0: &mut [u64],
    scratch1: &mut [u64],
) {
    inner_product_pair(m, scratch0, scratch1, xs, bs, a_s);
    for (acc, t) in [(acc0, &*scratch0), (acc1, &*scratch1)] {
        for (o, t) in acc.iter_mut().zip(t) {
            *o += *t;
        }
        reduce_once(m.value(), acc);
    }
}

fn inner_product_pair_scalar(
    m: &Modulus,
    acc0: &mut [u64],
    acc1: &mut [u64],
    xs: &[&[u64]],
    bs: &[&[u64]],
    a_s: &[&[u64]],
) {
    for c in 0..acc0.len() {
        let (mut s0, mut s1) = (0u128, 0u128);
        for ((x, b), a) in xs.iter().zip(bs).zip(a_s) {
            s0 += x[c] as u128 * b[c] as u128;
            s1 += x[c] as u128 * a[c] as u128;
        }
        acc0[c] = m.reduce_u128(s0);
        acc1[c] = m.reduce_u128(s1);
    }
}

/// `x[i] -= q` where `x[i] >= q`: words in [0, 2q) brought into [0, q).
pub fn reduce_once(q: u64, x: &mut [u64]) {
    #[cfg(target_arch = "x86_64")]
    if wide::available() && x.len().is_multiple_of(8) {
        // SAFETY: the CPU features were checked.
        return unsafe { wide::reduce_once(q, x) };
    }
    reduce_once_scalar(q, x)
}

fn reduce_once_scalar(q: u64, x: &mut [u64]) {
    for v in x.iter_mut() {
        *v = (*v).min(v.wrapping_sub(q));
    }
}

/// `out[i]` = the residue mod q of the centered representative of `r[i]`
/// modulo `top` (an odd modulus; `r[i] < top`): `r[i]` if `r[i] <= top / 2`,
/// `r[i] - top` otherwise, reduced mod q.
///
/// Rescaling's lift of the dropped limb onto the kept primes.
pub fn lift_centered(m: &Modulus, top: u64, out: &mut [u64], r: &[u64]) {
    assert_eq!(out.len(), r.len());
    if use_ifma(m) && top < IFMA_MAX_Q && out.len().is_multiple_of(8) {
        // SAFETY: the CPU features were checked by `use_ifma`; q, top < 2^50.
        unsafe { ifma::lift_centered(m.value(), top, out, r) }
    } else if wide::available() && out.len().is_multiple_of(8) {
        // SAFETY: the CPU features were checked; q < 2^61 (every Modulus), r < top.
        unsafe { wide::lift_centered(m.value(), top, out, r, m.shoup(1)) }
    } else {
        lift_centered_scalar(m, top, out, r)
    }
}

fn lift_centered_scalar(m: &Modulus, top: u64, out: &mut [u64], r: &[u64]) {
    let half = top / 2;
    let top_mod = m.reduce(top);
    for (o, &v) in out.iter_mut().zip(r) {
        let x = m.reduce(v);
        *o = if v > half { m.sub(x, top_mod) } else { x };
    }
}

/// `out[i] = coeffs[i] mod q` for integer-valued `coeffs` below 2^63 in
/// magnitude (an encoder's rounded coefficients), for any prime.
///
/// Encoding at bootstrapping's scales (2^56 and more) puts coefficients
/// beyond the exact-f64 trick of small primes; one by one in scalar code the
/// reductions were as slow as the NTTs that follow them.
pub fn reduce_signed(m: &Modulus, out: &mut [u64], coeffs: &[f64]) {
    assert_eq!(out.len(), coeffs.len());
    if wide::available() && out.len().is_multiple_of(8) {
        // SAFETY: the CPU features were checked; q < 2^61 (every Modulus).
        unsafe { wide::reduce_signed(m.value(), out, coeffs, m.shoup(1), m.reduce_u128(1 << 64)) }
    } else {
        reduce_signed_scalar(m, out, coeffs)
    }
}

fn reduce_signed_scalar(m: &Modulus, out: &mut [u64], coeffs: &[f64]) {
    for (r, &c) in out.iter_mut().zip(coeffs) {
        *r = m.reduce_i64(c as i64);
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod ifma {
    use std::arch::x86_64::*;

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512ifma")
    }

    /// floor(w 2^52 / q): the 52-bit Shoup companion of w.
    fn shoup52(w: u64, q: u64) -> u64 {
        (((w as u128) << 52) / q as u128) as u64
    }

    /// Per lane a w mod q, for a < 2^52, w < q < 2^51 (so 2q < 2^52),
    /// ws = shoup52(w, q). Shared with the basis conversion's kernel.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(in crate::ring) fn mulmod(a: __m512i, w: __m512i, ws: __m512i, q: __m512i) -> __m512i {
        let zero = _mm512_setzero_si512();
        let mask = _mm512_set1_epi64(((1u64 << 52) - 1) as i64);
        let qhat = _mm512_madd52hi_epu64(zero, a, ws);
        let lo = _mm512_sub_epi64(
            _mm512_madd52lo_epu64(zero, a, w),
            _mm512_madd52lo_epu64(zero, qhat, q),
        );
        // a w - qhat q lies in [0, 2q): its low 52 bits are the value itself.
        let r = _mm512_and_si512(lo, mask);
        _mm512_min_epu64(r, _mm512_sub_epi64(r, q))
    }

    /// (a + b) mod q per lane for a, b < q.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(in crate::ring) fn addmod(a: __m512i, b: __m512i, q: __m512i) -> __m512i {
        let s = _mm512_add_epi64(a, b);
        _mm512_min_epu64(s, _mm512_sub_epi64(s, q))
    }

    /// (a - b) mod q per lane for a, b < q: a - b wraps when negative, and
    /// then a - b + q is the smaller of the two as unsigned words.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn submod(a: __m512i, b: __m512i, q: __m512i) -> __m512i {
        let d = _mm512_sub_epi64(a, b);
        _mm512_min_epu64(d, _mm512_add_epi64(d, q))
    }

    /// # Safety
    /// AVX-512F and IFMA must be available, q < 2^50, `out.len()` a multiple of 8.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn sub_from_mul_const(q: u64, out: &mut [u64], a: &[u64], w: u64) {
        let qv = _mm512_set1_epi64(q as i64);
        let wv = _mm512_set1_epi64(w as i64);
        let wsv = _mm512_set1_epi64(shoup52(w, q) as i64);
        for (o, x) in out.chunks_exact_mut(8).zip(a.chunks_exact(8)) {
            // SAFETY: both chunks hold exactly 8 words.
            unsafe {
                let ov = _mm512_loadu_si512(o.as_ptr() as *const _);
                let xv = _mm512_loadu_si512(x.as_ptr() as *const _);
                let r = mulmod(submod(xv, ov, qv), wv, wsv, qv);
                _mm512_storeu_si512(o.as_mut_ptr() as *mut _, r);
            }
        }
    }

    /// # Safety
    /// AVX-512F and IFMA must be available, q < 2^50, `out.len()` a multiple of 8.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn add_mul_const(q: u64, out: &mut [u64], a: &[u64], w: u64) {
        let qv = _mm512_set1_epi64(q as i64);
        let wv = _mm512_set1_epi64(w as i64);
        let wsv = _mm512_set1_epi64(shoup52(w, q) as i64);
        for (o, x) in out.chunks_exact_mut(8).zip(a.chunks_exact(8)) {
            // SAFETY: both chunks hold exactly 8 words.
            unsafe {
                let ov = _mm512_loadu_si512(o.as_ptr() as *const _);
                let xv = _mm512_loadu_si512(x.as_ptr() as *const _);
                let s = _mm512_add_epi64(ov, mulmod(xv, wv, wsv, qv));
                _mm512_storeu_si512(
                    o.as_mut_ptr() as *mut _,
                    _mm512_min_epu64(s, _mm512_sub_epi64(s, qv)),
                );
            }
        }
    }

    /// (hi 2^52 + lo) mod q per lane for hi, lo < 2^52, with r = 2^52 mod q.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn reduce_halves(
        hi: __m512i,
        lo: __m512i,
        r: [__m512i; 2],
        one: [__m512i; 2],
        q: __m512i,
    ) -> __m512i {
        let a = mulmod(hi, r[0], r[1], q);
        let b = mulmod(lo, one[0], one[1], q);
        let s = _mm512_add_epi64(a, b);
        _mm512_min_epu64(s, _mm512_sub_epi64(s, q))
    }

    /// # Safety
    /// AVX-512F and IFMA must be available, q < 2^50, every slice of
    /// `acc0.len()` words (a multiple of 8), at most 15 terms.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn inner_product_pair(
        q: u64,
        acc0: &mut [u64],
        acc1: &mut [u64],
        xs: &[&[u64]],
        bs: &[&[u64]],
        a_s: &[&[u64]],
    ) {
        let qv = _mm512_set1_epi64(q as i64);
        let mask = _mm512_set1_epi64(((1u64 << 52) - 1) as i64);
        let r52 = (1u64 << 52) % q;
        let r = [
            _mm512_set1_epi64(r52 as i64),
            _mm512_set1_epi64(shoup52(r52, q) as i64),
        ];
        let one = [
            _mm512_set1_epi64(1),
            _mm512_set1_epi64(shoup52(1, q) as i64),
        ];
        let zero = _mm512_setzero_si512();
        for p in (0..acc0.len()).step_by(8) {
            let (mut lo0, mut hi0, mut lo1, mut hi1) = (zero, zero, zero, zero);
            for ((x, b), a) in xs.iter().zip(bs).zip(a_s) {
                // SAFETY: p + 8 <= n for every slice (checked by the caller).
                unsafe {
                    let xv = _mm512_loadu_si512(x.as_ptr().add(p) as *const _);
                    let bv = _mm512_loadu_si512(b.as_ptr().add(p) as *const _);
                    let av = _mm512_loadu_si512(a.as_ptr().add(p) as *const _);
                    lo0 = _mm512_madd52lo_epu64(lo0, xv, bv);
                    hi0 = _mm512_madd52hi_epu64(hi0, xv, bv);
                    lo1 = _mm512_madd52lo_epu64(lo1, xv, av);
                    hi1 = _mm512_madd52hi_epu64(hi1, xv, av);
                }
            }
            // Products of values below 2^50 have high halves below 2^48: with
            // at most 15 terms and the low sums' carries, all stay below 2^52.
            hi0 = _mm512_add_epi64(hi0, _mm512_srli_epi64::<52>(lo0));
            hi1 = _mm512_add_epi64(hi1, _mm512_srli_epi64::<52>(lo1));
            let v0 = reduce_halves(hi0, _mm512_and_si512(lo0, mask), r, one, qv);
            let v1 = reduce_halves(hi1, _mm512_and_si512(lo1, mask), r, one, qv);
            // SAFETY: as above.
            unsafe {
                _mm512_storeu_si512(acc0.as_mut_ptr().add(p) as *mut _, v0);
                _mm512_storeu_si512(acc1.as_mut_ptr().add(p) as *mut _, v1);
            }
        }
    }

    /// # Safety
    /// AVX-512F and IFMA must be available, q and top < 2^50, `out.len()` a multiple of 8.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn lift_centered(q: u64, top: u64, out: &mut [u64], r: &[u64]) {
        let qv = _mm512_set1_epi64(q as i64);
        let half = _mm512_set1_epi64((top / 2) as i64);
        let top_mod = _mm512_set1_epi64((top % q) as i64);
        // v mod q as the Shoup product v * 1 (exact for v < 2^52).
        let one = _mm512_set1_epi64(1);
        let one_s = _mm512_set1_epi64(shoup52(1, q) as i64);
        for (o, v) in out.chunks_exact_mut(8).zip(r.chunks_exact(8)) {
            // SAFETY: both chunks hold exactly 8 words.
            unsafe {
                let vv = _mm512_loadu_si512(v.as_ptr() as *const _);
                let x = mulmod(vv, one, one_s, qv);
                let above = _mm512_cmpgt_epu64_mask(vv, half);
                let lifted = _mm512_mask_mov_epi64(x, above, submod(x, top_mod, qv));
                _mm512_storeu_si512(o.as_mut_ptr() as *mut _, lifted);
            }
        }
    }
}

/// The AVX-512 kernels for primes of any size (below 2^61): 64-bit Shoup
/// products, their high halves from four 32 x 32-bit multiplications.
#[cfg(target_arch = "x86_64")]
pub(super) mod wide {
    use std::arch::x86_64::*;

    pub(in crate::ring) fn available() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq")
    }

    /// The high 64 bits of a b per lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn mul_hi(a: __m512i, b: __m512i) -> __m512i {
        let low32 = _mm512_set1_epi64(0xffff_ffff);
        let (a1, b1) = (_mm512_srli_epi64::<32>(a), _mm512_srli_epi64::<32>(b));
        let p00 = _mm512_mul_epu32(a, b);
        let p01 = _mm512_mul_epu32(a, b1);
        let p10 = _mm512_mul_epu32(a1, b);
        let p11 = _mm512_mul_epu32(a1, b1);
        // The middle column: at most 3 (2^32 - 1) < 2^34, no overflow.
        let mid = _mm512_add_epi64(
            _mm512_add_epi64(_mm512_srli_epi64::<32>(p00), _mm512_and_si512(p01, low32)),
            _mm512_and_si512(p10, low32),
        );
        _mm512_add_epi64(
            _mm512_add_epi64(p11, _mm512_srli_epi64::<32>(mid)),
            _mm512_add_epi64(_mm512_srli_epi64::<32>(p01), _mm512_srli_epi64::<32>(p10)),
        )
    }

    /// a w mod q per lane for any a, w < q < 2^62, ws = floor(w 2^64 / q).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(in crate::ring) fn mulmod(a: __m512i, w: __m512i, ws: __m512i, q: __m512i) -> __m512i {
        let qhat = mul_hi(a, ws);
        let r = _mm512_sub_epi64(_mm512_mullo_epi64(a, w), _mm512_mullo_epi64(qhat, q));
        // r lies in [0, 2q).
        _mm512_min_epu64(r, _mm512_sub_epi64(r, q))
    }

    /// # Safety
    /// AVX-512F must be available, `x.len()` a multiple of 8.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn reduce_once(q: u64, x: &mut [u64]) {
        let qv = _mm512_set1_epi64(q as i64);
        for c in x.chunks_exact_mut(8) {
            // SAFETY: the chunk holds exactly 8 words.
            unsafe {
                let v = _mm512_loadu_si512(c.as_ptr() as *const _);
                let r = _mm512_min_epu64(v, _mm512_sub_epi64(v, qv));
                _mm512_storeu_si512(c.as_mut_ptr() as *mut _, r);
            }
        }
    }

    /// # Safety
    /// AVX-512F and DQ must be available, q < 2^61, `out.len()` a multiple of 8.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn sub_from_mul_const(q: u64, out: &mut [u64], a: &[u64], w: u64, ws: u64) {
        let qv = _mm512_set1_epi64(q as i64);
        let (wv, wsv) = (_mm512_set1_epi64(w as i64), _mm512_set1_epi64(ws as i64));
        for (o, x) in out.chunks_exact_mut(8).zip(a.chunks_exact(8)) {
            // SAFETY: both chunks hold exactly 8 words.
            unsafe {
                let ov = _mm512_loadu_si512(o.as_ptr() as *const _);
                let xv = _mm512_loadu_si512(x.as_ptr() as *const _);
                let d = _mm512_sub_epi64(xv, ov);
                let d = _mm512_min_epu64(d, _mm512_add_epi64(d, qv));
                _mm512_storeu_si512(o.as_mut_ptr() as *mut _, mulmod(d, wv, wsv, qv));
            }
        }
    }

    /// # Safety
    /// AVX-512F and DQ must be available, q < 2^61, `out.len()` a multiple of 8.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn add_mul_const(q: u64, out: &mut [u64], a: &[u64], w: u64, ws: u64) {
        let qv = _mm512_set1_epi64(q as i64);
        let (wv, wsv) = (_mm512_set1_epi64(w as i64), _mm512_set1_epi64(ws as i64));
        for (o, x) in out.chunks_exact_mut(8).zip(a.chunks_exact(8)) {
            // SAFETY: both chunks hold exactly 8 words.
            unsafe {
                let ov = _mm512_loadu_si512(o.as_ptr() as *const _);
                let xv = _mm512_loadu_si512(x.as_ptr() as *const _);
                let s = _mm512_add_epi64(ov, mulmod(xv, wv, wsv, qv));
                let s = _mm512_min_epu64(s, _mm512_sub_epi64(s, qv));
                _mm512_storeu_si512(o.as_mut_ptr() as *mut _, s);
            }
        }
    }

    /// # Safety
    /// AVX-512F and DQ must be available, q < 2^61, `out.len()` a multiple of
    /// 8, `one_s = floor(2^64 / q)`.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn lift_centered(q: u64, top: u64, out: &mut [u64], r: &[u64], one_s: u64) {
        let qv = _mm512_set1_epi64(q as i64);
        let half = _mm512_set1_epi64((top / 2) as i64);
        let top_mod = _mm512_set1_epi64((top % q) as i64);
        let (one, one_s) = (_mm512_set1_epi64(1), _mm512_set1_epi64(one_s as i64));
        for (o, v) in out.chunks_exact_mut(8).zip(r.chunks_exact(8)) {
            // SAFETY: both chunks hold exactly 8 words.
            unsafe {
                let vv = _mm512_loadu_si512(v.as_ptr() as *const _);
                let x = mulmod(vv, one, one_s, qv);
                let d = _mm512_sub_epi64(x, top_mod);
                let d = _mm512_min_epu64(d, _mm512_add_epi64(d, qv));
                let above = _mm512_cmpgt_epu64_mask(vv, half);
                _mm512_storeu_si512(o.as_mut_ptr() as *mut _, _mm512_mask_mov_epi64(x, above, d));
            }
        }
    }

    /// # Safety
    /// AVX-512F and DQ must be available, q < 2^61, `out.len()` a multiple of
    /// 8, every coefficient an integer below 2^63 in magnitude, `one_s =
    /// floor(2^64 / q)`, `r64 = 2^64 mod q`.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn reduce_signed(
        q: u64,
        out: &mut [u64],
        coeffs: &[f64],
        one_s: u64,
        r64: u64,
    ) {
        let qv = _mm512_set1_epi64(q as i64);
        let (one, one_s) = (_mm512_set1_epi64(1), _mm512_set1_epi64(one_s as i64));
        let r64 = _mm512_set1_epi64(r64 as i64);
        for (o, c) in out.chunks_exact_mut(8).zip(coeffs.chunks_exact(8)) {
            // SAFETY: both chunks hold exactly 8 words.
            unsafe {
                let x = _mm512_cvttpd_epi64(_mm512_loadu_pd(c.as_ptr()));
                // As unsigned words a negative x reads 2^64 + x: reduce that,
                // then take 2^64 mod q back off.
                let r = mulmod(x, one, one_s, qv);
                let d = _mm512_sub_epi64(r, r64);
                let d = _mm512_min_epu64(d, _mm512_add_epi64(d, qv));
                let negative = _mm512_cmplt_epi64_mask(x, _mm512_setzero_si512());
                _mm512_storeu_si512(
                    o.as_mut_ptr() as *mut _,
                    _mm512_mask_mov_epi64(r, negative, d),
                );
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) mod wide {
    pub(in crate::ring) fn available() -> bool {
        false
    }
    pub(super) unsafe fn sub_from_mul_const(_: u64, _: &mut [u64], _: &[u64], _: u64, _: u64) {
        unreachable!("AVX-512 kernel requested on a CPU without it")
    }
    pub(super) unsafe fn add_mul_const(_: u64, _: &mut [u64], _: &[u64], _: u64, _: u64) {
        unreachable!("AVX-512 kernel requested on a CPU without it")
    }
    pub(super) unsafe fn lift_centered(_: u64, _: u64, _: &mut [u64], _: &[u64], _: u64) {
        unreachable!("AVX-512 kernel requested on a CPU without it")
    }
    pub(super) unsafe fn reduce_signed(_: u64, _: &mut [u64], _: &[f64], _: u64, _: u64) {
        unreachable!("AVX-512 kernel requested on a CPU without it")
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod ifma {
    pub(super) fn available() -> bool {
        false
    }
    pub(super) unsafe fn sub_from_mul_const(_: u64, _: &mut [u64], _: &[u64], _: u64) {
        unreachable!("IFMA kernel requested on a CPU without it")
    }
    pub(super) unsafe fn lift_centered(_: u64, _: u64, _: &mut [u64], _: &[u64]) {
        unreachable!("IFMA kernel requested on a CPU without it")
    }
    pub(super) unsafe fn add_mul_const(_: u64, _: &mut [u64], _: &[u64], _: u64) {
        unreachable!("IFMA kernel requested on a CPU without it")
    }
    pub(super) unsafe fn inner_product_pair(
        _: u64,
        _: &mut [u64],
        _: &mut [u64],
        _: &[&[u64]],
        _: &[&[u64]],
        _: &[&[u64]],
    ) {
        unreachable!("IFMA kernel requested on a CPU without it")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::primes::ntt_primes;

    fn words(n: usize, bound: u64, seed: u64) -> Vec<u64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 5) % bound
            })
            .collect()
    }

    /// Signed coefficients up to 2^63 in magnitude, reduced by the vector
    /// kernel, equal the scalar reference and the definition.
    #[test]
    fn signed_reduction_matches_the_scalar_reference() {
        let n = 1024 + 8;
        for &q in &ntt_primes(10, &[30, 40, 50, 56, 60], &[]).unwrap() {
            let m = Modulus::new(q);
            let mut c: Vec<f64> = words(n, 1 << 62, q)
                .into_iter()
                .enumerate()
                .map(|(i, w)| {
                    // Magnitudes from tiny to 2^62, both signs.
                    let v = (w >> (i % 60)) as f64;
                    if i % 3 == 0 {
                        -v
                    } else {
                        v
                    }
                })
                .collect();
            let edges = [0.0, 1.0, -1.0, q as f64, -(q as f64), 9.2e18, -9.2e18];
            c[..edges.len()].copy_from_slice(&edges);
            let mut fast = vec![0; n];
            reduce_signed(&m, &mut fast, &c);
            let mut slow = vec![0; n];
            reduce_signed_scalar(&m, &mut slow, &c);
            assert_eq!(fast, slow, "q = {q}");
            for (i, &v) in c.iter().enumerate().take(64) {
                assert_eq!(slow[i], (v as i128).rem_euclid(q as i128) as u64, "{v}");
            }
        }
    }

    /// The dispatching kernels (vector where the CPU and prime allow) equal the
    /// scalar reference, edge values included, for primes on both sides of 2^50.
    #[test]
    fn kernels_match_the_scalar_reference() {
        if !ifma::available() {
            eprintln!("no AVX-512 IFMA on this CPU: only the scalar kernels run here");
        }
        let n = 1024 + 8;
        for &q in &ntt_primes(10, &[30, 40, 49, 50, 56, 60], &[]).unwrap() {
            let m = Modulus::new(q);
            let mut a = words(n, q, q);
            let mut c = words(n, q, q ^ 7);
            // Edge values: 0, 1, q - 1 on both sides.
            for (i, v) in [0, 1, q - 1].into_iter().enumerate() {
                a[i] = v;
                c[3 + i] = v;
                a[6 + i] = v;
                c[6 + i] = q - 1 - v;
            }
            for w in [0, 1, q - 1, q / 3] {
                let mut fast = c.clone();
                sub_from_mul_const(&m, &mut fast, &a, w);
                let mut slow = c.clone();
                sub_from_mul_const_scalar(&m, &mut slow, &a, w);
                assert_eq!(fast, slow, "q = {q}, w = {w}");
                // And the reference against the definition on a few words.
                for i in 0..16 {
                    let want =
                        ((a[i] as u128 + q as u128 - c[i] as u128) * w as u128 % q as u128) as u64;
                    assert_eq!(slow[i], want);
                }
                let mut fast = c.clone();
                add_mul_const(&m, &mut fast, &a, w);
                let mut slow = c.clone();
                add_mul_const_scalar(&m, &mut slow, &a, w);
                assert_eq!(fast, slow, "q = {q}, w = {w}");
                for i in 0..16 {
                    let want = ((c[i] as u128 + a[i] as u128 * w as u128) % q as u128) as u64;
                    assert_eq!(slow[i], want);
                }
            }
            for terms in [1usize, 3, 15] {
                let xs: Vec<Vec<u64>> = (0..terms).map(|t| words(n, q, q + 3 * t as u64)).collect();
                let bs: Vec<Vec<u64>> = (0..terms).map(|t| words(n, q, q + 5 * t as u64)).collect();
                let mut a_s: Vec<Vec<u64>> =
                    (0..terms).map(|t| words(n, q, q + 7 * t as u64)).collect();
                // The largest operands on some lanes.
                a_s[0][..8].fill(q - 1);
                fn view(v: &[Vec<u64>]) -> Vec<&[u64]> {
                    v.iter().map(|x| x.as_slice()).collect()
                }
                let (xv, bv, av) = (view(&xs), view(&bs), view(&a_s));
                let (mut f0, mut f1) = (vec![7; n], vec![7; n]);
                inner_product_pair(&m, &mut f0, &mut f1, &xv, &bv, &av);
                let (mut s0, mut s1) = (vec![0; n], vec![0; n]);
                inner_product_pair_scalar(&m, &mut s0, &mut s1, &xv, &bv, &av);
                assert_eq!((&f0, &f1), (&s0, &s1), "q = {q}, {terms} terms");
                for c in 0..16 {
                    let want =
                        (0..terms).fold(0u64, |acc, t| m.add(acc, m.mul(xs[t][c], bs[t][c])));
                    assert_eq!(s0[c], want);
                }
            }
            for &top in &ntt_primes(10, &[40, 49, 56], &[]).unwrap() {
                let mut r = words(n, top, top ^ q);
                r[0] = 0;
                r[1] = top / 2;
                r[2] = top / 2 + 1;
                r[3] = top - 1;
                let mut fast = vec![0; n];
                lift_centered(&m, top, &mut fast, &r);
                let mut slow = vec![0; n];
                lift_centered_scalar(&m, top, &mut slow, &r);
                assert_eq!(fast, slow, "q = {q}, top = {top}");
                for i in 0..16 {
                    let centered = if r[i] > top / 2 {
                        r[i] as i128 - top as i128
                    } else {
                        r[i] as i128
                    };
                    assert_eq!(slow[i], centered.rem_euclid(q as i128) as u64);
                }
            }
        }
    }
}
