//! The timing model against the hardware measurements of
//! `../shared/reference/calibration.md`: ResNet-50 (light_resnet50 from the onnx package)
//! on a 14-NSP card, fp16, multicast weights.

use std::path::PathBuf;
use std::sync::Arc;

use aicsim::predict::{predict, Deployment, DeviceModel, HostModel, Workload};
use aicsim_compiler::{compile_file, CompileOptions};
use aicsim_device::container::IoDirection;
use aicsim_device::nsp::CostModel;

fn model() -> Option<PathBuf> {
    let Ok(models) = std::env::var("AICSIM_ONNX_MODELS") else {
        assert!(std::env::var("AICSIM_REQUIRE_ONNX").is_err(), "AICSIM_REQUIRE_ONNX is set but the models are not");
        eprintln!("skipped: run scripts/test.sh, which installs onnx");
        return None;
    };
    Some(PathBuf::from(models).join("light_resnet50.onnx"))
}

fn workload(path: &PathBuf, cores: u32, mos: u32, ols: u32, bs: u32) -> Workload {
    let opts = CompileOptions {
        cores,
        mos,
        ols,
        batch_size: Some(bs),
        fp16: true,
        multicast_weights: true,
        ..CompileOptions::default()
    };
    let c = compile_file(path, &opts).expect("compiles");
    let sum = |f: fn(&aicsim_compiler::lower::LayerReport) -> u64| {
        c.lowered.layers.iter().map(f).sum::<u64>() as f64 / 1e6 / f64::from(bs)
    };
    eprintln!(
        "  per sample MB: load {:.1} (constants {:.1}) store {:.1} pool {:.1}; pool cap {:.1} peak {:.1} demand {:.1} spilled {:.1}; hmx cycles {:.2}M",
        sum(|l| l.load_bytes),
        sum(|l| l.constant_bytes),
        sum(|l| l.store_bytes),
        sum(|l| l.pool_bytes),
        c.lowered.pool.capacity as f64 / 1e6,
        c.lowered.pool.peak as f64 / 1e6,
        c.lowered.pool.demand as f64 / 1e6,
        c.lowered.pool.spilled as f64 / 1e6,
        sum(|l| l.compute_cycles) * f64::from(bs) / 1e6,
    );
    let bytes = |d: IoDirection| c.image.bindings.iter().filter(|b| b.direction == d).map(|b| b.size_bytes).sum();
    Workload {
        streams: Arc::new(c.lowered.streams.clone()),
        batch: c.image.batch_size,
        input_bytes: bytes(IoDirection::Input),
        output_bytes: bytes(IoDirection::Output),
    }
}

#[test]
fn predictions_match_the_hardware() {
    let Some(path) = model() else { return };
    let mut cost = CostModel::default();
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    cost.ddr_efficiency_pct = env("DDR", cost.ddr_efficiency_pct);
    cost.hmx_efficiency_pct = env("HMX", cost.hmx_efficiency_pct);
    cost.dma_bytes_per_cycle = env("DMA", cost.dma_bytes_per_cycle);
    let device = DeviceModel { cost, clock_hz: env("CLK", 1_400_000_000), num_nsp: 14 };
    let host = HostModel::default();
    let rows: &[(u32, u32, u32, u32, u32, u32, f64)] = &[
        (1, 1, 2, 2, 14, 2, 4419.97),
        (2, 1, 2, 4, 7, 2, 6418.51),
        (5, 1, 2, 8, 2, 2, 5473.46),
        (7, 1, 3, 16, 2, 2, 6091.01),
        (2, 1, 2, 4, 7, 10, 6367.396),
        (7, 1, 1, 1, 1, 1, 1200.824),
        (7, 1, 1, 1, 2, 1, 2190.925),
    ];
    for &(cores, mos, ols, bs, instances, set_size, measured) in rows {
        let t = std::time::Instant::now();
        let w = workload(&path, cores, mos, ols, bs);
        let compile = t.elapsed();
        let t = std::time::Instant::now();
        let p = predict(&w, Deployment { instances, set_size }, &device, &host, 2, 6).unwrap();
        eprintln!(
            "{cores} {mos} {ols} {bs:2} x{instances:2} S{set_size:2}: {:8.1} inf/s (measured {measured:8.1}, {:+5.1}%) host rt {:.3} ms total {:.3} exec {:.3} ddr {:.1} GB/s busy {:.2?} stall {:.2} [compile {:?} sim {:?}, {} instr]",
            p.inf_per_sec,
            (p.inf_per_sec / measured - 1.0) * 100.0,
            p.host_round_trip.mean,
            p.total_round_trip.mean,
            p.device_exec.mean,
            p.ddr_bytes_per_second / 1e9,
            p.engine_busy,
            p.stalled,
            compile,
            t.elapsed(),
            w.streams.iter().map(Vec::len).sum::<usize>(),
        );
    }
}
