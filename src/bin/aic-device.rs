//! aic-device: the simulated card in a process of its own. It serves the region file a
//! host made (`Kmd::attach_external`, `aic-runner --shm`), with the hardware shape given
//! by its flags (a host whose shape differs is refused, naming both values) and the run
//! settings the host asked for in the file's header. One device per file (a lock); a
//! host may reset it through a register; a host watches it die (kill -9) and come back.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::time::{Duration, Instant};

use aicsim_abi::layout::{self, MemoryMap, RegionHeader};
use aicsim_abi::memory::SharedMemory;
use aicsim_device::firmware::MAX_NSP;
use aicsim_device::{DeviceConfig, Firmware};
use aicsim_kmd::region_file::{self, Party};
use aicsim_kmd::shm::SharedRegion;
use aicsim_kmd::threads::{serve_device, LoopControl};
use clap::Parser;

/// Longest `--wait` taken: a day.
const MAX_WAIT_SECS: f64 = 86_400.0;
/// Largest host memory or DDR taken, in MiB (1 TiB: the region is a sparse file).
const MAX_MIB: u64 = 1 << 20;

#[derive(Parser, Debug)]
#[command(name = "aic-device", about = "Run the simulated Cloud AI 100 device on a shared region file", version)]
struct Args {
    /// The region file a host made (or will make).
    #[arg(long = "shm")]
    shm: PathBuf,
    /// Seconds to wait for a host to make the file.
    #[arg(long = "wait", default_value_t = 10.0)]
    wait: f64,
    #[arg(long = "num-nsp", default_value_t = 16)]
    num_nsp: u32,
    #[arg(long = "ring-nelem", default_value_t = 512)]
    ring_nelem: u32,
    #[arg(long = "host-mib", default_value_t = 1024)]
    host_mib: u64,
    #[arg(long = "ddr-mib", default_value_t = 16384)]
    ddr_mib: u64,
}

/// The device's hardware shape from its flags, every value checked.
fn hardware(args: &Args) -> Result<(DeviceConfig, Duration), String> {
    if !args.wait.is_finite() || !(0.0..=MAX_WAIT_SECS).contains(&args.wait) {
        return Err(format!("--wait {:?} is not a number of seconds in 0..={MAX_WAIT_SECS}", args.wait));
    }
    if !(1..=MAX_NSP as u32).contains(&args.num_nsp) {
        return Err(format!("--num-nsp {} is not in 1..={MAX_NSP}", args.num_nsp));
    }
    if aicsim_abi::dbc::Ring::new(args.ring_nelem).is_none() || args.ring_nelem > 1 << 16 {
        return Err(format!("--ring-nelem {} is not a power of two in 2..=65536", args.ring_nelem));
    }
    let mib = |flag: &str, v: u64| {
        if (1..=MAX_MIB).contains(&v) {
            Ok(v << 20)
        } else {
            Err(format!("{flag} {v} is not in 1..={MAX_MIB} (MiB)"))
        }
    };
    let map = MemoryMap {
        ring_nelem: args.ring_nelem,
        host_bytes: mib("--host-mib", args.host_mib)?,
        ddr_bytes: mib("--ddr-mib", args.ddr_mib)?,
    };
    let config = DeviceConfig { num_nsp: args.num_nsp, map, ..DeviceConfig::default() };
    Ok((config, Duration::from_secs_f64(args.wait)))
}

/// Opens and claims the region file, waiting (up to `wait`) for a host to make it and
/// write its header; checks the host made it for this device's shape.
fn attach(path: &Path, config: &DeviceConfig, wait: Duration) -> Result<(SharedRegion, RegionHeader), String> {
    let deadline = Instant::now() + wait;
    let file = loop {
        match region_file::open(path, false) {
            Ok(f) => break f,
            Err(e) if e.kind() != std::io::ErrorKind::NotFound || Instant::now() >= deadline => {
                return Err(format!("cannot open {}: {e}", path.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    region_file::claim(&file, path, Party::Device).map_err(|e| e.to_string())?;
    let header = loop {
        match region_file::read_header(&file) {
            Ok(Some(h)) => break h,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => return Err(format!("no host wrote a region header into {} within {wait:?}", path.display())),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
    };
    if let Some(why) =
        region_file::shape_mismatch(&header, config.num_nsp, &config.map, "in the region", "on this device")
    {
        return Err(format!("the host made {} for another device: {why}", path.display()));
    }
    let size = config.map.total_bytes();
    let region = SharedRegion::from_file(file, size).map_err(|e| format!("cannot map {}: {e}", path.display()))?;
    Ok((region, header))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (hardware, wait) = match hardware(&args) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("aic-device: {e}");
            return ExitCode::from(2);
        }
    };
    let (region, header) = match attach(&args.shm, &hardware, wait) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("aic-device: {e}");
            return ExitCode::from(2);
        }
    };
    let mut firmware = Firmware::new(hardware.with_run_settings(&header));
    firmware.boot(&region);
    let mut resets_seen = region.load_u32(layout::RESET_REQUEST, Acquire);
    region.store_u32(layout::RESET_DONE, resets_seen, Release);
    serve_device(&region, &mut firmware, Duration::from_micros(50), |firmware| {
        // A function-level reset: reboot with the run settings the header asks for now.
        let asked = region.load_u32(layout::RESET_REQUEST, Acquire);
        if asked != resets_seen {
            resets_seen = asked;
            let header = layout::read_region_header(&region).unwrap_or(header);
            *firmware = Firmware::new(hardware.with_run_settings(&header));
            firmware.scrub_ddr(&region);
            firmware.boot(&region);
            region.store_u32(layout::RESET_DONE, asked, Release);
        }
        LoopControl::Run
    });
    ExitCode::SUCCESS
}
