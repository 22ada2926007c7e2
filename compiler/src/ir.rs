//! The compiler's graph after import: constants folded, batch-norms folded into their
//! convolutions, activations fused into the layer that produces their input. What is
//! left is a list of layers over runtime float tensors, each of which the lowering
//! ([`crate::lower`]) turns into tiled device instructions.

use aicsim_abi::isa::{BinaryKind, PoolKind, ReduceKind, UnaryKind};

/// A tensor whose values are known at compile time.
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    pub shape: Vec<usize>,
    pub data: ConstData,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ConstData {
    F32(Vec<f32>),
    /// Integers and booleans (shape arithmetic, indices, masks).
    I64(Vec<i64>),
}

impl Const {
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Const {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        Const { shape, data: ConstData::F32(values) }
    }

    pub fn i64(shape: Vec<usize>, values: Vec<i64>) -> Const {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        Const { shape, data: ConstData::I64(values) }
    }

    pub fn len(&self) -> usize {
        match &self.data {
            ConstData::F32(v) => v.len(),
            ConstData::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_int(&self) -> bool {
        matches!(self.data, ConstData::I64(_))
    }

    /// The values as f32 (integers convert).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            ConstData::F32(v) => v.clone(),
            ConstData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The values as f64, for folding arithmetic.
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            ConstData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            ConstData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    /// The values as integers (floats truncate toward zero).
    pub fn to_i64(&self) -> Vec<i64> {
        match &self.data {
            ConstData::F32(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::I64(v) => v.clone(),
        }
    }

    /// Gathers elements by flat index into a new constant of `shape`.
    pub fn pick(&self, shape: Vec<usize>, indices: impl Iterator<Item = usize>) -> Const {
        match &self.data {
            ConstData::F32(v) => Const { shape, data: ConstData::F32(indices.map(|i| v[i]).collect()) },
            ConstData::I64(v) => Const { shape, data: ConstData::I64(indices.map(|i| v[i]).collect()) },
        }
    }
}

pub type ValueId = usize;
pub type ConstId = usize;

/// How a quantised tensor's integers stand for real numbers: `(q - zero_point) * scale`
/// (ONNX's `DequantizeLinear`). Stored as int8 (or int16): a uint8 (uint16) tensor of
/// the model is kept as `q - 128` (`q - 32768`) with its zero point moved likewise,
/// which is exact.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quant {
    pub scale: f32,
    /// In the storage type's range (`-128..=127`, or `-32768..=32767` for int16).
    pub zero_point: i32,
    /// Stored in 16 bits (`-quantization-precision=Int16`, int16/uint16 QDQ models).
    pub int16: bool,
}

impl Quant {
    /// The device type the integers are stored in.
    pub fn dtype(&self) -> aicsim_abi::isa::DType {
        if self.int16 {
            aicsim_abi::isa::DType::I16
        } else {
            aicsim_abi::isa::DType::I8
        }
    }

    /// The storage type's lowest integer: a zero point there means the range starts at
    /// 0 (where ReLU is the saturation itself).
    pub fn lowest(&self) -> i32 {
        if self.int16 {
            -32768
        } else {
            -128
        }
    }
}

/// A runtime tensor: float (in the program's dtype), or int8 with its [`Quant`]. Several
/// values may share one storage (a reshape is a view).
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    /// The shape within one replica of the graph (see `-batchsize`).
    pub shape: Vec<usize>,
    /// The value whose DDR bytes this one uses (itself unless it is a view).
    pub storage: ValueId,
    /// Set when the value is stored as int8 (a `QuantizeLinear` output).
    pub quant: Option<Quant>,
    /// Set when the value is stored as int32: integer inputs (token ids, masks; the host
    /// converts int64), and views of them. Gather takes them as indices; float layers
    /// read them converted.
    pub int32: bool,
}

impl Value {
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An operand of an element-wise chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    Value(ValueId),
    Const(ConstId),
}

/// One step of an element-wise chain applied to the running result `acc`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ChainStep {
    /// `acc = acc op operand`, or `operand op acc` when `swapped`.
    Binary {
        kind: BinaryKind,
        operand: Operand,
        swapped: bool,
    },
    Unary(UnaryKind),
}

/// An activation fused into a convolution or a matrix multiplication.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FusedActivation {
    None,
    Unary(UnaryKind),
}

