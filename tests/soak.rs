//! Soak: at least a million inferences across several activations while the device
//! injects seeded error completions and is reset from another thread mid-run. Work a
//! reset prevented from being submitted is run again on fresh activations (the
//! recovery a runtime does). The invariant: every inference completes exactly once,
//! with its own data intact or with a named error; none is lost, duplicated or
//! corrupted. `AICSIM_SOAK_INFERENCES` sets the size (default 1,000,000).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_abi::dbc::CompletionCode;
use aicsim_device::{DeviceConfig, FaultPlan};
use aicsim_driver::{Device, DriverError};
use aicsim_kmd::{Kmd, KmdConfig};
use aicsim_runtime::{samples, InferenceSet, Program, RunLimit, RuntimeError};
use parking_lot::Mutex;

const BYTES: usize = 64;
/// Device resets during the run.
const RESETS: u32 = 6;

fn payload(global: u64, out: &mut [u8]) {
    let mut x = global.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in out.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    device_errors: u64,
    reset_errors: u64,
    other_errors: Vec<String>,
    corrupted: u64,
}

#[test]
fn a_million_inferences_under_faults_complete_exactly_once_each() {
    let total: u64 = std::env::var("AICSIM_SOAK_INFERENCES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let device_config = DeviceConfig {
        faults: FaultPlan { seed: 2026, error_completion_ppm: 500, ..FaultPlan::default() },
        ..DeviceConfig::default()
    };
    let kmd = Arc::new(Kmd::new(KmdConfig { device: device_config, ..KmdConfig::default() }).unwrap());
    let device = Arc::new(Device::open(kmd.clone()));
    let program = Program::from_image(samples::null_program(BYTES as u32)).unwrap();

    // 0 = not completed yet; 1 = completed once; anything more is a duplicate.
    let completions: Vec<AtomicU8> = (0..total).map(|_| AtomicU8::new(0)).collect();
    let tally = Mutex::new(Tally::default());
    let finished = AtomicBool::new(false);
    let done_count = AtomicU64::new(0);
    let start = Instant::now();
    let mut resets = 0u32;
    std::thread::scope(|scope| {
        // Six resets while the run goes on, each once another seventh of the
        // inferences has completed (tied to progress, not to the clock, so they happen
        // mid-run on any machine and at any size).
        let resetter = scope.spawn(|| {
            let mut n = 0u32;
            while !finished.load(Ordering::Relaxed) && n < RESETS {
                let due = total * u64::from(n + 1) / u64::from(RESETS + 1);
                if done_count.load(Ordering::Relaxed) < due {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                kmd.reset().unwrap();
                n += 1;
            }
            n
        });
        let mut pending: Vec<u64> = (0..total).collect();
        let mut rounds = 0;
        let mut set = loop {
            if let Ok(s) = InferenceSet::new(device.clone(), &program, 3, 8) {
                break s.with_errors_reported(true);
            }
        };
        while !pending.is_empty() {
            rounds += 1;
            assert!(rounds < 100, "no progress");
            if rounds > 1 && set.recover().is_err() {
                continue; // a reset hit the re-activation itself: try again
            }
            let map = &pending;
            let _ = set.run(
                RunLimit::Count(map.len() as u64),
                |i, inputs| payload(map[i as usize], &mut inputs[0]),
                |done| {
                    let global = map[done.index as usize];
                    let previous = completions[global as usize].fetch_add(1, Ordering::SeqCst);
                    done_count.fetch_add(1, Ordering::Relaxed);
                    let mut t = tally.lock();
                    match done.error {
                        None => {
                            let mut want = [0u8; BYTES];
                            payload(global, &mut want);
                            if done.outputs[0] != want || previous != 0 {
                                t.corrupted += 1;
                            }
                            t.ok += 1;
                        }
                        Some(RuntimeError::Driver(DriverError::Device { code: CompletionCode::Injected, .. })) => {
                            t.device_errors += 1
                        }
                        Some(RuntimeError::Driver(DriverError::NoDevice(_))) => t.reset_errors += 1,
                        Some(other) => t.other_errors.push(other.to_string()),
                    }
                },
            );
            pending.retain(|&g| completions[g as usize].load(Ordering::SeqCst) == 0);
        }
        finished.store(true, Ordering::Relaxed);
        resets = resetter.join().unwrap();
    });
    let t = tally.into_inner();
    let lost = completions.iter().filter(|c| c.load(Ordering::SeqCst) == 0).count();
    let duplicated = completions.iter().filter(|c| c.load(Ordering::SeqCst) > 1).count();
    eprintln!(
        "soak: {total} inferences in {:.1} s: {} ok, {} injected device errors, {} failed by {resets} resets; lost {lost}, duplicated {duplicated}, corrupted {}",
        start.elapsed().as_secs_f64(),
        t.ok,
        t.device_errors,
        t.reset_errors,
        t.corrupted
    );
    assert_eq!((lost, duplicated, t.corrupted), (0, 0, 0));
    assert!(t.other_errors.is_empty(), "unexpected errors: {:?}", &t.other_errors[..t.other_errors.len().min(5)]);
    assert_eq!(t.ok + t.device_errors + t.reset_errors, total);
    assert!(t.device_errors > 0, "the fault plan injected errors");
    assert_eq!(resets, RESETS, "every reset happened during the run");
    assert!(t.reset_errors > 0, "the resets failed inferences in flight");
}
