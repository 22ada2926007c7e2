//! aic-exec followed by aic-runner, with the reference's flag spellings; and aic-exec's
//! errors (one line, exit 2, no output file).

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(bin: &str, args: &[String]) -> (i32, String, String) {
    let out = Command::new(bin).args(args).output().expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn exec(args: &[String]) -> (i32, String, String) {
    run(env!("CARGO_BIN_EXE_aic-exec"), args)
}

/// light_resnet50 from the onnx package when the environment has it, else the zoo's.
fn model() -> String {
    match std::env::var("AICSIM_ONNX_MODELS") {
        Ok(dir) => Path::new(&dir).join("light_resnet50.onnx").display().to_string(),
        Err(_) => "zoo:resnet50".into(),
    }
}

fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn the_reference_command_line_compiles_and_aic_runner_runs_the_result() {
    let dir = out_dir("aic-exec-reference");
    let args: Vec<String> = [
        format!("-m={}", model()),
        "-onnx-define-symbol=batch_size,4".into(),
        "-mos=1".into(),
        "-ols=2".into(),
        "-aic-num-cores=2".into(),
        "-batchsize=4".into(),
        "-multicast-weights".into(),
        "-convert-to-fp16".into(),
        "-aic-hw".into(),
        "-aic-hw-version=2.0".into(),
        "-compile-only".into(),
        format!("-aic-binary-dir={}", dir.display()),
        "-aic-perf-metrics".into(),
        format!("-aic-perf-metrics-json={}/metrics.json", dir.display()),
    ]
    .into();
    let (code, out, err) = exec(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Reading ONNX Model from "), "{out}");
    assert!(out.contains("\nCompile started ............... \nCompiling model with FP16 precision.\n"), "{out}");
    // The resource summary in the seed's shape: its fields, then the traffic per core.
    for line in [
        "Original MAC estimate: ",
        "AIC HMX MAC estimate:  ",
        "AIC non-HMX MAC estimate:  ",
        "MulticastTableSize: ",
        "VTCM0Size:   ",
        "VTCM1Size:   ",
        "VTCMMaxSize: ",
        "StaticSharedDDRSize: \t",
        "DynamicSharedDDRSize: \t",
        "Constants size: ",
        "Compiler estimated memory traffic:",
        "    c00: DDR traffic  read: ",
        "    c01: DDR traffic  read: ",
        "  total: DDR traffic  read: ",
        "  c00 barriers: ",
    ] {
        assert!(out.lines().any(|l| l.starts_with(line)), "missing '{line}' in {out}");
    }
    let kb = |prefix: &str| -> Vec<u64> {
        out.lines()
            .filter(|l| l.contains(prefix))
            .map(|l| l.split(prefix).nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap())
            .collect()
    };
    let reads = kb("DDR traffic  read:");
    let (parts, total) = reads.split_at(reads.len() - 1);
    let sum: u64 = parts.iter().sum();
    assert!(sum.abs_diff(total[0]) <= parts.len() as u64, "per-port reads add up to the total: {reads:?}");
    for line in [
        "MAC estimate:",
        "  HMX MACs:",
        "  Non-HMX MACs:",
        "Constants size:",
        "VTCM size per core:",
        "Shared DDR size:",
        "Static DDR size:",
        "Dynamic DDR size:",
        "Multicast table size:",
        "Estimated DDR traffic:",
        "Estimated on-chip traffic:",
        "Device time per inference:",
        "Latency:",
        "Throughput:",
    ] {
        assert!(out.lines().any(|l| l.starts_with(line)), "missing '{line}' in {out}");
    }
    // The JSON holds the same figures, and its per-layer table is the printed one.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap();
    assert!(out.contains(&format!("Writing file:{}/metrics.json", dir.display())), "{out}");
    let layers = json["device"]["layers"].as_array().unwrap();
    let table = out.lines().skip_while(|l| !l.starts_with("=== Per-layer cost")).skip(2);
    let rows: Vec<&str> = table.take_while(|l| !l.starts_with("Writing file:")).collect();
    assert_eq!(rows.len(), layers.len(), "{out}");
    let share: f64 = layers.iter().map(|l| l["sharePercent"].as_f64().unwrap()).sum();
    assert!((share - 100.0).abs() < 1e-6, "{share}");
    // ResNet-50's convolutions are HMX work; its first is bound by HMX on two cores.
    let first_conv = layers.iter().find(|l| l["opType"] == "Conv").unwrap();
    assert_eq!(first_conv["onHmx"], true, "{first_conv}");
    assert!(["HMX", "HVX", "DMA", "DDR", "NoC", "sync"].contains(&first_conv["bound"].as_str().unwrap()));
    assert_eq!(
        json["hmxMacs"].as_u64().unwrap() + json["nonHmxMacs"].as_u64().unwrap(),
        json["macs"].as_u64().unwrap()
    );
    // The per-core constant reads are the constants the layers read, once per inference.
    let traffic = json["coreTraffic"].as_array().unwrap();
    assert_eq!(traffic.len(), 2);
    let constants: u64 = traffic.iter().map(|t| t["ddrReadConstants"].as_u64().unwrap()).sum();
    assert_eq!(constants, json["constantInBytes"].as_u64().unwrap(), "{traffic:?}");
    assert!(traffic.iter().all(|t| t["barriers"].as_u64().unwrap() > 0), "two cores synchronise");
    let p = &json["predicted"];
    assert_eq!((p["throughputInstances"].as_u64(), p["throughputSetSize"].as_u64()), (Some(7), Some(10)));
    // Seven two-core instances outrun one, which waits on the host between inferences.
    let alone = 1000.0 * 4.0 / p["latencyMs"].as_f64().unwrap();
    assert!(p["infPerSec"].as_f64().unwrap() > 2.0 * alone, "{p}");
    // The device alone is faster than the host's round trip around it.
    assert!(json["device"]["runUs"].as_f64().unwrap() < 1000.0 * p["latencyMs"].as_f64().unwrap(), "{json}");
    // Four samples of ResNet-50: ~16.4 GMAC per inference.
    let gmac: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("MAC estimate:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!((15.5..17.0).contains(&gmac), "{gmac} GMAC");
    // Two cores: part of what each reads from the pool the other one wrote.
    let noc = out.lines().find(|l| l.starts_with("Estimated on-chip traffic:")).unwrap();
    let mib: Vec<f64> = noc.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert!(mib.len() == 2 && mib[1] > 0.0 && mib[1] < mib[0], "{noc}");
    assert!(out.trim_end().ends_with(&format!("Generated binary is present at {}", dir.display())), "{out}");
    assert!(dir.join("programqpc.bin").exists());
    let (code, out, err) =
        run(env!("CARGO_BIN_EXE_aic-runner"), &["-t".into(), dir.display().to_string(), "-n".into(), "3".into()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("InferenceCnt 3 ") && out.contains("BatchSize 4 "), "{out}");
}

#[test]
fn errors_are_one_line_exit_2_and_leave_no_file() {
    let dir = out_dir("aic-exec-errors");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["-m=/nonexistent.onnx".into(), format!("-aic-binary-dir={}", dir.display())], "No such file"),
        (vec!["-m=zoo:nope".into(), format!("-aic-binary-dir={}", dir.display())], "no zoo model 'nope'"),
        (vec!["-m=zoo:resnet50".into()], "-aic-binary-dir"),
        (
            vec![
                "-m=zoo:resnet50".into(),
                "-batchsize=3".into(),
                "-onnx-define-symbol=x,2".into(),
                "-aic-num-cores=0".into(),
            ],
            "-aic-num-cores=0",
        ),
        (vec!["-bogus".into()], "unknown flag '-bogus'"),
    ];
    for (args, want) in cases {
        let (code, _, err) = exec(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: '{err}' lacks '{want}'");
        assert!(!dir.join("programqpc.bin").exists());
    }
}

/// Every run's profile is the one of that run: the first is readable, and each matches
/// its run record's device interval (a profile once sat one run ahead of its record).
#[test]
fn each_runs_profile_belongs_to_that_run() {
    use aicsim_runtime::{Activation, Program};
    let compiled = aicsim_compiler::compile(
        &aicsim_compiler::zoo::bert(1, 64, 2, 8, 128),
        None,
        "bert",
        &aicsim_compiler::CompileOptions::default(),
    )
    .unwrap();
    let device = std::sync::Arc::new(aicsim_driver::Device::open_simulated(aicsim_kmd::KmdConfig::default()).unwrap());
    let program = Program::from_image(compiled.image).unwrap();
    let act = Activation::new(device, &program).unwrap();
    let input = vec![0u8; program.inputs()[0].host_size_bytes() as usize];
    for _ in 0..3 {
        act.run(&[&input]).unwrap();
    }
    for seq in 1..=3 {
        let stats = act.run_profile(seq).unwrap_or_else(|e| panic!("run {seq}: {e}"));
        let record = act.run_record(seq).unwrap();
        assert_eq!((stats.start_cycle, stats.end_cycle), (record.start_cycle, record.end_cycle), "run {seq}");
    }
}

/// A link planted under the program's file name is replaced, not written through, and no
/// temporary file is left beside the program.
#[test]
fn a_link_planted_under_the_program_name_is_not_followed() {
    let dir = out_dir("aic-exec-planted");
    std::fs::create_dir_all(&dir).unwrap();
    let victim = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aic-exec-victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("programqpc.bin")).unwrap();
    let (code, _, err) = exec(&["-m=zoo:mobilenetv2".into(), format!("-aic-binary-dir={}", dir.display())]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(dir.join("programqpc.bin")).unwrap().file_type().is_file());
    aicsim_runtime::Program::from_path(&dir).expect("the program is whole");
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["programqpc.bin"]);
}

/// `-dump-supported-ops` lists what the compiler takes (and nothing needs a model).
#[test]
fn the_supported_operators_are_listed() {
    let (code, out, err) = exec(&["-dump-supported-ops".into()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("Supported ONNX operators"), "{out}");
    for op in ["Conv", "MatMul", "Softmax", "Gemm", "Constant", "Shape"] {
        assert!(lines.iter().any(|l| l.split_whitespace().next() == Some(op)), "{op} missing:\n{out}");
    }
    assert!(!lines.iter().any(|l| l.split_whitespace().next() == Some("NonMaxSuppression")), "{out}");
    let names: Vec<&str> = lines[1..].iter().filter_map(|l| l.split_whitespace().next()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "sorted by name");
}

/// A symbol the model does not have, and a -stats-batchsize the program does not run,
/// are each named in a warning (the seed's batch-4 line on a fixed-batch model).
#[test]
fn a_symbol_the_model_lacks_and_a_mismatched_stats_batch_are_warned_about() {
    let dir = out_dir("aic-exec-warnings");
    let args: Vec<String> = vec![
        "-m=zoo:mobilenetv2".into(),
        "-onnx-define-symbol=batch_size,4".into(),
        "-stats-batchsize=4".into(),
        "-aic-perf-metrics".into(),
        "-aic-profiling-type=stats".into(),
        format!("-aic-binary-dir={}", dir.display()),
    ];
    let (code, out, err) = exec(&args);
    assert_eq!(code, 0, "{err}");
    // -aic-profiling-type is answered, not silently dropped.
    assert!(
        out.contains(&format!(
            "Profiling (stats): the program can be profiled; take the profile with: aic-runner -t {} --aic-profiling-type stats",
            dir.display()
        )),
        "{out}"
    );
    assert!(
        err.contains("WARNING: -onnx-define-symbol=batch_size,4: the model has no symbolic dimension 'batch_size'"),
        "{err}"
    );
    assert!(err.contains("WARNING: -stats-batchsize=4 but the program runs 1 sample(s) per inference"), "{err}");
    // Per-sample figures use the batch the program runs.
    let macs = out.lines().find(|l| l.starts_with("MAC estimate:")).expect(&out);
    let per_inference: f64 = macs.split_whitespace().nth(2).unwrap().parse().unwrap();
    let per_sample: f64 = macs.split('(').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(per_inference, per_sample, "{macs}");
    assert!(dir.join("programqpc.bin").exists());
}

/// `n` calibration samples for zoo:small-cnn (`[1, 3, 16, 16]` f32) and their list file.
fn calibration_list(dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut list = String::new();
    for i in 0..n {
        let values: Vec<u8> = (0..3 * 16 * 16)
            .flat_map(|j| (((i * 7919 + j * 104_729) % 2000) as f32 / 1000.0 - 1.0).to_le_bytes())
            .collect();
        std::fs::write(dir.join(format!("sample{i}.raw")), values).unwrap();
        list.push_str(&format!("sample{i}.raw\n"));
    }
    std::fs::write(dir.join("list.txt"), list).unwrap();
    dir.join("list.txt")
}

#[test]
fn int8_quantisation_calibrates_dumps_and_loads_a_profile() {
    let dir = out_dir("aic-exec-int8");
    let list = calibration_list(&dir.join("cal"), 6);
    let args = |extra: &[String]| -> Vec<String> {
        let mut a = vec!["-m=zoo:small-cnn".to_string(), "-quantization-precision=Int8".into()];
        a.extend_from_slice(extra);
        a
    };
    let (code, out, err) = exec(&args(&[
        format!("-input-list-file={}", list.display()),
        "-quantization-calibration=Percentile".into(),
        "-percentile-calibration-value=99.9".into(),
        format!("-dump-profile={}/profile.json", dir.display()),
        format!("-aic-binary-dir={}/qpc", dir.display()),
        "-aic-perf-metrics".into(),
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("  HMX MACs:") && out.contains("    of them int8:"), "{out}");
    assert!(out.contains("Calibrated on 6 sample(s)") && out.contains("Quantised 5 of 5 layer(s) to int8"), "{out}");
    assert!(out.contains("Compiling model with INT8"), "{out}");
    assert!(out.contains(&format!("Writing file:{}/profile.json", dir.display())), "{out}");
    // The profile gives the same program without the samples.
    let (code, out, err) = exec(&args(&[
        format!("-load-profile={}/profile.json", dir.display()),
        "-quantization-calibration=Percentile".into(),
        "-percentile-calibration-value=99.9".into(),
        format!("-aic-binary-dir={}/qpc2", dir.display()),
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Loaded calibration profile"), "{out}");
    let a = std::fs::read(dir.join("qpc/programqpc.bin")).unwrap();
    assert_eq!(a, std::fs::read(dir.join("qpc2/programqpc.bin")).unwrap(), "same profile and options, same program");
    // Keeping the convolutions in float.
    let (code, out, err) = exec(&args(&[
        format!("-load-profile={}/profile.json", dir.display()),
        "-execute-nodes-in-fp16=Conv".into(),
        format!("-aic-binary-dir={}/qpc3", dir.display()),
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Quantised 1 of 5"), "{out}");
}

/// `-quantization-precision=Int16`: the same calibration, 16-bit activations, int8
/// weights; the program's products are int16 x int8 and its output follows the float
/// program's more closely than the int8 program's.
#[test]
fn int16_quantisation_compiles_int16_activations_that_beat_int8() {
    let dir = out_dir("aic-exec-int16");
    let list = calibration_list(&dir.join("cal"), 6);
    let input = dir.join("cal/sample5.raw");
    let compile = |name: &str, flags: &[&str]| -> (String, Vec<f32>) {
        let mut a = vec!["-m=zoo:small-cnn".to_string()];
        a.extend(flags.iter().map(|f| f.to_string()));
        if !flags.is_empty() {
            a.push(format!("-input-list-file={}", list.display()));
        }
        let qpc = dir.join(name);
        a.push(format!("-aic-binary-dir={}", qpc.display()));
        a.push("-aic-perf-metrics".into());
        let (code, out, err) = exec(&a);
        assert_eq!(code, 0, "{flags:?}: {err}");
        let outputs = dir.join(format!("{name}-out"));
        let args = ["-t", qpc.to_str().unwrap(), "--mode", "functional", "-n", "1", "-i", input.to_str().unwrap()];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.extend(["--write-output-dir".to_string(), outputs.display().to_string()]);
        let (code, _, err) = run(env!("CARGO_BIN_EXE_aic-runner"), &args);
        assert_eq!(code, 0, "{flags:?}: {err}");
        let file = std::fs::read_dir(&outputs).unwrap().next().unwrap().unwrap().path();
        let bytes = std::fs::read(file).unwrap();
        (out, bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
    };
    let (out16, y16) = compile("int16", &["-quantization-precision=Int16"]);
    assert!(out16.contains("Quantised 5 of 5 layer(s) to int16 activations x int8 weights"), "{out16}");
    assert!(out16.contains("Compiling model with INT16 (float layers in FP32) precision."), "{out16}");
    assert!(out16.contains("    of them int16 x int8:") && !out16.contains("    of them int8:"), "{out16}");
    let (out8, y8) = compile("int8", &["-quantization-precision=Int8"]);
    assert!(out8.contains("    of them int8:") && !out8.contains("int16 x int8"), "{out8}");
    let (_, y) = compile("float", &[]);
    let err = |q: &[f32]| q.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("small-cnn on a calibration sample: max error int8 {:.3e}, int16 {:.3e}", err(&y8), err(&y16));
    assert!(err(&y16) < err(&y8), "int16 {} is not closer to float than int8 {}", err(&y16), err(&y8));
}

#[test]
fn bad_quantisation_input_is_one_line_exit_2_and_writes_nothing() {
    let dir = out_dir("aic-exec-int8-errors");
    calibration_list(&dir.join("cal"), 2);
    std::fs::write(dir.join("cal/short.raw"), [0u8; 12]).unwrap();
    std::fs::write(dir.join("cal/missing.txt"), "sample0.raw\nnot_there.raw\n").unwrap();
    std::fs::write(dir.join("cal/short.txt"), "short.raw\n").unwrap();
    std::fs::write(dir.join("cal/empty.txt"), "# nothing\n\n").unwrap();
    let qpc = dir.join("qpc");
    let bad = |flags: &[String], want: &[&str]| {
        let mut a = vec![format!("-aic-binary-dir={}", qpc.display())];
        a.extend_from_slice(flags);
        let (code, out, err) = exec(&a);
        assert_eq!(code, 2, "{flags:?}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        for w in want {
            assert!(err.contains(w), "{flags:?}: '{err}' does not name '{w}'");
        }
        assert!(!qpc.exists(), "{flags:?} left {}", qpc.display());
    };
    let m = "-m=zoo:small-cnn".to_string();
    let int8 = "-quantization-precision=Int8".to_string();
    let list_of = |name: &str| format!("-input-list-file={}", dir.join("cal").join(name).display());
    bad(&[m.clone(), int8.clone(), list_of("missing.txt")], &["not_there.raw"]);
    bad(&[m.clone(), int8.clone(), list_of("short.txt")], &["short.raw", "12 bytes", "3072 bytes"]);
    bad(&[m.clone(), int8.clone(), list_of("empty.txt")], &["empty.txt", "no calibration samples"]);
    bad(&[m.clone(), int8.clone()], &["-input-list-file"]);
    bad(&[m.clone(), "-quantization-precision=Int16".into()], &["-input-list-file"]);
    bad(&[m.clone(), "-quantization-precision=Int4".into(), list_of("list.txt")], &["Int4", "Int8, Int16"]);
    bad(&[m.clone(), int8.clone(), list_of("list.txt"), "-quantization-precision-bias=Int4".into()], &["Int4"]);
    bad(&[m.clone(), int8.clone(), list_of("list.txt"), "-quantization-calibration=Magic".into()], &["Magic"]);
    // A profile of another model.
    let (code, _, err) = exec(&[
        m.clone(),
        list_of("list.txt"),
        format!("-dump-profile={}/p.json", dir.display()),
        format!("-aic-binary-dir={}/float", dir.display()),
    ]);
    assert_eq!(code, 0, "{err}");
    bad(
        &["-m=zoo:qdq-cnn".into(), int8.clone(), format!("-load-profile={}/p.json", dir.display())],
        &["p.json", "made for model"],
    );
    bad(&[m, "-node-precision-info=/nonexistent.yaml".into(), int8, list_of("list.txt")], &["nonexistent.yaml"]);
}
