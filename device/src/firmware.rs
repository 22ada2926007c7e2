//! The device firmware: a state machine that services the control mailbox and the DMA
//! Bridge Channel rings, one [`Firmware::service`] call at a time.
//!
//! Per channel it copies each request element out of the ring, validates every field,
//! runs presync semaphore -> DMA -> postsync semaphores -> doorbell, writes a response
//! element when asked (or when the element was bad), publishes the ring indices, and
//! raises an MSI only when the response ring goes from empty to non-empty (or when the
//! element forces one). A doorbell on an activation's doorbell address starts its
//! program once all its inputs have landed. A bad element gets an error completion
//! code and the channel carries on with the next one.
//!
//! Whoever drives the firmware (a thread in `aicsim-kmd`, a test loop) decides when to
//! call `service` again and how to sleep in between; the firmware itself never blocks.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::fence;
use core::sync::atomic::Ordering::{Acquire, Release, SeqCst};

use crate::extent::ExtentAllocator;
use crate::nsp::{self, CostModel, Limits, NspCore};
use crate::scheduler::{ExecMode, JobId, Plan, RunStats, Scheduler};
use aicsim_abi::container::ProgramImage;
use aicsim_abi::control::{
    ActivationInfo, ControlCommand, ControlRequest, ControlResponse, ControlStatus, ControlValues, StatusReport,
    RESPONSE_HEADER_BYTES,
};
use aicsim_abi::dbc::{
    Cmd, CompletionCode, Direction, DoorbellAttr, RequestElement, ResponseElement, Ring, SemCommand, SemOp, NUM_DBC,
    NUM_SEMAPHORES, REQUEST_ELEMENT_BYTES, SEM_VALUE_MAX,
};
use aicsim_abi::layout::{self, DeviceStatus, MemoryMap};
use aicsim_abi::memory::{CopyTicket, SharedMemory};
use aicsim_abi::ring::{Consumer, Producer, SharedIndices};
use aicsim_abi::run_record::{RunRecord, OUTPUTS_TAKEN_FIELD};
use aicsim_abi::semaphore::{self, SemOutcome};
use alloc::collections::VecDeque;
use alloc::sync::Arc;

/// Firmware version reported in [`layout::FW_VERSION`]: 0.1.0.
pub const FIRMWARE_VERSION: u32 = 1 << 8;

/// Most elements one channel processes per `service` call, so that one busy channel
/// cannot starve the others.
const CHANNEL_BATCH: u32 = 64;

/// Run statistics each activation keeps for the host to read.
pub const PROFILES_KEPT: usize = 256;

/// Granule of device DDR allocations.
const DDR_GRANULE: u64 = 4096;

/// The device's shape and cost parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceConfig {
    /// NSP cores (16 on the Pro SKU; the 16 GB Standard card exposes 14).
    pub num_nsp: u32,
    /// VTCM per core.
    pub vtcm_bytes: u64,
    pub map: MemoryMap,
    pub cost: CostModel,
    /// Clock used to turn cycles into device time.
    pub clock_hz: u64,
    /// Whether programs compute real results or only take device time.
    pub mode: ExecMode,
    /// When completions are released.
    pub pacing: Pacing,
    /// Record every instruction's interval in each run's statistics (for timelines).
    pub trace: bool,
    /// Faults to inject.
    pub faults: FaultPlan,
    /// Seed of the model's own variation (when a ready program is dispatched).
    pub seed: u64,
}

/// Seeded, reproducible faults the device injects: the same seed and the same work give
/// the same faults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    pub seed: u64,
    /// Per million answered elements: the transfer happens, but the response carries
    /// [`CompletionCode::Injected`].
    pub error_completion_ppm: u32,
    /// After this many elements the device stops answering anything (a hang).
    pub hang_after_elements: Option<u64>,
    /// Per million MSIs: the interrupt is lost (never delivered).
    pub lost_interrupt_ppm: u32,
    /// Per million request elements: one random bit of the device's copy flips before
    /// it is validated (a corrupted element).
    pub corrupt_element_ppm: u32,
    /// Wall-clock nanoseconds the device spends per element on top of its work (a slow
    /// device; the thread running the firmware sleeps this long per element after each
    /// serviced batch).
    pub slow_element_ns: u64,
}

/// How device time relates to the host's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// Device time is the device's own: work is served as soon as it is queued, and a
    /// finished program's outputs are released as soon as it is simulated.
    None,
    /// Device time follows the wall clock since boot: no program completes before the
    /// wall-clock moment its device time says.
    Wall,
    /// Host and device share a simulated clock: the host stamps each request with the
    /// simulated moment it reaches the channel, transfers over the host link take their
    /// time, and the device serves everything in simulated-time order (see
    /// [`aicsim_abi::clock`] and `firmware::timed`).
    Simulated,
}

impl Default for DeviceConfig {
    fn default() -> DeviceConfig {
        DeviceConfig {
            num_nsp: 16,
            vtcm_bytes: 8 << 20,
            map: MemoryMap { ring_nelem: 512, host_bytes: 1 << 30, ddr_bytes: 16 << 30 },
            cost: CostModel::default(),
            clock_hz: 1_400_000_000,
            mode: ExecMode::Functional,
            pacing: Pacing::None,
            trace: false,
            faults: FaultPlan::default(),
            seed: 0,
        }
    }
}

