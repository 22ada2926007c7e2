//! The lifecycle of channels and of the control path under faults: a crashed firmware,
//! a link that goes down and comes back without a reset, deactivations the device does
//! not confirm, and control requests whose callers give up before the device answers.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_abi::layout::MemoryMap;
use aicsim_device::{DeviceConfig, FaultPlan};
use aicsim_kmd::{Client, Errno, Kmd, KmdConfig};
use common::{both, copy_program, pair, setup};

fn kmd(faults: FaultPlan, control_timeout: Duration) -> Arc<Kmd> {
    let device = DeviceConfig {
        num_nsp: 4,
        map: MemoryMap { ring_nelem: 64, host_bytes: 8 << 20, ddr_bytes: 8 << 20 },
        faults,
        ..DeviceConfig::default()
    };
    Arc::new(Kmd::new(KmdConfig { device, control_timeout, ..KmdConfig::default() }).unwrap())
}

fn pattern(seed: u32) -> Vec<u8> {
    (0..64u32).map(|k| (k.wrapping_mul(31) ^ seed.wrapping_mul(7)) as u8).collect()
}

fn read(client: &Client, bo: u32) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    client.mmap_bo(bo).unwrap().read(0, &mut out).unwrap();
    out
}

/// Runs one inference on the pair and checks the output is the input.
fn round_trip(client: &Client, dbc: u32, (input, output): (u32, u32), seed: u32) {
    client.mmap_bo(input).unwrap().write(0, &pattern(seed)).unwrap();
    client.execute_bo(dbc, &both(input, output)).unwrap();
    client.wait_bo(output, 5000, dbc).unwrap();
    assert_eq!(read(client, output), pattern(seed));
}

#[test]
fn a_firmware_crash_fails_waiters_with_enodev_and_a_reset_brings_the_device_back() {
    // Each inference is two elements: the second one crashes the firmware.
    let kmd = kmd(FaultPlan { panic_after_elements: Some(3), ..FaultPlan::default() }, Duration::from_secs(5));
    let client = kmd.open();
    let (dbc, input, output) = setup(&client);
    round_trip(&client, dbc, (input, output), 1);
    client.execute_bo(dbc, &both(input, output)).unwrap();
    let t = Instant::now();
    let e = client.wait_bo(output, 5000, dbc).unwrap_err();
    assert_eq!(e.errno, Errno::ENODEV, "{e}");
    assert!(t.elapsed() < Duration::from_secs(1), "the crash was noticed in {:?}", t.elapsed());
    assert!(!kmd.online());
    assert_eq!(kmd.status().unwrap_err().errno, Errno::ENODEV);
    assert_eq!(client.load_program(&copy_program(64)).unwrap_err().errno, Errno::ENODEV);
    // The reset reboots the firmware; users load and activate again.
    kmd.reset().unwrap();
    assert!(kmd.online());
    let (dbc, input, output) = setup(&client);
    round_trip(&client, dbc, (input, output), 2);
    assert_eq!(kmd.status().unwrap().programs_loaded, 1);
}

