//! What aic-runner leaves behind: the scenario verdict, the `--json` report and every
//! file it writes, all staged and put in place only after a successful run.

use super::*;
use crate::output_files::PendingFiles;
use crate::report;

/// The scenario's headline and verdict.
pub(super) fn verdict(
    args: &Args,
    summary: &RunSummary,
    throughput: &Throughput,
    sorted_rts: &[f64],
) -> Option<(String, String)> {
    let scenario = args.scenario?;
    let qps = summary.inferences as f64 / summary.elapsed.as_secs_f64().max(1e-12);
    let rate = throughput.inf_per_sec;
    let (q, label) = if scenario == Scenario::Server { (0.99, "p99") } else { (0.9, "p90") };
    let latency = stats::percentile(sorted_rts, q);
    let mut reasons = Vec::new();
    if let Some(bound) = args.latency_bound_ms.filter(|_| scenario != Scenario::Offline) {
        if latency > bound {
            reasons.push(format!("{label} latency {latency:.3} ms exceeds the {bound:.3} ms bound"));
        }
    }
    if let Some(target) = args.target_qps.filter(|_| scenario == Scenario::Offline) {
        if rate < target {
            reasons.push(format!("throughput {rate:.1} inf/s is below the {target:.1} target"));
        }
    }
    let head = match scenario {
        Scenario::SingleStream => format!("Scenario single-stream: {label} latency {latency:.3} ms"),
        Scenario::Offline => format!("Scenario offline: {rate:.3} inf/s"),
        Scenario::Server => format!(
            "Scenario server: target {:.3} QPS, achieved {qps:.3} QPS, {label} latency {latency:.3} ms (bound {:.3} ms)",
            args.target_qps.unwrap_or(0.0),
            args.latency_bound_ms.unwrap_or(0.0)
        ),
    };
    let result = if reasons.is_empty() { String::from("VALID") } else { format!("INVALID ({})", reasons.join("; ")) };
    Some((head, result))
}

/// On the wall clock: the simulator's speed against the card's, from the device time the
/// runs covered over the wall time they took. Below 1, the figures are the host's.
pub(super) struct WallSpeed {
    pub(super) ratio: f64,
}

pub(super) fn json_report(
    args: &Args,
    program: &Program,
    plan: &Plan,
    throughput: &Throughput,
    collected: &Collected,
    verdict: &Option<(String, String)>,
    wall_speed: Option<&WallSpeed>,
) -> String {
    let (scenario, result) = verdict.clone().unzip();
    runner::RunReport {
        program: program.name().to_string(),
        activations: plan.activations,
        set_size: plan.set_size,
        batch_size: throughput.batch_size,
        mode: format!("{:?}", args.mode).to_lowercase(),
        clock: if args.clock == Clock::Sim { "simulated" } else { "wall" },
        simulator_speed: wall_speed.map(|s| s.ratio),
        host_bound: wall_speed.map(|s| s.ratio < HOST_BOUND),
        inference_count: throughput.inferences,
        total_duration_us: throughput.duration_us,
        inf_per_sec: throughput.inf_per_sec,
        latency_ms: runner::Latency::of(&collected.round_trips_ms),
        host_round_trip_ms: runner::HostLatency::of(&collected.host_round_trips_ms),
        scenario,
        result,
        device: runner::DeviceFigures::of(collected),
    }
    .to_json()
}

/// Below this ratio of device time to wall time, a wall-clock run measured the host.
pub(super) const HOST_BOUND: f64 = 0.95;

/// Device time over wall time between the first and the last completion (paced wall
/// clock only): paced, the device keeps to the wall clock while it can, so a ratio
/// below 1 is the simulator falling behind the card.
pub(super) fn wall_speed(collected: &Collected) -> Option<WallSpeed> {
    let ((dev0, wall0), (dev1, wall1)) = collected.span?;
    let wall = wall1.checked_sub(wall0).filter(|&w| w > 0)?;
    Some(WallSpeed { ratio: dev1.saturating_sub(dev0) as f64 / wall as f64 })
}

