//! Writes the seeds of the `elements` and `control` fuzz targets (fuzz/corpus): the
//! elements of a real inference on the fuzzed channel, and sequences of well-formed
//! control requests, laid out as the targets read their input. scripts/fuzz.sh runs it
//! before fuzzing, so the seeds always match the device the targets build.
//!
//! `cargo run -p aicsim-device --example fuzz_seeds -- fuzz/corpus`

use aicsim_abi::control::{ControlCommand, ControlRequest};
use aicsim_abi::dbc::RequestElement;
use aicsim_device::rig::{inference_elements, Rig, Witness};
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn elements(list: &[RequestElement]) -> Vec<u8> {
    list.iter().flat_map(|e| bytemuck::bytes_of(e).to_vec()).collect()
}

fn requests(list: &[ControlCommand]) -> Vec<u8> {
    list.iter().flat_map(|c| bytemuck::bytes_of::<ControlRequest>(&c.encode()).to_vec()).collect()
}

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    // The elements target's device: the witness on channel 1, then the same program on
    // channel 0, the fuzzed one.
    let mut rig = Rig::small();
    let witness = Witness::activate(&mut rig, 1);
    let info = rig.activate(0, 0).expect("the program activates on a second channel");
    let host = rig.map.host_offset();
    let (one, _) = inference_elements(info, &witness.image, &[64], host);
    let dir = root.join("elements");
    write(&dir, "inference", &elements(&one))?;
    write(&dir, "two-inferences", &elements(&[one.clone(), one.clone()].concat()))?;
    write(&dir, "input-only", &elements(&one[..1]))?;
    write(&dir, "output-first", &elements(&[one[1], one[0]]))?;
    let mut short = one.clone();
    short[0].len = 16;
    write(&dir, "short-input", &elements(&short))?;

    let staged = rig.staging();
    let container = witness.image.to_bytes().len() as u64;
    let dir = root.join("control");
    write(&dir, "status", &requests(&[ControlCommand::Status]))?;
    write(
        &dir,
        "load-activate-trace-deactivate-unload",
        &requests(&[
            ControlCommand::LoadProgram { host_addr: staged, len: container },
            ControlCommand::Activate { program: 1, dbc: 0 },
            ControlCommand::Trace { dbc: 0, on: true },
            ControlCommand::Deactivate { dbc: 0 },
            ControlCommand::UnloadProgram { program: 1 },
        ]),
    )?;
    write(
        &dir,
        "read-profile",
        &requests(&[ControlCommand::ReadProfile { dbc: 1, seq: 1, host_addr: host, len: 4096 }]),
    )?;
    write(
        &dir,
        "move-the-witness",
        &requests(&[ControlCommand::Deactivate { dbc: 1 }, ControlCommand::Activate { program: 0, dbc: 1 }]),
    )?;
    write(&dir, "unload-while-active", &requests(&[ControlCommand::UnloadProgram { program: 0 }]))?;
    println!("wrote element and control seeds under {}", root.display());
    Ok(())
}