/// What one `service` call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Serviced {
    /// Request elements consumed (completed or failed).
    pub elements: u32,
    /// Whether a control request was answered.
    pub control: bool,
    /// Program runs that finished.
    pub programs: u32,
}

impl Serviced {
    pub fn progressed(&self) -> bool {
        self.elements > 0 || self.control || self.programs > 0
    }
}

/// Where the element at a channel's head is in its processing.
#[derive(Clone, Copy, Debug, Default)]
enum Stage {
    /// Nothing done yet: the element is read afresh.
    #[default]
    Fresh,
    /// DMA done; postsync command `next` is blocked on a wait. The element as it was
    /// read is kept, so a host rewriting the slot cannot change a half-done element.
    PostSync { element: RequestElement, next: usize },
}

/// The device's ends of one channel's rings, and where it is in the head element.
#[derive(Clone, Copy, Debug)]
struct Channel {
    requests: Consumer,
    responses: Producer,
    stage: Stage,
}

impl Channel {
    fn new(ring: Ring) -> Channel {
        Channel { requests: Consumer::new(ring), responses: Producer::new(ring), stage: Stage::Fresh }
    }

    /// Both rings back to slot 0, the device's registers published.
    fn reset<M: SharedMemory>(&mut self, ring: Ring, map: &MemoryMap, dbc: usize, mem: &M) {
        *self = Channel::new(ring);
        self.requests.reset(&SharedIndices::device_requests(mem, map, dbc));
        self.responses.reset(&SharedIndices::device_responses(mem, map, dbc));
    }
}

struct Program {
    image: ProgramImage,
    plan: Arc<Plan>,
    inputs: u16,
    outputs: u16,
    activations: u32,
}

struct Activation {
    program: usize,
    info: ActivationInfo,
    cores: Vec<u32>,
    /// Doorbells rung whose program has not started yet (waiting for inputs or for the
    /// previous run).
    doorbells_pending: u32,
    /// The run in progress on the scheduler.
    running: Option<JobId>,
    /// Outputs of faulted runs still to be reported on their output elements.
    faulted_outputs: u32,
    runs: u64,
    /// Statistics of the latest runs, oldest first, at most [`PROFILES_KEPT`].
    profiles: VecDeque<(u64, RunStats)>,
    /// Record every instruction's interval.
    trace: bool,
    /// When the cores last became free.
    idle_since: u64,
    /// When the pending doorbell's inputs had all landed.
    ready_at: u64,
    /// Ready and start cycles of the run in progress.
    current: (u64, u64),
    /// Output elements taken since activation (each run releases `outputs` of them).
    outputs_taken: u64,
}

enum Step {
    /// The element waits on a semaphore; keep it at the head.
    Blocked(Stage),
    /// The element is consumed.
    Done { status: u16, respond: bool, force_msi: bool },
}

/// A fully validated element.
struct Checked {
    cmd: Cmd,
    presync: Option<SemCommand>,
    postsync: [Option<SemCommand>; 4],
    doorbell: Option<DoorbellAttr>,
}

/// The device firmware.
pub struct Firmware {
    config: DeviceConfig,
    ring: Ring,
    channels: [Channel; NUM_DBC],
    activations: [Option<Activation>; NUM_DBC],
    programs: Vec<Option<Program>>,
    cores: Vec<Option<NspCore>>,
    core_owner: Vec<Option<usize>>,
    sem_owner: [Option<usize>; NUM_SEMAPHORES as usize],
    ddr: ExtentAllocator,
    ctrl_seen: u32,
    device_cycles: u64,
    scheduler: Scheduler,
    fault_rng: u64,
    /// The model's own variation (dispatch), from [`DeviceConfig::seed`].
    model_rng: u64,
    elements_done: u64,
    hung: bool,
    /// What the simulated clock needs per channel and of the host link.
    timed: timed::Timed,
    /// The bytes of the element about to take effect, already moving.
    prestarted: Option<CopyTicket>,
}

impl Firmware {
    /// A powered-off device; call [`Firmware::boot`] before servicing.
    ///
    /// # Panics
    /// If `config.map.ring_nelem` is not a power of two of at least 2 (a configuration
    /// bug caught before anything runs).
    pub fn new(config: DeviceConfig) -> Firmware {
        let ring = Ring::new(config.map.ring_nelem).expect("ring_nelem must be a power of two >= 2");
        Firmware {
            config,
            ring,
            channels: [Channel::new(ring); NUM_DBC],
            activations: Default::default(),
            programs: Vec::new(),
            cores: (0..config.num_nsp).map(|_| None).collect(),
            core_owner: alloc::vec![None; config.num_nsp as usize],
            sem_owner: [None; NUM_SEMAPHORES as usize],
            ddr: ExtentAllocator::new(config.map.ddr_bytes, DDR_GRANULE),
            ctrl_seen: 0,
            device_cycles: 0,
            fault_rng: config.faults.seed,
            model_rng: config.seed,
            elements_done: 0,
            timed: timed::Timed::default(),
            prestarted: None,
            hung: false,
            scheduler: {
                let mut s = Scheduler::new(config.cost, config.clock_hz);
                s.set_tracing(config.trace);
                s
            },
        }
    }

    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// Total device cycles spent running programs since boot (summed over runs).
    pub fn device_cycles(&self) -> u64 {
        self.device_cycles
    }

