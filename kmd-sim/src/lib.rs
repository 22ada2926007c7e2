//! `aicsim-kmd` simulates the kernel-mode driver of an AIC100-class card, together with
//! the card itself on a thread of its own.
//!
//! One [`shm::SharedRegion`] holds everything host and device share — channel
//! registers, rings, semaphores, the control mailbox, host buffer objects and device
//! DDR — laid out by [`aicsim_abi::layout::MemoryMap`]. The device firmware runs on
//! a device thread that sleeps on a futex until the host rings it; completions come
//! back through an interrupt thread that wakes only on an MSI, drains the response
//! rings and wakes the waiters of finished buffers.
//!
//! A [`Client`] is one open file of the driver: it owns buffer objects and the channels
//! it activated on, and its methods are the ioctls (CREATE_BO, MMAP_BO,
//! ATTACH_SLICE_BO, EXECUTE_BO, WAIT_BO, PERF_STATS_BO, DETACH_SLICE_BO, and the MANAGE
//! control messages). Errors are the real driver's errno values with a message.

pub mod error;
pub mod shm;
pub mod uapi;

mod bo;
mod channel;
mod client;
mod control;
mod external;
pub mod region_file;
mod shared_bytes;
pub mod threads;

use std::sync::atomic::Ordering::{Acquire, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aicsim_abi::control::{ControlCommand, StatusReport};
use aicsim_abi::dbc::{Ring, NUM_DBC};
use aicsim_abi::layout::{self, DeviceStatus, MemoryMap};
use aicsim_abi::memory::SharedMemory;
use aicsim_device::extent::ExtentAllocator;
use aicsim_device::{DeviceConfig, Firmware};
use parking_lot::Mutex;

pub use aicsim_abi::clock::NO_PROMISE;
pub use client::{BoMapping, Client, Stamp};
pub use control::LOAD_ALLOWANCE_BYTES_PER_SEC;
pub use error::{Errno, KmdError, Result};
pub use external::{observe, Observation};

use channel::HostChannel;
use error::fail;
use shm::SharedRegion;

/// Who runs the device firmware and the interrupt handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stepping {
    /// A device thread and an interrupt thread, as in a real system.
    Threads,
    /// Nothing runs until the caller calls [`Kmd::step_device`] or
    /// [`Kmd::step_interrupts`]: fully deterministic, for model and property tests.
    /// Control requests service the device inline.
    Manual,
}

/// The states a channel walks through in a subsystem restart (SSR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SsrState {
    BeforeShutdown,
    AfterShutdown,
    BeforePowerUp,
    AfterPowerUp,
    Idle,
}

/// How completions reach the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionMode {
    /// MSI on the response ring's empty -> non-empty transition; the interrupt thread
    /// drains, polls briefly (`irq_poll`), re-arms and re-checks.
    Interrupt,
    /// `datapath_polling`: interrupts masked; the poller drains every channel every
    /// `interval`.
    Polling { interval: Duration },
}

/// How the driver and its simulated device behave.
#[derive(Clone, Copy, Debug)]
pub struct KmdConfig {
    pub device: DeviceConfig,
    pub stepping: Stepping,
    pub completion: CompletionMode,
    /// The first request id each channel hands out (ids wrap at `u16::MAX`).
    pub first_req_id: u16,
    /// How long the device thread keeps polling after its last work before it sleeps.
    pub device_idle_spin: Duration,
    /// How long the interrupt thread keeps polling the rings after its last completion
    /// before it re-arms and sleeps (the driver's last-chance poll).
    pub irq_poll: Duration,
    /// How long WAIT_BO polls for the completion before it sleeps.
    pub wait_spin: Duration,
    /// Whether WAIT_BO, while it polls, drains its channel's response ring itself (busy
    /// polling) rather than only watching for the interrupt thread's completion. The
    /// interrupt path is unchanged either way.
    pub wait_busy_poll: bool,
    /// How long a control request may take before the call fails with ETIMEDOUT.
    pub control_timeout: Duration,
    /// Longest sleep of the interrupt thread; one that ends without an MSI polls every
    /// channel (the watchdog that turns a lost interrupt into latency, not a hang).
    pub irq_watchdog: Duration,
    /// How long the heartbeat of a device in another process may stand still before the
    /// device counts as gone (waiters then fail with ENODEV). Long enough for a device
    /// stopped for a moment (SIGSTOP, a loaded host) not to count as dead.
    pub liveness_timeout: Duration,
}