/// Every file the run writes, in memory until they are all ready.
#[allow(clippy::too_many_arguments)]
pub(super) fn files(
    args: &Args,
    program: &Program,
    plan: &Plan,
    summary: &RunSummary,
    throughput: &Throughput,
    collected: &Collected,
    verdict: &Option<(String, String)>,
    wall_speed: Option<&WallSpeed>,
) -> Result<PendingFiles, String> {
    let mut files = PendingFiles::default();
    let dir = &args.profiling_out_dir;
    if let Some(out_dir) = &args.write_output_dir {
        let names: Vec<String> = program.outputs().iter().map(|b| b.name.clone()).collect();
        for s in &collected.outputs {
            for (name, bytes) in names.iter().zip(&s.outputs) {
                let file =
                    format!("{}-activation-{}-inf-{}.bin", output_files::file_component(name), s.activation, s.index);
                files.push(out_dir, file, bytes.clone());
            }
        }
    }
    if args.profiling_types.contains(&ProfilingType::Latency) {
        // One file per activation, numbered from 1 (`program-1` .. `program-N`, as the
        // card's current runner numbers them), and `program-0` with every activation's
        // samples (the one file older runners left, which the profiling notebook reads).
        let render = |rows: &[[f64; 16]], which: &str| {
            latency::render(program.name(), which, plan.set_size, throughput.batch_size, rows).into_bytes()
        };
        let all: Vec<[f64; 16]> = collected.latency_rows.iter().map(|(_, r)| *r).collect();
        let which = format!("all {} activations (files 1 to {} hold each one's)", plan.activations, plan.activations);
        files.push(dir, "aic-profiling-program-0-latency.txt".into(), render(&all, &which));
        for a in 0..plan.activations {
            let rows: Vec<[f64; 16]> =
                collected.latency_rows.iter().filter(|(act, _)| *act == a).map(|(_, r)| *r).collect();
            let which = format!("activation {a} of {}", plan.activations);
            files.push(dir, format!("aic-profiling-program-{}-latency.txt", a + 1), render(&rows, &which));
        }
    }
    let clock_hz = DeviceConfig::default().clock_hz;
    if args.profiling_types.contains(&ProfilingType::Stats) {
        for p in &collected.profiled {
            let name = format!("aic-profiling-program-0-activation-{}-inf-{}.txt", p.activation, p.index);
            let table = profiling::stats_table(program.image(), p.activation, p.index, clock_hz, &p.run);
            files.push(dir, name, table.into_bytes());
        }
    }
    if args.profiling_types.contains(&ProfilingType::Ascii) {
        for p in &collected.profiled {
            let name = format!("aic-profiling-program-0-activation-{}-inf-{}-ascii.txt", p.activation, p.index);
            let text = profiling::ascii_timeline(program.image(), p.activation, p.index, clock_hz, &p.run);
            files.push(dir, name, text.into_bytes());
        }
    }
    if args.profiling_types.contains(&ProfilingType::Trace) {
        let samples: Vec<profiling::TracedInference<'_>> = collected
            .profiled
            .iter()
            .map(|p| profiling::TracedInference {
                index: p.index,
                activation: p.activation,
                timestamps: p.timestamps,
                run: &p.run,
            })
            .collect();
        let timeline = if args.clock == Clock::Sim {
            profiling::DeviceTimeline::Shared
        } else {
            profiling::DeviceTimeline::AtSubmit
        };
        let json =
            profiling::trace_json(summary.start_ns, clock_hz, timeline, plan.activations, program.image(), &samples);
        files.push(dir, "aic-profiling-program-0-trace.json".into(), json.into_bytes());
    }
    if let Some(path) = &args.json {
        let text = json_report(args, program, plan, throughput, collected, verdict, wall_speed);
        let (dir, name) = user_file(path)?;
        files.push(&dir, name, text.into_bytes());
    }
    if let Some(path) = &args.report {
        let html = html_report(args, program, throughput, collected, verdict, clock_hz);
        let (dir, name) = user_file(path)?;
        files.push(&dir, name, html.into_bytes());
    }
    Ok(files)
}

/// The `--report` page.
fn html_report(
    args: &Args,
    program: &Program,
    throughput: &Throughput,
    collected: &Collected,
    verdict: &Option<(String, String)>,
    clock_hz: u64,
) -> String {
    let (p50, p90, p99, max) = runner::round_trip_percentiles(&collected.round_trips_ms);
    let mut summary = vec![
        (
            "program".to_string(),
            format!("{} ({} cores, batch {})", program.name(), program.image().num_cores(), program.batch_size()),
        ),
        ("clock".to_string(), format!("{:?}", args.clock).to_lowercase()),
        ("InferenceCnt".to_string(), throughput.inferences.to_string()),
        ("TotalDuration".to_string(), format!("{}us", throughput.duration_us)),
        ("BatchSize".to_string(), throughput.batch_size.to_string()),
        ("Inf/Sec".to_string(), format!("{:.3}", throughput.inf_per_sec)),
        (
            "totalRoundtripTime p50 / p90 / p99 / max".to_string(),
            format!("{p50:.3} / {p90:.3} / {p99:.3} / {max:.3} ms"),
        ),
    ];
    for (name, s) in runner::device_rows(collected) {
        summary.push((format!("{name} avg / min / max"), format!("{:.3} / {:.3} / {:.3}", s.avg, s.min, s.max)));
    }
    if let Some((head, result)) = verdict {
        summary.push((head.clone(), result.clone()));
    }
    let n = collected.completed.max(1) as f64;
    let stages =
        runner::STAGES.iter().zip(collected.stage_sums_ms).map(|(name, sum)| (name.to_string(), sum / n)).collect();
    let command: Vec<String> = std::env::args().collect();
    report::runner_html(&report::RunnerReport {
        command: command.join(" "),
        summary,
        round_trips_ms: &collected.round_trips_ms,
        stages,
        traced: collected.profiled.first().map(|p| (program.image(), &p.run)),
        clock_hz,
    })
}

/// A file path the user gave, as its directory and its file name.
pub(super) fn user_file(path: &Path) -> Result<(PathBuf, String), String> {
    output_files::user_file(path)
}

pub(super) fn is_dir_or_missing(p: &Path) -> bool {
    !p.exists() || p.is_dir()
}
