//! Shape arithmetic evaluated at compile time: `ConstantOfShape`, `Gather`, `Slice`,
//! `Range`.

use super::{FoldCx, OpDef, ShapeCx};
use crate::fold::*;
use crate::ir::Const;
use crate::onnx::{data_type, AttributeValue};
use crate::shapes::ShapeError;

/// The operators of this family.
pub(super) static OPS: &[OpDef] = &[
    OpDef {
        name: "ConstantOfShape",
        shape: Some(shape_constant_of_shape),
        fold: Some(fold_constant_of_shape),
        build: None,
    },
    OpDef { name: "Gather", shape: None, fold: Some(fold_gather), build: None },
    OpDef { name: "Range", shape: None, fold: Some(fold_range), build: None },
    OpDef { name: "Slice", shape: None, fold: Some(fold_slice), build: None },
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
