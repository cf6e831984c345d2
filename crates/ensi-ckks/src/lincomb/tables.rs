//! Signed sums through shared partial sums (the "method of four Russians"
//! for ternary weights).
//!
//! With weights in {-1, 0, 1}, the inputs taken g at a time have only 3^g
//! signed combinations. Each is built once per block of coefficients (3^g - 1
//! additions for g inputs), and every output then takes one table entry per
//! group instead of up to g additions: with 1536 outputs and g = 5, a fifth
//! of the additions. A weight matrix of real numbers has no such sharing: this
//! is what the ternary structure buys beyond replacing multiplications by
//! additions.
//!
//! The outputs' sums are also lazy where the modulus allows it: table entries
//! are reduced (below q), an accumulator takes up to 2^52 / q - 1 of them as
//! plain 64-bit additions and is brought back below q by one 52-bit Barrett
//! reduction (IFMA) when full and at the end. Other moduli, or CPUs without
//! IFMA, reduce after every addition.

use crate::ciphertext::Ciphertext;
use crate::evaluator::Evaluator;
use crate::ring::RnsPoly;
use rayon::prelude::*;
use std::cell::RefCell;

/// Coefficients per table entry and per accumulator (four AVX-512 registers).
pub(super) const LANES: usize = 32;
/// Coefficients per parallel task (each task walks its own sub-blocks).
const TASK: usize = 512;
/// The largest group: indices fit a byte (3^5 = 243).
const MAX_GROUP: usize = 5;
/// Bytes of tables live at once (a part of L2): the more groups per pass, the
/// fewer times each output block is loaded and stored (256 KiB measured
/// fastest of 32 KiB to 1 MiB, within the noise of 256 KiB to 1 MiB).
const TABLE_BYTES: usize = 1 << 18;

/// The group size that minimizes table building plus table reads per input:
/// (3^g - 1 + rows) / g.
pub(super) fn group_size(rows: usize, cols: usize) -> usize {
    (1..=MAX_GROUP.min(cols.max(1)))
        .min_by(|&a, &b| {
            let cost = |g: usize| (3usize.pow(g as u32) - 1 + rows) as f64 / g as f64;
            cost(a).total_cmp(&cost(b))
        })
        .unwrap_or(1)
}

/// Per row and group, the base-3 index of the group's weights (digit 1 for
/// +1, 2 for -1, 0 for 0; input j of the group is digit j).
pub(super) fn table_indices(weights: &[i8], rows: usize, cols: usize, g: usize) -> Vec<u8> {
    let groups = cols.div_ceil(g);
    let mut idx = vec![0u8; rows * groups];
    for r in 0..rows {
        for k in 0..groups {
            let mut v = 0usize;
            for j in (k * g..(k * g + g).min(cols)).rev() {
                let digit = match weights[r * cols + j] {
                    1 => 1,
                    -1 => 2,
                    _ => 0,
                };
                v = 3 * v + digit;
            }
            idx[r * groups + k] = v as u8;
        }
    }
    idx
}

/// How one limb's sums are accumulated.
#[derive(Clone, Copy)]
pub(super) struct LimbArith {
    q: u64,
    /// floor(2^52 / q), for the IFMA Barrett reduction.
    ratio52: u64,
    /// Entries an accumulator takes between reductions; 1 = reduce every addition.
    budget: usize,
}

impl LimbArith {
    pub(super) fn new(q: u64, lazy_ok: bool) -> Self {
        let lazy = lazy_ok && q < (1 << 50);
        LimbArith {
            q,
            ratio52: ((1u128 << 52) / q as u128) as u64,
            budget: if lazy {
                ((1u64 << 52) / q - 1) as usize
            } else {
                1
            },
        }
    }

    fn lazy(&self) -> bool {
        self.budget > 1
    }
}

/// Whether this CPU runs the lazy (IFMA) accumulators.
pub(super) fn lazy_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512ifma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Raw output pointers: tasks write disjoint coefficient ranges of them.
struct Outputs(Vec<*mut u64>);
// SAFETY: every task writes a range of coefficients no other task touches
// (see `signed_sums_tables`), and the buffers outlive the parallel loop.
unsafe impl Sync for Outputs {}

impl Outputs {
    /// Part `part` (0: c0, 1: c1) of output `row`.
    fn base(&self, row: usize, part: usize) -> *mut u64 {
        self.0[2 * row + part]
    }
}

