//! `aic-runner --prompt-len P --generate N`: language-model generation as the card runs
//! it. The program (compiled with `-retained-state` and a prefill and a decode
//! specialisation) keeps each sequence's KV cache in device DDR; per sequence the host
//! runs the prefill entry over a P-token prompt, takes the argmax of its logits, and
//! runs the decode entry once per further token at the next position. `-a` activations
//! generate that many sequences at once (an activation holds one cache, so `-S` is 1);
//! `-n` counts sequences, `--time` bounds the time new ones start. Every figure is on
//! the simulated clock: time to first token (request to the prefill's logits back in
//! the application), time per output token (one decode step's logits to the next's), and
//! tokens per second over the run.

use std::collections::HashMap;

use aicsim_runtime::{Completion, Generation, HostModel, InferenceSet, Program};
use parking_lot::Mutex;
use serde::Serialize;

use super::{open_device, splitmix, Args, Clock, Plan};
use crate::runner;

/// The prefill and decode entries of `program` for prompts of `prompt_len` tokens, and
/// the batch: the entry whose `input_ids` is one token long decodes, the other prefills.
fn entries(program: &Program, prompt_len: usize) -> Result<(usize, usize, usize), String> {
    let image = program.image();
    let seq_of = |e: usize| {
        image
            .entry_inputs(e)
            .find(|b| b.name == "input_ids")
            .map(|b| (b.shape[0] as usize, *b.shape.last().unwrap_or(&1)))
    };
    let shapes: Vec<Option<(usize, u32)>> = (0..image.entry_count()).map(seq_of).collect();
    let decode = shapes.iter().position(|s| matches!(s, Some((_, 1))));
    let prefill = shapes.iter().position(|s| matches!(s, Some((_, n)) if *n as usize == prompt_len && prompt_len > 1));
    let (Some(prefill), Some(decode)) = (prefill, decode) else {
        let have: Vec<String> = shapes
            .iter()
            .enumerate()
            .map(|(e, s)| match s {
                Some((_, n)) => format!("'{}' takes {n} tokens", image.entry_name(e)),
                None => format!("'{}' has no input_ids", image.entry_name(e)),
            })
            .collect();
        return Err(format!(
            "--prompt-len {prompt_len}: generation needs a program with a {prompt_len}-token prefill entry and a \
             1-token decode entry (aic-exec -retained-state -network-specialization-config=...); '{}' has {}: {}",
            program.name(),
            image.entry_count(),
            have.join(", ")
        ));
    };
    let batch = shapes[prefill].map_or(1, |s| s.0);
    if image.state().next().is_none() {
        return Err(format!("'{}' keeps no retained state (compile it with -retained-state)", program.name()));
    }
    Ok((prefill, decode, batch))
}

/// The positions the program's cache holds: the third axis of its `[B, H, C, D]` state.
fn cache_len(program: &Program) -> Option<u64> {
    program.image().state().filter(|b| b.shape.len() == 4).map(|b| u64::from(b.shape[2])).min()
}

/// Flags that mean nothing in a generation run are refused, not ignored.
fn check_flags(args: &Args) -> Result<(u32, usize), String> {
    let (Some(n), Some(p)) = (args.generate, args.prompt_len) else {
        return Err(String::from("--prompt-len and --generate go together"));
    };
    if n == 0 || p == 0 {
        return Err(String::from("--prompt-len and --generate must be at least 1"));
    }
    let refused = [
        ("--aic-profiling-type", !args.profiling_types.is_empty()),
        ("--write-output-dir", args.write_output_dir.is_some()),
        ("--report", args.report.is_some()),
        ("--scenario", args.scenario.is_some()),
        ("-i", !args.input_files.is_empty()),
        ("--clock wall", args.clock == Clock::Wall),
    ];
    if let Some((flag, _)) = refused.iter().find(|(_, given)| *given) {
        return Err(format!("{flag} is not available with --generate (generation reports per-token figures)"));
    }
    if args.set_size.is_some_and(|s| s != 1) {
        return Err(format!(
            "-S {}: an activation holds one KV cache, so it generates one sequence at a time; use -a for concurrent sequences",
            args.set_size.unwrap_or(1)
        ));
    }
    Ok((n, p))
}

/// The figures of a generation run.
#[derive(Serialize)]
struct Report {
    program: String,
    prompt_len: usize,
    tokens_per_sequence: u32,
    batch: usize,
    activations: usize,
    sequences: u64,
    tokens: u64,
    elapsed_s: f64,
    tokens_per_sec: f64,
    ttft_ms: Summary,
    tpot_ms: Summary,
}

