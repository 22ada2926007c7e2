//! qaic-runner's submit semantics on a full channel (EAGAIN): keep trying for the
//! submit timeout, start over up to the retry count, then fail naming why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_abi::layout::MemoryMap;
use aicsim_device::DeviceConfig;
use aicsim_driver::Device;
use aicsim_kmd::{Kmd, KmdConfig, Stepping};
use aicsim_runtime::{samples, Activation, Program, RuntimeError, SubmitPolicy, Timestamps};

#[test]
fn a_full_channel_is_retried_then_fails_with_the_attempts_and_the_reason() {
    let device = DeviceConfig {
        map: MemoryMap { ring_nelem: 8, host_bytes: 4 << 20, ddr_bytes: 4 << 20 },
        ..DeviceConfig::default()
    };
    let kmd = Arc::new(Kmd::new(KmdConfig { device, stepping: Stepping::Manual, ..KmdConfig::default() }).unwrap());
    let program = Program::from_image(samples::null_program(64)).unwrap();
    let activation = Activation::new(Arc::new(Device::open(kmd.clone())), &program).unwrap();
    let slots: Vec<_> = (0..4).map(|_| activation.new_slot().unwrap()).collect();
    let policy = SubmitPolicy { timeout: Duration::from_millis(20), retries: 2 };
    // Three inferences (two elements each) leave one free slot of the ring's seven.
    for slot in &slots[..3] {
        slot.submit_with(&activation, &mut Timestamps::now(), &policy).unwrap();
    }
    let t = Instant::now();
    let err = slots[3].submit_with(&activation, &mut Timestamps::now(), &policy).unwrap_err();
    let took = t.elapsed();
    match &err {
        RuntimeError::SubmitTimeout { attempts, timeout, why } => {
            assert_eq!((*attempts, *timeout), (3, Duration::from_millis(20)));
            assert!(why.contains("1 free elements, 2 needed"), "{why}");
        }
        other => panic!("expected a submit timeout, got {other}"),
    }
    assert!(took >= Duration::from_millis(60) && took < Duration::from_secs(2), "3 attempts of 20 ms: {took:?}");
    // Room appears while the submit retries: it goes through.
    let stepper = {
        let kmd = kmd.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(15));
            kmd.step_device_until_idle();
            kmd.step_interrupts();
        })
    };
    slots[3].submit_with(&activation, &mut Timestamps::now(), &policy).unwrap();
    stepper.join().unwrap();
}