impl Default for KmdConfig {
    fn default() -> KmdConfig {
        KmdConfig {
            device: DeviceConfig::default(),
            stepping: Stepping::Threads,
            completion: CompletionMode::Interrupt,
            first_req_id: 0,
            device_idle_spin: Duration::from_micros(50),
            irq_poll: Duration::from_micros(20),
            wait_spin: Duration::from_micros(20),
            wait_busy_poll: true,
            control_timeout: Duration::from_secs(5),
            irq_watchdog: Duration::from_millis(100),
            liveness_timeout: Duration::from_secs(1),
        }
    }
}

/// Buffer objects are allocated in pages.
pub const PAGE_BYTES: u64 = 4096;

/// A program the driver loaded on the device.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoadedProgram {
    /// The device's id for it.
    pub device_id: u32,
    /// The user that loaded it.
    pub owner: u32,
}

pub(crate) struct Shared {
    pub region: SharedRegion,
    pub map: MemoryMap,
    pub ring: Ring,
    pub config: KmdConfig,
    pub channels: Vec<HostChannel>,
    /// Loaded programs by the id the driver handed out: the device's id for it and the
    /// user that loaded it (only that user may activate or unload it).
    pub programs: Mutex<std::collections::HashMap<u32, LoadedProgram>>,
    /// The next program id to hand out. Ids are never reused while the driver lives (the
    /// device reuses its own after an unload or a reset), so a stale id names nothing.
    pub next_program: AtomicU32,
    pub host_mem: Arc<Mutex<ExtentAllocator>>,
    /// The base control timeout now (it starts as the configuration's and may be
    /// changed at run time, as a driver's module parameter can).
    pub control_timeout_ns: std::sync::atomic::AtomicU64,
    /// The control mailbox's host side; its lock lets one command through at a time.
    pub control: Mutex<control::ControlHost>,
    pub next_user: AtomicU32,
    pub next_handle: AtomicU32,
    pub stop: AtomicBool,
    /// The firmware, when the caller steps it ([`Stepping::Manual`]).
    pub manual_firmware: Mutex<Option<Firmware>>,
    /// Reset handshake with the device thread: the host asks it to halt, it
    /// acknowledges, the host asks for a reboot.
    pub halt: AtomicBool,
    pub halted: AtomicBool,
    pub reboot: AtomicBool,
    /// The PCIe link is down: registers read all-ones, nothing reaches the device.
    pub link_down: AtomicBool,
    /// The device answers control requests only (the host settles its channels after
    /// the link came back, before the rings move again).
    pub control_only: AtomicBool,
    /// The in-process device saw the link down and stopped between passes.
    pub link_quiet: AtomicBool,
    /// The device runs in another process: its liveness is judged by its heartbeat.
    pub external: bool,
    /// Last heartbeat value seen and when it last changed.
    pub heartbeat: Mutex<(u32, Instant)>,
}

/// What the device still holds of the channels the host releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeviceSide {
    Forget,
    Retire,
}

