//! The timing model against the hardware measurements of
//! `../shared/reference/calibration.md`: ResNet-50 (light_resnet50 from the onnx package)
//! on a 14-NSP card, fp16, multicast weights.

use std::path::{Path, PathBuf};

use aicsim::predict::{predict, Deployment, DeviceModel, HostModel, Workload};
use aicsim_compiler::{compile_file, CompileOptions};

fn model() -> Option<PathBuf> {
    let Ok(models) = std::env::var("AICSIM_ONNX_MODELS") else {
        assert!(std::env::var("AICSIM_REQUIRE_ONNX").is_err(), "AICSIM_REQUIRE_ONNX is set but the models are not");
        eprintln!("skipped: run scripts/test.sh, which installs onnx");
        return None;
    };
    Some(PathBuf::from(models).join("light_resnet50.onnx"))
}

fn workload(path: &Path, cores: u32, mos: u32, ols: u32, bs: u32) -> Workload {
    let opts = CompileOptions {
        cores,
        mos,
        ols,
        batch_size: Some(bs),
        fp16: true,
        multicast_weights: true,
        ..CompileOptions::default()
    };
    Workload::from_compiled(&compile_file(path, &opts).expect("compiles"))
}

fn pct(ours: f64, measured: f64) -> f64 {
    (ours / measured - 1.0) * 100.0
}

/// Every row of calibration.md with one parameter set (the defaults). Throughput within
/// 15%, latencies within 20% (the aim, recorded in docs/calibration.md, is 10%).
#[test]
fn predictions_match_the_hardware() {
    if cfg!(debug_assertions) {
        eprintln!("skipped in debug builds: scripts/test.sh runs it with --release");
        return;
    }
    let Some(path) = model() else { return };
    let device = DeviceModel::from(&aicsim_device::DeviceConfig { num_nsp: 14, ..Default::default() });
    let host = HostModel::default();
    // cores, mos, ols, bs, instances, set size, inf/s, host round trip ms, total round trip ms
    type Row = (u32, u32, u32, u32, u32, u32, f64, Option<f64>, Option<f64>);
    let rows: &[Row] = &[
        (1, 1, 2, 2, 14, 2, 4419.97, None, None),
        (2, 1, 2, 4, 7, 2, 6418.51, None, None),
        (5, 1, 2, 8, 2, 2, 5473.46, None, None),
        (7, 1, 3, 16, 2, 2, 6091.01, None, None),
        (2, 1, 2, 4, 7, 10, 6367.396, Some(43.5), None),
        (7, 1, 1, 1, 1, 1, 1200.824, Some(0.684), Some(0.792)),
        (7, 1, 1, 1, 2, 1, 2190.925, Some(0.810), Some(0.887)),
    ];
    let mut failures = Vec::new();
    println!("row (cores,mos,ols,bs) -a -S | inf/s ours measured diff | hostRoundTrip ms ours measured diff | totalRoundtrip ms ours measured diff");
    for &(cores, mos, ols, bs, instances, set_size, rate, host_rt, total_rt) in rows {
        let w = workload(&path, cores, mos, ols, bs);
        let p = predict(&w, Deployment { instances, set_size }, &device, &host, 2, 8).unwrap();
        let label = format!("({cores},{mos},{ols},{bs:2}) -a {instances:2} -S {set_size:2}");
        let d = pct(p.inf_per_sec, rate);
        let mut line = format!("{label} | {:8.1} {rate:8.1} {d:+5.1}%", p.inf_per_sec);
        if d.abs() > 15.0 {
            failures.push(format!("{label}: throughput {d:+.1}%"));
        }
        for (what, ours, measured) in
            [("hostRoundTrip", p.host_round_trip.mean, host_rt), ("totalRoundtrip", p.total_round_trip.mean, total_rt)]
        {
            match measured {
                Some(m) => {
                    let d = pct(ours, m);
                    line += &format!(" | {ours:7.3} {m:7.3} {d:+5.1}%");
                    if d.abs() > 20.0 {
                        failures.push(format!("{label}: {what} {d:+.1}%"));
                    }
                }
                None => line += &format!(" | {ours:7.3}       -       "),
            }
        }
        println!("{line}");
    }
    assert!(failures.is_empty(), "outside the tolerance: {failures:?}");
}
