//! The memory map of the shared region: where the channel registers, the device
//! control words, the semaphores, the control mailbox, the rings, the host memory
//! window and device DDR sit. Host and device both compute every offset from one
//! [`MemoryMap`], so they can never disagree about it.
//!
//! Address spaces inside request elements:
//! - a *host address* is the region offset of host memory, valid only inside the host
//!   window (what a bus address is to the real device);
//! - a *device address* is an offset into device DDR, or a doorbell address in the
//!   doorbell window above DDR.

use core::mem::size_of;

use crate::clock::{REQUEST_STAMP_BYTES, RESPONSE_STAMP_BYTES};
use crate::dbc::{self, NUM_DBC, REQUEST_ELEMENT_BYTES, RESPONSE_ELEMENT_BYTES};

/// Offset of channel 0's register block.
pub const DBC_REGS_OFFSET: u64 = 0;
/// Offset of the device control words.
pub const DEVICE_REGS_OFFSET: u64 = 0x1_0000;
/// Host increments this after publishing work (a request tail or a control request);
/// the device sleeps on it.
pub const DEVICE_WAKE: u64 = DEVICE_REGS_OFFSET;
/// Nonzero while the device is (about to be) asleep on [`DEVICE_WAKE`].
pub const DEVICE_SLEEPING: u64 = DEVICE_REGS_OFFSET + 0x40;
/// The device increments this each time it raises an MSI; the host's interrupt thread
/// sleeps on it.
pub const MSI_SEQ: u64 = DEVICE_REGS_OFFSET + 0x80;
/// One bit per channel with a raised, not yet handled MSI.
pub const MSI_PENDING: u64 = DEVICE_REGS_OFFSET + 0xC0;
/// Nonzero while the host's interrupt thread is (about to be) asleep on [`MSI_SEQ`].
pub const HOST_IRQ_SLEEPING: u64 = DEVICE_REGS_OFFSET + 0x100;
/// A [`DeviceStatus`] value.
pub const DEVICE_STATUS: u64 = DEVICE_REGS_OFFSET + 0x140;
/// Firmware version, `major << 16 | minor << 8 | patch`.
pub const FW_VERSION: u64 = DEVICE_REGS_OFFSET + 0x180;
/// The device's heartbeat: it increments this on every pass of its loop (at least every
/// 20 ms), so a host can tell a device process that died from one that is idle.
pub const DEVICE_HEARTBEAT: u64 = DEVICE_REGS_OFFSET + 0x280;
/// Device-owned, simulated clock only: how far the device has simulated, in simulated
/// nanoseconds (64-bit); every response earlier than this has been posted (see
/// [`crate::clock`]).
pub const DEVICE_NOW_NS: u64 = DEVICE_REGS_OFFSET + 0x2C0;
/// Device-owned, simulated clock only: bumped whenever [`DEVICE_NOW_NS`] moves or a
/// response is posted; a host waiting for the device sleeps on it.
pub const DEVICE_PROGRESS: u64 = DEVICE_REGS_OFFSET + 0x300;
/// Device-owned, simulated clock only: elements that arrived stamped earlier than the
/// device had already simulated (a host that broke its promise, or one that does not
/// stamp); each was served as if it had arrived then.
pub const LATE_ELEMENTS: u64 = DEVICE_REGS_OFFSET + 0x340;
/// Host-owned, simulated clock only: how many host threads sleep on [`DEVICE_PROGRESS`]
/// (the device makes the futex call only then).
pub const PROGRESS_WAITERS: u64 = DEVICE_REGS_OFFSET + 0x380;
/// Device-owned: interrupts the fault plan lost (wanted but never raised).
pub const MSI_LOST: u64 = DEVICE_REGS_OFFSET + 0x3C0;
/// Host-owned: nonzero masks every MSI (datapath polling mode).
pub const MSI_MASK: u64 = DEVICE_REGS_OFFSET + 0x240;
/// The control mailbox's state: the sequence number of the request in it and whether it
/// is posted, taken by the device, cancelled by the host or free (see
/// [`crate::control::Mailbox`]).
pub const CTRL_STATE: u64 = DEVICE_REGS_OFFSET + 0x1C0;
/// Sequence number of the last control request the device answered.
pub const CTRL_RSP_SEQ: u64 = DEVICE_REGS_OFFSET + 0x200;
/// The 32 semaphores, one 32-bit word each (values are 12 bits).
pub const SEMAPHORES_OFFSET: u64 = DEVICE_REGS_OFFSET + 0x400;
/// Device-owned: elements refused because their host range was not mapped for the
/// channel's owner (the IOMMU check).
pub const IOMMU_FAULTS: u64 = DEVICE_REGS_OFFSET + 0x3CC;
/// Device-owned: elements whose copy did not match the CRC the host wrote.
pub const CORRUPT_ELEMENTS: u64 = DEVICE_REGS_OFFSET + 0x3D0;
/// Host-owned: bumped to ask a device in another process for a function-level reset
/// (it reboots its firmware with the run settings of the [`RegionHeader`]).
pub const RESET_REQUEST: u64 = DEVICE_REGS_OFFSET + 0x3C4;
/// Device-owned: the last [`RESET_REQUEST`] value the device carried out.
pub const RESET_DONE: u64 = DEVICE_REGS_OFFSET + 0x3C8;
/// Device-owned: the device's resource report, republished after every control command
/// (a seqlock word, odd while it is written, then the seven [`crate::control::StatusReport`]
/// values), so a monitor reads it without a control request.
pub const STATUS_BLOCK: u64 = DEVICE_REGS_OFFSET + 0x800;
/// Host-owned: the [`RegionHeader`] the host wrote when it made the region.
pub const REGION_HEADER: u64 = DEVICE_REGS_OFFSET + 0x900;
/// The control request mailbox (see [`crate::control`]).
pub const CTRL_REQUEST_OFFSET: u64 = 0x1_1000;
/// The control response mailbox, a response header then a UTF-8 message.
pub const CTRL_RESPONSE_OFFSET: u64 = 0x1_1800;
/// Bytes available for the message after a control response header.
pub const CTRL_MESSAGE_BYTES: u64 = 0x600;
/// Per-channel rings of [`crate::run_record::RunRecord`]s.
pub const RUN_RECORDS_OFFSET: u64 = 0x1_2000;
/// Offset of channel 0's ring allocation.
pub const RINGS_OFFSET: u64 = 0x6_0000;
/// Device addresses at and above this are doorbells, one 32-bit word per channel.
pub const DOORBELL_BASE: u64 = 0xD000_0000_0000;
/// Distance between two channels' doorbells.
pub const DOORBELL_STRIDE: u64 = 0x10;