impl Evaluator {
    /// The table kernel behind [`Evaluator::signed_sums`] (inputs already
    /// checked: same level, slots, scale and size; weights in {-1, 0, 1}).
    pub(super) fn signed_sums_tables(
        &self,
        inputs: &[Ciphertext],
        weights: &[i8],
        rows: usize,
    ) -> Vec<Ciphertext> {
        let ring = self.params().ring();
        let n = ring.n();
        let cols = inputs.len();
        let q_limbs = inputs[0].level() + 1;
        let g = group_size(rows, cols);
        let groups = cols.div_ceil(g);
        let idx = table_indices(weights, rows, cols, g);
        let sums = Sums {
            idx: &idx,
            groups,
            g,
        };
        let lazy_ok = lazy_available();
        let arith: Vec<LimbArith> = ring.q()[..q_limbs]
            .iter()
            .map(|m| LimbArith::new(m.value(), lazy_ok))
            .collect();
        let mut outs: Vec<(RnsPoly, RnsPoly)> = (0..rows)
            .map(|_| {
                (
                    ring.scratch(q_limbs, 0, true),
                    ring.scratch(q_limbs, 0, true),
                )
            })
            .collect();
        let ptrs = Outputs(
            outs.iter_mut()
                .flat_map(|(c0, c1)| [c0.data.as_mut_ptr(), c1.data.as_mut_ptr()])
                .collect(),
        );
        let ptrs = &ptrs;
        let tasks_per_limb = n.div_ceil(TASK);
        (0..2 * q_limbs * tasks_per_limb)
            .into_par_iter()
            .for_each(|task| {
                let part = task / (q_limbs * tasks_per_limb);
                let rest = task % (q_limbs * tasks_per_limb);
                let (l, t) = (rest / tasks_per_limb, rest % tasks_per_limb);
                let limb_in: Vec<&[u64]> = inputs
                    .iter()
                    .map(|ct| {
                        let p = if part == 0 { &ct.c0 } else { &ct.c1 };
                        &p.as_words()[l * n..(l + 1) * n]
                    })
                    .collect();
                let (begin, end) = (t * TASK, ((t + 1) * TASK).min(n));
                let mut blocks: Vec<&mut [u64]> = (0..rows)
                    .map(|r| {
                        // SAFETY: this task alone writes coefficients [begin, end) of limb
                        // l of part `part` of every output; each buffer holds q_limbs n words.
                        unsafe {
                            std::slice::from_raw_parts_mut(
                                ptrs.base(r, part).add(l * n + begin),
                                end - begin,
                            )
                        }
                    })
                    .collect();
                for start in (begin..end).step_by(LANES) {
                    sum_block(
                        &arith[l],
                        &limb_in,
                        start,
                        &sums,
                        &mut blocks,
                        start - begin,
                    );
                }
            });
        super::ciphertexts(outs, inputs[0].scale, inputs[0].log_slots)
    }
}

thread_local! {
    /// Each worker's tables, reused across tasks (no allocation per block).
    static TABLES: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// The weights as table indices: `idx[r * groups + k]` for row r, group k of g inputs.
pub(super) struct Sums<'a> {
    pub(super) idx: &'a [u8],
    pub(super) groups: usize,
    pub(super) g: usize,
}

