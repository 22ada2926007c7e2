//! The asynchronous queue, property-tested: under random interleavings of submit,
//! try_submit and receives with timeouts, every submitted context comes back exactly
//! once, with its own outputs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use aicsim_runtime::{samples, AsyncQueue, Program, QueueConfig, Rejected};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Submit,
    TrySubmit,
    Recv { timeout_ms: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![3 => Just(Step::Submit), 2 => Just(Step::TrySubmit), 3 => (0u64..3).prop_map(|timeout_ms| Step::Recv { timeout_ms })]
}

/// 64 bytes that say which request they belong to.
fn payload(context: u64) -> Vec<u8> {
    (0..64u64).map(|i| (context.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_submitted_context_comes_back_exactly_once_with_its_own_outputs(
        steps in proptest::collection::vec(step(), 1..120),
        activations in 1usize..=3, set_size in 1usize..=4, input_capacity in 1usize..=4, output_capacity in 1usize..=4,
    ) {
        let device = Arc::new(Device::open_simulated(KmdConfig::default()).unwrap());
        let program = Program::from_image(samples::null_program(64)).unwrap();
        let queue: AsyncQueue<u64> = AsyncQueue::new(device, &program, QueueConfig { activations, set_size, input_capacity, output_capacity }).unwrap();
        let mut next = 0u64;
        let mut outstanding = 0usize;
        let mut received: HashMap<u64, usize> = HashMap::new();
        let check = |ctx: u64, outcome: aicsim_runtime::Outcome, received: &mut HashMap<u64, usize>| -> Result<(), TestCaseError> {
            let outputs = outcome.map_err(|e| TestCaseError::fail(format!("request {ctx} failed: {e}")))?;
            prop_assert_eq!(&outputs[0], &payload(ctx), "request {} got another request's outputs", ctx);
            *received.entry(ctx).or_default() += 1;
            Ok(())
        };
        for s in steps {
            match s {
                // A blocking submit cannot deadlock while the queues have room between them.
                Step::Submit if outstanding < input_capacity + output_capacity => {
                    queue.submit(next, vec![payload(next)]).unwrap();
                    next += 1;
                    outstanding += 1;
                }
                Step::Submit => {}
                Step::TrySubmit => match queue.try_submit(next, vec![payload(next)]) {
                    Ok(()) => {
                        next += 1;
                        outstanding += 1;
                    }
                    Err(Rejected::Full(ctx, inputs)) => {
                        prop_assert_eq!(ctx, next, "the rejected request is handed back intact");
                        prop_assert_eq!(&inputs[0], &payload(next));
                    }
                    Err(Rejected::Closed(..)) => prop_assert!(false, "the queue is open"),
                },
                Step::Recv { timeout_ms } => {
                    if let Some((ctx, outcome)) = queue.recv_timeout(Duration::from_millis(timeout_ms)) {
                        check(ctx, outcome, &mut received)?;
                        outstanding -= 1;
                    }
                }
            }
        }
        for (ctx, outcome) in queue.close() {
            check(ctx, outcome, &mut received)?;
        }
        prop_assert_eq!(received.len() as u64, next, "every context came back");
        prop_assert!(received.values().all(|&n| n == 1), "no context came back twice");
    }
}

#[test]
fn a_malformed_request_fails_at_submit_and_a_full_queue_pushes_back() {
    let device = Arc::new(Device::open_simulated(KmdConfig::default()).unwrap());
    let program = Program::from_image(samples::null_program(64)).unwrap();
    let queue: AsyncQueue<u32> = AsyncQueue::new(
        device,
        &program,
        QueueConfig { activations: 1, set_size: 1, input_capacity: 1, output_capacity: 1 },
    )
    .unwrap();
    let err = queue.submit(1, vec![vec![0u8; 10]]).unwrap_err();
    assert_eq!(err.to_string(), "input 0 ('in') is 10 bytes but the program expects 64");
    // With nobody receiving, the pipeline fills up and try_submit starts refusing.
    let mut accepted = 0;
    let mut refused = false;
    for ctx in 0..50 {
        match queue.try_submit(ctx, vec![payload(ctx.into())]) {
            Ok(()) => accepted += 1,
            Err(Rejected::Full(..)) => {
                refused = true;
                break;
            }
            Err(Rejected::Closed(..)) => panic!("open"),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(refused, "backpressure: a full queue refuses ({accepted} accepted)");
    assert!(accepted <= 4, "at most input + output + in-flight + one being handed over: {accepted}");
    assert_eq!(queue.close().len(), accepted as usize);
}
