//! The HTML reports of aic-runner and aic-configurator: written only when the run
//! succeeds, refused with one line for a path in a missing directory, self-contained
//! (nothing fetched), and checked in a real headless browser — the page loads with no
//! console message and its screenshot shows the plots.
//!
//! The browser is Chromium from the distribution's packages: `scripts/test.sh` installs
//! it where missing and sets `AICSIM_CHROMIUM`; without it the browser checks skip,
//! unless `AICSIM_REQUIRE_CHROMIUM` is set.

use std::path::{Path, PathBuf};
use std::process::Command;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("aicsim-report-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn chromium() -> Option<PathBuf> {
    match std::env::var("AICSIM_CHROMIUM") {
        Ok(path) => Some(PathBuf::from(path)),
        Err(_) => {
            assert!(
                std::env::var("AICSIM_REQUIRE_CHROMIUM").is_err(),
                "AICSIM_REQUIRE_CHROMIUM is set but AICSIM_CHROMIUM is not"
            );
            eprintln!("skipped the browser checks: run scripts/test.sh, which installs Chromium");
            None
        }
    }
}

/// Loads `page` in headless Chromium: its console messages (Chromium's log lines that
/// carry them) and a screenshot of `height` pixels.
fn load(browser: &Path, page: &Path, screenshot: &Path, height: u32, profile: &Path) -> Vec<String> {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--window-size=1000,{height}"),
            &format!("--screenshot={}", screenshot.display()),
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.contains("CONSOLE")).map(String::from).collect()
}

/// The page holds its plots inline and names nothing to fetch.
fn assert_self_contained(html: &str, plots: usize) {
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..80.min(html.len())]);
    assert_eq!(html.matches("<svg").count(), plots, "inline SVG plots");
    for fetch in ["<script", "<link", "src=", "@import", "url("] {
        assert!(!html.contains(fetch), "the page would fetch something: {fetch}");
    }
}

/// Screenshots of the page and of an empty page: a page with plots compresses far worse.
fn assert_shows_plots(browser: &Path, dir: &Path, page: &Path, height: u32) -> PathBuf {
    let shot = page.with_extension("png");
    let console = load(browser, page, &shot, height, &dir.join("profile"));
    assert!(console.is_empty(), "console messages: {console:?}");
    let blank = dir.join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let blank_shot = dir.join("blank.png");
    load(browser, &blank, &blank_shot, height, &dir.join("profile"));
    let (with, without) = (std::fs::metadata(&shot).unwrap().len(), std::fs::metadata(&blank_shot).unwrap().len());
    assert!(&std::fs::read(&shot).unwrap()[1..4] == b"PNG");
    assert!(with > 10 * without, "the screenshot shows plots: {with} bytes against {without} for an empty page");
    shot
}

#[test]
fn the_runner_report_has_its_plots_and_loads_cleanly_in_a_browser() {
    let dir = temp_dir("runner");
    let page = dir.join("run.html");
    let out = Command::new(env!("CARGO_BIN_EXE_aic-runner"))
        .args(["-n", "300", "-a", "2", "-S", "4", "--report"])
        .arg(&page)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("Writing file:{}", page.display())), "{stdout}");
    let html = std::fs::read_to_string(&page).unwrap();
    // Histogram, CDF, stages, timeline, top layers.
    assert_self_contained(&html, 5);
    for part in ["InferenceCnt", "Inf/Sec", "p99", "device exec", "c0 HMX", "Top layers by device time"] {
        assert!(html.contains(part), "missing {part}");
    }
    let inferences = stdout.split("InferenceCnt ").nth(1).unwrap().split(' ').next().unwrap();
    assert!(html.contains(&format!("<td>{inferences}</td>")), "the Stats figures are the printed ones");
    if let Some(browser) = chromium() {
        assert_shows_plots(&browser, &dir, &page, 2400);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_configurator_report_marks_the_best_and_loads_cleanly_in_a_browser() {
    let dir = temp_dir("configurator");
    let spec = dir.join("search.json");
    std::fs::write(
        &spec,
        r#"{"max_func_eval": 8, "objective": "maximize_inf_rate",
            "params": {"cores": {"min": 1, "max": 4}, "bs": {"min": 1, "max": 2}, "instances": {"min": 1, "max": 4}},
            "initial_values": [{"cores": 2, "bs": 1, "instances": 2}]}"#,
    )
    .unwrap();
    let page = dir.join("search.html");
    let out = Command::new(env!("CARGO_BIN_EXE_aic-configurator"))
        .args(["zoo:mobilenetv2", "onnx", "-convert-to-fp16", "-compiled-models=0"])
        .arg(format!("-optimized-config-search={}", spec.display()))
        .arg(format!("-output-dir={}", dir.join("out").display()))
        .arg(format!("-report={}", page.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    assert_self_contained(&html, 1);
    let best = stdout.lines().find(|l| l.starts_with("Best configuration: ")).unwrap();
    let c =
        |key: &str| best.split(&format!("{key}=")).nth(1).unwrap().split(|c: char| !c.is_ascii_digit()).next().unwrap();
    let label = format!(
        "cores={},mos={},ols={},bs={},instances={},set_size={}",
        c("cores"),
        c("mos"),
        c("ols"),
        c("batchSize"),
        c("instances"),
        c("setSize")
    );
    assert!(html.contains(&format!("<tr class=\"best\"><td>{label}</td>")), "{label} marked best");
    assert!(html.contains(&format!("best: {label}")), "and in the plot's legend");
    let rows = html.matches("<tr").count() - 1;
    let evaluated: usize = stdout.lines().filter(|l| l.contains(" - [INFO]: Evaluated SearchPoint (")).count();
    assert_eq!(rows, evaluated, "one row per configuration evaluated");
    if let Some(browser) = chromium() {
        assert_shows_plots(&browser, &dir, &page, 1100);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A report path in a missing directory is refused before the run, with one line naming
/// it, and nothing is written.
#[test]
fn a_report_in_a_missing_directory_is_refused_and_nothing_is_written() {
    let dir = temp_dir("missing");
    let page = dir.join("no-such-dir").join("run.html");
    let out = Command::new(env!("CARGO_BIN_EXE_aic-runner"))
        .args(["-n", "10", "--json"])
        .arg(dir.join("run.json"))
        .arg("--report")
        .arg(&page)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--report") && err.contains("no-such-dir") && err.contains("does not exist"), "{err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing written, not even the JSON");
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configurator/resnet50-latency.json");
    let out = Command::new(env!("CARGO_BIN_EXE_aic-configurator"))
        .args(["zoo:mobilenetv2", "onnx"])
        .arg(format!("-optimized-config-search={}", spec.display()))
        .arg(format!("-output-dir={}", dir.join("out").display()))
        .arg(format!("-report={}", page.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("-report=") && err.contains("does not exist"), "{err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing written, not even the output directory");
    std::fs::remove_dir_all(&dir).unwrap();
}
