//! The simulated clock across the whole stack: the device serves requests in
//! simulated-time order however the host's and the device's threads are scheduled, the
//! bytes still travel, and the figures follow the models.

use std::sync::Arc;
use std::time::Duration;

use aicsim_device::scheduler::ExecMode;
use aicsim_device::{DeviceConfig, FaultPlan, Pacing};
use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use aicsim_runtime::samples::{bytes_f32, f32_bytes, vector_add_mul, vector_add_mul_reference};
use aicsim_runtime::{HostModel, InferenceSet, Program, RunLimit};
use parking_lot::Mutex;

fn device(mode: ExecMode, faults: FaultPlan) -> Arc<Device> {
    let device = DeviceConfig { mode, pacing: Pacing::Simulated, faults, seed: 3, ..DeviceConfig::default() };
    Arc::new(Device::open_simulated(KmdConfig { device, ..KmdConfig::default() }).unwrap())
}

/// Everything a completion says, as plain numbers.
type Record = (u64, usize, [u64; 8], usize, usize, u64, Option<u64>, Vec<f32>);

/// Runs `n` inferences of the vector program on 3 activations x 4 in flight; `host_delay`
/// makes the host thread sleep that long (wall time) after some completions.
fn run(device: Arc<Device>, n: u64, host_delay: impl Fn(u64) -> Duration) -> (Vec<Record>, u64, u32) {
    let program = Program::from_image(vector_add_mul(4096)).unwrap();
    let set = InferenceSet::new(device.clone(), &program, 3, 4).unwrap();
    let a: Vec<f32> = (0..4096).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..4096).map(|i| 1.0 - i as f32 * 0.25).collect();
    let inputs = vec![program.device_inputs(&[f32_bytes(&a), f32_bytes(&b)]).unwrap()];
    let records = Mutex::new(Vec::new());
    let summary = set
        .run_simulated(RunLimit::Count(n), &HostModel::default(), &inputs, |c| {
            let t = c.timestamps;
            records.lock().push((
                c.index,
                c.activation,
                [
                    t.enqueue,
                    t.pre_proc_start,
                    t.pre_proc_end,
                    t.kernel_submit,
                    t.submitted,
                    t.completed,
                    t.post_proc_end,
                    t.returned,
                ],
                c.queue_depth,
                c.in_flight_total,
                c.seq,
                c.device.map(|d| d.exec_cycles),
                bytes_f32(&c.outputs[0]),
            ));
            std::thread::sleep(host_delay(c.index));
        })
        .unwrap();
    assert_eq!(summary.inferences, n);
    let mut records = records.into_inner();
    records.sort_by_key(|r| r.0);
    (records, summary.elapsed.as_nanos() as u64, device.kmd().late_elements())
}

/// Panics at the first inference whose record differs.
fn assert_same(got: &(Vec<Record>, u64), want: &(Vec<Record>, u64), what: &str) {
    // Everything but the outputs, which are long.
    let short = |r: &Record| (r.0, r.1, r.2, r.3, r.4, r.5, r.6);
    for (g, w) in got.0.iter().zip(&want.0) {
        assert!(g == w, "{what}: inference {} differs:\n got {:?}\nwant {:?}", w.0, short(g), short(w));
    }
    assert_eq!((got.0.len(), got.1), (want.0.len(), want.1), "{what}: count and elapsed");
}

#[test]
fn figures_do_not_depend_on_how_the_threads_are_scheduled() {
    let (base, elapsed, late) = run(device(ExecMode::Timing, FaultPlan::default()), 300, |_| Duration::ZERO);
    let base = (base, elapsed);
    assert_eq!(late, 0, "every element reached the device before its time");
    // The host stalls now and then (a slow application thread, a preempted core).
    let stalls = |i: u64| if i % 37 == 5 { Duration::from_millis(3) } else { Duration::ZERO };
    let (slow_host, e2, late2) = run(device(ExecMode::Timing, FaultPlan::default()), 300, stalls);
    assert_eq!(late2, 0);
    assert_same(&(slow_host, e2), &base, "a slow host thread changes nothing");
    // The device thread is slow (it sleeps after every element it serves).
    let slow = FaultPlan { slow_element_ns: 200_000, ..FaultPlan::default() };
    let (slow_device, e3, late3) = run(device(ExecMode::Timing, slow), 300, |_| Duration::ZERO);
    assert_eq!(late3, 0);
    assert_same(&(slow_device, e3), &base, "a slow device thread changes nothing");
}