#[test]
fn link_down_then_up_without_a_reset_serves_no_stale_slot() {
    // A slow device, so most of what is queued is still on the ring when the link drops.
    let kmd = kmd(FaultPlan { slow_element_ns: 4_000_000, ..FaultPlan::default() }, Duration::from_secs(5));
    let client = kmd.open();
    let program = client.load_program(&copy_program(64)).unwrap();
    let (dbc, info) = client.activate(program).unwrap();
    let pairs: Vec<(u32, u32)> = (0..16).map(|_| pair(&client, dbc, info)).collect();
    let canary = vec![0xEE; 64];
    for (k, &(input, output)) in pairs.iter().enumerate() {
        client.mmap_bo(input).unwrap().write(0, &pattern(k as u32)).unwrap();
        client.mmap_bo(output).unwrap().write(0, &canary).unwrap();
        client.execute_bo(dbc, &both(input, output)).unwrap();
    }
    client.wait_bo(pairs[0].1, 5000, dbc).unwrap();
    kmd.set_link(false).unwrap();
    let mut failed = Vec::new();
    for (k, &(_, output)) in pairs.iter().enumerate() {
        match client.wait_bo(output, 5000, dbc) {
            Ok(()) => assert_eq!(read(&client, output), pattern(k as u32), "pair {k} completed with its own data"),
            Err(e) => {
                assert_eq!(e.errno, Errno::ENODEV, "{e}");
                failed.push((output, read(&client, output)));
            }
        }
    }
    assert!(failed.len() >= 8, "most of the queue was lost with the link: {} of 16", failed.len());
    assert_eq!(client.execute_bo(dbc, &both(pairs[0].0, pairs[0].1)).unwrap_err().errno, Errno::ENODEV);

    // Back up without a reset: the device confirms the old activation gone first.
    kmd.set_link(true).unwrap();
    assert!(kmd.online());
    assert!(!kmd.channel_retiring(dbc as usize));
    assert_eq!(kmd.status().unwrap().active_channels, 0, "the device dropped the activation the link took");
    let (dbc2, info2) = client.activate(program).unwrap();
    let fresh = pair(&client, dbc2, info2);
    for seed in 100..104 {
        round_trip(&client, dbc2, fresh, seed);
    }
    std::thread::sleep(Duration::from_millis(100));
    for (output, before) in &failed {
        assert_eq!(&read(&client, *output), before, "a slot queued before the link went down was served after");
    }
    assert_eq!(kmd.spurious_responses(dbc2 as usize), 0);
}

#[test]
fn a_deactivation_the_device_never_confirms_keeps_the_channel_reserved_until_a_reset() {
    // The device hangs after its first inference: it answers nothing more.
    let faults = FaultPlan { hang_after_elements: Some(2), ..FaultPlan::default() };
    let kmd = kmd(faults, Duration::from_millis(50));
    let a = kmd.open();
    let (dbc, input, output) = setup(&a);
    round_trip(&a, dbc, (input, output), 1);
    let e = a.deactivate(dbc).unwrap_err();
    assert_eq!(e.errno, Errno::ETIMEDOUT, "{e}");
    assert!(e.detail.contains("withdrawn"), "{e}");
    assert!(kmd.channel_retiring(dbc as usize), "the failed deactivation is remembered");
    // Another user's activation does not land on the reserved channel.
    let b = kmd.open();
    let program = b.load_program(&copy_program(64));
    assert_eq!(program.unwrap_err().errno, Errno::ETIMEDOUT);
    assert!(kmd.channel_retiring(dbc as usize));
    // The reset clears the reservation: the device starts over with no activation.
    kmd.reset().unwrap();
    assert!(!kmd.channel_retiring(dbc as usize));
    let program = b.load_program(&copy_program(64)).unwrap();
    let (dbc_b, _) = b.activate(program).unwrap();
    assert_eq!(dbc_b, dbc, "the channel is free again");
}

#[test]
fn a_late_answer_confirms_a_deactivation_and_a_late_activation_is_undone() {
    // Every control command takes the device 500 ms: far past the host's 50 ms, so a
    // host thread descheduled for a while on a loaded machine still gives up first.
    let faults = FaultPlan { slow_control_ns: 500_000_000, ..FaultPlan::default() };
    let kmd = kmd(faults, Duration::from_secs(5));
    let a = kmd.open();
    let program = a.load_program(&copy_program(64)).unwrap();
    let (dbc, _) = a.activate(program).unwrap();
    // Now the host gives up after 50 ms: the device has taken each command by then.
    kmd.set_control_timeout(Duration::from_millis(50));
    let e = a.deactivate(dbc).unwrap_err();
    assert_eq!(e.errno, Errno::ETIMEDOUT, "{e}");
    assert!(e.detail.contains("did not answer"), "{e}");
    assert!(kmd.channel_retiring(dbc as usize));
    // The late answer comes while the host waits for nothing.
    std::thread::sleep(Duration::from_millis(700));
    // The next command first collects the late answer: the channel is confirmed free.
    let e = a.activate(program).unwrap_err();
    assert_eq!(e.errno, Errno::ETIMEDOUT, "the activation itself is late too: {e}");
    assert!(!kmd.channel_retiring(dbc as usize));
    // With patience again, the late activation (that nobody holds) is undone first.
    kmd.set_control_timeout(Duration::from_secs(5));
    let status = kmd.status().unwrap();
    assert_eq!(status.active_channels, 0, "no orphan activation");
    assert_eq!(status.programs_loaded, 1);
    let (dbc, info) = a.activate(program).unwrap();
    round_trip(&a, dbc, pair(&a, dbc, info), 7);
    assert_eq!(kmd.status().unwrap().active_channels, 1 << dbc);
}

