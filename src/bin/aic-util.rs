//! aic-util: queries the simulated device, in the shape of qaic-util.

use std::process::ExitCode;

use aicsim_abi::control::StatusReport;
use aicsim_abi::layout::DeviceStatus;
use aicsim_device::DeviceConfig;
use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "aic-util", about = "Query the simulated Cloud AI 100 device", version)]
struct Args {
    /// Query every device.
    #[arg(short = 'q', long = "query")]
    query: bool,
    /// Only this device id.
    #[arg(short = 'd', long = "device-id")]
    device_id: Option<u32>,
    /// NSP cores of the simulated card (16; the 16 GB Standard SKU exposes 14).
    #[arg(long = "num-nsp", default_value_t = 16)]
    num_nsp: u32,
    /// Query the device process serving this region file (`aic-device --shm FILE`) instead of starting one.
    #[arg(long = "shm")]
    shm: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.query {
        eprintln!("aic-util: nothing to do; -q queries the devices");
        return ExitCode::from(2);
    }
    if let Some(id) = args.device_id.filter(|&id| id != 0) {
        eprintln!("aic-util: device {id} does not exist (the simulator has device 0)");
        return ExitCode::from(2);
    }
    if args.num_nsp == 0 || args.num_nsp > 64 {
        eprintln!("aic-util: --num-nsp {} is not in 1..=64", args.num_nsp);
        return ExitCode::from(2);
    }
    let config =
        KmdConfig { device: DeviceConfig { num_nsp: args.num_nsp, ..DeviceConfig::default() }, ..KmdConfig::default() };
    let vtcm_kib = config.device.vtcm_bytes / 1024;
    println!("====================================");
    println!(" DEVICE 0");
    println!("====================================");
    if let Some(path) = &args.shm {
        return query_process(path, config.liveness_timeout, vtcm_kib);
    }
    let device = match Device::open_simulated(config) {
        Ok(d) => d,
        Err(e) => {
            println!("\tStatus:Error");
            println!("\tReason: {e}");
            return ExitCode::from(1);
        }
    };
    match device.status() {
        Ok(s) => {
            println!("\tStatus:Ready");
            print_report(&s, vtcm_kib);
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("\tStatus:Error");
            println!("\tReason: {e}");
            ExitCode::from(1)
        }
    }
}

fn print_report(s: &StatusReport, vtcm_kib: u64) {
    let channels: Vec<String> = (0..32).filter(|b| s.active_channels >> b & 1 == 1).map(|b| b.to_string()).collect();
    println!("\tNsp Total:{} Nsp Free:{}", s.nsp_total, s.nsp_free);
    println!("\tVtcm Size Per Nsp:{vtcm_kib} KB");
    println!("\tDDR Total:{} MB DDR Free:{} MB", s.ddr_total >> 20, s.ddr_free >> 20);
    println!("\tFirmware Version:{}.{}.{}", s.fw_version >> 16, (s.fw_version >> 8) & 0xFF, s.fw_version & 0xFF);
    println!(
        "\tActive Programs:{} Active Channels:{}",
        s.programs_loaded,
        if channels.is_empty() { "none".into() } else { channels.join(",") }
    );
}

/// The device behind a region file, as a monitor sees it: read only, nothing a running
/// host could notice.
fn query_process(path: &std::path::Path, liveness: std::time::Duration, vtcm_kib: u64) -> ExitCode {
    let seen = match aicsim_kmd::observe(path, liveness) {
        Ok(seen) => seen,
        Err(e) => {
            println!("\tStatus:Error");
            println!("\tReason: {e}");
            return ExitCode::from(1);
        }
    };
    let who = match (seen.device_attached, seen.host_attached) {
        (true, true) => "a device process and a host attached",
        (true, false) => "a device process attached, no host",
        (false, true) => "a host attached, no device process",
        (false, false) => "nothing attached",
    };
    println!("\tRegion:{} ({who})", path.display());
    let reason = if !seen.device_attached {
        Some(format!("no device process serves {}", path.display()))
    } else if !seen.alive {
        Some(format!("the device process is not responding (no heartbeat for {liveness:?})"))
    } else if seen.status == DeviceStatus::Error {
        Some("the firmware crashed; a host reset brings it back".to_string())
    } else if seen.status == DeviceStatus::Off {
        Some("the device is booting or resetting".to_string())
    } else {
        None
    };
    match reason {
        Some(why) => {
            println!("\tStatus:Error");
            println!("\tReason: {why}");
            if let Some(report) = &seen.report {
                print_report(report, vtcm_kib);
            }
            ExitCode::from(1)
        }
        None => {
            println!("\tStatus:Ready");
            match &seen.report {
                Some(report) => print_report(report, vtcm_kib),
                None => println!("\t(no resource report published yet)"),
            }
            ExitCode::SUCCESS
        }
    }
}
