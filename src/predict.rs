//! What a compiled program will do on the card: throughput and latencies of `instances`
//! activations with `set_size` inferences in flight each, on the simulated clock.
//!
//! A prediction is a run of the same engine `aic-runner` uses
//! ([`InferenceSet::run_simulated`]): the program is loaded on a simulated device on the
//! simulated clock, activated `instances` times, and every handle goes round enqueue ->
//! pre-processing -> submit -> host link -> the activation's cores -> host link ->
//! completion -> post-processing -> enqueue, with the host stages from [`HostModel`] and
//! the device's from its model. The program is loaded without its constants: a timing
//! run reads nothing inside the device, so they would only cost the load. Queueing (many
//! inferences in flight), the instances' contention for DDR and the on-chip network,
//! and their drifting phases all come out of that run; nothing is fitted per
//! configuration. The figures are those of the whole run, as `aic-runner --time` reports
//! them ([`Measure::Run`]: the same command gives the same figures), or of a shorter
//! window in which every instance is past its warm-up and none has finished
//! ([`Measure::Window`], what the configurator uses to search quickly).

use std::sync::Arc;

use aicsim_compiler::Compiled;
use aicsim_device::nsp::CostModel;
use aicsim_device::scheduler::ExecMode;
use aicsim_device::{DeviceConfig, Pacing};
use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
pub use aicsim_runtime::HostModel;
use aicsim_runtime::{InferenceSet, Program, RunLimit};
use parking_lot::Mutex;

use crate::stats;

/// The device the prediction runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceModel {
    pub cost: CostModel,
    pub clock_hz: u64,
    pub num_nsp: u32,
    /// Seed of the device's dispatch jitter (`aic-runner --seed`, whose default is 1).
    pub seed: u64,
}

impl From<&DeviceConfig> for DeviceModel {
    fn from(c: &DeviceConfig) -> DeviceModel {
        DeviceModel { cost: c.cost, clock_hz: c.clock_hz, num_nsp: c.num_nsp, seed: 1 }
    }
}

/// A compiled program, as the predictor needs it.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The program without its constants.
    pub program: Program,
    /// Samples per inference.
    pub batch: u32,
    /// Cores per instance.
    pub cores: u32,
}

impl Workload {
    pub fn from_compiled(c: &Compiled) -> Result<Workload, PredictError> {
        let mut image = c.image.clone();
        image.constants.clear();
        let cores = image.num_cores();
        let batch = image.batch_size;
        let program = Program::from_image(image).map_err(|e| PredictError::Program(e.to_string()))?;
        Ok(Workload { program, batch, cores })
    }
}

/// How the workload is deployed, as `aic-runner -a N -S S`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deployment {
    pub instances: u32,
    pub set_size: u32,
}

/// Mean and spread of one latency, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// Percentiles as `aic-runner` reports them ([`stats::percentile`]).
    fn of(mut ms: Vec<f64>) -> Latency {
        if ms.is_empty() {
            return Latency::default();
        }
        ms.sort_by(f64::total_cmp);
        Latency {
            mean: stats::mean(&ms),
            min: ms[0],
            p50: stats::percentile(&ms, 0.5),
            p99: stats::percentile(&ms, 0.99),
            max: ms[ms.len() - 1],
        }
    }
}

/// What the card is predicted to do. For a generation ([`predict_generation`]): the
/// rate is tokens per second, the host round trip the time per output token, the total
/// round trip the time to first token.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    /// Whether this is a generation's prediction (see above).
    pub generation: bool,
    /// Samples per second over the measured window (all instances).
    pub inf_per_sec: f64,
    /// `hostRoundTrip`: request until its completion is back.
    pub host_round_trip: Latency,
    /// `totalRoundtripTime`.
    pub total_round_trip: Latency,
    /// Device execution of one inference (cores busy), queueing excluded.
    pub device_exec: Latency,
}