// The fixed blocks do not overlap each other.
const _: () = assert!(SEMAPHORES_OFFSET + 32 * 4 <= STATUS_BLOCK);
const _: () = assert!(STATUS_BLOCK + 64 <= REGION_HEADER);
const _: () = assert!(REGION_HEADER + size_of::<RegionHeader>() as u64 <= CTRL_REQUEST_OFFSET);
const _: () = assert!(CTRL_REQUEST_OFFSET + 64 <= CTRL_RESPONSE_OFFSET);
const _: () = assert!(CTRL_RESPONSE_OFFSET + 64 + CTRL_MESSAGE_BYTES <= RUN_RECORDS_OFFSET);
const _: () = assert!(RUN_RECORDS_OFFSET + NUM_DBC as u64 * crate::run_record::RUN_RECORDS * 64 <= RINGS_OFFSET);

/// [`DEVICE_STATUS`] values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum DeviceStatus {
    /// Not booted yet (the region is zeroed).
    Off = 0,
    Ready = 1,
    /// The firmware hit an unrecoverable error.
    Error = 2,
}

impl DeviceStatus {
    pub fn from_raw(raw: u32) -> DeviceStatus {
        match raw {
            0 => DeviceStatus::Off,
            1 => DeviceStatus::Ready,
            _ => DeviceStatus::Error,
        }
    }
}

/// `"AICR"`: a region made by an aicsim host.
pub const REGION_MAGIC: u32 = u32::from_le_bytes(*b"AICR");
/// The layout version of a region (bumped whenever the layout changes).
pub const REGION_VERSION: u32 = 3;

/// What the host that made a shared region file tells a device process about it: the
/// hardware shape both sides must agree on, and the run settings the host asks for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RegionHeader {
    pub magic: u32,
    pub version: u32,
    pub num_nsp: u32,
    pub ring_nelem: u32,
    pub host_bytes: u64,
    pub ddr_bytes: u64,
    /// 0 functional, 1 timing.
    pub mode: u32,
    /// 0 none, 1 wall clock, 2 simulated clock.
    pub pacing: u32,
    pub seed: u64,
}

impl RegionHeader {
    pub fn map(&self) -> MemoryMap {
        MemoryMap { ring_nelem: self.ring_nelem, host_bytes: self.host_bytes, ddr_bytes: self.ddr_bytes }
    }

