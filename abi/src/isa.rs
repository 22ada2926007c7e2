//! The NSP instruction set: fixed-size little-endian records, one per instruction, each
//! naming up to three tensor operands by descriptor (memory space, offset, dtype,
//! shape and element strides, where a stride of 0 broadcasts).
//!
//! Engines: DMA moves tensors between device DDR and VTCM (strided, optionally
//! multicast to several cores, reading DDR once); HMX runs matmul and convolution
//! tiles; HVX runs everything element-wise, pooling, softmax, normalisation,
//! reductions, conversions and layout changes; the sync ops order cores against each
//! other.

use bytemuck::{Pod, Zeroable};
use core::mem::size_of;

/// Most dimensions a tensor operand has.
pub const MAX_RANK: usize = 4;

/// A tensor operand as stored in an instruction record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct OperandRecord {
    /// Byte offset in its space (VTCM of the running core, or the activation's DDR).
    pub offset: u64,
    /// 0 absent, 1 VTCM, 2 DDR.
    pub space: u8,
    pub dtype: u8,
    pub rank: u8,
    pub reserved0: u8,
    pub reserved1: u32,
    /// Elements per dimension, outermost first; unused dimensions are 0.
    pub shape: [u32; 4],
    /// Element (not byte) strides per dimension; 0 repeats the same element.
    pub strides: [u32; 4],
}
const _: () = assert!(size_of::<OperandRecord>() == 48);

/// One encoded instruction, 192 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Instruction {
    pub opcode: u16,
    /// Which operation of the opcode's family (see the `*Kind` enums).
    pub variant: u16,
    /// DMA in: multicast mask over the program's cores; sync ops: counter index.
    pub aux: u32,
    /// Op-specific scalars (integers, or f32 bit patterns).
    pub params: [u32; 8],
    pub dst: OperandRecord,
    pub src0: OperandRecord,
    pub src1: OperandRecord,
    pub reserved: u64,
}
const _: () = assert!(size_of::<Instruction>() == 192);

/// Bytes of one encoded instruction.
pub const INSTRUCTION_BYTES: usize = size_of::<Instruction>();

/// Where a tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// The executing core's VTCM.
    Vtcm = 1,
    /// The activation's DDR region.
    Ddr = 2,
    /// The on-chip pool: activations the compiler keeps in the VTCM of the program's
    /// cores between layers instead of spilling them to DDR. Addressed like the
    /// activation's DDR region (offsets the compiler reserved there, which is also where
    /// the simulator keeps the bytes), but DMA to or from it moves over the on-chip
    /// network and takes no DDR bandwidth.
    Pool = 3,
}

/// Element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32 = 0,
    F16 = 1,
    I8 = 2,
    U8 = 3,
    I32 = 4,
    /// 16-bit activations (`-quantization-precision=Int16`): HMX multiplies them by int8
    /// weights into i32 sums.
    I16 = 5,
}

impl DType {
    pub fn from_raw(raw: u8) -> Option<DType> {
        Some(match raw {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::I8,
            3 => DType::U8,
            4 => DType::I32,
            5 => DType::I16,
            _ => return None,
        })
    }

    /// The name profiles print (ONNX's spelling).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::I32 => "int32",
            DType::I16 => "int16",
        }
    }

    pub fn bytes(self) -> u64 {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::I16 => 2,
            DType::I8 | DType::U8 => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16)
    }
}

/// A decoded tensor operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tensor {
    pub space: Space,
    pub offset: u64,
    pub dtype: DType,
    pub rank: u8,
    pub shape: [u32; MAX_RANK],
    pub strides: [u32; MAX_RANK],
}

impl Tensor {
    /// A densely packed row-major tensor.
    ///
    /// # Panics
    /// If `shape` has more than [`MAX_RANK`] dimensions (a programming error in the
    /// caller that builds the program).
    pub fn contiguous(space: Space, offset: u64, dtype: DType, shape: &[u32]) -> Tensor {
        assert!(!shape.is_empty() && shape.len() <= MAX_RANK, "rank must be 1..=4");
        let mut t = Tensor { space, offset, dtype, rank: shape.len() as u8, shape: [0; 4], strides: [0; 4] };
        let mut stride = 1u32;
        for d in (0..shape.len()).rev() {
            t.shape[d] = shape[d];
            t.strides[d] = stride;
            stride = stride.saturating_mul(shape[d]);
        }
        t
    }

