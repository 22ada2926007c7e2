//! DMA Bridge Channel wire formats: the 64-byte request element, the 4-byte response
//! element, the bit fields inside them, the per-channel register offsets and the ring
//! index arithmetic shared by both ends.
//!
//! Field layout and bit positions follow the public AIC100 interface (the upstream
//! `accel/qaic` driver). All multi-byte fields are little-endian.

use bytemuck::{Pod, Zeroable};
use core::fmt;
use core::mem::size_of;

/// Number of DMA Bridge Channels on one device.
pub const NUM_DBC: usize = 16;

/// Offset of the request-ring head register in a channel's register block (device writes).
pub const REQ_HEAD: u64 = 0x0;
/// Offset of the request-ring tail register (host writes to enqueue).
pub const REQ_TAIL: u64 = 0x4;
/// Offset of the response-ring head register (host writes after consuming).
pub const RSP_HEAD: u64 = 0x8;
/// Offset of the response-ring tail register (device writes).
pub const RSP_TAIL: u64 = 0xC;
/// Distance between two channels' register blocks.
pub const DBC_REG_STRIDE: u64 = 0x1000;
/// What a register reads as when the link to the device is down.
pub const LINK_DOWN: u32 = 0xFFFF_FFFF;

/// One request element: a DMA transfer plus its synchronisation, 64 bytes, packed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RequestElement {
    /// Chosen by the driver; echoed in the response; wraps at `u16::MAX`.
    pub req_id: u16,
    /// Ignored by the hardware.
    pub seq_id: u8,
    /// See [`Cmd`].
    pub cmd: u8,
    pub reserved0: u32,
    pub src_addr: u64,
    pub dest_addr: u64,
    pub len: u32,
    pub reserved1: u32,
    /// Doorbell address (device address space), naturally aligned for its width.
    pub db_addr: u64,
    /// See [`DoorbellAttr`].
    pub db_attr: u8,
    pub reserved2: u8,
    pub reserved3: u16,
    pub db_data: u32,
    /// See [`SemCommand`].
    pub sem_cmd: [u32; 4],
}
const _: () = assert!(size_of::<RequestElement>() == 64);

/// One response element: which request completed and how, 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ResponseElement {
    pub req_id: u16,
    /// 0 on success, otherwise a [`CompletionCode`].
    pub status: u16,
}
const _: () = assert!(size_of::<ResponseElement>() == 4);

/// Size in bytes of one request element.
pub const REQUEST_ELEMENT_BYTES: u64 = size_of::<RequestElement>() as u64;
/// Size in bytes of one response element.
pub const RESPONSE_ELEMENT_BYTES: u64 = size_of::<ResponseElement>() as u64;

/// Transfer direction, bits 1:0 of `cmd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// No data moves; the element only synchronises (semaphores, doorbell).
    None = 0,
    /// Host memory -> device memory.
    ToDevice = 1,
    /// Device memory -> host memory.
    FromDevice = 2,
}

/// The decoded `cmd` byte of a request element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cmd {
    pub direction: Direction,
    /// Bit 4: write a response element when this element completes.
    pub completion: bool,
    /// Bit 3: bulk transfer (1) or linked list (0).
    pub bulk: bool,
    /// Bit 7: raise an MSI even if the response ring was not empty.
    pub force_msi: bool,
}

const CMD_FORCE_MSI: u8 = 1 << 7;
const CMD_COMPLETION: u8 = 1 << 4;
const CMD_BULK: u8 = 1 << 3;
const CMD_DIR_MASK: u8 = 0b11;
const CMD_RESERVED: u8 = !(CMD_FORCE_MSI | CMD_COMPLETION | CMD_BULK | CMD_DIR_MASK);

impl Cmd {
    pub fn encode(self) -> u8 {
        let mut cmd = self.direction as u8;
        if self.completion {
            cmd |= CMD_COMPLETION;
        }
        if self.bulk {
            cmd |= CMD_BULK;
        }
        if self.force_msi {
            cmd |= CMD_FORCE_MSI;
        }
        cmd
    }

