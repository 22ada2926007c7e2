//! Shape inference: the dimensions of every tensor of a graph, from its inputs (with
//! symbolic dimensions given values, as `-onnx-define-symbol` does), its initializers,
//! and each operator's rules. Integer tensors known at compile time (shape operands of
//! Reshape and ConstantOfShape) are tracked by value.

use std::collections::HashMap;

use crate::fold::broadcast_shapes;
use crate::onnx::{Dim, Graph, Node, TensorData};

/// Why a shape cannot be inferred.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("unsupported operator {op_type} (node '{node}', opset {opset})")]
    Unsupported { op_type: String, node: String, opset: i64 },
    #[error("input '{input}' has symbolic dimension '{symbol}'; give it a value (-onnx-define-symbol={symbol},N)")]
    UndefinedSymbol { input: String, symbol: String },
    #[error("node '{node}' ({op_type}): input '{input}' is neither a graph input, an initializer nor an earlier node's output")]
    MissingInput { node: String, op_type: String, input: String },
    #[error("node '{node}' ({op_type}): {reason}")]
    Mismatch { node: String, op_type: String, reason: String },
}

/// Largest kernel, stride, dilation or pad a window may have.
const LIMIT: i64 = 1 << 16;

/// Product of dimensions, saturating (a saturated product never matches a real size).
fn product(dims: &[i64]) -> i64 {
    dims.iter().fold(1i64, |acc, &d| acc.saturating_mul(d))
}

/// Dimensions (and, for small integer tensors known at compile time, values) of every
/// tensor.
#[derive(Clone, Debug, Default)]
pub struct Shapes {
    pub dims: HashMap<String, Vec<i64>>,
    pub values: HashMap<String, Vec<i64>>,
}

/// Output spatial size of a convolution or pooling window along one axis.
fn window(input: i64, kernel: i64, stride: i64, dilation: i64, pad_total: i64, ceil: bool, auto_pad: &str) -> i64 {
    match auto_pad {
        "SAME_UPPER" | "SAME_LOWER" => (input + stride - 1) / stride,
        "VALID" => (input - (kernel - 1) * dilation - 1) / stride + 1,
        _ => {
            let span = input + pad_total - (kernel - 1) * dilation - 1;
            if ceil {
                (span + stride - 1) / stride + 1
            } else {
                span / stride + 1
            }
        }
    }
}

