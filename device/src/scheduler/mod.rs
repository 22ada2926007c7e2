//! The discrete-event scheduler: device time for every running program on every core,
//! together.
//!
//! Each core issues its instructions in program order; an instruction starts when its
//! engine has room ([`DMA_QUEUES`] DMA transfers, one HMX op, [`HVX_THREADS`] HVX
//! threads), no instruction still in flight on the core conflicts with it
//! (read-after-write, write-after-read, write-after-write on overlapping VTCM or DDR
//! bytes), and no sync fence is pending. Later instructions may start while earlier ones
//! run: DMA of the next tile overlaps compute on this one.
//!
//! DMA transfers are fluid: all DDR transfers in flight on the device share the
//! sustained DDR bandwidth equally, each also capped by its core's DMA rate, so programs
//! on different cores slow each other down. A multicast transfer reads DDR once.
//! Transfers to or from the on-chip pool take no DDR share: the bytes the reading core
//! holds move at the pool rate, the bytes other cores hold share the on-chip network.
//!
//! The loop is event driven: an instruction with a fixed cost waits in a heap of end
//! times, the few DMA transfers in flight are stepped together, and only the cores an
//! event touched (an instruction of theirs ended, a counter they wait on moved) try to
//! issue again. Everything an instruction's timing needs is worked out once per program
//! ([`Plan`]).
//!
//! In a functional run, an instruction's effect on memory happens when it starts: the
//! hazard rules guarantee its inputs are final and nobody still reads what it
//! overwrites. A timing run moves and computes nothing inside the device (the firmware
//! still moves what the host sends and receives). Device time does not depend on the
//! mode or on the data.

mod data;
mod fluid;
mod plan;

use alloc::collections::BinaryHeap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cmp::Reverse;

use crate::isa::SYNC_COUNTERS;
use crate::memory::SharedMemory;
use crate::nsp::{self, CostModel, Engine, NspCore, DMA_QUEUES, ENGINES, HVX_THREADS, OP_CLASSES};

use fluid::{CappedShare, EqualShare, Owner};
pub use plan::Plan;
use plan::Action;

/// What a run does besides taking device time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecMode {
    /// Device time only: nothing inside the device moves or is computed.
    Timing,
    /// Real numerics: DMA moves the bytes and the kernels compute.
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

/// One instruction in flight on a core.
struct InFlight {
    op: u32,
    engine: Engine,
    start: u64,
    /// DMA transfers of this instruction still moving (a pool read held partly by other
    /// cores moves as two); 0 for an instruction with a fixed end.
    parts: u8,
}

struct CoreRun {
    pc: usize,
    in_flight: Vec<InFlight>,
    /// Instructions in flight per [`Engine`].
    engine_busy: [u32; ENGINES],
    /// Sync instructions in flight: nothing after them issues until they end.
    fences: u32,
    ended: bool,
    at_barrier: bool,
    /// Since when nothing has been in flight (the core waits on another, or has not
    /// started); `None` while busy or ended.
    empty_since: Option<u64>,
    /// Something changed that may let the core issue again.
    dirty: bool,
    stats: CoreStats,
}

struct Job {
    id: JobId,
    plan: Arc<Plan>,
    /// Physical core of each stream.
    phys: Vec<u32>,
    cores: Vec<CoreRun>,
    /// Region offset of the activation's DDR.
    ddr_base: u64,
    counters: [u32; SYNC_COUNTERS as usize],
    start: u64,
    ddr_bytes: u64,
    fault: Option<ExecFault>,
    trace: Vec<TraceEvent>,
    traced: bool,
    ended: usize,
    /// Some core may be able to issue.
    dirty: bool,
    /// A core arrived at a barrier or ended: the barrier may be complete.
    barrier_check: bool,
}

impl Job {
    fn finished(&self) -> bool {
        self.fault.is_some() || self.ended == self.cores.len()
    }

