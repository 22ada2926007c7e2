//! The float model rewritten into QDQ form from a calibration profile.

use std::collections::{HashMap, HashSet};

use super::{threshold, Precision, Profile, QuantOptions, Schema};
use crate::ir::Const;
use crate::onnx::{data_type, Attribute, AttributeValue, Model, Node, Tensor, TensorData};
use crate::CompileError;

/// What [`quantize_model`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantReport {
    /// Convolutions now on int8.
    pub quantised: Vec<String>,
    /// Convolutions left in float, each with why.
    pub kept: Vec<(String, String)>,
    /// Activation tensors quantised (name, scale, zero point, unsigned: uint8 or
    /// uint16).
    pub tensors: Vec<(String, f32, i64, bool)>,
}

/// A tensor's quantisation: scale, zero point and whether it is unsigned (uint8, or
/// uint16 at 16 bits).
#[derive(Clone, Copy, Debug)]
struct Params {
    scale: f32,
    zero_point: i64,
    unsigned: bool,
}

fn activation_params(profile: &Profile, name: &str, opts: &QuantOptions) -> Option<Params> {
    let s = profile.tensors.get(name)?;
    let unsigned = opts.activations == Schema::SymmetricWithUint8 && s.min >= 0.0;
    let levels = opts.precision.levels(unsigned);
    let t = threshold(s, levels, opts);
    let mut scale = if t > 0.0 { t / levels as f32 } else { 1.0 };
    if opts.activations == Schema::SymmetricWithPower2Scale {
        scale = power2(scale);
    }
    // Unsigned [0, t] as the importer keeps it: zero point 0 of uint8 (uint16).
    Some(Params { scale, zero_point: 0, unsigned })
}

/// A layer to rewrite: its node, its weight's output-channel axis, the weight's integers
/// and per-channel scales, and its bias as [`quantise_bias`] gives it.
struct Layer {
    node: usize,
    axis: usize,
    ints: Vec<i64>,
    scales: Vec<f32>,
    bias: Option<QuantBias>,
}

/// A bias's per-channel scales, its ONNX integer type and its integers.
struct QuantBias {
    scales: Vec<f32>,
    int_type: i32,
    ints: Vec<i64>,
}

/// The bias `values` of a layer with weight scales `scales` reading an input of scale
/// `input_scale`: int32 in units of the sums (`input scale x weight scale`, the
/// multiplier an f32 product as the importer computes it), or with `int8` one
/// symmetric int8 scale of its own.
fn quantise_bias(values: &[f32], scales: &[f32], input_scale: f32, int8: bool) -> QuantBias {
    let (scales, int_type): (Vec<f32>, i32) = if int8 {
        let top = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        (vec![if top > 0.0 { top / 127.0 } else { 1.0 }; scales.len()], data_type::INT8)
    } else {
        (scales.iter().map(|s| s * input_scale).collect(), data_type::INT32)
    };
    let ints = values
        .iter()
        .zip(&scales)
        .map(|(&v, &s)| (f64::from(v) / f64::from(s)).round_ties_even() as i64)
        .map(|q| if int8 { q.clamp(-127, 127) } else { q })
        .collect();
    QuantBias { scales, int_type, ints }
}

fn power2(scale: f32) -> f32 {
    2f32.powi(scale.log2().ceil() as i32)
}

/// Per-output-channel symmetric int8 weights (the channel is axis `axis` of `shape`):
/// the integers and each channel's scale.
fn quantise_weights(w: &[f32], shape: &[usize], axis: usize, schema: Schema) -> (Vec<i64>, Vec<f32>) {
    let channels = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let channel = |i: usize| (i / inner) % channels;
    let mut top = vec![0f32; channels];
    for (i, v) in w.iter().enumerate() {
        top[channel(i)] = top[channel(i)].max(v.abs());
    }
    let scales: Vec<f32> = top
        .iter()
        .map(|&t| {
            let s = if t > 0.0 { t / 127.0 } else { 1.0 };
            if schema == Schema::SymmetricWithPower2Scale {
                power2(s)
            } else {
                s
            }
        })
        .collect();
    let ints = w.iter().enumerate().map(|(i, &v)| ((v / scales[channel(i)]).round_ties_even() as i64).clamp(-127, 127));
    (ints.collect(), scales)
}

