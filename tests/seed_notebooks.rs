//! The command lines of Qualcomm's two seed notebooks — ResNet-50 performance tuning and
//! BERT profiling (cloud-ai-sdk `tutorials/`) — run as a user runs them, with `qaic-`
//! replaced by `aic-`, in a working directory of their own: each produces the files the
//! notebook's next command reads, with the layout the notebook shows. The models are the
//! exports' layouts with seeded weights (`scripts/make_resnet50.py`, `make_bert.py
//! --exported`). Runner lines use `--time 3` where the notebook says 10 or 20 (the
//! figures are the simulated card's either way; only the wall time differs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A notebook's working directory.
struct Notebook {
    dir: PathBuf,
}

impl Notebook {
    fn new(name: &str) -> Notebook {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Notebook { dir }
    }

    /// Runs a cell's command line (`aic-...` resolved to this build's binaries) and
    /// returns its standard output; it must succeed.
    fn run(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let program = match words[0] {
            "aic-exec" => env!("CARGO_BIN_EXE_aic-exec"),
            "aic-runner" => env!("CARGO_BIN_EXE_aic-runner"),
            "aic-util" => env!("CARGO_BIN_EXE_aic-util"),
            "aic-configurator" => env!("CARGO_BIN_EXE_aic-configurator"),
            "aic-latency-stats" => env!("CARGO_BIN_EXE_aic-latency-stats"),
            other => panic!("not a tool: {other}"),
        };
        let started = std::time::Instant::now();
        let out = Command::new(program).args(&words[1..]).current_dir(&self.dir).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{line}\n{text}{}", String::from_utf8_lossy(&out.stderr));
        eprintln!("{:.1} s: {line}", started.elapsed().as_secs_f64());
        text
    }

    fn script(&self, python: &str, args: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(args[0]);
        let ok = Command::new(python).arg(script).args(&args[1..]).current_dir(&self.dir).status().unwrap();
        assert!(ok.success(), "{args:?}");
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
    }
}

/// `latency_stats_python3.py`'s output as the notebooks show it.
fn assert_latency_summary(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "All activations combined:", "{text}");
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(header, ["mean", "min", "50%", "75%", "90%", "95%", "99%", "max"], "{text}");
    let names: Vec<&str> = lines[2..lines.len() - 1].iter().map(|l| l.split_whitespace().next().unwrap()).collect();
    for metric in ["hostRoundTrip", "enqTime", "preProcTime", "submitTime", "execTotal", "exectoVc", "execToComplete"] {
        assert!(names.contains(&metric), "{metric}: {text}");
    }
    assert_eq!(*names.last().unwrap(), "totalRoundtripTime", "{text}");
    for row in &lines[2..lines.len() - 1] {
        let cells: Vec<&str> = row.split_whitespace().skip(1).collect();
        assert!(cells.iter().all(|c| c.split_once('.').is_some_and(|(_, d)| d.len() == 6)), "six decimals: {row}");
    }
    let last = lines.last().unwrap();
    assert!(last.starts_with("totalRoundtripTime: percentile(mean) = ") && last.ends_with(" ms"), "{text}");
}

/// `Writing file:<dir>/<name>` for each file, after the Stats.
fn assert_written(out: &str, files: &[String]) {
    let stats = out.find(" ---- Stats ----").expect(out);
    for f in files {
        let at = out.find(&format!("Writing file:{f}\n")).unwrap_or_else(|| panic!("{f} not announced:\n{out}"));
        assert!(at > stats, "{f} announced after the figures:\n{out}");
    }
}

fn stats_line(out: &str) -> (u64, u32, f64) {
    let line = out.lines().find(|l| l.starts_with("InferenceCnt ")).expect(out);
    let w: Vec<&str> = line.split_whitespace().collect();
    (w[1].parse().unwrap(), w[5].parse().unwrap(), w[7].parse().unwrap())
}

