//! Transformers as they are exported, at full size: BERT-base (12 layers, hidden 768, 12
//! heads, vocabulary 30522) with int64 `input_ids`, `attention_mask` and
//! `token_type_ids` of symbolic batch x sequence, written by `scripts/make_bert.py
//! --exported` (weights as ConstantOfShape: a small file; the numerics of the exported
//! layout are checked against onnxruntime on a 2-layer model in `tests/onnx_models.rs`),
//! compiled with the seed's line by the real `aic-exec` binary and run by the real
//! `aic-runner` in timing mode.
//!
//! Release only (a 90-GMAC-per-inference program): `scripts/test.sh` runs it with
//! `--release`; debug builds skip it.

use std::path::Path;
use std::process::Command;

fn python() -> Option<String> {
    if cfg!(debug_assertions) {
        eprintln!("skipped in debug builds: scripts/test.sh runs it with --release");
        return None;
    }
    let Ok(python) = std::env::var("AICSIM_PYTHON") else {
        assert!(std::env::var("AICSIM_REQUIRE_ONNX").is_err(), "AICSIM_REQUIRE_ONNX is set but AICSIM_PYTHON is not");
        eprintln!("skipped: run scripts/test.sh, which installs onnx");
        return None;
    };
    Some(python)
}

/// The seed's BERT compile line on an exported-layout BERT-base, then aic-runner with 7
/// instances x set size 1 on the simulated clock.
#[test]
fn bert_base_as_exported_compiles_with_the_seeds_line_and_runs_in_timing_mode() {
    let Some(python) = python() else { return };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bert-base-exported");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("bert-base.onnx");
    let status = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make_bert.py"))
        .arg(&model)
        .args(["--exported", "--symbolic-seq", "--constant-weights", "--layers", "12", "--hidden", "768"])
        .args(["--heads", "12", "--seq", "128", "--vocab", "30522"])
        .status()
        .expect("run python");
    assert!(status.success(), "make_bert.py failed");
    let qpc = dir.join("qpc");
    let out = Command::new(env!("CARGO_BIN_EXE_aic-exec"))
        .arg(format!("-m={}", model.display()))
        .args(["-onnx-define-symbol=sequence_length,128", "-onnx-define-symbol=batch_size,8", "-convert-to-fp16"])
        .args(["-aic-num-cores=2", "-aic-hw", "-aic-hw-version=2.0", "-compile-only", "-aic-perf-metrics"])
        .arg(format!("-aic-binary-dir={}", qpc.display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    // BERT-base at sequence 128: 11.2 GMAC per sample (the usual figure), batch 8.
    let macs = text.lines().find(|l| l.starts_with("MAC estimate:")).expect(&text);
    assert!(macs.contains("(11.2"), "{macs}");
    assert!(text.lines().any(|l| l.starts_with("gather_") && l.contains("Gather")), "embeddings gathered: {text}");
    let run = Command::new(env!("CARGO_BIN_EXE_aic-runner"))
        .arg("-t")
        .arg(&qpc)
        .args(["-a", "7", "-S", "1", "--time", "2"])
        .output()
        .unwrap();
    let run_text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{run_text}{}", String::from_utf8_lossy(&run.stderr));
    let stats = run_text.lines().find(|l| l.starts_with("InferenceCnt ")).expect(&run_text);
    eprintln!("BERT-base as exported, seq 128, batch 8, 2 cores, fp16, -a 7 -S 1: {stats}");
    assert!(stats.contains("BatchSize 8 "), "{stats}");
    let rate: f64 = stats.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(rate > 0.0, "{stats}");
    std::fs::remove_dir_all(&dir).unwrap();
}
