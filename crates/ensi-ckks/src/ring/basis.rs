//! Fast (approximate) RNS basis conversion, the core of ModUp and ModDown.
//!
//! Given the residues x_i of x modulo the primes a_i of a basis A, the
//! conversion computes, modulo each prime b_j of a basis B,
//!
//!   sum_i [x_i (A/a_i)^-1]_{a_i} (A/a_i)  =  x + u A,   0 <= u < |A|,
//!
//! without ever forming x. The small multiple u A is harmless in hybrid key
//! switching (it vanishes modulo Q after the key product) and in ModDown (it
//! becomes an error of at most |A| after division by P).

use super::Ring;
use rayon::prelude::*;

/// Coefficients are converted in blocks of this many so that the scaled
/// source residues of one block stay in the L1/L2 cache while every target
/// limb is produced.
const BLOCK: usize = 256;

/// Precomputed constants for converting from one set of moduli to another.
#[derive(Clone, Debug)]
pub struct BasisConverter {
    src: Vec<usize>,
    dst: Vec<usize>,
    /// [(A/a_i)^-1 * factor_i]_{a_i} and its Shoup companion.
    hat_inv: Vec<(u64, u64)>,
    /// (A/a_i) mod b_j at [j * src.len() + i].
    hat_mod_dst: Vec<u64>,
    /// 1 / a_i, to estimate the overflow u for the centered conversion.
    src_recip: Vec<f64>,
    /// A mod b_j.
    prod_mod_dst: Vec<u64>,
    ifma: Option<IfmaConsts>,
    /// -A mod b_j.
    neg_prod: Vec<u64>,
    /// The AVX-512 kernel's constants, for primes too large for [`IfmaConsts`].
    wide: Option<wide::WideConsts>,
}

impl BasisConverter {
    /// Constants for converting from moduli `src` to moduli `dst` (indices into
    /// [`Ring::moduli`]).
    pub fn new(ring: &Ring, src: &[usize], dst: &[usize]) -> Self {
        Self::with_input_factor(ring, src, dst, false)
    }

    /// Like [`BasisConverter::new`], but the inputs are taken to be N times
    /// the true residues (the output of an unnormalized inverse NTT): the
    /// factor N^-1 is folded into the first constant, saving a pass.
    pub fn new_after_unnormalized_intt(ring: &Ring, src: &[usize], dst: &[usize]) -> Self {
        Self::with_input_factor(ring, src, dst, true)
    }

    fn with_input_factor(ring: &Ring, src: &[usize], dst: &[usize], times_n_inv: bool) -> Self {
        assert!(
            !src.is_empty() && src.len() <= 128,
            "basis conversion needs 1..=128 source primes"
        );
        let moduli = ring.moduli();
        let hat_inv = src
            .iter()
            .map(|&i| {
                let m = &moduli[i];
                let prod = src
                    .iter()
                    .filter(|&&k| k != i)
                    .fold(1u64, |acc, &k| m.mul(acc, m.reduce(moduli[k].value())));
                let mut inv = m.inv(prod);
                if times_n_inv {
                    inv = m.mul(inv, m.inv(ring.n() as u64));
                }
                (inv, m.shoup(inv))
            })
            .collect();
        let mut hat_mod_dst = Vec::with_capacity(src.len() * dst.len());
        for &j in dst {
            let m = &moduli[j];
            for &i in src {
                hat_mod_dst.push(
                    src.iter()
                        .filter(|&&k| k != i)
                        .fold(1u64, |acc, &k| m.mul(acc, m.reduce(moduli[k].value()))),
                );
            }
        }
        let src_recip = src
            .iter()
            .map(|&i| 1.0 / moduli[i].value() as f64)
            .collect();
        let prod_mod_dst = dst
            .iter()
            .map(|&j| {
                src.iter().fold(1u64, |acc, &k| {
                    moduli[j].mul(acc, moduli[j].reduce(moduli[k].value()))
                })
            })
            .collect();
        let neg_prod = dst
            .iter()
            .zip(&prod_mod_dst)
            .map(|(&j, &a)| moduli[j].sub(0, a))
            .collect();
        let mut conv = Self {
            src: src.to_vec(),
            dst: dst.to_vec(),
            hat_inv,
            hat_mod_dst,
            src_recip,
            prod_mod_dst,
            ifma: None,
            neg_prod,
            wide: None,
        };
        conv.ifma = IfmaConsts::new(&conv, moduli);
        if conv.ifma.is_none() {
            conv.wide = Some(wide::WideConsts::new(&conv, moduli));
        }
        conv
    }

    /// Source modulus indices.
    pub fn src(&self) -> &[usize] {
        &self.src
    }
    /// Target modulus indices.
    pub fn dst(&self) -> &[usize] {
        &self.dst
    }

    /// Converts coefficient-form limbs `input[i]` (mod src[i]) into `output[j]`
    /// (mod dst[j]), up to a multiple u A of the source product, 0 <= u < |A|.
    pub fn convert(&self, ring: &Ring, input: &[&[u64]], output: &mut [&mut [u64]]) {
        self.convert_impl(ring, input, output, false)
    }

