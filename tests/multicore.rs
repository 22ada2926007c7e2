//! A hand-built multi-core program through the whole stack: a tiled matmul split across
//! four cores, the shared operand multicast from DDR once, a barrier before compute.

use std::sync::Arc;

use aicsim_abi::container::{IoBinding, IoDType, IoDirection, ProgramImage};
use aicsim_abi::isa::{DType, Instruction, Op, Tensor};
use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use aicsim_runtime::samples::{bytes_f32, f32_bytes};
use aicsim_runtime::{Activation, Program};

const M: u32 = 64;
const K: u32 = 48;
const N: u32 = 40;
const CORES: u32 = 4;

fn tiled_matmul() -> ProgramImage {
    let (a_bytes, b_bytes) = (u64::from(M * K) * 4, u64::from(K * N) * 4);
    let c_at = a_bytes + b_bytes;
    let rows = M / CORES;
    let (vb, va, vc) = (0u64, 64 << 10, 128 << 10);
    let cores = (0..CORES)
        .map(|core| {
            let row0 = u64::from(core * rows);
            let mut ops = Vec::new();
            if core == 0 {
                // B goes to every core's VTCM with one DDR read.
                ops.push(Op::DmaIn {
                    dst: Tensor::vtcm(vb, DType::F32, &[K, N]),
                    src: Tensor::ddr(a_bytes, DType::F32, &[K, N]),
                    multicast: (1 << CORES) - 1,
                    peer_bytes: 0,
                });
            }
            ops.push(Op::DmaIn {
                dst: Tensor::vtcm(va, DType::F32, &[rows, K]),
                src: Tensor::ddr(row0 * u64::from(K) * 4, DType::F32, &[rows, K]),
                multicast: 0,
                peer_bytes: 0,
            });
            // Core 0 reaches the barrier only once its multicast has landed everywhere.
            ops.push(Op::Barrier);
            ops.push(Op::MatMul {
                dst: Tensor::vtcm(vc, DType::F32, &[rows, N]),
                a: Tensor::vtcm(va, DType::F32, &[rows, K]),
                b: Tensor::vtcm(vb, DType::F32, &[K, N]),
                accumulate: false,
                zero_point: 0,
            });
            ops.push(Op::DmaOut {
                dst: Tensor::ddr(c_at + row0 * u64::from(N) * 4, DType::F32, &[rows, N]),
                src: Tensor::vtcm(vc, DType::F32, &[rows, N]),
            });
            ops.push(Op::End);
            ops.iter().map(|&o| Instruction::encode(o)).collect()
        })
        .collect();
    let io = |name: &str, direction, shape: Vec<u32>, ddr_offset, _size_bytes: u64| {
        IoBinding::new(name, direction, IoDType::F32, &shape, ddr_offset)
    };
    ProgramImage {
        name: "tiled_matmul_4core".into(),
        batch_size: 1,
        ddr_bytes: c_at + u64::from(M * N) * 4,
        vtcm_bytes: 192 << 10,
        bindings: vec![
            io("a", IoDirection::Input, vec![M, K], 0, a_bytes),
            io("b", IoDirection::Input, vec![K, N], a_bytes, b_bytes),
            io("c", IoDirection::Output, vec![M, N], c_at, u64::from(M * N) * 4),
        ],
        cores,
        constants: vec![],
        layers: Vec::new(),
        entries: Vec::new(),
    }
}

#[test]
fn a_matmul_tiled_across_four_cores_with_a_barrier_is_correct_end_to_end() {
    let device = Arc::new(Device::open_simulated(KmdConfig::default()).unwrap());
    let program = Program::from_image(tiled_matmul()).unwrap();
    let activation = Activation::new(device.clone(), &program).unwrap();
    assert_eq!(activation.channel().activation().core_mask.count_ones(), CORES);
    for round in 0..20u32 {
        let a: Vec<f32> = (0..M * K).map(|i| ((i * 37 + round * 11) % 101) as f32 / 50.0 - 1.0).collect();
        let b: Vec<f32> = (0..K * N).map(|i| ((i * 53 + round * 7) % 89) as f32 / 44.0 - 1.0).collect();
        let out = activation.run(&[&f32_bytes(&a), &f32_bytes(&b)]).unwrap();
        let c = bytes_f32(&out[0]);
        for i in 0..M as usize {
            for j in 0..N as usize {
                let want: f64 =
                    (0..K as usize).map(|p| f64::from(a[i * K as usize + p]) * f64::from(b[p * N as usize + j])).sum();
                let got = f64::from(c[i * N as usize + j]);
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "round {round} c[{i}][{j}] = {got}, want {want}"
                );
            }
        }
    }
}
