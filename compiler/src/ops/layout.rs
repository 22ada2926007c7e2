//! Operators that move no arithmetic: reshapes and views, squeeze and unsqueeze, `Concat`,
//! `Transpose`, `Identity`, `Dropout`, `Cast`, `Expand`.

use super::{FoldCx, OpDef, ShapeCx};
use crate::build::Builder;
use crate::fold::*;
use crate::ir::Const;
use crate::ir::LayerKind;
use crate::onnx::{data_type, Node};
use crate::shapes::{product, ShapeError};
use crate::CompileError;

/// The operators of this family.
pub(super) static OPS: &[OpDef] = &[
    OpDef { name: "Cast", shape: Some(super::shape_same_as_input), fold: Some(fold_cast), build: Some(build_cast) },
    OpDef { name: "Concat", shape: Some(shape_concat), fold: Some(fold_concat), build: Some(build_concat) },
    OpDef {
        name: "Dropout",
        shape: Some(super::shape_same_as_input),
        fold: Some(fold_identity),
        build: Some(build_dropout),
    },
    OpDef { name: "Expand", shape: None, fold: Some(fold_expand), build: None },
    OpDef { name: "Flatten", shape: Some(shape_flatten), fold: Some(fold_flatten), build: Some(build_view) },
    OpDef {
        name: "Identity",
        shape: Some(super::shape_same_as_input),
        fold: Some(fold_identity),
        build: Some(build_view),
    },
    OpDef { name: "Reshape", shape: Some(shape_reshape), fold: Some(fold_reshape), build: Some(build_view) },
    OpDef { name: "Squeeze", shape: Some(shape_squeeze), fold: Some(fold_squeeze_unsqueeze), build: Some(build_view) },
    OpDef { name: "Transpose", shape: Some(shape_transpose), fold: Some(fold_transpose), build: Some(build_transpose) },
    OpDef {
        name: "Unsqueeze",
        shape: Some(shape_unsqueeze),
        fold: Some(fold_squeeze_unsqueeze),
        build: Some(build_view),
    },
];

pub(super) fn shape_squeeze(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    let node = cx.node;
    let opset = cx.opset;
    Ok({
        let x = cx.input(0)?.clone();
        let axes = if opset < 13 {
            node.attr_ints("axes")
        } else {
            node.inputs.get(1).filter(|n| !n.is_empty()).map(|_| cx.value(1)).transpose()?
        };
        match axes {
            None => x.iter().copied().filter(|&d| d != 1).collect(),
            Some(axes) => {
                let r = x.len() as i64;
                let axes: Vec<usize> = axes.iter().map(|&a| if a < 0 { a + r } else { a } as usize).collect();
                if axes.iter().any(|&a| a >= x.len() || x[a] != 1) {
                    return Err(cx.fail(format!("cannot squeeze axes {axes:?} of {x:?}")));
                }
                x.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
            }
        }
    })
}

pub(super) fn shape_unsqueeze(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    let node = cx.node;
    let opset = cx.opset;
    Ok(if opset >= 13 {
        let x = cx.input(0)?.clone();
        let axes = cx.value(1)?;
        let rank = x.len() + axes.len();
        let mut axes: Vec<usize> = axes.iter().map(|&a| if a < 0 { a + rank as i64 } else { a } as usize).collect();
        axes.sort();
        let mut shape = x;
        for a in axes {
            if a > shape.len() {
                return Err(cx.fail(format!("axis {a} out of range")));
            }
            shape.insert(a, 1);
        }
        shape
    } else {
        let x = cx.input(0)?;
        let axes = node.attr_ints("axes").ok_or_else(|| cx.fail("no axes".into()))?;
        let rank = x.len() + axes.len();
        let mut axes: Vec<usize> = axes.iter().map(|&a| if a < 0 { a + rank as i64 } else { a } as usize).collect();
        axes.sort();
        let mut shape = x.clone();
        for a in axes {
            if a > shape.len() {
                return Err(cx.fail(format!("axis {a} out of range")));
            }
            shape.insert(a, 1);
        }
        shape
    })
}

