//! Import: an ONNX model becomes an [`ir::Graph`]. Nodes whose inputs are all known are
//! evaluated now ([`crate::fold`]); batch normalisations fold into the convolution before
//! them (or become a per-channel scale and shift); activations, biases and element-wise
//! chains fuse into the layer that produces their input; reshapes become views.

use std::collections::HashMap;
use std::path::Path;

use aicsim_abi::isa::{BinaryKind, PoolKind, ReduceKind, UnaryKind};

use crate::fold::{self, scalar};
use crate::ir::{ChainStep, Const, ConstId, FusedActivation, Graph, Io, Layer, LayerKind, Operand, ValueId};
use crate::onnx::{data_type, AttributeValue, Dim, Model, Node, Tensor};
use crate::shapes::{ShapeError, Shapes};
use crate::CompileError;

#[derive(Clone, Debug)]
pub(crate) enum Entry {
    Const(ConstId),
    Value(ValueId),
}

pub(crate) struct Builder<'a> {
    pub(crate) g: Graph,
    pub(crate) env: HashMap<String, Entry>,
    pub(crate) shapes: Shapes,
    pub(crate) opset: i64,
    /// How many node inputs and graph outputs name each tensor.
    pub(crate) uses: HashMap<String, usize>,
    /// Which layer produced each value.
    pub(crate) producer: HashMap<ValueId, usize>,
    pub(crate) graph_outputs: Vec<String>,
    pub(crate) model_dir: Option<&'a Path>,
    /// ONNX element types of integer constants (what a zero point's range is).
    pub(crate) elem_types: HashMap<String, i32>,
    /// Constants that are dequantised integers, by the float constant's id.
    pub(crate) quant_consts: HashMap<ConstId, crate::ops::QuantConst>,
    /// The dequantising layer's output for each int8 value a float layer reads.
    pub(crate) float_views: HashMap<ValueId, ValueId>,
}

/// A tensor proto as a constant.
pub(crate) fn tensor_const(t: &Tensor, model_dir: Option<&Path>) -> Result<Const, CompileError> {
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| CompileError::Model(format!("tensor '{}' has a negative dimension {:?}", t.name, t.dims)))?;
    let values = t.to_f32(model_dir)?;
    Ok(match t.data_type {
        ty if data_type::is_integer(ty) => {
            let ints = match &t.data {
                crate::onnx::TensorData::Int64s(v) | crate::onnx::TensorData::Int32s(v) => v.clone(),
                crate::onnx::TensorData::Raw(raw) if t.data_type == data_type::INT64 => {
                    raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
                }
                _ => values.iter().map(|&v| v as i64).collect(),
            };
            Const::i64(shape, ints)
        }
        _ => Const::f32(shape, values),
    })
}

impl<'a> Builder<'a> {
    pub(crate) fn fail(&self, node: &Node, reason: impl Into<String>) -> CompileError {
        CompileError::Node { node: node.name.clone(), op_type: node.op_type.clone(), reason: reason.into() }
    }

    /// A quantised layer the integer engines cannot take runs in float: said, not silent.
    pub(crate) fn kept_in_float(&mut self, node: &Node, why: &str) {
        self.g.warnings.push(format!("{} '{}' runs in float: {why}", node.op_type, node.name));
    }

    pub(crate) fn unsupported(&self, node: &Node) -> CompileError {
        CompileError::Unsupported { op_type: node.op_type.clone(), node: node.name.clone(), opset: self.opset }
    }

    pub(crate) fn bind_const(&mut self, name: &str, c: Const) {
        self.shapes.dims.insert(name.into(), c.shape.iter().map(|&d| d as i64).collect());
        if c.is_int() && c.len() <= 64 {
            self.shapes.values.insert(name.into(), c.to_i64());
        }
        let id = self.g.add_const(name, c);
        self.env.insert(name.into(), Entry::Const(id));
    }

    pub(crate) fn bind_value(&mut self, name: &str, v: ValueId) {
        self.shapes.dims.insert(name.into(), self.g.values[v].shape.iter().map(|&d| d as i64).collect());
        self.env.insert(name.into(), Entry::Value(v));
    }

    pub(crate) fn entry(&self, node: &Node, i: usize) -> Result<Option<Entry>, CompileError> {
        match node.inputs.get(i) {
            None => Ok(None),
            Some(n) if n.is_empty() => Ok(None),
            Some(n) => self.env.get(n).cloned().map(Some).ok_or_else(|| {
                CompileError::Shape(ShapeError::MissingInput {
                    node: node.name.clone(),
                    op_type: node.op_type.clone(),
                    input: n.clone(),
                })
            }),
        }
    }

    /// Runtime input `i` of `node` as a float value: an int8 value is read through a
    /// dequantising layer (one per value), since only int8-aware layers take int8.
    pub(crate) fn value(&mut self, node: &Node, i: usize) -> Result<ValueId, CompileError> {
        let v = self.value_as_stored(node, i)?;
        Ok(self.float_view(v))
    }

    /// The float value an int8 value dequantises to, or an int32 value converts to (the
    /// value itself if it is float).
    pub(crate) fn float_view(&mut self, v: ValueId) -> ValueId {
        if self.g.values[v].quant.is_none() && !self.g.values[v].int32 {
            return v;
        }
        if let Some(&f) = self.float_views.get(&v) {
            return f;
        }
        let (suffix, op_type) =
            if self.g.values[v].int32 { ("float", "Cast") } else { ("dequantized", "DequantizeLinear") };
        let name = format!("{}_{suffix}", self.g.values[v].name);
        let f = self.g.add_value(&name, self.g.values[v].shape.clone());
        self.producer.insert(f, self.g.layers.len());
        self.g.layers.push(Layer {
            name: name.clone(),
            op_type: op_type.into(),
            kind: LayerKind::Elementwise { first: Operand::Value(v), steps: vec![] },
            output: f,
        });
        self.float_views.insert(v, f);
        f
    }

