//! Quantisation: `QuantizeLinear` and `DequantizeLinear` (opset 10 per tensor, 13 per
//! axis), as onnxruntime's static quantiser and quantisation-aware training export them
//! (QDQ form).
//!
//! - On constants they are evaluated now; a dequantised constant remembers its integers
//!   and scales ([`QuantConst`]) so that a convolution reading it can run on int8.
//! - `QuantizeLinear` of a runtime tensor makes an int8 value ([`Quant`]): it joins the
//!   element-wise chain or int8 convolution that produces its input, or becomes a
//!   conversion layer of its own.
//! - `DequantizeLinear` of an int8 value becomes a conversion layer; an int8 convolution
//!   or an element-wise chain that reads it reads the int8 value instead (and the layer,
//!   left unread, is dropped at the end of the import).

use super::{OpDef, ShapeCx};
use crate::build::{Builder, Entry};
use crate::ir::{Const, ConstId, LayerKind, Operand, Quant, ValueId};
use crate::onnx::{data_type, Node};
use crate::shapes::ShapeError;
use crate::CompileError;

pub(super) static OPS: &[OpDef] = &[
    OpDef { name: "DequantizeLinear", shape: Some(shape_same), fold: None, build: Some(build_dequantize) },
    OpDef { name: "QLinearConv", shape: None, fold: None, build: Some(build_qlinear_conv) },
    OpDef { name: "QLinearMatMul", shape: None, fold: None, build: Some(build_qlinear_mat_mul) },
    OpDef { name: "QuantizeLinear", shape: Some(shape_same), fold: None, build: Some(build_quantize) },
];

/// A node the importer makes up to expand another (`QLinearConv` into its QDQ form).
fn part(of: &Node, op: &str, what: &str, inputs: Vec<String>, attributes: Vec<crate::onnx::Attribute>) -> Node {
    Node {
        name: format!("{}_{what}", of.name),
        op_type: op.into(),
        domain: String::new(),
        inputs,
        outputs: vec![format!("{}_{what}_output", of.name)],
        attributes,
    }
}

fn axis(a: i64) -> Vec<crate::onnx::Attribute> {
    vec![crate::onnx::Attribute { name: "axis".into(), value: crate::onnx::AttributeValue::Int(a) }]
}

/// `QLinearConv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp[, B])` is its QDQ form,
/// `Q(Conv(DQ(x), DQ(w), DQ(B with scale x_scale x w_scale)))`, which then compiles to an
/// int8 convolution like any QDQ model.
fn build_qlinear_conv(b: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    let input = |i: usize| node.inputs.get(i).cloned().unwrap_or_default();
    if node.inputs.len() < 8 {
        return Err(b.fail(node, format!("has {} inputs; QLinearConv takes 8 or 9", node.inputs.len())));
    }
    let x = part(node, "DequantizeLinear", "x", vec![input(0), input(1), input(2)], vec![]);
    let w = part(node, "DequantizeLinear", "w", vec![input(3), input(4), input(5)], axis(0));
    let mut conv_inputs = vec![x.outputs[0].clone(), w.outputs[0].clone()];
    let mut parts = vec![x, w];
    if node.inputs.get(8).is_some_and(|s| !s.is_empty()) {
        // The bias is int32 in units of x_scale x w_scale (per output channel).
        let (xs, ws) = (b.konst(node, 1)?, b.konst(node, 4)?);
        let (Some(xs), Some(ws)) = (xs, ws) else { return Err(b.fail(node, "scales must be constants")) };
        let sx = b.g.consts[xs].to_f32();
        let sw = b.g.consts[ws].to_f32();
        if sx.len() != 1 {
            return Err(b.fail(node, "x_scale must be one value"));
        }
        let scale_name = format!("{}_bias_scale", node.name);
        b.bind_const(&scale_name, Const::f32(vec![sw.len()], sw.iter().map(|s| s * sx[0]).collect()));
        parts.push(part(node, "DequantizeLinear", "bias", vec![input(8), scale_name], axis(0)));
        conv_inputs.push(parts[2].outputs[0].clone());
    }
    let conv = part(node, "Conv", "conv", conv_inputs, node.attributes.clone());
    let mut q = part(node, "QuantizeLinear", "y", vec![conv.outputs[0].clone(), input(6), input(7)], vec![]);
    q.outputs = node.outputs.clone();
    parts.extend([conv, q]);
    parts.iter().try_for_each(|p| b.node(p))
}

