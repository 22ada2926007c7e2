//! aic-configurator's command line; `src/bin/aic-configurator.rs` only calls [`main`].
//!
//! ```text
//! aic-configurator model.onnx onnx -onnx-define-symbol-batch-size=batch_size
//!     [-onnx-define-symbol=name,value]... -multicast-weights -convert-to-fp16
//!     -optimized-config-search=search.json [-max-compilation-threads=N] [-time=S]
//!     [-device-id=0] [-set-size N] [-output-dir=DIR] [-compiled-models=N]
//! aic-configurator -model model.onnx -config=search.json -max-parallel-compilations=N
//!     [-search-set-size N] ...        (the newer spelling of the same)
//! ```
//!
//! It logs the search as the card's configurator does (timestamped `[INFO]` lines: the
//! points of each round, each program compiled, each deployment run), prints the
//! optimised search results (the best point each climb reached) and the best
//! configuration, and leaves its work in the output directory
//! (`model_configurator_output` by default): `results.csv` and `results.json` with every
//! configuration evaluated, and
//! `compiled_models/<model>/qpc-cores-<c>-mos-<m>-ols-<o>-bs-<b>-output/programqpc.bin`
//! for the best ones, each runnable with the aic-runner line printed for it. Nothing is
//! written if the search fails.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use parking_lot::Mutex;

use super::{search_with, Config, Evaluation, Objective, Problem, SearchResult, SearchSpec, CALIBRATED_CORES};
use crate::output_files::{self, PendingFiles};
use crate::predict::{DeviceModel, HostModel};
use aicsim_compiler::{CompileOptions, Source};
use aicsim_device::DeviceConfig;

const USAGE: &str = "\
usage: aic-configurator <model.onnx | zoo:NAME> onnx -optimized-config-search=<search.json> [flags]
       aic-configurator -model <model.onnx> -config=<search.json> [flags]
  -onnx-define-symbol-batch-size=<symbol>  the ONNX symbol that is the batch dimension
  -onnx-define-symbol=<name>,<value>       value of another symbolic dimension (repeatable)
  -multicast-weights                       compile with multicast weights
  -convert-to-fp16                         compile in fp16
  -max-compilation-threads=<n>             evaluations in parallel (default: host cores)
  -time=<seconds>                          runner time per evaluation on hardware; the
                                           prediction runs in device time (shown in the
                                           aic-runner command line)
  -device-id=<n>                           the device (the simulator has device 0)
  -set-size <n> | -search-set-size <n>     in-flight inferences per instance when the search
                                           file does not search it (default 10; the
                                           latency objective uses 1)
  -max-parallel-compilations=<n>           the same as -max-compilation-threads
  -ray-address=<addr>                      evaluate each round on a Ray cluster (auto,
                                           host:port, ray://host:port, or local for a
                                           Ray instance of its own); needs the aicsim
                                           Python package and ray (AICSIM_PYTHON or
                                           python3); the same search, the same result
  -output-dir=<dir>                        where results and programs go
                                           (default model_configurator_output)
  -compiled-models=<n>                     compile the n best configurations into
                                           <dir>/compiled_models (default 3; 0: none)
  -report=<file.html>                      also write an HTML page: every configuration
                                           plotted against cores and batch, the best marked
  -retained-state -network-specialization-config=<file>
                                           a language model with a KV cache, compiled as
                                           aic-exec compiles it (prefill and decode entries)
  -prompt-len=<P> -generate=<N>            search its generation (objective
                                           maximize_token_rate): tokens/s of sequences of a
                                           P-token prompt and N tokens
  -max-time-per-token-ms=<T>               only configurations whose mean time per output
                                           token is at most T qualify
  -quantization-precision=Int8|Int16 -input-list-file=<file> | -load-profile=<file> [...]
                                           search int8 (or int16-activation) programs: the
                                           model is calibrated (at batch 1) and quantised
                                           once, as aic-exec does with the same flags";

