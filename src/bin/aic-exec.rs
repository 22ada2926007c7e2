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

use std::process::ExitCode;

use aicsim::exec::{parse_exec_args, run};

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
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aic-exec: {e}");
            ExitCode::from(2)
        }
    }
}
