//! Post-training quantisation: calibration on the simulated device, thresholds by each
//! method, the QDQ rewrite, and the int8 program's outputs against the float program's
//! on held-back inputs.

use std::collections::HashMap;

use aicsim_abi::isa::{DType, Op};
use aicsim_compiler::quantize::{calibrate, quantize_model, run_functional, Calibration, Profile, QuantOptions};
use aicsim_compiler::{compile, zoo, CompileOptions, Compiled};

/// Seeded inputs in [-1, 1) (splitmix64).
fn samples(seed: u64, n: usize, len: usize) -> Vec<Vec<Vec<f32>>> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    (0..n).map(|_| vec![(0..len).map(|_| next()).collect()]).collect()
}

fn int8_convs(c: &Compiled) -> usize {
    c.image
        .cores
        .iter()
        .flatten()
        .filter_map(|i| i.decode().ok())
        .filter(|op| matches!(op, Op::Conv2d { weight, .. } if weight.dtype == DType::I8))
        .count()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
    let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn profile() -> Profile {
    let model = zoo::small_cnn();
    calibrate(&model, None, &HashMap::new(), &samples(1, 16, 3 * 16 * 16), 512).unwrap()
}

#[test]
fn int8_programs_track_the_float_program_on_held_back_inputs_for_every_calibration() {
    let model = zoo::small_cnn();
    let profile = profile();
    assert_eq!(profile.samples, 16);
    assert!(profile.tensors.values().all(|t| t.histogram.iter().sum::<u64>() > 0));
    let float = compile(&model, None, "f", &CompileOptions::default()).unwrap();
    let held_back = samples(99, 4, 3 * 16 * 16);
    let want = run_functional(&float, &held_back).unwrap();
    for calibration in
        [Calibration::None, Calibration::Percentile, Calibration::Mse, Calibration::Sqnr, Calibration::KlMinimization]
    {
        let opts = QuantOptions { calibration, ..QuantOptions::default() };
        let (qdq, report) = quantize_model(&model, None, &HashMap::new(), &profile, &opts).unwrap();
        assert_eq!(report.quantised.len(), 5, "{calibration:?}: four convolutions and the MatMul: {report:?}");
        for cores in [1, 4] {
            let c = compile(&qdq, None, "q", &CompileOptions { cores, ..CompileOptions::default() }).unwrap();
            assert_eq!(int8_convs(&c), 4 * cores as usize, "{calibration:?}: one int8 convolution per layer and core");
            let got = run_functional(&c, &held_back).unwrap();
            for (g, w) in got.iter().zip(&want) {
                let cos = cosine(&g[0], &w[0]);
                eprintln!("{calibration:?} cores={cores}: cosine {cos:.5}");
                assert!(cos >= 0.99, "{calibration:?} cores={cores}: cosine similarity {cos} < 0.99");
            }
        }
    }
}

/// Convolutions whose input is `dtype` (int8 or int16 activations) times int8 weights.
fn convs_on(c: &Compiled, dtype: DType) -> usize {
    c.image
        .cores
        .iter()
        .flatten()
        .filter_map(|i| i.decode().ok())
        .filter(
            |op| matches!(op, Op::Conv2d { input, weight, .. } if input.dtype == dtype && weight.dtype == DType::I8),
        )
        .count()
}

/// Worst |got - want| over all outputs, relative to the float outputs' largest magnitude.
fn worst_error(got: &[Vec<Vec<f32>>], want: &[Vec<Vec<f32>>]) -> f64 {
    let top = want.iter().flat_map(|w| w[0].iter()).fold(0f64, |m, &v| m.max(f64::from(v).abs()));
    let err = got
        .iter()
        .zip(want)
        .flat_map(|(g, w)| g[0].iter().zip(&w[0]).map(|(&a, &b)| f64::from(a - b).abs()))
        .fold(0f64, f64::max);
    err / top
}

/// `-quantization-precision=Int16`: activations in 16 bits (int16, or uint16 where never
/// negative), weights still int8 per channel. The QDQ model carries int16 / uint16 zero
/// points, the program multiplies int16 activations by int8 weights, and on held-back
/// inputs it tracks the float program more closely than the int8 program, for every
/// calibration method.
#[test]
fn int16_activations_track_the_float_program_closer_than_int8() {
    use aicsim_compiler::onnx::data_type;
    use aicsim_compiler::quantize::Precision;
    let model = zoo::small_cnn();
    let profile = profile();
    let float = compile(&model, None, "f", &CompileOptions::default()).unwrap();
    let held_back = samples(99, 4, 3 * 16 * 16);
    let want = run_functional(&float, &held_back).unwrap();
    for calibration in
        [Calibration::None, Calibration::Percentile, Calibration::Mse, Calibration::Sqnr, Calibration::KlMinimization]
    {
        let mut errors = Vec::new();
        for precision in [Precision::Int8, Precision::Int16] {
            let opts = QuantOptions { calibration, precision, ..QuantOptions::default() };
            let (qdq, report) = quantize_model(&model, None, &HashMap::new(), &profile, &opts).unwrap();
            assert_eq!(report.quantised.len(), 5, "{calibration:?} {precision:?}: {report:?}");
            let zero_point_types: Vec<i32> = qdq
                .graph
                .initializers
                .iter()
                .filter(|t| {
                    t.name.contains("_zero_point_aicsim") && report.tensors.iter().any(|r| t.name.starts_with(&r.0))
                })
                .map(|t| t.data_type)
                .collect();
            let wide = precision == Precision::Int16;
            let allowed: &[i32] = if wide {
                &[data_type::INT16, data_type::UINT16, data_type::INT8]
            } else {
                &[data_type::INT8, data_type::UINT8]
            };
            assert!(zero_point_types.iter().all(|t| allowed.contains(t)), "{precision:?}: {zero_point_types:?}");
            assert_eq!(
                zero_point_types.iter().any(|&t| t == data_type::INT16 || t == data_type::UINT16),
                wide,
                "{precision:?}: activations' zero points {zero_point_types:?}"
            );
            let c = compile(&qdq, None, "q", &CompileOptions::default()).unwrap();
            let (act, other) = if wide { (DType::I16, DType::I8) } else { (DType::I8, DType::I16) };
            assert_eq!(convs_on(&c, act), 4, "{calibration:?} {precision:?}: every convolution on {act:?} activations");
            assert_eq!(convs_on(&c, other), 0);
            let got = run_functional(&c, &held_back).unwrap();
            for (g, w) in got.iter().zip(&want) {
                let cos = cosine(&g[0], &w[0]);
                assert!(cos >= 0.99, "{calibration:?} {precision:?}: cosine similarity {cos} < 0.99");
            }
            errors.push(worst_error(&got, &want));
        }
        eprintln!(
            "{calibration:?}: worst error relative to the largest output: int8 {:.2e}, int16 {:.2e} ({:.0}x smaller)",
            errors[0],
            errors[1],
            errors[0] / errors[1]
        );
        // The weights stay int8, so their rounding remains: int16 activations remove the
        // activations' share of the error.
        assert!(
            errors[1] * 1.25 < errors[0],
            "{calibration:?}: int16 {} is not well below int8 {}",
            errors[1],
            errors[0]
        );
    }
}

/// A bias that does not fit int32 in units of the sums (a very fine input scale, as
/// 16-bit activations give) keeps its layer in float, and says so: the quantiser reports
/// it, and a QDQ model carrying such a layer compiles with a warning naming it.
#[test]
fn a_bias_past_int32_keeps_its_layer_in_float_and_says_so() {
    use aicsim_compiler::onnx::TensorData;
    use aicsim_compiler::quantize::Precision;
    let model = zoo::small_cnn();
    let mut profile = profile();
    let input = model.graph.inputs[0].name.clone();
    let first = model.graph.nodes.iter().find(|n| n.op_type == "Conv").unwrap().name.clone();
    // The input barely varies: its 16-bit scale is ~1e-13.
    let t = profile.tensors.get_mut(&input).unwrap();
    (t.min, t.max) = (-3e-9, 3e-9);
    let opts = QuantOptions { precision: Precision::Int16, ..QuantOptions::default() };
    let (_, report) = quantize_model(&model, None, &HashMap::new(), &profile, &opts).unwrap();
    let (node, why) = report.kept.iter().find(|(n, _)| *n == first).expect("the first convolution is kept");
    assert!(why.contains("exceeds int32"), "{node}: {why}");
    assert_eq!(report.quantised.len(), 4);
    // An int8 QDQ model whose input scale is then made that fine: the importer keeps
    // the convolution in float and warns.
    let (mut qdq, _) =
        quantize_model(&model, None, &HashMap::new(), &self::profile(), &QuantOptions::default()).unwrap();
    let scale =
        qdq.graph.initializers.iter_mut().find(|t| t.name.starts_with(&format!("{input}_scale_aicsim"))).unwrap();
    scale.data = TensorData::Floats(vec![1e-13]);
    let c = compile(&qdq, None, "q", &CompileOptions::default()).unwrap();
    assert_eq!(convs_on(&c, DType::I8), 3, "the first convolution runs in float");
    let said = c.warnings.iter().find(|w| w.contains(&format!("'{first}' runs in float"))).expect("a warning");
    assert!(said.contains("bias") && said.contains("int32"), "{said}");
}

#[test]
fn nodes_kept_in_float_are_not_quantised() {
    let model = zoo::small_cnn();
    let profile = profile();
    let opts = QuantOptions { float_ops: vec!["Conv".into()], ..QuantOptions::default() };
    let (qdq, report) = quantize_model(&model, None, &HashMap::new(), &profile, &opts).unwrap();
    assert!(report.quantised.len() == 1 && report.kept.len() == 4, "only the MatMul: {report:?}");
    assert_eq!(int8_convs(&compile(&qdq, None, "q", &CompileOptions::default()).unwrap()), 0);
    let first = model.graph.nodes.iter().find(|n| n.op_type == "Conv").unwrap().name.clone();
    let opts = QuantOptions { float_nodes: vec![first.clone()], ..QuantOptions::default() };
    let (qdq, report) = quantize_model(&model, None, &HashMap::new(), &profile, &opts).unwrap();
    assert_eq!(report.kept, vec![(first, "kept in float as asked".to_string())]);
    assert_eq!(int8_convs(&compile(&qdq, None, "q", &CompileOptions::default()).unwrap()), 3);
    let opts = QuantOptions { float_nodes: vec!["no_such_node".into()], ..QuantOptions::default() };
    let e = quantize_model(&model, None, &HashMap::new(), &profile, &opts).unwrap_err().to_string();
    assert!(e.contains("no_such_node"), "{e}");
}

#[test]
fn a_profile_round_trips_and_is_refused_for_another_model() {
    let model = zoo::small_cnn();
    let p = profile();
    let text = p.to_json();
    assert_eq!(Profile::from_json(&text, "p.json", &model).unwrap(), p);
    let e = Profile::from_json(&text, "p.json", &zoo::qdq_cnn()).unwrap_err().to_string();
    assert!(e.contains("p.json") && e.contains("made for model 'small_cnn'"), "{e}");
    let e = Profile::from_json("{]", "bad.json", &model).unwrap_err().to_string();
    assert!(e.contains("bad.json") && e.contains("not a calibration profile"), "{e}");
}

/// `QLinearMatMul` (onnxruntime's QOperator form) compiles to an int8 product whose
/// output equals the operator's definition computed here: the integer products of the
/// operands less their zero points, requantised to the output's scale and zero point.
#[test]
fn qlinear_matmul_is_an_int8_product_with_the_operators_result() {
    use aicsim_compiler::onnx::{data_type, Dim, Graph, Model, Node, OpsetId, Tensor, TensorData, ValueInfo};
    let (m, k, n) = (3usize, 40usize, 6usize);
    let (xs, xz, bs, ys, yz) = (0.02f32, 5i64, 0.01f32, 0.05f32, -3i64);
    let b_q: Vec<i64> = (0..k * n).map(|i| ((i * 37 + 11) % 255) as i64 - 127).collect();
    let scalar = |name: &str, data_type, data| Tensor { name: name.into(), dims: vec![], data_type, data };
    let inits = vec![
        scalar("xs", data_type::FLOAT, TensorData::Floats(vec![xs])),
        scalar("xz", data_type::INT8, TensorData::Int32s(vec![xz])),
        scalar("bs", data_type::FLOAT, TensorData::Floats(vec![bs])),
        scalar("bz", data_type::INT8, TensorData::Int32s(vec![0])),
        scalar("ys", data_type::FLOAT, TensorData::Floats(vec![ys])),
        scalar("yz", data_type::INT8, TensorData::Int32s(vec![yz])),
        Tensor {
            name: "b".into(),
            dims: vec![k as i64, n as i64],
            data_type: data_type::INT8,
            data: TensorData::Int32s(b_q.clone()),
        },
    ];
    let node = |op: &str, inputs: &[&str], out: &str| Node {
        name: format!("{op}_{out}"),
        op_type: op.into(),
        domain: String::new(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: vec![out.into()],
        attributes: vec![],
    };
    let vi = |name: &str, dims: &[usize]| ValueInfo {
        name: name.into(),
        elem_type: data_type::FLOAT,
        shape: Some(dims.iter().map(|&d| Dim::Value(d as i64)).collect()),
    };
    let model = Model {
        ir_version: 8,
        opset_imports: vec![OpsetId { domain: String::new(), version: 13 }],
        producer_name: "test".into(),
        graph: Graph {
            name: "qlinear_matmul".into(),
            nodes: vec![
                node("QuantizeLinear", &["x", "xs", "xz"], "xq"),
                node("QLinearMatMul", &["xq", "xs", "xz", "b", "bs", "bz", "ys", "yz"], "yq"),
                node("DequantizeLinear", &["yq", "ys", "yz"], "y"),
            ],
            initializers: inits,
            inputs: vec![vi("x", &[m, k])],
            outputs: vec![vi("y", &[m, n])],
            value_info: vec![],
        },
    };
    let c = compile(&model, None, "q", &CompileOptions::default()).unwrap();
    let products = c.image.cores.iter().flatten().filter_map(|i| i.decode().ok());
    assert!(products.filter(|op| matches!(op, Op::MatMul { b, .. } if b.dtype == DType::I8)).count() > 0);
    let x: Vec<f32> = (0..m * k).map(|i| ((i * 13 % 97) as f32 - 48.0) * 0.03).collect();
    let got = run_functional(&c, &[vec![x.clone()]]).unwrap().remove(0).remove(0);
    // The definition: quantise x, integer product less zero points, requantise.
    let xq: Vec<i64> = x.iter().map(|&v| ((v / xs).round_ties_even() as i64 + xz).clamp(-128, 127)).collect();
    for i in 0..m {
        for j in 0..n {
            let acc: i64 = (0..k).map(|p| (xq[i * k + p] - xz) * b_q[p * n + j]).sum();
            let q = ((acc as f32 * (xs * bs / ys)).round_ties_even() as i64 + yz).clamp(-128, 127);
            let want = (q - yz) as f32 * ys;
            assert!((got[i * n + j] - want).abs() <= ys * 1.001, "y[{i}][{j}]: {} vs {want}", got[i * n + j]);
        }
    }
}

/// `-quantization-precision-bias=Int8`: each bias is int8 with a scale of its own, so the
/// program adds biases with int8's precision (a different program from int32 biases),
/// still close to the float one.
#[test]
fn int8_biases_carry_int8_precision() {
    let model = zoo::small_cnn();
    let profile = profile();
    let held_back = samples(99, 2, 3 * 16 * 16);
    let float = compile(&model, None, "f", &CompileOptions::default()).unwrap();
    let want = run_functional(&float, &held_back).unwrap();
    let program = |bias_int8| {
        let opts = QuantOptions { bias_int8, ..QuantOptions::default() };
        let (qdq, _) = quantize_model(&model, None, &HashMap::new(), &profile, &opts).unwrap();
        compile(&qdq, None, "q", &CompileOptions::default()).unwrap()
    };
    let (b32, b8) = (program(false), program(true));
    assert_ne!(b32.image.constants, b8.image.constants, "int8 biases round differently");
    for (g, w) in run_functional(&b8, &held_back).unwrap().iter().zip(&want) {
        assert!(cosine(&g[0], &w[0]) >= 0.99, "cosine {}", cosine(&g[0], &w[0]));
    }
}
