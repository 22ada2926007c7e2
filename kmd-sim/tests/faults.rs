//! Injected faults and how the driver reports and recovers from them.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_abi::dbc::CompletionCode;
use aicsim_abi::layout::MemoryMap;
use aicsim_device::{DeviceConfig, FaultPlan};
use aicsim_kmd::{Errno, Kmd, KmdConfig, Stepping};
use common::{both, setup};

fn kmd(faults: FaultPlan, stepping: Stepping) -> Arc<Kmd> {
    let device = DeviceConfig {
        num_nsp: 4,
        map: MemoryMap { ring_nelem: 64, host_bytes: 4 << 20, ddr_bytes: 4 << 20 },
        faults,
        ..DeviceConfig::default()
    };
    Arc::new(Kmd::new(KmdConfig { device, stepping, ..KmdConfig::default() }).unwrap())
}

/// Runs `n` inferences; returns which failed with an injected error (and checks the
/// data arrived every time: the fault is reported, not a loss).
fn injected_failures(seed: u64, n: u32) -> Vec<u32> {
    let kmd = kmd(FaultPlan { seed, error_completion_ppm: 200_000, ..FaultPlan::default() }, Stepping::Threads);
    let client = kmd.open();
    let (dbc, input, output) = setup(&client);
    let mut failed = vec![];
    for i in 0..n {
        let data: Vec<u8> = (0..64).map(|k| (k as u32 + i) as u8).collect();
        client.mmap_bo(input).unwrap().write(0, &data).unwrap();
        client.execute_bo(dbc, &both(input, output)).unwrap();
        let results = [client.wait_bo(output, 2000, dbc), client.wait_bo(input, 2000, dbc)];
        for r in &results {
            if let Err(e) = r {
                assert_eq!((e.errno, e.device_code), (Errno::EIO, Some(CompletionCode::Injected)), "{e}");
            }
        }
        if results.iter().any(Result::is_err) {
            failed.push(i);
        }
        let mut out = vec![0u8; 64];
        client.mmap_bo(output).unwrap().read(0, &mut out).unwrap();
        assert_eq!(out, data, "inference {i}: the data moved even when an error was reported");
    }
    failed
}

#[test]
fn injected_error_completions_are_named_reproducible_and_lose_nothing() {
    let a = injected_failures(7, 300);
    assert!((60..=180).contains(&a.len()), "about 36% of 300 inferences have one of two elements failed: {}", a.len());
    assert_eq!(a, injected_failures(7, 300), "the same seed fails the same transfers");
    assert_ne!(a, injected_failures(8, 300), "another seed fails others");
}

#[test]
fn a_hung_device_times_waits_out_and_a_reset_brings_it_back() {
    let kmd = kmd(FaultPlan { seed: 1, hang_after_elements: Some(6), ..FaultPlan::default() }, Stepping::Threads);
    let client = kmd.open();
    let (dbc, input, output) = setup(&client);
    for _ in 0..3 {
        client.execute_bo(dbc, &both(input, output)).unwrap();
        client.wait_bo(output, 2000, dbc).unwrap();
    }
    client.execute_bo(dbc, &both(input, output)).unwrap();
    let t = Instant::now();
    let err = client.wait_bo(output, 100, dbc).unwrap_err();
    assert_eq!(err.errno, Errno::ETIMEDOUT);
    assert!(t.elapsed() >= Duration::from_millis(95) && t.elapsed() < Duration::from_millis(1000), "{:?}", t.elapsed());

    kmd.reset().unwrap();
    assert!(kmd.online());
    assert_eq!(client.wait_bo(output, 100, dbc).unwrap_err().errno, Errno::ENODEV, "the queued work is gone");
    assert_eq!(
        client.execute_bo(dbc, &both(input, output)).unwrap_err().errno,
        Errno::EPERM,
        "the channel was released"
    );
    // Recovery: load and activate again (the new firmware forgot everything).
    let status = kmd.status().unwrap();
    assert_eq!((status.programs_loaded, status.active_channels), (0, 0));
    let fresh = kmd.open();
    let (dbc, input, output) = setup(&fresh);
    // The fault plan applies per boot: two inferences stay under its six elements.
    for _ in 0..2 {
        fresh.execute_bo(dbc, &both(input, output)).unwrap();
        fresh.wait_bo(output, 2000, dbc).unwrap();
    }
}

#[test]
fn a_reset_fails_every_waiter_with_enodev() {
    let kmd = kmd(FaultPlan::default(), Stepping::Manual);
    let client = kmd.open();
    let (dbc, input, output) = setup(&client);
    client.execute_bo(dbc, &both(input, output)).unwrap();
    kmd.reset().unwrap();
    for bo in [input, output] {
        let e = client.wait_bo(bo, 1000, dbc).unwrap_err();
        assert_eq!(e.errno, Errno::ENODEV);
        assert!(e.detail.contains("device reset"), "{}", e.detail);
    }
}

