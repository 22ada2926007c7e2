//! Lowering a convolution, in the order its decisions are made:
//! 1. [`ConvDims`]: the layer's sizes and what a tile of it needs in VTCM;
//! 2. [`Lowerer::conv_tiling`]: the tile (output channels x output rows) that fits the
//!    budget, then cut so every core gets the same number of tiles;
//! 3. [`Lowerer::place_conv`]: where the weights go (multicast slots, a prefetched first
//!    block, or a core's own double buffer) and the VTCM buffers of a tile;
//! 4. [`Lowerer::emit_conv`]: each core's run of tiles as instructions, weight loads
//!    and the multicast signals between cores, and the prefetches moved into the
//!    previous layer.

use super::*;

/// One convolution layer as the graph gives it.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvSpec {
    pub input: ValueId,
    pub output: ValueId,
    pub weight: usize,
    pub bias: Option<usize>,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    pub residual: Option<ValueId>,
    pub act: FusedActivation,
    /// An int8 convolution's per-output-channel multiplier (see `LayerKind::Conv`).
    pub int8: Option<usize>,
}

/// A convolution's sizes, in elements (`[N, C, H, W]` in, `[N, Co, Ho, Wo]` out, weight
/// `[Co, C / groups, Kh, Kw]`).
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvDims {
    /// Input samples (batch times replicas).
    pub samples: u64,
    pub c: u64,
    pub h: u64,
    pub w: u64,
    pub co: u64,
    pub ho: u64,
    pub wo: u64,
    /// Input channels per group, as the weight holds them.
    pub cig: u64,
    pub kh: u64,
    pub kw: u64,
    pub groups: u64,
    pub out_per_group: u64,
    pub in_per_group: u64,
    /// A tile holds a multiple of this many output channels (a group's, when grouped).
    pub unit: u64,
    pub stride_h: u64,
    pub dilation_h: u64,
    /// Bytes per element of the input, the weights and the output.
    pub in_eb: u64,
    pub w_eb: u64,
    pub out_eb: u64,
    /// Bytes per output channel of the per-channel constants: the bias (float), or the
    /// int32 bias and the f32 multiplier of an int8 convolution.
    pub chan_eb: u64,
    /// Bytes per element of the int32 sums an int8 convolution requantises (0: the
    /// output buffer takes the sums).
    pub acc_eb: u64,
    /// Output-sized buffers per tile: the output, and the residual beside it if any.
    pub out_buffers: u64,
}

impl ConvDims {
    /// VTCM of a block of `co_t` output channels' weights and biases.
    fn weight_block(&self, co_t: u64) -> u64 {
        align(self.weight_bytes(co_t), VTCM_ALIGN) + align(co_t * self.chan_eb, VTCM_ALIGN)
    }

    /// Input channels a tile of `co_t` output channels reads.
    fn in_channels(&self, co_t: u64) -> u64 {
        if self.groups == 1 {
            self.c
        } else {
            co_t / self.out_per_group * self.in_per_group
        }
    }

    /// Input rows `rows` output rows read.
    fn rows_in(&self, rows: u64) -> u64 {
        ((rows - 1) * self.stride_h + (self.kh - 1) * self.dilation_h + 1).min(self.h)
    }

    /// VTCM of a tile's input and output buffers.
    fn io(&self, co_t: u64, rows: u64) -> u64 {
        align(self.in_channels(co_t) * self.rows_in(rows) * self.w * self.in_eb, VTCM_ALIGN)
            + self.out_buffers * align(co_t * rows * self.wo * self.out_eb, VTCM_ALIGN)
            + align(co_t * rows * self.wo * self.acc_eb, VTCM_ALIGN)
    }

    fn tile_bytes(&self, co_t: u64, rows: u64) -> u64 {
        self.weight_block(co_t) + self.io(co_t, rows)
    }

    /// Bytes of one weight block's weights (without biases).
    fn weight_bytes(&self, co_t: u64) -> u64 {
        co_t * self.cig * self.kh * self.kw * self.w_eb
    }
}

/// How the output is cut into tiles: `co_t` output channels by `rows` output rows,
/// `blocks` channel blocks by `row_blocks` row blocks per sample.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvTiling {
    /// Bytes one of a tile's two buffer sets may use.
    pub budget: u64,
    pub co_t: u64,
    pub rows: u64,
    pub blocks: u64,
    pub row_blocks: u64,
}

