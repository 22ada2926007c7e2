//! Shape arithmetic evaluated at compile time: `ConstantOfShape`, `Gather`, `Slice`,
//! `Range`; and `Gather` of a constant table's rows by runtime indices (embeddings).

use super::{FoldCx, OpDef, ShapeCx};
use crate::build::Builder;
use crate::fold::*;
use crate::ir::{Const, LayerKind};
use crate::onnx::{data_type, AttributeValue, Node};
use crate::shapes::ShapeError;
use crate::CompileError;

/// The operators of this family.
pub(super) static OPS: &[OpDef] = &[
    OpDef {
        name: "ConstantOfShape",
        shape: Some(shape_constant_of_shape),
        fold: Some(fold_constant_of_shape),
        build: None,
    },
    OpDef { name: "Gather", shape: Some(shape_gather), fold: Some(fold_gather), build: Some(build_gather) },
    OpDef { name: "Range", shape: None, fold: Some(fold_range), build: None },
    OpDef { name: "Slice", shape: None, fold: Some(fold_slice), build: Some(build_slice) },
];

pub(super) fn shape_constant_of_shape(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    Ok({
        let shape = cx.value(0)?;
        if shape.iter().any(|&d| d < 0) {
            return Err(cx.fail(format!("negative shape {shape:?}")));
        }
        shape
    })
}

/// `data[:axis] + indices + data[axis + 1:]`.
pub(super) fn shape_gather(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    let (data, indices) = (cx.input(0)?, cx.input(1)?);
    let r = data.len() as i64;
    let axis = cx.node.attr_int("axis", 0);
    let axis = if axis < 0 { axis + r } else { axis };
    if !(0..r).contains(&axis) {
        return Err(cx.fail(format!("axis {axis} is outside a rank-{r} input")));
    }
    let a = axis as usize;
    Ok(data[..a].iter().chain(indices).chain(&data[a + 1..]).copied().collect())
}

/// A runtime gather: rows of a constant table `[V, H]` (axis 0) by runtime integer
/// indices, such as an embedding look-up of token ids.
pub(super) fn build_gather(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    let table = bld.konst(node, 0)?.ok_or_else(|| bld.fail(node, "the table must be known at compile time"))?;
    let indices = bld.value_as_stored(node, 1)?;
    if !bld.g.values[indices].int32 {
        return Err(bld.fail(node, format!("indices '{}' must be an integer input (or a view of one)", node.inputs[1])));
    }
    let ts = bld.g.consts[table].shape.clone();
    if ts.len() != 2 || node.attr_int("axis", 0) != 0 {
        return Err(bld.fail(node, format!("only rows (axis 0) of a matrix are gathered; the table is {ts:?}")));
    }
    let shape = bld.out_shape(node)?;
    let table = if bld.g.consts[table].is_int() {
        let c = Const::f32(ts.clone(), bld.g.consts[table].to_f32());
        bld.g.add_const(&node.inputs[0], c)
    } else {
        table
    };
    bld.add_layer(node, LayerKind::Gather { table, indices }, shape);
    Ok(())
}

pub(super) fn fold_gather(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    let node = cx.node;
    gather(node, cx.input(0)?, cx.input(1)?)
}

pub(super) fn fold_slice(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    let node = cx.node;
    let opset = cx.opset;
    let inputs = cx.inputs;
    slice(node, cx.input(0)?, inputs, opset)
}

pub(super) fn fold_range(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    Ok({
        let (s, l, d) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
        if s.is_int() {
            let (s, l, d) = (s.to_i64()[0], l.to_i64()[0], d.to_i64()[0]);
            if d == 0 {
                return Err("Range delta 0".into());
            }
            let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as usize;
            bounded(&[n])?;
            Const::i64(vec![n], (0..n as i64).map(|k| s + k * d).collect())
        } else {
            let (s, l, d) = (s.to_f32()[0], l.to_f32()[0], d.to_f32()[0]);
            let n = ((l - s) / d).ceil().max(0.0) as usize;
            bounded(&[n])?;
            Const::f32(vec![n], (0..n).map(|k| s + k as f32 * d).collect())
        }
    })
}

pub(super) fn fold_constant_of_shape(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    let node = cx.node;
    Ok({
        let shape: Vec<usize> = cx
            .input(0)?
            .to_i64()
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
            .collect::<Result<_, _>>()?;
        let n = bounded(&shape)?;
        match node.attribute("value") {
            Some(AttributeValue::Tensor(t)) => {
                let v = t.to_f32(None).map_err(|e| e.to_string())?;
                let x = *v.first().ok_or("ConstantOfShape value is empty")?;
                if data_type::is_integer(t.data_type) {
                    Const::i64(shape, vec![x as i64; n])
                } else {
                    Const::f32(shape, vec![x; n])
                }
            }
            _ => Const::f32(shape, vec![0.0; n]),
        }
    })
}

/// A slice of a runtime tensor with unit steps: a strided copy of the box.
pub(super) fn build_slice(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    let x = bld.value(node, 0)?;
    let shape = bld.g.values[x].shape.clone();
    let rank = shape.len();
    let ints = |bld: &Builder<'_>, i: usize| -> Result<Option<Vec<i64>>, CompileError> {
        Ok(bld.konst(node, i)?.map(|c| bld.g.consts[c].to_i64()))
    };
    let (starts, ends, axes, steps) = if bld.opset < 10 {
        let need = |name| node.attr_ints(name).ok_or_else(|| bld.fail(node, format!("has no {name}")));
        (need("starts")?, need("ends")?, node.attr_ints("axes"), None)
    } else {
        let need = |i, name| ints(bld, i)?.ok_or_else(|| bld.fail(node, format!("has no {name}")));
        (need(1, "starts")?, need(2, "ends")?, ints(bld, 3)?, ints(bld, 4)?)
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    if steps.as_ref().is_some_and(|s| s.iter().any(|&s| s != 1))
        || starts.len() != ends.len()
        || axes.len() != starts.len()
    {
        return Err(bld.fail(node, "a slice of a runtime tensor takes steps of 1 and one start and end per axis"));
    }
    let mut begin = vec![0usize; rank];
    let mut out = shape.clone();
    for (i, &axis) in axes.iter().enumerate() {
        let a = crate::fold::norm_axis(axis, rank).map_err(|e| bld.fail(node, e))?;
        let dim = shape[a] as i64;
        let fix = |v: i64| (if v < 0 { v + dim } else { v }).clamp(0, dim);
        let (b, e) = (fix(starts[i]), fix(ends[i]));
        if e <= b {
            return Err(bld.fail(node, format!("the slice of axis {a} [{b}, {e}) is empty")));
        }
        begin[a] = b as usize;
        out[a] = (e - b) as usize;
    }
    if out == shape {
        bld.bind_value(&node.outputs[0].clone(), x);
        return Ok(());
    }
    bld.add_layer(node, LayerKind::Slice { input: x, begin }, out);
    Ok(())
}