    fn mark_dirty(&mut self, core: usize) {
        self.cores[core].dirty = true;
        self.dirty = true;
    }
}

enum Advanced {
    Moved,
    AtLimit,
    Stuck,
}

/// Something that happens at a known cycle to instruction `op` of core `core` of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Happening {
    /// A part of the instruction ends (its fixed cycles, or a copy inside the core's
    /// VTCM at the pool rate).
    Ends,
    /// A DMA's setup is over: its `bytes` start moving over DDR.
    DdrReady { bytes: u64 },
    /// A DMA's setup is over: `bytes` of its `of` bytes, held by other cores, start
    /// moving over the on-chip network.
    NocReady { bytes: u64, of: u64 },
}

/// (cycle, job, core, instruction, what): ordered so that ties happen in a fixed order.
type Event = (u64, JobId, u32, u32, Happening);

/// The device-wide scheduler.
pub struct Scheduler {
    cost: CostModel,
    ddr_bytes_per_cycle: f64,
    noc_bytes_per_cycle: f64,
    now: u64,
    jobs: Vec<Job>,
    events: BinaryHeap<Reverse<Event>>,
    ddr: EqualShare,
    noc: CappedShare,
    /// Reused for the transfers that end at one event.
    finished: Vec<Owner>,
    next_id: JobId,
    /// Instructions issued since creation (for simulation-speed figures).
    pub instructions: u64,
    tracing: bool,
}

/// Where a run's memory lives, for functional effects.
struct Memory<'a, M> {
    nsps: &'a mut [Option<NspCore>],
    vtcm_bytes: u64,
    mem: &'a M,
    mode: ExecMode,
}

