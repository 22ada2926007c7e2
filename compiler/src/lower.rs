//! Lowering: every layer of the [`ir::Graph`] becomes tiles, and every tile a short run
//! of device instructions on one core.
//!
//! - **DDR plan.** Constants first (in the program's dtype; f16 clips with a warning),
//!   then one region per stored value, `replicas` copies back to back so a tensor of
//!   shape `[N, ...]` replicated R times is the tensor `[R * N, ...]`.
//! - **Tiles.** Each layer picks tile sizes so that one tile's buffers (weights, input
//!   rows with their halo, output) fit one buffer set of an eighth of the VTCM (divided
//!   by `-mos`): two sets alternate, so the DMA of tile i + 1 overlaps the compute of
//!   tile i (the device's hazard tracking orders the rest). A layer whose smallest tile
//!   does not fit takes half the VTCM per set. `-ols` asks for at least `cores x ols`
//!   tiles per layer (finer split).
//! - **On-chip pool.** The VTCM the tiles leave is the pool: layer outputs stay there
//!   between layers (ISA `Space::Pool`, no DDR traffic) while all live ones fit
//!   ([`plan_pool`]); the rest spill to DDR.
//! - **Cores.** A layer's tiles are dealt to the cores in contiguous runs (so a core
//!   reuses a weight block across its tiles); every core ends the layer at a barrier.
//!   With `-multicast-weights` every weight block is read from DDR once: a block several
//!   cores use is multicast by its first user (and, when the pool still fits, prefetched
//!   during the previous layer into slots of its own); otherwise the block count is a
//!   multiple of the core count, so no two cores read the same block.
//! - Element-wise chains, transposes and concatenations share one strided "map"
//!   lowering: operand views with broadcast (stride 0) and permuted strides.

use aicsim_abi::container::ConstantBlob;
use aicsim_abi::isa::{
    BinaryKind, ConvGeometry, DType, Op, PoolKind, PoolWindow, Space, Tensor, UnaryKind, SYNC_COUNTERS,
};
use aicsim_device::nsp::CostModel;

use crate::ir::{ChainStep, Const, FusedActivation, Graph, LayerKind, Operand, Quant, ValueId};
use crate::CompileError;

/// How to lower.
#[derive(Clone, Copy, Debug)]
pub struct LowerOptions {
    pub cores: u32,
    pub dtype: DType,
    pub vtcm_bytes: u64,
    pub mos: u32,
    pub ols: u32,
    /// Copies of the graph one inference runs (`-batchsize` over a batch-1 model).
    pub replicas: usize,
    pub multicast_weights: bool,
}

/// What one layer costs, for `-aic-perf-metrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerReport {
    pub name: String,
    pub op_type: String,
    pub macs: u64,
    pub tiles: usize,
    /// Compute cycles summed over cores (HMX and HVX), from the device's cost model.
    pub compute_cycles: u64,
    pub load_bytes: u64,
    pub store_bytes: u64,
    /// Of `load_bytes`, weights and other constants.
    pub constant_bytes: u64,
    /// Moved to or from the on-chip pool (not DDR traffic).
    pub pool_bytes: u64,
    /// Of `pool_bytes`, read from other cores' VTCM over the on-chip network.
    pub peer_bytes: u64,
}

/// The lowered program.
#[derive(Clone, Debug, Default)]
pub struct Lowered {
    pub streams: Vec<Vec<Op>>,
    pub constants: Vec<ConstantBlob>,
    /// The name of each of `constants`.
    pub constant_names: Vec<String>,
    /// Bytes of the constants the program reads (its own and those it shares).
    pub constants_bytes: u64,
    pub ddr_bytes: u64,
    /// Peak VTCM any core uses.
    pub vtcm_bytes: u64,
    /// DDR offset of every value's storage (`u64::MAX` if it has none).
    pub value_offsets: Vec<u64>,
    pub layers: Vec<LayerReport>,
    /// Per core, the index of each layer's first instruction in the core's stream (in
    /// layer order; a layer with nothing on a core starts where the next one does).
    pub layer_starts: Vec<Vec<u32>>,
    pub warnings: Vec<String>,
    /// Which activations stay on chip.
    pub pool: PoolPlan,
}

const ALIGN: u64 = 256;
const VTCM_ALIGN: u64 = 128;

fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// A strided view of a DDR tensor in elements.
#[derive(Clone, Debug, PartialEq)]
struct View {
    offset: u64,
    strides: Vec<u64>,
}

mod conv;

/// Bump allocator over one core's VTCM for one layer.
struct Vtcm {
    next: u64,
    capacity: u64,
}

impl Vtcm {
    fn alloc(&mut self, bytes: u64) -> u64 {
        let at = self.next;
        self.next = align(at + bytes.max(1), VTCM_ALIGN);
        at
    }
}

/// Splits `n` items into `parts` contiguous runs of near-equal length.
fn runs(n: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    (0..parts).map(|p| (n * p / parts)..(n * (p + 1) / parts)).collect()
}

/// The number of pieces to cut `extent` into, at least `n` and at most `4 n`, so that
/// `others` times the pieces it really gives is a multiple of `cores` (every core then
/// gets the same number of tiles); `n` when no such count exists.
fn balanced(n: u64, extent: u64, others: u64, cores: u64) -> u64 {
    let pieces = |k: u64| extent.div_ceil(extent.div_ceil(k));
    (n..=extent.min(4 * n)).find(|&k| (others * pieces(k)).is_multiple_of(cores)).map_or(n, pieces)
}

/// `v` as the ISA's 32-bit dimension or stride. Every tensor's elements fit 32 bits
/// (checked before lowering starts, [`check_sizes`]), so its dimensions and strides do.
fn isa_u32(v: u64) -> u32 {
    u32::try_from(v).expect("tensor sizes are checked to fit 32 bits before lowering")
}

fn dims32(shape: &[u64]) -> Vec<u32> {
    shape.iter().map(|&d| isa_u32(d)).collect()
}