    /// Converts exactly the centered representative of x, in (-A/2, A/2].
    ///
    /// The overflow u = round(sum_i y_i / a_i) is estimated in floating point
    /// and subtracted. ModDown needs this: the fast conversion's u lies in
    /// [0, |A|) and is not centered, and its mean, multiplied by the secret,
    /// becomes an error whose canonical norm grows like N.
    pub fn convert_centered(&self, ring: &Ring, input: &[&[u64]], output: &mut [&mut [u64]]) {
        self.convert_impl(ring, input, output, true)
    }

    fn convert_impl(
        &self,
        ring: &Ring,
        input: &[&[u64]],
        output: &mut [&mut [u64]],
        centered: bool,
    ) {
        self.convert_with(ring, input, output, centered, true)
    }

    /// The conversion with an explicit choice of kernel (tests compare the
    /// two): `vector` takes the IFMA kernel where every prime suits it, the
    /// AVX-512 one otherwise, where the CPU has them; the scalar reference if not.
    pub(crate) fn convert_with(
        &self,
        ring: &Ring,
        input: &[&[u64]],
        output: &mut [&mut [u64]],
        centered: bool,
        vector: bool,
    ) {
        let use_ifma = vector && self.ifma.is_some() && ifma::available();
        let use_wide = vector && !use_ifma && wide::available();
        let k = self.src.len();
        assert_eq!(input.len(), k);
        assert_eq!(output.len(), self.dst.len());
        let n = ring.n();
        // Regroup the outputs by block so that blocks can run in parallel.
        let blocks = n.div_ceil(BLOCK);
        let mut per_block: Vec<Vec<&mut [u64]>> = (0..blocks)
            .map(|_| Vec::with_capacity(output.len()))
            .collect();
        for out in output.iter_mut() {
            for (b, chunk) in out.chunks_mut(BLOCK).enumerate() {
                per_block[b].push(chunk);
            }
        }
        per_block
            .into_par_iter()
            .enumerate()
            .for_each(|(b, mut outs)| {
                let start = b * BLOCK;
                let len = BLOCK.min(n - start);
                let inputs: Vec<&[u64]> = input.iter().map(|x| &x[start..start + len]).collect();
                match (&self.ifma, use_ifma) {
                    // SAFETY: `ifma::available()` was checked by the caller of the fast path.
                    (Some(consts), true) if len.is_multiple_of(8) => unsafe {
                        ifma::convert_block(consts, &inputs, &mut outs, centered)
                    },
                    // SAFETY: `wide::available()` was checked above.
                    _ if use_wide && len.is_multiple_of(8) && self.wide.is_some() => unsafe {
                        let consts = self.wide.as_ref().expect("checked");
                        wide::convert_block(self, consts, ring, &inputs, &mut outs, centered)
                    },
                    _ => self.convert_block_scalar(ring, &inputs, &mut outs, centered),
                }
            });
    }

    /// The plain reference kernel: 128-bit accumulation and one Barrett reduction per output.
    fn convert_block_scalar(
        &self,
        ring: &Ring,
        inputs: &[&[u64]],
        outs: &mut [&mut [u64]],
        centered: bool,
    ) {
        let k = self.src.len();
        let len = inputs[0].len();
        let moduli = ring.moduli();
        let mut y = vec![0u64; k * len];
        for (i, &src) in self.src.iter().enumerate() {
            let m = &moduli[src];
            let (w, ws) = self.hat_inv[i];
            for (y, &x) in y[i * len..(i + 1) * len].iter_mut().zip(inputs[i]) {
                *y = m.mul_shoup(x, w, ws);
            }
        }
        let overflow: Vec<u64> = if centered {
            (0..len)
                .map(|c| {
                    (0..k)
                        .map(|i| y[i * len + c] as f64 * self.src_recip[i])
                        .sum::<f64>()
                        .round() as u64
                })
                .collect()
        } else {
            Vec::new()
        };
        for (j, out) in outs.iter_mut().enumerate() {
            let m = &moduli[self.dst[j]];
            let w = &self.hat_mod_dst[j * k..(j + 1) * k];
            for (c, o) in out.iter_mut().enumerate() {
                let mut acc = 0u128;
                for i in 0..k {
                    acc += y[i * len + c] as u128 * w[i] as u128;
                }
                *o = m.reduce_u128(acc);
            }
            if centered {
                let a_mod = self.prod_mod_dst[j];
                for (o, &u) in out.iter_mut().zip(&overflow) {
                    *o = m.sub(*o, m.mul(u, a_mod));
                }
            }
        }
    }
}