    /// Device time: cycles since boot on the device clock.
    pub fn now_cycles(&self) -> u64 {
        self.scheduler.now()
    }

    /// Instructions the scheduler has issued since boot.
    pub fn instructions_issued(&self) -> u64 {
        self.scheduler.instructions
    }

    /// Statistics of the latest finished run of the activation on `dbc`.
    pub fn last_run(&self, dbc: usize) -> Option<&RunStats> {
        self.activations.get(dbc)?.as_ref()?.profiles.back().map(|(_, s)| s)
    }

    /// Brings the device up: clears the device-owned registers and semaphores, publishes
    /// the firmware version and marks the device ready. The control sequence seen is
    /// taken from the mailbox, so a device restarted over a live region does not replay
    /// an old request.
    pub fn boot<M: SharedMemory>(&mut self, mem: &M) {
        let map = self.config.map;
        for dbc in 0..NUM_DBC {
            self.channels[dbc].reset(self.ring, &map, dbc, mem);
        }
        for s in 0..NUM_SEMAPHORES {
            mem.store_u32(map.semaphore(s), 0, Release);
        }
        self.ctrl_seen = mem.load_u32(layout::CTRL_REQ_SEQ, Acquire);
        mem.store_u32(layout::CTRL_RSP_SEQ, self.ctrl_seen, Release);
        mem.store_u32(layout::FW_VERSION, FIRMWARE_VERSION, Release);
        mem.store_u32(layout::DEVICE_STATUS, DeviceStatus::Ready as u32, Release);
    }

    /// Does all the work that is ready now, unpaced: a pending control request, then up
    /// to a batch of elements on every active channel, then (if no ring moved) device
    /// time up to the next program completion.
    pub fn service<M: SharedMemory>(&mut self, mem: &M) -> Serviced {
        self.service_at(mem, None)
    }

    /// [`Firmware::service`] at host time `wall_ns` since boot. With [`Pacing::Wall`],
    /// device time follows the wall clock: idle time passes with it, and no program
    /// completes before its device time has come.
    pub fn service_at<M: SharedMemory>(&mut self, mem: &M, wall_ns: Option<u64>) -> Serviced {
        if self.hung {
            return Serviced::default();
        }
        if self.config.pacing == Pacing::Simulated {
            return self.service_simulated(mem);
        }
        let limit = match (self.config.pacing, wall_ns) {
            (Pacing::Wall, Some(ns)) => {
                let cycle = (u128::from(ns) * u128::from(self.config.clock_hz) / 1_000_000_000) as u64;
                self.scheduler.idle_until(cycle);
                cycle
            }
            _ => u64::MAX,
        };
        let mut done = Serviced { control: self.service_control(mem), ..Default::default() };
        for dbc in 0..NUM_DBC {
            if self.activations[dbc].is_some() {
                done.elements += self.service_channel(dbc, mem);
            }
        }
        // Device time moves on only when no ring can make progress, so every program
        // whose inputs are already queued starts before time passes.
        if done.elements == 0 && !self.scheduler.is_idle() {
            done.programs = self.finish_programs(mem, limit);
        }
        done
    }

    /// Whether the fault plan has hung the device.
    pub fn hung(&self) -> bool {
        self.hung
    }

    /// Whether a program is running that the device can go on simulating without the
    /// host (on the simulated clock it stops at the host's horizon, and the host rings it
    /// when that moves).
    pub fn busy(&self) -> bool {
        !self.scheduler.is_idle() && !self.hung && self.config.pacing != Pacing::Simulated
    }

    /// Runs the scheduler to the next program completion (not past `limit`) and
    /// releases the outputs of what finished.
    fn finish_programs<M: SharedMemory>(&mut self, mem: &M, limit: u64) -> u32 {
        let finished = self.scheduler.run_until(&mut self.cores, self.config.vtcm_bytes, mem, self.config.mode, limit);
        let mut count = 0;
        for (job, result) in finished {
            let Some(dbc) =
                (0..NUM_DBC).find(|&d| self.activations[d].as_ref().is_some_and(|a| a.running == Some(job)))
            else {
                continue;
            };
            let outputs = self.activations[dbc]
                .as_ref()
                .and_then(|a| self.programs.get(a.program)?.as_ref())
                .map_or(0, |p| p.outputs);
            let now = self.scheduler.now();
            if let Some(act) = &mut self.activations[dbc] {
                act.running = None;
                act.runs += 1;
                let status = match result {
                    Ok(stats) => {
                        self.device_cycles += stats.cycles();
                        if act.profiles.len() == PROFILES_KEPT {
                            act.profiles.pop_front();
                        }
                        act.profiles.push_back((act.runs, stats));
                        0
                    }
                    Err(_) => {
                        act.faulted_outputs += u32::from(outputs);
                        CompletionCode::ProgramFault as u32
                    }
                };
                let record = RunRecord {
                    seq: act.runs,
                    idle_since_cycle: act.idle_since,
                    ready_cycle: act.current.0,
                    start_cycle: act.current.1,
                    end_cycle: now,
                    status,
                    ..RunRecord::default()
                };
                let _ = mem.write(self.config.map.run_record(dbc, act.runs), bytemuck::bytes_of(&record));
                act.idle_since = now;
                let sem_out = self.config.map.semaphore(act.info.sem_outputs);
                let out = (mem.load_u32(sem_out, Acquire) as u16).wrapping_add(outputs) & SEM_VALUE_MAX;
                mem.store_u32(sem_out, out.into(), Release);
            }
            self.start_ready_program(dbc, mem);
            count += 1;
        }
        count
    }

