//! The discrete-event scheduler: device time for every running program on every core,
//! together.
//!
//! Each core issues its instructions in program order; an instruction starts when its
//! engine has room ([`DMA_QUEUES`] DMA transfers, one HMX op, [`HVX_THREADS`] HVX threads), no instruction still
//! in flight on the core conflicts with it (read-after-write, write-after-read,
//! write-after-write on overlapping VTCM or DDR bytes), and no sync fence is pending.
//! Later instructions may start while earlier ones run: DMA of the next tile overlaps
//! compute on this one.
//!
//! DMA transfers are fluid: all DDR transfers in flight on the device share the
//! sustained DDR bandwidth equally, each also capped by its core's DMA rate, so programs
//! on different cores slow each other down. A multicast transfer reads DDR once.
//! Transfers to or from the on-chip pool take no DDR share (pool rate only).
//!
//! Functional effects happen when an instruction starts: the hazard rules guarantee its
//! inputs are final and nobody still reads what it overwrites. In timing mode DMA still
//! moves data; only the compute kernels are skipped; in estimate mode nothing moves.
//! Device time does not depend on the mode or on the data.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::isa::{Op, Space, Tensor, SYNC_COUNTERS};
use crate::memory::SharedMemory;
use crate::nsp::kernels::element_offsets;
use crate::nsp::{self, CostModel, Engine, NspCore, DMA_QUEUES, ENGINES, HVX_THREADS, OP_CLASSES};
use crate::parallel;

/// What a run does besides taking device time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecMode {
    /// Device time only: nothing moves, nothing is computed (outputs are left as they
    /// were). For cost searches, where only the timeline matters.
    Estimate,
    /// Cost model for compute; DMA still moves data.
    Timing,
    /// Real numerics as well.
    Functional,
}

/// Cycles, count and output bytes of one op class on one core.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ClassStats {
    pub cycles: u64,
    pub count: u64,
    pub out_bytes: u64,
    /// Sum over ops that write output of their cycles per KiB written (rounded).
    pub cycles_per_kib_sum: u64,
    /// Sum of the squares of the same, for its standard deviation.
    pub cycles_per_kib_sq_sum: u64,
}

impl ClassStats {
    /// Mean and standard deviation of cycles per KiB over the ops that wrote output.
    pub fn cycles_per_kib(&self) -> (f64, f64) {
        let writers = if self.out_bytes == 0 { 0 } else { self.count };
        if writers == 0 {
            return (0.0, 0.0);
        }
        let n = writers as f64;
        let mean = self.cycles_per_kib_sum as f64 / n;
        let var = (self.cycles_per_kib_sq_sum as f64 / n - mean * mean).max(0.0);
        (mean, libm::sqrt(var))
    }
}

/// What one core did during one program run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Physical core id.
    pub core: u32,
    /// Busy cycles per [`Engine`] (HVX: summed over threads).
    pub busy: [u64; ENGINES],
    /// Cycles with nothing in flight while the core had not finished (waiting on
    /// another core, or on a hazard).
    pub stall_cycles: u64,
    /// Per [`nsp::OpClass`].
    pub classes: [ClassStats; OP_CLASSES],
    /// Instructions executed.
    pub instructions: u64,
}

/// One program run, timed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub start_cycle: u64,
    pub end_cycle: u64,
    pub cores: Vec<CoreStats>,
    /// Bytes this run read from or wrote to DDR.
    pub ddr_bytes: u64,
    /// Every instruction's interval, when tracing is on ([`Scheduler::set_tracing`]).
    pub trace: Vec<TraceEvent>,
}

/// One instruction's execution, for a timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// Index of the core within the program.
    pub core: u32,
    pub engine: Engine,
    pub class: nsp::OpClass,
    /// Instruction index in the core's stream.
    pub index: u32,
    pub start_cycle: u64,
    pub end_cycle: u64,
}

impl RunStats {
    pub fn cycles(&self) -> u64 {
        self.end_cycle - self.start_cycle
    }
}

