//! What a compiled program will do on the card: throughput and latencies of `instances`
//! activations with `set_size` inferences in flight each, in virtual time.
//!
//! The device side is the real scheduler running the real instruction streams in
//! [`ExecMode::Timing`] (nothing moves, everything is timed): every instance on its own
//! cores, all of them sharing DDR bandwidth at once. The host side is a small queueing
//! model whose stage costs are the [`HostModel`] parameters: each of an activation's
//! `set_size` handles goes round enqueue -> pre-processing -> submit -> PCIe in -> wait
//! for the activation's cores -> run -> PCIe out -> completion -> post-processing -> back
//! to enqueue, as `aic-runner` drives a real card. Queueing latency (many inferences in
//! flight) falls out of that loop; nothing is fitted per configuration.

use std::collections::VecDeque;
use std::sync::Arc;

use aicsim_compiler::Compiled;
use aicsim_device::container::IoDirection;
use aicsim_device::memory::HeapMemory;
use aicsim_device::nsp::{CostModel, NspCore};
use aicsim_device::scheduler::{ExecMode, Plan, Scheduler};
use aicsim_device::DeviceConfig;

use crate::stats;

/// Host-side costs of one inference, in nanoseconds unless named otherwise. Defaults and
/// their sources: `docs/calibration.md`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HostModel {
    /// Request to pre-processing start (`enqTime`).
    pub enqueue_ns: f64,
    /// Pre-processing (input conversion and copy), per byte of device input.
    pub pre_proc_ns_per_byte: f64,
    /// Pre-processing end to the kernel call (`submitTime`).
    pub submit_ns: f64,
    /// Kernel call until the request is on the device's channel (`exectoVc`).
    pub exec_to_vc_ns: f64,
    /// Host link bandwidth per direction, after packet overhead.
    pub pcie_bytes_per_second: f64,
    /// Device completion to the completion being back in user space (MSI, interrupt
    /// thread, waking the waiter).
    pub completion_ns: f64,
    /// `postProc`.
    pub post_proc_ns: f64,
    /// Application-side work counted in the total round trip beyond `postProc` (the
    /// runner taking and returning handles, output bookkeeping).
    pub app_ns: f64,
    /// From the end of one inference's round trip to the runner enqueueing the handle
    /// again.
    pub requeue_ns: f64,
}

impl Default for HostModel {
    fn default() -> HostModel {
        HostModel {
            enqueue_ns: 4_900.0,
            pre_proc_ns_per_byte: 37_000.0 / 602_112.0,
            submit_ns: 1_700.0,
            exec_to_vc_ns: 4_500.0,
            pcie_bytes_per_second: 15.75e9 * 256.0 / (256.0 + 24.0),
            completion_ns: 20_000.0,
            post_proc_ns: 2_600.0,
            app_ns: 90_000.0,
            requeue_ns: 30_000.0,
        }
    }
}

/// The device the prediction runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceModel {
    pub cost: CostModel,
    pub clock_hz: u64,
    pub num_nsp: u32,
}

impl From<&DeviceConfig> for DeviceModel {
    fn from(c: &DeviceConfig) -> DeviceModel {
        DeviceModel { cost: c.cost, clock_hz: c.clock_hz, num_nsp: c.num_nsp }
    }
}

/// A compiled program, as the predictor needs it.
#[derive(Clone, Debug)]
pub struct Workload {
    /// One instruction stream per core.
    pub streams: Arc<Plan>,
    /// Samples per inference.
    pub batch: u32,
    /// Bytes the host sends to the device per inference (device format).
    pub input_bytes: u64,
    /// Bytes the device sends back per inference.
    pub output_bytes: u64,
}

impl Workload {
    pub fn from_compiled(c: &Compiled) -> Workload {
        let bytes = |d: IoDirection| c.image.bindings.iter().filter(|b| b.direction == d).map(|b| b.size_bytes).sum();
        Workload {
            streams: Arc::new(Plan::new(c.lowered.streams.clone(), &CostModel::default())),
            batch: c.image.batch_size,
            input_bytes: bytes(IoDirection::Input),
            output_bytes: bytes(IoDirection::Output),
        }
    }
}

/// How the workload is deployed, as `aic-runner -a N -S S`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deployment {
    pub instances: u32,
    pub set_size: u32,
}

