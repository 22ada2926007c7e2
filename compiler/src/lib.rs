//! `aicsim-compiler` turns ONNX models into aicsim program containers (the `qaic-exec`
//! equivalent).
//!
//! So far it reads ONNX and infers shapes: [`protobuf`] decodes the wire format without
//! trusting a byte of it, [`onnx`] builds the model, graph, node, attribute, tensor and
//! value-info messages from it, and [`shapes`] infers every tensor's dimensions.
//! Lowering to the device ISA is not written yet.
#![forbid(unsafe_code)]

pub mod onnx;
pub mod protobuf;
pub mod shapes;