/// `QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp)` is
/// `Q(MatMul(DQ(a), DQ(b)))` (per-column scales of a matrix `b` run along its last axis).
fn build_qlinear_mat_mul(b: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    if node.inputs.len() != 8 {
        return Err(b.fail(node, format!("has {} inputs; QLinearMatMul takes 8", node.inputs.len())));
    }
    let input = |i: usize| node.inputs[i].clone();
    let rank = b.shapes.dims.get(&node.inputs[3]).map_or(2, Vec::len) as i64;
    let a = part(node, "DequantizeLinear", "a", vec![input(0), input(1), input(2)], vec![]);
    let w = part(node, "DequantizeLinear", "b", vec![input(3), input(4), input(5)], axis(rank - 1));
    let mm = part(node, "MatMul", "matmul", vec![a.outputs[0].clone(), w.outputs[0].clone()], vec![]);
    let mut q = part(node, "QuantizeLinear", "y", vec![mm.outputs[0].clone(), input(6), input(7)], vec![]);
    q.outputs = node.outputs.clone();
    [a, w, mm, q].iter().try_for_each(|p| b.node(p))
}

fn shape_same(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    Ok(cx.input(0)?.clone())
}

/// A constant that is the dequantisation of integers: what an int8 layer reads instead.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct QuantConst {
    /// The integers (as the model stores them).
    pub ints: ConstId,
    /// One scale per slice along `axis` (one in all for per-tensor).
    pub scales: Vec<f32>,
    pub axis: usize,
    /// Whether every zero point is 0 (symmetric: what HMX weights need).
    pub symmetric: bool,
}

/// A node's scale and zero point inputs, checked.
struct Params {
    scales: Vec<f32>,
    zero_points: Vec<i64>,
    /// The axis the parameters run along (per-axis), or `None` for one in all.
    axis: Option<usize>,
    /// ONNX element type of the integers.
    int_type: i32,
}

impl Params {
    fn read(b: &Builder<'_>, node: &Node, rank: usize) -> Result<Params, CompileError> {
        let scale = b.konst(node, 1)?.ok_or_else(|| b.fail(node, "has no scale"))?;
        let scales = b.g.consts[scale].to_f32();
        let zp = b.konst(node, 2)?;
        if node.attr_int("block_size", 0) != 0 {
            return Err(b.fail(node, "blocked quantisation (block_size) is not supported: per tensor or per axis"));
        }
        // The zero point's type, else QuantizeLinear-21's `output_dtype`, else uint8.
        let output_dtype = node.attr_int("output_dtype", 0) as i32;
        let int_type = match node.inputs.get(2).filter(|n| !n.is_empty()) {
            Some(name) => {
                let t = b.elem_types.get(name).copied().unwrap_or(data_type::UINT8);
                if output_dtype != 0 && output_dtype != t {
                    return Err(b.fail(
                        node,
                        format!("output_dtype {output_dtype} differs from zero point '{name}''s type {t}"),
                    ));
                }
                t
            }
            None if output_dtype != 0 => output_dtype,
            None => data_type::UINT8,
        };
        let zero_points = zp.map_or(vec![0; scales.len()], |z| b.g.consts[z].to_i64());
        if scales.is_empty() {
            return Err(b.fail(node, format!("scale '{}' is empty", node.inputs[1])));
        }
        if zero_points.len() != scales.len() {
            return Err(b.fail(node, format!("{} scales but {} zero points", scales.len(), zero_points.len())));
        }
        // Normal, not merely non-zero: the device quantises by the scale's reciprocal,
        // which a subnormal scale (below 1.2e-38) would overflow to infinity.
        if let Some(s) = scales.iter().find(|s| !(s.is_normal() && **s > 0.0)) {
            return Err(b.fail(
                node,
                format!(
                    "scale '{}' holds {s:e}; a scale must be positive, finite and at least {:e} (its reciprocal \
                     must be representable)",
                    node.inputs[1],
                    f32::MIN_POSITIVE
                ),
            ));
        }
        let range = match int_type {
            data_type::INT8 => -128..=127,
            data_type::UINT8 => 0..=255,
            data_type::INT16 => -32768..=32767,
            data_type::UINT16 => 0..=65535,
            data_type::INT32 => i64::from(i32::MIN)..=i64::from(i32::MAX),
            other => {
                return Err(
                    b.fail(node, format!("quantised element type {other} is not int8, uint8, int16, uint16 or int32"))
                )
            }
        };
        if let Some(z) = zero_points.iter().find(|z| !range.contains(z)) {
            let name = &node.inputs[2];
            return Err(b.fail(node, format!("zero point '{name}' holds {z}, outside its type's range {range:?}")));
        }
        let axis = if scales.len() == 1 {
            None
        } else {
            let a = node.attr_int("axis", 1);
            let a = if a < 0 { a + rank as i64 } else { a };
            if !(0..rank as i64).contains(&a) {
                return Err(b.fail(node, format!("axis {a} is outside a rank-{rank} input")));
            }
            Some(a as usize)
        };
        Ok(Params { scales, zero_points, axis, int_type })
    }