    fn service_channel<M: SharedMemory>(&mut self, dbc: usize, mem: &M) -> u32 {
        let timed = self.config.pacing == Pacing::Simulated;
        let map = self.config.map;
        let (req_ix, rsp_ix) =
            (SharedIndices::device_requests(mem, &map, dbc), SharedIndices::device_responses(mem, &map, dbc));
        let mut ch = self.channels[dbc];
        // A garbage index (or a link reading all-ones): touch nothing until it is sane.
        if ch.requests.refresh(&req_ix).is_err() || ch.responses.refresh(&rsp_ix).is_err() {
            return 0;
        }
        let tail = ch.requests.observed_tail();
        if timed {
            self.timed_new_elements(dbc, tail, mem);
        }
        let mut consumed = 0;
        let mut responses = 0;
        let mut force_msi = false;
        while ch.requests.pending() > 0 && consumed < CHANNEL_BATCH {
            // Room for this element's response, else it waits for the host to drain.
            if !matches!(ch.responses.room(&rsp_ix, 1), Ok(1..)) {
                break;
            }
            let req_head = ch.requests.slot();
            let (element, resume) = match ch.stage {
                // On the simulated clock, the head element is served only once its time
                // (and its transfer over the host link) has come.
                Stage::Fresh if timed => match self.timed_head(dbc, req_head, tail, mem) {
                    Some(element) => (element, None),
                    None => break,
                },
                Stage::Fresh => match self.read_element(dbc, req_head, mem) {
                    Some(element) => (element, None),
                    None => break,
                },
                Stage::PostSync { element, next } => (element, Some(next)),
            };
            let step = self.run_element(dbc, &element, resume, mem);
            if let Some(ticket) = self.prestarted.take() {
                // The element did not take its bytes (it failed): they still land.
                mem.copy_finish(ticket);
            }
            match step {
                Step::Blocked(stage) => {
                    ch.stage = stage;
                    break;
                }
                Step::Done { mut status, respond, force_msi: force } => {
                    self.elements_done += 1;
                    let faults = self.config.faults;
                    if respond
                        && status == 0
                        && faults.error_completion_ppm > 0
                        && splitmix(&mut self.fault_rng) % 1_000_000 < u64::from(faults.error_completion_ppm)
                    {
                        status = CompletionCode::Injected as u16;
                    }
                    if faults.hang_after_elements.is_some_and(|n| self.elements_done >= n) {
                        self.hung = true;
                    }
                    if respond {
                        let rsp = ResponseElement { req_id: element.req_id, status };
                        let slot = ch.responses.slot();
                        // The slot is ours: the ring has room, checked above.
                        let _ = mem.write(map.response_element(dbc, slot), bytemuck::bytes_of(&rsp));
                        if timed {
                            self.timed_responded(dbc, slot, mem);
                        }
                        ch.responses.push();
                        responses += 1;
                        force_msi |= force;
                    }
                    if timed {
                        self.timed_consumed(dbc);
                    }
                    ch.stage = Stage::Fresh;
                    ch.requests.pop();
                    consumed += 1;
                }
            }
        }
        if consumed > 0 {
            // The slots we consumed may be reused by the host from now on.
            ch.requests.publish(&req_ix);
        }
        if responses > 0 {
            // Either the host sees these responses when it re-checks after publishing its
            // head, or the device sees it had drained everything and interrupts it.
            let host_idle = ch.responses.publish_and_check_idle(&rsp_ix);
            if timed {
                self.timed_publish_wakes(dbc, mem);
            }
            let lost = self.config.faults.lost_interrupt_ppm > 0
                && splitmix(&mut self.fault_rng) % 1_000_000 < u64::from(self.config.faults.lost_interrupt_ppm);
            if (host_idle || force_msi) && !lost {
                raise_msi(dbc, mem);
            }
        }
        self.channels[dbc] = ch;
        consumed
    }

    /// Copies request element `index` of channel `dbc` out of the ring (a corrupted
    /// element fault flips one bit of the copy). `None` if the ring is out of reach.
    fn read_element<M: SharedMemory>(&mut self, dbc: usize, index: u32, mem: &M) -> Option<RequestElement> {
        let mut raw = [0u8; REQUEST_ELEMENT_BYTES as usize];
        mem.read(self.config.map.request_element(dbc, index), &mut raw).ok()?;
        let ppm = self.config.faults.corrupt_element_ppm;
        if ppm > 0 && splitmix(&mut self.fault_rng) % 1_000_000 < u64::from(ppm) {
            let bit = splitmix(&mut self.fault_rng) % (REQUEST_ELEMENT_BYTES * 8);
            raw[(bit / 8) as usize] ^= 1 << (bit % 8);
        }
        Some(bytemuck::pod_read_unaligned::<RequestElement>(&raw))
    }