pub(super) fn shape_reshape(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    Ok({
        let x = cx.input(0)?.clone();
        let mut shape = cx.value(1)?;
        let total = product(&x);
        for (i, d) in shape.iter_mut().enumerate() {
            if *d == 0 {
                *d = *x.get(i).ok_or_else(|| cx.fail("0 refers past the input's rank".into()))?;
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
            _ => return Err(cx.fail(format!("cannot reshape {x:?} to {:?}", cx.value(1)?))),
        }
        shape
    })
}

pub(super) fn shape_flatten(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    let node = cx.node;
    Ok({
        let x = cx.input(0)?;
        let axis = node.attr_int("axis", 1);
        let axis = if axis < 0 { axis + x.len() as i64 } else { axis } as usize;
        vec![product(&x[..axis.min(x.len())]), product(&x[axis.min(x.len())..])]
    })
}

pub(super) fn shape_concat(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    let node = cx.node;
    Ok({
        let first = cx.input(0)?.clone();
        let axis = node.attr_int("axis", 0);
        let axis = if axis < 0 { axis + first.len() as i64 } else { axis } as usize;
        if axis >= first.len() {
            return Err(cx.fail(format!("axis {axis} of a rank-{} tensor", first.len())));
        }
        let mut shape = first.clone();
        for i in 1..node.inputs.len() {
            let other = cx.input(i)?;
            if other.len() != first.len() || (0..first.len()).any(|d| d != axis && other[d] != first[d]) {
                return Err(cx.fail(format!("{first:?} and {other:?} do not concatenate on axis {axis}")));
            }
            shape[axis] = shape[axis].saturating_add(other[axis]);
        }
        shape
    })
}

pub(super) fn shape_transpose(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    let node = cx.node;
    Ok({
        let x = cx.input(0)?;
        let perm = node.attr_ints("perm").unwrap_or_else(|| (0..x.len() as i64).rev().collect());
        perm.iter()
            .map(|&p| x.get(p as usize).copied().ok_or_else(|| cx.fail(format!("perm {perm:?} for rank {}", x.len()))))
            .collect::<Result<_, _>>()?
    })
}

pub(super) fn fold_identity(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    Ok(cx.input(0)?.clone())
}

pub(super) fn fold_cast(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    let node = cx.node;
    Ok({
        let to = i32::try_from(node.attr_int("to", i64::from(data_type::FLOAT))).unwrap_or(0);
        let a = cx.input(0)?;
        match to {
            data_type::FLOAT | data_type::FLOAT16 | data_type::DOUBLE => Const::f32(a.shape.clone(), a.to_f32()),
            data_type::BOOL => Const::i64(a.shape.clone(), a.to_f64().iter().map(|&x| i64::from(x != 0.0)).collect()),
            _ => Const::i64(a.shape.clone(), a.to_i64()),
        }
    })
}

pub(super) fn fold_reshape(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    Ok({
        let a = cx.input(0)?;
        let target = cx.input(1)?.to_i64();
        let mut shape: Vec<i64> = target.clone();
        for (i, d) in shape.iter_mut().enumerate() {
            if *d == 0 {
                *d = *a.shape.get(i).ok_or("0 refers past the input's rank")? as i64;
            }
        }
        let known: i64 = shape.iter().filter(|&&d| d != -1).product();
        let total = a.len() as i64;
        for d in shape.iter_mut().filter(|d| **d == -1) {
            *d = if known > 0 { total / known } else { 0 };
        }
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        if shape.iter().product::<usize>() != a.len() {
            return Err(format!("cannot reshape {:?} to {target:?}", a.shape));
        }
        Const { shape, data: a.data.clone() }
    })
}

pub(super) fn fold_flatten(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    let node = cx.node;
    Ok({
        let a = cx.input(0)?;
        let axis = norm_axis(node.attr_int("axis", 1), a.shape.len() + 1)?;
        let shape = vec![a.shape[..axis].iter().product(), a.shape[axis..].iter().product()];
        Const { shape, data: a.data.clone() }
    })
}

pub(super) fn fold_squeeze_unsqueeze(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    let node = cx.node;
    let opset = cx.opset;
    let op = cx.op;
    let inputs = cx.inputs;
    Ok({
        let a = cx.input(0)?;
        let axes = if opset < 13 { node.attr_ints("axes") } else { inputs.get(1).map(|c| c.to_i64()) };
        let shape = if op == "Squeeze" {
            match axes {
                None => a.shape.iter().copied().filter(|&d| d != 1).collect(),
                Some(axes) => {
                    let axes: Vec<usize> =
                        axes.iter().map(|&x| norm_axis(x, a.shape.len())).collect::<Result<_, _>>()?;
                    a.shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
                }
            }
        } else {
            let axes = axes.ok_or("Unsqueeze needs axes")?;
            let rank = a.shape.len() + axes.len();
            let mut axes: Vec<usize> = axes.iter().map(|&x| norm_axis(x, rank)).collect::<Result<_, _>>()?;
            axes.sort();
            let mut shape = a.shape.clone();
            for x in axes {
                shape.insert(x.min(shape.len()), 1);
            }
            shape
        };
        Const { shape, data: a.data.clone() }
    })
}

pub(super) fn fold_concat(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    let node = cx.node;
    let inputs = cx.inputs;
    Ok({
        let first = cx.input(0)?;
        let rank = first.shape.len();
        let axis = norm_axis(node.attr_int("axis", 0), rank)?;
        let mut shape = first.shape.clone();
        shape[axis] = inputs.iter().map(|c| c.shape.get(axis).copied().unwrap_or(0)).sum();
        let outer: usize = shape[..axis].iter().product();
        let any_float = inputs.iter().any(|c| !c.is_int());
        let mut f = Vec::new();
        let mut i = Vec::new();
        for o in 0..outer {
            for c in inputs {
                if c.shape.len() != rank {
                    return Err("Concat inputs differ in rank".into());
                }
                let block: usize = c.shape[axis..].iter().product();
                if any_float {
                    f.extend_from_slice(&c.to_f32()[o * block..(o + 1) * block]);
                } else {
                    i.extend_from_slice(&c.to_i64()[o * block..(o + 1) * block]);
                }
            }
        }
        if any_float {
            Const::f32(shape, f)
        } else {
            Const::i64(shape, i)
        }
    })
}

pub(super) fn fold_transpose(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    let node = cx.node;
    Ok({
        let a = cx.input(0)?;
        let perm: Vec<usize> = node
            .attr_ints("perm")
            .unwrap_or_else(|| (0..a.shape.len() as i64).rev().collect())
            .iter()
            .map(|&p| p as usize)
            .collect();
        if perm.len() != a.shape.len() || perm.iter().any(|&p| p >= a.shape.len()) {
            return Err(format!("perm {perm:?} for rank {}", a.shape.len()));
        }
        transpose(a, &perm)
    })
}

pub(super) fn fold_expand(cx: &FoldCx<'_>) -> Result<Const, FoldError> {
    Ok({
        let a = cx.input(0)?;
        let target: Vec<usize> = cx.input(1)?.to_i64().iter().map(|&d| d.max(0) as usize).collect();
        let shape = broadcast_shapes(&a.shape, &target).ok_or("Expand shapes do not broadcast")?;
        bounded(&shape)?;
        let idx = broadcast_indices(&shape, &a.shape);
        a.pick(shape, idx.into_iter())
    })
}

pub(super) fn build_concat(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    {
        let shape = bld.out_shape(node)?;
        let mut inputs = Vec::new();
        for i in 0..node.inputs.len() {
            inputs.push(bld.value(node, i)?);
        }
        let a = node.attr_int("axis", 0);
        let axis = if a < 0 { a + shape.len() as i64 } else { a } as usize;
        bld.add_layer(node, LayerKind::Concat { inputs, axis }, shape);
        Ok(())
    }
}

pub(super) fn build_transpose(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    {
        let x = bld.value(node, 0)?;
        let shape = bld.out_shape(node)?;
        let rank = bld.g.values[x].shape.len();
        let perm: Vec<usize> = node
            .attr_ints("perm")
            .unwrap_or_else(|| (0..rank as i64).rev().collect())
            .iter()
            .map(|&p| p as usize)
            .collect();
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return bld.view(node, shape);
        }
        bld.add_layer(node, LayerKind::Transpose { input: x, perm }, shape);
        Ok(())
    }
}