    pub fn decode(cmd: u8) -> Result<Cmd, CompletionCode> {
        if cmd & CMD_RESERVED != 0 {
            return Err(CompletionCode::ReservedBits);
        }
        let direction = match cmd & CMD_DIR_MASK {
            0 => Direction::None,
            1 => Direction::ToDevice,
            2 => Direction::FromDevice,
            _ => return Err(CompletionCode::IllegalDirection),
        };
        Ok(Cmd {
            direction,
            completion: cmd & CMD_COMPLETION != 0,
            bulk: cmd & CMD_BULK != 0,
            force_msi: cmd & CMD_FORCE_MSI != 0,
        })
    }
}

/// Width of a doorbell write, bits 1:0 of `db_attr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoorbellWidth {
    Bits32 = 0,
    Bits16 = 1,
    Bits8 = 2,
}

impl DoorbellWidth {
    pub fn bytes(self) -> u64 {
        match self {
            DoorbellWidth::Bits32 => 4,
            DoorbellWidth::Bits16 => 2,
            DoorbellWidth::Bits8 => 1,
        }
    }

    /// The uAPI `db_len`: the width in bits (8, 16 or 32).
    pub fn bits(self) -> u32 {
        self.bytes() as u32 * 8
    }

    /// The width for a uAPI `db_len` in bits (8, 16 or 32).
    pub fn from_bits(bits: u32) -> Option<DoorbellWidth> {
        match bits {
            32 => Some(DoorbellWidth::Bits32),
            16 => Some(DoorbellWidth::Bits16),
            8 => Some(DoorbellWidth::Bits8),
            _ => None,
        }
    }
}

/// The decoded `db_attr` byte: `None` when the doorbell is disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoorbellAttr {
    pub width: DoorbellWidth,
}

const DB_ENABLE: u8 = 1 << 7;

impl DoorbellAttr {
    pub fn encode(attr: Option<DoorbellAttr>) -> u8 {
        match attr {
            None => 0,
            Some(a) => DB_ENABLE | a.width as u8,
        }
    }

    pub fn decode(byte: u8) -> Result<Option<DoorbellAttr>, CompletionCode> {
        if byte & DB_ENABLE == 0 {
            return Ok(None);
        }
        if byte & !(DB_ENABLE | 0b11) != 0 {
            return Err(CompletionCode::ReservedBits);
        }
        let width = match byte & 0b11 {
            0 => DoorbellWidth::Bits32,
            1 => DoorbellWidth::Bits16,
            2 => DoorbellWidth::Bits8,
            _ => return Err(CompletionCode::BadDoorbell),
        };
        Ok(Some(DoorbellAttr { width }))
    }
}

/// Semaphore operation, bits 26:24 of a semaphore command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SemOp {
    Nop = 0,
    Init = 1,
    Inc = 2,
    Dec = 3,
    WaitEq = 4,
    WaitGe = 5,
    /// Wait until the value is above zero, then decrement it.
    P = 6,
}

impl SemOp {
    pub fn from_raw(raw: u32) -> Option<SemOp> {
        Some(match raw {
            0 => SemOp::Nop,
            1 => SemOp::Init,
            2 => SemOp::Inc,
            3 => SemOp::Dec,
            4 => SemOp::WaitEq,
            5 => SemOp::WaitGe,
            6 => SemOp::P,
            _ => return None,
        })
    }
}

/// Number of device semaphores.
pub const NUM_SEMAPHORES: u8 = 32;
/// Largest value a semaphore (and a semaphore command's operand) can hold.
pub const SEM_VALUE_MAX: u16 = 0x0FFF;

/// One decoded semaphore command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SemCommand {
    pub op: SemOp,
    /// Semaphore index, 0..32.
    pub index: u8,
    /// Operand, 12 bits.
    pub value: u16,
    /// Run before the DMA (true) or after it (false).
    pub presync: bool,
    pub inbound_fence: bool,
    pub outbound_fence: bool,
}

