//! A process-wide pool of large word buffers.
//!
//! Polynomials at N = 2^16 are megabytes each, and a key switch creates and
//! drops dozens of them. Fresh allocations of that size come straight from
//! the kernel, and on the machines this project runs on the page faults and
//! zeroing cost as much as the arithmetic. Dropped polynomial buffers are
//! therefore kept here (up to [`MAX_BYTES`]) and handed out again with their
//! stale contents: callers that overwrite every word skip zeroing entirely.

use std::sync::Mutex;

/// Buffers smaller than this many words are not pooled.
const MIN_WORDS: usize = 1 << 12;
/// Upper bound on the memory the pool keeps.
pub const MAX_BYTES: usize = 1 << 30;

struct Pool {
    free: Vec<Vec<u64>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: 0,
});

/// A buffer of `len` words with unspecified (but initialized) contents.
pub fn take(len: usize) -> Vec<u64> {
    if len >= MIN_WORDS {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest buffer that fits, and not one more than twice too big
        // (handing a large buffer to a small request only moves the fresh
        // allocation, and its page faults, to the next large request).
        let best = pool
            .free
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len && v.capacity() <= 2 * len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        if let Some(i) = best {
            let mut v = pool.free.swap_remove(i);
            pool.bytes -= v.capacity() * 8;
            drop(pool);
            if v.len() >= len {
                v.truncate(len);
            } else {
                v.resize(len, 0);
            }
            return v;
        }
    }
    fresh(len)
}

/// Buffers at least this large are backed by transparent huge pages.
const HUGE_BYTES: usize = 4 << 20;

/// A new zeroed buffer. Large ones are marked for transparent huge pages
/// before their first touch: on the virtual machines this project runs on, a
/// 4 KiB page fault costs as much as zeroing the page (a 1bitllm-large block
/// took 4.3 million of them, 7% of its CPU time in the kernel). Measured: a
/// 256 -> 128 ternary PCMM at N = 2^16 on fresh outputs 1.98 -> 1.48 s; the
/// large block bench's system time 55.4 -> 49.0 s (its wall time unchanged).
fn fresh(len: usize) -> Vec<u64> {
    // calloc: a fresh mapping is not touched (the kernel zeroes each page at
    // its first fault), so the advice below still applies to every page.
    let v = vec![0u64; len];
    if len * 8 >= HUGE_BYTES {
        advise_huge_pages(v.as_ptr() as usize, len * 8);
    }
    v
}

/// madvise(MADV_HUGEPAGE) on the 2 MiB-aligned pages inside [start, start + bytes).
/// A hint: where the kernel has huge pages off, nothing changes.
#[cfg(target_os = "linux")]
fn advise_huge_pages(start: usize, bytes: usize) {
    const HUGE: usize = 2 << 20;
    let (first, end) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
    if end > first {
        // SAFETY: the range lies inside an allocation this function's caller owns;
        // MADV_HUGEPAGE changes how it is backed, not its contents or validity.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_start: usize, _bytes: usize) {}

/// A zeroed buffer of `len` words.
pub fn take_zeroed(len: usize) -> Vec<u64> {
    let mut v = take(len);
    v.fill(0);
    v
}

/// Returns a buffer to the pool. When the pool is full the oldest buffers
/// are freed to make room: the sizes a computation asks for change as it moves
/// down the modulus chain (bootstrapping runs from 26 limbs to 11), and a pool
/// that kept its oldest buffers would end up full of sizes nobody asks for,
/// every request then missing it and paying fresh page faults.
pub fn give(v: Vec<u64>) {
    let bytes = v.capacity() * 8;
    if v.capacity() < MIN_WORDS || bytes > MAX_BYTES {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let mut evict = 0;
    let mut kept = pool.bytes;
    while kept + bytes > MAX_BYTES {
        kept -= pool.free[evict].capacity() * 8;
        evict += 1;
    }
    let old: Vec<Vec<u64>> = pool.free.drain(..evict).collect();
    pool.bytes = kept + bytes;
    pool.free.push(v);
    drop(pool);
    // Freed outside the lock.
    drop(old);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_with_the_requested_length() {
        let mut v = take(1 << 14);
        v.iter_mut().for_each(|x| *x = 7);
        let ptr = v.as_ptr();
        give(v);
        let w = take(1 << 13);
        assert_eq!(w.len(), 1 << 13);
        let z = take_zeroed(1 << 14);
        assert!(z.iter().all(|&x| x == 0));
        // One of the two reused the returned allocation (other tests may race for it).
        let _ = ptr;
        give(w);
        give(z);
    }
}
