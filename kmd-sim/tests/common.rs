//! Shared helpers for the kmd integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use aicsim_device::container::{IoBinding, IoDType, IoDirection, ProgramImage};
use aicsim_device::isa::{DType, Instruction, Op, Tensor};
use aicsim_device::layout::MemoryMap;
use aicsim_device::DeviceConfig;
use aicsim_kmd::{Kmd, KmdConfig, Stepping};

/// A small device: 8-element rings unless told otherwise, 4 MiB of host memory and DDR.
pub fn small_kmd(ring_nelem: u32, stepping: Stepping, first_req_id: u16) -> Arc<Kmd> {
    let config = KmdConfig {
        device: DeviceConfig {
            num_nsp: 4,
            vtcm_bytes: 64 << 10,
            map: MemoryMap { ring_nelem, host_bytes: 4 << 20, ddr_bytes: 4 << 20 },
            ..Default::default()
        },
        stepping,
        first_req_id,
        ..Default::default()
    };
    Arc::new(Kmd::new(config).expect("device boots"))
}

/// `bytes` in, the same bytes out.
pub fn copy_program(bytes: u32) -> Vec<u8> {
    let b = |name: &str, direction, ddr_offset| IoBinding::new(name, direction, IoDType::U8, &[bytes], ddr_offset);
    ProgramImage {
        name: "copy".into(),
        batch_size: 1,
        ddr_bytes: 2 * u64::from(bytes),
        vtcm_bytes: bytes.into(),
        bindings: vec![b("in", IoDirection::Input, 0), b("out", IoDirection::Output, bytes.into())],
        cores: vec![[
            Op::DmaIn {
                dst: Tensor::vtcm(0, DType::U8, &[bytes]),
                src: Tensor::ddr(0, DType::U8, &[bytes]),
                multicast: 0,
            },
            Op::DmaOut {
                dst: Tensor::ddr(bytes.into(), DType::U8, &[bytes]),
                src: Tensor::vtcm(0, DType::U8, &[bytes]),
            },
            Op::End,
        ]
        .iter()
        .map(|&o| Instruction::encode(o))
        .collect()],
        constants: vec![],
    }
    .to_bytes()
}
