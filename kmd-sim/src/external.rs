//! A device in another process (`aic-device --shm FILE`): attaching to it, telling it
//! what the host wants (the [`RegionHeader`]), resetting it (a function-level reset
//! through a register), re-attaching after it was restarted, and watching it from a
//! third process without touching its rings ([`observe`]).

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering::{Acquire, SeqCst};
use std::time::{Duration, Instant};

use aicsim_abi::control::StatusReport;
use aicsim_abi::dbc::Ring;
use aicsim_abi::layout::{self, DeviceStatus, RegionHeader, REGION_VERSION};
use aicsim_abi::memory::SharedMemory;

use crate::error::{fail, Errno, KmdError, Result};
use crate::region_file::{self, Party};
use crate::shm::SharedRegion;
use crate::{threads, Kmd, KmdConfig, Shared, Stepping};

fn io_error(path: &Path, what: &str, e: std::io::Error) -> KmdError {
    let errno = match e.kind() {
        std::io::ErrorKind::AddrInUse => Errno::EBUSY,
        std::io::ErrorKind::NotFound => Errno::ENOENT,
        _ => Errno::EINVAL,
    };
    KmdError::new(errno, format!("{what} {}: {e}", path.display()))
}

impl Kmd {
    /// The driver for a device that runs in another process (`aic-device --shm PATH`).
    ///
    /// The region file is opened without following symbolic links and created 0600 if
    /// missing; only one host may be attached to it at a time (EBUSY). If a device
    /// process already serves the file, its hardware shape must be this host's (EINVAL
    /// naming both values otherwise); the host writes its run settings (mode, pacing,
    /// seed) into the header and resets the device so it starts clean with them. If not,
    /// the host makes a fresh region (zeroed, with its header) and waits up to `wait` for
    /// a device. Either way the device's liveness is then judged by its heartbeat: if it
    /// stands still longer than [`KmdConfig::liveness_timeout`], waiters fail with ENODEV.
    pub fn attach_external(config: KmdConfig, path: &Path, wait: Duration) -> Result<Kmd> {
        let map = config.device.map;
        let Some(ring) = Ring::new(map.ring_nelem) else {
            return fail(Errno::EINVAL, format!("ring size {} is not a power of two >= 2", map.ring_nelem));
        };
        let size = map.total_bytes();
        let file = region_file::open(path, true).map_err(|e| io_error(path, "cannot open the region file", e))?;
        region_file::claim(&file, path, Party::Host).map_err(|e| io_error(path, "cannot attach to", e))?;
        let header = config.device.region_header();
        // A device process that holds the file but found no header yet is waiting for
        // this host to make the region: it counts as not yet up.
        let held = region_file::held(&file, Party::Device).map_err(|e| io_error(path, "cannot query", e))?;
        let live = held && region_file::read_header(&file).ok().flatten().is_some();
        if live {
            Kmd::check_live_device(&file, path, &config, size)?;
        } else if file.metadata().map(|m| m.len()).unwrap_or(0) != size {
            file.set_len(size).map_err(|e| io_error(path, "cannot size the region file", e))?;
        }
        let region = SharedRegion::from_file(file, size).map_err(|e| io_error(path, "cannot map", e))?;
        if !live {
            // Nothing of an earlier run is left for the device that comes.
            region.zero(0, size).expect("the whole region");
        }
        region.write(layout::REGION_HEADER, bytemuck::bytes_of(&header)).expect("header inside the region");
        let shared = Shared::new(region, ring, KmdConfig { stepping: Stepping::Threads, ..config }, true);
        let irq = threads::spawn_irq(shared.clone());
        let kmd = Kmd { shared, threads: vec![irq] };
        if live {
            kmd.function_level_reset()?;
        } else {
            kmd.wait_online(wait)?;
        }
        Ok(kmd)
    }

    /// A device process already serves the file: it must have the shape this host has.
    fn check_live_device(file: &File, path: &Path, config: &KmdConfig, size: u64) -> Result<()> {
        let theirs = region_file::read_header(file).map_err(|e| io_error(path, "cannot read the header of", e))?;
        let Some(theirs) = theirs else {
            return fail(Errno::EINVAL, format!("the header of {} went missing", path.display()));
        };
        if theirs.version != REGION_VERSION {
            return fail(
                Errno::EINVAL,
                format!("{} has layout version {}; this host has {REGION_VERSION}", path.display(), theirs.version),
            );
        }
        let shape = region_file::shape_mismatch(
            &theirs,
            config.device.num_nsp,
            &config.device.map,
            "on the device",
            "on this host",
        );
        if let Some(why) = shape {
            return fail(Errno::EINVAL, format!("the device on {} differs: {why}", path.display()));
        }
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len != size {
            return fail(
                Errno::EINVAL,
                format!("{} is {len} bytes; this host's memory map needs {size}", path.display()),
            );
        }
        Ok(())
    }