struct Args {
    model: String,
    spec: String,
    opts: CompileOptions,
    batch_symbol: Option<String>,
    threads: usize,
    time: u32,
    /// The set size given on the command line (the search file may search it).
    set_size: Option<u32>,
    output_dir: PathBuf,
    compiled_models: usize,
    report: Option<PathBuf>,
    quant: crate::exec::QuantArgs,
    /// The quantisation flags as given (but the calibration list: the best program is
    /// compiled from the profile left in the output directory).
    quant_flags: Vec<String>,
    /// The specialisation file as given.
    specializations: Option<String>,
    prompt_len: Option<usize>,
    generate: Option<u32>,
    max_time_per_token_ms: Option<f64>,
    /// Evaluate on this Ray cluster.
    ray_address: Option<String>,
}

fn positive(flag: &str, v: &str) -> Result<u32, String> {
    v.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| format!("{flag}={v}: expected a positive integer"))
}

fn parse(argv: &[String]) -> Result<Option<Args>, String> {
    let mut positional = Vec::new();
    let mut a = Args {
        model: String::new(),
        spec: String::new(),
        opts: CompileOptions::default(),
        batch_symbol: None,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        time: 20,
        set_size: None,
        output_dir: PathBuf::from("model_configurator_output"),
        compiled_models: 3,
        report: None,
        quant: crate::exec::QuantArgs::default(),
        quant_flags: Vec::new(),
        specializations: None,
        prompt_len: None,
        generate: None,
        max_time_per_token_ms: None,
        ray_address: None,
    };
    let mut spec = None;
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let (flag, value) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (arg.as_str(), None),
        };
        let need = || value.ok_or_else(|| format!("{flag} needs a value ({flag}=...)"));
        match flag {
            "-h" | "-help" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "-onnx-define-symbol-batch-size" => a.batch_symbol = Some(need()?.to_string()),
            "-onnx-define-symbol" => {
                let v = need()?;
                let (name, n) = v.split_once(',').ok_or_else(|| format!("{flag}={v}: expected <name>,<value>"))?;
                let n: i64 = n.parse().map_err(|_| format!("{flag}={v}: '{n}' is not an integer"))?;
                a.opts.symbols.insert(name.to_string(), n);
            }
            "-multicast-weights" => a.opts.multicast_weights = true,
            "-retained-state" => a.opts.retained_state = true,
            "-network-specialization-config" => {
                let v = need()?;
                a.opts.specializations = crate::exec::read_specializations(v)?;
                a.specializations = Some(v.to_string());
            }
            "-prompt-len" => a.prompt_len = Some(positive(flag, need()?)? as usize),
            "-generate" => a.generate = Some(positive(flag, need()?)?),
            "-max-time-per-token-ms" => {
                let v = need()?;
                let t: f64 = v
                    .parse()
                    .ok()
                    .filter(|t: &f64| t.is_finite() && *t > 0.0)
                    .ok_or_else(|| format!("{flag}={v}: expected a positive number of milliseconds"))?;
                a.max_time_per_token_ms = Some(t);
            }
            "-convert-to-fp16" => a.opts.fp16 = true,
            "-optimized-config-search" | "-config" => spec = Some(need()?.to_string()),
            "-model" => {
                let v = match value {
                    Some(v) => v.to_string(),
                    None => it.next().ok_or("-model needs a value (-model <model.onnx>)")?.clone(),
                };
                positional.insert(0, v);
            }
            "-max-compilation-threads" | "-max-parallel-compilations" => a.threads = positive(flag, need()?)? as usize,
            "-time" => a.time = positive(flag, need()?)?,
            "-output-dir" => a.output_dir = PathBuf::from(need()?),
            "-report" | "--report" => a.report = Some(PathBuf::from(need()?)),
            "-ray-address" => a.ray_address = Some(need()?.to_string()),
            "-compiled-models" => {
                let v = need()?;
                a.compiled_models = v.parse().map_err(|_| format!("{flag}={v}: expected a whole number"))?;
            }
            "-device-id" => {
                let d = need()?;
                if d != "0" {
                    return Err(format!("device {d} does not exist (the simulator has device 0)"));
                }
            }
            "-set-size" | "-search-set-size" => {
                let v = match value {
                    Some(v) => v.to_string(),
                    None => it.next().ok_or_else(|| format!("{flag} needs a value ({flag} N)"))?.clone(),
                };
                a.set_size = Some(positive(flag, &v)?);
            }
            f if crate::exec::QuantArgs::is_flag(f) => {
                a.quant.take(flag, value)?;
                if f != "-input-list-file" {
                    a.quant_flags.push(arg.clone());
                }
            }
            f if f.starts_with('-') => return Err(format!("unknown flag {f} (see -h)")),
            _ => positional.push(arg.clone()),
        }
    }
    match positional.as_slice() {
        [m, kind] if kind == "onnx" => a.model = m.clone(),
        [m] => a.model = m.clone(),
        [_, kind] => return Err(format!("model type '{kind}' is not supported (only onnx)")),
        [] => return Err("no model: aic-configurator <model.onnx> onnx -optimized-config-search=<file> (or -model <model.onnx> -config=<file>)".into()),
        more => return Err(format!("too many positional arguments: {}", more.join(" "))),
    }
    a.spec = spec.ok_or("no search file: give -optimized-config-search=<search.json> (or -config=<search.json>)")?;
    a.quant.check()?;
    match (a.prompt_len, a.generate) {
        (Some(_), Some(_)) => {
            if !a.opts.retained_state || a.opts.specializations.is_empty() {
                return Err("-generate: the model's KV cache needs -retained-state and -network-specialization-config (prefill and decode), as aic-exec compiles it".into());
            }
        }
        (None, None) if a.max_time_per_token_ms.is_some() => {
            return Err("-max-time-per-token-ms bounds a generation: give -prompt-len and -generate".into())
        }
        (None, None) => {}
        _ => return Err("-prompt-len and -generate go together".into()),
    }
    if a.ray_address.is_some() && (a.quant.input_list.is_some() || a.quant.load_profile.is_some()) {
        return Err("-ray-address: an int8 search runs on one machine only (leave out -ray-address)".into());
    }
    if a.quant.dump_profile.is_some() {
        return Err("-dump-profile: aic-exec writes profiles; aic-configurator takes one with -load-profile".into());
    }
    Ok(Some(a))
}

