//! `aicsim-driver` is the user-space driver: a safe, typed API over the kernel-driver
//! simulator's uAPI, the layer a runtime links against.
//!
//! [`Device`] is an open device; [`Buffer`]s free themselves when dropped, [`Program`]s
//! unload and [`Channel`]s deactivate the same way. Slices, semaphores and doorbells are
//! typed here and lowered to the raw uAPI structures, which the kernel side validates
//! again. Every failure is a [`DriverError`] that mirrors the driver's errno set.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use aicsim_abi::control::{ActivationInfo, StatusReport};
use aicsim_abi::dbc::CompletionCode;
pub use aicsim_abi::dbc::DoorbellWidth;
pub use aicsim_abi::dbc::SemOp;
pub use aicsim_abi::run_record::RunRecord;

/// DMA Bridge Channels of a device: at most this many activations run at once.
pub const CHANNELS: usize = aicsim_abi::dbc::NUM_DBC;
pub use aicsim_abi::profile::RunProfile;
use aicsim_kmd::uapi::{self, AttachSliceEntry, ExecuteEntry, Sem};
use aicsim_kmd::{BoMapping, Client, Errno, Kmd, KmdConfig, KmdError};

pub use aicsim_kmd::uapi::PerfStatsEntry;
pub use aicsim_kmd::{Stamp, NO_PROMISE};

/// A driver error, one variant per errno, each with what went wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    #[error("invalid argument (EINVAL): {0}")]
    InvalidArgument(String),
    #[error("not found (ENOENT): {0}")]
    NotFound(String),
    #[error("try again (EAGAIN): {0}")]
    Again(String),
    #[error("timed out (ETIMEDOUT): {0}")]
    TimedOut(String),
    #[error("no device (ENODEV): {0}")]
    NoDevice(String),
    #[error("busy (EBUSY): {0}")]
    Busy(String),
    #[error("not permitted (EPERM): {0}")]
    NotPermitted(String),
    #[error("no space (ENOSPC): {0}")]
    NoSpace(String),
    #[error("channel restarting (EPIPE): {0}")]
    Pipe(String),
    #[error("out of memory (ENOMEM): {0}")]
    NoMemory(String),
    #[error("device error (EIO): {detail}")]
    Device { code: CompletionCode, detail: String },
}

impl DriverError {
    /// The errno this error stands for.
    pub fn errno(&self) -> Errno {
        match self {
            DriverError::InvalidArgument(_) => Errno::EINVAL,
            DriverError::NotFound(_) => Errno::ENOENT,
            DriverError::Again(_) => Errno::EAGAIN,
            DriverError::TimedOut(_) => Errno::ETIMEDOUT,
            DriverError::NoDevice(_) => Errno::ENODEV,
            DriverError::Busy(_) => Errno::EBUSY,
            DriverError::NotPermitted(_) => Errno::EPERM,
            DriverError::NoSpace(_) => Errno::ENOSPC,
            DriverError::Pipe(_) => Errno::EPIPE,
            DriverError::NoMemory(_) => Errno::ENOMEM,
            DriverError::Device { .. } => Errno::EIO,
        }
    }
}

impl From<KmdError> for DriverError {
    fn from(e: KmdError) -> DriverError {
        let d = e.detail;
        match e.errno {
            Errno::EINVAL => DriverError::InvalidArgument(d),
            Errno::ENOENT => DriverError::NotFound(d),
            Errno::EAGAIN => DriverError::Again(d),
            Errno::ETIMEDOUT => DriverError::TimedOut(d),
            Errno::ENODEV => DriverError::NoDevice(d),
            Errno::EBUSY => DriverError::Busy(d),
            Errno::EPERM => DriverError::NotPermitted(d),
            Errno::ENOSPC => DriverError::NoSpace(d),
            Errno::EPIPE => DriverError::Pipe(d),
            Errno::ENOMEM => DriverError::NoMemory(d),
            Errno::EIO => {
                DriverError::Device { code: e.device_code.unwrap_or(CompletionCode::ProgramFault), detail: d }
            }
        }
    }
}

pub type Result<T, E = DriverError> = std::result::Result<T, E>;

/// Which way a buffer moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaDirection {
    ToDevice,
    FromDevice,
}

impl DmaDirection {
    fn raw(self) -> u32 {
        match self {
            DmaDirection::ToDevice => uapi::DIR_TO_DEVICE,
            DmaDirection::FromDevice => uapi::DIR_FROM_DEVICE,
        }
    }
}

/// When a semaphore command runs relative to its slice's DMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPoint {
    Presync,
    Postsync,
}

/// A semaphore command on a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SemaphoreCommand {
    pub op: SemOp,
    pub index: u8,
    pub value: u16,
    pub at: SyncPoint,
}

