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
//!
//! This file holds the configuration, the state and the service loop; the rest is by
//! concern: `control` (the mailbox), `programs` (containers, activations, device DDR,
//! starting and finishing runs), `channels` (the rings and their elements), `faults`
//! (injected faults and the MSI) and `timed` (the simulated clock).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::fence;
use core::sync::atomic::Ordering::{Acquire, Release, SeqCst};

use crate::extent::ExtentAllocator;
use crate::nsp::{self, CostModel, Limits, NspCore};
use crate::scheduler::{ExecMode, JobId, Plan, RunProfile, Scheduler};
use aicsim_abi::container::ProgramImage;
use aicsim_abi::control::{
    ActivationInfo, ControlCommand, ControlResponse, ControlStatus, ControlValues, StatusReport,
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
use alloc::boxed::Box;
use alloc::sync::Arc;

/// Firmware version reported in [`layout::FW_VERSION`]: 0.1.0.
pub const FIRMWARE_VERSION: u32 = 1 << 8;

/// Most elements one channel processes per `service` call, so that one busy channel
/// cannot starve the others.
const CHANNEL_BATCH: u32 = 64;

/// Run statistics each activation keeps for the host to read.
pub const PROFILES_KEPT: usize = 256;

/// The most NSP cores a device has: an activation's cores are a 64-bit mask.
pub const MAX_NSP: usize = 64;

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
    /// Wall-clock nanoseconds the device takes over each control command, between
    /// taking it from the mailbox and answering it (a slow device: a host with a
    /// shorter control timeout gives up on commands the device is running).
    pub slow_control_ns: u64,
    /// Up to this many more nanoseconds per control command, drawn from the plan's seed.
    pub slow_control_jitter_ns: u64,
    /// After this many elements the firmware panics (a crash: the device reports an
    /// Error until it is reset).
    pub panic_after_elements: Option<u64>,
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

impl DeviceConfig {
    /// The header a host writes into a region file it makes for a device process: this
    /// configuration's hardware shape and run settings.
    pub fn region_header(&self) -> layout::RegionHeader {
        layout::RegionHeader {
            magic: layout::REGION_MAGIC,
            version: layout::REGION_VERSION,
            num_nsp: self.num_nsp,
            ring_nelem: self.map.ring_nelem,
            host_bytes: self.map.host_bytes,
            ddr_bytes: self.map.ddr_bytes,
            mode: match self.mode {
                ExecMode::Functional => 0,
                ExecMode::Timing => 1,
            },
            pacing: match self.pacing {
                Pacing::None => 0,
                Pacing::Wall => 1,
                Pacing::Simulated => 2,
            },
            seed: self.seed,
        }
    }

    /// This configuration with the run settings a host asked for in `header` (its mode,
    /// pacing and seed; the hardware shape stays this device's own).
    pub fn with_run_settings(self, header: &layout::RegionHeader) -> DeviceConfig {
        DeviceConfig {
            mode: if header.mode == 1 { ExecMode::Timing } else { ExecMode::Functional },
            pacing: match header.pacing {
                1 => Pacing::Wall,
                2 => Pacing::Simulated,
                _ => Pacing::None,
            },
            seed: header.seed,
            ..self
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
    /// Request elements taken since the activation: each response carries the count
    /// before its element as its tag ([`MemoryMap::response_tag`]).
    taken: u32,
}

impl Channel {
    fn new(ring: Ring) -> Channel {
        Channel { requests: Consumer::new(ring), responses: Producer::new(ring), stage: Stage::Fresh, taken: 0 }
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
    /// One per entry of the image.
    entries: Vec<EntryPlan>,
    activations: u32,
}

/// What the device needs to start one entry of a program.
struct EntryPlan {
    plan: Arc<Plan>,
    inputs: u16,
    outputs: u16,
}

struct Activation {
    program: usize,
    info: ActivationInfo,
    cores: heapless::Vec<u32, MAX_NSP>,
    /// The entries of the doorbells rung whose run has not started yet (waiting for
    /// inputs or for the previous run), oldest first.
    pending: alloc::collections::VecDeque<u8>,
    /// The run in progress on the scheduler, and its entry.
    running: Option<JobId>,
    running_entry: u8,
    /// Finished runs whose outputs are not all taken yet: (run, outputs left), oldest
    /// first.
    released: alloc::collections::VecDeque<(u64, u16)>,
    /// Outputs of faulted runs still to be reported on their output elements.
    faulted_outputs: u32,
    runs: u64,
    /// Statistics of the latest runs, oldest first, at most [`PROFILES_KEPT`].
    profiles: Box<heapless::Deque<(u64, RunProfile), PROFILES_KEPT>>,
    /// Record every instruction's interval.
    trace: bool,
    /// When the cores last became free.
    idle_since: u64,
    /// When the pending doorbell's inputs had all landed.
    ready_at: u64,
    /// Ready and start cycles of the run in progress.
    current: (u64, u64),
}

/// What serving the head element came to.
enum ElementOutcome {
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
        assert!((1..=MAX_NSP as u32).contains(&config.num_nsp), "num_nsp must be 1 to {MAX_NSP}");
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
    pub fn last_run(&self, dbc: usize) -> Option<&RunProfile> {
        self.activations.get(dbc)?.as_ref()?.profiles.back().map(|(_, s)| s)
    }

    /// Brings the device up: clears the device-owned registers and semaphores, publishes
    /// the firmware version and its resource report, and marks the device ready (a
    /// reboot over used memory calls [`Firmware::scrub_ddr`] first). A control request an earlier firmware had taken is dropped (its host sees
    /// the mailbox free, unanswered), so a device restarted over a live region never runs
    /// a command twice.
    pub fn boot<M: SharedMemory>(&mut self, mem: &M) {
        let map = self.config.map;
        for dbc in 0..NUM_DBC {
            self.channels[dbc].reset(self.ring, &map, dbc, mem);
        }
        for s in 0..NUM_SEMAPHORES {
            mem.store_u32(map.semaphore(s), 0, Release);
        }
        aicsim_abi::control::reboot(mem);
        aicsim_abi::control::publish_status(mem, self.status());
        mem.store_u32(layout::FW_VERSION, FIRMWARE_VERSION, Release);
        mem.store_u32(layout::DEVICE_STATUS, DeviceStatus::Ready as u32, Release);
    }

    /// Makes all of DDR read as zeros: a reboot over a region an earlier boot used hands
    /// nothing of its users' data to the next ones. (A fresh region is zeros already.)
    pub fn scrub_ddr<M: SharedMemory>(&self, mem: &M) {
        let _ = mem.discard(self.config.map.ddr_offset(), self.config.map.ddr_bytes);
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
}

/// SplitMix64 step: the fault plan's seeded random numbers.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

mod channels;
mod control;
mod faults;
mod programs;
mod timed;

#[cfg(test)]
mod tests;
