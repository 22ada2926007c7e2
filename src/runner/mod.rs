//! What `aic-runner` records of a run and how it reports it: the collector its
//! completion callback feeds, the figures of the Stats line, the latency and device
//! tables, the scenario verdict, and the `--json` document. Every figure comes from the
//! inferences' timestamps and the device's run records, so on the simulated clock the
//! same run gives the same text, byte for byte.

pub mod cli;

use std::fmt::Write as _;

use aicsim_driver::RunProfile;
use aicsim_runtime::{Completion, Timestamps};
use parking_lot::Mutex;
use serde::Serialize;

use crate::{latency, stats};

/// Which inferences get more than their round trip recorded.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    /// First inference profiled, and how many: for the latency rows, of the run; for
    /// the device profiles, of each activation (its `n`-th inference, as the card's
    /// runner numbers the `-inf-<n>` files).
    pub profile: (u64, u64),
    /// Activations the run uses.
    pub activations: usize,
    /// First inference whose outputs are kept, and how many (count 0: none).
    pub outputs: (u64, u64),
    /// Fetch the device's statistics of the profiled runs (stats and trace profiles).
    pub device_profiles: bool,
    /// Record a latency row for the profiled inferences.
    pub latency: bool,
}

fn within(index: u64, (first, count): (u64, u64)) -> bool {
    index >= first && index - first < count
}

/// One inference's outputs, kept for `--write-output-dir`.
pub struct KeptOutputs {
    pub index: u64,
    pub activation: usize,
    pub outputs: Vec<Vec<u8>>,
}

/// A profiled inference's device statistics.
pub struct Profiled {
    /// The activation's own count of the inference (from 0).
    pub index: u64,
    pub activation: usize,
    pub timestamps: Timestamps,
    pub run: RunProfile,
}

/// Everything recorded of the finished inferences.
#[derive(Default)]
pub struct Collected {
    pub completed: u64,
    /// `totalRoundtripTime` of every inference, ms.
    pub round_trips_ms: Vec<f64>,
    /// `hostRoundTrip` of every inference, ms.
    pub host_round_trips_ms: Vec<f64>,
    /// Device execution, input wait and output wait of every inference, us.
    pub exec_us: Vec<f64>,
    pub input_wait_us: Vec<f64>,
    pub output_wait_us: Vec<f64>,
    /// Latency rows of the profiled inferences, per activation.
    pub latency_rows: Vec<(usize, [f64; 16])>,
    pub outputs: Vec<KeptOutputs>,
    pub profiled: Vec<Profiled>,
    pub profile_error: Option<String>,
    /// Inferences recorded within the profiling range, and device profiles taken.
    pub sampled: u64,
    pub device_sampled: u64,
    /// Inferences each activation has completed.
    pub per_activation: Vec<u64>,
    /// Sums over every inference of the time in each of [`STAGES`], ms.
    pub stage_sums_ms: [f64; STAGES.len()],
    /// The latest moment control was back with the application, on the run's clock.
    pub last_returned_ns: u64,
    /// The first and the latest completion: (device time its run ended, its completion
    /// on the run's clock), ns. On the wall clock their ratio is the simulator's speed.
    pub span: Option<((u64, u64), (u64, u64))>,
}

/// The stages of one inference the report breaks its time into: host enqueue,
/// pre-processing, submit, kernel to channel, device execution, the rest of channel to
/// completion (queued behind other inferences, DMA, the interrupt), post-processing.
pub const STAGES: [&str; 7] =
    ["enqueue", "preProc", "submit", "exectoVc", "device exec", "queue, DMA and interrupt", "postProc"];

/// How long `done` spent in each of [`STAGES`].
pub fn stage_times(done: &Completion<'_>) -> [std::time::Duration; STAGES.len()] {
    let t = &done.timestamps;
    let device = done.device.map_or(std::time::Duration::ZERO, |d| d.exec);
    [
        t.enqueue_time(),
        t.pre_proc_time(),
        t.submit_time(),
        t.exec_to_vc(),
        device,
        t.exec_to_complete().saturating_sub(device),
        t.post_proc_time(),
    ]
}

/// Takes in finished inferences (from any thread).
pub struct Collector {
    sampling: Sampling,
    batch_size: u32,
    inner: Mutex<Collected>,
}

