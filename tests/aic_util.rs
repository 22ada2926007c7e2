//! aic-util -q.

use std::process::Command;

#[test]
fn query_reports_a_ready_device_with_its_resources() {
    let out = Command::new(env!("CARGO_BIN_EXE_aic-util")).args(["-q", "--num-nsp", "14"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "Status:Ready",
        "Nsp Total:14 Nsp Free:14",
        "Vtcm Size Per Nsp:8192 KB",
        "DDR Total:16384 MB DDR Free:16384 MB",
        "Firmware Version:0.1.0",
        "Active Programs:0 Active Channels:none",
    ] {
        assert!(text.lines().any(|l| l.trim() == line), "missing '{line}' in:\n{text}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_aic-util")).args(["-q", "-d", "2"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8(bad.stderr).unwrap().contains("device 2 does not exist"));
}
