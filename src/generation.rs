//! Language-model generation as the card runs it, shared by `aic-runner --generate`,
//! the predictor and the configurator: which entries of a program prefill and decode,
//! the run itself ([`InferenceSet::run_generation`] on the simulated clock), and the
//! figures a user of such a model reads — time to first token (the request until the
//! prefill's logits are back with the application), time per output token (one decode
//! step's logits back until the next's) and tokens per second over the run.

use std::collections::HashMap;

use aicsim_runtime::{Completion, Generation, HostModel, InferenceSet, Program, RunLimit};
use parking_lot::Mutex;
use serde::Serialize;

/// The prefill and decode entries of `program` for prompts of `prompt_len` tokens, and
/// its batch: the entry whose `input_ids` is one token long decodes, the one whose
/// `input_ids` is `prompt_len` long prefills.
pub fn entries(program: &Program, prompt_len: usize) -> Result<(usize, usize, usize), String> {
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
    if image.state().next().is_none() {
        return Err(format!("'{}' keeps no retained state (compile it with -retained-state)", program.name()));
    }
    Ok((prefill, decode, shapes[prefill].map_or(1, |s| s.0)))
}

/// The positions the program's cache holds: the third axis of its `[B, H, C, D]` state.
pub fn cache_len(program: &Program) -> Option<u64> {
    program.image().state().filter(|b| b.shape.len() == 4).map(|b| u64::from(b.shape[2])).min()
}

/// A generation of `tokens` tokens per sequence after a `prompt_len`-token prompt
/// (seeded token ids), checked against the program: its entries, and room in its cache.
pub fn plan(program: &Program, prompt_len: usize, tokens: u32, seed: u64) -> Result<Generation, String> {
    if tokens == 0 || prompt_len == 0 {
        return Err(String::from("--prompt-len and --generate must be at least 1"));
    }
    let (prefill, decode, batch) = entries(program, prompt_len)?;
    if let Some(c) = cache_len(program) {
        // The last token generated needs no room: its logits are the output.
        let need = prompt_len as u64 + u64::from(tokens) - 1;
        if need > c {
            return Err(format!(
                "--prompt-len {prompt_len} --generate {tokens}: a sequence writes {need} positions into the cache, \
                 which holds {c} (compile with a larger ctx_len)"
            ));
        }
    }
    let vocab = program
        .entry_outputs(decode)
        .first()
        .map(|b| (b.elements() as usize / batch).max(1))
        .ok_or("the decode entry has no output")?;
    let mut state = seed;
    let prompt = (0..batch * prompt_len).map(|_| (splitmix(&mut state) % vocab as u64) as i64).collect();
    Ok(Generation { prefill, decode, prompt, prompt_len, decode_steps: tokens - 1 })
}

/// The seeded generator of the runner's random inputs and prompts (SplitMix64).
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mean and percentiles of one per-token time, ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    fn of(v: &[f64]) -> Summary {
        if v.is_empty() {
            return Summary::default();
        }
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let (p50, p90, p99, max) = crate::runner::round_trip_percentiles(&s);
        Summary { mean: s.iter().sum::<f64>() / s.len() as f64, min: s[0], p50, p90, p99, max }
    }
}

/// What a generation run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    pub sequences: u64,
    /// Tokens generated, every sample of the batch counted.
    pub tokens: u64,
    pub elapsed_s: f64,
    pub tokens_per_sec: f64,
    pub ttft_ms: Summary,
    pub tpot_ms: Summary,
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

/// Runs `gen` on `set` until `limit` (sequences) and measures it.
pub fn run(set: &InferenceSet, limit: RunLimit, host: &HostModel, gen: &Generation) -> Result<Figures, String> {
    let steps = Mutex::new(Steps::default());
    let on_step = |done: &Completion<'_>| {
        let mut s = steps.lock();
        if let Some(e) = done.error {
            s.error.get_or_insert_with(|| e.to_string());
            return;
        }
        let t = &done.timestamps;
        s.steps += 1;
        if done.step == Some(0) {
            s.sequences += 1;
            s.ttft_ms.push(t.returned.saturating_sub(t.enqueue) as f64 / 1e6);
        } else {
            let before = s.last.get(&done.index).copied().unwrap_or(t.enqueue);
            s.tpot_ms.push(t.returned.saturating_sub(before) as f64 / 1e6);
        }
        s.last.insert(done.index, t.returned);
    };
    let summary = set.run_generation(limit, host, gen, on_step).map_err(|e| e.to_string())?;
    let s = steps.into_inner();
    if let Some(e) = s.error {
        return Err(e);
    }
    let batch = (gen.prompt.len() / gen.prompt_len.max(1)).max(1) as u64;
    let elapsed_s = summary.elapsed.as_secs_f64();
    let tokens = s.steps * batch;
    Ok(Figures {
        sequences: s.sequences,
        tokens,
        elapsed_s,
        tokens_per_sec: tokens as f64 / elapsed_s.max(1e-12),
        ttft_ms: Summary::of(&s.ttft_ms),
        tpot_ms: Summary::of(&s.tpot_ms),
    })
}