#[test]
fn timestamps_follow_the_host_model_and_requests_queue_in_time_order() {
    let (records, elapsed, _) = run(device(ExecMode::Timing, FaultPlan::default()), 200, |_| Duration::ZERO);
    let host = HostModel::default();
    let input_bytes = Program::from_image(vector_add_mul(4096)).unwrap().device_input_bytes();
    for (index, _, t, depth, total, _, exec, _) in &records {
        let [enqueue, pre_start, pre_end, kernel, submitted, completed, post_end, returned] = *t;
        assert_eq!(pre_start - enqueue, host.enqueue_ns, "inference {index}");
        assert_eq!(pre_end - pre_start, host.pre_proc_ns(input_bytes));
        assert_eq!(kernel - pre_end, host.submit_ns);
        assert_eq!(submitted - kernel, host.exec_to_vc_ns);
        assert_eq!(post_end - completed, host.post_proc_ns);
        assert_eq!(returned - post_end, host.app_ns);
        // The device's share: link in, queueing, the run, link out, completion path.
        let exec_ns = exec.unwrap() * 1_000_000_000 / DeviceConfig::default().clock_hz;
        assert!(completed - submitted > exec_ns + host.completion_ns, "inference {index}");
        assert!((1..=4).contains(depth) && (1..=12).contains(total), "{depth} {total}");
    }
    // Requests are numbered in the order they were taken up: in time.
    for w in records.windows(2) {
        assert!(w[0].2[0] <= w[1].2[0], "enqueue times follow the inference numbers");
    }
    let last = records.iter().map(|r| r.2[7]).max().unwrap();
    let first = records.iter().map(|r| r.2[0]).min().unwrap();
    assert_eq!(elapsed, last - first, "the run lasts from its first request to its last return");
}

#[test]
fn functional_runs_compute_real_outputs_in_the_same_simulated_time() {
    let (timing, t_elapsed, _) = run(device(ExecMode::Timing, FaultPlan::default()), 60, |_| Duration::ZERO);
    let (functional, f_elapsed, _) = run(device(ExecMode::Functional, FaultPlan::default()), 60, |_| Duration::ZERO);
    assert_eq!(t_elapsed, f_elapsed, "the mode changes no figure");
    let a: Vec<f32> = (0..4096).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..4096).map(|i| 1.0 - i as f32 * 0.25).collect();
    let want = vector_add_mul_reference(&a, &b);
    for (t, f) in timing.iter().zip(&functional) {
        assert_eq!((t.0, t.2, t.6), (f.0, f.2, f.6));
        assert_eq!(f.7, want, "inference {}: the real result", f.0);
    }
}

#[test]
fn a_duration_is_simulated_time_and_the_device_never_passes_a_promise() {
    let dev = device(ExecMode::Timing, FaultPlan::default());
    let program = Program::from_image(vector_add_mul(4096)).unwrap();
    let set = InferenceSet::new(dev.clone(), &program, 1, 2).unwrap();
    let summary =
        set.run_simulated(RunLimit::Duration(Duration::from_millis(2)), &HostModel::default(), &[], |_| {}).unwrap();
    assert!(summary.inferences > 10);
    let over = summary.elapsed.as_nanos() as f64 / 2e6;
    assert!((1.0..1.1).contains(&over), "a 2 ms run lasts 2 ms and its last inferences: {:?}", summary.elapsed);
    // With a promise far ahead and nothing queued, the device idles up to it and stops
    // just short of it.
    let a = &set.activations()[0];
    let (now, _) = dev.device_progress(a.channel()).unwrap();
    let promise = now + 5_000_000;
    dev.promise(a.channel(), promise, summary.inferences as u32).unwrap();
    // The device publishes its progress for other reasons too: wait until it has moved.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut after = now;
    while after <= now && std::time::Instant::now() < deadline {
        let seen = dev.progress();
        after = dev.device_progress(a.channel()).unwrap().0;
        if after <= now {
            dev.wait_progress(seen, Duration::from_millis(100));
        }
    }
    // Settled: it stops short of the promise.
    std::thread::sleep(Duration::from_millis(50));
    let (after, _) = dev.device_progress(a.channel()).unwrap();
    assert!(after > now && after < promise, "{now} -> {after}, promise {promise}");
}

