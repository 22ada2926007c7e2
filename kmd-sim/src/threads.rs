//! The device's service loop (run by the in-process device thread or by the
//! `aic-device` process) and the interrupt handler thread.

use std::sync::atomic::fence;
use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aicsim_abi::layout;
use aicsim_abi::memory::SharedMemory;
use aicsim_device::Firmware;

use crossbeam_utils::Backoff;

use crate::shm::SharedRegion;
use crate::Shared;

/// Longest single sleep of the device, so stop requests and heartbeats keep flowing.
const MAX_SLEEP: Duration = Duration::from_millis(20);

/// How long the device keeps polling (rather than sleeping) while it is held at the
/// hosts' horizon on the simulated clock: the host's next promise is usually a reaction
/// to a completion just posted, tens of microseconds of wall time away, and a sleep
/// and wake-up cost about as much again.
const HELD_SPIN: Duration = Duration::from_millis(1);

/// What the device loop should do before its next pass.
pub enum LoopControl {
    /// Service the rings.
    Run,
    /// Do nothing this pass (the host holds the device halted).
    Pause,
    /// Answer control requests only; leave the rings alone (the host reconciles its
    /// channels after the link came back, before the datapath resumes).
    ControlOnly,
    /// Leave the loop.
    Stop,
}

/// The device's service loop, shared by the in-process device thread and the
/// `aic-device` process: service, publish a heartbeat, poll briefly after work, then
/// sleep on the wake word (at most [`MAX_SLEEP`]). `control` runs before every pass and
/// may replace the firmware (a reboot). The firmware's fault plan may slow it down (a
/// pause per element served, and per control command between taking and answering it)
/// or crash it (a panic: the device reports an Error until a reboot).
pub fn serve_device(
    region: &SharedRegion,
    firmware: &mut Firmware,
    idle_spin: Duration,
    mut control: impl FnMut(&mut Firmware) -> LoopControl,
) {
    let booted = Instant::now();
    let mut last_work = Instant::now();
    // Set when the firmware panicked: it is not run again until a reboot replaces it
    // (the device reports an Error, so its host fails waiters with ENODEV).
    let mut crashed = false;
    // Polls back off: a few rounds of spinning (a completion microseconds away is caught
    // without giving up the core), then yielding so the other threads of a small machine run.
    let backoff = Backoff::new();
    loop {
        let control_only = match control(firmware) {
            LoopControl::Stop => break,
            LoopControl::Pause => {
                std::thread::sleep(Duration::from_micros(20));
                continue;
            }
            LoopControl::Run => false,
            LoopControl::ControlOnly => true,
        };
        region.fetch_add_u32(layout::DEVICE_HEARTBEAT, 1, Relaxed);
        if crashed {
            // A reboot by the control hook marks the device ready again.
            if region.load_u32(layout::DEVICE_STATUS, Acquire) != layout::DeviceStatus::Ready as u32 {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            crashed = false;
        }
        let seen = region.load_u32(layout::DEVICE_WAKE, SeqCst);
        let wall_ns = booted.elapsed().as_nanos() as u64;
        let faults = firmware.config().faults;
        let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if faults.slow_control_ns > 0 || faults.slow_control_jitter_ns > 0 {
                firmware.service_control_with(region, |ns| std::thread::sleep(Duration::from_nanos(ns)));
            }
            if control_only {
                let control = firmware.service_control_with(region, |_| {});
                aicsim_device::firmware::Serviced { control, ..Default::default() }
            } else {
                firmware.service_at(region, Some(wall_ns))
            }
        }));
        let Ok(done) = pass else {
            region.store_u32(layout::DEVICE_STATUS, layout::DeviceStatus::Error as u32, SeqCst);
            region.fetch_add_u32(layout::MSI_SEQ, 1, SeqCst);
            region.wake(layout::MSI_SEQ);
            region.wake(layout::CTRL_RSP_SEQ);
            crashed = true;
            continue;
        };
        if done.progressed() {
            if faults.slow_element_ns > 0 && done.elements > 0 {
                std::thread::sleep(Duration::from_nanos(faults.slow_element_ns * u64::from(done.elements)));
            }
            last_work = Instant::now();
            backoff.reset();
            continue;
        }
        // A paced program still running finishes on the wall clock: keep polling.
        let spin = if firmware.held_by_hosts() { idle_spin.max(HELD_SPIN) } else { idle_spin };
        if last_work.elapsed() < spin || firmware.busy() {
            backoff.snooze();
            continue;
        }
        backoff.reset();
        region.store_u32(layout::DEVICE_SLEEPING, 1, SeqCst);
        fence(SeqCst);
        // After announcing sleep, a host that bumped the wake word before seeing our
        // flag is caught here; one that bumps it later sees the flag and wakes us.
        if region.load_u32(layout::DEVICE_WAKE, SeqCst) == seen {
            region.wait(layout::DEVICE_WAKE, seen, MAX_SLEEP);
        }
        region.store_u32(layout::DEVICE_SLEEPING, 0, SeqCst);
        last_work = Instant::now();
    }
    region.store_u32(layout::DEVICE_STATUS, layout::DeviceStatus::Off as u32, SeqCst);
}