/// Why there is no prediction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PredictError {
    #[error("{instances} instances x {cores} cores = {need} cores, but the device has {have}")]
    TooManyCores { instances: u32, cores: u32, need: u64, have: u32 },
    #[error("{what} must be at least 1")]
    Zero { what: &'static str },
    #[error("the program cannot run: {0}")]
    Program(String),
    #[error("the run failed: {0}")]
    Run(String),
}

/// What a prediction measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// A run of this much simulated time, reported as `aic-runner --time` reports it:
    /// every inference over the run's length.
    Run(std::time::Duration),
    /// Every instance completes `max(warmup, set size) + measured` inferences; the
    /// figures are those of the window in which all of them are past the first count
    /// and none past the second.
    Window { warmup: u32, measured: u32 },
}

/// One finished inference, as the window needs it.
#[derive(Clone, Copy)]
struct Done {
    activation: usize,
    /// When its completion was back on the host, simulated ns.
    completed: u64,
    host_rt_ms: f64,
    total_rt_ms: f64,
    exec_ms: Option<f64>,
}

/// A simulated device in timing mode on the simulated clock, with room for `instances`
/// programs of `cores` cores.
fn timing_device(device: &DeviceModel, cores: u32, instances: u32) -> Result<Arc<Device>, PredictError> {
    let need = u64::from(cores) * u64::from(instances);
    if need > u64::from(device.num_nsp) {
        return Err(PredictError::TooManyCores { instances, cores, need, have: device.num_nsp });
    }
    let config = DeviceConfig {
        num_nsp: device.num_nsp,
        cost: device.cost,
        clock_hz: device.clock_hz,
        mode: ExecMode::Timing,
        pacing: Pacing::Simulated,
        seed: device.seed,
        ..DeviceConfig::default()
    };
    let dev = Device::open_simulated(KmdConfig { device: config, ..KmdConfig::default() })
        .map_err(|e| PredictError::Run(e.to_string()))?;
    Ok(Arc::new(dev))
}

/// Predicts `deployment` of `workload`, measured as `measure` says. Deterministic.
pub fn predict(
    workload: &Workload,
    deployment: Deployment,
    device: &DeviceModel,
    host: &HostModel,
    measure: Measure,
) -> Result<Prediction, PredictError> {
    let cores = workload.cores;
    for (what, v) in [("cores", cores), ("instances", deployment.instances), ("set size", deployment.set_size)] {
        if v == 0 {
            return Err(PredictError::Zero { what });
        }
    }
    match measure {
        Measure::Window { measured: 0, .. } => return Err(PredictError::Zero { what: "measured inferences" }),
        Measure::Run(d) if d.is_zero() => return Err(PredictError::Zero { what: "run time" }),
        _ => {}
    }
    let run_error = |e: &dyn std::fmt::Display| PredictError::Run(e.to_string());
    let dev = timing_device(device, cores, deployment.instances)?;
    let instances = deployment.instances as usize;
    let set = InferenceSet::new(dev, &workload.program, instances, deployment.set_size as usize)
        .map_err(|e| run_error(&e))?;
    let done = Mutex::new(Vec::new());
    let record = |c: &aicsim_runtime::Completion<'_>| {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        done.lock().push(Done {
            activation: c.activation,
            completed: c.timestamps.completed,
            host_rt_ms: ms(c.timestamps.host_round_trip()),
            total_rt_ms: ms(c.timestamps.total_round_trip()),
            exec_ms: c.device.map(|d| ms(d.exec)),
        });
    };
    let batch = f64::from(workload.batch);
    match measure {
        Measure::Run(length) => {
            let summary =
                set.run_simulated(RunLimit::Duration(length), host, &[], record).map_err(|e| run_error(&e))?;
            let done = done.into_inner();
            let all = |f: fn(&Done) -> Option<f64>| Latency::of(done.iter().filter_map(f).collect());
            let micros = summary.elapsed.as_micros().max(1) as f64;
            Ok(Prediction {
                generation: false,
                inf_per_sec: summary.inferences as f64 * 1e6 / micros * batch,
                host_round_trip: all(|d| Some(d.host_rt_ms)),
                total_round_trip: all(|d| Some(d.total_rt_ms)),
                device_exec: all(|d| d.exec_ms),
            })
        }
        Measure::Window { warmup, measured } => {
            // Every handle goes round once before the queue is in its steady state.
            let warmup = warmup.max(deployment.set_size) as usize;
            let per_instance = warmup + measured as usize;
            // Instances progress at the same rate on average; the margin lets the
            // slowest one reach its count too.
            let count = instances * (per_instance + deployment.set_size as usize + 2);
            set.run_simulated(RunLimit::Count(count as u64), host, &[], record).map_err(|e| run_error(&e))?;
            window(&done.into_inner(), instances, warmup, per_instance, batch)
        }
    }
}

