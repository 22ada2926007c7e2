//! Inferences with random inputs through runtime -> driver -> kmd -> rings -> device ->
//! back, each output checked against the same computation done on the host.

use std::collections::HashSet;
use std::sync::Arc;

use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use aicsim_runtime::samples::{bytes_f32, f32_bytes, vector_add_mul, vector_add_mul_reference};
use aicsim_runtime::{Activation, InferenceSet, Program, RunLimit};
use parking_lot::Mutex;

/// SplitMix64 stream: inference `index` of seed `seed` always gets the same inputs.
fn inputs_for(seed: u64, index: u64, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut state = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 200.0 - 100.0
    };
    let a = (0..n).map(|_| next()).collect();
    let b = (0..n).map(|_| next()).collect();
    (a, b)
}

fn device() -> Arc<Device> {
    Arc::new(Device::open_simulated(KmdConfig::default()).expect("device boots"))
}

#[test]
fn thousands_of_pipelined_inferences_on_several_activations_all_match_the_host() {
    const N: u32 = 1024;
    const COUNT: u64 = 6000;
    let program = Program::from_image(vector_add_mul(N)).unwrap();
    let set = InferenceSet::new(device(), &program, 3, 4).unwrap();
    let seen = Mutex::new(HashSet::new());
    let per_activation = Mutex::new([0u64; 3]);
    let mismatches = Mutex::new(Vec::new());
    let summary = set
        .run(
            RunLimit::Count(COUNT),
            |index, inputs| {
                let (a, b) = inputs_for(7, index, N as usize);
                inputs[0].copy_from_slice(&f32_bytes(&a));
                inputs[1].copy_from_slice(&f32_bytes(&b));
            },
            |done| {
                let (a, b) = inputs_for(7, done.index, N as usize);
                if bytes_f32(&done.outputs[0]) != vector_add_mul_reference(&a, &b) {
                    mismatches.lock().push(done.index);
                }
                assert!(seen.lock().insert(done.index), "inference {} completed twice", done.index);
                per_activation.lock()[done.activation] += 1;
                assert!(done.queue_depth >= 1 && done.queue_depth <= 4);
                let t = done.timestamps;
                assert!(
                    t.enqueue <= t.pre_proc_start
                        && t.pre_proc_end <= t.kernel_submit
                        && t.kernel_submit <= t.submitted
                        && t.submitted <= t.completed
                        && t.completed <= t.post_proc_end
                );
            },
        )
        .unwrap();
    assert_eq!(summary.inferences, COUNT);
    assert_eq!(mismatches.into_inner(), Vec::<u64>::new());
    assert_eq!(seen.into_inner().len() as u64, COUNT, "every inference completed exactly once");
    assert!(per_activation.into_inner().iter().all(|&n| n > 0), "every activation did work");
}

#[test]
fn synchronous_runs_match_the_host() {
    let program = Program::from_image(vector_add_mul(333)).unwrap();
    let activation = Activation::new(device(), &program).unwrap();
    for index in 0..1500 {
        let (a, b) = inputs_for(11, index, 333);
        let out = activation.run(&[&f32_bytes(&a), &f32_bytes(&b)]).unwrap();
        assert_eq!(bytes_f32(&out[0]), vector_add_mul_reference(&a, &b), "inference {index}");
    }
}

#[test]
fn wrong_input_sizes_are_rejected_before_anything_is_queued() {
    let program = Program::from_image(vector_add_mul(16)).unwrap();
    let activation = Activation::new(device(), &program).unwrap();
    let err = activation.run(&[&[0u8; 64], &[0u8; 60]]).unwrap_err();
    assert_eq!(err.to_string(), "input 1 ('b') is 60 bytes but the program expects 64");
    let err = activation.run(&[&[0u8; 64]]).unwrap_err();
    assert_eq!(err.to_string(), "expected 2 inputs, got 1");
    // The activation is still usable.
    let out = activation.run(&[&f32_bytes(&[1.0; 16]), &f32_bytes(&[2.0; 16])]).unwrap();
    assert_eq!(bytes_f32(&out[0]), vector_add_mul_reference(&[1.0; 16], &[2.0; 16]));
}

#[test]
fn more_activations_than_channels_is_a_clear_error() {
    let program = Program::from_image(vector_add_mul(16)).unwrap();
    let err = InferenceSet::new(device(), &program, 17, 1).err().unwrap();
    assert!(err.to_string().contains("between 1 and 16"), "{err}");
}
