//! The two threads behind a [`crate::Kmd`]: the device (firmware servicing loop) and the
//! interrupt handler (response-ring draining).

use std::sync::atomic::Ordering::{Acquire, SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aicsim_device::layout;
use aicsim_device::memory::SharedMemory;
use aicsim_device::Firmware;

use crate::Shared;

/// Longest single sleep, so a stop request is noticed even without a wake.
const MAX_SLEEP: Duration = Duration::from_millis(100);

pub(crate) fn spawn_device(shared: Arc<Shared>, mut firmware: Firmware) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("aicsim-device".into())
        .spawn(move || {
            let region = &shared.region;
            firmware.boot(region);
            let mut last_work = Instant::now();
            while !shared.stop.load(Acquire) {
                let seen = region.load_u32(layout::DEVICE_WAKE, SeqCst);
                if firmware.service(region).progressed() {
                    last_work = Instant::now();
                    continue;
                }
                if last_work.elapsed() < shared.config.device_idle_spin {
                    std::thread::yield_now();
                    continue;
                }
                region.store_u32(layout::DEVICE_SLEEPING, 1, SeqCst);
                // SeqCst: after announcing sleep, a host that bumped the wake word
                // before seeing our flag is caught here; one that bumps it later sees
                // the flag and calls futex wake.
                if region.load_u32(layout::DEVICE_WAKE, SeqCst) == seen && !shared.stop.load(Acquire) {
                    region.wait(layout::DEVICE_WAKE, seen, MAX_SLEEP);
                }
                region.store_u32(layout::DEVICE_SLEEPING, 0, SeqCst);
                last_work = Instant::now();
            }
            region.store_u32(layout::DEVICE_STATUS, layout::DeviceStatus::Off as u32, SeqCst);
        })
        .expect("spawn the device thread")
}

pub(crate) fn spawn_irq(shared: Arc<Shared>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("aicsim-irq".into())
        .spawn(move || {
            let region = &shared.region;
            let mut scratch = Vec::new();
            let mut last_work = Instant::now();
            while !shared.stop.load(Acquire) {
                let seq = region.load_u32(layout::MSI_SEQ, SeqCst);
                let pending = region.swap_u32(layout::MSI_PENDING, 0, SeqCst);
                let polling = last_work.elapsed() < shared.config.irq_poll;
                let mut consumed = 0;
                for (dbc, channel) in shared.channels.iter().enumerate() {
                    // After an MSI, its channels; while polling, every channel.
                    if pending & (1 << dbc) != 0 || polling {
                        consumed += channel.drain(dbc, region, &shared.map, shared.ring, &mut scratch);
                    }
                }
                if consumed > 0 {
                    last_work = Instant::now();
                    continue;
                }
                if polling {
                    std::thread::yield_now();
                    continue;
                }
                region.store_u32(layout::HOST_IRQ_SLEEPING, 1, SeqCst);
                // SeqCst: pairs with the device's MSI_SEQ increment and its load of
                // HOST_IRQ_SLEEPING; an MSI raised after `seq` was read is seen here or
                // wakes the futex.
                if region.load_u32(layout::MSI_SEQ, SeqCst) == seq && !shared.stop.load(Acquire) {
                    region.wait(layout::MSI_SEQ, seq, MAX_SLEEP);
                }
                region.store_u32(layout::HOST_IRQ_SLEEPING, 0, SeqCst);
            }
        })
        .expect("spawn the interrupt thread")
}