impl Shared {
    /// Host-side state over a fresh region; masks MSIs for polling mode.
    fn new(region: SharedRegion, ring: Ring, config: KmdConfig, external: bool) -> Arc<Shared> {
        let map = config.device.map;
        let shared = Arc::new(Shared {
            region,
            map,
            ring,
            config,
            channels: (0..NUM_DBC).map(|_| HostChannel::new(ring)).collect(),
            programs: Mutex::new(std::collections::HashMap::new()),
            next_program: AtomicU32::new(0),
            host_mem: Arc::new(Mutex::new(ExtentAllocator::new(map.host_bytes, PAGE_BYTES))),
            control_timeout_ns: std::sync::atomic::AtomicU64::new(config.control_timeout.as_nanos() as u64),
            control: Mutex::new(control::ControlHost::default()),
            next_user: AtomicU32::new(1),
            next_handle: AtomicU32::new(1),
            stop: AtomicBool::new(false),
            manual_firmware: Mutex::new(None),
            halt: AtomicBool::new(false),
            halted: AtomicBool::new(false),
            reboot: AtomicBool::new(false),
            link_down: AtomicBool::new(false),
            control_only: AtomicBool::new(false),
            link_quiet: AtomicBool::new(false),
            external,
            heartbeat: Mutex::new((0, Instant::now())),
        });
        for ch in &shared.channels {
            ch.state.lock().next_req_id = config.first_req_id;
        }
        if let CompletionMode::Polling { .. } = config.completion {
            shared.region.store_u32(layout::MSI_MASK, 1, SeqCst);
        }
        shared
    }

    pub fn online(&self) -> bool {
        if self.external && !self.alive() {
            return false;
        }
        !self.link_down.load(Acquire)
            && DeviceStatus::from_raw(self.region.load_u32(layout::DEVICE_STATUS, Acquire)) == DeviceStatus::Ready
    }

    /// Whether an external device's heartbeat moved within the liveness timeout.
    fn alive(&self) -> bool {
        let beat = self.region.load_u32(layout::DEVICE_HEARTBEAT, Acquire);
        let mut last = self.heartbeat.lock();
        if beat != last.0 {
            *last = (beat, Instant::now());
            return true;
        }
        last.1.elapsed() < self.config.liveness_timeout
    }

    /// Releases every channel, failing their queued buffers with ENODEV and `why`, and
    /// clears the pending MSIs. `Forget`: the device starts over with nothing (a reset, a
    /// new device process); `Retire`: the device may still hold the activations (the
    /// link went down), so each active channel stays reserved until the device confirms
    /// its deactivation.
    fn release_all_channels(&self, why: &str, device: DeviceSide) {
        for (dbc, channel) in self.channels.iter().enumerate() {
            let error = KmdError::new(Errno::ENODEV, why);
            match device {
                DeviceSide::Forget => channel.release(dbc, &self.region, &self.map, error),
                DeviceSide::Retire => channel.retire(dbc, &self.region, &self.map, error),
            }
        }
        self.region.store_u32(layout::MSI_PENDING, 0, SeqCst);
    }

    /// Everything the host knew of the device is void (it reboots, or another process
    /// replaced it): queued buffers fail with ENODEV and `why`, channels are released,
    /// programs forgotten (the firmware comes back with none), the mailbox cleared.
    fn forget_device(&self, control: &mut control::ControlHost, why: &str) {
        self.release_all_channels(why, DeviceSide::Forget);
        self.reset_mailbox(control);
        self.programs.lock().clear();
        self.control_only.store(false, SeqCst);
    }

    /// Tells the device there is work: bump the wake word, and make the futex call only
    /// if the device said it is going to sleep.
    pub fn ring_device(&self) {
        self.region.fetch_add_u32(layout::DEVICE_WAKE, 1, SeqCst);
        std::sync::atomic::fence(SeqCst);
        // SeqCst: pairs with the device's store of DEVICE_SLEEPING before its last look
        // at DEVICE_WAKE; one of us sees the other.
        if self.region.load_u32(layout::DEVICE_SLEEPING, SeqCst) != 0 {
            self.region.wake(layout::DEVICE_WAKE);
        }
    }
}