/// Why a program run failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExecFault {
    #[error("core {core} instruction {index} faulted")]
    Instruction { core: u32, index: usize },
    #[error("cores deadlocked waiting on each other")]
    Deadlock,
}

/// Identifies a started run.
pub type JobId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Region {
    Vtcm(u32),
    Ddr,
}

#[derive(Clone, Copy, Debug)]
struct Range {
    region: Region,
    start: u64,
    end: u64,
}

impl Range {
    fn of(t: &Tensor, core: u32) -> Range {
        let region = if t.space == Space::Vtcm { Region::Vtcm(core) } else { Region::Ddr };
        Range { region, start: t.offset, end: t.offset + t.span_bytes().unwrap_or(0) }
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.region == other.region && self.start < other.end && other.start < self.end
    }
}

#[derive(Clone, Debug, Default)]
struct Access {
    reads: [Option<Range>; 3],
    write: Option<Range>,
}

impl Access {
    fn of(op: &Op, core: u32) -> Access {
        let r = |t: &Tensor| Some(Range::of(t, core));
        match op {
            Op::DmaIn { dst, src, .. } | Op::DmaOut { dst, src } => {
                Access { reads: [r(src), None, None], write: r(dst) }
            }
            Op::MatMul { dst, a, b, accumulate } => {
                Access { reads: [r(a), r(b), if *accumulate { r(dst) } else { None }], write: r(dst) }
            }
            Op::Conv2d { dst, input, weight, accumulate, .. } => {
                Access { reads: [r(input), r(weight), if *accumulate { r(dst) } else { None }], write: r(dst) }
            }
            Op::Binary { dst, a, b, .. } => Access { reads: [r(a), r(b), None], write: r(dst) },
            Op::Unary { dst, src, .. }
            | Op::Convert { dst, src, .. }
            | Op::Pool { dst, src, .. }
            | Op::GlobalAvgPool { dst, src }
            | Op::Softmax { dst, src }
            | Op::LayerNorm { dst, src, .. }
            | Op::Reduce { dst, src, .. } => Access { reads: [r(src), None, None], write: r(dst) },
            Op::End | Op::Signal { .. } | Op::Wait { .. } | Op::Barrier => Access::default(),
        }
    }

    fn conflicts(&self, other: &Access) -> bool {
        let hits = |w: &Option<Range>, list: &[Option<Range>]| {
            w.as_ref().is_some_and(|w| list.iter().flatten().any(|x| x.overlaps(w)))
        };
        hits(&self.write, &other.reads) || hits(&other.write, &self.reads) || hits(&self.write, &[other.write])
    }
}

struct InFlight {
    op: usize,
    engine: Engine,
    start: u64,
    /// Fixed end; `None` for a DMA transfer still moving bytes.
    end: Option<u64>,
    access: Access,
    /// Sync ops fence everything after them until they complete.
    fence: bool,
}

struct CoreRun {
    core: u32,
    pc: usize,
    in_flight: Vec<InFlight>,
    ended: bool,
    at_barrier: bool,
    stats: CoreStats,
}

struct Job {
    id: JobId,
    streams: Arc<Vec<Vec<Op>>>,
    cores: Vec<CoreRun>,
    /// Region offset of the activation's DDR.
    ddr_base: u64,
    counters: [u32; SYNC_COUNTERS as usize],
    start: u64,
    ddr_bytes: u64,
    fault: Option<ExecFault>,
    trace: Vec<TraceEvent>,
    traced: bool,
}

enum Advanced {
    Moved,
    AtLimit,
    Stuck,
}

struct Transfer {
    job: JobId,
    core: usize,
    op: usize,
    /// Setup ends here; only then does the transfer take a share of DDR bandwidth.
    ready_at: u64,
    remaining: f64,
    path: Path,
    /// Pool transfers: this part's share of the pool rate (the parts of one DMA together
    /// move at most at the pool rate).
    pool_rate: f64,
}

