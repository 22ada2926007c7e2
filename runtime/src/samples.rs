//! Built-in programs, written with the container builder, and their host-side
//! reference results: the vector program (a light program for the tools' tests) and
//! the null program (the null-inference benchmark's).

use aicsim_abi::container::{ConstantBlob, IoBinding, IoDType, IoDirection, ProgramImage};
use aicsim_abi::isa::{BinaryKind, DType, Instruction, Op, Tensor};

fn binding(name: &str, direction: IoDirection, dtype: IoDType, len: u32, ddr_offset: u64) -> IoBinding {
    IoBinding::new(name, direction, dtype, &[len], ddr_offset)
}

/// The constant vector `w` of [`vector_add_mul`].
pub fn vector_weights(n: u32) -> Vec<f32> {
    (0..n).map(|i| (i % 7 + 1) as f32 * 0.25).collect()
}

/// `out = (a + b) * w` over `n` f32 values, `w` a constant the device places in DDR at
/// activation. One core: DMA in, two HVX ops, DMA out.
pub fn vector_add_mul(n: u32) -> ProgramImage {
    let bytes = u64::from(n) * 4;
    let weights: Vec<u8> = vector_weights(n).iter().flat_map(|w| w.to_le_bytes()).collect();
    let v = |offset: u64| Tensor::vtcm(offset, DType::F32, &[n]);
    let ops = [
        Op::DmaIn {
            dst: Tensor::vtcm(0, DType::F32, &[3, n]),
            src: Tensor::ddr(0, DType::F32, &[3, n]),
            multicast: 0,
            peer_bytes: 0,
        },
        Op::Binary { kind: BinaryKind::Add, dst: v(3 * bytes), a: v(0), b: v(bytes) },
        Op::Binary { kind: BinaryKind::Mul, dst: v(3 * bytes), a: v(3 * bytes), b: v(2 * bytes) },
        Op::DmaOut { dst: Tensor::ddr(3 * bytes, DType::F32, &[n]), src: v(3 * bytes) },
        Op::End,
    ];
    ProgramImage {
        name: format!("vector_add_mul_{n}"),
        batch_size: 1,
        ddr_bytes: 4 * bytes,
        vtcm_bytes: 4 * bytes,
        bindings: vec![
            binding("a", IoDirection::Input, IoDType::F32, n, 0),
            binding("b", IoDirection::Input, IoDType::F32, n, bytes),
            binding("out", IoDirection::Output, IoDType::F32, n, 3 * bytes),
        ],
        cores: vec![ops.iter().map(|&o| Instruction::encode(o)).collect()],
        constants: vec![ConstantBlob { ddr_offset: 2 * bytes, data: weights }],
        layers: Vec::new(),
        entries: Vec::new(),
    }
}

/// What [`vector_add_mul`] computes, on the host.
pub fn vector_add_mul_reference(a: &[f32], b: &[f32]) -> Vec<f32> {
    let w = vector_weights(a.len() as u32);
    a.iter().zip(b).zip(&w).map(|((x, y), w)| (x + y) * w).collect()
}

/// The vector program over 4096 elements, the light program the tools' tests run.
pub fn vector_program() -> ProgramImage {
    vector_add_mul(4096)
}

/// A null inference: `bytes` in, the same `bytes` out through VTCM, nothing computed.
pub fn null_program(bytes: u32) -> ProgramImage {
    aicsim_abi::programs::copy_program("null", IoDType::U8, &[bytes])
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// f32 values of little-endian bytes (a trailing partial value is ignored).
pub fn bytes_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}