/// Constants of the AVX-512 IFMA kernel: 52-bit Shoup companions of every weight.
#[derive(Clone, Debug)]
struct IfmaConsts {
    k: usize,
    src_q: Vec<u64>,
    /// (w, floor(w 2^52 / q)) of (A/a_i)^-1 mod a_i.
    hat_inv: Vec<(u64, u64)>,
    /// Per target: q, then k (w, w') of (A/a_i) mod b_j, then (w, w') of -A mod b_j.
    dst_q: Vec<u64>,
    hat_mod_dst: Vec<(u64, u64)>,
    neg_prod: Vec<(u64, u64)>,
    src_recip: Vec<f64>,
    /// Per target: (2^52 mod q, its companion) and (1, its companion), for
    /// the lazy kernel; empty when its sums could overflow (see [`IfmaConsts::new`]).
    lazy: Vec<[(u64, u64); 2]>,
}

fn shoup52(w: u64, q: u64) -> (u64, u64) {
    (w, (((w as u128) << 52) / q as u128) as u64)
}

impl IfmaConsts {
    /// The kernel's Shoup trick needs every modulus below 2^51 (so 2q < 2^52).
    fn new(conv: &BasisConverter, moduli: &[crate::math::Modulus]) -> Option<Self> {
        let limit = 1u64 << 51;
        let src_q: Vec<u64> = conv.src.iter().map(|&i| moduli[i].value()).collect();
        let dst_q: Vec<u64> = conv.dst.iter().map(|&j| moduli[j].value()).collect();
        if src_q.iter().chain(&dst_q).any(|&q| q >= limit) {
            return None;
        }
        let k = src_q.len();
        let hat_inv = conv
            .hat_inv
            .iter()
            .zip(&src_q)
            .map(|(&(w, _), &q)| shoup52(w, q))
            .collect();
        let hat_mod_dst = conv
            .hat_mod_dst
            .iter()
            .enumerate()
            .map(|(idx, &w)| shoup52(w, dst_q[idx / k]))
            .collect();
        let neg_prod = conv
            .prod_mod_dst
            .iter()
            .zip(&dst_q)
            .map(|(&a, &q)| shoup52((q - a) % q, q))
            .collect();
        // The lazy kernel sums the 104-bit products y_i w_ij (and u (-A)) as
        // separate low and high 52-bit halves, reducing once per output: the
        // high halves plus the carries of the low ones must stay below 2^52.
        let max_src = src_q.iter().copied().max().unwrap_or(0) as f64;
        let max_dst = dst_q.iter().copied().max().unwrap_or(0) as f64;
        let terms = (k + 1) as f64;
        let high_sum = terms * (max_src * max_dst / 2f64.powi(52)) + 2.0 * terms;
        let lazy = if high_sum < 2f64.powi(52) {
            dst_q
                .iter()
                .map(|&q| [shoup52((1u64 << 52) % q, q), shoup52(1, q)])
                .collect()
        } else {
            Vec::new()
        };
        Some(Self {
            k,
            src_q,
            hat_inv,
            dst_q,
            hat_mod_dst,
            neg_prod,
            src_recip: conv.src_recip.clone(),
            lazy,
        })
    }
}

/// The AVX-512 IFMA kernel: eight coefficients per instruction, every
/// product reduced by a 52-bit Shoup multiplication.
#[cfg(target_arch = "x86_64")]
mod ifma {
    use super::super::kernels::ifma::{addmod, mulmod};
    use super::IfmaConsts;
    use std::arch::x86_64::*;