/// One block of LANES coefficients of one limb: `outs[r][off..off + LANES]`
/// from the inputs' words at `start`.
pub(super) fn sum_block(
    arith: &LimbArith,
    limb_in: &[&[u64]],
    start: usize,
    sums: &Sums,
    outs: &mut [&mut [u64]],
    off: usize,
) {
    let (groups, g) = (sums.groups, sums.g);
    let entries = 3usize.pow(g as u32);
    let fit = (TABLE_BYTES / (entries * LANES * 8)).max(1);
    let chunk_len = fit.min(arith.budget).min(groups).max(1);
    TABLES.with(|cell| {
        let mut tables = cell.borrow_mut();
        tables.resize(chunk_len * entries * LANES, 0);
        let mut since_reduce = 0;
        for c0 in (0..groups).step_by(chunk_len) {
            let chunk = chunk_len.min(groups - c0);
            for k in 0..chunk {
                let first = (c0 + k) * g;
                let last = (first + g).min(limb_in.len());
                // The next block's words of these inputs, requested now: the inputs are
                // many separate streams, more than the hardware prefetcher follows.
                if start + 2 * LANES <= limb_in[first].len() {
                    for x in &limb_in[first..last] {
                        prefetch(&x[start + LANES..start + 2 * LANES]);
                    }
                }
                let inputs = (first..last).map(|c| &limb_in[c][start..start + LANES]);
                build_table(
                    arith.q,
                    inputs,
                    &mut tables[k * entries * LANES..(k + 1) * entries * LANES],
                );
            }
            let reduce_first = arith.lazy() && since_reduce + chunk > arith.budget;
            if reduce_first {
                since_reduce = 0;
            }
            since_reduce += chunk;
            let last_chunk = c0 + chunk == groups;
            for (r, out) in outs.iter_mut().enumerate() {
                let row_idx = &sums.idx[r * groups + c0..r * groups + c0 + chunk];
                accumulate(
                    arith,
                    &tables,
                    entries,
                    row_idx,
                    &mut out[off..off + LANES],
                    c0 == 0,
                    reduce_first,
                    last_chunk,
                );
            }
        }
    });
}

/// Asks for `words` to be brought into the cache (a hint; no effect elsewhere).
#[inline(always)]
fn prefetch(words: &[u64]) {
    #[cfg(target_arch = "x86_64")]
    for line in words.chunks(8) {
        // SAFETY: a prefetch never faults; the address is inside `words`.
        unsafe {
            std::arch::x86_64::_mm_prefetch(
                line.as_ptr() as *const i8,
                std::arch::x86_64::_MM_HINT_T1,
            )
        };
    }
}

/// table[i] for i = sum_j d_j 3^j: sum_j s(d_j) x_j with s(0) = 0, s(1) = 1,
/// s(2) = -1, every entry reduced below q. Digits past the given inputs stay
/// unused (their entries are never read).
fn build_table<'a>(q: u64, inputs: impl Iterator<Item = &'a [u64]>, table: &mut [u64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected.
        return unsafe { build_table_avx512(q, inputs, table) };
    }
    build_table_plain(q, inputs, table)
}

/// [`build_table_plain`] with AVX-512: each input's words and their
/// negation held in registers for all the entries it extends.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn build_table_avx512<'a>(
    q: u64,
    inputs: impl Iterator<Item = &'a [u64]>,
    table: &mut [u64],
) {
    use std::arch::x86_64::*;
    const V: usize = LANES / 8;
    let qv = _mm512_set1_epi64(q as i64);
    let reduce = |s: __m512i| _mm512_min_epu64(s, _mm512_sub_epi64(s, qv));
    table[..LANES].fill(0);
    let mut filled = 1;
    for x in inputs {
        assert!(x.len() == LANES && table.len() >= 3 * filled * LANES);
        let p = table.as_mut_ptr();
        // SAFETY: x holds LANES words; every table access below is within the
        // first 3 filled entries, checked above.
        unsafe {
            let xv: [__m512i; V] =
                std::array::from_fn(|v| _mm512_loadu_si512(x.as_ptr().add(8 * v) as *const _));
            let nv: [__m512i; V] = std::array::from_fn(|v| _mm512_sub_epi64(qv, xv[v]));
            for i in 0..filled {
                for v in 0..V {
                    let b = _mm512_loadu_si512(p.add(i * LANES + 8 * v) as *const _);
                    let plus = reduce(_mm512_add_epi64(b, xv[v]));
                    let minus = reduce(_mm512_add_epi64(b, nv[v]));
                    _mm512_storeu_si512(p.add((filled + i) * LANES + 8 * v) as *mut _, plus);
                    _mm512_storeu_si512(p.add((2 * filled + i) * LANES + 8 * v) as *mut _, minus);
                }
            }
        }
        filled *= 3;
    }
}

#[inline(always)]
fn build_table_plain<'a>(q: u64, inputs: impl Iterator<Item = &'a [u64]>, table: &mut [u64]) {
    table[..LANES].fill(0);
    let mut filled = 1;
    for x in inputs {
        for i in 0..filled {
            let (src, dst) = table.split_at_mut(filled * LANES);
            let base = &src[i * LANES..(i + 1) * LANES];
            let plus = &mut dst[i * LANES..(i + 1) * LANES];
            add_into(plus, base, x, q);
            let minus = &mut dst[(filled + i) * LANES..(filled + i + 1) * LANES];
            sub_into(minus, base, x, q);
        }
        filled *= 3;
    }
}

