//! A GPT-2-shaped decoder with a KV cache (`scripts/make_gpt2.py`, seeded random
//! weights) compiled as the card runs language models — one program, two entries: the
//! prefill over the prompt and the one-token decode step, sharing the cache as retained
//! state in device DDR — and run step by step through the whole stack against
//! onnxruntime's greedy generation (`scripts/gpt2_reference.py`, the cache fed back by
//! the host there). Only token ids and positions go to the device; only logits come
//! back.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use aicsim_abi::container::IoDirection;
use aicsim_compiler::{compile_file, CompileOptions};
use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use aicsim_runtime::samples::bytes_f32;
use aicsim_runtime::{Activation, Program};

const PROMPT: [i64; 8] = [3, 14, 15, 92, 65, 35, 89, 79];
const STEPS: usize = 16;
const CTX: i64 = 64;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

/// The model, and onnxruntime's tokens and logits for every step. Written once per test
/// process: the tests run concurrently and must not rewrite files another is reading.
fn reference(python: &str) -> (PathBuf, Vec<i64>, Vec<Vec<f32>>) {
    static ONCE: OnceLock<(PathBuf, Vec<i64>, Vec<Vec<f32>>)> = OnceLock::new();
    ONCE.get_or_init(|| write_reference(python)).clone()
}

fn write_reference(python: &str) -> (PathBuf, Vec<i64>, Vec<Vec<f32>>) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gpt2-kv");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("gpt2.onnx");
    let ok = Command::new(python).arg(script("make_gpt2.py")).arg(&model).status().expect("run python").success();
    assert!(ok, "make_gpt2.py failed");
    let out = dir.join("reference.json");
    let prompt: Vec<String> = PROMPT.iter().map(i64::to_string).collect();
    let ok = Command::new(python)
        .arg(script("gpt2_reference.py"))
        .arg(&model)
        .arg(&out)
        .args(["--prompt", &prompt.join(","), "--generate", &STEPS.to_string(), "--ctx", &CTX.to_string()])
        .status()
        .expect("run python")
        .success();
    assert!(ok, "gpt2_reference.py failed");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let tokens = doc["tokens"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap()).collect();
    let logits = doc["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
        .collect();
    (model, tokens, logits)
}

fn options(cores: u32, fp16: bool) -> CompileOptions {
    let spec =
        |seq: i64| HashMap::from([("batch_size".to_string(), 1), ("seq_len".into(), seq), ("ctx_len".into(), CTX)]);
    CompileOptions {
        cores,
        fp16,
        retained_state: true,
        specializations: vec![spec(PROMPT.len() as i64), spec(1)],
        ..CompileOptions::default()
    }
}

fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn argmax(v: &[f32]) -> i64 {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best }) as i64
}

/// Greedy generation on the device: the prefill entry over the prompt, then the decode
/// entry once per token. Returns the tokens and each step's logits.
fn generate(activation: &Activation, steps: usize) -> (Vec<i64>, Vec<Vec<f32>>) {
    let positions: Vec<i64> = (0..PROMPT.len() as i64).collect();
    let mut out = activation.run_entry(0, &[&i64_bytes(&PROMPT), &i64_bytes(&positions)]).unwrap();
    let (mut tokens, mut logits) = (Vec::new(), Vec::new());
    for step in 0..steps {
        let l = bytes_f32(&out[0]);
        let t = argmax(&l);
        tokens.push(t);
        logits.push(l);
        if step + 1 < steps {
            let at = (PROMPT.len() + step) as i64;
            out = activation.run_entry(1, &[&i64_bytes(&[t]), &i64_bytes(&[at])]).unwrap();
        }
    }
    (tokens, logits)
}

