//! The handle lifecycle: get available -> set buffers -> submit -> get completed (oldest
//! or by id) -> put back; wait for all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use aicsim_runtime::samples::{bytes_f32, f32_bytes, vector_add_mul, vector_add_mul_reference};
use aicsim_runtime::{InferenceSet, Program};

fn inputs(k: u64) -> (Vec<f32>, Vec<f32>) {
    ((0..64).map(|i| (i as f32) * 0.5 + k as f32).collect(), (0..64).map(|i| k as f32 - i as f32).collect())
}

#[test]
fn handles_cycle_through_submit_complete_and_put_back() {
    let device = Arc::new(Device::open_simulated(KmdConfig::default()).unwrap());
    let program = Program::from_image(vector_add_mul(64)).unwrap();
    let set = InferenceSet::new(device, &program, 2, 3).unwrap();
    let pool = set.handles().unwrap();
    assert_eq!(pool.capacity(), 6);
    let mut ids = Vec::new();
    for k in 0..6u64 {
        let mut h = pool.get_available(Duration::from_secs(1)).unwrap();
        let (a, b) = inputs(k);
        h.inputs[0] = f32_bytes(&a);
        h.inputs[1] = f32_bytes(&b);
        ids.push(pool.submit(h).unwrap());
    }
    // Every handle is in use: asking for another times out with a clear error.
    let t = Instant::now();
    let err = pool.get_available(Duration::from_millis(30)).err().unwrap();
    assert!(t.elapsed() >= Duration::from_millis(25));
    assert!(err.to_string().contains("all 6 in use"), "{err}");
    // By id, out of order.
    let done = pool.get_completed_by_id(ids[4]).unwrap();
    assert!(done.error.is_none());
    let (a, b) = inputs(4);
    assert_eq!(bytes_f32(&done.outputs[0]), vector_add_mul_reference(&a, &b));
    assert!(pool.get_completed_by_id(ids[4]).is_none(), "taken once");
    pool.put_back(done);
    // The freed handle is available again immediately.
    let h = pool.get_available(Duration::from_millis(1)).unwrap();
    drop(h.inputs);
    // The oldest, in submission order, then the rest with wait_all.
    let first = pool.get_completed().unwrap();
    assert_eq!(first.id, ids[0]);
    let rest = pool.wait_all();
    assert_eq!(rest.iter().map(|c| c.id).collect::<Vec<_>>(), vec![ids[1], ids[2], ids[3], ids[5]]);
    for c in rest.iter().chain(std::iter::once(&first)) {
        let k = ids.iter().position(|&i| i == c.id).unwrap() as u64;
        let (a, b) = inputs(k);
        assert_eq!(bytes_f32(&c.outputs[0]), vector_add_mul_reference(&a, &b), "handle {}", c.id);
        assert!(c.timestamps.total_round_trip() >= c.timestamps.exec_total());
    }
    assert!(pool.get_completed().is_none(), "nothing left in flight");
}

#[test]
fn several_threads_share_one_pool() {
    let device = Arc::new(Device::open_simulated(KmdConfig::default()).unwrap());
    let program = Program::from_image(vector_add_mul(64)).unwrap();
    let set = InferenceSet::new(device, &program, 2, 2).unwrap();
    let pool = set.handles().unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let pool = &pool;
            s.spawn(move || {
                for j in 0..50u64 {
                    let k = t * 1000 + j;
                    let mut h = pool.get_available(Duration::from_secs(5)).unwrap();
                    let (a, b) = inputs(k);
                    h.inputs[0] = f32_bytes(&a);
                    h.inputs[1] = f32_bytes(&b);
                    let id = pool.submit(h).unwrap();
                    let done = pool.get_completed_by_id(id).unwrap();
                    assert_eq!(bytes_f32(&done.outputs[0]), vector_add_mul_reference(&a, &b));
                    pool.put_back(done);
                }
            });
        }
    });
    assert!(pool.get_completed().is_none());
}
