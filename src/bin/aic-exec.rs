//! aic-exec: compiles an ONNX model (or a built-in zoo model) into an aicsim program
//! container, with qaic-exec's single-dash flags:
//!
//! ```text
//! aic-exec -m=model.onnx -onnx-define-symbol=batch_size,4 -mos=1 -ols=2 -aic-num-cores=2
//!          -batchsize=4 -multicast-weights -convert-to-fp16 -aic-hw -aic-hw-version=2.0
//!          -compile-only -aic-binary-dir=./out [-aic-perf-metrics] [-v]
//! ```
//!
//! Writes `DIR/programqpc.bin` (and the `-aic-perf-metrics-json` file) atomically, not
//! through a link planted under the name: a failed compile leaves no file. Errors are
//! one line on stderr and exit status 2.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aicsim::exec::{parse_exec_args, perf_report, print_perf_report, ExecArgs};
use aicsim::output_files::{self, PendingFiles};
use aicsim_compiler::Source;

fn run(args: &ExecArgs) -> Result<(), String> {
    if args.dump_supported_ops {
        print!("{}", aicsim::exec::supported_ops_listing());
        return Ok(());
    }
    let source = args.model.as_deref().ok_or("no model: give -m=<model.onnx> or -m=zoo:<name>")?;
    let dir = args.binary_dir.as_deref().ok_or("no output directory: give -aic-binary-dir=<dir>")?;
    match source.strip_prefix("zoo:") {
        Some(name) => println!("Reading ONNX Model from built-in zoo model {name}"),
        None => println!("Reading ONNX Model from {source}"),
    }
    let mut source = Source::load(source).map_err(|e| e.to_string())?;
    let quantised = aicsim::exec::quantise(&mut source, &args.quant, &args.options)?;
    for line in &quantised.lines {
        println!("{line}");
    }
    let compiled = source.compile(&args.options).map_err(|e| e.to_string())?;
    let precision = match (quantised.report.is_some(), args.options.fp16) {
        (true, true) => "INT8 (float layers in FP16)",
        (true, false) => "INT8 (float layers in FP32)",
        (false, true) => "FP16",
        (false, false) => "FP32",
    };
    println!("Compiling model with {precision} precision.");
    let stats_warning = aicsim::exec::stats_batch_warning(args.stats_batch_size, compiled.image.batch_size);
    for w in compiled.warnings.iter().chain(&stats_warning) {
        eprintln!("Warning: {w}");
    }
    if args.verbose {
        println!(
            "{} layers on {} core(s), {} instruction(s) in all, batch {}",
            compiled.graph.layers.len(),
            compiled.image.num_cores(),
            compiled.image.cores.iter().map(Vec::len).sum::<usize>(),
            compiled.image.batch_size
        );
    }
    // The program, and the metrics' JSON when asked for, are put in place together once
    // everything has succeeded: a failure leaves neither.
    let dir = PathBuf::from(dir);
    let mut files = PendingFiles::default();
    files.push(&dir, "programqpc.bin".into(), compiled.image.to_bytes());
    if let Some((file, json)) = quantised.profile {
        let (parent, name) = output_files::user_file(&file).map_err(|e| format!("-dump-profile={e}"))?;
        files.push(&parent, name, json.into_bytes());
    }
    if args.perf_metrics || args.perf_metrics_json.is_some() {
        let report = perf_report(&compiled, args.stats_batch_size)?;
        if args.perf_metrics {
            print_perf_report(&report);
        }
        if let Some(file) = &args.perf_metrics_json {
            let (parent, name) =
                output_files::user_file(Path::new(file)).map_err(|e| format!("-aic-perf-metrics-json={e}"))?;
            let json = serde_json::to_string_pretty(&report).expect("plain values") + "\n";
            files.push(&parent, name, json.into_bytes());
        }
    }
    for written in files.write_all()? {
        println!("Writing file: {}", written.display());
    }
    if !args.compile_only {
        println!("Note: aic-exec only compiles; run the program with: aic-runner -t {}", dir.display());
    }
    for t in &args.profiling_types {
        println!(
            "Profiling ({t}): the program can be profiled; take the profile with: aic-runner -t {} --aic-profiling-type {t}",
            dir.display()
        );
    }
    println!("Generated binary is present at {}", dir.display());
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_exec_args(&argv) {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aic-exec: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aic-exec: {e}");
            ExitCode::from(2)
        }
    }
}
