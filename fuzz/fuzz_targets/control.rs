//! Control requests from the fuzzer, posted to the device's mailbox one after another
//! (each 56 bytes of input is one request body: opcode, sequence number, six arguments;
//! the mailbox gives it its sequence number as the driver's would). Between them the
//! witness channel runs a real inference whenever its activation is still in place.
//!
//! Checked: nothing panics; every request is answered at once with a known status and,
//! for a refusal, a message; nothing leaks; the witness serves exactly while it is active; and at the
//! end the device still takes a fresh program on every channel the fuzzer freed.
#![no_main]

use aicsim_abi::control::{ControlCommand, ControlRequest, ControlStatus, StatusReport};
use aicsim_abi::dbc::NUM_DBC;
use aicsim_device::rig::{Rig, Witness};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rig = Rig::small();
    let witness = Witness::activate(&mut rig, 1);
    let mut witness_active = true;
    for (k, chunk) in data.chunks_exact(56).take(32).enumerate() {
        let req: ControlRequest = bytemuck::pod_read_unaligned(chunk);
        let decoded = ControlCommand::decode(&req);
        let reply = rig.control_raw(req).expect("every control request is answered at once");
        if reply.status != ControlStatus::Ok {
            assert!(!reply.message.is_empty(), "a refused request says why ({:?})", reply.status);
        }
        if decoded.is_none() {
            assert_ne!(reply.status, ControlStatus::Ok, "an undecodable request is refused");
        }
        match decoded {
            Some(ControlCommand::Deactivate { dbc: 1 }) if reply.status == ControlStatus::Ok => witness_active = false,
            Some(ControlCommand::Activate { dbc: 1, .. }) if reply.status == ControlStatus::Ok => {
                // Another activation now owns the witness's channel; stop checking it.
                witness_active = false
            }
            _ => {}
        }
        if witness_active {
            assert!(witness.serves(&mut rig, k as u8), "the witness channel kept serving exactly");
        }
    }
    // Free every channel: every core and every byte of DDR is free again (nothing the
    // fuzzer did leaked), and the device takes a new program and serves it.
    for dbc in 0..NUM_DBC as u32 {
        let reply = rig.control(ControlCommand::Deactivate { dbc });
        assert!(matches!(reply.status, ControlStatus::Ok | ControlStatus::NotFound), "{}", reply.message);
    }
    let reply = rig.control(ControlCommand::Status);
    assert_eq!(reply.status, ControlStatus::Ok, "{}", reply.message);
    let status = StatusReport::from_values(reply.values);
    assert_eq!(status.active_channels, 0);
    assert_eq!(status.nsp_free, status.nsp_total, "cores leaked: {status:?}");
    assert_eq!(status.ddr_free, status.ddr_total, "DDR leaked: {status:?}");
    let fresh = Witness::activate(&mut rig, 2);
    assert!(fresh.serves(&mut rig, 0xA5), "a fresh activation serves after the fuzzer's commands");
});