    fn check_element(&self, dbc: usize, e: &RequestElement) -> Result<Checked, CompletionCode> {
        if e.reserved0 != 0 || e.reserved1 != 0 || e.reserved2 != 0 || e.reserved3 != 0 {
            return Err(CompletionCode::ReservedBits);
        }
        let cmd = Cmd::decode(e.cmd)?;
        let mut presync = None;
        let mut postsync = [None; 4];
        for (slot, &raw) in postsync.iter_mut().zip(&e.sem_cmd) {
            let Some(sem) = SemCommand::decode(raw)? else { continue };
            if self.sem_owner[sem.index as usize] != Some(dbc) {
                return Err(CompletionCode::BadSemaphore);
            }
            if sem.presync {
                if presync.replace(sem).is_some() {
                    return Err(CompletionCode::MultiplePresync);
                }
            } else {
                *slot = Some(sem);
            }
        }
        let doorbell = DoorbellAttr::decode(e.db_attr)?;
        if let Some(db) = doorbell {
            let width = db.width.bytes();
            let aligned = e.db_addr.is_multiple_of(width);
            let to_own_doorbell = self.config.map.doorbell_channel(e.db_addr) == Some(dbc);
            if !aligned || !(to_own_doorbell || self.device_range_ok(dbc, e.db_addr, width)) {
                return Err(CompletionCode::BadDoorbell);
            }
        }
        let len = u64::from(e.len);
        match cmd.direction {
            Direction::None if e.len != 0 => return Err(CompletionCode::BadLength),
            Direction::None => {}
            _ if e.len == 0 => return Err(CompletionCode::BadLength),
            Direction::ToDevice => {
                if !self.config.map.host_range_ok(e.src_addr, len) {
                    return Err(CompletionCode::HostAddressOutOfRange);
                }
                if !self.device_range_ok(dbc, e.dest_addr, len) {
                    return Err(CompletionCode::DeviceAddressOutOfRange);
                }
            }
            Direction::FromDevice => {
                if !self.device_range_ok(dbc, e.src_addr, len) {
                    return Err(CompletionCode::DeviceAddressOutOfRange);
                }
                if !self.config.map.host_range_ok(e.dest_addr, len) {
                    return Err(CompletionCode::HostAddressOutOfRange);
                }
            }
        }
        Ok(Checked { cmd, presync, postsync, doorbell })
    }

    /// Whether `[addr, addr + len)` is inside the DDR of the channel's activation.
    fn device_range_ok(&self, dbc: usize, addr: u64, len: u64) -> bool {
        let Some(act) = &self.activations[dbc] else { return false };
        let (base, size) = (act.info.ddr_base, act.info.ddr_bytes);
        addr >= base && addr.checked_add(len).is_some_and(|end| end <= base + size)
    }

    fn run_element<M: SharedMemory>(&mut self, dbc: usize, e: &RequestElement, resume: Option<usize>, mem: &M) -> Step {
        let checked = match self.check_element(dbc, e) {
            Ok(c) => c,
            Err(code) => return Step::Done { status: code as u16, respond: true, force_msi: false },
        };
        let mut status = 0;
        let first_post = match resume {
            Some(next) => next,
            None => {
                if let Some(pre) = checked.presync {
                    if !self.apply_sem(pre, mem) {
                        return Step::Blocked(Stage::Fresh);
                    }
                    let now = self.scheduler.now();
                    let outputs = self.activations[dbc]
                        .as_ref()
                        .and_then(|a| self.programs.get(a.program)?.as_ref())
                        .map_or(1, |p| u64::from(p.outputs.max(1)));
                    if let Some(act) = &mut self.activations[dbc] {
                        if pre.op == SemOp::P && pre.index == act.info.sem_outputs {
                            // An output released by a faulted run carries the fault.
                            if act.faulted_outputs > 0 {
                                act.faulted_outputs -= 1;
                                status = CompletionCode::ProgramFault as u16;
                            }
                            act.outputs_taken += 1;
                            if act.outputs_taken % outputs == 0 {
                                let at =
                                    self.config.map.run_record(dbc, act.outputs_taken / outputs) + OUTPUTS_TAKEN_FIELD;
                                let _ = mem.write(at, &now.to_le_bytes());
                            }
                        }
                    }
                }
                let map = self.config.map;
                let len = u64::from(e.len);
                let moved = match checked.cmd.direction {
                    Direction::None => Ok(()),
                    // Already on its way (simulated clock): it lands now.
                    Direction::ToDevice | Direction::FromDevice if self.prestarted.is_some() => {
                        mem.copy_finish(self.prestarted.take().unwrap_or(CopyTicket::DONE));
                        Ok(())
                    }
                    Direction::ToDevice => mem.copy(e.src_addr, map.ddr_offset() + e.dest_addr, len),
                    Direction::FromDevice => mem.copy(map.ddr_offset() + e.src_addr, e.dest_addr, len),
                };
                if moved.is_err() {
                    return Step::Done {
                        status: CompletionCode::DeviceAddressOutOfRange as u16,
                        respond: true,
                        force_msi: false,
                    };
                }
                0
            }
        };
        for (i, sem) in checked.postsync.iter().enumerate().skip(first_post) {
            let Some(sem) = *sem else { continue };
            if !self.apply_sem(sem, mem) {
                return Step::Blocked(Stage::PostSync { element: *e, next: i });
            }
        }
        if let Some(db) = checked.doorbell {
            if self.config.map.doorbell_channel(e.db_addr) == Some(dbc) {
                let now = self.scheduler.now();
                if let Some(act) = &mut self.activations[dbc] {
                    act.doorbells_pending += 1;
                    act.ready_at = now;
                }
            } else {
                let bytes = e.db_data.to_le_bytes();
                let width = db.width.bytes() as usize;
                let _ = mem.write(self.config.map.ddr_offset() + e.db_addr, &bytes[..width]);
            }
        }
        self.start_ready_program(dbc, mem);
        Step::Done { status, respond: checked.cmd.completion || status != 0, force_msi: checked.cmd.force_msi }
    }

