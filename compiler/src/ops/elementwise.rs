//! Element-wise operators: activations and other unary maps, binary arithmetic and
//! comparisons with broadcasting, and `Where`.

use aicsim_abi::isa::{BinaryKind, UnaryKind};

use super::{FoldCx, OpDef, ShapeCx};
use crate::build::Builder;
use crate::fold::*;
use crate::ir::Const;
use crate::onnx::Node;
use crate::shapes::ShapeError;
use crate::CompileError;

/// The operators of this family.
pub(super) static OPS: &[OpDef] = &[
    OpDef { name: "Abs", shape: Some(super::shape_same_as_input), fold: Some(fold_unary), build: None },
    OpDef { name: "Add", shape: Some(shape_broadcast), fold: Some(fold_binary), build: Some(build_add) },
    OpDef { name: "And", shape: None, fold: Some(fold_binary), build: None },
    OpDef { name: "Clip", shape: Some(super::shape_same_as_input), fold: None, build: Some(build_clip) },
    OpDef { name: "Div", shape: Some(shape_broadcast), fold: Some(fold_binary), build: Some(build_div) },
    OpDef { name: "Equal", shape: Some(shape_broadcast), fold: Some(fold_binary), build: Some(build_equal) },
    OpDef { name: "Erf", shape: Some(super::shape_same_as_input), fold: Some(fold_unary), build: Some(build_erf) },
    OpDef { name: "Exp", shape: Some(super::shape_same_as_input), fold: Some(fold_unary), build: Some(build_exp) },
    OpDef { name: "Gelu", shape: Some(super::shape_same_as_input), fold: None, build: Some(build_gelu) },
    OpDef { name: "Greater", shape: Some(shape_broadcast), fold: Some(fold_binary), build: Some(build_greater) },
    OpDef {
        name: "GreaterOrEqual",
        shape: Some(shape_broadcast),
        fold: Some(fold_binary),
        build: Some(build_greater_or_equal),
    },
    OpDef { name: "LeakyRelu", shape: Some(super::shape_same_as_input), fold: None, build: None },
    OpDef { name: "Less", shape: Some(shape_broadcast), fold: Some(fold_binary), build: Some(build_less) },
    OpDef {
        name: "LessOrEqual",
        shape: Some(shape_broadcast),
        fold: Some(fold_binary),
        build: Some(build_less_or_equal),
    },
    OpDef { name: "Max", shape: Some(shape_broadcast), fold: Some(fold_binary), build: Some(build_max) },
    OpDef { name: "Min", shape: Some(shape_broadcast), fold: Some(fold_binary), build: Some(build_min) },
    OpDef { name: "Mul", shape: Some(shape_broadcast), fold: Some(fold_binary), build: Some(build_mul) },
    OpDef { name: "Neg", shape: Some(super::shape_same_as_input), fold: Some(fold_unary), build: Some(build_neg) },
    OpDef { name: "Not", shape: None, fold: Some(fold_unary), build: None },
    OpDef { name: "Or", shape: None, fold: Some(fold_binary), build: None },
    OpDef { name: "Pow", shape: Some(shape_broadcast), fold: Some(fold_binary), build: Some(build_pow) },
    OpDef {
        name: "Reciprocal",
        shape: Some(super::shape_same_as_input),
        fold: Some(fold_unary),
        build: Some(build_reciprocal),
    },
    OpDef { name: "Relu", shape: Some(super::shape_same_as_input), fold: Some(fold_unary), build: Some(build_relu) },
    OpDef {
        name: "Sigmoid",
        shape: Some(super::shape_same_as_input),
        fold: Some(fold_unary),
        build: Some(build_sigmoid),
    },
    OpDef { name: "Sqrt", shape: Some(super::shape_same_as_input), fold: Some(fold_unary), build: Some(build_sqrt) },
    OpDef { name: "Sub", shape: Some(shape_broadcast), fold: Some(fold_binary), build: Some(build_sub) },
    OpDef { name: "Sum", shape: Some(shape_broadcast), fold: Some(fold_sum), build: Some(build_add) },
    OpDef { name: "Tanh", shape: Some(super::shape_same_as_input), fold: Some(fold_unary), build: Some(build_tanh) },
    OpDef { name: "Where", shape: None, fold: Some(fold_where), build: None },
];

pub(super) fn shape_broadcast(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    let node = cx.node;
    Ok({
        let mut shape = cx.input(0)?.clone();
        for i in 1..node.inputs.len() {
            shape = broadcast_shapes(&shape, cx.input(i)?)
                .ok_or_else(|| cx.fail(format!("shapes {:?} and {:?} do not broadcast", shape, cx.input(i).ok())))?;
        }
        shape
    })
}

pub(super) fn fold_binary(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    let op = cx.op;
    let inputs = cx.inputs;
    Ok({
        let mut acc = cx.input(0)?.clone();
        for b in &inputs[1..] {
            acc = binary(op, &acc, b)?;
        }
        acc
    })
}

