//! aic-runner: runs a program on the simulated device and reports throughput and
//! latency, with the flags, summary line and profiling files of qaic-runner.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim::{latency, profiling, stats};
use aicsim_device::scheduler::ExecMode;
use aicsim_device::{DeviceConfig, Pacing};
use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use aicsim_runtime::{InferenceSet, Program, RunLimit, SubmitPolicy};
use clap::{Parser, ValueEnum};
use parking_lot::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProfilingType {
    Latency,
    Stats,
    Trace,
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
enum Pace {
    Wall,
    None,
}

#[derive(Parser, Debug)]
#[command(name = "aic-runner", about = "Run a program on the simulated Cloud AI 100 device", version)]
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
    #[arg(short = 'S', long = "set-size", default_value_t = 10)]
    set_size: usize,
    /// Inferences to run.
    #[arg(short = 'n', long = "num-iter", default_value_t = 40)]
    num_iter: u64,
    /// Run for this many seconds instead of a fixed count.
    #[arg(long = "time")]
    time: Option<f64>,
    /// Input file, raw bytes in the program's host format, one per input in order (repeatable); random data when absent.
    #[arg(short = 'i', long = "input-file")]
    input_files: Vec<PathBuf>,
    /// Submitter threads per activation's queue (at most the set size).
    #[arg(short = 'T', long = "aic-threads-per-queue", default_value_t = 4)]
    threads_per_queue: usize,
    /// Print a live report.
    #[arg(short = 'l', long = "live-reporting")]
    live: bool,
    /// Live report period in milliseconds.
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
    /// How long one submit attempt waits for room on a full channel, in milliseconds.
    #[arg(long = "submit-timeout", default_value_t = 1000)]
    submit_timeout_ms: u64,
    /// Submit attempts after the first before giving up.
    #[arg(long = "submit-retry-count", default_value_t = 5)]
    submit_retry_count: u32,
    /// Verbose: print the configuration.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// timing: move the data, model the compute (default); functional: compute real outputs.
    #[arg(long = "mode", value_enum, default_value = "timing")]
    mode: Mode,
    /// wall: completions no earlier than device time says (wall-clock Inf/Sec predicts the card); none: as fast as simulated.
    #[arg(long = "pace", value_enum, default_value = "wall")]
    pace: Pace,
    /// Write every figure of the run as JSON to this file.
    #[arg(long = "json")]
    json: Option<PathBuf>,
    /// Seed of the random input data and of server arrivals.
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
}

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
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::from("null")
    }
}

/// Files to create after a successful run: nothing is written if the run fails.
struct PendingFiles(Vec<(PathBuf, Vec<u8>)>);

impl PendingFiles {
    fn write_all(self) -> Result<(), String> {
        let mut written: Vec<PathBuf> = Vec::new();
        for (path, bytes) in self.0 {
            let result =
                path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&path, &bytes));
            if let Err(e) = result {
                for p in written {
                    let _ = std::fs::remove_file(p);
                }
                return Err(format!("cannot write {}: {e}", path.display()));
            }
            written.push(path);
        }
        Ok(())
    }
}

struct Sample {
    index: u64,
    activation: usize,
    outputs: Vec<Vec<u8>>,
}

fn default_program() -> Result<aicsim_device::container::ProgramImage, String> {
    let model = aicsim_compiler::zoo::resnet50();
    let opts = aicsim_compiler::CompileOptions { fp16: true, multicast_weights: true, ..Default::default() };
    Ok(aicsim_compiler::compile(&model, None, "resnet50", &opts).map_err(|e| e.to_string())?.image)
}