/// Mean and spread of one latency, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
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

/// What the card is predicted to do.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Prediction {
    /// Samples per second over the measured window (all instances).
    pub inf_per_sec: f64,
    /// `hostRoundTrip`: request until its completion is back.
    pub host_round_trip: Latency,
    /// `totalRoundtripTime`.
    pub total_round_trip: Latency,
    /// Device execution of one inference (cores busy), queueing excluded.
    pub device_exec: Latency,
    /// DDR bytes per second the device moved over the window.
    pub ddr_bytes_per_second: f64,
}

/// Why there is no prediction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PredictError {
    #[error("{instances} instances x {cores} cores = {need} cores, but the device has {have}")]
    TooManyCores { instances: u32, cores: u32, need: u64, have: u32 },
    #[error("{what} must be at least 1")]
    Zero { what: &'static str },
    #[error("the program faulted on the device: {0}")]
    Fault(String),
}

/// One handle of one activation going round the loop.
#[derive(Clone, Copy, Debug)]
struct Request {
    /// Virtual time (ns) the application enqueued it.
    enqueue: f64,
    /// When its input is in device DDR and it may start.
    ready: f64,
}

struct Instance {
    cores: Vec<u32>,
    queue: VecDeque<Request>,
    running: Option<(u64, Request, f64)>,
}

