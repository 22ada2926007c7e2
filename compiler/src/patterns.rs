//! Subgraphs exporters write for one operation, recognised before import so the device
//! runs them as that operation:
//!
//! - **Decomposed layer normalisation** (what `torch.onnx` writes for `nn.LayerNorm`
//!   below opset 17): `d = x - ReduceMean(x)`, `n = d / Sqrt(ReduceMean(d^2) + eps)` over
//!   the last axis becomes one `LayerNormalization` (the device's layernorm); the
//!   `Mul` by gamma and `Add` of beta after it join it as its scale and bias at import.
//! - **GELU in its Erf form** (`x * 0.5 * (1 + erf(x / sqrt 2))` in any of the orders
//!   exporters write it): after import the element-wise chain it fused into is the one
//!   step `Gelu` ([`fuse_gelu`]).
//! - **KV-cache updates**: `ScatterND(cache, Concat(batch grid, head grid,
//!   Expand(Unsqueeze(positions, [1, 3]))), rows)` becomes a `ScatterND` marked as a
//!   cache update that takes the positions themselves ([`kv_cache_updates`]); the
//!   subgraph building the indices from the positions is dropped.

use std::collections::HashMap;

use aicsim_abi::isa::{BinaryKind, UnaryKind};

use crate::ir::{ChainStep, Graph, LayerKind, Operand};
use crate::onnx::{AttributeValue, Graph as OnnxGraph, Node};

/// Scalars the graph states as initializers or `Constant` nodes, by name.
fn scalars(g: &OnnxGraph) -> HashMap<&str, f32> {
    let mut s = HashMap::new();
    for t in &g.initializers {
        if let Ok(v) = t.to_f32(None) {
            if v.len() == 1 {
                s.insert(t.name.as_str(), v[0]);
            }
        }
    }
    for n in g.nodes.iter().filter(|n| n.op_type == "Constant") {
        let v = match n.attributes.first().map(|a| &a.value) {
            Some(AttributeValue::Tensor(t)) => t.to_f32(None).ok().filter(|v| v.len() == 1).map(|v| v[0]),
            Some(AttributeValue::Float(f)) => Some(*f),
            _ => None,
        };
        if let (Some(v), Some(out)) = (v, n.outputs.first()) {
            s.insert(out.as_str(), v);
        }
    }
    s
}

/// Whether a `ReduceMean` node averages only the last axis (of a rank-`rank` input, if
/// known) and keeps it.
fn mean_over_last_axis(n: &Node, axes_const: &HashMap<&str, Vec<i64>>, rank: Option<usize>) -> bool {
    if n.op_type != "ReduceMean" || n.attr_int("keepdims", 1) != 1 {
        return false;
    }
    let axes = n.attr_ints("axes").or_else(|| n.inputs.get(1).and_then(|a| axes_const.get(a.as_str()).cloned()));
    match (axes.as_deref(), rank) {
        (Some([-1]), _) => true,
        (Some([a]), Some(r)) => *a == r as i64 - 1,
        _ => false,
    }
}