#[test]
fn each_slot_keeps_its_input_set_and_every_inference_reads_it_from_the_buffers() {
    let dev = device(ExecMode::Functional, FaultPlan::default());
    let program = Program::from_image(vector_add_mul(4096)).unwrap();
    // 2 activations x 3 slots over 4 input sets: slots (0, 1, 2 | 3, 4, 5) hold sets
    // (0, 1, 2 | 3, 0, 1).
    let set = InferenceSet::new(dev, &program, 2, 3).unwrap();
    let sets: Vec<(Vec<f32>, Vec<f32>)> = (0..4)
        .map(|k| {
            let a = (0..4096).map(|i| (i * (k + 1)) as f32).collect();
            let b = (0..4096).map(|i| k as f32 - i as f32 * 0.5).collect();
            (a, b)
        })
        .collect();
    let inputs: Vec<Vec<Vec<u8>>> =
        sets.iter().map(|(a, b)| program.device_inputs(&[f32_bytes(a), f32_bytes(b)]).unwrap()).collect();
    let seen = Mutex::new(Vec::new());
    set.run_simulated(RunLimit::Count(60), &HostModel::default(), &inputs, |c| {
        seen.lock().push((c.activation, c.input_set, bytes_f32(&c.outputs[0])));
    })
    .unwrap();
    let seen = seen.into_inner();
    assert_eq!(seen.len(), 60);
    let mut used = [0usize; 4];
    for (activation, input_set, out) in &seen {
        let k = input_set.expect("the run was given input sets");
        let (a, b) = &sets[k];
        assert_eq!(out, &vector_add_mul_reference(a, b), "input set {k}");
        let slots = if *activation == 0 { [0, 1, 2] } else { [3, 0, 1] };
        assert!(slots.contains(&k), "activation {activation} has no slot holding set {k}");
        used[k] += 1;
    }
    assert!(used.iter().all(|&n| n > 0), "every set was used: {used:?}");
}

/// A set runs again and again (a notebook cell run twice): each run counts from the
/// completions of the last and completes all its inferences (it used to take the last
/// run's completions for its own and wait for ever on the rest). A stop request ends a
/// run early: nothing more is taken up, what is in flight completes.
#[test]
fn one_set_runs_many_times_each_run_whole_and_a_run_stops_when_asked() {
    let program = Program::from_image(vector_add_mul(4096)).unwrap();
    let set = InferenceSet::new(device(ExecMode::Timing, FaultPlan::default()), &program, 2, 3).unwrap();
    for n in [20u64, 7, 20] {
        let done = Mutex::new(0u64);
        let s = set.run_simulated(RunLimit::Count(n), &HostModel::default(), &[], |_| *done.lock() += 1).unwrap();
        assert_eq!((s.inferences, done.into_inner()), (n, n));
    }
    let stop = set.stop_handle();
    let s = set
        .run_simulated(RunLimit::Count(1_000_000), &HostModel::default(), &[], |c| {
            if c.index == 30 {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .unwrap();
    assert!((31..=40).contains(&s.inferences), "stopped after {} inferences", s.inferences);
    // The next run starts afresh.
    let s = set.run_simulated(RunLimit::Count(5), &HostModel::default(), &[], |_| {}).unwrap();
    assert_eq!(s.inferences, 5);
}