    /// Whether a semaphore command would go ahead now (without applying it).
    fn sem_would_pass<M: SharedMemory>(&self, sem: SemCommand, mem: &M) -> bool {
        let current = (mem.load_u32(self.config.map.semaphore(sem.index), Acquire) as u16) & SEM_VALUE_MAX;
        !matches!(semaphore::apply(sem.op, sem.value, current), SemOutcome::Blocked)
    }

    /// Applies one semaphore command; false if it is a wait that is not satisfied.
    fn apply_sem<M: SharedMemory>(&self, sem: SemCommand, mem: &M) -> bool {
        let at = self.config.map.semaphore(sem.index);
        let current = (mem.load_u32(at, Acquire) as u16) & SEM_VALUE_MAX;
        match semaphore::apply(sem.op, sem.value, current) {
            SemOutcome::Blocked => false,
            SemOutcome::Proceed(v) => {
                if v != current || sem.op == SemOp::Init {
                    mem.store_u32(at, v.into(), Release);
                }
                true
            }
        }
    }

    /// Starts the channel's program if a doorbell is pending, all its inputs have
    /// landed, and the previous run has finished.
    fn start_ready_program<M: SharedMemory>(&mut self, dbc: usize, mem: &M) {
        let Some(act) = &self.activations[dbc] else { return };
        let Some(program) = self.programs.get(act.program).and_then(Option::as_ref) else { return };
        if act.doorbells_pending == 0 || act.running.is_some() {
            return;
        }
        let sem_in = self.config.map.semaphore(act.info.sem_inputs);
        let landed = (mem.load_u32(sem_in, Acquire) as u16) & SEM_VALUE_MAX;
        if landed < program.inputs {
            return;
        }
        mem.store_u32(sem_in, u32::from(landed - program.inputs), Release);
        let ddr_base = self.config.map.ddr_offset() + act.info.ddr_base;
        let now = self.scheduler.now();
        let jitter = self.config.cost.dispatch_jitter_cycles;
        let at = now + if jitter == 0 { 0 } else { splitmix(&mut self.model_rng) % (jitter + 1) };
        let job = self.scheduler.start_at(program.plan.clone(), &act.cores, ddr_base, act.trace, at);
        if let Some(act) = &mut self.activations[dbc] {
            act.doorbells_pending -= 1;
            act.running = Some(job);
            // Inputs that landed while the previous run still ran were ready at its end.
            act.current = (act.ready_at.max(act.idle_since).min(now), at);
        }
    }

    fn service_control<M: SharedMemory>(&mut self, mem: &M) -> bool {
        // Acquire: the request body was written before the sequence number.
        let seq = mem.load_u32(layout::CTRL_REQ_SEQ, Acquire);
        if seq == self.ctrl_seen {
            return false;
        }
        self.ctrl_seen = seq;
        let mut raw = [0u8; core::mem::size_of::<ControlRequest>()];
        let _ = mem.read(layout::CTRL_REQUEST_OFFSET, &mut raw);
        let req: ControlRequest = bytemuck::pod_read_unaligned(&raw);
        let (status, values, message) = match ControlCommand::decode(&req) {
            None => (
                ControlStatus::InvalidArgument,
                [0; 7],
                format!("unknown control opcode {} or argument out of range", req.opcode),
            ),
            Some(cmd) => match self.control(cmd, mem) {
                Ok(values) => (ControlStatus::Ok, values, String::new()),
                Err((status, message)) => (status, [0; 7], message),
            },
        };
        let msg = message.as_bytes();
        let msg = &msg[..msg.len().min(layout::CTRL_MESSAGE_BYTES as usize)];
        let rsp = ControlResponse { status: status as u32, message_len: msg.len() as u32, values };
        let _ = mem.write(layout::CTRL_RESPONSE_OFFSET, bytemuck::bytes_of(&rsp));
        let _ = mem.write(layout::CTRL_RESPONSE_OFFSET + RESPONSE_HEADER_BYTES, msg);
        // Release: the response is visible before the sequence number that announces it.
        mem.store_u32(layout::CTRL_RSP_SEQ, seq, Release);
        mem.wake(layout::CTRL_RSP_SEQ);
        true
    }

