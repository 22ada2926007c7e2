//! The `stats` and `trace` profiling files of aic-runner.
//!
//! Per-core op statistics (`aic-profiling-program-<p>-activation-<a>-inf-<i>.txt`),
//! one row per op class per core:
//! - `pcycles`: engine cycles the class took on the core, summed over HVX threads;
//! - `ucycles`: the same divided by the engine's threads (HVX 4, others 1): its share of
//!   the core's timeline;
//! - `ucycles(%)` is of the run's cycles, `pcycles(%)` of the core's total pcycles;
//! - `out KB` written, cycles per KB, and the standard deviation of pcycles per KB over
//!   the class's instructions; `opdetails` names the class, engine and memory.
//!
//! The trace (`aic-profiling-program-<p>-trace.json`) is Chrome trace-event JSON: a
//! `HOST_PROC` process with a thread per activation carrying each sampled inference's
//! host stages, and a process per activation with a thread per core engine carrying
//! the device's instructions. Device time is placed on the host timeline by aligning
//! each run's start with the moment its request reached the channel.

use std::fmt::Write as _;

use aicsim_abi::container::{Layer, ProgramImage};
use aicsim_abi::isa::{DType, Op};
use aicsim_device::nsp::{op_class, Engine, OpClass, DMA_QUEUES, ENGINES, HVX_THREADS, OP_CLASSES};
use aicsim_driver::RunProfile;
use aicsim_runtime::Timestamps;
use serde::Serialize;

fn engine_of(class: OpClass) -> (Engine, &'static str, &'static str) {
    match class {
        OpClass::CopyToVtcm | OpClass::CopyFromVtcm => (Engine::Dma, "DMAIssue", " DDR"),
        OpClass::MatMul | OpClass::Convolution => (Engine::Hmx, "HMX", " TCM"),
        OpClass::Sync => (Engine::Sync, "barrier", ""),
        _ => (Engine::Hvx, "HVX", " TCM"),
    }
}

/// What the program says about one instruction: the layer (ONNX node) it was compiled
/// from, and the type and bytes of the tensor it writes.
struct Described<'a> {
    layer: Option<&'a Layer>,
    dtype: Option<DType>,
    bytes: u64,
}

fn describe(image: &ProgramImage, core: usize, index: u32) -> Described<'_> {
    let op = image.cores.get(core).and_then(|s| s.get(index as usize)).and_then(|i| i.decode().ok());
    let dst = op.as_ref().and_then(Op::dst);
    Described {
        layer: image.layer_of(core, index),
        dtype: dst.map(|t| t.dtype),
        bytes: dst.map_or(0, |t| t.packed_bytes()),
    }
}

/// Per core, the data types each op class writes in the program (for `opdetails`).
fn class_dtypes(image: &ProgramImage) -> Vec<[Vec<DType>; OP_CLASSES]> {
    image
        .cores
        .iter()
        .map(|stream| {
            let mut per: [Vec<DType>; OP_CLASSES] = Default::default();
            for op in stream.iter().filter_map(|i| i.decode().ok()) {
                if let Some(t) = op.dst() {
                    let set = &mut per[op_class(&op) as usize];
                    if !set.contains(&t.dtype) {
                        set.push(t.dtype);
                    }
                }
            }
            per
        })
        .collect()
}

/// Per core, how long and how often its next instruction waited on each engine: in-order
/// issue starts an instruction no earlier than the previous one, so an instruction that
/// starts later than the previous one waited, and the instruction whose end it started
/// at is what it waited on (an instruction on that engine still in flight). Taken from
/// the run's trace; the cycles of waits with no instruction ending at the start (a
/// transfer's share of a shared path) are not attributed.
pub fn engine_waits(run: &RunProfile, cores: usize) -> Vec<[(u64, u64); ENGINES]> {
    let mut per_core: Vec<Vec<&aicsim_abi::profile::TraceEvent>> = vec![Vec::new(); cores];
    for e in &run.trace {
        if let Some(v) = per_core.get_mut(e.core as usize) {
            v.push(e);
        }
    }
    per_core
        .into_iter()
        .map(|mut events| {
            events.sort_by_key(|e| e.index);
            let mut waits = [(0u64, 0u64); ENGINES];
            let mut ends: std::collections::HashMap<u64, Engine> = std::collections::HashMap::new();
            let mut previous_start = None;
            for e in events {
                if let (Some(prev), Some(&engine)) = (previous_start, ends.get(&e.start_cycle)) {
                    if e.start_cycle > prev {
                        let w = &mut waits[engine as usize];
                        w.0 += e.start_cycle - prev;
                        w.1 += 1;
                    }
                }
                ends.insert(e.end_cycle, e.engine);
                previous_start = Some(e.start_cycle);
            }
            waits
        })
        .collect()
}