    /// A packed tensor in VTCM.
    pub fn vtcm(offset: u64, dtype: DType, shape: &[u32]) -> Tensor {
        Tensor::contiguous(Space::Vtcm, offset, dtype, shape)
    }

    /// A packed tensor in the activation's DDR.
    pub fn ddr(offset: u64, dtype: DType, shape: &[u32]) -> Tensor {
        Tensor::contiguous(Space::Ddr, offset, dtype, shape)
    }

    /// The same tensor with explicit element strides.
    pub fn with_strides(mut self, strides: &[u32]) -> Tensor {
        for (d, &s) in strides.iter().enumerate().take(self.rank as usize) {
            self.strides[d] = s;
        }
        self
    }

    pub fn dims(&self) -> &[u32] {
        &self.shape[..self.rank as usize]
    }

    /// Elements the shape holds (`u64::MAX` if more: six u32 dimensions can overflow a
    /// u64, and the validator refuses such a tensor by its count).
    pub fn elements(&self) -> u64 {
        self.dims().iter().try_fold(1u64, |n, &d| n.checked_mul(u64::from(d))).unwrap_or(u64::MAX)
    }

    /// Bytes of the tensor's values as a packed array.
    pub fn packed_bytes(&self) -> u64 {
        self.elements().saturating_mul(self.dtype.bytes())
    }

    /// Whether elements are densely packed in row-major order.
    pub fn is_contiguous(&self) -> bool {
        let mut expect = 1u64;
        for d in (0..self.rank as usize).rev() {
            if self.shape[d] > 1 && u64::from(self.strides[d]) != expect {
                return false;
            }
            expect *= u64::from(self.shape[d]);
        }
        true
    }

    /// Bytes from `offset` to just past the furthest element (0 if empty); `None` on
    /// overflow.
    pub fn span_bytes(&self) -> Option<u64> {
        if self.dims().contains(&0) {
            return Some(0);
        }
        let mut last = 0u64;
        for d in 0..self.rank as usize {
            last = last.checked_add(u64::from(self.shape[d] - 1).checked_mul(u64::from(self.strides[d]))?)?;
        }
        last.checked_add(1)?.checked_mul(self.dtype.bytes())
    }

    fn record(&self) -> OperandRecord {
        OperandRecord {
            offset: self.offset,
            space: self.space as u8,
            dtype: self.dtype as u8,
            rank: self.rank,
            shape: self.shape,
            strides: self.strides,
            ..Default::default()
        }
    }

    fn decode(rec: &OperandRecord) -> Result<Option<Tensor>, DecodeError> {
        if rec.space == 0 {
            return if *rec == OperandRecord::default() {
                Ok(None)
            } else {
                Err(DecodeError::NonzeroUnused("absent operand"))
            };
        }
        let space = match rec.space {
            1 => Space::Vtcm,
            2 => Space::Ddr,
            3 => Space::Pool,
            other => return Err(DecodeError::BadOperand { what: "space", value: other.into() }),
        };
        let dtype =
            DType::from_raw(rec.dtype).ok_or(DecodeError::BadOperand { what: "dtype", value: rec.dtype.into() })?;
        let rank = rec.rank as usize;
        if rank == 0 || rank > MAX_RANK {
            return Err(DecodeError::BadOperand { what: "rank", value: rec.rank.into() });
        }
        if rec.reserved0 != 0
            || rec.reserved1 != 0
            || rec.shape[rank..].iter().chain(&rec.strides[rank..]).any(|&v| v != 0)
        {
            return Err(DecodeError::NonzeroUnused("operand reserved field or unused dimension"));
        }
        Ok(Some(Tensor { space, offset: rec.offset, dtype, rank: rec.rank, shape: rec.shape, strides: rec.strides }))
    }
}

/// Element-wise binary operations (HVX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
    Max = 4,
    Min = 5,
    /// `a < b` as 1 or 0 in the destination's type (a causal mask from positions).
    Less = 6,
    /// `a <= b` as 1 or 0.
    LessOrEqual = 7,
    /// `a == b` as 1 or 0.
    Equal = 8,
}

/// Element-wise unary operations (HVX).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryKind {
    Relu,
    Clip {
        min: f32,
        max: f32,
    },
    Sigmoid,
    Tanh,
    /// The exact form, `0.5 x (1 + erf(x / sqrt 2))`.
    Gelu,
    Exp,
    Erf,
    Sqrt,
    Reciprocal,
    Copy,
    /// `x ^ exponent` (NaN for a negative base and a non-integer exponent).
    Pow {
        exponent: f32,
    },
    /// `x * scale + shift`: a scalar constant operand folded into the instruction.
    Affine {
        scale: f32,
        shift: f32,
    },
}