#[test]
fn the_resnet50_performance_tuning_notebook() {
    let Some(python) = common::python_release() else { return };
    let nb = Notebook::new("seed-resnet50");
    std::fs::create_dir_all(nb.dir.join("resnet-50_onnx")).unwrap();
    nb.script(&python, &["make_resnet50.py", "resnet-50_onnx/model.onnx"]);

    // 3. Device health.
    let util = nb.run("aic-util -q");
    assert!(util.lines().any(|l| l == "\tStatus:Ready"), "{util}");

    // 4. The best throughput configuration (the notebook's search file, as shipped).
    std::fs::write(nb.dir.join("resnet_base_dopt_throughput.json"), THROUGHPUT_SEARCH).unwrap();
    let out = nb.run(
        "aic-configurator -model resnet-50_onnx/model.onnx -onnx-define-symbol-batch-size=batch_size \
         -onnx-define-symbol=num_channels,3 -onnx-define-symbol=height,224 -onnx-define-symbol=width,224 \
         -multicast-weights -config=resnet_base_dopt_throughput.json -max-parallel-compilations=16 -time=5 \
         -convert-to-fp16 -device-id=0",
    );
    let header = out.lines().position(|l| l.trim_start().starts_with("OptimizerStatus")).expect(&out);
    let columns: Vec<&str> = out.lines().nth(header).unwrap().split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "OptimizerStatus",
            "InitialValue",
            "cores",
            "mos",
            "ols",
            "batchSize",
            "instances",
            "setSize",
            "Objective",
            "(inf/sec)"
        ]
    );
    let rows: Vec<&str> = out.lines().skip(header + 1).take(5).collect();
    for (i, r) in rows.iter().enumerate() {
        assert!(r.trim_start().starts_with(&format!("{i} ")), "{r}");
        assert!(r.contains("(cores=") && r.contains("setSize=1)"), "the initial value as the seed prints it: {r}");
    }
    assert!(out.lines().last().unwrap().contains(" - [INFO]: Total execution time "), "{out}");
    let best_run = out.lines().skip_while(|l| !l.starts_with("Run it with:")).nth(1).expect(&out).trim().to_string();
    assert!(
        best_run.starts_with("aic-runner -t model_configurator_output/compiled_models/model/qpc-cores-"),
        "{best_run}"
    );
    let qpc = best_run.split_whitespace().nth(2).unwrap();
    assert!(nb.dir.join(qpc).join("programqpc.bin").exists(), "{qpc}");
    // The best program runs as printed, and does what the search predicted of it.
    let predicted: f64 =
        rows.iter().map(|r| r.split_whitespace().last().unwrap().parse::<f64>().unwrap()).fold(f64::MIN, f64::max);
    let ran = nb.run(&best_run.replace("--time 5", "--time 2"));
    let (_, _, rate) = stats_line(&ran);
    assert!((rate / predicted - 1.0).abs() < 0.1, "ran {rate} inf/s, predicted {predicted}");

    // Measure end-to-end latency: compile the chosen configuration, run seven instances.
    let out = nb.run(
        "aic-exec -v -aic-hw -m=resnet-50_onnx/model.onnx -onnx-define-symbol=batch_size,4 \
         -onnx-define-symbol=num_channels,3 -onnx-define-symbol=height,224 -onnx-define-symbol=width,224 \
         -mos=1 -ols=2 -aic-num-cores=2 -stats-batchsize=4 -aic-binary-dir=./compiled_fp16 \
         -multicast-weights -convert-to-fp16 -aic-hw-version=2.0 -compile-only",
    );
    assert!(
        out.starts_with(
            "Reading ONNX Model from resnet-50_onnx/model.onnx\nCompile started ............... \nCompiling model with FP16 precision.\n"
        ),
        "{out}"
    );
    assert!(out.trim_end().ends_with("Generated binary is present at ./compiled_fp16"), "{out}");
    std::fs::create_dir_all(nb.dir.join("resnet50_stats")).unwrap();
    let out = nb.run(
        "aic-runner --test-data ./compiled_fp16 -d 0 -a 7 -S 10 --aic-profiling-type latency \
         --aic-profiling-out-dir ./resnet50_stats --aic-profiling-start-iter 100 --aic-profiling-num-samples 9999 --time 3",
    );
    assert!(out.starts_with("Using bounded random inputs\n ---- Stats ----\nInferenceCnt "), "{out}");
    assert_eq!(stats_line(&out).1, 4, "BatchSize 4");
    let files: Vec<String> =
        (1..=7).map(|p| format!("./resnet50_stats/aic-profiling-program-{p}-latency.txt")).collect();
    assert_written(&out, &files);
    assert_latency_summary(&nb.run(&format!("aic-latency-stats {}", files.join(" "))));

    // 5. The least latency configuration.
    std::fs::write(nb.dir.join("resnet_base_dopt_min_latency.json"), MIN_LATENCY_SEARCH).unwrap();
    let out = nb.run(
        "aic-configurator -model resnet-50_onnx/model.onnx -onnx-define-symbol-batch-size=batch_size \
         -onnx-define-symbol=num_channels,3 -onnx-define-symbol=height,224 -onnx-define-symbol=width,224 \
         -multicast-weights -config=resnet_base_dopt_min_latency.json -max-parallel-compilations=16 -time=5 \
         -convert-to-fp16 -device-id=0 -search-set-size 1",
    );
    let header = out.lines().find(|l| l.trim_start().starts_with("OptimizerStatus")).expect(&out);
    assert!(header.ends_with("Objective (micro-sec)"), "{header}");
    std::fs::remove_dir_all(nb.dir.join("compiled_fp16")).unwrap();
    std::fs::remove_dir_all(nb.dir.join("resnet50_stats")).unwrap();
    std::fs::create_dir_all(nb.dir.join("resnet50_stats")).unwrap();
    let out = nb.run(
        "aic-exec -v -aic-hw -m=resnet-50_onnx/model.onnx -onnx-define-symbol=batch_size,1 \
         -onnx-define-symbol=num_channels,3 -onnx-define-symbol=height,224 -onnx-define-symbol=width,224 \
         -mos=1 -ols=1 -aic-num-cores=7 -stats-batchsize=1 -aic-binary-dir=./compiled_fp16 \
         -multicast-weights -convert-to-fp16 -aic-hw-version=2.0 -compile-only",
    );
    assert!(out.contains("Generated binary is present at ./compiled_fp16"), "{out}");
    let single = "aic-runner --test-data ./compiled_fp16 -d 0 -a 1 -S 1 --aic-profiling-type latency \
                  --aic-profiling-out-dir ./resnet50_stats --aic-profiling-start-iter 100 \
                  --aic-profiling-num-samples 99999 --time 3";
    let out = nb.run(single);
    let one = ["./resnet50_stats/aic-profiling-program-1-latency.txt".to_string()];
    assert_written(&out, &one);
    let (_, batch, rate_1) = stats_line(&out);
    assert_eq!(batch, 1);
    assert_latency_summary(&nb.run(&format!("aic-latency-stats {}", one[0])));
    // Two instances: the earlier files are replaced, and said to be.
    let out = nb.run(&single.replace("-a 1", "-a 2"));
    assert!(out.contains("Deleting previous file: ./resnet50_stats/aic-profiling-program-1-latency.txt\n"), "{out}");
    let two: Vec<String> = (1..=2).map(|p| format!("./resnet50_stats/aic-profiling-program-{p}-latency.txt")).collect();
    assert_written(&out, &two);
    assert_latency_summary(&nb.run(&format!("aic-latency-stats {}", two.join(" "))));
    // As in the notebook: two instances of a 7-core program nearly double the rate.
    let (_, _, rate_2) = stats_line(&out);
    assert!(rate_2 > 1.6 * rate_1, "{rate_1} -> {rate_2} inf/s");
}

