//! The device's view of host memory per channel, as an IOMMU gives it: one bit per
//! 4 KiB page of the host window in each channel's bitmap
//! ([`MemoryMap::iommu_bitmap`]). The host sets the bits of every buffer object of the
//! user that owns the channel, and clears them before the memory goes to anyone else;
//! the device moves bytes to or from host memory only where every page is mapped for
//! the channel, so a corrupted or replayed element that points at another user's buffer
//! touches nothing.

use core::sync::atomic::Ordering::{Acquire, SeqCst};

use crate::layout::MemoryMap;
use crate::memory::SharedMemory;

/// Bytes per bit.
pub const PAGE: u64 = 4096;

/// The pages of `[addr, addr + len)` as indices into the host window, if the range is
/// inside it.
fn pages(map: &MemoryMap, addr: u64, len: u64) -> Option<core::ops::Range<u64>> {
    if len == 0 || !map.host_range_ok(addr, len) {
        return None;
    }
    let rel = addr - map.host_offset();
    Some(rel / PAGE..(rel + len).div_ceil(PAGE))
}

/// The bitmap word holding `page`'s bit, and the bit.
fn word(map: &MemoryMap, dbc: usize, page: u64) -> (u64, u32) {
    (map.iommu_bitmap(dbc) + page / 32 * 4, 1 << (page % 32))
}

/// Host: maps `[addr, addr + len)` (whole pages) for channel `dbc`. False if the range
/// is not host memory.
pub fn map<M: SharedMemory + ?Sized>(mem: &M, layout: &MemoryMap, dbc: usize, addr: u64, len: u64) -> bool {
    let Some(pages) = pages(layout, addr, len) else { return false };
    for page in pages {
        let (at, bit) = word(layout, dbc, page);
        mem.fetch_or_u32(at, bit, SeqCst);
    }
    true
}

/// Host: unmaps `[addr, addr + len)` (whole pages) for channel `dbc`.
pub fn unmap<M: SharedMemory + ?Sized>(mem: &M, layout: &MemoryMap, dbc: usize, addr: u64, len: u64) {
    let Some(pages) = pages(layout, addr, len) else { return };
    for page in pages {
        let (at, bit) = word(layout, dbc, page);
        let mut current = mem.load_u32(at, Acquire);
        while current & bit != 0 {
            match mem.compare_exchange_u32(at, current, current & !bit, SeqCst) {
                Ok(_) => break,
                Err(found) => current = found,
            }
        }
    }
}

/// Host: unmaps everything for channel `dbc` (the channel was released).
pub fn unmap_channel<M: SharedMemory + ?Sized>(mem: &M, layout: &MemoryMap, dbc: usize) {
    let base = layout.iommu_bitmap(dbc);
    for k in 0..layout.iommu_bitmap_bytes() / 4 {
        if mem.load_u32(base + 4 * k, Acquire) != 0 {
            mem.store_u32(base + 4 * k, 0, SeqCst);
        }
    }
}

/// Device: whether every page of `[addr, addr + len)` is mapped for channel `dbc`.
pub fn allows<M: SharedMemory + ?Sized>(mem: &M, layout: &MemoryMap, dbc: usize, addr: u64, len: u64) -> bool {
    let Some(pages) = pages(layout, addr, len) else { return false };
    let mut page = pages.start;
    while page < pages.end {
        let (at, _) = word(layout, dbc, page);
        let bits = mem.load_u32(at, Acquire);
        // The pages of this word within the range must all be set.
        let first = (page % 32) as u32;
        let count = (pages.end - page).min(u64::from(32 - first)) as u32;
        let want = if count == 32 { u32::MAX } else { ((1u32 << count) - 1) << first };
        if bits & want != want {
            return false;
        }
        page += u64::from(count);
    }
    true
}
