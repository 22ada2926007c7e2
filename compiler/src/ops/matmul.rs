//! Matrix products: `Gemm` and `MatMul`.

use super::{OpDef, ShapeCx};
use crate::build::{Builder, Entry};
use crate::fold::*;
use crate::ir::LayerKind;
use crate::onnx::Node;
use crate::shapes::ShapeError;
use crate::CompileError;

/// The operators of this family.
pub(super) static OPS: &[OpDef] = &[
    OpDef { name: "Gemm", shape: Some(shape_gemm), fold: None, build: Some(build_gemm) },
    OpDef { name: "MatMul", shape: Some(shape_mat_mul), fold: None, build: Some(build_mat_mul) },
];

pub(super) fn shape_gemm(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    let node = cx.node;
    Ok({
        let (a, b) = (cx.input(0)?.clone(), cx.input(1)?.clone());
        if a.len() != 2 || b.len() != 2 {
            return Err(cx.fail(format!("Gemm takes matrices, got {a:?} and {b:?}")));
        }
        let (m, ka) = if node.attr_int("transA", 0) == 1 { (a[1], a[0]) } else { (a[0], a[1]) };
        let (kb, n) = if node.attr_int("transB", 0) == 1 { (b[1], b[0]) } else { (b[0], b[1]) };
        if ka != kb {
            return Err(cx.fail(format!("inner dimensions {ka} and {kb} differ")));
        }
        vec![m, n]
    })
}

pub(super) fn shape_mat_mul(cx: &ShapeCx<'_>) -> Result<Vec<i64>, ShapeError> {
    Ok({
        let (a, b) = (cx.input(0)?.clone(), cx.input(1)?.clone());
        if a.len() < 2 || b.len() < 2 || a[a.len() - 1] != b[b.len() - 2] {
            return Err(cx.fail(format!("{a:?} x {b:?} does not multiply")));
        }
        let mut batch = broadcast_shapes(&a[..a.len() - 2], &b[..b.len() - 2])
            .ok_or_else(|| cx.fail("batch dimensions do not broadcast".into()))?;
        batch.extend([a[a.len() - 2], b[b.len() - 1]]);
        batch
    })
}

pub(super) fn build_gemm(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    {
        if node.attr_int("transA", 0) != 0 {
            return Err(bld.fail(node, "transA=1 is not supported"));
        }
        let c = bld.konst(node, 2)?.map(|c| (c, node.attr_float("beta", 1.0)));
        bld.dense(node, node.attr_int("transB", 0) == 1, node.attr_float("alpha", 1.0), c)
    }
}

pub(super) fn build_mat_mul(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    match bld.entry(node, 1)? {
        Some(Entry::Const(_)) => bld.dense(node, false, 1.0, None),
        _ => {
            let (a, b) = (bld.value(node, 0)?, bld.value(node, 1)?);
            let shape = bld.out_shape(node)?;
            let (sa, sb) = (&bld.g.values[a].shape, &bld.g.values[b].shape);
            if sa.len() != sb.len() || sa[..sa.len() - 2] != sb[..sb.len() - 2] {
                return Err(bld.fail(node, format!("batched MatMul needs equal batch dimensions, got {sa:?} x {sb:?}")));
            }
            // `b` a transpose of the last two axes of a value only this reads: the product
            // reads that value transposed instead (the transpose is then unread).
            let mut kind = LayerKind::MatMul { a, b, b_transposed: false };
            if let Some(l) = bld.fusable(&node.inputs[1], b) {
                if let LayerKind::Transpose { input, perm } = &bld.g.layers[l].kind {
                    let r = perm.len();
                    let swap_last = r >= 2
                        && perm[..r - 2].iter().enumerate().all(|(i, &p)| p == i)
                        && perm[r - 2..] == [r - 1, r - 2];
                    if swap_last && bld.g.values[*input].quant.is_none() && !bld.g.values[*input].int32 {
                        kind = LayerKind::MatMul { a, b: *input, b_transposed: true };
                    }
                }
            }
            bld.add_layer(node, kind, shape);
            Ok(())
        }
    }
}