pub(super) fn build_view(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    {
        let shape = bld.out_shape(node)?;
        bld.view(node, shape)
    }
}

pub(super) fn build_dropout(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    {
        if node.outputs.len() > 1 && bld.uses.get(&node.outputs[1]).copied().unwrap_or(0) > 0 {
            return Err(bld.fail(node, "the mask output is not supported"));
        }
        let shape = bld.g.values[bld.value_as_stored(node, 0)?].shape.clone();
        bld.view(node, shape)
    }
}

pub(super) fn build_cast(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    let to = node.attr_int("to", i64::from(data_type::FLOAT));
    let x = bld.value_as_stored(node, 0)?;
    let float = [data_type::FLOAT, data_type::FLOAT16, data_type::DOUBLE].map(i64::from).contains(&to);
    let int = [data_type::INT64, data_type::INT32].map(i64::from).contains(&to);
    if bld.g.values[x].quant.is_some() {
        return Err(bld.fail(node, "casting a quantised (int8) tensor is not supported; dequantise it first"));
    }
    let shape = bld.g.values[x].shape.clone();
    match (bld.g.values[x].int32, float, int) {
        // Integers to float: converted once (the integer value's float view).
        (true, true, _) => {
            let f = bld.float_view(x);
            bld.bind_value(&node.outputs[0].clone(), f);
            Ok(())
        }
        (true, _, true) | (false, true, _) => bld.view(node, shape),
        _ => Err(bld.fail(node, format!("casting a runtime tensor to data type {to} is not supported"))),
    }
}