/// One row of a core's op statistics: an op class's work (`pcycles` its engine cycles,
/// `ucycles` its share of the core's timeline: pcycles over the engine's threads), or,
/// with `pcycles` `None`, the time the core's next instruction waited on an engine
/// (`op` `sync`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpRow {
    pub core: usize,
    pub op: &'static str,
    pub engine: &'static str,
    /// ` TCM`, ` DDR` or empty, as the card's `opdetails` write it.
    pub memory: &'static str,
    pub dtypes: Vec<&'static str>,
    pub ucycles: u64,
    pub pcycles: Option<u64>,
    pub count: u64,
    pub out_kb: f64,
    pub stddev_pcycles_per_kb: f64,
}

/// Every core's op statistics of one run (the waits only when it was traced), in core
/// and class order.
pub fn op_rows(image: &ProgramImage, run: &RunProfile) -> Vec<OpRow> {
    let dtypes = class_dtypes(image);
    let waits = if run.trace.is_empty() { Vec::new() } else { engine_waits(run, run.cores.len()) };
    let mut rows = Vec::new();
    for (c, core) in run.cores.iter().enumerate() {
        for class in OpClass::ALL {
            let k = core.classes[class as usize];
            if k.count == 0 {
                continue;
            }
            let (engine, engine_name, memory) = engine_of(class);
            let threads = if engine == Engine::Hvx { u64::from(HVX_THREADS) } else { 1 };
            rows.push(OpRow {
                core: c,
                op: class.name(),
                engine: engine_name,
                memory,
                dtypes: dtypes.get(c).map(|d| d[class as usize].iter().map(|t| t.name()).collect()).unwrap_or_default(),
                ucycles: k.cycles / threads,
                pcycles: Some(k.cycles),
                count: k.count,
                out_kb: k.out_bytes as f64 / 1024.0,
                stddev_pcycles_per_kb: k.cycles_per_kib().1,
            });
        }
        if let Some(waits) = waits.get(c) {
            for (engine, name) in [(Engine::Dma, "DMAIssue"), (Engine::Hmx, "HMX"), (Engine::Hvx, "HVX")] {
                let (wait, count) = waits[engine as usize];
                if count > 0 {
                    rows.push(OpRow {
                        core: c,
                        op: "sync",
                        engine: name,
                        memory: "",
                        dtypes: Vec::new(),
                        ucycles: wait,
                        pcycles: None,
                        count,
                        out_kb: 0.0,
                        stddev_pcycles_per_kb: 0.0,
                    });
                }
            }
        }
    }
    rows
}