/// Pooling kinds (HVX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max = 0,
    /// Average over the window's in-bounds elements.
    Avg = 1,
    /// Average dividing by the full window size (padding counts as zeros).
    AvgIncludePad = 2,
}

/// Reductions over the last axis (HVX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Sum = 0,
    Mean = 1,
    Max = 2,
    Min = 3,
}

/// Convolution geometry: output `[Co, Ho, Wo]` from input `[Ci, H, W]` and weights
/// `[Co, Ci / groups, Kh, Kw]`; reads outside the input are zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub stride: [u32; 2],
    /// Padding before the first row and column; the output shape fixes the rest.
    pub pad: [u32; 2],
    pub dilation: [u32; 2],
    pub groups: u32,
}

/// Pooling window over `[C, H, W]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolWindow {
    pub kernel: [u32; 2],
    pub stride: [u32; 2],
    pub pad: [u32; 2],
}

/// A decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    End,
    /// DDR -> VTCM. `multicast` is a mask over the program's cores that also receive
    /// the data (0: only this core); DDR is read once. `peer_bytes` (pool sources only)
    /// is how many of the source's bytes other cores of the program hold in their VTCM:
    /// those cross the on-chip network, the rest is a copy within this core's VTCM.
    DmaIn {
        dst: Tensor,
        src: Tensor,
        multicast: u64,
        peer_bytes: u32,
    },
    /// VTCM -> DDR.
    DmaOut {
        dst: Tensor,
        src: Tensor,
    },
    /// `dst[M,N] (+)= (a[M,K] - zero_point) x b[K,N]` on HMX. `zero_point` is the
    /// integer `a`'s quantisation offset (0 for float operands).
    MatMul {
        dst: Tensor,
        a: Tensor,
        b: Tensor,
        accumulate: bool,
        zero_point: i32,
    },
    /// 2-D convolution on HMX of `input - zero_point`: an integer input's quantisation
    /// offset (0 for float operands) is taken off every element, so padding contributes
    /// nothing, as a real zero does.
    Conv2d {
        dst: Tensor,
        input: Tensor,
        weight: Tensor,
        geometry: ConvGeometry,
        accumulate: bool,
        zero_point: i32,
    },
    Binary {
        kind: BinaryKind,
        dst: Tensor,
        a: Tensor,
        b: Tensor,
    },
    Unary {
        kind: UnaryKind,
        dst: Tensor,
        src: Tensor,
    },
    /// dtype conversion, (de)quantisation and layout change (strides): float -> int is
    /// `round_half_even(x / scale) + zero_point` saturated; int -> float is
    /// `(q - zero_point) * scale`; i32 -> i8/u8/i16 is `round(x * scale) + zero_point`
    /// saturated; anything else converts the value. With `scales` (an f32 tensor of the
    /// destination's shape, typically a broadcast view of per-channel values) element
    /// `i` uses `scale * scales[i]`: per-channel requantisation in one pass.
    Convert {
        dst: Tensor,
        src: Tensor,
        scale: f32,
        zero_point: i32,
        scales: Option<Tensor>,
    },
    Pool {
        kind: PoolKind,
        dst: Tensor,
        src: Tensor,
        window: PoolWindow,
    },
    /// `[C, H, W]` -> `[C]` (or `[C, 1, 1]`) mean.
    GlobalAvgPool {
        dst: Tensor,
        src: Tensor,
    },
    /// Over the last axis.
    Softmax {
        dst: Tensor,
        src: Tensor,
    },
    /// `(x - mean) / sqrt(var + epsilon)` over the last axis.
    LayerNorm {
        dst: Tensor,
        src: Tensor,
        epsilon: f32,
    },
    /// Over the last axis; `dst` has the source's shape with the last dimension 1.
    Reduce {
        kind: ReduceKind,
        dst: Tensor,
        src: Tensor,
    },
    /// Adds `value` to the activation's core-sync counter `counter`.
    Signal {
        counter: u8,
        value: u16,
    },
    /// Waits until counter `counter` holds at least `value`, then takes `value` from it.
    Wait {
        counter: u8,
        value: u16,
    },
    /// Waits until every core of the program reaches its next barrier.
    Barrier,
    /// Row gather by DMA (an embedding look-up): `dst[i, :] = table[indices[i], :]`, the
    /// table `[V, H]` in DDR (or the pool), the int32 indices `[N]` and `dst` `[N, H]`
    /// in VTCM. An index outside `0..V` faults the run: nothing is read outside the table.
    Gather {
        dst: Tensor,
        table: Tensor,
        indices: Tensor,
    },
    /// Row scatter by DMA (a KV-cache update in place): `dst[g, indices[s], :] =
    /// src[g, s, :]`, `dst` `[G, C, R]` in DDR (or the pool), `src` `[G, S, R]` and the
    /// int32 indices `[S]` in VTCM. An index outside `0..C` faults the run: nothing is
    /// written outside `dst`.
    Scatter {
        dst: Tensor,
        src: Tensor,
        indices: Tensor,
    },
}

