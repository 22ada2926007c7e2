//! Shared helpers for the kmd integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use aicsim_abi::container::IoDType;
use aicsim_abi::control::ActivationInfo;
use aicsim_abi::layout::MemoryMap;
use aicsim_device::DeviceConfig;
use aicsim_kmd::uapi::{AttachSliceEntry, ExecuteEntry, Sem, DIR_FROM_DEVICE, DIR_TO_DEVICE};
use aicsim_kmd::{Client, Kmd, KmdConfig, Stepping};

/// A small device: 8-element rings unless told otherwise, 4 MiB of host memory and DDR.
pub fn small_kmd(ring_nelem: u32, stepping: Stepping, first_req_id: u16) -> Arc<Kmd> {
    let config = KmdConfig {
        device: DeviceConfig {
            num_nsp: 4,
            vtcm_bytes: 64 << 10,
            map: MemoryMap { ring_nelem, host_bytes: 4 << 20, ddr_bytes: 4 << 20 },
            ..Default::default()
        },
        stepping,
        first_req_id,
        ..Default::default()
    };
    Arc::new(Kmd::new(config).expect("device boots"))
}

/// `bytes` in, the same bytes out.
pub fn copy_program(bytes: u32) -> Vec<u8> {
    aicsim_abi::programs::copy_program("copy", IoDType::U8, &[bytes]).to_bytes()
}

/// Loads the copy program, activates it, and slices an input and an output buffer.
pub fn setup(client: &Client) -> (u32, u32, u32) {
    let program = client.load_program(&copy_program(64)).unwrap();
    let (dbc, info) = client.activate(program).unwrap();
    let (input, output) = pair(client, dbc, info);
    (dbc, input, output)
}

/// An input and an output buffer of 64 bytes sliced for the copy program's activation
/// on `dbc`: the input rings the doorbell, the output waits for the run.
pub fn pair(client: &Client, dbc: u32, info: ActivationInfo) -> (u32, u32) {
    let (input, output) = (client.create_bo(64).unwrap(), client.create_bo(64).unwrap());
    let mut in_slice = AttachSliceEntry {
        size: 64,
        dev_addr: info.ddr_base,
        db_addr: info.doorbell,
        db_data: 1,
        db_len: 32,
        ..Default::default()
    };
    in_slice.sems[0] = Sem { val: 1, index: info.sem_inputs, cmd: 2, ..Default::default() };
    let mut out_slice = AttachSliceEntry { size: 64, dev_addr: info.ddr_base + 64, ..Default::default() };
    out_slice.sems[0] = Sem { index: info.sem_outputs, presync: 1, cmd: 6, ..Default::default() };
    client.attach_slice_bo(input, dbc, DIR_TO_DEVICE, &[in_slice]).unwrap();
    client.attach_slice_bo(output, dbc, DIR_FROM_DEVICE, &[out_slice]).unwrap();
    (input, output)
}

pub fn both(input: u32, output: u32) -> [ExecuteEntry; 2] {
    [ExecuteEntry { handle: input, dir: DIR_TO_DEVICE }, ExecuteEntry { handle: output, dir: DIR_FROM_DEVICE }]
}
