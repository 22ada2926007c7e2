//! Compiled ONNX models against onnxruntime, through the whole stack: `aic-exec`'s
//! compiler turns the real models the `onnx` package ships into programs, the runtime
//! runs them (functional mode) over the simulated driver and device, and every output
//! is compared with onnxruntime (CPU) on the same model and input.
//!
//! The light models carry their weights as ConstantOfShape nodes, so
//! `scripts/onnx_reference.py` first replaces each with a seeded random tensor (He
//! initialisation, positive variances) — otherwise every class score is equal.
//!
//! Tolerances. f32: rtol 1e-3, atol 1e-4 (the bound; summation order is the only
//! difference). f16 (`-convert-to-fp16`): every weight and activation is rounded to f16
//! (unit roundoff 2^-11 = 4.9e-4) once per layer and the errors add up over ~20-50
//! layers as a random walk; on softmax probabilities that is well under 1e-2 of the
//! largest score, so we assert |ours - ref| <= 2e-2 * max|ref| + 1e-3 * |ref|, and for
//! the classifiers that the top-1 class agrees. Measured (printed by the test): f32 errors
//! 1e-9..4e-8 on the classifiers and 1.4e-6 on the encoder; f16 errors 7e-7..4e-5 on the
//! classifiers (under 0.1% of the largest score) and 5e-3 on the encoder (0.6%).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aicsim_abi::isa::{DType, Op};
use aicsim_compiler::{compile_file, CompileOptions};
use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use aicsim_runtime::samples::bytes_f32;
use aicsim_runtime::{Activation, Program};

struct Reference {
    model: PathBuf,
    /// Each input's host bytes (f32, or int64 / int32 token ids and masks).
    inputs: Vec<Vec<u8>>,
    outputs: Vec<Vec<f32>>,
}

fn read_f32(path: &Path) -> Vec<f32> {
    bytes_f32(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The Python with onnx and onnxruntime, and the light models' directory; `None` when
/// the environment has neither and does not require them.
fn environment() -> Option<(String, PathBuf)> {
    let (Ok(models), Ok(python)) = (std::env::var("AICSIM_ONNX_MODELS"), std::env::var("AICSIM_PYTHON")) else {
        assert!(std::env::var("AICSIM_REQUIRE_ONNX").is_err(), "AICSIM_REQUIRE_ONNX is set but the models are not");
        eprintln!("skipped: run scripts/test.sh, which installs onnx and onnxruntime");
        return None;
    };
    Some((python, PathBuf::from(models)))
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

/// Runs the reference script for a bundled light model.
fn reference(name: &str, keep_weights: bool) -> Option<Reference> {
    let (_, models) = environment()?;
    reference_for(&models.join(format!("light_{name}.onnx")), &format!("{name}-{keep_weights}"), keep_weights)
}

fn reference_for(src: &Path, tag: &str, keep_weights: bool) -> Option<Reference> {
    let (python, _) = environment()?;
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("onnx-ref-{tag}"));
    if !out.join("meta.json").exists() {
        let mut cmd = Command::new(python);
        let script = script("onnx_reference.py");
        cmd.arg(script).arg(src).arg(&out).args(["--seed", "7"]);
        if keep_weights {
            cmd.arg("--keep-weights");
        }
        let status = cmd.status().expect("run python");
        assert!(status.success(), "reference script failed for {tag}");
    }
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("meta.json")).unwrap()).unwrap();
    let count = |k: &str| meta[k].as_array().unwrap().len();
    Some(Reference {
        model: out.join("model.onnx"),
        inputs: (0..count("inputs")).map(|i| std::fs::read(out.join(format!("input_{i}.bin"))).unwrap()).collect(),
        outputs: (0..count("outputs")).map(|i| read_f32(&out.join(format!("output_{i}.bin")))).collect(),
    })
}