/// A doorbell write at the end of a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Doorbell {
    pub addr: u64,
    pub data: u32,
    pub width: DoorbellWidth,
}

/// One slice of a buffer: which bytes move to or from which device address, and the
/// synchronisation around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    pub offset: u64,
    pub size: u64,
    pub dev_addr: u64,
    /// At most four.
    pub semaphores: Vec<SemaphoreCommand>,
    pub doorbell: Option<Doorbell>,
}

impl Slice {
    fn to_uapi(&self) -> Result<AttachSliceEntry> {
        if self.semaphores.len() > 4 {
            return Err(DriverError::InvalidArgument(format!(
                "a slice takes at most 4 semaphore commands, got {}",
                self.semaphores.len()
            )));
        }
        let mut sems = [Sem::default(); 4];
        for (raw, s) in sems.iter_mut().zip(&self.semaphores) {
            let index = s.index;
            *raw = Sem {
                val: s.value,
                index,
                presync: u8::from(s.at == SyncPoint::Presync),
                cmd: s.op as u8,
                flags: 0,
                pad: 0,
            };
        }
        let (db_addr, db_data, db_len) = match self.doorbell {
            Some(d) => (d.addr, d.data, d.width.bits()),
            None => (0, 0, 0),
        };
        Ok(AttachSliceEntry {
            size: self.size,
            sems,
            dev_addr: self.dev_addr,
            db_addr,
            db_data,
            db_len,
            offset: self.offset,
        })
    }
}

/// An open device.
pub struct Device {
    kmd: Arc<Kmd>,
    client: Arc<Client>,
}

impl Device {
    /// Starts a simulated device with its driver and opens it.
    pub fn open_simulated(config: KmdConfig) -> Result<Device> {
        Ok(Device::open(Arc::new(Kmd::new(config)?)))
    }

    /// Opens an existing driver instance as a new user.
    pub fn open(kmd: Arc<Kmd>) -> Device {
        let client = Arc::new(kmd.open());
        Device { kmd, client }
    }

    pub fn kmd(&self) -> &Arc<Kmd> {
        &self.kmd
    }

    /// Device resources and firmware version.
    pub fn status(&self) -> Result<StatusReport> {
        Ok(self.kmd.status()?)
    }

    /// A new buffer of at least `size` bytes (whole pages).
    pub fn create_buffer(&self, size: u64) -> Result<Buffer> {
        let handle = self.client.create_bo(size)?;
        let map = self.client.mmap_bo(handle)?;
        Ok(Buffer { client: self.client.clone(), handle, map, requested: size })
    }

    /// Loads a program container onto the device.
    pub fn load_program(&self, container: &[u8]) -> Result<Program> {
        Ok(Program { client: self.client.clone(), id: self.client.load_program(container)? })
    }

    /// Activates a loaded program on a free channel this device handle then owns.
    pub fn activate(&self, program: &Program) -> Result<Channel> {
        let (id, info) = self.client.activate(program.id)?;
        Ok(Channel { client: self.client.clone(), id, info })
    }

    /// Queues buffers on a channel, all or none.
    pub fn execute(&self, channel: &Channel, buffers: &[(&Buffer, DmaDirection)]) -> Result<()> {
        let entries: Vec<ExecuteEntry> =
            buffers.iter().map(|(b, d)| ExecuteEntry { handle: b.handle, dir: d.raw() }).collect();
        Ok(self.client.execute_bo(channel.id, &entries)?)
    }

    /// Queues buffers on a channel on the simulated clock: they reach it at
    /// `stamp.time_ns` (see `aicsim_abi::clock`).
    pub fn execute_at(&self, channel: &Channel, buffers: &[(&Buffer, DmaDirection)], stamp: Stamp) -> Result<()> {
        let entries: Vec<ExecuteEntry> =
            buffers.iter().map(|(b, d)| ExecuteEntry { handle: b.handle, dir: d.raw() }).collect();
        Ok(self.client.execute_bo_at(channel.id, &entries, stamp)?)
    }

    /// Simulated clock: when a buffer's latest execution completed on the device.
    pub fn completed_at(&self, buffer: &Buffer) -> Result<u64> {
        Ok(self.client.completed_at(buffer.handle)?)
    }

    /// Simulated clock: nothing stamped before `promise_ns` will be queued on `channel`,
    /// but what follows waking responses beyond the first `acked` ([`NO_PROMISE`]: no
    /// bound).
    pub fn promise(&self, channel: &Channel, promise_ns: u64, acked: u32) -> Result<()> {
        Ok(self.client.promise(channel.id, promise_ns, acked)?)
    }