pub(super) fn fold_sum(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    let inputs = cx.inputs;
    Ok({
        let mut acc = cx.input(0)?.clone();
        for b in &inputs[1..] {
            acc = binary("Add", &acc, b)?;
        }
        acc
    })
}

pub(super) fn fold_unary(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    let op = cx.op;
    unary(op, cx.input(0)?)
}

pub(super) fn fold_where(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    Ok({
        let (c, x, y) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
        let shape = broadcast_shapes(&c.shape, &x.shape)
            .and_then(|s| broadcast_shapes(&s, &y.shape))
            .ok_or("Where operands do not broadcast")?;
        let (ic, ix, iy) = (
            broadcast_indices(&shape, &c.shape),
            broadcast_indices(&shape, &x.shape),
            broadcast_indices(&shape, &y.shape),
        );
        let cond = c.to_i64();
        if x.is_int() && y.is_int() {
            let (xv, yv) = (x.to_i64(), y.to_i64());
            Const::i64(shape, (0..ic.len()).map(|k| if cond[ic[k]] != 0 { xv[ix[k]] } else { yv[iy[k]] }).collect())
        } else {
            let (xv, yv) = (x.to_f32(), y.to_f32());
            Const::f32(shape, (0..ic.len()).map(|k| if cond[ic[k]] != 0 { xv[ix[k]] } else { yv[iy[k]] }).collect())
        }
    })
}

pub(super) fn build_relu(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.unary(node, UnaryKind::Relu)
}

pub(super) fn build_sigmoid(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.unary(node, UnaryKind::Sigmoid)
}

pub(super) fn build_tanh(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.unary(node, UnaryKind::Tanh)
}

pub(super) fn build_erf(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.unary(node, UnaryKind::Erf)
}

pub(super) fn build_sqrt(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.unary(node, UnaryKind::Sqrt)
}

pub(super) fn build_exp(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.unary(node, UnaryKind::Exp)
}

pub(super) fn build_reciprocal(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.unary(node, UnaryKind::Reciprocal)
}

pub(super) fn build_neg(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.unary(node, UnaryKind::Affine { scale: -1.0, shift: 0.0 })
}

pub(super) fn build_gelu(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    if node.attr_string("approximate").unwrap_or_default() == "tanh" {
        return Err(bld.unsupported(node));
    }
    {
        bld.unary(node, UnaryKind::Gelu)
    }
}

pub(super) fn build_clip(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    {
        let (min, max) = if bld.opset < 11 {
            (node.attr_float("min", f32::MIN), node.attr_float("max", f32::MAX))
        } else {
            let get = |i| -> Result<Option<f32>, CompileError> {
                Ok(bld.konst(node, i)?.and_then(|c| scalar(&bld.g.consts[c])))
            };
            (get(1)?.unwrap_or(f32::MIN), get(2)?.unwrap_or(f32::MAX))
        };
        bld.unary(node, UnaryKind::Clip { min, max })
    }
}

pub(super) fn build_pow(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    match bld.konst(node, 1)?.and_then(|c| scalar(&bld.g.consts[c])) {
        Some(e) => bld.unary(node, UnaryKind::Pow { exponent: e }),
        None => Err(bld.fail(node, "the exponent must be a constant scalar")),
    }
}

pub(super) fn build_add(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.binary(node, BinaryKind::Add)
}

pub(super) fn build_sub(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.binary(node, BinaryKind::Sub)
}

pub(super) fn build_mul(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.binary(node, BinaryKind::Mul)
}

pub(super) fn build_div(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.binary(node, BinaryKind::Div)
}

pub(super) fn build_max(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.binary(node, BinaryKind::Max)
}

pub(super) fn build_min(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.binary(node, BinaryKind::Min)
}

// Comparisons give 1 or 0 in the program's float type (a boolean tensor is stored as
// such; `Cast` to a float type is then a view). `a > b` is `b < a`.

pub(super) fn build_less(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    compare(bld, node, BinaryKind::Less, false)
}

pub(super) fn build_less_or_equal(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    compare(bld, node, BinaryKind::LessOrEqual, false)
}

pub(super) fn build_equal(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    compare(bld, node, BinaryKind::Equal, false)
}

pub(super) fn build_greater(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    compare(bld, node, BinaryKind::Less, true)
}

pub(super) fn build_greater_or_equal(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    compare(bld, node, BinaryKind::LessOrEqual, true)
}

/// A comparison of exactly two inputs; `swap` compares them the other way round.
fn compare(bld: &mut Builder<'_>, node: &Node, kind: BinaryKind, swap: bool) -> Result<(), CompileError> {
    if node.inputs.len() != 2 {
        return Err(bld.fail(node, format!("a comparison takes two inputs, not {}", node.inputs.len())));
    }
    let mut n = node.clone();
    if swap {
        n.inputs.swap(0, 1);
    }
    bld.binary(&n, kind)
}