#[test]
fn greedy_generation_with_the_kv_cache_on_the_device_matches_onnxruntime() {
    let Some(python) = common::python() else { return };
    let (model, want_tokens, want_logits) = reference(&python);
    let device = Arc::new(Device::open_simulated(KmdConfig::default()).unwrap());
    for (cores, fp16) in [(1, false), (2, false), (2, true)] {
        let compiled = compile_file(&model, &options(cores, fp16)).unwrap();
        let image = &compiled.image;
        assert_eq!(image.entry_count(), 2, "a prefill and a decode entry");
        // The cache is state: two tensors per layer, never a host binding.
        assert_eq!(image.state().count(), 4);
        assert!(image.bindings.iter().all(|b| b.direction == IoDirection::State || !b.name.starts_with("past_")));
        let inputs: Vec<&str> = image.entry_inputs(1).map(|b| b.name.as_str()).collect();
        assert_eq!(inputs, ["input_ids", "position_ids"]);
        let program = Program::from_image(compiled.image).unwrap();
        let activation = Activation::new(device.clone(), &program).unwrap();
        let (tokens, logits) = generate(&activation, STEPS);
        let mut worst = 0f32;
        for (got, want) in logits.iter().zip(&want_logits) {
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in got.iter().zip(want) {
                worst = worst.max((a - b).abs() / scale);
            }
        }
        eprintln!("{cores} core(s), fp16 {fp16}: tokens {tokens:?}, worst logit error {worst:.2e} of the largest");
        if fp16 {
            // fp16 rounds every layer; the logits stay within 2% of the largest.
            assert!(worst < 2e-2, "fp16 logits off by {worst} of the largest");
            // Measured: the same 16 tokens (1.6e-3 of the largest logit at most).
            assert_eq!(tokens, want_tokens, "fp16 greedy tokens differ from onnxruntime's");
        } else {
            assert_eq!(tokens, want_tokens, "greedy tokens differ from onnxruntime's");
            assert!(worst < 1e-4, "f32 logits off by {worst} of the largest");
        }
        // A second sequence on the same activation starts over: the mask hides the first
        // sequence's rows past the new positions.
        let (again, _) = generate(&activation, 4);
        assert_eq!(again[..], tokens[..4], "a new sequence depends on the last one's cache");
    }
}

/// A position past the cache's capacity, or a token id past the vocabulary, is a
/// named error — the layer, and what was out of range — not an access outside the
/// cache or the table.
#[test]
fn a_position_past_the_cache_or_a_token_past_the_vocabulary_is_a_named_fault() {
    let Some(python) = common::python() else { return };
    let (model, _, _) = reference(&python);
    let device = Arc::new(Device::open_simulated(KmdConfig::default()).unwrap());
    let program = Program::from_image(compile_file(&model, &options(2, false)).unwrap().image).unwrap();
    let activation = Activation::new(device, &program).unwrap();
    let e = activation.run_entry(1, &[&i64_bytes(&[1]), &i64_bytes(&[CTX])]).unwrap_err().to_string();
    assert!(e.contains("RetainedState' (ScatterND)") && e.contains("outside the cache's 64 rows"), "{e}");
    let e = activation.run_entry(1, &[&i64_bytes(&[97]), &i64_bytes(&[0])]).unwrap_err().to_string();
    eprintln!("{e}");
    assert!(e.contains("(Gather)") && e.contains("outside the table's 97 rows"), "{e}");
    let e = activation.run_entry(0, &[&i64_bytes(&[-1; 8]), &i64_bytes(&[0; 8])]).unwrap_err().to_string();
    assert!(e.contains("(Gather)"), "{e}");
    // The activation goes on: the next valid step runs.
    activation.run_entry(1, &[&i64_bytes(&[1]), &i64_bytes(&[0])]).unwrap();
}

