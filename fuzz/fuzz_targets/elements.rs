//! DMA Bridge Channel request elements from the fuzzer, queued on channel 0 of a device
//! whose channel 1 runs real inferences. Each 64 bytes of input is one element, pushed
//! with the CRC the driver writes beside it (so the fuzzer reaches the checks behind
//! the CRC: commands, addresses, lengths, semaphores, doorbells).
//!
//! Checked after every element: nothing panics; every response answers exactly one
//! element (response tags rise, never repeat), carrying that element's request id; and the witness channel
//! still moves its own bytes exactly.
#![no_main]

use aicsim_abi::dbc::RequestElement;
use aicsim_device::rig::{Rig, Witness};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rig = Rig::small();
    let witness = Witness::activate(&mut rig, 1);
    // The fuzzed channel runs the same program, so its doorbell, semaphores and DDR
    // are real targets for the elements.
    rig.activate(0, 0).expect("the witness's program activates on a second channel");
    let mut req_ids = Vec::new();
    let mut last_tag: Option<u32> = None;
    for (k, chunk) in data.chunks_exact(64).take(64).enumerate() {
        let raw: &[u8; 64] = chunk.try_into().expect("64 bytes");
        let element: RequestElement = bytemuck::pod_read_unaligned(raw);
        if !rig.push(0, raw) {
            break;
        }
        req_ids.push(element.req_id);
        rig.run();
        // An element that asks for no completion and succeeds is not answered, so the
        // tags may skip; they never repeat, go back, or name an element not queued.
        for (tag, response) in rig.drain_tagged(0) {
            assert!(last_tag.is_none_or(|last| tag > last), "response tags rise: {tag} after {last_tag:?}");
            assert!((tag as usize) < req_ids.len(), "tag {tag} names an element never queued");
            assert_eq!(
                response.req_id, req_ids[tag as usize],
                "a response carries the request id of the element it answers"
            );
            last_tag = Some(tag);
        }
        assert!(witness.serves(&mut rig, k as u8), "the witness channel kept serving exactly");
    }
});