/// `nodes` with each decomposed layer normalisation replaced by one
/// `LayerNormalization` node (no scale or bias: they follow as `Mul` / `Add` and join it
/// at import). `ranks` gives the rank of the tensors whose rank is known.
pub(crate) fn fuse_layer_norms(g: &OnnxGraph, ranks: &HashMap<String, usize>) -> Vec<Node> {
    let nodes = &g.nodes;
    let scal = scalars(g);
    let axes_const: HashMap<&str, Vec<i64>> = g
        .initializers
        .iter()
        .filter_map(|t| match &t.data {
            crate::onnx::TensorData::Int64s(v) => Some((t.name.as_str(), v.clone())),
            _ => t.to_f32(None).ok().map(|v| (t.name.as_str(), v.iter().map(|&x| x as i64).collect())),
        })
        .collect();
    let producer: HashMap<&str, usize> =
        nodes.iter().enumerate().flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i))).collect();
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for n in nodes {
        for i in &n.inputs {
            *readers.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &g.outputs {
        *readers.entry(o.name.as_str()).or_default() += 1;
    }
    let made_by = |name: &str, op: &str| producer.get(name).map(|&i| (i, &nodes[i])).filter(|(_, n)| n.op_type == op);
    let only = |name: &str, count: usize| readers.get(name).copied().unwrap_or(0) == count;
    let mut drop = vec![false; nodes.len()];
    let mut replace: HashMap<usize, Node> = HashMap::new();
    for (di, div) in nodes.iter().enumerate().filter(|(_, n)| n.op_type == "Div" && n.inputs.len() == 2) {
        let (d, std) = (&div.inputs[0], &div.inputs[1]);
        // std = Sqrt(Add(ReduceMean(Pow(d, 2)), eps))
        let Some((si, sqrt)) = made_by(std, "Sqrt") else { continue };
        let Some((ai, add)) = made_by(&sqrt.inputs[0], "Add") else { continue };
        let (var, eps) =
            match (scal.get(add.inputs[0].as_str()), scal.get(add.inputs.get(1).map_or("", |s| s.as_str()))) {
                (None, Some(&e)) => (&add.inputs[0], e),
                (Some(&e), None) => (&add.inputs[1], e),
                _ => continue,
            };
        let Some((vi, vmean)) = made_by(var, "ReduceMean") else { continue };
        let Some((pi, pow)) = made_by(&vmean.inputs[0], "Pow") else { continue };
        if pow.inputs.get(1).and_then(|e| scal.get(e.as_str())) != Some(&2.0) || &pow.inputs[0] != d {
            continue;
        }
        // d = Sub(x, ReduceMean(x))
        let Some((subi, sub)) = made_by(d, "Sub") else { continue };
        let x = &sub.inputs[0];
        let Some((mi, mean)) = made_by(&sub.inputs[1], "ReduceMean") else { continue };
        let rank = ranks.get(x.as_str()).copied();
        if &mean.inputs[0] != x
            || !mean_over_last_axis(mean, &axes_const, rank)
            || !mean_over_last_axis(vmean, &axes_const, rank)
        {
            continue;
        }
        // Every intermediate is read only inside the pattern (d by Pow and Div).
        let inner_only = only(d, 2)
            && only(&mean.outputs[0], 1)
            && only(&pow.outputs[0], 1)
            && only(var, 1)
            && only(&add.outputs[0], 1)
            && only(std, 1);
        if !inner_only {
            continue;
        }
        for i in [mi, subi, pi, vi, ai, si] {
            drop[i] = true;
        }
        let fused = Node {
            name: div.name.clone(),
            op_type: "LayerNormalization".into(),
            domain: String::new(),
            inputs: vec![x.clone()],
            outputs: div.outputs.clone(),
            attributes: vec![
                crate::onnx::Attribute { name: "axis".into(), value: AttributeValue::Int(-1) },
                crate::onnx::Attribute { name: "epsilon".into(), value: AttributeValue::Float(eps) },
            ],
        };
        replace.insert(di, fused);
    }
    nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !drop[*i])
        .map(|(i, n)| replace.remove(&i).unwrap_or_else(|| n.clone()))
        .collect()
}

