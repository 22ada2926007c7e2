//! The device's only window onto memory it shares with the host: an offset-addressed
//! trait. Implementations copy bytes in and out; nobody hands out references, so the
//! same firmware runs over an in-process mapping, a file shared with another process,
//! or the plain heap buffer used by unit tests.

use core::cell::RefCell;
use core::sync::atomic::Ordering;

use alloc::vec;
use alloc::vec::Vec;

/// An access fell outside the shared region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("access of {len} bytes at offset {offset:#x} is outside the {size:#x}-byte shared region")]
pub struct OutOfRange {
    pub offset: u64,
    pub len: u64,
    pub size: u64,
}

/// Checks that `[offset, offset + len)` lies inside a region of `size` bytes.
pub fn check_range(offset: u64, len: u64, size: u64) -> Result<(), OutOfRange> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(OutOfRange { offset, len, size }),
    }
}

/// A copy started with [`SharedMemory::copy_start`], to finish with
/// [`SharedMemory::copy_finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyTicket(pub u64);

impl CopyTicket {
    /// A copy that is already done.
    pub const DONE: CopyTicket = CopyTicket(0);
}

/// Memory shared between the host and the device, addressed by byte offsets.
///
/// Bulk accesses (`read`, `write`, `copy`) carry no ordering of their own: the ring
/// protocol orders them with the 32-bit register accesses, exactly as on the bus.
/// Register offsets are computed by the device from its [`crate::layout::MemoryMap`],
/// never taken from untrusted data, so the 32-bit accessors may panic on a misaligned
/// or out-of-range offset (a bug in aicsim, not a device error).
pub trait SharedMemory {
    /// Size of the region in bytes.
    fn size(&self) -> u64;
    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), OutOfRange>;
    /// Copies `data` to `offset`.
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), OutOfRange>;
    /// Copies `len` bytes from `src` to `dst` inside the region (a DMA transfer).
    fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), OutOfRange>;
    /// Atomic 32-bit load.
    fn load_u32(&self, offset: u64, order: Ordering) -> u32;
    /// Atomic 32-bit store.
    fn store_u32(&self, offset: u64, value: u32, order: Ordering);
    /// Atomic 32-bit fetch-add (wrapping); returns the previous value.
    fn fetch_add_u32(&self, offset: u64, value: u32, order: Ordering) -> u32;
    /// Atomic 32-bit fetch-or; returns the previous value.
    fn fetch_or_u32(&self, offset: u64, value: u32, order: Ordering) -> u32;
    /// Atomic 32-bit swap; returns the previous value.
    fn swap_u32(&self, offset: u64, value: u32, order: Ordering) -> u32;
    /// Atomic 32-bit compare-and-exchange: stores `new` if the word holds `current`.
    /// `Ok` with the previous value if it did, `Err` with the value found if not.
    fn compare_exchange_u32(&self, offset: u64, current: u32, new: u32, order: Ordering) -> Result<u32, u32>;
    /// Atomic 64-bit load (the offset is 8-aligned).
    fn load_u64(&self, offset: u64, order: Ordering) -> u64;
    /// Atomic 64-bit store (the offset is 8-aligned).
    fn store_u64(&self, offset: u64, value: u64, order: Ordering);
    /// Wakes whoever sleeps on the 32-bit word at `offset` (a futex wake).
    fn wake(&self, offset: u64);
    /// Makes `len` bytes at `offset` read as zeros (memory scrubbed before it is handed
    /// to a new owner). By default it writes zeros; a region backed by pages may give
    /// them back instead, which costs nothing for pages never touched.
    fn discard(&self, offset: u64, len: u64) -> Result<(), OutOfRange> {
        check_range(offset, len, self.size())?;
        let zeros = [0u8; 4096];
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(zeros.len() as u64);
            self.write(at, &zeros[..n as usize])?;
            at += n;
        }
        Ok(())
    }
    /// Starts a [`SharedMemory::copy`] that may go on beside the caller (a DMA engine of
    /// its own); the destination holds the bytes once [`SharedMemory::copy_finish`]
    /// returns. Nothing may read the destination or write either range before then. By
    /// default the copy happens now.
    fn copy_start(&self, src: u64, dst: u64, len: u64) -> Result<CopyTicket, OutOfRange> {
        self.copy(src, dst, len).map(|()| CopyTicket::DONE)
    }
    /// Waits for a copy started with [`SharedMemory::copy_start`].
    fn copy_finish(&self, _ticket: CopyTicket) {}
    /// This memory as one that several threads may `read` and `write` at once (on
    /// disjoint ranges), if it is: the device then spreads large transfers over its
    /// helper thread (the device's parallel helper). None by default.
    fn concurrent(&self) -> Option<&(dyn SharedMemory + Sync)> {
        None
    }
}

