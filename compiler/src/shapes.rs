//! Shape inference: the dimensions of every tensor of a graph, from its inputs (with
//! symbolic dimensions given values, as `-onnx-define-symbol` does), its initializers,
//! and each operator's rules. Integer tensors known at compile time (shape operands of
//! Reshape and ConstantOfShape) are tracked by value.

use std::collections::HashMap;

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
pub(crate) fn product(dims: &[i64]) -> i64 {
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
        let Some(rule) = crate::ops::find(&node.op_type).and_then(|d| d.shape) else {
            return Err(ShapeError::Unsupported { op_type: node.op_type.clone(), node: node.name.clone(), opset });
        };
        let out = rule(&crate::ops::ShapeCx { node, opset, shapes: self })?;
        if let Some(name) = node.outputs.first() {
            self.dims.insert(name.clone(), out);
        }
        Ok(())
    }

    /// Output of a convolution or pooling over `spatial` trailing axes with `channels`
    /// output channels.
    pub(crate) fn spatial(
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
