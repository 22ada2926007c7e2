//! aic-runner's command line: its flags (qaic-runner's), the run it plans from them,
//! the two ways it runs (on the simulated clock, or paced to the wall clock), what it
//! prints and the files it writes. `src/bin/aic-runner.rs` only calls [`main`].
//!
//! By default every figure is on the simulated clock: the device's time and the host
//! model's (see `aicsim_runtime::InferenceSet::run_simulated`), so the figures are what
//! the card would do, the same on any machine under any load. `--clock wall` measures
//! the wall clock instead, with the device paced to it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{self as runner, Collected, Collector, Sampling, Throughput};
use crate::{latency, output_files, profiling, stats};
use aicsim_abi::container::{IoBinding, IoDType};
use aicsim_device::scheduler::ExecMode;
use aicsim_device::{DeviceConfig, Pacing};
use aicsim_driver::Device;
use aicsim_kmd::{Kmd, KmdConfig};
use aicsim_runtime::{Completion, HostModel, InferenceSet, Program, RunLimit, RunSummary, SubmitPolicy};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProfilingType {
    Latency,
    Stats,
    Trace,
    /// A text timeline of each profiled inference: a row per core and engine.
    Ascii,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Timing,
    Functional,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// One query at a time; the metric is the 90th-percentile latency.
    SingleStream,
    /// Every query at once; the metric is throughput.
    Offline,
    /// Queries arrive at --target-qps as a Poisson process; valid if the 99th-percentile
    /// latency stays within --latency-bound-ms.
    Server,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Clock {
    /// Every figure in simulated time: what the card would do (default).
    Sim,
    /// Every figure in wall time, the device paced to the wall clock (live integration).
    Wall,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Pace {
    Wall,
    None,
}

#[derive(Parser, Debug)]
#[command(
    name = "aic-runner",
    about = "Run a program on the simulated Cloud AI 100 device",
    long_about = "Run a program on the simulated Cloud AI 100 device.\n\nEvery figure (Stats line, latencies, \
                  device table, profiles, --json, scenario verdicts) is on the simulated clock unless --clock wall: \
                  device time from the device model, host stages from the calibrated host model, the same on any \
                  machine under any load. Every inference still moves its real bytes through the driver, the rings \
                  and the device.",
    version
)]
struct Args {
    /// Program directory (holding programqpc.bin) or container file; the embedded default (the zoo ResNet-50, fp16, 1 core) when absent.
    #[arg(short = 't', long = "test-data")]
    test_data: Option<PathBuf>,
    /// Device id.
    #[arg(short = 'd', long = "aic-device-id", default_value_t = 0)]
    device_id: u32,
    /// Activations (instances) of the program.
    #[arg(short = 'a', long = "aic-num-of-activations", default_value_t = 1)]
    activations: usize,
    /// Inferences in flight per activation.
    #[arg(short = 'S', long = "set-size")]
    set_size: Option<usize>,
    /// Inferences to run.
    #[arg(short = 'n', long = "num-iter", default_value_t = 40)]
    num_iter: u64,
    /// Run for this many seconds (of the clock's time) instead of a fixed count.
    #[arg(long = "time")]
    time: Option<f64>,
    /// Input file, raw bytes in the program's host format, one per input in order (repeatable); random data when absent.
    #[arg(short = 'i', long = "input-file")]
    input_files: Vec<PathBuf>,
    /// Submitter threads per activation's queue (at most the set size; --clock wall only: on the simulated clock one thread drives every handle).
    #[arg(short = 'T', long = "aic-threads-per-queue", default_value_t = 4)]
    threads_per_queue: usize,
    /// Print a live report.
    #[arg(short = 'l', long = "live-reporting")]
    live: bool,
    /// Live report period in milliseconds (of the clock's time).
    #[arg(short = 'r', long = "live-reporting-period", default_value_t = 1000)]
    live_period_ms: u64,
    /// First inference whose outputs are written.
    #[arg(long = "write-output-start-iter", default_value_t = 0)]
    write_output_start_iter: u64,
    /// How many inferences' outputs are written.
    #[arg(long = "write-output-num-samples", default_value_t = 1)]
    write_output_num_samples: u64,
    /// Directory for output files <buffer>-activation-<a>-inf-<i>.bin.
    #[arg(long = "write-output-dir")]
    write_output_dir: Option<PathBuf>,
    /// Profiling to record (repeatable).
    #[arg(long = "aic-profiling-type", value_enum)]
    profiling_types: Vec<ProfilingType>,
    /// First inference profiled.
    #[arg(long = "aic-profiling-start-iter", default_value_t = 0)]
    profiling_start_iter: u64,
    /// Inferences profiled.
    #[arg(long = "aic-profiling-num-samples", default_value_t = 1)]
    profiling_num_samples: u64,
    /// Directory for profiling files.
    #[arg(long = "aic-profiling-out-dir", default_value = ".")]
    profiling_out_dir: PathBuf,
    /// How long one submit attempt waits for room on a full channel, in milliseconds (of the clock's time).
    #[arg(long = "submit-timeout", default_value_t = 1000)]
    submit_timeout_ms: u64,
    /// Submit attempts after the first before giving up.
    #[arg(long = "submit-retry-count", default_value_t = 5)]
    submit_retry_count: u32,
    /// Verbose: print the configuration.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// timing: the device takes the time without computing (default); functional: compute real outputs.
    #[arg(long = "mode", value_enum, default_value = "timing")]
    mode: Mode,
    /// sim: every figure on the simulated clock (default); wall: on the wall clock.
    #[arg(long = "clock", value_enum, default_value = "sim")]
    clock: Clock,
    /// With --clock wall: wall (default) keeps completions no earlier than device time says; none runs unpaced.
    #[arg(long = "pace", value_enum)]
    pace: Option<Pace>,
    /// Write every figure of the run as JSON to this file.
    #[arg(long = "json")]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report of the run to this file: the Stats summary,
    /// latency histogram and CDF, time per stage, a device timeline and the top layers of
    /// one sampled inference (the first profiled one).
    #[arg(long = "report")]
    report: Option<PathBuf>,
    /// Seed of the random input data, the server arrivals and the device's dispatch jitter.
    #[arg(long = "seed", default_value_t = 1)]
    seed: u64,
    /// MLPerf-style scenario, ending in VALID or INVALID.
    #[arg(long = "scenario", value_enum)]
    scenario: Option<Scenario>,
    /// Server: arrival rate; offline: the throughput the run must reach.
    #[arg(long = "target-qps")]
    target_qps: Option<f64>,
    /// Server: bound on the 99th-percentile latency; single-stream: on the 90th.
    #[arg(long = "latency-bound-ms")]
    latency_bound_ms: Option<f64>,
    /// Run on a device in another process (`aic-device --shm FILE`) through this region file instead of an in-process one.
    #[arg(long = "shm")]
    shm: Option<PathBuf>,
    /// With --shm: seconds to wait for the device process to come up.
    #[arg(long = "device-wait", default_value_t = 10.0)]
    device_wait: f64,
    /// Generation: prompt tokens per sequence (the program's prefill length).
    #[arg(long = "prompt-len")]
    prompt_len: Option<usize>,
    /// Generation: tokens each sequence generates (the prefill's first, then decode
    /// steps), on a program compiled with -retained-state and prefill and decode
    /// specialisations; -n counts sequences, -a runs that many at once.
    #[arg(long = "generate")]
    generate: Option<u32>,
}