/// A single-threaded [`SharedMemory`] over a heap buffer, for tests and tools that
/// drive the firmware directly without a second party running concurrently.
pub struct HeapMemory {
    bytes: RefCell<Vec<u8>>,
}

impl HeapMemory {
    pub fn new(size: usize) -> HeapMemory {
        HeapMemory { bytes: RefCell::new(vec![0; size]) }
    }

    fn word(&self, offset: u64) -> usize {
        let size = self.bytes.borrow().len() as u64;
        assert!(offset.is_multiple_of(4) && offset + 4 <= size, "register offset {offset:#x} out of range");
        offset as usize
    }

    fn rmw(&self, offset: u64, f: impl FnOnce(u32) -> u32) -> u32 {
        let at = self.word(offset);
        let mut bytes = self.bytes.borrow_mut();
        let mut word = [0u8; 4];
        word.copy_from_slice(&bytes[at..at + 4]);
        let old = u32::from_le_bytes(word);
        bytes[at..at + 4].copy_from_slice(&f(old).to_le_bytes());
        old
    }
}

impl SharedMemory for HeapMemory {
    fn size(&self) -> u64 {
        self.bytes.borrow().len() as u64
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        check_range(offset, buf.len() as u64, self.size())?;
        let at = offset as usize;
        buf.copy_from_slice(&self.bytes.borrow()[at..at + buf.len()]);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), OutOfRange> {
        check_range(offset, data.len() as u64, self.size())?;
        let at = offset as usize;
        self.bytes.borrow_mut()[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), OutOfRange> {
        check_range(src, len, self.size())?;
        check_range(dst, len, self.size())?;
        let (src, dst, len) = (src as usize, dst as usize, len as usize);
        self.bytes.borrow_mut().copy_within(src..src + len, dst);
        Ok(())
    }

    fn load_u32(&self, offset: u64, _order: Ordering) -> u32 {
        self.rmw(offset, |v| v)
    }

    fn store_u32(&self, offset: u64, value: u32, _order: Ordering) {
        self.rmw(offset, |_| value);
    }

    fn fetch_add_u32(&self, offset: u64, value: u32, _order: Ordering) -> u32 {
        self.rmw(offset, |v| v.wrapping_add(value))
    }

    fn fetch_or_u32(&self, offset: u64, value: u32, _order: Ordering) -> u32 {
        self.rmw(offset, |v| v | value)
    }

    fn swap_u32(&self, offset: u64, value: u32, _order: Ordering) -> u32 {
        self.rmw(offset, |_| value)
    }

    fn compare_exchange_u32(&self, offset: u64, current: u32, new: u32, _order: Ordering) -> Result<u32, u32> {
        let old = self.rmw(offset, |v| if v == current { new } else { v });
        if old == current {
            Ok(old)
        } else {
            Err(old)
        }
    }

    fn load_u64(&self, offset: u64, order: Ordering) -> u64 {
        assert!(offset.is_multiple_of(8), "register offset {offset:#x} is not 8-aligned");
        u64::from(self.load_u32(offset, order)) | u64::from(self.load_u32(offset + 4, order)) << 32
    }

    fn store_u64(&self, offset: u64, value: u64, order: Ordering) {
        assert!(offset.is_multiple_of(8), "register offset {offset:#x} is not 8-aligned");
        self.store_u32(offset, value as u32, order);
        self.store_u32(offset + 4, (value >> 32) as u32, order);
    }

    fn wake(&self, _offset: u64) {}
}
