//! A first-fit allocator of address extents, used for device DDR by the firmware and
//! for the host memory window by the kernel-driver simulator.

use alloc::vec;
use alloc::vec::Vec;

/// Hands out `[start, start + len)` extents of `[0, total)` in multiples of a granule.
#[derive(Clone, Debug)]
pub struct ExtentAllocator {
    /// Free extents `(start, len)`, sorted by start, never adjacent.
    free: Vec<(u64, u64)>,
    total: u64,
    granule: u64,
}

impl ExtentAllocator {
    /// # Panics
    /// If `granule` is zero.
    pub fn new(total: u64, granule: u64) -> ExtentAllocator {
        assert!(granule > 0, "granule must be nonzero");
        let total = total / granule * granule;
        ExtentAllocator { free: if total > 0 { vec![(0, total)] } else { vec![] }, total, granule }
    }

    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|&(_, len)| len).sum()
    }

    /// The length an allocation of `bytes` really takes.
    pub fn rounded(&self, bytes: u64) -> Option<u64> {
        bytes.max(1).div_ceil(self.granule).checked_mul(self.granule)
    }

    /// Start of a free extent of at least `bytes`, or `None` if none is large enough.
    pub fn alloc(&mut self, bytes: u64) -> Option<u64> {
        let len = self.rounded(bytes)?;
        let i = self.free.iter().position(|&(_, l)| l >= len)?;
        let (start, l) = self.free[i];
        if l == len {
            self.free.remove(i);
        } else {
            self.free[i] = (start + len, l - len);
        }
        Some(start)
    }

    /// Returns an extent obtained from [`ExtentAllocator::alloc`] with the same `bytes`.
    pub fn release(&mut self, start: u64, bytes: u64) {
        let Some(len) = self.rounded(bytes) else { return };
        let i = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(i, (start, len));
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn extents_never_overlap_and_all_memory_returns(sizes in proptest::collection::vec(1u64..20_000, 1..40), order in any::<u64>()) {
            let mut a = ExtentAllocator::new(1 << 20, 4096);
            let mut live: Vec<(u64, u64)> = vec![];
            for s in sizes {
                if let Some(start) = a.alloc(s) {
                    let len = a.rounded(s).unwrap();
                    prop_assert!(live.iter().all(|&(o, ol)| start + len <= o || o + ol <= start));
                    prop_assert!(start + len <= 1 << 20);
                    live.push((start, len));
                }
            }
            let n = live.len();
            for i in 0..n {
                let (s, l) = live[(i + order as usize) % n];
                a.release(s, l);
            }
            prop_assert_eq!(a.free_bytes(), 1 << 20);
            prop_assert_eq!(a.alloc(1 << 20), Some(0));
        }
    }
}