pub(crate) fn spawn_device(shared: Arc<Shared>, mut firmware: Firmware) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("aicsim-device".into())
        .spawn(move || {
            let region = &shared.region;
            firmware.boot(region);
            let config = shared.config;
            serve_device(region, &mut firmware, config.device_idle_spin, |firmware| {
                if shared.stop.load(Acquire) {
                    return LoopControl::Stop;
                }
                if !shared.halt.load(Acquire) {
                    // With the link down nothing reaches the device and it reaches
                    // nothing; when it comes back, the host settles its channels
                    // over the control path before the rings move again.
                    if shared.link_down.load(Acquire) {
                        shared.link_quiet.store(true, SeqCst);
                        return LoopControl::Pause;
                    }
                    shared.link_quiet.store(false, SeqCst);
                    if shared.control_only.load(Acquire) {
                        return LoopControl::ControlOnly;
                    }
                    return LoopControl::Run;
                }
                if shared.reboot.swap(false, SeqCst) {
                    *firmware = Firmware::new(config.device);
                    firmware.scrub_ddr(region);
                    firmware.boot(region);
                    shared.halted.store(false, SeqCst);
                    shared.halt.store(false, SeqCst);
                    return LoopControl::Run;
                }
                shared.halted.store(true, SeqCst);
                LoopControl::Pause
            });
        })
        .expect("spawn the device thread")
}

/// One pass of the interrupt handler: drains the channels whose MSI is pending (every
/// active channel when `poll_all`). Returns the responses consumed.
pub(crate) fn handle_msis(
    shared: &Shared,
    poll_all: bool,
    scratch: &mut Vec<(crate::channel::Inflight, u16, u64)>,
) -> usize {
    // With the link down every register reads all-ones: there is nothing to drain.
    if shared.link_down.load(Acquire) {
        return 0;
    }
    let pending = shared.region.swap_u32(layout::MSI_PENDING, 0, SeqCst);
    let mut consumed = 0;
    for (dbc, channel) in shared.channels.iter().enumerate() {
        if pending & (1 << dbc) != 0 || poll_all {
            consumed += channel.drain(dbc, &shared.region, &shared.map, scratch);
        }
    }
    consumed
}

pub(crate) fn spawn_irq(shared: Arc<Shared>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("aicsim-irq".into())
        .spawn(move || {
            let region = &shared.region;
            let mut scratch = Vec::new();
            if let crate::CompletionMode::Polling { interval } = shared.config.completion {
                while !shared.stop.load(Acquire) {
                    if handle_msis(&shared, true, &mut scratch) == 0 {
                        std::thread::sleep(interval);
                    }
                }
                return;
            }
            let mut last_work = Instant::now();
            // Set when a sleep ended with no MSI: poll every channel once, so that a lost
            // interrupt costs at most one sleep period, never a completion.
            let mut watchdog = false;
            while !shared.stop.load(Acquire) {
                let seq = region.load_u32(layout::MSI_SEQ, SeqCst);
                let polling = last_work.elapsed() < shared.config.irq_poll || std::mem::take(&mut watchdog);
                if handle_msis(&shared, polling, &mut scratch) > 0 {
                    last_work = Instant::now();
                    continue;
                }
                if polling {
                    std::thread::yield_now();
                    continue;
                }
                region.store_u32(layout::HOST_IRQ_SLEEPING, 1, SeqCst);
                fence(SeqCst);
                // SeqCst: pairs with the device's MSI_SEQ increment and its load of
                // HOST_IRQ_SLEEPING; an MSI raised after `seq` was read is seen here or
                // wakes the futex.
                if region.load_u32(layout::MSI_SEQ, SeqCst) == seq && !shared.stop.load(Acquire) {
                    region.wait(layout::MSI_SEQ, seq, shared.config.irq_watchdog);
                    watchdog = region.load_u32(layout::MSI_SEQ, SeqCst) == seq;
                }
                region.store_u32(layout::HOST_IRQ_SLEEPING, 0, SeqCst);
            }
        })
        .expect("spawn the interrupt thread")
}