    /// Per-axis parameters must match the length of their axis in `shape`.
    fn check_shape(&self, b: &Builder<'_>, node: &Node, shape: &[usize]) -> Result<(), CompileError> {
        match self.axis {
            Some(a) if shape.get(a) != Some(&self.scales.len()) => Err(b.fail(
                node,
                format!("{} per-axis scales for axis {a} of a tensor of shape {shape:?}", self.scales.len()),
            )),
            _ => Ok(()),
        }
    }

    /// The parameters' index for each element of a tensor of `shape`.
    fn index(&self, shape: &[usize]) -> impl Fn(usize) -> usize + '_ {
        let (len, inner) = match self.axis {
            Some(a) => (shape[a], shape[a + 1..].iter().product::<usize>()),
            None => (1, 1),
        };
        move |i| (i / inner) % len
    }

    /// The one (scale, zero point) of a per-tensor quantisation, as int8 storage keeps it.
    fn per_tensor(&self, b: &Builder<'_>, node: &Node) -> Result<Quant, CompileError> {
        if self.scales.len() != 1 {
            return Err(b.fail(node, "runtime tensors are quantised per tensor; per-axis parameters are for weights"));
        }
        let (zero_point, int16) = match self.int_type {
            data_type::INT8 => (self.zero_points[0], false),
            data_type::UINT8 => (self.zero_points[0] - 128, false),
            data_type::INT16 => (self.zero_points[0], true),
            data_type::UINT16 => (self.zero_points[0] - 32768, true),
            _ => return Err(b.fail(node, "runtime tensors are quantised to int8, uint8, int16 or uint16")),
        };
        Ok(Quant { scale: self.scales[0], zero_point: zero_point as i32, int16 })
    }
}

fn rank_of(b: &Builder<'_>, node: &Node) -> usize {
    node.inputs.first().and_then(|x| b.shapes.dims.get(x)).map_or(0, Vec::len)
}

fn build_dequantize(b: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    let p = Params::read(b, node, rank_of(b, node))?;
    b.out_shape(node)?;
    match b.entry(node, 0)? {
        Some(Entry::Const(c)) => {
            let q = b.g.consts[c].clone();
            p.check_shape(b, node, &q.shape)?;
            let at = p.index(&q.shape);
            let ints = q.to_i64();
            let values = ints.iter().enumerate().map(|(i, &v)| ((v - p.zero_points[at(i)]) as f32) * p.scales[at(i)]);
            let out = Const::f32(q.shape.clone(), values.collect());
            b.bind_const(&node.outputs[0].clone(), out);
            let Some(Entry::Const(id)) = b.env.get(&node.outputs[0]).cloned() else { unreachable!("just bound") };
            let quant = QuantConst {
                ints: c,
                scales: p.scales.clone(),
                axis: p.axis.unwrap_or(0),
                symmetric: p.zero_points.iter().all(|&z| z == 0),
            };
            b.quant_consts.insert(id, quant);
            Ok(())
        }
        Some(Entry::Value(x)) => {
            let want = p.per_tensor(b, node)?;
            let Some(have) = b.g.values[x].quant else {
                return Err(b.fail(node, format!("input '{}' is not a quantised tensor of this graph", node.inputs[0])));
            };
            if have != want {
                return Err(b.fail(
                    node,
                    format!(
                        "reads '{}' with scale {} and zero point {}, but it was quantised with scale {} and zero point {}",
                        node.inputs[0], want.scale, want.zero_point, have.scale, have.zero_point
                    ),
                ));
            }
            let shape = b.g.values[x].shape.clone();
            b.add_layer(node, LayerKind::Elementwise { first: Operand::Value(x), steps: vec![] }, shape);
            Ok(())
        }
        None => Err(b.fail(node, "input 0 is missing")),
    }
}