/// `nodes` with every KV-cache update in the exported form rewritten to the marked
/// `ScatterND` of [`crate::ops`] (inputs: cache, positions, rows, batch grid, head grid),
/// and the nodes nothing reads any more dropped.
pub(crate) fn kv_cache_updates(g: &OnnxGraph, mut nodes: Vec<Node>) -> Vec<Node> {
    let int64s = |t: &crate::onnx::Tensor| -> Option<Vec<i64>> {
        match &t.data {
            crate::onnx::TensorData::Int64s(v) => Some(v.clone()),
            crate::onnx::TensorData::Raw(raw) if t.data_type == crate::onnx::data_type::INT64 => {
                Some(raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
            }
            _ => None,
        }
    };
    let ints: HashMap<&str, Vec<i64>> = g
        .initializers
        .iter()
        .filter_map(|t| Some((t.name.as_str(), int64s(t)?)))
        .chain(g.nodes.iter().filter(|n| n.op_type == "Constant").filter_map(|n| {
            match n.attributes.first().map(|a| &a.value) {
                Some(AttributeValue::Tensor(t)) => Some((n.outputs.first()?.as_str(), int64s(t)?)),
                _ => None,
            }
        }))
        .collect();
    let mut changed = false;
    let snapshot = nodes.clone();
    let producer: HashMap<&str, &Node> =
        snapshot.iter().flat_map(|n| n.outputs.iter().map(move |o| (o.as_str(), n))).collect();
    let made_by = |name: &str, op: &str| producer.get(name).copied().filter(|n| n.op_type == op);
    for n in nodes.iter_mut().filter(|n| n.op_type == "ScatterND" && n.inputs.len() == 3) {
        let Some(concat) = made_by(&n.inputs[1], "Concat") else { continue };
        if concat.inputs.len() != 3 || !matches!(concat.attr_int("axis", 0), -1 | 3) {
            continue;
        }
        let Some(expand) = made_by(&concat.inputs[2], "Expand") else { continue };
        let Some(unsqueeze) = made_by(&expand.inputs[0], "Unsqueeze") else { continue };
        let axes = unsqueeze.attr_ints("axes").or_else(|| ints.get(unsqueeze.inputs.get(1)?.as_str()).cloned());
        if axes.as_deref() != Some(&[1, 3]) {
            continue;
        }
        // Updated in place: nothing else may read the old cache (its shape aside).
        let others = snapshot
            .iter()
            .filter(|m| m.op_type != "Shape" && m.outputs != n.outputs && m.inputs.contains(&n.inputs[0]))
            .count();
        let mut fused = n.clone();
        fused.inputs = vec![
            n.inputs[0].clone(),
            unsqueeze.inputs[0].clone(),
            n.inputs[2].clone(),
            concat.inputs[0].clone(),
            concat.inputs[1].clone(),
        ];
        fused.attributes.push(crate::onnx::Attribute {
            name: crate::ops::KV_CACHE_MARK.into(),
            value: AttributeValue::Int(if others == 0 { 1 } else { 2 }),
        });
        *n = fused;
        changed = true;
    }
    if changed {
        drop_unread(g, &mut nodes);
    }
    nodes
}

/// Drops the nodes none of whose outputs any node or graph output reads, until none is
/// left (ONNX nodes have no side effects).
fn drop_unread(g: &OnnxGraph, nodes: &mut Vec<Node>) {
    loop {
        let mut read: std::collections::HashSet<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
        for n in nodes.iter() {
            read.extend(n.inputs.iter().map(String::as_str));
        }
        let dead: Vec<bool> = nodes.iter().map(|n| !n.outputs.iter().any(|o| read.contains(o.as_str()))).collect();
        if !dead.contains(&true) {
            return;
        }
        let mut d = dead.into_iter();
        nodes.retain(|_| !d.next().expect("one flag per node"));
    }
}

/// `x * 0.5 * (1 + erf(x / sqrt 2))` as the element-wise chain it imports to (in the
/// orders exporters write it) becomes the one step `Gelu`.
pub(crate) fn fuse_gelu(g: &mut Graph) {
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
    let inv_sqrt2 = core::f32::consts::FRAC_1_SQRT_2;
    for l in &mut g.layers {
        let LayerKind::Elementwise { first: Operand::Value(x), steps } = &mut l.kind else { continue };
        let x = *x;
        let scaled = |s: &ChainStep| matches!(*s, ChainStep::Unary(UnaryKind::Affine { scale, shift }) if close(scale, inv_sqrt2) && shift == 0.0);
        let plus_one = |s: &ChainStep| matches!(*s, ChainStep::Unary(UnaryKind::Affine { scale, shift }) if scale == 1.0 && close(shift, 1.0));
        let half = |s: &ChainStep| matches!(*s, ChainStep::Unary(UnaryKind::Affine { scale, shift }) if close(scale, 0.5) && shift == 0.0);
        let times_x = |s: &ChainStep| matches!(*s, ChainStep::Binary { kind: BinaryKind::Mul, operand: Operand::Value(v), .. } if v == x);
        let erf = |s: &ChainStep| matches!(s, ChainStep::Unary(UnaryKind::Erf));
        let is_gelu = match steps.as_slice() {
            // erf(x / sqrt2) + 1, times x, times 0.5 (or 0.5 first)
            [a, b, c, d, e] => {
                scaled(a) && erf(b) && plus_one(c) && ((times_x(d) && half(e)) || (half(d) && times_x(e)))
            }
            _ => false,
        };
        if is_gelu {
            *steps = vec![ChainStep::Unary(UnaryKind::Gelu)];
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::onnx::{data_type, Dim, Model, OpsetId, Tensor, TensorData, ValueInfo};

    fn node(op: &str, inputs: &[&str], out: &str, attributes: Vec<crate::onnx::Attribute>) -> Node {
        Node {
            name: out.into(),
            op_type: op.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.into()],
            attributes,
        }
    }

    fn scalar(name: &str, v: f32) -> Tensor {
        Tensor { name: name.into(), dims: vec![], data_type: data_type::FLOAT, data: TensorData::Floats(vec![v]) }
    }

    /// A decomposed layer norm with gamma and beta, then GELU in its Erf form, as
    /// torch.onnx writes them.
    fn model() -> Model {
        let axes = || vec![crate::onnx::Attribute { name: "axes".into(), value: AttributeValue::Ints(vec![-1]) }];
        let vi = |n: &str| ValueInfo {
            name: n.into(),
            elem_type: data_type::FLOAT,
            shape: Some(vec![Dim::Value(2), Dim::Value(8)]),
        };
        let vec8 = |name: &str, v: f32| Tensor {
            name: name.into(),
            dims: vec![8],
            data_type: data_type::FLOAT,
            data: TensorData::Floats(vec![v; 8]),
        };
        Model {
            ir_version: 8,
            opset_imports: vec![OpsetId { domain: String::new(), version: 13 }],
            producer_name: "test".into(),
            graph: OnnxGraph {
                name: "ln_gelu".into(),
                nodes: vec![
                    node("ReduceMean", &["x"], "mean", axes()),
                    node("Sub", &["x", "mean"], "d", vec![]),
                    node("Pow", &["d", "two"], "sq", vec![]),
                    node("ReduceMean", &["sq"], "var", axes()),
                    node("Add", &["var", "eps"], "ve", vec![]),
                    node("Sqrt", &["ve"], "std", vec![]),
                    node("Div", &["d", "std"], "n", vec![]),
                    node("Mul", &["n", "gamma"], "ng", vec![]),
                    node("Add", &["ng", "beta"], "h", vec![]),
                    node("Div", &["h", "sqrt2"], "hs", vec![]),
                    node("Erf", &["hs"], "e", vec![]),
                    node("Add", &["e", "one"], "e1", vec![]),
                    node("Mul", &["h", "e1"], "he", vec![]),
                    node("Mul", &["he", "half"], "y", vec![]),
                ],
                initializers: vec![
                    scalar("two", 2.0),
                    scalar("eps", 1e-12),
                    scalar("sqrt2", std::f32::consts::SQRT_2),
                    scalar("one", 1.0),
                    scalar("half", 0.5),
                    vec8("gamma", 1.5),
                    vec8("beta", 0.25),
                ],
                inputs: vec![vi("x")],
                outputs: vec![vi("y")],
                value_info: vec![],
            },
        }
    }

    #[test]
    fn a_decomposed_layer_norm_and_erf_gelu_import_as_two_layers() {
        let g = crate::build::import(&model(), &HashMap::new(), None).unwrap();
        let kinds: Vec<&LayerKind> = g.layers.iter().map(|l| &l.kind).collect();
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        assert!(
            matches!(kinds[0], LayerKind::LayerNorm { scale: Some(_), bias: Some(_), epsilon, .. } if *epsilon == 1e-12),
            "{kinds:?}"
        );
        assert!(
            matches!(kinds[1], LayerKind::Elementwise { steps, .. } if steps == &[ChainStep::Unary(UnaryKind::Gelu)]),
            "{kinds:?}"
        );
    }

    #[test]
    fn the_last_axis_by_number_fuses_and_a_part_read_elsewhere_does_not() {
        let mut m = model();
        for n in m.graph.nodes.iter_mut().filter(|n| n.op_type == "ReduceMean") {
            n.attributes[0].value = AttributeValue::Ints(vec![1]);
        }
        let g = crate::build::import(&m, &HashMap::new(), None).unwrap();
        assert!(g.layers.iter().any(|l| matches!(l.kind, LayerKind::LayerNorm { .. })));
        // The centred value is also an output: the decomposition stays.
        let mut m = model();
        let d = ValueInfo { name: "d".into(), ..m.graph.outputs[0].clone() };
        m.graph.outputs.push(d);
        let g = crate::build::import(&m, &HashMap::new(), None).unwrap();
        assert!(!g.layers.iter().any(|l| matches!(l.kind, LayerKind::LayerNorm { .. })));
    }
}