    fn control<M: SharedMemory>(
        &mut self,
        cmd: ControlCommand,
        mem: &M,
    ) -> Result<ControlValues, (ControlStatus, String)> {
        match cmd {
            ControlCommand::LoadProgram { host_addr, len } => {
                self.load_program(host_addr, len, mem).map(|id| [id.into(), 0, 0, 0, 0, 0, 0])
            }
            ControlCommand::UnloadProgram { program } => {
                let slot = self.programs.get_mut(program as usize).filter(|p| p.is_some());
                let Some(slot) = slot else {
                    return Err((ControlStatus::NotFound, format!("no program {program} is loaded")));
                };
                if slot.as_ref().is_some_and(|p| p.activations > 0) {
                    return Err((ControlStatus::Busy, format!("program {program} still has active activations")));
                }
                *slot = None;
                Ok([0; 7])
            }
            ControlCommand::Activate { program, dbc } => {
                self.activate(program, dbc, mem).map(ActivationInfo::to_values)
            }
            ControlCommand::Deactivate { dbc } => self.deactivate(dbc).map(|()| [0; 7]),
            ControlCommand::Status => Ok(self.status().to_values()),
            ControlCommand::Trace { dbc, on } => {
                match self.activations.get_mut(dbc as usize).and_then(Option::as_mut) {
                    Some(act) => {
                        act.trace = on;
                        Ok([0; 7])
                    }
                    None => Err((ControlStatus::NotFound, format!("channel {dbc} has no activation"))),
                }
            }
            ControlCommand::ReadProfile { dbc, seq, host_addr, len } => {
                let Some(act) = self.activations.get(dbc as usize).and_then(Option::as_ref) else {
                    return Err((ControlStatus::NotFound, format!("channel {dbc} has no activation")));
                };
                let Some((_, stats)) = act.profiles.iter().find(|(s, _)| *s == seq) else {
                    return Err((
                        ControlStatus::NotFound,
                        format!("run {seq} of channel {dbc} is not held (the device keeps the last {PROFILES_KEPT})"),
                    ));
                };
                let needed = crate::profile::encoded_len(stats) as u64;
                if needed > len {
                    return Ok([needed, 0, 0, 0, 0, 0, 0]);
                }
                if !self.config.map.host_range_ok(host_addr, needed) {
                    return Err((
                        ControlStatus::InvalidArgument,
                        format!("profile buffer [{host_addr:#x}, +{needed:#x}) is outside host memory"),
                    ));
                }
                let _ = mem.write(host_addr, &crate::profile::encode(seq, stats));
                Ok([needed, needed, 0, 0, 0, 0, 0])
            }
        }
    }

    /// A snapshot of resource use.
    pub fn status(&self) -> StatusReport {
        StatusReport {
            nsp_total: self.config.num_nsp,
            nsp_free: self.core_owner.iter().filter(|o| o.is_none()).count() as u32,
            ddr_total: self.ddr.total_bytes(),
            ddr_free: self.ddr.free_bytes(),
            fw_version: FIRMWARE_VERSION,
            programs_loaded: self.programs.iter().filter(|p| p.is_some()).count() as u32,
            active_channels: (0..NUM_DBC).filter(|&d| self.activations[d].is_some()).fold(0, |m, d| m | 1 << d),
        }
    }

    fn load_program<M: SharedMemory>(
        &mut self,
        host_addr: u64,
        len: u64,
        mem: &M,
    ) -> Result<u32, (ControlStatus, String)> {
        if !self.config.map.host_range_ok(host_addr, len) {
            return Err((
                ControlStatus::InvalidArgument,
                format!("program image [{host_addr:#x}, +{len:#x}) is outside host memory"),
            ));
        }
        let mut bytes = alloc::vec![0u8; len as usize];
        mem.read(host_addr, &mut bytes).map_err(|e| (ControlStatus::InvalidArgument, format!("{e}")))?;
        let image =
            ProgramImage::parse(&bytes).map_err(|e| (ControlStatus::Rejected, format!("program container: {e}")))?;
        if image.num_cores() > self.config.num_nsp {
            return Err((
                ControlStatus::Rejected,
                format!("program needs {} cores but the device has {}", image.num_cores(), self.config.num_nsp),
            ));
        }
        if image.vtcm_bytes > self.config.vtcm_bytes {
            return Err((
                ControlStatus::Rejected,
                format!(
                    "program needs {} bytes of VTCM per core but a core has {}",
                    image.vtcm_bytes, self.config.vtcm_bytes
                ),
            ));
        }
        if image.ddr_bytes > self.config.map.ddr_bytes {
            return Err((
                ControlStatus::Rejected,
                format!(
                    "program needs {} bytes of DDR but the device has {}",
                    image.ddr_bytes, self.config.map.ddr_bytes
                ),
            ));
        }
        let mut streams = Vec::with_capacity(image.cores.len());
        let limits = Limits { vtcm_bytes: image.vtcm_bytes, ddr_bytes: image.ddr_bytes, cores: image.num_cores() };
        for (core, stream) in image.cores.iter().enumerate() {
            let ops = nsp::validate_stream(core as u32, stream, &limits)
                .map_err(|e| (ControlStatus::Rejected, format!("program '{}': {e}", image.name)))?;
            streams.push(ops);
        }
        let count = |n: usize, what: &str| {
            u16::try_from(n)
                .ok()
                .filter(|&n| n <= SEM_VALUE_MAX)
                .ok_or((ControlStatus::Rejected, format!("program has too many {what}")))
        };
        let inputs = count(image.inputs().count(), "inputs")?;
        let outputs = count(image.outputs().count(), "outputs")?;
        let program =
            Program { image, plan: Arc::new(Plan::new(streams, &self.config.cost)), inputs, outputs, activations: 0 };
        let id = match self.programs.iter().position(Option::is_none) {
            Some(i) => {
                self.programs[i] = Some(program);
                i
            }
            None => {
                self.programs.push(Some(program));
                self.programs.len() - 1
            }
        };
        Ok(id as u32)
    }