/// The axis of a weight that runs over output channels, for the layers quantised: a
/// convolution's `[Co, ...]`, a `Gemm`'s `B` (`[N, K]` with `transB`), a `MatMul`'s
/// `[K, N]`; `None` for other nodes or forms (transposed input, scaled product, a weight
/// of another rank).
fn output_axis(n: &Node, w: &Const) -> Option<usize> {
    match (n.op_type.as_str(), w.shape.len()) {
        ("Conv", 4) => Some(0),
        ("Gemm", 2)
            if n.attr_int("transA", 0) == 0
                && n.attr_float("alpha", 1.0) == 1.0
                && n.attr_float("beta", 1.0) == 1.0 =>
        {
            Some(if n.attr_int("transB", 0) == 1 { 0 } else { 1 })
        }
        ("MatMul", 2) => Some(1),
        _ => None,
    }
}

struct Rewriter {
    inits: Vec<Tensor>,
    count: usize,
}

impl Rewriter {
    fn name(&mut self, base: &str, what: &str) -> String {
        self.count += 1;
        format!("{base}_{what}_aicsim{}", self.count)
    }

    fn init(&mut self, name: &str, dims: Vec<i64>, data_type: i32, data: TensorData) -> String {
        self.inits.push(Tensor { name: name.into(), dims, data_type, data });
        name.into()
    }

    fn node(op: &str, name: String, inputs: Vec<String>, output: &str, attributes: Vec<Attribute>) -> Node {
        Node { name, op_type: op.into(), domain: String::new(), inputs, outputs: vec![output.into()], attributes }
    }
}

/// Folds each batch normalisation that alone reads a convolution's output into the
/// convolution's weights and bias (new initializers), so the quantised weights are the
/// ones that run.
fn fold_batch_norms(model: &mut Model, consts: &mut HashMap<String, Const>) {
    let g = &mut model.graph;
    let mut readers: HashMap<String, usize> = HashMap::new();
    for n in &g.nodes {
        for i in &n.inputs {
            *readers.entry(i.clone()).or_default() += 1;
        }
    }
    let outputs: HashSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
    let producer: HashMap<String, usize> =
        g.nodes.iter().enumerate().flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.clone(), i))).collect();
    let mut gone = HashSet::new();
    for b in 0..g.nodes.len() {
        let bn = &g.nodes[b];
        if bn.op_type != "BatchNormalization" || bn.inputs.len() < 5 {
            continue;
        }
        let x = &bn.inputs[0];
        let Some(&c) = producer.get(x) else { continue };
        let conv = &g.nodes[c];
        if conv.op_type != "Conv" || readers.get(x) != Some(&1) || outputs.contains(x) {
            continue;
        }
        let get = |name: Option<&String>| name.and_then(|n| consts.get(n)).map(Const::to_f32);
        let (Some(w), Some(params)) =
            (consts.get(&conv.inputs[1]), (1..5).map(|i| get(bn.inputs.get(i))).collect::<Option<Vec<_>>>())
        else {
            continue;
        };
        let co = w.shape[0];
        if params.iter().any(|p| p.len() != co) {
            continue;
        }
        let eps = bn.attr_float("epsilon", 1e-5);
        let scale: Vec<f32> = (0..co).map(|k| params[0][k] / (params[3][k] + eps).sqrt()).collect();
        let per = w.len() / co;
        let wv: Vec<f32> = w.to_f32().iter().enumerate().map(|(i, v)| v * scale[i / per]).collect();
        let b0 = get(conv.inputs.get(2).filter(|s| !s.is_empty())).unwrap_or(vec![0.0; co]);
        let bv: Vec<f32> = (0..co).map(|k| b0[k] * scale[k] + params[1][k] - params[2][k] * scale[k]).collect();
        let (wn, bname) = (format!("{}_bn_folded_weight", conv.name), format!("{}_bn_folded_bias", conv.name));
        let wshape = w.shape.clone();
        for (name, shape, values) in [(&wn, wshape, wv), (&bname, vec![co], bv)] {
            let dims = shape.iter().map(|&d| d as i64).collect();
            g.initializers.push(Tensor {
                name: name.clone(),
                dims,
                data_type: data_type::FLOAT,
                data: TensorData::Floats(values.clone()),
            });
            consts.insert(name.clone(), Const::f32(shape, values));
        }
        let y = bn.outputs[0].clone();
        let conv = &mut g.nodes[c];
        conv.inputs.truncate(1);
        conv.inputs.extend([wn, bname]);
        conv.outputs[0] = y;
        gone.insert(b);
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !gone.contains(&(i - 1))
    });
}

