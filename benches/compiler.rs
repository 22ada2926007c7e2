//! The compiler and the functional device against reference points, in one run:
//! - compile time of ResNet-50 (`light_resnet50` from the onnx package when the
//!   environment has it, else the built-in zoo ResNet-50), fp16 with multicast weights,
//!   for 1, 4 and 14 cores, beside the time to only read and decode the same ONNX file;
//! - functional-mode `light_resnet50` inference (random weights, through the runtime,
//!   driver and device) beside onnxruntime (CPU, all its graph optimisations) on the same
//!   model and input, on this machine, in this run.
//!
//! - post-training int8 quantisation of the same ResNet-50 with 32 calibration samples
//!   (calibration on the simulated device, QDQ rewrite, compile; then the int16-activation
//!   rewrite and compile of the same profile) beside the float compile alone and the
//!   float program's functional inferences alone (the calibration's two passes over the
//!   samples are most of it).
//!
//! Targets (issue 6): compile < 10 s for each core count (release, 2-core machine);
//! functional inference <= 4x onnxruntime's time; (issue 19) quantising and compiling
//! < 30 s. Run with `cargo bench --bench compiler` after `scripts/test.sh` has created
//! `.venv` (it sets nothing else up).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_compiler::onnx::parse_model;
use aicsim_compiler::{compile, compile_file, zoo, CompileOptions};
use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use aicsim_runtime::samples::{bytes_f32, f32_bytes};
use aicsim_runtime::{Activation, Program};

fn python_and_models() -> Option<(PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("AICSIM_PYTHON").map(PathBuf::from).unwrap_or_else(|_| root.join(".venv/bin/python"));
    let out = Command::new(&python)
        .args(["-c", "import os, onnx, onnxruntime; print(os.path.join(os.path.dirname(onnx.__file__), 'backend', 'test', 'data', 'light'))"])
        .output()
        .ok()?;
    out.status.success().then(|| (python, PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())))
}

fn compile_times(model: Option<&Path>, full: bool) {
    let opts = |cores| CompileOptions { cores, fp16: true, multicast_weights: true, ..Default::default() };
    let (label, decode) = match model {
        Some(p) => {
            let t = Instant::now();
            parse_model(&std::fs::read(p).unwrap()).unwrap();
            ("light_resnet50.onnx", t.elapsed())
        }
        None => ("zoo:resnet50", Duration::ZERO),
    };
    println!("compile time, {label}, -convert-to-fp16 -multicast-weights:");
    if model.is_some() {
        println!("  baseline: read + decode the ONNX file only      {:>8.3} s", decode.as_secs_f64());
    }
    for cores in [1, 4, 14] {
        let runs = if full { 3 } else { 1 };
        let mut best = Duration::MAX;
        let mut instructions = 0;
        for _ in 0..runs {
            let t = Instant::now();
            let c = match model {
                Some(p) => compile_file(p, &opts(cores)).unwrap(),
                None => compile(&zoo::resnet50(), None, "resnet50", &opts(cores)).unwrap(),
            };
            best = best.min(t.elapsed());
            instructions = c.image.cores.iter().map(Vec::len).sum::<usize>();
        }
        println!(
            "  -aic-num-cores={cores:<2}: {:>8.3} s ({instructions} instructions); / target 10 s = {:.3}",
            best.as_secs_f64(),
            best.as_secs_f64() / 10.0
        );
    }
}