fn run(device: &Arc<Device>, model: &Path, opts: &CompileOptions, inputs: &[Vec<u8>]) -> Vec<Vec<f32>> {
    let compiled = compile_file(model, opts).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let program = Program::from_image(compiled.image).unwrap();
    // Functional simulation of VGG-19 (20 GMAC) takes seconds on a 2-core host.
    let activation = Activation::new(device.clone(), &program).unwrap().with_wait_timeout(Duration::from_secs(300));
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    activation.run(&refs).unwrap().iter().map(|o| bytes_f32(o)).collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

/// Largest violation of `|a - b| <= atol + rtol |b|` (<= 0 means within).
fn worst(got: &[f32], want: &[f32], rtol: f32, atol: f32) -> (f32, usize) {
    assert_eq!(got.len(), want.len(), "output lengths differ");
    let mut w = (f32::NEG_INFINITY, 0);
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let excess = (a - b).abs() - (atol + rtol * b.abs());
        let excess = if excess.is_nan() { f32::INFINITY } else { excess };
        if excess > w.0 {
            w = (excess, i);
        }
    }
    w
}

/// VGG-19 in f32 is a 580 MB program: a debug build of the device takes several seconds
/// to check and copy it, more than the driver's default 5 s for a control request.
fn big_programs() -> KmdConfig {
    KmdConfig { control_timeout: Duration::from_secs(120), ..KmdConfig::default() }
}

fn check_model(name: &str) {
    if let Some(r) = reference(name, false) {
        check_against(name, &r, &CompileOptions::default());
    }
}

fn check_against(name: &str, r: &Reference, base: &CompileOptions) {
    check_against_cores(name, r, base, &[1, 4]);
}

fn check_against_cores(name: &str, r: &Reference, base: &CompileOptions, cores_list: &[u32]) {
    let device = Arc::new(Device::open_simulated(big_programs()).unwrap());
    for &cores in cores_list {
        for fp16 in [false, true] {
            let opts = CompileOptions { cores, fp16, multicast_weights: fp16, ..base.clone() };
            let got = run(&device, &r.model, &opts, &r.inputs);
            for (o, (g, want)) in got.iter().zip(&r.outputs).enumerate() {
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                let (rtol, atol) = if fp16 { (1e-3, 2e-2 * scale) } else { (1e-3, 1e-4) };
                let (excess, at) = worst(g, want, rtol, atol);
                let err = g.iter().zip(want.iter()).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                eprintln!("{name} cores={cores} fp16={fp16}: max |ours - onnxruntime| = {err:.3e} (largest score {scale:.3e})");
                assert!(
                    excess <= 0.0,
                    "{name} cores={cores} fp16={fp16} output {o}[{at}]: ours {} onnxruntime {} (beyond tolerance by {excess})",
                    g[at],
                    want[at]
                );
                if name != "bert" {
                    // Classifiers: the predicted class is the same.
                    assert_eq!(argmax(g), argmax(want), "{name} cores={cores} fp16={fp16}: top-1 class differs");
                }
            }
        }
    }
}

/// The unmodified model (uniform ConstantOfShape weights) reproduces the expected output
/// the onnx package ships with it.
fn check_package_output(name: &str) {
    let Some(r) = reference(name, true) else { return };
    let dir = r.model.parent().unwrap();
    let package = read_f32(&dir.join("package_output_0.bin"));
    let device = Arc::new(Device::open_simulated(big_programs()).unwrap());
    let got = run(&device, &r.model, &CompileOptions::default(), &r.inputs);
    let (excess, at) = worst(&got[0], &package, 1e-3, 1e-4);
    assert!(excess <= 0.0, "{name} output[{at}]: ours {} package {}", got[0][at], package[at]);
}

#[test]
fn unmodified_light_models_reproduce_the_packages_outputs() {
    for name in ["squeezenet", "resnet50", "bvlc_alexnet", "zfnet512", "vgg19"] {
        check_package_output(name);
    }
}

/// A BERT-like encoder (two layers, hidden 128, four heads, sequence 32) written with
/// the onnx package the way exporters write one (`scripts/make_bert.py`).
#[test]
fn bert_like_encoder_matches_onnxruntime() {
    let Some((python, _)) = environment() else { return };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bert-encoder");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("bert.onnx");
    let status = Command::new(python).arg(script("make_bert.py")).arg(&model).status().expect("run python");
    assert!(status.success(), "make_bert.py failed");
    // The model was just written: its reference must be too.
    let _ = std::fs::remove_dir_all(Path::new(env!("CARGO_TARGET_TMPDIR")).join("onnx-ref-bert"));
    let Some(r) = reference_for(&model, "bert", true) else { return };
    let mut opts = CompileOptions::default();
    opts.symbols.insert("batch_size".into(), 1);
    check_against("bert", &r, &opts);
}