#[test]
fn a_subsystem_restart_fails_its_channel_with_epipe_walks_its_states_and_spares_the_others() {
    use aicsim_kmd::SsrState::*;
    let kmd = kmd(FaultPlan::default(), Stepping::Manual);
    let (a, b) = (kmd.open(), kmd.open());
    let (dbc_a, in_a, out_a) = setup(&a);
    let (dbc_b, in_b, out_b) = setup(&b);
    a.execute_bo(dbc_a, &both(in_a, out_a)).unwrap();
    b.execute_bo(dbc_b, &both(in_b, out_b)).unwrap();
    kmd.subsystem_restart(dbc_a).unwrap();
    for bo in [in_a, out_a] {
        let e = a.wait_bo(bo, 100, dbc_a).unwrap_err();
        assert_eq!(e.errno, Errno::EPIPE, "{e}");
    }
    assert_eq!(kmd.ssr_history(dbc_a as usize), vec![BeforeShutdown, AfterShutdown, BeforePowerUp, AfterPowerUp, Idle]);
    assert!(kmd.ssr_history(dbc_b as usize).is_empty());
    // The other channel's work goes on.
    kmd.step_device_until_idle();
    kmd.step_interrupts();
    b.wait_bo(out_b, 100, dbc_b).unwrap();
    // The restarted channel is released; its user activates again.
    assert_eq!(a.execute_bo(dbc_a, &both(in_a, out_a)).unwrap_err().errno, Errno::EPERM);
    let (dbc, input, output) = setup(&a);
    a.execute_bo(dbc, &both(input, output)).unwrap();
    kmd.step_device_until_idle();
    kmd.step_interrupts();
    a.wait_bo(output, 100, dbc).unwrap();
}

#[test]
fn with_the_link_down_registers_read_all_ones_and_waiters_fail_with_enodev() {
    let kmd = kmd(FaultPlan { seed: 3, hang_after_elements: Some(2), ..FaultPlan::default() }, Stepping::Threads);
    let client = kmd.open();
    let (dbc, input, output) = setup(&client);
    client.execute_bo(dbc, &both(input, output)).unwrap();
    client.wait_bo(output, 2000, dbc).unwrap();
    // The device hangs on the next transfer; then the link drops under the waiter.
    client.execute_bo(dbc, &both(input, output)).unwrap();
    let waiter = {
        let kmd = kmd.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            kmd.set_link(false).unwrap();
        })
    };
    let t = Instant::now();
    let e = client.wait_bo(output, 2000, dbc).unwrap_err();
    waiter.join().unwrap();
    assert_eq!(e.errno, Errno::ENODEV, "{e}");
    assert!(t.elapsed() < Duration::from_millis(500), "noticed within a wake period: {:?}", t.elapsed());
    assert_eq!(kmd.read_register(dbc as usize, aicsim_abi::dbc::REQ_HEAD), 0xFFFF_FFFF);
    assert_eq!(client.execute_bo(dbc, &both(input, output)).unwrap_err().errno, Errno::ENODEV);
    kmd.set_link(true).unwrap();
    kmd.reset().unwrap();
    assert!(kmd.online());
    let fresh = kmd.open();
    let (dbc, input, output) = setup(&fresh);
    fresh.execute_bo(dbc, &both(input, output)).unwrap();
    fresh.wait_bo(output, 2000, dbc).unwrap();
    // The fault plan hangs the rebooted device again; reset it so teardown is quick.
    kmd.reset().unwrap();
}

#[test]
fn lost_interrupts_cost_latency_never_a_completion() {
    let device = DeviceConfig {
        num_nsp: 4,
        map: MemoryMap { ring_nelem: 64, host_bytes: 4 << 20, ddr_bytes: 4 << 20 },
        faults: FaultPlan { seed: 11, lost_interrupt_ppm: 500_000, ..FaultPlan::default() },
        ..DeviceConfig::default()
    };
    // Only the interrupt path delivers: no busy polling, a short watchdog.
    let config =
        KmdConfig { device, wait_busy_poll: false, irq_watchdog: Duration::from_millis(5), ..KmdConfig::default() };
    let kmd = Arc::new(Kmd::new(config).unwrap());
    let client = kmd.open();
    let (dbc, input, output) = setup(&client);
    for i in 0..60u32 {
        let data: Vec<u8> = (0..64).map(|k| (k * 7 + i) as u8).collect();
        client.mmap_bo(input).unwrap().write(0, &data).unwrap();
        client.execute_bo(dbc, &both(input, output)).unwrap();
        client.wait_bo(output, 2000, dbc).unwrap();
        let mut out = vec![0u8; 64];
        client.mmap_bo(output).unwrap().read(0, &mut out).unwrap();
        assert_eq!(out, data);
    }
    assert!(kmd.msi_lost() >= 10, "interrupts were lost: {} (and {} raised)", kmd.msi_lost(), kmd.msi_count());
}