/// The per-core op statistics table of one run, then (when the run was traced) where
/// its time went layer by layer.
pub fn stats_table(image: &ProgramImage, activation: usize, inference: u64, clock_hz: u64, run: &RunProfile) -> String {
    let mut out = String::new();
    let cycles = run.cycles().max(1);
    let _ = writeln!(
        out,
        "# aicsim per-core op statistics: program {}, activation {activation}, inference {inference}",
        image.name
    );
    let _ = writeln!(
        out,
        "# run: {} cycles ({:.3} us at {} MHz), DDR traffic {} bytes",
        run.cycles(),
        run.cycles() as f64 * 1e6 / clock_hz as f64,
        clock_hz / 1_000_000,
        run.ddr_bytes
    );
    let header = format!(
        "{:<6}{:>12}{:>12}{:>12}{:>12}{:>8}{:>12}{:>12}{:>12}{:>15}  opdetails",
        "core",
        "ucycles",
        "ucycles(%)",
        "pcycles",
        "pcycles(%)",
        "count",
        "out KB",
        "ucycles/KB",
        "pcycles/KB",
        "stddev(pc/KB)"
    );
    // As the card's file: per core, its table (the heaviest rows first), then how busy
    // each of its threads was.
    let all = op_rows(image, run);
    for (c, core) in run.cores.iter().enumerate() {
        let total_p: u64 = core.classes.iter().map(|k| k.cycles).sum::<u64>().max(1);
        let mut busy = [0u64; ENGINES];
        for class in OpClass::ALL {
            busy[engine_of(class).0 as usize] += core.classes[class as usize].cycles;
        }
        let mut rows: Vec<(u64, String)> = Vec::new();
        for r in all.iter().filter(|r| r.core == c) {
            let types = if r.dtypes.is_empty() { String::new() } else { format!(" ({})", r.dtypes.join(", ")) };
            let row = match r.pcycles {
                Some(p) => {
                    let per_kb = |v: u64| if r.out_kb > 0.0 { v as f64 / r.out_kb } else { 0.0 };
                    format!(
                        "{:<6}{:>12}{:>11.2}%{:>12}{:>11.2}%{:>8}{:>12.2}{:>12.2}{:>12.2}{:>15.2}  {} {}{}{types}",
                        format!("c{c}"),
                        r.ucycles,
                        r.ucycles as f64 * 100.0 / cycles as f64,
                        p,
                        p as f64 * 100.0 / total_p as f64,
                        r.count,
                        r.out_kb,
                        per_kb(r.ucycles),
                        per_kb(p),
                        r.stddev_pcycles_per_kb,
                        r.op,
                        r.engine,
                        r.memory
                    )
                }
                // Time waited: nothing of its own to divide.
                None => format!(
                    "{:<6}{:>12}{:>11.2}%{:>12}{:>12}{:>8}{:>12}{:>12}{:>12}{:>15}  {} {}",
                    format!("c{c}"),
                    r.ucycles,
                    r.ucycles as f64 * 100.0 / cycles as f64,
                    "N/A",
                    "N/A",
                    r.count,
                    "N/A",
                    "N/A",
                    "N/A",
                    "N/A",
                    r.op,
                    r.engine
                ),
            };
            rows.push((r.ucycles, row));
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.0));
        let _ = writeln!(out, "\n{header}");
        for (_, row) in rows {
            let _ = writeln!(out, "{row}");
        }
        out += &thread_summary(c, run, busy, clock_hz);
    }
    // The instance as a whole.
    let secs = cycles as f64 / clock_hz as f64;
    let _ = writeln!(out, "total batch ucycles: {cycles:>16} [{}, {}]", run.start_cycle, run.end_cycle);
    let _ = writeln!(out, "[QAicGraph] Device instance batch/s: (1/{secs:.7}): {:.4}", 1.0 / secs);
    let _ = writeln!(
        out,
        "[QAicGraph] Device instance inf/s: ({}/{secs:.7}): {:.3}",
        image.batch_size,
        f64::from(image.batch_size) / secs
    );
    if !run.trace.is_empty() && !image.layers.is_empty() {
        out.push('\n');
        out += &layer_table(image, run);
    }
    out
}