    /// Runtime input `i` of `node` as it is stored (int8 or float).
    pub(crate) fn value_as_stored(&self, node: &Node, i: usize) -> Result<ValueId, CompileError> {
        match self.entry(node, i)? {
            Some(Entry::Value(v)) => Ok(v),
            Some(Entry::Const(_)) => {
                Err(self.fail(node, format!("input {i} must be a runtime tensor, not a constant")))
            }
            None => Err(self.fail(node, format!("input {i} is missing"))),
        }
    }

    pub(crate) fn konst(&self, node: &Node, i: usize) -> Result<Option<ConstId>, CompileError> {
        match self.entry(node, i)? {
            Some(Entry::Const(c)) => Ok(Some(c)),
            Some(Entry::Value(_)) => Err(self.fail(
                node,
                format!("input {i} ('{}') must be known at compile time (an initializer or constant)", node.inputs[i]),
            )),
            None => Ok(None),
        }
    }

    pub(crate) fn operand(&self, node: &Node, i: usize) -> Result<Operand, CompileError> {
        match self.entry(node, i)? {
            Some(Entry::Value(v)) => Ok(Operand::Value(v)),
            Some(Entry::Const(c)) => Ok(Operand::Const(c)),
            None => Err(self.fail(node, format!("input {i} is missing"))),
        }
    }

