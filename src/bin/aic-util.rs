//! aic-util: queries the simulated device, in the shape of qaic-util.

use std::process::ExitCode;

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
    let device = match Device::open_simulated(config) {
        Ok(d) => d,
        Err(e) => {
            println!("    Status:Error");
            println!("    Reason: {e}");
            return ExitCode::from(1);
        }
    };
    match device.status() {
        Ok(s) => {
            let channels: Vec<String> =
                (0..32).filter(|b| s.active_channels >> b & 1 == 1).map(|b| b.to_string()).collect();
            println!("    Status:Ready");
            println!("    Nsp Total:{} Nsp Free:{}", s.nsp_total, s.nsp_free);
            println!("    Vtcm Size Per Nsp:{vtcm_kib} KB");
            println!("    DDR Total:{} MB DDR Free:{} MB", s.ddr_total >> 20, s.ddr_free >> 20);
            println!(
                "    Firmware Version:{}.{}.{}",
                s.fw_version >> 16,
                (s.fw_version >> 8) & 0xFF,
                s.fw_version & 0xFF
            );
            println!(
                "    Active Programs:{} Active Channels:{}",
                s.programs_loaded,
                if channels.is_empty() { "none".into() } else { channels.join(",") }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("    Status:Error");
            println!("    Reason: {e}");
            ExitCode::from(1)
        }
    }
}