/// Where a convolution's weights live and how they reach the cores, and the VTCM
/// buffers of its tiles.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvPlacement {
    /// A block several cores use is read from DDR once and multicast to them.
    pub shared: bool,
    /// The weights sit in the shared slots, loaded during the previous layer.
    pub slots: bool,
    /// A core's first own block goes to a slot of its own, prefetched likewise.
    pub own_slot: bool,
    /// Weight and bias buffers: two that alternate, and at [`OWN_FIRST`] the slot of a
    /// core's prefetched first own block.
    pub weights: [u64; 3],
    pub biases: [u64; 3],
    /// Double-buffered input, output and residual tiles.
    pub inputs: [u64; 2],
    pub outputs: [u64; 2],
    pub residuals: Option<[u64; 2]>,
    /// An int8 convolution's int32 sums.
    pub accs: Option<[u64; 2]>,
    /// VTCM the layer uses on a core.
    pub vtcm_used: u64,
}

/// Index of the weight buffer holding a core's prefetched first own block.
const OWN_FIRST: usize = 2;

/// A convolution, decided: what emission reads.
struct ConvPlan<'a> {
    spec: &'a ConvSpec,
    d: ConvDims,
    t: ConvTiling,
    p: ConvPlacement,
    /// DDR bases of the input, the output, the weights, the biases and an int8
    /// convolution's multipliers.
    xb: u64,
    yb: u64,
    wb: u64,
    bb: Option<u64>,
    mb: Option<u64>,
}

