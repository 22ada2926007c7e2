//! One NSP core — its VTCM — and what its engines cost: the named cost parameters, the
//! engine and op class of every instruction, and the cycles each takes.
//!
//! Engines per core: one DMA issue engine (with [`DMA_QUEUES`] transfers in flight), one
//! HMX (matrix) engine, [`HVX_THREADS`] HVX
//! (vector) threads, and the sync unit.

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod avx512;
pub mod gemm;
pub mod kernels;
pub mod validate;

use alloc::vec;
use alloc::vec::Vec;

use aicsim_abi::isa::{DType, Op, UnaryKind};

pub use validate::{validate_stream, Limits, ProgramError, StreamProblem};

/// HVX hardware threads per core (the profiling view shows four).
pub const HVX_THREADS: u32 = 4;

/// DMA transfers one core may have in flight at once (e.g. a weight prefetch beside the
/// current tile's loads).
pub const DMA_QUEUES: u32 = 2;

/// One NSP core.
pub struct NspCore {
    /// 16-byte words, so that f32 and f16 views of aligned offsets are aligned too.
    vtcm: Vec<u128>,
}

impl NspCore {
    /// A core with `vtcm_bytes` of VTCM (rounded up to 16). The allocation is zeroed
    /// lazily by the OS, so idle cores cost no memory.
    pub fn new(vtcm_bytes: u64) -> NspCore {
        NspCore { vtcm: vec![0; vtcm_bytes.div_ceil(16) as usize] }
    }

    pub fn vtcm(&self) -> &[u8] {
        bytemuck::cast_slice(&self.vtcm)
    }

    pub fn vtcm_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.vtcm)
    }
}

/// Named cost parameters. Defaults come from public AIC100 figures where they exist
/// (see `docs/device-model.md`); the rest are stated assumptions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostModel {
    /// Cycles to start one DMA transfer (descriptor fetch, address translation).
    pub dma_setup_cycles: u64,
    /// Bytes per cycle one core's DMA engine moves when DDR is not the limit.
    pub dma_bytes_per_cycle: u64,
    /// Device DDR bandwidth shared by every active transfer (LPDDR4x, 4 x 64-bit: 136 GB/s).
    pub ddr_bytes_per_second: u64,
    /// Percent of the peak DDR bandwidth that transfers can sustain (refresh, bank
    /// conflicts, read/write turnaround).
    pub ddr_efficiency_pct: u64,
    /// Bytes per cycle a core's DMA moves between its VTCM and the on-chip pool
    /// (activations kept in VTCM between layers): no DDR involved.
    pub pool_bytes_per_cycle: u64,
    /// On-chip network bandwidth shared by every transfer of pool bytes another core
    /// holds (public: 186 GB/s).
    pub noc_bytes_per_second: u64,
    /// HMX f16 MACs per cycle (public: 4096).
    pub hmx_macs_per_cycle_f16: u64,
    /// HMX int8 MACs per cycle (public: 8192).
    pub hmx_macs_per_cycle_int8: u64,
    /// f32 matmul MACs per cycle (assumption: a quarter of f16).
    pub hmx_macs_per_cycle_f32: u64,
    /// HMX works on tiles of this many rows, columns and depth; smaller operands are
    /// padded up to it, which is what makes small tiles inefficient.
    pub hmx_tile: u64,
    /// Cycles to start one HMX operation.
    pub hmx_setup_cycles: u64,
    /// Percent of the peak MAC rate HMX sustains on full tiles (operand fetch from VTCM,
    /// accumulator write-back).
    pub hmx_efficiency_pct: u64,
    /// Bytes one HVX thread processes per cycle (one 128-byte vector).
    pub hvx_bytes_per_cycle: u64,
    /// Cycles per vector of an exp/tanh/erf/sigmoid/gelu.
    pub hvx_transcendental_cycles: u64,
    /// Cycles per vector of a divide, square root or reciprocal.
    pub hvx_divide_cycles: u64,
    /// Cycles to issue any instruction.
    pub issue_cycles: u64,
    /// Cycles for a signal, wait or barrier to take effect across cores.
    pub sync_latency_cycles: u64,
    /// Host link bandwidth per direction, after packet overhead (PCIe Gen4 x8: 15.75 GB/s,
    /// of which 256-byte payloads with 24-byte headers carry 91%). Times transfers
    /// between host buffers and device DDR on the simulated clock.
    pub host_link_bytes_per_second: u64,
    /// A ready program is dispatched to its cores after 0 to this many cycles, drawn
    /// from the device's seed (the firmware's polling loop and the cores' wake-up). It
    /// also keeps identical instances from falling into lock step, as host and device
    /// jitter keep them out of it on the card.
    pub dispatch_jitter_cycles: u64,
}