const SEM_ENABLE: u32 = 1 << 31;
const SEM_IN_FENCE: u32 = 1 << 30;
const SEM_OUT_FENCE: u32 = 1 << 29;
const SEM_OP_SHIFT: u32 = 24;
const SEM_PRESYNC: u32 = 1 << 22;
const SEM_INDEX_SHIFT: u32 = 16;
/// What would be a sixth index bit: an index past the 32 semaphores.
const SEM_INDEX_HIGH: u32 = 1 << 21;
const SEM_RESERVED: u32 = (0b11 << 27) | (1 << 23) | (0xF << 12);

impl SemCommand {
    /// Encodes with the enable bit set. Out-of-range fields are the caller's bug, so
    /// they are masked here; the kernel driver validates uAPI input before calling this.
    pub fn encode(self) -> u32 {
        let mut raw = SEM_ENABLE
            | ((self.op as u32) << SEM_OP_SHIFT)
            | ((u32::from(self.index) & 0x1F) << SEM_INDEX_SHIFT)
            | (u32::from(self.value) & u32::from(SEM_VALUE_MAX));
        if self.presync {
            raw |= SEM_PRESYNC;
        }
        if self.inbound_fence {
            raw |= SEM_IN_FENCE;
        }
        if self.outbound_fence {
            raw |= SEM_OUT_FENCE;
        }
        raw
    }

    /// `Ok(None)` when the command is not enabled.
    pub fn decode(raw: u32) -> Result<Option<SemCommand>, CompletionCode> {
        if raw & SEM_ENABLE == 0 {
            return Ok(None);
        }
        if raw & SEM_INDEX_HIGH != 0 {
            return Err(CompletionCode::BadSemaphore);
        }
        if raw & SEM_RESERVED != 0 {
            return Err(CompletionCode::ReservedBits);
        }
        let op = SemOp::from_raw((raw >> SEM_OP_SHIFT) & 0b111).ok_or(CompletionCode::BadSemaphore)?;
        Ok(Some(SemCommand {
            op,
            index: ((raw >> SEM_INDEX_SHIFT) & 0x1F) as u8,
            value: (raw & u32::from(SEM_VALUE_MAX)) as u16,
            presync: raw & SEM_PRESYNC != 0,
            inbound_fence: raw & SEM_IN_FENCE != 0,
            outbound_fence: raw & SEM_OUT_FENCE != 0,
        }))
    }
}

/// Why the device failed a request element. The numeric value is the response
/// element's status field; 0 is success and is not a variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum CompletionCode {
    /// Direction bits were 3.
    IllegalDirection = 1,
    /// A reserved bit of cmd, db_attr or a semaphore command was set.
    ReservedBits = 2,
    /// The host address range is outside the host memory the device may reach.
    HostAddressOutOfRange = 3,
    /// The device address range is outside device DDR.
    DeviceAddressOutOfRange = 4,
    /// A semaphore command had an undefined op.
    BadSemaphore = 5,
    /// More than one semaphore command was marked presync.
    MultiplePresync = 6,
    /// The doorbell width was undefined, its address misaligned or unmapped.
    BadDoorbell = 7,
    /// Length zero on a transfer that moves data, or data on a direction-none element.
    BadLength = 8,
    /// The program started by a doorbell faulted.
    ProgramFault = 9,
    /// The channel was reset while the element was queued.
    ChannelReset = 10,
    /// Reported by fault injection: the transfer happened but the device reports failure.
    Injected = 11,
    /// The device's copy of the element does not match the CRC the host wrote beside
    /// it: nothing was moved.
    CorruptElement = 12,
    /// The host range is not mapped for the channel's owner (the IOMMU check): nothing
    /// was moved.
    HostAddressNotMapped = 13,
    /// Detected by the host: the response named another request than the element it
    /// answers (the element's own outcome is unknown).
    CorruptResponse = 14,
}