#[inline(always)]
fn add_into(out: &mut [u64], a: &[u64], b: &[u64], q: u64) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        let s = a + b;
        *o = s.min(s.wrapping_sub(q));
    }
}

#[inline(always)]
fn sub_into(out: &mut [u64], a: &[u64], b: &[u64], q: u64) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        let s = a + (q - b);
        *o = s.min(s.wrapping_sub(q));
    }
}

/// out = (out, or 0 if `fresh`) + the row's table entries of this chunk;
/// lazily when the limb allows it, reduced first if `reduce_first` and at the
/// end if `last`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn accumulate(
    arith: &LimbArith,
    tables: &[u64],
    entries: usize,
    row_idx: &[u8],
    out: &mut [u64],
    fresh: bool,
    reduce_first: bool,
    last: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if arith.lazy() {
        // SAFETY: lazy limbs exist only where AVX-512F and IFMA were detected.
        return unsafe {
            accumulate_lazy_ifma(
                arith,
                tables,
                entries,
                row_idx,
                out,
                fresh,
                reduce_first,
                last,
            )
        };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected.
        return unsafe { accumulate_reduced_avx512(arith.q, tables, entries, row_idx, out, fresh) };
    }
    accumulate_reduced(arith.q, tables, entries, row_idx, out, fresh)
}

/// The same loop compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn accumulate_reduced_avx512(
    q: u64,
    tables: &[u64],
    entries: usize,
    row_idx: &[u8],
    out: &mut [u64],
    fresh: bool,
) {
    accumulate_reduced(q, tables, entries, row_idx, out, fresh)
}