/// Contiguous element strides of `shape`.
pub(crate) fn contiguous(shape: &[u64]) -> Vec<u64> {
    let mut s = vec![1u64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

struct Lowerer<'g> {
    g: &'g Graph,
    o: LowerOptions,
    eb: u64,
    cost: CostModel,
    streams: Vec<Vec<Op>>,
    const_offsets: Vec<u64>,
    /// Constants occupy DDR `[constants_start, constants_bytes)`, and those shared with
    /// an earlier entry `shared_constants`.
    constants_start: u64,
    shared_constants: (u64, u64),
    constants_bytes: u64,
    value_offsets: Vec<u64>,
    /// Most VTCM any layer used on a core.
    vtcm_peak: u64,
    /// One per lowered layer.
    reports: Vec<LayerReport>,
    layer: String,
    /// DDR offsets of the values kept in the on-chip pool.
    pool_bases: std::collections::HashSet<u64>,
    /// Where the last lowered layer starts in each core's stream.
    prev_starts: Vec<usize>,
    /// Convolutions so far that loaded weights into the slots (their region alternates).
    slot_layers: usize,
    /// Whether weight blocks (shared ones, and each core's first own one) have slots of
    /// their own and are prefetched.
    prefetch: bool,
    /// Whether the last layer's tiles used VTCM above the tile area.
    prev_big: bool,
    /// DDR bases of the values and constants not stored in the program's dtype: int8
    /// values, and an int8 convolution's weights, biases and multipliers.
    dtypes: std::collections::HashMap<u64, DType>,
    /// DDR bases of the int8 values, with their quantisation.
    quants: std::collections::HashMap<u64, Quant>,
}

/// The dtype `v` is stored in.
fn value_dtype(g: &Graph, o: &LowerOptions, v: ValueId) -> DType {
    match &g.values[v] {
        crate::ir::Value { quant: Some(q), .. } => q.dtype(),
        v if v.int32 => DType::I32,
        _ => o.dtype,
    }
}

/// The dtype each constant is stored in: an int8 convolution's weights in int8, its
/// biases in int32 and its multipliers in f32; the rest in the program's dtype.
fn const_dtypes(g: &Graph, o: &LowerOptions) -> Vec<DType> {
    let mut dtypes = vec![o.dtype; g.consts.len()];
    for l in &g.layers {
        if let LayerKind::Conv { weight, bias, int8: Some(m), .. }
        | LayerKind::Dense { weight, bias, int8: Some(m), .. } = &l.kind
        {
            dtypes[*weight] = DType::I8;
            dtypes[*m] = DType::F32;
            if let Some(b) = bias {
                dtypes[*b] = DType::I32;
            }
        }
    }
    dtypes
}

impl<'g> Lowerer<'g> {
    fn err(&self, reason: impl Into<String>) -> CompileError {
        CompileError::Lowering { layer: self.layer.clone(), reason: reason.into() }
    }

    /// Bytes one of the two buffer sets of a tile may use.
    fn budget(&self) -> u64 {
        tile_budget(&self.o)
    }

    /// The largest a buffer set may be: half the VTCM (divided by `-mos`).
    fn big_budget(&self) -> u64 {
        self.o.vtcm_bytes / 2 / u64::from(self.o.mos.max(1))
    }

    fn want_tiles(&self) -> usize {
        (self.o.cores * self.o.ols.max(1)) as usize
    }

    /// A view of the value or constant stored at `base`: in DDR, or in the on-chip pool
    /// if the value is resident there.
    fn ddr(&self, offset_elems: u64, base: u64, shape: &[u64], strides: &[u64]) -> Tensor {
        let shape32 = dims32(shape);
        let strides32: Vec<u32> = strides.iter().map(|&s| isa_u32(s)).collect();
        let space = if self.pool_bases.contains(&base) { Space::Pool } else { Space::Ddr };
        let dtype = self.dtype_at(base);
        Tensor::contiguous(space, base + offset_elems * dtype.bytes(), dtype, &shape32).with_strides(&strides32)
    }

    /// The dtype of the value or constant stored at `base`.
    fn dtype_at(&self, base: u64) -> DType {
        self.dtypes.get(&base).copied().unwrap_or(self.o.dtype)
    }

    fn vtcm(&self, at: u64, shape: &[u64]) -> Tensor {
        Tensor::vtcm(at, self.o.dtype, &dims32(shape))
    }

    fn vtcm_as(&self, at: u64, dtype: DType, shape: &[u64]) -> Tensor {
        Tensor::vtcm(at, dtype, &dims32(shape))
    }

    fn value_base(&self, v: ValueId) -> u64 {
        self.value_offsets[self.g.values[v].storage]
    }

    /// Elements of one replica of `v`.
    fn replica_elems(&self, v: ValueId) -> u64 {
        self.g.values[v].elements() as u64
    }

    /// `vtcm_used`: the end of the layer's tile buffers on a core.
    fn end_layer(&mut self, tiles: usize, first_op: &[usize], vtcm_used: u64) {
        self.prev_starts = first_op.to_vec();
        self.prev_big = vtcm_used > shared_slot(&self.o, 0);
        if self.o.cores > 1 {
            for s in &mut self.streams {
                s.push(Op::Barrier);
            }
        }
        self.vtcm_peak = self.vtcm_peak.max(vtcm_used);
        let mut r = LayerReport { tiles, ..Default::default() };
        for (c, s) in self.streams.iter().enumerate() {
            for op in &s[first_op[c]..] {
                match op {
                    Op::DmaIn { src, .. } | Op::DmaOut { dst: src, .. } if src.space == Space::Pool => {
                        r.pool_bytes += src.packed_bytes();
                    }
                    Op::DmaIn { src, .. } => {
                        r.load_bytes += src.packed_bytes();
                        let shared = self.shared_constants.0..self.shared_constants.1;
                        if (self.constants_start..self.constants_bytes).contains(&src.offset)
                            || shared.contains(&src.offset)
                        {
                            r.constant_bytes += src.packed_bytes();
                        }
                    }
                    Op::DmaOut { dst, .. } => r.store_bytes += dst.packed_bytes(),
                    Op::Scatter { src, .. } => {
                        r.store_bytes += src.packed_bytes();
                        r.compute_cycles += self.cost.cycles(op);
                    }
                    Op::Barrier | Op::Signal { .. } | Op::Wait { .. } | Op::End => {}
                    other => r.compute_cycles += self.cost.cycles(other),
                }
            }
        }
        self.reports.push(r);
    }

    fn starts(&self) -> Vec<usize> {
        self.streams.iter().map(Vec::len).collect()
    }

    // ---- dense (matrix x constant) -----------------------------------------------

    fn dense(
        &mut self,
        x: ValueId,
        y: ValueId,
        weight: usize,
        bias: Option<usize>,
        act: FusedActivation,
        int8: Option<usize>,
    ) -> Result<(), CompileError> {
        let eb = self.eb;
        let ws = &self.g.consts[weight].shape;
        let (k, n) = (ws[0] as u64, ws[1] as u64);
        let m = self.o.replicas as u64 * self.replica_elems(x) / k;
        let acc_f32 = self.o.dtype == DType::F16;
        // Bytes per element of the input, the weights, the sums and the output, and per
        // column of the per-column constants (an int8 product's int32 bias and f32
        // multiplier side by side).
        let (xb_, wb_, ab, ob, cb) = match int8 {
            Some(_) => (value_dtype(self.g, &self.o, x).bytes(), 1, 4, value_dtype(self.g, &self.o, y).bytes(), 8),
            None => (eb, eb, if acc_f32 { 4 } else { eb }, eb, eb),
        };
        let bytes = |m_t: u64, k_t: u64, n_t: u64| {
            align(m_t * k_t * xb_, VTCM_ALIGN)
                + align(k_t * n_t * wb_, VTCM_ALIGN)
                + align(m_t * n_t * ob, VTCM_ALIGN)
                + align(m_t * n_t * ab, VTCM_ALIGN)
                + align(n_t * cb, VTCM_ALIGN)
        };
        let budget = self.budget();
        let (mut m_t, mut k_t, mut n_t) = (m.min(512), k, n);
        while bytes(m_t, k_t, n_t) > budget {
            if n_t > 64 {
                n_t = n_t.div_ceil(2);
            } else if k_t > 64 {
                k_t = k_t.div_ceil(2);
            } else if m_t > 1 {
                m_t = m_t.div_ceil(2);
            } else {
                return Err(self.err("a 1 x 64 x 64 matrix tile does not fit the VTCM budget"));
            }
        }
        while (m.div_ceil(m_t) * n.div_ceil(n_t)) < self.want_tiles() as u64 && n_t > 16 {
            n_t = n_t.div_ceil(2);
        }
        let n_n = n.div_ceil(n_t);
        let n_t = n.div_ceil(n_n);
        let n_k = k.div_ceil(k_t);
        let k_t = k.div_ceil(n_k);
        let n_m = m.div_ceil(m_t);
        let m_t = m.div_ceil(n_m);

        let mut v = Vtcm { next: 0, capacity: self.o.vtcm_bytes };
        let abuf = [v.alloc(m_t * k_t * xb_), v.alloc(m_t * k_t * xb_)];
        let bbuf = [v.alloc(k_t * n_t * wb_), v.alloc(k_t * n_t * wb_)];
        let accbuf = [v.alloc(m_t * n_t * ab), v.alloc(m_t * n_t * ab)];
        let obuf = [v.alloc(m_t * n_t * ob), v.alloc(m_t * n_t * ob)];
        let biasbuf = [v.alloc(n_t * cb), v.alloc(n_t * cb)];
        let (xb, yb, wb) = (self.value_base(x), self.value_base(y), self.const_offsets[weight]);
        let bb = bias.map(|b| self.const_offsets[b]);
        let mb_ = int8.map(|m| self.const_offsets[m]);
        let tiles: Vec<(u64, u64)> = (0..n_n).flat_map(|nb| (0..n_m).map(move |mb| (nb, mb))).collect();
        let starts = self.starts();
        let acc_dtype = match int8 {
            Some(_) => DType::I32,
            None if acc_f32 => DType::F32,
            None => self.o.dtype,
        };
        let zero_point = self.quants.get(&xb).map_or(0, |q| q.zero_point);
        let mut step = 0usize;
        for (core, run) in runs(tiles.len(), self.o.cores as usize).into_iter().enumerate() {
            let mut ops = std::mem::take(&mut self.streams[core]);
            for (i, &(nb, mb)) in tiles[run].iter().enumerate() {
                let slot = i % 2;
                let (n0, m0) = (nb * n_t, mb * m_t);
                let (n_c, m_c) = (n_t.min(n - n0), m_t.min(m - m0));
                let acc = Tensor::vtcm(accbuf[slot], acc_dtype, &dims32(&[m_c, n_c]));
                for kb in 0..n_k {
                    let k0 = kb * k_t;
                    let k_c = k_t.min(k - k0);
                    let s = step % 2;
                    step += 1;
                    let src = self.ddr(m0 * k + k0, xb, &[m_c, k_c], &[k, 1]);
                    let a = self.vtcm_as(abuf[s], src.dtype, &[m_c, k_c]);
                    ops.push(Op::DmaIn { dst: a, src, multicast: 0, peer_bytes: 0 });
                    let src = self.ddr(k0 * n + n0, wb, &[k_c, n_c], &[n, 1]);
                    let b = self.vtcm_as(bbuf[s], src.dtype, &[k_c, n_c]);
                    ops.push(Op::DmaIn { dst: b, src, multicast: 0, peer_bytes: 0 });
                    ops.push(Op::MatMul { dst: acc, a, b, accumulate: kb > 0, zero_point });
                }
                if let Some(mb) = mb_ {
                    // int8: the int32 bias and ReLU on the sums, then one requantising
                    // pass with each column's multiplier (as an int8 convolution does).
                    let per_column = |at: u64, dtype| self.vtcm_as(at, dtype, &[m_c, n_c]).with_strides(&[0, 1]);
                    let load = |ops: &mut Vec<Op>, base: u64, at: u64| {
                        let src = self.ddr(n0, base, &[n_c], &[1]);
                        ops.push(Op::DmaIn {
                            dst: self.vtcm_as(at, src.dtype, &[n_c]),
                            src,
                            multicast: 0,
                            peer_bytes: 0,
                        });
                    };
                    if let Some(bb) = bb {
                        load(&mut ops, bb, biasbuf[slot]);
                        let b = per_column(biasbuf[slot], DType::I32);
                        ops.push(Op::Binary { kind: BinaryKind::Add, dst: acc, a: acc, b });
                    }
                    let out_quant = self.quants.get(&yb).copied();
                    if let FusedActivation::Unary(kind) = act {
                        if !(kind == UnaryKind::Relu && out_quant.is_some_and(|q| q.zero_point == q.lowest())) {
                            ops.push(Op::Unary { kind, dst: acc, src: acc });
                        }
                    }
                    load(&mut ops, mb, biasbuf[slot] + n_t * 4);
                    let scales = per_column(biasbuf[slot] + n_t * 4, DType::F32);
                    let (scale, zero_point) = out_quant.map_or((1.0, 0), |q| (1.0 / q.scale, q.zero_point));
                    let out = self.vtcm_as(obuf[slot], self.dtype_at(yb), &[m_c, n_c]);
                    ops.push(Op::Convert { dst: out, src: acc, scale, zero_point, scales: Some(scales) });
                    ops.push(Op::DmaOut { dst: self.ddr(m0 * n + n0, yb, &[m_c, n_c], &[n, 1]), src: out });
                    continue;
                }
                let out = self.vtcm(obuf[slot], &[m_c, n_c]);
                if acc_f32 {
                    ops.push(Op::Convert { dst: out, src: acc, scale: 1.0, zero_point: 0, scales: None });
                } else {
                    ops.push(Op::Unary { kind: UnaryKind::Copy, dst: out, src: acc });
                }
                if let Some(bb) = bb {
                    ops.push(Op::DmaIn {
                        dst: self.vtcm(biasbuf[slot], &[n_c]),
                        src: self.ddr(n0, bb, &[n_c], &[1]),
                        multicast: 0,
                        peer_bytes: 0,
                    });
                    let bview = self.vtcm(biasbuf[slot], &[m_c, n_c]).with_strides(&[0, 1]);
                    ops.push(Op::Binary { kind: BinaryKind::Add, dst: out, a: out, b: bview });
                }
                if let FusedActivation::Unary(kind) = act {
                    ops.push(Op::Unary { kind, dst: out, src: out });
                }
                ops.push(Op::DmaOut { dst: self.ddr(m0 * n + n0, yb, &[m_c, n_c], &[n, 1]), src: out });
            }
            self.streams[core] = ops;
        }
        self.end_layer(tiles.len(), &starts, v.next);
        Ok(())
    }

    // ---- gather: rows of a constant table by runtime indices ----------------------

    /// Tiles of index rows: each tile's int32 indices in, the rows gathered from the
    /// table by DMA (the device checks each index against the table), the rows out.
    fn gather(&mut self, table: usize, indices: ValueId, y: ValueId) -> Result<(), CompileError> {
        let eb = self.eb;
        let ts = &self.g.consts[table].shape;
        let (v_rows, h) = (ts[0] as u64, ts[1] as u64);
        let n = self.o.replicas as u64 * self.replica_elems(indices);
        let row_bytes = h * eb + 4;
        let mut rows = (self.budget() / row_bytes).clamp(1, n);
        while n.div_ceil(rows) < self.want_tiles() as u64 && rows > 1 {
            rows = rows.div_ceil(2);
        }
        if h * eb > self.budget() {
            return Err(self.err(format!("a table row of {h} elements does not fit the VTCM budget")));
        }
        let n_t = n.div_ceil(rows);
        let rows = n.div_ceil(n_t);
        let mut v = Vtcm { next: 0, capacity: self.o.vtcm_bytes };
        let ibuf = [v.alloc(rows * 4), v.alloc(rows * 4)];
        let obuf = [v.alloc(rows * h * eb), v.alloc(rows * h * eb)];
        let (ib, yb, tb) = (self.value_base(indices), self.value_base(y), self.const_offsets[table]);
        let starts = self.starts();
        for (core, run) in runs(n_t as usize, self.o.cores as usize).into_iter().enumerate() {
            let mut ops = std::mem::take(&mut self.streams[core]);
            for (i, t) in run.enumerate() {
                let (slot, r0) = (i % 2, t as u64 * rows);
                let r_n = rows.min(n - r0);
                let src = self.ddr(r0, ib, &[r_n], &[1]);
                let idx = self.vtcm_as(ibuf[slot], DType::I32, &[r_n]);
                ops.push(Op::DmaIn { dst: idx, src, multicast: 0, peer_bytes: 0 });
                let out = self.vtcm(obuf[slot], &[r_n, h]);
                ops.push(Op::Gather { dst: out, table: self.ddr(0, tb, &[v_rows, h], &[h, 1]), indices: idx });
                ops.push(Op::DmaOut { dst: self.ddr(r0 * h, yb, &[r_n, h], &[h, 1]), src: out });
            }
            self.streams[core] = ops;
        }
        self.end_layer(n_t as usize, &starts, v.next);
        Ok(())
    }

    // ---- batched matmul of two runtime tensors --------------------------------------

    fn matmul(&mut self, a: ValueId, b: ValueId, b_transposed: bool, y: ValueId) -> Result<(), CompileError> {
        let eb = self.eb;
        let sa = &self.g.values[a].shape;
        let sb = &self.g.values[b].shape;
        let n = if b_transposed { sb[sb.len() - 2] } else { sb[sb.len() - 1] } as u64;
        let (m, k) = (sa[sa.len() - 2] as u64, sa[sa.len() - 1] as u64);
        // A transposed `b` ([n, k] stored) is read column by column into [k, n].
        let b_strides = if b_transposed { [1, k] } else { [n, 1] };
        let batch = self.o.replicas as u64 * sa[..sa.len() - 2].iter().product::<usize>() as u64;
        let need = align(m * k * eb, VTCM_ALIGN) + align(k * n * eb, VTCM_ALIGN) + align(m * n * eb, VTCM_ALIGN);
        if need > self.big_budget() {
            return Err(
                self.err(format!("a [{m}, {k}] x [{k}, {n}] product needs {need} bytes; tiling it is not supported"))
            );
        }
        let mut v = Vtcm { next: 0, capacity: self.o.vtcm_bytes };
        let abuf = [v.alloc(m * k * eb), v.alloc(m * k * eb)];
        let bbuf = [v.alloc(k * n * eb), v.alloc(k * n * eb)];
        let obuf = [v.alloc(m * n * eb), v.alloc(m * n * eb)];
        let (ab, bb, yb) = (self.value_base(a), self.value_base(b), self.value_base(y));
        let starts = self.starts();
        for (core, run) in runs(batch as usize, self.o.cores as usize).into_iter().enumerate() {
            let mut ops = std::mem::take(&mut self.streams[core]);
            for (i, t) in run.enumerate() {
                let (slot, t) = (i % 2, t as u64);
                ops.push(Op::DmaIn {
                    dst: self.vtcm(abuf[slot], &[m, k]),
                    src: self.ddr(t * m * k, ab, &[m, k], &[k, 1]),
                    multicast: 0,
                    peer_bytes: 0,
                });
                ops.push(Op::DmaIn {
                    dst: self.vtcm(bbuf[slot], &[k, n]),
                    src: self.ddr(t * k * n, bb, &[k, n], &b_strides),
                    multicast: 0,
                    peer_bytes: 0,
                });
                let out = self.vtcm(obuf[slot], &[m, n]);
                ops.push(Op::MatMul {
                    dst: out,
                    a: self.vtcm(abuf[slot], &[m, k]),
                    b: self.vtcm(bbuf[slot], &[k, n]),
                    accumulate: false,
                    zero_point: 0,
                });
                ops.push(Op::DmaOut { dst: self.ddr(t * m * n, yb, &[m, n], &[n, 1]), src: out });
            }
            self.streams[core] = ops;
        }
        self.end_layer(batch as usize, &starts, v.next);
        Ok(())
    }

    // ---- strided maps: element-wise chains, transposes, concatenation ---------------

    /// `out[i] = steps(first[i], operands[i]...)` over `shape`, every tensor a strided
    /// view (stride 0 broadcasts).
    fn map(
        &mut self,
        shape: &[u64],
        out: (u64, View),
        first: (u64, View),
        steps: &[(Option<(u64, View)>, ChainStep)],
        report: bool,
    ) -> Result<usize, CompileError> {
        let eb = self.eb;
        // Drop unit dimensions, then merge neighbours every view walks contiguously.
        let mut views: Vec<&(u64, View)> = vec![&out, &first];
        views.extend(steps.iter().filter_map(|(o, _)| o.as_ref()));
        // Each view's first element, in elements from its base.
        let offsets: Vec<u64> = views.iter().map(|(_, v)| v.offset).collect();
        let keep: Vec<usize> = (0..shape.len()).filter(|&d| shape[d] != 1).collect();
        let mut dims: Vec<u64> = keep.iter().map(|&d| shape[d]).collect();
        let mut strides: Vec<Vec<u64>> =
            views.iter().map(|(_, v)| keep.iter().map(|&d| v.strides[d]).collect()).collect();
        let mut d = 0;
        while d + 1 < dims.len() {
            if strides.iter().all(|s| s[d] == s[d + 1] * dims[d + 1]) {
                dims[d] *= dims[d + 1];
                dims.remove(d + 1);
                for s in &mut strides {
                    s[d] = s[d + 1];
                    s.remove(d + 1);
                }
            } else {
                d += 1;
            }
        }
        if dims.is_empty() {
            dims.push(1);
            strides.iter_mut().for_each(|s| s.push(1));
        }
        if dims.len() > 4 {
            return Err(self.err(format!("a {}-dimensional strided pattern is beyond the 4-D DMA", dims.len())));
        }
        let n_buf = 1 + steps.iter().filter(|(o, _)| o.is_some()).count() as u64 + 1;
        // int8 operands are dequantised on arrival and an int8 output quantised before
        // it leaves, each through an int8 staging buffer.
        // (int32 operands likewise, converted.)
        let quant = |base: u64| self.quants.get(&base).copied();
        let program = self.o.dtype;
        let staged_bytes = |base: u64| match self.dtype_at(base) {
            d if d == program => 0,
            d => d.bytes(),
        };
        let in_stage_bytes = core::iter::once(first.0)
            .chain(steps.iter().filter_map(|(o, _)| o.as_ref().map(|o| o.0)))
            .map(staged_bytes)
            .max()
            .unwrap_or(0);
        let q_in = in_stage_bytes > 0;
        let q_out = quant(out.0);
        let staging = in_stage_bytes + q_out.map_or(0, |q| q.dtype().bytes());
        let max_elems = (self.budget() / (n_buf * eb + staging)).max(1);
        // Tile: split axis `ax`, keep every axis after it whole.
        let mut ax = 0;
        while ax + 1 < dims.len() && dims[ax + 1..].iter().product::<u64>() > max_elems {
            ax += 1;
        }
        let inner: u64 = dims[ax + 1..].iter().product();
        if inner > max_elems {
            return Err(self.err(format!("a row of {inner} elements does not fit the VTCM budget")));
        }
        let outer: u64 = dims[..ax].iter().product();
        let mut chunk = (max_elems / inner).clamp(1, dims[ax]);
        while outer * dims[ax].div_ceil(chunk) < self.want_tiles() as u64 && chunk > 1 {
            chunk = chunk.div_ceil(2);
        }
        let n_chunks = dims[ax].div_ceil(chunk);
        let chunk = dims[ax].div_ceil(n_chunks);
        let tile_elems = chunk * inner;
        let mut v = Vtcm { next: 0, capacity: self.o.vtcm_bytes };
        let bufs: Vec<[u64; 2]> = (0..n_buf).map(|_| [v.alloc(tile_elems * eb), v.alloc(tile_elems * eb)]).collect();
        let mut stage = |eb: u64| [v.alloc(tile_elems * eb), v.alloc(tile_elems * eb)];
        let (stage_in, stage_out) = (q_in.then(|| stage(in_stage_bytes)), q_out.map(|q| stage(q.dtype().bytes())));
        let tiles: Vec<(u64, u64)> = (0..outer).flat_map(|o| (0..n_chunks).map(move |c| (o, c))).collect();
        let starts = self.starts();
        let rank = dims.len();
        for (core, run) in runs(tiles.len(), self.o.cores as usize).into_iter().enumerate() {
            let mut ops = std::mem::take(&mut self.streams[core]);
            for (i, &(o, cidx)) in tiles[run].iter().enumerate() {
                let slot = i % 2;
                // Index of the tile's first element along each axis.
                let mut start = vec![0u64; rank];
                let mut rem = o;
                for d in (0..ax).rev() {
                    start[d] = rem % dims[d];
                    rem /= dims[d];
                }
                start[ax] = cidx * chunk;
                let mut tshape: Vec<u64> = vec![1; rank];
                tshape[ax] = chunk.min(dims[ax] - start[ax]);
                tshape[ax + 1..].copy_from_slice(&dims[ax + 1..]);
                let tshape: Vec<u64> = tshape[ax..].to_vec();
                let origin = |which: usize, s: &[u64]| -> u64 {
                    offsets[which] + start.iter().zip(s).map(|(a, b)| a * b).sum::<u64>()
                };
                let acc = self.vtcm(bufs[0][slot], &tshape);
                // DMA into `dst`; an int8 source through the staging buffer, dequantised.
                let fetch = |ops: &mut Vec<Op>, src: Tensor, dst: Tensor, base: u64| {
                    if src.dtype == program {
                        ops.push(Op::DmaIn { dst, src, multicast: 0, peer_bytes: 0 });
                        return;
                    }
                    let at = stage_in.expect("int8 and int32 operands have staging")[slot];
                    let staged = Tensor::vtcm(at, src.dtype, src.dims());
                    ops.push(Op::DmaIn { dst: staged, src, multicast: 0, peer_bytes: 0 });
                    let (scale, zero_point) = quant(base).map_or((1.0, 0), |q| (q.scale, q.zero_point));
                    ops.push(Op::Convert { dst, src: staged, scale, zero_point, scales: None });
                };
                // An operand's tile: DMA its distinct elements, view them broadcast.
                let load = |ops: &mut Vec<Op>, me: &Self, which: usize, base: u64, buf: u64| -> Tensor {
                    let s = &strides[which][ax..];
                    let packed: Vec<u64> = tshape.iter().zip(s).map(|(&d, &st)| if st == 0 { 1 } else { d }).collect();
                    let src = me.ddr(origin(which, &strides[which]), base, &packed, s);
                    fetch(ops, src, me.vtcm(buf, &packed), base);
                    let c = contiguous(&packed);
                    let vs: Vec<u32> = c.iter().zip(s).map(|(&c, &st)| if st == 0 { 0 } else { c as u32 }).collect();
                    me.vtcm(buf, &tshape).with_strides(&vs)
                };
                if strides[1][ax..].iter().all(|&s| s != 0) {
                    let src = self.ddr(origin(1, &strides[1]), first.0, &tshape, &strides[1][ax..]);
                    fetch(&mut ops, src, acc, first.0);
                } else {
                    let view = load(&mut ops, self, 1, first.0, bufs[1][slot]);
                    ops.push(Op::Unary { kind: UnaryKind::Copy, dst: acc, src: view });
                }
                let mut which = 2;
                for (operand, step) in steps {
                    match *step {
                        ChainStep::Unary(kind) => ops.push(Op::Unary { kind, dst: acc, src: acc }),
                        ChainStep::Binary { kind, swapped, .. } => {
                            let base = operand.as_ref().expect("binary step has an operand").0;
                            let view = load(&mut ops, self, which, base, bufs[which][slot]);
                            which += 1;
                            let (a, b) = if swapped { (view, acc) } else { (acc, view) };
                            ops.push(Op::Binary { kind, dst: acc, a, b });
                        }
                    }
                }
                let dst = self.ddr(origin(0, &strides[0]), out.0, &tshape, &strides[0][ax..]);
                match (q_out, stage_out) {
                    (Some(q), Some(stage)) => {
                        let staged = self.vtcm_as(stage[slot], q.dtype(), &tshape);
                        let (scale, zero_point) = (q.scale, q.zero_point);
                        ops.push(Op::Convert { dst: staged, src: acc, scale, zero_point, scales: None });
                        ops.push(Op::DmaOut { dst, src: staged });
                    }
                    _ => ops.push(Op::DmaOut { dst, src: acc }),
                }
            }
            self.streams[core] = ops;
        }
        if report {
            self.end_layer(tiles.len(), &starts, v.next);
        } else {
            self.vtcm_peak = self.vtcm_peak.max(v.next);
        }
        Ok(tiles.len())
    }

    /// A runtime value or constant as a view over `out_shape` (with the replica axis
    /// first), broadcasting numpy-style.
    fn operand_view(&self, o: Operand, out_shape: &[usize]) -> (u64, View) {
        let (shape, base, replica) = match o {
            Operand::Value(v) => (&self.g.values[v].shape, self.value_base(v), self.replica_elems(v)),
            Operand::Const(c) => (&self.g.consts[c].shape, self.const_offsets[c], 0),
        };
        let rank = out_shape.len();
        let own: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let cs = contiguous(&own);
        let mut strides = vec![0u64; rank + 1];
        strides[0] = replica;
        for d in 0..shape.len() {
            let od = rank - shape.len() + d;
            strides[od + 1] = if shape[d] == 1 && out_shape[od] != 1 { 0 } else { cs[d] };
        }
        (base, View { offset: 0, strides })
    }

    fn elementwise(&mut self, y: ValueId, first: Operand, steps: &[ChainStep]) -> Result<(), CompileError> {
        let out_shape = self.g.values[y].shape.clone();
        let mut shape = vec![self.o.replicas as u64];
        shape.extend(out_shape.iter().map(|&d| d as u64));
        let out = (self.value_base(y), View { offset: 0, strides: contiguous(&shape) });
        let first = self.operand_view(first, &out_shape);
        let steps: Vec<(Option<(u64, View)>, ChainStep)> = steps
            .iter()
            .map(|s| match *s {
                ChainStep::Binary { operand, .. } => (Some(self.operand_view(operand, &out_shape)), *s),
                ChainStep::Unary(_) => (None, *s),
            })
            .collect();
        self.map(&shape, out, first, &steps, true)?;
        Ok(())
    }

    fn transpose(&mut self, x: ValueId, y: ValueId, perm: &[usize]) -> Result<(), CompileError> {
        let xs: Vec<u64> = self.g.values[x].shape.iter().map(|&d| d as u64).collect();
        let xstr = contiguous(&xs);
        let mut shape = vec![self.o.replicas as u64];
        shape.extend(perm.iter().map(|&p| xs[p]));
        let mut src = vec![self.replica_elems(x)];
        src.extend(perm.iter().map(|&p| xstr[p]));
        let out = (self.value_base(y), View { offset: 0, strides: contiguous(&shape) });
        self.map(&shape, out, (self.value_base(x), View { offset: 0, strides: src }), &[], true)?;
        Ok(())
    }

    fn concat(&mut self, inputs: &[ValueId], y: ValueId, axis: usize) -> Result<(), CompileError> {
        let ys: Vec<u64> = self.g.values[y].shape.iter().map(|&d| d as u64).collect();
        let ystr = contiguous(&ys);
        let starts = self.starts();
        let mut tiles = 0;
        let mut at = 0u64;
        for &x in inputs {
            let xs: Vec<u64> = self.g.values[x].shape.iter().map(|&d| d as u64).collect();
            let mut shape = vec![self.o.replicas as u64];
            shape.extend(&xs);
            let mut ostr = vec![self.replica_elems(y)];
            ostr.extend(&ystr);
            let out = (self.value_base(y) + at * ystr[axis] * self.eb, View { offset: 0, strides: ostr });
            let mut istr = vec![self.replica_elems(x)];
            istr.extend(contiguous(&xs));
            tiles += self.map(&shape, out, (self.value_base(x), View { offset: 0, strides: istr }), &[], false)?;
            at += xs[axis];
        }
        self.end_layer(tiles, &starts, 0);
        Ok(())
    }

    /// Fills the output with the pad value, then copies the input into its interior.
    fn pad(&mut self, x: ValueId, y: ValueId, begin: &[usize], fill: usize) -> Result<(), CompileError> {
        let xs: Vec<u64> = self.g.values[x].shape.iter().map(|&d| d as u64).collect();
        let ys: Vec<u64> = self.g.values[y].shape.iter().map(|&d| d as u64).collect();
        let ystr = contiguous(&ys);
        let starts = self.starts();
        let mut shape = vec![self.o.replicas as u64];
        shape.extend(&ys);
        let out = (self.value_base(y), View { offset: 0, strides: contiguous(&shape) });
        let value = (self.const_offsets[fill], View { offset: 0, strides: vec![0; shape.len()] });
        let mut tiles = self.map(&shape, out, value, &[], false)?;
        if self.o.cores > 1 {
            // Every core's fill lands before any core writes the interior.
            self.streams.iter_mut().for_each(|s| s.push(Op::Barrier));
        }
        let mut inner = vec![self.o.replicas as u64];
        inner.extend(&xs);
        let at: u64 = begin.iter().zip(&ystr).map(|(&b, &s)| b as u64 * s).sum();
        let mut ostr = vec![self.replica_elems(y)];
        ostr.extend(&ystr);
        let mut istr = vec![self.replica_elems(x)];
        istr.extend(contiguous(&xs));
        let out = (self.value_base(y) + at * self.eb, View { offset: 0, strides: ostr });
        tiles += self.map(&inner, out, (self.value_base(x), View { offset: 0, strides: istr }), &[], false)?;
        self.end_layer(tiles, &starts, 0);
        Ok(())
    }

    /// A box of `x`: a strided copy of it starting `begin` elements into each axis.
    fn slice(&mut self, x: ValueId, y: ValueId, begin: &[usize]) -> Result<(), CompileError> {
        let xs: Vec<u64> = self.g.values[x].shape.iter().map(|&d| d as u64).collect();
        let ys: Vec<u64> = self.g.values[y].shape.iter().map(|&d| d as u64).collect();
        let xstr = contiguous(&xs);
        let at: u64 = begin.iter().zip(&xstr).map(|(&b, &s)| b as u64 * s).sum();
        let mut shape = vec![self.o.replicas as u64];
        shape.extend(&ys);
        let out = (self.value_base(y), View { offset: 0, strides: contiguous(&shape) });
        let mut istr = vec![self.replica_elems(x)];
        istr.extend(xstr);
        let input = (self.value_base(x), View { offset: at, strides: istr });
        let starts = self.starts();
        let tiles = self.map(&shape, out, input, &[], false)?;
        self.end_layer(tiles, &starts, 0);
        Ok(())
    }

    // ---- scatter: KV-cache rows written in place at runtime positions --------------

    /// Per sample, tiles of heads: the sample's int32 positions in, the heads' new rows
    /// in, one `Scatter` writing them into the cache in DDR (the device checks each
    /// position against the cache's length).
    fn scatter(&mut self, data: ValueId, positions: ValueId, updates: ValueId) -> Result<(), CompileError> {
        if self.o.replicas > 1 {
            return Err(
                self.err("a cache update needs the batch in the model: define its batch symbol, not -batchsize")
            );
        }
        let eb = self.eb;
        let ds: Vec<u64> = self.g.values[data].shape.iter().map(|&d| d as u64).collect();
        let us: Vec<u64> = self.g.values[updates].shape.iter().map(|&d| d as u64).collect();
        let (b, h, c, d, s) = (ds[0], ds[1], ds[2], ds[3], us[2]);
        let head = s * d * eb;
        if head + s * 4 > self.budget() {
            return Err(self.err(format!("one head's {s} new rows of {d} elements do not fit the VTCM budget")));
        }
        let mut per = (self.budget() / head).clamp(1, h);
        while b * h.div_ceil(per) < self.want_tiles() as u64 && per > 1 {
            per = per.div_ceil(2);
        }
        let tiles: Vec<(u64, u64)> =
            (0..b).flat_map(|bi| (0..h).step_by(per as usize).map(move |h0| (bi, h0))).collect();
        let mut v = Vtcm { next: 0, capacity: self.o.vtcm_bytes };
        let ibuf = [v.alloc(s * 4), v.alloc(s * 4)];
        let sbuf = [v.alloc(per * head), v.alloc(per * head)];
        let (db, pb, ub) = (self.value_base(data), self.value_base(positions), self.value_base(updates));
        let starts = self.starts();
        for (core, run) in runs(tiles.len(), self.o.cores as usize).into_iter().enumerate() {
            let mut ops = std::mem::take(&mut self.streams[core]);
            for (i, &(bi, h0)) in tiles[run].iter().enumerate() {
                let slot = i % 2;
                let hn = per.min(h - h0);
                let idx = self.vtcm_as(ibuf[slot], DType::I32, &[s]);
                ops.push(Op::DmaIn { dst: idx, src: self.ddr(bi * s, pb, &[s], &[1]), multicast: 0, peer_bytes: 0 });
                let rows = self.vtcm(sbuf[slot], &[hn, s, d]);
                let src = self.ddr((bi * h + h0) * s * d, ub, &[hn, s, d], &[s * d, d, 1]);
                ops.push(Op::DmaIn { dst: rows, src, multicast: 0, peer_bytes: 0 });
                let dst = self.ddr((bi * h + h0) * c * d, db, &[hn, c, d], &[c * d, d, 1]);
                ops.push(Op::Scatter { dst, src: rows, indices: idx });
            }
            self.streams[core] = ops;
        }
        self.end_layer(tiles.len(), &starts, v.next);
        Ok(())
    }

    // ---- pooling --------------------------------------------------------------------

    fn pool(
        &mut self,
        x: ValueId,
        y: ValueId,
        kind: PoolKind,
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
    ) -> Result<(), CompileError> {
        // Float, or int8 max pooling (input and output with one quantisation).
        let dtype = value_dtype(self.g, &self.o, x);
        let eb = dtype.bytes();
        let xs: Vec<u64> = self.g.values[x].shape.iter().map(|&d| d as u64).collect();
        let ys: Vec<u64> = self.g.values[y].shape.iter().map(|&d| d as u64).collect();
        let (c, h, w, ho, wo) = (xs[1], xs[2], xs[3], ys[2], ys[3]);
        let (kh, sh) = (kernel[0] as u64, stride[0] as u64);
        let samples = self.o.replicas as u64 * xs[0];
        let rows_in = |r: u64| ((r - 1) * sh + kh).min(h);
        let bytes =
            |c_t: u64, r: u64| align(c_t * rows_in(r) * w * eb, VTCM_ALIGN) + align(c_t * r * wo * eb, VTCM_ALIGN);
        let budget = self.budget();
        let mut c_t = c;
        let mut r = ho;
        while bytes(c_t, r) > budget {
            if c_t > 1 {
                c_t = c_t.div_ceil(2);
            } else if r > 1 {
                r = r.div_ceil(2);
            } else {
                return Err(self.err("one row of one channel does not fit the VTCM budget"));
            }
        }
        while (samples * c.div_ceil(c_t) * ho.div_ceil(r)) < self.want_tiles() as u64 {
            if c_t > 1 {
                c_t = c_t.div_ceil(2);
            } else if r > 1 {
                r = r.div_ceil(2);
            } else {
                break;
            }
        }
        let n_r = ho.div_ceil(r);
        let r = ho.div_ceil(n_r);
        let n_c = balanced(c.div_ceil(c_t), c, samples * n_r, self.o.cores as u64);
        let c_t = c.div_ceil(n_c);
        let n_c = c.div_ceil(c_t);
        let mut v = Vtcm { next: 0, capacity: self.o.vtcm_bytes };
        let ibuf = [v.alloc(c_t * rows_in(r) * w * eb), v.alloc(c_t * rows_in(r) * w * eb)];
        let obuf = [v.alloc(c_t * r * wo * eb), v.alloc(c_t * r * wo * eb)];
        let (xb, yb) = (self.value_base(x), self.value_base(y));
        let mut tiles = Vec::new();
        for s in 0..samples {
            for cb in 0..n_c {
                for rb in 0..n_r {
                    tiles.push((s, cb, rb));
                }
            }
        }
        let starts = self.starts();
        for (core, run) in runs(tiles.len(), self.o.cores as usize).into_iter().enumerate() {
            let mut ops = std::mem::take(&mut self.streams[core]);
            for (i, &(s, cb, rb)) in tiles[run].iter().enumerate() {
                let slot = i % 2;
                let (c0, oy0) = (cb * c_t, rb * r);
                let (c_n, r_n) = (c_t.min(c - c0), r.min(ho - oy0));
                let start = (oy0 * sh) as i64 - pad[0] as i64;
                let end = ((oy0 + r_n - 1) * sh + kh) as i64 - pad[0] as i64;
                let a = (start.max(0) as u64).min(h - 1);
                let b = (end.min(h as i64).max(a as i64 + 1)) as u64;
                let pad_top = (a as i64 - start).max(0) as u64;
                let rows = b - a;
                ops.push(Op::DmaIn {
                    dst: self.vtcm_as(ibuf[slot], dtype, &[c_n, rows, w]),
                    src: self.ddr((s * c + c0) * h * w + a * w, xb, &[c_n, rows, w], &[h * w, w, 1]),
                    multicast: 0,
                    peer_bytes: 0,
                });
                let out = self.vtcm_as(obuf[slot], dtype, &[c_n, r_n, wo]);
                ops.push(Op::Pool {
                    kind,
                    dst: out,
                    src: self.vtcm_as(ibuf[slot], dtype, &[c_n, rows, w]),
                    window: PoolWindow {
                        kernel: [kernel[0] as u32, kernel[1] as u32],
                        stride: [stride[0] as u32, stride[1] as u32],
                        pad: [pad_top.min(kh - 1) as u32, pad[1] as u32],
                    },
                });
                ops.push(Op::DmaOut {
                    dst: self.ddr((s * c + c0) * ho * wo + oy0 * wo, yb, &[c_n, r_n, wo], &[ho * wo, wo, 1]),
                    src: out,
                });
            }
            self.streams[core] = ops;
        }
        self.end_layer(tiles.len(), &starts, v.next);
        Ok(())
    }

    fn global_avg_pool(&mut self, x: ValueId, y: ValueId) -> Result<(), CompileError> {
        let eb = self.eb;
        let xs: Vec<u64> = self.g.values[x].shape.iter().map(|&d| d as u64).collect();
        let (c, hw) = (xs[1], xs[2] * xs[3]);
        let samples = self.o.replicas as u64 * xs[0];
        let mut c_t = (self.budget() / (hw * eb + eb + 2 * VTCM_ALIGN)).clamp(1, c);
        while samples * c.div_ceil(c_t) < self.want_tiles() as u64 && c_t > 1 {
            c_t = c_t.div_ceil(2);
        }
        let n_c = c.div_ceil(c_t);
        let c_t = c.div_ceil(n_c);
        if c_t * hw * eb > self.big_budget() {
            return Err(self.err("one channel does not fit the VTCM budget"));
        }
        let mut v = Vtcm { next: 0, capacity: self.o.vtcm_bytes };
        let ibuf = [v.alloc(c_t * hw * eb), v.alloc(c_t * hw * eb)];
        let obuf = [v.alloc(c_t * eb), v.alloc(c_t * eb)];
        let (xb, yb) = (self.value_base(x), self.value_base(y));
        let tiles: Vec<(u64, u64)> = (0..samples).flat_map(|s| (0..n_c).map(move |cb| (s, cb))).collect();
        let starts = self.starts();
        for (core, run) in runs(tiles.len(), self.o.cores as usize).into_iter().enumerate() {
            let mut ops = std::mem::take(&mut self.streams[core]);
            for (i, &(s, cb)) in tiles[run].iter().enumerate() {
                let slot = i % 2;
                let c0 = cb * c_t;
                let c_n = c_t.min(c - c0);
                let input = self.vtcm(ibuf[slot], &[c_n, xs[2], xs[3]]);
                ops.push(Op::DmaIn {
                    dst: input,
                    src: self.ddr((s * c + c0) * hw, xb, &[c_n, xs[2], xs[3]], &[hw, xs[3], 1]),
                    multicast: 0,
                    peer_bytes: 0,
                });
                let out = self.vtcm(obuf[slot], &[c_n]);
                ops.push(Op::GlobalAvgPool { dst: out, src: input });
                ops.push(Op::DmaOut { dst: self.ddr(s * c + c0, yb, &[c_n], &[1]), src: out });
            }
            self.streams[core] = ops;
        }
        self.end_layer(tiles.len(), &starts, v.next);
        Ok(())
    }

    // ---- row-wise: softmax, layer norm, reductions -----------------------------------

    fn rows(&mut self, x: ValueId, y: ValueId, row: u64, what: RowOp) -> Result<(), CompileError> {
        let eb = self.eb;
        let rows = self.o.replicas as u64 * self.replica_elems(x) / row;
        let per_row = align(row * eb, 1) * 2 + eb;
        let mut n_t = (self.budget().saturating_sub(4 * row * eb + 4 * VTCM_ALIGN) / per_row).clamp(1, rows);
        while rows.div_ceil(n_t) < self.want_tiles() as u64 && n_t > 1 {
            n_t = n_t.div_ceil(2);
        }
        let n_b = rows.div_ceil(n_t);
        let n_t = rows.div_ceil(n_b);
        if n_t * per_row > self.big_budget() {
            return Err(self.err(format!("a row of {row} elements does not fit the VTCM budget")));
        }
        let mut v = Vtcm { next: 0, capacity: self.o.vtcm_bytes };
        let ibuf = [v.alloc(n_t * row * eb), v.alloc(n_t * row * eb)];
        let obuf = [v.alloc(n_t * eb), v.alloc(n_t * eb)];
        let pbuf = [v.alloc(row * eb), v.alloc(row * eb)];
        let (xb, yb) = (self.value_base(x), self.value_base(y));
        let starts = self.starts();
        for (core, run) in runs(n_b as usize, self.o.cores as usize).into_iter().enumerate() {
            let mut ops = std::mem::take(&mut self.streams[core]);
            for (i, b) in run.enumerate() {
                let slot = i % 2;
                let r0 = b as u64 * n_t;
                let n = n_t.min(rows - r0);
                let t = self.vtcm(ibuf[slot], &[n, row]);
                ops.push(Op::DmaIn {
                    dst: t,
                    src: self.ddr(r0 * row, xb, &[n, row], &[row, 1]),
                    multicast: 0,
                    peer_bytes: 0,
                });
                match what {
                    RowOp::Softmax => ops.push(Op::Softmax { dst: t, src: t }),
                    RowOp::LayerNorm { epsilon, scale, bias } => {
                        ops.push(Op::LayerNorm { dst: t, src: t, epsilon });
                        for (c, kind) in [(scale, BinaryKind::Mul), (bias, BinaryKind::Add)] {
                            if let Some(c) = c {
                                ops.push(Op::DmaIn {
                                    dst: self.vtcm(pbuf[slot], &[row]),
                                    src: self.ddr(0, self.const_offsets[c], &[row], &[1]),
                                    multicast: 0,
                                    peer_bytes: 0,
                                });
                                let view = self.vtcm(pbuf[slot], &[n, row]).with_strides(&[0, 1]);
                                ops.push(Op::Binary { kind, dst: t, a: t, b: view });
                            }
                        }
                    }
                    RowOp::Reduce(kind) => {
                        let out = self.vtcm(obuf[slot], &[n, 1]);
                        ops.push(Op::Reduce { kind, dst: out, src: t });
                        ops.push(Op::DmaOut { dst: self.ddr(r0, yb, &[n, 1], &[1, 1]), src: out });
                        continue;
                    }
                }
                ops.push(Op::DmaOut { dst: self.ddr(r0 * row, yb, &[n, row], &[row, 1]), src: t });
            }
            self.streams[core] = ops;
        }
        self.end_layer(n_b as usize, &starts, v.next);
        Ok(())
    }

    // ---- local response normalisation -------------------------------------------------

    fn lrn(
        &mut self,
        x: ValueId,
        y: ValueId,
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    ) -> Result<(), CompileError> {
        let eb = self.eb;
        let xs: Vec<u64> = self.g.values[x].shape.iter().map(|&d| d as u64).collect();
        let (c, hw) = (xs[1], xs[2] * xs[3]);
        let samples = self.o.replicas as u64 * xs[0];
        let mut t = (self.budget() / (3 * c * eb + 3)).clamp(1, hw);
        while samples * hw.div_ceil(t) < self.want_tiles() as u64 && t > 1 {
            t = t.div_ceil(2);
        }
        let n_t = hw.div_ceil(t);
        let t = hw.div_ceil(n_t);
        if 3 * c * t * eb > self.big_budget() {
            return Err(self.err("one pixel's channels do not fit the VTCM budget"));
        }
        let mut v = Vtcm { next: 0, capacity: self.o.vtcm_bytes };
        let bufs: Vec<[u64; 2]> = (0..3).map(|_| [v.alloc(c * t * eb), v.alloc(c * t * eb)]).collect();
        let (xb, yb) = (self.value_base(x), self.value_base(y));
        let tiles: Vec<(u64, u64)> = (0..samples).flat_map(|s| (0..n_t).map(move |b| (s, b))).collect();
        let starts = self.starts();
        let half = ((size - 1) / 2) as u32;
        for (core, run) in runs(tiles.len(), self.o.cores as usize).into_iter().enumerate() {
            let mut ops = std::mem::take(&mut self.streams[core]);
            for (i, &(s, b)) in tiles[run].iter().enumerate() {
                let slot = i % 2;
                let p0 = b * t;
                let n = t.min(hw - p0);
                let xv = self.vtcm(bufs[0][slot], &[c, n]);
                let sq = self.vtcm(bufs[1][slot], &[c, n]);
                let avg = self.vtcm(bufs[2][slot], &[c, n]);
                ops.push(Op::DmaIn {
                    dst: xv,
                    src: self.ddr(s * c * hw + p0, xb, &[c, n], &[hw, 1]),
                    multicast: 0,
                    peer_bytes: 0,
                });
                ops.push(Op::Binary { kind: BinaryKind::Mul, dst: sq, a: xv, b: xv });
                // The window sum across channels: an average pool over a [1, C, n] view.
                ops.push(Op::Pool {
                    kind: PoolKind::AvgIncludePad,
                    dst: self.vtcm(bufs[2][slot], &[1, c, n]),
                    src: self.vtcm(bufs[1][slot], &[1, c, n]),
                    window: PoolWindow { kernel: [size as u32, 1], stride: [1, 1], pad: [half, 0] },
                });
                ops.push(Op::Unary { kind: UnaryKind::Affine { scale: alpha, shift: bias }, dst: avg, src: avg });
                ops.push(Op::Unary { kind: UnaryKind::Pow { exponent: -beta }, dst: avg, src: avg });
                ops.push(Op::Binary { kind: BinaryKind::Mul, dst: xv, a: xv, b: avg });
                ops.push(Op::DmaOut { dst: self.ddr(s * c * hw + p0, yb, &[c, n], &[hw, 1]), src: xv });
            }
            self.streams[core] = ops;
        }
        self.end_layer(tiles.len(), &starts, v.next);
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum RowOp {
    Softmax,
    LayerNorm { epsilon: f32, scale: Option<usize>, bias: Option<usize> },
    Reduce(aicsim_abi::isa::ReduceKind),
}

/// Constants in the program's dtype; f16 clips what it cannot hold, and says so of values
/// it flushes to zero as the card's compiler does (naming the node that reads them).
fn encode_const(node: &str, name: &str, c: &Const, dtype: DType, warnings: &mut Vec<String>) -> Vec<u8> {
    match dtype {
        // Integers the import checked to fit.
        DType::I8 | DType::U8 => return c.to_i64().iter().map(|&x| x as i8 as u8).collect(),
        DType::I16 => return c.to_i64().iter().flat_map(|&x| (x as i16).to_le_bytes()).collect(),
        DType::I32 => return c.to_i64().iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
        DType::F32 | DType::F16 => {}
    }
    let v = c.to_f32();
    match dtype {
        DType::F16 => {
            let max = half::f16::MAX.to_f32();
            let clipped = v.iter().filter(|x| x.abs() > max).count();
            if clipped > 0 {
                warnings.push(format!("constant '{name}': {clipped} value(s) outside the f16 range (+-{max}) clipped"));
            }
            if v.iter().any(|&x| x != 0.0 && half::f16::from_f32(x).to_f32() == 0.0) {
                warnings.push(format!(
                    "{node}/_{name}/ contains value or values that will underflow after conversion to 16-bit \
                     floating point values."
                ));
            }
            v.iter().flat_map(|&x| half::f16::from_f32(x.clamp(-max, max)).to_le_bytes()).collect()
        }
        _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// Bytes one of the two buffer sets of a tile may use: an eighth of the VTCM, divided by
/// `-mos`. The two sets take a quarter; the rest is the on-chip pool.
fn tile_budget(o: &LowerOptions) -> u64 {
    o.vtcm_bytes / 16 / u64::from(o.mos.max(1))
}

/// VTCM offset of shared weight slot `k` (0..4: two per layer parity), above the tile
/// buffers; `k = 4` is the end of the region.
fn shared_slot(o: &LowerOptions, k: usize) -> u64 {
    2 * tile_budget(o) + k as u64 * tile_budget(o)
}

/// VTCM per core the shared weight slots take.
fn shared_region(o: &LowerOptions) -> u64 {
    shared_slot(o, 4) - shared_slot(o, 0)
}

/// Which values stay on chip between layers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolPlan {
    /// Storage ids of the resident values.
    pub resident: Vec<ValueId>,
    /// Pool bytes the program's cores hold, over all of them.
    pub capacity: u64,
    /// Most pool bytes live at once.
    pub peak: u64,
    /// Bytes of the values that did not fit (they spill to DDR).
    pub spilled: u64,
    /// Most bytes live at once if every value stayed on chip.
    pub demand: u64,
}

/// Keeps layer outputs in the VTCM left over by the tile buffers of all cores, shortest
/// lifetime first, as long as the values live at every moment of a value's
/// lifetime (its producer to its last reader) fit. Graph inputs and outputs stay in DDR:
/// the host moves them.
pub fn plan_pool(g: &Graph, o: &LowerOptions, stored: &[bool], reserved: u64) -> PoolPlan {
    let per_core = o.vtcm_bytes.saturating_sub(2 * tile_budget(o) + reserved);
    let capacity = per_core * u64::from(o.cores);
    let n = g.layers.len();
    let mut first = vec![usize::MAX; g.values.len()];
    let mut last = vec![0usize; g.values.len()];
    for (i, l) in g.layers.iter().enumerate() {
        let s = g.values[l.output].storage;
        first[s] = first[s].min(i);
        last[s] = last[s].max(i);
        for v in l.inputs() {
            let s = g.values[v].storage;
            last[s] = last[s].max(i);
        }
    }
    let mut host = vec![false; g.values.len()];
    for io in g.inputs.iter().chain(&g.outputs) {
        host[g.values[io.value].storage] = true;
    }
    let mut live = vec![0u64; n];
    let mut plan = PoolPlan { capacity, ..PoolPlan::default() };
    let bytes = |v: ValueId| {
        let eb = value_dtype(g, o, v).bytes();
        align(o.replicas as u64 * g.values[v].elements() as u64 * eb, VTCM_ALIGN)
    };
    let mut candidates: Vec<ValueId> =
        stored.iter().enumerate().filter(|(v, &s)| s && !host[*v] && first[*v] < n).map(|(v, _)| v).collect();
    // Short-lived values first: they hold the pool for the fewest layers per byte saved.
    candidates.sort_by_key(|&v| (last[v].saturating_sub(first[v]), bytes(v), first[v]));
    let mut all = vec![0u64; n];
    for &v in &candidates {
        for l in &mut all[first[v]..=last[v].max(first[v])] {
            *l += bytes(v);
        }
    }
    plan.demand = all.iter().copied().max().unwrap_or(0);
    for v in candidates {
        let bytes = bytes(v);
        let span = first[v]..=last[v].max(first[v]);
        let peak = live[span.clone()].iter().copied().max().unwrap_or(0);
        if peak + bytes <= capacity {
            for l in &mut live[span] {
                *l += bytes;
            }
            plan.resident.push(v);
        } else {
            plan.spilled += bytes;
        }
    }
    plan.peak = live.iter().copied().max().unwrap_or(0);
    plan
}

/// Lowers `g` to per-core instruction streams.
pub fn lower(g: &Graph, o: LowerOptions) -> Result<Lowered, CompileError> {
    lower_at(g, o, &[], 0, &[])
}

/// [`lower`] with the retained state `state` (storage ids) first in DDR, in that order,
/// and everything else from `private_base` on (at least the state's end): the entries of
/// a program lay their state out alike and the rest side by side. A constant equal to
/// one of `shared` (an earlier entry's, by name and bytes) is read where that one is.
pub fn lower_at(
    g: &Graph,
    o: LowerOptions,
    state: &[ValueId],
    private_base: u64,
    shared: &[(&str, &ConstantBlob)],
) -> Result<Lowered, CompileError> {
    check_options(&o)?;
    check_sizes(g, &o)?;
    let eb = o.dtype.bytes();
    let mut warnings = Vec::new();
    let mut value_offsets = vec![u64::MAX; g.values.len()];
    let mut dtypes = std::collections::HashMap::new();
    // DDR: the retained state, the constants the layers read, then every stored value.
    let mut at = 0u64;
    for &v in state {
        value_offsets[v] = at;
        if value_dtype(g, &o, v) != o.dtype {
            dtypes.insert(at, value_dtype(g, &o, v));
        }
        at = align(at + value_dtype(g, &o, v).bytes() * g.values[v].elements() as u64, ALIGN);
    }
    at = at.max(align(private_base, ALIGN));
    let constants_start = at;
    let used = used_constants(g);
    let mut const_offsets = vec![u64::MAX; g.consts.len()];
    let mut constants = Vec::new();
    let mut constant_names = Vec::new();
    let mut shared_bytes = 0;
    let mut shared_range = (u64::MAX, 0);
    for (i, (c, dtype)) in g.consts.iter().zip(const_dtypes(g, &o)).enumerate() {
        if let Some(reader) = used[i] {
            let data = encode_const(&g.layers[reader].name, &g.const_names[i], c, dtype, &mut warnings);
            if let Some((_, blob)) = shared.iter().find(|(n, b)| *n == g.const_names[i] && b.data == data) {
                let blob = *blob;
                const_offsets[i] = blob.ddr_offset;
                if dtype != o.dtype {
                    dtypes.insert(blob.ddr_offset, dtype);
                }
                shared_bytes += data.len() as u64;
                shared_range =
                    (shared_range.0.min(blob.ddr_offset), shared_range.1.max(blob.ddr_offset + data.len() as u64));
                continue;
            }
            const_offsets[i] = at;
            if dtype != o.dtype {
                dtypes.insert(at, dtype);
            }
            at = align(at + data.len() as u64, ALIGN);
            constants.push(ConstantBlob { ddr_offset: const_offsets[i], data });
            constant_names.push(g.const_names[i].clone());
        }
    }
    let constants_bytes = at;
    let stored = stored_values(g);
    let mut quants = std::collections::HashMap::new();
    for (v, _) in stored.iter().enumerate().filter(|(v, &s)| s && !state.contains(v)) {
        value_offsets[v] = at;
        if let Some(q) = g.values[v].quant {
            quants.insert(at, q);
        }
        if value_dtype(g, &o, v) != o.dtype {
            dtypes.insert(at, value_dtype(g, &o, v));
        }
        let eb = value_dtype(g, &o, v).bytes();
        at = align(at + o.replicas as u64 * g.values[v].elements() as u64 * eb, ALIGN);
    }
    // Prefetching shared weight blocks across layers needs slots of their own; they are
    // reserved only if the activations still all stay on chip without that VTCM.
    let with_slots = (o.multicast_weights && o.cores > 1).then(|| plan_pool(g, &o, &stored, shared_region(&o)));
    let prefetch = with_slots.as_ref().is_some_and(|p| p.spilled == 0);
    let pool = match with_slots {
        Some(p) if prefetch => p,
        _ => plan_pool(g, &o, &stored, 0),
    };
    let pool_bases = pool.resident.iter().map(|&v| value_offsets[v]).collect();
    let pool_per_core = pool.peak.div_ceil(u64::from(o.cores));
    let mut l = Lowerer {
        g,
        o,
        eb,
        cost: CostModel::default(),
        streams: vec![Vec::new(); o.cores as usize],
        const_offsets,
        value_offsets,
        vtcm_peak: 0,
        reports: Vec::new(),
        layer: String::new(),
        constants_start,
        shared_constants: shared_range,
        constants_bytes,
        pool_bases,
        prev_starts: Vec::new(),
        slot_layers: 0,
        prefetch,
        prev_big: false,
        dtypes,
        quants,
    };
    let mut layer_starts = vec![Vec::with_capacity(g.layers.len()); o.cores as usize];
    for layer in &g.layers {
        for (starts, stream) in layer_starts.iter_mut().zip(&l.streams) {
            starts.push(stream.len() as u32);
        }
        l.layer = layer.name.clone();
        l.lower_layer(layer)?;
        let r = l.reports.last_mut().expect("every layer reports");
        r.name = layer.name.clone();
        r.op_type = layer.op_type.clone();
        r.macs = g.layer_macs(layer) * o.replicas as u64;
    }
    let mut streams = l.streams;
    let crossed = mark_peers(g, &o, &stored, &l.value_offsets, &mut streams);
    for (r, bytes) in l.reports.iter_mut().zip(crossed) {
        r.peer_bytes = bytes;
    }
    for s in &mut streams {
        s.push(Op::End);
    }
    Ok(Lowered {
        streams,
        constants,
        constants_bytes: constants_bytes - constants_start + shared_bytes,
        constant_names,
        ddr_bytes: at.max(ALIGN),
        // A layer on the big budget overlaps the pool's VTCM; the pool plan does not
        // model that eviction (known gap, docs/calibration.md).
        vtcm_bytes: (l.vtcm_peak + pool_per_core).min(o.vtcm_bytes).max(l.vtcm_peak),
        value_offsets: l.value_offsets,
        layers: l.reports,
        layer_starts,
        warnings,
        pool,
    })
}

fn check_options(o: &LowerOptions) -> Result<(), CompileError> {
    if o.cores == 0 || o.cores > 64 {
        return Err(CompileError::Option { option: "-aic-num-cores", reason: format!("{} is not in 1..=64", o.cores) });
    }
    if !matches!(o.dtype, DType::F32 | DType::F16) {
        return Err(CompileError::Option {
            option: "dtype",
            reason: format!("{:?} programs are not supported", o.dtype),
        });
    }
    Ok(())
}

/// Every tensor (all replicas of a value) has fewer than 2^32 elements: the ISA's
/// dimensions and strides are 32-bit.
fn check_sizes(g: &Graph, o: &LowerOptions) -> Result<(), CompileError> {
    let too_big = |name: &str, elements: u64| CompileError::Lowering {
        layer: name.to_string(),
        reason: format!("tensor '{name}' has {elements} elements, more than the instruction set's 32-bit sizes"),
    };
    for value in &g.values {
        let elements = value.elements() as u64 * o.replicas as u64;
        if u32::try_from(elements).is_err() {
            return Err(too_big(&value.name, elements));
        }
    }
    for (c, name) in g.consts.iter().zip(&g.const_names) {
        let elements = c.shape.iter().product::<usize>() as u64;
        if u32::try_from(elements).is_err() {
            return Err(too_big(name, elements));
        }
    }
    Ok(())
}

/// The first layer reading each constant (constants no layer reads are not stored).
fn used_constants(g: &Graph) -> Vec<Option<usize>> {
    let mut used = vec![None; g.consts.len()];
    for (at, l) in g.layers.iter().enumerate() {
        let mut mark = |c: usize| {
            used[c].get_or_insert(at);
        };
        match &l.kind {
            LayerKind::Conv { weight, bias, int8: Some(m), .. }
            | LayerKind::Dense { weight, bias, int8: Some(m), .. } => {
                mark(*weight);
                mark(*m);
                if let Some(b) = bias {
                    mark(*b);
                }
            }
            LayerKind::Conv { weight, bias, .. } | LayerKind::Dense { weight, bias, .. } => {
                mark(*weight);
                if let Some(b) = bias {
                    mark(*b);
                }
            }
            LayerKind::LayerNorm { scale, bias, .. } => {
                for c in scale.iter().chain(bias) {
                    mark(*c);
                }
            }
            LayerKind::Pad { fill, .. } => mark(*fill),
            LayerKind::Gather { table, .. } => mark(*table),
            LayerKind::Elementwise { first, steps } => {
                for o in core::iter::once(first).chain(steps.iter().filter_map(|s| match s {
                    ChainStep::Binary { operand, .. } => Some(operand),
                    ChainStep::Unary(_) => None,
                })) {
                    if let Operand::Const(c) = o {
                        mark(*c);
                    }
                }
            }
            _ => {}
        }
    }
    used
}

/// Which values are stored in DDR: inputs, outputs, and every layer's output.
fn stored_values(g: &Graph) -> Vec<bool> {
    let mut stored = vec![false; g.values.len()];
    for io in g.inputs.iter().chain(&g.outputs) {
        stored[g.values[io.value].storage] = true;
    }
    for l in &g.layers {
        stored[g.values[l.output].storage] = true;
    }
    stored
}

/// Marks the reads of values another core wrote (see `peers`); the bytes each layer
/// reads across cores.
fn mark_peers(
    g: &Graph,
    o: &LowerOptions,
    stored: &[bool],
    value_offsets: &[u64],
    streams: &mut [Vec<Op>],
) -> Vec<u64> {
    let stored_values: Vec<crate::peers::Stored> = stored
        .iter()
        .enumerate()
        .filter(|(v, &s)| s && value_offsets[*v] != u64::MAX && !g.values[*v].shape.is_empty())
        .map(|(v, _)| {
            let mut dims: Vec<u64> = g.values[v].shape.iter().map(|&d| d as u64).collect();
            dims[0] *= o.replicas as u64;
            crate::peers::Stored::new(value_offsets[v], dims, value_dtype(g, o, v).bytes())
        })
        .collect();
    crate::peers::mark_peer_reads(streams, &stored_values)
}

impl Lowerer<'_> {
    /// One layer's instructions, by kind.
    fn lower_layer(&mut self, layer: &crate::ir::Layer) -> Result<(), CompileError> {
        let (g, l, y) = (self.g, self, layer.output);
        match &layer.kind {
            LayerKind::Conv { input, weight, bias, stride, pad, dilation, groups, residual, act, int8 } => {
                let spec = conv::ConvSpec {
                    input: *input,
                    output: y,
                    weight: *weight,
                    bias: *bias,
                    stride: *stride,
                    pad: *pad,
                    dilation: *dilation,
                    groups: *groups,
                    residual: *residual,
                    act: *act,
                    int8: *int8,
                };
                l.conv(&spec)?
            }
            LayerKind::Dense { input, weight, bias, act, int8 } => l.dense(*input, y, *weight, *bias, *act, *int8)?,
            LayerKind::MatMul { a, b, b_transposed } => l.matmul(*a, *b, *b_transposed, y)?,
            LayerKind::Elementwise { first, steps } => l.elementwise(y, *first, steps)?,
            LayerKind::Pool { input, kind, kernel, stride, pad } => l.pool(*input, y, *kind, *kernel, *stride, *pad)?,
            LayerKind::GlobalAvgPool { input } => l.global_avg_pool(*input, y)?,
            LayerKind::Softmax { input, row } => l.rows(*input, y, *row as u64, RowOp::Softmax)?,
            LayerKind::LayerNorm { input, epsilon, scale, bias } => {
                let row = *g.values[*input].shape.last().unwrap_or(&1) as u64;
                l.rows(*input, y, row, RowOp::LayerNorm { epsilon: *epsilon, scale: *scale, bias: *bias })?
            }
            LayerKind::Reduce { input, kind } => {
                let row = *g.values[*input].shape.last().unwrap_or(&1) as u64;
                l.rows(*input, y, row, RowOp::Reduce(*kind))?
            }
            LayerKind::Lrn { input, size, alpha, beta, bias } => l.lrn(*input, y, *size, *alpha, *beta, *bias)?,
            LayerKind::Concat { inputs, axis } => l.concat(inputs, y, *axis)?,
            LayerKind::Transpose { input, perm } => l.transpose(*input, y, perm)?,
            LayerKind::Pad { input, begin, fill } => l.pad(*input, y, begin, *fill)?,
            LayerKind::Gather { table, indices } => l.gather(*table, *indices, y)?,
            LayerKind::Slice { input, begin } => l.slice(*input, y, begin)?,
            LayerKind::Scatter { data, positions, updates } => l.scatter(*data, *positions, *updates)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::balanced;

    #[test]
    fn balanced_counts_give_every_core_the_same_number_of_tiles() {
        // 56 rows in 8 pieces of 7 on 7 cores: 7 pieces of 8 instead.
        assert_eq!(balanced(8, 56, 1, 7), 14);
        assert_eq!(balanced(7, 56, 1, 7), 7);
        // 2 samples x 10 blocks: 20 tiles are already even on 5 cores.
        assert_eq!(balanced(1, 7, 20, 5), 1);
        // 16 blocks of a 7-row layer on 7 cores: no count up to 4x helps.
        assert_eq!(balanced(1, 7, 16, 7), 1);
        // Pieces of 56 rows: 10 wanted are really ceil(56 / 6) = 10; 5 cores take 2 each.
        assert_eq!(balanced(9, 56, 1, 5), 10);
        for (n, extent, others, cores) in [(3u64, 100u64, 3u64, 7u64), (5, 13, 2, 4), (2, 1000, 9, 14)] {
            let k = balanced(n, extent, others, cores);
            assert!(k >= n.min(extent) && k <= extent, "{k} pieces of {extent}");
            // k is a count the rows really give.
            assert_eq!(extent.div_ceil(extent.div_ceil(k)), k);
            if k != n {
                assert_eq!(others * k % cores, 0, "{n}, {extent}, {others}, {cores} -> {k}");
            }
        }
    }
}
