//! Row-wise normalisations: `Softmax`, `LayerNormalization`, `LRN`.

use super::OpDef;
use crate::build::Builder;
use crate::ir::LayerKind;
use crate::onnx::Node;
use crate::CompileError;

/// The operators of this family.
pub(super) static OPS: &[OpDef] = &[
    OpDef { name: "LRN", shape: Some(super::shape_same_as_input), fold: None, build: Some(build_lrn) },
    OpDef {
        name: "LayerNormalization",
        shape: Some(super::shape_same_as_input),
        fold: None,
        build: Some(build_layer_normalization),
    },
    OpDef { name: "Softmax", shape: Some(super::shape_same_as_input), fold: None, build: Some(build_softmax) },
];

pub(super) fn build_softmax(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    {
        let x = bld.value(node, 0)?;
        let xs = bld.g.values[x].shape.clone();
        let default_axis = if bld.opset < 13 { 1 } else { -1 };
        let a = node.attr_int("axis", default_axis);
        let axis = if a < 0 { a + xs.len() as i64 } else { a } as usize;
        if axis >= xs.len() {
            return Err(bld.fail(node, format!("axis {a} for rank {}", xs.len())));
        }
        let row: usize = if bld.opset < 13 {
            xs[axis..].iter().product()
        } else if xs[axis + 1..].iter().all(|&d| d == 1) {
            xs[axis]
        } else {
            return Err(bld.fail(node, "softmax over an axis other than the last is not supported"));
        };
        bld.add_layer(node, LayerKind::Softmax { input: x, row }, xs);
        Ok(())
    }
}

pub(super) fn build_layer_normalization(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    {
        let x = bld.value(node, 0)?;
        let xs = bld.g.values[x].shape.clone();
        let axis = node.attr_int("axis", -1);
        if axis != -1 && axis != xs.len() as i64 - 1 {
            return Err(bld.fail(node, "normalisation over more than the last axis is not supported"));
        }
        let scale = bld.konst(node, 1)?;
        let bias = bld.konst(node, 2)?;
        let epsilon = node.attr_float("epsilon", 1e-5);
        bld.add_layer(node, LayerKind::LayerNorm { input: x, epsilon, scale, bias }, xs);
        Ok(())
    }
}

pub(super) fn build_lrn(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    {
        let x = bld.value(node, 0)?;
        let xs = bld.g.values[x].shape.clone();
        if xs.len() != 4 {
            return Err(bld.fail(node, "LRN needs [N, C, H, W]"));
        }
        let size = node.attr_int("size", 0);
        if size < 1 {
            return Err(bld.fail(node, "size must be positive"));
        }
        let kind = LayerKind::Lrn {
            input: x,
            size: size as usize,
            alpha: node.attr_float("alpha", 1e-4),
            beta: node.attr_float("beta", 0.75),
            bias: node.attr_float("bias", 1.0),
        };
        bld.add_layer(node, kind, xs);
        Ok(())
    }
}
