//! `aicsim-compiler` turns ONNX models into aicsim program containers (the `qaic-exec`
//! equivalent).
//!
//! The pipeline: [`protobuf`] decodes the wire format without trusting a byte of it;
//! [`onnx`] builds the model messages; [`shapes`] infers every tensor's dimensions;
//! [`build`] imports the graph into the compiler's [`ir`] — folding constants
//! ([`fold`]), batch normalisations and biases, fusing activations and element-wise
//! chains; [`lower`] tiles every layer into VTCM with double buffering, splits it across
//! cores and writes the per-core instruction streams, DMA plan and DDR layout; and
//! [`compile`] ties it together with the `aic-exec` options and the performance report.
#![forbid(unsafe_code)]

pub mod build;
pub mod compile;
pub mod fold;
pub mod ir;
pub mod lower;
pub mod onnx;
pub mod ops;
mod patterns;
mod peers;
pub mod protobuf;
pub mod quantize;
pub mod shapes;
pub mod zoo;

pub use compile::{compile, compile_file, CompileOptions, Compiled, Source};

fn list_nodes(nodes: &[(String, String)]) -> String {
    nodes.iter().map(|(op, node)| format!("{op} (node '{node}')")).collect::<Vec<_>>().join(", ")
}

/// Why a model does not compile. Every variant names what is wrong and where.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Onnx(#[from] onnx::OnnxError),
    #[error(transparent)]
    Shape(#[from] shapes::ShapeError),
    #[error("unsupported operator {op_type} (node '{node}', opset {opset})")]
    Unsupported { op_type: String, node: String, opset: i64 },
    /// Several nodes whose operators the compiler does not take, all named at once:
    /// `(op_type, node)` in graph order.
    #[error("{} unsupported operators (opset {opset}): {}", .nodes.len(), list_nodes(.nodes))]
    UnsupportedMany { nodes: Vec<(String, String)>, opset: i64 },
    #[error("node '{node}' ({op_type}): {reason}")]
    Node { node: String, op_type: String, reason: String },
    #[error("{0}")]
    Model(String),
    #[error("layer '{layer}': {reason}")]
    Lowering { layer: String, reason: String },
    #[error("option {option}: {reason}")]
    Option { option: &'static str, reason: String },
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
}