impl Op {
    /// The tensor the instruction writes (`None` for the sync instructions and `End`).
    pub fn dst(&self) -> Option<&Tensor> {
        match self {
            Op::DmaIn { dst, .. }
            | Op::DmaOut { dst, .. }
            | Op::MatMul { dst, .. }
            | Op::Conv2d { dst, .. }
            | Op::Binary { dst, .. }
            | Op::Unary { dst, .. }
            | Op::Convert { dst, .. }
            | Op::Pool { dst, .. }
            | Op::GlobalAvgPool { dst, .. }
            | Op::Softmax { dst, .. }
            | Op::LayerNorm { dst, .. }
            | Op::Reduce { dst, .. }
            | Op::Gather { dst, .. }
            | Op::Scatter { dst, .. } => Some(dst),
            Op::End | Op::Signal { .. } | Op::Wait { .. } | Op::Barrier => None,
        }
    }
}

/// Number of core-sync counters per activation.
pub const SYNC_COUNTERS: u8 = 32;

const OP_END: u16 = 0;
const OP_DMA_IN: u16 = 1;
const OP_DMA_OUT: u16 = 2;
const OP_MATMUL: u16 = 3;
const OP_CONV2D: u16 = 4;
const OP_BINARY: u16 = 5;
const OP_UNARY: u16 = 6;
const OP_CONVERT: u16 = 7;
const OP_POOL: u16 = 8;
const OP_GLOBAL_AVG_POOL: u16 = 9;
const OP_SOFTMAX: u16 = 10;
const OP_LAYER_NORM: u16 = 11;
const OP_REDUCE: u16 = 12;
const OP_SIGNAL: u16 = 13;
const OP_WAIT: u16 = 14;
const OP_BARRIER: u16 = 15;
const OP_GATHER: u16 = 16;
const OP_SCATTER: u16 = 17;

