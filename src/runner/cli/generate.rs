//! `aic-runner --prompt-len P --generate N`: language-model generation as the card runs
//! it. The program (compiled with `-retained-state` and a prefill and a decode
//! specialisation) keeps each sequence's KV cache in device DDR; per sequence the host
//! runs the prefill entry over a P-token prompt, takes the argmax of its logits, and
//! runs the decode entry once per further token at the next position. `-a` activations
//! generate that many sequences at once (an activation holds one cache, so `-S` is 1);
//! `-n` counts sequences, `--time` bounds the time new ones start. Every figure is on
//! the simulated clock ([`crate::generation`]).

use aicsim_runtime::{HostModel, InferenceSet, Program};
use serde::Serialize;

use super::{open_device, Args, Clock, Plan};
use crate::generation::{self, Figures, Summary};

/// Flags that mean nothing in a generation run are refused, not ignored.
fn check_flags(args: &Args) -> Result<(u32, usize), String> {
    let (Some(n), Some(p)) = (args.generate, args.prompt_len) else {
        return Err(String::from("--prompt-len and --generate go together"));
    };
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

/// The `--json` document of a generation run.
#[derive(Serialize)]
struct Report {
    program: String,
    prompt_len: usize,
    tokens_per_sequence: u32,
    batch: usize,
    activations: usize,
    #[serde(flatten)]
    figures: Figures,
}

pub(super) fn run(args: &Args, plan: &Plan, program: &Program) -> Result<(), String> {
    let (n, prompt_len) = check_flags(args)?;
    let gen = generation::plan(program, prompt_len, n, args.seed)?;
    let batch = gen.prompt.len() / prompt_len;
    let device = open_device(args, plan, program)?;
    let set = InferenceSet::new(device, program, plan.activations, 1).map_err(|e| e.to_string())?;
    let figures = generation::run(&set, plan.limit.clone(), &HostModel::default(), &gen)?;
    let late = set.activations()[0].device().kmd().late_elements();
    if late > 0 {
        eprintln!("aic-runner: warning: {late} request elements reached the device later than their simulated time");
    }
    let report = Report {
        program: program.name().into(),
        prompt_len,
        tokens_per_sequence: n,
        batch,
        activations: plan.activations,
        figures,
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("Writing file:{}", path.display());
    }
    println!(
        "Generation: '{}', prompt {prompt_len} tokens, {n} tokens per sequence, batch {batch}, {} concurrent sequence(s)",
        report.program, plan.activations
    );
    println!(" ---- Stats ----");
    println!(
        "Sequences: {}, tokens: {} in {:.3} s: {:.1} tokens/s ({:.1} tokens/s per sequence while decoding)",
        figures.sequences,
        figures.tokens,
        figures.elapsed_s,
        figures.tokens_per_sec,
        1e3 / figures.tpot_ms.mean.max(1e-12)
    );
    let line = |what: &str, m: &Summary| {
        println!("{what} (ms): mean {:.3} p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}", m.mean, m.p50, m.p90, m.p99, m.max)
    };
    line("Time to first token", &figures.ttft_ms);
    if n > 1 {
        line("Time per output token", &figures.tpot_ms);
    }
    Ok(())
}
