//! A language model's KV cache: `ScatterND` writing each step's keys or values into the
//! cache at the token positions, in the form exporters of models for this card write it
//! (the cache `[B, H, C, D]` updated in place at `indices = Concat(batch grid, head grid,
//! Expand(Unsqueeze(position_ids)))`, as Qualcomm's efficient-transformers `CtxScatter`
//! does). The import's pattern pass ([`crate::patterns::kv_cache_updates`]) finds that
//! form and hands the node its positions and grids; the device writes the rows in place
//! with one `Scatter` per tile of heads, checking every position against the cache.

use super::OpDef;
use crate::build::Builder;
use crate::ir::LayerKind;
use crate::onnx::Node;
use crate::CompileError;

/// The operators of this family.
pub(super) static OPS: &[OpDef] =
    &[OpDef { name: "ScatterND", shape: None, fold: None, build: Some(build_scatter_nd) }];

/// The attribute the pattern pass marks a recognised cache update with (1; 2 when
/// other nodes read the old cache too).
pub(crate) const KV_CACHE_MARK: &str = "aicsim_kv_cache_update";

pub(super) fn build_scatter_nd(bld: &mut Builder<'_>, node: &Node) -> Result<(), CompileError> {
    if node.attr_int(KV_CACHE_MARK, 0) == 2 {
        return Err(bld.fail(
            node,
            format!(
                "the cache '{}' is read by other nodes too; an update in place needs it read only here",
                node.inputs[0]
            ),
        ));
    }
    if node.attr_int(KV_CACHE_MARK, 0) != 1 {
        return Err(bld.fail(
            node,
            "ScatterND is taken as a KV-cache update only: data [B, H, C, D], updates [B, H, S, D], \
             indices = Concat(batch grid, head grid, Expand(Unsqueeze(positions [B, S], axes [1, 3]))) on the last axis",
        ));
    }
    // Inputs after the pattern pass: data, positions, updates, batch grid, head grid.
    let data = bld.value_as_stored(node, 0)?;
    let positions = bld.value_as_stored(node, 1)?;
    let updates = bld.value(node, 2)?;
    let ds = bld.g.values[data].shape.clone();
    let us = bld.g.values[updates].shape.clone();
    let ps = bld.g.values[positions].shape.clone();
    if bld.g.values[data].quant.is_some() || bld.g.values[data].int32 || ds.len() != 4 {
        return Err(bld.fail(node, format!("the cache must be a float tensor [B, H, C, D], not {ds:?}")));
    }
    let (b, h, d) = (ds[0], ds[1], ds[3]);
    if us.len() != 4 || us[0] != b || us[1] != h || us[3] != d {
        return Err(bld.fail(node, format!("updates {us:?} do not match the cache {ds:?} as [B, H, S, D]")));
    }
    let s = us[2];
    if !bld.g.values[positions].int32 || ps.first() != Some(&b) || ps.iter().product::<usize>() != b * s {
        return Err(bld.fail(node, format!("the positions must be integers [B, S] = [{b}, {s}], not {ps:?}")));
    }
    // The grids must pick sample b and head h for element [b, h, s].
    for (i, what, pick) in [(3, "batch", 0usize), (4, "head", 1)] {
        let c = bld.konst(node, i)?.ok_or_else(|| bld.fail(node, format!("the {what} grid is missing")))?;
        let c = &bld.g.consts[c];
        let ok = c.shape == [b, h, s, 1]
            && c.to_i64().iter().enumerate().all(|(k, &v)| {
                let idx = [k / (h * s), k / s % h];
                v == idx[pick] as i64
            });
        if !ok {
            return Err(bld.fail(node, format!("the indices' {what} component is not the {what} index of each row")));
        }
    }
    let out = bld.add_layer(node, LayerKind::Scatter { data, positions, updates }, ds);
    bld.g.values[out].storage = bld.g.values[data].storage;
    Ok(())
}