/// A core's closing lines in a stats file: its span, each hardware thread's busy share
/// (four HVX threads sharing the HVX work, HMX, DMA issue), the span in processor
/// cycles and the clock. Cycles are the device clock's; with no trace, every thread
/// spans the run.
fn thread_summary(c: usize, run: &RunProfile, busy: [u64; ENGINES], clock_hz: u64) -> String {
    let cycles = run.cycles().max(1);
    let span = |engine: Engine| {
        let mine = run.trace.iter().filter(|e| e.core as usize == c && e.engine == engine);
        let (s, e) = mine.fold((u64::MAX, 0), |(s, e), ev| (s.min(ev.start_cycle), e.max(ev.end_cycle)));
        if s == u64::MAX {
            (run.start_cycle, run.end_cycle)
        } else {
            (s, e)
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "\nc{c} total: {cycles:>16} ucycles {cycles:>16} pcycles (thread max)");
    let hvx = busy[Engine::Hvx as usize] / u64::from(HVX_THREADS);
    // Transfers overlap (DMA_QUEUES in flight): the issue thread is busy while any is.
    let dma = busy_union(run, c, Engine::Dma).unwrap_or(busy[Engine::Dma as usize] / u64::from(DMA_QUEUES)).min(cycles);
    let threads = (0..HVX_THREADS)
        .map(|_| (Engine::Hvx, "HVX", hvx))
        .chain([(Engine::Hmx, "HMX", busy[Engine::Hmx as usize]), (Engine::Dma, "DMAIssue", dma)]);
    for (t, (engine, name, work)) in threads.enumerate() {
        let (s, e) = span(engine);
        let _ = writeln!(
            out,
            "c{c}    t{t} {name:<12} {:>12} ucycles [{s}, {e}] {:>15} pcycles {:>6.2}% utilization",
            e - s,
            e - s,
            work as f64 * 100.0 / cycles as f64
        );
    }
    let _ = writeln!(out, "c{c}: Total inference pcycle is {cycles}");
    let _ = writeln!(out, "c{c}: Effective frequency is {:.2}MHz", clock_hz as f64 / 1e6);
    out
}

/// Cycles in which core `c` had at least one instruction on `engine` (from the trace;
/// `None` without one).
fn busy_union(run: &RunProfile, c: usize, engine: Engine) -> Option<u64> {
    let mut spans: Vec<(u64, u64)> = run
        .trace
        .iter()
        .filter(|e| e.core as usize == c && e.engine == engine)
        .map(|e| (e.start_cycle, e.end_cycle))
        .collect();
    if spans.is_empty() {
        return None;
    }
    spans.sort_unstable();
    let (mut total, mut reach) = (0, 0);
    for (s, e) in spans {
        let s = s.max(reach);
        if e > s {
            total += e - s;
            reach = e;
        }
    }
    Some(total)
}

/// What one layer did in one run: the span of its instructions (first start to last
/// end, over all cores), each engine's busy cycles on them summed over cores, the bytes
/// its instructions wrote, and the data types they wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerActivity {
    pub layer: usize,
    pub first_cycle: u64,
    pub last_cycle: u64,
    pub busy: [u64; ENGINES],
    pub written_bytes: u64,
    pub dtypes: Vec<DType>,
}

impl LayerActivity {
    pub fn span_cycles(&self) -> u64 {
        self.last_cycle - self.first_cycle
    }
}

/// Each named layer's activity in a traced run (layers that ran nothing are left out),
/// in the program's layer order.
pub fn layer_activity(image: &ProgramImage, run: &RunProfile) -> Vec<LayerActivity> {
    let mut all: Vec<LayerActivity> = (0..image.layers.len())
        .map(|layer| LayerActivity {
            layer,
            first_cycle: u64::MAX,
            last_cycle: 0,
            busy: [0; ENGINES],
            written_bytes: 0,
            dtypes: Vec::new(),
        })
        .collect();
    for e in &run.trace {
        let Some(l) = image.layer_index(e.core as usize, e.index) else { continue };
        let d = describe(image, e.core as usize, e.index);
        let a = &mut all[l];
        a.busy[e.engine as usize] += e.end_cycle - e.start_cycle;
        a.first_cycle = a.first_cycle.min(e.start_cycle);
        a.last_cycle = a.last_cycle.max(e.end_cycle);
        if e.engine != Engine::Dma || e.class == OpClass::CopyFromVtcm {
            a.written_bytes += d.bytes;
        }
        if let Some(t) = d.dtype.filter(|t| !a.dtypes.contains(t)) {
            a.dtypes.push(t);
        }
    }
    all.retain(|a| a.first_cycle != u64::MAX);
    all
}

/// The per-layer table of a stats file: the answer to "which layer is slow, and is it
/// compute, DMA or waiting".
fn layer_table(image: &ProgramImage, run: &RunProfile) -> String {
    let mut out = String::from("# per layer: engine busy cycles summed over cores, first start to last end\n");
    let _ = writeln!(
        out,
        "{:<40} {:<18} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  dtypes",
        "layer", "op", "cycles", "DMA", "HMX", "HVX", "sync", "out KB"
    );
    for a in layer_activity(image, run) {
        let layer = &image.layers[a.layer];
        let names: Vec<&str> = a.dtypes.iter().map(|t| t.name()).collect();
        let _ = writeln!(
            out,
            "{:<40} {:<18} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10.1}  {}",
            layer.name,
            layer.op_type,
            a.span_cycles(),
            a.busy[Engine::Dma as usize],
            a.busy[Engine::Hmx as usize],
            a.busy[Engine::Hvx as usize],
            a.busy[Engine::Sync as usize],
            a.written_bytes as f64 / 1024.0,
            names.join(", ")
        );
    }
    out
}