#[test]
fn light_squeezenet_matches_onnxruntime() {
    check_model("squeezenet");
}

#[test]
fn light_resnet50_matches_onnxruntime() {
    check_model("resnet50");
}

#[test]
fn light_bvlc_alexnet_matches_onnxruntime() {
    check_model("bvlc_alexnet");
}

#[test]
fn light_zfnet512_matches_onnxruntime() {
    check_model("zfnet512");
}

#[test]
fn light_vgg19_matches_onnxruntime() {
    check_model("vgg19");
}

/// A QDQ model from onnxruntime's static quantiser (`scripts/make_qdq.py`): the model,
/// the held-back input, onnxruntime's output and the output's quantisation step.
fn qdq_reference(tag: &str, args: &[&str]) -> Option<(Reference, f32)> {
    let (python, _) = environment()?;
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("qdq-{tag}"));
    if !out.join("meta.json").exists() {
        let status = Command::new(python).arg(script("make_qdq.py")).arg(&out).args(args).status().expect("run python");
        assert!(status.success(), "make_qdq.py failed for {tag}");
    }
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("meta.json")).unwrap()).unwrap();
    let step = meta["step"].as_f64().expect("the output is dequantised") as f32;
    let r = Reference {
        model: out.join("model.onnx"),
        inputs: vec![std::fs::read(out.join("input_0.bin")).unwrap()],
        outputs: vec![read_f32(&out.join("output_0.bin"))],
    };
    Some((r, step))
}

/// The int8 program of a QDQ model gives onnxruntime's output within one quantisation
/// step per element, at 1 and 4 cores, with its convolutions really on int8 (HMX int8
/// products in the program, int8 activations in DDR).
fn check_qdq(tag: &str, args: &[&str]) {
    check_quantised(tag, args, true, DType::I8);
}

/// `int8_gemm`: whether the model's Gemm is quantised too (in QOperator form only the
/// convolutions are: onnxruntime's QGemm is its own domain's). `act`: the device type of
/// the quantised activations (I8, or I16 for 16-bit QDQ models: int16 x int8 products).
fn check_quantised(tag: &str, args: &[&str], int8_gemm: bool, act: DType) {
    let Some((r, step)) = qdq_reference(tag, args) else { return };
    let device = Arc::new(Device::open_simulated(big_programs()).unwrap());
    for cores in [1, 4] {
        for fp16 in [false, true] {
            let opts = CompileOptions { cores, fp16, ..CompileOptions::default() };
            let compiled = compile_file(&r.model, &opts).unwrap();
            let count = |f: &dyn Fn(&Op) -> bool| {
                compiled.image.cores.iter().flatten().filter_map(|i| i.decode().ok()).filter(|op| f(op)).count()
            };
            let int8_convs = count(
                &|op| matches!(op, Op::Conv2d { input, weight, .. } if input.dtype == act && weight.dtype == DType::I8),
            );
            assert!(int8_convs > 0, "{tag}: no {act:?} x int8 convolution in the program");
            let int8_products =
                count(&|op| matches!(op, Op::MatMul { a, b, .. } if a.dtype == act && b.dtype == DType::I8));
            let not = if int8_gemm { "not " } else { "" };
            assert_eq!(int8_products > 0, int8_gemm, "{tag}: the Gemm is {not}an int8 product");
            // In QDQ form the max pooling sits between a dequantisation and a
            // quantisation with the same parameters: it pools the int8 values.
            let int8_pools = count(&|op| matches!(op, Op::Pool { src, .. } if src.dtype == act));
            assert_eq!(int8_pools > 0, int8_gemm, "{tag}: {act:?} max pooling");
            assert!(
                compiled.graph.values.iter().any(|v| v.quant.is_some_and(|q| q.dtype() == act)),
                "{tag}: no {act:?} activations"
            );
            let got = run(&device, &r.model, &opts, &r.inputs);
            let err = got[0].iter().zip(&r.outputs[0]).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            eprintln!(
                "{tag} cores={cores} fp16={fp16}: max |ours - onnxruntime| = {err:.3e} = {:.2} steps ({int8_convs} quantised convolutions)",
                err / step
            );
            // One step, and the rounding of the dequantised value to the program's float
            // type (twice 2^-11 relative in f16: the float layers and the output).
            // 16-bit steps are finer than fp16 itself: in an fp16 program the float
            // layers' roundings (global pooling, the sums) dominate, and each is relative
            // to the values it rounds, so the bound is a few fp16 steps of the output's
            // scale (f32 programs are held to one 16-bit step).
            let rel = if fp16 { 1.0 / 1024.0 } else { 1e-6 };
            let scale = r.outputs[0].iter().fold(0f32, |m, v| m.max(v.abs()));
            let atol = if fp16 && act == DType::I16 { step + scale / 512.0 } else { step };
            let (excess, at) = worst(&got[0], &r.outputs[0], rel, atol);
            assert!(
                excess <= 0.0,
                "{tag} cores={cores} fp16={fp16} y[{at}]: ours {} onnxruntime {} (more than one step, {step}, apart)",
                got[0][at],
                r.outputs[0][at]
            );
        }
    }
}

