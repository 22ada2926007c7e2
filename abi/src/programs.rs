//! The smallest real programs, built with the container builder, for tests and tools in
//! every crate: they move data through the whole path without computing anything.

use alloc::vec;

use crate::container::{IoBinding, IoDType, IoDirection, ProgramImage};
use crate::isa::{DType, Instruction, Op, Tensor};

/// `in` (shape `shape`, dtype `dtype`) copied to `out` through VTCM, byte for byte.
pub fn copy_program(name: &str, dtype: IoDType, shape: &[u32]) -> ProgramImage {
    let probe = IoBinding::new("in", IoDirection::Input, dtype, shape, 0);
    let bytes = probe.size_bytes as u32;
    let moved = [bytes];
    ProgramImage {
        name: name.into(),
        batch_size: 1,
        ddr_bytes: 2 * u64::from(bytes),
        vtcm_bytes: bytes.into(),
        bindings: vec![probe, IoBinding::new("out", IoDirection::Output, dtype, shape, bytes.into())],
        cores: vec![[
            Op::DmaIn {
                dst: Tensor::vtcm(0, DType::U8, &moved),
                src: Tensor::ddr(0, DType::U8, &moved),
                multicast: 0,
                peer_bytes: 0,
            },
            Op::DmaOut { dst: Tensor::ddr(bytes.into(), DType::U8, &moved), src: Tensor::vtcm(0, DType::U8, &moved) },
            Op::End,
        ]
        .iter()
        .map(|&o| Instruction::encode(o))
        .collect()],
        constants: vec![],
        layers: alloc::vec::Vec::new(),
        entries: alloc::vec::Vec::new(),
    }
}