/// Columns of the text timeline.
pub const ASCII_COLUMNS: usize = 100;

/// A text timeline of one run (`--aic-profiling-type ascii`): a row per core and engine,
/// one column per hundredth of the run; a column shows the engine's letter (`D`ma, h`M`x,
/// h`V`x, `s`ync) where the engine was busy for at least half of it, `-` where it was busy
/// for less, and `.` where it was idle.
pub fn ascii_timeline(
    image: &ProgramImage,
    activation: usize,
    inference: u64,
    clock_hz: u64,
    run: &RunProfile,
) -> String {
    let cycles = run.cycles().max(1);
    let per = cycles as f64 / ASCII_COLUMNS as f64;
    let lanes = image.cores.len() * ENGINES;
    let mut busy = vec![[0f64; ASCII_COLUMNS]; lanes];
    for e in &run.trace {
        let Some(row) = busy.get_mut(e.core as usize * ENGINES + e.engine as usize) else { continue };
        let (from, to) =
            (e.start_cycle.saturating_sub(run.start_cycle) as f64, e.end_cycle.saturating_sub(run.start_cycle) as f64);
        let first = ((from / per) as usize).min(ASCII_COLUMNS - 1);
        let last = ((to / per) as usize).min(ASCII_COLUMNS - 1);
        for (c, cell) in row.iter_mut().enumerate().take(last + 1).skip(first) {
            let (lo, hi) = (c as f64 * per, (c + 1) as f64 * per);
            *cell += (to.min(hi) - from.max(lo)).max(0.0);
        }
    }
    let us = cycles as f64 * 1e6 / clock_hz as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# aicsim timeline: program {}, activation {activation}, inference {inference}: {us:.3} us, {:.3} us per column",
        image.name,
        us / ASCII_COLUMNS as f64
    );
    let _ = writeln!(out, "# D DMA, M HMX, V HVX, s sync: busy at least half the column; - less; . idle");
    let letters = ['D', 'M', 'V', 's'];
    let names = ["DMA", "HMX", "HVX", "sync"];
    for (lane, row) in busy.iter().enumerate() {
        let engine = lane % ENGINES;
        // HVX's threads overlap: a column counts as busy when any of them is.
        let cells: String = row
            .iter()
            .map(|&b| match b / per {
                f if f >= 0.5 => letters[engine],
                f if f > 0.0 => '-',
                _ => '.',
            })
            .collect();
        let _ = writeln!(out, "c{:<3}{:<5}|{cells}|", lane / ENGINES, names[engine]);
    }
    let _ = writeln!(out, "{:9}0{:>width$}", "", format!("{us:.1} us"), width = ASCII_COLUMNS + 1);
    out
}

/// One sampled inference for the trace.
pub struct TracedInference<'a> {
    pub index: u64,
    pub activation: usize,
    pub timestamps: Timestamps,
    pub run: &'a RunProfile,
}

/// One Chrome trace event: a complete span (`ph` "X") or a name for a process or a
/// thread (`ph` "M").
#[derive(Serialize)]
struct TraceEvent<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cat: Option<&'static str>,
    ph: &'static str,
    /// Microseconds, to the nanosecond.
    ts: f64,
    dur: f64,
    pid: usize,
    tid: usize,
    args: TraceArgs,
}

#[derive(Serialize)]
#[serde(untagged)]
enum TraceArgs {
    Name {
        name: String,
    },
    Inference {
        inference: u64,
    },
    Instruction {
        inference: u64,
        instruction: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        layer: Option<String>,
        #[serde(rename = "onnxOp", skip_serializing_if = "Option::is_none")]
        onnx_op: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        dtype: Option<&'static str>,
        bytes: u64,
    },
}