fn build_quantize(b: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    let p = Params::read(b, node, rank_of(b, node))?;
    b.out_shape(node)?;
    if p.int_type == data_type::INT32 {
        return Err(b.fail(node, "quantising to int32 is not supported (int8, uint8, int16 and uint16 are)"));
    }
    match b.entry(node, 0)? {
        Some(Entry::Const(c)) => {
            let x = b.g.consts[c].clone();
            p.check_shape(b, node, &x.shape)?;
            let at = p.index(&x.shape);
            let (lo, hi) = match p.int_type {
                data_type::INT8 => (-128, 127),
                data_type::INT16 => (-32768, 32767),
                data_type::UINT16 => (0, 65535),
                _ => (0, 255),
            };
            let values = x.to_f32();
            let q = values
                .iter()
                .enumerate()
                .map(|(i, &v)| ((v / p.scales[at(i)]).round_ties_even() as i64 + p.zero_points[at(i)]).clamp(lo, hi));
            let name = node.outputs[0].clone();
            b.bind_const(&name, Const::i64(x.shape.clone(), q.collect()));
            b.elem_types.insert(name, p.int_type);
            Ok(())
        }
        Some(Entry::Value(x)) => {
            let quant = p.per_tensor(b, node)?;
            // Quantising a dequantised int8 value with its own parameters gives it back.
            if let Some(q) = b.dequantized(x).filter(|&q| b.g.values[q].quant == Some(quant)) {
                b.bind_value(&node.outputs[0].clone(), q);
                return Ok(());
            }
            // The chain or int8 convolution producing the input writes int8 itself.
            if let Some(l) = b.fusable(&node.inputs[0], x) {
                if matches!(
                    b.g.layers[l].kind,
                    LayerKind::Elementwise { .. }
                        | LayerKind::Conv { int8: Some(_), .. }
                        | LayerKind::Dense { int8: Some(_), .. }
                ) {
                    b.g.values[x].quant = Some(quant);
                    b.rename(node, x);
                    return Ok(());
                }
            }
            let shape = b.g.values[x].shape.clone();
            let y = b.add_layer(node, LayerKind::Elementwise { first: Operand::Value(x), steps: vec![] }, shape);
            b.g.values[y].quant = Some(quant);
            Ok(())
        }
        None => Err(b.fail(node, "input 0 is missing")),
    }
}