/// Fails at once, before any search, if `dir` cannot take the results: creates it and
/// stages (then drops) a file in it.
fn check_writable(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .and_then(|()| output_files::stage(dir, "results.csv", b"").map(drop))
        .map_err(|e| format!("-output-dir={}: cannot write there: {e}", dir.display()))
}

/// Where `-report` goes: its directory (which must exist) and file name.
fn report_target(path: &Path) -> Result<(PathBuf, String), String> {
    let (dir, name) = output_files::user_file(path).map_err(|e| format!("-report={e}"))?;
    if !dir.is_dir() {
        return Err(format!("-report={}: directory {} does not exist", path.display(), dir.display()));
    }
    Ok((dir, name))
}

/// The `-report` page: every evaluation, the best marked.
fn report_html(argv: &[String], result: &SearchResult, objective: Objective, unit: &str) -> String {
    let explored: Vec<crate::report::Explored> = result
        .evaluated
        .iter()
        .map(|e| crate::report::Explored {
            label: e.config.to_string(),
            cores: e.config.cores,
            bs: e.config.bs,
            instances: e.config.instances,
            value: e.objective(objective),
            detail: match &e.result {
                Ok(p) => format!(
                    "{:.1} inf/s, host round trip {:.3} ms (p99 {:.3}), device {:.3} ms",
                    p.inf_per_sec, p.host_round_trip.mean, p.host_round_trip.p99, p.device_exec.mean
                ),
                Err(why) => why.clone(),
            },
        })
        .collect();
    let best = result.evaluated.iter().position(|e| e.config == result.best.config).unwrap_or(0);
    let command = format!("aic-configurator {}", argv.join(" "));
    crate::report::configurator_html(&command, unit, &explored, best)
}

/// The model's name in the output folder: its file's stem (`model` for `model.onnx`),
/// or the zoo model's name.
fn model_name(model: &str) -> String {
    let name = model.strip_prefix("zoo:").map(str::to_string).unwrap_or_else(|| {
        Path::new(model).file_stem().map_or_else(|| model.to_string(), |s| s.to_string_lossy().into_owned())
    });
    output_files::file_component(&name)
}

