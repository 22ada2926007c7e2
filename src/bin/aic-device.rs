//! aic-device: the simulated card in a process of its own. It serves the region file a
//! host created with `Kmd::attach_external` (same memory-map flags on both sides), so a
//! host can watch it die (kill -9) and come back.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aicsim_abi::layout::MemoryMap;
use aicsim_device::{DeviceConfig, Firmware};
use aicsim_kmd::shm::SharedRegion;
use aicsim_kmd::threads::{serve_device, LoopControl};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "aic-device", about = "Run the simulated Cloud AI 100 device on a shared region file", version)]
struct Args {
    /// The region file the host created.
    #[arg(long = "shm")]
    shm: PathBuf,
    /// Seconds to wait for the host to create the file.
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

fn main() -> ExitCode {
    let args = Args::parse();
    let config = DeviceConfig {
        num_nsp: args.num_nsp,
        map: MemoryMap { ring_nelem: args.ring_nelem, host_bytes: args.host_mib << 20, ddr_bytes: args.ddr_mib << 20 },
        ..DeviceConfig::default()
    };
    if aicsim_abi::dbc::Ring::new(args.ring_nelem).is_none() {
        eprintln!("aic-device: --ring-nelem {} is not a power of two >= 2", args.ring_nelem);
        return ExitCode::from(2);
    }
    let size = config.map.total_bytes();
    let deadline = Instant::now() + Duration::from_secs_f64(args.wait.max(0.0));
    let region = loop {
        match SharedRegion::open_file(&args.shm, size) {
            Ok(r) => break r,
            Err(e) if Instant::now() >= deadline => {
                eprintln!("aic-device: cannot map {}: {e}", args.shm.display());
                return ExitCode::from(2);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let mut firmware = Firmware::new(config);
    firmware.boot(&region);
    serve_device(&region, &mut firmware, Duration::from_micros(50), |_| LoopControl::Run);
    ExitCode::SUCCESS
}
