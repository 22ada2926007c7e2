//! aic-latency-stats: summarises latency profiles written by aic-runner.

use std::path::PathBuf;
use std::process::ExitCode;

use aicsim::latency;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "aic-latency-stats",
    about = "Summarise aic-runner latency profiles: each file, then all activations combined",
    version
)]
struct Args {
    /// Latency files (aic-profiling-program-<p>-latency.txt).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Keep only the middle N percent of the samples of each metric.
    #[arg(short = 'k', value_name = "N")]
    keep: Option<f64>,
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
    for path in &args.files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("aic-latency-stats: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        match latency::parse(&text) {
            Ok(t) => tables.push(t),
            Err(e) => {
                eprintln!("aic-latency-stats: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    // Several files (one per activation): each on its own, then all of them together.
    let mut text = String::new();
    if tables.len() > 1 {
        for (path, table) in args.files.iter().zip(&tables) {
            match latency::summarise(std::slice::from_ref(table), args.keep) {
                Ok(summary) => {
                    text += &format!("{}\n", latency::render_summary(&format!("{}:", path.display()), &summary))
                }
                Err(e) => {
                    eprintln!("aic-latency-stats: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
        }
    }
    match latency::summarise(&tables, args.keep) {
        Ok(summary) => {
            print!("{text}{}", latency::render_summary("All activations combined:", &summary));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("aic-latency-stats: {e}");
            ExitCode::from(2)
        }
    }
}
