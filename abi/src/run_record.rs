//! Run records: what the device tells the host about each program run, in device
//! cycles. The firmware keeps a ring of [`RUN_RECORDS`] per channel at
//! [`crate::layout::RUN_RECORDS_OFFSET`]; run `seq` (counted from 1 per activation)
//! lives in slot `(seq - 1) % RUN_RECORDS`. A record is complete once its run's outputs
//! have been taken, which the host knows because it waited for exactly that.

use bytemuck::{Pod, Zeroable};
use core::mem::size_of;

/// Records kept per channel.
pub const RUN_RECORDS: u64 = 256;

/// One program run, 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RunRecord {
    /// Which run of the activation this is, from 1.
    pub seq: u64,
    /// When the activation's cores last became free (the previous run's end, or the
    /// activation).
    pub idle_since_cycle: u64,
    /// When the doorbell had rung and every input had landed.
    pub ready_cycle: u64,
    pub start_cycle: u64,
    pub end_cycle: u64,
    /// When the last output of the run was taken by its output element; 0 until then.
    pub outputs_taken_cycle: u64,
    /// 0 on success, otherwise a [`crate::dbc::CompletionCode`].
    pub status: u32,
    /// For a run whose instruction faulted: 1 + the program core (stream) it ran on;
    /// 0 otherwise.
    pub fault_core: u32,
    /// For a faulted instruction: the entry it belongs to (high 32 bits) and its index
    /// in that entry's stream (low 32 bits).
    pub fault_instruction: u64,
}
const _: () = assert!(size_of::<RunRecord>() == 64);

/// Byte offset of `outputs_taken_cycle` inside a record.
pub const OUTPUTS_TAKEN_FIELD: u64 = 40;

impl RunRecord {
    /// The faulted instruction: (entry, program core, index in the entry's stream).
    pub fn fault(&self) -> Option<(usize, usize, usize)> {
        let core = self.fault_core.checked_sub(1)?;
        Some(((self.fault_instruction >> 32) as usize, core as usize, (self.fault_instruction & 0xffff_ffff) as usize))
    }

    /// Cycles the program ran.
    pub fn exec_cycles(&self) -> u64 {
        self.end_cycle.saturating_sub(self.start_cycle)
    }

    /// Cycles the cores sat idle before this run could start (waiting for its inputs).
    pub fn input_wait_cycles(&self) -> u64 {
        self.start_cycle.saturating_sub(self.idle_since_cycle)
    }

    /// Cycles from the program's end until its outputs were taken.
    pub fn output_wait_cycles(&self) -> u64 {
        self.outputs_taken_cycle.saturating_sub(self.end_cycle)
    }
}
