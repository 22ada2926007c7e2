//! Bad models give clear errors, never panics: a missing initializer, a shape mismatch,
//! an unsupported operator, malformed bytes (proptest mutations of a real model), and
//! options that cannot be met.

use aicsim_compiler::onnx::parse_model;
use aicsim_compiler::{compile, zoo, CompileError, CompileOptions};
use proptest::prelude::*;

fn opts() -> CompileOptions {
    CompileOptions::default()
}

#[test]
fn a_missing_initializer_names_the_node_and_the_input() {
    let mut m = zoo::mobilenet_v2();
    let gone = m.graph.initializers.remove(3).name;
    let e = compile(&m, None, "m", &opts()).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, CompileError::Shape(_)), "{e:?}");
    assert!(text.contains(&gone) && text.contains("neither a graph input"), "{text}");
}

#[test]
fn a_shape_mismatch_names_the_node() {
    let mut m = zoo::resnet50();
    // The first convolution's weight claims 4 input channels; the image has 3.
    let w = m.graph.nodes[0].inputs[1].clone();
    let t = m.graph.initializers.iter_mut().find(|t| t.name == w).unwrap();
    t.dims[1] = 4;
    if let aicsim_compiler::onnx::TensorData::Floats(v) = &mut t.data {
        v.extend(std::iter::repeat_n(0.0, 64 * 7 * 7));
    }
    let e = compile(&m, None, "m", &opts()).unwrap_err().to_string();
    assert!(e.contains(&m.graph.nodes[0].name) && e.contains("input channels"), "{e}");
}

/// The weight's own kernel, not only the attribute, must be a real window (a proptest
/// mutation once made a weight's kernel 0 x 7 under `kernel_shape` [7, 7] and the
/// lowering overflowed).
#[test]
fn a_kernel_shape_that_disagrees_with_the_weight_names_the_node() {
    let mut m = zoo::resnet50();
    let node = &mut m.graph.nodes[0];
    let kernel = node.attributes.iter_mut().find(|a| a.name == "kernel_shape").expect("the zoo conv names its kernel");
    kernel.value = aicsim_compiler::onnx::AttributeValue::Ints(vec![5, 5]);
    let name = node.name.clone();
    let e = compile(&m, None, "m", &opts()).unwrap_err().to_string();
    assert!(e.contains(&name) && e.contains("does not match weight"), "{e}");
}

#[test]
fn an_unsupported_operator_names_type_node_and_opset() {
    let mut m = zoo::mobilenet_v2();
    m.graph.nodes[5].op_type = "NonMaxSuppression".into();
    let node = m.graph.nodes[5].name.clone();
    let e = compile(&m, None, "m", &opts()).unwrap_err();
    assert_eq!(e, CompileError::Unsupported { op_type: "NonMaxSuppression".into(), node: node.clone(), opset: 13 });
    assert_eq!(e.to_string(), format!("unsupported operator NonMaxSuppression (node '{node}', opset 13)"));
}

#[test]
fn options_that_cannot_be_met_are_errors() {
    let m = zoo::mobilenet_v2();
    let e = compile(&m, None, "m", &CompileOptions { cores: 0, ..opts() }).unwrap_err().to_string();
    assert!(e.contains("-aic-num-cores"), "{e}");
    let e = compile(&m, None, "m", &CompileOptions { vtcm_bytes: 4096, ..opts() }).unwrap_err().to_string();
    assert!(e.contains("VTCM"), "{e}");
    let mut b = zoo::bert(1, 64, 2, 8, 128);
    b.graph.inputs[0].shape.as_mut().unwrap()[0] = aicsim_compiler::onnx::Dim::Param("batch".into());
    let e = compile(&b, None, "b", &opts()).unwrap_err().to_string();
    assert!(e.contains("-onnx-define-symbol=batch,N"), "{e}");
}

