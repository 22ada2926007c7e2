//! The NSP instruction set, v0: fixed-size little-endian records that a program
//! container carries per core, and their decoded form.
//!
//! v0 is the foundation's minimal set — DMA between device DDR and VTCM, element-wise
//! vector arithmetic, end — enough for a real program to move and compute data.

use bytemuck::{Pod, Zeroable};
use core::mem::size_of;

/// One encoded instruction, 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Instruction {
    pub opcode: u16,
    pub dtype: u16,
    /// Bytes for DMA, elements for vector ops.
    pub count: u32,
    pub dst: u64,
    pub src0: u64,
    pub src1: u64,
}
const _: () = assert!(size_of::<Instruction>() == 32);

/// Bytes of one encoded instruction.
pub const INSTRUCTION_BYTES: usize = size_of::<Instruction>();

const OP_END: u16 = 0;
const OP_DMA_IN: u16 = 1;
const OP_DMA_OUT: u16 = 2;
const OP_VEC_ADD: u16 = 3;
const OP_VEC_MUL: u16 = 4;

/// Element type of a vector operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32 = 0,
    I32 = 1,
}

impl DType {
    pub fn from_raw(raw: u16) -> Option<DType> {
        match raw {
            0 => Some(DType::F32),
            1 => Some(DType::I32),
            _ => None,
        }
    }

    pub fn bytes(self) -> u64 {
        4
    }
}

/// Element-wise binary operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Mul,
}

/// A decoded instruction. Offsets are VTCM offsets of the core running it, or DDR
/// offsets relative to the activation's DDR allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    End,
    /// DDR -> VTCM.
    DmaIn {
        ddr: u64,
        vtcm: u64,
        bytes: u32,
    },
    /// VTCM -> DDR.
    DmaOut {
        vtcm: u64,
        ddr: u64,
        bytes: u32,
    },
    /// `dst[i] = a[i] op b[i]` for `count` elements, all in VTCM.
    Binary {
        op: BinaryOp,
        dtype: DType,
        dst: u64,
        a: u64,
        b: u64,
        count: u32,
    },
}

/// Why an instruction record does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("unknown dtype {0}")]
    UnknownDType(u16),
    #[error("unused field {0} is nonzero")]
    NonzeroUnused(&'static str),
}

impl Instruction {
    pub fn encode(op: Op) -> Instruction {
        match op {
            Op::End => Instruction { opcode: OP_END, ..Default::default() },
            Op::DmaIn { ddr, vtcm, bytes } => {
                Instruction { opcode: OP_DMA_IN, count: bytes, dst: vtcm, src0: ddr, ..Default::default() }
            }
            Op::DmaOut { vtcm, ddr, bytes } => {
                Instruction { opcode: OP_DMA_OUT, count: bytes, dst: ddr, src0: vtcm, ..Default::default() }
            }
            Op::Binary { op, dtype, dst, a, b, count } => Instruction {
                opcode: match op {
                    BinaryOp::Add => OP_VEC_ADD,
                    BinaryOp::Mul => OP_VEC_MUL,
                },
                dtype: dtype as u16,
                count,
                dst,
                src0: a,
                src1: b,
            },
        }
    }

    pub fn decode(&self) -> Result<Op, DecodeError> {
        let no_dtype = |i: &Instruction| if i.dtype != 0 { Err(DecodeError::NonzeroUnused("dtype")) } else { Ok(()) };
        let no_src1 = |i: &Instruction| if i.src1 != 0 { Err(DecodeError::NonzeroUnused("src1")) } else { Ok(()) };
        match self.opcode {
            OP_END => {
                if *self != (Instruction { opcode: OP_END, ..Default::default() }) {
                    return Err(DecodeError::NonzeroUnused("end operands"));
                }
                Ok(Op::End)
            }
            OP_DMA_IN => {
                no_dtype(self)?;
                no_src1(self)?;
                Ok(Op::DmaIn { ddr: self.src0, vtcm: self.dst, bytes: self.count })
            }
            OP_DMA_OUT => {
                no_dtype(self)?;
                no_src1(self)?;
                Ok(Op::DmaOut { vtcm: self.src0, ddr: self.dst, bytes: self.count })
            }
            OP_VEC_ADD | OP_VEC_MUL => Ok(Op::Binary {
                op: if self.opcode == OP_VEC_ADD { BinaryOp::Add } else { BinaryOp::Mul },
                dtype: DType::from_raw(self.dtype).ok_or(DecodeError::UnknownDType(self.dtype))?,
                dst: self.dst,
                a: self.src0,
                b: self.src1,
                count: self.count,
            }),
            other => Err(DecodeError::UnknownOpcode(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_roundtrips_through_its_record() {
        let ops = [
            Op::End,
            Op::DmaIn { ddr: 1, vtcm: 2, bytes: 3 },
            Op::DmaOut { vtcm: 4, ddr: 5, bytes: 6 },
            Op::Binary { op: BinaryOp::Add, dtype: DType::F32, dst: 7, a: 8, b: 9, count: 10 },
            Op::Binary { op: BinaryOp::Mul, dtype: DType::I32, dst: 11, a: 12, b: 13, count: 14 },
        ];
        for op in ops {
            assert_eq!(Instruction::encode(op).decode(), Ok(op));
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert_eq!(Instruction { opcode: 99, ..Default::default() }.decode(), Err(DecodeError::UnknownOpcode(99)));
        assert_eq!(
            Instruction { opcode: OP_VEC_ADD, dtype: 7, ..Default::default() }.decode(),
            Err(DecodeError::UnknownDType(7))
        );
        assert!(Instruction { opcode: OP_END, count: 1, ..Default::default() }.decode().is_err());
    }
}