/// The test: a 50 ms control timeout, a device whose control commands take 0 to
/// 100 ms while another user keeps its ring full, and a load/activate/deactivate/unload
/// loop. Whatever timed out, the device's state equals what the successful calls say.
#[test]
fn control_timeouts_never_run_a_command_twice_or_leave_an_orphan() {
    let faults =
        FaultPlan { seed: 5, slow_control_jitter_ns: 100_000_000, slow_element_ns: 200_000, ..FaultPlan::default() };
    let kmd = kmd(faults, Duration::from_secs(5));
    // The busy user sets up with patience, then keeps its ring full.
    let busy = kmd.open();
    let program = busy.load_program(&copy_program(64)).unwrap();
    let (busy_dbc, info) = busy.activate(program).unwrap();
    let pairs: Vec<(u32, u32)> = (0..31).map(|_| pair(&busy, busy_dbc, info)).collect();
    kmd.set_control_timeout(Duration::from_millis(50));
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) {
                for (k, &(input, output)) in pairs.iter().enumerate() {
                    busy.mmap_bo(input).unwrap().write(0, &pattern(rounds + k as u32)).unwrap();
                    busy.execute_bo(busy_dbc, &both(input, output)).unwrap();
                }
                for (k, &(_, output)) in pairs.iter().enumerate() {
                    busy.wait_bo(output, 10_000, busy_dbc).unwrap();
                    assert_eq!(read(&busy, output), pattern(rounds + k as u32));
                }
                rounds += 1;
            }
            (busy, rounds)
        })
    };
    let user = kmd.open();
    let (mut loads, mut timeouts) = (0, 0);
    let mut held: Vec<(u32, Option<u32>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        let idle = held.iter().position(|h| h.1.is_none());
        let step = if held.len() < 3 {
            user.load_program(&copy_program(64)).map(|p| {
                loads += 1;
                held.push((p, None));
            })
        } else if let Some(k) = idle.filter(|_| loads % 2 == 0) {
            match user.activate(held[k].0) {
                Ok((dbc, _)) => {
                    held[k].1 = Some(dbc);
                    Ok(())
                }
                Err(e) => {
                    if e.errno == Errno::ENOENT {
                        held.remove(k);
                    }
                    Err(e)
                }
            }
        } else {
            // Tear the oldest down: the activation is the user's no more whatever the
            // outcome; the program goes once the driver says it is gone.
            let (p, dbc) = held[0];
            held[0].1 = None;
            let r = dbc.map_or(Ok(()), |dbc| user.deactivate(dbc)).and_then(|()| user.unload_program(p));
            if r.as_ref().is_ok() || r.as_ref().is_err_and(|e| e.errno == Errno::ENOENT) {
                held.remove(0);
            }
            r
        };
        if let Err(e) = step {
            assert!(matches!(e.errno, Errno::ETIMEDOUT | Errno::EBUSY | Errno::ENOENT), "{e}");
            timeouts += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (busy, rounds) = feeder.join().unwrap();
    eprintln!("{loads} loads, {timeouts} failed calls, {rounds} rounds of the busy user");
    assert!(rounds > 0 && loads > 3 && timeouts > 3, "both outcomes happened: {loads} loads, {timeouts} timeouts");
    kmd.set_control_timeout(Duration::from_secs(5));
    let status = kmd.status().unwrap();
    let mut expected_channels = 1 << busy_dbc;
    for (_, dbc) in &held {
        if let Some(dbc) = dbc {
            expected_channels |= 1 << dbc;
        }
    }
    for dbc in 0..16 {
        if kmd.channel_retiring(dbc) {
            expected_channels |= 1 << dbc;
        }
    }
    assert_eq!(status.active_channels, expected_channels, "no orphan activation");
    assert_eq!(status.programs_loaded as usize, kmd.programs_loaded(), "no orphan program, none unloaded twice");
    assert!(kmd.programs_loaded() <= 1 + held.len());
    drop(busy);
}
