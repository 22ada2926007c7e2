//! The uAPI structures, mirroring the real driver's `qaic_accel.h`: raw integer fields
//! exactly as user space fills them, so that every validation the kernel does (and
//! every EINVAL it returns) has something to check.

/// `dir` value: host -> device (`DMA_TO_DEVICE`).
pub const DIR_TO_DEVICE: u32 = 1;
/// `dir` value: device -> host (`DMA_FROM_DEVICE`).
pub const DIR_FROM_DEVICE: u32 = 2;

/// `flags` bit of [`Sem`]: inbound sync fence.
pub const SEM_INSYNCFENCE: u8 = 1;
/// `flags` bit of [`Sem`]: outbound sync fence.
pub const SEM_OUTSYNCFENCE: u8 = 2;

/// One semaphore command of a slice (`struct qaic_sem`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sem {
    /// Operand, 12 bits.
    pub val: u16,
    /// Semaphore index, 5 bits.
    pub index: u8,
    /// 1 to run before the DMA, 0 after.
    pub presync: u8,
    /// Operation 0..=6 (0 = none).
    pub cmd: u8,
    /// [`SEM_INSYNCFENCE`] | [`SEM_OUTSYNCFENCE`].
    pub flags: u8,
    /// Must be zero.
    pub pad: u16,
}

/// One slice of a buffer (`struct qaic_attach_slice_entry`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttachSliceEntry {
    /// Bytes of the slice.
    pub size: u64,
    pub sems: [Sem; 4],
    /// Device address the slice moves to or from.
    pub dev_addr: u64,
    /// Doorbell address; used when `db_len` is nonzero.
    pub db_addr: u64,
    pub db_data: u32,
    /// Doorbell width in bits: 0 (none), 8, 16 or 32.
    pub db_len: u32,
    /// Offset of the slice inside the buffer.
    pub offset: u64,
}

/// One buffer of an EXECUTE_BO call (`struct qaic_execute_entry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecuteEntry {
    pub handle: u32,
    pub dir: u32,
}

/// One buffer of a PARTIAL_EXECUTE_BO call (`struct qaic_partial_execute_entry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartialExecuteEntry {
    pub handle: u32,
    pub dir: u32,
    /// Bytes to move, from the start of the buffer.
    pub resize: u64,
}

/// One result of PERF_STATS_BO (`struct qaic_perf_stats_entry`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerfStatsEntry {
    pub handle: u32,
    /// Elements already in the ring when this buffer was queued.
    pub queue_level_before: u32,
    /// Elements this buffer added.
    pub num_queue_element: u32,
    /// From the execute call to the buffer's elements being visible to the device.
    pub submit_latency_us: u32,
    /// From submission to the buffer's completion being handled.
    pub device_latency_us: u32,
}

/// Where a mapped buffer lives in the shared region (MMAP_BO's answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoInfo {
    pub handle: u32,
    /// Region offset, which is also the host address the device uses.
    pub offset: u64,
    pub size: u64,
}
