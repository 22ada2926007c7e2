//! Load-time validation of an instruction stream: every operand in its space, inside
//! its core's VTCM or the program's DDR allocation and aligned to its dtype; dtypes and
//! shapes consistent for the operation; sync counters and multicast masks in range.
//! A failure names the core, the instruction index and the bound.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use aicsim_abi::isa::{DType, Instruction, Op, Space, Tensor};

/// What a stream is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub vtcm_bytes: u64,
    pub ddr_bytes: u64,
    /// Cores the program runs on (bounds multicast masks).
    pub cores: u32,
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
    Decode(#[from] aicsim_abi::isa::DecodeError),
    #[error("{operand} spans VTCM [{start:#x}, {start:#x} + {len:#x}), past the core's {vtcm_bytes:#x}-byte VTCM")]
    VtcmOverflow { operand: &'static str, start: u64, len: u64, vtcm_bytes: u64 },
    #[error("{operand} spans DDR [{start:#x}, {start:#x} + {len:#x}), past the program's {ddr_bytes:#x}-byte DDR allocation")]
    DdrOverflow { operand: &'static str, start: u64, len: u64, ddr_bytes: u64 },
    #[error("{operand} offset {offset:#x} is not aligned to its {align}-byte elements")]
    Misaligned { operand: &'static str, offset: u64, align: u64 },
    #[error("{operand} must be in {expected:?}")]
    WrongSpace { operand: &'static str, expected: Space },
    #[error("{0}")]
    Types(String),
    #[error("{0}")]
    Shapes(String),
    #[error("multicast mask {mask:#x} names cores beyond the program's {cores}")]
    Multicast { mask: u64, cores: u32 },
    #[error("{peer_bytes} bytes held by other cores, but the DMA reads {bytes} bytes from {space:?} (only a pool source can be held by other cores, and at most all of it)")]
    PeerBytes { peer_bytes: u32, bytes: u64, space: Space },
    #[error("{operand} has an empty dimension (shape {dims:?}); operands hold at least one element")]
    EmptyOperand { operand: &'static str, dims: Vec<u32> },
    #[error("{operand} has {elements} elements, more than the {limit} bytes of memory it could ever be computed into")]
    TooManyElements { operand: &'static str, elements: u64, limit: u64 },
    #[error("stream does not end with End")]
    MissingEnd,
    #[error("instruction after End")]
    AfterEnd,
}

/// `space` is where the operand must be; [`Space::Ddr`] admits the pool too.
fn check(t: &Tensor, operand: &'static str, space: Space, limits: &Limits) -> Result<(), StreamProblem> {
    let admitted = t.space == space || (space == Space::Ddr && t.space == Space::Pool);
    if !admitted {
        return Err(StreamProblem::WrongSpace { operand, expected: space });
    }
    let align = t.dtype.bytes();
    if !t.offset.is_multiple_of(align) {
        return Err(StreamProblem::Misaligned { operand, offset: t.offset, align });
    }
    // A broadcast operand (stride 0) may have more elements than bytes it spans, but
    // never more than the largest memory its result could fill: that bounds every
    // kernel's loop and every size computed from the count.
    // An empty operand computes nothing, but a kernel would still walk its other
    // dimensions (the `container` fuzz target found one of 3 x 67,108,872 x 0).
    if t.dims().contains(&0) {
        return Err(StreamProblem::EmptyOperand { operand, dims: t.dims().to_vec() });
    }
    let limit = limits.vtcm_bytes.max(limits.ddr_bytes);
    if t.elements() > limit {
        return Err(StreamProblem::TooManyElements { operand, elements: t.elements(), limit });
    }
    let len = t.span_bytes().unwrap_or(u64::MAX);
    let (size, overflow) = match space {
        Space::Vtcm => (
            limits.vtcm_bytes,
            StreamProblem::VtcmOverflow { operand, start: t.offset, len, vtcm_bytes: limits.vtcm_bytes },
        ),
        Space::Ddr | Space::Pool => (
            limits.ddr_bytes,
            StreamProblem::DdrOverflow { operand, start: t.offset, len, ddr_bytes: limits.ddr_bytes },
        ),
    };
    match t.offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(overflow),
    }
}

fn types(cond: bool, text: impl FnOnce() -> String) -> Result<(), StreamProblem> {
    if cond {
        Ok(())
    } else {
        Err(StreamProblem::Types(text()))
    }
}

fn shapes(cond: bool, text: impl FnOnce() -> String) -> Result<(), StreamProblem> {
    if cond {
        Ok(())
    } else {
        Err(StreamProblem::Shapes(text()))
    }
}

fn same_shape(a: &Tensor, b: &Tensor, what: &str) -> Result<(), StreamProblem> {
    shapes(a.dims() == b.dims(), || format!("{what}: shapes {:?} and {:?} differ", a.dims(), b.dims()))
}

fn rank(t: &Tensor, r: u8, what: &str) -> Result<(), StreamProblem> {
    shapes(t.rank == r, || format!("{what} must have rank {r}, has shape {:?}", t.dims()))
}

/// Whether one operation is well formed for a core of `limits`. One arm per operation,
/// flat on purpose: each arm is that operation's rules, read side by side with its kernel.
fn check_op(op: &Op, limits: &Limits) -> Result<(), StreamProblem> {
    let v = |t: &Tensor, name| check(t, name, Space::Vtcm, limits);
    match op {
        Op::End | Op::Signal { .. } | Op::Wait { .. } | Op::Barrier => Ok(()),
        Op::DmaIn { dst, src, multicast, peer_bytes } => {
            check(src, "DMA source", Space::Ddr, limits)?;
            if *peer_bytes != 0 && (src.space != Space::Pool || u64::from(*peer_bytes) > src.packed_bytes()) {
                return Err(StreamProblem::PeerBytes {
                    peer_bytes: *peer_bytes,
                    bytes: src.packed_bytes(),
                    space: src.space,
                });
            }
            v(dst, "DMA destination")?;
            types(src.dtype == dst.dtype, || {
                format!("DMA moves {:?} into {:?}; DMA does not convert", src.dtype, dst.dtype)
            })?;
            same_shape(src, dst, "DMA")?;
            if limits.cores < 64 && *multicast >> limits.cores != 0 {
                return Err(StreamProblem::Multicast { mask: *multicast, cores: limits.cores });
            }
            Ok(())
        }
        Op::Gather { dst, table, indices } => {
            check(table, "gather table", Space::Ddr, limits)?;
            v(dst, "gather destination")?;
            v(indices, "gather indices")?;
            rank(table, 2, "gather table [V, H]")?;
            rank(dst, 2, "gather destination [N, H]")?;
            rank(indices, 1, "gather indices [N]")?;
            types(table.dtype == dst.dtype && indices.dtype == DType::I32, || {
                format!(
                    "gather copies {:?} rows into {:?} by I32 indices (got {:?})",
                    table.dtype, dst.dtype, indices.dtype
                )
            })?;
            shapes(dst.shape[0] == indices.shape[0] && dst.shape[1] == table.shape[1], || {
                format!("gather of {:?} rows by {:?} indices into {:?}", table.dims(), indices.dims(), dst.dims())
            })?;
            shapes(table.strides[1] == 1 && dst.is_contiguous(), || String::from("gather moves whole contiguous rows"))
        }
        Op::Scatter { dst, src, indices } => {
            check(dst, "scatter destination", Space::Ddr, limits)?;
            v(src, "scatter source")?;
            v(indices, "scatter indices")?;
            rank(dst, 3, "scatter destination [G, C, R]")?;
            rank(src, 3, "scatter source [G, S, R]")?;
            rank(indices, 1, "scatter indices [S]")?;
            types(src.dtype == dst.dtype && indices.dtype == DType::I32, || {
                format!(
                    "scatter copies {:?} rows into {:?} by I32 indices (got {:?})",
                    src.dtype, dst.dtype, indices.dtype
                )
            })?;
            shapes(
                src.shape[0] == dst.shape[0] && src.shape[1] == indices.shape[0] && src.shape[2] == dst.shape[2],
                || format!("scatter of {:?} rows by {:?} indices into {:?}", src.dims(), indices.dims(), dst.dims()),
            )?;
            shapes(dst.strides[2] == 1 && src.is_contiguous(), || String::from("scatter moves whole contiguous rows"))
        }
        Op::DmaOut { dst, src } => {
            v(src, "DMA source")?;
            check(dst, "DMA destination", Space::Ddr, limits)?;
            types(src.dtype == dst.dtype, || {
                format!("DMA moves {:?} into {:?}; DMA does not convert", src.dtype, dst.dtype)
            })?;
            same_shape(src, dst, "DMA")
        }
        Op::MatMul { dst, a, b, zero_point, .. } => {
            v(dst, "dst")?;
            v(a, "a")?;
            v(b, "b")?;
            rank(a, 2, "matmul a")?;
            rank(b, 2, "matmul b")?;
            rank(dst, 2, "matmul dst")?;
            let (m, k, n) = (a.shape[0], a.shape[1], b.shape[1]);
            shapes(b.shape[0] == k && dst.shape[0] == m && dst.shape[1] == n, || {
                format!("matmul [{m}, {k}] x {:?} -> {:?} does not line up", b.dims(), dst.dims())
            })?;
            hmx_types(a.dtype, b.dtype, dst.dtype)?;
            hmx_zero_point(a.dtype, *zero_point)
        }
        Op::Conv2d { dst, input, weight, geometry: g, zero_point, .. } => {
            v(dst, "dst")?;
            v(input, "input")?;
            v(weight, "weight")?;
            rank(input, 3, "conv input [C, H, W]")?;
            rank(weight, 4, "conv weight [Co, Ci/groups, Kh, Kw]")?;
            rank(dst, 3, "conv output [Co, Ho, Wo]")?;
            let groups = g.groups;
            shapes(groups >= 1 && input.shape[0] % groups == 0 && weight.shape[0] % groups == 0, || {
                format!(
                    "{groups} groups do not divide {} input and {} output channels",
                    input.shape[0], weight.shape[0]
                )
            })?;
            shapes(weight.shape[1] * groups == input.shape[0] && dst.shape[0] == weight.shape[0], || {
                format!(
                    "conv channels: input {:?}, weight {:?}, output {:?}, groups {groups}",
                    input.dims(),
                    weight.dims(),
                    dst.dims()
                )
            })?;
            shapes(g.stride.iter().chain(&g.dilation).all(|&s| s >= 1), || {
                String::from("conv stride and dilation must be at least 1")
            })?;
            hmx_types(input.dtype, weight.dtype, dst.dtype)?;
            hmx_zero_point(input.dtype, *zero_point)
        }
        Op::Binary { dst, a, b, kind } => {
            v(dst, "dst")?;
            v(a, "a")?;
            v(b, "b")?;
            same_shape(dst, a, "binary a")?;
            same_shape(dst, b, "binary b")?;
            types(a.dtype == dst.dtype && b.dtype == dst.dtype, || {
                String::from("binary operands must share the destination's dtype")
            })?;
            let int_ok = !matches!(kind, aicsim_abi::isa::BinaryKind::Div);
            types(dst.dtype.is_float() || (dst.dtype == DType::I32 && int_ok), || {
                format!("{kind:?} is not defined on {:?}", dst.dtype)
            })
        }
        Op::Unary { dst, src, kind } => {
            v(dst, "dst")?;
            v(src, "src")?;
            same_shape(dst, src, "unary")?;
            types(dst.dtype == src.dtype, || String::from("unary ops do not convert; use Convert"))?;
            let int_ok = matches!(kind, aicsim_abi::isa::UnaryKind::Copy)
                || (matches!(kind, aicsim_abi::isa::UnaryKind::Relu) && dst.dtype == DType::I32);
            types(dst.dtype.is_float() || int_ok, || format!("{kind:?} is not defined on {:?}", dst.dtype))
        }
        Op::Convert { dst, src, scale, scales, .. } => {
            v(dst, "dst")?;
            v(src, "src")?;
            same_shape(dst, src, "convert")?;
            if let Some(s) = scales {
                v(s, "scales")?;
                same_shape(dst, s, "convert scales")?;
                types(s.dtype == DType::F32, || format!("convert scales are F32, not {:?}", s.dtype))?;
            }
            types(scale.is_finite() && *scale != 0.0, || format!("convert scale {scale} must be finite and nonzero"))
        }
        Op::Pool { dst, src, window: w, kind } => {
            v(dst, "dst")?;
            v(src, "src")?;
            rank(src, 3, "pool input [C, H, W]")?;
            rank(dst, 3, "pool output [C, Ho, Wo]")?;
            shapes(dst.shape[0] == src.shape[0], || String::from("pooling keeps the channel count"))?;
            shapes(w.kernel.iter().chain(&w.stride).all(|&s| s >= 1), || {
                String::from("pool kernel and stride must be at least 1")
            })?;
            shapes(w.pad[0] < w.kernel[0] && w.pad[1] < w.kernel[1], || {
                String::from("pool padding must be smaller than the kernel")
            })?;
            let int_max =
                *kind == aicsim_abi::isa::PoolKind::Max && matches!(src.dtype, DType::I8 | DType::U8 | DType::I16);
            types(dst.dtype == src.dtype && (src.dtype.is_float() || int_max), || {
                String::from("pooling works on one float dtype (max pooling also on int8, uint8 or int16)")
            })
        }
        Op::GlobalAvgPool { dst, src } => {
            v(dst, "dst")?;
            v(src, "src")?;
            rank(src, 3, "global pool input [C, H, W]")?;
            shapes(dst.elements() == u64::from(src.shape[0]), || {
                format!("global pool of {:?} gives {} values, dst has {:?}", src.dims(), src.shape[0], dst.dims())
            })?;
            types(dst.dtype == src.dtype && src.dtype.is_float(), || String::from("pooling works on one float dtype"))
        }
        Op::Softmax { dst, src } | Op::LayerNorm { dst, src, .. } => {
            v(dst, "dst")?;
            v(src, "src")?;
            same_shape(dst, src, "normalisation")?;
            types(dst.dtype == src.dtype && src.dtype.is_float(), || {
                String::from("softmax and layer-norm work on one float dtype")
            })
        }
        Op::Reduce { dst, src, .. } => {
            v(dst, "dst")?;
            v(src, "src")?;
            let r = src.rank as usize;
            shapes(dst.rank == src.rank && dst.shape[..r - 1] == src.shape[..r - 1] && dst.shape[r - 1] == 1, || {
                format!(
                    "reduce over the last axis of {:?} gives its shape with the last dimension 1, dst has {:?}",
                    src.dims(),
                    dst.dims()
                )
            })?;
            types(dst.dtype == src.dtype && src.dtype.is_float(), || String::from("reductions work on one float dtype"))
        }
    }
}

fn hmx_types(a: DType, b: DType, dst: DType) -> Result<(), StreamProblem> {
    let ok = match (a, b) {
        (DType::F32, DType::F32) => dst == DType::F32,
        (DType::F16, DType::F16) => dst.is_float(),
        (DType::I8 | DType::U8 | DType::I16, DType::I8) => dst == DType::I32,
        _ => false,
    };
    types(ok, || {
        format!(
            "HMX takes f32 x f32 -> f32, f16 x f16 -> f16/f32, or i8/u8/i16 x i8 -> i32; got {a:?} x {b:?} -> {dst:?}"
        )
    })
}

/// An integer input's quantisation offset lies in its dtype's range; a float input has none.
fn hmx_zero_point(input: DType, zero_point: i32) -> Result<(), StreamProblem> {
    let ok = match input {
        DType::I8 => (-128..=127).contains(&zero_point),
        DType::U8 => (0..=255).contains(&zero_point),
        DType::I16 => (-32768..=32767).contains(&zero_point),
        _ => zero_point == 0,
    };
    types(ok, || format!("HMX input zero point {zero_point} is outside what a {input:?} input holds"))
}

/// Decodes and checks a core's stream; exactly one End, at the end.
pub fn validate_stream(core: u32, stream: &[Instruction], limits: &Limits) -> Result<Vec<Op>, ProgramError> {
    let mut ops = Vec::with_capacity(stream.len());
    for (index, record) in stream.iter().enumerate() {
        let fail = |problem| ProgramError { core, index, problem };
        if ops.last() == Some(&Op::End) {
            return Err(fail(StreamProblem::AfterEnd));
        }
        let op = record.decode().map_err(|e| fail(e.into()))?;
        check_op(&op, limits).map_err(fail)?;
        ops.push(op);
    }
    if ops.last() != Some(&Op::End) {
        return Err(ProgramError { core, index: stream.len(), problem: StreamProblem::MissingEnd });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aicsim_abi::isa::{BinaryKind, ConvGeometry};
    use alloc::vec;

    const LIMITS: Limits = Limits { vtcm_bytes: 4096, ddr_bytes: 1024, cores: 2 };

    fn vt(offset: u64, dtype: DType, shape: &[u32]) -> Tensor {
        Tensor::contiguous(Space::Vtcm, offset, dtype, shape)
    }

    fn decode_first(stream: &[Instruction]) -> Op {
        stream[0].decode().unwrap()
    }

    fn problem(ops: &[Op]) -> (usize, StreamProblem) {
        let stream: Vec<Instruction> = ops.iter().chain(&[Op::End]).map(|&o| Instruction::encode(o)).collect();
        let e = validate_stream(5, &stream, &LIMITS).unwrap_err();
        assert_eq!(e.core, 5);
        (e.index, e.problem)
    }

    /// A broadcast (stride-0) operand whose four dimensions multiply past u64 once
    /// overflowed the element count (found by the `container` fuzz target); now it is
    /// refused by its count, as is one with merely more elements than memory.
    #[test]
    fn an_operand_with_more_elements_than_memory_is_refused() {
        let mut huge = vt(0, DType::F32, &[1, 1, 1, 1]);
        huge.shape = [u32::MAX; 4];
        huge.strides = [0; 4];
        let (index, p) =
            problem(&[Op::Unary { kind: aicsim_abi::isa::UnaryKind::Relu, dst: vt(0, DType::F32, &[4]), src: huge }]);
        assert_eq!(index, 0);
        assert!(matches!(p, StreamProblem::TooManyElements { elements: u64::MAX, limit: 4096, .. }), "{p}");
        let mut wide = vt(0, DType::F32, &[1]);
        wide.shape[0] = 5000;
        wide.strides[0] = 0;
        let (_, p) =
            problem(&[Op::Unary { kind: aicsim_abi::isa::UnaryKind::Relu, dst: vt(0, DType::F32, &[4]), src: wide }]);
        assert!(p.to_string().contains("has 5000 elements, more than the 4096 bytes"), "{p}");
    }

    /// An operand with an empty dimension is refused: it computes nothing, and a kernel
    /// would still walk its other dimensions (found by the `container` fuzz target: a
    /// convolution input of 3 x 67,108,872 x 0 took 34 s).
    #[test]
    fn an_operand_with_an_empty_dimension_is_refused() {
        let mut empty = vt(0, DType::F32, &[3, 1, 1]);
        empty.shape[1] = 67_108_872;
        empty.shape[2] = 0;
        let (_, p) =
            problem(&[Op::Unary { kind: aicsim_abi::isa::UnaryKind::Relu, dst: vt(0, DType::F32, &[4]), src: empty }]);
        assert!(
            matches!(&p, StreamProblem::EmptyOperand { operand: "src", dims } if dims == &[3, 67_108_872, 0]),
            "{p}"
        );
    }

    #[test]
    fn a_vtcm_overflow_names_core_index_and_bound() {
        let big = vt(4000, DType::F32, &[50]);
        let (index, p) = problem(&[
            Op::Unary {
                kind: aicsim_abi::isa::UnaryKind::Relu,
                dst: vt(0, DType::F32, &[50]),
                src: vt(0, DType::F32, &[50]),
            },
            Op::Unary { kind: aicsim_abi::isa::UnaryKind::Relu, dst: big, src: vt(0, DType::F32, &[50]) },
        ]);
        assert_eq!(index, 1);
        assert_eq!(p, StreamProblem::VtcmOverflow { operand: "dst", start: 4000, len: 200, vtcm_bytes: 4096 });
        let e = ProgramError { core: 5, index, problem: p };
        assert_eq!(
            alloc::format!("{e}"),
            "core 5, instruction 1: dst spans VTCM [0xfa0, 0xfa0 + 0xc8), past the core's 0x1000-byte VTCM"
        );
    }

    #[test]
    fn dma_and_compute_operand_rules() {
        let d = Tensor::contiguous(Space::Ddr, 1000, DType::F32, &[8]);
        assert!(matches!(
            problem(&[Op::DmaIn { dst: vt(0, DType::F32, &[8]), src: d, multicast: 0, peer_bytes: 0 }]).1,
            StreamProblem::DdrOverflow { .. }
        ));
        let d = Tensor::contiguous(Space::Ddr, 0, DType::F32, &[8]);
        assert!(matches!(
            problem(&[Op::DmaIn { dst: vt(0, DType::F32, &[8]), src: d, multicast: 0b100, peer_bytes: 0 }]).1,
            StreamProblem::Multicast { .. }
        ));
        assert!(matches!(
            problem(&[Op::DmaIn { dst: vt(2, DType::F32, &[8]), src: d, multicast: 0, peer_bytes: 0 }]).1,
            StreamProblem::Misaligned { .. }
        ));
        assert!(matches!(
            problem(&[Op::DmaIn { dst: vt(0, DType::F16, &[8]), src: d, multicast: 0, peer_bytes: 0 }]).1,
            StreamProblem::Types(_)
        ));
        assert!(matches!(
            problem(&[Op::DmaIn { dst: d, src: d, multicast: 0, peer_bytes: 0 }]).1,
            StreamProblem::WrongSpace { .. }
        ));
        // Only a pool source can be held by other cores, and at most all of it.
        assert!(matches!(
            problem(&[Op::DmaIn { dst: vt(0, DType::F32, &[8]), src: d, multicast: 0, peer_bytes: 4 }]).1,
            StreamProblem::PeerBytes { peer_bytes: 4, bytes: 32, space: Space::Ddr }
        ));
        let pool = Tensor::contiguous(Space::Pool, 0, DType::F32, &[8]);
        assert!(matches!(
            problem(&[Op::DmaIn { dst: vt(0, DType::F32, &[8]), src: pool, multicast: 0, peer_bytes: 33 }]).1,
            StreamProblem::PeerBytes { peer_bytes: 33, bytes: 32, space: Space::Pool }
        ));
        let fine = [Op::DmaIn { dst: vt(0, DType::F32, &[8]), src: pool, multicast: 0, peer_bytes: 32 }, Op::End];
        let fine: Vec<Instruction> = fine.iter().map(|&o| Instruction::encode(o)).collect();
        assert_eq!(validate_stream(0, &fine, &LIMITS).unwrap()[0], decode_first(&fine));
        let m = Op::MatMul {
            dst: vt(0, DType::F32, &[2, 3]),
            a: vt(64, DType::F32, &[2, 4]),
            b: vt(128, DType::F32, &[5, 3]),
            accumulate: false,
            zero_point: 0,
        };
        assert!(matches!(problem(&[m]).1, StreamProblem::Shapes(_)));
        let m = Op::MatMul {
            dst: vt(0, DType::F32, &[2, 3]),
            a: vt(64, DType::I8, &[2, 4]),
            b: vt(128, DType::I8, &[4, 3]),
            accumulate: false,
            zero_point: 0,
        };
        assert!(matches!(problem(&[m]).1, StreamProblem::Types(_)));
        let c = Op::Conv2d {
            dst: vt(0, DType::F32, &[4, 2, 2]),
            input: vt(256, DType::F32, &[3, 4, 4]),
            weight: vt(512, DType::F32, &[4, 3, 3, 3]),
            geometry: ConvGeometry { stride: [1, 1], pad: [0, 0], dilation: [1, 1], groups: 2 },
            accumulate: false,
            zero_point: 0,
        };
        assert!(matches!(problem(&[c]).1, StreamProblem::Shapes(_)));
        let b = Op::Binary {
            kind: BinaryKind::Div,
            dst: vt(0, DType::I32, &[4]),
            a: vt(16, DType::I32, &[4]),
            b: vt(32, DType::I32, &[4]),
        };
        assert!(matches!(problem(&[b]).1, StreamProblem::Types(_)));
        // int16 activations multiply int8 weights into i32, with a zero point in int16's
        // range; int16 weights are not an HMX type.
        let wide = |b: DType, zero_point: i32| {
            let m = Op::MatMul {
                dst: vt(0, DType::I32, &[2, 3]),
                a: vt(64, DType::I16, &[2, 4]),
                b: vt(128, b, &[4, 3]),
                accumulate: false,
                zero_point,
            };
            let ops: Vec<Instruction> = [m, Op::End].iter().map(|&o| Instruction::encode(o)).collect();
            validate_stream(0, &ops, &LIMITS).map(|_| ()).map_err(|e| e.problem)
        };
        assert_eq!(wide(DType::I8, -20_000), Ok(()));
        assert!(matches!(wide(DType::I16, 0), Err(StreamProblem::Types(_))));
        assert!(matches!(wide(DType::I8, 40_000), Err(StreamProblem::Types(_))));
    }

    #[test]
    fn stream_structure_is_checked() {
        let end = Instruction::encode(Op::End);
        assert_eq!(validate_stream(0, &[], &LIMITS).unwrap_err().problem, StreamProblem::MissingEnd);
        assert_eq!(validate_stream(0, &[end, end], &LIMITS).unwrap_err().problem, StreamProblem::AfterEnd);
        assert_eq!(validate_stream(0, &[end], &LIMITS), Ok(vec![Op::End]));
    }
}
