//! The discrete-event scheduler: device time for every running program on every core,
//! together.
//!
//! Each core issues its instructions in program order; an instruction starts when its
//! engine has room ([`crate::nsp::DMA_QUEUES`] DMA transfers, one HMX op, [`crate::nsp::HVX_THREADS`] HVX
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
//! Every instruction's end is known when it starts, except a DMA's over DDR or the
//! network. So each core issues ahead of the device clock on its own (see `core_run`) until
//! its next instruction depends on such a transfer, a counter or a barrier; the
//! device-wide loop only orders what couples cores and programs: transfers starting and
//! ending on the shared paths, signals, counter checks, and programs ending. Everything
//! an instruction's timing needs is worked out once per program ([`Plan`]).
//!
//! In a functional run, an instruction's effect on memory happens when it starts: the
//! hazard rules guarantee its inputs are final and nobody still reads what it
//! overwrites. A timing run moves and computes nothing inside the device (the firmware
//! still moves what the host sends and receives). Device time does not depend on the
//! mode or on the data.

mod core_run;
mod data;
mod fluid;
mod plan;

use alloc::collections::BinaryHeap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cmp::Reverse;

use crate::nsp::{CostModel, Engine, NspCore};
use aicsim_abi::isa::SYNC_COUNTERS;
use aicsim_abi::memory::SharedMemory;

use core_run::{Blocked, CoreRun, InFlight, State};
use fluid::{CappedShare, EqualShare, Owner};
pub use plan::Plan;
use plan::{Action, Step};

/// What a run does besides taking device time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecMode {
    /// Device time only: nothing inside the device moves or is computed.
    Timing,
    /// Real numerics: DMA moves the bytes and the kernels compute.
    Functional,
}

pub use aicsim_abi::profile::{ClassStats, CoreStats, RunProfile, TraceEvent};

/// Counts one instruction of `step`'s kind that took `cycles`.
fn count_instruction(stats: &mut CoreStats, step: &Step, cycles: u64) {
    stats.busy[step.engine as usize] += cycles;
    let class = &mut stats.classes[step.class as usize];
    class.cycles += cycles;
    class.count += 1;
    class.out_bytes += step.out_bytes;
    if let Some(per_kib) = (cycles * 1024 + step.out_bytes / 2).checked_div(step.out_bytes) {
        class.cycles_per_kib_sum += per_kib;
        class.cycles_per_kib_sq_sum = class.cycles_per_kib_sq_sum.saturating_add(per_kib.saturating_mul(per_kib));
    }
}

/// Why a program run failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExecFault {
    /// `core` is the physical core, `stream` the program's core (its stream) whose
    /// instruction `index` faulted.
    #[error("core {core} instruction {index} faulted")]
    Instruction { core: u32, stream: u32, index: usize },
    #[error("cores deadlocked waiting on each other")]
    Deadlock,
}

/// Identifies a started run.
pub type JobId = u64;

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
    /// The plan's cycles were worked out with this scheduler's cost model.
    plan_cost: bool,
}

enum Advanced {
    Moved,
    AtLimit,
    Stuck,
}

/// Something that happens at a known cycle to instruction `op` of core `core` of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Happening {
    /// A DMA's setup is over: its bytes start moving over DDR.
    DdrReady,
    /// A DMA's setup is over: the bytes other cores hold start moving over the network.
    NocReady,
    /// A signal takes effect: its counter grows.
    Signalled,
    /// The core is at a Wait: its counter is checked in device-time order.
    WaitCheck,
    /// The core waits for a transfer to end, or for the clock to reach this moment.
    Recheck,
    /// The job's last core has ended, or it faulted.
    JobEnds,
}

/// (cycle, job, core, instruction and what, packed): ordered so that ties happen in a
/// fixed order, and cheap to compare.
type Event = (u64, JobId, u64);

const HAPPENINGS: [Happening; 6] = [
    Happening::DdrReady,
    Happening::NocReady,
    Happening::Signalled,
    Happening::WaitCheck,
    Happening::Recheck,
    Happening::JobEnds,
];

