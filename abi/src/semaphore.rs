//! Device semaphores: 32 counters of 12 bits. This module is the pure arithmetic of a
//! semaphore command; the values themselves live in shared memory at
//! [`crate::layout::SEMAPHORES_OFFSET`] and only the firmware writes them.

use crate::dbc::{SemOp, SEM_VALUE_MAX};

/// What applying a semaphore command to a value does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SemOutcome {
    /// The command is satisfied; the semaphore now holds this value.
    Proceed(u16),
    /// A wait that is not satisfied yet; nothing changed.
    Blocked,
}

/// Applies `op` with operand `operand` to a semaphore holding `current`.
///
/// Counters are 12 bits wide and wrap like the hardware's: INC of 4095 gives 0 and
/// DEC of 0 gives 4095. `P` waits for a nonzero value and then decrements it.
pub fn apply(op: SemOp, operand: u16, current: u16) -> SemOutcome {
    let mask = SEM_VALUE_MAX;
    let current = current & mask;
    let operand = operand & mask;
    match op {
        SemOp::Nop => SemOutcome::Proceed(current),
        SemOp::Init => SemOutcome::Proceed(operand),
        SemOp::Inc => SemOutcome::Proceed(current.wrapping_add(operand) & mask),
        SemOp::Dec => SemOutcome::Proceed(current.wrapping_sub(operand) & mask),
        SemOp::WaitEq if current == operand => SemOutcome::Proceed(current),
        SemOp::WaitGe if current >= operand => SemOutcome::Proceed(current),
        SemOp::P if current > 0 => SemOutcome::Proceed(current - 1),
        SemOp::WaitEq | SemOp::WaitGe | SemOp::P => SemOutcome::Blocked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_wrap_at_twelve_bits() {
        assert_eq!(apply(SemOp::Inc, 1, 4095), SemOutcome::Proceed(0));
        assert_eq!(apply(SemOp::Dec, 1, 0), SemOutcome::Proceed(4095));
        assert_eq!(apply(SemOp::Init, 0xFFFF, 3), SemOutcome::Proceed(0xFFF));
    }

    #[test]
    fn waits_block_until_satisfied() {
        assert_eq!(apply(SemOp::WaitEq, 3, 2), SemOutcome::Blocked);
        assert_eq!(apply(SemOp::WaitEq, 3, 3), SemOutcome::Proceed(3));
        assert_eq!(apply(SemOp::WaitGe, 3, 2), SemOutcome::Blocked);
        assert_eq!(apply(SemOp::WaitGe, 3, 9), SemOutcome::Proceed(9));
        assert_eq!(apply(SemOp::P, 0, 0), SemOutcome::Blocked);
        assert_eq!(apply(SemOp::P, 0, 2), SemOutcome::Proceed(1));
    }
}