#[derive(Serialize)]
struct Summary {
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

fn summary(v: &[f64]) -> Summary {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (p50, p90, p99, max) = runner::round_trip_percentiles(&sorted);
    Summary { mean: v.iter().sum::<f64>() / v.len().max(1) as f64, p50, p90, p99, max }
}

#[derive(Default)]
struct Steps {
    ttft_ms: Vec<f64>,
    tpot_ms: Vec<f64>,
    /// When each sequence's latest step was back with the application.
    last: HashMap<u64, u64>,
    sequences: u64,
    steps: u64,
    error: Option<String>,
}

pub(super) fn run(args: &Args, plan: &Plan, program: &Program) -> Result<(), String> {
    let (n, prompt_len) = check_flags(args)?;
    let (prefill, decode, batch) = entries(program, prompt_len)?;
    if let Some(c) = cache_len(program) {
        // The last token generated needs no room: its logits are the output.
        let need = prompt_len as u64 + u64::from(n) - 1;
        if need > c {
            return Err(format!(
                "--prompt-len {prompt_len} --generate {n}: a sequence writes {need} positions into the cache, \
                 which holds {c} (compile with a larger ctx_len)"
            ));
        }
    }
    let vocab = program
        .entry_outputs(decode)
        .first()
        .map(|b| (b.elements() as usize / batch).max(1))
        .ok_or("the decode entry has no output")?;
    let mut state = args.seed;
    let prompt: Vec<i64> = (0..batch * prompt_len).map(|_| (splitmix(&mut state) % vocab as u64) as i64).collect();
    let gen = Generation { prefill, decode, prompt, prompt_len, decode_steps: n - 1 };
    let device = open_device(args, plan, program)?;
    let set = InferenceSet::new(device, program, plan.activations, 1).map_err(|e| e.to_string())?;
    let steps = Mutex::new(Steps::default());
    let on_step = |done: &Completion<'_>| {
        let mut s = steps.lock();
        if let Some(e) = done.error {
            s.error.get_or_insert_with(|| e.to_string());
            return;
        }
        let t = &done.timestamps;
        s.steps += 1;
        match done.step {
            Some(0) => {
                s.sequences += 1;
                s.ttft_ms.push(t.returned.saturating_sub(t.enqueue) as f64 / 1e6);
            }
            _ => {
                let before = s.last.get(&done.index).copied().unwrap_or(t.enqueue);
                s.tpot_ms.push(t.returned.saturating_sub(before) as f64 / 1e6);
            }
        }
        s.last.insert(done.index, t.returned);
    };
    let run =
        set.run_generation(plan.limit.clone(), &HostModel::default(), &gen, on_step).map_err(|e| e.to_string())?;
    let s = steps.into_inner();
    if let Some(e) = s.error {
        return Err(e);
    }
    let elapsed = run.elapsed.as_secs_f64();
    let tokens = s.steps * batch as u64;
    let report = Report {
        program: program.name().into(),
        prompt_len,
        tokens_per_sequence: n,
        batch,
        activations: plan.activations,
        sequences: s.sequences,
        tokens,
        elapsed_s: elapsed,
        tokens_per_sec: tokens as f64 / elapsed.max(1e-12),
        ttft_ms: summary(&s.ttft_ms),
        tpot_ms: summary(&s.tpot_ms),
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("Writing file: {}", path.display());
    }
    println!(
        "Generation: '{}', prompt {prompt_len} tokens, {n} tokens per sequence, batch {batch}, {} concurrent sequence(s)",
        report.program, plan.activations
    );
    println!(" ---- Stats ----");
    println!(
        "Sequences: {}, tokens: {} in {:.3} s: {:.1} tokens/s ({:.1} tokens/s per sequence while decoding)",
        report.sequences,
        report.tokens,
        elapsed,
        report.tokens_per_sec,
        batch as f64 * 1e3 / report.tpot_ms.mean.max(1e-12)
    );
    let line = |what: &str, m: &Summary| {
        println!("{what} (ms): mean {:.3} p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}", m.mean, m.p50, m.p90, m.p99, m.max)
    };
    line("Time to first token", &report.ttft_ms);
    if n > 1 {
        line("Time per output token", &report.tpot_ms);
    }
    Ok(())
}