    /// The shape inference's output dims for `node`.
    pub(crate) fn out_shape(&mut self, node: &Node) -> Result<Vec<usize>, CompileError> {
        self.shapes.node(node, self.opset)?;
        let dims = &self.shapes.dims[&node.outputs[0]];
        let shape: Vec<usize> = dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| self.fail(node, format!("output dimension {d} is negative"))))
            .collect::<Result<_, _>>()?;
        checked_elements(&shape).ok_or_else(|| self.fail(node, format!("output shape {shape:?} is too large")))?;
        Ok(shape)
    }

    pub(crate) fn single_use(&self, name: &str) -> bool {
        self.uses.get(name).copied().unwrap_or(0) <= 1 && !self.graph_outputs.iter().any(|o| o == name)
    }

    pub(crate) fn add_layer(&mut self, node: &Node, kind: LayerKind, shape: Vec<usize>) -> ValueId {
        let out = self.g.add_value(&node.outputs[0], shape);
        self.producer.insert(out, self.g.layers.len());
        self.g.layers.push(Layer { name: node.name.clone(), op_type: node.op_type.clone(), kind, output: out });
        self.bind_value(&node.outputs[0].clone(), out);
        out
    }

    /// Makes `node`'s output another name of `v` (the layer producing `v` absorbed it).
    pub(crate) fn rename(&mut self, node: &Node, v: ValueId) {
        self.g.values[v].name = node.outputs[0].clone();
        self.bind_value(&node.outputs[0].clone(), v);
    }

    /// The layer that produced `v`, if `name` (its only reader) may fuse into it. Not
    /// when `v` is int8: what follows reads the rounded integers, not the sums before.
    pub(crate) fn fusable(&self, name: &str, v: ValueId) -> Option<usize> {
        if !self.single_use(name) || self.g.values[v].storage != v || self.g.values[v].quant.is_some() {
            return None;
        }
        self.producer.get(&v).copied()
    }

    pub(crate) fn view(&mut self, node: &Node, shape: Vec<usize>) -> Result<(), CompileError> {
        let x = self.value_as_stored(node, 0)?;
        let storage = self.g.values[x].storage;
        let id = self.g.add_value(&node.outputs[0], shape);
        self.g.values[id].storage = storage;
        self.g.values[id].quant = self.g.values[x].quant;
        self.g.values[id].int32 = self.g.values[x].int32;
        self.bind_value(&node.outputs[0].clone(), id);
        Ok(())
    }

    pub(crate) fn unary(&mut self, node: &Node, kind: UnaryKind) -> Result<(), CompileError> {
        let x = self.value(node, 0)?;
        let shape = self.g.values[x].shape.clone();
        if let Some(l) = self.fusable(&node.inputs[0], x) {
            let fused = match &mut self.g.layers[l].kind {
                // (An int8 convolution applies ReLU to its int32 sums; nothing else.)
                LayerKind::Conv { act, int8: None, .. } | LayerKind::Dense { act, int8: None, .. }
                    if *act == FusedActivation::None && matches!(kind, UnaryKind::Relu | UnaryKind::Clip { .. }) =>
                {
                    *act = FusedActivation::Unary(kind);
                    true
                }
                LayerKind::Conv { act, int8: Some(_), .. } | LayerKind::Dense { act, int8: Some(_), .. }
                    if *act == FusedActivation::None && kind == UnaryKind::Relu =>
                {
                    *act = FusedActivation::Unary(kind);
                    true
                }
                LayerKind::Elementwise { steps, .. } => {
                    steps.push(ChainStep::Unary(kind));
                    true
                }
                _ => false,
            };
            if fused {
                self.rename(node, x);
                return Ok(());
            }
        }
        self.add_layer(
            node,
            LayerKind::Elementwise { first: Operand::Value(x), steps: vec![ChainStep::Unary(kind)] },
            shape,
        );
        Ok(())
    }

    /// A binary element-wise node; constant scalars become affine steps.
    pub(crate) fn binary(&mut self, node: &Node, kind: BinaryKind) -> Result<(), CompileError> {
        let shape = self.out_shape(node)?;
        let mut operands = Vec::new();
        for i in 0..node.inputs.len() {
            // A dequantised int8 operand is read as int8 (the chain dequantises it).
            operands.push(match self.operand(node, i)? {
                Operand::Value(v) => Operand::Value(self.dequantized(v).unwrap_or(v)),
                c => c,
            });
        }
        // The running value is the first runtime operand; of two, the one an element-wise
        // chain produced when the operation commutes (so `x * chain(x)` joins the chain,
        // as in GELU's `x * (1 + erf(x / sqrt 2))`).
        let mut lead = operands.iter().position(|o| matches!(o, Operand::Value(_))).expect("not all constant");
        if let [Operand::Value(a), Operand::Value(b)] = operands[..] {
            let chain = |name: &str, v: ValueId| {
                self.fusable(name, v).is_some_and(|l| matches!(self.g.layers[l].kind, LayerKind::Elementwise { .. }))
            };
            let commutes = matches!(kind, BinaryKind::Add | BinaryKind::Mul | BinaryKind::Max | BinaryKind::Min);
            if commutes && !chain(&node.inputs[0], a) && chain(&node.inputs[1], b) {
                lead = 1;
            }
        }
        let Operand::Value(x) = operands[lead] else { unreachable!() };
        let mut steps = Vec::new();
        for (i, o) in operands.iter().enumerate() {
            if i == lead {
                continue;
            }
            let swapped = i < lead;
            let step = match *o {
                Operand::Const(c) => match (scalar(&self.g.consts[c]), kind, swapped) {
                    (Some(v), BinaryKind::Add, _) => ChainStep::Unary(UnaryKind::Affine { scale: 1.0, shift: v }),
                    (Some(v), BinaryKind::Mul, _) => ChainStep::Unary(UnaryKind::Affine { scale: v, shift: 0.0 }),
                    (Some(v), BinaryKind::Sub, false) => ChainStep::Unary(UnaryKind::Affine { scale: 1.0, shift: -v }),
                    (Some(v), BinaryKind::Sub, true) => ChainStep::Unary(UnaryKind::Affine { scale: -1.0, shift: v }),
                    (Some(v), BinaryKind::Div, false) => {
                        ChainStep::Unary(UnaryKind::Affine { scale: 1.0 / v, shift: 0.0 })
                    }
                    _ => ChainStep::Binary { kind, operand: *o, swapped },
                },
                Operand::Value(_) => ChainStep::Binary { kind, operand: *o, swapped },
            };
            steps.push(step);
        }
        // A constant bias right after a bias-less convolution or dense layer joins it.
        if let ([ChainStep::Binary { kind: BinaryKind::Add, operand: Operand::Const(c), .. }], Some(l)) =
            (steps.as_slice(), self.fusable(&node.inputs[lead], x))
        {
            let c = *c;
            let channels = match &self.g.layers[l].kind {
                LayerKind::Conv { bias: None, act: FusedActivation::None, weight, int8: None, .. } => {
                    let co = self.g.consts[*weight].shape[0];
                    let cs = &self.g.consts[c].shape;
                    // [C, 1, 1] or [1, C, 1, 1]
                    (cs.iter().product::<usize>() == co
                        && cs.len() >= 3
                        && cs[cs.len() - 2..] == [1, 1]
                        && shape.len() == 4)
                        .then_some(co)
                }
                LayerKind::Dense { bias: None, act: FusedActivation::None, weight, int8: None, .. } => {
                    let n = self.g.consts[*weight].shape[1];
                    (self.g.consts[c].shape.iter().product::<usize>() == n && self.g.consts[c].shape.last() == Some(&n))
                        .then_some(n)
                }
                _ => None,
            };
            if let Some(n) = channels {
                let flat = fold::reshaped(&self.g.consts[c], vec![n]);
                let name = self.g.const_names[c].clone();
                let id = self.g.add_const(&name, flat);
                match &mut self.g.layers[l].kind {
                    LayerKind::Conv { bias, .. } | LayerKind::Dense { bias, .. } => *bias = Some(id),
                    _ => unreachable!(),
                }
                self.g.values[x].shape = shape;
                self.rename(node, x);
                return Ok(());
            }
        }
        // A residual connection: the sum of a convolution's output and another value of
        // the same shape becomes part of the convolution.
        if let [ChainStep::Binary { kind: BinaryKind::Add, operand: Operand::Value(other), .. }] = steps.as_slice() {
            let other = *other;
            let names = [&node.inputs[lead], &node.inputs[if lead == 0 { 1 } else { 0 }]];
            for (conv_out, res, name) in [(x, other, names[0]), (other, x, names[1])] {
                let same = self.g.values[conv_out].shape == shape && self.g.values[res].shape == shape;
                // The residual must exist before the convolution runs.
                let ready = |l: usize| self.producer.get(&self.g.values[res].storage).is_none_or(|&p| p < l);
                let Some(l) = self.fusable(name, conv_out).filter(|&l| same && conv_out != res && ready(l)) else {
                    continue;
                };
                if let LayerKind::Conv { residual: r @ None, act: FusedActivation::None, int8: None, .. } =
                    &mut self.g.layers[l].kind
                {
                    *r = Some(res);
                    self.rename(node, conv_out);
                    return Ok(());
                }
            }
        }
        // Gamma and beta after a layer normalisation (a decomposed one, recognised before
        // import) are its scale and bias.
        if let (
            [ChainStep::Binary { kind: k @ (BinaryKind::Mul | BinaryKind::Add), operand: Operand::Const(c), .. }],
            Some(l),
        ) = (steps.as_slice(), self.fusable(&node.inputs[lead], x))
        {
            let row = *shape.last().unwrap_or(&0);
            let fits = self.g.consts[*c].len() == row
                && self.g.consts[*c].shape.last() == Some(&row)
                && self.g.values[x].shape == shape;
            let (k, c) = (*k, *c);
            if let LayerKind::LayerNorm { scale, bias: bias @ None, .. } = &mut self.g.layers[l].kind {
                let slot = if k == BinaryKind::Mul { scale } else { bias };
                if fits && slot.is_none() {
                    *slot = Some(c);
                    self.rename(node, x);
                    return Ok(());
                }
            }
        }
        if let Some(l) = self.fusable(&node.inputs[lead], x) {
            if let LayerKind::Elementwise { steps: chain, .. } = &mut self.g.layers[l].kind {
                chain.extend(steps);
                self.g.values[x].shape = shape;
                self.rename(node, x);
                return Ok(());
            }
        }
        self.add_layer(node, LayerKind::Elementwise { first: Operand::Value(x), steps }, shape);
        Ok(())
    }

    pub(crate) fn conv(&mut self, node: &Node) -> Result<(), CompileError> {
        let x = self.value(node, 0)?;
        let w = self.konst(node, 1)?.ok_or_else(|| self.fail(node, "no weight"))?;
        let b = self.konst(node, 2)?;
        let shape = self.out_shape(node)?;
        let xs = self.g.values[x].shape.clone();
        let ws = self.g.consts[w].shape.clone();
        if xs.len() != 4 {
            return Err(self.fail(node, format!("only 2-D convolutions are supported; input is {xs:?}")));
        }
        let (kh, kw) = (ws[2], ws[3]);
        let stride = node.attr_ints("strides").unwrap_or(vec![1, 1]);
        let dilation = node.attr_ints("dilations").unwrap_or(vec![1, 1]);
        let pads = self.pads(node, &xs, &shape, [kh, kw], &stride, &dilation)?;
        let groups = node.attr_int("group", 1) as usize;
        // Dequantised int8 input and weights: an int8 convolution on HMX.
        let integer = self.int8_conv(x, w, b);
        if let Err(Some(why)) = &integer {
            self.kept_in_float(node, why);
        }
        let (x, weight, bias, int8) = match integer {
            Ok(q) => (q.input, q.weight, q.bias, Some(q.multiplier)),
            Err(_) if self.g.consts[w].is_int() => {
                let c = Const::f32(ws.clone(), self.g.consts[w].to_f32());
                (x, self.g.add_const(&node.inputs[1], c), b, None)
            }
            Err(_) => (x, w, b, None),
        };
        self.add_layer(
            node,
            LayerKind::Conv {
                input: x,
                weight,
                bias,
                stride: [stride[0] as usize, stride[1] as usize],
                pad: pads,
                dilation: [dilation[0] as usize, dilation[1] as usize],
                groups,
                residual: None,
                act: FusedActivation::None,
                int8,
            },
            shape,
        );
        Ok(())
    }

    /// Padding before the first row and column, from `pads` or `auto_pad`.
    pub(crate) fn pads(
        &self,
        node: &Node,
        x: &[usize],
        out: &[usize],
        kernel: [usize; 2],
        stride: &[i64],
        dilation: &[i64],
    ) -> Result<[usize; 2], CompileError> {
        if stride.len() != 2 || dilation.len() != 2 {
            return Err(self.fail(node, "only 2-D windows are supported"));
        }
        let auto = node.attr_string("auto_pad").unwrap_or_default();
        let mut begin = [0usize; 2];
        for i in 0..2 {
            begin[i] = match auto.as_str() {
                "SAME_UPPER" | "SAME_LOWER" => {
                    let need = (out[2 + i] - 1) * stride[i] as usize + (kernel[i] - 1) * dilation[i] as usize + 1;
                    let total = need.saturating_sub(x[2 + i]);
                    if auto == "SAME_UPPER" {
                        total / 2
                    } else {
                        total - total / 2
                    }
                }
                "VALID" => 0,
                _ => node.attr_ints("pads").map(|p| p[i] as usize).unwrap_or(0),
            };
        }
        Ok(begin)
    }

    pub(crate) fn batch_norm(&mut self, node: &Node) -> Result<(), CompileError> {
        let x = self.value(node, 0)?;
        let eps = node.attr_float("epsilon", 1e-5);
        let mut p = Vec::new();
        for i in 1..5 {
            let c = self.konst(node, i)?.ok_or_else(|| self.fail(node, format!("input {i} is missing")))?;
            p.push(self.g.consts[c].to_f32());
        }
        let channels = p[0].len();
        if p.iter().any(|v| v.len() != channels) {
            return Err(self.fail(node, "scale, bias, mean and variance differ in length"));
        }
        let scale: Vec<f32> = (0..channels).map(|c| p[0][c] / (p[3][c] + eps).sqrt()).collect();
        let shift: Vec<f32> = (0..channels).map(|c| p[1][c] - p[2][c] * scale[c]).collect();
        let shape = self.g.values[x].shape.clone();
        if let Some(l) = self.fusable(&node.inputs[0], x) {
            if let LayerKind::Conv { weight, bias, act: FusedActivation::None, int8: None, .. } =
                self.g.layers[l].kind.clone()
            {
                let w = &self.g.consts[weight];
                let per = w.len() / w.shape[0];
                let mut wv = w.to_f32();
                for (co, chunk) in wv.chunks_mut(per).enumerate() {
                    chunk.iter_mut().for_each(|v| *v *= scale[co]);
                }
                let b0 = bias.map(|b| self.g.consts[b].to_f32()).unwrap_or(vec![0.0; channels]);
                let bv: Vec<f32> = (0..channels).map(|c| b0[c] * scale[c] + shift[c]).collect();
                let wshape = w.shape.clone();
                let wname = format!("{}_folded", self.g.const_names[weight]);
                let nw = self.g.add_const(&wname, Const::f32(wshape, wv));
                let nb = self.g.add_const(&format!("{}_bias", node.name), Const::f32(vec![channels], bv));
                if let LayerKind::Conv { weight, bias, .. } = &mut self.g.layers[l].kind {
                    *weight = nw;
                    *bias = Some(nb);
                }
                self.rename(node, x);
                return Ok(());
            }
        }
        // Standalone: a per-channel scale and shift over [N, C, ...].
        let mut cshape = vec![channels];
        cshape.extend(std::iter::repeat_n(1, shape.len().saturating_sub(2)));
        let s = self.g.add_const(&format!("{}_scale", node.name), Const::f32(cshape.clone(), scale));
        let t = self.g.add_const(&format!("{}_shift", node.name), Const::f32(cshape, shift));
        let steps = vec![
            ChainStep::Binary { kind: BinaryKind::Mul, operand: Operand::Const(s), swapped: false },
            ChainStep::Binary { kind: BinaryKind::Add, operand: Operand::Const(t), swapped: false },
        ];
        self.add_layer(node, LayerKind::Elementwise { first: Operand::Value(x), steps }, shape);
        Ok(())
    }

    pub(crate) fn dense(
        &mut self,
        node: &Node,
        transpose_b: bool,
        alpha: f32,
        c: Option<(ConstId, f32)>,
    ) -> Result<(), CompileError> {
        let x = self.value(node, 0)?;
        let shape = self.out_shape(node)?;
        let b = self.konst(node, 1)?.ok_or_else(|| self.fail(node, "the right-hand side must be constant"))?;
        if self.g.consts[b].shape.len() != 2 {
            return Err(self.fail(node, format!("weight must be a matrix, is {:?}", self.g.consts[b].shape)));
        }
        // Dequantised int8 input and weights: an int8 product on HMX.
        if alpha == 1.0 && c.is_none_or(|(_, beta)| beta == 1.0) {
            let integer = self.int8_dense(x, b, transpose_b, c.map(|(c, _)| c));
            if let Err(Some(why)) = &integer {
                self.kept_in_float(node, why);
            }
            if let Ok(q) = integer {
                let kind = LayerKind::Dense {
                    input: q.input,
                    weight: q.weight,
                    bias: q.bias,
                    act: FusedActivation::None,
                    int8: Some(q.multiplier),
                };
                self.add_layer(node, kind, shape);
                return Ok(());
            }
        }
        let bc = &self.g.consts[b];
        let mut w = if transpose_b { fold::transpose(bc, &[1, 0]) } else { bc.clone() };
        if alpha != 1.0 || w.is_int() {
            w = Const::f32(w.shape.clone(), w.to_f32().iter().map(|v| v * alpha).collect());
        }
        let n = w.shape[1];
        let weight = self.g.add_const(&node.inputs[1], w);
        let bias = match c {
            Some((c, beta)) => {
                let cc = &self.g.consts[c];
                if cc.len() != n && cc.len() != 1 {
                    return Err(self.fail(node, format!("bias of shape {:?} for {n} outputs", cc.shape)));
                }
                let v = cc.to_f32();
                let full: Vec<f32> = (0..n).map(|j| v[if v.len() == 1 { 0 } else { j }] * beta).collect();
                Some(self.g.add_const(&node.inputs[2], Const::f32(vec![n], full)))
            }
            None => None,
        };
        let kind = LayerKind::Dense { input: x, weight, bias, act: FusedActivation::None, int8: None };
        self.add_layer(node, kind, shape);
        Ok(())
    }

    pub(crate) fn pool(&mut self, node: &Node, kind: PoolKind) -> Result<(), CompileError> {
        let stored = self.value_as_stored(node, 0)?;
        // Max pooling reads int8 as it is (a dequantised int8 value too: max commutes
        // with the monotonic quantisation, so pooling the integers is exact).
        let int8_in = match kind {
            PoolKind::Max if self.g.values[stored].quant.is_some() => Some(stored),
            PoolKind::Max => self.dequantized(stored),
            _ => None,
        };
        let x = int8_in.unwrap_or_else(|| self.float_view(stored));
        let shape = self.out_shape(node)?;
        let xs = self.g.values[x].shape.clone();
        if xs.len() != 4 {
            return Err(self.fail(node, format!("only 2-D pooling is supported; input is {xs:?}")));
        }
        let k = node.attr_ints("kernel_shape").ok_or_else(|| self.fail(node, "no kernel_shape"))?;
        let stride = node.attr_ints("strides").unwrap_or(vec![1, 1]);
        if node.attr_ints("dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
            return Err(self.fail(node, "dilated pooling is not supported"));
        }
        let kernel = [k[0] as usize, k[1] as usize];
        let pad = self.pads(node, &xs, &shape, kernel, &stride, &[1, 1])?;
        let kind = if kind == PoolKind::Avg && node.attr_int("count_include_pad", 0) == 1 {
            PoolKind::AvgIncludePad
        } else {
            kind
        };
        let stride = [stride[0] as usize, stride[1] as usize];
        if pad[0] >= kernel[0] || pad[1] >= kernel[1] {
            return Err(self.fail(node, format!("padding {pad:?} must be smaller than the kernel {kernel:?}")));
        }
        let y = self.add_layer(node, LayerKind::Pool { input: x, kind, kernel, stride, pad }, shape);
        match int8_in {
            // ONNX's MaxPool of int8 is int8 with the same quantisation.
            Some(q) if q == stored => self.g.values[y].quant = self.g.values[q].quant,
            // Of a dequantised int8 value it is float: read through a dequantising layer
            // (which a following QuantizeLinear with the same parameters cancels).
            Some(q) => {
                self.g.values[y].quant = self.g.values[q].quant;
                let f = self.float_view(y);
                self.bind_value(&node.outputs[0].clone(), f);
            }
            None => {}
        }
        Ok(())
    }

    pub(crate) fn reduce(&mut self, node: &Node, kind: ReduceKind) -> Result<(), CompileError> {
        let x = self.value(node, 0)?;
        let shape = self.out_shape(node)?;
        let xs = self.g.values[x].shape.clone();
        let rank = xs.len();
        // Only the last axis: the output keeps every other dimension.
        let kept: Vec<usize> = xs[..rank - 1].to_vec();
        let ok = shape.iter().copied().filter(|&d| d != 1).eq(kept.iter().copied().filter(|&d| d != 1))
            && shape.iter().product::<usize>() == kept.iter().product::<usize>()
            && xs[rank - 1] > 1;
        if !ok {
            return Err(
                self.fail(node, format!("only reductions over the last axis are supported ({xs:?} -> {shape:?})"))
            );
        }
        self.add_layer(node, LayerKind::Reduce { input: x, kind }, shape);
        Ok(())
    }

    pub(crate) fn pad(&mut self, node: &Node) -> Result<(), CompileError> {
        let x = self.value(node, 0)?;
        let xs = self.g.values[x].shape.clone();
        let rank = xs.len();
        let mode = node.attr_string("mode").unwrap_or_default();
        if !(mode.is_empty() || mode == "constant") {
            return Err(self.fail(node, format!("only constant padding is supported, not '{mode}'")));
        }
        let (pads, value) = if self.opset < 11 {
            (node.attr_ints("pads").ok_or_else(|| self.fail(node, "no pads"))?, node.attr_float("value", 0.0))
        } else {
            if self.entry(node, 3)?.is_some() {
                return Err(self.fail(node, "the axes input is not supported"));
            }
            let pads = self.konst(node, 1)?.ok_or_else(|| self.fail(node, "no pads"))?;
            let value = match self.konst(node, 2)? {
                Some(c) => {
                    scalar(&self.g.consts[c]).ok_or_else(|| self.fail(node, "the pad value must be a scalar"))?
                }
                None => 0.0,
            };
            (self.g.consts[pads].to_i64(), value)
        };
        if pads.len() != 2 * rank || pads.iter().any(|&p| !(0..=1 << 16).contains(&p)) {
            return Err(
                self.fail(node, format!("pads {pads:?} for rank {rank} (negative pads, cropping, are not supported)"))
            );
        }
        let shape: Vec<usize> = (0..rank).map(|d| xs[d] + pads[d] as usize + pads[d + rank] as usize).collect();
        checked_elements(&shape).ok_or_else(|| self.fail(node, format!("output shape {shape:?} is too large")))?;
        let fill = self.g.add_const(&format!("{}_fill", node.name), Const::f32(vec![], vec![value]));
        let begin = pads[..rank].iter().map(|&p| p as usize).collect();
        self.add_layer(node, LayerKind::Pad { input: x, begin, fill }, shape);
        Ok(())
    }

    pub(crate) fn node(&mut self, node: &Node) -> Result<(), CompileError> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(self.unsupported(node));
        }
        if node.outputs.is_empty() {
            return Err(self.fail(node, "has no outputs"));
        }
        let op = node.op_type.as_str();
        if op == "Constant" {
            let c = match node.attributes.first().map(|a| (a.name.as_str(), &a.value)) {
                Some(("value", AttributeValue::Tensor(t))) => {
                    self.elem_types.insert(node.outputs[0].clone(), t.data_type);
                    tensor_const(t, self.model_dir)?
                }
                Some(("value_float", AttributeValue::Float(v))) => Const::f32(vec![], vec![*v]),
                Some(("value_floats", AttributeValue::Floats(v))) => Const::f32(vec![v.len()], v.clone()),
                Some(("value_int", AttributeValue::Int(v))) => Const::i64(vec![], vec![*v]),
                Some(("value_ints", AttributeValue::Ints(v))) => Const::i64(vec![v.len()], v.clone()),
                _ => return Err(self.fail(node, "unsupported Constant attribute")),
            };
            self.bind_const(&node.outputs[0].clone(), c);
            return Ok(());
        }
        if op == "Shape" {
            let dims = self
                .shapes
                .dims
                .get(&node.inputs[0])
                .cloned()
                .ok_or_else(|| self.fail(node, format!("input '{}' is unknown", node.inputs[0])))?;
            let r = dims.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (s, e) = (clampi(node.attr_int("start", 0)), clampi(node.attr_int("end", r)));
            let v: Vec<i64> = dims[s..e.max(s)].to_vec();
            self.bind_const(&node.outputs[0].clone(), Const::i64(vec![v.len()], v));
            return Ok(());
        }
        let entries: Vec<Option<Entry>> =
            (0..node.inputs.len()).map(|i| self.entry(node, i)).collect::<Result<_, _>>()?;
        // (Quantisation nodes evaluate their constants themselves: they need the types.)
        let quantisation = matches!(op, "QuantizeLinear" | "DequantizeLinear");
        if !quantisation
            && entries.iter().flatten().all(|e| matches!(e, Entry::Const(_)))
            && !entries.iter().all(Option::is_none)
        {
            let consts: Vec<&Const> = entries
                .iter()
                .map(|e| match e {
                    Some(Entry::Const(c)) => &self.g.consts[*c],
                    _ => &EMPTY,
                })
                .collect();
            let out = match fold::fold(node, &consts, self.opset) {
                Ok(out) => out,
                Err(reason) if reason.ends_with("is not evaluated at compile time") => {
                    return Err(self.unsupported(node))
                }
                Err(reason) => return Err(self.fail(node, reason)),
            };
            for (name, c) in node.outputs.iter().zip(out) {
                self.bind_const(name, c);
            }
            return Ok(());
        }
        match crate::ops::find(op).and_then(|d| d.build) {
            Some(rule) => rule(self, node),
            None => Err(self.unsupported(node)),
        }
    }
}

