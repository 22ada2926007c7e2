//! One NSP core: its VTCM, the load-time validation of an instruction stream against
//! it, and the interpreter that runs a validated stream.
//!
//! Timing here is the foundation's simple per-instruction cost ([`CostModel`]); the
//! discrete-event model of engines and shared DDR bandwidth replaces it later.

use alloc::vec;
use alloc::vec::Vec;

use crate::isa::{BinaryOp, DType, Instruction, Op};
use crate::memory::SharedMemory;

/// Per-instruction cycle costs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostModel {
    /// Fixed cycles to start one DMA transfer.
    pub dma_setup_cycles: u64,
    /// DMA throughput of one core.
    pub dma_bytes_per_cycle: u64,
    /// HVX vector width: bytes processed per cycle by an element-wise op.
    pub hvx_bytes_per_cycle: u64,
    /// Fixed cycles to issue any compute instruction.
    pub issue_cycles: u64,
}

impl Default for CostModel {
    fn default() -> CostModel {
        // 128-byte HVX vectors; DMA at ~64 B/cycle per core at ~1.4 GHz (~90 GB/s).
        CostModel { dma_setup_cycles: 200, dma_bytes_per_cycle: 64, hvx_bytes_per_cycle: 128, issue_cycles: 4 }
    }
}

/// What is wrong with an instruction stream, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("core {core}, instruction {index}: {problem}")]
pub struct ProgramError {
    pub core: u32,
    pub index: usize,
    pub problem: StreamProblem,
}

/// The reason inside a [`ProgramError`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamProblem {
    #[error("cannot decode: {0}")]
    Decode(#[from] crate::isa::DecodeError),
    #[error("VTCM range [{start:#x}, {start:#x} + {len:#x}) exceeds the core's {vtcm_bytes:#x}-byte VTCM")]
    VtcmOverflow { start: u64, len: u64, vtcm_bytes: u64 },
    #[error("DDR range [{start:#x}, {start:#x} + {len:#x}) exceeds the program's {ddr_bytes:#x}-byte DDR allocation")]
    DdrOverflow { start: u64, len: u64, ddr_bytes: u64 },
    #[error("zero-length operation")]
    Empty,
    #[error("stream does not end with End")]
    MissingEnd,
    #[error("instruction after End")]
    AfterEnd,
}

fn within(start: u64, len: u64, size: u64) -> bool {
    start.checked_add(len).is_some_and(|end| end <= size)
}

/// Decodes and checks a core's stream: every operand inside the core's VTCM or the
/// program's DDR allocation, nothing empty, exactly one End, at the end.
pub fn validate_stream(
    core: u32,
    stream: &[Instruction],
    vtcm_bytes: u64,
    ddr_bytes: u64,
) -> Result<Vec<Op>, ProgramError> {
    let mut ops = Vec::with_capacity(stream.len());
    for (index, record) in stream.iter().enumerate() {
        let fail = |problem| ProgramError { core, index, problem };
        if ops.last() == Some(&Op::End) {
            return Err(fail(StreamProblem::AfterEnd));
        }
        let op = record.decode().map_err(|e| fail(e.into()))?;
        let vtcm = |start: u64, len: u64| {
            if within(start, len, vtcm_bytes) {
                Ok(())
            } else {
                Err(fail(StreamProblem::VtcmOverflow { start, len, vtcm_bytes }))
            }
        };
        let ddr = |start: u64, len: u64| {
            if within(start, len, ddr_bytes) {
                Ok(())
            } else {
                Err(fail(StreamProblem::DdrOverflow { start, len, ddr_bytes }))
            }
        };
        match op {
            Op::End => {}
            Op::DmaIn { ddr: d, vtcm: v, bytes } | Op::DmaOut { vtcm: v, ddr: d, bytes } => {
                if bytes == 0 {
                    return Err(fail(StreamProblem::Empty));
                }
                ddr(d, u64::from(bytes))?;
                vtcm(v, u64::from(bytes))?;
            }
            Op::Binary { dtype, dst, a, b, count, .. } => {
                if count == 0 {
                    return Err(fail(StreamProblem::Empty));
                }
                let len = u64::from(count) * dtype.bytes();
                vtcm(dst, len)?;
                vtcm(a, len)?;
                vtcm(b, len)?;
            }
        }
        ops.push(op);
    }
    if ops.last() != Some(&Op::End) {
        return Err(ProgramError { core, index: stream.len(), problem: StreamProblem::MissingEnd });
    }
    Ok(ops)
}

/// Why a validated stream failed while running (only reachable through a device fault
/// such as DDR that vanished under it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("instruction {index} faulted")]
pub struct ExecFault {
    pub index: usize,
}

/// One NSP core.
pub struct NspCore {
    vtcm: Vec<u8>,
}

impl NspCore {
    /// A core with `vtcm_bytes` of VTCM. The allocation is zeroed lazily by the OS, so
    /// idle cores cost no memory.
    pub fn new(vtcm_bytes: u64) -> NspCore {
        NspCore { vtcm: vec![0; vtcm_bytes as usize] }
    }

    pub fn vtcm_bytes(&self) -> u64 {
        self.vtcm.len() as u64
    }