    /// Whether the CPU has AVX-512F, DQ and IFMA.
    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512ifma")
    }

    /// Converts one block (length a multiple of 8).
    ///
    /// # Safety
    /// The CPU must support AVX-512F, DQ and IFMA (see [`available`]).
    #[target_feature(enable = "avx512f,avx512dq,avx512ifma")]
    pub(super) unsafe fn convert_block(
        c: &IfmaConsts,
        inputs: &[&[u64]],
        outs: &mut [&mut [u64]],
        centered: bool,
    ) {
        thread_local! {
            /// Scaled residues and overflows of one block, reused: a fresh
            /// zeroed buffer per block cost as much as the block's outputs.
            static SCRATCH: std::cell::Cell<Vec<u64>> = const { std::cell::Cell::new(Vec::new()) };
        }
        let len = inputs[0].len();
        let mut buf = SCRATCH.take();
        let need = (c.k + 1) * len;
        if buf.len() < need {
            buf.resize(need, 0);
        }
        let (y, rest) = buf.split_at_mut(c.k * len);
        let overflow = &mut rest[..if centered { len } else { 0 }];
        // SAFETY: the caller's guarantees; every word of y and overflow read
        // below is written first.
        unsafe { convert_block_in(c, inputs, outs, centered, y, overflow) };
        SCRATCH.set(buf);
    }

    #[target_feature(enable = "avx512f,avx512dq,avx512ifma")]
    unsafe fn convert_block_in(
        c: &IfmaConsts,
        inputs: &[&[u64]],
        outs: &mut [&mut [u64]],
        centered: bool,
        y: &mut [u64],
        overflow: &mut [u64],
    ) {
        let k = c.k;
        let len = inputs[0].len();
        #[allow(clippy::needless_range_loop)] // i indexes four parallel tables
        for i in 0..k {
            let q = _mm512_set1_epi64(c.src_q[i] as i64);
            let (w, ws) = c.hat_inv[i];
            let (w, ws) = (_mm512_set1_epi64(w as i64), _mm512_set1_epi64(ws as i64));
            for p in (0..len).step_by(8) {
                // SAFETY: p + 8 <= len for every slice here (len is a multiple of 8).
                let x = unsafe { _mm512_loadu_si512(inputs[i].as_ptr().add(p) as *const _) };
                unsafe {
                    _mm512_storeu_si512(
                        y.as_mut_ptr().add(i * len + p) as *mut _,
                        mulmod(x, w, ws, q),
                    )
                };
            }
        }
        if centered {
            for p in (0..len).step_by(8) {
                let mut f = _mm512_setzero_pd();
                for i in 0..k {
                    let yi = unsafe { _mm512_loadu_si512(y.as_ptr().add(i * len + p) as *const _) };
                    f = _mm512_fmadd_pd(_mm512_cvtepu64_pd(yi), _mm512_set1_pd(c.src_recip[i]), f);
                }
                let u = _mm512_cvt_roundpd_epu64::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    f,
                );
                unsafe { _mm512_storeu_si512(overflow.as_mut_ptr().add(p) as *mut _, u) };
            }
        }
        if !c.lazy.is_empty() {
            // SAFETY: same features; `y` and `overflow` hold `len` words per source.
            unsafe { outputs_lazy(c, y, overflow, len, outs, centered) };
            return;
        }
        for (j, out) in outs.iter_mut().enumerate() {
            let q = _mm512_set1_epi64(c.dst_q[j] as i64);
            let weights = &c.hat_mod_dst[j * k..(j + 1) * k];
            for p in (0..len).step_by(8) {
                let mut acc = _mm512_setzero_si512();
                for (i, &(w, ws)) in weights.iter().enumerate() {
                    let yi = unsafe { _mm512_loadu_si512(y.as_ptr().add(i * len + p) as *const _) };
                    let t = mulmod(
                        yi,
                        _mm512_set1_epi64(w as i64),
                        _mm512_set1_epi64(ws as i64),
                        q,
                    );
                    acc = addmod(acc, t, q);
                }
                if centered {
                    let (w, ws) = c.neg_prod[j];
                    let u = unsafe { _mm512_loadu_si512(overflow.as_ptr().add(p) as *const _) };
                    acc = addmod(
                        acc,
                        mulmod(
                            u,
                            _mm512_set1_epi64(w as i64),
                            _mm512_set1_epi64(ws as i64),
                            q,
                        ),
                        q,
                    );
                }
                unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(p) as *mut _, acc) };
            }
        }
    }

    /// The output loop with lazy reduction: per output, the low and high
    /// 52-bit halves of every product are summed as they come (two IFMA
    /// instructions per term) and reduced once: hi 2^52 + lo mod q.
    ///
    /// # Safety
    /// AVX-512F, DQ and IFMA must be available; `len` a multiple of 8;
    /// `c.lazy` non-empty (its bound holds).
    #[target_feature(enable = "avx512f,avx512dq,avx512ifma")]
    unsafe fn outputs_lazy(
        c: &IfmaConsts,
        y: &[u64],
        overflow: &[u64],
        len: usize,
        outs: &mut [&mut [u64]],
        centered: bool,
    ) {
        let k = c.k;
        let mask = _mm512_set1_epi64(((1u64 << 52) - 1) as i64);
        for (j, out) in outs.iter_mut().enumerate() {
            let q = _mm512_set1_epi64(c.dst_q[j] as i64);
            let weights = &c.hat_mod_dst[j * k..(j + 1) * k];
            let [(r, rs), (one, ones)] = c.lazy[j];
            let (r, rs) = (_mm512_set1_epi64(r as i64), _mm512_set1_epi64(rs as i64));
            let (one, ones) = (
                _mm512_set1_epi64(one as i64),
                _mm512_set1_epi64(ones as i64),
            );
            for p in (0..len).step_by(8) {
                let mut lo = _mm512_setzero_si512();
                let mut hi = _mm512_setzero_si512();
                for (i, &(w, _)) in weights.iter().enumerate() {
                    // SAFETY: i * len + p + 8 <= k * len.
                    let yi = unsafe { _mm512_loadu_si512(y.as_ptr().add(i * len + p) as *const _) };
                    let w = _mm512_set1_epi64(w as i64);
                    lo = _mm512_madd52lo_epu64(lo, yi, w);
                    hi = _mm512_madd52hi_epu64(hi, yi, w);
                }
                if centered {
                    let (w, _) = c.neg_prod[j];
                    // SAFETY: p + 8 <= len = overflow.len().
                    let u = unsafe { _mm512_loadu_si512(overflow.as_ptr().add(p) as *const _) };
                    let w = _mm512_set1_epi64(w as i64);
                    lo = _mm512_madd52lo_epu64(lo, u, w);
                    hi = _mm512_madd52hi_epu64(hi, u, w);
                }
                // Carry the low sum's excess into the high one: both below 2^52.
                hi = _mm512_add_epi64(hi, _mm512_srli_epi64::<52>(lo));
                lo = _mm512_and_si512(lo, mask);
                let v = addmod(mulmod(hi, r, rs, q), mulmod(lo, one, ones, q), q);
                // SAFETY: p + 8 <= len = out.len().
                unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(p) as *mut _, v) };
            }
        }
    }
}

