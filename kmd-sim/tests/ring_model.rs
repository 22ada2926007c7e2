//! Model test of the DMA Bridge Channel rings: random produce (EXECUTE_BO), device
//! service and interrupt-handling steps run through the real driver and the real
//! firmware, stepped deterministically, and compared after every step with a model
//! built from two `VecDeque`s.

mod common;

use std::collections::VecDeque;

use aicsim_kmd::uapi::{AttachSliceEntry, ExecuteEntry, DIR_TO_DEVICE};
use aicsim_kmd::{Errno, Stepping};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    /// EXECUTE_BO with this many idle buffers (one element each).
    Submit(usize),
    /// One firmware service pass.
    Device,
    /// One pass of the interrupt handler.
    Interrupts,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![4 => (1usize..=3).prop_map(Step::Submit), 2 => Just(Step::Device), 2 => Just(Step::Interrupts)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Elements complete in submission order, each exactly once; EAGAIN exactly when
    /// the request ring is full; the device stalls exactly when the response ring is
    /// full; one interrupt pass always empties the response ring (no lost MSI); and all
    /// of it holds across ring index wrap-around and req_id wrap past u16::MAX.
    #[test]
    fn rings_preserve_order_lose_nothing_and_report_full_and_empty(
        steps in proptest::collection::vec(step(), 1..300),
        ring_log2 in 2u32..=4,
        first_req_id in prop_oneof![Just(0u16), 65520u16..=65535],
    ) {
        let nelem = 1 << ring_log2;
        let capacity = nelem as usize - 1;
        let kmd = common::small_kmd(nelem, Stepping::Manual, first_req_id);
        let client = kmd.open();
        let program = client.load_program(&common::copy_program(64)).unwrap();
        let (dbc, info) = client.activate(program).unwrap();
        let pool: Vec<u32> = (0..3 * nelem).map(|_| client.create_bo(64).unwrap()).collect();
        for &h in &pool {
            let slice = AttachSliceEntry { size: 64, dev_addr: info.ddr_base, ..Default::default() };
            client.attach_slice_bo(h, dbc, DIR_TO_DEVICE, &[slice]).unwrap();
        }
        let mut idle: VecDeque<u32> = pool.iter().copied().collect();
        let mut requests: VecDeque<u32> = VecDeque::new();
        let mut responses: VecDeque<u32> = VecDeque::new();
        let max_handle = *pool.iter().max().unwrap() as usize;
        let mut completions = vec![0u32; max_handle + 1];
        let mut submissions = vec![0u32; max_handle + 1];
        for step in steps {
            match step {
                Step::Submit(k) => {
                    let k = k.min(idle.len());
                    let picked: Vec<u32> = idle.iter().take(k).copied().collect();
                    let list: Vec<ExecuteEntry> = picked.iter().map(|&handle| ExecuteEntry { handle, dir: DIR_TO_DEVICE }).collect();
                    let result = if k == 0 { continue } else { client.execute_bo(dbc, &list) };
                    if requests.len() + k > capacity {
                        prop_assert_eq!(result.unwrap_err().errno, Errno::EAGAIN);
                    } else {
                        prop_assert!(result.is_ok(), "{:?}", result);
                        for h in picked {
                            idle.retain(|&x| x != h);
                            requests.push_back(h);
                            submissions[h as usize] += 1;
                        }
                    }
                }
                Step::Device => {
                    let room = capacity - responses.len();
                    let expected = requests.len().min(room);
                    let done = kmd.step_device().unwrap();
                    prop_assert_eq!(done.elements as usize, expected);
                    for _ in 0..expected {
                        responses.push_back(requests.pop_front().unwrap());
                    }
                }
                Step::Interrupts => {
                    let consumed = kmd.step_interrupts().unwrap();
                    prop_assert_eq!(consumed, responses.len(), "an interrupt pass must empty the response ring");
                    for h in responses.drain(..) {
                        completions[h as usize] += 1;
                        idle.push_back(h);
                    }
                }
            }
            // The driver's view of every buffer agrees with the model: a finished
            // buffer has perf stats, a queued one does not.
            for &h in &pool {
                let finished = client.perf_stats_bo(dbc, &[h]).is_ok();
                let model_finished = submissions[h as usize] > 0 && !requests.contains(&h) && !responses.contains(&h);
                prop_assert_eq!(finished, model_finished, "buffer {}", h);
            }
        }
        // Drain everything and check exactly-once.
        while !requests.is_empty() || !responses.is_empty() {
            let moved = kmd.step_device().unwrap().elements as usize;
            for _ in 0..moved {
                responses.push_back(requests.pop_front().unwrap());
            }
            let consumed = kmd.step_interrupts().unwrap();
            prop_assert_eq!(consumed, responses.len());
            for h in responses.drain(..) {
                completions[h as usize] += 1;
            }
        }
        prop_assert_eq!(&completions, &submissions);
        prop_assert_eq!(kmd.spurious_responses(dbc as usize), 0);
    }
}

#[test]
fn req_ids_wrap_past_u16_max_without_mixing_up_buffers() {
    let kmd = common::small_kmd(8, Stepping::Manual, 65533);
    let client = kmd.open();
    let program = client.load_program(&common::copy_program(64)).unwrap();
    let (dbc, info) = client.activate(program).unwrap();
    let handles: Vec<u32> = (0..6).map(|_| client.create_bo(64).unwrap()).collect();
    for &h in &handles {
        client
            .attach_slice_bo(
                h,
                dbc,
                DIR_TO_DEVICE,
                &[AttachSliceEntry { size: 64, dev_addr: info.ddr_base, ..Default::default() }],
            )
            .unwrap();
    }
    let list: Vec<ExecuteEntry> = handles.iter().map(|&handle| ExecuteEntry { handle, dir: DIR_TO_DEVICE }).collect();
    for _ in 0..3 {
        client.execute_bo(dbc, &list).unwrap();
        assert_eq!(kmd.step_device().unwrap().elements, 6);
        assert_eq!(kmd.step_interrupts().unwrap(), 6);
        for &h in &handles {
            client.wait_bo(h, 1, dbc).unwrap();
        }
    }
    assert_eq!(kmd.spurious_responses(dbc as usize), 0);
}
