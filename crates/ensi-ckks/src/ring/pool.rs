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

/// Asks the C allocator to keep freed memory for reuse instead of returning
/// it to the kernel: allocations under 8 MiB (a ciphertext half up to 15
/// levels at N = 2^16: the block's working set) come from its heaps, not from
/// fresh mappings, and freed heap memory is not trimmed. The pool above keeps
/// only 1 GiB; what falls out of it is otherwise unmapped, and mapping it again
/// costs a page fault and a zeroed page per 4 KiB (on this project's virtual
/// machines, as much as the arithmetic in memory-bound kernels). Larger
/// buffers (keys, the top of the bootstrapping chain) stay mapped and
/// returned: with a 32 MiB threshold the demo's resident set grew from 8.5
/// to 14.9 GB for no gain; with 8 MiB it stays at 8.5 GB. For binaries (the
/// `ensi` command calls it first thing); a library user decides for their
/// process.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation thresholds.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// A new zeroed buffer. Large ones are marked for transparent huge pages
/// before their first touch: on the virtual machines this project runs on, a
/// 4 KiB page fault costs as much as zeroing the page (a 1bitllm-large block
/// took 4.3 million of them, 7% of its CPU time in the kernel); with 2 MiB
/// pages there are 512 times fewer.
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