#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    /// 2-D convolution over `[N, C, H, W]`; weight `[Co, C / groups, Kh, Kw]`.
    Conv {
        input: ValueId,
        weight: ConstId,
        bias: Option<ConstId>,
        stride: [usize; 2],
        /// Padding before the first row / column.
        pad: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
        /// A value of the output's shape added before the activation (a fused residual
        /// connection: `act(conv(x) + bias + residual)`).
        residual: Option<ValueId>,
        act: FusedActivation,
        /// An int8 convolution: the input is an int8 value, `weight` holds int8
        /// integers (symmetric), and this f32 `[Co]` constant holds each output
        /// channel's `input scale x weight scale`, which turns the int32 sums into reals.
        int8: Option<ConstId>,
    },
    /// `[M, K] x [K, N] (+ bias [N])` with a constant right-hand side.
    Dense {
        input: ValueId,
        weight: ConstId,
        bias: Option<ConstId>,
        act: FusedActivation,
        /// An int8 product, as for `Conv`: int8 input and weights, int32 bias, and this
        /// f32 `[N]` constant of each column's `input scale x weight scale`.
        int8: Option<ConstId>,
    },
    /// Batched `[.., M, K] x [.., K, N]` of two runtime tensors (leading dims equal).
    /// With `b_transposed`, `b` is stored `[.., N, K]` and read transposed (a key cache
    /// times the queries: no copy of the cache).
    MatMul {
        a: ValueId,
        b: ValueId,
        b_transposed: bool,
    },
    /// An element-wise chain with numpy broadcasting; `first` starts the result.
    Elementwise {
        first: Operand,
        steps: Vec<ChainStep>,
    },
    Pool {
        input: ValueId,
        kind: PoolKind,
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
    },
    GlobalAvgPool {
        input: ValueId,
    },
    /// Over rows of `row` elements (the trailing dimensions).
    Softmax {
        input: ValueId,
        row: usize,
    },
    /// Normalisation over the last axis, then optional scale and shift (both `[row]`).
    LayerNorm {
        input: ValueId,
        epsilon: f32,
        scale: Option<ConstId>,
        bias: Option<ConstId>,
    },
    /// Local response normalisation across channels of `[N, C, H, W]`.
    Lrn {
        input: ValueId,
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    },
    Concat {
        inputs: Vec<ValueId>,
        axis: usize,
    },
    Transpose {
        input: ValueId,
        perm: Vec<usize>,
    },
    /// Over the last axis (keeping it as 1).
    Reduce {
        input: ValueId,
        kind: ReduceKind,
    },
    /// Rows of a constant table `[V, H]` picked by int32 indices (an embedding look-up):
    /// the output is the indices' shape plus `[H]`.
    Gather {
        table: ConstId,
        indices: ValueId,
    },
    /// Constant padding: `begin[d]` elements before each axis; `fill` is a scalar.
    Pad {
        input: ValueId,
        begin: Vec<usize>,
        fill: ConstId,
    },
    /// A box of the input starting `begin[d]` elements into each axis; the output's
    /// shape is the box's.
    Slice {
        input: ValueId,
        begin: Vec<usize>,
    },
    /// A KV-cache update in place: the rows of `updates` `[B, H, S, D]` written into
    /// `data` `[B, H, C, D]` at the int32 positions `positions` `[B, S]`; the output is
    /// `data`'s storage. A position outside `0..C` faults the run on the device.
    Scatter {
        data: ValueId,
        positions: ValueId,
        updates: ValueId,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// The ONNX node it came from (the first, for fused layers).
    pub name: String,
    pub op_type: String,
    pub kind: LayerKind,
    pub output: ValueId,
}

impl Layer {
    /// Runtime values the layer reads.
    pub fn inputs(&self) -> Vec<ValueId> {
        match &self.kind {
            LayerKind::Conv { input, residual: Some(r), .. } => vec![*input, *r],
            LayerKind::Conv { input, .. }
            | LayerKind::Dense { input, .. }
            | LayerKind::Pool { input, .. }
            | LayerKind::GlobalAvgPool { input }
            | LayerKind::Softmax { input, .. }
            | LayerKind::LayerNorm { input, .. }
            | LayerKind::Lrn { input, .. }
            | LayerKind::Transpose { input, .. }
            | LayerKind::Reduce { input, .. }
            | LayerKind::Pad { input, .. }
            | LayerKind::Slice { input, .. } => vec![*input],
            LayerKind::Scatter { data, positions, updates } => vec![*data, *positions, *updates],
            LayerKind::Gather { indices, .. } => vec![*indices],
            LayerKind::MatMul { a, b, .. } => vec![*a, *b],
            LayerKind::Concat { inputs, .. } => inputs.clone(),
            LayerKind::Elementwise { first, steps } => core::iter::once(first)
                .chain(steps.iter().filter_map(|s| match s {
                    ChainStep::Binary { operand, .. } => Some(operand),
                    ChainStep::Unary(_) => None,
                }))
                .filter_map(|o| match o {
                    Operand::Value(v) => Some(*v),
                    Operand::Const(_) => None,
                })
                .collect(),
        }
    }
}

/// A graph input or output.
#[derive(Clone, Debug, PartialEq)]
pub struct Io {
    pub name: String,
    pub value: ValueId,
    /// The ONNX element type the host gives (or takes): FLOAT, or INT64 / INT32 for an
    /// integer input (stored as int32 on the device).
    pub elem_type: i32,
}

/// The imported graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    pub values: Vec<Value>,
    pub consts: Vec<Const>,
    /// Names of the constants (for warnings and reports).
    pub const_names: Vec<String>,
    pub layers: Vec<Layer>,
    pub inputs: Vec<Io>,
    pub outputs: Vec<Io>,
    /// What the import noticed and said (quantised layers left in float).
    pub warnings: Vec<String>,
}

impl Graph {
    pub fn add_value(&mut self, name: &str, shape: Vec<usize>) -> ValueId {
        let id = self.values.len();
        self.values.push(Value { name: name.into(), shape, storage: id, quant: None, int32: false });
        id
    }

    pub fn add_const(&mut self, name: &str, c: Const) -> ConstId {
        self.consts.push(c);
        self.const_names.push(name.into());
        self.consts.len() - 1
    }

    /// Multiply-accumulates of one layer in one replica of the graph.
    pub fn layer_macs(&self, l: &Layer) -> u64 {
        let out = self.values[l.output].elements() as u64;
        match &l.kind {
            LayerKind::Conv { weight, .. } => {
                let w = &self.consts[*weight].shape;
                out * (w[1] * w[2] * w[3]) as u64
            }
            LayerKind::Dense { weight, .. } => out * self.consts[*weight].shape[0] as u64,
            LayerKind::MatMul { a, .. } => out * *self.values[*a].shape.last().unwrap_or(&1) as u64,
            _ => 0,
        }
    }

    /// Multiply-accumulates of one replica of the graph.
    pub fn macs(&self) -> u64 {
        self.layers.iter().map(|l| self.layer_macs(l)).sum()
    }
}