/// Predicts `deployment` of `workload`: simulates `warmup + measured` inferences per
/// instance and reports the measured ones. Deterministic.
pub fn predict(
    workload: &Workload,
    deployment: Deployment,
    device: &DeviceModel,
    host: &HostModel,
    warmup: u32,
    measured: u32,
) -> Result<Prediction, PredictError> {
    let cores = workload.streams.len() as u32;
    if cores == 0 {
        return Err(PredictError::Zero { what: "cores" });
    }
    if deployment.instances == 0 {
        return Err(PredictError::Zero { what: "instances" });
    }
    if deployment.set_size == 0 {
        return Err(PredictError::Zero { what: "set size" });
    }
    if measured == 0 {
        return Err(PredictError::Zero { what: "measured inferences" });
    }
    let need = u64::from(cores) * u64::from(deployment.instances);
    if need > u64::from(device.num_nsp) {
        return Err(PredictError::TooManyCores { instances: deployment.instances, cores, need, have: device.num_nsp });
    }
    let ns_per_cycle = 1e9 / device.clock_hz as f64;
    let to_cycle = |ns: f64| (ns / ns_per_cycle).ceil() as u64;
    let mut sched = Scheduler::new(device.cost, device.clock_hz);
    let mut nsps: Vec<Option<NspCore>> = (0..device.num_nsp).map(|_| None).collect();
    let mem = HeapMemory::new(0);

    let pcie = |bytes: u64| bytes as f64 / host.pcie_bytes_per_second * 1e9;
    let pre_device =
        host.enqueue_ns + host.pre_proc_ns_per_byte * workload.input_bytes as f64 + host.submit_ns + host.exec_to_vc_ns;
    let send = |enqueue: f64, link_in_free: &mut f64| {
        let start = (enqueue + pre_device).max(*link_in_free);
        *link_in_free = start + pcie(workload.input_bytes);
        Request { enqueue, ready: *link_in_free }
    };

    let mut instances: Vec<Instance> = (0..deployment.instances)
        .map(|i| Instance { cores: (i * cores..(i + 1) * cores).collect(), queue: VecDeque::new(), running: None })
        .collect();
    // The runner fills every handle at the start, one after the other.
    // Instances do not run in lock step on a card: the runner starts them one after the
    // other and host jitter drifts their phases, so over a run every alignment of one
    // instance's weight-heavy layers with another's occurs. Evenly staggered starts
    // (by a fraction of one run alone) stand for that average; lock step would make
    // every instance stream its weights at the same moments.
    let solo = {
        let id = sched.start(workload.streams.clone(), &instances[0].cores, 0);
        let done = sched.run_until_completion(&mut nsps, 0, &mem, ExecMode::Timing);
        match done.into_iter().find(|d| d.0 == id) {
            Some((_, Ok(stats))) => stats.cycles() as f64 * ns_per_cycle,
            Some((_, Err(e))) => return Err(PredictError::Fault(e.to_string())),
            None => return Err(PredictError::Fault("the program did not finish".into())),
        }
    };
    let t0 = sched.now() as f64 * ns_per_cycle;
    let stagger = solo / f64::from(deployment.instances);
    // The host link carries one transfer at a time per direction.
    let mut link_in_free = t0;
    let mut link_out_free = t0;
    for s in 0..deployment.set_size {
        for (i, inst) in instances.iter_mut().enumerate() {
            let enqueue = t0 + f64::from(s) * pre_device + i as f64 * stagger;
            inst.queue.push_back(send(enqueue, &mut link_in_free));
        }
    }

    // Every handle must have gone round once before the queue is in its steady state.
    let warmup = warmup.max(deployment.set_size);
    let per_instance = warmup + measured;
    let mut finished = vec![0u32; instances.len()];
    let mut host_rt = Vec::new();
    let mut total_rt = Vec::new();
    let mut exec = Vec::new();
    // (instance, nth completion, device end ns, samples, DDR bytes)
    let mut completions: Vec<(usize, u32, f64, u64, u64)> = Vec::new();
    loop {
        let now_ns = sched.now() as f64 * ns_per_cycle;
        // Start whatever is ready now.
        for inst in &mut instances {
            if inst.running.is_none() {
                if let Some(req) = inst.queue.front().copied() {
                    if to_cycle(req.ready) <= sched.now() {
                        inst.queue.pop_front();
                        let id = sched.start(workload.streams.clone(), &inst.cores, 0);
                        inst.running = Some((id, req, now_ns));
                    }
                }
            }
        }
        if finished.iter().all(|&f| f >= per_instance) {
            break;
        }
        // The next moment something host-side becomes ready to start.
        let next_ready = instances
            .iter()
            .filter(|i| i.running.is_none())
            .filter_map(|i| i.queue.front().map(|r| to_cycle(r.ready)))
            .min();
        if sched.is_idle() {
            match next_ready {
                Some(t) => {
                    sched.idle_until(t);
                    continue;
                }
                None => break,
            }
        }
        let limit = next_ready.unwrap_or(u64::MAX);
        for (id, result) in sched.run_until(&mut nsps, 0, &mem, ExecMode::Timing, limit) {
            let stats = result.map_err(|e| PredictError::Fault(e.to_string()))?;
            let i = instances.iter().position(|x| x.running.is_some_and(|r| r.0 == id)).expect("a job of ours");
            let (_, req, started) = instances[i].running.take().expect("running");
            let end = sched.now() as f64 * ns_per_cycle;
            let out_start = end.max(link_out_free);
            link_out_free = out_start + pcie(workload.output_bytes);
            let completed = link_out_free + host.completion_ns;
            let done = completed + host.post_proc_ns + host.app_ns;
            finished[i] += 1;
            completions.push((i, finished[i], end, u64::from(workload.batch), stats.ddr_bytes));
            if finished[i] > warmup && finished[i] <= per_instance {
                host_rt.push((completed - req.enqueue) / 1e6);
                total_rt.push((done - req.enqueue) / 1e6);
                exec.push((end - started) / 1e6);
            }
            // The handle goes round again.
            let again = send(done + host.requeue_ns, &mut link_in_free);
            instances[i].queue.push_back(again);
        }
    }
    // The window: from the moment every instance is past its warm-up to the moment the
    // first one is done, so that every instance runs throughout.
    let warm = |i: usize| completions.iter().find(|c| c.0 == i && c.1 == warmup).map_or(0.0, |c| c.2);
    let start = (0..instances.len()).map(warm).fold(0.0, f64::max);
    let end = (0..instances.len())
        .map(|i| completions.iter().find(|c| c.0 == i && c.1 == per_instance).map_or(f64::MAX, |c| c.2))
        .fold(f64::MAX, f64::min);
    let inside = completions.iter().filter(|c| c.2 > start && c.2 <= end);
    let (samples, ddr) = inside.fold((0u64, 0u64), |(s, d), c| (s + c.3, d + c.4));
    let seconds = ((end - start) / 1e9).max(1e-12);
    Ok(Prediction {
        inf_per_sec: samples as f64 / seconds,
        host_round_trip: Latency::of(host_rt),
        total_round_trip: Latency::of(total_rt),
        device_exec: Latency::of(exec),
        ddr_bytes_per_second: ddr as f64 / seconds,
    })
}