/// Microseconds rounded to the nanosecond, as the trace keeps them.
fn to_ns(us: f64) -> f64 {
    (us * 1e3).round() / 1e3
}

fn event(out: &mut Vec<String>, name: &str, pid: usize, tid: usize, ts: f64, dur: f64, args: TraceArgs) {
    let e = TraceEvent { name, cat: Some("aicsim"), ph: "X", ts: to_ns(ts), dur: to_ns(dur), pid, tid, args };
    out.push(serde_json::to_string(&e).expect("a trace event always serialises"));
}

fn metadata(out: &mut Vec<String>, what: &str, pid: usize, tid: usize, name: &str) {
    let args = TraceArgs::Name { name: name.to_string() };
    let e = TraceEvent { name: what, cat: None, ph: "M", ts: 0.0, dur: 0.0, pid, tid, args };
    out.push(serde_json::to_string(&e).expect("a trace event always serialises"));
}

/// How device time lines up with the timestamps' clock in a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceTimeline {
    /// Device cycles count from the timestamps' zero (the simulated clock).
    Shared,
    /// The clocks are unrelated (the wall clock): each run is placed at the moment its
    /// request reached the channel.
    AtSubmit,
}

/// The Chrome trace-event JSON of the sampled inferences; times relative to `origin_ns`
/// on the timestamps' clock.
pub fn trace_json(
    origin_ns: u64,
    clock_hz: u64,
    timeline: DeviceTimeline,
    activations: usize,
    image: &ProgramImage,
    samples: &[TracedInference<'_>],
) -> String {
    let cores = image.cores.len();
    let mut events = Vec::new();
    metadata(&mut events, "process_name", 0, 0, "HOST_PROC");
    for a in 0..activations {
        metadata(&mut events, "thread_name", 0, a, &format!("activation {a} host"));
        metadata(&mut events, "process_name", 1 + a, 0, &format!("activation {a}"));
        for c in 0..cores {
            for (e, name) in [(Engine::Dma, "DMA"), (Engine::Hmx, "HMX"), (Engine::Hvx, "HVX"), (Engine::Sync, "sync")]
            {
                metadata(&mut events, "thread_name", 1 + a, c * 4 + e as usize, &format!("core {c} {name}"));
            }
        }
    }
    let us = |t: u64| t.saturating_sub(origin_ns) as f64 / 1e3;
    for s in samples {
        let t = &s.timestamps;
        for (name, from, to) in [
            ("enqueue", t.enqueue, t.pre_proc_start),
            ("preProc", t.pre_proc_start, t.pre_proc_end),
            ("submit", t.pre_proc_end, t.kernel_submit),
            ("exectoVc", t.kernel_submit, t.submitted),
            ("execToComplete", t.submitted, t.completed),
            ("postProc", t.completed, t.post_proc_end),
            ("application", t.post_proc_end, t.returned),
        ] {
            let args = TraceArgs::Inference { inference: s.index };
            event(&mut events, name, 0, s.activation, us(from), us(to) - us(from), args);
        }
        let cycle_us = 1e6 / clock_hz as f64;
        let base = match timeline {
            DeviceTimeline::Shared => -(origin_ns as f64) / 1e3,
            DeviceTimeline::AtSubmit => us(t.submitted) - s.run.start_cycle as f64 * cycle_us,
        };
        for e in &s.run.trace {
            let ts = base + e.start_cycle as f64 * cycle_us;
            let dur = (e.end_cycle - e.start_cycle) as f64 * cycle_us;
            let tid = e.core as usize * 4 + e.engine as usize;
            let d = describe(image, e.core as usize, e.index);
            let args = TraceArgs::Instruction {
                inference: s.index,
                instruction: e.index,
                layer: d.layer.map(|l| l.name.clone()),
                onnx_op: d.layer.map(|l| l.op_type.clone()),
                dtype: d.dtype.map(DType::name),
                bytes: d.bytes,
            };
            event(&mut events, e.class.name(), 1 + s.activation, tid, ts, dur, args);
        }
    }
    // One event per line: large traces stay readable and diffable.
    format!("{{\"traceEvents\":[\n{}\n],\"displayTimeUnit\":\"ns\"}}\n", events.join(",\n"))
}
