//! aic-configurator's command line; `src/bin/aic-configurator.rs` only calls [`main`].
//!
//! ```text
//! aic-configurator model.onnx onnx -onnx-define-symbol-batch-size=batch_size
//!     [-onnx-define-symbol=name,value]... -multicast-weights -convert-to-fp16
//!     -optimized-config-search=search.json [-max-compilation-threads=N] [-time=S]
//!     [-device-id=0] [-set-size N]
//! ```

use std::time::Instant;

use super::{search, Objective, Problem, SearchSpec, CALIBRATED_CORES};
use crate::predict::{DeviceModel, HostModel};
use aicsim_compiler::{CompileOptions, Source};
use aicsim_device::DeviceConfig;

const USAGE: &str = "\
usage: aic-configurator <model.onnx | zoo:NAME> onnx -optimized-config-search=<search.json> [flags]
  -onnx-define-symbol-batch-size=<symbol>  the ONNX symbol that is the batch dimension
  -onnx-define-symbol=<name>,<value>       value of another symbolic dimension (repeatable)
  -multicast-weights                       compile with multicast weights
  -convert-to-fp16                         compile in fp16
  -max-compilation-threads=<n>             evaluations in parallel (default: host cores)
  -time=<seconds>                          runner time per evaluation on hardware; the
                                           prediction runs in device time (shown in the
                                           aic-runner command line)
  -device-id=<n>                           the device (the simulator has device 0)
  -set-size <n>                            in-flight inferences per instance (default 2;
                                           the latency objective uses 1)";

struct Args {
    model: String,
    spec: String,
    opts: CompileOptions,
    batch_symbol: Option<String>,
    threads: usize,
    time: u32,
    set_size: u32,
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
        set_size: 2,
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
            "-convert-to-fp16" => a.opts.fp16 = true,
            "-optimized-config-search" => spec = Some(need()?.to_string()),
            "-max-compilation-threads" => a.threads = positive(flag, need()?)? as usize,
            "-time" => a.time = positive(flag, need()?)?,
            "-device-id" => {
                let d = need()?;
                if d != "0" {
                    return Err(format!("device {d} does not exist (the simulator has device 0)"));
                }
            }
            "-set-size" => {
                let v = match value {
                    Some(v) => v.to_string(),
                    None => it.next().ok_or("-set-size needs a value (-set-size N)")?.clone(),
                };
                a.set_size = positive(flag, &v)?;
            }
            f if f.starts_with('-') => return Err(format!("unknown flag {f} (see -h)")),
            _ => positional.push(arg.clone()),
        }
    }
    match positional.as_slice() {
        [m, kind] if kind == "onnx" => a.model = m.clone(),
        [m] => a.model = m.clone(),
        [_, kind] => return Err(format!("model type '{kind}' is not supported (only onnx)")),
        [] => return Err("no model: aic-configurator <model.onnx> onnx -optimized-config-search=<file>".into()),
        more => return Err(format!("too many positional arguments: {}", more.join(" "))),
    }
    a.spec = spec.ok_or("no search file: give -optimized-config-search=<search.json>")?;
    Ok(Some(a))
}

fn run(argv: &[String]) -> Result<(), String> {
    let Some(args) = parse(argv)? else { return Ok(()) };
    let text = std::fs::read_to_string(&args.spec).map_err(|e| format!("{}: {e}", args.spec))?;
    let spec = SearchSpec::parse(&text).map_err(|e| format!("{}: {e}", args.spec))?;
    let source = Source::load(&args.model).map_err(|e| e.to_string())?;
    let problem = Problem {
        source,
        base: args.opts.clone(),
        batch_symbol: args.batch_symbol.clone(),
        device: DeviceModel::from(&DeviceConfig { num_nsp: 14, ..DeviceConfig::default() }),
        host: HostModel::default(),
        set_size: args.set_size,
        measured: 6,
    };
    let objective_name = match spec.objective {
        Objective::MaximizeInfRate => "maximize_inf_rate",
        Objective::MinimizeLatency => "minimize_latency",
    };
    println!(
        "Searching {} ({objective_name}, at most {} evaluations, {} threads, {} NSP cores)",
        args.model, spec.max_func_eval, args.threads, problem.device.num_nsp
    );
    let t = Instant::now();
    let result = search(&problem, &spec, args.threads);
    let took = t.elapsed();
    let unit = match spec.objective {
        Objective::MaximizeInfRate => "inf/s",
        Objective::MinimizeLatency => "latency(ms)",
    };
    println!(
        "{:<10} {:<44} {:>5} {:>4} {:>4} {:>9} {:>9} {:>12}",
        "status", "initial value", "cores", "mos", "ols", "batchSize", "instances", unit
    );
    for c in &result.climbs {
        let b = &c.best;
        let objective = b.objective(spec.objective).map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
        println!(
            "{:<10} {:<44} {:>5} {:>4} {:>4} {:>9} {:>9} {:>12}",
            c.status,
            c.initial.to_string(),
            b.config.cores,
            b.config.mos,
            b.config.ols,
            b.config.bs,
            b.config.instances,
            objective
        );
        if let Err(e) = &b.result {
            println!("           ({e})");
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
    println!(
        "Best configuration: cores={} mos={} ols={} batchSize={} instances={}: {:.2} inf/s, host round trip mean {:.3} ms (p99 {:.3}), device time per inference {:.3} ms",
        c.cores, c.mos, c.ols, c.bs, c.instances, p.inf_per_sec, p.host_round_trip.mean, p.host_round_trip.p99, p.device_exec.mean
    );
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
    let mut exec = format!("aic-exec -m={}", args.model);
    let mut symbols: Vec<_> = args.opts.symbols.iter().collect();
    symbols.sort();
    if let Some(sym) = &args.batch_symbol {
        exec += &format!(" -onnx-define-symbol={sym},{}", c.bs);
    }
    for (k, v) in symbols {
        exec += &format!(" -onnx-define-symbol={k},{v}");
    }
    exec += &format!(" -aic-num-cores={} -mos={} -ols={} -batchsize={}", c.cores, c.mos, c.ols, c.bs);
    if args.opts.multicast_weights {
        exec += " -multicast-weights";
    }
    if args.opts.fp16 {
        exec += " -convert-to-fp16";
    }
    exec += " -aic-hw -aic-hw-version=2.0 -compile-only -aic-binary-dir=./best-config";
    let set_size = if spec.objective == Objective::MinimizeLatency { 1 } else { args.set_size };
    println!("Compile it with:\n  {exec}");
    println!("Run it with:\n  aic-runner -t ./best-config -a {} -S {set_size} --time {}", c.instances, args.time);
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
