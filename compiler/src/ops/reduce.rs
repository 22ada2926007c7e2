//! Reductions over axes.

use aicsim_abi::isa::ReduceKind;

use super::{OpDef, ShapeCx};
use crate::build::Builder;
use crate::onnx::Node;
use crate::shapes::ShapeError;
use crate::CompileError;

/// The operators of this family.
pub(super) static OPS: &[OpDef] = &[
    OpDef { name: "ReduceMax", shape: Some(shape_reduce), fold: None, build: Some(build_reduce_max) },
    OpDef { name: "ReduceMean", shape: Some(shape_reduce), fold: None, build: Some(build_reduce_mean) },
    OpDef { name: "ReduceMin", shape: Some(shape_reduce), fold: None, build: Some(build_reduce_min) },
    OpDef { name: "ReduceSum", shape: Some(shape_reduce), fold: None, build: Some(build_reduce_sum) },
];

pub(super) fn shape_reduce(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    let node = cx.node;
    let opset = cx.opset;
    Ok({
        let x = cx.input(0)?.clone();
        let axes = if opset < 18 && node.op_type != "ReduceSum" || opset < 13 {
            node.attr_ints("axes")
        } else {
            node.inputs.get(1).filter(|n| !n.is_empty()).map(|_| cx.value(1)).transpose()?
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
                        Err(cx.fail(format!("axis {v} out of range for rank {r}")))
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
    })
}

pub(super) fn build_reduce_mean(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.reduce(node, ReduceKind::Mean)
}

pub(super) fn build_reduce_sum(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.reduce(node, ReduceKind::Sum)
}

pub(super) fn build_reduce_max(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.reduce(node, ReduceKind::Max)
}

pub(super) fn build_reduce_min(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.reduce(node, ReduceKind::Min)
}
