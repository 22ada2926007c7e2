//! What each layer of a compiled program costs on the card: one inference of the
//! program run on the device model (timing mode, its instruction trace on, no host in
//! the way), every instruction's interval attributed to the ONNX node it was lowered
//! from. Behind `aic-exec -aic-perf-metrics`'s per-layer table.
//!
//! A layer's **time** is the span from its first instruction's start to its last one's
//! end, over all cores; layers overlap a little where the next layer's weights are
//! fetched while the previous one computes, so the **share** is of the sum of the spans.
//! What **bounds** a layer is the engine it kept busiest (busy cycles summed over cores,
//! HVX's divided by its threads): `HMX`, `HVX`, `sync` (cores waiting on each other), or,
//! for the DMA engine, where its bytes went — `DDR` when the layer moved at least as many
//! bytes to and from DDR as through the on-chip pool, `NoC` when most of its pool bytes
//! were read from other cores' VTCM, `DMA` otherwise.

use aicsim_abi::control::ControlStatus;
use aicsim_abi::layout::MemoryMap;
use aicsim_compiler::Compiled;
use aicsim_device::nsp::{Engine, ENGINES, HVX_THREADS};
use aicsim_device::rig::Rig;
use aicsim_device::scheduler::ExecMode;
use aicsim_device::DeviceConfig;
use serde::Serialize;

/// One layer's share of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerCost {
    pub name: String,
    pub op_type: String,
    pub macs: u64,
    /// Whether the layer's MACs ran on HMX (it issued matrix instructions).
    pub on_hmx: bool,
    /// First start to last end, device cycles.
    pub span_cycles: u64,
    pub span_us: f64,
    /// Of the sum of every layer's span, in percent.
    pub share_percent: f64,
    /// Busy cycles per engine summed over cores (DMA, HMX, HVX per thread, sync).
    pub busy_cycles: [u64; ENGINES],
    pub bound: &'static str,
}

/// One inference of a program, layer by layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramCost {
    /// The run, first instruction to last, device cycles and microseconds.
    pub run_cycles: u64,
    pub run_us: f64,
    pub clock_hz: u64,
    pub layers: Vec<LayerCost>,
}

fn round_mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20).max(1) << 20
}

/// Runs one inference of `compiled` on the device model and attributes its trace.
pub fn layer_costs(compiled: &Compiled) -> Result<ProgramCost, String> {
    let mut image = compiled.image.clone();
    image.constants.clear();
    let container = image.to_bytes();
    let io: u64 = image.bindings.iter().map(|b| b.size_bytes).sum();
    // Host memory: inputs and outputs in the lower half, the container in the upper.
    let host_bytes = round_mib(2 * io.max(container.len() as u64));
    let config = DeviceConfig {
        num_nsp: image.num_cores().max(1),
        mode: ExecMode::Timing,
        trace: true,
        map: MemoryMap { ring_nelem: 16, host_bytes, ddr_bytes: round_mib(image.ddr_bytes) },
        ..DeviceConfig::default()
    };
    let clock_hz = config.clock_hz;
    let mut rig = Rig::new(config);
    let failed = |what: &str, status: ControlStatus, message: &str| format!("{what}: {status:?}: {message}");
    let program = rig.load(&container, rig.staging()).map_err(|r| failed("load", r.status, &r.message))?;
    let info = rig.activate(program, 0).map_err(|r| failed("activate", r.status, &r.message))?;
    let inputs: Vec<Vec<u8>> = image.inputs().map(|b| vec![0u8; b.size_bytes as usize]).collect();
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    rig.infer(0, info, &image, &refs, rig.map.host_offset()).map_err(|r| format!("the run did not complete: {r:?}"))?;
    let run = rig.fw.last_run(0).ok_or("the device kept no profile of the run")?;
    let activity = crate::profiling::layer_activity(&image, run);
    let total: u64 = activity.iter().map(|a| a.span_cycles()).sum::<u64>().max(1);
    let us = |cycles: u64| cycles as f64 * 1e6 / clock_hz as f64;
    let reports = &compiled.lowered.layers;
    let layers = activity
        .iter()
        .map(|a| {
            let r = &reports[a.layer];
            let mut b = a.busy;
            b[Engine::Hvx as usize] /= u64::from(HVX_THREADS);
            let top = [Engine::Dma, Engine::Hmx, Engine::Hvx, Engine::Sync]
                .into_iter()
                .max_by_key(|&e| (b[e as usize], e == Engine::Dma))
                .expect("four engines");
            let bound = match top {
                _ if b.iter().all(|&c| c == 0) => "-",
                Engine::Hmx => "HMX",
                Engine::Hvx => "HVX",
                Engine::Sync => "sync",
                Engine::Dma if r.load_bytes + r.store_bytes >= r.pool_bytes => "DDR",
                Engine::Dma if 2 * r.peer_bytes > r.pool_bytes => "NoC",
                Engine::Dma => "DMA",
            };
            LayerCost {
                name: r.name.clone(),
                op_type: r.op_type.clone(),
                macs: r.macs,
                on_hmx: a.busy[Engine::Hmx as usize] > 0,
                span_cycles: a.span_cycles(),
                span_us: us(a.span_cycles()),
                share_percent: a.span_cycles() as f64 * 100.0 / total as f64,
                busy_cycles: b,
                bound,
            }
        })
        .collect();
    Ok(ProgramCost { run_cycles: run.cycles(), run_us: us(run.cycles()), clock_hz, layers })
}