/// A language model's generation: `instances` sequences at once, each a `prompt_len`
/// prompt then `tokens` tokens, `sequences` per instance, run by the engine
/// `aic-runner --generate` uses. Deterministic.
pub fn predict_generation(
    workload: &Workload,
    instances: u32,
    prompt_len: usize,
    tokens: u32,
    sequences: u32,
    device: &DeviceModel,
    host: &HostModel,
) -> Result<Prediction, PredictError> {
    for (what, v) in [("instances", instances), ("tokens", tokens), ("sequences", sequences)] {
        if v == 0 {
            return Err(PredictError::Zero { what });
        }
    }
    let gen =
        crate::generation::plan(&workload.program, prompt_len, tokens, device.seed).map_err(PredictError::Program)?;
    let run_error = |e: &dyn std::fmt::Display| PredictError::Run(e.to_string());
    let dev = timing_device(device, workload.cores, instances)?;
    let set = InferenceSet::new(dev, &workload.program, instances as usize, 1).map_err(|e| run_error(&e))?;
    let limit = RunLimit::Count(u64::from(instances) * u64::from(sequences));
    let f = crate::generation::run(&set, limit, host, &gen).map_err(|e| run_error(&e))?;
    let latency =
        |s: crate::generation::Summary| Latency { mean: s.mean, min: s.min, p50: s.p50, p99: s.p99, max: s.max };
    Ok(Prediction {
        generation: true,
        inf_per_sec: f.tokens_per_sec,
        host_round_trip: latency(f.tpot_ms),
        total_round_trip: latency(f.ttft_ms),
        device_exec: Latency::default(),
    })
}

/// The figures of the window in which every instance has completed `warmup` inferences
/// and none more than `per_instance`.
fn window(
    done: &[Done],
    instances: usize,
    warmup: usize,
    per_instance: usize,
    batch: f64,
) -> Result<Prediction, PredictError> {
    let per: Vec<Vec<Done>> =
        (0..instances).map(|a| done.iter().filter(|d| d.activation == a).copied().collect()).collect();
    let nth = |a: usize, k: usize| per[a].get(k - 1).map(|d| d.completed);
    let start = (0..instances).map(|a| nth(a, warmup)).collect::<Option<Vec<u64>>>();
    let end = (0..instances).map(|a| nth(a, per_instance)).collect::<Option<Vec<u64>>>();
    let (Some(start), Some(end)) = (start, end) else {
        return Err(PredictError::Run(String::from("an instance did not complete its inferences")));
    };
    let (start, end) = (start.into_iter().max().unwrap_or(0), end.into_iter().min().unwrap_or(0));
    let inside = done.iter().filter(|d| d.completed > start && d.completed <= end).count();
    let seconds = (end.saturating_sub(start) as f64 / 1e9).max(1e-12);
    let measured_of = |f: fn(&Done) -> Option<f64>| {
        Latency::of(per.iter().flat_map(|p| p[warmup..per_instance.min(p.len())].iter().filter_map(f)).collect())
    };
    Ok(Prediction {
        generation: false,
        inf_per_sec: inside as f64 * batch / seconds,
        host_round_trip: measured_of(|d| Some(d.host_rt_ms)),
        total_round_trip: measured_of(|d| Some(d.total_rt_ms)),
        device_exec: measured_of(|d| d.exec_ms),
    })
}