#[test]
fn qdq_int8_model_matches_onnxruntime() {
    check_qdq("int8", &["--seed", "3"]);
}

/// The same CNN in onnxruntime's QOperator form: QLinearConv nodes (expanded by the
/// importer into their QDQ form) between QuantizeLinear and DequantizeLinear.
#[test]
fn qoperator_model_matches_onnxruntime() {
    check_quantised("qoperator", &["--seed", "4", "--format", "qoperator"], false, DType::I8);
}

/// 16-bit activations (onnxruntime's `QuantType.QInt16`, opset 21 QDQ) with int8
/// weights: int16 x int8 products on HMX, int16 activations in DDR, within one of the
/// output's (much finer) quantisation steps of onnxruntime.
#[test]
fn qdq_int16_activations_model_matches_onnxruntime() {
    check_quantised("int16", &["--seed", "6", "--activations", "int16"], true, DType::I16);
}

/// uint16 activations (stored as int16, the zero point moved by 32768), per-channel int8
/// weights.
#[test]
fn qdq_uint16_per_channel_model_matches_onnxruntime() {
    check_quantised(
        "uint16-per-channel",
        &["--seed", "7", "--activations", "uint16", "--per-channel"],
        true,
        DType::I16,
    );
}

#[test]
fn qdq_uint8_per_channel_model_matches_onnxruntime() {
    check_qdq("uint8-per-channel", &["--seed", "5", "--activations", "uint8", "--per-channel"]);
}

/// BERT as exported (`scripts/make_bert.py --exported`): int64 `input_ids`,
/// `attention_mask` and `token_type_ids`; embeddings by Gather (rows fetched from DDR by
/// the device, the token ids checked against the vocabulary), positions sliced from a
/// constant buffer, the mask turned into an additive bias by Unsqueeze / Cast / Sub /
/// Mul. Written at opsets 11 (Unsqueeze axes as attributes, Softmax over coerced 2-D),
/// 13 and 17 (LayerNormalization); against onnxruntime at 1, 2 and 4 cores, f32 and
/// fp16.
#[test]
fn bert_as_exported_with_token_ids_matches_onnxruntime() {
    let Some((python, _)) = environment() else { return };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bert-exported");
    std::fs::create_dir_all(&dir).unwrap();
    for opset in [11, 13, 17] {
        let model = dir.join(format!("bert-exported-{opset}.onnx"));
        let status = Command::new(&python)
            .arg(script("make_bert.py"))
            .arg(&model)
            .args(["--exported", "--opset", &opset.to_string()])
            .status()
            .expect("run python");
        assert!(status.success(), "make_bert.py --exported --opset {opset} failed");
        let tag = format!("bert-exported-{opset}");
        let _ = std::fs::remove_dir_all(Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("onnx-ref-{tag}")));
        let Some(r) = reference_for(&model, &tag, true) else { return };
        assert_eq!(r.inputs.len(), 3);
        assert!(r.inputs.iter().all(|i| i.len() == 32 * 8), "three int64 [1, 32] inputs");
        let mut opts = CompileOptions::default();
        opts.symbols.insert("batch_size".into(), 1);
        check_against_cores("bert", &r, &opts, &[1, 2, 4]);
    }
}