/// What a transfer's bytes move over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// DDR: an equal share of the device's DDR bandwidth, capped by the core's DMA rate.
    Ddr,
    /// Pool bytes this core holds: a copy within its VTCM, at the pool rate.
    Local,
    /// Pool bytes other cores hold: an equal share of the on-chip network, capped by
    /// the pool rate.
    Noc,
}

/// The device-wide scheduler.
pub struct Scheduler {
    cost: CostModel,
    ddr_bytes_per_cycle: f64,
    noc_bytes_per_cycle: f64,
    now: u64,
    jobs: Vec<Job>,
    transfers: Vec<Transfer>,
    next_id: JobId,
    /// Instructions issued since creation (for simulation-speed figures).
    pub instructions: u64,
    tracing: bool,
    /// Reused by `advance` for the transfers that finish at an event.
    finished_scratch: Vec<(JobId, usize, usize)>,
}

impl Scheduler {
    pub fn new(cost: CostModel, clock_hz: u64) -> Scheduler {
        Scheduler {
            cost,
            ddr_bytes_per_cycle: cost.ddr_bytes_per_cycle(clock_hz),
            noc_bytes_per_cycle: cost.noc_bytes_per_second as f64 / clock_hz.max(1) as f64,
            now: 0,
            jobs: Vec::new(),
            transfers: Vec::new(),
            next_id: 1,
            instructions: 0,
            tracing: false,
            finished_scratch: Vec::new(),
        }
    }

    /// Records every instruction's interval in the [`RunStats`] of runs started from now.
    pub fn set_tracing(&mut self, on: bool) {
        self.tracing = on;
    }