    fn activate<M: SharedMemory>(
        &mut self,
        program: u32,
        dbc: u32,
        mem: &M,
    ) -> Result<ActivationInfo, (ControlStatus, String)> {
        let dbc = dbc as usize;
        if dbc >= NUM_DBC {
            return Err((
                ControlStatus::InvalidArgument,
                format!("channel {dbc} out of range (the device has {NUM_DBC})"),
            ));
        }
        if self.activations[dbc].is_some() {
            return Err((ControlStatus::Busy, format!("channel {dbc} already has an activation")));
        }
        let Some(prog) = self.programs.get(program as usize).and_then(Option::as_ref) else {
            return Err((ControlStatus::NotFound, format!("no program {program} is loaded")));
        };
        let need_cores = prog.image.num_cores() as usize;
        let free_cores: Vec<u32> =
            (0..self.config.num_nsp).filter(|&c| self.core_owner[c as usize].is_none()).collect();
        if free_cores.len() < need_cores {
            return Err((
                ControlStatus::NoResources,
                format!("program needs {need_cores} cores, {} of {} are free", free_cores.len(), self.config.num_nsp),
            ));
        }
        let free_sems: Vec<u8> =
            (0..NUM_SEMAPHORES).filter(|&s| self.sem_owner[s as usize].is_none()).take(2).collect();
        if free_sems.len() < 2 {
            return Err((
                ControlStatus::NoResources,
                String::from("no free semaphores (each activation needs 2 of the 32)"),
            ));
        }
        let ddr_bytes = prog.image.ddr_bytes.max(1);
        let Some(ddr_base) = self.ddr.alloc(ddr_bytes) else {
            return Err((
                ControlStatus::NoResources,
                format!("no {ddr_bytes}-byte DDR extent free ({} bytes free in all)", self.ddr.free_bytes()),
            ));
        };
        let ddr_region = self.config.map.ddr_offset() + ddr_base;
        // A timing run reads nothing inside the device: its constants need not be there.
        let constants = if self.config.mode == ExecMode::Functional { &prog.image.constants[..] } else { &[] };
        for blob in constants {
            if mem.write(ddr_region + blob.ddr_offset, &blob.data).is_err() {
                self.ddr.release(ddr_base, ddr_bytes);
                return Err((ControlStatus::NoResources, String::from("constants do not fit in the shared region")));
            }
        }
        let cores: Vec<u32> = free_cores[..need_cores].to_vec();
        let mut core_mask = 0u64;
        for &c in &cores {
            self.core_owner[c as usize] = Some(dbc);
            core_mask |= 1 << c;
        }
        for &s in &free_sems {
            self.sem_owner[s as usize] = Some(dbc);
            mem.store_u32(self.config.map.semaphore(s), 0, Release);
        }
        let info = ActivationInfo {
            ddr_base,
            ddr_bytes,
            doorbell: self.config.map.doorbell(dbc),
            sem_inputs: free_sems[0],
            sem_outputs: free_sems[1],
            core_mask,
        };
        if let Some(Some(p)) = self.programs.get_mut(program as usize) {
            p.activations += 1;
        }
        self.activations[dbc] = Some(Activation {
            program: program as usize,
            info,
            cores,
            doorbells_pending: 0,
            running: None,
            faulted_outputs: 0,
            runs: 0,
            profiles: VecDeque::new(),
            trace: false,
            idle_since: self.scheduler.now(),
            ready_at: 0,
            current: (0, 0),
            outputs_taken: 0,
        });
        for seq in 1..=aicsim_abi::run_record::RUN_RECORDS {
            let _ = mem.write(self.config.map.run_record(dbc, seq), bytemuck::bytes_of(&RunRecord::default()));
        }
        self.reset_timed_channel(dbc, mem);
        let map = self.config.map;
        self.channels[dbc].reset(self.ring, &map, dbc, mem);
        Ok(info)
    }

    fn deactivate(&mut self, dbc: u32) -> Result<(), (ControlStatus, String)> {
        let dbc = dbc as usize;
        let Some(act) = self.activations.get_mut(dbc).and_then(Option::take) else {
            return Err((ControlStatus::NotFound, format!("channel {dbc} has no activation")));
        };
        if let Some(job) = act.running {
            self.scheduler.cancel(job);
        }
        for owner in self.core_owner.iter_mut().chain(self.sem_owner.iter_mut()) {
            if *owner == Some(dbc) {
                *owner = None;
            }
        }
        self.ddr.release(act.info.ddr_base, act.info.ddr_bytes);
        if let Some(Some(p)) = self.programs.get_mut(act.program) {
            p.activations -= 1;
        }
        self.channels[dbc] = Channel::new(self.ring);
        Ok(())
    }
}

/// SplitMix64 step: the fault plan's seeded random numbers.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn raise_msi<M: SharedMemory>(dbc: usize, mem: &M) {
    // A host that polls has masked interrupts: it finds the responses by itself.
    if mem.load_u32(layout::MSI_MASK, Acquire) != 0 {
        return;
    }
    mem.fetch_or_u32(layout::MSI_PENDING, 1 << dbc, SeqCst);
    mem.fetch_add_u32(layout::MSI_SEQ, 1, SeqCst);
    fence(SeqCst);
    // The fence pairs with the host's after its store of HOST_IRQ_SLEEPING, before its last check of
    // MSI_SEQ: either it sees our increment or we see it asleep.
    if mem.load_u32(layout::HOST_IRQ_SLEEPING, Acquire) != 0 {
        mem.wake(layout::MSI_SEQ);
    }
}

mod timed;

#[cfg(test)]
mod tests;