impl Collector {
    pub fn new(sampling: Sampling, batch_size: u32) -> Collector {
        Collector { sampling, batch_size, inner: Mutex::new(Collected::default()) }
    }

    /// Records `done`; `profile` fetches the device statistics of its run when it is
    /// profiled and those are wanted.
    pub fn record(&self, done: &Completion<'_>, profile: impl FnOnce() -> Result<RunProfile, String>) {
        let sampled = within(done.index, self.sampling.profile);
        // The activation's own count: its queue is in order, so completions are too.
        let nth = {
            let mut c = self.inner.lock();
            if c.per_activation.len() <= done.activation {
                c.per_activation.resize(done.activation + 1, 0);
            }
            c.per_activation[done.activation] += 1;
            c.per_activation[done.activation] - 1
        };
        let profiled = self.sampling.device_profiles && within(nth, self.sampling.profile);
        let run = profiled.then(profile);
        let mut c = self.inner.lock();
        c.completed += 1;
        c.sampled += u64::from(sampled);
        c.device_sampled += u64::from(profiled);
        c.last_returned_ns = c.last_returned_ns.max(done.timestamps.returned);
        c.round_trips_ms.push(done.timestamps.total_round_trip().as_secs_f64() * 1e3);
        c.host_round_trips_ms.push(done.timestamps.host_round_trip().as_secs_f64() * 1e3);
        for (sum, d) in c.stage_sums_ms.iter_mut().zip(stage_times(done)) {
            *sum += d.as_secs_f64() * 1e3;
        }
        if let Some(d) = done.device {
            let point = (u64::try_from(d.end.as_nanos()).unwrap_or(u64::MAX), done.timestamps.completed);
            c.span = Some(match c.span {
                None => (point, point),
                Some((first, last)) => (first, if point.1 >= last.1 { point } else { last }),
            });
            c.exec_us.push(d.exec.as_secs_f64() * 1e6);
            c.input_wait_us.push(d.input_wait.as_secs_f64() * 1e6);
            c.output_wait_us.push(d.output_wait.as_secs_f64() * 1e6);
        }
        if sampled && self.sampling.latency {
            c.latency_rows.push((done.activation, latency::row(done.index, done, self.batch_size)));
        }
        match run {
            Some(Ok(run)) => {
                c.profiled.push(Profiled { index: nth, activation: done.activation, timestamps: done.timestamps, run })
            }
            Some(Err(e)) => {
                c.profile_error.get_or_insert(format!(
                    "cannot read the device profile of inference {nth} of activation {}: {e}",
                    done.activation
                ));
            }
            None => {}
        }
        if within(done.index, self.sampling.outputs) {
            c.outputs.push(KeptOutputs {
                index: done.index,
                activation: done.activation,
                outputs: done.outputs.to_vec(),
            });
        }
    }

    /// Inferences finished so far.
    pub fn completed(&self) -> u64 {
        self.inner.lock().completed
    }

    /// Everything recorded, in inference order where order matters.
    /// Whether every inference of the profiling range has been recorded.
    pub fn samples_complete(&self) -> bool {
        let c = self.inner.lock();
        let device = !self.sampling.device_profiles
            || c.device_sampled >= self.sampling.profile.1.saturating_mul(self.sampling.activations as u64);
        c.sampled >= self.sampling.profile.1 && device
    }

    pub fn into_collected(self) -> Collected {
        let mut c = self.inner.into_inner();
        let by_value = |v: &mut Vec<f64>| v.sort_by(f64::total_cmp);
        by_value(&mut c.round_trips_ms);
        by_value(&mut c.host_round_trips_ms);
        c.latency_rows.sort_by(|a, b| a.1[0].total_cmp(&b.1[0]));
        c.outputs.sort_by_key(|o| o.index);
        c.profiled.sort_by_key(|p| (p.index, p.activation));
        c
    }
}

/// Mean, min, max and standard deviation of a device figure.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub std: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Spread {
            avg: stats::mean(&v),
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
            std: stats::std_dev(&v),
        }
    }
}