    /// Current device time in cycles.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Whether no program is running.
    pub fn is_idle(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Starts a program at the current device time on physical `cores` (one per
    /// stream); `ddr_base` is the region offset of its DDR.
    pub fn start(&mut self, streams: Arc<Vec<Vec<Op>>>, cores: &[u32], ddr_base: u64) -> JobId {
        self.start_traced(streams, cores, ddr_base, false)
    }

    /// [`Scheduler::start`], recording this run's trace even if tracing is off.
    pub fn start_traced(&mut self, streams: Arc<Vec<Vec<Op>>>, cores: &[u32], ddr_base: u64, trace: bool) -> JobId {
        let id = self.next_id;
        self.next_id += 1;
        let cores = cores
            .iter()
            .map(|&core| CoreRun {
                core,
                pc: 0,
                in_flight: Vec::new(),
                ended: false,
                at_barrier: false,
                stats: CoreStats { core, ..Default::default() },
            })
            .collect();
        self.jobs.push(Job {
            id,
            streams,
            cores,
            ddr_base,
            counters: [0; SYNC_COUNTERS as usize],
            start: self.now,
            ddr_bytes: 0,
            fault: None,
            trace: Vec::new(),
            traced: trace || self.tracing,
        });
        id
    }

    /// Advances device time until at least one program finishes (or none is running)
    /// and returns the finished ones.
    pub fn run_until_completion<M: SharedMemory>(
        &mut self,
        nsps: &mut [Option<NspCore>],
        vtcm_bytes: u64,
        mem: &M,
        mode: ExecMode,
    ) -> Vec<(JobId, Result<RunStats, ExecFault>)> {
        self.run_until(nsps, vtcm_bytes, mem, mode, u64::MAX)
    }

    /// Lets idle device time pass up to `cycle` (no program is running, so nothing
    /// happens in between). Ignored while programs run or for a time in the past.
    pub fn idle_until(&mut self, cycle: u64) {
        if self.jobs.is_empty() && cycle > self.now {
            self.now = cycle;
        }
    }

    /// Like [`Scheduler::run_until_completion`], but device time never passes `limit`
    /// (paced mode: the device may not run ahead of the wall clock). Returns what
    /// finished by then, possibly nothing.
    pub fn run_until<M: SharedMemory>(
        &mut self,
        nsps: &mut [Option<NspCore>],
        vtcm_bytes: u64,
        mem: &M,
        mode: ExecMode,
        limit: u64,
    ) -> Vec<(JobId, Result<RunStats, ExecFault>)> {
        let mut done = Vec::new();
        while !self.jobs.is_empty() {
            for j in 0..self.jobs.len() {
                self.issue(j, nsps, vtcm_bytes, mem, mode);
            }
            let mut j = 0;
            while j < self.jobs.len() {
                let job = &self.jobs[j];
                if job.fault.is_some() || job.cores.iter().all(|c| c.ended) {
                    let job = self.jobs.remove(j);
                    self.transfers.retain(|t| t.job != job.id);
                    done.push((job.id, self.finish(job)));
                } else {
                    j += 1;
                }
            }
            if !done.is_empty() {
                break;
            }
            match self.advance(limit) {
                Advanced::Moved => {}
                Advanced::AtLimit => break,
                Advanced::Stuck => {
                    // Nothing in flight and nothing can issue: every core waits on another.
                    for job in self.jobs.drain(..) {
                        done.push((job.id, Err(ExecFault::Deadlock)));
                    }
                    self.transfers.clear();
                }
            }
        }
        done
    }

    fn finish(&self, job: Job) -> Result<RunStats, ExecFault> {
        if let Some(f) = job.fault {
            return Err(f);
        }
        Ok(RunStats {
            start_cycle: job.start,
            end_cycle: self.now,
            cores: job.cores.into_iter().map(|c| c.stats).collect(),
            ddr_bytes: job.ddr_bytes,
            trace: job.trace,
        })
    }

    /// Bytes per cycle each moving DDR transfer gets: an equal share of DDR, capped by
    /// the core's DMA rate.
    fn ddr_share(&self) -> f64 {
        (self.ddr_bytes_per_cycle / self.moving(Path::Ddr)).min(self.cost.dma_bytes_per_cycle as f64)
    }

    /// Bytes per cycle each moving transfer from other cores' VTCM gets: an equal share
    /// of the on-chip network (each also capped by its part of the pool rate).
    fn noc_share(&self) -> f64 {
        self.noc_bytes_per_cycle / self.moving(Path::Noc)
    }

    /// Transfers past their setup on `path` (at least 1, to divide by).
    fn moving(&self, path: Path) -> f64 {
        self.transfers.iter().filter(|t| t.ready_at <= self.now && t.path == path).count().max(1) as f64
    }

    /// Removes a running program (its activation went away).
    pub fn cancel(&mut self, id: JobId) {
        self.jobs.retain(|j| j.id != id);
        self.transfers.retain(|t| t.job != id);
    }

    /// Moves time to the next completion (or to `limit`, if that comes first) and
    /// retires what completes.
    fn advance(&mut self, limit: u64) -> Advanced {
        let (share, noc) = (self.ddr_share(), self.noc_share());
        let rate = |t: &Transfer| match t.path {
            Path::Ddr => share,
            Path::Local => t.pool_rate,
            Path::Noc => noc.min(t.pool_rate),
        };
        let mut next = u64::MAX;
        for t in &self.transfers {
            next = next.min(if t.ready_at > self.now {
                t.ready_at
            } else {
                self.now + libm::ceil(t.remaining / rate(t)).max(1.0) as u64
            });
        }
        for job in &self.jobs {
            for c in &job.cores {
                for f in &c.in_flight {
                    if let Some(end) = f.end {
                        next = next.min(end);
                    }
                }
            }
        }
        if next == u64::MAX {
            return Advanced::Stuck;
        }
        let at_limit = next > limit;
        let next = next.min(limit.max(self.now));
        let dt = next - self.now;
        for t in self.transfers.iter_mut().filter(|t| t.ready_at <= self.now) {
            t.remaining -= rate(t) * dt as f64;
        }
        for job in &mut self.jobs {
            for c in &mut job.cores {
                if !c.ended && c.in_flight.is_empty() {
                    c.stats.stall_cycles += dt;
                }
            }
        }
        self.now = next;
        let done = |t: &Transfer| t.ready_at <= self.now && t.remaining <= 1e-6;
        let mut finished = core::mem::take(&mut self.finished_scratch);
        finished.clear();
        finished.extend(self.transfers.iter().filter(|t| done(t)).map(|t| (t.job, t.core, t.op)));
        self.transfers.retain(|t| !done(t));
        for job in &mut self.jobs {
            for (c, core) in job.cores.iter_mut().enumerate() {
                let now = self.now;
                let mut i = 0;
                while i < core.in_flight.len() {
                    let f = &core.in_flight[i];
                    let complete = match f.end {
                        Some(end) => end <= now,
                        // A pool read held partly by other cores is two transfers.
                        None => {
                            finished.contains(&(job.id, c, f.op))
                                && !self.transfers.iter().any(|t| t.job == job.id && t.core == c && t.op == f.op)
                        }
                    };
                    if complete {
                        let f = core.in_flight.swap_remove(i);
                        let op = &job.streams[c][f.op];
                        let took = now - f.start;
                        if job.traced {
                            job.trace.push(TraceEvent {
                                core: c as u32,
                                engine: f.engine,
                                class: nsp::op_class(op),
                                index: f.op as u32,
                                start_cycle: f.start,
                                end_cycle: now,
                            });
                        }
                        core.stats.busy[f.engine as usize] += took;
                        let class = &mut core.stats.classes[nsp::op_class(op) as usize];
                        class.cycles += took;
                        class.count += 1;
                        let out = nsp::output_bytes(op);
                        class.out_bytes += out;
                        if let Some(per_kib) = (took * 1024 + out / 2).checked_div(out) {
                            class.cycles_per_kib_sum += per_kib;
                            class.cycles_per_kib_sq_sum =
                                class.cycles_per_kib_sq_sum.saturating_add(per_kib.saturating_mul(per_kib));
                        }
                        if let Op::Signal { counter, value } = *op {
                            job.counters[counter as usize] += u32::from(value);
                        }
                    } else {
                        i += 1;
                    }
                }
            }
        }
        self.finished_scratch = finished;
        if at_limit {
            Advanced::AtLimit
        } else {
            Advanced::Moved
        }
    }

    /// Issues every instruction of job `j` that can start now.
    fn issue<M: SharedMemory>(
        &mut self,
        j: usize,
        nsps: &mut [Option<NspCore>],
        vtcm_bytes: u64,
        mem: &M,
        mode: ExecMode,
    ) {
        let now = self.now;
        let cost = self.cost;
        // One reference count for the whole pass, not one per instruction.
        let streams = self.jobs[j].streams.clone();
        loop {
            let mut progressed = false;
            for (c, stream) in streams.iter().enumerate() {
                while self.try_issue_one(j, c, stream, now, &cost, nsps, vtcm_bytes, mem, mode) {
                    progressed = true;
                }
            }
            // A barrier completes when every core has arrived.
            let job = &mut self.jobs[j];
            let active = job.cores.iter().filter(|c| !c.ended).count();
            if active > 0 && job.cores.iter().filter(|c| c.at_barrier).count() == active {
                for core in job.cores.iter_mut().filter(|c| c.at_barrier) {
                    core.at_barrier = false;
                    core.in_flight.push(InFlight {
                        op: core.pc,
                        engine: Engine::Sync,
                        start: now,
                        end: Some(now + cost.sync_latency_cycles),
                        access: Access::default(),
                        fence: true,
                    });
                    core.pc += 1;
                    core.stats.instructions += 1;
                    self.instructions += 1;
                }
                progressed = true;
            }
            if !progressed || self.jobs[j].fault.is_some() {
                return;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn try_issue_one<M: SharedMemory>(
        &mut self,
        j: usize,
        c: usize,
        stream: &[Op],
        now: u64,
        cost: &CostModel,
        nsps: &mut [Option<NspCore>],
        vtcm_bytes: u64,
        mem: &M,
        mode: ExecMode,
    ) -> bool {
        let job = &mut self.jobs[j];
        if job.fault.is_some() {
            return false;
        }
        let core = &mut job.cores[c];
        if core.ended || core.at_barrier || core.in_flight.iter().any(|f| f.fence) {
            return false;
        }
        let Some(op) = stream.get(core.pc) else {
            job.fault = Some(ExecFault::Instruction { core: core.core, index: core.pc });
            return false;
        };
        let engine = nsp::engine(op);
        match *op {
            Op::End => {
                if core.in_flight.is_empty() {
                    core.ended = true;
                    core.stats.instructions += 1;
                }
                return false;
            }
            Op::Barrier => {
                if core.in_flight.is_empty() {
                    core.at_barrier = true;
                }
                return false;
            }
            Op::Signal { .. } => {
                if !core.in_flight.is_empty() {
                    return false;
                }
            }
            Op::Wait { counter, value } => {
                let have = &mut job.counters[counter as usize];
                if *have < u32::from(value) {
                    return false;
                }
                *have -= u32::from(value);
            }
            _ => {
                let busy = core.in_flight.iter().filter(|f| f.engine == engine).count() as u32;
                let room = match engine {
                    Engine::Hvx => HVX_THREADS,
                    Engine::Dma => DMA_QUEUES,
                    _ => 1,
                };
                if busy >= room {
                    return false;
                }
            }
        }
        let access = Access::of(op, core.core);
        if core.in_flight.iter().any(|f| f.access.conflicts(&access)) {
            return false;
        }
        let index = core.pc;
        let fault = ExecFault::Instruction { core: core.core, index };
        let fence = engine == Engine::Sync;
        // A DMA ends when its bytes have moved (see `Transfer`); the rest take fixed cycles.
        // (bytes, of which other cores hold, on chip)
        let (dma_bytes, peer, onchip) = match *op {
            Op::DmaIn { src, peer_bytes, .. } => {
                (Some(src.packed_bytes()), u64::from(peer_bytes), src.space == Space::Pool)
            }
            Op::DmaOut { dst, .. } => (Some(dst.packed_bytes()), 0, dst.space == Space::Pool),
            _ => (None, 0, false),
        };
        let end = if dma_bytes.is_some() { None } else { Some(now + cost.cycles(op)) };
        core.in_flight.push(InFlight { op: index, engine, start: now, end, access, fence });
        core.pc += 1;
        core.stats.instructions += 1;
        self.instructions += 1;
        if let Some(bytes) = dma_bytes {
            if !onchip {
                job.ddr_bytes += bytes;
            }
            // A pool read partly held by other cores is two transfers sharing the pool
            // rate in proportion to their bytes.
            let pool = cost.pool_bytes_per_cycle.max(1) as f64;
            let (id, ready_at) = (job.id, now + cost.dma_setup_cycles);
            let mut push = |part: u64, path: Path| {
                let pool_rate = if part == bytes { pool } else { pool * part as f64 / bytes as f64 };
                let remaining = part as f64;
                self.transfers.push(Transfer { job: id, core: c, op: index, ready_at, remaining, path, pool_rate });
            };
            match (onchip, peer.min(bytes)) {
                (false, _) => push(bytes, Path::Ddr),
                (true, 0) => push(bytes, Path::Local),
                (true, peer) if peer == bytes => push(bytes, Path::Noc),
                (true, peer) => {
                    push(bytes - peer, Path::Local);
                    push(peer, Path::Noc);
                }
            }
        }
        let (ddr_base, phys) = (job.ddr_base, core.core);
        let ok = match *op {
            _ if mode == ExecMode::Estimate => Some(()),
            Op::DmaIn { dst, src, multicast, .. } => {
                // Only a multicast needs a list of receiving cores.
                let single = [phys];
                let multi: Vec<u32>;
                let targets: &[u32] = if multicast == 0 {
                    &single
                } else {
                    multi = core::iter::once(phys)
                        .chain(
                            (0..64)
                                .filter(|b| multicast >> b & 1 == 1 && *b != c)
                                .filter_map(|b| job.cores.get(b).map(|r| r.core)),
                        )
                        .collect();
                    &multi
                };
                dma_in(mem, ddr_base, &src, &dst, targets, nsps, vtcm_bytes)
            }
            Op::DmaOut { dst, src } => {
                let nsp = nsps.get_mut(phys as usize).map(|n| n.get_or_insert_with(|| NspCore::new(vtcm_bytes)));
                nsp.and_then(|n| dma_out(mem, ddr_base, &src, &dst, n.vtcm()))
            }
            _ if mode == ExecMode::Functional => {
                let nsp = nsps.get_mut(phys as usize).map(|n| n.get_or_insert_with(|| NspCore::new(vtcm_bytes)));
                nsp.and_then(|n| nsp::kernels::compute(n.vtcm_mut(), op))
            }
            _ => Some(()),
        };
        if ok.is_none() {
            self.jobs[j].fault = Some(fault);
            return false;
        }
        true
    }
}

fn vtcm_range(t: &Tensor) -> Option<core::ops::Range<usize>> {
    let start = usize::try_from(t.offset).ok()?;
    Some(start..start.checked_add(usize::try_from(t.packed_bytes()).ok()?)?)
}

/// The tensor's bytes in logical order as runs of contiguous trailing dimensions (a
/// whole tile row, plane or tensor at once): the byte offset of every run, and the
/// length they all have.
fn runs(t: &Tensor) -> Option<(Vec<u64>, usize)> {
    if t.elements() == 0 {
        return Some((Vec::new(), 0));
    }
    let rank = t.rank as usize;
    let mut outer = *t;
    let mut run = 1u64;
    for d in (0..rank).rev() {
        if t.shape[d] != 1 && u64::from(t.strides[d]) != run {
            break;
        }
        run *= u64::from(t.shape[d]);
        outer.shape[d] = 1;
    }
    let len = usize::try_from(run * t.dtype.bytes()).ok()?;
    Some((element_offsets(&outer).collect(), len))
}

/// Transfers at least this long are spread over the helper thread when the memory
/// allows it ([`SharedMemory::concurrent`]), in pieces of [`COPY_PIECE`] bytes.
const PARALLEL_COPY: usize = 64 << 10;
const COPY_PIECE: usize = 16 << 10;

/// Calls `f(byte offset, part)` for the parts of the packed byte range `range` of a
/// tensor whose runs start at `offsets` and are `len` bytes long: where each part lies
/// in the tensor, and where in the packed bytes.
fn segments(
    offsets: &[u64],
    len: usize,
    range: core::ops::Range<usize>,
    mut f: impl FnMut(u64, core::ops::Range<usize>) -> Option<()>,
) -> Option<()> {
    let mut at = range.start;
    while at < range.end {
        let (run, within) = (at / len, at % len);
        let n = (len - within).min(range.end - at);
        f(offsets.get(run)? + within as u64, at..at + n)?;
        at += n;
    }
    Some(())
}

/// Runs `pieces`, which hands every piece's outcome to `report` (from either thread):
/// `Some` if none failed.
fn unless_a_piece_fails(pieces: impl FnOnce(&(dyn Fn(Option<()>) + Sync))) -> Option<()> {
    let failed = AtomicBool::new(false);
    pieces(&|outcome| {
        if outcome.is_none() {
            failed.store(true, Ordering::Relaxed);
        }
    });
    (!failed.into_inner()).then_some(())
}

/// The DDR tensor `src` (at `ddr_base`) -> its packed bytes `into`.
fn read_ddr<M: SharedMemory>(mem: &M, ddr_base: u64, src: &Tensor, into: &mut [u8]) -> Option<()> {
    let (offsets, len) = runs(src)?;
    if into.len() != offsets.len() * len {
        return None;
    }
    match mem.concurrent() {
        Some(m) if into.len() >= PARALLEL_COPY => unless_a_piece_fails(|report| {
            parallel::for_each_chunk_mut(into, COPY_PIECE, &|i, part| {
                let start = i * COPY_PIECE;
                report(segments(&offsets, len, start..start + part.len(), |at, r| {
                    m.read(ddr_base + at, part.get_mut(r.start - start..r.end - start)?).ok()
                }))
            })
        }),
        _ => segments(&offsets, len, 0..into.len(), |at, r| mem.read(ddr_base + at, into.get_mut(r)?).ok()),
    }
}

/// Packed bytes `from` -> the DDR tensor `dst` (at `ddr_base`).
fn write_ddr<M: SharedMemory>(mem: &M, ddr_base: u64, dst: &Tensor, from: &[u8]) -> Option<()> {
    let (offsets, len) = runs(dst)?;
    if from.len() != offsets.len() * len {
        return None;
    }
    match mem.concurrent() {
        Some(m) if from.len() >= PARALLEL_COPY => unless_a_piece_fails(|report| {
            parallel::for_each(from.len().div_ceil(COPY_PIECE), &|i| {
                let piece = i * COPY_PIECE..((i + 1) * COPY_PIECE).min(from.len());
                report(segments(&offsets, len, piece, |at, r| m.write(ddr_base + at, from.get(r)?).ok()))
            })
        }),
        _ => segments(&offsets, len, 0..from.len(), |at, r| mem.write(ddr_base + at, from.get(r)?).ok()),
    }
}

/// DDR -> VTCM of every target core; DDR is read once.
fn dma_in<M: SharedMemory>(
    mem: &M,
    ddr_base: u64,
    src: &Tensor,
    dst: &Tensor,
    targets: &[u32],
    nsps: &mut [Option<NspCore>],
    vtcm_bytes: u64,
) -> Option<()> {
    if let [core] = targets {
        if dst.is_contiguous() {
            // Straight into VTCM.
            let vtcm = nsps.get_mut(*core as usize)?.get_or_insert_with(|| NspCore::new(vtcm_bytes)).vtcm_mut();
            return read_ddr(mem, ddr_base, src, vtcm.get_mut(vtcm_range(dst)?)?);
        }
    }
    let mut packed = vec![0u8; usize::try_from(src.packed_bytes()).ok()?];
    read_ddr(mem, ddr_base, src, &mut packed)?;
    let (offsets, len) = runs(dst)?;
    for &core in targets {
        let vtcm = nsps.get_mut(core as usize)?.get_or_insert_with(|| NspCore::new(vtcm_bytes)).vtcm_mut();
        segments(&offsets, len, 0..packed.len(), |at, r| {
            let at = usize::try_from(at).ok()?;
            vtcm.get_mut(at..at.checked_add(r.len())?)?.copy_from_slice(packed.get(r)?);
            Some(())
        })?;
    }
    Some(())
}

/// VTCM -> DDR.
fn dma_out<M: SharedMemory>(mem: &M, ddr_base: u64, src: &Tensor, dst: &Tensor, vtcm: &[u8]) -> Option<()> {
    if src.is_contiguous() {
        // Straight from VTCM.
        return write_ddr(mem, ddr_base, dst, vtcm.get(vtcm_range(src)?)?);
    }
    let (offsets, len) = runs(src)?;
    let mut packed = vec![0u8; usize::try_from(src.packed_bytes()).ok()?];
    segments(&offsets, len, 0..packed.len(), |at, r| {
        let at = usize::try_from(at).ok()?;
        packed.get_mut(r.clone())?.copy_from_slice(vtcm.get(at..at.checked_add(r.len())?)?);
        Some(())
    })?;
    write_ddr(mem, ddr_base, dst, &packed)
}
