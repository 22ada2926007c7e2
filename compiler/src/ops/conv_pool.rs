//! Convolution, batch normalisation (folded into it), pooling and padding.

use aicsim_abi::isa::PoolKind;

use super::{OpDef, ShapeCx};
use crate::build::Builder;
use crate::ir::LayerKind;
use crate::onnx::Node;
use crate::shapes::ShapeError;
use crate::CompileError;

/// The operators of this family.
pub(super) static OPS: &[OpDef] = &[
    OpDef { name: "AveragePool", shape: Some(shape_pool), fold: None, build: Some(build_average_pool) },
    OpDef {
        name: "BatchNormalization",
        shape: Some(super::shape_same_as_input),
        fold: None,
        build: Some(build_batch_normalization),
    },
    OpDef { name: "Conv", shape: Some(shape_conv), fold: None, build: Some(build_conv) },
    OpDef {
        name: "GlobalAveragePool",
        shape: Some(shape_global_pool),
        fold: None,
        build: Some(build_global_average_pool),
    },
    OpDef { name: "GlobalMaxPool", shape: Some(shape_global_pool), fold: None, build: Some(build_global_max_pool) },
    OpDef { name: "MaxPool", shape: Some(shape_pool), fold: None, build: Some(build_max_pool) },
    OpDef { name: "Pad", shape: None, fold: None, build: Some(build_pad) },
];

pub(super) fn shape_conv(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    let node = cx.node;
    Ok({
        let (x, w) = (cx.input(0)?.clone(), cx.input(1)?.clone());
        if x.len() < 3 || w.len() != x.len() {
            return Err(cx.fail(format!("input {x:?} and weight {w:?} do not make a convolution")));
        }
        let spatial = x.len() - 2;
        let group = node.attr_int("group", 1);
        if group < 1 || x[1] != w[1] * group {
            return Err(cx.fail(format!("{} input channels, weight takes {} x {group} groups", x[1], w[1])));
        }
        let kernel = node.attr_ints("kernel_shape").unwrap_or_else(|| w[2..].to_vec());
        if kernel[..] != w[2..] {
            return Err(cx.fail(format!("kernel_shape {kernel:?} does not match weight {w:?}")));
        }
        cx.shapes.spatial(node, &x, &kernel, spatial, w[0], false)?
    })
}

pub(super) fn shape_pool(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    let node = cx.node;
    Ok({
        let x = cx.input(0)?.clone();
        let kernel = node.attr_ints("kernel_shape").ok_or_else(|| cx.fail("no kernel_shape".into()))?;
        let spatial = x
            .len()
            .checked_sub(2)
            .filter(|&n| n == kernel.len())
            .ok_or_else(|| cx.fail(format!("kernel {kernel:?} does not fit input {x:?}")))?;
        cx.shapes.spatial(node, &x, &kernel, spatial, x[1], node.attr_int("ceil_mode", 0) == 1)?
    })
}

pub(super) fn shape_global_pool(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    Ok({
        let x = cx.input(0)?;
        x.iter().enumerate().map(|(i, &d)| if i < 2 { d } else { 1 }).collect()
    })
}

pub(super) fn build_conv(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.conv(node)
}

pub(super) fn build_batch_normalization(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.batch_norm(node)
}

pub(super) fn build_max_pool(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    {
        if node.outputs.len() > 1 && !node.outputs[1].is_empty() {
            return Err(bld.fail(node, "the Indices output is not supported"));
        }
        bld.pool(node, PoolKind::Max)
    }
}

pub(super) fn build_average_pool(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.pool(node, PoolKind::Avg)
}

pub(super) fn build_global_average_pool(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    {
        let x = bld.value(node, 0)?;
        let shape = bld.out_shape(node)?;
        if bld.g.values[x].shape.len() != 4 {
            return Err(bld.fail(node, "only [N, C, H, W] inputs are supported"));
        }
        bld.add_layer(node, LayerKind::GlobalAvgPool { input: x }, shape);
        Ok(())
    }
}

pub(super) fn build_global_max_pool(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    {
        let x = bld.value(node, 0)?;
        let shape = bld.out_shape(node)?;
        let xs = bld.g.values[x].shape.clone();
        if xs.len() != 4 {
            return Err(bld.fail(node, "only [N, C, H, W] inputs are supported"));
        }
        let kernel = [xs[2], xs[3]];
        bld.add_layer(
            node,
            LayerKind::Pool { input: x, kind: PoolKind::Max, kernel, stride: [1, 1], pad: [0, 0] },
            shape,
        );
        Ok(())
    }
}

pub(super) fn build_pad(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    bld.pad(node)
}