    /// Runs a validated stream; `ddr_base` is the region offset of the activation's DDR.
    /// Returns the cycles it took.
    pub fn run<M: SharedMemory>(
        &mut self,
        ops: &[Op],
        ddr_base: u64,
        mem: &M,
        cost: &CostModel,
    ) -> Result<u64, ExecFault> {
        let mut cycles = 0u64;
        for (index, op) in ops.iter().enumerate() {
            let fault = ExecFault { index };
            match *op {
                Op::End => break,
                Op::DmaIn { ddr, vtcm, bytes } => {
                    let dst = span_mut(&mut self.vtcm, vtcm, u64::from(bytes)).ok_or(fault)?;
                    mem.read(ddr_base + ddr, dst).map_err(|_| fault)?;
                    cycles += cost.dma_setup_cycles + u64::from(bytes).div_ceil(cost.dma_bytes_per_cycle);
                }
                Op::DmaOut { vtcm, ddr, bytes } => {
                    let src = span(&self.vtcm, vtcm, u64::from(bytes)).ok_or(fault)?;
                    mem.write(ddr_base + ddr, src).map_err(|_| fault)?;
                    cycles += cost.dma_setup_cycles + u64::from(bytes).div_ceil(cost.dma_bytes_per_cycle);
                }
                Op::Binary { op, dtype, dst, a, b, count } => {
                    binary(&mut self.vtcm, op, dtype, dst, a, b, count).ok_or(fault)?;
                    let bytes = u64::from(count) * dtype.bytes();
                    cycles += cost.issue_cycles + bytes.div_ceil(cost.hvx_bytes_per_cycle);
                }
            }
        }
        Ok(cycles)
    }
}

fn span(bytes: &[u8], start: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(start).ok()?;
    bytes.get(start..start.checked_add(usize::try_from(len).ok()?)?)
}

fn span_mut(bytes: &mut [u8], start: u64, len: u64) -> Option<&mut [u8]> {
    let start = usize::try_from(start).ok()?;
    bytes.get_mut(start..start.checked_add(usize::try_from(len).ok()?)?)
}

fn word(vtcm: &[u8], at: u64) -> Option<[u8; 4]> {
    span(vtcm, at, 4)?.try_into().ok()
}

fn binary(vtcm: &mut [u8], op: BinaryOp, dtype: DType, dst: u64, a: u64, b: u64, count: u32) -> Option<()> {
    for i in 0..u64::from(count) {
        let x = word(vtcm, a + 4 * i)?;
        let y = word(vtcm, b + 4 * i)?;
        let out = match dtype {
            DType::F32 => {
                let (x, y) = (f32::from_le_bytes(x), f32::from_le_bytes(y));
                match op {
                    BinaryOp::Add => x + y,
                    BinaryOp::Mul => x * y,
                }
                .to_le_bytes()
            }
            DType::I32 => {
                let (x, y) = (i32::from_le_bytes(x), i32::from_le_bytes(y));
                match op {
                    BinaryOp::Add => x.wrapping_add(y),
                    BinaryOp::Mul => x.wrapping_mul(y),
                }
                .to_le_bytes()
            }
        };
        span_mut(vtcm, dst + 4 * i, 4)?.copy_from_slice(&out);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::HeapMemory;

    fn enc(ops: &[Op]) -> Vec<Instruction> {
        ops.iter().map(|&o| Instruction::encode(o)).collect()
    }

    #[test]
    fn validation_names_core_index_and_bound() {
        let stream = enc(&[Op::DmaIn { ddr: 0, vtcm: 4000, bytes: 200 }, Op::End]);
        let err = validate_stream(3, &stream, 4096, 1 << 20).unwrap_err();
        assert_eq!(err.core, 3);
        assert_eq!(err.index, 0);
        assert!(matches!(err.problem, StreamProblem::VtcmOverflow { vtcm_bytes: 4096, .. }));
        let text = alloc::format!("{err}");
        assert!(text.contains("core 3, instruction 0") && text.contains("0x1000-byte VTCM"), "{text}");

        let stream = enc(&[Op::DmaOut { vtcm: 0, ddr: 900, bytes: 200 }, Op::End]);
        let err = validate_stream(0, &stream, 4096, 1024).unwrap_err();
        assert!(matches!(err.problem, StreamProblem::DdrOverflow { ddr_bytes: 1024, .. }));

        assert_eq!(
            validate_stream(0, &enc(&[Op::DmaIn { ddr: 0, vtcm: 0, bytes: 4 }]), 64, 64).unwrap_err().problem,
            StreamProblem::MissingEnd
        );
        assert_eq!(validate_stream(0, &enc(&[Op::End, Op::End]), 64, 64).unwrap_err().problem, StreamProblem::AfterEnd);
    }

    #[test]
    fn a_stream_moves_and_computes_real_data() {
        let mem = HeapMemory::new(4096);
        let a: Vec<u8> = [1.5f32, 2.0, -3.0, 4.25].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b: Vec<u8> = [10.0f32, 0.5, 3.0, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        mem.write(1024, &a).unwrap();
        mem.write(1024 + 16, &b).unwrap();
        let ops = validate_stream(
            0,
            &enc(&[
                Op::DmaIn { ddr: 0, vtcm: 0, bytes: 32 },
                Op::Binary { op: BinaryOp::Add, dtype: DType::F32, dst: 64, a: 0, b: 16, count: 4 },
                Op::Binary { op: BinaryOp::Mul, dtype: DType::F32, dst: 64, a: 64, b: 16, count: 4 },
                Op::DmaOut { vtcm: 64, ddr: 100, bytes: 16 },
                Op::End,
            ]),
            256,
            512,
        )
        .unwrap();
        let mut core = NspCore::new(256);
        let cycles = core.run(&ops, 1024, &mem, &CostModel::default()).unwrap();
        assert!(cycles > 0);
        let mut out = [0u8; 16];
        mem.read(1124, &mut out).unwrap();
        let got: Vec<f32> = out.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(got, vec![(1.5 + 10.0) * 10.0, (2.0 + 0.5) * 0.5, 0.0, (4.25 + 2.0) * 2.0]);
    }
}