impl Scheduler {
    pub fn new(cost: CostModel, clock_hz: u64) -> Scheduler {
        Scheduler {
            cost,
            ddr_bytes_per_cycle: cost.ddr_bytes_per_cycle(clock_hz),
            noc_bytes_per_cycle: cost.noc_bytes_per_second as f64 / clock_hz.max(1) as f64,
            now: 0,
            jobs: Vec::new(),
            events: BinaryHeap::new(),
            ddr: EqualShare::default(),
            noc: CappedShare::default(),
            finished: Vec::new(),
            next_id: 1,
            instructions: 0,
            tracing: false,
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
    pub fn start(&mut self, plan: Arc<Plan>, cores: &[u32], ddr_base: u64) -> JobId {
        self.start_traced(plan, cores, ddr_base, false)
    }

    /// [`Scheduler::start`], recording this run's trace even if tracing is off.
    pub fn start_traced(&mut self, plan: Arc<Plan>, cores: &[u32], ddr_base: u64, trace: bool) -> JobId {
        let id = self.next_id;
        self.next_id += 1;
        let now = self.now;
        let runs = cores
            .iter()
            .map(|&core| CoreRun {
                pc: 0,
                in_flight: Vec::new(),
                engine_busy: [0; ENGINES],
                fences: 0,
                ended: false,
                at_barrier: false,
                empty_since: Some(now),
                dirty: true,
                stats: CoreStats { core, ..Default::default() },
            })
            .collect();
        self.jobs.push(Job {
            id,
            plan,
            phys: cores.to_vec(),
            cores: runs,
            ddr_base,
            counters: [0; SYNC_COUNTERS as usize],
            start: now,
            ddr_bytes: 0,
            fault: None,
            trace: Vec::new(),
            traced: trace || self.tracing,
            ended: 0,
            dirty: true,
            barrier_check: false,
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

    /// Like [`Scheduler::run_until_completion`], but device time never passes `limit`.
    /// Returns what finished by then, possibly nothing; with nothing running, device
    /// time does not move.
    pub fn run_until<M: SharedMemory>(
        &mut self,
        nsps: &mut [Option<NspCore>],
        vtcm_bytes: u64,
        mem: &M,
        mode: ExecMode,
        limit: u64,
    ) -> Vec<(JobId, Result<RunStats, ExecFault>)> {
        let mut memory = Memory { nsps, vtcm_bytes, mem, mode };
        let mut done = Vec::new();
        while !self.jobs.is_empty() {
            for j in 0..self.jobs.len() {
                if self.jobs[j].dirty || self.jobs[j].barrier_check {
                    self.issue(j, &mut memory);
                }
            }
            let mut j = 0;
            while j < self.jobs.len() {
                if self.jobs[j].finished() {
                    let job = self.jobs.remove(j);
                    self.forget(job.id);
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
                    self.events.clear();
                    self.ddr.clear();
                    self.noc.clear();
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

    /// Removes a running program (its activation went away).
    pub fn cancel(&mut self, id: JobId) {
        self.jobs.retain(|j| j.id != id);
        self.forget(id);
    }

    /// Drops the transfers of a job that is gone; its pending events are skipped when
    /// they come up.
    fn forget(&mut self, id: JobId) {
        self.ddr.remove_job(id);
        self.noc.remove_job(id);
    }

    fn job_index(&self, id: JobId) -> Option<usize> {
        self.jobs.iter().position(|j| j.id == id)
    }

    /// Bytes per cycle each DDR transfer moves now.
    fn ddr_rate(&self) -> f64 {
        self.ddr.rate(self.ddr_bytes_per_cycle, self.cost.dma_bytes_per_cycle as f64)
    }

    /// Moves time to the next event (or to `limit`, if that comes first) and retires
    /// what ends there.
    fn advance(&mut self, limit: u64) -> Advanced {
        // Events of programs that are gone (cancelled or faulted) do nothing.
        while let Some(&Reverse((_, id, ..))) = self.events.peek() {
            if self.job_index(id).is_some() {
                break;
            }
            self.events.pop();
        }
        let now = self.now;
        let ddr_rate = self.ddr_rate();
        let next = [
            self.events.peek().map(|e| e.0 .0),
            self.ddr.next_end(ddr_rate).map(|c| now + c),
            self.noc.next_end(self.noc_bytes_per_cycle).map(|c| now + c),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return Advanced::Stuck };
        let at_limit = next > limit;
        let next = next.min(limit.max(now));
        let cycles = next - now;
        let mut finished = core::mem::take(&mut self.finished);
        self.ddr.advance(cycles, ddr_rate, &mut finished);
        self.noc.advance(cycles, self.noc_bytes_per_cycle, &mut finished);
        self.now = next;
        for (id, core, op) in finished.drain(..) {
            self.part_done(id, core as usize, op);
        }
        self.finished = finished;
        while let Some(&Reverse((at, id, core, op, what))) = self.events.peek() {
            if at > next {
                break;
            }
            self.events.pop();
            let owner = (id, core, op);
            match what {
                Happening::Ends => self.part_done(id, core as usize, op),
                Happening::DdrReady { bytes } => self.ddr.start(owner, bytes),
                Happening::NocReady { bytes, of } => {
                    let pool = self.cost.pool_bytes_per_cycle.max(1) as f64;
                    self.noc.start(owner, bytes, pool * bytes as f64 / of as f64);
                }
            }
        }
        if at_limit {
            Advanced::AtLimit
        } else {
            Advanced::Moved
        }
    }

    /// One part of an instruction ended; the instruction ends with its last part.
    fn part_done(&mut self, id: JobId, core: usize, op: u32) {
        let Some(j) = self.job_index(id) else { return };
        let Some(f) = self.jobs[j].cores[core].in_flight.iter_mut().find(|f| f.op == op) else { return };
        f.parts -= 1;
        if f.parts == 0 {
            self.retire(j, core, op);
        }
    }

    /// Instruction `op` of core `core` of job `j` ends now: statistics, trace, counters.
    fn retire(&mut self, j: usize, core: usize, op: u32) {
        let now = self.now;
        let job = &mut self.jobs[j];
        let run = &mut job.cores[core];
        let Some(at) = run.in_flight.iter().position(|f| f.op == op) else { return };
        let f = run.in_flight.swap_remove(at);
        let Some(&step) = job.plan.step(core, op as usize) else { return };
        let took = now - f.start;
        if job.traced {
            job.trace.push(TraceEvent {
                core: core as u32,
                engine: f.engine,
                class: step.class,
                index: op,
                start_cycle: f.start,
                end_cycle: now,
            });
        }
        run.engine_busy[f.engine as usize] -= 1;
        if f.engine == Engine::Sync {
            run.fences -= 1;
        }
        if run.in_flight.is_empty() {
            run.empty_since = Some(now);
        }
        run.stats.busy[f.engine as usize] += took;
        let class = &mut run.stats.classes[step.class as usize];
        class.cycles += took;
        class.count += 1;
        class.out_bytes += step.out_bytes;
        if let Some(per_kib) = (took * 1024 + step.out_bytes / 2).checked_div(step.out_bytes) {
            class.cycles_per_kib_sum += per_kib;
            class.cycles_per_kib_sq_sum = class.cycles_per_kib_sq_sum.saturating_add(per_kib.saturating_mul(per_kib));
        }
        job.mark_dirty(core);
        if let Action::Signal { counter, value } = step.action {
            job.counters[counter as usize] += u32::from(value);
            for c in 0..job.cores.len() {
                job.mark_dirty(c);
            }
        }
    }

    /// Issues every instruction of job `j` that can start now: each core that may have
    /// become able to, in core order, then a barrier every active core has reached.
    fn issue<M: SharedMemory>(&mut self, j: usize, memory: &mut Memory<'_, M>) {
        self.jobs[j].dirty = false;
        for c in 0..self.jobs[j].cores.len() {
            if !core::mem::take(&mut self.jobs[j].cores[c].dirty) {
                continue;
            }
            while self.try_issue(j, c, memory) {}
        }
        if core::mem::take(&mut self.jobs[j].barrier_check) {
            self.release_barrier(j);
        }
    }

    /// A barrier completes when every core still running has arrived at it.
    fn release_barrier(&mut self, j: usize) {
        let now = self.now;
        let end = now + self.cost.sync_latency_cycles;
        let job = &mut self.jobs[j];
        let active = job.cores.len() - job.ended;
        if active == 0 || job.cores.iter().filter(|c| c.at_barrier).count() != active {
            return;
        }
        for (c, run) in job.cores.iter_mut().enumerate().filter(|(_, r)| r.at_barrier) {
            run.at_barrier = false;
            run.begin(now);
            run.in_flight.push(InFlight { op: run.pc as u32, engine: Engine::Sync, start: now, parts: 1 });
            run.engine_busy[Engine::Sync as usize] += 1;
            run.fences += 1;
            self.events.push(Reverse((end, job.id, c as u32, run.pc as u32, Happening::Ends)));
            run.pc += 1;
            run.stats.instructions += 1;
            self.instructions += 1;
        }
    }

    /// Issues the next instruction of core `c` of job `j` if it can start now.
    fn try_issue<M: SharedMemory>(&mut self, j: usize, c: usize, memory: &mut Memory<'_, M>) -> bool {
        let now = self.now;
        let job = &mut self.jobs[j];
        let run = &mut job.cores[c];
        if job.fault.is_some() || run.ended || run.at_barrier || run.fences > 0 {
            return false;
        }
        let index = run.pc;
        let Some(&step) = job.plan.step(c, index) else {
            job.fault = Some(ExecFault::Instruction { core: run.stats.core, index });
            return false;
        };
        match step.action {
            Action::End | Action::Barrier => {
                if run.in_flight.is_empty() {
                    if step.action == Action::End {
                        run.ended = true;
                        run.begin(now);
                        run.stats.instructions += 1;
                        job.ended += 1;
                    } else {
                        run.at_barrier = true;
                    }
                    job.barrier_check = true;
                }
                return false;
            }
            Action::Signal { .. } if !run.in_flight.is_empty() => return false,
            Action::Wait { counter, value } => {
                let have = &mut job.counters[counter as usize];
                if *have < u32::from(value) {
                    return false;
                }
                *have -= u32::from(value);
            }
            Action::Signal { .. } => {}
            Action::Compute | Action::Dma { .. } => {
                let room = match step.engine {
                    Engine::Hvx => HVX_THREADS,
                    Engine::Dma => DMA_QUEUES,
                    _ => 1,
                };
                if run.engine_busy[step.engine as usize] >= room {
                    return false;
                }
            }
        }
        let plan = &job.plan;
        if run.in_flight.iter().any(|f| plan.step(c, f.op as usize).is_some_and(|s| s.access.conflicts(&step.access))) {
            return false;
        }
        run.begin(now);
        run.in_flight.push(InFlight { op: index as u32, engine: step.engine, start: now, parts: 1 });
        run.engine_busy[step.engine as usize] += 1;
        if step.engine == Engine::Sync {
            run.fences += 1;
        }
        run.pc += 1;
        run.stats.instructions += 1;
        self.instructions += 1;
        let id = job.id;
        let op = &job.plan.streams()[c][index];
        match step.action {
            Action::Dma { bytes, peer, onchip } => {
                if !onchip {
                    job.ddr_bytes += bytes;
                }
                let parts = self.push_transfers(id, c, index, bytes, peer, onchip);
                if let Some(f) = self.jobs[j].cores[c].in_flight.last_mut() {
                    f.parts = parts;
                }
            }
            _ => {
                let end = now + self.cost.cycles(op);
                self.events.push(Reverse((end, id, c as u32, index as u32, Happening::Ends)));
            }
        }
        if memory.mode == ExecMode::Functional {
            let job = &mut self.jobs[j];
            let op = &job.plan.streams()[c][index];
            let (nsps, vtcm, mem) = (&mut *memory.nsps, memory.vtcm_bytes, memory.mem);
            if data::execute(op, c, &job.phys, job.ddr_base, nsps, vtcm, mem).is_none() {
                job.fault = Some(ExecFault::Instruction { core: job.phys[c], index });
                return false;
            }
        }
        true
    }

    /// Queues the transfers of one DMA; returns how many parts it moves in. Over DDR it
    /// is one; a pool read is a copy inside the core at the pool rate for the bytes the
    /// core holds and a transfer over the network for those other cores hold, the two
    /// sharing the pool rate in proportion to their bytes.
    fn push_transfers(&mut self, job: JobId, core: usize, op: usize, bytes: u64, peer: u64, onchip: bool) -> u8 {
        let ready_at = self.now + self.cost.dma_setup_cycles;
        let (core, op) = (core as u32, op as u32);
        let mut at = |when: u64, what: Happening| self.events.push(Reverse((when, job, core, op, what)));
        if !onchip {
            at(ready_at, Happening::DdrReady { bytes });
            return 1;
        }
        let peer = peer.min(bytes);
        let local = bytes - peer;
        let pool = self.cost.pool_bytes_per_cycle.max(1) as f64;
        let mut parts = 0;
        if local > 0 || peer == 0 {
            // At its share of the pool rate, a fixed time.
            let rate = pool * local.max(1) as f64 / bytes.max(1) as f64;
            at(ready_at + fluid::cycles_for(local as f64, rate), Happening::Ends);
            parts += 1;
        }
        if peer > 0 {
            at(ready_at, Happening::NocReady { bytes: peer, of: bytes });
            parts += 1;
        }
        parts
    }
}

impl CoreRun {
    /// Something starts on the core now: the time it sat with nothing in flight was a
    /// stall.
    fn begin(&mut self, now: u64) {
        if let Some(since) = self.empty_since.take() {
            self.stats.stall_cycles += now - since;
        }
    }
}
