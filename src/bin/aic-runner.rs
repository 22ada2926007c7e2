//! aic-runner: runs a compiled program on the simulated device and reports throughput,
//! with the flags and Stats line of qaic-runner.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use aicsim_runtime::{samples, InferenceSet, Program, RunLimit};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "aic-runner", about = "Run a program on the simulated Cloud AI 100 device", version)]
struct Args {
    /// Program directory (holding programqpc.bin) or container file; the embedded default program when absent.
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
    /// Seed of the random input data.
    #[arg(long = "seed", default_value_t = 1)]
    seed: u64,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("aic-runner: {message}");
    ExitCode::from(2)
}

/// SplitMix64: small, seeded, good enough for input data.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.device_id != 0 {
        return fail(format!("device {} does not exist (the simulator has device 0)", args.device_id));
    }
    let program = match &args.test_data {
        Some(path) => Program::from_path(path),
        None => Program::from_image(samples::default_program()),
    };
    let program = match program {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let limit = match args.time {
        Some(t) if t.is_finite() && t > 0.0 => RunLimit::Duration(Duration::from_secs_f64(t)),
        Some(t) => return fail(format!("--time {t} is not a positive number of seconds")),
        None if args.num_iter == 0 => return fail("-n 0: nothing to run"),
        None => RunLimit::Count(args.num_iter),
    };
    let device = match Device::open_simulated(KmdConfig::default()) {
        Ok(d) => Arc::new(d),
        Err(e) => return fail(format!("cannot start the simulated device: {e}")),
    };
    let set = match InferenceSet::new(device, &program, args.activations, args.set_size) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // Like qaic-runner: a few random input sets, generated up front and reused.
    let mut state = args.seed;
    let input_sets: Vec<Vec<Vec<u8>>> = (0..4)
        .map(|_| {
            program
                .inputs()
                .iter()
                .map(|b| (0..b.size_bytes).map(|_| (splitmix(&mut state) >> 56) as u8).collect())
                .collect()
        })
        .collect();
    let fill = |index: u64, inputs: &mut [Vec<u8>]| {
        for (dst, src) in inputs.iter_mut().zip(&input_sets[index as usize % input_sets.len()]) {
            dst.copy_from_slice(src);
        }
    };
    let summary = match set.run(limit, fill, |_| {}) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let duration_us = summary.elapsed.as_micros().max(1);
    let batch = program.batch_size();
    let rate = summary.inferences as f64 * 1e6 / duration_us as f64 * f64::from(batch);
    println!(" ---- Stats ----");
    println!(
        "InferenceCnt {} TotalDuration {}us BatchSize {} Inf/Sec {:.3}",
        summary.inferences, duration_us, batch, rate
    );
    ExitCode::SUCCESS
}
