//! The control path (the driver's MANAGE messages): load and unload programs, activate
//! and deactivate them on a channel, and query device status. One request at a time
//! travels through a mailbox in shared memory, guarded by a state word
//! ([`crate::layout::CTRL_STATE`], see [`MailboxState`]) that both sides change only by
//! compare-and-exchange:
//!
//! 1. the host, finding the mailbox `Free` or `Cancelled`, writes a [`ControlRequest`]
//!    carrying the next sequence number at [`crate::layout::CTRL_REQUEST_OFFSET`], then
//!    moves the state to `Posted(seq)` (Release) and wakes the device;
//! 2. the device moves `Posted(seq)` to `Taken(seq)` before it reads the body, so the
//!    host never rewrites a body the device is reading (no torn command), and a request
//!    runs at most once;
//! 3. the device answers with a [`ControlResponse`] (plus a UTF-8 message when it
//!    refuses) at [`crate::layout::CTRL_RESPONSE_OFFSET`], stores the sequence number in
//!    [`crate::layout::CTRL_RSP_SEQ`] (Release), moves the state to `Free(seq)` and
//!    wakes the host;
//! 4. a host that gave up waiting moves `Posted(seq)` to `Cancelled(seq)`: if that
//!    succeeds the device never runs the request; if the device had already taken it,
//!    the host knows the command may still take effect and settles it when the answer
//!    comes (the driver undoes a late load or activation nobody is waiting for).

use bytemuck::{Pod, Zeroable};
use core::mem::size_of;
use core::sync::atomic::Ordering::{Acquire, Release, SeqCst};

use crate::layout;
use crate::memory::SharedMemory;

/// Values a control request or response carries (their meaning depends on the command).
pub const CONTROL_VALUES: usize = 7;

/// The value words of a control request or response.
pub type ControlValues = [u64; CONTROL_VALUES];

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ControlRequest {
    pub opcode: u32,
    /// The sequence number the mailbox state carries while this request is in it
    /// ([`MailboxState::seq`]); a body whose number differs is not run.
    pub seq: u32,
    pub args: [u64; 6],
}
const _: () = assert!(size_of::<ControlRequest>() == 56);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ControlResponse {
    /// A [`ControlStatus`].
    pub status: u32,
    /// Bytes of UTF-8 message that follow the response header.
    pub message_len: u32,
    pub values: ControlValues,
}
const _: () = assert!(size_of::<ControlResponse>() == 64);

/// Bytes of a control response header.
pub const RESPONSE_HEADER_BYTES: u64 = size_of::<ControlResponse>() as u64;

/// A control command, typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlCommand {
    /// Read a program container from host memory, validate it and keep it.
    LoadProgram {
        host_addr: u64,
        len: u64,
    },
    UnloadProgram {
        program: u32,
    },
    /// Place a loaded program on free cores with its own DDR and semaphores, and bind
    /// it to channel `dbc`.
    Activate {
        program: u32,
        dbc: u32,
    },
    Deactivate {
        dbc: u32,
    },
    Status,
    /// Record every instruction's interval in the runs of the activation on `dbc`.
    Trace {
        dbc: u32,
        on: bool,
    },
    /// Write the profile of run `seq` of the activation on `dbc` to host memory (at most
    /// `len` bytes). Answers `[bytes needed, bytes written]`; 0 written if `len` is too
    /// small.
    ReadProfile {
        dbc: u32,
        seq: u64,
        host_addr: u64,
        len: u64,
    },
}

const OP_LOAD: u32 = 1;
const OP_UNLOAD: u32 = 2;
const OP_ACTIVATE: u32 = 3;
const OP_DEACTIVATE: u32 = 4;
const OP_STATUS: u32 = 5;
const OP_TRACE: u32 = 6;
const OP_READ_PROFILE: u32 = 7;