    pub(crate) fn wait_online(&self, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        while !self.shared.online() {
            if Instant::now() >= deadline {
                return fail(Errno::ENODEV, format!("no device came up within {wait:?}"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// After an external device process died and a new one started on the same region
    /// file: forgets everything queued (waiters get ENODEV), releases every channel, and
    /// waits (up to `wait`) for the new device. Users then load and activate again.
    pub fn reattach(&self, wait: Duration) -> Result<()> {
        let shared = &self.shared;
        shared.forget_device(&mut shared.control.lock(), "the device went away while the buffer was queued");
        self.wait_online(wait)
    }

    /// A function-level reset of a device in another process: the host asks through
    /// [`layout::RESET_REQUEST`], the device reboots its firmware (with the header's run
    /// settings, DDR scrubbed) and acknowledges in [`layout::RESET_DONE`]. Waiters fail
    /// with ENODEV; users load and activate again.
    pub(crate) fn function_level_reset(&self) -> Result<()> {
        let shared = &self.shared;
        shared.forget_device(&mut shared.control.lock(), "device reset while the buffer was queued");
        let target = shared.region.fetch_add_u32(layout::RESET_REQUEST, 1, SeqCst).wrapping_add(1);
        shared.ring_device();
        let timeout = Duration::from_nanos(shared.control_timeout_ns.load(Acquire));
        let deadline = Instant::now() + timeout;
        while shared.region.load_u32(layout::RESET_DONE, Acquire) != target || !shared.online() {
            if Instant::now() >= deadline {
                return fail(Errno::ETIMEDOUT, format!("the device did not come back from a reset within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }
}

/// What a monitor sees of a region file ([`observe`]).
#[derive(Clone, Debug)]
pub struct Observation {
    /// What the host made the region for.
    pub header: RegionHeader,
    /// Whether a device process holds the file.
    pub device_attached: bool,
    /// Whether a host holds the file.
    pub host_attached: bool,
    /// The device's own status register.
    pub status: DeviceStatus,
    /// Whether its heartbeat moved while we watched.
    pub alive: bool,
    /// Its last published resource report.
    pub report: Option<StatusReport>,
}

/// Watches the device behind a region file from another process, reading only (no
/// mapping, no control request, nothing a running host could notice): who is attached,
/// the status register, whether the heartbeat moves within `liveness`, and the resource
/// report the device republishes after every control command.
pub fn observe(path: &Path, liveness: Duration) -> Result<Observation> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_error(path, "cannot open the region file", e))?;
    let header = region_file::read_header(&file).map_err(|e| io_error(path, "cannot read", e))?;
    let Some(header) = header else {
        return fail(Errno::ENODEV, format!("{} has no region header: no host made it", path.display()));
    };
    let device_attached = region_file::held(&file, Party::Device).unwrap_or(false);
    let host_attached = region_file::held(&file, Party::Host).unwrap_or(false);
    let read = |offset| region_file::read_u32(&file, offset).map_err(|e| io_error(path, "cannot read", e));
    let beat = read(layout::DEVICE_HEARTBEAT)?;
    let deadline = Instant::now() + liveness;
    let mut alive = false;
    while device_attached && Instant::now() < deadline {
        if read(layout::DEVICE_HEARTBEAT)? != beat {
            alive = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = DeviceStatus::from_raw(read(layout::DEVICE_STATUS)?);
    let mut block = [0u8; 64];
    let mut report = None;
    for _ in 0..16 {
        region_file::read_at(&file, layout::STATUS_BLOCK, &mut block).map_err(|e| io_error(path, "cannot read", e))?;
        let seq = u32::from_le_bytes(block[..4].try_into().expect("4 bytes"));
        if seq == 0 {
            break;
        }
        let again = read(layout::STATUS_BLOCK)?;
        if seq & 1 == 0 && again == seq {
            let values: [u64; 7] =
                std::array::from_fn(|k| u64::from_le_bytes(block[8 + 8 * k..16 + 8 * k].try_into().expect("8 bytes")));
            report = Some(StatusReport::from_values(values));
            break;
        }
    }
    Ok(Observation { header, device_attached, host_attached, status, alive, report })
}