/// Why an instruction record does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("unknown variant {variant} of opcode {opcode}")]
    UnknownVariant { opcode: u16, variant: u16 },
    #[error("operand {what} {value} is not valid")]
    BadOperand { what: &'static str, value: u32 },
    #[error("missing {0} operand")]
    MissingOperand(&'static str),
    #[error("{0} is nonzero but unused")]
    NonzeroUnused(&'static str),
}

fn f(bits: u32) -> f32 {
    f32::from_bits(bits)
}

impl Instruction {
    pub fn encode(op: Op) -> Instruction {
        let mut i = Instruction::default();
        let none = OperandRecord::default();
        let (opcode, variant, dst, src0, src1) = match op {
            Op::End => (OP_END, 0, none, none, none),
            Op::DmaIn { dst, src, multicast, peer_bytes } => {
                i.aux = multicast as u32;
                i.params[0] = (multicast >> 32) as u32;
                i.params[1] = peer_bytes;
                (OP_DMA_IN, 0, dst.record(), src.record(), none)
            }
            Op::DmaOut { dst, src } => (OP_DMA_OUT, 0, dst.record(), src.record(), none),
            Op::MatMul { dst, a, b, accumulate, zero_point } => {
                i.params[0] = zero_point as u32;
                (OP_MATMUL, accumulate as u16, dst.record(), a.record(), b.record())
            }
            Op::Conv2d { dst, input, weight, geometry: g, accumulate, zero_point } => {
                let zp = zero_point as u32;
                i.params = [g.stride[0], g.stride[1], g.pad[0], g.pad[1], g.dilation[0], g.dilation[1], g.groups, zp];
                (OP_CONV2D, accumulate as u16, dst.record(), input.record(), weight.record())
            }
            Op::Binary { kind, dst, a, b } => (OP_BINARY, kind as u16, dst.record(), a.record(), b.record()),
            Op::Unary { kind, dst, src } => {
                let variant = match kind {
                    UnaryKind::Relu => 0,
                    UnaryKind::Clip { min, max } => {
                        i.params[0] = min.to_bits();
                        i.params[1] = max.to_bits();
                        1
                    }
                    UnaryKind::Sigmoid => 2,
                    UnaryKind::Tanh => 3,
                    UnaryKind::Gelu => 4,
                    UnaryKind::Exp => 5,
                    UnaryKind::Erf => 6,
                    UnaryKind::Sqrt => 7,
                    UnaryKind::Reciprocal => 8,
                    UnaryKind::Copy => 9,
                    UnaryKind::Pow { exponent } => {
                        i.params[0] = exponent.to_bits();
                        10
                    }
                    UnaryKind::Affine { scale, shift } => {
                        i.params[0] = scale.to_bits();
                        i.params[1] = shift.to_bits();
                        11
                    }
                };
                (OP_UNARY, variant, dst.record(), src.record(), none)
            }
            Op::Convert { dst, src, scale, zero_point, scales } => {
                i.params[0] = scale.to_bits();
                i.params[1] = zero_point as u32;
                (OP_CONVERT, 0, dst.record(), src.record(), scales.map_or(none, |s| s.record()))
            }
            Op::Pool { kind, dst, src, window: w } => {
                i.params = [w.kernel[0], w.kernel[1], w.stride[0], w.stride[1], w.pad[0], w.pad[1], 0, 0];
                (OP_POOL, kind as u16, dst.record(), src.record(), none)
            }
            Op::GlobalAvgPool { dst, src } => (OP_GLOBAL_AVG_POOL, 0, dst.record(), src.record(), none),
            Op::Softmax { dst, src } => (OP_SOFTMAX, 0, dst.record(), src.record(), none),
            Op::LayerNorm { dst, src, epsilon } => {
                i.params[0] = epsilon.to_bits();
                (OP_LAYER_NORM, 0, dst.record(), src.record(), none)
            }
            Op::Reduce { kind, dst, src } => (OP_REDUCE, kind as u16, dst.record(), src.record(), none),
            Op::Signal { counter, value } => {
                i.aux = counter.into();
                i.params[0] = value.into();
                (OP_SIGNAL, 0, none, none, none)
            }
            Op::Wait { counter, value } => {
                i.aux = counter.into();
                i.params[0] = value.into();
                (OP_WAIT, 0, none, none, none)
            }
            Op::Barrier => (OP_BARRIER, 0, none, none, none),
            Op::Gather { dst, table, indices } => (OP_GATHER, 0, dst.record(), table.record(), indices.record()),
            Op::Scatter { dst, src, indices } => (OP_SCATTER, 0, dst.record(), src.record(), indices.record()),
        };
        i.opcode = opcode;
        i.variant = variant;
        i.dst = dst;
        i.src0 = src0;
        i.src1 = src1;
        i
    }

    /// The operation this record encodes, every field checked. One arm per opcode, flat
    /// on purpose: each arm reads as the record layout of that opcode (compare
    /// [`Instruction::encode`]), and splitting them would scatter the format.
    pub fn decode(&self) -> Result<Op, DecodeError> {
        let dst = Tensor::decode(&self.dst)?;
        let src0 = Tensor::decode(&self.src0)?;
        let src1 = Tensor::decode(&self.src1)?;
        let need = |t: Option<Tensor>, what| t.ok_or(DecodeError::MissingOperand(what));
        let bad_variant = DecodeError::UnknownVariant { opcode: self.opcode, variant: self.variant };
        let p = self.params;
        let unused_params = |from: usize| {
            if p[from..].iter().any(|&v| v != 0) {
                Err(DecodeError::NonzeroUnused("params"))
            } else {
                Ok(())
            }
        };
        let no_aux = || if self.aux != 0 { Err(DecodeError::NonzeroUnused("aux")) } else { Ok(()) };
        let no_src1 = || if src1.is_some() { Err(DecodeError::NonzeroUnused("src1")) } else { Ok(()) };
        let no_variant = || if self.variant != 0 { Err(bad_variant) } else { Ok(()) };
        if self.reserved != 0 {
            return Err(DecodeError::NonzeroUnused("reserved"));
        }
        let op = match self.opcode {
            OP_END => {
                if *self != Instruction::default() {
                    return Err(DecodeError::NonzeroUnused("end operands"));
                }
                Op::End
            }
            OP_DMA_IN => {
                no_variant()?;
                no_src1()?;
                unused_params(2)?;
                Op::DmaIn {
                    dst: need(dst, "dst")?,
                    src: need(src0, "src")?,
                    multicast: u64::from(self.aux) | u64::from(p[0]) << 32,
                    peer_bytes: p[1],
                }
            }
            OP_DMA_OUT => {
                no_variant()?;
                no_aux()?;
                no_src1()?;
                unused_params(0)?;
                Op::DmaOut { dst: need(dst, "dst")?, src: need(src0, "src")? }
            }
            OP_MATMUL => {
                no_aux()?;
                unused_params(1)?;
                if self.variant > 1 {
                    return Err(bad_variant);
                }
                Op::MatMul {
                    dst: need(dst, "dst")?,
                    a: need(src0, "a")?,
                    b: need(src1, "b")?,
                    accumulate: self.variant == 1,
                    zero_point: p[0] as i32,
                }
            }
            OP_CONV2D => {
                no_aux()?;
                if self.variant > 1 {
                    return Err(bad_variant);
                }
                let geometry =
                    ConvGeometry { stride: [p[0], p[1]], pad: [p[2], p[3]], dilation: [p[4], p[5]], groups: p[6] };
                Op::Conv2d {
                    dst: need(dst, "dst")?,
                    input: need(src0, "input")?,
                    weight: need(src1, "weight")?,
                    geometry,
                    accumulate: self.variant == 1,
                    zero_point: p[7] as i32,
                }
            }
            OP_BINARY => {
                no_aux()?;
                unused_params(0)?;
                let kind = match self.variant {
                    0 => BinaryKind::Add,
                    1 => BinaryKind::Sub,
                    2 => BinaryKind::Mul,
                    3 => BinaryKind::Div,
                    4 => BinaryKind::Max,
                    5 => BinaryKind::Min,
                    6 => BinaryKind::Less,
                    7 => BinaryKind::LessOrEqual,
                    8 => BinaryKind::Equal,
                    _ => return Err(bad_variant),
                };
                Op::Binary { kind, dst: need(dst, "dst")?, a: need(src0, "a")?, b: need(src1, "b")? }
            }
            OP_UNARY => {
                no_aux()?;
                no_src1()?;
                let kind = match self.variant {
                    0 => UnaryKind::Relu,
                    1 => UnaryKind::Clip { min: f(p[0]), max: f(p[1]) },
                    2 => UnaryKind::Sigmoid,
                    3 => UnaryKind::Tanh,
                    4 => UnaryKind::Gelu,
                    5 => UnaryKind::Exp,
                    6 => UnaryKind::Erf,
                    7 => UnaryKind::Sqrt,
                    8 => UnaryKind::Reciprocal,
                    9 => UnaryKind::Copy,
                    10 => UnaryKind::Pow { exponent: f(p[0]) },
                    11 => UnaryKind::Affine { scale: f(p[0]), shift: f(p[1]) },
                    _ => return Err(bad_variant),
                };
                unused_params(match self.variant {
                    1 | 11 => 2,
                    10 => 1,
                    _ => 0,
                })?;
                Op::Unary { kind, dst: need(dst, "dst")?, src: need(src0, "src")? }
            }
            OP_CONVERT => {
                no_variant()?;
                no_aux()?;
                unused_params(2)?;
                Op::Convert {
                    dst: need(dst, "dst")?,
                    src: need(src0, "src")?,
                    scale: f(p[0]),
                    zero_point: p[1] as i32,
                    scales: src1,
                }
            }
            OP_POOL => {
                no_aux()?;
                no_src1()?;
                unused_params(6)?;
                let kind = match self.variant {
                    0 => PoolKind::Max,
                    1 => PoolKind::Avg,
                    2 => PoolKind::AvgIncludePad,
                    _ => return Err(bad_variant),
                };
                let window = PoolWindow { kernel: [p[0], p[1]], stride: [p[2], p[3]], pad: [p[4], p[5]] };
                Op::Pool { kind, dst: need(dst, "dst")?, src: need(src0, "src")?, window }
            }
            OP_GLOBAL_AVG_POOL | OP_SOFTMAX => {
                no_variant()?;
                no_aux()?;
                no_src1()?;
                unused_params(0)?;
                let (dst, src) = (need(dst, "dst")?, need(src0, "src")?);
                if self.opcode == OP_SOFTMAX {
                    Op::Softmax { dst, src }
                } else {
                    Op::GlobalAvgPool { dst, src }
                }
            }
            OP_LAYER_NORM => {
                no_variant()?;
                no_aux()?;
                no_src1()?;
                unused_params(1)?;
                Op::LayerNorm { dst: need(dst, "dst")?, src: need(src0, "src")?, epsilon: f(p[0]) }
            }
            OP_REDUCE => {
                no_aux()?;
                no_src1()?;
                unused_params(0)?;
                let kind = match self.variant {
                    0 => ReduceKind::Sum,
                    1 => ReduceKind::Mean,
                    2 => ReduceKind::Max,
                    3 => ReduceKind::Min,
                    _ => return Err(bad_variant),
                };
                Op::Reduce { kind, dst: need(dst, "dst")?, src: need(src0, "src")? }
            }
            OP_SIGNAL | OP_WAIT => {
                no_variant()?;
                unused_params(1)?;
                if dst.is_some() || src0.is_some() || src1.is_some() {
                    return Err(DecodeError::NonzeroUnused("operands of a sync op"));
                }
                let counter = u8::try_from(self.aux)
                    .ok()
                    .filter(|&c| c < SYNC_COUNTERS)
                    .ok_or(DecodeError::BadOperand { what: "sync counter", value: self.aux })?;
                let value =
                    u16::try_from(p[0]).map_err(|_| DecodeError::BadOperand { what: "sync value", value: p[0] })?;
                if self.opcode == OP_SIGNAL {
                    Op::Signal { counter, value }
                } else {
                    Op::Wait { counter, value }
                }
            }
            OP_BARRIER => {
                if *self != Instruction::encode(Op::Barrier) {
                    return Err(DecodeError::NonzeroUnused("barrier fields"));
                }
                Op::Barrier
            }
            OP_GATHER => {
                no_variant()?;
                no_aux()?;
                unused_params(0)?;
                Op::Gather { dst: need(dst, "dst")?, table: need(src0, "table")?, indices: need(src1, "indices")? }
            }
            OP_SCATTER => {
                no_variant()?;
                no_aux()?;
                unused_params(0)?;
                Op::Scatter { dst: need(dst, "dst")?, src: need(src0, "src")?, indices: need(src1, "indices")? }
            }
            other => return Err(DecodeError::UnknownOpcode(other)),
        };
        Ok(op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn t(space: Space, dtype: DType, shape: &[u32]) -> Tensor {
        Tensor::contiguous(space, 64, dtype, shape)
    }

    #[test]
    fn every_op_roundtrips_through_its_record() {
        let v = t(Space::Vtcm, DType::F32, &[2, 3]);
        let d = t(Space::Ddr, DType::F32, &[2, 3]);
        let ops = vec![
            Op::End,
            Op::DmaIn { dst: v, src: d.with_strides(&[7, 1]), multicast: 0x1_0000_0003, peer_bytes: 0 },
            Op::DmaIn { dst: v, src: t(Space::Pool, DType::F32, &[2, 3]), multicast: 0, peer_bytes: 16 },
            Op::DmaOut { dst: d, src: v },
            Op::MatMul { dst: v, a: v, b: v, accumulate: true, zero_point: -7 },
            Op::Conv2d {
                dst: t(Space::Vtcm, DType::I32, &[4, 5, 5]),
                input: t(Space::Vtcm, DType::U8, &[2, 7, 7]),
                weight: t(Space::Vtcm, DType::I8, &[4, 2, 3, 3]),
                geometry: ConvGeometry { stride: [2, 1], pad: [0, 1], dilation: [1, 1], groups: 2 },
                accumulate: true,
                zero_point: 131,
            },
            Op::Conv2d {
                dst: t(Space::Vtcm, DType::F16, &[4, 5, 5]),
                input: t(Space::Vtcm, DType::F16, &[2, 7, 7]),
                weight: t(Space::Vtcm, DType::F16, &[4, 2, 3, 3]),
                geometry: ConvGeometry { stride: [1, 2], pad: [1, 0], dilation: [1, 1], groups: 1 },
                accumulate: false,
                zero_point: 0,
            },
            Op::Binary { kind: BinaryKind::Div, dst: v, a: v, b: v.with_strides(&[0, 1]) },
            Op::Unary { kind: UnaryKind::Clip { min: -1.5, max: 6.0 }, dst: v, src: v },
            Op::Unary { kind: UnaryKind::Gelu, dst: v, src: v },
            Op::Unary { kind: UnaryKind::Pow { exponent: -0.75 }, dst: v, src: v },
            Op::Unary { kind: UnaryKind::Affine { scale: 2.5, shift: -1.0 }, dst: v, src: v },
            Op::Convert { dst: t(Space::Vtcm, DType::I8, &[2, 3]), src: v, scale: 0.05, zero_point: -3, scales: None },
            Op::Convert {
                dst: t(Space::Vtcm, DType::I8, &[2, 3]),
                src: t(Space::Vtcm, DType::I32, &[2, 3]),
                scale: 1.0,
                zero_point: 5,
                scales: Some(v.with_strides(&[1, 0])),
            },
            Op::Pool {
                kind: PoolKind::AvgIncludePad,
                dst: v,
                src: v,
                window: PoolWindow { kernel: [3, 3], stride: [2, 2], pad: [1, 1] },
            },
            Op::GlobalAvgPool { dst: v, src: v },
            Op::Softmax { dst: v, src: v },
            Op::LayerNorm { dst: v, src: v, epsilon: 1e-5 },
            Op::Reduce { kind: ReduceKind::Mean, dst: v, src: v },
            Op::Signal { counter: 31, value: 4095 },
            Op::Wait { counter: 0, value: 1 },
            Op::Barrier,
            Op::Gather {
                dst: t(Space::Vtcm, DType::F16, &[5, 64]),
                table: t(Space::Ddr, DType::F16, &[1000, 64]),
                indices: t(Space::Vtcm, DType::I32, &[5]),
            },
            Op::Scatter {
                dst: t(Space::Ddr, DType::F16, &[12, 128, 64]),
                src: t(Space::Vtcm, DType::F16, &[12, 1, 64]),
                indices: t(Space::Vtcm, DType::I32, &[1]),
            },
            Op::Binary { kind: BinaryKind::LessOrEqual, dst: v, a: v, b: v },
            Op::Binary { kind: BinaryKind::Equal, dst: v, a: v, b: v },
        ];
        for op in ops {
            assert_eq!(Instruction::encode(op).decode(), Ok(op), "{op:?}");
        }
    }

    #[test]
    fn unknown_and_unused_fields_are_rejected() {
        assert_eq!(Instruction { opcode: 99, ..Default::default() }.decode(), Err(DecodeError::UnknownOpcode(99)));
        let mut i = Instruction::encode(Op::Softmax {
            dst: t(Space::Vtcm, DType::F32, &[4]),
            src: t(Space::Vtcm, DType::F32, &[4]),
        });
        i.params[3] = 1;
        assert_eq!(i.decode(), Err(DecodeError::NonzeroUnused("params")));
        let mut i = Instruction::encode(Op::Barrier);
        i.variant = 2;
        assert!(i.decode().is_err());
        let mut i = Instruction::encode(Op::Signal { counter: 1, value: 1 });
        i.aux = 40;
        assert!(matches!(i.decode(), Err(DecodeError::BadOperand { what: "sync counter", .. })));
        let mut i = Instruction::encode(Op::DmaOut {
            dst: t(Space::Ddr, DType::F32, &[4]),
            src: t(Space::Vtcm, DType::F32, &[4]),
        });
        i.dst.shape[2] = 9;
        assert!(i.decode().is_err());
        i = Instruction::encode(Op::DmaOut {
            dst: t(Space::Ddr, DType::F32, &[4]),
            src: t(Space::Vtcm, DType::F32, &[4]),
        });
        i.src0.dtype = 9;
        assert_eq!(i.decode(), Err(DecodeError::BadOperand { what: "dtype", value: 9 }));
    }

    #[test]
    fn spans_and_contiguity_follow_strides() {
        let a = Tensor::contiguous(Space::Vtcm, 0, DType::F16, &[2, 3, 4]);
        assert!(a.is_contiguous());
        assert_eq!(a.span_bytes(), Some(48));
        let b = a.with_strides(&[0, 4, 1]);
        assert!(!b.is_contiguous());
        assert_eq!(b.span_bytes(), Some(24));
        let transposed = Tensor::contiguous(Space::Vtcm, 0, DType::F32, &[4, 3]).with_strides(&[1, 4]);
        assert_eq!(transposed.span_bytes(), Some(48));
    }
}