#[test]
fn the_bert_profiling_notebook() {
    let Some(python) = common::python_release() else { return };
    let nb = Notebook::new("seed-bert");
    std::fs::create_dir_all(nb.dir.join("bert_base_cased_onnx")).unwrap();
    nb.script(
        &python,
        &[
            "make_bert.py",
            "bert_base_cased_onnx/model_fix_outofrange_fp16.onnx",
            "--exported",
            "--layers",
            "12",
            "--hidden",
            "768",
            "--heads",
            "12",
            "--vocab",
            "28996",
            "--seq",
            "128",
            "--symbolic-seq",
            "--opset",
            "11",
            "--constant-weights",
        ],
    );
    let util = nb.run("aic-util -q");
    assert!(util.lines().any(|l| l == "\tStatus:Ready"), "{util}");

    // 3. Device-level profiling: compile with the profiling flags and the perf metrics.
    let out = nb.run(
        "aic-exec -v -aic-hw -convert-to-fp16 -mos=1 -ols=1 -aic-num-cores=2 \
         -m=bert_base_cased_onnx/model_fix_outofrange_fp16.onnx \
         -onnx-define-symbol=sequence_length,128 -onnx-define-symbol=batch_size,8 \
         -aic-perf-metrics -multicast-weights -stats-batchsize=8 -aic-binary-dir=./compiled_fp16 \
         -aic-hw-version=2.0 -compile-only -aic-profiling-type=stats -aic-profiling-type=trace -aic-profiling-type=latency",
    );
    for line in [
        "AIC HMX MAC estimate:  ",
        "AIC non-HMX MAC estimate:  ",
        "MulticastTableSize: ",
        "VTCM0Size:   ",
        "VTCM1Size:   ",
        "StaticSharedDDRSize: \t",
        "DynamicSharedDDRSize: \t",
        "Constants size: ",
        "Compiler estimated memory traffic:",
        "   host: DDR traffic  read: ",
        "    c00: DDR traffic  read: ",
        "             constant only: ",
        "    c01: DDR traffic write: ",
        "  total: DDR traffic  read: ",
        "  c00 barriers: ",
    ] {
        assert!(out.lines().any(|l| l.starts_with(line)), "missing '{line}':\n{out}");
    }
    assert!(out.trim_end().ends_with("Generated binary is present at ./compiled_fp16"), "{out}");

    std::fs::create_dir_all(nb.dir.join("bert_base_cased_stats")).unwrap();
    let out = nb.run(
        "aic-runner --test-data ./compiled_fp16 -d 0 -S 1 -a 7 --aic-profiling-type latency \
         --aic-profiling-out-dir ./bert_base_cased_stats --aic-profiling-type stats --aic-profiling-type trace \
         --aic-profiling-start-iter 100 --aic-profiling-num-samples 1 --time 3",
    );
    let (_, batch, _) = stats_line(&out);
    assert_eq!(batch, 8);
    assert!(out.contains("Device Performance: \nMetric,          Avg,           Min,           Max,           Std"));
    // Each activation's 100th inference profiled, and the trace.
    let mut files: Vec<String> =
        (0..7).map(|a| format!("./bert_base_cased_stats/aic-profiling-program-0-activation-{a}-inf-100.txt")).collect();
    files.push("./bert_base_cased_stats/aic-profiling-program-0-trace.json".into());
    files.push("./bert_base_cased_stats/aic-profiling-program-0-latency.txt".into());
    assert_written(&out, &files);

    // !cat ...-activation-0-inf-100.txt: a table per core, heaviest first, then its threads.
    let stats = nb.read("bert_base_cased_stats/aic-profiling-program-0-activation-0-inf-100.txt");
    for core in ["c0", "c1"] {
        let table: Vec<&str> = stats
            .lines()
            .skip_while(|l| !l.starts_with("core "))
            .skip(1)
            .skip_while(|l| !l.starts_with(core))
            .take_while(|l| l.starts_with(core) && !l.contains(" total:"))
            .collect();
        assert!(table.len() > 5, "{core}: {stats}");
        let ucycles: Vec<u64> = table.iter().map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap()).collect();
        assert!(ucycles.windows(2).all(|w| w[0] >= w[1]), "{core} sorted by ucycles");
        assert!(table.iter().any(|l| l.ends_with("sync DMAIssue")), "{stats}");
        assert!(table.iter().any(|l| l.contains(" HMX TCM (")), "{stats}");
        let utilisation: Vec<f64> = stats
            .lines()
            .filter(|l| l.starts_with(&format!("{core}    t")))
            .map(|l| l.split_whitespace().rev().nth(1).unwrap().trim_end_matches('%').parse().unwrap())
            .collect();
        assert_eq!(utilisation.len(), 6, "{stats}");
        assert!(utilisation.iter().all(|u| (0.0..=100.0).contains(u)), "{utilisation:?}");
        assert!(stats.contains(&format!("\n{core} total: ")), "{stats}");
        assert!(stats.contains(&format!("{core}: Effective frequency is ")), "{stats}");
    }
    assert!(stats.contains("[QAicGraph] Device instance inf/s: (8/"), "{stats}");
    let trace: serde_json::Value =
        serde_json::from_str(&nb.read("bert_base_cased_stats/aic-profiling-program-0-trace.json")).unwrap();
    let names: Vec<&str> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "process_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "HOST_PROC", "{names:?}");
    assert!(names.len() > 7, "a process per activation: {names:?}");

    // 4. System-level profiling.
    let out = nb.run(
        "aic-runner --test-data ./compiled_fp16 -d 0 -S 1 -a 7 --aic-profiling-type latency \
         --aic-profiling-out-dir ./bert_base_cased_stats --aic-profiling-start-iter 100 \
         --aic-profiling-num-samples 99999 --time 3",
    );
    assert!(out.contains("Deleting previous file: ./bert_base_cased_stats/aic-profiling-program-0-latency.txt\n"));
    let summary = nb.run("aic-latency-stats ./bert_base_cased_stats/aic-profiling-program-0-latency.txt");
    assert_latency_summary(&summary);
    for metric in ["devInfPerSec", "devExec", "devInWaitTime", "devOutWaitTime"] {
        assert!(summary.lines().any(|l| l.starts_with(metric)), "{metric}: {summary}");
    }
}