fn quantise_and_compile(model: Option<&Path>, full: bool) {
    use aicsim_compiler::quantize::{calibrate, quantize_model, run_functional, Precision, QuantOptions};
    use std::collections::HashMap;
    let (m, dir, label) = match model {
        Some(p) => (parse_model(&std::fs::read(p).unwrap()).unwrap(), p.parent(), "light_resnet50.onnx"),
        None => (zoo::resnet50(), None, "zoo:resnet50"),
    };
    let n = if full { 32 } else { 1 };
    let mut s = 7u64;
    let samples: Vec<Vec<Vec<f32>>> = (0..n)
        .map(|_| {
            vec![(0..3 * 224 * 224)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (s >> 40) as f32 / (1u64 << 24) as f32
                })
                .collect()]
        })
        .collect();
    let opts = CompileOptions { fp16: true, ..Default::default() };
    let t = Instant::now();
    let float = compile(&m, dir, "float", &CompileOptions::default()).unwrap();
    let compile_float = t.elapsed().as_secs_f64();
    let t = Instant::now();
    run_functional(&float, &samples).unwrap();
    let inferences = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let profile = calibrate(&m, dir, &HashMap::new(), &samples, 512).unwrap();
    let calibrated = t.elapsed().as_secs_f64();
    let (qdq, report) = quantize_model(&m, dir, &HashMap::new(), &profile, &QuantOptions::default()).unwrap();
    let c = compile(&qdq, dir, "int8", &opts).unwrap();
    let total = t.elapsed().as_secs_f64();
    assert!(!report.quantised.is_empty());
    println!("int8 post-training quantisation, {label}, {n} calibration samples, 512 bins:");
    println!("  calibrate (2 passes on the simulated device):  {calibrated:>8.3} s");
    println!(
        "  + rewrite and compile ({} of {} convolutions int8, {} instructions): total {total:>8.3} s; / target 30 s = {:.3}",
        report.quantised.len(),
        report.quantised.len() + report.kept.len(),
        c.image.cores.iter().map(Vec::len).sum::<usize>(),
        total / 30.0
    );
    // The same profile with 16-bit activations (-quantization-precision=Int16).
    let t = Instant::now();
    let int16 = QuantOptions { precision: Precision::Int16, ..QuantOptions::default() };
    let (qdq16, report16) = quantize_model(&m, dir, &HashMap::new(), &profile, &int16).unwrap();
    let c16 = compile(&qdq16, dir, "int16", &opts).unwrap();
    println!(
        "  int16 activations from the same profile ({} layers): rewrite and compile {:>8.3} s ({} instructions)",
        report16.quantised.len(),
        t.elapsed().as_secs_f64(),
        c16.image.cores.iter().map(Vec::len).sum::<usize>()
    );
    println!("  baseline: the float compile alone               {compile_float:>8.3} s");
    println!(
        "  baseline: {n} float functional inferences alone   {inferences:>8.3} s (calibration / 2 passes of them = {:.2})",
        calibrated / (2.0 * inferences)
    );
}

fn inference_vs_onnxruntime(python: &Path, models: &Path, full: bool) {
    let dir = std::env::temp_dir().join("aicsim-bench-resnet50");
    let n = if full { 10 } else { 2 };
    let out = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onnx_reference.py"))
        .arg(models.join("light_resnet50.onnx"))
        .arg(&dir)
        .args(["--seed", "7", "--time", &n.to_string()])
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let ort: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ort_seconds_per_inference "))
        .and_then(|v| v.trim().parse().ok())
        .expect("onnxruntime timing");
    let input = f32_bytes(&bytes_f32(&std::fs::read(dir.join("input_0.bin")).unwrap()));
    let want = bytes_f32(&std::fs::read(dir.join("output_0.bin")).unwrap());
    let compiled = compile_file(&dir.join("model.onnx"), &CompileOptions::default()).unwrap();
    let device = Arc::new(Device::open_simulated(KmdConfig::default()).unwrap());
    let program = Program::from_image(compiled.image).unwrap();
    let act = Activation::new(device, &program).unwrap().with_wait_timeout(Duration::from_secs(300));
    let got = bytes_f32(&act.run(&[&input]).unwrap()[0]);
    let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(act.run(&[&input]).unwrap());
    }
    let ours = t.elapsed().as_secs_f64() / f64::from(n);
    println!("functional light_resnet50 inference (f32, 1 core, mean of {n}; max |ours - onnxruntime| = {err:.1e}):");
    println!("  aicsim (runtime + driver + device, functional): {:>8.1} ms", ours * 1e3);
    println!("  baseline: onnxruntime CPU, same machine:        {:>8.1} ms", ort * 1e3);
    println!("  aicsim / onnxruntime = {:.2}x (target <= 4x)", ours / ort);
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    match python_and_models() {
        Some((python, models)) => {
            compile_times(Some(&models.join("light_resnet50.onnx")), full);
            quantise_and_compile(Some(&models.join("light_resnet50.onnx")), full);
            inference_vs_onnxruntime(&python, &models, full);
        }
        None => {
            println!("(no .venv with onnx and onnxruntime: run scripts/test.sh first for the onnxruntime comparison)");
            compile_times(None, full);
            quantise_and_compile(None, full);
        }
    }
}