/// The longest run, in seconds of the clock's time.
const MAX_TIME_S: f64 = 1e6;
/// The most server queries one run schedules.
const MAX_QUERIES: f64 = 1e8;

/// Seeded exponential inter-arrival times at `qps`: `n` arrival offsets.
fn poisson_arrivals(n: u64, qps: f64, seed: u64) -> Vec<Duration> {
    let mut state = seed ^ 0x005E_ED0F_A221_7A15;
    let mut t = 0.0f64;
    (0..n)
        .map(|_| {
            let u = ((splitmix(&mut state) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            t += -u.ln() / qps;
            Duration::from_secs_f64(t)
        })
        .collect()
}

/// SplitMix64: small, seeded, good enough for input data.
use crate::generation::splitmix;

/// What to run: how long, how wide, on which clock.
struct Plan {
    limit: RunLimit,
    activations: usize,
    set_size: usize,
}

/// A number as a user would write it: plainly, or in exponent form when very large or
/// very small.
fn shown(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-3..1e7).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

fn positive(flag: &str, v: Option<f64>) -> Result<(), String> {
    match v {
        Some(v) if !(v.is_finite() && v > 0.0) => Err(format!("{flag} {} is not a positive number", shown(v))),
        _ => Ok(()),
    }
}

fn plan(args: &Args) -> Result<Plan, String> {
    if args.device_id != 0 {
        return Err(format!("device {} does not exist (the simulator has device 0)", args.device_id));
    }
    if args.pace.is_some() && args.clock == Clock::Sim {
        return Err(String::from("--pace applies to --clock wall (the simulated clock has no pacing)"));
    }
    if args.live_period_ms == 0 {
        return Err(String::from("-r 0: the live report period must be at least 1 ms"));
    }
    positive("--time", args.time)?;
    positive("--target-qps", args.target_qps)?;
    positive("--latency-bound-ms", args.latency_bound_ms)?;
    let limit = match args.time {
        Some(t) if t > MAX_TIME_S => return Err(format!("--time {}: at most {MAX_TIME_S} seconds", shown(t))),
        Some(t) => RunLimit::Duration(Duration::from_secs_f64(t)),
        None if args.num_iter == 0 => return Err(String::from("-n 0: nothing to run")),
        None => RunLimit::Count(args.num_iter),
    };
    // A sampling range that starts past a counted run would leave its files empty.
    if let RunLimit::Count(n) = limit {
        if !args.profiling_types.is_empty() && args.profiling_start_iter >= n {
            return Err(format!(
                "--aic-profiling-start-iter {} is past the run's {n} inferences (-n {n})",
                args.profiling_start_iter
            ));
        }
        if args.write_output_dir.is_some() && args.write_output_start_iter >= n {
            return Err(format!(
                "--write-output-start-iter {} is past the run's {n} inferences (-n {n})",
                args.write_output_start_iter
            ));
        }
    }
    let (activations, set_size) = match args.scenario {
        Some(Scenario::SingleStream) => (1, 1),
        _ => (args.activations, args.set_size.unwrap_or(if args.generate.is_some() { 1 } else { 10 })),
    };
    let limit = match args.scenario {
        Some(Scenario::Server) => {
            let (Some(qps), Some(_)) = (args.target_qps, args.latency_bound_ms) else {
                return Err(String::from("--scenario server needs --target-qps and --latency-bound-ms"));
            };
            let queries = match limit {
                RunLimit::Duration(d) => (qps * d.as_secs_f64()).ceil().max(1.0),
                _ => args.num_iter as f64,
            };
            if queries > MAX_QUERIES {
                return Err(format!(
                    "--target-qps {}: {} queries; a run schedules at most {}",
                    shown(qps),
                    shown(queries),
                    shown(MAX_QUERIES)
                ));
            }
            if queries / qps > MAX_TIME_S {
                return Err(format!(
                    "--target-qps {}: {queries} queries would take {} s to arrive; at most {MAX_TIME_S} s",
                    shown(qps),
                    shown(queries / qps)
                ));
            }
            RunLimit::Arrivals(Arc::new(poisson_arrivals(queries as u64, qps, args.seed)))
        }
        _ => limit,
    };
    Ok(Plan { limit, activations, set_size })
}

fn default_program() -> Result<aicsim_abi::container::ProgramImage, String> {
    let model = aicsim_compiler::zoo::resnet50();
    let opts = aicsim_compiler::CompileOptions { fp16: true, multicast_weights: true, ..Default::default() };
    Ok(aicsim_compiler::compile(&model, None, "resnet50", &opts).map_err(|e| e.to_string())?.image)
}

fn load_program(args: &Args) -> Result<Program, String> {
    match &args.test_data {
        Some(path) => Program::from_path(path),
        // The embedded default: the zoo's ResNet-50, as `aic-exec -m=zoo:resnet50
        // -convert-to-fp16 -multicast-weights` compiles it.
        None => Program::from_image(default_program()?),
    }
    .map_err(|e| e.to_string())
}

/// The input sets in the program's host format: the `-i` files, or (like qaic-runner) a
/// few seeded random sets generated up front and reused.
/// Random data for one input in its host format, bounded as the card's runner bounds
/// it: floats in [-1, 1), integers 0 or 1 (valid as token ids and masks of any model),
/// bytes anywhere in their range.
fn bounded_random(binding: &IoBinding, state: &mut u64) -> Vec<u8> {
    let n = binding.elements() as usize;
    let mut unit = || ((splitmix(state) >> 40) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0;
    match binding.host.dtype {
        IoDType::F32 => (0..n).flat_map(|_| unit().to_le_bytes()).collect(),
        IoDType::F16 => (0..n).flat_map(|_| half::f16::from_f32(unit()).to_le_bytes()).collect(),
        IoDType::I8 | IoDType::U8 => (0..n).map(|_| (splitmix(state) >> 56) as u8).collect(),
        IoDType::I32 => (0..n).flat_map(|_| ((splitmix(state) >> 63) as i32).to_le_bytes()).collect(),
        IoDType::I64 => (0..n).flat_map(|_| ((splitmix(state) >> 63) as i64).to_le_bytes()).collect(),
    }
}

fn host_inputs(args: &Args, program: &Program) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let inputs = program.inputs();
    if args.input_files.is_empty() {
        let mut state = args.seed;
        return Ok((0..4).map(|_| inputs.iter().map(|b| bounded_random(b, &mut state)).collect()).collect());
    }
    if args.input_files.len() != inputs.len() {
        return Err(format!("{} input files given, the program has {} inputs", args.input_files.len(), inputs.len()));
    }
    let mut data = Vec::new();
    for (path, binding) in args.input_files.iter().zip(&inputs) {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read input file {}: {e}", path.display()))?;
        if bytes.len() as u64 != binding.host_size_bytes() {
            return Err(format!(
                "input file {} is {} bytes but input '{}' takes {} bytes",
                path.display(),
                bytes.len(),
                binding.name,
                binding.host_size_bytes()
            ));
        }
        data.push(bytes);
    }
    Ok(vec![data])
}

fn open_device(args: &Args, plan: &Plan, program: &Program) -> Result<Arc<Device>, String> {
    let pacing = match (args.clock, args.pace) {
        (Clock::Sim, _) => Pacing::Simulated,
        (Clock::Wall, Some(Pace::None)) => Pacing::None,
        (Clock::Wall, _) => Pacing::Wall,
    };
    let device_config = DeviceConfig {
        mode: if args.mode == Mode::Functional { ExecMode::Functional } else { ExecMode::Timing },
        pacing,
        seed: args.seed,
        ..DeviceConfig::default()
    };
    let needed = u64::from(program.image().num_cores()) * plan.activations as u64;
    if needed > u64::from(device_config.num_nsp) {
        return Err(format!(
            "{} activations x {} cores = {needed} cores, but the device has {}",
            plan.activations,
            program.image().num_cores(),
            device_config.num_nsp
        ));
    }
    let config = KmdConfig { device: device_config, ..KmdConfig::default() };
    let device = match &args.shm {
        None => Device::open_simulated(config).map_err(|e| format!("cannot start the simulated device: {e}"))?,
        Some(path) => {
            if !args.device_wait.is_finite() || !(0.0..=86_400.0).contains(&args.device_wait) {
                return Err(format!("--device-wait {:?} is not a number of seconds in 0..=86400", args.device_wait));
            }
            let wait = Duration::from_secs_f64(args.device_wait);
            let kmd = Kmd::attach_external(config, path, wait)
                .map_err(|e| format!("cannot attach to the device on {}: {e}", path.display()))?;
            Device::open(Arc::new(kmd))
        }
    };
    Ok(Arc::new(device))
}

fn run(args: &Args) -> Result<(), String> {
    let plan = plan(args)?;
    let program = load_program(args)?;
    if args.generate.is_some() || args.prompt_len.is_some() {
        return generate::run(args, &plan, &program);
    }
    let inputs = host_inputs(args, &program)?;
    let device = open_device(args, &plan, &program)?;
    let threads = args.threads_per_queue.clamp(1, plan.set_size.max(1));
    if args.verbose {
        eprintln!(
            "aic-runner: program '{}' ({} cores, batch {}), {} activations x set size {}, mode {:?}, clock {:?}",
            program.name(),
            program.image().num_cores(),
            program.batch_size(),
            plan.activations,
            plan.set_size,
            args.mode,
            args.clock
        );
    }
    let set = InferenceSet::new(device, &program, plan.activations, plan.set_size)
        .and_then(|s| s.with_threads_per_activation(threads))
        .map_err(|e| e.to_string())?
        .with_submit_policy(SubmitPolicy {
            timeout: Duration::from_millis(args.submit_timeout_ms),
            retries: args.submit_retry_count,
        });
    // The per-layer table of the stats files, and the report's timeline, come from the
    // instruction trace too.
    let traced = args.profiling_types.iter().any(|t| *t != ProfilingType::Latency) || args.report.is_some();
    let tracing = AtomicBool::new(traced);
    if traced {
        for a in set.activations() {
            a.set_trace(true).map_err(|e| e.to_string())?;
        }
    }
    if args.input_files.is_empty() {
        println!("Using bounded random inputs");
    }
    let batch = program.batch_size();
    let sampling = Sampling {
        profile: (args.profiling_start_iter, args.profiling_num_samples),
        outputs: (
            args.write_output_start_iter,
            if args.write_output_dir.is_some() { args.write_output_num_samples } else { 0 },
        ),
        device_profiles: args.report.is_some() || args.profiling_types.iter().any(|t| *t != ProfilingType::Latency),
        activations: plan.activations,
        latency: args.profiling_types.contains(&ProfilingType::Latency),
    };
    let collector = Collector::new(sampling, batch);
    let run = Run { args, set: &set, inputs: &inputs, collector: &collector, tracing: &tracing };
    let started = Instant::now();
    let summary = match args.clock {
        Clock::Sim => run_simulated(&run, plan.limit.clone())?,
        Clock::Wall => run_wall(&run, plan.limit.clone())?,
    };
    let wall_elapsed = started.elapsed();
    let collected = collector.into_collected();
    if let Some(e) = &collected.profile_error {
        return Err(e.clone());
    }
    let throughput = Throughput::new(summary.inferences, summary.elapsed, batch);
    let verdict = verdict(args, &summary, &throughput, &collected.round_trips_ms);
    let paced = args.clock == Clock::Wall && args.pace != Some(Pace::None);
    let wall_speed = paced.then(|| wall_speed(&collected)).flatten();
    let files = files(args, &program, &plan, &summary, &throughput, &collected, &verdict, wall_speed.as_ref())?;

    println!(" ---- Stats ----");
    let host_bound = wall_speed.as_ref().filter(|s| s.ratio < HOST_BOUND);
    match host_bound {
        Some(s) => println!("{} (host-bound: the simulator ran at {:.2}x the card)", throughput.stats_line(), s.ratio),
        None => println!("{}", throughput.stats_line()),
    }
    let (p50, p90, p99, max) = runner::round_trip_percentiles(&collected.round_trips_ms);
    println!("Latency (totalRoundtripTime, ms): p50 {p50:.3} p90 {p90:.3} p99 {p99:.3} max {max:.3}");
    if let Some((head, result)) = &verdict {
        println!("{head}");
        println!("Result: {result}");
    }
    if !args.profiling_types.is_empty() {
        print!("{}", runner::render_device_table(&runner::device_rows(&collected)));
        println!();
    }
    // Files last, as the card's runner writes them once the run is summarised.
    for written in files.write_all()? {
        written.announce();
    }
    if let Some(s) = host_bound {
        eprintln!(
            "aic-runner: the simulator ran at {:.2}x the card's speed, so these wall-clock figures measure this host; \
             the default simulated clock gives the card's",
            s.ratio
        );
    }
    let late = set.activations()[0].device().kmd().late_elements();
    if late > 0 {
        eprintln!("aic-runner: warning: {late} request elements reached the device later than their simulated time");
    }
    if args.clock == Clock::Sim && (args.verbose || wall_elapsed > Duration::from_secs(3)) {
        eprintln!(
            "aic-runner: {:.3} s simulated in {:.3} s of wall time ({:.2}x real time)",
            summary.elapsed.as_secs_f64(),
            wall_elapsed.as_secs_f64(),
            summary.elapsed.as_secs_f64() / wall_elapsed.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}

mod execute;
mod generate;
mod output;

use execute::{run_simulated, run_wall, Run};
use output::{files, is_dir_or_missing, user_file, verdict, wall_speed, HOST_BOUND};

/// aic-runner's whole program: parses the command line, runs, prints, writes.
pub fn main() -> ExitCode {
    let args = Args::parse();
    for dir in [args.write_output_dir.as_deref(), Some(args.profiling_out_dir.as_path())].into_iter().flatten() {
        if !is_dir_or_missing(dir) {
            eprintln!("aic-runner: {} exists and is not a directory", dir.display());
            return ExitCode::from(2);
        }
    }
    for (flag, path) in [("--json", &args.json), ("--report", &args.report)] {
        let Some(path) = path else { continue };
        let problem = match user_file(path) {
            Err(e) => Some(e),
            Ok(_) if path.is_dir() => Some(format!("{} is a directory", path.display())),
            // The JSON may go into a directory the run creates (its output directory);
            // a report path names a directory that must already be there.
            Ok((dir, _)) if flag == "--report" && !dir.is_dir() => {
                Some(format!("{}: directory {} does not exist", path.display(), dir.display()))
            }
            Ok(_) => None,
        };
        if let Some(e) = problem {
            eprintln!("aic-runner: {flag} {e}");
            return ExitCode::from(2);
        }
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aic-runner: {e}");
            ExitCode::from(2)
        }
    }
}