impl Lowerer<'_> {
    pub(super) fn conv(&mut self, spec: &ConvSpec) -> Result<(), CompileError> {
        let d = self.conv_dims(spec)?;
        let t = self.conv_tiling(&d)?;
        let p = self.place_conv(&d, &t);
        let plan = ConvPlan {
            spec,
            d,
            t,
            p,
            xb: self.value_base(spec.input),
            yb: self.value_base(spec.output),
            wb: self.const_offsets[spec.weight],
            bb: spec.bias.map(|b| self.const_offsets[b]),
            mb: spec.int8.map(|m| self.const_offsets[m]),
        };
        self.emit_conv(&plan);
        Ok(())
    }

    fn conv_dims(&self, s: &ConvSpec) -> Result<ConvDims, CompileError> {
        let xs: Vec<u64> = self.g.values[s.input].shape.iter().map(|&d| d as u64).collect();
        let ys: Vec<u64> = self.g.values[s.output].shape.iter().map(|&d| d as u64).collect();
        let ws: Vec<u64> = self.g.consts[s.weight].shape.iter().map(|&d| d as u64).collect();
        let (c, co, cig) = (xs[1], ys[1], ws[1]);
        let groups = s.groups as u64;
        if groups == 0 || co % groups != 0 || c != cig * groups {
            return Err(self.err(format!("{groups} groups do not fit {c} input and {co} output channels")));
        }
        let out_per_group = co / groups;
        Ok(ConvDims {
            samples: self.o.replicas as u64 * xs[0],
            c,
            h: xs[2],
            w: xs[3],
            co,
            ho: ys[2],
            wo: ys[3],
            cig,
            kh: ws[2],
            kw: ws[3],
            groups,
            out_per_group,
            in_per_group: c / groups,
            unit: if groups == 1 { 1 } else { out_per_group },
            stride_h: s.stride[0] as u64,
            dilation_h: s.dilation[0] as u64,
            in_eb: value_dtype(self.g, &self.o, s.input).bytes(),
            w_eb: if s.int8.is_some() { 1 } else { self.eb },
            out_eb: value_dtype(self.g, &self.o, s.output).bytes(),
            chan_eb: if s.int8.is_some() { 8 } else { self.eb },
            acc_eb: if s.int8.is_some() { 4 } else { 0 },
            out_buffers: if s.residual.is_some() { 2 } else { 1 },
        })
    }

    /// The largest tile that fits, cut down until there are enough tiles for every core,
    /// then evened out so each core gets the same number.
    fn conv_tiling(&self, d: &ConvDims) -> Result<ConvTiling, CompileError> {
        let unit = d.unit;
        let halve = |co_t: u64| (co_t / 2).div_ceil(unit).max(1) * unit;
        // A layer whose smallest tile does not fit the tile budget takes half the VTCM per
        // buffer set, as before there was a pool (the pool plan does not see this).
        let budget = if d.tile_bytes(unit, 1) > self.budget() { self.big_budget() } else { self.budget() };
        let mut co_t = d.co;
        while d.tile_bytes(co_t, 1) > budget && co_t > unit {
            co_t = halve(co_t);
        }
        if d.tile_bytes(co_t, 1) > budget {
            return Err(self.err(format!(
                "one output row of {co_t} channels needs {} bytes of VTCM, more than the {budget}-byte tile budget",
                d.tile_bytes(co_t, 1)
            )));
        }
        // The most output rows that fit.
        let (mut lo, mut hi) = (1u64, d.ho);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if d.tile_bytes(co_t, mid) <= budget {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let mut rows = lo;
        let count = |co_t: u64, rows: u64| (d.samples * d.co.div_ceil(co_t) * d.ho.div_ceil(rows)) as usize;
        while count(co_t, rows) < self.want_tiles() {
            if rows > 1 {
                rows = rows.div_ceil(2);
            } else if co_t > unit {
                co_t = halve(co_t);
            } else {
                break;
            }
        }
        let mut blocks = d.co.div_ceil(co_t);
        let cores = self.o.cores as u64;
        let hmx = self.cost.hmx_tile;
        if d.groups == 1 && cores > 1 && co_t >= hmx && blocks * d.samples >= cores {
            // Blocks of whole HMX tiles (no padded channels); the row count below evens
            // out the tiles per core. A block may then be split between two cores'
            // runs: each reads it.
            blocks = d.co.div_ceil(co_t / hmx * hmx);
        } else if self.o.multicast_weights && blocks >= cores && cores > 1 {
            // Whole weight blocks per core: nobody reads a block another core reads.
            blocks = blocks.div_ceil(cores) * cores;
        }
        let co_t = d.co.div_ceil(blocks).div_ceil(unit) * unit;
        let blocks = d.co.div_ceil(co_t);
        let row_blocks = balanced(d.ho.div_ceil(rows), d.ho, d.samples * blocks, cores);
        let rows = d.ho.div_ceil(row_blocks);
        let row_blocks = d.ho.div_ceil(rows);
        Ok(ConvTiling { budget, co_t, rows, blocks, row_blocks })
    }

    /// Where the weights go and the VTCM buffers of a tile.
    ///
    /// With -multicast-weights, a block several cores use (fewer blocks than cores) is
    /// read from DDR once: the first core using it multicasts it to the others into slot
    /// `block % 2` (a core's run spans at most two blocks). Those slots are in a region of
    /// their own, one per layer parity, so the load is issued while the previous layer
    /// still computes (prefetch); the barrier ending that layer waits for it. The first
    /// layer has nothing to hide behind: its owners signal counter `1 + block` and the
    /// users wait for it.
    fn place_conv(&mut self, d: &ConvDims, t: &ConvTiling) -> ConvPlacement {
        let cores = self.o.cores as usize;
        let shared = self.o.multicast_weights
            && cores > 1
            && (t.blocks as usize) < cores
            && t.blocks < u64::from(SYNC_COUNTERS) - 1;
        let mut v = Vtcm { next: 0, capacity: self.o.vtcm_bytes };
        // Tiles on the big budget reach into the shared slots' VTCM.
        let slots = shared && self.prefetch && t.budget == self.budget();
        let own_slot = !shared && self.prefetch && t.budget == self.budget();
        let parity = self.slot_layers % 2;
        if slots || own_slot {
            self.slot_layers += 1;
        }
        let slot = |k: usize| shared_slot(&self.o, parity * 2 + k);
        let weight_bytes = d.weight_bytes(t.co_t);
        let bias_at = |k: usize| slot(k) + align(weight_bytes, VTCM_ALIGN);
        let (weights, biases) = if slots {
            ([slot(0), slot(1), slot(0)], [bias_at(0), bias_at(1), bias_at(0)])
        } else {
            let w = [v.alloc(weight_bytes), v.alloc(weight_bytes)];
            let b = [v.alloc(t.co_t * d.chan_eb), v.alloc(t.co_t * d.chan_eb)];
            ([w[0], w[1], slot(0)], [b[0], b[1], bias_at(0)])
        };
        let in_bytes = d.in_channels(t.co_t) * d.rows_in(t.rows) * d.w * d.in_eb;
        let out_bytes = t.co_t * t.rows * d.wo * d.out_eb;
        let inputs = [v.alloc(in_bytes), v.alloc(in_bytes)];
        let outputs = [v.alloc(out_bytes), v.alloc(out_bytes)];
        let residuals = (d.out_buffers == 2).then(|| [v.alloc(out_bytes), v.alloc(out_bytes)]);
        let acc_bytes = t.co_t * t.rows * d.wo * d.acc_eb;
        let accs = (d.acc_eb > 0).then(|| [v.alloc(acc_bytes), v.alloc(acc_bytes)]);
        debug_assert!(v.next <= v.capacity);
        ConvPlacement { shared, slots, own_slot, weights, biases, inputs, outputs, residuals, accs, vtcm_used: v.next }
    }

    /// Loads weight block `cb` (and its biases) into weight buffer `slot`, multicast to
    /// the cores in `mask`.
    fn load_conv_weights(&self, ops: &mut Vec<Op>, plan: &ConvPlan<'_>, cb: u64, slot: usize, mask: u64) {
        let (d, co_t) = (&plan.d, plan.t.co_t);
        let co0 = cb * co_t;
        let co_n = co_t.min(d.co - co0);
        let per = d.cig * d.kh * d.kw;
        let shape = [co_n, d.cig, d.kh, d.kw];
        let src = self.ddr(co0 * per, plan.wb, &shape, &contiguous(&shape));
        ops.push(Op::DmaIn {
            dst: self.vtcm_as(plan.p.weights[slot], src.dtype, &shape),
            src,
            multicast: mask,
            peer_bytes: 0,
        });
        // Biases, then an int8 convolution's multipliers after a block's worth of them.
        let multipliers = plan.mb.map(|mb| (mb, plan.t.co_t * 4));
        for (base, at) in plan.bb.map(|bb| (bb, 0)).into_iter().chain(multipliers) {
            let src = self.ddr(co0, base, &[co_n], &[1]);
            let dst = self.vtcm_as(plan.p.biases[slot] + at, src.dtype, &[co_n]);
            ops.push(Op::DmaIn { dst, src, multicast: mask, peer_bytes: 0 });
        }
    }

    /// Every core's run of tiles, weight block outermost so a core reuses a block across
    /// its run; prefetched loads go to the start of the previous layer.
    fn emit_conv(&mut self, plan: &ConvPlan<'_>) {
        let (t, p) = (&plan.t, &plan.p);
        let cores = self.o.cores as usize;
        let mut tiles = Vec::new();
        for cb in 0..t.blocks {
            for s in 0..plan.d.samples {
                for rb in 0..t.row_blocks {
                    tiles.push((cb, s, rb));
                }
            }
        }
        let mut starts = self.starts();
        let runs = runs(tiles.len(), cores);
        // Nor may a prefetch land in a previous layer whose tiles reach into them.
        let prefetch = p.slots && self.prev_starts.len() == cores && !self.prev_big;
        let prefetch_own = p.own_slot && self.prev_starts.len() == cores && !self.prev_big;
        let mut prefetched = vec![Vec::new(); cores];
        // The cores whose run has tiles of each block (runs are contiguous and tiles
        // ordered by block, so a run covers the blocks from its first tile's to its last's).
        let mut users = vec![Vec::new(); if p.shared { t.blocks as usize } else { 0 }];
        for (k, run) in runs.iter().enumerate().filter(|(_, r)| p.shared && !r.is_empty()) {
            for cb in tiles[run.start].0..=tiles[run.end - 1].0 {
                users[cb as usize].push(k);
            }
        }
        for (core, run) in runs.iter().enumerate() {
            let mut ops = std::mem::take(&mut self.streams[core]);
            let to_prefetch = &mut prefetched[core];
            if p.shared {
                for cb in 0..t.blocks {
                    let users = &users[cb as usize];
                    if users.first() == Some(&core) {
                        let mask = users.iter().fold(0u64, |m, &k| m | 1 << k);
                        if prefetch {
                            self.load_conv_weights(to_prefetch, plan, cb, cb as usize % 2, mask);
                            continue;
                        }
                        self.load_conv_weights(&mut ops, plan, cb, cb as usize % 2, mask);
                        if users.len() > 1 {
                            ops.push(Op::Signal { counter: 1 + cb as u8, value: (users.len() - 1) as u16 });
                        }
                    }
                }
            }
            let first_block = (p.own_slot && !run.is_empty()).then(|| tiles[run.start].0);
            if let Some(fb) = first_block {
                let to = if prefetch_own { to_prefetch } else { &mut ops };
                self.load_conv_weights(to, plan, fb, OWN_FIRST, 0);
            }
            let mut last_cb = None;
            let mut wslot = 1;
            for (i, &(cb, s, rb)) in tiles[run.clone()].iter().enumerate() {
                if last_cb != Some(cb) {
                    if p.shared {
                        wslot = cb as usize % 2;
                        if !prefetch && users[cb as usize].first() != Some(&core) {
                            ops.push(Op::Wait { counter: 1 + cb as u8, value: 1 });
                        }
                    } else if first_block == Some(cb) {
                        wslot = OWN_FIRST;
                    } else {
                        wslot = if wslot == 0 { 1 } else { 0 };
                        self.load_conv_weights(&mut ops, plan, cb, wslot, 0);
                    }
                    last_cb = Some(cb);
                }
                self.conv_tile(&mut ops, plan, (cb, s, rb), i % 2, wslot);
            }
            self.streams[core] = ops;
        }
        // The prefetches go at the start of the previous layer of their owner.
        let mut prefetch_bytes = 0;
        for (core, ops) in prefetched.into_iter().enumerate().filter(|(_, ops)| !ops.is_empty()) {
            prefetch_bytes +=
                ops.iter().map(|op| if let Op::DmaIn { src, .. } = op { src.packed_bytes() } else { 0 }).sum::<u64>();
            let at = self.prev_starts[core];
            starts[core] += ops.len();
            self.streams[core].splice(at..at, ops);
        }
        self.end_layer(tiles.len(), &starts, p.vtcm_used);
        if p.slots || p.own_slot {
            self.vtcm_peak = self.vtcm_peak.max(shared_slot(&self.o, 4));
        }
        let r = self.reports.last_mut().expect("just reported");
        r.load_bytes += prefetch_bytes;
        r.constant_bytes += prefetch_bytes;
    }

    /// One tile: its input rows in (with the padding rows it needs), the convolution,
    /// bias, residual and activation, its output rows out. `slot` picks the tile's buffer
    /// set, `wslot` the weight buffer.
    fn conv_tile(
        &self,
        ops: &mut Vec<Op>,
        plan: &ConvPlan<'_>,
        (cb, s, rb): (u64, u64, u64),
        slot: usize,
        wslot: usize,
    ) {
        let (spec, d, t, p) = (plan.spec, &plan.d, &plan.t, &plan.p);
        let ConvDims { c, h, w, co, ho, wo, cig, kh, kw, .. } = *d;
        let (sh, dh) = (d.stride_h, d.dilation_h);
        let co0 = cb * t.co_t;
        let co_n = t.co_t.min(co - co0);
        let oy0 = rb * t.rows;
        let r_n = t.rows.min(ho - oy0);
        let start = (oy0 * sh) as i64 - spec.pad[0] as i64;
        let end = ((oy0 + r_n - 1) * sh + (kh - 1) * dh + 1) as i64 - spec.pad[0] as i64;
        let a = start.max(0) as u64;
        let b = (end.min(h as i64) as u64).max(a + 1).min(h);
        let a = a.min(b - 1);
        let pad_top = (a as i64 - start) as u64;
        let ci0 = if d.groups == 1 { 0 } else { co0 / d.out_per_group * d.in_per_group };
        let ci_n = d.in_channels(co_n);
        let rows = b - a;
        let src = self.ddr((s * c + ci0) * h * w + a * w, plan.xb, &[ci_n, rows, w], &[h * w, w, 1]);
        let input = self.vtcm_as(p.inputs[slot], src.dtype, &[ci_n, rows, w]);
        ops.push(Op::DmaIn { dst: input, src, multicast: 0, peer_bytes: 0 });
        let out_dtype = self.dtype_at(plan.yb);
        let out = self.vtcm_as(p.outputs[slot], out_dtype, &[co_n, r_n, wo]);
        let out_at = (s * co + co0) * ho * wo + oy0 * wo;
        let res = spec.residual.zip(p.residuals).map(|(rv, rbuf)| {
            let t = self.vtcm(rbuf[slot], &[co_n, r_n, wo]);
            let src = self.ddr(out_at, self.value_base(rv), &[co_n, r_n, wo], &[ho * wo, wo, 1]);
            ops.push(Op::DmaIn { dst: t, src, multicast: 0, peer_bytes: 0 });
            t
        });
        let geometry = ConvGeometry {
            stride: [spec.stride[0] as u32, spec.stride[1] as u32],
            pad: [pad_top as u32, spec.pad[1] as u32],
            dilation: [spec.dilation[0] as u32, spec.dilation[1] as u32],
            groups: if d.groups == 1 { 1 } else { (co_n / d.out_per_group) as u32 },
        };
        let weight = self.vtcm_as(p.weights[wslot], self.dtype_at(plan.wb), &[co_n, cig, kh, kw]);
        let out_ddr = self.ddr(out_at, plan.yb, &[co_n, r_n, wo], &[ho * wo, wo, 1]);
        if let Some(accs) = p.accs {
            // int8: int32 sums of (input - its zero point) x weights, the int32 bias and
            // ReLU on the sums, then one requantising pass with each channel's multiplier.
            let acc = self.vtcm_as(accs[slot], DType::I32, &[co_n, r_n, wo]);
            let zero_point = self.quants.get(&plan.xb).map_or(0, |q| q.zero_point);
            ops.push(Op::Conv2d { dst: acc, input, weight, geometry, accumulate: false, zero_point });
            if spec.bias.is_some() {
                let bview = self.vtcm_as(p.biases[wslot], DType::I32, &[co_n, r_n, wo]).with_strides(&[1, 0, 0]);
                ops.push(Op::Binary { kind: BinaryKind::Add, dst: acc, a: acc, b: bview });
            }
            // ReLU before quantising to a range that starts at 0 (zero point -128) is
            // the saturation itself: max(round(x s) + zp, zp) = round(max(x, 0) s) + zp.
            let out_quant = self.quants.get(&plan.yb);
            let relu_is_saturation = out_quant.is_some_and(|q| q.zero_point == q.lowest());
            if let FusedActivation::Unary(kind) = spec.act {
                if !(relu_is_saturation && kind == UnaryKind::Relu) {
                    ops.push(Op::Unary { kind, dst: acc, src: acc });
                }
            }
            let multipliers = p.biases[wslot] + t.co_t * 4;
            let scales = self.vtcm_as(multipliers, DType::F32, &[co_n, r_n, wo]).with_strides(&[1, 0, 0]);
            let (scale, zero_point) = match out_quant {
                Some(q) => (1.0 / q.scale, q.zero_point),
                None => (1.0, 0),
            };
            ops.push(Op::Convert { dst: out, src: acc, scale, zero_point, scales: Some(scales) });
            ops.push(Op::DmaOut { dst: out_ddr, src: out });
            return;
        }
        ops.push(Op::Conv2d { dst: out, input, weight, geometry, accumulate: false, zero_point: 0 });
        if spec.bias.is_some() {
            let bview = self.vtcm(p.biases[wslot], &[co_n, r_n, wo]).with_strides(&[1, 0, 0]);
            ops.push(Op::Binary { kind: BinaryKind::Add, dst: out, a: out, b: bview });
        }
        if let Some(t) = res {
            ops.push(Op::Binary { kind: BinaryKind::Add, dst: out, a: out, b: t });
        }
        if let FusedActivation::Unary(kind) = spec.act {
            ops.push(Op::Unary { kind, dst: out, src: out });
        }
        ops.push(Op::DmaOut { dst: out_ddr, src: out });
    }
}