fn tool(bin: &str, args: &[String]) -> (i32, String, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The tools as a user drives them: aic-exec with `-retained-state` and a
/// specialisation file, aic-runner's generation mode, and every bad input refused with
/// exit 2 and one line naming it.
#[test]
fn the_tools_compile_and_generate_and_refuse_bad_input_by_name() {
    let Some(python) = common::python() else { return };
    let (model, _, _) = reference(&python);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gpt2-tools");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        format!("-network-specialization-config={}", p.display())
    };
    let good = spec(
        "specs.json",
        r#"{"specializations": [{"batch_size": "1", "seq_len": "8", "ctx_len": "64"}, {"batch_size": 1, "seq_len": 1, "ctx_len": 64}]}"#,
    );
    let exec = |extra: &[String], out: &str| {
        let mut args = vec![format!("-m={}", model.display()), format!("-aic-binary-dir={}", dir.join(out).display())];
        args.extend(extra.iter().cloned());
        args.push("-compile-only".into());
        tool(env!("CARGO_BIN_EXE_aic-exec"), &args)
    };
    let (code, _, err) = exec(&["-retained-state".into(), good.clone(), "-aic-num-cores=2".into()], "qpc");
    assert_eq!(code, 0, "{err}");
    let qpc = dir.join("qpc").display().to_string();
    let runner = |extra: &[&str]| {
        let mut args = vec!["-t".to_string(), qpc.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        tool(env!("CARGO_BIN_EXE_aic-runner"), &args)
    };
    let (code, out, err) =
        runner(&["--prompt-len", "8", "--generate", "16", "-a", "2", "-n", "4", "--mode", "functional"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Sequences: 4, tokens: 64 in "), "{out}");
    assert!(
        out.contains("Time to first token (ms): mean ") && out.contains("Time per output token (ms): mean "),
        "{out}"
    );
    // Bad generation requests.
    for (args, expect) in [
        (vec!["--prompt-len", "9", "--generate", "4"], "needs a program with a 9-token prefill entry"),
        (vec!["--prompt-len", "8", "--generate", "60"], "writes 67 positions into the cache, which holds 64"),
        (vec!["--prompt-len", "8", "--generate", "4", "-S", "2"], "an activation holds one KV cache"),
        (vec!["--generate", "4"], "--prompt-len and --generate go together"),
        (vec!["--prompt-len", "8", "--generate", "0"], "must be at least 1"),
        (vec!["--prompt-len", "8", "--generate", "4", "--scenario", "offline"], "--scenario is not available"),
    ] {
        let (code, out, err) = runner(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(expect) && err.lines().count() == 1, "{args:?}: {err}");
    }
    // Bad compile requests.
    for (extra, expect) in [
        (vec![spec("missing.json", "").replace("missing.json", "absent.json")], "absent.json: No such file"),
        (vec![spec("bad.json", "{")], "not JSON"),
        (vec![spec("empty.json", r#"{"specializations": []}"#)], "expected {\"specializations\""),
        (vec![spec("zero.json", r#"{"specializations": [{"seq_len": "0"}]}"#)], "'seq_len' must be a positive integer"),
        (
            vec![
                "-retained-state".into(),
                spec(
                    "ctx.json",
                    r#"{"specializations": [{"batch_size": 1, "seq_len": 8, "ctx_len": 64}, {"batch_size": 1, "seq_len": 1, "ctx_len": 32}]}"#,
                ),
            ],
            "retained state different shapes",
        ),
        (vec!["-retained-state=yes".into()], "takes no value"),
    ] {
        let (code, out, err) = exec(&extra, "bad");
        assert_eq!(code, 2, "{extra:?}: {out}{err}");
        assert!(err.contains(expect), "{extra:?}: {err}");
        assert!(!dir.join("bad").join("programqpc.bin").exists(), "nothing written for {extra:?}");
    }
    // A model with no state to retain.
    let bert = dir.join("bert.onnx");
    assert!(Command::new(&python).arg(script("make_bert.py")).arg(&bert).status().unwrap().success());
    let (code, _, err) = tool(
        env!("CARGO_BIN_EXE_aic-exec"),
        &[
            format!("-m={}", bert.display()),
            format!("-aic-binary-dir={}", dir.join("b").display()),
            "-retained-state".into(),
            "-onnx-define-symbol=batch_size,1".into(),
            "-compile-only".into(),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("-retained-state") && err.contains("no output is an input updated in place"), "{err}");
}

/// aic-configurator searches a language model's generation for tokens/s under a
/// time-per-token bound, and leaves the best program with the specialisations it was
/// compiled with; the printed aic-runner line runs it.
#[test]
fn the_configurator_searches_token_rate_under_a_time_per_token_bound() {
    let Some(python) = common::python() else { return };
    let (model, _, _) = reference(&python);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gpt2-configurator");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let search = dir.join("search.json");
    std::fs::write(
        &search,
        r#"{"max_func_eval": 10, "objective": "maximize_token_rate",
            "params": {"cores": {"min": 1, "max": 4}, "instances": {"min": 1, "max": 4}, "bs": {"min": 1, "max": 4}},
            "initial_values": [{"cores": 2, "instances": 1, "bs": 1}]}"#,
    )
    .unwrap();
    let specs = dir.join("specs.json");
    std::fs::write(
        &specs,
        r#"{"specializations": [{"batch_size": 1, "seq_len": 8, "ctx_len": 64}, {"batch_size": 1, "seq_len": 1, "ctx_len": 64}]}"#,
    )
    .unwrap();
    let out = dir.join("out");
    let args = |bound: &str| -> Vec<String> {
        vec![
            model.display().to_string(),
            "onnx".into(),
            format!("-optimized-config-search={}", search.display()),
            "-onnx-define-symbol-batch-size=batch_size".into(),
            "-retained-state".into(),
            format!("-network-specialization-config={}", specs.display()),
            "-prompt-len=8".into(),
            "-generate=16".into(),
            format!("-max-time-per-token-ms={bound}"),
            format!("-output-dir={}", out.display()),
            "-compiled-models=1".into(),
        ]
    };
    let (code, text, err) = tool(env!("CARGO_BIN_EXE_aic-configurator"), &args("1"));
    assert_eq!(code, 0, "{text}{err}");
    let best = text.lines().find(|l| l.starts_with("Best configuration:")).expect(&text);
    assert!(best.contains("tokens/s, time per output token mean"), "{best}");
    let run_line = text.lines().skip_while(|l| !l.starts_with("Run it with:")).nth(1).expect(&text).trim().to_string();
    assert!(run_line.contains("--prompt-len 8 --generate 16"), "{run_line}");
    // The printed runner line, shortened, runs the program left behind.
    let mut words: Vec<String> = run_line.split_whitespace().skip(1).map(String::from).collect();
    let time = words.iter().position(|w| w == "--time").unwrap();
    words.splice(time..time + 2, ["-n".to_string(), "4".to_string()]);
    let (code, text2, err) = tool(env!("CARGO_BIN_EXE_aic-runner"), &words);
    assert_eq!(code, 0, "{text2}{err}");
    assert!(text2.contains("Time per output token"), "{text2}");
    // The best predicted rate equals what aic-runner measures for the same deployment
    // (the same engine, the same seed), within the difference of run lengths.
    let predicted: f64 = best.split(": ").nth(2).unwrap().split(' ').next().unwrap().parse().unwrap();
    let measured: f64 = text2
        .lines()
        .find(|l| l.starts_with("Sequences:"))
        .unwrap()
        .split(": ")
        .nth(3)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((predicted / measured - 1.0).abs() < 0.1, "predicted {predicted} tokens/s, aic-runner {measured}");
    // A bound nothing meets is said, and nothing is left as if it were met.
    let _ = std::fs::remove_dir_all(&out);
    let (code, text, err) = tool(env!("CARGO_BIN_EXE_aic-configurator"), &args("0.001"));
    assert_eq!(code, 2, "{text}{err}");
    assert!(err.contains("no configuration evaluated keeps the time per token within 0.001 ms"), "{err}");
    assert!(!out.join("results.csv").exists(), "nothing written when no configuration qualifies");
}