fn run(args: &Args) -> Result<(), String> {
    if args.device_id != 0 {
        return Err(format!("device {} does not exist (the simulator has device 0)", args.device_id));
    }
    let program = match &args.test_data {
        Some(path) => Program::from_path(path),
        // The embedded default: the zoo's ResNet-50, as `aic-exec -m=zoo:resnet50
        // -convert-to-fp16 -multicast-weights` compiles it.
        None => Program::from_image(default_program()?),
    }
    .map_err(|e| e.to_string())?;
    let limit = match args.time {
        Some(t) if t.is_finite() && t > 0.0 => RunLimit::Duration(Duration::from_secs_f64(t)),
        Some(t) => return Err(format!("--time {t} is not a positive number of seconds")),
        None if args.num_iter == 0 => return Err(String::from("-n 0: nothing to run")),
        None => RunLimit::Count(args.num_iter),
    };
    let (activations, set_size) = match args.scenario {
        Some(Scenario::SingleStream) => (1, 1),
        _ => (args.activations, args.set_size),
    };
    for (flag, v) in [("--target-qps", args.target_qps), ("--latency-bound-ms", args.latency_bound_ms)] {
        if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(format!("{flag} {v} is not a positive number"));
        }
    }
    let limit = match args.scenario {
        Some(Scenario::Server) => {
            let (Some(qps), Some(_)) = (args.target_qps, args.latency_bound_ms) else {
                return Err(String::from("--scenario server needs --target-qps and --latency-bound-ms"));
            };
            let n = match limit {
                RunLimit::Duration(d) => (qps * d.as_secs_f64()).ceil().max(1.0) as u64,
                _ => args.num_iter,
            };
            RunLimit::Arrivals(Arc::new(poisson_arrivals(n, qps, args.seed)))
        }
        _ => limit,
    };
    if args.live_period_ms == 0 {
        return Err(String::from("-r 0: the live report period must be at least 1 ms"));
    }
    let inputs = program.inputs();
    let fixed_inputs: Option<Vec<Vec<u8>>> = if args.input_files.is_empty() {
        None
    } else {
        if args.input_files.len() != inputs.len() {
            return Err(format!(
                "{} input files given, the program has {} inputs",
                args.input_files.len(),
                inputs.len()
            ));
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
        Some(data)
    };
    let device_config = DeviceConfig {
        mode: if args.mode == Mode::Functional { ExecMode::Functional } else { ExecMode::Timing },
        pacing: if args.pace == Pace::Wall { Pacing::Wall } else { Pacing::None },
        ..DeviceConfig::default()
    };
    let needed = u64::from(program.image().num_cores()) * activations as u64;
    if needed > u64::from(device_config.num_nsp) {
        return Err(format!(
            "{} activations x {} cores = {needed} cores, but the device has {}",
            activations,
            program.image().num_cores(),
            device_config.num_nsp
        ));
    }
    let threads = args.threads_per_queue.clamp(1, set_size.max(1));
    if args.verbose {
        eprintln!(
            "aic-runner: program '{}' ({} cores, batch {}), {} activations x set size {}, {} threads per queue, mode {:?}, pace {:?}",
            program.name(),
            program.image().num_cores(),
            program.batch_size(),
            activations,
            set_size,
            threads,
            args.mode,
            args.pace
        );
    }
    let device = Device::open_simulated(KmdConfig { device: device_config, ..KmdConfig::default() })
        .map_err(|e| format!("cannot start the simulated device: {e}"))?;
    let set = InferenceSet::new(Arc::new(device), &program, activations, set_size)
        .and_then(|s| s.with_threads_per_activation(threads))
        .map_err(|e| e.to_string())?
        .with_submit_policy(SubmitPolicy {
            timeout: Duration::from_millis(args.submit_timeout_ms),
            retries: args.submit_retry_count,
        });

    // Like qaic-runner: a few random input sets, generated up front and reused.
    let mut state = args.seed;
    let input_sets: Vec<Vec<Vec<u8>>> = match fixed_inputs {
        Some(data) => vec![data],
        None => (0..4)
            .map(|_| {
                inputs
                    .iter()
                    .map(|b| (0..b.host_size_bytes()).map(|_| (splitmix(&mut state) >> 56) as u8).collect())
                    .collect()
            })
            .collect(),
    };
    let fill = |index: u64, dst: &mut [Vec<u8>]| {
        for (d, s) in dst.iter_mut().zip(&input_sets[index as usize % input_sets.len()]) {
            d.copy_from_slice(s);
        }
    };
    let batch = program.batch_size();
    let profile = |i: u64| i >= args.profiling_start_iter && i < args.profiling_start_iter + args.profiling_num_samples;
    let write_out = |i: u64| {
        args.write_output_dir.is_some()
            && i >= args.write_output_start_iter
            && i < args.write_output_start_iter + args.write_output_num_samples
    };
    let round_trips = Mutex::new(Vec::new());
    let device_times = Mutex::new((Vec::new(), Vec::new(), Vec::new()));
    let latency_rows = Mutex::new(Vec::new());
    let output_samples = Mutex::new(Vec::new());
    let profiled = Mutex::new(Vec::new());
    let profile_error: Mutex<Option<String>> = Mutex::new(None);
    let want_profiles = args.profiling_types.iter().any(|t| *t != ProfilingType::Latency);
    if args.profiling_types.contains(&ProfilingType::Trace) {
        for a in set.activations() {
            a.set_trace(true).map_err(|e| e.to_string())?;
        }
    }
    let completed = AtomicU64::new(0);
    let on_complete = |done: &aicsim_runtime::Completion<'_>| {
        completed.fetch_add(1, Ordering::Relaxed);
        round_trips.lock().push(done.timestamps.total_round_trip().as_secs_f64() * 1e3);
        if let Some(d) = done.device {
            let mut t = device_times.lock();
            t.0.push(d.exec.as_secs_f64() * 1e6);
            t.1.push(d.input_wait.as_secs_f64() * 1e6);
            t.2.push(d.output_wait.as_secs_f64() * 1e6);
        }
        if profile(done.index) {
            latency_rows.lock().push(latency::row(done.index, done, batch));
            if want_profiles {
                match set.activations()[done.activation].run_profile(done.seq) {
                    Ok(run) => profiled.lock().push((done.index, done.activation, done.timestamps, run)),
                    Err(e) => {
                        profile_error
                            .lock()
                            .get_or_insert(format!("cannot read the device profile of inference {}: {e}", done.index));
                    }
                }
            }
        }
        if write_out(done.index) {
            output_samples.lock().push(Sample {
                index: done.index,
                activation: done.activation,
                outputs: done.outputs.to_vec(),
            });
        }
    };
    let finished = AtomicBool::new(false);
    let start = Instant::now();
    let summary = std::thread::scope(|scope| {
        scope.spawn(|| {
            // Live report with -l; otherwise a progress line on runs longer than a few seconds.
            let period = if args.live { Duration::from_millis(args.live_period_ms) } else { Duration::from_secs(3) };
            let mut last = (Instant::now(), 0u64);
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10).min(period));
                if last.0.elapsed() < period {
                    continue;
                }
                let n = completed.load(Ordering::Relaxed);
                let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64() * f64::from(batch);
                if args.live {
                    println!("Live: InferenceCnt {n} Inf/Sec {rate:.3}");
                } else {
                    eprintln!("aic-runner: {:.0} s, {n} inferences, {rate:.1} inf/s", start.elapsed().as_secs_f64());
                }
                last = (Instant::now(), n);
            }
        });
        let summary = set.run(limit, fill, on_complete);
        finished.store(true, Ordering::Relaxed);
        summary
    })
    .map_err(|e| e.to_string())?;

    let mut files = PendingFiles(Vec::new());
    if let Some(dir) = &args.write_output_dir {
        let names: Vec<String> = program.outputs().iter().map(|b| b.name.clone()).collect();
        for s in output_samples.into_inner() {
            for (name, bytes) in names.iter().zip(s.outputs) {
                files.0.push((dir.join(format!("{name}-activation-{}-inf-{}.bin", s.activation, s.index)), bytes));
            }
        }
    }
    if args.profiling_types.contains(&ProfilingType::Latency) {
        let mut rows = latency_rows.into_inner();
        rows.sort_by(|a, b| a[0].total_cmp(&b[0]));
        let text = latency::render(program.name(), activations, set_size, batch, &rows);
        files.0.push((args.profiling_out_dir.join("aic-profiling-program-0-latency.txt"), text.into_bytes()));
    }
    if let Some(e) = profile_error.into_inner() {
        return Err(e);
    }
    let mut profiled = profiled.into_inner();
    profiled.sort_by_key(|p| p.0);
    let clock_hz = device_config.clock_hz;
    if args.profiling_types.contains(&ProfilingType::Stats) {
        for (index, activation, _, run) in &profiled {
            let name = format!("aic-profiling-program-0-activation-{activation}-inf-{index}.txt");
            files.0.push((
                args.profiling_out_dir.join(name),
                profiling::stats_table(program.name(), *activation, *index, clock_hz, run).into_bytes(),
            ));
        }
    }
    if args.profiling_types.contains(&ProfilingType::Trace) {
        let samples: Vec<profiling::TracedInference<'_>> = profiled
            .iter()
            .map(|(index, activation, timestamps, run)| profiling::TracedInference {
                index: *index,
                activation: *activation,
                timestamps: *timestamps,
                run,
            })
            .collect();
        let json = profiling::trace_json(start, clock_hz, activations, program.image().num_cores() as usize, &samples);
        files.0.push((args.profiling_out_dir.join("aic-profiling-program-0-trace.json"), json.into_bytes()));
    }
    let duration_us = summary.elapsed.as_micros().max(1);
    let rate = summary.inferences as f64 * 1e6 / duration_us as f64 * f64::from(batch);
    let mut rts = round_trips.into_inner();
    rts.sort_by(f64::total_cmp);
    let (exec, in_wait, out_wait) = device_times.into_inner();
    let verdict = args.scenario.map(|scenario| {
        let qps = summary.inferences as f64 / summary.elapsed.as_secs_f64();
        let (q, label) = if scenario == Scenario::Server { (0.99, "p99") } else { (0.9, "p90") };
        let latency = stats::percentile(&rts, q);
        let mut reasons = Vec::new();
        if let Some(bound) = args.latency_bound_ms.filter(|_| scenario != Scenario::Offline) {
            if latency > bound {
                reasons.push(format!("{label} latency {latency:.3} ms exceeds the {bound:.3} ms bound"));
            }
        }
        if let Some(target) = args.target_qps.filter(|_| scenario == Scenario::Offline) {
            if rate < target {
                reasons.push(format!("throughput {rate:.1} inf/s is below the {target:.1} target"));
            }
        }
        let head = match scenario {
            Scenario::SingleStream => format!("Scenario single-stream: {label} latency {latency:.3} ms"),
            Scenario::Offline => format!("Scenario offline: {rate:.3} inf/s"),
            Scenario::Server => format!(
                "Scenario server: target {:.3} QPS, achieved {qps:.3} QPS, {label} latency {latency:.3} ms (bound {:.3} ms)",
                args.target_qps.unwrap_or(0.0),
                args.latency_bound_ms.unwrap_or(0.0)
            ),
        };
        let result = if reasons.is_empty() { String::from("VALID") } else { format!("INVALID ({})", reasons.join("; ")) };
        (head, result)
    });
    let device_rows: Vec<(&str, Vec<f64>)> =
        vec![("ExecTimeUs", exec), ("InputWaitTimeUs", in_wait), ("OutputWaitTimeUs", out_wait)];
    if let Some(path) = &args.json {
        let mut j = String::from("{\n");
        j += &format!("  \"program\": {},\n", json_string(program.name()));
        j += &format!("  \"activations\": {}, \"set_size\": {}, \"batch_size\": {},\n", activations, set_size, batch);
        j += &format!(
            "  \"mode\": \"{:?}\", \"pace\": \"{:?}\",
",
            args.mode, args.pace
        )
        .to_lowercase();
        j += &format!(
            "  \"inference_count\": {}, \"total_duration_us\": {}, \"inf_per_sec\": {},\n",
            summary.inferences,
            duration_us,
            json_number(rate)
        );
        j += &format!(
            "  \"latency_ms\": {{\"mean\": {}, \"p50\": {}, \"p90\": {}, \"p99\": {}, \"max\": {}}},\n",
            json_number(stats::mean(&rts)),
            json_number(stats::percentile(&rts, 0.5)),
            json_number(stats::percentile(&rts, 0.9)),
            json_number(stats::percentile(&rts, 0.99)),
            json_number(rts.last().copied().unwrap_or(f64::NAN))
        );
        let dev: Vec<String> = device_rows
            .iter()
            .map(|(name, v)| {
                let mut s = v.clone();
                s.sort_by(f64::total_cmp);
                format!(
                    "\"{name}\": {{\"avg\": {}, \"min\": {}, \"max\": {}, \"std\": {}}}",
                    json_number(stats::mean(&s)),
                    json_number(s.first().copied().unwrap_or(f64::NAN)),
                    json_number(s.last().copied().unwrap_or(f64::NAN)),
                    json_number(stats::std_dev(&s))
                )
            })
            .collect();
        if let Some((head, result)) = &verdict {
            j += &format!("  \"scenario\": {}, \"result\": {},\n", json_string(head), json_string(result));
        }
        j += &format!("  \"device\": {{{}}}\n}}\n", dev.join(", "));
        files.0.push((path.clone(), j.into_bytes()));
    }
    files.write_all()?;

    println!(" ---- Stats ----");
    println!(
        "InferenceCnt {} TotalDuration {}us BatchSize {} Inf/Sec {:.3}",
        summary.inferences, duration_us, batch, rate
    );
    println!(
        "Latency (totalRoundtripTime, ms): p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
        stats::percentile(&rts, 0.5),
        stats::percentile(&rts, 0.9),
        stats::percentile(&rts, 0.99),
        rts.last().copied().unwrap_or(f64::NAN)
    );
    if let Some((head, result)) = &verdict {
        println!("{head}");
        println!("Result: {result}");
    }
    if !args.profiling_types.is_empty() {
        println!("Device Performance: ");
        println!("{:<17}{:<15}{:<15}{:<15}{:<15}", "Metric,", "Avg,", "Min,", "Max,", "Std");
        for (name, mut v) in device_rows {
            v.sort_by(f64::total_cmp);
            let (avg, min, max, std) = (
                stats::mean(&v),
                v.first().copied().unwrap_or(f64::NAN),
                v.last().copied().unwrap_or(f64::NAN),
                stats::std_dev(&v),
            );
            println!(
                "{:<17}{:<15}{:<15}{:<15}{:<15}",
                format!("{name},"),
                format!("{avg:.3},"),
                format!("{min:.3},"),
                format!("{max:.3},"),
                format!("{std:.3}")
            );
        }
    }
    Ok(())
}

fn is_dir_or_missing(p: &Path) -> bool {
    !p.exists() || p.is_dir()
}

fn main() -> ExitCode {
    let args = Args::parse();
    for dir in [args.write_output_dir.as_deref(), Some(args.profiling_out_dir.as_path())].into_iter().flatten() {
        if !is_dir_or_missing(dir) {
            eprintln!("aic-runner: {} exists and is not a directory", dir.display());
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