/// What an output that is an input's retained state is called: the input's name and this.
pub const RETAINED_SUFFIX: &str = "_RetainedState";

/// Most elements a runtime tensor may have (2^36: far beyond any device DDR).
const MAX_TENSOR_ELEMENTS: usize = 1 << 36;

fn checked_elements(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).filter(|&n| n <= MAX_TENSOR_ELEMENTS)
}

static EMPTY: Const = Const { shape: Vec::new(), data: crate::ir::ConstData::F32(Vec::new()) };

fn empty_tensor(name: &str, shape: &[usize]) -> CompileError {
    CompileError::Model(format!(
        "'{name}' has shape {shape:?}, an empty tensor; aicsim compiles tensors of at least one element"
    ))
}

/// Imports `model`; `symbols` gives values to symbolic input dimensions.
pub fn import(model: &Model, symbols: &HashMap<String, i64>, model_dir: Option<&Path>) -> Result<Graph, CompileError> {
    import_with_constants(model, symbols, model_dir).map(|(g, _)| g)
}

/// [`import`], and the value of every tensor of the model known at compile time
/// (initializers and what folds from them), by name.
pub fn import_with_constants(
    model: &Model,
    symbols: &HashMap<String, i64>,
    model_dir: Option<&Path>,
) -> Result<(Graph, HashMap<String, Const>), CompileError> {
    import_inner(model, symbols, model_dir, false)
}