/// CRC-32 of a request element's 64 bytes, as the host writes it into the slot's
/// [`crate::clock::RequestStamp`].
pub fn element_crc(element: &[u8; REQUEST_ELEMENT_BYTES as usize]) -> u32 {
    crc32fast::hash(element)
}

impl CompletionCode {
    pub fn from_status(status: u16) -> Option<CompletionCode> {
        use CompletionCode::*;
        Some(match status {
            1 => IllegalDirection,
            2 => ReservedBits,
            3 => HostAddressOutOfRange,
            4 => DeviceAddressOutOfRange,
            5 => BadSemaphore,
            6 => MultiplePresync,
            7 => BadDoorbell,
            8 => BadLength,
            9 => ProgramFault,
            10 => ChannelReset,
            11 => Injected,
            12 => CorruptElement,
            13 => HostAddressNotMapped,
            14 => CorruptResponse,
            _ => return None,
        })
    }
}

impl fmt::Display for CompletionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            CompletionCode::IllegalDirection => "illegal direction (cmd bits 1:0 = 3)",
            CompletionCode::ReservedBits => "reserved bit set in cmd, db_attr or a semaphore command",
            CompletionCode::HostAddressOutOfRange => "host address range outside host memory",
            CompletionCode::DeviceAddressOutOfRange => "device address range outside device DDR",
            CompletionCode::BadSemaphore => "undefined semaphore operation",
            CompletionCode::MultiplePresync => "more than one presync semaphore command",
            CompletionCode::BadDoorbell => "bad doorbell (width, alignment or address)",
            CompletionCode::BadLength => "length does not fit the direction",
            CompletionCode::ProgramFault => "the program started by the doorbell faulted",
            CompletionCode::ChannelReset => "channel reset while queued",
            CompletionCode::Injected => "injected fault (fault injection)",
            CompletionCode::CorruptElement => "the element does not match its CRC: corrupted, nothing moved",
            CompletionCode::HostAddressNotMapped => {
                "host range not mapped for the channel's owner (IOMMU): nothing moved"
            }
            CompletionCode::CorruptResponse => "the response named another request than the element it answers",
        };
        write!(f, "device error {}: {text}", *self as u16)
    }
}

/// Index arithmetic of a ring with a power-of-two number of elements. One slot is
/// always left empty, so the ring is full when `head == tail + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    nelem: u32,
}

impl Ring {
    /// `None` unless `nelem` is a power of two of at least 2.
    pub fn new(nelem: u32) -> Option<Ring> {
        (nelem >= 2 && nelem.is_power_of_two()).then_some(Ring { nelem })
    }

    pub fn nelem(self) -> u32 {
        self.nelem
    }

    /// The most elements the ring can hold at once.
    pub fn capacity(self) -> u32 {
        self.nelem - 1
    }

    /// Whether `index` is a valid ring position.
    pub fn contains(self, index: u32) -> bool {
        index < self.nelem
    }

    pub fn next(self, index: u32) -> u32 {
        (index + 1) & (self.nelem - 1)
    }

    pub fn advance(self, index: u32, by: u32) -> u32 {
        index.wrapping_add(by) & (self.nelem - 1)
    }

    /// Elements between head (next to consume) and tail (next to fill).
    pub fn used(self, head: u32, tail: u32) -> u32 {
        tail.wrapping_sub(head) & (self.nelem - 1)
    }

    pub fn free(self, head: u32, tail: u32) -> u32 {
        self.capacity() - self.used(head, tail)
    }

    pub fn is_empty(self, head: u32, tail: u32) -> bool {
        head == tail
    }

