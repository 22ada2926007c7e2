//! The device in its own process: run inferences, kill -9 the device, see waits fail
//! with ENODEV well within their timeout, start a new device process, reattach,
//! re-activate and carry on.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_abi::layout::MemoryMap;
use aicsim_device::DeviceConfig;
use aicsim_driver::{Device, DriverError};
use aicsim_kmd::{Kmd, KmdConfig};
use aicsim_runtime::samples::{bytes_f32, f32_bytes, vector_add_mul, vector_add_mul_reference};
use aicsim_runtime::{Activation, Program, RuntimeError};

fn region_path() -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    dir.join(format!("aicsim-xproc-{}", std::process::id()))
}

fn spawn_device(path: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_aic-device"))
        .args(["--shm", path.to_str().unwrap(), "--ring-nelem", "64", "--host-mib", "16", "--ddr-mib", "64"])
        .spawn()
        .expect("start aic-device")
}

fn check(activation: &Activation, rounds: u32) {
    for k in 0..rounds {
        let a: Vec<f32> = (0..512).map(|i| (i + k) as f32 * 0.25).collect();
        let b: Vec<f32> = (0..512).map(|i| k as f32 - i as f32).collect();
        let out = activation.run(&[&f32_bytes(&a), &f32_bytes(&b)]).unwrap();
        assert_eq!(bytes_f32(&out[0]), vector_add_mul_reference(&a, &b));
    }
}

#[test]
fn a_device_process_killed_with_sigkill_fails_waiters_with_enodev_and_a_new_one_takes_over() {
    let path = region_path();
    let config = KmdConfig {
        device: DeviceConfig {
            map: MemoryMap { ring_nelem: 64, host_bytes: 16 << 20, ddr_bytes: 64 << 20 },
            ..DeviceConfig::default()
        },
        ..KmdConfig::default()
    };
    let mut first = spawn_device(&path);
    let kmd = Arc::new(Kmd::attach_external(config, &path, Duration::from_secs(10)).unwrap());
    let device = Arc::new(Device::open(kmd.clone()));
    let program = Program::from_image(vector_add_mul(512)).unwrap();
    let activation = Activation::new(device.clone(), &program).unwrap();
    check(&activation, 200);

    // Host threads blocked in waits on four activations when the device dies: every
    // one of them gets ENODEV within 2 s, none hangs.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let activation = Activation::new(device.clone(), &program).unwrap();
            std::thread::spawn(move || {
                let a = vec![0u8; 2048];
                loop {
                    if let Err(err) = activation.run(&[&a, &a]) {
                        return (err, Instant::now());
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    first.kill().unwrap();
    first.wait().unwrap();
    let t = Instant::now();
    for worker in workers {
        let (err, when) = worker.join().unwrap();
        assert!(matches!(err, RuntimeError::Driver(DriverError::NoDevice(_))), "{err}");
        assert!(when.duration_since(t) < Duration::from_secs(2), "ENODEV within 2 s: {:?}", when.duration_since(t));
    }
    assert!(!kmd.online());
    drop(activation);

    let mut second = spawn_device(&path);
    kmd.reattach(Duration::from_secs(10)).unwrap();
    let activation = Activation::new(device.clone(), &program).unwrap();
    check(&activation, 200);
    drop(activation);
    second.kill().unwrap();
    second.wait().unwrap();
    let _ = std::fs::remove_file(&path);
}