/// Accumulation reduced after every addition (moduli too wide for the lazy sums).
#[inline(always)]
fn accumulate_reduced(
    q: u64,
    tables: &[u64],
    entries: usize,
    row_idx: &[u8],
    out: &mut [u64],
    fresh: bool,
) {
    let mut acc = [0u64; LANES];
    if !fresh {
        acc.copy_from_slice(out);
    }
    for (k, &i) in row_idx.iter().enumerate() {
        let e = (k * entries + i as usize) * LANES;
        for (a, &t) in acc.iter_mut().zip(&tables[e..e + LANES]) {
            let s = *a + t;
            *a = s.min(s.wrapping_sub(q));
        }
    }
    out.copy_from_slice(&acc);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512ifma")]
#[allow(clippy::too_many_arguments)]
unsafe fn accumulate_lazy_ifma(
    arith: &LimbArith,
    tables: &[u64],
    entries: usize,
    row_idx: &[u8],
    out: &mut [u64],
    fresh: bool,
    reduce_first: bool,
    last: bool,
) {
    use std::arch::x86_64::*;
    const V: usize = LANES / 8;
    let qv = _mm512_set1_epi64(arith.q as i64);
    let ratio = _mm512_set1_epi64(arith.ratio52 as i64);
    let mask = _mm512_set1_epi64(((1u64 << 52) - 1) as i64);
    let zero = _mm512_setzero_si512();
    // x < 2^52 -> x mod q: the quotient estimate is at most one short.
    let reduce = |x: __m512i| {
        let qhat = _mm512_madd52hi_epu64(zero, x, ratio);
        let r = _mm512_and_si512(
            _mm512_sub_epi64(x, _mm512_madd52lo_epu64(zero, qhat, qv)),
            mask,
        );
        _mm512_min_epu64(r, _mm512_sub_epi64(r, qv))
    };
    let mut acc = [zero; V];
    if !fresh {
        for (v, a) in acc.iter_mut().enumerate() {
            // SAFETY: out holds LANES words.
            *a = unsafe { _mm512_loadu_si512(out.as_ptr().add(8 * v) as *const _) };
            if reduce_first {
                *a = reduce(*a);
            }
        }
    }
    for (k, &i) in row_idx.iter().enumerate() {
        let e = (k * entries + i as usize) * LANES;
        let t = &tables[e..e + LANES];
        for (v, a) in acc.iter_mut().enumerate() {
            // SAFETY: t holds LANES words.
            let x = unsafe { _mm512_loadu_si512(t.as_ptr().add(8 * v) as *const _) };
            *a = _mm512_add_epi64(*a, x);
        }
    }
    for (v, a) in acc.iter().enumerate() {
        let a = if last { reduce(*a) } else { *a };
        // SAFETY: out holds LANES words.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(8 * v) as *mut _, a) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::primes::ntt_primes;

    /// The table kernel against direct signed sums, word for word, for
    /// moduli where it is lazy (40 and 48 bits, with reductions between
    /// chunks for the latter) and where it is not (56 and 60 bits), group
    /// sizes 1 to 5, and a last group shorter than the others.
    #[test]
    fn tables_match_direct_signed_sums() {
        let primes = ntt_primes(12, &[40, 48, 56, 60], &[]).unwrap();
        let mut s = 7u64;
        let mut rand = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s >> 11
        };
        for &(rows, cols) in &[(2, 3), (7, 11), (40, 23), (300, 37), (1536, 13)] {
            let weights: Vec<i8> = (0..rows * cols).map(|_| (rand() % 3) as i8 - 1).collect();
            let g = group_size(rows, cols);
            let groups = cols.div_ceil(g);
            let idx = table_indices(&weights, rows, cols, g);
            for &q in &primes {
                let inputs: Vec<Vec<u64>> = (0..cols)
                    .map(|_| (0..2 * LANES).map(|_| rand() % q).collect())
                    .collect();
                let limb_in: Vec<&[u64]> = inputs.iter().map(|v| v.as_slice()).collect();
                for lazy in [false, lazy_available()] {
                    let arith = LimbArith::new(q, lazy);
                    let mut out = vec![vec![0u64; 2 * LANES]; rows];
                    let mut blocks: Vec<&mut [u64]> =
                        out.iter_mut().map(|o| o.as_mut_slice()).collect();
                    let sums = Sums {
                        idx: &idx,
                        groups,
                        g,
                    };
                    for start in [0, LANES] {
                        sum_block(&arith, &limb_in, start, &sums, &mut blocks, start);
                    }
                    for r in 0..rows {
                        for i in 0..2 * LANES {
                            let mut want = 0u64;
                            for c in 0..cols {
                                let x = inputs[c][i];
                                want = match weights[r * cols + c] {
                                    1 => (want + x) % q,
                                    -1 => (want + q - x) % q,
                                    _ => want,
                                };
                            }
                            assert_eq!(
                                out[r][i], want,
                                "q {q} (lazy {lazy}), {rows}x{cols}, g {g}, row {r}, word {i}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The AVX-512 table builder against the plain one, for every group size.
    #[test]
    fn vector_table_builder_matches_the_plain_one() {
        let q = ntt_primes(12, &[60], &[]).unwrap()[0];
        let inputs: Vec<Vec<u64>> = (0..MAX_GROUP as u64)
            .map(|c| {
                (0..LANES as u64)
                    .map(|i| (c * 7919 + i * 104729) % q)
                    .collect()
            })
            .collect();
        for g in 1..=MAX_GROUP {
            let len = 3usize.pow(g as u32) * LANES;
            let mut plain = vec![0u64; len];
            build_table_plain(q, inputs[..g].iter().map(|v| v.as_slice()), &mut plain);
            let mut fast = vec![0u64; len];
            build_table(q, inputs[..g].iter().map(|v| v.as_slice()), &mut fast);
            assert_eq!(fast, plain, "group of {g}");
            // Entry 3^j + ... : spot-check one entry against its definition.
            let want: Vec<u64> = (0..LANES)
                .map(|i| (inputs[0][i] + q - inputs[g - 1][i] * (g > 1) as u64) % q)
                .collect();
            let at = if g > 1 {
                1 + 2 * 3usize.pow(g as u32 - 1)
            } else {
                1
            };
            assert_eq!(
                &plain[at * LANES..(at + 1) * LANES],
                &want[..],
                "entry {at}"
            );
        }
    }

    #[test]
    fn group_size_grows_with_the_outputs() {
        assert_eq!(group_size(1536, 1536), 5);
        assert_eq!(group_size(64, 64), 3);
        assert_eq!(group_size(2, 5), 1);
        assert_eq!(group_size(100, 1), 1);
        assert_eq!(group_size(1536, 2), 2);
    }
}