/// The directory of a configuration's program, as the card's configurator names it:
/// `compiled_models/<model>/qpc-cores-<c>-mos-<m>-ols-<o>-bs-<b>-output` (its compiler
/// parameters; instances and set size are the runner's).
fn qpc_dir(out: &Path, model: &str, c: &Config) -> PathBuf {
    out.join("compiled_models")
        .join(model_name(model))
        .join(format!("qpc-cores-{}-mos-{}-ols-{}-bs-{}-output", c.cores, c.mos, c.ols, c.bs))
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Every configuration evaluated, one row each, best first.
fn results_csv(result: &SearchResult, objective: Objective) -> String {
    let mut out = String::from(
        "rank,cores,mos,ols,batchSize,instances,setSize,status,infPerSec,latencyMeanMs,latencyP99Ms,deviceExecMs,error\n",
    );
    let ranked = result.ranked(objective, usize::MAX);
    let failed = result.evaluated.iter().filter(|e| e.result.is_err());
    for (i, e) in ranked.iter().copied().chain(failed).enumerate() {
        let c = e.config;
        let head = format!("{},{},{},{},{},{},{}", i + 1, c.cores, c.mos, c.ols, c.bs, c.instances, c.set_size);
        match &e.result {
            Ok(p) => {
                out += &format!(
                    "{head},OK,{:.3},{:.4},{:.4},{:.4},\n",
                    p.inf_per_sec, p.host_round_trip.mean, p.host_round_trip.p99, p.device_exec.mean
                )
            }
            Err(why) => out += &format!("{head},FAILED,,,,,{}\n", csv_field(why)),
        }
    }
    out
}

/// Now, as the card's configurator stamps its log lines (UTC):
/// `2025-04-29 01:39:21.809`.
fn timestamp() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, ms) = (now.as_secs(), now.subsec_millis());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{ms:03}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// One log line, as the card's configurator writes them.
fn info(message: &str) {
    println!("{} - [INFO]: {message}", timestamp());
}

fn seed_list(points: &[Config]) -> String {
    format!("[{}]", points.iter().map(Config::seed_form).collect::<Vec<_>>().join(", "))
}

/// The search's log: each round's points, each program compiled, each deployment run,
/// and what each evaluation gave (each point once).
struct SearchLog<'a> {
    model: &'a str,
    out: &'a Path,
    objective: Objective,
    seen: Mutex<HashSet<Config>>,
}

impl super::SearchObserver for SearchLog<'_> {
    fn starting(&self, initial: &[Config]) {
        info(&format!("Running optimization algorithm from initial values: {}", seed_list(initial)));
    }

    fn round(&self, points: &[Config]) {
        info(&format!("Evaluating the following SearchPoints: {}", seed_list(points)));
    }

    fn compiling(&self, c: &Config) {
        info(&format!("Compiling model: compilerParams={}", c.compiler_params()));
    }

    fn running(&self, c: &Config) {
        info(&format!(
            "Running the following set of models on device ID 0: {{\"{}\": (compiledModelPath={}, runnerParams=instances={}, setSize={})}}",
            model_name(self.model),
            qpc_dir(self.out, self.model, c).display(),
            c.instances,
            c.set_size
        ));
    }

    fn evaluated(&self, e: &Evaluation) {
        if !self.seen.lock().insert(e.config) {
            return;
        }
        let line = match (&e.result, self.objective) {
            (Ok(p), Objective::MaximizeTokenRate) => format!(
                "{:.2} tokens/sec, {:.3} ms per token, first token {:.3} ms  {}",
                p.inf_per_sec,
                p.host_round_trip.mean,
                p.total_round_trip.mean,
                if e.within_bound { "SUCCESS" } else { "OVER_TIME_PER_TOKEN_BOUND" }
            ),
            (Ok(p), Objective::MaximizeInfRate) => format!("{:.2} inf/sec  SUCCESS", p.inf_per_sec),
            (Ok(p), Objective::MinimizeLatency) => format!("{:.2} micro-sec  SUCCESS", p.host_round_trip.mean * 1e3),
            (Err(why), _) => format!("FAILURE ({why})"),
        };
        info(&format!("Evaluated SearchPoint {}: {line}", e.config.seed_form()));
    }
}

/// The status word of a climb, in the card's configurator's terms.
fn status_word(climb: &super::Climb) -> &'static str {
    match (climb.status, &climb.best.result) {
        (_, Err(_)) => "FAILURE",
        ("converged", _) => "SUCCESS",
        ("budget", _) => "MAX_FUNC_EVAL_REACHED",
        _ => "FAILURE",
    }
}

