//! aic-runner: runs a program on the simulated device and reports throughput and
//! latency, with the flags, summary line and profiling files of qaic-runner.
//!
//! By default every figure is on the simulated clock: the device's time and the host
//! model's (see `aicsim_runtime::InferenceSet::run_simulated`), so the figures are what
//! the card would do, the same on any machine under any load. `--clock wall` measures
//! the wall clock instead, with the device paced to it.

use std::process::ExitCode;

fn main() -> ExitCode {
    aicsim::runner::cli::main()
}