impl ControlCommand {
    pub fn encode(self) -> ControlRequest {
        let (opcode, args) = match self {
            ControlCommand::LoadProgram { host_addr, len } => (OP_LOAD, [host_addr, len, 0, 0, 0, 0]),
            ControlCommand::UnloadProgram { program } => (OP_UNLOAD, [program.into(), 0, 0, 0, 0, 0]),
            ControlCommand::Activate { program, dbc } => (OP_ACTIVATE, [program.into(), dbc.into(), 0, 0, 0, 0]),
            ControlCommand::Deactivate { dbc } => (OP_DEACTIVATE, [dbc.into(), 0, 0, 0, 0, 0]),
            ControlCommand::Status => (OP_STATUS, [0; 6]),
            ControlCommand::Trace { dbc, on } => (OP_TRACE, [dbc.into(), on.into(), 0, 0, 0, 0]),
            ControlCommand::ReadProfile { dbc, seq, host_addr, len } => {
                (OP_READ_PROFILE, [dbc.into(), seq, host_addr, len, 0, 0])
            }
        };
        ControlRequest { opcode, seq: 0, args }
    }

    /// `None` for an unknown opcode or an argument that does not fit its field.
    pub fn decode(req: &ControlRequest) -> Option<ControlCommand> {
        let a = req.args;
        let small = |v: u64| u32::try_from(v).ok();
        Some(match req.opcode {
            OP_LOAD => ControlCommand::LoadProgram { host_addr: a[0], len: a[1] },
            OP_UNLOAD => ControlCommand::UnloadProgram { program: small(a[0])? },
            OP_ACTIVATE => ControlCommand::Activate { program: small(a[0])?, dbc: small(a[1])? },
            OP_DEACTIVATE => ControlCommand::Deactivate { dbc: small(a[0])? },
            OP_STATUS => ControlCommand::Status,
            OP_TRACE if a[1] <= 1 => ControlCommand::Trace { dbc: small(a[0])?, on: a[1] == 1 },
            OP_READ_PROFILE => ControlCommand::ReadProfile { dbc: small(a[0])?, seq: a[1], host_addr: a[2], len: a[3] },
            _ => return None,
        })
    }
}

/// Outcome of a control command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ControlStatus {
    Ok = 0,
    InvalidArgument = 1,
    NotFound = 2,
    NoResources = 3,
    Busy = 4,
    /// The program container failed the device's validation.
    Rejected = 5,
    /// The channel an activation names already has one (the host's view of the channel
    /// is behind the device's).
    ChannelInUse = 6,
}

impl ControlStatus {
    pub fn from_raw(raw: u32) -> Option<ControlStatus> {
        Some(match raw {
            0 => ControlStatus::Ok,
            1 => ControlStatus::InvalidArgument,
            2 => ControlStatus::NotFound,
            3 => ControlStatus::NoResources,
            4 => ControlStatus::Busy,
            5 => ControlStatus::Rejected,
            6 => ControlStatus::ChannelInUse,
            _ => return None,
        })
    }
}

/// What the device tells the host about a new activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivationInfo {
    /// Device address of the activation's DDR allocation.
    pub ddr_base: u64,
    pub ddr_bytes: u64,
    /// Doorbell address that starts the program.
    pub doorbell: u64,
    /// Each input's last element increments this semaphore.
    pub sem_inputs: u8,
    /// The program increments this once per output when it ends.
    pub sem_outputs: u8,
    /// Bit per NSP core the activation occupies.
    pub core_mask: u64,
}

impl ActivationInfo {
    pub fn to_values(self) -> ControlValues {
        [
            self.ddr_base,
            self.ddr_bytes,
            self.doorbell,
            self.sem_inputs.into(),
            self.sem_outputs.into(),
            self.core_mask,
            0,
        ]
    }

    pub fn from_values(v: ControlValues) -> ActivationInfo {
        ActivationInfo {
            ddr_base: v[0],
            ddr_bytes: v[1],
            doorbell: v[2],
            sem_inputs: v[3] as u8,
            sem_outputs: v[4] as u8,
            core_mask: v[5],
        }
    }
}

/// The device's answer to [`ControlCommand::Status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusReport {
    pub nsp_total: u32,
    pub nsp_free: u32,
    pub ddr_total: u64,
    pub ddr_free: u64,
    pub fw_version: u32,
    pub programs_loaded: u32,
    /// Bit per channel with an activation.
    pub active_channels: u32,
}