/// The Device Performance table's rows.
pub fn device_rows(c: &Collected) -> [(&'static str, Spread); 3] {
    [
        ("ExecTimeUs", Spread::of(&c.exec_us)),
        ("InputWaitTimeUs", Spread::of(&c.input_wait_us)),
        ("OutputWaitTimeUs", Spread::of(&c.output_wait_us)),
    ]
}

/// The Device Performance table as qaic-runner prints it.
pub fn render_device_table(rows: &[(&str, Spread)]) -> String {
    let mut out = String::from("Device Performance: \n");
    let _ = writeln!(out, "{:<17}{:<15}{:<15}{:<15}{:<15}", "Metric,", "Avg,", "Min,", "Max,", "Std");
    for (name, s) in rows {
        let _ = writeln!(
            out,
            "{:<17}{:<15}{:<15}{:<15}{:<15}",
            format!("{name},"),
            format!("{:.3},", s.avg),
            format!("{:.3},", s.min),
            format!("{:.3},", s.max),
            format!("{:.3}", s.std)
        );
    }
    out
}

/// The Stats line's figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throughput {
    pub inferences: u64,
    /// Microseconds, at least 1.
    pub duration_us: u128,
    pub batch_size: u32,
    /// Samples per second: inferences x 1e6 / duration x batch size.
    pub inf_per_sec: f64,
}

impl Throughput {
    pub fn new(inferences: u64, duration: std::time::Duration, batch_size: u32) -> Throughput {
        let duration_us = duration.as_micros().max(1);
        let inf_per_sec = inferences as f64 * 1e6 / duration_us as f64 * f64::from(batch_size);
        Throughput { inferences, duration_us, batch_size, inf_per_sec }
    }

    /// `InferenceCnt <n> TotalDuration <us>us BatchSize <b> Inf/Sec <rate>`.
    pub fn stats_line(&self) -> String {
        format!(
            "InferenceCnt {} TotalDuration {}us BatchSize {} Inf/Sec {:.3}",
            self.inferences, self.duration_us, self.batch_size, self.inf_per_sec
        )
    }
}

/// The `--json` document: every figure of the run (a figure that is not a finite
/// number is `null`).
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub program: String,
    pub activations: usize,
    pub set_size: usize,
    pub batch_size: u32,
    /// `timing` or `functional`.
    pub mode: String,
    /// `simulated` or `wall`.
    pub clock: &'static str,
    /// Wall-clock runs: device time over wall time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulator_speed: Option<f64>,
    /// Wall-clock runs: whether the host, not the card, set the pace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_bound: Option<bool>,
    pub inference_count: u64,
    pub total_duration_us: u128,
    pub inf_per_sec: f64,
    pub latency_ms: Latency,
    pub host_round_trip_ms: HostLatency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    pub device: DeviceFigures,
}

/// Round-trip latency of the application's inferences, ms.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The host's part of the round trip, ms.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct HostLatency {
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// The Device Performance table's rows, named as qaic-runner names them.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct DeviceFigures {
    #[serde(rename = "ExecTimeUs")]
    pub exec_time_us: Spread,
    #[serde(rename = "InputWaitTimeUs")]
    pub input_wait_time_us: Spread,
    #[serde(rename = "OutputWaitTimeUs")]
    pub output_wait_time_us: Spread,
}

impl Latency {
    pub fn of(sorted_ms: &[f64]) -> Latency {
        let (p50, p90, p99, max) = round_trip_percentiles(sorted_ms);
        Latency { mean: stats::mean(sorted_ms), p50, p90, p99, max }
    }
}

impl HostLatency {
    pub fn of(sorted_ms: &[f64]) -> HostLatency {
        let (p50, _, p99, max) = round_trip_percentiles(sorted_ms);
        HostLatency { mean: stats::mean(sorted_ms), p50, p99, max }
    }
}

impl DeviceFigures {
    pub fn of(c: &Collected) -> DeviceFigures {
        let [(_, exec), (_, input), (_, output)] = device_rows(c);
        DeviceFigures { exec_time_us: exec, input_wait_time_us: input, output_wait_time_us: output }
    }
}

impl RunReport {
    /// The document as written: indented JSON and a final newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a report always serialises");
        text.push('\n');
        text
    }
}

/// Latency percentiles of the sorted round trips, ms: (p50, p90, p99, max).
pub fn round_trip_percentiles(sorted_ms: &[f64]) -> (f64, f64, f64, f64) {
    (
        stats::percentile(sorted_ms, 0.5),
        stats::percentile(sorted_ms, 0.9),
        stats::percentile(sorted_ms, 0.99),
        sorted_ms.last().copied().unwrap_or(f64::NAN),
    )
}
