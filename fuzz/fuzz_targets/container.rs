//! A program container from the fuzzer (its checksum made to match), through the device's real path: copied into host
//! memory and loaded by a control command (container parser, then the instruction
//! validator of every core's stream), and when accepted, activated and run once in
//! functional mode (when its work is within a budget) with elements queued as the runtime queues them.
//!
//! Checked: nothing panics or hangs; a rejection names its reason; the device accepts
//! only what the container parser accepts; an accepted program's run either completes
//! or leaves every element answered at most once; the channel and the program are given
//! back cleanly afterwards.
#![no_main]

use aicsim_abi::container::{reseal, ProgramImage};
use aicsim_abi::control::{ControlCommand, ControlStatus};
use aicsim_abi::isa::{Op, Tensor};
use aicsim_device::rig::Rig;
use libfuzzer_sys::fuzz_target;

/// Element operations a functional run may take: valid programs can be arbitrarily
/// heavy (a matmul whose operands fill the VTCM, a thousand of them), and the fuzzer
/// should spend its time on many inputs, not on one long computation. Heavier programs
/// are loaded, validated, activated and released, but not run.
const WORK_BUDGET: u64 = 1 << 22;

/// A bound on the element operations of a functional run of `image`.
fn work(image: &ProgramImage) -> u64 {
    let ops = image.cores.iter().flatten().filter_map(|i| i.decode().ok());
    ops.map(|op| {
        let most = |ts: &[&Tensor]| ts.iter().map(|t| t.elements()).max().unwrap_or(0);
        match op {
            Op::MatMul { dst, a, .. } => dst.elements().saturating_mul(a.dims().last().copied().unwrap_or(1).into()),
            Op::Conv2d { dst, weight, .. } => {
                let per_output = weight.elements() / u64::from(weight.dims().first().copied().unwrap_or(1).max(1));
                dst.elements().saturating_mul(per_output)
            }
            Op::Pool { dst, src, window, .. } => {
                let k = u64::from(window.kernel[0]).saturating_mul(window.kernel[1].into());
                most(&[&dst, &src]).saturating_mul(k.max(1))
            }
            Op::DmaIn { dst, src, .. }
            | Op::DmaOut { dst, src }
            | Op::Unary { dst, src, .. }
            | Op::Convert { dst, src, scales: None, .. }
            | Op::GlobalAvgPool { dst, src }
            | Op::Softmax { dst, src }
            | Op::LayerNorm { dst, src, .. }
            | Op::Reduce { dst, src, .. } => most(&[&dst, &src]),
            Op::Binary { dst, a, b, .. }
            | Op::Convert { dst, src: a, scales: Some(b), .. }
            | Op::Gather { dst, table: a, indices: b }
            | Op::Scatter { dst, src: a, indices: b } => most(&[&dst, &a, &b]),
            Op::End | Op::Signal { .. } | Op::Wait { .. } | Op::Barrier => 1,
        }
    })
    .fold(0u64, u64::saturating_add)
}

fuzz_target!(|input: &[u8]| {
    let mut rig = Rig::small();
    if input.len() as u64 > rig.map.host_bytes / 2 {
        return;
    }
    // The container's checksum is made to match, so mutations reach the structure and
    // the code behind it (the checksum's own check is covered by the proptests).
    let mut data = input.to_vec();
    reseal(&mut data);
    let data = data.as_slice();
    let parsed = ProgramImage::parse(data);
    let program = match rig.load(data, rig.staging()) {
        Ok(program) => program,
        Err(reply) => {
            assert_ne!(reply.status, ControlStatus::Ok);
            assert!(!reply.message.is_empty(), "a rejected container is rejected with a reason");
            return;
        }
    };
    let image = match parsed {
        Ok(image) => image,
        Err(e) => panic!("the device loaded a container its own parser rejects ({e})"),
    };
    let info = match rig.activate(program, 0) {
        Ok(info) => info,
        Err(reply) => {
            assert!(!reply.message.is_empty(), "a refused activation says why");
            return;
        }
    };
    let io: u64 = image.bindings.iter().map(|b| b.size_bytes).sum();
    if io <= rig.map.host_bytes / 2 && work(&image) <= WORK_BUDGET {
        let inputs: Vec<Vec<u8>> = image
            .inputs()
            .enumerate()
            .map(|(k, b)| (0..b.size_bytes).map(|i| (i as u8).wrapping_mul(17).wrapping_add(k as u8)).collect())
            .collect();
        let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        let queued = image.bindings.len();
        match rig.infer(0, info, &image, &refs, rig.map.host_offset()) {
            Ok(outputs) => {
                assert_eq!(outputs.len(), image.outputs().count());
                for (out, b) in outputs.iter().zip(image.outputs()) {
                    assert_eq!(out.len() as u64, b.size_bytes);
                }
            }
            Err(responses) => assert!(responses.len() <= queued, "an element was answered twice"),
        }
    }
    let reply = rig.control(ControlCommand::Deactivate { dbc: 0 });
    assert_eq!(reply.status, ControlStatus::Ok, "{}", reply.message);
    let reply = rig.control(ControlCommand::UnloadProgram { program });
    assert_eq!(reply.status, ControlStatus::Ok, "{}", reply.message);
});