/// `model` with its convolutions on int8: each convolution whose weight is known at
/// compile time and whose input the profile covers reads its input through a
/// QuantizeLinear / DequantizeLinear pair and its weights and bias as dequantised int8
/// and int32; its output (after a ReLU that alone reads it) is quantised likewise. A
/// batch normalisation after a convolution is folded into it first. Convolutions of the
/// `float_ops` types or `float_nodes` names stay in float.
pub fn quantize_model(
    model: &Model,
    model_dir: Option<&std::path::Path>,
    symbols: &HashMap<String, i64>,
    profile: &Profile,
    opts: &QuantOptions,
) -> Result<(Model, QuantReport), CompileError> {
    let (_, mut consts) = crate::build::import_with_constants(model, symbols, model_dir)?;
    let mut model = model.clone();
    fold_batch_norms(&mut model, &mut consts);
    let model = &model;
    let g = &model.graph;
    if let Some(n) = opts.float_nodes.iter().find(|n| !g.nodes.iter().any(|node| &node.name == *n)) {
        return Err(CompileError::Model(format!(
            "-node-precision-info names node '{n}', which the model does not have"
        )));
    }
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for inp in &n.inputs {
            readers.entry(inp.as_str()).or_default().push(i);
        }
    }
    let outputs: HashSet<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
    let mut report = QuantReport::default();
    let mut rw = Rewriter { inits: Vec::new(), count: 0 };
    // Tensors to quantise, with their parameters; layers to rewrite, with their input's
    // parameters and their weight's output axis.
    let mut quantised: HashMap<String, Params> = HashMap::new();
    let mut convs: Vec<Layer> = Vec::new();
    let layer_types = ["Conv", "Gemm", "MatMul"];
    for (i, n) in g.nodes.iter().enumerate().filter(|(_, n)| layer_types.contains(&n.op_type.as_str())) {
        let keep = |why: &str| (n.name.clone(), why.to_string());
        if opts.float_ops.contains(&n.op_type) || opts.float_nodes.contains(&n.name) {
            report.kept.push(keep("kept in float as asked"));
            continue;
        }
        let Some(w) = n.inputs.get(1).and_then(|w| consts.get(w)) else {
            report.kept.push(keep("its weight is not known at compile time"));
            continue;
        };
        let Some(axis) = output_axis(n, w) else {
            report.kept.push(keep("not in a form the int8 engines take (weight rank, transA, alpha or beta)"));
            continue;
        };
        let co = w.shape[axis];
        let bias = n.inputs.get(2).filter(|b| !b.is_empty());
        if let Some(b) = bias {
            if consts.get(b).is_none_or(|c| c.len() != co) {
                report.kept.push(keep("its bias is not a constant with one value per output channel"));
                continue;
            }
        }
        let Some(px) = activation_params(profile, &n.inputs[0], opts) else {
            report.kept.push(keep("the profile has no range for its input"));
            continue;
        };
        let (ints, scales) = quantise_weights(&w.to_f32(), &w.shape, axis, opts.constants);
        let bias = bias.map(|b| quantise_bias(&consts[b].to_f32(), &scales, px.scale, opts.bias_int8));
        // An int32 bias is in units of the sums (input scale x weight scale): with a fine
        // input scale (16-bit activations) a large bias may not fit, and the layer stays
        // in float rather than have its bias saturate.
        if bias.as_ref().is_some_and(|b| b.ints.iter().any(|q| i32::try_from(*q).is_err())) {
            report.kept.push(keep("its bias in units of the sums (input scale x weight scale) exceeds int32"));
            continue;
        }
        // The output to quantise: a ReLU's, when a ReLU alone reads the convolution.
        let y = &n.outputs[0];
        let relu = match readers.get(y.as_str()).map(Vec::as_slice) {
            Some([r]) if g.nodes[*r].op_type == "Relu" && !outputs.contains(y.as_str()) => {
                Some(&g.nodes[*r].outputs[0])
            }
            _ => None,
        };
        let out = relu.unwrap_or(y);
        if let Some(py) = activation_params(profile, out, opts) {
            quantised.insert(out.clone(), py);
        }
        quantised.insert(n.inputs[0].clone(), px);
        convs.push(Layer { node: i, axis, ints, scales, bias });
        report.quantised.push(n.name.clone());
    }
    // Each quantised tensor gets one Q/DQ pair after its producer; its readers read the
    // DQ output instead.
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut after: HashMap<Option<usize>, Vec<Node>> = HashMap::new();
    let producer: HashMap<&str, usize> =
        g.nodes.iter().enumerate().flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i))).collect();
    let mut names: Vec<&String> = quantised.keys().collect();
    names.sort();
    for t in names {
        let p = quantised[t];
        let scale = rw.name(t, "scale");
        rw.init(&scale, vec![], data_type::FLOAT, TensorData::Floats(vec![p.scale]));
        let zp = rw.name(t, "zero_point");
        let zp_type = match (opts.precision, p.unsigned) {
            (Precision::Int8, false) => data_type::INT8,
            (Precision::Int8, true) => data_type::UINT8,
            (Precision::Int16, false) => data_type::INT16,
            (Precision::Int16, true) => data_type::UINT16,
        };
        rw.init(&zp, vec![], zp_type, TensorData::Int32s(vec![p.zero_point]));
        let (q, dq) = (rw.name(t, "quantized"), rw.name(t, "dequantized"));
        let nodes = vec![
            Rewriter::node("QuantizeLinear", q.clone(), vec![t.clone(), scale.clone(), zp.clone()], &q, vec![]),
            Rewriter::node("DequantizeLinear", dq.clone(), vec![q, scale, zp], &dq, vec![]),
        ];
        after.entry(producer.get(t.as_str()).copied()).or_default().extend(nodes);
        renamed.insert(t.clone(), dq);
        report.tensors.push((t.clone(), p.scale, p.zero_point, p.unsigned));
    }
    // Weights and biases of the rewritten convolutions.
    let mut conv_inputs: HashMap<usize, Vec<String>> = HashMap::new();
    for Layer { node: i, axis: w_axis, ints, scales, bias } in convs {
        let n = &g.nodes[i];
        let wname = &n.inputs[1];
        let w = &consts[wname];
        let co = w.shape[w_axis];
        let wq = rw.name(wname, "int8");
        rw.init(&wq, w.shape.iter().map(|&d| d as i64).collect(), data_type::INT8, TensorData::Int32s(ints));
        let ws = rw.name(wname, "scale");
        rw.init(&ws, vec![co as i64], data_type::FLOAT, TensorData::Floats(scales));
        let wz = rw.name(wname, "zero_point");
        rw.init(&wz, vec![co as i64], data_type::INT8, TensorData::Int32s(vec![0; co]));
        let wd = rw.name(wname, "dequantized");
        let axis = |a: usize| vec![Attribute { name: "axis".into(), value: AttributeValue::Int(a as i64) }];
        let mut nodes = vec![Rewriter::node("DequantizeLinear", wd.clone(), vec![wq, ws, wz], &wd, axis(w_axis))];
        let mut inputs = vec![renamed[&n.inputs[0]].clone(), wd];
        // The bias was checked and quantised with the layer (a constant, one per channel).
        if let (Some(b), Some(qb)) = (n.inputs.get(2).filter(|b| !b.is_empty()), bias) {
            let bq = rw.name(b, "int");
            rw.init(&bq, vec![co as i64], qb.int_type, TensorData::Int32s(qb.ints));
            let bs = rw.name(b, "scale");
            rw.init(&bs, vec![co as i64], data_type::FLOAT, TensorData::Floats(qb.scales));
            let bz = rw.name(b, "zero_point");
            rw.init(&bz, vec![co as i64], qb.int_type, TensorData::Int32s(vec![0; co]));
            let bd = rw.name(b, "dequantized");
            nodes.push(Rewriter::node("DequantizeLinear", bd.clone(), vec![bq, bs, bz], &bd, axis(0)));
            inputs.push(bd);
        }
        after.entry(Some(i)).or_default();
        // The weight nodes go just before the convolution (their inputs are initializers).
        conv_inputs.insert(i, inputs);
        after.entry(None).or_default().extend(nodes);
    }
    let mut out = model.clone();
    let mut nodes = after.remove(&None).unwrap_or_default();
    for (i, n) in g.nodes.iter().enumerate() {
        let mut n = n.clone();
        match conv_inputs.remove(&i) {
            Some(inputs) => {
                n.inputs.splice(..inputs.len().min(n.inputs.len()), inputs);
            }
            None => {
                for inp in &mut n.inputs {
                    if let Some(r) = renamed.get(inp) {
                        *inp = r.clone();
                    }
                }
            }
        }
        nodes.push(n);
        nodes.extend(after.remove(&Some(i)).unwrap_or_default());
    }
    out.graph.nodes = nodes;
    out.graph.initializers.extend(rw.inits);
    Ok((out, report))
}