/// [`import`] with retained state (`-retained-state`): an output `X_RetainedState` that
/// is input `X` updated in place keeps `X`'s storage (the program keeps it in DDR
/// between runs) instead of getting a copy of its own.
pub fn import_retained(
    model: &Model,
    symbols: &HashMap<String, i64>,
    model_dir: Option<&Path>,
) -> Result<Graph, CompileError> {
    import_inner(model, symbols, model_dir, true).map(|(g, _)| g)
}

fn import_inner(
    model: &Model,
    symbols: &HashMap<String, i64>,
    model_dir: Option<&Path>,
    retained: bool,
) -> Result<(Graph, HashMap<String, Const>), CompileError> {
    let opset = model.opset().unwrap_or(9);
    if !(7..=21).contains(&opset) {
        return Err(CompileError::Model(format!("opset {opset} is not supported (7 to 21)")));
    }
    let graph = &model.graph;
    let mut uses = HashMap::new();
    for n in &graph.nodes {
        for i in &n.inputs {
            *uses.entry(i.clone()).or_insert(0) += 1;
        }
    }
    let graph_outputs: Vec<String> = graph.outputs.iter().map(|o| o.name.clone()).collect();
    let mut b = Builder {
        g: Graph { name: graph.name.clone(), ..Default::default() },
        env: HashMap::new(),
        shapes: Shapes::default(),
        opset,
        uses,
        producer: HashMap::new(),
        graph_outputs: graph_outputs.clone(),
        model_dir,
        elem_types: HashMap::new(),
        quant_consts: HashMap::new(),
        float_views: HashMap::new(),
    };
    for t in &graph.initializers {
        let c = tensor_const(t, model_dir)?;
        b.bind_const(&t.name, c);
        b.elem_types.insert(t.name.clone(), t.data_type);
    }
    for input in &graph.inputs {
        if b.env.contains_key(&input.name) {
            continue; // an initializer listed as an input
        }
        if !matches!(
            input.elem_type,
            data_type::FLOAT | data_type::FLOAT16 | data_type::DOUBLE | data_type::INT64 | data_type::INT32
        ) {
            return Err(CompileError::Model(format!(
                "input '{}' has element type {}; aicsim programs take float, int64 or int32 inputs",
                input.name, input.elem_type
            )));
        }
        let dims = input
            .shape
            .iter()
            .flatten()
            .map(|d| match d {
                Dim::Value(v) if *v >= 0 => Ok(*v as usize),
                Dim::Value(v) => Err(CompileError::Model(format!("input '{}' has dimension {v}", input.name))),
                Dim::Param(p) => symbols.get(p).map(|&v| v.max(0) as usize).ok_or_else(|| {
                    CompileError::Shape(ShapeError::UndefinedSymbol { input: input.name.clone(), symbol: p.clone() })
                }),
                Dim::Unknown => Err(CompileError::Shape(ShapeError::UndefinedSymbol {
                    input: input.name.clone(),
                    symbol: "?".into(),
                })),
            })
            .collect::<Result<Vec<usize>, _>>()?;
        if checked_elements(&dims).is_none() {
            return Err(CompileError::Model(format!("input '{}' of shape {dims:?} is too large", input.name)));
        }
        if dims.contains(&0) {
            return Err(empty_tensor(&input.name, &dims));
        }
        let v = b.g.add_value(&input.name, dims);
        b.bind_value(&input.name, v);
        if matches!(input.elem_type, data_type::INT64 | data_type::INT32) {
            b.g.values[v].int32 = true;
        }
        b.g.inputs.push(Io { name: input.name.clone(), value: v, elem_type: input.elem_type });
    }
    // Every operator the compiler does not know, named at once (not only the first).
    let known = crate::ops::supported();
    let unknown: Vec<(String, String)> = graph
        .nodes
        .iter()
        .filter(|n| {
            let default_domain = n.domain.is_empty() || n.domain == "ai.onnx";
            !default_domain || !known.iter().any(|(op, _)| *op == n.op_type)
        })
        .map(|n| (n.op_type.clone(), n.name.clone()))
        .collect();
    match unknown.as_slice() {
        [] => {}
        [(op_type, node)] => {
            return Err(CompileError::Unsupported { op_type: op_type.clone(), node: node.clone(), opset })
        }
        _ => return Err(CompileError::UnsupportedMany { nodes: unknown, opset }),
    }
    let ranks: HashMap<String, usize> =
        b.g.inputs.iter().map(|i| (i.name.clone(), b.g.values[i.value].shape.len())).collect();
    let nodes = crate::patterns::kv_cache_updates(graph, crate::patterns::fuse_layer_norms(graph, &ranks));
    for node in &nodes {
        b.node(node)?;
    }
    crate::patterns::fuse_gelu(&mut b.g);
    // ONNX allows empty tensors; a device program has nothing to move or compute for
    // one, and every tiling below assumes at least one element.
    if let Some(v) = b.g.values.iter().find(|v| v.elements() == 0) {
        return Err(empty_tensor(&v.name, &v.shape));
    }
    for name in &graph_outputs {
        let v = match b.env.get(name) {
            Some(Entry::Value(v)) => *v,
            Some(Entry::Const(_)) => {
                return Err(CompileError::Model(format!("output '{name}' is a constant; nothing to run on the device")))
            }
            None => return Err(CompileError::Model(format!("output '{name}' is not produced by any node"))),
        };
        if b.g.values[v].quant.is_some() {
            return Err(CompileError::Model(format!(
                "output '{name}' is quantised (int8); aicsim programs return float outputs: end the graph with DequantizeLinear"
            )));
        }
        // An output needs storage of its own: not an input's, not another output's;
        // retained state is the one exception.
        let storage = b.g.values[v].storage;
        let retained_pair = retained
            && b.g.inputs.iter().any(|i| {
                b.g.values[i.value].storage == storage && name.strip_suffix(RETAINED_SUFFIX) == Some(i.name.as_str())
            });
        let shared = !retained_pair
            && (b.g.inputs.iter().any(|i| b.g.values[i.value].storage == storage)
                || b.g.outputs.iter().any(|o| b.g.values[o.value].storage == storage));
        let v = if shared {
            let shape = b.g.values[v].shape.clone();
            let out = b.g.add_value(name, shape);
            b.g.layers.push(Layer {
                name: format!("{name}_copy"),
                op_type: "Identity".into(),
                kind: LayerKind::Elementwise { first: Operand::Value(v), steps: vec![] },
                output: out,
            });
            out
        } else {
            v
        };
        if b.g.values[v].int32 {
            return Err(CompileError::Model(format!(
                "output '{name}' is an integer tensor; aicsim programs return float outputs"
            )));
        }
        b.g.outputs.push(Io { name: name.clone(), value: v, elem_type: data_type::FLOAT });
    }
    prune_unread_layers(&mut b.g);
    let constants = b
        .env
        .iter()
        .filter_map(|(name, e)| match e {
            Entry::Const(c) => Some((name.clone(), b.g.consts[*c].clone())),
            Entry::Value(_) => None,
        })
        .collect();
    Ok((b.g, constants))
}

/// Drops the layers whose output nothing reads (a dequantisation whose readers all read
/// the int8 value instead).
fn prune_unread_layers(g: &mut Graph) {
    let mut read: std::collections::HashSet<ValueId> = g.outputs.iter().map(|o| g.values[o.value].storage).collect();
    let mut keep = vec![false; g.layers.len()];
    for (i, l) in g.layers.iter().enumerate().rev() {
        if read.contains(&g.values[l.output].storage) {
            keep[i] = true;
            read.extend(l.inputs().iter().map(|&v| g.values[v].storage));
        }
    }
    let mut k = keep.iter();
    g.layers.retain(|_| *k.next().expect("one flag per layer"));
}
