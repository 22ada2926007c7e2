//! The aic-runner binary: its Stats line and its errors.

use std::process::Command;

fn runner(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_aic-runner")).args(args).output().expect("aic-runner runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses `InferenceCnt n TotalDuration dus BatchSize b Inf/Sec r`.
fn stats(stdout: &str) -> (u64, u64, u64, f64) {
    let mut lines = stdout.lines();
    assert!(lines.any(|l| l == " ---- Stats ----"), "{stdout}");
    let line = lines.next().expect("a Stats line");
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!((f[0], f[2], f[4], f[6]), ("InferenceCnt", "TotalDuration", "BatchSize", "Inf/Sec"), "{line}");
    assert!(f[3].ends_with("us"));
    let rate = f[7];
    assert_eq!(rate.split('.').nth(1).map(str::len), Some(3), "three decimals: {rate}");
    (f[1].parse().unwrap(), f[3].trim_end_matches("us").parse().unwrap(), f[5].parse().unwrap(), rate.parse().unwrap())
}

#[test]
fn n_runs_exactly_n_inferences_and_inf_per_sec_follows_the_formula() {
    let (code, out, err) = runner(&["-n", "500", "-a", "2", "-S", "4"]);
    assert_eq!(code, 0, "{err}");
    let (n, us, batch, rate) = stats(&out);
    assert_eq!((n, batch), (500, 1));
    let expected = n as f64 * 1e6 / us as f64 * batch as f64;
    assert!((rate - expected).abs() <= 0.0005 + expected * 1e-12, "{rate} vs {expected}");
}

#[test]
fn time_runs_for_about_the_asked_duration() {
    let (code, out, err) = runner(&["--time", "1"]);
    assert_eq!(code, 0, "{err}");
    let (n, us, _, _) = stats(&out);
    assert!(n > 0);
    assert!((950_000..=1_050_000).contains(&us), "ran {us} us for --time 1");
}

#[test]
fn bad_invocations_exit_2_with_one_line_saying_why() {
    for (args, needle) in [
        (vec!["-t", "/nonexistent/program"], "cannot read program /nonexistent/program: No such file"),
        (vec!["-a", "17"], "between 1 and 16"),
        (vec!["-S", "0"], "set size must be at least 1"),
        (vec!["--time", "0"], "not a positive number"),
        (vec!["-d", "3"], "device 3 does not exist"),
    ] {
        let (code, out, err) = runner(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: no output on failure");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn a_corrupt_container_is_named_precisely() {
    let dir = std::env::temp_dir().join(format!("aicsim-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = aicsim_runtime::samples::default_program().to_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(dir.join("programqpc.bin"), &bytes).unwrap();
    let (code, _, err) = runner(&["-t", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("checksum mismatch"), "{err}");
}