#[test]
fn a_slow_device_takes_its_extra_time_per_element() {
    let device = DeviceConfig {
        num_nsp: 4,
        map: MemoryMap { ring_nelem: 64, host_bytes: 4 << 20, ddr_bytes: 4 << 20 },
        faults: FaultPlan { slow_element_ns: 2_000_000, ..FaultPlan::default() },
        ..DeviceConfig::default()
    };
    let kmd = Arc::new(Kmd::new(KmdConfig { device, ..KmdConfig::default() }).unwrap());
    let client = kmd.open();
    let (dbc, input, output) = setup(&client);
    let t = Instant::now();
    for _ in 0..5 {
        client.execute_bo(dbc, &both(input, output)).unwrap();
        client.wait_bo(output, 2000, dbc).unwrap();
    }
    // The delay follows each serviced batch, so at least the input element's precedes
    // every completion the host sees.
    assert!(t.elapsed() >= Duration::from_millis(10), "5 inferences x at least 2 ms: {:?}", t.elapsed());
}

/// Corrupted elements (one bit of the device's copy flipped): every buffer that reports
/// success holds exactly what was sent, no byte outside the buffers moves (canaries on
/// both sides), nothing completes twice or spuriously, and a wait never hangs.
#[test]
fn corrupted_elements_end_in_exact_data_a_named_error_or_a_timeout_and_never_a_hang() {
    let device = DeviceConfig {
        num_nsp: 4,
        map: MemoryMap { ring_nelem: 64, host_bytes: 4 << 20, ddr_bytes: 4 << 20 },
        faults: FaultPlan { seed: 5, corrupt_element_ppm: 100_000, ..FaultPlan::default() },
        ..DeviceConfig::default()
    };
    let kmd = Arc::new(Kmd::new(KmdConfig { device, ..KmdConfig::default() }).unwrap());
    let canary = vec![0xC5u8; 4096];
    let (mut ok, mut named, mut timed_out) = (0, 0, 0);
    let mut round = 0;
    while ok + named + timed_out < 300 {
        round += 1;
        assert!(round < 400);
        // A wedged channel (its output waits on a program a corrupted input never
        // started) is replaced, as a runtime would after a timeout, by a fresh one.
        let client = kmd.open();
        let guard_before = client.create_bo(4096).unwrap();
        let (dbc, input, output) = common::setup(&client);
        let guard_after = client.create_bo(4096).unwrap();
        for guard in [guard_before, guard_after] {
            client.mmap_bo(guard).unwrap().write(0, &canary).unwrap();
        }
        for i in 0u32.. {
            let data: Vec<u8> = (0..64).map(|k| (k * 5 + i * 3 + round) as u8).collect();
            client.mmap_bo(input).unwrap().write(0, &data).unwrap();
            client.mmap_bo(output).unwrap().write(0, &[0xEE; 64]).unwrap();
            if client.execute_bo(dbc, &both(input, output)).is_err() {
                break;
            }
            let t = Instant::now();
            let results = [client.wait_bo(output, 50, dbc), client.wait_bo(input, 50, dbc)];
            if results.iter().any(|r| r.as_ref().is_err_and(|e| e.errno == Errno::ETIMEDOUT)) {
                assert!(t.elapsed() < Duration::from_millis(500), "no wait hangs past its timeout");
                timed_out += 1;
                break;
            }
            if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
                // A failed element leaves the activation's semaphores where they were:
                // like a runtime, start over on a fresh channel.
                assert_eq!(e.errno, Errno::EIO, "{e}");
                named += 1;
                break;
            }
            let mut out = vec![0u8; 64];
            client.mmap_bo(output).unwrap().read(0, &mut out).unwrap();
            assert_eq!(out, data, "round {round} inference {i}: a success holds exactly what was sent");
            ok += 1;
        }
        for guard in [guard_before, guard_after] {
            let mut seen = vec![0u8; 4096];
            client.mmap_bo(guard).unwrap().read(0, &mut seen).unwrap();
            assert_eq!(seen, canary, "round {round}: bytes beside the buffers moved");
        }
        assert_eq!(kmd.spurious_responses(dbc as usize), 0, "no response completed nothing or another buffer");
        drop(client);
        kmd.subsystem_restart(dbc).unwrap();
    }
    assert!(ok > 150 && named + timed_out > 0, "ok {ok}, named {named}, timed out {timed_out}");
    assert!(kmd.corrupt_elements() > 0, "corruptions were injected and caught");
}
