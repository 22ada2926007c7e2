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

mod common;

use std::path::Path;
use std::process::Command;

/// The seed's BERT compile line on an exported-layout BERT-base, then aic-runner with 7
/// instances x set size 1 on the simulated clock.
#[test]
fn bert_base_as_exported_compiles_with_the_seeds_line_and_runs_in_timing_mode() {
    let Some(python) = common::python_release() else { return };
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

/// GPT-2-small shape (12 layers, 768 wide, 12 heads, vocabulary 50257) with a KV cache,
/// as `scripts/make_gpt2.py` writes it, compiled as the card runs language models (one
/// program, a 128-token prefill and a 1-token decode entry, the cache retained in DDR),
/// then `aic-runner --prompt-len 128 --generate 32`. A decode step streams every weight
/// and reads the cache: it can be no faster than those bytes over the DDR's 136 GB/s.
#[test]
fn gpt2_small_generates_with_per_token_figures_no_faster_than_ddr_allows() {
    let Some(python) = common::python_release() else { return };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gpt2-small");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("gpt2-small.onnx");
    let status = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make_gpt2.py"))
        .arg(&model)
        .args(["--layers", "12", "--embed", "768", "--heads", "12", "--vocab", "50257", "--positions", "1024"])
        .arg("--constant-weights")
        .status()
        .expect("run python");
    assert!(status.success(), "make_gpt2.py failed");
    const CTX: u64 = 256;
    let specs = dir.join("specializations.json");
    std::fs::write(
        &specs,
        format!(
            r#"{{"specializations": [{{"batch_size": "1", "seq_len": "128", "ctx_len": "{CTX}"}},
                {{"batch_size": "1", "seq_len": "1", "ctx_len": "{CTX}"}}]}}"#
        ),
    )
    .unwrap();
    let qpc = dir.join("qpc");
    let out = Command::new(env!("CARGO_BIN_EXE_aic-exec"))
        .arg(format!("-m={}", model.display()))
        .args(["-retained-state", "-convert-to-fp16", "-aic-num-cores=4", "-compile-only"])
        .arg(format!("-network-specialization-config={}", specs.display()))
        .arg(format!("-aic-binary-dir={}", qpc.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let generate = |extra: &[&str]| -> (f64, f64, f64) {
        let run = Command::new(env!("CARGO_BIN_EXE_aic-runner"))
            .arg("-t")
            .arg(&qpc)
            .args(["--prompt-len", "128", "--generate", "32"])
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{text}{}", String::from_utf8_lossy(&run.stderr));
        eprintln!("gpt2-small {extra:?}:\n{text}");
        let mean = |prefix: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(prefix)).expect(&text);
            line.split("mean ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap()
        };
        let tokens = text.lines().find(|l| l.starts_with("Sequences:")).expect(&text);
        let rate: f64 = tokens.split(": ").nth(3).unwrap().split(' ').next().unwrap().parse().unwrap();
        (mean("Time to first token"), mean("Time per output token"), rate)
    };
    let (ttft, tpot, rate) = generate(&["-n", "4"]);
    // Bytes a decode step must read: the blocks' weights, the vocabulary projection, the
    // cache (keys and values, 12 layers), all fp16.
    let (e, v, layers) = (768u64, 50257u64, 12u64);
    let weights = layers * 12 * e * e + e * v;
    let cache = 2 * layers * CTX * e;
    let bound_ms = (weights + cache) as f64 * 2.0 / 136e9 * 1e3;
    eprintln!("decode {tpot:.3} ms per token against the DDR bound {bound_ms:.3} ms ({:.2}x)", tpot / bound_ms);
    assert!(tpot >= bound_ms, "a decode step of {tpot} ms beats the DDR bound of {bound_ms} ms");
    assert!(tpot < 3.0 * bound_ms, "a decode step of {tpot} ms is far from its DDR bound {bound_ms} ms");
    assert!(ttft > tpot, "the 128-token prefill ({ttft} ms) takes longer than one decode step ({tpot} ms)");
    assert!(rate > 0.0);
    // Four sequences at once share the DDR: together no faster than its bound allows.
    let four = generate(&["-n", "8", "-a", "4"]);
    let (_, tpot4, rate4) = four;
    // The simulated clock: the same command gives the same figures (a decode step's
    // promise once counted on a prompt's pre-processing, and the device ran ahead).
    assert_eq!(generate(&["-n", "8", "-a", "4"]), four, "the same generation gave other figures");
    let ceiling = 1e3 / bound_ms;
    eprintln!("-a 4: {rate4:.1} tokens/s ({tpot4:.3} ms per token), DDR ceiling {ceiling:.1} tokens/s");
    assert!(rate4 > rate, "four sequences ({rate4} tokens/s) beat one ({rate})");
    assert!(rate4 <= ceiling * 1.05, "four sequences ({rate4} tokens/s) beat the DDR ceiling {ceiling}");
    std::fs::remove_dir_all(&dir).unwrap();
}