    /// Simulated clock: the host's fastest turnaround from a waking response to the next
    /// element it causes on `channel`.
    pub fn set_lookahead(&self, channel: &Channel, lookahead_ns: u64) -> Result<()> {
        Ok(self.client.set_lookahead(channel.id, lookahead_ns)?)
    }

    /// Simulated clock: how far the device has simulated (ns), and the waking responses
    /// posted on `channel` by then.
    pub fn device_progress(&self, channel: &Channel) -> Result<(u64, u32)> {
        Ok(self.client.device_progress(channel.id)?)
    }

    /// Simulated clock: the device's progress counter (see [`Device::wait_progress`]).
    pub fn progress(&self) -> u32 {
        self.kmd.progress()
    }

    /// Simulated clock: waits, at most `timeout`, for the device to move past `seen`
    /// (steps it, for a manually stepped device).
    pub fn wait_progress(&self, seen: u32, timeout: Duration) {
        self.kmd.wait_progress(seen, timeout)
    }

    /// Waits for a buffer's latest execution on `channel`.
    pub fn wait(&self, channel: &Channel, buffer: &Buffer, timeout: Duration) -> Result<()> {
        let ms = timeout.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        Ok(self.client.wait_bo(buffer.handle, ms, channel.id)?)
    }

    /// The device's record of run `seq` (from 1) on `channel`, if the device still
    /// holds it.
    pub fn run_record(&self, channel: &Channel, seq: u64) -> Result<Option<RunRecord>> {
        Ok(self.client.run_record(channel.id, seq)?)
    }

    /// Records every instruction's interval in the channel's runs from now on.
    pub fn set_trace(&self, channel: &Channel, on: bool) -> Result<()> {
        Ok(self.client.set_trace(channel.id, on)?)
    }

    /// The device's statistics of run `seq` on `channel` (it keeps the latest runs).
    pub fn run_profile(&self, channel: &Channel, seq: u64) -> Result<RunProfile> {
        let bytes = self.client.read_profile(channel.id, seq)?;
        match aicsim_abi::profile::decode(&bytes) {
            Ok((got, stats)) if got == seq => Ok(stats),
            Ok((got, _)) => {
                Err(DriverError::InvalidArgument(format!("device sent the profile of run {got}, not {seq}")))
            }
            Err(e) => Err(DriverError::InvalidArgument(format!("device sent a bad profile: {e}"))),
        }
    }

    /// The device clock, to turn device cycles into time.
    pub fn clock_hz(&self) -> u64 {
        self.kmd.config().device.clock_hz
    }

    /// The device's cost model.
    pub fn cost_model(&self) -> aicsim_device::nsp::CostModel {
        self.kmd.config().device.cost
    }

    /// Queue and latency figures of the buffers' latest executions.
    pub fn perf_stats(&self, channel: &Channel, buffers: &[&Buffer]) -> Result<Vec<PerfStatsEntry>> {
        let handles: Vec<u32> = buffers.iter().map(|b| b.handle).collect();
        Ok(self.client.perf_stats_bo(channel.id, &handles)?)
    }
}

/// A buffer object in host memory, mapped. Freed on drop.
pub struct Buffer {
    client: Arc<Client>,
    handle: u32,
    map: BoMapping,
    requested: u64,
}

impl Buffer {
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// The size asked for (the allocation is rounded up to pages).
    pub fn len(&self) -> u64 {
        self.requested
    }

    pub fn is_empty(&self) -> bool {
        self.requested == 0
    }

    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        Ok(self.map.write(offset, data)?)
    }

    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        Ok(self.map.read(offset, buf)?)
    }

    /// Describes how this buffer moves on `channel`.
    pub fn attach_slices(&self, channel: &Channel, dir: DmaDirection, slices: &[Slice]) -> Result<()> {
        let raw = slices.iter().map(Slice::to_uapi).collect::<Result<Vec<_>>>()?;
        Ok(self.client.attach_slice_bo(self.handle, channel.id, dir.raw(), &raw)?)
    }

    pub fn detach_slices(&self) -> Result<()> {
        Ok(self.client.detach_slice_bo(self.handle)?)
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let _ = self.client.free_bo(self.handle);
    }
}

/// A program loaded on the device. Unloaded on drop (after its channels are gone).
pub struct Program {
    client: Arc<Client>,
    id: u32,
}

impl Program {
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.client.unload_program(self.id);
    }
}

/// A program activated on a DMA Bridge Channel. Deactivated on drop.
pub struct Channel {
    client: Arc<Client>,
    id: u32,
    info: ActivationInfo,
}

impl Channel {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// DDR, doorbell and semaphores the device assigned to the activation.
    pub fn activation(&self) -> &ActivationInfo {
        &self.info
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let _ = self.client.deactivate(self.id);
    }
}