    pub fn is_full(self, head: u32, tail: u32) -> bool {
        self.next(tail) == head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_element_field_offsets_match_the_wire_format() {
        let e = RequestElement {
            req_id: 0x0102,
            seq_id: 0x03,
            cmd: 0x04,
            src_addr: 0x1112_1314_1516_1718,
            dest_addr: 0x2122_2324_2526_2728,
            len: 0x3132_3334,
            db_addr: 0x4142_4344_4546_4748,
            db_attr: 0x51,
            db_data: 0x6162_6364,
            sem_cmd: [0x7172_7374, 0x8182_8384, 0x9192_9394, 0xA1A2_A3A4],
            ..Default::default()
        };
        let b = bytemuck::bytes_of(&e);
        assert_eq!(&b[0..4], &[0x02, 0x01, 0x03, 0x04]);
        assert_eq!(b[8], 0x18);
        assert_eq!(b[16], 0x28);
        assert_eq!(b[24], 0x34);
        assert_eq!(b[32], 0x48);
        assert_eq!(b[40], 0x51);
        assert_eq!(&b[44..48], &[0x64, 0x63, 0x62, 0x61]);
        assert_eq!(b[48], 0x74);
        assert_eq!(b[63], 0xA1);
    }

    #[test]
    fn cmd_roundtrips_and_rejects_direction_three() {
        for dir in [Direction::None, Direction::ToDevice, Direction::FromDevice] {
            for bits in 0..8u8 {
                let c =
                    Cmd { direction: dir, completion: bits & 1 != 0, bulk: bits & 2 != 0, force_msi: bits & 4 != 0 };
                assert_eq!(Cmd::decode(c.encode()), Ok(c));
            }
        }
        assert_eq!(Cmd::decode(0b11), Err(CompletionCode::IllegalDirection));
        assert_eq!(Cmd::decode(1 << 5), Err(CompletionCode::ReservedBits));
    }

    #[test]
    fn semaphore_command_bits_match_the_reference_layout() {
        let s = SemCommand {
            op: SemOp::WaitGe,
            index: 17,
            value: 0xABC,
            presync: true,
            inbound_fence: true,
            outbound_fence: false,
        };
        let raw = s.encode();
        assert_eq!(raw, (1 << 31) | (1 << 30) | (5 << 24) | (1 << 22) | (17 << 16) | 0xABC);
        assert_eq!(SemCommand::decode(raw), Ok(Some(s)));
        assert_eq!(SemCommand::decode(raw & !(1 << 31)), Ok(None));
        assert_eq!(SemCommand::decode((1 << 31) | (7 << 24)), Err(CompletionCode::BadSemaphore));
        assert_eq!(SemCommand::decode(raw | (1 << 21)), Err(CompletionCode::BadSemaphore), "index 32 and up");
        assert_eq!(SemCommand::decode(raw | (1 << 23)), Err(CompletionCode::ReservedBits));
    }

    #[test]
    fn doorbell_attr_roundtrips() {
        for w in [DoorbellWidth::Bits32, DoorbellWidth::Bits16, DoorbellWidth::Bits8] {
            let a = Some(DoorbellAttr { width: w });
            assert_eq!(DoorbellAttr::decode(DoorbellAttr::encode(a)), Ok(a));
        }
        assert_eq!(DoorbellAttr::decode(0), Ok(None));
        assert_eq!(DoorbellAttr::decode(0x83), Err(CompletionCode::BadDoorbell));
    }

    #[test]
    fn ring_is_full_when_head_is_one_past_tail() {
        let r = Ring::new(8).unwrap();
        assert!(r.is_empty(3, 3));
        assert!(r.is_full(3, 2));
        assert_eq!(r.free(0, 7), 0);
        assert_eq!(r.used(6, 1), 3);
        assert!(Ring::new(12).is_none());
        assert!(Ring::new(1).is_none());
    }

    #[test]
    fn completion_codes_roundtrip_through_status() {
        for s in 1..=14u16 {
            assert_eq!(CompletionCode::from_status(s).map(|c| c as u16), Some(s));
        }
        assert_eq!(CompletionCode::from_status(0), None);
        assert_eq!(CompletionCode::from_status(15), None);
    }
}