    /// Every way the hardware shape in this header differs from `num_nsp` and `map`,
    /// each naming both values (empty when they agree).
    pub fn mismatches(&self, num_nsp: u32, map: &MemoryMap) -> impl Iterator<Item = Mismatch> {
        [
            Mismatch { what: "NSP count", region: self.num_nsp.into(), here: num_nsp.into() },
            Mismatch { what: "ring size", region: self.ring_nelem.into(), here: map.ring_nelem.into() },
            Mismatch { what: "host memory bytes", region: self.host_bytes, here: map.host_bytes },
            Mismatch { what: "DDR bytes", region: self.ddr_bytes, here: map.ddr_bytes },
        ]
        .into_iter()
        .filter(|m| m.region != m.here)
    }
}

/// The region header in `mem`, if a host wrote one.
pub fn read_region_header<M: crate::memory::SharedMemory + ?Sized>(mem: &M) -> Option<RegionHeader> {
    let mut raw = [0u8; size_of::<RegionHeader>()];
    mem.read(REGION_HEADER, &mut raw).ok()?;
    let header: RegionHeader = bytemuck::pod_read_unaligned(&raw);
    (header.magic == REGION_MAGIC).then_some(header)
}

/// One field of the hardware shape on which a region and a party disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub what: &'static str,
    pub region: u64,
    pub here: u64,
}

/// Sizes that determine the shared region's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMap {
    /// Elements per request (and response) ring; a power of two.
    pub ring_nelem: u32,
    /// Bytes of host memory the device may reach (buffer objects live here).
    pub host_bytes: u64,
    /// Bytes of device DDR.
    pub ddr_bytes: u64,
}

const PAGE: u64 = 4096;
const HUGE_PAGE: u64 = 2 << 20;

fn align_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

impl MemoryMap {
    /// Offset of a channel's register `reg` (one of [`dbc::REQ_HEAD`] etc).
    pub fn dbc_reg(&self, dbc: usize, reg: u64) -> u64 {
        DBC_REGS_OFFSET + dbc as u64 * dbc::DBC_REG_STRIDE + reg
    }

    /// Bytes of one channel's ring allocation, as the kernel driver sizes it:
    /// `align((64 + 4) * nelem + 256, 4096)`.
    pub fn ring_alloc_bytes(&self) -> u64 {
        align_up((REQUEST_ELEMENT_BYTES + RESPONSE_ELEMENT_BYTES) * u64::from(self.ring_nelem) + 256, PAGE)
    }

    /// Offset of a channel's request ring (the start of its ring allocation).
    pub fn request_ring(&self, dbc: usize) -> u64 {
        RINGS_OFFSET + dbc as u64 * self.ring_alloc_bytes()
    }

    /// Offset of a channel's response ring (the end of its ring allocation).
    pub fn response_ring(&self, dbc: usize) -> u64 {
        self.request_ring(dbc) + self.ring_alloc_bytes() - RESPONSE_ELEMENT_BYTES * u64::from(self.ring_nelem)
    }

    pub fn request_element(&self, dbc: usize, index: u32) -> u64 {
        self.request_ring(dbc) + u64::from(index) * REQUEST_ELEMENT_BYTES
    }

    pub fn response_element(&self, dbc: usize, index: u32) -> u64 {
        self.response_ring(dbc) + u64::from(index) * RESPONSE_ELEMENT_BYTES
    }

    /// Offset of the slot that holds run `seq` (from 1) of the activation on `dbc`.
    pub fn run_record(&self, dbc: usize, seq: u64) -> u64 {
        use crate::run_record::RUN_RECORDS;
        RUN_RECORDS_OFFSET + (dbc as u64 * RUN_RECORDS + seq.saturating_sub(1) % RUN_RECORDS) * 64
    }

    pub fn semaphore(&self, index: u8) -> u64 {
        SEMAPHORES_OFFSET + u64::from(index) * 4
    }

    /// A channel's register for the simulated clock (one of [`crate::clock::PROMISE_NS`]
    /// etc.).
    pub fn clock_reg(&self, dbc: usize, reg: u64) -> u64 {
        self.dbc_reg(dbc, reg)
    }

    /// Start of the stamps of the simulated clock: per channel one request stamp per
    /// ring slot, then per channel one response stamp per ring slot.
    fn stamps_offset(&self) -> u64 {
        align_up(RINGS_OFFSET + NUM_DBC as u64 * self.ring_alloc_bytes(), PAGE)
    }

    /// Where the stamp of request slot `index` of channel `dbc` lives.
    pub fn request_stamp(&self, dbc: usize, index: u32) -> u64 {
        self.stamps_offset() + (dbc as u64 * u64::from(self.ring_nelem) + u64::from(index)) * REQUEST_STAMP_BYTES
    }

    /// Where the stamp of response slot `index` of channel `dbc` lives.
    pub fn response_stamp(&self, dbc: usize, index: u32) -> u64 {
        let responses = self.stamps_offset() + NUM_DBC as u64 * u64::from(self.ring_nelem) * REQUEST_STAMP_BYTES;
        responses + (dbc as u64 * u64::from(self.ring_nelem) + u64::from(index)) * RESPONSE_STAMP_BYTES
    }