impl StatusReport {
    pub fn to_values(self) -> ControlValues {
        [
            self.nsp_total.into(),
            self.nsp_free.into(),
            self.ddr_total,
            self.ddr_free,
            self.fw_version.into(),
            self.programs_loaded.into(),
            self.active_channels.into(),
        ]
    }

    pub fn from_values(v: ControlValues) -> StatusReport {
        StatusReport {
            nsp_total: v[0] as u32,
            nsp_free: v[1] as u32,
            ddr_total: v[2],
            ddr_free: v[3],
            fw_version: v[4] as u32,
            programs_loaded: v[5] as u32,
            active_channels: v[6] as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_roundtrip() {
        for c in [
            ControlCommand::LoadProgram { host_addr: 0x1234, len: 99 },
            ControlCommand::UnloadProgram { program: 3 },
            ControlCommand::Activate { program: 1, dbc: 15 },
            ControlCommand::Deactivate { dbc: 2 },
            ControlCommand::Status,
            ControlCommand::Trace { dbc: 4, on: true },
            ControlCommand::ReadProfile { dbc: 2, seq: 99, host_addr: 0x5000, len: 4096 },
        ] {
            assert_eq!(ControlCommand::decode(&c.encode()), Some(c));
        }
        assert_eq!(ControlCommand::decode(&ControlRequest { opcode: 77, ..Default::default() }), None);
    }
}

/// Where the request in the control mailbox is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Answered (or never used): the host may post.
    Free = 0,
    /// Written by the host, not yet taken by the device.
    Posted = 1,
    /// The device is running it; the host must not touch the mailbox.
    Taken = 2,
    /// Withdrawn by the host before the device took it: it will never run.
    Cancelled = 3,
}

/// The mailbox state word: a 30-bit wrapping sequence number and a [`Phase`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxState {
    pub seq: u32,
    pub phase: Phase,
}

/// Sequence numbers wrap at 2^30.
pub const SEQ_MASK: u32 = (1 << 30) - 1;

impl MailboxState {
    pub fn to_raw(self) -> u32 {
        (self.seq & SEQ_MASK) << 2 | self.phase as u32
    }

    pub fn from_raw(raw: u32) -> MailboxState {
        let phase = match raw & 3 {
            0 => Phase::Free,
            1 => Phase::Posted,
            2 => Phase::Taken,
            _ => Phase::Cancelled,
        };
        MailboxState { seq: raw >> 2, phase }
    }

    fn at(seq: u32, phase: Phase) -> u32 {
        MailboxState { seq, phase }.to_raw()
    }
}

/// The mailbox's state now.
pub fn mailbox_state<M: SharedMemory + ?Sized>(mem: &M) -> MailboxState {
    MailboxState::from_raw(mem.load_u32(layout::CTRL_STATE, Acquire))
}

/// Host: posts `req` with the next sequence number. `Err` with the state found if the
/// mailbox is not free (the device holds an earlier request).
pub fn post<M: SharedMemory + ?Sized>(mem: &M, mut req: ControlRequest) -> Result<u32, MailboxState> {
    let raw = mem.load_u32(layout::CTRL_STATE, Acquire);
    let state = MailboxState::from_raw(raw);
    if !matches!(state.phase, Phase::Free | Phase::Cancelled) {
        return Err(state);
    }
    let seq = state.seq.wrapping_add(1) & SEQ_MASK;
    req.seq = seq;
    // The region is large enough for the mailbox by the layout's construction.
    let _ = mem.write(layout::CTRL_REQUEST_OFFSET, bytemuck::bytes_of(&req));
    // SeqCst (at least Release): the body is visible before the state that posts it.
    mem.compare_exchange_u32(layout::CTRL_STATE, raw, MailboxState::at(seq, Phase::Posted), SeqCst)
        .map_err(MailboxState::from_raw)?;
    Ok(seq)
}

/// Host: withdraws request `seq` if the device has not taken it. `Ok(())`: it will never
/// run. `Err` with the state found otherwise (taken: it may still run; free: answered).
pub fn cancel<M: SharedMemory + ?Sized>(mem: &M, seq: u32) -> Result<(), MailboxState> {
    mem.compare_exchange_u32(
        layout::CTRL_STATE,
        MailboxState::at(seq, Phase::Posted),
        MailboxState::at(seq, Phase::Cancelled),
        SeqCst,
    )
    .map(drop)
    .map_err(MailboxState::from_raw)
}