/// The bytes of a real model from the onnx package, when the environment has it.
fn real_model() -> Option<Vec<u8>> {
    let dir = std::env::var("AICSIM_ONNX_MODELS").ok()?;
    std::fs::read(std::path::Path::new(&dir).join("light_squeezenet.onnx")).ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn mutated_model_bytes_compile_or_fail_cleanly(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate: bool,
    ) {
        let Some(mut bytes) = real_model() else { return Ok(()) };
        for (at, v) in edits {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        // Either outcome is fine; a panic fails the test.
        if let Ok(model) = parse_model(&bytes) {
            let _ = compile(&model, None, "mutated", &CompileOptions::default());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Structure-aware mutations that survive parsing: shape tensors, integer
    /// attributes, operator types and dropped nodes of a real model.
    #[test]
    fn mutated_models_compile_or_fail_cleanly(
        which in 0usize..4,
        at in any::<prop::sample::Index>(),
        pick in any::<prop::sample::Index>(),
        value in prop_oneof![-3i64..8, 0i64..5000, Just(i64::MAX), Just(i64::MIN)],
    ) {
        let Some(bytes) = real_model() else { return Ok(()) };
        let mut model = parse_model(&bytes).unwrap();
        let g = &mut model.graph;
        match which {
            0 => {
                let i = at.index(g.initializers.len());
                let t = &mut g.initializers[i];
                if let aicsim_compiler::onnx::TensorData::Raw(raw) = &mut t.data {
                    if raw.len() >= 8 {
                        let i = pick.index(raw.len() / 8) * 8;
                        raw[i..i + 8].copy_from_slice(&value.to_le_bytes());
                    }
                } else if let aicsim_compiler::onnx::TensorData::Int64s(v) = &mut t.data {
                    if !v.is_empty() {
                        let i = pick.index(v.len());
                        v[i] = value;
                    }
                }
            }
            1 => {
                let i = at.index(g.nodes.len());
                let n = &mut g.nodes[i];
                if !n.attributes.is_empty() {
                    let a = pick.index(n.attributes.len());
                    n.attributes[a].value = match &n.attributes[a].value {
                        aicsim_compiler::onnx::AttributeValue::Ints(v) => {
                            aicsim_compiler::onnx::AttributeValue::Ints(vec![value; v.len().max(1)])
                        }
                        _ => aicsim_compiler::onnx::AttributeValue::Int(value),
                    };
                }
            }
            2 => {
                let ops = ["Relu", "Conv", "MaxPool", "Concat", "Softmax", "Gemm", "Reshape", "Transpose"];
                let i = at.index(g.nodes.len());
                g.nodes[i].op_type = ops[pick.index(ops.len())].into();
            }
            _ => {
                g.nodes.remove(at.index(g.nodes.len()));
            }
        }
        let _ = compile(&model, None, "mutated", &CompileOptions::default());
    }
}

/// The instruction set's tensor sizes are 32-bit: a tensor of more elements is a clear
/// error, not dimensions and strides silently cut to 32 bits.
#[test]
fn a_tensor_beyond_32_bit_sizes_is_an_error_naming_it() {
    let mut m = zoo::mobilenet_v2();
    let input = &mut m.graph.inputs[0];
    let name = input.name.clone();
    let dims = input.shape.as_mut().unwrap();
    dims[2] = aicsim_compiler::onnx::Dim::Value(40_000);
    dims[3] = aicsim_compiler::onnx::Dim::Value(40_000);
    let e = compile(&m, None, "m", &opts()).unwrap_err().to_string();
    assert!(e.contains(&format!("tensor '{name}' has 4800000000 elements")) && e.contains("32-bit"), "{e}");
}

/// ONNX allows a dimension of 0; the compiler refuses the empty tensor by name instead
/// of tiling it (the fuzzer's first find: a zero-row MatMul divided by zero).
#[test]
fn an_empty_tensor_is_refused_by_name() {
    let mut m = zoo::bert(1, 64, 2, 8, 128);
    let input = &mut m.graph.inputs[0];
    let dims = input.shape.as_mut().expect("the zoo's input has a shape");
    dims[1] = aicsim_compiler::onnx::Dim::Value(0);
    let name = input.name.clone();
    let e = compile(&m, None, "m", &opts()).unwrap_err().to_string();
    assert!(e.contains(&format!("'{name}'")) && e.contains("empty tensor"), "{e}");
}

/// A graph without outputs would make a program the device refuses to load (the
/// fuzzer's second find); the compiler says so itself.
#[test]
fn a_model_without_outputs_is_refused() {
    let mut m = zoo::mobilenet_v2();
    m.graph.outputs.clear();
    let e = compile(&m, None, "m", &opts()).unwrap_err().to_string();
    assert!(e.contains("no graph output"), "{e}");
}

/// Every operator the compiler does not take is named at once, not only the first.
#[test]
fn every_unsupported_operator_is_named_at_once() {
    let mut m = zoo::mobilenet_v2();
    m.graph.nodes[5].op_type = "NonMaxSuppression".into();
    m.graph.nodes[9].op_type = "RoiAlign".into();
    m.graph.nodes[12].domain = "com.microsoft".into();
    let names: Vec<String> = [5, 9, 12].iter().map(|&i| m.graph.nodes[i].name.clone()).collect();
    let e = compile(&m, None, "m", &opts()).unwrap_err();
    let text = e.to_string();
    assert!(matches!(&e, CompileError::UnsupportedMany { nodes, .. } if nodes.len() == 3), "{e:?}");
    assert!(text.starts_with("3 unsupported operators (opset 13): NonMaxSuppression (node "), "{text}");
    for name in &names {
        assert!(text.contains(&format!("(node '{name}')")), "{name} missing: {text}");
    }
}

/// A defined symbol that no input has is a warning that names it and the model's own.
#[test]
fn a_symbol_the_model_does_not_have_is_a_warning() {
    let m = zoo::mobilenet_v2();
    let mut o = opts();
    o.symbols.insert("seq_len".into(), 128);
    let c = compile(&m, None, "m", &o).unwrap();
    assert!(
        c.warnings.iter().any(|w| w.starts_with(
            "-onnx-define-symbol=seq_len,128: the model has no symbolic dimension 'seq_len' (its symbols: none)"
        )),
        "{:?}",
        c.warnings
    );
    assert!(compile(&m, None, "m", &opts()).unwrap().warnings.iter().all(|w| !w.contains("symbol")));
}

/// A QDQ model whose quantisation parameters are wrong: a zero, negative or subnormal
/// scale (the fuzzer's find: a QLinearConv output scale of 3e-45 made the device's
/// requantising scale infinite), a zero point outside its type, a dequantisation with other parameters than the
/// quantisation it reads. Each is an error naming the node and the tensor.
#[test]
fn bad_quantisation_parameters_name_the_node_and_the_tensor() {
    use aicsim_compiler::onnx::TensorData;
    let m = zoo::qdq_cnn();
    assert!(compile(&m, None, "q", &opts()).is_ok());
    let first_q = m.graph.nodes.iter().find(|n| n.op_type == "QuantizeLinear").unwrap().clone();
    let set = |m: &mut aicsim_compiler::onnx::Model, name: &str, data: TensorData| {
        m.graph.initializers.iter_mut().find(|t| t.name == name).unwrap().data = data;
    };
    for bad in [0.0f32, -0.5, f32::NAN, 3e-45, f32::INFINITY] {
        let mut m = m.clone();
        set(&mut m, &first_q.inputs[1], TensorData::Floats(vec![bad]));
        let e = compile(&m, None, "q", &opts()).unwrap_err().to_string();
        assert!(e.contains(&first_q.name) && e.contains(&first_q.inputs[1]) && e.contains("positive"), "{e}");
    }
    let mut bad_zp = m.clone();
    set(&mut bad_zp, &first_q.inputs[2], TensorData::Int32s(vec![300]));
    let e = compile(&bad_zp, None, "q", &opts()).unwrap_err().to_string();
    assert!(e.contains(&first_q.name) && e.contains(&first_q.inputs[2]) && e.contains("300"), "{e}");
    // The dequantisation right after reads the value with another scale.
    let mut mismatch = m.clone();
    let dq = mismatch
        .graph
        .nodes
        .iter_mut()
        .find(|n| n.op_type == "DequantizeLinear" && n.inputs[0] == first_q.outputs[0])
        .unwrap();
    let name = dq.name.clone();
    dq.inputs[1] = "other_scale".into();
    mismatch.graph.initializers.push(aicsim_compiler::onnx::Tensor {
        name: "other_scale".into(),
        dims: vec![],
        data_type: aicsim_compiler::onnx::data_type::FLOAT,
        data: TensorData::Floats(vec![0.5]),
    });
    let e = compile(&mismatch, None, "q", &opts()).unwrap_err().to_string();
    assert!(e.contains(&name) && e.contains("quantised with scale"), "{e}");
}

/// Opset 21's quantisation attributes and 16-bit types: blocked quantisation
/// (`block_size`) is refused by node, an `output_dtype` other than the zero point's type
/// is an error, a 16-bit zero point outside its type names the tensor, and int16 zero
/// points compile to int16 activations.
#[test]
fn opset_21_quantisation_attributes_and_16_bit_types_are_checked() {
    use aicsim_compiler::onnx::{data_type, Attribute, AttributeValue, TensorData};
    let mut m = zoo::qdq_cnn();
    m.opset_imports[0].version = 21;
    assert!(compile(&m, None, "q", &opts()).is_ok(), "opset 21 is read");
    let first_q = m.graph.nodes.iter().position(|n| n.op_type == "QuantizeLinear").unwrap();
    let q = m.graph.nodes[first_q].clone();
    let attr = |name: &str, v: i64| Attribute { name: name.into(), value: AttributeValue::Int(v) };
    let mut blocked = m.clone();
    blocked.graph.nodes[first_q].attributes.push(attr("block_size", 32));
    let e = compile(&blocked, None, "q", &opts()).unwrap_err().to_string();
    assert!(e.contains(&q.name) && e.contains("block_size"), "{e}");
    let mut other = m.clone();
    other.graph.nodes[first_q].attributes.push(attr("output_dtype", i64::from(data_type::INT16)));
    let e = compile(&other, None, "q", &opts()).unwrap_err().to_string();
    assert!(e.contains(&q.name) && e.contains("output_dtype"), "{e}");
    // Every activation zero point (uint8 in this model) made uint16, scales 256 times
    // finer: a uint16 model, whose convolutions take int16 inputs.
    let mut wide = m.clone();
    let zps: Vec<String> = wide
        .graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "QuantizeLinear")
        .flat_map(|n| [n.inputs[1].clone(), n.inputs[2].clone()])
        .collect();
    for t in wide.graph.initializers.iter_mut().filter(|t| zps.contains(&t.name)) {
        match (t.data_type, &t.data) {
            (data_type::UINT8, TensorData::Int32s(v)) => {
                t.data = TensorData::Int32s(v.iter().map(|z| z * 256).collect());
                t.data_type = data_type::UINT16;
            }
            (data_type::FLOAT, TensorData::Floats(v)) => {
                t.data = TensorData::Floats(v.iter().map(|s| s / 256.0).collect())
            }
            _ => {}
        }
    }
    let c = compile(&wide, None, "q", &opts()).unwrap();
    let int16_convs = c.image.cores.iter().flatten().filter_map(|i| i.decode().ok()).filter(
        |op| matches!(op, aicsim_abi::isa::Op::Conv2d { input, .. } if input.dtype == aicsim_abi::isa::DType::I16),
    );
    assert!(int16_convs.count() > 0, "{:?}", c.warnings);
    let mut past = wide.clone();
    past.graph.initializers.iter_mut().find(|t| t.name == q.inputs[2]).unwrap().data = TensorData::Int32s(vec![70_000]);
    let e = compile(&past, None, "q", &opts()).unwrap_err().to_string();
    assert!(e.contains(&q.name) && e.contains(&q.inputs[2]) && e.contains("70000"), "{e}");
}

/// Found by the fuzzer: a quantisation node without inputs, and per-axis scales that do
/// not match their axis, are errors naming the node (they once indexed out of bounds).
#[test]
fn malformed_quantisation_nodes_are_errors_not_panics() {
    use aicsim_compiler::onnx::TensorData;
    let m = zoo::qdq_cnn();
    let mut bare = m.clone();
    let dq = bare.graph.nodes.iter_mut().find(|n| n.op_type == "DequantizeLinear").unwrap();
    let name = dq.name.clone();
    dq.inputs.clear();
    let e = compile(&bare, None, "q", &opts()).unwrap_err().to_string();
    assert!(e.contains(&name), "{e}");
    // The weights' per-channel scales, one short.
    let mut short = m.clone();
    let wdq = short
        .graph
        .nodes
        .iter()
        .find(|n| n.op_type == "DequantizeLinear" && n.inputs[0].starts_with("w_int8"))
        .unwrap()
        .clone();
    let scale = short.graph.initializers.iter_mut().find(|t| t.name == wdq.inputs[1]).unwrap();
    scale.dims = vec![3];
    scale.data = TensorData::Floats(vec![0.01; 3]);
    let zp = short.graph.initializers.iter_mut().find(|t| t.name == wdq.inputs[2]).unwrap();
    zp.dims = vec![3];
    zp.data = TensorData::Int32s(vec![0; 3]);
    let e = compile(&short, None, "q", &opts()).unwrap_err().to_string();
    assert!(e.contains(&wdq.name) && e.contains("per-axis scales"), "{e}");
}

/// A comparison with one input (the onnx fuzzer's find: swapping its operands panicked)
/// and a ScatterND that is not a KV-cache update are errors naming the node.
#[test]
fn malformed_comparisons_and_scatters_are_errors_not_panics() {
    let mut m = zoo::resnet50();
    let relu = m.graph.nodes.iter().position(|n| n.op_type == "Relu").expect("a Relu");
    for op in ["Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Equal"] {
        let mut bad = m.clone();
        bad.graph.nodes[relu].op_type = op.into();
        let name = bad.graph.nodes[relu].name.clone();
        let e = compile(&bad, None, "m", &opts()).unwrap_err().to_string();
        assert!(e.contains(&name) && e.contains("a comparison takes two inputs, not 1"), "{op}: {e}");
    }
    let node = &mut m.graph.nodes[relu];
    node.op_type = "ScatterND".into();
    node.inputs.push(node.inputs[0].clone());
    node.inputs.push(node.inputs[0].clone());
    let name = node.name.clone();
    let e = compile(&m, None, "m", &opts()).unwrap_err().to_string();
    assert!(e.contains(&name) && e.contains("ScatterND is taken as a KV-cache update only"), "{e}");
}
