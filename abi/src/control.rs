//! The control path (the driver's MANAGE messages): load and unload programs, activate
//! and deactivate them on a channel, and query device status. One request at a time
//! travels through a mailbox in shared memory:
//!
//! 1. the host writes a [`ControlRequest`] at [`crate::layout::CTRL_REQUEST_OFFSET`],
//!    then increments [`crate::layout::CTRL_REQ_SEQ`] (Release) and wakes the device;
//! 2. the device answers with a [`ControlResponse`] (plus a UTF-8 message when it
//!    refuses) at [`crate::layout::CTRL_RESPONSE_OFFSET`], then stores the request's
//!    sequence number in [`crate::layout::CTRL_RSP_SEQ`] (Release) and wakes the host.

use bytemuck::{Pod, Zeroable};
use core::mem::size_of;

/// Values a control request or response carries (their meaning depends on the command).
pub const CONTROL_VALUES: usize = 7;

/// The value words of a control request or response.
pub type ControlValues = [u64; CONTROL_VALUES];

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ControlRequest {
    pub opcode: u32,
    pub reserved: u32,
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
        ControlRequest { opcode, reserved: 0, args }
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