impl Shapes {
    /// Infers every tensor's dimensions; `symbols` gives values to symbolic input
    /// dimensions.
    pub fn infer(graph: &Graph, opset: i64, symbols: &HashMap<String, i64>) -> Result<Shapes, ShapeError> {
        let mut s = Shapes::default();
        for t in &graph.initializers {
            s.dims.insert(t.name.clone(), t.dims.clone());
            let n = product(&t.dims);
            if n <= 64 {
                let values = match &t.data {
                    TensorData::Int64s(v) | TensorData::Int32s(v) => Some(v.clone()),
                    TensorData::Raw(raw) if t.data_type == crate::onnx::data_type::INT64 => {
                        Some(raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
                    }
                    _ => None,
                };
                if let Some(v) = values {
                    s.values.insert(t.name.clone(), v);
                }
            }
        }
        for input in &graph.inputs {
            if s.dims.contains_key(&input.name) {
                continue; // an initializer listed as an input (opset < 9 style)
            }
            let dims = input
                .shape
                .iter()
                .flatten()
                .map(|d| match d {
                    Dim::Value(v) => Ok(*v),
                    Dim::Param(p) => symbols
                        .get(p)
                        .copied()
                        .ok_or_else(|| ShapeError::UndefinedSymbol { input: input.name.clone(), symbol: p.clone() }),
                    Dim::Unknown => Err(ShapeError::UndefinedSymbol { input: input.name.clone(), symbol: "?".into() }),
                })
                .collect::<Result<Vec<i64>, _>>()?;
            s.dims.insert(input.name.clone(), dims);
        }
        for node in &graph.nodes {
            s.node(node, opset)?;
        }
        Ok(s)
    }

    pub(crate) fn node(&mut self, node: &Node, opset: i64) -> Result<(), ShapeError> {
        let fail =
            |reason: String| ShapeError::Mismatch { node: node.name.clone(), op_type: node.op_type.clone(), reason };
        let input = |i: usize| -> Result<&Vec<i64>, ShapeError> {
            let name = node.inputs.get(i).ok_or_else(|| fail(format!("has no input {i}")))?;
            self.dims.get(name).ok_or_else(|| ShapeError::MissingInput {
                node: node.name.clone(),
                op_type: node.op_type.clone(),
                input: name.clone(),
            })
        };
        let value = |i: usize| -> Result<Vec<i64>, ShapeError> {
            let name = node.inputs.get(i).ok_or_else(|| fail(format!("has no input {i}")))?;
            self.values.get(name).cloned().ok_or_else(|| fail(format!("input '{name}' must be known at compile time")))
        };
        let out = match node.op_type.as_str() {
            "Relu" | "Dropout" | "LRN" | "Softmax" | "BatchNormalization" | "Sigmoid" | "Tanh" | "Erf" | "Clip"
            | "Identity" | "Cast" | "Sqrt" | "Exp" | "Gelu" | "Reciprocal" | "Neg" | "Abs" | "LayerNormalization"
            | "LeakyRelu" => input(0)?.clone(),
            "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" => {
                let x = input(0)?.clone();
                let axes = if opset < 18 && node.op_type != "ReduceSum" || opset < 13 {
                    node.attr_ints("axes")
                } else {
                    node.inputs.get(1).filter(|n| !n.is_empty()).map(|_| value(1)).transpose()?
                };
                let axes: Vec<usize> = match axes {
                    Some(a) => a
                        .iter()
                        .map(|&v| {
                            let r = x.len() as i64;
                            let v = if v < 0 { v + r } else { v };
                            if (0..r).contains(&v) {
                                Ok(v as usize)
                            } else {
                                Err(fail(format!("axis {v} out of range for rank {r}")))
                            }
                        })
                        .collect::<Result<_, _>>()?,
                    None => (0..x.len()).collect(),
                };
                let keep = node.attr_int("keepdims", 1) == 1;
                x.iter()
                    .enumerate()
                    .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
                        (false, _) => Some(d),
                        (true, true) => Some(1),
                        (true, false) => None,
                    })
                    .collect()
            }
            "Squeeze" => {
                let x = input(0)?.clone();
                let axes = if opset < 13 {
                    node.attr_ints("axes")
                } else {
                    node.inputs.get(1).filter(|n| !n.is_empty()).map(|_| value(1)).transpose()?
                };
                match axes {
                    None => x.iter().copied().filter(|&d| d != 1).collect(),
                    Some(axes) => {
                        let r = x.len() as i64;
                        let axes: Vec<usize> = axes.iter().map(|&a| if a < 0 { a + r } else { a } as usize).collect();
                        if axes.iter().any(|&a| a >= x.len() || x[a] != 1) {
                            return Err(fail(format!("cannot squeeze axes {axes:?} of {x:?}")));
                        }
                        x.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
                    }
                }
            }
            "Unsqueeze" if opset >= 13 => {
                let x = input(0)?.clone();
                let axes = value(1)?;
                let rank = x.len() + axes.len();
                let mut axes: Vec<usize> =
                    axes.iter().map(|&a| if a < 0 { a + rank as i64 } else { a } as usize).collect();
                axes.sort();
                let mut shape = x;
                for a in axes {
                    if a > shape.len() {
                        return Err(fail(format!("axis {a} out of range")));
                    }
                    shape.insert(a, 1);
                }
                shape
            }
            "Add" | "Sub" | "Mul" | "Div" | "Sum" | "Max" | "Min" | "Pow" | "Equal" => {
                let mut shape = input(0)?.clone();
                for i in 1..node.inputs.len() {
                    shape = broadcast_shapes(&shape, input(i)?)
                        .ok_or_else(|| fail(format!("shapes {:?} and {:?} do not broadcast", shape, input(i).ok())))?;
                }
                shape
            }
            "ConstantOfShape" => {
                let shape = value(0)?;
                if shape.iter().any(|&d| d < 0) {
                    return Err(fail(format!("negative shape {shape:?}")));
                }
                shape
            }
            "Conv" => {
                let (x, w) = (input(0)?.clone(), input(1)?.clone());
                if x.len() < 3 || w.len() != x.len() {
                    return Err(fail(format!("input {x:?} and weight {w:?} do not make a convolution")));
                }
                let spatial = x.len() - 2;
                let group = node.attr_int("group", 1);
                if group < 1 || x[1] != w[1] * group {
                    return Err(fail(format!("{} input channels, weight takes {} x {group} groups", x[1], w[1])));
                }
                let kernel = node.attr_ints("kernel_shape").unwrap_or_else(|| w[2..].to_vec());
                if kernel[..] != w[2..] {
                    return Err(fail(format!("kernel_shape {kernel:?} does not match weight {w:?}")));
                }
                self.spatial(node, &x, &kernel, spatial, w[0], false)?
            }
            "MaxPool" | "AveragePool" => {
                let x = input(0)?.clone();
                let kernel = node.attr_ints("kernel_shape").ok_or_else(|| fail("no kernel_shape".into()))?;
                let spatial = x
                    .len()
                    .checked_sub(2)
                    .filter(|&n| n == kernel.len())
                    .ok_or_else(|| fail(format!("kernel {kernel:?} does not fit input {x:?}")))?;
                self.spatial(node, &x, &kernel, spatial, x[1], node.attr_int("ceil_mode", 0) == 1)?
            }
            "GlobalAveragePool" | "GlobalMaxPool" => {
                let x = input(0)?;
                x.iter().enumerate().map(|(i, &d)| if i < 2 { d } else { 1 }).collect()
            }
            "Gemm" => {
                let (a, b) = (input(0)?.clone(), input(1)?.clone());
                if a.len() != 2 || b.len() != 2 {
                    return Err(fail(format!("Gemm takes matrices, got {a:?} and {b:?}")));
                }
                let (m, ka) = if node.attr_int("transA", 0) == 1 { (a[1], a[0]) } else { (a[0], a[1]) };
                let (kb, n) = if node.attr_int("transB", 0) == 1 { (b[1], b[0]) } else { (b[0], b[1]) };
                if ka != kb {
                    return Err(fail(format!("inner dimensions {ka} and {kb} differ")));
                }
                vec![m, n]
            }
            "MatMul" => {
                let (a, b) = (input(0)?.clone(), input(1)?.clone());
                if a.len() < 2 || b.len() < 2 || a[a.len() - 1] != b[b.len() - 2] {
                    return Err(fail(format!("{a:?} x {b:?} does not multiply")));
                }
                let mut batch = broadcast_shapes(&a[..a.len() - 2], &b[..b.len() - 2])
                    .ok_or_else(|| fail("batch dimensions do not broadcast".into()))?;
                batch.extend([a[a.len() - 2], b[b.len() - 1]]);
                batch
            }
            "Reshape" => {
                let x = input(0)?.clone();
                let mut shape = value(1)?;
                let total = product(&x);
                for (i, d) in shape.iter_mut().enumerate() {
                    if *d == 0 {
                        *d = *x.get(i).ok_or_else(|| fail("0 refers past the input's rank".into()))?;
                    }
                }
                let known = product(&shape.iter().copied().filter(|&d| d != -1).collect::<Vec<_>>());
                match shape.iter().filter(|&&d| d == -1).count() {
                    0 if known == total => {}
                    1 if known > 0 && total % known == 0 => {
                        for d in shape.iter_mut().filter(|d| **d == -1) {
                            *d = total / known;
                        }
                    }
                    _ => return Err(fail(format!("cannot reshape {x:?} to {:?}", value(1)?))),
                }
                shape
            }
            "Flatten" => {
                let x = input(0)?;
                let axis = node.attr_int("axis", 1);
                let axis = if axis < 0 { axis + x.len() as i64 } else { axis } as usize;
                vec![product(&x[..axis.min(x.len())]), product(&x[axis.min(x.len())..])]
            }
            "Concat" => {
                let first = input(0)?.clone();
                let axis = node.attr_int("axis", 0);
                let axis = if axis < 0 { axis + first.len() as i64 } else { axis } as usize;
                if axis >= first.len() {
                    return Err(fail(format!("axis {axis} of a rank-{} tensor", first.len())));
                }
                let mut shape = first.clone();
                for i in 1..node.inputs.len() {
                    let other = input(i)?;
                    if other.len() != first.len() || (0..first.len()).any(|d| d != axis && other[d] != first[d]) {
                        return Err(fail(format!("{first:?} and {other:?} do not concatenate on axis {axis}")));
                    }
                    shape[axis] = shape[axis].saturating_add(other[axis]);
                }
                shape
            }
            "Transpose" => {
                let x = input(0)?;
                let perm = node.attr_ints("perm").unwrap_or_else(|| (0..x.len() as i64).rev().collect());
                perm.iter()
                    .map(|&p| {
                        x.get(p as usize).copied().ok_or_else(|| fail(format!("perm {perm:?} for rank {}", x.len())))
                    })
                    .collect::<Result<_, _>>()?
            }
            "Unsqueeze" if opset < 13 => {
                let x = input(0)?;
                let axes = node.attr_ints("axes").ok_or_else(|| fail("no axes".into()))?;
                let rank = x.len() + axes.len();
                let mut axes: Vec<usize> =
                    axes.iter().map(|&a| if a < 0 { a + rank as i64 } else { a } as usize).collect();
                axes.sort();
                let mut shape = x.clone();
                for a in axes {
                    if a > shape.len() {
                        return Err(fail(format!("axis {a} out of range")));
                    }
                    shape.insert(a, 1);
                }
                shape
            }
            other => return Err(ShapeError::Unsupported { op_type: other.into(), node: node.name.clone(), opset }),
        };
        if let Some(name) = node.outputs.first() {
            self.dims.insert(name.clone(), out);
        }
        Ok(())
    }

    /// Output of a convolution or pooling over `spatial` trailing axes with `channels`
    /// output channels.
    fn spatial(
        &self,
        node: &Node,
        x: &[i64],
        kernel: &[i64],
        spatial: usize,
        channels: i64,
        ceil: bool,
    ) -> Result<Vec<i64>, ShapeError> {
        let fail =
            |reason: String| ShapeError::Mismatch { node: node.name.clone(), op_type: node.op_type.clone(), reason };
        let strides = node.attr_ints("strides").unwrap_or_else(|| vec![1; spatial]);
        let dilations = node.attr_ints("dilations").unwrap_or_else(|| vec![1; spatial]);
        let pads = node.attr_ints("pads").unwrap_or_else(|| vec![0; 2 * spatial]);
        let auto_pad = node.attr_string("auto_pad").unwrap_or_default();
        if kernel.len() != spatial
            || strides.len() != spatial
            || dilations.len() != spatial
            || pads.len() != 2 * spatial
        {
            return Err(fail(format!("kernel {kernel:?}, strides {strides:?}, dilations {dilations:?}, pads {pads:?} for {spatial} spatial axes")));
        }
        if strides.iter().chain(&dilations).chain(kernel).any(|&v| !(1..=LIMIT).contains(&v)) {
            return Err(fail(format!("kernel, strides and dilations must be in 1..={LIMIT}")));
        }
        if pads.iter().any(|&p| !(0..=LIMIT).contains(&p)) || x[2..].iter().any(|&d| !(0..=1 << 40).contains(&d)) {
            return Err(fail(format!("pads {pads:?} or input {x:?} out of range")));
        }
        let mut out = vec![x[0], channels];
        for i in 0..spatial {
            let o = window(x[2 + i], kernel[i], strides[i], dilations[i], pads[i] + pads[i + spatial], ceil, &auto_pad);
            if o < 1 {
                return Err(fail(format!("axis {} of size {} is smaller than the window", 2 + i, x[2 + i])));
            }
            out.push(o);
        }
        Ok(out)
    }
}
