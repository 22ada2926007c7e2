//! Copies to, from and within shared memory that another party (a device thread, a
//! device process, a misbehaving peer) may write at any moment. Every access to the
//! shared side is atomic (Relaxed: whole aligned 8-byte words, single bytes at the
//! edges), as vm-memory's volatile accesses are for guest memory: a racing write gives
//! a mix of old and new bytes — which the protocol then checks (the element CRC, the
//! validator) — never undefined behaviour, whatever the other side does.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};

const WORD: usize = 8;

/// # Safety
/// `p` points into a live mapping, valid for one byte.
unsafe fn byte<'a>(p: *const u8) -> &'a AtomicU8 {
    // SAFETY: the caller guarantees `p` is valid for the mapping's lifetime; AtomicU8 has
    // the layout of u8 and no alignment requirement beyond it.
    unsafe { AtomicU8::from_ptr(p.cast_mut()) }
}

/// # Safety
/// `p` is 8-aligned and points into a live mapping, valid for eight bytes.
unsafe fn word<'a>(p: *const u8) -> &'a AtomicU64 {
    // SAFETY: the caller guarantees alignment and validity for the mapping's lifetime;
    // AtomicU64 has the layout of u64.
    unsafe { AtomicU64::from_ptr(p.cast_mut().cast::<u64>()) }
}

/// Bytes before `p` reaches an 8-byte boundary (at most `len`).
fn head(p: *const u8, len: usize) -> usize {
    (p.align_offset(WORD)).min(len)
}

/// Copies `dst.len()` bytes from shared memory at `src` into a private buffer.
///
/// # Safety
/// `[src, src + dst.len())` lies inside a live shared mapping.
pub unsafe fn load(src: *const u8, dst: &mut [u8]) {
    let len = dst.len();
    let h = head(src, len);
    for (i, d) in dst[..h].iter_mut().enumerate() {
        // SAFETY: inside the range the caller vouches for.
        *d = unsafe { byte(src.add(i)) }.load(Relaxed);
    }
    let mut i = h;
    while i + WORD <= len {
        // SAFETY: `src + i` is 8-aligned (past the head) and the word is in range.
        let v = unsafe { word(src.add(i)) }.load(Relaxed);
        dst[i..i + WORD].copy_from_slice(&v.to_ne_bytes());
        i += WORD;
    }
    for (k, d) in dst[i..].iter_mut().enumerate() {
        // SAFETY: inside the range the caller vouches for.
        *d = unsafe { byte(src.add(i + k)) }.load(Relaxed);
    }
}

/// Copies a private buffer into shared memory at `dst`.
///
/// # Safety
/// `[dst, dst + src.len())` lies inside a live shared mapping.
pub unsafe fn store(src: &[u8], dst: *mut u8) {
    let len = src.len();
    let h = head(dst, len);
    for (i, &s) in src[..h].iter().enumerate() {
        // SAFETY: inside the range the caller vouches for.
        unsafe { byte(dst.add(i)) }.store(s, Relaxed);
    }
    let mut i = h;
    while i + WORD <= len {
        let v = u64::from_ne_bytes(src[i..i + WORD].try_into().expect("a word"));
        // SAFETY: `dst + i` is 8-aligned (past the head) and the word is in range.
        unsafe { word(dst.add(i)) }.store(v, Relaxed);
        i += WORD;
    }
    for (k, &s) in src[i..].iter().enumerate() {
        // SAFETY: inside the range the caller vouches for.
        unsafe { byte(dst.add(i + k)) }.store(s, Relaxed);
    }
}

/// Bytes a copy within shared memory moves at a time, through a private buffer: each
/// side is then read or written in whole aligned words whatever the other's alignment.
const CHUNK: usize = 4096;

/// Copies `len` bytes within shared memory, as `memmove` does (the ranges may overlap).
///
/// # Safety
/// Both ranges lie inside a live shared mapping.
pub unsafe fn copy(src: *const u8, dst: *mut u8, len: usize) {
    let mut bounce = [0u8; CHUNK];
    let (s, d) = (src as usize, dst as usize);
    // A destination that overlaps the source from above is copied back to front, a
    // chunk read whole before it is written.
    let backward = d > s && d < s + len;
    let chunks = len.div_ceil(CHUNK);
    for k in 0..chunks {
        let k = if backward { chunks - 1 - k } else { k };
        let at = k * CHUNK;
        let n = (len - at).min(CHUNK);
        // SAFETY: `[at, at + n)` of both ranges is inside what the caller vouches for.
        unsafe {
            load(src.add(at), &mut bounce[..n]);
            store(&bounce[..n], dst.add(at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every alignment, length and overlap gives what memmove gives.
        #[test]
        fn the_copies_give_what_plain_copies_give(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            from in 0usize..40,
            to in 0usize..40,
            len in 0usize..120,
        ) {
            let mut region = data.clone();
            region.resize(256, 0xAB);
            let mut expected = region.clone();
            expected.copy_within(from..from + len, to);
            let base = region.as_mut_ptr();
            // SAFETY: both ranges are inside `region` (from, to < 40, len < 120, size 256).
            unsafe { copy(base.add(from), base.add(to), len) };
            prop_assert_eq!(&region, &expected);

            let mut out = vec![0u8; len];
            // SAFETY: `[to, to + len)` is inside `region`.
            unsafe { load(region.as_ptr().add(to), &mut out) };
            prop_assert_eq!(&out[..], &expected[to..to + len]);
            let src: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5A).collect();
            // SAFETY: `[from, from + len)` is inside `region`.
            unsafe { store(&src, region.as_mut_ptr().add(from)) };
            prop_assert_eq!(&region[from..from + len], &src[..]);
        }
    }
}
