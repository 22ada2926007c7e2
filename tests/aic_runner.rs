//! The aic-runner binary: its Stats line and its errors. Most tests run the small
//! vector program (`-t` is added when a test gives none) so they stay fast; one runs the
//! embedded default, the zoo ResNet-50.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The sample vector program as a container file.
fn vector_program() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("aic_runner_vector_program.bin");
        std::fs::write(&path, aicsim_runtime::samples::vector_program().to_bytes()).unwrap();
        path
    })
}

fn runner(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aic-runner"));
    if !args.iter().any(|a| *a == "-t" || *a == "--test-data") {
        cmd.arg("-t").arg(vector_program());
    }
    let out = cmd.args(args).output().expect("aic-runner runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses `InferenceCnt n TotalDuration dus BatchSize b Inf/Sec r`.
fn stats(stdout: &str) -> (u64, u64, u64, f64) {
    let mut lines = stdout.lines();
    assert!(lines.any(|l| l == " ---- Stats ----"), "{stdout}");
    let line = lines.next().expect("a Stats line");
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!((f[0], f[2], f[4], f[6]), ("InferenceCnt", "TotalDuration", "BatchSize", "Inf/Sec"), "{line}");
    assert!(f[3].ends_with("us"));
    let rate = f[7];
    assert_eq!(rate.split('.').nth(1).map(str::len), Some(3), "three decimals: {rate}");
    (f[1].parse().unwrap(), f[3].trim_end_matches("us").parse().unwrap(), f[5].parse().unwrap(), rate.parse().unwrap())
}

#[test]
fn the_embedded_default_program_is_the_zoo_resnet50() {
    let out = Command::new(env!("CARGO_BIN_EXE_aic-runner")).args(["-n", "4", "-v"]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(format!("{stdout}{stderr}").contains("program 'resnet50' (1 cores, batch 1)"), "{stdout}{stderr}");
    assert_eq!(stats(&stdout).0, 4);
}

#[test]
fn n_runs_exactly_n_inferences_and_inf_per_sec_follows_the_formula() {
    let (code, out, err) = runner(&["-n", "500", "-a", "2", "-S", "4"]);
    assert_eq!(code, 0, "{err}");
    let (n, us, batch, rate) = stats(&out);
    assert_eq!((n, batch), (500, 1));
    let expected = n as f64 * 1e6 / us as f64 * batch as f64;
    assert!((rate - expected).abs() <= 0.0005 + expected * 1e-12, "{rate} vs {expected}");
}

#[test]
fn time_runs_for_about_the_asked_duration() {
    let (code, out, err) = runner(&["--time", "1"]);
    assert_eq!(code, 0, "{err}");
    let (n, us, _, _) = stats(&out);
    assert!(n > 0);
    assert!((950_000..=1_050_000).contains(&us), "ran {us} us for --time 1");
}

#[test]
fn bad_invocations_exit_2_with_one_line_saying_why() {
    for (args, needle) in [
        (vec!["-t", "/nonexistent/program"], "cannot read program /nonexistent/program: No such file"),
        (vec!["-a", "17"], "17 activations x 1 cores = 17 cores, but the device has 16"),
        (vec!["-S", "0"], "set size must be at least 1"),
        (vec!["--time", "0"], "not a positive number"),
        (vec!["--time=1e300"], "--time 1e300: at most 1000000 seconds"),
        (vec!["--time", "nan"], "--time NaN is not a positive number"),
        (
            vec!["--scenario", "server", "--target-qps", "1e-300", "--latency-bound-ms", "1"],
            "--target-qps 1e-300: 40 queries would take",
        ),
        (
            vec!["--scenario", "server", "--target-qps", "1e13", "--time", "1", "--latency-bound-ms", "1"],
            "--target-qps 1e13: 1e13 queries; a run schedules at most 1e8",
        ),
        (vec!["--pace", "none"], "--pace applies to --clock wall"),
        (vec!["-d", "3"], "device 3 does not exist"),
    ] {
        let (code, out, err) = runner(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: no output on failure");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn a_corrupt_container_is_named_precisely() {
    let dir = std::env::temp_dir().join(format!("aicsim-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = aicsim_runtime::samples::vector_program().to_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(dir.join("programqpc.bin"), &bytes).unwrap();
    let (code, _, err) = runner(&["-t", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("checksum mismatch"), "{err}");
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("aicsim-{tag}-{}-{:?}", std::process::id(), std::thread::current().id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn read_latency(path: &std::path::Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(path).unwrap();
    // As the SDK's summariser reads it: four header lines, then the CSV.
    let mut lines = text.lines().skip(aicsim::latency::HEADER_LINES);
    let columns: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines.map(|l| l.split(',').map(|c| c.parse::<f64>().unwrap_or(f64::NAN)).collect()).collect();
    (columns, rows)
}

#[test]
fn the_latency_file_has_every_stage_in_microseconds_and_consistent_values() {
    let dir = temp_dir("latency");
    let (code, out, err) = runner(&[
        "-n",
        "300",
        "-a",
        "2",
        "-S",
        "3",
        "--aic-profiling-type",
        "latency",
        "--aic-profiling-start-iter",
        "100",
        "--aic-profiling-num-samples",
        "60",
        "--aic-profiling-out-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Device Performance: \nMetric,          Avg,           Min,           Max,           Std"),
        "{out}"
    );
    for metric in ["ExecTimeUs,", "InputWaitTimeUs,", "OutputWaitTimeUs,"] {
        assert!(out.lines().any(|l| l.starts_with(metric) && l.split(',').count() == 5), "{metric} row: {out}");
    }
    // Every file written is announced after the figures, as the seed's runner does.
    let stats_at = out.find(" ---- Stats ----").unwrap();
    for p in 0..3 {
        let file = dir.join(format!("aic-profiling-program-{p}-latency.txt"));
        let line = format!("Writing file:{}\n", file.display());
        assert!(out.find(&line).is_some_and(|at| at > stats_at), "{out}");
    }
    // One file per activation, numbered from 1; together they hold every sampled
    // inference once, and program-0 holds them all.
    let (columns, mut rows) = read_latency(&dir.join("aic-profiling-program-1-latency.txt"));
    let (columns_1, rows_1) = read_latency(&dir.join("aic-profiling-program-2-latency.txt"));
    assert_eq!(columns, columns_1);
    assert!(!rows.is_empty() && !rows_1.is_empty(), "both activations ran sampled inferences");
    rows.extend(rows_1);
    rows.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (_, mut all) = read_latency(&dir.join("aic-profiling-program-0-latency.txt"));
    all.sort_by(|a, b| a[0].total_cmp(&b[0]));
    assert_eq!(all, rows);
    assert_eq!(columns, aicsim::latency::COLUMNS.to_vec());
    assert!(columns.iter().filter(|c| c.ends_with("Us")).count() == 12, "time columns carry the Us suffix");
    assert_eq!(rows.len(), 60);
    let col = |name: &str| columns.iter().position(|c| c == name).unwrap();
    for (k, r) in rows.iter().enumerate() {
        assert_eq!(r[col("Sample")], 100.0 + k as f64, "samples 100..160 in order");
        assert!(r[col("devExecUs")] > 0.0 && r[col("devInfPerSec")] > 0.0);
        assert!((r[col("devInfPerSec")] - 1e6 / r[col("devExecUs")]).abs() <= r[col("devInfPerSec")] * 1e-2);
        let total = r[col("totalRoundtripTimeUs")];
        assert!(total + 0.01 >= r[col("hostRoundTripUs")] && r[col("hostRoundTripUs")] + 0.01 >= r[col("execTotalUs")]);
        let parts = r[col("exectoVcUs")] + r[col("execToCompleteUs")];
        assert!((parts - r[col("execTotalUs")]).abs() < 0.01, "execTotal = exectoVc + execToComplete");
        assert!((1.0..=3.0).contains(&r[col("queueDepth")]) && (1.0..=6.0).contains(&r[col("numInfInQueue")]));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    // Written independently of the tool: the value at fractional rank q * (n - 1).
    let rank = q * (sorted.len() as f64 - 1.0);
    let below = sorted[rank as usize];
    let above = sorted[(rank as usize + 1).min(sorted.len() - 1)];
    below + (above - below) * rank.fract()
}

#[test]
fn the_summariser_prints_the_percentiles_of_the_samples_in_milliseconds() {
    let dir = temp_dir("summary");
    let (code, _, err) = runner(&[
        "-n",
        "400",
        "--aic-profiling-type",
        "latency",
        "--aic-profiling-num-samples",
        "400",
        "--aic-profiling-out-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let file = dir.join("aic-profiling-program-0-latency.txt");
    let (columns, rows) = read_latency(&file);
    for keep in [None, Some(90.0)] {
        let mut args = vec![file.to_str().unwrap().to_string()];
        if let Some(k) = keep {
            args.extend(["-k".to_string(), format!("{k}")]);
        }
        let out = Command::new(env!("CARGO_BIN_EXE_aic-latency-stats")).args(&args).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("All activations combined:"));
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["mean", "min", "50%", "75%", "90%", "95%", "99%", "max"]);
        let headline = text.lines().last().unwrap().to_string();
        let table: Vec<(String, Vec<f64>)> = lines
            .take_while(|l| !l.starts_with("totalRoundtripTime:"))
            .map(|l| {
                let mut f = l.split_whitespace();
                (f.next().unwrap().to_string(), f.map(|v| v.parse().unwrap()).collect())
            })
            .collect();
        let names: Vec<&str> = table.iter().map(|(n, _)| n.as_str()).collect();
        assert!(!names.contains(&"Sample") && !names.contains(&"queueDepth") && !names.contains(&"numInfInQueue"));
        for (name, got) in &table {
            let c = columns.iter().position(|x| x == name || *x == format!("{name}Us")).unwrap();
            let scale = if columns[c].ends_with("Us") { 1e-3 } else { 1.0 };
            // Samples without a value ("nan": the device record was gone) are skipped.
            // -k drops the first and last samples in the order they were taken.
            let kept = match keep {
                Some(k) => {
                    let drop = (rows.len() as f64 * (100.0 - k) / 200.0).round() as usize;
                    &rows[drop..rows.len() - drop]
                }
                None => &rows[..],
            };
            let mut v: Vec<f64> = kept.iter().map(|r| r[c] * scale).filter(|x| !x.is_nan()).collect();
            v.sort_by(f64::total_cmp);
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let want = [
                mean,
                v[0],
                percentile(&v, 0.5),
                percentile(&v, 0.75),
                percentile(&v, 0.9),
                percentile(&v, 0.95),
                percentile(&v, 0.99),
                v[v.len() - 1],
            ];
            for (g, w) in got.iter().zip(want) {
                // The table prints 6 decimals.
                assert!((g - w).abs() <= 1e-6 + 1e-9 * w.abs(), "{name}: {got:?} vs {want:?}");
            }
            if name == "totalRoundtripTime" {
                assert_eq!(headline, format!("totalRoundtripTime: percentile(mean) = {:.3} ms", want[0]));
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn functional_runs_write_the_real_outputs_and_json_has_every_figure() {
    use aicsim_runtime::samples::{bytes_f32, f32_bytes, vector_add_mul_reference};
    let dir = temp_dir("outputs");
    std::fs::create_dir_all(&dir).unwrap();
    let a: Vec<f32> = (0..4096).map(|i| i as f32 * 0.5).collect();
    let b: Vec<f32> = (0..4096).map(|i| 3.0 - i as f32).collect();
    std::fs::write(dir.join("a.bin"), f32_bytes(&a)).unwrap();
    std::fs::write(dir.join("b.bin"), f32_bytes(&b)).unwrap();
    let out_dir = dir.join("out");
    let json = dir.join("run.json");
    let (code, stdout, err) = runner(&[
        "-n",
        "10",
        "--mode",
        "functional",
        "-i",
        dir.join("a.bin").to_str().unwrap(),
        "-i",
        dir.join("b.bin").to_str().unwrap(),
        "--write-output-start-iter",
        "3",
        "--write-output-num-samples",
        "4",
        "--write-output-dir",
        out_dir.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let want = vector_add_mul_reference(&a, &b);
    let mut files: Vec<String> =
        std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(
        files,
        [
            "out-activation-0-inf-3.bin",
            "out-activation-0-inf-4.bin",
            "out-activation-0-inf-5.bin",
            "out-activation-0-inf-6.bin"
        ]
    );
    for f in files {
        assert_eq!(bytes_f32(&std::fs::read(out_dir.join(f)).unwrap()), want);
    }
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let (n, us, _, rate) = stats(&stdout);
    assert_eq!(j["inference_count"].as_u64(), Some(n));
    assert_eq!(j["total_duration_us"].as_u64(), Some(us));
    assert!((j["inf_per_sec"].as_f64().unwrap() - rate).abs() < 0.001);
    for key in ["mean", "p50", "p90", "p99", "max"] {
        assert!(j["latency_ms"][key].as_f64().unwrap() > 0.0, "{key}");
    }
    assert!(j["device"]["ExecTimeUs"]["avg"].as_f64().unwrap() > 0.0);
    assert_eq!(j["mode"], "functional");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_live_report_prints_every_period() {
    let (code, out, err) = runner(&["--time", "1.1", "-l", "-r", "200"]);
    assert_eq!(code, 0, "{err}");
    let live = out.lines().filter(|l| l.starts_with("Live: InferenceCnt ")).count();
    assert!((3..=6).contains(&live), "{live} live lines: {out}");
}

#[test]
fn bad_inputs_fail_with_one_line_exit_2_and_leave_no_files() {
    let dir = temp_dir("bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("short.bin"), [0u8; 100]).unwrap();
    let mut corrupt = aicsim_runtime::samples::vector_program().to_bytes();
    corrupt.truncate(corrupt.len() / 2);
    std::fs::write(dir.join("corrupt.bin"), &corrupt).unwrap();
    let out_dir = dir.join("out");
    let o = out_dir.to_str().unwrap().to_string();
    let short = dir.join("short.bin").to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["-t".into(), dir.join("missing").to_str().unwrap().into()], "cannot read program"),
        (vec!["-t".into(), dir.join("corrupt.bin").to_str().unwrap().into()], "header says the file is"),
        (vec!["-i".into(), short.clone(), "-i".into(), short], "is 100 bytes but input 'a' takes 16384 bytes"),
        (vec!["-a".into(), "17".into()], "17 activations x 1 cores = 17 cores, but the device has 16"),
    ];
    for (mut args, needle) in cases {
        args.extend([
            "--write-output-dir".into(),
            o.clone(),
            "--aic-profiling-type".into(),
            "latency".into(),
            "--aic-profiling-out-dir".into(),
            o.clone(),
            "--json".into(),
            format!("{o}/run.json"),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, err) = runner(&refs);
        assert_eq!(code, 2, "{args:?}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!out_dir.exists() || std::fs::read_dir(&out_dir).unwrap().next().is_none(), "{args:?} left files");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stats_and_trace_profiles_are_written_for_the_sampled_inferences() {
    let dir = temp_dir("profiles");
    let (code, _, err) = runner(&[
        "-n",
        "30",
        "-a",
        "2",
        "-S",
        "2",
        "--aic-profiling-type",
        "stats",
        "--aic-profiling-type",
        "trace",
        "--aic-profiling-start-iter",
        "10",
        "--aic-profiling-num-samples",
        "4",
        "--aic-profiling-out-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let mut stats_files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("-inf-"))
        .collect();
    stats_files.sort();
    // As the card's runner counts them: each activation's 10th to 13th inference.
    let want: Vec<String> = (0..2)
        .flat_map(|a| (10..14).map(move |i| format!("aic-profiling-program-0-activation-{a}-inf-{i}.txt")))
        .collect();
    assert_eq!(stats_files, want);
    for f in &stats_files {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        // Each core's closing lines: its threads' utilisation, its clock; then the instance's rate.
        assert!(text.contains("\nc0 total: "), "{text}");
        let threads: Vec<&str> = text.lines().filter(|l| l.starts_with("c0    t")).collect();
        assert_eq!(threads.len(), 6, "four HVX threads, HMX, DMA issue: {text}");
        assert!(threads.iter().all(|l| l.ends_with("% utilization")), "{text}");
        assert!(text.contains("c0: Effective frequency is "), "{text}");
        assert!(text.contains("[QAicGraph] Device instance inf/s: "), "{text}");
        let mut lines = text.lines().filter(|l| !l.starts_with('#')).skip_while(|l| l.is_empty());
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "core",
                "ucycles",
                "ucycles(%)",
                "pcycles",
                "pcycles(%)",
                "count",
                "out",
                "KB",
                "ucycles/KB",
                "pcycles/KB",
                "stddev(pc/KB)",
                "opdetails"
            ]
        );
        let rows: Vec<Vec<&str>> =
            lines.take_while(|l| !l.is_empty()).map(|l| l.split_whitespace().collect()).collect();
        let percent = |v: &str| v.strip_suffix('%').expect("percentages carry %").parse::<f64>().unwrap();
        assert!(rows.iter().any(|r| r[10..].join(" ") == "aiccopytovtcm DMAIssue DDR (float32)"), "{text}");
        assert!(rows.iter().any(|r| r[10..].join(" ") == "aicelementwise HVX TCM (float32)"), "{text}");
        // The sync rows (time waited) have no processor cycles of their own.
        assert!(rows.iter().filter(|r| r[10] == "sync").all(|r| r[3] == "N/A"), "{text}");
        let pshare: f64 = rows.iter().filter(|r| r[10] != "sync").map(|r| percent(r[4])).sum();
        assert!((pshare - 100.0).abs() < 0.1, "pcycles(%) of a core add up to 100: {pshare}");
        for r in &rows {
            assert!(percent(r[2]) <= 100.0 && r[5].parse::<u64>().unwrap() >= 1);
        }
        // Heaviest first.
        let ucycles: Vec<u64> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
        assert!(ucycles.windows(2).all(|w| w[0] >= w[1]), "sorted by ucycles: {ucycles:?}");
    }
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("aic-profiling-program-0-trace.json")).unwrap())
            .unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    for e in events {
        for key in ["ph", "ts", "dur", "pid", "tid"] {
            assert!(e.get(key).is_some(), "event without {key}: {e}");
        }
    }
    let named = |pid: u64| {
        events
            .iter()
            .find(|e| e["ph"] == "M" && e["name"] == "process_name" && e["pid"] == pid)
            .map(|e| e["args"]["name"].as_str().unwrap().to_string())
    };
    assert_eq!(named(0).as_deref(), Some("HOST_PROC"));
    assert_eq!(named(1).as_deref(), Some("activation 0"));
    let spans: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert!(spans.iter().any(|e| e["pid"] == 0 && e["name"] == "preProc"), "host track");
    assert!(spans.iter().any(|e| e["pid"] != 0 && e["name"] == "aiccopytovtcm"), "device track");
    assert!(spans.iter().all(|e| e["dur"].as_f64().unwrap() >= 0.0));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn verdict(out: &str) -> (String, String) {
    let head = out.lines().find(|l| l.starts_with("Scenario ")).unwrap_or_default().to_string();
    let result = out.lines().find_map(|l| l.strip_prefix("Result: ")).unwrap_or_default().to_string();
    (head, result)
}

#[test]
fn scenarios_end_in_valid_or_invalid_with_the_reason() {
    // Server: Poisson arrivals at the target rate, judged on p99 latency.
    let (code, out, err) =
        runner(&["--scenario", "server", "--target-qps", "4000", "--latency-bound-ms", "50", "-n", "1200"]);
    assert_eq!(code, 0, "{err}");
    let (head, result) = verdict(&out);
    assert_eq!(result, "VALID", "{out}");
    let achieved: f64 = head.split("achieved ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((achieved - 4000.0).abs() < 4000.0 * 0.15, "arrivals keep the target rate: {head}");
    let (code, out, _) =
        runner(&["--scenario", "server", "--target-qps", "4000", "--latency-bound-ms", "0.0001", "-n", "200"]);
    assert_eq!(code, 0);
    assert!(verdict(&out).1.starts_with("INVALID (p99 latency "), "{out}");
    assert!(verdict(&out).1.ends_with("exceeds the 0.000 ms bound)"), "{out}");
    // Offline: judged on throughput.
    let (_, out, _) = runner(&["--scenario", "offline", "--target-qps", "1e12", "-n", "500"]);
    assert!(verdict(&out).1.starts_with("INVALID (throughput "), "{out}");
    let (_, out, _) = runner(&["--scenario", "offline", "--target-qps", "1", "-n", "500"]);
    assert_eq!(verdict(&out).1, "VALID");
    // Single-stream: one query at a time, p90 latency.
    let (_, out, _) =
        runner(&["--scenario", "single-stream", "-n", "300", "-a", "4", "-S", "8", "--latency-bound-ms", "100"]);
    assert!(verdict(&out).0.starts_with("Scenario single-stream: p90 latency "), "{out}");
    assert_eq!(verdict(&out).1, "VALID");
    // Server without its parameters is a usage error.
    let (code, out, err) = runner(&["--scenario", "server", "-n", "10"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("--scenario server needs --target-qps and --latency-bound-ms"), "{err}");
}

/// Every file a run writes under `dir`, by name.
fn files_in(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// A run with every output on: its stdout without the live/progress noise (its directory
/// written `<dir>`), and its files.
fn full_run(tag: &str) -> (String, std::collections::BTreeMap<String, Vec<u8>>) {
    let dir = temp_dir(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let json = format!("{d}/run.json");
    let (code, out, err) = runner(&[
        "-n",
        "400",
        "-a",
        "3",
        "-S",
        "4",
        "--seed",
        "7",
        "--aic-profiling-type",
        "latency",
        "--aic-profiling-type",
        "stats",
        "--aic-profiling-type",
        "trace",
        "--aic-profiling-start-iter",
        "50",
        "--aic-profiling-num-samples",
        "30",
        "--aic-profiling-out-dir",
        d,
        "--json",
        &json,
    ]);
    assert_eq!(code, 0, "{err}");
    let files = files_in(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    // The `Writing file:` lines name this run's directory.
    (out.replace(d, "<dir>"), files)
}

#[test]
fn the_simulated_clock_gives_identical_figures_and_files_run_twice_and_under_load() {
    let (out_a, files_a) = full_run("det-a");
    let (out_b, files_b) = full_run("det-b");
    assert_eq!(out_a, out_b, "the same command prints the same figures");
    assert!(files_a.len() >= 3 + 30 + 2, "latency x3, stats x30, trace, json: {:?}", files_a.keys());
    assert_eq!(files_a, files_b, "and writes the same bytes");
    // Both cores kept busy by another program meanwhile: nothing changes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                x
            })
        })
        .collect();
    let (out_c, files_c) = full_run("det-c");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    assert_eq!(out_a, out_c, "a loaded machine prints the same figures");
    assert_eq!(files_a, files_c, "and writes the same bytes");
    // Another seed is another run (random inputs and dispatch jitter).
    let (code, out_d, _) = runner(&["-n", "400", "-a", "3", "-S", "4", "--seed", "8"]);
    assert_eq!(code, 0);
    assert_ne!(stats(&out_a).1, stats(&out_d).1, "another seed, another dispatch jitter");
}

#[test]
fn one_latency_file_per_instance_and_the_summariser_prints_each_then_all() {
    let dir = temp_dir("per-instance");
    let (code, _, err) = runner(&[
        "-n",
        "120",
        "-a",
        "3",
        "-S",
        "2",
        "--aic-profiling-type",
        "latency",
        "--aic-profiling-num-samples",
        "120",
        "--aic-profiling-out-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let files: Vec<std::path::PathBuf> =
        (1..4).map(|i| dir.join(format!("aic-profiling-program-{i}-latency.txt"))).collect();
    let total: usize = files.iter().map(|f| read_latency(f).1.len()).sum();
    assert_eq!(total, 120, "every sampled inference in its instance's file");
    assert!(!dir.join("aic-profiling-program-4-latency.txt").exists());
    let summary = |args: &[&std::path::Path]| {
        let out = Command::new(env!("CARGO_BIN_EXE_aic-latency-stats")).args(args).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let per_activation: Vec<&std::path::Path> = files.iter().map(|f| f.as_path()).collect();
    let text = summary(&per_activation);
    // As the SDK's summariser: the combined table only, then the mean round trip.
    let headings: Vec<&str> = text.lines().filter(|l| l.ends_with(':')).collect();
    assert_eq!(headings, ["All activations combined:"], "{text}");
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("totalRoundtripTime: percentile(mean) = ") && last.ends_with(" ms"), "{text}");
    // program-0 is the same samples in one file.
    assert_eq!(summary(&[&dir.join("aic-profiling-program-0-latency.txt")]), text);
    // -v 5 shows each file's table first.
    let mut verbose = per_activation.clone();
    let v = std::path::Path::new("-v5");
    verbose.push(v);
    let text = summary(&verbose);
    let headings: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ') && !l.contains("  ")).collect();
    assert_eq!(headings.len(), 5, "{text}");
    for (h, f) in headings.iter().zip(&files) {
        assert_eq!(*h, f.display().to_string());
    }
    assert_eq!(headings[3], "All activations combined:");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_wall_clock_keeps_the_paced_runner() {
    let (code, out, err) = runner(&["--clock", "wall", "-n", "200", "-a", "2", "-S", "4"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stats(&out).0, 200);
    let (code, out, err) = runner(&["--clock", "wall", "--pace", "none", "-n", "200"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stats(&out).0, 200);
}

#[test]
fn a_program_declaring_an_absurd_batch_size_is_refused_when_loaded() {
    let dir = temp_dir("batch");
    std::fs::create_dir_all(&dir).unwrap();
    let mut image = aicsim_runtime::samples::vector_program();
    image.batch_size = 0xffff_ffff;
    std::fs::write(dir.join("programqpc.bin"), image.to_bytes()).unwrap();
    let (code, out, err) = runner(&["-t", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("batch size") && err.contains("4294967295"), "{err}");
}

/// Every entry below `root`, as paths relative to it, sorted.
fn tree(root: &std::path::Path) -> Vec<String> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn names_from_a_program_never_become_paths_outside_the_chosen_directories() {
    let root = temp_dir("names");
    let deep = root.join("a").join("b");
    std::fs::create_dir_all(&deep).unwrap();
    for (i, (output, file)) in [
        ("../../evil_out", "%2E.%2F..%2Fevil_out"),
        ("gpu_0/softmax_1", "gpu_0%2Fsoftmax_1"),
        ("/abs", "%2Fabs"),
        ("..", "%2E."),
    ]
    .into_iter()
    .enumerate()
    {
        let mut image = aicsim_runtime::samples::vector_program();
        image.name = "../x".into();
        let out_binding = image.bindings.iter_mut().find(|b| b.direction == aicsim_abi::container::IoDirection::Output);
        out_binding.expect("the program has an output").name = output.into();
        let program = root.join(format!("program-{i}.bin"));
        std::fs::write(&program, image.to_bytes()).unwrap();
        let before = tree(&root);
        let (out, prof, json) = (deep.join(format!("out{i}")), deep.join(format!("prof{i}")), deep.join("run.json"));
        let (code, _, err) = runner(&[
            "-t",
            program.to_str().unwrap(),
            "-n",
            "2",
            "--mode",
            "functional",
            "--write-output-num-samples",
            "2",
            "--write-output-dir",
            out.to_str().unwrap(),
            "--aic-profiling-type",
            "latency",
            "--aic-profiling-type",
            "stats",
            "--aic-profiling-type",
            "trace",
            "--aic-profiling-num-samples",
            "1",
            "--aic-profiling-out-dir",
            prof.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{output}: {err}");
        // Only the chosen directories and the --json file are new, and the outputs are
        // files directly inside their directory, named by the documented rule.
        let new: Vec<String> = tree(&root).into_iter().filter(|p| !before.contains(p)).collect();
        let directly_in = |path: &str, dir: &str| {
            path == dir || path.strip_prefix(dir).and_then(|f| f.strip_prefix('/')).is_some_and(|f| !f.contains('/'))
        };
        for path in &new {
            let allowed = directly_in(path, &format!("a/b/out{i}"))
                || directly_in(path, &format!("a/b/prof{i}"))
                || (i == 0 && path == "a/b/run.json");
            assert!(allowed, "{output}: wrote {path}");
        }
        let mut outputs = tree(&out);
        outputs.sort();
        assert_eq!(
            outputs,
            [format!("{file}-activation-0-inf-0.bin"), format!("{file}-activation-0-inf-1.bin")],
            "{output}"
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_link_planted_in_the_output_directory_is_not_followed() {
    let root = temp_dir("planted");
    let out = root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let victim = root.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let planted = out.join("out-activation-0-inf-0.bin");
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let json = out.join("run.json");
    std::os::unix::fs::symlink(&victim, &json).unwrap();
    let (code, _, err) = runner(&[
        "-n",
        "1",
        "--mode",
        "functional",
        "--write-output-dir",
        out.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    for p in [&planted, &json] {
        assert!(std::fs::symlink_metadata(p).unwrap().file_type().is_file(), "{} is still a link", p.display());
    }
    assert_eq!(std::fs::metadata(&planted).unwrap().len(), 16384);
    assert!(tree(&out).iter().all(|f| !f.ends_with(".tmp")), "temporary files left: {:?}", tree(&out));
    std::fs::remove_dir_all(&root).unwrap();
}

/// A compiled model's profiles name the ONNX node of every instruction: each device span
/// of the trace carries its layer, op type, data type and bytes, and the stats file ends
/// with a per-layer table whose layers are the program's, in order.
#[test]
fn profiles_of_a_compiled_model_name_the_layer_of_every_instruction() {
    let dir = temp_dir("layers");
    let qpc = dir.join("qpc");
    let out = Command::new(env!("CARGO_BIN_EXE_aic-exec"))
        .args(["-m=zoo:mobilenetv2", "-aic-num-cores=2", "-convert-to-fp16"])
        .arg(format!("-aic-binary-dir={}", qpc.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let image =
        aicsim_abi::container::ProgramImage::parse(&std::fs::read(qpc.join("programqpc.bin")).unwrap()).unwrap();
    assert!(image.layers.len() > 50, "mobilenetv2's layers are named: {}", image.layers.len());
    let prof = dir.join("prof");
    let (code, _, err) = runner(&[
        "-t",
        qpc.to_str().unwrap(),
        "-n",
        "4",
        "--aic-profiling-type",
        "stats",
        "--aic-profiling-type",
        "trace",
        "--aic-profiling-num-samples",
        "1",
        "--aic-profiling-out-dir",
        prof.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(prof.join("aic-profiling-program-0-trace.json")).unwrap())
            .unwrap();
    let device: Vec<&serde_json::Value> =
        trace["traceEvents"].as_array().unwrap().iter().filter(|e| e["ph"] == "X" && e["pid"] != 0).collect();
    assert!(!device.is_empty());
    let names: Vec<&str> = image.layers.iter().map(|l| l.name.as_str()).collect();
    for e in &device {
        let layer = e["args"]["layer"].as_str().unwrap_or_else(|| panic!("no layer: {e}"));
        assert!(names.contains(&layer), "{layer} is one of the program's layers");
        assert!(e["args"]["onnxOp"].is_string(), "{e}");
    }
    let convs = device.iter().filter(|e| e["name"] == "aicconvolution").collect::<Vec<_>>();
    assert!(
        !convs.is_empty() && convs.iter().all(|e| e["args"]["onnxOp"] == "Conv" && e["args"]["dtype"] == "float16")
    );
    assert!(convs.iter().all(|e| e["args"]["bytes"].as_u64().unwrap() > 0));
    let stats = std::fs::read_dir(&prof)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("-inf-"))
        .expect("a stats file");
    let text = std::fs::read_to_string(stats).unwrap();
    // The rows of time each core's next instruction waited on an engine, within the run.
    let run_cycles: u64 =
        text.lines().find_map(|l| l.strip_prefix("# run: ")).unwrap().split(' ').next().unwrap().parse().unwrap();
    let waits: Vec<u64> = text
        .lines()
        .filter(|l| l.contains("  sync DMAIssue") || l.contains("  sync HMX") || l.contains("  sync HVX"))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(!waits.is_empty() && waits.iter().all(|&w| w > 0 && w < run_cycles), "{text}");
    let table: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("# per layer")).skip(2).collect();
    assert!(table.len() > 50, "{text}");
    let listed: Vec<&str> = table.iter().map(|l| l.split_whitespace().next().unwrap()).collect();
    let in_order: Vec<&str> = names.iter().copied().filter(|n| listed.contains(n)).collect();
    assert_eq!(listed, in_order, "the program's layers, in order");
    let conv_row = table.iter().find(|l| l.split_whitespace().nth(1) == Some("Conv")).unwrap();
    let hmx: u64 = conv_row.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert!(hmx > 0 && conv_row.ends_with("float16"), "{conv_row}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--aic-profiling-type ascii` writes a text timeline per profiled inference: a row per
/// core and engine, a hundred columns, busy engines by letter.
#[test]
fn the_ascii_timeline_shows_each_engine_of_each_core() {
    let dir = temp_dir("ascii");
    let (code, out, err) = runner(&[
        "-n",
        "3",
        "--aic-profiling-type",
        "ascii",
        "--aic-profiling-start-iter",
        "1",
        "--aic-profiling-num-samples",
        "2",
        "--aic-profiling-out-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for inf in [1, 2] {
        let file = dir.join(format!("aic-profiling-program-0-activation-0-inf-{inf}-ascii.txt"));
        assert!(out.contains(&format!("Writing file:{}", file.display())), "{out}");
        let text = std::fs::read_to_string(&file).unwrap();
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('c')).collect();
        assert_eq!(rows.len(), 4, "one core, four engines: {text}");
        for (row, letter) in rows.iter().zip(['D', 'M', 'V', 's']) {
            let cells = row.split('|').nth(1).unwrap();
            assert_eq!(cells.chars().count(), 100, "{row}");
            assert!(cells.chars().all(|c| c == letter || c == '-' || c == '.'), "{row}");
        }
        // The vector program moves its inputs in, computes on HVX, moves the result out.
        let count = |row: &str, c: char| row.split('|').nth(1).unwrap().chars().filter(|&x| x == c).count();
        assert!(count(rows[0], 'D') > 20 && count(rows[2], 'V') > 5, "{text}");
        assert_eq!(count(rows[1], 'M') + count(rows[1], '-'), 0, "no HMX work: {text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A profiling or output range that starts past a counted run is refused, naming it.
#[test]
fn a_sampling_range_past_the_run_is_refused() {
    for (flag, extra) in
        [("--aic-profiling-start-iter", "--aic-profiling-type"), ("--write-output-start-iter", "--write-output-dir")]
    {
        let value = if extra == "--aic-profiling-type" { "stats" } else { "/tmp/aicsim-never-written" };
        let (code, out, err) = runner(&["-n", "40", flag, "100", extra, value]);
        assert_eq!(code, 2, "{out}{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("{flag} 100 is past the run's 40 inferences")), "{err}");
    }
    assert!(!std::path::Path::new("/tmp/aicsim-never-written").exists());
}
