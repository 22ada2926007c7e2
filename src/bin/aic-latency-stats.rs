//! aic-latency-stats: summarises latency profiles written by aic-runner, in the layout of
//! the SDK's latency summariser: all files combined, then the mean round trip.

use std::path::PathBuf;
use std::process::ExitCode;

use aicsim::latency;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "aic-latency-stats",
    about = "Summarise aic-runner latency profiles (aic-profiling-program-<p>-latency.txt): all activations combined",
    version
)]
struct Args {
    /// Latency files (aic-profiling-program-<p>-latency.txt).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Keep only the middle N percent of each file's samples, in the order they were
    /// taken (drops warm-up and drain at both ends).
    #[arg(short = 'k', long = "keepOnlyMiddlePct", value_name = "N")]
    keep: Option<f64>,
    /// 5 or more: each file's name and its own table before the combined one.
    #[arg(short = 'v', long = "verbosity", default_value_t = 2)]
    verbosity: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(k) = args.keep {
        if !(k > 0.0 && k <= 100.0) {
            eprintln!("aic-latency-stats: -k {k} is not a percentage in (0, 100]");
            return ExitCode::from(2);
        }
    }
    let mut tables = Vec::new();
    let mut text = String::new();
    for path in &args.files {
        let table = match std::fs::read_to_string(path) {
            Ok(t) => latency::parse(&t),
            Err(e) => {
                eprintln!("aic-latency-stats: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let table = match table {
            Ok(t) => args.keep.map_or(t.clone(), |k| t.keep_middle(k)),
            Err(e) => {
                eprintln!("aic-latency-stats: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        if args.verbosity >= 5 {
            match latency::summarise(std::slice::from_ref(&table)) {
                Ok(summary) => text += &latency::render_summary(&path.display().to_string(), &summary),
                Err(e) => {
                    eprintln!("aic-latency-stats: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
        }
        tables.push(table);
    }
    match latency::summarise(&tables) {
        Ok(summary) => {
            let headline = latency::render_headline(&summary).unwrap_or_default();
            print!("{text}{}{headline}", latency::render_summary("All activations combined:", &summary));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("aic-latency-stats: {e}");
            ExitCode::from(2)
        }
    }
}
