//! The card's measurements (`../shared/reference/calibration.md`: ResNet-50, fp16,
//! multicast weights, a 14-NSP card) against what `aic-runner` reports: every row is
//! compiled from light_resnet50 (the onnx package's copy of the same network), run by the
//! real binary on the simulated clock, and checked against the card (throughput within
//! 15%, latencies within 20%; the aim, recorded in docs/calibration.md, is 10%) and
//! against `aicsim::predict` for the same configuration (within 1%: one engine, one host
//! model, one device model).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aicsim::predict::{predict, Deployment, DeviceModel, HostModel, Measure, Workload};
use aicsim_compiler::{compile_file, CompileOptions, Compiled};

fn model() -> Option<PathBuf> {
    let Ok(models) = std::env::var("AICSIM_ONNX_MODELS") else {
        assert!(std::env::var("AICSIM_REQUIRE_ONNX").is_err(), "AICSIM_REQUIRE_ONNX is set but the models are not");
        eprintln!("skipped: run scripts/test.sh, which installs onnx");
        return None;
    };
    Some(PathBuf::from(models).join("light_resnet50.onnx"))
}

fn compiled(path: &Path, cores: u32, mos: u32, ols: u32, bs: u32) -> Compiled {
    let mut opts = CompileOptions {
        cores,
        mos,
        ols,
        batch_size: Some(bs),
        fp16: true,
        multicast_weights: true,
        ..CompileOptions::default()
    };
    opts.symbols.insert("batch_size".into(), i64::from(bs));
    compile_file(path, &opts).expect("compiles")
}

fn pct(ours: f64, measured: f64) -> f64 {
    (ours / measured - 1.0) * 100.0
}

/// One row: the compiled configuration, the runner's flags, and what the card measured.
struct Row {
    cores: u32,
    mos: u32,
    ols: u32,
    bs: u32,
    instances: u32,
    set_size: u32,
    /// Simulated seconds the runner runs (shorter than on the card, to keep CI short).
    seconds: f64,
    inf_per_sec: f64,
    host_round_trip_ms: Option<f64>,
    total_round_trip_ms: Option<f64>,
}

const fn row(config: (u32, u32, u32, u32), instances: u32, set_size: u32, seconds: f64, rate: f64) -> Row {
    let (cores, mos, ols, bs) = config;
    Row {
        cores,
        mos,
        ols,
        bs,
        instances,
        set_size,
        seconds,
        inf_per_sec: rate,
        host_round_trip_ms: None,
        total_round_trip_ms: None,
    }
}

fn rows() -> Vec<Row> {
    vec![
        // The configurator's throughput search results (run with -S 2, as it measures).
        row((1, 1, 2, 2), 14, 2, 2.0, 4419.97),
        row((2, 1, 2, 4), 7, 2, 2.0, 6418.51),
        row((5, 1, 2, 8), 2, 2, 2.0, 5473.46),
        row((7, 1, 3, 16), 2, 2, 2.0, 6091.01),
        // The runner measurements.
        Row { host_round_trip_ms: Some(43.5), ..row((2, 1, 2, 4), 7, 10, 5.0, 6367.396) },
        Row {
            host_round_trip_ms: Some(0.684),
            total_round_trip_ms: Some(0.792),
            ..row((7, 1, 1, 1), 1, 1, 2.0, 1200.824)
        },
        Row {
            host_round_trip_ms: Some(0.810),
            total_round_trip_ms: Some(0.887),
            ..row((7, 1, 1, 1), 2, 1, 2.0, 2190.925)
        },
    ]
}

/// The runner's figures: inf/s, mean host round trip, mean total round trip (ms).
fn run_binary(dir: &Path, r: &Row) -> (f64, f64, f64) {
    let json = dir.join("run.json");
    let out = Command::new(env!("CARGO_BIN_EXE_aic-runner"))
        .arg("-t")
        .arg(dir)
        .args(["-a", &r.instances.to_string(), "-S", &r.set_size.to_string(), "--time", &r.seconds.to_string()])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("aic-runner runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let f = |ptr: &str| v.pointer(ptr).and_then(serde_json::Value::as_f64).unwrap_or_else(|| panic!("{ptr} in {v}"));
    assert_eq!(v["clock"], "simulated");
    (f("/inf_per_sec"), f("/host_round_trip_ms/mean"), f("/latency_ms/mean"))
}

#[test]
fn the_runner_reports_the_card_and_agrees_with_the_predictor() {
    if cfg!(debug_assertions) {
        eprintln!("skipped in debug builds: scripts/test.sh runs it with --release");
        return;
    }
    let Some(path) = model() else { return };
    let device = DeviceModel::from(&aicsim_device::DeviceConfig { num_nsp: 14, ..Default::default() });
    let host = HostModel::default();
    let mut failures = Vec::new();
    println!("row (cores,mos,ols,bs) -a -S --time | inf/s runner predict card diff | hostRoundTrip ms runner card diff | totalRoundtrip ms runner card diff");
    for r in rows() {
        let label = format!(
            "({},{},{},{:2}) -a {:2} -S {:2} --time {}",
            r.cores, r.mos, r.ols, r.bs, r.instances, r.set_size, r.seconds
        );
        let program = compiled(&path, r.cores, r.mos, r.ols, r.bs);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("calibration-{}-{}-{}-{}", r.cores, r.mos, r.ols, r.bs));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("programqpc.bin"), program.image.to_bytes()).unwrap();
        let (rate, host_rt, total_rt) = run_binary(&dir, &r);
        let workload = Workload::from_compiled(&program).expect("loads");
        let deployment = Deployment { instances: r.instances, set_size: r.set_size };
        let p =
            predict(&workload, deployment, &device, &host, Measure::Run(Duration::from_secs_f64(r.seconds))).unwrap();
        // Runner and predictor: one engine, one model.
        for (what, runner, predicted) in
            [("inf/s", rate, p.inf_per_sec), ("host round trip", host_rt, p.host_round_trip.mean)]
        {
            if pct(runner, predicted).abs() > 1.0 {
                failures.push(format!("{label}: runner {what} {runner:.3} vs predict {predicted:.3}"));
            }
        }
        let d = pct(rate, r.inf_per_sec);
        let mut line = format!("{label} | {rate:8.1} {:8.1} {:8.1} {d:+5.1}%", p.inf_per_sec, r.inf_per_sec);
        if d.abs() > 15.0 {
            failures.push(format!("{label}: throughput {d:+.1}% from the card"));
        }
        for (what, ours, measured) in
            [("hostRoundTrip", host_rt, r.host_round_trip_ms), ("totalRoundtrip", total_rt, r.total_round_trip_ms)]
        {
            match measured {
                Some(m) => {
                    let d = pct(ours, m);
                    line += &format!(" | {ours:7.3} {m:7.3} {d:+5.1}%");
                    if d.abs() > 20.0 {
                        failures.push(format!("{label}: {what} {d:+.1}% from the card"));
                    }
                }
                None => line += &format!(" | {ours:7.3}       -       "),
            }
        }
        println!("{line}");
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