/// The optimised search results as the card's configurator prints them: one row per
/// initial value, with the best point its climb reached.
fn results_table(result: &SearchResult, objective: Objective, unit: &str) -> String {
    let header = ["", "OptimizerStatus", "InitialValue", "cores", "mos", "ols", "batchSize", "instances", "setSize"];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    rows[0].push(format!("Objective ({unit})"));
    for (i, climb) in result.climbs.iter().enumerate() {
        let b = climb.best.config;
        let value = match (climb.best.objective(objective), objective) {
            (None, _) => "-".to_string(),
            (Some(ms), Objective::MinimizeLatency) => format!("{:.2}", ms * 1e3),
            (Some(v), _) => format!("{v:.2}"),
        };
        rows.push(vec![
            i.to_string(),
            status_word(climb).to_string(),
            climb.initial.seed_form(),
            b.cores.to_string(),
            format!("[{}]", b.mos),
            b.ols.to_string(),
            b.bs.to_string(),
            b.instances.to_string(),
            b.set_size.to_string(),
            value,
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(v, w)| format!("{v:>w$}")).collect();
        out += &format!("{}\n", cells.join("  "));
    }
    out
}

fn run(argv: &[String]) -> Result<(), String> {
    let Some(args) = parse(argv)? else { return Ok(()) };
    let text = std::fs::read_to_string(&args.spec).map_err(|e| format!("{}: {e}", args.spec))?;
    let started = Instant::now();
    let spec = SearchSpec::parse(&text, args.set_size).map_err(|e| format!("{}: {e}", args.spec))?;
    match (spec.objective, args.generate.is_some()) {
        (Objective::MaximizeTokenRate, false) => {
            return Err(format!(
                "{}: maximize_token_rate is a generation's objective: give -prompt-len and -generate",
                args.spec
            ))
        }
        (Objective::MaximizeInfRate | Objective::MinimizeLatency, true) => {
            return Err(format!("{}: a generation is searched with \"objective\": \"maximize_token_rate\"", args.spec))
        }
        _ => {}
    }
    let mut source = Source::load(&args.model).map_err(|e| e.to_string())?;
    // Quantised once, calibrated at batch 1; every configuration compiles the QDQ model.
    let mut at_batch_1 = args.opts.clone();
    if let Some(symbol) = &args.batch_symbol {
        at_batch_1.symbols.insert(symbol.clone(), 1);
    }
    if let Some(report) = &args.report {
        report_target(report)?;
    }
    check_writable(&args.output_dir)?;
    // What calibration learnt is left in the output directory, for aic-exec to compile
    // the best configuration with (`-load-profile`).
    let mut quant = args.quant.clone();
    if quant.input_list.is_some() && !quant.no_quant {
        quant.dump_profile = Some(args.output_dir.join("profile.json").display().to_string());
    }
    let quantised = crate::exec::quantise(&mut source, &quant, &at_batch_1)?;
    for line in &quantised.lines {
        println!("{line}");
    }
    let problem = Problem {
        source,
        base: args.opts.clone(),
        batch_symbol: args.batch_symbol.clone(),
        device: DeviceModel::from(&DeviceConfig { num_nsp: 14, ..DeviceConfig::default() }),
        host: HostModel::default(),
        measured: 6,
        generation: args.generate.map(|tokens| super::GenerationGoal {
            prompt_len: args.prompt_len.unwrap_or(1),
            tokens,
            sequences: 2,
            max_time_per_token_ms: args.max_time_per_token_ms,
        }),
    };
    let objective_name = match spec.objective {
        Objective::MaximizeInfRate => "maximize_inf_rate",
        Objective::MinimizeLatency => "minimize_latency",
        Objective::MaximizeTokenRate => "maximize_token_rate",
    };
    // Connected before anything is said: a cluster that cannot be reached is one line.
    let ray = match &args.ray_address {
        Some(address) => {
            let (evaluator, cluster) = super::ray::RayEvaluator::start(&problem, address, &args.model)?;
            Some((evaluator, address, cluster))
        }
        None => None,
    };
    info(&format!("Starting aic-configurator {}", argv.join(" ")));
    let out = &args.output_dir;
    let set_sizes = if spec.set_size.min == spec.set_size.max {
        format!("set size {}", spec.set_size.min)
    } else {
        format!("set size {}..={}", spec.set_size.min, spec.set_size.max)
    };
    info(&format!(
        "Running optimized search of {} ({objective_name}, at most {} evaluations, {set_sizes}, {} threads, {} NSP cores)",
        args.model, spec.max_func_eval, args.threads, problem.device.num_nsp
    ));
    let log = SearchLog { model: &args.model, out, objective: spec.objective, seen: Mutex::default() };
    let t = Instant::now();
    let result = match &ray {
        Some((ray, address, cluster)) => {
            info(&format!("Evaluating on the Ray cluster at {address}: {cluster}"));
            super::search_distributed(&problem, &spec, ray, &log)
        }
        None => search_with(&problem, &spec, args.threads, &log),
    };
    let took = t.elapsed();
    let unit = match spec.objective {
        Objective::MaximizeInfRate => "inf/sec",
        Objective::MinimizeLatency => "micro-sec",
        Objective::MaximizeTokenRate => "tokens/sec",
    };
    info(&format!(
        "Optimization algorithm finished run which started from initial values: {}",
        seed_list(&spec.initial_values)
    ));
    info("Optimized search results:");
    print!("{}", results_table(&result, spec.objective, unit));
    for (i, c) in result.climbs.iter().enumerate() {
        if let Err(e) = &c.best.result {
            println!("{i}: {e}");
        }
    }
    println!(
        "Search took {:.1} s: {} configurations evaluated, {} programs compiled",
        took.as_secs_f64(),
        result.evaluations(),
        result.compiles
    );
    let best = &result.best;
    let p = best.result.as_ref().map_err(|e| format!("no configuration could be evaluated: {e}"))?;
    let c = best.config;
    if p.generation {
        if !best.within_bound {
            return Err(format!(
                "no configuration evaluated keeps the time per token within {} ms (the nearest: {c}, {:.3} ms)",
                args.max_time_per_token_ms.unwrap_or(f64::NAN),
                p.host_round_trip.mean
            ));
        }
        println!(
            "Best configuration: cores={} mos={} ols={} batchSize={} instances={} setSize={}: {:.1} tokens/s, time per output token mean {:.3} ms (p99 {:.3}), time to first token mean {:.3} ms",
            c.cores, c.mos, c.ols, c.bs, c.instances, c.set_size, p.inf_per_sec, p.host_round_trip.mean, p.host_round_trip.p99, p.total_round_trip.mean
        );
    } else {
        println!(
            "Best configuration: cores={} mos={} ols={} batchSize={} instances={} setSize={}: {:.2} inf/s, host round trip mean {:.3} ms (p99 {:.3}), device time per inference {:.3} ms",
            c.cores, c.mos, c.ols, c.bs, c.instances, c.set_size, p.inf_per_sec, p.host_round_trip.mean, p.host_round_trip.p99, p.device_exec.mean
        );
    }
    if c.cores > CALIBRATED_CORES {
        println!(
            "Note: {} cores per instance is beyond the calibrated range (no measured row has more than {CALIBRATED_CORES}; docs/calibration.md), so this prediction is the least certain.",
            c.cores
        );
        if let Some(e) = result.best_within(CALIBRATED_CORES, spec.objective) {
            let v = e.objective(spec.objective).unwrap_or(f64::NAN);
            println!("Best evaluated within it: {}: {v:.3} {unit}", e.config);
        }
    }

    // What the search leaves behind: the results, and the best programs compiled.
    let out = &args.output_dir;
    let mut files = PendingFiles::default();
    if let Some((_, json)) = &quantised.profile {
        files.push(&args.output_dir, "profile.json".into(), json.clone().into_bytes());
    }
    files.push(out, "results.csv".into(), results_csv(&result, spec.objective).into_bytes());
    let kept = result.ranked(spec.objective, args.compiled_models);
    let json = serde_json::json!({
        "model": args.model,
        "objective": objective_name,
        "best": best.to_json(),
        "compiledModels": kept.iter().map(|e| qpc_dir(out, &args.model, &e.config).display().to_string()).collect::<Vec<_>>(),
        "evaluations": result.ranked(spec.objective, usize::MAX).into_iter()
            .chain(result.evaluated.iter().filter(|e| e.result.is_err()))
            .map(Evaluation::to_json).collect::<Vec<_>>(),
    });
    let json = serde_json::to_string_pretty(&json).expect("plain JSON values") + "\n";
    files.push(out, "results.json".into(), json.into_bytes());
    if let Some(path) = &args.report {
        let (dir, name) = report_target(path)?;
        let html = report_html(argv, &result, spec.objective, unit);
        files.push(&dir, name, html.into_bytes());
    }
    let mut programs = HashSet::new();
    for e in &kept {
        // Configurations that differ in instances or set size run the same program.
        if !programs.insert(qpc_dir(out, &args.model, &e.config)) {
            continue;
        }
        let options = problem.options(&e.config);
        if args.generate.is_some() {
            let specs: Vec<_> = options
                .specializations
                .iter()
                .map(|s| {
                    s.iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.to_string())))
                        .collect::<serde_json::Map<_, _>>()
                })
                .collect();
            let text = serde_json::to_string_pretty(&serde_json::json!({ "specializations": specs }))
                .expect("plain JSON")
                + "\n";
            let file = qpc_dir(out, &args.model, &e.config).with_extension("specializations.json");
            let (dir, name) = (
                file.parent().expect("under the output dir").to_path_buf(),
                file.file_name().expect("a name").to_string_lossy().into_owned(),
            );
            files.push(&dir, name, text.into_bytes());
        }
        let compiled = problem.source.compile(&options).map_err(|err| {
            format!("recompiling {} for {}: {err}", e.config, qpc_dir(out, &args.model, &e.config).display())
        })?;
        files.push(&qpc_dir(out, &args.model, &e.config), "programqpc.bin".into(), compiled.image.to_bytes());
    }
    for written in files.write_all()? {
        written.announce();
    }

    let mut exec = format!("aic-exec -m={}", args.model);
    let mut symbols: Vec<_> = args.opts.symbols.iter().collect();
    symbols.sort();
    if let Some(sym) = &args.batch_symbol {
        exec += &format!(" -onnx-define-symbol={sym},{}", c.bs);
    }
    for (k, v) in symbols {
        exec += &format!(" -onnx-define-symbol={k},{v}");
    }
    if args.generate.is_some() {
        // The specialisations at the best batch, left beside the program.
        let file = qpc_dir(out, &args.model, &c).with_extension("specializations.json");
        exec += &format!(" -retained-state -network-specialization-config={}", file.display());
        exec += &format!(" -aic-num-cores={} -mos={} -ols={}", c.cores, c.mos, c.ols);
    } else {
        exec += &format!(" -aic-num-cores={} -mos={} -ols={} -batchsize={}", c.cores, c.mos, c.ols, c.bs);
    }
    if args.opts.multicast_weights {
        exec += " -multicast-weights";
    }
    if args.opts.fp16 {
        exec += " -convert-to-fp16";
    }
    exec += &args.quant_flags.iter().map(|f| format!(" {f}")).collect::<String>();
    if let Some((path, _)) = &quantised.profile {
        exec += &format!(" -load-profile={}", path.display());
    }
    let best_dir = qpc_dir(out, &args.model, &c);
    exec += &format!(" -aic-hw -aic-hw-version=2.0 -compile-only -aic-binary-dir={}", best_dir.display());
    println!("Compile it with:\n  {exec}");
    let runner = |c: &Config| match (args.prompt_len, args.generate) {
        (Some(p), Some(n)) => {
            format!(
                "aic-runner -t {} -a {} --prompt-len {p} --generate {n} --time {}",
                qpc_dir(out, &args.model, c).display(),
                c.instances,
                args.time
            )
        }
        _ => {
            format!(
                "aic-runner -t {} -a {} -S {} --time {}",
                qpc_dir(out, &args.model, c).display(),
                c.instances,
                c.set_size,
                args.time
            )
        }
    };
    println!("Run it with:\n  {}", runner(&c));
    if kept.len() > 1 {
        println!("The next best, compiled too:");
        for e in &kept[1..] {
            println!("  {}", runner(&e.config));
        }
    }
    let t = started.elapsed();
    let (h, m, sec) = (t.as_secs() / 3600, t.as_secs() / 60 % 60, t.as_secs() % 60);
    info(&format!("Total execution time {h:02}:{m:02}:{sec:02}.{:03}", t.subsec_millis()));
    Ok(())
}

/// aic-configurator's whole program: parses the command line, searches, prints.
pub fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&argv) {
        eprintln!("aic-configurator: {e}");
        std::process::exit(2);
    }
}
