//! How fast aicsim simulates the card, through the whole stack as `aic-runner` drives it
//! (runtime -> driver -> rings -> device -> rings, real input and output bytes, the
//! simulated clock): simulated device-seconds per host-second, for
//! - the seed's throughput configuration: zoo ResNet-50, 2 cores, batch 4, fp16, multicast
//!   weights, 7 instances x 10 in flight (the whole card busy);
//! - zoo ResNet-50 on 1 core, batch 1, one instance, set size 1;
//! - zoo BERT-base, 2 cores, batch 8, 7 instances x 10.
//!
//! Beside each: the same program's instruction records decoded only, in the same run, as
//! instructions per host second — the least any simulator of this ISA does per
//! instruction; the ratio of the two is what to compare across machines.
//!
//! Floors (issue 15): >= 1.0 for the first, >= 5 for the second; the third is recorded.
//! Run with `cargo bench --bench simulation_speed`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_abi::isa::Instruction;
use aicsim_compiler::{compile, zoo, CompileOptions};
use aicsim_device::scheduler::ExecMode;
use aicsim_device::{DeviceConfig, Pacing};
use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use aicsim_runtime::{HostModel, InferenceSet, Program, RunLimit};

struct Case {
    label: &'static str,
    model: fn() -> aicsim_compiler::onnx::Model,
    cores: u32,
    batch: u32,
    ols: u32,
    instances: usize,
    set_size: usize,
    /// Simulated seconds of the full run.
    seconds: f64,
    floor: Option<f64>,
}

/// Simulated seconds per host second, instructions simulated per host second, and
/// instructions decoded per host second (the baseline).
fn measure(case: &Case, seconds: f64) -> (f64, f64, f64) {
    let opts = CompileOptions {
        cores: case.cores,
        ols: case.ols,
        batch_size: Some(case.batch),
        fp16: true,
        multicast_weights: true,
        ..Default::default()
    };
    let compiled = compile(&(case.model)(), None, case.label, &opts).expect("compiles");
    let program = Program::from_image(compiled.image).expect("loads");
    let device = DeviceConfig { mode: ExecMode::Timing, pacing: Pacing::Simulated, seed: 1, ..DeviceConfig::default() };
    let device = Arc::new(Device::open_simulated(KmdConfig { device, ..KmdConfig::default() }).expect("device"));
    let set = InferenceSet::new(device, &program, case.instances, case.set_size).expect("activates");
    let host: Vec<Vec<u8>> = program.inputs().iter().map(|b| vec![1u8; b.host_size_bytes() as usize]).collect();
    let inputs = vec![program.device_inputs(&host).expect("inputs")];
    let t = Instant::now();
    let summary = set
        .run_simulated(RunLimit::Duration(Duration::from_secs_f64(seconds)), &HostModel::default(), &inputs, |_| {})
        .expect("runs");
    let wall = t.elapsed().as_secs_f64();
    let per_inference: usize = program.image().cores.iter().map(Vec::len).sum();
    let simulated = summary.inferences as f64 * per_inference as f64;
    // Baseline: decode the same records, as many as were simulated.
    let records: Vec<&Instruction> = program.image().cores.iter().flatten().collect();
    let t = Instant::now();
    let mut decoded = 0u64;
    while (decoded as f64) < simulated {
        for r in &records {
            if std::hint::black_box(r.decode()).is_ok() {
                decoded += 1;
            }
        }
    }
    let decode_rate = decoded as f64 / t.elapsed().as_secs_f64();
    (summary.elapsed.as_secs_f64() / wall, simulated / wall, decode_rate)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let cases = [
        Case {
            label: "resnet50 2 cores x batch 4, 7 instances x S 10",
            model: zoo::resnet50,
            cores: 2,
            batch: 4,
            ols: 2,
            instances: 7,
            set_size: 10,
            seconds: 3.0,
            floor: Some(1.0),
        },
        Case {
            label: "resnet50 1 core x batch 1, 1 instance x S 1",
            model: zoo::resnet50,
            cores: 1,
            batch: 1,
            ols: 1,
            instances: 1,
            set_size: 1,
            seconds: 10.0,
            floor: Some(5.0),
        },
        Case {
            label: "bert-base 2 cores x batch 8, 7 instances x S 10",
            model: zoo::bert_base,
            cores: 2,
            batch: 8,
            ols: 1,
            instances: 7,
            set_size: 10,
            seconds: 1.0,
            floor: None,
        },
    ];
    println!("simulation speed on the simulated clock (simulated device-seconds per host second):");
    for case in &cases {
        let seconds = if full { case.seconds } else { 0.02 };
        let (speed, rate, decode_rate) = measure(case, seconds);
        let floor = case
            .floor
            .map_or(String::from("recorded"), |f| format!("floor {f}: {}", if speed >= f { "met" } else { "NOT met" }));
        println!("  {:<50} {speed:>7.2}x real time ({floor})", case.label);
        println!(
            "  {:<50} {rate:>12.0} instructions / host s; baseline decode-only {decode_rate:>12.0}; ratio {:.3}",
            "",
            rate / decode_rate
        );
    }
}