impl Default for CostModel {
    fn default() -> CostModel {
        CostModel {
            dma_setup_cycles: 100,
            dma_bytes_per_cycle: 64,
            ddr_bytes_per_second: 136_000_000_000,
            pool_bytes_per_cycle: 128,
            noc_bytes_per_second: 450_000_000_000,
            ddr_efficiency_pct: 85,
            hmx_macs_per_cycle_f16: 4096,
            hmx_macs_per_cycle_int8: 8192,
            hmx_macs_per_cycle_f32: 1024,
            hmx_tile: 32,
            hmx_setup_cycles: 32,
            hmx_efficiency_pct: 80,
            hvx_bytes_per_cycle: 128,
            hvx_transcendental_cycles: 8,
            hvx_divide_cycles: 4,
            issue_cycles: 4,
            sync_latency_cycles: 100,
            host_link_bytes_per_second: 15_750_000_000 * 256 / 280,
            dispatch_jitter_cycles: 7_000,
        }
    }
}

pub use aicsim_abi::profile::{Engine, OpClass, ENGINES, OP_CLASSES};

fn up(v: u64, tile: u64) -> u64 {
    v.div_ceil(tile.max(1)) * tile.max(1)
}

impl CostModel {
    fn hmx_rate(&self, dtype: DType) -> u64 {
        match dtype {
            DType::F16 => self.hmx_macs_per_cycle_f16,
            DType::I8 | DType::U8 => self.hmx_macs_per_cycle_int8,
            // 16-bit activations times int8 weights: each product is two int8 passes
            // (the activation's high and low bytes), half int8's rate.
            DType::I16 => self.hmx_macs_per_cycle_int8 / 2,
            _ => self.hmx_macs_per_cycle_f32,
        }
        .max(1)
    }

    fn hmx_cycles(&self, dtype: DType, m: u64, n: u64, k: u64, groups: u64) -> u64 {
        let t = self.hmx_tile;
        let macs = groups * up(m, t) * up(n, t) * up(k, t);
        let rate = (self.hmx_rate(dtype) * self.hmx_efficiency_pct.clamp(1, 100)).div_ceil(100);
        self.issue_cycles + self.hmx_setup_cycles + macs.div_ceil(rate.max(1))
    }

    fn vectors(&self, bytes: u64) -> u64 {
        bytes.div_ceil(self.hvx_bytes_per_cycle.max(1))
    }

    /// Cycles to move `bytes` over the host link at `clock_hz` (at least one).
    pub fn host_link_cycles(&self, bytes: u64, clock_hz: u64) -> u64 {
        let rate = u128::from(self.host_link_bytes_per_second.max(1));
        let cycles = (u128::from(bytes) * u128::from(clock_hz)).div_ceil(rate);
        u64::try_from(cycles).unwrap_or(u64::MAX).max(1)
    }

    /// DDR bandwidth in bytes per cycle at `clock_hz`.
    pub fn ddr_bytes_per_cycle(&self, clock_hz: u64) -> f64 {
        let sustained = self.ddr_bytes_per_second as f64 * self.ddr_efficiency_pct.clamp(1, 100) as f64 / 100.0;
        sustained / clock_hz.max(1) as f64
    }