fn event(at: u64, job: JobId, core: u32, op: u32, what: Happening) -> Reverse<Event> {
    Reverse((at, job, u64::from(core) << 40 | u64::from(op) << 8 | what as u64))
}

/// The core, instruction and happening of an event's packed part.
fn unpack(rest: u64) -> (u32, u32, Happening) {
    ((rest >> 40) as u32, (rest >> 8) as u32, HAPPENINGS[(rest & 0xFF) as usize % HAPPENINGS.len()])
}

/// Slots for jobs; a job's id carries its slot in the low bits.
const SLOT_BITS: u32 = 16;

/// The device-wide scheduler.
pub struct Scheduler {
    cost: CostModel,
    ddr_bytes_per_cycle: f64,
    noc_bytes_per_cycle: f64,
    now: u64,
    jobs: Vec<Option<Job>>,
    running: usize,
    events: BinaryHeap<Reverse<Event>>,
    ddr: EqualShare,
    noc: CappedShare,
    /// Cores that may issue now: (slot, core), run in this order.
    runnable: Vec<(usize, usize)>,
    /// Jobs that ended at the current cycle.
    ended: Vec<(JobId, Result<RunProfile, ExecFault>)>,
    /// Reused for the transfers that end at one event.
    finished: Vec<Owner>,
    next_serial: u64,
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
        let noc_bytes_per_cycle = cost.noc_bytes_per_second as f64 / clock_hz.max(1) as f64;
        Scheduler {
            cost,
            ddr_bytes_per_cycle: cost.ddr_bytes_per_cycle(clock_hz),
            noc_bytes_per_cycle,
            now: 0,
            jobs: Vec::new(),
            running: 0,
            events: BinaryHeap::new(),
            ddr: EqualShare::default(),
            noc: CappedShare::new(noc_bytes_per_cycle),
            runnable: Vec::new(),
            ended: Vec::new(),
            finished: Vec::new(),
            next_serial: 1,
            instructions: 0,
            tracing: false,
        }
    }

    /// The cost model the scheduler times with (a [`Plan`] should be built with it).
    pub fn cost(&self) -> &CostModel {
        &self.cost
    }

    /// Records every instruction's interval in the [`RunProfile`] of runs started from now.
    pub fn set_tracing(&mut self, on: bool) {
        self.tracing = on;
    }

    /// Current device time in cycles.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Whether no program is running.
    pub fn is_idle(&self) -> bool {
        self.running == 0
    }

    /// Starts a program at the current device time on physical `cores` (one per
    /// stream); `ddr_base` is the region offset of its DDR.
    pub fn start(&mut self, plan: Arc<Plan>, cores: &[u32], ddr_base: u64) -> JobId {
        self.start_traced(plan, cores, ddr_base, false)
    }

    /// [`Scheduler::start`], recording this run's trace even if tracing is off.
    pub fn start_traced(&mut self, plan: Arc<Plan>, cores: &[u32], ddr_base: u64, trace: bool) -> JobId {
        self.start_at(plan, cores, ddr_base, trace, self.now)
    }

    /// [`Scheduler::start_traced`], the program's cores starting at cycle `at` (not
    /// before now); the scheduler counts as busy from now.
    pub fn start_at(&mut self, plan: Arc<Plan>, cores: &[u32], ddr_base: u64, trace: bool, at: u64) -> JobId {
        let slot = match self.jobs.iter().position(Option::is_none) {
            Some(s) => s,
            None => {
                self.jobs.push(None);
                self.jobs.len() - 1
            }
        };
        let id = self.next_serial << SLOT_BITS | slot as u64;
        self.next_serial += 1;
        let now = at.max(self.now);
        let plan_cost = *plan.cost() == self.cost;
        let runs = cores
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let base = if plan_cost { plan.fixed_stats(i) } else { CoreStats::default() };
                CoreRun::new(CoreStats { core: c, ..base }, now)
            })
            .collect();
        self.jobs[slot] = Some(Job {
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
            plan_cost,
        });
        self.running += 1;
        self.runnable.extend((0..cores.len()).map(|c| (slot, c)));
        if cores.is_empty() {
            self.events.push(event(now, id, 0, 0, Happening::JobEnds));
        }
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
    ) -> Vec<(JobId, Result<RunProfile, ExecFault>)> {
        self.run_until(nsps, vtcm_bytes, mem, mode, u64::MAX)
    }

    /// Lets idle device time pass up to `cycle` (no program is running, so nothing
    /// happens in between). Ignored while programs run or for a time in the past.
    pub fn idle_until(&mut self, cycle: u64) {
        if self.running == 0 && cycle > self.now {
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
    ) -> Vec<(JobId, Result<RunProfile, ExecFault>)> {
        let mut memory = Memory { nsps, vtcm_bytes, mem, mode };
        loop {
            // Running a core may make others runnable (a barrier it completes).
            let mut i = 0;
            while let Some(&(slot, c)) = self.runnable.get(i) {
                self.run_core(slot, c, &mut memory);
                i += 1;
            }
            self.runnable.clear();
            if !self.ended.is_empty() || self.running == 0 {
                break;
            }
            match self.advance(limit) {
                Advanced::Moved => {}
                Advanced::AtLimit => break,
                Advanced::Stuck => {
                    // Nothing in flight and nothing can issue: every core waits on another.
                    for job in self.jobs.iter_mut().filter_map(Option::take) {
                        self.ended.push((job.id, Err(ExecFault::Deadlock)));
                    }
                    self.running = 0;
                    self.events.clear();
                    self.ddr.clear();
                    self.noc.clear();
                }
            }
        }
        core::mem::take(&mut self.ended)
    }

    /// Removes a running program (its activation went away).
    pub fn cancel(&mut self, id: JobId) {
        if let Some(slot) = self.slot(id) {
            self.jobs[slot] = None;
            self.running -= 1;
            self.ddr.remove_job(id);
            self.noc.remove_job(id);
            self.runnable.retain(|r| r.0 != slot);
        }
    }

    /// The slot of a job still running.
    fn slot(&self, id: JobId) -> Option<usize> {
        let slot = (id & ((1 << SLOT_BITS) - 1)) as usize;
        self.jobs.get(slot)?.as_ref().filter(|j| j.id == id).map(|_| slot)
    }

    fn ddr_rate(&self) -> f64 {
        self.ddr.rate(self.ddr_bytes_per_cycle, self.cost.dma_bytes_per_cycle as f64)
    }

    /// Moves time to the next event (or to `limit`, if that comes first) and carries out
    /// what happens there.
    fn advance(&mut self, limit: u64) -> Advanced {
        // Events of programs that are gone (cancelled) do nothing.
        while let Some(&Reverse((_, id, ..))) = self.events.peek() {
            if self.slot(id).is_some() {
                break;
            }
            self.events.pop();
        }
        let now = self.now;
        let ddr_rate = self.ddr_rate();
        let mut next = self.events.peek().map_or(u64::MAX, |e| e.0 .0);
        if let Some(c) = self.ddr.next_end(ddr_rate) {
            next = next.min(now + c);
        }
        if let Some(c) = self.noc.next_end() {
            next = next.min(now + c);
        }
        if next == u64::MAX {
            return Advanced::Stuck;
        }
        let at_limit = next > limit;
        let next = next.min(limit.max(now));
        let cycles = next - now;
        let mut finished = core::mem::take(&mut self.finished);
        self.ddr.advance(cycles, ddr_rate, &mut finished);
        self.noc.advance(cycles, &mut finished);
        self.now = next;
        for (id, core, op) in finished.drain(..) {
            self.moved(id, core as usize, op);
        }
        self.finished = finished;
        while let Some(&Reverse((at, id, rest))) = self.events.peek() {
            if at > next {
                break;
            }
            self.events.pop();
            let (core, op, what) = unpack(rest);
            self.happen(id, core as usize, op, what);
        }
        if at_limit {
            Advanced::AtLimit
        } else {
            Advanced::Moved
        }
    }

    fn happen(&mut self, id: JobId, core: usize, op: u32, what: Happening) {
        let Some(slot) = self.slot(id) else { return };
        let owner = (id, core as u32, op);
        match what {
            Happening::DdrReady | Happening::NocReady => {
                let job = self.jobs[slot].as_ref().expect("slot of a running job");
                let Some(Action::Dma(paths)) = job.plan.step(core, op as usize).map(|s| s.action) else { return };
                if what == Happening::DdrReady {
                    self.ddr.start(owner, paths.ddr_bytes);
                } else {
                    // Capped at its share of the pool rate.
                    let pool = self.cost.pool_bytes_per_cycle.max(1) as f64;
                    let cap = pool * paths.noc_bytes as f64 / paths.bytes as f64;
                    let mut finished = core::mem::take(&mut self.finished);
                    self.noc.start(owner, paths.noc_bytes, cap, &mut finished);
                    for (id, core, op) in finished.drain(..) {
                        self.moved(id, core as usize, op);
                    }
                    self.finished = finished;
                }
            }
            Happening::Signalled => {
                let job = self.jobs[slot].as_mut().expect("slot of a running job");
                let Some(Action::Signal { counter, value }) = job.plan.step(core, op as usize).map(|s| s.action) else {
                    return;
                };
                job.counters[counter as usize] += u32::from(value);
                // Cores waiting on a counter look again, in core order.
                for (c, run) in job.cores.iter_mut().enumerate() {
                    if run.state == State::WaitCounter {
                        run.state = State::Running;
                        self.runnable.push((slot, c));
                    }
                }
            }
            Happening::WaitCheck => {
                let job = self.jobs[slot].as_mut().expect("slot of a running job");
                job.cores[core].state = State::Running;
                self.runnable.push((slot, core));
            }
            Happening::Recheck => {
                let job = self.jobs[slot].as_mut().expect("slot of a running job");
                if job.cores[core].state == State::Moving {
                    job.cores[core].state = State::Running;
                    self.runnable.push((slot, core));
                }
            }
            Happening::JobEnds => {
                let job = self.jobs[slot].take().expect("slot of a running job");
                self.running -= 1;
                self.ddr.remove_job(id);
                self.noc.remove_job(id);
                let result = self.finish(job);
                self.ended.push((id, result));
            }
        }
    }

    fn finish(&self, mut job: Job) -> Result<RunProfile, ExecFault> {
        if let Some(f) = job.fault {
            return Err(f);
        }
        job.trace.sort_unstable_by_key(|e| (e.end_cycle, e.core, e.index));
        Ok(RunProfile {
            start_cycle: job.start,
            end_cycle: self.now,
            cores: job.cores.into_iter().map(|c| c.stats).collect(),
            ddr_bytes: job.ddr_bytes,
            trace: job.trace,
        })
    }

    /// A shared-path part of a DMA ended now; with its last part the instruction ends and
    /// its core may go on.
    fn moved(&mut self, id: JobId, core: usize, op: u32) {
        let Some(slot) = self.slot(id) else { return };
        let now = self.now;
        let job = self.jobs[slot].as_mut().expect("slot of a running job");
        let Some((start, end)) = job.cores[core].part_done(op, now) else { return };
        job.account(core, op, start, end);
        if job.cores[core].state == State::Moving {
            job.cores[core].state = State::Running;
            self.runnable.push((slot, core));
        }
    }

    /// Issues instructions of core `c` of the job in `slot` until one has to wait for the
    /// device clock.
    fn run_core<M: SharedMemory>(&mut self, slot: usize, c: usize, memory: &mut Memory<'_, M>) {
        let Some(plan) = self.jobs[slot].as_ref().map(|j| j.plan.clone()) else { return };
        let steps = plan.core_steps(c);
        let accesses = plan.core_accesses(c);
        let issues = plan.core_issues(c);
        // Instructions of fixed cost need only be started: their statistics are the plan's.
        let fast =
            self.jobs[slot].as_ref().is_some_and(|j| j.plan_cost && !j.traced) && memory.mode != ExecMode::Functional;
        loop {
            let Some(job) = self.jobs[slot].as_mut() else { return };
            if job.fault.is_some() || job.cores[c].state != State::Running {
                return;
            }
            let run = &mut job.cores[c];
            let next = if fast {
                let (issued, next) = run.issue_fixed(issues, accesses, self.now);
                self.instructions += issued;
                next
            } else {
                issues.get(run.pc).map(|step| run.earliest(step, accesses, self.now))
            };
            let index = run.pc;
            let (Some(next), Some(step)) = (next, steps.get(index)) else {
                let (t, fault) = (run.clock, ExecFault::Instruction { core: job.phys[c], stream: c as u32, index });
                self.fault(slot, fault, t);
                return;
            };
            let t = match next {
                Ok(t) => t,
                Err(blocked) => {
                    run.state = State::Moving;
                    if let Blocked::Until(at) = blocked {
                        self.events.push(event(at, job.id, c as u32, index as u32, Happening::Recheck));
                    }
                    return;
                }
            };
            match step.action {
                Action::End => {
                    let run = &mut job.cores[c];
                    run.begin(t);
                    run.stats.instructions += 1;
                    run.state = State::Ended { at: t };
                    self.check_barrier(slot);
                    self.check_end(slot);
                    return;
                }
                Action::Barrier => {
                    let run = &mut job.cores[c];
                    run.begin(t);
                    run.idle_from(t);
                    run.state = State::AtBarrier { at: t };
                    self.check_barrier(slot);
                    return;
                }
                Action::Wait { counter, value } => {
                    if t > self.now {
                        // Checked when the device clock gets there, after everything
                        // that signals before then.
                        job.cores[c].clock = t;
                        job.cores[c].state = State::WaitCheck { at: t };
                        self.events.push(event(t, job.id, c as u32, index as u32, Happening::WaitCheck));
                        return;
                    }
                    let have = &mut job.counters[counter as usize];
                    if *have < u32::from(value) {
                        job.cores[c].state = State::WaitCounter;
                        return;
                    }
                    *have -= u32::from(value);
                    self.issue(slot, c, index, step, self.now, memory);
                }
                _ => self.issue(slot, c, index, step, t, memory),
            }
        }
    }

    /// Starts instruction `index` of core `c` at `t`.
    fn issue<M: SharedMemory>(
        &mut self,
        slot: usize,
        c: usize,
        index: usize,
        step: &Step,
        t: u64,
        memory: &mut Memory<'_, M>,
    ) {
        let job = self.jobs[slot].as_mut().expect("slot of a running job");
        let id = job.id;
        let cycles = if job.plan_cost { step.cycles } else { self.cost.cycles(&job.plan.streams()[c][index]) };
        let run = &mut job.cores[c];
        run.begin(t);
        run.pc += 1;
        run.stats.instructions += 1;
        self.instructions += 1;
        let op = index as u32;
        match step.action {
            Action::Dma(paths) => {
                job.ddr_bytes += paths.ddr_bytes;
                let ready = t + cycles;
                let local_end = paths.local_cycles.map_or(t, |l| ready + l);
                let moving = u8::from(paths.ddr) + u8::from(paths.noc_bytes > 0);
                if paths.ddr {
                    self.events.push(event(ready, id, c as u32, op, Happening::DdrReady));
                }
                if paths.noc_bytes > 0 {
                    self.events.push(event(ready, id, c as u32, op, Happening::NocReady));
                }
                let end = (moving == 0).then_some(local_end);
                let lower_bound = end.unwrap_or_else(|| {
                    // Its bytes at the most its path allows.
                    let (bytes, rate) = if paths.ddr {
                        (paths.ddr_bytes, self.ddr_bytes_per_cycle.min(self.cost.dma_bytes_per_cycle as f64))
                    } else {
                        let pool = self.cost.pool_bytes_per_cycle.max(1) as f64;
                        let cap = pool * paths.noc_bytes as f64 / paths.bytes.max(1) as f64;
                        (paths.noc_bytes, self.noc_bytes_per_cycle.min(cap))
                    };
                    local_end.max(ready + fluid::cycles_for(bytes as f64, rate))
                });
                let known = end.unwrap_or(core_run::UNKNOWN);
                run.push(InFlight { start: t, end: known, local_end, lower_bound, op, engine: step.engine, moving });
                if let Some(end) = end {
                    job.account(c, op, t, end);
                }
            }
            _ => {
                let end = t + cycles;
                run.push(InFlight::fixed(op, step.engine, t, end));
                job.account(c, op, t, end);
                if let Action::Signal { .. } = step.action {
                    self.events.push(event(end, id, c as u32, op, Happening::Signalled));
                }
            }
        }
        if memory.mode == ExecMode::Functional {
            let job = self.jobs[slot].as_mut().expect("slot of a running job");
            let op = &job.plan.streams()[c][index];
            let (nsps, vtcm, mem) = (&mut *memory.nsps, memory.vtcm_bytes, memory.mem);
            if data::execute(op, c, &job.phys, job.ddr_base, nsps, vtcm, mem).is_none() {
                let fault = ExecFault::Instruction { core: job.phys[c], stream: c as u32, index };
                self.fault(slot, fault, t);
            }
        }
    }

    /// The job faults at `t`; it ends there.
    fn fault(&mut self, slot: usize, fault: ExecFault, t: u64) {
        let job = self.jobs[slot].as_mut().expect("slot of a running job");
        if job.fault.is_none() {
            job.fault = Some(fault);
            self.events.push(event(t.max(self.now), job.id, 0, 0, Happening::JobEnds));
        }
    }

    /// A barrier completes when every core still running has arrived at it: each goes
    /// on with a sync instruction from the moment the last one arrived (or ended).
    fn check_barrier(&mut self, slot: usize) {
        let lat = self.cost.sync_latency_cycles;
        let job = self.jobs[slot].as_mut().expect("slot of a running job");
        let mut release = 0;
        let mut waiting = 0;
        for run in &job.cores {
            match run.state {
                State::AtBarrier { at } => {
                    release = release.max(at);
                    waiting += 1;
                }
                State::Ended { at } => release = release.max(at),
                _ => return,
            }
        }
        if waiting == 0 {
            return;
        }
        for c in 0..job.cores.len() {
            let run = &mut job.cores[c];
            if let State::AtBarrier { .. } = run.state {
                let op = run.pc as u32;
                run.begin(release);
                run.push(InFlight::fixed(op, Engine::Sync, release, release + lat));
                run.pc += 1;
                run.stats.instructions += 1;
                run.state = State::Running;
                self.instructions += 1;
                job.account(c, op, release, release + lat);
                self.runnable.push((slot, c));
            }
        }
    }

    /// When every core has ended, the job ends at the last End.
    fn check_end(&mut self, slot: usize) {
        let job = self.jobs[slot].as_ref().expect("slot of a running job");
        let mut last = job.start;
        for run in &job.cores {
            match run.state {
                State::Ended { at } => last = last.max(at),
                _ => return,
            }
        }
        self.events.push(event(last.max(self.now), job.id, 0, 0, Happening::JobEnds));
    }
}

impl Job {
    /// Instruction `op` of core `c` ran from `start` to `end`: its trace event, and its
    /// statistics unless the plan counted them already (fixed-cost instructions; only
    /// with this scheduler's cost model).
    fn account(&mut self, c: usize, op: u32, start: u64, end: u64) {
        let Some(step) = self.plan.step(c, op as usize) else { return };
        if self.traced {
            self.trace.push(TraceEvent {
                core: c as u32,
                engine: step.engine,
                class: step.class,
                index: op,
                start_cycle: start,
                end_cycle: end,
            });
        }
        if !self.plan_cost || step.fixed_cycles().is_none() {
            count_instruction(&mut self.cores[c].stats, step, end - start);
        }
    }
}