/// The AVX-512 kernel for primes of any size (up to 2^61): the scaled
/// residues y_i come from 64-bit Shoup products (high halves from 32-bit
/// multiplications), once per source; every output's sum `sum_i y_i w_ij` is
/// then accumulated exactly, in radix 2^52, with IFMA and no reduction per
/// term, and reduced once per output.
///
/// With y = a + 2^52 b and w = c + 2^52 d (a, c < 2^52; b, d < 2^10 for
/// primes below 2^62), `y w = a c + 2^52 (a d + b c) + 2^104 b d`: seven
/// 52-bit half products, each summed into one of three words of weight
/// 1, 2^52, 2^104 (b = 0 when every source prime is below 2^52, d = 0 for a
/// target below 2^52: four products, or two). The words stay below 2^60 for
/// up to 128 terms, and `T = W0 + 2^52 W1 + 2^104 W2` is reduced as
/// `W0 + W1 (2^52 mod q) + W2 (2^104 mod q)`. The old kernel reduced every
/// term with a 64-bit Shoup product (two 64-bit low multiplications, four
/// 32-bit ones): at `n16-boot`'s top level that was 44% of a key switch.
#[cfg(target_arch = "x86_64")]
mod wide {
    use super::super::kernels::wide::{available as kernels_available, mulmod};
    use super::{BasisConverter, Ring};
    use std::arch::x86_64::*;

    pub(super) fn available() -> bool {
        kernels_available() && is_x86_feature_detected!("avx512ifma")
    }

    const MASK52: u64 = (1 << 52) - 1;

    /// One target's final reduction of `W0 + 2^52 W1 + 2^104 W2`: its prime
    /// and (value, 64-bit Shoup companion) of 2^52, 2^104 and 1 mod q.
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Reduce {
        q: u64,
        r1: (u64, u64),
        r2: (u64, u64),
        one: (u64, u64),
    }

    /// Per target prime: the weights split at bit 52, and the reduction constants.
    #[derive(Clone, Debug)]
    pub(super) struct WideConsts {
        /// Per target j, k + 1 pairs (c, d) at [j (k + 1) ..]: those of (A/a_i)
        /// mod b_j for each source i, then that of -A mod b_j (the overflow's weight).
        split: Vec<(u64, u64)>,
        reduce: Vec<Reduce>,
        /// Whether some source prime is 2^52 or more (b != 0).
        big_src: bool,
    }

    impl WideConsts {
        pub(super) fn new(conv: &BasisConverter, moduli: &[crate::math::Modulus]) -> Self {
            let k = conv.src.len();
            let mut split = Vec::with_capacity((k + 1) * conv.dst.len());
            let mut reduce = Vec::with_capacity(conv.dst.len());
            for (j, &dst) in conv.dst.iter().enumerate() {
                let m = &moduli[dst];
                let parts = |w: u64| (w & MASK52, w >> 52);
                split.extend(
                    conv.hat_mod_dst[j * k..(j + 1) * k]
                        .iter()
                        .map(|&w| parts(w)),
                );
                split.push(parts(conv.neg_prod[j]));
                let r1 = m.reduce_u128(1u128 << 52);
                let r2 = m.mul(r1, r1);
                let one = m.reduce(1);
                reduce.push(Reduce {
                    q: m.value(),
                    r1: (r1, m.shoup(r1)),
                    r2: (r2, m.shoup(r2)),
                    one: (one, m.shoup(one)),
                });
            }
            let big_src = conv.src.iter().any(|&i| moduli[i].value() >> 52 != 0);
            Self {
                split,
                reduce,
                big_src,
            }
        }
    }

