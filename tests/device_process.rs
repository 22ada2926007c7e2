//! The device in its own process, driven by the binaries as a user would: `aic-device
//! --shm FILE` serving `aic-runner --shm FILE` and watched by `aic-util -q --shm FILE`;
//! a device stopped for 300 ms is not dead, one killed with SIGKILL is, within 2 s, and a
//! restarted one serves the next run. The file is private, never reached through a
//! link, served by one device at a time, and a device of another shape is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A region file path of its own for each test, removed when dropped.
struct RegionPath(PathBuf);

impl RegionPath {
    fn new(name: &str) -> RegionPath {
        let dir = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let path = dir.join(format!("aicsim-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        RegionPath(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for RegionPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A device process, killed when dropped.
struct DeviceProcess(Child);

impl DeviceProcess {
    fn start(region: &RegionPath, extra: &[&str]) -> DeviceProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_aic-device"))
            .args(["--shm", region.arg()])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aic-device");
        DeviceProcess(child)
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        assert_eq!(unsafe { libc::kill(self.0.id() as libc::pid_t, signal) }, 0);
    }
}

impl Drop for DeviceProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(bin: &str, args: &[&str]) -> (i32, String, String) {
    let Output { status, stdout, stderr } = Command::new(bin).args(args).output().expect("the binary runs");
    (status.code().unwrap_or(-1), String::from_utf8_lossy(&stdout).into(), String::from_utf8_lossy(&stderr).into())
}

fn runner(args: &[&str]) -> (i32, String, String) {
    run(env!("CARGO_BIN_EXE_aic-runner"), args)
}

fn util(region: &RegionPath) -> (i32, String, String) {
    run(env!("CARGO_BIN_EXE_aic-util"), &["-q", "--shm", region.arg()])
}

fn device(args: &[&str]) -> (i32, String, String) {
    run(env!("CARGO_BIN_EXE_aic-device"), args)
}

/// The Stats line of a runner's output.
fn stats_line(stdout: &str) -> &str {
    stdout.lines().find(|l| l.starts_with("InferenceCnt")).unwrap_or_else(|| panic!("no Stats line in {stdout}"))
}

#[test]
fn the_runner_on_a_device_process_reports_what_the_in_process_device_does_and_aic_util_watches_it() {
    let region = RegionPath::new("runner");
    let dev = DeviceProcess::start(&region, &[]);
    let (code, out, err) = runner(&["--shm", region.arg()]);
    assert_eq!(code, 0, "{err}");
    let (code, alone, err) = runner(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stats_line(&out), stats_line(&alone), "the same figures across the process boundary");
    let mode = std::fs::metadata(&region.0).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the region file is private to its user");

    let (code, out, _) = util(&region);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Status:Ready") && out.contains("a device process attached, no host"), "{out}");
    assert!(out.contains("Active Programs:0 Active Channels:none"), "the runner unloaded everything: {out}");
    dev.signal(libc::SIGSTOP);
    let (code, out, _) = util(&region);
    dev.signal(libc::SIGCONT);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Status:Error") && out.contains("not responding"), "{out}");
    drop(dev);
    let (code, out, _) = util(&region);
    assert_eq!(code, 1);
    assert!(out.contains("no device process serves"), "{out}");
}

#[test]
fn a_device_stopped_for_300_ms_is_not_dead_one_killed_is_within_2_s_and_a_new_one_takes_over() {
    let region = RegionPath::new("stop-kill");
    let dev = DeviceProcess::start(&region, &[]);
    let args = ["--shm", region.arg(), "--clock", "wall", "--time", "2"];
    let stopper = std::thread::spawn({
        let pid = dev.0.id() as libc::pid_t;
        move || {
            std::thread::sleep(Duration::from_millis(700));
            // SAFETY: kill(2) on the device process, alive for the whole run.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    });
    let (code, out, err) = runner(&args);
    stopper.join().unwrap();
    assert_eq!(code, 0, "a 300 ms stop is not a death: {err}");
    assert!(stats_line(&out).starts_with("InferenceCnt"));

    // Killed mid-run: the runner fails with ENODEV soon after, and does not hang.
    let long = ["--shm", region.arg(), "--clock", "wall", "--time", "30"];
    let child = Command::new(env!("CARGO_BIN_EXE_aic-runner"))
        .args(long)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Instant::now();
    dev.signal(libc::SIGKILL);
    let out = child.wait_with_output().unwrap();
    let took = killed.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("ENODEV"), "{err}");
    assert!(took < Duration::from_secs(2), "the runner noticed the death in {took:?}");
    drop(dev);

    // A new device on the same file serves the next run.
    let _dev = DeviceProcess::start(&region, &[]);
    let (code, out, err) = runner(&["--shm", region.arg()]);
    assert_eq!(code, 0, "{err}");
    assert!(stats_line(&out).starts_with("InferenceCnt"));
}

#[test]
fn one_device_per_file_and_a_device_of_another_shape_is_refused_naming_both_values() {
    let region = RegionPath::new("shape");
    let small = ["--ring-nelem", "64", "--host-mib", "16", "--ddr-mib", "64"];
    let first = DeviceProcess::start(&region, &small);
    // The host makes the region for the default shape: the device names what differs.
    let (code, _, err) = runner(&["--shm", region.arg(), "--device-wait", "5"]);
    assert_ne!(code, 0);
    let mut first = first;
    let status = first.0.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    let mut device_err = String::new();
    std::io::Read::read_to_string(first.0.stderr.as_mut().unwrap(), &mut device_err).unwrap();
    assert_eq!(device_err.lines().count(), 1, "{device_err}");
    assert!(device_err.contains("ring size 512 in the region, 64 on this device"), "{device_err}");
    assert!(device_err.contains("DDR bytes 17179869184 in the region, 67108864 on this device"), "{device_err}");
    assert!(err.contains("no device came up"), "{err}");

    // A device of the default shape serves it; a second one is refused.
    let _dev = DeviceProcess::start(&region, &[]);
    let (code, _, err) = runner(&["--shm", region.arg()]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = device(&["--shm", region.arg()]);
    assert_eq!(code, 2);
    assert_eq!(err.trim(), format!("aic-device: another device is already attached to {}", region.arg()));
}

#[test]
fn the_region_file_is_never_reached_through_a_symbolic_link() {
    let region = RegionPath::new("link");
    let target = RegionPath::new("link-target");
    std::fs::write(&target.0, b"someone else's file").unwrap();
    std::os::unix::fs::symlink(&target.0, &region.0).unwrap();
    let (code, _, err) = runner(&["--shm", region.arg(), "--device-wait", "0"]);
    assert_ne!(code, 0);
    assert!(err.contains("symbolic link"), "{err}");
    let (code, _, err) = device(&["--shm", region.arg(), "--wait", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read(&target.0).unwrap(), b"someone else's file", "the link's target is untouched");
}

#[test]
fn numeric_flags_of_aic_device_are_checked_with_one_line() {
    let region = RegionPath::new("flags");
    for (flag, value, says) in [
        ("--wait", "1e300", "--wait 1e300 is not a number of seconds"),
        ("--wait", "NaN", "--wait NaN is not a number of seconds"),
        ("--num-nsp", "4294967295", "--num-nsp 4294967295 is not in 1..=64"),
        ("--num-nsp", "0", "--num-nsp 0 is not in 1..=64"),
        ("--host-mib", "18446744073709551615", "--host-mib 18446744073709551615 is not in 1..=1048576"),
        ("--ddr-mib", "17592186044416", "--ddr-mib 17592186044416 is not in 1..=1048576"),
        ("--ring-nelem", "100", "--ring-nelem 100 is not a power of two"),
    ] {
        let (code, out, err) = device(&["--shm", region.arg(), flag, value]);
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{flag} {value}: {err}");
        assert!(err.starts_with(&format!("aic-device: {says}")), "{flag} {value}: {err}");
    }
    assert!(!region.0.exists(), "nothing was created");
}