impl Builder<'_> {
    /// The int8 value a float value is the plain dequantisation of (the output of a
    /// `DequantizeLinear` layer), if it is one.
    pub(crate) fn dequantized(&self, v: ValueId) -> Option<ValueId> {
        if self.g.values[v].quant.is_some() || self.g.values[v].storage != v {
            return None;
        }
        let l = &self.g.layers[*self.producer.get(&v)?];
        match &l.kind {
            LayerKind::Elementwise { first: Operand::Value(q), steps }
                if steps.is_empty() && l.op_type == "DequantizeLinear" && self.g.values[*q].quant.is_some() =>
            {
                Some(*q)
            }
            _ => None,
        }
    }

    /// For a convolution reading `x` with weights `w` (`[Co, Ci, Kh, Kw]`) and bias `b`:
    /// the integer input, the int8 weights, the int32 bias and the per-output-channel
    /// multiplier, when input and weights are dequantised integers (int8 or int16 input;
    /// weights symmetric int8, per tensor or per output channel). The bias is taken in
    /// units of the sums (`input scale x weight scale`), as onnxruntime's quantiser
    /// stores it. `Err(None)`: not a quantised layer; `Err(Some(why))`: quantised
    /// operands the integer engines cannot take, so the layer runs in float.
    pub(crate) fn int8_conv(&mut self, x: ValueId, w: ConstId, b: Option<ConstId>) -> Result<Int8Conv, Option<String>> {
        self.integer_layer(x, w, b, 0, false)
    }

    /// For a matrix product of `x` by the constant `w` (`[K, N]`, or `[N, K]` when
    /// `transpose_b`) plus bias `b` (`[N]`): as [`Builder::int8_conv`], the weights as
    /// `[K, N]` and a multiplier per output column.
    pub(crate) fn int8_dense(
        &mut self,
        x: ValueId,
        w: ConstId,
        transpose_b: bool,
        b: Option<ConstId>,
    ) -> Result<Int8Conv, Option<String>> {
        self.integer_layer(x, w, b, if transpose_b { 0 } else { 1 }, transpose_b)
    }

    /// `axis`: the weights' output-channel axis, as the model stores them.
    fn integer_layer(
        &mut self,
        x: ValueId,
        w: ConstId,
        b: Option<ConstId>,
        axis: usize,
        transpose: bool,
    ) -> Result<Int8Conv, Option<String>> {
        let q = self.dequantized(x).ok_or(None)?;
        let qc = self.quant_consts.get(&w).ok_or(None)?.clone();
        let sx = self.g.values[q].quant.ok_or(None)?.scale;
        let ints = self.g.consts[qc.ints].clone();
        if !qc.symmetric {
            return Err(Some("its weights have non-zero zero points (HMX takes symmetric int8 weights)".into()));
        }
        if qc.scales.len() > 1 && qc.axis != axis {
            return Err(Some(format!(
                "its weights are quantised along axis {}, not the output channels' axis {axis}",
                qc.axis
            )));
        }
        if ints.to_i64().iter().any(|v| !(-128..=127).contains(v)) {
            return Err(Some("its weights are not int8 (HMX multiplies int8 weights)".into()));
        }
        let channels = ints.shape[axis];
        let ints = if transpose { crate::fold::transpose(&ints, &[1, 0]) } else { ints };
        let mult: Vec<f32> = (0..channels).map(|c| sx * qc.scales[if qc.scales.len() == 1 { 0 } else { c }]).collect();
        if !mult.iter().all(|m| m.is_normal()) {
            return Err(Some("the products of its input and weight scales are not all normal f32 numbers".into()));
        }
        let bias = self.int32_bias(b, &mult).ok_or_else(|| {
            Some(
                "its bias is not one constant per output channel within int32 in units of the sums \
                 (input scale x weight scale)"
                    .to_string(),
            )
        })?;
        let name = self.g.const_names[w].clone();
        let weight = self.g.add_const(&format!("{name}_int8"), Const::i64(ints.shape.clone(), ints.to_i64()));
        let multiplier = self.g.add_const(&format!("{name}_multiplier"), Const::f32(vec![channels], mult));
        let bias = bias.map(|v| self.g.add_const(&format!("{name}_bias_int32"), Const::i64(vec![channels], v)));
        Ok(Int8Conv { input: q, weight, bias, multiplier })
    }
}

impl Builder<'_> {
    /// A float bias in units of the int32 sums (`Some(None)`: no bias; `None`: it does
    /// not fit: one value per output channel, each within int32).
    fn int32_bias(&self, b: Option<ConstId>, mult: &[f32]) -> Option<Option<Vec<i64>>> {
        let Some(b) = b else { return Some(None) };
        let c = &self.g.consts[b];
        if c.len() != mult.len() {
            return None;
        }
        let ints: Vec<i64> = c
            .to_f32()
            .iter()
            .zip(mult)
            .map(|(&v, &m)| (f64::from(v) / f64::from(m)).round_ties_even() as i64)
            .collect();
        ints.iter().all(|v| i32::try_from(*v).is_ok()).then_some(Some(ints))
    }
}

/// What an int8 convolution or product reads instead of its float operands.
pub(crate) struct Int8Conv {
    pub input: ValueId,
    pub weight: ConstId,
    pub bias: Option<ConstId>,
    pub multiplier: ConstId,
}