/// The notebook's `resnet_base_dopt_throughput.json` (facts of the search: its keys and
/// bounds).
const THROUGHPUT_SEARCH: &str = r#"{
  "search-mode": "optimized",
  "objective": "max-throughput",
  "search-parameters": {
    "cores": {"min": 1, "max": 14}, "mos": {"min": 1, "max": 8}, "ols": {"min": 1, "max": 8},
    "batch-size": {"min": 1, "max": 16}, "instances": {"min": 1, "max": 14}, "set-size": {"min": 1, "max": 10}
  },
  "initial-values": [
    {"cores": 1, "mos": 1, "ols": 1, "batch-size": 1, "instances": 14, "set-size": 1},
    {"cores": 2, "mos": 1, "ols": 1, "batch-size": 1, "instances": 7, "set-size": 1},
    {"cores": 4, "mos": 1, "ols": 1, "batch-size": 1, "instances": 3, "set-size": 1},
    {"cores": 7, "mos": 1, "ols": 1, "batch-size": 1, "instances": 2, "set-size": 1},
    {"cores": 14, "mos": 1, "ols": 1, "batch-size": 1, "instances": 1, "set-size": 1}
  ]
}"#;

/// The notebook's `resnet_base_dopt_min_latency.json`.
const MIN_LATENCY_SEARCH: &str = r#"{
  "search-mode": "optimized",
  "objective": "min-latency",
  "search-parameters": {
    "cores": {"min": 1, "max": 14}, "mos": {"min": 1, "max": 8}, "ols": {"min": 1, "max": 8},
    "batch-size": {"min": 1, "max": 16}, "instances": {"min": 1, "max": 14}
  },
  "initial-values": [
    {"cores": 1, "mos": 1, "ols": 1, "batch-size": 1, "instances": 1},
    {"cores": 2, "mos": 1, "ols": 1, "batch-size": 1, "instances": 1},
    {"cores": 4, "mos": 1, "ols": 1, "batch-size": 1, "instances": 1},
    {"cores": 7, "mos": 1, "ols": 1, "batch-size": 1, "instances": 1},
    {"cores": 14, "mos": 1, "ols": 1, "batch-size": 1, "instances": 1}
  ]
}"#;