    /// Cycles of a non-DMA instruction once started (DMA time depends on the DDR load;
    /// see the scheduler).
    pub fn cycles(&self, op: &Op) -> u64 {
        let issue = self.issue_cycles;
        match op {
            Op::End => 0,
            Op::DmaIn { .. } | Op::DmaOut { .. } => self.dma_setup_cycles,
            // One descriptor per row.
            Op::Gather { indices, .. } => self.dma_setup_cycles * u64::from(indices.shape[0]).max(1),
            Op::Scatter { src, .. } => {
                self.dma_setup_cycles * (u64::from(src.shape[0]) * u64::from(src.shape[1])).max(1)
            }
            Op::Signal { .. } | Op::Wait { .. } | Op::Barrier => self.sync_latency_cycles,
            Op::MatMul { a, b, .. } => {
                self.hmx_cycles(a.dtype, a.shape[0].into(), b.shape[1].into(), a.shape[1].into(), 1)
            }
            Op::Conv2d { dst, input, weight, geometry, .. } => {
                let g = u64::from(geometry.groups.max(1));
                let m = u64::from(dst.shape[1]) * u64::from(dst.shape[2]);
                let n = u64::from(weight.shape[0]) / g;
                let k = u64::from(weight.shape[1]) * u64::from(weight.shape[2]) * u64::from(weight.shape[3]);
                // The input's type sets the rate (int8 weights run at int8's rate with
                // int8 inputs, at half of it with int16 ones).
                self.hmx_cycles(input.dtype, m, n, k, g)
            }
            Op::Binary { kind, dst, .. } => {
                let per = if *kind == aicsim_abi::isa::BinaryKind::Div { self.hvx_divide_cycles } else { 1 };
                issue + self.vectors(dst.packed_bytes()) * per
            }
            Op::Unary { kind, dst, .. } => {
                let per = match kind {
                    UnaryKind::Relu | UnaryKind::Clip { .. } | UnaryKind::Copy | UnaryKind::Affine { .. } => 1,
                    UnaryKind::Sqrt | UnaryKind::Reciprocal => self.hvx_divide_cycles,
                    _ => self.hvx_transcendental_cycles,
                };
                issue + self.vectors(dst.packed_bytes()) * per
            }
            Op::Convert { dst, src, .. } => issue + self.vectors(dst.packed_bytes().max(src.packed_bytes())),
            Op::Pool { dst, window, .. } => {
                issue + self.vectors(dst.packed_bytes()) * u64::from(window.kernel[0] * window.kernel[1])
            }
            Op::GlobalAvgPool { src, .. } | Op::Reduce { src, .. } => issue + self.vectors(src.packed_bytes()),
            Op::Softmax { src, .. } => issue + self.vectors(src.packed_bytes()) * (3 + self.hvx_transcendental_cycles),
            Op::LayerNorm { src, .. } => issue + self.vectors(src.packed_bytes()) * (4 + self.hvx_divide_cycles),
        }
    }
}

/// The engine an op runs on.
pub fn engine(op: &Op) -> Engine {
    match op {
        Op::DmaIn { .. } | Op::DmaOut { .. } | Op::Gather { .. } | Op::Scatter { .. } => Engine::Dma,
        Op::MatMul { .. } | Op::Conv2d { .. } => Engine::Hmx,
        Op::End | Op::Signal { .. } | Op::Wait { .. } | Op::Barrier => Engine::Sync,
        _ => Engine::Hvx,
    }
}

/// The profile class of an op.
pub fn op_class(op: &Op) -> OpClass {
    match op {
        Op::DmaIn { .. } | Op::Gather { .. } => OpClass::CopyToVtcm,
        Op::DmaOut { .. } | Op::Scatter { .. } => OpClass::CopyFromVtcm,
        Op::MatMul { .. } => OpClass::MatMul,
        Op::Conv2d { .. } => OpClass::Convolution,
        Op::Binary { .. } => OpClass::Elementwise,
        Op::Unary { .. } => OpClass::Activation,
        Op::Convert { .. } => OpClass::Convert,
        Op::Pool { .. } | Op::GlobalAvgPool { .. } => OpClass::Pool,
        Op::Softmax { .. } => OpClass::Softmax,
        Op::LayerNorm { .. } => OpClass::LayerNorm,
        Op::Reduce { .. } => OpClass::Reduce,
        Op::End | Op::Signal { .. } | Op::Wait { .. } | Op::Barrier => OpClass::Sync,
    }
}

/// Bytes an op writes (its output).
pub fn output_bytes(op: &Op) -> u64 {
    op.dst().map_or(0, |t| t.packed_bytes())
}

#[cfg(test)]
mod tests {
    use aicsim_abi::isa::{ConvGeometry, DType, Op, Tensor};

    use super::CostModel;

    /// A convolution's HMX time by its input's type: int8 at 8192 MACs per cycle, int16
    /// activations (int8 weights) at half of it, the same as fp16's 4096.
    #[test]
    fn hmx_runs_int16_activations_at_half_the_int8_rate() {
        let cost = CostModel::default();
        let conv = |input: DType, weight: DType, dst: DType| Op::Conv2d {
            dst: Tensor::vtcm(0, dst, &[256, 28, 28]),
            input: Tensor::vtcm(0, input, &[256, 28, 28]),
            weight: Tensor::vtcm(0, weight, &[256, 256, 3, 3]),
            geometry: ConvGeometry { stride: [1, 1], pad: [1, 1], dilation: [1, 1], groups: 1 },
            accumulate: false,
            zero_point: 0,
        };
        let int8 = cost.cycles(&conv(DType::I8, DType::I8, DType::I32));
        let int16 = cost.cycles(&conv(DType::I16, DType::I8, DType::I32));
        let f16 = cost.cycles(&conv(DType::F16, DType::F16, DType::F16));
        let fixed = cost.issue_cycles + cost.hmx_setup_cycles;
        assert!((int16 - fixed).abs_diff(2 * (int8 - fixed)) <= 1, "int16 {int16}, int8 {int8}");
        assert_eq!(int16, f16, "int16 x int8 runs at fp16's rate");
    }
}