    /// Where the tag of response slot `index` of channel `dbc` lives: the number of
    /// request elements the device had taken on the channel (since its activation)
    /// before the one this response answers, so the host binds the response to its
    /// element whatever request id it carries.
    pub fn response_tag(&self, dbc: usize, index: u32) -> u64 {
        let stamps = NUM_DBC as u64 * u64::from(self.ring_nelem) * (REQUEST_STAMP_BYTES + RESPONSE_STAMP_BYTES);
        self.stamps_offset() + stamps + (dbc as u64 * u64::from(self.ring_nelem) + u64::from(index)) * 4
    }

    /// Bytes of one channel's IOMMU bitmap: one bit per page of host memory.
    pub fn iommu_bitmap_bytes(&self) -> u64 {
        align_up(self.host_bytes.div_ceil(PAGE).div_ceil(8), 64)
    }

    /// Where channel `dbc`'s IOMMU bitmap starts (host-owned; see [`crate::iommu`]).
    pub fn iommu_bitmap(&self, dbc: usize) -> u64 {
        let tags_end = self.response_tag(NUM_DBC, 0);
        align_up(tags_end, PAGE) + dbc as u64 * self.iommu_bitmap_bytes()
    }

    /// Start of the host memory window.
    pub fn host_offset(&self) -> u64 {
        align_up(self.iommu_bitmap(NUM_DBC), HUGE_PAGE)
    }

    /// Start of device DDR inside the region.
    pub fn ddr_offset(&self) -> u64 {
        align_up(self.host_offset() + self.host_bytes, HUGE_PAGE)
    }

    /// Total bytes of the shared region.
    pub fn total_bytes(&self) -> u64 {
        self.ddr_offset() + self.ddr_bytes
    }

    /// Whether `[addr, addr + len)` is host memory the device may reach.
    pub fn host_range_ok(&self, addr: u64, len: u64) -> bool {
        let start = self.host_offset();
        addr >= start && addr.checked_add(len).is_some_and(|end| end <= start + self.host_bytes)
    }

    /// The doorbell address of a channel's activation.
    pub fn doorbell(&self, dbc: usize) -> u64 {
        DOORBELL_BASE + dbc as u64 * DOORBELL_STRIDE
    }

    /// The channel whose doorbell `addr` is, if any.
    pub fn doorbell_channel(&self, addr: u64) -> Option<usize> {
        let rel = addr.checked_sub(DOORBELL_BASE)?;
        let dbc = rel / DOORBELL_STRIDE;
        (rel % DOORBELL_STRIDE == 0 && dbc < NUM_DBC as u64).then_some(dbc as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_allocation_matches_the_kernel_driver_formula() {
        let map = MemoryMap { ring_nelem: 512, host_bytes: 1 << 20, ddr_bytes: 1 << 30 };
        assert_eq!(map.ring_alloc_bytes(), (68 * 512 + 256u64).div_ceil(4096) * 4096);
        assert_eq!(map.response_ring(0) + 4 * 512, map.request_ring(1));
        assert!(map.request_ring(0) + 64 * 512 <= map.response_ring(0));
    }

    #[test]
    fn regions_do_not_overlap() {
        let map = MemoryMap { ring_nelem: 1024, host_bytes: 3 << 20, ddr_bytes: 1 << 30 };
        assert!(map.request_ring(15) + map.ring_alloc_bytes() <= map.request_stamp(0, 0));
        assert!(map.request_stamp(15, 1023) + REQUEST_STAMP_BYTES <= map.response_stamp(0, 0));
        assert!(map.response_stamp(15, 1023) + RESPONSE_STAMP_BYTES <= map.host_offset());
        assert!(map.dbc_reg(0, crate::clock::DEVICE_WAKES) + 4 <= map.dbc_reg(1, dbc::REQ_HEAD));
        assert!(map.host_offset() + map.host_bytes <= map.ddr_offset());
        assert!(map.dbc_reg(15, dbc::RSP_TAIL) < DEVICE_REGS_OFFSET);
    }

    #[test]
    fn doorbell_addresses_map_back_to_their_channel() {
        let map = MemoryMap { ring_nelem: 8, host_bytes: 0, ddr_bytes: 0 };
        for dbc in 0..NUM_DBC {
            assert_eq!(map.doorbell_channel(map.doorbell(dbc)), Some(dbc));
        }
        assert_eq!(map.doorbell_channel(map.doorbell(0) + 4), None);
        assert_eq!(map.doorbell_channel(map.doorbell(16)), None);
        assert_eq!(map.doorbell_channel(12), None);
    }
}