    /// # Safety
    /// AVX-512F, DQ and IFMA must be available; the block length a multiple of 8.
    #[target_feature(enable = "avx512f,avx512dq,avx512ifma")]
    pub(super) unsafe fn convert_block(
        conv: &BasisConverter,
        wc: &WideConsts,
        ring: &Ring,
        inputs: &[&[u64]],
        outs: &mut [&mut [u64]],
        centered: bool,
    ) {
        thread_local! {
            static SCRATCH: std::cell::Cell<Vec<u64>> = const { std::cell::Cell::new(Vec::new()) };
        }
        let moduli = ring.moduli();
        let k = conv.src.len();
        let len = inputs[0].len();
        let mut buf = SCRATCH.take();
        // Low parts of y (k blocks, the overflow u appended as term k), high parts (k blocks).
        if buf.len() < (2 * k + 1) * len {
            buf.resize((2 * k + 1) * len, 0);
        }
        let (lo, hi) = buf.split_at_mut((k + 1) * len);
        let mask = _mm512_set1_epi64(MASK52 as i64);
        for (i, &src) in conv.src.iter().enumerate() {
            let q = _mm512_set1_epi64(moduli[src].value() as i64);
            let (w, ws) = conv.hat_inv[i];
            let (w, ws) = (_mm512_set1_epi64(w as i64), _mm512_set1_epi64(ws as i64));
            for p in (0..len).step_by(8) {
                // SAFETY: p + 8 <= len for every slice here.
                unsafe {
                    let x = _mm512_loadu_si512(inputs[i].as_ptr().add(p) as *const _);
                    let y = mulmod(x, w, ws, q);
                    _mm512_storeu_si512(
                        lo.as_mut_ptr().add(i * len + p) as *mut _,
                        _mm512_and_si512(y, mask),
                    );
                    _mm512_storeu_si512(
                        hi.as_mut_ptr().add(i * len + p) as *mut _,
                        _mm512_srli_epi64::<52>(y),
                    );
                }
            }
        }
        if centered {
            for p in (0..len).step_by(8) {
                let mut f = _mm512_setzero_pd();
                for i in 0..k {
                    // SAFETY: as above; y = lo + 2^52 hi, exact in the sum below
                    // up to the rounding the estimate tolerates anyway.
                    let (l, h) = unsafe {
                        (
                            _mm512_loadu_si512(lo.as_ptr().add(i * len + p) as *const _),
                            _mm512_loadu_si512(hi.as_ptr().add(i * len + p) as *const _),
                        )
                    };
                    let y = _mm512_or_si512(l, _mm512_slli_epi64::<52>(h));
                    f = _mm512_fmadd_pd(
                        _mm512_cvtepu64_pd(y),
                        _mm512_set1_pd(conv.src_recip[i]),
                        f,
                    );
                }
                let u = _mm512_cvt_roundpd_epu64::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    f,
                );
                // SAFETY: term k of `lo` holds len words.
                unsafe { _mm512_storeu_si512(lo.as_mut_ptr().add(k * len + p) as *mut _, u) };
            }
        }
        let terms = if centered { k + 1 } else { k };
        for (j, out) in outs.iter_mut().enumerate() {
            let split = &wc.split[j * (k + 1)..j * (k + 1) + terms];
            let big_dst = wc.reduce[j].q >> 52 != 0;
            // SAFETY: the caller's guarantees; `lo` holds `terms` blocks and
            // `hi` k blocks of `len` words.
            unsafe {
                match (wc.big_src, big_dst) {
                    (true, true) => output::<true, true>(lo, hi, k, len, split, &wc.reduce[j], out),
                    (true, false) => {
                        output::<true, false>(lo, hi, k, len, split, &wc.reduce[j], out)
                    }
                    (false, true) => {
                        output::<false, true>(lo, hi, k, len, split, &wc.reduce[j], out)
                    }
                    (false, false) => {
                        output::<false, false>(lo, hi, k, len, split, &wc.reduce[j], out)
                    }
                }
            }
        }
        SCRATCH.set(buf);
    }

    /// One target limb: `sum_t y_t w_t mod q` over the terms of `split`
    /// (term k, if present, is the overflow u < 2^52 with b = 0).
    /// `BIG_SRC`: the high parts b may be nonzero; `BIG_DST`: d may be.
    ///
    /// # Safety
    /// As [`convert_block`]; `lo` holds `split.len()` blocks of `len` words,
    /// `hi` at least `k`, `out` `len` words.
    #[target_feature(enable = "avx512f,avx512dq,avx512ifma")]
    unsafe fn output<const BIG_SRC: bool, const BIG_DST: bool>(
        lo: &[u64],
        hi: &[u64],
        k: usize,
        len: usize,
        split: &[(u64, u64)],
        reduce: &Reduce,
        out: &mut [u64],
    ) {
        let mask = _mm512_set1_epi64(MASK52 as i64);
        let bc = |v: u64| _mm512_set1_epi64(v as i64);
        let q = bc(reduce.q);
        let (r1, r1s, r2, r2s, one, ones) = (
            bc(reduce.r1.0),
            bc(reduce.r1.1),
            bc(reduce.r2.0),
            bc(reduce.r2.1),
            bc(reduce.one.0),
            bc(reduce.one.1),
        );
        for p in (0..len).step_by(8) {
            let z = _mm512_setzero_si512();
            // Separate accumulators per product: independent IFMA chains.
            let (mut w0, mut w1a, mut w1b, mut w1c, mut w2a, mut w2b, mut w2c) =
                (z, z, z, z, z, z, z);
            for (t, &(c, d)) in split.iter().enumerate() {
                let (c, d) = (bc(c), bc(d));
                // SAFETY: t * len + p + 8 <= split.len() * len <= lo.len().
                let a = unsafe { _mm512_loadu_si512(lo.as_ptr().add(t * len + p) as *const _) };
                w0 = _mm512_madd52lo_epu64(w0, a, c);
                w1a = _mm512_madd52hi_epu64(w1a, a, c);
                if BIG_DST {
                    w1b = _mm512_madd52lo_epu64(w1b, a, d);
                    w2a = _mm512_madd52hi_epu64(w2a, a, d);
                }
                if BIG_SRC && t < k {
                    // SAFETY: t < k blocks of `hi`.
                    let b = unsafe { _mm512_loadu_si512(hi.as_ptr().add(t * len + p) as *const _) };
                    w1c = _mm512_madd52lo_epu64(w1c, b, c);
                    w2b = _mm512_madd52hi_epu64(w2b, b, c);
                    if BIG_DST {
                        w2c = _mm512_madd52lo_epu64(w2c, b, d);
                    }
                }
            }
            // Normalize: W0 < 2^52, W1 < 2^52, W2 small; T unchanged.
            let mut w1 = _mm512_add_epi64(_mm512_add_epi64(w1a, w1b), w1c);
            w1 = _mm512_add_epi64(w1, _mm512_srli_epi64::<52>(w0));
            let w0 = _mm512_and_si512(w0, mask);
            let w2 = _mm512_add_epi64(
                _mm512_add_epi64(_mm512_add_epi64(w2a, w2b), w2c),
                _mm512_srli_epi64::<52>(w1),
            );
            let w1 = _mm512_and_si512(w1, mask);
            let v0 = if BIG_DST {
                w0 // W0 < 2^52 <= q.
            } else {
                mulmod(w0, one, ones, q)
            };
            let s = _mm512_add_epi64(v0, mulmod(w1, r1, r1s, q));
            let s = _mm512_min_epu64(s, _mm512_sub_epi64(s, q));
            let s = _mm512_add_epi64(s, mulmod(w2, r2, r2s, q));
            let s = _mm512_min_epu64(s, _mm512_sub_epi64(s, q));
            // SAFETY: p + 8 <= len = out.len().
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(p) as *mut _, s) };
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod wide {
    use super::{BasisConverter, Ring};
    #[derive(Clone, Debug)]
    pub(super) struct WideConsts;
    impl WideConsts {
        pub(super) fn new(_: &BasisConverter, _: &[crate::math::Modulus]) -> Self {
            Self
        }
    }
    pub(super) fn available() -> bool {
        false
    }
    pub(super) unsafe fn convert_block(
        _: &BasisConverter,
        _: &WideConsts,
        _: &Ring,
        _: &[&[u64]],
        _: &mut [&mut [u64]],
        _: bool,
    ) {
        unreachable!("AVX-512 kernel requested on a CPU without it")
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod ifma {
    use super::IfmaConsts;
    pub(super) fn available() -> bool {
        false
    }
    pub(super) unsafe fn convert_block(
        _: &IfmaConsts,
        _: &[&[u64]],
        _: &mut [&mut [u64]],
        _: bool,
    ) {
        unreachable!("IFMA kernel requested on a CPU without it")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::primes::ntt_primes;

    #[test]
    fn centered_conversion_is_exact() {
        let primes = ntt_primes(4, &[30, 30, 30, 31, 31], &[]).unwrap();
        let ring = Ring::new(4, &primes[..3], &primes[3..]);
        let n = ring.n();
        let big_a: i128 = primes[..3].iter().map(|&q| q as i128).product();
        let mut s = 3u64;
        let xs: Vec<i128> = (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                (((s as u128) << 40 ^ s as u128) % big_a as u128) as i128 - big_a / 2
            })
            .collect();
        let input: Vec<Vec<u64>> = primes[..3]
            .iter()
            .map(|&q| xs.iter().map(|&x| x.rem_euclid(q as i128) as u64).collect())
            .collect();
        let mut out = vec![vec![0u64; n]; 2];
        {
            let inp: Vec<&[u64]> = input.iter().map(|v| v.as_slice()).collect();
            let mut o: Vec<&mut [u64]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
            BasisConverter::new(&ring, &[0, 1, 2], &[3, 4]).convert_centered(&ring, &inp, &mut o);
        }
        for (j, &b) in primes[3..].iter().enumerate() {
            for c in 0..n {
                assert_eq!(
                    out[j][c],
                    xs[c].rem_euclid(b as i128) as u64,
                    "coefficient {c}"
                );
            }
        }
    }

    /// The vector kernel against the scalar reference on random inputs, both variants.
    #[test]
    fn ifma_kernel_matches_scalar_reference() {
        if !ifma::available() {
            eprintln!("no AVX-512 IFMA on this CPU: the vector kernel is not used here");
            return;
        }
        let primes = ntt_primes(11, &[50, 40, 40, 50, 40, 50, 50], &[]).unwrap();
        let ring = Ring::new(11, &primes[..5], &primes[5..]);
        for (src, dst) in [
            (vec![0usize, 1, 2], vec![3usize, 4, 5, 6]),
            (vec![5, 6], vec![0, 1, 2, 3, 4]),
            (vec![0, 1, 2, 3, 4], vec![5, 6]),
        ] {
            let conv = BasisConverter::new(&ring, &src, &dst);
            // Primes of at most 50 bits: the lazy output loop is the one compared.
            assert!(conv.ifma.as_ref().is_some_and(|c| !c.lazy.is_empty()));
            assert_vector_matches_scalar(&ring, &conv, &src, dst.len(), 99, 7);
        }
    }

    /// The vector kernel (`convert_with(.., true)`) equals the scalar
    /// reference on random inputs (the generator's state shifted right by
    /// `shift`, reduced), plain and centered.
    fn assert_vector_matches_scalar(
        ring: &Ring,
        conv: &BasisConverter,
        src: &[usize],
        dst_len: usize,
        seed: u64,
        shift: u32,
    ) {
        let n = ring.n();
        let mut s = seed;
        let input: Vec<Vec<u64>> = src
            .iter()
            .map(|&i| {
                let q = ring.moduli()[i].value();
                (0..n)
                    .map(|_| {
                        s = s
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (s >> shift) % q
                    })
                    .collect()
            })
            .collect();
        for centered in [false, true] {
            let mut outs = [vec![vec![0u64; n]; dst_len], vec![vec![0u64; n]; dst_len]];
            for (vector, out) in [false, true].into_iter().zip(outs.iter_mut()) {
                let inp: Vec<&[u64]> = input.iter().map(|v| v.as_slice()).collect();
                let mut o: Vec<&mut [u64]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
                conv.convert_with(ring, &inp, &mut o, centered, vector);
            }
            assert_eq!(outs[0], outs[1], "centered = {centered}");
        }
    }

    /// The AVX-512 kernel for large primes against the scalar reference.
    #[test]
    fn wide_kernel_matches_scalar_reference() {
        if !wide::available() {
            eprintln!("no AVX-512 on this CPU: the wide kernel is not used here");
            return;
        }
        let primes = ntt_primes(11, &[60, 56, 60, 48, 60, 40, 56], &[]).unwrap();
        let ring = Ring::new(11, &primes[..4], &primes[4..]);
        // Big and small sources and targets in every combination (the kernel
        // skips the products that vanish when a side is below 2^52).
        for (src, dst) in [
            (vec![0usize, 1, 2], vec![3usize, 4, 5, 6]),
            (vec![4, 5, 6, 3], vec![0, 1, 2]),
            (vec![3, 5], vec![0, 6, 4]),
            (vec![0, 2, 4], vec![1, 6]),
            ((0..7).filter(|&i| i != 5).collect(), vec![5]),
        ] {
            let conv = BasisConverter::new(&ring, &src, &dst);
            assert!(conv.ifma.is_none(), "primes above 2^51: no IFMA kernel");
            assert_vector_matches_scalar(&ring, &conv, &src, dst.len(), 5, 0);
            // The largest residues everywhere: the sums' bounds at their worst.
            let n = ring.n();
            let input: Vec<Vec<u64>> = src
                .iter()
                .map(|&i| vec![ring.moduli()[i].value() - 1; n])
                .collect();
            let inp: Vec<&[u64]> = input.iter().map(|v| v.as_slice()).collect();
            for centered in [false, true] {
                let mut outs = [
                    vec![vec![0u64; n]; dst.len()],
                    vec![vec![0u64; n]; dst.len()],
                ];
                for (vector, out) in [false, true].into_iter().zip(outs.iter_mut()) {
                    let mut o: Vec<&mut [u64]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
                    conv.convert_with(&ring, &inp, &mut o, centered, vector);
                }
                assert_eq!(outs[0], outs[1], "largest residues, centered = {centered}");
            }
        }
    }

    /// Exact CRT with u128 arithmetic (bases small enough to fit).
    #[test]
    fn matches_exact_crt_up_to_multiple_of_source_product() {
        let primes = ntt_primes(4, &[30, 30, 30, 31, 31], &[]).unwrap();
        let ring = Ring::new(4, &primes[..3], &primes[3..]);
        let n = ring.n();
        let big_a: u128 = primes[..3].iter().map(|&q| q as u128).product();
        let mut s = 7u64;
        let xs: Vec<u128> = (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((s as u128) << 40 ^ s as u128) % big_a
            })
            .collect();
        let input: Vec<Vec<u64>> = primes[..3]
            .iter()
            .map(|&q| xs.iter().map(|&x| (x % q as u128) as u64).collect())
            .collect();
        let mut out = vec![vec![0u64; n]; 2];
        let conv = BasisConverter::new(&ring, &[0, 1, 2], &[3, 4]);
        {
            let inp: Vec<&[u64]> = input.iter().map(|v| v.as_slice()).collect();
            let mut o: Vec<&mut [u64]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
            conv.convert(&ring, &inp, &mut o);
        }
        for (j, &b) in primes[3..].iter().enumerate() {
            for c in 0..n {
                // The result is x + u A for some 0 <= u < 3.
                let ok = (0..3u128).any(|u| ((xs[c] + u * big_a) % b as u128) as u64 == out[j][c]);
                assert!(ok, "coefficient {c} target {j}");
            }
        }
    }
}