/// The driver bound to one simulated device.
pub struct Kmd {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Kmd {
    /// Creates the shared region, boots the device on its own thread and starts the
    /// interrupt thread.
    pub fn new(config: KmdConfig) -> Result<Kmd> {
        let map = config.device.map;
        let Some(ring) = Ring::new(map.ring_nelem) else {
            return fail(Errno::EINVAL, format!("ring size {} is not a power of two >= 2", map.ring_nelem));
        };
        let region = SharedRegion::anonymous(map.total_bytes()).map_err(|e| {
            KmdError::new(Errno::ENOMEM, format!("cannot create the {}-byte shared region: {e}", map.total_bytes()))
        })?;
        let shared = Shared::new(region, ring, config, false);

        let mut firmware = Firmware::new(config.device);
        let threads = match config.stepping {
            Stepping::Threads => {
                vec![threads::spawn_device(shared.clone(), firmware), threads::spawn_irq(shared.clone())]
            }
            Stepping::Manual => {
                firmware.boot(&shared.region);
                *shared.manual_firmware.lock() = Some(firmware);
                vec![]
            }
        };
        let kmd = Kmd { shared, threads };
        let deadline = Instant::now() + config.control_timeout;
        while !kmd.shared.online() {
            if Instant::now() >= deadline {
                return fail(Errno::ENODEV, "device did not boot");
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(kmd)
    }

    /// Opens the driver: a new user with its own buffer objects and channels. The client
    /// keeps the driver (and its device) alive.
    pub fn open(self: &Arc<Kmd>) -> Client {
        Client::new(self.clone(), self.shared.clone())
    }

    pub fn memory_map(&self) -> MemoryMap {
        self.shared.map
    }

    pub fn config(&self) -> &KmdConfig {
        &self.shared.config
    }

    /// Whether the device reports itself ready.
    pub fn online(&self) -> bool {
        self.shared.online()
    }

    /// Runs one firmware service pass ([`Stepping::Manual`] only; `None` otherwise).
    pub fn step_device(&self) -> Option<aicsim_device::firmware::Serviced> {
        self.shared.manual_firmware.lock().as_mut().map(|fw| fw.service(&self.shared.region))
    }

    /// Steps the device until a pass makes no progress: every queued element that can
    /// complete has, and every program that could finish has ([`Stepping::Manual`]
    /// only). Returns the passes that made progress.
    pub fn step_device_until_idle(&self) -> Option<u32> {
        let mut passes = 0;
        while self.step_device()?.progressed() {
            passes += 1;
        }
        Some(passes)
    }

    /// Handles pending interrupts once, exactly as the interrupt thread would: drains the
    /// response ring of every channel with a raised MSI ([`Stepping::Manual`] only).
    /// Returns the responses consumed.
    pub fn step_interrupts(&self) -> Option<usize> {
        if self.shared.config.stepping != Stepping::Manual {
            return None;
        }
        Some(threads::handle_msis(&self.shared, false, &mut Vec::new()))
    }

    /// Full device reset, as the kernel driver does it: the device goes offline, every
    /// waiter fails with ENODEV, every channel is released and its queued work is lost,
    /// then the firmware reboots with no programs loaded. Users recover by loading and
    /// activating again.
    pub fn reset(&self) -> Result<()> {
        let shared = &self.shared;
        if shared.external {
            return self.function_level_reset();
        }
        let mut control = shared.control.lock();
        shared.region.store_u32(layout::DEVICE_STATUS, DeviceStatus::Off as u32, SeqCst);
        let deadline = Instant::now() + shared.config.control_timeout;
        if shared.config.stepping == Stepping::Threads {
            shared.halt.store(true, SeqCst);
            shared.ring_device();
            while !shared.halted.load(SeqCst) {
                if Instant::now() >= deadline {
                    return fail(Errno::ETIMEDOUT, "the device did not halt for the reset");
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        shared.forget_device(&mut control, "device reset while the buffer was queued");
        match shared.config.stepping {
            Stepping::Manual => {
                let mut firmware = Firmware::new(shared.config.device);
                firmware.scrub_ddr(&shared.region);
                firmware.boot(&shared.region);
                *shared.manual_firmware.lock() = Some(firmware);
            }
            Stepping::Threads => {
                shared.reboot.store(true, SeqCst);
                shared.ring_device();
                while !shared.online() {
                    if Instant::now() >= deadline {
                        return fail(Errno::ETIMEDOUT, "the device did not come back from the reset");
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
        Ok(())
    }

    /// Subsystem restart of one channel: new work gets EPIPE, waiters fail with EPIPE,
    /// the device drops the channel's activation and queued work, and the channel walks
    /// BEFORE_SHUTDOWN -> AFTER_SHUTDOWN -> BEFORE_POWER_UP -> AFTER_POWER_UP -> IDLE,
    /// released. Its user recovers by activating again; other channels carry on.
    pub fn subsystem_restart(&self, dbc: u32) -> Result<()> {
        let Some(channel) = self.shared.channels.get(dbc as usize) else {
            return fail(Errno::EINVAL, format!("channel {dbc} out of range"));
        };
        let step = |state: SsrState| {
            let mut ch = channel.state.lock();
            ch.ssr = Some(state);
            ch.ssr_history.push(state);
        };
        step(SsrState::BeforeShutdown);
        // The device forgets the activation and its queued elements (none if inactive).
        let confirmed = match self.shared.control(ControlCommand::Deactivate { dbc }) {
            Ok(_) => true,
            Err(e) => e.errno == Errno::ENOENT,
        };
        let why = KmdError::new(Errno::EPIPE, format!("channel {dbc} went through a subsystem restart"));
        if confirmed {
            channel.release(dbc as usize, &self.shared.region, &self.shared.map, why);
        } else {
            // The device may still hold it: reserved until it confirms.
            channel.retire(dbc as usize, &self.shared.region, &self.shared.map, why);
        }
        step(SsrState::AfterShutdown);
        step(SsrState::BeforePowerUp);
        step(SsrState::AfterPowerUp);
        step(SsrState::Idle);
        channel.state.lock().ssr = None;
        Ok(())
    }

    /// Programs the driver holds as loaded (every user's).
    pub fn programs_loaded(&self) -> usize {
        self.shared.programs.lock().len()
    }

    /// Changes the base control timeout from now on (what a control request may take
    /// before the call fails with ETIMEDOUT; loads get more, by their size).
    pub fn set_control_timeout(&self, timeout: Duration) {
        self.shared.control_timeout_ns.store(timeout.as_nanos().min(u64::MAX.into()) as u64, SeqCst);
    }

    /// Whether channel `dbc` is reserved because the device has not confirmed its
    /// deactivation (it is not free until the device does, or a reset).
    pub fn channel_retiring(&self, dbc: usize) -> bool {
        self.shared.channels.get(dbc).is_some_and(|c| c.state.lock().retiring)
    }

    /// The subsystem-restart states `dbc` has been through, oldest first.
    pub fn ssr_history(&self, dbc: usize) -> Vec<SsrState> {
        self.shared.channels.get(dbc).map_or(Vec::new(), |c| c.state.lock().ssr_history.clone())
    }

    /// Takes the PCIe link down (`up` false) or brings it back. While it is down the
    /// device is unreachable: registers read all-ones, calls and waits fail with ENODEV,
    /// every channel is released (its waiters get ENODEV) but stays reserved, since the
    /// device still holds its activation. When the link comes back the driver first has
    /// the device deactivate those channels, over the control path alone, so no ring
    /// slot queued before the link went down is ever served; then the datapath resumes
    /// and users activate again. No reset is needed. Fails (the link is up, the
    /// datapath held) if the device does not confirm; a reset clears that.
    pub fn set_link(&self, up: bool) -> Result<()> {
        let shared = &self.shared;
        let mut control = shared.control.lock();
        if !up {
            shared.link_down.store(true, SeqCst);
            // The device's DMA stops with the link: wait until a pass in flight ends, so
            // nothing it moves lands after the waiters were told.
            if shared.config.stepping == Stepping::Threads && !shared.external {
                let deadline = Instant::now() + shared.config.control_timeout;
                while !shared.link_quiet.load(SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            shared.release_all_channels("the PCIe link went down while the buffer was queued", DeviceSide::Retire);
            return Ok(());
        }
        if !shared.link_down.load(SeqCst) {
            return Ok(());
        }
        shared.control_only.store(true, SeqCst);
        shared.link_down.store(false, SeqCst);
        shared.settle(&mut control)
    }

    /// A channel register as the host reads it (all-ones while the link is down).
    pub fn read_register(&self, dbc: usize, reg: u64) -> u32 {
        if self.shared.link_down.load(Acquire) {
            return aicsim_abi::dbc::LINK_DOWN;
        }
        self.shared.region.load_u32(self.shared.map.dbc_reg(dbc, reg), Acquire)
    }

    /// Simulated clock: the device's progress counter, which moves whenever device time
    /// does or a response is posted.
    pub fn progress(&self) -> u32 {
        self.shared.region.load_u32(layout::DEVICE_PROGRESS, Acquire)
    }

    /// Simulated clock: waits (at most `timeout`) until the progress counter differs
    /// from `seen`. With [`Stepping::Manual`] it steps the device and the interrupt
    /// handler instead, until they make no more progress.
    pub fn wait_progress(&self, seen: u32, timeout: Duration) {
        if self.shared.config.stepping == Stepping::Manual {
            while self.step_device().is_some_and(|s| s.progressed()) {}
            self.step_interrupts();
            return;
        }
        let region = &self.shared.region;
        region.fetch_add_u32(layout::PROGRESS_WAITERS, 1, SeqCst);
        std::sync::atomic::fence(SeqCst);
        // SeqCst: pairs with the device's progress increment and its load of the waiter
        // count; a move after `seen` is seen here or wakes the futex.
        if region.load_u32(layout::DEVICE_PROGRESS, SeqCst) == seen {
            region.wait(layout::DEVICE_PROGRESS, seen, timeout);
        }
        // Wrapping add of -1.
        region.fetch_add_u32(layout::PROGRESS_WAITERS, u32::MAX, SeqCst);
    }

    /// Simulated clock: elements the device found stamped earlier than it had simulated.
    pub fn late_elements(&self) -> u32 {
        self.shared.region.load_u32(layout::LATE_ELEMENTS, Acquire)
    }

    /// MSIs the device has raised since boot.
    pub fn msi_count(&self) -> u32 {
        self.shared.region.load_u32(layout::MSI_SEQ, Acquire)
    }

    /// Interrupts the device's fault plan lost since the region was created.
    pub fn msi_lost(&self) -> u32 {
        self.shared.region.load_u32(layout::MSI_LOST, Acquire)
    }

    /// Whether the device may reach `[addr, addr + len)` of host memory through channel
    /// `dbc` (the IOMMU bitmap the driver keeps for it).
    pub fn iommu_allows(&self, dbc: usize, addr: u64, len: u64) -> bool {
        dbc < aicsim_abi::dbc::NUM_DBC
            && aicsim_abi::iommu::allows(&self.shared.region, &self.shared.map, dbc, addr, len)
    }

    /// Elements the device refused because their host pages were not mapped for the
    /// channel, since the region was created.
    pub fn iommu_faults(&self) -> u32 {
        self.shared.region.load_u32(layout::IOMMU_FAULTS, Acquire)
    }

    /// Elements whose device copy did not match the CRC the driver wrote, since the
    /// region was created.
    pub fn corrupt_elements(&self) -> u32 {
        self.shared.region.load_u32(layout::CORRUPT_ELEMENTS, Acquire)
    }

    /// Responses on `dbc` that named another request than the element they answer.
    pub fn misrouted_responses(&self, dbc: usize) -> u64 {
        self.shared.channels.get(dbc).map_or(0, |c| c.state.lock().misrouted_responses)
    }

    /// Responses that matched no queued element, per channel (a device bug or fault).
    pub fn spurious_responses(&self, dbc: usize) -> u64 {
        self.shared.channels.get(dbc).map_or(0, |c| c.state.lock().spurious_responses)
    }

    /// The device's resource report.
    pub fn status(&self) -> Result<StatusReport> {
        self.shared.control(ControlCommand::Status).map(StatusReport::from_values)
    }
}

impl Drop for Kmd {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        self.shared.ring_device();
        self.shared.region.fetch_add_u32(layout::MSI_SEQ, 1, SeqCst);
        self.shared.region.wake(layout::MSI_SEQ);
        self.shared.region.wake(layout::DEVICE_WAKE);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