/// Whether the device has answered request `seq`.
pub fn answered<M: SharedMemory + ?Sized>(mem: &M, seq: u32) -> bool {
    mem.load_u32(layout::CTRL_RSP_SEQ, Acquire) == seq
}

/// Device: takes the posted request, if there is one: its sequence number and body.
pub fn take<M: SharedMemory + ?Sized>(mem: &M) -> Option<(u32, ControlRequest)> {
    let state = mailbox_state(mem);
    if state.phase != Phase::Posted {
        return None;
    }
    let posted = state.to_raw();
    mem.compare_exchange_u32(layout::CTRL_STATE, posted, MailboxState::at(state.seq, Phase::Taken), SeqCst).ok()?;
    let mut raw = [0u8; size_of::<ControlRequest>()];
    let _ = mem.read(layout::CTRL_REQUEST_OFFSET, &mut raw);
    Some((state.seq, bytemuck::pod_read_unaligned(&raw)))
}

/// Device: answers request `seq` with `rsp` and `message`, then frees the mailbox.
pub fn answer<M: SharedMemory + ?Sized>(mem: &M, seq: u32, rsp: ControlResponse, message: &[u8]) {
    let _ = mem.write(layout::CTRL_RESPONSE_OFFSET, bytemuck::bytes_of(&rsp));
    let _ = mem.write(layout::CTRL_RESPONSE_OFFSET + RESPONSE_HEADER_BYTES, message);
    // Release: the response is visible before the sequence number that announces it.
    mem.store_u32(layout::CTRL_RSP_SEQ, seq, Release);
    let _ = mem.compare_exchange_u32(
        layout::CTRL_STATE,
        MailboxState::at(seq, Phase::Taken),
        MailboxState::at(seq, Phase::Free),
        SeqCst,
    );
    mem.wake(layout::CTRL_RSP_SEQ);
}

/// Device, at boot: a request the previous firmware had taken died with it; the mailbox
/// is free again (its host learns the command was dropped: free, never answered). A
/// posted request the old firmware never took is left for the new one to run.
pub fn reboot<M: SharedMemory + ?Sized>(mem: &M) {
    let state = mailbox_state(mem);
    if state.phase == Phase::Taken {
        mem.store_u32(layout::CTRL_STATE, MailboxState::at(state.seq, Phase::Free), SeqCst);
    }
}

/// Device: republishes its resource report in [`layout::STATUS_BLOCK`] (a seqlock: the
/// word is odd while the values change).
pub fn publish_status<M: SharedMemory + ?Sized>(mem: &M, report: StatusReport) {
    let seq = mem.load_u32(layout::STATUS_BLOCK, Acquire);
    let writing = seq | 1;
    mem.store_u32(layout::STATUS_BLOCK, writing, SeqCst);
    for (k, v) in report.to_values().into_iter().enumerate() {
        mem.store_u64(layout::STATUS_BLOCK + 8 + 8 * k as u64, v, Release);
    }
    mem.store_u32(layout::STATUS_BLOCK, writing.wrapping_add(1), Release);
}

/// The device's last published resource report; `None` before the device published one
/// (or while it is being rewritten, after a few tries).
pub fn published_status<M: SharedMemory + ?Sized>(mem: &M) -> Option<StatusReport> {
    for _ in 0..64 {
        let before = mem.load_u32(layout::STATUS_BLOCK, Acquire);
        if before == 0 || before & 1 == 1 {
            if before == 0 {
                return None;
            }
            core::hint::spin_loop();
            continue;
        }
        let mut values = [0u64; CONTROL_VALUES];
        for (k, v) in values.iter_mut().enumerate() {
            *v = mem.load_u64(layout::STATUS_BLOCK + 8 + 8 * k as u64, Acquire);
        }
        if mem.load_u32(layout::STATUS_BLOCK, Acquire) == before {
            return Some(StatusReport::from_values(values));
        }
    }
    None
}
