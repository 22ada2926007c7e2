//! Paced and unpaced completion release, through the whole stack.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_abi::container::{IoBinding, IoDType, IoDirection, ProgramImage};
use aicsim_abi::isa::{DType, Instruction, Op, Tensor};
use aicsim_device::nsp::CostModel;
use aicsim_device::scheduler::ExecMode;
use aicsim_device::{DeviceConfig, Pacing};
use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use aicsim_runtime::{Activation, Program};

const MATMULS: u64 = 8;
/// A slow clock: the device time of the heavy program (0.5 s over 20 runs at 100 MHz) is
/// far above the host work of an unpaced run even on a loaded machine (tens of ms), so
/// the comparison below does not depend on the load.
const CLOCK: u64 = 100_000_000;

/// Little host work, a lot of device time: eight 1024^3 f16 matmuls.
fn heavy_program() -> ProgramImage {
    let m = |at: u64| Tensor::vtcm(at, DType::F16, &[1024, 1024]);
    let mut ops = vec![Op::DmaIn {
        dst: Tensor::vtcm(0, DType::U8, &[64]),
        src: Tensor::ddr(0, DType::U8, &[64]),
        multicast: 0,
        peer_bytes: 0,
    }];
    for _ in 0..MATMULS {
        ops.push(Op::MatMul { dst: m(6 << 20), a: m(2 << 20), b: m(4 << 20), accumulate: false, zero_point: 0 });
    }
    ops.push(Op::DmaOut { dst: Tensor::ddr(64, DType::U8, &[64]), src: Tensor::vtcm(0, DType::U8, &[64]) });
    ops.push(Op::End);
    let io = |name: &str, direction, ddr_offset| IoBinding::new(name, direction, IoDType::U8, &[64], ddr_offset);
    ProgramImage {
        name: "heavy".into(),
        batch_size: 1,
        ddr_bytes: 128,
        vtcm_bytes: 8 << 20,
        bindings: vec![io("x", IoDirection::Input, 0), io("y", IoDirection::Output, 64)],
        cores: vec![ops.iter().map(|&o| Instruction::encode(o)).collect()],
        constants: vec![],
        layers: Vec::new(),
        entries: Vec::new(),
    }
}

fn wall_time_of(pacing: Pacing, runs: u32) -> Duration {
    let device = DeviceConfig { mode: ExecMode::Timing, pacing, clock_hz: CLOCK, ..DeviceConfig::default() };
    let device = Arc::new(Device::open_simulated(KmdConfig { device, ..KmdConfig::default() }).unwrap());
    let activation = Activation::new(device, &Program::from_image(heavy_program()).unwrap()).unwrap();
    activation.run(&[&[1u8; 64]]).unwrap();
    let t = Instant::now();
    for _ in 0..runs {
        // A timing run moves nothing inside the device: the output is whatever DDR held.
        let out = activation.run(&[&[7u8; 64]]).unwrap();
        assert_eq!(out[0].len(), 64);
    }
    t.elapsed()
}

#[test]
fn paced_completions_wait_for_device_time_and_unpaced_ones_do_not() {
    let runs = 20;
    let per_matmul = {
        let cost = CostModel::default();
        let m = Tensor::vtcm(0, DType::F16, &[1024, 1024]);
        cost.cycles(&Op::MatMul { dst: m, a: m, b: m, accumulate: false, zero_point: 0 })
    };
    let device_time = Duration::from_secs_f64((MATMULS * per_matmul) as f64 / CLOCK as f64) * runs;
    let paced = wall_time_of(Pacing::Wall, runs);
    let unpaced = wall_time_of(Pacing::None, runs);
    assert!(paced >= device_time, "paced run took {paced:?}, its device time is {device_time:?}");
    assert!(unpaced < paced / 2, "unpaced {unpaced:?} should run well ahead of real time (paced {paced:?})");
}
